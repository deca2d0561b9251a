//! `task-proxy dev` end to end, as a newcomer runs it: start it on free ports, read what it
//! prints, run the printed curl and grpcurl lines with the real tools and get the jobs'
//! answers; then Ctrl-C (SIGINT) and check that no job process is left behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Pids of live processes whose environment says they are a job of one of `operations`.
fn job_processes(operations: &[String]) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let is_job = environ.split(|&b| b == 0).any(|var| {
            operations
                .iter()
                .any(|op| var == format!("YT_OPERATION_ID={op}").as_bytes())
        });
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if is_job && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Runs a printed command line with bash (grpcurl from the venv on PATH); returns stdout.
fn run_printed(line: &str) -> String {
    let venv_bin = test_support::tool("grpcurl")
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-c", &format!("timeout 20 {line} 2>&1 || true")])
        .env("PATH", path)
        .output()
        .expect("run bash");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills `task-proxy dev` if the test fails before its Ctrl-C.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGINT lets it stop its jobs.
            test_support::signal_process(self.0.id(), "INT");
            std::thread::sleep(Duration::from_secs(5));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn dev_prints_working_commands_and_leaves_no_process_behind() {
    let started = Instant::now();
    let (listen, admin, cluster) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_task-proxy"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--cluster-listen",
            &format!("127.0.0.1:{cluster}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start task-proxy dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut child = KillOnDrop(child);
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });

    // Read until the status page line, the last of the guide.
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = lines_rx
            .recv_timeout(remaining)
            .unwrap_or_else(|_| panic!("no guide within 120 s; got {printed:#?}"));
        let done = line.starts_with("# Status page");
        printed.push(line);
        if done {
            break;
        }
    }
    let ready_after = started.elapsed();
    let guide = printed.join("\n");
    println!("{guide}\n(ready after {ready_after:?})");

    let curls: Vec<&String> = printed.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 2, "two curl lines in {guide}");
    for line in curls {
        let answer = run_printed(line);
        assert!(
            answer.contains("Directory listing"),
            "{line} answered {answer}"
        );
    }
    let grpcurl = printed
        .iter()
        .find(|l| l.starts_with("grpcurl "))
        .expect("a grpcurl line");
    let answer = run_printed(grpcurl);
    assert!(
        answer.contains("Hello you from"),
        "{grpcurl} answered {answer}"
    );
    assert!(guide.contains(&format!("YT_PROXY=http://127.0.0.1:{cluster}")));
    assert!(guide.contains(&format!("http://127.0.0.1:{admin}/")));

    // The operation ids are printed; their jobs are running now.
    let operations: Vec<String> = printed
        .iter()
        .filter_map(|l| l.split_once("service (").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split(',').next())
        .map(str::to_string)
        .collect();
    assert_eq!(operations.len(), 2, "two operation ids in {guide}");
    let jobs = job_processes(&operations);
    assert!(jobs.len() >= 3, "three job processes, found {jobs:?}");

    // Ctrl-C: everything stops, no job survives.
    assert!(test_support::signal_process(child.0.id(), "INT"), "SIGINT");
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < stop_deadline,
            "task-proxy dev did not stop within 30 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
    let left = job_processes(&operations);
    assert!(left.is_empty(), "job processes left behind: {left:?}");
    println!("total {:?}", started.elapsed());
}
