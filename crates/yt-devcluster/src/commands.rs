//! The v4 commands: their descriptors (`GET /api/v4`) and their implementations over the
//! Cypress tree, the operations store and the job runner.

use crate::cluster::Shared;
use crate::cypress::{CreateOptions, YPath};
use crate::error::YtError;
use crate::ids;
use crate::operations::{
    FileArtifact, ListOperationsQuery, OpState, Operation, TaskSpec, GET_OPERATION_DEFAULTS,
    MAX_LIST_LIMIT,
};
use crate::params::{Encoding, Params};
use crate::transactions;
use std::sync::Arc;
use yson::{Map, Node, Value};

/// One command descriptor: name, input type, output type, volatile, heavy.
pub struct Descriptor {
    pub name: &'static str,
    pub input_type: &'static str,
    pub output_type: &'static str,
    pub is_volatile: bool,
    pub is_heavy: bool,
}

const fn d(
    name: &'static str,
    input_type: &'static str,
    output_type: &'static str,
    is_volatile: bool,
    is_heavy: bool,
) -> Descriptor {
    Descriptor {
        name,
        input_type,
        output_type,
        is_volatile,
        is_heavy,
    }
}

/// Every command the development cluster implements.
pub const COMMANDS: &[Descriptor] = &[
    d("get", "null", "structured", false, false),
    d("list", "null", "structured", false, false),
    d("exists", "null", "structured", false, false),
    d("set", "structured", "null", true, false),
    d("create", "null", "structured", true, false),
    d("remove", "null", "null", true, false),
    d("lock", "null", "structured", true, false),
    d("start_transaction", "null", "structured", true, false),
    d("ping_transaction", "null", "null", true, false),
    d("commit_transaction", "null", "null", true, false),
    d("abort_transaction", "null", "null", true, false),
    d("write_file", "binary", "null", true, true),
    d("read_file", "null", "binary", false, true),
    d("write_table", "tabular", "null", true, true),
    d("read_table", "null", "tabular", false, true),
    d("start_operation", "null", "structured", true, false),
    d("abort_operation", "null", "null", true, false),
    d("complete_operation", "null", "null", true, false),
    d("update_operation_parameters", "null", "null", true, false),
    d("get_operation", "null", "structured", false, false),
    d("list_operations", "null", "structured", false, false),
    d("list_jobs", "null", "structured", false, false),
    d("get_job", "null", "structured", false, false),
    d("get_job_stderr", "null", "binary", false, true),
    d("check_permission", "null", "structured", false, false),
    d(
        "check_operation_permission",
        "null",
        "structured",
        false,
        false,
    ),
    d("get_current_user", "null", "structured", false, false),
    d("execute_batch", "null", "structured", true, false),
    d("discover_proxies", "null", "structured", false, false),
];

pub fn descriptor(name: &str) -> Option<&'static Descriptor> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `GET /api/v4`: the descriptors with exactly the five keys the Python client accepts.
pub fn descriptors_json() -> serde_json::Value {
    serde_json::Value::Array(
        COMMANDS
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "input_type": c.input_type,
                    "output_type": c.output_type,
                    "is_volatile": c.is_volatile,
                    "is_heavy": c.is_heavy,
                })
            })
            .collect(),
    )
}

/// A command's result.
#[derive(Debug)]
pub enum Output {
    Structured(Node),
    /// Table rows and the index of the first one (`X-YT-Response-Parameters`).
    Rows {
        rows: Vec<Node>,
        start_row_index: u64,
    },
    Binary(Vec<u8>),
    Null,
}

/// One command invocation.
pub struct Call<'a> {
    pub user: &'a str,
    pub params: Params,
    /// The decoded request body (inputs of `set`, `write_file`, `write_table`).
    pub body: &'a [u8],
    /// The encoding of a structured or tabular body.
    pub input: Encoding,
}

fn path_param_in(shared: &Shared, params: &Params) -> Result<(YPath, Node), YtError> {
    let (path, node) = path_param(params)?;
    Ok((path, node)).and_then(|(path, node)| match &path.object_id {
        None => Ok((path, node)),
        Some(_) => Ok((lock(&shared.cypress).resolve_object_id(&path)?, node)),
    })
}

