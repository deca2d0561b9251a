//! The job runner: vanilla jobs as real local processes (`bash -c <command>` in their own
//! process group and sandbox), restarted when they fail, killed (group-wide) on abort and on
//! cluster shutdown.

use crate::ids;
use crate::operations::{FileArtifact, Job, OpState, OpsStore, TaskSpec};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Delay before a failed job is replaced.
const RESTART_DELAY: Duration = Duration::from_millis(200);
/// How long a job gets between SIGTERM and SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);
/// Failed jobs tolerated before the operation fails, unless the spec says otherwise.
const DEFAULT_MAX_FAILED_JOBS: u64 = 10;

struct OpControl {
    stop: Arc<watch::Sender<bool>>,
    handles: Vec<JoinHandle<()>>,
}

/// Runs and stops the jobs of real operations.
pub struct Runner {
    store: Arc<Mutex<OpsStore>>,
    work_dir: PathBuf,
    live_groups: Arc<Mutex<HashSet<i32>>>,
    used_ports: Arc<Mutex<HashSet<u16>>>,
    controls: Mutex<HashMap<String, OpControl>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Runner {
    pub fn new(store: Arc<Mutex<OpsStore>>, work_dir: PathBuf) -> Self {
        Runner {
            store,
            work_dir,
            live_groups: Arc::new(Mutex::new(HashSet::new())),
            used_ports: Arc::new(Mutex::new(HashSet::new())),
            controls: Mutex::new(HashMap::new()),
        }
    }

    /// Starts every job slot of an operation already in the store.
    pub fn start(&self, op_id: &str, tasks: &[TaskSpec], max_failed_jobs: Option<u64>) {
        let (stop, _) = watch::channel(false);
        let stop = Arc::new(stop);
        let mut handles = Vec::new();
        for task in tasks {
            let task = Arc::new(task.clone());
            for job_index in 0..task.job_count {
                let slot = Slot {
                    store: self.store.clone(),
                    live_groups: self.live_groups.clone(),
                    used_ports: self.used_ports.clone(),
                    sandbox_root: self.work_dir.join(op_id),
                    op_id: op_id.to_string(),
                    task: task.clone(),
                    job_index,
                    stop: stop.clone(),
                    max_failed_jobs: max_failed_jobs.unwrap_or(DEFAULT_MAX_FAILED_JOBS),
                };
                handles.push(tokio::spawn(slot.run()));
            }
        }
        lock(&self.controls).insert(op_id.to_string(), OpControl { stop, handles });
    }

    /// Stops an operation's jobs (killing their process groups) and waits for them.
    pub async fn stop(&self, op_id: &str) {
        let control = lock(&self.controls).remove(op_id);
        if let Some(control) = control {
            let _ = control.stop.send(true);
            for handle in control.handles {
                let _ = tokio::time::timeout(TERMINATE_GRACE * 3, handle).await;
            }
        }
    }

    /// Stops everything (cluster shutdown).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.controls).keys().cloned().collect();
        for id in &ids {
            if let Some(c) = lock(&self.controls).get(id) {
                let _ = c.stop.send(true);
            }
        }
        for id in ids {
            self.stop(&id).await;
        }
        self.kill_all_now();
    }

    /// SIGKILLs every live job process group, synchronously (for `Drop`).
    pub fn kill_all_now(&self) {
        for pgid in lock(&self.live_groups).drain() {
            kill_group(pgid, libc::SIGKILL);
        }
        for (_, c) in lock(&self.controls).drain() {
            let _ = c.stop.send(true);
            for h in c.handles {
                h.abort();
            }
        }
    }

    /// The number of live job process groups.
    pub fn live_job_count(&self) -> usize {
        lock(&self.live_groups).len()
    }
}

fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// One job slot: runs a job, replaces it when it fails, ends when it completes or is stopped.
struct Slot {
    store: Arc<Mutex<OpsStore>>,
    live_groups: Arc<Mutex<HashSet<i32>>>,
    used_ports: Arc<Mutex<HashSet<u16>>>,
    sandbox_root: PathBuf,
    op_id: String,
    task: Arc<TaskSpec>,
    job_index: usize,
    stop: Arc<watch::Sender<bool>>,
    max_failed_jobs: u64,
}

enum Outcome {
    Completed,
    /// The job failed; the message says how.
    Failed(String),
    Stopped,
}

