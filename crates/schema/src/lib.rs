//! Schemas for Logbook's registry (issue 20, decision 0025): Avro and JSON Schema parsed to
//! a canonical form, their compatibility under Confluent Schema Registry's seven levels,
//! and the registry's state derived from its records.
//!
//! ```
//! use logbook_schema::{Level, ParsedSchema, Planned, Registry, SchemaType};
//!
//! let mut registry = Registry::new();
//! let v1 = ParsedSchema::parse(SchemaType::Avro,
//!     r#"{"type":"record","name":"Flight","fields":[{"name":"carrier","type":"string"}]}"#)?;
//! let Planned::New(record) = registry.plan_register("flights-value", &v1)? else { unreachable!() };
//! registry.apply(&record)?; // after appending `record` to the registry's stream
//! assert_eq!(registry.version("flights-value", logbook_schema::VersionSel::Latest, false)?.id, 1);
//!
//! // A field without a default cannot be added under BACKWARD: old data lacks it.
//! let v2 = ParsedSchema::parse(SchemaType::Avro, r#"{"type":"record","name":"Flight","fields":[
//!     {"name":"carrier","type":"string"},{"name":"delay","type":"int"}]}"#)?;
//! assert_eq!(registry.level(Some("flights-value")), Level::Backward);
//! assert_eq!(registry.plan_register("flights-value", &v2).unwrap_err().error_code(), 409);
//! # Ok::<(), logbook_schema::SchemaError>(())
//! ```
//!
//! What this crate is not: it stores nothing and speaks no HTTP. The server appends the
//! [`Record`]s to its internal stream `_schemas` and answers Confluent's REST API from a
//! [`Registry`]; the same records replayed give the same state on every node and after a
//! restart.

pub mod avro;
pub mod compat;
pub mod conform;
mod error;
pub mod json;
pub mod limits;
pub mod registry;
pub mod schema;

pub use compat::{Level, can_read};
pub use conform::{Nonconforming, split_wire};
pub use error::SchemaError;
pub use registry::{Planned, Record, Registered, Registry, VersionSel};
pub use schema::{Parsed, ParsedSchema, SchemaType};
