//! SPYT operations (see docs/discovery.md): a direct-submit driver exposes its Web UI (task `driver`,
//! service `ui`); a standalone cluster lists its endpoints as `host:port` children of Cypress
//! nodes under its discovery path (master UI and REST, and the optional history server).
//!
//! Pure functions: the pass reads the Cypress listings (batched) and hands them in.

use crate::routing::{Endpoint, Protocol, ServiceSpec};
use yson::Node;

/// `brief_spec.title` of a SPYT direct-submit driver starts with this.
pub const DRIVER_TITLE_PREFIX: &str = "Spark driver for";

/// A SPYT driver's Web UI endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpytDirect {
    pub web_ui: Endpoint,
}

/// A SPYT standalone cluster: where its endpoints are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpytStandalone {
    pub discovery_path: String,
}

/// One directory of a standalone cluster's discovery path and the service it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryDir {
    /// Under `<discovery_path>/discovery/`.
    pub dir: &'static str,
    pub task: &'static str,
    pub service: &'static str,
    /// Whether a missing directory is normal.
    pub optional: bool,
}

/// What a standalone cluster exposes.
pub const STANDALONE_DIRS: &[DiscoveryDir] = &[
    DiscoveryDir {
        dir: "webui",
        task: "master",
        service: "ui",
        optional: false,
    },
    DiscoveryDir {
        dir: "rest",
        task: "master",
        service: "rest",
        optional: false,
    },
    DiscoveryDir {
        dir: "shs",
        task: "history",
        service: "ui",
        optional: true,
    },
];

/// Reads `annotations.description["Web UI"]` of a driver (`http://host:port`).
pub fn parse_direct(annotations: Option<&Node>) -> Result<SpytDirect, String> {
    let url = annotations
        .and_then(|a| a.get("description"))
        .and_then(|d| d.get("Web UI"))
        .ok_or("a SPYT driver without annotations.description[\"Web UI\"]")?
        .as_str()
        .ok_or("annotations.description[\"Web UI\"] is not a string")?;
    Ok(SpytDirect {
        web_ui: endpoint_from_url(url)?,
    })
}

