//! One Logbook partition through the seam: [`LogPartition`] over a [`JetStreamPartition`].
//!
//! ```text
//!  append_batch ──check, encode──▶ task: publish (Nats-Msg-Id, expected last sequence),
//!                                  retried while unavailable ──▶ Completer ──▶ AppendCompletion
//!  read ──block_on──▶ leader's message get (stream state at the end)
//!  wait_end_offset_above ──▶ woken as the observed end rises (no I/O while watched)
//!  watch (a task, from the first wait) ──ordered consumer, headers only──▶ observed end
//!  end_offset, start_offset, durable_offset ──▶ what this handle observed last (no I/O)
//!  latest_end_offset ──block_on──▶ leader's stream state (raises the observed end)
//! ```
//!
//! A wait on the end does not poll while the partition is watched: the first wait starts a
//! watch ([`JetStreamPartition::watch_end`]) that raises the observed end with every
//! message stored, and waits sleep until it rises, asking the leader's state only every
//! [`WATCHED_POLL`] (a safety net for a watch stalled unnoticed). Until the watch delivers
//! (and while it is restarted after an error), waits poll the state as they used to: every
//! 2 ms, backing off to [`WAIT_POLL_MAX`].
//!
//! Every publish carries a fresh `Nats-Msg-Id`, so retrying it after an unknown outcome
//! stores it once (within the duplicate window; the retries stop long before it ends). An
//! [`AppendCondition::EndOffset`] becomes `Nats-Expected-Last-Sequence`: end offsets of this
//! backend are multiples of 2^16 (`last_sequence · 2^16`), and any other value cannot be an
//! end, so such an append is refused as a mismatch.
//!
//! Conditioned appends are sent in the order of the calls ([`SendOrder`]): a fenced writer
//! chains each append on the end after the previous one without waiting for its
//! acknowledgment, and publish tasks start in any order on the runtime — the second of two
//! sent first would be refused at storage as if another writer had appended. Only the first
//! attempt is ordered: when a predecessor has to be sent again (no stream leader for a
//! moment), its successors are refused and the writer's chain ends there. Such a refusal is
//! never sent again here: by then another writer (a new leader) may have extended the stream
//! to exactly the end it expects, and storing it after that writer's records would break the
//! chain it was certified on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logbook_log::format::{EncodedBatch, encode_batch};
use logbook_log::{
    AppendAck, AppendCompletion, AppendCondition, EndOffsetAbove, LogError, LogPartition, Record,
    Result, StoredRecord, TimestampOffset,
};
use tokio::sync::oneshot;

use super::runtime::{AbortOnDrop, Runtime};
use super::{log_error, now_ms};
use crate::error::JetStreamError;
use crate::limits::MESSAGE_RECORDS_MAX;
use crate::offset;
use crate::partition::{
    AppendOptions, Appended, JetStreamPartition, Message, PartitionState, RETRY_PAUSE_FIRST,
    RETRY_PAUSE_MAX,
};

/// Longest pause between two polls of the leader's state while waiting for the end on a
/// partition that is not watched.
const WAIT_POLL_MAX: Duration = Duration::from_millis(100);
/// How long a wait's first look at the leader's state may take, however short the wait.
const WAIT_FIRST_LOOK_MIN: Duration = Duration::from_secs(1);
/// How often the waits of a watched partition ask the leader's state, together: a watch
/// that stalls unnoticed delays a wait by at most this (the client notices a stall after
/// two missed idle heartbeats, 10 s). One request a second per partition handle, however
/// many wait.
const WATCHED_POLL: Duration = Duration::from_secs(1);
/// Pause before a watch that ended, or could not start, is started again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// What a handle last observed of its partition; only ever raised.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    end: AtomicU64,
    start: AtomicU64,
    bytes: AtomicU64,
    messages: AtomicU64,
    /// Wakes the waits on the end ([`wait_above`]) whenever it rises: an acknowledgment,
    /// the watch, or another caller's read or state request need not wait for a poll.
    end_raised: tokio::sync::Notify,
    /// Whether the partition's watch ([`watch`]) delivers: the end then rises with every
    /// message stored, and waits do not poll.
    watched: AtomicBool,
    /// When a wait of a watched partition last asked the leader's state.
    asked: Mutex<Option<tokio::time::Instant>>,
}

