//! Offsets by time: `Partition::offset_for_timestamp` against a model (the first retained
//! record whose timestamp is at or after the time, else the end), over segments that roll,
//! index files read back after a reopen, retention, and timestamps out of order (a client may
//! choose a record's timestamp within a day of the log's clock).
//!
//! Segments of 16 KiB hold a few index entries each (one per 4 KiB), so a lookup starts from
//! an entry inside a segment, not only from its first batch. Failures print proptest's seed
//! and minimal case; `PROPTEST_CASES=N` runs more cases.

mod common;

use common::{START_MS, SimDir, index_path, stored};
use logbook_log::format::{INDEX_FORMAT_VERSION, IndexFile};
use logbook_log::{
    Clock, Log, LogError, LogPartition, Record, StoredRecord, StreamConfig, TimestampOffset,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

const STREAM: &str = "times";
const SEGMENT_BYTES: u64 = 16 * 1024;

#[derive(Debug, Clone)]
enum Op {
    /// Moves the clock by `advance_ms`, then appends the batches to the partition.
    Append {
        advance_ms: i64,
        batches: Vec<Vec<Record>>,
    },
    /// Looks up a time: near the timestamp of the record at `pick` (modulo the records
    /// retained) moved by `delta_ms`, or anywhere around them when there are none.
    Lookup { pick: usize, delta_ms: i64 },
    /// Closes and reopens the log: sealed segments' indexes come back from their files.
    Reopen,
    /// Applies the byte retention, deleting the oldest segments.
    Retain,
}

fn record() -> impl Strategy<Value = Record> {
    (
        vec(any::<u8>(), 0..300),
        prop_oneof![
            3 => Just(None),
            // Out of order: older or newer than the clock, as far as the skew limit allows.
            1 => (-5_000i64..5_000).prop_map(Some),
            1 => prop_oneof![Just(-86_000_000i64), Just(86_000_000i64)].prop_map(Some),
        ],
    )
        .prop_map(|(value, delta)| Record {
            key: None,
            value,
            headers: Vec::new(),
            timestamp_ms: delta.map(|d| START_MS + d),
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..50, vec(vec(record(), 1..=20), 1..=3))
            .prop_map(|(advance_ms, batches)| Op::Append { advance_ms, batches }),
        6 => (any::<usize>(), prop_oneof![3 => -1i64..=1, 1 => -10_000i64..10_000])
            .prop_map(|(pick, delta_ms)| Op::Lookup { pick, delta_ms }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retain),
    ]
}

/// What the lookup must answer: the first retained record at or after `timestamp_ms`.
fn model_lookup(records: &[StoredRecord], start: u64, timestamp_ms: i64) -> TimestampOffset {
    let found = records
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .find(|r| r.timestamp_ms >= timestamp_ms);
    TimestampOffset {
        offset: found.map_or(records.len() as u64, |r| r.offset),
        timestamp_ms: found.map(|r| r.timestamp_ms),
    }
}

fn fail(e: LogError) -> TestCaseError {
    TestCaseError::fail(format!("unexpected error: {e}"))
}

fn lookup(log: &Log, timestamp_ms: i64) -> Result<TimestampOffset, TestCaseError> {
    let stream = log.stream(STREAM).map_err(fail)?;
    let partition: &dyn LogPartition = stream.partition(0).map_err(fail)?;
    partition.offset_for_timestamp(timestamp_ms).map_err(fail)
}

fn run(retention: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = SimDir::new();
    let config = StreamConfig {
        segment_bytes_max: SEGMENT_BYTES,
        retention_bytes: retention.then_some(3 * SEGMENT_BYTES),
        ..StreamConfig::with_partitions(1)
    };
    let mut log = dir.open().map_err(fail)?;
    log.create_stream(STREAM, config).map_err(fail)?;
    let mut model: Vec<StoredRecord> = Vec::new();
    for op in ops {
        let stream = log.stream(STREAM).map_err(fail)?;
        let start = stream.partition(0).map_err(fail)?.start_offset();
        match op {
            Op::Append {
                advance_ms,
                batches,
            } => {
                dir.clock.advance(advance_ms);
                let now = dir.clock.now_ms();
                for batch in batches {
                    stream
                        .append_to(0, &batch)
                        .map_err(fail)?
                        .wait()
                        .map_err(fail)?;
                    for record in &batch {
                        model.push(stored(model.len() as u64, record, now));
                    }
                }
            }
            Op::Lookup { pick, delta_ms } => {
                let retained = &model[usize::try_from(start).unwrap_or(usize::MAX)..];
                let base = match retained.len() {
                    0 => dir.clock.now_ms(),
                    n => retained[pick % n].timestamp_ms,
                };
                let timestamp_ms = base + delta_ms;
                let expected = model_lookup(&model, start, timestamp_ms);
                let got = lookup(&log, timestamp_ms)?;
                prop_assert_eq!(
                    got,
                    expected,
                    "lookup of {} (start {})",
                    timestamp_ms,
                    start
                );
            }
            Op::Reopen => {
                drop(stream);
                drop(log);
                log = dir.open().map_err(fail)?;
            }
            Op::Retain => {
                let partition = stream.partition(0).map_err(fail)?;
                partition
                    .enforce_retention(dir.clock.now_ms())
                    .map_err(fail)?;
            }
        }
    }
    // Every retained record's own timestamp finds the first record at least that recent.
    let stream = log.stream(STREAM).map_err(fail)?;
    let start = stream.partition(0).map_err(fail)?.start_offset();
    for record in model
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
    {
        let got = lookup(&log, record.timestamp_ms)?;
        prop_assert_eq!(got, model_lookup(&model, start, record.timestamp_ms));
    }
    Ok(())
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn offset_for_timestamp_equals_the_first_record_at_or_after_it_in_a_model(
        retention in any::<bool>(),
        ops in vec(op(), 1..60),
    ) {
        run(retention, ops)?;
    }
}

#[test]
fn an_empty_partition_answers_its_end() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    log.create_stream(STREAM, StreamConfig::with_partitions(1))
        .unwrap();
    assert_eq!(
        lookup(&log, START_MS).unwrap(),
        TimestampOffset {
            offset: 0,
            timestamp_ms: None
        }
    );
}

