//! Request ids and the per-stream deduplication index: exactly-once appends without
//! two-phase commit.
//!
//! A client gives every logical request an id (HTTP `Idempotency-Key`) and retries with the
//! same id after any failure. The id travels in the records themselves — headers
//! [`REQUEST_ID_HEADER`] and [`REQUEST_RECORDS_HEADER`] — so the index is a **derived view of
//! the log** (docs/DESIGN.md rule 2): it is rebuilt after any crash from a checkpoint file plus the
//! log after the checkpoint's offsets, and is never a second source of truth.
//!
//! ```text
//!  append_with_id(id, records)
//!     │ lock index ── share remembered? ── same digest → duplicate, the original positions
//!     │                  │                   other digest → RequestIdConflict, nothing appended
//!     │                  ├─ in flight? ──── wait until it settles, then look again
//!     │                  └─ unknown ─────── mark in flight, append
//!     ▼
//!  partition writer: write + fdatasync ── ack hook: remember (share → base offset), wake waiters
//! ```
//!
//! **Shares.** One id per request. A request's records in one partition — its *share*, which
//! is one batch — are remembered as one entry `(id, share number) → (partition, base
//! offset)`; record `i` of the share is at base offset + `i`. Only the share's first record
//! carries the headers (`request-id`, `request-records` = `s:k/n;t;d`, `traceparent`), so ids
//! cost nothing per record. A retry whose shares are all remembered is a duplicate; a retry of a
//! request that spanned partitions and was only partly written before a crash appends
//! exactly the missing shares.
//!
//! **Digest.** XXH3-64 per share over `n`, `k`, the share number, the partition, the digest
//! of the whole request (so matching the one share that survived a crash is not enough) and each
//! record's key, value and headers (length-prefixed, in order, without the reserved headers
//! and `traceparent`). The request digest covers everything the caller's records carry,
//! their `traceparent` headers and requested timestamps included; the `traceparent` passed
//! beside the records (from the retry's HTTP header) is left out, as it may differ between
//! retries. The same id with records that differ
//! anywhere — or land in another partition — is a conflict. Callers that accept JSON should
//! canonicalise it (RFC 8785) before appending, so reordered object keys are not a conflict.
//!
//! **Window.** An id is remembered until *either* limit of [`RequestIdWindow`] passes it:
//! `max_age_ms` after it was appended, by the log's clock (default 7 days; sliding per id, not per time
//! bucket; at 1 s granularity, rounded in favour of remembering) or once `max_ids` newer ids
//! are remembered (default 1,000,000 per stream). **A retry after the window appends again**,
//! exactly like Kafka's producer-id expiry or Stripe's 24-hour idempotency keys.
//!
//! **Memory.** The index is in memory: 40 bytes per remembered share in insertion order plus
//! an 8-byte slot in a hash table (50–56 bytes per id measured, table slack included), whatever the id's
//! length. `max_ids` bounds it (default ≈ 55 MB per stream). docs/DESIGN.md plans the index on
//! disk behind an in-memory filter so that long windows need not fit in RAM; that waits for
//! the embedded KV store chosen with the views (issue 5) — today the disk holds only the
//! checkpoint.
//!
//! **Hashes, and who may choose ids.** Ids are kept as a 128-bit SipHash-2-4 under the data
//! directory's secret key ([`crate::hash_key`]), so nobody without the key can compute ids
//! that collide in the index (hash flooding, or an id taken for another's); the index's
//! buckets use the same keyed hash. Bodies are compared by a 64-bit XXH3 digest, which is
//! stored in the records' headers: a client could craft a body colliding with *its own*
//! earlier request under the same id, which gains it nothing but its own duplicate.
//!
//! **Retention** deletes records, never remembered ids: a retry of another id is unaffected.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::format::{Record, StoredRecord};
use crate::hash_key::HashKey;
use crate::storage::{OpenMode, Storage};

/// Header holding a record's request id.
pub const REQUEST_ID_HEADER: &str = "request-id";
/// Header on the first record of a request's share in one partition: `s:k/n` — the `s`-th
/// share (0-based, in partition order) holds `k` of the request's `n` records (this record
/// and the next `k - 1` of the partition: a share is one batch).
pub const REQUEST_RECORDS_HEADER: &str = "request-records";
/// Header holding a W3C trace context, stored beside the request id.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Longest request id, bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// Whether a header name is reserved for the log (callers cannot set it on records directly).
pub fn is_reserved_header(name: &str) -> bool {
    name == REQUEST_ID_HEADER || name == REQUEST_RECORDS_HEADER
}

