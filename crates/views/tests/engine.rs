//! The engine's promises: bad specs change nothing, tokens give read-your-writes, and a
//! rebuild with switches and rollbacks never makes reads fail or go backwards.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use logbook_log::{Log, Record, StreamConfig};
use logbook_views::{ReadOptions, ViewError, Views};

fn setup(partitions: u32) -> (tempfile::TempDir, Arc<Log>, Arc<logbook_log::Stream>, Views) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let stream = log
        .create_stream("s", StreamConfig::with_partitions(partitions))
        .unwrap();
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    (dir, log, stream, views)
}

const COUNT: &str = r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"n":{"fn":"count"},"total":{"fn":"sum","field":"v"}}}"#;

/// A bad spec: the view's name, the spec, and whether an error is the one it must give.
type BadSpec = (&'static str, &'static str, fn(&ViewError) -> bool);

#[test]
fn bad_specs_are_named_errors_and_create_nothing() {
    let (dir, log, _s, views) = setup(2);
    views.create("ok", COUNT.as_bytes()).unwrap();
    let cases: [BadSpec; 8] = [
        ("a", r#"{"source":"s","kind":"cube"}"#, |e| {
            matches!(e, ViewError::UnknownKind { .. })
        }),
        (
            "a",
            r#"{"source":"s","kind":"index","on":"g"}"#,
            |e| matches!(e, ViewError::InvalidSpec { field, .. } if field == "on"),
        ),
        (
            "a",
            r#"{"source":"s","kind":"aggregate","group_by":["g"],"aggregates":{"x":{"fn":"sum","field":7}}}"#,
            |e| matches!(e, ViewError::InvalidSpec { field, .. } if field == "aggregates.x.field"),
        ),
        (
            "a",
            r#"{"source":"nope","kind":"table"}"#,
            |e| matches!(e, ViewError::UnknownStream { stream } if stream == "nope"),
        ),
        ("ok", r#"{"source":"s","kind":"table"}"#, |e| {
            matches!(e, ViewError::ViewExists { .. })
        }),
        ("a/b", r#"{"source":"s","kind":"table"}"#, |e| {
            matches!(e, ViewError::InvalidViewName { .. })
        }),
        ("a", r#"{"source":"s","kind":"table","extra":1}"#, |e| {
            matches!(e, ViewError::InvalidSpec { .. })
        }),
        (
            "a",
            r#"{"source":"s","kind":"table","filter":{"field":"x","op":"like","value":"a"}}"#,
            |e| matches!(e, ViewError::InvalidSpec { field, .. } if field == "filter.op"),
        ),
    ];
    for (name, spec, check) in cases {
        let e = views.create(name, spec.as_bytes()).unwrap_err();
        assert!(check(&e), "{spec}: unexpected {e:?}");
    }
    assert_eq!(views.list().len(), 1);
    for i in 1..logbook_views::limits::VIEWS_MAX {
        views
            .create(&format!("t{i}"), br#"{"source":"s","kind":"table"}"#)
            .unwrap();
    }
    let e = views
        .create("one-too-many", br#"{"source":"s","kind":"table"}"#)
        .unwrap_err();
    assert!(matches!(e, ViewError::TooManyViews { .. }), "{e:?}");
    // Nothing half-made survives a reopen either.
    drop(views);
    let views = Views::open(log.clone(), &dir.path().join("views")).unwrap();
    assert_eq!(views.list().len(), logbook_views::limits::VIEWS_MAX);
    assert!(views.info_of("a").is_err());
}

#[test]
fn reads_with_a_token_see_the_write() {
    let (_dir, _log, stream, views) = setup(4);
    views.create("c", COUNT.as_bytes()).unwrap();
    for i in 0..300i64 {
        let g = format!("g{}", i % 3);
        let positions = stream
            .append_batch(vec![Record::keyed(
                format!("k{i}"),
                format!(r#"{{"g":"{g}","v":{i}}}"#),
            )])
            .unwrap()
            .wait()
            .unwrap();
        let token = logbook_views::token_of(&*stream, &positions)
            .encode()
            .unwrap();
        let r = views
            .get(
                "c",
                &g,
                &ReadOptions {
                    token: Some(token),
                    timeout_ms: 5_000,
                },
            )
            .unwrap();
        let p = positions[0];
        assert!(r.applied[&p.partition] > p.offset);
        assert_eq!(r.rows[0].value["n"], i / 3 + 1, "read {i} missed its write");
    }
    // A token of a future offset times out with the named error.
    let mut t = logbook_views::token_of(
        &*stream,
        &[logbook_log::Position {
            partition: 0,
            offset: 1_000_000,
        }],
    );
    let e = views
        .get(
            "c",
            "g0",
            &ReadOptions {
                token: Some(t.encode().unwrap()),
                timeout_ms: 50,
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, ViewError::ConsistencyTimeout { .. }) && e.is_retryable(),
        "{e:?}"
    );
    // Another incarnation of the stream never satisfies it.
    t.streams.get_mut("s").unwrap().incarnation ^= 1;
    let e = views
        .get(
            "c",
            "g0",
            &ReadOptions {
                token: Some(t.encode().unwrap()),
                timeout_ms: 50,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ViewError::TokenIncarnation { .. }), "{e:?}");
}

#[test]
fn rebuild_while_serving_never_fails_or_goes_back() {
    let (_dir, _log, stream, views) = setup(3);
    views.create("c", COUNT.as_bytes()).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Writer: each key's value only grows, so a group's total only grows.
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..10)
                    .map(|j| {
                        Record::keyed(
                            format!("k{}", (i + j) % 50),
                            format!(r#"{{"g":"a","v":{}}}"#, i + j),
                        )
                    })
                    .collect();
                stream.append_batch(batch).unwrap().wait().unwrap();
                i += 10;
            }
        });
        // Reader: offsets and totals never decrease, reads never fail.
        let reader = s.spawn(|| {
            let mut last_applied = std::collections::BTreeMap::new();
            let mut last_total = 0i64;
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = views.get("c", "a", &ReadOptions::default()).unwrap();
                for (p, a) in &r.applied {
                    let prev = last_applied.insert(*p, *a).unwrap_or(0);
                    assert!(
                        *a >= prev,
                        "partition {p} went back from {prev} to {a} (version {})",
                        r.version
                    );
                }
                if let Some(row) = r.rows.first() {
                    let t = row.value["total"].as_i64().unwrap();
                    assert!(t >= last_total, "total went back from {last_total} to {t}");
                    last_total = t;
                }
                reads += 1;
            }
            reads
        });
        let v1 = views.info_of("c").unwrap().current;
        let v2 = views.rebuild("c", None).unwrap();
        assert!(
            views
                .wait_caught_up("c", Some(v2), Duration::from_secs(30))
                .unwrap()
        );
        views.rollout("c", v2, 50, 10_000).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        views.switch("c", v2, 10_000).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        views.switch("c", v1, 10_000).unwrap(); // rollback
        std::thread::sleep(Duration::from_millis(150));
        views.switch("c", v2, 10_000).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        views.drop_version("c", v1).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 10);
    });
    assert_eq!(views.info_of("c").unwrap().versions.len(), 1);
}
