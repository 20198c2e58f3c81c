//! The seam between Logbook and the engine that stores its log: what views, transactions and
//! the server may ask of a log, whichever engine keeps it (docs/decisions/0011).
//!
//! ```text
//!  views · txn · server ──▶ dyn LogBackend ──▶ create / open / list / drop streams
//!                            dyn LogStream  ──▶ appends chosen by key, request ids,
//!                                               ack_guarantee, partition(p)
//!                            dyn LogPartition ─▶ append (+ AppendCondition), read from an
//!                                               offset, offset for a time, start / end /
//!                                               durable offset, waits
//!  implemented by:  Log / Stream / Partition (the embedded segment log, this crate)
//! ```
//!
//! The contract every backend keeps:
//! * **offsets** are monotonic per partition and never reused; the embedded log's are dense
//!   from 0, another backend's may have gaps, so a reader continues from `last.offset + 1`
//!   and [`LogPartition::read`] returns the next record at or after it;
//! * **readers see only acknowledged records**: below [`LogPartition::end_offset`];
//! * an append **completes asynchronously**: [`AppendCompletion`] / [`StreamAppend`], waited
//!   on (`wait()`) or awaited; an outcome that cannot be known is an error saying so, and a
//!   retry with a request id is always safe;
//! * an acknowledgment guarantees what [`LogStream::ack_guarantee`] says, no more;
//! * an append with [`AppendCondition::EndOffset`] is stored only if the partition's end
//!   offset is the one given at the moment offsets are assigned (a fenced single writer).
//!
//! Dispatch is dynamic (`Arc<dyn LogBackend>`), but the completions are this crate's concrete
//! types, so an append through the seam costs one indirect call and no allocation.
//!
//! **Blocking.** The traits are synchronous; what may wait is marked *blocks* below: creating,
//! opening, listing and dropping streams, [`LogPartition::read`],
//! [`LogPartition::wait_end_offset_above`], [`LogStream::queue_unqueued`], and `wait()` on a
//! completion. They may wait on a disk (embedded) or on the network (a replicated backend), so
//! call them from a thread that may block — a plain thread (the views' processors, the
//! transaction store's callers) or tokio's `spawn_blocking` (the server) — never from inside
//! an async task. Async callers `.await` the completions and
//! [`LogPartition::end_offset_above`] instead. Appends never block (a full embedded queue
//! makes [`LogStream::append_batch`] wait; [`LogStream::try_append_batch`] does not), and the
//! offsets (`end_offset`, `start_offset`, `durable_offset`) and counters answer from state
//! the backend keeps, without I/O.
//!
//! ```
//! use std::sync::Arc;
//! use logbook_log::{AppendCondition, Log, LogBackend, Record, StreamConfig};
//! # fn main() -> Result<(), logbook_log::LogError> {
//! # let dir = std::env::temp_dir().join(format!("logbook-backend-doc-{}", std::process::id()));
//! let log: Arc<dyn LogBackend> = Arc::new(Log::open(&dir)?);
//! let stream = log.create_stream("orders", StreamConfig::with_partitions(1))?;
//! assert!(stream.ack_guarantee().fsynced, "fsync `always` is the default");
//! let partition = stream.partition(0)?;
//! let first = partition.append_batch(&[Record::new("a")], AppendCondition::EndOffset(0))?.wait()?;
//! assert_eq!(first.base_offset, 0);
//! // A writer that believes the partition still ends at 0 is refused; nothing is stored.
//! let stale = partition.append_batch(&[Record::new("b")], AppendCondition::EndOffset(0))?.wait();
//! assert!(matches!(stale, Err(logbook_log::LogError::EndOffsetMismatch { actual: 1, .. })));
//! assert_eq!(partition.read(0, 10, 1 << 20)?.len(), 1);
//! # drop(partition); drop(stream); drop(log); std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::completion::{AppendCompletion, EndOffsetAbove};
use crate::config::{FsyncPolicy, Retention, StreamConfig};
use crate::dedup::RequestId;
use crate::error::Result;
use crate::format::{Record, StoredRecord};
use crate::stream::{IdempotentAppend, Stream, StreamAppend, UnqueuedShares};
use crate::{Log, Partition, PartitionStats};

