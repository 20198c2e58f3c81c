//! The JetStream backend's one error type.

/// Everything the JetStream backend can fail with. Grouped by what a caller can do:
///
/// * **bad input** ([`BatchTooManyRecords`](Self::BatchTooManyRecords),
///   [`BatchTooLarge`](Self::BatchTooLarge), [`InvalidArgument`](Self::InvalidArgument)):
///   nothing was sent; fix the request;
/// * **retryable** ([`is_retryable`](Self::is_retryable)): [`Unavailable`](Self::Unavailable)
///   (no responders, no stream leader during an election, cluster not ready — nothing was
///   stored) and [`OutcomeUnknown`](Self::OutcomeUnknown) (no acknowledgment: the append may
///   or may not be stored; retry with the same message id to learn which, never assume);
/// * **precondition** ([`WrongLastSequence`](Self::WrongLastSequence)): a fenced writer's
///   append refused, nothing stored;
/// * **configuration** ([`StreamSettingsDiffer`](Self::StreamSettingsDiffer),
///   [`StreamNotFound`](Self::StreamNotFound), [`Connect`](Self::Connect));
/// * **data** ([`CorruptBatch`](Self::CorruptBatch),
///   [`SequenceBeyondOffsets`](Self::SequenceBeyondOffsets)) and anything else the server answers
///   ([`Api`](Self::Api)).
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// No NATS server at the given URLs accepted a connection.
    #[error("cannot connect to NATS at {urls}: {detail}")]
    Connect {
        /// The URLs tried, comma-separated.
        urls: String,
        /// What the client reported.
        detail: String,
    },
    /// An argument is out of its range; `field` names it.
    #[error("invalid {field}: {why}")]
    InvalidArgument {
        /// The argument or setting.
        field: &'static str,
        /// Why it is refused.
        why: String,
    },
    /// A batch holds more records than one JetStream message may
    /// ([`crate::limits::MESSAGE_RECORDS_MAX`]): the offset mapping has 16 bits of index.
    #[error("batch has {count} records; a JetStream message holds at most {max}")]
    BatchTooManyRecords {
        /// Records in the batch.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A batch (with its NATS headers) exceeds the server's `max_payload`.
    #[error(
        "batch of {bytes} bytes exceeds the NATS server's max_payload of {max_payload} bytes \
         (raise max_payload, or append smaller batches)"
    )]
    BatchTooLarge {
        /// Encoded batch size.
        bytes: usize,
        /// The server's limit.
        max_payload: usize,
    },
    /// The stream is momentarily unavailable — no responders, no leader (an election is under
    /// way), or the JetStream cluster is not ready. Nothing was stored; retry.
    #[error("JetStream stream {stream} unavailable ({why}); retry")]
    Unavailable {
        /// JetStream stream name.
        stream: String,
        /// What the server or client said.
        why: String,
    },
    /// No acknowledgment arrived (timeout, connection lost after sending): the append may or may
    /// not be stored. Retry with the same message id — within the stream's duplicate window the
    /// server answers a stored original as a duplicate — or read the tail back.
    #[error(
        "no acknowledgment from JetStream stream {stream} ({why}): the append may or may not be stored"
    )]
    OutcomeUnknown {
        /// JetStream stream name.
        stream: String,
        /// What the client saw.
        why: String,
    },
    /// The append's expected-last-sequence precondition failed: another writer appended (or
    /// this writer is stale). Nothing was stored.
    #[error("stream {stream}: expected last sequence {expected}, but the stream has moved on")]
    WrongLastSequence {
        /// JetStream stream name.
        stream: String,
        /// The sequence the append expected to be last.
        expected: u64,
    },
    /// A JetStream stream of this name exists with settings other than the ones asked for; it is
    /// not reused.
    #[error("JetStream stream {stream} exists with {field} = {found}, expected {expected}")]
    StreamSettingsDiffer {
        /// JetStream stream name.
        stream: String,
        /// The differing setting.
        field: &'static str,
        /// What the existing stream has.
        found: String,
        /// What was asked for.
        expected: String,
    },
    /// The partition's JetStream stream does not exist.
    #[error("JetStream stream {stream} for partition {partition} does not exist")]
    StreamNotFound {
        /// JetStream stream name.
        stream: String,
        /// The Logbook partition it would hold.
        partition: String,
    },
    /// A message is not a valid Logbook batch (checksum, version or shape).
    #[error("JetStream stream {stream} message {sequence} is not a valid Logbook batch: {defect}")]
    CorruptBatch {
        /// JetStream stream name.
        stream: String,
        /// The message's stream sequence.
        sequence: u64,
        /// What is wrong with it.
        defect: String,
    },
    /// A message's stream sequence is beyond [`crate::limits::SEQUENCE_MAX`]: its records
    /// would have offsets past `u64`. An append that hears this was stored, but its records
    /// cannot be named; the partition takes no more (move to a new stream).
    #[error(
        "JetStream stream {stream} reached sequence {sequence}, beyond the {max} whose offsets \
         fit in 64 bits; its records cannot be given offsets (move to a new stream)"
    )]
    SequenceBeyondOffsets {
        /// JetStream stream name.
        stream: String,
        /// The sequence.
        sequence: u64,
        /// [`crate::limits::SEQUENCE_MAX`].
        max: u64,
    },
    /// Any other answer from the server, with its JetStream error code when it gave one.
    #[error("JetStream API error on {stream} (code {code}): {detail}")]
    Api {
        /// JetStream stream name.
        stream: String,
        /// JetStream error code (`err_code`), 0 when none.
        code: u64,
        /// The server's description.
        detail: String,
    },
    /// An HTTP monitoring endpoint could not be read.
    #[error("monitoring endpoint {url}: {detail}")]
    Monitor {
        /// The URL asked.
        url: String,
        /// What failed.
        detail: String,
    },
}

impl JetStreamError {
    /// Whether retrying the same operation (an append: with the same message id) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            JetStreamError::Unavailable { .. } | JetStreamError::OutcomeUnknown { .. }
        )
    }

    /// Whether the append's outcome cannot be known from this error alone.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, JetStreamError::OutcomeUnknown { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = JetStreamError> = std::result::Result<T, E>;
