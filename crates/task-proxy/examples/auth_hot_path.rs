//! Micro-benchmark of the gate's cached path: `cargo run --release -p task-proxy --example
//! auth_hot_path`. Prints nanoseconds per `Gate::admit` with the decision cached, against a
//! disabled gate (which only strips credentials), on one thread and on two.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Instant;
use task_proxy::auth::{AuthBackend, AuthConfig, BackendError, Credential, Gate};
use task_proxy::routing::{Endpoint, Protocol, Route, ServiceKey};

/// The client address the requests come from.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct AllowAll;

impl AuthBackend for AllowAll {
    fn whoami<'a>(&'a self, _: &'a Credential) -> BoxFuture<'a, Result<String, BackendError>> {
        async { Ok("alice".to_string()) }.boxed()
    }
    fn check_read<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        async { Ok(true) }.boxed()
    }
}

fn route() -> Route {
    Route {
        hash: "645236d8".into(),
        domain: "645236d8.example.net".into(),
        alias_domain: None,
        key: ServiceKey {
            operation_id: "a6e04b98-bf982394-5103e8-55754a49".into(),
            task_name: "main".into(),
            service: "port_0".into(),
        },
        protocol: Protocol::Http,
        endpoints: vec![Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
        }],
        operation_start_time: None,
        timeouts: Default::default(),
        sticky: None,
    }
}

async fn run(gate: &Gate, route: &Route, n: u32) -> f64 {
    let template = http::Request::builder()
        .uri("/index.html")
        .header("host", "645236d8.example.net")
        .header("authorization", "OAuth alice-token-0123456789abcdef")
        .header("user-agent", "wrk")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let started = Instant::now();
    for _ in 0..n {
        let mut parts = template.clone();
        let admitted = gate.admit(&mut parts, true, route, CLIENT).await;
        std::hint::black_box(admitted.is_ok());
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let on = Gate::new(AuthConfig::default(), Arc::new(AllowAll)).unwrap();
        let off = Gate::disabled();
        let route = Arc::new(route());
        let n = 1_000_000;
        run(&on, &route, 1000).await;
        for round in 0..3 {
            let off_ns = run(&off, &route, n).await;
            let on_ns = run(&on, &route, n).await;
            println!("round {round}: one thread: off {off_ns:.0} ns, on {on_ns:.0} ns per request (incl. building the request)");
        }
        for _ in 0..2 {
            let started = Instant::now();
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let on = on.clone();
                    let route = route.clone();
                    tokio::spawn(async move { run(&on, &route, n).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            println!(
                "two tasks in parallel: {:.0} ns per request each",
                started.elapsed().as_nanos() as f64 / f64::from(n)
            );
        }
    });
}
