//! Users, credentials and operation ACLs: the demo users, the `--users FILE` format, resolving
//! `Authorization`/cookie headers to a user, and `check_operation_permission` rules.
//!
//! Users file (JSON):
//! ```json
//! {"users": [{"name": "carol", "tokens": ["carol-token"], "cookies": ["carol-cookie"],
//!             "bearer_tokens": ["carol-iam"], "superuser": false,
//!             "operations_permissions": ["read"]}]}
//! ```
//! `operations_permissions` puts the user into the cluster-wide operations ACL.

use crate::error::YtError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use yson::Node;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "YTCypressCookie";

/// One user definition (also the users file entry).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct UserSpec {
    pub name: String,
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
    #[serde(default)]
    pub bearer_tokens: Vec<String>,
    #[serde(default)]
    pub superuser: bool,
    /// Permissions on every operation (the cluster-wide operations ACL).
    #[serde(default)]
    pub operations_permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct UsersFile {
    users: Vec<UserSpec>,
}

/// Errors loading users.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed users file {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("users file {path}: user name must not be empty")]
    EmptyName { path: String },
}

/// The user directory.
#[derive(Debug, Clone)]
pub struct Users {
    users: Vec<UserSpec>,
    tokens: HashMap<String, usize>,
    bearer: HashMap<String, usize>,
    cookies: HashMap<String, usize>,
}

fn demo(
    name: &str,
    tokens: &[&str],
    cookies: &[&str],
    bearer: &[&str],
    superuser: bool,
    ops: &[&str],
) -> UserSpec {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    UserSpec {
        name: name.into(),
        tokens: own(tokens),
        cookies: own(cookies),
        bearer_tokens: own(bearer),
        superuser,
        operations_permissions: own(ops),
    }
}

/// The built-in demo users.
pub fn demo_users() -> Vec<UserSpec> {
    vec![
        demo("root", &["root-token"], &[], &[], true, &[]),
        demo(
            "robot-task-proxy",
            &["robot-token"],
            &[],
            &[],
            false,
            &["read"],
        ),
        demo(
            "alice",
            &["alice-token"],
            &["alice-cookie"],
            &[],
            false,
            &[],
        ),
        demo("bob", &["bob-token"], &[], &["bob-iam"], false, &[]),
    ]
}

impl Users {
    pub fn new(specs: Vec<UserSpec>) -> Users {
        let mut users = Users {
            users: Vec::new(),
            tokens: HashMap::new(),
            bearer: HashMap::new(),
            cookies: HashMap::new(),
        };
        for spec in specs {
            let index = match users.users.iter().position(|u| u.name == spec.name) {
                Some(i) => {
                    users.users[i] = spec.clone();
                    i
                }
                None => {
                    users.users.push(spec.clone());
                    users.users.len() - 1
                }
            };
            for t in &spec.tokens {
                users.tokens.insert(t.clone(), index);
            }
            for t in &spec.bearer_tokens {
                users.bearer.insert(t.clone(), index);
            }
            for c in &spec.cookies {
                users.cookies.insert(c.clone(), index);
            }
        }
        users
    }

    /// Demo users plus those of `file` (if any).
    pub fn load(file: Option<&Path>) -> Result<Users, UsersError> {
        let mut specs = demo_users();
        if let Some(path) = file {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
                path: display.clone(),
                source,
            })?;
            let parsed: UsersFile =
                serde_json::from_str(&text).map_err(|source| UsersError::Parse {
                    path: display.clone(),
                    source,
                })?;
            if parsed.users.iter().any(|u| u.name.is_empty()) {
                return Err(UsersError::EmptyName { path: display });
            }
            specs.extend(parsed.users);
        }
        Ok(Users::new(specs))
    }

    pub fn all(&self) -> &[UserSpec] {
        &self.users
    }

    pub fn get(&self, name: &str) -> Option<&UserSpec> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn is_superuser(&self, name: &str) -> bool {
        self.get(name).is_some_and(|u| u.superuser)
    }

    /// Resolves the caller from the `Authorization` and `Cookie` header values.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        cookie: Option<&str>,
    ) -> Result<&UserSpec, YtError> {
        if let Some(header) = authorization {
            let header = header.trim();
            let (scheme, credential) = header.split_once(' ').unwrap_or((header, ""));
            let credential = credential.trim();
            let index = if scheme.eq_ignore_ascii_case("oauth") {
                self.tokens.get(credential)
            } else if scheme.eq_ignore_ascii_case("bearer") {
                self.bearer
                    .get(credential)
                    .or_else(|| self.tokens.get(credential))
            } else {
                return Err(YtError::authentication(format!(
                    "Unsupported authorization scheme {scheme:?}: use \"OAuth <token>\" or \"Bearer <token>\""
                )));
            };
            return index
                .map(|&i| &self.users[i])
                .ok_or_else(|| YtError::authentication("Authentication failed: unknown token"));
        }
        if let Some(cookies) = cookie {
            for part in cookies.split(';') {
                if let Some((name, value)) = part.trim().split_once('=') {
                    if name == SESSION_COOKIE {
                        return self
                            .cookies
                            .get(value.trim())
                            .map(|&i| &self.users[i])
                            .ok_or_else(|| {
                                YtError::authentication(
                                    "Authentication failed: unknown session cookie",
                                )
                            });
                    }
                }
            }
        }
        Err(YtError::authentication(
            "Client is missing credentials: send \"Authorization: OAuth <token>\" or the YTCypressCookie cookie",
        ))
    }

    /// Whether `user` holds `permission` on an operation with the given owner, owners and ACL.
    pub fn operation_permission(
        &self,
        user: &str,
        permission: &str,
        op: &OperationAccess<'_>,
    ) -> bool {
        if self.is_superuser(user) {
            return true;
        }
        if acl_matches(op.acl, user, permission, "deny") {
            return false;
        }
        op.authenticated_user == user
            || op.owners.iter().any(|o| o == user)
            || acl_matches(op.acl, user, permission, "allow")
            || self
                .get(user)
                .is_some_and(|u| u.operations_permissions.iter().any(|p| p == permission))
    }
}

