//! The listener and the per-connection handler, the opening of the data directory, the
//! reaper, and graceful shutdown.
//!
//! ```text
//!  bind ─▶ accept loop ──────────────────────────────▶ shutdown signal
//!   │       │ admitted? (crate::admission: per-address  │ stop accepting (drop listener)
//!   │       │ cap, node-wide limit, probe reserve)      │
//!   │       │   no → 429 / 503, close                   │
//!   │       └ yes → connection task: TLS handshake      │ drain: in-flight requests finish,
//!   │            if configured (crate::tls), then hyper │   idle keep-alives close (grace)
//!   │            http1 (header timeout, heads measured  │
//!   │            by crate::head: too long → 414/431)    │
//!   └─▶ open data directory (blocking pool)             │ abort open transactions
//!         Log::open + TxnStore::open + Views::open      │ stop the view processors
//!           → ready                                     └ close the log: writers sync, exit
//! ```
//!
//! Readiness is false until the data directory is open: health answers 503 `opening` and
//! every other route 503 `not_ready`, so a load balancer does not send traffic to a node
//! still recovering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use logbook_log::storage::{DirLock, OsStorage, Storage};
use logbook_log::{Log, LogBackend, LogError, ScrubberThread};
use logbook_txn::{TxnStore, TxnStoreOptions};
use logbook_views::{AuditorConfig, AuditorThread, Views};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::config::ServerConfig;
use crate::server_error::ServerError;
use crate::state::{AppState, Opened, Phase};
use crate::tls::{self, Conn};
use crate::{head, limits};

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// With `tls_cert` and `tls_key`: every connection is TLS.
    tls: Option<tls::Acceptor>,
    state: AppState,
    /// The data directory's lock, taken at bind so a directory another process holds fails
    /// before "listening"; handed over to the log's open.
    dir_lock: Option<Box<dyn DirLock>>,
}

