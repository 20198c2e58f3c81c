//! The transaction store: the commit stream, the table derived from it, the certifier in
//! front of it, and the commit pipeline.
//!
//! ```text
//! Txn::commit ──▶ [commit lock] request-id check → certify → evaluate atomic ops
//!                  → encode → enqueue append to `_txn` → apply to the table (MVCC)
//!              ──▶ wait for the append's fsync (group commit) ──▶ acknowledge
//! ```
//!
//! Everything under the commit lock is memory work; the fsync wait happens outside it, so
//! many commits share one fsync. Offsets are assigned in certification order because this
//! store is the only writer of its commit stream and enqueues under the lock.
//!
//! **Early lock release** (Johnson et al., "Aether", VLDB 2010): with
//! [`TxnStoreOptions::early_lock_release`] (the default), a commit is applied to the table
//! as soon as it is certified, and new snapshots include it before it is durable — which
//! shortens the window in which transactions can conflict. No client ever observes such a
//! commit before it is durable: every read that returns (or depends on, for an absent key)
//! a version at or above the durable end of the commit stream waits until the log is
//! durable that far, and a dependent commit is acknowledged only after its own, later,
//! fsync. If an append fails, the store is poisoned: nothing that depended on it is ever
//! acknowledged, and reopening rebuilds the table from what the log holds. Without it,
//! snapshots stop at the durable end of the stream.
//!
//! **The chain.** Each commit record is appended under the expected end after the previous
//! one, without waiting for that one's acknowledgment. A commit is settled only after the
//! one before it, and acknowledged only if that one is in the chain too (`Link`): a backend
//! whose appends resolve independently (JetStream) can refuse a record and store the next,
//! after a record another writer put in the refused one's place.
//!
//! After a restart the table is rebuilt by replaying the whole commit stream; open
//! transactions of the previous process are simply gone (they had written nothing).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use logbook_log::{
    AppendCondition, FsyncPolicy, LogBackend, LogError, LogPartition, LogStream, Record, RequestId,
    StreamConfig,
};

use crate::admission::{check_ahead, check_certified, check_locks, check_versions, check_window};
use crate::budget::Budget;
use crate::certifier::{Certifier, Footprint, WriteClass, in_range};
use crate::error::{Result, TxnError, show_key};
use crate::limits;
use crate::limits::{check_key, check_scan_limit};
use crate::mvcc::{Table, Value};
use crate::record::{CommitRecord, Entry, WriteOp};
use crate::request::{Condition, TxnParts, Write, parse_i64};
use crate::{Isolation, KeyRange, KeyValue, ScanPage, TxnOptions, Versioned};

/// How a [`TxnStore`] is opened. Defaults are in the field docs.
#[derive(Debug, Clone)]
pub struct TxnStoreOptions {
    /// Name of the commit stream (one partition). Default `_txn`.
    pub stream: String,
    /// Durability of commits. Default [`FsyncPolicy::Always`]: a commit is acknowledged
    /// only after the commit record is fsynced.
    pub fsync: FsyncPolicy,
    /// Most transactions open at once. Default [`limits::OPEN_TXNS_DEFAULT`].
    pub open_txns_max: usize,
    /// A transaction fails with [`TxnError::TransactionTooOld`] once more than this many
    /// commits happened after its snapshot. Default [`limits::TXN_NEWER_COMMITS_DEFAULT`].
    pub txn_newer_commits_max: u64,
    /// A transaction fails with [`TxnError::TransactionTooOld`] once open longer than this
    /// many ms. Default [`limits::TXN_AGE_MS_DEFAULT`].
    pub txn_age_ms_max: u64,
    /// Versions kept for this many commits behind the newest even when no transaction
    /// reads at them (for time-travel reads). Default 0.
    pub history_commits: u64,
    /// Whether snapshots include certified commits before they are durable (see the
    /// module documentation). Default `true`.
    pub early_lock_release: bool,
    /// Commit request ids remembered for deduplication (the oldest are forgotten first).
    /// Those of read-write commits are rebuilt from the commit stream at open; those of
    /// read-only commits (which append nothing) live in memory only and are forgotten at
    /// restart. Default [`limits::COMMIT_REQUEST_IDS_DEFAULT`].
    pub request_ids_max: usize,
    /// The snapshot window, in commits: a one-shot read ([`TxnStore::read_at`]) or commit
    /// request ([`TxnStore::commit_request`]) may name a snapshot this many commits behind
    /// the newest; an older one fails with [`TxnError::SnapshotTooOld`]. The table keeps
    /// the versions and the certifier the summaries (keys written, keys and ranges read)
    /// of that many commits, whether or not a transaction is open. Default
    /// [`limits::SNAPSHOT_WINDOW_COMMITS_DEFAULT`].
    pub snapshot_window_commits: u64,
    /// The budget of the certifier's summaries, in bytes, shared fairly among the
    /// principals that commit: each may hold the budget divided by the principals holding
    /// summaries plus one. To make room, a read-only summary is folded into a conservative
    /// check (a later pivot may abort where it would not have), and a read-write one that
    /// no open transaction needs is forgotten, refusing the one-shot snapshots that would
    /// need it (`snapshot_too_old`) — the committing principal's own first. A read-write
    /// commit that still finds no room is refused, retryable:
    /// [`TxnError::CertifierShareFull`] or [`TxnError::CertifierFull`]. No open transaction
    /// is aborted for the budget. Default
    /// [`limits::CERTIFIER_BYTES_DEFAULT`]; at least [`limits::CERTIFIER_BYTES_MIN`]
    /// (a smaller one is raised to it).
    pub certifier_bytes_max: usize,
    /// Whether the commit stream is written by a leader elected among several nodes (a
    /// cluster). The store then opens as a **follower**: it derives the table from the
    /// stream ([`TxnStore::catch_up`]) and serves reads, and refuses commits with
    /// [`TxnError::NotLeader`] until [`TxnStore::lead`] appends its epoch record. Default
    /// `false`: the store is the stream's only writer.
    pub elected: bool,
}

impl Default for TxnStoreOptions {
    fn default() -> Self {
        TxnStoreOptions {
            stream: "_txn".to_string(),
            fsync: FsyncPolicy::Always,
            open_txns_max: limits::OPEN_TXNS_DEFAULT,
            txn_newer_commits_max: limits::TXN_NEWER_COMMITS_DEFAULT,
            txn_age_ms_max: limits::TXN_AGE_MS_DEFAULT,
            history_commits: 0,
            early_lock_release: true,
            request_ids_max: limits::COMMIT_REQUEST_IDS_DEFAULT,
            snapshot_window_commits: limits::SNAPSHOT_WINDOW_COMMITS_DEFAULT,
            certifier_bytes_max: limits::CERTIFIER_BYTES_DEFAULT,
            elected: false,
        }
    }
}

/// A transaction registered with the certifier.
pub(crate) struct Registered {
    /// Its number within this process.
    pub id: u64,
    /// It sees the commits at offsets below this.
    pub snapshot: u64,
    /// Set (under the commit lock) when it is expired.
    pub expired: Arc<AtomicBool>,
    /// Whether it reads a safe snapshot (a read-only `serializable` transaction certified
    /// here): its reads need not be tracked.
    pub safe: bool,
}

/// What the request-id table says about a commit's request id.
enum IdCheck<'a> {
    /// Not seen: certify, still under the commit lock.
    New(MutexGuard<'a, CommitState>),
    /// A duplicate of a committed request, or a conflict with it.
    Answered(Result<Prepared>),
    /// Its original was in flight and has settled: look again.
    Settled,
}

/// What certifying and appending a commit led to (under the commit lock).
enum Certification {
    /// It wrote nothing: recorded in the certifier, nothing appended.
    ReadOnly,
    /// Its record is in the log's queue and applied to the table.
    Appended(Appended),
}

/// A commit record queued at `offset` and applied to the table, not yet durable.
struct Appended {
    offset: u64,
    completion: logbook_log::AppendCompletion,
    /// The value each incremented key ends with, in key order.
    incremented: Vec<(Vec<u8>, i64)>,
    /// Where a retry of its request id waits for it.
    pending: Option<Arc<Outcome>>,
    /// Its place in the chain of commit records.
    link: Link,
}

