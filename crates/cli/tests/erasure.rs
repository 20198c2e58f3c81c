//! Personal data and erasure through the real binary (issue 19, decision 0030): a stream
//! declaring personal fields stores them only as ciphertext (random markers appear in no file
//! under the data directory), reads decrypt them, `logbook data-subjects erase` destroys the
//! subject's key (its slot zeroed in the key store), after which its fields read as
//! `{"erased": true}` — across a restart too — while other subjects and other fields are
//! untouched. Bad declarations and records are refused by name with nothing stored; a wrong
//! master key or a missing key store stops the server from starting, and nothing is lost.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::api::{call, client_with_token, request, send};
use common::{BIN, Serve, spawn_serve};
use logbook_api::paths;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// A master key file (mode 0600) outside the data directory.
fn key_file(dir: &Path, name: &str, hex: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn serve_with_key(data: &Path, key: &Path) -> Serve {
    spawn_serve(
        data,
        &["--master-key-file", key.to_str().unwrap()],
        &[],
        Stdio::null(),
    )
}

fn admin(s: &Serve) -> logbook_api::client::blocking::Client {
    client_with_token(&s.base, s.token.as_deref())
}

/// Every record of `stream` (all partitions), as read through the API.
fn read_all(s: &Serve, stream: &str, partitions: u32) -> Vec<Value> {
    let c = admin(s);
    let mut out = Vec::new();
    for p in 0..partitions {
        let (status, body) = call(
            &c,
            "GET",
            &format!("{}?partition={p}&limit=1000", paths::records(stream)),
            None,
        );
        assert_eq!(status, 200, "{body}");
        out.extend(
            body["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["value"].clone()),
        );
    }
    out
}

/// The files under `dir` (or `dir` itself, a file) holding `needle`, every byte searched.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    if dir.is_file() {
        let bytes = std::fs::read(dir).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(dir.to_path_buf());
        }
        return hits;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

fn logbook(s: &Serve, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(s.cli_env())
        .output()
        .unwrap()
}

#[test]
fn personal_fields_are_ciphertext_on_disk_readable_until_erased_then_gone() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut marker = |what: &str| format!("{what}-{:032x}", rng.r#gen::<u128>());
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "master.key", KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve_with_key(&data, &key);
    let c = admin(&s);
    let declared = json!({"subject": "/user", "fields": ["/email", "/address/ip"]});
    let (status, body) = call(
        &c,
        "PUT",
        &paths::stream("people"),
        Some(&json!({"partitions": 2, "personal_data": declared})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["personal_data"], declared);

    // Subject ids are random too, so that the key store's bytes can be searched for them.
    let (gone, kept) = (marker("subject"), marker("subject"));
    let (gone_email, gone_ip, kept_email) = (marker("email"), marker("ip"), marker("email"));
    let records = json!({"records": [
        {"key": "a", "value": {"user": gone, "email": gone_email, "address": {"ip": gone_ip, "city": "Oslo"}, "n": 1}},
        {"key": "b", "value": {"user": kept, "email": kept_email, "n": 2}},
        {"key": "c", "value": {"user": gone, "n": 3}},
    ]});
    let (status, body) = call(&c, "POST", &paths::records("people"), Some(&records));
    assert_eq!(status, 201, "{body}");
    // A retry under one request id is a duplicate, not a conflict: encryption is
    // deterministic per key, field and value.
    let retried = json!({"user": gone, "email": gone_email, "n": 4});
    for expected in [201, 200] {
        let r = request(
            "POST",
            &paths::records("people"),
            Some(&json!({"value": retried})),
        )
        .request_id(Some("retry-1"));
        let (status, body) = send(&c, r).unwrap();
        assert_eq!(status, expected, "{body}");
    }

    let values = read_all(&s, "people", 2);
    assert_eq!(values.len(), 4);
    let find = |values: &[Value], n: i64| values.iter().find(|v| v["n"] == n).unwrap().clone();
    assert_eq!(find(&values, 1)["email"], json!(gone_email));
    assert_eq!(
        find(&values, 1)["address"],
        json!({"ip": gone_ip, "city": "Oslo"})
    );
    assert_eq!(find(&values, 2)["email"], json!(kept_email));
    assert_eq!(find(&values, 4)["email"], json!(gone_email));

    // The log holds ciphertext only: no marker in any file, even before the erasure.
    for m in [&gone_email, &gone_ip, &kept_email] {
        assert_eq!(
            files_holding(&data, m.as_bytes()),
            Vec::<PathBuf>::new(),
            "{m}"
        );
    }
    let store = data.join("keys").join("data-keys");
    assert!(
        !files_holding(&store, gone.as_bytes()).is_empty(),
        "a live key's slot names its subject"
    );

    // The dry run changes nothing; erasing needs --yes.
    let out = logbook(&s, &["data-subjects", "erase", &gone, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("dry run") && text.contains("key live") && text.contains("people"),
        "{text}"
    );
    let out = logbook(&s, &["data-subjects", "erase", &gone]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(
        find(&read_all(&s, "people", 2), 1)["email"],
        json!(gone_email)
    );

    let out = logbook(&s, &["data-subjects", "erase", &gone, "--yes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("key erased"), "{text}");

    let erased = json!({"erased": true});
    let check = |s: &Serve| {
        let values = read_all(s, "people", 2);
        let one = find(&values, 1);
        assert_eq!(one["email"], erased);
        assert_eq!(one["address"]["ip"], erased);
        assert_eq!(one["address"]["city"], json!("Oslo"), "other fields stay");
        assert_eq!(one["user"], json!(gone));
        assert_eq!(find(&values, 4)["email"], erased);
        assert_eq!(
            find(&values, 2)["email"],
            json!(kept_email),
            "other subjects stay"
        );
    };
    check(&s);
    // The key's slot is zeroed: the store no longer names the subject.
    assert_eq!(
        files_holding(&store, gone.as_bytes()),
        Vec::<PathBuf>::new()
    );
    for m in [&gone_email, &gone_ip, &kept_email] {
        assert_eq!(
            files_holding(&data, m.as_bytes()),
            Vec::<PathBuf>::new(),
            "{m}"
        );
    }

    // Idempotent: again, the same answer and no second erasure record.
    let (status, body) = call(&c, "DELETE", &paths::data_subject(&gone), None);
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("erased")),
        "{body}"
    );
    let (_, body) = call(&c, "GET", &paths::records("_data_subjects"), None);
    let recorded: Vec<&Value> = body["records"].as_array().unwrap().iter().collect();
    assert_eq!(recorded.len(), 1, "{body}");
    assert_eq!(recorded[0]["value"]["subject"], json!(gone));
    let (_, body) = call(&c, "GET", &paths::data_subject(&kept), None);
    assert_eq!(body["key"], json!("live"));

    // After a restart: the same.
    drop(s);
    let s = serve_with_key(&data, &key);
    check(&s);
}

#[test]
fn bad_declarations_and_records_are_refused_by_name_and_change_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "master.key", KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with_key(&dir.path().join("data"), &key);
    let c = admin(&s);
    let bad = [
        (
            json!({"subject": "user", "fields": ["/email"]}),
            "personal_data.subject",
        ),
        (
            json!({"subject": "/user", "fields": []}),
            "personal_data.fields",
        ),
        (
            json!({"subject": "/user", "fields": ["/user/name"]}),
            "personal_data.fields[0]",
        ),
        (
            json!({"subject": "/u", "fields": ["/a", "/a/b"]}),
            "personal_data.fields[1]",
        ),
        (
            json!({"subject": "/u", "fields": ["/a~2"]}),
            "personal_data.fields[0]",
        ),
    ];
    for (declaration, field) in bad {
        let (status, body) = call(
            &c,
            "PUT",
            &paths::stream("p"),
            Some(&json!({"personal_data": declaration})),
        );
        assert_eq!(status, 400, "{declaration}: {body}");
        assert_eq!(body["code"], "invalid_stream_config", "{body}");
        assert_eq!(body["field"], field, "{body}");
        let (status, _) = call(&c, "GET", &paths::stream("p"), None);
        assert_eq!(status, 404, "nothing created");
    }
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    let (status, _) = call(
        &c,
        "PUT",
        &paths::stream("p"),
        Some(&json!({"personal_data": declared})),
    );
    assert_eq!(status, 201);
    let records = [
        (json!({"value": {"email": "x"}}), "value/user"),
        (
            json!({"value": {"user": "has space", "email": "x"}}),
            "value/user",
        ),
        (json!({"value": {"user": -1, "email": "x"}}), "value/user"),
        (
            json!({"records": [{"value": {"user": "ok", "email": "x"}}, {"value": {"email": "y"}}]}),
            "records[1].value/user",
        ),
    ];
    for (body, field) in records {
        let (status, answer) = call(&c, "POST", &paths::records("p"), Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_data_subject", "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (_, info) = call(&c, "GET", &paths::stream("p"), None);
    assert_eq!(info["records"], 0, "nothing stored: {info}");
    let (_, subject) = call(&c, "GET", &paths::data_subject("ok"), None);
    assert_eq!(
        subject["key"], "none",
        "no key made for a refused batch: {subject}"
    );
    let (status, body) = call(&c, "DELETE", &paths::data_subject("has space"), None);
    assert_eq!(
        (status, body["code"].clone(), body["field"].clone()),
        (400, json!("invalid_data_subject"), json!("id"))
    );

    // The scope: a token for data cannot erase; one with data_subjects:erase can.
    let mut secrets = Vec::new();
    for scope in ["streams:read:*", "data_subjects:erase"] {
        let (status, body) = call(
            &c,
            "POST",
            paths::route::TOKENS,
            Some(&json!({"principal": "p", "scopes": [scope]})),
        );
        assert_eq!(status, 201, "{body}");
        secrets.push(body["token"].as_str().unwrap().to_string());
    }
    let (status, body) = call(
        &client_with_token(&s.base, Some(&secrets[0])),
        "DELETE",
        &paths::data_subject("ok"),
        None,
    );
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("forbidden")),
        "{body}"
    );
    let (status, body) = call(
        &client_with_token(&s.base, Some(&secrets[1])),
        "DELETE",
        &paths::data_subject("ok"),
        None,
    );
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("none")),
        "{body}"
    );

    // A server without a master key keeps no personal data.
    let other = tempfile::tempdir().unwrap();
    let plain = spawn_serve(&other.path().join("data"), &[], &[], Stdio::null());
    let (status, body) = call(
        &admin(&plain),
        "PUT",
        &paths::stream("p"),
        Some(&json!({"personal_data": declared})),
    );
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("personal_data")),
        "{body}"
    );
}