impl Server {
    /// Takes the data directory's lock (if the directory exists) and binds the listen address
    /// (port 0 picks a free port). The data directory is opened by [`Server::run`], while
    /// the server already answers health checks.
    ///
    /// # Errors
    /// [`ServerError::Tls`] when the TLS certificate or key cannot be used;
    /// [`ServerError::OpenLog`] with [`LogError::Locked`] when another process holds the data
    /// directory; [`ServerError::Bind`].
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let tls = match &config.tls {
            Some(files) => Some(tls::acceptor(files).map_err(ServerError::Tls)?),
            None => None,
        };
        let dir_lock = lock_data_dir(&config.data_dir)?;
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        Ok(Server {
            listener,
            tls,
            state: AppState::new(config),
            dir_lock,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The OS error, if the socket has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `https` when the server speaks TLS, else `http`: the scheme of its URL.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Opens the data directory, serves until `shutdown` resolves, then shuts down
    /// gracefully: stops accepting, lets in-flight requests finish (up to
    /// `shutdown_grace_ms`), aborts open transactions and closes the log (its writers sync
    /// every queued append).
    ///
    /// # Errors
    /// [`ServerError::OpenLog`] / [`ServerError::OpenTxns`] / [`ServerError::OpenViews`] /
    /// [`ServerError::OpenTokens`] if the data directory cannot be opened (the server stops at once); [`ServerError::Task`].
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            tls,
            state,
            dir_lock,
        } = self;
        let config = state.config().clone();
        let (router, _) = crate::api::router(state.clone());

        // Open the data directory in the background; readiness follows.
        let (open_failed_tx, mut open_failed) = oneshot::channel::<ServerError>();
        let (stop_opening, stop_rx) = tokio::sync::watch::channel(false);
        let opener = {
            let state = state.clone();
            let config = config.clone();
            let dir = config.data_dir.clone();
            tokio::spawn(async move {
                let opened = match config.cluster.clone() {
                    None => {
                        tokio::task::spawn_blocking(move || {
                            // The log takes the lock itself (a second lock in one process
                            // conflicts with the first): release it just before.
                            drop(dir_lock);
                            open(&config)
                        })
                        .await
                    }
                    Some(cluster) => {
                        Ok(open_cluster(&state, &config, &cluster, dir_lock, stop_rx).await)
                    }
                };
                match opened {
                    Ok(Ok((o, tokens))) => {
                        state.set_tokens(tokens);
                        tracing::info!(dir = %dir.display(), "data directory open; ready");
                        state.set_opened(o);
                    }
                    Ok(Err(e)) => {
                        state.set_phase(Phase::Failed);
                        let _ = open_failed_tx.send(e);
                    }
                    Err(e) => {
                        state.set_phase(Phase::Failed);
                        let _ = open_failed_tx.send(ServerError::Task(e.to_string()));
                    }
                }
            })
        };

        let reaper = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_millis(limits::REAPER_INTERVAL_MS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let n = state.txns().reap_idle();
                    if n > 0 {
                        let m = state.metrics();
                        m.aborts
                            .with_label_values(&["idle_timeout"])
                            .inc_by(n as u64);
                        m.open_txns.set(state.txns().len() as i64);
                    }
                }
            })
        };

        let admission = crate::admission::Admission::new(
            config.connections_max,
            config.connections_per_client_max,
        );
        let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
        let graceful = GracefulShutdown::new();
        let mut failure = None;
        // The opener's sender is dropped on success: the receiver then resolves once with an
        // error and must not be polled again.
        let mut opener_pending = true;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutdown requested: no new connections; draining");
                    break;
                }
                e = &mut open_failed, if opener_pending => {
                    opener_pending = false;
                    if let Ok(e) = e {
                        tracing::error!(error = %e, "opening the data directory failed");
                        failure = Some(e);
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // E.g. out of file descriptors: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let admitted = match admission.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(refusal) => {
                            // A TLS client would read a plain answer as a broken handshake,
                            // and a handshake is what a full server cannot afford: it is
                            // closed.
                            if tls.is_none() {
                                tokio::spawn(refuse_connection(tcp, refusal));
                            }
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let router = router.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        // At once, or once the idle connection asked to close has (a node
                        // full of idle keep-alives: crate::idle).
                        let mut slot = match admitted.slot().await {
                            Ok(slot) => slot,
                            Err(refusal) => {
                                if tls.is_none() {
                                    refuse_connection(tcp, refusal).await;
                                }
                                return;
                            }
                        };
                        // A probe connection answers one request, whose head comes quickly.
                        let (header_timeout, keep_alive) = if slot.is_probe() {
                            let probe =
                                Duration::from_millis(limits::PROBE_HEADER_READ_TIMEOUT_MS);
                            (header_timeout.min(probe), false)
                        } else {
                            (header_timeout, true)
                        };
                        let io = match tls {
                            None => Conn::Plain(tcp),
                            Some(acceptor) => {
                                match tls::handshake(tcp, acceptor, header_timeout).await {
                                    Some(io) => io,
                                    None => return,
                                }
                            }
                        };
                        // Every request head is measured below hyper (crate::head): one over
                        // the limits is answered outside hyper, as a problem.
                        let tracker =
                            Arc::new(head::Tracker::new(peer.ip(), slot.probe_only.clone()));
                        slot.watch(tracker.activity().clone());
                        let service = tower::ServiceExt::map_request(router, {
                            let tracker = tracker.clone();
                            move |req| tracker.track(req)
                        });
                        // An answer's end makes the connection idle again (crate::idle).
                        let service = tower::ServiceExt::map_response(service, {
                            let activity = tracker.activity().clone();
                            move |res: axum::response::Response| {
                                res.map(|body| crate::idle::AnswerBody::new(body, activity.clone()))
                            }
                        });
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            // hyper's timer also runs while a connection idles between
                            // requests: it is the keep-alive idle timeout too.
                            .header_read_timeout(header_timeout)
                            .max_buf_size(limits::HTTP1_BUF_BYTES)
                            // No `max_headers`: hyper's default is the same count
                            // (limits::HEADER_LINES_MAX), and the head guard refuses more
                            // lines before hyper parses them. Setting it makes hyper build a
                            // header array on the heap for every parse (~2,400 instructions
                            // a request, docs/benchmarks.md, issue 12).
                            .keep_alive(keep_alive)
                            // Answers to pipelined requests already read leave in one write.
                            .pipeline_flush(true)
                            .serve_connection(
                                TokioIo::new(head::HeadIo::new(io, tracker.clone())),
                                TowerToHyperService::new(service),
                            );
                        let ended = watcher.watch(conn).await;
                        if let Err(e) = &ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        if let Some(refused) = tracker.take_refused() {
                            refused.answer(ended.as_ref().err()).await;
                        }
                        drop(slot);
                    });
                }
            }
        }

        // Reads waiting for a consistency token (up to a minute each) would hold the drain
        // and then the runtime's exit (a blocking thread): they answer 503 `closed` now —
        // view reads at once, key-value reads at their next look (≤ 50 ms) at the phase.
        if let Ok(opened) = state.opened() {
            opened.views.cancel_waits();
        }
        // Stop accepting, drain.
        state.set_phase(if failure.is_some() {
            Phase::Failed
        } else {
            Phase::ShuttingDown
        });
        drop(listener);
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = config.shutdown_grace_ms,
                "connections still open after the grace period; closing anyway"
            );
        }
        reaper.abort();
        let aborted = state.txns().abort_all();
        if aborted > 0 {
            state
                .metrics()
                .aborts
                .with_label_values(&["shutdown"])
                .inc_by(aborted as u64);
            tracing::info!(aborted, "open transactions aborted at shutdown");
        }
        // The opener cannot be cancelled (recovery runs on a blocking thread): wait for it,
        // so that what it opened is closed properly. A cluster node still connecting stops
        // retrying.
        let _ = stop_opening.send(true);
        if let Err(e) = opener.await {
            tracing::warn!(error = %e, "opener task failed");
        }
        if let Some(opened) = state.take_opened() {
            close(opened, grace).await;
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("shut down cleanly");
                Ok(())
            }
        }
    }
}

