//! The admin listener: `/healthz` (alive), `/readyz` (a routing table is loaded and the proxy
//! is not draining), `/services` (JSON: every service with its endpoints and their health),
//! `/metrics` (Prometheus text) and the status page for people at `/` (`status_page.rs`).
//! Admin only reads: the routing table, the balancer, and the counters the data plane, auth
//! and discovery own; nothing else in the crate imports it (see docs/architecture.md).

pub mod metrics;
pub mod status_page;

use crate::answer::{full_body, ProxyBody};
use crate::auth::Gate;
use crate::discovery::DiscoveryStatus;
use crate::proxy::balance::Balancer;
use crate::routing::RoutingTable;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin endpoints read.
pub struct Admin {
    pub table: Arc<RoutingTable>,
    pub balancer: Arc<Balancer>,
    pub registry: Registry,
    /// The auth gate, for the status page's decision and cache figures.
    pub gate: Gate,
    /// Discovery's last pass, when services come from discovery.
    pub discovery: Option<DiscoveryStatus>,
    /// Fired when the data plane starts draining: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// Stops the admin listener.
    pub stop: CancellationToken,
    /// How the status page links service domains: `http://<domain>:<port>/` with the plain
    /// listener's port (`None`: domains are shown unlinked).
    pub service_port: Option<u16>,
}

#[derive(Serialize)]
struct EndpointView {
    address: String,
    healthy: bool,
    ejected_for_ms: Option<u64>,
    consecutive_failures: u32,
    in_flight: u32,
    ejections: u64,
}

#[derive(Serialize)]
struct ServiceView<'a> {
    domain: &'a str,
    /// `<alias>-<task>-<service>.<base-domain>`, when the service has an alias route.
    #[serde(skip_serializing_if = "Option::is_none")]
    alias_domain: Option<&'a str>,
    hash: &'a str,
    operation_id: &'a str,
    task_name: &'a str,
    service: &'a str,
    protocol: &'a str,
    /// The operation's `route_timeout_seconds` (0: none), when it sets one; else the global
    /// `-route-timeout-seconds` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    route_timeout_seconds: Option<u64>,
    /// The operation's `stream_idle_timeout_seconds` (0: none), when it sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_idle_timeout_seconds: Option<u64>,
    /// Whether an affinity cookie keeps a browser on one job (the service's `sticky`, else
    /// `--sticky-sessions-default`).
    sticky: bool,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
struct ServicesView<'a> {
    generation: u64,
    base_domain: &'a str,
    services: Vec<ServiceView<'a>>,
}

impl Admin {
    /// Serves the admin endpoints on `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let stream = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admin = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(&req)) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                if self.draining.is_cancelled() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
                } else if let Some(reason) = self.gate.unsupported() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("auth cannot work: {reason}\n"),
                    )
                } else if self.table.is_loaded() {
                    text(StatusCode::OK, "ready\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no routing table loaded yet\n".into(),
                    )
                }
            }
            "/services" => self.services(),
            "/metrics" => match metrics::render(&self.registry) {
                Ok(body) => {
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot render metrics\n".into(),
                ),
            },
            "/" => self.status_page(),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    fn services(&self) -> Response<ProxyBody> {
        let snapshot = self.table.load();
        let backends = self.balancer.current();
        let services = snapshot
            .routes()
            .iter()
            .map(|route| {
                let backend = backends.backend(&route.hash);
                let sticky = match backend {
                    Some(b) => b.sticky,
                    None => route.sticky.unwrap_or(false),
                };
                let endpoints = match backend {
                    Some(b) => b
                        .endpoints
                        .iter()
                        .map(|ep| {
                            let ejected = self.balancer.ejected_for_ms(ep);
                            EndpointView {
                                address: ep.authority.clone(),
                                healthy: ejected.is_none(),
                                ejected_for_ms: ejected,
                                consecutive_failures: ep.consecutive_failures(),
                                in_flight: ep.in_flight(),
                                ejections: ep.ejections(),
                            }
                        })
                        .collect(),
                    None => route
                        .endpoints
                        .iter()
                        .map(|e| EndpointView {
                            address: e.authority(),
                            healthy: true,
                            ejected_for_ms: None,
                            consecutive_failures: 0,
                            in_flight: 0,
                            ejections: 0,
                        })
                        .collect(),
                };
                ServiceView {
                    domain: &route.domain,
                    alias_domain: route.alias_domain.as_deref(),
                    hash: &route.hash,
                    operation_id: &route.key.operation_id,
                    task_name: &route.key.task_name,
                    service: &route.key.service,
                    protocol: route.protocol.as_str(),
                    route_timeout_seconds: route.timeouts.route_timeout_seconds,
                    stream_idle_timeout_seconds: route.timeouts.stream_idle_timeout_seconds,
                    sticky,
                    endpoints,
                }
            })
            .collect();
        let view = ServicesView {
            generation: snapshot.generation(),
            base_domain: snapshot.base_domain(),
            services,
        };
        match serde_json::to_string_pretty(&view) {
            Ok(json) => {
                let mut r = text(StatusCode::OK, json);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render services\n".into(),
            ),
        }
    }

    fn status_page(&self) -> Response<ProxyBody> {
        let mut r = text(StatusCode::OK, status_page::render(self));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
