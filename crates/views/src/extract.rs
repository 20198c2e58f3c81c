//! Decoding a record's value once, keeping only the members a view reads.
//!
//! A view reads a handful of field paths (filter, projection, index fields, group-by and
//! aggregate inputs), but a record may carry dozens of members. [`parse_members`] validates the
//! whole value exactly as `serde_json::from_slice::<Value>` does — same syntax, UTF-8, number
//! range and nesting-depth checks, same "last duplicate member wins" — yet builds owned
//! values only for the top-level members whose names start a path the view reads; every
//! other member is walked without allocating. Looking a view's paths up in the result gives
//! the same scalars as looking them up in the fully parsed value, so the view's state is
//! bit-for-bit what a full parse would give (docs/DESIGN.md rule 2).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The record's value as a view sees it — `None` deletes (empty, JSON `null`, not JSON) —
/// keeping only the top-level `members` (`None`: all). A top-level value that is not an
/// object yields a non-null placeholder in which every path is missing, as in the original.
pub fn parse_members(bytes: &[u8], members: Option<&[String]>) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    let Some(members) = members else {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Null) | Err(_) => None,
            Ok(v) => Some(v),
        };
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Top { members }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    v
}

/// The top-level value: an object keeps the wanted members; anything else is checked and
/// replaced by a placeholder (`None` for `null`).
struct Top<'m> {
    members: &'m [String],
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(true)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(true)))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(true)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(true)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(true)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Some(Value::Bool(true)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(wanted) = map.next_key_seed(Wanted {
            members: self.members,
        })? {
            match wanted {
                Some(i) => {
                    let v: Value = map.next_value()?;
                    out.insert(self.members[i].clone(), v);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

/// A member name: its index in the wanted list, if wanted (no allocation either way).
struct Wanted<'m> {
    members: &'m [String],
}

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.members.binary_search_by(|m| m.as_str().cmp(s)).ok())
    }
}

/// A value that is fully checked as `Value` would check it (strings decoded and UTF-8
/// checked, numbers parsed, nesting depth limited) but not kept.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(b: &[u8]) -> Option<Value> {
        parse_members(b, None)
    }

    #[test]
    fn same_validity_and_members_as_a_full_parse() {
        let members = vec!["a".to_string(), "c".to_string()];
        let cases: Vec<&[u8]> = vec![
            br#"{"a":1,"b":{"x":[1,2,{"y":null}]},"c":"s"}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"b":"\ud800"}"#,
            br#"{"b":1e999}"#,
            b"{\"b\":\"\xff\"}",
            br#"{"a":1} x"#,
            br#"{"a":1,}"#,
            b"null",
            b"[1,2]",
            b"7",
            br#""s""#,
            b"",
            br#"{"c\u0061":1,"\u0061":true}"#,
            br#"{"a":18446744073709551616}"#,
        ];
        for c in cases {
            let f = full(c);
            let p = parse_members(c, Some(&members));
            assert_eq!(f.is_some(), p.is_some(), "{}", String::from_utf8_lossy(c));
            if let (Some(Value::Object(f)), Some(Value::Object(p))) = (&f, &p) {
                for m in &members {
                    assert_eq!(f.get(m), p.get(m), "{}", String::from_utf8_lossy(c));
                }
            }
        }
        let deep = format!("{{\"b\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            full(deep.as_bytes()).is_some(),
            parse_members(deep.as_bytes(), Some(&members)).is_some()
        );
    }
}
