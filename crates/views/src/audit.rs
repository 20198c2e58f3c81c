//! The view auditor: a view recomputed from the log into a shadow state, compared first
//! with its stored checkpoints at their offsets (what a restart would load) and then with
//! the live state at exactly the offsets it has applied, by order-independent digests
//! (issue 18, item 1; decision 0028). Views are deterministic functions of the log
//! (docs/DESIGN.md rule 2), so any difference is corruption of the stored or live state —
//! or a bug.
//!
//! ```text
//!  stored checkpoints ── at C (≤ the live offsets) ──┐
//!  live version  ── applied A(t) ────────────────────│────────┐
//!                                                    ▼        ▼
//!  shadow: empty ── apply_batch (the processors' own function) up to C, paced at
//!          records_per_s: digest(stored at C) vs digest(shadow at C), apply states and
//!          contributions; then up to A(t), without locks; again up to A(t') while the
//!          live one moved on; then, holding the live state still: the last records up
//!          to A*, and digest(live at A*) vs digest(shadow at A*); on a mismatch the
//!          first rows that differ (merged scans of both, in key order)
//! ```
//!
//! What it is not: a repair. A mismatch is reported; the caller may rebuild the view and
//! switch to the rebuilt version (the server's auditor, [`crate::auditor`], does when told
//! to).
//!
//! Cost: the shadow holds a whole copy of the view's state in memory while it runs, and
//! the stored checkpoints a second one while they are compared — bounded by
//! [`AuditOptions::memory_bytes_max`]; the live version's processors wait to publish while
//! the final catch-up and the two digests run (a full scan of both states), as they do for
//! `status --digest`.

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
use crate::state::{self, Contribs, Delta, Header, Loaded, MemSnapshot, PartState};
use crate::value::canonical_json;

/// How an audit runs.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Most records recomputed per second while the live version is not held (0: as fast
    /// as it goes). The final catch-up, under the hold, is never paced.
    pub records_per_s: u64,
    /// Most bytes the audit may hold, counted as the processors count state (keys, values,
    /// ~64 bytes per entry): the recomputed state, and a stored checkpoint while comparing
    /// it. Beyond it the audit stops, [`Verdict::Skipped`] with a note (0: no bound).
    pub memory_bytes_max: usize,
    /// Set to give up: the audit ends with [`ViewError::Closed`] at its next batch.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl AuditOptions {
    pub(crate) fn cancelled(&self) -> bool {
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
    /// The stored checkpoints compared with the recomputation at their own offsets (what a
    /// restart would load); `None` when the audit did not get that far. A mismatch there
    /// makes the report's verdict a mismatch too.
    pub checkpoint: Option<CheckpointReport>,
}

/// The stored checkpoints of a version compared with the recomputation at their offsets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointReport {
    /// [`Verdict::Match`], or [`Verdict::Mismatch`]: rows, an apply state or the
    /// processor's contributions differ, or a checkpoint cannot be loaded (see `notes`).
    pub verdict: Verdict,
    /// Per partition, the offset its checkpoint is at (next offset to apply; where the
    /// version began when none was written yet).
    pub applied: BTreeMap<u32, u64>,
    /// The digest of the rows as a restart would load them.
    pub stored: Digest,
    /// The recomputed digest there.
    pub recomputed: Digest,
    /// What differs besides rows, one line per finding, naming the partition.
    pub notes: Vec<String>,
    /// On a mismatch of rows, the first that differ in key order (at most
    /// [`AUDIT_DIFFERENCES_MAX`]); `live` holds the stored checkpoint's row.
    pub differences: Vec<RowDifference>,
}

impl Views {
    /// Audits the current version of `name`: recomputes it from the log, compares it with
    /// the stored checkpoints at their offsets and then with the live state at the offsets
    /// it has applied (see the module docs). Blocks for as long as the recomputation takes.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`]; the log's read errors; [`ViewError::Corrupt`] if either
    /// state cannot be read; [`ViewError::Store`] if the store cannot be read;
    /// [`ViewError::Closed`] when the views close meanwhile.
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
            checkpoint: None,
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
        let mut shadow = Shadow::new(&began, options.memory_bytes_max);
        if compare(&v, &mut shadow, &mut report, options)? == Budget::Exceeded {
            report.verdict = Verdict::Skipped;
            report.note = Some(format!(
                "the recomputation outgrew the audit's memory budget of {} bytes (it holds a copy of the view's state, and a stored checkpoint while comparing it)",
                options.memory_bytes_max
            ));
        }
        report.records_recomputed = shadow.records;
        Ok(report)
    }
}

