//! `logbook serve` end to end: the real binary on a free port, driven over HTTP.
//!
//! Streams and exactly-once appends, a transaction round trip with a serialization
//! conflict, the idle-transaction reaper, limits at the edge (an oversized body answers 413
//! and writes nothing), bad JSON naming the field, and SIGTERM under load: exit 0 and every
//! acknowledged append present after a restart.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{api, wire};
use logbook_api::client::blocking::Client;
use logbook_api::paths;

/// A running `logbook serve` (SIGKILLed if the test ends without stopping it), with its
/// stderr in a file and a client making one attempt per request.
struct Node {
    serve: common::Serve,
    client: Client,
    log: PathBuf,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        Node::start_logging(data, extra, "info")
    }

    /// [`Node::start`] with `RUST_LOG` set to `filter`.
    fn start_logging(data: &Path, extra: &[&str], filter: &str) -> Node {
        let log = data.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).unwrap();
        let serve = common::spawn_serve(data, extra, &[("RUST_LOG", filter)], Stdio::from(stderr));
        let client = serve.client();
        Node { serve, client, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = api::request(method, path, body.as_ref());
        api::send(&self.client, request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr()))
    }

    /// A write with a request id (`Idempotency-Key`) and a `traceparent`, when given.
    fn call_with(&self, method: &str, path: &str, ids: Ids, body: Value) -> (u16, Value) {
        let request = api::request(method, path, Some(&body))
            .request_id(ids.request_id)
            .traceparent(ids.traceparent);
        api::send(&self.client, request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr()))
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> i32 {
        self.serve.terminate()
    }
}

/// The ids a write may carry.
#[derive(Default, Clone, Copy)]
struct Ids<'a> {
    request_id: Option<&'a str>,
    traceparent: Option<&'a str>,
}

/// A request id.
fn request_id(id: &str) -> Ids<'_> {
    Ids {
        request_id: Some(id),
        traceparent: None,
    }
}

fn records(node: &Node, stream: &str, partition: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let (status, body) = node.call(
            "GET",
            &format!(
                "{}?partition={partition}&from={from}&limit=1000",
                paths::records(stream)
            ),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let batch = body["records"].as_array().unwrap().clone();
        if batch.is_empty() {
            return out;
        }
        from = body["next"].as_u64().unwrap();
        out.extend(batch);
    }
}

/// Each request's log lines carry its span: method, route, and the request id and
/// traceparent it sent — fields a request did not send are left out, not logged empty.
#[test]
fn a_request_span_names_its_request_id_and_traceparent() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_logging(&dir.path().join("data"), &[], "info,logbook_server=debug");
    let (s, body) = node.call("PUT", &paths::stream("s"), Some(json!({"partitions": 1})));
    assert_eq!(s, 201, "{body}");
    let ids = Ids {
        request_id: Some("span-req-1"),
        traceparent: Some(TP),
    };
    let (s, body) = node.call_with("POST", &paths::records("s"), ids, json!({"value": 1}));
    assert_eq!(s, 201, "{body}");
    let (s, body) = node.call("POST", &paths::records("s"), Some(json!({"value": 2})));
    assert_eq!(s, 201, "{body}");

    let log = node.stderr();
    let done: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request done") && l.contains("route=/v1/streams/{stream}/records"))
        .collect();
    assert_eq!(done.len(), 2, "{log}");
    assert!(done.iter().all(|l| l.contains("method=POST")), "{log}");
    assert!(done[0].contains("request_id=span-req-1"), "{}", done[0]);
    assert!(
        done[0].contains(&format!("traceparent={TP}")),
        "{}",
        done[0]
    );
    assert!(!done[1].contains("request_id="), "{}", done[1]);
    assert!(!done[1].contains("traceparent="), "{}", done[1]);
}