/// Refuses records that set a header reserved for request ids: only
/// [`Stream::append_with_id`](crate::Stream::append_with_id) may write them, or replay would mistake them for requests.
/// Every backend's plain appends make this check.
///
/// # Errors
/// [`LogError::ReservedHeader`] naming the first such record.
pub fn check_no_reserved_headers(records: &[Record]) -> Result<()> {
    for (index, record) in records.iter().enumerate() {
        if let Some((name, _)) = record.headers.iter().find(|(n, _)| is_reserved_header(n)) {
            return Err(LogError::ReservedHeader {
                index,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// A validated request id: 1 ..= 128 bytes of printable ASCII (`' '..='~'`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Validates a request id.
    ///
    /// # Errors
    /// [`LogError::InvalidRequestId`] naming why.
    pub fn new(id: impl Into<String>) -> Result<RequestId> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("must not be empty")
        } else if id.len() > REQUEST_ID_BYTES_MAX {
            Some("longer than 128 bytes")
        } else if !id.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            Some("only printable ASCII (' ' to '~') is allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LogError::InvalidRequestId {
                id: id.chars().take(160).collect(),
                reason,
            }),
            None => Ok(RequestId(id)),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a stream remembers request ids. Both limits apply; the first one reached
/// forgets an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestIdWindow {
    /// Most ids remembered per stream (default 1,000,000).
    pub max_ids: u64,
    /// Longest time an id is remembered after its record's timestamp, ms (default 7 days).
    pub max_age_ms: u64,
}

impl Default for RequestIdWindow {
    fn default() -> Self {
        RequestIdWindow {
            max_ids: 1_000_000,
            max_age_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// Counters of one stream's index.
#[derive(Debug, Default)]
pub struct DedupStats {
    /// Retries answered with the original positions (nothing appended).
    pub duplicates: AtomicU64,
    /// Requests refused with [`LogError::RequestIdConflict`].
    pub conflicts: AtomicU64,
    /// Ids forgotten because of the window.
    pub expired: AtomicU64,
}

/// The 128-bit key of share `index` of request `id`: keyed SipHash, so colliding ids
/// cannot be computed without the data directory's secret.
fn id_key(key: &HashKey, id: &str, index: u32) -> [u64; 2] {
    key.hash128(&[id.as_bytes(), &index.to_le_bytes()])
}

/// Digest of a request's share of records in one partition, for conflict detection: XXH3-64
/// over the request's record count `n`, the share's count `k`, and each record's key, value
/// and headers (without the reserved headers and `traceparent`, which may differ between
/// retries).
pub(crate) struct GroupDigest(xxhash_rust::xxh3::Xxh3);

impl GroupDigest {
    /// Starts the digest of share `ordinal` (in `partition`, `k` of `n` records). The
    /// partition is part of it: the same id with records that land elsewhere is a conflict.
    /// `request_digest` (see [`request_digest`]) ties every share to the whole request: a
    /// retry that matches one share but differs elsewhere is a conflict even when only that
    /// share reached the log before a crash.
    pub(crate) fn new(n: u32, k: u32, ordinal: u32, partition: u32, request_digest: u64) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&n.to_le_bytes());
        h.update(&k.to_le_bytes());
        h.update(&ordinal.to_le_bytes());
        h.update(&partition.to_le_bytes());
        h.update(&request_digest.to_le_bytes());
        GroupDigest(h)
    }

    pub(crate) fn absorb(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
    ) {
        let h = &mut self.0;
        match key {
            Some(k) => {
                h.update(&[1]);
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(k);
            }
            None => h.update(&[0]),
        }
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
        for (name, v) in headers {
            if is_reserved_header(name) || name == TRACEPARENT_HEADER {
                continue;
            }
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
    }

    /// What only [`request_digest`] covers: the timestamp asked for and `traceparent`
    /// headers set on the record. Nothing for a record with neither.
    fn absorb_request_fields(&mut self, timestamp_ms: Option<i64>, headers: &[(String, Vec<u8>)]) {
        let h = &mut self.0;
        if let Some(ts) = timestamp_ms {
            h.update(b"\0timestamp_ms");
            h.update(&ts.to_le_bytes());
        }
        for (name, v) in headers.iter().filter(|(n, _)| n == TRACEPARENT_HEADER) {
            h.update(b"\0header");
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.digest()
    }
}

/// Start of the second-resolution clock of entries: 2020-01-01T00:00:00Z, ms.
const EPOCH_MS: i64 = 1_577_836_800_000;

fn to_entry_secs(ts_ms: i64) -> u32 {
    u32::try_from(((ts_ms - EPOCH_MS) / 1000).max(0)).unwrap_or(u32::MAX)
}

/// One remembered record. 40 bytes: the layout the memory budget is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: [u64; 2],
    digest: u64,
    offset: u64,
    partition: u32,
    /// Seconds since [`EPOCH_MS`] (floor of the record timestamp).
    ts_s: u32,
}

const ENTRY_BYTES: usize = 40;
const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_BYTES);

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key[0].to_le_bytes());
        out.extend_from_slice(&self.key[1].to_le_bytes());
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.ts_s.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Entry {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(a)
        };
        Entry {
            key: [u64_at(0), u64_at(8)],
            digest: u64_at(16),
            offset: u64_at(24),
            partition: u32_at(32),
            ts_s: u32_at(36),
        }
    }
    /// Whether the window's age limit has passed this entry at `now_ms`. The entry's second
    /// is rounded up, so an id is never forgotten early.
    fn expired(&self, now_ms: i64, max_age_ms: u64) -> bool {
        let newest_ms = EPOCH_MS + (i64::from(self.ts_s) + 1) * 1000;
        now_ms.saturating_sub(newest_ms) > i64::try_from(max_age_ms).unwrap_or(i64::MAX)
    }
}

/// Entries in insertion order, in fixed-size chunks so that growth never doubles memory.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Vec<Entry>>,
    /// Sequence number of the first entry (sequence numbers are never reused).
    head_seq: u64,
    /// Entries popped from the first chunk.
    head_skip: usize,
    len: u64,
}

const CHUNK_ENTRIES: usize = 4096;

impl Queue {
    fn push(&mut self, e: Entry) -> u64 {
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK_ENTRIES) {
            self.chunks.push_back(Vec::with_capacity(CHUNK_ENTRIES));
        }
        if let Some(c) = self.chunks.back_mut() {
            c.push(e);
        }
        self.len += 1;
        self.head_seq + self.len - 1
    }
    fn get(&self, seq: u64) -> Option<&Entry> {
        let rel = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        if rel as u64 >= self.len {
            return None;
        }
        let at = rel + self.head_skip;
        self.chunks.get(at / CHUNK_ENTRIES)?.get(at % CHUNK_ENTRIES)
    }
    fn front(&self) -> Option<&Entry> {
        self.get(self.head_seq)
    }
    fn pop(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head_seq += 1;
        self.head_skip += 1;
        if self.head_skip == CHUNK_ENTRIES || self.len == 0 {
            self.chunks.pop_front();
            self.head_skip = 0;
        }
    }
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        (self.head_seq..self.head_seq + self.len).filter_map(|s| self.get(s))
    }
    fn bytes(&self) -> u64 {
        (self.chunks.len() * CHUNK_ENTRIES * ENTRY_BYTES) as u64
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct State {
    queue: Queue,
    /// Hash of the entry key → sequence number in `queue`.
    table: hashbrown::HashTable<u64>,
    /// Records in flight (claimed, not yet acknowledged or failed) → their digest.
    pending: HashMap<[u64; 2], u64>,
    /// Callers waiting in [`DedupIndex::lookup_or_claim`] for an in-flight record to settle.
    waiters: usize,
}

impl State {
    fn find(&self, key: [u64; 2]) -> Option<&Entry> {
        let queue = &self.queue;
        self.table
            .find(key[0], |seq| queue.get(*seq).is_some_and(|e| e.key == key))
            .and_then(|seq| queue.get(*seq))
    }

    fn insert(&mut self, e: Entry) {
        if self.find(e.key).is_some() {
            return; // replay after a checkpoint can meet an entry twice
        }
        let seq = self.queue.push(e);
        let queue = &self.queue;
        self.table
            .insert_unique(e.key[0], seq, |s| queue.get(*s).map_or(0, |e| e.key[0]));
    }

    fn pop_front(&mut self) {
        if let Some(front) = self.queue.front().copied() {
            let seq = self.queue.head_seq;
            if let Ok(slot) = self.table.find_entry(front.key[0], |s| *s == seq) {
                slot.remove();
            }
            self.queue.pop();
        }
    }
}

/// What a lookup found for one record of a request.
pub(crate) enum Lookup {
    /// Remembered at this position.
    Known(u32, u64),
    /// Not remembered and not in flight: now marked in flight by this caller.
    Claimed,
}

/// The request-id index of one stream. See the module docs.
#[derive(Debug)]
pub struct DedupIndex {
    window: RequestIdWindow,
    state: Mutex<State>,
    stats: DedupStats,
    /// Signalled when in-flight records settle and someone waits ([`State::waiters`]).
    settled: Condvar,
    checkpoint_path: PathBuf,
    /// Entries added since the last checkpoint.
    dirty: AtomicU64,
    /// The data directory's hash key: share keys are hashed under it.
    hash_key: HashKey,
}

/// One record of an idempotent request, as the index sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub key: [u64; 2],
    pub digest: u64,
}

