//! What the in-process server tests share: the server on a data directory whose fsyncs can
//! be held (to keep a commit in flight), and a request helper.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers (`txn_races` uses them all, so `expect` would be unfulfilled there)"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use logbook_log::storage::{DirLock, OpenMode, OsStorage, Storage, StorageFile};
use logbook_log::{Log, LogOptions};
use logbook_server::state::{Lookup, Opened};
use logbook_server::{AppState, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------
// A file system whose data fsyncs can be held, then let through or failed.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct GateState {
    /// Syncs wait while this is true.
    held: bool,
    /// Syncs let through after a hold fail (an I/O error) when this is true.
    fail: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
    /// Syncs waiting at the gate right now.
    waiting: Arc<AtomicUsize>,
}

impl Gate {
    pub fn hold(&self) {
        self.state.0.lock().unwrap().held = true;
    }
    pub fn release(&self, fail: bool) {
        let mut s = self.state.0.lock().unwrap();
        s.held = false;
        s.fail = fail;
        self.state.1.notify_all();
    }
    /// Waits (without a time assertion) until `n` syncs wait at the gate.
    pub async fn until_waiting(&self, n: usize) {
        until("an fsync waits at the gate", || {
            self.waiting.load(Ordering::SeqCst) >= n
        })
        .await;
    }
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

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Gate,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        let (lock, cv) = &*self.gate.state;
        let mut s = lock.lock().unwrap();
        if s.held {
            self.gate.waiting.fetch_add(1, Ordering::SeqCst);
            while s.held {
                s = cv.wait(s).unwrap();
            }
            self.gate.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if s.fail {
            return Err(io::Error::other("injected fsync failure"));
        }
        drop(s);
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

#[derive(Debug)]
struct GatedStorage(Gate);

impl Storage for GatedStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        OsStorage.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        OsStorage.is_dir(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(GatedFile {
            inner: OsStorage.open(path, mode)?,
            gate: self.0.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        OsStorage.lock(path)
    }
}

// ---------------------------------------------------------------------------------------
// The server in process.
// ---------------------------------------------------------------------------------------

pub struct Node {
    _dir: tempfile::TempDir,
    pub state: AppState,
    pub router: axum::Router,
    pub gate: Gate,
}

pub fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::default();
    let log = Log::open_with(
        dir.path().join("log"),
        LogOptions {
            storage: Arc::new(GatedStorage(gate.clone())),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let txns = logbook_txn::TxnStore::open(&log, Default::default()).unwrap();
    let log = Arc::new(log);
    let views = logbook_views::Views::open(log.clone(), &dir.path().join("views")).unwrap();
    let state = AppState::new(ServerConfig::default());
    state.set_opened(Opened {
        log,
        txns,
        views: Arc::new(views),
    });
    let (router, _) = logbook_server::api::router(state.clone());
    Node {
        _dir: dir,
        state,
        router,
        gate,
    }
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
        let (s, b) = self.call("POST", "/v1/txns", None, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["txn"].as_str().unwrap().to_string()
    }

    /// Begins a transaction that increments `key` by `by`.
    pub async fn increment_txn(&self, key: &str, by: i64) -> String {
        let t = self.begin(json!({})).await;
        let (s, b) = self
            .call(
                "POST",
                &format!("/v1/txns/{t}/kv/{key}/increment"),
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
        self.state.opened().unwrap().txns
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
