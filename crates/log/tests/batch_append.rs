//! Property test of `Stream::try_append_batch` (and so of `Stream::append_batch`, which
//! shares it): random batches of keyed and unkeyed records over 1 to 4 partitions, resolved
//! with `wait()` or `.await`. Checked for every batch: each returned position holds its
//! record; a keyed record is in its key's partition and the unkeyed ones of a batch share
//! one partition; each partition's records of the batch are one contiguous run in input
//! order. A batch with one bad record (a key over the limit, or a reserved header) is
//! refused naming that record's index in the input, and nothing is appended.
//!
//! Failures print proptest's seed and minimal case; `PROPTEST_CASES=N` runs more cases.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use common::SimDir;
use logbook_log::limits::KEY_BYTES_MAX;
use logbook_log::{LogError, Position, Record, Stream, StreamConfig, partition_for_key};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Cases run by default; `PROPTEST_CASES` overrides it.
const DEFAULT_CASES: u32 = 128;

/// What spoils one record of a batch.
#[derive(Debug, Clone, Copy)]
enum Bad {
    KeyTooLarge,
    ReservedHeader,
}

fn record() -> impl Strategy<Value = Record> {
    (
        prop::option::of(vec(any::<u8>(), 0..8)),
        vec(any::<u8>(), 0..200),
    )
        .prop_map(|(key, value)| Record {
            key,
            value,
            headers: Vec::new(),
            timestamp_ms: None,
        })
}

/// Wakes the thread that blocks on a future.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to its end on this thread (the log crate has no runtime of its own).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

fn append(
    stream: &Stream,
    records: Vec<Record>,
    with_await: bool,
) -> Result<Vec<Position>, LogError> {
    let (mut append, unqueued) = stream.try_append_batch(records)?;
    if let Some(unqueued) = unqueued {
        unqueued.queue(stream, &mut append)?;
    }
    if with_await {
        block_on(append)
    } else {
        append.wait()
    }
}

fn check_batch(
    stream: &Stream,
    records: &[Record],
    positions: &[Position],
) -> Result<(), TestCaseError> {
    let n = stream.partition_count();
    prop_assert_eq!(positions.len(), records.len());
    let mut unkeyed_partition = None;
    let mut runs: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (i, (record, position)) in records.iter().zip(positions).enumerate() {
        let read = stream
            .read(position.partition, position.offset, 1, usize::MAX)
            .map_err(|e| TestCaseError::fail(format!("record {i}: {e}")))?;
        prop_assert_eq!(&read[0].key, &record.key, "record {}", i);
        prop_assert_eq!(&read[0].value, &record.value, "record {}", i);
        match &record.key {
            Some(key) => prop_assert_eq!(position.partition, partition_for_key(key, n)),
            None => {
                let p = *unkeyed_partition.get_or_insert(position.partition);
                prop_assert_eq!(position.partition, p, "unkeyed records share a partition");
            }
        }
        runs.entry(position.partition)
            .or_default()
            .push(position.offset);
    }
    for (partition, offsets) in runs {
        for pair in offsets.windows(2) {
            prop_assert_eq!(pair[1], pair[0] + 1, "partition {}: one run", partition);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES)
    ))]

    #[test]
    fn batch_appends_land_in_input_order_by_key(
        partitions in 1u32..=4,
        batches in vec((vec(record(), 1..24), any::<bool>()), 1..6),
    ) {
        let dir = SimDir::new();
        let log = dir.open().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(partitions))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (records, with_await) in batches {
            let positions = append(&stream, records.clone(), with_await)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_batch(&stream, &records, &positions)?;
        }
    }

    #[test]
    fn a_bad_record_is_named_by_its_input_index_and_nothing_is_appended(
        partitions in 1u32..=4,
        records in vec(record(), 1..24),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![Just(Bad::KeyTooLarge), Just(Bad::ReservedHeader)],
    ) {
        let dir = SimDir::new();
        let log = dir.open().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(partitions))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut records = records;
        let at = at.index(records.len());
        match bad {
            Bad::KeyTooLarge => records[at].key = Some(vec![b'k'; KEY_BYTES_MAX as usize + 1]),
            Bad::ReservedHeader => records[at].headers.push(("request-id".into(), b"x".to_vec())),
        }
        match (bad, stream.try_append_batch(records)) {
            (Bad::KeyTooLarge, Err(LogError::KeyTooLarge { index, .. }))
            | (Bad::ReservedHeader, Err(LogError::ReservedHeader { index, .. })) => {
                prop_assert_eq!(index, at);
            }
            (_, other) => {
                return Err(TestCaseError::fail(format!("{bad:?} at {at}: got {other:?}")));
            }
        }
        prop_assert_eq!(stream.record_count(), 0, "nothing appended");
    }
}
