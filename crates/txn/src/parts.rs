//! What a transaction hands to the commit path: its buffered writes (with their
//! conditions), locks, reads and ranges, and the intents fingerprint a commit request id is
//! compared by. Shared by the `Txn` handle, which fills it, and the store, which certifies
//! and applies it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::Isolation;
use crate::certifier::Range;
use crate::mvcc::Value;

/// A condition checked at commit against the newest committed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    None,
    IfAbsent,
    IfVersion(u64),
}

/// A buffered write.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Put {
        value: Value,
        cond: Cond,
    },
    Delete {
        cond: Cond,
    },
    /// Increments only: the sum, applied to the newest value at commit.
    Increment(i64),
}

/// What a transaction hands to the commit path.
#[derive(Debug)]
pub(crate) struct TxnParts {
    pub id: u64,
    pub isolation: Isolation,
    pub snapshot: u64,
    pub writes: BTreeMap<Vec<u8>, Pending>,
    /// `get_for_update` keys and the position they were read at.
    pub locks: HashMap<Vec<u8>, u64>,
    pub reads: HashSet<Vec<u8>>,
    pub ranges: Vec<Range>,
    /// Whether it read anything (at any isolation level): its writes may then depend on
    /// what it read.
    pub read_any: bool,
    /// Set (under the commit lock) when the transaction was expired.
    pub expired: Arc<AtomicBool>,
}

impl TxnParts {
    /// The *intents fingerprint*: XXH3-128 of what the transaction asked for, stored in its
    /// commit record and compared when its request id is used again, so that a retry of
    /// the same transaction is a duplicate and a different transaction reusing the id is a
    /// `request_id_conflict`.
    ///
    /// What it covers, in a canonical order:
    ///
    /// * the isolation level — the same operations certified under other rules are
    ///   another request;
    /// * every buffered write in key order: key, kind (put, delete, increment), its
    ///   condition (none, if-absent, if-version with the expected version) and its operand
    ///   (value bytes, increment amount);
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
    /// nothing: [`TxnParts::read_any`] false): then its writes are a function of the
    /// request alone and a retry must repeat them. A transaction that read may compute
    /// other writes when re-run after its commit's acknowledgment was lost (its reads now
    /// see its own commit — a read-modify-write, the retry helper's body), so for it the
    /// request id alone identifies the request and any retry is a duplicate, as before.
    pub(crate) fn intents_fingerprint(&self) -> u128 {
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
                Pending::Put { value, cond } => {
                    h.update(&[1]);
                    h.update(&(value.len() as u64).to_le_bytes());
                    h.update(value);
                    *cond
                }
                Pending::Delete { cond } => {
                    h.update(&[2]);
                    *cond
                }
                Pending::Increment(by) => {
                    h.update(&[3]);
                    h.update(&by.to_le_bytes());
                    Cond::None
                }
            };
            match cond {
                Cond::None => h.update(&[0]),
                Cond::IfAbsent => h.update(&[1]),
                Cond::IfVersion(v) => {
                    h.update(&[2]);
                    h.update(&v.to_le_bytes());
                }
            }
        }
        let mut locks: Vec<&Vec<u8>> = self.locks.keys().collect();
        locks.sort_unstable();
        h.update(&(locks.len() as u64).to_le_bytes());
        for key in locks {
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key);
        }
        h.digest128()
    }
}

/// Parses a value as an increment operand: a decimal i64 (a JSON integer).
pub(crate) fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse::<i64>().ok()
}
