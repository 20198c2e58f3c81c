//! Security through the real binary (issue 17): data at rest (modes of everything a
//! workload leaves in a fresh data directory, the per-directory hash key, unguessable
//! transaction handles); browser attacks (bodies must be declared JSON, `Host` checked, no
//! CORS); authentication and authorization (the admin token file, tokens over the API and
//! the CLI, and the matrix of every route × credentials).
//!
//! Requests are written by hand on a TCP socket, so each test controls every header it
//! sends (`Host`, `Content-Type`, `Authorization`).
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

mod common;
use common::wire::{self, Answer};

/// A running `logbook serve` (SIGKILLed when dropped) with its stderr in a file.
struct Node {
    serve: common::Serve,
    log: PathBuf,
    /// The admin token the server wrote to the data directory (sent by [`Node::call`]).
    token: Option<String>,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let log = data.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).unwrap();
        let serve = common::spawn_serve(data, extra, &[("RUST_LOG", "info")], Stdio::from(stderr));
        let token = common::admin_token(data);
        Node { serve, log, token }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a new connection, with exactly `headers` besides `Content-Length` and
    /// the admin token's `Authorization`.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        self.raw_as(self.token.as_deref(), method, path, headers, body)
    }

    /// [`Node::raw`] with `token` as the bearer token (none: no `Authorization` but what
    /// `headers` has).
    fn raw_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut all = headers.to_vec();
        all.extend(auth.as_deref().map(|a| ("authorization", a)));
        wire::one(self.serve.addr(), method, path, &all, body)
    }

    /// A request as a well-behaved client sends it: `Host` is the address, a body is JSON,
    /// the admin token.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call_as(self.token.as_deref(), method, path, body)
    }

    /// [`Node::call`] with `token` as the bearer token (none: no `Authorization`).
    fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut headers = vec![("host", self.serve.addr())];
        let bytes = match &body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                serde_json::to_vec(b).unwrap()
            }
            None => Vec::new(),
        };
        self.raw_as(token, method, path, &headers, &bytes)
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

/// A workload touching every kind of file a node writes: stream segments and indexes
/// (sealed ones too: small segments roll), request-id checkpoints, `_txn`, `_auth` with a
/// second token, the view store (a rebuilt version's space too; checkpointed at shutdown),
/// and a dropped stream.
fn workload(node: &Node) {
    let small = json!({"partitions": 2, "segment_bytes_max": 4096});
    let a = node.call("PUT", "/v1/streams/orders", Some(small));
    assert_eq!(a.status, 201, "{a:?}");
    let a = node.call("PUT", "/v1/streams/scratch", Some(json!({"partitions": 3})));
    assert_eq!(a.status, 201, "{a:?}");
    let a = node.call("DELETE", "/v1/streams/scratch", None);
    assert_eq!(a.status, 204, "{a:?}");
    token(node, "reader", &["streams:read:*"], None);
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
            json!({"key": key, "value": {"total": i, "note": "x".repeat(600)}})
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
    let a = node.call("POST", "/v1/views/by_customer/rebuild", Some(json!({})));
    assert!(a.status == 200 || a.status == 202, "{a:?}");
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
    assert!(
        has(&|p| p.ends_with("admin.token")),
        "no admin token: {found:?}"
    );
    assert!(has(&|p| p.ends_with("_auth")), "no _auth: {found:?}");
    let orders_segments = found
        .iter()
        .filter(|(p, _, _)| {
            p.extension().is_some_and(|e| e == "log")
                && p.components().any(|c| c.as_os_str() == "orders")
        })
        .count();
    assert!(orders_segments > 2, "no segment rolled: {found:?}");
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
    // Review r14c N5: a content-coded body is refused naming Content-Encoding, on every
    // JSON route — a plain body labelled gzip was applied as if it were not, a gzip body
    // was called "not JSON" — and only identity passes.
    let json = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let coded = |path: &str, coding: &str, body: &[u8]| {
        let mut headers = json.to_vec();
        headers.push(("content-encoding", coding));
        node.raw("POST", path, &headers, body)
    };
    let commit = br#"{"writes": [{"op": "put", "key": "coded", "value": 1}]}"#;
    let gzip_magic = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
    for (path, coding, body) in [
        ("/v1/commits", "gzip", &commit[..]),
        ("/v1/commits", "gzip", &gzip_magic[..]),
        ("/v1/commits", "identity, br", &commit[..]),
        ("/v1/streams/s/records", "deflate", &body[..]),
        ("/v1/kv/read", "zstd", &br#"{"keys": ["coded"]}"#[..]),
    ] {
        let a = coded(path, coding, body);
        a.assert_problem(415, "unsupported_media_type");
        assert_eq!(a.json()["field"], "Content-Encoding", "{coding}: {a:?}");
    }
    assert_eq!(
        node.get("/v1/kv/coded").status,
        404,
        "nothing was committed"
    );
    assert_eq!(records(&node, "s").len(), 2, "nothing was appended");
    let a = coded("/v1/streams/s/records", "Identity", body);
    assert_eq!(a.status, 201, "identity is no coding: {a:?}");
    // A byte order mark before the JSON is named as such: UTF-8's, and UTF-16's (whose
    // text is not UTF-8 at all; review r14d F4).
    let bom = [&b"\xEF\xBB\xBF"[..], &commit[..]].concat();
    let a = node.raw("POST", "/v1/commits", &json, &bom);
    a.assert_problem(400, "invalid_json");
    let detail = a.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("byte order mark"), "{detail}");
    let utf16: Vec<u8> = b"\xFF\xFE"
        .iter()
        .copied()
        .chain(commit.iter().flat_map(|b| [*b, 0]))
        .collect();
    let a = node.raw("POST", "/v1/commits", &json, &utf16);
    a.assert_problem(400, "invalid_json");
    let detail = a.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("UTF-16 byte order mark"), "{detail}");
    assert_eq!(
        node.get("/v1/kv/coded").status,
        404,
        "nothing was committed"
    );
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

// ---------------------------------------------------------------------------------------
// Authentication and authorization
// ---------------------------------------------------------------------------------------

/// Creates a token as the admin; its secret and id.
fn token(
    node: &Node,
    principal: &str,
    scopes: &[&str],
    expires_in_ms: Option<u64>,
) -> (String, String) {
    let mut body = json!({"principal": principal, "scopes": scopes});
    if let Some(ms) = expires_in_ms {
        body["expires_in_ms"] = json!(ms);
    }
    let a = node.call("POST", "/v1/tokens", Some(body));
    assert_eq!(a.status, 201, "{a:?}");
    let secret = a.json()["token"].as_str().unwrap().to_string();
    (secret, a.json()["id"].as_str().unwrap().to_string())
}

/// What a refused request must leave as it was, read as the admin: every stream's extent
/// and settings (the internal `_txn`, `_auth`, `_data_subjects`, `_groups` and `_schemas`
/// too), the views, the derived streams, the consumer groups (members, commits), the schema
/// registry's subjects, `sr`'s versions and the compatibility levels, the committed keys,
/// the open transactions, the key of the data subject `alice` and, in transaction `txn`,
/// what it would commit.
fn state_of(node: &Node, txn: Option<&str>) -> Value {
    let names = |path: &str, list: &str| -> Vec<Value> {
        node.get(path).json()[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].clone())
            .collect()
    };
    let in_txn = txn.map(|t| node.get(&format!("/v1/txns/{t}/kv?prefix=")).json());
    json!({
        "streams": node.get("/v1/streams").json(),
        "views": names("/v1/views", "views"),
        "derived_streams": names("/v1/derived-streams", "derived_streams"),
        "kv": node.get("/v1/kv?prefix=").json()["rows"],
        "open_txns": node.get("/v1/health").json()["open_transactions"],
        "alice": node.get("/v1/data-subjects/alice").json()["key"],
        "in_txn": in_txn,
        "groups": node.get("/v1/groups").json(),
        "subjects": node.get("/v1/schema-registry/subjects?deleted=true").json(),
        "sr": node.get("/v1/schema-registry/subjects/sr/versions?deleted=true").json(),
        "levels": [
            node.get("/v1/schema-registry/config").json(),
            node.get("/v1/schema-registry/config/sr").json(),
        ],
    })
}

/// One route of the matrix: the request, the scopes that cover it and a scope that does not.
struct Route {
    method: &'static str,
    /// `{T}`: a transaction begun for this request; `{E}`: the epoch the last join of
    /// `prepare` answered.
    path: &'static str,
    /// `"{E}"` (a JSON string) stands for the epoch, as in `path`.
    body: Option<Value>,
    covers: &'static [&'static str],
    lacks: &'static [&'static str],
    /// Made (as the admin) before each request, in order: what the route works on
    /// (method, path, JSON body or `""` for none; `{E}` as in `path`).
    prepare: &'static [(&'static str, &'static str, &'static str)],
    /// What the 403 names (default: the first covering scope the lacking token lacks).
    names: Option<&'static str>,
}

/// A join of member `member` to group `group` on stream `s` whose session outlasts the test
/// (a member expiring would write to `_groups` while another route is checked).
macro_rules! join {
    ($group:literal, $member:literal) => {
        (
            "POST",
            concat!("/v1/groups/", $group, "/members"),
            concat!(
                r#"{"stream": "s", "member": ""#,
                $member,
                r#"", "session_timeout_ms": 300000}"#
            ),
        )
    };
}

