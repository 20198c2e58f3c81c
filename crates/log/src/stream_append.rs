//! A batch append across partitions, after [`Stream::append_batch`](crate::Stream::append_batch) or
//! [`Stream::try_append_batch`](crate::Stream::try_append_batch) queued it: the completions to wait for, and the shares a full
//! writer queue sent back.
//!
//! ```text
//!  records ─▶ checks, group by partition, encode (every share, before any is queued)
//!          ─▶ share p0 ─▶ try queue ─ ok ─▶ completion ─┐
//!             share p1 ─▶ try queue ─ full ─┐           ├─▶ StreamAppend: wait() / .await
//!             share p2 ─────────────────────┴▶ UnqueuedShares::queue (may block) ─┘
//! ```
//!
//! Shares are queued in partition order; after the first full queue the rest wait their
//! turn, so the order never changes with the load. The append is atomic per partition, not
//! across partitions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;

use crate::completion::{AppendAck, AppendCompletion};
use crate::dedup::check_no_reserved_headers;
use crate::error::{LogError, Result};
use crate::format::{EncodedBatch, Record, encode_batch};
use crate::routing::group_by_partition;

/// Where one record of an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// One partition's records of a batch append, encoded and checked ([`encode_shares`]).
#[derive(Debug)]
pub struct Share {
    /// The partition it goes to.
    pub partition: u32,
    /// Its records as one batch, in the caller's order.
    pub batch: EncodedBatch,
    /// The records' indices in the caller's input, in order (`batch`'s `i`-th record is
    /// input record `indices[i]`).
    pub indices: Vec<usize>,
}

/// The first step of every backend's batch append: checks `records` and encodes them as
/// one [`Share`] per partition, in partition order. Keyed records go to
/// [`partition_for_key`](crate::partition_for_key) of `partitions`; every unkeyed one to
/// `unkeyed` (the backend's round-robin choice for this call). Each batch is stamped with
/// `appended_ms` (milliseconds since the Unix epoch, the backend's clock). Nothing is queued.
///
/// # Errors
/// [`LogError::EmptyBatch`]; [`LogError::ReservedHeader`]; the limits of
/// [`encode_batch`], naming the record by its index in `records`.
///
/// # Panics
/// If `partitions` is 0 or `unkeyed >= partitions` (a backend's own bug).
pub fn encode_shares(
    records: Vec<Record>,
    partitions: u32,
    unkeyed: u32,
    appended_ms: i64,
) -> Result<Vec<Share>> {
    if records.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    check_no_reserved_headers(&records)?;
    assert!(
        unkeyed < partitions,
        "the unkeyed partition is one of the stream's"
    );
    let grouped = group_by_partition(records, partitions, unkeyed);
    let mut shares = Vec::with_capacity(grouped.len());
    for (partition, records, indices) in grouped {
        let batch = encode_batch(&records, appended_ms)
            .map_err(|e| LogError::remap_record_index(e, &indices))?;
        shares.push(Share {
            partition,
            batch,
            indices,
        });
    }
    Ok(shares)
}

/// Positions of a multi-partition append: resolve with [`StreamAppend::wait`], or `.await`
/// it (it is a `Future` with the same output, for async callers that must not hold a thread
/// while the log fsyncs).
#[derive(Debug)]
#[must_use = "the records are only acknowledged once this resolves"]
pub struct StreamAppend {
    /// One completion per partition queued, with the input indices it holds (in order).
    parts: Vec<(AppendCompletion, Vec<usize>)>,
    /// Records in the caller's input.
    len: usize,
    /// Parts already resolved by `poll` (they are not polled again).
    resolved: usize,
    positions: Vec<Position>,
    /// The first failed part, while others are still being polled.
    error: Option<LogError>,
}

/// The shares of a batch append that [`Stream::try_append_batch`](crate::Stream::try_append_batch) could not queue because a
/// partition's writer queue was full (backpressure): from that partition on, in partition
/// order. Nothing of them is queued; [`UnqueuedShares::queue`] queues them on a thread that
/// may wait. Dropping this drops those records (the shares already queued stay queued).
#[derive(Debug)]
#[must_use = "these records are not queued yet: queue them or report the append failed"]
pub struct UnqueuedShares {
    pub(crate) shares: Vec<Share>,
    /// The incarnation of the stream they belong to.
    pub(crate) incarnation: u64,
}

impl StreamAppend {
    /// An append of `len` input records with no share queued yet; a backend adds one
    /// completion per partition with [`Self::push`].
    pub fn new(len: usize) -> StreamAppend {
        StreamAppend {
            parts: Vec::new(),
            len,
            resolved: 0,
            positions: vec![
                Position {
                    partition: 0,
                    offset: 0,
                };
                len
            ],
            error: None,
        }
    }

    /// Adds one partition's completion; `indices` are the positions in the caller's input of
    /// the records it holds, in order (its acknowledgment must cover exactly that many).
    pub fn push(&mut self, completion: AppendCompletion, indices: Vec<usize>) {
        debug_assert!(indices.iter().all(|&i| i < self.len), "index beyond input");
        self.parts.push((completion, indices));
    }

    /// Records one share's outcome: positions in input order, or the first error.
    fn settle(&mut self, outcome: Result<AppendAck>, indices: Vec<usize>) {
        match outcome {
            Ok(ack) => {
                assert_eq!(
                    indices.len(),
                    ack.record_count as usize,
                    "a share's acknowledgment covers exactly its records"
                );
                for (j, index) in indices.into_iter().enumerate() {
                    self.positions[index] = Position {
                        partition: ack.partition,
                        offset: ack.base_offset + j as u64,
                    };
                }
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// The outcome once every part is settled.
    fn finish(&mut self) -> Result<Vec<Position>> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.positions)),
        }
    }

    /// Waits for every partition's batch; returns positions in input order. The append is
    /// atomic per partition, not across partitions: on error, batches to other partitions
    /// may have been acknowledged (their positions are lost to this caller, which is why
    /// writes carry request ids).
    ///
    /// # Errors
    /// The first failed partition's error, as [`crate::Partition::append`]'s completion.
    pub fn wait(mut self) -> Result<Vec<Position>> {
        let parts = std::mem::take(&mut self.parts);
        for (completion, indices) in parts.into_iter().skip(self.resolved) {
            self.settle(completion.wait(), indices);
        }
        self.finish()
    }
}

impl Future for StreamAppend {
    type Output = Result<Vec<Position>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // In order: a part's outcome is taken once, and the positions come out the same as
        // `wait`'s whatever order the partitions finish in.
        while this.resolved < this.parts.len() {
            let outcome = match Pin::new(&mut this.parts[this.resolved].0).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => outcome,
            };
            let indices = std::mem::take(&mut this.parts[this.resolved].1);
            this.resolved += 1;
            this.settle(outcome, indices);
        }
        Poll::Ready(this.finish())
    }
}

impl UnqueuedShares {
    pub(crate) fn new(shares: Vec<Share>, incarnation: u64) -> UnqueuedShares {
        assert!(
            !shares.is_empty(),
            "only a share that did not fit is handed back"
        );
        UnqueuedShares {
            shares,
            incarnation,
        }
    }

    /// Records not queued yet.
    pub fn record_count(&self) -> usize {
        self.shares.iter().map(|s| s.indices.len()).sum()
    }
}
