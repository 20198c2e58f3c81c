//! Injected storage faults: a failing write, a failing fsync, a full disk.
//!
//! The contract under test (partition module docs; STYLE.md "a failed fsync is fatal to that
//! file"): the failure reaches the appender through its completion as [`LogError::Io`]; the
//! partition is then poisoned — every later append fails at once with
//! [`LogError::Poisoned`] — while the stream's other partitions keep working and
//! acknowledged records stay readable. Reopening the log recovers the partition from what
//! is on disk: nothing acknowledged is lost, and no part of a failed batch is visible (the
//! whole failed batch may be, since its outcome is unknown to the appender).

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::path::Path;

use common::{DATA_DIR, START_MS, SimDir, sample_record, stored};
use logbook_log::verify::{ProblemKind, verify_dir};
use logbook_log::{Log, LogError, Record, StoredRecord, Stream, StreamConfig};

const STREAM: &str = "s";

/// A log with stream `s` of two partitions (4 KiB segments) and `per_partition` records
/// acknowledged in each; returns the records each partition must hold.
fn setup(dir: &SimDir, per_partition: u64) -> (Log, Vec<Vec<StoredRecord>>) {
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: 4096,
        ..StreamConfig::with_partitions(2)
    };
    let stream = log.create_stream(STREAM, config).unwrap();
    let mut expected = vec![Vec::new(), Vec::new()];
    for i in 0..per_partition {
        for (p, records) in expected.iter_mut().enumerate() {
            let record = sample_record(i * 2 + p as u64);
            append_acked(&stream, p as u32, record, records);
        }
    }
    (log, expected)
}

/// Appends one record and records it as acknowledged; panics if the append fails.
fn append_acked(stream: &Stream, p: u32, record: Record, records: &mut Vec<StoredRecord>) {
    let ack = stream
        .append_to(p, std::slice::from_ref(&record))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(ack.base_offset, records.len() as u64);
    records.push(stored(ack.base_offset, &record, START_MS));
}

fn read_all(stream: &Stream, p: u32) -> Vec<StoredRecord> {
    stream.read(p, 0, usize::MAX, usize::MAX).unwrap()
}

fn failed_batch() -> Vec<Record> {
    (100..103).map(sample_record).collect()
}

/// Asserts that `p` is poisoned: an append fails at once (not through its completion) with
/// `Poisoned` naming the stream, the partition and the original failure.
fn assert_poisoned(stream: &Stream, p: u32, cause: &str) {
    match stream.append_to(p, &[Record::new("after the failure")]) {
        Err(LogError::Poisoned {
            stream: s,
            partition,
            cause: c,
        }) => {
            assert_eq!((s.as_str(), partition), (STREAM, p));
            assert!(c.contains(cause), "cause {c:?} should mention {cause:?}");
        }
        Err(other) => panic!("expected Poisoned, got {other:?}"),
        Ok(_) => panic!("a poisoned partition accepted an append"),
    }
}

