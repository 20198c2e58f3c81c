//! A stream: a named log with a fixed number of partitions (Kafka: a topic).
//!
//! Partitioning: a keyed record goes to `xxh3_64(key) % partitions` (XXH3, 64-bit, seed 0 —
//! a published, stable hash, so a key's partition never changes for a given partition
//! count). Unkeyed records go round-robin, one partition per call to [`Stream::append_batch`]
//! (so the batch stays one batch, like Kafka's sticky partitioner), or wherever the caller
//! puts them with [`Stream::append_to`]. The round-robin starts at a partition derived from
//! the stream's incarnation, the process id and the clock, so short-lived processes that
//! each append a few unkeyed records do not all fill partition 0.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::completion::{AppendAck, AppendCompletion};
use crate::config::StreamConfig;
use crate::dedup::{self, Claim, DedupIndex, Lookup, RequestId, check_no_reserved_headers};
use crate::error::{LogError, Result};
use crate::format::{Record, StoredRecord};
use crate::partition::AckHook;
use crate::partition::{Partition, TryAppendError};
pub use crate::routing::partition_for_key;
pub use crate::stream_append::{Position, Share, StreamAppend, UnqueuedShares, encode_shares};

/// What is stored in a stream's `stream.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    pub format_version: u32,
    pub name: String,
    /// Distinguishes a stream from an earlier stream of the same name that was dropped, so
    /// that a consistency token of the old one is never satisfied by the new one.
    pub incarnation: u64,
    pub config: StreamConfig,
}

/// A stream handle. Obtained from [`crate::Log::create_stream`] or [`crate::Log::stream`].
#[derive(Debug)]
pub struct Stream {
    /// As at open; its retention fields are superseded by `retention`.
    pub(crate) meta: StreamMeta,
    /// The retention in force, shared with the partitions' writers.
    pub(crate) retention: Arc<std::sync::RwLock<crate::Retention>>,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) dedup: Arc<DedupIndex>,
    clock: Arc<dyn crate::Clock>,
    round_robin: AtomicU32,
}

/// The outcome of an append with a request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendOutcome {
    /// Where each record of the request is, in input order.
    pub positions: Vec<Position>,
    /// True when every record was already in the log: this was a retry and nothing was
    /// appended.
    pub duplicate: bool,
}

/// A pending append with a request id: resolve with [`IdempotentAppend::wait`], or
/// `.await` it (it is a `Future` with the same output, for async callers that must not
/// hold a thread while the log fsyncs).
#[derive(Debug)]
#[must_use = "the records are only acknowledged once this resolves"]
pub struct IdempotentAppend {
    known: Vec<Option<Position>>,
    parts: Vec<(AppendCompletion, Vec<usize>)>,
    duplicate: bool,
    /// The embedded stream whose readers a duplicate waits for; `None` for an outcome another
    /// backend resolved ([`IdempotentAppend::resolved`]).
    stream: Option<Arc<Stream>>,
    /// The first failed part, while others are still being polled.
    error: Option<LogError>,
}

