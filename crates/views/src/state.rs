//! View state in memory, checkpointed periodically to the store.
//!
//! A processor applies records to state held in memory and publishes its applied offset at
//! once; every so often it writes a **checkpoint**: the state changes since the previous
//! checkpoint (or, now and then, the whole state) together with the applied offset, in one
//! atomic store commit. After a crash the version reopens at its last checkpoint and the
//! processor replays the log from the checkpoint's applied offset, so no record is applied
//! twice or skipped (docs/DESIGN.md rule 2, with fewer and larger commits than one per batch).
//!
//! ```text
//!  processor p ── apply batch ─▶ contributions (its own map)   ─┐ every write also appended
//!                             ─▶ PartState (rows, index entries,├─▶ to the delta (bytes)
//!                                group partials, multisets, A)  ┘
//!              ── publish applied (readers see it at once, under the partition's RwLock)
//!              ── checkpoint when the delta reaches `checkpoint_bytes` or `checkpoint_interval`
//!                 passed (or when stopped cleanly):
//!                   K·p·seq → delta chunks, H·p → header {apply state, live chunk range, sizes}
//!                 or, once the chunks since the last full image outgrow it (×2, ≥ 64 MiB):
//!                   a full image of the state replacing every older chunk
//! ```
//!
//! Store keys (in the version's space, apart from the layout of [`crate::layout`], which
//! is now the layout of the *entries* inside the chunks):
//!
//! | key | value |
//! | --- | --- |
//! | `H · partition u32 BE` | header: [`ApplyState`] (length-prefixed), first and next chunk sequence numbers, bytes of the last full image, bytes of deltas since |
//! | `K · partition u32 BE · seq u64 BE` | a chunk: entries `[key len u32 LE][key][value len u32 LE, u32::MAX = delete][value]`, applied in sequence order |
//!
//! **Memory.** The whole state of every running version lives in memory (about the stored
//! bytes plus ~64 bytes per entry: for the 336,776 flights the three benchmark views hold
//! ~1.4 M entries, 186 MB measured). A processor whose partition state would exceed
//! [`ViewsConfig::state_bytes_max`] stops with [`ViewError::StateTooLarge`] (status shows
//! it; the version keeps serving what it has); there is no spill to disk. The delta waiting
//! for the next checkpoint is bounded by `checkpoint_bytes`; while checkpoints fail (a full
//! disk) processors keep applying until it reaches [`crate::limits::CHECKPOINT_PENDING_FACTOR`] times that, then
//! pause until a checkpoint succeeds (retried with backoff).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Result, ViewError};
use crate::hash::KeyMap;
use crate::layout::{self, ApplyState, Dec, Enc, TAG_APPLIED, TAG_CONTRIB};
use crate::limits::{
    CHECKPOINT_BYTES, CHECKPOINT_CHUNK_BYTES, CHECKPOINT_INTERVAL_MS, CHECKPOINT_RETRY_MAX_MS,
    CHECKPOINT_RETRY_MIN_MS, COMPACT_MIN_BYTES, PARTITION_STATE_BYTES_MAX,
};
use crate::store::{Space, SpaceSnapshot, Write};

/// Approximate bytes of bookkeeping per entry held in memory (map node, two `Vec`s).
const ENTRY_OVERHEAD: usize = 64;

