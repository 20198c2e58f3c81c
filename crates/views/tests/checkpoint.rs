//! State in memory, checkpointed now and then: a crash between checkpoints loses what was
//! applied after the last one, and the reopened views replay it from the log — no record
//! applied twice or skipped. The crash is `Views::abandon` (processors stop without their
//! final checkpoint, leaving the store exactly as a crash after the last checkpoint would);
//! the checkpoint policy is set so that *when* checkpoints happen does not depend on time.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use logbook_log::{Log, Record, Stream, StreamConfig};
use logbook_views::store::{FjallStore, Space, SpaceSnapshot, StateStore, Write};
use logbook_views::{ReadOptions, ScanRange, ViewError, Views, ViewsConfig};
use serde_json::{Value, json};

const TABLE: &str = r#"{"source":"s","kind":"table"}"#;
const INDEX: &str = r#"{"source":"s","kind":"index","on":["g"]}"#;
const AGG: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{
  "n":{"fn":"count"},"sum":{"fn":"sum","field":"v"},"min":{"fn":"min","field":"v"},
  "max":{"fn":"max","field":"v"},"d":{"fn":"count_distinct","field":"v"}}}"#;
const VIEWS: [(&str, &str); 3] = [("t", TABLE), ("i", INDEX), ("a", AGG)];

/// Record `i`: key `k(i*7 % 90)`, a value or (every 11th) a delete.
fn record(i: u64) -> (String, Option<Value>) {
    let key = format!("k{}", i * 7 % 90);
    let value = (!i.is_multiple_of(11))
        .then(|| json!({ "g": format!("g{}", i % 4), "v": (i * 37 % 50) as i64 - 20 }));
    (key, value)
}

fn append(stream: &Stream, range: std::ops::Range<u64>) {
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(17) {
        let batch = chunk
            .iter()
            .map(|&i| {
                let (k, v) = record(i);
                Record::keyed(k, v.map_or("null".to_string(), |v| v.to_string()))
            })
            .collect();
        stream.append_batch(batch).unwrap().wait().unwrap();
    }
}

fn read_all(views: &Views, name: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut range = ScanRange {
        limit: 7,
        ..ScanRange::default()
    };
    loop {
        let page = views.scan(name, &range, &ReadOptions::default()).unwrap();
        for r in page.rows {
            if let Some(Value::Array(keys)) = r.value.get("keys") {
                let e = out.entry(r.key).or_insert_with(|| json!({ "keys": [] }));
                e["keys"]
                    .as_array_mut()
                    .unwrap()
                    .extend(keys.iter().cloned());
                continue;
            }
            out.insert(r.key, r.value);
        }
        match page.next {
            Some(n) => range.start = Some(n),
            None => break,
        }
    }
    for v in out.values_mut() {
        if let Some(Value::Array(keys)) = v.get_mut("keys") {
            keys.sort_by_key(|k| k.as_str().unwrap().to_string());
        }
    }
    out
}

/// The three views recomputed from records `0..n`.
fn model(n: u64) -> [BTreeMap<String, Value>; 3] {
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for i in 0..n {
        match record(i) {
            (k, Some(v)) => latest.insert(k, v),
            (k, None) => latest.remove(&k),
        };
    }
    let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (k, v) in &latest {
        let g = v["g"].as_str().unwrap().to_string();
        index.entry(g.clone()).or_default().push(k.clone());
        groups.entry(g).or_default().push(v["v"].as_i64().unwrap());
    }
    let index = index
        .into_iter()
        .map(|(g, mut ks)| {
            ks.sort();
            (g, json!({ "keys": ks }))
        })
        .collect();
    let agg = groups
        .into_iter()
        .map(|(g, vs)| {
            let distinct: BTreeSet<i64> = vs.iter().copied().collect();
            let row = json!({"g": g, "n": vs.len(), "sum": vs.iter().sum::<i64>(),
                "min": vs.iter().min(), "max": vs.iter().max(), "d": distinct.len()});
            (g, row)
        })
        .collect();
    [latest, index, agg]
}

fn open(data: &Path, config: &ViewsConfig) -> (Arc<Log>, Arc<Stream>, Views) {
    let log = Arc::new(Log::open(data).unwrap());
    let stream = match log.stream("s") {
        Ok(s) => s,
        Err(_) => log
            .create_stream("s", StreamConfig::with_partitions(3))
            .unwrap(),
    };
    let views = Views::open_with_config(log.clone(), &data.join("views"), config.clone()).unwrap();
    (log, stream, views)
}

