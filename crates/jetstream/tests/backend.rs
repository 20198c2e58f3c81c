//! [`JetStreamBackend`] behind the `LogBackend` seam, against real nats-server processes: the
//! seam's conformance suite (shared with the embedded log, `crates/log/tests/conformance`),
//! what only this backend shows (gapped offsets, refused settings, its limits), and the catalog
//! shared by two backends on one NATS cluster. Each test starts its own servers.

#![expect(
    clippy::expect_used,
    reason = "helpers of tests: a panic is the failure report"
)]

mod common;
#[path = "../../log/tests/conformance/mod.rs"]
mod conformance;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterSpec};
use conformance::Subject;
use logbook_jetstream::{BackendSettings, JetStreamBackend, PartitionSettings};
use logbook_log::{
    AckGuarantee, AppendCondition, FsyncPolicy, LogBackend, LogError, Record, StreamConfig,
};

/// How long a change made through one node may take to show on another (it is followed
/// through a subscription, with a 2 s poll as a fallback): a bound, not an expectation.
const PROPAGATION: Duration = Duration::from_secs(30);

fn start(spec: ClusterSpec) -> Cluster {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to start the cluster")
        .block_on(Cluster::start(spec))
}

/// Settings for a backend on `urls` whose streams have `replicas` replicas.
fn settings(cluster: &Cluster, urls: Vec<String>, replicas: u32) -> BackendSettings {
    BackendSettings {
        partitions: PartitionSettings {
            replicas,
            ..PartitionSettings::default()
        },
        monitor_urls: cluster.nats_monitor_urls(),
        retry_ms: 30_000,
        ..BackendSettings::new(urls)
    }
}

/// One nats-server, R1 streams, fsync `never` (what Debian's nats-server 2.9 honours).
fn single() -> (Cluster, Subject) {
    single_with(ClusterSpec {
        nats: 1,
        ..ClusterSpec::default()
    })
}

fn single_with(spec: ClusterSpec) -> (Cluster, Subject) {
    let cluster = start(spec);
    let backend = JetStreamBackend::connect(settings(&cluster, cluster.nats_urls(), 1))
        .expect("connect the backend");
    let subject = Subject {
        backend: Arc::new(backend),
        config: StreamConfig {
            fsync: FsyncPolicy::Never,
            ..StreamConfig::default()
        },
    };
    (cluster, subject)
}

#[test]
fn conformance_reports_its_ack_guarantee() {
    let (_cluster, s) = single();
    // Debian's nats-server 2.9.10: replicated (here to the one replica), never fsynced.
    conformance::reports_its_ack_guarantee(
        &s,
        AckGuarantee {
            replicas: 1,
            fsynced: false,
        },
    );
}

#[test]
fn conformance_a_stale_expected_end_stores_nothing() {
    let (_cluster, s) = single();
    conformance::a_stale_expected_end_stores_nothing(&s);
}

#[test]
fn conformance_of_two_racing_appends_expecting_one_end_one_is_stored() {
    let (_cluster, s) = single();
    conformance::of_two_racing_appends_expecting_one_end_one_is_stored(&s);
}

#[test]
fn conformance_chained_appends_sent_without_waiting_are_all_stored_in_order() {
    let (_cluster, s) = single();
    conformance::chained_appends_sent_without_waiting_are_all_stored_in_order(&s);
}

/// The chain on a 3-server cluster with R3 streams, where an append is a Raft proposal of
/// the stream's leader and the client may be connected to another server: what the
/// certifier's leader does on the development cluster.
#[test]
fn chained_appends_are_all_stored_in_order_on_a_replicated_stream() {
    let cluster = start(ClusterSpec {
        nats: 3,
        ..ClusterSpec::default()
    });
    let backend = JetStreamBackend::connect(settings(&cluster, cluster.nats_urls(), 3))
        .expect("connect the backend");
    let s = Subject {
        backend: Arc::new(backend),
        config: StreamConfig {
            fsync: FsyncPolicy::Never,
            ..StreamConfig::default()
        },
    };
    conformance::chained_appends_sent_without_waiting_are_all_stored_in_order(&s);
}

#[test]
fn conformance_appends_reads_and_waits() {
    let (_cluster, s) = single();
    conformance::appends_reads_and_waits(&s);
}

#[test]
fn conformance_reads_continue_from_the_record_after_the_last_one_read() {
    let (_cluster, s) = single();
    conformance::reads_continue_from_the_record_after_the_last_one_read(&s);
}

