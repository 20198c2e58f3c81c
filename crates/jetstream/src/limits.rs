//! Every limit and default of the JetStream backend, in one place, with the relations between
//! them checked at compile time at the bottom.

use logbook_log::limits as log_limits;

/// Message gets a read keeps in flight at once for messages it knows are stored (below the
/// end its partition handle observed): a follower behind by many messages pays about one
/// round trip per this many, not one per message.
pub const READ_AHEAD_MESSAGES: usize = 16;

/// Bits of an offset that hold a record's index within its JetStream message
/// (see [`crate::offset`]).
pub const INDEX_BITS: u32 = 16;
/// Most records in one appended batch (one JetStream message): 2^16 = 65,536, the index range
/// of [`INDEX_BITS`]. Lower than the embedded log's `BATCH_RECORDS_MAX`; larger batches are
/// refused with [`crate::JetStreamError::BatchTooManyRecords`].
pub const MESSAGE_RECORDS_MAX: u32 = 1 << INDEX_BITS;
/// Highest JetStream sequence a partition's offsets can name: 2^48 − 1, so that every
/// offset and the end offset (`sequence · 2^16`) fit in a `u64`. A message acknowledged or
/// read beyond it is refused with [`crate::JetStreamError::SequenceBeyondOffsets`] instead of
/// an offset that wrapped around.
pub const SEQUENCE_MAX: u64 = (1 << (64 - INDEX_BITS)) - 1;
/// Replicas of a partition's JetStream stream unless configured otherwise (R3: one server of
/// three may be lost).
pub const REPLICAS_DEFAULT: u32 = 3;
/// Most replicas JetStream allows for a stream.
pub const REPLICAS_MAX: u32 = 5;
/// Default JetStream duplicate window for `Nats-Msg-Id`, in ms (2 minutes, the server's own
/// default): a publish retried within it with the same message id is applied once.
pub const DUPLICATE_WINDOW_MS_DEFAULT: u64 = 120_000;
/// Largest `Nats-Msg-Id` accepted, in bytes (a request id plus its share fit well within it).
pub const MESSAGE_ID_BYTES_MAX: usize = 512;
/// Default deadline of one JetStream API request or publish acknowledgment, in ms.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Deadline of the acknowledgment of a publish sent again after its stream elected a leader
/// (or its connection came back), in ms: a leader just elected may drop what it is sent
/// before it is ready, and waiting the whole [`REQUEST_TIMEOUT_MS_DEFAULT`] for that was the
/// last seconds of the failover stall (docs/benchmarks.md, "The failover budget, restated").
/// A live but slow leader costs a resend per this much, stored once (same message id).
pub const RESEND_ACK_TIMEOUT_MS: u64 = 1_000;
/// `max_payload` a server must allow for the largest Logbook batch, in bytes: the embedded
/// log's batch limit plus room for the NATS headers (message id, expected sequence). The
/// development cluster and the tests' harness configure this.
pub const MAX_PAYLOAD_BYTES_FOR_LARGEST_BATCH: u32 = log_limits::BATCH_BYTES_MAX + 64 * 1024;
/// NATS refuses a `max_payload` above 64 MiB.
pub const NATS_MAX_PAYLOAD_BYTES_LIMIT: u32 = 64 * 1024 * 1024;

const _: () = assert!(MESSAGE_RECORDS_MAX <= log_limits::BATCH_RECORDS_MAX);
const _: () = assert!(RESEND_ACK_TIMEOUT_MS < REQUEST_TIMEOUT_MS_DEFAULT);
const _: () = assert!(REPLICAS_DEFAULT >= 1 && REPLICAS_DEFAULT <= REPLICAS_MAX);
const _: () = assert!(MAX_PAYLOAD_BYTES_FOR_LARGEST_BATCH <= NATS_MAX_PAYLOAD_BYTES_LIMIT);
// Sequences are u64 starting at 1; up to SEQUENCE_MAX, `sequence << INDEX_BITS` (the end
// offset, above every offset of the message) fits in a u64 — and 2^48 messages is far beyond
// what a stream reaches in practice.
const _: () = assert!(INDEX_BITS < 64 - 40);
const _: () = assert!(SEQUENCE_MAX.checked_shl(INDEX_BITS).is_some());
const _: () = assert!((SEQUENCE_MAX << INDEX_BITS) >> INDEX_BITS == SEQUENCE_MAX);