fn path_param(params: &Params) -> Result<(YPath, Node), YtError> {
    let node = params
        .node("path")?
        .ok_or_else(|| YtError::bad_request("Missing required parameter \"path\""))?;
    let text = node
        .as_str()
        .ok_or_else(|| YtError::bad_request("Parameter \"path\" must be a string"))?;
    // Strip a trailing range/column selector such as `//t[#0:#10]` or `//t{a,b}`.
    let text = text.trim();
    let text = match text.find(['[', '{']) {
        Some(i) if text.ends_with(']') || text.ends_with('}') => &text[..i],
        _ => text,
    };
    Ok((YPath::parse(text)?, node))
}

/// The row range of a rich path (`<ranges=[{lower_limit={row_index=N}; upper_limit=...}]>`),
/// clamped to the table.
fn row_range(path: &Node, len: usize) -> (usize, usize) {
    let range = path
        .attribute("ranges")
        .and_then(|r| r.as_list())
        .and_then(|r| r.first());
    let limit = |key: &str| {
        range
            .and_then(|r| r.get(key))
            .and_then(|l| l.get("row_index"))
            .and_then(Node::as_u64)
            .map(|v| (v as usize).min(len))
    };
    let exact = range
        .and_then(|r| r.get("exact"))
        .and_then(|l| l.get("row_index"))
        .and_then(Node::as_u64);
    if let Some(e) = exact {
        let e = (e as usize).min(len);
        return (e, (e + 1).min(len));
    }
    let lower = limit("lower_limit").unwrap_or(0);
    let upper = limit("upper_limit").unwrap_or(len);
    (lower, upper.max(lower))
}

fn int(v: i64) -> Node {
    Value::Int64(v).into()
}