fn routes() -> Vec<Route> {
    let r = |method, path, body, covers, lacks| Route {
        method,
        path,
        body,
        covers,
        lacks,
        prepare: &[],
        names: None,
    };
    let view = json!({"source": "s", "kind": "table"});
    vec![
        r(
            "GET",
            "/v1/streams",
            None,
            &["streams:read:*"],
            &["streams:read:s"],
        ),
        r(
            "PUT",
            "/v1/streams/s2",
            Some(json!({})),
            &["streams:manage:s2"],
            &["streams:read:s2"],
        ),
        r(
            "GET",
            "/v1/streams/s",
            None,
            &["streams:read:s"],
            &["streams:append:s"],
        ),
        Route {
            prepare: &[("PUT", "/v1/streams/gone", "{}")],
            ..r(
                "DELETE",
                "/v1/streams/gone",
                None,
                &["streams:manage:gone"],
                &["streams:manage:s"],
            )
        },
        r(
            "POST",
            "/v1/streams/s/records",
            Some(json!({"value": 1})),
            &["streams:append:s"],
            &["streams:read:s"],
        ),
        Route {
            names: Some("streams:read:s"),
            ..r(
                "GET",
                "/v1/streams/s/records?partition=0",
                None,
                &["streams:read:s*"],
                &["streams:read:t*"],
            )
        },
        r(
            "GET",
            "/v1/streams/_txn/records?partition=0",
            None,
            &["admin"],
            &["streams:read:*"],
        ),
        Route {
            names: Some("kv:… (any kv scope)"),
            ..r(
                "POST",
                "/v1/txns",
                Some(json!({"isolation": "serializable"})),
                &["kv:read:x"],
                &["streams:read:*"],
            )
        },
        r(
            "GET",
            "/v1/txns/{T}/kv/k",
            None,
            &["kv:read:k"],
            &["kv:write:k"],
        ),
        // In a serializable transaction a write is checked against the snapshot the
        // transaction holds: it needs kv:read on the key too (decision 0018).
        r(
            "PUT",
            "/v1/txns/{T}/kv/k",
            Some(json!({"value": 2})),
            &["kv:write:k", "kv:read:k"],
            &["kv:read:k"],
        ),
        r(
            "DELETE",
            "/v1/txns/{T}/kv/k",
            None,
            &["kv:write:k", "kv:read:k"],
            &["kv:write:j"],
        ),
        r(
            "GET",
            "/v1/txns/{T}/kv/",
            None,
            &["kv:read:*"],
            &["kv:read:k"],
        ),
        r(
            "GET",
            "/v1/txns/{T}/kv?prefix=k",
            None,
            &["kv:read:k*"],
            &["kv:read:j*"],
        ),
        r(
            "GET",
            "/v1/txns/{T}/kv?start=a&end=z",
            None,
            &["kv:read:*"],
            &["kv:read:a*"],
        ),
        r(
            "POST",
            "/v1/txns/{T}/kv/n/increment",
            Some(json!({"by": 1})),
            &["kv:write:n", "kv:read:n"],
            &["kv:read:*"],
        ),
        // An atomic operation's answer reveals the key's state: it needs kv:read too.
        Route {
            names: Some("kv:read:n"),
            ..r(
                "POST",
                "/v1/txns/{T}/kv/n/increment",
                Some(json!({"by": 0})),
                &["kv:write:n", "kv:read:n"],
                &["kv:write:n"],
            )
        },
        Route {
            names: Some("kv:read:k"),
            ..r(
                "PUT",
                "/v1/txns/{T}/kv/k",
                Some(json!({"value": 2, "if_version": 0})),
                &["kv:write:k", "kv:read:k"],
                &["kv:write:k"],
            )
        },
        Route {
            names: Some("kv:read:k"),
            ..r(
                "DELETE",
                "/v1/txns/{T}/kv/k?if_version=0",
                None,
                &["kv:write:k", "kv:read:k"],
                &["kv:write:*"],
            )
        },
        Route {
            names: Some("kv:… (any kv scope)"),
            ..r(
                "POST",
                "/v1/txns/{T}/commit",
                None,
                &["kv:write:z"],
                &["views:read:*"],
            )
        },
        Route {
            names: Some("kv:… (any kv scope)"),
            ..r(
                "POST",
                "/v1/txns/{T}/abort",
                None,
                &["kv:read:z"],
                &["streams:manage:*"],
            )
        },
        r("GET", "/v1/kv/k", None, &["kv:read:k"], &["kv:read:j"]),
        r("GET", "/v1/kv/", None, &["kv:read:*"], &["kv:read:k"]),
        Route {
            names: Some("kv:read:k*"),
            ..r(
                "GET",
                "/v1/kv?prefix=k",
                None,
                &["kv:read:*"],
                &["kv:read:j*"],
            )
        },
        // The body's keys and ranges are checked one by one: prefix scopes reach them.
        r(
            "POST",
            "/v1/kv/read",
            Some(json!({"keys": ["k"]})),
            &["kv:read:k"],
            &["kv:write:k"],
        ),
        r(
            "POST",
            "/v1/kv/read",
            Some(json!({"keys": ["acct/1"], "ranges": [{"prefix": "acct/"}]})),
            &["kv:read:acct/*"],
            &["kv:read:acct/1"],
        ),
        Route {
            names: Some("kv:read:acct/1*"),
            ..r(
                "POST",
                "/v1/kv/read",
                Some(json!({"ranges": [{"start": "acct/1", "end": "acct/2"}]})),
                &["kv:read:acct/*"],
                &["kv:read:acct/2*"],
            )
        },
        // A range is covered only when it lies wholly within the prefix.
        Route {
            names: Some("kv:read:*"),
            ..r(
                "POST",
                "/v1/kv/read",
                Some(json!({"ranges": [{"start": "acct/1"}]})),
                &["kv:read:*"],
                &["kv:read:acct/*"],
            )
        },
        r(
            "GET",
            "/v1/kv/read",
            None,
            &["kv:read:read"],
            &["kv:read:k"],
        ),
        r(
            "POST",
            "/v1/commits",
            Some(
                json!({"isolation": "serializable", "writes": [{"op": "put", "key": "c", "value": 1}]}),
            ),
            &["kv:write:c"],
            &["kv:read:*"],
        ),
        Route {
            names: Some("kv:read:acct/1"),
            ..r(
                "POST",
                "/v1/commits",
                Some(json!({
                    "reads": [{"key": "acct/1", "version": null}],
                    "writes": [{"op": "put", "key": "acct/1", "value": 1}],
                })),
                &["kv:read:acct/*", "kv:write:acct/*"],
                &["kv:write:acct/*"],
            )
        },
        Route {
            names: Some("kv:write:acct/2"),
            ..r(
                "POST",
                "/v1/commits",
                Some(json!({
                    "ranges": [{"prefix": "acct/"}],
                    "locks": ["acct/1"],
                    "writes": [{"op": "increment", "key": "acct/2", "by": 1}],
                })),
                &["kv:read:acct/*", "kv:write:acct/*"],
                &["kv:read:acct/*", "kv:write:acct/1"],
            )
        },
        Route {
            names: Some("kv:read:n"),
            ..r(
                "POST",
                "/v1/commits",
                Some(json!({"writes": [{"op": "increment", "key": "n", "by": 0}]})),
                &["kv:write:n", "kv:read:n"],
                &["kv:write:*"],
            )
        },
        Route {
            names: Some("kv:read:k"),
            ..r(
                "POST",
                "/v1/commits",
                Some(json!({"writes": [{"op": "put", "key": "k", "value": 1, "if_absent": true}]})),
                &["kv:write:k", "kv:read:k"],
                &["kv:write:k"],
            )
        },
        Route {
            names: Some("kv:read:acct/*"),
            ..r(
                "POST",
                "/v1/commits",
                Some(json!({
                    "ranges": [{"start": "acct/", "end": "acct0"}],
                    "writes": [{"op": "delete", "key": "acct/3"}],
                })),
                &["kv:read:acct/*", "kv:write:acct/*"],
                &["kv:read:acct/1*", "kv:write:acct/*"],
            )
        },
        r(
            "GET",
            "/v1/views",
            None,
            &["views:read:*"],
            &["views:read:v"],
        ),
        r(
            "PUT",
            "/v1/views/v2",
            Some(view.clone()),
            &["views:manage:v2", "streams:read:s"],
            &["views:manage:v2"],
        ),
        r(
            "GET",
            "/v1/views/v",
            None,
            &["views:read:v"],
            &["views:manage:v"],
        ),
        Route {
            prepare: &[("PUT", "/v1/views/dv", r#"{"source": "s", "kind": "table"}"#)],
            names: Some("views:manage:dv"),
            ..r(
                "DELETE",
                "/v1/views/dv",
                None,
                &["views:manage:d*"],
                &["views:read:dv"],
            )
        },
        r(
            "GET",
            "/v1/views/v/rows/k",
            None,
            &["views:read:v"],
            &["views:read:w"],
        ),
        r(
            "GET",
            "/v1/views/v/rows/",
            None,
            &["views:read:v"],
            &["kv:read:*"],
        ),
        r(
            "GET",
            "/v1/views/v/rows?prefix=k",
            None,
            &["views:read:v"],
            &["streams:read:*"],
        ),
        r(
            "POST",
            "/v1/views/v/rebuild",
            Some(json!({})),
            &["views:manage:v"],
            &["views:read:v"],
        ),
        Route {
            names: Some("views:manage:v"),
            ..r(
                "POST",
                "/v1/views/v/switch",
                Some(json!({"version": 1})),
                &["views:manage:*"],
                &["views:read:*"],
            )
        },
        r(
            "GET",
            "/metrics",
            None,
            &["metrics:read"],
            &["streams:read:*"],
        ),
        r("GET", "/v1/tokens", None, &["admin"], &["metrics:read"]),
        r(
            "POST",
            "/v1/tokens",
            Some(json!({"principal": "p", "scopes": ["metrics:read"]})),
            &["admin"],
            &["kv:write:*"],
        ),
        r(
            "DELETE",
            "/v1/tokens/0011223344556677",
            None,
            &["admin"],
            &["views:manage:*"],
        ),
        r(
            "GET",
            "/v1/streams/s/offsets?timestamp_ms=0",
            None,
            &["streams:read:s"],
            &["streams:append:s"],
        ),
        r("GET", "/v1/audit", None, &["audit:read"], &["metrics:read"]),
        // Erasing and exporting personal data are granted apart (`alice` has a live key).
        r(
            "GET",
            "/v1/data-subjects/alice",
            None,
            &["data_subjects:erase"],
            &["data_subjects:export"],
        ),
        r(
            "DELETE",
            "/v1/data-subjects/alice",
            None,
            &["data_subjects:erase"],
            &["data_subjects:export"],
        ),
        r(
            "GET",
            "/v1/data-subjects/alice/export",
            None,
            &["data_subjects:export"],
            &["data_subjects:erase", "streams:read:*"],
        ),
        // Derived streams read `ds` (never appended to: their processors stay put) into `dt`.
        r(
            "GET",
            "/v1/derived-streams",
            None,
            &["derived_streams:manage:*"],
            &["derived_streams:manage:d"],
        ),
        r(
            "GET",
            "/v1/derived-streams/d",
            None,
            &["derived_streams:manage:d"],
            &["streams:manage:*", "views:manage:*"],
        ),
        // Creating one acts on its source and target on the creator's word.
        Route {
            names: Some("streams:append:dt"),
            ..r(
                "PUT",
                "/v1/derived-streams/d2",
                Some(json!({"source": "ds", "target": "dt"})),
                &[
                    "derived_streams:manage:d2",
                    "streams:read:ds",
                    "streams:append:dt",
                ],
                &["derived_streams:manage:d2", "streams:read:ds"],
            )
        },
        Route {
            names: Some("streams:read:ds"),
            ..r(
                "PUT",
                "/v1/derived-streams/d2",
                Some(json!({"source": "ds", "target": "dt"})),
                &[
                    "derived_streams:manage:d2",
                    "streams:read:ds",
                    "streams:append:dt",
                ],
                &["derived_streams:manage:d2", "streams:append:dt"],
            )
        },
        Route {
            names: Some("derived_streams:manage:d3"),
            ..r(
                "PUT",
                "/v1/derived-streams/d3",
                Some(json!({"source": "ds", "target": "dt"})),
                &[
                    "derived_streams:manage:d*",
                    "streams:read:ds",
                    "streams:append:dt",
                ],
                &[
                    "streams:read:ds",
                    "streams:append:dt",
                    "derived_streams:manage:e*",
                ],
            )
        },
        Route {
            prepare: &[(
                "PUT",
                "/v1/derived-streams/gone-d",
                r#"{"source": "ds", "target": "dt"}"#,
            )],
            names: Some("derived_streams:manage:gone-d"),
            ..r(
                "DELETE",
                "/v1/derived-streams/gone-d",
                None,
                &["derived_streams:manage:gone-*"],
                &["derived_streams:manage:d*"],
            )
        },
        // The push tail; a subscription ends by itself after the node's --wait-ms-max.
        r(
            "GET",
            "/v1/streams/s/records/events?from=start",
            None,
            &["streams:read:s"],
            &["streams:append:s"],
        ),
        // Starting from a group's commits also reads the group.
        Route {
            names: Some("groups:read:g"),
            ..r(
                "GET",
                "/v1/streams/s/records/events?from=group:g",
                None,
                &["streams:read:s", "groups:read:g"],
                &["streams:read:s"],
            )
        },
        r(
            "PUT",
            "/v1/streams/rs/retention",
            Some(json!({"retention_ms": 86_400_000})),
            &["streams:manage:rs"],
            &["streams:append:rs", "streams:read:rs"],
        ),
        // The schema registry: subject `sr` holds "string" (id 1); `srd` and `srv` get a
        // version before each request that deletes one.
        r(
            "GET",
            "/v1/schema-registry/subjects",
            None,
            &["schemas:read:*"],
            &["schemas:read:sr"],
        ),
        r(
            "POST",
            "/v1/schema-registry/subjects/sr",
            Some(json!({"schema": "\"string\""})),
            &["schemas:read:sr"],
            &["schemas:write:sr"],
        ),
        Route {
            prepare: &[(
                "POST",
                "/v1/schema-registry/subjects/srd/versions",
                r#"{"schema": "\"int\""}"#,
            )],
            ..r(
                "DELETE",
                "/v1/schema-registry/subjects/srd",
                None,
                &["schemas:write:srd"],
                &["schemas:read:srd"],
            )
        },
        r(
            "GET",
            "/v1/schema-registry/subjects/sr/versions",
            None,
            &["schemas:read:sr"],
            &["schemas:read:sq"],
        ),
        r(
            "POST",
            "/v1/schema-registry/subjects/sr/versions",
            Some(json!({"schema": "\"string\""})),
            &["schemas:write:sr"],
            &["schemas:read:sr"],
        ),
        Route {
            names: Some("schemas:read:sr"),
            ..r(
                "GET",
                "/v1/schema-registry/subjects/sr/versions/1",
                None,
                &["schemas:read:s*"],
                &["schemas:write:*"],
            )
        },
        Route {
            prepare: &[(
                "POST",
                "/v1/schema-registry/subjects/srv/versions",
                r#"{"schema": "\"long\""}"#,
            )],
            ..r(
                "DELETE",
                "/v1/schema-registry/subjects/srv/versions/latest",
                None,
                &["schemas:write:srv"],
                &["schemas:read:srv"],
            )
        },
        r(
            "GET",
            "/v1/schema-registry/subjects/sr/versions/1/schema",
            None,
            &["schemas:read:sr"],
            &["schemas:read:srv"],
        ),
        // A schema by id: any schemas scope at the edge, then one of the subjects using it.
        Route {
            names: Some("schemas:… (any schemas scope)"),
            ..r(
                "GET",
                "/v1/schema-registry/schemas/ids/1",
                None,
                &["schemas:read:sr"],
                &["views:read:*"],
            )
        },
        r(
            "GET",
            "/v1/schema-registry/schemas/ids/1",
            None,
            &["schemas:read:sr"],
            &["schemas:read:srd"],
        ),
        r(
            "GET",
            "/v1/schema-registry/schemas/ids/1/versions",
            None,
            &["schemas:read:sr"],
            &["schemas:write:sr"],
        ),
        Route {
            names: Some("schemas:… (any schemas scope)"),
            ..r(
                "GET",
                "/v1/schema-registry/schemas/types",
                None,
                &["schemas:read:x"],
                &["streams:read:*"],
            )
        },
        Route {
            names: Some("schemas:… (any schemas scope)"),
            ..r(
                "GET",
                "/v1/schema-registry/config",
                None,
                &["schemas:write:x"],
                &["kv:read:*"],
            )
        },
        // The global level is every subject's.
        r(
            "PUT",
            "/v1/schema-registry/config",
            Some(json!({"compatibility": "BACKWARD"})),
            &["schemas:write:*"],
            &["schemas:write:sr"],
        ),
        r(
            "DELETE",
            "/v1/schema-registry/config",
            None,
            &["schemas:write:*"],
            &["schemas:read:*"],
        ),
        r(
            "GET",
            "/v1/schema-registry/config/sr",
            None,
            &["schemas:read:sr"],
            &["schemas:write:sr"],
        ),
        r(
            "PUT",
            "/v1/schema-registry/config/sr",
            Some(json!({"compatibility": "FULL"})),
            &["schemas:write:sr"],
            &["schemas:read:sr"],
        ),
        r(
            "DELETE",
            "/v1/schema-registry/config/sr",
            None,
            &["schemas:write:sr"],
            &["schemas:read:*"],
        ),
        r(
            "POST",
            "/v1/schema-registry/compatibility/subjects/sr/versions/1",
            Some(json!({"schema": "\"string\""})),
            &["schemas:read:sr"],
            &["schemas:write:sr"],
        ),
        r(
            "POST",
            "/v1/schema-registry/compatibility/subjects/sr/versions",
            Some(json!({"schema": "\"string\""})),
            &["schemas:read:sr"],
            &["schemas:write:*"],
        ),
        Route {
            names: Some("schemas:… (any schemas scope)"),
            ..r(
                "GET",
                "/v1/schema-registry/mode",
                None,
                &["schemas:read:x"],
                &["metrics:read"],
            )
        },
        r("GET", "/v1/cluster", None, &["metrics:read"], &[]),
        r("GET", "/v1/limits", None, &["metrics:read"], &[]),
        r("GET", "/v1/nothing", None, &["metrics:read"], &[]),
        // Consumer groups, last: their members' sessions (5 min) must outlast the rest of
        // the test. Group `g` on `s` is empty until the heartbeat's row; every route naming
        // a group also needs streams:read on its stream, checked by the handler.
        r(
            "GET",
            "/v1/groups",
            None,
            &["groups:read:*"],
            &["groups:read:g"],
        ),
        Route {
            names: Some("groups:read:g"),
            ..r(
                "GET",
                "/v1/groups/g",
                None,
                &["groups:read:g", "streams:read:s"],
                &["streams:read:s"],
            )
        },
        Route {
            names: Some("streams:read:s"),
            ..r(
                "GET",
                "/v1/groups/g",
                None,
                &["groups:read:g", "streams:read:s"],
                &["groups:read:g"],
            )
        },
        Route {
            names: Some("groups:manage:g"),
            ..r(
                "POST",
                "/v1/groups/g/reset",
                Some(json!({"to": "start"})),
                &["groups:manage:g", "streams:read:s"],
                &["groups:read:g", "streams:read:s"],
            )
        },
        // A group is deleted once its members left.
        Route {
            prepare: &[
                join!("gd", "x"),
                ("DELETE", "/v1/groups/gd/members/x?epoch={E}", ""),
            ],
            names: Some("groups:manage:gd"),
            ..r(
                "DELETE",
                "/v1/groups/gd",
                None,
                &["groups:manage:gd", "streams:read:s"],
                &["groups:consume:gd", "streams:read:s"],
            )
        },
        Route {
            prepare: &[
                join!("gd", "x"),
                ("DELETE", "/v1/groups/gd/members/x?epoch={E}", ""),
            ],
            names: Some("streams:read:s"),
            ..r(
                "DELETE",
                "/v1/groups/gd",
                None,
                &["groups:manage:gd", "streams:read:s"],
                &["groups:manage:gd"],
            )
        },
        // A join names the stream the group reads (a new group's too).
        Route {
            names: Some("groups:consume:gj"),
            ..r(
                "POST",
                "/v1/groups/gj/members",
                Some(json!({"stream": "s", "member": "j", "session_timeout_ms": 300_000})),
                &["groups:consume:gj", "streams:read:s"],
                &["streams:read:s"],
            )
        },
        Route {
            names: Some("streams:read:s"),
            ..r(
                "POST",
                "/v1/groups/gj/members",
                Some(json!({"stream": "s", "member": "j", "session_timeout_ms": 300_000})),
                &["groups:consume:gj", "streams:read:s"],
                &["groups:consume:gj"],
            )
        },
        Route {
            prepare: &[join!("g", "m")],
            names: Some("groups:consume:g"),
            ..r(
                "POST",
                "/v1/groups/g/members/m/heartbeat",
                Some(json!({"epoch": "{E}"})),
                &["groups:consume:g", "streams:read:s"],
                &["groups:read:g", "streams:read:s"],
            )
        },
        Route {
            prepare: &[join!("g", "m")],
            names: Some("streams:read:s"),
            ..r(
                "POST",
                "/v1/groups/g/members/m/commit",
                Some(json!({"epoch": "{E}", "offsets": [{"partition": 0, "offset": 0}]})),
                &["groups:consume:g", "streams:read:s"],
                &["groups:consume:g"],
            )
        },
        Route {
            prepare: &[join!("g", "ml")],
            names: Some("groups:consume:g"),
            ..r(
                "DELETE",
                "/v1/groups/g/members/ml?epoch={E}",
                None,
                &["groups:consume:g", "streams:read:s"],
                &["groups:manage:g", "streams:read:s"],
            )
        },
    ]
}

/// The path templates a concrete path may be routed to among `templates`, the best first:
/// segment by segment, a `{…}` segment matches any non-empty one, and a template with more
/// literal segments wins (as the router prefers a literal segment to a parameter). The
/// query is ignored.
fn template_of<'a>(path: &str, templates: &[&'a str]) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    templates
        .iter()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segments.len()
                && ts.iter().zip(&segments).all(|(t, s)| {
                    if t.starts_with('{') {
                        !s.is_empty()
                    } else {
                        t == s
                    }
                })
        })
        .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
        .copied()
}