/// The `host:port` of an `http://host:port[/path]` URL.
pub fn endpoint_from_url(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .trim()
        .strip_prefix("http://")
        .or_else(|| url.trim().strip_prefix("https://"))
        .ok_or_else(|| format!("Web UI {url:?} is not an http:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .parse::<Endpoint>()
        .map_err(|e| format!("Web UI {url:?}: {e}"))
}

/// Reads `annotations.is_spark` and the discovery path of a standalone cluster. `Ok(None)`
/// when the operation is not one.
pub fn parse_standalone(annotations: Option<&Node>) -> Result<Option<SpytStandalone>, String> {
    let Some(is_spark) = annotations.and_then(|a| a.get("is_spark")) else {
        return Ok(None);
    };
    match is_spark.as_bool() {
        Some(true) => {}
        Some(false) => return Ok(None),
        None => {
            return Err(format!(
                "annotations.is_spark is a {}, not a boolean",
                is_spark.type_name()
            ))
        }
    }
    let spark = annotations
        .and_then(|a| a.get("description"))
        .and_then(|d| d.get("Spark over YT"))
        .ok_or(
            "a SPYT cluster without annotations.description[\"Spark over YT\"].discovery_path",
        )?;
    standalone_from(spark, "annotations.description").map(Some)
}

/// Whether the operation is a SPYT cluster (`annotations.is_spark == %true`) whose annotations
/// carry no `description["Spark over YT"]`: SPYT writes that into the spec's top-level
/// `description`, which `list_operations` does not return; the spec must be read.
pub fn description_in_spec(annotations: Option<&Node>) -> bool {
    annotations
        .and_then(|a| a.get("is_spark"))
        .and_then(Node::as_bool)
        == Some(true)
        && annotations
            .and_then(|a| a.get("description"))
            .and_then(|d| d.get("Spark over YT"))
            .is_none()
}

/// The standalone cluster in a spec's `description["Spark over YT"]`.
pub fn parse_spec_description(spec: &Node) -> Result<SpytStandalone, String> {
    let spark = spec
        .get("description")
        .and_then(|d| d.get("Spark over YT"))
        .ok_or(
            "a SPYT cluster without description[\"Spark over YT\"] in its annotations or spec",
        )?;
    standalone_from(spark, "spec.description")
}

/// The discovery path in a `"Spark over YT"` map (found under `place`).
fn standalone_from(spark: &Node, place: &str) -> Result<SpytStandalone, String> {
    let path = spark
        .get("discovery_path")
        .ok_or_else(|| format!("{place}[\"Spark over YT\"] has no discovery_path"))?
        .as_str()
        .ok_or("the SPYT discovery_path is not a string")?
        .trim_end_matches('/');
    if !path.starts_with("//") {
        return Err(format!(
            "the SPYT discovery_path {path:?} is not a Cypress path"
        ));
    }
    Ok(SpytStandalone {
        discovery_path: path.to_string(),
    })
}

/// The service of a driver.
pub fn direct_service(op_id: &str, start_time: Option<&str>, direct: &SpytDirect) -> ServiceSpec {
    ServiceSpec {
        operation_id: op_id.to_string(),
        task_name: "driver".into(),
        service: "ui".into(),
        protocol: Protocol::Http,
        endpoints: vec![direct.web_ui.clone()],
        operation_start_time: start_time.map(str::to_string),
        timeouts: Default::default(),
        sticky: None,
    }
}

/// The path whose children list `dir`'s endpoints.
pub fn listing_path(standalone: &SpytStandalone, dir: &DiscoveryDir) -> String {
    format!("{}/discovery/{}", standalone.discovery_path, dir.dir)
}

/// The service of one discovery directory from its children (`host:port` names). Names that
/// are not endpoints are reported in the warnings and skipped.
pub fn standalone_service(
    op_id: &str,
    start_time: Option<&str>,
    dir: &DiscoveryDir,
    children: &[String],
) -> (ServiceSpec, Vec<String>) {
    let mut warnings = Vec::new();
    let endpoints = children
        .iter()
        .filter_map(|name| match name.parse::<Endpoint>() {
            Ok(e) => Some(e),
            Err(e) => {
                warnings.push(format!("discovery/{}: {e}: skipped", dir.dir));
                None
            }
        })
        .collect();
    let spec = ServiceSpec {
        operation_id: op_id.to_string(),
        task_name: dir.task.to_string(),
        service: dir.service.to_string(),
        protocol: Protocol::Http,
        endpoints,
        operation_start_time: start_time.map(str::to_string),
        timeouts: Default::default(),
        sticky: None,
    };
    (spec, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(text: &str) -> Node {
        yson::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn direct_submit() {
        let d = parse_direct(Some(&ann(
            r#"{description={"Web UI"="http://node-3.test:27001"}}"#,
        )))
        .unwrap();
        assert_eq!(d.web_ui, Endpoint::new("node-3.test", 27001));
        let d = parse_direct(Some(&ann(
            r#"{description={"Web UI"="https://10.1.2.3:4040/jobs/"}}"#,
        )))
        .unwrap();
        assert_eq!(d.web_ui, Endpoint::new("10.1.2.3", 4040));
        for bad in [
            "{}",
            r#"{description="x"}"#,
            r#"{description={"Web UI"=1}}"#,
            r#"{description={"Web UI"="node:1"}}"#,
            r#"{description={"Web UI"="http://node"}}"#,
            r#"{description={"Web UI"="http://node:0"}}"#,
        ] {
            assert!(parse_direct(Some(&ann(bad))).is_err(), "{bad}");
        }
        assert!(parse_direct(None).is_err());
        let spec = direct_service(
            "op",
            None,
            &parse_direct(Some(&ann(r#"{description={"Web UI"="http://h:1"}}"#))).unwrap(),
        );
        assert_eq!(
            (spec.task_name.as_str(), spec.service.as_str()),
            ("driver", "ui")
        );
    }

    #[test]
    fn standalone() {
        let s = parse_standalone(Some(&ann(
            r#"{is_spark=%true;description={"Spark over YT"={discovery_path="//home/spark/c1/"}}}"#,
        )))
        .unwrap()
        .unwrap();
        assert_eq!(s.discovery_path, "//home/spark/c1");
        assert_eq!(
            listing_path(&s, &STANDALONE_DIRS[0]),
            "//home/spark/c1/discovery/webui"
        );
        assert_eq!(parse_standalone(Some(&ann("{}"))).unwrap(), None);
        assert_eq!(
            parse_standalone(Some(&ann("{is_spark=%false}"))).unwrap(),
            None
        );
        assert_eq!(parse_standalone(None).unwrap(), None);
        for bad in [
            "{is_spark=\"true\"}",
            "{is_spark=%true}",
            r#"{is_spark=%true;description={"Spark over YT"={discovery_path=1}}}"#,
            r#"{is_spark=%true;description={"Spark over YT"={discovery_path="home"}}}"#,
        ] {
            assert!(parse_standalone(Some(&ann(bad))).is_err(), "{bad}");
        }
        // SPYT itself writes the description into the spec, not the annotations.
        assert!(description_in_spec(Some(&ann("{is_spark=%true}"))));
        assert!(!description_in_spec(Some(&ann("{is_spark=%false}"))));
        assert!(!description_in_spec(Some(&ann(
            r#"{is_spark=%true;description={"Spark over YT"={discovery_path="//a"}}}"#
        ))));
        let from_spec = parse_spec_description(&ann(
            r#"{title="spark_alice";description={"Spark over YT"={discovery_path="//home/spark/c2";cluster_version="2.6.0"}}}"#,
        ))
        .unwrap();
        assert_eq!(from_spec.discovery_path, "//home/spark/c2");
        assert!(parse_spec_description(&ann("{title=x}")).is_err());
        assert!(parse_spec_description(&ann(r#"{description={"Spark over YT"={}}}"#)).is_err());
        let (spec, warnings) = standalone_service(
            "op",
            None,
            &STANDALONE_DIRS[2],
            &["127.0.0.1:18080".into(), "garbage".into()],
        );
        assert_eq!(
            (spec.task_name.as_str(), spec.service.as_str()),
            ("history", "ui")
        );
        assert_eq!(spec.endpoints, vec![Endpoint::new("127.0.0.1", 18080)]);
        assert_eq!(warnings.len(), 1);
    }
}
