//! State in memory, checkpointed now and then: a crash between checkpoints loses what was
//! applied after the last one, and the reopened views replay it from the log — no record
//! applied twice or skipped. The crash is `Views::abandon` (processors stop without their
//! final checkpoint, leaving the store exactly as a crash after the last checkpoint would);
//! the checkpoint policy is set so that *when* checkpoints happen does not depend on time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logbook_log::{Log, Record, Stream, StreamConfig};
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