/// `logbook serve` run to its exit (it must not start): its stderr.
fn refused_start(data: &Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("LOGBOOK_MASTER_KEY")
        .env_remove("LOGBOOK_MASTER_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_master_key_or_a_missing_key_store_stops_the_start_and_loses_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let (a, b) = (
        key_file(keys.path(), "a.key", KEY_A),
        key_file(keys.path(), "b.key", KEY_B),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve_with_key(&data, &a);
    let c = admin(&s);
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    call(
        &c,
        "PUT",
        &paths::stream("p"),
        Some(&json!({"personal_data": declared})),
    );
    let (status, _) = call(
        &c,
        "POST",
        &paths::records("p"),
        Some(&json!({"value": {"user": "u1", "email": "e@x"}})),
    );
    assert_eq!(status, 201);
    drop(s);

    let err = refused_start(&data, &["--master-key-file", b.to_str().unwrap()]);
    assert!(err.contains("is not the one of the key store"), "{err}");
    let err = refused_start(&data, &[]);
    assert!(err.contains("needs its master key"), "{err}");
    let store = data.join("keys").join("data-keys");
    let saved = dir.path().join("saved-keys");
    std::fs::rename(&store, &saved).unwrap();
    let err = refused_start(&data, &["--master-key-file", a.to_str().unwrap()]);
    assert!(err.contains("missing") && err.contains("\"p\""), "{err}");
    std::fs::rename(&saved, &store).unwrap();
    let mut loose = keys.path().join("a.key");
    {
        use std::os::unix::fs::PermissionsExt;
        loose.set_file_name("loose.key");
        std::fs::copy(&a, &loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let err = refused_start(&data, &["--master-key-file", loose.to_str().unwrap()]);
    assert!(err.contains("chmod 600"), "{err}");

    let s = serve_with_key(&data, &a);
    assert_eq!(
        read_all(&s, "p", 1)[0]["email"],
        json!("e@x"),
        "nothing lost"
    );
}

/// The rows of `view` (one page; the test's views are small), read after `token`.
fn rows(s: &Serve, view: &str, token: &str) -> Vec<Value> {
    let (status, body) = call(
        &admin(s),
        "GET",
        &format!("{}?limit=1000&token={token}", paths::view_rows(view)),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["rows"].as_array().unwrap().clone()
}

/// `GET /v1/data-subjects/{id}/export`: its JSON Lines, and the answer's text.
fn export(s: &Serve, id: &str) -> (Vec<Value>, String) {
    let (status, body) = call(&admin(s), "GET", &paths::data_subject_export(id), None);
    assert_eq!(status, 200, "{body}");
    let text = match &body {
        Value::Null => String::new(),
        Value::String(t) => t.clone(),
        one => one.to_string(), // a single line parses as one JSON object
    };
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, text)
}

/// A row's value by key.
fn row(rows: &[Value], key: &str) -> Value {
    rows.iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))["value"]
        .clone()
}

#[test]
fn views_hold_ciphertext_and_show_an_erased_subjects_fields_as_erased_live_and_rebuilt() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut marker = |what: &str| format!("{what}-{:032x}", rng.r#gen::<u128>());
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "master.key", KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = serve_with_key(&data, &key);
    let c = admin(&s);
    let declared = json!({"subject": "/user", "fields": ["/email", "/address/ip"]});
    let (status, body) = call(
        &c,
        "PUT",
        &paths::stream("people"),
        Some(&json!({"partitions": 2, "personal_data": declared})),
    );
    assert_eq!(status, 201, "{body}");

    // A view may carry personal fields; it may not compute on them (each subject's key
    // differs, so the ciphertext is no value to filter, index, group or aggregate on).
    let refused = [
        (json!({"kind": "index", "on": ["user", "email"]}), "on[1]"),
        (json!({"kind": "index", "on": ["address"]}), "on[0]"),
        (
            json!({"kind": "aggregate", "group_by": ["address.ip"], "aggregates": {"n": {"fn": "count"}}}),
            "group_by[0]",
        ),
        (
            json!({"kind": "aggregate", "aggregates": {"d": {"fn": "count_distinct", "field": "email"}}}),
            "aggregates.d.field",
        ),
        (
            json!({"kind": "table", "filter": {"field": "email", "op": "eq", "value": "x"}}),
            "filter",
        ),
    ];
    for (mut spec, field) in refused {
        spec["source"] = json!("people");
        let (status, body) = call(&c, "PUT", &paths::view("bad"), Some(&spec));
        assert_eq!(
            (status, body["code"].clone(), body["field"].clone()),
            (400, json!("invalid_view_spec"), json!(field)),
            "{spec}: {body}"
        );
        let (status, _) = call(&c, "GET", &paths::view("bad"), None);
        assert_eq!(status, 404, "nothing created");
    }
    call(
        &c,
        "PUT",
        &paths::stream("copy"),
        Some(&json!({"partitions": 1})),
    );
    let (status, body) = call(
        &c,
        "PUT",
        &paths::derived_stream("leak"),
        Some(&json!({"source": "people", "target": "copy"})),
    );
    assert_eq!(
        (status, body["code"].clone(), body["field"].clone()),
        (400, json!("invalid_derived_spec"), json!("source")),
        "{body}"
    );

    let views = [
        ("whole", json!({"kind": "table"})),
        (
            "projected",
            json!({"kind": "table", "fields": ["email", "address.ip", "n"]}),
        ),
        ("by_user", json!({"kind": "index", "on": ["user"]})),
        (
            "per_user",
            json!({"kind": "aggregate", "group_by": ["user"], "aggregates": {"n": {"fn": "sum", "field": "n"}}}),
        ),
    ];
    for (name, mut spec) in views.clone() {
        spec["source"] = json!("people");
        let (status, body) = call(&c, "PUT", &paths::view(name), Some(&spec));
        assert_eq!(status, 201, "{name}: {body}");
    }

    let (gone, kept) = (marker("subject"), marker("subject"));
    let (gone_email, gone_ip, kept_email) = (marker("email"), marker("ip"), marker("email"));
    let records = json!({"records": [
        {"key": "a", "value": {"user": gone, "email": gone_email, "address": {"ip": gone_ip, "city": "Oslo"}, "n": 1}},
        {"key": "b", "value": {"user": kept, "email": kept_email, "n": 2}},
        {"key": "c", "value": {"user": gone, "n": 3}},
    ]});
    let (status, body) = call(&c, "POST", &paths::records("people"), Some(&records));
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();

    let whole = rows(&s, "whole", &token);
    assert_eq!(row(&whole, "a")["email"], json!(gone_email), "decrypted");
    assert_eq!(row(&whole, "a")["address"]["ip"], json!(gone_ip));
    let projected = rows(&s, "projected", &token);
    assert_eq!(
        row(&projected, "a"),
        json!({"email": gone_email, "address.ip": gone_ip, "n": 1}),
        "a projection moves a sealed field; it is still revealed"
    );
    assert_eq!(row(&rows(&s, "per_user", &token), &gone)["n"], json!(4));

    // The export (right of access): every record about the subject, decrypted, with where
    // it came from; nothing of another subject.
    let (lines, text) = export(&s, &gone);
    assert_eq!(lines.len(), 2, "{text}");
    let a = lines.iter().find(|l| l["key"] == "a").unwrap();
    assert_eq!(a["stream"], json!("people"));
    assert!(a["partition"].is_u64() && a["offset"].is_u64(), "{a}");
    assert_eq!(a["value"]["email"], json!(gone_email));
    assert_eq!(a["value"]["address"]["ip"], json!(gone_ip));
    assert!(!text.contains(&kept_email), "{text}");
    assert_eq!(export(&s, "nobody").0, Vec::<Value>::new());
    // The CLI writes the same lines to a private file, and never over an existing one.
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("export.jsonl");
    let file_arg = file.to_str().unwrap();
    let out = logbook(&s, &["data-subjects", "export", &gone, "--out", file_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported 2 records"),
        "{out:?}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 2, "{written}");
    assert!(written.contains(&gone_email) && !written.contains(&kept_email));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "an export holds personal data");
    let again = logbook(&s, &["data-subjects", "export", &gone, "--out", file_arg]);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not overwritten"),
        "{again:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let stdout = logbook(&s, &["data-subjects", "export", &gone]);
    assert!(stdout.status.success(), "{stdout:?}");
    assert_eq!(String::from_utf8_lossy(&stdout.stdout), written);
    let (status, body) = call(&c, "GET", &paths::data_subject_export("a b"), None);
    assert_eq!(
        (status, body["code"].clone(), body["field"].clone()),
        (400, json!("invalid_data_subject"), json!("id"))
    );

    let (status, body) = call(&c, "DELETE", &paths::data_subject(&gone), None);
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("erased")),
        "{body}"
    );

    let erased = json!({"erased": true});
    let check = |s: &Serve| {
        let whole = rows(s, "whole", &token);
        let a = row(&whole, "a");
        assert_eq!(
            (&a["email"], &a["address"]["ip"]),
            (&erased, &erased),
            "{a}"
        );
        assert_eq!(a["address"]["city"], json!("Oslo"), "other fields stay");
        assert_eq!(
            row(&whole, "b")["email"],
            json!(kept_email),
            "other subjects stay"
        );
        assert_eq!(
            row(&rows(s, "projected", &token), "a"),
            json!({"email": erased, "address.ip": erased, "n": 1})
        );
        // The subject id is pseudonymous and stays; what was computed on other fields too.
        assert_eq!(
            row(&rows(s, "by_user", &token), &gone)["keys"],
            json!(["a", "c"])
        );
        assert_eq!(row(&rows(s, "per_user", &token), &gone)["n"], json!(4));
        whole
    };
    let live = check(&s);
    // After the erasure the export still lists the records, with nothing personal.
    let (lines, text) = export(&s, &gone);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        !text.contains(&gone_email) && !text.contains(&gone_ip),
        "{text}"
    );
    assert_eq!(
        lines.iter().find(|l| l["key"] == "a").unwrap()["value"]["email"],
        erased
    );

    // Rebuilt from offset 0 after the erasure: the same rows as the live view.
    let (status, body) = call(&c, "POST", &paths::view_rebuild("whole"), Some(&json!({})));
    assert_eq!(status, 202, "{body}");
    let version = body["version"].as_u64().unwrap();
    let (status, body) = call(
        &c,
        "POST",
        &paths::view_switch("whole"),
        Some(&json!({"version": version, "timeout_ms": 30000})),
    );
    assert_eq!(status, 200, "{body}");
    let rebuilt = check(&s);
    assert_eq!(rebuilt, live, "a rebuild equals the live view");
    let (_, detail) = call(
        &c,
        "GET",
        &format!("{}?digest=true", paths::view("whole")),
        None,
    );
    let digests: Vec<&Value> = detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["digest"])
        .collect();
    assert_eq!(digests.len(), 2, "{detail}");
    assert_eq!(
        digests[0], digests[1],
        "live and rebuilt digests agree: {detail}"
    );

    // Views checkpoint on a graceful shutdown; no marker in any file under the data
    // directory (segments, view stores and their journals, key store, request ids).
    assert_eq!(s.terminate(), 0);
    for m in [&gone_email, &gone_ip, &kept_email] {
        assert_eq!(
            files_holding(&data, m.as_bytes()),
            Vec::<PathBuf>::new(),
            "{m}"
        );
    }
    let s = serve_with_key(&data, &key);
    check(&s);
}