fn bool_node(v: bool) -> Node {
    Value::Boolean(v).into()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a command that needs awaiting (operation control) or any other.
pub async fn execute(shared: &Arc<Shared>, name: &str, call: Call<'_>) -> Result<Output, YtError> {
    match name {
        "abort_operation" | "abort_op" => abort_operation(shared, &call, OpState::Aborted).await,
        "complete_operation" | "complete_op" => {
            abort_operation(shared, &call, OpState::Completed).await
        }
        "execute_batch" => execute_batch(shared, &call),
        _ => execute_light(shared, name, &call),
    }
}

/// Runs a command that completes without waiting (everything allowed inside `execute_batch`).
pub fn execute_light(shared: &Arc<Shared>, name: &str, call: &Call<'_>) -> Result<Output, YtError> {
    let p = &call.params;
    lock(&shared.transactions).expire();
    if let Some(prerequisites) = p.string_list("prerequisite_transaction_ids")? {
        lock(&shared.transactions).check_prerequisites(&prerequisites)?;
    }
    if WRITES.contains(&name) {
        check_write(shared, p)?;
    }
    match name {
        "get" => {
            if let Some(value) = transaction_object_get(shared, p)? {
                return Ok(Output::Structured(value_answer(p, value)?));
            }
            let (path, _) = path_param_in(shared, p)?;
            if path.attribute.as_deref() == Some(&["locks".to_string()][..]) {
                let node_id = lock(&shared.cypress).node(&path)?.id.clone();
                let locks = lock(&shared.transactions).node_locks(&node_id);
                return Ok(Output::Structured(value_answer(p, locks)?));
            }
            let attrs = p.string_list("attributes")?;
            let value = match crate::orchid::get(shared, &path, attrs.as_deref())? {
                Some(v) => v,
                None => lock(&shared.cypress).get(&path, attrs.as_deref())?,
            };
            Ok(Output::Structured(value_answer(p, value)?))
        }
        "list" => {
            let (path, _) = path_param_in(shared, p)?;
            let attrs = p.string_list("attributes")?;
            let items = match crate::orchid::list(shared, &path)? {
                Some(v) => v,
                None => lock(&shared.cypress).list(&path, attrs.as_deref())?,
            };
            Ok(Output::Structured(value_answer(p, Node::list(items))?))
        }
        "exists" => {
            let (path, _) = path_param_in(shared, p)?;
            let exists = match crate::orchid::get(shared, &path, None) {
                Ok(Some(_)) => true,
                Ok(None) => lock(&shared.cypress).exists(&path),
                Err(_) => false,
            };
            Ok(Output::Structured(Node::map(vec![(
                "value".into(),
                bool_node(exists),
            )])))
        }
        "set" => {
            let (path, _) = path_param_in(shared, p)?;
            crate::orchid::refuse_write(&path)?;
            let value = match p.node("value")? {
                Some(v) if call.body.is_empty() => v,
                _ => call.input.parse_document("the value", call.body)?,
            };
            lock(&shared.cypress).set(
                &path,
                value,
                p.bool("recursive", false)?,
                p.bool("force", false)?,
            )?;
            Ok(Output::Null)
        }
        "create" => {
            let type_name = p.str("type")?.to_string();
            let (path, _) = path_param_in(shared, p)?;
            crate::orchid::refuse_write(&path)?;
            let attributes = match p.node("attributes")? {
                None => Map::new(),
                Some(n) => match n.value {
                    Value::Map(m) => m,
                    Value::Entity => Map::new(),
                    _ => {
                        return Err(YtError::bad_request(
                            "Parameter \"attributes\" must be a map",
                        ))
                    }
                },
            };
            let options = CreateOptions {
                recursive: p.bool("recursive", false)?,
                ignore_existing: p.bool("ignore_existing", false)?,
                force: p.bool("force", false)?,
                attributes,
            };
            let id = lock(&shared.cypress).create(&type_name, &path, options)?;
            Ok(Output::Structured(Node::map(vec![(
                "node_id".into(),
                Node::string(id),
            )])))
        }
        "remove" => {
            let (path, _) = path_param_in(shared, p)?;
            crate::orchid::refuse_write(&path)?;
            lock(&shared.cypress).remove(
                &path,
                p.bool("recursive", false)?,
                p.bool("force", false)?,
            )?;
            Ok(Output::Null)
        }
        "lock" => {
            let (path, _) = path_param_in(shared, p)?;
            let transaction_id = transaction_param(p)?.ok_or_else(|| {
                YtError::bad_request("Operation cannot be performed outside of a transaction")
            })?;
            let mode = transactions::LockMode::parse(p.opt_str("mode")?.unwrap_or("exclusive"))?;
            let (node_id, revision) = {
                let cypress = lock(&shared.cypress);
                let node = cypress.node(&path)?;
                (node.id.clone(), node.revision)
            };
            let display = path.display_nodes(path.nodes.len());
            let result = lock(&shared.transactions).lock(
                &node_id,
                &display,
                transaction_id,
                mode,
                p.bool("waitable", false)?,
            )?;
            Ok(Output::Structured(Node::map(vec![
                ("lock_id".into(), Node::string(result.lock_id)),
                ("node_id".into(), Node::string(node_id)),
                ("revision".into(), Value::Uint64(revision).into()),
            ])))
        }
        "start_transaction" => {
            let timeout = match p.i64("timeout")? {
                None => None,
                Some(ms) if ms <= 0 => {
                    return Err(YtError::bad_request(
                        "Parameter \"timeout\" must be a positive number of milliseconds",
                    ))
                }
                Some(ms) => Some(std::time::Duration::from_millis(ms as u64)),
            };
            let attributes = match p.node("attributes")?.map(|n| n.value) {
                None | Some(Value::Entity) => Map::new(),
                Some(Value::Map(m)) => m,
                Some(_) => {
                    return Err(YtError::bad_request(
                        "Parameter \"attributes\" must be a map",
                    ))
                }
            };
            let id = lock(&shared.transactions).start_nested(
                transaction_param(p)?,
                timeout,
                attributes,
            )?;
            Ok(Output::Structured(Node::map(vec![(
                "transaction_id".into(),
                Node::string(id),
            )])))
        }
        "ping_transaction" => {
            // The server answers a ping without a transaction with success.
            if let Some(id) = transaction_param(p)? {
                lock(&shared.transactions).ping(id)?;
            }
            Ok(Output::Null)
        }
        "commit_transaction" | "abort_transaction" => {
            lock(&shared.transactions).end(p.str("transaction_id")?)?;
            Ok(Output::Null)
        }
        "write_file" => {
            let (path, node) = path_param_in(shared, p)?;
            let append = node
                .attribute("append")
                .and_then(Node::as_bool)
                .unwrap_or(false);
            let mut cypress = lock(&shared.cypress);
            if cypress.node(&path).is_err() {
                // The client creates the file first; accept a bare write to a new file too.
                cypress.create("file", &path, CreateOptions::default())?;
            }
            cypress.write_file(&path, call.body, append)?;
            Ok(Output::Null)
        }
        "read_file" => {
            let (path, _) = path_param_in(shared, p)?;
            Ok(Output::Binary(
                lock(&shared.cypress).read_file(&path)?.to_vec(),
            ))
        }
        "write_table" => {
            let (path, node) = path_param_in(shared, p)?;
            let append = node
                .attribute("append")
                .and_then(Node::as_bool)
                .unwrap_or(false);
            let encoding = match p.node("input_format")? {
                Some(f) => Encoding::from_format_node(&f)?,
                None => call.input,
            };
            let rows = encoding.parse_rows(call.body)?;
            let mut cypress = lock(&shared.cypress);
            if cypress.node(&path).is_err() {
                cypress.create("table", &path, CreateOptions::default())?;
            }
            cypress.write_table(&path, rows, append)?;
            Ok(Output::Null)
        }
        "read_table" => {
            let (path, node) = path_param_in(shared, p)?;
            let cypress = lock(&shared.cypress);
            let rows = cypress.read_table(&path)?;
            let (lower, upper) = row_range(&node, rows.len());
            Ok(Output::Rows {
                rows: rows[lower..upper].to_vec(),
                start_row_index: lower as u64,
            })
        }
        "start_operation" => start_operation(shared, call),
        "get_operation" => {
            let id = operation_id_param(p)?;
            let attrs = p.string_list("attributes")?;
            let store = lock(&shared.store);
            let op = store.find(&id)?;
            Ok(Output::Structured(
                op.to_node(attrs.as_deref(), GET_OPERATION_DEFAULTS),
            ))
        }
        "list_operations" => list_operations(shared, p),
        "list_jobs" => list_jobs(shared, p),
        "get_job" => {
            let op_id = operation_id_param(p)?;
            let job_id = p.str("job_id")?;
            let store = lock(&shared.store);
            let job = store.find_job(&op_id, job_id)?;
            Ok(Output::Structured(job.to_node()))
        }
        "get_job_stderr" => {
            let op_id = operation_id_param(p)?;
            let job_id = p.str("job_id")?;
            let store = lock(&shared.store);
            let job = store.find_job(&op_id, job_id)?;
            let stderr = job
                .sandbox
                .as_ref()
                .and_then(|s| std::fs::read(s.join("stderr")).ok())
                .unwrap_or_default();
            Ok(Output::Binary(stderr))
        }
        "check_operation_permission" => {
            let id = operation_id_param(p)?;
            let user = p.str("user")?;
            let permission = p.str("permission")?;
            let store = lock(&shared.store);
            let op = store.find(&id)?;
            let allowed = shared
                .users
                .operation_permission(user, permission, &op.access());
            Ok(Output::Structured(permission_answer(
                allowed, user, permission,
            )))
        }
        "check_permission" => {
            let user = p.str("user")?;
            let permission = p.str("permission")?;
            let (path, _) = path_param_in(shared, p)?;
            if path.nodes.first().map(String::as_str) == Some("sys")
                && path.nodes.get(1).map(String::as_str) == Some("operations")
            {
                if let Some(id) = path.nodes.get(2) {
                    let store = lock(&shared.store);
                    let op = store.find(id)?;
                    let allowed = shared
                        .users
                        .operation_permission(user, permission, &op.access());
                    return Ok(Output::Structured(permission_answer(
                        allowed, user, permission,
                    )));
                }
            }
            // Cypress has no ACLs in the development cluster: known users may do anything.
            let allowed = shared.users.get(user).is_some();
            Ok(Output::Structured(permission_answer(
                allowed, user, permission,
            )))
        }
        "get_current_user" => Ok(Output::Structured(Node::map(vec![(
            "user".into(),
            Node::string(call.user),
        )]))),
        "discover_proxies" => Ok(Output::Structured(Node::map(vec![(
            "proxies".into(),
            Node::list(vec![Node::string(shared.addr.to_string())]),
        )]))),
        "update_operation_parameters" | "update_op_parameters" => {
            update_operation_parameters(shared, call)
        }
        "abort_operation" | "abort_op" | "complete_operation" | "complete_op" | "execute_batch" => {
            Err(YtError::bad_request(format!(
                "Command {name:?} cannot run inside execute_batch"
            )))
        }
        other => Err(YtError::not_implemented(other)),
    }
}

/// API v4 wraps single values as `{"value": ...}` unless `return_only_value` is set.
/// Commands that write a node (and so take an exclusive lock of their own on the real master).
const WRITES: &[&str] = &["set", "remove", "write_file", "write_table"];

/// The `transaction_id` parameter; the null id `0-0-0-0` (what clients send outside a
/// transaction) is none.
fn transaction_param(p: &Params) -> Result<Option<&str>, YtError> {
    Ok(p.opt_str("transaction_id")?.filter(|id| *id != "0-0-0-0"))
}

/// Refuses a write to a node a concurrent transaction holds a lock on, as the master does, and
/// a write under a transaction that is gone. (A write under a live transaction is applied at
/// once: nodes are not branched here.)
fn check_write(shared: &Arc<Shared>, p: &Params) -> Result<(), YtError> {
    let transaction_id = transaction_param(p)?;
    let (path, _) = path_param_in(shared, p)?;
    let node_id = match lock(&shared.cypress).node(&YPath {
        attribute: None,
        ..path.clone()
    }) {
        Ok(node) => node.id.clone(),
        Err(_) => return Ok(()),
    };
    lock(&shared.transactions).check_write(
        &node_id,
        &path.display_nodes(path.nodes.len()),
        transaction_id,
    )
}

/// `get #<transaction or lock id>[/@attr]`: the object's attributes.
fn transaction_object_get(shared: &Arc<Shared>, p: &Params) -> Result<Option<Node>, YtError> {
    let (path, _) = path_param(p)?;
    let Some(id) = &path.object_id else {
        return Ok(None);
    };
    let Some(attributes) = lock(&shared.transactions).object_attributes(id) else {
        return Ok(None);
    };
    if !path.nodes.is_empty() {
        return Err(YtError::resolve(format!("#{id} has no child nodes")));
    }
    match path.attribute.as_deref() {
        None => Ok(Some(Node {
            attributes: Vec::new(),
            value: Value::Entity,
        })),
        Some([]) => Ok(Some(Node::map(attributes))),
        Some([first, rest @ ..]) => {
            let value = attributes
                .iter()
                .find(|(k, _)| k == first)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    YtError::resolve(format!(
                        "Error resolving path #{id}/@{first}: Attribute {first:?} is not found"
                    ))
                })?;
            if rest.is_empty() {
                Ok(Some(value))
            } else {
                value
                    .pointer(&rest.join("/"))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        YtError::resolve(format!(
                            "Error resolving path #{id}/@{}",
                            path.attribute.as_deref().unwrap_or_default().join("/")
                        ))
                    })
            }
        }
    }
}

