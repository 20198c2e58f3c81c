//! Exactly-once appends with a request id on the JetStream backend (issue 13, item 6; the
//! argument is in docs/decisions/0011-log-backend.md, "Exactly once across nodes").
//!
//! ```text
//!  append_with_id(id, records)
//!    prepare_request: shares by partition, stamped exactly as the embedded log stamps them
//!    ready: this node's index (in memory, derived from the replicated log) must hold every
//!      message stored more than the duplicate window less a margin ago; when its last
//!      catch-up is older than a quarter of the window a refresh starts in the background
//!      (one per stream at a time) and the append goes on; only an index too old to be safe
//!      makes the append wait for a refresh, until INDEX_WAIT_MAX → Unavailable (503, retry)
//!    lookup: a share remembered → its original position (another digest → conflict)
//!    claim (a stream of several partitions, no share remembered): the id's claim on the
//!      stream (`claims`); another request's → conflict, nothing published
//!    publish the others with Nats-Msg-Id = rid-<XXH3-128(id, share)>: a duplicate answer
//!      names the original's sequence → read it back: the same share → its position, else
//!      a conflict
//!    remember what this call appended
//! ```
//!
//! Every message of a share carries the same `Nats-Msg-Id` on every node and every retry, so
//! JetStream stores a share once within its duplicate window whoever sends it; the index
//! covers everything older, because it was caught up to a state read less than a window ago.
//!
//! The refresh reads every partition from where the last one stopped up to the leader's end
//! as of its start, 16 message gets in flight. With a checkpoint file (the node's data
//! directory, review r13 F3) the index is the embedded log's mechanism
//! ([`DedupIndex::write_checkpoint`], [`DedupIndex::read_checkpoint`]): the first refresh
//! after a start installs the checkpoint — once the record just below each partition's
//! applied offset is found with the fingerprint it recorded — and reads only the log after
//! it; a refresh that added entries writes a new one when the last is older than
//! [`CHECKPOINT_INTERVAL`], after its appends were let go. It runs beside the appends: the index is
//! shared under its own lock, and a record the refresh reads that an append also remembers
//! is remembered once. Appends therefore never wait on a refresh while the index is fresh
//! enough — the refresh every quarter window held every append with an id on its stream
//! before (for up to 5 s: the failover benchmark's outliers, decision 0023).

mod checkpoint;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logbook_log::dedup::{DedupIndex, ReplayCursor, RequestId, RequestShare, record_fingerprint};
use logbook_log::{
    AppendCondition, AppendOutcome, HashKey, LogError, Position, RequestIdWindow, Result,
};

pub(crate) use self::checkpoint::CheckpointFile;
use self::checkpoint::{CHECKPOINT_INTERVAL, CheckpointPlan};
use super::claims::Claims;
use super::partition::{JsPartition, Publish};
use super::{BACKEND, now_ms};
use crate::offset;
use crate::partition::{AppendOptions, Message};

/// Records read per call while catching up (one message get per message, 16 in flight).
const CATCH_UP_READ_RECORDS: usize = 4_096;
/// Longest time an append waits for a refresh when the index is too old to be safe (the
/// first append of a stream on this node, or refreshes that keep failing) before it
/// answers "retry".
const INDEX_WAIT_MAX: Duration = Duration::from_secs(5);
/// Clock skew and scheduling allowed between this node and the NATS servers when comparing
/// the index's age with the duplicate window.
const WINDOW_MARGIN: Duration = Duration::from_secs(30);

/// What the refreshes have read of each partition. Held by the one refresh that runs.
#[derive(Debug, Default)]
struct Followed {
    /// The checkpoint was looked for (by the first refresh).
    loaded: bool,
    /// When the last checkpoint was planned.
    checkpointed_at: Option<Instant>,
    /// [`RequestIds::records_read`] when it was planned.
    read_at_checkpoint: u64,
    partitions: Vec<FollowedPartition>,
}

#[derive(Debug, Default)]
struct FollowedPartition {
    /// The offset to read next.
    next: u64,
    /// The share being read.
    cursor: ReplayCursor,
    /// The last record read: its offset and [`record_fingerprint`].
    last: Option<(u64, u64)>,
}

/// Where a stream of several partitions claims its request ids ([`Claims`]).
#[derive(Debug)]
pub(crate) struct StreamClaims {
    /// The claims' JetStream stream.
    pub(crate) claims: Arc<Claims>,
    /// The stream's name and incarnation, claimed under.
    pub(crate) stream: String,
    pub(crate) incarnation: u64,
}

