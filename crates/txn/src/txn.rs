//! A transaction: reads from its snapshot (or, at `read_committed`, from the newest
//! committed state at each read), buffers its writes, and commits through the certifier.
//!
//! Nothing a transaction writes is visible to anyone before it commits, and a commit is one
//! record, so no other transaction ever sees part of it (G1a, G1b are impossible by
//! construction; commits are totally ordered, so G0 and G1c are too).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use logbook_log::RequestId;

use crate::budget::Budget;
use crate::certifier::Range;
use crate::error::{Result, TxnError, show_key};
use crate::limits;
use crate::limits::{check_key, check_scan_limit};
use crate::mvcc::Value;
use crate::request::{CommitRequest, Condition, TxnParts, Write, parse_i64};
use crate::store::{CommitOutcome, TxnStore};
use crate::{Isolation, KeyRange, KeyValue, ScanPage, TxnOptions, Versioned};

impl TxnStore {
    /// Begins a transaction.
    ///
    /// A `serializable` transaction declared read-only reads at the newest *safe snapshot*
    /// (Ports & Grittner 2012, §4.2): one that no concurrent transaction can make part of a
    /// serialization anomaly, so it never aborts and is not tracked. That snapshot may
    /// trail the newest commit by the duration of the read-write transactions open when it
    /// was taken; it never waits. Begun [`TxnOptions::read_only_at_newest`], it reads at
    /// the newest snapshot instead and keeps no history in the certifier; its commit is
    /// then refused, retryable, once its snapshot has left the snapshot window.
    ///
    /// Its snapshot holds every commit acknowledged before the call on this node: on a
    /// cluster follower, whose table a thread derives from the commit stream, `begin` first
    /// waits (at most 5 s) until the table holds what the node has seen the stream hold
    /// ([`TxnStore::follow_observed`]: the embedded log's end; on JetStream every
    /// acknowledgment, read and wait of this node's handle — no request is made). For what
    /// the stream holds anywhere now, call [`TxnStore::catch_up`] first (one request on
    /// JetStream); for a client's earlier commits, [`TxnStore::follow_to`] its token.
    ///
    /// # Errors
    /// [`TxnError::TooManyOpenTransactions`], [`TxnError::Poisoned`];
    /// [`TxnError::SnapshotAhead`] when a follower does not apply that in time.
    pub fn begin(self: &Arc<Self>, options: TxnOptions) -> Result<Txn> {
        self.follow_observed()?;
        let r = self.register(options)?;
        let mut t = Txn::new(self.clone(), r.id, options, r.snapshot, r.expired);
        t.track_reads = options.isolation != Isolation::ReadCommitted
            && (!options.read_only || (options.isolation == Isolation::Serializable && !r.safe));
        Ok(t)
    }
}

/// An open transaction. Obtained from [`TxnStore::begin`]; ends with [`Txn::commit`] or
/// [`Txn::abort`] (dropping it aborts it).
///
/// Values are bytes. Increments read and write values as decimal i64 text — a JSON
/// integer — and treat an absent key as 0.
#[derive(Debug)]
pub struct Txn {
    store: Arc<TxnStore>,
    id: u64,
    options: TxnOptions,
    snapshot: u64,
    started: Instant,
    expired: Arc<AtomicBool>,
    writes: BTreeMap<Vec<u8>, Write>,
    /// `get_for_update` keys and the snapshot each was read at.
    locks: BTreeMap<Vec<u8>, u64>,
    /// Keys read at the snapshot, with the version seen (`None`: absent).
    reads: BTreeMap<Vec<u8>, Option<u64>>,
    ranges: Vec<Range>,
    /// Whether it read anything (see [`CommitRequest::read_any`]).
    read_any: bool,
    /// Whether its reads are recorded (see [`Txn::tracks_reads`]).
    track_reads: bool,
    /// Bytes the buffered writes will take in the commit record (keys, values, framing).
    write_bytes: usize,
    /// Who commits it (see [`CommitRequest::principal`]).
    principal: Option<String>,
    done: bool,
}

