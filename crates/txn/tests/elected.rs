//! The store on a cluster's commit stream: followers derive the table and refuse commits;
//! a leader appends its epoch first and stamps every commit; a deposed leader's append is
//! refused at storage (fenced) and poisons it; replay ignores a stale epoch's commit.
//! Two stores on one embedded log stand for two nodes on one replicated `_txn`.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use logbook_log::{AppendCondition, Log, LogBackend, Record};
use logbook_txn::record::{CommitRecord, WriteOp};
use logbook_txn::{Isolation, TxnError, TxnOptions, TxnStore, TxnStoreOptions};

fn elected() -> TxnStoreOptions {
    TxnStoreOptions {
        elected: true,
        ..TxnStoreOptions::default()
    }
}

fn put(store: &Arc<TxnStore>, key: &str, value: &str) -> Result<u64, TxnError> {
    let mut t = store.begin(TxnOptions::new(Isolation::Serializable))?;
    t.put(key.as_bytes(), value.as_bytes())?;
    Ok(t.commit()?.offset.unwrap())
}

fn value(store: &TxnStore, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v.value.to_vec()).unwrap())
}

#[test]
fn a_deposed_leader_is_fenced_at_the_log_and_its_commit_is_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let old = TxnStore::open(&log, elected()).unwrap();
    // A follower certifies nothing.
    assert!(matches!(put(&old, "k", "0"), Err(TxnError::NotLeader)));
    old.lead(7, "a").unwrap();
    assert_eq!(old.leading(), Some(7));
    let first = put(&old, "k", "\"a\"").unwrap();
    assert_eq!(
        first, 1,
        "the epoch record is position 0, the commit position 1"
    );

    // A newer leader replays, appends its epoch and commits.
    let new = TxnStore::open(&log, elected()).unwrap();
    assert_eq!(value(&new, "k").as_deref(), Some("\"a\""));
    assert!(
        matches!(new.lead(7, "b"), Err(TxnError::Fenced { .. })),
        "a token only grows"
    );
    new.lead(9, "b").unwrap();
    // The old leader still believes it leads: its next append names a stale end.
    let refused = put(&old, "k", "\"stale\"");
    assert!(
        matches!(refused, Err(TxnError::Fenced { epoch: 7, .. })),
        "{refused:?}"
    );
    assert!(
        old.is_poisoned(),
        "a fenced leader refuses everything from then on"
    );
    put(&new, "k", "\"b\"").unwrap();

    // A follower sees the new leader's commit and nothing of the refused one.
    let follower = TxnStore::open(&log, elected()).unwrap();
    assert_eq!(value(&follower, "k").as_deref(), Some("\"b\""));
    let at = put(&new, "k2", "1").unwrap();
    assert_eq!(
        follower.follow_to(at + 1, Duration::from_secs(5)).unwrap(),
        at + 1
    );
    assert_eq!(value(&follower, "k2").as_deref(), Some("1"));
    let ahead = follower.follow_to(at + 5, Duration::from_millis(1));
    assert!(
        matches!(ahead, Err(TxnError::SnapshotAhead { .. })),
        "{ahead:?}"
    );
}

#[test]
fn replay_ignores_a_commit_of_an_older_epoch_after_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<Log> = Arc::new(Log::open(dir.path()).unwrap());
    let leader = TxnStore::open(&*log, elected()).unwrap();
    leader.lead(3, "a").unwrap();
    put(&leader, "k", "\"kept\"").unwrap();
    let newer = TxnStore::open(&*log, elected()).unwrap();
    newer.lead(5, "b").unwrap();
    // A record storage should have refused, written past the precondition: epoch 3 after 5.
    let stale = CommitRecord {
        isolation: Isolation::Serializable,
        snapshot: 0,
        request_id: Some("r-stale".into()),
        traceparent: None,
        intents: None,
        read_dependent: false,
        writes: vec![(b"k".to_vec(), WriteOp::Put(b"\"stale\"".to_vec()))],
        epoch: Some(3),
    };
    let txn = LogBackend::stream(&*log, "_txn").unwrap();
    txn.partition(0)
        .unwrap()
        .append_batch(&[Record::new(stale.encode())], AppendCondition::Always)
        .unwrap()
        .wait()
        .unwrap();
    let replayed = TxnStore::open(&*log, elected()).unwrap();
    assert_eq!(value(&replayed, "k").as_deref(), Some("\"kept\""));
    let id = logbook_log::RequestId::new("r-stale").unwrap();
    assert_eq!(
        replayed.committed(&id).unwrap(),
        None,
        "its request id is not remembered"
    );
}