/// What an operation ACL decision needs to know about the operation.
#[derive(Debug, Clone, Copy)]
pub struct OperationAccess<'a> {
    pub authenticated_user: &'a str,
    pub owners: &'a [String],
    /// The ACL: a list of `{action; subjects; permissions}` maps.
    pub acl: &'a Node,
}

fn acl_matches(acl: &Node, user: &str, permission: &str, action: &str) -> bool {
    let Some(entries) = acl.as_list() else {
        return false;
    };
    entries.iter().any(|entry| {
        let entry_action = entry
            .get("action")
            .and_then(Node::as_str)
            .unwrap_or("allow");
        let has = |key: &str, want: &str| {
            entry.get(key).and_then(Node::as_list).is_some_and(|l| {
                l.iter()
                    .any(|s| s.as_str() == Some(want) || s.as_str() == Some("everyone"))
            })
        };
        entry_action == action && has("subjects", user) && has("permissions", permission)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::new(demo_users())
    }

    #[test]
    fn credentials_resolve() {
        let u = users();
        assert_eq!(
            u.authenticate(Some("OAuth alice-token"), None)
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            u.authenticate(Some("oauth alice-token"), None)
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            u.authenticate(Some("Bearer bob-iam"), None).unwrap().name,
            "bob"
        );
        assert_eq!(
            u.authenticate(Some("BEARER bob-token"), None).unwrap().name,
            "bob"
        );
        assert_eq!(
            u.authenticate(None, Some("a=b; YTCypressCookie=alice-cookie"))
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            u.authenticate(Some("OAuth nope"), None).unwrap_err().status,
            401
        );
        assert_eq!(u.authenticate(None, None).unwrap_err().status, 401);
        assert_eq!(
            u.authenticate(None, Some("YTCypressCookie=x"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            u.authenticate(Some("Basic abc"), None).unwrap_err().status,
            401
        );
    }

    #[test]
    fn operation_acl_rules() {
        let u = users();
        let acl = yson::parse(b"[{action=allow;subjects=[bob];permissions=[read]}]").unwrap();
        let owners = vec!["carol".to_string()];
        let op = OperationAccess {
            authenticated_user: "alice",
            owners: &owners,
            acl: &acl,
        };
        assert!(u.operation_permission("alice", "read", &op));
        assert!(u.operation_permission("alice", "manage", &op));
        assert!(u.operation_permission("root", "manage", &op));
        assert!(u.operation_permission("bob", "read", &op));
        assert!(!u.operation_permission("bob", "manage", &op));
        assert!(u.operation_permission("carol", "manage", &op));
        assert!(u.operation_permission("robot-task-proxy", "read", &op));
        assert!(!u.operation_permission("robot-task-proxy", "manage", &op));
        assert!(!u.operation_permission("mallory", "read", &op));
        let deny = yson::parse(b"[{action=deny;subjects=[alice];permissions=[read]}]").unwrap();
        let op = OperationAccess {
            authenticated_user: "alice",
            owners: &[],
            acl: &deny,
        };
        assert!(!u.operation_permission("alice", "read", &op));
        assert!(u.operation_permission("root", "read", &op));
    }

    #[test]
    fn users_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::fs::write(
            &path,
            r#"{"users":[{"name":"carol","tokens":["carol-token"],"superuser":true}]}"#,
        )
        .unwrap();
        let u = Users::load(Some(&path)).unwrap();
        assert_eq!(
            u.authenticate(Some("OAuth carol-token"), None)
                .unwrap()
                .name,
            "carol"
        );
        assert!(u.is_superuser("carol"));
        assert!(u.get("alice").is_some());
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Users::load(Some(&path)),
            Err(UsersError::Parse { .. })
        ));
    }
}
