//! Annotated vanilla operations (see docs/discovery.md): the `task_proxy` annotation, the tasks and port
//! counts of the operation's spec, and the services they make from running jobs' ports.
//!
//! Everything here is a pure function of cluster data; the pass (`pass.rs`) fetches that data.
//! Malformed `tasks_info` entries are skipped with a warning naming them; the rest of the
//! operation stays exposed.

use crate::routing::{Endpoint, Protocol, RouteTimeouts, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet};
use yson::Node;

/// The name and protocol that `tasks_info` gives one port of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub service: String,
    pub protocol: Protocol,
    /// `sticky` (unset: `--sticky-sessions-default` decides).
    pub sticky: Option<bool>,
}

/// A valid, enabled `task_proxy` annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskProxyAnnotation {
    /// task -> port index -> name; ports not named here are `port_<i>`, http.
    pub named: BTreeMap<String, BTreeMap<u32, NamedPort>>,
    /// `route_timeout_seconds` and `stream_idle_timeout_seconds`, when given.
    pub timeouts: RouteTimeouts,
}

/// The largest number of seconds a timeout may have (a Go duration of it does not overflow;
/// the original refuses larger values the same way).
pub const MAX_TIMEOUT_SECONDS: u64 = (i64::MAX / 1_000_000_000) as u64;

/// Reads the per-operation timeouts. As in the original, an invalid value (not an integer,
/// negative, too large) makes the whole annotation invalid: the operation is not exposed.
fn parse_timeouts(task_proxy: &Node) -> Result<RouteTimeouts, String> {
    let seconds = |key: &str| -> Result<Option<u64>, String> {
        let Some(value) = task_proxy.get(key) else {
            return Ok(None);
        };
        match (value.as_i64(), value.as_u64()) {
            (_, Some(s)) if s <= MAX_TIMEOUT_SECONDS => Ok(Some(s)),
            (_, Some(s)) => Err(format!(
                "annotations.task_proxy.{key} is {s}, more than {MAX_TIMEOUT_SECONDS} seconds"
            )),
            (Some(s), None) => Err(format!(
                "annotations.task_proxy.{key} is {s}, a negative number of seconds"
            )),
            (None, None) => Err(format!(
                "annotations.task_proxy.{key} is a {} ({}), not an integer number of seconds",
                value.type_name(),
                yson::to_text(value)
            )),
        }
    };
    Ok(RouteTimeouts {
        route_timeout_seconds: seconds("route_timeout_seconds")?,
        stream_idle_timeout_seconds: seconds("stream_idle_timeout_seconds")?,
    })
}

/// What the annotations of an operation say about the task proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum AnnotationOutcome {
    /// No `task_proxy`, or `enabled` missing or `%false`: not exposed.
    Absent,
    /// Exposed; `warnings` name the `tasks_info` entries that were skipped.
    Enabled {
        annotation: TaskProxyAnnotation,
        warnings: Vec<String>,
    },
    /// `task_proxy` is there but unusable (not a map, `enabled` not a boolean): not exposed,
    /// and worth a log line.
    Malformed(String),
}

