//! An in-memory [`Storage`] that can lose power.
//!
//! [`SimStorage`] is the test double behind the file-system seam (see [`crate::storage`]);
//! [`GatedStorage`] is one whose `fdatasync` a test can hold back (an append in flight). It
//! exists because a crash test that only kills processes cannot see a *missing* fsync: SIGKILL
//! keeps the page cache. `SimStorage` remembers, for every file and every directory, what has
//! been made durable, and [`SimStorage::power_loss`] throws away everything else.
//!
//! ```
//! use std::path::Path;
//! use logbook_log::sim::SimStorage;
//! use logbook_log::storage::{OpenMode, Storage};
//!
//! # fn main() -> std::io::Result<()> {
//! let sim = SimStorage::new();
//! sim.create_dir_all(Path::new("/data"))?;
//! sim.sync_dir(Path::new("/"))?; // makes the entry "data" durable
//! let file = sim.open(Path::new("/data/log"), OpenMode::CreateNew)?;
//! sim.sync_dir(Path::new("/data"))?; // makes the entry "log" durable
//! file.write_at(b"acked", 0)?;
//! file.sync_data()?;
//! file.write_at(b" lost", 5)?; // never synced
//!
//! sim.power_loss();
//! assert!(file.read_at(&mut [0; 1], 0).is_err()); // handles from before are stale
//! assert_eq!(sim.file_bytes("/data/log"), Some(b"acked".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! # The model
//!
//! Every file and directory is an *inode* with two copies of its contents:
//!
//! ```text
//!                 write_at, set_len                  sync_data
//!   file inode:  ──────────────────▶  current  ─────────────────▶  durable
//!                                     (bytes)                      (bytes)
//!
//!                 create, rename, remove             sync_dir(this directory)
//!   dir inode:   ──────────────────▶  current  ─────────────────▶  durable
//!                                     (name → inode)               (name → inode)
//!
//!   power_loss():  current := durable for every inode; inodes no longer reachable from
//!                  the root vanish; every open handle and lock from before goes stale.
//! ```
//!
//! Consequences a test can rely on:
//!
//! * bytes written but not `sync_data`ed are gone after a power loss, as is a `set_len`;
//! * a file created (or directory created by `create_dir_all`) is gone after a power loss
//!   unless its *parent* directory was synced after the creation, even if its data was synced;
//! * a rename or remove is undone by a power loss unless the parent directory (both parents,
//!   for a move between directories) was synced afterwards;
//! * a process kill loses nothing: to simulate one, drop every handle and reopen through a
//!   clone of the same `SimStorage`. There is no separate call for it.
//!
//! Invariants: the root (inode 0) always exists and is a directory; every inode reachable from
//! the root through current *or* durable entries, and every inode with an open handle or a
//! lock, is kept; any other inode is dropped (so memory does not grow with removed segments).
//!
//! Paths are normalised lexically (`.` and `..` are resolved by text, there are no symlinks)
//! and relative paths are taken from the root, so `a/b`, `/a/b` and `/a/./c/../b` name the
//! same file.
//!
//! # Fault injection
//!
//! Countdowns make the *n*+1-th call fail and every call after it, until
//! [`SimStorage::clear_faults`]: [`SimStorage::fail_writes_after`] for `write_at`,
//! [`SimStorage::fail_syncs_after`] for `sync_data` and [`SimStorage::fail_dir_syncs_after`]
//! for `sync_dir`. A failed sync makes nothing durable. [`SimStorage::set_torn_writes`] makes a
//! failing write land its first half first, like a torn write on a real disk.
//! [`SimStorage::set_capacity_bytes`] makes the disk fill up (`StorageFull`, i.e. ENOSPC).
//!
//! # Limits of the model
//!
//! * **Whole-file durability at sync granularity.** A power loss keeps exactly the file as of
//!   its last successful `sync_data`. A real disk may keep any subset of the unsynced pages
//!   (a later write without an earlier one, a half-written sector). Build such states
//!   explicitly with [`SimStorage::truncate`] and [`SimStorage::corrupt`].
//! * **Directories are independent.** Each directory's entries become durable only through its
//!   own `sync_dir`. This is stricter than ext4 or XFS, whose journal commits all metadata in
//!   order: moving a file between two directories and syncing only the source loses the file
//!   here; syncing only the target leaves it in both (as if hard-linked). Moving *directories*
//!   between directories can even leave a directory reachable twice, which no real file system
//!   allows; the log never does that.
//! * **A failed sync keeps the current bytes.** Linux may instead drop the dirty pages and
//!   report the error only once ("fsyncgate"); the log must treat any failed sync as fatal to
//!   the file, so the difference should not matter.
//! * **No metadata**: no permissions, times, symlinks or hard links; `sync_data` and `sync_dir`
//!   are the only ways to make anything durable (an fsync of a new file does not make its
//!   directory entry durable, as POSIX allows).
//! * **Space**: capacity counts the current bytes of every file still held (including removed
//!   files that are open or whose removal is not durable yet), not blocks; extending with
//!   `set_len` uses space, unlike a sparse file. One file holds at most 4 GiB, since it lives
//!   in memory (`FileTooLarge` beyond that).
//! * **Locks** are a set of locked inodes in this one `SimStorage`; a power loss releases them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{DirLock, OpenMode, Storage, StorageFile};

