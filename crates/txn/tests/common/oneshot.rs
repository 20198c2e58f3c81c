//! A transaction in the one-round-trip form, with the interactive handle's methods: it
//! reads with `TxnStore::read_at` (at its snapshot; at `read_committed` at the newest),
//! buffers its writes and the reads it made on the client side, and commits one
//! `CommitRequest` — what a remote client of `POST /v1/kv/read` and `POST /v1/commits`
//! does. [`Handle`] runs either form behind one interface, so the Hermitage schedules and
//! the history checker can mix them.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use logbook_txn::{
    CommitOutcome, CommitRequest, Condition, Isolation, KeyRange, KeyValue, Result, Txn,
    TxnOptions, TxnStore, Value, Versioned, Write,
};

/// A one-shot transaction being built.
pub struct OneShot {
    store: Arc<TxnStore>,
    request: CommitRequest,
}

impl OneShot {
    /// Starts one at the newest snapshot (one `read_at` with nothing to read).
    pub fn begin(store: &Arc<TxnStore>, isolation: Isolation) -> Result<OneShot> {
        let snapshot = store.read_at(None, &[], &[])?.snapshot;
        Ok(OneShot {
            store: store.clone(),
            request: CommitRequest::new(isolation, snapshot),
        })
    }

    /// The snapshot it commits at.
    pub fn snapshot(&self) -> u64 {
        self.request.snapshot
    }

    fn read_snapshot(&self) -> Option<u64> {
        match self.request.isolation {
            Isolation::ReadCommitted => None,
            _ => Some(self.request.snapshot),
        }
    }

    fn read_committed(&mut self, key: &[u8]) -> Result<(Option<Versioned>, u64)> {
        let read = self
            .store
            .read_at(self.read_snapshot(), &[key.to_vec()], &[])?;
        let found = read.keys.into_iter().next().flatten();
        self.request.read_any = true;
        if self.request.isolation != Isolation::ReadCommitted {
            let version = found.as_ref().and_then(|v| v.version);
            self.request.reads.entry(key.to_vec()).or_insert(version);
        }
        Ok((found, read.snapshot))
    }

    /// As `Txn::get`: own writes first.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        self.request.read_any = true;
        match self.request.writes.get(key).cloned() {
            Some(Write::Put { value, .. }) => Ok(Some(Versioned {
                value,
                version: None,
            })),
            Some(Write::Delete { .. }) => Ok(None),
            Some(Write::Increment(by)) => {
                let (base, _) = self.read_committed(key)?;
                let n = add(base.as_ref().map(|v| &*v.value), by);
                Ok(Some(Versioned {
                    value: Value::from(n.to_string().into_bytes()),
                    version: None,
                }))
            }
            None => Ok(self.read_committed(key)?.0),
        }
    }

    /// As `Txn::get_for_update`: the read locks the key from the snapshot it was read at.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        if !self.request.writes.contains_key(key) && !self.request.locks.contains_key(key) {
            let (found, at) = self.read_committed(key)?;
            self.request.locks.insert(key.to_vec(), at);
            return Ok(found);
        }
        self.get(key)
    }

    /// As `Txn::scan`: own writes merged in; the range is declared as read (to its last
    /// row when the limit cut it).
    pub fn scan(&mut self, range: &KeyRange, limit: usize) -> Result<Vec<KeyValue>> {
        self.request.read_any = true;
        let read = self.store.read_at(
            self.read_snapshot(),
            &[],
            &[(range.clone(), limit + self.request.writes.len())],
        )?;
        let page = read.ranges.into_iter().next().unwrap_or_default();
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            page.rows.into_iter().map(|r| (r.key.clone(), r)).collect();
        let inside = |k: &[u8]| {
            (match &range.start {
                Bound::Included(s) => k >= s.as_slice(),
                Bound::Excluded(s) => k > s.as_slice(),
                Bound::Unbounded => true,
            }) && (match &range.end {
                Bound::Included(e) => k <= e.as_slice(),
                Bound::Excluded(e) => k < e.as_slice(),
                Bound::Unbounded => true,
            })
        };
        for (key, w) in self.request.writes.iter().filter(|(k, _)| inside(k)) {
            let value = match w {
                Write::Put { value, .. } => value.clone(),
                Write::Delete { .. } => {
                    merged.remove(key);
                    continue;
                }
                Write::Increment(by) => {
                    let n = add(merged.get(key).map(|kv| &*kv.value), *by);
                    Value::from(n.to_string().into_bytes())
                }
            };
            merged.insert(
                key.clone(),
                KeyValue {
                    key: key.clone(),
                    value,
                    version: None,
                },
            );
        }
        let mut rows = merged.into_values();
        let out: Vec<KeyValue> = rows.by_ref().take(limit).collect();
        let cut = rows.next().is_some();
        let end = match out.last() {
            Some(last) if cut => Bound::Included(last.key.clone()),
            _ => range.end.clone(),
        };
        self.request.ranges.push((range.start.clone(), end));
        Ok(out)
    }

    fn cond_of(&self, key: &[u8]) -> Condition {
        match self.request.writes.get(key) {
            Some(Write::Put { cond, .. } | Write::Delete { cond }) => *cond,
            _ => Condition::None,
        }
    }

    /// As `Txn::put`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let cond = self.cond_of(key);
        let value = Value::from(value);
        self.request
            .writes
            .insert(key.to_vec(), Write::Put { value, cond });
        Ok(())
    }

    /// As `Txn::delete`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let cond = self.cond_of(key);
        self.request
            .writes
            .insert(key.to_vec(), Write::Delete { cond });
        Ok(())
    }

    /// As `Txn::increment`.
    pub fn increment(&mut self, key: &[u8], by: i64) -> Result<()> {
        let next = match self.request.writes.get(key) {
            Some(Write::Put { value, cond }) => Write::Put {
                value: Value::from(add(Some(value), by).to_string().into_bytes()),
                cond: *cond,
            },
            Some(Write::Delete { cond }) => Write::Put {
                value: Value::from(by.to_string().into_bytes()),
                cond: *cond,
            },
            Some(Write::Increment(a)) => Write::Increment(a + by),
            None => Write::Increment(by),
        };
        self.request.writes.insert(key.to_vec(), next);
        Ok(())
    }

    /// Sends the commit request.
    pub fn commit(self) -> Result<CommitOutcome> {
        self.store.commit_request(self.request, None, None)
    }
}

