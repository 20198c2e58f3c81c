//! The life of a log directory and its streams: segment rolls and file names, the directory
//! lock, creating and dropping streams, tail waits, multi-partition appends, and limits.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DATA_DIR, START_MS, SimDir, batches, index_path, partition_dir, sample_record, segment_path,
    stored, stream_dir,
};
use logbook_log::format::{IndexEntry, IndexFile, SEGMENT_HEADER_BYTES};
use logbook_log::limits::{KEY_BYTES_MAX, RECORD_BYTES_MAX};
use logbook_log::storage::Storage;
use logbook_log::verify::verify_data_dir;
use logbook_log::{FsyncPolicy, Log, LogError, Position, Record, StreamConfig, partition_for_key};

const SEGMENT_BYTES: u64 = 4096;

#[test]
fn segments_roll_at_segment_bytes_max_and_are_named_by_base_offset() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: SEGMENT_BYTES,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let mut expected = Vec::new();
    for i in 0..60 {
        let record = sample_record(i);
        stream.append(record.clone()).unwrap().wait().unwrap();
        expected.push(stored(i, &record, START_MS));
    }
    let pdir = partition_dir("s", 0);
    let bases = dir.segment_bases(&pdir);
    assert!(bases.len() >= 4, "{bases:?}");
    assert_eq!(bases[0], 0);
    assert_eq!(stream.partition(0).unwrap().segment_count(), bases.len());

    let mut names = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let sealed = i + 1 < bases.len();
        let bytes = dir.bytes(&segment_path("s", 0, base));
        let spans = batches(&bytes);
        // The file is named by the offset of its first record, and the batches in it are
        // contiguous and whole.
        assert_eq!(spans[0].base_offset, base, "segment {base}");
        assert_eq!(spans.last().unwrap().end(), bytes.len() as u64);
        let next = spans.last().unwrap().base_offset + u64::from(spans.last().unwrap().records);
        if sealed {
            assert_eq!(next, bases[i + 1], "segments meet");
            // Rolled only when the next batch would not have fit.
            assert!(
                bytes.len() as u64 <= SEGMENT_BYTES,
                "segment {base} is too big"
            );
            let next_batch = batches(&dir.bytes(&segment_path("s", 0, bases[i + 1])))[0];
            assert!(
                bytes.len() as u64 + next_batch.len > SEGMENT_BYTES,
                "segment {base} rolled early"
            );
            // A sealed segment has an index file describing it.
            let index = IndexFile::decode(&dir.bytes(&index_path("s", 0, base))).unwrap();
            assert_eq!(index.base_offset, base);
            assert_eq!(index.segment_bytes, bytes.len() as u64);
            assert_eq!(index.next_offset, next);
            assert_eq!(
                index.entries.first(),
                Some(&IndexEntry {
                    relative_offset: 0,
                    position: SEGMENT_HEADER_BYTES as u32,
                    max_timestamp_ms_before: i64::MIN,
                })
            );
            names.push(format!("{base:020}.index"));
        } else {
            assert_eq!(next, 60);
        }
        names.push(format!("{base:020}.log"));
    }
    names.sort();
    assert_eq!(
        dir.file_names(&pdir),
        names,
        "the active segment has no index file"
    );
    assert_eq!(stream.read(0, 0, usize::MAX, usize::MAX).unwrap(), expected);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: SEGMENT_BYTES,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let small = Record::new("small");
    let big = Record::new(vec![7u8; 3 * SEGMENT_BYTES as usize]);
    for record in [&small, &big, &small] {
        stream.append(record.clone()).unwrap().wait().unwrap();
    }
    assert_eq!(dir.segment_bases(&partition_dir("s", 0)), vec![0, 1, 2]);
    let got = stream.read(0, 0, usize::MAX, usize::MAX).unwrap();
    let values: Vec<_> = got.iter().map(|r| r.value.len()).collect();
    assert_eq!(values, vec![5, 3 * SEGMENT_BYTES as usize, 5]);
}

