//! Storage whose `fdatasync` waits on a gate a test holds closed: the writer stays in its
//! group commit, so what queues behind it is decided without any timing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use logbook_log::sim::SimStorage;
use logbook_log::storage::{DirLock, OpenMode, Storage, StorageFile};
use logbook_log::{Log, LogOptions};

use super::{DATA_DIR, ManualClock, START_MS};

/// Open or closed; `fdatasync` of a file waits while it is closed.
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
    pub fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

/// Simulated storage whose files' `sync_data` waits for the gate.
#[derive(Debug, Clone)]
pub struct GatedStorage {
    /// The simulated file system underneath.
    pub sim: SimStorage,
    /// Held closed, every `fdatasync` waits.
    pub gate: Arc<Gate>,
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

/// Opens the log in [`DATA_DIR`] on `storage` with a manual clock at [`START_MS`].
pub fn open(storage: &GatedStorage) -> Log {
    Log::open_with(
        DATA_DIR,
        LogOptions {
            storage: Arc::new(storage.clone()),
            clock: ManualClock::at(START_MS),
            ..LogOptions::default()
        },
    )
    .unwrap()
}
