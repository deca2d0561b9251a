//! What an operator touches: the command line (help, env vars, refusals, the original
//! deployment's single-dash spelling, `--check-config`) and the Helm chart, whose rendered
//! container args must be accepted by the real binary.

use std::path::Path;
use std::process::{Command, Output};
use test_support::output_text;

fn task_proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_task-proxy"))
        .args(args)
        .env_remove("YT_TOKEN")
        .env_remove("YT_PROXY")
        .env_remove("YT_TOKEN_PATH")
        .env_remove("RUST_LOG")
        .output()
        .expect("run task-proxy")
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    let output = task_proxy(&["serve", "--help"]);
    assert!(output.status.success());
    let help = output_text(&output);
    for (flag, env) in [
        ("--yt-proxy", "YT_PROXY"),
        ("--yt-token-path", "YT_TOKEN_PATH"),
        ("--base-domain", "TASK_PROXY_BASE_DOMAIN"),
        ("--dir-path", "TASK_PROXY_DIR_PATH"),
        (
            "--discovery-period-seconds",
            "TASK_PROXY_DISCOVERY_PERIOD_SECONDS",
        ),
        ("--auth-enabled", "TASK_PROXY_AUTH_ENABLED"),
        ("--auth-cookie-name", "TASK_PROXY_AUTH_COOKIE_NAME"),
        (
            "--auth-lookup-rate-per-client",
            "TASK_PROXY_AUTH_LOOKUP_RATE_PER_CLIENT",
        ),
        (
            "--auth-lookup-burst-per-client",
            "TASK_PROXY_AUTH_LOOKUP_BURST_PER_CLIENT",
        ),
        ("--auth-lookup-rate", "TASK_PROXY_AUTH_LOOKUP_RATE"),
        ("--auth-lookup-burst", "TASK_PROXY_AUTH_LOOKUP_BURST"),
        ("--listen", "TASK_PROXY_LISTEN"),
        ("--tls-cert", "TASK_PROXY_TLS_CERT"),
        ("--tls-key", "TASK_PROXY_TLS_KEY"),
        ("--admin-listen", "TASK_PROXY_ADMIN_LISTEN"),
        ("--services-file", "TASK_PROXY_SERVICES_FILE"),
        ("--log-format", "TASK_PROXY_LOG_FORMAT"),
        ("--log-level", "TASK_PROXY_LOG_LEVEL"),
        ("--logging-config", "TASK_PROXY_LOGGING_CONFIG"),
        ("--auth-cache-enabled", "TASK_PROXY_AUTH_CACHE_ENABLED"),
        (
            "--route-timeout-seconds",
            "TASK_PROXY_ROUTE_TIMEOUT_SECONDS",
        ),
        ("--identity-key-file", "TASK_PROXY_IDENTITY_KEY_FILE"),
        (
            "--identity-previous-key-file",
            "TASK_PROXY_IDENTITY_PREVIOUS_KEY_FILE",
        ),
        ("--portal-key-file", "TASK_PROXY_PORTAL_KEY_FILE"),
        ("--check-config", ""),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
        assert!(help.contains(env), "--help lacks {env}");
    }
}

#[test]
fn single_dash_spelling_of_the_original_deployment_is_accepted() {
    let output = task_proxy(&[
        "serve",
        "-base-domain=tp.example.net",
        "-auth-enabled=false",
        "-services-file",
        "/nonexistent.json",
        "--check-config",
    ]);
    assert!(output.status.success(), "{}", output_text(&output));
    let printed = output_text(&output);
    assert!(printed.contains("tp.example.net"), "{printed}");
    assert!(printed.contains("enabled: false"), "{printed}");
}

