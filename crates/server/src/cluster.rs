//! The cluster mode (feature `cluster`): the log on NATS JetStream, membership in etcd
//! (decisions 0010, 0011). A node connects to both, opens its views on the replicated log,
//! registers, and only then becomes ready: it never serves half-connected.
//!
//! ```text
//!  opening ── etcd: connect (retry with backoff; health says "etcd at …: why")
//!          ── NATS: JetStreamBackend::connect (retry likewise: "NATS at …: why")
//!          ── views: Views::open on the replicated log (<data-dir>/views), then the view
//!             catalog: views made to match the definitions in `_views`, and followed
//!          ── tokens: Tokens::open on `_auth` (the first node makes the admin token), followed
//!          ── etcd: register {node_id, advertise_url, serves} under a lease (keep-alive)
//!          ─▶ ready
//!  shutdown ── leave (revoke the lease: gone from the list at once) → close the views → log
//! ```
//!
//! etcd holds no source of truth: while it is down the node keeps serving appends, reads
//! and views; only the node list (`GET /v1/cluster`) is unknown and a lapsed registration
//! is renewed when etcd is back.

use std::sync::Arc;
use std::time::Duration;

use logbook_jetstream::membership::{
    Membership, MembershipError, MembershipSettings, NodeRecord, Registration,
};
use logbook_jetstream::{BackendSettings, JetStreamBackend};
use logbook_log::storage::DirLock;
use logbook_log::{LogBackend, LogError};
use logbook_views::Views;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::config::{ClusterConfig, ServerConfig};
use crate::error::{ApiError, ProblemCode};
use crate::server::ServerError;
use crate::state::{AppState, ClusterMember, MemberFuture, Opened};
use crate::view_catalog::{VIEWS_STREAM, ViewCatalog};

/// The etcd prefix's cluster name: one Logbook cluster per etcd prefix and NATS account.
pub const CLUSTER_NAME: &str = "logbook";
/// What a node of this version serves.
pub const SERVES: [&str; 3] = ["appends", "reads", "views"];
/// First pause between attempts to reach NATS or etcd, in ms; doubles up to
/// [`RETRY_PAUSE_MS_MAX`].
const RETRY_PAUSE_MS_MIN: u64 = 250;
/// Longest pause between attempts to reach NATS or etcd, in ms.
const RETRY_PAUSE_MS_MAX: u64 = 5_000;

/// Connects to etcd and NATS (retrying while either is unreachable, until `stop`), opens the
/// views and the token table on the replicated log (following `_auth` from then on) and
/// registers this node. `dir_lock` is the data directory's
/// lock, held as long as the node runs.
///
/// # Errors
/// [`ServerError::OpenLog`] for a failure retrying cannot fix (a catalog stream with other
/// settings, bad settings); [`ServerError::OpenViews`]; [`ServerError::OpenTokens`]; [`ServerError::Stopped`] when `stop`
/// turns true first.
pub(crate) async fn open(
    state: &AppState,
    config: &ServerConfig,
    cluster: &ClusterConfig,
    dir_lock: Box<dyn DirLock>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Opened, Arc<Tokens>), ServerError> {
    let etcd = cluster.etcd_endpoints.join(",");
    let membership = retry(state, &mut stop, &format!("etcd at {etcd}"), || {
        Membership::connect(MembershipSettings::new(
            cluster.etcd_endpoints.clone(),
            CLUSTER_NAME,
        ))
    })
    .await?;
    let nats = cluster.nats_urls.join(",");
    let log = retry(state, &mut stop, &format!("NATS at {nats}"), || {
        let settings = BackendSettings::new(cluster.nats_urls.clone());
        async move {
            match tokio::task::spawn_blocking(move || JetStreamBackend::connect(settings)).await {
                Ok(connected) => connected.map_err(Retry::Log),
                Err(e) => Err(Retry::Log(LogError::Backend {
                    backend: "jetstream",
                    detail: format!("the connecting task failed: {e}"),
                })),
            }
        }
    })
    .await?;
    let log: Arc<dyn LogBackend> = Arc::new(log);
    let views = {
        let (log, dir) = (log.clone(), config.data_dir.join("views"));
        tokio::task::spawn_blocking(move || Views::open(log, &dir))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(ServerError::OpenViews)?
    };
    let views = Arc::new(views);
    let view_catalog = {
        let (log, views) = (log.clone(), views.clone());
        tokio::task::spawn_blocking(move || ViewCatalog::open(log, views))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(|source| ServerError::OpenLog {
                dir: format!("the view catalog (stream {VIEWS_STREAM})"),
                source,
            })?
    };
    // Every node follows `_auth`: a token made on any node works on all of them.
    let tokens = {
        let (log, dir) = (log.clone(), config.data_dir.clone());
        tokio::task::spawn_blocking(move || Tokens::open(&log, &dir, true))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(ServerError::OpenTokens)?
    };
    let tokens = Arc::new(tokens);
    tokio::spawn(tokens.clone().follow());
    let record = NodeRecord {
        node_id: cluster.node_id.clone(),
        advertise_url: cluster.advertise_url.clone(),
        serves: SERVES.iter().map(|s| (*s).to_string()).collect(),
    };
    let registration = retry(state, &mut stop, &format!("etcd at {etcd}"), || {
        membership.register(record.clone())
    })
    .await?;
    tracing::info!(node_id = %cluster.node_id, nats = %nats, etcd = %etcd, "joined the cluster");
    let member = EtcdMember {
        node_id: cluster.node_id.clone(),
        membership,
        registration: tokio::sync::Mutex::new(Some(registration)),
        _dir_lock: dir_lock,
    };
    let opened = Opened::clustered(log, views, view_catalog, Arc::new(member));
    Ok((opened, tokens))
}

