//! Model-based property test: random appends (pipelined, from racing threads, or spread by
//! key), reads, reopens and power losses against the log on simulated storage, compared
//! after every step with a plain in-memory model (one `Vec` of records per partition).
//!
//! The stream uses fsync `always` and a tiny `segment_bytes_max` (4 KiB), so segments roll
//! every few appends and reads cross segment boundaries. A power loss drops everything not
//! fsynced (file bytes and directory entries); with fsync `always` nothing acknowledged may
//! be lost, so after a power loss the log must still equal the model exactly.
//!
//! Reads are checked against the documented rule of [`logbook_log::Partition::read`]: records
//! from `from`, at most `max_records`, and more records only while the keys and values
//! returned so far total less than `max_bytes` (so one record is returned even if it alone
//! exceeds `max_bytes`); `from == end` returns nothing and `from > end` is
//! `OffsetOutOfRange`.
//!
//! Failures print proptest's seed and minimal case; `PROPTEST_CASES=N` runs more cases.

mod common;

use common::{DATA_DIR, START_MS, SimDir, sample_record, stored};
use logbook_log::verify::verify_dir;
use logbook_log::{
    AppendAck, Clock, Log, LogError, Record, StoredRecord, StreamConfig, partition_for_key,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Cases run by default (a few seconds in a debug build); `PROPTEST_CASES` overrides it.
const DEFAULT_CASES: u32 = 256;

const STREAM: &str = "model";

#[derive(Debug, Clone)]
enum Op {
    /// Appends each batch to one partition; all are queued before any is waited for, so the
    /// writer may put several in one group commit (and roll a segment in the middle of it).
    Append {
        partition: u32,
        batches: Vec<Vec<Record>>,
    },
    /// Appends each batch from its own thread, all at once, so appends to one partition race
    /// and the writer groups them; the acknowledgments say where each landed.
    Concurrent { batches: Vec<(u32, Vec<Record>)> },
    /// `Stream::append_batch`: keyed records go by key hash, unkeyed ones to one round-robin
    /// partition; the returned positions say where each landed.
    ByKey { records: Vec<Record> },
    /// Reads one partition. `from` is reduced modulo `end + 2`, so it is sometimes `end`
    /// (empty read) and sometimes `end + 1` (out of range).
    Read {
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: MaxBytes,
    },
    /// Drops the log (a clean close) and opens it again.
    Reopen,
    /// Loses power with the log open, then opens it again.
    PowerLoss,
}

/// The `max_bytes` of a read.
#[derive(Debug, Clone, Copy)]
enum MaxBytes {
    /// This many bytes.
    Bytes(usize),
    /// The keys and values of the first `records` records read, plus `delta` bytes: the
    /// limit falls exactly on, just before or just after a record boundary.
    Boundary { records: usize, delta: i8 },
}

fn record() -> impl Strategy<Value = Record> {
    let value = prop_oneof![
        8 => vec(any::<u8>(), 0..700),
        // Bigger than a whole segment: it must still be written, alone in its segment.
        1 => (4000usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ];
    (
        prop::option::of(vec(any::<u8>(), 0..12)),
        value,
        vec(("[a-z-]{0,6}", vec(any::<u8>(), 0..8)), 0..3),
        prop::option::of(-100_000i64..100_000),
    )
        .prop_map(|(key, value, headers, ts)| Record {
            key,
            value,
            headers,
            timestamp_ms: ts.map(|delta| START_MS + delta),
        })
}

fn op() -> impl Strategy<Value = Op> {
    let max_records = prop_oneof![1 => Just(0), 10 => 1usize..10, 2 => Just(usize::MAX)];
    let max_bytes = prop_oneof![
        1 => Just(MaxBytes::Bytes(0)),
        3 => (0usize..3000).prop_map(MaxBytes::Bytes),
        4 => (1usize..8, -1i8..=1).prop_map(|(records, delta)| MaxBytes::Boundary { records, delta }),
        2 => Just(MaxBytes::Bytes(usize::MAX)),
    ];
    prop_oneof![
        6 => (any::<u32>(), vec(vec(record(), 1..=5), 1..=3))
            .prop_map(|(partition, batches)| Op::Append { partition, batches }),
        2 => vec((any::<u32>(), vec(record(), 1..=5)), 2..=6)
            .prop_map(|batches| Op::Concurrent { batches }),
        2 => vec(record(), 1..=8).prop_map(|records| Op::ByKey { records }),
        4 => (any::<u32>(), any::<u64>(), max_records, max_bytes).prop_map(
            |(partition, from, max_records, max_bytes)| Op::Read {
                partition,
                from,
                max_records,
                max_bytes,
            }
        ),
        1 => Just(Op::Reopen),
        1 => Just(Op::PowerLoss),
    ]
}

/// What `Partition::read(from, max_records, max_bytes)` must return, by its documented rule.
fn model_read(
    records: &[StoredRecord],
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for record in &records[from as usize..] {
        if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
            break;
        }
        bytes += record.value.len() + record.key.as_ref().map_or(0, Vec::len);
        out.push(record.clone());
    }
    out
}

/// Checks everything the model knows: offsets, full contents, and a clean verify report.
fn check_everything(log: &Log, model: &[Vec<StoredRecord>]) -> Result<(), TestCaseError> {
    let stream = log.stream(STREAM).map_err(fail)?;
    for (p, records) in model.iter().enumerate() {
        let partition = stream.partition(p as u32).map_err(fail)?;
        prop_assert_eq!(partition.start_offset(), 0, "partition {}", p);
        prop_assert_eq!(
            partition.end_offset(),
            records.len() as u64,
            "partition {}",
            p
        );
        prop_assert_eq!(
            partition.durable_offset(),
            partition.end_offset(),
            "fsync always: everything acknowledged is durable (partition {})",
            p
        );
        let all = partition.read(0, usize::MAX, usize::MAX).map_err(fail)?;
        prop_assert_eq!(&all, records, "full read of partition {}", p);
    }
    Ok(())
}

fn fail(e: LogError) -> TestCaseError {
    TestCaseError::fail(format!("unexpected error: {e}"))
}

fn run(partitions: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = SimDir::new();
    let config = StreamConfig {
        segment_bytes_max: 4096,
        ..StreamConfig::with_partitions(partitions)
    };
    let mut log = dir.open().map_err(fail)?;
    log.create_stream(STREAM, config).map_err(fail)?;
    let mut model: Vec<Vec<StoredRecord>> = vec![Vec::new(); partitions as usize];
    for op in ops {
        match op {
            Op::Append { partition, batches } => {
                let p = partition % partitions;
                dir.clock.advance(7);
                let now = dir.clock.now_ms();
                let stream = log.stream(STREAM).map_err(fail)?;
                let pending: Vec<_> = batches
                    .iter()
                    .map(|batch| stream.append_to(p, batch))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?;
                for (batch, completion) in batches.iter().zip(pending) {
                    let ack = completion.wait().map_err(fail)?;
                    let records = &mut model[p as usize];
                    let expected = AppendAck {
                        partition: p,
                        base_offset: records.len() as u64,
                        record_count: batch.len() as u32,
                    };
                    prop_assert_eq!(ack, expected);
                    for record in batch {
                        records.push(stored(records.len() as u64, record, now));
                    }
                }
            }
            Op::Concurrent { batches } => {
                dir.clock.advance(7);
                let now = dir.clock.now_ms();
                let stream = log.stream(STREAM).map_err(fail)?;
                let acks: Vec<_> = std::thread::scope(|scope| {
                    let handles: Vec<_> = batches
                        .iter()
                        .map(|(partition, batch)| {
                            let stream = &stream;
                            scope.spawn(move || {
                                stream.append_to(partition % partitions, batch)?.wait()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                        .collect()
                });
                // Place each batch where its acknowledgment says; together they must fill each
                // partition densely from where the model ended.
                let mut landed: Vec<(AppendAck, &Vec<Record>)> = Vec::new();
                for (ack, (_, batch)) in acks.into_iter().zip(&batches) {
                    let ack = ack.map_err(fail)?;
                    prop_assert_eq!(ack.record_count as usize, batch.len());
                    landed.push((ack, batch));
                }
                landed.sort_by_key(|(ack, _)| (ack.partition, ack.base_offset));
                for (ack, batch) in landed {
                    let records = &mut model[ack.partition as usize];
                    prop_assert_eq!(ack.base_offset, records.len() as u64, "{:?}", ack);
                    for record in batch {
                        records.push(stored(records.len() as u64, record, now));
                    }
                }
            }
            Op::ByKey { records } => {
                dir.clock.advance(7);
                let now = dir.clock.now_ms();
                let stream = log.stream(STREAM).map_err(fail)?;
                let positions = stream
                    .append_batch(records.clone())
                    .map_err(fail)?
                    .wait()
                    .map_err(fail)?;
                prop_assert_eq!(positions.len(), records.len());
                for (position, record) in positions.iter().zip(&records) {
                    if let Some(key) = &record.key {
                        prop_assert_eq!(position.partition, partition_for_key(key, partitions));
                    }
                    let model_records = &mut model[position.partition as usize];
                    prop_assert_eq!(position.offset, model_records.len() as u64);
                    model_records.push(stored(position.offset, record, now));
                }
            }
            Op::Read {
                partition,
                from,
                max_records,
                max_bytes,
            } => {
                let p = partition % partitions;
                let records = &model[p as usize];
                let end = records.len() as u64;
                let from = from % (end + 2);
                let max_bytes = match max_bytes {
                    MaxBytes::Bytes(n) => n,
                    MaxBytes::Boundary { records: n, delta } => {
                        let first = records.iter().skip(from as usize).take(n);
                        let bytes: usize = first
                            .map(|r| r.value.len() + r.key.as_ref().map_or(0, Vec::len))
                            .sum();
                        bytes.saturating_add_signed(isize::from(delta))
                    }
                };
                let got = log
                    .stream(STREAM)
                    .map_err(fail)?
                    .read(p, from, max_records, max_bytes);
                if from > end {
                    let out_of_range = matches!(
                        got,
                        Err(LogError::OffsetOutOfRange { partition, offset, start: 0, end: e })
                            if partition == p && offset == from && e == end
                    );
                    prop_assert!(out_of_range, "read from {} > end {}: {:?}", from, end, got);
                } else {
                    let got = got.map_err(fail)?;
                    prop_assert_eq!(
                        got,
                        model_read(records, from, max_records, max_bytes),
                        "read(partition {}, from {}, max_records {}, max_bytes {})",
                        p,
                        from,
                        max_records,
                        max_bytes
                    );
                }
            }
            Op::Reopen => {
                drop(log);
                log = dir.open().map_err(fail)?;
                check_everything(&log, &model)?;
            }
            Op::PowerLoss => {
                dir.sim.power_loss();
                drop(log);
                let report = verify_dir(&dir.sim, DATA_DIR.as_ref()).map_err(fail)?;
                prop_assert!(
                    report.problems.is_empty(),
                    "after a power loss under fsync always: {:?}",
                    report.problems
                );
                log = dir.open().map_err(fail)?;
                check_everything(&log, &model)?;
            }
        }
    }
    check_everything(&log, &model)
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        ..Config::default()
    }
}

#[test]
fn a_read_that_stops_inside_the_last_batch_of_a_segment_returns_what_fits() {
    // Found by the model: a read limited by count or bytes in the middle of a segment's last
    // batch reported the segment as corrupt ("segment ends before offset").
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let batch: Vec<Record> = (0..4).map(sample_record).collect();
    stream.append_to(0, &batch).unwrap().wait().unwrap();
    for max_records in 1..4 {
        let got = stream.read(0, 0, max_records, usize::MAX).unwrap();
        assert_eq!(got.len(), max_records);
    }
    let got = stream.read(0, 1, usize::MAX, 1).unwrap();
    assert_eq!(got.len(), 1, "one record even over max_bytes");
    assert_eq!(got[0].offset, 1);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn log_equals_a_vec_per_partition_across_reopens_and_power_losses(
        partitions in 1u32..=3,
        ops in vec(op(), 1..40),
    ) {
        run(partitions, ops)?;
    }
}
