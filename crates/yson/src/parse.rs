//! The YSON parser: text and binary tokens may be mixed, as the format allows.

use crate::{Error, Map, Node, Value};

/// Nesting deeper than this is refused, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 256;

/// Parses one complete YSON document (surrounding whitespace allowed).
pub fn parse(input: &[u8]) -> Result<Node, Error> {
    let mut p = Parser { input, pos: 0 };
    let node = p.node(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error("unexpected data after the value"));
    }
    Ok(node)
}

/// Parses a list fragment: `item; item; ...` without brackets (how tables are streamed).
pub fn parse_list_fragment(input: &[u8]) -> Result<Vec<Node>, Error> {
    let mut p = Parser { input, pos: 0 };
    let mut items = Vec::new();
    loop {
        p.skip_ws();
        if p.pos == input.len() {
            return Ok(items);
        }
        items.push(p.node(1)?);
        p.skip_ws();
        if !p.eat(b';') && p.pos != input.len() {
            return Err(p.error("expected ';' between list fragment items"));
        }
    }
}

/// Parses a map fragment: `key=value; ...` without braces (how `X-YT-Parameters` may come).
pub fn parse_map_fragment(input: &[u8]) -> Result<Map, Error> {
    let mut p = Parser { input, pos: 0 };
    p.map_items(None, 1)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{}'", b as char)))
        }
    }

    fn node(&mut self, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.skip_ws();
        let attributes = if self.eat(b'<') {
            self.map_items(Some(b'>'), depth + 1)?
        } else {
            Vec::new()
        };
        self.skip_ws();
        let value = self.value(depth)?;
        Ok(Node { attributes, value })
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let Some(b) = self.peek() else {
            return Err(self.error("unexpected end of input, expected a value"));
        };
        match b {
            b'{' => {
                self.pos += 1;
                Ok(Value::Map(self.map_items(Some(b'}'), depth + 1)?))
            }
            b'[' => {
                self.pos += 1;
                self.list_items(depth + 1).map(Value::List)
            }
            b'"' => self.quoted_string().map(Value::String),
            b'#' => {
                self.pos += 1;
                Ok(Value::Entity)
            }
            b'%' => self.percent_literal(),
            b'-' | b'+' | b'0'..=b'9' => self.number(),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => Ok(Value::String(self.unquoted_string())),
            0x01 => self.binary_string().map(Value::String),
            0x02 => {
                self.pos += 1;
                let v = self.varint()?;
                Ok(Value::Int64(((v >> 1) as i64) ^ -((v & 1) as i64)))
            }
            0x03 => {
                self.pos += 1;
                let bytes = self.take(8)?;
                let mut buf = [0u8; 8];
                buf.copy_from_slice(bytes);
                Ok(Value::Double(f64::from_le_bytes(buf)))
            }
            0x04 => {
                self.pos += 1;
                Ok(Value::Boolean(false))
            }
            0x05 => {
                self.pos += 1;
                Ok(Value::Boolean(true))
            }
            0x06 => {
                self.pos += 1;
                self.varint().map(Value::Uint64)
            }
            other => Err(self.error(format!("unexpected byte 0x{other:02x}"))),
        }
    }

    /// Items up to `close` (or the end of input when `close` is `None`).
    fn map_items(&mut self, close: Option<u8>, depth: usize) -> Result<Map, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        let mut items: Map = Vec::new();
        loop {
            self.skip_ws();
            match (self.peek(), close) {
                (None, None) => return Ok(items),
                (None, Some(c)) => {
                    return Err(self.error(format!("unterminated map, expected '{}'", c as char)))
                }
                (Some(b), Some(c)) if b == c => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {}
            }
            let key = self.key()?;
            self.expect(b'=')?;
            let value = self.node(depth)?;
            if let Some(slot) = items.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else {
                items.push((key, value));
            }
            self.skip_ws();
            if !self.eat(b';') {
                self.skip_ws();
                match (self.peek(), close) {
                    (None, None) => return Ok(items),
                    (Some(b), Some(c)) if b == c => {}
                    _ => return Err(self.error("expected ';' or the end of the map")),
                }
            }
        }
    }

    fn list_items(&mut self, depth: usize) -> Result<Vec<Node>, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b']') {
                return Ok(items);
            }
            if self.peek().is_none() {
                return Err(self.error("unterminated list, expected ']'"));
            }
            items.push(self.node(depth)?);
            self.skip_ws();
            if !self.eat(b';') {
                self.skip_ws();
                if self.peek() != Some(b']') {
                    return Err(self.error("expected ';' or ']'"));
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some(b'"') => self.quoted_string(),
            Some(0x01) => self.binary_string(),
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'_') => Ok(self.unquoted_string()),
            _ => Err(self.error("expected a map key")),
        }
    }

    fn unquoted_string(&mut self) -> String {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/') {
                self.pos += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.input[start..self.pos]).into_owned()
    }

    fn quoted_string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'\\' => out.push(b'\\'),
                        b'"' => out.push(b'"'),
                        b'\'' => out.push(b'\''),
                        b'x' => {
                            let hex = self.take(2)?;
                            let s = std::str::from_utf8(hex).map_err(|_| self.error("bad \\x"))?;
                            let v = u8::from_str_radix(s, 16)
                                .map_err(|_| self.error("bad \\x escape"))?;
                            out.push(v);
                        }
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        self.pos += 1;
                                        v = v * 8 + u32::from(d - b'0');
                                    }
                                    _ => break,
                                }
                            }
                            out.push(u8::try_from(v).map_err(|_| self.error("bad octal"))?);
                        }
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                other => out.push(other),
            }
        }
    }

    fn binary_string(&mut self) -> Result<String, Error> {
        self.pos += 1;
        let v = self.varint()?;
        let len = ((v >> 1) as i64) ^ -((v & 1) as i64);
        let len = usize::try_from(len).map_err(|_| self.error("negative string length"))?;
        let bytes = self.take(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.input.len())
            .ok_or_else(|| self.error("unexpected end of input"))?;
        let slice = &self.input[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut result: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(b) = self.peek() else {
                return Err(self.error("unexpected end of varint"));
            };
            self.pos += 1;
            if shift >= 64 {
                return Err(self.error("varint too long"));
            }
            result |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(result);
            }
        }
        Err(self.error("varint too long"))
    }

    fn percent_literal(&mut self) -> Result<Value, Error> {
        self.pos += 1;
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphabetic() || b == b'-' || b == b'+' {
                self.pos += 1;
            } else {
                break;
            }
        }
        match &self.input[start..self.pos] {
            b"true" => Ok(Value::Boolean(true)),
            b"false" => Ok(Value::Boolean(false)),
            b"nan" => Ok(Value::Double(f64::NAN)),
            b"inf" | b"+inf" => Ok(Value::Double(f64::INFINITY)),
            b"-inf" => Ok(Value::Double(f64::NEG_INFINITY)),
            _ => {
                self.pos = start;
                Err(self.error("unknown %-literal"))
            }
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let mut is_double = false;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => is_double = true,
                _ => break,
            }
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.input[start..self.pos])
            .map_err(|_| self.error("bad number"))?;
        if self.eat(b'u') {
            return text
                .parse::<u64>()
                .map(Value::Uint64)
                .map_err(|_| self.error(format!("bad unsigned integer {text:?}")));
        }
        if is_double {
            text.parse::<f64>()
                .map(Value::Double)
                .map_err(|_| self.error(format!("bad double {text:?}")))
        } else {
            text.parse::<i64>()
                .map(Value::Int64)
                .map_err(|_| self.error(format!("bad integer {text:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(parse(b"1").unwrap().value, Value::Int64(1));
        assert_eq!(parse(b"-7").unwrap().value, Value::Int64(-7));
        assert_eq!(parse(b"1u").unwrap().value, Value::Uint64(1));
        assert_eq!(parse(b"4.").unwrap().value, Value::Double(4.0));
        assert_eq!(parse(b"1e3").unwrap().value, Value::Double(1000.0));
        assert_eq!(parse(b"%true").unwrap().value, Value::Boolean(true));
        assert_eq!(parse(b" %false ").unwrap().value, Value::Boolean(false));
        assert_eq!(parse(b"#").unwrap().value, Value::Entity);
        assert_eq!(
            parse(b"abc_1").unwrap().value,
            Value::String("abc_1".into())
        );
        assert_eq!(
            parse(br#""a\"b\n\x41\101""#).unwrap().value,
            Value::String("a\"b\nAA".into())
        );
        assert!(matches!(parse(b"%nan").unwrap().value, Value::Double(d) if d.is_nan()));
    }

    #[test]
    fn containers_and_attributes() {
        let n = parse(br#"<"count"=0;>[]"#).unwrap();
        assert_eq!(n.attribute("count").and_then(Node::as_i64), Some(0));
        assert_eq!(n.as_list().map(<[Node]>::len), Some(0));
        let n = parse(b"{a=1;b=[x;y;];c={};}").unwrap();
        assert_eq!(n.as_map().unwrap().len(), 3);
        let n = parse(b"{a=1;b=2}").unwrap();
        assert_eq!(n.get("b").and_then(Node::as_i64), Some(2));
    }

    #[test]
    fn binary_tokens() {
        // string "ab", int64 -1 (zigzag 1), uint64 300, true, double 1.5
        let mut input = vec![
            b'[', 0x01, 4, b'a', b'b', b';', 0x02, 1, b';', 0x06, 0xac, 0x02,
        ];
        input.extend_from_slice(&[b';', 0x05, b';', 0x03]);
        input.extend_from_slice(&1.5f64.to_le_bytes());
        input.push(b']');
        let n = parse(&input).unwrap();
        let items = n.as_list().unwrap();
        assert_eq!(items[0].as_str(), Some("ab"));
        assert_eq!(items[1].as_i64(), Some(-1));
        assert_eq!(items[2].as_u64(), Some(300));
        assert_eq!(items[3].as_bool(), Some(true));
        assert_eq!(items[4].as_f64(), Some(1.5));
    }

    #[test]
    fn fragments() {
        let rows = parse_list_fragment(b"{a=1};{a=2};\n").unwrap();
        assert_eq!(rows.len(), 2);
        let rows = parse_list_fragment(b"{a=1};{a=2}").unwrap();
        assert_eq!(rows.len(), 2);
        assert!(parse_list_fragment(b"").unwrap().is_empty());
        let m = parse_map_fragment(b"path=\"//tmp\";recursive=%true").unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn errors_not_panics() {
        for bad in [
            &b"{"[..],
            b"[1;2",
            b"{a}",
            b"\"abc",
            b"%maybe",
            b"1 2",
            b"<a=1>",
            b"\x01\x7f",
            b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"99999999999999999999",
            b"}",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} should fail",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(10_000);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
