//! Request parameters and data formats: merging the query string, the `X-YT-Parameters` header
//! and POST bodies into one map; typed access with clear errors; structured and tabular output
//! in JSON or YSON; tabular input.

use crate::error::YtError;
use yson::{Map, Node, Value};

/// The encoding of a header or body: JSON (YT convention) or YSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Yson,
}

impl Encoding {
    /// Reads a format description such as `json`, `"json"`, `<format=text>yson` or the YT JSON
    /// form `{"$value": "yson", "$attributes": {...}}`.
    pub fn from_format_text(text: &str) -> Result<Encoding, YtError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Encoding::Json);
        }
        let node = if trimmed.starts_with('{') {
            serde_json::from_str(trimmed)
                .ok()
                .and_then(|j| Node::from_json(&j).ok())
        } else {
            yson::parse(trimmed.as_bytes()).ok()
        };
        match node {
            Some(node) => Encoding::from_format_node(&node),
            None => Err(YtError::bad_request(format!(
                "Unsupported format {trimmed:?}"
            ))),
        }
    }

    /// Reads a format given as a node: a string `json`/`yson` with optional attributes.
    pub fn from_format_node(node: &Node) -> Result<Encoding, YtError> {
        match node.as_str() {
            Some("json") => Ok(Encoding::Json),
            Some("yson") => Ok(Encoding::Yson),
            Some(other) => Err(YtError::bad_request(format!(
                "Unsupported format {other:?}: the development cluster speaks \"json\" and \"yson\""
            ))),
            None => Err(YtError::bad_request(format!(
                "A format must be a string, got a {}",
                node.type_name()
            ))),
        }
    }

    /// Parses a whole structured document in this encoding.
    pub fn parse_document(self, what: &str, bytes: &[u8]) -> Result<Node, YtError> {
        match self {
            Encoding::Yson => yson::parse(bytes)
                .map_err(|e| YtError::bad_request(format!("Cannot parse {what} as YSON: {e}"))),
            Encoding::Json => {
                let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                    YtError::bad_request(format!("Cannot parse {what} as JSON: {e}"))
                })?;
                Node::from_json(&json)
                    .map_err(|e| YtError::bad_request(format!("Cannot read {what}: {e}")))
            }
        }
    }

    /// Serialises a structured value.
    pub fn write_document(self, node: &Node) -> Vec<u8> {
        match self {
            Encoding::Yson => yson::to_text(node).into_bytes(),
            Encoding::Json => node.to_json().to_string().into_bytes(),
        }
    }

    /// Serialises table rows: YSON list fragment or JSON lines.
    pub fn write_rows(self, rows: &[Node]) -> Vec<u8> {
        match self {
            Encoding::Yson => {
                let mut out = Vec::new();
                for row in rows {
                    out.extend_from_slice(yson::to_text(row).as_bytes());
                    out.extend_from_slice(b";\n");
                }
                out
            }
            Encoding::Json => {
                let mut out = Vec::new();
                for row in rows {
                    out.extend_from_slice(row.to_json().to_string().as_bytes());
                    out.push(b'\n');
                }
                out
            }
        }
    }

    /// Parses table rows: a YSON list fragment or JSON lines.
    pub fn parse_rows(self, bytes: &[u8]) -> Result<Vec<Node>, YtError> {
        let rows = match self {
            Encoding::Yson => yson::parse_list_fragment(bytes)
                .map_err(|e| YtError::bad_request(format!("Cannot parse rows as YSON: {e}")))?,
            Encoding::Json => {
                let mut rows = Vec::new();
                for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let json: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                        YtError::bad_request(format!("Cannot parse row {} as JSON: {e}", n + 1))
                    })?;
                    rows.push(Node::from_json(&json).map_err(|e| {
                        YtError::bad_request(format!("Cannot read row {}: {e}", n + 1))
                    })?);
                }
                rows
            }
        };
        if let Some(bad) = rows.iter().find(|r| r.as_map().is_none()) {
            return Err(YtError::bad_request(format!(
                "A table row must be a map, got a {}",
                bad.type_name()
            )));
        }
        Ok(rows)
    }
}

