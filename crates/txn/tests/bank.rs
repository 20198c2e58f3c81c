//! The bank invariant: money moves between accounts, the total never changes.
//!
//! * Concurrent transfers written as read-modify-write (`get` + `put`) keep the total at
//!   `serializable` and `snapshot`, retried by the library's retry helper, and every audit
//!   (a transaction reading all accounts) sees the exact total.
//! * At `read_committed` the same read-modify-write loses an update; the test shows it by
//!   interleaving two transfers by hand, so it does not depend on luck.
//! * Transfers written with `increment` keep the total at `read_committed` too, and never
//!   conflict.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::sync::Arc;

use logbook_txn::{
    ConflictKind, Isolation, KeyRange, RetryPolicy, TxnError, TxnOptions, TxnStore, retry,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACCOUNTS: usize = 8;
const OPENING: i64 = 100;
const TOTAL: i64 = ACCOUNTS as i64 * OPENING;
const THREADS: usize = 4;
const TRANSFERS_PER_THREAD: usize = 150;

fn account(i: usize) -> Vec<u8> {
    format!("acct:{i}").into_bytes()
}

fn int(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes).unwrap().parse().unwrap()
}

fn open_accounts(store: &Arc<TxnStore>) {
    let mut t = store
        .begin(TxnOptions::new(Isolation::Serializable))
        .unwrap();
    for i in 0..ACCOUNTS {
        t.put(&account(i), OPENING.to_string().as_bytes()).unwrap();
    }
    t.commit().unwrap();
}

/// Balances outside any transaction.
fn balances(store: &Arc<TxnStore>) -> Vec<i64> {
    (0..ACCOUNTS)
        .map(|i| int(&store.get(&account(i)).unwrap().unwrap().value))
        .collect()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1_000,
        base_delay_us: 50,
        max_delay_us: 2_000,
    }
}

/// Threads moving random amounts between random accounts with get + put (refusing to
/// overdraw), plus audits reading every account in one transaction. Returns the audit
/// totals.
fn run_transfers(level: Isolation, seed: u64) -> (common::Guards, Arc<TxnStore>, Vec<i64>) {
    let (dir, log, store) = common::temp_store();
    open_accounts(&store);
    let audits = std::thread::scope(|s| {
        for p in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ p as u64);
                for _ in 0..TRANSFERS_PER_THREAD {
                    let from = rng.gen_range(0..ACCOUNTS);
                    let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.gen_range(1..=30);
                    retry(store, TxnOptions::new(level), &policy(), None, |t| {
                        let a = int(&t.get(&account(from))?.unwrap().value);
                        let b = int(&t.get(&account(to))?.unwrap().value);
                        if a >= amount {
                            t.put(&account(from), (a - amount).to_string().as_bytes())?;
                            t.put(&account(to), (b + amount).to_string().as_bytes())?;
                        }
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
        let auditor = s.spawn(|| {
            let mut totals = Vec::new();
            for _ in 0..100 {
                let mut t = store.begin(TxnOptions::new(level).read_only()).unwrap();
                let rows = t.scan(&KeyRange::prefix(b"acct:"), 100).unwrap();
                assert_eq!(rows.len(), ACCOUNTS);
                totals.push(rows.iter().map(|r| int(&r.value)).sum());
                t.commit().unwrap();
                std::thread::yield_now();
            }
            totals
        });
        auditor.join().unwrap()
    });
    ((dir, log), store, audits)
}

fn check_transfers(level: Isolation) {
    let seed: u64 = rand::random();
    println!("{level}: seed {seed}");
    let (_guards, store, audits) = run_transfers(level, seed);
    let b = balances(&store);
    assert_eq!(b.iter().sum::<i64>(), TOTAL, "balances {b:?}");
    assert!(b.iter().all(|x| *x >= 0), "an account was overdrawn: {b:?}");
    assert!(
        audits.iter().all(|t| *t == TOTAL),
        "an audit saw a total other than {TOTAL}: {audits:?}"
    );
    let s = store.stats();
    println!(
        "  commits {}, write-write aborts {}, pivot aborts {}",
        s.commits.load(std::sync::atomic::Ordering::Relaxed),
        s.aborts_write_write
            .load(std::sync::atomic::Ordering::Relaxed),
        s.aborts_dangerous_structure
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn serializable_transfers_keep_the_total() {
    check_transfers(Isolation::Serializable);
}

#[test]
fn snapshot_transfers_keep_the_total() {
    check_transfers(Isolation::Snapshot);
}

/// Two transfers out of account 0, interleaved by hand: both read the balance 100 before
/// either writes. Returns both commit results and the final balances.
fn interleaved_rmw(level: Isolation) -> (Result<(), TxnError>, Result<(), TxnError>, Vec<i64>) {
    let (_dir, _log, store) = common::temp_store();
    open_accounts(&store);
    let mut t1 = store.begin(TxnOptions::new(level)).unwrap();
    let mut t2 = store.begin(TxnOptions::new(level)).unwrap();
    let a1 = int(&t1.get(&account(0)).unwrap().unwrap().value);
    let a2 = int(&t2.get(&account(0)).unwrap().unwrap().value);
    assert_eq!((a1, a2), (OPENING, OPENING));
    // T1 moves 10 from 0 to 1, T2 moves 20 from 0 to 2.
    let b1 = int(&t1.get(&account(1)).unwrap().unwrap().value);
    t1.put(&account(0), (a1 - 10).to_string().as_bytes())
        .unwrap();
    t1.put(&account(1), (b1 + 10).to_string().as_bytes())
        .unwrap();
    let c2 = int(&t2.get(&account(2)).unwrap().unwrap().value);
    t2.put(&account(0), (a2 - 20).to_string().as_bytes())
        .unwrap();
    t2.put(&account(2), (c2 + 20).to_string().as_bytes())
        .unwrap();
    let r1 = t1.commit().map(drop);
    let r2 = t2.commit().map(drop);
    (r1, r2, balances(&store))
}

#[test]
fn read_committed_get_put_loses_an_update() {
    let (r1, r2, b) = interleaved_rmw(Isolation::ReadCommitted);
    r1.unwrap();
    r2.unwrap();
    // T2's write of account 0 (100 - 20) overwrote T1's (100 - 10): T1's debit is lost,
    // its credit is not, and 10 was created out of nothing.
    assert_eq!(b[0], OPENING - 20);
    assert_eq!(b[1], OPENING + 10);
    assert_eq!(b[2], OPENING + 20);
    assert_eq!(b.iter().sum::<i64>(), TOTAL + 10);
}

#[test]
fn snapshot_and_serializable_refuse_the_lost_update() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (r1, r2, b) = interleaved_rmw(level);
        r1.unwrap();
        match r2 {
            Err(TxnError::SerializationFailure {
                kind: ConflictKind::WriteWrite,
                key,
                ..
            }) => assert_eq!(key, "acct:0"),
            other => panic!("{level}: expected a write-write conflict on acct:0, got {other:?}"),
        }
        assert_eq!(b.iter().sum::<i64>(), TOTAL, "{level}: {b:?}");
    }
}

#[test]
fn read_committed_increments_do_not_lose_the_interleaved_update() {
    let (_dir, _log, store) = common::temp_store();
    open_accounts(&store);
    let mut t1 = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    let mut t2 = store
        .begin(TxnOptions::new(Isolation::ReadCommitted))
        .unwrap();
    t1.increment(&account(0), -10).unwrap();
    t2.increment(&account(0), -20).unwrap();
    t1.increment(&account(1), 10).unwrap();
    t2.increment(&account(2), 20).unwrap();
    t1.commit().unwrap();
    t2.commit().unwrap();
    let b = balances(&store);
    assert_eq!(b[0], OPENING - 30);
    assert_eq!(b.iter().sum::<i64>(), TOTAL);
}

#[test]
fn read_committed_concurrent_increments_keep_the_total_without_conflicts() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let (_dir, _log, store) = common::temp_store();
    open_accounts(&store);
    std::thread::scope(|s| {
        for p in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ p as u64);
                for _ in 0..TRANSFERS_PER_THREAD {
                    let from = rng.gen_range(0..ACCOUNTS);
                    let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.gen_range(1..=30);
                    let mut t = store
                        .begin(TxnOptions::new(Isolation::ReadCommitted))
                        .unwrap();
                    t.increment(&account(from), -amount).unwrap();
                    t.increment(&account(to), amount).unwrap();
                    // Increments commute: a commit never fails with a conflict.
                    t.commit().unwrap();
                }
            });
        }
    });
    let b = balances(&store);
    assert_eq!(b.iter().sum::<i64>(), TOTAL, "balances {b:?}");
    let s = store.stats();
    assert_eq!(
        s.commits.load(std::sync::atomic::Ordering::Relaxed),
        1 + (THREADS * TRANSFERS_PER_THREAD) as u64
    );
}