/// What an acknowledged append guarantees: on how many machines it is, and whether on disk.
///
/// The embedded log: `replicas: 1`, `fsynced` under fsync `always` only. A replicated
/// backend: the stream's replicas, a majority ([`AckGuarantee::majority`]) of which hold an
/// acknowledged record, fsynced there or not (NATS JetStream: decision 0010).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AckGuarantee {
    /// Copies the stream keeps; an acknowledgment means [`AckGuarantee::majority`] of them
    /// hold the record (1 of 1 for the embedded log).
    pub replicas: u32,
    /// Whether those copies were fsynced before the acknowledgment (`false` when it cannot
    /// be confirmed: a claim is never guessed upward).
    pub fsynced: bool,
}

impl AckGuarantee {
    /// The guarantee of the embedded log under `fsync`: one copy, fsynced only under
    /// [`FsyncPolicy::Always`].
    pub fn local(fsync: FsyncPolicy) -> AckGuarantee {
        AckGuarantee {
            replicas: 1,
            fsynced: fsync == FsyncPolicy::Always,
        }
    }

    /// How many copies hold an acknowledged record: ⌊replicas / 2⌋ + 1.
    pub fn majority(&self) -> u32 {
        self.replicas / 2 + 1
    }
}

impl std::fmt::Display for AckGuarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let disk = if self.fsynced {
            "fsynced"
        } else {
            "not fsynced"
        };
        if self.replicas <= 1 {
            write!(f, "one copy, {disk}")
        } else {
            write!(
                f,
                "replicated to {} of {}, {disk}",
                self.majority(),
                self.replicas
            )
        }
    }
}

/// The first record at or after a time in one partition: what
/// [`LogPartition::offset_for_timestamp`] answers (Kafka's ListOffsets by timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimestampOffset {
    /// Offset of the first retained record whose timestamp is at or after the time asked
    /// for; the partition's end offset when no acknowledged record is that recent (a reader
    /// starting there gets the records appended next).
    pub offset: u64,
    /// That record's timestamp, ms since the Unix epoch; `None` when `offset` is the end.
    pub timestamp_ms: Option<i64>,
}

/// A precondition on an append to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendCondition {
    /// None: append wherever the partition ends.
    #[default]
    Always,
    /// Append only if the partition's end offset (where the next record goes) is this one
    /// when offsets are assigned; else the completion fails with
    /// [`crate::LogError::EndOffsetMismatch`] and nothing is stored. How a fenced single
    /// writer is enforced at storage (JetStream: `Nats-Expected-Last-Sequence`).
    EndOffset(u64),
}

/// A log engine: its streams. The embedded implementation is [`Log`].
pub trait LogBackend: Send + Sync + std::fmt::Debug {
    /// Creates a stream, or returns it if it exists with the same settings. Blocks.
    ///
    /// # Errors
    /// [`crate::LogError::InvalidStreamName`], [`crate::LogError::InvalidConfig`],
    /// [`crate::LogError::StreamExists`] (other settings),
    /// [`crate::LogError::TooManyStreams`], storage errors.
    fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<dyn LogStream>>;

    /// A stream by name. Blocks (a replicated backend may ask its catalog).
    ///
    /// # Errors
    /// [`crate::LogError::UnknownStream`].
    fn stream(&self, name: &str) -> Result<Arc<dyn LogStream>>;

    /// Names of all streams, sorted. Blocks (a replicated backend may ask its catalog).
    fn stream_names(&self) -> Vec<String>;

    /// Drops a stream and its records; handles held elsewhere fail their appends with
    /// [`crate::LogError::Closed`]. A stream created again under the name has a new
    /// incarnation. Blocks.
    ///
    /// # Errors
    /// [`crate::LogError::UnknownStream`], storage errors.
    fn drop_stream(&self, name: &str) -> Result<()>;