impl Txn {
    fn new(
        store: Arc<TxnStore>,
        id: u64,
        options: TxnOptions,
        snapshot: u64,
        expired: Arc<AtomicBool>,
    ) -> Txn {
        Txn {
            store,
            id,
            options,
            snapshot,
            started: Instant::now(),
            expired,
            writes: BTreeMap::new(),
            locks: BTreeMap::new(),
            reads: BTreeMap::new(),
            ranges: Vec::new(),
            read_any: false,
            track_reads: options.isolation != Isolation::ReadCommitted && !options.read_only,
            write_bytes: 0,
            principal: None,
            done: false,
        }
    }

    /// A number identifying the transaction within this store's process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its isolation level.
    pub fn isolation(&self) -> Isolation {
        self.options.isolation
    }

    /// Its snapshot: it sees the commits at offsets below this. At `read_committed` this is
    /// where it began; each read then takes the newest committed state.
    pub fn snapshot(&self) -> u64 {
        self.snapshot
    }

    /// Reads are tracked at `serializable` (SSI) and at `snapshot` (a key read and then
    /// incremented conflicts like a write); a declared read-only transaction has no writes
    /// for them to matter to — unless it is `serializable` without a safe snapshot (begun
    /// on a cluster follower): then its reads are certified by the leader.
    fn tracks_reads(&self) -> bool {
        self.track_reads
    }

    /// Names who commits it: its commit's request id is then looked up among that
    /// principal's ids only (see [`CommitRequest::principal`]).
    pub fn set_principal(&mut self, principal: Option<String>) {
        self.principal = principal;
    }

    /// The store it was begun on.
    pub fn store(&self) -> &Arc<TxnStore> {
        &self.store
    }

    /// Ends the transaction here and returns it as a self-contained commit request, for a
    /// commit certified by another store: a cluster follower forwards it to the leader.
    /// Nothing is certified or written by this store.
    ///
    /// # Errors
    /// The errors of a closed, expired or poisoned transaction ([`TxnError::Closed`],
    /// [`TxnError::TransactionTooOld`], [`TxnError::Poisoned`]).
    pub fn into_request(mut self) -> Result<CommitRequest> {
        self.check_open()?;
        let parts = self.take_parts();
        self.end();
        Ok(parts.request)
    }

    fn end(&mut self) {
        if !self.done {
            self.done = true;
            self.store.finish(self.id);
        }
    }

    fn check_open(&mut self) -> Result<()> {
        if self.done {
            return Err(TxnError::Closed);
        }
        if let Err(e) = self.store.check_poisoned() {
            self.end();
            return Err(e);
        }
        self.check_expired()
    }

