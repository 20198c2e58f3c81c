//! A [`SimStorage`] whose `fdatasync` a test can hold back.
//!
//! While the [`Gate`] is held, every [`StorageFile::sync_data`] waits at it: a writer stays
//! inside its group commit with its batch written but not durable — an append or a commit
//! "in flight" — for as long as the test needs, and what queues behind it is decided without
//! any timing. Directory syncs and everything else pass straight through.
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::SimStorage;
use crate::storage::{DirLock, OpenMode, Storage, StorageFile};

/// Held or released; `sync_data` of a [`GatedStorage`] file waits while it is held.
/// Starts released.
#[derive(Debug, Default)]
pub struct Gate {
    held: Mutex<bool>,
    released: Condvar,
}

impl Gate {
    /// From now on every `sync_data` waits (one already past the gate goes on).
    pub fn hold(&self) {
        *self.lock() = true;
    }

    /// Lets every waiting and later `sync_data` through.
    pub fn release(&self) {
        *self.lock() = false;
        self.released.notify_all();
    }

    /// Whether the gate is held.
    pub fn is_held(&self) -> bool {
        *self.lock()
    }

    /// Waits while the gate is held.
    fn pass(&self) {
        let mut held = self.lock();
        while *held {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A bool cannot be left half-written: a panic elsewhere does not poison its meaning.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`SimStorage`] whose files' `sync_data` waits at [`GatedStorage::gate`]. Clones share
/// the file system and the gate.
#[derive(Debug, Clone, Default)]
pub struct GatedStorage {
    /// The simulated file system underneath (power loss, faults, inspection).
    pub sim: SimStorage,
    /// Held, every `fdatasync` waits.
    pub gate: Arc<Gate>,
}

impl GatedStorage {
    /// An empty simulated file system with the gate released.
    pub fn new() -> GatedStorage {
        GatedStorage::default()
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
        self.gate.pass();
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Storage for GatedStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.sim.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.sim.is_dir(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(GatedFile {
            file: self.sim.open(path, mode)?,
            gate: self.gate.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sim.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.sim.lock(path)
    }
}
