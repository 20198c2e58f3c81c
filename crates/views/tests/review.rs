//! Fresh-eyes review of the views crate: attacks on exactly-once, determinism, reads, tokens,
//! bad specs and digests. Tests marked `#[ignore = "BUG: …"]` expose a defect and pass once it
//! is fixed; the others record what held.

#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_log::{FsyncPolicy, Log, Position, Record, Stream, StreamConfig};
use logbook_views::{ConsistencyToken, ReadOptions, Row, ScanRange, ViewError, Views};
use serde_json::{Value, json};

fn setup(partitions: u32) -> (tempfile::TempDir, Arc<Log>, Arc<Stream>, Views) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(partitions))
        .unwrap();
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    (dir, log, stream, views)
}

fn put(stream: &Stream, records: Vec<Record>) -> Vec<Position> {
    stream.append_batch(records).unwrap().wait().unwrap()
}

fn kv(k: &str, v: &str) -> Record {
    Record::keyed(k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn caught_up(views: &Views, name: &str, version: Option<u64>) {
    assert!(
        views
            .wait_caught_up(name, version, Duration::from_secs(20))
            .unwrap(),
        "{name} did not catch up"
    );
}

fn ro() -> ReadOptions {
    ReadOptions::default()
}

/// Every row, page by page, with a guard against cursors that never end.
fn scan_all(views: &Views, name: &str, limit: usize) -> (Vec<Row>, bool) {
    let mut out = Vec::new();
    let mut range = ScanRange {
        limit,
        ..ScanRange::default()
    };
    for _ in 0..50 {
        let page = views.scan(name, &range, &ro()).unwrap();
        out.extend(page.rows);
        match page.next {
            Some(n) => range.start = Some(n),
            None => return (out, true),
        }
    }
    (out, false)
}

fn rows_by_key(rows: &[Row]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect()
}

fn get(views: &Views, name: &str, key: &str) -> Option<Value> {
    views
        .get(name, key, &ro())
        .unwrap()
        .rows
        .first()
        .map(|r| r.value.clone())
}

// ---------------------------------------------------------------------------------------
// Exactly-once and determinism: tricky streams, live == hand-computed model == rebuilt.
// ---------------------------------------------------------------------------------------

const AGG: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{
    "n":{"fn":"count"},"s":{"fn":"sum","field":"v"},"mn":{"fn":"min","field":"v"},
    "mx":{"fn":"max","field":"v"},"a":{"fn":"avg","field":"v"},"d":{"fn":"count_distinct","field":"v"}}}"#;

#[test]
fn tricky_stream_live_equals_model_equals_rebuilt() {
    let (_dir, _log, stream, views) = setup(3);
    views.create("agg", AGG.as_bytes()).unwrap();
    views
        .create(
            "tbl",
            br#"{"source":"s","kind":"table","fields":["g","v"],"filter":{"field":"v","op":"is_not_null"}}"#,
        )
        .unwrap();
    views
        .create("idx", br#"{"source":"s","kind":"index","on":["g","v"]}"#)
        .unwrap();
    let max = i64::MAX;
    let recs = vec![
        kv("k1", r#"{"g":"x|y\\z","v":1}"#),
        kv("k2", r#"{"g":"x|y\\z","v":2.5}"#),
        kv("k1", r#"{"g":"é","v":"str"}"#), // moves group, int -> string
        Record::keyed(b"k3".to_vec(), b"null".to_vec()), // delete of a key never seen
        Record::keyed(b"k3b".to_vec(), Vec::new()), // empty value: also a delete
        kv("k2", r#"{"g":"x|y\\z"}"#),      // float -> missing; filter flips out
        kv("k4", &format!(r#"{{"g":"é","v":{max}}}"#)),
        kv("k5", &format!(r#"{{"g":"é","v":{max}}}"#)),
        kv("k6", r#"{"g":"é","v":0.1}"#),
        kv("k7", r#"{"g":"é","v":0.2}"#),
        kv("b1", &format!(r#"{{"g":"big","v":{max}}}"#)),
        kv("b2", &format!(r#"{{"g":"big","v":{max}}}"#)),
        kv("f1", r#"{"g":"f","v":0.1}"#),
        kv("f2", r#"{"g":"f","v":0.2}"#),
        // min retracted repeatedly
        kv("m1", r#"{"g":"m","v":5}"#),
        kv("m2", r#"{"g":"m","v":5}"#),
        kv("m3", r#"{"g":"m","v":3}"#),
        kv("m4", r#"{"g":"m","v":3}"#),
        kv("m5", r#"{"g":"m","v":1}"#),
        Record::keyed(b"m5".to_vec(), b"null".to_vec()),
        Record::keyed(b"m3".to_vec(), b"null".to_vec()),
    ];
    // One record per append, so live processing sees many small batches.
    for r in recs {
        put(&stream, vec![r]);
    }
    caught_up(&views, "agg", None);
    caught_up(&views, "tbl", None);
    caught_up(&views, "idx", None);
    let g = |k: &str| get(&views, "agg", k).unwrap_or_else(|| panic!("group {k} missing"));
    // `|` and `\` escaped in the row key.
    let xy = g("x\\|y\\\\z");
    assert_eq!(xy["g"], "x|y\\z");
    assert_eq!(
        (&xy["n"], &xy["s"], &xy["mn"], &xy["mx"], &xy["a"], &xy["d"]),
        (
            &json!(1),
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &json!(0)
        )
    );
    let e = g("é");
    assert_eq!(e["n"], 5);
    assert_eq!(e["mn"], 0.1);
    assert_eq!(e["mx"], "str");
    assert_eq!(e["d"], 4);
    assert_eq!(e["s"].as_f64().unwrap(), 2.0 * max as f64 + 0.3);
    let big = g("big");
    assert_eq!(
        big["s"], "18446744073709551614",
        "exact i128 sum beyond i64"
    );
    assert_eq!(big["a"].as_f64().unwrap(), max as f64);
    let f = g("f");
    assert_eq!(
        f["s"].as_f64().unwrap().to_bits(),
        0.3f64.to_bits(),
        "0.1 + 0.2 is 0.3 in fixed point"
    );
    assert_eq!(f["a"].as_f64().unwrap().to_bits(), 0.15f64.to_bits());
    let m = g("m");
    assert_eq!(
        (&m["mn"], &m["mx"], &m["n"]),
        (&json!(3), &json!(5), &json!(3))
    );
    // Table: k2 filtered out, deletes of unseen keys are no-ops.
    let t = rows_by_key(&scan_all(&views, "tbl", 2).0);
    assert!(!t.contains_key("k2") && !t.contains_key("k3") && !t.contains_key("m5"));
    assert_eq!(t["k1"], json!({"g":"é","v":"str"}));
    // Index on two fields.
    let idx = get(&views, "idx", "é|str").unwrap();
    assert_eq!(idx["keys"], json!(["k1"]));
    assert!(get(&views, "idx", "x\\|y\\\\z|2.5").is_none(), "k2 moved");

    // Rebuilt versions equal the live ones, row for row and by digest.
    for name in ["agg", "tbl", "idx"] {
        let live = scan_all(&views, name, 3).0;
        let (d_live, _) = views.digest(name, None).unwrap();
        let v2 = views.rebuild(name, None).unwrap();
        caught_up(&views, name, Some(v2));
        let (d_new, _) = views.digest(name, Some(v2)).unwrap();
        views.switch(name, v2, 5_000).unwrap();
        let rebuilt = scan_all(&views, name, 3).0;
        assert_eq!(live, rebuilt, "{name}: live != rebuilt");
        assert_eq!(d_live, d_new, "{name}: digests differ");
    }
}

#[test]
fn restarts_while_appending_apply_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    {
        let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
        views
            .create(
                "c",
                br#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"n":{"fn":"count"},"t":{"fn":"sum","field":"v"}}}"#,
            )
            .unwrap();
    }
    let mut model: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut i = 0i64;
    for round in 0..6 {
        let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
        for _ in 0..20 {
            let batch: Vec<Record> = (0..50)
                .map(|j| {
                    let k = format!("k{}", (i + j) % 97);
                    let g = format!("g{}", (i + j) % 5);
                    let v = (i + j) * 3 - 1000;
                    model.insert(k.clone(), (g.clone(), v));
                    kv(&k, &format!(r#"{{"g":"{g}","v":{v}}}"#))
                })
                .collect();
            i += 50;
            put(&stream, batch);
        }
        // Drop the engine at an arbitrary point of processing (every other round: at once).
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(3));
        }
        drop(views);
    }
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    caught_up(&views, "c", None);
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (g, v) in model.values() {
        let e = want.entry(g.clone()).or_default();
        e.0 += 1;
        e.1 += v;
    }
    let got: BTreeMap<String, (i64, i64)> = scan_all(&views, "c", 2)
        .0
        .into_iter()
        .map(|r| {
            (
                r.key,
                (
                    r.value["n"].as_i64().unwrap(),
                    r.value["t"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
}

/// SIGKILL of a process that is applying records, then a restart: the view equals the model.
/// The child is this test binary re-run with `REVIEW_SIGKILL_CHILD` set.
#[test]
fn sigkill_during_processing_then_restart_equals_model() {
    const SPEC: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"n":{"fn":"count"},"t":{"fn":"sum","field":"v"},"mx":{"fn":"max","field":"v"}}}"#;
    if let Ok(d) = std::env::var("REVIEW_SIGKILL_CHILD") {
        let d = std::path::PathBuf::from(d);
        let log = Arc::new(Log::open(d.join("data")).unwrap());
        let stream = log.stream("s").unwrap();
        let views = Views::open(log.clone(), &d.join("views")).unwrap();
        if views.info_of("c").is_err() {
            views.create("c", SPEC.as_bytes()).unwrap();
        }
        let mut i = stream.record_count() as i64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let batch: Vec<Record> = (0..200)
                .map(|j| {
                    let n = i + j;
                    kv(
                        &format!("k{}", n % 1013),
                        &format!(r#"{{"g":"g{}","v":{}}}"#, n % 7, n % 1000),
                    )
                })
                .collect();
            put(&stream, batch);
            i += 200;
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path().join("data")).unwrap();
        let s = log
            .create_stream("s", StreamConfig::with_partitions(3))
            .unwrap();
        let batch: Vec<Record> = (0..20_000i64)
            .map(|n| {
                kv(
                    &format!("k{}", n % 1013),
                    &format!(r#"{{"g":"g{}","v":{}}}"#, n % 7, n % 1000),
                )
            })
            .collect();
        for c in batch.chunks(2000) {
            put(&s, c.to_vec());
        }
    }
    let exe = std::env::current_exe().unwrap();
    for delay_ms in [150u64, 400, 250] {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "sigkill_during_processing_then_restart_equals_model",
                "--test-threads=1",
            ])
            .env("REVIEW_SIGKILL_CHILD", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let stream = log.stream("s").unwrap();
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    caught_up(&views, "c", None);
    // Model: latest record per key, recomputed from the whole stream.
    let mut latest: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
    for p in 0..stream.partition_count() {
        let mut from = 0;
        loop {
            let rs = stream.read(p, from, 10_000, 64 << 20).unwrap();
            if rs.is_empty() {
                break;
            }
            for r in &rs {
                latest.insert(
                    r.key.clone().unwrap(),
                    serde_json::from_slice(&r.value).unwrap(),
                );
                from = r.offset + 1;
            }
        }
    }
    let mut want: BTreeMap<String, Value> = BTreeMap::new();
    let mut acc: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for v in latest.values() {
        let e = acc
            .entry(v["g"].as_str().unwrap().to_string())
            .or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += v["v"].as_i64().unwrap();
        e.2 = e.2.max(v["v"].as_i64().unwrap());
    }
    for (g, (n, t, mx)) in acc {
        want.insert(g.clone(), json!({"g": g, "n": n, "t": t, "mx": mx}));
    }
    let got = rows_by_key(&scan_all(&views, "c", 3).0);
    assert_eq!(got, want, "after SIGKILLs the view differs from the model");
}

// ---------------------------------------------------------------------------------------
// Findings: determinism / semantics.
// ---------------------------------------------------------------------------------------

#[test]
fn max_of_an_int_and_a_larger_float_beyond_2_pow_53() {
    let (_dir, _log, stream, views) = setup(1);
    views
        .create(
            "mm",
            br#"{"source":"s","kind":"aggregate","aggregates":{"mx":{"fn":"max","field":"v"},"mn":{"fn":"min","field":"v"}}}"#,
        )
        .unwrap();
    // 2^53 + 3 (exact i64) rounds to the f64 2^53 + 4, which is the larger number.
    put(
        &stream,
        vec![
            kv("a", r#"{"v":9007199254740995}"#),
            kv("b", r#"{"v":9007199254740996.0}"#),
        ],
    );
    caught_up(&views, "mm", None);
    let row = get(&views, "mm", "").unwrap();
    assert_eq!(row["mn"], json!(9_007_199_254_740_995i64), "min");
    assert!(
        row["mx"].is_f64() && row["mx"].as_f64() == Some(9_007_199_254_740_996.0),
        "max should be the float 9007199254740996.0, got {}",
        row["mx"]
    );
}

#[test]
fn count_distinct_of_equal_int_and_float() {
    let (_dir, _log, stream, views) = setup(1);
    views
        .create(
            "cd",
            br#"{"source":"s","kind":"aggregate","aggregates":{"d":{"fn":"count_distinct","field":"v"},"da":{"fn":"count_distinct","field":"w"}}}"#,
        )
        .unwrap();
    put(
        &stream,
        vec![
            kv("a", r#"{"v":1,"w":[1]}"#),
            kv("b", r#"{"v":1.0,"w":[1.0]}"#),
        ],
    );
    caught_up(&views, "cd", None);
    let row = get(&views, "cd", "").unwrap();
    assert_eq!(row["da"], 1, "arrays [1] and [1.0] are one value");
    assert_eq!(
        row["d"], 1,
        "1 and 1.0 are one value (as in eq and group keys)"
    );
}

#[test]
fn group_values_follow_the_records_still_in_the_group() {
    let (_dir, _log, stream, views) = setup(1);
    views
        .create(
            "gv",
            br#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"n":{"fn":"count"}}}"#,
        )
        .unwrap();
    put(
        &stream,
        vec![
            kv("a", r#"{"g":1}"#),
            kv("b", r#"{"g":"1"}"#),
            Record::keyed(b"b".to_vec(), b"null".to_vec()),
        ],
    );
    caught_up(&views, "gv", None);
    let row = get(&views, "gv", "1").unwrap();
    assert_eq!(row["n"], 1);
    assert_eq!(
        row["g"],
        json!(1),
        "only record a (g = number 1) is in the group"
    );
}

#[test]
fn unkeyed_records_do_not_collide_with_keys_that_look_synthetic() {
    let (_dir, _log, stream, views) = setup(1);
    views
        .create("ix", br#"{"source":"s","kind":"index","on":["g"]}"#)
        .unwrap();
    put(&stream, vec![Record::new(br#"{"g":"x"}"#.to_vec())]); // unkeyed, offset 0
    put(&stream, vec![kv("@0:0", r#"{"g":"x"}"#)]); // a real key that looks synthetic
    put(
        &stream,
        vec![Record::keyed(b"@0:0".to_vec(), b"null".to_vec())],
    );
    caught_up(&views, "ix", None);
    let row = get(&views, "ix", "x");
    assert!(
        row.is_some(),
        "the unkeyed record (never replaced) must still be indexed under x"
    );
}

// ---------------------------------------------------------------------------------------
// Findings: pagination cursors and digests.
// ---------------------------------------------------------------------------------------

#[test]
fn index_cursor_with_nul_in_the_value() {
    let (_dir, _log, stream, views) = setup(1);
    views
        .create("ix", br#"{"source":"s","kind":"index","on":["g"]}"#)
        .unwrap();
    put(
        &stream,
        vec![
            kv("k1", r#"{"g":"a\u0000b"}"#),
            kv("k2", r#"{"g":"a\u0000b"}"#),
        ],
    );
    caught_up(&views, "ix", None);
    let (rows, ended) = scan_all(&views, "ix", 1);
    let pks: Vec<Value> = rows
        .iter()
        .flat_map(|r| r.value["keys"].as_array().unwrap().clone())
        .collect();
    assert!(ended, "pagination never ended; first pks {:?}", &pks[..4]);
    assert_eq!(pks, vec![json!("k1"), json!("k2")]);
}

#[test]
fn non_utf8_record_keys_in_tables() {
    let (_dir, log, stream, views) = setup(1);
    views
        .create("t", br#"{"source":"s","kind":"table"}"#)
        .unwrap();
    put(
        &stream,
        vec![
            Record::keyed(b"a".to_vec(), b"1".to_vec()),
            Record::keyed(b"a\xc0".to_vec(), b"2".to_vec()),
            Record::keyed(b"a\xc1".to_vec(), b"3".to_vec()),
        ],
    );
    caught_up(&views, "t", None);
    // Digest: two views differing only in a (non-UTF-8) key must differ.
    let s2 = log
        .create_stream("s2", StreamConfig::with_partitions(1))
        .unwrap();
    views
        .create("t2", br#"{"source":"s2","kind":"table"}"#)
        .unwrap();
    put(
        &s2,
        vec![
            Record::keyed(b"a".to_vec(), b"1".to_vec()),
            Record::keyed(b"a\xc0".to_vec(), b"2".to_vec()),
            Record::keyed(b"a\xfe".to_vec(), b"3".to_vec()),
        ],
    );
    caught_up(&views, "t2", None);
    let (rows, _) = scan_all(&views, "t", 1);
    assert_eq!(rows.len(), 3, "pagination skipped rows: {rows:?}");
    assert_ne!(
        views.digest("t", None).unwrap().0,
        views.digest("t2", None).unwrap().0,
        "different keys, equal digests"
    );
}

#[test]
fn digest_ignores_partition_count_and_batching_but_not_contents() {
    // Same records, different batching: equal digests. A changed float or a deleted row:
    // different digests.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    let spec = |s: &str| {
        format!(
            r#"{{"source":"{s}","kind":"aggregate","group_by":["g"],"aggregates":{{"a":{{"fn":"avg","field":"v"}},"n":{{"fn":"count"}}}}}}"#
        )
    };
    let recs = |last: &str| -> Vec<Record> {
        let mut v: Vec<Record> = (0..30)
            .map(|i| {
                kv(
                    &format!("k{i}"),
                    &format!(r#"{{"g":"g{}","v":{}}}"#, i % 4, i),
                )
            })
            .collect();
        v.push(kv("z", last));
        v
    };
    let mk = |name: &str, records: Vec<Record>, batch: usize| {
        let s = log
            .create_stream(name, StreamConfig::with_partitions(2))
            .unwrap();
        views.create(name, spec(name).as_bytes()).unwrap();
        for c in records.chunks(batch) {
            put(&s, c.to_vec());
        }
        caught_up(&views, name, None);
        views.digest(name, None).unwrap().0
    };
    let a = mk("a", recs(r#"{"g":"g0","v":0.5}"#), 1);
    let b = mk("b", recs(r#"{"g":"g0","v":0.5}"#), 31);
    let c = mk("c", recs(r#"{"g":"g0","v":0.500000001}"#), 31);
    let d = mk("d", recs("null"), 31);
    assert_eq!(a, b, "batching changed the digest");
    assert_ne!(a, c, "a changed float did not change the digest");
    assert_ne!(a, d, "a deleted row did not change the digest");
}

// ---------------------------------------------------------------------------------------
// Processors: durability, dropped streams.
// ---------------------------------------------------------------------------------------

#[test]
fn processors_never_read_past_the_durable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let mut cfg = StreamConfig::with_partitions(1);
    cfg.fsync = FsyncPolicy::Never;
    let never = log.create_stream("never", cfg.clone()).unwrap();
    cfg.fsync = FsyncPolicy::Interval { interval_ms: 50 };
    let interval = log.create_stream("iv", cfg).unwrap();
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    views
        .create("vn", br#"{"source":"never","kind":"table"}"#)
        .unwrap();
    views
        .create("vi", br#"{"source":"iv","kind":"table"}"#)
        .unwrap();
    put(&never, vec![kv("a", "1")]);
    let pos = put(&interval, vec![kv("a", "1")]);
    let p = never.partition(0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = views.get("vn", "a", &ro()).unwrap();
    let durable = p.durable_offset();
    assert!(
        r.applied[&0] <= durable,
        "applied {} past the durable offset {durable}",
        r.applied[&0]
    );
    assert_eq!(r.rows.is_empty(), durable == 0);
    // Interval: visible within the interval (plus slack), via a token.
    let token = logbook_views::token_of(&*interval, &pos).encode().unwrap();
    let r = views
        .get(
            "vi",
            "a",
            &ReadOptions {
                token: Some(token),
                timeout_ms: 2_000,
            },
        )
        .unwrap();
    assert_eq!(r.rows.len(), 1);
}

/// CPU time (ticks) of this process's threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

#[test]
fn dropping_the_source_stream_stops_processors_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let stream = log
        .create_stream("dropme", StreamConfig::with_partitions(2))
        .unwrap();
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    views
        .create("dz", br#"{"source":"dropme","kind":"table"}"#)
        .unwrap();
    put(&stream, vec![kv("a", "1"), kv("b", "2")]);
    caught_up(&views, "dz", None);
    drop(stream);
    log.drop_stream("dropme").unwrap();
    let fresh = log
        .create_stream("dropme", StreamConfig::with_partitions(2))
        .unwrap();
    let pos = put(&fresh, vec![kv("c", "3")]);
    std::thread::sleep(Duration::from_millis(100));
    let before = thread_ticks("view-dz-");
    std::thread::sleep(Duration::from_millis(1000));
    let spent = thread_ticks("view-dz-") - before;
    // A token of the new incarnation is refused with a named error (this held).
    let token = logbook_views::token_of(&*fresh, &pos).encode().unwrap();
    let e = views
        .get(
            "dz",
            "c",
            &ReadOptions {
                token: Some(token),
                timeout_ms: 100,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ViewError::TokenIncarnation { .. }), "{e:?}");
    let st = views.status("dz", false).unwrap();
    let error = st.versions[0].error.clone();
    assert!(
        spent < 20 && error.is_some(),
        "processors of a dropped stream used {spent} CPU ticks in 1 s (busy loop); status error: {error:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Reads: tokens, scans, rollout.
// ---------------------------------------------------------------------------------------

#[test]
fn bad_tokens_are_named_errors_and_waits_are_bounded() {
    let (_dir, log, stream, views) = setup(2);
    views
        .create("t", br#"{"source":"s","kind":"table"}"#)
        .unwrap();
    put(&stream, vec![kv("a", "1")]);
    caught_up(&views, "t", None);
    let read = |token: &str, timeout_ms: u64| {
        views.get(
            "t",
            "a",
            &ReadOptions {
                token: Some(token.to_string()),
                timeout_ms,
            },
        )
    };
    for bad in ["", "garbage", "v1.", "v1.!!!", "v2.AA", "v1.AQ", "v1.AAAA"] {
        let e = read(bad, 0).unwrap_err();
        assert!(
            matches!(e, ViewError::InvalidToken { .. }),
            "{bad:?}: {e:?}"
        );
    }
    let huge = format!("v1.{}", "A".repeat(logbook_views::limits::TOKEN_BYTES_MAX));
    assert!(matches!(
        read(&huge, 0).unwrap_err(),
        ViewError::TokenTooLarge { .. }
    ));
    // A partition that does not exist.
    let mut t = logbook_views::token_of(
        &*stream,
        &[Position {
            partition: 7,
            offset: 0,
        }],
    );
    assert!(matches!(
        read(&t.encode().unwrap(), 0).unwrap_err(),
        ViewError::InvalidToken { .. }
    ));
    // A huge offset: bounded wait, named error.
    t = logbook_views::token_of(
        &*stream,
        &[Position {
            partition: 1,
            offset: u64::MAX - 1,
        }],
    );
    let started = Instant::now();
    let e = read(&t.encode().unwrap(), 200).unwrap_err();
    assert!(matches!(e, ViewError::ConsistencyTimeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        read(&t.encode().unwrap(), 60_001).unwrap_err(),
        ViewError::InvalidRead {
            parameter: "timeout_ms",
            ..
        }
    ));
    // A token that names only another stream cannot be waited for: refused by name, not
    // silently taken as satisfied.
    let other = log
        .create_stream("other", StreamConfig::with_partitions(1))
        .unwrap();
    let op = put(&other, vec![kv("x", "1")]);
    let mut merged = logbook_views::token_of(&*other, &op);
    let tok = merged.encode().unwrap();
    let e = read(&tok, 0).unwrap_err();
    assert!(
        matches!(&e, ViewError::InvalidToken { reason } if reason.contains("\"other\"") && reason.contains("\"s\"")),
        "{e:?}"
    );
    // So is a token naming no stream at all.
    let empty = ConsistencyToken::default().encode().unwrap();
    assert!(matches!(
        read(&empty, 0).unwrap_err(),
        ViewError::InvalidToken { .. }
    ));
    // A merged token that also names the source is waited for on the source's positions.
    let sp = put(&stream, vec![kv("b", "2")]);
    merged.merge(&logbook_views::token_of(&*stream, &sp));
    let r = views
        .get(
            "t",
            "b",
            &ReadOptions {
                token: Some(merged.encode().unwrap()),
                timeout_ms: 5_000,
            },
        )
        .unwrap();
    assert_eq!(r.rows.len(), 1);
}

#[test]
fn scan_edges_and_pagination() {
    let (_dir, _log, stream, views) = setup(3);
    views
        .create("t", br#"{"source":"s","kind":"table"}"#)
        .unwrap();
    views
        .create("ix", br#"{"source":"s","kind":"index","on":["g"]}"#)
        .unwrap();
    views
        .create(
            "ag",
            br#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"n":{"fn":"count"}}}"#,
        )
        .unwrap();
    let recs: Vec<Record> = (0..40)
        .map(|i| kv(&format!("k{i:02}"), &format!(r#"{{"g":"g|{}\\"}}"#, i % 7)))
        .collect();
    put(&stream, recs);
    for v in ["t", "ix", "ag"] {
        caught_up(&views, v, None);
    }
    for limit in [1, 2, 3, 39, 40, 41] {
        let (rows, ended) = scan_all(&views, "t", limit);
        assert!(ended);
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let want: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        assert_eq!(keys, want, "table limit {limit}");
        let (rows, ended) = scan_all(&views, "ix", limit);
        assert!(ended);
        let n: usize = rows
            .iter()
            .map(|r| r.value["keys"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, 40, "index limit {limit}");
        let (rows, ended) = scan_all(&views, "ag", limit);
        assert!(ended);
        assert_eq!(rows.len(), 7, "aggregate limit {limit}");
    }
    let scan = |name: &str, prefix: Option<&str>, start: Option<&str>, end: Option<&str>| {
        views
            .scan(
                name,
                &ScanRange {
                    prefix: prefix.map(str::to_string),
                    start: start.map(str::to_string),
                    end: end.map(str::to_string),
                    limit: 100,
                },
                &ro(),
            )
            .unwrap()
            .rows
            .len()
    };
    assert_eq!(scan("t", Some(""), None, None), 40);
    assert_eq!(
        scan("t", None, Some("k30"), Some("k10")),
        0,
        "reversed range"
    );
    assert_eq!(scan("t", None, Some("k10"), Some("k10")), 0, "empty range");
    assert_eq!(scan("t", Some("k1"), Some("k15"), None), 5);
    assert_eq!(scan("t", Some("k1"), None, Some("k13")), 3);
    assert_eq!(scan("ag", Some("g\\|"), None, None), 7, "escaped prefix");
    assert_eq!(
        scan("ix", Some("g\\|3"), None, None),
        1,
        "index keys are escaped too"
    );
    for limit in [0, 10_001] {
        let e = views
            .scan(
                "t",
                &ScanRange {
                    limit,
                    ..ScanRange::default()
                },
                &ro(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                ViewError::InvalidRead {
                    parameter: "limit",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn rollout_percentages_and_rollback() {
    let (_dir, _log, stream, views) = setup(2);
    views
        .create("t", br#"{"source":"s","kind":"table"}"#)
        .unwrap();
    put(
        &stream,
        (0..20).map(|i| kv(&format!("k{i}"), "1")).collect(),
    );
    let v1 = views.info_of("t").unwrap().current;
    let v2 = views.rebuild("t", None).unwrap();
    caught_up(&views, "t", Some(v2));
    assert!(matches!(
        views.rollout("t", v2, 101, 1000).unwrap_err(),
        ViewError::InvalidRead {
            parameter: "percent",
            ..
        }
    ));
    views.rollout("t", v2, 0, 1000).unwrap();
    assert_eq!(views.info_of("t").unwrap().rollout, None);
    for i in 0..20 {
        assert_eq!(views.get("t", &format!("k{i}"), &ro()).unwrap().version, v1);
    }
    views.rollout("t", v2, 50, 1000).unwrap();
    let served: std::collections::BTreeSet<u64> = (0..40)
        .map(|i| views.get("t", &format!("k{i}"), &ro()).unwrap().version)
        .collect();
    assert_eq!(served.len(), 2, "50% rollout served only {served:?}");
    views.rollout("t", v2, 100, 1000).unwrap();
    assert_eq!(views.info_of("t").unwrap().current, v2);
    assert!(matches!(
        views.rollout("t", 999, 10, 1000).unwrap_err(),
        ViewError::UnknownVersion { .. }
    ));
    assert!(
        views.drop_version("t", v2).is_err(),
        "dropped the current version"
    );
    views.switch("t", v1, 1000).unwrap();
    views.drop_version("t", v2).unwrap();
    assert_eq!(views.get("t", "k3", &ro()).unwrap().rows.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Bad specs and names.
// ---------------------------------------------------------------------------------------

fn spec_field(views: &Views, spec: &str) -> String {
    match views.create("bad", spec.as_bytes()).unwrap_err() {
        ViewError::InvalidSpec { field, .. } => field,
        e => panic!("{spec}: {e:?}"),
    }
}

#[test]
fn bad_specs_name_the_field_and_create_nothing() {
    let (dir, log, _s, views) = setup(1);
    let deep = vec!["a"; 17].join(".");
    let mut nested = r#"{"field":"a","op":"is_null"}"#.to_string();
    for _ in 0..17 {
        nested = format!(r#"{{"not":{nested}}}"#);
    }
    let cases: Vec<(String, &str)> = vec![
        (r#"{"source":5,"kind":"table"}"#.into(), "source"),
        (r#"{"source":"s","kind":5}"#.into(), "kind"),
        (r#"{"source":"s","kind":"index","on":[]}"#.into(), "on"),
        (r#"{"source":"s","kind":"index","on":[1]}"#.into(), "on[0]"),
        (r#"{"source":"s","kind":"index","on":["a","a"]}"#.into(), "on[1]"),
        (r#"{"source":"s","kind":"table","fields":["a..b"]}"#.into(), "fields[0]"),
        (format!(r#"{{"source":"s","kind":"table","fields":["{deep}"]}}"#), "fields[0]"),
        (r#"{"source":"s","kind":"aggregate","aggregates":{}}"#.into(), "aggregates"),
        (r#"{"source":"s","kind":"aggregate","group_by":["g"]}"#.into(), "aggregates"),
        (r#"{"source":"s","kind":"aggregate","aggregates":{"x":{"fn":"avg"}}}"#.into(), "aggregates.x.field"),
        (r#"{"source":"s","kind":"aggregate","aggregates":{"x":{"fn":"min"}}}"#.into(), "aggregates.x.field"),
        (r#"{"source":"s","kind":"aggregate","aggregates":{"x":{"fn":"median","field":"v"}}}"#.into(), "aggregates.x.fn"),
        (r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"g":{"fn":"count"}}}"#.into(), "aggregates.g"),
        (r#"{"source":"s","kind":"aggregate","group_by":"g","aggregates":{"n":{"fn":"count"}}}"#.into(), "group_by"),
        (r#"{"source":"s","kind":"table","filter":{"field":"a","op":"lt","value":[1]}}"#.into(), "filter.value"),
        (r#"{"source":"s","kind":"table","filter":{"field":"a","op":"eq"}}"#.into(), "filter.value"),
        (r#"{"source":"s","kind":"table","filter":{"field":"a","op":"is_null","value":1}}"#.into(), "filter.value"),
        (r#"{"source":"s","kind":"table","filter":{"and":{}}}"#.into(), "filter.and"),
        (r#"{"source":"s","kind":"table","filter":{"and":[],"or":[]}}"#.into(), "filter"),
        (r#"{"source":"s","kind":"table","filter":{"field":1,"op":"eq","value":1}}"#.into(), "filter.field"),
        (r#"{"source":"s","kind":"table","filter":[]}"#.into(), "filter"),
        (r#"{"source":"s","kind":"table","filter":{"field":"a","op":"eq","value":1,"x":2}}"#.into(), "filter.x"),
        (format!(r#"{{"source":"s","kind":"table","filter":{nested}}}"#), ""),
    ];
    for (spec, want) in &cases {
        let got = spec_field(&views, spec);
        if want.is_empty() {
            assert!(got.starts_with("filter"), "{spec}: field {got:?}");
        } else {
            assert_eq!(&got, want, "{spec}");
        }
    }
    // Not JSON, not an object, too large.
    for spec in [
        "nope".to_string(),
        "[]".to_string(),
        format!(
            r#"{{"source":"s","kind":"table","fields":["{}"]}}"#,
            "a".repeat(70_000)
        ),
    ] {
        assert!(matches!(
            views.create("bad", spec.as_bytes()).unwrap_err(),
            ViewError::InvalidSpec { .. }
        ));
    }
    // Unknown streams, including names that look like paths.
    for src in ["", "nope", "../s", "s/..", "/etc"] {
        let e = views
            .create(
                "bad",
                format!(r#"{{"source":"{src}","kind":"table"}}"#).as_bytes(),
            )
            .unwrap_err();
        assert!(matches!(e, ViewError::UnknownStream { .. }), "{src}: {e:?}");
    }
    // View names: no path traversal, nothing on disk.
    let spaces_before = std::fs::read_dir(dir.path().join("views")).unwrap().count();
    for name in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        ".hidden",
        "a\\b",
        "a b",
        "é",
        "a\0b",
        &"x".repeat(129),
    ] {
        let e = views
            .create(name, br#"{"source":"s","kind":"table"}"#)
            .unwrap_err();
        assert!(
            matches!(e, ViewError::InvalidViewName { .. }),
            "{name:?}: {e:?}"
        );
    }
    views
        .create("ok", br#"{"source":"s","kind":"table"}"#)
        .unwrap();
    assert!(matches!(
        views
            .create("ok", br#"{"source":"s","kind":"index","on":["a"]}"#)
            .unwrap_err(),
        ViewError::ViewExists { .. }
    ));
    assert_eq!(views.list().len(), 1);
    drop(views);
    let views = Views::open(log, &dir.path().join("views")).unwrap();
    assert_eq!(views.list().len(), 1);
    assert!(std::fs::read_dir(dir.path().join("views")).unwrap().count() <= spaces_before + 1);
    assert!(!dir.path().join("x").exists() && !dir.path().join("data").join("x").exists());
}

#[test]
fn missing_members_are_named() {
    let (_dir, _log, _s, views) = setup(1);
    assert_eq!(spec_field(&views, r#"{"source":"s"}"#), "kind");
    assert_eq!(spec_field(&views, r#"{"kind":"table"}"#), "source");
    assert_eq!(
        spec_field(
            &views,
            r#"{"source":"s","kind":"aggregate","aggregates":{"x":{"field":"v"}}}"#
        ),
        "aggregates.x.fn"
    );
}

#[test]
fn index_get_of_a_large_value_is_not_silently_truncated() {
    let (_dir, _log, stream, views) = setup(2);
    views
        .create("ix", br#"{"source":"s","kind":"index","on":["g"]}"#)
        .unwrap();
    let recs: Vec<Record> = (0..10_005)
        .map(|i| kv(&format!("k{i:05}"), r#"{"g":"hot"}"#))
        .collect();
    for c in recs.chunks(2_000) {
        put(&stream, c.to_vec());
    }
    caught_up(&views, "ix", None);
    let r = views.get("ix", "hot", &ro()).unwrap();
    let n = r.rows[0].value["keys"].as_array().unwrap().len();
    assert!(
        n == 10_005 || r.next.is_some(),
        "get returned {n} of 10,005 keys and no cursor to the rest"
    );
}