/// How often processors checkpoint, and how much state they may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewsConfig {
    /// Checkpoint at least this often while there are changes (default
    /// [`CHECKPOINT_INTERVAL_MS`]). Bounds what a restart replays, in time.
    pub checkpoint_interval: Duration,
    /// Checkpoint once the changes since the last one reach this many bytes (default
    /// [`CHECKPOINT_BYTES`]). Bounds the memory of the pending delta.
    pub checkpoint_bytes: usize,
    /// A checkpoint writes a full image instead of a delta once the deltas since the last
    /// image exceed twice its size and at least this many bytes (default
    /// [`COMPACT_MIN_BYTES`]). Bounds the store's size and what a restart reads.
    pub compact_min_bytes: usize,
    /// Most bytes of state (keys, values and per-entry overhead) one processor holds in
    /// memory (default [`PARTITION_STATE_BYTES_MAX`]); beyond it the processor stops with
    /// [`ViewError::StateTooLarge`].
    pub state_bytes_max: usize,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            checkpoint_interval: Duration::from_millis(CHECKPOINT_INTERVAL_MS),
            checkpoint_bytes: CHECKPOINT_BYTES,
            compact_min_bytes: COMPACT_MIN_BYTES,
            state_bytes_max: PARTITION_STATE_BYTES_MAX,
        }
    }
}

fn entry_bytes(k: &[u8], v: &[u8]) -> usize {
    k.len() + v.len() + ENTRY_OVERHEAD
}

/// A map of state entries that can be written to and counted.
trait EntryMap {
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> Option<Vec<u8>>;
    fn del(&mut self, k: &[u8]) -> Option<Vec<u8>>;
}

impl EntryMap for BTreeMap<Vec<u8>, Vec<u8>> {
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> Option<Vec<u8>> {
        self.insert(k, v)
    }
    fn del(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        self.remove(k)
    }
}

impl EntryMap for KeyMap<Vec<u8>> {
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> Option<Vec<u8>> {
        self.insert(k, v)
    }
    fn del(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        self.remove(k)
    }
}

/// Writes into `map`, returning the new byte count from `bytes`.
fn write_map(map: &mut impl EntryMap, bytes: usize, key: Vec<u8>, value: Option<Vec<u8>>) -> usize {
    match value {
        Some(v) => {
            let add = entry_bytes(&key, &v);
            let klen = key.len();
            match map.put(key, v) {
                Some(old) => bytes + add - (klen + old.len() + ENTRY_OVERHEAD),
                None => bytes + add,
            }
        }
        None => match map.del(&key) {
            Some(old) => bytes - entry_bytes(&key, &old),
            None => bytes,
        },
    }
}

/// The state of one partition that readers see: table rows, index entries, group partials,
/// multiset counts and the apply state (`A`), by their [`crate::layout`] keys, in key order.
#[derive(Debug, Default)]
pub struct PartState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl PartState {
    /// The first key whose tag is not `tag` (tests of the auditor corrupt it).
    #[cfg(feature = "test-hooks")]
    pub fn first_key_except(&self, tag: u8) -> Option<Vec<u8>> {
        self.map.keys().find(|k| k.first() != Some(&tag)).cloned()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Puts (`Some`) or deletes (`None`).
    pub fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.bytes = write_map(&mut self.map, self.bytes, key, value);
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// An order-independent fingerprint of every entry but the apply state (the sum mod
    /// 2^128 of XXH3-128 of each entry): the auditor compares a stored checkpoint's with the recomputed
    /// state's, which catches what a restart would load wrong beyond rows (e.g. multiset
    /// counts).
    pub fn fingerprint(&self) -> u128 {
        fingerprint(
            self.map
                .iter()
                .filter(|(k, _)| k.first() != Some(&TAG_APPLIED)),
        )
    }

    /// Entries with `from <= key < to`, in key order.
    pub fn range<'a>(
        &'a self,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + use<'a> {
        use std::ops::Bound;
        let r = if from < to {
            Some(
                self.map
                    .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to))),
            )
        } else {
            None
        };
        r.into_iter().flatten()
    }
}

/// A processor's contributions (`C` keys: what each primary key's current record adds to an
/// index or aggregate). Only the processor reads them, so they are not behind a lock.
#[derive(Debug, Default)]
pub struct Contribs {
    map: KeyMap<Vec<u8>>,
    bytes: usize,
}

