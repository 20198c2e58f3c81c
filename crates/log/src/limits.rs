//! Every limit of the log, in one place.
//!
//! Each limit has a named error ([`crate::LogError`]) that says which limit was hit and by how
//! much. The relations between limits are checked at compile time at the bottom of this file.

/// Largest encoded record in bytes (key + value + headers + framing). Default 1 MiB.
pub const RECORD_BYTES_MAX: u32 = 1024 * 1024;
/// Largest record key in bytes.
pub const KEY_BYTES_MAX: u32 = 4 * 1024;
/// Most headers on one record.
pub const HEADER_COUNT_MAX: u32 = 64;
/// Largest total of header names and values on one record, in bytes.
pub const HEADER_BYTES_MAX: u32 = 16 * 1024;
/// Largest header name in bytes (names are UTF-8).
pub const HEADER_NAME_BYTES_MAX: u32 = 256;
/// Most records in one append (one batch on disk).
pub const BATCH_RECORDS_MAX: u32 = 100_000;
/// Largest encoded batch in bytes.
pub const BATCH_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Most streams in one data directory.
pub const STREAMS_MAX: u32 = 1024;
/// Most partitions in one stream.
pub const PARTITIONS_MAX: u32 = 256;
/// Longest stream name in bytes (`[A-Za-z0-9._-]`, not starting with `.`).
pub const STREAM_NAME_BYTES_MAX: u32 = 128;
/// Smallest allowed `segment_bytes_max` (small values are useful in tests).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest allowed `segment_bytes_max`: file positions in the offset index are `u32`.
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 1024 * 1024 * 1024;
/// Default `segment_bytes_max`: 128 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;
/// One sparse-index entry is written for at least every this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u32 = 4 * 1024;
/// Appends waiting for a partition's writer; a full queue makes `append` wait (backpressure).
/// 1,024: a group commit takes every queued append, and the queue's slots are allocated when
/// the partition opens, so they are kept under 128 KiB per partition (checked in
/// `partition.rs`; issue 17, item 6).
pub const APPEND_QUEUE_DEPTH: usize = 1024;
/// Bytes of encoded batches that may wait in one partition's queue; a full queue makes
/// `append` wait (backpressure). 64 MiB.
pub const QUEUED_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The writer stops gathering appends into one group commit at this many bytes.
pub const GROUP_COMMIT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest accepted distance of a caller-supplied timestamp from the log's clock, in ms (1 day).
pub const TIMESTAMP_SKEW_MS_MAX: i64 = 24 * 60 * 60 * 1000;
/// Furthest ahead of the local wall clock, in ms, a timestamp read from the log may be and
/// still move this node's hybrid logical clock (500, the default `max_clock_offset_ms` of a
/// cluster node and CockroachDB's): a node's clock further off is one the clock watch removes,
/// and a caller's own timestamp (up to [`TIMESTAMP_SKEW_MS_MAX`] away) must not drag every
/// node's clock with it (`crate::hlc`, decision 0022).
pub const HLC_AHEAD_MS_MAX: u64 = 500;
/// How often the background scrubber reads its allowance of sealed segments, in ms: its rate
/// limit is kept per tick of this length (`crate::scrub`).
pub const SCRUB_TICK_MS: u64 = 1000;
/// Most damaged places the scrubber lists (the latest ones; the count goes on).
pub const SCRUB_FINDINGS_MAX: usize = 64;
/// Most damaged places the scrubber remembers, so that one seen again in the next pass is not
/// counted and logged again.
pub const SCRUB_DAMAGE_REMEMBERED_MAX: usize = 4096;

const _: () = assert!(HLC_AHEAD_MS_MAX < TIMESTAMP_SKEW_MS_MAX as u64);
const _: () = assert!(KEY_BYTES_MAX < RECORD_BYTES_MAX);
const _: () = assert!(HEADER_BYTES_MAX < RECORD_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX < BATCH_BYTES_MAX);
const _: () = assert!((BATCH_BYTES_MAX as u64) <= SEGMENT_BYTES_MAX_LIMIT);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX_LIMIT);
// Segment positions must fit the u32 file positions of the index, with room for one
// oversized batch past the roll threshold.
const _: () = assert!(SEGMENT_BYTES_MAX_LIMIT + (BATCH_BYTES_MAX as u64) < u32::MAX as u64);
const _: () = assert!(HEADER_NAME_BYTES_MAX <= u16::MAX as u32);
const _: () = assert!(HEADER_COUNT_MAX <= u16::MAX as u32);
const _: () = assert!(GROUP_COMMIT_BYTES_MAX >= BATCH_BYTES_MAX as usize / 4);
const _: () = assert!(QUEUED_BYTES_MAX >= 2 * BATCH_BYTES_MAX as u64);
const _: () = assert!(SCRUB_FINDINGS_MAX <= SCRUB_DAMAGE_REMEMBERED_MAX);
const _: () = assert!(SCRUB_TICK_MS > 0);