    /// Changes a stream's retention and applies it; see [`Log::set_retention`]. Blocks.
    /// The default (a backend that keeps no retention) refuses it.
    ///
    /// # Errors
    /// [`crate::LogError::InvalidConfig`], [`crate::LogError::UnknownStream`],
    /// [`crate::LogError::Unsupported`], storage errors.
    fn set_retention(&self, name: &str, retention: Retention) -> Result<Arc<dyn LogStream>> {
        let _ = (name, retention);
        Err(crate::LogError::Unsupported {
            backend: "replicated",
            operation: "set_retention",
            why: "it keeps every record (no retention yet)".into(),
        })
    }
}

/// A stream: a named log with a fixed number of partitions. The embedded implementation is
/// [`Stream`].
pub trait LogStream: Send + Sync + std::fmt::Debug {
    /// The stream's name.
    fn name(&self) -> &str;

    /// Its incarnation: differs between a dropped stream and a new one of the same name.
    fn incarnation(&self) -> u64;

    /// Its settings, with the retention in force.
    fn config(&self) -> StreamConfig;

    /// Number of partitions (at least 1, fixed at creation).
    fn partition_count(&self) -> u32;

    /// What an acknowledgment of an append to this stream guarantees.
    fn ack_guarantee(&self) -> AckGuarantee;

    /// One partition.
    ///
    /// # Errors
    /// [`crate::LogError::UnknownPartition`].
    fn partition(&self, partition: u32) -> Result<&dyn LogPartition>;

    /// Every partition, in order (`partition(0)..partition(partition_count() - 1)`).
    fn partitions(&self) -> Vec<&dyn LogPartition> {
        (0..self.partition_count())
            .filter_map(|p| self.partition(p).ok())
            .collect()
    }

    /// Appends records to their partitions (keyed by `xxh3_64(key) % partitions`; the unkeyed
    /// ones of a call to one round-robin partition), one atomic batch per partition; may wait
    /// for room in a full queue. Every record is checked before anything is queued.
    ///
    /// # Errors
    /// As [`Stream::append_batch`].
    fn append_batch(&self, records: Vec<Record>) -> Result<StreamAppend>;

    /// [`Self::append_batch`] that never waits: shares that found a full queue come back
    /// unqueued, to give to [`Self::queue_unqueued`] on a thread that may wait.
    ///
    /// # Errors
    /// As [`Stream::try_append_batch`].
    fn try_append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<(StreamAppend, Option<UnqueuedShares>)>;

    /// Queues the shares [`Self::try_append_batch`] handed back (blocks while a queue is
    /// full), adding their completions to `append`.
    ///
    /// # Errors
    /// As [`UnqueuedShares::queue`].
    fn queue_unqueued(&self, unqueued: UnqueuedShares, append: &mut StreamAppend) -> Result<()>;

    /// Appends one request's records exactly once under `request_id` (a retry returns the
    /// original positions); see [`Stream::append_with_id`].
    ///
    /// # Errors
    /// As [`Stream::append_with_id`].
    fn append_with_id(
        self: Arc<Self>,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> Result<IdempotentAppend>;

    /// Records acknowledged and still retained, over all partitions.
    fn record_count(&self) -> u64;

    /// Bytes the stream's records take in storage, over all partitions.
    fn size_bytes(&self) -> u64;
}

/// One partition of a stream: appends in order, reads from an offset. The embedded
/// implementation is [`Partition`].
pub trait LogPartition: Send + Sync + std::fmt::Debug {
    /// This partition's number within its stream.
    fn id(&self) -> u32;

    /// Appends `records` as one batch, all or nothing, at increasing offsets, if `condition`
    /// holds. The completion resolves once the append is acknowledged (see
    /// [`LogStream::ack_guarantee`]). Appends under [`AppendCondition::EndOffset`] reach
    /// storage in the order of the calls, so a writer may chain them without waiting: each
    /// expecting the end after the previous one ([`LogPartition::batch_offset_span`] apart for
    /// one-record batches) is stored if the previous one was.
    ///
    /// # Errors
    /// Bad input (the limits of [`crate::format::encode_batch`]), a poisoned or closed
    /// partition, at once and changing nothing; storage failures and an unmet
    /// [`AppendCondition`] through the completion.
    fn append_batch(
        &self,
        records: &[Record],
        condition: AppendCondition,
    ) -> Result<AppendCompletion>;

