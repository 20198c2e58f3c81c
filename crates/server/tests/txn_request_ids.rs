//! Commit request ids over HTTP, in process: a retry of the same transaction is answered
//! with the original commit (`duplicate: true`); another transaction reusing the request id
//! is 409 `request_id_conflict` naming `Idempotency-Key`, and commits nothing.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use logbook_api::paths;
use logbook_server::state::Opened;
use logbook_server::{AppState, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

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

/// Sends a request; returns the status, the content type and the JSON body.
async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, json)
}

/// Begins a serializable transaction, increments `key` by `by`, returns its id.
async fn increment_txn(router: &axum::Router, key: &str, by: i64) -> String {
    let (s, _, b) = send(
        router,
        "POST",
        &paths::txns(),
        None,
        Some(json!({"isolation": "serializable"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let t = b["txn"].as_str().unwrap().to_string();
    let (s, _, b) = send(
        router,
        "POST",
        &paths::txn_increment(&t, key),
        None,
        Some(json!({"by": by})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_request_id_reused_by_another_transaction_is_409_request_id_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = logbook_server::api::router(opened_state(dir.path()));
    let commit = |t: String| paths::txn_commit(&t);

    let t1 = increment_txn(&router, "c1", 1).await;
    let (s, _, first) = send(&router, "POST", &commit(t1), Some("rid-1"), None).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let offset = first["offset"].as_u64().unwrap();
    assert_eq!(first["incremented"]["c1"], 1);

    // Another transaction (another amount) under the same request id.
    let t2 = increment_txn(&router, "c1", 2).await;
    let (s, content_type, problem) =
        send(&router, "POST", &commit(t2.clone()), Some("rid-1"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "request_id_conflict");
    assert_eq!(problem["field"], "Idempotency-Key");
    assert_eq!(problem["retryable"], false);
    // The refused transaction is aborted, and nothing was committed.
    let (s, _, b) = send(&router, "GET", &paths::txn_key(&t2, "c1"), None, None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("transaction_aborted")),
        "{b}"
    );
    let (s, _, row) = send(&router, "GET", &paths::kv_key("c1"), None, None).await;
    assert_eq!(s, StatusCode::OK, "{row}");
    assert_eq!(
        (row["value"].clone(), row["version"].as_u64()),
        (json!(1), Some(offset))
    );

    // A retry of the same transaction: the original commit, `duplicate: true`.
    let t3 = increment_txn(&router, "c1", 1).await;
    let (s, _, again) = send(&router, "POST", &commit(t3), Some("rid-1"), None).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["offset"].as_u64(), Some(offset));
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["incremented"]["c1"], 1);
    let (_, _, row) = send(&router, "GET", &paths::kv_key("c1"), None, None).await;
    assert_eq!(row["value"], 1);
}
