//! The log's one error type.

use std::io;
use std::path::PathBuf;

/// Everything the log can fail with. Variants are grouped by what a caller can do about them:
///
/// * **bad input** (`*TooLarge`, `Invalid*`, `Empty*`, `TooMany*`, `Unknown*`, `OffsetOutOfRange`,
///   `TimestampOutOfRange`, `NoDataDirectory`, `NotADirectory`): nothing was changed; fix the
///   request;
/// * **storage** (`Io`, `Corrupt`, `Poisoned`, `UnsupportedFormat`): the disk failed or holds
///   damaged data; `Poisoned` means an earlier write or fsync failed and the partition refuses
///   writes until the log is reopened (which recovers it from what is on disk);
/// * **state** (`Locked`, `Closed`, `StreamExists`);
/// * **a backend other than the embedded log** (`Unavailable`, `OutcomeUnknown`,
///   `Unsupported`, `Backend`): see [`LogError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An encoded record is larger than [`crate::limits::RECORD_BYTES_MAX`].
    #[error("record {index} is {bytes} bytes encoded; the limit is {max} bytes")]
    RecordTooLarge {
        /// Position of the record in its batch.
        index: usize,
        /// Encoded size.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// A key is longer than [`crate::limits::KEY_BYTES_MAX`].
    #[error("record {index}: key is {bytes} bytes; the limit is {max} bytes")]
    KeyTooLarge {
        /// Position of the record in its batch.
        index: usize,
        /// Key length.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// A record has more than [`crate::limits::HEADER_COUNT_MAX`] headers.
    #[error("record {index}: {count} headers; the limit is {max}")]
    TooManyHeaders {
        /// Position of the record in its batch.
        index: usize,
        /// Header count.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// Header names and values of a record exceed [`crate::limits::HEADER_BYTES_MAX`], or a
    /// header name exceeds [`crate::limits::HEADER_NAME_BYTES_MAX`].
    #[error("record {index}: header {field} is {bytes} bytes; the limit is {max} bytes")]
    HeaderTooLarge {
        /// Position of the record in its batch.
        index: usize,
        /// `"name"` of one header, or `"total"` for all headers together.
        field: &'static str,
        /// Size found.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// An append with zero records.
    #[error("an append must carry at least one record")]
    EmptyBatch,
    /// An append with more than [`crate::limits::BATCH_RECORDS_MAX`] records.
    #[error("batch has {count} records; the limit is {max}")]
    BatchTooManyRecords {
        /// Records in the batch.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// An encoded batch is larger than [`crate::limits::BATCH_BYTES_MAX`].
    #[error("batch is {bytes} bytes encoded; the limit is {max} bytes")]
    BatchTooLarge {
        /// Encoded size.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// A caller-supplied timestamp is further than [`crate::limits::TIMESTAMP_SKEW_MS_MAX`]
    /// from the log's clock.
    #[error(
        "record {index}: timestamp_ms {timestamp_ms} is more than {max_skew_ms} ms from the log's clock ({now_ms})"
    )]
    TimestampOutOfRange {
        /// Position of the record in its batch.
        index: usize,
        /// The timestamp given.
        timestamp_ms: i64,
        /// The log's clock when the append was made.
        now_ms: i64,
        /// The limit.
        max_skew_ms: i64,
    },
    /// A request id is empty, longer than 128 bytes, or not printable ASCII.
    #[error("invalid request id {id:?}: {reason}")]
    InvalidRequestId {
        /// The id given (truncated for display).
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The request id was used before for a request with other records (key, value,
    /// headers or record count differ). Nothing was appended.
    #[error(
        "request id {request_id:?} was already used for a different request (record {index} differs); nothing was appended"
    )]
    RequestIdConflict {
        /// The request id.
        request_id: String,
        /// The first record found to differ.
        index: usize,
    },
    /// A record carries a header name reserved for the log (`request-id`, `request-records`).
    #[error("record {index}: header {name:?} is reserved; pass the request id separately")]
    ReservedHeader {
        /// Position of the record in its batch.
        index: usize,
        /// The header name.
        name: String,
    },
    /// A W3C trace context (`traceparent`) that does not parse: it must be
    /// `VERSION-TRACEID-PARENTID-FLAGS` with 2, 32, 16 and 2 lowercase hex digits, version
    /// not `ff`, trace id and parent id not all zeros (<https://www.w3.org/TR/trace-context/>).
    /// Nothing was appended.
    #[error(
        "invalid traceparent {value:?}: {reason} (expected W3C trace context 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>)"
    )]
    InvalidTraceparent {
        /// The value given (truncated for display).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A stream name is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A stream setting is out of range.
    #[error("invalid stream config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The setting, e.g. `partitions` or `segment_bytes_max`.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// Creating one more stream would exceed [`crate::limits::STREAMS_MAX`].
    #[error("the data directory already holds {max} streams, the limit")]
    TooManyStreams {
        /// The limit.
        max: u32,
    },
    /// A stream with this name exists with other settings.
    #[error("stream {name:?} exists with different settings")]
    StreamExists {
        /// The stream.
        name: String,
    },
    /// No stream has this name.
    #[error("unknown stream {name:?}")]
    UnknownStream {
        /// The name given.
        name: String,
    },
    /// The stream has no such partition.
    #[error("stream {stream:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// How many the stream has.
        partitions: u32,
    },
    /// A read started before the first retained offset or after the end of the partition.
    #[error(
        "offset {offset} is outside partition {partition}'s range [{start}, {end}] (start = first retained, end = next to be written)"
    )]
    OffsetOutOfRange {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// First offset still retained.
        start: u64,
        /// Next offset to be written.
        end: u64,
    },
    /// The data directory does not exist, or exists but holds no Logbook data (no
    /// `logbook.json`, no `streams/`), and the log was opened with
    /// [`crate::LogOptions::create_if_missing`] `= false`. Nothing was created.
    #[error("no Logbook data directory at {path}")]
    NoDataDirectory {
        /// The directory asked for.
        path: PathBuf,
    },
    /// The data directory path names something that is not a directory (a file), or a
    /// path through a file. Nothing was created.
    #[error("data directory {path} is not a directory (a file is in the way)")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (e.g. `"write"`, `"fsync"`, `"open"`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Data on disk fails its checksum or structure before the tail of the log.
    #[error("corruption in {path} at byte {file_offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged batch or header within the file.
        file_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file has a format version this build does not read.
    #[error(
        "{path}: format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// An earlier write or fsync of this partition failed; it takes no writes until reopened.
    #[error(
        "partition {partition} of {stream:?} is poisoned by an earlier failure ({cause}); reopen the log to recover"
    )]
    Poisoned {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The failure that poisoned it.
        cause: String,
    },
    /// Another process holds the data directory's lock.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The log or the partition was closed.
    #[error("the log is closed")]
    Closed,
    /// An append's precondition ([`crate::AppendCondition::EndOffset`]) did not hold: the
    /// partition's end offset was not the expected one (another writer appended first).
    /// Nothing of the append was stored.
    #[error(
        "partition {partition} of {stream:?} ends at offset {actual}, not {expected} as the append required; nothing was appended"
    )]
    EndOffsetMismatch {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The end offset the append required.
        expected: u64,
        /// The end offset it found.
        actual: u64,
    },
    /// The backend's engine cannot take the request right now (no server reachable, a
    /// leader election under way). Nothing was stored; retry.
    #[error("the {backend} log is unavailable ({why}); nothing was stored, retry")]
    Unavailable {
        /// The backend, e.g. `jetstream`.
        backend: &'static str,
        /// What the engine or its client said.
        why: String,
    },
    /// An append was sent but no answer came: it may or may not be stored. Never a
    /// failure: retry it with a request id, or read the partition's tail to learn which.
    #[error("no answer from the {backend} log ({why}): the append may or may not be stored")]
    OutcomeUnknown {
        /// The backend, e.g. `jetstream`.
        backend: &'static str,
        /// What the client saw.
        why: String,
    },
    /// The backend does not offer this operation. Nothing was changed.
    #[error("the {backend} log does not support {operation}: {why}")]
    Unsupported {
        /// The backend, e.g. `jetstream`.
        backend: &'static str,
        /// The operation asked for, e.g. `append_with_id`.
        operation: &'static str,
        /// Why, and what to do instead.
        why: String,
    },
    /// Any other failure the backend's engine reported (an API error, a stored message
    /// that is not a valid batch...).
    #[error("the {backend} log failed: {detail}")]
    Backend {
        /// The backend, e.g. `jetstream`.
        backend: &'static str,
        /// What failed.
        detail: String,
    },
}

