//! What the in-process server tests share: the server on a data directory whose fsyncs can
//! be held (to keep a commit in flight), authentication on with the admin token sent for
//! each request, and a request helper.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers (`txn_races` uses them all, so `expect` would be unfulfilled there)"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use logbook_api::paths;
use logbook_log::sim::{Gate, GatedStorage};
use logbook_log::storage::OsStorage;
use logbook_log::{Log, LogOptions};
use logbook_server::state::{Lookup, Opened};
use logbook_server::{AppState, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------
// The real file system with data fsyncs a test can hold, then let through or fail
// (logbook_log::sim::GatedStorage).
// ---------------------------------------------------------------------------------------

/// Waits (without a time assertion) until `n` syncs wait at `gate`.
pub async fn until_waiting(gate: &Gate, n: usize) {
    until("an fsync waits at the gate", || gate.waiting() >= n).await;
}

/// Polls `cond` until it holds; panics after 60 s (a hung test, not a timing assertion).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..60_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("gave up waiting until {what}");
}

// ---------------------------------------------------------------------------------------
// The server in process.
// ---------------------------------------------------------------------------------------

pub struct Node {
    _dir: tempfile::TempDir,
    pub state: AppState,
    pub router: axum::Router,
    pub gate: Arc<Gate>,
}

pub fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let storage = GatedStorage::over(OsStorage);
    let gate = storage.gate.clone();
    let log = Log::open_with(
        dir.path().join("log"),
        LogOptions {
            storage: Arc::new(storage),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let txns = logbook_txn::TxnStore::open(&log, Default::default()).unwrap();
    let log = Arc::new(log);
    let views = logbook_views::Views::open(log.clone(), &dir.path().join("views")).unwrap();
    let state = AppState::new(ServerConfig::default());
    let backend: Arc<dyn logbook_log::LogBackend> = log.clone();
    let tokens = logbook_server::auth::Tokens::open(&backend, dir.path(), false).unwrap();
    state.set_tokens(Arc::new(tokens));
    state.set_opened(Opened::new(log, txns, Arc::new(views)));
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let (router, _) = logbook_server::api::router(state.clone());
    Node {
        _dir: dir,
        state,
        router: as_admin(router, token.trim()),
        gate,
    }
}

/// `router` with authentication on as the server runs it: a request without
/// `Authorization` gets the admin token's, so each test acts as the administrator unless it
/// sends credentials of its own.
fn as_admin(router: axum::Router, token: &str) -> axum::Router {
    let bearer = axum::http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    router.layer(axum::middleware::map_request(
        move |mut req: Request<Body>| {
            let bearer = bearer.clone();
            async move {
                let headers = req.headers_mut();
                if !headers.contains_key(axum::http::header::AUTHORIZATION) {
                    headers.insert(axum::http::header::AUTHORIZATION, bearer);
                }
                req
            }
        },
    ))
}

impl Node {
    /// Sends a request; returns the status and the JSON body (`null` for none).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        send(self.router.clone(), method, uri, key, body).await
    }

    /// Sends a request from a task of its own.
    pub fn spawn_call(
        &self,
        method: &'static str,
        uri: String,
        key: Option<&'static str>,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let router = self.router.clone();
        tokio::spawn(async move { send(router, method, &uri, key, None).await })
    }

    pub async fn begin(&self, body: Value) -> String {
        let (s, b) = self.call("POST", &paths::txns(), None, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["txn"].as_str().unwrap().to_string()
    }

    /// Begins a transaction that increments `key` by `by`.
    pub async fn increment_txn(&self, key: &str, by: i64) -> String {
        let t = self.begin(json!({})).await;
        let (s, b) = self
            .call(
                "POST",
                &paths::txn_increment(&t, key),
                None,
                Some(json!({ "by": by })),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        t
    }

    /// Requests waiting for the commit of transaction `t` to settle.
    pub fn waiting_on(&self, t: &str) -> usize {
        match self.state.txns().lookup(t) {
            Lookup::Registered(entry) => entry.waiting(),
            _ => 0,
        }
    }

    pub fn txns(&self) -> Arc<logbook_txn::TxnStore> {
        self.state.opened().unwrap().txns().unwrap().clone()
    }
}

pub async fn send(
    router: axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    let body = body.map(|b| b.to_string());
    send_with(router, method, uri, &headers, body.as_deref()).await
}

/// Sends a request with `headers` and a JSON `body` given as text (sent as is); returns
/// the status and the JSON body (`null` for none).
pub async fn send_with(
    router: axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
