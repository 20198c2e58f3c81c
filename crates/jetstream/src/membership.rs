//! Node membership through etcd: each node registers under a lease it keeps alive; any node
//! lists the others with their health; a clean shutdown deregisters at once, a crash is noticed
//! when the lease expires.
//!
//! ```text
//!   register ── LeaseGrant(ttl) ── Put(<prefix>/<node_id>, NodeRecord JSON, lease)
//!            └─ keep-alive task: a KeepAlive every ttl/3; an expired lease → grant + put again
//!   nodes()  ── Get(<prefix>/, prefix) + LeaseTimeToLive per node  → NodeStatus { healthy }
//!   deregister ── stop the task, LeaseRevoke (deletes the key)
//! ```
//!
//! etcd holds no source of truth here: losing it loses no data, only the list of nodes (and,
//! later, elections). Uses only the v3 KV and lease APIs, which etcd 3.4 (Debian 12's
//! `etcd-server`) serves as newer versions do.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, PutOptions, TlsOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::tls::ClientTls;

/// Lease time-to-live unless configured otherwise, in seconds: a crashed node disappears from
/// the list within this.
pub const LEASE_TTL_S_DEFAULT: i64 = 10;
/// Shortest lease etcd grants, in seconds (it raises shorter ones to its minimum anyway).
pub const LEASE_TTL_S_MIN: i64 = 2;
/// Longest node id, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 128;

/// What membership can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A setting or argument is out of range; `field` names it.
    #[error("invalid {field}: {why}")]
    InvalidArgument {
        /// The setting or argument.
        field: &'static str,
        /// Why it is refused.
        why: String,
    },
    /// No etcd endpoint could be reached, or a request got no answer in time. Retryable.
    #[error("etcd at {endpoints} unavailable: {detail}")]
    Unavailable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What the client reported.
        detail: String,
    },
    /// A registration's value in etcd is not a node record.
    #[error("etcd key {key} is not a node record: {detail}")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        detail: String,
    },
}

impl MembershipError {
    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MembershipError::Unavailable { .. })
    }
}

/// The crate's membership result type.
pub type Result<T, E = MembershipError> = std::result::Result<T, E>;

/// How to reach etcd and where nodes register.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// etcd client endpoints (`http://host:port`; `https://host:port` with [`Self::tls`]).
    pub endpoints: Vec<String>,
    /// The cluster's name: nodes register under `/logbook/<cluster>/nodes/`.
    pub cluster: String,
    /// Lease time-to-live in seconds (≥ [`LEASE_TTL_S_MIN`]). Default [`LEASE_TTL_S_DEFAULT`].
    pub lease_ttl_s: i64,
    /// Deadline of one etcd request, in ms. Default 5,000.
    pub request_timeout_ms: u64,
    /// TLS to the members: every endpoint is then `https://`. Default `None`.
    pub tls: Option<ClientTls>,
}

impl MembershipSettings {
    /// Settings for `endpoints` and `cluster` with the defaults.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>, cluster: &str) -> Self {
        MembershipSettings {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: cluster.to_string(),
            lease_ttl_s: LEASE_TTL_S_DEFAULT,
            request_timeout_ms: 5_000,
            tls: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, why: &str| {
            Err(MembershipError::InvalidArgument {
                field,
                why: why.to_string(),
            })
        };
        if self.endpoints.is_empty() {
            return bad("endpoints", "no etcd endpoint given");
        }
        if self.cluster.is_empty() || self.cluster.contains('/') {
            return bad("cluster", "must be non-empty and without '/'");
        }
        if self.lease_ttl_s < LEASE_TTL_S_MIN {
            return bad("lease_ttl_s", "below the 2 s minimum");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be > 0");
        }
        // The etcd client takes TLS on https:// endpoints only, and those only with TLS.
        let https = |e: &String| e.starts_with("https://");
        if self.tls.is_some() && !self.endpoints.iter().all(https) {
            return bad("endpoints", "with TLS every endpoint must be https://");
        }
        if self.tls.is_none() && self.endpoints.iter().any(https) {
            return bad(
                "tls",
                "an https:// endpoint needs TLS settings (its CA certificate)",
            );
        }
        Ok(())
    }
}

/// What a node says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id, unique in the cluster (1..=128 bytes, no `/`).
    pub node_id: String,
    /// The URL clients and other nodes reach its HTTP API at.
    pub advertise_url: String,
    /// What it serves (e.g. `appends`, `views`); free-form until the cluster mode defines it.
    #[serde(default)]
    pub serves: Vec<String>,
}