/// Reads `annotations.task_proxy`.
pub fn parse_annotation(annotations: Option<&Node>) -> AnnotationOutcome {
    let Some(task_proxy) = annotations.and_then(|a| a.get("task_proxy")) else {
        return AnnotationOutcome::Absent;
    };
    if task_proxy.as_map().is_none() {
        return AnnotationOutcome::Malformed(format!(
            "annotations.task_proxy is a {}, not a map",
            task_proxy.type_name()
        ));
    }
    match task_proxy.get("enabled") {
        None => return AnnotationOutcome::Absent,
        Some(enabled) => match enabled.as_bool() {
            Some(true) => {}
            Some(false) => return AnnotationOutcome::Absent,
            None => {
                return AnnotationOutcome::Malformed(format!(
                    "annotations.task_proxy.enabled is a {} ({}), not the boolean %true",
                    enabled.type_name(),
                    yson::to_text(enabled)
                ))
            }
        },
    }
    let timeouts = match parse_timeouts(task_proxy) {
        Ok(timeouts) => timeouts,
        Err(reason) => {
            return AnnotationOutcome::Malformed(format!(
                "{reason}: the operation is not exposed (as with the original)"
            ))
        }
    };
    let mut warnings = Vec::new();
    let mut annotation = TaskProxyAnnotation {
        timeouts,
        ..TaskProxyAnnotation::default()
    };
    let Some(tasks_info) = task_proxy.get("tasks_info") else {
        return AnnotationOutcome::Enabled {
            annotation,
            warnings,
        };
    };
    let Some(tasks) = tasks_info.as_map() else {
        warnings.push(format!(
            "tasks_info is a {}, not a map: ignored (every port keeps its default name)",
            tasks_info.type_name()
        ));
        return AnnotationOutcome::Enabled {
            annotation,
            warnings,
        };
    };
    for (task, services) in tasks {
        let Some(services) = services.as_map() else {
            warnings.push(format!(
                "tasks_info.{task} is a {}, not a map: skipped",
                services.type_name()
            ));
            continue;
        };
        let mut ports: BTreeMap<u32, NamedPort> = BTreeMap::new();
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (service, entry) in services {
            match parse_service_entry(entry, &mut warnings, task, service) {
                Err(reason) => {
                    warnings.push(format!("tasks_info.{task}.{service}: {reason}: skipped"))
                }
                Ok(_) if service.is_empty() => {
                    warnings.push(format!("tasks_info.{task}: an empty service name: skipped"))
                }
                Ok(_) if names.contains(service.as_str()) => warnings.push(format!(
                    "tasks_info.{task}.{service}: the name is given twice: skipped"
                )),
                Ok((port_index, protocol, sticky)) => {
                    if let Some(existing) = ports.get(&port_index) {
                        warnings.push(format!(
                            "tasks_info.{task}.{service}: port_index {port_index} is already named {:?}: skipped",
                            existing.service
                        ));
                        continue;
                    }
                    names.insert(service);
                    ports.insert(
                        port_index,
                        NamedPort {
                            service: service.clone(),
                            protocol,
                            sticky,
                        },
                    );
                }
            }
        }
        if !ports.is_empty() {
            annotation.named.insert(task.clone(), ports);
        }
    }
    AnnotationOutcome::Enabled {
        annotation,
        warnings,
    }
}

/// `{protocol="grpc"|"http"|"https"; port_index=<int>; sticky=%true|%false}` (protocol
/// defaults to http, sticky to unset). A `sticky` that is not a boolean is warned about and counts as
/// `%false`: the service stays, only without affinity.
fn parse_service_entry(
    entry: &Node,
    warnings: &mut Vec<String>,
    task: &str,
    service: &str,
) -> Result<(u32, Protocol, Option<bool>), String> {
    if entry.as_map().is_none() {
        return Err(format!("a {}, not a map", entry.type_name()));
    }
    let port_index = match entry.get("port_index") {
        None => return Err("no port_index".into()),
        Some(index) => match (index.as_i64(), index.as_u64()) {
            (_, Some(i)) => u32::try_from(i).map_err(|_| format!("port_index {i} is too large"))?,
            (Some(i), None) => return Err(format!("port_index {i} is negative")),
            (None, None) => {
                return Err(format!(
                    "port_index is a {} ({}), not an integer",
                    index.type_name(),
                    yson::to_text(index)
                ))
            }
        },
    };
    let protocol = match entry.get("protocol") {
        None => Protocol::Http,
        Some(p) => match p.as_str() {
            Some(text) => text.parse::<Protocol>()?,
            None => return Err(format!("protocol is a {}, not a string", p.type_name())),
        },
    };
    let sticky = match entry.get("sticky") {
        None => None,
        Some(flag) => match flag.as_bool() {
            Some(sticky) => Some(sticky),
            None => {
                warnings.push(format!(
                    "tasks_info.{task}.{service}: sticky is a {} ({}), not a boolean: not sticky",
                    flag.type_name(),
                    yson::to_text(flag)
                ));
                Some(false)
            }
        },
    };
    Ok((port_index, protocol, sticky))
}

/// The tasks of an operation and how many ports each asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLayout {
    pub port_counts: BTreeMap<String, u32>,
}

