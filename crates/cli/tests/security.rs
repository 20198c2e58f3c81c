//! Security through the real binary (issue 17): data at rest (modes of everything a
//! workload leaves in a fresh data directory, the per-directory hash key, unguessable
//! transaction handles); browser attacks (bodies must be declared JSON, `Host` checked, no
//! CORS).
//!
//! Requests are written by hand on a TCP socket, so each test controls every header it
//! sends (`Host`, `Content-Type`, `Authorization`).
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

mod common;
use common::wire::{self, Answer};

/// A running `logbook serve` (SIGKILLed when dropped) with its stderr in a file.
struct Node {
    serve: common::Serve,
    log: PathBuf,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let log = data.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).unwrap();
        let serve = common::spawn_serve(data, extra, &[("RUST_LOG", "info")], Stdio::from(stderr));
        Node { serve, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a new connection, with exactly `headers` besides `Content-Length`.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        wire::one(self.serve.addr(), method, path, headers, body)
    }

    /// A request as a well-behaved client sends it: `Host` is the address, a body is JSON.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut headers = vec![("host", self.serve.addr())];
        let bytes = match &body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                serde_json::to_vec(b).unwrap()
            }
            None => Vec::new(),
        };
        self.raw(method, path, &headers, &bytes)
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    /// SIGTERM, then waits for exit 0.
    fn terminate(mut self) {
        let code = self.serve.terminate();
        assert_eq!(code, 0, "{}", self.stderr());
    }
}

/// Every directory and file below `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.is_dir(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