fn value_answer(p: &Params, value: Node) -> Result<Node, YtError> {
    if p.bool("return_only_value", false)? {
        Ok(value)
    } else {
        Ok(Node::map(vec![("value".into(), value)]))
    }
}

fn permission_answer(allowed: bool, user: &str, permission: &str) -> Node {
    let mut m: Map = vec![(
        "action".into(),
        Node::string(if allowed { "allow" } else { "deny" }),
    )];
    if allowed {
        m.push(("subject_name".into(), Node::string(user)));
    }
    m.push(("permission".into(), Node::string(permission)));
    Node::map(m)
}

fn operation_id_param(p: &Params) -> Result<String, YtError> {
    match (p.opt_str("operation_id")?, p.opt_str("operation_alias")?) {
        (Some(id), _) => Ok(id.to_string()),
        (None, Some(alias)) => Ok(alias.to_string()),
        (None, None) => Err(YtError::bad_request(
            "Missing required parameter \"operation_id\"",
        )),
    }
}

fn start_operation(shared: &Arc<Shared>, call: &Call<'_>) -> Result<Output, YtError> {
    let p = &call.params;
    let op_type = p
        .opt_str("operation_type")?
        .unwrap_or("vanilla")
        .to_string();
    if op_type != "vanilla" {
        return Err(YtError::bad_request(format!(
            "Operation type {op_type:?} is not supported by the development cluster (only vanilla)"
        )));
    }
    let spec = p
        .node("spec")?
        .ok_or_else(|| YtError::bad_request("Missing required parameter \"spec\""))?;
    if spec.as_map().is_none() {
        return Err(YtError::bad_request(format!(
            "Operation spec must be a map, got a {}",
            spec.type_name()
        )));
    }
    if let Some(acl) = spec.get("acl") {
        validate_acl(acl)?;
    }
    let alias = match spec.get("alias") {
        None => None,
        Some(alias) => {
            let alias = alias
                .as_str()
                .ok_or_else(|| YtError::bad_request("Operation alias must be a string"))?;
            if !alias.starts_with('*') {
                return Err(YtError::bad_request(format!(
                    "Operation alias should start with '*' character, got {alias:?}"
                ))
                .with_attribute("operation_alias", Node::string(alias)));
            }
            Some(alias.to_string())
        }
    };
    let mut tasks = TaskSpec::from_spec(&spec)?;
    {
        let cypress = lock(&shared.cypress);
        for task in &mut tasks {
            for (path, file_name) in &task.file_paths {
                let ypath = YPath::parse(path)?;
                let content = cypress.read_file(&ypath).map_err(|e| {
                    YtError::bad_request(format!("Task {:?}: cannot use file {path}", task.name))
                        .with_inner(e)
                })?;
                let executable = cypress
                    .node(&ypath)
                    .ok()
                    .and_then(|n| n.attributes.get("executable").and_then(Node::as_bool))
                    .unwrap_or(true);
                task.files.push(FileArtifact {
                    file_name: file_name.clone(),
                    content: Arc::new(content.to_vec()),
                    executable,
                });
            }
        }
    }
    let max_failed = spec.get("max_failed_job_count").and_then(Node::as_u64);
    let id = ids::operation_id();
    let op = Operation::new(
        id.clone(),
        &op_type,
        call.user,
        shared.clock.next(),
        spec,
        tasks.clone(),
    );
    {
        // Like the scheduler: an alias names at most one operation that has not finished.
        let mut store = lock(&shared.store);
        if let Some(alias) = &alias {
            if let Some(holder) = store.running_with_alias(alias) {
                return Err(YtError::bad_request(
                    "Operation alias is already used by an operation",
                )
                .with_attribute("operation_alias", Node::string(alias.clone()))
                .with_attribute("operation_id", Node::string(holder.to_string())));
            }
        }
        store.insert(op);
    }
    shared.runner.start(&id, &tasks, max_failed);
    tracing::info!(operation = %id, user = call.user, "operation started");
    Ok(Output::Structured(Node::map(vec![(
        "operation_id".into(),
        Node::string(id),
    )])))
}

