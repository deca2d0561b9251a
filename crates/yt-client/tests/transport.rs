//! The client's HTTP behaviour against a small scripted server on loopback: methods, parameter
//! placement, credentials, paging, batching, error extraction (header and body), retries with
//! `Retry-After`, timeouts. (Behaviour against the dev cluster and the real CLI is tested in
//! `devcluster.rs`.)

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use yson::Node;
use yt_client::{BatchRequest, ClientConfig, Credentials, Error, YtClient};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Recorded {
    /// The parameters, from `X-YT-Parameters` or the body of a POST.
    fn params(&self) -> Node {
        let text: &[u8] = match self.headers.get("x-yt-parameters") {
            Some(v) => v.as_bytes(),
            None => &self.body,
        };
        yson::parse(text).expect("parameters are YSON text")
    }

    fn param_str(&self, key: &str) -> Option<String> {
        self.params()
            .get(key)
            .and_then(Node::as_str)
            .map(str::to_string)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn ok(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Mock {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Mock {
    async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let log2 = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let recorded = Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let reply = handler(&recorded);
                            log.lock().unwrap().push(recorded);
                            let mut response = hyper::Response::builder().status(reply.status);
                            for (k, v) in reply.headers {
                                response = response.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Mock { addr, log }
    }

    fn client(&self) -> YtClient {
        self.client_with(|c| c)
    }

    fn client_with(&self, tweak: impl FnOnce(ClientConfig) -> ClientConfig) -> YtClient {
        let mut config = ClientConfig::new(self.addr.to_string()).with_token("robot-secret");
        config.initial_backoff = Duration::from_millis(5);
        YtClient::new(tweak(config)).unwrap()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn light_commands_use_get_with_header_parameters_and_the_robot_token() {
    let mock = Mock::start(|r| match r.path.as_str() {
        "/api/v4/get" => ok(r#"<"opaque"=%true;>{"a"=1u;"b"=#;"c"=4.;}"#),
        "/api/v4/list" => ok(r#"["x";"y";]"#),
        "/api/v4/exists" => ok("%false"),
        _ => Reply {
            status: 400,
            headers: vec![],
            body: br#"{"code":1,"message":"unexpected"}"#.to_vec(),
        },
    })
    .await;
    let client = mock.client();
    let node = client.get("//home/dir/тест").await.unwrap();
    assert_eq!(node.get("a").and_then(Node::as_u64), Some(1));
    assert_eq!(client.list("//home").await.unwrap(), vec!["x", "y"]);
    assert!(!client.exists("//nope").await.unwrap());
    let requests = mock.requests();
    let get = &requests[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.param_str("path").as_deref(), Some("//home/dir/тест"));
    assert_eq!(
        get.params()
            .get("return_only_value")
            .and_then(Node::as_bool),
        Some(true),
        "API v4 would wrap the value otherwise"
    );
    assert_eq!(
        get.headers.get("authorization").unwrap(),
        "OAuth robot-secret"
    );
    assert_eq!(
        get.headers.get("x-yt-header-format").unwrap(),
        "<format=text>yson"
    );
    assert_eq!(
        get.headers.get("x-yt-output-format").unwrap(),
        "<format=text>yson"
    );
    let stats = client.stats();
    assert_eq!(stats.requests_total, 3);
    assert_eq!(stats.by_command.get("get"), Some(&1));
}

#[tokio::test]
async fn mutations_post_parameters_in_the_body_and_set_puts_its_value() {
    let mock = Mock::start(|_| ok("")).await;
    let client = mock.client();
    client
        .create(
            "table",
            "//sys/task_proxies/services",
            Some(Node::map(vec![("schema".into(), Node::list(vec![]))])),
            true,
            true,
        )
        .await
        .unwrap();
    client
        .set("//tmp/x", &Node::map(vec![("k".into(), Node::string("v"))]))
        .await
        .unwrap();
    let requests = mock.requests();
    let create = &requests[0];
    assert_eq!(create.method, "POST");
    assert!(create.headers.get("x-yt-parameters").is_none());
    let params = create.params();
    assert_eq!(params.get("type").and_then(Node::as_str), Some("table"));
    assert_eq!(params.get("recursive").and_then(Node::as_bool), Some(true));
    assert!(params.pointer("attributes/schema").is_some());
    let set = &requests[1];
    assert_eq!(set.method, "PUT");
    assert_eq!(set.param_str("path").as_deref(), Some("//tmp/x"));
    assert_eq!(
        yson::parse(&set.body)
            .unwrap()
            .get("k")
            .and_then(Node::as_str),
        Some("v")
    );
}

#[tokio::test]
async fn tables_round_trip_as_list_fragments() {
    let stored: Arc<Mutex<Bytes>> = Arc::default();
    let stored2 = stored.clone();
    let mock = Mock::start(move |r| match r.path.as_str() {
        "/api/v4/write_table" => {
            *stored2.lock().unwrap() = r.body.clone();
            ok("")
        }
        _ => ok(std::str::from_utf8(&stored2.lock().unwrap()).unwrap()),
    })
    .await;
    let client = mock.client();
    let rows: Vec<Node> = (0..3)
        .map(|i| Node::map(vec![("domain".into(), Node::string(format!("{i}.d")))]))
        .collect();
    client.write_table("//t", &rows).await.unwrap();
    assert_eq!(client.read_table("//t").await.unwrap(), rows);
    assert!(client
        .write_table("//t", &[Node::string("x")])
        .await
        .is_err());
    let write = &mock.requests()[0];
    assert_eq!(write.method, "PUT");
    assert_eq!(
        write.headers.get("x-yt-input-format").unwrap(),
        "<format=text>yson"
    );
}

/// A list_operations server over `count` running operations, several sharing start times,
/// capping `limit` at `cap`, with an inclusive or exclusive cursor.
fn operations_server(
    count: usize,
    cap: usize,
    inclusive: bool,
    says_incomplete: bool,
) -> impl Fn(&Recorded) -> Reply {
    // Three operations per microsecond-instant: page boundaries often split such groups.
    let ops: Vec<(String, i64)> = (0..count)
        .map(|i| (format!("{i:08x}-0-0-0"), 1_000_000 + (i / 3) as i64))
        .collect();
    move |r| {
        assert_eq!(r.path, "/api/v4/list_operations");
        let params = r.params();
        assert_eq!(params.get("state").and_then(Node::as_str), Some("running"));
        assert_eq!(
            params.get("cursor_direction").and_then(Node::as_str),
            Some("past")
        );
        let attrs: Vec<&str> = params
            .get("attributes")
            .and_then(Node::as_list)
            .unwrap()
            .iter()
            .filter_map(Node::as_str)
            .collect();
        assert!(attrs.contains(&"id") && attrs.contains(&"start_time"));
        let limit = params.get("limit").and_then(Node::as_i64).unwrap() as usize;
        let cursor = params
            .get("cursor_time")
            .and_then(Node::as_str)
            .map(|c| yt_client::time::Instant::parse(c).unwrap().0);
        let mut selected: Vec<&(String, i64)> = ops
            .iter()
            .filter(|(_, t)| match cursor {
                None => true,
                Some(c) if inclusive => *t <= c,
                Some(c) => *t < c,
            })
            .collect();
        selected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let n = limit.min(cap);
        let incomplete = selected.len() > n;
        let items: Vec<String> = selected
            .iter()
            .take(n)
            .map(|(id, t)| {
                format!(
                    r#"{{"id"="{id}";"state"="running";"start_time"="{}";"brief_spec"={{}};}}"#,
                    yt_client::time::Instant(*t)
                )
            })
            .collect();
        let flag = if !says_incomplete {
            String::new()
        } else if incomplete {
            r#""incomplete"=%true;"#.to_string()
        } else {
            r#""incomplete"=%false;"#.to_string()
        };
        ok(&format!(
            r#"{{"operations"=[{}];{flag}"state_counts"={{"running"={count};}};}}"#,
            items.join(";")
        ))
    }
}

#[tokio::test]
async fn running_operations_page_without_losing_or_repeating_any() {
    for (count, cap, inclusive, says) in [
        (250, 1000, false, true),
        (250, 1000, true, true),
        (301, 40, false, true),
        (0, 100, false, true),
        (100, 100, true, true),
        (250, 1000, true, false),
        (200, 1000, false, false),
    ] {
        let mock = Mock::start(operations_server(count, cap, inclusive, says)).await;
        let client = mock.client();
        let ops = client
            .list_running_operations(&["id", "brief_spec", "runtime_parameters"])
            .await
            .unwrap();
        let mut ids: Vec<&str> = ops
            .iter()
            .map(|o| o.get("id").and_then(Node::as_str).unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            count,
            "count={count} cap={cap} inclusive={inclusive}"
        );
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "no duplicates");
        let pages = mock.requests().len();
        let expected_max = count / cap.min(100) + 3;
        assert!(pages <= expected_max, "{pages} pages for {count} ops");
    }
}

#[tokio::test]
async fn batches_are_chunked_and_results_kept_in_order() {
    let mock = Mock::start(|r| {
        assert_eq!(r.method, "POST");
        let params = r.params();
        assert_eq!(params.get("concurrency").and_then(Node::as_i64), Some(4));
        let requests = params.get("requests").and_then(Node::as_list).unwrap();
        let items: Vec<String> = requests
            .iter()
            .map(|req| {
                let path = req
                    .pointer("parameters/path")
                    .and_then(Node::as_str)
                    .unwrap();
                if path.ends_with("missing") {
                    r#"{"error"={"code"=500;"message"="no such node";};}"#.to_string()
                } else {
                    format!(r#"{{"output"="{path}";}}"#)
                }
            })
            .collect();
        ok(&format!("[{}]", items.join(";")))
    })
    .await;
    let client = mock.client_with(|mut c| {
        c.batch_chunk_size = 3;
        c
    });
    let requests: Vec<BatchRequest> = (0..7)
        .map(|i| {
            if i == 4 {
                BatchRequest::get("//missing")
            } else {
                BatchRequest::get(format!("//p{i}"))
            }
        })
        .collect();
    let results = client.execute_batch(&requests, 4).await.unwrap();
    assert_eq!(results.len(), 7);
    for (i, result) in results.iter().enumerate() {
        if i == 4 {
            assert!(result.as_ref().unwrap_err().is_resolve_error());
        } else {
            let expected = format!("//p{i}");
            assert_eq!(result.as_ref().unwrap().as_str(), Some(expected.as_str()));
        }
    }
    assert_eq!(mock.requests().len(), 3, "7 requests in chunks of 3");
    assert!(client.execute_batch(&[], 4).await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_come_from_the_header_or_the_body() {
    let mock = Mock::start(|r| match r.param_str("path").as_deref() {
        Some("//header") => Reply {
            status: 400,
            headers: vec![(
                "X-YT-Error",
                r#"{"code":500,"message":"Error resolving path //header","attributes":{},"inner_errors":[]}"#.into(),
            )],
            body: vec![],
        },
        Some("//body") => Reply {
            status: 400,
            headers: vec![],
            body: br#"{"code":901,"message":"Access denied","inner_errors":[{"code":1,"message":"no read"}]}"#.to_vec(),
        },
        Some("//in-200") => Reply {
            status: 200,
            headers: vec![
                ("X-YT-Response-Code", "1".into()),
                ("X-YT-Error", r#"{"code":1,"message":"failed late"}"#.into()),
            ],
            body: vec![],
        },
        Some("//garbage") => ok("{not yson"),
        _ => Reply {
            status: 500,
            headers: vec![],
            body: b"<html>oops</html>".to_vec(),
        },
    })
    .await;
    let client = mock.client_with(|c| c.with_max_retries(0));
    let e = client.get("//header").await.unwrap_err();
    assert!(e.is_resolve_error(), "{e}");
    assert!(!e.is_transient());
    assert!(matches!(&e, Error::Yt { status: 400, .. }));
    let e = client.get("//body").await.unwrap_err();
    let yt = e.yt_error().unwrap();
    assert_eq!(yt.code, 901);
    assert_eq!(
        e.to_string(),
        "cluster error (HTTP 400): Access denied (code 901): no read (code 1)"
    );
    let e = client.get("//in-200").await.unwrap_err();
    assert_eq!(e.yt_error().unwrap().message, "failed late");
    assert!(matches!(
        client.get("//garbage").await.unwrap_err(),
        Error::Decode(_)
    ));
    let e = client.get("//html").await.unwrap_err();
    assert!(e.is_transient());
    assert!(e.to_string().contains("oops"));
}

#[tokio::test]
async fn transient_errors_are_retried_honouring_retry_after() {
    let calls = Arc::new(Mutex::new(0u32));
    let calls2 = calls.clone();
    let mock = Mock::start(move |r| {
        let mut n = calls2.lock().unwrap();
        *n += 1;
        match (r.param_str("path").as_deref(), *n) {
            (Some("//flaky"), 1) => Reply {
                status: 503,
                headers: vec![("Retry-After", "1".into())],
                body: br#"{"code":105,"message":"unavailable"}"#.to_vec(),
            },
            (Some("//flaky"), _) => ok("1"),
            (_, _) => Reply {
                status: 400,
                headers: vec![],
                body: br#"{"code":1,"message":"permanent"}"#.to_vec(),
            },
        }
    })
    .await;
    let client = mock.client();
    let started = Instant::now();
    assert_eq!(client.get("//flaky").await.unwrap().as_i64(), Some(1));
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(client.stats().retries_total, 1);
    *calls.lock().unwrap() = 10;
    assert!(client.get("//permanent").await.is_err());
    assert_eq!(mock.requests().len(), 3, "a permanent error is not retried");
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut config = ClientConfig::new(format!("http://{addr}"))
        .with_timeout(Duration::from_millis(200))
        .with_max_retries(1);
    config.initial_backoff = Duration::from_millis(1);
    let client = YtClient::new(config).unwrap();
    let started = Instant::now();
    let e = client.get("//x").await.unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e}");
    assert_eq!(e.failure_kind(), yt_client::FailureKind::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(client.stats().requests_total, 2, "retried once");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client = YtClient::new(ClientConfig::new(closed.to_string()).with_max_retries(0)).unwrap();
    let e = client.get("//x").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)) && e.is_transient(), "{e}");
    assert_eq!(e.failure_kind(), yt_client::FailureKind::Network);
}

#[tokio::test]
async fn whoami_uses_the_callers_credentials_and_401_is_unauthenticated() {
    let mock = Mock::start(|r| {
        assert_eq!(r.path, "/auth/whoami");
        assert_eq!(r.method, "POST");
        let auth = r
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let cookie = r
            .headers
            .get("cookie")
            .map(|v| v.to_str().unwrap().to_string());
        match (auth.as_deref(), cookie.as_deref()) {
            (Some("OAuth alice-token"), None) => ok(r#"{"login":"alice"}"#),
            (Some("Bearer bob-iam"), None) => ok(r#"{"login":"bob"}"#),
            (None, Some("YTCypressCookie=alice-cookie")) => ok(r#"{"login":"alice"}"#),
            _ => Reply {
                status: 401,
                headers: vec![],
                body: br#"{"code":900,"message":"Authentication failed"}"#.to_vec(),
            },
        }
    })
    .await;
    let client = mock.client();
    assert_eq!(
        client
            .whoami(&Credentials::OAuth("alice-token".into()))
            .await
            .unwrap(),
        "alice"
    );
    assert_eq!(
        client
            .whoami(&Credentials::Bearer("bob-iam".into()))
            .await
            .unwrap(),
        "bob"
    );
    let cookie = Credentials::Cookie {
        name: "YTCypressCookie".into(),
        value: "alice-cookie".into(),
    };
    assert_eq!(client.whoami(&cookie).await.unwrap(), "alice");
    let e = client
        .whoami(&Credentials::OAuth("robot-secret-not".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    assert!(!e.is_transient());
    let e = client
        .whoami(&Credentials::OAuth("bad\nvalue".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    assert_eq!(
        mock.requests().len(),
        4,
        "401 is not retried; a bad header is never sent"
    );
}

#[tokio::test]
async fn operation_permission_and_jobs_pages() {
    let mock = Mock::start(|r| match r.path.as_str() {
        "/api/v4/check_operation_permission" => {
            let user = r.param_str("user").unwrap();
            assert_eq!(r.param_str("permission").as_deref(), Some("read"));
            ok(&format!(
                r#"{{"action"="{}";}}"#,
                if user == "alice" { "allow" } else { "deny" }
            ))
        }
        "/api/v4/list_jobs" => {
            let params = r.params();
            assert_eq!(params.get("job_state").and_then(Node::as_str), Some("running"));
            let offset = params.get("offset").and_then(Node::as_i64).unwrap();
            let limit = params.get("limit").and_then(Node::as_i64).unwrap();
            let total = 250;
            let jobs: Vec<String> = (offset..(offset + limit).min(total))
                .map(|i| {
                    format!(
                        r#"{{"id"="job-{i}";"address"="127.0.0.{}:9012";"task_name"="t";"state"="running";"job_cookie"={i}u;}}"#,
                        1 + i % 3
                    )
                })
                .collect();
            ok(&format!(r#"{{"jobs"=[{}];"continuation_token"=#;}}"#, jobs.join(";")))
        }
        _ => unreachable!(),
    })
    .await;
    let client = mock.client();
    assert!(client
        .check_operation_permission("op", "alice", "read")
        .await
        .unwrap());
    assert!(!client
        .check_operation_permission("op", "eve", "read")
        .await
        .unwrap());
    let jobs = client.list_jobs("op", Some("running")).await.unwrap();
    assert_eq!(jobs.len(), 250);
    assert_eq!(jobs[249].id, "job-249");
    assert_eq!(client.stats().by_command.get("list_jobs"), Some(&3));
}
