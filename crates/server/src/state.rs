//! What every handler shares: the opened data directory (once recovery is done), the
//! registry of interactive transactions, metrics and the request limiter.
//!
//! ```text
//!   AppState ── phase: opening → ready → shutting_down   (readiness)
//!      ├── opened: Log + TxnStore + Views  (None until recovery finished; taken at shutdown)
//!      ├── txns: "h-<n>" → OpenTxn         (bounded; the reaper aborts idle ones)
//!      ├── requests: Semaphore             (bounded in-flight requests)
//!      └── metrics
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use logbook_log::Log;
use logbook_txn::{Txn, TxnStore};
use logbook_views::Views;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::{ApiError, ProblemCode};
use crate::limits;
use crate::metrics::Metrics;

/// The opened data directory.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The log.
    pub log: Arc<Log>,
    /// The transaction store on the log's `_txn` stream.
    pub txns: Arc<TxnStore>,
    /// The views of the data directory (`<data-dir>/views`), their processors running.
    pub views: Arc<Views>,
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Recovering the data directory; only health and metrics answer.
    Opening = 0,
    /// Serving.
    Ready = 1,
    /// Draining in-flight requests before closing the log.
    ShuttingDown = 2,
    /// Opening the data directory failed; the server is about to exit.
    Failed = 3,
}

impl Phase {
    /// The name used in health responses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Opening => "opening",
            Phase::Ready => "ready",
            Phase::ShuttingDown => "shutting_down",
            Phase::Failed => "failed",
        }
    }
}

/// Shared server state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    phase: AtomicU8,
    opened: RwLock<Option<Opened>>,
    txns: TxnRegistry,
    requests: Arc<Semaphore>,
    metrics: Metrics,
}

