//! The scrubber: sealed segments re-read in the background at a bounded rate, every batch
//! checked as a read would check it, so that silent damage (bit rot, a misdirected write) is
//! found before a reader or a rebuild needs the data (issue 18, item 2; decision 0028).
//!
//! ```text
//!   ScrubberThread ── every SCRUB_TICK_MS: allowance += rate × tick (at most one tick's worth)
//!        │
//!        ▼  Scrubber::step(log, allowance)            one cursor over every sealed segment:
//!   streams by name → partitions → sealed segments by base offset → batches by position
//!        │  segment::check_header, segment::check_batch_at (the checks `open` and
//!        │  `logbook log verify` make), read through the segment's own open file
//!        ▼
//!   ScrubStatus: bytes, batches, segments, passes, and each damaged place found
//!   (stream, partition, file, byte offset, reason), logged once at `error`
//! ```
//!
//! What it is not: a repair. Damage is reported, never skipped or rewritten (DESIGN.md rule
//! 5); the active segment is left to recovery (it is verified whole on every open) and to
//! readers. A finding in a sealed segment names the first bad batch of that segment; the
//! rest of the segment is not checked in that pass (its offsets are unknown past the damage),
//! the next segment is.
//!
//! Invariants: a step reads at most its budget of segment bytes, except that the first batch
//! of a step is read whatever its size (so a budget smaller than a batch still makes
//! progress); a step finishes at most one pass; nothing is written.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::error::{LogError, Result};
use crate::format::{BATCH_HEADER_BYTES, BatchHeader, SEGMENT_HEADER_BYTES};
use crate::limits::{SCRUB_DAMAGE_REMEMBERED_MAX, SCRUB_FINDINGS_MAX, SCRUB_TICK_MS};
use crate::log::Log;
use crate::partition::SealedSegment;
use crate::segment::{self, ChunkReader};

/// A damaged place the scrubber found in a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScrubFinding {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in the file of the first bad batch (0: the segment header).
    pub file_offset: u64,
    /// What is wrong there.
    pub reason: String,
}

/// What one [`Scrubber::step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Segment bytes read and checked (headers and batches).
    pub bytes: u64,
    /// Batches that verified.
    pub batches: u64,
    /// Segments finished (checked to their end, or to their first damage).
    pub segments: u64,
    /// Whether the step finished a pass over every sealed segment of the log (it then
    /// stops; the next step starts the next pass).
    pub pass_finished: bool,
    /// Damage found in this step.
    pub findings: Vec<ScrubFinding>,
}

/// Where the scrubber is: inside one sealed segment.
#[derive(Debug)]
struct Cursor {
    stream: String,
    segment: SealedSegment,
    /// Byte position of the next batch to check.
    pos: u64,
    /// Offset the batch at `pos` must start at (offsets are dense).
    next_offset: u64,
    header_checked: bool,
}

impl Cursor {
    fn new(stream: String, segment: SealedSegment) -> Cursor {
        Cursor {
            stream,
            pos: SEGMENT_HEADER_BYTES as u64,
            next_offset: segment.base_offset,
            segment,
            header_checked: false,
        }
    }

    fn finding(&self, file_offset: u64, reason: String) -> ScrubFinding {
        ScrubFinding {
            stream: self.stream.clone(),
            partition: self.segment.partition,
            path: self.segment.path.clone(),
            file_offset,
            reason,
        }
    }
}

/// The scrubber's position over a log's sealed segments; [`Scrubber::step`] moves it by at
/// most a budget of bytes. No thread of its own: [`ScrubberThread`] drives it at a rate, and
/// tests drive it directly.
#[derive(Debug, Default)]
pub struct Scrubber {
    cursor: Option<Cursor>,
    /// Segments checked in the current pass.
    pass_segments: u64,
}

impl Scrubber {
    /// A scrubber at the start of a pass.
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Checks sealed segments of `log` from where the last step stopped, reading at most
    /// `budget_bytes` (the first batch of a step is read whatever its size). Stops at the end
    /// of a pass. A pass over a log without sealed segments reads nothing and does not count
    /// as finished.
    pub fn step(&mut self, log: &Log, budget_bytes: u64) -> ScrubStep {
        let mut step = ScrubStep::default();
        while step.bytes < budget_bytes {
            let cursor = match self.cursor.take() {
                Some(cursor) => cursor,
                None => match next_segment(log, None) {
                    Some(cursor) => cursor,
                    None => break,
                },
            };
            let mut cursor = cursor;
            let room = budget_bytes - step.bytes;
            let done = check_segment(&mut cursor, room, step.bytes == 0, &mut step);
            if !done {
                self.cursor = Some(cursor);
                break;
            }
            step.segments += 1;
            self.pass_segments += 1;
            let after = (
                cursor.stream.as_str(),
                cursor.segment.partition,
                cursor.segment.base_offset,
            );
            self.cursor = next_segment(log, Some(after));
            if self.cursor.is_none() {
                step.pass_finished = self.pass_segments > 0;
                self.pass_segments = 0;
                break;
            }
        }
        step
    }
}

