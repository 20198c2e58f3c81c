//! The log of one data directory: its lock, its streams, their creation and removal.
//!
//! ```text
//! DATA_DIR/
//!   LOCK                      advisory lock: one process per data directory
//!   logbook.json              {"format_version": 1}
//!   streams/
//!     flights/
//!       stream.json           name, incarnation, config (format_version inside)
//!       request-ids.checkpoint  the request-id index at some offsets (derived: dedup.rs)
//!       0/ 00000000000000000000.log  00000000000000000000.index  ...
//!       1/ ...
//! ```
//!
//! Creating a stream is atomic: it is built under `streams/.creating-NAME`, made durable,
//! then renamed to `streams/NAME` (and the directory fsynced). Dropping renames it to
//! `streams/.dropping-NAME-INCARNATION` before deleting. Open removes leftovers of both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::{Clock, Retention, StreamConfig, validate_stream_name};
use crate::dedup::DedupIndex;
use crate::error::{LogError, Result};
use crate::format::FORMAT_VERSION;
use crate::hash_key::HashKey;
use crate::limits;
use crate::partition::{Partition, PartitionConfig};
use crate::segment::read_whole;
use crate::storage::{DirLock, OpenMode, OsStorage, Storage, replace_durably};
use crate::stream::{Stream, StreamMeta};

/// How to open a [`Log`]. The default is the real file system, the system clock through a
/// hybrid logical clock (record timestamps never decrease: [`crate::hlc`]) and creating the
/// data directory if it is missing.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The file system (tests use [`crate::sim::SimStorage`]).
    pub storage: Arc<dyn Storage>,
    /// The clock for record timestamps and age-based retention.
    pub clock: Arc<dyn Clock>,
    /// Whether opening may make a new data directory. `true` (the default): a missing
    /// directory (and its missing parents) is created, and an empty one is initialised.
    /// `false`: the directory must already hold a Logbook log (its `logbook.json` or
    /// `streams/`); otherwise open fails with [`LogError::NoDataDirectory`] and creates
    /// nothing — what a tool that only reads or appends to existing streams wants, so that a
    /// mistyped path is an error instead of a new empty log.
    pub create_if_missing: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            storage: Arc::new(OsStorage),
            clock: Arc::new(crate::hlc::HybridClock::new()),
            create_if_missing: true,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DirMeta {
    format_version: u32,
}

/// The log of one data directory. Open one per directory per process (a lock enforces it);
/// share it with `Arc`. Dropping it (or [`Log::close`]) stops the writers after they have
/// written and synced every queued append.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    streams: Arc<RwLock<BTreeMap<String, Arc<Stream>>>>,
    /// Serialises creating and dropping streams.
    admin: Mutex<()>,
    maintenance: Option<Maintenance>,
    /// The data directory's secret for keyed hash indexes ([`crate::hash_key`]).
    hash_key: HashKey,
    _lock: Box<dyn DirLock>,
}