impl TaskLayout {
    /// Reads `spec.tasks` (`{<task>={port_count=<n>; ...}}`) of an operation's spec.
    pub fn from_spec(spec: &Node) -> Result<TaskLayout, String> {
        let tasks = spec
            .get("tasks")
            .ok_or("the spec has no \"tasks\"")?
            .as_map()
            .ok_or("spec.tasks is not a map")?;
        let mut port_counts = BTreeMap::new();
        for (task, task_spec) in tasks {
            let count = match task_spec.get("port_count") {
                None => 0,
                Some(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n <= 1024)
                    .ok_or_else(|| {
                        format!("spec.tasks.{task}.port_count is not a small integer")
                    })?,
            };
            port_counts.insert(task.clone(), count);
        }
        Ok(TaskLayout { port_counts })
    }

    /// A layout guessed from running jobs when the spec is unavailable: each task has as many
    /// ports as its jobs report.
    pub fn from_jobs(jobs: &[JobPorts]) -> TaskLayout {
        let mut port_counts: BTreeMap<String, u32> = BTreeMap::new();
        for job in jobs {
            let n = u32::try_from(job.ports.len()).unwrap_or(u32::MAX);
            let entry = port_counts.entry(job.task_name.clone()).or_default();
            *entry = (*entry).max(n);
        }
        TaskLayout { port_counts }
    }
}

/// A running job and the ports the scheduler gave it (index = port index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPorts {
    pub job_id: String,
    pub task_name: String,
    /// The exec node's host (the job's address without its port).
    pub host: String,
    pub ports: Vec<u16>,
}

/// Reads a job's `job_ports` orchid value: a list of port numbers.
pub fn parse_job_ports(node: &Node) -> Result<Vec<u16>, String> {
    let items = node
        .as_list()
        .ok_or_else(|| format!("job_ports is a {}, not a list", node.type_name()))?;
    items
        .iter()
        .map(|item| {
            item.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("job_ports has {} which is not a port", yson::to_text(item)))
        })
        .collect()
}

