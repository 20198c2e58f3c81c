//! A [`Storage`] (by default a [`SimStorage`]) whose `fdatasync` a test can hold back.
//!
//! While the [`Gate`] is held, every [`StorageFile::sync_data`] waits at it: a writer stays
//! inside its group commit with its batch written but not durable — an append or a commit
//! "in flight" — for as long as the test needs, and what queues behind it is decided without
//! any timing. Released with [`Gate::release_failing`], the held syncs (and later ones, until
//! the next release) fail instead, as a disk that lost the write. Directory syncs and
//! everything else pass straight through.
//!
//! ```
//! use std::path::Path;
//! use logbook_log::sim::GatedStorage;
//! use logbook_log::storage::{OpenMode, Storage};
//!
//! # fn main() -> std::io::Result<()> {
//! let storage = GatedStorage::new();
//! storage.create_dir_all(Path::new("/data"))?;
//! let file = storage.open(Path::new("/data/f"), OpenMode::CreateNew)?;
//! file.write_at(b"x", 0)?;
//! storage.gate.hold(); // a sync_data now would wait …
//! storage.gate.release(); // … until this
//! file.sync_data()?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::SimStorage;
use crate::storage::{DirLock, OpenMode, Storage, StorageFile};

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    /// Syncs fail (an I/O error) instead of passing.
    fail: bool,
}

/// Held or released; `sync_data` of a [`GatedStorage`] file waits while it is held.
/// Starts released.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    released: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    /// From now on every `sync_data` waits (one already past the gate goes on).
    pub fn hold(&self) {
        self.lock().held = true;
    }

    /// Lets every waiting and later `sync_data` through.
    pub fn release(&self) {
        self.open(false);
    }

    /// Lets every waiting and later `sync_data` go on, failing with an I/O error, until the
    /// next [`Gate::release`].
    pub fn release_failing(&self) {
        self.open(true);
    }

    /// Whether the gate is held.
    pub fn is_held(&self) -> bool {
        self.lock().held
    }

    /// How many `sync_data` calls wait at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn open(&self, fail: bool) {
        let mut state = self.lock();
        state.held = false;
        state.fail = fail;
        self.released.notify_all();
    }

    /// Waits while the gate is held; an error once released failing.
    fn pass(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.held {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while state.held {
                state = self.released.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if state.fail {
            return Err(io::Error::other("fsync failed at the test's gate"));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Two flags cannot be left half-written: a panic elsewhere does not poison them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A storage whose files' `sync_data` waits at [`GatedStorage::gate`]. Clones share the
/// storage underneath and the gate.
#[derive(Debug, Clone, Default)]
pub struct GatedStorage<S = SimStorage> {
    /// The storage underneath (a [`SimStorage`]: power loss, faults, inspection).
    pub inner: S,
    /// Held, every `fdatasync` waits.
    pub gate: Arc<Gate>,
}

impl GatedStorage {
    /// An empty simulated file system with the gate released.
    pub fn new() -> GatedStorage {
        GatedStorage::default()
    }
}

impl<S: Storage> GatedStorage<S> {
    /// `inner` (say the real file system) behind a released gate.
    pub fn over(inner: S) -> GatedStorage<S> {
        GatedStorage {
            inner,
            gate: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct GatedFile {
    file: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass()?;
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl<S: Storage> Storage for GatedStorage<S> {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(GatedFile {
            file: self.inner.open(path, mode)?,
            gate: self.gate.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock(path)
    }
}
