//! What every handler shares: the opened data directory (once recovery is done), the
//! registry of interactive transactions, metrics and the request limiter.
//!
//! ```text
//!   AppState ── phase: opening → ready → shutting_down   (readiness)
//!      ├── opened: Log + TxnStore + Views  (None until recovery finished; taken at shutdown)
//!      ├── txns: "t<32 hex>" → OpenTxn     (bounded; the reaper aborts idle ones)
//!      ├── tokens: the token table         (set when the data directory is open)
//!      ├── requests: Semaphore             (bounded in-flight requests)
//!      ├── long_polls: Semaphore           (waiting reads, apart from requests)
//!      ├── principal_*: quota::Counts      (per-principal requests, connections)
//!      └── metrics
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use logbook_log::{LogBackend, ScrubberThread};
use logbook_txn::{CommitOutcome, Txn, TxnStore};
use logbook_views::{AuditorThread, Views};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::{ApiError, ProblemCode};
use crate::limits;
use crate::metrics::Metrics;
use crate::view_catalog::ViewCatalog;

/// The opened data directory (or, on a cluster node, the replicated log and the local views).
#[derive(Debug, Clone)]
pub struct Opened {
    /// The log.
    pub log: Arc<dyn LogBackend>,
    /// The transaction store on the log's `_txn` stream.
    txns: TxnSlot,
    /// The views of the data directory (`<data-dir>/views`), their processors running.
    pub views: Arc<Views>,
    /// This node's membership of its cluster; `None` on a single node.
    pub cluster: Option<Arc<dyn ClusterMember>>,
    /// The view definitions in the replicated log, on a cluster node: views are created and
    /// dropped through it. `None` on a single node.
    pub view_catalog: Option<Arc<ViewCatalog>>,
    /// The consumer groups (derived from `_groups`; on a cluster node written by the elected
    /// coordinator only); `None` where the server was opened without them.
    pub groups: Option<Arc<crate::groups::Groups>>,
    /// The segment scrubber over the embedded log (`logbook_log::scrub`); `None` on a cluster
    /// node and when `scrub_rate_mb_per_s` is 0.
    pub scrubber: Option<Arc<ScrubberThread>>,
    /// The view auditor (`logbook_views::AuditorThread`); `None` on a cluster node and when
    /// `audit_interval_s` is 0.
    pub auditor: Option<Arc<AuditorThread>>,
    /// The schema registry (derived from `_schemas`); `None` where the server was opened
    /// without it.
    pub schemas: Option<Arc<crate::schemas::SchemaRegistry>>,
    /// The derived streams (catalog `_derived`; decision 0031); `None` on a cluster node
    /// (planned there: one node per derived stream by an etcd lease).
    pub derived: Option<Arc<logbook_views::derived::DerivedStreams>>,
    /// Personal data: the key store and the erasures (decision 0030); disabled (no key
    /// store) unless opened with one.
    pub privacy: Arc<crate::privacy::Privacy>,
}

impl Opened {
    /// A single node: the embedded log, its transaction store and the views.
    pub fn new(log: Arc<dyn LogBackend>, txns: Arc<TxnStore>, views: Arc<Views>) -> Opened {
        Opened {
            log,
            txns: TxnSlot::Single(txns),
            views,
            cluster: None,
            view_catalog: None,
            groups: None,
            scrubber: None,
            auditor: None,
            schemas: None,
            derived: None,
            privacy: Arc::new(crate::privacy::Privacy::disabled()),
        }
    }

    /// With the key store and the erasures.
    pub fn with_privacy(self, privacy: Arc<crate::privacy::Privacy>) -> Opened {
        Opened { privacy, ..self }
    }

    /// The same, with the view auditor running.
    pub fn with_auditor(self, auditor: AuditorThread) -> Opened {
        Opened {
            auditor: Some(Arc::new(auditor)),
            ..self
        }
    }

    /// The same, with the segment scrubber running.
    pub fn with_scrubber(self, scrubber: ScrubberThread) -> Opened {
        Opened {
            scrubber: Some(Arc::new(scrubber)),
            ..self
        }
    }

    /// The same, with consumer groups.
    pub fn with_groups(self, groups: Arc<crate::groups::Groups>) -> Opened {
        Opened {
            groups: Some(groups),
            ..self
        }
    }

