//! Operations: the bodies of `/v1/health`, `/v1/cluster` and `/v1/limits`.

use serde::{Deserialize, Serialize};

/// Health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// The process answers (always true in a response).
    pub live: bool,
    /// The data directory is open and requests are served.
    pub ready: bool,
    /// `opening` (recovering the data directory), `ready`, `shutting_down` or `failed`.
    pub state: String,
    /// Interactive transactions open.
    pub open_transactions: usize,
    /// While not ready: what the node is waiting for (e.g. the NATS servers or etcd it
    /// cannot reach, and why). Absent when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The node's wall clock when it answered, in ms since the Unix epoch: the other nodes
    /// of a cluster probe it (Cristian's method) to watch their clocks' offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_unix_ms: Option<u64>,
}

/// The body of `GET /v1/limits`: the answering node's limits as in force, and the caller's
/// quotas with what it holds of each now. Every count and size is a plain integer; the
/// names say the unit (`_ms`, `_bytes`, `_per_s`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limits {
    /// The node's settings (each a `logbook serve` flag, an environment variable and a
    /// configuration key of the same name).
    pub node: NodeLimits,
    /// What one request may carry or ask for (fixed by this version of the API).
    pub request: RequestLimits,
    /// The caller's quotas.
    pub quotas: Quotas,
    /// The cluster settings of a cluster node (absent on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterLimits>,
}

/// A cluster node's settings of failure detection and the clock watch, as in force (each a
/// `logbook serve` flag, an environment variable and a configuration key of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterLimits {
    /// The most this node's clock may be off the cluster's median clock, in ms; further
    /// off, it leads nothing, answers unready and refuses writes (503 `not_ready`).
    pub max_clock_offset_ms: u64,
    /// φ (phi accrual) at or above which a peer is suspected: φ = k is a 10⁻ᵏ chance that
    /// the suspicion is a mistake. Requests are not forwarded to a suspected leader (503
    /// `leader_unavailable`), and a leader that suspects a majority of its peers resigns.
    pub phi_threshold: u32,
    /// The interval between the heartbeats this node sends each peer, in ms.
    pub heartbeat_interval_ms: u64,
}

/// A node's capacity settings, as in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeLimits {
    /// Most open connections; beyond it the oldest idle kept-alive one is closed for a new
    /// client, else 503 `too_many_connections`.
    pub connections_max: u64,
    /// Most open connections from one client address (429 `connection_quota_exceeded`).
    pub connections_per_client_max: u64,
    /// Most requests handled at once (503 `server_busy`).
    pub requests_max: u64,
    /// Most long polls waiting at once, apart from `requests_max` (429
    /// `long_poll_budget_exhausted`).
    pub long_polls_max: u64,
    /// The longest one request may hold the node waiting, in ms: a read's `wait_ms`, a
    /// consistency token's `timeout_ms` and a push-tail subscription's life are cut to it;
    /// null: not cut (each parameter's own maximum; subscriptions last until the client
    /// leaves).
    pub wait_ms_max: Option<u64>,
    /// Most push-tail subscriptions open at once (429 `subscription_budget_exhausted`).
    pub subscriptions_max: u64,
    /// Most interactive transactions open at once (429 `too_many_transactions`).
    pub open_txns_max: u64,
    /// Most partitions of all streams together, internal ones included (409
    /// `too_many_partitions`).
    pub partitions_max: u64,
    /// Time a client has to send a request head, and the most a kept-alive connection
    /// idles, in ms.
    pub header_read_timeout_ms: u64,
    /// Time a body may take before the minimum rate counts, in ms (408 `body_timeout`).
    pub body_read_timeout_ms: u64,
    /// Least rate of a body past `body_read_timeout_ms`, in bytes per second.
    pub body_rate_min_bytes_per_s: u64,
    /// An interactive transaction idle this long is aborted, in ms.
    pub txn_idle_timeout_ms: u64,
    /// How many commits behind the newest a one-shot read or commit may name its snapshot
    /// (409 `snapshot_too_old`).
    pub snapshot_window_commits: u64,
    /// Bytes the transaction certifier keeps of committed transactions; over it the oldest
    /// are forgotten safely (`logbook_txn_certifier_bytes` in `/metrics` is the count).
    pub certifier_bytes_max: u64,
}

