//! A running derived stream: one thread that reads its target back ([`progress::scan`]),
//! then one thread per source partition that turns batches of input into appends to the
//! target, exactly once (decision 0031).
//!
//! ```text
//!  per source partition p:
//!    (stateful, `unique` or `ledger`: rebuild the state from the input below the newest batch)
//!    redo the newest batch found in the target (append only its missing groups)
//!    loop: wait until the durable end passes `next`
//!          read ≤ DERIVED_BATCH_RECORDS records [from, to)      never past the durable end
//!          derive each (skip our own outputs: the header DERIVED_BY_HEADER)
//!          group by target partition; append each group under its BatchId's request id
//!          wait: acknowledged, then durable          next = to      (then the next batch)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbook_log::{LogBackend, LogStream, Record, RequestId, StoredRecord, partition_for_key};

use super::progress::{self, BatchId, Group, Resume};
use super::spec::{Derived, DerivedPlan, State};
use crate::error::{Result, ViewError};
use crate::limits::{DERIVED_BATCH_BYTES, DERIVED_BATCH_RECORDS, DERIVED_STATE_BYTES_MAX};

/// Header every output record carries: `{name}:{generation}` of the derived stream that
/// emitted it. A derived stream whose target is its source passes over its own outputs;
/// an input's header of this name is replaced, not copied.
pub const DERIVED_BY_HEADER: &str = "logbook-derived-by";

/// Progress of one source partition, as the status shows it.
#[derive(Debug, Default)]
struct PartProgress {
    /// Next input offset to read.
    next: AtomicU64,
    /// Output records appended since the processor started.
    emitted: AtomicU64,
    /// Input records skipped (value not JSON) since the processor started.
    skipped: AtomicU64,
}

/// One source partition's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The source partition.
    pub partition: u32,
    /// Next input offset to read (every record below it has its output in the target).
    pub next: u64,
    /// The partition's end offset now.
    pub end: u64,
    /// Output records appended since the processor started.
    pub emitted: u64,
    /// Input records skipped since the processor started (their value is not JSON).
    pub skipped: u64,
}

/// A derived stream's running processors.
pub struct Runner {
    /// Its name.
    pub name: String,
    /// The creation's position in the catalog.
    pub generation: u64,
    plan: Arc<DerivedPlan>,
    log: Arc<dyn LogBackend>,
    source: Arc<dyn LogStream>,
    target: Arc<dyn LogStream>,
    prefix: String,
    derived_by: Vec<u8>,
    progress: Vec<PartProgress>,
    /// Set once the target has been read back and the partitions' threads run.
    resumed: AtomicBool,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts the processors of derived stream `name` (generation `generation`) on the
    /// streams its plan names.
    ///
    /// # Errors
    /// [`ViewError::UnknownStream`] when the source or the target does not exist.
    pub fn start(
        name: &str,
        generation: u64,
        plan: Arc<DerivedPlan>,
        log: Arc<dyn LogBackend>,
    ) -> Result<Arc<Runner>> {
        let stream = |n: &str| {
            log.stream(n).map_err(|_| ViewError::UnknownStream {
                stream: n.to_string(),
            })
        };
        let source = stream(&plan.spec.source)?;
        let target = stream(&plan.spec.target)?;
        let runner = Arc::new(Runner {
            name: name.to_string(),
            generation,
            prefix: progress::id_prefix(name, generation),
            derived_by: format!("{name}:{generation}").into_bytes(),
            progress: (0..source.partition_count())
                .map(|_| PartProgress::default())
                .collect(),
            plan,
            log,
            source,
            target,
            resumed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        });
        let r = runner.clone();
        let handle = std::thread::Builder::new()
            .name(format!("derived-{name}"))
            .spawn(move || r.resume_and_run())
            .map_err(|e| ViewError::corrupt("derived stream thread", e.to_string()))?;
        lock(&runner.threads).push(handle);
        Ok(runner)
    }

