//! A certifier's leader chains its commit records across a newer leader's epoch (feature
//! `cluster`), on a real 3-server JetStream cluster.
//!
//! The leader appends each commit record under the expected end after the previous one,
//! without waiting for that one's acknowledgment (decision 0014). Storage checks the end's
//! *position*, not which record holds it. When the first of two chained records has not
//! reached storage before a newer leader's epoch record takes its position, the second one's
//! expectation holds — the epoch record stands where its predecessor should — and it is
//! stored after the newer epoch, where replay skips it (a commit of an older epoch after a
//! newer one). Storage acknowledged it; the leader must not pass that on to its client.
//!
//! The test makes that schedule happen, every time: leader A reaches NATS through a proxy on
//! loopback that forwards nothing from A while held; two commits are certified on A and their
//! publishes — each one's first attempt and a retry after the acknowledgment timeout — wait in
//! the proxy, in order, while leader B appends its epoch; then the proxy lets them go. Every
//! commit acknowledged to its caller must be in the table a replay of `_txn` derives, and a
//! commit answered as not committed, retried with its request id on the newest leader, is
//! applied once.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use logbook_jetstream::{BackendSettings, JetStreamBackend};
use logbook_log::{FsyncPolicy, LogBackend, RequestId};
use logbook_txn::record::Entry;
use logbook_txn::{CommitOutcome, Isolation, TxnError, TxnOptions, TxnStore, TxnStoreOptions};

#[path = "../../jetstream/tests/common/mod.rs"]
mod engines;

/// Longest wait for a condition the test waits on.
const WAIT: Duration = Duration::from_secs(60);

/// What the client side of a held proxy sent: everything, and whether to forward it now.
#[derive(Default)]
struct Held {
    held: bool,
    /// Every byte the client sent since the proxy started, forwarded or not.
    sent: Vec<u8>,
}

/// A TCP proxy to one upstream address. While held, it reads what clients send (so a test
/// can see it) but forwards none of it until released, in order; what the upstream sends
/// always flows.
struct Proxy {
    port: u16,
    state: Arc<(Mutex<Held>, Condvar)>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("nats://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new(Held::default()), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                relay(client, server, shared.clone());
            }
        });
        Proxy { port, state }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.state.0.lock().unwrap()
    }

    fn hold(&self) {
        self.lock().held = true;
    }

    fn release(&self) {
        self.lock().held = false;
        self.state.1.notify_all();
    }

    /// How often `needle` occurs in what clients sent from byte `from` on.
    fn sent_count(&self, from: usize, needle: &[u8]) -> usize {
        let held = self.lock();
        held.sent[from.min(held.sent.len())..]
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    fn sent_len(&self) -> usize {
        self.lock().sent.len()
    }
}

