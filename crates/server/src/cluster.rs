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
//!          ── heartbeats (peers.rs): every other registered node probed every
//!             heartbeat_interval_ms (500); the clock watch: off the cluster's median
//!             beyond max_clock_offset_ms → no campaigning or leading, unready, writes
//!             refused; hearing only a minority of the cluster → no campaigning or leading
//!          ── certifier task (certifier.rs): a follower of `_txn`, campaigning to lead it
//!          ── groups: Groups::open on `_groups`, following it; the coordinator task
//!             (groups/coordinator.rs) campaigning to write it
//!          ─▶ ready
//!  shutdown ── leave (revoke the lease: gone from the list at once) → close the views → log
//! ```
//!
//! etcd holds no source of truth: while it is down the node keeps serving appends, reads
//! and views; only the node list (`GET /v1/cluster`) and the certifier's leader are unknown
//! (commits wait for a leader; a lapsed registration is renewed when etcd is back).
//! A follower forwards `POST /v1/commits` to the leader the election names, and the group
//! routes to the groups' coordinator.

use std::sync::Arc;
use std::time::Duration;

use logbook_api::client::{
    Client, ClientConfig, ClientError, ClientOptions, RawRequest, RetryPolicy, Verb,
};
use logbook_api::paths::route;
use logbook_api::txns::{CommitBody, Committed};
use logbook_jetstream::ack::Durability;
use logbook_jetstream::election::{Election, LeaderRecord};
use logbook_jetstream::membership::{
    Membership, MembershipError, MembershipSettings, NodeRecord, Registration,
};
use logbook_jetstream::{BackendSettings, ClientTls, JetStreamBackend};
use logbook_log::storage::DirLock;
use logbook_log::{FsyncPolicy, LogBackend, LogError};
use logbook_txn::TxnStoreOptions;
use logbook_views::Views;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::config::{ClusterConfig, EngineTls, ServerConfig};
use crate::deadline::AdaptiveTimeout;
use crate::error::{ApiError, ProblemCode};
use crate::rto::RtoSettings;
use crate::server_error::ServerError;
use crate::state::{AppState, ClusterMember, Forwarded, MemberFuture, Opened, TxnCell};
use crate::view_catalog::{VIEWS_STREAM, ViewCatalog};