/// How often the maintenance thread checkpoints request-id indexes that changed.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A background thread that checkpoints request-id indexes, so that recovery after a crash
/// replays at most about [`CHECKPOINT_INTERVAL`] of log.
#[derive(Debug)]
struct Maintenance {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Maintenance {
    fn start(
        storage: Arc<dyn Storage>,
        streams: Arc<RwLock<BTreeMap<String, Arc<Stream>>>>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("logbook-maintenance".into())
            .spawn(move || {
                let (lock, cvar) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    // `stop` may have run before this thread first took the lock; waiting
                    // then would delay every close by a whole interval.
                    if *stopped {
                        return;
                    }
                    stopped = cvar
                        .wait_timeout(stopped, CHECKPOINT_INTERVAL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        return;
                    }
                    let list: Vec<Arc<Stream>> = streams
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    for stream in list.iter().filter(|s| s.dedup.dirty() > 0) {
                        if let Err(e) = checkpoint_request_ids(&*storage, stream) {
                            tracing::warn!(stream = %stream.name(), error = %e, "request-id checkpoint failed; will retry");
                        }
                    }
                }
            })?;
        Ok(Maintenance {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system, recovering every
    /// stream; see [`Log::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(dir, LogOptions::default())
    }

    /// Opens the log in `dir` (creating it if missing, unless
    /// [`LogOptions::create_if_missing`] is `false`): takes the directory lock, then opens
    /// every stream, recovering each partition (truncating a torn tail, rebuilding stale
    /// indexes).
    ///
    /// # Errors
    /// [`LogError::NotADirectory`] if `dir` is a file; [`LogError::NoDataDirectory`] if it
    /// holds no log and `create_if_missing` is `false`; [`LogError::Locked`] if another
    /// process has it open; [`LogError::Corrupt`] naming file and byte offset for damage
    /// before a partition's tail; [`LogError::UnsupportedFormat`]; [`LogError::Io`].
    pub fn open_with(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        let storage = options.storage.clone();
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |e| LogError::io(op, path, e)
        };
        match data_dir_state(&*storage, &dir)? {
            DirState::Log => {}
            DirState::Empty | DirState::Missing if !options.create_if_missing => {
                return Err(LogError::NoDataDirectory { path: dir });
            }
            DirState::Empty => {}
            DirState::Missing => create_dir_durably(&*storage, &dir)?,
        }
        let lock = lock_data_dir(&*storage, &dir)?;
        check_or_write_dir_meta(&*storage, &dir)?;
        let hash_key = HashKey::load_or_create(&*storage, &dir)?;
        let streams_dir = dir.join("streams");
        if !storage.is_dir(&streams_dir) {
            storage
                .create_dir_all(&streams_dir)
                .map_err(io("create directory", &streams_dir))?;
            storage
                .sync_dir(&dir)
                .map_err(io("fsync directory", &dir))?;
        }
        let log = Log {
            dir,
            options,
            streams: Arc::new(RwLock::new(BTreeMap::new())),
            admin: Mutex::new(()),
            maintenance: None,
            hash_key,
            _lock: lock,
        };
        let mut streams = BTreeMap::new();
        let mut entries = storage
            .list_dir(&streams_dir)
            .map_err(io("list", &streams_dir))?;
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with(".creating-") || name.starts_with(".dropping-") {
                storage
                    .remove_dir_all(&path)
                    .map_err(io("remove unfinished", &path))?;
                continue;
            }
            if validate_stream_name(name).is_err() || !storage.is_dir(&path) {
                tracing::warn!(path = %path.display(), "ignoring an entry that is not a stream");
                continue;
            }
            let stream = log.open_stream(&path)?;
            streams.insert(name.to_string(), Arc::new(stream));
        }
        *log.streams.write().unwrap_or_else(|e| e.into_inner()) = streams;
        let mut log = log;
        log.maintenance = Some(
            Maintenance::start(log.options.storage.clone(), log.streams.clone())
                .map_err(|e| LogError::io("spawn maintenance thread", PathBuf::new(), e))?,
        );
        Ok(log)
    }