/// After reopening: every acknowledged record is there, byte-identical; of the failed batch
/// either nothing or all of it is there (never a part); appends continue right after.
fn assert_recovered(log: &Log, expected: &[Vec<StoredRecord>], failed: &[Record]) {
    let stream = log.stream(STREAM).unwrap();
    for (p, records) in expected.iter().enumerate() {
        let all = read_all(&stream, p as u32);
        assert_eq!(all[..records.len()], records[..], "partition {p}");
        let extra = &all[records.len()..];
        if p == 0 && !extra.is_empty() {
            let whole: Vec<_> = failed
                .iter()
                .enumerate()
                .map(|(i, r)| stored((records.len() + i) as u64, r, START_MS))
                .collect();
            assert_eq!(
                extra, whole,
                "a failed batch is visible whole or not at all"
            );
        } else {
            assert!(extra.is_empty(), "partition {p}: unacknowledged {extra:?}");
        }
        let end = all.len() as u64;
        let ack = stream
            .append_to(p as u32, &[sample_record(999)])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(ack.base_offset, end, "partition {p}: appends continue");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `write_at` fails, landing the first half of its buffer (a torn write).
    Write,
    /// `sync_data` fails; the written bytes stay in the (simulated) page cache.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// Drop the log and open it again.
    Reopen,
    /// Lose power, then open it again.
    PowerLoss,
}

fn fault_poisons_one_partition_and_reopen_recovers(fault: Fault, restart: Restart) {
    let dir = SimDir::new();
    let (log, mut expected) = setup(&dir, 5);
    let stream = log.stream(STREAM).unwrap();

    let message = match fault {
        Fault::Write => {
            dir.sim.set_torn_writes(true);
            dir.sim.fail_writes_after(0);
            "injected write failure"
        }
        Fault::Sync => {
            dir.sim.fail_syncs_after(0);
            "injected sync failure"
        }
    };
    let failed = failed_batch();
    let error = stream.append_to(0, &failed).unwrap().wait().unwrap_err();
    match &error {
        LogError::Io { .. } => assert!(
            error.to_string().contains(message),
            "the appender's error should carry the cause: {error}"
        ),
        other => panic!("expected Io, got {other:?}"),
    }
    dir.sim.clear_faults();

    assert_poisoned(&stream, 0, message);
    // The failed batch is not visible to readers; acknowledged records are.
    assert_eq!(stream.partition(0).unwrap().end_offset(), 5);
    assert_eq!(read_all(&stream, 0), expected[0]);
    // The other partition was not touched by the failure and keeps working.
    append_acked(&stream, 1, sample_record(500), &mut expected[1]);
    assert_eq!(read_all(&stream, 1), expected[1]);
    assert_poisoned(&stream, 0, message);

    if fault == Fault::Write {
        // The torn write left part of the batch in the file, past what readers see.
        let report = verify_dir(&dir.sim, Path::new(DATA_DIR)).unwrap();
        let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::TornTail]);
    }
    if restart == Restart::PowerLoss {
        dir.sim.power_loss();
    }
    drop(stream);
    drop(log);
    let log = dir.open().unwrap();
    // Unsynced bytes of the failed batch are gone after a power loss; after a plain reopen a
    // failed fsync leaves the batch whole in the file, and a failed write leaves a torn tail.
    assert_recovered(&log, &expected, &failed);
    if restart == Restart::PowerLoss || fault == Fault::Write {
        let stream = log.stream(STREAM).unwrap();
        assert_eq!(read_all(&stream, 0).len(), expected[0].len() + 1);
    }
    drop(log);
    let report = verify_dir(&dir.sim, Path::new(DATA_DIR)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_failed_write_poisons_its_partition_and_reopen_recovers() {
    fault_poisons_one_partition_and_reopen_recovers(Fault::Write, Restart::Reopen);
}

#[test]
fn a_failed_write_then_power_loss_loses_nothing_acknowledged() {
    fault_poisons_one_partition_and_reopen_recovers(Fault::Write, Restart::PowerLoss);
}

#[test]
fn a_failed_fsync_poisons_its_partition_and_reopen_recovers() {
    fault_poisons_one_partition_and_reopen_recovers(Fault::Sync, Restart::Reopen);
}

#[test]
fn a_failed_fsync_then_power_loss_loses_nothing_acknowledged() {
    fault_poisons_one_partition_and_reopen_recovers(Fault::Sync, Restart::PowerLoss);
}

#[test]
fn every_append_queued_behind_a_failure_fails_and_none_is_acknowledged() {
    let dir = SimDir::new();
    let (log, expected) = setup(&dir, 3);
    let stream = log.stream(STREAM).unwrap();
    dir.sim.fail_syncs_after(0);
    let pending: Vec<_> = (0..20)
        .map(|i| stream.append_to(0, &[sample_record(200 + i)]))
        .collect();
    for completion in pending {
        // Appends queued before the writer saw the failure are refused through their
        // completion; later ones at once.
        match completion.map(|c| c.wait()) {
            Ok(Err(LogError::Io { .. } | LogError::Poisoned { .. }))
            | Err(LogError::Poisoned { .. }) => {}
            other => panic!("an append after the failure: {other:?}"),
        }
    }
    dir.sim.clear_faults();
    assert_eq!(stream.partition(0).unwrap().end_offset(), 3);
    dir.sim.power_loss();
    drop(stream);
    drop(log);
    let log = dir.open().unwrap();
    let stream = log.stream(STREAM).unwrap();
    assert_eq!(read_all(&stream, 0), expected[0]);
}

/// Fills the disk while appending, at `slack` bytes of free space: the error is a clear
/// `StorageFull`, nothing acknowledged is damaged, and after space returns and the log is
/// reopened appends work again.
fn full_disk(slack: u64) {
    let dir = SimDir::new();
    let (log, mut expected) = setup(&dir, 2);
    let stream = log.stream(STREAM).unwrap();
    dir.sim
        .set_capacity_bytes(Some(dir.sim.used_bytes() + slack));

    let mut i = 0;
    let error = loop {
        let record = sample_record(300 + i);
        i += 1;
        assert!(i < 1000, "the disk never filled up");
        match stream
            .append_to(0, std::slice::from_ref(&record))
            .unwrap()
            .wait()
        {
            Ok(ack) => {
                assert_eq!(ack.base_offset, expected[0].len() as u64);
                expected[0].push(stored(ack.base_offset, &record, START_MS));
            }
            Err(e) => break e,
        }
    };
    match &error {
        LogError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{error}");
            assert!(error.to_string().contains("no space left"), "{error}");
        }
        other => panic!("slack {slack}: expected Io(StorageFull), got {other:?}"),
    }
    assert_poisoned(&stream, 0, "no space left");
    assert_eq!(read_all(&stream, 0), expected[0], "slack {slack}");

    drop(stream);
    drop(log);
    dir.sim.set_capacity_bytes(None);
    let log = dir.open().unwrap();
    let stream = log.stream(STREAM).unwrap();
    assert_eq!(
        read_all(&stream, 0),
        expected[0],
        "slack {slack}: after reopen"
    );
    assert_eq!(read_all(&stream, 1), expected[1]);
    // Enough appends to roll a few more segments.
    for j in 0..30 {
        append_acked(&stream, 0, sample_record(600 + j), &mut expected[0]);
    }
    assert_eq!(read_all(&stream, 0), expected[0]);
    drop(stream);
    drop(log);
    let report = verify_dir(&dir.sim, Path::new(DATA_DIR)).unwrap();
    assert!(
        report.problems.is_empty(),
        "slack {slack}: {:?}",
        report.problems
    );
}