mod gated;
pub use gated::{Gate, GatedStorage};

/// Largest file the simulation holds, in bytes (4 GiB): files live in memory.
const FILE_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// `EBADF`, what the OS returns for a write through a read-only file descriptor (the same
/// number on Linux and macOS).
const EBADF: i32 = 9;

/// The root directory's inode.
const ROOT: InodeId = 0;

type InodeId = u64;

/// An in-memory file system that models what survives a power loss, with fault injection.
///
/// Clones share one file system, so a test keeps a clone to inspect, fault and power-cycle
/// the storage it handed to the log. See the [module docs](self) for the model and its limits.
#[derive(Clone, Default)]
pub struct SimStorage {
    shared: Arc<Mutex<State>>,
}

impl SimStorage {
    /// An empty file system: only the root directory, no faults, no capacity limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: every file's bytes and every directory's entries go back to what
    /// was last made durable, and inodes no longer reachable vanish.
    ///
    /// Handles opened and locks taken before the call go stale: every operation on such a
    /// handle fails with [`io::ErrorKind::StaleNetworkFileHandle`] (ESTALE), and dropping a
    /// stale lock releases nothing. Fault settings and counters are kept.
    pub fn power_loss(&self) {
        self.state().power_loss();
    }

    /// After `n` more successful `write_at` calls, every `write_at` fails with an
    /// [`io::ErrorKind::Other`] error "injected write failure" (see [`Self::set_torn_writes`]
    /// for what such a write leaves behind). `n = 0` fails the next write.
    pub fn fail_writes_after(&self, n: u64) {
        self.state().faults.writes = Some(n);
    }

    /// After `n` more successful `sync_data` calls, every `sync_data` fails with an
    /// [`io::ErrorKind::Other`] error "injected sync failure" and makes nothing durable.
    pub fn fail_syncs_after(&self, n: u64) {
        self.state().faults.syncs = Some(n);
    }

    /// After `n` more successful `sync_dir` calls, every `sync_dir` fails with an
    /// [`io::ErrorKind::Other`] error "injected dir sync failure" and makes nothing durable.
    pub fn fail_dir_syncs_after(&self, n: u64) {
        self.state().faults.dir_syncs = Some(n);
    }

