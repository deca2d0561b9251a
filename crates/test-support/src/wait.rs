//! Waiting on observable state: poll a condition until it holds or a deadline passes, then
//! fail naming what did not happen. Tests wait on what they can see (an answer, a counter, a
//! file) instead of sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, and returns that; panics naming `what` after
/// `timeout`. Blocking: from async code use [`wait_for`] (or `block_in_place`).
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for async probes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a TCP connect to `addr` succeeds, or panics after `timeout`.
pub async fn wait_for_port(addr: std::net::SocketAddr, timeout: Duration) {
    wait_for(
        &format!("{addr} to accept connections"),
        timeout,
        || async { tokio::net::TcpStream::connect(addr).await.ok().map(drop) },
    )
    .await
}
