//! Async client of the YTsaurus HTTP API (v4): the commands the task proxy needs, typed.
//!
//! [`YtClient`] owns one pooled HTTP client (cheap to clone). Every command goes to
//! `<proxy>/api/v4/<command>` with YSON text parameters (`X-YT-Parameters` for GET/PUT, the body
//! for POST), asks for YSON text output and parses it with the `yson` crate, so real answers
//! parse as they are. Errors come from the status, the `X-YT-Error` header or the body; transient
//! ones are retried with exponential back-off and jitter (honouring `Retry-After`). Requests are
//! made with the robot token, except [`YtClient::whoami`], which uses the caller's credentials.
//! Secrets never appear in `Debug` output or logs.

#![forbid(unsafe_code)]

mod config;
mod error;
pub mod time;
mod transactions;
mod transport;
mod types;

pub use config::{ClientConfig, Credentials};
pub use error::{codes, Error, FailureKind, YtError};
pub use transactions::{LockMode, LockResult, WriteOptions};
pub use transport::ClientStats;
pub use types::{
    host_of, BatchRequest, CursorDirection, Job, ListOperationsRequest, OperationsPage,
};

use futures_util::stream::{self, StreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use transport::{Call, Method, Transport};
use yson::{Node, Value};

/// Pages one listing may take before the client gives up (a guard against a server that never
/// says it is done).
const MAX_PAGES: usize = 100_000;

/// The most operations `list_operations` returns in one answer; the server refuses a larger
/// `limit` ("Requested result limit (N) exceeds maximum allowed limit (1000)").
pub const MAX_LIST_OPERATIONS_LIMIT: u32 = 1000;

/// Batch chunks of one `execute_batch` call sent at the same time.
const PARALLEL_BATCH_CHUNKS: usize = 8;

/// A client of one cluster. Clones share the connection pool and the statistics.
#[derive(Clone, Debug)]
pub struct YtClient {
    inner: Arc<Transport>,
}

fn param(key: &str, value: impl Into<Node>) -> (String, Node) {
    (key.to_string(), value.into())
}

fn string(value: &str) -> Node {
    Node::string(value)
}

fn boolean(value: bool) -> Node {
    Value::Boolean(value).into()
}

fn int(value: i64) -> Node {
    Value::Int64(value).into()
}

fn decode(command: &str, body: &[u8]) -> Result<Node, Error> {
    yson::parse(body).map_err(|e| Error::Decode(format!("{command}: {e}")))
}

impl YtClient {
    pub fn new(config: ClientConfig) -> Result<YtClient, Error> {
        Ok(YtClient {
            inner: Arc::new(Transport::new(config)?),
        })
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Requests sent so far (every attempt counts), in total and by command.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    async fn structured(&self, call: Call<'_>) -> Result<Node, Error> {
        let body = self.inner.execute(&call).await?;
        decode(call.command, &body)
    }

    /// One page of `list_operations`.
    pub async fn list_operations(
        &self,
        req: &ListOperationsRequest,
    ) -> Result<OperationsPage, Error> {
        let node = self
            .structured(Call::new("list_operations", Method::Get, req.to_params()))
            .await?;
        OperationsPage::from_node(&node)
    }

    /// Every running operation with `attributes` (`id` and `start_time` are always added: paging
    /// needs them), newest first, each once.
    ///
    /// Pages of [`ClientConfig::page_size`] go to the past from now; each next cursor is the
    /// oldest `start_time` seen plus 1 µs, so operations that share the boundary instant come
    /// again (and are deduplicated by id) instead of being skipped, whether the server's cursor
    /// is inclusive or exclusive. Listing ends when the server says the page is not `incomplete`
    /// (or, if it does not say, at a short page).
    pub async fn list_running_operations(&self, attributes: &[&str]) -> Result<Vec<Node>, Error> {
        self.list_running_operations_paged(attributes, self.inner.config.page_size)
            .await
    }

    /// [`YtClient::list_running_operations`] with pages of `page_size` (the real cluster
    /// accepts up to 1000 and refuses more, so larger sizes are lowered to 1000; a server that
    /// caps lower must say `incomplete`).
    pub async fn list_running_operations_paged(
        &self,
        attributes: &[&str],
        page_size: u32,
    ) -> Result<Vec<Node>, Error> {
        let mut attrs: Vec<String> = attributes.iter().map(|a| a.to_string()).collect();
        for needed in ["id", "start_time"] {
            if !attrs.iter().any(|a| a == needed) {
                attrs.push(needed.to_string());
            }
        }
        // The server refuses pages over 1000 operations (it does not cap them).
        let page_size = page_size.clamp(1, MAX_LIST_OPERATIONS_LIMIT);
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut cursor: Option<time::Instant> = None;
        for _ in 0..MAX_PAGES {
            let req = ListOperationsRequest {
                state: Some("running".into()),
                limit: Some(page_size),
                cursor_time: cursor.map(|c| c.to_string()),
                cursor_direction: Some(CursorDirection::Past),
                attributes: attrs.clone(),
                ..ListOperationsRequest::default()
            };
            let page = self.list_operations(&req).await?;
            let count = page.operations.len();
            let mut fresh = 0usize;
            let mut oldest: Option<time::Instant> = None;
            for op in page.operations {
                let Some(id) = op.get("id").and_then(Node::as_str).map(str::to_string) else {
                    tracing::warn!("list_operations returned an operation without an id; skipped");
                    continue;
                };
                if let Some(start) = op
                    .get("start_time")
                    .and_then(Node::as_str)
                    .and_then(time::Instant::parse)
                {
                    oldest = Some(oldest.map_or(start, |o| o.min(start)));
                }
                if seen.insert(id) {
                    out.push(op);
                    fresh += 1;
                }
            }
            // The server's `incomplete` is authoritative; without it, a full page may have more.
            let more = page.incomplete.unwrap_or(count >= page_size as usize);
            if !more || count == 0 {
                return Ok(out);
            }
            let Some(oldest) = oldest else {
                return Err(Error::Decode(
                    "list_operations: a full page without start times cannot be paged".into(),
                ));
            };
            // Re-include the boundary instant while that brings new operations; when a whole
            // page shares one instant, step strictly past it.
            let mut next = if fresh > 0 {
                oldest.add_micros(1)
            } else {
                oldest
            };
            if let Some(previous) = cursor {
                if next >= previous {
                    next = previous.add_micros(-1);
                    tracing::warn!(
                        cursor = %next,
                        "more than one page of operations share a start time; some may be missed this pass"
                    );
                }
            }
            cursor = Some(next);
        }
        Err(Error::Decode(format!(
            "list_operations: still more operations after {MAX_PAGES} pages"
        )))
    }

    /// `get_operation` with the given attributes (all when empty).
    pub async fn get_operation(
        &self,
        operation_id: &str,
        attributes: &[&str],
    ) -> Result<Node, Error> {
        let request = BatchRequest::get_operation(operation_id, attributes);
        self.structured(Call::new("get_operation", Method::Get, request.parameters))
            .await
    }

    /// Every job of the operation (in `state` when given), paging by offset.
    pub async fn list_jobs(
        &self,
        operation_id: &str,
        state: Option<&str>,
    ) -> Result<Vec<Job>, Error> {
        let page_size = self.inner.config.page_size.max(1);
        let mut jobs = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0u64;
        for _ in 0..MAX_PAGES {
            let request = BatchRequest::list_jobs(operation_id, state, page_size, offset);
            let node = self
                .structured(Call::new("list_jobs", Method::Get, request.parameters))
                .await?;
            let (page, count) = parse_jobs_page(operation_id, &node)?;
            for job in page {
                if seen.insert(job.id.clone()) {
                    jobs.push(job);
                }
            }
            if count < page_size as usize {
                return Ok(jobs);
            }
            offset += count as u64;
        }
        Err(Error::Decode(format!(
            "list_jobs: still more jobs after {MAX_PAGES} pages"
        )))
    }

    /// The node at `path` (a Cypress or orchid path).
    pub async fn get(&self, path: &str) -> Result<Node, Error> {
        let request = BatchRequest::get(path);
        self.structured(Call::new("get", Method::Get, request.parameters))
            .await
    }

    /// The names of the children of the map node at `path`.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let request = BatchRequest::list(path);
        let node = self
            .structured(Call::new("list", Method::Get, request.parameters))
            .await?;
        list_names("list", &node)
    }

    /// Whether a node exists at `path`.
    pub async fn exists(&self, path: &str) -> Result<bool, Error> {
        let node = self
            .structured(Call::new(
                "exists",
                Method::Get,
                vec![param("path", string(path))],
            ))
            .await?;
        parse_exists(&node)
    }

    /// Creates a node of `node_type` at `path`.
    pub async fn create(
        &self,
        node_type: &str,
        path: &str,
        attributes: Option<Node>,
        recursive: bool,
        ignore_existing: bool,
    ) -> Result<(), Error> {
        let mut params = vec![
            param("type", string(node_type)),
            param("path", string(path)),
            param("recursive", boolean(recursive)),
            param("ignore_existing", boolean(ignore_existing)),
        ];
        if let Some(attributes) = attributes {
            if attributes.as_map().is_none() {
                return Err(Error::InvalidArgument(
                    "create: attributes must be a map".into(),
                ));
            }
            params.push(param("attributes", attributes));
        }
        self.inner
            .execute(&Call::new("create", Method::Post, params))
            .await
            .map(drop)
    }

    /// Sets the node at `path` to `value`.
    pub async fn set(&self, path: &str, value: &Node) -> Result<(), Error> {
        let call = Call {
            input: Some(yson::to_text(value).into_bytes()),
            ..Call::new("set", Method::Put, vec![param("path", string(path))])
        };
        self.inner.execute(&call).await.map(drop)
    }

    /// Removes the node at `path`.
    pub async fn remove(&self, path: &str, recursive: bool, force: bool) -> Result<(), Error> {
        let params = vec![
            param("path", string(path)),
            param("recursive", boolean(recursive)),
            param("force", boolean(force)),
        ];
        self.inner
            .execute(&Call::new("remove", Method::Post, params))
            .await
            .map(drop)
    }

    /// Replaces the rows of the table at `path`.
    pub async fn write_table(&self, path: &str, rows: &[Node]) -> Result<(), Error> {
        self.write_table_with(path, rows, &WriteOptions::default())
            .await
    }

    /// [`YtClient::write_table`] with `options` (prerequisite transactions).
    pub async fn write_table_with(
        &self,
        path: &str,
        rows: &[Node],
        options: &WriteOptions,
    ) -> Result<(), Error> {
        if let Some(bad) = rows.iter().find(|r| r.as_map().is_none()) {
            return Err(Error::InvalidArgument(format!(
                "write_table: a row must be a map, not {}",
                bad.type_name()
            )));
        }
        let call = Call {
            input: Some(yson::to_text_list_fragment(rows).into_bytes()),
            ..Call::new(
                "write_table",
                Method::Put,
                transactions::with_prerequisites(vec![param("path", string(path))], options),
            )
        };
        self.inner.execute(&call).await.map(drop)
    }

    /// Every row of the table at `path`.
    pub async fn read_table(&self, path: &str) -> Result<Vec<Node>, Error> {
        let call = Call::new("read_table", Method::Get, vec![param("path", string(path))]);
        let body = self.inner.execute(&call).await?;
        yson::parse_list_fragment(&body).map_err(|e| Error::Decode(format!("read_table: {e}")))
    }

    /// Runs `requests` in `execute_batch` calls of at most [`ClientConfig::batch_chunk_size`]
    /// each (several calls in flight), `concurrency` being the server-side parallelism. Returns
    /// one result per request, in order; the outer error is for a call that failed as a whole.
    pub async fn execute_batch(
        &self,
        requests: &[BatchRequest],
        concurrency: usize,
    ) -> Result<Vec<Result<Node, YtError>>, Error> {
        let chunk_size = self.inner.config.batch_chunk_size.max(1);
        let concurrency = concurrency.max(1);
        // Owned chunks and a cloned client keep the future `Send` for any caller (borrowing
        // closures in stream combinators trip rustc's higher-ranked `Send` inference).
        let chunks: Vec<Vec<BatchRequest>> =
            requests.chunks(chunk_size).map(<[_]>::to_vec).collect();
        let client = self.clone();
        let results: Vec<Result<Vec<Result<Node, YtError>>, Error>> = stream::iter(chunks)
            .map(move |chunk| {
                let client = client.clone();
                async move { client.execute_batch_chunk(&chunk, concurrency).await }
            })
            .buffered(PARALLEL_BATCH_CHUNKS)
            .collect()
            .await;
        let mut out = Vec::with_capacity(requests.len());
        for chunk in results {
            out.extend(chunk?);
        }
        Ok(out)
    }

    async fn execute_batch_chunk(
        &self,
        chunk: &[BatchRequest],
        concurrency: usize,
    ) -> Result<Vec<Result<Node, YtError>>, Error> {
        let params = vec![
            param(
                "requests",
                Node::list(chunk.iter().map(BatchRequest::to_node).collect()),
            ),
            param(
                "concurrency",
                int(i64::try_from(concurrency).unwrap_or(i64::MAX)),
            ),
        ];
        let node = self
            .structured(Call::new("execute_batch", Method::Post, params))
            .await?;
        parse_batch_results(&node, chunk.len())
    }

    /// Whether `user` has `permission` on the operation (asked with the robot token).
    pub async fn check_operation_permission(
        &self,
        operation_id: &str,
        user: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        let params = vec![
            param("operation_id", string(operation_id)),
            param("user", string(user)),
            param("permission", string(permission)),
        ];
        let node = self
            .structured(Call::new("check_operation_permission", Method::Get, params))
            .await?;
        match node.get("action").and_then(Node::as_str) {
            Some("allow") => Ok(true),
            Some(_) => Ok(false),
            None => Err(Error::Decode(
                "check_operation_permission: no \"action\" in the answer".into(),
            )),
        }
    }

    /// Whether the proxy has `command`: `GET /api/v4/` lists the commands the server registered
    /// (an older server lacks newer ones and answers them 404 "is not registered").
    pub async fn has_command(&self, command: &str) -> Result<bool, Error> {
        let body = self.inner.get_raw("/api/v4/").await?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Decode(format!("the command list: {e}")))?;
        let list = json
            .as_array()
            .ok_or_else(|| Error::Decode("the command list is not a list".into()))?;
        Ok(list.iter().any(|d| {
            d.get("name").and_then(serde_json::Value::as_str) == Some(command)
                || d.as_str() == Some(command)
        }))
    }

    /// The login of whoever holds `credentials` (`POST /auth/whoami` with them, not with the
    /// robot token). Credentials the cluster does not accept give [`Error::Unauthenticated`].
    pub async fn whoami(&self, credentials: &Credentials) -> Result<String, Error> {
        let body = self.inner.execute_raw("/auth/whoami", credentials).await?;
        parse_whoami(&body)
    }
}

