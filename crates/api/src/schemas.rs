//! The schema registry (issue 20): the bodies of Confluent Schema Registry's REST API as
//! Logbook serves it under `/v1/schema-registry/` ([`crate::paths::route::SCHEMA_REGISTRY`]),
//! member names and shapes as Confluent's, so Confluent's clients and serializers work
//! against Logbook unchanged (give them the base URL `http://HOST:PORT/v1/schema-registry`).
//!
//! ```text
//!  POST /subjects/orders-value/versions {"schema": "{…}"}      ──▶ {"id": 1}
//!  GET  /subjects/orders-value/versions/latest                 ──▶ {"subject", "id", "version", "schema"}
//!  GET  /schemas/ids/1                                         ──▶ {"schema": "{…}"}
//!  POST /compatibility/subjects/orders-value/versions/latest   ──▶ {"is_compatible": false}
//!  PUT  /config/orders-value {"compatibility": "FULL"}         ──▶ {"compatibility": "FULL"}
//! ```
//!
//! Errors are problem documents that also carry Confluent's `error_code` and `message`
//! (see [`crate::problem::Problem`]). A schema's `schemaType` is `AVRO` (the default,
//! omitted in answers, as Confluent does) or `JSON`.

use serde::{Deserialize, Serialize};

/// A schema in a request: registering (`POST /subjects/{subject}/versions`), looking up
/// (`POST /subjects/{subject}`), checking (`POST /compatibility/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SchemaRequest {
    /// The schema's text (an Avro schema or a JSON Schema, as JSON text); at most 1 MiB.
    pub schema: String,
    /// `AVRO` (default) or `JSON`; `PROTOBUF` is refused (422, `error_code` 42201).
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
    /// Schema references: not supported, so only an empty list is taken (else 422,
    /// `error_code` 42201).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<SchemaReference>>,
}

/// A reference from one schema to another (Confluent's shape; refused, see
/// [`SchemaRequest::references`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaReference {
    /// The name the referring schema uses.
    pub name: String,
    /// The subject of the referred schema.
    pub subject: String,
    /// Its version.
    pub version: i64,
}

/// `POST /subjects/{subject}/versions` answer: the schema's global id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredId {
    /// The global id (1, 2, …): the same schema under any subject has one id.
    pub id: u32,
}

/// A subject's version: `GET /subjects/{subject}/versions/{version}`, and the lookup
/// `POST /subjects/{subject}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The schema's global id.
    pub id: u32,
    /// The version (1, 2, …).
    pub version: u32,
    /// The schema's text, in the registry's canonical form (compact JSON, members sorted).
    pub schema: String,
    /// `JSON` for a JSON Schema; absent for Avro.
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
    /// Present (true) only for a soft-deleted version read with `deleted=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// `GET /schemas/ids/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaById {
    /// The schema's text, in the registry's canonical form.
    pub schema: String,
    /// `JSON` for a JSON Schema; absent for Avro.
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
}

/// One (subject, version) that uses a global id: `GET /schemas/ids/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectVersionRef {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
}

/// `POST /compatibility/subjects/{subject}/versions[/{version}]` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompatibilityCheck {
    /// Whether the schema could be registered under the subject's level (against the
    /// version named, or the versions the level names).
    pub is_compatible: bool,
    /// With `verbose=true`: why not, one message per failed check (which version, which
    /// field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<String>>,
}

/// `PUT /config[/{subject}]` body, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompatibilityConfig {
    /// `NONE`, `BACKWARD` (the global default), `BACKWARD_TRANSITIVE`, `FORWARD`,
    /// `FORWARD_TRANSITIVE`, `FULL` or `FULL_TRANSITIVE`.
    pub compatibility: String,
}

/// `GET /config[/{subject}]` answer, and `DELETE /config[/{subject}]` (the level in force
/// before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompatibilityLevel {
    /// The level, as in [`CompatibilityConfig::compatibility`].
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: String,
}

/// `GET /mode` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryMode {
    /// Always `READWRITE`: the registry takes reads and writes (no import or read-only
    /// modes).
    pub mode: String,
}

/// `GET /subjects/{subject}/versions/{version}/schema` answer: the schema itself, as JSON
/// (an object, or a string for a primitive Avro type), in the registry's canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = Value))]
#[serde(transparent)]
pub struct SchemaDocument(
    /// The schema.
    pub serde_json::Value,
);
