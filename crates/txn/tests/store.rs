//! The transaction store as a whole: durability through the commit stream (reopen, power
//! loss, a failed fsync), commit request ids, bounded memory, limits and bad input.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::sync::Arc;

use logbook_log::sim::SimStorage;
use logbook_log::{FsyncPolicy, Log, LogOptions, RequestId};
use logbook_txn::{Isolation, KeyRange, TxnError, TxnOptions, TxnStore, TxnStoreOptions, limits};

const DIR: &str = "/data";

fn open_log(sim: &SimStorage) -> Log {
    Log::open_with(
        DIR,
        LogOptions {
            storage: Arc::new(sim.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap()
}

fn open(sim: &SimStorage, options: TxnStoreOptions) -> (Log, Arc<TxnStore>) {
    let log = open_log(sim);
    let store = TxnStore::open(&log, options).unwrap();
    (log, store)
}

fn ser() -> TxnOptions {
    TxnOptions::new(Isolation::Serializable)
}

fn value(store: &TxnStore, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v.value.to_vec()).unwrap())
}

#[test]
fn the_table_is_rebuilt_from_the_commit_stream_after_a_power_loss() {
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    for i in 0..50 {
        let mut t = store.begin(ser()).unwrap();
        t.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
        t.increment(b"count", 1).unwrap();
        if i % 10 == 9 {
            t.delete(format!("k{}", i - 1).as_bytes()).unwrap();
        }
        t.commit().unwrap();
    }
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    assert_eq!(value(&store, "count").as_deref(), Some("50"));
    assert_eq!(value(&store, "k0").as_deref(), Some("v0"));
    assert_eq!(value(&store, "k8"), None, "deleted by commit 9");
    assert_eq!(value(&store, "k49").as_deref(), Some("v49"));
    let rows = store.scan(&KeyRange::prefix(b"k"), 1000).unwrap();
    assert_eq!(rows.len(), 45);
    assert_eq!(store.durable_end(), 50);
}

#[test]
fn without_fsync_a_power_loss_loses_acknowledged_commits_which_the_seam_detects() {
    // The same workload as above under fsync `never`: the simulated power loss drops the
    // unsynced commit records, proving the durability test above would catch a missing
    // fsync in the commit path.
    let sim = SimStorage::new();
    let options = TxnStoreOptions {
        fsync: FsyncPolicy::Never,
        ..TxnStoreOptions::default()
    };
    let (log, store) = open(&sim, options.clone());
    for _ in 0..20 {
        let mut t = store.begin(ser()).unwrap();
        t.increment(b"count", 1).unwrap();
        t.commit().unwrap();
    }
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, options);
    assert_ne!(value(&store, "count").as_deref(), Some("20"));
}

#[test]
fn a_commit_is_all_or_nothing_across_a_power_loss_at_any_point() {
    // Torn writes on: a power loss may keep any prefix of an unsynced write. Whatever
    // survives, every commit is either wholly visible or not at all, and every
    // acknowledged one is there.
    for acked_before_loss in [0u64, 1, 3, 7] {
        let sim = SimStorage::new();
        sim.set_torn_writes(true);
        let (log, store) = open(&sim, TxnStoreOptions::default());
        let mut acked = 0;
        for i in 0..acked_before_loss {
            let mut t = store.begin(ser()).unwrap();
            // Each commit moves 1 from a to b and writes a marker: a + b == 0 always.
            t.increment(b"a", -1).unwrap();
            t.increment(b"b", 1).unwrap();
            t.put(format!("m{i}").as_bytes(), b"1").unwrap();
            t.commit().unwrap();
            acked += 1;
        }
        // One more commit whose fsync fails: written (maybe torn), never acknowledged.
        sim.fail_syncs_after(0);
        let mut t = store.begin(ser()).unwrap();
        t.increment(b"a", -1).unwrap();
        t.increment(b"b", 1).unwrap();
        t.put(b"unacked", b"1").unwrap();
        assert!(t.commit().is_err(), "the fsync failure is reported");
        assert!(
            matches!(store.begin(ser()), Err(TxnError::Poisoned)),
            "a failed commit poisons the store"
        );
        sim.power_loss();
        drop(store);
        drop(log);
        sim.clear_faults();
        let (_log, store) = open(&sim, TxnStoreOptions::default());
        let a: i64 = value(&store, "a").map_or(0, |v| v.parse().unwrap());
        let b: i64 = value(&store, "b").map_or(0, |v| v.parse().unwrap());
        assert_eq!(a + b, 0, "no commit is partly visible");
        assert!(b as u64 >= acked, "every acknowledged commit survived");
        for i in 0..acked {
            assert!(value(&store, &format!("m{i}")).is_some());
        }
        if value(&store, "unacked").is_some() {
            assert_eq!(
                b as u64,
                acked + 1,
                "the unacknowledged commit is all there or absent"
            );
        }
    }
}