#[test]
fn invalid_combinations_are_refused_with_a_clear_message() {
    for (args, expected) in [
        (
            vec!["--base-domain", "d", "--services-file", "f"],
            "auth needs --yt-proxy",
        ),
        (
            vec!["--base-domain", "d", "--auth-enabled=false"],
            "nothing to route",
        ),
        (
            vec![
                "--base-domain=d",
                "--auth-enabled=false",
                "--services-file=f",
                "--tls-cert=c",
            ],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec![
                "--base-domain=a b",
                "--auth-enabled=false",
                "--services-file=f",
            ],
            "--base-domain must be a domain name",
        ),
    ] {
        let mut all = vec!["serve"];
        all.extend(args.iter().copied());
        all.push("--check-config");
        let output = task_proxy(&all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            output_text(&output)
        );
        assert!(
            output_text(&output).contains(expected),
            "{args:?}: {}",
            output_text(&output)
        );
    }
}

#[test]
fn check_config_never_prints_the_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_task-proxy"))
        .args([
            "serve",
            "--base-domain=d",
            "--yt-proxy=http://127.0.0.1:1",
            "--check-config",
        ])
        .env("YT_TOKEN", "secret-robot-token")
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(!output_text(&output).contains("secret-robot-token"));
}

/// Renders the chart with `helm template` and the extra `args`; returns every document.
fn render(args: &[&str]) -> Vec<serde_yaml_ng::Value> {
    let chart = test_support::workspace_root().join("deploy/helm/task-proxy");
    let output = Command::new(test_support::tool("helm"))
        .args([
            "template",
            "tp",
            &chart.to_string_lossy(),
            "--namespace",
            "yt",
        ])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm template {args:?}: {}",
        output_text(&output)
    );
    let rendered = String::from_utf8_lossy(&output.stdout).into_owned();
    serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| {
            serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("a rendered document is not YAML: {e}\n{rendered}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

use serde::Deserialize;

fn kind_of(doc: &serde_yaml_ng::Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// Checks the Deployment's single container and runs its args through `--check-config`.
fn check_deployment(docs: &[serde_yaml_ng::Value], token_file: &Path) -> Vec<String> {
    let output = run_deployment(docs, token_file, &[]);
    let args = container_args(docs);
    assert!(
        output.status.success(),
        "the chart's args {args:?} are refused: {}",
        output_text(&output)
    );
    args
}

/// The Secrets the cluster would hold besides the rendered ones: name, then (key, bytes).
type Secrets<'a> = [(&'a str, Vec<(&'a str, Vec<u8>)>)];

/// The Deployment's single container's args, as rendered.
fn container_args(docs: &[serde_yaml_ng::Value]) -> Vec<String> {
    deployment_of(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn deployment_of(docs: &[serde_yaml_ng::Value]) -> &serde_yaml_ng::Value {
    docs.iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("a Deployment")
}

/// Does what the kubelet would for the container's Secret volumes (rendered Secrets, or
/// `secrets`; the robot's token is `token_file`): writes each one's keys (its `items` when
/// given) to a directory under `token_file`'s, and points the args at the files there.
fn mount_secrets(
    docs: &[serde_yaml_ng::Value],
    token_file: &Path,
    secrets: &Secrets<'_>,
    args: Vec<String>,
) -> Vec<String> {
    use base64::Engine;
    let pod = &deployment_of(docs)["spec"]["template"]["spec"];
    let mut args = args;
    for mount in pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
    {
        let name = mount["name"].as_str().expect("mount name");
        let mount_path = mount["mountPath"].as_str().expect("mountPath");
        let volume = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let Some(secret_name) = volume["secret"]["secretName"].as_str() else {
            continue;
        };
        let data: Vec<(String, Vec<u8>)> = match docs
            .iter()
            .find(|d| kind_of(d) == "Secret" && d["metadata"]["name"] == secret_name)
        {
            Some(secret) => secret["data"]
                .as_mapping()
                .expect("Secret data")
                .iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().expect("base64 string"))
                        .expect("Secret data is base64");
                    (k.as_str().expect("key").to_string(), bytes)
                })
                .collect(),
            None => match secrets.iter().find(|(n, _)| *n == secret_name) {
                Some((_, data)) => data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                // The robot's token, handled by the caller.
                None => continue,
            },
        };
        assert_eq!(mount["readOnly"], true, "{mount:?}");
        assert!(mount["subPath"].is_null(), "a subPath is never updated");
        let dir = token_file.with_file_name(name);
        std::fs::create_dir_all(&dir).expect("mount dir");
        let items = volume["secret"]["items"].as_sequence();
        for (key, bytes) in &data {
            let path = match items {
                None => Some(key.as_str()),
                Some(items) => items
                    .iter()
                    .find(|i| i["key"] == key.as_str())
                    .and_then(|i| i["path"].as_str()),
            };
            if let Some(path) = path {
                std::fs::write(dir.join(path), bytes).expect("write a Secret key");
            }
        }
        let prefix = format!("{mount_path}/");
        args = args
            .into_iter()
            .map(|a| match a.split_once(&prefix) {
                Some((flag, rest)) => format!("{flag}{}/{rest}", dir.display()),
                None => a,
            })
            .collect();
    }
    args
}

/// Checks the Deployment's single container and runs its args through `--check-config`, with
/// its Secret volumes mounted from the rendered Secrets and `secrets`.
fn run_deployment(
    docs: &[serde_yaml_ng::Value],
    token_file: &Path,
    secrets: &Secrets<'_>,
) -> Output {
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let container = &containers[0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let ports: Vec<&str> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        ports.contains(&"admin") && ports.contains(&"http"),
        "{ports:?}"
    );
    let args: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .map(|a| match a.strip_prefix("--yt-token-path=") {
            Some(_) => format!("--yt-token-path={}", token_file.display()),
            None => a,
        })
        .map(|a| match a.strip_prefix("-logging-config=") {
            // The rendered ConfigMap's file, where the pod would see it.
            Some(_) => {
                let config = docs
                    .iter()
                    .find(|d| kind_of(d) == "ConfigMap" && d["data"]["logging.yaml"].is_string())
                    .expect("a ConfigMap with logging.yaml");
                let path = token_file.with_file_name("logging.yaml");
                std::fs::write(&path, config["data"]["logging.yaml"].as_str().unwrap())
                    .expect("write logging.yaml");
                format!("-logging-config={}", path.display())
            }
            None => a,
        })
        .collect();
    let args = mount_secrets(docs, token_file, secrets, args);
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--check-config");
    task_proxy(&all)
}

/// The public Service (named after the release) publishes only the proxy ports; the admin port
/// is on a separate ClusterIP Service `<release>-admin` selecting the same pods, and any
/// ServiceMonitor selects that Service (and only it) and scrapes its port. Returns the public
/// Service.
fn check_services(docs: &[serde_yaml_ng::Value]) -> &serde_yaml_ng::Value {
    let services: Vec<&serde_yaml_ng::Value> =
        docs.iter().filter(|d| kind_of(d) == "Service").collect();
    let named = |name: &str| {
        services
            .iter()
            .copied()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Service {name} in {services:?}"))
    };
    let public = named("tp");
    let admin = named("tp-admin");
    let ports = |service: &serde_yaml_ng::Value| -> Vec<(String, i64, String)> {
        service["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["port"].as_i64().unwrap_or_default(),
                    p["targetPort"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    for (name, port, target) in ports(public) {
        assert!(
            name != "metrics" && port != 9901 && target != "admin" && target != "9901",
            "the public Service publishes the admin port: {:?}",
            ports(public)
        );
        assert!(["http", "https"].contains(&target.as_str()), "{target}");
    }
    assert_eq!(admin["spec"]["type"], "ClusterIP");
    assert_eq!(admin["spec"]["selector"], public["spec"]["selector"]);
    assert_eq!(
        ports(admin),
        vec![("metrics".to_string(), 9901, "admin".to_string())]
    );
    for monitor in docs.iter().filter(|d| kind_of(d) == "ServiceMonitor") {
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("matchLabels");
        let matches = |service: &serde_yaml_ng::Value| {
            selector
                .iter()
                .all(|(k, v)| &service["metadata"]["labels"][k] == v)
        };
        assert!(matches(admin), "the ServiceMonitor misses {admin:?}");
        assert!(
            !matches(public),
            "the ServiceMonitor selects the public Service"
        );
        let port = monitor["spec"]["endpoints"][0]["port"].as_str();
        assert!(
            ports(admin)
                .iter()
                .any(|(name, _, _)| Some(name.as_str()) == port),
            "{port:?}"
        );
    }
    public
}

#[test]
fn helm_chart_renders_args_the_binary_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "robot-token\n").expect("token");

    // Defaults.
    let docs = render(&[]);
    let args = check_deployment(&docs, &token_file);
    assert!(args.contains(&"--namespace=yt".to_string()), "{args:?}");
    assert!(!docs.iter().any(|d| kind_of(d) == "ServiceMonitor"));
    let service = check_services(&docs);
    assert_eq!(service["spec"]["type"], "NodePort");

    // TLS on: the certificate is mounted and served.
    let docs = render(&["--set", "tls.enabled=true"]);
    let args = check_deployment(&docs, &token_file);
    assert!(
        args.iter().any(|a| a == "--tls-cert=/etc/certs/tls.crt"),
        "{args:?}"
    );
    let service = check_services(&docs);
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        service["spec"]["ports"].as_sequence().map(Vec::len),
        Some(2)
    );

    // TLS and monitoring on: the LoadBalancer still has only the proxy ports, the
    // ServiceMonitor scrapes the admin Service.
    let docs = render(&[
        "--set",
        "tls.enabled=true",
        "--set",
        "monitoring.enabled=true",
    ]);
    check_deployment(&docs, &token_file);
    let service = check_services(&docs);
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert!(docs.iter().any(|d| kind_of(d) == "ServiceMonitor"));

    // Monitoring on: a ServiceMonitor scraping the admin Service's metrics port.
    let docs = render(&["--set", "monitoring.enabled=true"]);
    check_deployment(&docs, &token_file);
    check_services(&docs);
    let monitor = docs
        .iter()
        .find(|d| kind_of(d) == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // Custom values, with the original chart's names.
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
replicas: 3
baseDomain: tp.prod.example.net
ytProxy: http://yt.example.net
dirPath: //home/task_proxies
tokenSecretRef: my-robot-token
discoveryPeriodSeconds: 10
auth: {enabled: false, cookieName: MyCookie, loginUrl: "https://yt.example.net/", lookupRatePerClient: 5, lookupRate: 0}
workerThreads: 4
maxConnections: 2000
upstreamMaxIdlePerJob: 256
underscoresInHeaders: true
stickySessionsDefault: true
upstreamMaxConnectionsPerJob: 64
upstreamQueueLength: 32
upstreamQueueTimeout: 3s
maxConcurrentStreams: 100
logFormat: text
logLevel: debug
resources: {requests: {cpu: "2", memory: 512Mi}, limits: {memory: 1Gi}}
nodeSelector: {role: edge}
affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}
"#,
    )
    .expect("values");
    let docs = render(&["-f", &values.to_string_lossy()]);
    let args = check_deployment(&docs, &token_file);
    check_services(&docs);
    for expected in [
        "--yt-proxy=http://yt.example.net",
        "--base-domain=tp.prod.example.net",
        "--dir-path=//home/task_proxies",
        "--discovery-period-seconds=10",
        "--auth-enabled=false",
        "--auth-cookie-name=MyCookie",
        "--auth-lookup-rate-per-client=5",
        "--auth-lookup-burst-per-client=40",
        "--auth-lookup-rate=0",
        "--worker-threads=4",
        "--max-connections=2000",
        "--upstream-max-idle-per-job=256",
        "--underscores-in-headers=true",
        "--sticky-sessions-default=true",
        "--upstream-max-connections-per-job=64",
        "--upstream-queue-length=32",
        "--upstream-queue-timeout=3s",
        "--max-concurrent-streams=100",
        "--log-format=text",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} not in {args:?}"
        );
    }
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["role"], "edge");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "my-robot-token");
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "1Gi");
}

