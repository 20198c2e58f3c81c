//! `Partition::try_append_encoded`: the non-blocking append an async server uses on its
//! worker threads. It queues when there is room, hands the batch back unchanged when the
//! writer's queue is full (never waits), and fails at once on a poisoned partition.
//!
//! The queue is made to stay full without any timing: the storage's `fdatasync` waits on a
//! gate the test holds closed, so the writer is stuck in its first group and gives no queue
//! space back until the test opens the gate.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use common::{DATA_DIR, ManualClock, START_MS};
use logbook_log::format::encode_batch;
use logbook_log::limits::QUEUED_BYTES_MAX;
use logbook_log::sim::SimStorage;
use logbook_log::storage::{DirLock, OpenMode, Storage, StorageFile};
use logbook_log::{Log, LogError, LogOptions, Record, StreamConfig, TryAppendError};

/// Open or closed; `fdatasync` of a file waits while it is closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

/// Simulated storage whose files' `sync_data` waits for the gate.
#[derive(Debug, Clone)]
struct GatedStorage {
    sim: SimStorage,
    gate: Arc<Gate>,
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

fn open(storage: &GatedStorage) -> Log {
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

/// One record whose value is `bytes` long, tagged with `i` at the front.
fn big_record(i: u64, bytes: usize) -> Record {
    let mut value = format!("{i:08}").into_bytes();
    value.resize(bytes, b'x');
    Record::keyed(format!("k{i}"), value)
}

#[test]
fn a_full_queue_hands_the_batch_back_and_nothing_is_lost() {
    let storage = GatedStorage {
        sim: SimStorage::new(),
        gate: Arc::default(),
    };
    let log = open(&storage);
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let partition = stream.partition(0).unwrap();

    // Every fsync now waits: the writer keeps the queue space of everything queued.
    storage.gate.set_closed(true);
    let record_bytes = 512 * 1024;
    let mut pending = Vec::new();
    let mut handed_back = None;
    // The queue holds at most QUEUED_BYTES_MAX bytes: a full queue must be reached within
    // that many 512 KiB batches, plus one.
    let most = QUEUED_BYTES_MAX / record_bytes as u64 + 1;
    for i in 0..=most {
        let batch = encode_batch(&[big_record(i, record_bytes)], START_MS).unwrap();
        match partition.try_append_encoded(batch.clone()) {
            Ok(done) => pending.push((i, done)),
            Err(TryAppendError::Full(back)) => {
                assert_eq!(
                    back.bytes(),
                    batch.bytes(),
                    "the batch comes back unchanged"
                );
                handed_back = Some((i, back));
                break;
            }
            Err(TryAppendError::Failed(e)) => panic!("append {i} failed: {e}"),
        }
    }
    let (i, back) = handed_back.expect("the queue must fill up");
    assert!(i > 0, "an empty queue always admits one batch");
    assert!(
        pending.iter().all(|(_, done)| !done.is_ready()),
        "nothing is acknowledged before its fsync"
    );

    // The handed-back batch can still be appended (blocking: waits for queue space).
    storage.gate.set_closed(false);
    let last = partition.append_encoded(back).unwrap();
    for (n, (_, done)) in pending.into_iter().enumerate() {
        assert_eq!(done.wait().unwrap().base_offset, n as u64);
    }
    assert_eq!(last.wait().unwrap().base_offset, i);
    let records = stream.read(0, 0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(records.len() as u64, i + 1);
    for (n, r) in records.iter().enumerate() {
        assert_eq!(r.key.as_deref(), Some(format!("k{n}").as_bytes()));
    }
}

#[test]
fn a_closed_partition_fails_at_once() {
    let storage = GatedStorage {
        sim: SimStorage::new(),
        gate: Arc::default(),
    };
    let log = open(&storage);
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let partition = stream.partition(0).unwrap();
    let ok = encode_batch(&[big_record(0, 10)], START_MS).unwrap();
    assert_eq!(
        partition
            .try_append_encoded(ok.clone())
            .unwrap()
            .wait()
            .unwrap()
            .base_offset,
        0
    );
    log.close();
    match partition.try_append_encoded(ok) {
        Err(TryAppendError::Failed(LogError::Closed)) => {}
        other => panic!("expected Failed(Closed), got {other:?}"),
    }
}
