//! Transactions in one round trip: reads at a snapshot ([`TxnStore::read_at`]) and
//! self-contained commit requests ([`TxnStore::commit_request`]), as FoundationDB's clients
//! read at a version and send their read conflict ranges with the commit.
//!
//! ```text
//! client ── read_at(keys, ranges, snapshot?) ──▶ values, versions, next, snapshot
//!        ── commit_request({isolation, snapshot, reads, ranges, locks, writes}) ──▶ outcome
//! ```
//!
//! Nothing is registered between the two calls: the snapshot is checked against the
//! **snapshot window** ([`crate::TxnStoreOptions::snapshot_window_commits`]) — the table
//! keeps the versions, and the certifier the summaries of the commits, that far back — and
//! the request is certified exactly as an interactive transaction's (the same
//! [`CommitRequest`] is what an interactive commit hands to the commit path). Write-only
//! and atomic transactions need only the commit; a read-modify-write needs both calls.

use std::future::Future;
use std::sync::Arc;

use logbook_log::RequestId;

use crate::admission::{check_ahead, check_window};
use crate::budget::{self, Budget};
use crate::error::{Result, TxnError, show_key};
use crate::limits;
use crate::limits::{check_key, check_scan_limit};
use crate::mvcc::Table;
use crate::request::{CommitRequest, TxnParts, Write};
use crate::store::{CommitOutcome, TxnStore};
use crate::{KeyRange, KeyValue, ScanPage, Versioned};

/// What [`TxnStore::read_at`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRead {
    /// The snapshot read at: the commits at offsets below it, all durable.
    pub snapshot: u64,
    /// One entry per key asked for, in the order asked: its value and version, or `None`
    /// when it is absent at the snapshot.
    pub keys: Vec<Option<Versioned>>,
    /// One page per range asked for, in the order asked (`next` set when the limit cut it).
    pub ranges: Vec<ScanPage>,
}

/// The id one-shot requests go by in the certifier: never registered (registered
/// transactions are numbered from 1).
const UNREGISTERED: u64 = 0;

impl TxnStore {
    /// Reads `keys` and `ranges` (each with its row limit) at one snapshot: `snapshot`, or
    /// the newest when `None`. The answer counts only durable commits (it waits for those
    /// below its snapshot). Nothing is registered or recorded: declare what was read in a
    /// [`CommitRequest`] to have it certified.
    ///
    /// # Errors
    /// [`TxnError::SnapshotTooOld`] (retryable) for a snapshot behind the window;
    /// [`TxnError::InvalidRequest`] for a snapshot ahead of the durable log or more keys
    /// ([`limits::READ_SET_KEYS_MAX`]) or ranges ([`limits::READ_RANGES_MAX`]) than a
    /// transaction may read; [`TxnError::KeyTooLarge`]; [`TxnError::TooMany`] for a range
    /// limit above [`limits::SCAN_ROWS_MAX`]; [`TxnError::Poisoned`].
    pub fn read_at(
        &self,
        snapshot: Option<u64>,
        keys: &[Vec<u8>],
        ranges: &[(KeyRange, usize)],
    ) -> Result<SnapshotRead> {
        self.read_at_within(snapshot, keys, ranges, usize::MAX)
    }

    /// [`TxnStore::read_at`] within a byte budget for the answer: each key and row costs
    /// its key and value bytes plus [`limits::READ_ROW_OVERHEAD_BYTES`]. Keys come first
    /// and must fit whole; then the ranges in order, each stopping at the first row that
    /// does not fit, with `next` there (as a limit cuts a page) — every later range
    /// included, so a client reads on from each `next` at the same snapshot.
    ///
    /// # Errors
    /// As [`TxnStore::read_at`]; [`TxnError::AnswerTooLarge`] when the keys pass the budget,
    /// or a range's first row does not fit an answer holding nothing else.
    pub fn read_at_within(
        &self,
        snapshot: Option<u64>,
        keys: &[Vec<u8>],
        ranges: &[(KeyRange, usize)],
        answer_bytes_max: usize,
    ) -> Result<SnapshotRead> {
        self.check_poisoned()?;
        check_count("keys", keys.len(), limits::READ_SET_KEYS_MAX)?;
        check_count("ranges", ranges.len(), limits::READ_RANGES_MAX)?;
        for key in keys {
            check_key(key)?;
        }
        for (_, limit) in ranges {
            check_scan_limit(*limit)?;
        }
        if let Some(s) = snapshot {
            self.reach(s)?;
        }
        let read = {
            let table = self.read_table();
            let snapshot = match snapshot {
                Some(s) => {
                    check_ahead(s, self.durable_end())?;
                    check_window(&table, s, self.window())?;
                    s
                }
                None => self.visible_in(&table),
            };
            read_table_at(&table, snapshot, keys, ranges, answer_bytes_max)?
        };
        // Early lock release: the newest snapshot may count commits not yet durable.
        if let Some(last) = read.snapshot.checked_sub(1) {
            self.wait_durable(last)?;
        }
        Ok(read)
    }