    /// Reads records at offsets `from..` (the first one at or after `from`), at most
    /// `max_records` and about `max_bytes` of keys and values (at least one if any), each
    /// batch verified. Blocks.
    ///
    /// # Errors
    /// [`crate::LogError::OffsetOutOfRange`] outside `start_offset()..=end_offset()`;
    /// [`crate::LogError::Corrupt`].
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>>;

    /// The first retained record whose timestamp is at or after `timestamp_ms` (ms since
    /// the Unix epoch), or the end offset when none is; see [`Partition::offset_for_timestamp`]
    /// for the embedded log's rule and cost. Blocks.
    ///
    /// # Errors
    /// [`crate::LogError::Corrupt`]; [`crate::LogError::Unsupported`] from a backend that
    /// cannot answer it.
    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampOffset>;

    /// First offset still retained.
    fn start_offset(&self) -> u64;

    /// The acknowledged end: readers see every record below it and none at or above it. A
    /// replicated backend answers the highest end this handle has observed (its own
    /// acknowledgments, reads and waits); what other nodes appended since shows after a
    /// read or a wait.
    fn end_offset(&self) -> u64;

    /// The end as the backend's authority knows it now: [`Self::end_offset`] for a local
    /// backend; a replicated backend asks the partition's leader (one round trip) and raises
    /// its observed end to the answer. For answers that must not trail other nodes' appends
    /// (a consumer group's lag, a reset to the end). Not from inside an async task.
    ///
    /// # Errors
    /// The backend's, when its authority cannot be reached (retryable).
    fn latest_end_offset(&self) -> Result<u64> {
        Ok(self.end_offset())
    }

    /// Records below this offset are as durable as the backend keeps them (fsynced locally,
    /// or acknowledged by a majority of replicas: [`LogStream::ack_guarantee`]). Equal to
    /// [`Self::end_offset`] when every acknowledgment is that durable; may trail it under a
    /// weaker embedded fsync policy. Processors never apply past it (DESIGN.md rule 2).
    fn durable_offset(&self) -> u64;

    /// Blocks until [`Self::end_offset`] exceeds `above` or `timeout` passes (or the
    /// partition closes); returns the end offset. Not from inside an async task: `.await`
    /// [`Self::end_offset_above`] there.
    fn wait_end_offset_above(&self, above: u64, timeout: Duration) -> u64;

    /// A future resolving to the end offset once it exceeds `above` (or the partition
    /// closes).
    fn end_offset_above(&self, above: u64) -> EndOffsetAbove;

    /// Deletes records beyond the stream's retention (bytes, age) as of `now_ms`; returns
    /// the storage units (segments) deleted.
    ///
    /// # Errors
    /// Storage errors.
    fn enforce_retention(&self, now_ms: i64) -> Result<usize>;

    /// Bytes this partition's records take in storage.
    fn size_bytes(&self) -> u64;

    /// The embedded writer's counters since open (appends, group commits, fsyncs); `None`
    /// for a backend whose writes happen elsewhere.
    fn stats(&self) -> Option<&PartitionStats> {
        None
    }

    /// Whether every offset below the end holds a record (the embedded log: offsets are
    /// dense from 0, so an offset difference counts records). `false` for a backend whose
    /// offsets have gaps (JetStream's `(sequence − 1)·2^16 + index`): records must be
    /// counted by reading them.
    fn offsets_dense(&self) -> bool {
        true
    }

    /// How far apart the offsets of consecutive one-record batches are: 1 where offsets are
    /// dense; a backend that gives every batch a fixed span of offsets says that span
    /// (JetStream: 2^16, one message per batch). A writer that appends one record per batch
    /// — the transaction store's commit stream — numbers its records densely as
    /// `offset / span`, and the `n`-th record (from 0) is at offset `n · span`.
    fn batch_offset_span(&self) -> u64 {
        1
    }
}

impl LogBackend for Log {
    fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<dyn LogStream>> {
        Ok(Log::create_stream(self, name, config)?)
    }