#[test]
fn conformance_create_is_idempotent_and_a_new_incarnation_follows_a_drop() {
    let (_cluster, s) = single();
    conformance::create_is_idempotent_and_a_new_incarnation_follows_a_drop(&s);
}

#[test]
fn conformance_waiters_see_the_next_append() {
    let (_cluster, s) = single();
    conformance::waiters_see_the_next_append(&s);
}

#[test]
fn conformance_bad_input_is_refused_and_changes_nothing() {
    let (_cluster, s) = single();
    conformance::bad_input_is_refused_and_changes_nothing(&s);
}

#[test]
fn offsets_follow_the_sequence_mapping_and_an_end_that_is_not_one_is_a_mismatch() {
    let (_cluster, s) = single();
    let stream = s.open("gaps", 1);
    let p = stream.partition(0).unwrap();
    let a = p
        .append_batch(
            &[Record::new("a0"), Record::new("a1")],
            AppendCondition::EndOffset(0),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((a.base_offset, p.end_offset()), (0, 1 << 16));
    let b = p
        .append_batch(&[Record::new("b0")], AppendCondition::EndOffset(1 << 16))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((b.base_offset, p.end_offset()), (1 << 16, 2 << 16));
    // Offset 2 (dense counting) is not where this partition can end: refused, nothing stored.
    match p
        .append_batch(&[Record::new("x")], AppendCondition::EndOffset(3))
        .unwrap()
        .wait()
    {
        Err(LogError::EndOffsetMismatch {
            expected: 3,
            actual,
            ..
        }) => assert_eq!(actual, 2 << 16),
        other => panic!("expected EndOffsetMismatch, got {other:?}"),
    }
    assert_eq!(conformance::read_all(p, 10).len(), 3);
}

#[test]
fn settings_the_cluster_cannot_honour_are_refused_by_name() {
    let (_cluster, s) = single();
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval { interval_ms: 100 },
    ] {
        let config = StreamConfig {
            fsync,
            ..StreamConfig::default()
        };
        match s.backend.create_stream("durable", config) {
            Err(LogError::InvalidConfig { field: "fsync", .. }) => {}
            other => panic!("fsync {fsync}: expected InvalidConfig(fsync), got {other:?}"),
        }
    }
    let retained = StreamConfig {
        retention_bytes: Some(1 << 20),
        ..s.config(1)
    };
    assert!(matches!(
        s.backend.create_stream("retained", retained),
        Err(LogError::InvalidConfig {
            field: "retention_bytes",
            ..
        })
    ));
    assert!(s.backend.stream_names().is_empty(), "nothing created");
}