/// Brings `shadow` to the stored checkpoints' offsets and compares there, then to the live
/// applied offsets and compares there; fills `report`.
fn compare(
    v: &Version,
    shadow: &mut Shadow,
    report: &mut AuditReport,
    options: &AuditOptions,
) -> Result<Budget> {
    let mut pace = Pace::new(options.records_per_s);
    let Some(checkpoint) = audit_checkpoints(v, shadow, &mut pace, options)? else {
        return Ok(Budget::Exceeded);
    };
    // Chase the live version without holding it; each round has less to do.
    for _ in 0..AUDIT_CATCH_UP_ROUNDS {
        let target = v.applied_now();
        if shadow.advance(v, &target, &mut pace, options)? == Budget::Exceeded {
            return Ok(Budget::Exceeded);
        }
    }
    let partitions = v.stream.partition_count();
    let snap = v.snapshot();
    let live = Reader {
        plan: &v.plan,
        snap: &snap,
        partitions,
    };
    let target: Vec<u64> = live.applied()?.iter().map(|a| a.applied).collect();
    if shadow.advance(v, &target, &mut Pace::new(0), options)? == Budget::Exceeded {
        return Ok(Budget::Exceeded);
    }
    let shadow_snap = shadow.snapshot();
    let recomputed = Reader {
        plan: &v.plan,
        snap: &shadow_snap,
        partitions,
    };
    report.applied = by_partition(&target);
    report.live = live.digest()?;
    report.recomputed = recomputed.digest()?;
    report.verdict = if report.live == report.recomputed {
        Verdict::Match
    } else {
        report.differences = first_differences(&live, &recomputed, AUDIT_DIFFERENCES_MAX)?;
        Verdict::Mismatch
    };
    if checkpoint.verdict == Verdict::Mismatch {
        report.verdict = Verdict::Mismatch;
    }
    report.checkpoint = Some(checkpoint);
    Ok(Budget::Within)
}

fn by_partition(offsets: &[u64]) -> BTreeMap<u32, u64> {
    offsets
        .iter()
        .enumerate()
        .map(|(p, a)| (p as u32, *a))
        .collect()
}