    /// The same, with the derived streams running.
    pub fn with_derived(self, derived: logbook_views::derived::DerivedStreams) -> Opened {
        Opened {
            derived: Some(Arc::new(derived)),
            ..self
        }
    }

    /// The derived streams.
    ///
    /// # Errors
    /// 501 `not_supported_in_cluster` on a cluster node.
    pub fn derived(&self) -> Result<Arc<logbook_views::derived::DerivedStreams>, ApiError> {
        self.derived.clone().ok_or_else(|| {
            ApiError::new(
                ProblemCode::NotSupportedInCluster,
                "derived streams are not available on a cluster node yet",
            )
        })
    }

    /// The same, with the schema registry.
    pub fn with_schemas(self, schemas: Arc<crate::schemas::SchemaRegistry>) -> Opened {
        Opened {
            schemas: Some(schemas),
            ..self
        }
    }

    /// The schema registry.
    ///
    /// # Errors
    /// 503 `not_ready` where the server was opened without it.
    pub fn schemas(&self) -> Result<Arc<crate::schemas::SchemaRegistry>, ApiError> {
        self.schemas
            .clone()
            .ok_or_else(|| ApiError::not_ready("the schema registry is not open on this server"))
    }

    /// The consumer groups.
    ///
    /// # Errors
    /// 501 `not_supported_in_cluster` where the server was opened without them.
    pub fn groups(&self) -> Result<Arc<crate::groups::Groups>, ApiError> {
        self.groups.clone().ok_or_else(|| {
            ApiError::new(
                ProblemCode::NotSupportedInCluster,
                "consumer groups are not available on this server",
            )
        })
    }

    /// A node of a cluster: the replicated log, the views, the transaction store the
    /// node's certifier task keeps in `txns` (a follower, or the elected leader) and the
    /// consumer groups (following `_groups`, or writing it as the elected coordinator).
    pub fn clustered(
        log: Arc<dyn LogBackend>,
        views: Arc<Views>,
        view_catalog: Arc<ViewCatalog>,
        member: Arc<dyn ClusterMember>,
        txns: TxnCell,
        groups: Arc<crate::groups::Groups>,
    ) -> Opened {
        Opened {
            log,
            txns: TxnSlot::Cluster(txns),
            views,
            cluster: Some(member),
            view_catalog: Some(view_catalog),
            groups: Some(groups),
            scrubber: None,
            auditor: None,
            schemas: None,
            derived: None,
            privacy: Arc::new(crate::privacy::Privacy::disabled()),
        }
    }

    /// The transaction store (on a cluster node, the one in use now: a follower's or the
    /// leader's).
    ///
    /// # Errors
    /// 503 `leader_unavailable` on a cluster node whose store is not open yet.
    pub fn txns(&self) -> Result<Arc<TxnStore>, ApiError> {
        match &self.txns {
            TxnSlot::Single(store) => Ok(store.clone()),
            TxnSlot::Cluster(cell) => cell
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemCode::LeaderUnavailable,
                        "this node's transaction store is opening (replaying the commit stream)",
                    )
                    .retry_after(1)
                }),
        }
    }

    /// Takes the parts out, for closing: log, transaction store, views, membership.
    #[expect(
        clippy::type_complexity,
        reason = "one caller destructures the four parts at once; a struct would only name them twice"
    )]
    pub fn into_parts(
        self,
    ) -> (
        Arc<dyn LogBackend>,
        Option<Arc<TxnStore>>,
        Arc<Views>,
        Option<Arc<dyn ClusterMember>>,
    ) {
        let txns = match self.txns {
            TxnSlot::Single(store) => Some(store),
            TxnSlot::Cluster(cell) => cell.write().unwrap_or_else(|e| e.into_inner()).take(),
        };
        (self.log, txns, self.views, self.cluster)
    }
}

/// A cluster node's transaction store, replaced when the node steps up or down.
pub type TxnCell = Arc<RwLock<Option<Arc<TxnStore>>>>;

/// Where handlers find the transaction store.
#[derive(Debug, Clone)]
enum TxnSlot {
    /// A single node's, open for the server's life.
    Single(Arc<TxnStore>),
    /// A cluster node's (`None` until the first is open).
    Cluster(TxnCell),
}

