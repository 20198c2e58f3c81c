//! The view auditor (issue 18, item 1): a view recomputed from the log up to exactly the
//! offsets the live version applied gives the same digest — also while appends go on —
//! and a live state corrupted in memory (the `test-hooks` feature) gives a mismatch naming
//! the rows that differ; a rebuild and switch (the repair) makes the audit match again.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use logbook_log::{Log, Record, Stream, StreamConfig};
use logbook_views::{AuditOptions, Verdict, Views};
use serde_json::{Value, json};

const TABLE: &str = r#"{"source":"s","kind":"table"}"#;
const INDEX: &str = r#"{"source":"s","kind":"index","on":["g"]}"#;
const AGG: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{
  "n":{"fn":"count"},"sum":{"fn":"sum","field":"v"},"d":{"fn":"count_distinct","field":"v"}}}"#;
const VIEWS: [(&str, &str); 3] = [("t", TABLE), ("i", INDEX), ("a", AGG)];

/// Record `i`: key `k(i*7 % 90)`, a value or (every 11th) a delete.
fn record(i: u64) -> Record {
    let key = format!("k{}", i * 7 % 90);
    let value: Option<Value> = (!i.is_multiple_of(11))
        .then(|| json!({ "g": format!("g{}", i % 4), "v": (i * 37 % 50) as i64 - 20 }));
    Record::keyed(key, value.map_or("null".to_string(), |v| v.to_string()))
}

fn append(stream: &Stream, range: std::ops::Range<u64>) {
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(17) {
        let batch = chunk.iter().map(|&i| record(i)).collect();
        stream.append_batch(batch).unwrap().wait().unwrap();
    }
}

fn open(dir: &std::path::Path) -> (Arc<Log>, Arc<Stream>, Views) {
    let log = Arc::new(Log::open(dir).unwrap());
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(3))
        .unwrap();
    let views = Views::open(log.clone(), &dir.join("views")).unwrap();
    for (name, spec) in VIEWS {
        views.create(name, spec.as_bytes()).unwrap();
    }
    (log, stream, views)
}

fn caught_up(views: &Views, name: &str) {
    assert!(
        views
            .wait_caught_up(name, None, Duration::from_secs(30))
            .unwrap()
    );
}

#[test]
fn a_recomputed_view_matches_the_live_one_at_the_offsets_it_applied_even_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, stream, views) = open(dir.path());
    append(&stream, 0..400);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stream, stop) = (stream.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 400;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                append(&stream, i..i + 17);
                i += 17;
            }
        })
    };
    for (name, _) in VIEWS {
        caught_up(&views, name);
        let report = views.audit(name, &AuditOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Match, "{report:?}");
        assert_eq!(report.live, report.recomputed);
        assert!(report.live.rows > 0);
        assert!(report.differences.is_empty());
        let applied: u64 = report.applied.values().sum();
        assert!(applied >= 400, "{report:?}");
        assert_eq!(report.records_recomputed, applied);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Paced, at rest: the same.
    let report = views
        .audit(
            "t",
            &AuditOptions {
                records_per_s: 1_000_000,
                ..AuditOptions::default()
            },
        )
        .unwrap();
    assert_eq!(report.verdict, Verdict::Match);
}

#[test]
fn live_state_corrupted_in_memory_is_a_mismatch_naming_the_rows_and_a_rebuild_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, stream, views) = open(dir.path());
    append(&stream, 0..300);
    for (name, _) in VIEWS {
        caught_up(&views, name);
        let key = views.corrupt_state_for_test(name, 1).unwrap();
        assert!(key.is_some(), "{name}: partition 1 holds state");
        let report = views.audit(name, &AuditOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Mismatch, "{name}: {report:?}");
        assert_ne!(report.live, report.recomputed);
        assert!(!report.differences.is_empty(), "{name}: {report:?}");
        assert!(report.differences.len() <= 3);
        let first = &report.differences[0];
        match name {
            // A table row or an index entry is gone from the live state.
            "t" | "i" => {
                assert!(first.live.is_none(), "{name}: {first:?}");
                assert!(first.recomputed.is_some(), "{name}: {first:?}");
            }
            // An aggregate row lost a partition's partial: both sides have it, differently.
            _ => assert_ne!(first.live, first.recomputed, "{name}: {first:?}"),
        }

        // The repair: rebuild from the log and switch to it.
        let version = views.rebuild(name, None).unwrap();
        assert!(
            views
                .wait_caught_up(name, Some(version), Duration::from_secs(30))
                .unwrap()
        );
        views.switch(name, version, 30_000).unwrap();
        let after = views.audit(name, &AuditOptions::default()).unwrap();
        assert_eq!(after.verdict, Verdict::Match, "{name}: {after:?}");
        assert_eq!(after.version, version);
        assert_eq!(
            after.live, report.recomputed,
            "{name}: the recomputed digest is back"
        );
    }
}
