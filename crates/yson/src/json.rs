//! The YT JSON convention: a node with attributes is `{"$attributes": {...}, "$value": v}`, an
//! entity is `null`, and `{"$type": "uint64", "$value": "1"}` carries an explicit type.

use crate::{Error, Map, Node, Value};
use serde_json::Value as Json;

impl Node {
    /// Converts to JSON in the YT convention.
    pub fn to_json(&self) -> Json {
        let value = match &self.value {
            Value::Entity => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Int64(i) => Json::from(*i),
            Value::Uint64(u) => Json::from(*u),
            Value::Double(d) => serde_json::Number::from_f64(*d)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(d.to_string())),
            Value::String(s) => Json::String(s.clone()),
            Value::List(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => Json::Object(map_to_json(m)),
        };
        if self.attributes.is_empty() {
            value
        } else {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "$attributes".into(),
                Json::Object(map_to_json(&self.attributes)),
            );
            obj.insert("$value".into(), value);
            Json::Object(obj)
        }
    }

    /// Converts from JSON in the YT convention.
    pub fn from_json(json: &Json) -> Result<Node, Error> {
        let bad = |message: String| Error { offset: 0, message };
        Ok(match json {
            Json::Null => Node::entity(),
            Json::Bool(b) => Value::Boolean(*b).into(),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int64(i).into()
                } else if let Some(u) = n.as_u64() {
                    Value::Uint64(u).into()
                } else {
                    Value::Double(n.as_f64().unwrap_or(f64::NAN)).into()
                }
            }
            Json::String(s) => Node::string(s.clone()),
            Json::Array(items) => Node::list(
                items
                    .iter()
                    .map(Node::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(obj) if obj.contains_key("$value") => {
                let raw = &obj["$value"];
                let mut node = match (obj.get("$type").and_then(Json::as_str), raw) {
                    (Some(t), Json::String(s)) => typed_scalar(t, s).map_err(bad)?,
                    _ => Node::from_json(raw)?,
                };
                if let Some(attrs) = obj.get("$attributes") {
                    let Json::Object(attrs) = attrs else {
                        return Err(bad("$attributes must be an object".into()));
                    };
                    node.attributes = json_to_map(attrs)?;
                }
                node
            }
            Json::Object(obj) => Node::map(json_to_map(obj)?),
        })
    }
}

fn typed_scalar(type_name: &str, text: &str) -> Result<Node, String> {
    let err = || format!("cannot read {text:?} as {type_name}");
    Ok(match type_name {
        "uint64" => Value::Uint64(text.parse().map_err(|_| err())?).into(),
        "int64" => Value::Int64(text.parse().map_err(|_| err())?).into(),
        "double" => Value::Double(text.parse().map_err(|_| err())?).into(),
        "boolean" => Value::Boolean(text.parse().map_err(|_| err())?).into(),
        "string" => Node::string(text),
        other => return Err(format!("unknown $type {other:?}")),
    })
}

fn map_to_json(map: &Map) -> serde_json::Map<String, Json> {
    map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

fn json_to_map(obj: &serde_json::Map<String, Json>) -> Result<Map, Error> {
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Node::from_json(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn attributes_and_types() {
        let n = parse(br#"<"count"=0;>[1u;#;%true]"#).unwrap();
        let j = n.to_json();
        assert_eq!(
            j,
            serde_json::json!({"$attributes": {"count": 0}, "$value": [1, null, true]})
        );
        let back = Node::from_json(&j).unwrap();
        assert_eq!(back.attribute("count").and_then(Node::as_i64), Some(0));
        let typed =
            Node::from_json(&serde_json::json!({"$type": "uint64", "$value": "5"})).unwrap();
        assert_eq!(typed.value, Value::Uint64(5));
        assert!(Node::from_json(&serde_json::json!({"$type": "nope", "$value": "5"})).is_err());
    }
}