fn parse_whoami(body: &[u8]) -> Result<String, Error> {
    let node = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => Node::from_json(&json).map_err(|e| Error::Decode(format!("whoami: {e}")))?,
        Err(_) => decode("whoami", body)?,
    };
    node.get("login")
        .and_then(Node::as_str)
        .filter(|login| !login.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::Decode("whoami: no \"login\" in the answer".into()))
}

/// The names in a `list` answer: a list, or (API v4 without `return_only_value`) a map
/// `{"value": [...]}`.
pub fn list_names(command: &str, node: &Node) -> Result<Vec<String>, Error> {
    let node = match node.get("value") {
        Some(value) if node.as_map().is_some_and(|m| m.len() == 1) => value,
        _ => node,
    };
    let items = node.as_list().ok_or_else(|| {
        Error::Decode(format!(
            "{command}: expected a list, got {}",
            node.type_name()
        ))
    })?;
    items
        .iter()
        .map(|item| {
            item.as_str().map(str::to_string).ok_or_else(|| {
                Error::Decode(format!("{command}: a name is a {}", item.type_name()))
            })
        })
        .collect()
}

fn parse_exists(node: &Node) -> Result<bool, Error> {
    // v4 answers `%true`; older versions `{"value"=%true}`.
    node.as_bool()
        .or_else(|| node.get("value").and_then(Node::as_bool))
        .ok_or_else(|| {
            Error::Decode(format!(
                "exists: expected a boolean, got {}",
                node.type_name()
            ))
        })
}

