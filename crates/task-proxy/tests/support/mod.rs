//! Shared helpers of the auth integration tests: a dev cluster with a demo operation started by
//! the real `yt` CLI, and requests to run through the gate.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use yt_devcluster::{DevCluster, DevClusterConfig};

/// Runs the real `yt` CLI against `cluster` as the holder of `token`; returns stdout.
pub fn yt(cluster: &DevCluster, token: &str, args: &[&str]) -> String {
    let output = Command::new(test_support::tool("yt"))
        .args(args)
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", token)
        .env_remove("YT_CONFIG_PATCHES")
        .output()
        .expect("run yt");
    assert!(
        output.status.success(),
        "yt {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Starts a dev cluster.
pub async fn dev_cluster() -> DevCluster {
    DevCluster::start(DevClusterConfig::default())
        .await
        .expect("start the dev cluster")
}

/// Starts a vanilla operation as alice (`--async`) with `spec` (YSON) and tasks (YSON); returns
/// its id.
pub fn start_operation(cluster: &DevCluster, tasks: &str, spec: &str) -> String {
    let id = yt(
        cluster,
        "alice-token",
        &["vanilla", "--tasks", tasks, "--spec", spec, "--async"],
    );
    let id = id.lines().last().unwrap_or_default().trim().to_string();
    assert!(yt_devcluster::is_yt_id(&id), "not an operation id: {id:?}");
    id
}

/// The ACL spec granting bob `read`.
pub const BOB_READS: &str = "{acl=[{action=allow;subjects=[bob];permissions=[read]}]}";

/// Sets the operation's ACL (as alice, its owner) with the real CLI.
pub fn set_acl(cluster: &DevCluster, operation_id: &str, acl: &str) {
    yt(
        cluster,
        "alice-token",
        &[
            "update-op-parameters",
            operation_id,
            &format!("{{acl={acl}}}"),
        ],
    );
}

/// This test file's directory (for the Python helpers next to it).
pub fn support_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("support")
}