#[test]
fn a_retried_commit_returns_the_original_outcome_and_applies_nothing() {
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    let id = RequestId::new("transfer-17").unwrap();
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"balance", 5).unwrap();
    let first = t.commit_with(Some(&id), None).unwrap();
    assert!(!first.duplicate);
    // The client lost the ack and runs the same transaction again (at a newer snapshot,
    // where its increment would resolve to 10): the original outcome, nothing applied.
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"balance", 5).unwrap();
    let retry = t.commit_with(Some(&id), None).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.offset, first.offset);
    assert_eq!(retry.incremented, first.incremented);
    assert_eq!(value(&store, "balance").as_deref(), Some("5"));
    // The id is remembered across a restart: it is rebuilt from the commit stream.
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"balance", 5).unwrap();
    let again = t.commit_with(Some(&id), None).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, first.offset);
    assert_eq!(value(&store, "balance").as_deref(), Some("5"));
    assert_eq!(
        store
            .stats()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

type Ops = Box<dyn FnOnce(&mut logbook_txn::Txn)>;

/// Commits `ops` in a new transaction at `isolation` with request id `id`.
fn commit_as(
    store: &Arc<TxnStore>,
    isolation: Isolation,
    id: &RequestId,
    ops: impl FnOnce(&mut logbook_txn::Txn),
) -> Result<logbook_txn::CommitOutcome, TxnError> {
    let mut t = store.begin(TxnOptions::new(isolation)).unwrap();
    ops(&mut t);
    t.commit_with(Some(id), None)
}

fn assert_id_conflict(r: Result<logbook_txn::CommitOutcome, TxnError>, id: &str, offset: u64) {
    match r {
        Err(TxnError::RequestIdConflict {
            request_id,
            offset: at,
        }) => {
            assert_eq!((request_id.as_str(), at), (id, Some(offset)));
        }
        other => panic!("expected request_id_conflict, got {other:?}"),
    }
}

#[test]
fn a_request_id_reused_by_a_different_transaction_is_a_conflict_and_commits_nothing() {
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    let ser = Isolation::Serializable;
    let id = RequestId::new("rid-1").unwrap();
    let first = commit_as(&store, ser, &id, |t| t.increment(b"c1", 1).unwrap()).unwrap();
    let offset = first.offset.unwrap();
    // The reviewer's case: another amount under the same id.
    let e = commit_as(&store, ser, &id, |t| t.increment(b"c1", 2).unwrap()).unwrap_err();
    assert_eq!(e.code(), "request_id_conflict");
    assert!(!e.is_retryable());
    assert_id_conflict(Err(e), "rid-1", offset);
    // Another key, another kind, an extra write, an extra lock, another isolation level.
    let variants: Vec<Ops> = vec![
        Box::new(|t| t.increment(b"c2", 1).unwrap()),
        Box::new(|t| t.put(b"c1", b"1").unwrap()),
        Box::new(|t| {
            t.increment(b"c1", 1).unwrap();
            t.put(b"other", b"x").unwrap();
        }),
        Box::new(|t| {
            t.get_for_update(b"c1").unwrap();
            t.increment(b"c1", 1).unwrap();
        }),
        Box::new(|_| {}),
    ];
    for ops in variants {
        assert_id_conflict(commit_as(&store, ser, &id, ops), "rid-1", offset);
    }
    assert_id_conflict(
        commit_as(&store, Isolation::Snapshot, &id, |t| {
            t.increment(b"c1", 1).unwrap();
        }),
        "rid-1",
        offset,
    );
    // The async path refuses it the same way.
    let mut t = store.begin(ser_opts()).unwrap();
    t.increment(b"c1", 2).unwrap();
    assert_id_conflict(block_on(t.commit_async(Some(&id), None)), "rid-1", offset);
    // Nothing was committed, and every refused transaction is closed.
    assert_eq!(store.durable_end(), offset + 1);
    assert_eq!(value(&store, "c1").as_deref(), Some("1"));
    assert_eq!(value(&store, "other"), None);
    assert_eq!(store.memory().open_txns, 0);
    assert_eq!(
        store
            .stats()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // A retry of the same transaction is still a duplicate; reads do not matter.
    let again = commit_as(&store, ser, &id, |t| {
        t.get(b"c1").unwrap();
        t.increment(b"c1", 1).unwrap();
    })
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, Some(offset));
    assert_eq!(again.incremented, vec![(b"c1".to_vec(), 1)]);
    // Other ids are unaffected.
    let other = RequestId::new("rid-2").unwrap();
    let o = commit_as(&store, ser, &other, |t| t.increment(b"c1", 2).unwrap()).unwrap();
    assert!(!o.duplicate);
    assert_eq!(value(&store, "c1").as_deref(), Some("3"));
    // The fingerprint is in the commit record: after a restart (the index rebuilt from
    // `_txn`) the same answers.
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    assert!(store.commit_record(offset).unwrap().intents.is_some());
    assert_id_conflict(
        commit_as(&store, ser, &id, |t| t.increment(b"c1", 2).unwrap()),
        "rid-1",
        offset,
    );
    let again = commit_as(&store, ser, &id, |t| t.increment(b"c1", 1).unwrap()).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, Some(offset));
    assert_eq!(value(&store, "c1").as_deref(), Some("3"));
    assert_eq!(store.durable_end(), offset + 2);
}