    /// Removes every injected fault: the three countdowns and the capacity limit. The torn-write
    /// setting only shapes how an injected failure looks, so it is kept.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults = Faults::default();
        state.capacity_bytes = None;
    }

    /// Limits the total current bytes of all held files (see [`Self::used_bytes`]); a
    /// `write_at` or `set_len` that would exceed it fails with [`io::ErrorKind::StorageFull`]
    /// and changes nothing. `None` (the default) means no limit.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.state().capacity_bytes = capacity_bytes;
    }

    /// When `true`, a `write_at` failed by [`Self::fail_writes_after`] first writes the first
    /// half of its buffer (rounded down), like a torn write. Default `false`: it writes nothing.
    pub fn set_torn_writes(&self, torn: bool) {
        self.state().torn_writes = torn;
    }

    /// The current bytes of the file at `path` (what a reader sees now), or `None` if there is
    /// no file there.
    pub fn file_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.state();
        let id = state.resolve(path.as_ref(), View::Current).ok()?;
        match state.inodes.get(&id) {
            Some(Inode::File(file)) => Some(file.current.clone()),
            _ => None,
        }
    }

    /// The bytes a power loss now would leave at `path`: resolved through durable directory
    /// entries, the file's durable bytes. `None` if no file would be there.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.state();
        let id = state.resolve(path.as_ref(), View::Durable).ok()?;
        match state.inodes.get(&id) {
            Some(Inode::File(file)) => Some(file.durable.clone()),
            _ => None,
        }
    }

    /// How many `sync_data` calls have succeeded since creation.
    pub fn sync_count(&self) -> u64 {
        self.state().sync_count
    }

    /// How many `sync_dir` calls have succeeded since creation.
    pub fn dir_sync_count(&self) -> u64 {
        self.state().dir_sync_count
    }

    /// How many `write_at` calls have succeeded since creation.
    pub fn write_count(&self) -> u64 {
        self.state().write_count
    }

    /// Total current bytes of every file still held, in bytes: what
    /// [`Self::set_capacity_bytes`] limits.
    pub fn used_bytes(&self) -> u64 {
        self.state().used_bytes()
    }

    /// XORs the byte at `pos` of the file at `path` with `xor`, in both its current and its
    /// durable bytes (wherever the file is that long), to simulate corruption on the medium.
    ///
    /// # Errors
    ///
    /// `NotFound` if there is no file at `path`, `IsADirectory` if it is a directory,
    /// `InvalidInput` if `pos` is beyond both copies.
    pub fn corrupt(&self, path: impl AsRef<Path>, pos: u64, xor: u8) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.state();
        let file = state.file_at_mut(path)?;
        let mut flipped = false;
        for bytes in [&mut file.current, &mut file.durable] {
            if let Some(byte) = usize::try_from(pos).ok().and_then(|i| bytes.get_mut(i)) {
                *byte ^= xor;
                flipped = true;
            }
        }
        if flipped {
            Ok(())
        } else {
            Err(error(
                io::ErrorKind::InvalidInput,
                path,
                "position is beyond the end of the file",
            ))
        }
    }

    /// Shortens the file at `path` to at most `len` bytes, in both its current and its durable
    /// bytes, to simulate a torn tail. A file already that short is left alone.
    ///
    /// # Errors
    ///
    /// `NotFound` if there is no file at `path`, `IsADirectory` if it is a directory.
    pub fn truncate(&self, path: impl AsRef<Path>, len: u64) -> io::Result<()> {
        let mut state = self.state();
        let file = state.file_at_mut(path.as_ref())?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        file.current.truncate(len);
        file.durable.truncate(len);
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.shared)
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not deadlock if the caller holds the state.
        match self.shared.try_lock() {
            Ok(state) => f
                .debug_struct("SimStorage")
                .field("generation", &state.generation)
                .field("inodes", &state.inodes.len())
                .field("used_bytes", &state.used_bytes())
                .field("locks", &state.locks.len())
                .field("faults", &state.faults)
                .finish_non_exhaustive(),
            Err(_) => f.write_str("SimStorage { <busy> }"),
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let names = components(path);
        let mut dir = ROOT;
        for (i, name) in names.iter().enumerate() {
            let existing = state.dir(dir, path)?.current.get(name).copied();
            dir = match existing {
                Some(id) if state.is_dir(id) => id,
                Some(_) if i + 1 == names.len() => {
                    return Err(error(io::ErrorKind::AlreadyExists, path, "a file exists"));
                }
                Some(_) => return Err(not_a_directory(path)),
                None => {
                    let id = state.add_inode(Inode::Dir(DirInode::default()));
                    state.dir_mut(dir).current.insert(name.clone(), id);
                    id
                }
            };
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state();
        let id = state.resolve(path, View::Current)?;
        let dir = state.dir(id, path)?;
        Ok(dir.current.keys().map(|name| path.join(name)).collect())
    }

    fn is_dir(&self, path: &Path) -> bool {
        let state = self.state();
        state
            .resolve(path, View::Current)
            .is_ok_and(|id| state.is_dir(id))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state();
        let id = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.resolve(path, View::Current)?,
            OpenMode::CreateNew => {
                let (parent, name) = state.parent(path)?;
                if state.dir_mut(parent).current.contains_key(&name) {
                    return Err(error(io::ErrorKind::AlreadyExists, path, "file exists"));
                }
                let id = state.add_inode(Inode::File(FileInode::default()));
                state.dir_mut(parent).current.insert(name, id);
                id
            }
        };
        if state.is_dir(id) {
            return Err(is_a_directory(path));
        }
        state.hold(id);
        Ok(Arc::new(SimFile {
            shared: Arc::clone(&self.shared),
            inode: id,
            generation: state.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let (parent, name) = state.parent(path)?;
        let id = state.entry(parent, &name, path)?;
        if state.is_dir(id) {
            return Err(is_a_directory(path));
        }
        state.dir_mut(parent).current.remove(&name);
        state.collect_garbage();
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let (parent, name) = state.parent(path)?;
        let id = state.entry(parent, &name, path)?;
        if !state.is_dir(id) {
            return Err(not_a_directory(path));
        }
        // Unlinking the directory is enough: its own entries are reachable only through it.
        // A power loss before the parent is synced brings it back with its durable entries.
        state.dir_mut(parent).current.remove(&name);
        state.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        let (from_parent, from_name) = state.parent(from)?;
        let id = state.entry(from_parent, &from_name, from)?;
        let (to_parent, to_name) = state.parent(to)?;
        let moving_dir = state.is_dir(id);
        if moving_dir && components(to).starts_with(&components(from)) {
            if components(to) == components(from) {
                return Ok(());
            }
            return Err(error(
                io::ErrorKind::InvalidInput,
                to,
                "cannot move a directory into itself",
            ));
        }
        if let Some(&target) = state.dir_mut(to_parent).current.get(&to_name) {
            if target == id {
                return Ok(()); // POSIX: renaming a file onto itself does nothing
            }
            match (moving_dir, state.inodes.get(&target)) {
                (false, Some(Inode::Dir(_))) => return Err(is_a_directory(to)),
                (true, Some(Inode::File(_))) => return Err(not_a_directory(to)),
                (true, Some(Inode::Dir(dir))) if !dir.current.is_empty() => {
                    return Err(error(
                        io::ErrorKind::DirectoryNotEmpty,
                        to,
                        "directory not empty",
                    ));
                }
                _ => {}
            }
        }
        state.dir_mut(from_parent).current.remove(&from_name);
        state.dir_mut(to_parent).current.insert(to_name, id);
        state.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let id = state.resolve(path, View::Current)?;
        if state.faults.dir_syncs == Some(0) {
            return Err(io::Error::other("injected dir sync failure"));
        }
        // Like `File::open(path)?.sync_all()` on a real file system, syncing a file's path
        // syncs the file, and its directory entry stays as durable as it was.
        match state.inodes.get_mut(&id) {
            Some(Inode::Dir(dir)) => dir.durable.clone_from(&dir.current),
            Some(Inode::File(file)) => file.durable.clone_from(&file.current),
            None => unreachable!("sim invariant: resolved inode {id} is not live"),
        }
        count_down(&mut state.faults.dir_syncs);
        state.dir_sync_count += 1;
        state.collect_garbage();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut state = self.state();
        // Like the OS implementation: open the file, creating it if missing, then lock it.
        let id = match state.resolve(path, View::Current) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (parent, name) = state.parent(path)?;
                let id = state.add_inode(Inode::File(FileInode::default()));
                state.dir_mut(parent).current.insert(name, id);
                id
            }
            Err(e) => return Err(e),
        };
        if state.is_dir(id) {
            return Err(is_a_directory(path));
        }
        if !state.locks.insert(id) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        state.hold(id);
        Ok(Box::new(SimLock {
            shared: Arc::clone(&self.shared),
            inode: id,
            generation: state.generation,
        }))
    }
}