/// Checks the segment at `cursor` onwards within `room` bytes; whether it is done (checked to
/// its end or to its first damage). `first` lets one batch exceed the room.
fn check_segment(cursor: &mut Cursor, room: u64, first: bool, step: &mut ScrubStep) -> bool {
    let seg = cursor.segment.clone();
    let mut spent = 0u64;
    // Whether `size` more bytes fit the room (the first read of a step always does).
    let fits = |spent: u64, size: u64| spent + size <= room || (first && spent == 0);
    if !cursor.header_checked {
        if !fits(spent, SEGMENT_HEADER_BYTES as u64) {
            return false;
        }
        if let Err(e) = segment::check_header(
            &*seg.file,
            &seg.path,
            seg.len,
            seg.partition,
            seg.base_offset,
        ) {
            step.findings.push(cursor.finding(0, damage_reason(&e)));
            return true;
        }
        spent += SEGMENT_HEADER_BYTES as u64;
        step.bytes += SEGMENT_HEADER_BYTES as u64;
        cursor.header_checked = true;
    }
    // Chunks stop at the budget, so the bytes read from the file are the bytes accounted.
    let mut reader = ChunkReader::with_limit(&*seg.file, seg.len.min(cursor.pos + room));
    while cursor.pos < seg.len {
        if seg.len - cursor.pos >= BATCH_HEADER_BYTES as u64 {
            let size = match reader.get(cursor.pos, BATCH_HEADER_BYTES) {
                Ok(bytes) => u64::from(BatchHeader::parse(bytes).batch_bytes),
                Err(e) => {
                    let reason = format!("read failed: {e}");
                    step.findings.push(cursor.finding(cursor.pos, reason));
                    return true;
                }
            };
            if !fits(spent, size) {
                return false;
            }
        }
        match segment::check_batch_at(&mut reader, cursor.pos, seg.len, cursor.next_offset) {
            Ok(Ok(header)) => {
                let bytes = u64::from(header.batch_bytes);
                spent += bytes;
                step.bytes += bytes;
                step.batches += 1;
                cursor.pos += bytes;
                cursor.next_offset = header.next_offset();
            }
            Ok(Err(defect)) => {
                step.findings
                    .push(cursor.finding(defect.position, defect.reason));
                return true;
            }
            Err(e) => {
                let reason = format!("read failed: {e}");
                step.findings.push(cursor.finding(cursor.pos, reason));
                return true;
            }
        }
    }
    if cursor.next_offset != seg.next_offset {
        let reason = format!(
            "the segment's batches end at offset {}, its index says {}",
            cursor.next_offset, seg.next_offset
        );
        step.findings.push(cursor.finding(cursor.pos, reason));
    }
    true
}

fn damage_reason(e: &LogError) -> String {
    match e {
        LogError::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// The first sealed segment after `after` (stream, partition, base offset) in scrub order —
/// streams by name, partitions by number, segments by base offset — or the first of all.
fn next_segment(log: &Log, after: Option<(&str, u32, u64)>) -> Option<Cursor> {
    for name in log.stream_names() {
        if after.is_some_and(|(s, _, _)| name.as_str() < s) {
            continue;
        }
        let Ok(stream) = log.stream(&name) else {
            continue; // dropped meanwhile
        };
        for partition in stream.partitions() {
            let from_base = match after {
                Some((s, p, base)) if s == name => match partition.id().cmp(&p) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => base.saturating_add(1),
                    std::cmp::Ordering::Greater => 0,
                },
                _ => 0,
            };
            if let Some(segment) = partition.sealed_segment_from(from_base) {
                return Some(Cursor::new(name, segment));
            }
        }
    }
    None
}

/// What the scrubber has done since the process started, and what it found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScrubStatus {
    /// The rate limit, bytes per second (0: off).
    pub rate_bytes_per_s: u64,
    /// Segment bytes read and checked.
    pub bytes_scrubbed: u64,
    /// Batches that verified.
    pub batches_scrubbed: u64,
    /// Segments checked.
    pub segments_scrubbed: u64,
    /// Passes finished over every sealed segment.
    pub passes: u64,
    /// Damaged places found (each counted once however many passes see it, for up to
    /// [`SCRUB_DAMAGE_REMEMBERED_MAX`] places; past that, each time it is seen).
    pub errors: u64,
    /// The latest damaged places found, oldest first, at most [`SCRUB_FINDINGS_MAX`].
    pub findings: Vec<ScrubFinding>,
}