/// Every operation of the OpenAPI document (`/openapi.json`) has a row in the matrix
/// ([`routes`]) — but the two open routes, checked apart — so a route added without a row
/// fails here. A row counts for the template its path is routed to.
#[test]
fn the_matrix_has_a_row_for_every_route_of_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &[]);
    let doc = node.call_as(None, "GET", "/openapi.json", None).json();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(documented.len() > 60, "{} operations", documented.len());
    let templates: Vec<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    let mut covered: std::collections::BTreeSet<(String, String)> = ["/v1/health", "/openapi.json"]
        .into_iter()
        .map(|p| ("GET".to_string(), p.to_string()))
        .collect();
    for route in routes() {
        if let Some(t) = template_of(route.path, &templates) {
            covered.insert((route.method.to_string(), t.to_string()));
        }
    }
    let missing: Vec<String> = documented
        .iter()
        .filter(|op| !covered.contains(*op))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes of /openapi.json without a row in the authorization matrix: {missing:#?}"
    );
    node.terminate();
}

/// Every route × {no token, a malformed header, an unknown token, an expired one, a revoked
/// one, a scope that does not cover it, the scopes that do, admin}: 401 without valid
/// credentials, 403 naming the missing scope, and a refused request changes nothing; the
/// covering scopes and admin get past both checks. The two open routes answer anyone.
#[test]
fn every_route_checks_credentials_and_scopes_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No idle transaction is reaped while the test compares counts of open ones.
    // A master key, so that a data subject has a key to erase. Push-tail subscriptions end
    // after 300 ms (--wait-ms-max), so that their answers end.
    let master_key = dir.path().join("master.key");
    std::fs::write(&master_key, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&master_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::start(
        &data,
        &[
            "--auth",
            "on",
            "--txn-idle-timeout-ms",
            "3600000",
            "--master-key-file",
            master_key.to_str().unwrap(),
            "--wait-ms-max",
            "300",
        ],
    );
    let admin = node
        .token
        .clone()
        .expect("the server wrote data/admin.token");
    assert_eq!(
        node.call("PUT", "/v1/streams/s", Some(json!({}))).status,
        201
    );
    let a = node.call(
        "PUT",
        "/v1/views/v",
        Some(json!({"source": "s", "kind": "table"})),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let a = node.call(
        "POST",
        "/v1/commits",
        Some(json!({"writes": [{"op": "put", "key": "k", "value": 1}, {"op": "put", "key": "n", "value": 1}]})),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let people = json!({"personal_data": {"subject": "/user", "fields": ["/email"]}});
    let a = node.call("PUT", "/v1/streams/people", Some(people));
    assert_eq!(a.status, 201, "{a:?}");
    let record = json!({"value": {"user": "alice", "email": "alice@example.com"}});
    let a = node.call("POST", "/v1/streams/people/records", Some(record));
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(state_of(&node, None)["alice"], "live");
    for stream in ["ds", "dt"] {
        let a = node.call("PUT", &format!("/v1/streams/{stream}"), Some(json!({})));
        assert_eq!(a.status, 201, "{a:?}");
    }
    let spec = json!({"source": "ds", "target": "dt"});
    let a = node.call("PUT", "/v1/derived-streams/d", Some(spec));
    assert_eq!(a.status, 201, "{a:?}");
    let a = node.call("PUT", "/v1/streams/rs", Some(json!({})));
    assert_eq!(a.status, 201, "{a:?}");
    let schema = json!({"schema": "\"string\""});
    let a = node.call(
        "POST",
        "/v1/schema-registry/subjects/sr/versions",
        Some(schema),
    );
    assert_eq!((a.status, a.json()["id"].clone()), (200, json!(1)), "{a:?}");
    // Group `g` on `s`, without members.
    let join = json!({"stream": "s", "member": "m0", "session_timeout_ms": 300_000});
    let a = node.call("POST", "/v1/groups/g/members", Some(join));
    assert_eq!(a.status, 200, "{a:?}");
    let leave = format!("/v1/groups/g/members/m0?epoch={}", a.json()["epoch"]);
    assert_eq!(node.call("DELETE", &leave, None).status, 204);

    let (revoked, id) = token(&node, "gone", &["admin"], None);
    assert_eq!(
        node.call("DELETE", &format!("/v1/tokens/{id}"), None)
            .status,
        200
    );
    let (expired, _) = token(&node, "brief", &["admin"], Some(1));
    // It expires 1 ms after its creation: wait (bounded) until the server says so.
    let mut tries = 0;
    while node
        .call_as(Some(&expired), "GET", "/v1/streams", None)
        .status
        != 401
    {
        tries += 1;
        assert!(tries < 10_000, "the 1 ms token never expired");
    }
    let unknown = format!("lb_{}", "0".repeat(32));

    for route in routes() {
        let send = |token: Option<&str>, raw_auth: Option<&str>| {
            let mut epoch = String::new();
            for (m, p, b) in route.prepare {
                let p = p.replace("{E}", &epoch);
                let body = (!b.is_empty()).then(|| serde_json::from_str(b).unwrap());
                let a = node.call(m, &p, body);
                assert!(a.status < 300, "prepare {m} {p}: {a:?}");
                if let Some(e) = a.json()["epoch"].as_u64() {
                    epoch = e.to_string();
                }
            }
            let body = route.body.as_ref().map(|b| {
                let text = b.to_string().replace("\"{E}\"", &epoch);
                serde_json::from_str::<Value>(&text).unwrap()
            });
            // A transaction belongs to the principal that began it: begun by the token under
            // test where that token may begin one, else by the admin (a token that may not
            // begin one is refused at the edge before its owner matters).
            let txn = route.path.contains("{T}").then(|| {
                let begin = |t: Option<&str>| {
                    let body = json!({"isolation": "serializable"});
                    node.call_as(t, "POST", "/v1/txns", Some(body))
                };
                let a = match token.map(|t| begin(Some(t))) {
                    Some(a) if a.status == 201 => a,
                    _ => node.call(
                        "POST",
                        "/v1/txns",
                        Some(json!({"isolation": "serializable"})),
                    ),
                };
                a.json()["txn"].as_str().unwrap().to_string()
            });
            let path = route
                .path
                .replace("{T}", txn.as_deref().unwrap_or(""))
                .replace("{E}", &epoch);
            let before = state_of(&node, txn.as_deref());
            let answer = match raw_auth {
                Some(h) => {
                    let text = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                    let mut headers = vec![("host", node.serve.addr()), ("authorization", h)];
                    if body.is_some() {
                        headers.push(("content-type", "application/json"));
                    }
                    node.raw_as(None, route.method, &path, &headers, text.as_bytes())
                }
                None => node.call_as(token, route.method, &path, body),
            };
            let after = state_of(&node, txn.as_deref());
            (answer, before, after)
        };
        let what = format!("{} {}", route.method, route.path);
        let refused = |a: &Answer, before: &Value, after: &Value, status: u16, case: &str| {
            assert_eq!(a.status, status, "{what} with {case}: {a:?}");
            let code = if status == 401 {
                "unauthenticated"
            } else {
                "forbidden"
            };
            assert_eq!(a.json()["code"], code, "{what} with {case}: {a:?}");
            assert_eq!(before, after, "{what} with {case} changed something");
            if status == 401 {
                assert!(
                    a.header("www-authenticate")
                        .is_some_and(|h| h.contains("Bearer"))
                );
            }
        };
        for (case, token, raw) in [
            ("no token", None, None),
            ("a malformed header", None, Some("Token abc")),
            ("an unknown token", Some(unknown.as_str()), None),
            ("an expired token", Some(expired.as_str()), None),
            ("a revoked token", Some(revoked.as_str()), None),
        ] {
            let (a, before, after) = send(token, raw);
            refused(&a, &before, &after, 401, case);
        }
        if !route.lacks.is_empty() {
            let (lacking, _) = token(&node, "lacks", route.lacks, None);
            let (a, before, after) = send(Some(&lacking), None);
            refused(&a, &before, &after, 403, &format!("{:?}", route.lacks));
            let missing = route.names.unwrap_or_else(|| {
                route
                    .covers
                    .iter()
                    .find(|c| !route.lacks.contains(c))
                    .unwrap()
            });
            // A check of one name ("lacks the scope …"), or of any of the names sharing an
            // object (a schema by id: "… (such as …)").
            let detail = a.json()["detail"].as_str().unwrap().to_string();
            assert!(
                detail.contains(&format!("lacks the scope {missing}"))
                    || detail.contains(&format!("(such as {missing})")),
                "{what}: the 403 names {missing}: {detail}"
            );
        }
        let (covering, _) = token(&node, "covers", route.covers, None);
        for (case, t) in [("its scopes", covering.as_str()), ("admin", admin.as_str())] {
            let (a, _, _) = send(Some(t), None);
            assert!(
                ![401, 403].contains(&a.status) && a.status < 500,
                "{what} with {case}: {a:?}"
            );
        }
    }
    for open in ["/v1/health", "/openapi.json"] {
        assert_eq!(node.call_as(None, "GET", open, None).status, 200, "{open}");
    }
    node.terminate();
}

/// A token with only `kv:write` on a key learns nothing of the key through an atomic
/// operation (review r14 F2): an increment by 0 would answer its value, a compare-and-set
/// the version it found, a put-if-absent that it exists. Each needs `kv:read` on the key
/// too, in a one-shot commit and in an interactive transaction alike: 403 naming the scope
/// and the field, and nothing is written. Plain puts and deletes still need `kv:write` only.
#[test]
fn a_write_only_token_cannot_read_a_key_through_an_atomic_operation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let a = node.call(
        "POST",
        "/v1/commits",
        Some(json!({"writes": [{"op": "put", "key": "salary", "value": 5000}]})),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let before = node.get("/v1/kv/salary").json();
    let (writer, _) = token(&node, "writer", &["kv:write:salary"], None);
    let forbidden = |a: &Answer, field: &str| {
        assert_eq!(a.status, 403, "{field}: {a:?}");
        assert_eq!(a.json()["code"], "forbidden", "{a:?}");
        assert_eq!(a.json()["field"], field, "{a:?}");
        let detail = a.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains("lacks the scope kv:read:salary"),
            "{detail}"
        );
        assert!(
            !detail.contains("5000"),
            "the refusal tells nothing: {detail}"
        );
    };
    let commit = |write: Value| {
        node.call_as(
            Some(&writer),
            "POST",
            "/v1/commits",
            Some(json!({ "writes": [write] })),
        )
    };
    // One-shot commits.
    let a = commit(json!({"op": "increment", "key": "salary", "by": 0}));
    forbidden(&a, "writes[0].op");
    let a = commit(json!({"op": "put", "key": "salary", "value": 1, "if_version": 7}));
    forbidden(&a, "writes[0].if_version");
    let a = commit(json!({"op": "put", "key": "salary", "value": 1, "if_absent": true}));
    forbidden(&a, "writes[0].if_absent");
    let a = commit(json!({"op": "delete", "key": "salary", "if_version": 7}));
    forbidden(&a, "writes[0].if_version");
    // An interactive transaction: each atomic step is refused before it is buffered.
    let begun = node.call_as(Some(&writer), "POST", "/v1/txns", Some(json!({})));
    assert_eq!(begun.status, 201, "{begun:?}");
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let step = |method: &str, path: &str, body: Option<Value>| {
        node.call_as(
            Some(&writer),
            method,
            &format!("/v1/txns/{txn}/kv/{path}"),
            body,
        )
    };
    let a = step("POST", "salary/increment", Some(json!({"by": 0})));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.json()["detail"]
            .as_str()
            .unwrap()
            .contains("lacks the scope kv:read:salary"),
        "{a:?}"
    );
    forbidden(
        &step("PUT", "salary", Some(json!({"value": 1, "if_version": 7}))),
        "if_version",
    );
    forbidden(
        &step(
            "PUT",
            "salary",
            Some(json!({"value": 1, "if_absent": true})),
        ),
        "if_absent",
    );
    forbidden(&step("DELETE", "salary?if_version=7", None), "if_version");
    let a = node.call_as(
        Some(&writer),
        "POST",
        &format!("/v1/txns/{txn}/commit"),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json()["offset"],
        Value::Null,
        "nothing was buffered: {a:?}"
    );
    assert_eq!(a.json()["incremented"], json!({}), "{a:?}");
    assert_eq!(
        node.get("/v1/kv/salary").json(),
        before,
        "nothing was written"
    );
    // Blind writes need kv:write only.
    let a = commit(json!({"op": "put", "key": "salary", "value": 6000}));
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(node.get("/v1/kv/salary").json()["value"], 6000);
    node.terminate();
}

