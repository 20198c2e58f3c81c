//! One log read and one JSON scan per (source stream, partition) batch, shared by the
//! processors of every view of that stream.
//!
//! ```text
//!  processor(view A, p) ─┐                    ┌─ hit: a recent batch holds `applied`
//!  processor(view B, p) ─┼─▶ Source.batch(p) ─┤        and was parsed for A's members
//!  processor(view C, p) ─┘                    └─ miss: read ≤ APPLY_BATCH_RECORDS from
//!                                                `applied`, parse each value once for the
//!                                                union of the registered views' members
//! ```
//!
//! Only the reading is shared: each processor still applies the records to its own state
//! and commits state + its own applied offset atomically, from wherever it is (a view that
//! is behind or rebuilding simply misses and reads on its own). A batch holds only records
//! below the durable offset seen by its reader, so every processor still applies durable
//! records only. Parsing for a superset of a view's members gives the same lookups as
//! parsing for its own (see [`crate::extract`]), so the state is the same bytes either way
//! (docs/DESIGN.md rule 2). A processor never waits for another's read (a wake-up hop per batch
//! costs more freshness on a busy machine than the duplicate read of a small caught-up batch
//! costs CPU): processors that miss at the same moment each read, and the later ones that need
//! those offsets find the batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use logbook_log::{LogPartition, LogStream, StoredRecord};
use serde_json::Value;

use crate::error::Result;
use crate::extract::parse_members;
use crate::limits::{APPLY_BATCH_BYTES, APPLY_BATCH_RECORDS, SHARED_BATCH_BYTES_MAX};

/// Records read from one partition: every record from offset `start` on (the first is the
/// first at or after `start`; a replicated log's offsets have gaps), with their values
/// parsed.
#[derive(Debug)]
pub struct Batch {
    /// The offset it was read from.
    pub start: u64,
    /// The records, in offset order.
    pub records: Vec<StoredRecord>,
    /// Each record's value as [`parse_members`] gives it for `members`.
    pub values: Vec<Option<Value>>,
    members: Option<Vec<String>>,
    bytes: usize,
}

impl Batch {
    /// Whether the next record at or after `offset` is in the batch: `offset` lies between
    /// where it was read from and its last record.
    fn holds(&self, offset: u64, members: Option<&[String]>) -> bool {
        let within =
            offset >= self.start && self.records.last().is_some_and(|l| offset <= l.offset);
        within
            && match (members, &self.members) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(m), Some(b)) => m.iter().all(|x| b.binary_search(x).is_ok()),
            }
    }
}

/// The shared readers of every source stream of one views engine.
#[derive(Debug, Default)]
pub struct Sources {
    list: Mutex<Vec<Weak<Source>>>,
}

impl Sources {
    /// The shared reader of `stream` (the same one for every version over this stream
    /// incarnation while any of them is alive).
    pub fn get(&self, stream: &Arc<dyn LogStream>) -> Arc<Source> {
        let mut list = lock(&self.list);
        list.retain(|w| w.strong_count() > 0);
        if let Some(s) = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| Arc::ptr_eq(&s.stream, stream))
        {
            return s;
        }
        let s = Arc::new(Source {
            stream: stream.clone(),
            readers: Mutex::new(Vec::new()),
            parts: (0..stream.partition_count())
                .map(|_| (Mutex::default(), Condvar::new()))
                .collect(),
        });
        list.push(Arc::downgrade(&s));
        s
    }
}

/// The shared reader of one source stream.
#[derive(Debug)]
pub struct Source {
    stream: Arc<dyn LogStream>,
    /// The registered versions.
    readers: Mutex<Vec<Reader>>,
    /// Per partition, the most recent batches (newest last).
    parts: Vec<(Mutex<Shared>, Condvar)>,
}

/// One partition's shared batches.
#[derive(Debug, Default)]
struct Shared {
    /// The most recent batches, newest last.
    batches: VecDeque<Arc<Batch>>,
    /// Loads in flight: `(from, limit)` of each.
    loading: Vec<(u64, u64)>,
}

/// A processor at least this far behind the durable end waits for another's load of its
/// offset instead of loading the same records itself (while catching up, parsing is the
/// larger cost; at the tail, an extra wake-up hop would cost freshness).
const WAIT_FOR_LOAD_MIN_RECORDS: u64 = 256;

