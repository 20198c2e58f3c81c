//! The embedded log through the `LogBackend` seam (docs/decisions/0011): the seam's
//! conformance suite (`conformance/`, which the JetStream backend runs too), and what only the
//! embedded log shows — what an acknowledgment guarantees per fsync policy, and a writer whose
//! idea of the partition's end is stale storing nothing even in the same group commit as the
//! append that moved the end.

mod common;
mod conformance;

use std::sync::Arc;

use common::gated::{GatedStorage, open};
use conformance::Subject;
use logbook_log::{
    AckGuarantee, AppendCondition, FsyncPolicy, LogBackend, LogError, Record, StreamConfig,
};

fn backend() -> (GatedStorage, Arc<dyn LogBackend>) {
    let storage = GatedStorage::new();
    let log: Arc<dyn LogBackend> = Arc::new(open(&storage));
    (storage, log)
}

/// The embedded log under the conformance suite, with the default settings (fsync `always`).
fn subject() -> (GatedStorage, Subject) {
    let (storage, backend) = backend();
    let subject = Subject {
        backend,
        config: StreamConfig::default(),
    };
    (storage, subject)
}

#[test]
fn conformance_reports_its_ack_guarantee() {
    let (_storage, s) = subject();
    conformance::reports_its_ack_guarantee(&s, AckGuarantee::local(FsyncPolicy::Always));
}

#[test]
fn conformance_a_stale_expected_end_stores_nothing() {
    let (_storage, s) = subject();
    conformance::a_stale_expected_end_stores_nothing(&s);
}

#[test]
fn conformance_of_two_racing_appends_expecting_one_end_one_is_stored() {
    let (_storage, s) = subject();
    conformance::of_two_racing_appends_expecting_one_end_one_is_stored(&s);
}

#[test]
fn conformance_chained_appends_sent_without_waiting_are_all_stored_in_order() {
    let (_storage, s) = subject();
    conformance::chained_appends_sent_without_waiting_are_all_stored_in_order(&s);
}

#[test]
fn conformance_appends_reads_and_waits() {
    let (_storage, s) = subject();
    conformance::appends_reads_and_waits(&s);
}

#[test]
fn conformance_reads_continue_from_the_record_after_the_last_one_read() {
    let (_storage, s) = subject();
    conformance::reads_continue_from_the_record_after_the_last_one_read(&s);
}

#[test]
fn conformance_create_is_idempotent_and_a_new_incarnation_follows_a_drop() {
    let (_storage, s) = subject();
    conformance::create_is_idempotent_and_a_new_incarnation_follows_a_drop(&s);
}

#[test]
fn conformance_waiters_see_the_next_append() {
    let (_storage, s) = subject();
    conformance::waiters_see_the_next_append(&s);
}

#[test]
fn conformance_bad_input_is_refused_and_changes_nothing() {
    let (_storage, s) = subject();
    conformance::bad_input_is_refused_and_changes_nothing(&s);
}

#[test]
fn embedded_offsets_are_dense() {
    let (_storage, s) = subject();
    let stream = s.open("dense", 1);
    let p = stream.partition(0).unwrap();
    for (expected, values) in [(0, &["a", "b"][..]), (2, &["c"])] {
        let records: Vec<Record> = values.iter().map(|v| Record::new(*v)).collect();
        let ack = p
            .append_batch(&records, AppendCondition::EndOffset(expected))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(ack.base_offset, expected);
    }
    assert_eq!(p.end_offset(), 3);
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
fn of_two_appends_expecting_one_end_in_one_group_exactly_the_first_is_stored() {
    let (storage, s) = subject();
    let stream = s.open("s", 1);
    let p = stream.partition(0).unwrap();
    // The writer takes the first append and waits in its fsync; the next three queue behind
    // it and are written as one group once the gate opens.
    storage.gate.hold();
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
    storage.gate.release();
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