impl std::future::Future for IdempotentAppend {
    type Output = Result<AppendOutcome>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        let mut i = 0;
        while i < this.parts.len() {
            match std::pin::Pin::new(&mut this.parts[i].0).poll(cx) {
                Poll::Pending => i += 1,
                Poll::Ready(result) => {
                    let (_, indices) = this.parts.swap_remove(i);
                    match result {
                        Ok(ack) => {
                            for (j, index) in indices.into_iter().enumerate() {
                                this.known[index] = Some(Position {
                                    partition: ack.partition,
                                    offset: ack.base_offset + j as u64,
                                });
                            }
                        }
                        Err(e) => {
                            this.error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        if !this.parts.is_empty() {
            return Poll::Pending;
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if this.duplicate
            && let Some(stream) = &this.stream
        {
            // The original is durable; wait until readers can see it too (as `wait`).
            for p in this.known.iter().flatten() {
                if let Ok(partition) = stream.partition(p.partition)
                    && partition.end_offset() <= p.offset
                {
                    let mut visible = partition.end_offset_above(p.offset);
                    if std::pin::Pin::new(&mut visible).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        let positions = std::mem::take(&mut this.known)
            .into_iter()
            .flatten()
            .collect();
        Poll::Ready(Ok(AppendOutcome {
            positions,
            duplicate: this.duplicate,
        }))
    }
}

impl IdempotentAppend {
    /// An append with a request id whose outcome another backend already knows (it resolved
    /// its shares itself; a duplicate's original is visible to readers).
    pub fn resolved(outcome: AppendOutcome) -> IdempotentAppend {
        IdempotentAppend {
            known: outcome.positions.into_iter().map(Some).collect(),
            parts: Vec::new(),
            duplicate: outcome.duplicate,
            stream: None,
            error: None,
        }
    }

    /// Whether [`Self::wait`] would return without blocking on an append.
    pub fn is_ready(&self) -> bool {
        self.parts.iter().all(|(c, _)| c.is_ready())
    }

    /// Waits for the records this call appended (if any) and returns every record's
    /// position. For a duplicate, waits until the original is visible to readers (it is
    /// already durable).
    ///
    /// # Errors
    /// As [`crate::Partition::append`]'s completion. After an error, retrying with the same
    /// request id is always safe.
    pub fn wait(self) -> Result<AppendOutcome> {
        let mut positions = self.known;
        let mut first_error = None;
        for (completion, indices) in self.parts {
            match completion.wait() {
                Ok(ack) => {
                    for (j, index) in indices.into_iter().enumerate() {
                        positions[index] = Some(Position {
                            partition: ack.partition,
                            offset: ack.base_offset + j as u64,
                        });
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let positions: Vec<Position> = positions.into_iter().flatten().collect();
        if self.duplicate
            && let Some(stream) = &self.stream
        {
            for p in &positions {
                if let Ok(partition) = stream.partition(p.partition) {
                    partition.wait_end_offset_above(p.offset, std::time::Duration::from_secs(30));
                }
            }
        }
        Ok(AppendOutcome {
            positions,
            duplicate: self.duplicate,
        })
    }
}

// Queuing needs the stream's partitions, so it lives with the stream; the shares' own
// bookkeeping stays in `stream_append`.
impl UnqueuedShares {
    /// Queues the shares in partition order, waiting for room in each writer's queue (this
    /// blocks the thread: call it where waiting is allowed), and adds their completions to
    /// `append`, the [`StreamAppend`] that [`Stream::try_append_batch`] returned with them.
    ///
    /// # Errors
    /// [`LogError::Poisoned`] or [`LogError::Closed`] of a partition: the shares before it
    /// are queued (in `append`), it and the rest are not.
    ///
    /// # Panics
    /// If `stream` is not the stream that handed these shares back.
    pub fn queue(self, stream: &Stream, append: &mut StreamAppend) -> Result<()> {
        assert_eq!(
            stream.incarnation(),
            self.incarnation,
            "unqueued shares are queued on the stream that handed them back"
        );
        for share in self.shares {
            let completion = stream
                .partition(share.partition)?
                .append_encoded(share.batch)?;
            append.push(completion, share.indices);
        }
        Ok(())
    }
}

impl Stream {
    pub(crate) fn new(
        meta: StreamMeta,
        retention: Arc<std::sync::RwLock<crate::Retention>>,
        partitions: Vec<Partition>,
        dedup: Arc<DedupIndex>,
        clock: Arc<dyn crate::Clock>,
    ) -> Self {
        let meta_incarnation = meta.incarnation;
        Stream {
            meta,
            retention,
            partitions,
            dedup,
            clock,
            round_robin: AtomicU32::new(round_robin_seed(meta_incarnation, process_entropy())),
        }
    }

    /// The stream's request-id index (counters, size).
    pub fn request_ids(&self) -> &DedupIndex {
        &self.dedup
    }

    /// Appends the records of one logical request identified by `request_id`, exactly once:
    /// a retry with the same id and the same records returns the original positions with
    /// `duplicate: true` and appends nothing; a retry while the original is still in flight
    /// waits for the original's outcome. Keyed records go to their key's partition, unkeyed
    /// ones to the partition of the request id's hash (so a retry lands where the original
    /// may have); the request's share of records in each partition is one atomic batch, and
    /// is remembered as one entry. The first record of each share gets the headers
    /// `request-id`, `request-records` = `s:k/n;t;d` (share `s` holds `k` of the request's
    /// `n` records; appended at `t` ms; request digest `d`) and, when given, `traceparent`.
    ///
    /// # Errors
    /// [`LogError::RequestIdConflict`] when the id was used for different records (nothing
    /// appended); [`LogError::ReservedHeader`]; [`LogError::InvalidTraceparent`]; the limits
    /// of [`Self::append_batch`]. I/O errors arrive through [`IdempotentAppend::wait`];
    /// retrying with the same id is safe.
    pub fn append_with_id(
        self: &Arc<Self>,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> Result<IdempotentAppend> {
        let now = self.clock.now_ms();
        let shares = dedup::prepare_request(
            self.dedup.hash_key(),
            request_id,
            traceparent,
            records,
            self.partition_count(),
            now,
        )?;
        let n: usize = shares.iter().map(|s| s.indices.len()).sum();
        // Check every limit before the index is touched: bad input changes nothing.
        let encoded = shares
            .iter()
            .map(|s| s.encode(now))
            .collect::<Result<Vec<_>>>()?;
        let claims: Vec<Claim> = shares.iter().map(|s| s.claim).collect();
        let lookups = self
            .dedup
            .lookup_or_claim(request_id, &claims, now)
            .map_err(|e| dedup::name_conflicting_record(e, &shares))?;
        let mut known: Vec<Option<Position>> = vec![None; n];
        let mut all_known = true;
        for (share, lookup) in shares.iter().zip(&lookups) {
            match lookup {
                Lookup::Known(partition, base) => {
                    for (j, &i) in share.indices.iter().enumerate() {
                        known[i] = Some(Position {
                            partition: *partition,
                            offset: base + j as u64,
                        });
                    }
                }
                Lookup::Claimed => all_known = false,
            }
        }
        if all_known {
            self.dedup.note_duplicate();
            return Ok(IdempotentAppend {
                known,
                parts: Vec::new(),
                duplicate: true,
                stream: Some(self.clone()),
                error: None,
            });
        }
        // Append the shares not yet in the log (all of them, unless an earlier attempt wrote
        // some partitions' shares before a crash).
        let mut pending = shares
            .into_iter()
            .zip(encoded)
            .zip(claims)
            .zip(lookups)
            .filter(|(_, lookup)| matches!(lookup, Lookup::Claimed))
            .map(|(((share, batch), claim), _)| (share.partition, share.indices, batch, claim));
        let mut parts = Vec::new();
        while let Some((p, indices, batch, claim)) = pending.next() {
            let index = self.dedup.clone();
            let clock = self.clock.clone();
            let hook = AckHook::new(move |outcome| match outcome {
                // The window runs on the log's clock at append, not on a timestamp the
                // client may have chosen.
                Ok(ack) => index.complete(
                    &[(claim, ack.partition, ack.base_offset, now)],
                    clock.now_ms(),
                ),
                Err(_) => index.release(&[claim]),
            });
            match self.partitions[p as usize].append_with_hook(
                batch,
                Some(hook),
                crate::AppendCondition::Always,
            ) {
                Ok(completion) => parts.push((completion, indices)),
                Err(e) => {
                    // This batch's hook released its claim when it was dropped; release the
                    // claims of the batches not sent.
                    let rest: Vec<Claim> = pending.map(|(_, _, _, claim)| claim).collect();
                    self.dedup.release(&rest);
                    return Err(e);
                }
            }
        }
        Ok(IdempotentAppend {
            known,
            parts,
            duplicate: false,
            stream: Some(self.clone()),
            error: None,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Its settings, with the retention in force.
    pub fn config(&self) -> StreamConfig {
        let retention = self.retention();
        StreamConfig {
            retention_bytes: retention.retention_bytes,
            retention_ms: retention.retention_ms,
            ..self.meta.config.clone()
        }
    }

    /// The retention in force ([`crate::Log::set_retention`] changes it).
    pub fn retention(&self) -> crate::Retention {
        *self.retention.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Its incarnation id (differs between a dropped stream and a new one of the same name).
    pub fn incarnation(&self) -> u64 {
        self.meta.incarnation
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.meta.config.partitions
    }

    /// One partition.
    ///
    /// # Errors
    /// [`LogError::UnknownPartition`].
    pub fn partition(&self, partition: u32) -> Result<&Partition> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                stream: self.meta.name.clone(),
                partition,
                partitions: self.meta.config.partitions,
            })
    }

    /// All partitions, in order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// The partition a record would go to: by key hash, else the next round-robin partition.
    pub fn choose_partition(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(key) => partition_for_key(key, self.partition_count()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partition_count(),
        }
    }

    /// Appends one record to the partition chosen by [`Self::choose_partition`].
    pub fn append(&self, record: Record) -> Result<AppendCompletion> {
        let partition = self.choose_partition(record.key.as_deref());
        self.append_to(partition, std::slice::from_ref(&record))
    }

    /// Appends `records` as one atomic batch to `partition`, whatever their keys.
    pub fn append_to(&self, partition: u32, records: &[Record]) -> Result<AppendCompletion> {
        check_no_reserved_headers(records)?;
        self.partition(partition)?.append(records)
    }

    /// Appends records to their partitions (keyed by hash; all unkeyed ones of this call to
    /// one round-robin partition), one atomic batch per partition, waiting for room in a
    /// writer's queue when it is full. Every record is checked against the limits before
    /// anything is queued, so bad input changes nothing. [`Self::try_append_batch`] followed
    /// by [`UnqueuedShares::queue`].
    ///
    /// # Errors
    /// As [`Self::try_append_batch`], and [`UnqueuedShares::queue`]'s.
    pub fn append_batch(&self, records: Vec<Record>) -> Result<StreamAppend> {
        let (mut append, unqueued) = self.try_append_batch(records)?;
        if let Some(unqueued) = unqueued {
            unqueued.queue(self, &mut append)?;
        }
        Ok(append)
    }

    /// [`Self::append_batch`] without ever blocking, for callers that must not hold their
    /// thread (an async server's worker): every record is checked and every share (the
    /// records of one partition) encoded before any is queued; shares are then queued in
    /// partition order while writers' queues have room. When one is full, that share and
    /// the rest come back unqueued, to queue with [`UnqueuedShares::queue`] on a thread that
    /// may wait (queueing them later keeps the partition order).
    ///
    /// Returns the append (completions of the queued shares; positions in input order once
    /// every share is queued and resolved), and the unqueued shares if any.
    ///
    /// # Errors
    /// [`LogError::EmptyBatch`]; [`LogError::ReservedHeader`]; the limits of
    /// [`crate::format::encode_batch`] naming the record by its index in `records` — all
    /// before anything is queued. [`LogError::Poisoned`] or [`LogError::Closed`] of a
    /// partition: the shares before it stay queued (their outcome is lost to this caller).
    pub fn try_append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<(StreamAppend, Option<UnqueuedShares>)> {
        let len = records.len();
        let mut shares = self.encode_shares(records)?.into_iter();
        let mut append = StreamAppend::new(len);
        while let Some(share) = shares.next() {
            match self.partitions[share.partition as usize].try_append_encoded(share.batch) {
                Ok(completion) => append.push(completion, share.indices),
                Err(TryAppendError::Full(batch)) => {
                    let full = Share { batch, ..share };
                    let rest = std::iter::once(full).chain(shares).collect();
                    return Ok((append, Some(UnqueuedShares::new(rest, self.incarnation()))));
                }
                Err(TryAppendError::Failed(e)) => return Err(e),
            }
        }
        Ok((append, None))
    }

    /// Checks `records` and encodes them as one share per partition (unkeyed ones to the
    /// next round-robin partition); see [`encode_shares`]. Nothing queued.
    fn encode_shares(&self, records: Vec<Record>) -> Result<Vec<Share>> {
        let unkeyed = self.choose_partition(None);
        encode_shares(
            records,
            self.partition_count(),
            unkeyed,
            self.clock.now_ms(),
        )
    }

    /// Reads from one partition; see [`Partition::read`].
    pub fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.partition(partition)?
            .read(from, max_records, max_bytes)
    }

    /// Total records acknowledged and still retained, over all partitions.
    pub fn record_count(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.end_offset() - p.start_offset())
            .sum()
    }

    /// Total bytes of segment files, over all partitions.
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(Partition::size_bytes).sum()
    }
}

/// Where the round-robin of unkeyed appends starts for a stream opened in this process: a
/// hash of the stream's incarnation and `entropy` (see [`process_entropy`]), so that
/// short-lived processes that each append a few unkeyed records (`logbook log append`) spread
/// them over the partitions instead of all starting at partition 0.
fn round_robin_seed(incarnation: u64, entropy: u64) -> u32 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&incarnation.to_le_bytes());
    bytes[8..].copy_from_slice(&entropy.to_le_bytes());
    // The high half: `% partitions` of the low bits of XXH3 would be as good, but any half is.
    (xxhash_rust::xxh3::xxh3_64(&bytes) >> 32) as u32
}

/// Differs between processes and between streams opened in one process: the process id,
/// the wall clock in nanoseconds and a process-wide counter. Only spreads load; nothing
/// depends on its value (no `rand` needed).
fn process_entropy() -> u64 {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let opened = OPENED.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) ^ nanos ^ opened.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Convenience: wait for a single-record append and return its position.
pub fn wait_position(completion: AppendCompletion) -> Result<Position> {
    let AppendAck {
        partition,
        base_offset,
        ..
    } = completion.wait()?;
    Ok(Position {
        partition,
        offset: base_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unkeyed_round_robin_does_not_always_start_at_partition_0() {
        // Each stream handle stands for a new process appending one unkeyed record.
        let sim = crate::sim::SimStorage::new();
        let options = crate::LogOptions {
            storage: Arc::new(sim),
            ..crate::LogOptions::default()
        };
        let mut first = [0u32; 8];
        for _ in 0..64 {
            let log = crate::Log::open_with("/d", options.clone()).unwrap();
            let stream = log
                .create_stream("s", crate::StreamConfig::with_partitions(8))
                .unwrap();
            first[stream.choose_partition(None) as usize] += 1;
        }
        assert!(
            first.iter().filter(|&&n| n > 0).count() >= 4,
            "first unkeyed partition per open: {first:?}"
        );
        // The seed depends on both inputs.
        let seeds: std::collections::HashSet<u32> = (0..1000u64)
            .flat_map(|i| [round_robin_seed(7, i), round_robin_seed(i, 7)])
            .map(|s| s % 8)
            .collect();
        assert_eq!(seeds.len(), 8);
        assert_ne!(round_robin_seed(1, 2), round_robin_seed(2, 1));
    }
}
