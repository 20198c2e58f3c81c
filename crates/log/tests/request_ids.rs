//! Exactly-once appends through request ids: every scenario the request-id issue names,
//! each its own test.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{DATA_DIR, START_MS, SimDir};
use logbook_log::dedup::{REQUEST_ID_HEADER, REQUEST_RECORDS_HEADER, TRACEPARENT_HEADER};
use logbook_log::sim::GatedStorage;
use logbook_log::storage::{OpenMode, Storage};
use logbook_log::{
    Log, LogError, LogOptions, Position, Record, RequestId, RequestIdWindow, Stream, StreamConfig,
};

/// `append_with_id` that must be accepted and acknowledged.
trait AppendOnce {
    fn append_once(
        &self,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> logbook_log::AppendOutcome;
}

impl AppendOnce for Arc<Stream> {
    fn append_once(
        &self,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> logbook_log::AppendOutcome {
        self.append_with_id(request_id, traceparent, records)
            .unwrap()
            .wait()
            .unwrap()
    }
}

fn id(s: &str) -> RequestId {
    RequestId::new(s).unwrap()
}

fn all_records(stream: &Stream) -> Vec<(u32, logbook_log::StoredRecord)> {
    let mut out = Vec::new();
    for p in stream.partitions() {
        let mut from = p.start_offset();
        loop {
            let batch = p.read(from, 1000, 1 << 24).unwrap();
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            out.extend(batch.into_iter().map(|r| (p.id(), r)));
        }
    }
    out
}

fn header<'a>(r: &'a logbook_log::StoredRecord, name: &str) -> Option<&'a [u8]> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

#[test]
fn a_retry_returns_the_original_position_and_appends_nothing() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("orders", StreamConfig::with_partitions(3))
        .unwrap();
    let first = stream.append_once(
        &id("req-1"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        vec![Record::keyed("k", "v")],
    );
    assert!(!first.duplicate);
    let retry = stream.append_once(
        &id("req-1"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"),
        vec![Record::keyed("k", "v")],
    );
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
    assert_eq!(stream.record_count(), 1);
    assert_eq!(
        stream
            .request_ids()
            .stats()
            .duplicates
            .load(Ordering::Relaxed),
        1
    );
    // The id and the first attempt's trace context travel in the record.
    let records = all_records(&stream);
    assert_eq!(
        header(&records[0].1, REQUEST_ID_HEADER),
        Some(&b"req-1"[..])
    );
    assert_eq!(
        header(&records[0].1, TRACEPARENT_HEADER),
        Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
    );
}

#[test]
fn the_same_id_with_another_body_is_a_conflict_and_appends_nothing() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("orders", StreamConfig::with_partitions(2))
        .unwrap();
    stream.append_once(&id("req-1"), None, vec![Record::keyed("k", "v1")]);
    let variants = [
        vec![Record::keyed("k", "v2")],
        vec![Record::keyed("other", "v1")],
        vec![Record::new("v1")],
        vec![Record::keyed("k", "v1").with_header("h", "x")],
        vec![Record::keyed("k", "v1"), Record::keyed("k", "v1")],
    ];
    for records in variants {
        let err = stream
            .append_with_id(&id("req-1"), None, records.clone())
            .unwrap_err();
        assert!(
            matches!(err, LogError::RequestIdConflict { ref request_id, .. } if request_id == "req-1"),
            "{records:?}: {err}"
        );
    }
    assert_eq!(stream.record_count(), 1);
    assert_eq!(
        stream
            .request_ids()
            .stats()
            .conflicts
            .load(Ordering::Relaxed),
        5
    );
}

#[test]
fn bad_request_ids_and_reserved_headers_are_refused_and_change_nothing() {
    assert!(matches!(
        RequestId::new(""),
        Err(LogError::InvalidRequestId { .. })
    ));
    assert!(matches!(
        RequestId::new("x".repeat(129)),
        Err(LogError::InvalidRequestId { .. })
    ));
    assert!(matches!(
        RequestId::new("naïve"),
        Err(LogError::InvalidRequestId { .. })
    ));
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let forged = Record::new("v").with_header(REQUEST_ID_HEADER, "someone-else");
    assert!(matches!(
        stream.append(forged.clone()),
        Err(LogError::ReservedHeader { .. })
    ));
    assert!(matches!(
        stream.append_with_id(&id("a"), None, vec![forged]),
        Err(LogError::ReservedHeader { .. })
    ));
    let too_big = Record::new(vec![0u8; 2 << 20]);
    assert!(matches!(
        stream.append_with_id(&id("a"), None, vec![too_big]),
        Err(LogError::RecordTooLarge { .. })
    ));
    assert_eq!(stream.record_count(), 0);
    // A refused request leaves no trace in the index: the id is still free.
    let ok = stream.append_once(&id("a"), None, vec![Record::new("v")]);
    assert!(!ok.duplicate);
}

#[test]
fn concurrent_appends_with_one_id_write_one_record_and_all_get_its_position() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(4))
        .unwrap();
    for round in 0..20 {
        let request = id(&format!("same-{round}"));
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let stream = stream.clone();
                    let request = request.clone();
                    s.spawn(move || {
                        stream.append_once(&request, None, vec![Record::new("unkeyed value")])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let originals = outcomes.iter().filter(|o| !o.duplicate).count();
        assert_eq!(originals, 1, "round {round}: exactly one caller appended");
        assert!(
            outcomes
                .windows(2)
                .all(|w| w[0].positions == w[1].positions),
            "round {round}: every caller got the same position: {outcomes:?}"
        );
    }
    assert_eq!(stream.record_count(), 20);
}

#[test]
fn a_multi_record_request_is_deduplicated_as_a_whole_across_partitions() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(4))
        .unwrap();
    let records: Vec<Record> = (0..10)
        .map(|i| Record::keyed(format!("key-{i}"), format!("v{i}")))
        .collect();
    let first = stream.append_once(&id("batch"), None, records.clone());
    let partitions: std::collections::BTreeSet<u32> =
        first.positions.iter().map(|p| p.partition).collect();
    assert!(partitions.len() > 1, "the request spans partitions");
    let retry = stream.append_once(&id("batch"), None, records);
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
    assert_eq!(stream.record_count(), 10);
    // One share per partition, each announced once on its first record: `s:k/10`.
    let shares: Vec<(u32, String)> = all_records(&stream)
        .iter()
        .filter(|(_, r)| header(r, REQUEST_ID_HEADER) == Some(&b"batch"[..]))
        .map(|(p, r)| {
            let k = header(r, REQUEST_RECORDS_HEADER).unwrap();
            (*p, String::from_utf8(k.to_vec()).unwrap())
        })
        .collect();
    assert_eq!(shares.len(), partitions.len(), "{shares:?}");
    let total: u32 = shares
        .iter()
        .map(|(_, k)| {
            let share = k.split(';').next().unwrap();
            let (k, n) = share.split_once(':').unwrap().1.split_once('/').unwrap();
            assert_eq!(n, "10");
            k.parse::<u32>().unwrap()
        })
        .sum();
    assert_eq!(total, 10);
    // The index remembers one entry per share, not per record.
    assert_eq!(stream.request_ids().len(), partitions.len() as u64);
    // And a restart rebuilds exactly that from the log.
    drop(stream);
    drop(log);
    let _ = dir
        .sim
        .remove_file(&common::stream_dir("s").join("request-ids.checkpoint"));
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.request_ids().len(), partitions.len() as u64);
    let retry = stream.append_once(
        &id("batch"),
        None,
        (0..10)
            .map(|i| Record::keyed(format!("key-{i}"), format!("v{i}")))
            .collect(),
    );
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
}

