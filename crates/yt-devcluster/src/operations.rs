//! Operations and jobs: the in-memory store (indexed by start time for fast paging), the
//! vanilla spec model, operation and job attributes as the API shows them, `list_operations`
//! and `list_jobs`, the exec nodes' orchid, and synthetic bulk load (no processes).

use crate::auth::OperationAccess;
use crate::error::YtError;
use crate::ids;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use yson::{Map, Node, Value};

/// How many finished jobs an operation remembers (for `list_jobs` and `get_job_stderr`).
const FINISHED_JOBS_KEPT: usize = 200;
/// The fake RPC port of every simulated exec node.
pub const NODE_PORT: u16 = 9012;

/// The address of simulated exec node `index`: `127.0.0.<index+1>:9012`.
pub fn node_address(index: usize) -> String {
    let host = index % 254 + 1;
    format!("127.0.0.{host}:{NODE_PORT}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpState {
    Running,
    Aborting,
    Aborted,
    Completed,
    Failed,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Aborting => "aborting",
            OpState::Aborted => "aborted",
            OpState::Completed => "completed",
            OpState::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            OpState::Aborted | OpState::Completed | OpState::Failed
        )
    }
}

/// A file of `file_paths`, captured from Cypress when the operation starts.
#[derive(Debug, Clone)]
pub struct FileArtifact {
    pub file_name: String,
    pub content: Arc<Vec<u8>>,
    pub executable: bool,
}

/// One task of a vanilla spec.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub command: String,
    pub job_count: usize,
    pub port_count: usize,
    /// Cypress path and file name in the sandbox.
    pub file_paths: Vec<(String, String)>,
    pub environment: Vec<(String, String)>,
    pub files: Vec<FileArtifact>,
}

impl TaskSpec {
    /// Reads the tasks of a vanilla spec.
    pub fn from_spec(spec: &Node) -> Result<Vec<TaskSpec>, YtError> {
        let tasks = spec.get("tasks").and_then(Node::as_map).ok_or_else(|| {
            YtError::bad_request("A vanilla operation needs a \"tasks\" map in its spec")
        })?;
        if tasks.is_empty() {
            return Err(YtError::bad_request(
                "A vanilla operation needs at least one task",
            ));
        }
        tasks
            .iter()
            .map(|(name, t)| TaskSpec::from_node(name, t))
            .collect()
    }

    fn from_node(name: &str, task: &Node) -> Result<TaskSpec, YtError> {
        let bad = |what: String| {
            YtError::bad_request(format!("Task {name:?}: {what}"))
                .with_attribute("task_name", Node::string(name))
        };
        if task.as_map().is_none() {
            return Err(bad(format!("must be a map, got a {}", task.type_name())));
        }
        let command = task
            .get("command")
            .and_then(Node::as_str)
            .ok_or_else(|| bad("\"command\" must be a string".into()))?
            .to_string();
        let count = |key: &str, default: i64| -> Result<usize, YtError> {
            match task.get(key) {
                None => Ok(default as usize),
                Some(n) => n
                    .as_i64()
                    .filter(|v| (0..=10_000).contains(v))
                    .map(|v| v as usize)
                    .ok_or_else(|| bad(format!("{key:?} must be an integer in 0..=10000"))),
            }
        };
        let job_count = count("job_count", 1)?;
        if job_count == 0 {
            return Err(bad("\"job_count\" must be positive".into()));
        }
        let port_count = count("port_count", 0)?;
        let mut file_paths = Vec::new();
        if let Some(paths) = task.get("file_paths") {
            let list = paths
                .as_list()
                .ok_or_else(|| bad("\"file_paths\" must be a list".into()))?;
            for p in list {
                let path = p
                    .as_str()
                    .ok_or_else(|| bad("\"file_paths\" items must be strings (paths)".into()))?;
                let path = path.trim();
                let file_name = p
                    .attribute("file_name")
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string());
                if file_name.is_empty()
                    || file_name.contains('/')
                    || file_name == ".."
                    || file_name == "."
                {
                    return Err(bad(format!("bad file name {file_name:?} for {path}")));
                }
                file_paths.push((path.to_string(), file_name));
            }
        }
        let mut environment = Vec::new();
        if let Some(env) = task.get("environment") {
            let map = env
                .as_map()
                .ok_or_else(|| bad("\"environment\" must be a map".into()))?;
            for (k, v) in map {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("environment {k:?} must be a string")))?;
                environment.push((k.clone(), v.to_string()));
            }
        }
        Ok(TaskSpec {
            name: name.to_string(),
            command,
            job_count,
            port_count,
            file_paths,
            environment,
            files: Vec::new(),
        })
    }
}

