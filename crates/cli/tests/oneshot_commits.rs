//! One-shot commits (`POST /v1/commits`) against a real `logbook serve`: `logbook commit`
//! (writes, increments, conditions, declared reads, request ids) and the Rust client's
//! `commit_retrying`, which reads and commits again after a conflict.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

mod common;

use std::process::{Command, Output, Stdio};

use logbook_api::client::{ClientError, Commit};
use logbook_api::paths;
use logbook_api::problem::ProblemCode;
use logbook_api::token::ConsistencyToken;
use logbook_api::txns::ReadBody;
use serde_json::{Value, json};

fn commit(serve: &common::Serve, args: &[&str]) -> Output {
    Command::new(common::BIN)
        .arg("commit")
        .args(args)
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_out(out: &Output) -> Value {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn start() -> (tempfile::TempDir, common::Serve) {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    (dir, serve)
}

#[test]
fn logbook_commit_writes_in_one_request_and_a_retried_id_answers_duplicate() {
    let (_dir, serve) = start();
    let first = json_out(&commit(
        &serve,
        &[
            "--put",
            "user/ada={\"seats\":2}",
            "--increment",
            "booked=2",
            "--json",
        ],
    ));
    let offset = first["offset"].as_u64().unwrap();
    assert_eq!(first["incremented"]["booked"], 2);

    // The text form: the offset, the increment's result.
    let out = commit(&serve, &["--increment", "booked=-1", "--request-id", "r-1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("committed at offset "), "{stdout}");
    assert!(stdout.contains("booked = 1"), "{stdout}");
    assert!(!stdout.contains("duplicate"), "{stdout}");

    // The same request id again: the original commit, not a second decrement.
    let out = commit(&serve, &["--increment", "booked=-1", "--request-id", "r-1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("booked = 1"), "{stdout}");
    assert!(stdout.contains("duplicate"), "{stdout}");
    let client = serve.default_client();
    let row = client
        .kv_get("booked", &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(row.value.get(), "1", "applied once");

    // Conditions: if-absent on a key that exists is key_exists; if-version at the version
    // the key has commits.
    let out = commit(&serve, &["--put", "user/ada=1", "--if-absent", "user/ada"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("key_exists"), "{stderr}");
    let at = offset.to_string();
    let done = json_out(&commit(
        &serve,
        &[
            "--delete",
            "user/ada",
            "--if-version",
            &format!("user/ada={at}"),
            "--json",
        ],
    ));
    assert!(done["offset"].as_u64().unwrap() > offset);
    assert!(
        client
            .kv_get("user/ada", &Default::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_conflict_answers_serialization_failure_and_exit_1_and_changes_nothing() {
    let (_dir, serve) = start();
    let a = json_out(&commit(&serve, &["--put", "k=1", "--json"]));
    let b = json_out(&commit(&serve, &["--put", "k=2", "--json"]));
    let (a, b) = (a["offset"].as_u64().unwrap(), b["offset"].as_u64().unwrap());
    // Read at a snapshot that has a's write but not b's, then write k: first committer
    // (b) wins.
    let snapshot = (a + 1).to_string();
    assert!(a < b, "b committed after a's snapshot");
    let read = format!("k={a}");
    for args in [
        vec!["--snapshot", &snapshot, "--read", &read, "--put", "k=3"],
        vec!["--snapshot", &snapshot, "--put", "k=3", "--json"],
    ] {
        let out = commit(&serve, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        if args.contains(&"--json") {
            let problem: Value = serde_json::from_str(stderr.trim()).unwrap();
            assert_eq!(problem["code"], "serialization_failure", "{stderr}");
            assert_eq!(problem["retryable"], true, "{stderr}");
        } else {
            assert!(stderr.contains("serialization_failure (409)"), "{stderr}");
            assert!(stderr.contains("retryable"), "{stderr}");
        }
    }
    let client = serve.default_client();
    let row = client.kv_get("k", &Default::default()).unwrap().unwrap();
    assert_eq!(row.value.get(), "2");

    // Bad flags are named and send nothing.
    let out = commit(&serve, &["--put", "k=not json"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("--put \"k=not json\": the value is not JSON"),
        "{stderr}"
    );
}

#[test]
fn commit_retrying_reads_again_after_a_conflict() {
    let (_dir, serve) = start();
    let client = serve.default_client();
    let other = serve.default_client();
    client
        .commit(&Commit::new().put("balance", &json!(100)))
        .unwrap();
    let read = ReadBody {
        keys: vec!["balance".into()],
        ..ReadBody::default()
    };
    let mut attempts = 0;
    let done = client
        .commit_retrying(&read, |answer| {
            attempts += 1;
            let seen: i64 = answer.keys[0]
                .value
                .as_ref()
                .map_or(0, |v| v.get().parse().unwrap());
            if attempts == 1 {
                // Another client commits between the read and the commit: the first
                // attempt's read is stale.
                // (On a thread of its own: a blocking client must not be called from
                // inside another's runtime, where this closure runs.)
                std::thread::scope(|s| {
                    s.spawn(|| other.commit(&Commit::new().put("balance", &json!(seen + 50))))
                        .join()
                        .unwrap()
                        .unwrap();
                });
            }
            Ok(Commit::new().put("balance", &json!(seen + 10)))
        })
        .unwrap();
    assert_eq!(
        attempts, 2,
        "the first attempt met the conflict and was run again"
    );
    let row = client
        .kv_get("balance", &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        row.value.get(),
        "160",
        "the retry read the other commit's 150"
    );
    assert_eq!(row.version, done.offset);

    // A snapshot ahead of the log is refused by name, not retried.
    let ahead = ReadBody {
        snapshot: Some(1_000_000),
        ..ReadBody::default()
    };
    let e = client
        .commit_retrying(&ahead, |_| Ok(Commit::new().put("x", &json!(1))))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Problem { .. })
            && e.code() == Some(ProblemCode::UnprocessableRequest),
        "{e}"
    );
}

fn kv_read(serve: &common::Serve, args: &[&str]) -> String {
    let out = Command::new(common::BIN)
        .args(["kv", "read"])
        .args(args)
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

/// `snapshot S` and `KEY = VALUE (version V)` of `logbook kv read`'s text: (S, V).
fn snapshot_and_version(read: &str, key: &str) -> (String, String) {
    let snapshot = read
        .lines()
        .find_map(|l| l.strip_prefix("snapshot "))
        .unwrap_or_else(|| panic!("no snapshot in {read}"));
    let version = read
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .and_then(|l| l.rsplit_once("(version "))
        .and_then(|(_, v)| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no version of {key} in {read}"));
    (snapshot.to_string(), version.to_string())
}

/// The README's read-modify-write (review r14 F3): read `seats/left`, then commit its new
/// value with the read declared. Another commit that changed `seats/left` in between makes
/// it a lost update, which the certifier refuses (serialization_failure, exit 1, nothing
/// written); with no such commit it commits. The example it replaced promised a refusal
/// that serializable snapshot isolation rightly does not give: a read of one key and a
/// write of another, the read key changed by a later commit, is serializable (the reader
/// simply comes first) — shown last.
#[test]
fn the_readme_read_modify_write_is_refused_after_a_concurrent_change_and_commits_without() {
    let (_dir, serve) = start();
    json_out(&commit(&serve, &["--put", "seats/left=100", "--json"]));
    let (snapshot, version) = snapshot_and_version(&kv_read(&serve, &["seats/left"]), "seats/left");
    // Another client books two seats between the read and the commit.
    json_out(&commit(&serve, &["--put", "seats/left=98", "--json"]));
    let read = format!("seats/left={version}");
    let args = [
        "--snapshot",
        &snapshot,
        "--read",
        &read,
        "--put",
        "seats/left=99",
    ];
    let out = commit(&serve, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("serialization_failure (409)"), "{stderr}");
    let client = serve.default_client();
    let left = |client: &logbook_api::client::blocking::Client| {
        let row = client.kv_get("seats/left", &Default::default()).unwrap();
        row.unwrap().value.get().to_string()
    };
    assert_eq!(left(&client), "98", "the other booking is not lost");

    // Read again and commit: nothing changed in between, so it commits.
    let (snapshot, version) = snapshot_and_version(&kv_read(&serve, &["seats/left"]), "seats/left");
    let read = format!("seats/left={version}");
    let out = commit(
        &serve,
        &[
            "--snapshot",
            &snapshot,
            "--read",
            &read,
            "--put",
            "seats/left=97",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(left(&client), "97");

    // The old example: read seats/booked, write seats/left, while another commit changes
    // seats/booked. Serializable as "this transaction, then the other": it commits.
    json_out(&commit(&serve, &["--put", "seats/booked=3", "--json"]));
    let (snapshot, version) =
        snapshot_and_version(&kv_read(&serve, &["seats/booked"]), "seats/booked");
    json_out(&commit(&serve, &["--put", "seats/booked=5", "--json"]));
    let read = format!("seats/booked={version}");
    let out = commit(
        &serve,
        &[
            "--snapshot",
            &snapshot,
            "--read",
            &read,
            "--put",
            "seats/left=95",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "no anomaly, no abort: {stdout}{stderr}"
    );
}

/// A declared read without `version` (review r14 F5) is 400 naming `reads[i].version`:
/// before, it was taken silently for "the key was absent". Absence is stated as `null`.
#[test]
fn a_read_without_its_version_is_refused_by_name_and_null_states_absence() {
    let (_dir, serve) = start();
    let client = serve.client();
    let send = |body: Value| {
        let request = common::api::request("POST", &logbook_api::paths::commits(), Some(&body));
        common::api::send(&client, request).unwrap()
    };
    let (status, v) = send(json!({"writes": [{"op": "put", "key": "k", "value": 1}]}));
    assert_eq!(status, 200, "{v}");
    let written = v["offset"].clone();
    let (status, v) = send(json!({
        "reads": [{"key": "k", "version": written}, {"key": "gone"}],
        "writes": [{"op": "put", "key": "x", "value": 1}],
    }));
    assert_eq!(
        (status, v["code"].as_str(), v["field"].as_str()),
        (400, Some("invalid_json"), Some("reads[1].version")),
        "{v}"
    );
    let row = serve
        .default_client()
        .kv_get("x", &Default::default())
        .unwrap();
    assert!(row.is_none(), "the refused commit wrote nothing");
    let (status, v) = send(json!({
        "reads": [{"key": "k", "version": written}, {"key": "gone", "version": null}],
        "writes": [{"op": "put", "key": "x", "value": 1}],
    }));
    assert_eq!(status, 200, "absence stated as null: {v}");
    // `null` for a key that was present is a version it did not have.
    let (status, v) = send(json!({
        "reads": [{"key": "k", "version": null}],
        "writes": [{"op": "put", "key": "x", "value": 2}],
    }));
    assert_eq!(
        (status, v["field"].as_str()),
        (422, Some("reads[0].version")),
        "{v}"
    );
}

/// A read-only commit's request id reused by a commit that writes (review r14): when the
/// original read something, its id is not compared (a re-run may compute other writes from
/// newer values), so the answer is the read-only original's — `duplicate: true`, `offset:
/// null` — and nothing is written; `logbook commit` says in words that nothing of this
/// request was applied. An original that read nothing is compared: 409
/// `request_id_conflict`.
#[test]
fn a_read_only_commits_id_reused_with_a_write_answers_duplicate_and_writes_nothing() {
    let (_dir, serve) = start();
    let first = json_out(&commit(
        &serve,
        &[
            "--read-only",
            "--read",
            "k=absent",
            "--request-id",
            "ro-1",
            "--json",
        ],
    ));
    assert_eq!(first["offset"], Value::Null, "{first}");
    let again = json_out(&commit(
        &serve,
        &["--put", "k=1", "--request-id", "ro-1", "--json"],
    ));
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        again["offset"],
        Value::Null,
        "the original's answer: {again}"
    );
    let out = commit(&serve, &["--put", "k=1", "--request-id", "ro-1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("not applied") && stdout.contains("ro-1"),
        "the text says this request was not applied: {stdout}"
    );
    let row = serve
        .default_client()
        .kv_get("k", &Default::default())
        .unwrap();
    assert!(row.is_none(), "nothing written under the reused id");

    json_out(&commit(
        &serve,
        &["--read-only", "--request-id", "ro-2", "--json"],
    ));
    let out = commit(&serve, &["--put", "k=1", "--request-id", "ro-2"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("request_id_conflict"), "{stderr}");
}

/// `POST /v1/kv/read` is inside the session: a `token` is a minimum snapshot (refused by
/// name when a named snapshot is below it or it is not a commit's), the answer carries its
/// snapshot's token, and the client sends its session's `_txn` entry and keeps the answer's.
#[test]
fn kv_read_takes_a_token_as_a_minimum_snapshot_and_the_client_keeps_it() {
    let (_dir, serve) = start();
    let client = serve.default_client();
    let done = client
        .commit(&Commit::new().put("seat", &json!(1)))
        .unwrap();
    let offset = done.offset.unwrap();
    let raw = serve.client();
    let path = logbook_api::paths::kv_read();
    let with = |token: &str| {
        path.clone()
            + &logbook_api::paths::Query::new()
                .push("token", token)
                .finish()
    };
    let read = json!({"keys": ["seat"]});
    let (status, answer) = common::api::call(
        &raw,
        "POST",
        &with(done.token.as_deref().unwrap()),
        Some(&read),
    );
    assert_eq!(status, 200, "{answer}");
    let snapshot = answer["snapshot"].as_u64().unwrap();
    assert!(snapshot > offset, "{answer}");
    assert_eq!(answer["keys"][0]["value"], json!(1));
    let reflected = ConsistencyToken::decode(answer["token"].as_str().unwrap()).unwrap();
    assert_eq!(reflected.streams["_txn"].offsets, [(0, snapshot)].into());
    // A snapshot named below the token is refused by name, as is a token of no commit.
    let below = json!({"keys": ["seat"], "snapshot": offset});
    let (status, problem) = common::api::call(
        &raw,
        "POST",
        &with(done.token.as_deref().unwrap()),
        Some(&below),
    );
    assert_eq!(
        (status, problem["field"].as_str()),
        (400, Some("snapshot")),
        "{problem}"
    );
    let orders = ConsistencyToken::from_positions("orders", 1, [(0, 1)]);
    let (status, problem) =
        common::api::call(&raw, "POST", &with(&orders.encode().unwrap()), Some(&read));
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_token")),
        "{problem}"
    );

    // The client: a fresh session learns the snapshot it read at ...
    let fresh = serve.default_client();
    let body = ReadBody {
        keys: vec!["seat".into()],
        ..ReadBody::default()
    };
    let answer = fresh.kv_read(&body).unwrap();
    assert_eq!(
        fresh.session().positions("_txn").unwrap().offsets,
        [(0, answer.snapshot)].into()
    );
    // ... and reads its own commits: the session's `_txn` entry goes with the read.
    let again = client
        .commit(&Commit::new().put("seat", &json!(2)))
        .unwrap();
    let answer = client.kv_read(&body).unwrap();
    assert!(answer.snapshot > again.offset.unwrap());
    assert_eq!(answer.keys[0].value.as_ref().unwrap().get(), "2");
    assert_eq!(
        client.session().positions("_txn").unwrap().offsets,
        [(0, answer.snapshot)].into()
    );
}

/// `logbook_txn_certifier_bytes` from `GET /metrics`.
fn certifier_bytes(client: &logbook_api::client::blocking::Client) -> u64 {
    let (status, text) = common::api::call(client, "GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap().to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("logbook_txn_certifier_bytes "))
        .unwrap_or_else(|| panic!("no logbook_txn_certifier_bytes in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Review r14b M3: the certifier's memory of committed transactions is held under its byte
/// budget (`--certifier-bytes-max`, counted in `/metrics`) whatever read-only commits a
/// reader sends — they append nothing, so the snapshot window never ages them out — and a
/// transaction's footprint over its own limit is refused by name before it is certified.
#[test]
fn the_certifiers_memory_stays_under_its_byte_budget_after_many_large_read_only_commits() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 32 << 20;
    let serve = common::spawn_serve(
        dir.path(),
        &["--certifier-bytes-max", &budget.to_string()],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let client = serve.client();
    let commit = |body: &Value| {
        let request = common::api::request("POST", &logbook_api::paths::commits(), Some(body));
        common::api::send(&client, request).unwrap()
    };
    // A commit first: read-only commits at position 0 could be concurrent with nothing,
    // and are not kept at all.
    let (status, v) = commit(&json!({"writes": [{"op": "put", "key": "first", "value": 0}]}));
    assert_eq!(status, 200, "{v}");
    // 40,000 declared absent keys of 101 bytes: about 6 MB of the budget each.
    let pad = "p".repeat(90);
    let reads = |n: usize, keys: usize| -> Value {
        (0..keys)
            .map(|i| json!({"key": format!("r/{n}/{i:06}/{pad}"), "version": null}))
            .collect()
    };
    for n in 0..10 {
        let (status, v) = commit(&json!({"reads": reads(n, 40_000)}));
        assert_eq!(status, 200, "{v}");
        assert!(v["offset"].is_null(), "read-only: {v}");
        let bytes = certifier_bytes(&client);
        assert!(
            bytes <= budget,
            "after {} commits: {bytes} > {budget}",
            n + 1
        );
        assert!(bytes >= 5_000_000, "the newest commit is counted: {bytes}");
    }
    // One transaction's footprint over 8 MiB: refused by name, nothing certified.
    let (status, v) = commit(&json!({"reads": reads(99, 60_000)}));
    assert_eq!(
        (status, v["code"].as_str(), v["field"].as_str()),
        (413, Some("transaction_too_large"), Some("reads")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("footprint bytes"),
        "{v}"
    );
    // Read-modify-writes still commit, and a lost update is still refused.
    let (status, v) = commit(&json!({"writes": [{"op": "put", "key": "n", "value": 1}]}));
    assert_eq!(status, 200, "{v}");
    let version = v["offset"].as_u64().unwrap();
    // Two read-modify-writes from the same read: the second is a lost update.
    let rmw = |value: i64| {
        json!({"snapshot": version + 1, "reads": [{"key": "n", "version": version}],
               "writes": [{"op": "put", "key": "n", "value": value}]})
    };
    let (status, v) = commit(&rmw(2));
    assert_eq!(status, 200, "{v}");
    let (status, v) = commit(&rmw(3));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("serialization_failure")),
        "{v}"
    );
    assert!(certifier_bytes(&client) <= budget);
}

/// Review r14b m2: a refusal names the field the body has and says what it found in words:
/// locks over the limit name `locks`, a `version_mismatch` says `version N` or `the key
/// absent` (no Rust `Some(1)`), and an isolation that is not a name lists the names.
#[test]
fn refusals_name_the_bodys_field_and_say_what_they_found_in_words() {
    let (_dir, serve) = start();
    let client = serve.client();
    let send = |body: &Value| common::api::call(&client, "POST", &paths::commits(), Some(body));
    let locks: Vec<String> = (0..10_001).map(|i| format!("l/{i}")).collect();
    let (status, v) = send(&json!({ "locks": locks }));
    assert_eq!((status, v["field"].as_str()), (422, Some("locks")), "{v}");
    let (status, v) = send(&json!({"writes": [{"op": "put", "key": "k", "value": 1}]}));
    assert_eq!(status, 200, "{v}");
    let at = v["offset"].as_u64().unwrap();
    let (status, v) = send(&json!({"writes": [
        {"op": "put", "key": "k", "value": 2, "if_version": at + 7}]}));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("version_mismatch")),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("found version {at}")), "{detail}");
    assert!(!detail.contains("Some("), "{detail}");
    let (status, v) = send(&json!({"writes": [
        {"op": "delete", "key": "absent", "if_version": 3}]}));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("version_mismatch")),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("found the key absent"), "{detail}");
    assert!(!detail.contains("None"), "{detail}");
    for isolation in [json!(1), json!("linearizable")] {
        let (status, v) = send(&json!({ "isolation": isolation }));
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some("isolation")),
            "{v}"
        );
        let detail = v["detail"].as_str().unwrap();
        for name in ["read_committed", "snapshot", "serializable"] {
            assert!(detail.contains(name), "{isolation}: {detail}");
        }
    }
}
