//! The CLI as a client of the HTTP API: a real `logbook serve` on a free port, driven by
//! the real `logbook stream|view|derived|txn|stats` commands.
//!
//! Exactly-once appends by request id, tail (and `--follow`), views created, read with a
//! token, rebuilt and switched, the transaction shell from a pipe (a conflict between two
//! shells is reported as retryable; a commit retried by request id commits once), the
//! stats table, `--json` output that parses, the server's error code and field on stderr
//! for bad input, and the hint to start a server when none answers.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

mod common;
use common::BIN;
use logbook_api::paths;

/// A running `logbook serve` (SIGKILLed when dropped) and the CLI pointed at it.
struct Node {
    serve: common::Serve,
    base: String,
}

impl Node {
    fn start(data: &Path) -> Node {
        let serve = common::spawn_serve(data, &[], &[("RUST_LOG", "warn")], Stdio::null());
        let base = serve.base.clone();
        Node { serve, base }
    }

    /// Runs `logbook ARGS` against this server, with `stdin` piped in.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self.command(args).spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .envs(self.serve.cli_env())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "logbook {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a `--json` command that must succeed; its stdout as one JSON document.
    fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let text = self.ok(args, stdin);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text:?}"))
    }

    /// Runs a command that must fail; its stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(!out.status.success(), "logbook {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }
}

const TABLE: &str = r#"{"source":"orders","kind":"table"}"#;
const BY_TOTAL: &str = r#"{"source":"orders","kind":"aggregate","group_by":["customer"],
  "aggregates":{"orders":{"fn":"count"},"total":{"fn":"sum","field":"total"}}}"#;

