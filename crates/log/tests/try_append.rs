//! `Partition::try_append_encoded`: the non-blocking append an async server uses on its
//! worker threads. It queues when there is room, hands the batch back unchanged when the
//! writer's queue is full (never waits), and fails at once on a poisoned partition.
//!
//! `Stream::try_append_batch` builds on it: the shares of a batch append are queued in
//! partition order while there is room, and from the first full queue on they come back.
//!
//! The queue is made to stay full without any timing: the storage's `fdatasync` waits on a
//! gate the test holds closed, so the writer is stuck in its first group and gives no queue
//! space back until the test opens the gate.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::sync::Arc;

use common::START_MS;
use common::gated::{GatedStorage, open};
use logbook_log::format::encode_batch;
use logbook_log::limits::QUEUED_BYTES_MAX;
use logbook_log::sim::Gate;
use logbook_log::{LogError, Record, StreamConfig, TryAppendError, partition_for_key};

/// One record whose value is `bytes` long, tagged with `i` at the front.
fn big_record(i: u64, bytes: usize) -> Record {
    let mut value = format!("{i:08}").into_bytes();
    value.resize(bytes, b'x');
    Record::keyed(format!("k{i}"), value)
}

#[test]
fn a_full_queue_hands_the_batch_back_and_nothing_is_lost() {
    let storage = GatedStorage::new();
    let log = open(&storage);
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let partition = stream.partition(0).unwrap();

    // Every fsync now waits: the writer keeps the queue space of everything queued.
    storage.gate.hold();
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
    storage.gate.release();
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
    let storage = GatedStorage::new();
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

/// Opens the gate when dropped, so that a failing test does not hang closing the log.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A key that `partition_for_key` sends to partition `p` of `n`.
fn key_for(p: u32, n: u32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), n) == p)
        .unwrap()
}

#[test]
fn a_batch_append_hands_back_the_shares_from_the_first_full_queue_on() {
    let storage = GatedStorage::new();
    let log = open(&storage);
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(3))
        .unwrap();
    // Fill partition 1's queue while every fsync waits; 0 and 2 stay empty. Big batches
    // first, then the smallest there is, until not even that fits.
    storage.gate.hold();
    let _open = OpenOnDrop(storage.gate.clone());
    let record_bytes = 512 * 1024;
    let most = QUEUED_BYTES_MAX / record_bytes as u64 + 1;
    let mut filler = Vec::new();
    for bytes in [record_bytes, 0] {
        for i in 0.. {
            let batch = encode_batch(&[Record::keyed("f", vec![b'x'; bytes])], START_MS).unwrap();
            match stream.partition(1).unwrap().try_append_encoded(batch) {
                Ok(done) => filler.push(done),
                Err(TryAppendError::Full(_)) => break,
                Err(TryAppendError::Failed(e)) => panic!("filler {i} failed: {e}"),
            }
            assert!(i <= most + 100_000, "the queue must fill up");
        }
    }
    assert!(!filler.is_empty());

    // Input order interleaves the partitions; one record for 0, two for 1, three for 2.
    let order = [2u32, 0, 1, 2, 1, 2];
    let keys: Vec<String> = (0..3).map(|p| key_for(p, 3)).collect();
    let records: Vec<Record> = order
        .iter()
        .enumerate()
        .map(|(i, &p)| Record::keyed(keys[p as usize].clone(), format!("v{i}")))
        .collect();
    let (mut append, unqueued) = stream.try_append_batch(records).unwrap();
    // Partition 0 had room; 1 was full, and 2 waits behind it (partition order is kept).
    let unqueued = unqueued.expect("partition 1's queue is full");
    assert_eq!(
        unqueued.record_count(),
        5,
        "the records of partitions 1 and 2"
    );

    storage.gate.release();
    unqueued.queue(&stream, &mut append).unwrap();
    let positions = append.wait().unwrap();
    for (i, (position, &p)) in positions.iter().zip(&order).enumerate() {
        assert_eq!(position.partition, p, "record {i}");
        let read = stream.read(p, position.offset, 1, usize::MAX).unwrap();
        assert_eq!(read[0].value, format!("v{i}").into_bytes(), "record {i}");
    }
    for done in filler {
        done.wait().unwrap();
    }
}

#[test]
fn a_batch_append_with_room_queues_everything() {
    let storage = GatedStorage::new();
    let log = open(&storage);
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    let records = vec![Record::keyed(key_for(1, 2), "a"), Record::new("b")];
    let (append, unqueued) = stream.try_append_batch(records).unwrap();
    assert!(unqueued.is_none());
    let positions = append.wait().unwrap();
    assert_eq!(positions[0].partition, 1);
    assert_eq!(stream.record_count(), 2);
}