/// The services of an annotated vanilla operation: for every task of `layout` (from the spec,
/// or from `jobs` when the spec is unknown), one service per port index, named by `tasks_info`
/// or `port_<i>`/http; endpoints are the jobs' hosts with their `job_ports[i]`. Returns the
/// services and warnings about `tasks_info` entries that name no port.
pub fn services(
    op_id: &str,
    start_time: Option<&str>,
    annotation: &TaskProxyAnnotation,
    layout: Option<&TaskLayout>,
    jobs: &[JobPorts],
) -> (Vec<ServiceSpec>, Vec<String>) {
    let guessed;
    let layout = match layout {
        Some(layout) => layout,
        None => {
            guessed = TaskLayout::from_jobs(jobs);
            &guessed
        }
    };
    let mut warnings = Vec::new();
    for (task, ports) in &annotation.named {
        match layout.port_counts.get(task) {
            None => warnings.push(format!("tasks_info.{task}: the operation has no such task")),
            Some(count) => {
                for (index, named) in ports {
                    if index >= count {
                        warnings.push(format!(
                            "tasks_info.{task}.{}: port_index {index} but the task has {count} ports",
                            named.service
                        ));
                    }
                }
            }
        }
    }
    let mut specs = Vec::new();
    for (task, &port_count) in &layout.port_counts {
        let named = annotation.named.get(task);
        let mut used: BTreeSet<String> = BTreeSet::new();
        for index in 0..port_count {
            let default_name = format!("port_{index}");
            let (mut service, mut protocol, mut sticky) = match named.and_then(|n| n.get(&index)) {
                Some(n) => (n.service.clone(), n.protocol, n.sticky),
                None => (default_name.clone(), Protocol::Http, None),
            };
            if used.contains(&service) {
                warnings.push(format!(
                    "task {task}: port {index} would be named {service:?} like another port; it keeps {default_name:?}"
                ));
                service = default_name;
                protocol = Protocol::Http;
                sticky = None;
                if used.contains(&service) {
                    continue;
                }
            }
            used.insert(service.clone());
            let endpoints = jobs
                .iter()
                .filter(|job| &job.task_name == task)
                .filter_map(|job| {
                    let port = *job.ports.get(index as usize)?;
                    Some(Endpoint::new(job.host.clone(), port))
                })
                .collect();
            specs.push(ServiceSpec {
                operation_id: op_id.to_string(),
                task_name: task.clone(),
                service,
                protocol,
                endpoints,
                operation_start_time: start_time.map(str::to_string),
                timeouts: annotation.timeouts,
                sticky,
            });
        }
    }
    (specs, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(text: &str) -> Node {
        yson::parse(text.as_bytes()).unwrap()
    }

    fn enabled(text: &str) -> (TaskProxyAnnotation, Vec<String>) {
        match parse_annotation(Some(&annotations(text))) {
            AnnotationOutcome::Enabled {
                annotation,
                warnings,
            } => (annotation, warnings),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn per_operation_timeouts() {
        let (a, warnings) = enabled(
            "{task_proxy={enabled=%true; route_timeout_seconds=1; stream_idle_timeout_seconds=0u}}",
        );
        assert!(warnings.is_empty());
        assert_eq!(a.timeouts.route_timeout_seconds, Some(1));
        assert_eq!(a.timeouts.stream_idle_timeout_seconds, Some(0));
        // Absent: the global flags apply.
        let (a, _) = enabled("{task_proxy={enabled=%true}}");
        assert!(a.timeouts.is_default());
        let g = Some(std::time::Duration::from_secs(15));
        assert_eq!(a.timeouts.route_timeout(g), g);
        // 0 switches the timeout off; a value replaces the flag.
        let (a, _) = enabled(
            "{task_proxy={enabled=%true; route_timeout_seconds=0; stream_idle_timeout_seconds=7}}",
        );
        assert_eq!(a.timeouts.route_timeout(g), None);
        assert_eq!(
            a.timeouts.stream_idle_timeout(None),
            Some(std::time::Duration::from_secs(7))
        );
        // The largest value the original takes, and one more.
        let max = MAX_TIMEOUT_SECONDS;
        let (a, _) = enabled(&format!(
            "{{task_proxy={{enabled=%true; route_timeout_seconds={max}}}}}"
        ));
        assert_eq!(a.timeouts.route_timeout_seconds, Some(9_223_372_036));
        // Invalid values make the whole annotation invalid (the operation is not exposed).
        for bad in [
            "route_timeout_seconds=-1",
            "route_timeout_seconds=1.5",
            "route_timeout_seconds=\"10\"",
            "route_timeout_seconds=%true",
            "route_timeout_seconds=#",
            "stream_idle_timeout_seconds=-5",
            "stream_idle_timeout_seconds=9223372037",
            "stream_idle_timeout_seconds=18446744073709551615u",
        ] {
            let text = format!("{{task_proxy={{enabled=%true; {bad}}}}}");
            match parse_annotation(Some(&annotations(&text))) {
                AnnotationOutcome::Malformed(reason) => {
                    let key = bad.split('=').next().unwrap();
                    assert!(reason.contains(key), "{bad}: {reason}");
                    assert!(reason.contains("not exposed"), "{bad}: {reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // A disabled operation is absent whatever its timeouts say.
        assert_eq!(
            parse_annotation(Some(&annotations(
                "{task_proxy={enabled=%false; route_timeout_seconds=-1}}"
            ))),
            AnnotationOutcome::Absent
        );
        // The services carry them.
        let (a, _) = enabled(
            "{task_proxy={enabled=%true; route_timeout_seconds=3; tasks_info={main={web={port_index=0}}}}}",
        );
        let layout = TaskLayout {
            port_counts: [("main".to_string(), 1)].into(),
        };
        let (specs, _) = services("op", None, &a, Some(&layout), &[]);
        assert_eq!(specs[0].timeouts.route_timeout_seconds, Some(3));
    }

    #[test]
    fn sticky_is_a_boolean_per_service() {
        let (a, warnings) = enabled(
            "{task_proxy={enabled=%true; tasks_info={main={\
             web={port_index=0; sticky=%true}; api={port_index=1; sticky=%false}; \
             odd={port_index=2; sticky=\"yes\"}; plain={port_index=3}}}}}",
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("tasks_info.main.odd") && warnings[0].contains("not a boolean"),
            "{warnings:?}"
        );
        let layout = TaskLayout {
            port_counts: [("main".to_string(), 5)].into(),
        };
        let (specs, _) = services("op", None, &a, Some(&layout), &[]);
        let sticky = |name: &str| specs.iter().find(|s| s.service == name).unwrap().sticky;
        assert_eq!(sticky("web"), Some(true));
        assert_eq!(sticky("api"), Some(false));
        // Kept, without affinity.
        assert_eq!(sticky("odd"), Some(false));
        // Unset: the flag's default decides later.
        assert_eq!(sticky("plain"), None);
        assert_eq!(sticky("port_4"), None);
    }

    #[test]
    fn enabled_must_be_boolean_true() {
        assert_eq!(parse_annotation(None), AnnotationOutcome::Absent);
        for absent in [
            "{}",
            "{task_proxy={}}",
            "{task_proxy={enabled=%false}}",
            "{other={enabled=%true}}",
        ] {
            assert_eq!(
                parse_annotation(Some(&annotations(absent))),
                AnnotationOutcome::Absent,
                "{absent}"
            );
        }
        for malformed in [
            "{task_proxy=%true}",
            "{task_proxy=\"enabled\"}",
            "{task_proxy={enabled=\"true\"}}",
            "{task_proxy={enabled=1}}",
            "{task_proxy={enabled=#}}",
        ] {
            assert!(
                matches!(
                    parse_annotation(Some(&annotations(malformed))),
                    AnnotationOutcome::Malformed(_)
                ),
                "{malformed}"
            );
        }
        let (annotation, warnings) = enabled("{task_proxy={enabled=%true}}");
        assert!(annotation.named.is_empty() && warnings.is_empty());
    }

    #[test]
    fn tasks_info_keeps_good_entries_and_names_bad_ones() {
        let (annotation, warnings) = enabled(
            r#"{task_proxy={enabled=%true;tasks_info={
                server={grpc={protocol="grpc";port_index=1};web={protocol="http";port_index=0u};tls={protocol="https";port_index=2}};
                bad_task=[1;2];
                other={
                    ftp={protocol="ftp";port_index=0};
                    no_index={protocol="http"};
                    float={protocol="http";port_index=1.};
                    text={protocol="http";port_index="2"};
                    negative={port_index=-1};
                    listy=[1];
                    numeric_protocol={protocol=1;port_index=2};
                    ok={port_index=3};
                    dup={protocol="grpc";port_index=3};
                };
            }}}"#,
        );
        let server = &annotation.named["server"];
        assert_eq!(
            server[&1],
            NamedPort {
                service: "grpc".into(),
                protocol: Protocol::Grpc,
                sticky: None,
            }
        );
        assert_eq!(server[&0].service, "web");
        assert_eq!(
            server[&2],
            NamedPort {
                service: "tls".into(),
                protocol: Protocol::Https,
                sticky: None,
            }
        );
        let other = &annotation.named["other"];
        assert_eq!(other.len(), 1);
        assert_eq!(
            other[&3],
            NamedPort {
                service: "ok".into(),
                protocol: Protocol::Http,
                sticky: None,
            }
        );
        assert!(!annotation.named.contains_key("bad_task"));
        let joined = warnings.join("\n");
        for name in [
            "bad_task",
            "ftp",
            "no_index",
            "float",
            "text",
            "negative",
            "listy",
            "numeric_protocol",
            "dup",
        ] {
            assert!(joined.contains(name), "{name} is named in {joined}");
        }
        assert_eq!(warnings.len(), 9, "{joined}");

        let (annotation, warnings) = enabled("{task_proxy={enabled=%true;tasks_info=[1]}}");
        assert!(annotation.named.is_empty());
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn layouts_and_job_ports() {
        let spec = yson::parse(
            br#"{"tasks"={"a"={"command"="x";"port_count"=2;};"b"={"job_count"=1u;};"c"={"port_count"=1u;};};}"#,
        )
        .unwrap();
        let layout = TaskLayout::from_spec(&spec).unwrap();
        assert_eq!(layout.port_counts.get("a"), Some(&2));
        assert_eq!(layout.port_counts.get("b"), Some(&0));
        assert_eq!(layout.port_counts.get("c"), Some(&1));
        assert!(TaskLayout::from_spec(&yson::parse(b"{}").unwrap()).is_err());
        assert!(
            TaskLayout::from_spec(&yson::parse(b"{tasks={a={port_count=-1}}}").unwrap()).is_err()
        );
        assert!(
            TaskLayout::from_spec(&yson::parse(b"{tasks={a={port_count=\"2\"}}}").unwrap())
                .is_err()
        );
        assert_eq!(
            parse_job_ports(&yson::parse(b"[8080;8081u]").unwrap()).unwrap(),
            vec![8080, 8081]
        );
        for bad in ["[0]", "[70000]", "[\"80\"]", "{}", "#", "[-1]"] {
            assert!(
                parse_job_ports(&yson::parse(bad.as_bytes()).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    fn job(id: &str, task: &str, host: &str, ports: &[u16]) -> JobPorts {
        JobPorts {
            job_id: id.into(),
            task_name: task.into(),
            host: host.into(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn services_from_jobs() {
        let (annotation, _) = enabled(
            r#"{task_proxy={enabled=%true;tasks_info={
                a={api={protocol="grpc";port_index=1}};
                ghost={x={port_index=0}};
                b={far={port_index=7}};
            }}}"#,
        );
        let layout = TaskLayout {
            port_counts: [
                ("a".to_string(), 2),
                ("b".to_string(), 1),
                ("idle".to_string(), 1),
            ]
            .into(),
        };
        let jobs = vec![
            job("j1", "a", "127.0.0.1", &[1001, 1002]),
            job("j2", "a", "127.0.0.2", &[2001, 2002]),
            job("j3", "b", "127.0.0.3", &[3001]),
            job("j4", "a", "127.0.0.4", &[4001]), // short job_ports: only port 0
        ];
        let (specs, warnings) = services(
            "op",
            Some("2027-01-01T00:00:00.000000Z"),
            &annotation,
            Some(&layout),
            &jobs,
        );
        let find = |task: &str, service: &str| {
            specs
                .iter()
                .find(|s| s.task_name == task && s.service == service)
                .unwrap_or_else(|| panic!("{task}/{service} in {specs:?}"))
        };
        let port0 = find("a", "port_0");
        assert_eq!(port0.protocol, Protocol::Http);
        assert_eq!(port0.endpoints.len(), 3);
        let api = find("a", "api");
        assert_eq!(api.protocol, Protocol::Grpc);
        assert_eq!(
            api.endpoints,
            vec![
                Endpoint::new("127.0.0.1", 1002),
                Endpoint::new("127.0.0.2", 2002)
            ]
        );
        assert_eq!(
            find("b", "port_0").endpoints,
            vec![Endpoint::new("127.0.0.3", 3001)]
        );
        assert!(
            find("idle", "port_0").endpoints.is_empty(),
            "a task without jobs still has its service"
        );
        assert_eq!(specs.len(), 4);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(specs.iter().all(|s| s.operation_start_time.is_some()));

        // Without a spec, the layout comes from the jobs.
        let (specs, _) = services("op", None, &TaskProxyAnnotation::default(), None, &jobs);
        assert_eq!(specs.len(), 3, "a/port_0, a/port_1, b/port_0");
    }

    #[test]
    fn a_name_clash_keeps_the_default_name() {
        let (annotation, _) =
            enabled(r#"{task_proxy={enabled=%true;tasks_info={a={port_1={port_index=0}}}}}"#);
        let layout = TaskLayout {
            port_counts: [("a".to_string(), 2)].into(),
        };
        let (specs, warnings) = services("op", None, &annotation, Some(&layout), &[]);
        let names: Vec<&str> = specs.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            names,
            vec!["port_1"],
            "port 0 is named port_1; port 1 then cannot be: skipped"
        );
        assert_eq!(warnings.len(), 1);
    }
}
