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
    ("get", "/v1/groups"),
    ("get", "/v1/groups/{group}"),
    ("post", "/v1/groups/{group}/members"),
    ("delete", "/v1/groups/{group}/members/{member}"),
    ("post", "/v1/groups/{group}/members/{member}/heartbeat"),
    ("post", "/v1/groups/{group}/members/{member}/commit"),
    ("post", "/v1/groups/{group}/reset"),
    ("get", "/v1/health"),
    ("get", "/v1/cluster"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
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
