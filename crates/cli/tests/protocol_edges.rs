//! Issue 11's last items through the real binary, mostly spoken in raw HTTP/1.1 (clients
//! refuse to send most of these requests): request heads over the limits on any request of
//! a connection, a path segment that is not UTF-8, a repeated `Idempotency-Key`, a key-value
//! read waiting for a token at shutdown, the connection limit; and the review's findings: the
//! partition count's range in errors, `serve` on a busy port, `quickstart --exit`'s URLs, the
//! README's stream and view commands as pasted.
//!
//! `LOGBOOK_TEST_BIN=/path/to/logbook` runs these tests against another build (say the
//! previous main, to see them fail there).

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::bin;
use common::wire::{self, Answer, closed, exchange, read_answer};

/// A running `logbook serve`, SIGKILLed when dropped.
struct Node {
    serve: common::Serve,
    addr: String,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let serve = common::spawn_serve(data, extra, &[("RUST_LOG", "warn")], Stdio::null());
        let addr = serve.addr().to_string();
        Node { serve, addr }
    }

    fn connect(&self) -> BufReader<TcpStream> {
        wire::connect(&self.addr)
    }

    /// Sends `GET path` on a connection of its own and returns the connection once the
    /// request is in flight on the server (its metric says so), the answer still to come.
    fn waiting(&self, path: &str) -> BufReader<TcpStream> {
        let mut conn = self.connect();
        if let Err(e) = conn.get_mut().write_all(&self.bytes("GET", path, &[], "")) {
            panic!("sending GET {path}: {e}");
        }
        self.serve.until_a_request_is_in_flight();
        conn
    }

    /// A kept-alive connection whose `GET /v1/health` was answered 200, retried (bounded)
    /// while the server answers 503 `too_many_connections` or serves the request on a probe
    /// connection (one answer, then `connection: close`).
    fn answered_connection(&self) -> BufReader<TcpStream> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut conn = self.connect();
            let sent = conn
                .get_mut()
                .write_all(&self.bytes("GET", "/v1/health", &[], ""));
            let kept = |a: &Answer| a.status == 200 && a.header("connection") != Some("close");
            if sent.is_ok() && read_answer(&mut conn).is_some_and(|a| kept(&a)) {
                return conn;
            }
            assert!(Instant::now() < deadline, "no connection permit came back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A request's bytes (HTTP/1.1, keep-alive) with `Host: localhost`, the admin token's
    /// `Authorization` and, with a body, `Content-Type: application/json`.
    fn bytes(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
        let bearer = self.serve.bearer();
        let mut all = vec![("host", "localhost"), ("authorization", bearer.as_str())];
        if !body.is_empty() {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        wire::request(method, path, &all, body.as_bytes())
    }

    /// One request on a connection of its own.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut conn = self.connect();
        exchange(&mut conn, &self.bytes(method, path, headers, body))
    }
}

#[test]
fn every_request_head_over_the_limits_is_answered_as_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let long_line = |bytes: usize| format!("/v1/kv/{}", "k".repeat(bytes));
    let big_header = |bytes: usize| "h".repeat(bytes);
    // (what, request line's path, one header's value, status, code)
    let url = |what, bytes| (what, long_line(bytes), String::new(), 414, "uri_too_long");
    let header = |what, bytes| {
        let path = "/v1/health".to_string();
        (what, path, big_header(bytes), 431, "headers_too_large")
    };
    let cases = [
        url("70 KB URL", 70_000),
        url("300 KB URL", 300_000),
        url("20 KB URL", 20_000),
        header("2 MB header", 2_000_000),
        header("70 KB header", 70_000),
        header("20 KB header", 20_000),
    ];
    for (what, path, value, status, code) in &cases {
        let headers: Vec<(&str, &str)> = if value.is_empty() {
            vec![]
        } else {
            vec![("x-big", value.as_str())]
        };
        let oversized = node.bytes("GET", path, &headers, "");
        // As a later request on a kept-alive connection, and as a connection's first.
        for earlier in [2, 0] {
            let mut conn = node.connect();
            for _ in 0..earlier {
                let fine = exchange(&mut conn, &node.bytes("GET", "/v1/health", &[], ""));
                assert_eq!(fine.status, 200, "{what}: {fine:?}");
            }
            let answer = exchange(&mut conn, &oversized);
            answer.assert_problem(*status, code);
            assert!(
                answer
                    .head
                    .to_ascii_lowercase()
                    .contains("connection: close"),
                "{what}: {answer:?}"
            );
            assert!(closed(&mut conn), "{what}: the connection stays open");
        }
    }
    // More header lines than the server takes.
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut conn = node.connect();
    exchange(&mut conn, &node.bytes("GET", "/v1/health", &[], ""));
    exchange(&mut conn, &node.bytes("GET", "/v1/health", &many, ""))
        .assert_problem(431, "headers_too_large");
    // Heads within the limits still pass on a kept-alive connection, after a body too.
    let mut conn = node.connect();
    let put = exchange(&mut conn, &node.bytes("PUT", "/v1/streams/s", &[], ""));
    assert!(put.status < 300, "{put:?}");
    let body = format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(100_000));
    let appended = exchange(
        &mut conn,
        &node.bytes("POST", "/v1/streams/s/records", &[], &body),
    );
    assert!(appended.status < 300, "{appended:?}");
    let near = big_header(15_000);
    let fine = exchange(
        &mut conn,
        &node.bytes("GET", &long_line(1_000), &[("x-big", &near)], ""),
    );
    fine.assert_problem(404, "key_not_found");
}