/// docs/DESIGN.md ("Transactions"): increments commute — two transactions that only
/// increment one key do not conflict (unless one also read it). A transfer that
/// reads the balance to refuse an overdraft and then decrements it did read the key, so
/// at `snapshot` two such transfers must conflict — else both pass the check on the same
/// balance and the account goes negative.
#[test]
fn snapshot_read_then_increment_conflicts_with_a_concurrent_increment() {
    let (_dir, _log, store) = common::temp_store();
    open_accounts(&store);
    let mut t1 = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    let mut t2 = store.begin(TxnOptions::new(Isolation::Snapshot)).unwrap();
    for t in [&mut t1, &mut t2] {
        let a = int(&t.get(&account(0)).unwrap().unwrap().value);
        assert!(a >= 100, "the overdraft check passes for both");
        t.increment(&account(0), -100).unwrap();
        t.increment(&account(1), 100).unwrap();
    }
    t1.commit().unwrap();
    let r2 = t2.commit();
    let b = balances(&store);
    assert!(
        matches!(r2, Err(TxnError::SerializationFailure { .. })),
        "the second transfer committed: balances {b:?}"
    );
    assert!(b[0] >= 0, "account 0 overdrawn: {b:?}");
}

/// The same schedule at `serializable` is refused (the reads make it write skew).
#[test]
fn serializable_read_then_increment_conflicts_with_a_concurrent_increment() {
    let (_dir, _log, store) = common::temp_store();
    open_accounts(&store);
    let mut t1 = store
        .begin(TxnOptions::new(Isolation::Serializable))
        .unwrap();
    let mut t2 = store
        .begin(TxnOptions::new(Isolation::Serializable))
        .unwrap();
    for t in [&mut t1, &mut t2] {
        let a = int(&t.get(&account(0)).unwrap().unwrap().value);
        assert!(a >= 100);
        t.increment(&account(0), -100).unwrap();
        t.increment(&account(1), 100).unwrap();
    }
    t1.commit().unwrap();
    assert!(matches!(
        t2.commit(),
        Err(TxnError::SerializationFailure { .. })
    ));
    assert_eq!(balances(&store)[0], 0);
}
