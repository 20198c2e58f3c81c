//! Derived streams: the bodies of `/v1/derived-streams` and `/v1/derived-streams/{name}`
//! (decision 0031). The spec crosses the wire as JSON, as a view spec does: the server
//! parses and checks it, naming the field of an error.

use serde::{Deserialize, Serialize};

/// One source partition's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedPartitionOut {
    /// The source partition.
    pub partition: u32,
    /// Next input offset to read: every record below it has its output in the target.
    pub next: u64,
    /// The source partition's end offset now.
    pub end: u64,
    /// Output records appended since the processor started.
    pub emitted: u64,
    /// Input records skipped since the processor started (their value is not JSON; with
    /// `unique`, also a claim not keyed by its constrained value).
    pub skipped: u64,
}

/// A derived stream: its spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedStreamOut {
    /// Its name.
    pub name: String,
    /// Its spec: `source`, `target`, `filter`, `fields`, `key_by`, `unique`, `ledger`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: serde_json::Value,
    /// The creation's position in the catalog; part of its outputs' request ids.
    pub generation: u64,
    /// Per source partition (empty while the processor reads its target back after a
    /// start).
    pub partitions: Vec<DerivedPartitionOut>,
    /// The error that stopped a processor, if any.
    pub error: Option<String>,
}

/// Every derived stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedStreamList {
    /// By name.
    pub derived_streams: Vec<DerivedStreamOut>,
}
