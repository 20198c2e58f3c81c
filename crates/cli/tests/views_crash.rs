//! SIGKILL during view processing: a real `logbook serve` process resumes the processors of
//! a data directory and is killed at random moments; after restarts the views equal a model
//! recomputed from the log, and a rebuild has the same digest (no record applied twice or
//! skipped). The seed is printed; `VIEWS_CRASH_SEED=<n>` replays a run.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use logbook_log::{Log, Record, StreamConfig};
use logbook_views::{ReadOptions, ScanRange, Views};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const AGG: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{
  "n":{"fn":"count"},"sum":{"fn":"sum","field":"v"},"min":{"fn":"min","field":"v"},"max":{"fn":"max","field":"v"}}}"#;
const TABLE: &str = r#"{"source":"s","kind":"table"}"#;
const RECORDS: u64 = 30_000;

fn value_of(i: u64) -> Option<Value> {
    (!i.is_multiple_of(13))
        .then(|| json!({ "g": format!("g{}", i % 5), "v": (i * 7919 % 2001) as i64 - 1000 }))
}

fn key_of(i: u64) -> String {
    format!("k{}", i * 31 % 1_500)
}

fn scan_all(views: &Views, name: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut range = ScanRange {
        limit: 1000,
        ..ScanRange::default()
    };
    loop {
        let page = views.scan(name, &range, &ReadOptions::default()).unwrap();
        for r in page.rows {
            out.insert(r.key, r.value);
        }
        match page.next {
            Some(n) => range.start = Some(n),
            None => return out,
        }
    }
}

#[test]
fn views_survive_sigkill_during_processing() {
    let seed = std::env::var("VIEWS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u64>());
    eprintln!("VIEWS_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let log = Arc::new(Log::open(&data).unwrap());
        let stream = log
            .create_stream("s", StreamConfig::with_partitions(3))
            .unwrap();
        let mut i = 0;
        while i < RECORDS {
            let batch = (i..(i + 500).min(RECORDS))
                .map(|j| {
                    Record::keyed(
                        key_of(j),
                        value_of(j).map_or("null".into(), |v| v.to_string()),
                    )
                })
                .collect();
            stream.append_batch(batch).unwrap().wait().unwrap();
            i += 500;
        }
        // Create the views (their processors start, and stop when this process lets go).
        let views = Views::open(log.clone(), &data.join("views")).unwrap();
        views.create("agg", AGG.as_bytes()).unwrap();
        views.create("tab", TABLE.as_bytes()).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_logbook");
    let mut kills = 0;
    for _ in 0..8 {
        let mut child = Command::new(bin)
            // The server opens the data directory and resumes every view's processors.
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        // SIGKILL (std's kill sends SIGKILL on Unix).
        let _ = child.kill();
        child.wait().unwrap();
    }
    assert!(kills > 0, "no child was killed while running");
    // Restart in-process: the processors resume from their applied offsets.
    let log = Arc::new(Log::open(&data).unwrap());
    let views = Views::open(log.clone(), &data.join("views")).unwrap();
    for name in ["agg", "tab"] {
        assert!(
            views
                .wait_caught_up(name, None, Duration::from_secs(60))
                .unwrap()
        );
    }
    // The model, from the log's own records.
    let mut latest: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for i in 0..RECORDS {
        latest.insert(key_of(i), value_of(i));
    }
    let table: BTreeMap<String, Value> = latest
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    assert_eq!(scan_all(&views, "tab"), table, "seed {seed}");
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for v in table.values() {
        groups
            .entry(v["g"].as_str().unwrap().to_string())
            .or_default()
            .push(v["v"].as_i64().unwrap());
    }
    let model: BTreeMap<String, Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let row = json!({"g": g, "n": vs.len(), "sum": vs.iter().sum::<i64>(),
                "min": vs.iter().min(), "max": vs.iter().max()});
            (g, row)
        })
        .collect();
    assert_eq!(scan_all(&views, "agg"), model, "seed {seed}");
    for name in ["agg", "tab"] {
        let v2 = views.rebuild(name, None).unwrap();
        assert!(
            views
                .wait_caught_up(name, Some(v2), Duration::from_secs(60))
                .unwrap()
        );
        assert_eq!(
            views.digest(name, None).unwrap(),
            views.digest(name, Some(v2)).unwrap(),
            "seed {seed}"
        );
    }
}