/// A future of the cluster membership, boxed so that [`ClusterMember`] is object safe.
pub type MemberFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A node's membership of its cluster, as the routes see it (the cluster mode implements
/// it over etcd; the server's routes do not depend on that).
pub trait ClusterMember: Send + Sync + std::fmt::Debug {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The registered nodes, by node id.
    ///
    /// # Errors
    /// 503 `membership_unavailable` when the registry cannot be read.
    fn nodes(&self) -> MemberFuture<'_, Result<Vec<logbook_api::ops::ClusterNode>, ApiError>>;
    /// The certifier's leader the election names now (`None`: none is elected).
    ///
    /// # Errors
    /// 503 `membership_unavailable` when etcd cannot be read.
    fn leader(&self)
    -> MemberFuture<'_, Result<Option<logbook_api::ops::ClusterLeader>, ApiError>>;
    /// The consumer groups' coordinator the election `groups` names now (`None`: none is
    /// elected).
    ///
    /// # Errors
    /// 503 `membership_unavailable` when etcd cannot be read.
    fn groups_coordinator(
        &self,
    ) -> MemberFuture<'_, Result<Option<logbook_api::ops::ClusterLeader>, ApiError>>;
    /// The other nodes as this node's heartbeats see them, by node id.
    fn peers(&self) -> Vec<logbook_api::ops::ClusterPeer>;
    /// What an acknowledged append guarantees on the cluster, as its log engine's servers
    /// were last read.
    fn ack_guarantee(&self) -> logbook_api::ops::ClusterAckGuarantee;
    /// Leaves the cluster (at shutdown): the registration is removed at once.
    fn leave(&self) -> MemberFuture<'_, ()>;
    /// Sends a one-shot commit to the certifier's leader (its address from the election)
    /// with the client's request id and credentials (`authorization`, passed through), and
    /// returns the leader's answer.
    ///
    /// # Errors
    /// The leader's problem as it answered it; 503 `leader_unavailable` when no leader is
    /// known or it is this node; 504 `outcome_unknown` when the request was sent and no
    /// answer came (the leader may have changed): retry with the same `Idempotency-Key`.
    fn forward_commit(
        &self,
        body: logbook_api::txns::CommitBody,
        request_id: Option<String>,
        traceparent: Option<String>,
        authorization: Option<String>,
    ) -> MemberFuture<'_, Result<logbook_api::txns::Committed, ApiError>>;
    /// Sends a consumer-group request to the groups' coordinator (its address from the
    /// election `groups`) with the client's credentials, and returns the body of its 2xx
    /// answer.
    ///
    /// # Errors
    /// As [`ClusterMember::forward_commit`], for the coordinator.
    fn forward_to_coordinator(
        &self,
        request: Forwarded,
    ) -> MemberFuture<'_, Result<Vec<u8>, ApiError>>;
}

/// A request a cluster node sends on to another node as the client sent it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The method.
    pub method: axum::http::Method,
    /// Path and query.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// The client's `Idempotency-Key`.
    pub request_id: Option<String>,
    /// The client's `traceparent`.
    pub traceparent: Option<String>,
    /// The client's `Authorization` (the receiving node checks it again).
    pub authorization: Option<String>,
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
    /// What opening waits for (an engine it cannot reach), for the health answer.
    waiting_for: Mutex<Option<String>>,
    /// On a cluster node whose clock is off the cluster's median beyond
    /// `max_clock_offset_ms`: why (the node is unready and refuses writes meanwhile).
    clock_fault: Mutex<Option<String>>,
    txns: TxnRegistry,
    requests: Arc<Semaphore>,
    /// Push-tail subscriptions open ([`limits::SUBSCRIPTIONS_MAX`]).
    subscriptions: Arc<Semaphore>,
    /// Long polls waiting (`long_polls_max`), apart from `requests`.
    long_polls: Arc<Semaphore>,
    /// Requests in flight per principal (`requests_per_principal_max`).
    principal_requests: Arc<crate::quota::Counts>,
    /// Connections per principal (`connections_per_principal_max`).
    principal_connections: Arc<crate::quota::Counts>,
    metrics: Metrics,
    allowed_hosts: crate::browser::AllowedHosts,
    tokens: std::sync::OnceLock<Arc<crate::auth::Tokens>>,
    /// The node's partition budget (`partitions_max`).
    partitions: crate::budget::PartitionBudget,
}

