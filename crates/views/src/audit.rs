//! The view auditor: a view recomputed from the log into a shadow state up to exactly the
//! offsets the live version has applied, and the two compared by their order-independent
//! digests (issue 18, item 1; decision 0028). Views are deterministic functions of the log
//! (docs/DESIGN.md rule 2), so any difference is corruption of the live state — or a bug.
//!
//! ```text
//!  live version  ── applied A(t) ──────────────┐
//!                                              ▼
//!  shadow: empty ── apply_batch (the processors' own function) up to A(t), paced at
//!          records_per_s, without locks; again up to A(t') while the live one moved on;
//!          then, holding the live state still: the last records up to A*, and
//!          digest(live at A*) vs digest(shadow at A*); on a mismatch the first rows
//!          that differ (merged scans of both, in key order)
//! ```
//!
//! What it is not: a repair. A mismatch is reported; the caller may rebuild the view and
//! switch to the rebuilt version (the server's auditor does, when told to).
//!
//! Cost: the shadow holds a whole copy of the view's state in memory while it runs; the
//! live version's processors wait to publish while the final catch-up and the two digests
//! run (a full scan of both states), as they do for `status --digest`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::apply::StateCache;
use crate::batch::Batch;
use crate::engine::Views;
use crate::error::{Result, ViewError};
use crate::layout::{self, ApplyState, TAG_APPLIED};
use crate::limits::{AUDIT_CATCH_UP_ROUNDS, AUDIT_DIFFERENCES_MAX, READ_LIMIT_MAX};
use crate::processor::{ApplyAt, Version, apply_batch};
use crate::read::{Digest, Reader, ScanRange};
use crate::spec::{Plan, PlanKind};
use crate::state::{Contribs, Delta, MemSnapshot, PartState};
use crate::value::canonical_json;

/// How an audit runs.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Most records recomputed per second while the live version is not held (0: as fast
    /// as it goes). The final catch-up, under the hold, is never paced.
    pub records_per_s: u64,
    /// Set to give up: the audit ends with [`ViewError::Closed`] at its next batch.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl AuditOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Acquire))
    }
}

/// What an audit concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The recomputed digest equals the live one.
    Match,
    /// They differ: the live state is not what the log says it should be.
    Mismatch,
    /// Not compared (see the report's `note`): e.g. retention deleted records the live
    /// version applied, so they cannot be recomputed.
    Skipped,
}

/// A row that differs between the live version and the recomputation (absent on one side:
/// `None`). Values are rows as the read API shows them (index views: one primary key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDifference {
    /// The row key.
    pub key: String,
    /// The live version's row.
    pub live: Option<Value>,
    /// The recomputed row.
    pub recomputed: Option<Value>,
}

/// The outcome of one audit of one view version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// The view.
    pub view: String,
    /// The version audited (the current one).
    pub version: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it was skipped, when it was.
    pub note: Option<String>,
    /// Per partition, the offsets both sides were compared at (next offset to apply).
    pub applied: BTreeMap<u32, u64>,
    /// The live version's digest there.
    pub live: Digest,
    /// The recomputed digest there.
    pub recomputed: Digest,
    /// On a mismatch, the first rows that differ, in key order (at most
    /// [`AUDIT_DIFFERENCES_MAX`]).
    pub differences: Vec<RowDifference>,
    /// Records applied by the recomputation.
    pub records_recomputed: u64,
}

impl Views {
    /// Audits the current version of `name`: recomputes it from the log up to the offsets
    /// it has applied, and compares digests (see the module docs). Blocks for as long as
    /// the recomputation takes.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`]; the log's read errors; [`ViewError::Corrupt`] if either
    /// state cannot be read; [`ViewError::Closed`] when the views close meanwhile.
    pub fn audit(&self, name: &str, options: &AuditOptions) -> Result<AuditReport> {
        let v = self.current_version(name)?;
        let partitions = v.stream.partition_count();
        let began: Vec<u64> = (0..partitions)
            .map(|p| v.apply_state(p).map(|s| s.began))
            .collect::<Result<_>>()?;
        let empty = Digest { rows: 0, hash: 0 };
        let mut report = AuditReport {
            view: name.to_string(),
            version: v.number,
            verdict: Verdict::Skipped,
            note: None,
            applied: BTreeMap::new(),
            live: empty,
            recomputed: empty,
            differences: Vec::new(),
            records_recomputed: 0,
        };
        for part in v.stream.partitions() {
            let start = part.start_offset();
            if start > began[part.id() as usize] {
                report.note = Some(format!(
                    "partition {}: retention deleted records from offset {} that the view applied; they cannot be recomputed",
                    part.id(),
                    began[part.id() as usize]
                ));
                return Ok(report);
            }
        }
        let mut shadow = Shadow::new(&began);
        let mut pace = Pace::new(options.records_per_s);
        // Chase the live version without holding it; each round has less to do.
        for _ in 0..AUDIT_CATCH_UP_ROUNDS {
            let target = v.applied_now();
            shadow.advance(&v, &target, &mut pace, options)?;
        }
        let snap = v.snapshot();
        let live = Reader {
            plan: &v.plan,
            snap: &snap,
            partitions,
        };
        let target: Vec<u64> = live.applied()?.iter().map(|a| a.applied).collect();
        shadow.advance(&v, &target, &mut Pace::new(0), options)?;
        let shadow_snap = shadow.snapshot();
        let recomputed = Reader {
            plan: &v.plan,
            snap: &shadow_snap,
            partitions,
        };
        report.applied = target
            .iter()
            .enumerate()
            .map(|(p, a)| (p as u32, *a))
            .collect();
        report.live = live.digest()?;
        report.recomputed = recomputed.digest()?;
        report.records_recomputed = shadow.records;
        if report.live == report.recomputed {
            report.verdict = Verdict::Match;
        } else {
            report.verdict = Verdict::Mismatch;
            report.differences = first_differences(&live, &recomputed, AUDIT_DIFFERENCES_MAX)?;
        }
        Ok(report)
    }
}