/// An interactive transaction belongs to the principal that began it: another token with
/// the same scopes that learns the handle gets 404 `unknown_transaction` on every step — no
/// read, no write, no commit, no abort — and the owner's transaction goes on untouched.
#[test]
fn a_transaction_handle_is_not_a_capability_for_another_principal() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let scopes = ["kv:read:*", "kv:write:*"];
    let (alice, _) = token(&node, "alice", &scopes, None);
    let (mallory, _) = token(&node, "mallory", &scopes, None);
    let begun = node.call_as(Some(&alice), "POST", "/v1/txns", Some(json!({})));
    assert_eq!(begun.status, 201, "{begun:?}");
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let path = |rest: &str| format!("/v1/txns/{txn}{rest}");
    let a = node.call_as(
        Some(&alice),
        "PUT",
        &path("/kv/k"),
        Some(json!({"value": 1})),
    );
    assert_eq!(a.status, 204, "{a:?}");
    for (method, rest, body) in [
        ("GET", "/kv/k", None),
        ("GET", "/kv?prefix=", None),
        ("PUT", "/kv/k", Some(json!({"value": 2}))),
        ("POST", "/kv/n/increment", Some(json!({"by": 0}))),
        ("POST", "/commit", None),
        ("POST", "/abort", None),
    ] {
        // Review r14f F1: the handle with one character percent-encoded is the same handle.
        let encoded = format!("%{:02X}{}", txn.as_bytes()[0], &txn[1..]);
        for handle in [txn.as_str(), encoded.as_str()] {
            let at = format!("/v1/txns/{handle}{rest}");
            let a = node.call_as(Some(&mallory), method, &at, body.clone());
            assert_eq!(a.status, 404, "{method} {at}: {a:?}");
            assert_eq!(a.json()["code"], "unknown_transaction", "{a:?}");
        }
    }
    let a = node.call_as(Some(&alice), "GET", &path("/kv/k"), None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["value"], 1, "mallory's put did not land: {a:?}");
    let a = node.call_as(Some(&alice), "POST", &path("/commit"), None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(node.get("/v1/kv/k").json()["value"], 1);
    node.terminate();
}