#[test]
fn streams_appends_exactly_once_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);

    let (s, body) = node.call(
        "PUT",
        &paths::stream("orders"),
        Some(json!({"partitions": 2})),
    );
    assert_eq!((s, body["partitions"].as_u64()), (201, Some(2)), "{body}");
    let (s, _) = node.call(
        "PUT",
        &paths::stream("orders"),
        Some(json!({"partitions": 2})),
    );
    assert_eq!(s, 200);
    let (s, body) = node.call(
        "PUT",
        &paths::stream("orders"),
        Some(json!({"partitions": 3})),
    );
    assert_eq!((s, body["code"].as_str()), (409, Some("stream_exists")));

    // One record with a request id, then its retry: the same position, nothing appended.
    let rec = json!({"key": "o-1", "value": {"total": 12, "items": ["a"]}});
    let (s, first) = node.call_with(
        "POST",
        &paths::records("orders"),
        request_id("req-1"),
        rec.clone(),
    );
    assert_eq!(s, 201, "{first}");
    assert!(first["token"].as_str().unwrap().starts_with("v1."));
    // Reordered object keys are the same request.
    let retry = json!({"value": {"items": ["a"], "total": 12}, "key": "o-1"});
    let (s, again) = node.call_with(
        "POST",
        &paths::records("orders"),
        request_id("req-1"),
        retry,
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (&again["partition"], &again["offset"]),
        (&first["partition"], &first["offset"])
    );
    let (s, conflict) = node.call_with(
        "POST",
        &paths::records("orders"),
        request_id("req-1"),
        json!({"key": "o-1", "value": {"total": 13}}),
    );
    assert_eq!(
        (s, conflict["code"].as_str()),
        (409, Some("request_id_conflict"))
    );
    assert_eq!(conflict["field"], "Idempotency-Key");

    // A batch, with a traceparent.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (s, batch) = node.call_with(
        "POST",
        &paths::records("orders"),
        Ids { traceparent: Some(tp), ..Ids::default() },
        json!({"records": [{"key": "o-2", "value": 2}, {"key": "o-3", "value": 3, "headers": {"src": "test"}}, {"value": null}]}),
    );
    assert_eq!(s, 201, "{batch}");
    assert_eq!(batch["positions"].as_array().unwrap().len(), 3);

    let all: Vec<Value> = (0..2).flat_map(|p| records(&node, "orders", p)).collect();
    assert_eq!(all.len(), 4, "{all:?}");
    let o1 = all.iter().find(|r| r["key"] == "o-1").unwrap();
    assert_eq!(o1["value"], json!({"items": ["a"], "total": 12}));
    assert_eq!(o1["headers"]["request-id"], "req-1");
    assert!(all.iter().any(|r| r["headers"]["traceparent"] == tp));
    assert!(
        all.iter()
            .any(|r| r["value"].is_null() && r["key"].is_null())
    );

    let (s, body) = node.call("GET", &paths::records("orders"), None);
    assert_eq!((s, body["field"].as_str()), (400, Some("partition")));
    let (s, body) = node.call("GET", &paths::records("nope"), None);
    assert_eq!((s, body["code"].as_str()), (404, Some("unknown_stream")));
    let (s, body) = node.call("GET", &paths::streams(), None);
    assert_eq!(s, 200);
    assert!(
        body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "orders")
    );

    let (s, metrics) = node.call("GET", "/metrics", None);
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("logbook_duplicates_total{kind=\"append\"} 1"),
        "{metrics}"
    );
    let bucket = format!(
        "logbook_http_request_duration_seconds_bucket{{method=\"POST\",route=\"{}\"",
        paths::route::RECORDS
    );
    assert!(metrics.contains(&bucket), "{metrics}");
    let (s, doc) = node.call("GET", "/openapi.json", None);
    assert_eq!(s, 200);
    assert!(doc["paths"][paths::route::RECORDS]["post"].is_object());
    assert_eq!(node.terminate(), 0);
}