    /// Commits a self-contained request — the one-round-trip form of a transaction — and
    /// returns once it is durable. It is certified exactly as an interactive transaction
    /// (first committer wins; SSI on the declared reads and ranges), after checks an
    /// interactive transaction's request does not need: the snapshot must lie within the
    /// snapshot window and not ahead of the durable log, and each declared read version
    /// must be the key's version at the snapshot (`None`: absent). Declaring fewer reads
    /// than were made only weakens this transaction's own guarantee.
    ///
    /// Request ids behave as for [`crate::Txn::commit_with`]: a retry of a committed
    /// request is answered with the original commit (`duplicate: true`), across restarts
    /// for a request that wrote; an aborted attempt leaves nothing behind.
    ///
    /// # Errors
    /// As [`crate::Txn::commit_with`], and [`TxnError::SnapshotTooOld`],
    /// [`TxnError::InvalidRequest`].
    pub fn commit_request(
        &self,
        request: CommitRequest,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> Result<CommitOutcome> {
        check_shape(&request)?;
        self.reach_snapshot(&request)?;
        self.commit(unregistered(request), request_id, traceparent)
    }

    /// [`TxnStore::commit_request`] for async callers: certification and the append happen
    /// now; the future resolves once the commit record is durable (as
    /// [`crate::Txn::commit_async`]).
    ///
    /// # Errors
    /// As [`TxnStore::commit_request`].
    pub fn commit_request_async(
        self: &Arc<Self>,
        request: CommitRequest,
        request_id: Option<&RequestId>,
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<CommitOutcome>> + Send + 'static + use<> {
        let prepared = check_shape(&request)
            .and_then(|()| self.reach_snapshot(&request))
            .and_then(|()| self.prepare(unregistered(request), request_id, traceparent));
        self.clone().settle_async(prepared)
    }

    /// On a cluster, waits (at most [`limits::LEADER_SNAPSHOT_WAIT_MS`]) until the commit
    /// stream is durable up to a request's snapshot and locks: they were taken on a
    /// follower, which may apply a commit before its leader has the acknowledgment. A
    /// single node's snapshot is never ahead of its own log (an ahead one is refused as
    /// invalid by the window check).
    ///
    /// # Errors
    /// [`TxnError::SnapshotAhead`] when the stream does not get there in time;
    /// [`TxnError::Poisoned`].
    fn reach_snapshot(&self, request: &CommitRequest) -> Result<()> {
        let lock_max = request.locks.values().copied().max().unwrap_or(0);
        self.reach(request.snapshot.max(lock_max))
    }

    /// On a cluster's leader, waits (at most [`limits::LEADER_SNAPSHOT_WAIT_MS`]) until the
    /// commit stream is durable below `target`: a snapshot a client took on a follower,
    /// which may apply a commit before its leader has the acknowledgment.
    ///
    /// # Errors
    /// [`TxnError::SnapshotAhead`] (retryable) when the stream does not get there in time;
    /// [`TxnError::Poisoned`].
    fn reach(&self, target: u64) -> Result<()> {
        // A follower refuses the commit anyway (`NotLeader`), without waiting.
        if !self.options().elected || self.leading().is_none() || self.durable_end() >= target {
            return Ok(());
        }
        let wait = std::time::Duration::from_millis(limits::LEADER_SNAPSHOT_WAIT_MS);
        let deadline = std::time::Instant::now() + wait;
        loop {
            self.check_poisoned()?;
            let durable = self.durable_end();
            if durable >= target {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TxnError::SnapshotAhead {
                    snapshot: target,
                    applied: durable,
                });
            }
            self.wait_position(target - 1, left);
        }
    }

