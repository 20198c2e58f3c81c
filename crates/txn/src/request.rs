//! The self-contained commit request: everything the certifier needs to decide a
//! transaction — isolation, snapshot, the keys and ranges read, the locks, the writes with
//! their conditions — in one serializable value.
//!
//! It is the one input of the commit path, whatever the transaction's origin:
//!
//! ```text
//! interactive Txn (reads tracked by the store) ──┐
//! one-shot client (reads declared, validated) ───┼──▶ CommitRequest ──▶ certify → append
//! a follower forwarding to the leader (cluster) ─┘
//! ```
//!
//! An interactive transaction's request is built by its handle and trusted; a request from
//! outside (a client that read with [`crate::TxnStore::read_at`] and commits in one round
//! trip) is validated first ([`crate::TxnStore::commit_request`]): its snapshot must lie
//! within the store's snapshot window and its declared versions must be the ones the table
//! held at that snapshot. A declared read set can only weaken the transaction that declares
//! it — reads left out are conflicts it is not checked for — never another: the certifier
//! checks other transactions against what they themselves declared, and a transaction's
//! writes are always checked (first committer wins on them at `snapshot` and
//! `serializable`).
//!
//! The request also carries the *intents fingerprint* a commit request id is compared by.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::Isolation;
use crate::mvcc::Value;

/// A condition checked at commit against the newest committed version of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// None.
    None,
    /// The key must be absent (put-if-absent).
    IfAbsent,
    /// The key must be at this version (compare-and-set, delete-if-version).
    IfVersion(u64),
}

/// A buffered write: the net intent for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Write {
    /// Set the value (bytes: a JSON text over HTTP).
    Put {
        /// The value bytes.
        #[serde(with = "value_bytes")]
        value: Value,
        /// Checked at commit.
        cond: Condition,
    },
    /// Delete the key (deleting an absent key is not an error).
    Delete {
        /// Checked at commit.
        cond: Condition,
    },
    /// Add to the key's integer value at commit (absent counts as 0): evaluated on the
    /// newest committed value, so concurrent increments commute.
    Increment(i64),
}

/// A range as read: `(start, end)` bounds in byte order.
pub type ReadRange = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// A self-contained commit request. See the module documentation.
///
/// Invariants the commit path relies on (checked by [`crate::TxnStore::commit_request`]
/// for requests from outside): every key is 0..=[`crate::limits::KEY_BYTES_MAX`] bytes; a
/// read-only request has no writes; no position is ahead of the durable log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Its isolation level.
    pub isolation: Isolation,
    /// Its snapshot: its reads saw the commits at offsets below this.
    pub snapshot: u64,
    /// Declared read-only (no writes; a `serializable` one is certified on its reads).
    pub read_only: bool,
    /// Whether it read anything before committing, declared or not (at `read_committed`
    /// reads are not tracked): its writes may then depend on what it read, so a retry of
    /// its request id is a duplicate whatever it writes (see
    /// [`CommitRequest::intents_fingerprint`]).
    pub read_any: bool,
    /// Keys read at the snapshot, with the version seen (`None`: absent). Tracked at
    /// `snapshot` and `serializable`.
    pub reads: BTreeMap<Vec<u8>, Option<u64>>,
    /// Ranges read, each as far as it was read (a range a limit cut ends at its last row).
    pub ranges: Vec<ReadRange>,
    /// Keys read with `get_for_update`, and the snapshot each was read at: they conflict
    /// like writes from there on, at every level.
    pub locks: BTreeMap<Vec<u8>, u64>,
    /// The writes, one net intent per key, in key order.
    pub writes: BTreeMap<Vec<u8>, Write>,
    /// Who sends it: its request id is looked up among this principal's ids only, and its
    /// commit record carries the principal with the id, so replay rebuilds the same
    /// namespaces (see [`crate::record::scoped_request_id`]). `None`: the one namespace of
    /// a store whose callers are not told apart (a node without authentication).
    /// 1..=[`crate::limits::PRINCIPAL_BYTES_MAX`] bytes of printable ASCII.
    #[serde(default)]
    pub principal: Option<String>,
}

impl CommitRequest {
    /// An empty request at `isolation` and `snapshot`: add reads, ranges, locks and writes.
    pub fn new(isolation: Isolation, snapshot: u64) -> Self {
        CommitRequest {
            isolation,
            snapshot,
            read_only: false,
            read_any: false,
            reads: BTreeMap::new(),
            ranges: Vec::new(),
            locks: BTreeMap::new(),
            writes: BTreeMap::new(),
            principal: None,
        }
    }

