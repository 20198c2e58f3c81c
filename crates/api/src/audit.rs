//! Continuous audit: the body of `GET /v1/audit` (issue 18; decision 0028).

use serde::{Deserialize, Serialize};

/// What the node's background auditors have checked and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditStatus {
    /// The segment scrubber: sealed segments of the log re-read at a bounded rate, every
    /// batch's CRC32C checked.
    pub scrubber: ScrubberStatus,
    /// The view auditor.
    pub views: ViewAuditorStatus,
}

/// The segment scrubber's totals since the node started, and the damage it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrubberStatus {
    /// `running`; `off` (`scrub_rate_mb_per_s = 0`); `not_available` on a cluster node,
    /// whose log is in NATS JetStream (its servers keep their own checksums).
    pub state: String,
    /// The rate limit, in MB (10^6 bytes) per second.
    pub rate_mb_per_s: u64,
    /// Bytes of sealed segments read and checked.
    pub bytes_scrubbed: u64,
    /// Batches that verified.
    pub batches_scrubbed: u64,
    /// Segments checked.
    pub segments_scrubbed: u64,
    /// Passes finished over every sealed segment.
    pub passes: u64,
    /// Damaged places found (each counted once).
    pub errors: u64,
    /// The latest damaged places found, oldest first (at most 64).
    pub findings: Vec<ScrubberFinding>,
}

/// A damaged place in a sealed segment: the first bad batch of that segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrubberFinding {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The segment file, as the node names it.
    pub file: String,
    /// Byte offset of the bad batch in the file (0: the segment header).
    pub file_offset: u64,
    /// What is wrong there (e.g. a checksum mismatch with both values).
    pub reason: String,
}

/// The view auditor: each view recomputed from the log up to the offsets the live version
/// applied, its digest compared with the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewAuditorStatus {
    /// `running`; `off` (`audit_interval_s = 0`); `not_available` on a cluster node (not
    /// built there yet).
    pub state: String,
    /// Seconds between rounds; each round audits every view in turn.
    pub interval_s: u64,
    /// Each audit's pace, records recomputed per second (0: unpaced).
    pub records_per_s: u64,
    /// Most bytes one audit may hold (the recomputed state, and the stored checkpoints
    /// while they are compared); a view that needs more is skipped with a note (0 when
    /// the auditor is off).
    pub memory_bytes_max: u64,
    /// Whether a mismatch is repaired: the view rebuilt from the log and switched to.
    pub repair: bool,
    /// Rounds finished.
    pub rounds: u64,
    /// Per view, by name: its latest audit.
    pub views: Vec<ViewAudit>,
}

/// What the view auditor knows of one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewAudit {
    /// The view.
    pub view: String,
    /// Audits finished.
    pub audits: u64,
    /// Audits that found the live view or its stored checkpoints different from the
    /// recomputation.
    pub mismatches: u64,
    /// The latest audit, once one finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ViewAuditReport>,
    /// Why the latest audit did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The version the auditor switched to after the latest mismatch (repair on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_to: Option<u64>,
}

/// One audit of one view version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewAuditReport {
    /// The version audited (the current one then).
    pub version: u64,
    /// `match`, `mismatch` (of the live state or of the stored checkpoints: see
    /// `checkpoint`), or `skipped` (see `note`).
    pub verdict: String,
    /// Why it was skipped (e.g. retention deleted records the view applied, or the
    /// recomputation outgrew the audit's memory budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Per partition, the offsets both sides were compared at (next offset to apply).
    pub applied: std::collections::BTreeMap<u32, u64>,
    /// The live version's digest there (rows, 32 hex digits).
    pub live_digest: AuditDigest,
    /// The recomputed digest there.
    pub recomputed_digest: AuditDigest,
    /// On a mismatch, the first rows that differ in key order (at most 3).
    pub differences: Vec<AuditRowDifference>,
    /// The stored checkpoints — what a restart would load — compared with the
    /// recomputation at their own offsets (absent when the audit did not get that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointAudit>,
}

/// A version's stored checkpoints compared with the recomputation at their offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointAudit {
    /// `match`, or `mismatch`: rows, an apply state or the processor's contributions
    /// differ, or a checkpoint cannot be loaded (see `notes`).
    pub verdict: String,
    /// Per partition, the offset its checkpoint is at (next offset to apply).
    pub applied: std::collections::BTreeMap<u32, u64>,
    /// The digest of the rows as a restart would load them.
    pub stored_digest: AuditDigest,
    /// The recomputed digest there.
    pub recomputed_digest: AuditDigest,
    /// What differs besides rows, one line per finding, naming the partition.
    pub notes: Vec<String>,
    /// On a mismatch of rows, the first that differ in key order (at most 3).
    pub differences: Vec<CheckpointRowDifference>,
}

/// A row that differs between a stored checkpoint and the recomputation (absent on one
/// side: missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointRowDifference {
    /// The row key.
    pub key: String,
    /// The row as the stored checkpoint has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub stored: Option<serde_json::Value>,
    /// The recomputed row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub recomputed: Option<serde_json::Value>,
}

/// An order-independent digest of a view's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditDigest {
    /// Rows counted (index views: primary keys).
    pub rows: u64,
    /// Sum modulo 2^128 of XXH3-128 of each row's canonical JSON, as 32 hex digits.
    pub hash: String,
}

/// A row that differs: as the live version has it and as the log says it should be
/// (absent on one side: missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRowDifference {
    /// The row key.
    pub key: String,
    /// The live version's row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub live: Option<serde_json::Value>,
    /// The recomputed row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub recomputed: Option<serde_json::Value>,
}