fn add(base: Option<&[u8]>, by: i64) -> i64 {
    base.map_or(0, |v| {
        std::str::from_utf8(v)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    }) + by
}

/// A transaction in either form.
pub enum Handle {
    /// Interactive: registered with the store, reads tracked there.
    Interactive(Txn),
    /// One round trip: reads declared in the commit request.
    OneShot(OneShot),
}

impl Handle {
    /// Begins one in the form asked for. A declared read-only transaction is always
    /// interactive (it reads a safe snapshot; a one-shot client has nothing to commit).
    pub fn begin(store: &Arc<TxnStore>, options: TxnOptions, one_shot: bool) -> Result<Handle> {
        if one_shot && !options.read_only {
            OneShot::begin(store, options.isolation).map(Handle::OneShot)
        } else {
            store.begin(options).map(Handle::Interactive)
        }
    }

    /// Its snapshot.
    pub fn snapshot(&self) -> u64 {
        match self {
            Handle::Interactive(t) => t.snapshot(),
            Handle::OneShot(t) => t.snapshot(),
        }
    }

    /// `get`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        match self {
            Handle::Interactive(t) => t.get(key),
            Handle::OneShot(t) => t.get(key),
        }
    }

    /// `get_for_update`.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        match self {
            Handle::Interactive(t) => t.get_for_update(key),
            Handle::OneShot(t) => t.get_for_update(key),
        }
    }

    /// `scan`.
    pub fn scan(&mut self, range: &KeyRange, limit: usize) -> Result<Vec<KeyValue>> {
        match self {
            Handle::Interactive(t) => t.scan(range, limit),
            Handle::OneShot(t) => t.scan(range, limit),
        }
    }

    /// `put`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Handle::Interactive(t) => t.put(key, value),
            Handle::OneShot(t) => t.put(key, value),
        }
    }

    /// `delete`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        match self {
            Handle::Interactive(t) => t.delete(key),
            Handle::OneShot(t) => t.delete(key),
        }
    }

    /// `increment`.
    pub fn increment(&mut self, key: &[u8], by: i64) -> Result<()> {
        match self {
            Handle::Interactive(t) => t.increment(key, by),
            Handle::OneShot(t) => t.increment(key, by),
        }
    }

    /// Commits.
    pub fn commit(self) -> Result<CommitOutcome> {
        match self {
            Handle::Interactive(t) => t.commit(),
            Handle::OneShot(t) => t.commit(),
        }
    }

    /// Aborts (a one-shot transaction just forgets its buffer).
    pub fn abort(self) {
        if let Handle::Interactive(t) = self {
            t.abort();
        }
    }
}
