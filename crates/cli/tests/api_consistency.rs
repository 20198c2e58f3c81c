//! Issue 11 ("the `txn` shell", "API consistency") through the real binary: a `logbook
//! serve` on a free port, driven over HTTP and by the `logbook` client commands.
//!
//! Each test names the defect it pins down: the shell never commits after a failed command;
//! every route refuses unknown query parameters; `timeout_ms` is always checked; the
//! `token_incarnation` message says which side is stale; parse errors name JSON paths in the
//! API's words; one status per problem code; an empty row key is readable; the CLI's output
//! (rebuild `current`, plural forms, `log read` values, internal headers, stopped views, one
//! stats sample); `serve` on a locked data directory; shutdown cancels token waits.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{BIN, api, wire};
use logbook_api::client::RawRequest;
use logbook_api::client::blocking::Client;
use logbook_api::paths;

/// A running `logbook serve` (SIGKILLed when dropped).
struct Node {
    serve: common::Serve,
    client: Client,
    data: PathBuf,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let serve = common::spawn_serve(data, extra, &[("RUST_LOG", "warn")], Stdio::null());
        Node {
            client: serve.client(),
            serve,
            data: data.to_path_buf(),
        }
    }

    /// One request through the client, its body as written (malformed on purpose in some
    /// tests); the status and the JSON body (a JSON string for other bodies).
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut request = RawRequest::new(api::verb(method), path.to_string());
        if let Some(text) = body {
            request = request.body(text);
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

    /// Runs `logbook ARGS` against this server with `stdin` piped in.
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

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args, "");
        assert!(
            out.status.success(),
            "logbook {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn stop(self) {
        drop(self.serve);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_txn_shell_never_commits_after_a_failed_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    // Half a transfer: the second put is malformed JSON.
    let script = "begin\nput transfer/from -100\nput transfer/to {\"amount\": 100\n\
                  get transfer/from\ncommit\n";
    let out = node.cli(&["txn"], script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("committed"), "{stdout}");
    assert!(stderr.contains("was not committed"), "{stderr}");
    assert!(stderr.contains("commands are refused"), "{stderr}");
    // Nothing of it is in the table.
    let out = node.cli(&["txn"], "get transfer/from\n");
    assert!(
        text(&out.stdout).contains("not found"),
        "{}",
        text(&out.stdout)
    );

    // A refused put in a read-only transaction fails it the same way.
    let out = node.cli(&["txn"], "begin read_only\nput a 1\ncommit\n");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success());
    assert!(!stdout.contains("committed"), "{stdout}");
    assert!(stderr.contains("was not committed"), "{stderr}");

    // `abort` ends a failed transaction; the next one commits normally.
    let out = node.cli(&["txn"], "begin\nput x {\nabort\nbegin\nput x 1\ncommit\n");
    assert!(
        text(&out.stdout).contains("committed"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !out.status.success(),
        "the malformed put still counts as a failure"
    );
}