#[test]
fn a_commit_record_without_a_fingerprint_accepts_any_retry_of_its_request_id() {
    // A commit record of format version 1 (written before the fingerprint existed) in
    // `_txn`: its request id is still remembered, and any retry is a duplicate, as then.
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    drop(store);
    let old = logbook_txn::record::CommitRecord {
        isolation: Isolation::Serializable,
        snapshot: 0,
        request_id: Some("old-1".into()),
        traceparent: None,
        intents: None,
        read_dependent: false,
        writes: vec![(b"c1".to_vec(), logbook_txn::record::WriteOp::Incremented(1))],
        epoch: None,
    };
    let bytes = old.encode();
    assert_eq!(bytes[0], 1, "format version 1");
    log.stream("_txn")
        .unwrap()
        .append_to(0, &[logbook_log::Record::new(bytes)])
        .unwrap()
        .wait()
        .unwrap();
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    assert_eq!(store.commit_record(0).unwrap(), old);
    assert_eq!(value(&store, "c1").as_deref(), Some("1"));
    let id = RequestId::new("old-1").unwrap();
    let r = commit_as(&store, Isolation::Serializable, &id, |t| {
        t.increment(b"c1", 2).unwrap();
    })
    .unwrap();
    assert!(r.duplicate);
    assert_eq!(r.offset, Some(0));
    assert_eq!(r.incremented, vec![(b"c1".to_vec(), 1)]);
    assert_eq!(value(&store, "c1").as_deref(), Some("1"));
    assert_eq!(store.durable_end(), 1);
    // A new commit with a request id is written with its fingerprint (version 2); one
    // without a request id has nothing to compare and stays version 1.
    let id = RequestId::new("new-1").unwrap();
    let n = commit_as(&store, Isolation::Serializable, &id, |t| {
        t.increment(b"c1", 2).unwrap();
    })
    .unwrap();
    let rec = store.commit_record(n.offset.unwrap()).unwrap();
    assert!(rec.intents.is_some());
    let mut t = store.begin(ser_opts()).unwrap();
    t.put(b"k", b"1").unwrap();
    let plain = t.commit().unwrap();
    assert_eq!(
        store.commit_record(plain.offset.unwrap()).unwrap().intents,
        None
    );
}

