//! Steady load through the proxy for the fault scenarios: a few keep-alive clients send GETs
//! to one service until stopped (bounded in count and time), counting answers by status and by
//! the job that gave them.

use demo_services::JOB_HEADER;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Requests per client at most, and how long a client runs at most.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;
const MAX_RUN: Duration = Duration::from_secs(90);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    /// Answers other than 200 and transport errors, with when they happened (since the start).
    pub failures: Vec<(Duration, String)>,
    /// 200 answers by the job that gave them (the demo job's name header; "" without it).
    pub by_job: BTreeMap<String, usize>,
    pub max_latency: Duration,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failures.extend(other.failures);
        for (job, n) in other.by_job {
            *self.by_job.entry(job).or_default() += n;
        }
        self.max_latency = self.max_latency.max(other.max_latency);
    }
}

/// Clients sending `GET path` with `Host: host` to the proxy.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts `clients` clients, each pausing `pause` between requests.
    pub fn start(
        proxy: SocketAddr,
        host: &str,
        path: &str,
        clients: usize,
        pause: Duration,
    ) -> Load {
        Load::start_with_headers(proxy, host, path, &[], clients, pause)
    }

    /// [`Load::start`] with extra request headers (e.g. credentials).
    pub fn start_with_headers(
        proxy: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        clients: usize,
        pause: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let started = Instant::now();
        let clients = (0..clients)
            .map(|_| {
                let (client, stop, sent) = (client.clone(), stop.clone(), sent.clone());
                let (url, host) = (format!("http://{proxy}{path}"), host.to_string());
                let headers: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed)
                        && report.sent < MAX_REQUESTS_PER_CLIENT
                        && started.elapsed() < MAX_RUN
                    {
                        let mut req = http::Request::get(&url).header("host", &host);
                        for (k, v) in &headers {
                            req = req.header(k, v);
                        }
                        let req = req.body(http_body_util::Empty::new()).expect("request");
                        let begun = Instant::now();
                        report.sent += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let answer = tokio::time::timeout(Duration::from_secs(10), async {
                            let resp = client.request(req).await.map_err(|e| e.to_string())?;
                            let status = resp.status();
                            let job = resp
                                .headers()
                                .get(JOB_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = http_body_util::BodyExt::collect(resp.into_body())
                                .await
                                .map_err(|e| format!("body: {e}"))?
                                .to_bytes();
                            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                            Ok::<_, String>((status, job, text.into_owned()))
                        })
                        .await
                        .unwrap_or_else(|_| Err("no answer within 10 s".into()));
                        report.max_latency = report.max_latency.max(begun.elapsed());
                        match answer {
                            Ok((status, job, _)) if status == 200 => {
                                report.ok += 1;
                                *report.by_job.entry(job).or_default() += 1;
                            }
                            Ok((status, _, text)) => report.failures.push((
                                started.elapsed(),
                                format!("{}: {}", status.as_u16(), text.trim()),
                            )),
                            Err(e) => report.failures.push((started.elapsed(), e)),
                        }
                        tokio::time::sleep(pause).await;
                    }
                    report
                })
            })
            .collect();
        Load {
            stop,
            sent,
            clients,
        }
    }

    /// Requests sent so far by all clients.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until at least `more` further requests were sent (so a fault lands under load).
    pub async fn wait_for_requests(&self, more: usize) {
        assert!(
            self.progressed(more, Duration::from_secs(20)).await,
            "the load does not progress"
        );
    }

    /// Whether `more` further requests were sent within `limit`.
    pub async fn progressed(&self, more: usize, limit: Duration) -> bool {
        let target = self.sent() + more;
        let deadline = Instant::now() + limit;
        while self.sent() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops the clients and sums up what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for c in self.clients {
            total.merge(c.await.expect("load client"));
        }
        total
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    test_support::wait_for(what, limit, || std::future::ready(check())).await
}