#[derive(Debug, Default)]
struct Shared {
    status: ScrubStatus,
    /// Damage already reported: (file, byte offset).
    known: BTreeSet<(PathBuf, u64)>,
}

impl Shared {
    /// Adds a step's totals; logs and lists each damaged place the first time it is seen.
    fn record(&mut self, step: ScrubStep) {
        let s = &mut self.status;
        s.bytes_scrubbed += step.bytes;
        s.batches_scrubbed += step.batches;
        s.segments_scrubbed += step.segments;
        s.passes += u64::from(step.pass_finished);
        for finding in step.findings {
            let key = (finding.path.clone(), finding.file_offset);
            if self.known.contains(&key) {
                continue;
            }
            if self.known.len() < SCRUB_DAMAGE_REMEMBERED_MAX {
                self.known.insert(key);
            }
            tracing::error!(
                target: "logbook::audit",
                stream = %finding.stream,
                partition = finding.partition,
                segment = %finding.path.display(),
                file_offset = finding.file_offset,
                reason = %finding.reason,
                "scrubber: damaged batch in a sealed segment"
            );
            s.errors += 1;
            if s.findings.len() == SCRUB_FINDINGS_MAX {
                s.findings.remove(0);
            }
            s.findings.push(finding);
        }
    }
}

/// A thread that scrubs a log at `rate_bytes_per_s`: every [`SCRUB_TICK_MS`] it may read one
/// tick's worth of bytes (a step that read more, one large batch, is paid back by the next
/// ticks). It holds the log only weakly and only during a step, so it never keeps a closed
/// log open; it stops when dropped (or [`ScrubberThread::stop`]) or when the log is gone.
#[derive(Debug)]
pub struct ScrubberThread {
    stop: Mutex<Option<SyncSender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Mutex<Shared>>,
}

impl ScrubberThread {
    /// Starts scrubbing `log` at `rate_bytes_per_s` (must be > 0).
    ///
    /// # Errors
    /// [`LogError::Io`] if the thread cannot be spawned.
    ///
    /// # Panics
    /// If `rate_bytes_per_s` is 0 (a caller bug: 0 means no scrubber at all).
    pub fn spawn(log: Weak<Log>, rate_bytes_per_s: u64) -> Result<ScrubberThread> {
        assert!(rate_bytes_per_s > 0, "a scrubber needs a rate");
        let shared = Arc::new(Mutex::new(Shared {
            status: ScrubStatus {
                rate_bytes_per_s,
                ..ScrubStatus::default()
            },
            known: BTreeSet::new(),
        }));
        let (stop, stopped) = std::sync::mpsc::sync_channel(1);
        let per_tick = rate_bytes_per_s.saturating_mul(SCRUB_TICK_MS) / 1000;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("logbook-scrubber".into())
                .spawn(move || run(&log, per_tick.max(1), &stopped, &shared))
                .map_err(|e| LogError::io("spawn scrubber thread", PathBuf::new(), e))?
        };
        Ok(ScrubberThread {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
            shared,
        })
    }

    /// What the scrubber has done and found so far.
    pub fn status(&self) -> ScrubStatus {
        lock(&self.shared).status.clone()
    }

    /// Stops the thread (it finishes its current step) and waits for it. Later calls do
    /// nothing.
    pub fn stop(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for ScrubberThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(log: &Weak<Log>, per_tick: u64, stopped: &Receiver<()>, shared: &Mutex<Shared>) {
    let mut scrubber = Scrubber::new();
    // May go below zero after a step that read one batch larger than the allowance.
    let mut allowance: i128 = 0;
    let tick = Duration::from_millis(SCRUB_TICK_MS);
    loop {
        match stopped.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        allowance = (allowance + i128::from(per_tick)).min(i128::from(per_tick));
        if allowance <= 0 {
            continue;
        }
        let Some(log) = log.upgrade() else {
            return;
        };
        let budget = u64::try_from(allowance).unwrap_or(per_tick);
        let step = scrubber.step(&log, budget);
        drop(log);
        allowance -= i128::from(step.bytes);
        lock(shared).record(step);
    }
}
