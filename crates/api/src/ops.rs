//! Operations: the bodies of `/v1/health` and `/v1/cluster`.

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
}

/// The body of `GET /v1/cluster`: the nodes registered in the cluster (etcd), as the
/// answering node lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The certifier's leader as the election in etcd names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterLeader {
    /// Its node id.
    pub node_id: String,
    /// The URL its API is reached at (where followers forward commits).
    pub advertise_url: String,
    /// Its fencing token: the election key's create revision in etcd. Each new leader's is
    /// greater than every earlier one's; its epoch record and every commit record it
    /// appends to `_txn` carry it.
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