/// One job, running or finished.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub operation_id: String,
    pub task_name: String,
    pub address: String,
    pub start_us: u64,
    pub finish_us: Option<u64>,
    pub state: &'static str,
    pub ports: Vec<u16>,
    pub sandbox: Option<PathBuf>,
    pub pid: Option<i32>,
    /// Why a failed job failed.
    pub error: Option<YtError>,
}

impl Job {
    pub fn to_node(&self) -> Node {
        let mut m: Map = vec![
            ("id".into(), Node::string(self.id.clone())),
            (
                "operation_id".into(),
                Node::string(self.operation_id.clone()),
            ),
            ("type".into(), Node::string("vanilla")),
            ("state".into(), Node::string(self.state)),
            ("controller_state".into(), Node::string(self.state)),
            ("address".into(), Node::string(self.address.clone())),
            (
                "addresses".into(),
                Node::map(vec![("default".into(), Node::string(self.address.clone()))]),
            ),
            ("task_name".into(), Node::string(self.task_name.clone())),
            (
                "start_time".into(),
                Node::string(ids::format_time(self.start_us)),
            ),
            ("has_spec".into(), Value::Boolean(true).into()),
            ("progress".into(), Value::Double(0.0).into()),
            (
                "stderr_size".into(),
                Value::Uint64(self.stderr_size()).into(),
            ),
            ("is_stale".into(), Value::Boolean(false).into()),
            ("job_cookie".into(), Value::Uint64(0).into()),
        ];
        if let Some(f) = self.finish_us {
            m.push(("finish_time".into(), Node::string(ids::format_time(f))));
        }
        if let Some(e) = &self.error {
            m.push(("error".into(), e.to_node()));
        }
        Node::map(m)
    }

