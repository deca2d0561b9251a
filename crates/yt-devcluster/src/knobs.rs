//! Fault injection: per-command (or `*`) added latency, error rate, hangs and refused
//! connections, settable in-process ([`Knobs`]) or over HTTP (`/devcluster/knobs`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

/// The faults applied to one command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandKnob {
    /// Added latency before answering, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0..1) of answering with an injected error.
    pub error_rate: f64,
    /// The HTTP status of injected errors (default 503).
    pub error_status: Option<u16>,
    /// The YT error code of injected errors (default 105, "unavailable").
    pub error_code: Option<i64>,
    /// Sleep `hang_ms` (default 10 minutes) before answering.
    pub hang: bool,
    pub hang_ms: Option<u64>,
    /// Close the connection without an answer.
    pub refuse: bool,
    /// Answer as a banned HTTP proxy does: 503 with `Retry-After: 60` and the error
    /// "This proxy is banned" (code 2100).
    pub banned: bool,
    /// A `Retry-After` header (seconds) on injected errors.
    pub retry_after_seconds: Option<u64>,
    /// Answer as a server without the command does: 404, "Command \"<name>\" is not
    /// registered" (code 1); the command is also left out of `/api/v4`.
    pub unregistered: bool,
    /// Refuse `Authorization: Bearer` as HTTP proxies that take only the OAuth scheme do: 401,
    /// "Malformed Authorization header" (code 111). Usually set on `*`.
    pub reject_bearer: bool,
    /// `list_jobs` (also inside `execute_batch`) answers as the server does when it cannot
    /// reach the operation's controller agent: success, the failure in `errors`, and only the
    /// jobs the job archive knows (none: the dev cluster has no archive).
    pub controller_agent_unreachable: bool,
    /// `list_jobs` marks running jobs `is_stale`, as the server does for jobs the archive
    /// says are running but the controller agent does not report.
    pub stale_jobs: bool,
    /// Answer as a control proxy does for a heavy command: 307 to a data proxy at the same
    /// path and query, with `Connection: close`, unless the request has
    /// `X-YT-Suppress-Redirect` or a `Cookie` (browsers are served in place). The data proxy
    /// is this server under a second name, `localhost:<port>`: while any command has this
    /// knob, `/hosts` lists that name, and requests addressed to it are served as a data
    /// proxy serves them (never redirected). `redirect_host` names another target.
    pub redirect: bool,
    /// The `host:port` a redirect names instead of this server (one `/hosts` does not list).
    pub redirect_host: Option<String>,
    /// Fail a heavy read after the head was sent, as a data proxy does when the read breaks
    /// mid-stream: status 200, the first half of the answer, then the error in the trailers
    /// `X-YT-Error`, `X-YT-Response-Code` and `X-YT-Response-Message` (announced in
    /// `Trailer:`). hyper sends trailers only to clients that sent `TE: trailers`.
    pub error_trailer: bool,
    /// Apply this knob only to requests whose `User-Agent` contains this text (one client of
    /// several cut off from the cluster, e.g. one proxy replica); others see no knob.
    pub user_agent: Option<String>,
}

/// What the server should do with one request, decided from the knobs.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    Delay(Duration),
    Error {
        delay: Duration,
        status: u16,
        code: i64,
        /// Seconds for a `Retry-After` header.
        retry_after: Option<u64>,
        /// The error message, if not the generic "injected failure" one.
        message: Option<String>,
    },
    Refuse {
        delay: Duration,
    },
}

/// All knobs; cheap to read on every request.
#[derive(Debug, Default)]
pub struct Knobs {
    commands: RwLock<BTreeMap<String, CommandKnob>>,
}

impl Knobs {
    /// Sets the knob of `command` (or `*` for every command without its own).
    pub fn set(&self, command: &str, knob: CommandKnob) {
        if let Ok(mut map) = self.commands.write() {
            map.insert(command.to_string(), knob);
        }
    }

    /// Replaces all knobs.
    pub fn replace(&self, knobs: BTreeMap<String, CommandKnob>) {
        if let Ok(mut map) = self.commands.write() {
            *map = knobs;
        }
    }

    pub fn clear(&self) {
        self.replace(BTreeMap::new());
    }