/// A transaction the certifier accepted: what it records for it.
struct Certified {
    /// Its place in commit order (`2 × offset + 1` with a record, `2 × offset` without).
    commit_seq: u64,
    /// Its snapshot (`2 × snapshot`).
    snapshot_seq: u64,
    serializable: bool,
    /// The certifier's note of its earliest outgoing rw-antidependency.
    out_min: Option<u64>,
    /// Keys written or locked and how.
    classes: HashMap<Vec<u8>, WriteClass>,
    /// Where new transactions start now (`2 × offset`).
    now_seq: u64,
}

/// A commit record ready to append.
struct Resolved {
    bytes: Vec<u8>,
    writes: Vec<(Vec<u8>, WriteOp)>,
    incremented: Vec<(Vec<u8>, i64)>,
}

/// A commit after certification: done (duplicate, read-only) or waiting for its fsync.
pub(crate) enum Prepared {
    Done(CommitOutcome),
    InFlight(logbook_log::AppendCompletion, InFlight),
}

/// What settling an appended commit needs.
#[derive(Debug)]
pub(crate) struct InFlight {
    offset: u64,
    incremented: Vec<(Vec<u8>, i64)>,
    pending: Option<Arc<Outcome>>,
    request_id: Option<String>,
    intents: Option<u128>,
    read_dependent: bool,
    /// Its place in the chain of commit records: settled only after the one before it.
    link: Link,
}

/// A commit record's place in the chain of records the store appends, each under the end
/// after the previous one, without waiting for that one's acknowledgment.
///
/// Storage checks an expected end by *position*: it cannot tell whether the record before
/// is the one this store appended there. On a backend whose appends resolve independently
/// (JetStream), a record can be refused while the next one is stored — when another writer
/// (a newer leader's epoch record) took the refused record's position, the next record's
/// expected end holds, and it lands after the other writer's record, where replay skips it
/// (or, had the other record been the deposed leader's, without the record it was certified
/// after). So a record's own acknowledgment proves nothing about the chain before it: a
/// commit is settled only once the one before it settled, and acknowledged only if that one
/// is in the chain too ([`ChainOutcome`]). On the embedded log a refusal poisons the writer,
/// so the record before has always settled first and the wait costs nothing.
#[derive(Debug)]
pub(crate) struct Link {
    /// How the record before settled (`None`: none in flight when this one was appended).
    before: Option<logbook_log::AppendCompletion>,
    /// How this one settles, for the record after it.
    after: logbook_log::Completer,
}

/// How a chained commit record settled, as its successor's [`Link`] carries it.
enum ChainOutcome {
    /// Stored at its position, after its predecessor.
    InChain(logbook_log::AppendAck),
    /// Not in the chain: refused at storage, or stored after a record that is not its
    /// predecessor. Replay never applies it (see [`replay`]): it did not commit.
    Displaced {
        /// Where the commit stream ended when the chain broke.
        actual: u64,
    },
    /// Unknown: its append (or one before it) may or may not be stored.
    Unknown(String),
}

impl ChainOutcome {
    /// How a record settled, from its own append and how the record before it settled.
    fn of(
        own: &logbook_log::Result<logbook_log::AppendAck>,
        before: Option<logbook_log::Result<logbook_log::AppendAck>>,
    ) -> ChainOutcome {
        match (own, before) {
            (Err(LogError::EndOffsetMismatch { actual, .. }), _) => {
                ChainOutcome::Displaced { actual: *actual }
            }
            (Err(e), _) => ChainOutcome::Unknown(e.to_string()),
            (Ok(ack), None | Some(Ok(_))) => ChainOutcome::InChain(*ack),
            (Ok(_), Some(Err(LogError::EndOffsetMismatch { actual, .. }))) => {
                ChainOutcome::Displaced { actual }
            }
            (Ok(_), Some(Err(e))) => {
                ChainOutcome::Unknown(format!("the commit record before this one: {e}"))
            }
        }
    }

    /// As the next record's [`Link`] carries it: an acknowledgment, a mismatch of the
    /// record's `expected` end in `stream`, or an unknown outcome.
    fn carried(&self, stream: &str, expected: u64) -> logbook_log::Result<logbook_log::AppendAck> {
        match self {
            ChainOutcome::InChain(ack) => Ok(*ack),
            ChainOutcome::Displaced { actual } => Err(LogError::EndOffsetMismatch {
                stream: stream.to_string(),
                partition: 0,
                expected,
                actual: *actual,
            }),
            ChainOutcome::Unknown(why) => Err(LogError::OutcomeUnknown {
                backend: "commit stream's",
                why: why.clone(),
            }),
        }
    }
}

/// The outcome of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The commit-stream offset of the commit record: the version of every key it wrote.
    /// `None` for a transaction that wrote nothing (no record is appended).
    pub offset: Option<u64>,
    /// True when this was a retry of a request id that had already committed: nothing was
    /// applied again and `offset` is the original commit's.
    pub duplicate: bool,
    /// The value each incremented key ended with, in key order.
    pub incremented: Vec<(Vec<u8>, i64)>,
}

/// Counters of a store (monotonic since open, except the gauges).
#[derive(Debug, Default)]
pub struct TxnStats {
    /// Transactions begun.
    pub begun: AtomicU64,
    /// Commits that appended a record.
    pub commits: AtomicU64,
    /// Commits that wrote nothing.
    pub read_only_commits: AtomicU64,
    /// Aborts by write-write conflicts.
    pub aborts_write_write: AtomicU64,
    /// Aborts by SSI dangerous structures.
    pub aborts_dangerous_structure: AtomicU64,
    /// Aborts by failed atomic operations (version mismatch, key exists, increments).
    pub aborts_precondition: AtomicU64,
    /// Transactions expired for age or newer commits.
    pub aborts_too_old: AtomicU64,
    /// Commits refused for want of room in the certifier's byte budget (the principal's
    /// share, or the whole budget).
    pub aborts_certifier_full: AtomicU64,
    /// Explicit aborts (and transactions dropped open).
    pub aborts_explicit: AtomicU64,
    /// Commits answered from the request-id table.
    pub duplicates: AtomicU64,
    /// Reads that waited for the commit stream to become durable (early lock release).
    pub durability_waits: AtomicU64,
    /// Commits (and look-ups) that waited for the in-flight original of their request id.
    pub request_id_waits: AtomicU64,
}

#[derive(Debug, Default)]
struct Outcome {
    /// `Some(Some(offset))`: committed; `Some(None)`: failed; `None`: in flight.
    result: Mutex<Option<Option<u64>>>,
    settled: Condvar,
}

/// A committed request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    /// The commit record's offset; `None` for a read-only commit (nothing was appended, so
    /// it is remembered in memory only and forgotten at restart).
    offset: Option<u64>,
    /// The intents fingerprint a retry must match (`None`: any retry matches — a format-1
    /// record, or a transaction that read before committing).
    intents: Option<u128>,
}

#[derive(Debug)]
pub(crate) struct CommitState {
    pub(crate) cert: Certifier,
    /// Offset the next commit record gets; equals the table's applied offset.
    pub(crate) next_offset: u64,
    next_txn_id: u64,
    /// Committed request ids (see [`Remembered`]).
    ids_done: HashMap<String, Remembered>,
    ids_order: VecDeque<String>,
    ids_pending: HashMap<String, Arc<Outcome>>,
    /// The newest epoch (fencing token) an epoch record in the stream carried; 0 before any.
    pub(crate) epoch_seen: u64,
    /// The epoch this store certifies under, once [`TxnStore::lead`] appended it.
    pub(crate) leading: Option<u64>,
    /// How the newest commit record in flight settles ([`Link`]); `None` when none is.
    chain: Option<logbook_log::AppendCompletion>,
    /// Replay saw a record of an older epoch after the newest epoch record: a deposed
    /// leader's record in the newest leader's chain, where that leader's record was refused.
    /// Every later record of the newest epoch was chained after the refused one; none of
    /// them committed. Cleared by the next epoch record.
    chain_broken: bool,
    /// The table position from which `cert` has seen every commit: the end of the replay
    /// when the store opened or began to lead. The certifier holds no summary of a commit
    /// below it, so a one-shot request with an older snapshot cannot be certified (it
    /// would miss conflicts with those commits): it is refused as `snapshot_too_old`.
    pub(crate) certified_from: u64,
}

