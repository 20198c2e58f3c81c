//! The `LogBackend` seam's behavioural contract (docs/decisions/0011) as functions over any
//! backend: `crates/log/tests/backend.rs` runs them on the embedded log,
//! `crates/jetstream/tests/backend.rs` on NATS JetStream (it includes this file by path).
//!
//! Offsets are only assumed monotonic per partition: a reader continues from the record after
//! the last one it read (`last.offset + 1`), and nothing counts offset differences — the
//! embedded log's offsets are dense, JetStream's have gaps.
#![allow(
    dead_code,
    reason = "each test crate runs the part its backend supports"
)]
#![allow(
    clippy::unwrap_used,
    reason = "the suite, like a test, fails loudly on an unexpected error"
)]

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use logbook_log::{
    AckGuarantee, AppendCondition, LogBackend, LogError, LogPartition, LogStream, Record,
    StoredRecord, StreamConfig,
};

/// A bound on every wait of the suite; a backend that needs it has failed anyway.
const WAIT: Duration = Duration::from_secs(60);

/// A backend under test.
pub struct Subject {
    /// The backend.
    pub backend: Arc<dyn LogBackend>,
    /// Settings the suite's streams are created with (ones the backend honours); the
    /// partition count is set per stream.
    pub config: StreamConfig,
}

impl Subject {
    /// The settings of a stream of `partitions` partitions.
    pub fn config(&self, partitions: u32) -> StreamConfig {
        StreamConfig {
            partitions,
            ..self.config.clone()
        }
    }

    /// Creates stream `name` with `partitions` partitions.
    pub fn open(&self, name: &str, partitions: u32) -> Arc<dyn LogStream> {
        self.backend
            .create_stream(name, self.config(partitions))
            .unwrap_or_else(|e| panic!("create stream {name}: {e}"))
    }
}

fn append(
    p: &dyn LogPartition,
    values: &[&str],
    condition: AppendCondition,
) -> logbook_log::Result<logbook_log::AppendAck> {
    let records: Vec<Record> = values.iter().map(|v| Record::new(*v)).collect();
    p.append_batch(&records, condition)?.wait()
}

