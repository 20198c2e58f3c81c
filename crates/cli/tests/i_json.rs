//! Issue 17, item 8, through the real binary: the JSON the server stores is I-JSON (RFC 7493)
//! that its own clients read back as sent — duplicate member names, integers beyond 64
//! bits and values nested past the documented limit are refused by name (`not_i_json`,
//! `field` the JSON path) and nothing is stored; an array where an object is expected is
//! refused; a record's own `traceparent` header is W3C trace context or refused.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::process::{Command, Stdio};

use logbook_api::client::blocking::Client;
use logbook_api::client::{RawRequest, ReadRecords};
use logbook_api::limits::JSON_DEPTH_MAX;
use logbook_api::paths;
use serde_json::Value;

mod common;
use common::{BIN, api};

struct Node {
    serve: common::Serve,
    client: Client,
    _data: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let data = tempfile::tempdir().unwrap();
        let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
        Node {
            client: serve.client(),
            serve,
            _data: data,
        }
    }

    /// `method path` with `body` sent as written; the status and the JSON answer.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut request = RawRequest::new(api::verb(method), path.to_string());
        if let Some(text) = body {
            request = request.body(text.to_string());
        }
        api::send(&self.client, request).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, v) = self.http(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Asserts the answer is `status code` naming `field`.
    fn refused(&self, method: &str, path: &str, body: &str, want: (u16, &str, &str)) {
        let (status, v) = self.http(method, path, Some(body));
        assert_eq!(
            (status, v["code"].as_str(), v["field"].as_str()),
            (want.0, Some(want.1), Some(want.2)),
            "{method} {path} {body}: {v}"
        );
    }

    /// The stream's records, read back as the server sent them (text, so no parser here
    /// rounds a number).
    fn records_text(&self, stream: &str) -> String {
        let path = format!("{}?partition=0&from=0&limit=100", paths::records(stream));
        let answer = self
            .client
            .send_raw(RawRequest::new(api::verb("GET"), path))
            .unwrap();
        String::from_utf8(answer.body).unwrap()
    }

    fn record_count(&self, stream: &str) -> usize {
        let text = self.records_text(stream);
        let v: Value = serde_json::from_str(&text).unwrap();
        v["records"].as_array().unwrap().len()
    }
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn values_that_are_not_i_json_are_refused_by_path_and_nothing_is_stored() {
    let n = Node::start();
    n.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 1}"#));
    let records = paths::records("s");
    // Before: the last "x" was kept and the first silently dropped.
    n.refused(
        "POST",
        &records,
        r#"{"value": {"a": 1, "b": {"x": 1, "x": 2}}}"#,
        (400, "not_i_json", "value.b.x"),
    );
    n.refused(
        "POST",
        &records,
        r#"{"records": [{"value": 1}, {"value": {"k": [0, {"y": 1, "y": 1}]}}]}"#,
        (400, "not_i_json", "records[1].value.k[1].y"),
    );
    // Record headers are stored JSON too.
    n.refused(
        "POST",
        &records,
        r#"{"value": 1, "headers": {"h": "1", "h": "2"}}"#,
        (400, "not_i_json", "headers.h"),
    );
    // Before: stored with every digit, which the Rust client and the CLI read rounded.
    n.refused(
        "POST",
        &records,
        r#"{"value": {"id": 18446744073709551616}}"#,
        (400, "not_i_json", "value.id"),
    );
    n.refused(
        "POST",
        &records,
        r#"{"value": [-9223372036854775809]}"#,
        (400, "not_i_json", "value[0]"),
    );
    n.refused(
        "POST",
        &records,
        &format!(r#"{{"value": {}}}"#, nested(JSON_DEPTH_MAX + 1)),
        (400, "not_i_json", "value"),
    );
    assert_eq!(n.record_count("s"), 0, "a refused append stored nothing");
    // The edges are accepted and read back exactly.
    n.ok(
        "POST",
        &records,
        Some(r#"{"value": [18446744073709551615, -9223372036854775808]}"#),
    );
    assert!(
        n.records_text("s")
            .contains("[18446744073709551615,-9223372036854775808]"),
        "{}",
        n.records_text("s")
    );

    // Key-value writes: a one-shot commit and an interactive transaction.
    n.refused(
        "POST",
        &paths::commits(),
        r#"{"writes": [{"op": "put", "key": "k", "value": {"n": 1, "n": 2}}]}"#,
        (400, "not_i_json", "writes[0].value.n"),
    );
    let begun = n.ok("POST", &paths::txns(), Some("{}"));
    let txn = begun["txn"].as_str().unwrap();
    n.refused(
        "PUT",
        &paths::txn_key(txn, "k"),
        r#"{"value": 99999999999999999999}"#,
        (400, "not_i_json", "value"),
    );
    n.ok("POST", &paths::txn_abort(txn), None);
    // A view spec is stored too.
    n.refused(
        "PUT",
        &paths::view("v"),
        r#"{"source": "s", "kind": "table", "kind": "index"}"#,
        (400, "not_i_json", "kind"),
    );
}

#[test]
fn a_value_as_deep_as_accepted_is_read_back_by_the_cli_and_the_client() {
    let n = Node::start();
    n.ok("PUT", &paths::stream("deep"), Some(r#"{"partitions": 1}"#));
    let value = nested(JSON_DEPTH_MAX);
    n.ok(
        "POST",
        &paths::records("deep"),
        Some(&format!(r#"{{"key": "k", "value": {value}}}"#)),
    );
    // The Rust client decodes the records answer.
    let read = n
        .client
        .read(
            "deep",
            &ReadRecords {
                partition: Some(0),
                from: Some(0),
                limit: Some(10),
                wait_ms: None,
            },
        )
        .unwrap_or_else(|e| panic!("the client cannot read the value back: {e}"));
    assert_eq!(read.records[0].value.get(), value);
    // The CLI prints it.
    let out = Command::new(BIN)
        .args(["stream", "tail", "deep", "--partition", "0", "--from", "0"])
        .args(["--limit", "1", "--json"])
        .envs(n.serve.cli_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "logbook stream tail: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&value), "{stdout}");
}

/// A member given twice at the top of a body (review r14 F4): the body's own fields are
/// refused as `not_i_json` naming the member, as nested ones are — before, the shape check
/// ran first and answered `invalid_json` without a field — on every JSON route.
#[test]
fn a_duplicate_member_at_the_top_of_a_body_is_not_i_json_naming_it() {
    let n = Node::start();
    n.refused(
        "PUT",
        &paths::stream("s"),
        r#"{"partitions": 1, "partitions": 2}"#,
        (400, "not_i_json", "partitions"),
    );
    n.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 1}"#));
    n.refused(
        "POST",
        &paths::records("s"),
        r#"{"value": 1, "value": 2}"#,
        (400, "not_i_json", "value"),
    );
    n.refused(
        "POST",
        &paths::records("s"),
        r#"{"records": [{"value": 1, "key": "a", "key": "b"}]}"#,
        (400, "not_i_json", "records[0].key"),
    );
    assert_eq!(n.record_count("s"), 0, "a refused append stored nothing");
    n.refused(
        "POST",
        &paths::commits(),
        r#"{"writes": [], "writes": [{"op": "put", "key": "k", "value": 1}]}"#,
        (400, "not_i_json", "writes"),
    );
    n.refused(
        "POST",
        &paths::commits(),
        r#"{"writes": [{"op": "put", "op": "delete", "key": "k", "value": 1}]}"#,
        (400, "not_i_json", "writes[0].op"),
    );
    n.refused(
        "POST",
        &paths::kv_read(),
        r#"{"keys": ["k"], "keys": ["j"]}"#,
        (400, "not_i_json", "keys"),
    );
    n.refused(
        "POST",
        &paths::txns(),
        r#"{"isolation": "snapshot", "isolation": "serializable"}"#,
        (400, "not_i_json", "isolation"),
    );
    let (status, v) = n.http("GET", &paths::kv_key("k"), None);
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("key_not_found")),
        "{v}"
    );
    // A body that is not JSON at all is still invalid_json.
    let (status, v) = n.http("POST", &paths::commits(), Some(r#"{"writes": [}"#));
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
}

#[test]
fn an_array_where_an_object_is_expected_is_refused() {
    let n = Node::start();
    // Before: 200, the array taken as the range's fields in order.
    n.refused(
        "POST",
        &paths::kv_read(),
        r#"{"ranges": [[null, null]]}"#,
        (400, "invalid_json", "ranges[0]"),
    );
    n.refused(
        "POST",
        &paths::commits(),
        r#"{"writes": [["put", "k", 1]]}"#,
        (400, "invalid_json", "writes[0]"),
    );
    n.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 1}"#));
    n.refused(
        "POST",
        &paths::records("s"),
        r#"{"records": [["k", 1]]}"#,
        (400, "invalid_json", "records[0]"),
    );
}

#[test]
fn a_traceparent_record_header_must_be_w3c_trace_context() {
    let n = Node::start();
    n.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 1}"#));
    let records = paths::records("s");
    n.refused(
        "POST",
        &records,
        r#"{"value": 1, "headers": {"traceparent": "not-a-trace"}}"#,
        (400, "invalid_traceparent", "headers.traceparent"),
    );
    n.refused(
        "POST",
        &records,
        r#"{"records": [{"value": 1}, {"value": 2, "headers": {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}}]}"#,
        (400, "invalid_traceparent", "records[1].headers.traceparent"),
    );
    assert_eq!(n.record_count("s"), 0);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    n.ok(
        "POST",
        &records,
        Some(&format!(
            r#"{{"value": 1, "headers": {{"traceparent": "{tp}"}}}}"#
        )),
    );
    assert!(n.records_text("s").contains(tp));
}