/// A registered node as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// What the node registered.
    pub record: NodeRecord,
    /// Seconds left on its lease (−1 when the lease expired between the list and the check).
    pub lease_ttl_remaining_s: i64,
    /// Its lease's granted time-to-live, in seconds.
    pub lease_ttl_s: i64,
    /// Whether its keep-alives arrive: more than a third of the lease left (a live node renews
    /// every third of it, so a healthy one never falls below two thirds for long).
    pub healthy: bool,
}

/// A connection to etcd for one cluster's membership. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    pub(crate) client: Client,
    pub(crate) settings: MembershipSettings,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Membership {
    /// Connects to etcd.
    ///
    /// # Errors
    /// [`MembershipError::InvalidArgument`] for bad settings, [`MembershipError::Unavailable`]
    /// naming the endpoints when none answers.
    pub async fn connect(settings: MembershipSettings) -> Result<Membership> {
        settings.validate()?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        if let Some(tls) = &settings.tls {
            let pem = tls
                .read()
                .map_err(|(field, why)| MembershipError::InvalidArgument { field, why })?;
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(pem.ca_cert));
            if let Some((cert, key)) = pem.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        let client = Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|e| unavailable(&settings, e.to_string()))?;
        let membership = Membership { client, settings };
        // Connecting is lazy; one request proves an endpoint answers.
        let prefix = membership.prefix();
        membership
            .call(|mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(prefix, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(membership)
    }

    fn prefix(&self) -> String {
        format!("/logbook/{}/nodes/", self.settings.cluster)
    }

    /// Runs one etcd request, retrying transient failures (an endpoint down, no leader for a
    /// moment) with backoff from 20 ms to 500 ms until the request timeout: the client
    /// balances over the endpoints, so a retry may reach a member that answers.
    pub(crate) async fn call<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let timeout = Duration::from_millis(self.settings.request_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout_at(deadline, op(self.client.clone())).await;
            match attempt {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e))
                    if is_transient(&e) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(unavailable(&self.settings, e.to_string())),
                Err(_) => {
                    let why = format!("no answer within {} ms", timeout.as_millis());
                    return Err(unavailable(&self.settings, why));
                }
            }
        }
    }

    /// Registers `node` under a new lease and keeps the lease alive from a background task
    /// until [`Registration::deregister`] (or drop: then the lease expires after its TTL).
    /// Registering a node id already registered replaces that registration's value.
    ///
    /// # Errors
    /// [`MembershipError::InvalidArgument`] for a bad node id, [`MembershipError::Unavailable`].
    pub async fn register(&self, node: NodeRecord) -> Result<Registration> {
        if node.node_id.is_empty()
            || node.node_id.len() > NODE_ID_BYTES_MAX
            || node.node_id.contains('/')
        {
            return Err(MembershipError::InvalidArgument {
                field: "node_id",
                why: format!("{:?}: 1..={NODE_ID_BYTES_MAX} bytes, no '/'", node.node_id),
            });
        }
        let key = format!("{}{}", self.prefix(), node.node_id);
        let value = serde_json::to_vec(&node).map_err(|e| MembershipError::Decode {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        let lease_id = self.put_under_new_lease(&key, &value).await?;
        let (state_tx, state_rx) = watch::channel(RegistrationState::Registered { lease_id });
        let task = tokio::spawn(keep_alive(
            self.clone(),
            key.clone(),
            value,
            lease_id,
            state_tx,
        ));
        Ok(Registration {
            membership: self.clone(),
            key,
            state: state_rx,
            task: Some(task),
        })
    }

    async fn put_under_new_lease(&self, key: &str, value: &[u8]) -> Result<i64> {
        let ttl = self.settings.lease_ttl_s;
        let lease = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        let id = lease.id();
        self.call(|mut c| async move {
            c.put(key, value, Some(PutOptions::new().with_lease(id)))
                .await
        })
        .await?;
        Ok(id)
    }

    /// Lists the registered nodes, ordered by node id, with their lease health.
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]; [`MembershipError::Decode`] for a value that is not a
    /// node record.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let prefix = self.prefix();
        let listed = self
            .call(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut nodes = Vec::with_capacity(listed.kvs().len());
        for kv in listed.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let record: NodeRecord =
                serde_json::from_slice(kv.value()).map_err(|e| MembershipError::Decode {
                    key: key.clone(),
                    detail: e.to_string(),
                })?;
            let lease_id = kv.lease();
            let lease = self
                .call(|mut c| async move { c.lease_time_to_live(lease_id, None).await })
                .await?;
            nodes.push(NodeStatus {
                record,
                lease_ttl_remaining_s: lease.ttl(),
                lease_ttl_s: lease.granted_ttl(),
                healthy: lease.ttl() * 3 > lease.granted_ttl(),
            });
        }
        nodes.sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        Ok(nodes)
    }
}

