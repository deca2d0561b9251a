//! YSON, the data format of YTsaurus: a document model ([`Node`]), a parser for the text and
//! binary forms ([`parse`], [`parse_list_fragment`]), a text writer ([`to_text`]), and the YT
//! JSON convention (`$attributes`/`$value`) in both directions ([`Node::to_json`],
//! [`Node::from_json`]).
//!
//! Written by hand because no maintained crate covers YSON: it is small, and owning it lets the
//! parser be strict (every malformed input is an [`Error`] with a byte offset, never a panic)
//! and keep what YTsaurus responses really carry: attributes on any value (`<"count"=0;>[]`),
//! unsigned integers (`1u`), entities (`#`), booleans (`%true`) and doubles (`4.`, `%nan`).

#![forbid(unsafe_code)]

mod json;
mod parse;
mod write;

pub use parse::{parse, parse_list_fragment, parse_map_fragment};
pub use write::{to_text, to_text_list_fragment};

/// An ordered map of string keys to nodes, as YSON maps and attribute maps keep their order.
pub type Map = Vec<(String, Node)>;

/// One YSON value with its (possibly empty) attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub attributes: Map,
    pub value: Value,
}

/// The value part of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Entity,
    Boolean(bool),
    Int64(i64),
    Uint64(u64),
    Double(f64),
    String(String),
    List(Vec<Node>),
    Map(Map),
}

/// A parse error with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed YSON at byte {offset}: {message}")]
pub struct Error {
    pub offset: usize,
    pub message: String,
}

impl From<Value> for Node {
    fn from(value: Value) -> Self {
        Node {
            attributes: Vec::new(),
            value,
        }
    }
}

impl Node {
    pub fn entity() -> Node {
        Value::Entity.into()
    }

    pub fn string(s: impl Into<String>) -> Node {
        Value::String(s.into()).into()
    }

    pub fn map(entries: Map) -> Node {
        Value::Map(entries).into()
    }

    pub fn list(items: Vec<Node>) -> Node {
        Value::List(items).into()
    }

    /// The value under `key` if this node is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The attribute named `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&Node> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Follows a `/`-separated path of map keys and list indexes (`a/b/0/c`).
    pub fn pointer(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = match &node.value {
                Value::Map(_) => node.get(part)?,
                Value::List(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(b) => Some(b),
            _ => None,
        }
    }

    /// Any integer (signed or unsigned) that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int64(i) => Some(i),
            Value::Uint64(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// Any non-negative integer (signed or unsigned).
    pub fn as_u64(&self) -> Option<u64> {
        match self.value {
            Value::Int64(i) => u64::try_from(i).ok(),
            Value::Uint64(u) => Some(u),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self.value {
            Value::Double(d) => Some(d),
            Value::Int64(i) => Some(i as f64),
            Value::Uint64(u) => Some(u as f64),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Node]> {
        match &self.value {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_entity(&self) -> bool {
        matches!(self.value, Value::Entity)
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Entity => "entity",
            Value::Boolean(_) => "boolean",
            Value::Int64(_) => "int64",
            Value::Uint64(_) => "uint64",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_helpers() {
        let n = parse(br#"{a={b=[1;2u;<x=%true>"s"]}}"#).unwrap();
        assert_eq!(n.pointer("a/b/0").and_then(Node::as_i64), Some(1));
        assert_eq!(n.pointer("a/b/1").and_then(Node::as_u64), Some(2));
        let s = n.pointer("a/b/2").unwrap();
        assert_eq!(s.as_str(), Some("s"));
        assert_eq!(s.attribute("x").and_then(Node::as_bool), Some(true));
        assert!(n.pointer("a/c").is_none());
        assert!(n.pointer("a/b/9").is_none());
    }
}