    pub fn snapshot(&self) -> BTreeMap<String, CommandKnob> {
        self.commands.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The knob in force for `command` (for any client).
    pub fn get(&self, command: &str) -> Option<CommandKnob> {
        self.get_for(command, "")
    }

    /// The knob in force for `command` sent by `user_agent`: a knob limited to other clients'
    /// user agents is not in force.
    pub fn get_for(&self, command: &str, user_agent: &str) -> Option<CommandKnob> {
        let map = self.commands.read().ok()?;
        map.get(command)
            .or_else(|| map.get("*"))
            .filter(|k| {
                k.user_agent
                    .as_deref()
                    .is_none_or(|wanted| user_agent.contains(wanted))
            })
            .cloned()
    }

    /// Whether any command is redirected to a data proxy (the `redirect` knob).
    pub fn redirects(&self) -> bool {
        self.commands
            .read()
            .map(|m| m.values().any(|k| k.redirect))
            .unwrap_or(false)
    }

    /// Whether the server answers as if it did not have `command`.
    pub fn is_unregistered(&self, command: &str) -> bool {
        self.commands
            .read()
            .map(|m| m.get(command).is_some_and(|k| k.unregistered))
            .unwrap_or(false)
    }

    /// Decides the fault for one request of `command`.
    pub fn decide(&self, command: &str, user_agent: &str) -> Fault {
        let Some(knob) = self.get_for(command, user_agent) else {
            return Fault::None;
        };
        let mut delay = Duration::from_millis(knob.latency_ms);
        if knob.hang {
            delay += Duration::from_millis(knob.hang_ms.unwrap_or(600_000));
        }
        if knob.refuse {
            return Fault::Refuse { delay };
        }
        if knob.unregistered {
            return Fault::Error {
                delay,
                status: 404,
                code: crate::error::codes::GENERIC,
                retry_after: None,
                message: Some(format!("Command {command:?} is not registered")),
            };
        }
        if knob.banned {
            return Fault::Error {
                delay,
                status: 503,
                code: crate::error::codes::PROXY_BANNED,
                retry_after: Some(60),
                message: Some("This proxy is banned".to_string()),
            };
        }
        if knob.error_rate > 0.0 && rand::random::<f64>() < knob.error_rate {
            return Fault::Error {
                delay,
                status: knob.error_status.unwrap_or(503),
                code: knob.error_code.unwrap_or(crate::error::codes::UNAVAILABLE),
                retry_after: knob.retry_after_seconds,
                message: None,
            };
        }
        if delay.is_zero() {
            Fault::None
        } else {
            Fault::Delay(delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_knobs_override_the_wildcard() {
        let k = Knobs::default();
        assert_eq!(k.decide("get", ""), Fault::None);
        k.set(
            "*",
            CommandKnob {
                latency_ms: 5,
                ..Default::default()
            },
        );
        k.set(
            "list_operations",
            CommandKnob {
                error_rate: 1.0,
                ..Default::default()
            },
        );
        assert_eq!(k.decide("get", ""), Fault::Delay(Duration::from_millis(5)));
        assert_eq!(
            k.decide("list_operations", ""),
            Fault::Error {
                delay: Duration::ZERO,
                status: 503,
                code: 105,
                retry_after: None,
                message: None,
            }
        );
        k.set(
            "whoami",
            CommandKnob {
                refuse: true,
                ..Default::default()
            },
        );
        assert!(matches!(k.decide("whoami", ""), Fault::Refuse { .. }));
        k.clear();
        assert_eq!(k.decide("get", ""), Fault::None);
        let parsed: BTreeMap<String, CommandKnob> =
            serde_json::from_str(r#"{"get": {"hang": true, "hang_ms": 10}}"#).unwrap();
        k.replace(parsed);
        assert_eq!(k.decide("get", ""), Fault::Delay(Duration::from_millis(10)));
        let only_b: BTreeMap<String, CommandKnob> =
            serde_json::from_str(r#"{"*": {"error_rate": 1.0, "user_agent": "(replica-b)"}}"#)
                .unwrap();
        k.replace(only_b);
        assert_eq!(k.decide("get", "task-proxy (replica-a)"), Fault::None);
        assert!(matches!(
            k.decide("get", "task-proxy (replica-b)"),
            Fault::Error { .. }
        ));
    }
}