    /// Stops every thread and waits for them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        loop {
            let handles: Vec<_> = lock(&self.threads).drain(..).collect();
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.join();
            }
        }
    }

    /// The error that stopped a processor, if any.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Whether the target was read back and the partitions' processors run.
    pub fn resumed(&self) -> bool {
        self.resumed.load(Ordering::Acquire)
    }

    /// Each source partition's progress.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.progress
            .iter()
            .enumerate()
            .map(|(p, pr)| PartitionStatus {
                partition: p as u32,
                next: pr.next.load(Ordering::Acquire),
                end: self
                    .source
                    .partition(p as u32)
                    .map_or(0, |part| part.end_offset()),
                emitted: pr.emitted.load(Ordering::Acquire),
                skipped: pr.skipped.load(Ordering::Acquire),
            })
            .collect()
    }

    fn fail(&self, error: String) {
        tracing::error!(derived_stream = %self.name, error = %error, "derived stream processor stopped");
        lock(&self.error).get_or_insert(error);
    }

    /// Reads the target back, then runs one thread per source partition.
    fn resume_and_run(self: Arc<Self>) {
        let found = match progress::scan(&*self.target, &self.prefix, &self.stop) {
            Ok(found) => found,
            Err(e) => return self.fail(format!("reading the target back: {e}")),
        };
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        for p in 0..self.source.partition_count() {
            let resume = found.get(&p).cloned();
            let r = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("derived-{}-{p}", self.name))
                .spawn(move || {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        r.process(p, resume)
                    }));
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => r.fail(format!("partition {p}: {e}")),
                        Err(_) => r.fail(format!("partition {p}: processor panicked")),
                    }
                });
            match spawned {
                Ok(h) => lock(&self.threads).push(h),
                Err(e) => return self.fail(format!("partition {p}: no thread: {e}")),
            }
        }
        self.resumed.store(true, Ordering::Release);
    }

    fn process(&self, p: u32, resume: Option<Resume>) -> Result<()> {
        let part = self.source.partition(p)?;
        let progress = &self.progress[p as usize];
        let mut next = part.start_offset();
        let mut state = State::default();
        if let Some(r) = resume {
            if self.plan.is_stateful() {
                self.rebuild(p, r.from, &mut state)?;
                if self.stop.load(Ordering::Acquire) {
                    // A partial state would make other outcomes than the first time.
                    return Ok(());
                }
            }
            // The newest batch may be partial: the same input again, only the missing groups.
            let records = self.read_range(p, r.from, r.to)?;
            self.emit(p, r.from, r.to, &records, &r.groups, &mut state)?;
            next = r.to;
        }
        progress.next.store(next, Ordering::Release);
        while !self.stop.load(Ordering::Acquire) {
            // Never past the durable end (docs/DESIGN.md rule 2).
            let limit = part.durable_offset().min(part.end_offset());
            if next >= limit {
                if part.end_offset() > next {
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    part.wait_end_offset_above(next, Duration::from_millis(100));
                    if part.end_offset() <= next && !self.streams_current() {
                        return Err(ViewError::corrupt(
                            "derived stream",
                            "its source or target stream was dropped; drop the derived stream",
                        ));
                    }
                }
                continue;
            }
            let start = part.start_offset();
            if next < start {
                tracing::warn!(derived_stream = %self.name, partition = p, from = next, start, "retention deleted input this derived stream had not read: it goes on at the first retained record");
                next = start;
                continue;
            }
            let mut records = part.read(next, DERIVED_BATCH_RECORDS, DERIVED_BATCH_BYTES)?;
            records.retain(|r| r.offset < limit);
            let Some(last) = records.last() else {
                continue;
            };
            let to = last.offset + 1;
            self.emit(p, next, to, &records, &BTreeSet::new(), &mut state)?;
            next = to;
            progress.next.store(next, Ordering::Release);
        }
        Ok(())
    }

    /// A stateful plan's state after the records of source partition `p` below `to`: they
    /// are derived again, in order, and their outputs dropped (they are in the target).
    fn rebuild(&self, p: u32, to: u64, state: &mut State) -> Result<()> {
        let part = self.source.partition(p)?;
        let mut at = part.start_offset();
        if at > 0 {
            tracing::warn!(derived_stream = %self.name, partition = p, start = at, "retention deleted claims below this offset: their values count as free again");
        }
        while at < to && !self.stop.load(Ordering::Acquire) {
            let records = part.read(at, DERIVED_BATCH_RECORDS, DERIVED_BATCH_BYTES)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for r in records.iter().filter(|r| r.offset < to) {
                if let Derived::StateFull { bytes } = self.plan.derive(r, self.is_own(r), state) {
                    return Err(self.state_too_large(p, bytes));
                }
            }
        }
        Ok(())
    }

    fn state_too_large(&self, p: u32, bytes: usize) -> ViewError {
        ViewError::StateTooLarge {
            view: self.name.clone(),
            version: self.generation,
            partition: p,
            bytes,
            max: DERIVED_STATE_BYTES_MAX,
        }
    }

    /// The records of source partition `p` in `[from, to)`.
    fn read_range(&self, p: u32, from: u64, to: u64) -> Result<Vec<StoredRecord>> {
        let part = self.source.partition(p)?;
        let mut out = Vec::new();
        let mut at = from.max(part.start_offset());
        while at < to {
            let records = part.read(at, DERIVED_BATCH_RECORDS, DERIVED_BATCH_BYTES)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            out.extend(records.into_iter().filter(|r| r.offset < to));
        }
        Ok(out)
    }

    /// Derives the batch `[from, to)` of source partition `p` and appends each group of its
    /// outputs not in `present`, under the group's request id; returns once all are
    /// acknowledged and durable.
    fn emit(
        &self,
        p: u32,
        from: u64,
        to: u64,
        records: &[StoredRecord],
        present: &BTreeSet<Group>,
        state: &mut State,
    ) -> Result<()> {
        let progress = &self.progress[p as usize];
        let partitions = self.target.partition_count();
        let mut groups: BTreeMap<Group, Vec<Record>> = BTreeMap::new();
        for r in records {
            let own = self.is_own(r);
            if own && !self.plan.consumes_own_output() {
                continue;
            }
            let mut add = |mut out: Record| {
                out.headers.retain(|(n, _)| n != DERIVED_BY_HEADER);
                out.headers
                    .push((DERIVED_BY_HEADER.to_string(), self.derived_by.clone()));
                let group = match &out.key {
                    Some(k) => Group::Partition(partition_for_key(k, partitions)),
                    None => Group::Unkeyed,
                };
                groups.entry(group).or_default().push(out);
            };
            match self.plan.derive(r, own, state) {
                Derived::Emit(out) => add(out),
                Derived::EmitAll(outs) => outs.into_iter().for_each(add),
                Derived::Filtered => {}
                Derived::Skipped => {
                    progress.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Derived::StateFull { bytes } => return Err(self.state_too_large(p, bytes)),
            }
        }
        let mut pending = Vec::new();
        for (group, outputs) in groups {
            if present.contains(&group) {
                continue;
            }
            let id = BatchId {
                partition: p,
                from,
                to,
                group,
            }
            .request_id(&self.prefix);
            let n = outputs.len() as u64;
            let id = RequestId::new(id)?;
            pending.push((n, self.target.clone().append_with_id(&id, None, outputs)?));
        }
        for (n, append) in pending {
            let outcome = append.wait()?;
            // An acknowledgment under a weaker fsync policy is not yet durable: the next batch
            // waits, so that only the newest batch can ever be partial after a crash.
            for pos in &outcome.positions {
                let part = self.target.partition(pos.partition)?;
                while part.durable_offset() <= pos.offset {
                    if self.stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            progress.emitted.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether `r` is one of this derived stream's own outputs (its target is its source).
    fn is_own(&self, r: &StoredRecord) -> bool {
        r.headers
            .iter()
            .any(|(n, v)| n == DERIVED_BY_HEADER && *v == self.derived_by)
    }

    /// Whether the log still holds the source and the target (same incarnations).
    fn streams_current(&self) -> bool {
        let current = |s: &Arc<dyn LogStream>| {
            self.log
                .stream(s.name())
                .is_ok_and(|now| now.incarnation() == s.incarnation())
        };
        current(&self.source) && current(&self.target)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
