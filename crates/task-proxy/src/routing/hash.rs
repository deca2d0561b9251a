//! The service hash that names domains, compatible with existing deployments: lowercase hex
//! SHA-256 of `operation_id + task_name + service` (no separators), last 8 characters.

use sha2::{Digest, Sha256};

/// Length of the hash in a domain (`<hash>.<base-domain>`).
pub const HASH_LEN: usize = 8;

/// The compatible 8-character hash of a service.
pub fn service_hash(operation_id: &str, task_name: &str, service: &str) -> String {
    service_hash_with_len(operation_id, task_name, service, HASH_LEN)
}

/// The last `len` hex characters (at most 64) of the service's SHA-256. Longer suffixes name
/// services whose 8-character hash collides with another's.
pub fn service_hash_with_len(
    operation_id: &str,
    task_name: &str,
    service: &str,
    len: usize,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(operation_id.as_bytes());
    hasher.update(task_name.as_bytes());
    hasher.update(service.as_bytes());
    let hex = hex::encode(hasher.finalize());
    let len = len.min(hex.len());
    hex[hex.len() - len..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_domains() {
        // Rows of the services table in the user guide.
        assert_eq!(
            service_hash(
                "a8ef7695-3de07913-5103e8-e29a6707",
                "example_grpc_server",
                "server"
            ),
            "ae5cf6f5"
        );
        assert_eq!(
            service_hash("a6e04b98-bf982394-5103e8-55754a49", "master", "ui"),
            "2ef4261c"
        );
        assert_eq!(
            service_hash("a6e04b98-bf982394-5103e8-55754a49", "history", "ui"),
            "51a6d485"
        );
    }

    #[test]
    fn longer_hashes_extend_the_short_one() {
        let short = service_hash("op", "task", "svc");
        let long = service_hash_with_len("op", "task", "svc", 12);
        assert_eq!(long.len(), 12);
        assert!(long.ends_with(&short));
        assert_eq!(service_hash_with_len("op", "task", "svc", 100).len(), 64);
    }
}