#[test]
fn a_retry_after_a_restart_behaves_exactly_like_one_without() {
    let dir = SimDir::new();
    let (first, records) = {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(2))
            .unwrap();
        let records = vec![Record::keyed("a", "1"), Record::keyed("b", "2")];
        let first = stream.append_once(&id("r"), None, records.clone());
        (first, records)
    };
    // Clean restart: the checkpoint written at close holds the id.
    {
        let log = dir.open().unwrap();
        let stream = log.stream("s").unwrap();
        let retry = stream.append_once(&id("r"), None, records.clone());
        assert!(retry.duplicate);
        assert_eq!(retry.positions, first.positions);
        assert!(matches!(
            stream.append_with_id(&id("r"), None, vec![Record::keyed("a", "changed")]),
            Err(LogError::RequestIdConflict { .. })
        ));
    }
    // Crash after the ack, checkpoint lost: the id is recovered from the log itself.
    dir.sim.power_loss();
    // (The checkpoint is not fsynced, so the power loss may already have taken it.)
    let _ = dir
        .sim
        .remove_file(Path::new("/data/streams/s/request-ids.checkpoint"));
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let retry = stream.append_once(&id("r"), None, records);
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
    assert_eq!(stream.record_count(), 2);
}

#[test]
fn a_record_durable_before_a_crash_is_a_duplicate_after_it_even_without_an_ack() {
    // The append reaches the disk and the process dies before anyone hears of it: the
    // writer's fsync succeeds, the power goes, the caller never saw the ack.
    let dir = SimDir::new();
    {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(1))
            .unwrap();
        let pending = stream
            .append_with_id(&id("lost-ack"), None, vec![Record::new("v")])
            .unwrap();
        // Drop the pending outcome unread, as a crashing client would.
        drop(pending);
        stream.partitions()[0].wait_end_offset_above(0, Duration::from_secs(30));
    }
    dir.sim.power_loss();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let retry = stream.append_once(&id("lost-ack"), None, vec![Record::new("v")]);
    assert!(retry.duplicate);
    assert_eq!(
        retry.positions,
        vec![Position {
            partition: 0,
            offset: 0
        }]
    );
    assert_eq!(stream.record_count(), 1);
}