/// The subjects named by erasure records in `_data_subjects`.
fn recorded_erasures(s: &Serve) -> Vec<String> {
    let (status, body) = call(
        &admin(s),
        "GET",
        &format!(
            "{}?partition=0&limit=1000",
            paths::records("_data_subjects")
        ),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"]["subject"].as_str().unwrap().to_string())
        .collect()
}

/// A stream `people` with one record per subject `u-0..n`, each with a random marker in its
/// personal field `/email`: the markers by subject.
fn people(s: &Serve, n: usize, rng: &mut rand::rngs::StdRng) -> Vec<(String, String)> {
    let c = admin(s);
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    let (status, body) = call(
        &c,
        "PUT",
        &paths::stream("people"),
        Some(&json!({"partitions": 2, "personal_data": declared})),
    );
    assert_eq!(status, 201, "{body}");
    let subjects: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("u-{i}"),
                format!("email-{:032x}", rng.r#gen::<u128>()),
            )
        })
        .collect();
    let records: Vec<Value> = subjects
        .iter()
        .map(|(u, e)| json!({"key": u, "value": {"user": u, "email": e}}))
        .collect();
    let (status, body) = call(
        &c,
        "POST",
        &paths::records("people"),
        Some(&json!({"records": records})),
    );
    assert_eq!(status, 201, "{body}");
    subjects
}