impl Observed {
    fn saw_end(&self, end: u64) {
        if self.end.fetch_max(end, Ordering::AcqRel) < end {
            self.end_raised.notify_waiters();
        }
    }

    fn saw_state(&self, state: &PartitionState) {
        if let Some(end) = offset::end_offset(state.last_sequence) {
            self.saw_end(end);
        }
        if state.first_sequence >= 1
            && let Some(start) = offset::offset_of(state.first_sequence, 0)
        {
            self.start.fetch_max(start, Ordering::AcqRel);
        }
        self.bytes.fetch_max(state.bytes, Ordering::AcqRel);
        self.messages.fetch_max(state.messages, Ordering::AcqRel);
    }

    /// Counts one more message of `bytes` (until the next state shows the server's count).
    fn saw_append(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::AcqRel);
        self.messages.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// When a wait asks the leader's state next: now without a watch; while watched, once
    /// [`WATCHED_POLL`] passed since any wait last asked.
    fn next_ask(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        if !self.watched.load(Ordering::Acquire) {
            return now;
        }
        let asked = *self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        asked.map_or(now, |at| at + WATCHED_POLL)
    }

    /// Whether a wait asks the leader's state now (and if so, notes that it does).
    fn ask_now(&self, now: tokio::time::Instant) -> bool {
        if !self.watched.load(Ordering::Acquire) {
            return true;
        }
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        if asked.is_some_and(|at| now < at + WATCHED_POLL) {
            return false;
        }
        *asked = Some(now);
        true
    }
}

/// The order in which a handle's conditioned appends are handed to the connection: the order
/// of the calls. Each publish task waits until its predecessor has sent its message (not for
/// the acknowledgment), so a chain of appends stays pipelined.
#[derive(Debug, Default)]
struct SendOrder {
    /// Resolves (or is dropped) once the latest conditioned append was sent or failed.
    last: Mutex<Option<oneshot::Receiver<()>>>,
}

impl SendOrder {
    /// The next append's turn: after the one before it (called in the order of the calls).
    fn next(&self) -> Turn {
        let (sent, next) = oneshot::channel();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let before = last.replace(next);
        Turn {
            before,
            _sent: sent,
        }
    }
}

/// One append's place in a [`SendOrder`]; dropping it lets the next append go.
pub(crate) struct Turn {
    before: Option<oneshot::Receiver<()>>,
    _sent: oneshot::Sender<()>,
}

impl Turn {
    /// Waits until the append before this one was sent (or gave up).
    async fn come(&mut self) {
        if let Some(before) = self.before.take() {
            // An error is its sender dropped: the predecessor is done either way.
            let _ = before.await;
        }
    }
}

/// A partition of a JetStream-backed stream.
#[derive(Debug)]
pub(crate) struct JsPartition {
    id: u32,
    /// The Logbook stream's name (for errors).
    stream: String,
    inner: JetStreamPartition,
    runtime: Arc<Runtime>,
    observed: Arc<Observed>,
    /// Set when the stream is dropped (by any node, once the catalog shows it).
    closed: Arc<AtomicBool>,
    /// How long a publish is retried while the cluster is unavailable or silent.
    retry: Duration,
    /// The order conditioned appends are sent in.
    order: SendOrder,
    /// The watch task, once a wait started it ([`JsPartition::watch`]); aborted on drop.
    watch: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for JsPartition {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.get() {
            watch.abort();
        }
    }
}

impl JsPartition {
    pub(crate) fn new(
        inner: JetStreamPartition,
        state: &PartitionState,
        runtime: Arc<Runtime>,
        closed: Arc<AtomicBool>,
        retry: Duration,
    ) -> JsPartition {
        let observed = Arc::new(Observed::default());
        observed.saw_state(state);
        JsPartition {
            id: inner.partition().partition,
            stream: inner.partition().stream.clone(),
            inner,
            runtime,
            observed,
            closed,
            retry,
            order: SendOrder::default(),
            watch: std::sync::OnceLock::new(),
        }
    }