#[test]
fn streams_views_and_stats_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));

    let created = node.json(
        &["stream", "create", "orders", "--partitions", "2", "--json"],
        None,
    );
    assert_eq!(created["partitions"], 2);
    // Creating it again with the same settings is no change.
    assert!(
        node.ok(&["stream", "create", "orders", "--partitions", "2"], None)
            .contains("exists")
    );

    // One request of two records, with a request id; the retry appends nothing.
    let lines = "{\"customer\":\"c7\",\"total\":40}\n\n{\"customer\":\"c7\",\"total\":2}\n";
    let args = [
        "stream",
        "append",
        "orders",
        "--key",
        "c7",
        "--request-id",
        "order-1",
        "--json",
    ];
    let first = node.json(&args, Some(lines));
    assert_eq!(first["positions"].as_array().unwrap().len(), 2);
    assert!(first.get("duplicate").is_none());
    let retry = node.json(&args, Some(lines));
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["positions"], first["positions"]);
    let text = node.ok(&args[..args.len() - 1], Some(lines));
    assert!(text.contains("duplicate"), "{text}");
    let shown = node.json(&["stream", "show", "orders", "--json"], None);
    assert_eq!(shown["records"], 2, "the retries appended nothing");
    let listed = node.json(&["stream", "list", "--json"], None);
    assert!(
        listed["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "orders")
    );

    // A plain append prints its position and a token.
    let text = node.ok(
        &[
            "stream",
            "append",
            "orders",
            "--key",
            "c9",
            "--value",
            r#"{"customer":"c9","total":5}"#,
        ],
        None,
    );
    assert!(
        text.contains("partition ") && text.contains(" offset "),
        "{text}"
    );
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("a token line")
        .to_string();

    // Tail the partition of order-1: JSON lines, values as appended.
    let partition = first["positions"][0]["partition"].to_string();
    let tail = node.ok(
        &[
            "stream",
            "tail",
            "orders",
            "--partition",
            &partition,
            "--json",
        ],
        None,
    );
    let records: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let order_1: Vec<&Value> = first["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| records.iter().find(|r| r["offset"] == p["offset"]).unwrap())
        .collect();
    assert_eq!(order_1[0]["headers"]["request-id"], "order-1", "{tail}");
    assert_eq!(order_1[0]["value"], json!({"customer": "c7", "total": 40}));
    assert_eq!(order_1[1]["value"], json!({"customer": "c7", "total": 2}));

    // --follow prints a record appended after it started (it long-polls the server).
    let next = records.last().unwrap()["offset"].as_u64().unwrap() + 1;
    let mut follow = node
        .command(&[
            "stream",
            "tail",
            "orders",
            "--partition",
            &partition,
            "--from",
            &next.to_string(),
            "--follow",
        ])
        .spawn()
        .unwrap();
    node.ok(
        &[
            "stream",
            "append",
            "orders",
            "--key",
            "c7",
            "--value",
            r#"{"customer":"c7","total":1}"#,
        ],
        None,
    );
    let mut line = String::new();
    BufReader::new(follow.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        line.trim_end(),
        format!("{partition}\t{next}\tc7\t{{\"customer\":\"c7\",\"total\":1}}")
    );

    // Views: created, waited for, read with a token, scanned, listed.
    node.ok(
        &["view", "create", "orders-by-key", "--spec", TABLE, "--wait"],
        None,
    );
    let created = node.json(
        &[
            "view",
            "create",
            "by-customer",
            "--spec",
            BY_TOTAL,
            "--json",
        ],
        None,
    );
    assert_eq!(created["view"], "by-customer");
    let row = node.json(
        &[
            "view",
            "get",
            "orders-by-key",
            "c9",
            "--token",
            &token,
            "--timeout-ms",
            "10000",
            "--json",
        ],
        None,
    );
    assert_eq!(
        row["rows"][0]["value"],
        json!({"customer": "c9", "total": 5})
    );
    node.ok(&["view", "status", "by-customer", "--wait"], None);
    let rows = node.json(&["view", "scan", "by-customer", "--json"], None);
    assert_eq!(
        rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (
                r["key"].as_str().unwrap(),
                r["value"]["total"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("c7", 1), ("c9", 5)],
        "c7's later records replace its earlier ones (table semantics)"
    );
    // The continuation note goes to stderr, shell-quoted; stdout holds only rows.
    let out = node.cli(
        &[
            "view",
            "scan",
            "by-customer",
            "--prefix",
            "c",
            "--limit",
            "1",
        ],
        None,
    );
    let (text, note) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("c7\t"), "{text}");
    assert!(
        note.contains("# more: continue with --start 'c9'"),
        "{note}"
    );
    let keyed = node.json(
        &["view", "scan", "by-customer", "--keys", "c9,zz", "--json"],
        None,
    );
    assert_eq!(keyed["rows"].as_array().unwrap().len(), 1);
    // A missing key makes the exit status non-zero; the rows found are still printed.
    let out = node.cli(&["view", "get", "by-customer", "c7", "c9", "zz"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("c7\t"));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no row for 1 of the 3 keys: zz"), "{e}");
    let status = node.json(
        &["view", "status", "by-customer", "--digest", "--json"],
        None,
    );
    assert_eq!(status["status"]["lag_records"], 0);
    assert_eq!(status["status"]["rows"], 2);
    let list = node.json(&["view", "list", "--json"], None);
    assert_eq!(list["views"].as_array().unwrap().len(), 2);

    // Rebuild into a new version and switch reads to it; same rows, same digest.
    let old = status["current"].as_u64().unwrap();
    let rebuilt = node.json(
        &["view", "rebuild", "by-customer", "--switch", "--json"],
        None,
    );
    let new = rebuilt["version"].as_u64().unwrap();
    assert!(new > old);
    assert_eq!(rebuilt["current"], new);
    let after = node.json(
        &["view", "status", "by-customer", "--digest", "--json"],
        None,
    );
    assert_eq!(after["current"], new);
    assert_eq!(after["status"]["digest"], status["status"]["digest"]);
    node.ok(&["view", "switch", "by-customer", &old.to_string()], None);
    node.ok(&["view", "switch", "by-customer", &new.to_string()], None);
    node.ok(
        &["view", "drop", "by-customer", "--version", &old.to_string()],
        None,
    );
    node.ok(&["view", "drop", "orders-by-key"], None);
    assert_eq!(
        node.json(&["view", "list", "--json"], None)["views"][0]["versions"],
        json!([new])
    );

    // Stats: a table with the append operation, and JSON that parses.
    let table = node.ok(&["stats"], None);
    assert!(table.contains("p50") && table.contains("p999"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("op ") && l.contains(" append ")),
        "{table}"
    );
    assert!(table.contains("interpolated"), "{table}");
    let stats = node.json(&["stats", "--json"], None);
    let append = stats["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "op" && r["name"] == "append_idempotent")
        .expect("the idempotent append operation")
        .clone();
    assert_eq!(append["count"], 3, "order-1 and its two retries");
    assert!(append["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["counters"]["duplicates"]["append"], 2);
    assert_eq!(stats["views"][0]["lag_records"], 0);
    // /metrics exports the same lag as gauges, per view version.
    let client = node.serve.client();
    let (status, metrics) = common::api::call(&client, "GET", &paths::metrics(), None);
    assert_eq!(status, 200, "{metrics}");
    let metrics = metrics.as_str().unwrap();
    let gauge = format!("logbook_view_lag_records{{version=\"{new}\",view=\"by-customer\"}} 0");
    assert!(metrics.contains(&gauge), "{gauge} in {metrics}");
    assert!(metrics.contains("logbook_view_lag_ms{"), "{metrics}");

    node.ok(&["stream", "drop", "orders"], None);
    assert!(
        node.fails(&["stream", "show", "orders"], None)
            .contains("unknown_stream")
    );
}

#[test]
fn the_txn_shell_runs_scripts_and_reports_conflicts_as_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));

    let out = node.ok(
        &["txn"],
        Some("begin serializable\nincr acct/1 5\nget acct/1\nput acct/2 {\"owner\": \"ann\"}\ncommit\n"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("begun "), "{out}");
    assert_eq!(lines[1], "ok");
    assert_eq!(lines[2], "acct/1 = 5 (written by this transaction)");
    assert!(lines[4].contains("acct/1 = 5"), "{out}");
    // Outside a transaction, get and scan read the latest committed values.
    let out = node.ok(&["txn"], Some("get acct/1\nscan acct/\nget nobody\n"));
    assert!(out.contains("acct/1 = 5 (version"), "{out}");
    assert!(out.contains("acct/2 = {\"owner\":\"ann\"}"), "{out}");
    assert!(
        out.contains("(2 rows)") && out.contains("nobody not found"),
        "{out}"
    );

    // A commit retried with its request id commits once.
    let script = "begin\nincr visits 1\ncommit visit-1\n";
    node.ok(&["txn"], Some(script));
    let retry = node.ok(&["txn"], Some(script));
    assert!(retry.contains("duplicate"), "{retry}");
    let out = node.json(&["txn", "--json"], Some("get visits\n"));
    assert_eq!(out["value"], 1);

    // Two shells write the same key from the same snapshot: the first committer wins and
    // the other shell says to retry. Shell A is driven line by line (each command prints
    // one line), so its snapshot is taken before B commits.
    let mut a = node.command(&["txn"]).spawn().unwrap();
    let mut a_in = a.stdin.take().unwrap();
    let mut a_out = BufReader::new(a.stdout.take().unwrap());
    let mut line = String::new();
    for (command, expect) in [
        ("begin snapshot", "begun "),
        ("get acct/1", "acct/1 = 5"),
        ("put acct/1 100", "ok"),
    ] {
        writeln!(a_in, "{command}").unwrap();
        line.clear();
        a_out.read_line(&mut line).unwrap();
        assert!(line.starts_with(expect), "{command}: {line:?}");
    }
    let b = node.ok(
        &["txn"],
        Some("begin snapshot\nget acct/1\nput acct/1 200\ncommit\n"),
    );
    assert!(b.contains("committed"), "{b}");
    writeln!(a_in, "commit").unwrap();
    drop(a_in);
    let a = a.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert!(
        !a.status.success(),
        "the failed commit makes the exit status non-zero"
    );
    assert!(stderr.contains("serialization_failure"), "{stderr}");
    assert!(stderr.contains("retry the transaction"), "{stderr}");
    let out = node.ok(&["txn"], Some("get acct/1\n"));
    assert!(out.starts_with("acct/1 = 200"), "{out}");

    // --json: one JSON document per command; a server error is its problem document.
    let out = node.cli(
        &["txn", "--json"],
        Some("begin read_committed\nget acct/1\nincr acct/2 1\ncommit\n"),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs[0]["isolation"], "read_committed");
    assert_eq!(docs[1]["value"], 200);
    let problem: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().next().unwrap()).unwrap();
    assert!(problem["code"].is_string(), "{problem}");
    assert!(!out.status.success());

    // Shell mistakes are reported and the rest of the script still runs (inside a
    // transaction, a mistake fails it: later commands are refused until `abort`).
    let out = node.cli(
        &["txn"],
        Some("put k 1\nbogus\nbegin\nput k {bad\nget k\nabort\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no open transaction"), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(stderr.contains("unknown command"), "{stderr}");
    assert!(stderr.contains("commands are refused"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("aborted"));
    assert!(!out.status.success());
}

#[test]
fn bad_input_exits_non_zero_with_the_servers_code_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.ok(&["stream", "create", "s"], None);

    let e = node.fails(&["view", "get", "nope", "k"], None);
    assert!(
        e.contains("unknown_view") && e.contains("field: view"),
        "{e}"
    );
    let e = node.fails(
        &["view", "create", "v", "--spec", r#"{"source": "s", "kind""#],
        None,
    );
    assert!(e.contains("invalid_json"), "{e}");
    let e = node.fails(
        &[
            "view",
            "create",
            "v",
            "--spec",
            r#"{"source": 5, "kind": "table"}"#,
        ],
        None,
    );
    assert!(
        e.contains("invalid_view_spec") && e.contains("field: source"),
        "{e}"
    );
    let e = node.fails(&["stream", "create", "t", "--partitions", "0"], None);
    assert!(e.contains("field: partitions"), "{e}");
    let e = node.fails(&["stream", "tail", "s", "--limit", "0"], None);
    assert!(e.contains("field: limit"), "{e}");
    let e = node.fails(&["stream", "append", "s"], Some("{\"ok\": 1}\nnot json\n"));
    assert!(e.contains("line 2 of stdin is not JSON"), "{e}");
    // Line 1 was still buffered: the error must not claim it was appended.
    assert!(e.contains("nothing was appended"), "{e}");
    assert_eq!(
        node.json(&["stream", "show", "s", "--json"], None)["records"],
        0
    );

    // With --json the error is the problem document, on stderr.
    let e = node.fails(&["view", "status", "nope", "--json"], None);
    let problem: Value = serde_json::from_str(e.trim()).unwrap();
    assert_eq!(problem["code"], "unknown_view");
    assert_eq!(problem["field"], "view");

    // No server there: the error says how to start one.
    let out = Command::new(BIN)
        .args(["stream", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("logbook serve"), "{e}");
}

/// `logbook derived create|list|status|drop`: a uniqueness constraint made, listed, waited
/// for and shown through the binary, its outcomes read with `stream tail`; a bad spec fails
/// naming the field; a dropped one is gone.
#[test]
fn derived_streams_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    for s in ["signups", "claims", "outcomes"] {
        node.ok(&["stream", "create", s, "--partitions", "1"], None);
    }
    let signups = "{\"signup\":\"s-1\",\"username\":\"ada\"}\n\
                   {\"signup\":\"s-2\",\"username\":\"ada\"}\n";
    node.ok(&["stream", "append", "signups"], Some(signups));
    let by_name = r#"{"source":"signups","target":"claims","key_by":["username"]}"#;
    let out = node.ok(&["derived", "create", "by_name", "--spec", by_name], None);
    assert!(
        out.contains("created derived stream by_name (signups → claims)"),
        "{out}"
    );
    let again = node.ok(&["derived", "create", "by_name", "--spec", by_name], None);
    assert!(again.contains("exists with this spec"), "{again}");
    let unique = r#"{"source":"claims","target":"outcomes","unique":["username"],
        "fields":["signup"],"key_by":["signup"]}"#;
    let created = node.json(
        &["derived", "create", "names", "--spec", unique, "--json"],
        None,
    );
    assert_eq!(created["spec"]["unique"], json!(["username"]));

    for name in ["by_name", "names"] {
        let st = node.json(&["derived", "status", name, "--wait", "--json"], None);
        assert_eq!(
            st["partitions"][0]["next"], st["partitions"][0]["end"],
            "{st}"
        );
    }
    // `claims` got its records while `names` waited: wait for `names` again, then read.
    let st = node.json(&["derived", "status", "names", "--wait", "--json"], None);
    assert_eq!(st["partitions"][0]["end"], 2, "{st}");
    let text = node.ok(&["derived", "status", "names"], None);
    assert!(text.contains("names: claims → outcomes"), "{text}");
    assert!(
        text.contains("partition 0: next 2 of 2, 2 emitted, 0 skipped"),
        "{text}"
    );
    let tail = node.ok(&["stream", "tail", "outcomes", "--json"], None);
    let outcomes: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
        .collect();
    assert_eq!(outcomes.len(), 2, "{tail}");
    assert_eq!(outcomes[0]["outcome"], "accepted");
    assert_eq!(
        outcomes[1],
        json!({"outcome": "rejected", "unique": "ada", "offset": 1,
            "claim": {"signup": "s-2"}, "taken_by": {"offset": 0, "key": "s-1"}})
    );

    let list = node.ok(&["derived", "list"], None);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[1].starts_with("by_name") && lines[1].ends_with(" 0"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("names") && lines[2].contains("outcomes"),
        "{list}"
    );

    let e = node.fails(
        &[
            "derived",
            "create",
            "bad",
            "--spec",
            r#"{"source":"signups","target":"nope"}"#,
        ],
        None,
    );
    assert!(
        e.contains("invalid_derived_spec") && e.contains("field: target"),
        "{e}"
    );
    let dropped = node.ok(&["derived", "drop", "names"], None);
    assert!(
        dropped.contains("dropped derived stream names"),
        "{dropped}"
    );
    let e = node.fails(&["derived", "status", "names", "--json"], None);
    let problem: Value = serde_json::from_str(e.trim()).unwrap();
    assert_eq!(problem["code"], "unknown_derived_stream");
    let listed = node.json(&["derived", "list", "--json"], None);
    assert_eq!(listed["derived_streams"].as_array().unwrap().len(), 1);
}

/// A server answer of ours: a record of `bytes` bytes as one stdin line.
fn padded_line(i: usize, bytes: usize) -> String {
    format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(bytes))
}

#[test]
fn big_appends_are_batched_by_bytes_and_big_answers_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.ok(&["stream", "create", "big"], None);

    // 600 records of ~36 KB: 500 of them (the count batch) would be a 17 MB request, past
    // the server's 16 MiB body limit. Batched by bytes they all land, and one final token
    // covers every line.
    let input: String = (0..600).map(|i| padded_line(i, 36_000)).collect();
    let out = node.ok(&["stream", "append", "big"], Some(&input));
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("token ") && last.contains("covers all 600 records"),
        "{last}"
    );
    let token = last
        .strip_prefix("token ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        node.json(&["stream", "show", "big", "--json"], None)["records"],
        600
    );

    // A view read of all of them is a ~22 MB answer (above many clients' default cap of 10 MB): one
    // group per record, its pad kept as the group's max. The combined token waits for the
    // last record, so no --wait is needed.
    let spec = r#"{"source":"big","kind":"aggregate","group_by":["i"],
        "aggregates":{"pad":{"fn":"max","field":"pad"}}}"#;
    node.ok(&["view", "create", "big-rows", "--spec", spec], None);
    let rows = node.json(
        &[
            "view",
            "scan",
            "big-rows",
            "--limit",
            "600",
            "--token",
            &token,
            "--timeout-ms",
            "30000",
            "--json",
        ],
        None,
    );
    assert_eq!(rows["rows"].as_array().unwrap().len(), 600);

    // One line larger than any request: refused before sending, naming the line.
    let input = format!("{}{}", padded_line(0, 10), padded_line(1, 17 << 20));
    let e = node.fails(&["stream", "append", "big"], Some(&input));
    assert!(e.contains("line 2 of stdin"), "{e}");
    assert!(e.contains("nothing was appended"), "{e}");

    // A record the server refuses is named by its stdin line, not its index in the batch.
    let input = format!(
        "{}{}{}",
        padded_line(0, 10),
        padded_line(1, 10),
        padded_line(2, 2 << 20)
    );
    let e = node.fails(&["stream", "append", "big"], Some(&input));
    assert!(e.contains("stdin line 3"), "{e}");
    assert!(!e.contains("records[2]"), "{e}");
    assert_eq!(
        node.json(&["stream", "show", "big", "--json"], None)["records"],
        600
    );
}