/// A view's state recomputed from the log, partition by partition, in memory.
struct Shadow {
    parts: Vec<RwLock<PartState>>,
    contribs: Vec<Contribs>,
    caches: Vec<StateCache>,
    states: Vec<ApplyState>,
    /// Records applied.
    records: u64,
}

impl Shadow {
    /// An empty state beginning each partition where the live version began it.
    fn new(began: &[u64]) -> Shadow {
        let mut parts = Vec::with_capacity(began.len());
        let mut states = Vec::with_capacity(began.len());
        for (p, &b) in began.iter().enumerate() {
            let state = ApplyState {
                applied: b,
                began: b,
                ..ApplyState::default()
            };
            let mut part = PartState::default();
            part.write(layout::prefix(TAG_APPLIED, p as u32), Some(state.encode()));
            parts.push(RwLock::new(part));
            states.push(state);
        }
        Shadow {
            contribs: began.iter().map(|_| Contribs::default()).collect(),
            caches: began.iter().map(|_| StateCache::new()).collect(),
            parts,
            states,
            records: 0,
        }
    }

    /// Applies each partition's records up to `target` (exclusive), through the processors'
    /// own [`apply_batch`].
    fn advance(
        &mut self,
        v: &Version,
        target: &[u64],
        pace: &mut Pace,
        options: &AuditOptions,
    ) -> Result<()> {
        for (p, &limit) in target.iter().enumerate() {
            let part = v.stream.partition(p as u32)?;
            let slot = p;
            while self.states[slot].applied < limit {
                if v.is_stopping() || options.cancelled() {
                    return Err(ViewError::Closed);
                }
                let from = self.states[slot].applied;
                let batch = Batch::load(part, from, limit, v.plan.members.clone())?;
                let mut delta = Delta::default(); // nothing is checkpointed
                let writes = {
                    let published = self.parts[slot].read().unwrap_or_else(|e| e.into_inner());
                    let mut at = ApplyAt {
                        part: &published,
                        contribs: &mut self.contribs[slot],
                        delta: &mut delta,
                        cache: &mut self.caches[slot],
                        state: &mut self.states[slot],
                    };
                    apply_batch(&v.plan, p as u32, &mut at, &batch, limit)?
                };
                {
                    let mut published = self.parts[slot].write().unwrap_or_else(|e| e.into_inner());
                    for (k, value) in writes {
                        published.write(k, value);
                    }
                }
                self.caches[slot].committed();
                self.records += batch.records.len() as u64;
                pace.spent(batch.records.len() as u64, options);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot<'_> {
        MemSnapshot {
            parts: self
                .parts
                .iter()
                .map(|p| p.read().unwrap_or_else(|e| e.into_inner()))
                .collect(),
        }
    }
}

/// Keeps a recomputation at or below a rate of records per second, by sleeping (wall-clock
/// time paces the work; it decides nothing about the state).
struct Pace {
    per_s: u64,
    started: Instant,
    done: u64,
}

impl Pace {
    fn new(per_s: u64) -> Pace {
        Pace {
            per_s,
            started: Instant::now(),
            done: 0,
        }
    }

    /// Counts `records` done and sleeps until the rate allows more (in slices, giving up
    /// when the audit is cancelled).
    fn spent(&mut self, records: u64, options: &AuditOptions) {
        self.done += records;
        if self.per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.done as f64 / self.per_s as f64);
        while let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            if ahead.is_zero() || options.cancelled() {
                return;
            }
            std::thread::sleep(ahead.min(Duration::from_millis(50)));
        }
    }
}

/// One row as the digest counts it: (key, primary key for index rows, the row as JSON).
type Item = (String, String, Value);

