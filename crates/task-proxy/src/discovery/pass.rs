//! One discovery pass over the cluster, and the cluster view it keeps between passes.
//!
//! A pass lists running operations (paged), classifies them, and then fetches, in parallel and
//! batched: the specs of annotated vanilla operations not seen before (task layouts never
//! change, so they are cached), the running jobs of every annotated vanilla operation (batched
//! `list_jobs`, falling back to one request per operation where batching is not supported), the
//! `job_ports` orchid of jobs not seen before (cached per job for its life), and the discovery
//! listings of SPYT clusters. A steady pass is therefore a few `list_operations` pages plus a
//! few batch calls. When one operation's data cannot be read, its services from the previous
//! pass are kept; when the listing itself fails the pass fails and the caller keeps the last
//! routing table.

use super::operation::{classify, Classified, OperationInfo, OperationKind, LIST_ATTRIBUTES};
use super::spyt::{self, SpytStandalone, STANDALONE_DIRS};
use super::vanilla::{self, JobPorts, TaskLayout, TaskProxyAnnotation};
use crate::routing::ServiceSpec;
use futures_util::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use yson::Node;
use yt_client::{BatchRequest, Error, Job, YtClient};

/// Jobs asked for per operation in one batched `list_jobs`; an operation with more is then
/// listed page by page on its own.
const BATCH_LIST_JOBS_LIMIT: u32 = 1000;

/// How a pass talks to the cluster.
#[derive(Debug, Clone)]
pub struct PassSettings {
    /// Requests (or batch calls) in flight at once.
    pub concurrency: usize,
    /// Server-side parallelism asked of each `execute_batch` call.
    pub batch_concurrency: usize,
    /// Operations per `list_operations` page.
    pub list_page_size: u32,
}

/// What one pass found.
#[derive(Debug, Clone, Default)]
pub struct PassResult {
    pub specs: Vec<ServiceSpec>,
    /// Operation id -> its alias (without `*`), for the operations that have one.
    pub aliases: HashMap<String, String>,
    pub operations_seen: usize,
    pub vanilla_operations: usize,
    pub spyt_operations: usize,
    pub malformed_operations: usize,
    pub jobs: usize,
    /// Reads that failed and were tolerated (previous services kept, or an entry skipped).
    pub errors: usize,
}

/// What discovery remembers between passes.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Operation -> its tasks and port counts (`None`: its spec is unusable).
    layouts: HashMap<String, Option<TaskLayout>>,
    /// Job -> its operation and ports (a job keeps its ports for life).
    job_ports: HashMap<String, (String, Vec<u16>)>,
    /// Operation -> its services in the last pass, kept when a later read fails.
    last_services: HashMap<String, Vec<ServiceSpec>>,
    /// Operation -> reasons already logged (each is logged once per operation).
    warned: HashMap<String, HashSet<String>>,
    /// SPYT cluster -> its discovery path from its spec's `description` (`None`: unusable),
    /// for clusters whose annotations lack it (a spec does not change).
    spark_specs: HashMap<String, Option<SpytStandalone>>,
    /// Whether `list_jobs` works inside `execute_batch` (`None`: not tried yet).
    batch_list_jobs: Option<bool>,
    /// Passes since batching `list_jobs` was found not to work (it is tried again now and then,
    /// in case that was a fluke).
    passes_without_batching: u32,
}

/// Passes after which batching `list_jobs` is tried again when it once failed.
const BATCH_REPROBE_PASSES: u32 = 100;

struct VanillaOp {
    info: OperationInfo,
    annotation: TaskProxyAnnotation,
}

struct StandaloneOp {
    info: OperationInfo,
    spyt: SpytStandalone,
}

impl ClusterView {
    pub fn new() -> ClusterView {
        ClusterView::default()
    }

    /// Logs `reason` for `op_id` unless it was logged before.
    fn warn_once(&mut self, op_id: &str, reason: &str) {
        let reasons = self.warned.entry(op_id.to_string()).or_default();
        if reasons.insert(reason.to_string()) {
            tracing::warn!(operation_id = op_id, %reason, "discovery: operation entry skipped");
        }
    }

