//! Exactly-once appends with a request id on the JetStream backend (issue 13, item 6; the
//! argument is in docs/decisions/0011-log-backend.md, "Exactly once across nodes").
//!
//! ```text
//!  append_with_id(id, records)
//!    prepare_request: shares by partition, stamped exactly as the embedded log stamps them
//!    catch up: this node's index (in memory, derived from the replicated log) reads every
//!      partition from where it stopped to the leader's end, when its last full catch-up is
//!      older than a quarter of the duplicate window; not caught up within the window less a
//!      margin → Unavailable (503, retry)
//!    lookup: a share remembered → its original position (another digest → conflict)
//!    publish the others with Nats-Msg-Id = rid-<XXH3-128(id, share)>: a duplicate answer
//!      names the original's sequence → read it back: the same share → its position, else
//!      a conflict
//!    remember what this call appended
//! ```
//!
//! Every message of a share carries the same `Nats-Msg-Id` on every node and every retry, so
//! JetStream stores a share once within its duplicate window whoever sends it; the index
//! covers everything older, because it was caught up to a state read less than a window ago.

use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_log::dedup::{DedupIndex, ReplayCursor, RequestId, RequestShare};
use logbook_log::{
    AppendCondition, AppendOutcome, HashKey, LogError, Position, RequestIdWindow, Result,
};

use super::partition::{JsPartition, Publish};
use super::{BACKEND, now_ms};
use crate::offset;
use crate::partition::{AppendOptions, Message};

/// Records read per call while catching up (one message get per message, 16 in flight:
/// a bound on round trips between two looks at the clock).
const CATCH_UP_READ_RECORDS: usize = 4_096;
/// Longest time one append spends catching the index up before it answers "retry".
const CATCH_UP_TIME_MAX: Duration = Duration::from_secs(5);
/// Clock skew and scheduling allowed between this node and the NATS servers when comparing
/// the index's age with the duplicate window.
const WINDOW_MARGIN: Duration = Duration::from_secs(30);

/// One stream's request ids on this node.
#[derive(Debug)]
pub(crate) struct RequestIds {
    index: DedupIndex,
    hash_key: HashKey,
    /// JetStream's duplicate window of the stream's partitions.
    window: Duration,
    /// Catch-up state, one per partition; the lock also serialises catching up.
    followed: tokio::sync::Mutex<Followed>,
}

#[derive(Debug)]
struct Followed {
    /// Per partition: the offset to read next and the share being read.
    partitions: Vec<(u64, ReplayCursor)>,
    /// When the state the index last caught up to was asked for: every message stored
    /// before then is in the index.
    caught_up_at: Option<Instant>,
}

impl RequestIds {
    /// An empty index for a stream of `partitions` whose JetStream streams keep message ids
    /// for `duplicate_window`.
    ///
    /// # Errors
    /// [`LogError::Backend`] when the operating system has no randomness for the index's key.
    pub(crate) fn new(partitions: u32, duplicate_window: Duration) -> Result<RequestIds> {
        let hash_key = HashKey::random().map_err(|e| LogError::Backend {
            backend: BACKEND,
            detail: format!("no key for the request-id index: {e}"),
        })?;
        Ok(RequestIds {
            index: DedupIndex::in_memory(RequestIdWindow::default(), hash_key),
            hash_key,
            window: duplicate_window,
            followed: tokio::sync::Mutex::new(Followed {
                partitions: (0..partitions)
                    .map(|_| (0, ReplayCursor::default()))
                    .collect(),
                caught_up_at: None,
            }),
        })
    }

    /// The request's shares, stamped (see [`logbook_log::dedup::prepare_request`]).
    ///
    /// # Errors
    /// As `prepare_request`.
    pub(crate) fn prepare(
        &self,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<logbook_log::Record>,
        partitions: u32,
        appended_ms: i64,
    ) -> Result<Vec<RequestShare>> {
        logbook_log::dedup::prepare_request(
            &self.hash_key,
            request_id,
            traceparent,
            records,
            partitions,
            appended_ms,
        )
    }

    /// Appends the shares not yet in the log, exactly once; see the module docs.
    /// `batches[i]` is `shares[i]` encoded; `partitions` are the stream's, in order.
    ///
    /// # Errors
    /// [`LogError::RequestIdConflict`]; [`LogError::Unavailable`] while the index is too far
    /// behind the log or the cluster is electing; [`LogError::OutcomeUnknown`] (retry with the
    /// same id); others of the engine.
    pub(crate) async fn append(
        &self,
        request_id: &RequestId,
        shares: &[RequestShare],
        batches: &[Message],
        appended_ms: i64,
        partitions: &[Publish],
    ) -> Result<AppendOutcome> {
        self.catch_up(partitions).await?;
        let known = self.index.lookup(request_id, shares, now_ms())?;
        let mut bases = Vec::with_capacity(shares.len());
        let mut appended_any = false;
        for (i, base) in known.into_iter().enumerate() {
            let base = match base {
                Some(base) => base,
                None => {
                    let publisher = partitions
                        .get(shares[i].partition as usize)
                        .ok_or(LogError::Closed)?;
                    let (base, duplicate) = self
                        .publish(request_id, shares, i, publisher, &batches[i])
                        .await?;
                    if !duplicate {
                        appended_any = true;
                        let share = &shares[i];
                        self.index.remember(share, base, appended_ms, now_ms());
                    }
                    base
                }
            };
            bases.push(base);
        }
        if !appended_any {
            self.index.count_duplicate();
        }
        Ok(outcome(shares, &bases, !appended_any))
    }

