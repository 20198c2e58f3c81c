//! The view auditor (issue 18, item 1): a view recomputed from the log up to exactly the
//! offsets the live version applied gives the same digest — also while appends go on —
//! and a live state corrupted in memory (the `test-hooks` feature) gives a mismatch naming
//! the rows that differ; a rebuild and switch (the repair) makes the audit match again.
//! A stored checkpoint changed in the store (what a restart would load) is a mismatch too,
//! while memory still matches; an audit over its memory budget is skipped, saying so.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::collections::BTreeMap;
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
        // The stored checkpoints, written meanwhile, match the recomputation at theirs.
        let checkpoint = report.checkpoint.as_ref().unwrap();
        assert_eq!(checkpoint.verdict, Verdict::Match, "{name}: {checkpoint:?}");
        assert_eq!(checkpoint.stored, checkpoint.recomputed);
        assert!(checkpoint.notes.is_empty(), "{checkpoint:?}");
        for (p, at) in &checkpoint.applied {
            assert!(at <= &report.applied[p], "{report:?}");
        }
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

/// Per partition, the offsets the current version's last checkpoints are at.
fn checkpointed(views: &Views, name: &str) -> BTreeMap<u32, u64> {
    views.status(name, false).unwrap().versions[0]
        .checkpointed
        .clone()
}

#[test]
fn a_stored_checkpoint_changed_in_the_store_is_a_mismatch_while_memory_matches_and_a_rebuild_repairs_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let (_log, stream, views) = open(dir.path());
    append(&stream, 0..300);
    for (name, _) in VIEWS {
        caught_up(&views, name);
        // Processors checkpoint within a second of their last change.
        let applied = views.status(name, false).unwrap().versions[0]
            .applied
            .clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while checkpointed(&views, name) != applied {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: never checkpointed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let clean = views.audit(name, &AuditOptions::default()).unwrap();
        assert_eq!(clean.verdict, Verdict::Match, "{name}: {clean:?}");
        let key = views.corrupt_checkpoint_for_test(name, 1).unwrap();
        assert!(
            key.is_some(),
            "{name}: partition 1 has a checkpoint holding state"
        );

        let report = views.audit(name, &AuditOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Mismatch, "{name}: {report:?}");
        // Memory was not touched: the live state matches the recomputation.
        assert_eq!(report.live, report.recomputed, "{name}: {report:?}");
        assert!(report.differences.is_empty(), "{name}: {report:?}");
        let checkpoint = report.checkpoint.as_ref().unwrap();
        assert_eq!(
            checkpoint.verdict,
            Verdict::Mismatch,
            "{name}: {checkpoint:?}"
        );
        assert_eq!(
            checkpoint.applied, applied,
            "{name}: compared at the checkpoints"
        );
        assert!(
            checkpoint
                .notes
                .iter()
                .any(|n| n.starts_with("partition 1: the stored state")),
            "{name}: {checkpoint:?}"
        );
        if name != "a" {
            // A table row or an index entry is gone from what a restart would load (an
            // aggregate may have lost a multiset count instead, which is not a row).
            assert_ne!(checkpoint.stored, checkpoint.recomputed, "{name}");
            let first = &checkpoint.differences[0];
            assert!(first.live.is_none(), "{name}: {first:?}");
            assert!(first.recomputed.is_some(), "{name}: {first:?}");
        }

        // The repair: rebuild from the log and switch to it; its checkpoints match.
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
        let checkpoint = after.checkpoint.unwrap();
        assert_eq!(checkpoint.verdict, Verdict::Match, "{name}: {checkpoint:?}");
        assert_eq!(after.live, report.recomputed, "{name}");
    }
}

#[test]
fn an_audit_that_outgrows_its_memory_budget_is_skipped_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, stream, views) = open(dir.path());
    append(&stream, 0..300);
    caught_up(&views, "t");
    let small = AuditOptions {
        memory_bytes_max: 1024,
        ..AuditOptions::default()
    };
    let report = views.audit("t", &small).unwrap();
    assert_eq!(report.verdict, Verdict::Skipped, "{report:?}");
    let note = report.note.unwrap();
    assert!(note.contains("memory budget of 1024 bytes"), "{note}");
    assert!(
        report.records_recomputed < 300,
        "it stopped early: {}",
        report.records_recomputed
    );
    // The same view within a budget that holds it: a match.
    let enough = AuditOptions {
        memory_bytes_max: 64 << 20,
        ..AuditOptions::default()
    };
    assert_eq!(views.audit("t", &enough).unwrap().verdict, Verdict::Match);
}