impl LogError {
    /// Rewrites the record index of a per-record limit error from a position in a sub-batch
    /// (say, one partition's share of a request) to the caller's: record `i` of the
    /// sub-batch is record `indices[i]` of the request. Other errors are returned as they are.
    pub fn remap_record_index(self, indices: &[usize]) -> LogError {
        let map = |i: usize| indices.get(i).copied().unwrap_or(i);
        match self {
            LogError::RecordTooLarge { index, bytes, max } => LogError::RecordTooLarge {
                index: map(index),
                bytes,
                max,
            },
            LogError::KeyTooLarge { index, bytes, max } => LogError::KeyTooLarge {
                index: map(index),
                bytes,
                max,
            },
            LogError::TooManyHeaders { index, count, max } => LogError::TooManyHeaders {
                index: map(index),
                count,
                max,
            },
            LogError::HeaderTooLarge {
                index,
                field,
                bytes,
                max,
            } => LogError::HeaderTooLarge {
                index: map(index),
                field,
                bytes,
                max,
            },
            LogError::TimestampOutOfRange {
                index,
                timestamp_ms,
                now_ms,
                max_skew_ms,
            } => LogError::TimestampOutOfRange {
                index: map(index),
                timestamp_ms,
                now_ms,
                max_skew_ms,
            },
            other => other,
        }
    }

    /// True when retrying the same request may succeed and is safe: the backend was
    /// [`LogError::Unavailable`] (nothing stored), or an append's outcome is unknown
    /// ([`LogError::OutcomeUnknown`]: retry it with its request id).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LogError::Unavailable { .. } | LogError::OutcomeUnknown { .. }
        )
    }

    /// Builds an [`LogError::Io`] from an operation name, a path and the OS error.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the request itself was refused and nothing was changed: fix the input.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            LogError::RecordTooLarge { .. }
                | LogError::KeyTooLarge { .. }
                | LogError::TooManyHeaders { .. }
                | LogError::HeaderTooLarge { .. }
                | LogError::EmptyBatch
                | LogError::BatchTooManyRecords { .. }
                | LogError::BatchTooLarge { .. }
                | LogError::TimestampOutOfRange { .. }
                | LogError::InvalidRequestId { .. }
                | LogError::InvalidTraceparent { .. }
                | LogError::RequestIdConflict { .. }
                | LogError::ReservedHeader { .. }
                | LogError::InvalidStreamName { .. }
                | LogError::InvalidConfig { .. }
                | LogError::TooManyStreams { .. }
                | LogError::UnknownStream { .. }
                | LogError::UnknownPartition { .. }
                | LogError::OffsetOutOfRange { .. }
                | LogError::StreamExists { .. }
                | LogError::NoDataDirectory { .. }
                | LogError::NotADirectory { .. }
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