    /// Checks, without creating or changing anything, that `dir` holds a Logbook log, as
    /// opening with [`LogOptions::create_if_missing`] `= false` requires. For tools that
    /// look at a directory without opening it (`logbook log verify`).
    ///
    /// # Errors
    /// [`LogError::NotADirectory`], [`LogError::NoDataDirectory`], [`LogError::Io`].
    pub fn check_data_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
        match data_dir_state(storage, dir)? {
            DirState::Log => Ok(()),
            DirState::Empty | DirState::Missing => Err(LogError::NoDataDirectory {
                path: dir.to_path_buf(),
            }),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory's hash key ([`crate::hash_key`]): for other hash indexes over
    /// client-chosen strings kept beside the log.
    pub fn hash_key(&self) -> &HashKey {
        &self.hash_key
    }

    fn streams_dir(&self) -> PathBuf {
        self.dir.join("streams")
    }

    fn open_stream(&self, path: &Path) -> Result<Stream> {
        let meta_path = path.join("stream.json");
        let bytes = read_whole(&*self.options.storage, &meta_path)
            .map_err(|e| LogError::io("read", &meta_path, e))?;
        let meta: StreamMeta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            path: meta_path.clone(),
            file_offset: 0,
            reason: format!("stream.json does not parse: {e}"),
        })?;
        if meta.format_version != u32::from(FORMAT_VERSION) {
            return Err(LogError::UnsupportedFormat {
                path: meta_path,
                found: meta.format_version,
                supported: u32::from(FORMAT_VERSION),
            });
        }
        meta.config.validate()?;
        let retention = Arc::new(RwLock::new(meta.config.retention()));
        let mut partitions = Vec::with_capacity(meta.config.partitions as usize);
        for p in 0..meta.config.partitions {
            partitions.push(Partition::open(
                &meta.name,
                p,
                path.join(p.to_string()),
                self.options.storage.clone(),
                self.options.clock.clone(),
                partition_config(&meta.config, &retention),
            )?);
        }
        let dedup = Arc::new(DedupIndex::new(
            meta.config.request_ids,
            path.join("request-ids.checkpoint"),
            self.hash_key,
        ));
        let storage = &*self.options.storage;
        let ends: Vec<u64> = partitions.iter().map(Partition::end_offset).collect();
        let applied = dedup.load_checkpoint(storage, &ends, |p, offset| {
            fingerprint_at(&partitions[p], offset)
        });
        let mut found = Vec::new();
        for (partition, from) in partitions.iter().zip(applied) {
            let mut from = from.max(partition.start_offset());
            let mut cursor = crate::dedup::ReplayCursor::default();
            while from < partition.end_offset() {
                let records = partition.read(from, 10_000, 16 << 20)?;
                let Some(last) = records.last() else { break };
                from = last.offset + 1;
                dedup.replay(partition.id(), &records, &mut cursor, &mut found);
                dedup.trim_replay(&mut found);
            }
        }
        if !found.is_empty() {
            tracing::info!(stream = %meta.name, ids = found.len(), "request ids recovered from the log tail");
        }
        dedup.finish_replay(found, self.options.clock.now_ms());
        Ok(Stream::new(
            meta,
            retention,
            partitions,
            dedup,
            self.options.clock.clone(),
        ))
    }

    /// Creates a stream, or returns the existing one if it has exactly these settings.
    ///
    /// # Errors
    /// [`LogError::InvalidStreamName`], [`LogError::InvalidConfig`],
    /// [`LogError::StreamExists`] (same name, other settings), [`LogError::TooManyStreams`],
    /// [`LogError::Io`]. On error nothing is left behind.
    pub fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        validate_stream_name(name)?;
        config.validate()?;
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = self.read_streams().get(name) {
            return if existing.config() == config {
                Ok(existing.clone())
            } else {
                Err(LogError::StreamExists {
                    name: name.to_string(),
                })
            };
        }
        if self.read_streams().len() >= limits::STREAMS_MAX as usize {
            return Err(LogError::TooManyStreams {
                max: limits::STREAMS_MAX,
            });
        }
        let storage = &*self.options.storage;
        let streams_dir = self.streams_dir();
        let staging = streams_dir.join(format!(".creating-{name}"));
        let target = streams_dir.join(name);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |e| LogError::io(op, path, e)
        };
        let meta = StreamMeta {
            format_version: u32::from(FORMAT_VERSION),
            name: name.to_string(),
            incarnation: new_incarnation(self.options.clock.now_ms()),
            config: config.clone(),
        };
        let build = || -> Result<()> {
            if storage.is_dir(&staging) {
                storage
                    .remove_dir_all(&staging)
                    .map_err(io("remove", &staging))?;
            }
            storage
                .create_dir_all(&staging)
                .map_err(io("create directory", &staging))?;
            let meta_path = staging.join("stream.json");
            let file = storage
                .open(&meta_path, OpenMode::CreateNew)
                .map_err(io("create", &meta_path))?;
            let json = serde_json::to_vec_pretty(&meta)
                .map_err(|e| LogError::io("encode", &meta_path, std::io::Error::other(e)))?;
            file.write_at(&json, 0).map_err(io("write", &meta_path))?;
            file.sync_data().map_err(io("fsync", &meta_path))?;
            for p in 0..config.partitions {
                let pdir = staging.join(p.to_string());
                storage
                    .create_dir_all(&pdir)
                    .map_err(io("create directory", &pdir))?;
                crate::segment::Segment::create(storage, &pdir, p, 0)?;
            }
            storage
                .sync_dir(&staging)
                .map_err(io("fsync directory", &staging))?;
            storage
                .rename(&staging, &target)
                .map_err(io("rename", &target))?;
            storage
                .sync_dir(&streams_dir)
                .map_err(io("fsync directory", &streams_dir))
        };
        if let Err(e) = build() {
            let _ = storage.remove_dir_all(&staging);
            return Err(e);
        }
        let stream = Arc::new(self.open_stream(&target)?);
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), stream.clone());
        tracing::info!(
            stream = name,
            partitions = config.partitions,
            "stream created"
        );
        Ok(stream)
    }

    /// Changes a stream's retention — the one setting that changes after creation — and
    /// applies it at once: `stream.json` is replaced durably (a crash leaves the old settings
    /// or the new ones), then the partitions' writers use the new limits, then segments
    /// beyond them are deleted (a failure to delete is logged; the writers retry every 30 s
    /// and after each roll). Offsets are never reused; readers below the new start get
    /// [`LogError::OffsetOutOfRange`].
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] naming the field (nothing changed),
    /// [`LogError::UnknownStream`], [`LogError::Io`] writing `stream.json`.
    pub fn set_retention(&self, name: &str, retention: Retention) -> Result<Arc<Stream>> {
        retention.validate()?;
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let stream = self.stream(name)?;
        let meta = StreamMeta {
            config: StreamConfig {
                retention_bytes: retention.retention_bytes,
                retention_ms: retention.retention_ms,
                ..stream.config()
            },
            ..stream.meta.clone()
        };
        let path = self.streams_dir().join(name).join("stream.json");
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| LogError::io("encode", &path, std::io::Error::other(e)))?;
        replace_durably(&*self.options.storage, &path, &json)?;
        *stream.retention.write().unwrap_or_else(|e| e.into_inner()) = retention;
        let now_ms = self.options.clock.now_ms();
        for p in stream.partitions() {
            if let Err(e) = p.enforce_retention(now_ms) {
                tracing::warn!(stream = name, partition = p.id(), error = %e, "retention failed; will retry");
            }
        }
        tracing::info!(stream = name, ?retention, "retention changed");
        Ok(stream)
    }

    fn read_streams(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream by name.
    ///
    /// # Errors
    /// [`LogError::UnknownStream`].
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        self.read_streams()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownStream {
                name: name.to_string(),
            })
    }

    /// Names of all streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        self.read_streams().keys().cloned().collect()
    }

    /// Drops a stream: stops its writers, then removes its files. Handles still held elsewhere
    /// fail their appends with [`LogError::Closed`].
    ///
    /// # Errors
    /// [`LogError::UnknownStream`], [`LogError::Io`].
    pub fn drop_stream(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let stream = self
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| LogError::UnknownStream {
                name: name.to_string(),
            })?;
        for p in stream.partitions() {
            p.close();
        }
        let storage = &*self.options.storage;
        let streams_dir = self.streams_dir();
        let from = streams_dir.join(name);
        let to = streams_dir.join(format!(".dropping-{name}-{}", stream.incarnation()));
        storage
            .rename(&from, &to)
            .map_err(|e| LogError::io("rename", &from, e))?;
        storage
            .sync_dir(&streams_dir)
            .map_err(|e| LogError::io("fsync directory", &streams_dir, e))?;
        storage
            .remove_dir_all(&to)
            .map_err(|e| LogError::io("remove", &to, e))?;
        tracing::info!(stream = name, "stream dropped");
        Ok(())
    }

    /// Stops every writer after it has written and synced its queued appends.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(mut m) = self.maintenance.take() {
            m.stop();
        }
        for stream in self.read_streams().values() {
            for p in stream.partitions() {
                p.close();
            }
            // After the writers stopped every acknowledged id is in the index: checkpoint
            // it so the next open replays nothing.
            if let Err(e) = checkpoint_request_ids(&*self.options.storage, stream) {
                tracing::warn!(stream = %stream.name(), error = %e, "request-id checkpoint failed; the next open replays the log instead");
            }
        }
    }
}