fn validate_acl(acl: &Node) -> Result<(), YtError> {
    let entries = acl
        .as_list()
        .ok_or_else(|| YtError::bad_request("\"acl\" must be a list of ACEs"))?;
    for e in entries {
        let ok = e
            .get("action")
            .and_then(Node::as_str)
            .is_some_and(|a| a == "allow" || a == "deny")
            && e.get("subjects").and_then(Node::as_list).is_some()
            && e.get("permissions").and_then(Node::as_list).is_some();
        if !ok {
            return Err(YtError::bad_request(
                "Each ACE needs action (allow|deny), subjects (list) and permissions (list)",
            ));
        }
    }
    Ok(())
}

/// Whether `user` may manage (abort, complete, update) `op`; the master's access error if not.
fn may_manage(shared: &Shared, user: &str, op: &Operation) -> Result<(), YtError> {
    if shared
        .users
        .operation_permission(user, "manage", &op.access())
    {
        return Ok(());
    }
    Err(YtError::access_denied(format!(
        "Access denied for user {user:?}: \"manage\" permission for operation {} is not allowed",
        op.id
    )))
}

async fn abort_operation(
    shared: &Arc<Shared>,
    call: &Call<'_>,
    target: OpState,
) -> Result<Output, YtError> {
    let id = operation_id_param(&call.params)?;
    let id = {
        let mut store = lock(&shared.store);
        let op = store.find(&id)?;
        may_manage(shared, call.user, op).map_err(|denied| {
            denied
                .with_attribute("user", Node::string(call.user))
                .with_attribute("permission", Node::string("manage"))
        })?;
        if op.state.is_finished() {
            return Err(YtError::bad_request(format!(
                "Operation {} is already in state {:?}",
                op.id,
                op.state.as_str()
            )));
        }
        let id = op.id.clone();
        if target == OpState::Aborted {
            store.set_state(&id, OpState::Aborting);
        }
        id
    };
    shared.runner.stop(&id).await;
    let mut store = lock(&shared.store);
    // Synthetic operations have no processes: their jobs just end.
    let synthetic_jobs: Vec<String> = store
        .get(&id)
        .map(|op| op.running.keys().cloned().collect())
        .unwrap_or_default();
    for job in synthetic_jobs {
        store.finish_job(&id, &job, "aborted", None);
    }
    store.set_state(&id, target);
    tracing::info!(operation = %id, state = target.as_str(), "operation stopped");
    Ok(Output::Null)
}