#[test]
fn a_transaction_that_read_may_be_retried_with_other_writes() {
    // A read-modify-write re-run after its commit's acknowledgment was lost reads the
    // state its original produced and computes other writes: its request id alone
    // identifies it (the original read, so it is not compared), as the retry helper needs.
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    let id = RequestId::new("add-seat").unwrap();
    let add_seat = |store: &Arc<TxnStore>| {
        commit_as(store, Isolation::Serializable, &id, |t| {
            let seats: i64 = t.get(b"seats").unwrap().map_or(0, |v| {
                std::str::from_utf8(&v.value).unwrap().parse().unwrap()
            });
            t.put(b"seats", (seats + 1).to_string().as_bytes()).unwrap();
        })
    };
    let first = add_seat(&store).unwrap();
    assert!(!first.duplicate);
    let rec = store.commit_record(first.offset.unwrap()).unwrap();
    assert!(rec.read_dependent && rec.intents.is_some());
    let again = add_seat(&store).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, first.offset);
    assert_eq!(value(&store, "seats").as_deref(), Some("1"));
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let again = add_seat(&store).unwrap();
    assert!(again.duplicate);
    assert_eq!(value(&store, "seats").as_deref(), Some("1"));
    // A blind original is compared even when the retry reads.
    let blind = RequestId::new("blind").unwrap();
    let o = commit_as(&store, Isolation::Serializable, &blind, |t| {
        t.put(b"x", b"1").unwrap();
    })
    .unwrap();
    assert_id_conflict(
        commit_as(&store, Isolation::Serializable, &blind, |t| {
            t.get(b"x").unwrap();
            t.put(b"x", b"2").unwrap();
        }),
        "blind",
        o.offset.unwrap(),
    );
    assert_eq!(value(&store, "x").as_deref(), Some("1"));
}

fn ser_opts() -> TxnOptions {
    TxnOptions::new(Isolation::Serializable)
}

#[test]
fn an_aborted_attempt_leaves_its_request_id_free() {
    let sim = SimStorage::new();
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let id = RequestId::new("r1").unwrap();
    let mut a = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    let mut b = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    a.put(b"x", b"a").unwrap();
    b.put(b"x", b"b").unwrap();
    a.commit().unwrap();
    let e = b.commit_with(Some(&id), None).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let mut b = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    b.put(b"x", b"b").unwrap();
    let ok = b.commit_with(Some(&id), None).unwrap();
    assert!(!ok.duplicate, "the failed attempt did not claim the id");
    assert_eq!(value(&store, "x").as_deref(), Some("b"));
}

#[test]
fn a_long_transaction_is_expired_instead_of_pinning_memory() {
    let sim = SimStorage::new();
    let options = TxnStoreOptions {
        txn_newer_commits_max: 10,
        // No snapshot window: only open transactions may pin memory here.
        snapshot_window_commits: 0,
        ..TxnStoreOptions::default()
    };
    let (_log, store) = open(&sim, options);
    let mut old = store.begin(ser()).unwrap();
    old.get(b"k").unwrap();
    for i in 0..30 {
        let mut t = store.begin(ser()).unwrap();
        t.get(b"k").unwrap();
        t.put(b"k", i.to_string().as_bytes()).unwrap();
        t.commit().unwrap();
    }
    let m = store.memory();
    assert!(m.retained_summaries <= 11, "{m:?}");
    assert_eq!(m.open_txns, 0, "the old transaction was expired");
    match old.get(b"k") {
        Err(TxnError::TransactionTooOld {
            what: "newer_commits",
            limit: 10,
        }) => {}
        other => panic!("expected TransactionTooOld, got {other:?}"),
    }
    assert!(matches!(old.get(b"k"), Err(TxnError::Closed)));
}