    fn stderr_size(&self) -> u64 {
        self.sandbox
            .as_ref()
            .and_then(|s| std::fs::metadata(s.join("stderr")).ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The job as the exec node's orchid shows it under `active_jobs/<id>`.
    pub fn orchid_node(&self) -> Node {
        Node::map(vec![
            ("job_id".into(), Node::string(self.id.clone())),
            (
                "operation_id".into(),
                Node::string(self.operation_id.clone()),
            ),
            ("job_type".into(), Node::string("vanilla")),
            ("job_state".into(), Node::string("running")),
            ("job_phase".into(), Node::string("running")),
            (
                "pid".into(),
                self.pid
                    .map(|p| Value::Int64(i64::from(p)).into())
                    .unwrap_or_else(Node::entity),
            ),
            (
                "start_time".into(),
                Node::string(ids::format_time(self.start_us)),
            ),
            (
                "job_ports".into(),
                Node::list(
                    self.ports
                        .iter()
                        .map(|&p| Value::Int64(i64::from(p)).into())
                        .collect(),
                ),
            ),
        ])
    }
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub op_type: String,
    pub state: OpState,
    pub user: String,
    pub start_us: u64,
    pub finish_us: Option<u64>,
    pub spec: Node,
    pub title: Option<String>,
    pub pool: String,
    pub annotations: Option<Node>,
    pub acl: Node,
    pub owners: Vec<String>,
    pub tasks: Vec<TaskSpec>,
    pub running: BTreeMap<String, Job>,
    pub finished: VecDeque<Job>,
    pub completed_jobs: u64,
    pub failed_jobs: u64,
    pub aborted_jobs: u64,
    /// Job slots still active (each slot runs one job at a time).
    pub active_slots: usize,
    pub synthetic: bool,
    pub error: Option<YtError>,
}

impl Operation {
    /// A new running operation from its spec.
    pub fn new(
        id: String,
        op_type: &str,
        user: &str,
        start_us: u64,
        spec: Node,
        tasks: Vec<TaskSpec>,
    ) -> Operation {
        let title = spec.get("title").and_then(Node::as_str).map(str::to_string);
        let pool = spec
            .get("pool")
            .and_then(Node::as_str)
            .unwrap_or(user)
            .to_string();
        let annotations = spec.get("annotations").cloned();
        let owners = spec
            .get("owners")
            .and_then(Node::as_list)
            .map(|l| {
                l.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let acl = spec
            .get("acl")
            .cloned()
            .unwrap_or_else(|| Node::list(Vec::new()));
        let active_slots = tasks.iter().map(|t| t.job_count).sum();
        Operation {
            id,
            op_type: op_type.to_string(),
            state: OpState::Running,
            user: user.to_string(),
            start_us,
            finish_us: None,
            spec,
            title,
            pool,
            annotations,
            acl,
            owners,
            tasks,
            running: BTreeMap::new(),
            finished: VecDeque::new(),
            completed_jobs: 0,
            failed_jobs: 0,
            aborted_jobs: 0,
            active_slots,
            synthetic: false,
            error: None,
        }
    }

    pub fn access(&self) -> OperationAccess<'_> {
        OperationAccess {
            authenticated_user: &self.user,
            owners: &self.owners,
            acl: &self.acl,
        }
    }

    fn total_jobs(&self) -> u64 {
        self.tasks.iter().map(|t| t.job_count as u64).sum()
    }

    fn jobs_progress(&self) -> Node {
        let int = |v: u64| -> Node { Value::Int64(v as i64).into() };
        let running = self.running.len() as u64;
        let pending = if self.state == OpState::Running {
            (self.active_slots as u64).saturating_sub(running)
        } else {
            0
        };
        Node::map(vec![
            ("total".into(), int(self.total_jobs())),
            ("running".into(), int(running)),
            ("pending".into(), int(pending)),
            (
                "completed".into(),
                Node::map(vec![
                    ("total".into(), int(self.completed_jobs)),
                    ("non-interrupted".into(), int(self.completed_jobs)),
                    ("interrupted".into(), Node::map(Vec::new())),
                ]),
            ),
            ("failed".into(), int(self.failed_jobs)),
            (
                "aborted".into(),
                Node::map(vec![("total".into(), int(self.aborted_jobs))]),
            ),
            ("lost".into(), int(0)),
            ("invalidated".into(), int(0)),
            ("suspended".into(), int(0)),
        ])
    }

    fn brief_spec(&self) -> Node {
        let empty_paths = || Node {
            attributes: vec![("count".into(), Value::Int64(0).into())],
            value: Value::List(Vec::new()),
        };
        let mut m: Map = Vec::new();
        if let Some(t) = &self.title {
            m.push(("title".into(), Node::string(t.clone())));
        }
        m.push(("pool".into(), Node::string(self.pool.clone())));
        m.push(("user_transaction_id".into(), Node::string("0-0-0-0")));
        m.push(("input_table_paths".into(), empty_paths()));
        m.push(("output_table_paths".into(), empty_paths()));
        if let Some(alias) = self.spec.get("alias") {
            m.push(("alias".into(), alias.clone()));
        }
        Node::map(m)
    }

    /// The effective ACL: the spec's entries plus the authenticated user's own.
    fn effective_acl(&self) -> Node {
        let mut entries: Vec<Node> = self.acl.as_list().map(<[Node]>::to_vec).unwrap_or_default();
        entries.push(
            yson::parse(
                format!(
                    "{{action=allow;subjects=[{}];permissions=[read;manage];inheritance_mode=object_and_descendants}}",
                    yson::to_text(&Node::string(self.user.clone()))
                )
                .as_bytes(),
            )
            .unwrap_or_else(|_| Node::entity()),
        );
        Node::list(entries)
    }

    fn runtime_parameters(&self) -> Node {
        let mut m: Map = vec![
            (
                "owners".into(),
                Node::list(
                    self.owners
                        .iter()
                        .map(|o| Node::string(o.clone()))
                        .collect(),
                ),
            ),
            ("acl".into(), self.effective_acl()),
        ];
        if let Some(a) = &self.annotations {
            m.push(("annotations".into(), a.clone()));
        }
        m.push((
            "scheduling_options_per_pool_tree".into(),
            Node::map(vec![(
                "default".into(),
                Node::map(vec![
                    ("pool".into(), Node::string(self.pool.clone())),
                    ("weight".into(), Value::Double(1.0).into()),
                ]),
            )]),
        ));
        Node::map(m)
    }

    /// One attribute by name, as `get_operation`/`list_operations` show it.
    pub fn attribute(&self, name: &str) -> Option<Node> {
        Some(match name {
            "id" => Node::string(self.id.clone()),
            "state" => Node::string(self.state.as_str()),
            "type" | "operation_type" => Node::string(self.op_type.clone()),
            "authenticated_user" => Node::string(self.user.clone()),
            "start_time" => Node::string(ids::format_time(self.start_us)),
            "finish_time" => Node::string(ids::format_time(self.finish_us?)),
            "brief_spec" => self.brief_spec(),
            "spec" | "full_spec" | "provided_spec" => self.spec.clone(),
            "runtime_parameters" => self.runtime_parameters(),
            "suspended" => Value::Boolean(false).into(),
            "pool" => Node::string(self.pool.clone()),
            "title" => Node::string(self.title.clone()?),
            "experiment_assignment_names" => Node::list(Vec::new()),
            "progress" | "brief_progress" => {
                let mut m: Map = vec![
                    ("jobs".into(), self.jobs_progress()),
                    (
                        "build_time".into(),
                        Node::string(ids::format_time(ids::now_micros())),
                    ),
                ];
                if name == "progress" {
                    m.push(("job_statistics".into(), Node::map(Vec::new())));
                }
                m.push(("state".into(), Node::string(self.state.as_str())));
                Node::map(m)
            }
            "result" => {
                let error = match &self.error {
                    Some(e) => e.to_node(),
                    None => Node::map(vec![
                        ("code".into(), Value::Int64(0).into()),
                        ("message".into(), Node::string("")),
                    ]),
                };
                Node::map(vec![("error".into(), error)])
            }
            "events" => Node::list(Vec::new()),
            _ => return None,
        })
    }

    /// The operation as a map of the requested (or default) attributes.
    pub fn to_node(&self, attributes: Option<&[String]>, defaults: &[&str]) -> Node {
        let mut m: Map = Vec::new();
        match attributes {
            Some(names) => {
                for n in names {
                    if let Some(v) = self.attribute(n) {
                        m.push((n.clone(), v));
                    }
                }
            }
            None => {
                for n in defaults {
                    if let Some(v) = self.attribute(n) {
                        m.push((n.to_string(), v));
                    }
                }
            }
        }
        Node::map(m)
    }
}

/// Attributes `get_operation` returns when none are requested.
pub const GET_OPERATION_DEFAULTS: &[&str] = &[
    "id",
    "state",
    "type",
    "operation_type",
    "authenticated_user",
    "start_time",
    "finish_time",
    "brief_spec",
    "spec",
    "runtime_parameters",
    "suspended",
    "progress",
    "brief_progress",
    "result",
];
/// Attributes `list_operations` returns when none are requested.
pub const LIST_OPERATIONS_DEFAULTS: &[&str] = &[
    "id",
    "state",
    "type",
    "operation_type",
    "authenticated_user",
    "start_time",
    "finish_time",
    "brief_spec",
    "experiment_assignment_names",
    "runtime_parameters",
    "suspended",
    "brief_progress",
];

/// Filters and paging of `list_operations`.
#[derive(Debug, Clone, Default)]
pub struct ListOperationsQuery {
    pub state: Option<String>,
    pub user: Option<String>,
    pub op_type: Option<String>,
    pub pool: Option<String>,
    pub filter: Option<String>,
    pub cursor_time: Option<u64>,
    pub from_time: Option<u64>,
    pub to_time: Option<u64>,
    /// `true`: newest first from the cursor (`past`); `false`: oldest first (`future`).
    pub past: bool,
    pub limit: usize,
    pub attributes: Option<Vec<String>>,
}

/// Maximum `limit` of `list_operations`.
pub const MAX_LIST_LIMIT: usize = 1000;

#[derive(Debug, Default, Clone)]
struct Counts {
    state: BTreeMap<String, i64>,
    op_type: BTreeMap<String, i64>,
    user: BTreeMap<String, i64>,
    pool: BTreeMap<String, i64>,
}

impl Counts {
    fn add(&mut self, op: &Operation, delta: i64) {
        for (map, key) in [
            (&mut self.state, op.state.as_str()),
            (&mut self.op_type, op.op_type.as_str()),
            (&mut self.user, op.user.as_str()),
            (&mut self.pool, op.pool.as_str()),
        ] {
            let slot = map.entry(key.to_string()).or_insert(0);
            *slot += delta;
            if *slot == 0 {
                map.remove(key);
            }
        }
    }

    fn to_nodes(&self) -> Vec<(String, Node)> {
        let conv = |m: &BTreeMap<String, i64>| {
            Node::map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::Int64(*v).into()))
                    .collect(),
            )
        };
        vec![
            ("state_counts".into(), conv(&self.state)),
            ("type_counts".into(), conv(&self.op_type)),
            ("user_counts".into(), conv(&self.user)),
            ("pool_counts".into(), conv(&self.pool)),
            (
                "pool_tree_counts".into(),
                Node::map(vec![(
                    "default".into(),
                    Value::Int64(self.state.values().sum()).into(),
                )]),
            ),
        ]
    }
}

