//! # logbook-api: Logbook's HTTP API v1 on the wire
//!
//! The one place that knows the HTTP contract of a Logbook node: every request and response
//! body ([`streams`], [`txns`], [`views`], [`ops`]), the problem document and its stable
//! codes ([`problem`]), the paths and route templates ([`paths`]) and the limits a client
//! may rely on ([`limits`]). The server (`logbook-server`) registers its routes from
//! [`paths::route`] and serializes these types; clients deserialize them.
//!
//! What it is not: it knows nothing of how a node stores or derives data (no dependency on
//! the log, transaction or views crates). A view spec crosses the wire as JSON that the
//! server parses. With the `openapi` feature the types also derive `utoipa::ToSchema`, for
//! the server's OpenAPI document; clients leave it off.
//!
//! ```
//! use logbook_api::{paths, streams::{AppendBody, RecordIn}};
//! let body = AppendBody::one(RecordIn::new(serde_json::json!({"n": 1})).key("a"));
//! assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"key":"a","value":{"n":1}}"#);
//! assert_eq!(paths::records("orders"), "/v1/streams/orders/records");
//! ```

pub mod limits;
pub mod ops;
pub mod paths;
pub mod problem;
pub mod streams;
pub mod txns;
pub mod views;

pub use problem::{PROBLEM_JSON, Problem, ProblemCode};
