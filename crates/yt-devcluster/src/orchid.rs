//! The virtual `//sys/exec_nodes` subtree: the simulated exec nodes and their orchid
//! (`.../orchid/exec_node/job_controller/active_jobs/<job_id>/job_ports`), read from the
//! operations store.

use crate::cluster::Shared;
use crate::cypress::YPath;
use crate::error::YtError;
use std::sync::Arc;
use yson::{Node, Value};

fn is_exec_nodes(path: &YPath) -> bool {
    path.nodes.len() >= 2 && path.nodes[0] == "sys" && path.nodes[1] == "exec_nodes"
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Refuses writes into the virtual subtree.
pub fn refuse_write(path: &YPath) -> Result<(), YtError> {
    if is_exec_nodes(path) {
        return Err(YtError::bad_request(
            "//sys/exec_nodes is virtual in the development cluster and cannot be changed",
        ));
    }
    Ok(())
}

fn node_attributes(address: &str, names: Option<&[String]>) -> yson::Map {
    let Some(names) = names else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| {
            let v = match n.as_str() {
                "state" => Node::string("online"),
                "type" => Node::string("cluster_node"),
                "address" | "host" => Node::string(address),
                "tags" => Node::list(vec![Node::string("dev")]),
                "flavors" => Node::list(vec![Node::string("exec")]),
                _ => return None,
            };
            Some((n.clone(), v))
        })
        .collect()
}

fn resolve(path: &YPath) -> YtError {
    let text = format!("//{}", path.nodes.join("/"));
    YtError::resolve(format!(
        "Error resolving path {text}: no such node in the exec nodes' orchid"
    ))
    .with_attribute("path", Node::string(text))
}

/// The orchid of one node as a tree (only built when a whole subtree is asked for).
fn orchid_tree(shared: &Arc<Shared>, address: &str) -> Node {
    let store = lock(&shared.store);
    let jobs = store.jobs_on_node(address);
    let active = Node::map(
        jobs.iter()
            .map(|j| (j.id.clone(), j.orchid_node()))
            .collect(),
    );
    Node::map(vec![(
        "exec_node".into(),
        Node::map(vec![(
            "job_controller".into(),
            Node::map(vec![("active_jobs".into(), active)]),
        )]),
    )])
}

/// `get` in the virtual subtree; `Ok(None)` when `path` is not inside it.
pub fn get(
    shared: &Arc<Shared>,
    path: &YPath,
    attributes: Option<&[String]>,
) -> Result<Option<Node>, YtError> {
    if !is_exec_nodes(path) {
        return Ok(None);
    }
    let addresses = lock(&shared.store).node_addresses();
    let rest = &path.nodes[2..];
    if let Some(attr) = &path.attribute {
        if !rest.is_empty() && !addresses.contains(&rest[0]) {
            return Err(resolve(path));
        }
        let all: yson::Map = if rest.is_empty() {
            vec![
                ("type".into(), Node::string("map_node")),
                ("count".into(), Value::Int64(addresses.len() as i64).into()),
            ]
        } else {
            let names: Vec<String> = ["state", "type", "address"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            node_attributes(&rest[0], Some(&names))
        };
        return match attr.first() {
            None => Ok(Some(Node::map(all))),
            Some(name) => all
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Some(v))
                .ok_or_else(|| resolve(path)),
        };
    }
    let Some(address) = rest.first() else {
        return Ok(Some(Node::map(
            addresses
                .iter()
                .map(|a| {
                    let mut n = Node::entity();
                    n.attributes = node_attributes(a, attributes);
                    (a.clone(), n)
                })
                .collect(),
        )));
    };
    if !addresses.contains(address) {
        return Err(resolve(path));
    }
    let rest = &rest[1..];
    if rest.is_empty() {
        let mut n = Node::map(vec![("orchid".into(), Node::entity())]);
        n.attributes = node_attributes(address, attributes);
        return Ok(Some(n));
    }
    if rest[0] != "orchid" {
        return Err(resolve(path));
    }
    // Fast path: one job, without building the whole orchid.
    const PREFIX: [&str; 4] = ["orchid", "exec_node", "job_controller", "active_jobs"];
    if rest.len() >= 5 && rest.iter().zip(PREFIX).all(|(a, b)| a == b) {
        let store = lock(&shared.store);
        let job = store
            .running_job(&rest[4])
            .filter(|j| &j.address == address)
            .ok_or_else(|| resolve(path))?;
        let node = job.orchid_node();
        return node
            .pointer(&rest[5..].join("/"))
            .cloned()
            .map(Some)
            .ok_or_else(|| resolve(path));
    }
    let tree = orchid_tree(shared, address);
    tree.pointer(&rest[1..].join("/"))
        .cloned()
        .map(Some)
        .ok_or_else(|| resolve(path))
}

/// `list` in the virtual subtree; `Ok(None)` when `path` is not inside it.
pub fn list(shared: &Arc<Shared>, path: &YPath) -> Result<Option<Vec<Node>>, YtError> {
    if !is_exec_nodes(path) {
        return Ok(None);
    }
    let node = get(shared, path, None)?.unwrap_or_else(Node::entity);
    match node.as_map() {
        Some(m) => Ok(Some(
            m.iter().map(|(k, _)| Node::string(k.clone())).collect(),
        )),
        None => Err(YtError::bad_request(format!(
            "Cannot list //{}: it is not a map",
            path.nodes.join("/")
        ))),
    }
}