/// Takes the lock of an existing data directory, the way the log will, so that a directory
/// in use fails `bind` (before the server says it is listening). A missing directory is
/// left to the log, which creates it.
fn lock_data_dir(dir: &std::path::Path) -> Result<Option<Box<dyn DirLock>>, ServerError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let path = dir.join("LOCK");
    let failed = |source| ServerError::OpenLog {
        dir: dir.display().to_string(),
        source,
    };
    match OsStorage.lock(&path) {
        Ok(lock) => Ok(Some(lock)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(failed(LogError::Locked { path }))
        }
        Err(source) => Err(failed(LogError::Io {
            op: "lock",
            path,
            source,
        })),
    }
}

/// A cluster node's log, views, token table and membership ([`crate::cluster`]); the data
/// directory is
/// created if missing and stays locked while the node runs.
#[cfg(feature = "cluster")]
async fn open_cluster(
    state: &AppState,
    config: &ServerConfig,
    cluster: &crate::config::ClusterConfig,
    dir_lock: Option<Box<dyn DirLock>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Opened, Arc<crate::auth::Tokens>), ServerError> {
    let dir_lock = match dir_lock {
        Some(lock) => lock,
        None => {
            let failed = |source| ServerError::OpenLog {
                dir: config.data_dir.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                failed(LogError::Io {
                    op: "create_dir_all",
                    path: config.data_dir.clone(),
                    source,
                })
            })?;
            lock_data_dir(&config.data_dir)?.ok_or_else(|| {
                failed(LogError::NoDataDirectory {
                    path: config.data_dir.clone(),
                })
            })?
        }
    };
    for dir in [config.data_dir.clone(), config.data_dir.join("views")] {
        private_dir(&dir).map_err(|source| ServerError::OpenLog {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    crate::cluster::open(state, config, cluster, dir_lock, stop).await
}

/// Without the cluster mode built in, a `[cluster]` configuration is refused.
#[cfg(not(feature = "cluster"))]
async fn open_cluster(
    _state: &AppState,
    _config: &ServerConfig,
    _cluster: &crate::config::ClusterConfig,
    _dir_lock: Option<Box<dyn DirLock>>,
    _stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Opened, Arc<crate::auth::Tokens>), ServerError> {
    Err(ServerError::ClusterNotBuilt)
}

/// Opens the log, the transaction store, the views (whose processors resume from their
/// applied offsets) and the token table (making the first admin token on first start).
fn open(config: &ServerConfig) -> Result<(Opened, Arc<crate::auth::Tokens>), ServerError> {
    let dir = config.data_dir.display().to_string();
    tracing::info!(%dir, "opening the data directory (recovery)");
    let log = Log::open(&config.data_dir).map_err(|source| ServerError::OpenLog {
        dir: dir.clone(),
        source,
    })?;
    private_dir(&config.data_dir).map_err(|source| ServerError::OpenLog {
        dir: dir.clone(),
        source,
    })?;
    let views_dir = config.data_dir.join("views");
    private_dir(&views_dir).map_err(|source| ServerError::OpenLog {
        dir: dir.clone(),
        source,
    })?;
    let options = TxnStoreOptions {
        open_txns_max: config.open_txns_max,
        snapshot_window_commits: config.snapshot_window_commits,
        certifier_bytes_max: usize::try_from(config.certifier_bytes_max).unwrap_or(usize::MAX),
        ..TxnStoreOptions::default()
    };
    let txns = TxnStore::open(&log, options).map_err(ServerError::OpenTxns)?;
    let log = Arc::new(log);
    let scrubber = match config.scrub_rate_mb_per_s {
        0 => None,
        rate => Some(
            ScrubberThread::spawn(Arc::downgrade(&log), rate * 1_000_000).map_err(|source| {
                ServerError::OpenLog {
                    dir: dir.clone(),
                    source,
                }
            })?,
        ),
    };
    let log: Arc<dyn LogBackend> = log;
    let tokens = crate::auth::Tokens::open(&log, &config.data_dir, false)
        .map_err(ServerError::OpenTokens)?;
    let views = Views::open(log.clone(), &views_dir).map_err(ServerError::OpenViews)?;
    let groups =
        crate::groups::Groups::open(log.clone(), false).map_err(|source| ServerError::OpenLog {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    let views = Arc::new(views);
    let auditor = match config.audit_interval_s {
        0 => None,
        interval_s => Some(
            AuditorThread::spawn(
                Arc::downgrade(&views),
                AuditorConfig {
                    interval_s,
                    records_per_s: config.audit_records_per_s,
                    memory_bytes_max: usize::try_from(config.audit_memory_bytes_max)
                        .unwrap_or(usize::MAX),
                    repair: config.audit_repair,
                },
            )
            .map_err(ServerError::OpenViews)?,
        ),
    };
    let schemas = crate::schemas::SchemaRegistry::open(log.as_ref(), false).map_err(|source| {
        ServerError::OpenLog {
            dir: config.data_dir.display().to_string(),
            source,
        }
    })?;
    let derived = {
        let catalog = crate::internal_stream::open_or_create(
            log.as_ref(),
            logbook_views::derived::CATALOG_STREAM,
            false,
        )
        .map_err(|source| ServerError::OpenLog {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
        logbook_views::derived::DerivedStreams::open(log.clone(), catalog)
            .map_err(ServerError::OpenViews)?
    };
    let privacy = crate::privacy::Privacy::open(
        log.as_ref(),
        &config.data_dir,
        config.master_key_file.as_deref(),
    )
    .map_err(ServerError::OpenPrivacy)?;
    let mut opened = Opened::new(log, txns, views)
        .with_groups(groups)
        .with_schemas(schemas)
        .with_derived(derived)
        .with_privacy(Arc::new(privacy));
    if let Some(scrubber) = scrubber {
        opened = opened.with_scrubber(scrubber);
    }
    if let Some(auditor) = auditor {
        opened = opened.with_auditor(auditor);
    }
    Ok((opened, Arc::new(tokens)))
}

/// Makes `dir` private to the owner (mode 0700), creating it if missing: what is below it
/// (the view store's files, created by a library with the process's umask) is then out of
/// other users' reach. A directory made by an older version with wider modes is narrowed,
/// with a warning.
fn private_dir(dir: &std::path::Path) -> Result<(), LogError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mode = logbook_log::storage::DIR_MODE;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o777 != mode => {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the data directory was open to other users; narrowing it to 0700"
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                LogError::Io {
                    op: "chmod",
                    path: dir.to_path_buf(),
                    source: e,
                }
            })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| LogError::Io {
                op: "create directory",
                path: dir.to_path_buf(),
                source: e,
            }),
        Err(e) => Err(LogError::Io {
            op: "look at",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Closes the log once the last request holding it is done (bounded by `grace`): every
/// partition writer syncs its queued appends and stops.
async fn close(opened: Opened, grace: Duration) {
    let view_catalog = opened.view_catalog.clone();
    let groups = opened.groups.clone();
    let scrubber = opened.scrubber.clone();
    let auditor = opened.auditor.clone();
    let derived = opened.derived.clone();
    let (log, txns, views, cluster) = opened.into_parts();
    drop(txns);
    // Leave the cluster first: other nodes stop listing this one at once.
    if let Some(member) = cluster {
        member.leave().await;
    }
    // Stop the view processors first (each finishes its current commit): they hold the log.
    // The view catalog's follower, which changes the views, stops before them.
    let stopped = tokio::task::spawn_blocking(move || {
        if let Some(catalog) = view_catalog {
            catalog.stop();
        }
        // The scrubber reads the log: it finishes its step and stops. The view auditor
        // gives up its audit under way.
        if let Some(scrubber) = scrubber {
            scrubber.stop();
        }
        if let Some(auditor) = auditor {
            auditor.stop();
        }
        // The groups' expiry thread appends to the log: stopped before it closes.
        if let Some(groups) = groups {
            groups.close();
        }
        // The derived streams' processors append to the log: stopped before it closes.
        if let Some(derived) = derived {
            derived.close();
        }
        views.close();
        drop(views);
    })
    .await;
    if let Err(e) = stopped {
        tracing::error!(error = %e, "stopping the view processors failed");
    }
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Nothing else can take a new handle: the state no longer holds the log.
        if Arc::strong_count(&log) == 1 {
            // Dropping the last handle closes the log (the writers sync and stop): a
            // blocking wait, so off the runtime's workers.
            let closed = tokio::task::spawn_blocking(move || drop(log)).await;
            if let Err(e) = closed {
                tracing::error!(error = %e, "closing the log failed");
            } else {
                tracing::info!("log closed");
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "the log is still in use after the grace period; it closes when the last request ends"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers a connection that was not admitted ([`crate::admission`]: 429 or 503) with its
/// problem and closes it.
async fn refuse_connection(mut tcp: TcpStream, refusal: crate::error::ApiError) {
    let status = refusal.status();
    let status_line = format!(
        "{} {}",
        status.as_str(),
        status.canonical_reason().unwrap_or_default()
    );
    crate::error::answer_and_close(&mut tcp, &status_line, "retry-after: 1\r\n", refusal).await;
}
