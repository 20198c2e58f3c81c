//! Processors: one thread per view version and source partition, applying records in
//! offset order to state in memory and checkpointing state with the applied offset in one
//! atomic store commit now and then ([`crate::state`]).
//!
//! ```text
//!  loop: wait until the partition's durable offset passes `applied`
//!        take a batch holding `applied` (never past the durable offset), shared with the
//!        other views of the stream: read and parsed once (crate::batch)
//!        apply each through a Txn (reads see the batch's own writes)
//!        publish { state writes, A[p] = applied' } to the in-memory state (one write lock)
//!        readers waiting on a token wake up
//!        checkpoint when due: { changes since the last one, applied' } ← one atomic store
//!                                                                       commit, no fsync
//! ```
//!
//! Exactly-once state: a checkpoint holds the state exactly at its applied offset; a crash
//! loses what was applied after the last checkpoint (and, on power loss, a suffix of
//! checkpoints), never part of one, and the reopened version resumes from the checkpoint's
//! applied offset, so no record is applied twice or skipped. A clean stop checkpoints
//! first, so a restart replays nothing. A failed checkpoint (a full disk) does not stop the
//! processor: it is retried with backoff (nothing was written, the commit is atomic) while
//! the processor keeps applying, until the pending delta reaches
//! [`crate::limits::CHECKPOINT_PENDING_FACTOR`] × `checkpoint_bytes`; then it pauses until a
//! checkpoint succeeds. The error shows in the version's status (and is logged once) while
//! it lasts. Any other error stops the processor and is shown in the version's status; the
//! version keeps serving what it has — except when the source stream was dropped: a
//! processor that finds nothing to apply checks that its stream is still the log's stream
//! of that name (same incarnation) and otherwise stops (no spinning on a closed partition):
//! status shows "source stream … was dropped" and reads of the version are refused with
//! [`ViewError::UnknownVersion`] and reason [`SOURCE_DROPPED`], as after a restart.
//!
//! Waiting for durability: the log signals new *acknowledged* records
//! (`wait_end_offset_above`) but has no signal for the durable offset, so a processor whose
//! next record is acknowledged but not yet durable (fsync `interval`) polls every 1 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use logbook_log::{LogBackend, LogStream};

use crate::apply::{StateCache, Txn, apply};
use crate::batch::{Batch, Source};
use crate::error::{Result, ViewError};
use crate::layout::{self, ApplyState, TAG_APPLIED};
use crate::limits::CHECKPOINT_PENDING_FACTOR;
use crate::spec::Plan;
use crate::state::{
    Checkpointer, Contribs, Delta, Loaded, MemSnapshot, PartState, ViewsConfig, load,
};
use crate::store::Space;

/// Why a version whose source stream was dropped does not run or serve (the reason of its
/// [`ViewError::UnknownVersion`]).
pub const SOURCE_DROPPED: &str = "not running (its source stream was dropped)";

/// A running view version: its plan, its space, its processors' progress.
pub struct Version {
    /// Store id (unique in the data directory): names its space and its registration with
    /// the shared reader. Never shown to users ([`crate::engine`] translates).
    pub id: u64,
    /// Its number within the view (1, 2, …): what users see.
    pub number: u64,
    /// The view's name.
    pub view: String,
    /// What it computes.
    pub plan: Arc<Plan>,
    /// Its checkpoints.
    pub space: Arc<dyn Space>,
    /// Its state as readers see it, per partition.
    parts: Vec<RwLock<PartState>>,
    /// Per partition, the checkpoint loaded at open, until its processor takes it.
    loaded: Vec<Mutex<Option<Loaded>>>,
    /// Per partition, the applied offset of the last checkpoint.
    checkpointed: Vec<AtomicU64>,
    /// Per partition, bytes of the processor's contributions (outside `parts`).
    contrib_bytes: Vec<AtomicU64>,
    config: ViewsConfig,
    /// Stop without the final checkpoint (tests: a crash between checkpoints).
    abandon: AtomicBool,
    /// The source stream.
    pub stream: Arc<dyn LogStream>,
    /// Published applied offset per partition (next offset to apply).
    pub applied: Vec<AtomicU64>,
    /// Sum of applied offsets when the processors started (for the rate).
    pub applied_at_start: u64,
    /// When the processors started (status only: rate and ETA; never state).
    pub started: Instant,
    log: Arc<dyn LogBackend>,
    source: Arc<Source>,
    stop: AtomicBool,
    dropped: AtomicBool,
    error: Mutex<Option<String>>,
    /// Per partition, the error of the failing checkpoint being retried, if any.
    ckpt_error: Vec<Mutex<Option<String>>>,
    wake: (Mutex<()>, Condvar),
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("number", &self.number)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        self.source.unregister(self.id);
    }
}

