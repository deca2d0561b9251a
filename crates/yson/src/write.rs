//! The YSON text writer (compact form, every string quoted, so output is always re-parseable).

use crate::{Map, Node, Value};
use std::fmt::Write;

/// Renders a node as compact YSON text.
pub fn to_text(node: &Node) -> String {
    let mut out = String::new();
    write_node(&mut out, node);
    out
}

/// Renders items as a list fragment, one item per line followed by `;` (how tables stream).
pub fn to_text_list_fragment(items: &[Node]) -> String {
    let mut out = String::new();
    for item in items {
        write_node(&mut out, item);
        out.push_str(";\n");
    }
    out
}

fn write_node(out: &mut String, node: &Node) {
    if !node.attributes.is_empty() {
        out.push('<');
        write_map_items(out, &node.attributes);
        out.push('>');
    }
    match &node.value {
        Value::Entity => out.push('#'),
        Value::Boolean(true) => out.push_str("%true"),
        Value::Boolean(false) => out.push_str("%false"),
        Value::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Uint64(u) => {
            let _ = write!(out, "{u}u");
        }
        Value::Double(d) => write_double(out, *d),
        Value::String(s) => write_string(out, s),
        Value::List(items) => {
            out.push('[');
            for item in items {
                write_node(out, item);
                out.push(';');
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            write_map_items(out, m);
            out.push('}');
        }
    }
}

fn write_map_items(out: &mut String, map: &Map) {
    for (k, v) in map {
        write_string(out, k);
        out.push('=');
        write_node(out, v);
        out.push(';');
    }
}

fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("%nan");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "%inf" } else { "%-inf" });
    } else {
        let s = format!("{d:?}");
        // `{:?}` gives "4.0"; YSON wants a dot or exponent, which this always has.
        out.push_str(&s);
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn round_trip() {
        let text = br#"<"a"=1u;>{"k"=[%true;#;-3;2.5;"x\"y\n";{}];"e"=%nan;}"#;
        let n = parse(text).unwrap();
        let again = parse(to_text(&n).as_bytes()).unwrap();
        assert_eq!(to_text(&n), to_text(&again));
        assert_eq!(to_text(&parse(b"4.").unwrap()), "4.0");
    }
}
