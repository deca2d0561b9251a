//! One listed operation, and which kind of service-exposing operation it is (see docs/discovery.md): an
//! annotated vanilla operation, a SPYT direct-submit driver, a SPYT standalone cluster, or none.
//! Pure functions of the `list_operations` item; nothing here talks to the cluster.

use super::spyt::{self, SpytDirect, SpytStandalone};
use super::vanilla::{self, TaskProxyAnnotation};
use yson::Node;

/// The attributes a pass asks `list_operations` for.
pub const LIST_ATTRIBUTES: &[&str] = &[
    "id",
    "brief_spec",
    "runtime_parameters",
    "authenticated_user",
    "start_time",
];

/// What discovery needs of a listed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationInfo {
    pub id: String,
    pub start_time: Option<String>,
    pub authenticated_user: Option<String>,
    /// `brief_spec.title`, when it is a string.
    pub title: Option<String>,
    /// `brief_spec.alias` without its leading `*` (the scheduler requires one), when it is a
    /// string that starts with `*`.
    pub alias: Option<String>,
    /// `runtime_parameters.annotations` (or, failing that, `brief_spec.annotations`).
    pub annotations: Option<Node>,
}

impl OperationInfo {
    /// Reads a `list_operations` item. Fails only without a string `id`.
    pub fn from_node(node: &Node) -> Result<OperationInfo, String> {
        let id = node
            .get("id")
            .and_then(Node::as_str)
            .filter(|id| !id.is_empty())
            .ok_or("the operation has no string \"id\"")?
            .to_string();
        let text = |path: &str| {
            node.pointer(path)
                .and_then(Node::as_str)
                .map(str::to_string)
        };
        let annotations = node
            .pointer("runtime_parameters/annotations")
            .or_else(|| node.pointer("brief_spec/annotations"))
            .filter(|a| !a.is_entity())
            .cloned();
        Ok(OperationInfo {
            start_time: text("start_time"),
            authenticated_user: text("authenticated_user"),
            title: text("brief_spec/title"),
            alias: text("brief_spec/alias")
                .and_then(|a| a.strip_prefix('*').map(str::to_string))
                .filter(|a| !a.is_empty()),
            annotations,
            id,
        })
    }
}

/// How an operation exposes services.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationKind {
    /// `annotations.task_proxy.enabled == %true`.
    Vanilla(TaskProxyAnnotation),
    /// A SPYT direct-submit driver (`brief_spec.title` starts with `Spark driver for`).
    SpytDirect(SpytDirect),
    /// A SPYT standalone cluster (`annotations.is_spark == %true`).
    SpytStandalone(SpytStandalone),
    /// A SPYT standalone cluster whose discovery path is in its spec's `description` (where
    /// SPYT writes it), not in its annotations: the spec must be read.
    SpytStandaloneInSpec,
}

/// The outcome of classifying one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// Exposes nothing (the common case).
    Ignored,
    /// Exposes services as `kind`; `warnings` name annotation entries that were skipped.
    Exposing {
        kind: OperationKind,
        warnings: Vec<String>,
    },
    /// Claims to expose services but is malformed; skipped with this reason.
    Malformed(String),
}