    /// The snapshot new readers take, given the table (its applied offset is the next
    /// commit offset).
    fn visible_in(&self, table: &Table) -> u64 {
        if self.options().early_lock_release {
            table.applied()
        } else {
            self.durable_end().min(table.applied())
        }
    }
}

fn unregistered(request: CommitRequest) -> TxnParts {
    TxnParts {
        id: UNREGISTERED,
        expired: None,
        in_window: false,
        request,
    }
}

fn read_table_at(
    table: &Table,
    snapshot: u64,
    keys: &[Vec<u8>],
    ranges: &[(KeyRange, usize)],
    answer_bytes_max: usize,
) -> Result<SnapshotRead> {
    let mut budget = Budget::new(answer_bytes_max);
    let mut found = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let value = table.get(k, snapshot).and_then(|(version, value)| {
            value.map(|value| Versioned {
                value,
                version: Some(version),
            })
        });
        let bytes = value.as_ref().map(|v| &v.value);
        if !budget.take(k, bytes) {
            return Err(budget.exceeded("keys", i, k, bytes));
        }
        found.push(value);
    }
    let mut pages = Vec::with_capacity(ranges.len());
    for (i, (range, limit)) in ranges.iter().enumerate() {
        if range.is_empty() {
            pages.push(ScanPage::default());
            continue;
        }
        let rows = table
            .visible(range.as_refs(), snapshot)
            .filter_map(|(key, version, value)| {
                let value = value?.clone();
                Some(KeyValue {
                    key: key.to_vec(),
                    value,
                    version: Some(version),
                })
            });
        let page = budget::page(rows, *limit, &mut budget)
            .map_err(|row| budget.exceeded("ranges", i, &row.key, Some(&row.value)))?;
        pages.push(page);
    }
    Ok(SnapshotRead {
        snapshot,
        keys: found,
        ranges: pages,
    })
}

fn check_count(field: &'static str, n: usize, max: usize) -> Result<()> {
    if n > max {
        return Err(TxnError::InvalidRequest {
            field,
            key: None,
            reason: format!("{n} entries; a transaction may have at most {max}"),
        });
    }
    Ok(())
}

/// The checks of a request from outside that need no state: limits, keys, values, and
/// the combinations an interactive handle cannot build.
fn check_shape(r: &CommitRequest) -> Result<()> {
    check_count("reads", r.reads.len(), limits::READ_SET_KEYS_MAX)?;
    check_count("ranges", r.ranges.len(), limits::READ_RANGES_MAX)?;
    // Writes and locks share one limit: the locks are named when they pass what the writes
    // leave of it.
    let max = limits::WRITE_SET_KEYS_MAX;
    let over = if r.writes.len() > max {
        "writes"
    } else {
        "locks"
    };
    check_count(over, r.writes.len() + r.locks.len(), max)?;
    for key in r.reads.keys().chain(r.locks.keys()).chain(r.writes.keys()) {
        check_key(key)?;
    }
    if r.read_only
        && let Some(key) = r.writes.keys().chain(r.locks.keys()).next()
    {
        return Err(TxnError::invalid_key(
            if r.writes.contains_key(key) {
                "writes"
            } else {
                "locks"
            },
            key,
            "a read-only request writes and locks nothing",
        ));
    }
    for (key, w) in &r.writes {
        if let Write::Put { value, .. } = w
            && value.len() > limits::VALUE_BYTES_MAX
        {
            return Err(TxnError::ValueTooLarge {
                key: show_key(key),
                bytes: value.len(),
                max: limits::VALUE_BYTES_MAX,
            });
        }
    }
    let bytes: usize = r
        .writes
        .iter()
        .map(|(k, w)| {
            k.len()
                + 8
                + match w {
                    Write::Put { value, .. } => value.len(),
                    Write::Delete { .. } => 0,
                    Write::Increment(_) => 20,
                }
        })
        .sum();
    let max = limits::COMMIT_RECORD_BYTES_MAX - 1024;
    if bytes > max {
        return Err(TxnError::TooMany {
            what: "commit bytes",
            max,
        });
    }
    Ok(())
}
