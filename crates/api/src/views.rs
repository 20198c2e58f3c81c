//! Views: the bodies of `/v1/views`, `/v1/views/{view}`, its rows, rebuilds and switches.
//!
//! A view spec crosses the wire as JSON (`serde_json::Value`): the server parses and checks
//! it (its errors name the spec's field), so this crate does not depend on the views engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A gradual rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutOut {
    /// The version receiving this share of reads.
    pub version: u64,
    /// Percent of reads (by key hash).
    pub percent: u8,
}

/// A view as created or listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewOut {
    /// Its name.
    pub view: String,
    /// The current version's spec.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: serde_json::Value,
    /// The version serving reads.
    pub current: u64,
    /// Every version by number (per view: the first is 1; a rebuild adds the next).
    pub versions: Vec<u64>,
    /// A rollout in progress.
    pub rollout: Option<RolloutOut>,
}

/// Every view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewList {
    /// By name.
    pub views: Vec<ViewOut>,
}

/// Rebuild or catch-up progress of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressOut {
    /// Records applied, over all partitions: the sum of the applied offsets (on a cluster,
    /// whose offsets have gaps, a sum of positions rather than a count).
    pub done: u64,
    /// Records in the source stream now: the sum of the end offsets (positions on a
    /// cluster).
    pub total: u64,
    /// `done` per second since the processors started.
    pub rate_per_s: f64,
    /// Seconds to catch up at that rate (null: no rate yet).
    pub eta_s: Option<f64>,
}

/// Status of one version of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusOut {
    /// Version number (per view: 1, 2, …).
    pub version: u64,
    /// Partition → next offset to apply.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub applied: BTreeMap<u32, u64>,
    /// Records not yet applied, over all partitions (on a cluster, whose offsets have gaps,
    /// counted by reading, up to 4,096 per partition: a lower bound beyond).
    pub lag_records: u64,
    /// How far the applied records trail the newest one, by record timestamps, ms.
    pub lag_ms: i64,
    /// Rows a full scan returns: table rows, index values, aggregate groups (counted in
    /// memory on every status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Order-independent checksum of the rows, 32 hex digits (only with `?digest=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Progress.
    pub progress: ProgressOut,
    /// Records left out (row key over the limit).
    pub skipped_records: u64,
    /// Why its processors stopped, if they did.
    pub error: Option<String>,
    /// Partitions where retention deleted records this version had not applied (it cannot
    /// complete: rebuild it). Empty when none.
    #[serde(default)]
    pub below_retention: Vec<crate::streams::BelowRetention>,
    /// Partitions whose first records retention had already deleted when this version began
    /// (it was created or rebuilt on a trimmed stream): it began at the first retained
    /// offset and reflects no record below it. Empty when none.
    #[serde(default)]
    pub retention_gaps: Vec<RetentionGap>,
}

/// Where a view version began in a partition whose first records retention had deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionGap {
    /// The partition.
    pub partition: u32,
    /// The first offset retained when the version began: the records below it are not
    /// reflected in the version.
    pub start: u64,
}

/// A view with its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewDetail {
    /// Its name.
    pub view: String,
    /// The current version's spec.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: serde_json::Value,
    /// The version serving reads.
    pub current: u64,
    /// A rollout in progress.
    pub rollout: Option<RolloutOut>,
    /// Status of the current version.
    pub status: StatusOut,
    /// Status of every version, the current one included.
    pub versions: Vec<StatusOut>,
    /// The view auditor's latest findings for this view (absent until it audited it, and
    /// when the auditor is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::ViewAudit>,
}

/// One row of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewRow {
    /// Table: the record key; index: the indexed value(s); aggregate: the group key.
    pub key: String,
    /// Table: the (projected) record value; index: `{"keys": [...]}`; aggregate: the
    /// group-by fields and the aggregate outputs.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: serde_json::Value,
    /// Partition of the record that last changed the row.
    pub partition: u32,
    /// Offset of that record.
    pub offset: u64,
    /// Request id of that record, if it had one.
    pub request_id: Option<String>,
    /// Point reads: a consistency token of the source positions this answer reflected
    /// (the view's applied offsets); pass it (or merge it into a session) so a later read
    /// never shows less. Absent on the rows of a scan (the scan's answer carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Rows of a range or of a list of keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewRows {
    /// In key order (`keys=`: in the order asked, missing keys left out).
    pub rows: Vec<ViewRow>,
    /// Where the next page starts (pass it as `start`), if there is more.
    pub next: Option<String>,
    /// A consistency token of the source positions this answer reflected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/views/{view}/rebuild` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RebuildBody {
    /// A new spec for the new version; default: the current version's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

/// A rebuild started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rebuilt {
    /// The view.
    pub view: String,
    /// The new version, building from offset 0 while the current one serves.
    pub version: u64,
}

/// `POST /v1/views/{view}/switch` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    /// The version to serve reads.
    pub version: u64,
    /// Share of reads (by key hash) it gets, 0..=100; default 100 (a full switch; 0 ends a
    /// rollout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// Longest wait for the version to catch up with the current one, ms (default 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}
