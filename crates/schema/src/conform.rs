//! Whether a record's value conforms to a schema: the check on the write path of a stream
//! bound to a subject (issue 20, item 2), and the Confluent wire format's framing.
//!
//! ```text
//!  Confluent wire format:  0x00 | schema id (u32, big-endian) | Avro binary or JSON text
//! ```

use serde_json::Value;

use crate::schema::{Parsed, ParsedSchema};

/// The magic byte that opens the Confluent wire format.
pub const WIRE_MAGIC: u8 = 0;
/// Bytes before the payload in the Confluent wire format.
pub const WIRE_HEADER_BYTES: usize = 5;

/// Why a value does not conform: the place in the value (a JSON Pointer, empty for the
/// whole value) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if path.is_empty() { "the value" } else { path.as_str() })]
pub struct Nonconforming {
    /// JSON Pointer of the failing field in the value ("" for the whole value).
    pub path: String,
    /// Why.
    pub reason: String,
}

fn whole(reason: impl Into<String>) -> Nonconforming {
    Nonconforming {
        path: String::new(),
        reason: reason.into(),
    }
}

/// Splits Confluent's wire format into the schema id and the payload.
///
/// # Errors
/// [`Nonconforming`] when the bytes are shorter than the header or the magic byte is not 0.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), Nonconforming> {
    match bytes {
        [WIRE_MAGIC, a, b, c, d, payload @ ..] => {
            Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload))
        }
        [other, ..] if *other != WIRE_MAGIC => Err(whole(format!(
            "not the Confluent wire format: magic byte {other}, not 0"
        ))),
        _ => Err(whole(format!(
            "not the Confluent wire format: {} bytes, fewer than the {WIRE_HEADER_BYTES}-byte header",
            bytes.len()
        ))),
    }
}

impl ParsedSchema {
    /// Checks a JSON value: against a JSON Schema by validation (the first failure, with its
    /// path); against an Avro schema by resolving the value as Avro's JSON-like form (records
    /// as objects; no path: the Avro library does not give one).
    ///
    /// # Errors
    /// [`Nonconforming`] saying where and why.
    pub fn check_json(&self, value: &Value) -> Result<(), Nonconforming> {
        match self.parsed() {
            Parsed::Json { validator, .. } => match crate::json::first_failure(validator, value) {
                None => Ok(()),
                Some((path, reason)) => Err(Nonconforming { path, reason }),
            },
            Parsed::Avro(schema) => {
                let v = apache_avro::types::Value::try_from(value.clone())
                    .map_err(|e| whole(e.to_string()))?;
                v.resolve(schema)
                    .map(|_| ())
                    .map_err(|e| whole(e.to_string()))
            }
        }
    }

    /// Checks a serialized payload (the bytes after the wire format's header): an Avro
    /// datum must decode whole with this schema; a JSON payload must parse and validate.
    ///
    /// # Errors
    /// [`Nonconforming`] saying where and why.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), Nonconforming> {
        match self.parsed() {
            Parsed::Avro(schema) => crate::avro::decode(schema, schema, payload)
                .map(|_| ())
                .map_err(whole),
            Parsed::Json { .. } => {
                let value: Value =
                    serde_json::from_slice(payload).map_err(|e| whole(format!("not JSON: {e}")))?;
                self.check_json(&value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SchemaType;
    use serde_json::json;

    #[test]
    fn wire_format_is_split_or_refused_by_name() {
        assert_eq!(
            split_wire(&[0, 0, 0, 1, 7, 42]).unwrap(),
            (263, &[42u8][..])
        );
        assert_eq!(split_wire(&[0, 0, 0, 0, 9]).unwrap(), (9, &[][..]));
        assert!(
            split_wire(&[1, 0, 0, 0, 9])
                .unwrap_err()
                .reason
                .contains("magic byte 1")
        );
        assert!(split_wire(&[0, 0]).unwrap_err().reason.contains("2 bytes"));
        assert!(split_wire(&[]).is_err());
    }

    #[test]
    fn json_schema_failures_name_the_field() {
        let s = ParsedSchema::parse(
            SchemaType::Json,
            r#"{"type":"object","properties":{"delay":{"type":"integer"}},"required":["delay"]}"#,
        )
        .unwrap();
        assert!(s.check_json(&json!({"delay": 3})).is_ok());
        let e = s.check_json(&json!({"delay": "late"})).unwrap_err();
        assert_eq!(e.path, "/delay");
        assert!(s.check_payload(br#"{"delay": 3}"#).is_ok());
        assert!(
            s.check_payload(b"{")
                .unwrap_err()
                .reason
                .starts_with("not JSON")
        );
    }

    #[test]
    fn avro_values_and_datums_are_checked() {
        let s = ParsedSchema::parse(
            SchemaType::Avro,
            r#"{"type":"record","name":"r","fields":[{"name":"n","type":"long"}]}"#,
        )
        .unwrap();
        assert!(s.check_json(&json!({"n": 5})).is_ok());
        assert!(s.check_json(&json!({"n": "five"})).is_err());
        // Avro's zig-zag varint: 5 → 0x0a.
        assert!(s.check_payload(&[0x0a]).is_ok());
        assert!(
            s.check_payload(&[0x0a, 0x00])
                .unwrap_err()
                .reason
                .contains("after the datum")
        );
        assert!(s.check_payload(&[]).is_err());
    }
}
