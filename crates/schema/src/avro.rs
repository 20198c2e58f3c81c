//! Avro: parsing, the resolution rules as a compatibility check, and decoding a datum
//! written with one schema as another (the reader-schema resolution views will call).
//!
//! The rules are the Avro specification's "Schema Resolution", as implemented by
//! `apache-avro`'s `schema_compatibility`: a reader field missing from the writer needs a
//! default, a renamed field is found by the reader's aliases, `int` promotes to `long`,
//! `float` and `double`, an enum symbol the reader lacks fails unless the reader has a
//! default. A check that `apache-avro` calls *partial* (it may fail for some data, e.g. a
//! writer union with a branch the reader cannot read) counts as incompatible, as in
//! Confluent's registry.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde_json::Value;

use crate::SchemaError;

/// Parses an Avro schema document.
///
/// # Errors
/// [`SchemaError::InvalidSchema`] with the parser's reason.
pub fn parse(document: &Value) -> Result<Schema, SchemaError> {
    Schema::parse(document).map_err(|e| SchemaError::InvalidSchema {
        reason: format!("schema: not an Avro schema: {e}"),
    })
}

/// Whether data written with `writer` can always be read with `reader`.
///
/// # Errors
/// Why not, as one message.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "some data the writer's schema allows cannot be read (a union branch or enum symbol the reader lacks)"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// Decodes one Avro datum (binary, no header) written with `writer` as `reader` sees it
/// (defaults filled in, aliases followed, types promoted), as JSON.
///
/// # Errors
/// Why the bytes do not decode, or the value has no JSON form (e.g. a NaN).
pub fn decode(writer: &Schema, reader: &Schema, mut datum: &[u8]) -> Result<Value, String> {
    let value = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(|e| e.to_string())?
        .read_value(&mut datum)
        .map_err(|e| e.to_string())?;
    if !datum.is_empty() {
        return Err(format!("{} bytes after the datum", datum.len()));
    }
    Value::try_from(value).map_err(|e| e.to_string())
}