/// A values file with the original chart's value names (its newest values.yaml, our own copy of
/// the names): timeouts, auth cache, logging and alerts render to flags and a logging config
/// the binary accepts, and to alert rules on our metric names.
#[test]
fn helm_chart_takes_the_original_charts_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "robot-token\n").expect("token");
    let values = dir.path().join("original.yaml");
    std::fs::write(
        &values,
        r#"
replicas: 1
baseDomain: my-cluster.ytsaurus.example.net
tokenSecretRef: task-proxy-token
ytProxy: ""
dirPath: //sys/task_proxies
discoveryPeriodSeconds: 60
timeouts:
  connectTimeoutSeconds: 2
  routeTimeoutSeconds: 15
  streamIdleTimeoutSeconds: 300
auth:
  enabled: true
  cookieName: YTCypressCookie
  cache:
    enabled: false
    ttlSeconds: 30
    capacity: 1000
    maxConcurrentBackendRequests: 2
    refreshBeforeSeconds: 5
tls:
  enabled: false
  certSecretRef: yt-domain-cert
persistence:
  storageClass: null
  size: 5Gi
  accessModes: [ReadWriteOnce]
podSecurityContext:
  fsGroup: 101
proxy:
  logging:
    writerType: stderr
    minLogLevel: info
    rotationPolicy: null
  accessLog:
    enabled: true
    writerType: file
    rotationPolicy: null
  image:
    repository: envoyproxy/envoy
    tag: v1.36-latest
  resources: {}
server:
  logging:
    writerType: file
    minLogLevel: debug
    rotationPolicy:
      maxSegmentSize: 8Mi
      maxSegmentCountToKeep: 3
  image:
    repository: ghcr.io/ytsaurus/task-proxy
    tag: ""
  resources: {}
nodeSelector: {}
affinity: {}
monitoring:
  enabled: true
  engine: prometheus
  alerts:
    enabled: true
    authInfrastructureFailuresPerMinuteThreshold: 11
    authContextDeadlineExceededPerMinuteThreshold: 12
    authGrpcUnavailablePerMinuteThreshold: 13
    authConnectionTimeoutPerMinuteThreshold: 14
    discoveryInfrastructureFailuresPerMinuteThreshold: 15
    discoveryContextDeadlineExceededPerMinuteThreshold: 16
    discoveryGrpcUnavailablePerMinuteThreshold: 17
    discoveryConnectionTimeoutPerMinuteThreshold: 18
"#,
    )
    .expect("values");
    let docs = render(&["-f", &values.to_string_lossy()]);
    let args = check_deployment(&docs, &token_file);
    for expected in [
        "-connect-timeout-seconds=2",
        "-route-timeout-seconds=15",
        "-stream-idle-timeout-seconds=300",
        "-auth-cache-enabled=false",
        "-auth-cache-ttl-seconds=30",
        "-auth-cache-capacity=1000",
        "-auth-cache-max-concurrent-backend-requests=2",
        "-auth-cache-refresh-before-seconds=5",
        "--discovery-period-seconds=60",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} not in {args:?}"
        );
    }
    let logging = docs
        .iter()
        .find(|d| kind_of(d) == "ConfigMap")
        .expect("logging ConfigMap");
    let config = task_proxy::logging::LoggingConfig::parse(
        logging["data"]["logging.yaml"]
            .as_str()
            .expect("logging.yaml"),
    )
    .expect("the rendered logging config is valid");
    use task_proxy::logging::{ByteQuantity, WriterType};
    assert_eq!(config.server.writer_type, WriterType::File);
    let server = config.server.rotation_policy.expect("custom policy");
    assert_eq!(server.max_segment_size, ByteQuantity(8 << 20));
    assert_eq!(server.max_segment_count_to_keep, 3);
    let access = config
        .access_log
        .rotation_policy
        .expect("the original's default policy");
    assert_eq!(access.rotation_period_milliseconds, 3_600_000);
    assert_eq!(access.max_segment_size, ByteQuantity(100 << 20));
    assert_eq!(access.max_total_size_to_keep, ByteQuantity(1 << 30));
    assert_eq!(access.max_segment_count_to_keep, 10);
    assert_eq!(config.proxy.writer_type, WriterType::Stderr);
    let deployment = docs.iter().find(|d| kind_of(d) == "Deployment").unwrap();
    let mounts = &deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/log/task-proxy"),
        "{mounts:?}"
    );

    // Alerts: the original's names and thresholds, on metrics this proxy exports.
    let rule = docs
        .iter()
        .find(|d| kind_of(d) == "PrometheusRule")
        .expect("PrometheusRule");
    let sources = [
        include_str!("../src/auth/metrics.rs"),
        include_str!("../src/discovery/metrics.rs"),
    ]
    .concat();
    let mut names = Vec::new();
    for r in rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
    {
        let name = r["alert"].as_str().expect("alert").to_string();
        let expr = r["expr"].as_str().expect("expr");
        let (query, threshold) = expr.rsplit_once(" > ").expect("a threshold");
        assert!(threshold.trim().parse::<u32>().is_ok(), "{expr}");
        let mut depth = 0i32;
        for c in query.chars() {
            depth += match c {
                '(' | '{' | '[' => 1,
                ')' | '}' | ']' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "{expr}");
        }
        assert_eq!(depth, 0, "unbalanced: {expr}");
        assert!(
            !expr.contains("yt_task_proxy_"),
            "the original's metric names: {expr}"
        );
        for metric in query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("task_proxy_"))
        {
            let base = ["_total", "_count", "_bucket"]
                .iter()
                .fold(metric, |m, suffix| m.strip_suffix(suffix).unwrap_or(m));
            let registered = sources.contains(&format!("\"{base}\""))
                || base
                    .strip_prefix("task_proxy_discovery_")
                    .is_some_and(|short| sources.contains(&format!("\"{short}\"")));
            assert!(registered, "{metric} is not a metric of ours ({expr})");
        }
        names.push((name, threshold.trim().to_string()));
    }
    for (alert, threshold) in [
        ("TaskProxyAuthorizationInfrastructureFailures", "11"),
        ("TaskProxyAuthorizationContextDeadlineExceeded", "12"),
        ("TaskProxyAuthorizationGrpcUnavailable", "13"),
        ("TaskProxyAuthorizationConnectionTimeout", "14"),
        ("TaskProxyDiscoveryInfrastructureFailures", "15"),
        ("TaskProxyDiscoveryContextDeadlineExceeded", "16"),
        ("TaskProxyDiscoveryGrpcUnavailable", "17"),
        ("TaskProxyDiscoveryConnectionTimeout", "18"),
    ] {
        assert!(
            names.contains(&(alert.to_string(), threshold.to_string())),
            "{alert} > {threshold} not in {names:?}"
        );
    }

    // VictoriaMetrics: the same rules as a VMRule; our defaults render no original flags.
    let docs = render(&[
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.engine=victoriametrics",
    ]);
    assert!(docs.iter().any(|d| kind_of(d) == "VMRule"));
    let args = check_deployment(&docs, &token_file);
    assert!(
        !args.iter().any(|a| a.starts_with("-auth-cache")
            || a.starts_with("-route-timeout")
            || a.starts_with("-logging-config")),
        "{args:?}"
    );
}