/// The jobs of one `list_jobs` page (malformed jobs skipped and logged) and the page's size.
fn parse_jobs_page(operation_id: &str, node: &Node) -> Result<(Vec<Job>, usize), Error> {
    let items = node
        .get("jobs")
        .and_then(Node::as_list)
        .ok_or_else(|| Error::Decode("list_jobs: no \"jobs\" list in the answer".into()))?;
    // The server answers `list_jobs` successfully even when it could not ask the controller
    // agent (or the archive): the failures are in `errors`, and jobs known only from the
    // archive as running are marked `is_stale`. Such an answer is not the operation's jobs.
    if let Some(errors) = node.get("errors").and_then(Node::as_list) {
        if !errors.is_empty() {
            let mut error = YtError::new(
                1,
                format!(
                    "list_jobs of {operation_id} answered with {} error(s)",
                    errors.len()
                ),
            );
            error.inner_errors = errors
                .iter()
                .map(|e| YtError::from_node(e).unwrap_or_else(|m| YtError::new(1, m)))
                .collect();
            return Err(Error::Incomplete(error));
        }
    }
    let stale = items
        .iter()
        .filter(|item| item.get("is_stale").and_then(Node::as_bool) == Some(true))
        .count();
    if stale > 0 {
        return Err(Error::Incomplete(YtError::new(
            1,
            format!("list_jobs of {operation_id}: {stale} job(s) are stale (known only from the archive)"),
        )));
    }
    let mut jobs = Vec::with_capacity(items.len());
    for item in items {
        match Job::from_node(item) {
            Ok(job) => jobs.push(job),
            Err(reason) => {
                tracing::warn!(operation_id, %reason, "list_jobs: malformed job skipped");
            }
        }
    }
    Ok((jobs, items.len()))
}