impl DedupIndex {
    /// An empty index whose checkpoints go to `checkpoint_path`, share keys hashed under
    /// `hash_key` (a checkpoint is loaded only by an index with the same key).
    pub fn new(window: RequestIdWindow, checkpoint_path: PathBuf, hash_key: HashKey) -> Self {
        DedupIndex {
            window,
            state: Mutex::new(State::default()),
            stats: DedupStats::default(),
            settled: Condvar::new(),
            checkpoint_path,
            dirty: AtomicU64::new(0),
            hash_key,
        }
    }

    /// The key share keys are hashed under.
    pub(crate) fn hash_key(&self) -> &HashKey {
        &self.hash_key
    }

    /// Counters.
    pub fn stats(&self) -> &DedupStats {
        &self.stats
    }

    /// Ids remembered now.
    pub fn len(&self) -> u64 {
        lock(&self.state).queue.len
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the index holds (entries, hash table, in-flight map).
    pub fn memory_bytes(&self) -> u64 {
        let state = lock(&self.state);
        state.queue.bytes()
            + (state.table.capacity() * (std::mem::size_of::<u64>() + 1)) as u64
            + (state.pending.capacity() * 25) as u64
    }

    /// Looks up every record of a request under one lock. Waits (outside the lock) for
    /// records of the same request that are in flight, then looks again.
    ///
    /// Returns one [`Lookup`] per claim; `Claimed` ones must be completed with
    /// [`Self::complete`] (or released with [`Self::release`]).
    pub(crate) fn lookup_or_claim(
        &self,
        request_id: &RequestId,
        claims: &[Claim],
        now_ms: i64,
    ) -> Result<Vec<Lookup>> {
        let mut state = lock(&self.state);
        'again: loop {
            self.expire(&mut state, now_ms);
            let mut found = Vec::with_capacity(claims.len());
            for (index, claim) in claims.iter().enumerate() {
                if let Some(e) = state.find(claim.key) {
                    if e.digest != claim.digest {
                        return Err(self.conflict(request_id, index));
                    }
                    found.push(Some((e.partition, e.offset)));
                } else if let Some(&digest) = state.pending.get(&claim.key) {
                    if digest != claim.digest {
                        return Err(self.conflict(request_id, index));
                    }
                    // The same request is in flight: wait until it settles, then look again
                    // (remembered → duplicate; released after a failure → ours to append).
                    state.waiters += 1;
                    state = self.settled.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.waiters -= 1;
                    continue 'again;
                } else {
                    found.push(None);
                }
            }
            let mut out = Vec::with_capacity(claims.len());
            for (claim, f) in claims.iter().zip(found) {
                match f {
                    Some((p, o)) => out.push(Lookup::Known(p, o)),
                    None => {
                        state.pending.insert(claim.key, claim.digest);
                        out.push(Lookup::Claimed);
                    }
                }
            }
            return Ok(out);
        }
    }

    /// An index kept only in memory and never checkpointed: a cluster node's, derived from the
    /// replicated log with [`Self::follow`] and completed with [`Self::remember`].
    pub fn in_memory(window: RequestIdWindow, hash_key: HashKey) -> DedupIndex {
        DedupIndex::new(window, PathBuf::new(), hash_key)
    }