/// The volume of the pod named `name`, and the container's mount of it.
fn volume_and_mount<'a>(
    docs: &'a [serde_yaml_ng::Value],
    name: &str,
) -> Option<(&'a serde_yaml_ng::Value, &'a serde_yaml_ng::Value)> {
    let pod = &deployment_of(docs)["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()?
        .iter()
        .find(|v| v["name"] == name)?;
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| m["name"] == name)?;
    Some((volume, mount))
}

fn p256_pem() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("P-256 key")
        .serialize_pem()
        .into_bytes()
}

/// The replicas share the identity signing key and the portal key through a Secret: by
/// default one the chart makes (with Helm's own ECDSA key, which the binary must read), or the
/// operator's; without either, 2 replicas are refused.
#[test]
fn helm_chart_shares_the_keys_through_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "robot-token\n").expect("token");
    let flags = [
        "--identity-headers=true",
        "--identity-key-file=/etc/task-proxy-keys/identity/current.pem",
        "--identity-previous-key-file=/etc/task-proxy-keys/identity/previous.pem",
        "--portal-key-file=/etc/task-proxy-keys/portal/sessionKey",
    ];

    // Defaults: the chart's Secret <release>-keys, both volumes from it, the flags, and the
    // binary accepts the key Helm generated (SEC1 PEM) and the session key.
    let docs = render(&[]);
    let secret = docs
        .iter()
        .find(|d| kind_of(d) == "Secret" && d["metadata"]["name"] == "tp-keys")
        .expect("the chart's key Secret");
    use base64::Engine;
    let decode = |key: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    let pem = String::from_utf8(decode("current.pem")).expect("PEM text");
    assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{pem}");
    assert!(decode("sessionKey").len() >= 32);
    assert!(secret["data"]["previous.pem"].is_null());
    let args = check_deployment(&docs, &token_file);
    for flag in flags {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    for volume in ["identity-keys", "portal-key"] {
        let (volume, mount) = volume_and_mount(&docs, volume).expect("the key volume");
        assert_eq!(volume["secret"]["secretName"], "tp-keys");
        assert_eq!(mount["readOnly"], true);
    }

    // Check-config reads the keys: a key of another curve in the Secret is refused.
    let mut bad = docs.clone();
    for doc in bad.iter_mut().filter(|d| kind_of(d) == "Secret") {
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .expect("P-384 key")
            .serialize_pem();
        doc["data"]["current.pem"] = base64::engine::general_purpose::STANDARD
            .encode(p384)
            .into();
    }
    let refused = run_deployment(&bad, &token_file, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("not a P-256 ECDSA key"),
        "{}",
        output_text(&refused)
    );

    // The operator's Secrets, with a rotation's previous key: nothing generated.
    let docs = render(&[
        "--set",
        "identity.existingSecret=tp-identity",
        "--set",
        "portal.existingSecret=tp-portal",
    ]);
    assert!(!docs.iter().any(|d| kind_of(d) == "Secret"));
    let identity = (
        "tp-identity",
        vec![("current.pem", p256_pem()), ("previous.pem", p256_pem())],
    );
    let session_key = ("sessionKey", b"0123456789abcdef0123456789abcdef\n".to_vec());
    let output = run_deployment(
        &docs,
        &token_file,
        &[identity.clone(), ("tp-portal", vec![session_key])],
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let args = container_args(&docs);
    for flag in flags {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let (volume, _) = volume_and_mount(&docs, "identity-keys").expect("identity volume");
    assert_eq!(volume["secret"]["secretName"], "tp-identity");
    let (volume, _) = volume_and_mount(&docs, "portal-key").expect("portal volume");
    assert_eq!(volume["secret"]["secretName"], "tp-portal");
    // A session key too short is refused with the reason.
    let output = run_deployment(
        &docs,
        &token_file,
        &[
            identity,
            ("tp-portal", vec![("sessionKey", b"short".to_vec())]),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    assert!(
        output_text(&output).contains("at least 32 bytes"),
        "{}",
        output_text(&output)
    );

    // Identity off: no signing key mounted, the portal key still is.
    let docs = render(&["--set", "identity.enabled=false"]);
    let args = check_deployment(&docs, &token_file);
    assert!(args.contains(&"--identity-headers=false".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--identity-key-file")));
    assert!(volume_and_mount(&docs, "identity-keys").is_none());
    assert!(args.contains(&flags[3].to_string()), "{args:?}");

    // No generated Secret and none given: refused with 2 replicas, per-process keys with 1.
    let chart = test_support::workspace_root().join("deploy/helm/task-proxy");
    let output = Command::new(test_support::tool("helm"))
        .args(["template", "tp", &chart.to_string_lossy()])
        .args(["--set", "keys.generate=false"])
        .output()
        .expect("run helm");
    assert!(!output.status.success());
    assert!(
        output_text(&output).contains("identity.existingSecret is required"),
        "{}",
        output_text(&output)
    );
    let docs = render(&["--set", "keys.generate=false", "--set", "replicas=1"]);
    let args = check_deployment(&docs, &token_file);
    assert!(!args.iter().any(|a| a.contains("key-file")), "{args:?}");
    assert!(!docs.iter().any(|d| kind_of(d) == "Secret"));
}