#[test]
fn old_versions_are_collected_unless_a_snapshot_still_reads_them() {
    let sim = SimStorage::new();
    let options = TxnStoreOptions {
        // No snapshot window: only open transactions may pin versions here.
        snapshot_window_commits: 0,
        ..TxnStoreOptions::default()
    };
    let (_log, store) = open(&sim, options);
    let mut t = store.begin(ser()).unwrap();
    t.put(b"k", b"0").unwrap();
    t.commit().unwrap();
    let mut reader = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    for i in 1..=100 {
        let mut t = store.begin(ser()).unwrap();
        t.put(b"k", i.to_string().as_bytes()).unwrap();
        t.commit().unwrap();
    }
    assert_eq!(
        &*reader.get(b"k").unwrap().unwrap().value,
        b"0",
        "the snapshot still sees it"
    );
    assert!(store.memory().versions >= 2);
    reader.abort();
    let put = |k: &[u8], v: &[u8]| {
        let mut t = store.begin(ser()).unwrap();
        t.put(k, v).unwrap();
        t.commit().unwrap();
    };
    let delete = |k: &[u8]| {
        let mut t = store.begin(ser()).unwrap();
        t.delete(k).unwrap();
        t.commit().unwrap();
    };
    put(b"k", b"last");
    // The next commit collects what the last one overwrote: the newest durable version of
    // a key is kept until the version above it is durable (`TxnStore::get` reads there).
    put(b"filler", b"1");
    assert_eq!(store.memory().versions, 2, "{:?}", store.memory());
    // Deleted keys disappear once no snapshot can see them.
    delete(b"k");
    put(b"filler", b"2");
    assert_eq!(store.memory().keys, 1, "{:?}", store.memory());
}

#[test]
fn the_number_of_open_transactions_is_bounded() {
    let sim = SimStorage::new();
    let options = TxnStoreOptions {
        open_txns_max: 2,
        ..TxnStoreOptions::default()
    };
    let (_log, store) = open(&sim, options);
    let a = store.begin(ser()).unwrap();
    let _b = store.begin(ser()).unwrap();
    assert!(matches!(
        store.begin(ser()),
        Err(TxnError::TooManyOpenTransactions { max: 2 })
    ));
    a.abort();
    store.begin(ser()).unwrap();
}

