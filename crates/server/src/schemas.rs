//! The schema registry of a node (issue 20, decision 0025): its state is
//! [`logbook_schema::Registry`], derived from the records of the internal stream
//! [`SCHEMAS_STREAM`] and nothing else, as Confluent keeps `_schemas` in Kafka.
//!
//! ```text
//!  read:   lock ── catch up (apply the records of _schemas past `next`) ── answer
//!  write:  lock ── catch up ── plan (refused: the error, nothing written)
//!               ── append the record ── wait for its acknowledgment
//!               ── catch up through its offset ── applied? answer the plan's outcome
//!                                                 refused? (another node's record came
//!                                                 first) plan again from the new state
//!  open:   _schemas opened or created, replayed from its start
//! ```
//!
//! Every answer comes from the state after applying the log up to the request, never from
//! a plan alone: on a cluster two nodes may plan from the same state, and the log's order
//! decides — the second record fails to apply on every node alike (its version is not
//! past the first's) and is skipped on replay too, so every node holds the same registry
//! with the same ids. On a single node the lock held from the plan to the apply means a
//! planned record always applies. A read catches up first, so a node answers with every
//! record acknowledged before the request (on a cluster, a read of the stream's leader).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logbook_log::{LogBackend, LogError, LogStream, Record as LogRecord};
use logbook_schema::{Record, Registry, SchemaError};

use crate::error::{ApiError, ProblemCode};

/// The internal stream of registry records.
pub const SCHEMAS_STREAM: &str = "_schemas";
/// Records per read when catching up.
const READ_RECORDS: usize = 1024;
/// Bytes per read when catching up (a record holds at most one schema, 1 MiB).
const READ_BYTES: usize = 8 << 20;
/// Plans a write makes before giving up, when other nodes' records keep coming first.
const WRITE_ATTEMPTS: usize = 8;
/// Longest wait of a write for its own acknowledged record to be readable.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// What a write comes to, as its plan says.
#[derive(Debug)]
pub enum Plan<T> {
    /// Nothing to write (e.g. the schema is registered already): this is the answer.
    Done(T),
    /// Append this record; once it applied, the answer is `T`.
    Append(Record, T),
}

/// The registry's state and how far into [`SCHEMAS_STREAM`] it has applied.
#[derive(Debug, Default)]
struct Applied {
    registry: Registry,
    /// Every record below this offset is applied (or was skipped as not applying).
    next: u64,
}

/// A node's schema registry: see the module documentation.
#[derive(Debug)]
pub struct SchemaRegistry {
    stream: Arc<dyn LogStream>,
    applied: Mutex<Applied>,
}

impl SchemaRegistry {
    /// Opens [`SCHEMAS_STREAM`] (creating it if missing) and replays it. `shared`: the log
    /// is replicated (a cluster node). Blocks (reads the log).
    ///
    /// # Errors
    /// The log's, when the stream cannot be opened, created or read.
    pub fn open(log: &dyn LogBackend, shared: bool) -> Result<Arc<SchemaRegistry>, LogError> {
        let stream = crate::internal_stream::open_or_create(log, SCHEMAS_STREAM, shared)?;
        let registry = SchemaRegistry {
            stream,
            applied: Mutex::new(Applied::default()),
        };
        registry.catch_up(&mut registry.lock(), None)?;
        Ok(Arc::new(registry))
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers from the state with every record acknowledged before the call applied.
    /// Blocks (reads the log).
    ///
    /// # Errors
    /// `f`'s, as problems with Confluent's `error_code`; the log's.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, SchemaError>,
    ) -> Result<T, ApiError> {
        let mut applied = self.lock();
        self.catch_up(&mut applied, None).map_err(log_error)?;
        Ok(f(&applied.registry)?)
    }

