//! # logbook-log: the durable, partitioned log that is Logbook's source of truth
//!
//! Every write in Logbook is a record appended here; every other piece of state is derived
//! from it. This crate is the log alone: streams of partitions of segment files, group
//! commit with `fdatasync`, recovery, reads, tail waits and retention. It needs no async
//! runtime (one writer thread per partition), yet its completions are `Future`s too.
//!
//! It is **not** a database: no keys are looked up here and there are no transactions; those
//! are derived views in the crates above. The one index it keeps is the per-stream
//! request-id index ([`dedup`]), because an append must consult it before it is written
//! (exactly-once appends through [`Stream::append_with_id`]).
//!
//! ```
//! use logbook_log::{Log, Record, StreamConfig};
//! # fn main() -> Result<(), logbook_log::LogError> {
//! # let dir = std::env::temp_dir().join(format!("logbook-doc-{}", std::process::id()));
//! let log = Log::open(&dir)?;
//! let flights = log.create_stream("flights", StreamConfig::with_partitions(4))?;
//! // Acknowledged only once written and fdatasync'ed (the default fsync policy).
//! let ack = flights.append(Record::keyed("2013-1-1|UA|1545|EWR", r#"{"dep_delay":2}"#))?.wait()?;
//! let records = flights.read(ack.partition, ack.base_offset, 10, 1 << 20)?;
//! assert_eq!(records[0].value, br#"{"dep_delay":2}"#);
//! # drop(log); std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! Guarantees (see `docs/format.md` for the bytes and the crash analysis):
//! * offsets in a partition are dense from 0 and never reused;
//! * an acknowledged append under fsync `always` survives process crash and power loss;
//! * readers see only acknowledged records, each batch verified by CRC32C when read;
//! * a torn last batch is truncated on open; damage anywhere else is an error naming the
//!   file and byte offset, never skipped;
//! * an append with a request id is written once, however often it is retried within the
//!   id's window ([`RequestIdWindow`]); a retry returns the original positions.
//!
//! Module map, in data-flow order: [`format`](mod@format) (bytes) → [`partition`] (group commit, reads,
//! recovery; segments inside) → [`stream`] (partitioning) → [`Log`] (directory, lock,
//! stream lifecycle), with [`dedup`] (request ids) in front of [`stream`]; [`backend`] is the
//! seam the crates above use ([`LogBackend`], [`LogStream`], [`LogPartition`], implemented
//! here by [`Log`], [`Stream`], [`Partition`]); [`storage`] is
//! the file-system seam and [`sim`] its power-loss
//! simulation; [`verify`] checks a directory offline; [`scrub`] re-checks sealed segments of an
//! open log in the background, at a bounded rate; [`limits`] holds every limit.

pub mod backend;
mod completion;
mod config;
pub mod dedup;
mod error;
pub mod format;
pub mod hash_key;
pub mod hlc;
pub mod limits;
mod log;
pub mod partition;
mod routing;
pub mod scrub;
mod segment;
pub mod sim;
pub mod storage;
pub mod stream;
mod stream_append;
pub mod verify;

pub use backend::{
    AckGuarantee, AppendCondition, LogBackend, LogPartition, LogStream, TimestampOffset,
};
pub use completion::{AppendAck, AppendCompletion, Completer, EndOffsetAbove, Watermark};
pub use config::{
    Clock, FsyncPolicy, PersonalData, Retention, StreamConfig, SystemClock, validate_stream_name,
};
pub use dedup::{DedupStats, RequestId, RequestIdWindow};
pub use error::{LogError, Result};
pub use format::{Record, StoredRecord};
pub use hash_key::HashKey;
pub use log::{Log, LogOptions, lock_data_dir};
pub use partition::{Partition, PartitionStats, TryAppendError};
pub use scrub::{ScrubFinding, ScrubStatus, ScrubStep, Scrubber, ScrubberThread};
pub use stream::{
    AppendOutcome, IdempotentAppend, Position, Stream, StreamAppend, UnqueuedShares,
    partition_for_key,
};