/// The etcd prefix's cluster name: one Logbook cluster per etcd prefix and NATS account.
pub const CLUSTER_NAME: &str = "logbook";
/// What a node of this version serves.
pub const SERVES: [&str; 4] = ["appends", "reads", "views", "transactions"];
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
    let stop_certifier = stop.clone();
    let etcd = cluster.etcd_endpoints.join(",");
    let membership = retry(state, &mut stop, &format!("etcd at {etcd}"), || {
        let mut settings = MembershipSettings::new(cluster.etcd_endpoints.clone(), CLUSTER_NAME);
        settings.tls = cluster.etcd_tls.as_ref().map(client_tls);
        Membership::connect(settings)
    })
    .await?;
    let nats = cluster.nats_urls.join(",");
    let log = retry(state, &mut stop, &format!("NATS at {nats}"), || {
        let mut settings = BackendSettings::new(cluster.nats_urls.clone());
        settings.connect.tls = cluster.nats_tls.as_ref().map(client_tls);
        settings.monitor_urls = cluster.nats_monitor_urls.clone();
        settings.checkpoint_dir = Some(config.data_dir.join("request-ids"));
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
    let (durability, replicas) = (log.durability(), log.replicas());
    tracing::info!(monitor_urls = ?cluster.nats_monitor_urls,
        ack_guarantee = %durability.guarantee(replicas), "what an acknowledgment guarantees");
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
    // Every node answers the schema registry from `_schemas`, caught up on each request.
    let schemas = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            crate::schemas::SchemaRegistry::open(log.as_ref(), true)
        })
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?
        .map_err(|source| ServerError::OpenLog {
            dir: format!(
                "the schema registry (stream {})",
                crate::schemas::SCHEMAS_STREAM
            ),
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
    // Heartbeats and the clock watch start before the elected roles, which wait on it.
    let peer_ca_pem = peer_ca(config)?;
    let peers = Arc::new(crate::peers::Peers::new(crate::peers::PeerSettings {
        phi_threshold: f64::from(config.phi_threshold),
        heartbeat_interval_ms: config.heartbeat_interval_ms,
    }));
    let heartbeats = crate::peers::Heartbeats {
        peers: peers.clone(),
        membership: membership.clone(),
        node_id: cluster.node_id.clone(),
        peer_ca_pem: peer_ca_pem.clone(),
    };
    tokio::spawn(heartbeats.run(stop.clone()));
    let (unfit_tx, unfit) = watch::channel(None);
    tokio::spawn(crate::peers::watch_node(
        peers.clone(),
        config.max_clock_offset_ms,
        state.clone(),
        unfit_tx,
        stop.clone(),
    ));
    let election = membership.election(crate::certifier::ELECTION);
    let leader_record = LeaderRecord {
        node_id: cluster.node_id.clone(),
        advertise_url: cluster.advertise_url.clone(),
    };
    let cell = TxnCell::default();
    let certifier = crate::certifier::Certifier {
        log: log.clone(),
        node_id: cluster.node_id.clone(),
        cell: cell.clone(),
        options: TxnStoreOptions {
            open_txns_max: config.open_txns_max,
            snapshot_window_commits: config.snapshot_window_commits,
            certifier_bytes_max: usize::try_from(config.certifier_bytes_max).unwrap_or(usize::MAX),
            // JetStream acknowledges on a majority of replicas (decision 0010).
            fsync: FsyncPolicy::Never,
            elected: true,
            ..TxnStoreOptions::default()
        },
    };
    tokio::spawn(crate::elected::run(
        certifier,
        election.clone(),
        leader_record.clone(),
        unfit.clone(),
        stop_certifier.clone(),
    ));
    let groups = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || crate::groups::Groups::open(log, true))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(|source| ServerError::OpenLog {
                dir: format!(
                    "the consumer groups (stream {})",
                    crate::groups::GROUPS_STREAM
                ),
                source,
            })?
    };
    let groups_election = membership.election(crate::groups::coordinator::ELECTION);
    let coordinator = crate::groups::coordinator::Coordinator {
        groups: groups.clone(),
        node_id: cluster.node_id.clone(),
    };
    tokio::spawn(crate::elected::run(
        coordinator,
        groups_election.clone(),
        leader_record,
        unfit,
        stop_certifier,
    ));
    let member = EtcdMember {
        node_id: cluster.node_id.clone(),
        advertise_url: cluster.advertise_url.clone(),
        membership,
        election,
        groups_election,
        forwarders: std::sync::Mutex::new(Vec::new()),
        peer_ca_pem,
        peers,
        registration: tokio::sync::Mutex::new(Some(registration)),
        durability,
        replicas,
        _dir_lock: dir_lock,
    };
    let opened = Opened::clustered(log, views, view_catalog, Arc::new(member), cell, groups)
        .with_schemas(schemas);
    Ok((opened, tokens))
}

/// The engine client's TLS settings from the node's configuration.
fn client_tls(tls: &EngineTls) -> ClientTls {
    ClientTls {
        ca_cert: tls.ca_cert.clone(),
        identity: tls.client.clone(),
    }
}

/// The CA certificates (PEM) other nodes' `https://` URLs are checked against when this
/// node forwards to them: `tls_ca_cert`, else the node's own `tls_cert`; `None` without TLS
/// (the system's roots then check an `https://` leader).
fn peer_ca(config: &ServerConfig) -> Result<Option<Vec<u8>>, ServerError> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let path = files.peer_ca();
    std::fs::read(path).map(Some).map_err(|e| {
        ServerError::Tls(crate::tls::TlsError::File {
            setting: if files.ca_cert.is_some() {
                "tls_ca_cert"
            } else {
                "tls_cert"
            },
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })
    })
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
    advertise_url: String,
    membership: Membership,
    /// Where the certifier's leader is learnt.
    election: Election,
    /// Where the groups' coordinator is learnt.
    groups_election: Election,
    /// HTTP clients of the leaders forwarded to, with each one's adaptive timeout of
    /// forwarded commits (the last few, by URL).
    forwarders: std::sync::Mutex<Vec<Forwarder>>,
    /// The CA certificates an `https://` leader's certificate is checked against.
    peer_ca_pem: Option<Vec<u8>>,
    /// What the heartbeats know of the other nodes (peers.rs).
    peers: Arc<crate::peers::Peers>,
    registration: tokio::sync::Mutex<Option<Registration>>,
    /// What acknowledgments guarantee, as the NATS servers were last read.
    durability: Arc<Durability>,
    /// Replicas of the streams this node creates.
    replicas: u32,
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