/// Review r14b M1: a write at `snapshot` or `serializable` is checked against the
/// transaction's snapshot, so where the client chose it (a one-shot commit naming
/// `snapshot`, an interactive transaction) it needs `kv:read` on the key; a write-only token
/// probing snapshots learns nothing of a key's history, and still writes blind without a
/// snapshot or at `read_committed`.
#[test]
fn a_write_only_token_cannot_learn_a_keys_history_through_a_snapshot_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    for (key, value) in [
        ("a/secret", 1),
        ("b", 1),
        ("a/secret", 2),
        ("b", 2),
        ("a/secret", 3),
    ] {
        let body = json!({"writes": [{"op": "put", "key": key, "value": value}]});
        assert_eq!(node.call("POST", "/v1/commits", Some(body)).status, 200);
    }
    let scopes = ["kv:write:a/*", "kv:read:own/*", "kv:write:own/*"];
    let (writer, _) = token(&node, "writer", &scopes, None);
    let commit = |body: Value| node.call_as(Some(&writer), "POST", "/v1/commits", Some(body));
    let before = state_of(&node, None);
    for snapshot in 0..=5 {
        for isolation in ["snapshot", "serializable"] {
            let a = commit(
                json!({"isolation": isolation, "snapshot": snapshot, "writes": [
                {"op": "put", "key": "a/secret", "value": "probe"},
                {"op": "put", "key": "own/x", "value": 1, "if_version": 999_999}]}),
            );
            a.assert_problem(403, "forbidden");
            assert_eq!(a.json()["field"], "snapshot", "{a:?}");
            let detail = a.json()["detail"].as_str().unwrap().to_string();
            assert!(detail.contains("kv:read:a/secret"), "{detail}");
            assert!(!detail.contains("offset"), "{detail}");
        }
    }
    assert_eq!(state_of(&node, None), before, "the probes changed nothing");
    // Without a snapshot the write is certified at the newest one: the probe's answer is
    // its own failed condition, the same whatever the key's history.
    let a = commit(json!({"isolation": "snapshot", "writes": [
        {"op": "put", "key": "a/secret", "value": "probe"},
        {"op": "put", "key": "own/x", "value": 1, "if_version": 999_999}]}));
    a.assert_problem(409, "version_mismatch");
    assert_eq!(a.json()["field"], "writes[1].if_version", "{a:?}");
    // At read_committed a named snapshot checks no write against it.
    let a = commit(
        json!({"isolation": "read_committed", "snapshot": 0, "writes": [
        {"op": "put", "key": "a/secret", "value": "probe"},
        {"op": "put", "key": "own/x", "value": 1, "if_version": 999_999}]}),
    );
    a.assert_problem(409, "version_mismatch");
    assert_eq!(
        state_of(&node, None),
        before,
        "refused commits changed nothing"
    );
    // Interactive: a transaction's snapshot is held from its start.
    let begin = |body: Value| {
        let a = node.call_as(Some(&writer), "POST", "/v1/txns", Some(body));
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["txn"].as_str().unwrap().to_string()
    };
    for isolation in ["snapshot", "serializable"] {
        let txn = begin(json!({"isolation": isolation}));
        let path = format!("/v1/txns/{txn}/kv/a%2Fsecret");
        let a = node.call_as(Some(&writer), "PUT", &path, Some(json!({"value": "probe"})));
        a.assert_problem(403, "forbidden");
        assert_eq!(a.json()["field"], "key", "{a:?}");
        let a = node.call_as(Some(&writer), "DELETE", &path, None);
        a.assert_problem(403, "forbidden");
        let a = node.call_as(
            Some(&writer),
            "PUT",
            &format!("/v1/txns/{txn}/kv/own%2Fy"),
            Some(json!({"value": 1})),
        );
        assert_eq!(a.status, 204, "a key it reads: {a:?}");
        let a = node.call_as(
            Some(&writer),
            "POST",
            &format!("/v1/txns/{txn}/commit"),
            None,
        );
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(
        node.get("/v1/kv/a%2Fsecret").json()["value"],
        3,
        "nothing of the probes"
    );
    let txn = begin(json!({"isolation": "read_committed"}));
    let path = format!("/v1/txns/{txn}/kv/a%2Fsecret");
    let a = node.call_as(Some(&writer), "PUT", &path, Some(json!({"value": "blind"})));
    assert_eq!(a.status, 204, "{a:?}");
    let a = node.call_as(
        Some(&writer),
        "POST",
        &format!("/v1/txns/{txn}/commit"),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(node.get("/v1/kv/a%2Fsecret").json()["value"], "blind");
    let a = commit(json!({"writes": [{"op": "put", "key": "a/secret", "value": "plain"}]}));
    assert_eq!(a.status, 200, "a blind put without a snapshot: {a:?}");
    assert_eq!(node.get("/v1/kv/a%2Fsecret").json()["value"], "plain");
    node.terminate();
}

/// [`Node::call_as`] with an `Idempotency-Key`.
/// (`null`: no body).
fn call_keyed(node: &Node, token: &str, path: &str, key: &str, body: Value) -> Answer {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("host", node.serve.addr()),
        ("authorization", auth.as_str()),
        ("idempotency-key", key),
    ];
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        headers.push(("content-type", "application/json"));
        serde_json::to_vec(&body).unwrap()
    };
    wire::one(node.serve.addr(), "POST", path, &headers, &bytes)
}