impl AppState {
    /// State for `config`, not yet ready.
    pub fn new(config: ServerConfig) -> Self {
        let txns = TxnRegistry::new(
            config.open_txns_max,
            config.txns_per_principal_max,
            Duration::from_millis(config.txn_idle_timeout_ms),
            config.cluster.as_ref().map(|c| c.node_id.clone()),
        );
        AppState {
            inner: Arc::new(Inner {
                requests: Arc::new(Semaphore::new(config.requests_max)),
                subscriptions: Arc::new(Semaphore::new(crate::limits::SUBSCRIPTIONS_MAX)),
                long_polls: Arc::new(Semaphore::new(config.long_polls_max)),
                principal_requests: crate::quota::Counts::new(
                    config.requests_per_principal_max,
                    "requests_per_principal_max",
                    "requests in flight",
                ),
                principal_connections: crate::quota::Counts::new(
                    config.connections_per_principal_max,
                    "connections_per_principal_max",
                    "connections open",
                ),
                allowed_hosts: crate::browser::AllowedHosts::new(
                    &config.listen,
                    &allowed_hosts(&config),
                ),
                partitions: crate::budget::PartitionBudget::new(config.partitions_max),
                config,
                phase: AtomicU8::new(Phase::Opening as u8),
                opened: RwLock::new(None),
                waiting_for: Mutex::new(None),
                clock_fault: Mutex::new(None),
                txns,
                metrics: Metrics::new(),
                tokens: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The node's partition budget.
    pub fn partitions(&self) -> &crate::budget::PartitionBudget {
        &self.inner.partitions
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The interactive transactions.
    pub fn txns(&self) -> &TxnRegistry {
        &self.inner.txns
    }

    /// The host names this server answers for.
    pub fn allowed_hosts(&self) -> &crate::browser::AllowedHosts {
        &self.inner.allowed_hosts
    }

    /// The token table, once the data directory is open (see [`crate::auth`]).
    pub fn tokens(&self) -> Option<&Arc<crate::auth::Tokens>> {
        self.inner.tokens.get()
    }

    /// Installs the token table (once; later calls change nothing).
    pub fn set_tokens(&self, tokens: Arc<crate::auth::Tokens>) {
        let _ = self.inner.tokens.set(tokens);
    }

    /// How fast a request body must arrive ([`crate::body`]).
    pub fn body_deadline(&self) -> crate::body::BodyDeadline {
        crate::body::BodyDeadline {
            timeout: Duration::from_millis(self.inner.config.body_read_timeout_ms),
            rate_min_bytes_per_s: self.inner.config.body_rate_min_bytes_per_s,
        }
    }

    /// How long a request that asked to wait `ms` may hold the server: `ms` cut to
    /// `wait_ms_max` when that is set ([`ServerConfig::wait_ms_max`]).
    pub fn wait_ms(&self, ms: u64) -> u64 {
        self.inner.config.wait_ms_max.map_or(ms, |max| ms.min(max))
    }

    /// The in-flight request limiter.
    pub fn requests(&self) -> &Arc<Semaphore> {
        &self.inner.requests
    }

    /// The long polls' budget, apart from the requests'.
    pub fn long_polls(&self) -> &Arc<Semaphore> {
        &self.inner.long_polls
    }

    /// Requests in flight per principal.
    pub fn principal_requests(&self) -> &Arc<crate::quota::Counts> {
        &self.inner.principal_requests
    }

    /// Connections per principal.
    pub fn principal_connections(&self) -> &Arc<crate::quota::Counts> {
        &self.inner.principal_connections
    }

    /// The push-tail subscriptions' budget, apart from the requests'.
    pub fn subscriptions(&self) -> &Arc<Semaphore> {
        &self.inner.subscriptions
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

    /// What opening waits for, while it retries (`None`: nothing).
    pub fn waiting_for(&self) -> Option<String> {
        self.inner
            .waiting_for
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes what opening waits for (`None` once it has it).
    pub fn set_waiting_for(&self, what: Option<String>) {
        *self
            .inner
            .waiting_for
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = what;
    }

    /// Why this node's clock keeps it from taking writes (`None`: it does not).
    pub fn clock_fault(&self) -> Option<String> {
        self.inner
            .clock_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes that this node's clock is off the cluster's (`Some(why)`) or back within the
    /// bound (`None`); the alarm gauge follows.
    pub fn set_clock_fault(&self, why: Option<String>) {
        self.inner
            .metrics
            .clock_offset_alarm
            .set(i64::from(why.is_some()));
        *self
            .inner
            .clock_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Installs the opened data directory and becomes ready.
    pub fn set_opened(&self, opened: Opened) {
        self.set_waiting_for(None);
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

/// The configured host names, and on a cluster node the host of its advertised URL (what
/// clients and other nodes send as `Host`).
fn allowed_hosts(config: &ServerConfig) -> Vec<String> {
    let mut hosts = config.allowed_hosts.clone();
    if let Some(c) = &config.cluster
        && let Some((_, rest)) = c.advertise_url.split_once("://")
    {
        hosts.push(rest.split('/').next().unwrap_or_default().to_string());
    }
    hosts
}

/// An interactive transaction held between requests.
#[derive(Debug)]
pub struct OpenTxn {
    /// Its handle: `t` and 32 lowercase hex digits, 128 bits from the OS random generator,
    /// so that only whoever began the transaction (or was told its handle) can use it.
    pub id: String,
    /// The transaction; `None` once committing, committed, aborted or reaped. Requests on
    /// one transaction take turns on this lock. Whoever empties it sets [`OpenTxn::end`]
    /// first, under the lock, so a request that finds it empty learns why from `end`.
    pub txn: Arc<tokio::sync::Mutex<Option<Txn>>>,
    /// Where the transaction is in its end (see [`TxnEnd`]); watched by requests that
    /// wait for a commit in flight.
    end: tokio::sync::watch::Sender<TxnEnd>,
    last_used_ms: AtomicU64,
    /// The principal that began it (`txns_per_principal_max` counts by it).
    owner: crate::quota::PrincipalKey,
    /// That principal's name (`None`: authentication off), to whom alone its end is told.
    principal: Option<String>,
}

/// How an interactive transaction ended, or that its commit is under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEnd {
    /// Still open.
    Open,
    /// Its commit is certified or in flight, sent with this `Idempotency-Key` (if any).
    Committing {
        /// The commit's request id.
        request_id: Option<String>,
    },
    /// Committed (a read-only commit has no offset).
    Committed {
        /// The commit's outcome.
        outcome: CommitOutcome,
        /// The commit's request id.
        request_id: Option<String>,
    },
    /// Its commit failed with `error`: nothing committed, unless the error is a server
    /// error (then the outcome is unknown until the store is reopened).
    CommitFailed {
        /// What the commit was answered.
        error: ApiError,
        /// The commit's request id.
        request_id: Option<String>,
        /// A commit forwarded to a cluster's leader whose answer was lost: the request as
        /// sent, so that a retry with the same request id sends it again and learns the
        /// outcome (a duplicate if it committed).
        resend: Option<Resend>,
    },
    /// Aborted: explicitly or at shutdown (`by: None`), or by the retryable error `by` of
    /// one of its operations (a later request is told that error and that a new attempt
    /// may succeed).
    Aborted {
        /// The error that aborted it, if one did.
        by: Option<ApiError>,
    },
    /// Aborted by the reaper after idling.
    Expired,
}

/// A forwarded commit request kept for its retry (see [`TxnEnd::CommitFailed`]); equal
/// only to itself.
#[derive(Debug, Clone)]
pub struct Resend(pub Arc<logbook_api::txns::CommitBody>);

impl PartialEq for Resend {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Resend {}

impl OpenTxn {
    /// Whether `principal` began it.
    pub fn owned_by(&self, principal: &crate::quota::PrincipalKey) -> bool {
        self.owner == *principal
    }

    /// The end as it stands.
    pub fn end(&self) -> TxnEnd {
        self.end.borrow().clone()
    }

    /// Records how the transaction ended (or that its commit began). Callers hold the
    /// [`OpenTxn::txn`] lock when they take the transaction out.
    pub fn set_end(&self, end: TxnEnd) {
        self.end.send_replace(end);
    }

    /// How many requests wait for its commit to settle (see [`OpenTxn::settled`]).
    pub fn waiting(&self) -> usize {
        self.end.receiver_count()
    }

    /// Waits while a commit is under way; returns the end it reached.
    pub async fn settled(&self) -> TxnEnd {
        let mut rx = self.end.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while we borrow it.
        match rx
            .wait_for(|e| !matches!(e, TxnEnd::Committing { .. }))
            .await
        {
            Ok(end) => end.clone(),
            Err(_) => self.end(),
        }
    }
}

/// The interactive transactions of a server: bounded in number, aborted when idle.
#[derive(Debug)]
pub struct TxnRegistry {
    open: Mutex<HashMap<String, Arc<OpenTxn>>>,
    /// Recently ended handles, how they ended and who began them, oldest first, so that
    /// late requests hear "committed", "aborted" or "expired" instead of "unknown".
    ended: Mutex<(HashMap<String, Ended>, VecDeque<String>)>,
    max: usize,
    /// Most open per principal (`txns_per_principal_max`).
    per_owner_max: usize,
    idle: Duration,
    epoch: Instant,
    /// On a cluster node, its id: every handle made here names it.
    node: Option<String>,
}

impl TxnRegistry {
    fn new(max: usize, per_owner_max: usize, idle: Duration, node: Option<String>) -> Self {
        TxnRegistry {
            open: Mutex::new(HashMap::new()),
            ended: Mutex::new((HashMap::new(), VecDeque::new())),
            max,
            per_owner_max,
            idle,
            epoch: Instant::now(),
            node,
        }
    }

    /// The node whose transactions these are (`None`: a single node).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
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

    /// How many `owner` holds open, and the most it may (`txns_per_principal_max`).
    pub fn owned_by(&self, owner: &crate::quota::PrincipalKey) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let owned = open.values().filter(|t| t.owner == *owner).count();
        (owned, self.per_owner_max)
    }

    /// Checks there is room for one more, of `owner`'s.
    ///
    /// # Errors
    /// 429 `too_many_transactions`; 429 `transaction_quota_exceeded` when `owner` holds
    /// `txns_per_principal_max`.
    pub fn check_room(&self, owner: &crate::quota::PrincipalKey) -> Result<(), ApiError> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        self.room_in(&open, owner)
    }

    /// Whether `open` has room for one more of `owner`'s (a scan: at most `max` entries).
    fn room_in(
        &self,
        open: &HashMap<String, Arc<OpenTxn>>,
        owner: &crate::quota::PrincipalKey,
    ) -> Result<(), ApiError> {
        if open.len() >= self.max {
            return Err(too_many(self.max));
        }
        let owned = open.values().filter(|t| t.owner == *owner).count();
        if owned >= self.per_owner_max {
            return Err(ApiError::new(
                ProblemCode::TransactionQuotaExceeded,
                format!(
                    "{owner} holds {owned} open transactions, its quota \
                     (txns_per_principal_max = {}); commit or abort some",
                    self.per_owner_max
                ),
            )
            .retry_after(1));
        }
        Ok(())
    }

    /// Registers a transaction `owner` began — the principal named `principal` (`None`:
    /// authentication off) — and returns its handle.
    ///
    /// # Errors
    /// 429 `too_many_transactions` or `transaction_quota_exceeded` (the transaction is then
    /// dropped, i.e. aborted); 500 `internal` if the OS random generator fails (no handle is
    /// made from less).
    pub fn insert(
        &self,
        txn: Txn,
        owner: crate::quota::PrincipalKey,
        principal: Option<String>,
    ) -> Result<Arc<OpenTxn>, ApiError> {
        let id = new_handle(self.node.as_deref())?;
        let entry = Arc::new(OpenTxn {
            id: id.clone(),
            txn: Arc::new(tokio::sync::Mutex::new(Some(txn))),
            end: tokio::sync::watch::Sender::new(TxnEnd::Open),
            last_used_ms: AtomicU64::new(self.now_ms()),
            owner,
            principal,
        });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        self.room_in(&open, &entry.owner)?;
        open.insert(id, entry.clone());
        Ok(entry)
    }

    /// A registered transaction by handle (open, or with its commit under way); marks it
    /// used.
    ///
    /// # Errors
    /// For a recently ended one, the error `ended_error` gives; 404
    /// `unknown_transaction` otherwise.
    pub fn get(&self, id: &str) -> Result<Arc<OpenTxn>, ApiError> {
        match self.lookup(id) {
            Lookup::Registered(t) => {
                self.touch(&t);
                Ok(t)
            }
            Lookup::Ended(end) => Err(ended_error(id, &end, self.idle)),
            Lookup::Unknown => Err(unknown_txn(id)),
        }
    }

    /// Where a handle stands: registered, recently ended (and how), or unknown.
    pub fn lookup(&self, id: &str) -> Lookup {
        let found = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(t) = found {
            return Lookup::Registered(t);
        }
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        match ended.0.get(id) {
            Some(e) => Lookup::Ended(e.end.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Whether the handle `id` is to be answered to a caller — token `owner` of the
    /// principal named `name` — as one that never existed (404): while open, it belongs to
    /// the token that began it; once ended, its end (committed at an offset, aborted) is
    /// told to every token of the principal that began it (a narrower token's retry of its
    /// commit is answered 403 by the handler, decision 0018), to no other principal.
    pub fn hidden_from(&self, id: &str, owner: &crate::quota::PrincipalKey, name: &str) -> bool {
        match self.lookup(id) {
            Lookup::Registered(t) => !t.owned_by(owner),
            Lookup::Ended(_) => {
                let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
                ended
                    .0
                    .get(id)
                    .is_some_and(|e| e.principal.as_deref() != Some(name))
            }
            Lookup::Unknown => false,
        }
    }

    /// The error for a request on a transaction that ended this way: 409
    /// `transaction_committed` or `transaction_aborted`, 410 `transaction_expired`.
    pub fn ended_error(&self, id: &str, end: &TxnEnd) -> ApiError {
        ended_error(id, end, self.idle)
    }

    /// Marks a transaction used now.
    pub fn touch(&self, t: &OpenTxn) {
        t.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Forgets an ended transaction, remembering how it ended (for late requests).
    pub fn finish(&self, t: &OpenTxn, end: TxnEnd) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&t.id);
        let remembered = Ended {
            end: remembered(&end),
            principal: t.principal.clone(),
        };
        t.set_end(end);
        let mut r = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if r.0.insert(t.id.clone(), remembered).is_none() {
            r.1.push_back(t.id.clone());
        }
        while r.1.len() > limits::ENDED_TXNS_REMEMBERED {
            if let Some(old) = r.1.pop_front() {
                r.0.remove(&old);
            }
        }
    }

    /// Replaces how a recently ended transaction is remembered to have ended (a forwarded
    /// commit sent again learnt its outcome); nothing if it is forgotten already.
    pub fn remember_end(&self, id: &str, end: TxnEnd) {
        let mut r = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(was) = r.0.get_mut(id) {
            was.end = remembered(&end);
        }
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
            // Empty: its commit is under way (it ends it) or it has just ended.
            let Some(txn) = guard.take() else {
                continue;
            };
            txn.abort();
            reaped += 1;
            self.finish(&t, TxnEnd::Expired);
            drop(guard);
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
                t.set_end(TxnEnd::Aborted { by: None });
                n += 1;
            }
        }
        n
    }
}

/// A recently ended transaction as remembered.
#[derive(Debug)]
struct Ended {
    /// How it ended ([`remembered`]).
    end: TxnEnd,
    /// The name of the principal that began it (`None`: authentication off).
    principal: Option<String>,
}

/// What late requests need of an end: a committed outcome's offset, not its increments.
fn remembered(end: &TxnEnd) -> TxnEnd {
    match end {
        TxnEnd::Committed {
            outcome,
            request_id,
        } => TxnEnd::Committed {
            outcome: CommitOutcome {
                incremented: Vec::new(),
                ..outcome.clone()
            },
            request_id: request_id.clone(),
        },
        other => other.clone(),
    }
}

/// A new transaction handle: `t` and 128 bits from the OS random generator in hex (not
/// guessable: a handle is the only credential of an interactive transaction's steps
/// beyond the caller's own); on a cluster node, then `.` and the node's id, so that any
/// node can tell where the transaction lives (node ids are `[A-Za-z0-9._-]`).
fn new_handle(node: Option<&str>) -> Result<String, ApiError> {
    let mut bits = [0u8; 16];
    getrandom::getrandom(&mut bits).map_err(|e| {
        ApiError::new(
            ProblemCode::InternalError,
            format!("the OS random generator failed: {e}"),
        )
    })?;
    let mut handle: String = std::iter::once("t".to_string())
        .chain(bits.iter().map(|b| format!("{b:02x}")))
        .collect();
    if let Some(node) = node {
        handle.push('.');
        handle.push_str(node);
    }
    Ok(handle)
}

/// Length of a handle's random part: `t` and 32 hex digits.
const HANDLE_RANDOM_CHARS: usize = 33;

/// The node a transaction handle names (`None`: a single node's handle, or not a handle).
pub fn handle_node(handle: &str) -> Option<&str> {
    let (random, node) = (
        handle.get(..HANDLE_RANDOM_CHARS)?,
        handle.get(HANDLE_RANDOM_CHARS..)?,
    );
    let node = node.strip_prefix('.')?;
    let well_formed = random.starts_with('t')
        && random[1..].bytes().all(|b| b.is_ascii_hexdigit())
        && !node.is_empty();
    well_formed.then_some(node)
}

/// Where a transaction handle stands.
#[derive(Debug)]
pub enum Lookup {
    /// Open, or its commit is under way.
    Registered(Arc<OpenTxn>),
    /// Ended recently, this way.
    Ended(TxnEnd),
    /// Never seen, or ended long ago (or before a restart).
    Unknown,
}

/// 404 `unknown_transaction`.
pub fn unknown_txn(id: &str) -> ApiError {
    ApiError::new(
        ProblemCode::UnknownTransaction,
        format!("no open transaction {id:?} (committed, aborted, or from before a restart)"),
    )
    .field("txn")
}

/// The error for a request on a transaction that ended as `end`.
fn ended_error(id: &str, end: &TxnEnd, idle: Duration) -> ApiError {
    let conflict = |code, detail| {
        let mut e = ApiError::new(code, detail).field("txn");
        e.retryable = Some(false);
        e
    };
    let committed = |detail| conflict(ProblemCode::TransactionCommitted, detail);
    let aborted = |detail| conflict(ProblemCode::TransactionAborted, detail);
    match end {
        TxnEnd::Open => unknown_txn(id),
        TxnEnd::Committing { .. } => committed(format!(
            "transaction {id} is committing; its commit decides its outcome"
        )),
        TxnEnd::Committed { outcome, .. } => committed(match outcome.offset {
            Some(offset) => format!("transaction {id} committed at offset {offset}"),
            None => format!("transaction {id} committed (it wrote nothing)"),
        }),
        TxnEnd::CommitFailed { error, .. } if error.status().is_server_error() => error.clone(),
        TxnEnd::CommitFailed { error, .. } => aborted(format!(
            "transaction {id} was aborted: its commit failed with {}; nothing it wrote was applied",
            error.code
        ))
        .retryable_as(error),
        TxnEnd::Aborted { by: Some(error) } => aborted(format!(
            "transaction {id} was aborted by {}: {}; nothing it wrote was applied",
            error.code, error.detail
        ))
        .retryable_as(error),
        TxnEnd::Aborted { by: None } => aborted(format!(
            "transaction {id} was aborted; nothing it wrote was applied"
        )),
        TxnEnd::Expired => ApiError::new(
            ProblemCode::TransactionExpired,
            format!(
                "transaction {id} was idle longer than {} ms and was aborted; begin a new one",
                idle.as_millis()
            ),
        )
        .field("txn"),
    }
}

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        ProblemCode::TooManyTransactions,
        format!("{max} interactive transactions are open, the limit; commit or abort some"),
    )
    .retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_nodes_handle_names_it_and_a_single_nodes_none() {
        let handle = new_handle(Some("node-1.eu")).unwrap();
        assert_eq!(handle.len(), HANDLE_RANDOM_CHARS + ".node-1.eu".len());
        assert_eq!(handle_node(&handle), Some("node-1.eu"));
        let single = new_handle(None).unwrap();
        assert_eq!(single.len(), HANDLE_RANDOM_CHARS);
        assert_eq!(handle_node(&single), None);
        for not_a_handle in [
            "",
            "t12.a",
            "x0123456789abcdef0123456789abcdef.a",
            &format!("{single}."),
        ] {
            assert_eq!(handle_node(not_a_handle), None, "{not_a_handle:?}");
        }
    }
}
