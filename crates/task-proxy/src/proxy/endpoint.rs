//! One job endpoint's state, shared by all workers and kept across routing snapshot swaps
//! while the endpoint stays: its health (for [`super::balance`]), its connection cap
//! ([`super::conn_limit`]) and its per-worker pools of idle connections, both hyper's (filled
//! and drained by [`super::upstream`]) and the HTTP/1.1 relay's ([`RawConn`], used by
//! [`super::relay`]). The types refer to each other (a pooled connection knows its endpoint),
//! so they live together here, below the modules that use them.

use super::conn_limit::{ConnLimit, ConnLimitSettings, ConnPermit, Overloaded};
use super::http1::head::Header;
use crate::answer::ProxyBody;
use crate::routing::Endpoint;
use bytes::BytesMut;
use hyper::client::conn::{http1, http2};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpStream;

/// Health of one endpoint, shared by all workers (atomics only).
#[derive(Debug, Default)]
pub struct Health {
    /// Consecutive connect failures.
    pub(super) failures: AtomicU32,
    /// Milliseconds since the balancer's epoch until which the endpoint is ejected.
    pub(super) ejected_until_ms: AtomicU64,
    pub(super) in_flight: AtomicU32,
    pub(super) ejections: AtomicU64,
}

/// One job endpoint: its address, health and per-worker connection pools.
#[derive(Debug)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// `host:port` as it appears in URLs (for the Location rewrite).
    pub authority: String,
    pub health: Health,
    pools: Box<[IdleConnections]>,
    /// Connections open to the endpoint, across workers and both forwarding paths.
    pub limit: ConnLimit,
}

impl EndpointState {
    pub(super) fn new(
        endpoint: Endpoint,
        workers: usize,
        limit: ConnLimitSettings,
    ) -> EndpointState {
        EndpointState {
            authority: endpoint.authority(),
            endpoint,
            health: Health::default(),
            pools: (0..workers).map(|_| IdleConnections::default()).collect(),
            limit: ConnLimit::new(limit),
        }
    }

    /// The right to open one more connection to the endpoint. At the cap, an idle pooled
    /// connection (of any worker) is closed to make room, then the request waits in the queue.
    pub async fn connection_permit(&self) -> Result<ConnPermit, Overloaded> {
        if let Some(permit) = self.limit.try_acquire() {
            return Ok(permit);
        }
        // Another worker's lock is taken only here, at the cap: rare and short.
        for pool in self.pools.iter() {
            if pool.close_one_idle() {
                break;
            }
        }
        self.limit.acquire_queued().await
    }

    /// This worker's pools for the endpoint.
    pub fn pool(&self, worker: usize) -> Option<&IdleConnections> {
        self.pools.get(worker)
    }

    pub fn in_flight(&self) -> u32 {
        self.health.in_flight.load(Ordering::Relaxed)
    }

    pub fn ejections(&self) -> u64 {
        self.health.ejections.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.health.failures.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on an endpoint (for power-of-two-choices).
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// The endpoint the request is on.
    pub fn endpoint(&self) -> &EndpointState {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An idle HTTP/1.1 connection ready for a request.
#[derive(Debug)]
pub(super) struct IdleHttp1 {
    pub(super) sender: http1::SendRequest<ProxyBody>,
    pub(super) since: Instant,
}

/// One worker's connections to one endpoint. TLS connections (of `https` services) have pools
/// of their own, so a plain and a TLS connection to one address are never mixed up.
#[derive(Debug, Default)]
pub struct IdleConnections {
    pub(super) http1: Mutex<Vec<IdleHttp1>>,
    pub(super) http2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Idle connections of the HTTP/1.1 relay.
    pub(super) raw: Mutex<Vec<RawConn>>,
    pub(super) tls_http1: Mutex<Vec<IdleHttp1>>,
    pub(super) tls_http2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
}

impl IdleConnections {
    /// The idle HTTP/1.1 connections over TLS (`tls`) or plain TCP.
    pub(super) fn http1_idle(&self, tls: bool) -> &Mutex<Vec<IdleHttp1>> {
        if tls {
            &self.tls_http1
        } else {
            &self.http1
        }
    }

    /// The HTTP/2 connection over TLS (`tls`) or plain TCP (h2c).
    pub(super) fn http2_slot(&self, tls: bool) -> &Mutex<Option<http2::SendRequest<ProxyBody>>> {
        if tls {
            &self.tls_http2
        } else {
            &self.http2
        }
    }

    /// Closes one idle HTTP/1.1 connection (the oldest), if there is one, to give its permit
    /// back. hyper's connection task ends (and gives the permit back) once its sender is gone.
    pub(super) fn close_one_idle(&self) -> bool {
        if let Ok(mut idle) = self.raw.lock() {
            if !idle.is_empty() {
                drop(idle.remove(0));
                return true;
            }
        }
        for tls in [false, true] {
            if let Ok(mut idle) = self.http1_idle(tls).lock() {
                if !idle.is_empty() {
                    drop(idle.remove(0));
                    return true;
                }
            }
        }
        false
    }
}

/// A connection to a job that the relay writes requests to and reads responses from.
#[derive(Debug)]
pub struct RawConn {
    pub(super) stream: TcpStream,
    /// Bytes read from the job and not passed on yet.
    pub(super) buf: BytesMut,
    pub(super) endpoint: Arc<EndpointState>,
    /// The parsed header index, reused between responses.
    pub(super) headers: Vec<Header>,
    pub(super) idle_since: Instant,
    /// The connection's place under the endpoint's cap, given back when it is dropped.
    pub(super) _permit: ConnPermit,
}