#[test]
fn the_txn_shell_aborts_what_it_leaves_open_and_pages_scans() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));

    // Stats before any traffic of note: a stable shape (counters present, numbers only).
    let stats = node.json(&["stats", "--json"], None);
    assert_eq!(stats["counters"]["duplicates"], json!({}));
    assert_eq!(stats["counters"]["txn_aborts"], json!({}));
    assert_eq!(stats["counters"]["commits"], 0);
    for row in stats["latency"].as_array().unwrap() {
        for q in ["p50_ms", "p95_ms", "p99_ms", "p999_ms"] {
            assert!(row[q].is_number() || row[q].is_null(), "{row}");
        }
        assert!(row["overflow"].is_array(), "{row}");
    }
    let text = node.ok(&["stats"], None);
    let line = text.lines().find(|l| l.contains("http_responses")).unwrap();
    assert!(line.trim_end().len() > "  http_responses".len(), "{text}");

    // Input ending with an open transaction: aborted, exit non-zero, nothing written.
    let out = node.cli(&["txn"], Some("begin\nput left 1\n"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("aborted transaction"), "{e}");
    assert!(
        node.ok(&["txn"], Some("get left\n"))
            .contains("left not found")
    );

    // A closed stdout (`| head -1`) still aborts the open transaction.
    let mut child = node.command(&["txn"]).spawn().unwrap();
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"begin\nput k 1\nget k\n")
        .unwrap();
    let _ = child.wait().unwrap();
    let stats = node.json(&["stats", "--json"], None);
    assert_eq!(stats["counters"]["open_transactions"], 0, "{stats}");

    // Quoted keys hold whitespace.
    let out = node.ok(
        &["txn"],
        Some("begin\nput \"a b\" 1\ncommit\nget \"a b\"\n"),
    );
    // ...and are printed as the shell reads them back.
    assert!(out.contains("\"a b\" = 1 (version"), "{out}");

    // A scan says when more rows follow, and how to continue.
    node.ok(
        &["txn"],
        Some("begin\nput p/a 1\nput p/b 2\nput p/c 3\nput q 4\ncommit\n"),
    );
    let out = node.ok(&["txn"], Some("scan p/ limit 2\n"));
    assert!(
        out.contains("(2 rows; more: scan p/ limit 2 start p/c)"),
        "{out}"
    );
    let out = node.ok(&["txn"], Some("scan p/ limit 2 start p/c\n"));
    assert!(out.contains("p/c = 3") && out.contains("(1 row)"), "{out}");
    assert!(!out.contains("q = 4"), "{out}");
    let page = node.json(&["txn", "--json"], Some("scan p/ limit 2\n"));
    assert_eq!(page["next"], "p/c");
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);

    // --json: client-side errors are JSON too.
    let out = node.cli(&["txn", "--json"], Some("bogus\n"));
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(doc["code"].is_string(), "{doc}");
    }

    // Internal streams (the transaction log) are listed only with --all.
    let list = node.json(&["stream", "list", "--json"], None);
    assert!(!list.to_string().contains("_txn"), "{list}");
    let list = node.json(&["stream", "list", "--all", "--json"], None);
    assert!(list.to_string().contains("_txn"), "{list}");
}