fn windowed(max_ids: u64, max_age_ms: u64) -> StreamConfig {
    StreamConfig {
        request_ids: RequestIdWindow {
            max_ids,
            max_age_ms,
        },
        ..StreamConfig::with_partitions(2)
    }
}

#[test]
fn the_age_window_slides_per_id_and_a_retry_after_it_appends_again() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let window_ms = 60_000;
    let stream = log.create_stream("s", windowed(1_000, window_ms)).unwrap();
    let append =
        |name: &str| stream.append_once(&id(name), None, vec![Record::new(name.to_string())]);
    assert!(!append("early").duplicate); // at t = 0
    dir.clock.advance(40_000);
    assert!(!append("late").duplicate); // at t = 40 s
    // t = 59 s: both inside their own window.
    dir.clock.set(START_MS + 59_000);
    assert!(append("early").duplicate);
    assert!(append("late").duplicate);
    // t = 62 s: "early" is past its 60 s; "late" (appended at 40 s) is not, although a
    // fixed 60 s bucket starting at 0 would have dropped it too.
    dir.clock.set(START_MS + 62_000);
    assert!(append("late").duplicate);
    let again = append("early");
    assert!(
        !again.duplicate,
        "a retry after the window appends again, as documented"
    );
    assert_eq!(stream.record_count(), 3);
    // t = 102 s: "late" is past its window (ids are kept at 1 s granularity, rounded up:
    // at most 1 s longer, never shorter); the re-appended "early" (t = 62 s) is not.
    dir.clock.set(START_MS + 102_000);
    assert!(!append("late").duplicate);
    assert!(append("early").duplicate);
}

#[test]
fn the_count_window_forgets_the_oldest_ids_first() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log.create_stream("s", windowed(5, 3_600_000)).unwrap();
    for i in 0..8 {
        let o = stream.append_once(&id(&format!("id-{i}")), None, vec![Record::new("v")]);
        assert!(!o.duplicate);
    }
    assert_eq!(stream.request_ids().len(), 5);
    for i in 3..8 {
        let o = stream.append_once(&id(&format!("id-{i}")), None, vec![Record::new("v")]);
        assert!(o.duplicate, "id-{i} is among the 5 newest");
    }
    let o = stream.append_once(&id("id-0"), None, vec![Record::new("v")]);
    assert!(!o.duplicate, "id-0 fell out of the 5-id window");
}

