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
            &format!("/v1/streams/{stream}/records?partition={p}&limit=1000"),
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
        "/v1/streams/people",
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
    let (status, body) = call(&c, "POST", "/v1/streams/people/records", Some(&records));
    assert_eq!(status, 201, "{body}");
    // A retry under one request id is a duplicate, not a conflict: encryption is
    // deterministic per key, field and value.
    let retried = json!({"user": gone, "email": gone_email, "n": 4});
    for expected in [201, 200] {
        let r = request(
            "POST",
            "/v1/streams/people/records",
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
    let (status, body) = call(&c, "DELETE", &format!("/v1/data-subjects/{gone}"), None);
    assert_eq!(
        (status, body["key"].clone()),
        (200, json!("erased")),
        "{body}"
    );
    let (_, body) = call(&c, "GET", "/v1/streams/_data_subjects/records", None);
    let recorded: Vec<&Value> = body["records"].as_array().unwrap().iter().collect();
    assert_eq!(recorded.len(), 1, "{body}");
    assert_eq!(recorded[0]["value"]["subject"], json!(gone));
    let (_, body) = call(&c, "GET", &format!("/v1/data-subjects/{kept}"), None);
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
            "/v1/streams/p",
            Some(&json!({"personal_data": declaration})),
        );
        assert_eq!(status, 400, "{declaration}: {body}");
        assert_eq!(body["code"], "invalid_stream_config", "{body}");
        assert_eq!(body["field"], field, "{body}");
        let (status, _) = call(&c, "GET", "/v1/streams/p", None);
        assert_eq!(status, 404, "nothing created");
    }
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    let (status, _) = call(
        &c,
        "PUT",
        "/v1/streams/p",
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
        let (status, answer) = call(&c, "POST", "/v1/streams/p/records", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_data_subject", "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (_, info) = call(&c, "GET", "/v1/streams/p", None);
    assert_eq!(info["records"], 0, "nothing stored: {info}");
    let (_, subject) = call(&c, "GET", "/v1/data-subjects/ok", None);
    assert_eq!(
        subject["key"], "none",
        "no key made for a refused batch: {subject}"
    );
    let (status, body) = call(&c, "DELETE", "/v1/data-subjects/has%20space", None);
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
            "/v1/tokens",
            Some(&json!({"principal": "p", "scopes": [scope]})),
        );
        assert_eq!(status, 201, "{body}");
        secrets.push(body["token"].as_str().unwrap().to_string());
    }
    let (status, body) = call(
        &client_with_token(&s.base, Some(&secrets[0])),
        "DELETE",
        "/v1/data-subjects/ok",
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
        "/v1/data-subjects/ok",
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
        "/v1/streams/p",
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
        "/v1/streams/p",
        Some(&json!({"personal_data": declared})),
    );
    let (status, _) = call(
        &c,
        "POST",
        "/v1/streams/p/records",
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