#[test]
fn a_request_head_hyper_cannot_parse_is_answered_as_a_problem_naming_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    // (what, the head's bytes, the field named)
    let cases: [(&str, &[u8], Option<&str>); 6] = [
        (
            "a method with a control byte",
            b"GE\x01T /v1/health HTTP/1.1\r\n\r\n",
            Some("method"),
        ),
        ("not HTTP at all", b"HELLO\r\n\r\n", Some("method")),
        (
            "an unknown version",
            b"GET /v1/health HTTP/7.2\r\nhost: localhost\r\n\r\n",
            Some("version"),
        ),
        (
            "a header line without a colon",
            b"GET /v1/health HTTP/1.1\r\nhost localhost\r\n\r\n",
            Some("headers"),
        ),
        (
            "a target that is not a URI",
            b"GET http://[::1 HTTP/1.1\r\nhost: localhost\r\n\r\n",
            Some("request-target"),
        ),
        (
            "a Content-Length that is not a number",
            b"POST /v1/streams/s/records HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1x\r\n\r\n",
            Some("Content-Length"),
        ),
    ];
    let fine = node.bytes("GET", "/v1/health", &[], "");
    for (what, head, field) in cases {
        // As a connection's first request, after answered ones on a kept-alive connection,
        // and pipelined: after two requests in the same write, whose answers come first.
        for (earlier, pipelined) in [(0, false), (2, false), (2, true)] {
            let mut conn = node.connect();
            let answer = if pipelined {
                let all = [&fine[..], &fine[..], head].concat();
                conn.get_mut().write_all(&all).unwrap();
                for i in 0..earlier {
                    let answer = read_answer(&mut conn);
                    assert!(
                        answer.as_ref().is_some_and(|a| a.status == 200),
                        "{what}: pipelined request {i} before it: {answer:?}"
                    );
                }
                read_answer(&mut conn).unwrap_or_else(|| panic!("{what}: no answer"))
            } else {
                for _ in 0..earlier {
                    let ok = exchange(&mut conn, &fine);
                    assert_eq!(ok.status, 200, "{what}: {ok:?}");
                }
                exchange(&mut conn, head)
            };
            answer.assert_problem(400, "malformed_request");
            assert_eq!(
                answer.json()["field"].as_str(),
                field,
                "{what} (after {earlier}, pipelined {pipelined}): {answer:?}"
            );
            assert!(
                answer
                    .head
                    .to_ascii_lowercase()
                    .contains("connection: close"),
                "{what}: {answer:?}"
            );
            assert!(closed(&mut conn), "{what}: the connection stays open");
        }
    }
    // Nothing was appended: the stream named by the bad append does not exist.
    node.request("GET", "/v1/streams/s", &[], "")
        .assert_problem(404, "unknown_stream");
}

#[test]
fn a_path_segment_that_is_not_utf8_is_a_named_problem() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    for (path, field) in [
        ("/v1/kv/%FF", "key"),
        ("/v1/streams/%C3%28", "stream"),
        ("/v1/views/v/rows/%80abc", "key"),
    ] {
        let answer = node.request("GET", path, &[], "");
        answer.assert_problem(400, "invalid_path_segment");
        assert_eq!(answer.json()["field"], field, "{path}: {answer:?}");
    }
}