impl Contribs {
    /// The contribution stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    /// Puts (`Some`) or deletes (`None`).
    pub fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.bytes = write_map(&mut self.map, self.bytes, key, value);
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// An order-independent fingerprint of the entries (the sum mod 2^128 of XXH3-128 of
    /// each entry): the auditor compares a stored checkpoint's with the recomputed ones.
    pub fn fingerprint(&self) -> u128 {
        fingerprint(self.map.iter())
    }
}

/// The sum mod 2^128 of XXH3-128 of each entry (its key's length, the key, the value):
/// independent of order, so maps of different kinds compare.
fn fingerprint<'a>(entries: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> u128 {
    entries.fold(0u128, |sum, (k, v)| {
        let mut entry = Vec::with_capacity(4 + k.len() + v.len());
        entry.extend_from_slice(&(k.len() as u32).to_le_bytes());
        entry.extend_from_slice(k);
        entry.extend_from_slice(v);
        sum.wrapping_add(xxh3_128(&entry))
    })
}

/// The changes since the last checkpoint, as chunk entries.
#[derive(Debug, Default)]
pub struct Delta {
    chunks: Vec<Vec<u8>>,
    bytes: usize,
}

impl Delta {
    /// Records a put (`Some`) or delete (`None`) of `key`.
    pub fn log(&mut self, key: &[u8], value: Option<&[u8]>) {
        let need = match self.chunks.last() {
            None => true,
            Some(c) => c.len() >= CHECKPOINT_CHUNK_BYTES,
        };
        if need {
            self.chunks.push(Vec::with_capacity(64 * 1024));
        }
        let Some(c) = self.chunks.last_mut() else {
            return;
        };
        let before = c.len();
        push_entry(c, key, value);
        self.bytes += c.len() - before;
    }

    /// Bytes pending.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn push_entry(c: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    c.extend_from_slice(&(key.len() as u32).to_le_bytes());
    c.extend_from_slice(key);
    match value {
        Some(v) => {
            c.extend_from_slice(&(v.len() as u32).to_le_bytes());
            c.extend_from_slice(v);
        }
        None => c.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Where a partition's checkpoint stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The apply state the checkpoint is at.
    pub state: ApplyState,
    /// First live chunk sequence number.
    pub first_seq: u64,
    /// Next chunk sequence number (chunks `first_seq..next_seq` are live).
    pub next_seq: u64,
    /// Bytes of the last full image.
    pub base_bytes: u64,
    /// Bytes of delta chunks written since it.
    pub delta_bytes: u64,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(&self.state.encode())
            .u64(self.first_seq)
            .u64(self.next_seq)
            .u64(self.base_bytes)
            .u64(self.delta_bytes);
        e.0
    }

    fn decode(b: &[u8]) -> Result<Header> {
        let mut d = Dec::new(b, "checkpoint header");
        let state = ApplyState::decode(d.bytes()?)?;
        Ok(Header {
            state,
            first_seq: d.u64()?,
            next_seq: d.u64()?,
            base_bytes: d.u64()?,
            delta_bytes: d.u64()?,
        })
    }
}

/// One partition's state as loaded from its last checkpoint.
#[derive(Debug, Default)]
pub struct Loaded {
    /// What readers see.
    pub part: PartState,
    /// The processor's contributions.
    pub contribs: Contribs,
    /// The checkpoint header (default: no checkpoint yet, applied 0).
    pub header: Header,
}