#[test]
fn bad_input_is_refused_by_name_and_changes_nothing() {
    let sim = SimStorage::new();
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let mut t = store.begin(ser()).unwrap();
    t.put(b"n", b"\"text\"").unwrap();
    t.commit().unwrap();
    let before = store.durable_end();

    let mut t = store.begin(ser()).unwrap();
    let long_key = vec![b'k'; limits::KEY_BYTES_MAX + 1];
    assert!(matches!(
        t.get(&long_key),
        Err(TxnError::KeyTooLarge { .. })
    ));
    let big = vec![0u8; limits::VALUE_BYTES_MAX + 1];
    assert!(matches!(
        t.put(b"k", &big),
        Err(TxnError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        t.scan(&KeyRange::all(), limits::SCAN_ROWS_MAX + 1),
        Err(TxnError::TooMany {
            what: "scan rows",
            ..
        })
    ));
    t.increment(b"n", 1).unwrap();
    match t.commit() {
        Err(TxnError::NotAnInteger { key }) => assert_eq!(key, "n"),
        other => panic!("expected NotAnInteger, got {other:?}"),
    }
    let mut t = store.begin(ser()).unwrap();
    t.put(b"max", i64::MAX.to_string().as_bytes()).unwrap();
    t.commit().unwrap();
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"max", 1).unwrap();
    t.put(b"side-effect", b"1").unwrap();
    assert!(matches!(
        t.commit(),
        Err(TxnError::IncrementOverflow { .. })
    ));
    assert_eq!(
        value(&store, "side-effect"),
        None,
        "a failed commit writes nothing"
    );
    assert_eq!(store.durable_end(), before + 1);

    let mut ro = store.begin(ser().read_only()).unwrap();
    assert!(matches!(ro.put(b"k", b"v"), Err(TxnError::ReadOnly)));
    let mut t = store.begin(ser()).unwrap();
    t.put(b"k", b"v").unwrap();
    assert!(matches!(
        t.put_if_absent(b"k", b"w"),
        Err(TxnError::InvalidOperation { .. })
    ));
    let bad_trace = t.commit_with(None, Some("not-a-traceparent"));
    assert!(bad_trace.is_err());
    assert_eq!(value(&store, "k"), None);
    assert_eq!(
        store.memory().open_txns,
        1,
        "only the read-only transaction is open"
    );
}

#[test]
fn the_empty_key_is_a_key_like_any_other() {
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    let mut t = store.begin(ser()).unwrap();
    assert!(t.get(b"").unwrap().is_none());
    t.put(b"", b"1").unwrap();
    t.put(b"a", b"2").unwrap();
    t.commit().unwrap();
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"", 4).unwrap();
    t.commit().unwrap();
    assert_eq!(value(&store, "").as_deref(), Some("5"));
    // It sorts first, and the commit records replay it.
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let rows = store.scan(&KeyRange::all(), 10).unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|r| &r.key[..]).collect();
    assert_eq!(keys, [&b""[..], &b"a"[..]]);
    let mut t = store.begin(ser()).unwrap();
    t.delete(b"").unwrap();
    t.commit().unwrap();
    assert_eq!(value(&store, ""), None);
}

#[test]
fn atomic_operations_are_evaluated_at_commit() {
    let sim = SimStorage::new();
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    // put-if-absent: the second of two concurrent inserts fails by name.
    let mut a = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    let mut b = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    a.put_if_absent(b"user:1", b"alice").unwrap();
    b.put_if_absent(b"user:1", b"bob").unwrap();
    let v = a.commit().unwrap().offset.unwrap();
    assert!(matches!(b.commit(), Err(TxnError::KeyExists { version, .. }) if version == v));
    // compare-and-set on the version read.
    let mut t = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    let seen = t.get(b"user:1").unwrap().unwrap().version.unwrap();
    t.put_if_version(b"user:1", b"alice2", seen).unwrap();
    let mut other = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    other.put_if_version(b"user:1", b"mallory", seen).unwrap();
    t.commit().unwrap();
    assert!(matches!(
        other.commit(),
        Err(TxnError::VersionMismatch { expected, found: Some(_), .. }) if expected == seen
    ));
    // delete-if-version with the current version succeeds.
    let current = store.get(b"user:1").unwrap().unwrap().version.unwrap();
    let mut t = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    t.delete_if_version(b"user:1", current).unwrap();
    t.commit().unwrap();
    assert_eq!(value(&store, "user:1"), None);
    // Concurrent increments at snapshot isolation never conflict and both apply.
    let mut a = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    let mut b = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    a.increment(b"hits", 2).unwrap();
    b.increment(b"hits", 3).unwrap();
    assert_eq!(a.commit().unwrap().incremented, vec![(b"hits".to_vec(), 2)]);
    assert_eq!(b.commit().unwrap().incremented, vec![(b"hits".to_vec(), 5)]);
    // get_for_update makes a read-committed read-modify-write safe.
    let mut a = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    let mut b = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    let x: i64 = std::str::from_utf8(&a.get_for_update(b"hits").unwrap().unwrap().value)
        .unwrap()
        .parse()
        .unwrap();
    let y: i64 = std::str::from_utf8(&b.get_for_update(b"hits").unwrap().unwrap().value)
        .unwrap()
        .parse()
        .unwrap();
    a.put(b"hits", (x + 1).to_string().as_bytes()).unwrap();
    b.put(b"hits", (y + 1).to_string().as_bytes()).unwrap();
    a.commit().unwrap();
    let e = b.commit().unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(value(&store, "hits").as_deref(), Some("6"));
}