/// What one request may carry or ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestLimits {
    /// Largest request body, in bytes (413 `payload_too_large`).
    pub body_bytes_max: u64,
    /// Longest request target (path and query), in bytes (414 `uri_too_long`).
    pub uri_bytes_max: u64,
    /// Largest total of header names and values, in bytes (431 `headers_too_large`).
    pub header_bytes_max: u64,
    /// Most header lines (431 `headers_too_large`).
    pub header_lines_max: u64,
    /// Most records in one append.
    pub batch_records_max: u64,
    /// Most records one read answers.
    pub read_records_max: u64,
    /// Longest `wait_ms` of a record read, in ms.
    pub read_wait_ms_max: u64,
    /// Most partitions of one stream.
    pub partitions_per_stream_max: u64,
    /// Longest consistency token, in bytes.
    pub token_bytes_max: u64,
    /// Longest request id (`Idempotency-Key`), in bytes.
    pub request_id_bytes_max: u64,
    /// Deepest nesting of a stored JSON value.
    pub json_depth_max: u64,
}

/// The caller's quotas: what one principal may hold of the node's capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Who the quotas count: `token:ID` (the caller's token), or `address:IP` (its client
    /// address, with authentication off).
    pub principal: String,
    /// Requests in flight, this one included (`requests_per_principal_max`; 429
    /// `principal_quota_exceeded`).
    pub requests_in_flight: Quota,
    /// Connections the principal's requests came over, this one included
    /// (`connections_per_principal_max`; 429 `principal_quota_exceeded`).
    pub connections: Quota,
    /// Open interactive transactions (`txns_per_principal_max`; 429
    /// `transaction_quota_exceeded`).
    pub open_transactions: Quota,
    /// Consumer groups the principal's joins made, not deleted since
    /// (`groups_per_principal_max`; 429 `group_quota_exceeded`). Counted from `_groups` as
    /// this node has applied it (on a cluster node that does not coordinate the groups, it
    /// may trail the coordinator's count by the records in flight); absent on a server
    /// without consumer groups or not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Quota>,
    /// Consumer group members the principal joined, over every group, that have not left
    /// or expired (`group_members_per_principal_max`; 429 `group_quota_exceeded`); counted
    /// as `groups` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_members: Option<Quota>,
}

/// One quota: what the principal holds now, and the most it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    /// Held now.
    pub used: u64,
    /// The most it may hold.
    pub max: u64,
}

/// The body of `GET /v1/cluster`: the nodes registered in the cluster (etcd), as the
/// answering node lists them, and what its heartbeats say of each other node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    /// `cluster` (the log on NATS JetStream, membership in etcd) or `single` (the embedded
    /// log; no other nodes).
    pub mode: String,
    /// The answering node's id (absent on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The registered nodes, by node id (empty on a single node).
    pub nodes: Vec<ClusterNode>,
    /// The node that certifies transactions now: the leader elected through etcd. Absent
    /// on a single node, and while no leader is elected (commits then answer 503
    /// `leader_unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<ClusterLeader>,
    /// The node that coordinates the consumer groups now (the election `groups`): it writes
    /// `_groups` under its fencing token, and the other nodes send the group routes to it.
    /// Absent on a single node, and while none is elected (group routes then answer 503
    /// `leader_unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_coordinator: Option<ClusterLeader>,
    /// The other nodes as the answering node's heartbeats see them, by node id (empty on a
    /// single node).
    #[serde(default)]
    pub peers: Vec<ClusterPeer>,
    /// What an acknowledged append guarantees on this cluster, from the NATS servers' own
    /// settings (absent on a single node, where each stream's `fsync` decides it: see the
    /// stream's `ack_guarantee`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_guarantee: Option<ClusterAckGuarantee>,
}