/// Asserts a commit that was applied now (not a duplicate) and did not answer with anything
/// of `a/balance`; returns its offset.
fn applied_here(a: &Answer) -> Value {
    assert_eq!(a.status, 200, "{a:?}");
    assert_ne!(
        a.json()["duplicate"],
        true,
        "another principal's commit: {a:?}"
    );
    assert!(
        !a.body.contains("a/balance"),
        "another principal's value leaked: {a:?}"
    );
    a.json()["offset"].clone()
}

/// Review r14b M2: commit request ids are looked up among the sender's own ids, on both
/// forms of commit and across a restart (the principal is in the commit record). Another
/// principal's id neither answers with that principal's commit (its `incremented` values),
/// nor squats it (a read-only commit first), nor names its offset in a conflict.
#[test]
fn commit_request_ids_are_scoped_to_the_principal_that_sent_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--auth", "on"]);
    let (alice, _) = token(&node, "alice", &["kv:read:a/*", "kv:write:a/*"], None);
    let (mallory, _) = token(&node, "mallory", &["kv:read:b/*", "kv:write:b/*"], None);
    let put = json!({"writes": [{"op": "put", "key": "a/balance", "value": 1000}]});
    assert_eq!(node.call("POST", "/v1/commits", Some(put)).status, 200);
    let rmw = |key: &str, by: i64| {
        let version = node.get("/v1/kv/a%2Fbalance").json()["version"].clone();
        let body = json!({
            "reads": [{"key": "a/balance", "version": version}],
            "writes": [{"op": "increment", "key": "a/balance", "by": by}],
        });
        call_keyed(&node, &alice, "/v1/commits", key, body)
    };
    // 1. The leak: alice's read-modify-write answers its value to alice only.
    let a = rmw("order-1", -250);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["incremented"]["a/balance"], 750, "{a:?}");
    let a = call_keyed(
        &node,
        &mallory,
        "/v1/txns/t00000000000000000000000000000000/commit",
        "order-1",
        Value::Null,
    );
    assert_eq!(
        a.status, 404,
        "an unknown handle is not answered from alice's id: {a:?}"
    );
    assert!(!a.body.contains("a/balance"), "{a:?}");
    let begun = node.call_as(Some(&mallory), "POST", "/v1/txns", Some(json!({})));
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let put = node.call_as(
        Some(&mallory),
        "PUT",
        &format!("/v1/txns/{txn}/kv/b%2Fy"),
        Some(json!({"value": 2})),
    );
    assert_eq!(put.status, 204, "{put:?}");
    let a = call_keyed(
        &node,
        &mallory,
        &format!("/v1/txns/{txn}/commit"),
        "order-1",
        Value::Null,
    );
    applied_here(&a);
    let a = rmw("order-2", -250);
    assert_eq!(a.json()["incremented"]["a/balance"], 500, "{a:?}");
    let mallorys_put = json!({"writes": [{"op": "put", "key": "b/x", "value": 1}]});
    let a = call_keyed(
        &node,
        &mallory,
        "/v1/commits",
        "order-2",
        mallorys_put.clone(),
    );
    applied_here(&a);
    assert_eq!(
        node.get("/v1/kv/b%2Fx").json()["value"],
        1,
        "mallory's commit was applied"
    );
    // 2. Squatting: mallory's read-only commit under an id does not take it from alice.
    let read_only = json!({"reads": [{"key": "b/nothing", "version": null}]});
    let a = call_keyed(&node, &mallory, "/v1/commits", "order-3", read_only);
    assert_eq!(a.status, 200, "{a:?}");
    let decrement = json!({"writes": [{"op": "increment", "key": "a/balance", "by": -100}]});
    let a = call_keyed(&node, &alice, "/v1/commits", "order-3", decrement);
    assert_eq!(a.status, 200, "{a:?}");
    assert_ne!(
        a.json()["duplicate"],
        true,
        "alice's commit was applied: {a:?}"
    );
    assert_eq!(a.json()["incremented"]["a/balance"], 400, "{a:?}");
    assert_eq!(node.get("/v1/kv/a%2Fbalance").json()["value"], 400);
    // 3. No conflict with (nor the offset of) another principal's commit.
    let alices_put = json!({"writes": [{"op": "put", "key": "a/z", "value": 1}]});
    let a = call_keyed(&node, &alice, "/v1/commits", "order-4", alices_put.clone());
    let alices = a.json()["offset"].clone();
    assert_eq!(a.status, 200, "{a:?}");
    let other = json!({"writes": [{"op": "put", "key": "b/z", "value": 2}]});
    let mallorys = applied_here(&call_keyed(
        &node,
        &mallory,
        "/v1/commits",
        "order-4",
        other.clone(),
    ));
    assert_ne!(mallorys, alices, "two commits");
    // Each principal's retries still find its own commit, also after a restart (replay
    // rebuilds the same namespaces from the commit records).
    node.terminate();
    let node = Node::start(&data, &["--auth", "on"]);
    for (token, body, offset) in [
        (&alice, &alices_put, &alices),
        (&mallory, &other, &mallorys),
    ] {
        let a = call_keyed(&node, token, "/v1/commits", "order-4", body.clone());
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["duplicate"], true, "{a:?}");
        assert_eq!(&a.json()["offset"], offset, "its own commit: {a:?}");
    }
    let a = call_keyed(&node, &alice, "/v1/commits", "order-4", other.clone());
    a.assert_problem(403, "forbidden");
    let a = call_keyed(&node, &mallory, "/v1/commits", "order-2", mallorys_put);
    assert_eq!(a.json()["duplicate"], true, "{a:?}");
    assert!(!a.body.contains("a/balance"), "{a:?}");
    node.terminate();
}