fn values(records: &[StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

/// Every record of `p`, read `page` at a time from its start, each read continuing from the
/// record after the last one read; checks offsets increase.
pub fn read_all(p: &dyn LogPartition, page: usize) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut from = p.start_offset();
    loop {
        let records = p
            .read(from, page, 1 << 20)
            .unwrap_or_else(|e| panic!("read from {from}: {e}"));
        assert!(records.len() <= page, "at most max_records");
        let Some(last) = records.last() else {
            return out;
        };
        from = last.offset + 1;
        for r in records {
            if let Some(prev) = out.last() {
                assert!(
                    r.offset > prev.offset,
                    "offsets increase: {} then {}",
                    prev.offset,
                    r.offset
                );
            }
            out.push(r);
        }
    }
}

/// Polls `future` on this thread until it is ready (the suite needs no async runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// A stream reports `expected` as what an acknowledgment guarantees, and is listed.
pub fn reports_its_ack_guarantee(s: &Subject, expected: AckGuarantee) {
    let stream = s.open("guaranteed", 1);
    assert_eq!(stream.ack_guarantee(), expected);
    assert!(s.backend.stream_names().contains(&"guaranteed".to_string()));
}

/// An append expecting a stale end stores nothing and names the actual end; the partition
/// stays usable, and an append expecting the actual end is stored after the earlier records.
pub fn a_stale_expected_end_stores_nothing(s: &Subject) {
    let stream = s.open("s", 2);
    let p = stream.partition(1).unwrap();
    assert_eq!(p.end_offset(), 0, "an empty partition ends at 0");
    let first = append(p, &["a", "b"], AppendCondition::EndOffset(0)).unwrap();
    assert_eq!(first.record_count, 2);
    let end = p.end_offset();
    assert!(
        end > first.last_offset(),
        "the end is past the acknowledged records"
    );
    match append(p, &["c"], AppendCondition::EndOffset(0)) {
        Err(LogError::EndOffsetMismatch {
            stream,
            partition: 1,
            expected: 0,
            actual,
        }) => {
            assert_eq!(stream, "s");
            assert_eq!(actual, end, "the mismatch names the actual end");
        }
        other => panic!("expected EndOffsetMismatch, got {other:?}"),
    }
    assert_eq!(p.end_offset(), end, "nothing stored");
    let next = append(p, &["d"], AppendCondition::EndOffset(end)).unwrap();
    assert!(
        next.base_offset >= end,
        "stored at or after the end it expected"
    );
    assert_eq!(values(&read_all(p, 10)), ["a", "b", "d"]);
    assert_eq!(stream.partition(0).unwrap().end_offset(), 0);
    assert!(read_all(stream.partition(0).unwrap(), 10).is_empty());
}

/// Of two appends sent together expecting the same end, exactly one is stored.
pub fn of_two_racing_appends_expecting_one_end_one_is_stored(s: &Subject) {
    let stream = s.open("race", 1);
    let p = stream.partition(0).unwrap();
    append(p, &["first"], AppendCondition::Always).unwrap();
    let end = p.end_offset();
    let one = p
        .append_batch(&[Record::new("one")], AppendCondition::EndOffset(end))
        .unwrap();
    let two = p
        .append_batch(&[Record::new("two")], AppendCondition::EndOffset(end))
        .unwrap();
    let outcomes = [one.wait(), two.wait()];
    let stored: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    assert_eq!(stored.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if let Err(e) = outcome {
            assert!(
                matches!(e, LogError::EndOffsetMismatch { expected, .. } if *expected == end),
                "{e:?}"
            );
        }
    }
    let winner = if stored[0] { "one" } else { "two" };
    assert_eq!(values(&read_all(p, 10)), ["first", winner]);
}

/// Appends sent back to back without waiting, each expecting the end after the previous one
/// (one record per batch: `batch_offset_span` apart), are all stored, in the order of the
/// calls — how a fenced writer (the certifier's leader) pipelines its commit records.
pub fn chained_appends_sent_without_waiting_are_all_stored_in_order(s: &Subject) {
    const CHAIN: u64 = 64;
    let stream = s.open("chain", 1);
    let p = stream.partition(0).unwrap();
    append(p, &["first"], AppendCondition::Always).unwrap();
    let (end, span) = (p.end_offset(), p.batch_offset_span());
    let completions: Vec<_> = (0..CHAIN)
        .map(|i| {
            let record = Record::new(format!("c{i}"));
            p.append_batch(&[record], AppendCondition::EndOffset(end + i * span))
                .unwrap()
        })
        .collect();
    for (i, completion) in (0..CHAIN).zip(completions) {
        let ack = completion
            .wait()
            .unwrap_or_else(|e| panic!("append {i} of the chain: {e}"));
        assert_eq!(ack.base_offset, end + i * span, "append {i}");
    }
    let expected: Vec<String> = std::iter::once("first".to_string())
        .chain((0..CHAIN).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(values(&read_all(p, 100)), expected);
}

/// Appends chosen by key, reads, waits, refused reserved headers, and a drop: the name is
/// gone and a handle held on the dropped stream refuses appends.
pub fn appends_reads_and_waits(s: &Subject) {
    let stream = s.open("s", 3);
    assert_eq!(stream.partition_count(), 3);
    assert_eq!(stream.partitions().len(), 3);
    assert!(matches!(
        stream.partition(3),
        Err(LogError::UnknownPartition { partition: 3, .. })
    ));
    let positions = stream
        .append_batch(vec![Record::keyed("k", "1"), Record::keyed("k", "2")])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(positions.len(), 2);
    assert_eq!(
        positions[0].partition, positions[1].partition,
        "one key, one partition"
    );
    assert!(positions[1].offset > positions[0].offset);
    let p = stream.partition(positions[0].partition).unwrap();
    assert_eq!(p.id(), positions[0].partition);
    let last = positions[1].offset;
    assert!(p.wait_end_offset_above(last, Duration::ZERO) > last);
    assert!(
        p.durable_offset() > last,
        "acknowledged under the backend's guarantee"
    );
    let read = p.read(positions[0].offset, 10, 1 << 20).unwrap();
    assert_eq!(values(&read), ["1", "2"]);
    assert_eq!(read[1].offset, last);
    assert_eq!(read[0].key.as_deref(), Some(&b"k"[..]));
    assert!(stream.size_bytes() > 0);
    let mut reserved = Record::new("x");
    reserved
        .headers
        .push((logbook_log::dedup::REQUEST_ID_HEADER.into(), b"r".to_vec()));
    assert!(matches!(
        p.append_batch(&[reserved.clone()], AppendCondition::Always),
        Err(LogError::ReservedHeader { index: 0, .. })
    ));
    assert!(matches!(
        stream.append_batch(vec![Record::new("ok"), reserved]),
        Err(LogError::ReservedHeader { index: 1, .. })
    ));
    s.backend.drop_stream("s").unwrap();
    assert!(matches!(
        s.backend.stream("s"),
        Err(LogError::UnknownStream { .. })
    ));
    let after = p
        .append_batch(&[Record::new("late")], AppendCondition::Always)
        .and_then(|c| c.wait());
    assert!(matches!(after, Err(LogError::Closed)), "{after:?}");
}

/// Reads return the first record at or after the offset asked for, continue from the record
/// after the last one read, stop at `max_records` and around `max_bytes`, and refuse offsets
/// past the end.
pub fn reads_continue_from_the_record_after_the_last_one_read(s: &Subject) {
    let stream = s.open("pages", 1);
    let p = stream.partition(0).unwrap();
    for batch in [&["a0", "a1", "a2"][..], &["b0"], &["c0", "c1"]] {
        append(p, batch, AppendCondition::Always).unwrap();
    }
    for page in [1, 2, 4, 100] {
        assert_eq!(
            values(&read_all(p, page)),
            ["a0", "a1", "a2", "b0", "c0", "c1"],
            "pages of {page}"
        );
    }
    let all = read_all(p, 100);
    // From inside a batch, and from the offset after one (a gap, where there are gaps).
    assert_eq!(
        values(&p.read(all[1].offset, 2, 1 << 20).unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        values(&p.read(all[2].offset + 1, 1, 1 << 20).unwrap()),
        ["b0"]
    );
    // About max_bytes: at least one record, stopping once the bound is reached.
    assert_eq!(p.read(all[0].offset, 100, 1).unwrap().len(), 1);
    let end = p.end_offset();
    assert!(end > all[5].offset);
    assert!(
        p.read(end, 10, 1 << 20).unwrap().is_empty(),
        "nothing at the end"
    );
    assert!(matches!(
        p.read(end + 1, 10, 1 << 20),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

/// Creating again with the same settings returns the stream; other settings are refused; a
/// stream dropped and created again has a new incarnation; names are listed sorted.
pub fn create_is_idempotent_and_a_new_incarnation_follows_a_drop(s: &Subject) {
    let first = s.open("orders", 2);
    let again = s.open("orders", 2);
    assert_eq!(again.incarnation(), first.incarnation());
    assert!(matches!(
        s.backend.create_stream("orders", s.config(3)),
        Err(LogError::StreamExists { .. })
    ));
    s.open("audit", 1);
    assert_eq!(s.backend.stream_names(), ["audit", "orders"]);
    assert_eq!(
        s.backend.stream("orders").unwrap().incarnation(),
        first.incarnation()
    );
    s.backend.drop_stream("orders").unwrap();
    assert!(matches!(
        s.backend.drop_stream("orders"),
        Err(LogError::UnknownStream { .. })
    ));
    assert_eq!(s.backend.stream_names(), ["audit"]);
    let next = s.open("orders", 3);
    assert_ne!(next.incarnation(), first.incarnation());
    assert_eq!(next.partition_count(), 3);
    assert!(
        read_all(next.partition(0).unwrap(), 10).is_empty(),
        "starts empty"
    );
}

/// A thread blocked in `wait_end_offset_above` and a future from `end_offset_above`, both
/// started before an append, see it.
pub fn waiters_see_the_next_append(s: &Subject) {
    let stream = s.open("tail", 1);
    let end = stream.partition(0).unwrap().end_offset();
    let future = stream.partition(0).unwrap().end_offset_above(end);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            stream
                .partition(0)
                .unwrap()
                .wait_end_offset_above(end, WAIT)
        });
        let ack = append(
            stream.partition(0).unwrap(),
            &["x"],
            AppendCondition::Always,
        )
        .unwrap();
        let seen = waiter.join().unwrap();
        assert!(
            seen > ack.last_offset(),
            "the blocked waiter saw the append ({seen})"
        );
        assert!(block_on(future) > ack.last_offset(), "so did the future");
    });
}

/// Bad input is refused at once with a named error and changes nothing.
pub fn bad_input_is_refused_and_changes_nothing(s: &Subject) {
    let stream = s.open("s", 1);
    let p = stream.partition(0).unwrap();
    assert!(matches!(
        stream.append_batch(Vec::new()),
        Err(LogError::EmptyBatch)
    ));
    assert!(matches!(
        p.append_batch(&[], AppendCondition::Always),
        Err(LogError::EmptyBatch)
    ));
    assert!(matches!(
        s.backend.create_stream("bad name", s.config(1)),
        Err(LogError::InvalidStreamName { .. })
    ));
    assert!(matches!(
        s.backend.create_stream("none", s.config(0)),
        Err(LogError::InvalidConfig {
            field: "partitions",
            ..
        })
    ));
    assert!(matches!(
        s.backend.stream("missing"),
        Err(LogError::UnknownStream { .. })
    ));
    assert_eq!(s.backend.stream_names(), ["s"]);
    assert!(read_all(p, 10).is_empty());
    assert_eq!(p.end_offset(), 0);
}