/// Loads partition `p`'s last checkpoint from `space`.
///
/// # Errors
/// [`ViewError::Store`], [`ViewError::Corrupt`].
pub fn load(space: &dyn Space, p: u32) -> Result<Loaded> {
    let mut out = Loaded::default();
    // Header and chunks from one snapshot: the auditor loads while the processor may write
    // the next checkpoint (which deletes chunks a full image replaces).
    let snap = space.snapshot();
    let Some(h) = snap.get(&layout::checkpoint_header_key(p))? else {
        out.part
            .write(header_key_applied(p), Some(ApplyState::default().encode()));
        return Ok(out);
    };
    out.header = Header::decode(&h)?;
    let (from, to) = (
        layout::checkpoint_chunk_key(p, out.header.first_seq),
        layout::checkpoint_chunk_key(p, out.header.next_seq),
    );
    let mut failed = None;
    let mut expect = out.header.first_seq;
    snap.scan(&from, &to, false, &mut |k, v| {
        let seq = k
            .get(5..13)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_be_bytes);
        if seq != Some(expect) {
            failed = Some(ViewError::corrupt(
                "checkpoint",
                format!("chunk {expect} of partition {p} is missing"),
            ));
            return false;
        }
        expect += 1;
        match apply_chunk(v, &mut out.part, &mut out.contribs) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if expect != out.header.next_seq {
        return Err(ViewError::corrupt(
            "checkpoint",
            format!("chunk {expect} of partition {p} is missing"),
        ));
    }
    out.part
        .write(header_key_applied(p), Some(out.header.state.encode()));
    Ok(out)
}

/// Deletes the first state entry (a row, an index entry, a group partial or a multiset
/// count) from partition `p`'s stored checkpoint, by appending its deletion to the last
/// chunk, as a damaged store would; returns its key (`None`: no checkpoint, or nothing in
/// it). Only for tests of the auditor (feature `test-hooks`).
///
/// # Errors
/// [`ViewError::Store`], [`ViewError::Corrupt`].
#[cfg(feature = "test-hooks")]
pub fn corrupt_checkpoint_for_test(space: &dyn Space, p: u32) -> Result<Option<Vec<u8>>> {
    let loaded = load(space, p)?;
    let last = loaded.header.next_seq.checked_sub(1);
    let (Some(key), Some(last)) = (loaded.part.first_key_except(TAG_APPLIED), last) else {
        return Ok(None);
    };
    let chunk_key = layout::checkpoint_chunk_key(p, last);
    let mut chunk = space.get(&chunk_key)?.unwrap_or_default();
    push_entry(&mut chunk, &key, None);
    space.commit(vec![(chunk_key, Some(chunk))])?;
    Ok(Some(key))
}

fn header_key_applied(p: u32) -> Vec<u8> {
    layout::prefix(TAG_APPLIED, p)
}

fn apply_chunk(c: &[u8], part: &mut PartState, contribs: &mut Contribs) -> Result<()> {
    let mut d = Dec::new(c, "checkpoint chunk");
    while !d.is_empty() {
        let key = d.bytes()?.to_vec();
        let value = d.bytes_or_none()?.map(<[u8]>::to_vec);
        if key.first() == Some(&TAG_CONTRIB) {
            contribs.write(key, value);
        } else {
            part.write(key, value);
        }
    }
    Ok(())
}

/// Writes a processor's checkpoints.
pub struct Checkpointer {
    space: Arc<dyn Space>,
    p: u32,
    header: Header,
    /// Changes since the last checkpoint.
    pub delta: Delta,
    last: Instant,
    interval: Duration,
    bytes: usize,
    compact_min: u64,
    /// Failed writes in a row (0: the last write succeeded).
    failures: u32,
    /// After a failed write, when the next attempt is due.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("partition", &self.p)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// A checkpointer of partition `p` continuing from `header`.
    pub fn new(space: Arc<dyn Space>, p: u32, header: Header, config: &ViewsConfig) -> Self {
        Checkpointer {
            space,
            p,
            header,
            delta: Delta::default(),
            last: Instant::now(),
            interval: config.checkpoint_interval,
            bytes: config.checkpoint_bytes,
            compact_min: config.compact_min_bytes as u64,
            failures: 0,
            retry_at: None,
        }
    }

    /// The apply state of the last checkpoint.
    pub fn checkpointed(&self) -> &ApplyState {
        &self.header.state
    }

    /// Whether a checkpoint is due: changes pending and the byte or time bound reached.
    /// (The clock decides only *when* state is saved, never what it is.)
    /// After a failed write the next attempt is due only after a backoff
    /// ([`CHECKPOINT_RETRY_MIN_MS`] doubling to [`CHECKPOINT_RETRY_MAX_MS`]).
    pub fn due(&self) -> bool {
        self.delta.bytes > 0
            && match self.retry_at {
                Some(at) => Instant::now() >= at,
                None => self.delta.bytes >= self.bytes || self.last.elapsed() >= self.interval,
            }
    }

    /// Failed writes in a row (0 once a write succeeds).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Time until the next attempt after a failed write (zero when none is waiting).
    pub fn retry_in(&self) -> Duration {
        self.retry_at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        })
    }

    /// Whether there are changes since the last checkpoint.
    pub fn pending(&self) -> bool {
        self.delta.bytes > 0
    }

    /// Writes a checkpoint at `state` (which must be the state `part` and `contribs` are
    /// at): the delta, or a full image once the deltas since the last one outgrow it.
    ///
    /// # Errors
    /// [`ViewError::Store`]. Nothing changed then: the header and the pending delta are as
    /// before and the store commit is atomic, so a later attempt (after the backoff that
    /// [`Checkpointer::due`] applies) writes a complete checkpoint.
    pub fn write(
        &mut self,
        state: &ApplyState,
        part: &std::sync::RwLock<PartState>,
        contribs: &Contribs,
    ) -> Result<()> {
        match self.write_once(state, part, contribs) {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = CHECKPOINT_RETRY_MIN_MS
                    .saturating_mul(1 << (self.failures - 1).min(16))
                    .min(CHECKPOINT_RETRY_MAX_MS);
                self.retry_at = Some(Instant::now() + Duration::from_millis(backoff));
                Err(e)
            }
        }
    }

    fn write_once(
        &mut self,
        state: &ApplyState,
        part: &std::sync::RwLock<PartState>,
        contribs: &Contribs,
    ) -> Result<()> {
        let mut h = self.header.clone();
        let delta_total = h.delta_bytes + self.delta.bytes as u64;
        let compact = delta_total > (2 * h.base_bytes).max(self.compact_min);
        let mut writes: Vec<Write> = Vec::new();
        if compact {
            let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
            let mut total = 0u64;
            let mut push = |k: &[u8], v: &[u8]| {
                if chunks
                    .last()
                    .is_some_and(|c| c.len() >= CHECKPOINT_CHUNK_BYTES)
                {
                    chunks.push(Vec::new());
                }
                if let Some(c) = chunks.last_mut() {
                    let before = c.len();
                    push_entry(c, k, Some(v));
                    total += (c.len() - before) as u64;
                }
            };
            {
                let g = part.read().unwrap_or_else(|e| e.into_inner());
                for (k, v) in &g.map {
                    if k.first() != Some(&TAG_APPLIED) {
                        push(k, v);
                    }
                }
            }
            for (k, v) in &contribs.map {
                push(k, v);
            }
            for seq in h.first_seq..h.next_seq {
                writes.push((layout::checkpoint_chunk_key(self.p, seq), None));
            }
            h.first_seq = h.next_seq;
            for c in chunks.into_iter().filter(|c| !c.is_empty()) {
                writes.push((layout::checkpoint_chunk_key(self.p, h.next_seq), Some(c)));
                h.next_seq += 1;
            }
            h.base_bytes = total;
            h.delta_bytes = 0;
        } else {
            for c in &self.delta.chunks {
                writes.push((
                    layout::checkpoint_chunk_key(self.p, h.next_seq),
                    Some(c.clone()),
                ));
                h.next_seq += 1;
            }
            h.delta_bytes = delta_total;
        }
        h.state = state.clone();
        writes.push((layout::checkpoint_header_key(self.p), Some(h.encode())));
        self.space.commit(writes)?;
        self.header = h;
        self.delta = Delta::default();
        self.last = Instant::now();
        Ok(())
    }
}