/// Reads the jobs out of a `list_jobs` answer (as `execute_batch` returns it).
pub fn jobs_from_list_jobs_output(
    operation_id: &str,
    node: &Node,
) -> Result<(Vec<Job>, usize), Error> {
    parse_jobs_page(operation_id, node)
}

fn parse_batch_results(node: &Node, expected: usize) -> Result<Vec<Result<Node, YtError>>, Error> {
    // API v4 answers `{"results": [...]}`; older versions a bare list.
    let node = node.get("results").unwrap_or(node);
    let items = node.as_list().ok_or_else(|| {
        Error::Decode(format!(
            "execute_batch: expected a list, got {}",
            node.type_name()
        ))
    })?;
    if items.len() != expected {
        return Err(Error::Decode(format!(
            "execute_batch: {} results for {expected} requests",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            if let Some(error) = item.get("error") {
                let error = YtError::from_node(error)
                    .map_err(|e| Error::Decode(format!("execute_batch: bad error: {e}")))?;
                Ok(Err(error))
            } else if item.as_map().is_some() {
                Ok(Ok(item.get("output").cloned().unwrap_or_else(Node::entity)))
            } else {
                Err(Error::Decode(format!(
                    "execute_batch: a result is a {}, not a map",
                    item.type_name()
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_results() {
        let node = yson::parse(
            br#"[{"output"=[1;2;];};{"error"={"code"=500;"message"="no such node";};};{};]"#,
        )
        .unwrap();
        let results = parse_batch_results(&node, 3).unwrap();
        assert_eq!(results[0].as_ref().unwrap().as_list().unwrap().len(), 2);
        assert!(results[1].as_ref().unwrap_err().is_resolve_error());
        assert!(results[2].as_ref().unwrap().is_entity());
        assert!(parse_batch_results(&node, 2).is_err());
        let v4 = yson::parse(br#"{"results"=[{"output"=%true;};];}"#).unwrap();
        assert_eq!(
            parse_batch_results(&v4, 1).unwrap()[0]
                .as_ref()
                .unwrap()
                .as_bool(),
            Some(true)
        );
        assert!(parse_batch_results(&yson::parse(b"{}").unwrap(), 0).is_err());
    }

    #[test]
    fn small_answers() {
        assert!(parse_exists(&yson::parse(b"%true").unwrap()).unwrap());
        assert!(!parse_exists(&yson::parse(b"{value=%false}").unwrap()).unwrap());
        assert!(parse_exists(&yson::parse(b"1").unwrap()).is_err());
        assert_eq!(parse_whoami(br#"{"login":"alice"}"#).unwrap(), "alice");
        assert_eq!(parse_whoami(br#"{"login"="bob";}"#).unwrap(), "bob");
        assert!(parse_whoami(br#"{"login":""}"#).is_err());
        assert!(parse_whoami(b"<html>").is_err());
        assert_eq!(
            list_names("list", &yson::parse(br#"[<a=1>"x";"y"]"#).unwrap()).unwrap(),
            vec!["x", "y"]
        );
        assert!(list_names("list", &yson::parse(b"[1]").unwrap()).is_err());
        assert_eq!(
            list_names("list", &yson::parse(br#"{"value"=["a"]}"#).unwrap()).unwrap(),
            vec!["a"]
        );
    }
}
