//! Transactions on a key-value table derived from the log.
//!
//! Every committed read-write transaction is **one commit record** in a single-partition
//! commit stream (`_txn`): its resolved writes, request id, isolation level and snapshot.
//! The table — MVCC versions keyed by key and commit offset — is *derived* from that stream
//! and rebuilt from it at open. In front of the stream sits the **certifier**, which
//! decides in commit order whether a transaction may commit. Nothing blocks: a conflict
//! aborts the later committer with a retryable `serialization_failure` naming the key and
//! the commit it conflicted with.
//!
//! | level | prevents | how |
//! | --- | --- | --- |
//! | `read_committed` | G0, G1a, G1b, G1c | buffered writes, one record per commit, a fresh snapshot per read |
//! | `snapshot` | + OTV, PMP, P4, G-single | one snapshot; first committer wins on written keys |
//! | `serializable` | + G2-item, G2 (phantoms included) | SSI: rw-antidependencies on keys and ranges, dangerous structures aborted (Cahill, Röhm, Fekete, SIGMOD 2008; Ports & Grittner, VLDB 2012) |
//!
//! Atomic operations are evaluated at commit on the newest committed state: increment,
//! put-if-absent, compare-and-set, delete-if-version; `get_for_update` makes a read
//! conflict like a write. A read-only `serializable` transaction reads at a safe snapshot
//! and never aborts.
//!
//! The crate is **not** a SQL engine or a lock manager: there are no locks to wait on, and
//! no secondary indexes (those are views, `logbook-views`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use logbook_txn::{Isolation, RetryPolicy, TxnOptions, TxnStore, TxnStoreOptions, retry};
//! let dir = tempfile::tempdir()?;
//! let log = logbook_log::Log::open(dir.path())?;
//! let store = TxnStore::open(&log, TxnStoreOptions::default())?;
//! // Move 10 from a to b, re-running on serialization failures.
//! let done = retry(&store, TxnOptions::new(Isolation::Serializable), &RetryPolicy::default(), None, |t| {
//!     t.increment(b"a", -10)?;
//!     t.increment(b"b", 10)?;
//!     Ok(())
//! })?;
//! assert_eq!(done.outcome.incremented, vec![(b"a".to_vec(), -10), (b"b".to_vec(), 10)]);
//! # Ok(()) }
//! ```

mod admission;
mod budget;
mod certifier;
mod elected;
mod error;
mod follower;
pub mod limits;
mod mvcc;
mod oneshot;
mod open;
pub mod record;
mod request;
mod retry;
mod store;
mod txn;

use std::ops::Bound;

pub use error::{ConflictKind, Result, TxnError};
pub use mvcc::Value;
pub use oneshot::SnapshotRead;
pub use request::{CommitRequest, Condition, ReadRange, Write};
pub use retry::{Retried, RetryPolicy, retry};
pub use store::{CommitOutcome, MemoryFigures, TxnStats, TxnStore, TxnStoreOptions};
pub use txn::Txn;

/// Isolation level of a transaction (PostgreSQL's three, with its guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Each read sees the newest committed state; writes are applied at commit without a
    /// conflict check (except keys read with `get_for_update`).
    ReadCommitted,
    /// Snapshot isolation: one snapshot for all reads; first committer wins.
    Snapshot,
    /// Serializable snapshot isolation (SSI).
    Serializable,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "read_committed" => Ok(Isolation::ReadCommitted),
            "snapshot" => Ok(Isolation::Snapshot),
            "serializable" => Ok(Isolation::Serializable),
            other => Err(format!(
                "unknown isolation {other:?}: expected read_committed, snapshot or serializable"
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        })
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOptions {
    /// Its isolation level.
    pub isolation: Isolation,
    /// Declared read-only: writes fail with [`TxnError::ReadOnly`]; at `serializable` it
    /// reads at a safe snapshot and never aborts (unless `newest_snapshot`). Default `false`.
    pub read_only: bool,
    /// For a read-only `serializable` transaction: read at the newest snapshot, not a safe
    /// one. Its reads are then certified at commit against the commits after its snapshot,
    /// which it does not keep in the certifier while open: as for a one-shot commit
    /// request, its snapshot must still lie in the snapshot window and the certifier's
    /// memory at commit, else [`TxnError::SnapshotTooOld`] (retryable). Default `false`.
    pub newest_snapshot: bool,
}

impl TxnOptions {
    /// A read-write transaction at `isolation`.
    pub fn new(isolation: Isolation) -> Self {
        TxnOptions {
            isolation,
            read_only: false,
            newest_snapshot: false,
        }
    }

    /// The same, declared read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The same, read-only and at the newest snapshot (see [`TxnOptions::newest_snapshot`]):
    /// what a caller that may write nothing begins, so that an open transaction it holds
    /// keeps no history of other callers' commits.
    pub fn read_only_at_newest(mut self) -> Self {
        self.read_only = true;
        self.newest_snapshot = true;
        self
    }
}

/// A value read with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Value,
    /// The commit-stream offset of the commit that wrote it; `None` for the reading
    /// transaction's own uncommitted write.
    pub version: Option<u64>,
}

/// A row of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value bytes.
    pub value: Value,
    /// As [`Versioned::version`].
    pub version: Option<u64>,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The rows, in key order, at most the scan's `limit`.
    pub rows: Vec<KeyValue>,
    /// When the limit cut the result: the key of the first row not returned, where the
    /// next page starts (inclusive). `None` when the rows are all there is.
    pub next: Option<Vec<u8>>,
}

/// A range of keys: `start` and `end` bounds in byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys from `start` (inclusive) to `end` (exclusive).
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        KeyRange {
            start: Bound::Included(start.to_vec()),
            end: Bound::Excluded(end.to_vec()),
        }
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        // The first key after every key with this prefix: increment the last byte that is
        // not 0xff and cut after it; all-0xff prefixes have no upper bound.
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return KeyRange {
                    start: Bound::Included(prefix.to_vec()),
                    end: Bound::Excluded(end),
                };
            }
        }
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: Bound::Unbounded,
        }
    }

    /// Whether no key can lie in the range (start after end, or an empty interval).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        }
    }

    pub(crate) fn as_refs(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            self.start.as_ref().map(Vec::as_slice),
            self.end.as_ref().map(Vec::as_slice),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        let r = KeyRange::prefix(b"ab");
        assert_eq!(r.end, Bound::Excluded(b"ac".to_vec()));
        let r = KeyRange::prefix(&[b'a', 0xff]);
        assert_eq!(r.end, Bound::Excluded(b"b".to_vec()));
        let r = KeyRange::prefix(&[0xff, 0xff]);
        assert_eq!(r.end, Bound::Unbounded);
        assert!(KeyRange::between(b"b", b"a").is_empty());
        assert!(KeyRange::between(b"a", b"a").is_empty());
        assert!(!KeyRange::between(b"a", b"b").is_empty());
    }
}