/// The rows of one side in key order, a page at a time.
struct Items<'a, 'r> {
    reader: &'a Reader<'r>,
    plan: &'a Plan,
    range: ScanRange,
    buf: VecDeque<Item>,
    done: bool,
}

impl<'a, 'r> Items<'a, 'r> {
    fn new(reader: &'a Reader<'r>) -> Items<'a, 'r> {
        Items {
            reader,
            plan: reader.plan,
            range: ScanRange {
                limit: READ_LIMIT_MAX,
                ..ScanRange::default()
            },
            buf: VecDeque::new(),
            done: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&Item>> {
        while self.buf.is_empty() && !self.done {
            let (rows, next) = self.reader.scan(&self.range)?;
            for r in rows {
                if let (PlanKind::Index { .. }, Some(Value::Array(keys))) =
                    (&self.plan.kind, r.value.get("keys"))
                {
                    for pk in keys {
                        self.buf
                            .push_back((r.key.clone(), canonical_json(pk), pk.clone()));
                    }
                    continue;
                }
                let v = serde_json::to_value(&r)
                    .map_err(|e| ViewError::corrupt("row", e.to_string()))?;
                self.buf.push_back((r.key.clone(), String::new(), v));
            }
            match next {
                Some(n) => self.range.start = Some(n),
                None => self.done = true,
            }
        }
        Ok(self.buf.front())
    }

    fn pop(&mut self) -> Option<Item> {
        self.buf.pop_front()
    }
}

/// The first `max` rows that differ between two states, walking both in key order. (Keys
/// are compared as text; where that order differs from the stored order — keys holding
/// escapes — a difference may be reported twice, once per side.)
fn first_differences(
    live: &Reader<'_>,
    recomputed: &Reader<'_>,
    max: usize,
) -> Result<Vec<RowDifference>> {
    let mut a = Items::new(live);
    let mut b = Items::new(recomputed);
    let mut out = Vec::new();
    while out.len() < max {
        let order = match (a.peek()?, b.peek()?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => (&x.0, &x.1).cmp(&(&y.0, &y.1)),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((key, _, v)) = a.pop() {
                    out.push(RowDifference {
                        key,
                        live: Some(v),
                        recomputed: None,
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((key, _, v)) = b.pop() {
                    out.push(RowDifference {
                        key,
                        live: None,
                        recomputed: Some(v),
                    });
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((key, _, x)), Some((_, _, y))) = (a.pop(), b.pop())
                    && x != y
                {
                    out.push(RowDifference {
                        key,
                        live: Some(x),
                        recomputed: Some(y),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A test hook: removes the first entry of partition `p`'s live state of the current
/// version of `name` (a row, an index entry or a group partial), as silent corruption of
/// memory would; returns its key. Built only with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
impl Views {
    /// See the impl's docs.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`].
    #[doc(hidden)]
    pub fn corrupt_state_for_test(&self, name: &str, p: u32) -> Result<Option<Vec<u8>>> {
        let v = self.current_version(name)?;
        Ok(v.corrupt_state_for_test(p))
    }
}

/// What the background auditor knows of one view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewAuditStatus {
    /// The view.
    pub view: String,
    /// Audits finished.
    pub audits: u64,
    /// Audits that found a mismatch.
    pub mismatches: u64,
    /// The latest audit's report.
    pub last: Option<AuditReport>,
    /// The latest audit's error, when it could not finish.
    pub error: Option<String>,
    /// The version the auditor switched to after the latest mismatch, when repairing.
    pub repaired_to: Option<u64>,
}

/// The background auditor's settings and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditorStatus {
    /// Seconds between rounds (each round audits every view in turn).
    pub interval_s: u64,
    /// Each audit's pace, records per second (0: unpaced).
    pub records_per_s: u64,
    /// Whether a mismatch is repaired (rebuild, then switch).
    pub repair: bool,
    /// Rounds finished.
    pub rounds: u64,
    /// Per view, by name.
    pub views: Vec<ViewAuditStatus>,
}

/// How the background auditor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditorConfig {
    /// Seconds between rounds (> 0).
    pub interval_s: u64,
    /// Each audit's pace, records per second (0: unpaced).
    pub records_per_s: u64,
    /// Repair a mismatch: rebuild the view from the log and switch to the new version once
    /// it has caught up.
    pub repair: bool,
}

/// A thread auditing every view of a [`Views`] once per interval, one after another, each
/// at the configured pace. It holds the views only during a round and stops when dropped
/// ([`AuditorThread::stop`]: an audit under way gives up at its next batch).
#[derive(Debug)]
pub struct AuditorThread {
    stop: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    cancel: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    status: Arc<std::sync::Mutex<AuditorStatus>>,
}

impl AuditorThread {
    /// Starts auditing `views` with `config`.
    ///
    /// # Errors
    /// [`ViewError::Store`] if the thread cannot be spawned.
    ///
    /// # Panics
    /// If `config.interval_s` is 0 (a caller bug: 0 means no auditor).
    pub fn spawn(views: std::sync::Weak<Views>, config: AuditorConfig) -> Result<AuditorThread> {
        assert!(config.interval_s > 0, "an auditor needs an interval");
        let status = Arc::new(std::sync::Mutex::new(AuditorStatus {
            interval_s: config.interval_s,
            records_per_s: config.records_per_s,
            repair: config.repair,
            rounds: 0,
            views: Vec::new(),
        }));
        let cancel = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let (status, cancel) = (status.clone(), cancel.clone());
            std::thread::Builder::new()
                .name("logbook-view-auditor".into())
                .spawn(move || run_auditor(&views, config, &stopped, &cancel, &status))
                .map_err(|e| ViewError::Store {
                    op: "spawn the view auditor",
                    reason: e.to_string(),
                })?
        };
        Ok(AuditorThread {
            stop: std::sync::Mutex::new(Some(stop)),
            cancel,
            thread: std::sync::Mutex::new(Some(thread)),
            status,
        })
    }

    /// The settings and every view's latest audit.
    pub fn status(&self) -> AuditorStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the thread (an audit under way gives up) and waits for it. Later calls do
    /// nothing.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Release);
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditorThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_auditor(
    views: &std::sync::Weak<Views>,
    config: AuditorConfig,
    stopped: &std::sync::mpsc::Receiver<()>,
    cancel: &Arc<AtomicBool>,
    status: &std::sync::Mutex<AuditorStatus>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let options = AuditOptions {
        records_per_s: config.records_per_s,
        cancel: Some(cancel.clone()),
    };
    loop {
        match stopped.recv_timeout(Duration::from_secs(config.interval_s)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(views) = views.upgrade() else {
            return;
        };
        let names: Vec<String> = views.list().into_iter().map(|i| i.name).collect();
        for name in &names {
            let outcome = views.audit(name, &options);
            if options.cancelled() {
                return;
            }
            let repaired_to = match &outcome {
                Ok(report) if report.verdict == Verdict::Mismatch => {
                    tracing::error!(
                        target: "logbook::audit",
                        view = %name,
                        version = report.version,
                        applied = ?report.applied,
                        live_digest = %format!("{:032x}", report.live.hash),
                        recomputed_digest = %format!("{:032x}", report.recomputed.hash),
                        first_differences = %serde_json::to_string(&report.differences).unwrap_or_default(),
                        "view auditor: the live view differs from its recomputation from the log"
                    );
                    if config.repair {
                        repair(&views, name, cancel)
                    } else {
                        None
                    }
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(target: "logbook::audit", view = %name, error = %e, "view auditor: audit did not finish");
                    None
                }
            };
            record(status, name, outcome, repaired_to);
        }
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.views.retain(|v| names.contains(&v.view));
        st.rounds += 1;
    }
}

/// Rebuilds `name` from the log and switches to the new version once it caught up; the
/// new version, or `None` when that failed (logged).
fn repair(views: &Views, name: &str, cancel: &AtomicBool) -> Option<u64> {
    let attempt = || -> Result<Option<u64>> {
        let version = views.rebuild(name, None)?;
        while !views.wait_caught_up(name, Some(version), Duration::from_secs(1))? {
            if cancel.load(Ordering::Acquire) {
                return Ok(None);
            }
        }
        views.switch(name, version, crate::limits::SWITCH_WAIT_MS_MAX)?;
        Ok(Some(version))
    };
    match attempt() {
        Ok(Some(version)) => {
            tracing::warn!(target: "logbook::audit", view = %name, version, "view auditor: repaired by switching to a version rebuilt from the log");
            Some(version)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(target: "logbook::audit", view = %name, error = %e, "view auditor: repair failed");
            None
        }
    }
}

fn record(
    status: &std::sync::Mutex<AuditorStatus>,
    name: &str,
    outcome: Result<AuditReport>,
    repaired_to: Option<u64>,
) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    let i = match st.views.binary_search_by(|v| v.view.as_str().cmp(name)) {
        Ok(i) => i,
        Err(i) => {
            st.views.insert(
                i,
                ViewAuditStatus {
                    view: name.to_string(),
                    audits: 0,
                    mismatches: 0,
                    last: None,
                    error: None,
                    repaired_to: None,
                },
            );
            i
        }
    };
    let v = &mut st.views[i];
    match outcome {
        Ok(report) => {
            v.audits += 1;
            if report.verdict == Verdict::Mismatch {
                v.mismatches += 1;
                v.repaired_to = repaired_to;
            }
            v.last = Some(report);
            v.error = None;
        }
        Err(e) => v.error = Some(e.to_string()),
    }
}