/// One stream's request ids on this node.
#[derive(Debug)]
pub(crate) struct RequestIds {
    index: DedupIndex,
    hash_key: HashKey,
    /// How long JetStream alone answers a retry: the duplicate window of the stream's
    /// partitions, or of the claims when shorter.
    window: Duration,
    /// `None` for a stream of one partition.
    claims: Option<StreamClaims>,
    /// Whether `index` is checkpointed (to the file it was made with).
    checkpointed: bool,
    /// A checkpoint is being written (at most one at a time).
    writing: AtomicBool,
    /// Records the refreshes read from the log.
    records_read: AtomicU64,
    /// What the refreshes have read. Held by the one refresh that runs (never by an append).
    followed: tokio::sync::Mutex<Followed>,
    /// Whether a refresh runs, and what the last one achieved.
    refresh: Mutex<Refresh>,
    /// Woken when a refresh ends, caught up or not.
    refresh_ended: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Refresh {
    /// A refresh task is running (at most one per stream).
    running: bool,
    /// When the state the index last caught up to was asked for: every message stored
    /// before then is in the index.
    caught_up_at: Option<Instant>,
    /// Why the last refresh did not catch up (`None` when it did).
    failed: Option<String>,
}

/// What an append does about the index, decided under the refresh lock.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// The index is safe to look up: go on (a refresh may have been started).
    Go,
    /// Too old to be safe: wait for the running refresh.
    Wait,
    /// Too old, and the refresh this append waited for failed: report it.
    Failed(String),
}

impl Refresh {
    /// Decides for an append that `arrived` (having `waited` for a refresh already), and
    /// marks a refresh running when one should start; returns whether the caller starts it.
    fn decide(&mut self, arrived: Instant, window: Duration, waited: bool) -> (Readiness, bool) {
        let safe_age = window.saturating_sub(WINDOW_MARGIN);
        let safe = self.caught_up_at.is_some_and(|t| t + safe_age >= arrived);
        let due = self.caught_up_at.is_none_or(|t| t.elapsed() >= window / 4);
        if !safe
            && waited
            && let Some(why) = &self.failed
        {
            return (Readiness::Failed(why.clone()), false);
        }
        let start = (due || !safe) && !self.running;
        self.running |= start;
        let readiness = if safe { Readiness::Go } else { Readiness::Wait };
        (readiness, start)
    }
}

/// Ends a refresh task's turn, however the task ends (cancelled with the runtime included):
/// records its outcome, lets the next one start, wakes the appends waiting for it.
struct RefreshTurn {
    ids: Arc<RequestIds>,
    /// The refresh's start once it caught up, else why not.
    outcome: std::result::Result<Instant, String>,
}

impl Drop for RefreshTurn {
    fn drop(&mut self) {
        let mut refresh = self.ids.refresh();
        refresh.running = false;
        match &self.outcome {
            Ok(started) => {
                refresh.caught_up_at =
                    Some(refresh.caught_up_at.map_or(*started, |t| t.max(*started)));
                refresh.failed = None;
            }
            Err(why) => refresh.failed = Some(why.clone()),
        }
        drop(refresh);
        self.ids.refresh_ended.notify_waiters();
    }
}

impl RequestIds {
    /// An empty index for a stream of `partitions` whose JetStream streams keep message ids
    /// for `duplicate_window`, claiming its ids with `claims` (several partitions),
    /// checkpointed to `checkpoint` (else in memory only, under a random key).
    ///
    /// # Errors
    /// [`LogError::Backend`] when the operating system has no randomness for the index's key.
    pub(crate) fn new(
        partitions: u32,
        duplicate_window: Duration,
        claims: Option<StreamClaims>,
        checkpoint: Option<CheckpointFile>,
    ) -> Result<RequestIds> {
        let window = RequestIdWindow::default();
        let (index, hash_key) = match &checkpoint {
            Some(c) => (DedupIndex::new(window, c.path.clone(), c.key), c.key),
            None => {
                let key = HashKey::random().map_err(|e| LogError::Backend {
                    backend: BACKEND,
                    detail: format!("no key for the request-id index: {e}"),
                })?;
                (DedupIndex::in_memory(window, key), key)
            }
        };
        Ok(RequestIds {
            index,
            hash_key,
            window: claims.as_ref().map_or(duplicate_window, |c| {
                duplicate_window.min(c.claims.window())
            }),
            claims,
            checkpointed: checkpoint.is_some(),
            writing: AtomicBool::new(false),
            records_read: AtomicU64::new(0),
            followed: tokio::sync::Mutex::new(Followed {
                partitions: (0..partitions)
                    .map(|_| FollowedPartition::default())
                    .collect(),
                ..Followed::default()
            }),
            refresh: Mutex::default(),
            refresh_ended: tokio::sync::Notify::new(),
        })
    }