/// Everything behind the mutex.
#[derive(Debug)]
struct State {
    /// Bumped by every power loss; handles and locks of older generations are stale.
    generation: u64,
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    /// Open handles and locks per inode, in this generation; never holds a zero.
    open: BTreeMap<InodeId, u64>,
    locks: BTreeSet<InodeId>,
    faults: Faults,
    capacity_bytes: Option<u64>,
    torn_writes: bool,
    sync_count: u64,
    dir_sync_count: u64,
    write_count: u64,
}

/// Countdowns: `Some(0)` fails every call, `Some(n)` lets `n` more calls succeed first.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    writes: Option<u64>,
    syncs: Option<u64>,
    dir_syncs: Option<u64>,
}

#[derive(Debug)]
enum Inode {
    File(FileInode),
    Dir(DirInode),
}

#[derive(Debug, Default)]
struct FileInode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct DirInode {
    current: BTreeMap<OsString, InodeId>,
    durable: BTreeMap<OsString, InodeId>,
}

/// Which directory entries a path is resolved through.
#[derive(Debug, Clone, Copy)]
enum View {
    Current,
    Durable,
}

impl Default for State {
    fn default() -> Self {
        Self {
            generation: 0,
            next_inode: ROOT + 1,
            inodes: BTreeMap::from([(ROOT, Inode::Dir(DirInode::default()))]),
            open: BTreeMap::new(),
            locks: BTreeSet::new(),
            faults: Faults::default(),
            capacity_bytes: None,
            torn_writes: false,
            sync_count: 0,
            dir_sync_count: 0,
            write_count: 0,
        }
    }
}

impl State {
    fn power_loss(&mut self) {
        self.generation += 1;
        for inode in self.inodes.values_mut() {
            match inode {
                Inode::File(file) => file.current.clone_from(&file.durable),
                Inode::Dir(dir) => dir.current.clone_from(&dir.durable),
            }
        }
        self.open.clear();
        self.locks.clear();
        self.collect_garbage();
    }

    /// Drops every inode that neither a power loss nor an open handle can reach any more.
    fn collect_garbage(&mut self) {
        let mut live = BTreeSet::new();
        let mut stack: Vec<InodeId> = self.open.keys().copied().collect();
        stack.push(ROOT);
        while let Some(id) = stack.pop() {
            if !live.insert(id) {
                continue;
            }
            if let Some(Inode::Dir(dir)) = self.inodes.get(&id) {
                stack.extend(dir.current.values().chain(dir.durable.values()));
            }
        }
        self.inodes.retain(|id, _| live.contains(id));
        assert!(
            matches!(self.inodes.get(&ROOT), Some(Inode::Dir(_))),
            "sim invariant: the root is a live directory"
        );
    }

