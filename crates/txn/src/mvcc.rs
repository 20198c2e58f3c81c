//! The multi-version key-value table: the state derived from the commit stream.
//!
//! Each key holds a chain of versions in ascending commit offset; a version is the value a
//! commit wrote, or a tombstone for a delete. A reader at snapshot `s` sees, per key, the
//! newest version with offset `< s` (snapshots are exclusive: snapshot 0 sees nothing).
//!
//! ```text
//! key "acct:7":  [ (off 3, "100") , (off 9, "90") , (off 12, tombstone) ]
//!                   snapshot 5 ─┘       snapshot 10 ─┘      snapshot 13 ─┘ (absent)
//! ```
//!
//! Garbage collection: given a horizon `h` (the oldest snapshot anyone can still read at),
//! every version older than the newest version below `h` is unreachable and dropped; a key
//! whose only reachable version is a tombstone below `h` is removed. Chains are pruned
//! when a commit writes them, and an incremental sweep visits a few other keys per commit,
//! so memory follows the live data, not the history.
//!
//! Invariants (asserted): offsets in a chain strictly increase; commits are applied in
//! offset order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// A value: bytes, shared between the table and readers.
pub type Value = Arc<[u8]>;

#[derive(Debug, Default)]
struct Chain {
    /// `(commit offset, value or tombstone)`, ascending by offset.
    versions: Vec<(u64, Option<Value>)>,
}

impl Chain {
    fn at(&self, snapshot: u64) -> Option<&(u64, Option<Value>)> {
        let idx = self.versions.partition_point(|(o, _)| *o < snapshot);
        idx.checked_sub(1).map(|i| &self.versions[i])
    }

    /// Drops versions no snapshot `>= horizon` can see. Returns whether the key can go.
    fn prune(&mut self, horizon: u64) -> bool {
        let below = self.versions.partition_point(|(o, _)| *o < horizon);
        if below > 1 {
            self.versions.drain(..below - 1);
        }
        matches!(self.versions.as_slice(), [(o, None)] if *o < horizon) || self.versions.is_empty()
    }
}

/// One row of a read: key, version (commit offset) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The key.
    pub key: Vec<u8>,
    /// The commit-stream offset of the commit that wrote this value.
    pub version: u64,
    /// The value bytes.
    pub value: Value,
}

/// The table. Not synchronised: the store wraps it in a lock.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: BTreeMap<Vec<u8>, Chain>,
    /// Offset of the last applied commit plus one.
    applied: u64,
    gc_cursor: Vec<u8>,
    versions: u64,
}

/// What a point read found: the chosen version (a tombstone is `value: None`).
pub(crate) type Found = Option<(u64, Option<Value>)>;

impl Table {
    /// Commits applied: offsets `0..applied()`.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// Live keys (including tombstones not yet collected).
    pub(crate) fn keys(&self) -> usize {
        self.rows.len()
    }

    /// Versions held over all keys.
    pub(crate) fn versions(&self) -> u64 {
        self.versions
    }

    /// The version of `key` a reader at `snapshot` sees.
    pub(crate) fn get(&self, key: &[u8], snapshot: u64) -> Found {
        self.rows.get(key).and_then(|c| c.at(snapshot).cloned())
    }

    /// The newest version of `key`, including commits not yet durable.
    pub(crate) fn latest(&self, key: &[u8]) -> Found {
        self.rows.get(key).and_then(|c| c.versions.last().cloned())
    }

    /// Rows in `range` visible at `snapshot`, in key order, at most `limit`. Also returns
    /// the highest version offset the result depends on (tombstones included).
    pub(crate) fn scan(
        &self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        snapshot: u64,
        limit: usize,
    ) -> (Vec<Row>, Option<u64>) {
        let mut rows = Vec::new();
        let mut depends = None;
        if limit == 0 {
            return (rows, depends);
        }
        for (key, offset, value) in self.visible(range, snapshot) {
            depends = depends.max(Some(offset));
            if let Some(value) = value {
                rows.push(Row {
                    key: key.to_vec(),
                    version: offset,
                    value: value.clone(),
                });
                if rows.len() >= limit {
                    break;
                }
            }
        }
        (rows, depends)
    }