/// The node `election` names now, as the API shows it; `what` names the role in the error.
async fn elected(
    election: &Election,
    what: &str,
) -> Result<Option<logbook_api::ops::ClusterLeader>, ApiError> {
    let leader = election.leader().await.map_err(|e| {
        ApiError::new(
            ProblemCode::MembershipUnavailable,
            format!("{what} is unknown: {e}"),
        )
        .retry_after(1)
    })?;
    Ok(leader.map(|l| logbook_api::ops::ClusterLeader {
        node_id: l.record.node_id,
        advertise_url: l.record.advertise_url,
        fencing_token: l.token,
    }))
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

    fn leader(
        &self,
    ) -> MemberFuture<'_, Result<Option<logbook_api::ops::ClusterLeader>, ApiError>> {
        Box::pin(elected(&self.election, "the certifier's leader"))
    }

    fn groups_coordinator(
        &self,
    ) -> MemberFuture<'_, Result<Option<logbook_api::ops::ClusterLeader>, ApiError>> {
        Box::pin(elected(&self.groups_election, "the groups' coordinator"))
    }

    fn forward_commit(
        &self,
        body: CommitBody,
        request_id: Option<String>,
        traceparent: Option<String>,
        authorization: Option<String>,
    ) -> MemberFuture<'_, Result<Committed, ApiError>> {
        Box::pin(async move {
            let request = RawRequest::new(Verb::Post, route::COMMITS.to_string())
                .json(&body)
                .map_err(|e| ApiError::internal(e.to_string()))?
                .request_id(request_id.as_deref())
                .traceparent(traceparent.as_deref())
                .authorization(authorization.as_deref());
            let keyed = request.request_id.is_some();
            let (body, leader) = self
                .forward(
                    &self.election,
                    "the certifier's leader",
                    request,
                    Wait::Adaptive,
                )
                .await?;
            serde_json::from_slice(&body).map_err(|e| {
                unknown_outcome(
                    format!("the leader {leader} answered a commit with a body that is not a commit: {e}"),
                    keyed,
                )
            })
        })
    }

    fn forward_to_coordinator(
        &self,
        request: Forwarded,
    ) -> MemberFuture<'_, Result<Vec<u8>, ApiError>> {
        Box::pin(async move {
            let verb = if request.method == axum::http::Method::GET {
                Verb::Get
            } else if request.method == axum::http::Method::PUT {
                Verb::Put
            } else if request.method == axum::http::Method::DELETE {
                Verb::Delete
            } else {
                Verb::Post
            };
            let mut raw = RawRequest::new(verb, request.path)
                .request_id(request.request_id.as_deref())
                .traceparent(request.traceparent.as_deref())
                .authorization(request.authorization.as_deref());
            raw.body = request.body;
            // A group request may wait on the coordinator (a join until the group settles),
            // so it is not held to the commits' round trips.
            let (body, _) = self
                .forward(
                    &self.groups_election,
                    "the groups' coordinator",
                    raw,
                    Wait::Ceiling,
                )
                .await?;
            Ok(body)
        })
    }

    fn peers(&self) -> Vec<logbook_api::ops::ClusterPeer> {
        self.peers.status()
    }

    fn ack_guarantee(&self) -> logbook_api::ops::ClusterAckGuarantee {
        let guarantee = self.durability.guarantee(self.replicas);
        let servers = self
            .durability
            .servers()
            .into_iter()
            .map(|s| {
                let (ok, error) = match s.read {
                    Some(Ok(d)) => (Some(d), None),
                    Some(Err(why)) => (None, Some(why)),
                    None => (None, None),
                };
                logbook_api::ops::NatsServerDurability {
                    monitor_url: s.monitor_url,
                    version: ok.as_ref().map(|d| d.version.clone()),
                    sync_always: ok.map(|d| d.sync_always),
                    error,
                }
            })
            .collect();
        logbook_api::ops::ClusterAckGuarantee {
            replicas: guarantee.replicas,
            fsynced: guarantee.fsynced,
            summary: guarantee.to_string(),
            servers,
        }
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

/// How many leaders' HTTP clients a node keeps.
const FORWARDERS_MAX: usize = 4;

/// The bounds of a forwarded commit's adaptive timeout: RFC 6298's 1 s floor (a commit's
/// round trip holds the leader's certification and a replicated append, so a stall of a
/// few hundred ms is no failure), the 5 s ceiling the fixed timeout was. A leader paused
/// or cut off is not waited for longer; the client learns the outcome is unknown and
/// retries with the same request id, which by then may reach a new leader.
const FORWARD_TIMEOUT: RtoSettings = RtoSettings {
    floor_us: 1_000_000,
    ceiling_us: 5_000_000,
    initial_us: 1_000_000,
    granularity_us: 1_000,
};

// The leader answers a forwarded commit whose snapshot it has not reached (422
// `snapshot_ahead`) well before the follower stops waiting for that answer (review r14d F2).
const _: () = assert!(
    2 * logbook_txn::limits::LEADER_SNAPSHOT_WAIT_MS * 1_000 <= FORWARD_TIMEOUT.floor_us,
    "the leader's snapshot wait must leave room in the forward timeout"
);

/// One leader's HTTP client and the adaptive timeout of the commits forwarded to it.
struct Forwarder {
    url: String,
    client: Client,
    commits: Arc<AdaptiveTimeout>,
}

/// How long a forwarded request waits for the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The adaptive timeout of commits to that leader.
    Adaptive,
    /// The ceiling (the client's own timeout).
    Ceiling,
}