    fn stream(&self, name: &str) -> Result<Arc<dyn LogStream>> {
        Ok(Log::stream(self, name)?)
    }

    fn stream_names(&self) -> Vec<String> {
        Log::stream_names(self)
    }

    fn drop_stream(&self, name: &str) -> Result<()> {
        Log::drop_stream(self, name)
    }

    fn set_retention(&self, name: &str, retention: Retention) -> Result<Arc<dyn LogStream>> {
        Ok(Log::set_retention(self, name, retention)?)
    }
}

impl LogStream for Stream {
    fn name(&self) -> &str {
        Stream::name(self)
    }

    fn incarnation(&self) -> u64 {
        Stream::incarnation(self)
    }

    fn config(&self) -> StreamConfig {
        Stream::config(self)
    }

    fn partition_count(&self) -> u32 {
        Stream::partition_count(self)
    }

    /// From the fsync policy the stream was created with (no copy of its settings: every
    /// append's answer carries it).
    fn ack_guarantee(&self) -> AckGuarantee {
        AckGuarantee::local(self.meta.config.fsync)
    }

    fn partition(&self, partition: u32) -> Result<&dyn LogPartition> {
        Ok(Stream::partition(self, partition)?)
    }

    fn append_batch(&self, records: Vec<Record>) -> Result<StreamAppend> {
        Stream::append_batch(self, records)
    }

    fn try_append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<(StreamAppend, Option<UnqueuedShares>)> {
        Stream::try_append_batch(self, records)
    }

    fn queue_unqueued(&self, unqueued: UnqueuedShares, append: &mut StreamAppend) -> Result<()> {
        unqueued.queue(self, append)
    }

    fn append_with_id(
        self: Arc<Self>,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> Result<IdempotentAppend> {
        Stream::append_with_id(&self, request_id, traceparent, records)
    }

    fn record_count(&self) -> u64 {
        Stream::record_count(self)
    }

    fn size_bytes(&self) -> u64 {
        Stream::size_bytes(self)
    }
}

impl LogPartition for Partition {
    fn id(&self) -> u32 {
        Partition::id(self)
    }

    fn append_batch(
        &self,
        records: &[Record],
        condition: AppendCondition,
    ) -> Result<AppendCompletion> {
        crate::dedup::check_no_reserved_headers(records)?;
        Partition::append_if(self, records, condition)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        Partition::read(self, from, max_records, max_bytes)
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampOffset> {
        Partition::offset_for_timestamp(self, timestamp_ms)
    }

    fn start_offset(&self) -> u64 {
        Partition::start_offset(self)
    }

    fn end_offset(&self) -> u64 {
        Partition::end_offset(self)
    }

    fn durable_offset(&self) -> u64 {
        Partition::durable_offset(self)
    }

    fn wait_end_offset_above(&self, above: u64, timeout: Duration) -> u64 {
        Partition::wait_end_offset_above(self, above, timeout)
    }

    fn end_offset_above(&self, above: u64) -> EndOffsetAbove {
        Partition::end_offset_above(self, above)
    }

    fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        Partition::enforce_retention(self, now_ms)
    }

    fn size_bytes(&self) -> u64 {
        Partition::size_bytes(self)
    }

    fn stats(&self) -> Option<&PartitionStats> {
        Some(Partition::stats(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_guarantee_follows_the_fsync_policy() {
        assert_eq!(
            AckGuarantee::local(FsyncPolicy::Always),
            AckGuarantee {
                replicas: 1,
                fsynced: true
            }
        );
        let weak = AckGuarantee::local(FsyncPolicy::Interval { interval_ms: 100 });
        assert!(!weak.fsynced);
        assert!(!AckGuarantee::local(FsyncPolicy::Never).fsynced);
        assert_eq!(weak.majority(), 1);
        assert_eq!(weak.to_string(), "one copy, not fsynced");
        let replicated = AckGuarantee {
            replicas: 3,
            fsynced: false,
        };
        assert_eq!(replicated.majority(), 2);
        assert_eq!(replicated.to_string(), "replicated to 2 of 3, not fsynced");
    }
}