    /// Fails if the transaction was expired (by age or newer commits). Called before and
    /// again after every read: expiry lets garbage collection pass the snapshot, so a read
    /// that raced with it must not be returned.
    fn check_expired(&mut self) -> Result<()> {
        let limit = self.store.options().txn_age_ms_max;
        if self.started.elapsed().as_millis() > u128::from(limit) {
            if !self.expired.load(Ordering::Acquire) {
                self.store
                    .stats_mut()
                    .aborts_too_old
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.end();
            return Err(TxnError::TransactionTooOld {
                what: "age_ms",
                limit,
            });
        }
        if self.expired.load(Ordering::Acquire) {
            self.end();
            return Err(TxnError::TransactionTooOld {
                what: "newer_commits",
                limit: self.store.options().txn_newer_commits_max,
            });
        }
        Ok(())
    }

    fn check_writable(&mut self, key: &[u8]) -> Result<()> {
        self.check_open()?;
        check_key(key)?;
        if self.options.read_only {
            return Err(TxnError::ReadOnly);
        }
        if !self.writes.contains_key(key)
            && self.writes.len() + self.locks.len() >= limits::WRITE_SET_KEYS_MAX
        {
            return Err(TxnError::TooMany {
                what: "written keys",
                max: limits::WRITE_SET_KEYS_MAX,
            });
        }
        Ok(())
    }

    fn read_snapshot(&self) -> u64 {
        match self.options.isolation {
            Isolation::ReadCommitted => self.store.visible_now(),
            _ => self.snapshot,
        }
    }

    /// Fails when recording a read of `key` would pass the read-set limit.
    fn check_read_room(&self, key: &[u8]) -> Result<()> {
        if self.tracks_reads()
            && !self.reads.contains_key(key)
            && self.reads.len() >= limits::READ_SET_KEYS_MAX
        {
            return Err(TxnError::TooMany {
                what: "read keys",
                max: limits::READ_SET_KEYS_MAX,
            });
        }
        Ok(())
    }

    /// The committed value of `key` at `snapshot`, after waiting for its durability.
    fn read_committed(&mut self, key: &[u8], snapshot: u64) -> Result<Option<Versioned>> {
        self.check_read_room(key)?;
        let found = self.store.read_table().get(key, snapshot);
        self.check_expired()?;
        if self.tracks_reads() {
            let seen = found
                .as_ref()
                .and_then(|(v, value)| value.as_ref().map(|_| *v));
            self.reads.entry(key.to_vec()).or_insert(seen);
        }
        let Some((version, value)) = found else {
            return Ok(None);
        };
        self.store.wait_durable(version)?;
        Ok(value.map(|value| Versioned {
            value,
            version: Some(version),
        }))
    }

    /// Reads `key`: this transaction's own write if it made one, else the committed value
    /// at its snapshot (`read_committed`: the newest committed value). At `serializable`
    /// the read, present or absent, is recorded for conflict detection.
    ///
    /// # Errors
    /// [`TxnError::KeyTooLarge`], [`TxnError::TransactionTooOld`], [`TxnError::Closed`],
    /// [`TxnError::Poisoned`], [`TxnError::NotAnInteger`] when a pending increment meets a
    /// non-integer value.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        self.check_open()?;
        check_key(key)?;
        self.read_any = true;
        let snapshot = self.read_snapshot();
        match self.writes.get(key).cloned() {
            Some(Write::Put { value, .. }) => Ok(Some(Versioned {
                value,
                version: None,
            })),
            Some(Write::Delete { .. }) => Ok(None),
            Some(Write::Increment(by)) => {
                let base = self.read_committed(key, snapshot)?;
                let n = add(key, base.as_ref().map(|v| &*v.value), by)?;
                Ok(Some(Versioned {
                    value: Value::from(n.to_string().into_bytes()),
                    version: None,
                }))
            }
            None => self.read_committed(key, snapshot),
        }
    }