#[test]
fn a_second_open_of_a_locked_directory_fails_with_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Log::open(tmp.path()).unwrap();
    match Log::open(tmp.path()) {
        Err(LogError::Locked { path }) => assert_eq!(path, tmp.path().join("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    match verify_data_dir(&logbook_log::storage::OsStorage, tmp.path()) {
        Err(LogError::Locked { .. }) => {}
        other => panic!("verify must not run beside a writer: {other:?}"),
    }
    let stream = first
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    stream.append(Record::new("x")).unwrap().wait().unwrap();
    drop(stream);
    drop(first);
    // Released on close.
    let again = Log::open(tmp.path()).unwrap();
    assert_eq!(again.stream("s").unwrap().record_count(), 1);
}

#[test]
fn create_stream_is_idempotent_with_the_same_config() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: SEGMENT_BYTES,
        retention_ms: Some(1_000),
        ..StreamConfig::with_partitions(3)
    };
    let first = log.create_stream("s", config.clone()).unwrap();
    first
        .append(Record::keyed("k", "v"))
        .unwrap()
        .wait()
        .unwrap();
    let again = log.create_stream("s", config.clone()).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(again.record_count(), 1);
    drop((first, again));
    drop(log);

    let log = dir.open().unwrap();
    let incarnation = log.stream("s").unwrap().incarnation();
    let reopened = log.create_stream("s", config).unwrap();
    assert_eq!(reopened.incarnation(), incarnation);
    assert_eq!(
        reopened.record_count(),
        1,
        "the existing stream, not a new one"
    );
}

#[test]
fn create_stream_with_other_settings_fails_with_stream_exists() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig::with_partitions(2);
    log.create_stream("s", config.clone()).unwrap();
    let before = dir.file_names(&stream_dir("s"));
    for other in [
        StreamConfig::with_partitions(3),
        StreamConfig {
            fsync: FsyncPolicy::Never,
            ..config.clone()
        },
        StreamConfig {
            retention_bytes: Some(1 << 20),
            ..config.clone()
        },
    ] {
        match log.create_stream("s", other.clone()) {
            Err(LogError::StreamExists { name }) => assert_eq!(name, "s"),
            res => panic!("{other:?}: expected StreamExists, got {res:?}"),
        }
    }
    assert_eq!(log.stream("s").unwrap().config(), config);
    assert_eq!(dir.file_names(&stream_dir("s")), before);
}

#[test]
fn bad_names_and_configs_are_named_errors_and_create_nothing() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let streams = Path::new(DATA_DIR).join("streams");
    let before = dir.file_names(&streams);
    let writes = dir.sim.write_count();

    for name in ["", ".hidden", "a/b", "../up", "sp ace", &"n".repeat(129)] {
        match log.create_stream(name, StreamConfig::with_partitions(1)) {
            Err(LogError::InvalidStreamName { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name:?}: expected InvalidStreamName, got {other:?}"),
        }
    }
    let bad = [
        ("partitions", StreamConfig::with_partitions(0)),
        ("partitions", StreamConfig::with_partitions(100_000)),
        (
            "segment_bytes_max",
            StreamConfig {
                segment_bytes_max: 100,
                ..StreamConfig::default()
            },
        ),
        (
            "segment_bytes_max",
            StreamConfig {
                segment_bytes_max: u64::MAX,
                ..StreamConfig::default()
            },
        ),
        (
            "retention_bytes",
            StreamConfig {
                retention_bytes: Some(0),
                ..StreamConfig::default()
            },
        ),
        (
            "retention_ms",
            StreamConfig {
                retention_ms: Some(0),
                ..StreamConfig::default()
            },
        ),
        (
            "fsync.interval_ms",
            StreamConfig {
                fsync: FsyncPolicy::Interval { interval_ms: 0 },
                ..StreamConfig::default()
            },
        ),
    ];
    for (field, config) in bad {
        match log.create_stream("ok-name", config.clone()) {
            Err(LogError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{config:?}: expected InvalidConfig({field}), got {other:?}"),
        }
    }
    assert_eq!(dir.file_names(&streams), before, "nothing created on disk");
    assert_eq!(dir.sim.write_count(), writes, "nothing written");
    assert!(log.stream_names().is_empty());
    assert!(matches!(
        log.stream("ok-name"),
        Err(LogError::UnknownStream { .. })
    ));
}

#[test]
fn drop_stream_removes_its_files_and_a_new_stream_of_that_name_starts_afresh() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig::with_partitions(2);
    let old = log.create_stream("s", config.clone()).unwrap();
    log.create_stream("other", config.clone()).unwrap();
    for i in 0..10 {
        old.append(sample_record(i)).unwrap().wait().unwrap();
    }
    assert!(dir.sim.is_dir(&stream_dir("s")));

    log.drop_stream("s").unwrap();
    assert!(!dir.sim.is_dir(&stream_dir("s")), "its directory is gone");
    assert_eq!(
        dir.file_names(&Path::new(DATA_DIR).join("streams")),
        vec!["other".to_string()],
        "nothing of it is left, not even a staging directory"
    );
    assert_eq!(log.stream_names(), vec!["other".to_string()]);
    assert!(matches!(
        log.stream("s"),
        Err(LogError::UnknownStream { .. })
    ));
    assert!(
        matches!(old.append(Record::new("late")), Err(LogError::Closed)),
        "a handle held across the drop refuses appends"
    );
    assert!(matches!(
        log.drop_stream("s"),
        Err(LogError::UnknownStream { .. })
    ));

    let new = log.create_stream("s", config).unwrap();
    assert_ne!(new.incarnation(), old.incarnation());
    assert_eq!(new.record_count(), 0);
    drop((old, new));

    // The drop is durable.
    dir.sim.power_loss();
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(
        log.stream_names(),
        vec!["other".to_string(), "s".to_string()]
    );
    assert_eq!(log.stream("s").unwrap().record_count(), 0);
}

