//! The power-loss seam can see a missing fsync.
//!
//! A crash test that only kills processes keeps the page cache and so passes even if the log
//! never calls `fdatasync`. These tests show that [`SimStorage::power_loss`] does not: under
//! fsync `never` (and `interval_ms` before the interval has passed) acknowledged appends are
//! gone after a power loss, while under fsync `always` every one of them survives,
//! byte-identical. The model test relies on this seam; if these tests stopped telling the
//! policies apart, it would prove nothing.
//!
//! [`SimStorage::power_loss`]: logbook_log::sim::SimStorage::power_loss

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use common::{SimDir, sample_record, stored};
use logbook_log::sim::SimStorage;
use logbook_log::storage::Storage;
use logbook_log::{Clock, FsyncPolicy, Log, LogOptions, StoredRecord, StreamConfig};
use std::path::Path;
use std::sync::Arc;

const ACKED: u64 = 20;

/// Appends [`ACKED`] records one by one (each acknowledged) under `fsync`, loses power with
/// the log still open, reopens, and returns (what was acknowledged, what survived).
fn acknowledged_then_power_loss(fsync: FsyncPolicy) -> (Vec<StoredRecord>, Vec<StoredRecord>) {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        fsync,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let mut acked = Vec::new();
    for i in 0..ACKED {
        let record = sample_record(i);
        let ack = stream.append(record.clone()).unwrap().wait().unwrap();
        assert_eq!(ack.base_offset, i);
        acked.push(stored(i, &record, dir.clock.now_ms()));
    }
    assert_eq!(stream.partition(0).unwrap().end_offset(), ACKED);

    dir.sim.power_loss();
    drop(stream);
    drop(log);
    let log = dir.open().unwrap();
    let survived = log.stream("s").unwrap().read(0, 0, usize::MAX, usize::MAX);
    (acked, survived.unwrap())
}

#[test]
fn power_loss_drops_acknowledged_appends_under_fsync_never() {
    let (acked, survived) = acknowledged_then_power_loss(FsyncPolicy::Never);
    assert!(
        survived.len() < acked.len(),
        "fsync never: a power loss must lose acknowledged appends, yet all {} survived",
        acked.len()
    );
    // Nothing was synced since the segment was created, so nothing is left; what is left is
    // still a prefix of what was acknowledged.
    assert_eq!(survived, acked[..survived.len()]);
    assert!(survived.is_empty(), "{} records survived", survived.len());
}

#[test]
fn power_loss_drops_acknowledged_appends_under_fsync_interval_before_it_elapses() {
    let (acked, survived) = acknowledged_then_power_loss(FsyncPolicy::Interval {
        interval_ms: 3_600_000,
    });
    assert!(
        survived.len() < acked.len(),
        "fsync interval_ms=1h: a power loss within the hour must lose acknowledged appends"
    );
    assert_eq!(survived, acked[..survived.len()]);
}

#[test]
fn power_loss_keeps_every_acknowledged_append_under_fsync_always() {
    let (acked, survived) = acknowledged_then_power_loss(FsyncPolicy::Always);
    assert_eq!(survived, acked);
}

#[test]
fn a_clean_close_syncs_under_fsync_never() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let mut acked = Vec::new();
    for i in 0..ACKED {
        let record = sample_record(i);
        stream.append(record.clone()).unwrap().wait().unwrap();
        acked.push(stored(i, &record, dir.clock.now_ms()));
    }
    assert_eq!(stream.partition(0).unwrap().durable_offset(), 0);
    drop(stream);
    drop(log); // closing fsyncs what is unsynced

    dir.sim.power_loss();
    let log = dir.open().unwrap();
    let survived = log.stream("s").unwrap().read(0, 0, usize::MAX, usize::MAX);
    assert_eq!(survived.unwrap(), acked);
}

#[test]
fn a_new_nested_data_directory_survives_a_power_loss() {
    let sim = SimStorage::new();
    let data_dir = Path::new("/srv/logbook/data");
    let options = LogOptions {
        storage: Arc::new(sim.clone()),
        clock: common::ManualClock::at(common::START_MS),
        ..LogOptions::default()
    };
    let log = Log::open_with(data_dir, options.clone()).unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let record = sample_record(0);
    stream.append(record.clone()).unwrap().wait().unwrap();

    sim.power_loss();
    drop(stream);
    drop(log);
    assert!(
        sim.is_dir(data_dir),
        "the data directory created by open is gone after a power loss"
    );
    let log = Log::open_with(data_dir, options).unwrap();
    let survived = log.stream("s").unwrap().read(0, 0, 10, usize::MAX).unwrap();
    assert_eq!(survived, vec![stored(0, &record, common::START_MS)]);
}
