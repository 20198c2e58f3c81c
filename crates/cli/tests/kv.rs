//! Transactions in one round trip against a real `logbook serve`, as a reviewer found them
//! wanting: both forms accept the same puts, a commit needs a body, the read answer has a
//! byte budget, errors name their body path, and the CLI's `kv read`.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

mod common;

use std::process::Stdio;

use common::api::call;
use logbook_api::paths;
use serde_json::{Value, json};

fn start() -> (tempfile::TempDir, common::Serve) {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    (dir, serve)
}

/// The newest snapshot: how many commits the table holds.
fn snapshot(client: &logbook_api::client::blocking::Client) -> u64 {
    let (status, answer) = call(client, "POST", &paths::kv_read(), Some(&json!({})));
    assert_eq!(status, 200, "{answer}");
    answer["snapshot"].as_u64().unwrap()
}

#[test]
fn a_put_of_null_commits_alike_in_one_request_and_interactively() {
    let (_dir, serve) = start();
    let client = serve.client();
    let (status, done) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"writes": [{"op": "put", "key": "one-shot", "value": null}]})),
    );
    assert_eq!(status, 200, "a one-shot put of null: {done}");

    let (_, begun) = call(&client, "POST", &paths::txns(), Some(&json!({})));
    let txn = begun["txn"].as_str().unwrap();
    let (status, put) = call(
        &client,
        "PUT",
        &paths::txn_key(txn, "interactive"),
        Some(&json!({"value": null})),
    );
    assert_eq!(status, 204, "{put}");
    let (status, _) = call(&client, "POST", &paths::txn_commit(txn), None);
    assert_eq!(status, 200);

    for key in ["one-shot", "interactive"] {
        let (status, row) = call(&client, "GET", &paths::kv_key(key), None);
        assert_eq!(status, 200, "{key}: {row}");
        assert_eq!(row["value"], Value::Null, "{key} holds null");
        assert!(row["version"].is_u64(), "{key}: {row}");
    }

    // A put without a value is refused alike, naming the field.
    let (status, problem) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"writes": [{"op": "put", "key": "k"}]})),
    );
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["field"], "writes[0].value");
}

#[test]
fn a_commit_without_a_body_is_refused_and_an_empty_one_commits_nothing() {
    let (_dir, serve) = start();
    let client = serve.client();
    call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"writes": [{"op": "put", "key": "k", "value": 1}]})),
    );
    let before = snapshot(&client);

    let (status, problem) = call(&client, "POST", &paths::commits(), None);
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "body_required", "{problem}");
    assert_eq!(snapshot(&client), before, "nothing committed");

    // An empty transaction commits, as PostgreSQL's does, and writes no record.
    let (status, done) = call(&client, "POST", &paths::commits(), Some(&json!({})));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["offset"], Value::Null, "{done}");
    assert_eq!(snapshot(&client), before, "no commit record");
}

