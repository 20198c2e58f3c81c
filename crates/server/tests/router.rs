//! The router in process (no sockets): the OpenAPI document holds every route and every
//! documented route answers; readiness stays false while the data directory is opening.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use logbook_server::state::Opened;
use logbook_server::{AppState, ServerConfig};
use tower::ServiceExt;

/// The routes of docs/DESIGN.md's "HTTP API (v1)" table.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/streams"),
    ("put", "/v1/streams/{stream}"),
    ("get", "/v1/streams/{stream}"),
    ("delete", "/v1/streams/{stream}"),
    ("post", "/v1/streams/{stream}/records"),
    ("get", "/v1/streams/{stream}/records"),
    ("get", "/v1/streams/{stream}/offsets"),
    ("get", "/v1/streams/{stream}/records/events"),
    ("put", "/v1/streams/{stream}/retention"),
    ("post", "/v1/txns"),
    ("get", "/v1/txns/{txn}/kv/{key}"),
    ("put", "/v1/txns/{txn}/kv/{key}"),
    ("delete", "/v1/txns/{txn}/kv/{key}"),
    ("get", "/v1/txns/{txn}/kv"),
    ("post", "/v1/txns/{txn}/kv/{key}/increment"),
    ("post", "/v1/txns/{txn}/commit"),
    ("post", "/v1/txns/{txn}/abort"),
    ("get", "/v1/kv/{key}"),
    ("get", "/v1/kv"),
    ("post", "/v1/kv/read"),
    ("get", "/v1/kv/read"),
    ("post", "/v1/commits"),
    ("get", "/v1/views"),
    ("put", "/v1/views/{view}"),
    ("get", "/v1/views/{view}"),
    ("delete", "/v1/views/{view}"),
    ("get", "/v1/views/{view}/rows/{key}"),
    ("get", "/v1/views/{view}/rows"),
    ("post", "/v1/views/{view}/rebuild"),
    ("post", "/v1/views/{view}/switch"),
    ("get", "/v1/derived-streams"),
    ("put", "/v1/derived-streams/{name}"),
    ("get", "/v1/derived-streams/{name}"),
    ("delete", "/v1/derived-streams/{name}"),
    ("get", "/v1/groups"),
    ("get", "/v1/groups/{group}"),
    ("delete", "/v1/groups/{group}"),
    ("post", "/v1/groups/{group}/members"),
    ("delete", "/v1/groups/{group}/members/{member}"),
    ("post", "/v1/groups/{group}/members/{member}/heartbeat"),
    ("post", "/v1/groups/{group}/members/{member}/commit"),
    ("post", "/v1/groups/{group}/reset"),
    ("get", "/v1/health"),
    ("get", "/v1/cluster"),
    ("get", "/v1/audit"),
    ("get", "/v1/limits"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("get", "/v1/data-subjects/{id}"),
    ("delete", "/v1/data-subjects/{id}"),
    ("get", "/v1/data-subjects/{id}/export"),
    ("get", "/v1/schema-registry/subjects"),
    ("post", "/v1/schema-registry/subjects/{subject}"),
    ("delete", "/v1/schema-registry/subjects/{subject}"),
    ("get", "/v1/schema-registry/subjects/{subject}/versions"),
    ("post", "/v1/schema-registry/subjects/{subject}/versions"),
    (
        "get",
        "/v1/schema-registry/subjects/{subject}/versions/{version}",
    ),
    (
        "delete",
        "/v1/schema-registry/subjects/{subject}/versions/{version}",
    ),
    (
        "get",
        "/v1/schema-registry/subjects/{subject}/versions/{version}/schema",
    ),
    ("get", "/v1/schema-registry/schemas/ids/{id}"),
    ("get", "/v1/schema-registry/schemas/ids/{id}/versions"),
    ("get", "/v1/schema-registry/schemas/types"),
    ("get", "/v1/schema-registry/config"),
    ("put", "/v1/schema-registry/config"),
    ("delete", "/v1/schema-registry/config"),
    ("get", "/v1/schema-registry/config/{subject}"),
    ("put", "/v1/schema-registry/config/{subject}"),
    ("delete", "/v1/schema-registry/config/{subject}"),
    (
        "post",
        "/v1/schema-registry/compatibility/subjects/{subject}/versions/{version}",
    ),
    (
        "post",
        "/v1/schema-registry/compatibility/subjects/{subject}/versions",
    ),
    ("get", "/v1/schema-registry/mode"),
];