/// What an acknowledged append guarantees on a cluster: a majority of the stream's replicas
/// hold the record; fsynced there only while every NATS server, read through its monitoring
/// URL (`cluster.nats_monitor_urls`), is nats-server ≥ 2.10 with `sync_interval: always`.
/// Anything that cannot be confirmed — no monitoring URL, one unreadable — counts as not
/// fsynced. The servers are read at the node's start and at each reconnection to NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterAckGuarantee {
    /// Replicas of the streams this node creates (a stream keeps its own: see its
    /// `ack_guarantee`); an acknowledgment means a majority of them hold the record.
    pub replicas: u32,
    /// Whether those copies are fsynced before the acknowledgment ("fsynced on a
    /// majority"); false: "replicated to a majority", in memory there until the servers sync.
    pub fsynced: bool,
    /// In words, e.g. `replicated to 2 of 3, not fsynced` or `replicated to 2 of 3, fsynced`.
    pub summary: String,
    /// Each NATS server as its monitoring URL last answered (empty when none is configured).
    pub servers: Vec<NatsServerDurability>,
}

/// One NATS server's durability settings, from its monitoring endpoint's `/varz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NatsServerDurability {
    /// Its monitoring URL, as configured.
    pub monitor_url: String,
    /// Its nats-server version (absent while it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether it fsyncs before acknowledging (`jetstream.config.sync_always`; absent
    /// while it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_always: Option<bool>,
    /// Why it could not be read (absent when it was, or has not been tried yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Another node as this node's heartbeats see it: a `GET /v1/health?probe=live` every
/// 500 ms, whose arrivals feed a phi accrual failure detector (Hayashibara et al., 2004),
/// whose round trips feed an adaptive timeout (RFC 6298), and whose answer's clock is a
/// Cristian probe of the peer's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterPeer {
    /// Its id.
    pub node_id: String,
    /// The URL its heartbeats go to.
    pub advertise_url: String,
    /// The suspicion level φ = −log₁₀ P(its next heartbeat is still to come), from the
    /// arrival times of its answers; 0 after an answer just now, rising with silence.
    pub phi: f64,
    /// φ is at or above the node's `phi_threshold` (default 8: one chance in 10⁸ that
    /// suspecting it is a mistake). A suspected leader is not forwarded to, and a node that
    /// suspects most of the cluster leads nothing; nothing that safety depends on: that is
    /// the etcd lease's and the fencing's.
    pub suspected: bool,
    /// Heartbeats it answered since this node began probing it.
    pub heartbeats: u64,
    /// Milliseconds since its last answer (absent before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms_ago: Option<u64>,
    /// The smoothed round trip of its heartbeats, in µs (absent before the first answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtt_us: Option<u64>,
    /// The timeout of the next request to it, in ms: smoothed round trip + 4 × its
    /// deviation, doubled per timeout since the last answer, within [200 ms, 5 s].
    pub timeout_ms: u64,
    /// Its clock minus this node's, in ms, from the latest answer (Cristian's method:
    /// its clock + half the round trip − this node's clock at the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// The bound on that offset's error, in ms (half the round trip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_ms: Option<u64>,
    /// Why its latest heartbeat failed, while the latest failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A node an election in etcd names: the certifier's leader, or the consumer groups'
/// coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterLeader {
    /// Its node id.
    pub node_id: String,
    /// The URL its API is reached at (where the other nodes forward commits, or group
    /// routes).
    pub advertise_url: String,
    /// Its fencing token: the election key's create revision in etcd. Each new leader's is
    /// greater than every earlier one's; its epoch record in `_txn` (the certifier) or
    /// `_groups` (the groups' coordinator) carries it.
    pub fencing_token: u64,
}

/// One registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterNode {
    /// Its id.
    pub node_id: String,
    /// The URL its API is reached at.
    pub advertise_url: String,
    /// What it serves: `appends`, `reads`, `views` (transactions come with the cluster's
    /// certifier).
    pub serves: Vec<String>,
    /// Whether its registration is being renewed (more than a third of its lease left). A
    /// node that stops renewing is listed unhealthy, then dropped when its lease expires.
    pub healthy: bool,
    /// Seconds left on its lease.
    pub lease_ttl_remaining_s: i64,
}