impl Slot {
    async fn run(self) {
        let mut stop_rx = self.stop.subscribe();
        loop {
            if *stop_rx.borrow() {
                break;
            }
            let outcome = self.run_one(&mut stop_rx).await;
            match outcome {
                Outcome::Stopped => break,
                Outcome::Completed => {
                    self.slot_done();
                    break;
                }
                Outcome::Failed(_) => {
                    let failed = lock(&self.store)
                        .get(&self.op_id)
                        .map(|o| o.failed_jobs)
                        .unwrap_or(0);
                    if failed >= self.max_failed_jobs {
                        self.fail_operation(failed);
                        let _ = self.stop.send(true);
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RESTART_DELAY) => {}
                _ = async { let _ = stop_rx.wait_for(|&s| s).await; } => break,
            }
        }
    }

    fn slot_done(&self) {
        let mut store = lock(&self.store);
        let done = store
            .update(&self.op_id, |op| {
                op.active_slots = op.active_slots.saturating_sub(1);
                op.active_slots == 0 && op.state == OpState::Running
            })
            .unwrap_or(false);
        if done {
            store.set_state(&self.op_id, OpState::Completed);
        }
    }

    fn fail_operation(&self, failed: u64) {
        let mut store = lock(&self.store);
        let running = store
            .get(&self.op_id)
            .map(|o| o.state == OpState::Running)
            .unwrap_or(false);
        if running {
            store.update(&self.op_id, |op| {
                op.error = Some(crate::error::YtError::bad_request(format!(
                    "Failed jobs limit exceeded: {failed} jobs failed"
                )));
            });
            store.set_state(&self.op_id, OpState::Failed);
        }
    }

    fn allocate_ports(&self) -> std::io::Result<Vec<u16>> {
        let mut ports = Vec::with_capacity(self.task.port_count);
        let mut used = lock(&self.used_ports);
        let mut attempts = 0;
        while ports.len() < self.task.port_count {
            attempts += 1;
            if attempts > JOB_PORT_COUNT {
                return Err(std::io::Error::other("no free job ports"));
            }
            let port = next_job_port();
            // Free now (nothing listens on it), and never handed out twice: a restarted job
            // gets new ports.
            if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() && used.insert(port) {
                ports.push(port);
            }
        }
        Ok(ports)
    }

    fn prepare_sandbox(&self, job_id: &str) -> std::io::Result<PathBuf> {
        let sandbox = self.sandbox_root.join(job_id);
        std::fs::create_dir_all(&sandbox)?;
        for file in &self.task.files {
            write_artifact(&sandbox, file)?;
        }
        Ok(sandbox)
    }

    async fn run_one(&self, stop_rx: &mut watch::Receiver<bool>) -> Outcome {
        let job_id = ids::job_id();
        let address = lock(&self.store).next_address();
        let prepared = self
            .allocate_ports()
            .and_then(|ports| Ok((ports, self.prepare_sandbox(&job_id)?)));
        let (ports, sandbox) = match prepared {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(op = %self.op_id, error = %e, "cannot prepare a job");
                self.record_failed_start(
                    &job_id,
                    &address,
                    &format!("cannot prepare the job: {e}"),
                );
                return Outcome::Failed(String::new());
            }
        };
        let mut command = tokio::process::Command::new("bash");
        command
            .arg("-c")
            .arg(&self.task.command)
            .current_dir(&sandbox)
            .env("YT_OPERATION_ID", &self.op_id)
            .env("YT_JOB_ID", &job_id)
            .env("YT_JOB_INDEX", self.job_index.to_string())
            .env("YT_TASK_NAME", &self.task.name)
            .env("YT_JOB_COOKIE", self.job_index.to_string())
            .env("YT_PORT_COUNT", ports.len().to_string())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        for (i, port) in ports.iter().enumerate() {
            command.env(format!("YT_PORT_{i}"), port.to_string());
        }
        for (k, v) in &self.task.environment {
            command.env(k, v);
        }
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe prctl(2): if the cluster process dies, the job gets SIGKILL.
        // Linux only; elsewhere jobs are killed by process group at shutdown and on drop.
        #[cfg(target_os = "linux")]
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let files = std::fs::File::create(sandbox.join("stdout"))
            .and_then(|out| Ok((out, std::fs::File::create(sandbox.join("stderr"))?)));
        match files {
            Ok((out, err)) => {
                command.stdout(out).stderr(err);
            }
            Err(e) => {
                self.record_failed_start(
                    &job_id,
                    &address,
                    &format!("cannot open output files: {e}"),
                );
                return Outcome::Failed(String::new());
            }
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.record_failed_start(&job_id, &address, &format!("cannot start bash: {e}"));
                return Outcome::Failed(String::new());
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        lock(&self.live_groups).insert(pid);
        lock(&self.store).register_job(Job {
            id: job_id.clone(),
            operation_id: self.op_id.clone(),
            task_name: self.task.name.clone(),
            address,
            start_us: ids::now_micros(),
            finish_us: None,
            state: "running",
            ports,
            sandbox: Some(sandbox),
            pid: Some(pid),
            error: None,
        });
        tracing::info!(op = %self.op_id, job = %job_id, pid, "job started");
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(s) if s.success() => Outcome::Completed,
                Ok(s) => Outcome::Failed(match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                    (Some(code), _) => format!("Process exited with code {code}"),
                    (None, Some(signal)) => format!("Process terminated by signal {signal}"),
                    (None, None) => "Process ended abnormally".to_string(),
                }),
                Err(e) => Outcome::Failed(format!("Cannot wait for the process: {e}")),
            },
            _ = async { let _ = stop_rx.wait_for(|&s| s).await; } => Outcome::Stopped,
        };
        if matches!(outcome, Outcome::Stopped) {
            kill_group(pid, libc::SIGTERM);
            if tokio::time::timeout(TERMINATE_GRACE, child.wait())
                .await
                .is_err()
            {
                kill_group(pid, libc::SIGKILL);
                let _ = child.wait().await;
            }
        }
        // Leftovers of the job (background children) go with it.
        kill_group(pid, libc::SIGKILL);
        lock(&self.live_groups).remove(&pid);
        let (state, error) = match &outcome {
            Outcome::Completed => ("completed", None),
            Outcome::Failed(message) => ("failed", Some(job_error(message))),
            Outcome::Stopped => ("aborted", None),
        };
        tracing::info!(op = %self.op_id, job = %job_id, state, "job finished");
        lock(&self.store).finish_job(&self.op_id, &job_id, state, error);
        outcome
    }

    fn record_failed_start(&self, job_id: &str, address: &str, message: &str) {
        let sandbox = self.sandbox_root.join(job_id);
        let _ = std::fs::create_dir_all(&sandbox);
        let _ = std::fs::write(sandbox.join("stderr"), message);
        let mut store = lock(&self.store);
        store.register_job(Job {
            id: job_id.to_string(),
            operation_id: self.op_id.clone(),
            task_name: self.task.name.clone(),
            address: address.to_string(),
            start_us: ids::now_micros(),
            finish_us: None,
            state: "running",
            ports: Vec::new(),
            sandbox: Some(sandbox),
            pid: None,
            error: None,
        });
        store.finish_job(&self.op_id, job_id, "failed", Some(job_error(message)));
    }
}