#[test]
fn a_tail_wait_wakes_when_another_thread_appends() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    stream.append(Record::new("first")).unwrap().wait().unwrap();

    // Nothing new: the wait times out and returns the current end.
    let p = stream.partition(0).unwrap();
    let started = Instant::now();
    assert_eq!(p.wait_end_offset_above(1, Duration::from_millis(50)), 1);
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Already above: returns at once.
    assert_eq!(p.wait_end_offset_above(0, Duration::from_secs(60)), 1);

    let appender = {
        let stream = stream.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            stream
                .append(Record::new("second"))
                .unwrap()
                .wait()
                .unwrap()
        })
    };
    let started = Instant::now();
    let end = p.wait_end_offset_above(1, Duration::from_secs(60));
    assert_eq!(end, 2);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the append, not the timeout"
    );
    assert_eq!(appender.join().unwrap().base_offset, 1);
    assert_eq!(p.read(1, 10, usize::MAX).unwrap()[0].value, b"second");
}

/// Wakes a parked thread.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it is ready (a minimal executor).
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park_timeout(Duration::from_secs(60));
    }
}

#[test]
fn the_async_tail_wait_and_completion_wake_their_task() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let appender = {
        let stream = stream.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            block_on(stream.append(Record::new("x")).unwrap())
        })
    };
    let end = block_on(stream.partition(0).unwrap().end_offset_above(0));
    assert_eq!(end, 1);
    assert_eq!(appender.join().unwrap().unwrap().base_offset, 0);
}