/// A key-value table whose source of truth is a commit stream, with transactions at three
/// isolation levels. Open one per [`logbook_log::LogBackend`] and share it with `Arc`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use logbook_txn::{Isolation, TxnOptions, TxnStore, TxnStoreOptions};
/// let dir = tempfile::tempdir()?;
/// let log = logbook_log::Log::open(dir.path())?;
/// let store = TxnStore::open(&log, TxnStoreOptions::default())?;
/// let mut t = store.begin(TxnOptions::new(Isolation::Serializable))?;
/// t.put(b"greeting", b"\"hello\"")?;
/// t.increment(b"visits", 1)?;
/// let outcome = t.commit()?;
/// assert_eq!(outcome.incremented, vec![(b"visits".to_vec(), 1)]);
/// assert_eq!(&*store.get(b"greeting")?.unwrap().value, b"\"hello\"");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TxnStore {
    pub(crate) stream: Arc<dyn LogStream>,
    /// The commit stream's [`LogPartition::batch_offset_span`]: record `n` (a *position*,
    /// what versions and snapshots count) is at log offset `n · span`.
    pub(crate) span: u64,
    options: TxnStoreOptions,
    table: RwLock<Table>,
    pub(crate) state: Mutex<CommitState>,
    /// Signalled (with `state`) when a cluster follower's table advanced, the store began
    /// to lead, or it was poisoned: what [`TxnStore::follow_to`] waits on.
    pub(crate) advanced: Condvar,
    /// A cluster leader's chain, settled: the positions below it are known to be in the
    /// commit stream in this store's chain ([`Link`]) — its durable end. Raised from 0 only
    /// once the store leads (to its epoch record's position + 1), then by each commit
    /// settled in the chain; a store that never led does not use it (0).
    pub(crate) settled: Arc<logbook_log::Watermark>,
    poisoned: AtomicBool,
    stats: TxnStats,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections either complete or panic on a broken invariant (a bug that also
    // poisons the store for good), so lock poisoning adds nothing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxnStore {
    /// Opens (or creates) the commit stream in `log` and rebuilds the table from it: the
    /// store of [`TxnStore::open`], before a cluster follower's thread is started.
    ///
    /// # Errors
    /// As [`TxnStore::open`].
    pub(crate) fn rebuild(log: &dyn LogBackend, options: TxnStoreOptions) -> Result<Arc<TxnStore>> {
        let stream = match log.stream(&options.stream) {
            Ok(s) => s,
            Err(LogError::UnknownStream { .. }) => {
                let mut config = StreamConfig::with_partitions(1);
                config.fsync = options.fsync;
                log.create_stream(&options.stream, config)?
            }
            Err(e) => return Err(e.into()),
        };
        let bad = |reason: String| TxnError::CommitStream {
            stream: options.stream.clone(),
            reason,
        };
        if stream.partition_count() != 1 {
            return Err(bad(format!(
                "has {} partitions; a commit stream has exactly one",
                stream.partition_count()
            )));
        }
        if stream.config().fsync != options.fsync {
            return Err(bad(format!(
                "was created with fsync {}; opening it with fsync {} would change what a commit \
                 acknowledgment means",
                stream.config().fsync,
                options.fsync
            )));
        }
        let partition = stream.partition(0)?;
        if partition.start_offset() != 0 {
            return Err(bad(format!(
                "starts at offset {}: its first commits were deleted, so the table cannot be rebuilt",
                partition.start_offset()
            )));
        }
        let mut table = Table::default();
        let mut state = CommitState {
            cert: Certifier::with_window(
                options.snapshot_window_commits,
                options.certifier_bytes_max.max(limits::CERTIFIER_BYTES_MIN),
            ),
            next_offset: 0,
            next_txn_id: 1,
            ids_done: HashMap::new(),
            ids_order: VecDeque::new(),
            ids_pending: HashMap::new(),
            epoch_seen: 0,
            leading: None,
            chain: None,
            chain_broken: false,
            certified_from: 0,
        };
        let span = partition.batch_offset_span().max(1);
        let replay_started = std::time::Instant::now();
        replay(partition, span, &options, &mut state, &mut table)?;
        state.certified_from = table.applied();
        let end = state.next_offset;
        // How long a cluster node changing role answers transactions 503 (review r15 F5).
        let replay_ms = replay_started.elapsed().as_millis() as u64;
        tracing::info!(stream = %options.stream, records = end, keys = table.keys(), replay_ms, "transaction store opened");
        let store = Arc::new(TxnStore {
            stream,
            span,
            options,
            table: RwLock::new(table),
            state: Mutex::new(state),
            advanced: Condvar::new(),
            settled: Arc::new(logbook_log::Watermark::new(0)),
            poisoned: AtomicBool::new(false),
            stats: TxnStats::default(),
        });
        Ok(store)
    }

    /// Registers a new transaction with the certifier: its id, snapshot and expiry flag
    /// (the handle is built by [`TxnStore::begin`], in the `txn` module).
    ///
    /// # Errors
    /// [`TxnError::TooManyOpenTransactions`], [`TxnError::Poisoned`].
    pub(crate) fn register(&self, options: TxnOptions) -> Result<Registered> {
        self.check_poisoned()?;
        let mut state = lock(&self.state);
        if state.cert.open() >= self.options.open_txns_max {
            return Err(TxnError::TooManyOpenTransactions {
                max: self.options.open_txns_max,
            });
        }
        let id = state.next_txn_id;
        state.next_txn_id += 1;
        let visible = self.visible(&state);
        let serializable = options.isolation == Isolation::Serializable;
        // A safe snapshot is one only this store's certifier can vouch for: a cluster
        // follower's commits are certified by the leader, which never saw this transaction
        // begin, so there it reads the newest snapshot and its reads are declared instead.
        let certifies_here = !self.options.elected || state.leading.is_some();
        let safe = serializable && options.read_only && !options.newest_snapshot && certifies_here;
        let snapshot = if safe {
            state.cert.safe_snapshot(2 * visible) / 2
        } else {
            visible
        };
        // What its commit is certified against: the commits after its snapshot if it may
        // write; a `read_committed` one's writes are blind until a `get_for_update`
        // ([`TxnStore::need_history`]). A read-only one keeps none: at a safe snapshot it
        // is certified against nothing, at the newest its reads are certified within the
        // window, as a one-shot request's (`TxnParts::in_window`).
        let needs_history = options.isolation != Isolation::ReadCommitted && !options.read_only;
        let expired = state.cert.register(
            id,
            2 * snapshot,
            serializable && !options.read_only,
            needs_history,
        );
        drop(state);
        self.stats.begun.fetch_add(1, Ordering::Relaxed);
        Ok(Registered {
            id,
            snapshot,
            expired,
            safe,
        })
    }

    /// The latest durable value of `key`, outside any transaction.
    ///
    /// # Errors
    /// [`TxnError::KeyTooLarge`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        check_key(key)?;
        let snapshot = self.durable_end();
        Ok(self
            .read_table()
            .get(key, snapshot)
            .and_then(|(version, value)| {
                value.map(|value| Versioned {
                    value,
                    version: Some(version),
                })
            }))
    }

    /// Durable rows in `range`, in key order, at most `limit` (≤ [`limits::SCAN_ROWS_MAX`]).
    ///
    /// # Errors
    /// [`TxnError::TooMany`] for a larger `limit`.
    pub fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<KeyValue>> {
        self.scan_page(range, limit).map(|page| page.rows)
    }

    /// [`TxnStore::scan`], with the key the next page starts at when `limit` cut the rows.
    ///
    /// # Errors
    /// As [`TxnStore::scan`].
    pub fn scan_page(&self, range: &KeyRange, limit: usize) -> Result<ScanPage> {
        self.scan_page_within(range, limit, usize::MAX)
    }

    /// [`TxnStore::scan_page`] within a byte budget for the rows: each costs its key and
    /// value bytes plus [`limits::READ_ROW_OVERHEAD_BYTES`]; the page stops at the first
    /// row that does not fit, with `next` there (fewer rows than `limit`: the budget cut
    /// it), as [`TxnStore::read_at_within`] cuts a range.
    ///
    /// # Errors
    /// As [`TxnStore::scan`]; [`TxnError::AnswerTooLarge`] (`rows[0]`) when the first row
    /// alone passes the budget.
    pub fn scan_page_within(
        &self,
        range: &KeyRange,
        limit: usize,
        answer_bytes_max: usize,
    ) -> Result<ScanPage> {
        check_scan_limit(limit)?;
        if range.is_empty() {
            return Ok(ScanPage::default());
        }
        let snapshot = self.durable_end();
        let (rows, _) = self
            .read_table()
            .scan(range.as_refs(), snapshot, limit.saturating_add(1));
        let rows = rows.into_iter().map(|r| KeyValue {
            key: r.key,
            value: r.value,
            version: Some(r.version),
        });
        let mut budget = Budget::new(answer_bytes_max);
        crate::budget::page(rows, limit, &mut budget)
            .map_err(|row| budget.exceeded("rows", 0, &row.key, Some(&row.value)))
    }

    /// Whether a failed commit append poisoned the store: it then refuses everything
    /// until reopened, and commits after the failed one never become durable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The commit stream's one partition.
    pub(crate) fn partition(&self) -> &dyn LogPartition {
        match self.stream.partition(0) {
            Ok(p) => p,
            Err(e) => unreachable!("open checked the commit stream has one partition: {e}"),
        }
    }

    /// Commits applied to the table: positions `0..applied_end()` (ahead of
    /// [`TxnStore::durable_end`] on a store that certifies, with early lock release;
    /// behind it on a cluster follower that has not caught up).
    pub fn applied_end(&self) -> u64 {
        self.read_table().applied()
    }

    /// Commits durable in the commit stream: positions `0..durable_end()`. On a cluster
    /// leader, its chain's settled prefix: storage may acknowledge a record of its chain
    /// that stands after another writer's record (see `Link`) — stored, yet never
    /// committed — so the end of the stream says nothing of the records below it there.
    pub fn durable_end(&self) -> u64 {
        self.chain_end()
            .unwrap_or_else(|| self.partition().end_offset() / self.span)
    }

    /// A store that leads (or led): the end of its chain's settled prefix.
    fn chain_end(&self) -> Option<u64> {
        // Raised from 0 only by `lead` (the epoch record's position + 1).
        Some(self.settled.get()).filter(|end| *end > 0)
    }

    /// Blocks until the commit at position `last` is durable ([`TxnStore::durable_end`]
    /// passed it) or `timeout` passes.
    pub(crate) fn wait_position(&self, last: u64, timeout: Duration) {
        if self.chain_end().is_some() {
            self.settled.wait_above(last, timeout);
        } else {
            // The end offset is above this one once the record at `last` is stored.
            self.partition()
                .wait_end_offset_above(last * self.span + self.span - 1, timeout);
        }
    }

    /// Reads and decodes the commit record at `offset`.
    ///
    /// # Errors
    /// [`TxnError::Log`] if it is not (yet) in the log; [`TxnError::Corrupt`].
    pub fn commit_record(&self, offset: u64) -> Result<CommitRecord> {
        let recs = self.partition().read(offset * self.span, 1, 1)?;
        let rec = recs
            .first()
            .filter(|r| r.offset == offset * self.span)
            .ok_or(TxnError::Corrupt {
                offset,
                reason: "no record at this offset".into(),
            })?;
        CommitRecord::decode(&rec.value).map_err(|reason| TxnError::Corrupt { offset, reason })
    }

    /// The outcome of the commit `principal` made with `request_id` (`None`: the namespace
    /// of requests without a principal), if one did (and is still in the window): what a client that lost a commit's response gets when it asks again without
    /// re-running the transaction. Waits if that commit is still in flight.
    ///
    /// # Errors
    /// [`TxnError::Poisoned`]; [`TxnError::Log`] / [`TxnError::Corrupt`] reading the record.
    pub fn committed(
        &self,
        principal: Option<&str>,
        request_id: &RequestId,
    ) -> Result<Option<CommitOutcome>> {
        let key = crate::record::scoped_request_id(principal, request_id.as_str());
        loop {
            let state = lock(&self.state);
            self.check_poisoned()?;
            if let Some(&done) = state.ids_done.get(&key) {
                drop(state);
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return self.duplicate_outcome(done.offset).map(Some);
            }
            let Some(pending) = state.ids_pending.get(&key).cloned() else {
                return Ok(None);
            };
            drop(state);
            self.stats.request_id_waits.fetch_add(1, Ordering::Relaxed);
            let mut r = lock(&pending.result);
            while r.is_none() {
                r = pending.settled.wait(r).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// The outcome of the commit at `offset` as a retry of it is answered: a duplicate,
    /// with the values its increments produced, read from its record (for a caller that
    /// kept only the offset). Waits until that commit is durable.
    ///
    /// # Errors
    /// [`TxnError::Poisoned`]; [`TxnError::Log`] / [`TxnError::Corrupt`] reading the record.
    pub fn committed_at(&self, offset: u64) -> Result<CommitOutcome> {
        self.duplicate_outcome(Some(offset))
    }

    /// Counters.
    pub fn stats(&self) -> &TxnStats {
        &self.stats
    }

    /// Open transactions, committed-transaction summaries retained by the certifier, keys
    /// and versions in the table: the figures that bounded memory is about.
    pub fn memory(&self) -> MemoryFigures {
        let (open, retained, certifier_bytes) = {
            let s = lock(&self.state);
            (s.cert.open(), s.cert.retained(), s.cert.bytes())
        };
        let t = self.read_table();
        MemoryFigures {
            open_txns: open,
            retained_summaries: retained,
            certifier_bytes,
            keys: t.keys(),
            versions: t.versions(),
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &TxnStoreOptions {
        &self.options
    }

    // ---- crate-internal: used by Txn ----

    /// The snapshot window, in commits.
    pub(crate) fn window(&self) -> u64 {
        self.options.snapshot_window_commits
    }

    /// Commits behind the newest whose versions the table keeps regardless of readers.
    fn kept_commits(&self) -> u64 {
        self.options.history_commits.max(self.window())
    }

    fn visible(&self, state: &CommitState) -> u64 {
        if self.options.early_lock_release {
            state.next_offset
        } else {
            self.durable_end().min(state.next_offset)
        }
    }

    /// The snapshot a `read_committed` read takes now.
    pub(crate) fn visible_now(&self) -> u64 {
        // The table applies exactly the certified commits, under the commit lock: its
        // applied offset is `next_offset` without taking that lock.
        let applied = self.read_table().applied();
        if self.options.early_lock_release {
            applied
        } else {
            self.durable_end().min(applied)
        }
    }

    pub(crate) fn read_table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_table(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Poisons the store (see [`TxnStore::is_poisoned`]) and wakes its waits.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        let _state = lock(&self.state);
        self.advanced.notify_all();
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(TxnError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Waits until the commit at `offset` is durable (early lock release: nobody observes a
    /// commit a crash could undo).
    pub(crate) fn wait_durable(&self, offset: u64) -> Result<()> {
        if self.durable_end() > offset {
            return Ok(());
        }
        self.stats.durability_waits.fetch_add(1, Ordering::Relaxed);
        while self.durable_end() <= offset {
            self.check_poisoned()?;
            self.wait_position(offset, Duration::from_millis(50));
        }
        Ok(())
    }

    /// A future resolving once the commits at positions `0..end` are durable
    /// ([`TxnStore::durable_end`] reached `end`) — or the log closed first; it yields the
    /// durable end then (a position, below `end` only if the log closed). For async callers
    /// that must not hold a thread; it polls nothing itself (drop it to stop waiting).
    pub fn durable_reached(&self, end: u64) -> impl Future<Output = u64> + Send + Unpin + 'static {
        let span = self.span;
        let wait = end.checked_sub(1).map(|last| match self.chain_end() {
            Some(_) => (self.settled.above(last), 1),
            // The end offset is above this once the record at `last` is stored.
            None => (
                self.partition().end_offset_above(last * span + span - 1),
                span,
            ),
        });
        Box::pin(async move {
            match wait {
                Some((wait, unit)) => wait.await / unit,
                None => 0,
            }
        })
    }

    pub(crate) fn stats_mut(&self) -> &TxnStats {
        &self.stats
    }

    /// Tells the certifier that the open transaction `id` will be certified against the
    /// commits after the reads it takes from now on (a `read_committed` transaction's first
    /// `get_for_update`), so that their summaries are kept while it is open.
    pub(crate) fn need_history(&self, id: u64) {
        lock(&self.state).cert.need_history(id);
    }

    /// Unregisters a transaction that ends without a commit record.
    pub(crate) fn finish(&self, id: u64) {
        let mut state = lock(&self.state);
        let now = 2 * self.visible(&state);
        state.cert.finish(id, now, None);
    }

    /// The commit path, blocking until durable. See the module documentation.
    pub(crate) fn commit(
        &self,
        parts: TxnParts,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> Result<CommitOutcome> {
        match self.prepare(parts, request_id, traceparent)? {
            Prepared::Done(outcome) => Ok(outcome),
            Prepared::InFlight(completion, mut meta) => {
                let result = completion.wait();
                let before = meta.link.before.take().map(|b| b.wait());
                self.settle(meta, result, before)
            }
        }
    }

    /// The rest of an async commit after [`TxnStore::prepare`]: waits for the append's
    /// fsync without holding a thread, then settles.
    pub(crate) async fn settle_async(
        self: Arc<Self>,
        prepared: Result<Prepared>,
    ) -> Result<CommitOutcome> {
        match prepared? {
            Prepared::Done(outcome) => Ok(outcome),
            Prepared::InFlight(completion, mut meta) => {
                let result = completion.await;
                let before = match meta.link.before.take() {
                    Some(before) => Some(before.await),
                    None => None,
                };
                self.settle(meta, result, before)
            }
        }
    }

    /// The commit path up to the append: everything but waiting for the fsync.
    pub(crate) fn prepare(
        &self,
        parts: TxnParts,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> Result<Prepared> {
        if let Some(tp) = traceparent
            && let Err(e) = logbook_log::dedup::validate_traceparent(tp)
        {
            self.finish(parts.id);
            return Err(e.into());
        }
        let checked = limits::check_principal(parts.request.principal.as_deref())
            .and_then(|()| limits::check_footprint(&parts.request));
        if let Err(e) = checked {
            self.finish(parts.id);
            return Err(e);
        }
        // Only a commit with a request id needs its fingerprint (computed outside the lock).
        let intents = request_id.map(|_| parts.request.intents_fingerprint());
        let outcome = loop {
            let mut state = lock(&self.state);
            if let Err(e) = self.check_poisoned() {
                state.cert.finish(parts.id, 0, None);
                return Err(e);
            }
            // Expiry happens under this lock, so this check cannot race with it: an expired
            // transaction's snapshot may already be garbage-collected.
            if parts
                .expired
                .as_ref()
                .is_some_and(|e| e.load(Ordering::Acquire))
            {
                return Err(TxnError::TransactionTooOld {
                    what: "newer_commits",
                    limit: self.options.txn_newer_commits_max,
                });
            }
            if let Some(id) = request_id {
                state = match self.check_request_id(state, &parts, id, intents) {
                    IdCheck::New(state) => state,
                    IdCheck::Answered(answer) => return answer,
                    IdCheck::Settled => continue, // its original settled: look again
                };
            }
            if let Err(e) = self.admit(&state, &parts) {
                if parts.expired.is_some() {
                    let now = 2 * self.visible(&state);
                    state.cert.finish(parts.id, now, None);
                }
                return Err(e);
            }
            break self.certify_and_append(&mut state, &parts, intents, request_id, traceparent);
        };
        let Appended {
            offset,
            completion,
            incremented,
            pending,
            link,
        } = match outcome {
            Ok(Certification::Appended(appended)) => appended,
            Ok(Certification::ReadOnly) => {
                self.stats.read_only_commits.fetch_add(1, Ordering::Relaxed);
                return Ok(Prepared::Done(CommitOutcome {
                    offset: None,
                    duplicate: false,
                    incremented: Vec::new(),
                }));
            }
            Err(e) => return Err(self.revealed_when_durable(e)),
        };
        Ok(Prepared::InFlight(
            completion,
            InFlight {
                offset,
                incremented,
                pending,
                request_id: request_id.map(|id| parts.request.scoped_id(id)),
                intents,
                read_dependent: parts.request.read_any,
                link,
            },
        ))
    }

    /// The checks of a commit whose snapshot the certifier does not keep history for, made
    /// under the commit lock, where garbage collection cannot move under them: a one-shot
    /// request's snapshot, locks and declared versions; a registered transaction certified
    /// within the window ([`TxnParts::in_window`]), its snapshot.
    ///
    /// # Errors
    /// As [`check_window`], [`check_certified`], [`check_locks`], [`check_versions`].
    fn admit(&self, state: &CommitState, parts: &TxnParts) -> Result<()> {
        let one_shot = parts.expired.is_none();
        if !one_shot && !parts.in_window {
            return Ok(());
        }
        let snapshot = parts.request.snapshot;
        let table = self.read_table();
        let durable = self.durable_end();
        if one_shot {
            check_ahead(snapshot, durable)?;
        }
        check_window(&table, snapshot, self.window())?;
        check_certified(
            snapshot,
            state.certified_from.max(state.cert.forgotten_to()),
        )?;
        if one_shot {
            check_locks(&parts.request, durable)?;
            check_versions(&table, &parts.request)?;
        }
        Ok(())
    }

    /// A commit's request id against the table of committed and in-flight ids (the commit
    /// lock held): unknown (go on certifying), answered (a duplicate, or a conflict with a
    /// different transaction), or an original in flight (waited for until it settled).
    fn check_request_id<'a>(
        &'a self,
        mut state: MutexGuard<'a, CommitState>,
        parts: &TxnParts,
        id: &RequestId,
        intents: Option<u128>,
    ) -> IdCheck<'a> {
        // Ids are looked up in the sender's namespace: another principal's commit under the
        // same id is another request, never a duplicate or a conflict of this one.
        let key = parts.request.scoped_id(id);
        if let Some(&done) = state.ids_done.get(&key) {
            let now = 2 * self.visible(&state);
            state.cert.finish(parts.id, now, None);
            drop(state);
            // Only a retry of the same transaction is a duplicate. (A format-1 commit has
            // no fingerprint, and a read-dependent one is not compared: any retry of its id
            // is accepted.)
            if done.intents.is_some() && done.intents != intents {
                tracing::debug!(
                    txn = parts.id,
                    request_id = id.as_str(),
                    offset = ?done.offset,
                    "request id reused by a different transaction"
                );
                return IdCheck::Answered(Err(TxnError::RequestIdConflict {
                    request_id: id.as_str().to_string(),
                    offset: done.offset,
                }));
            }
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return IdCheck::Answered(self.duplicate_outcome(done.offset).map(Prepared::Done));
        }
        let Some(pending) = state.ids_pending.get(&key).cloned() else {
            return IdCheck::New(state);
        };
        drop(state);
        self.stats.request_id_waits.fetch_add(1, Ordering::Relaxed);
        let mut r = lock(&pending.result);
        while r.is_none() {
            r = pending.settled.wait(r).unwrap_or_else(|e| e.into_inner());
        }
        IdCheck::Settled
    }

    /// A refused commit's error, once what it reveals is durable: an error that names a
    /// commit (the conflicting one, the version found) must not show one a crash could
    /// undo. (A read-only transaction is named by the offset after it, which need not
    /// exist yet: only offsets already given to commit records are waited for.) A failed
    /// atomic operation examined the newest state, tombstones included: it waits for every
    /// commit before it.
    fn revealed_when_durable(&self, e: TxnError) -> TxnError {
        let named = match &e {
            TxnError::SerializationFailure {
                conflicting_offset, ..
            } => Some(*conflicting_offset),
            TxnError::VersionMismatch { found, .. } => *found,
            TxnError::KeyExists { version, .. } => Some(*version),
            _ => None,
        };
        let next = lock(&self.state).next_offset;
        let gate = match &e {
            TxnError::VersionMismatch { .. }
            | TxnError::KeyExists { .. }
            | TxnError::NotAnInteger { .. }
            | TxnError::IncrementOverflow { .. } => next.checked_sub(1),
            _ => named.filter(|offset| *offset < next),
        };
        match gate.map(|offset| self.wait_durable(offset)) {
            Some(Err(wait)) => wait,
            _ => e,
        }
    }

    /// After the append of a prepared commit resolved and the record before it in the chain
    /// settled (`before`; `None`: none was in flight): request-id bookkeeping, poisoning on
    /// failure, the outcome. Only a record in the chain is acknowledged ([`Link`]).
    pub(crate) fn settle(
        &self,
        meta: InFlight,
        result: logbook_log::Result<logbook_log::AppendAck>,
        before: Option<logbook_log::Result<logbook_log::AppendAck>>,
    ) -> Result<CommitOutcome> {
        let InFlight {
            offset,
            incremented,
            pending,
            request_id,
            intents,
            read_dependent,
            link,
        } = meta;
        let chain = ChainOutcome::of(&result, before);
        link.after
            .complete(chain.carried(&self.options.stream, offset * self.span));
        let ok = match &chain {
            ChainOutcome::InChain(ack) => {
                assert_eq!(
                    ack.base_offset,
                    offset * self.span,
                    "the log stored a commit away from its expected end offset"
                );
                if self.chain_end().is_some() {
                    // It and every record before it are in the chain: durable.
                    self.settled.raise(offset + 1);
                }
                true
            }
            // The table already holds this commit (early lock release) and later commits
            // may depend on it: refuse everything until reopened, which rebuilds the table
            // from what the log holds.
            ChainOutcome::Displaced { .. } => {
                self.poisoned.store(true, Ordering::Release);
                false
            }
            ChainOutcome::Unknown(why) => {
                self.poisoned.store(true, Ordering::Release);
                // The one trace of why this store refuses everything from now on (review
                // r15 F4): the commit's position, where it was to be stored, the epoch, the
                // log's error. Not the request id or the writes: those are the client's.
                tracing::warn!(
                    position = offset,
                    stream_offset = offset * self.span,
                    epoch = self.leading(),
                    error = %why,
                    "a commit's outcome is unknown (its append may or may not be stored): the \
                     store is poisoned, refusing commits until reopened from the commit stream"
                );
                false
            }
        };
        if let (Some(id), Some(pending)) = (request_id, pending) {
            let mut state = lock(&self.state);
            state.ids_pending.remove(&id);
            if ok {
                remember_id(
                    &mut state,
                    id,
                    Remembered {
                        offset: Some(offset),
                        intents: intents.filter(|_| !read_dependent),
                    },
                    self.options.request_ids_max,
                );
            }
            drop(state);
            *lock(&pending.result) = Some(ok.then_some(offset));
            pending.settled.notify_all();
        }
        match chain {
            ChainOutcome::InChain(_) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                Ok(CommitOutcome {
                    offset: Some(offset),
                    duplicate: false,
                    incremented,
                })
            }
            ChainOutcome::Displaced { actual } => Err(self.displaced(offset, actual, &result)),
            ChainOutcome::Unknown(why) => match result {
                Err(own) => Err(own.into()),
                Ok(_) => Err(LogError::OutcomeUnknown {
                    backend: "commit stream's",
                    why,
                }
                .into()),
            },
        }
    }

    /// The error of a commit that is not in the chain: refused at storage (`own` is the
    /// refusal), or stored after a record another writer put where its predecessor should
    /// be. Replay never applies it: it did not commit.
    fn displaced(
        &self,
        offset: u64,
        end: u64,
        own: &logbook_log::Result<logbook_log::AppendAck>,
    ) -> TxnError {
        let detail = match own {
            Err(_) => format!(
                "the commit stream ends at offset {end}, not {}: this commit was not stored",
                offset * self.span
            ),
            Ok(_) => format!(
                "a commit before this one in the chain was refused (the commit stream ended at offset \
                 {end}), so this one, stored at offset {} after another writer's record, is \
                 skipped by replay: it did not commit",
                offset * self.span
            ),
        };
        if let Some(epoch) = self.leading() {
            tracing::warn!(
                epoch,
                offset,
                end,
                "commit refused at storage: fenced, stepping down"
            );
            return TxnError::Fenced { epoch, detail };
        }
        TxnError::CommitStream {
            stream: self.options.stream.clone(),
            reason: format!(
                "another writer appended to it: {detail}; the store is poisoned until reopened"
            ),
        }
    }

    /// The commit path under the commit lock, in its steps: certify (a conflict aborts);
    /// a transaction that wrote nothing is only recorded; otherwise resolve the atomic
    /// operations into a commit record, append it, and apply it to the table.
    fn certify_and_append(
        &self,
        state: &mut CommitState,
        parts: &TxnParts,
        intents: Option<u128>,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> Result<Certification> {
        if self.options.elected && state.leading.is_none() {
            state.cert.finish(parts.id, 0, None);
            return Err(TxnError::NotLeader);
        }
        let certified = self.certify(state, parts)?;
        if parts.request.writes.is_empty() {
            self.record_read_only(state, parts, certified, intents, request_id);
            return Ok(Certification::ReadOnly);
        }
        self.make_room(state, parts, &certified)?;
        let resolved = self.resolve_record(parts, intents, request_id, traceparent, state.leading);
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                state.cert.finish(parts.id, certified.now_seq, None);
                return Err(e);
            }
        };
        let offset = state.next_offset;
        // The commit goes where the store expects its offset or nowhere: a record another
        // writer put in the stream is refused at storage, not discovered afterwards.
        let completion = match self.partition().append_batch(
            &[Record::new(resolved.bytes)],
            AppendCondition::EndOffset(offset * self.span),
        ) {
            Ok(c) => c,
            Err(e) => {
                state.cert.finish(parts.id, certified.now_seq, None);
                return Err(e.into());
            }
        };
        // From here on the commit is in the log's queue: it will be durable or poison us.
        self.apply_appended(state, parts, certified, offset, resolved.writes);
        let pending = request_id.map(|id| {
            let p = Arc::new(Outcome::default());
            state
                .ids_pending
                .insert(parts.request.scoped_id(id), p.clone());
            p
        });
        let (settled, after) = logbook_log::AppendCompletion::channel();
        let before = state.chain.replace(settled);
        Ok(Certification::Appended(Appended {
            offset,
            completion,
            incremented: resolved.incremented,
            pending,
            link: Link { before, after },
        }))
    }

    /// Step 1: the certifier's decision. A conflict unregisters the transaction, counts the
    /// abort and names the commit it conflicted with.
    fn certify(&self, state: &mut CommitState, parts: &TxnParts) -> Result<Certified> {
        let serializable = parts.request.isolation == Isolation::Serializable;
        let snapshot_seq = 2 * parts.request.snapshot;
        let footprint = footprint(parts, snapshot_seq);
        let now_seq = 2 * self.visible(state);
        let commit_seq = if parts.request.writes.is_empty() {
            2 * state.next_offset
        } else {
            2 * state.next_offset + 1
        };
        let fp = Footprint {
            serializable,
            snapshot_reads: parts.request.isolation != Isolation::ReadCommitted,
            snapshot_seq,
            writes: &footprint,
            reads: &parts.request.reads,
            ranges: &parts.request.ranges,
        };
        let checked = state.cert.certify(&fp, commit_seq).and_then(|out| {
            // Only a one-shot request is unregistered (see `admit_unregistered`).
            if parts.expired.is_none() && serializable && !parts.request.writes.is_empty() {
                state
                    .cert
                    .admit_unregistered(out.as_ref().map(|(s, k)| (*s, k.as_slice())))?;
            }
            Ok(out.map(|(s, _)| s))
        });
        match checked {
            Ok(out_min) => Ok(Certified {
                commit_seq,
                snapshot_seq,
                serializable,
                out_min,
                classes: footprint.into_iter().map(|(k, (c, _))| (k, c)).collect(),
                now_seq,
            }),
            Err(conflict) => {
                state.cert.finish(parts.id, now_seq, None);
                let counter = match conflict.kind {
                    crate::ConflictKind::WriteWrite | crate::ConflictKind::StaleIncrement => {
                        &self.stats.aborts_write_write
                    }
                    crate::ConflictKind::DangerousStructure => {
                        &self.stats.aborts_dangerous_structure
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(TxnError::SerializationFailure {
                    kind: conflict.kind,
                    key: show_key(&conflict.key),
                    conflicting_offset: conflict.other_seq / 2,
                })
            }
        }
    }

    /// Step 1b for a transaction that writes: room in the certifier's budget for the
    /// summary it will leave, made before anything is appended (see the certifier's
    /// memory rules). No room unregisters it and counts the abort.
    fn make_room(
        &self,
        state: &mut CommitState,
        parts: &TxnParts,
        certified: &Certified,
    ) -> Result<()> {
        let needed = state.cert.bytes_to_keep(
            certified.serializable,
            &certified.classes,
            &parts.request.reads,
            &parts.request.ranges,
        );
        let made = state
            .cert
            .make_room(parts.id, &parts.request.principal, needed);
        made.map_err(|no_room| {
            state.cert.finish(parts.id, certified.now_seq, None);
            self.stats
                .aborts_certifier_full
                .fetch_add(1, Ordering::Relaxed);
            TxnError::from(no_room)
        })
    }

    /// Step 2 for a transaction that wrote nothing: recorded in the certifier (its reads
    /// still matter to SSI) and its request id remembered — in memory only, since nothing
    /// is logged for it (a retry is answered until restart).
    fn record_read_only(
        &self,
        state: &mut CommitState,
        parts: &TxnParts,
        certified: Certified,
        intents: Option<u128>,
        request_id: Option<&RequestId>,
    ) {
        let now_seq = certified.now_seq;
        self.record_certified(state, parts, certified, now_seq);
        if let Some(id) = request_id {
            let done = Remembered {
                offset: None,
                intents: intents.filter(|_| !parts.request.read_any),
            };
            remember_id(
                state,
                parts.request.scoped_id(id),
                done,
                self.options.request_ids_max,
            );
        }
    }

    /// Step 2: the commit record, its atomic operations and conditions evaluated on the
    /// newest committed state (a failure counts as a precondition abort), within the size
    /// limit.
    fn resolve_record(
        &self,
        parts: &TxnParts,
        intents: Option<u128>,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
        epoch: Option<u64>,
    ) -> Result<Resolved> {
        let resolved = {
            let table = self.read_table();
            resolve(&table, &parts.request.writes)
        };
        let (writes, incremented) = resolved.inspect_err(|_| {
            self.stats
                .aborts_precondition
                .fetch_add(1, Ordering::Relaxed);
        })?;
        let record = CommitRecord {
            isolation: parts.request.isolation,
            snapshot: parts.request.snapshot,
            request_id: request_id.map(|id| parts.request.scoped_id(id)),
            traceparent: traceparent.map(str::to_string),
            intents,
            read_dependent: parts.request.read_any,
            writes,
            epoch,
        };
        let bytes = record.encode();
        let max = limits::COMMIT_RECORD_BYTES_MAX - 1024;
        if bytes.len() > max {
            return Err(TxnError::TooMany {
                what: "commit bytes",
                max,
            });
        }
        Ok(Resolved {
            bytes,
            writes: record.writes,
            incremented,
        })
    }

    /// Step 3, once the record is queued at `offset`: the certifier records the commit,
    /// the table applies it (and collects garbage below the horizon), and transactions the
    /// commit made too old expire.
    fn apply_appended(
        &self,
        state: &mut CommitState,
        parts: &TxnParts,
        certified: Certified,
        offset: u64,
        writes: Vec<(Vec<u8>, WriteOp)>,
    ) {
        let applied: Vec<(Vec<u8>, Option<Value>)> = writes.into_iter().map(resolved).collect();
        // Record first: the committing transaction no longer pins the horizon.
        // Where new transactions start after this commit: right after it, or without early
        // lock release at the durable end.
        let visible_after = if self.options.early_lock_release {
            offset + 1
        } else {
            self.durable_end().min(offset + 1)
        };
        self.record_certified(state, parts, certified, 2 * visible_after);
        let horizon = {
            // A read-only serializable transaction may still begin at the published safe
            // snapshot, which can be older than every open transaction.
            // And `TxnStore::get` reads at the durable end, below commits in flight.
            let oldest = state
                .cert
                .horizon_seq()
                .map_or(visible_after, |s| s / 2)
                .min(state.cert.safe_seq() / 2)
                .min(self.durable_end());
            oldest
                .min(visible_after)
                .min((offset + 1).saturating_sub(self.kept_commits()))
        };
        {
            let mut table = self.write_table();
            assert_eq!(
                table.applied(),
                offset,
                "the table applies exactly the certified commits"
            );
            table.apply(offset, &applied, horizon);
            table.gc_step(horizon, limits::GC_KEYS_PER_COMMIT);
        }
        state.next_offset = offset + 1;
        // Age is checked every 256 commits (it walks every open transaction).
        let age_max = offset
            .is_multiple_of(256)
            .then(|| Duration::from_millis(self.options.txn_age_ms_max));
        let expired = state.cert.expire(
            2 * state.next_offset,
            2 * self.options.txn_newer_commits_max,
            age_max,
        );
        self.stats
            .aborts_too_old
            .fetch_add(expired as u64, Ordering::Relaxed);
    }

    /// Records a certified transaction in the certifier, which unregisters it.
    fn record_certified(
        &self,
        state: &mut CommitState,
        parts: &TxnParts,
        certified: Certified,
        now_seq: u64,
    ) {
        state.cert.record(
            parts.id,
            parts.request.principal.clone(),
            certified.commit_seq,
            certified.snapshot_seq,
            certified.serializable,
            certified.classes,
            parts.request.reads.clone(),
            parts.request.ranges.clone(),
            certified.out_min,
            now_seq,
        );
    }

    /// The answer to a retry of a committed request id: the original commit (`None`: a
    /// read-only one).
    fn duplicate_outcome(&self, offset: Option<u64>) -> Result<CommitOutcome> {
        let Some(offset) = offset else {
            return Ok(CommitOutcome {
                offset: None,
                duplicate: true,
                incremented: Vec::new(),
            });
        };
        self.wait_durable(offset)?;
        let record = self.commit_record(offset)?;
        Ok(CommitOutcome {
            offset: Some(offset),
            duplicate: true,
            incremented: record
                .writes
                .iter()
                .filter_map(|(k, op)| match op {
                    WriteOp::Incremented(n) => Some((k.clone(), *n)),
                    _ => None,
                })
                .collect(),
        })
    }
}

/// The keys a transaction writes or locks, with their class and the base position of the
/// write-write check (`None`: not checked — a `read_committed` blind write).
fn footprint(parts: &TxnParts, snapshot_seq: u64) -> HashMap<Vec<u8>, (WriteClass, Option<u64>)> {
    let mut footprint = HashMap::new();
    for (key, p) in &parts.request.writes {
        let class = match p {
            // An increment commutes only if the transaction did not also read the key:
            // a read-then-increment is a read-modify-write (the overdraft check).
            // So is an increment of a key read with `get_for_update`.
            Write::Increment(_)
                if !parts.request.reads.contains_key(key)
                    && !parts.request.locks.contains_key(key)
                    && !parts.request.ranges.iter().any(|r| in_range(r, key)) =>
            {
                WriteClass::Increment
            }
            _ => WriteClass::Write,
        };
        let base = match parts.request.isolation {
            Isolation::ReadCommitted => parts.request.locks.get(key).map(|at| 2 * at),
            _ => Some(snapshot_seq),
        };
        footprint.insert(key.clone(), (class, base));
    }
    for (key, at) in &parts.request.locks {
        footprint
            .entry(key.clone())
            .or_insert((WriteClass::Lock, Some(2 * at)));
    }
    footprint
}

/// Applies the commit stream's records from position `state.next_offset` to the end the
/// log shows now: commit records to the table (and their request ids), epoch records as
/// positions that write nothing. A commit stamped with an epoch older than an epoch record
/// before it is skipped: a deposed leader's append that storage should have refused (its
/// expected end held because a newer leader's record took its predecessor's position). So is
/// every later commit of the newest epoch, up to the next epoch record: the deposed leader's
/// record took the position of one of the newest leader's records, which was refused, and
/// the records after that one were certified after it ([`Link`]); its leader answered none
/// of them as committed.
///
/// # Errors
/// [`TxnError::Corrupt`] for a record that is not a commit-stream record or sits away from
/// its position; [`TxnError::Log`].
pub(crate) fn replay(
    partition: &dyn LogPartition,
    span: u64,
    options: &TxnStoreOptions,
    state: &mut CommitState,
    table: &mut Table,
) -> Result<()> {
    loop {
        // Read until the log has nothing more: a follower's handle learns the end by reading.
        let recs = partition.read(
            state.next_offset * span,
            REPLAY_RECORDS_MAX,
            REPLAY_BYTES_MAX,
        )?;
        if recs.is_empty() {
            return Ok(());
        }
        apply_records(recs, span, options, state, table)?;
    }
}

/// Records a replay or a follower reads at once, at most.
pub(crate) const REPLAY_RECORDS_MAX: usize = 4096;
/// Bytes of keys and values a replay or a follower reads at once, at most.
pub(crate) const REPLAY_BYTES_MAX: usize = 16 << 20;

/// Applies `recs`, read from the commit stream at position `state.next_offset`, by the
/// rules of [`replay`].
///
/// # Errors
/// As [`replay`].
pub(crate) fn apply_records(
    recs: Vec<logbook_log::StoredRecord>,
    span: u64,
    options: &TxnStoreOptions,
    state: &mut CommitState,
    table: &mut Table,
) -> Result<()> {
    let kept = options.history_commits.max(options.snapshot_window_commits);
    for rec in recs {
        let position = state.next_offset;
        let corrupt = |reason: String| TxnError::Corrupt {
            offset: position,
            reason,
        };
        if rec.offset != position * span {
            return Err(corrupt(format!(
                "found at log offset {}, not {}: the commit stream holds one record per batch",
                rec.offset,
                position * span
            )));
        }
        let horizon = (position + 1).saturating_sub(kept);
        match Entry::decode(&rec.value).map_err(corrupt)? {
            Entry::Epoch(epoch) => {
                if epoch.token <= state.epoch_seen {
                    return Err(corrupt(format!(
                        "epoch {} after epoch {}: fencing tokens only grow",
                        epoch.token, state.epoch_seen
                    )));
                }
                tracing::info!(epoch = epoch.token, leader = %epoch.node_id, position, "epoch record");
                state.epoch_seen = epoch.token;
                state.chain_broken = false;
                table.apply(position, &[], horizon);
            }
            Entry::Commit(commit) if commit.epoch.is_some_and(|e| e < state.epoch_seen) => {
                tracing::warn!(position, epoch = ?commit.epoch, newer = state.epoch_seen,
                    "a commit of a deposed leader after a newer epoch: ignored");
                state.chain_broken = true;
                table.apply(position, &[], horizon);
            }
            Entry::Commit(commit) if state.chain_broken && commit.epoch.is_some() => {
                tracing::warn!(position, epoch = ?commit.epoch,
                    "a commit chained after a record a deposed leader displaced: ignored");
                table.apply(position, &[], horizon);
            }
            Entry::Commit(commit) => {
                let writes: Vec<(Vec<u8>, Option<Value>)> =
                    commit.writes.into_iter().map(resolved).collect();
                table.apply(position, &writes, horizon);
                if let Some(id) = commit.request_id {
                    let done = Remembered {
                        offset: Some(position),
                        intents: commit.intents.filter(|_| !commit.read_dependent),
                    };
                    remember_id(state, id, done, options.request_ids_max);
                }
            }
        }
        state.next_offset = position + 1;
    }
    Ok(())
}

/// Figures of what the store holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFigures {
    /// Open transactions.
    pub open_txns: usize,
    /// Summaries of committed transactions the certifier keeps for open ones.
    pub retained_summaries: usize,
    /// Bytes those summaries take, as the certifier's budget counts them
    /// ([`TxnStoreOptions::certifier_bytes_max`]).
    pub certifier_bytes: usize,
    /// Keys in the table (tombstones not yet collected included).
    pub keys: usize,
    /// Versions over all keys.
    pub versions: u64,
}

fn remember_id(state: &mut CommitState, id: String, commit: Remembered, max: usize) {
    if max == 0 {
        return;
    }
    if state.ids_done.insert(id.clone(), commit).is_none() {
        state.ids_order.push_back(id);
    }
    while state.ids_order.len() > max {
        if let Some(old) = state.ids_order.pop_front() {
            state.ids_done.remove(&old);
        }
    }
}

/// A resolved write as the table holds it (`None`: deleted).
fn resolved((key, op): (Vec<u8>, WriteOp)) -> (Vec<u8>, Option<Value>) {
    let value = match op {
        WriteOp::Put(v) => Some(Value::from(v)),
        WriteOp::Incremented(n) => Some(Value::from(n.to_string().into_bytes())),
        WriteOp::Delete => None,
    };
    (key, value)
}

/// What [`resolve`] makes of a transaction's writes: the resolved writes in key order, and
/// the value each incremented key ended with.
type Resolution = (Vec<(Vec<u8>, WriteOp)>, Vec<(Vec<u8>, i64)>);

/// Evaluates conditions and increments against the newest state of the table.
fn resolve(
    table: &Table,
    writes: &std::collections::BTreeMap<Vec<u8>, Write>,
) -> Result<Resolution> {
    let mut out = Vec::with_capacity(writes.len());
    let mut incremented = Vec::new();
    for (key, p) in writes {
        let latest = table.latest(key);
        let current = latest
            .as_ref()
            .and_then(|(v, value)| value.as_ref().map(|x| (*v, x)));
        let cond = match p {
            Write::Put { cond, .. } | Write::Delete { cond } => *cond,
            Write::Increment(_) => Condition::None,
        };
        match cond {
            Condition::None => {}
            Condition::IfAbsent => {
                if let Some((version, _)) = current {
                    return Err(TxnError::KeyExists {
                        key: show_key(key),
                        version,
                    });
                }
            }
            Condition::IfVersion(expected) => {
                let found = current.map(|(v, _)| v);
                if found != Some(expected) {
                    return Err(TxnError::VersionMismatch {
                        key: show_key(key),
                        expected,
                        found,
                    });
                }
            }
        }
        let op = match p {
            Write::Put { value, .. } => WriteOp::Put(value.to_vec()),
            Write::Delete { .. } => WriteOp::Delete,
            Write::Increment(by) => {
                let base = match current {
                    None => 0,
                    Some((_, v)) => {
                        parse_i64(v).ok_or_else(|| TxnError::NotAnInteger { key: show_key(key) })?
                    }
                };
                let n = base
                    .checked_add(*by)
                    .ok_or_else(|| TxnError::IncrementOverflow {
                        key: show_key(key),
                        current: base,
                        by: *by,
                    })?;
                incremented.push((key.clone(), n));
                WriteOp::Incremented(n)
            }
        };
        out.push((key.clone(), op));
    }
    Ok((out, incremented))
}
