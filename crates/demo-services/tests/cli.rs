//! The `demo-services` binary: flags, the `YT_PORT_0` / `YT_JOB_ID` environment of a job, and
//! listening on all addresses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

async fn start(args: &[&str], env: &[(&str, &str)], port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_demo-services"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("demo-services starts");
    // All addresses: reachable through another loopback address, as on an exec node.
    let addr: SocketAddr = format!("127.0.0.2:{port}").parse().expect("address");
    test_support::wait_for_port(addr, Duration::from_secs(10)).await;
    child
}

#[tokio::test]
async fn http_job_takes_port_and_name_from_the_job_environment() {
    let port = free_port();
    let port_text = port.to_string();
    let _job = start(
        &["http"],
        &[("YT_PORT_0", &port_text), ("YT_JOB_ID", "job-42")],
        port,
    )
    .await;
    let output = Command::new("curl")
        .args(["-sS", "-i", &format!("http://127.0.0.2:{port}/")])
        .output()
        .await
        .expect("curl runs");
    let response = String::from_utf8_lossy(&output.stdout);
    assert!(response.contains("x-demo-job: job-42\r\n"), "{response}");
}

#[tokio::test]
async fn grpc_job_takes_port_and_name_from_flags() {
    let port = free_port();
    let port_text = port.to_string();
    let _job = start(
        &["grpc", "--port", &port_text, "--name", "flagged"],
        &[],
        port,
    )
    .await;
    let output = Command::new(test_support::tool("grpcurl"))
        .args(["-plaintext", "-d", r#"{"name":"cli"}"#])
        .arg(format!("127.0.0.2:{port}"))
        .arg("helloworld.Greeter/SayHello")
        .output()
        .await
        .expect("grpcurl runs");
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(reply.contains("Hello cli from flagged"), "{reply}");
}