#[test]
fn append_batch_returns_positions_in_input_order() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(3))
        .unwrap();
    // Something in every partition first, so offsets differ between partitions.
    for p in 0..3 {
        for _ in 0..=p {
            stream
                .append_to(p, &[Record::new("pad")])
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    let records: Vec<Record> = (0..30)
        .map(|i| {
            if i % 4 == 0 {
                Record::new(format!("unkeyed {i}"))
            } else {
                Record::keyed(format!("key {i}"), format!("value {i}"))
            }
        })
        .collect();
    let positions = stream
        .append_batch(records.clone())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(positions.len(), records.len());

    let unkeyed: Vec<u32> = positions
        .iter()
        .zip(&records)
        .filter(|(_, r)| r.key.is_none())
        .map(|(pos, _)| pos.partition)
        .collect();
    assert!(
        unkeyed.iter().all(|p| *p == unkeyed[0]),
        "the unkeyed records of one call share a partition: {unkeyed:?}"
    );
    let mut last: [Option<u64>; 3] = [None; 3];
    for (i, (pos, record)) in positions.iter().zip(&records).enumerate() {
        if let Some(key) = &record.key {
            assert_eq!(pos.partition, partition_for_key(key, 3), "record {i}");
        }
        // In input order within each partition, and dense: one batch per partition.
        let slot = &mut last[pos.partition as usize];
        if let Some(prev) = *slot {
            assert_eq!(pos.offset, prev + 1, "record {i}");
        }
        *slot = Some(pos.offset);
        let Position { partition, offset } = *pos;
        let back = stream.read(partition, offset, 1, usize::MAX).unwrap();
        assert_eq!(
            back[0].value, record.value,
            "record {i} is where its position says"
        );
        assert_eq!(back[0].key, record.key, "record {i}");
    }
}

#[test]
fn a_record_over_a_limit_is_a_named_error_and_nothing_is_appended() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(3))
        .unwrap();
    stream
        .append(Record::keyed("a", "b"))
        .unwrap()
        .wait()
        .unwrap();
    let ends = || -> Vec<u64> { stream.partitions().iter().map(|p| p.end_offset()).collect() };
    let before = ends();
    let writes = dir.sim.write_count();

    let too_big = Record::keyed("big", vec![0u8; RECORD_BYTES_MAX as usize]);
    let mut batch: Vec<Record> = (0..5)
        .map(|i| Record::keyed(format!("k{i}"), "v"))
        .collect();
    batch.insert(3, too_big.clone());
    match stream.append_batch(batch) {
        Err(LogError::RecordTooLarge { index, bytes, max }) => {
            assert_eq!(index, 3, "the index in the caller's batch");
            assert!(bytes > u64::from(max));
            assert_eq!(max, RECORD_BYTES_MAX);
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    match stream.append(too_big.clone()) {
        Err(LogError::RecordTooLarge { index: 0, .. }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    match stream.append_to(1, &[Record::new("ok"), too_big]) {
        Err(LogError::RecordTooLarge { index: 1, .. }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    let long_key = Record::keyed(vec![1u8; KEY_BYTES_MAX as usize + 1], "v");
    match stream.append_batch(vec![Record::new("ok"), long_key]) {
        Err(LogError::KeyTooLarge { index: 1, .. }) => {}
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    match stream.append_batch(Vec::new()) {
        Err(LogError::EmptyBatch) => {}
        other => panic!("expected EmptyBatch, got {other:?}"),
    }
    let far_future = Record {
        timestamp_ms: Some(START_MS + 2 * 24 * 3600 * 1000),
        ..Record::new("v")
    };
    match stream.append(far_future) {
        Err(LogError::TimestampOutOfRange { index: 0, .. }) => {}
        other => panic!("expected TimestampOutOfRange, got {other:?}"),
    }
    match stream.append_to(3, &[Record::new("v")]) {
        Err(LogError::UnknownPartition {
            partition: 3,
            partitions: 3,
            ..
        }) => {}
        other => panic!("expected UnknownPartition, got {other:?}"),
    }

    assert_eq!(ends(), before, "nothing appended");
    assert_eq!(dir.sim.write_count(), writes, "nothing written");
    // The stream still works.
    stream
        .append(Record::keyed("a", "c"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(stream.record_count(), 2);
}

#[test]
fn streams_and_records_survive_a_reopen_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = Log::open(tmp.path()).unwrap();
        let config = StreamConfig {
            segment_bytes_max: SEGMENT_BYTES,
            ..StreamConfig::with_partitions(1)
        };
        let stream = log.create_stream("flights", config).unwrap();
        for i in 0..40 {
            let record = sample_record(i);
            let ack = stream.append(record.clone()).unwrap().wait().unwrap();
            expected.push((ack.base_offset, record));
        }
    }
    let log = Log::open(tmp.path()).unwrap();
    let got = log
        .stream("flights")
        .unwrap()
        .read(0, 0, usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(got.len(), expected.len());
    for (stored, (offset, record)) in got.iter().zip(&expected) {
        assert_eq!(stored.offset, *offset);
        assert_eq!(
            (&stored.key, &stored.value, &stored.headers),
            (&record.key, &record.value, &record.headers)
        );
    }
    let segments = std::fs::read_dir(tmp.path().join("streams/flights/0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments > 1, "segments rolled on the real file system too");
}