#[test]
fn transactions_commit_conflict_and_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--txn-idle-timeout-ms", "300"]);
    let begin = |isolation: &str| {
        let (s, b) = node.call(
            "POST",
            &paths::txns(),
            Some(json!({"isolation": isolation})),
        );
        assert_eq!(s, 201, "{b}");
        b["txn"].as_str().unwrap().to_string()
    };
    // Two snapshot transactions write the same key: first committer wins.
    let t1 = begin("snapshot");
    let t2 = begin("snapshot");
    for t in [&t1, &t2] {
        let (s, b) = node.call("GET", &paths::txn_key(t, "acct"), None);
        assert_eq!((s, b["code"].as_str()), (404, Some("key_not_found")));
        let (s, _) = node.call(
            "PUT",
            &paths::txn_key(t, "acct"),
            Some(json!({"value": {"balance": 10}})),
        );
        assert_eq!(s, 204);
    }
    let (s, c1) = node.call_with(
        "POST",
        &paths::txn_commit(&t1),
        request_id("c-1"),
        json!({}),
    );
    assert_eq!(s, 200, "{c1}");
    let offset = c1["offset"].as_u64().unwrap();
    assert!(c1["token"].as_str().unwrap().starts_with("v1."));
    // The client lost that response and sends the same commit again: the transaction is
    // gone, but its request id answers with the original commit.
    let (s, again) = node.call_with(
        "POST",
        &paths::txn_commit(&t1),
        request_id("c-1"),
        json!({}),
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["offset"].as_u64(), Some(offset));
    assert_eq!(again["duplicate"], true);
    // Without the request id, a second commit hears that the transaction committed.
    let (s, gone) = node.call("POST", &paths::txn_commit(&t1), None);
    assert_eq!(
        (s, gone["code"].as_str()),
        (409, Some("transaction_committed"))
    );
    let (s, c2) = node.call("POST", &paths::txn_commit(&t2), None);
    assert_eq!(
        (s, c2["code"].as_str()),
        (409, Some("serialization_failure")),
        "{c2}"
    );
    assert_eq!(c2["retryable"], true);
    let (s, b) = node.call("GET", &paths::txn_key(&t2, "acct"), None);
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("transaction_aborted")),
        "a failed transaction is gone"
    );
    // It says what ended it, and that a new attempt may succeed (review r14c N2).
    assert_eq!(b["retryable"], true, "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(detail.contains("serialization_failure"), "{detail}");

    let (s, row) = node.call("GET", &paths::kv_key("acct"), None);
    assert_eq!(s, 200);
    assert_eq!(
        (row["value"].clone(), row["version"].as_u64()),
        (json!({"balance": 10}), Some(offset))
    );

    // Increments on JSON integers, a scan, a read inside a transaction, abort.
    let t3 = begin("serializable");
    for by in [5, 2] {
        let (s, b) = node.call(
            "POST",
            &paths::txn_increment(&t3, "n:count"),
            Some(json!({"by": by})),
        );
        assert_eq!(s, 204, "{b}");
    }
    let (s, c3) = node.call("POST", &paths::txn_commit(&t3), None);
    assert_eq!(s, 200, "{c3}");
    assert_eq!(c3["incremented"]["n:count"], 7);
    let (s, rows) = node.call("GET", &format!("{}?prefix=n:", paths::kv()), None);
    assert_eq!(s, 200);
    assert_eq!(rows["rows"][0]["value"], 7);
    let t4 = begin("read_committed");
    let (s, b) = node.call("GET", &format!("{}?prefix=n:", paths::txn_kv(&t4)), None);
    assert_eq!((s, b["rows"][0]["key"].as_str()), (200, Some("n:count")));
    let (s, _) = node.call("POST", &paths::txn_abort(&t4), None);
    assert_eq!(s, 204);
    let (s, b) = node.call("GET", &paths::txn_key(&t4, "acct"), None);
    assert_eq!((s, b["code"].as_str()), (409, Some("transaction_aborted")));
    assert_eq!(b["retryable"], false, "aborted by the client: {b}");

    // An abandoned transaction is reaped.
    let t5 = begin("serializable");
    std::thread::sleep(Duration::from_millis(1200));
    let (s, b) = node.call("GET", &paths::txn_key(&t5, "acct"), None);
    assert_eq!(
        (s, b["code"].as_str()),
        (410, Some("transaction_expired")),
        "{b}"
    );
    let (_, metrics) = node.call("GET", "/metrics", None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("logbook_txn_aborts_total{reason=\"idle_timeout\"} 1")
    );
    assert_eq!(node.terminate(), 0);
}

