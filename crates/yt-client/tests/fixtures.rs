//! The client's decoders on answers shaped like real YTsaurus ones (attributes on values,
//! unsigned integers, entities, doubles, nested errors).

use yt_client::{host_of, Job, OperationsPage, YtError};

fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn list_operations_page() {
    let node = yson::parse(&data("list_operations_page.yson")).unwrap();
    let page = OperationsPage::from_node(&node).unwrap();
    assert_eq!(page.operations.len(), 2);
    assert_eq!(page.incomplete, Some(true));
    let op = &page.operations[0];
    assert_eq!(
        op.get("id").and_then(yson::Node::as_str),
        Some("1a2b3c4d-5e6f7081-3fe8-9a0b1c2d")
    );
    assert_eq!(
        op.pointer("runtime_parameters/annotations/task_proxy/enabled")
            .and_then(yson::Node::as_bool),
        Some(true)
    );
    let paths = op.pointer("brief_spec/input_table_paths").unwrap();
    assert_eq!(
        paths.attribute("count").and_then(yson::Node::as_i64),
        Some(0)
    );
}

#[test]
fn list_jobs_page() {
    let node = yson::parse(&data("list_jobs_page.yson")).unwrap();
    let (jobs, count) = yt_client::jobs_from_list_jobs_output("op", &node).unwrap();
    assert_eq!(count, 3, "the page size counts the malformed job too");
    assert_eq!(jobs.len(), 2, "the job without an id is skipped");
    assert_eq!(
        jobs[0],
        Job {
            id: "5d1e2f3a-4b5c6d7e-3fe84-1000002".into(),
            address: "node-7.cluster.test:9012".into(),
            task_name: "server".into(),
            state: "running".into(),
            start_time: Some("2027-03-14T15:09:28.101010Z".into()),
        }
    );
    assert_eq!(jobs[0].host(), "node-7.cluster.test");
    assert_eq!(jobs[1].host(), "::1");
    assert_eq!(host_of("127.0.0.3:1"), "127.0.0.3");
    let error = YtError::from_node(node.pointer("jobs/1/error").unwrap()).unwrap();
    assert_eq!(error.code, 1205);
    assert_eq!(error.inner_errors[0].code, 10000);
    assert!(error.to_string().contains("Process exited with code 1"));
}

#[test]
fn get_operation_spec() {
    let node = yson::parse(&data("get_operation.yson")).unwrap();
    let tasks = node.pointer("spec/tasks").unwrap().as_map().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(
        node.pointer("spec/tasks/worker/job_count")
            .and_then(yson::Node::as_u64),
        Some(1)
    );
}

#[test]
fn error_from_header_json() {
    let error = YtError::parse(&data("error_header.json")).unwrap();
    assert!(error.is_resolve_error());
    assert_eq!(error.inner_errors.len(), 1);
    assert_eq!(
        error.to_string(),
        "Error resolving path //home/nowhere (code 1): Node //home has no child with key \"nowhere\" (code 500)"
    );
}