    /// Reads `key` like [`Txn::get`] and makes the read conflict like a write: if another
    /// transaction commits a write to `key` after this read, this transaction's commit fails
    /// with `serialization_failure` (at every level, `read_committed` included).
    ///
    /// # Errors
    /// As [`Txn::get`]; [`TxnError::ReadOnly`] in a read-only transaction.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        self.check_writable(key)?;
        // Before the base is read: the commits after it must be kept for this commit's
        // check (the other levels' needs were declared when they began).
        if self.options.isolation == Isolation::ReadCommitted && self.locks.is_empty() {
            self.store.need_history(self.id);
        }
        let snapshot = self.read_snapshot();
        self.locks.entry(key.to_vec()).or_insert(snapshot);
        self.get(key)
    }

    /// Reads the rows in `range` (own writes included), in key order, at most `limit`.
    /// At `serializable` the range is recorded, so a concurrent insert into it conflicts
    /// (phantoms); when `limit` cuts the result, the recorded range ends at the last key
    /// returned. [`Txn::scan_page`] also says whether the limit cut it.
    ///
    /// # Errors
    /// [`TxnError::TooMany`] for a `limit` above [`limits::SCAN_ROWS_MAX`] or too many
    /// range reads; as [`Txn::get`].
    pub fn scan(&mut self, range: &KeyRange, limit: usize) -> Result<Vec<KeyValue>> {
        self.scan_page(range, limit).map(|page| page.rows)
    }

    /// [`Txn::scan`], with the key the next page starts at when `limit` cut the rows.
    ///
    /// # Errors
    /// As [`Txn::scan`].
    pub fn scan_page(&mut self, range: &KeyRange, limit: usize) -> Result<ScanPage> {
        self.scan_page_within(range, limit, usize::MAX)
    }

    /// [`Txn::scan_page`] within a byte budget for the rows (as
    /// [`TxnStore::scan_page_within`]): the page stops at the first row that does not fit,
    /// with `next` there, and at `serializable` the range recorded ends at the last row
    /// returned, as for a page the limit cut.
    ///
    /// # Errors
    /// As [`Txn::scan`]; [`TxnError::AnswerTooLarge`] (`rows[0]`) when the first row alone
    /// passes the budget (nothing is recorded).
    pub fn scan_page_within(
        &mut self,
        range: &KeyRange,
        limit: usize,
        answer_bytes_max: usize,
    ) -> Result<ScanPage> {
        self.check_open()?;
        check_scan_limit(limit)?;
        self.read_any = true;
        if self.tracks_reads() && self.ranges.len() >= limits::READ_RANGES_MAX {
            return Err(TxnError::TooMany {
                what: "range reads",
                max: limits::READ_RANGES_MAX,
            });
        }
        if range.is_empty() {
            return Ok(ScanPage::default());
        }
        let snapshot = self.read_snapshot();
        let overlay: Vec<(Vec<u8>, Write)> = self
            .writes
            .range::<[u8], _>(range.as_refs())
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        let (rows, depends) = self.store.read_table().scan(
            range.as_refs(),
            snapshot,
            // One row more than asked: it says whether the limit cut the result.
            limit.saturating_add(1).saturating_add(overlay.len()),
        );
        self.check_expired()?;
        if let Some(v) = depends {
            self.store.wait_durable(v)?;
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = rows
            .into_iter()
            .map(|r| {
                (
                    r.key.clone(),
                    KeyValue {
                        key: r.key,
                        value: r.value,
                        version: Some(r.version),
                    },
                )
            })
            .collect();
        for (key, p) in overlay {
            match p {
                Write::Put { value, .. } => {
                    merged.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            value,
                            version: None,
                        },
                    );
                }
                Write::Delete { .. } => {
                    merged.remove(&key);
                }
                Write::Increment(by) => {
                    let n = add(&key, merged.get(&key).map(|kv| &*kv.value), by)?;
                    let value = Value::from(n.to_string().into_bytes());
                    merged.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            value,
                            version: None,
                        },
                    );
                }
            }
        }
        let mut budget = Budget::new(answer_bytes_max);
        let page = crate::budget::page(merged.into_values(), limit, &mut budget)
            .map_err(|row| budget.exceeded("rows", 0, &row.key, Some(&row.value)))?;
        let (out, next) = (page.rows, page.next);
        if self.tracks_reads() {
            // A cut page read up to its last row; an uncut one read the whole range (the
            // caller learns there is nothing after its last row: a phantom there matters).
            let end = match out.last() {
                Some(last) if next.is_some() => Bound::Included(last.key.clone()),
                _ => range.end.clone(),
            };
            self.ranges.push((range.start.clone(), end));
        }
        Ok(ScanPage { rows: out, next })
    }

    fn buffer(&mut self, key: &[u8], p: Write) -> Result<()> {
        let size = |p: &Write| {
            let value = match p {
                Write::Put { value, .. } => value.len(),
                Write::Delete { .. } => 0,
                Write::Increment(_) => 20,
            };
            value + key.len() + 8
        };
        let old = self.writes.get(key).map_or(0, size);
        let bytes = self.write_bytes - old + size(&p);
        let max = limits::COMMIT_RECORD_BYTES_MAX - 1024;
        if bytes > max {
            return Err(TxnError::TooMany {
                what: "commit bytes",
                max,
            });
        }
        self.write_bytes = bytes;
        self.writes.insert(key.to_vec(), p);
        Ok(())
    }

    fn check_value(key: &[u8], value: &[u8]) -> Result<()> {
        if value.len() > limits::VALUE_BYTES_MAX {
            return Err(TxnError::ValueTooLarge {
                key: show_key(key),
                bytes: value.len(),
                max: limits::VALUE_BYTES_MAX,
            });
        }
        Ok(())
    }

    fn cond_of(&self, key: &[u8]) -> Condition {
        match self.writes.get(key) {
            Some(Write::Put { cond, .. }) | Some(Write::Delete { cond }) => *cond,
            _ => Condition::None,
        }
    }

    fn check_unwritten(&self, key: &[u8]) -> Result<()> {
        if self.writes.contains_key(key) {
            return Err(TxnError::InvalidOperation {
                key: show_key(key),
                reason: "a conditional write must be the first write of its key in a transaction",
            });
        }
        Ok(())
    }

    /// Sets `key` to `value` at commit.
    ///
    /// # Errors
    /// [`TxnError::KeyTooLarge`], [`TxnError::ValueTooLarge`], [`TxnError::ReadOnly`],
    /// [`TxnError::TooMany`], and the errors of a closed or expired transaction.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_writable(key)?;
        Self::check_value(key, value)?;
        let cond = self.cond_of(key);
        self.buffer(
            key,
            Write::Put {
                value: Value::from(value),
                cond,
            },
        )
    }

    /// Sets `key` to `value` at commit only if `key` is absent then; otherwise the commit
    /// fails with [`TxnError::KeyExists`].
    ///
    /// # Errors
    /// As [`Txn::put`]; [`TxnError::InvalidOperation`] if this transaction already wrote `key`.
    pub fn put_if_absent(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_writable(key)?;
        Self::check_value(key, value)?;
        self.check_unwritten(key)?;
        self.buffer(
            key,
            Write::Put {
                value: Value::from(value),
                cond: Condition::IfAbsent,
            },
        )
    }

    /// Compare-and-set: sets `key` to `value` at commit only if its version then is
    /// `version`; otherwise the commit fails with [`TxnError::VersionMismatch`].
    ///
    /// # Errors
    /// As [`Txn::put_if_absent`].
    pub fn put_if_version(&mut self, key: &[u8], value: &[u8], version: u64) -> Result<()> {
        self.check_writable(key)?;
        Self::check_value(key, value)?;
        self.check_unwritten(key)?;
        self.buffer(
            key,
            Write::Put {
                value: Value::from(value),
                cond: Condition::IfVersion(version),
            },
        )
    }

    /// Deletes `key` at commit (deleting an absent key is not an error).
    ///
    /// # Errors
    /// As [`Txn::put`].
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.check_writable(key)?;
        let cond = self.cond_of(key);
        self.buffer(key, Write::Delete { cond })
    }

    /// Deletes `key` at commit only if its version then is `version`; otherwise the commit
    /// fails with [`TxnError::VersionMismatch`].
    ///
    /// # Errors
    /// As [`Txn::put_if_absent`].
    pub fn delete_if_version(&mut self, key: &[u8], version: u64) -> Result<()> {
        self.check_writable(key)?;
        self.check_unwritten(key)?;
        self.buffer(
            key,
            Write::Delete {
                cond: Condition::IfVersion(version),
            },
        )
    }

    /// Adds `by` to the i64 at `key` at commit (absent counts as 0). Evaluated on the newest
    /// committed value, so concurrent increments of one key never conflict with each other
    /// (unless one of the transactions also read the key, or wrote it otherwise).
    /// The resulting value is reported in [`CommitOutcome::incremented`].
    ///
    /// # Errors
    /// As [`Txn::put`]; [`TxnError::NotAnInteger`] / [`TxnError::IncrementOverflow`] when
    /// combined with this transaction's own put of `key`; at commit, the same errors
    /// against the committed value.
    pub fn increment(&mut self, key: &[u8], by: i64) -> Result<()> {
        self.check_writable(key)?;
        let next = match self.writes.get(key) {
            Some(Write::Put { value, cond }) => {
                let n = add(key, Some(value), by)?;
                Write::Put {
                    value: Value::from(n.to_string().into_bytes()),
                    cond: *cond,
                }
            }
            Some(Write::Delete { cond }) => Write::Put {
                value: Value::from(by.to_string().into_bytes()),
                cond: *cond,
            },
            Some(Write::Increment(a)) => {
                Write::Increment(
                    a.checked_add(by)
                        .ok_or_else(|| TxnError::IncrementOverflow {
                            key: show_key(key),
                            current: *a,
                            by,
                        })?,
                )
            }
            None => Write::Increment(by),
        };
        self.buffer(key, next)
    }

    /// Commits. See [`Txn::commit_with`].
    ///
    /// # Errors
    /// As [`Txn::commit_with`].
    pub fn commit(self) -> Result<CommitOutcome> {
        self.commit_with(None, None)
    }

    /// Commits: certifies the transaction, appends its commit record with `request_id` and
    /// `traceparent`, and returns once the record is durable (per the commit stream's fsync
    /// policy). A transaction that wrote nothing appends nothing.
    ///
    /// With a `request_id` that already committed the same transaction — the same
    /// operations, locks and isolation level (see the intents fingerprint of the commit
    /// record) — nothing is applied and the original commit is returned with
    /// `duplicate: true`; if that commit is still in flight, this waits for it. The same
    /// request id with different operations fails with [`TxnError::RequestIdConflict`] and
    /// nothing is applied — unless the original read before committing: its writes may
    /// have depended on its reads, so any retry of it is a duplicate. An aborted attempt
    /// leaves nothing behind, so a retry may reuse the id. A read-only commit's request id
    /// is remembered too (a retry is a duplicate with `offset: None`), but in memory only:
    /// nothing is logged for it, so it is forgotten at restart.
    ///
    /// # Errors
    /// [`TxnError::SerializationFailure`] (retry the whole transaction),
    /// [`TxnError::VersionMismatch`], [`TxnError::KeyExists`], [`TxnError::NotAnInteger`],
    /// [`TxnError::IncrementOverflow`], [`TxnError::TransactionTooOld`], [`TxnError::TooMany`]
    /// (commit record too large), [`TxnError::RequestIdConflict`], [`TxnError::Log`]
    /// (invalid traceparent, I/O: the store is then poisoned), [`TxnError::Poisoned`],
    /// [`TxnError::Closed`].
    pub fn commit_with(
        mut self,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> Result<CommitOutcome> {
        self.check_open()?;
        self.done = true;
        let parts = self.take_parts();
        let result = self.store.commit(parts, request_id, traceparent);
        if let Err(e) = &result {
            tracing::debug!(txn = self.id, error = %e, "commit refused");
        }
        result
    }

    /// [`Txn::commit_with`] for async callers: certification and the append happen now (a
    /// short critical section), and the returned future resolves once the commit record is
    /// durable, without holding a thread while the log fsyncs. A retry of a request id whose
    /// original is still in flight, and a duplicate, still wait in the calling thread: until
    /// the original settles, which takes the original's future being polled — so an async
    /// caller makes this call on a blocking thread, never on the worker that must poll the
    /// original (the server runs it on tokio's blocking pool).
    ///
    /// # Errors
    /// As [`Txn::commit_with`].
    pub fn commit_async(
        mut self,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> impl std::future::Future<Output = Result<CommitOutcome>> + Send + 'static + use<> {
        let prepared = self.check_open().and_then(|()| {
            self.done = true;
            let parts = self.take_parts();
            self.store.prepare(parts, request_id, traceparent)
        });
        self.store.clone().settle_async(prepared)
    }

    /// The transaction as a self-contained commit request, with its registration.
    fn take_parts(&mut self) -> TxnParts {
        TxnParts {
            id: self.id,
            expired: Some(self.expired.clone()),
            // Read-only with tracked reads: `serializable` at the newest snapshot.
            in_window: self.options.read_only && self.track_reads && self.read_any,
            request: CommitRequest {
                isolation: self.options.isolation,
                snapshot: self.snapshot,
                read_only: self.options.read_only,
                read_any: self.read_any,
                reads: std::mem::take(&mut self.reads),
                ranges: std::mem::take(&mut self.ranges),
                locks: std::mem::take(&mut self.locks),
                writes: std::mem::take(&mut self.writes),
                principal: self.principal.take(),
            },
        }
    }

    /// Aborts: nothing the transaction wrote is applied.
    pub fn abort(mut self) {
        if !self.done {
            self.store
                .stats_mut()
                .aborts_explicit
                .fetch_add(1, Ordering::Relaxed);
        }
        self.end();
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if !self.done {
            self.store
                .stats_mut()
                .aborts_explicit
                .fetch_add(1, Ordering::Relaxed);
            self.end();
        }
    }
}