fn caught_up(views: &Views) {
    for (name, _) in VIEWS {
        assert!(
            views
                .wait_caught_up(name, None, Duration::from_secs(30))
                .unwrap()
        );
    }
}

fn check(views: &Views, n: u64) {
    let want = model(n);
    for ((name, _), want) in VIEWS.iter().zip(&want) {
        assert_eq!(
            &read_all(views, name),
            want,
            "view {name} after {n} records"
        );
    }
}

fn ends(stream: &Stream) -> BTreeMap<u32, u64> {
    stream
        .partitions()
        .iter()
        .enumerate()
        .map(|(p, part)| (p as u32, part.end_offset()))
        .collect()
}

fn checkpointed(views: &Views, name: &str) -> BTreeMap<u32, u64> {
    views.status(name, false).unwrap().versions[0]
        .checkpointed
        .clone()
}

#[test]
fn a_crash_between_checkpoints_replays_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Checkpoints only when a processor stops cleanly: never by time or size.
    let config = ViewsConfig {
        checkpoint_interval: Duration::from_secs(24 * 3600),
        checkpoint_bytes: usize::MAX,
        ..ViewsConfig::default()
    };
    let at_a;
    {
        let (_log, stream, views) = open(&data, &config);
        for (name, spec) in VIEWS {
            views.create(name, spec.as_bytes()).unwrap();
        }
        append(&stream, 0..400);
        caught_up(&views);
        check(&views, 400);
        for (name, _) in VIEWS {
            assert_eq!(
                checkpointed(&views, name),
                BTreeMap::from([(0, 0), (1, 0), (2, 0)])
            );
        }
        views.close();
        at_a = ends(&stream);
        for (name, _) in VIEWS {
            assert_eq!(
                checkpointed(&views, name),
                BTreeMap::new(),
                "closed: not running"
            );
        }
    }
    {
        let (_log, stream, views) = open(&data, &config);
        for (name, _) in VIEWS {
            assert_eq!(checkpointed(&views, name), at_a, "a clean stop checkpoints");
        }
        // Replaces and deletes keys of the first part, across the checkpoint.
        append(&stream, 400..700);
        caught_up(&views);
        check(&views, 700);
        for (name, _) in VIEWS {
            let st = views.status(name, false).unwrap();
            assert_eq!(st.versions[0].checkpointed, at_a);
            assert_eq!(st.versions[0].applied, ends(&stream));
        }
        // Crash: the records 400..700 were applied in memory only.
        views.abandon();
    }
    let (_log, _stream, views) = open(&data, &config);
    for (name, _) in VIEWS {
        assert_eq!(
            checkpointed(&views, name),
            at_a,
            "the reopened version starts at the last checkpoint"
        );
    }
    caught_up(&views);
    check(&views, 700);
    for (name, _) in VIEWS {
        let v2 = views.rebuild(name, None).unwrap();
        assert!(
            views
                .wait_caught_up(name, Some(v2), Duration::from_secs(30))
                .unwrap()
        );
        assert_eq!(
            views.digest(name, None).unwrap(),
            views.digest(name, Some(v2)).unwrap(),
            "view {name}: replayed != rebuilt"
        );
    }
}

#[test]
fn crashes_with_frequent_checkpoints_and_full_images_equal_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A checkpoint after every batch, and a full image instead of a delta whenever the
    // deltas outgrow twice the last image.
    let config = ViewsConfig {
        checkpoint_interval: Duration::from_secs(24 * 3600),
        checkpoint_bytes: 1,
        compact_min_bytes: 1,
        ..ViewsConfig::default()
    };
    let mut n = 0;
    for round in 0..4 {
        let (_log, stream, views) = open(&data, &config);
        if round == 0 {
            for (name, spec) in VIEWS {
                views.create(name, spec.as_bytes()).unwrap();
            }
        }
        append(&stream, n..n + 250);
        n += 250;
        caught_up(&views);
        check(&views, n);
        for (name, _) in VIEWS {
            // A checkpoint follows every batch, just after it is published.
            let st = views.status(name, false).unwrap();
            let v = &st.versions[0];
            assert!(
                v.checkpointed.iter().all(|(p, c)| *c <= v.applied[p]),
                "{v:?}"
            );
        }
        views.abandon();
    }
}

