//! `demo.Inspect`: tells the caller which metadata reached the job.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::proto::demo::inspect_server;
use super::proto::demo::{MetadataPair, MetadataReply, MetadataRequest};

/// The Inspect service of one job.
#[derive(Debug)]
pub(super) struct Inspect {
    name: String,
}

impl Inspect {
    pub(super) fn new(name: String) -> Self {
        Self { name }
    }
}

#[tonic::async_trait]
impl inspect_server::Inspect for Inspect {
    /// Returns every received metadata entry (binary `-bin` values as sent on the wire, in
    /// base64), in order and joined per key.
    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataReply>, Status> {
        let headers = request.metadata().clone().into_headers();
        let mut entries = Vec::with_capacity(headers.len());
        let mut metadata: HashMap<String, String> = HashMap::new();
        for (key, value) in &headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            metadata
                .entry(key.as_str().to_owned())
                .and_modify(|existing| {
                    existing.push_str(", ");
                    existing.push_str(&value);
                })
                .or_insert_with(|| value.clone());
            entries.push(MetadataPair {
                key: key.as_str().to_owned(),
                value,
            });
        }
        Ok(Response::new(MetadataReply {
            server: self.name.clone(),
            entries,
            metadata,
        }))
    }
}