/// Writes a stream's request-id checkpoint (see [`DedupIndex::write_checkpoint`]).
pub(crate) fn checkpoint_request_ids(storage: &dyn Storage, stream: &Stream) -> Result<()> {
    stream.dedup.write_checkpoint(
        storage,
        || {
            stream
                .partitions()
                .iter()
                .map(Partition::end_offset)
                .collect()
        },
        |p, offset| fingerprint_at(&stream.partitions()[p], offset),
    )
}

/// The fingerprint of the record at `offset` (None if it cannot be read).
fn fingerprint_at(partition: &Partition, offset: u64) -> Option<u64> {
    let records = partition.read(offset, 1, 1).ok()?;
    records
        .first()
        .filter(|r| r.offset == offset)
        .map(crate::dedup::record_fingerprint)
}

/// Takes the data directory's `LOCK` (one process per directory).
///
/// # Errors
/// [`LogError::Locked`] when another process holds it; [`LogError::Io`].
pub fn lock_data_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn DirLock>> {
    let lock_path = dir.join("LOCK");
    storage.lock(&lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            LogError::Locked { path: lock_path }
        } else {
            LogError::io("lock", &lock_path, e)
        }
    })
}

fn partition_config(config: &StreamConfig, retention: &Arc<RwLock<Retention>>) -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: config.segment_bytes_max,
        retention: retention.clone(),
        fsync: config.fsync,
    }
}