#[test]
fn a_full_disk_is_a_clear_error_and_appends_work_once_space_returns() {
    full_disk(10_000);
}

#[test]
fn a_full_disk_at_any_point_of_a_segment_roll_recovers() {
    // Different amounts of free space make the disk fill up while writing a batch, while
    // writing a sealed segment's index file, or while creating the next segment (each of
    // these happens for some of these amounts).
    for slack in (0..9_000).step_by(11) {
        full_disk(slack);
    }
}

/// Which storage call a sweep fails.
#[derive(Debug, Clone, Copy)]
enum Countdown {
    Writes,
    Syncs,
    DirSyncs,
}

/// Appends single records (rolling a segment every dozen or so) until the `n`+1-th call of
/// `countdown` fails, then checks the contract: the appender gets `Io`, the partition is
/// poisoned, acknowledged records stay readable, and after a reopen (with a power loss
/// first when `power_loss`) every acknowledged record is there, at most the failed record
/// besides, and appends continue.
fn fail_after(countdown: Countdown, n: u64, power_loss: bool) {
    let what = format!("{countdown:?} failing after {n}, power loss {power_loss}");
    let dir = SimDir::new();
    let (log, mut expected) = setup(&dir, 1);
    let stream = log.stream(STREAM).unwrap();
    match countdown {
        Countdown::Writes => dir.sim.fail_writes_after(n),
        Countdown::Syncs => dir.sim.fail_syncs_after(n),
        Countdown::DirSyncs => dir.sim.fail_dir_syncs_after(n),
    }
    let mut i = 0;
    let failed = loop {
        let record = sample_record(1000 + i);
        i += 1;
        assert!(i < 200, "{what}: nothing failed");
        match stream
            .append_to(0, std::slice::from_ref(&record))
            .unwrap()
            .wait()
        {
            Ok(ack) => {
                assert_eq!(ack.base_offset, expected[0].len() as u64, "{what}");
                expected[0].push(stored(ack.base_offset, &record, START_MS));
            }
            Err(LogError::Io { .. }) => break record,
            Err(other) => panic!("{what}: expected Io, got {other:?}"),
        }
    };
    dir.sim.clear_faults();
    assert_poisoned(&stream, 0, "injected");
    assert_eq!(read_all(&stream, 0), expected[0], "{what}");
    append_acked(&stream, 1, sample_record(2000), &mut expected[1]);

    if power_loss {
        dir.sim.power_loss();
    }
    drop(stream);
    drop(log);
    let log = dir.open().unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_recovered(&log, &expected, std::slice::from_ref(&failed));
    drop(log);
    let report = verify_dir(&dir.sim, Path::new(DATA_DIR)).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
}

#[test]
fn a_failed_write_at_any_point_including_segment_rolls_recovers() {
    for n in 0..45 {
        fail_after(Countdown::Writes, n, n % 2 == 1);
    }
}

#[test]
fn a_failed_fsync_at_any_point_including_segment_rolls_recovers() {
    for n in 0..45 {
        fail_after(Countdown::Syncs, n, n % 2 == 1);
    }
}

#[test]
fn a_failed_directory_fsync_during_a_segment_roll_recovers() {
    for n in 0..8 {
        fail_after(Countdown::DirSyncs, n, false);
        fail_after(Countdown::DirSyncs, n, true);
    }
}