#[test]
fn retention_deleting_records_does_not_break_retries_of_other_ids() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: 4096,
        retention_bytes: Some(4096),
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let value = vec![b'x'; 500];
    let mut positions = Vec::new();
    for i in 0..40 {
        let o = stream.append_once(
            &id(&format!("id-{i}")),
            None,
            vec![Record::new(value.clone())],
        );
        positions.push(o.positions[0]);
    }
    let partition = &stream.partitions()[0];
    assert!(partition.enforce_retention(START_MS).unwrap() > 0 || partition.start_offset() > 0);
    let start = partition.start_offset();
    assert!(start > 0, "retention deleted old segments");
    // Retries of ids whose records are gone and of ids whose records remain: all duplicates
    // with their original positions, nothing appended.
    for i in [0usize, 5, 39] {
        let o = stream.append_once(
            &id(&format!("id-{i}")),
            None,
            vec![Record::new(value.clone())],
        );
        assert!(o.duplicate, "id-{i}");
        assert_eq!(o.positions[0], positions[i]);
    }
    assert_eq!(partition.end_offset(), 40);
    // And after a restart (replay starts at the first retained offset).
    drop(log);
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let o = stream.append_once(&id("id-39"), None, vec![Record::new(value)]);
    assert!(o.duplicate);
}

#[test]
fn idempotency_behaves_the_same_on_every_stream_and_partition() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    for name in ["a", "b"] {
        let stream = log
            .create_stream(name, StreamConfig::with_partitions(4))
            .unwrap();
        for p in 0..4u32 {
            // A key that lands in partition p.
            let key = (0..)
                .map(|i| format!("k{i}"))
                .find(|k| logbook_log::partition_for_key(k.as_bytes(), 4) == p)
                .unwrap();
            let request = id(&format!("req-{p}"));
            let first = stream.append_once(&request, None, vec![Record::keyed(key.clone(), "v")]);
            assert_eq!(first.positions[0].partition, p);
            let retry = stream.append_once(&request, None, vec![Record::keyed(key, "v")]);
            assert!(retry.duplicate, "stream {name} partition {p}");
            assert_eq!(retry.positions, first.positions);
        }
        assert_eq!(stream.record_count(), 4);
    }
    // Scope is per stream: the same id on another stream is a different request.
    let b = log.stream("b").unwrap();
    assert_eq!(b.record_count(), 4);
}