#[test]
fn addresses_names_and_foreign_servers_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.ok(&["stream", "create", "s"], None);
    for _ in 0..3 {
        node.ok(&["stream", "append", "s", "--value", "1"], None);
    }

    // A bare HOST:PORT is taken as http://HOST:PORT; an address nothing listens on is named
    // with what to check.
    let bare = node.base.strip_prefix("http://").unwrap();
    let out = node.ok(&["stream", "list", "--server", bare], None);
    assert!(out.contains("s "), "{out}");
    let e = node.fails(&["stream", "list", "--server", "https://127.0.0.1:9"], None);
    assert!(
        e.contains("https://127.0.0.1:9") && e.contains("running there"),
        "{e}"
    );

    // Empty names never reach the server as a puzzling 404.
    let e = node.fails(&["stream", "show", ""], None);
    assert!(e.contains("empty"), "{e}");
    assert!(!e.contains("no_route"), "{e}");

    // A page of a tail that stops before the end says how to go on.
    let out = node.cli(&["stream", "tail", "s", "--limit", "1"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("# more: continue with --from 1"), "{note}");
    let out = node.cli(&["stream", "tail", "s", "--from", "1"], None);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty());

    // Something else on the port answering 404 with no body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let e = node.fails(&["stream", "list", "--server", &other], None);
    server.join().unwrap();
    assert!(
        e.contains(&other) && e.contains("is this a Logbook server?"),
        "{e}"
    );
}