/// A consistent read of a version's state: every partition's [`PartState`] held still
/// (processors of the version wait to publish until it is dropped).
pub struct MemSnapshot<'a> {
    /// One per partition, in partition order.
    pub parts: Vec<std::sync::RwLockReadGuard<'a, PartState>>,
}

impl MemSnapshot<'_> {
    fn part_of(&self, key: &[u8]) -> Option<&PartState> {
        let p = u32::from_be_bytes(key.get(1..5)?.try_into().ok()?);
        self.parts.get(p as usize).map(|g| &**g)
    }

    /// Distinct row keys of the entries tagged `tag`, over all partitions (a key present in
    /// several partitions is one row). `row_key` maps an entry key (after tag · partition)
    /// to its row key.
    pub fn count_rows(&self, tag: u8, row_key: fn(&[u8]) -> &[u8]) -> u64 {
        let mut iters: Vec<_> = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, g)| {
                let pre = layout::prefix(tag, p as u32);
                let end = layout::prefix_end(&pre).unwrap_or_default();
                let mut it = g
                    .range(&pre, &end)
                    .map(|(k, _)| row_key(&k[5..]))
                    .peekable();
                let _ = it.peek();
                it
            })
            .collect();
        let mut rows = 0u64;
        loop {
            let Some(min) = iters.iter_mut().filter_map(|i| i.peek().copied()).min() else {
                return rows;
            };
            rows += 1;
            for it in &mut iters {
                while it.peek().is_some_and(|k| *k == min) {
                    it.next();
                }
            }
        }
    }
}