/// Loads every partition's stored checkpoint — what a restart would load — brings the
/// shadow to their offsets (checkpoints trail the live state, so the shadow passes them on
/// its way) and compares rows, apply states and contributions there. `None`: over budget.
fn audit_checkpoints(
    v: &Version,
    shadow: &mut Shadow,
    pace: &mut Pace,
    options: &AuditOptions,
) -> Result<Option<CheckpointReport>> {
    let mut notes = Vec::new();
    let stored = load_checkpoints(v, shadow.states.len() as u32, &mut notes)?;
    let target: Vec<u64> = stored
        .iter()
        .zip(&shadow.states)
        .map(|(l, s)| l.header.state.applied.max(s.applied))
        .collect();
    shadow.extra = stored
        .iter()
        .map(|l| l.part.bytes() + l.contribs.bytes())
        .sum();
    let budget = shadow.advance(v, &target, pace, options)?;
    shadow.extra = 0;
    if budget == Budget::Exceeded {
        return Ok(None);
    }
    state_notes(&stored, shadow, &mut notes);
    let parts: Vec<RwLock<PartState>> = stored.into_iter().map(|l| RwLock::new(l.part)).collect();
    let stored_snap = MemSnapshot {
        parts: parts
            .iter()
            .map(|p| p.read().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    };
    let shadow_snap = shadow.snapshot();
    let partitions = v.stream.partition_count();
    let (stored_rows, recomputed_rows) = (
        Reader {
            plan: &v.plan,
            snap: &stored_snap,
            partitions,
        },
        Reader {
            plan: &v.plan,
            snap: &shadow_snap,
            partitions,
        },
    );
    let (stored_digest, recomputed_digest) = (stored_rows.digest()?, recomputed_rows.digest()?);
    let differences = if stored_digest == recomputed_digest {
        Vec::new()
    } else {
        first_differences(&stored_rows, &recomputed_rows, AUDIT_DIFFERENCES_MAX)?
    };
    let verdict = if notes.is_empty() && stored_digest == recomputed_digest {
        Verdict::Match
    } else {
        Verdict::Mismatch
    };
    Ok(Some(CheckpointReport {
        verdict,
        applied: by_partition(&target),
        stored: stored_digest,
        recomputed: recomputed_digest,
        notes,
        differences,
    }))
}

/// Every partition's stored checkpoint as a restart would load it; one that cannot be
/// loaded is a note, and an empty state in its place.
fn load_checkpoints(v: &Version, partitions: u32, notes: &mut Vec<String>) -> Result<Vec<Loaded>> {
    let mut stored = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        match state::load(&*v.space, p) {
            Ok(loaded) => stored.push(loaded),
            Err(e @ ViewError::Corrupt { .. }) => {
                notes.push(format!(
                    "partition {p}: a restart could not load the checkpoint: {e}"
                ));
                stored.push(Loaded::default());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(stored)
}

/// What differs, beyond rows, between each stored checkpoint and the shadow at its offset:
/// the apply state, the state's entries (multiset counts and group partials feed later rows
/// without being rows) and the processor's contributions.
fn state_notes(stored: &[Loaded], shadow: &Shadow, notes: &mut Vec<String>) {
    for (p, l) in stored.iter().enumerate() {
        if l.header == Header::default() {
            continue; // no checkpoint written yet: a restart starts from nothing
        }
        let recomputed = &shadow.states[p];
        // `began` is not compared: checkpoints written before it existed read it as 0.
        let stored_state = ApplyState {
            began: recomputed.began,
            ..l.header.state.clone()
        };
        if stored_state != *recomputed {
            notes.push(format!(
                "partition {p}: the stored apply state {:?} differs from the recomputed {recomputed:?}",
                l.header.state
            ));
        }
        let recomputed_part = shadow.parts[p].read().unwrap_or_else(|e| e.into_inner());
        if l.part.fingerprint() != recomputed_part.fingerprint() {
            notes.push(format!(
                "partition {p}: the stored state entries (rows, index entries, group partials, multiset counts) differ from the recomputed ones"
            ));
        }
        drop(recomputed_part);
        if l.contribs.fingerprint() != shadow.contribs[p].fingerprint() {
            notes.push(format!(
                "partition {p}: the stored contributions differ from the recomputed ones"
            ));
        }
    }
}

/// Whether a recomputation stayed within its memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Within,
    Exceeded,
}

/// A view's state recomputed from the log, partition by partition, in memory.
struct Shadow {
    parts: Vec<RwLock<PartState>>,
    contribs: Vec<Contribs>,
    caches: Vec<StateCache>,
    states: Vec<ApplyState>,
    /// Records applied.
    records: u64,
    /// Most bytes held, with `extra` (0: no bound).
    budget: usize,
    /// Bytes held beside the shadow for the audit (a loaded checkpoint).
    extra: usize,
}

impl Shadow {
    /// An empty state beginning each partition where the live version began it.
    fn new(began: &[u64], budget: usize) -> Shadow {
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
            budget,
            extra: 0,
        }
    }

    /// Approximate bytes held: the state as the processors count it, and `extra`.
    fn bytes(&self) -> usize {
        let parts: usize = self
            .parts
            .iter()
            .map(|p| p.read().unwrap_or_else(|e| e.into_inner()).bytes())
            .sum();
        let contribs: usize = self.contribs.iter().map(Contribs::bytes).sum();
        parts + contribs + self.extra
    }

    /// Applies each partition's records up to `target` (exclusive), through the processors'
    /// own [`apply_batch`]; stops early once over the budget.
    fn advance(
        &mut self,
        v: &Version,
        target: &[u64],
        pace: &mut Pace,
        options: &AuditOptions,
    ) -> Result<Budget> {
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
                if self.budget > 0 && self.bytes() > self.budget {
                    return Ok(Budget::Exceeded);
                }
                pace.spent(batch.records.len() as u64, options);
            }
        }
        Ok(Budget::Within)
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

/// Test hooks: silent corruption of a view's live state in memory, or of its stored
/// checkpoint, for tests of the auditor. Built only with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
impl Views {
    /// Removes the first entry of partition `p`'s live state of the current version of
    /// `name` (a row, an index entry or a group partial), as silent corruption of memory
    /// would; returns its key.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`].
    #[doc(hidden)]
    pub fn corrupt_state_for_test(&self, name: &str, p: u32) -> Result<Option<Vec<u8>>> {
        let v = self.current_version(name)?;
        Ok(v.corrupt_state_for_test(p))
    }

    /// Removes the first row, index entry or group partial from partition `p`'s stored
    /// checkpoint of the current version of `name` (its first chunk), as a damaged store
    /// would; its key, or `None` before the first checkpoint.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::Store`], [`ViewError::Corrupt`].
    #[doc(hidden)]
    pub fn corrupt_checkpoint_for_test(&self, name: &str, p: u32) -> Result<Option<Vec<u8>>> {
        let v = self.current_version(name)?;
        state::corrupt_checkpoint_for_test(&*v.space, p)
    }
}