    /// Publishes share `i` under its message id; a duplicate answer is checked against the
    /// original read back. Returns the share's base offset and whether it was a duplicate.
    async fn publish(
        &self,
        request_id: &RequestId,
        shares: &[RequestShare],
        i: usize,
        publisher: &Publish,
        batch: &Message,
    ) -> Result<(u64, bool)> {
        let options = AppendOptions {
            expected_last_sequence: None,
            message_id: Some(message_id(request_id, shares[i].ordinal)),
        };
        let appended = publisher
            .send(batch, &options, AppendCondition::Always, None)
            .await?;
        if appended.duplicate {
            let original = publisher
                .inner()
                .read_message(appended.sequence)
                .await
                .map_err(super::log_error)?
                .ok_or_else(|| LogError::Unavailable {
                    backend: BACKEND,
                    why: format!(
                        "message {} (the original of this request id) is not readable yet",
                        appended.sequence
                    ),
                })?;
            self.index.check_stored(request_id, shares, i, &original)?;
        }
        Ok((appended.base_offset, appended.duplicate))
    }

    /// Catches the index up to the leaders' ends when its last catch-up is older than a
    /// quarter of the duplicate window (bounded by [`CATCH_UP_TIME_MAX`]).
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when, after that, the index still does not hold every
    /// message stored more than the duplicate window (less a margin) ago; errors of the reads.
    async fn catch_up(&self, partitions: &[Publish]) -> Result<()> {
        let mut followed = self.followed.lock().await;
        let fresh =
            |at: Option<Instant>, within: Duration| at.is_some_and(|t| t.elapsed() < within);
        if fresh(followed.caught_up_at, self.window / 4) {
            return Ok(());
        }
        let started = Instant::now();
        let mut behind = 0u64;
        for (p, publisher) in partitions.iter().enumerate() {
            let Some((next, cursor)) = followed.partitions.get_mut(p) else {
                continue;
            };
            behind += self
                .catch_up_partition(p, publisher, next, cursor, started)
                .await?;
        }
        if behind == 0 {
            followed.caught_up_at = Some(started);
            return Ok(());
        }
        if fresh(
            followed.caught_up_at,
            self.window.saturating_sub(WINDOW_MARGIN),
        ) {
            return Ok(());
        }
        Err(LogError::Unavailable {
            backend: BACKEND,
            why: format!(
                "this node's request-id index is still reading the log ({behind} messages \
                 behind, more than JetStream's duplicate window of {} s): retry",
                self.window.as_secs()
            ),
        })
    }

    /// Reads partition `p` from `*next` to its leader's end as of now (until
    /// [`CATCH_UP_TIME_MAX`] after `started`); returns how many messages are left unread.
    async fn catch_up_partition(
        &self,
        p: usize,
        publisher: &Publish,
        next: &mut u64,
        cursor: &mut ReplayCursor,
        started: Instant,
    ) -> Result<u64> {
        let inner = publisher.inner();
        let state = inner.state().await.map_err(super::log_error)?;
        publisher.saw_state(&state);
        let end = offset::end_offset(state.last_sequence).unwrap_or(u64::MAX);
        let partition = u32::try_from(p).unwrap_or(u32::MAX);
        while *next < end {
            if started.elapsed() > CATCH_UP_TIME_MAX {
                let (at, _) = offset::position_of(*next);
                return Ok(state.last_sequence.saturating_sub(at) + 1);
            }
            // Every message up to the leader's last sequence is stored: their gets go
            // `READ_AHEAD_MESSAGES` at a time, not one round trip each (appends with an id
            // wait for this catch-up).
            let records = inner
                .read_ahead(
                    *next,
                    CATCH_UP_READ_RECORDS,
                    usize::MAX,
                    state.last_sequence,
                )
                .await
                .map_err(super::log_error)?;
            let Some(last) = records.last() else {
                *next = end;
                break;
            };
            *next = last.offset + 1;
            self.index.follow(partition, &records, cursor, now_ms());
        }
        Ok(0)
    }
}

/// The `Nats-Msg-Id` of share `ordinal` of a request: the same on every node and retry.
/// Hashed, because a request id may hold characters a NATS header cannot.
fn message_id(request_id: &RequestId, ordinal: u32) -> String {
    let mut bytes = Vec::with_capacity(request_id.as_str().len() + 4);
    bytes.extend_from_slice(&ordinal.to_le_bytes());
    bytes.extend_from_slice(request_id.as_str().as_bytes());
    format!("rid-{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// Every record's position, in the caller's order, from each share's base offset.
fn outcome(shares: &[RequestShare], bases: &[u64], duplicate: bool) -> AppendOutcome {
    let n = shares.iter().map(|s| s.indices.len()).sum();
    let mut positions = vec![
        Position {
            partition: 0,
            offset: 0
        };
        n
    ];
    for (share, &base) in shares.iter().zip(bases) {
        for (j, &i) in share.indices.iter().enumerate() {
            positions[i] = Position {
                partition: share.partition,
                offset: base + j as u64,
            };
        }
    }
    AppendOutcome {
        positions,
        duplicate,
    }
}

/// The publishers of `partitions`, in partition order.
pub(crate) fn publishers(partitions: &[JsPartition]) -> Arc<[Publish]> {
    partitions.iter().map(JsPartition::publisher).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_per_share_and_fit_a_nats_header() {
        let id = RequestId::new("order 17: a space, a colon").unwrap();
        let a = message_id(&id, 0);
        assert_ne!(a, message_id(&id, 1));
        assert_eq!(a, message_id(&id, 0));
        assert!(a.bytes().all(|b| b.is_ascii_graphic()), "{a}");
        assert_eq!(a.len(), 4 + 32);
    }
}