    fn add_inode(&mut self, inode: Inode) -> InodeId {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, inode);
        id
    }

    fn hold(&mut self, id: InodeId) {
        *self.open.entry(id).or_insert(0) += 1;
    }

    fn release(&mut self, id: InodeId) {
        let Some(count) = self.open.get_mut(&id) else {
            unreachable!("sim invariant: released inode {id} was not held");
        };
        *count -= 1;
        if *count == 0 {
            self.open.remove(&id);
            self.collect_garbage();
        }
    }

    fn is_dir(&self, id: InodeId) -> bool {
        matches!(self.inodes.get(&id), Some(Inode::Dir(_)))
    }

    /// The directory `id`; `NotADirectory` (naming `path`) if it is a file.
    fn dir(&self, id: InodeId, path: &Path) -> io::Result<&DirInode> {
        match self.inodes.get(&id) {
            Some(Inode::Dir(dir)) => Ok(dir),
            Some(Inode::File(_)) => Err(not_a_directory(path)),
            None => unreachable!("sim invariant: inode {id} is referenced but not live"),
        }
    }

    /// The directory `id`, which the caller has already checked is one.
    fn dir_mut(&mut self, id: InodeId) -> &mut DirInode {
        match self.inodes.get_mut(&id) {
            Some(Inode::Dir(dir)) => dir,
            _ => unreachable!("sim invariant: inode {id} was checked to be a live directory"),
        }
    }

    /// The file an open handle names; open handles keep their inode live.
    fn file_mut(&mut self, id: InodeId) -> &mut FileInode {
        match self.inodes.get_mut(&id) {
            Some(Inode::File(file)) => file,
            _ => unreachable!("sim invariant: an open handle's inode {id} is a live file"),
        }
    }

    /// The file at `path` (through current entries).
    fn file_at_mut(&mut self, path: &Path) -> io::Result<&mut FileInode> {
        let id = self.resolve(path, View::Current)?;
        match self.inodes.get_mut(&id) {
            Some(Inode::File(file)) => Ok(file),
            _ => Err(is_a_directory(path)),
        }
    }

    /// The inode at `path`, walking `view` entries from the root.
    fn resolve(&self, path: &Path, view: View) -> io::Result<InodeId> {
        let mut id = ROOT;
        for name in components(path) {
            let dir = self.dir(id, path)?;
            let entries = match view {
                View::Current => &dir.current,
                View::Durable => &dir.durable,
            };
            id = *entries.get(&name).ok_or_else(|| not_found(path))?;
        }
        Ok(id)
    }

    /// The (current) parent directory of `path` and the last component's name.
    fn parent(&self, path: &Path) -> io::Result<(InodeId, OsString)> {
        let mut names = components(path);
        let Some(name) = names.pop() else {
            return Err(error(
                io::ErrorKind::ResourceBusy,
                path,
                "the root cannot be removed, renamed or replaced",
            ));
        };
        let mut id = ROOT;
        for component in names {
            id = *self
                .dir(id, path)?
                .current
                .get(&component)
                .ok_or_else(|| not_found(path))?;
        }
        self.dir(id, path)?;
        Ok((id, name))
    }

    /// The inode `name` names in directory `parent`, or `NotFound`.
    fn entry(&self, parent: InodeId, name: &OsString, path: &Path) -> io::Result<InodeId> {
        self.dir(parent, path)?
            .current
            .get(name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match inode {
                Inode::File(file) => file.current.len() as u64,
                Inode::Dir(_) => 0,
            })
            .sum()
    }

    /// Fails with `StorageFull` if growing by `growth` bytes would exceed the capacity.
    fn check_space(&self, growth: u64) -> io::Result<()> {
        match self.capacity_bytes {
            Some(capacity) if self.used_bytes().saturating_add(growth) > capacity => Err(
                io::Error::new(io::ErrorKind::StorageFull, "sim: no space left on device"),
            ),
            _ => Ok(()),
        }
    }

    fn write(&mut self, id: InodeId, buf: &[u8], pos: u64) -> io::Result<()> {
        if self.faults.writes == Some(0) {
            if self.torn_writes {
                // The torn prefix obeys the same limits; if it does not fit, nothing lands.
                let _ignored = self.apply_write(id, &buf[..buf.len() / 2], pos);
            }
            return Err(io::Error::other("injected write failure"));
        }
        self.apply_write(id, buf, pos)?;
        count_down(&mut self.faults.writes);
        self.write_count += 1;
        Ok(())
    }

    /// Writes `buf` at `pos`, zero-filling any gap after the end; all or nothing.
    fn apply_write(&mut self, id: InodeId, buf: &[u8], pos: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(()); // like pwrite of 0 bytes: the file does not grow
        }
        let end = pos
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= FILE_BYTES_MAX)
            .ok_or_else(file_too_large)?;
        let len = self.file_mut(id).current.len() as u64;
        self.check_space(end.saturating_sub(len))?;
        let start = usize::try_from(pos).map_err(|_| file_too_large())?;
        let end = usize::try_from(end).map_err(|_| file_too_large())?;
        let file = self.file_mut(id);
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        file.current[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&mut self, id: InodeId, len: u64) -> io::Result<()> {
        if len > FILE_BYTES_MAX {
            return Err(file_too_large());
        }
        let current = self.file_mut(id).current.len() as u64;
        self.check_space(len.saturating_sub(current))?;
        let len = usize::try_from(len).map_err(|_| file_too_large())?;
        self.file_mut(id).current.resize(len, 0);
        Ok(())
    }

    fn sync_data(&mut self, id: InodeId) -> io::Result<()> {
        if self.faults.syncs == Some(0) {
            return Err(io::Error::other("injected sync failure"));
        }
        let file = self.file_mut(id);
        file.durable.clone_from(&file.current);
        count_down(&mut self.faults.syncs);
        self.sync_count += 1;
        Ok(())
    }
}