impl EtcdMember {
    /// Sends `request`, marked as forwarded by this node, to the leader `election` names
    /// (`what` in errors); the body of its 2xx answer and its node id.
    async fn forward(
        &self,
        election: &Election,
        what: &str,
        request: RawRequest,
        wait: Wait,
    ) -> Result<(Vec<u8>, String), ApiError> {
        let leader = election
            .leader()
            .await
            .map_err(|e| leader_unavailable(format!("{what} is unknown: {e}")))?;
        let leader = match leader {
            Some(l) if l.record.advertise_url != self.advertise_url => l,
            Some(_) => {
                return Err(leader_unavailable(format!(
                    "this node is elected as {what} but not serving yet"
                )));
            }
            None => return Err(leader_unavailable(format!("no {what} is elected now"))),
        };
        // Not sent to a leader this node suspects: a request that cannot be answered would
        // wait out its timeout into an unknown outcome; refused here, it is known not done.
        if let Some(phi) = self.peers.suspected(&leader.record.node_id) {
            return Err(leader_unavailable(format!(
                "{what} {} is suspected by this node's heartbeats (φ = {phi:.1}): nothing was \
                 sent; retry, here once the election moves or the leader answers again, or on \
                 another node",
                leader.record.node_id
            )));
        }
        let (client, commits) = self.forwarder(&leader.record.advertise_url)?;
        let keyed = request.request_id.is_some();
        let sent = client.send_raw(request.forwarded_by(Some(&self.node_id)));
        let answer = match wait {
            Wait::Ceiling => sent.await,
            Wait::Adaptive => commits
                .run(sent, |outcome| match outcome {
                    Ok(_) | Err(ClientError::Problem { .. }) => true,
                    Err(_) => false,
                })
                .await
                .map_err(|t| {
                    unanswered(
                        &leader.record.node_id,
                        &format!("no answer within {} ms", t.after.as_millis()),
                        keyed,
                    )
                })?,
        };
        let answer = answer.map_err(|e| forwarded_error(e, &leader.record.node_id, keyed))?;
        Ok((answer.body, leader.record.node_id))
    }

    /// The HTTP client of the leader at `url` and the adaptive timeout of commits to it
    /// (made once, kept for the next requests).
    fn forwarder(&self, url: &str) -> Result<(Client, Arc<AdaptiveTimeout>), ApiError> {
        let mut clients = self.forwarders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = clients.iter().find(|f| f.url == url) {
            return Ok((f.client.clone(), f.commits.clone()));
        }
        // One attempt: the leader may have changed by the time a retry is due, and only the
        // election knows where the next attempt belongs (the client retries through us).
        let config = ClientConfig {
            request_timeout_ms: FORWARD_TIMEOUT.ceiling_us / 1_000,
            retry: RetryPolicy::none(),
            ..ClientConfig::default()
        };
        let options = ClientOptions {
            config,
            bearer_token: None,
            ca_cert_pem: self.peer_ca_pem.clone(),
        };
        let client = Client::with_options(url, &options)
            .map_err(|e| leader_unavailable(format!("the leader's URL {url}: {e}")))?;
        if clients.len() >= FORWARDERS_MAX {
            clients.remove(0);
        }
        let commits = Arc::new(AdaptiveTimeout::new(FORWARD_TIMEOUT));
        clients.push(Forwarder {
            url: url.to_string(),
            client: client.clone(),
            commits: commits.clone(),
        });
        Ok((client, commits))
    }
}

fn leader_unavailable(detail: String) -> ApiError {
    ApiError::new(ProblemCode::LeaderUnavailable, detail).retry_after(1)
}