/// Rewrites `index` in the version 1 layout (8-byte entries, no timestamps), as an older
/// build wrote it.
fn as_version_1(index: &IndexFile) -> Vec<u8> {
    let mut b = vec![0u8; 56];
    b[0..8].copy_from_slice(b"LBK-IDX\n");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&(index.entries.len() as u32).to_le_bytes());
    b[16..24].copy_from_slice(&index.base_offset.to_le_bytes());
    b[24..32].copy_from_slice(&index.segment_bytes.to_le_bytes());
    b[32..40].copy_from_slice(&index.next_offset.to_le_bytes());
    b[40..48].copy_from_slice(&index.max_timestamp_ms.to_le_bytes());
    for e in &index.entries {
        b.extend_from_slice(&e.relative_offset.to_le_bytes());
        b.extend_from_slice(&e.position.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..52]), &b[56..]);
    b[52..56].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_version_1_index_is_rebuilt_with_timestamps_on_open() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: SEGMENT_BYTES,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream(STREAM, config).unwrap();
    for i in 0..400 {
        dir.clock.advance(10);
        let record = Record::new(vec![7u8; 100 + i % 50]);
        stream.append_to(0, &[record]).unwrap().wait().unwrap();
    }
    let path = index_path(STREAM, 0, 0);
    let current = IndexFile::decode(&dir.bytes(&path)).unwrap();
    assert!(current.entries.len() > 1, "the segment has several entries");
    drop(stream);
    drop(log);
    dir.overwrite(&path, &as_version_1(&current));

    let log = dir.open().unwrap();
    let rebuilt = IndexFile::decode(&dir.bytes(&path)).unwrap();
    assert_eq!(
        rebuilt, current,
        "rewritten in version {INDEX_FORMAT_VERSION}"
    );
    let answer = lookup(&log, START_MS + 1_005).unwrap();
    assert_eq!(
        answer,
        TimestampOffset {
            offset: 100,
            timestamp_ms: Some(START_MS + 1_010)
        }
    );
}
