//! Retention by bytes and by age: whole sealed segments are deleted from the oldest, never
//! the active one; the partition's start offset moves to the first kept segment, reads below
//! it are `OffsetOutOfRange`, the files are really gone, and the new start survives a reopen
//! and a power loss.
//!
//! Age comes from record timestamps (a segment goes once its *newest* record is older than
//! `now_ms - retention_ms`), so the tests drive time with a manual clock and call
//! [`Partition::enforce_retention`] with a chosen `now_ms`.
//!
//! [`Log::set_retention`] changes a stream's retention while it is open: applied at once,
//! kept across a reopen and a power loss (`stream.json` replaced durably), and a bad limit
//! changes nothing.
//!
//! [`Partition::enforce_retention`]: logbook_log::Partition::enforce_retention

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use common::{SimDir, index_path, partition_dir, sample_record, segment_path, stored};
use logbook_log::{Clock, Log, LogError, Record, Retention, StoredRecord, StreamConfig};

const STREAM: &str = "s";

/// Creates stream `s` (one partition, 4 KiB segments) with the given retention, and appends
/// `count` records one by one, the clock moving `step_ms` before each. `timestamp(i, now)`
/// may give record `i` an explicit timestamp. Returns the log (closed and reopened), the
/// records, and the base of every segment seen on disk after any append (retention deletes a
/// segment only once later ones hold enough bytes, so each is seen before it goes).
fn fill(
    dir: &SimDir,
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    count: u64,
    step_ms: i64,
    timestamp: impl Fn(u64, i64) -> Option<i64>,
) -> (Log, Vec<StoredRecord>, BTreeSet<u64>) {
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: 4096,
        retention_bytes,
        retention_ms,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream(STREAM, config).unwrap();
    let mut expected = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 0..count {
        dir.clock.advance(step_ms);
        let now = dir.clock.now_ms();
        let record = Record {
            timestamp_ms: timestamp(i, now),
            ..sample_record(i)
        };
        let ack = stream.append(record.clone()).unwrap().wait().unwrap();
        assert_eq!(ack.base_offset, i);
        expected.push(stored(i, &record, now));
        seen.extend(dir.segment_bases(&partition_dir(STREAM, 0)));
    }
    drop(stream);
    // Retention after a roll runs in the writer once the append is acknowledged; closing
    // waits for it, so no deletion is still under way when the test looks at the files.
    drop(log);
    (dir.open().unwrap(), expected, seen)
}

/// Checks the state after retention: files on disk are exactly the kept segments (an index
/// for each sealed one), `start_offset` is the first kept segment's base, reads below it fail
/// and reads from it return exactly the kept records.
fn assert_retained(dir: &SimDir, log: &Log, expected: &[StoredRecord]) -> u64 {
    let stream = log.stream(STREAM).unwrap();
    let p = stream.partition(0).unwrap();
    let bases = dir.segment_bases(&partition_dir(STREAM, 0));
    let start = p.start_offset();
    assert_eq!(
        bases.first(),
        Some(&start),
        "start offset is the first file's base"
    );
    assert_eq!(p.segment_count(), bases.len());
    assert_eq!(p.end_offset(), expected.len() as u64);

    let mut want: Vec<String> = bases.iter().map(|b| format!("{b:020}.log")).collect();
    want.extend(
        bases[..bases.len() - 1]
            .iter()
            .map(|b| format!("{b:020}.index")),
    );
    want.sort();
    assert_eq!(
        dir.file_names(&partition_dir(STREAM, 0)),
        want,
        "deleted segments leave no files behind"
    );

    if start > 0 {
        for below in [0, start - 1] {
            match p.read(below, 10, usize::MAX) {
                Err(LogError::OffsetOutOfRange {
                    partition: 0,
                    offset,
                    start: s,
                    end,
                }) => {
                    assert_eq!((offset, s, end), (below, start, expected.len() as u64));
                }
                other => panic!("read below the start offset: {other:?}"),
            }
        }
    }
    assert_eq!(
        p.read(start, usize::MAX, usize::MAX).unwrap(),
        expected[start as usize..],
        "kept records are intact"
    );
    start
}

#[test]
fn retention_by_bytes_deletes_whole_oldest_segments_keeping_at_least_the_limit() {
    let dir = SimDir::new();
    let limit = 10_000;
    let (log, expected, seen) = fill(&dir, Some(limit), None, 80, 1, |_, _| None);
    let stream = log.stream(STREAM).unwrap();
    let p = stream.partition(0).unwrap();
    p.enforce_retention(dir.clock.now_ms()).unwrap();

    let start = assert_retained(&dir, &log, &expected);
    assert!(start > 0, "retention deleted nothing");
    let bases = dir.segment_bases(&partition_dir(STREAM, 0));
    let sizes: Vec<u64> = bases
        .iter()
        .map(|b| dir.bytes(&segment_path(STREAM, 0, *b)).len() as u64)
        .collect();
    let total: u64 = sizes.iter().sum();
    assert_eq!(p.size_bytes(), total);
    assert!(total >= limit, "kept {total} bytes, fewer than {limit}");
    assert!(
        total - sizes[0] < limit,
        "the oldest segment ({} bytes) could have gone: {total} bytes kept",
        sizes[0]
    );
    // Whole segments went, oldest first: the kept ones are exactly those from `start` on.
    let deleted: Vec<u64> = seen.iter().copied().filter(|b| *b < start).collect();
    let kept: Vec<u64> = seen.iter().copied().filter(|b| *b >= start).collect();
    assert_eq!(bases, kept);
    assert!(!deleted.is_empty());
    assert_eq!(p.enforce_retention(dir.clock.now_ms()).unwrap(), 0);

    // The new start survives a reopen and a power loss (the deletions were made durable).
    drop(stream);
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(assert_retained(&dir, &log, &expected), start);
    dir.sim.power_loss();
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(assert_retained(&dir, &log, &expected), start);
}