/// The error of a failed job, shaped like the scheduler's ("User job failed" with the cause).
fn job_error(message: &str) -> crate::error::YtError {
    let inner = crate::error::YtError::new(10000, 400, message);
    crate::error::YtError::new(1205, 400, "User job failed").with_inner(inner)
}

fn write_artifact(sandbox: &Path, file: &FileArtifact) -> std::io::Result<()> {
    let path = sandbox.join(&file.file_name);
    std::fs::write(&path, file.content.as_slice())?;
    let mode = if file.executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
}

/// Job ports come from a range of their own, as on an exec node (its `start_port` 20000 and
/// `port_count` 10000), not from the ephemeral range: a port taken from there was free when
/// picked but could be handed to any other socket of the machine (a test's proxy, a client)
/// before the job bound it, and requests for the job then reached that socket.
const JOB_PORT_START: u16 = 20000;
const JOB_PORT_COUNT: u32 = 10000;

/// The next candidate job port: one cursor for every cluster of the process, starting at an
/// offset of the process's own so that two processes rarely try the same ports.
fn next_job_port() -> u16 {
    static CURSOR: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let cursor = CURSOR.get_or_init(|| {
        let seed =
            std::process::id().wrapping_mul(2_654_435_761) ^ (crate::ids::now_micros() as u32);
        std::sync::atomic::AtomicU32::new(seed % JOB_PORT_COUNT)
    });
    let n = cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % JOB_PORT_COUNT;
    JOB_PORT_START + n as u16
}
