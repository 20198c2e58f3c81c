//! The embedded log through the `LogBackend` seam (docs/decisions/0011): what an
//! acknowledgment guarantees per fsync policy, and the expected-end precondition — a writer
//! whose idea of the partition's end is stale stores nothing, even when it is in the same
//! group commit as the append that moved the end.

mod common;

use std::sync::Arc;

use common::gated::{GatedStorage, open};
use logbook_log::sim::SimStorage;
use logbook_log::{
    AckGuarantee, AppendCondition, FsyncPolicy, LogBackend, LogError, Record, StreamConfig,
};

fn backend() -> (GatedStorage, Arc<dyn LogBackend>) {
    let storage = GatedStorage {
        sim: SimStorage::new(),
        gate: Arc::default(),
    };
    let log: Arc<dyn LogBackend> = Arc::new(open(&storage));
    (storage, log)
}

#[test]
fn each_stream_reports_what_its_acknowledgment_guarantees() {
    let (_storage, log) = backend();
    let always = log
        .create_stream("always", StreamConfig::with_partitions(1))
        .unwrap();
    assert_eq!(
        always.ack_guarantee(),
        AckGuarantee {
            replicas: 1,
            fsynced: true
        }
    );
    for (name, fsync) in [
        ("interval", FsyncPolicy::Interval { interval_ms: 50 }),
        ("never", FsyncPolicy::Never),
    ] {
        let config = StreamConfig {
            fsync,
            ..StreamConfig::with_partitions(2)
        };
        let stream = log.create_stream(name, config).unwrap();
        assert_eq!(
            stream.ack_guarantee(),
            AckGuarantee {
                replicas: 1,
                fsynced: false
            },
            "{name}"
        );
    }
    assert_eq!(log.stream_names(), ["always", "interval", "never"]);
}

#[test]
fn a_stale_expected_end_stores_nothing_and_the_partition_stays_healthy() {
    let (_storage, log) = backend();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    let p = stream.partition(1).unwrap();
    let first = p
        .append_batch(
            &[Record::new("a"), Record::new("b")],
            AppendCondition::EndOffset(0),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((first.base_offset, first.record_count), (0, 2));
    let stale = p
        .append_batch(&[Record::new("c")], AppendCondition::EndOffset(0))
        .unwrap()
        .wait();
    match stale {
        Err(LogError::EndOffsetMismatch {
            stream,
            partition: 1,
            expected: 0,
            actual: 2,
        }) => assert_eq!(stream, "s"),
        other => panic!("expected EndOffsetMismatch, got {other:?}"),
    }
    assert_eq!(p.end_offset(), 2, "nothing stored");
    let next = p
        .append_batch(&[Record::new("d")], AppendCondition::EndOffset(2))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        next.base_offset, 2,
        "not poisoned: the right end is accepted"
    );
    let values: Vec<Vec<u8>> = p
        .read(0, 10, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
    assert_eq!(stream.partition(0).unwrap().end_offset(), 0);
}

#[test]
fn of_two_appends_expecting_one_end_in_one_group_exactly_the_first_is_stored() {
    let (storage, log) = backend();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let p = stream.partition(0).unwrap();
    // The writer takes the first append and waits in its fsync; the next three queue behind
    // it and are written as one group once the gate opens.
    storage.gate.set_closed(true);
    let held = p
        .append_batch(&[Record::new("held")], AppendCondition::Always)
        .unwrap();
    let winner = p
        .append_batch(
            &[Record::new("w1"), Record::new("w2")],
            AppendCondition::EndOffset(1),
        )
        .unwrap();
    let loser = p
        .append_batch(&[Record::new("loser")], AppendCondition::EndOffset(1))
        .unwrap();
    let after = p
        .append_batch(&[Record::new("after")], AppendCondition::EndOffset(3))
        .unwrap();
    storage.gate.set_closed(false);
    assert_eq!(held.wait().unwrap().base_offset, 0);
    assert_eq!(winner.wait().unwrap().base_offset, 1);
    assert!(
        matches!(
            loser.wait(),
            Err(LogError::EndOffsetMismatch {
                expected: 1,
                actual: 3,
                ..
            })
        ),
        "the second writer expecting end 1 finds the first one's records there"
    );
    assert_eq!(after.wait().unwrap().base_offset, 3);
    let values: Vec<Vec<u8>> = p
        .read(0, 10, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        values,
        [
            b"held".to_vec(),
            b"w1".to_vec(),
            b"w2".to_vec(),
            b"after".to_vec()
        ]
    );
}

#[test]
fn appends_reads_and_waits_through_the_seam() {
    let (_storage, log) = backend();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(3))
        .unwrap();
    assert_eq!(stream.partition_count(), 3);
    assert!(matches!(
        stream.partition(3),
        Err(LogError::UnknownPartition { partition: 3, .. })
    ));
    let positions = stream
        .append_batch(vec![Record::keyed("k", "1"), Record::keyed("k", "2")])
        .unwrap()
        .wait()
        .unwrap();
    let p = stream.partition(positions[0].partition).unwrap();
    assert_eq!(p.id(), positions[0].partition);
    assert_eq!(p.wait_end_offset_above(1, std::time::Duration::ZERO), 2);
    assert_eq!(p.durable_offset(), 2);
    assert_eq!(stream.record_count(), 2);
    // Reserved headers are refused through the partition too.
    let mut reserved = Record::new("x");
    reserved
        .headers
        .push((logbook_log::dedup::REQUEST_ID_HEADER.into(), b"r".to_vec()));
    assert!(matches!(
        p.append_batch(&[reserved], AppendCondition::Always),
        Err(LogError::ReservedHeader { index: 0, .. })
    ));
    log.drop_stream("s").unwrap();
    assert!(matches!(
        log.stream("s"),
        Err(LogError::UnknownStream { .. })
    ));
}