/// The store of all operations.
#[derive(Debug)]
pub struct OpsStore {
    ops: HashMap<String, Operation>,
    by_time: BTreeMap<u64, String>,
    /// The same per state, so a `state=running` page never walks finished operations.
    by_state_time: HashMap<&'static str, BTreeMap<u64, String>>,
    job_index: HashMap<String, String>,
    counts: Counts,
    node_count: usize,
    next_node: usize,
}

impl OpsStore {
    pub fn new(node_count: usize) -> Self {
        OpsStore {
            ops: HashMap::new(),
            by_time: BTreeMap::new(),
            by_state_time: HashMap::new(),
            job_index: HashMap::new(),
            counts: Counts::default(),
            node_count: node_count.max(1),
            next_node: 0,
        }
    }

    pub fn node_addresses(&self) -> Vec<String> {
        (0..self.node_count).map(node_address).collect()
    }

    /// The next exec node, round robin.
    pub fn next_address(&mut self) -> String {
        let a = node_address(self.next_node % self.node_count);
        self.next_node = (self.next_node + 1) % self.node_count;
        a
    }

    pub fn insert(&mut self, op: Operation) {
        self.counts.add(&op, 1);
        self.by_time.insert(op.start_us, op.id.clone());
        self.by_state_time
            .entry(op.state.as_str())
            .or_default()
            .insert(op.start_us, op.id.clone());
        for job in op.running.values() {
            self.job_index.insert(job.id.clone(), op.id.clone());
        }
        self.ops.insert(op.id.clone(), op);
    }