/// The parameters of one command.
#[derive(Debug, Clone, Default)]
pub struct Params {
    entries: Map,
}

impl Params {
    pub fn new(entries: Map) -> Self {
        Params { entries }
    }

    /// Adds (or replaces) entries from another source; later sources win.
    pub fn merge(&mut self, entries: Map) {
        for (key, value) in entries {
            self.set(&key, value);
        }
    }

    pub fn set(&mut self, key: &str, value: Node) {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.entries.push((key.to_string(), value));
        }
    }

    /// Parses a query string (`a=b&c=d`, percent-encoded).
    pub fn from_query(query: &str) -> Result<Map, YtError> {
        let mut out = Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            out.push((k, Node::string(v)));
        }
        Ok(out)
    }

    /// Parses a whole parameter document (header or body); it must be a map.
    pub fn parse_map(what: &str, encoding: Encoding, bytes: &[u8]) -> Result<Map, YtError> {
        let node = encoding.parse_document(what, bytes)?;
        match node.value {
            Value::Map(m) => Ok(m),
            _ => Err(YtError::bad_request(format!(
                "{what} must be a map, got a {}",
                node.type_name()
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A required string parameter.
    pub fn str(&self, key: &str) -> Result<&str, YtError> {
        self.opt_str(key)?.ok_or_else(|| missing(key))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, YtError> {
        match self.get(key) {
            None => Ok(None),
            Some(n) if n.is_entity() => Ok(None),
            Some(n) => n
                .as_str()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "a string", n)),
        }
    }

    /// A boolean parameter; query-string forms `true`/`false` are accepted.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, YtError> {
        match self.get(key) {
            None => Ok(default),
            Some(n) if n.is_entity() => Ok(default),
            Some(n) => match &n.value {
                Value::Boolean(b) => Ok(*b),
                Value::String(s) if s == "true" || s == "%true" || s == "1" => Ok(true),
                Value::String(s) if s == "false" || s == "%false" || s == "0" => Ok(false),
                _ => Err(wrong_type(key, "a boolean", n)),
            },
        }
    }

    /// An integer parameter; strings of digits are accepted.
    pub fn i64(&self, key: &str) -> Result<Option<i64>, YtError> {
        match self.get(key) {
            None => Ok(None),
            Some(n) if n.is_entity() => Ok(None),
            Some(n) => {
                if let Some(i) = n.as_i64() {
                    return Ok(Some(i));
                }
                n.as_str()
                    .and_then(|s| s.trim_end_matches('u').parse::<i64>().ok())
                    .map(Some)
                    .ok_or_else(|| wrong_type(key, "an integer", n))
            }
        }
    }

    /// A list-of-strings parameter (`attributes`); a YSON text string is parsed.
    pub fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, YtError> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        if node.is_entity() {
            return Ok(None);
        }
        let parsed;
        let node = match node.as_str() {
            Some(text) => {
                parsed = yson::parse(text.as_bytes()).map_err(|e| {
                    YtError::bad_request(format!("Cannot parse parameter {key:?}: {e}"))
                })?;
                &parsed
            }
            None => node,
        };
        let items = node
            .as_list()
            .ok_or_else(|| wrong_type(key, "a list", node))?;
        items
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong_type(key, "a list of strings", n))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A structured parameter; a string is parsed as YSON when it looks like one
    /// (query-string parameters arrive as strings).
    pub fn node(&self, key: &str) -> Result<Option<Node>, YtError> {
        match self.get(key) {
            None => Ok(None),
            Some(n) => match n.as_str() {
                Some(text) if n.attributes.is_empty() && looks_structured(text) => {
                    yson::parse(text.as_bytes()).map(Some).map_err(|e| {
                        YtError::bad_request(format!("Cannot parse parameter {key:?}: {e}"))
                    })
                }
                _ => Ok(Some(n.clone())),
            },
        }
    }
}

fn looks_structured(text: &str) -> bool {
    matches!(
        text.trim_start().as_bytes().first(),
        Some(b'{' | b'[' | b'<')
    )
}

fn missing(key: &str) -> YtError {
    YtError::bad_request(format!("Missing required parameter {key:?}"))
        .with_attribute("parameter", Node::string(key))
}

fn wrong_type(key: &str, expected: &str, got: &Node) -> YtError {
    YtError::bad_request(format!(
        "Parameter {key:?} must be {expected}, got a {}",
        got.type_name()
    ))
    .with_attribute("parameter", Node::string(key))
}

/// Decodes `%XX` escapes and `+` (as a space).
pub fn percent_decode(s: &str) -> Result<String, YtError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        YtError::bad_request(format!("Bad percent-encoding in {s:?}"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| YtError::bad_request(format!("Query string is not UTF-8: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let m = Params::from_query("path=%2F%2Fhome%2Fa&limit=10&flag=true&x=a+b").unwrap();
        let p = Params::new(m);
        assert_eq!(p.str("path").unwrap(), "//home/a");
        assert_eq!(p.i64("limit").unwrap(), Some(10));
        assert!(p.bool("flag", false).unwrap());
        assert_eq!(p.str("x").unwrap(), "a b");
        assert!(Params::from_query("a=%zz").is_err());
    }

    #[test]
    fn header_formats() {
        assert_eq!(
            Encoding::from_format_text("<format=text>yson").unwrap(),
            Encoding::Yson
        );
        assert_eq!(Encoding::from_format_text("json").unwrap(), Encoding::Json);
        assert_eq!(
            Encoding::from_format_text("\"json\"").unwrap(),
            Encoding::Json
        );
        assert_eq!(
            Encoding::from_format_text(r#"{"$value":"yson","$attributes":{"format":"text"}}"#)
                .unwrap(),
            Encoding::Yson
        );
        assert!(Encoding::from_format_text("protobuf").is_err());
    }

    #[test]
    fn yson_and_json_parameter_maps() {
        let m = Params::parse_map(
            "X-YT-Parameters",
            Encoding::Yson,
            br#"{path="//a"; recursive=%true; limit=5}"#,
        )
        .unwrap();
        let p = Params::new(m);
        assert_eq!(p.str("path").unwrap(), "//a");
        assert!(p.bool("recursive", false).unwrap());
        assert_eq!(p.i64("limit").unwrap(), Some(5));
        let m = Params::parse_map(
            "body",
            Encoding::Json,
            br#"{"attributes": ["id", "state"]}"#,
        )
        .unwrap();
        let p = Params::new(m);
        assert_eq!(
            p.string_list("attributes").unwrap().unwrap(),
            vec!["id", "state"]
        );
        let err = Params::parse_map("X-YT-Parameters", Encoding::Yson, b"{path=").unwrap_err();
        assert!(err.message.contains("X-YT-Parameters"), "{}", err.message);
        assert!(Params::parse_map("body", Encoding::Json, b"[1]").is_err());
    }

    #[test]
    fn typed_access_errors_name_the_parameter() {
        let p = Params::new(vec![("limit".into(), Node::string("many"))]);
        let err = p.i64("limit").unwrap_err();
        assert!(err.message.contains("limit"));
        assert!(p.str("path").unwrap_err().message.contains("path"));
        let p = Params::new(vec![("attributes".into(), Node::string("[a;b]"))]);
        assert_eq!(
            p.string_list("attributes").unwrap().unwrap(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn rows_round_trip() {
        let rows = Encoding::Json
            .parse_rows(b"{\"a\":1}\n{\"a\":2,\"b\":\"x\"}\n")
            .unwrap();
        assert_eq!(rows.len(), 2);
        let y = Encoding::Yson.write_rows(&rows);
        assert_eq!(Encoding::Yson.parse_rows(&y).unwrap(), rows);
        assert!(Encoding::Json.parse_rows(b"[1]\n").is_err());
    }
}