fn unavailable(settings: &MembershipSettings, detail: String) -> MembershipError {
    MembershipError::Unavailable {
        endpoints: settings.endpoints.join(","),
        detail,
    }
}

/// Whether another attempt may succeed: the connection failed, or the member answered
/// "unavailable" (down, no leader) or ran out of time.
fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error;
    match e {
        Error::TransportError(_) | Error::IoError(_) => true,
        Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        _ => false,
    }
}

/// Where a registration stands, as its keep-alive task last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Registered under this lease, keep-alives answered.
    Registered {
        /// The etcd lease id.
        lease_id: i64,
    },
    /// Keep-alives fail (etcd unreachable, or the lease expired and re-registering failed);
    /// retrying with backoff. Other nodes stop listing this one once its lease expires.
    Retrying {
        /// The last failure.
        error: String,
    },
}

/// A node's registration; keeps its lease alive while it lives.
#[derive(Debug)]
pub struct Registration {
    membership: Membership,
    key: String,
    state: watch::Receiver<RegistrationState>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// The registration's current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// Stops the keep-alives and revokes the lease, which removes the node from the list at
    /// once (a shutdown, not a crash).
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]: the key then disappears when the lease expires.
    pub async fn deregister(mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let state = self.state.borrow().clone();
        let key = self.key.as_str();
        match state {
            RegistrationState::Registered { lease_id } => self
                .membership
                .call(|mut c| async move { c.lease_revoke(lease_id).await })
                .await
                .map(|_| ()),
            RegistrationState::Retrying { .. } => self
                .membership
                .call(|mut c| async move { c.delete(key, None).await })
                .await
                .map(|_| ()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Without a deregister the lease expires after its TTL, as after a crash.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renews the lease every third of its TTL. A renewal that fails for a moment (an etcd member
/// down) is retried; a lease found expired, or not renewed for a whole TTL, is replaced: the
/// node registers again under a new lease, with backoff up to the TTL while etcd is away.
async fn keep_alive(
    membership: Membership,
    key: String,
    value: Vec<u8>,
    mut lease_id: i64,
    state: watch::Sender<RegistrationState>,
) {
    let ttl = Duration::from_secs(membership.settings.lease_ttl_s as u64);
    let period = ttl / 3;
    let mut renewed_at = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let lost = match renew(&membership, lease_id, period).await {
            Ok(()) => {
                renewed_at = tokio::time::Instant::now();
                backoff = Duration::from_millis(50);
                state.send_replace(RegistrationState::Registered { lease_id });
                tokio::time::sleep(period).await;
                continue;
            }
            Err(Renewal::Expired) => "lease expired".to_string(),
            Err(Renewal::Failed(error)) if renewed_at.elapsed() < ttl => {
                state.send_replace(RegistrationState::Retrying { error });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(period);
                continue;
            }
            Err(Renewal::Failed(error)) => error,
        };
        tracing::warn!(%key, why = %lost, "etcd lease lost; registering again");
        match membership.put_under_new_lease(&key, &value).await {
            Ok(id) => {
                lease_id = id;
                renewed_at = tokio::time::Instant::now();
                state.send_replace(RegistrationState::Registered { lease_id });
            }
            Err(error) => {
                state.send_replace(RegistrationState::Retrying {
                    error: error.to_string(),
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ttl);
            }
        }
    }
}

/// Why a keep-alive did not renew the lease.
pub(crate) enum Renewal {
    /// etcd answered that the lease is gone (TTL 0).
    Expired,
    /// No answer, or an error: the lease may still be alive.
    Failed(String),
}

/// One keep-alive round trip, within `deadline`.
pub(crate) async fn renew(
    membership: &Membership,
    lease_id: i64,
    deadline: Duration,
) -> std::result::Result<(), Renewal> {
    let round_trip = async {
        let mut client = membership.client.clone();
        let failed = |e: etcd_client::Error| Renewal::Failed(e.to_string());
        let (mut keeper, mut answers) = client.lease_keep_alive(lease_id).await.map_err(failed)?;
        keeper.keep_alive().await.map_err(failed)?;
        match answers.message().await.map_err(failed)? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            Some(_) => Err(Renewal::Expired),
            None => Err(Renewal::Failed("keep-alive stream closed".into())),
        }
    };
    tokio::time::timeout(deadline, round_trip)
        .await
        .map_err(|_| {
            Renewal::Failed(format!(
                "no keep-alive answer within {} ms",
                deadline.as_millis()
            ))
        })?
}
