//! # logbook-server: Logbook's HTTP API (v1)
//!
//! The HTTP face of a Logbook node: streams and records on [`logbook_log`], interactive
//! transactions and key-value reads on [`logbook_txn`], views on [`logbook_views`], health,
//! Prometheus metrics and a generated OpenAPI document. The `logbook serve` command of the
//! `logbook` binary runs it; this crate is the router, the state and the server loop, so
//! tests and other binaries can embed it.
//!
//! ```text
//!  client ─▶ accept loop (connection limit — the oldest idle keep-alive closes for a new
//!            client —, per-address cap, probe reserve)
//!         ─▶ hyper http1 (head ≤ 40 KiB, header timeout = idle timeout)
//!         ─▶ edge: header bytes, credentials, body read against its deadline, in-flight
//!            limit and per-principal quotas (or the long-poll budget), span
//!            {request_id, traceparent}, latency
//!         ─▶ router (body ≤ 16 MiB) ─▶ handler ─▶ library call on the worker, or on the
//!            blocking pool where it may wait; appends and commits await fsync as futures
//!         ◀─ JSON, or problem+json with a stable code and the offending field
//! ```
//!
//! Views ([`logbook_views`]) are opened next to the log and served under `/v1/views`.
//! Nothing here holds data of its own: the log is the source of truth and the transaction
//! store and the views derive from it, so a restart loses only open transactions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), logbook_server::ServerError> {
//! use logbook_server::{Server, ServerConfig};
//! let config = ServerConfig { listen: "127.0.0.1:0".into(), ..ServerConfig::default() };
//! let server = Server::bind(config).await?;
//! println!("listening on {:?}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Module map: [`server`] (listener, connections, open/close; [`admission`] who gets a
//! connection, [`idle`] which idle keep-alive closes for a newcomer; [`head`] the request
//! heads below hyper) → [`edge`] (limits, spans, metrics per request; [`body`] bodies against a
//! deadline, [`quota`] per-principal quotas) → [`api`] (routes) → [`state`] (shared state, transaction
//! registry); [`browser`] refuses what a web page could make a browser send (non-JSON
//! bodies, foreign `Host`s); [`extract`] parses JSON bodies, naming the bad field, and [`ijson`] refuses bodies that are not I-JSON (RFC 7493); [`error`] maps library
//! errors to problems (consistency tokens are `logbook_views::ConsistencyToken`); [`limits`]
//! holds every limit ([`budget`]: the node's partition budget); [`config`] the settings; [`tls`] HTTPS on the listener; [`metrics`] the registry; [`auth`] checks
//! bearer tokens and their scopes before any handler (tokens derived from the `_auth`
//! stream); on a cluster node,
//! [`view_catalog`] keeps view definitions in the replicated log; [`schemas`] is the schema
//! registry (derived from `_schemas`); [`internal_stream`] opens or creates those internal
//! streams. [`phi`] (phi accrual failure detection) and [`rto`] (adaptive request timeouts)
//! are the cluster's pure building blocks (decision 0029), [`deadline`] applies the latter
//! to requests; `peers` (feature `cluster`) feeds them from heartbeats between the nodes.

pub mod admission;
pub mod api;
pub mod auth;
pub mod body;
pub mod browser;
pub mod budget;
pub mod canonical;
#[cfg(feature = "cluster")]
mod certifier;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod edge;
#[cfg(feature = "cluster")]
mod elected;
pub mod error;
pub mod extract;
pub mod groups;
pub mod head;
pub mod idle;
pub mod ijson;
pub mod internal_stream;
pub mod limits;
pub mod metrics;
#[cfg(feature = "cluster")]
mod peers;
pub mod phi;
pub mod privacy;
pub mod quota;
pub mod rto;
pub mod schemas;
mod serde_words;
pub mod server;
pub mod server_error;
pub mod state;
pub mod tls;
pub mod view_catalog;

pub use config::{
    AuthMode, ClusterConfig, ClusterLayer, ConfigError, ConfigLayer, ServerConfig, TlsFiles,
};
pub use error::ApiError;
pub use server::Server;
pub use server_error::ServerError;
pub use state::AppState;
