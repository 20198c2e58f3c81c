//! Helpers shared by the integration tests: a manual clock, a log on simulated storage, paths
//! of a partition's files, and a parser that finds the batches inside a segment file.

#![expect(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

pub mod gated;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use logbook_log::format::{BATCH_HEADER_BYTES, BatchHeader, SEGMENT_HEADER_BYTES};
use logbook_log::sim::SimStorage;
use logbook_log::storage::{OpenMode, Storage};
use logbook_log::{Clock, Log, LogError, LogOptions, Record, StoredRecord};

/// The data directory every simulated log lives in.
pub const DATA_DIR: &str = "/data";

/// The manual clock's starting time, ms since the epoch (2023-11-14).
pub const START_MS: i64 = 1_700_000_000_000;

/// A clock that moves only when a test moves it.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }
    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A log directory on simulated storage, with the handles a test needs to fault it.
#[derive(Debug, Clone)]
pub struct SimDir {
    /// The simulated file system (clones share it).
    pub sim: SimStorage,
    /// The log's clock.
    pub clock: Arc<ManualClock>,
}

impl SimDir {
    /// An empty file system and a clock at [`START_MS`].
    pub fn new() -> SimDir {
        SimDir {
            sim: SimStorage::new(),
            clock: ManualClock::at(START_MS),
        }
    }

    /// Opens (recovering) the log in [`DATA_DIR`].
    pub fn open(&self) -> Result<Log, LogError> {
        Log::open_with(
            DATA_DIR,
            LogOptions {
                storage: Arc::new(self.sim.clone()),
                clock: self.clock.clone(),
                ..LogOptions::default()
            },
        )
    }

    /// File names (not paths) in `dir`, sorted; empty if `dir` does not exist.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = self
            .sim
            .list_dir(dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Base offsets of the segment files in `dir`, ascending.
    pub fn segment_bases(&self, dir: &Path) -> Vec<u64> {
        self.file_names(dir)
            .iter()
            .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
            .collect()
    }

    /// The current bytes of a file; panics if it does not exist.
    pub fn bytes(&self, path: &Path) -> Vec<u8> {
        self.sim
            .file_bytes(path)
            .unwrap_or_else(|| panic!("{} does not exist", path.display()))
    }

    /// Removes a file, durably.
    pub fn remove(&self, path: &Path) {
        self.sim.remove_file(path).unwrap();
        self.sim.sync_dir(path.parent().unwrap()).unwrap();
    }

    /// Replaces a file's contents and makes them durable.
    pub fn overwrite(&self, path: &Path, bytes: &[u8]) {
        let file = self.sim.open(path, OpenMode::ReadWrite).unwrap();
        file.set_len(0).unwrap();
        file.write_at(bytes, 0).unwrap();
        file.sync_data().unwrap();
    }
}

/// The directory of partition `p` of `stream`.
pub fn partition_dir(stream: &str, p: u32) -> PathBuf {
    Path::new(DATA_DIR)
        .join("streams")
        .join(stream)
        .join(p.to_string())
}

/// The directory of `stream`.
pub fn stream_dir(stream: &str) -> PathBuf {
    Path::new(DATA_DIR).join("streams").join(stream)
}

/// The segment file starting at `base` in partition `p` of `stream`.
pub fn segment_path(stream: &str, p: u32, base: u64) -> PathBuf {
    partition_dir(stream, p).join(format!("{base:020}.log"))
}

/// The index file of the segment starting at `base`.
pub fn index_path(stream: &str, p: u32, base: u64) -> PathBuf {
    partition_dir(stream, p).join(format!("{base:020}.index"))
}

/// Where one batch sits in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    /// Byte position of its first byte.
    pub pos: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Records in it.
    pub records: u32,
}

impl BatchSpan {
    /// Byte position one past its last byte.
    pub fn end(&self) -> u64 {
        self.pos + self.len
    }
}

/// The batches of a segment file, found by their length fields (no checksum is checked).
pub fn batches(file: &[u8]) -> Vec<BatchSpan> {
    let mut spans = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos + BATCH_HEADER_BYTES <= file.len() {
        let header = BatchHeader::parse(&file[pos..]);
        let len = header.batch_bytes as usize;
        if len < BATCH_HEADER_BYTES || pos + len > file.len() {
            break;
        }
        spans.push(BatchSpan {
            pos: pos as u64,
            len: len as u64,
            base_offset: header.base_offset,
            records: header.record_count,
        });
        pos += len;
    }
    spans
}

/// A deterministic record: key `key-i`, a value of 100 ..= 400 bytes that encodes `i`, and
/// one header.
pub fn sample_record(i: u64) -> Record {
    let len = 100 + (i * 37 % 301) as usize;
    let value: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    Record::keyed(format!("key-{i}"), value).with_header("i", i.to_string())
}

/// What reading back `record`, appended at `offset` while the log's clock showed `now_ms`,
/// must return.
pub fn stored(offset: u64, record: &Record, now_ms: i64) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp_ms: record.timestamp_ms.unwrap_or(now_ms),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.clone(),
    }
}