/// The invariant of an erasure after any crash: a subject named by an erasure record has
/// no key (none in the store's file either) and its field reads erased; any other subject
/// reads its plaintext. Never a recorded erasure with a key still live.
fn check_each_subject_erased_or_live(
    s: &Serve,
    data: &Path,
    subjects: &[(String, String)],
) -> usize {
    let recorded = recorded_erasures(s);
    let store = data.join("keys").join("data-keys");
    let values = read_all(s, "people", 2);
    for (subject, email) in subjects {
        let (_, state) = call(&admin(s), "GET", &paths::data_subject(subject), None);
        let value = values.iter().find(|v| v["user"] == *subject).unwrap();
        if recorded.contains(subject) {
            assert_eq!(state["key"], json!("erased"), "{subject}: {state}");
            assert_eq!(value["email"], json!({"erased": true}), "{subject}");
            assert_eq!(
                files_holding(&store, format!("{subject}\0").as_bytes()),
                Vec::<PathBuf>::new(),
                "{subject}'s slot is zeroed"
            );
        } else {
            assert_eq!(state["key"], json!("live"), "{subject}: {state}");
            assert_eq!(value["email"], json!(email), "{subject}");
        }
    }
    recorded.len()
}

#[test]
fn an_erasure_interrupted_between_its_steps_is_completed_at_the_next_start() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "master.key", KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = data.join("keys").join("data-keys");
    let s = serve_with_key(&data, &key);
    let subjects = people(&s, 3, &mut rng);
    // Every key is fdatasynced before its records are appended: this copy is the store's
    // state on disk now.
    let before = std::fs::read(&store).unwrap();

    // Step 1 (the erasure record, fsynced) done, step 2 (the slot zeroed) not: the disk of
    // a crash between them is the log with the record and the store as it was before.
    let (status, body) = call(&admin(&s), "DELETE", &paths::data_subject("u-1"), None);
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("erased")),
        "{body}"
    );
    drop(s); // SIGKILL
    std::fs::write(&store, &before).unwrap();
    assert!(
        !files_holding(&store, b"u-1\0").is_empty(),
        "the key is back on disk"
    );

    let s = serve_with_key(&data, &key);
    assert_eq!(
        check_each_subject_erased_or_live(&s, &data, &subjects),
        1,
        "completed at the start, without a second erasure record"
    );
    // A retry of the interrupted request (its client saw no answer) answers the same.
    let (status, body) = call(&admin(&s), "DELETE", &paths::data_subject("u-1"), None);
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("erased")),
        "{body}"
    );
    assert_eq!(recorded_erasures(&s), vec!["u-1".to_string()]);
}

