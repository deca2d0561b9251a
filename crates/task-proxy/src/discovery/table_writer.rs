//! The services table `<dir-path>/services` (see docs/discovery.md): a static table with string columns
//! `domain`, `operation_id`, `task_name`, `service`, `protocol`, one row per routable service,
//! sorted by domain. Created with its schema when missing; rewritten only when the rows change
//! (compared with what was last written, or read back from the table at start).

use crate::routing::RoutingSnapshot;
use yson::{Node, Value};
use yt_client::{Error, YtClient};

/// The columns, in order.
pub const COLUMNS: [&str; 5] = ["domain", "operation_id", "task_name", "service", "protocol"];

/// One row of the services table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRow {
    pub domain: String,
    pub operation_id: String,
    pub task_name: String,
    pub service: String,
    pub protocol: String,
}

impl ServiceRow {
    fn values(&self) -> [&str; 5] {
        [
            &self.domain,
            &self.operation_id,
            &self.task_name,
            &self.service,
            &self.protocol,
        ]
    }

    pub fn to_node(&self) -> Node {
        Node::map(
            COLUMNS
                .iter()
                .zip(self.values())
                .map(|(c, v)| (c.to_string(), Node::string(v)))
                .collect(),
        )
    }

    /// Reads a row; `None` when a column is missing or not a string.
    pub fn from_node(node: &Node) -> Option<ServiceRow> {
        let col = |name: &str| node.get(name).and_then(Node::as_str).map(str::to_string);
        Some(ServiceRow {
            domain: col("domain")?,
            operation_id: col("operation_id")?,
            task_name: col("task_name")?,
            service: col("service")?,
            protocol: col("protocol")?,
        })
    }
}

/// The rows for a snapshot, sorted by domain.
pub fn rows_from_snapshot(snapshot: &RoutingSnapshot) -> Vec<ServiceRow> {
    let mut rows: Vec<ServiceRow> = snapshot
        .routes()
        .iter()
        .map(|route| ServiceRow {
            domain: route.domain.clone(),
            operation_id: route.key.operation_id.clone(),
            task_name: route.key.task_name.clone(),
            service: route.key.service.clone(),
            protocol: route.protocol.as_str().to_string(),
        })
        .collect();
    rows.sort();
    rows
}

/// The table's schema: the five string columns, strict.
pub fn schema() -> Node {
    let columns = COLUMNS
        .iter()
        .map(|name| {
            Node::map(vec![
                ("name".into(), Node::string(*name)),
                ("type".into(), Node::string("string")),
            ])
        })
        .collect();
    Node {
        attributes: vec![
            ("strict".into(), Value::Boolean(true).into()),
            ("unique_keys".into(), Value::Boolean(false).into()),
        ],
        value: Value::List(columns),
    }
}

/// Keeps the services table in step with the routing table.
#[derive(Debug)]
pub struct ServicesTableWriter {
    client: YtClient,
    path: String,
    /// Whether the table was checked (created or read back) since start or the last failure.
    checked: bool,
    /// What the table holds, when known.
    known: Option<Vec<ServiceRow>>,
    /// A write fails unless this transaction lives (the elected leader's).
    fence: Option<String>,
}

impl ServicesTableWriter {
    /// A writer of `<dir_path>/services`.
    pub fn new(client: YtClient, dir_path: &str) -> ServicesTableWriter {
        ServicesTableWriter {
            client,
            path: format!("{}/services", dir_path.trim_end_matches('/')),
            checked: false,
            known: None,
            fence: None,
        }
    }

    /// Writes from now on need `transaction` alive (a deposed leader's write fails). The
    /// table is read again first: another writer may have changed it meanwhile.
    pub fn set_fence(&mut self, transaction: Option<String>) {
        self.fence = transaction;
        self.checked = false;
        self.known = None;
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Makes the table hold `rows` (sorted by domain). Returns whether it wrote.
    pub async fn sync(&mut self, rows: &[ServiceRow]) -> Result<bool, Error> {
        if !self.checked {
            self.known = self.load_or_create().await?;
            self.checked = true;
        }
        if self.known.as_deref() == Some(rows) {
            return Ok(false);
        }
        let nodes: Vec<Node> = rows.iter().map(ServiceRow::to_node).collect();
        let options = yt_client::WriteOptions {
            prerequisite_transaction_ids: self.fence.iter().cloned().collect(),
            ..yt_client::WriteOptions::default()
        };
        match self
            .client
            .write_table_with(&self.path, &nodes, &options)
            .await
        {
            Ok(()) => {
                self.known = Some(rows.to_vec());
                Ok(true)
            }
            Err(e) => {
                // Unknown state (or the table was removed): check again next time.
                self.checked = false;
                self.known = None;
                Err(e)
            }
        }
    }

    /// The rows the table holds (`None` if some are not ours), creating it when missing.
    async fn load_or_create(&self) -> Result<Option<Vec<ServiceRow>>, Error> {
        if self.client.exists(&self.path).await? {
            let rows = self.client.read_table(&self.path).await?;
            let parsed: Vec<ServiceRow> = rows.iter().filter_map(ServiceRow::from_node).collect();
            return Ok((parsed.len() == rows.len()).then_some(parsed));
        }
        let attributes = Node::map(vec![("schema".into(), schema())]);
        self.client
            .create("table", &self.path, Some(attributes), true, true)
            .await?;
        tracing::info!(path = %self.path, "created the services table");
        Ok(Some(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Protocol, ServiceSpec};

    #[test]
    fn rows_are_sorted_and_round_trip() {
        let spec = |op: &str, svc: &str| ServiceSpec {
            operation_id: op.into(),
            task_name: "t".into(),
            service: svc.into(),
            protocol: Protocol::Grpc,
            endpoints: vec![],
            operation_start_time: None,
            timeouts: Default::default(),
            sticky: None,
        };
        let snapshot =
            RoutingSnapshot::build("tp.test", [spec("a", "x"), spec("b", "y"), spec("c", "z")]);
        let rows = rows_from_snapshot(&snapshot);
        assert_eq!(rows.len(), 3);
        assert!(rows.windows(2).all(|w| w[0].domain < w[1].domain));
        assert_eq!(rows[0].protocol, "grpc");
        assert_eq!(
            ServiceRow::from_node(&rows[1].to_node()).as_ref(),
            Some(&rows[1])
        );
        assert!(ServiceRow::from_node(&yson::parse(b"{domain=1}").unwrap()).is_none());
        let schema = yson::to_text(&schema());
        assert!(schema.starts_with(r#"<"strict"=%true;"#), "{schema}");
        assert_eq!(schema.matches(r#""type"="string""#).count(), 5);
    }
}