fn add(key: &[u8], base: Option<&[u8]>, by: i64) -> Result<i64> {
    let base = match base {
        None => 0,
        Some(v) => parse_i64(v).ok_or_else(|| TxnError::NotAnInteger { key: show_key(key) })?,
    };
    base.checked_add(by)
        .ok_or_else(|| TxnError::IncrementOverflow {
            key: show_key(key),
            current: base,
            by,
        })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{TxnStore, TxnStoreOptions};

    fn store() -> (tempfile::TempDir, logbook_log::Log, Arc<TxnStore>) {
        let dir = tempfile::tempdir().unwrap();
        let log = logbook_log::Log::open(dir.path()).unwrap();
        let store = TxnStore::open(&log, TxnStoreOptions::default()).unwrap();
        (dir, log, store)
    }

    /// The fingerprint of what `ops` buffers in a new transaction at `isolation`.
    fn fp_at(store: &Arc<TxnStore>, isolation: Isolation, ops: impl FnOnce(&mut Txn)) -> u128 {
        let mut t = store.begin(TxnOptions::new(isolation)).unwrap();
        ops(&mut t);
        let fp = t.take_parts().request.intents_fingerprint();
        t.abort();
        fp
    }

    fn fp(store: &Arc<TxnStore>, ops: impl FnOnce(&mut Txn)) -> u128 {
        fp_at(store, Isolation::Serializable, ops)
    }

    #[test]
    fn the_same_operations_fingerprint_alike_whatever_their_order_across_keys() {
        let (_dir, _log, s) = store();
        let a = fp(&s, |t| {
            t.increment(b"c1", 1).unwrap();
            t.put(b"k", b"\"v\"").unwrap();
            t.delete(b"gone").unwrap();
        });
        let again = fp(&s, |t| {
            t.increment(b"c1", 1).unwrap();
            t.put(b"k", b"\"v\"").unwrap();
            t.delete(b"gone").unwrap();
        });
        assert_eq!(a, again, "deterministic");
        // Decision: the writes are a set keyed by key (the buffer keeps one net intent per
        // key), so the order of operations on *different* keys does not matter.
        let reordered = fp(&s, |t| {
            t.delete(b"gone").unwrap();
            t.put(b"k", b"\"v\"").unwrap();
            t.increment(b"c1", 1).unwrap();
        });
        assert_eq!(a, reordered);
        // On one key, what counts is the net intent as buffered: increments add up, and a
        // later put replaces an earlier one.
        let split = fp(&s, |t| {
            t.increment(b"c1", 1).unwrap();
            t.put(b"k", b"\"old\"").unwrap();
            t.put(b"k", b"\"v\"").unwrap();
            t.delete(b"gone").unwrap();
        });
        assert_eq!(a, split);
        assert_eq!(
            fp(&s, |t| t.increment(b"c1", 3).unwrap()),
            fp(&s, |t| {
                t.increment(b"c1", 1).unwrap();
                t.increment(b"c1", 2).unwrap();
            })
        );
        // Plain reads and range reads are not intents.
        let with_reads = fp(&s, |t| {
            t.get(b"c1").unwrap();
            t.scan(&crate::KeyRange::prefix(b"k"), 10).unwrap();
            t.increment(b"c1", 1).unwrap();
            t.put(b"k", b"\"v\"").unwrap();
            t.delete(b"gone").unwrap();
        });
        assert_eq!(a, with_reads);
    }

    #[test]
    fn the_snapshot_is_not_part_of_the_fingerprint() {
        let (_dir, _log, s) = store();
        let before = fp(&s, |t| t.increment(b"c1", 1).unwrap());
        let mut t = s.begin(TxnOptions::new(Isolation::Serializable)).unwrap();
        t.increment(b"c1", 1).unwrap();
        t.commit().unwrap();
        // A retry begins at a later snapshot (and would resolve the increment differently).
        assert_eq!(before, fp(&s, |t| t.increment(b"c1", 1).unwrap()));
    }

    #[test]
    fn any_difference_in_keys_kinds_operands_locks_or_isolation_changes_it() {
        let (_dir, _log, s) = store();
        let all = [
            fp(&s, |_| {}),
            fp(&s, |t| t.increment(b"c1", 1).unwrap()),
            fp(&s, |t| t.increment(b"c1", 2).unwrap()),
            fp(&s, |t| t.increment(b"c2", 1).unwrap()),
            fp(&s, |t| t.put(b"c1", b"1").unwrap()),
            fp(&s, |t| t.put(b"c1", b"2").unwrap()),
            fp(&s, |t| t.put_if_absent(b"c1", b"1").unwrap()),
            fp(&s, |t| t.put_if_version(b"c1", b"1", 0).unwrap()),
            fp(&s, |t| t.put_if_version(b"c1", b"1", 1).unwrap()),
            fp(&s, |t| t.delete(b"c1").unwrap()),
            fp(&s, |t| t.delete_if_version(b"c1", 0).unwrap()),
            fp(&s, |t| t.delete_if_version(b"c1", 1).unwrap()),
            fp(&s, |t| {
                t.get_for_update(b"c1").unwrap();
            }),
            fp(&s, |t| {
                t.get_for_update(b"c2").unwrap();
            }),
            fp(&s, |t| {
                t.get_for_update(b"c1").unwrap();
                t.increment(b"c1", 1).unwrap();
            }),
            fp(&s, |t| {
                t.put(b"a", b"1").unwrap();
                t.put(b"b", b"2").unwrap();
            }),
            // Framing: the same bytes split differently between key and value.
            fp(&s, |t| {
                t.put(b"a", b"12").unwrap();
            }),
            fp(&s, |t| {
                t.put(b"a1", b"2").unwrap();
            }),
            fp_at(&s, Isolation::Snapshot, |t| t.increment(b"c1", 1).unwrap()),
            fp_at(&s, Isolation::ReadCommitted, |t| {
                t.increment(b"c1", 1).unwrap();
            }),
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "intents {i} and {j} fingerprint alike");
            }
        }
    }
}
