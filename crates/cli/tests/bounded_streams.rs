//! Bounded resources for streams through the real binary (issue 17, item 6): the node's
//! partition budget refuses a stream that would go over it — by name, creating nothing —
//! and is stated in `GET /v1/streams`; the memory of dropped streams returns (RSS after
//! create/drop cycles of 256-partition streams stays within a bound of the baseline).
//!
//! `LOGBOOK_TEST_RSS_CYCLES=100 cargo test --release --features logbook/cluster -p logbook
//! --test bounded_streams memory` runs the full 100 cycles (CI runs 8).
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::process::Stdio;

use logbook_api::paths;
use serde_json::{Value, json};

mod common;
use common::api::{request, send};

/// Partitions of each stream the memory test creates and drops (the API's most).
const WIDE: u32 = 256;
/// How far above its baseline the server's RSS may end, in KiB (the bound).
const RSS_SLACK_KIB: u64 = 64 * 1024;

fn call(serve: &common::Serve, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    send(&serve.client(), request(method, path, body.as_ref())).unwrap()
}

/// The server's resident set, KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(serve: &common::Serve) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server's threads now.
fn threads(serve: &common::Serve) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", serve.child.id()))
        .unwrap()
        .count()
}

#[test]
fn a_stream_over_the_partition_budget_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &["--partitions-max", "600"], &[], Stdio::null());
    let (status, list) = call(&serve, "GET", &paths::streams(), None);
    assert_eq!(status, 200, "{list}");
    let limits = &list["limits"];
    assert_eq!(limits["partitions_max"], 600, "{list}");
    assert_eq!(limits["partitions_per_stream_max"], 256, "{list}");
    // The internal streams (`_txn`, `_auth`) count.
    let internal = limits["partitions_used"].as_u64().unwrap();
    assert!(internal >= 2, "{list}");

    for name in ["a", "b"] {
        let (status, body) = call(
            &serve,
            "PUT",
            &paths::stream(name),
            Some(json!({"partitions": WIDE})),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, problem) = call(
        &serve,
        "PUT",
        &paths::stream("c"),
        Some(json!({"partitions": WIDE})),
    );
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "too_many_partitions", "{problem}");
    assert_eq!(problem["field"], "partitions", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("600") && detail.contains("partitions_max"),
        "{detail}"
    );
    // Nothing was created: no stream `c`, the same partitions in use.
    let (status, _) = call(&serve, "GET", &paths::stream("c"), None);
    assert_eq!(status, 404);
    let (_, list) = call(&serve, "GET", &paths::streams(), None);
    let used = list["limits"]["partitions_used"].as_u64().unwrap();
    assert_eq!(used, internal + 2 * u64::from(WIDE), "{list}");
    // What still fits is created; confirming an existing stream needs no budget.
    let left = 600 - used;
    let (status, body) = call(
        &serve,
        "PUT",
        &paths::stream("c"),
        Some(json!({"partitions": left})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &serve,
        "PUT",
        &paths::stream("a"),
        Some(json!({"partitions": WIDE})),
    );
    assert_eq!(status, 200, "{body}");
    // Dropping a stream gives its partitions back.
    let (status, _) = call(&serve, "DELETE", &paths::stream("a"), None);
    assert_eq!(status, 204);
    let (status, body) = call(
        &serve,
        "PUT",
        &paths::stream("d"),
        Some(json!({"partitions": WIDE})),
    );
    assert_eq!(status, 201, "{body}");
}

/// One cycle: a stream of [`WIDE`] partitions created, written on every partition, dropped.
fn cycle(serve: &common::Serve, i: u32) {
    let (status, body) = call(
        serve,
        "PUT",
        &paths::stream("wide"),
        Some(json!({"partitions": WIDE})),
    );
    assert_eq!(status, 201, "cycle {i}: {body}");
    let records: Vec<Value> = (0..2 * WIDE)
        .map(|k| json!({"key": format!("k{k}"), "value": {"cycle": i, "k": k}}))
        .collect();
    let (status, body) = call(
        serve,
        "POST",
        &paths::records("wide"),
        Some(json!({ "records": records })),
    );
    assert_eq!(status, 201, "cycle {i}: {body}");
    let (status, body) = call(serve, "DELETE", &paths::stream("wide"), None);
    assert_eq!(status, 204, "cycle {i}: {body}");
}

#[test]
fn memory_returns_to_its_baseline_after_wide_streams_are_dropped() {
    let cycles: u32 = std::env::var("LOGBOOK_TEST_RSS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::null());
    // The baseline is taken after one cycle: the first one sets up what every later one
    // reuses (allocator arenas, the blocking pool's threads).
    cycle(&serve, 0);
    let (baseline, threads_before) = (rss_kib(&serve), threads(&serve));
    let mut peak = baseline;
    for i in 1..=cycles {
        cycle(&serve, i);
        peak = peak.max(rss_kib(&serve));
    }
    let after = rss_kib(&serve);
    eprintln!(
        "{{\"cycles\":{cycles},\"partitions\":{WIDE},\"rss_baseline_kib\":{baseline},\
         \"rss_after_kib\":{after},\"rss_peak_kib\":{peak}}}"
    );
    assert!(
        after <= baseline + RSS_SLACK_KIB,
        "RSS grew from {baseline} KiB to {after} KiB over {cycles} cycles (peak {peak} KiB)"
    );
    // Every writer thread of the dropped streams was joined.
    assert!(
        threads(&serve) <= threads_before + 8,
        "threads: {threads_before} before, {} after",
        threads(&serve)
    );
}