    /// Runs one pass. Fails only when the running operations cannot be listed.
    pub async fn pass(
        &mut self,
        client: &YtClient,
        settings: &PassSettings,
    ) -> Result<PassResult, Error> {
        let listed = client
            .list_running_operations_paged(LIST_ATTRIBUTES, settings.list_page_size)
            .await?;
        let mut result = PassResult {
            operations_seen: listed.len(),
            ..PassResult::default()
        };

        let mut running: HashSet<String> = HashSet::with_capacity(listed.len());
        let mut vanilla_ops = Vec::new();
        let mut standalone_ops = Vec::new();
        let mut spark_in_spec: Vec<OperationInfo> = Vec::new();
        for node in &listed {
            let info = match OperationInfo::from_node(node) {
                Ok(info) => info,
                Err(reason) => {
                    result.malformed_operations += 1;
                    tracing::debug!(%reason, "discovery: unreadable operation skipped");
                    continue;
                }
            };
            running.insert(info.id.clone());
            if let Some(alias) = &info.alias {
                result.aliases.insert(info.id.clone(), alias.clone());
            }
            match classify(&info) {
                Classified::Ignored => {}
                Classified::Malformed(reason) => {
                    result.malformed_operations += 1;
                    self.warn_once(&info.id, &reason);
                }
                Classified::Exposing { kind, warnings } => {
                    for warning in &warnings {
                        self.warn_once(&info.id, warning);
                    }
                    match kind {
                        OperationKind::Vanilla(annotation) => {
                            vanilla_ops.push(VanillaOp { info, annotation })
                        }
                        OperationKind::SpytDirect(direct) => {
                            result.spyt_operations += 1;
                            result.specs.push(spyt::direct_service(
                                &info.id,
                                info.start_time.as_deref(),
                                &direct,
                            ));
                        }
                        OperationKind::SpytStandalone(spyt) => {
                            standalone_ops.push(StandaloneOp { info, spyt })
                        }
                        OperationKind::SpytStandaloneInSpec => spark_in_spec.push(info),
                    }
                }
            }
        }
        self.spark_specs.retain(|id, _| running.contains(id));
        let unread: Vec<&str> = spark_in_spec
            .iter()
            .map(|info| info.id.as_str())
            .filter(|id| !self.spark_specs.contains_key(*id))
            .collect();
        let read = fetch_spark_specs(client, settings, &unread).await;
        for (id, parsed) in read {
            let parsed = match parsed {
                Ok(standalone) => Some(standalone),
                Err(reason) => {
                    self.warn_once(&id, &reason);
                    None
                }
            };
            self.spark_specs.insert(id, parsed);
        }
        for info in spark_in_spec {
            match self.spark_specs.get(&info.id) {
                Some(Some(spyt)) => standalone_ops.push(StandaloneOp {
                    spyt: spyt.clone(),
                    info,
                }),
                Some(None) => result.malformed_operations += 1,
                // The spec could not be read: the last services stay.
                None => {
                    result.errors += 1;
                    result.spyt_operations += 1;
                    result.specs.extend(
                        self.last_services
                            .get(&info.id)
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
        result.vanilla_operations = vanilla_ops.len();
        result.spyt_operations += standalone_ops.len();
        self.layouts.retain(|id, _| running.contains(id));
        self.last_services.retain(|id, _| running.contains(id));
        self.warned.retain(|id, _| running.contains(id));

        let (vanilla, standalone) = tokio::join!(
            self.fetch_vanilla(client, settings, &vanilla_ops),
            fetch_standalone(client, settings, &standalone_ops),
        );

        // Vanilla: assemble per operation.
        let VanillaFetch {
            jobs: jobs_by_op,
            layouts: layouts_fetched,
            ports: orchid,
            errors: mut vanilla_errors,
            batch_list_jobs,
        } = vanilla;
        if batch_list_jobs.is_some() {
            self.batch_list_jobs = batch_list_jobs;
        }
        if self.batch_list_jobs == Some(false) {
            self.passes_without_batching += 1;
            if self.passes_without_batching >= BATCH_REPROBE_PASSES {
                self.batch_list_jobs = None;
                self.passes_without_batching = 0;
            }
        }
        for (id, layout) in layouts_fetched {
            self.layouts.insert(id, layout);
        }
        // Forget the ports of jobs that are gone, except where this pass could not tell (the
        // operation's jobs could not be listed).
        let live_jobs: HashSet<&str> = jobs_by_op
            .values()
            .filter_map(|r| r.as_ref().ok())
            .flatten()
            .map(|j| j.id.as_str())
            .collect();
        let unlisted: HashSet<&str> = jobs_by_op
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(id, _)| id.as_str())
            .collect();
        self.job_ports.retain(|job_id, (op_id, _)| {
            live_jobs.contains(job_id.as_str()) || unlisted.contains(op_id.as_str())
        });
        self.job_ports.extend(orchid);
        let mut notes: Vec<(String, String)> = Vec::new();
        for op in &vanilla_ops {
            let id = &op.info.id;
            let jobs = match jobs_by_op.get(id) {
                Some(Ok(jobs)) => jobs,
                Some(Err(error)) => {
                    vanilla_errors += 1;
                    tracing::debug!(operation_id = %id, %error, "discovery: jobs unavailable; keeping the last services");
                    result
                        .specs
                        .extend(self.last_services.get(id).cloned().unwrap_or_default());
                    continue;
                }
                None => continue,
            };
            result.jobs += jobs.len();
            let with_ports: Vec<JobPorts> = jobs
                .iter()
                .filter_map(|job| {
                    Some(JobPorts {
                        job_id: job.id.clone(),
                        task_name: job.task_name.clone(),
                        host: job.host().to_string(),
                        ports: self.job_ports.get(&job.id)?.1.clone(),
                    })
                })
                .collect();
            let layout = self.layouts.get(id).and_then(Option::as_ref);
            let (specs, warnings) = vanilla::services(
                id,
                op.info.start_time.as_deref(),
                &op.annotation,
                layout,
                &with_ports,
            );
            notes.extend(warnings.into_iter().map(|w| (id.clone(), w)));
            self.last_services.insert(id.clone(), specs.clone());
            result.specs.extend(specs);
        }

        // SPYT standalone clusters.
        let (standalone_found, standalone_notes, standalone_failed) = standalone;
        let mut standalone_specs: HashMap<String, Vec<ServiceSpec>> = HashMap::new();
        for spec in standalone_found {
            standalone_specs
                .entry(spec.operation_id.clone())
                .or_default()
                .push(spec);
        }
        for op in &standalone_ops {
            let id = &op.info.id;
            if standalone_failed.contains(id) {
                result.errors += 1;
                result
                    .specs
                    .extend(self.last_services.get(id).cloned().unwrap_or_default());
                continue;
            }
            let specs = standalone_specs.remove(id).unwrap_or_default();
            self.last_services.insert(id.clone(), specs.clone());
            result.specs.extend(specs);
        }
        notes.extend(standalone_notes);
        for (id, note) in notes {
            self.warn_once(&id, &note);
        }
        result.errors += vanilla_errors;
        Ok(result)
    }

    /// Jobs, layouts of new operations and ports of new jobs, for the vanilla operations.
    async fn fetch_vanilla(
        &self,
        client: &YtClient,
        settings: &PassSettings,
        ops: &[VanillaOp],
    ) -> VanillaFetch {
        let new_ops: Vec<&str> = ops
            .iter()
            .map(|op| op.info.id.as_str())
            .filter(|id| !self.layouts.contains_key(*id))
            .collect();
        let ids: Vec<&str> = ops.iter().map(|op| op.info.id.as_str()).collect();
        let ((layouts, layout_errors), (jobs, batch_list_jobs)) = tokio::join!(
            fetch_layouts(client, settings, &new_ops),
            fetch_jobs(client, settings, &ids, self.batch_list_jobs),
        );
        let unknown: Vec<(&str, &Job)> = jobs
            .iter()
            .filter_map(|(op, r)| Some((op.as_str(), r.as_ref().ok()?)))
            .flat_map(|(op, list)| list.iter().map(move |job| (op, job)))
            .filter(|(_, job)| !self.job_ports.contains_key(&job.id))
            .collect();
        let (ports, orchid_errors) = fetch_job_ports(client, settings, &unknown).await;
        VanillaFetch {
            jobs,
            layouts,
            ports,
            errors: layout_errors + orchid_errors,
            batch_list_jobs,
        }
    }
}

/// What the vanilla half of a pass read.
struct VanillaFetch {
    jobs: HashMap<String, Result<Vec<Job>, Error>>,
    /// Layouts of operations not seen before.
    layouts: Vec<(String, Option<TaskLayout>)>,
    /// Ports of jobs not seen before: job -> (operation, ports).
    ports: Vec<(String, (String, Vec<u16>))>,
    errors: usize,
    /// What was learnt about batching `list_jobs`, if anything.
    batch_list_jobs: Option<bool>,
}

/// One batched round trip at the configured concurrency. A failed call is logged (`what`, and
/// how many requests it carried) and answers `None`: callers count or keep what it would have read.
async fn batch(
    client: &YtClient,
    settings: &PassSettings,
    requests: &[BatchRequest],
    what: &str,
) -> Option<Vec<Result<Node, yt_client::YtError>>> {
    match client
        .execute_batch(requests, settings.batch_concurrency)
        .await
    {
        Ok(results) => Some(results),
        Err(error) => {
            tracing::warn!(%error, requests = requests.len(), "discovery: {what}");
            None
        }
    }
}

/// The SPYT cluster in the spec's `description` of each operation, batched; operations whose
/// spec could not be read are left out (asked again next pass).
async fn fetch_spark_specs(
    client: &YtClient,
    settings: &PassSettings,
    ids: &[&str],
) -> Vec<(String, Result<SpytStandalone, String>)> {
    if ids.is_empty() {
        return Vec::new();
    }
    let requests: Vec<BatchRequest> = ids
        .iter()
        .map(|id| BatchRequest::get_operation(id, &["spec"]))
        .collect();
    let Some(results) = batch(client, settings, &requests, "cannot read SPYT specs").await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(node) => {
                let spec = node.get("spec").unwrap_or(&node);
                out.push((id.to_string(), spyt::parse_spec_description(spec)));
            }
            Err(error) => {
                tracing::debug!(operation_id = id, %error, "discovery: cannot read a SPYT spec");
            }
        }
    }
    out
}

/// `get_operation(spec)` of each operation, batched. Request failures are not cached (the next
/// pass asks again); an unusable spec is cached as `None` (the jobs then tell the layout).
async fn fetch_layouts(
    client: &YtClient,
    settings: &PassSettings,
    ids: &[&str],
) -> (Vec<(String, Option<TaskLayout>)>, usize) {
    if ids.is_empty() {
        return (Vec::new(), 0);
    }
    let requests: Vec<BatchRequest> = ids
        .iter()
        .map(|id| BatchRequest::get_operation(id, &["spec"]))
        .collect();
    let Some(results) = batch(client, settings, &requests, "cannot read operation specs").await
    else {
        return (Vec::new(), ids.len());
    };
    let mut layouts = Vec::new();
    let mut retry: Vec<String> = Vec::new();
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(node) => layouts.push((id.to_string(), layout_from_operation(id, &node))),
            Err(error) => {
                tracing::debug!(operation_id = id, %error, "discovery: batched get_operation failed; asking directly");
                retry.push(id.to_string());
            }
        }
    }
    // Items the batch could not answer (a cluster that does not batch get_operation, say):
    // one request each, bounded.
    let owned_client = client.clone();
    let direct: Vec<(String, Result<Node, Error>)> = stream::iter(retry)
        .map(move |id| {
            let client = owned_client.clone();
            async move {
                let node = client.get_operation(&id, &["spec"]).await;
                (id, node)
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    let mut errors = 0;
    for (id, result) in direct {
        match result {
            Ok(node) => {
                let layout = layout_from_operation(&id, &node);
                layouts.push((id, layout));
            }
            Err(error) => {
                errors += 1;
                tracing::debug!(operation_id = %id, %error, "discovery: cannot read the operation spec");
            }
        }
    }
    (layouts, errors)
}

/// The task layout in a `get_operation` answer; `None` (logged) when its spec is unusable.
fn layout_from_operation(id: &str, operation: &Node) -> Option<TaskLayout> {
    let spec = operation.get("spec").unwrap_or(operation);
    match TaskLayout::from_spec(spec) {
        Ok(layout) => Some(layout),
        Err(reason) => {
            tracing::warn!(operation_id = id, %reason, "discovery: unusable spec; tasks are taken from running jobs");
            None
        }
    }
}

/// Running jobs of each operation: batched `list_jobs` when the cluster allows it, otherwise one
/// paged `list_jobs` per operation with bounded concurrency. Also returns what was learnt about
/// batching (`Some(false)`: unsupported, stop trying).
async fn fetch_jobs(
    client: &YtClient,
    settings: &PassSettings,
    ids: &[&str],
    batch_list_jobs: Option<bool>,
) -> (HashMap<String, Result<Vec<Job>, Error>>, Option<bool>) {
    let mut out: HashMap<String, Result<Vec<Job>, Error>> = HashMap::with_capacity(ids.len());
    let mut learnt = None;
    let mut direct: Vec<&str> = Vec::new();
    if ids.is_empty() {
        return (out, None);
    }
    if batch_list_jobs != Some(false) {
        let requests: Vec<BatchRequest> = ids
            .iter()
            .map(|id| BatchRequest::list_jobs(id, Some("running"), BATCH_LIST_JOBS_LIMIT, 0))
            .collect();
        match client
            .execute_batch(&requests, settings.batch_concurrency)
            .await
        {
            Ok(results) => {
                let all_failed = results.iter().all(|r| r.is_err());
                if all_failed && batch_list_jobs.is_none() {
                    if let Some(Err(error)) = results.first() {
                        tracing::info!(%error, "discovery: list_jobs does not work in execute_batch; listing jobs one operation at a time");
                    }
                    learnt = Some(false);
                    direct.extend(ids);
                } else {
                    learnt = Some(true);
                    for (id, result) in ids.iter().zip(results) {
                        match result.map(|node| yt_client::jobs_from_list_jobs_output(id, &node)) {
                            Ok(Ok((jobs, count))) if count < BATCH_LIST_JOBS_LIMIT as usize => {
                                out.insert(id.to_string(), Ok(jobs));
                            }
                            // A full page (more jobs), an undecodable or failed item: list it
                            // on its own (which also gives the real error).
                            _ => direct.push(id),
                        }
                    }
                }
            }
            Err(error) if !error.is_transient() && batch_list_jobs.is_none() => {
                tracing::info!(%error, "discovery: execute_batch with list_jobs refused; listing jobs one operation at a time");
                learnt = Some(false);
                direct.extend(ids);
            }
            Err(error) => {
                for id in ids {
                    out.insert(id.to_string(), Err(error.clone()));
                }
                return (out, learnt);
            }
        }
    } else {
        direct.extend(ids);
    }
    // Owned ids and a cloned client keep the pass future `Send`.
    let direct: Vec<String> = direct.into_iter().map(str::to_string).collect();
    let owned_client = client.clone();
    let listed: Vec<(String, Result<Vec<Job>, Error>)> = stream::iter(direct)
        .map(move |id| {
            let client = owned_client.clone();
            async move {
                let jobs = client.list_jobs(&id, Some("running")).await;
                (id, jobs)
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    out.extend(listed);
    (out, learnt)
}

/// The `job_ports` orchid of each job, batched. Jobs whose ports cannot be read are left out
/// (asked again next pass).
async fn fetch_job_ports(
    client: &YtClient,
    settings: &PassSettings,
    jobs: &[(&str, &Job)],
) -> (Vec<(String, (String, Vec<u16>))>, usize) {
    if jobs.is_empty() {
        return (Vec::new(), 0);
    }
    let requests: Vec<BatchRequest> = jobs
        .iter()
        .map(|(_, job)| BatchRequest::get(job_ports_path(&job.address, &job.id)))
        .collect();
    let Some(results) = batch(client, settings, &requests, "cannot read job ports").await else {
        return (Vec::new(), jobs.len());
    };
    let mut out = Vec::with_capacity(jobs.len());
    let mut errors = 0;
    for ((op, job), result) in jobs.iter().zip(results) {
        match result
            .map_err(|e| e.to_string())
            .and_then(|node| vanilla::parse_job_ports(&node))
        {
            Ok(ports) => out.push((job.id.clone(), (op.to_string(), ports))),
            Err(reason) => {
                errors += 1;
                tracing::debug!(job_id = %job.id, address = %job.address, %reason, "discovery: job ports unavailable");
            }
        }
    }
    (out, errors)
}

/// The discovery listings of SPYT clusters, batched: their services, notes about skipped
/// entries, and the operations whose listings failed (their last services are kept).
async fn fetch_standalone(
    client: &YtClient,
    settings: &PassSettings,
    ops: &[StandaloneOp],
) -> (Vec<ServiceSpec>, Vec<(String, String)>, HashSet<String>) {
    let mut specs = Vec::new();
    let mut notes = Vec::new();
    let mut failed = HashSet::new();
    if ops.is_empty() {
        return (specs, notes, failed);
    }
    let requests: Vec<BatchRequest> = ops
        .iter()
        .flat_map(|op| {
            STANDALONE_DIRS
                .iter()
                .map(|dir| BatchRequest::list(spyt::listing_path(&op.spyt, dir)))
        })
        .collect();
    let Some(results) = batch(
        client,
        settings,
        &requests,
        "cannot list SPYT discovery paths",
    )
    .await
    else {
        failed.extend(ops.iter().map(|op| op.info.id.clone()));
        return (specs, notes, failed);
    };
    let mut results = results.into_iter();
    for op in ops {
        let id = &op.info.id;
        for dir in STANDALONE_DIRS {
            let Some(result) = results.next() else { break };
            match result {
                Ok(node) => {
                    let children = yt_client::list_names("list", &node).unwrap_or_else(|e| {
                        notes.push((id.clone(), format!("SPYT discovery listing: {e}")));
                        Vec::new()
                    });
                    let (spec, warnings) =
                        spyt::standalone_service(id, op.info.start_time.as_deref(), dir, &children);
                    specs.push(spec);
                    notes.extend(warnings.into_iter().map(|w| (id.clone(), w)));
                }
                Err(error) if error.is_resolve_error() => {
                    if !dir.optional {
                        notes.push((
                            id.clone(),
                            format!(
                                "SPYT discovery path {} does not exist",
                                spyt::listing_path(&op.spyt, dir)
                            ),
                        ));
                    }
                }
                Err(error) => {
                    tracing::debug!(operation_id = %id, %error, "discovery: SPYT listing failed");
                    failed.insert(id.clone());
                }
            }
        }
    }
    (specs, notes, failed)
}

/// `//sys/exec_nodes/<address>/orchid/exec_node/job_controller/active_jobs/<job>/job_ports`.
pub fn job_ports_path(address: &str, job_id: &str) -> String {
    format!(
        "//sys/exec_nodes/{}/orchid/exec_node/job_controller/active_jobs/{}/job_ports",
        escape_ypath_key(address),
        escape_ypath_key(job_id)
    )
}

/// Escapes the characters YPath gives meaning to inside one path component.
fn escape_ypath_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '\\' | '/' | '@' | '&' | '*' | '[' | '{') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orchid_paths() {
        assert_eq!(
            job_ports_path("127.0.0.2:9012", "a-b-c-d"),
            "//sys/exec_nodes/127.0.0.2:9012/orchid/exec_node/job_controller/active_jobs/a-b-c-d/job_ports"
        );
        assert!(job_ports_path("[::1]:9012", "j").contains("/\\[::1]:9012/"));
    }
}