fn update_operation_parameters(shared: &Arc<Shared>, call: &Call<'_>) -> Result<Output, YtError> {
    let p = &call.params;
    let id = operation_id_param(p)?;
    let parameters = p
        .node("parameters")?
        .ok_or_else(|| YtError::bad_request("Missing required parameter \"parameters\""))?;
    let mut store = lock(&shared.store);
    let op = store.find(&id)?;
    may_manage(shared, call.user, op)?;
    let id = op.id.clone();
    let acl = parameters.get("acl").cloned();
    if let Some(acl) = &acl {
        validate_acl(acl)?;
    }
    let owners = match parameters.get("owners") {
        Some(o) => Some(
            o.as_list()
                .ok_or_else(|| YtError::bad_request("\"owners\" must be a list"))?
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| YtError::bad_request("\"owners\" must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let annotations = parameters.get("annotations").cloned();
    store.update(&id, |op| {
        if let Some(acl) = acl {
            op.acl = acl;
        }
        if let Some(owners) = owners {
            op.owners = owners;
        }
        if let Some(a) = annotations {
            op.annotations = Some(a);
        }
    });
    Ok(Output::Null)
}

fn list_operations(shared: &Arc<Shared>, p: &Params) -> Result<Output, YtError> {
    let time = |key: &str| -> Result<Option<u64>, YtError> {
        match p.get(key) {
            None => Ok(None),
            Some(n) if n.is_entity() => Ok(None),
            Some(n) => {
                if let Some(s) = n.as_str() {
                    return ids::parse_time(s).map(Some).ok_or_else(|| {
                        YtError::bad_request(format!(
                            "Parameter {key:?} is not an ISO-8601 time: {s:?}"
                        ))
                    });
                }
                // Integer microseconds are accepted too.
                n.as_u64().map(Some).ok_or_else(|| {
                    YtError::bad_request(format!("Parameter {key:?} must be a time string"))
                })
            }
        }
    };
    let past = match p.opt_str("cursor_direction")? {
        None | Some("past") => true,
        Some("future") => false,
        Some("none") => true,
        Some(other) => {
            return Err(YtError::bad_request(format!(
                "Parameter \"cursor_direction\" must be \"past\" or \"future\", got {other:?}"
            )))
        }
    };
    let limit = match p.i64("limit")? {
        None => 100,
        Some(l) if l <= 0 => {
            return Err(YtError::bad_request("Parameter \"limit\" must be positive"))
        }
        // The server refuses a larger page rather than capping it.
        Some(l) if l as u64 > MAX_LIST_LIMIT as u64 => {
            return Err(YtError::bad_request(format!(
                "Requested result limit ({l}) exceeds maximum allowed limit ({MAX_LIST_LIMIT})"
            )))
        }
        Some(l) => l as usize,
    };
    let q = ListOperationsQuery {
        state: p.opt_str("state")?.map(str::to_string),
        user: p.opt_str("user")?.map(str::to_string),
        op_type: p.opt_str("type")?.map(str::to_string),
        pool: p.opt_str("pool")?.map(str::to_string),
        filter: p.opt_str("filter")?.map(str::to_string),
        cursor_time: time("cursor_time")?,
        from_time: time("from_time")?,
        to_time: time("to_time")?,
        past,
        limit,
        attributes: p.string_list("attributes")?,
    };
    Ok(Output::Structured(lock(&shared.store).list(&q)))
}

fn list_jobs(shared: &Arc<Shared>, p: &Params) -> Result<Output, YtError> {
    let id = operation_id_param(p)?;
    let state = p.opt_str("job_state")?.map(str::to_string);
    let limit = p.i64("limit")?.unwrap_or(1000).clamp(1, 100_000) as usize;
    let offset = p.i64("offset")?.unwrap_or(0).max(0) as usize;
    let store = lock(&shared.store);
    let op = store.find(&id)?;
    let mut jobs: Vec<_> = op.running.values().chain(op.finished.iter()).collect();
    let mut state_counts: std::collections::BTreeMap<&str, i64> = Default::default();
    for j in &jobs {
        *state_counts.entry(j.state).or_default() += 1;
    }
    jobs.retain(|j| match &state {
        Some(s) => s == j.state,
        None => true,
    });
    jobs.sort_by(|a, b| a.start_us.cmp(&b.start_us).then_with(|| a.id.cmp(&b.id)));
    let total = jobs.len();
    let knob = shared.knobs.get("list_jobs").unwrap_or_default();
    let agent_unreachable = knob.controller_agent_unreachable;
    let stale = knob.stale_jobs;
    // Without the controller agent (and with no job archive here) the server has no jobs to
    // list: an empty list, and the failure in `errors`.
    let shown = if agent_unreachable { 0 } else { limit };
    let page: Vec<Node> = jobs
        .iter()
        .skip(offset)
        .take(shown)
        .map(|j| {
            let mut node = j.to_node();
            if stale && j.state == "running" {
                if let Value::Map(map) = &mut node.value {
                    map.push(("is_stale".into(), Node::from(Value::Boolean(true))));
                }
            }
            node
        })
        .collect();
    let errors = if agent_unreachable {
        vec![YtError::new(
            crate::error::codes::TRANSPORT,
            503,
            format!(
                "Cannot get jobs of operation {id} from its controller agent (development cluster knob)"
            ),
        )
        .to_node()]
    } else {
        Vec::new()
    };
    Ok(Output::Structured(Node::map(vec![
        ("jobs".into(), Node::list(page)),
        ("total".into(), int(total as i64)),
        ("cypress_job_count".into(), Node::entity()),
        ("scheduler_job_count".into(), int(op.running.len() as i64)),
        (
            "controller_agent_job_count".into(),
            if agent_unreachable {
                Node::entity()
            } else {
                int(op.running.len() as i64)
            },
        ),
        ("archive_job_count".into(), Node::entity()),
        (
            "type_counts".into(),
            Node::map(vec![("vanilla".into(), int(total as i64))]),
        ),
        (
            "state_counts".into(),
            Node::map(
                state_counts
                    .iter()
                    .map(|(k, v)| (k.to_string(), int(*v)))
                    .collect(),
            ),
        ),
        ("errors".into(), Node::list(errors)),
        ("continuation_token".into(), Node::entity()),
    ])))
}

fn execute_batch(shared: &Arc<Shared>, call: &Call<'_>) -> Result<Output, YtError> {
    let requests = match call.params.node("requests")? {
        Some(r) => r,
        None if !call.body.is_empty() => {
            let body = call.input.parse_document("the batch body", call.body)?;
            body.get("requests")
                .cloned()
                .ok_or_else(|| YtError::bad_request("Missing required parameter \"requests\""))?
        }
        None => {
            return Err(YtError::bad_request(
                "Missing required parameter \"requests\"",
            ))
        }
    };
    let list = requests
        .as_list()
        .ok_or_else(|| YtError::bad_request("Parameter \"requests\" must be a list"))?;
    let mut results = Vec::with_capacity(list.len());
    for (i, request) in list.iter().enumerate() {
        let result = (|| {
            let command = request
                .get("command")
                .and_then(Node::as_str)
                .ok_or_else(|| {
                    YtError::bad_request(format!("Batch request {i} has no \"command\""))
                })?;
            let parameters = match request.get("parameters").map(|n| &n.value) {
                Some(Value::Map(m)) => m.clone(),
                None | Some(Value::Entity) => Map::new(),
                Some(_) => {
                    return Err(YtError::bad_request(format!(
                        "Batch request {i}: \"parameters\" must be a map"
                    )))
                }
            };
            let input = request
                .get("input")
                .map(|n| yson::to_text(n).into_bytes())
                .unwrap_or_default();
            let sub = Call {
                user: call.user,
                params: Params::new(parameters),
                body: &input,
                input: Encoding::Yson,
            };
            *lock(&shared.request_counts)
                .entry(command.to_string())
                .or_insert(0) += 1;
            execute_light(shared, command, &sub)
        })();
        results.push(match result {
            Ok(Output::Structured(n)) => Node::map(vec![("output".into(), n)]),
            Ok(_) => Node::map(Vec::new()),
            Err(e) => Node::map(vec![("error".into(), e.to_node())]),
        });
    }
    // API v4 answers `{"results": [...]}` (what the Python client reads).
    Ok(Output::Structured(Node::map(vec![(
        "results".into(),
        Node::list(results),
    )])))
}
