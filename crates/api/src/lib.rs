//! # logbook-api: Logbook's HTTP API v1 on the wire
//!
//! The one place that knows the HTTP contract of a Logbook node: every request and response
//! body ([`streams`], [`txns`], [`views`], [`ops`], [`auth`]), the problem document and its stable
//! codes ([`problem`]), the paths and route templates ([`paths`]), consistency tokens
//! ([`token`]) and the limits a client may rely on ([`limits`]). The server
//! (`logbook-server`) registers its routes from [`paths::route`] and serializes these types;
//! clients deserialize them. With the `client` feature (on by default) it is also the typed
//! Rust client, `client::Client` (async, tokio) and `client::blocking::Client`: exactly-once
//! writes through request ids, retries with backoff, unknown outcomes reported as unknown,
//! and a session that gives read-your-writes and monotonic reads (see `examples/client_tour.rs`).
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
//!
//! A client, against a running `logbook serve`:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn demo() -> Result<(), logbook_api::client::ClientError> {
//! use logbook_api::client::{Client, ReadOptions};
//! use logbook_api::streams::RecordIn;
//! let client = Client::new("127.0.0.1:7700")?;
//! client.append("orders", RecordIn::new(serde_json::json!({"total": 12})).key("o-1")).await?;
//! let row = client.get_row("orders_by_id", "o-1", &ReadOptions::default()).await?;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
pub mod data_subjects;
pub mod derived;
pub mod groups;
pub mod limits;
mod objects;
pub mod ops;
pub mod paths;
pub mod problem;
pub mod schemas;
pub mod streams;
pub mod token;
pub mod txns;
pub mod views;

pub use problem::{PROBLEM_JSON, Problem, ProblemCode};