    /// Starts the partition's watch unless it runs: called by the waits on the end, so only
    /// a partition someone waits on is watched.
    fn watch(&self) {
        self.watch.get_or_init(|| {
            let task = watch(
                self.inner.clone(),
                self.observed.clone(),
                self.closed.clone(),
            );
            self.runtime.spawn(task).abort_handle()
        });
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Messages (batches) this handle last saw stored.
    pub(crate) fn messages(&self) -> u64 {
        self.observed.messages.load(Ordering::Acquire)
    }

    /// Refuses, before anything is sent, a batch one JetStream message cannot carry.
    ///
    /// # Errors
    /// [`LogError::BatchTooManyRecords`] (above 65,536 records),
    /// [`LogError::BatchTooLarge`] (above the connected server's `max_payload`).
    pub(crate) fn check_sendable(&self, batch: &EncodedBatch) -> Result<()> {
        if batch.record_count() > MESSAGE_RECORDS_MAX {
            return Err(LogError::BatchTooManyRecords {
                count: batch.record_count() as usize,
                max: MESSAGE_RECORDS_MAX,
            });
        }
        let max_payload = self.inner.max_payload_bytes();
        if batch.len() > max_payload {
            return Err(LogError::BatchTooLarge {
                bytes: batch.len() as u64,
                max: u32::try_from(max_payload).unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }

    /// Publishes a checked batch in the background; the completion resolves with its
    /// acknowledgment or failure.
    pub(crate) fn append_encoded(
        &self,
        batch: EncodedBatch,
        condition: AppendCondition,
    ) -> AppendCompletion {
        let (completion, completer) = AppendCompletion::channel();
        if self.is_closed() {
            completer.complete(Err(LogError::Closed));
            return completion;
        }
        let publish = self.publisher();
        let turn = match condition {
            AppendCondition::EndOffset(_) => Some(self.order.next()),
            AppendCondition::Always => None,
        };
        self.runtime.spawn(async move {
            completer.complete(publish.run(batch, condition, turn).await);
        });
        completion
    }
}

impl JsPartition {
    /// What a publish task needs of this partition, owned.
    pub(crate) fn publisher(&self) -> Publish {
        Publish {
            inner: self.inner.clone(),
            observed: self.observed.clone(),
            closed: self.closed.clone(),
            stream: self.stream.clone(),
            partition: self.id,
            retry: self.retry,
        }
    }

    /// The backend's runtime.
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

/// One publish task: what it needs of the partition, owned.
pub(crate) struct Publish {
    inner: JetStreamPartition,
    observed: Arc<Observed>,
    closed: Arc<AtomicBool>,
    stream: String,
    partition: u32,
    retry: Duration,
}

impl Publish {
    async fn run(
        self,
        batch: EncodedBatch,
        condition: AppendCondition,
        turn: Option<Turn>,
    ) -> Result<AppendAck> {
        let expected_last_sequence = match condition {
            AppendCondition::Always => None,
            AppendCondition::EndOffset(end) if end % (1 << crate::limits::INDEX_BITS) == 0 => {
                Some(offset::last_sequence_at(end))
            }
            // Not an end offset of this backend: the partition cannot end there.
            AppendCondition::EndOffset(end) => {
                drop(turn);
                return Err(self.mismatch(end).await);
            }
        };
        let options = AppendOptions {
            expected_last_sequence,
            message_id: Some(format!("lb-{}", nuid::next())),
        };
        // The batch becomes the message without a copy; each attempt shares its bytes.
        let message = Message::from(batch);
        let appended = self.send(&message, &options, condition, turn).await?;
        Ok(AppendAck {
            partition: self.partition,
            base_offset: appended.base_offset,
            record_count: message.record_count(),
        })
    }

    /// The partition's JetStream stream.
    pub(crate) fn inner(&self) -> &JetStreamPartition {
        &self.inner
    }

    /// Notes a state of the partition read from its leader.
    pub(crate) fn saw_state(&self, state: &PartitionState) {
        self.observed.saw_state(state);
    }

    /// Publishes `batch`, retried under the same message id while the cluster is unavailable
    /// or silent (for the partition's retry time) — sent again at once when the stream elects
    /// a leader ([`crate::resend`]), each attempt after that waiting for its acknowledgment
    /// at most [`crate::limits::RESEND_ACK_TIMEOUT_MS`] —, and notes what it stored. The first
    /// attempt is sent in its `turn` (if any). A duplicate answer is returned as such, with
    /// the original's sequence.
    pub(crate) async fn send(
        &self,
        batch: &Message,
        options: &AppendOptions,
        condition: AppendCondition,
        mut turn: Option<Turn>,
    ) -> Result<Appended> {
        let deadline = tokio::time::Instant::now() + self.retry;
        let mut pause = RETRY_PAUSE_FIRST;
        // Whether an attempt went unanswered: it may be stored, whatever later ones hear.
        let mut unanswered = false;
        // Whether the stream elected a leader (or the connection came back) during this
        // send: the attempts after that wait for their acknowledgment only
        // `RESEND_ACK_TIMEOUT_MS` (a new leader may drop what it is sent before it is ready).
        let mut after_election = false;
        let appended = loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            // Armed before the attempt: a leader elected during it ends the pause after it.
            let leader_changed = self.inner.leader_changed();
            let attempt = async {
                match turn.take() {
                    Some(mut turn) => {
                        turn.come().await;
                        let sent = self.inner.send(batch.clone(), options).await;
                        drop(turn);
                        match sent {
                            Ok(sent) => sent.acknowledged().await,
                            Err(e) => Err(e),
                        }
                    }
                    None => self.inner.append(batch.clone(), options).await,
                }
            };
            let attempt = if after_election {
                let bound = Duration::from_millis(crate::limits::RESEND_ACK_TIMEOUT_MS);
                tokio::time::timeout(bound, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(JetStreamError::OutcomeUnknown {
                            stream: self.inner.stream_name().to_string(),
                            why: format!(
                                "no acknowledgment within {} ms of a publish sent again after \
                                 an election",
                                bound.as_millis()
                            ),
                        })
                    })
            } else {
                attempt.await
            };
            match attempt {
                Ok(appended) => break appended,
                // The same message id again: stored once whichever attempt got through.
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    unanswered |= e.is_outcome_unknown();
                    // Sent again after a pause that doubles, or as soon as the stream has a
                    // new leader (at once when one was elected during the attempt).
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {
                            pause = (pause * 2).min(RETRY_PAUSE_MAX);
                        }
                        () = leader_changed => {
                            pause = RETRY_PAUSE_FIRST;
                            after_election = true;
                        }
                    }
                }
                // A refusal speaks for every attempt: the server answers a retry of a stored
                // message id as a duplicate before it checks the expected sequence.
                Err(JetStreamError::WrongLastSequence { .. }) => {
                    let end = condition_end(condition);
                    return Err(self.mismatch(end).await);
                }
                Err(e) => return Err(log_error(final_error(e, unanswered))),
            }
        };
        self.observed.saw_end(appended.next_offset);
        if !appended.duplicate {
            self.observed.saw_append(batch.len());
        }
        Ok(appended)
    }

    /// The refusal of an append that expected the partition to end at `expected`, naming
    /// where it ends (as the leader says, else as last observed).
    async fn mismatch(&self, expected: u64) -> LogError {
        if let Ok(state) = self.inner.state().await {
            self.observed.saw_state(&state);
        }
        LogError::EndOffsetMismatch {
            stream: self.stream.clone(),
            partition: self.partition,
            expected,
            actual: self.observed.end(),
        }
    }
}

/// The error a publish ends with after its last attempt failed with `last`: when an earlier
/// attempt went `unanswered`, that one may be stored whatever the last one heard ("no
/// responders" says only that the last attempt was not), so the outcome is unknown.
fn final_error(last: JetStreamError, unanswered: bool) -> JetStreamError {
    if !unanswered || last.is_outcome_unknown() {
        return last;
    }
    let stream = match &last {
        JetStreamError::Unavailable { stream, .. } | JetStreamError::Api { stream, .. } => {
            stream.clone()
        }
        _ => String::new(),
    };
    JetStreamError::OutcomeUnknown {
        stream,
        why: format!("an earlier attempt got no acknowledgment; the last one: {last}"),
    }
}

fn condition_end(condition: AppendCondition) -> u64 {
    match condition {
        AppendCondition::EndOffset(end) => end,
        AppendCondition::Always => 0,
    }
}

/// Keeps `observed`'s end at the partition's stored end without polling: each message
/// the watch delivers raises it (waking the waits). An error ends that watch (waits poll
/// meanwhile); a new one starts after [`WATCH_RETRY`], until the partition closes or the
/// task is aborted (its handle dropped).
async fn watch(inner: JetStreamPartition, observed: Arc<Observed>, closed: Arc<AtomicBool>) {
    use futures_util::StreamExt as _;
    let mut failing = false;
    while !closed.load(Ordering::Acquire) {
        match inner.watch_end().await {
            Ok(mut sequences) => {
                observed.watched.store(true, Ordering::Release);
                failing = false;
                while let Some(delivered) = sequences.next().await {
                    match delivered.map(offset::end_offset) {
                        Ok(Some(end)) => observed.saw_end(end),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(stream = inner.stream_name(), error = %e, "the watch of a partition's end stopped; waits poll until it is back");
                            break;
                        }
                    }
                }
                observed.watched.store(false, Ordering::Release);
                // The waits look again now that they poll.
                observed.end_raised.notify_waiters();
            }
            Err(e) => {
                if !failing {
                    tracing::debug!(stream = inner.stream_name(), error = %e, "cannot watch a partition's end; waits poll");
                }
                failing = true;
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// Waits until the leader's end offset exceeds `above`, the partition closes, or `timeout`
/// (if any) passes; returns the end offset last observed. Wakes when this handle observes a
/// higher end (the watch, an acknowledgment, a read); asks the leader's state every
/// [`WATCHED_POLL`] while the partition is watched, else every 2 ms, backing off to
/// [`WAIT_POLL_MAX`]. Errors are retried: a wait only reports what it saw. Each look is
/// bounded by the wait's own deadline (the first one by at least [`WAIT_FIRST_LOOK_MIN`]):
/// a leader that answers nothing does not hold it longer.
async fn wait_above(
    inner: JetStreamPartition,
    observed: Arc<Observed>,
    closed: Arc<AtomicBool>,
    above: u64,
    timeout: Option<Duration>,
) -> u64 {
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut pause = Duration::from_millis(2);
    let mut first_look = true;
    loop {
        // Registered before the end is looked at, so a rise in between is not missed.
        let raised = observed.end_raised.notified();
        // Within the wait's own deadline: during an election the leader's state is not
        // answered, and the wait must still end about when its caller said. The first look
        // gets at least `WAIT_FIRST_LOOK_MIN`: a zero timeout asks for the leader's end once
        // (`TxnStore::stream_end`), and a leader answers that in far less.
        let default = inner.default_deadline();
        let poll_deadline = match deadline {
            None => default,
            Some(d) if first_look => d.max(tokio::time::Instant::now() + WAIT_FIRST_LOOK_MIN),
            Some(d) => d,
        }
        .min(default);
        first_look = false;
        if observed.end() <= above
            && observed.ask_now(tokio::time::Instant::now())
            && let Ok(state) = inner.state_until(poll_deadline).await
        {
            observed.saw_state(&state);
        }
        let end = observed.end();
        let now = tokio::time::Instant::now();
        if end > above || closed.load(Ordering::Acquire) || deadline.is_some_and(|d| now >= d) {
            return end;
        }
        let next = observed.next_ask(now).max(now + pause);
        let wake = deadline.map_or(next, |d| next.min(d));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => pause = (pause * 2).min(WAIT_POLL_MAX),
            () = raised => {}
        }
    }
}

impl LogPartition for JsPartition {
    fn id(&self) -> u32 {
        self.id
    }

    fn append_batch(
        &self,
        records: &[Record],
        condition: AppendCondition,
    ) -> Result<AppendCompletion> {
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        logbook_log::dedup::check_no_reserved_headers(records)?;
        let batch = encode_batch(records, now_ms())?;
        self.check_sendable(&batch)?;
        Ok(self.append_encoded(batch, condition))
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        let observed = self.observed.clone();
        let partition = self.id;
        self.runtime.block_on(async move {
            // The messages below the observed end are stored: fetch them together.
            let known_last = offset::last_sequence_at(observed.end());
            let records = inner
                .read_ahead(from, max_records, max_bytes, known_last)
                .await
                .map_err(log_error)?;
            match records.last() {
                Some(last) => {
                    let (sequence, _) = offset::position_of(last.offset);
                    if let Some(end) = offset::end_offset(sequence) {
                        observed.saw_end(end);
                    }
                    super::observed(&records);
                }
                None => {
                    // Nothing at or after `from`: the end, or past it?
                    let state = inner.state().await.map_err(log_error)?;
                    observed.saw_state(&state);
                    let end = observed.end();
                    if from > end {
                        return Err(LogError::OffsetOutOfRange {
                            partition,
                            offset: from,
                            start: observed.start.load(Ordering::Acquire),
                            end,
                        });
                    }
                }
            }
            Ok(records)
        })?
    }

    /// `(sequence − 1)·2^16 + index`: a gap after every message.
    fn offsets_dense(&self) -> bool {
        false
    }

    /// A binary search over the stream's messages
    /// ([`JetStreamPartition::offset_for_timestamp`]: exact while timestamps rise with the
    /// sequences); the end, as the leader says, when no record is that recent.
    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampOffset> {
        let inner = self.inner.clone();
        let found = self
            .runtime
            .block_on(async move { inner.offset_for_timestamp(timestamp_ms).await })?
            .map_err(log_error)?;
        Ok(match found {
            Some((offset, timestamp_ms)) => TimestampOffset {
                offset,
                timestamp_ms: Some(timestamp_ms),
            },
            None => TimestampOffset {
                offset: self.latest_end_offset()?,
                timestamp_ms: None,
            },
        })
    }

    /// 2^16: each batch is one message, and message `n` starts at `(n − 1)·2^16`.
    fn batch_offset_span(&self) -> u64 {
        1 << crate::limits::INDEX_BITS
    }

    fn start_offset(&self) -> u64 {
        self.observed.start.load(Ordering::Acquire)
    }

    fn end_offset(&self) -> u64 {
        self.observed.end()
    }

    /// The leader's stream state (one request), raising what this handle observed.
    fn latest_end_offset(&self) -> Result<u64> {
        let inner = self.inner.clone();
        let state = self
            .runtime
            .block_on(async move { inner.state().await })?
            .map_err(log_error)?;
        self.observed.saw_state(&state);
        Ok(self.observed.end())
    }

    /// Equal to the end: an acknowledged record is as durable as this backend makes it
    /// (a majority of replicas; fsynced or not per the stream's `ack_guarantee`).
    fn durable_offset(&self) -> u64 {
        self.observed.end()
    }

    fn wait_end_offset_above(&self, above: u64, timeout: Duration) -> u64 {
        let end = self.observed.end();
        if end > above || self.is_closed() {
            return end;
        }
        self.watch();
        let wait = wait_above(
            self.inner.clone(),
            self.observed.clone(),
            self.closed.clone(),
            above,
            Some(timeout),
        );
        self.runtime
            .block_on(wait)
            .unwrap_or_else(|_| self.observed.end())
    }

    fn end_offset_above(&self, above: u64) -> EndOffsetAbove {
        let end = self.observed.end();
        if end > above || self.is_closed() {
            return EndOffsetAbove::boxed(std::future::ready(end));
        }
        self.watch();
        let wait = wait_above(
            self.inner.clone(),
            self.observed.clone(),
            self.closed.clone(),
            above,
            None,
        );
        EndOffsetAbove::boxed(AbortOnDrop::new(self.runtime.spawn(wait), end))
    }

    /// Nothing to delete: streams with retention are refused at creation (JetStream streams
    /// of Logbook partitions deny deletes and purges).
    fn enforce_retention(&self, _now_ms: i64) -> Result<usize> {
        Ok(0)
    }

    fn size_bytes(&self) -> u64 {
        self.observed.bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> JetStreamError {
        JetStreamError::Unavailable {
            stream: "LB_x".into(),
            why: "no responders".into(),
        }
    }

    #[test]
    fn a_send_with_an_unanswered_attempt_ends_unknown_never_unavailable() {
        let e = final_error(unavailable(), true);
        assert!(e.is_outcome_unknown(), "{e}");
        assert!(
            matches!(log_error(e), LogError::OutcomeUnknown { .. }),
            "an earlier attempt may be stored: not \"nothing was stored\""
        );
    }

    #[test]
    fn a_send_whose_attempts_were_all_answered_keeps_the_last_error() {
        assert!(matches!(
            log_error(final_error(unavailable(), false)),
            LogError::Unavailable { .. }
        ));
        let unknown = JetStreamError::OutcomeUnknown {
            stream: "LB_x".into(),
            why: "timed out".into(),
        };
        let e = final_error(unknown, true);
        assert!(matches!(&e, JetStreamError::OutcomeUnknown { why, .. } if why == "timed out"));
    }
}
