//! Continuous audit: the body of `GET /v1/audit` (issue 18; decision 0028).

use serde::{Deserialize, Serialize};

/// What the node's background auditors have checked and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditStatus {
    /// The segment scrubber: sealed segments of the log re-read at a bounded rate, every
    /// batch's CRC32C checked.
    pub scrubber: ScrubberStatus,
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