#[test]
fn erasures_sigkilled_while_in_flight_leave_every_key_either_live_or_gone() {
    const SUBJECTS: usize = 240;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "master.key", KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve_with_key(&data, &key);
    let subjects = people(&s, SUBJECTS, &mut rng);

    // Four clients erase the subjects; the server is SIGKILLed as soon as the first erasure
    // is answered, so the others are at any step. (Waiting for the metric of requests in
    // flight instead could miss every erasure on a fast disk: 0.2 ms each.) Whatever point
    // each erasure reached, the restart must find it whole or absent.
    let (base, token) = (s.base.clone(), s.token.clone());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let erasers: Vec<_> = (0..4)
        .map(|t| {
            let (base, token, answered) = (base.clone(), token.clone(), answered.clone());
            let mine: Vec<String> = subjects
                .iter()
                .skip(t)
                .step_by(4)
                .map(|(u, _)| u.clone())
                .collect();
            std::thread::spawn(move || {
                let c = client_with_token(&base, token.as_deref());
                for u in mine {
                    let path = paths::data_subject(&u);
                    if send(&c, request("DELETE", &path, None)).is_err() {
                        return; // the server is gone
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Release);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::Acquire) == 0
        && !erasers.iter().all(|e| e.is_finished())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no erasure was answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(s); // SIGKILL
    for e in erasers {
        e.join().unwrap();
    }

    let s = serve_with_key(&data, &key);
    let done = check_each_subject_erased_or_live(&s, &data, &subjects);
    println!("{done} of {SUBJECTS} erasures recorded before the SIGKILL");
    // The rest can still be erased, and then every one is.
    for (u, _) in &subjects {
        let (status, body) = call(&admin(&s), "DELETE", &paths::data_subject(u), None);
        assert_eq!(
            (status, body["key"].clone()),
            (200, json!("erased")),
            "{body}"
        );
    }
    assert_eq!(
        check_each_subject_erased_or_live(&s, &data, &subjects),
        SUBJECTS
    );
}

/// `logbook keys rotate` with the data directory's current and new master keys.
fn rotate_keys(data: &Path, old: &Path, new: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["keys", "rotate", "--data-dir"])
        .arg(data)
        .arg("--master-key-file")
        .arg(old)
        .arg("--new-master-key-file")
        .arg(new)
        .env_remove("LOGBOOK_MASTER_KEY")
        .env_remove("LOGBOOK_MASTER_KEY_FILE")
        .output()
        .unwrap()
}

#[test]
fn a_master_key_rotation_keeps_records_readable_erasures_erased_and_retires_the_old_key() {
    use logbook_api::paths;
    let keys = tempfile::tempdir().unwrap();
    let (a, b) = (
        key_file(keys.path(), "a.key", KEY_A),
        key_file(keys.path(), "b.key", KEY_B),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve_with_key(&data, &a);
    let c = admin(&s);
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    let (status, body) = call(
        &c,
        "PUT",
        &paths::stream("p"),
        Some(&json!({"personal_data": declared})),
    );
    assert_eq!(status, 201, "{body}");
    let records = json!({"records": [
        {"value": {"user": "u1", "email": "one@example.org"}},
        {"value": {"user": "u2", "email": "two@example.org"}},
        {"value": {"user": "u3", "email": "three@example.org"}},
    ]});
    let (status, body) = call(&c, "POST", &paths::records("p"), Some(&records));
    assert_eq!(status, 201, "{body}");
    let out = logbook(&s, &["data-subjects", "erase", "u2", "--yes"]);
    assert!(out.status.success(), "{out:?}");

    // While the server holds the data directory, the rotation is refused and changes nothing.
    let store = data.join("keys").join("data-keys");
    let before = std::fs::read(&store).unwrap();
    let out = rotate_keys(&data, &a, &b);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("locked"), "{err}");
    assert_eq!(std::fs::read(&store).unwrap(), before);
    drop(s);

    // A wrong current key and the same key twice are refused by name.
    let out = rotate_keys(&data, &b, &a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not the one of the key store"),
        "{err}"
    );
    let out = rotate_keys(&data, &a, &a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("give a new one"),
        "{err}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before);

    let out = rotate_keys(&data, &a, &b);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.starts_with("2 data keys re-wrapped"), "{said}");
    assert_ne!(std::fs::read(&store).unwrap(), before);

    // The old key no longer opens the store; the new one reads every live record and shows
    // the erased subject as erased, across the rotation.
    let err = refused_start(&data, &["--master-key-file", a.to_str().unwrap()]);
    assert!(err.contains("is not the one of the key store"), "{err}");
    let s = serve_with_key(&data, &b);
    let emails: Vec<Value> = read_all(&s, "p", 1)
        .iter()
        .map(|v| v["email"].clone())
        .collect();
    assert_eq!(
        emails,
        vec![
            json!("one@example.org"),
            json!({"erased": true}),
            json!("three@example.org")
        ]
    );
    // New keys are wrapped under the new master key, and survive a restart with it.
    let c = admin(&s);
    let one = json!({"value": {"user": "u4", "email": "four@example.org"}});
    let (status, body) = call(&c, "POST", &paths::records("p"), Some(&one));
    assert_eq!(status, 201, "{body}");
    drop(s);
    let s = serve_with_key(&data, &b);
    assert_eq!(read_all(&s, "p", 1)[3]["email"], json!("four@example.org"));
}