/// Copies `client` → `server` through the hold, and `server` → `client` as it comes.
fn relay(mut client: TcpStream, mut server: TcpStream, state: Arc<(Mutex<Held>, Condvar)>) {
    let (mut to_client, mut from_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let (chunks, forward) = mpsc::channel::<Vec<u8>>();
    let gate = state.clone();
    std::thread::spawn(move || {
        for chunk in forward {
            let (lock, released) = &*gate;
            let mut held = lock.lock().unwrap();
            while held.held {
                held = released.wait(held).unwrap();
            }
            drop(held);
            if server.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = server.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            state.0.lock().unwrap().sent.extend_from_slice(&buf[..n]);
            if chunks.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
}

/// The options of a cluster node's store (`crates/server/src/cluster.rs`).
fn elected() -> TxnStoreOptions {
    TxnStoreOptions {
        fsync: FsyncPolicy::Never,
        elected: true,
        ..TxnStoreOptions::default()
    }
}

/// Puts `key` in a transaction of its own, committed with request id `id`.
fn commit(store: &Arc<TxnStore>, id: &str, key: &str) -> Result<CommitOutcome, TxnError> {
    let mut txn = store.begin(TxnOptions::new(Isolation::Serializable))?;
    txn.put(key.as_bytes(), b"1")?;
    txn.commit_with(Some(&RequestId::new(id).unwrap()), None)
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "waited too long: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `_txn` as stored: `E<token>` for an epoch record, `c<epoch>:<request id>` for a commit.
fn commit_stream(log: &dyn LogBackend) -> Vec<String> {
    let stream = log.stream("_txn").unwrap();
    let partition = stream.partition(0).unwrap();
    let (mut order, mut from) = (Vec::new(), 0);
    loop {
        let records = partition.read(from, 1_000, 1 << 24).unwrap();
        let Some(last) = records.last() else {
            return order;
        };
        from = last.offset + 1;
        for r in &records {
            order.push(match Entry::decode(&r.value).unwrap() {
                Entry::Epoch(e) => format!("E{}", e.token),
                Entry::Commit(c) => format!(
                    "c{}:{}",
                    c.epoch.unwrap_or(0),
                    c.request_id.unwrap_or_default()
                ),
            });
        }
    }
}

/// The schedule of the module documentation, played out: leader A's commits c-1 and c-2 wait
/// in the proxy (two attempts each) while leader B appends its epoch, then go on.
struct Displaced {
    _engines: engines::Cluster,
    _proxy: Proxy,
    log_b: JetStreamBackend,
    /// The deposed leader, after both commits settled.
    a: Arc<TxnStore>,
    /// The leader whose epoch took c-1's position (c-2 stands after it).
    b: Arc<TxnStore>,
    /// A's table end before c-1 (c-0 is the last commit in its chain).
    first: u64,
    c1: Result<CommitOutcome, TxnError>,
    c2: Result<CommitOutcome, TxnError>,
    /// Whether a reader at A saw `k1` or `k2` while the commits were in flight.
    seen_in_flight: Vec<String>,
}

fn displace_two_commits(rt: &tokio::runtime::Runtime) -> Displaced {
    let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec::default()));
    let urls = engines.nats_urls();
    // B's connection makes `_txn` (A's, with its short timeout, only opens it).
    let log_b = JetStreamBackend::connect(BackendSettings::new([urls[1].clone()])).unwrap();
    drop(TxnStore::open(&log_b, elected()).unwrap());
    let proxy = Proxy::start(&urls[0]);
    // A reaches NATS only through the proxy; its publishes time out after 1 s and are
    // retried (under the same message id) for far longer than the test holds them.
    let mut through_proxy = BackendSettings::new([proxy.url()]);
    through_proxy.connect.request_timeout_ms = 1_000;
    through_proxy.retry_ms = 120_000;
    let log_a = JetStreamBackend::connect(through_proxy).unwrap();
    let a = TxnStore::open(&log_a, elected()).unwrap();
    a.lead(1, "a").unwrap();
    commit(&a, "c-0", "k0").unwrap();
    let first = a.applied_end();

    proxy.hold();
    let held_from = proxy.sent_len();
    let settled = std::sync::atomic::AtomicBool::new(false);
    let (b, c1, c2, seen_in_flight) = std::thread::scope(|s| {
        // A reader at A while the commits are in flight: none of it may show them.
        let reader = s.spawn(|| {
            let mut seen = Vec::new();
            while !settled.load(std::sync::atomic::Ordering::Acquire) {
                for key in ["k1", "k2"] {
                    if a.get(key.as_bytes()).unwrap().is_some() && !seen.contains(&key) {
                        seen.push(key);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen.into_iter().map(String::from).collect::<Vec<_>>()
        });
        let c1 = s.spawn(|| commit(&a, "c-1", "k1"));
        wait_until("c-1 certified", || a.applied_end() == first + 1);
        let c2 = s.spawn(|| commit(&a, "c-2", "k2"));
        wait_until("c-2 certified", || a.applied_end() == first + 2);
        // Both records wait in the proxy: first attempts, and a retry of each after the
        // acknowledgment timeout. (JetStream's expected last sequence of the record at
        // position p is p.)
        for position in [first, first + 1] {
            let header = format!("Nats-Expected-Last-Sequence: {position}\r\n");
            wait_until(&format!("two attempts expecting {position}"), || {
                proxy.sent_count(held_from, header.as_bytes()) >= 2
            });
        }
        // B leads with a newer token: its epoch record takes c-1's position.
        let b = TxnStore::open(&log_b, elected()).unwrap();
        b.lead(2, "b").unwrap();
        proxy.release();
        let (c1, c2) = (c1.join().unwrap(), c2.join().unwrap());
        settled.store(true, std::sync::atomic::Ordering::Release);
        (b, c1, c2, reader.join().unwrap())
    });
    Displaced {
        _engines: engines,
        _proxy: proxy,
        log_b,
        a,
        b,
        first,
        c1,
        c2,
        seen_in_flight,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_commit_stored_after_a_newer_epoch_is_never_acknowledged() {
    let rt = runtime();
    // The servers and the proxy are bound: they live until the test ends.
    let Displaced {
        _engines,
        _proxy,
        log_b,
        c1,
        c2,
        ..
    } = displace_two_commits(&rt);

    // The schedule happened: c-1 was refused at storage; c-2 was stored after B's epoch.
    let order = commit_stream(&log_b);
    assert_eq!(
        order[order.len() - 2..],
        ["E2".to_string(), "c1:c-2".to_string()],
        "{order:?}"
    );
    assert!(matches!(c1, Err(TxnError::Fenced { .. })), "c-1: {c1:?}");

    // Every acknowledged commit is in the table a replay derives; c-2 is not (replay skips a
    // commit of an older epoch after a newer one), so it must not have been acknowledged.
    let replayed = TxnStore::open(&log_b, elected()).unwrap();
    for (id, key, answer) in [("c-1", "k1", &c1), ("c-2", "k2", &c2)] {
        if let Ok(outcome) = answer {
            let found = replayed.get(key.as_bytes()).unwrap();
            assert!(
                found.is_some(),
                "{id} acknowledged at {:?}, but a replay of _txn skips it: {order:?}",
                outcome.offset
            );
        }
    }
    assert!(
        matches!(c2, Err(TxnError::Fenced { .. })),
        "c-2 answered as not committed (its predecessor never reached storage): {c2:?}"
    );

    // Retried with its request id on the newest leader, c-2 is applied once.
    let c = TxnStore::open(&log_b, elected()).unwrap();
    c.lead(3, "c").unwrap();
    let retried = commit(&c, "c-2", "k2").unwrap();
    assert!(!retried.duplicate, "{retried:?}");
    let replayed = TxnStore::open(&log_b, elected()).unwrap();
    assert!(replayed.get(b"k2").unwrap().is_some());
    let order = commit_stream(&log_b);
    let applied = order.iter().filter(|e| *e == "c3:c-2").count();
    assert_eq!(applied, 1, "{order:?}");
}

/// A leader's reads show a commit only once it is in the chain. Storage acknowledged c-2 (it
/// stands after B's epoch), so the end of `_txn` A observed passed it; but c-2 never
/// committed (replay skips it) and c-1 was refused: a read at A — outside a transaction, at
/// the newest snapshot, with early lock release — that showed k1 or k2 would show a write
/// no replay has. A's durable end is its chain's settled prefix: c-0.
#[test]
fn a_deposed_leaders_reads_never_show_a_displaced_commit() {
    let rt = runtime();
    let Displaced {
        _engines,
        _proxy,
        a,
        first,
        c1,
        c2,
        seen_in_flight,
        ..
    } = displace_two_commits(&rt);
    assert!(matches!(c1, Err(TxnError::Fenced { .. })), "c-1: {c1:?}");
    assert!(matches!(c2, Err(TxnError::Fenced { .. })), "c-2: {c2:?}");
    assert!(
        a.stream_end() > first + 1,
        "storage acknowledged c-2 to A: the end A observed passed it"
    );
    assert_eq!(a.durable_end(), first, "A's chain ends with c-0");
    for key in ["k1", "k2"] {
        let found = a.get(key.as_bytes()).unwrap();
        assert!(
            found.is_none(),
            "A shows {key}, which never committed: {found:?}"
        );
    }
    assert!(
        seen_in_flight.is_empty(),
        "a reader at A saw {seen_in_flight:?} while the commits were in flight"
    );
}

/// A commit stored out of the deposed leader's chain breaks the new leader's chain too: c-2
/// stands where B's first commit should go, and replay skips every commit of B's epoch after
/// it (each would follow a displaced record). So B's next commit, expecting the end c-2
/// took, is refused at storage: B is fenced, certifies nothing more, and steps down (its
/// election task resigns and campaigns again). The next leader's epoch follows c-2, and its
/// commits count. Keeping B leading would need a token newer than its own for the records
/// after c-2, which only a new election gives (decision 0014, "a displaced record").
#[test]
fn a_displaced_commit_fences_the_new_leader_and_the_next_leader_commits() {
    let rt = runtime();
    let Displaced {
        _engines,
        _proxy,
        log_b,
        b,
        ..
    } = displace_two_commits(&rt);
    let refused = commit(&b, "b-1", "kb");
    assert!(
        matches!(refused, Err(TxnError::Fenced { epoch: 2, .. })),
        "B's first commit after c-2: {refused:?}"
    );
    assert!(b.is_poisoned(), "B certifies nothing more until reopened");
    let again = commit(&b, "b-2", "kb");
    assert!(again.is_err(), "B's next commit: {again:?}");

    let c = TxnStore::open(&log_b, elected()).unwrap();
    c.lead(3, "c").unwrap();
    let committed = commit(&c, "c-3", "kc").unwrap();
    let order = commit_stream(&log_b);
    assert_eq!(
        order[order.len() - 4..],
        ["E2", "c1:c-2", "E3", "c3:c-3"].map(String::from),
        "nothing of B's after its epoch; C's epoch follows c-2: {order:?}"
    );
    let replayed = TxnStore::open(&log_b, elected()).unwrap();
    assert_eq!(
        replayed.get(b"kc").unwrap().and_then(|v| v.version),
        committed.offset,
        "C's commit counts"
    );
    for key in ["k1", "k2", "kb"] {
        assert!(replayed.get(key.as_bytes()).unwrap().is_none(), "{key}");
    }
}

/// A leader's wait for durability (`TxnStore::durable_reached`, what `POST /v1/txns` waits on
/// with early lock release) stays pending while the commit it waits for is unacknowledged,
/// and resolves with the acknowledgment. (It once waited on a position as if it were an
/// offset — JetStream's offsets are position · 2^16 — so it was ready at once, and the
/// server's wait loop spun on its worker until the acknowledgment came.)
#[test]
fn a_leaders_durability_wait_is_pending_until_the_commit_is_acknowledged() {
    let rt = runtime();
    let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec::default()));
    let urls = engines.nats_urls();
    let log_b = JetStreamBackend::connect(BackendSettings::new([urls[1].clone()])).unwrap();
    drop(TxnStore::open(&log_b, elected()).unwrap());
    let proxy = Proxy::start(&urls[0]);
    let mut through_proxy = BackendSettings::new([proxy.url()]);
    through_proxy.connect.request_timeout_ms = 1_000;
    through_proxy.retry_ms = 120_000;
    let log_a = JetStreamBackend::connect(through_proxy).unwrap();
    let a = TxnStore::open(&log_a, elected()).unwrap();
    a.lead(1, "a").unwrap();
    commit(&a, "c-0", "k0").unwrap();
    let first = a.applied_end();
    let mut durable = a.durable_reached(first);
    assert_eq!(
        rt.block_on(async { tokio::time::timeout(WAIT, &mut durable).await })
            .unwrap(),
        first,
        "c-0 is acknowledged: its wait resolves at once"
    );

    proxy.hold();
    std::thread::scope(|s| {
        let c1 = s.spawn(|| commit(&a, "c-1", "k1"));
        wait_until("c-1 certified", || a.applied_end() == first + 1);
        let mut durable = a.durable_reached(first + 1);
        let early = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(300), &mut durable).await
        });
        assert!(
            early.is_err(),
            "c-1's record is held before NATS, yet the wait resolved: {early:?}"
        );
        assert_eq!(a.durable_end(), first);
        proxy.release();
        let reached = rt
            .block_on(async { tokio::time::timeout(WAIT, &mut durable).await })
            .unwrap();
        assert_eq!(reached, first + 1, "resolves with c-1's acknowledgment");
        let c1 = c1.join().unwrap().unwrap();
        assert_eq!(c1.offset, Some(first));
    });
}