/// A stream incarnation id: creation time in ms in the high bits, a process-wide counter
/// in the low 16 bits, so two creations in one millisecond still differ.
fn new_incarnation(now_ms: i64) -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xFFFF;
    (u64::try_from(now_ms).unwrap_or(0) << 16) | n
}

/// What is at a data directory's path before open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirState {
    /// Nothing.
    Missing,
    /// A directory without `logbook.json` or `streams/` (new, or not Logbook's).
    Empty,
    /// A directory holding a log.
    Log,
}

/// Looks at `dir` without changing anything.
///
/// # Errors
/// [`LogError::NotADirectory`] if it (or a path component) is a file; [`LogError::Io`] if
/// it cannot be looked at.
fn data_dir_state(storage: &dyn Storage, dir: &Path) -> Result<DirState> {
    if storage.is_dir(dir) {
        return Ok(
            if storage.is_dir(&dir.join("streams"))
                || storage
                    .open(&dir.join("logbook.json"), OpenMode::Read)
                    .is_ok()
            {
                DirState::Log
            } else {
                DirState::Empty
            },
        );
    }
    // Not a directory: missing, or something else is in the way. Listing tells them apart
    // without opening it (opening a FIFO would block).
    match storage.list_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DirState::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(LogError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(LogError::io("look at", dir, e)),
        // Created between the two calls: treat it as new, which open then initialises.
        Ok(_) => Ok(DirState::Empty),
    }
}

