//! A schema parsed by its type: the registry's stored (canonical) text, its fingerprint,
//! and the parsed form the compatibility checks and validation use.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{SchemaError, avro, json, limits};

/// A schema's type, spelled as Confluent's `schemaType` member spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// Apache Avro (the default when a request names no type, as in Confluent).
    Avro,
    /// JSON Schema (drafts 4 to 2020-12, by `$schema`; 2020-12 when it names none).
    Json,
}

impl SchemaType {
    /// Parses Confluent's `schemaType`: `AVRO` or `JSON` (`PROTOBUF` and others are refused).
    ///
    /// # Errors
    /// [`SchemaError::InvalidSchema`] naming the type.
    pub fn parse(name: &str) -> Result<SchemaType, SchemaError> {
        match name {
            "AVRO" => Ok(SchemaType::Avro),
            "JSON" => Ok(SchemaType::Json),
            other => Err(SchemaError::InvalidSchema {
                reason: format!("schemaType: '{other}' is not supported (AVRO or JSON)"),
            }),
        }
    }

    /// The name Confluent uses (`AVRO`, `JSON`).
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
        }
    }
}

/// The parsed form, by type.
#[derive(Debug)]
pub enum Parsed {
    /// An Avro schema.
    Avro(apache_avro::Schema),
    /// A JSON Schema: the document and its compiled validator.
    Json {
        /// The schema document.
        document: Value,
        /// The validator compiled from it (no remote `$ref`s are fetched).
        validator: Box<jsonschema::Validator>,
    },
}

/// A schema the registry accepted as valid for its type.
///
/// Invariant: `canonical` parses back to the same schema; two texts with the same
/// `(schema_type, canonical)` are the same schema and get the same global id.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    schema_type: SchemaType,
    canonical: String,
    parsed: Arc<Parsed>,
}

impl ParsedSchema {
    /// Parses `text` as a schema of `schema_type`.
    ///
    /// The canonical text is the JSON of the schema, compact, with object members sorted
    /// by name: whitespace and member order do not make a new schema, everything else
    /// (defaults, aliases, docs) does, as it can change what readers do.
    ///
    /// # Errors
    /// [`SchemaError::InvalidSchema`] saying why (not JSON, not a schema of its type, over
    /// [`limits::SCHEMA_BYTES_MAX`]).
    pub fn parse(schema_type: SchemaType, text: &str) -> Result<ParsedSchema, SchemaError> {
        if text.len() > limits::SCHEMA_BYTES_MAX {
            return Err(invalid(format!(
                "schema: {} bytes, more than the {} allowed",
                text.len(),
                limits::SCHEMA_BYTES_MAX
            )));
        }
        let document: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("schema: not JSON: {e}")))?;
        let document = sorted(&document);
        let canonical = document.to_string();
        let parsed = match schema_type {
            SchemaType::Avro => Parsed::Avro(avro::parse(&document)?),
            SchemaType::Json => Parsed::Json {
                validator: Box::new(json::compile(&document)?),
                document,
            },
        };
        Ok(ParsedSchema {
            schema_type,
            canonical,
            parsed: Arc::new(parsed),
        })
    }

    /// The schema's type.
    pub fn schema_type(&self) -> SchemaType {
        self.schema_type
    }

    /// The canonical text (what the registry stores and answers with).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The parsed form.
    pub fn parsed(&self) -> &Parsed {
        &self.parsed
    }

    /// A fingerprint, as lowercase hex: for Avro the 64-bit Rabin fingerprint (CRC-64-AVRO)
    /// of the Parsing Canonical Form (Avro specification, "Schema Fingerprints"), so
    /// schemas differing only in docs or defaults share it; for JSON Schema the XXH3-128 of
    /// the canonical text.
    pub fn fingerprint(&self) -> String {
        match &*self.parsed {
            Parsed::Avro(s) => s
                .fingerprint::<apache_avro::rabin::Rabin>()
                .bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            Parsed::Json { .. } => {
                format!(
                    "{:032x}",
                    xxhash_rust::xxh3::xxh3_128(self.canonical.as_bytes())
                )
            }
        }
    }
}

fn invalid(reason: String) -> SchemaError {
    SchemaError::InvalidSchema { reason }
}

/// `v` with every object's members in name order (whatever map the JSON crate is built with).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_member_order_are_not_a_new_schema() {
        let a = ParsedSchema::parse(
            SchemaType::Avro,
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#,
        )
        .unwrap();
        let b = ParsedSchema::parse(
            SchemaType::Avro,
            r#"{ "fields": [ {"type": "int", "name": "a"} ], "name": "r", "type": "record" }"#,
        )
        .unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
    }

    #[test]
    fn bad_schemas_are_named() {
        for (t, text, needle) in [
            (SchemaType::Avro, "{", "not JSON"),
            (
                SchemaType::Avro,
                r#"{"type":"record","name":"r"}"#,
                "fields",
            ),
            (SchemaType::Avro, r#""no_such_type""#, "no_such_type"),
            (SchemaType::Json, r#"{"type":"strin"}"#, "type"),
            (SchemaType::Json, r#"{"pattern":"("}"#, "pattern"),
        ] {
            let e = ParsedSchema::parse(t, text).unwrap_err();
            assert_eq!(e.error_code(), 42201, "{text}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        assert_eq!(
            SchemaType::parse("PROTOBUF").unwrap_err().error_code(),
            42201
        );
    }
}