/// A workload touching every kind of file a node writes: stream segments and indexes,
/// request-id checkpoints, `_txn`, the view store (checkpointed at shutdown).
fn workload(node: &Node) {
    let a = node.call("PUT", "/v1/streams/orders", Some(json!({"partitions": 2})));
    assert_eq!(a.status, 201, "{a:?}");
    for i in 0..20 {
        let key = format!("c-{i}");
        let a = node.raw(
            "POST",
            "/v1/streams/orders/records",
            &[
                ("host", node.serve.addr()),
                ("content-type", "application/json"),
                ("idempotency-key", &format!("order-{i}")),
            ],
            json!({"key": key, "value": {"total": i}})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(a.status, 201, "{a:?}");
    }
    let a = node.call(
        "PUT",
        "/v1/views/by_customer",
        Some(json!({"source": "orders", "kind": "table"})),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let a = node.call(
        "POST",
        "/v1/txns",
        Some(json!({"isolation": "serializable"})),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let txn = a.json()["txn"].as_str().unwrap().to_string();
    let a = node.call(
        "PUT",
        &format!("/v1/txns/{txn}/kv/seat-1"),
        Some(json!({"value": "taken"})),
    );
    assert_eq!(a.status, 204, "{a:?}");
    let a = node.call("POST", &format!("/v1/txns/{txn}/commit"), None);
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn every_file_of_a_fresh_data_directory_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    workload(&node);
    node.terminate();
    let found = modes(&data);
    assert!(found.len() > 20, "the workload left few files: {found:?}");
    let has = |what: &dyn Fn(&Path) -> bool| found.iter().any(|(p, _, _)| what(p));
    assert!(
        has(&|p| p.extension().is_some_and(|e| e == "log")),
        "no segment: {found:?}"
    );
    assert!(has(&|p| p.ends_with("hash.key")), "no hash key: {found:?}");
    assert!(has(&|p| p.ends_with("request-ids.checkpoint")), "{found:?}");
    assert!(has(&|p| p.ends_with("_txn")), "no _txn: {found:?}");
    assert!(
        has(&|p| p.starts_with(data.join("views")) && p.is_file()),
        "no view store file: {found:?}"
    );
    let open: Vec<_> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(p, is_dir, mode)| {
            format!(
                "{} ({}) {mode:o}",
                p.display(),
                if *is_dir { "dir" } else { "file" }
            )
        })
        .collect();
    assert!(open.is_empty(), "not private: {open:#?}");
}

#[test]
fn hash_keys_differ_across_data_directories_and_stay_put() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let data = dir.path().join(name);
        let node = Node::start(&data, &[]);
        node.terminate();
        let path = data.join("hash.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        keys.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(keys[0].len(), 32);
    assert_ne!(keys[0], keys[1], "two data directories drew the same key");
    // A restart reads the key it has instead of drawing another.
    let data = dir.path().join("a");
    Node::start(&data, &[]).terminate();
    assert_eq!(std::fs::read(data.join("hash.key")).unwrap(), keys[0]);
}

#[test]
fn transaction_handles_carry_128_random_bits() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let a = node.call("POST", "/v1/txns", Some(json!({"isolation": "snapshot"})));
        assert_eq!(a.status, 201, "{a:?}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        let h = a.json()["txn"].as_str().unwrap().to_string();
        assert_eq!(h.len(), 33, "{h}");
        assert!(h.starts_with('t'), "{h}");
        assert!(
            h[1..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{h}"
        );
        assert!(!seen.contains(&h));
        seen.push(h);
    }
    // Consecutive handles share no counter: they differ in many of their 32 digits.
    let same = seen[0]
        .chars()
        .zip(seen[1].chars())
        .skip(1)
        .filter(|(a, b)| a == b)
        .count();
    assert!(same < 16, "{seen:?}");
    node.terminate();
}

/// The records of partition 0 of `stream`.
fn records(node: &Node, stream: &str) -> Vec<Value> {
    let a = node.get(&format!(
        "/v1/streams/{stream}/records?partition=0&from=0&limit=100"
    ));
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["records"].as_array().unwrap().clone()
}

#[test]
fn request_bodies_must_be_declared_json_and_refused_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let host = node.serve.addr().to_string();
    let body = br#"{"value": {"total": 1}}"#;
    let refused = |a: &Answer| {
        assert_eq!(a.status, 415, "{a:?}");
        assert_eq!(a.json()["code"], "unsupported_media_type", "{a:?}");
        assert_eq!(a.json()["field"], "Content-Type", "{a:?}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    };
    // A stream is not created from a form.
    let a = node.raw(
        "PUT",
        "/v1/streams/s",
        &[
            ("host", &host),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"partitions=1",
    );
    refused(&a);
    assert_eq!(node.get("/v1/streams/s").status, 404);
    let a = node.call("PUT", "/v1/streams/s", Some(json!({"partitions": 1})));
    assert_eq!(a.status, 201, "{a:?}");
    // What a page can post without a preflight, and a body with no type at all.
    for ctype in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=b"),
        Some("text/json"),
        None,
    ] {
        let mut headers = vec![("host", host.as_str())];
        headers.extend(ctype.map(|t| ("content-type", t)));
        refused(&node.raw("POST", "/v1/streams/s/records", &headers, body));
    }
    assert!(
        records(&node, "s").is_empty(),
        "a refused body was appended"
    );
    // JSON under its own name or a +json one, with parameters, is taken.
    for ctype in [
        "application/json; charset=utf-8",
        "application/vnd.logbook.v1+json",
    ] {
        let a = node.raw(
            "POST",
            "/v1/streams/s/records",
            &[("host", &host), ("content-type", ctype)],
            body,
        );
        assert_eq!(a.status, 201, "{ctype}: {a:?}");
    }
    assert_eq!(records(&node, "s").len(), 2);
    // A request without a body needs no type.
    let a = node.raw("POST", "/v1/txns", &[("host", &host)], b"");
    assert_eq!(a.status, 201, "{a:?}");
    node.terminate();
}

#[test]
fn a_host_the_server_does_not_answer_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--allowed-host", "logbook.test"],
    );
    let a = node.call("PUT", "/v1/streams/s", Some(json!({"partitions": 1})));
    assert_eq!(a.status, 201, "{a:?}");
    let json = ("content-type", "application/json");
    // DNS rebinding: a page of evil.example re-resolved to this address.
    for host in ["evil.example", "evil.example:7700", "127.0.0.2"] {
        let a = node.raw("GET", "/v1/streams", &[("host", host)], b"");
        assert_eq!(a.status, 421, "{host}: {a:?}");
        assert_eq!(a.json()["code"], "host_not_allowed", "{a:?}");
        assert_eq!(a.json()["field"], "Host", "{a:?}");
        let a = node.raw(
            "POST",
            "/v1/streams/s/records",
            &[("host", host), json],
            br#"{"value": 1}"#,
        );
        assert_eq!(a.status, 421, "{host}: {a:?}");
    }
    assert!(records(&node, "s").is_empty(), "a refused request appended");
    // Health answers probes by any name; the loopback names and configured ones are served.
    assert_eq!(
        node.raw("GET", "/v1/health", &[("host", "evil.example")], b"")
            .status,
        200
    );
    for host in [
        "localhost:1",
        "127.0.0.1",
        "[::1]:7700",
        "LogBook.Test:443",
        node.serve.addr(),
    ] {
        let a = node.raw("GET", "/v1/streams", &[("host", host)], b"");
        assert_eq!(a.status, 200, "{host}: {a:?}");
    }
    node.terminate();
}

#[test]
fn no_cross_origin_access_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let host = node.serve.addr().to_string();
    let origin = ("origin", "http://evil.example");
    let preflight = node.raw(
        "OPTIONS",
        "/v1/streams/s",
        &[
            ("host", &host),
            origin,
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
        b"",
    );
    assert!(preflight.status >= 400, "{preflight:?}");
    let get = node.raw("GET", "/v1/streams", &[("host", &host), origin], b"");
    assert_eq!(get.status, 200, "{get:?}");
    for a in [&preflight, &get] {
        assert!(
            !a.headers
                .iter()
                .any(|(k, _)| k.starts_with("access-control-")),
            "{a:?}"
        );
    }
    node.terminate();
}