#[test]
fn a_read_only_serializable_transaction_on_a_safe_snapshot_never_aborts() {
    let sim = SimStorage::new();
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    let mut t = store.begin(ser()).unwrap();
    t.put(b"x", b"0").unwrap();
    t.put(b"y", b"0").unwrap();
    t.commit().unwrap();
    // A read-write transaction is open: the safe snapshot stays before anything it could
    // still make unsafe.
    let mut rw = store.begin(ser()).unwrap();
    rw.get(b"y").unwrap();
    let mut ro = store.begin(ser().read_only()).unwrap();
    assert!(ro.snapshot() <= rw.snapshot());
    let mut w = store.begin(ser()).unwrap();
    w.put(b"x", b"1").unwrap();
    w.commit().unwrap();
    rw.put(b"y", b"1").unwrap();
    rw.commit().unwrap();
    assert_eq!(&*ro.get(b"x").unwrap().unwrap().value, b"0");
    assert_eq!(&*ro.get(b"y").unwrap().unwrap().value, b"0");
    assert_eq!(ro.commit().unwrap().offset, None);
    // With no read-write transaction open, the safe snapshot is the newest state.
    let mut ro = store.begin(ser().read_only()).unwrap();
    assert_eq!(ro.snapshot(), store.durable_end());
    assert_eq!(&*ro.get(b"y").unwrap().unwrap().value, b"1");
}

/// Review r14e N1: a read-only `serializable` transaction at the newest snapshot (what a
/// caller that may write nothing begins) reads what a read-write one would — the newest
/// commit, though a read-write transaction is open — and keeps no summaries while open.
/// Its reads are still certified: as the `T1` of the read-only anomaly (Fekete et al.
/// 2004) it aborts; and once the commits after its snapshot have left the window, its
/// commit is `snapshot_too_old`, retryable. Within the window, one commits.
#[test]
fn a_read_only_transaction_at_the_newest_snapshot_keeps_no_history_and_is_certified() {
    let sim = SimStorage::new();
    let options = TxnStoreOptions {
        snapshot_window_commits: 3,
        ..TxnStoreOptions::default()
    };
    let (_log, store) = open(&sim, options);
    let newest = || ser().read_only_at_newest();
    let mut t = store.begin(ser()).unwrap();
    t.put(b"x", b"0").unwrap();
    t.put(b"y", b"0").unwrap();
    t.commit().unwrap();
    // T2, the pivot, reads both; T3 writes x and commits; T1 then reads both.
    let mut t2 = store.begin(ser()).unwrap();
    t2.get(b"x").unwrap();
    t2.get(b"y").unwrap();
    let mut t3 = store.begin(ser()).unwrap();
    t3.put(b"x", b"1").unwrap();
    t3.commit().unwrap();
    let mut t1 = store.begin(newest()).unwrap();
    assert_eq!(t1.snapshot(), store.durable_end(), "not a safe snapshot");
    assert_eq!(&*t1.get(b"x").unwrap().unwrap().value, b"1");
    assert_eq!(&*t1.get(b"y").unwrap().unwrap().value, b"0");
    assert!(matches!(t1.put(b"y", b"2"), Err(TxnError::ReadOnly)));
    t2.put(b"y", b"1").unwrap();
    t2.commit().unwrap();
    match t1.commit() {
        Err(e @ TxnError::SerializationFailure { .. }) => assert!(e.is_retryable()),
        other => panic!("T1 of the read-only anomaly committed: {other:?}"),
    }
    // Open while four commits pass it, it pins none of their summaries.
    let mut old = store.begin(newest()).unwrap();
    old.get(b"x").unwrap();
    for i in 0..4 {
        let mut t = store.begin(ser()).unwrap();
        t.get(b"k").unwrap();
        t.put(b"k", i.to_string().as_bytes()).unwrap();
        t.commit().unwrap();
    }
    let m = store.memory();
    assert!(m.retained_summaries <= 3, "the window's only: {m:?}");
    let mut recent = store.begin(newest()).unwrap();
    recent.get(b"k").unwrap();
    match old.commit() {
        Err(e @ TxnError::SnapshotTooOld { .. }) => assert!(e.is_retryable()),
        other => panic!("expected SnapshotTooOld, got {other:?}"),
    }
    assert_eq!(recent.commit().unwrap().offset, None);
    assert_eq!(store.memory().open_txns, 0);
}