#[test]
fn batches_one_message_cannot_carry_are_refused_before_sending() {
    let (_cluster, s) = single_with(ClusterSpec {
        nats: 1,
        max_payload: 64 * 1024,
        ..ClusterSpec::default()
    });
    let stream = s.open("big", 1);
    let p = stream.partition(0).unwrap();
    let large = Record::new(vec![b'x'; 100 * 1024]);
    match p.append_batch(std::slice::from_ref(&large), AppendCondition::Always) {
        Err(LogError::BatchTooLarge { bytes, max }) => {
            assert_eq!(max, 64 * 1024, "the server's max_payload");
            assert!(bytes > 100 * 1024);
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert!(matches!(
        stream.append_batch(vec![large]),
        Err(LogError::BatchTooLarge { .. })
    ));
    let many: Vec<Record> = (0..65_537).map(|_| Record::new("")).collect();
    assert!(matches!(
        p.append_batch(&many, AppendCondition::Always),
        Err(LogError::BatchTooManyRecords {
            count: 65_537,
            max: 65_536
        })
    ));
    assert!(conformance::read_all(p, 10).is_empty(), "nothing stored");
}

/// A wait on a partition's end ends at its own timeout even while the stream's leader
/// answers nothing (stopped, as during an election): the connection's request timeout is ten
/// minutes here, so a poll of the leader not bounded by the wait's deadline would hold this
/// test that long. Once the server answers again, so does the partition.
#[test]
fn a_wait_ends_at_its_own_deadline_while_the_leader_answers_nothing() {
    let cluster = start(ClusterSpec {
        nats: 1,
        ..ClusterSpec::default()
    });
    let mut s = settings(&cluster, cluster.nats_urls(), 1);
    s.connect.request_timeout_ms = 600_000;
    let backend = JetStreamBackend::connect(s).expect("connect the backend");
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::default()
    };
    let stream = backend.create_stream("silent", config).expect("create");
    let partition = stream.partition(0).expect("partition 0");
    let end = partition.end_offset();
    cluster.signal_nats("n1", "STOP");
    let seen = partition.wait_end_offset_above(end, Duration::from_millis(300));
    cluster.signal_nats("n1", "CONT");
    assert_eq!(seen, end, "nothing was appended");
    assert_eq!(partition.latest_end_offset().expect("answered again"), end);
}

/// The records of `stream` (every partition), as values.
fn all_values(stream: &dyn logbook_log::LogStream) -> Vec<String> {
    (0..stream.partition_count())
        .flat_map(|p| conformance::read_all(stream.partition(p).expect("partition"), 1000))
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

/// An append with a request id through node A, retried through node B (a second backend
/// with its own index) within JetStream's duplicate window, and through node C after that
/// window has passed (its index, read from the log, answers): a duplicate with A's
/// positions every time, the records stored once; the same id with other records is a
/// conflict on any node, and changes nothing.
#[test]
fn an_append_with_a_request_id_is_stored_once_whichever_node_a_retry_reaches() {
    let cluster = start(ClusterSpec {
        nats: 1,
        ..ClusterSpec::default()
    });
    let node = || -> Arc<dyn LogBackend> {
        let mut s = settings(&cluster, cluster.nats_urls(), 1);
        // Short, so that a retry beyond it is one this test can wait for.
        s.partitions.duplicate_window_ms = 1_000;
        Arc::new(JetStreamBackend::connect(s).expect("connect a node"))
    };
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        partitions: 2,
        ..StreamConfig::default()
    };
    let (a, b) = (node(), node());
    let on_a = a.create_stream("ids", config).expect("create");
    let on_b = b.stream("ids").expect("open on B");
    let id = logbook_log::RequestId::new("order 17").expect("an id");
    // Keys in both partitions (two shares) and an unkeyed record.
    let records = || -> Vec<Record> {
        ["x-0", "x-8", "x-9"]
            .iter()
            .map(|k| Record::keyed(*k, format!("v-{k}")))
            .chain([Record::new("v-unkeyed")])
            .collect()
    };
    let first = on_a
        .clone()
        .append_with_id(&id, None, records())
        .and_then(|p| p.wait())
        .expect("the original");
    assert!(!first.duplicate);
    let partitions: std::collections::BTreeSet<u32> =
        first.positions.iter().map(|p| p.partition).collect();
    assert_eq!(partitions.len(), 2, "two shares: {first:?}");

    // A retry through `stream` is a duplicate at the original's positions; the id with
    // another body is a conflict there.
    let retried_on = |stream: &Arc<dyn logbook_log::LogStream>, node: &str| {
        let retry = stream
            .clone()
            .append_with_id(&id, None, records())
            .and_then(|p| p.wait())
            .unwrap_or_else(|e| panic!("a retry through {node}: {e}"));
        assert!(retry.duplicate, "{node}: {retry:?}");
        assert_eq!(retry.positions, first.positions, "{node}");
        let other = vec![Record::keyed("x-0", "another body")];
        assert!(matches!(
            stream.clone().append_with_id(&id, None, other),
            Err(LogError::RequestIdConflict { .. })
        ));
    };
    retried_on(&on_b, "B");

    // Past the duplicate window: a message id stored after the original is accepted again
    // once JetStream has forgotten it (polled, bounded), so the original's is forgotten too.
    forgotten_after_window(&cluster, on_a.incarnation());
    let c = node();
    let on_c = c.stream("ids").expect("open on C");
    retried_on(&on_c, "C");
    let mut stored = all_values(&*on_c);
    stored.retain(|v| v != "probe");
    stored.sort();
    assert_eq!(stored, ["v-unkeyed", "v-x-0", "v-x-8", "v-x-9"]);
}

/// Within the duplicate window, a node whose index is fresh but has not read the original
/// (it caught up just before the original was appended elsewhere) publishes the retry: JetStream
/// answers it as a duplicate, and the node reads the original back — the same records are a
/// duplicate at the original's positions, other records under that id a conflict.
#[test]
fn within_the_window_a_retry_is_checked_against_the_original_read_back() {
    let cluster = start(ClusterSpec {
        nats: 1,
        ..ClusterSpec::default()
    });
    let node = || -> Arc<dyn LogBackend> {
        Arc::new(
            JetStreamBackend::connect(settings(&cluster, cluster.nats_urls(), 1))
                .expect("connect a node"),
        )
    };
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::default()
    };
    let (a, b) = (node(), node());
    let on_a = a.create_stream("window", config).expect("create");
    let on_b = b.stream("window").expect("open on B");
    let append = |stream: &Arc<dyn logbook_log::LogStream>, id: &str, value: &str| {
        let id = logbook_log::RequestId::new(id).expect("an id");
        stream
            .clone()
            .append_with_id(&id, None, vec![Record::keyed("k", value)])
            .and_then(|p| p.wait())
    };
    // B's index catches up now, and stays fresh (a quarter of the 2-minute window).
    assert!(!append(&on_b, "warm-up", "w").expect("warm-up").duplicate);
    let first = append(&on_a, "order 18", "v").expect("the original");
    let retry = append(&on_b, "order 18", "v").expect("a retry through B");
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.positions, first.positions);
    assert!(matches!(
        append(&on_b, "order 18", "another value"),
        Err(LogError::RequestIdConflict { .. })
    ));
    let stored = all_values(&*on_b);
    assert_eq!(stored, ["w", "v"], "stored once");
}