#[test]
fn a_repeated_idempotency_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    assert!(node.request("PUT", "/v1/streams/s", &[], "").status < 300);
    let answer = node.request(
        "POST",
        "/v1/streams/s/records",
        &[("idempotency-key", "first"), ("idempotency-key", "second")],
        r#"{"key":"k","value":1}"#,
    );
    answer.assert_problem(400, "invalid_request_id");
    assert_eq!(answer.json()["field"], "Idempotency-Key", "{answer:?}");
    let detail = answer.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("2 times"), "{detail}");
    let read = node.request("GET", "/v1/streams/s/records?partition=0", &[], "");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.json()["records"], serde_json::json!([]), "{read:?}");
    // Nor is a repeated traceparent guessed at.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let answer = node.request(
        "POST",
        "/v1/streams/s/records",
        &[("traceparent", tp), ("traceparent", tp)],
        r#"{"key":"k","value":1}"#,
    );
    answer.assert_problem(400, "invalid_traceparent");
}

#[test]
fn shutdown_cancels_kv_reads_waiting_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--shutdown-grace-ms", "1000"]);
    let begun = node.request("POST", "/v1/txns", &[], "");
    assert_eq!(begun.status, 201, "{begun:?}");
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let put = node.request(
        "PUT",
        &format!("/v1/txns/{txn}/kv/k"),
        &[],
        r#"{"value":1}"#,
    );
    assert!(put.status < 300, "{put:?}");
    let committed = node.request("POST", &format!("/v1/txns/{txn}/commit"), &[], "");
    assert_eq!(committed.status, 200, "{committed:?}");
    // A token a million commits ahead: the read waits (up to a minute).
    let token = committed.json()["token"].as_str().unwrap().to_string();
    let mut ahead = logbook_views::ConsistencyToken::decode(&token).unwrap();
    for pos in ahead.streams.values_mut() {
        for offset in pos.offsets.values_mut() {
            *offset += 1_000_000;
        }
    }
    let ahead = ahead.encode().unwrap();
    let mut conn = node.waiting(&format!("/v1/kv/k?token={ahead}&timeout_ms=60000"));
    node.serve.sigterm();
    let answer = read_answer(&mut conn).expect("the waiting read got no answer");
    answer.assert_problem(503, "closed");
    let mut node = node;
    let exit = node.serve.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn shutdown_ends_record_long_polls_with_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--shutdown-grace-ms", "30000"]);
    let created = node.request("PUT", "/v1/streams/lp", &[], r#"{"partitions":1}"#);
    assert!(created.status < 300, "{created:?}");
    let mut conn = node.waiting("/v1/streams/lp/records?from=0&wait_ms=30000");
    node.serve.sigterm();
    // Before the fix: no answer at all, after the whole grace period (the drain waited
    // out the poll, then dropped it).
    let answer = read_answer(&mut conn).expect("the long poll got no answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json()["records"],
        serde_json::json!([]),
        "{answer:?}"
    );
    let mut node = node;
    let exit = node.serve.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_connection_over_the_limit_is_answered_503_as_a_problem_and_health_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--connections-max", "2"]);
    // Two kept-alive connections hold the two permits. A permit of an earlier, closed
    // connection (the start-up readiness probe) comes back only once the server has seen
    // the close, so each is retried until it is answered 200.
    let mut held: Vec<_> = (0..2).map(|_| node.answered_connection()).collect();
    // Each is kept busy by a long poll: an idle kept-alive connection would be closed to
    // let a new client in (crate::idle), a busy one never is.
    let one = r#"{"partitions":1}"#;
    let created = exchange(&mut held[0], &node.bytes("PUT", "/v1/streams/lp", &[], one));
    assert!(created.status < 300, "{created:?}");
    let poll = node.bytes(
        "GET",
        "/v1/streams/lp/records?from=0&wait_ms=30000",
        &[],
        "",
    );
    for conn in &mut held {
        conn.get_mut().write_all(&poll).unwrap();
    }
    node.serve.until_requests_in_flight(2);
    // A third connection is a probe connection: any route but health and metrics hears
    // the refusal, and the connection closes.
    let mut third = node.connect();
    third
        .get_mut()
        .write_all(&node.bytes("GET", "/v1/streams", &[], ""))
        .unwrap();
    let answer = read_answer(&mut third).expect("the third connection got no answer");
    answer.assert_problem(503, "too_many_connections");
    assert!(
        answer.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer:?}"
    );
    assert!(closed(&mut third));
    // Health checks are answered on the probe reserve while the node is full.
    let mut probe = node.connect();
    let answer = exchange(&mut probe, &node.bytes("GET", "/v1/health", &[], ""));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    // A permit comes back when its connection closes.
    drop(held.pop());
    node.answered_connection();
}