/// Concurrent read-modify-write increments of one counter through the retry helper: the
/// counter must equal the number of acknowledged commits, with early lock release on and
/// off (off, snapshots trail the newest commit by the commits awaiting their fsync, and the
/// certifier must still see those).
fn counter_loses_no_update(isolation: Isolation, early_lock_release: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let options = TxnStoreOptions {
        early_lock_release,
        ..TxnStoreOptions::default()
    };
    let store = TxnStore::open(&log, options).unwrap();
    let policy = logbook_txn::RetryPolicy {
        max_attempts: 1000,
        ..logbook_txn::RetryPolicy::default()
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    logbook_txn::retry(&store, TxnOptions::new(isolation), &policy, None, |t| {
                        let n: i64 = t.get(b"counter")?.map_or(0, |v| {
                            std::str::from_utf8(&v.value).unwrap().parse().unwrap()
                        });
                        t.put(b"counter", (n + 1).to_string().as_bytes())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(value(&store, "counter").as_deref(), Some("400"));
}

#[test]
fn read_modify_write_loses_no_update_with_early_lock_release() {
    counter_loses_no_update(Isolation::Serializable, true);
    counter_loses_no_update(Isolation::Snapshot, true);
}

#[test]
fn read_modify_write_loses_no_update_without_early_lock_release() {
    counter_loses_no_update(Isolation::Serializable, false);
    counter_loses_no_update(Isolation::Snapshot, false);
}

/// Runs a future to completion on this thread (the test needs no async runtime).
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
fn an_async_commit_resolves_once_durable_and_deduplicates_like_a_blocking_one() {
    let sim = SimStorage::new();
    let (log, store) = open(&sim, TxnStoreOptions::default());
    let id = RequestId::new("async-1").unwrap();
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"n", 7).unwrap();
    let pending = t.commit_async(Some(&id), None);
    let first = block_on(pending).unwrap();
    assert_eq!(first.incremented, vec![(b"n".to_vec(), 7)]);
    assert!(
        store.durable_end() > first.offset.unwrap(),
        "resolved only once durable"
    );
    let mut t = store.begin(ser()).unwrap();
    t.increment(b"n", 7).unwrap();
    let again = block_on(t.commit_async(Some(&id), None)).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, first.offset);
    // A conflict is reported by the future, and leaves nothing behind.
    let mut a = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    let mut b = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    a.put(b"x", b"1").unwrap();
    b.put(b"x", b"2").unwrap();
    block_on(a.commit_async(None, None)).unwrap();
    assert!(
        block_on(b.commit_async(None, None))
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(value(&store, "x").as_deref(), Some("1"));
    sim.power_loss();
    drop(store);
    drop(log);
    let (_log, store) = open(&sim, TxnStoreOptions::default());
    assert_eq!(value(&store, "n").as_deref(), Some("7"));
}