/// The rows of range `i` of a read answer, by key.
fn range_keys(answer: &Value, i: usize) -> Vec<String> {
    answer["ranges"][i]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_read_answer_stops_at_its_byte_budget_with_next_and_the_clients_read_on() {
    let (_dir, serve) = start();
    let client = serve.client();
    // 24 values of 200 kB: 4.8 MB, more than one answer's 4 MiB budget (four per commit,
    // under the commit record's 1 MiB).
    let big = json!("x".repeat(200_000));
    let keys: Vec<String> = (0..24).map(|i| format!("big/{i:02}")).collect();
    for four in keys.chunks(4) {
        let writes: Vec<Value> = four
            .iter()
            .map(|k| json!({"op": "put", "key": k, "value": big}))
            .collect();
        let (status, done) = call(
            &client,
            "POST",
            &paths::commits(),
            Some(&json!({ "writes": writes })),
        );
        assert_eq!(status, 200, "{done}");
    }
    call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"writes": [{"op": "put", "key": "small/a", "value": 1}]})),
    );

    let (status, first) = call(
        &client,
        "POST",
        &paths::kv_read(),
        Some(&json!({"ranges": [{"prefix": "big/"}, {"prefix": "small/"}]})),
    );
    assert_eq!(status, 200);
    let got = range_keys(&first, 0);
    // Each row costs its key and value bytes plus 64: 20 rows fit in 4 MiB, 21 do not.
    assert_eq!(got, keys[..20], "the budget cut the range");
    assert_eq!(first["ranges"][0]["next"], "big/20", "where to read on");
    let bytes = serde_json::to_vec(&first).unwrap().len();
    assert!(
        bytes <= logbook_api::limits::KV_READ_ANSWER_BYTES_MAX,
        "{bytes} bytes"
    );
    assert_eq!(
        range_keys(&first, 1),
        ["small/a"],
        "a later range is read as far as the budget allows"
    );

    // Read on from `next` at the same snapshot: the rest, and no further `next`.
    let snapshot = first["snapshot"].clone();
    let (status, rest) = call(
        &client,
        "POST",
        &paths::kv_read(),
        Some(&json!({"ranges": [{"prefix": "big/", "start": "big/20"}], "snapshot": snapshot})),
    );
    assert_eq!(status, 200, "{rest}");
    assert_eq!(range_keys(&rest, 0), keys[20..]);
    assert_eq!(rest["ranges"][0]["next"], Value::Null);

    // Keys have no `next`: keys whose values pass the budget are refused, naming where.
    let (status, problem) = call(
        &client,
        "POST",
        &paths::kv_read(),
        Some(&json!({"keys": keys})),
    );
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "answer_too_large");
    assert_eq!(problem["field"], "keys[20]");

    // The Rust client reads on by itself: the whole range as its limit has it.
    let read = logbook_api::txns::ReadBody {
        ranges: vec![logbook_api::txns::RangeSpec {
            prefix: Some("big/".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer = serve.default_client().kv_read(&read).unwrap();
    let all: Vec<&str> = answer.ranges[0]
        .rows
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(all, keys);
    assert_eq!(answer.ranges[0].next, None);
    // So does `logbook kv read`.
    let out = kv_read(&serve, &["--prefix", "big/", "--json"]);
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(range_keys(&printed, 0), keys);
}

fn row_keys(page: &Value) -> Vec<String> {
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

/// The scans `GET /v1/kv` and `GET /v1/txns/{txn}/kv` have the read answer's byte budget
/// too (review r14): before, a scan of 10,000 rows of 256 KiB built a 2.5 GB answer. A
/// page stops at the budget with `next` there and fewer rows than its `limit`, and the
/// client reads on from `next`, as after a limit.
#[test]
fn a_scan_stops_at_the_answers_byte_budget_with_next_and_reads_on() {
    let (_dir, serve) = start();
    let client = serve.client();
    // 24 values of 200 kB: 4.8 MB, past the 4 MiB budget (four per commit).
    let big = json!("x".repeat(200_000));
    let keys: Vec<String> = (0..24).map(|i| format!("big/{i:02}")).collect();
    for four in keys.chunks(4) {
        let writes: Vec<Value> = four
            .iter()
            .map(|k| json!({"op": "put", "key": k, "value": big}))
            .collect();
        let (status, done) = call(
            &client,
            "POST",
            &paths::commits(),
            Some(&json!({ "writes": writes })),
        );
        assert_eq!(status, 200, "{done}");
    }
    let (_, begun) = call(&client, "POST", &paths::txns(), Some(&json!({})));
    let txn = begun["txn"].as_str().unwrap().to_string();
    for base in [paths::kv(), paths::txn_kv(&txn)] {
        let (status, first) = call(
            &client,
            "GET",
            &format!("{base}?prefix=big/&limit=100"),
            None,
        );
        assert_eq!(status, 200, "{base}: {first}");
        // Each row costs its key and value bytes plus 64: 20 rows fit in 4 MiB, 21 do not.
        assert_eq!(
            row_keys(&first),
            keys[..20],
            "{base}: the budget cut the page"
        );
        assert_eq!(first["next"], "big/20", "{base}: where to read on");
        let bytes = serde_json::to_vec(&first).unwrap().len();
        assert!(
            bytes <= logbook_api::limits::KV_READ_ANSWER_BYTES_MAX,
            "{base}: {bytes} bytes"
        );
        let (status, rest) = call(
            &client,
            "GET",
            &format!("{base}?start=big/20&end=big0&limit=100"),
            None,
        );
        assert_eq!(status, 200, "{base}: {rest}");
        assert_eq!(row_keys(&rest), keys[20..], "{base}: the rest");
        assert_eq!(rest["next"], Value::Null, "{base}");
    }
    let (status, _) = call(&client, "POST", &paths::txn_commit(&txn), None);
    assert_eq!(status, 200);
}

/// `logbook kv ARGS…` against `serve`, succeeding.
fn kv_read(serve: &common::Serve, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(common::BIN)
        .args(["kv", "read"])
        .args(args)
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn problems_of_a_commit_name_the_body_path_at_fault() {
    let (_dir, serve) = start();
    let client = serve.client();
    let (_, done) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"writes": [
            {"op": "put", "key": "a", "value": 1},
            {"op": "put", "key": "max", "value": i64::MAX},
        ]})),
    );
    let version = done["offset"].as_u64().unwrap();
    let long = "k".repeat(2000);
    let cases = [
        (
            json!({"writes": [{"op": "put", "key": "b", "value": 1}, {"op": "put", "key": "a", "value": 2, "if_version": version + 99}]}),
            409,
            "version_mismatch",
            "writes[1].if_version",
        ),
        (
            json!({"writes": [{"op": "delete", "key": "b"}, {"op": "put", "key": "a", "value": 2, "if_absent": true}]}),
            409,
            "key_exists",
            "writes[1].if_absent",
        ),
        (
            json!({"writes": [{"op": "increment", "key": "max", "by": 1}]}),
            409,
            "increment_overflow",
            "writes[0].by",
        ),
        (
            json!({"writes": [{"op": "put", "key": "b", "value": 1}, {"op": "put", "key": "c", "value": "v".repeat(300_000)}]}),
            413,
            "value_too_large",
            "writes[1].value",
        ),
        (
            json!({"writes": [{"op": "put", "key": long, "value": 1}]}),
            413,
            "key_too_large",
            "writes[0].key",
        ),
        (
            json!({"reads": [{"key": "a", "version": version}, {"key": long, "version": null}]}),
            413,
            "key_too_large",
            "reads[1].key",
        ),
        (
            json!({"reads": [{"key": "a", "version": version + 1}]}),
            422,
            "unprocessable_request",
            "reads[0].version",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, problem) = call(&client, "POST", &paths::commits(), Some(&body));
        assert_eq!(
            (got, problem["code"].as_str(), problem["field"].as_str()),
            (status, Some(code), Some(field)),
            "{problem}"
        );
    }
    let (got, problem) = call(
        &client,
        "POST",
        &paths::kv_read(),
        Some(
            &json!({"keys": ["a", long], "ranges": [{"prefix": "a"}, {"prefix": "b", "limit": 0}]}),
        ),
    );
    assert_eq!(got, 400, "{problem}");
    assert_eq!(problem["field"], "ranges[1].limit");
    let (got, problem) = call(
        &client,
        "POST",
        &paths::kv_read(),
        Some(&json!({"keys": ["a", long]})),
    );
    assert_eq!(
        (got, problem["field"].as_str()),
        (413, Some("keys[1]")),
        "{problem}"
    );
}

#[test]
fn every_route_that_takes_an_idempotency_key_refuses_a_bad_one_alike() {
    let (_dir, serve) = start();
    let client = serve.client();
    call(&client, "PUT", &paths::stream("s"), Some(&json!({})));
    let (_, begun) = call(&client, "POST", &paths::txns(), Some(&json!({})));
    let txn = begun["txn"].as_str().unwrap();
    let routes = [
        (paths::records("s"), json!({"value": 1})),
        (paths::commits(), json!({})),
        (paths::txn_commit(txn), json!({})),
        (
            paths::group_commit("g", "m"),
            json!({"epoch": 1, "offsets": []}),
        ),
    ];
    let long = "k".repeat(200);
    let bearer = serve.bearer();
    for (path, body) in &routes {
        let body = body.to_string();
        for (case, keys) in [
            ("too long", vec![long.as_str()]),
            ("sent twice", vec!["a", "b"]),
            ("not ASCII", vec!["clé"]),
        ] {
            let mut headers = vec![
                ("host", serve.addr()),
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ];
            headers.extend(keys.iter().map(|k| ("idempotency-key", *k)));
            let a = common::wire::one(serve.addr(), "POST", path, &headers, body.as_bytes());
            a.assert_problem(400, "invalid_request_id");
            assert_eq!(a.json()["field"], "Idempotency-Key", "{path} {case}: {a:?}");
        }
    }
    let (_, rows) = call(
        &client,
        "GET",
        &format!("{}?partition=0", paths::records("s")),
        None,
    );
    assert_eq!(rows["records"], json!([]), "nothing appended");
}

/// `logbook ARGS…` against `serve` (its output, whatever the exit status).
fn logbook(serve_env: &[(&'static str, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(args)
        .envs(serve_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn logbook_kv_read_prints_what_a_read_only_commit_declares() {
    let (_dir, serve) = start();
    let env = serve.cli_env();
    let out = logbook(
        &env,
        &["commit", "--put", "acct/1=5", "--put", "acct/2=7", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    let version = serde_json::from_slice::<Value>(&out.stdout).unwrap()["offset"]
        .as_u64()
        .unwrap();

    let out = kv_read(&serve, &["acct/1", "gone", "--range", "acct/..acct0"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let snapshot = version + 1;
    assert_eq!(
        text,
        format!(
            "snapshot {snapshot}\nacct/1 = 5 (version {version})\ngone absent\n\
             acct/1 = 5 (version {version})\nacct/2 = 7 (version {version})\n"
        )
    );

    // Declared as read, at that snapshot: a read-only commit checks the reads held.
    let (at, read) = (snapshot.to_string(), format!("acct/1={version}"));
    let ro = ["commit", "--read-only", "--snapshot", &at, "--read", &read];
    let out = logbook(&env, &[&ro[..], &["--json"]].concat());
    assert!(out.status.success(), "{out:?}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        done["offset"],
        Value::Null,
        "a read-only commit writes nothing"
    );
    // ...and refuses a write.
    let out = logbook(&env, &[&ro[..], &["--put", "acct/1=6", "--json"]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let problem: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(problem["code"], "unprocessable_request", "{problem}");
    assert_eq!(problem["field"], "writes[0]", "{problem}");
}

/// A server answering each request with the next of `answers` (status, JSON body) and
/// recording the `Idempotency-Key` each request carried; its base URL.
fn scripted(answers: Vec<(u16, Value)>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let answers = std::sync::Arc::new(std::sync::Mutex::new(answers.into_iter()));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (log, answers) = (log.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut conn = BufReader::new(conn);
                loop {
                    let (mut length, mut key, mut line) = (0, String::new(), String::new());
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.trim_end().to_ascii_lowercase();
                        if lower.is_empty() {
                            break;
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if let Some(v) = lower.strip_prefix("idempotency-key:") {
                            key = v.trim().to_string();
                        }
                    }
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).unwrap();
                    log.lock().unwrap().push(key);
                    let Some((status, answer)) = answers.lock().unwrap().next() else {
                        return;
                    };
                    let answer = answer.to_string();
                    let kind = if status < 300 { "json" } else { "problem+json" };
                    let bytes = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/{kind}\r\n\
                         content-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    conn.get_mut().write_all(bytes.as_bytes()).unwrap();
                }
            });
        }
    });
    (base, seen)
}

#[test]
fn logbook_commit_sends_a_retryable_refusal_again_under_its_request_id() {
    let conflict = json!({"type": "urn:logbook:problem:serialization_failure",
        "code": "serialization_failure", "title": "Serialization failure", "status": 409,
        "detail": "a concurrent commit wrote k", "retryable": true});
    let committed = json!({"offset": 7, "token": null, "incremented": {}});
    let (base, seen) = scripted(vec![(409, conflict.clone()), (200, committed)]);
    let env = [
        ("LOGBOOK_SERVER", base.clone()),
        ("LOGBOOK_TOKEN", "lb_test".to_string()),
    ];
    let out = logbook(&env, &["commit", "--put", "k=1", "--request-id", "put-k"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("committed at offset 7"));
    assert_eq!(
        *seen.lock().unwrap(),
        ["put-k", "put-k"],
        "one request id for both"
    );

    // Pinned to a snapshot, the same conflict would come back: one attempt, exit 1.
    let (base, seen) = scripted(vec![(409, conflict)]);
    let env = [
        ("LOGBOOK_SERVER", base),
        ("LOGBOOK_TOKEN", "lb_test".to_string()),
    ];
    let out = logbook(&env, &["commit", "--snapshot", "3", "--put", "k=1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn a_declared_range_s_next_cannot_reach_past_its_end() {
    let (_dir, serve) = start();
    let client = serve.client();
    let before = snapshot(&client);
    let put = json!({"op": "put", "key": "acct/1", "value": 1});
    let (status, answer) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"ranges": [{"prefix": "acct/z", "next": "secret/"}], "writes": [put]})),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "ranges[0].next", "{answer}");
    assert_eq!(snapshot(&client), before, "nothing was committed");
    let (status, answer) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"ranges": [{"start": "a", "end": "b", "next": "c"}], "writes": [put]})),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "ranges[0].next", "{answer}");
    // A next within the range cuts it short, as a read answer's next does.
    let (status, answer) = call(
        &client,
        "POST",
        &paths::commits(),
        Some(&json!({"ranges": [{"prefix": "acct/", "next": "acct/5"}], "writes": [put]})),
    );
    assert_eq!(status, 200, "{answer}");
}

/// Review r14b m3, m2, m4: a prefix scan cut by its budget resumes from `next` given as
/// `start` beside the prefix on both GET scans (as `POST /v1/kv/read` does), also for a
/// token scoped to the prefix; a `start` outside the prefix, an empty or inverted range and
/// a bound longer than a key are refused by name; a key segment that is not UTF-8 is 400
/// `invalid_path_segment` for a scoped token as for the admin.
#[test]
fn a_prefix_scan_resumes_from_start_and_bad_ranges_are_refused_by_name() {
    let (_dir, serve) = start();
    let admin = serve.client();
    let writes: Vec<Value> = (0..10)
        .map(|i| json!({"op": "put", "key": format!("p/{i}"), "value": i}))
        .chain([json!({"op": "put", "key": "q/0", "value": 0})])
        .collect();
    let (status, done) = call(
        &admin,
        "POST",
        &paths::commits(),
        Some(&json!({ "writes": writes })),
    );
    assert_eq!(status, 200, "{done}");
    let body = json!({"principal": "reader", "scopes": ["kv:read:p/*", "kv:write:p/*"]});
    let (status, token) = call(&admin, "POST", paths::route::TOKENS, Some(&body));
    assert_eq!(status, 201, "{token}");
    let reader = common::api::client_with_token(&serve.base, token["token"].as_str());
    let (_, begun) = call(&reader, "POST", &paths::txns(), Some(&json!({})));
    let txn = begun["txn"].as_str().unwrap().to_string();
    for client in [&admin, &reader] {
        for base in [paths::kv(), paths::txn_kv(&txn)] {
            if std::ptr::eq(client, &admin) && base.starts_with(paths::route::TXNS) {
                continue; // the reader's transaction
            }
            let (status, page) = call(client, "GET", &format!("{base}?prefix=p/&start=p/5"), None);
            assert_eq!(status, 200, "{base}: {page}");
            assert_eq!(
                row_keys(&page),
                ["p/5", "p/6", "p/7", "p/8", "p/9"],
                "{base}"
            );
            for (query, field) in [
                ("prefix=p/&start=q/0", "start"),
                ("prefix=p/&start=a", "start"),
                ("start=p/5&end=p/1", "end"),
                ("start=p/5&end=p/5", "end"),
                ("prefix=p/&end=p/5", "end"),
            ] {
                let (status, v) = call(client, "GET", &format!("{base}?{query}"), None);
                assert_eq!(
                    (status, v["code"].as_str(), v["field"].as_str()),
                    (400, Some("invalid_request"), Some(field)),
                    "{base}?{query}: {v}"
                );
            }
        }
        let (status, v) = call(
            client,
            "GET",
            &format!("{}%FF", paths::route::KV_EMPTY_KEY),
            None,
        );
        assert_eq!(
            (status, v["code"].as_str(), v["field"].as_str()),
            (400, Some("invalid_path_segment"), Some("key")),
            "{v}"
        );
    }
    let long = "p/".to_string() + &"k".repeat(1024);
    for (range, field) in [
        (json!({"start": "z", "end": "a"}), "ranges[0].end"),
        (json!({"start": "m", "end": "m"}), "ranges[0].end"),
        (json!({"start": long}), "ranges[0].start"),
        (json!({"prefix": long}), "ranges[0].prefix"),
        (json!({"prefix": "p/", "start": "q/"}), "ranges[0].start"),
    ] {
        for (path, body) in [
            (paths::kv_read(), json!({ "ranges": [range.clone()] })),
            (
                paths::commits(),
                json!({ "ranges": [range.clone()], "writes": [{"op": "put", "key": "x", "value": 1}]}),
            ),
        ] {
            let (status, v) = call(&admin, "POST", &path, Some(&body));
            assert_eq!(
                (status, v["code"].as_str(), v["field"].as_str()),
                (400, Some("invalid_request"), Some(field)),
                "{path} {range}: {v}"
            );
        }
    }
    // A commit's `next` cuts its range after the range's start, never before it; and it
    // is a bound, so no longer than a key (review r14c N4).
    let long_next = "p".repeat(1500);
    for range in [
        json!({"start": "m", "end": "z", "next": "a"}),
        json!({"prefix": "p", "next": long_next}),
    ] {
        let body = json!({"ranges": [range],
                          "writes": [{"op": "put", "key": "x", "value": 1}]});
        let (status, v) = call(&admin, "POST", &paths::commits(), Some(&body));
        assert_eq!(
            (status, v["code"].as_str(), v["field"].as_str()),
            (400, Some("invalid_request"), Some("ranges[0].next")),
            "{v}"
        );
    }
    let (status, v) = call(&admin, "GET", &paths::kv_key("x"), None);
    assert_eq!(status, 404, "nothing was committed: {v}");
}

/// Review r14b m1: a key is counted in the answer's byte budget as JSON writes it — a
/// control character takes six bytes (`\u0001`) — so keys that escape cannot pass it.
#[test]
fn keys_that_json_escape_count_as_escaped_in_the_answers_budget() {
    let (_dir, serve) = start();
    let client = serve.client();
    // 800 keys of 1,000 U+0001 and 3 digits: 4.8 MB as JSON, 0.8 MB raw.
    let keys: Vec<String> = (0..800)
        .map(|i| format!("{}{i:03}", "\u{1}".repeat(1000)))
        .collect();
    for chunk in keys.chunks(200) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|k| json!({"op": "put", "key": k, "value": 0}))
            .collect();
        let (status, done) = call(
            &client,
            "POST",
            &paths::commits(),
            Some(&json!({ "writes": writes })),
        );
        assert_eq!(status, 200, "{done}");
    }
    let max = logbook_api::limits::KV_READ_ANSWER_BYTES_MAX;
    let read = json!({"ranges": [{"prefix": "\u{1}", "limit": 10_000}]});
    let (status, answer) = call(&client, "POST", &paths::kv_read(), Some(&read));
    assert_eq!(status, 200, "{}", answer["detail"]);
    let bytes = serde_json::to_vec(&answer).unwrap().len();
    assert!(bytes <= max, "POST /v1/kv/read: {bytes} bytes");
    assert!(answer["ranges"][0]["next"].is_string(), "cut by the budget");
    let (status, page) = call(
        &client,
        "GET",
        &format!("{}?prefix=%01&limit=10000", paths::kv()),
        None,
    );
    assert_eq!(status, 200, "{}", page["detail"]);
    let bytes = serde_json::to_vec(&page).unwrap().len();
    assert!(bytes <= max, "GET /v1/kv: {bytes} bytes");
    assert!(page["next"].is_string(), "cut by the budget");
}