/// Creates `dir` and any missing parents, then fsyncs the parent of every directory it
/// created: a new directory's entry lives in its parent, so without that sync a power loss
/// could take the whole data directory, acknowledged records and all.
fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !storage.is_dir(a))
        .collect();
    storage
        .create_dir_all(dir)
        .map_err(|e| LogError::io("create directory", dir, e))?;
    // Top down, so each entry is made durable after its parent's.
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        storage
            .sync_dir(parent)
            .map_err(|e| LogError::io("fsync directory", parent, e))?;
    }
    Ok(())
}

fn check_or_write_dir_meta(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join("logbook.json");
    match read_whole(storage, &path) {
        Ok(bytes) => {
            let meta: DirMeta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
                path: path.clone(),
                file_offset: 0,
                reason: format!("logbook.json does not parse: {e}"),
            })?;
            if meta.format_version != u32::from(FORMAT_VERSION) {
                return Err(LogError::UnsupportedFormat {
                    path,
                    found: meta.format_version,
                    supported: u32::from(FORMAT_VERSION),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let json = serde_json::to_vec(&DirMeta {
                format_version: u32::from(FORMAT_VERSION),
            })
            .map_err(|e| LogError::io("encode", &path, std::io::Error::other(e)))?;
            replace_durably(storage, &path, &json)
        }
        Err(e) => Err(LogError::io("read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    fn options(sim: &SimStorage, create_if_missing: bool) -> LogOptions {
        LogOptions {
            storage: Arc::new(sim.clone()),
            create_if_missing,
            ..LogOptions::default()
        }
    }

    #[test]
    fn without_create_if_missing_a_missing_or_empty_directory_is_an_error_and_stays_untouched() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/srv")).unwrap();
        let err = Log::open_with("/srv/typo", options(&sim, false)).unwrap_err();
        assert!(
            matches!(&err, LogError::NoDataDirectory { path } if path == Path::new("/srv/typo")),
            "{err:?}"
        );
        assert!(err.is_bad_input());
        assert!(!sim.is_dir(Path::new("/srv/typo")), "nothing is created");

        sim.create_dir_all(Path::new("/srv/empty")).unwrap();
        let err = Log::open_with("/srv/empty", options(&sim, false)).unwrap_err();
        assert!(matches!(err, LogError::NoDataDirectory { .. }), "{err:?}");
        assert!(
            sim.list_dir(Path::new("/srv/empty")).unwrap().is_empty(),
            "no LOCK, logbook.json or streams/ is written"
        );

        // The default creates it; afterwards it opens without creating.
        drop(Log::open_with("/srv/typo", options(&sim, true)).unwrap());
        let log = Log::open_with("/srv/typo", options(&sim, false)).unwrap();
        log.create_stream("s", StreamConfig::default()).unwrap();
        drop(log);
        let log = Log::open_with("/srv/typo", options(&sim, false)).unwrap();
        assert_eq!(log.stream_names(), vec!["s".to_string()]);
        assert!(Log::check_data_dir(&sim, Path::new("/srv/typo")).is_ok());
        for dir in ["/srv/empty", "/srv/missing"] {
            assert!(matches!(
                Log::check_data_dir(&sim, Path::new(dir)),
                Err(LogError::NoDataDirectory { .. })
            ));
        }
        assert!(LogOptions::default().create_if_missing);
    }

    #[test]
    fn a_file_in_place_of_the_data_directory_is_named_as_such() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/srv")).unwrap();
        drop(
            sim.open(Path::new("/srv/file"), OpenMode::CreateNew)
                .unwrap(),
        );
        for create_if_missing in [true, false] {
            for dir in ["/srv/file", "/srv/file/sub"] {
                let err = Log::open_with(dir, options(&sim, create_if_missing)).unwrap_err();
                assert!(
                    matches!(&err, LogError::NotADirectory { path } if path == Path::new(dir)),
                    "{dir} (create_if_missing {create_if_missing}): {err:?}"
                );
                assert!(err.to_string().contains("is not a directory"), "{err}");
            }
        }
        assert_eq!(sim.file_bytes("/srv/file"), Some(Vec::new()));
    }
}