#[test]
fn a_retry_while_the_original_is_in_flight_waits_for_and_returns_its_outcome() {
    let storage = GatedStorage::new();
    let log = Log::open_with(
        DATA_DIR,
        LogOptions {
            storage: Arc::new(storage.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    storage.gate.hold();
    let original = stream
        .append_with_id(&id("slow"), None, vec![Record::new("v")])
        .unwrap();
    let retry = std::thread::spawn({
        let stream = stream.clone();
        move || stream.append_once(&id("slow"), None, vec![Record::new("v")])
    });
    // The original cannot be acknowledged while its fsync is held, so neither can the retry
    // (this cannot pass by luck: an early answer is wrong however slow the machine is).
    std::thread::sleep(Duration::from_millis(100));
    assert!(!original.is_ready());
    assert!(!retry.is_finished(), "the retry must wait for the original");
    assert_eq!(stream.partitions()[0].end_offset(), 0);
    storage.gate.release();
    let original = original.wait().unwrap();
    let retry = retry.join().unwrap();
    assert!(!original.duplicate);
    assert!(retry.duplicate);
    assert_eq!(retry.positions, original.positions);
    assert_eq!(stream.record_count(), 1);
}

#[test]
fn a_damaged_checkpoint_is_ignored_and_the_log_replayed() {
    let dir = SimDir::new();
    {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(2))
            .unwrap();
        for i in 0..50 {
            stream.append_once(
                &id(&format!("r{i}")),
                None,
                vec![Record::new(format!("{i}"))],
            );
        }
    }
    dir.sim
        .corrupt("/data/streams/s/request-ids.checkpoint", 40, 0xFF)
        .unwrap();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.request_ids().len(), 50);
    let o = stream.append_once(&id("r17"), None, vec![Record::new("17")]);
    assert!(o.duplicate);
}

#[test]
fn a_checkpoint_from_before_a_lost_tail_is_not_trusted_once_the_log_grows_back() {
    let dir = SimDir::new();
    let seg = common::segment_path("s", 0, 0);
    let append = |stream: &Arc<Stream>, name: String| {
        stream.append_once(&id(&name), None, vec![Record::new(name.clone())])
    };
    let kept_len = {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(1))
            .unwrap();
        for i in 0..90 {
            append(&stream, format!("old-{i}"));
        }
        dir.sim.file_bytes(&seg).unwrap().len() as u64
    };
    {
        let log = dir.open().unwrap();
        let stream = log.stream("s").unwrap();
        for i in 90..100 {
            append(&stream, format!("old-{i}"));
        }
    } // clean close: checkpoint with applied = 100
    // Let the OS write the checkpoint back (it is never fsynced by the log), then lose the
    // log's last ten records, as a weak fsync policy or a truncated damaged tail can.
    let checkpoint = common::stream_dir("s").join("request-ids.checkpoint");
    dir.sim
        .open(&checkpoint, OpenMode::ReadWrite)
        .unwrap()
        .sync_data()
        .unwrap();
    dir.sim.sync_dir(&common::stream_dir("s")).unwrap();
    dir.sim.truncate(&seg, kept_len).unwrap();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.partitions()[0].end_offset(), 90);
    // New requests take offsets 90..110, past the stale checkpoint's applied offset (100).
    let new: Vec<_> = (0..20)
        .map(|i| append(&stream, format!("new-{i}")))
        .collect();
    assert_eq!(new[5].positions[0].offset, 95);
    // Crash without a new checkpoint: the stale one is all that is on disk.
    std::mem::forget(log);
    dir.sim.power_loss();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let retry = append(&stream, "new-5".into());
    assert!(retry.duplicate, "new-5 is in the log at offset 95");
    assert_eq!(retry.positions, new[5].positions);
    let lost = append(&stream, "old-95".into());
    assert!(
        !lost.duplicate,
        "old-95 was lost with the tail: it must be appended again"
    );
    let records = all_records(&stream);
    let copies = |v: &[u8]| records.iter().filter(|(_, r)| r.value == v).count();
    assert_eq!(copies(b"new-5"), 1);
    assert_eq!(copies(b"old-95"), 1);
}

#[test]
fn an_unkeyed_request_retried_after_an_unknown_outcome_lands_once() {
    let dir = SimDir::new();
    {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(4))
            .unwrap();
        dir.sim.fail_syncs_after(0);
        // The write reaches the file, the fsync fails: the outcome is unknown.
        let first = stream
            .append_with_id(&id("req-1"), None, vec![Record::new("v")])
            .unwrap()
            .wait();
        assert!(first.is_err());
        dir.sim.clear_faults();
        // The retry goes where the first attempt went (by the id's hash), which refuses writes
        // until reopened, instead of landing a second copy on a healthy partition.
        let retry = stream.append_with_id(&id("req-1"), None, vec![Record::new("v")]);
        assert!(matches!(retry, Err(LogError::Poisoned { .. })), "{retry:?}");
    }
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let retry = stream.append_once(&id("req-1"), None, vec![Record::new("v")]);
    let copies = all_records(&stream)
        .iter()
        .filter(|(_, r)| header(r, REQUEST_ID_HEADER) == Some(&b"req-1"[..]))
        .count();
    assert_eq!(copies, 1, "retry: {retry:?}");
}