/// A handle returned by [`SimStorage::open`]; stale after a power loss.
struct SimFile {
    shared: Arc<Mutex<State>>,
    inode: InodeId,
    generation: u64,
    writable: bool,
}

impl SimFile {
    /// Runs `f` on the state unless this handle is stale.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = lock_state(&self.shared);
        if state.generation != self.generation {
            return Err(stale());
        }
        f(&mut state)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(EBADF))
        }
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("inode", &self.inode)
            .field("generation", &self.generation)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.with_state(|state| {
            let bytes = &state.file_mut(self.inode).current;
            let Some(available) = usize::try_from(pos).ok().and_then(|p| bytes.get(p..)) else {
                return Ok(0);
            };
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with_state(|state| {
            self.check_writable()?;
            state.write(self.inode, buf, pos)
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        // Like fdatasync, this works through a read-only handle too.
        self.with_state(|state| state.sync_data(self.inode))
    }

    fn len(&self) -> io::Result<u64> {
        self.with_state(|state| Ok(state.file_mut(self.inode).current.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_state(|state| {
            self.check_writable()?;
            state.set_len(self.inode, len)
        })
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = lock_state(&self.shared);
        if state.generation == self.generation {
            state.release(self.inode);
        }
    }
}

/// A lock taken by [`SimStorage::lock`]; released on drop unless a power loss came first.
struct SimLock {
    shared: Arc<Mutex<State>>,
    inode: InodeId,
    generation: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("inode", &self.inode)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = lock_state(&self.shared);
        // After a power loss the lock is gone already and someone else may hold it now.
        if state.generation == self.generation {
            state.locks.remove(&self.inode);
            state.release(self.inode);
        }
    }
}

/// Locks the state, ignoring poisoning: a panicking test thread leaves the model consistent,
/// since every mutation completes under the lock before anything can panic.
fn lock_state(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One successful call against a countdown.
fn count_down(countdown: &mut Option<u64>) {
    if let Some(n) = countdown {
        *n = n.saturating_sub(1);
    }
}

/// `path` as names from the root, with `.` and `..` resolved lexically.
fn components(path: &Path) -> Vec<OsString> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                names.pop();
            }
            Component::Normal(name) => names.push(name.to_os_string()),
        }
    }
    names
}

fn error(kind: io::ErrorKind, path: &Path, what: &str) -> io::Error {
    io::Error::new(kind, format!("sim: {}: {what}", path.display()))
}

fn not_found(path: &Path) -> io::Error {
    error(io::ErrorKind::NotFound, path, "no such file or directory")
}

fn not_a_directory(path: &Path) -> io::Error {
    error(io::ErrorKind::NotADirectory, path, "not a directory")
}

fn is_a_directory(path: &Path) -> io::Error {
    error(io::ErrorKind::IsADirectory, path, "is a directory")
}

fn file_too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        "sim: a simulated file holds at most 4 GiB",
    )
}