    /// Where each share of a request is remembered (`Some(base offset)`), claiming nothing:
    /// for a backend whose engine itself answers a concurrent second attempt as a duplicate
    /// (JetStream's message ids).
    ///
    /// # Errors
    /// [`LogError::RequestIdConflict`] when a share is remembered with another digest, naming
    /// the share's first record.
    pub fn lookup(
        &self,
        request_id: &RequestId,
        shares: &[RequestShare],
        now_ms: i64,
    ) -> Result<Vec<Option<u64>>> {
        let mut state = lock(&self.state);
        self.expire(&mut state, now_ms);
        let mut out = Vec::with_capacity(shares.len());
        for (index, share) in shares.iter().enumerate() {
            match state.find(share.claim.key) {
                // The digest covers the partition: a match is at the same place.
                Some(e) if e.digest == share.claim.digest => out.push(Some(e.offset)),
                Some(_) => {
                    let conflict = self.conflict(request_id, index);
                    return Err(name_conflicting_record(conflict, shares));
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }

    /// Remembers a share of a request just appended at `base_offset` (`appended_ms`: the
    /// log's clock when it was stamped, as given to [`prepare_request`]).
    pub fn remember(&self, share: &RequestShare, base_offset: u64, appended_ms: i64, now_ms: i64) {
        self.complete(
            &[(share.claim, share.partition, base_offset, appended_ms)],
            now_ms,
        );
    }

    /// Remembers the request ids of records read from `partition` in offset order;
    /// `cursor` carries a share whose records span two reads. Records seen before are
    /// ignored, so reading a range twice is harmless.
    pub fn follow(
        &self,
        partition: u32,
        records: &[StoredRecord],
        cursor: &mut ReplayCursor,
        now_ms: i64,
    ) {
        let mut found = Vec::new();
        self.replay(partition, records, cursor, &mut found);
        let mut state = lock(&self.state);
        for e in found {
            state.insert(e.0);
        }
        self.expire(&mut state, now_ms);
    }

    /// Checks that `stored` — one batch read back from `shares[index]`'s partition, which the
    /// engine named as that share's original — holds that share (same id, share number and
    /// digest): how a backend tells a retry from another request under the same id.
    ///
    /// # Errors
    /// [`LogError::RequestIdConflict`] naming the share's first record.
    pub fn check_stored(
        &self,
        request_id: &RequestId,
        shares: &[RequestShare],
        index: usize,
        stored: &[StoredRecord],
    ) -> Result<()> {
        let Some(share) = shares.get(index) else {
            return Err(self.conflict(request_id, index));
        };
        let mut found = Vec::new();
        self.replay(
            share.partition,
            stored,
            &mut ReplayCursor::default(),
            &mut found,
        );
        let claim = share.claim;
        if found
            .iter()
            .any(|e| e.0.key == claim.key && e.0.digest == claim.digest)
        {
            return Ok(());
        }
        let conflict = self.conflict(request_id, index);
        Err(name_conflicting_record(conflict, shares))
    }

    /// The conflict of a request whose id another request holds, found by a backend outside
    /// the index (e.g. an engine's claim on the id), counted and named by share `index`'s
    /// first record, as the index names its own.
    pub fn refuse(
        &self,
        request_id: &RequestId,
        shares: &[RequestShare],
        index: usize,
    ) -> LogError {
        name_conflicting_record(self.conflict(request_id, index), shares)
    }

    /// Counts a request answered entirely from the index, by a backend using
    /// [`Self::lookup`].
    pub fn count_duplicate(&self) {
        self.note_duplicate();
    }

    fn conflict(&self, request_id: &RequestId, index: usize) -> LogError {
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        LogError::RequestIdConflict {
            request_id: request_id.to_string(),
            index,
        }
    }

    /// Entries added since the last checkpoint.
    pub fn dirty(&self) -> u64 {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Counts a request answered entirely from the index.
    pub(crate) fn note_duplicate(&self) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that claimed records became durable at these positions (called by the
    /// partition writer before it advances the acknowledged end), and wakes waiters.
    pub(crate) fn complete(&self, done: &[(Claim, u32, u64, i64)], now_ms: i64) {
        let mut state = lock(&self.state);
        self.dirty.fetch_add(done.len() as u64, Ordering::Relaxed);
        for &(claim, partition, offset, ts_ms) in done {
            state.insert(Entry {
                key: claim.key,
                digest: claim.digest,
                offset,
                partition,
                ts_s: to_entry_secs(ts_ms),
            });
            state.pending.remove(&claim.key);
        }
        self.expire(&mut state, now_ms);
        if state.waiters > 0 {
            self.settled.notify_all();
        }
    }

    /// Releases claims whose append failed (its outcome is unknown: the partition is
    /// poisoned until reopened, when replay finds the record if it reached the disk). A
    /// waiting retry then claims the records itself.
    pub(crate) fn release(&self, claims: &[Claim]) {
        let mut state = lock(&self.state);
        for claim in claims {
            state.pending.remove(&claim.key);
        }
        if state.waiters > 0 {
            self.settled.notify_all();
        }
    }

    fn expire(&self, state: &mut State, now_ms: i64) {
        let mut expired = 0;
        while let Some(front) = state.queue.front() {
            let too_many = state.queue.len > self.window.max_ids;
            if !too_many && !front.expired(now_ms, self.window.max_age_ms) {
                break;
            }
            state.pop_front();
            expired += 1;
        }
        if expired > 0 {
            self.stats.expired.fetch_add(expired, Ordering::Relaxed);
        }
    }

    /// Adds the request ids found in records read from the log (recovery).
    pub(crate) fn replay(
        &self,
        partition: u32,
        records: &[StoredRecord],
        cursor: &mut ReplayCursor,
        out: &mut Vec<ReplayEntry>,
    ) {
        for r in records {
            let id =
                header(&r.headers, REQUEST_ID_HEADER).and_then(|v| std::str::from_utf8(v).ok());
            if let Some(id) = id {
                // A request's share starts here (one batch; an unfinished share before it
                // cannot exist, since a batch is whole or absent).
                let Some(share) = header(&r.headers, REQUEST_RECORDS_HEADER)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(ShareHeader::parse)
                else {
                    tracing::warn!(
                        partition,
                        offset = r.offset,
                        "a request-id record without a valid request-records header; not remembered"
                    );
                    cursor.open = None;
                    continue;
                };
                let ShareHeader {
                    ordinal,
                    k,
                    n,
                    appended_ms,
                    request_digest,
                } = share;
                let mut digest = GroupDigest::new(n, k, ordinal, partition, request_digest);
                digest.absorb(r.key.as_deref(), &r.value, &r.headers);
                cursor.open = Some(OpenShare {
                    key: id_key(&self.hash_key, id, ordinal),
                    digest,
                    left: k.saturating_sub(1),
                    base: r.offset,
                    // The log's clock at append, recorded in the header: never the record's
                    // timestamp, which a client may choose.
                    ts_s: to_entry_secs(appended_ms),
                });
            } else if let Some(open) = cursor.open.as_mut()
                && open.left > 0
            {
                open.digest.absorb(r.key.as_deref(), &r.value, &r.headers);
                open.left -= 1;
            }
            if let Some(open) = cursor.open.take_if(|o| o.left == 0) {
                out.push(ReplayEntry(Entry {
                    key: open.key,
                    digest: open.digest.finish(),
                    offset: open.base,
                    partition,
                    ts_s: open.ts_s,
                }));
            }
        }
    }

    /// Bounds the memory of a replay: once more than twice the window's `max_ids` entries
    /// were found, keeps only the newest `max_ids` (the older ones would be forgotten at once).
    pub(crate) fn trim_replay(&self, found: &mut Vec<ReplayEntry>) {
        let max = usize::try_from(self.window.max_ids).unwrap_or(usize::MAX);
        if found.len() > max.saturating_mul(2) {
            found.sort_by_key(|e| std::cmp::Reverse((e.0.ts_s, e.0.partition, e.0.offset)));
            found.truncate(max);
        }
    }

    /// Inserts replayed entries (sorted by timestamp so the window expires them in order).
    pub(crate) fn finish_replay(&self, mut entries: Vec<ReplayEntry>, now_ms: i64) {
        entries.sort_by_key(|e| (e.0.ts_s, e.0.partition, e.0.offset));
        let mut state = lock(&self.state);
        for e in entries {
            state.insert(e.0);
        }
        self.expire(&mut state, now_ms);
    }

    /// Writes a checkpoint: every remembered entry and, per partition, the offset up to
    /// which the log has been applied plus a fingerprint of the record just below it.
    ///
    /// `applied` runs under the index lock and must return each partition's acknowledged end
    /// offset: the writer runs ack hooks before advancing that offset, so every request id
    /// below it is already here. `fingerprint_at(partition, offset)` (run outside the lock)
    /// reads the record at `offset`; see [`record_fingerprint`].
    ///
    /// Written to a temporary file and renamed; not fsynced — a lost, torn or stale
    /// checkpoint only means a longer replay (it carries a CRC32C and the fingerprints).
    ///
    /// # Errors
    /// [`LogError::Io`] when the file cannot be written or renamed.
    pub fn write_checkpoint(
        &self,
        storage: &dyn Storage,
        applied: impl FnOnce() -> Vec<u64>,
        fingerprint_at: impl Fn(usize, u64) -> Option<u64>,
    ) -> Result<()> {
        let (applied, entries, dirty) = {
            let state = lock(&self.state);
            let dirty = self.dirty.load(Ordering::Relaxed);
            // Copy under the lock (a memcpy), encode outside it.
            let entries: Vec<Entry> = state.queue.iter().copied().collect();
            (applied(), entries, dirty)
        };
        let mut bytes =
            Vec::with_capacity(32 + applied.len() * 16 + entries.len() * ENTRY_BYTES + 4);
        bytes.extend_from_slice(&CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        bytes.extend_from_slice(
            &u32::try_from(applied.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&self.hash_key.check_value().to_le_bytes());
        for (p, &a) in applied.iter().enumerate() {
            let fingerprint = match a.checked_sub(1) {
                Some(last) => fingerprint_at(p, last).unwrap_or(0),
                None => 0,
            };
            bytes.extend_from_slice(&a.to_le_bytes());
            bytes.extend_from_slice(&fingerprint.to_le_bytes());
        }
        for e in &entries {
            e.encode(&mut bytes);
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = &self.checkpoint_path;
        let tmp = path.with_extension("tmp");
        let io = |op, p: &Path| {
            let p = p.to_path_buf();
            move |e| LogError::io(op, p, e)
        };
        let _ = storage.remove_file(&tmp);
        let file = storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(io("create", &tmp))?;
        file.write_at(&bytes, 0).map_err(io("write", &tmp))?;
        storage.rename(&tmp, path).map_err(io("rename", path))?;
        self.dirty.fetch_sub(dirty, Ordering::Relaxed);
        Ok(())
    }

    /// Loads the checkpoint if it is whole and still describes this log; returns the applied
    /// offset per partition (zeros — "replay everything retained" — otherwise).
    ///
    /// A checkpoint is stale when, for some partition, the log now ends before its applied
    /// offset, or the record just below that offset is not the one it fingerprinted: the
    /// log lost an unsynced tail (weak fsync policy, or a damaged last batch truncated as
    /// torn) and may since have grown back past that offset with other records. Its ids
    /// could name records that no longer exist, so it is discarded.
    pub(crate) fn load_checkpoint(
        &self,
        storage: &dyn Storage,
        end_offsets: &[u64],
        fingerprint_at: impl Fn(usize, u64) -> Option<u64>,
    ) -> Vec<u64> {
        let partitions = u32::try_from(end_offsets.len()).unwrap_or(u32::MAX);
        let read = self.read_checkpoint(storage, partitions);
        let found = read.is_some();
        let checkpoint = read.filter(|c| {
            c.applied
                .iter()
                .zip(end_offsets)
                .enumerate()
                .all(|(p, (&(a, fp), &end))| {
                    a <= end && (a == 0 || fingerprint_at(p, a - 1) == Some(fp))
                })
        });
        match checkpoint {
            Some(c) => self.install(c),
            None => {
                if found {
                    tracing::warn!(path = %self.checkpoint_path.display(), "request-id checkpoint does not match the log; replaying the log");
                }
                vec![0; end_offsets.len()]
            }
        }
    }

    /// Reads this index's checkpoint of a stream of `partitions`, for the caller to check
    /// against the log ([`Checkpoint::applied`]) and then [`Self::install`]; `None` when there
    /// is none, or it is damaged, of another version, partition count or hash key (logged:
    /// the log is then replayed from the start).
    pub fn read_checkpoint(&self, storage: &dyn Storage, partitions: u32) -> Option<Checkpoint> {
        let bytes = crate::segment::read_whole(storage, &self.checkpoint_path).ok()?;
        let decoded = decode_checkpoint(&bytes, partitions, self.hash_key.check_value());
        if decoded.is_none() {
            tracing::warn!(path = %self.checkpoint_path.display(), "request-id checkpoint is damaged or does not match the log; replaying the log");
        }
        decoded.map(|(applied, entries)| Checkpoint { applied, entries })
    }

    /// Remembers a checkpoint's entries; returns its applied offset per partition (replay the
    /// log from there).
    pub fn install(&self, checkpoint: Checkpoint) -> Vec<u64> {
        let mut state = lock(&self.state);
        for e in checkpoint.entries {
            state.insert(e);
        }
        checkpoint.applied.into_iter().map(|(a, _)| a).collect()
    }
}

/// A request-id checkpoint read back ([`DedupIndex::read_checkpoint`]), not yet installed.
#[derive(Debug)]
pub struct Checkpoint {
    applied: AppliedEnds,
    entries: Vec<Entry>,
}

impl Checkpoint {
    /// Per partition: the offset up to which the log was applied, and the
    /// [`record_fingerprint`] of the record just below it (0 when the offset is 0). A caller
    /// installs the checkpoint only if the log still ends at or after each offset and holds
    /// that record.
    pub fn applied(&self) -> &[(u64, u64)] {
        &self.applied
    }
}

/// A fingerprint of a record (XXH3-64 of its offset, timestamp, key, value and headers),
/// stored in checkpoints to recognise the log they were taken from.
pub fn record_fingerprint(r: &StoredRecord) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&r.offset.to_le_bytes());
    h.update(&r.timestamp_ms.to_le_bytes());
    match &r.key {
        Some(k) => {
            h.update(&[1]);
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k);
        }
        None => h.update(&[0]),
    }
    h.update(&(r.value.len() as u64).to_le_bytes());
    h.update(&r.value);
    for (name, v) in &r.headers {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.digest()
}

/// Parses `s:k/n` of [`REQUEST_RECORDS_HEADER`].
/// The value of [`REQUEST_RECORDS_HEADER`]: `s:k/n;t;d` — share `s` holds `k` of the
/// request's `n` records, appended at `t` (log clock, ms), request digest `d` (16 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShareHeader {
    ordinal: u32,
    k: u32,
    n: u32,
    appended_ms: i64,
    request_digest: u64,
}

impl ShareHeader {
    fn encode(&self) -> String {
        let ShareHeader {
            ordinal,
            k,
            n,
            appended_ms,
            request_digest,
        } = self;
        format!("{ordinal}:{k}/{n};{appended_ms};{request_digest:016x}")
    }

    fn parse(v: &str) -> Option<ShareHeader> {
        let mut fields = v.split(';');
        let (s, kn) = fields.next()?.split_once(':')?;
        let (k, n) = kn.split_once('/')?;
        let appended_ms = fields.next()?.parse().ok()?;
        let request_digest = u64::from_str_radix(fields.next()?, 16).ok()?;
        if fields.next().is_some() {
            return None;
        }
        let (ordinal, k, n): (u32, u32, u32) = (s.parse().ok()?, k.parse().ok()?, n.parse().ok()?);
        (k >= 1 && k <= n && ordinal < n).then_some(ShareHeader {
            ordinal,
            k,
            n,
            appended_ms,
            request_digest,
        })
    }
}

/// Digest of a whole request (all `n` records in the caller's order), stored in every share's
/// header and folded into every share's digest. It covers everything the caller's records
/// carry: key, value, headers — a `traceparent` header set on a record included — and the
/// timestamp asked for. (A share's own digest must be recomputable from stored records,
/// which cannot tell a caller's `traceparent` from the one stamped from the request, nor a
/// timestamp asked for from the log's clock; the request digest, recorded by the first
/// attempt, carries those.) A record with neither adds nothing, so requests without them
/// digest as they did before timestamps and traceparents were covered.
pub(crate) fn request_digest(records: &[Record]) -> u64 {
    let n = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let mut d = GroupDigest::new(n, n, u32::MAX, u32::MAX, 0);
    for r in records {
        d.absorb(r.key.as_deref(), &r.value, &r.headers);
        d.absorb_request_fields(r.timestamp_ms, &r.headers);
    }
    d.finish()
}

/// Replay state of one partition: a request's share whose records span read chunks.
#[derive(Default)]
pub struct ReplayCursor {
    open: Option<OpenShare>,
}

impl ReplayCursor {
    /// Whether a share was begun and not finished: the next read continues it (a checkpoint
    /// taken now could not say where it starts).
    pub fn in_share(&self) -> bool {
        self.open.is_some()
    }
}

impl std::fmt::Debug for ReplayCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCursor")
            .field("in_share", &self.open.is_some())
            .finish()
    }
}

struct OpenShare {
    key: [u64; 2],
    digest: GroupDigest,
    /// Records of the share still to read.
    left: u32,
    base: u64,
    ts_s: u32,
}

/// An entry found by replay, not yet inserted.
#[derive(Debug)]
pub(crate) struct ReplayEntry(Entry);

const CHECKPOINT_MAGIC: [u8; 8] = *b"LBK-RID\n";
/// 2: share keys are keyed SipHash, and the header holds the key's check value (a version 1
/// checkpoint, of unkeyed XXH3 keys, is not loaded: the log is replayed instead).
const CHECKPOINT_VERSION: u32 = 2;

/// Per partition: the end offset a checkpoint covered and the fingerprint of the record below it.
type AppliedEnds = Vec<(u64, u64)>;

fn decode_checkpoint(
    b: &[u8],
    partitions: u32,
    key_check: u64,
) -> Option<(AppliedEnds, Vec<Entry>)> {
    if b.len() < 36 || b[0..8] != CHECKPOINT_MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u32_at = |i: usize| Some(u32::from_le_bytes(body.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(body.get(i..i + 8)?.try_into().ok()?));
    if u32_at(8)? != CHECKPOINT_VERSION || u32_at(12)? != partitions {
        return None;
    }
    let count = usize::try_from(u64_at(16)?).ok()?;
    if u64_at(24)? != key_check {
        return None;
    }
    let mut at = 32;
    let mut applied = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        applied.push((u64_at(at)?, u64_at(at + 8)?));
        at += 16;
    }
    if body.len().checked_sub(at)? != count.checked_mul(ENTRY_BYTES)? {
        return None;
    }
    let entries = body[at..]
        .chunks_exact(ENTRY_BYTES)
        .map(Entry::decode)
        .collect();
    Some((applied, entries))
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Checks a W3C trace context header value (<https://www.w3.org/TR/trace-context/>, section
/// "traceparent Header"): `VERSION-TRACEID-PARENTID-FLAGS`, each field lowercase hex of 2,
/// 32, 16 and 2 digits; version `ff` is invalid; trace id and parent id must not be all
/// zeros. Version `00` is exactly 55 characters; a later version may carry more fields after
/// a `-` (as the specification asks a version-00 parser to accept), up to 256 characters.
///
/// # Errors
/// [`LogError::InvalidTraceparent`] naming the first field at fault.
pub fn validate_traceparent(value: &str) -> Result<()> {
    /// Longest accepted value (the version-00 form is 55).
    const TRACEPARENT_BYTES_MAX: usize = 256;
    let refuse = |reason: &'static str| {
        let mut shown: String = value.chars().take(64).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        Err(LogError::InvalidTraceparent {
            value: shown,
            reason,
        })
    };
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return refuse("too short: the version-00 form is 55 characters");
    }
    if bytes.len() > TRACEPARENT_BYTES_MAX {
        return refuse("longer than 256 characters");
    }
    if !value.is_ascii() {
        return refuse("not ASCII");
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return refuse("fields must be separated by '-' after 2, 32 and 16 hex digits");
    }
    let (version, trace_id, parent_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    if !lower_hex(version) {
        return refuse("version is not 2 lowercase hex digits");
    }
    if version == "ff" {
        return refuse("version ff is invalid");
    }
    if !lower_hex(trace_id) {
        return refuse("trace id is not 32 lowercase hex digits");
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return refuse("trace id is all zeros");
    }
    if !lower_hex(parent_id) {
        return refuse("parent id is not 16 lowercase hex digits");
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return refuse("parent id is all zeros");
    }
    if !lower_hex(flags) {
        return refuse("flags are not 2 lowercase hex digits");
    }
    if bytes.len() > 55 && (version == "00" || bytes[55] != b'-') {
        return refuse("unexpected characters after the flags");
    }
    Ok(())
}

/// One partition's share of a request with an id, stamped and ready to append as one batch
/// by any backend ([`prepare_request`]).
#[derive(Debug)]
pub struct RequestShare {
    /// The partition it goes to.
    pub partition: u32,
    /// Its records in the caller's order, the first one stamped with the request's headers.
    pub records: Vec<Record>,
    /// Their indices in the whole request.
    pub indices: Vec<usize>,
    /// Its number in the request (0-based, in partition order).
    pub ordinal: u32,
    pub(crate) claim: Claim,
}

impl RequestShare {
    /// Its records as one batch stamped with `appended_ms` (the same clock reading as given
    /// to [`prepare_request`]).
    ///
    /// # Errors
    /// The limits of [`crate::format::encode_batch`], naming the record by its index in
    /// the whole request.
    pub fn encode(&self, appended_ms: i64) -> Result<crate::format::EncodedBatch> {
        crate::format::encode_batch(&self.records, appended_ms)
            .map_err(|e| LogError::remap_record_index(e, &self.indices))
    }

    /// The share's digest (module docs, "Digest"): the same for every retry of the request,
    /// different for any other request under its id — it covers the whole request's digest —,
    /// so share 0's digest stands for the request.
    pub fn digest(&self) -> u64 {
        self.claim.digest
    }
}

/// Splits a request with an id into its shares, for any backend: keyed records go to their
/// key's partition, unkeyed ones to the partition of the request id's hash (so a retry —
/// after an unknown outcome, or on another node — reaches the partition the original may
/// have), each share stamped with the headers replay and the index read back
/// ([`REQUEST_ID_HEADER`], [`REQUEST_RECORDS_HEADER`], `traceparent` when given) and carrying
/// its digest. `appended_ms` is the log's clock, recorded in the headers for the window.
///
/// # Errors
/// [`LogError::EmptyBatch`]; [`LogError::InvalidTraceparent`]; [`LogError::ReservedHeader`].
/// Nothing is remembered or appended.
pub fn prepare_request(
    hash_key: &HashKey,
    request_id: &RequestId,
    traceparent: Option<&str>,
    records: Vec<Record>,
    partitions: u32,
    appended_ms: i64,
) -> Result<Vec<RequestShare>> {
    if records.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    if let Some(tp) = traceparent {
        validate_traceparent(tp)?;
    }
    check_no_reserved_headers(&records)?;
    let n = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let unkeyed = crate::routing::partition_for_key(request_id.as_str().as_bytes(), partitions);
    let digest = request_digest(&records);
    let groups = crate::routing::group_by_partition(records, partitions, unkeyed);
    let mut shares = Vec::with_capacity(groups.len());
    for (ordinal, (partition, mut records, indices)) in groups.into_iter().enumerate() {
        let ordinal = u32::try_from(ordinal).unwrap_or(u32::MAX);
        let claim = stamp_share(
            hash_key,
            request_id,
            traceparent,
            n,
            ordinal,
            partition,
            appended_ms,
            digest,
            &mut records,
        );
        shares.push(RequestShare {
            partition,
            records,
            indices,
            ordinal,
            claim,
        });
    }
    Ok(shares)
}

/// A conflict found on share `index` of `shares`, named by that share's first record in the
/// caller's order (other errors unchanged).
pub(crate) fn name_conflicting_record(e: LogError, shares: &[RequestShare]) -> LogError {
    match e {
        LogError::RequestIdConflict { request_id, index } => LogError::RequestIdConflict {
            request_id,
            index: shares
                .get(index)
                .and_then(|s| s.indices.first())
                .copied()
                .unwrap_or(index),
        },
        other => other,
    }
}

/// Stamps share `ordinal` of a request (`records`, `n` in the whole request, whose digest is
/// `request_digest`, appended at `appended_ms` by the log's clock): its first record gets the
/// headers `request-id`, `request-records` = `s:k/n;t;d` and, when given, `traceparent`.
/// Returns the share's claim: key `(request id, ordinal)`, digest of the share. The caller
/// has checked reserved headers and the traceparent.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is a separate part of the share's headers and digest; one caller"
)]
fn stamp_share(
    hash_key: &HashKey,
    request_id: &RequestId,
    traceparent: Option<&str>,
    n: u32,
    ordinal: u32,
    partition: u32,
    appended_ms: i64,
    request_digest: u64,
    records: &mut [Record],
) -> Claim {
    let k = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let mut digest = GroupDigest::new(n, k, ordinal, partition, request_digest);
    for r in records.iter() {
        digest.absorb(r.key.as_deref(), &r.value, &r.headers);
    }
    if let Some(first) = records.first_mut() {
        first.headers.push((
            REQUEST_ID_HEADER.to_string(),
            request_id.as_str().as_bytes().to_vec(),
        ));
        first.headers.push((
            REQUEST_RECORDS_HEADER.to_string(),
            ShareHeader {
                ordinal,
                k,
                n,
                appended_ms,
                request_digest,
            }
            .encode()
            .into_bytes(),
        ));
        if let Some(tp) = traceparent
            && !first.headers.iter().any(|(n, _)| n == TRACEPARENT_HEADER)
        {
            first
                .headers
                .push((TRACEPARENT_HEADER.to_string(), tp.as_bytes().to_vec()));
        }
    }
    Claim {
        key: id_key(hash_key, request_id.as_str(), ordinal),
        digest: digest.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: HashKey = HashKey::from_bytes([7; 16]);

    fn record_digest(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
        n: u32,
    ) -> u64 {
        let mut d = GroupDigest::new(n, 1, 0, 0, 0);
        d.absorb(key, value, headers);
        d.finish()
    }

    #[test]
    fn request_ids_are_validated() {
        assert!(RequestId::new("order-7/retry ok~").is_ok());
        assert!(RequestId::new("x".repeat(128)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(129),
            "tab\there".into(),
            "é".into(),
        ] {
            assert!(
                matches!(
                    RequestId::new(bad.clone()),
                    Err(LogError::InvalidRequestId { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn traceparents_are_validated_as_w3c_trace_context() {
        const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for good in [
            GOOD,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            // A later version may append fields after a '-'.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
        ] {
            assert!(validate_traceparent(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "too short"),
            ("garbage", "too short"),
            ("00-trace-1", "too short"),
            (&GOOD.replacen("00-", "ff-", 1), "version ff"),
            (&GOOD.replacen("00-", "0g-", 1), "version"),
            (&GOOD.replacen("00-", "0A-", 1), "version"),
            (
                &GOOD.replace(
                    "4bf92f3577b34da6a3ce929d0e0e4736",
                    "4BF92F3577B34DA6A3CE929D0E0E4736",
                ),
                "trace id",
            ),
            (
                &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
                "trace id is all zeros",
            ),
            (
                &GOOD.replace("00f067aa0ba902b7", "00f067aa0ba902bz"),
                "parent id",
            ),
            (
                &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
                "parent id is all zeros",
            ),
            (&GOOD.replace("-01", "-0x"), "flags"),
            (&GOOD.replace('-', "_"), "separated"),
            (&format!("{GOOD}-more"), "after the flags"),
            (&format!("01{}x", &GOOD[2..]), "after the flags"),
            (
                &format!("01{}-{}", &GOOD[2..], "x".repeat(300)),
                "longer than 256",
            ),
            (&GOOD.replace("4bf9", "4bé"), "not ASCII"),
        ];
        for (bad, why) in cases {
            match validate_traceparent(bad) {
                Err(e @ LogError::InvalidTraceparent { reason, .. }) => {
                    assert!(
                        reason.contains(why),
                        "{bad:?}: {reason:?}, expected {why:?}"
                    );
                    assert!(e.is_bad_input());
                }
                other => panic!("{bad:?} was accepted or refused otherwise: {other:?}"),
            }
        }
        // A share's first record carries the id, its share of the count and the trace
        // context; the others carry nothing extra.
        let mut records = vec![Record::keyed("k", "v"), Record::new("w")];
        let id = RequestId::new("r").unwrap();
        stamp_share(&KEY, &id, Some(GOOD), 5, 0, 0, 1_000, 0xabc, &mut records);
        assert_eq!(
            header(&records[0].headers, TRACEPARENT_HEADER),
            Some(GOOD.as_bytes())
        );
        assert_eq!(
            header(&records[0].headers, REQUEST_RECORDS_HEADER),
            Some(&b"0:2/5;1000;0000000000000abc"[..])
        );
        assert!(records[1].headers.is_empty());
    }

    #[test]
    fn digest_ignores_trace_context_but_not_content() {
        let a = record_digest(Some(b"k"), b"v", &[("h".into(), b"1".to_vec())], 1);
        let with_trace = record_digest(
            Some(b"k"),
            b"v",
            &[
                ("h".into(), b"1".to_vec()),
                (TRACEPARENT_HEADER.into(), b"00-abc".to_vec()),
            ],
            1,
        );
        assert_eq!(a, with_trace);
        assert_ne!(
            a,
            record_digest(Some(b"k"), b"w", &[("h".into(), b"1".to_vec())], 1)
        );
        assert_ne!(
            a,
            record_digest(None, b"v", &[("h".into(), b"1".to_vec())], 1)
        );
        assert_ne!(
            a,
            record_digest(Some(b"k"), b"v", &[("h".into(), b"2".to_vec())], 1)
        );
        assert_ne!(
            a,
            record_digest(Some(b"k"), b"v", &[("h".into(), b"1".to_vec())], 2)
        );
    }

    fn entry(i: u64, ts_s: u32) -> Entry {
        Entry {
            key: [i, i * 7],
            digest: i,
            offset: i,
            partition: 0,
            ts_s,
        }
    }

    #[test]
    fn queue_and_table_stay_consistent_across_chunks() {
        let mut state = State::default();
        for i in 0..10_000 {
            state.insert(entry(i, 0));
        }
        for _ in 0..5_000 {
            state.pop_front();
        }
        assert!(state.find([4_999, 4_999 * 7]).is_none());
        assert_eq!(state.find([5_000, 35_000]).map(|e| e.offset), Some(5_000));
        assert_eq!(state.find([9_999, 69_993]).map(|e| e.offset), Some(9_999));
        assert_eq!(state.queue.len, 5_000);
        assert_eq!(state.table.len(), 5_000);
    }

    #[test]
    fn age_expiry_never_forgets_early() {
        let e = entry(1, 100);
        let appended_ms = EPOCH_MS + 100 * 1000 + 999; // last ms of that second
        assert!(!e.expired(appended_ms + 10_000, 10_000));
        assert!(e.expired(appended_ms + 10_002, 10_000));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let sim = crate::sim::SimStorage::new();
        sim.create_dir_all(Path::new("/d")).unwrap();
        let index = DedupIndex::new(RequestIdWindow::default(), "/d/rid".into(), KEY);
        {
            let mut state = lock(&index.state);
            for i in 0..100 {
                state.insert(entry(i, 5));
            }
        }
        // The "log" here: the record at offset o of partition p has fingerprint p * 1000 + o.
        let log = |p: usize, o: u64| Some(p as u64 * 1000 + o);
        index.write_checkpoint(&sim, || vec![7, 9], log).unwrap();
        let loaded = DedupIndex::new(RequestIdWindow::default(), "/d/rid".into(), KEY);
        assert_eq!(loaded.load_checkpoint(&sim, &[7, 9], log), vec![7, 9]);
        assert_eq!(loaded.len(), 100);
        let ahead_of_log = DedupIndex::new(RequestIdWindow::default(), "/d/rid".into(), KEY);
        assert_eq!(ahead_of_log.load_checkpoint(&sim, &[7, 8], log), vec![0, 0]);
        assert!(ahead_of_log.is_empty());
        // The log lost its tail and grew back past the checkpoint with other records.
        let regrown = |p: usize, o: u64| Some(if p == 1 { 555 } else { p as u64 * 1000 + o });
        let other_log = DedupIndex::new(RequestIdWindow::default(), "/d/rid".into(), KEY);
        assert_eq!(
            other_log.load_checkpoint(&sim, &[7, 50], regrown),
            vec![0, 0]
        );
        assert!(other_log.is_empty());
        sim.corrupt("/d/rid", 50, 1).unwrap();
        let damaged = DedupIndex::new(RequestIdWindow::default(), "/d/rid".into(), KEY);
        assert_eq!(damaged.load_checkpoint(&sim, &[7, 9], log), vec![0, 0]);
        assert!(damaged.is_empty());
    }
}