/// A version reading the stream.
#[derive(Debug)]
struct Reader {
    id: u64,
    /// The members it reads (`None`: all).
    members: Option<Vec<String>>,
    /// Per partition, the offset its processor asked for last (it has passed every offset
    /// below), if it has asked yet.
    at: Vec<Option<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Source {
    /// Registers version `id`, which reads `members`, before its processors start.
    pub fn register(&self, id: u64, members: Option<Vec<String>>) {
        lock(&self.readers).push(Reader {
            id,
            members,
            at: vec![None; self.parts.len()],
        });
    }

    /// Unregisters version `id`.
    pub fn unregister(&self, id: u64) {
        lock(&self.readers).retain(|r| r.id != id);
    }

    /// Notes that version `id` is at `from` on partition `p`; returns the lowest offset any
    /// registered version that has started on `p` is at (batches below it are not needed).
    fn advance(&self, id: u64, p: u32, from: u64) -> u64 {
        let mut readers = lock(&self.readers);
        let mut low = u64::MAX;
        for r in readers.iter_mut() {
            if r.id == id
                && let Some(a) = r.at.get_mut(p as usize)
            {
                *a = Some(from);
            }
            if let Some(Some(a)) = r.at.get(p as usize) {
                low = low.min(*a);
            }
        }
        low
    }

    /// The union of the registered versions' members (`None`: some version reads all).
    fn members(&self) -> Option<Vec<String>> {
        let readers = lock(&self.readers);
        let mut out = Vec::new();
        for r in readers.iter() {
            out.extend(r.members.as_ref()?.iter().cloned());
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// A batch of partition `p` holding `from` (its records below `limit`, the durable
    /// offset the caller saw) whose values were parsed for at least `members`, for the
    /// processor of version `id`.
    ///
    /// A batch is kept until every version reading the partition has passed it (so one that
    /// runs behind the others still finds it), within [`SHARED_BATCH_BYTES_MAX`] of record
    /// bytes per partition (beyond it the oldest go first, the newest is always kept).
    ///
    /// # Errors
    /// The log's read errors.
    pub fn batch(
        &self,
        id: u64,
        p: u32,
        part: &dyn LogPartition,
        from: u64,
        limit: u64,
        members: Option<&[String]>,
    ) -> Result<Arc<Batch>> {
        let low = self.advance(id, p, from);
        let (shared, loaded) = &self.parts[p as usize];
        {
            let mut sh = lock(shared);
            loop {
                while sh
                    .batches
                    .front()
                    .is_some_and(|b| b.records.last().is_none_or(|l| l.offset < low))
                {
                    sh.batches.pop_front();
                }
                if let Some(b) = sh.batches.iter().rev().find(|b| b.holds(from, members)) {
                    return Ok(b.clone());
                }
                let in_flight = sh
                    .loading
                    .iter()
                    .any(|&(f, l)| f <= from && from < l.min(f + APPLY_BATCH_RECORDS as u64));
                if !in_flight || limit - from < WAIT_FOR_LOAD_MIN_RECORDS {
                    break;
                }
                // The load may end short of `from` (byte limit) or be parsed for other
                // members: then the loop falls through to a load of our own.
                sh = loaded.wait(sh).unwrap_or_else(|e| e.into_inner());
                if !sh.loading.iter().any(|&(f, _)| f <= from) {
                    if let Some(b) = sh.batches.iter().rev().find(|b| b.holds(from, members)) {
                        return Ok(b.clone());
                    }
                    break;
                }
            }
            sh.loading.push((from, limit));
        }
        let result = self.load(part, from, limit);
        let mut sh = lock(shared);
        if let Some(i) = sh.loading.iter().position(|&x| x == (from, limit)) {
            sh.loading.swap_remove(i);
        }
        if let Ok(b) = &result
            && !b.records.is_empty()
        {
            sh.batches.push_back(b.clone());
            let mut bytes: usize = sh.batches.iter().map(|b| b.bytes).sum();
            while sh.batches.len() > 1 && bytes > SHARED_BATCH_BYTES_MAX {
                if let Some(old) = sh.batches.pop_front() {
                    bytes -= old.bytes;
                }
            }
        }
        drop(sh);
        loaded.notify_all();
        result
    }

    fn load(&self, part: &dyn LogPartition, from: u64, limit: u64) -> Result<Arc<Batch>> {
        Batch::load(part, from, limit, self.members()).map(Arc::new)
    }
}

impl Batch {
    /// Reads at most [`APPLY_BATCH_RECORDS`] records (about [`APPLY_BATCH_BYTES`]) of one
    /// partition from `from`, those below `limit`, and parses their values for `members`
    /// (`None`: all).
    ///
    /// # Errors
    /// The log's read errors.
    pub(crate) fn load(
        part: &dyn LogPartition,
        from: u64,
        limit: u64,
        members: Option<Vec<String>>,
    ) -> Result<Batch> {
        let mut records = part.read(from, APPLY_BATCH_RECORDS, APPLY_BATCH_BYTES)?;
        let keep = records.partition_point(|r| r.offset < limit);
        records.truncate(keep);
        let values = records
            .iter()
            .map(|r| parse_members(&r.value, members.as_deref()))
            .collect();
        let bytes = records
            .iter()
            .map(|r| r.value.len() + r.key.as_ref().map_or(0, Vec::len))
            .sum();
        Ok(Batch {
            start: from,
            records,
            values,
            members,
            bytes,
        })
    }
}