    pub fn get(&self, id: &str) -> Result<&Operation, YtError> {
        self.ops
            .get(id)
            .ok_or_else(|| YtError::no_such_operation(id))
    }

    /// The operation that has not finished and holds `alias` (`*name`), if any.
    pub fn running_with_alias(&self, alias: &str) -> Option<&str> {
        self.ops
            .values()
            .find(|o| {
                !o.state.is_finished() && o.spec.get("alias").and_then(Node::as_str) == Some(alias)
            })
            .map(|o| o.id.as_str())
    }

    /// Finds an operation by id or by `alias` (`*name`).
    pub fn find(&self, id_or_alias: &str) -> Result<&Operation, YtError> {
        if let Some(op) = self.ops.get(id_or_alias) {
            return Ok(op);
        }
        if id_or_alias.starts_with('*') {
            if let Some(op) = self
                .ops
                .values()
                .filter(|o| o.spec.get("alias").and_then(Node::as_str) == Some(id_or_alias))
                .max_by_key(|o| o.start_us)
            {
                return Ok(op);
            }
        }
        Err(YtError::no_such_operation(id_or_alias))
    }

    /// Changes an operation's state, keeping the counts right.
    pub fn set_state(&mut self, id: &str, state: OpState) {
        if let Some(op) = self.ops.get_mut(id) {
            self.counts.add(op, -1);
            if let Some(index) = self.by_state_time.get_mut(op.state.as_str()) {
                index.remove(&op.start_us);
            }
            self.by_state_time
                .entry(state.as_str())
                .or_default()
                .insert(op.start_us, op.id.clone());
            op.state = state;
            if state.is_finished() && op.finish_us.is_none() {
                op.finish_us = Some(ids::now_micros());
            }
            self.counts.add(op, 1);
        }
    }

    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut Operation) -> R) -> Option<R> {
        self.ops.get_mut(id).map(f)
    }

    pub fn register_job(&mut self, job: Job) {
        if let Some(op) = self.ops.get_mut(&job.operation_id) {
            self.job_index.insert(job.id.clone(), op.id.clone());
            op.running.insert(job.id.clone(), job);
        }
    }

    /// Moves a running job to the finished list with the given state.
    pub fn finish_job(
        &mut self,
        op_id: &str,
        job_id: &str,
        state: &'static str,
        error: Option<YtError>,
    ) {
        self.job_index.remove(job_id);
        if let Some(op) = self.ops.get_mut(op_id) {
            if let Some(mut job) = op.running.remove(job_id) {
                job.state = state;
                job.error = error;
                job.finish_us = Some(ids::now_micros());
                match state {
                    "completed" => op.completed_jobs += 1,
                    "failed" => op.failed_jobs += 1,
                    _ => op.aborted_jobs += 1,
                }
                op.finished.push_back(job);
                while op.finished.len() > FINISHED_JOBS_KEPT {
                    op.finished.pop_front();
                }
            }
        }
    }

    /// A running job by id.
    pub fn running_job(&self, job_id: &str) -> Option<&Job> {
        let op = self.ops.get(self.job_index.get(job_id)?)?;
        op.running.get(job_id)
    }

    /// Any known job (running or recently finished) of an operation.
    pub fn job(&self, op_id: &str, job_id: &str) -> Option<&Job> {
        let op = self.ops.get(op_id)?;
        op.running
            .get(job_id)
            .or_else(|| op.finished.iter().find(|j| j.id == job_id))
    }

    /// A job of an operation (by id or alias), or the error `get_job` and its kin answer.
    pub fn find_job(&self, id_or_alias: &str, job_id: &str) -> Result<&Job, YtError> {
        let op = self.find(id_or_alias)?;
        self.job(&op.id, job_id).ok_or_else(|| {
            YtError::new(
                crate::error::codes::NO_SUCH_JOB,
                400,
                format!("No such job {job_id}"),
            )
        })
    }

    /// Running jobs on one exec node.
    pub fn jobs_on_node(&self, address: &str) -> Vec<&Job> {
        self.job_index
            .iter()
            .filter_map(|(job_id, op_id)| self.ops.get(op_id)?.running.get(job_id))
            .filter(|j| j.address == address)
            .collect()
    }

    fn matches(&self, op: &Operation, q: &ListOperationsQuery, with_state: bool) -> bool {
        if with_state && q.state.as_deref().is_some_and(|s| s != op.state.as_str()) {
            return false;
        }
        if q.user.as_deref().is_some_and(|u| u != op.user) {
            return false;
        }
        if q.op_type.as_deref().is_some_and(|t| t != op.op_type) {
            return false;
        }
        if q.pool.as_deref().is_some_and(|p| p != op.pool) {
            return false;
        }
        if let Some(f) = &q.filter {
            let f = f.to_lowercase();
            let hit = op.id.contains(&f)
                || op.user.to_lowercase().contains(&f)
                || op.pool.to_lowercase().contains(&f)
                || op
                    .title
                    .as_deref()
                    .is_some_and(|t| t.to_lowercase().contains(&f))
                || op.state.as_str().contains(&f);
            if !hit {
                return false;
            }
        }
        true
    }

    /// `list_operations`: one page, walking the start-time index from the cursor.
    pub fn list(&self, q: &ListOperationsQuery) -> Node {
        let limit = q.limit.clamp(1, MAX_LIST_LIMIT);
        let lower = q.from_time.unwrap_or(0);
        let upper = q.to_time.unwrap_or(u64::MAX);
        // The cursor is exclusive, as the server's: `past` lists start times before it,
        // `future` after it.
        let (lower, upper, empty_range) = match (q.cursor_time, q.past) {
            (Some(c), true) => (lower, upper.min(c.saturating_sub(1)), c == 0),
            (Some(c), false) => (lower.max(c.saturating_add(1)), upper, c == u64::MAX),
            (None, _) => (lower, upper, false),
        };
        let mut page = Vec::with_capacity(limit);
        let mut incomplete = false;
        if lower <= upper && !empty_range {
            let empty = BTreeMap::new();
            let index = match q.state.as_deref() {
                Some(state) => self
                    .by_state_time
                    .iter()
                    .find(|(k, _)| **k == state)
                    .map(|(_, v)| v)
                    .unwrap_or(&empty),
                None => &self.by_time,
            };
            let range = index.range(lower..=upper);
            let iter: Box<dyn Iterator<Item = (&u64, &String)>> = if q.past {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for (_, id) in iter {
                let Some(op) = self.ops.get(id) else { continue };
                if !self.matches(op, q, true) {
                    continue;
                }
                if page.len() == limit {
                    incomplete = true;
                    break;
                }
                page.push(op.to_node(q.attributes.as_deref(), LIST_OPERATIONS_DEFAULTS));
            }
        }
        let counts =
            if q.user.is_none() && q.op_type.is_none() && q.pool.is_none() && q.filter.is_none() {
                self.counts.clone()
            } else {
                let mut c = Counts::default();
                for op in self.ops.values().filter(|op| self.matches(op, q, false)) {
                    c.add(op, 1);
                }
                c
            };
        let mut m: Map = vec![
            ("operations".into(), Node::list(page)),
            ("incomplete".into(), Value::Boolean(incomplete).into()),
        ];
        m.extend(counts.to_nodes());
        m.push(("failed_jobs_count".into(), Value::Int64(0).into()));
        Node::map(m)
    }
}