/// Waits until JetStream's duplicate window has passed for every message stored so far in
/// partition 0 of stream `ids` (incarnation `incarnation`): publishes a probe message id
/// there, then again until it is no longer answered as a duplicate (bounded by
/// [`PROPAGATION`]). The probe is an empty batch without a request id.
fn forgotten_after_window(cluster: &Cluster, incarnation: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let log = logbook_jetstream::JetStreamLog::connect(
            &logbook_jetstream::ConnectSettings::new(cluster.nats_urls()),
        )
        .await
        .expect("connect");
        let settings = PartitionSettings {
            replicas: 1,
            duplicate_window_ms: 1_000,
            max_age_ms: None,
        };
        let partition = log
            .create_partition(
                &logbook_jetstream::PartitionRef::new("ids", incarnation, 0),
                &settings,
            )
            .await
            .expect("the partition's JetStream stream");
        let batch = logbook_log::format::encode_batch(&[Record::new("probe")], 0).expect("batch");
        let options = logbook_jetstream::AppendOptions {
            expected_last_sequence: None,
            message_id: Some("probe".into()),
        };
        let deadline = Instant::now() + PROPAGATION;
        let mut first = true;
        loop {
            let appended = partition.append(&batch, &options).await.expect("probe");
            if !first && !appended.duplicate {
                return;
            }
            first = false;
            assert!(
                Instant::now() < deadline,
                "JetStream never forgot the probe's id"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Polls `f` until it returns `Some`, for up to [`PROPAGATION`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PROPAGATION:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stream_created_through_one_node_is_read_through_another() {
    let cluster = start(ClusterSpec::default());
    let urls = cluster.nats_urls();
    let connect = |url: &str| -> Arc<dyn LogBackend> {
        Arc::new(
            JetStreamBackend::connect(settings(&cluster, vec![url.to_string()], 3))
                .expect("connect"),
        )
    };
    let (a, b) = (connect(&urls[0]), connect(&urls[1]));
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::with_partitions(2)
    };
    let on_a = a.create_stream("orders.eu", config.clone()).unwrap();
    assert_eq!(
        on_a.ack_guarantee(),
        AckGuarantee {
            replicas: 3,
            fsynced: false
        }
    );
    let positions = on_a
        .append_batch(vec![Record::keyed("c-7", "1"), Record::keyed("c-7", "2")])
        .unwrap()
        .wait()
        .unwrap();

    // B finds the stream by name (its catalog is read on a miss) with the same incarnation.
    let on_b = b.stream("orders.eu").unwrap();
    assert_eq!(on_b.incarnation(), on_a.incarnation());
    assert_eq!(on_b.config(), config);
    assert_eq!(b.stream_names(), ["orders.eu"]);
    let p = on_b.partition(positions[0].partition).unwrap();
    assert!(p.wait_end_offset_above(positions[1].offset, PROPAGATION) > positions[1].offset);
    let read = p.read(positions[0].offset, 10, 1 << 20).unwrap();
    let values: Vec<&[u8]> = read.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(values, [b"1", b"2"]);
    assert_eq!(
        read[1].offset, positions[1].offset,
        "one offset on every node"
    );
    // Creating it through B with the same settings is the same stream.
    assert_eq!(
        b.create_stream("orders.eu", config.clone())
            .unwrap()
            .incarnation(),
        on_a.incarnation()
    );

    // Dropped through A: B's handle refuses appends once B has followed the catalog.
    a.drop_stream("orders.eu").unwrap();
    eventually("B's handle closed", || {
        let outcome = p
            .append_batch(&[Record::new("late")], AppendCondition::Always)
            .and_then(|c| c.wait());
        matches!(outcome, Err(LogError::Closed)).then_some(())
    });
    assert!(matches!(
        b.stream("orders.eu"),
        Err(LogError::UnknownStream { .. })
    ));
    // Created again through B: a new incarnation, the same on A.
    let again = b.create_stream("orders.eu", config).unwrap();
    assert_ne!(again.incarnation(), on_a.incarnation());
    assert_eq!(
        a.stream("orders.eu").unwrap().incarnation(),
        again.incarnation()
    );
}

#[test]
fn two_nodes_creating_one_name_at_once_agree_on_it() {
    let cluster = start(ClusterSpec::default());
    let urls = cluster.nats_urls();
    let backends: Vec<Arc<dyn LogBackend>> = urls
        .iter()
        .map(|url| {
            Arc::new(
                JetStreamBackend::connect(settings(&cluster, vec![url.clone()], 3))
                    .expect("connect"),
            ) as Arc<dyn LogBackend>
        })
        .collect();
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::with_partitions(1)
    };
    let incarnations: Vec<u64> = std::thread::scope(|scope| {
        let creators: Vec<_> = backends
            .iter()
            .map(|b| {
                let config = config.clone();
                scope.spawn(move || b.create_stream("shared", config).unwrap().incarnation())
            })
            .collect();
        creators.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(
        incarnations.iter().all(|i| *i == incarnations[0]),
        "{incarnations:?}"
    );
    for b in &backends {
        assert_eq!(b.stream_names(), ["shared"]);
    }
}

/// JetStream API requests the cluster's servers have answered, from their `/varz`.
fn api_requests(cluster: &Cluster) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to ask the servers");
    cluster
        .nats_monitor_urls()
        .iter()
        .map(|url| {
            let varz = rt
                .block_on(logbook_jetstream::monitor::get_json(
                    url,
                    "/varz",
                    Duration::from_secs(10),
                ))
                .expect("the server's /varz");
            varz["jetstream"]["stats"]["api"]["total"]
                .as_u64()
                .expect("/varz counts JetStream API requests")
        })
        .sum()
}

/// A wait on an idle partition does not poll the stream's state: the partition's watch wakes
/// it when another node appends. (Waits polled every 2 to 100 ms: on an idle cluster each
/// follower, view and registry of every node asked ten or more times a second.)
#[test]
fn an_idle_wait_is_woken_by_the_watch_not_by_polling() {
    let cluster = start(ClusterSpec::default());
    let urls = cluster.nats_urls();
    let connect = |url: &str| {
        JetStreamBackend::connect(settings(&cluster, vec![url.to_string()], 3)).expect("connect")
    };
    let (a, b) = (connect(&urls[0]), connect(&urls[1]));
    let config = StreamConfig {
        fsync: FsyncPolicy::Never,
        ..StreamConfig::with_partitions(1)
    };
    let on_a = a.create_stream("idle", config).unwrap();
    let on_b = b.stream("idle").unwrap();
    let waiting = on_b.partition(0).unwrap();
    // The first wait starts the watch; by the second, it delivers.
    let end = waiting.end_offset();
    assert_eq!(
        waiting.wait_end_offset_above(end, Duration::from_secs(2)),
        end
    );

    let before = api_requests(&cluster);
    let idle = Duration::from_secs(3);
    assert_eq!(
        waiting.wait_end_offset_above(end, idle),
        end,
        "nothing appended"
    );
    let asked = api_requests(&cluster) - before;
    // At most one state request a second for the wait, plus each backend's catalog poll
    // (one every 2 s) and the varz requests' own neighbours: far below a poll's 30 or more.
    assert!(
        asked <= 12,
        "{asked} JetStream API requests while one wait was idle for {idle:?}"
    );

    std::thread::scope(|s| {
        let woken = s.spawn(|| waiting.wait_end_offset_above(end, PROPAGATION));
        on_a.partition(0)
            .unwrap()
            .append_batch(&[Record::new("wake")], AppendCondition::Always)
            .unwrap()
            .wait()
            .unwrap();
        assert!(
            woken.join().unwrap() > end,
            "the append through A woke B's wait"
        );
    });
}