#[test]
fn the_window_after_a_restart_runs_on_the_log_clock_not_on_a_client_timestamp() {
    let dir = SimDir::new();
    let window = windowed(1_000, 60_000);
    // A client-chosen timestamp an hour old (within the allowed skew), far outside the 60 s
    // window if the window ran on it.
    let record = Record {
        timestamp_ms: Some(START_MS - 3_600_000),
        ..Record::keyed("k", "v")
    };
    {
        let log = dir.open().unwrap();
        let stream = log.create_stream("s", window).unwrap();
        stream.append_once(&id("old-clock"), None, vec![record.clone()]);
    }
    let _ = dir
        .sim
        .remove_file(&common::stream_dir("s").join("request-ids.checkpoint"));
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    let retry = stream.append_once(&id("old-clock"), None, vec![record]);
    assert!(
        retry.duplicate,
        "replay must age the id by the log's clock at append"
    );
    assert_eq!(stream.record_count(), 1);
}

#[test]
fn a_retry_matching_only_the_share_that_survived_a_crash_is_a_conflict() {
    let dir = SimDir::new();
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| logbook_log::partition_for_key(k.as_bytes(), 2) == p)
            .unwrap()
    };
    let (a, b) = (key_in(0), key_in(1));
    {
        let log = dir.open().unwrap();
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(2))
            .unwrap();
        // Exactly one of the two shares' fsyncs succeeds.
        dir.sim.fail_syncs_after(1);
        let outcome = stream
            .append_with_id(
                &id("split"),
                None,
                vec![Record::keyed(a.clone(), "1"), Record::keyed(b.clone(), "2")],
            )
            .unwrap()
            .wait();
        assert!(outcome.is_err());
        dir.sim.clear_faults();
    }
    // The power goes: the share whose fsync failed is gone, the other is durable.
    dir.sim.power_loss();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    assert_eq!(stream.record_count(), 1, "one share is in the log");
    // Both shares change in turn; whichever survived, the retry differs from the request it
    // belongs to and must be refused.
    for variant in [
        vec![
            Record::keyed(a.clone(), "1"),
            Record::keyed(b.clone(), "other"),
        ],
        vec![
            Record::keyed(a.clone(), "other"),
            Record::keyed(b.clone(), "2"),
        ],
    ] {
        let err = stream
            .append_with_id(&id("split"), None, variant)
            .unwrap_err();
        assert!(matches!(err, LogError::RequestIdConflict { .. }), "{err}");
    }
    assert_eq!(stream.record_count(), 1);
    // The true retry completes the request.
    let retry = stream.append_once(
        &id("split"),
        None,
        vec![Record::keyed(a, "1"), Record::keyed(b, "2")],
    );
    assert!(!retry.duplicate);
    assert_eq!(stream.record_count(), 2);
}

/// Runs a future to completion on this thread (no async runtime in the log's tests).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn an_idempotent_append_awaited_as_a_future_matches_wait() {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(4))
        .unwrap();
    let records: Vec<Record> = (0..10)
        .map(|i| Record::keyed(format!("key-{i}"), format!("v{i}")))
        .collect();
    let pending = stream
        .append_with_id(&id("f1"), None, records.clone())
        .unwrap();
    let first = block_on(pending).unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.positions.len(), 10);
    let partitions: std::collections::BTreeSet<u32> =
        first.positions.iter().map(|p| p.partition).collect();
    assert!(partitions.len() > 1, "the request spans partitions");
    // The same request, awaited again: the original positions, nothing appended.
    let retry = block_on(
        stream
            .append_with_id(&id("f1"), None, records.clone())
            .unwrap(),
    )
    .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
    // And `wait` agrees with the future.
    let waited = stream.append_once(&id("f1"), None, records);
    assert_eq!(waited, retry);
    assert_eq!(stream.record_count(), 10);
    // A failed fsync is reported through the future too.
    dir.sim.fail_syncs_after(0);
    let failed = block_on(
        stream
            .append_with_id(&id("f2"), None, vec![Record::keyed("k", "v")])
            .unwrap(),
    );
    assert!(failed.is_err());
}
