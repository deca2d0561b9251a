//! What a service is: its key, protocol and endpoints, as discovery or the services file
//! describe it (see docs/discovery.md and docs/serve.md).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The protocol a service speaks; it decides how the proxy talks to its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 to the job (WebSocket upgrades included).
    Http,
    /// gRPC: HTTP/2 cleartext (h2c) to the job.
    Grpc,
    /// The job serves TLS itself: HTTP/2 or HTTP/1.1 over TLS, as the job picks by ALPN
    /// (WebSocket upgrades over HTTP/1.1).
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Https => "https",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            "https" => Ok(Protocol::Https),
            other => Err(format!(
                "unknown protocol {other:?} (expected \"http\", \"grpc\" or \"https\")"
            )),
        }
    }
}

/// What identifies a service: `(operation_id, task_name, service)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub operation_id: String,
    pub task_name: String,
    pub service: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.operation_id, self.task_name, self.service
        )
    }
}

/// One place a service's job listens: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Why an endpoint string is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad endpoint {input:?}: {reason}")]
pub struct EndpointParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// The `host:port` form used in URLs and `Host` headers (IPv6 hosts bracketed).
    pub fn authority(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| EndpointParseError {
            input: s.to_string(),
            reason,
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = rest.strip_prefix(':').ok_or_else(|| err("missing port"))?;
            (host, port)
        } else {
            s.rsplit_once(':').ok_or_else(|| err("missing port"))?
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.contains(['/', ' ', '@', '?', '#']) || (host.contains(':') && !s.starts_with('[')) {
            return Err(err("invalid host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(err("port is not a number 1-65535"));
        }
        Ok(Endpoint::new(host, port))
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Per-operation timeouts from the `task_proxy` annotation (`route_timeout_seconds`,
/// `stream_idle_timeout_seconds`): each, when set, replaces the global flag for the operation's
/// services; 0 switches that timeout off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_seconds: Option<u64>,
}

impl RouteTimeouts {
    /// True when neither timeout is overridden.
    pub fn is_default(&self) -> bool {
        self.route_timeout_seconds.is_none() && self.stream_idle_timeout_seconds.is_none()
    }

    /// The complete-response deadline: the override (0 = none) or `global`.
    pub fn route_timeout(&self, global: Option<Duration>) -> Option<Duration> {
        match self.route_timeout_seconds {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => global,
        }
    }

    /// The stream idle timeout: the override (0 = none) or `global`.
    pub fn stream_idle_timeout(&self, global: Option<Duration>) -> Option<Duration> {
        match self.stream_idle_timeout_seconds {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => global,
        }
    }
}

/// A service as its source describes it, before naming: the input of a routing snapshot.
/// The services file (docs/serve.md, "Services file") is a list of these in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub operation_id: String,
    pub task_name: String,
    pub service: String,
    pub protocol: Protocol,
    pub endpoints: Vec<Endpoint>,
    /// The operation's start time (ISO 8601), when known: the older of two colliding services
    /// keeps the short domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_start_time: Option<String>,
    /// Per-operation timeouts (none: the global flags apply).
    #[serde(default, skip_serializing_if = "RouteTimeouts::is_default")]
    pub timeouts: RouteTimeouts,
    /// Whether a browser keeps reaching one job (an affinity cookie); unset:
    /// `--sticky-sessions-default` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
}

impl ServiceSpec {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            operation_id: self.operation_id.clone(),
            task_name: self.task_name.clone(),
            service: self.service.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let e: Endpoint = "127.0.0.2:8080".parse().unwrap();
        assert_eq!(e, Endpoint::new("127.0.0.2", 8080));
        assert_eq!(e.to_string(), "127.0.0.2:8080");
        let e: Endpoint = "[::1]:81".parse().unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.to_string(), "[::1]:81");
        let e: Endpoint = "node-1.example.net:9".parse().unwrap();
        assert_eq!(e.host, "node-1.example.net");
        for bad in [
            "", "host", ":80", "h:0", "h:70000", "h:x", "::1:80", "[::1", "a b:1", "u@h:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn spec_from_services_file_json() {
        let spec: ServiceSpec = serde_json::from_str(
            r#"{"operation_id":"op","task_name":"t","service":"s","protocol":"grpc","endpoints":["127.0.0.1:1"]}"#,
        )
        .unwrap();
        assert_eq!(spec.protocol, Protocol::Grpc);
        assert_eq!(spec.sticky, None);
        let spec: ServiceSpec = serde_json::from_str(
            r#"{"operation_id":"op","task_name":"t","service":"s","protocol":"http","endpoints":[],"sticky":true}"#,
        )
        .unwrap();
        assert_eq!(spec.sticky, Some(true));
        assert!(serde_json::from_str::<ServiceSpec>(
            r#"{"operation_id":"op","task_name":"t","service":"s","protocol":"http","endpoints":[],"sticky":"yes"}"#
        )
        .is_err());
        let spec: ServiceSpec = serde_json::from_str(
            r#"{"operation_id":"op","task_name":"t","service":"s","protocol":"https","endpoints":["127.0.0.1:1"]}"#,
        )
        .unwrap();
        assert_eq!(spec.protocol, Protocol::Https);
        assert_eq!(spec.protocol.to_string(), "https");
        assert!(serde_json::from_str::<ServiceSpec>(
            r#"{"operation_id":"op","task_name":"t","service":"s","protocol":"ftp","endpoints":[]}"#
        )
        .is_err());
    }
}