/// A failure of one attempt to reach an engine.
enum Retry {
    Log(LogError),
    Membership(MembershipError),
}

impl From<MembershipError> for Retry {
    fn from(e: MembershipError) -> Self {
        Retry::Membership(e)
    }
}

impl Retry {
    fn is_retryable(&self) -> bool {
        match self {
            Retry::Log(e) => matches!(e, LogError::Unavailable { .. }),
            Retry::Membership(e) => e.is_retryable(),
        }
    }

    fn into_server_error(self, what: &str) -> ServerError {
        match self {
            Retry::Log(source) => ServerError::OpenLog {
                dir: what.to_string(),
                source,
            },
            Retry::Membership(e) => ServerError::Membership(e.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Retry::Log(e) => e.to_string(),
            Retry::Membership(e) => e.to_string(),
        }
    }
}

/// Runs `attempt` until it succeeds, pausing 250 ms doubling to 5 s after each retryable
/// failure; the health answer says what it waits for (`what`: which engine, where) and why.
async fn retry<T, E, F, Fut>(
    state: &AppState,
    stop: &mut watch::Receiver<bool>,
    what: &str,
    mut attempt: F,
) -> Result<T, ServerError>
where
    E: Into<Retry>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(RETRY_PAUSE_MS_MIN);
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return Err(ServerError::Stopped);
        }
        let e: Retry = match attempt().await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(what, failures, "reached");
                }
                state.set_waiting_for(None);
                return Ok(v);
            }
            Err(e) => e.into(),
        };
        if !e.is_retryable() {
            return Err(e.into_server_error(what));
        }
        failures += 1;
        let why = e.describe();
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(what, error = %why, failures, retry_in_ms = pause.as_millis() as u64,
                "cannot reach it; not ready, retrying");
        }
        state.set_waiting_for(Some(format!("{what}: {why}")));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
        pause = (pause * 2).min(Duration::from_millis(RETRY_PAUSE_MS_MAX));
    }
}

impl From<LogError> for Retry {
    fn from(e: LogError) -> Self {
        Retry::Log(e)
    }
}

/// This node's registration in etcd.
struct EtcdMember {
    node_id: String,
    membership: Membership,
    registration: tokio::sync::Mutex<Option<Registration>>,
    /// The data directory (the views' state) is this node's alone while it runs.
    _dir_lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for EtcdMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMember")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ClusterMember for EtcdMember {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn nodes(&self) -> MemberFuture<'_, Result<Vec<logbook_api::ops::ClusterNode>, ApiError>> {
        Box::pin(async move {
            let nodes = self.membership.nodes().await.map_err(|e| {
                ApiError::new(
                    ProblemCode::MembershipUnavailable,
                    format!("the node list is unknown: {e}; appends, reads and views still work"),
                )
                .retry_after(1)
            })?;
            Ok(nodes
                .into_iter()
                .map(|n| logbook_api::ops::ClusterNode {
                    node_id: n.record.node_id,
                    advertise_url: n.record.advertise_url,
                    serves: n.record.serves,
                    healthy: n.healthy,
                    lease_ttl_remaining_s: n.lease_ttl_remaining_s,
                })
                .collect())
        })
    }

    fn leave(&self) -> MemberFuture<'_, ()> {
        Box::pin(async move {
            let registration = self.registration.lock().await.take();
            if let Some(r) = registration
                && let Err(e) = r.deregister().await
            {
                tracing::warn!(error = %e, "leaving the cluster: the registration lapses with its lease");
            }
        })
    }
}
