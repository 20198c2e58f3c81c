//! Random concurrent histories checked by an Elle-style checker (`common/elle.rs`).
//!
//! Client threads run random transactions over a small key space: reads, list appends (read
//! the list, write it back with one new unique element, so every version is recoverable) and
//! range scans (a scan observes every key of its range, absent ones as empty lists, so
//! phantoms become anti-dependencies). Some transactions are declared read-only, some abort
//! on purpose. The history — every transaction, what each operation observed, and whether
//! it committed — is then checked: no anomaly the level forbids may occur.
//!
//! At `read_committed` an append reads with `get_for_update`, which makes the read conflict
//! like a write: without it, two appends could both commit on the same base (a lost update,
//! which `read_committed` allows) and the versions would no longer form one list.
//!
//! ```text
//! LOGBOOK_HISTORY_SEED=N   replay the operation choices of a run (interleavings differ)
//! LOGBOOK_HISTORY_TXNS=N   transactions per level (default 10,000; e.g. 200000 for a long run)
//! cargo test -p logbook-txn --release --test history -- --nocapture
//! ```

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::elle::{self, Elem, History, Kind, Mop, Outcome, TxnRecord};
use common::oneshot::Handle;
use logbook_txn::{Isolation, KeyRange, TxnError, TxnOptions, TxnStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: usize = 4;
const KEYS: usize = 16;
const TXNS_DEFAULT: usize = 10_000;
/// Appends per key generation: after this many appends the clients move on to a fresh set
/// of keys, so lists (and the checker's work per read) stay short in long runs.
const APPENDS_PER_GENERATION: u64 = 1_000;

/// Key `i` of generation `generation`.
fn gkey(generation: u64, i: usize) -> String {
    format!("h:{generation:04}:{i:02}")
}

/// Key `i` of generation 0.
fn key(i: usize) -> String {
    gkey(0, i)
}

fn encode(list: &[Elem]) -> String {
    list.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode(bytes: &[u8]) -> Vec<Elem> {
    let s = std::str::from_utf8(bytes).unwrap();
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

/// A transaction that records what it does and sees.
struct Recorder {
    txn: Handle,
    level: Isolation,
    record: TxnRecord,
    /// The key generation its scans use.
    generation: u64,
}

impl Recorder {
    fn begin(store: &Arc<TxnStore>, options: TxnOptions, process: usize) -> Recorder {
        Recorder::begin_as(store, options, process, false)
    }

    /// Begins interactive, or in the one-round-trip form when `one_shot`.
    fn begin_as(
        store: &Arc<TxnStore>,
        options: TxnOptions,
        process: usize,
        one_shot: bool,
    ) -> Recorder {
        let txn = Handle::begin(store, options, one_shot).unwrap();
        let note = format!(
            "{}{}{} snapshot {}",
            options.isolation,
            if options.read_only { " read-only" } else { "" },
            if matches!(txn, Handle::OneShot(_)) {
                " one-shot"
            } else {
                ""
            },
            txn.snapshot()
        );
        let mut r = Recorder {
            txn,
            level: options.isolation,
            generation: 0,
            record: TxnRecord {
                process,
                mops: Vec::new(),
                outcome: Outcome::Aborted,
                note: String::new(),
            },
        };
        r.record.note = note;
        r
    }

    fn read(&mut self, k: &str) -> Result<Vec<Elem>, TxnError> {
        let value = self
            .txn
            .get(k.as_bytes())?
            .map_or_else(Vec::new, |v| decode(&v.value));
        self.record.mops.push(Mop::Read {
            key: k.to_string(),
            value: value.clone(),
        });
        Ok(value)
    }

    fn append(&mut self, k: &str, elem: Elem) -> Result<(), TxnError> {
        let current = if self.level == Isolation::ReadCommitted {
            self.txn.get_for_update(k.as_bytes())?
        } else {
            self.txn.get(k.as_bytes())?
        };
        let mut list = current.map_or_else(Vec::new, |v| decode(&v.value));
        self.record.mops.push(Mop::Read {
            key: k.to_string(),
            value: list.clone(),
        });
        list.push(elem);
        self.txn.put(k.as_bytes(), encode(&list).as_bytes())?;
        self.record.mops.push(Mop::Append {
            key: k.to_string(),
            elem,
            wrote: list,
        });
        Ok(())
    }

    /// Scans keys `from..to` (indices) with `limit`; records a read of every key the scan
    /// covered: all of the range, or up to the last row returned when the limit cut it.
    fn scan(&mut self, from: usize, to: usize, limit: usize) -> Result<(), TxnError> {
        let key = |i| gkey(self.generation, i);
        let range = KeyRange::between(key(from).as_bytes(), key(to).as_bytes());
        let rows = self.txn.scan(&range, limit)?;
        let covered_to = if rows.len() == limit {
            let last = String::from_utf8(rows[rows.len() - 1].key.clone()).unwrap();
            (from..to).take_while(|i| key(*i) <= last).count() + from
        } else {
            to
        };
        for i in from..covered_to {
            let k = key(i);
            let value = rows
                .iter()
                .find(|r| r.key == k.as_bytes())
                .map_or_else(Vec::new, |r| decode(&r.value));
            self.record.mops.push(Mop::Read { key: k, value });
        }
        Ok(())
    }

    fn commit(mut self) -> TxnRecord {
        match self.txn.commit() {
            Ok(outcome) => {
                self.record.outcome = Outcome::Committed;
                self.record.note += &format!(", committed at {:?}", outcome.offset);
            }
            Err(e) => {
                let e = expect_retryable(e);
                self.record.note += &format!(", {e}");
            }
        }
        self.record
    }

    fn abort(self) -> TxnRecord {
        self.txn.abort();
        self.record
    }
}

/// Conflicts are expected; anything else is a test failure.
fn expect_retryable(e: TxnError) -> TxnError {
    assert!(e.is_retryable(), "unexpected error: {e}");
    e
}

/// A key index skewed towards low keys: the first few are hot, the last ones stay absent
/// for a while (so scans meet phantoms).
fn pick_key(rng: &mut StdRng) -> usize {
    let r: f64 = rng.r#gen();
    ((r * r * r) * KEYS as f64) as usize
}

/// One random transaction of client `process`.
fn random_txn(
    store: &Arc<TxnStore>,
    level: Isolation,
    process: usize,
    rng: &mut StdRng,
    next_elem: &AtomicU64,
    shares: Shares,
) -> TxnRecord {
    let Shares {
        read_only: read_only_share,
        one_shot: one_shot_share,
    } = shares;
    let generation = next_elem.load(Ordering::Relaxed) / APPENDS_PER_GENERATION;
    let read_only = rng.gen_bool(read_only_share);
    let mut options = TxnOptions::new(level);
    if read_only {
        options = options.read_only();
    }
    let one_shot = rng.gen_bool(one_shot_share);
    let mut t = Recorder::begin_as(store, options, process, one_shot);
    t.generation = generation;
    let key = |i| gkey(generation, i);
    let ops = rng.gen_range(1..=4);
    for _ in 0..ops {
        let roll = rng.gen_range(0..100);
        let result = if roll < 40 || (read_only && roll < 80) {
            t.read(&key(pick_key(rng))).map(drop)
        } else if roll < 80 {
            let elem = next_elem.fetch_add(1, Ordering::Relaxed);
            t.append(&key(pick_key(rng)), elem)
        } else {
            let from = rng.gen_range(0..KEYS);
            let to = rng.gen_range(from + 1..=KEYS);
            let limit = if rng.gen_bool(0.25) { 2 } else { 100 };
            t.scan(from, to, limit)
        };
        if let Err(e) = result {
            expect_retryable(e);
            return t.abort();
        }
        if rng.gen_bool(0.5) {
            std::thread::yield_now();
        }
    }
    if !read_only && rng.gen_bool(0.05) {
        t.abort()
    } else {
        t.commit()
    }
}

fn seed() -> u64 {
    std::env::var("LOGBOOK_HISTORY_SEED")
        .ok()
        .map(|s| s.parse().expect("LOGBOOK_HISTORY_SEED must be a u64"))
        .unwrap_or_else(rand::random)
}

fn txns_per_level() -> usize {
    std::env::var("LOGBOOK_HISTORY_TXNS")
        .ok()
        .map(|s| s.parse().expect("LOGBOOK_HISTORY_TXNS must be a number"))
        .unwrap_or(TXNS_DEFAULT)
}

/// The shares of a workload's transactions declared read-only and run one-shot.
#[derive(Debug, Clone, Copy)]
struct Shares {
    read_only: f64,
    one_shot: f64,
}

/// Runs the workload at `level` and returns the history, final state included.
fn run_workload(level: Isolation, seed: u64, txns: usize, shares: Shares) -> History {
    let (_dir, _log, store) = common::temp_store();
    let next_elem = AtomicU64::new(1);
    let per_thread = txns.div_ceil(THREADS);
    let records: Vec<Vec<TxnRecord>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|p| {
                let store = &store;
                let next_elem = &next_elem;
                s.spawn(move || {
                    let mut rng =
                        StdRng::seed_from_u64(seed ^ (p as u64).wrapping_mul(0x9e37_79b9));
                    (0..per_thread)
                        .map(|_| random_txn(store, level, p, &mut rng, next_elem, shares))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let generations = next_elem.load(Ordering::Relaxed) / APPENDS_PER_GENERATION;
    let final_state = (0..=generations)
        .flat_map(|g| (0..KEYS).map(move |i| gkey(g, i)))
        .map(|k| {
            let v = store
                .get(k.as_bytes())
                .unwrap()
                .map_or_else(Vec::new, |v| decode(&v.value));
            (k, v)
        })
        .collect();
    History {
        txns: records.into_iter().flatten().collect(),
        final_state,
    }
}

/// Runs and checks a history at `level`; `read_only_share` of the transactions are
/// declared read-only.
fn check_level(level: Isolation, read_only_share: f64) {
    check_level_with(
        level,
        Shares {
            read_only: read_only_share,
            one_shot: 0.0,
        },
    );
}

/// As [`check_level`], with a share of the read-write transactions run one-shot.
fn check_level_with(level: Isolation, shares: Shares) {
    let seed = seed();
    let txns = txns_per_level();
    println!(
        "history at {level} ({shares:?}): seed {seed} (LOGBOOK_HISTORY_SEED={seed}), {txns} transactions"
    );
    let h = run_workload(level, seed, txns, shares);
    let report = elle::check(&h);
    println!(
        "  committed {}, aborted {}, edges ww/wr/rw {:?}, anomalies {:?}",
        report.committed,
        report.aborted,
        report.edges,
        report.counts()
    );
    let forbidden = report.forbidden(level);
    if !forbidden.is_empty() {
        let shown: Vec<String> = forbidden
            .iter()
            .take(10)
            .map(|a| {
                format!(
                    "{:?}: {}\n{}",
                    a.kind,
                    a.explanation,
                    involved(&h, &a.explanation)
                )
            })
            .collect();
        panic!(
            "seed {seed}: {} anomalies forbidden at {level}:\n{}",
            forbidden.len(),
            shown.join("\n")
        );
    }
}

/// The transactions an explanation names (`T<index>`), one per line.
fn involved(h: &History, explanation: &str) -> String {
    let mut ids: Vec<usize> = explanation
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| w.strip_prefix('T')?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(|&i| {
            let t = &h.txns[i];
            format!("  T{i} (client {}, {}): {:?}", t.process, t.note, t.mops)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One-shot and interactive transactions mixed (half of each), with safe-snapshot readers.
#[test]
fn serializable_histories_mixing_one_shot_commits_have_no_cycles() {
    check_level_with(
        Isolation::Serializable,
        Shares {
            read_only: 0.15,
            one_shot: 0.5,
        },
    );
}

/// Every read-write transaction one-shot.
#[test]
fn serializable_histories_of_one_shot_commits_have_no_cycles() {
    check_level_with(
        Isolation::Serializable,
        Shares {
            read_only: 0.0,
            one_shot: 1.0,
        },
    );
}

#[test]
fn snapshot_histories_mixing_one_shot_commits_have_no_g0_g1_or_g_single() {
    check_level_with(
        Isolation::Snapshot,
        Shares {
            read_only: 0.0,
            one_shot: 0.5,
        },
    );
}

#[test]
fn read_committed_histories_mixing_one_shot_commits_have_no_g0_or_g1() {
    check_level_with(
        Isolation::ReadCommitted,
        Shares {
            read_only: 0.0,
            one_shot: 0.5,
        },
    );
}

#[test]
fn serializable_histories_have_no_cycles() {
    check_level(Isolation::Serializable, 0.15);
}

/// As above without declared read-only transactions (no safe snapshots): SSI alone.
#[test]
fn serializable_histories_without_safe_snapshots_have_no_cycles() {
    check_level(Isolation::Serializable, 0.0);
}

#[test]
fn snapshot_histories_have_no_g0_g1_or_g_single() {
    check_level(Isolation::Snapshot, 0.15);
}

#[test]
fn read_committed_histories_have_no_g0_or_g1() {
    check_level(Isolation::ReadCommitted, 0.15);
}

/// Found by `serializable_histories_have_no_cycles`: a declared read-only serializable
/// transaction reads at the newest *safe* snapshot, which may be older than the oldest
/// open transaction's snapshot — the horizon the table's garbage collection keeps versions
/// for. A key then reads as absent although it had a value at that snapshot.
#[test]
fn safe_snapshot_reads_see_versions_the_gc_must_keep() {
    let (_dir, _log, store) = common::temp_store();
    let ser = TxnOptions::new(Isolation::Serializable);
    let put = |k: &[u8], v: &[u8]| {
        let mut t = store.begin(ser).unwrap();
        t.put(k, v).unwrap();
        t.commit().unwrap()
    };
    put(b"x", b"1"); // offset 0; the safe snapshot is now 1
    let mut a = store.begin(ser).unwrap(); // snapshot 1
    put(b"x", b"2"); // offset 1; a safe-snapshot candidate waits for A
    let d = store.begin(ser).unwrap(); // snapshot 2
    // A reads x = 1, missing the commit at offset 1, which committed before the
    // candidate: the candidate is unsafe and dropped; the safe snapshot stays at 1.
    assert_eq!(&*a.get(b"x").unwrap().unwrap().value, b"1");
    a.put(b"z", b"1").unwrap();
    a.commit().unwrap(); // offset 2
    // Only D (snapshot 2) is open: the GC horizon is 2, so x's version 0 is dropped.
    put(b"x", b"3"); // offset 3
    let mut r = store.begin(ser.read_only()).unwrap();
    assert_eq!(r.snapshot(), 1, "the newest safe snapshot");
    let x = r.get(b"x").unwrap();
    assert_eq!(
        x.map(|v| v.value.to_vec()),
        Some(b"1".to_vec()),
        "at snapshot 1, x was written by offset 0"
    );
    drop(d);
}

/// Declared read-only serializable transactions run on safe snapshots: they never abort,
/// whatever the concurrent writers do.
#[test]
fn read_only_serializable_transactions_never_abort() {
    let seed = seed();
    println!("seed {seed}");
    let (_dir, _log, store) = common::temp_store();
    let next_elem = AtomicU64::new(1);
    let readers_done = std::thread::scope(|s| {
        for p in 0..2 {
            let store = &store;
            let next_elem = &next_elem;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ p);
                for _ in 0..300 {
                    random_txn(
                        store,
                        Isolation::Serializable,
                        p as usize,
                        &mut rng,
                        next_elem,
                        Shares {
                            read_only: 0.0,
                            one_shot: 0.0,
                        },
                    );
                }
            });
        }
        let reader = s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed ^ 99);
            let mut done = 0;
            for _ in 0..300 {
                let options = TxnOptions::new(Isolation::Serializable).read_only();
                let mut t = Recorder::begin(&store, options, 9);
                t.read(&key(pick_key(&mut rng))).unwrap();
                t.scan(0, KEYS, 100).unwrap();
                let record = t.commit();
                assert_eq!(
                    record.outcome,
                    Outcome::Committed,
                    "a safe snapshot aborted"
                );
                done += 1;
            }
            done
        });
        reader.join().unwrap()
    });
    assert_eq!(readers_done, 300);
}

// ---- the checker proves itself on hand-made histories ----

fn read(k: &str, value: &[Elem]) -> Mop {
    Mop::Read {
        key: k.into(),
        value: value.to_vec(),
    }
}

fn append(k: &str, elem: Elem, wrote: &[Elem]) -> Mop {
    Mop::Append {
        key: k.into(),
        elem,
        wrote: wrote.to_vec(),
    }
}

fn txn(outcome: Outcome, mops: Vec<Mop>) -> TxnRecord {
    TxnRecord {
        process: 0,
        mops,
        outcome,
        note: String::new(),
    }
}

fn kinds(h: &History) -> Vec<Kind> {
    let r = elle::check(h);
    let mut k: Vec<Kind> = r.anomalies.iter().map(|a| a.kind).collect();
    k.sort();
    k.dedup();
    k
}

use Outcome::{Aborted, Committed};

#[test]
fn checker_accepts_a_serial_history() {
    let h = History {
        txns: vec![
            txn(Committed, vec![read("x", &[]), append("x", 1, &[1])]),
            txn(
                Committed,
                vec![read("x", &[1]), append("x", 2, &[1, 2]), read("y", &[])],
            ),
            txn(Committed, vec![read("x", &[1, 2]), read("y", &[])]),
        ],
        final_state: vec![("x".into(), vec![1, 2]), ("y".into(), vec![])],
    };
    let r = elle::check(&h);
    assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    assert_eq!(r.edges, [1, 2, 0]);
}

/// Write skew: each reads both keys empty and appends to one. Two rw edges form the cycle.
#[test]
fn checker_reports_a_hand_made_g2_item_cycle() {
    let h = History {
        txns: vec![
            txn(
                Committed,
                vec![read("x", &[]), read("y", &[]), append("x", 1, &[1])],
            ),
            txn(
                Committed,
                vec![read("x", &[]), read("y", &[]), append("y", 2, &[2])],
            ),
        ],
        final_state: vec![("x".into(), vec![1]), ("y".into(), vec![2])],
    };
    let r = elle::check(&h);
    assert_eq!(kinds(&h), vec![Kind::G2], "{:?}", r.anomalies);
    let g2 = &r.anomalies[0];
    assert!(g2.explanation.contains("-rw->"), "{}", g2.explanation);
    assert_eq!(r.forbidden(Isolation::Serializable).len(), 1);
    assert!(r.forbidden(Isolation::Snapshot).is_empty());
}

/// Read skew: T1 reads x before T0 and y after it.
#[test]
fn checker_reports_g_single() {
    let h = History {
        txns: vec![
            txn(
                Committed,
                vec![
                    read("x", &[1]),
                    append("x", 2, &[1, 2]),
                    read("y", &[3]),
                    append("y", 4, &[3, 4]),
                ],
            ),
            txn(Committed, vec![read("x", &[1]), read("y", &[3, 4])]),
            txn(
                Committed,
                vec![
                    read("x", &[]),
                    append("x", 1, &[1]),
                    read("y", &[]),
                    append("y", 3, &[3]),
                ],
            ),
        ],
        final_state: vec![("x".into(), vec![1, 2]), ("y".into(), vec![3, 4])],
    };
    assert_eq!(kinds(&h), vec![Kind::GSingle]);
    let r = elle::check(&h);
    assert!(!r.forbidden(Isolation::Snapshot).is_empty());
    assert!(r.forbidden(Isolation::ReadCommitted).is_empty());
}

/// A write cycle (x ordered T0 < T1, y ordered T1 < T0), and with reads a G1c cycle.
#[test]
fn checker_reports_g0_and_g1c() {
    let g0 = History {
        txns: vec![
            txn(
                Committed,
                vec![append("x", 1, &[1]), append("y", 4, &[3, 4])],
            ),
            txn(
                Committed,
                vec![append("x", 2, &[1, 2]), append("y", 3, &[3])],
            ),
        ],
        final_state: vec![("x".into(), vec![1, 2]), ("y".into(), vec![3, 4])],
    };
    assert_eq!(kinds(&g0), vec![Kind::G0]);
    let g1c = History {
        txns: vec![
            txn(Committed, vec![append("x", 1, &[1]), read("y", &[2])]),
            txn(Committed, vec![append("y", 2, &[2]), read("x", &[1])]),
        ],
        final_state: vec![("x".into(), vec![1]), ("y".into(), vec![2])],
    };
    assert_eq!(kinds(&g1c), vec![Kind::G1c]);
    assert!(
        !elle::check(&g1c)
            .forbidden(Isolation::ReadCommitted)
            .is_empty()
    );
}

#[test]
fn checker_reports_aborted_and_intermediate_reads() {
    let h = History {
        txns: vec![
            txn(Aborted, vec![append("x", 1, &[1])]),
            txn(Committed, vec![read("x", &[1])]),
            txn(
                Committed,
                vec![append("y", 2, &[2]), append("y", 3, &[2, 3])],
            ),
            txn(Committed, vec![read("y", &[2])]),
        ],
        final_state: vec![("x".into(), vec![]), ("y".into(), vec![2, 3])],
    };
    let k = kinds(&h);
    assert!(k.contains(&Kind::G1a), "{k:?}");
    assert!(k.contains(&Kind::G1b), "{k:?}");
}

#[test]
fn checker_reports_diverging_lists_lost_appends_and_internal_reads() {
    let diverging = History {
        txns: vec![
            txn(Committed, vec![read("x", &[]), append("x", 1, &[1])]),
            txn(Committed, vec![read("x", &[]), append("x", 2, &[2])]),
        ],
        final_state: vec![("x".into(), vec![2])],
    };
    assert!(kinds(&diverging).contains(&Kind::IncompatibleOrder));
    let lost = History {
        txns: vec![
            txn(Committed, vec![append("x", 1, &[1])]),
            txn(Committed, vec![read("x", &[1]), append("x", 2, &[1, 2])]),
        ],
        final_state: vec![("x".into(), vec![1])],
    };
    assert_eq!(kinds(&lost), vec![Kind::LostAppend]);
    let internal = History {
        txns: vec![txn(Committed, vec![append("x", 1, &[1]), read("x", &[])])],
        final_state: vec![("x".into(), vec![1])],
    };
    assert_eq!(kinds(&internal), vec![Kind::Internal]);
}

/// The checker on a real store: write skew interleaved by hand and recorded. At
/// `snapshot` both commit and the checker finds the G2 cycle; at `serializable` the
/// second commit is refused and the history is clean.
#[test]
fn checker_finds_write_skew_run_through_the_store() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (_dir, _log, store) = common::temp_store();
        let mut t1 = Recorder::begin(&store, TxnOptions::new(level), 1);
        let mut t2 = Recorder::begin(&store, TxnOptions::new(level), 2);
        t1.scan(0, 2, 100).unwrap();
        t2.scan(0, 2, 100).unwrap();
        t1.append(&key(0), 1).unwrap();
        t2.append(&key(1), 2).unwrap();
        let h = History {
            txns: vec![t1.commit(), t2.commit()],
            final_state: vec![
                (
                    key(0),
                    store
                        .get(key(0).as_bytes())
                        .unwrap()
                        .map_or_else(Vec::new, |v| decode(&v.value)),
                ),
                (
                    key(1),
                    store
                        .get(key(1).as_bytes())
                        .unwrap()
                        .map_or_else(Vec::new, |v| decode(&v.value)),
                ),
            ],
        };
        let r = elle::check(&h);
        if level == Isolation::Snapshot {
            assert_eq!(kinds(&h), vec![Kind::G2], "{:?}", r.anomalies);
        } else {
            assert_eq!(h.txns[1].outcome, Outcome::Aborted);
            assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        }
    }
}