#[test]
fn state_over_its_memory_limit_stops_the_processor_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ViewsConfig {
        state_bytes_max: 1024,
        ..ViewsConfig::default()
    };
    let (_log, stream, views) = open(&data, &config);
    views.create("t", TABLE.as_bytes()).unwrap();
    append(&stream, 0..400);
    let st = views.status("t", false).unwrap();
    let error = (0..3000)
        .find_map(|_| {
            let e = views.status("t", false).unwrap().versions[0].error.clone();
            if e.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            e
        })
        .unwrap_or_else(|| panic!("no error: {st:?}"));
    let want = ViewError::StateTooLarge {
        view: "t".into(),
        version: 1,
        partition: 0,
        bytes: 0,
        max: 1024,
    }
    .to_string();
    let stem = &want[..want.find("partition").unwrap()];
    assert!(error.contains(stem), "{error}");
    assert!(error.contains("the limit is 1024"), "{error}");
    // The version keeps serving what it has.
    views
        .scan(
            "t",
            &ScanRange {
                limit: 10,
                ..ScanRange::default()
            },
            &ReadOptions::default(),
        )
        .unwrap();
}

/// A store whose version spaces fail every commit while `fail` is set, as a full disk
/// (ENOSPC) would.
struct FullDisk {
    inner: FjallStore,
    fail: Arc<AtomicBool>,
}

struct FullDiskSpace {
    inner: Arc<dyn Space>,
    fail: Arc<AtomicBool>,
}

impl StateStore for FullDisk {
    fn open_space(&self, name: &str) -> logbook_views::Result<Arc<dyn Space>> {
        let inner = self.inner.open_space(name)?;
        if name.starts_with('v') {
            Ok(Arc::new(FullDiskSpace {
                inner,
                fail: self.fail.clone(),
            }))
        } else {
            Ok(inner)
        }
    }
    fn drop_space(&self, name: &str) -> logbook_views::Result<()> {
        self.inner.drop_space(name)
    }
    fn space_names(&self) -> Vec<String> {
        self.inner.space_names()
    }
    fn sync(&self) -> logbook_views::Result<()> {
        self.inner.sync()
    }
}

impl Space for FullDiskSpace {
    fn commit(&self, writes: Vec<Write>) -> logbook_views::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ViewError::Store {
                op: "commit",
                reason: "No space left on device (os error 28)".into(),
            });
        }
        self.inner.commit(writes)
    }
    fn get(&self, key: &[u8]) -> logbook_views::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn snapshot(&self) -> Box<dyn SpaceSnapshot + '_> {
        self.inner.snapshot()
    }
}

fn append_keys(stream: &Stream, r: std::ops::Range<u64>) {
    for chunk in r.collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| Record::keyed(format!("k{i}"), format!("{{\"v\":{i}}}")))
            .collect();
        stream.append_batch(batch).unwrap().wait().unwrap();
    }
}

/// Polls `f` every 5 ms for up to 10 s; whether it held.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn open_full_disk(data: &Path, config: ViewsConfig) -> (Arc<Stream>, Arc<AtomicBool>, Views) {
    let log = Arc::new(Log::open(data).unwrap());
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let store = FullDisk {
        inner: FjallStore::open(&data.join("views")).unwrap(),
        fail: fail.clone(),
    };
    let views = Views::open_with_store_config(log, Arc::new(store), config).unwrap();
    views.create("t", TABLE.as_bytes()).unwrap();
    (stream, fail, views)
}