    fn refresh(&self) -> MutexGuard<'_, Refresh> {
        // Only whole fields are written under this lock.
        self.refresh.lock().unwrap_or_else(|e| e.into_inner())
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
        self: &Arc<Self>,
        request_id: &RequestId,
        shares: &[RequestShare],
        batches: &[Message],
        appended_ms: i64,
        partitions: &Arc<[Publish]>,
    ) -> Result<AppendOutcome> {
        self.ready(partitions).await?;
        let known = self.index.lookup(request_id, shares, now_ms())?;
        // A share remembered with this digest proves the id is this request's already.
        if let Some(c) = &self.claims
            && known.iter().all(Option::is_none)
        {
            c.claims
                .claim(&c.stream, c.incarnation, request_id, shares, &self.index)
                .await?;
        }
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

    /// Returns once the index is safe to look up: it holds every message stored more than
    /// the duplicate window less a margin before this call. Starts a refresh in the
    /// background when the last one is older than a quarter of the window; waits only while
    /// the index is not safe (up to [`INDEX_WAIT_MAX`]).
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the index is not safe in time, or the refresh waited
    /// for failed (an election, no responders): nothing was appended, retry.
    async fn ready(self: &Arc<Self>, partitions: &Arc<[Publish]>) -> Result<()> {
        let arrived = Instant::now();
        let deadline = tokio::time::Instant::now() + INDEX_WAIT_MAX;
        let mut waited = false;
        loop {
            // Registered before the state is looked at: a refresh ending in between wakes it.
            let ended = self.refresh_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let (readiness, start) = self.refresh().decide(arrived, self.window, waited);
            if start {
                self.start_refresh(partitions.clone());
            }
            match readiness {
                Readiness::Go => return Ok(()),
                Readiness::Failed(why) => return Err(self.unavailable(&why)),
                Readiness::Wait => {}
            }
            tokio::select! {
                () = ended => waited = true,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(self.unavailable("still reading the log"));
                }
            }
        }
    }

    fn unavailable(&self, why: &str) -> LogError {
        LogError::Unavailable {
            backend: BACKEND,
            why: format!(
                "this node's request-id index is not caught up with the log within \
                 JetStream's duplicate window of {} s ({why}): retry",
                self.window.as_secs()
            ),
        }
    }

    /// Runs one refresh as a task of the backend's runtime (the caller runs on it); its
    /// [`RefreshTurn`] records the outcome. The caller has marked it running.
    fn start_refresh(self: &Arc<Self>, partitions: Arc<[Publish]>) {
        let ids = self.clone();
        tokio::spawn(async move {
            let mut turn = RefreshTurn {
                ids: ids.clone(),
                outcome: Err("the refresh was cancelled: the backend is closing".into()),
            };
            let plan = match ids.catch_up(&partitions).await {
                Ok((started, plan)) => {
                    turn.outcome = Ok(started);
                    plan
                }
                Err(e) => {
                    tracing::warn!(error = %e, "request-id index refresh failed; the next append retries it");
                    turn.outcome = Err(e.to_string());
                    None
                }
            };
            // The appends waiting for this refresh go on before the checkpoint is written.
            drop(turn);
            if let Some(plan) = plan {
                ids.write_checkpoint(plan).await;
            }
        });
    }

    /// Reads every partition up to its leader's end as of now (the first time, from the
    /// checkpoint on); returns when that state was asked for, and a checkpoint to write when
    /// one is due. One at a time: the caller holds the refresh's turn.
    ///
    /// # Errors
    /// Those of the reads (the next refresh continues where this one stopped).
    async fn catch_up(
        self: &Arc<Self>,
        partitions: &[Publish],
    ) -> Result<(Instant, Option<CheckpointPlan>)> {
        let mut followed = self.followed.lock().await;
        let started = Instant::now();
        if !followed.loaded {
            self.load_checkpoint(&mut followed, partitions).await?;
            followed.loaded = true;
        }
        for (p, publisher) in partitions.iter().enumerate() {
            let Some(f) = followed.partitions.get_mut(p) else {
                continue;
            };
            self.catch_up_partition(p, publisher, f).await?;
        }
        let due = followed
            .checkpointed_at
            .is_none_or(|t| t.elapsed() >= CHECKPOINT_INTERVAL);
        // New entries: this node's appends (dirty), or records read since (others' appends).
        let grown = self.index.dirty() > 0 || self.records_read() > followed.read_at_checkpoint;
        let plan = if due && grown {
            self.checkpoint_plan(&mut followed)
        } else {
            None
        };
        Ok((started, plan))
    }

    /// Records the refreshes read from the log since this index was made.
    pub(crate) fn records_read(&self) -> u64 {
        self.records_read.load(Ordering::Relaxed)
    }

    /// Reads partition `p` from `f.next` to its leader's end as of now.
    async fn catch_up_partition(
        &self,
        p: usize,
        publisher: &Publish,
        f: &mut FollowedPartition,
    ) -> Result<()> {
        let inner = publisher.inner();
        let state = inner.state().await.map_err(super::log_error)?;
        publisher.saw_state(&state);
        let end = offset::end_offset(state.last_sequence).unwrap_or(u64::MAX);
        let partition = u32::try_from(p).unwrap_or(u32::MAX);
        let (next, cursor) = (&mut f.next, &mut f.cursor);
        while *next < end {
            // Every message up to the leader's last sequence is stored: their gets go
            // `READ_AHEAD_MESSAGES` at a time, not one round trip each.
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
            f.last = Some((last.offset, record_fingerprint(last)));
            self.records_read
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            self.index.follow(partition, &records, cursor, now_ms());
        }
        Ok(())
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
    use logbook_log::Record;

    use super::*;
    use crate::backend::runtime::Runtime;
    use crate::client::{ConnectSettings, JetStreamLog};
    use crate::naming::PartitionRef;
    use crate::settings::PartitionSettings;
    use crate::test_cluster::{Cluster, ClusterSpec};

    /// An index on one R1 partition of a single nats-server, and that partition's publisher.
    fn one_partition(runtime: &Arc<Runtime>, cluster: &Cluster) -> Arc<[Publish]> {
        let urls = cluster.nats_urls();
        let (inner, state) = runtime
            .block_on(async move {
                let log = JetStreamLog::connect(&ConnectSettings::new(urls)).await?;
                let settings = PartitionSettings {
                    replicas: 1,
                    ..PartitionSettings::default()
                };
                let reference = PartitionRef::new("refresh", 0, 0);
                let inner = log.create_partition(&reference, &settings).await?;
                let state = inner.state().await?;
                Ok::<_, crate::JetStreamError>((inner, state))
            })
            .expect("the runtime")
            .expect("the partition's JetStream stream");
        let closed = Arc::new(AtomicBool::new(false));
        let partition = JsPartition::new(
            inner,
            &state,
            runtime.clone(),
            closed,
            Duration::from_secs(30),
        );
        Arc::from(vec![partition.publisher()])
    }

    /// Appends one keyed record under `id` through `ids`, as `append_with_id` does.
    fn append(
        runtime: &Runtime,
        ids: &Arc<RequestIds>,
        publishers: &Arc<[Publish]>,
        id: &str,
    ) -> Result<AppendOutcome> {
        let id = RequestId::new(id)?;
        let appended_ms = now_ms();
        let records = vec![Record::keyed("k", id.as_str())];
        let shares = ids.prepare(&id, None, records, 1, appended_ms)?;
        let batches = shares
            .iter()
            .map(|s| s.encode(appended_ms).map(Message::from))
            .collect::<Result<Vec<_>>>()?;
        let (ids, publishers) = (ids.clone(), publishers.clone());
        runtime.block_on(async move {
            ids.append(&id, &shares, &batches, appended_ms, &publishers)
                .await
        })?
    }

    /// The refresh runs beside the appends: while one is in progress (held here by taking
    /// the partitions' cursors, which a refresh holds from start to end — an observable
    /// state, no timing), an append is answered, and a retry of it is still a duplicate.
    /// Once let go, that refresh catches the index up.
    #[test]
    fn an_append_is_answered_while_a_refresh_is_in_progress() {
        let runtime = Arc::new(Runtime::new(2).expect("a runtime"));
        let cluster = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to start the cluster")
            .block_on(Cluster::start(ClusterSpec {
                nats: 1,
                ..ClusterSpec::default()
            }));
        let publishers = one_partition(&runtime, &cluster);
        let window = Duration::from_secs(120);
        let ids = Arc::new(RequestIds::new(1, window, None, None).expect("an index"));

        // The index is empty, so not safe: the first append waits for the first refresh.
        let first = append(&runtime, &ids, &publishers, "first").expect("the first append");
        assert!(!first.duplicate);
        assert!(
            ids.refresh().caught_up_at.is_some(),
            "the first refresh caught up"
        );

        // A refresh that has begun and cannot end: this test holds the cursors.
        let cursors = ids.followed.try_lock().expect("no refresh runs now");
        // Half a window old: a refresh is due (older than a quarter), the index still safe
        // (younger than the window less the margin).
        let aged = Instant::now()
            .checked_sub(window / 2)
            .expect("the monotonic clock is more than a minute old");
        ids.refresh().caught_up_at = Some(aged);

        let second = append(&runtime, &ids, &publishers, "second").expect("answered");
        assert!(!second.duplicate);
        assert!(second.positions[0].offset > first.positions[0].offset);
        assert!(
            ids.refresh().running,
            "the refresh the append started is still in progress"
        );
        let retry = append(&runtime, &ids, &publishers, "second").expect("a retry");
        assert!(retry.duplicate, "remembered by this node: {retry:?}");
        assert_eq!(retry.positions, second.positions);

        // Let go: the refresh ends, caught up to a state read after it was released.
        drop(cursors);
        let waiter = ids.clone();
        runtime
            .block_on(async move {
                loop {
                    let ended = waiter.refresh_ended.notified();
                    tokio::pin!(ended);
                    ended.as_mut().enable();
                    if !waiter.refresh().running {
                        return;
                    }
                    ended.await;
                }
            })
            .expect("the runtime");
        let refresh = ids.refresh();
        assert!(refresh.caught_up_at.is_some_and(|t| t > aged));
        assert_eq!(refresh.failed, None);
    }

    /// A restart — a new index on the same checkpoint file — reads only the log after the
    /// checkpoint (counted in records read, not time), and knows every id from before it.
    #[test]
    fn a_restart_reads_only_the_log_after_the_checkpoint() {
        const BEFORE: usize = 40;
        const AFTER: usize = 7;
        let runtime = Arc::new(Runtime::new(2).expect("a runtime"));
        let cluster = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to start the cluster")
            .block_on(Cluster::start(ClusterSpec {
                nats: 1,
                ..ClusterSpec::default()
            }));
        let publishers = one_partition(&runtime, &cluster);
        let dir = tempfile::tempdir().expect("a directory");
        let file = CheckpointFile {
            path: dir.path().join("stream.request-ids"),
            key: HashKey::from_bytes([7; 16]),
        };
        let window = Duration::from_secs(120);
        let index = |file: &CheckpointFile| {
            Arc::new(RequestIds::new(1, window, None, Some(file.clone())).expect("an index"))
        };

        let first = index(&file);
        let mut positions = Vec::new();
        for i in 0..BEFORE {
            let appended = append(&runtime, &first, &publishers, &format!("before-{i}"));
            positions.push(appended.expect("appended").positions);
        }
        // A refresh reads what was appended; its checkpoint is written.
        let (ids, p) = (first.clone(), publishers.clone());
        runtime
            .block_on(async move {
                let (_, plan) = ids.catch_up(&p).await.expect("caught up");
                ids.write_checkpoint(plan.expect("the first checkpoint is due"))
                    .await;
            })
            .expect("the runtime");
        assert!(first.records_read() >= BEFORE as u64, "the log was read");
        for i in 0..AFTER {
            append(&runtime, &first, &publishers, &format!("after-{i}")).expect("appended");
        }
        drop(first);

        let restarted = index(&file);
        let retry = append(&runtime, &restarted, &publishers, "before-0").expect("a retry");
        assert!(retry.duplicate, "{retry:?}");
        assert_eq!(retry.positions, positions[0]);
        assert_eq!(
            restarted.records_read(),
            AFTER as u64,
            "only the log after the checkpoint is read"
        );
        assert_eq!(
            restarted.index.len(),
            (BEFORE + AFTER) as u64,
            "the ids before the checkpoint come from it"
        );
    }

    #[test]
    fn an_index_too_old_waits_for_a_refresh_and_one_that_failed_is_reported() {
        let window = Duration::from_secs(120);
        let arrived = Instant::now();
        let mut refresh = Refresh::default();
        // Never caught up: wait, and start the refresh.
        assert_eq!(
            refresh.decide(arrived, window, false),
            (Readiness::Wait, true)
        );
        // Another append meanwhile: wait for the same refresh.
        assert_eq!(
            refresh.decide(arrived, window, false),
            (Readiness::Wait, false)
        );
        // That refresh failed: an append that waited for it reports why.
        refresh.running = false;
        refresh.failed = Some("no responders".into());
        assert_eq!(
            refresh.decide(arrived, window, true),
            (Readiness::Failed("no responders".into()), false)
        );
        // Caught up just now: go, nothing to start.
        refresh.caught_up_at = Some(Instant::now());
        refresh.failed = None;
        assert_eq!(
            refresh.decide(arrived, window, false),
            (Readiness::Go, false)
        );
    }

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