#[test]
fn a_bad_partition_count_names_the_apis_range() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    for body in [r#"{"partitions":"x"}"#, r#"{"partitions":5000000000}"#] {
        let answer = node.request("PUT", "/v1/streams/s", &[], body);
        answer.assert_problem(400, "invalid_json");
        assert_eq!(answer.json()["field"], "partitions", "{answer:?}");
        let detail = answer.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains("an integer from 1 to 256"), "{detail}");
        assert!(!detail.contains("4294967295"), "{detail}");
    }
    // In range for the type but not for a stream: the server's own check.
    let answer = node.request("PUT", "/v1/streams/s", &[], r#"{"partitions":0}"#);
    answer.assert_problem(400, "invalid_stream_config");
}

#[test]
fn serve_on_a_busy_port_says_which_address_and_what_to_do() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("LOGBOOK_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("the address is in use"), "{stderr}");
    assert!(stderr.contains("--listen 127.0.0.1:0"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn quickstart_exit_points_at_the_server_it_says_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin())
        .args([
            "quickstart",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("LOGBOOK_SERVER")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let try_it = &stdout[stdout.find("Try it").unwrap()..];
    assert!(try_it.contains("`logbook serve --data-dir "), "{try_it}");
    // Every URL names the address that server listens on (the default), not this run's
    // port, gone with it.
    let urls: Vec<&str> = try_it
        .split_whitespace()
        .filter(|w| w.contains("http://"))
        .collect();
    assert!(!urls.is_empty(), "{try_it}");
    for url in urls {
        assert!(url.contains("http://127.0.0.1:7700/"), "{url} in {try_it}");
    }
}

#[test]
fn the_readmes_stream_commands_run_as_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let (script, stdout) = run_readme(&node, dir.path(), "logbook stream create orders", |l| {
        l.starts_with("logbook stream tail orders") && l.contains("--from 0")
    });
    // The tail shows the records the README appended (customer-7's partition).
    let tail = stdout.lines().filter(|l| l.contains("customer-7")).count();
    assert!(tail >= 3, "{script}\n{stdout}");
}

#[test]
fn the_readmes_view_commands_run_as_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    // A few flights stand in for the quickstart's import.
    let created = node.request("PUT", "/v1/streams/flights", &[], r#"{"partitions": 2}"#);
    assert_eq!(created.status, 201, "{created:?}");
    let flights = r#"{"records": [
        {"key": "a", "value": {"carrier": "UA", "dep_delay": 30}},
        {"key": "b", "value": {"carrier": "UA", "dep_delay": -3}},
        {"key": "c", "value": {"carrier": "AA", "dep_delay": 5}}]}"#;
    assert_eq!(
        node.request("POST", "/v1/streams/flights/records", &[], flights)
            .status,
        201
    );
    let (script, stdout) = run_readme(&node, dir.path(), "logbook view create delays", |l| {
        l.starts_with("logbook view rebuild delays --switch")
    });
    // The read with the token saw the README's own append: a third UA flight.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("UA\t") && l.contains(r#""flights":3"#)),
        "{script}\n{stdout}"
    );
    assert!(stdout.contains("v2 caught up"), "{script}\n{stdout}");
}

/// Runs the README's lines from the first starting with `first` to the first after it for
/// which `last` holds, as one `sh -e` script against `node` (`logbook` is the binary under
/// test) from `cwd`, the directory holding the server's `data` (so the CLI finds the admin
/// token in `./data` by itself, as the README says); asserts it succeeded and returns the
/// script and its stdout.
fn run_readme(
    node: &Node,
    cwd: &Path,
    first: &str,
    last: impl Fn(&str) -> bool,
) -> (String, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines: Vec<&str> = readme.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no README line starts with {first:?}"));
    let to = from
        + lines[from..]
            .iter()
            .position(|l| last(l))
            .unwrap_or_else(|| panic!("the README section from {first:?} has no last line"));
    let script = lines[from..=to].join("\n");
    let out = Command::new("sh")
        .arg("-ec")
        .arg(format!(
            "logbook() {{ \"$LOGBOOK_BIN\" \"$@\"; }}\n{script}"
        ))
        .env("LOGBOOK_BIN", bin())
        .env("LOGBOOK_SERVER", format!("http://{}", node.addr))
        .env_remove("LOGBOOK_TOKEN")
        .env_remove("LOGBOOK_DATA_DIR")
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (script, stdout)
}