fn stale() -> io::Error {
    io::Error::new(
        io::ErrorKind::StaleNetworkFileHandle,
        "sim: handle opened before a simulated power loss",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> &Path {
        Path::new(path)
    }

    /// A storage with a durable directory `/d`.
    fn setup() -> SimStorage {
        let sim = SimStorage::new();
        sim.create_dir_all(p("/d")).unwrap();
        sim.sync_dir(p("/")).unwrap();
        sim
    }

    /// Creates `/d/<name>` and makes its entry durable.
    fn create(sim: &SimStorage, name: &str) -> Arc<dyn StorageFile> {
        let path = Path::new("/d").join(name);
        let file = sim.open(&path, OpenMode::CreateNew).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        file
    }

    #[test]
    fn unsynced_bytes_vanish_on_power_loss() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"hello", 0).unwrap();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"hello");
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"");
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"");
    }

    #[test]
    fn synced_bytes_survive_and_later_writes_do_not() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        file.write_at(b" world", 5).unwrap();
        file.write_at(b"J", 0).unwrap();
        assert_eq!(sim.sync_count(), 1);
        assert_eq!(sim.write_count(), 3);
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"hello");
        let reopened = sim.open(p("/d/f"), OpenMode::ReadWrite).unwrap();
        assert_eq!(reopened.len().unwrap(), 5);
    }

    #[test]
    fn set_len_is_durable_only_after_sync() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"abcdef", 0).unwrap();
        file.sync_data().unwrap();
        file.set_len(2).unwrap();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"ab");
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"abcdef");
    }

    #[test]
    fn created_file_without_dir_sync_vanishes_even_with_synced_data() {
        let sim = setup();
        let file = sim.open(p("/d/f"), OpenMode::CreateNew).unwrap();
        file.write_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        assert_eq!(sim.durable_bytes("/d/f"), None);
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f"), None);
        assert!(sim.list_dir(p("/d")).unwrap().is_empty());
        assert_eq!(sim.used_bytes(), 0, "the orphaned inode is collected");
    }

    #[test]
    fn created_dirs_are_durable_only_after_parent_sync() {
        let sim = SimStorage::new();
        sim.create_dir_all(p("/a/b/c")).unwrap();
        sim.sync_dir(p("/")).unwrap();
        sim.sync_dir(p("/a")).unwrap();
        sim.power_loss();
        assert!(sim.is_dir(p("/a/b")));
        assert!(!sim.is_dir(p("/a/b/c")), "/a/b was never synced");
    }

    #[test]
    fn rename_without_dir_sync_is_undone() {
        let sim = setup();
        let tmp = create(&sim, "tmp");
        tmp.write_at(b"new", 0).unwrap();
        tmp.sync_data().unwrap();
        let old = create(&sim, "meta");
        old.write_at(b"old", 0).unwrap();
        old.sync_data().unwrap();
        drop((tmp, old));

        sim.rename(p("/d/tmp"), p("/d/meta")).unwrap();
        assert_eq!(sim.file_bytes("/d/meta").unwrap(), b"new");
        assert_eq!(sim.file_bytes("/d/tmp"), None);
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/meta").unwrap(), b"old");
        assert_eq!(sim.file_bytes("/d/tmp").unwrap(), b"new");

        sim.rename(p("/d/tmp"), p("/d/meta")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/meta").unwrap(), b"new");
        assert_eq!(sim.file_bytes("/d/tmp"), None);
    }

    #[test]
    fn remove_without_dir_sync_comes_back() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"x", 0).unwrap();
        file.sync_data().unwrap();
        drop(file);
        sim.remove_file(p("/d/f")).unwrap();
        assert_eq!(sim.file_bytes("/d/f"), None);
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"x");

        sim.remove_file(p("/d/f")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        assert_eq!(
            sim.used_bytes(),
            0,
            "a durably removed, closed file frees its space"
        );
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f"), None);
    }

    #[test]
    fn remove_dir_all_without_parent_sync_comes_back() {
        let sim = setup();
        drop(create(&sim, "f"));
        sim.remove_dir_all(p("/d")).unwrap();
        assert!(!sim.is_dir(p("/d")));
        sim.power_loss();
        assert_eq!(sim.list_dir(p("/d")).unwrap(), vec![PathBuf::from("/d/f")]);
    }

    #[test]
    fn removed_open_file_stays_usable_until_closed() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"abc", 0).unwrap();
        sim.remove_file(p("/d/f")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        file.write_at(b"d", 3).unwrap();
        let mut buf = [0; 4];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcd");
        assert_eq!(sim.used_bytes(), 4);
        drop(file);
        assert_eq!(sim.used_bytes(), 0);
    }

    #[test]
    fn injected_write_failure_after_countdown() {
        let sim = setup();
        let file = create(&sim, "f");
        sim.fail_writes_after(2);
        file.write_at(b"ab", 0).unwrap();
        file.write_at(b"cd", 2).unwrap();
        let err = file.write_at(b"efgh", 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(err.to_string(), "injected write failure");
        assert!(file.write_at(b"x", 0).is_err(), "failures persist");
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"abcd", "nothing written");
        assert_eq!(sim.write_count(), 2);
        sim.clear_faults();
        file.write_at(b"ef", 4).unwrap();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"abcdef");
    }

    #[test]
    fn torn_write_lands_first_half() {
        let sim = setup();
        let file = create(&sim, "f");
        sim.set_torn_writes(true);
        sim.fail_writes_after(0);
        assert!(file.write_at(b"abcde", 1).is_err());
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"\0ab");
    }

    #[test]
    fn injected_sync_failure_makes_nothing_durable() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"one", 0).unwrap();
        sim.fail_syncs_after(1);
        file.sync_data().unwrap();
        file.write_at(b"two", 3).unwrap();
        let err = file.sync_data().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(err.to_string(), "injected sync failure");
        assert_eq!(sim.sync_count(), 1);
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"one");
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"one");
    }

    #[test]
    fn injected_dir_sync_failure_makes_nothing_durable() {
        let sim = setup();
        sim.fail_dir_syncs_after(0);
        drop(sim.open(p("/d/f"), OpenMode::CreateNew).unwrap());
        assert!(sim.sync_dir(p("/d")).is_err());
        sim.power_loss();
        assert_eq!(sim.file_bytes("/d/f"), None);
    }

    #[test]
    fn capacity_fails_with_storage_full_and_writes_nothing() {
        let sim = setup();
        let file = create(&sim, "f");
        sim.set_capacity_bytes(Some(8));
        file.write_at(b"12345678", 0).unwrap();
        file.write_at(b"AB", 2).unwrap(); // overwriting needs no space
        let err = file.write_at(b"9", 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            file.set_len(9).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"12AB5678");
        sim.clear_faults();
        file.write_at(b"9", 8).unwrap();
    }

    #[test]
    fn stale_handles_fail_after_power_loss() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"abc", 0).unwrap();
        file.sync_data().unwrap();
        sim.power_loss();
        let stale = io::ErrorKind::StaleNetworkFileHandle;
        assert_eq!(file.read_at(&mut [0; 3], 0).unwrap_err().kind(), stale);
        assert_eq!(file.write_at(b"x", 0).unwrap_err().kind(), stale);
        assert_eq!(file.sync_data().unwrap_err().kind(), stale);
        assert_eq!(file.len().unwrap_err().kind(), stale);
        assert_eq!(file.set_len(0).unwrap_err().kind(), stale);
        let reopened = sim.open(p("/d/f"), OpenMode::Read).unwrap();
        drop(file); // must not release the new handle's hold
        assert_eq!(reopened.len().unwrap(), 3);
    }

    #[test]
    fn locks_are_exclusive_released_on_drop_and_cleared_by_power_loss() {
        let sim = setup();
        let guard = sim.lock(p("/d/LOCK")).unwrap();
        assert!(sim.file_bytes("/d/LOCK").is_some(), "lock creates the file");
        let err = sim.lock(p("/d/./LOCK")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(guard);
        let guard = sim.lock(p("/d/LOCK")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.power_loss();
        let new_guard = sim.lock(p("/d/LOCK")).unwrap();
        drop(guard); // stale: must not release the new holder
        assert_eq!(
            sim.lock(p("/d/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(new_guard);
    }

    #[test]
    fn errors_mirror_the_os() {
        let sim = setup();
        let kind = |r: io::Result<Arc<dyn StorageFile>>| r.unwrap_err().kind();
        assert_eq!(
            kind(sim.open(p("/d/missing"), OpenMode::Read)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(sim.open(p("/d/missing"), OpenMode::ReadWrite)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(sim.open(p("/nodir/f"), OpenMode::CreateNew)),
            io::ErrorKind::NotFound
        );
        drop(create(&sim, "f"));
        assert_eq!(
            kind(sim.open(p("/d/f"), OpenMode::CreateNew)),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(sim.open(p("/d"), OpenMode::Read)),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            sim.list_dir(p("/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.list_dir(p("/d/f")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            sim.remove_file(p("/d/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.remove_file(p("/d")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            sim.create_dir_all(p("/d/f")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            sim.sync_dir(p("/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );

        let reader = sim.open(p("/d/f"), OpenMode::Read).unwrap();
        assert_eq!(
            reader.write_at(b"x", 0).unwrap_err().raw_os_error(),
            Some(EBADF)
        );
    }

    #[test]
    fn reads_past_end_and_writes_past_end() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"xy", 3).unwrap();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"\0\0\0xy");
        let mut buf = [7; 4];
        assert_eq!(file.read_at(&mut buf, 5).unwrap(), 0);
        assert_eq!(file.read_at(&mut buf, 100).unwrap(), 0);
        assert_eq!(file.read_at(&mut buf, 3).unwrap(), 2);
        assert_eq!(&buf[..2], b"xy");
        assert_eq!(
            file.read_exact_at(&mut buf, 3).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn paths_are_normalised_lexically() {
        let sim = setup();
        drop(create(&sim, "f"));
        assert!(sim.open(p("d/f"), OpenMode::Read).is_ok());
        assert!(sim.open(p("/d/../d/./f"), OpenMode::Read).is_ok());
        assert_eq!(
            sim.list_dir(p("d")).unwrap(),
            vec![PathBuf::from("d/f")],
            "entries are joined to the path as given"
        );
        assert!(sim.is_dir(p("/")));
        assert!(sim.is_dir(p("")));
    }

    #[test]
    fn corrupt_and_truncate_change_both_copies() {
        let sim = setup();
        let file = create(&sim, "f");
        file.write_at(b"abcd", 0).unwrap();
        file.sync_data().unwrap();
        sim.corrupt("/d/f", 1, 0x20).unwrap();
        sim.truncate("/d/f", 3).unwrap();
        assert_eq!(sim.file_bytes("/d/f").unwrap(), b"aBc");
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"aBc");
        assert_eq!(
            sim.corrupt("/d/f", 3, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            sim.corrupt("/d/g", 0, 1).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn rename_errors_and_moves_between_directories() {
        let sim = setup();
        sim.create_dir_all(p("/e/sub")).unwrap();
        drop(sim.open(p("/e/sub/x"), OpenMode::CreateNew).unwrap());
        drop(create(&sim, "f"));
        assert_eq!(
            sim.rename(p("/d/f"), p("/e/sub")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            sim.rename(p("/e"), p("/d/f")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            sim.rename(p("/e"), p("/e/sub/e")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            sim.rename(p("/d/missing"), p("/d/g")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        sim.rename(p("/d/f"), p("/d/f")).unwrap();
        sim.rename(p("/d/f"), p("/e/f")).unwrap();
        assert!(sim.file_bytes("/e/f").is_some());
        assert!(sim.file_bytes("/d/f").is_none());
    }
}
