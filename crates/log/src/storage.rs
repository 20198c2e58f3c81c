//! The file-system seam: every byte the log reads or writes goes through [`Storage`].
//!
//! Two implementations exist:
//!
//! * [`OsStorage`] — the real file system (`std::fs`, positional I/O, `fdatasync`).
//! * [`crate::sim::SimStorage`] — an in-memory file system for tests that remembers which
//!   bytes and directory entries were made durable, can simulate a power loss (everything
//!   not fsynced is dropped), and can inject write / fsync failures on a countdown.
//!
//! The seam exists so that crash tests can see a *missing* fsync: SIGKILL keeps the page
//! cache, so a test that only kills processes would pass even if the log never called
//! `fdatasync`. The trait is deliberately narrow — only what the log needs.
//!
//! Durability contract (what every implementation must model):
//!
//! * bytes written with [`StorageFile::write_at`] survive a power loss only after
//!   [`StorageFile::sync_data`] returns `Ok`;
//! * a created, renamed or removed directory entry survives a power loss only after
//!   [`Storage::sync_dir`] on its parent directory returns `Ok`.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Create a new, empty file for reading and writing; fails if it exists.
    CreateNew,
}

/// A file opened through a [`Storage`]. All I/O is positional, so one handle can be shared
/// by the single writer of a partition and any number of readers.
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at byte `pos`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at byte `pos`. The bytes are not durable until [`Self::sync_data`].
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file to `len` bytes (not durable until [`Self::sync_data`]).
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `pos`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A held data-directory lock; released when dropped.
pub trait DirLock: Send + Sync + Debug {}

/// The file system as the log sees it. See the module docs for the durability contract.
pub trait Storage: Send + Sync + Debug {
    /// Creates `path` and any missing parents (entries durable after [`Self::sync_dir`] of each parent).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Lists the entries of directory `path` as full paths, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive, advisory lock on the file `path` (created if missing) without
    /// waiting. Another holder makes this fail with [`io::ErrorKind::WouldBlock`].
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system. What it creates is private to the owner (decision: data at rest,
/// docs/DESIGN.md "Security"): directories mode [`DIR_MODE`] (0700), files [`FILE_MODE`]
/// (0600), whatever the process umask allows beyond that.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

/// Mode of every directory [`OsStorage`] creates: `rwx` for the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file [`OsStorage`] creates: `rw` for the owner only.
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

#[derive(Debug)]
struct OsLock(#[expect(dead_code, reason = "held for its Drop, which unlocks")] File);

impl DirLock for OsLock {}

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE),
        };
        Ok(Arc::new(OsFile(options.open(path)?)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Replaces the file at `path` with `bytes` durably and atomically: written to `path.tmp`
/// (a leftover from a crash removed first), fsynced, renamed over `path`, the directory
/// fsynced — so after a crash the file is whole, old or new, never torn.
///
/// # Errors
/// [`crate::LogError::Io`] naming the step and the file.
pub fn replace_durably(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> crate::Result<()> {
    use crate::LogError;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A leftover that cannot be removed makes the create below fail, naming the file.
    let _ = storage.remove_file(&tmp);
    let file = storage
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    file.write_at(bytes, 0)
        .map_err(|e| LogError::io("write", &tmp, e))?;
    file.sync_data()
        .map_err(|e| LogError::io("fsync", &tmp, e))?;
    storage
        .rename(&tmp, path)
        .map_err(|e| LogError::io("rename", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync directory", dir, e))
}