/// The first start writes the admin token to `admin.token` (0600, `lb_` + 32 hex digits),
/// logs the file's path but never the secret, and a restart keeps it.
#[test]
fn the_first_start_writes_an_owner_only_admin_token_and_logs_its_path_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--auth", "on"]);
    let file = data.join("admin.token");
    let secret = node.token.clone().unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        secret.len() == 35
            && secret.starts_with("lb_")
            && secret[3..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{secret}"
    );
    assert_eq!(node.get("/v1/streams").status, 200);
    let listed = node.get("/v1/tokens");
    assert_eq!(listed.json()["tokens"][0]["principal"], "admin");
    assert!(
        !listed.body.contains(&secret[3..]),
        "a listing shows no secret"
    );
    let log = node.stderr();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(!log.contains(&secret[3..]), "the secret is in the log");
    node.terminate();
    let node = Node::start(&data, &["--auth", "on"]);
    assert_eq!(node.token.as_deref(), Some(secret.as_str()));
    assert_eq!(
        node.get("/v1/tokens").json()["tokens"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(node.get("/v1/streams").status, 200);
    node.terminate();
}

/// `--auth off` is refused with a listen address other machines can reach, and accepted on
/// loopback, where it checks nothing.
#[test]
fn auth_off_is_refused_unless_the_listen_address_is_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args([
            "serve",
            "--auth",
            "off",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("LOGBOOK_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("auth") && stderr.contains("loopback"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
    let node = Node::start(&dir.path().join("data"), &["--auth", "off"]);
    assert_eq!(node.call_as(None, "GET", "/v1/streams", None).status, 200);
    node.terminate();
}

/// Tokens over the CLI (reading the admin token from --data-dir, or LOGBOOK_TOKEN): create
/// prints the secret once, list shows none, a scoped token works through HTTP Basic with its
/// principal (not another's), revoke ends it.
#[test]
fn tokens_are_created_listed_and_revoked_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--auth", "on"]);
    let cli = |args: &[&str], envs: &[(&str, &str)]| {
        let out = Command::new(common::BIN)
            .args(args)
            .args(["--server", node.serve.addr()])
            .env_remove("LOGBOOK_TOKEN")
            .env_remove("LOGBOOK_DATA_DIR")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let data_arg = data.to_str().unwrap();
    let (ok, out, err) = cli(
        &[
            "token",
            "create",
            "ingest",
            "--scope",
            "streams:append:orders",
            "--scope",
            "streams:read:orders",
            "--json",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    // Without a token (an empty data directory elsewhere): 401, said by the CLI.
    let (ok, _, err) = cli(&["token", "list", "--data-dir", "/nonexistent"], &[]);
    assert!(!ok && err.contains("unauthenticated"), "{err}");
    let admin = node.token.clone().unwrap();
    let (ok, out, err) = cli(
        &["token", "list", "--data-dir", "/nonexistent"],
        &[("LOGBOOK_TOKEN", &admin)],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&id) && out.contains("ingest") && !out.contains(&secret[3..]),
        "{out}"
    );
    // The scoped token: its streams through HTTP Basic with its own principal only.
    assert_eq!(
        node.call("PUT", "/v1/streams/orders", Some(json!({})))
            .status,
        201
    );
    let basic = |user: &str| {
        let text = format!("{user}:{secret}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    };
    let append = |auth: &str| {
        node.raw_as(
            None,
            "POST",
            "/v1/streams/orders/records",
            &[
                ("host", node.serve.addr()),
                ("content-type", "application/json"),
                ("authorization", auth),
            ],
            br#"{"value": 1}"#,
        )
    };
    assert_eq!(append(&basic("ingest")).status, 201);
    assert_eq!(append(&basic("admin")).status, 401);
    assert_eq!(append(&format!("Bearer {secret}")).status, 201);
    let a = node.call_as(Some(&secret), "PUT", "/v1/streams/other", Some(json!({})));
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (403, Some("forbidden")),
        "{a:?}"
    );
    let (ok, out, err) = cli(&["token", "revoke", &id, "--data-dir", data_arg], &[]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    assert_eq!(append(&format!("Bearer {secret}")).status, 401);
    assert_eq!(records(&node, "orders").len(), 2);
    node.terminate();
}

/// The last live admin token is kept: revoking it — by itself or by anyone — is 409
/// `last_admin_token` naming `id`, and nothing changes (without it no one could make tokens
/// again). Revoked and expired admin tokens and tokens of other scopes do not count as
/// another; a second live admin token does, and then the first can go.
#[test]
fn the_last_live_admin_token_cannot_be_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let first = node.get("/v1/tokens").json()["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = |secret: Option<&str>, id: &str| {
        node.call_as(secret, "DELETE", &format!("/v1/tokens/{id}"), None)
    };
    let refused = |a: Answer| {
        let body = a.json();
        assert_eq!(
            (a.status, body["code"].as_str(), body["field"].as_str()),
            (409, Some("last_admin_token"), Some("id")),
            "{a:?}"
        );
    };
    let admin = node.token.clone().unwrap();
    refused(revoke(Some(&admin), &first));
    // Neither a revoked nor an expired admin token, nor a scoped one, is another admin.
    let (_, gone) = token(&node, "gone", &["admin"], None);
    assert_eq!(revoke(Some(&admin), &gone).status, 200);
    let (expired, _) = token(&node, "brief", &["admin"], Some(1));
    let mut tries = 0;
    while node
        .call_as(Some(&expired), "GET", "/v1/streams", None)
        .status
        != 401
    {
        tries += 1;
        assert!(tries < 100, "the 1 ms token never expired");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    token(&node, "reader", &["streams:read:*"], None);
    refused(revoke(Some(&admin), &first));
    let listed = node.get("/v1/tokens").json();
    assert!(listed["tokens"][0]["revoked_at_ms"].is_null(), "{listed}");
    // With a second live admin token, the first can go; then the second is the last.
    let (ops, second) = token(&node, "ops", &["admin"], None);
    assert_eq!(revoke(Some(&admin), &first).status, 200);
    refused(revoke(Some(&ops), &second));
    assert_eq!(
        node.call_as(Some(&ops), "GET", "/v1/tokens", None).status,
        200
    );
}

/// `logbook_txn_certifier_bytes` from `/metrics`.
fn certifier_bytes(node: &Node) -> u64 {
    let a = node.get("/metrics");
    assert_eq!(a.status, 200, "{a:?}");
    let line = a
        .body
        .lines()
        .find(|l| l.starts_with("logbook_txn_certifier_bytes "))
        .unwrap_or_else(|| panic!("no logbook_txn_certifier_bytes in {}", a.body));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Review r14c N1: the certifier's byte budget is shared among principals. One principal
/// flooding large commits while another's transaction is open fills only its share (half
/// the budget over the principals holding any plus one) and is then told to back off — 429
/// `certifier_share_full`, retryable, with `Retry-After`, nothing written — while the
/// other's open transaction is not aborted: it reads, writes and commits, and so does its
/// one-shot commit at the old snapshot. Once that transaction ended, the flooder's history
/// makes room for its own commits again.
#[test]
fn one_principals_commits_fill_only_its_share_of_the_certifier_and_anothers_transaction_commits() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 32 << 20;
    let node = Node::start(
        &dir.path().join("data"),
        &["--auth", "on", "--certifier-bytes-max", &budget.to_string()],
    );
    let (mallory, _) = token(&node, "mallory", &["kv:read:m/*", "kv:write:m/*"], None);
    let (victim, _) = token(&node, "victim", &["kv:read:v/*", "kv:write:v/*"], None);
    let as_victim = |method: &str, path: &str, body: Option<Value>| {
        node.call_as(Some(&victim), method, path, body)
    };
    let put = json!({"writes": [{"op": "put", "key": "v/a", "value": 1}]});
    let a = as_victim("POST", "/v1/commits", Some(put));
    assert_eq!(a.status, 200, "{a:?}");
    let snapshot = a.json()["offset"].as_u64().unwrap() + 1;
    let a = as_victim(
        "POST",
        "/v1/txns",
        Some(json!({"isolation": "serializable"})),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let txn = a.json()["txn"].as_str().unwrap().to_string();
    let a = as_victim("GET", &format!("/v1/txns/{txn}/kv/v%2Fa"), None);
    assert_eq!((a.status, &a.json()["value"]), (200, &json!(1)), "{a:?}");
    // Mallory's commits: 40,000 declared absent keys of 101 bytes, about 6 MB of the
    // certifier's memory each, and one write. Each is within every limit.
    let pad = "p".repeat(90);
    let flood = |n: usize| {
        let reads: Vec<Value> = (0..40_000)
            .map(|i| json!({"key": format!("m/{n}/{i:06}/{pad}"), "version": null}))
            .collect();
        let body = json!({"isolation": "serializable", "reads": reads,
                          "writes": [{"op": "put", "key": format!("m/w{n}"), "value": n}]});
        node.call_as(Some(&mallory), "POST", "/v1/commits", Some(body))
    };
    let mut committed = 0;
    let refused = loop {
        let a = flood(committed);
        if a.status != 200 {
            break a;
        }
        committed += 1;
        assert!(committed < 6, "never refused");
        assert!(
            certifier_bytes(&node) <= budget / 3 + 4096,
            "within its share"
        );
    };
    // Two principals hold summaries and one share is kept free: mallory's is a third of
    // the budget, 11.2 MB, which holds one.
    assert_eq!(committed, 1, "{refused:?}");
    refused.assert_problem(429, "certifier_share_full");
    assert_eq!(refused.json()["retryable"], true, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    let a = node.get(&format!("/v1/kv/m%2Fw{committed}"));
    assert_eq!(a.status, 404, "the refused commit wrote nothing: {a:?}");
    // The victim's one-shot commit at its old snapshot, and its open transaction, commit.
    let one_shot = json!({"snapshot": snapshot, "reads": [{"key": "v/a", "version": snapshot - 1}],
                          "writes": [{"op": "put", "key": "v/b", "value": 2}]});
    let a = as_victim("POST", "/v1/commits", Some(one_shot));
    assert_eq!(a.status, 200, "{a:?}");
    let a = as_victim(
        "PUT",
        &format!("/v1/txns/{txn}/kv/v%2Fc"),
        Some(json!({"value": 3})),
    );
    assert_eq!(a.status, 204, "{a:?}");
    let a = as_victim("POST", &format!("/v1/txns/{txn}/commit"), None);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(certifier_bytes(&node) <= budget);
    // Nothing open needs mallory's history now: it makes room for mallory's commits.
    for n in committed..committed + 3 {
        let a = flood(n);
        assert_eq!(a.status, 200, "{a:?}");
        assert!(certifier_bytes(&node) <= budget);
    }
}

/// Review r14c N3: request ids are scoped by the principal's name, so that a retry with a
/// new token of the same principal (one rotated after it expired) still finds its commit
/// and is not applied twice. Scopes belong to tokens, so the answer of a duplicate is
/// given only to a token that may read what it holds: a narrower token of the principal
/// reusing the id learns no value it may not read — on both forms of commit — while a
/// token with the original's scopes gets the original answer.
#[test]
fn a_duplicates_answer_is_given_only_to_a_token_that_may_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let (reader, _) = token(&node, "alice", &["kv:read:a/*", "kv:write:a/*"], None);
    let (narrow, _) = token(&node, "alice", &["kv:write:b/*"], None);
    let (rotated, _) = token(&node, "alice", &["kv:read:a/*", "kv:write:a/*"], None);
    let put = json!({"writes": [{"op": "put", "key": "a/balance", "value": 1000}]});
    assert_eq!(node.call("POST", "/v1/commits", Some(put)).status, 200);
    let version = node.get("/v1/kv/a%2Fbalance").json()["version"].clone();
    let rmw = json!({
        "reads": [{"key": "a/balance", "version": version}],
        "writes": [{"op": "increment", "key": "a/balance", "by": -250}],
    });
    let a = call_keyed(&node, &reader, "/v1/commits", "x2", rmw.clone());
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["incremented"]["a/balance"], 750, "{a:?}");
    let hidden = |a: &Answer| {
        a.assert_problem(403, "forbidden");
        assert_eq!(a.json()["field"], "Idempotency-Key", "{a:?}");
        assert!(!a.body.contains("750"), "the value leaked: {a:?}");
        assert!(a.body.contains("kv:read:a/balance"), "{a:?}");
    };
    // The narrower token: a one-shot commit, and an interactive one, under the same id.
    hidden(&call_keyed(&node, &narrow, "/v1/commits", "x2", json!({})));
    let begun = node.call_as(Some(&narrow), "POST", "/v1/txns", Some(json!({})));
    assert_eq!(begun.status, 201, "{begun:?}");
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let path = format!("/v1/txns/{txn}/commit");
    hidden(&call_keyed(&node, &narrow, &path, "x2", Value::Null));
    // The original's scopes get the original answer: the same token, and a new one.
    for token in [&reader, &rotated] {
        let a = call_keyed(&node, token, "/v1/commits", "x2", rmw.clone());
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["duplicate"], true, "{a:?}");
        assert_eq!(a.json()["incremented"]["a/balance"], 750, "{a:?}");
    }
    let balance = node.get("/v1/kv/a%2Fbalance").json()["value"].clone();
    assert_eq!(balance, 750, "applied once");
}

/// Review r14d F1: only a transaction whose commit is checked against the commits after
/// its snapshot keeps them. Another principal's open transactions that need none — a
/// `read_committed` one (read-only, or writing blindly), a declared read-only `snapshot`
/// one and a `serializable` one at a safe snapshot — leave a principal's commits room:
/// over the whole budget in all, none is 429 `certifier_share_full`, and those
/// transactions then commit.
#[test]
fn transactions_that_need_no_history_do_not_hold_back_anothers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 32 << 20;
    let node = Node::start(
        &dir.path().join("data"),
        &["--auth", "on", "--certifier-bytes-max", &budget.to_string()],
    );
    let (mallory, _) = token(&node, "mallory", &["kv:read:m/*", "kv:write:m/*"], None);
    let (victim, _) = token(&node, "victim", &["kv:read:v/*", "kv:write:v/*"], None);
    let as_mallory = |method: &str, path: &str, body: Option<Value>| {
        node.call_as(Some(&mallory), method, path, body)
    };
    let put = json!({"writes": [{"op": "put", "key": "m/x", "value": 1}]});
    assert_eq!(as_mallory("POST", "/v1/commits", Some(put)).status, 200);
    let mut open = Vec::new();
    for (begin, writes) in [
        (
            json!({"isolation": "read_committed", "read_only": true}),
            false,
        ),
        (json!({"isolation": "read_committed"}), true),
        (json!({"isolation": "snapshot", "read_only": true}), false),
        (
            json!({"isolation": "serializable", "read_only": true}),
            false,
        ),
    ] {
        let a = as_mallory("POST", "/v1/txns", Some(begin));
        assert_eq!(a.status, 201, "{a:?}");
        let txn = a.json()["txn"].as_str().unwrap().to_string();
        let a = as_mallory("GET", &format!("/v1/txns/{txn}/kv/m%2Fx"), None);
        assert_eq!((a.status, &a.json()["value"]), (200, &json!(1)), "{a:?}");
        if writes {
            let path = format!("/v1/txns/{txn}/kv/m%2Fy");
            let a = as_mallory("PUT", &path, Some(json!({"value": 2})));
            assert_eq!(a.status, 204, "{a:?}");
        }
        open.push(txn);
    }
    // The victim's commits: 40,000 declared absent keys of 101 bytes (about 6 MB of the
    // certifier's memory) and one write each; alone it holds summaries, so its share is
    // half the budget (two of them). Eight are 48 MB, more than the whole budget.
    let pad = "p".repeat(90);
    for n in 0..8 {
        let reads: Vec<Value> = (0..40_000)
            .map(|i| json!({"key": format!("v/{n}/{i:06}/{pad}"), "version": null}))
            .collect();
        let body = json!({"isolation": "serializable", "reads": reads,
                          "writes": [{"op": "put", "key": format!("v/w{n}"), "value": n}]});
        let a = node.call_as(Some(&victim), "POST", "/v1/commits", Some(body));
        assert_eq!(a.status, 200, "commit {n}: {a:?}");
        assert!(certifier_bytes(&node) <= budget);
        // Mallory's transactions stay in use (not idle for the reaper).
        for txn in &open {
            let a = as_mallory("GET", &format!("/v1/txns/{txn}/kv/m%2Fx"), None);
            assert_eq!(a.status, 200, "{txn}: {a:?}");
        }
    }
    for txn in &open {
        let a = as_mallory("POST", &format!("/v1/txns/{txn}/commit"), None);
        assert_eq!(a.status, 200, "{txn}: {a:?}");
    }
    assert_eq!(node.get("/v1/kv/m%2Fy").json()["value"], 2);
}

/// Review r14d F3: a retry of an interactive commit on its handle with its
/// `Idempotency-Key` is answered as the original was — the values its increments
/// produced — and a narrower token of the same principal retrying it there is 403
/// `forbidden` naming `Idempotency-Key`, with no value and no offset (decision 0018).
#[test]
fn a_commit_retried_on_its_handle_answers_its_increments_to_a_token_that_may_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let (reader, _) = token(&node, "alice", &["kv:read:a/*", "kv:write:a/*"], None);
    let (narrow, _) = token(&node, "alice", &["kv:write:a/*"], None);
    let begun = node.call_as(Some(&reader), "POST", "/v1/txns", Some(json!({})));
    assert_eq!(begun.status, 201, "{begun:?}");
    let txn = begun.json()["txn"].as_str().unwrap().to_string();
    let bump = format!("/v1/txns/{txn}/kv/a%2Fbalance/increment");
    let a = node.call_as(Some(&reader), "POST", &bump, Some(json!({"by": 5})));
    assert_eq!(a.status, 204, "{a:?}");
    let path = format!("/v1/txns/{txn}/commit");
    let first = call_keyed(&node, &reader, &path, "i-A", Value::Null);
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        first.json()["incremented"],
        json!({"a/balance": 5}),
        "{first:?}"
    );
    let again = call_keyed(&node, &reader, &path, "i-A", Value::Null);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["duplicate"], true, "{again:?}");
    assert_eq!(
        again.json()["incremented"],
        json!({"a/balance": 5}),
        "{again:?}"
    );
    assert_eq!(again.json()["offset"], first.json()["offset"], "{again:?}");
    let hidden = call_keyed(&node, &narrow, &path, "i-A", Value::Null);
    hidden.assert_problem(403, "forbidden");
    assert_eq!(hidden.json()["field"], "Idempotency-Key", "{hidden:?}");
    assert!(hidden.json().get("offset").is_none(), "{hidden:?}");
    assert!(!hidden.body.contains("\"a/balance\":5"), "{hidden:?}");
    assert_eq!(
        node.get("/v1/kv/a%2Fbalance").json()["value"],
        5,
        "applied once"
    );
}

/// Review r14e N1: a token that may write no key begins read-only transactions, at the
/// newest snapshot, and they keep no history of others' commits in the certifier: however
/// many it holds open — `serializable`, `snapshot`, `read_committed`, each having read —
/// another principal's commits, over the whole budget in all, are never 429. Its
/// `serializable` ones, whose reads were to be certified against commits they did not
/// keep, are then refused at commit: 409 `snapshot_too_old`, retryable; the others commit.
/// A `for_update` read is refused as in any read-only transaction.
#[test]
fn a_token_that_may_write_nothing_keeps_no_history_of_anothers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 32 << 20;
    let node = Node::start(
        &dir.path().join("data"),
        &["--auth", "on", "--certifier-bytes-max", &budget.to_string()],
    );
    let (reader, _) = token(&node, "reader", &["kv:read:*"], None);
    let (victim, _) = token(&node, "victim", &["kv:read:v/*", "kv:write:v/*"], None);
    let as_reader = |method: &str, path: &str, body: Option<Value>| {
        node.call_as(Some(&reader), method, path, body)
    };
    let put = json!({"writes": [{"op": "put", "key": "v/x", "value": 1}]});
    let a = node.call_as(Some(&victim), "POST", "/v1/commits", Some(put));
    assert_eq!(a.status, 200, "{a:?}");
    let mut open = Vec::new();
    for isolation in ["serializable", "snapshot", "read_committed"] {
        for _ in 0..5 {
            let a = as_reader("POST", "/v1/txns", Some(json!({"isolation": isolation})));
            assert_eq!(a.status, 201, "{a:?}");
            assert_eq!(a.json()["read_only"], true, "{a:?}");
            let txn = a.json()["txn"].as_str().unwrap().to_string();
            let a = as_reader("GET", &format!("/v1/txns/{txn}/kv/v%2Fx"), None);
            assert_eq!((a.status, &a.json()["value"]), (200, &json!(1)), "{a:?}");
            open.push((isolation, txn));
        }
    }
    let (_, rc) = open.last().unwrap();
    let a = as_reader(
        "GET",
        &format!("/v1/txns/{rc}/kv/v%2Fx?for_update=true"),
        None,
    );
    a.assert_problem(400, "read_only_transaction");
    // The victim's commits: 40,000 declared absent keys of 101 bytes (about 6 MB of the
    // certifier's memory) and one write each; eight are 48 MB, more than the whole budget.
    let pad = "p".repeat(90);
    for n in 0..8 {
        let reads: Vec<Value> = (0..40_000)
            .map(|i| json!({"key": format!("v/{n}/{i:06}/{pad}"), "version": null}))
            .collect();
        let body = json!({"isolation": "serializable", "reads": reads,
                          "writes": [{"op": "put", "key": format!("v/w{n}"), "value": n}]});
        let a = node.call_as(Some(&victim), "POST", "/v1/commits", Some(body));
        assert_eq!(a.status, 200, "commit {n}: {a:?}");
        assert!(certifier_bytes(&node) <= budget);
        // The reader's transactions stay in use (not idle for the reaper).
        for (_, txn) in &open {
            let a = as_reader("GET", &format!("/v1/txns/{txn}/kv/v%2Fx"), None);
            assert_eq!(a.status, 200, "{txn}: {a:?}");
        }
    }
    for (isolation, txn) in &open {
        let a = as_reader("POST", &format!("/v1/txns/{txn}/commit"), None);
        if *isolation == "serializable" {
            a.assert_problem(409, "snapshot_too_old");
            assert_eq!(a.json()["retryable"], true, "{a:?}");
        } else {
            assert_eq!(a.status, 200, "{isolation} {txn}: {a:?}");
        }
    }
}