    /// The request id `id` in this request's principal's namespace.
    pub(crate) fn scoped_id(&self, id: &logbook_log::RequestId) -> String {
        crate::record::scoped_request_id(self.principal.as_deref(), id.as_str())
    }

    /// The *intents fingerprint*: XXH3-128 of what the transaction asked for, stored in its
    /// commit record and compared when its request id is used again, so that a retry of
    /// the same transaction is a duplicate and a different transaction reusing the id is a
    /// `request_id_conflict`.
    ///
    /// What it covers, in a canonical order:
    ///
    /// * the isolation level — the same operations certified under other rules are
    ///   another request;
    /// * every write in key order: key, kind (put, delete, increment), its condition
    ///   (none, if-absent, if-version with the expected version) and its operand (value
    ///   bytes, increment amount);
    /// * every `get_for_update` lock, in key order (the key only: the position it was read
    ///   at depends on when the attempt ran).
    ///
    /// It is the *net* intent per key as buffered, before anything is resolved against the
    /// table: an increment is its amount, not the value it produced (a retry after a lost
    /// response would resolve differently). So the order of operations on different keys
    /// does not matter, and operations on one key that buffer the same net intent
    /// (`increment 1` then `increment 2`, or `increment 3`) fingerprint alike. Plain reads,
    /// range reads, the snapshot and the traceparent are left out: they vary between
    /// attempts of one request and change nothing the commit writes.
    ///
    /// A retry is compared with it only when the original commit was *blind* (read
    /// nothing: [`CommitRequest::read_any`] false): then its writes are a function of the
    /// request alone and a retry must repeat them. A transaction that read may compute
    /// other writes when re-run after its commit's acknowledgment was lost (its reads now
    /// see its own commit — a read-modify-write, the retry helper's body), so for it the
    /// request id alone identifies the request and any retry is a duplicate, as before.
    pub fn intents_fingerprint(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"logbook-txn-intents/1\0");
        h.update(&[match self.isolation {
            Isolation::ReadCommitted => 0,
            Isolation::Snapshot => 1,
            Isolation::Serializable => 2,
        }]);
        h.update(&(self.writes.len() as u64).to_le_bytes());
        for (key, p) in &self.writes {
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key);
            let cond = match p {
                Write::Put { value, cond } => {
                    h.update(&[1]);
                    h.update(&(value.len() as u64).to_le_bytes());
                    h.update(value);
                    *cond
                }
                Write::Delete { cond } => {
                    h.update(&[2]);
                    *cond
                }
                Write::Increment(by) => {
                    h.update(&[3]);
                    h.update(&by.to_le_bytes());
                    Condition::None
                }
            };
            match cond {
                Condition::None => h.update(&[0]),
                Condition::IfAbsent => h.update(&[1]),
                Condition::IfVersion(v) => {
                    h.update(&[2]);
                    h.update(&v.to_le_bytes());
                }
            }
        }
        h.update(&(self.locks.len() as u64).to_le_bytes());
        for key in self.locks.keys() {
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key);
        }
        h.digest128()
    }
}

/// What reaches the commit path: the request, and — for an interactive transaction — its
/// registration with the certifier.
#[derive(Debug)]
pub(crate) struct TxnParts {
    /// The transaction's number in this process (one-shot requests get one too, never
    /// registered).
    pub id: u64,
    /// Set (under the commit lock) when a registered transaction was expired; `None` for a
    /// one-shot request, whose snapshot is checked against the window instead.
    pub expired: Option<Arc<AtomicBool>>,
    /// A registered transaction whose reads are certified against commits after its
    /// snapshot that the certifier did not keep for it (read-only at the newest snapshot,
    /// [`crate::TxnOptions::newest_snapshot`]): its snapshot is checked against the window
    /// as a one-shot request's is. `false` for a one-shot request (checked anyway).
    pub in_window: bool,
    pub request: CommitRequest,
}

/// Parses a value as an increment operand: a decimal i64 (a JSON integer).
pub(crate) fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse::<i64>().ok()
}

/// Serde for [`Value`] (shared bytes) as a byte sequence.
mod value_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::mvcc::Value;

    pub(super) fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Vec::<u8>::deserialize(d).map(Value::from)
    }
}