impl Version {
    /// Loads the state of the last checkpoint from the space into memory (not started yet).
    /// `id` is its store id, `number` its number in view `view` (see [`Version::number`]).
    /// `log` is the log that holds `stream` (to notice that the stream was dropped);
    /// `source` is the shared reader of `stream` (the version registers with it until it is
    /// dropped).
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`].
    #[expect(
        clippy::too_many_arguments,
        reason = "independent handles (plan, store space, stream, log, shared batches, config); one caller, engine.rs"
    )]
    pub fn new(
        id: u64,
        number: u64,
        view: String,
        plan: Arc<Plan>,
        space: Arc<dyn Space>,
        stream: Arc<dyn LogStream>,
        log: Arc<dyn LogBackend>,
        source: Arc<Source>,
        config: ViewsConfig,
    ) -> Result<Version> {
        let mut applied = Vec::new();
        let mut parts = Vec::new();
        let mut loaded = Vec::new();
        let mut checkpointed = Vec::new();
        let mut contrib_bytes = Vec::new();
        for p in 0..stream.partition_count() {
            let mut l = load(&*space, p)?;
            let a = l.header.state.applied;
            applied.push(AtomicU64::new(a));
            checkpointed.push(AtomicU64::new(a));
            contrib_bytes.push(AtomicU64::new(l.contribs.bytes() as u64));
            parts.push(RwLock::new(std::mem::take(&mut l.part)));
            loaded.push(Mutex::new(Some(l)));
        }
        let stream_parts = stream.partition_count();
        let applied_at_start = applied.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        source.register(id, plan.members.clone());
        Ok(Version {
            id,
            number,
            view,
            plan,
            space,
            parts,
            loaded,
            checkpointed,
            contrib_bytes,
            config,
            abandon: AtomicBool::new(false),
            stream,
            applied,
            applied_at_start,
            started: Instant::now(),
            log,
            source,
            stop: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            error: Mutex::new(None),
            ckpt_error: (0..stream_parts).map(|_| Mutex::new(None)).collect(),
            wake: (Mutex::new(()), Condvar::new()),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Starts one processor thread per partition.
    ///
    /// # Errors
    /// [`ViewError::Store`] if a thread cannot be spawned.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for p in 0..self.stream.partition_count() {
            let v = self.clone();
            let t = std::thread::Builder::new()
                .name(format!("view-{}-v{}-p{p}", self.view, self.number))
                .spawn(move || v.run(p))
                .map_err(|e| ViewError::Store {
                    op: "spawn a processor",
                    reason: e.to_string(),
                })?;
            threads.push(t);
        }
        Ok(())
    }

    /// Stops and joins the processors without their final checkpoint, as a crash between
    /// checkpoints would (tests).
    #[doc(hidden)]
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::Release);
        self.stop();
    }

    /// Whether the version is stopping (or stopped): long work on its behalf gives up.
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Removes the first state entry of partition `p` other than its apply state, as
    /// silent corruption of memory would; its key. Only for tests of the auditor.
    #[cfg(feature = "test-hooks")]
    pub fn corrupt_state_for_test(&self, p: u32) -> Option<Vec<u8>> {
        let part = self.parts.get(p as usize)?;
        let mut guard = part.write().unwrap_or_else(|e| e.into_inner());
        let key = guard.first_key_except(TAG_APPLIED)?;
        guard.write(key.clone(), None);
        Some(key)
    }

    /// A consistent read of the state: every partition held still until it is dropped
    /// (this version's processors wait to publish meanwhile).
    pub fn snapshot(&self) -> MemSnapshot<'_> {
        MemSnapshot {
            parts: self.parts.iter().map(read_lock).collect(),
        }
    }

    /// The apply state published for partition `p`.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`].
    pub fn apply_state(&self, p: u32) -> Result<ApplyState> {
        match self.parts.get(p as usize) {
            Some(part) => match read_lock(part).get(&layout::prefix(TAG_APPLIED, p)) {
                Some(b) => ApplyState::decode(b),
                None => Ok(ApplyState::default()),
            },
            None => Ok(ApplyState::default()),
        }
    }

    /// Per partition, the applied offset of the last checkpoint (what a restart resumes
    /// from).
    pub fn checkpointed_now(&self) -> Vec<u64> {
        self.checkpointed
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    /// Bytes of state held in memory, over all partitions (approximate).
    pub fn memory_bytes(&self) -> usize {
        let contribs: u64 = self
            .contrib_bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        self.parts
            .iter()
            .map(|p| read_lock(p).bytes())
            .sum::<usize>()
            .saturating_add(usize::try_from(contribs).unwrap_or(usize::MAX))
    }

    /// Stops and joins the processors (each finishes its current batch and checkpoints).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// The first error of a processor, if one stopped; else the error of a failing
    /// checkpoint being retried, while it lasts (status).
    pub fn error(&self) -> Option<String> {
        self.failed().or_else(|| {
            self.ckpt_error
                .iter()
                .find_map(|e| e.lock().unwrap_or_else(|e| e.into_inner()).clone())
        })
    }

    /// The first error of a processor, if one stopped.
    pub fn failed(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Refuses a version whose processors stopped because the source stream was dropped.
    ///
    /// # Errors
    /// [`ViewError::UnknownVersion`] with reason [`SOURCE_DROPPED`].
    pub fn check_source(&self) -> Result<()> {
        if self.dropped.load(Ordering::Acquire) {
            return Err(self.source_dropped());
        }
        Ok(())
    }

    fn source_dropped(&self) -> ViewError {
        ViewError::UnknownVersion {
            view: self.view.clone(),
            version: self.number,
            reason: SOURCE_DROPPED,
        }
    }

    /// Whether the log still holds this version's source stream (same incarnation).
    fn source_current(&self) -> bool {
        self.log
            .stream(self.stream.name())
            .is_ok_and(|s| s.incarnation() == self.stream.incarnation())
    }

    /// Applied offsets now.
    pub fn applied_now(&self) -> Vec<u64> {
        self.applied
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    /// Waits until `done(applied)` holds or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[u64]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&self.applied_now()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded slices: a processor's notify between our check and our wait is caught
            // at the next slice at the latest.
            let slice = (deadline - now).min(Duration::from_millis(20));
            guard = self
                .wake
                .1
                .wait_timeout(guard, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn notify(&self) {
        let _g = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_all();
    }

    fn run(self: Arc<Self>, p: u32) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(p)));
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(ViewError::UnknownVersion {
                reason: SOURCE_DROPPED,
                ..
            })) => {
                self.dropped.store(true, Ordering::Release);
                Some(format!(
                    "partition {p}: source stream {:?} (incarnation {}) was dropped; drop and recreate the view",
                    self.stream.name(),
                    self.stream.incarnation()
                ))
            }
            Ok(Err(e)) => Some(format!("partition {p}: {e}")),
            Err(_) => Some(format!("partition {p}: processor panicked")),
        };
        if let Some(e) = error {
            tracing::error!(view = %self.view, version = self.number, error = %e, "view processor stopped");
            self.error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
            self.notify();
        }
    }

    fn process(&self, p: u32) -> Result<()> {
        let part = self.stream.partition(p)?;
        let Some(loaded) = self.loaded[p as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Err(ViewError::corrupt("processor", "started twice"));
        };
        let Loaded {
            mut contribs,
            header,
            ..
        } = loaded;
        let mut state = header.state.clone();
        let mut ckpt = Checkpointer::new(self.space.clone(), p, header, &self.config);
        let shared = &self.parts[p as usize];
        let mut cache = StateCache::new();
        let pending_max = self
            .config
            .checkpoint_bytes
            .saturating_mul(CHECKPOINT_PENDING_FACTOR);
        while !self.stop.load(Ordering::Acquire) {
            if ckpt.due() {
                self.try_checkpoint(p, &mut ckpt, &state, &contribs);
            }
            // Checkpoints fail and the pending delta is at its bound: wait for the retry
            // rather than grow memory (bounded slices, to notice a stop).
            if ckpt.failures() > 0 && ckpt.delta.bytes() >= pending_max {
                std::thread::sleep(
                    ckpt.retry_in()
                        .clamp(Duration::from_millis(1), Duration::from_millis(50)),
                );
                continue;
            }
            // Never past the durable offset (docs/DESIGN.md rule 2).
            let limit = part.durable_offset().min(part.end_offset());
            if state.applied >= limit {
                if part.end_offset() > state.applied {
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    part.wait_end_offset_above(state.applied, Duration::from_millis(100));
                    // Nothing new (a closed partition returns at once): is it still ours?
                    if part.end_offset() <= state.applied && !self.source_current() {
                        return Err(self.source_dropped());
                    }
                }
                continue;
            }
            let start = part.start_offset();
            if state.applied < start && state.nothing_applied() {
                // A version that has applied nothing here yet begins at the first retained
                // record: what retention deleted before it started is a gap it reports
                // (`VersionStatus::retention_gaps`), not a failure.
                tracing::info!(view = %self.view, version = self.number, partition = p, start, "retention had deleted the records before the first retained offset: the view begins there");
                state.applied = start;
                state.began = start;
                continue;
            }
            if state.applied < start {
                return Err(ViewError::corrupt(
                    "source",
                    format!(
                        "retention deleted records from offset {} before this view applied them; rebuild the view",
                        state.applied
                    ),
                ));
            }
            let batch = self.source.batch(
                self.id,
                p,
                part,
                state.applied,
                limit,
                self.plan.members.as_deref(),
            )?;
            let writes = {
                let published = read_lock(shared);
                let mut at = ApplyAt {
                    part: &published,
                    contribs: &mut contribs,
                    delta: &mut ckpt.delta,
                    cache: &mut cache,
                    state: &mut state,
                };
                apply_batch(&self.plan, p, &mut at, &batch, limit)?
            };
            let next = state.applied;
            let bytes = {
                let mut published = shared.write().unwrap_or_else(|e| e.into_inner());
                for (k, v) in writes {
                    published.write(k, v);
                }
                published.bytes()
            } + contribs.bytes();
            cache.committed();
            self.contrib_bytes[p as usize].store(contribs.bytes() as u64, Ordering::Relaxed);
            self.applied[p as usize].store(next, Ordering::Release);
            self.notify();
            if bytes > self.config.state_bytes_max {
                return Err(ViewError::StateTooLarge {
                    view: self.view.clone(),
                    version: self.number,
                    partition: p,
                    bytes,
                    max: self.config.state_bytes_max,
                });
            }
        }
        if ckpt.pending() && !self.abandon.load(Ordering::Acquire) {
            self.checkpoint(p, &mut ckpt, &state, &contribs)?;
        }
        Ok(())
    }

    /// Checkpoints; a failure is kept for the status (logged once per streak of failures)
    /// and retried after the checkpointer's backoff.
    fn try_checkpoint(
        &self,
        p: u32,
        ckpt: &mut Checkpointer,
        state: &ApplyState,
        contribs: &crate::state::Contribs,
    ) {
        let slot = &self.ckpt_error[p as usize];
        match self.checkpoint(p, ckpt, state, contribs) {
            Ok(()) => {
                if slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .is_some()
                {
                    tracing::info!(view = %self.view, version = self.number, partition = p, "view checkpoint succeeded again");
                }
            }
            Err(e) => {
                let msg = format!(
                    "partition {p}: checkpoint failed ({} attempts; retrying): {e}",
                    ckpt.failures()
                );
                if ckpt.failures() == 1 {
                    tracing::warn!(view = %self.view, version = self.number, partition = p, error = %e, "view checkpoint failed; retrying with backoff");
                }
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
            }
        }
    }

    fn checkpoint(
        &self,
        p: u32,
        ckpt: &mut Checkpointer,
        state: &ApplyState,
        contribs: &crate::state::Contribs,
    ) -> Result<()> {
        ckpt.write(state, &self.parts[p as usize], contribs)?;
        self.checkpointed[p as usize].store(state.applied, Ordering::Release);
        Ok(())
    }
}