fn opened_state(dir: &std::path::Path) -> AppState {
    let state = AppState::new(ServerConfig {
        auth: logbook_server::AuthMode::Off,
        ..ServerConfig::default()
    });
    let log = logbook_log::Log::open(dir.join("log")).unwrap();
    let txns = logbook_txn::TxnStore::open(&log, Default::default()).unwrap();
    let log = std::sync::Arc::new(log);
    let views = logbook_views::Views::open(log.clone(), &dir.join("views")).unwrap();
    state.set_opened(Opened::new(log, txns, std::sync::Arc::new(views)));
    state
}

async fn send(router: &axum::Router, method: &str, uri: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (router, doc) = logbook_server::api::router(opened_state(dir.path()));
    let doc = serde_json::to_value(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is missing from /openapi.json"
        );
    }
    let mut documented = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not in this test's list"
            );
            // A subscription to a stream that exists (an earlier PUT creates `s`) streams
            // until the client leaves: the push tail is asked about one that does not.
            let stream = if path.ends_with("/events") {
                "absent"
            } else {
                "s"
            };
            let uri = path
                .replace("{stream}", stream)
                .replace("{txn}", "t")
                .replace("{view}", "v")
                .replace("{key}", "k")
                .replace("{group}", "g")
                .replace("{member}", "m")
                .replace("{name}", "d")
                .replace("{subject}", "s-value")
                .replace("{version}", "1")
                .replace("{id}", "0011223344556677");
            let (status, body) = send(&router, method, &uri).await;
            assert!(
                body["code"] != "no_route" && body["code"] != "method_not_allowed",
                "{method} {uri}: {status} {body}"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
    // Every route but the open ones declares the scopes it needs (an undeclared one would
    // be the admin's alone).
    for (method, path) in ROUTES {
        let method: axum::http::Method = method.to_uppercase().parse().unwrap();
        let declared =
            logbook_server::auth::declared_needs(path, &method, &[], &"/".parse().unwrap());
        assert!(
            declared.is_some() || logbook_server::auth::OPEN_ROUTES.contains(path),
            "{method} {path} declares no scope in logbook_server::auth::declared_needs"
        );
    }
    // The document is served as it is generated.
    let (status, served) = send(&router, "get", "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, doc);
    let (status, body) = send(&router, "get", "/v1/nothing").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
}

#[tokio::test]
async fn not_ready_while_opening() {
    let state = AppState::new(ServerConfig {
        auth: logbook_server::AuthMode::Off,
        ..ServerConfig::default()
    });
    let (router, _) = logbook_server::api::router(state);
    let (status, body) = send(&router, "get", "/v1/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (body["ready"].as_bool(), body["state"].as_str()),
        (Some(false), Some("opening"))
    );
    let (status, _) = send(&router, "get", "/v1/health?probe=live").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&router, "get", "/v1/streams").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
    );
    let (status, _) = send(&router, "get", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_single_node_has_no_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = logbook_server::api::router(opened_state(dir.path()));
    let (status, body) = send(&router, "get", "/v1/cluster").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mode"], "single");
    assert!(body.get("node_id").is_none(), "{body}");
    assert_eq!(body["nodes"], serde_json::json!([]));
}

/// A node with authentication on, as `logbook serve` runs it: the admin's secret and those
/// of two tokens whose scopes cover almost nothing (`metrics:read` covers only `/metrics`,
/// `streams:read:zz` not `/metrics`), so every route has one that it refuses with 403.
fn authenticating_state(dir: &std::path::Path) -> (AppState, String, [String; 2]) {
    let state = AppState::new(ServerConfig::default());
    let log = logbook_log::Log::open(dir.join("log")).unwrap();
    let txns = logbook_txn::TxnStore::open(&log, Default::default()).unwrap();
    let log = std::sync::Arc::new(log);
    let views = logbook_views::Views::open(log.clone(), &dir.join("views")).unwrap();
    let backend: std::sync::Arc<dyn logbook_log::LogBackend> = log.clone();
    let tokens = logbook_server::auth::Tokens::open(&backend, dir, false).unwrap();
    let narrow = ["metrics:read", "streams:read:zz"].map(|scope| {
        tokens
            .create(logbook_api::auth::CreateToken {
                principal: "narrow".into(),
                scopes: vec![scope.into()],
                expires_in_ms: None,
            })
            .unwrap()
            .token
    });
    state.set_tokens(std::sync::Arc::new(tokens));
    state.set_opened(Opened::new(log, txns, std::sync::Arc::new(views)));
    let admin = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    (state, admin.trim().to_string(), narrow)
}