    /// Plans a change from the caught-up state, appends its record and answers once the
    /// record applied; plans again when another node's record came first. Blocks (appends
    /// and waits for the acknowledgment).
    ///
    /// # Errors
    /// The plan's (nothing written); the log's (the append's outcome may then be unknown,
    /// as the log's error says); 503 `log_unavailable` when other nodes' records came
    /// first `WRITE_ATTEMPTS` (8) times, or this node could not read its own record back
    /// within `APPLY_WAIT` (it is in the log and will apply).
    pub fn write<T>(
        &self,
        plan: impl Fn(&Registry) -> Result<Plan<T>, SchemaError>,
    ) -> Result<T, ApiError> {
        let mut applied = self.lock();
        for _ in 0..WRITE_ATTEMPTS {
            self.catch_up(&mut applied, None).map_err(log_error)?;
            let (record, answer) = match plan(&applied.registry)? {
                Plan::Done(answer) => return Ok(answer),
                Plan::Append(record, answer) => (record, answer),
            };
            let offset = self.append(&record)?;
            if self
                .catch_up(&mut applied, Some(offset))
                .map_err(log_error)?
            {
                return Ok(answer);
            }
            tracing::info!(
                offset,
                "a registry record of another node came first; planning again"
            );
        }
        Err(ApiError::new(
            ProblemCode::LogUnavailable,
            "other nodes' registry changes kept coming first; nothing of this request applied, retry it",
        )
        .retry_after(1))
    }

    /// Appends one record and waits for its acknowledgment; returns its offset.
    fn append(&self, record: &Record) -> Result<u64, ApiError> {
        let value = serde_json::to_vec(record)
            .map_err(|e| ApiError::internal(format!("encoding a registry record: {e}")))?;
        let positions = self
            .stream
            .append_batch(vec![LogRecord::new(value)])
            .and_then(logbook_log::StreamAppend::wait)
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        positions
            .first()
            .map(|p| p.offset)
            .ok_or_else(|| ApiError::internal("the registry's append has no position"))
    }

    /// Applies the records past `applied.next`. With `through`, goes on (waiting for them to
    /// be readable) until the record at that offset is applied, and says whether it applied
    /// (`false`: it did not, as another record came first); without, reads to the end seen
    /// and says `true`.
    fn catch_up(&self, applied: &mut Applied, through: Option<u64>) -> Result<bool, LogError> {
        let partition = self.stream.partition(0)?;
        let deadline = Instant::now() + APPLY_WAIT;
        let mut ours = true;
        loop {
            // Everything below the end seen before a read is visible to it: an empty read
            // moves past a gap (a replicated log's offsets are not dense).
            let limit = partition.end_offset();
            let records = partition.read(applied.next, READ_RECORDS, READ_BYTES)?;
            for r in &records {
                let outcome = serde_json::from_slice::<Record>(&r.value)
                    .map_err(|e| e.to_string())
                    .and_then(|record| applied.registry.apply(&record).map_err(|e| e.to_string()));
                if let Err(e) = outcome {
                    // A record planned from a state another record changed first (a race
                    // between nodes), or damage: skipped alike on every node and at replay.
                    tracing::warn!(offset = r.offset, error = %e, "a record of {SCHEMAS_STREAM} does not apply; skipped");
                    if Some(r.offset) == through {
                        ours = false;
                    }
                }
                applied.next = r.offset + 1;
            }
            if records.is_empty() {
                applied.next = applied.next.max(limit);
            }
            match through {
                Some(at) if applied.next <= at => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LogError::Backend {
                            backend: "server",
                            detail: format!(
                                "the registry's record at offset {at} is acknowledged but not readable yet; it will apply"
                            ),
                        });
                    }
                    if records.is_empty() {
                        partition
                            .wait_end_offset_above(applied.next, left.min(Duration::from_secs(1)));
                    }
                }
                _ if records.is_empty() => return Ok(ours),
                _ => {}
            }
        }
    }
}

fn log_error(e: LogError) -> ApiError {
    ApiError::from_log(e, |_| String::new())
}