    /// The keys in `range` with the version a reader at `snapshot` sees, in key order and
    /// lazily (a tombstone is `None`; keys without a version at the snapshot are skipped).
    pub(crate) fn visible<'a>(
        &'a self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        snapshot: u64,
    ) -> impl Iterator<Item = (&'a [u8], u64, Option<&'a Value>)> + 'a {
        self.rows
            .range::<[u8], _>(range)
            .filter_map(move |(key, chain)| {
                let (offset, value) = chain.at(snapshot)?;
                Some((key.as_slice(), *offset, value.as_ref()))
            })
    }

    /// Applies the commit at `offset`: `writes` are `(key, value or tombstone)`. Prunes the
    /// written chains to `horizon`.
    ///
    /// # Panics
    /// If commits are applied out of order (an invariant of the store).
    pub(crate) fn apply(&mut self, offset: u64, writes: &[(Vec<u8>, Option<Value>)], horizon: u64) {
        assert_eq!(
            offset, self.applied,
            "commits must be applied in offset order"
        );
        for (key, value) in writes {
            let chain = self.rows.entry(key.clone()).or_default();
            if let Some((last, _)) = chain.versions.last() {
                assert!(*last < offset, "versions of a key must increase");
            }
            chain.versions.push((offset, value.clone()));
            self.versions += 1;
            let before = chain.versions.len() as u64;
            let gone = chain.prune(horizon);
            self.versions -= before - chain.versions.len() as u64;
            if gone {
                self.versions -= chain.versions.len() as u64;
                self.rows.remove(key);
            }
        }
        self.applied = offset + 1;
    }

    /// Advances the applied offset over a commit with no writes to this table.
    #[cfg(test)]
    pub(crate) fn skip(&mut self, offset: u64) {
        assert_eq!(
            offset, self.applied,
            "commits must be applied in offset order"
        );
        self.applied = offset + 1;
    }

    /// Visits up to `keys` keys after the sweep cursor and prunes them to `horizon`.
    pub(crate) fn gc_step(&mut self, horizon: u64, keys: usize) {
        let mut visited = Vec::with_capacity(keys);
        let start = std::mem::take(&mut self.gc_cursor);
        for (key, _) in self
            .rows
            .range::<[u8], _>((Bound::Excluded(start.as_slice()), Bound::Unbounded))
            .take(keys)
        {
            visited.push(key.clone());
        }
        for key in &visited {
            if let Some(chain) = self.rows.get_mut(key.as_slice()) {
                let before = chain.versions.len() as u64;
                let gone = chain.prune(horizon);
                self.versions -= before - chain.versions.len() as u64;
                if gone {
                    self.versions -= chain.versions.len() as u64;
                    self.rows.remove(key.as_slice());
                }
            }
        }
        // Wrap around at the end.
        self.gc_cursor = if visited.len() < keys {
            Vec::new()
        } else {
            visited.pop().unwrap_or_default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Value> {
        Some(Arc::from(s.as_bytes()))
    }

    #[test]
    fn snapshots_see_the_newest_version_below_them() {
        let mut t = Table::default();
        t.apply(0, &[(b"a".to_vec(), v("1"))], 0);
        t.skip(1);
        t.apply(2, &[(b"a".to_vec(), v("2")), (b"b".to_vec(), v("x"))], 0);
        t.apply(3, &[(b"a".to_vec(), None)], 0);
        assert_eq!(t.get(b"a", 0), None);
        assert_eq!(t.get(b"a", 1), Some((0, v("1"))));
        assert_eq!(t.get(b"a", 3), Some((2, v("2"))));
        assert_eq!(t.get(b"a", 4), Some((3, None)));
        assert_eq!(t.latest(b"a"), Some((3, None)));
        let (rows, dep) = t.scan((Bound::Unbounded, Bound::Unbounded), 4, 10);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, b"b");
        assert_eq!(
            dep,
            Some(3),
            "the tombstone of a is a dependency of the scan"
        );
        let (rows, _) = t.scan((Bound::Unbounded, Bound::Unbounded), 3, 1);
        assert_eq!(rows.len(), 1, "limit respected");
        assert_eq!(rows[0].key, b"a");
    }

    #[test]
    fn gc_keeps_what_the_horizon_can_see_and_drops_dead_keys() {
        let mut t = Table::default();
        for i in 0..10 {
            t.apply(i, &[(b"k".to_vec(), v(&i.to_string()))], 0);
        }
        assert_eq!(t.versions(), 10);
        t.apply(10, &[(b"d".to_vec(), v("x"))], 0);
        t.apply(11, &[(b"d".to_vec(), None)], 0);
        t.gc_step(7, 100);
        assert_eq!(
            t.get(b"k", 7),
            Some((6, v("6"))),
            "the version visible at the horizon stays"
        );
        assert_eq!(t.get(b"k", 10), Some((9, v("9"))));
        assert_eq!(t.get(b"k", 6), None, "below the horizon is gone by design");
        assert_eq!(t.versions(), 4 + 2);
        t.gc_step(12, 100);
        assert_eq!(t.keys(), 1, "a tombstone below the horizon removes its key");
        assert_eq!(t.versions(), 1);
    }

    #[test]
    #[should_panic(expected = "offset order")]
    fn out_of_order_apply_is_a_bug() {
        let mut t = Table::default();
        t.apply(1, &[], 0);
    }
}