/// Review r14e N2: an ended transaction's handle is told only to the principal that began
/// it. Another principal with the same scopes gets 404 `unknown_transaction` on every step
/// of a committed and of an aborted handle — as for a handle never made, with no offset —
/// while the owner hears how each ended.
#[test]
fn an_ended_transactions_handle_is_unknown_to_another_principal() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--auth", "on"]);
    let scopes = ["kv:read:*", "kv:write:*"];
    let (alice, _) = token(&node, "alice", &scopes, None);
    let (mallory, _) = token(&node, "mallory", &scopes, None);
    let begin = || {
        let begun = node.call_as(Some(&alice), "POST", "/v1/txns", Some(json!({})));
        assert_eq!(begun.status, 201, "{begun:?}");
        begun.json()["txn"].as_str().unwrap().to_string()
    };
    let committed = begin();
    let path = format!("/v1/txns/{committed}/kv/k");
    let a = node.call_as(Some(&alice), "PUT", &path, Some(json!({"value": 1})));
    assert_eq!(a.status, 204, "{a:?}");
    let a = node.call_as(
        Some(&alice),
        "POST",
        &format!("/v1/txns/{committed}/commit"),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let offset = a.json()["offset"].as_u64().unwrap();
    let aborted = begin();
    let a = node.call_as(
        Some(&alice),
        "POST",
        &format!("/v1/txns/{aborted}/abort"),
        None,
    );
    assert_eq!(a.status, 204, "{a:?}");
    // Mallory's answers name the handle; with it blanked out, an ended handle's are a
    // never-made handle's, word for word.
    let never = format!("t{}", "0".repeat(32));
    let steps = [
        ("GET", "/kv/k", None),
        ("GET", "/kv?prefix=", None),
        ("PUT", "/kv/k", Some(json!({"value": 2}))),
        ("POST", "/commit", None),
        ("POST", "/abort", None),
    ];
    for (method, rest, body) in steps {
        let answer = |txn: &str| {
            let path = format!("/v1/txns/{txn}{rest}");
            let a = node.call_as(Some(&mallory), method, &path, body.clone());
            a.assert_problem(404, "unknown_transaction");
            a.body.replace(txn, "HANDLE")
        };
        let unknown = answer(never.as_str());
        for txn in [&committed, &aborted] {
            assert_eq!(answer(txn.as_str()), unknown, "{method} {rest}");
        }
    }
    let a = node.call_as(Some(&alice), "GET", &path, None);
    a.assert_problem(409, "transaction_committed");
    assert!(a.body.contains(&format!("offset {offset}")), "{a:?}");
    let a = node.call_as(
        Some(&alice),
        "GET",
        &format!("/v1/txns/{aborted}/kv/k"),
        None,
    );
    a.assert_problem(409, "transaction_aborted");
    assert_eq!(node.get("/v1/kv/k").json()["value"], 1);
}