/// Review 3: a checkpoint failing on a full disk used to stop the processor for good.
/// docs/DESIGN.md: a full disk gives a clear error, corrupts nothing and recovers when space
/// returns.
#[test]
fn a_checkpoint_disk_error_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ViewsConfig {
        checkpoint_interval: Duration::from_millis(10),
        ..ViewsConfig::default()
    };
    let (stream, fail, views) = open_full_disk(&data, config);
    append_keys(&stream, 0..100);
    assert!(
        views
            .wait_caught_up("t", None, Duration::from_secs(10))
            .unwrap()
    );
    assert!(eventually(|| checkpointed(&views, "t")[&0] == 100));
    // The disk fills: the next checkpoint fails, status says so.
    fail.store(true, Ordering::SeqCst);
    append_keys(&stream, 100..200);
    assert!(
        eventually(|| views.status("t", false).unwrap().versions[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device"))),
        "no checkpoint error in status: {:?}",
        views.status("t", false).unwrap()
    );
    // The processor keeps applying (the pending delta is far under its bound).
    assert!(
        views
            .wait_caught_up("t", None, Duration::from_secs(10))
            .unwrap()
    );
    assert_eq!(checkpointed(&views, "t")[&0], 100);
    let opts = ReadOptions::default();
    assert_eq!(views.get("t", "k150", &opts).unwrap().rows.len(), 1);
    // Space returns: the checkpoint is retried, the error goes away.
    fail.store(false, Ordering::SeqCst);
    append_keys(&stream, 200..300);
    assert!(
        views
            .wait_caught_up("t", None, Duration::from_secs(10))
            .unwrap()
    );
    assert!(
        eventually(|| {
            let st = views.status("t", false).unwrap();
            st.versions[0].checkpointed[&0] == 300 && st.versions[0].error.is_none()
        }),
        "{:?}",
        views.status("t", false).unwrap()
    );
    // What was checkpointed is complete: a crash now loses nothing.
    views.abandon();
    drop(views);
    let log = Arc::new(Log::open(&data).unwrap());
    let views = Views::open(log, &data.join("views")).unwrap();
    assert_eq!(checkpointed(&views, "t")[&0], 300);
    assert!(
        views
            .wait_caught_up("t", None, Duration::from_secs(10))
            .unwrap()
    );
    for k in [0, 150, 299] {
        let r = views.get("t", &format!("k{k}"), &opts).unwrap();
        assert_eq!(r.rows[0].value["v"], k, "k{k}");
    }
}

/// While checkpoints fail, the un-checkpointed delta stays bounded: the processor pauses
/// applying at its bound and resumes once a checkpoint succeeds.
#[test]
fn failing_checkpoints_pause_applying_at_the_pending_bound() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ViewsConfig {
        checkpoint_bytes: 1024,
        ..ViewsConfig::default()
    };
    let (stream, fail, views) = open_full_disk(&data, config);
    fail.store(true, Ordering::SeqCst);
    append_keys(&stream, 0..20_000);
    assert!(eventually(|| views.status("t", false).unwrap().versions[0]
        .error
        .is_some()));
    // A batch is at most 4096 records and the bound is 4 KiB: it can never catch up.
    assert!(
        !views
            .wait_caught_up("t", None, Duration::from_millis(300))
            .unwrap()
    );
    let st = views.status("t", false).unwrap();
    assert!(st.versions[0].applied[&0] <= 2 * 4096, "{st:?}");
    assert_eq!(st.versions[0].checkpointed.get(&0).copied().unwrap_or(0), 0);
    fail.store(false, Ordering::SeqCst);
    assert!(
        views
            .wait_caught_up("t", None, Duration::from_secs(10))
            .unwrap()
    );
    assert!(eventually(|| {
        let st = views.status("t", false).unwrap();
        st.versions[0].checkpointed[&0] == 20_000 && st.versions[0].error.is_none()
    }));
}

/// Review 3: after a crash a version resumes from an older checkpoint; a read without a
/// token right after reopening must not show less than reads showed before the crash
/// (the floor of what was shown is in memory only; open sets it to the durable end).
#[test]
fn reads_do_not_go_backwards_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ViewsConfig {
        checkpoint_interval: Duration::from_secs(24 * 3600),
        checkpoint_bytes: usize::MAX,
        ..ViewsConfig::default()
    };
    let opts = ReadOptions::default();
    {
        let log = Arc::new(Log::open(&data).unwrap());
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(1))
            .unwrap();
        let views =
            Views::open_with_config(log.clone(), &data.join("views"), config.clone()).unwrap();
        views.create("t", TABLE.as_bytes()).unwrap();
        stream
            .append_batch(vec![Record::keyed("x", r#"{"v":1}"#)])
            .unwrap()
            .wait()
            .unwrap();
        assert!(
            views
                .wait_caught_up("t", None, Duration::from_secs(10))
                .unwrap()
        );
        views.close(); // checkpoint at v = 1
    }
    let log = Arc::new(Log::open(&data).unwrap());
    let stream = log.stream("s").unwrap();
    {
        let views =
            Views::open_with_config(log.clone(), &data.join("views"), config.clone()).unwrap();
        append_keys(&stream, 0..20_000);
        stream
            .append_batch(vec![Record::keyed("x", r#"{"v":2}"#)])
            .unwrap()
            .wait()
            .unwrap();
        assert!(
            views
                .wait_caught_up("t", None, Duration::from_secs(60))
                .unwrap()
        );
        let before = views.get("t", "x", &opts).unwrap();
        assert_eq!(before.rows[0].value["v"], 2);
        views.abandon(); // crash: nothing since the last checkpoint is saved
    }
    let views = Views::open_with_config(log.clone(), &data.join("views"), config).unwrap();
    assert_eq!(
        checkpointed(&views, "t")[&0],
        1,
        "resumes from the old checkpoint"
    );
    let after = views.get("t", "x", &opts).unwrap();
    assert_eq!(
        after.rows[0].value["v"], 2,
        "the read went backwards across the crash (applied {:?})",
        after.applied
    );
    assert!(after.applied[&0] > 20_000);
}