impl AppState {
    /// State for `config`, not yet ready.
    pub fn new(config: ServerConfig) -> Self {
        let txns = TxnRegistry::new(
            config.open_txns_max,
            Duration::from_millis(config.txn_idle_timeout_ms),
        );
        AppState {
            inner: Arc::new(Inner {
                requests: Arc::new(Semaphore::new(config.requests_max)),
                config,
                phase: AtomicU8::new(Phase::Opening as u8),
                opened: RwLock::new(None),
                txns,
                metrics: Metrics::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The interactive transactions.
    pub fn txns(&self) -> &TxnRegistry {
        &self.inner.txns
    }

    /// The in-flight request limiter.
    pub fn requests(&self) -> &Arc<Semaphore> {
        &self.inner.requests
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Acquire) {
            0 => Phase::Opening,
            1 => Phase::Ready,
            2 => Phase::ShuttingDown,
            _ => Phase::Failed,
        }
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.inner.phase.store(phase as u8, Ordering::Release);
        self.inner
            .metrics
            .ready
            .set(i64::from(phase == Phase::Ready));
    }

    /// Installs the opened data directory and becomes ready.
    pub fn set_opened(&self, opened: Opened) {
        *self.inner.opened.write().unwrap_or_else(|e| e.into_inner()) = Some(opened);
        self.set_phase(Phase::Ready);
    }

    /// Takes the data directory out (at shutdown): requests after this get 503.
    pub fn take_opened(&self) -> Option<Opened> {
        self.inner
            .opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The data directory, or 503 `not_ready` while it is being opened or after shutdown
    /// began.
    ///
    /// # Errors
    /// [`ApiError::not_ready`].
    pub fn opened(&self) -> Result<Opened, ApiError> {
        let guard = self.inner.opened.read().unwrap_or_else(|e| e.into_inner());
        match (&*guard, self.phase()) {
            (Some(o), Phase::Ready) => Ok(o.clone()),
            (_, phase) => Err(ApiError::not_ready(format!(
                "the server is {}; retry shortly",
                phase.name().replace('_', " ")
            ))),
        }
    }
}

/// An interactive transaction held between requests.
#[derive(Debug)]
pub struct OpenTxn {
    /// Its handle (`t<boot>-<n>`).
    pub id: String,
    /// The transaction; `None` once committed, aborted or reaped. Requests on one
    /// transaction take turns on this lock.
    pub txn: Arc<tokio::sync::Mutex<Option<Txn>>>,
    last_used_ms: AtomicU64,
}

/// The interactive transactions of a server: bounded in number, aborted when idle.
#[derive(Debug)]
pub struct TxnRegistry {
    open: Mutex<HashMap<String, Arc<OpenTxn>>>,
    /// Recently reaped handles, oldest first, so late requests hear "expired".
    reaped: Mutex<(HashSet<String>, VecDeque<String>)>,
    max: usize,
    idle: Duration,
    epoch: Instant,
    /// Distinguishes handles of this process from those of an earlier one.
    boot: u32,
}

impl TxnRegistry {
    fn new(max: usize, idle: Duration) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        TxnRegistry {
            open: Mutex::new(HashMap::new()),
            reaped: Mutex::new((HashSet::new(), VecDeque::new())),
            max,
            idle,
            epoch: Instant::now(),
            boot: h.finish() as u32,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks there is room for one more.
    ///
    /// # Errors
    /// 429 `too_many_transactions`.
    pub fn check_room(&self) -> Result<(), ApiError> {
        if self.len() >= self.max {
            return Err(too_many(self.max));
        }
        Ok(())
    }

    /// Registers a begun transaction and returns its handle.
    ///
    /// # Errors
    /// 429 `too_many_transactions` (the transaction is then dropped, i.e. aborted).
    pub fn insert(&self, txn: Txn) -> Result<Arc<OpenTxn>, ApiError> {
        let id = format!("t{:08x}-{}", self.boot, txn.id());
        let entry = Arc::new(OpenTxn {
            id: id.clone(),
            txn: Arc::new(tokio::sync::Mutex::new(Some(txn))),
            last_used_ms: AtomicU64::new(self.now_ms()),
        });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.max {
            return Err(too_many(self.max));
        }
        open.insert(id, entry.clone());
        Ok(entry)
    }

    /// An open transaction by handle; marks it used.
    ///
    /// # Errors
    /// 410 `transaction_expired` for a reaped one, 404 `unknown_transaction` otherwise.
    pub fn get(&self, id: &str) -> Result<Arc<OpenTxn>, ApiError> {
        let found = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        match found {
            Some(t) => {
                self.touch(&t);
                Ok(t)
            }
            None if self
                .reaped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .contains(id) =>
            {
                Err(ApiError::new(
                    ProblemCode::TransactionExpired,
                    format!(
                        "transaction {id} was idle longer than {} ms and was aborted; begin a new one",
                        self.idle.as_millis()
                    ),
                )
                .field("txn"))
            }
            None => Err(ApiError::new(
                ProblemCode::UnknownTransaction,
                format!("no open transaction {id:?} (committed, aborted, or from before a restart)"),
            )
            .field("txn")),
        }
    }

    /// Marks a transaction used now.
    pub fn touch(&self, t: &OpenTxn) {
        t.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Forgets a transaction (after commit or abort).
    pub fn remove(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Aborts every transaction idle longer than the idle timeout and not in use by a
    /// request right now. Returns how many were aborted.
    pub fn reap_idle(&self) -> usize {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let candidates: Vec<Arc<OpenTxn>> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|t| now.saturating_sub(t.last_used_ms.load(Ordering::Relaxed)) > idle_ms)
            .cloned()
            .collect();
        let mut reaped = 0;
        for t in candidates {
            // In use by a request: not idle.
            let Ok(mut guard) = t.txn.try_lock() else {
                continue;
            };
            if now.saturating_sub(t.last_used_ms.load(Ordering::Relaxed)) <= idle_ms {
                continue;
            }
            if let Some(txn) = guard.take() {
                txn.abort();
                reaped += 1;
            }
            drop(guard);
            self.remove(&t.id);
            let mut r = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
            if r.0.insert(t.id.clone()) {
                r.1.push_back(t.id.clone());
            }
            while r.1.len() > limits::REAPED_TXNS_REMEMBERED {
                if let Some(old) = r.1.pop_front() {
                    r.0.remove(&old);
                }
            }
            tracing::info!(txn = %t.id, idle_ms, "idle transaction aborted");
        }
        reaped
    }

    /// Aborts every open transaction (shutdown). Returns how many.
    pub fn abort_all(&self) -> usize {
        let all: Vec<Arc<OpenTxn>> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        let mut n = 0;
        for t in all {
            if let Ok(mut guard) = t.txn.try_lock()
                && let Some(txn) = guard.take()
            {
                txn.abort();
                n += 1;
            }
        }
        n
    }
}

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        ProblemCode::TooManyTransactions,
        format!("{max} interactive transactions are open, the limit; commit or abort some"),
    )
    .retry_after(1)
}