/// The leader's problem as it answered it; a request (a commit, a group commit) sent without
/// an answer is unknown, never failed; one that never reached the leader changed nothing.
/// `keyed`: the request carried an `Idempotency-Key` ([`unknown_outcome`]).
fn forwarded_error(e: ClientError, leader: &str, keyed: bool) -> ApiError {
    match e {
        ClientError::Problem { problem, .. } => {
            let code = problem.code.parse().unwrap_or(ProblemCode::InternalError);
            let mut out = ApiError::new(code, problem.detail);
            out.field = problem.field;
            out.retryable = problem.retryable;
            out.location = problem.location;
            if code == ProblemCode::LeaderUnavailable {
                out.retry_after_s = Some(1);
            }
            out
        }
        ClientError::Unreachable { last, .. } => leader_unavailable(format!(
            "the leader {leader} cannot be reached ({last}); nothing was done, retry"
        )),
        // Nothing was sent: the handshake failed before the request.
        ClientError::Tls { detail, .. } => leader_unavailable(format!(
            "TLS with the leader {leader} failed ({detail}); nothing was done"
        )),
        other => unanswered(leader, &other.to_string(), keyed),
    }
}

/// A request sent to the leader whose answer did not come (`why`): it may or may not have
/// taken effect.
fn unanswered(leader: &str, why: &str, keyed: bool) -> ApiError {
    unknown_outcome(
        format!("the request was forwarded to the leader {leader} and its answer was lost ({why})"),
        keyed,
    )
}

/// 504 `outcome_unknown` for a forwarded request (`what` happened to it). With a request id
/// (`keyed`) a retry under the same `Idempotency-Key` is answered from the leader's
/// request-id table — the original's outcome, never a second application — so the problem
/// says to retry and is `retryable`. Without one a retry is a new request that may apply the
/// writes a second time: the problem says so and is not `retryable` (review r15 F3).
fn unknown_outcome(what: String, keyed: bool) -> ApiError {
    let next = if keyed {
        "it may or may not have taken effect: retry with the same Idempotency-Key to learn the \
         outcome"
    } else {
        "it may or may not have taken effect, and it carried no Idempotency-Key: a retry is a \
         new request that may apply it a second time; read the keys it writes to learn \
         whether it did"
    };
    let mut out = ApiError::new(ProblemCode::OutcomeUnknown, format!("{what}; {next}"));
    out.retryable = Some(keyed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_forward_invites_a_retry_only_under_its_idempotency_key() {
        let keyed = unanswered("node2", "no answer within 1000 ms", true);
        assert_eq!(keyed.code, ProblemCode::OutcomeUnknown);
        assert_eq!(keyed.status().as_u16(), 504);
        assert_eq!(keyed.retryable, Some(true));
        assert!(keyed.detail.contains("node2"), "{}", keyed.detail);
        assert!(
            keyed.detail.contains("no answer within 1000 ms"),
            "{}",
            keyed.detail
        );
        assert!(
            keyed.detail.contains("retry with the same Idempotency-Key"),
            "{}",
            keyed.detail
        );

        let bare = unanswered("node2", "no answer within 1000 ms", false);
        assert_eq!(bare.code, ProblemCode::OutcomeUnknown);
        assert_eq!(bare.status().as_u16(), 504);
        assert_eq!(
            bare.retryable,
            Some(false),
            "a blind retry may apply it twice"
        );
        assert!(
            !bare.detail.contains("retry with the same"),
            "{}",
            bare.detail
        );
        assert!(
            bare.detail.contains("no Idempotency-Key"),
            "{}",
            bare.detail
        );
        assert!(bare.detail.contains("a second time"), "{}", bare.detail);
    }

    #[test]
    fn a_lost_answer_is_unknown_and_a_refused_connection_is_not() {
        for keyed in [true, false] {
            let lost = ClientError::Transport {
                operation: "POST /v1/commits".into(),
                attempts: 1,
                last: "connection reset".into(),
            };
            let unknown = forwarded_error(lost, "node3", keyed);
            assert_eq!(unknown.code, ProblemCode::OutcomeUnknown);
            assert_eq!(unknown.retryable, Some(keyed));
            let refused = ClientError::Unreachable {
                server: "http://127.0.0.1:1".into(),
                attempts: 1,
                last: "connection refused".into(),
            };
            let refused = forwarded_error(refused, "node3", keyed);
            assert_eq!(refused.code, ProblemCode::LeaderUnavailable);
            assert_eq!(refused.retry_after_s, Some(1));
        }
    }
}