impl SpaceSnapshot for MemSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .part_of(key)
            .and_then(|p| p.get(key))
            .map(<[u8]>::to_vec))
    }

    /// Every range the read path asks for lies within one partition's keys (all keys start
    /// with tag · partition); it is served from the partition named in `from`.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let Some(part) = self.part_of(from) else {
            return Ok(());
        };
        let it = part.range(from, to);
        if reverse {
            for (k, v) in it.rev() {
                if !visit(k, v) {
                    break;
                }
            }
        } else {
            for (k, v) in it {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FjallStore, StateStore};

    #[test]
    fn delta_and_full_checkpoints_reload_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let space = store.open_space("v1").unwrap();
        let part = std::sync::RwLock::new(PartState::default());
        let mut contribs = Contribs::default();
        let config = ViewsConfig::default();
        let mut cp = Checkpointer::new(space.clone(), 2, Header::default(), &config);
        let mut state = ApplyState::default();
        for round in 0..3u64 {
            for i in 0..50u64 {
                let rk = layout::key(layout::TAG_ROW, 2, format!("r{i}").as_bytes());
                let ck = layout::key(TAG_CONTRIB, 2, format!("c{i}").as_bytes());
                let v = (i % (round + 2) != 0).then(|| format!("{round}:{i}").into_bytes());
                cp.delta.log(&rk, v.as_deref());
                cp.delta.log(&ck, v.as_deref());
                part.write().unwrap().write(rk, v.clone());
                contribs.write(ck, v);
            }
            state.applied = (round + 1) * 50;
            if round == 2 {
                // Force a full image on the last round.
                cp.compact_min = 0;
            }
            cp.write(&state, &part, &contribs).unwrap();
            let back = load(&*space, 2).unwrap();
            assert_eq!(back.header.state, state);
            let want = part.read().unwrap();
            let got: Vec<_> = back
                .part
                .map
                .iter()
                .filter(|(k, _)| k[0] != TAG_APPLIED)
                .collect();
            let want: Vec<_> = want.map.iter().collect();
            assert_eq!(got, want, "round {round}");
            let mut a: Vec<_> = back.contribs.map.iter().collect();
            let mut b: Vec<_> = contribs.map.iter().collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "round {round}");
            assert_eq!(back.contribs.bytes, contribs.bytes);
        }
        assert_eq!(
            cp.header.first_seq + 1,
            cp.header.next_seq,
            "one image left"
        );
        assert_eq!(load(&*space, 0).unwrap().header, Header::default());
    }
}
