//! The view state store: a narrow seam over an embedded key-value library.
//!
//! Views need four things from a store, and this module is the only place that knows which
//! library provides them (fjall, chosen in `docs/decisions/0003-view-state-store.md`):
//!
//! * **spaces** — one independent ordered key space per view version, created and dropped
//!   whole (dropping a version frees its state);
//! * **atomic commits without fsync** — a processor's state changes and its applied offset go
//!   in one batch; after a crash the store holds a prefix of the commits, never half of one,
//!   and the processor replays the log from the applied offset it finds;
//! * **point reads** of the latest committed state (processors);
//! * **consistent snapshots** with point reads and forward/backward range scans (reads,
//!   digests), so that rows and applied offsets come from one moment.
//!
//! Swapping the library means writing another [`StateStore`]; nothing else changes.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::error::{Result, ViewError};

/// One write of a commit: `Some(value)` puts, `None` deletes.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// An embedded store of named spaces.
pub trait StateStore: Send + Sync {
    /// Opens the space `name`, creating it if missing.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn open_space(&self, name: &str) -> Result<Arc<dyn Space>>;
    /// Deletes the space `name` and all its keys (a no-op if missing).
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn drop_space(&self, name: &str) -> Result<()>;
    /// Names of the spaces that exist.
    fn space_names(&self) -> Vec<String>;
    /// Makes every commit so far durable (fsync). Only catalog changes use it: view
    /// definitions are not derivable from the log, view state is.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn sync(&self) -> Result<()>;
}

/// One ordered key space.
pub trait Space: Send + Sync {
    /// Applies `writes` atomically (all or none after a crash), without fsync.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn commit(&self, writes: Vec<Write>) -> Result<()>;
    /// The latest committed value of `key`.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// A consistent snapshot of the space.
    fn snapshot(&self) -> Box<dyn SpaceSnapshot + '_>;
}

/// A consistent, read-only view of a space at one moment.
pub trait SpaceSnapshot {
    /// The value of `key` in the snapshot.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits the entries with `from <= key < to` in key order (backwards when `reverse`),
    /// until `visit` returns `false`.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;
}

fn store_err(op: &'static str) -> impl Fn(fjall::Error) -> ViewError {
    move |e| ViewError::Store {
        op,
        reason: e.to_string(),
    }
}

/// The default store: one fjall database in `<data-dir>/views`, one keyspace per space.
/// Commits are written to the journal with [`PersistMode::Buffer`] (handed to the OS, no
/// fsync): they survive a killed process, and a power loss loses a suffix of them, which the
/// processors replay from the log.
pub struct FjallStore {
    db: Database,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (creating or recovering) the store in `dir`.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    pub fn open(dir: &Path) -> Result<FjallStore> {
        let db = Database::builder(dir)
            .open()
            .map_err(store_err("open the store"))?;
        Ok(FjallStore { db })
    }
}

impl StateStore for FjallStore {
    fn open_space(&self, name: &str) -> Result<Arc<dyn Space>> {
        let ks = self
            .db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(store_err("open a space"))?;
        Ok(Arc::new(FjallSpace {
            db: self.db.clone(),
            ks,
        }))
    }

    fn drop_space(&self, name: &str) -> Result<()> {
        if !self.db.keyspace_exists(name) {
            return Ok(());
        }
        let ks = self
            .db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(store_err("open a space to drop it"))?;
        self.db
            .delete_keyspace(ks)
            .map_err(store_err("drop a space"))
    }

    fn space_names(&self) -> Vec<String> {
        self.db
            .list_keyspace_names()
            .into_iter()
            .map(|n| n.to_string())
            .collect()
    }

    fn sync(&self) -> Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(store_err("sync"))
    }
}

struct FjallSpace {
    db: Database,
    ks: Keyspace,
}

impl Space for FjallSpace {
    fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(&self.ks, k, v),
                None => batch.remove(&self.ks, k),
            }
        }
        batch.commit().map_err(store_err("commit"))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .ks
            .get(key)
            .map_err(store_err("get"))?
            .map(|v| v.to_vec()))
    }

    fn snapshot(&self) -> Box<dyn SpaceSnapshot + '_> {
        Box::new(FjallSnapshot {
            snap: self.db.snapshot(),
            ks: &self.ks,
        })
    }
}

struct FjallSnapshot<'a> {
    snap: fjall::Snapshot,
    ks: &'a Keyspace,
}

impl SpaceSnapshot for FjallSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snap
            .get(self.ks, key)
            .map_err(store_err("get"))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let iter = self.snap.range(self.ks, from..to);
        let mut step = |guard: fjall::Guard| -> Result<bool> {
            let (k, v) = guard.into_inner().map_err(store_err("scan"))?;
            Ok(visit(&k, &v))
        };
        if reverse {
            for guard in iter.rev() {
                if !step(guard)? {
                    break;
                }
            }
        } else {
            for guard in iter {
                if !step(guard)? {
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

    #[test]
    fn commit_get_scan_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let s = store.open_space("v1").unwrap();
        s.commit(vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), Some(b"2".to_vec())),
            (b"c".to_vec(), Some(b"3".to_vec())),
        ])
        .unwrap();
        s.commit(vec![(b"b".to_vec(), None)]).unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        let snap = s.snapshot();
        let mut seen = Vec::new();
        snap.scan(b"a", b"z", true, &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"c".to_vec(), b"a".to_vec()]);
        drop(snap);
        drop(s);
        store.drop_space("v1").unwrap();
        assert!(!store.space_names().contains(&"v1".to_string()));
    }
}