#[test]
fn limits_and_bad_input_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let (s, _) = node.call("PUT", &paths::stream("ev"), None);
    assert_eq!(s, 201);

    // A body over the limit is refused from its Content-Length, before it is read.
    // (Raw HTTP: a client sends the body it announces.)
    let mut conn = wire::connect(node.serve.addr());
    let len = (17 * 1024 * 1024).to_string();
    let head = [
        ("host", "localhost"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
    ];
    let start = wire::request("POST", &paths::records("ev"), &head, b"");
    conn.get_mut().write_all(&start).unwrap();
    conn.get_mut().write_all(br#"{"records": ["#).unwrap();
    let answer = wire::read_answer(&mut conn).unwrap();
    answer.assert_problem(413, "payload_too_large");
    drop(conn);

    let too_many: Vec<Value> = (0..10_001).map(|i| json!({"value": i})).collect();
    let (s, b) = node.call(
        "POST",
        &paths::records("ev"),
        Some(json!({"records": too_many})),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (413, Some("batch_too_many_records"))
    );

    // Bad JSON names the field.
    let cases = [
        (
            json!({"records": [{"value": 1}, {"key": 5, "value": 2}]}),
            "records[1].key",
        ),
        (
            json!({"records": [{"value": 1}, {"key": "k"}]}),
            "records[1].value",
        ),
        (json!({"value": 1, "colour": "red"}), "colour"),
        (json!({"key": "k"}), "value"),
        (
            json!({"records": [{"value": 1, "timestamp_ms": "now"}]}),
            "records[0].timestamp_ms",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = node.call("POST", &paths::records("ev"), Some(body));
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{b}");
        assert_eq!(b["code"], "invalid_json");
    }
    let (s, b) = node.call_with(
        "POST",
        &paths::records("ev"),
        Ids {
            traceparent: Some("nope"),
            ..Ids::default()
        },
        json!({"value": 1}),
    );
    assert_eq!((s, b["field"].as_str()), (400, Some("traceparent")));
    let big_key = "k".repeat(5000);
    let (s, b) = node.call(
        "POST",
        &paths::records("ev"),
        Some(json!({"records": [{"value": 1}, {"key": big_key, "value": 1}]})),
    );
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (413, Some("key_too_large"), Some("records[1].key"))
    );
    let (s, b) = node.call("POST", &paths::records("_txn"), Some(json!({"value": 1})));
    assert_eq!((s, b["code"].as_str()), (403, Some("reserved_stream")));
    let (s, b) = node.call("GET", &format!("{}?limt=5", paths::records("ev")), None);
    assert_eq!((s, b["field"].as_str()), (400, Some("limt")));
    let (s, b) = node.call(
        "PUT",
        &paths::txn_key("nope", "a"),
        Some(json!({"value": 1})),
    );
    assert_eq!((s, b["code"].as_str()), (404, Some("unknown_transaction")));
    let (s, b) = node.call("GET", &paths::view("x"), None);
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (404, Some("unknown_view"), Some("view"))
    );

    assert!(
        records(&node, "ev", 0).is_empty(),
        "refused requests wrote nothing"
    );
    assert_eq!(node.terminate(), 0);
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let (s, _) = node.call(
        "PUT",
        &paths::stream("load"),
        Some(json!({"partitions": 3})),
    );
    assert_eq!(s, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = node.client.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..1_000_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("w{w}-{i}");
                    let body = json!({"key": format!("k{w}-{i}"), "value": {"w": w, "i": i}});
                    let request = api::request("POST", &paths::records("load"), Some(&body))
                        .request_id(Some(&id));
                    match api::send(&client, request) {
                        Ok((201, b)) => acked.push((
                            w,
                            i,
                            b["partition"].as_u64().unwrap(),
                            b["offset"].as_u64().unwrap(),
                        )),
                        // Refused while shutting down, or the connection is gone: stop.
                        Ok((503, _)) | Err(_) => break,
                        Ok((s, b)) => panic!("unexpected {s}: {b}"),
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let code = node.terminate();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(u32, u32, u64, u64)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(code, 0, "SIGTERM must exit 0");
    assert!(
        acked.len() > 10,
        "only {} appends acknowledged",
        acked.len()
    );

    let node = Node::start(&data, &[]);
    let stored: Vec<Vec<Value>> = (0..3).map(|p| records(&node, "load", p)).collect();
    for (w, i, p, o) in &acked {
        let r = &stored[*p as usize]
            .iter()
            .find(|r| r["offset"].as_u64() == Some(*o))
            .unwrap_or_else(|| panic!("acknowledged w{w}-{i} at {p}/{o} is missing"));
        assert_eq!(r["value"], json!({"w": w, "i": i}));
    }
    // A retry of an acknowledged request after the restart is a duplicate.
    let (w, i, p, o) = acked[acked.len() / 2];
    let (s, b) = node.call_with(
        "POST",
        &paths::records("load"),
        request_id(&format!("w{w}-{i}")),
        json!({"key": format!("k{w}-{i}"), "value": {"w": w, "i": i}}),
    );
    assert_eq!((s, b["duplicate"].as_bool()), (200, Some(true)), "{b}");
    assert_eq!(
        (b["partition"].as_u64(), b["offset"].as_u64()),
        (Some(p), Some(o))
    );
    assert_eq!(node.terminate(), 0);
}

/// A transfer as a one-round-trip client makes it: read both balances at one snapshot,
/// commit the new ones declaring the reads, with `Idempotency-Key: key`.
fn one_shot_transfer(node: &Node, key: &str) -> (u16, Value) {
    let (s, r) = node.call(
        "POST",
        &paths::kv_read(),
        Some(json!({"keys": ["acct:a", "acct:b"]})),
    );
    assert_eq!(s, 200, "{r}");
    let a = r["keys"][0]["value"].as_i64().unwrap();
    let b = r["keys"][1]["value"].as_i64().unwrap();
    let body = json!({
        "snapshot": r["snapshot"],
        "reads": [{"key": "acct:a", "version": r["keys"][0]["version"]},
                  {"key": "acct:b", "version": r["keys"][1]["version"]}],
        "writes": [{"op": "put", "key": "acct:a", "value": a - 10},
                   {"op": "put", "key": "acct:b", "value": b + 10}],
    });
    node.call_with("POST", &paths::commits(), request_id(key), body)
}

/// A one-shot commit whose answer was lost is retried (read and commit again, same
/// `Idempotency-Key`) after the server was killed and restarted: the original commit is
/// returned, applied once.
#[test]
fn a_one_shot_commit_retried_across_a_restart_returns_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let setup = json!({"writes": [{"op": "put", "key": "acct:a", "value": 100},
                                  {"op": "put", "key": "acct:b", "value": 0}]});
    let (s, b) = node.call("POST", &paths::commits(), Some(setup));
    assert_eq!(s, 200, "{b}");
    let (s, original) = one_shot_transfer(&node, "transfer-7");
    assert_eq!(s, 200, "{original}");
    drop(node); // SIGKILL: the client never heard the answer
    let node = Node::start(&data, &[]);
    let (s, retry) = one_shot_transfer(&node, "transfer-7");
    assert_eq!(s, 200, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["offset"], original["offset"]);
    let (_, a) = node.call("GET", &paths::kv_key("acct:a"), None);
    assert_eq!(a["value"], 90, "applied once");
    assert_eq!(node.terminate(), 0);
}

/// `--snapshot-window-commits` bounds how far back a one-shot read may name its snapshot.
#[test]
fn a_snapshot_behind_the_configured_window_is_snapshot_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--snapshot-window-commits", "2"]);
    for i in 0..4 {
        let body = json!({"writes": [{"op": "put", "key": "k", "value": i}]});
        let (s, b) = node.call("POST", &paths::commits(), Some(body));
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = node.call(
        "POST",
        &paths::kv_read(),
        Some(json!({"keys": ["k"], "snapshot": 2})),
    );
    assert_eq!((s, b["keys"][0]["value"].as_i64()), (200, Some(1)), "{b}");
    let (s, b) = node.call(
        "POST",
        &paths::kv_read(),
        Some(json!({"keys": ["k"], "snapshot": 1})),
    );
    assert_eq!(
        (s, b["code"].as_str(), b["retryable"].as_bool()),
        (409, Some("snapshot_too_old"), Some(true)),
        "{b}"
    );
    assert_eq!(node.terminate(), 0);
}

/// Views over HTTP: a write's token makes the next view read see it; a bad spec names the
/// field; an unknown view or key is a 404 problem; rebuild, switch, list, status and drop.
#[test]
fn views_read_your_writes_bad_specs_and_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let (status, _) = node.call(
        "PUT",
        &paths::stream("flights"),
        Some(json!({"partitions": 2})),
    );
    assert_eq!(status, 201);

    // Bad specs: problem+json naming the field.
    let (status, body) = node.call(
        "PUT",
        &paths::view("by_carrier"),
        Some(
            json!({"source": "flights", "kind": "aggregate", "group_by": ["carrier"],
                     "aggregates": {"n": {"fn": "median"}}}),
        ),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_view_spec")),
        "{body}"
    );
    assert!(
        body["field"].as_str().unwrap().starts_with("aggregates.n"),
        "{body}"
    );
    let (status, body) = node.call(
        "PUT",
        &paths::view("t"),
        Some(json!({"source": "nowhere", "kind": "table"})),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("source")),
        "{body}"
    );
    let (status, body) = node.call("PUT", &paths::view("t"), Some(json!({"kind": "table"})));
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("source")),
        "{body}"
    );
    let (status, body) = node.call(
        "PUT",
        &paths::view("t"),
        Some(json!({"source": "flights", "kind": "tabel"})),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("kind")),
        "{body}"
    );

    // Create; the same spec again is 200, another spec 409.
    let spec = json!({"source": "flights", "kind": "table"});
    let (status, body) = node.call("PUT", &paths::view("rows"), Some(spec.clone()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["current"], 1);
    let (status, _) = node.call("PUT", &paths::view("rows"), Some(spec.clone()));
    assert_eq!(status, 200);
    let (status, body) = node.call(
        "PUT",
        &paths::view("rows"),
        Some(json!({"source": "flights", "kind": "table", "fields": ["carrier"]})),
    );
    assert_eq!((status, body["code"].as_str()), (409, Some("view_exists")));

    // Read your write with the append's token.
    let (status, body) = node.call(
        "POST",
        &paths::records("flights"),
        Some(json!({"key": "f1", "value": {"carrier": "UA", "delay": 7}})),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, row) = node.call(
        "GET",
        &format!(
            "{}?token={token}&timeout_ms=10000",
            paths::view_row("rows", "f1")
        ),
        None,
    );
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["value"], json!({"carrier": "UA", "delay": 7}));
    assert_eq!(row["key"], "f1");
    let (status, body) = node.call(
        "POST",
        &paths::records("flights"),
        Some(
            json!({"records": [{"key": "f2", "value": {"carrier": "AA"}},
                                {"key": "f3", "value": {"carrier": "DL"}}]}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, rows) = node.call(
        "GET",
        &format!("{}?token={token}&limit=2", paths::view_rows("rows")),
        None,
    );
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["rows"].as_array().unwrap().len(), 2);
    assert_eq!(rows["rows"][0]["key"], "f1");
    assert_eq!(rows["next"], "f3");
    let (_, rows) = node.call(
        "GET",
        &format!("{}?keys=f3,nope,f2", paths::view_rows("rows")),
        None,
    );
    let keys: Vec<&str> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["f3", "f2"]);

    // 404s and a bad token.
    let (status, body) = node.call("GET", &paths::view_row("rows", "missing"), None);
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("key_not_found"))
    );
    let (status, body) = node.call("GET", &paths::view_row("nope", "f1"), None);
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (404, Some("unknown_view"), Some("view"))
    );
    let (status, body) = node.call("GET", &paths::view("nope"), None);
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_view")));
    let (status, body) = node.call(
        "GET",
        &format!("{}?token=v1.!!", paths::view_row("rows", "f1")),
        None,
    );
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid_token"), Some("token"))
    );

    // Status, digest on demand; rebuild, switch, list, drop.
    let (status, v) = node.call("GET", &paths::view("rows"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["spec"], spec);
    assert!(v["status"]["applied"].is_object() && v["status"].get("digest").is_none());
    let (_, v) = node.call("GET", &format!("{}?digest=true", paths::view("rows")), None);
    assert_eq!(v["status"]["rows"], 3, "{v}");
    let (status, body) = node.call("POST", &paths::view_rebuild("rows"), None);
    assert_eq!((status, body["version"].as_u64()), (202, Some(2)), "{body}");
    let (status, body) = node.call(
        "POST",
        &paths::view_switch("rows"),
        Some(json!({"version": 2, "timeout_ms": 20000})),
    );
    assert_eq!((status, body["current"].as_u64()), (200, Some(2)), "{body}");
    let (status, row) = node.call("GET", &paths::view_row("rows", "f2"), None);
    assert_eq!(
        (status, row["value"]["carrier"].as_str()),
        (200, Some("AA"))
    );
    let (_, list) = node.call("GET", &paths::views(), None);
    assert_eq!(list["views"][0]["view"], "rows");
    let (status, _) = node.call("DELETE", &paths::view("rows"), None);
    assert_eq!(status, 204);
    let (status, _) = node.call("GET", &paths::view_row("rows", "f2"), None);
    assert_eq!(status, 404);
    assert_eq!(node.terminate(), 0);
}