#[test]
fn every_route_refuses_unknown_query_parameters_and_checks_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    node.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 1}"#));
    node.ok(
        "PUT",
        &paths::view("t"),
        Some(r#"{"source":"s","kind":"table"}"#),
    );
    let txn = node.ok("POST", &paths::txns(), None)["txn"]
        .as_str()
        .unwrap()
        .to_string();
    let routes = [
        ("GET", paths::streams(), None),
        ("PUT", paths::stream("s"), Some(r#"{"partitions": 1}"#)),
        ("GET", paths::stream("s"), None),
        ("DELETE", paths::stream("s"), None),
        ("POST", paths::records("s"), Some(r#"{"value": 1}"#)),
        ("GET", paths::views(), None),
        ("GET", paths::view("t"), None),
        ("DELETE", paths::view("t"), None),
        (
            "PUT",
            paths::view("t"),
            Some(r#"{"source":"s","kind":"table"}"#),
        ),
        ("POST", paths::view_rebuild("t"), None),
        ("POST", paths::view_switch("t"), Some(r#"{"version": 1}"#)),
        ("POST", paths::txns(), None),
        ("PUT", paths::txn_key(&txn, "k"), Some(r#"{"value": 1}"#)),
        (
            "POST",
            paths::txn_increment(&txn, "k"),
            Some(r#"{"by": 1}"#),
        ),
        ("POST", paths::txn_commit(&txn), None),
        ("POST", paths::txn_abort(&txn), None),
        ("GET", paths::metrics(), None),
        ("GET", "/openapi.json".to_string(), None),
    ];
    for (method, path, body) in &routes {
        let (status, p) = node.http(method, &format!("{path}?dry_run=true"), *body);
        assert_eq!(status, 400, "{method} {path}: {p}");
        assert_eq!(p["code"], "invalid_request", "{method} {path}: {p}");
        assert_eq!(p["field"], "dry_run", "{method} {path}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("this route takes"),
            "{p}"
        );
    }
    // Refused means nothing happened: the stream is there, nothing was appended, the
    // transaction is still open, the view has one version.
    let s = node.ok("GET", &paths::stream("s"), None);
    assert_eq!(s["records"], 0, "{s}");
    let (status, p) = node.http(
        "POST",
        &format!("{}?partition=3", paths::records("s")),
        Some(r#"{"value": 1}"#),
    );
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("partition")),
        "{p}"
    );
    assert_eq!(node.ok("GET", &paths::stream("s"), None)["records"], 0);
    assert_eq!(
        node.ok("GET", &paths::view("t"), None)["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    node.ok("POST", &paths::txn_abort(&txn), None);
    // The accepted parameters are listed.
    let (_, p) = node.http(
        "GET",
        &format!("{}?colour=red", paths::view_rows("t")),
        None,
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("prefix") && detail.contains("timeout_ms"),
        "{detail}"
    );

    // timeout_ms is checked with or without a token, and on a switch.
    for path in [
        &format!("{}?timeout_ms=999999", paths::view_rows("t")),
        &format!("{}?timeout_ms=999999", paths::view_row("t", "k")),
    ] {
        let (status, p) = node.http("GET", path, None);
        assert_eq!(
            (status, p["field"].as_str()),
            (400, Some("timeout_ms")),
            "{path}: {p}"
        );
    }
    let (status, p) = node.http(
        "POST",
        &paths::view_switch("t"),
        Some(r#"{"version": 1, "timeout_ms": 999999999}"#),
    );
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("timeout_ms")),
        "{p}"
    );
}

#[test]
fn errors_speak_the_apis_words_with_one_status_per_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    node.ok("PUT", &paths::stream("s"), None);
    let rust_words = [
        "struct ", "u32", "u64", "i64", "Table", "Sum", "sequence", "``",
    ];
    let bad = [
        ("PUT", &paths::stream("s2"), "[]", None),
        (
            "PUT",
            &paths::stream("s2"),
            r#"{"partitions": "x"}"#,
            Some("partitions"),
        ),
        (
            "POST",
            &paths::records("s"),
            r#"{"records": [5]}"#,
            Some("records[0]"),
        ),
        (
            "POST",
            &paths::records("s"),
            r#"{"value": 1, "timestamp_ms": "x"}"#,
            Some("timestamp_ms"),
        ),
        ("POST", &paths::txns(), "[]", None),
        (
            "PUT",
            &paths::view("v"),
            r#"{"source":"s","kind":"table","on":["a"]}"#,
            Some("on"),
        ),
        (
            "PUT",
            &paths::view("v"),
            r#"{"source":"s","kind":"aggregate","aggregates":{"a":{"fn":"sum"}}}"#,
            Some("aggregates.a.field"),
        ),
        (
            "PUT",
            &paths::view("v"),
            r#"{"source":"s","kind":"aggregate","aggregates":{"a":5}}"#,
            Some("aggregates.a"),
        ),
        (
            "PUT",
            &paths::view("v"),
            r#"{"source":"s","kind":{"table":1}}"#,
            Some("kind"),
        ),
    ];
    for (method, path, body, field) in bad {
        let (status, p) = node.http(method, path, Some(body));
        assert_eq!(status, 400, "{body}: {p}");
        assert_eq!(p["field"].as_str(), field, "{body}: {p}");
        assert_ne!(p["field"], "?", "{body}: {p}");
        let detail = p["detail"].as_str().unwrap();
        for word in rust_words {
            assert!(!detail.contains(word), "{body}: {detail:?} says {word:?}");
        }
    }
    let (_, p) = node.http(
        "PUT",
        &paths::view("v"),
        Some(r#"{"source":"s","kind":"table","on":["a"]}"#),
    );
    assert!(
        p["detail"].as_str().unwrap().contains(r#"kind "table""#),
        "{p}"
    );
    // A rebuild names the spec's fields under `spec`, in the field and the detail alike.
    node.ok(
        "PUT",
        &paths::view("v"),
        Some(r#"{"source":"s","kind":"table"}"#),
    );
    let (status, p) = node.http("POST", &paths::view_rebuild("v"), Some(r#"{"spec": []}"#));
    assert_eq!((status, p["field"].as_str()), (400, Some("spec")), "{p}");
    let (_, p) = node.http(
        "POST",
        &paths::view_rebuild("v"),
        Some(r#"{"spec": {"source":"s","kind":"table","on":["a"]}}"#),
    );
    assert_eq!(p["field"], "spec.on", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("spec.on"), "{p}");

    // key_too_large is 413 for record keys and kv keys alike.
    let long = "k".repeat(5000);
    let body = json!({"key": long, "value": 1}).to_string();
    let (status, p) = node.http("POST", &paths::records("s"), Some(&body));
    assert_eq!(
        (status, p["code"].as_str()),
        (413, Some("key_too_large")),
        "{p}"
    );
    let (status, p) = node.http("GET", &paths::kv_key(&"k".repeat(2000)), None);
    assert_eq!(
        (status, p["code"].as_str()),
        (413, Some("key_too_large")),
        "{p}"
    );
}

#[test]
fn a_long_url_is_answered_414_as_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    // 20 KB fits hyper's buffer (the edge answers).
    let (status, p) = node.http("GET", &paths::kv_key(&"k".repeat(20_000)), None);
    assert_eq!(
        (status, p["code"].as_str()),
        (414, Some("uri_too_long")),
        "{p}"
    );
    // 70 KB and 300 KB do not (the accept loop answers); HTTP clients refuse to send such
    // URLs, so the request is written by hand.
    let addr = node.serve.addr();
    for bytes in [70_000, 300_000] {
        let path = paths::kv_key(&"k".repeat(bytes));
        let answer = wire::one(addr, "GET", &path, &[("host", addr)], b"");
        answer.assert_problem(414, "uri_too_long");
    }
    // The server still answers.
    assert_eq!(node.http("GET", &paths::health(), None).0, 200);
}

#[test]
fn token_incarnation_says_the_view_was_built_on_a_dropped_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    node.ok("PUT", &paths::stream("s"), None);
    node.ok(
        "PUT",
        &paths::view("t"),
        Some(r#"{"source":"s","kind":"table"}"#),
    );
    node.ok("DELETE", &paths::stream("s"), None);
    node.ok("PUT", &paths::stream("s"), None);
    let token = node.ok(
        "POST",
        &paths::records("s"),
        Some(r#"{"key":"k","value":1}"#),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, p) = node.http(
        "GET",
        &format!("{}?token={token}", paths::view_row("t", "k")),
        None,
    );
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("token_incarnation")),
        "{p}"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(r#"view "t" was built on incarnation"#)
            && detail.contains("which was dropped")
            && detail.contains("create it again"),
        "{detail}"
    );
    // `view list` flags the view once its processors noticed that the source stream was
    // dropped (they look every 100 ms when idle).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = node.cli_ok(&["view", "list"]);
        if list.contains("STOPPED") {
            break;
        }
        assert!(Instant::now() < deadline, "never flagged: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let list: Value = serde_json::from_str(&node.cli_ok(&["view", "list", "--json"])).unwrap();
    assert!(list["views"][0]["stopped"].is_string(), "{list}");
}

#[test]
fn cli_output_reads_right() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    // Singular forms.
    let created = node.cli_ok(&["stream", "create", "orders"]);
    assert!(created.contains("1 partition,"), "{created}");
    node.cli_ok(&[
        "stream",
        "append",
        "orders",
        "--key",
        "c1",
        "--value",
        r#"{"total": 42}"#,
        "--request-id",
        "r1",
    ]);
    let shown = node.cli_ok(&["stream", "show", "orders"]);
    assert!(shown.contains("1 partition, 1 record,"), "{shown}");
    let out = node.cli(&["txn"], "begin\nput a 1\ncommit\nscan\n");
    assert!(
        text(&out.stdout).contains("(1 row)"),
        "{}",
        text(&out.stdout)
    );

    // Records' headers hold no internal bookkeeping (HTTP and `stream tail`).
    let records = node.ok("GET", &paths::records("orders"), None);
    let headers = &records["records"][0]["headers"];
    assert_eq!(headers["request-id"], "r1", "{records}");
    assert!(headers.get("request-records").is_none(), "{records}");

    // An aggregate without group_by has one row, key "": `view get` reads it.
    node.cli_ok(&[
        "view",
        "create",
        "totals",
        "--wait",
        "--spec",
        r#"{"source":"orders","kind":"aggregate","aggregates":{"n":{"fn":"count"}}}"#,
    ]);
    let row = node.cli_ok(&["view", "get", "totals", "", "--json"]);
    assert!(
        row.contains(r#""n":1"#) || row.contains(r#""n": 1"#),
        "{row}"
    );

    // rebuild --json names the version serving reads (not null), with or without --switch.
    let rebuilt: Value =
        serde_json::from_str(&node.cli_ok(&["view", "rebuild", "totals", "--json"])).unwrap();
    assert_eq!(rebuilt["current"], 1, "{rebuilt}");
    let rebuilt: Value =
        serde_json::from_str(&node.cli_ok(&["view", "rebuild", "totals", "--switch", "--json"]))
            .unwrap();
    assert_eq!(rebuilt["current"], rebuilt["version"], "{rebuilt}");

    // stats: the append endpoint had one sample, so every percentile is the same.
    let stats: Value = serde_json::from_str(&node.cli_ok(&["stats", "--json"])).unwrap();
    let one: Vec<&Value> = stats["latency"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["count"] == 1)
        .collect();
    assert!(!one.is_empty(), "{stats}");
    for r in one {
        assert_eq!(r["p50_ms"], r["p99_ms"], "{r}");
        assert_eq!(r["p50_ms"], r["p95_ms"], "{r}");
    }

    // log read (offline): values as JSON, internal headers hidden, as over HTTP.
    let data = node.data.clone();
    node.stop();
    let out = Command::new(BIN)
        .args(["log", "read", "orders", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["value"], json!({"total": 42}), "{first}");
    assert!(first["headers"].get("request-records").is_none(), "{first}");
}

#[test]
fn serve_on_a_locked_data_directory_fails_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("LOGBOOK_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("locked"), "{stderr}");
    // The cause is printed once.
    assert_eq!(
        stderr.matches("locked by another process").count(),
        1,
        "{stderr}"
    );
    drop(node);

    // An address in use: its OS error once, not again as "caused by".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("other"))
        .env_remove("LOGBOOK_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
}

#[test]
fn shutdown_cancels_reads_waiting_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--shutdown-grace-ms", "1000"]);
    node.ok("PUT", &paths::stream("s"), None);
    node.ok(
        "PUT",
        &paths::view("t"),
        Some(r#"{"source":"s","kind":"table"}"#),
    );
    let token = node.ok(
        "POST",
        &paths::records("s"),
        Some(r#"{"key":"k","value":1}"#),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    // A token a million records ahead: the read waits (up to a minute).
    let mut ahead = logbook_views::ConsistencyToken::decode(&token).unwrap();
    for pos in ahead.streams.values_mut() {
        for offset in pos.offsets.values_mut() {
            *offset += 1_000_000;
        }
    }
    let ahead = ahead.encode().unwrap();
    let client = node.client.clone();
    let reader = std::thread::spawn(move || {
        let path = format!(
            "{}?token={ahead}&timeout_ms=60000",
            paths::view_row("t", "k")
        );
        let request = RawRequest::new(api::verb("GET"), path).server_wait_ms(60_000);
        let (status, body) = api::send(&client, request).unwrap();
        (status, body.to_string())
    });
    // The read is waiting once its request is in flight on the server (no timing: the
    // metric of requests in flight says so).
    node.serve.until_a_request_is_in_flight();
    node.serve.sigterm();
    let (status, body) = reader.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"closed\""), "{body}");
    let mut node = node;
    assert_eq!(node.serve.wait_exit(), 0);
}

#[test]
fn the_readme_sets_what_its_examples_use() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let first_use = lines.iter().position(|l| l.contains("\"$TOKEN\"")).unwrap();
    assert!(
        lines[..first_use].iter().any(|l| l.contains("TOKEN=$(")),
        "the README uses $TOKEN before setting it"
    );
    // The token comes from an append to the stream the view reads.
    let set = lines.iter().find(|l| l.contains("TOKEN=$(")).unwrap();
    assert!(set.contains("append flights"), "{set}");
}

/// Creates stream `s` (2 partitions) with 20 keyed records, a table view `a` and a count
/// `b` (one row, key ""); returns the append's token.
fn two_views(node: &Node) -> String {
    node.ok("PUT", &paths::stream("s"), Some(r#"{"partitions": 2}"#));
    for (name, spec) in [
        ("a", r#"{"source":"s","kind":"table"}"#),
        (
            "b",
            r#"{"source":"s","kind":"aggregate","aggregates":{"n":{"fn":"count"}}}"#,
        ),
    ] {
        node.ok("PUT", &paths::view(name), Some(spec));
    }
    let records: Vec<Value> = (0..20)
        .map(|i| json!({"key": format!("k{i:02}"), "value": {"i": i}}))
        .collect();
    let body = json!({ "records": records }).to_string();
    node.ok("POST", &paths::records("s"), Some(&body))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every row of `view` once it has applied `token`.
fn rows(node: &Node, view: &str, token: &str) -> Value {
    node.ok(
        "GET",
        &format!(
            "{}?token={token}&timeout_ms=60000&limit=100",
            paths::view_rows(view)
        ),
        None,
    )["rows"]
        .clone()
}

/// The version numbers, current version and rollout of `view` as `GET /v1/views/{view}`
/// shows them (the numbers of its versions' statuses).
fn versions(node: &Node, view: &str) -> (Value, Value, Value) {
    let v = node.ok("GET", &paths::view(view), None);
    let numbers: Vec<Value> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].clone())
        .collect();
    (
        Value::from(numbers),
        v["current"].clone(),
        v["rollout"].clone(),
    )
}

#[test]
fn view_versions_are_numbered_per_view() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let token = two_views(&node);
    for view in ["a", "b"] {
        assert_eq!(versions(&node, view), (json!([1]), json!(1), Value::Null));
    }
    // Rebuilds, one through the CLI and one over HTTP: each view's second version is 2.
    let rebuilt: Value =
        serde_json::from_str(&node.cli_ok(&["view", "rebuild", "a", "--json"])).unwrap();
    assert_eq!(
        (&rebuilt["version"], &rebuilt["current"]),
        (&json!(2), &json!(1))
    );
    let rebuilt = node.ok("POST", &paths::view_rebuild("b"), None);
    assert_eq!(rebuilt["version"], 2, "{rebuilt}");
    for view in ["a", "b"] {
        assert_eq!(
            versions(&node, view),
            (json!([1, 2]), json!(1), Value::Null)
        );
    }
    // Switches, status and the list name the same numbers.
    let before = rows(&node, "a", &token);
    node.ok(
        "POST",
        &paths::view_switch("a"),
        Some(r#"{"version": 2, "timeout_ms": 60000}"#),
    );
    assert_eq!(rows(&node, "a", &token), before);
    let status = node.ok("GET", &paths::view("a"), None);
    assert_eq!(status["status"]["version"], 2, "{status}");
    let list = node.ok("GET", &paths::views(), None);
    let numbers: Vec<&Value> = list["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["versions"])
        .collect();
    assert_eq!(numbers, [&json!([1, 2]), &json!([1, 2])], "{list}");
    // A dropped number is not given again.
    node.cli_ok(&["view", "drop", "a", "--version", "1"]);
    let rebuilt = node.ok("POST", &paths::view_rebuild("a"), None);
    assert_eq!(rebuilt["version"], 3, "{rebuilt}");
    assert_eq!(versions(&node, "a"), (json!([2, 3]), json!(2), Value::Null));
    // A view created again starts at 1.
    node.ok("DELETE", &paths::view("b"), None);
    node.ok(
        "PUT",
        &paths::view("b"),
        Some(r#"{"source":"s","kind":"table"}"#),
    );
    assert_eq!(versions(&node, "b"), (json!([1]), json!(1), Value::Null));
}

/// Rewrites the views catalog of a stopped node's data directory into format 3, which
/// numbered versions by one counter for the data directory: each version's key becomes its
/// store id (the number of the space `v{id}` holding its state).
fn write_format_3_catalog(data: &Path) {
    use logbook_views::store::{FjallStore, StateStore};
    let store = FjallStore::open(&data.join("views")).unwrap();
    let space = store.open_space("catalog").unwrap();
    let catalog: Value = serde_json::from_slice(&space.get(b"catalog").unwrap().unwrap()).unwrap();
    // The store id of a version: `space` where the catalog records it, else its key.
    let id = |number: &str, e: &Value| {
        e.get("space")
            .map_or(number.parse().unwrap(), |s| s.as_u64().unwrap())
    };
    let mut views = serde_json::Map::new();
    let mut next = 1;
    for (name, view) in catalog["views"].as_object().unwrap() {
        let entries = view["versions"].as_object().unwrap();
        let old = |number: &Value| -> u64 {
            let n = number.as_u64().unwrap().to_string();
            id(&n, &entries[&n])
        };
        let mut versions = serde_json::Map::new();
        for (number, e) in entries {
            let id = id(number, e);
            next = next.max(id + 1);
            versions.insert(
                id.to_string(),
                json!({"spec": e["spec"], "incarnation": e["incarnation"]}),
            );
        }
        let rollout = match &view["rollout"] {
            Value::Null => Value::Null,
            r => json!({"version": old(&r["version"]), "percent": r["percent"]}),
        };
        views.insert(
            name.clone(),
            json!({"current": old(&view["current"]), "rollout": rollout, "versions": versions}),
        );
    }
    let old = json!({"format_version": 3, "next_version": next, "views": views});
    space
        .commit(vec![(
            b"catalog".to_vec(),
            Some(old.to_string().into_bytes()),
        )])
        .unwrap();
    store.sync().unwrap();
}

#[test]
fn a_format_3_views_catalog_is_renumbered_per_view_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let token = two_views(&node);
    // Store ids interleave: a 1, b 2, a's rebuild 3, b's rebuild 4; a serves its rebuild,
    // b rolls half its reads out to its rebuild.
    node.ok("POST", &paths::view_rebuild("a"), None);
    node.ok("POST", &paths::view_rebuild("b"), None);
    let (a_v2, b_v2) = (
        versions(&node, "a").0[1].clone(),
        versions(&node, "b").0[1].clone(),
    );
    node.ok(
        "POST",
        &paths::view_switch("a"),
        Some(&json!({"version": a_v2, "timeout_ms": 60000}).to_string()),
    );
    node.ok(
        "POST",
        &paths::view_switch("b"),
        Some(&json!({"version": b_v2, "percent": 50, "timeout_ms": 60000}).to_string()),
    );
    let (a_rows, b_rows) = (rows(&node, "a", &token), rows(&node, "b", &token));
    assert_eq!(a_rows.as_array().unwrap().len(), 20, "{a_rows}");
    node.stop();

    write_format_3_catalog(&data);
    let node = Node::start(&data, &[]);
    assert_eq!(versions(&node, "a"), (json!([1, 2]), json!(2), Value::Null));
    assert_eq!(
        versions(&node, "b"),
        (
            json!([1, 2]),
            json!(1),
            json!({"version": 2, "percent": 50})
        )
    );
    assert_eq!(rows(&node, "a", &token), a_rows);
    assert_eq!(rows(&node, "b", &token), b_rows);
    // Numbering goes on from the upgraded catalog, and the old versions still switch.
    node.cli_ok(&["view", "drop", "a", "--version", "1"]);
    assert_eq!(
        node.ok("POST", &paths::view_rebuild("a"), None)["version"],
        3
    );
    node.ok(
        "POST",
        &paths::view_switch("b"),
        Some(r#"{"version": 2, "timeout_ms": 60000}"#),
    );
    assert_eq!(rows(&node, "b", &token), b_rows);
    assert_eq!(versions(&node, "b"), (json!([1, 2]), json!(2), Value::Null));
}