/// A bulk of synthetic operations (no processes), for load tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntheticLoad {
    pub operations: usize,
    pub jobs_per_operation: usize,
    /// Annotate with `task_proxy={enabled=%true}`.
    pub task_proxy: bool,
    pub ports_per_job: usize,
    pub user: String,
    pub task_name: String,
    pub title_prefix: String,
    /// `running` (default) or a finished state (`completed`, `failed`, `aborted`: no jobs).
    pub state: String,
}

impl Default for SyntheticLoad {
    fn default() -> Self {
        SyntheticLoad {
            operations: 100,
            jobs_per_operation: 1,
            task_proxy: true,
            ports_per_job: 1,
            user: "alice".into(),
            task_name: "server".into(),
            title_prefix: "synthetic".into(),
            state: "running".into(),
        }
    }
}

/// What a synthetic load created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyntheticSummary {
    pub operations: usize,
    pub jobs: usize,
    pub first_operation_id: Option<String>,
    pub last_operation_id: Option<String>,
}

/// Builds synthetic operations; `start_time` gives each a unique start time.
/// Parses an operation state name.
pub fn parse_state(name: &str) -> Option<OpState> {
    [
        OpState::Running,
        OpState::Aborting,
        OpState::Aborted,
        OpState::Completed,
        OpState::Failed,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

pub fn synthetic_operations(
    store: &mut OpsStore,
    load: &SyntheticLoad,
    mut start_time: impl FnMut() -> u64,
) -> Result<SyntheticSummary, YtError> {
    let state = parse_state(&load.state)
        .filter(|s| *s != OpState::Aborting)
        .ok_or_else(|| {
            YtError::bad_request(format!(
                "Unknown synthetic operation state {:?}: use running, completed, failed or aborted",
                load.state
            ))
        })?;
    let mut summary = SyntheticSummary {
        operations: 0,
        jobs: 0,
        first_operation_id: None,
        last_operation_id: None,
    };
    let annotations = if load.task_proxy {
        "annotations={task_proxy={enabled=%true}};"
    } else {
        ""
    };
    let mut next_port: u32 = 20_000;
    for i in 0..load.operations {
        let id = ids::operation_id();
        let spec_text = format!(
            "{{title={};{annotations}tasks={{{}={{job_count={};command=\"sleep infinity\";port_count={}}}}}}}",
            yson::to_text(&Node::string(format!("{} {i}", load.title_prefix))),
            yson::to_text(&Node::string(load.task_name.clone())),
            load.jobs_per_operation.max(1),
            load.ports_per_job,
        );
        let spec = yson::parse(spec_text.as_bytes()).unwrap_or_else(|_| Node::map(Vec::new()));
        let tasks = TaskSpec::from_spec(&spec).unwrap_or_default();
        let start = start_time();
        let mut op = Operation::new(id.clone(), "vanilla", &load.user, start, spec, tasks);
        op.synthetic = true;
        op.state = state;
        if state.is_finished() {
            op.finish_us = Some(start + 1);
            op.active_slots = 0;
        }
        let job_count = if state == OpState::Running {
            load.jobs_per_operation
        } else {
            0
        };
        for _ in 0..job_count {
            let ports = (0..load.ports_per_job)
                .map(|_| {
                    next_port = if next_port >= 60_000 {
                        20_000
                    } else {
                        next_port + 1
                    };
                    next_port as u16
                })
                .collect();
            let job = Job {
                id: ids::job_id(),
                operation_id: id.clone(),
                task_name: load.task_name.clone(),
                address: store.next_address(),
                start_us: start,
                finish_us: None,
                state: "running",
                ports,
                sandbox: None,
                pid: None,
                error: None,
            };
            op.running.insert(job.id.clone(), job);
            summary.jobs += 1;
        }
        if summary.first_operation_id.is_none() {
            summary.first_operation_id = Some(id.clone());
        }
        summary.last_operation_id = Some(id);
        summary.operations += 1;
        store.insert(op);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Node {
        yson::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn vanilla_tasks_parse() {
        let s = spec(
            r#"{tasks={web={job_count=2;command="python3 -m http.server ${YT_PORT_0}";port_count=1;file_paths=["//home/bin";<file_name=x>"//home/y"]}}}"#,
        );
        let tasks = TaskSpec::from_spec(&s).unwrap();
        assert_eq!(tasks[0].job_count, 2);
        assert_eq!(tasks[0].port_count, 1);
        assert_eq!(
            tasks[0].file_paths,
            vec![
                ("//home/bin".into(), "bin".into()),
                ("//home/y".into(), "x".into())
            ]
        );
        assert!(TaskSpec::from_spec(&spec("{tasks={}}")).is_err());
        assert!(TaskSpec::from_spec(&spec("{tasks={a={job_count=1}}}")).is_err());
        assert!(TaskSpec::from_spec(&spec(r#"{tasks={a={command="x";job_count=-1}}}"#)).is_err());
        assert!(TaskSpec::from_spec(&spec("{}")).is_err());
    }

    #[test]
    fn annotations_land_in_runtime_parameters() {
        let s = spec(
            r#"{title="hello";annotations={task_proxy={enabled=%true}};tasks={a={command="true"}}}"#,
        );
        let tasks = TaskSpec::from_spec(&s).unwrap();
        let op = Operation::new("1-2-3-4".into(), "vanilla", "alice", 5, s, tasks);
        let rp = op.attribute("runtime_parameters").unwrap();
        assert_eq!(
            rp.pointer("annotations/task_proxy/enabled")
                .and_then(Node::as_bool),
            Some(true)
        );
        assert_eq!(
            op.attribute("brief_spec")
                .unwrap()
                .get("title")
                .and_then(Node::as_str),
            Some("hello")
        );
    }

    #[test]
    fn paging_walks_start_times() {
        let mut store = OpsStore::new(3);
        let mut t = 1_000_000u64;
        let load = SyntheticLoad {
            operations: 250,
            jobs_per_operation: 2,
            ..Default::default()
        };
        let summary = synthetic_operations(&mut store, &load, || {
            t += 10;
            t
        })
        .unwrap();
        assert_eq!(summary.jobs, 500);
        let mut q = ListOperationsQuery {
            past: true,
            limit: 100,
            state: Some("running".into()),
            ..Default::default()
        };
        let mut seen = 0;
        loop {
            let page = store.list(&q);
            let ops = page
                .get("operations")
                .and_then(Node::as_list)
                .unwrap()
                .to_vec();
            seen += ops.len();
            let incomplete = page.get("incomplete").and_then(Node::as_bool).unwrap();
            if !incomplete {
                break;
            }
            let last = ops
                .last()
                .unwrap()
                .get("start_time")
                .and_then(Node::as_str)
                .unwrap();
            q.cursor_time = Some(ids::parse_time(last).unwrap() - 1);
        }
        assert_eq!(seen, 250);
        let finished = SyntheticLoad {
            operations: 30,
            state: "completed".into(),
            ..Default::default()
        };
        let summary = synthetic_operations(&mut store, &finished, || {
            t += 10;
            t
        })
        .unwrap();
        assert_eq!(summary.jobs, 0);
        let q = ListOperationsQuery {
            past: true,
            limit: 1000,
            state: Some("running".into()),
            ..Default::default()
        };
        let page = store.list(&q);
        assert_eq!(
            page.get("operations")
                .and_then(Node::as_list)
                .map(<[Node]>::len),
            Some(250)
        );
        assert_eq!(
            page.pointer("state_counts/completed")
                .and_then(Node::as_i64),
            Some(30)
        );
        let first = store.list(&ListOperationsQuery {
            past: true,
            limit: 1,
            ..Default::default()
        });
        let id = first
            .pointer("operations/0/id")
            .and_then(Node::as_str)
            .unwrap()
            .to_string();
        assert_eq!(
            first.pointer("operations/0/state").and_then(Node::as_str),
            Some("completed")
        );
        store.set_state(&id, OpState::Running);
        let page = store.list(&q);
        assert_eq!(
            page.get("operations")
                .and_then(Node::as_list)
                .map(<[Node]>::len),
            Some(251)
        );
        assert!(synthetic_operations(
            &mut store,
            &SyntheticLoad {
                state: "weird".into(),
                ..Default::default()
            },
            || 1
        )
        .is_err());
        let page = store.list(&ListOperationsQuery {
            limit: 5,
            past: true,
            ..Default::default()
        });
        assert_eq!(
            page.pointer("state_counts/running").and_then(Node::as_i64),
            Some(251)
        );
        let addresses: std::collections::HashSet<_> = store
            .ops
            .values()
            .flat_map(|o| o.running.values().map(|j| j.address.clone()))
            .collect();
        assert_eq!(addresses.len(), 3);
    }
}
