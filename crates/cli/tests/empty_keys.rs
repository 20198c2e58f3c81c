//! The empty key is a key like any other, everywhere (issue 11, "empty keys: one rule"),
//! through the real binary: in a URL it is the empty path segment (`/v1/kv/`,
//! `/v1/txns/T/kv/`, `/v1/txns/T/kv//increment`, `/v1/views/V/rows/`), in a body the
//! empty string, in the `txn` shell `""`. One test per route.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use logbook_api::client::blocking::Client;

use serde_json::{Value, json};

mod common;
use common::BIN;

/// A running `logbook serve` on a data directory of its own (SIGKILLed when dropped). The
/// paths are written out: the empty segment is what these tests are about.
struct Node {
    serve: common::Serve,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let serve = common::spawn_serve(
            &dir.path().join("data"),
            &[],
            &[("RUST_LOG", "warn")],
            Stdio::null(),
        );
        let client = serve.client();
        Node {
            serve,
            client,
            _dir: dir,
        }
    }

    /// One request through the client: the status and the JSON body (`null` for an empty
    /// one).
    fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        common::api::call(&self.client, method, path, body.as_ref())
    }

    /// A request that must succeed (2xx); its body.
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.http(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Begins a transaction; its id.
    fn begin(&self) -> String {
        let begun = self.ok("POST", "/v1/txns", None);
        begun["txn"].as_str().unwrap().to_string()
    }

    /// Commits `txn` (which must succeed).
    fn commit(&self, txn: &str) {
        self.ok("POST", &format!("/v1/txns/{txn}/commit"), None);
    }

    /// Commits a put of `value` under the empty key.
    fn put_empty(&self, value: Value) {
        let txn = self.begin();
        self.ok(
            "PUT",
            &format!("/v1/txns/{txn}/kv/"),
            Some(json!({ "value": value })),
        );
        self.commit(&txn);
    }

    /// `logbook ARGS` against this server with `stdin` piped in.
    fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(self.serve.cli_env())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.as_bytes()).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    }
}

#[test]
fn a_put_in_a_transaction_takes_the_empty_key() {
    let node = Node::start();
    let txn = node.begin();
    let (status, body) = node.http(
        "PUT",
        &format!("/v1/txns/{txn}/kv/"),
        Some(json!({ "value": {"n": 1} })),
    );
    assert_eq!(status, 204, "{body}");
    node.commit(&txn);
    // The scan shows it as the key "" (and nothing else).
    let txn = node.begin();
    let rows = node.ok("GET", &format!("/v1/txns/{txn}/kv"), None);
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows["rows"][0]["key"], "", "{rows}");
    assert_eq!(rows["rows"][0]["value"], json!({"n": 1}), "{rows}");
}

#[test]
fn a_get_in_a_transaction_reads_the_empty_key() {
    let node = Node::start();
    let txn = node.begin();
    let (status, body) = node.http("GET", &format!("/v1/txns/{txn}/kv/"), None);
    assert_eq!((status, &body["code"]), (404, &json!("key_not_found")));
    node.ok(
        "PUT",
        &format!("/v1/txns/{txn}/kv/"),
        Some(json!({ "value": "mine" })),
    );
    let row = node.ok("GET", &format!("/v1/txns/{txn}/kv/"), None);
    assert_eq!((&row["key"], &row["value"]), (&json!(""), &json!("mine")));
    let row = node.ok("GET", &format!("/v1/txns/{txn}/kv/?for_update=true"), None);
    assert_eq!(row["value"], "mine", "{row}");
}

#[test]
fn a_key_value_read_outside_transactions_reads_the_empty_key() {
    let node = Node::start();
    let (status, body) = node.http("GET", "/v1/kv/", None);
    assert_eq!((status, &body["code"]), (404, &json!("key_not_found")));
    node.put_empty(json!(7));
    let row = node.ok("GET", "/v1/kv/", None);
    assert_eq!((&row["key"], &row["value"]), (&json!(""), &json!(7)));
    // `/v1/kv` (no trailing slash) is still the scan.
    let rows = node.ok("GET", "/v1/kv", None);
    assert_eq!(rows["rows"][0]["key"], "", "{rows}");
}