/// Decides what kind of operation `op` is. The task proxy annotation wins; then a SPYT driver
/// title; then the SPYT cluster flag.
pub fn classify(op: &OperationInfo) -> Classified {
    let annotations = op.annotations.as_ref();
    match vanilla::parse_annotation(annotations) {
        vanilla::AnnotationOutcome::Enabled {
            annotation,
            warnings,
        } => {
            return Classified::Exposing {
                kind: OperationKind::Vanilla(annotation),
                warnings,
            }
        }
        vanilla::AnnotationOutcome::Malformed(reason) => return Classified::Malformed(reason),
        vanilla::AnnotationOutcome::Absent => {}
    }
    if op
        .title
        .as_deref()
        .is_some_and(|t| t.starts_with(spyt::DRIVER_TITLE_PREFIX))
    {
        return match spyt::parse_direct(annotations) {
            Ok(direct) => Classified::Exposing {
                kind: OperationKind::SpytDirect(direct),
                warnings: Vec::new(),
            },
            Err(reason) => Classified::Malformed(reason),
        };
    }
    if spyt::description_in_spec(annotations) {
        return Classified::Exposing {
            kind: OperationKind::SpytStandaloneInSpec,
            warnings: Vec::new(),
        };
    }
    match spyt::parse_standalone(annotations) {
        Ok(Some(standalone)) => Classified::Exposing {
            kind: OperationKind::SpytStandalone(standalone),
            warnings: Vec::new(),
        },
        Ok(None) => Classified::Ignored,
        Err(reason) => Classified::Malformed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> OperationInfo {
        OperationInfo::from_node(&yson::parse(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn reads_listed_operations() {
        let info = op(
            r#"{"id"="o1";"start_time"="2027-01-01T00:00:00.000000Z";"authenticated_user"="alice";
            "brief_spec"={"title"="t";"annotations"={"x"=1;};};"runtime_parameters"={"annotations"={"y"=2;};};}"#,
        );
        assert_eq!(info.id, "o1");
        assert_eq!(info.title.as_deref(), Some("t"));
        assert_eq!(info.alias, None);
        let aliased = op(r#"{"id"="o3";"brief_spec"={"alias"="*my_nb";};}"#);
        assert_eq!(aliased.alias.as_deref(), Some("my_nb"));
        let bare = op(r#"{"id"="o4";"brief_spec"={"alias"="my_nb";};}"#);
        assert_eq!(
            bare.alias, None,
            "an alias without '*' is not one the scheduler accepts"
        );
        assert!(
            info.annotations.as_ref().unwrap().get("y").is_some(),
            "runtime parameters win"
        );
        let info =
            op(r#"{"id"="o2";"brief_spec"={"annotations"={"x"=1;};};"runtime_parameters"={};}"#);
        assert!(info.annotations.unwrap().get("x").is_some());
        assert!(OperationInfo::from_node(&yson::parse(b"{\"id\"=1}").unwrap()).is_err());
        assert!(OperationInfo::from_node(&yson::parse(b"[]").unwrap()).is_err());
    }

    #[test]
    fn kinds() {
        let vanilla = op(
            r#"{"id"="a";"runtime_parameters"={"annotations"={"task_proxy"={"enabled"=%true;};};};}"#,
        );
        assert!(matches!(
            classify(&vanilla),
            Classified::Exposing {
                kind: OperationKind::Vanilla(_),
                ..
            }
        ));
        let plain = op(r#"{"id"="b";"brief_spec"={"title"="my job";};"runtime_parameters"={};}"#);
        assert_eq!(classify(&plain), Classified::Ignored);
        let driver = op(
            r#"{"id"="c";"brief_spec"={"title"="Spark driver for app-1";};
            "runtime_parameters"={"annotations"={"description"={"Web UI"="http://10.0.0.5:4040";};};};}"#,
        );
        assert!(matches!(
            classify(&driver),
            Classified::Exposing {
                kind: OperationKind::SpytDirect(_),
                ..
            }
        ));
        let broken_driver = op(
            r#"{"id"="d";"brief_spec"={"title"="Spark driver for x";};"runtime_parameters"={};}"#,
        );
        assert!(matches!(classify(&broken_driver), Classified::Malformed(_)));
        let cluster = op(
            r#"{"id"="e";"runtime_parameters"={"annotations"={"is_spark"=%true;
            "description"={"Spark over YT"={"discovery_path"="//home/spark/c1";};};};};}"#,
        );
        assert!(matches!(
            classify(&cluster),
            Classified::Exposing {
                kind: OperationKind::SpytStandalone(_),
                ..
            }
        ));
        let disabled = op(
            r#"{"id"="f";"runtime_parameters"={"annotations"={"task_proxy"={"enabled"=%false;};};};}"#,
        );
        assert_eq!(classify(&disabled), Classified::Ignored);
    }
}
