//! The store on a cluster's commit stream: followers derive the table and refuse commits;
//! a leader appends its epoch first and stamps every commit; a deposed leader's append is
//! refused at storage (fenced) and poisons it; replay ignores a stale epoch's commit, and
//! the newest epoch's commits chained after one; a follower's interactive transaction is
//! certified by the leader as its request (declared reads, read-only ones included); a
//! leader refuses a snapshot ahead of its stream.
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
        replayed.committed(None, &id).unwrap(),
        None,
        "its request id is not remembered"
    );
}

/// A deposed leader's record that took a position in the newest leader's chain (its
/// expected end held there: the newest leader's record for that position was refused) is
/// skipped, and so is every later commit of the newest epoch — they were chained after the
/// refused record, and their leader answered none of them as committed — up to the next
/// epoch record, after which commits apply again.
#[test]
fn replay_skips_the_newest_epochs_commits_after_a_deposed_leaders_record_in_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<Log> = Arc::new(Log::open(dir.path()).unwrap());
    let old = TxnStore::open(&*log, elected()).unwrap();
    old.lead(3, "a").unwrap();
    let newer = TxnStore::open(&*log, elected()).unwrap();
    newer.lead(5, "b").unwrap();
    put(&newer, "k", "\"kept\"").unwrap();
    let commit = |id: &str, value: &str, epoch: u64| CommitRecord {
        isolation: Isolation::Serializable,
        snapshot: 0,
        request_id: Some(id.into()),
        traceparent: None,
        intents: None,
        read_dependent: false,
        writes: vec![(b"k".to_vec(), WriteOp::Put(value.as_bytes().to_vec()))],
        epoch: Some(epoch),
    };
    // Past the precondition, as a delayed publish and the records chained after the one it
    // displaced would land: epoch 3's record, then epoch 5's.
    let txn = LogBackend::stream(&*log, "_txn").unwrap();
    for record in [
        commit("r-stale", "\"stale\"", 3),
        commit("r-after", "\"after\"", 5),
    ] {
        txn.partition(0)
            .unwrap()
            .append_batch(&[Record::new(record.encode())], AppendCondition::Always)
            .unwrap()
            .wait()
            .unwrap();
    }
    let replayed = TxnStore::open(&*log, elected()).unwrap();
    assert_eq!(value(&replayed, "k").as_deref(), Some("\"kept\""));
    for id in ["r-stale", "r-after"] {
        let id = logbook_log::RequestId::new(id).unwrap();
        assert_eq!(
            replayed.committed(None, &id).unwrap(),
            None,
            "{id} is not remembered"
        );
    }
    // A newer epoch's commits apply again.
    let newest = TxnStore::open(&*log, elected()).unwrap();
    newest.lead(7, "c").unwrap();
    put(&newest, "k", "\"newest\"").unwrap();
    let replayed = TxnStore::open(&*log, elected()).unwrap();
    assert_eq!(value(&replayed, "k").as_deref(), Some("\"newest\""));
}

/// An interactive transaction begun on a follower commits on the leader as the request it
/// builds (`into_request`), certified there like a one-shot request: a write-write conflict
/// with a commit the follower had not seen is caught; a read-only `serializable` one has
/// no safe snapshot on the follower, so its reads are declared and certified.
#[test]
fn a_followers_transaction_is_certified_by_the_leader_as_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let leader = TxnStore::open(&log, elected()).unwrap();
    leader.lead(3, "a").unwrap();
    put(&leader, "x", "1").unwrap();
    let follower = TxnStore::open(&log, elected()).unwrap();
    follower.catch_up().unwrap();

    let mut t = follower
        .begin(TxnOptions::new(Isolation::Snapshot))
        .unwrap();
    assert_eq!(t.get(b"x").unwrap().unwrap().version, Some(1));
    t.put(b"x", b"2").unwrap();
    let request = t.into_request().unwrap();
    assert_eq!(request.reads.get(b"x".as_slice()), Some(&Some(1)));
    // The follower certifies nothing and never heard of the transaction again.
    assert!(matches!(
        follower.commit_request(request.clone(), None, None),
        Err(TxnError::NotLeader)
    ));
    put(&leader, "x", "3").unwrap();
    let refused = leader.commit_request(request, None, None);
    assert!(
        matches!(refused, Err(TxnError::SerializationFailure { .. })),
        "first committer wins across nodes: {refused:?}"
    );

    // The follower applies `_txn` in its own thread; once caught up, this reader sees the
    // leader's newest commit of `x` (version 2).
    follower.catch_up().unwrap();
    let mut reader = follower
        .begin(TxnOptions::new(Isolation::Serializable).read_only())
        .unwrap();
    assert_eq!(reader.get(b"x").unwrap().unwrap().version, Some(2));
    let request = reader.into_request().unwrap();
    assert!(request.read_only);
    assert_eq!(
        request.reads.get(b"x".as_slice()),
        Some(&Some(2)),
        "read-only on a follower: its reads are declared"
    );
    let mut on_leader = leader
        .begin(TxnOptions::new(Isolation::Serializable).read_only())
        .unwrap();
    assert!(on_leader.get(b"x").unwrap().is_some());
    assert!(
        on_leader.into_request().unwrap().reads.is_empty(),
        "on the leader it reads a safe snapshot, untracked"
    );
}

/// A leader refuses a request whose snapshot is ahead of the commit stream it holds, as
/// `SnapshotAhead` after a bounded wait (a follower may apply a commit before its leader
/// has the acknowledgment; here the snapshot is simply beyond the stream).
#[test]
fn a_leader_refuses_a_snapshot_ahead_of_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let leader = TxnStore::open(&log, elected()).unwrap();
    leader.lead(3, "a").unwrap();
    let mut request = logbook_txn::CommitRequest::new(Isolation::Serializable, 50);
    request
        .writes
        .insert(b"k".to_vec(), logbook_txn::Write::Increment(1));
    let refused = leader.commit_request(request, None, None);
    assert!(
        matches!(
            refused,
            Err(TxnError::SnapshotAhead {
                snapshot: 50,
                applied: 1
            })
        ),
        "{refused:?}"
    );
    // The same request may pass once the stream gets there: retryable, not bad input.
    assert!(refused.is_err_and(|e| e.is_retryable()));
    // A read at that snapshot waits the same way and is refused the same way (not as an
    // unprocessable request).
    let read = leader.read_at(Some(50), &[b"k".to_vec()], &[]);
    assert!(
        matches!(&read, Err(e @ TxnError::SnapshotAhead { snapshot: 50, .. }) if e.is_retryable()),
        "{read:?}"
    );
}