#[test]
fn a_delete_in_a_transaction_takes_the_empty_key() {
    let node = Node::start();
    node.put_empty(json!(1));
    let txn = node.begin();
    let (status, body) = node.http("DELETE", &format!("/v1/txns/{txn}/kv/"), None);
    assert_eq!(status, 204, "{body}");
    node.commit(&txn);
    let (status, body) = node.http("GET", "/v1/kv/", None);
    assert_eq!((status, &body["code"]), (404, &json!("key_not_found")));
}

#[test]
fn an_increment_in_a_transaction_takes_the_empty_key() {
    let node = Node::start();
    for _ in 0..2 {
        let txn = node.begin();
        let (status, body) = node.http(
            "POST",
            &format!("/v1/txns/{txn}/kv//increment"),
            Some(json!({ "by": 5 })),
        );
        assert_eq!(status, 204, "{body}");
        node.commit(&txn);
    }
    assert_eq!(node.ok("GET", "/v1/kv/", None)["value"], 10);
}

#[test]
fn a_view_row_read_takes_the_empty_key() {
    let node = Node::start();
    node.ok(
        "PUT",
        "/v1/streams/orders",
        Some(json!({ "partitions": 2 })),
    );
    let spec =
        json!({"source": "orders", "kind": "aggregate", "aggregates": {"n": {"fn": "count"}}});
    node.ok("PUT", "/v1/views/totals", Some(spec));
    let mut token = String::new();
    for i in 0..3 {
        let appended = node.ok(
            "POST",
            "/v1/streams/orders/records",
            Some(json!({ "key": format!("o{i}"), "value": {"i": i} })),
        );
        token = appended["token"].as_str().unwrap().to_string();
    }
    // An aggregate without group_by has one row, key "".
    let row = node.ok(
        "GET",
        &format!("/v1/views/totals/rows/?token={token}&timeout_ms=30000"),
        None,
    );
    assert_eq!(row["key"], "", "{row}");
    assert_eq!(row["value"]["n"], 3, "{row}");
}

#[test]
fn one_shot_reads_and_commits_take_the_empty_key() {
    let node = Node::start();
    let read = node.ok("POST", "/v1/kv/read", Some(json!({ "keys": [""] })));
    assert_eq!(read["keys"][0]["key"], "", "{read}");
    assert_eq!(read["keys"][0]["value"], Value::Null, "{read}");
    let snapshot = read["snapshot"].clone();
    let commit = json!({
        "snapshot": snapshot,
        "reads": [{ "key": "", "version": null }],
        "writes": [{ "op": "put", "key": "", "value": "one-shot" }],
    });
    let (status, body) = node.http("POST", "/v1/commits", Some(commit));
    assert_eq!(status, 200, "{body}");
    let read = node.ok("POST", "/v1/kv/read", Some(json!({ "keys": [""] })));
    assert_eq!(read["keys"][0]["value"], "one-shot", "{read}");
    assert!(read["keys"][0]["version"].is_u64(), "{read}");
}

#[test]
fn the_txn_shell_takes_the_empty_key() {
    let node = Node::start();
    let script = "begin\nput \"\" {\"a\": 1}\nincr x 1\ncommit\nbegin\nget \"\"\n\
                  del \"\"\ncommit\nget \"\"\n";
    let out = node.cli(&["txn"], script);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    // The get inside the second transaction sees the value; after the delete, nothing.
    assert!(stdout.contains(r#""" = {"a":1}"#), "{stdout}");
    assert!(stdout.contains(r#""" not found"#), "{stdout}");
    // A missing key is still a usage error, not the empty key.
    let out = node.cli(&["txn"], "get\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usage: get KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