/// What applying a batch of one partition reads and changes: the published state (read),
/// the processor's contributions, the checkpoint delta, the state cache and the apply state.
pub(crate) struct ApplyAt<'a> {
    pub part: &'a PartState,
    pub contribs: &'a mut Contribs,
    pub delta: &'a mut Delta,
    pub cache: &'a mut StateCache,
    pub state: &'a mut ApplyState,
}

/// Applies the records of `batch` from `at.state.applied` up to `limit` (exclusive) and
/// advances the apply state; returns the writes to publish, the apply state's own last.
/// The one way records become view state: the processors and the auditor's recomputation
/// ([`crate::audit`]) both call it, so a recomputed view is the same function of the log.
pub(crate) fn apply_batch(
    plan: &Plan,
    p: u32,
    at: &mut ApplyAt<'_>,
    batch: &Batch,
    limit: u64,
) -> Result<Vec<crate::store::Write>> {
    // The batch holds every record from `batch.start` on; ours start at the first at or
    // after `applied` (offsets may have gaps: a replicated log's do).
    let first = batch
        .records
        .partition_point(|r| r.offset < at.state.applied);
    let mut next = at.state.applied;
    let mut writes = {
        let mut txn = Txn::new(at.part, at.contribs, at.delta, at.cache);
        for (r, v) in batch.records[first..]
            .iter()
            .zip(&batch.values[first..])
            .take_while(|(r, _)| r.offset < limit)
        {
            debug_assert!(r.offset >= next, "the log returned records out of order");
            apply(plan, &mut txn, p, r, v.as_ref(), at.state)?;
            at.state.last_timestamp_ms = r.timestamp_ms;
            next = r.offset + 1;
        }
        txn.into_writes()
    };
    if next == at.state.applied {
        // No record in [applied, limit): the batch holds the first record at or after
        // `applied` (or none below the end the reader saw), so the offsets up to the
        // limit are a gap of the log's offsets (`(sequence − 1)·2^16 + index` on
        // JetStream, decision 0010): move past them.
        next = limit;
    }
    at.state.applied = next;
    let encoded = at.state.encode();
    let akey = layout::prefix(TAG_APPLIED, p);
    // Logged too, so that progress alone (records that change nothing) makes a
    // checkpoint due and a restart need not replay them.
    at.delta.log(&akey, Some(&encoded));
    writes.push((akey, Some(encoded)));
    Ok(writes)
}

fn read_lock(l: &RwLock<PartState>) -> RwLockReadGuard<'_, PartState> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