/// Sends `method uri` with `headers` and `body`; the status.
async fn status_of(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: &'static str,
) -> StatusCode {
    let mut req = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    // As hyper would: the edge sees a body by its declared length.
    if !body.is_empty() {
        req = req.header("content-length", body.len().to_string());
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    resp.status()
}

/// Issue 17, item 8: 23 statuses routes answered were not in /openapi.json. Every route is
/// sent what the edge and the shared extractors refuse — no credentials, credentials
/// without the scope, an unknown query parameter, a body that is not declared JSON, a
/// declared body over the limit, a foreign `Host`, a body that is not I-JSON — and what its
/// handler answers to an empty request; each status it answers must be documented for it.
#[tokio::test]
async fn every_status_a_route_answers_is_documented_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (state, admin, narrow) = authenticating_state(dir.path());
    let (router, doc) = logbook_server::api::router(state);
    let doc = serde_json::to_value(&doc).unwrap();
    let bearer = |secret: &str| ("authorization", format!("Bearer {secret}"));
    let json = ("content-type", "application/json".to_string());
    let mut missing = Vec::new();
    for (method, path) in ROUTES {
        let documented = &doc["paths"][*path][*method]["responses"];
        let takes_body = doc["paths"][*path][*method]["requestBody"].is_object();
        let open = logbook_server::auth::OPEN_ROUTES.contains(path);
        let stream = if path.ends_with("/events") {
            "absent"
        } else {
            "s"
        };
        let uri = path
            .replace("{stream}", stream)
            .replace("{txn}", "t")
            .replace("{view}", "v")
            .replace("{key}", "k")
            .replace("{group}", "g")
            .replace("{member}", "m")
            .replace("{subject}", "s-value")
            .replace("{version}", "1")
            .replace("{id}", "0011223344556677");
        let mut answered = Vec::new();
        let mut check = |what: &str, status: StatusCode| {
            answered.push(status);
            if documented.get(status.as_str()).is_none() {
                missing.push(format!("{method} {path}: {status} ({what})"));
            }
        };
        let as_admin = [bearer(&admin)];
        if !open {
            check(
                "no credentials",
                status_of(&router, method, &uri, &[], "").await,
            );
            let mut refused = StatusCode::OK;
            for secret in &narrow {
                refused = status_of(&router, method, &uri, &[bearer(secret)], "").await;
                if refused == StatusCode::FORBIDDEN {
                    break;
                }
            }
            let http_method: axum::http::Method = method.to_uppercase().parse().unwrap();
            let needs =
                logbook_server::auth::route_needs(path, &http_method, &[], &"/".parse().unwrap());
            if needs != [logbook_server::auth::scope::Need::Nothing] {
                assert_eq!(
                    refused,
                    StatusCode::FORBIDDEN,
                    "{method} {path}: a narrow token"
                );
            }
            check("a scope missing", refused);
        }
        let unknown_param = format!("{uri}?zzz=1");
        check(
            "an unknown query parameter",
            status_of(&router, method, &unknown_param, &as_admin, "").await,
        );
        let text = [bearer(&admin), ("content-type", "text/plain".into())];
        check(
            "a text body",
            status_of(&router, method, &uri, &text, "x").await,
        );
        let huge = [
            bearer(&admin),
            json.clone(),
            ("content-length", "17000000".into()),
        ];
        check(
            "a declared body over the limit",
            status_of(&router, method, &uri, &huge, "").await,
        );
        if *path != "/v1/health" {
            let foreign = [bearer(&admin), ("host", "evil.example".into())];
            check(
                "a foreign Host",
                status_of(&router, method, &uri, &foreign, "").await,
            );
        }
        let with_json = [bearer(&admin), json.clone()];
        if takes_body {
            let twice = r#"{"a": 1, "a": 2}"#;
            check(
                "a body not I-JSON",
                status_of(&router, method, &uri, &with_json, twice).await,
            );
            check(
                "an empty object",
                status_of(&router, method, &uri, &with_json, "{}").await,
            );
        }
        check(
            "no body",
            status_of(&router, method, &uri, &as_admin, "").await,
        );
        // The edge's refusals are what the test meant to provoke.
        for refusal in [400, 413, 415] {
            assert!(
                answered.iter().any(|s| s.as_u16() == refusal),
                "{method} {path} never answered {refusal}: {answered:?}"
            );
        }
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}