#[test]
fn retention_runs_on_its_own_when_a_segment_rolls() {
    let dir = SimDir::new();
    let (log, expected, _) = fill(&dir, Some(8_000), None, 80, 1, |_, _| None);
    let start = assert_retained(&dir, &log, &expected);
    assert!(start > 0, "no segment was deleted after the rolls");
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = SimDir::new();
    let (log, expected, _) = fill(&dir, Some(1), Some(1), 40, 1, |_, _| None);
    let stream = log.stream(STREAM).unwrap();
    let p = stream.partition(0).unwrap();
    // Every record is far older than 1 ms, and the partition far larger than 1 byte.
    p.enforce_retention(dir.clock.now_ms() + 1_000_000_000)
        .unwrap();
    assert_eq!(p.segment_count(), 1);
    let start = assert_retained(&dir, &log, &expected);
    assert!(start > 0 && start < expected.len() as u64);
    assert_eq!(
        p.enforce_retention(dir.clock.now_ms() + 2_000_000_000)
            .unwrap(),
        0
    );
    // The active segment still takes appends.
    let ack = stream.append(sample_record(99)).unwrap().wait().unwrap();
    assert_eq!(ack.base_offset, expected.len() as u64);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_older_than_the_limit() {
    let dir = SimDir::new();
    let retention_ms = 60_000;
    // Records 1 s apart; every 7th carries an explicit timestamp an hour old, so a segment's
    // newest record is not always its last one.
    let (log, expected, _) = fill(&dir, None, Some(retention_ms), 60, 1_000, |i, now| {
        (i % 7 == 3).then_some(now - 3_600_000)
    });
    let bases = dir.segment_bases(&partition_dir(STREAM, 0));
    assert!(bases.len() >= 4, "{bases:?}");
    let newest = |segment: usize| {
        let end = bases
            .get(segment + 1)
            .copied()
            .unwrap_or(expected.len() as u64);
        expected[bases[segment] as usize..end as usize]
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap()
    };
    let limit = retention_ms as i64;
    let stream = log.stream(STREAM).unwrap();
    let p = stream.partition(0).unwrap();
    assert_eq!(p.start_offset(), 0, "nothing is old enough yet");

    // Exactly at the limit a segment is kept; a millisecond later it goes.
    assert_eq!(p.enforce_retention(newest(0) + limit).unwrap(), 0);
    assert_eq!(p.start_offset(), 0);
    assert_eq!(p.enforce_retention(newest(0) + limit + 1).unwrap(), 1);
    assert_eq!(p.stats().segments_deleted.load(Ordering::Relaxed), 1);
    assert_eq!(assert_retained(&dir, &log, &expected), bases[1]);
    assert_eq!(dir.sim.file_bytes(segment_path(STREAM, 0, 0)), None);
    assert_eq!(dir.sim.file_bytes(index_path(STREAM, 0, 0)), None);

    // After a reopen the ages come from the index files of the sealed segments.
    drop(stream);
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(assert_retained(&dir, &log, &expected), bases[1]);
    let stream = log.stream(STREAM).unwrap();
    let p = stream.partition(0).unwrap();
    assert_eq!(p.enforce_retention(newest(2) + limit + 1).unwrap(), 2);
    assert_eq!(assert_retained(&dir, &log, &expected), bases[3]);
}

#[test]
fn retention_set_on_an_open_stream_applies_at_once_and_survives_a_power_loss() {
    let dir = SimDir::new();
    let (log, expected, _) = fill(&dir, None, None, 80, 1, |_, _| None);
    assert_eq!(
        assert_retained(&dir, &log, &expected),
        0,
        "no limit: all kept"
    );

    // A limit of 0 is refused by name; nothing changes.
    for bad in [
        Retention {
            retention_bytes: Some(0),
            retention_ms: None,
        },
        Retention {
            retention_bytes: None,
            retention_ms: Some(0),
        },
    ] {
        match log.set_retention(STREAM, bad) {
            Err(LogError::InvalidConfig { field, .. }) => {
                assert!(field.starts_with("retention_"), "{field}");
            }
            other => panic!("a limit of 0: {other:?}"),
        }
    }
    assert!(matches!(
        log.set_retention("nope", Retention::default()),
        Err(LogError::UnknownStream { .. })
    ));
    assert_eq!(
        log.stream(STREAM).unwrap().retention(),
        Retention::default()
    );

    let limit = Retention {
        retention_bytes: Some(10_000),
        retention_ms: None,
    };
    let stream = log.set_retention(STREAM, limit).unwrap();
    assert_eq!(stream.retention(), limit);
    assert_eq!(stream.config().retention(), limit);
    let start = assert_retained(&dir, &log, &expected);
    assert!(start > 0, "applied before set_retention returned");
    drop(stream);

    // The new settings are durable: a power loss right after keeps them.
    dir.sim.power_loss();
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(log.stream(STREAM).unwrap().retention(), limit);
    assert_eq!(assert_retained(&dir, &log, &expected), start);

    // Removing the limits keeps what is left; nothing more is deleted.
    log.set_retention(STREAM, Retention::default()).unwrap();
    let p_start = log
        .stream(STREAM)
        .unwrap()
        .partition(0)
        .unwrap()
        .start_offset();
    assert_eq!(p_start, start);
    drop(log);
    let log = dir.open().unwrap();
    assert_eq!(
        log.stream(STREAM).unwrap().retention(),
        Retention::default()
    );
}
