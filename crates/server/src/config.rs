//! Server settings: defaults, an optional TOML file, and what the binary layers on top
//! (`LOGBOOK_*` environment variables and flags, in that order of precedence).
//!
//! ```toml
//! # logbook.toml — every key optional
//! data_dir = "./data"
//! listen = "127.0.0.1:7700"
//! connections_max = 1024
//! requests_max = 256
//! connections_per_client_max = 256        # per client address
//! connections_per_principal_max = 256     # per token (per address with auth off)
//! requests_per_principal_max = 128
//! long_polls_max = 256                    # wait_ms reads and token waits, apart from requests_max
//! wait_ms_max = 30000                     # cut every wait_ms/timeout_ms and subscription to this
//!                                         #   (unset: each parameter's own maximum; subscriptions
//!                                         #   last until the client leaves)
//! txns_per_principal_max = 250
//! groups_per_principal_max = 256         # consumer groups its joins made, not deleted since
//! group_members_per_principal_max = 1024 # consumer group members it joined, every group
//! header_read_timeout_ms = 10000          # also the keep-alive idle timeout
//! body_read_timeout_ms = 10000            # plus 1 s per body_rate_min_bytes_per_s received
//! body_rate_min_bytes_per_s = 16384
//! open_txns_max = 1000
//! txn_idle_timeout_ms = 30000
//! shutdown_grace_ms = 30000
//! snapshot_window_commits = 10000
//! certifier_bytes_max = 268435456        # the certifier's memory of commits (at least 32 MiB)
//! partitions_max = 2048                  # the node's partition budget, internal streams' too
//! scrub_rate_mb_per_s = 4                # the segment scrubber's rate (MB = 10^6 bytes); 0 = off
//! audit_interval_s = 3600                # the view auditor: one round over every view; 0 = off
//! audit_records_per_s = 10000            # each view's recomputation, records per second
//! audit_repair = false                   # on a mismatch, rebuild the view and switch to it
//! audit_memory_bytes_max = 1073741824    # each audit's recomputed state; a larger view is skipped
//! max_clock_offset_ms = 500              # cluster: a node further off the median stops writes
//! phi_threshold = 8                      # cluster: φ at which a peer is suspected (1..=16)
//! heartbeat_interval_ms = 500            # cluster: between heartbeats to each peer (50..=2000)
//! allowed_hosts = ["logbook.internal"]   # besides localhost, 127.0.0.1, [::1], the listen host
//! auth = "on"                            # "off" only with a loopback listen address
//! tls_cert = "tls/cert.pem"              # HTTPS: certificate chain and key (PEM), both or
//! tls_key = "tls/key.pem"                #   neither (`logbook tls self-signed` makes a pair)
//! tls_ca_cert = "tls/ca.pem"             # cluster: the CA of the other nodes' certificates
//! master_key_file = "/etc/logbook/master.key"  # personal data: 64 hex digits, mode 0600, kept
//!                                        #   outside the data directory (or LOGBOOK_MASTER_KEY)
//!
//! # Cluster mode: the log on NATS JetStream, membership in etcd (all four keys required)
//! [cluster]
//! node_id = "a"                                  # 1..=128 bytes of [A-Za-z0-9._-]
//! advertise_url = "http://10.0.0.1:7700"         # where clients and nodes reach this one
//! nats_urls = ["nats://10.0.0.1:4222"]           # 1..=16 servers of one JetStream cluster
//! etcd_endpoints = ["http://10.0.0.1:2379"]      # 1..=16 etcd client URLs
//! # Optional: the monitoring port (http://HOST:PORT) of every NATS server, read for what an
//! # acknowledgment guarantees ("fsynced on a majority" needs every server confirmed ≥ 2.10
//! # with sync_interval: always); without it acknowledgments are reported not fsynced.
//! nats_monitor_urls = ["http://10.0.0.1:8222"]   # 1..=16, one per server of the cluster
//! # TLS to the engines (optional): the CA of their certificates, and a client certificate
//! # and key (both or neither) for servers that verify clients. With etcd_ca_cert every
//! # etcd endpoint is https://; with nats_ca_cert every NATS connection is TLS.
//! nats_ca_cert = "tls/nats-ca.pem"
//! nats_client_cert = "tls/nats-client.pem"
//! nats_client_key = "tls/nats-client.key"
//! etcd_ca_cert = "tls/etcd-ca.pem"
//! etcd_client_cert = "tls/etcd-client.pem"
//! etcd_client_key = "tls/etcd-client.key"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits;

/// The settings of a running server. Units are in the names; defaults in the field docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The data directory; created if missing. Default `./data`.
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on; port 0 picks a free port. Default `127.0.0.1:7700`.
    pub listen: String,
    /// Most open TCP connections. Default [`limits::CONNECTIONS_MAX_DEFAULT`].
    pub connections_max: usize,
    /// Most requests handled at once. Default [`limits::REQUESTS_MAX_DEFAULT`].
    pub requests_max: usize,
    /// Most open connections from one client address; one more is answered 429
    /// `connection_quota_exceeded`. Default [`limits::CONNECTIONS_PER_CLIENT_MAX_DEFAULT`].
    pub connections_per_client_max: usize,
    /// Most connections one principal (a token; its address with authentication off)
    /// sends requests over; a request over one more is 429 `principal_quota_exceeded`. Default
    /// [`limits::CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub connections_per_principal_max: usize,
    /// Most requests of one principal handled at once; one more is 429
    /// `principal_quota_exceeded`. Default [`limits::REQUESTS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub requests_per_principal_max: usize,
    /// Most long polls (`wait_ms` record reads, reads waiting for a `token`) waiting at
    /// once, apart from `requests_max`; one more is 429 `long_poll_budget_exhausted`. Default
    /// [`limits::LONG_POLLS_MAX_DEFAULT`].
    pub long_polls_max: usize,
    /// The longest one request may hold the server waiting for data, ms: a read's `wait_ms`,
    /// a consistency token's `timeout_ms`, and the life of a push-tail subscription (which
    /// then ends with `event: closed` and the id to resume from). A longer ask is cut to it,
    /// not refused. Default `None`: each parameter's own maximum, and subscriptions last
    /// until the client leaves. Meant for tests that exercise every route (a fuzzer must
    /// not wait 30 s a call) and for deployments behind proxies with a connection age limit.
    pub wait_ms_max: Option<u64>,
    /// Most interactive transactions one principal holds open; one more is 429
    /// `transaction_quota_exceeded`. Default [`limits::TXNS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub txns_per_principal_max: usize,
    /// Most consumer groups one principal's joins may have made and not yet deleted; a join
    /// making one more is 429 `group_quota_exceeded`. Default
    /// [`limits::GROUPS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub groups_per_principal_max: usize,
    /// Most consumer group members one principal may have joined (over every group, until
    /// they leave or expire); one more is 429 `group_quota_exceeded`. Default
    /// [`limits::GROUP_MEMBERS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub group_members_per_principal_max: usize,
    /// Time a client has to send a request head, in ms; also how long a connection may
    /// idle between requests. Default [`limits::HEADER_READ_TIMEOUT_MS_DEFAULT`].
    pub header_read_timeout_ms: u64,
    /// Time a request body may take before the minimum rate counts, in ms: a body must
    /// arrive within this plus one second per `body_rate_min_bytes_per_s` bytes received, else
    /// 408 `body_timeout`. Default [`limits::BODY_READ_TIMEOUT_MS_DEFAULT`].
    pub body_read_timeout_ms: u64,
    /// Least rate of a request body past `body_read_timeout_ms`, in bytes per second.
    /// Default [`limits::BODY_RATE_MIN_BYTES_PER_S_DEFAULT`].
    pub body_rate_min_bytes_per_s: u64,
    /// Most interactive transactions open at once. Default [`limits::OPEN_TXNS_MAX_DEFAULT`].
    pub open_txns_max: usize,
    /// An interactive transaction idle this long is aborted, in ms. Default
    /// [`limits::TXN_IDLE_TIMEOUT_MS_DEFAULT`].
    pub txn_idle_timeout_ms: u64,
    /// Time in-flight requests get to finish at shutdown, in ms. Default
    /// [`limits::SHUTDOWN_GRACE_MS_DEFAULT`].
    pub shutdown_grace_ms: u64,
    /// How far behind the newest commit, in commits, a one-shot read (`POST /v1/kv/read`)
    /// or commit request (`POST /v1/commits`) may name its snapshot; older is 409
    /// `snapshot_too_old`. The transaction store keeps the versions and certifier summaries
    /// of that many commits. 0 keeps none (a one-shot read-modify-write then fails whenever
    /// another commit lands between its read and its commit). Default
    /// [`logbook_txn::limits::SNAPSHOT_WINDOW_COMMITS_DEFAULT`].
    pub snapshot_window_commits: u64,
    /// The budget of the transaction certifier's memory of committed transactions (keys
    /// written, keys and range bounds read), in bytes, shared fairly among principals;
    /// history no open transaction needs is forgotten safely to make room, and a commit
    /// that finds none is refused, retryable
    /// (`logbook_txn::TxnStoreOptions::certifier_bytes_max`). At least
    /// [`logbook_txn::limits::CERTIFIER_BYTES_MIN`]. Default
    /// [`logbook_txn::limits::CERTIFIER_BYTES_DEFAULT`].
    pub certifier_bytes_max: u64,
    /// The node's partition budget: most partitions of all streams together, internal ones
    /// included ([`crate::budget`]). Default [`limits::PARTITIONS_MAX_DEFAULT`].
    pub partitions_max: u32,
    /// The segment scrubber's rate limit, in MB (10^6 bytes) per second: sealed segments are
    /// re-read in the background and every batch's CRC32C checked (`logbook_log::scrub`,
    /// `GET /v1/audit`). 0 turns it off. At most [`limits::SCRUB_RATE_MB_PER_S_MAX`].
    /// Default [`limits::SCRUB_RATE_MB_PER_S_DEFAULT`].
    pub scrub_rate_mb_per_s: u64,
    /// On a cluster node: the most its clock may be off the cluster's median clock, in ms
    /// (measured by the heartbeats' Cristian probes). Further off, the node stops
    /// campaigning, resigns what it leads, answers unready and refuses writes (503
    /// `not_ready` naming the offset) until its clock is back within the bound. 1..=
    /// [`limits::MAX_CLOCK_OFFSET_MS_MAX`]. Default [`limits::MAX_CLOCK_OFFSET_MS_DEFAULT`].
    pub max_clock_offset_ms: u64,
    /// On a cluster node: the φ (phi accrual, `crate::phi`) at or above which a peer is
    /// suspected — a whole number, [`limits::PHI_THRESHOLD_MIN`]..=
    /// [`limits::PHI_THRESHOLD_MAX`]; φ = k means a 10⁻ᵏ chance that the suspicion is a
    /// mistake. A suspected leader is not forwarded to, and a leader that suspects a majority
    /// of its peers resigns. Default [`limits::PHI_THRESHOLD_DEFAULT`].
    pub phi_threshold: u32,
    /// On a cluster node: the interval between the heartbeats it sends each peer, in ms,
    /// [`limits::HEARTBEAT_INTERVAL_MS_MIN`]..=[`limits::HEARTBEAT_INTERVAL_MS_MAX`]; the
    /// clock watch runs as often. Default [`limits::HEARTBEAT_INTERVAL_MS_DEFAULT`].
    pub heartbeat_interval_ms: u64,
    /// Seconds between rounds of the view auditor, each recomputing every view from the log
    /// and comparing digests (`logbook_views::audit`, `GET /v1/audit`). 0 turns it off. At
    /// most [`limits::AUDIT_INTERVAL_S_MAX`]. Default [`limits::AUDIT_INTERVAL_S_DEFAULT`].
    pub audit_interval_s: u64,
    /// Pace of each view's recomputation, records per second (the per-view rate limit);
    /// 0 = unpaced. Default [`limits::AUDIT_RECORDS_PER_S_DEFAULT`].
    pub audit_records_per_s: u64,
    /// Whether the view auditor repairs a mismatch: rebuilds the view from the log and
    /// switches to the new version once it caught up (the old one stays, for inspection,
    /// until dropped). Default false: a mismatch is reported only.
    pub audit_repair: bool,
    /// Most bytes one audit may hold: the recomputed copy of a view's state and, while they
    /// are compared, its stored checkpoints (counted as the processors count state). A view
    /// that needs more is skipped with a note saying so. At least 1. Default
    /// [`limits::AUDIT_MEMORY_BYTES_MAX_DEFAULT`].
    pub audit_memory_bytes_max: u64,
    /// Host names (or addresses) the server answers for besides `localhost`, `127.0.0.1`,
    /// `[::1]` and the host of `listen`; a request whose `Host` names another is 421
    /// `host_not_allowed` (DNS rebinding guard, [`crate::browser`]). `"*"` allows any.
    /// Default none.
    pub allowed_hosts: Vec<String>,
    /// The master key wrapping the data keys of personal data (decision 0030): a file of 64
    /// hex digits, mode 0600, outside the data directory. Default none: then the
    /// environment variable `LOGBOOK_MASTER_KEY`, else no key store (no stream may declare
    /// personal data).
    pub master_key_file: Option<PathBuf>,
    /// The cluster mode's settings; `None` (the default) runs on the embedded log in
    /// `data_dir`.
    pub cluster: Option<ClusterConfig>,
    /// Whether requests must carry a valid bearer token ([`crate::auth`]). Default
    /// [`AUTH_DEFAULT`]; [`AuthMode::Off`] is refused unless `listen` is a loopback address.
    pub auth: AuthMode,
    /// HTTPS ([`crate::tls`]): the certificate and key files. Default `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// The files of a TLS listener (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first (`tls_cert`).
    pub cert: PathBuf,
    /// The private key of that certificate (`tls_key`): PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// On a cluster node, the CA certificates that other nodes' certificates are checked
    /// against when this node forwards a request to one (`tls_ca_cert`). Default: `cert`
    /// itself (nodes sharing one certificate, or a self-signed one), and the system's roots
    /// are not consulted.
    pub ca_cert: Option<PathBuf>,
}

impl TlsFiles {
    /// The file of CA certificates other nodes are checked against: `ca_cert`, else `cert`.
    pub fn peer_ca(&self) -> &Path {
        self.ca_cert.as_deref().unwrap_or(&self.cert)
    }
}

/// Authentication when nothing says otherwise: on. Off is an explicit choice, and only for
/// a loopback listen address.
pub const AUTH_DEFAULT: AuthMode = AuthMode::On;

/// Whether the server authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every route but `/v1/health` and `/openapi.json` needs a valid token with the scope
    /// it checks.
    On,
    /// Nothing is checked: for a node only this machine can reach.
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<AuthMode, String> {
        match s {
            "on" => Ok(AuthMode::On),
            "off" => Ok(AuthMode::Off),
            other => Err(format!("auth must be on or off, not {other:?}")),
        }
    }
}

/// Whether `listen`'s host is a loopback address (`127.0.0.0/8`, `[::1]`, `localhost`).
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Most NATS servers or etcd endpoints a node is given.
pub const CLUSTER_URLS_MAX: usize = 16;
/// Longest node id, in bytes (etcd keys and node records carry it).
pub const NODE_ID_BYTES_MAX: usize = 128;
/// Longest URL, in bytes.
pub const URL_BYTES_MAX: usize = 2048;

/// A node of a cluster: the log on NATS JetStream, membership in etcd (decision 0010). The
/// data directory then holds only the views' state and the request-id checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster: 1..=[`NODE_ID_BYTES_MAX`] bytes of
    /// `[A-Za-z0-9._-]`.
    pub node_id: String,
    /// The `http://` or `https://` URL clients and other nodes reach this node's API at.
    pub advertise_url: String,
    /// The NATS servers (`nats://` or `tls://` `HOST:PORT`), 1..=[`CLUSTER_URLS_MAX`].
    pub nats_urls: Vec<String>,
    /// The etcd client endpoints (`http://` or `https://` `HOST:PORT`),
    /// 1..=[`CLUSTER_URLS_MAX`]; `https://` exactly when [`ClusterConfig::etcd_tls`] is given.
    pub etcd_endpoints: Vec<String>,
    /// The HTTP monitoring URLs (`http://HOST:PORT`, no path) of every server of the NATS
    /// cluster, 0..=[`CLUSTER_URLS_MAX`]: each server's `/varz` says its version and whether
    /// it fsyncs before acknowledging (`sync_interval: always`), read at start and at each
    /// reconnection. Acknowledgments are reported "fsynced" only while every one of them
    /// confirms it. Default none: reported not fsynced (nothing can confirm it).
    pub nats_monitor_urls: Vec<String>,
    /// TLS to the NATS servers (`nats_ca_cert`, `nats_client_cert`, `nats_client_key`):
    /// every connection is then TLS, whatever the URLs' scheme. Default `None`: as the URLs
    /// say.
    pub nats_tls: Option<EngineTls>,
    /// TLS to the etcd members (`etcd_ca_cert`, `etcd_client_cert`, `etcd_client_key`).
    /// Default `None`: plain `http://`.
    pub etcd_tls: Option<EngineTls>,
}

/// TLS to an engine of the cluster (NATS or etcd). The files are PEM, read when the node
/// connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTls {
    /// The CA certificates the engine's certificates are checked against (the system's roots
    /// are not consulted).
    pub ca_cert: PathBuf,
    /// This node's client certificate chain and its private key, for an engine that verifies
    /// its clients (mutual TLS). `None`: no client certificate.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The names of one engine's TLS keys, for errors.
struct EngineTlsKeys {
    ca_cert: &'static str,
    client_cert: &'static str,
    client_key: &'static str,
}

impl EngineTls {
    /// The TLS settings from an engine's three keys: `None` when none is given.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: a client certificate without its key (or the
    /// reverse), or a client certificate without the CA.
    fn resolve(
        keys: &EngineTlsKeys,
        ca_cert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<EngineTls>, ConfigError> {
        let invalid = |field, reason| ConfigError::Invalid {
            field,
            value: String::new(),
            reason,
        };
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    keys.client_key,
                    "required with the client certificate (both or neither)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    keys.client_cert,
                    "required with the client key (both or neither)",
                ));
            }
        };
        match (ca_cert, client) {
            (Some(ca_cert), client) => Ok(Some(EngineTls { ca_cert, client })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(invalid(
                keys.ca_cert,
                "required with a client certificate (the CA the engine's certificate is \
                 checked against)",
            )),
        }
    }
}

/// The `[cluster]` table of a TOML file (or the flags and environment variables naming its
/// keys); `None` leaves the layer below in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLayer {
    /// See [`ClusterConfig::node_id`].
    pub node_id: Option<String>,
    /// See [`ClusterConfig::advertise_url`].
    pub advertise_url: Option<String>,
    /// See [`ClusterConfig::nats_urls`].
    pub nats_urls: Option<Vec<String>>,
    /// See [`ClusterConfig::etcd_endpoints`].
    pub etcd_endpoints: Option<Vec<String>>,
    /// See [`ClusterConfig::nats_monitor_urls`].
    pub nats_monitor_urls: Option<Vec<String>>,
    /// See [`EngineTls::ca_cert`] ([`ClusterConfig::nats_tls`]).
    pub nats_ca_cert: Option<PathBuf>,
    /// See [`EngineTls::client`] ([`ClusterConfig::nats_tls`]).
    pub nats_client_cert: Option<PathBuf>,
    /// See [`EngineTls::client`] ([`ClusterConfig::nats_tls`]).
    pub nats_client_key: Option<PathBuf>,
    /// See [`EngineTls::ca_cert`] ([`ClusterConfig::etcd_tls`]).
    pub etcd_ca_cert: Option<PathBuf>,
    /// See [`EngineTls::client`] ([`ClusterConfig::etcd_tls`]).
    pub etcd_client_cert: Option<PathBuf>,
    /// See [`EngineTls::client`] ([`ClusterConfig::etcd_tls`]).
    pub etcd_client_key: Option<PathBuf>,
}

impl ClusterLayer {
    /// This layer over `below`, key by key.
    pub fn over(self, below: ClusterLayer) -> ClusterLayer {
        ClusterLayer {
            node_id: self.node_id.or(below.node_id),
            advertise_url: self.advertise_url.or(below.advertise_url),
            nats_urls: self.nats_urls.or(below.nats_urls),
            etcd_endpoints: self.etcd_endpoints.or(below.etcd_endpoints),
            nats_monitor_urls: self.nats_monitor_urls.or(below.nats_monitor_urls),
            nats_ca_cert: self.nats_ca_cert.or(below.nats_ca_cert),
            nats_client_cert: self.nats_client_cert.or(below.nats_client_cert),
            nats_client_key: self.nats_client_key.or(below.nats_client_key),
            etcd_ca_cert: self.etcd_ca_cert.or(below.etcd_ca_cert),
            etcd_client_cert: self.etcd_client_cert.or(below.etcd_client_cert),
            etcd_client_key: self.etcd_client_key.or(below.etcd_client_key),
        }
    }

    fn is_empty(&self) -> bool {
        *self == ClusterLayer::default()
    }

    /// The cluster settings, checked: `None` when no key is given (the embedded mode).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (`cluster.node_id`, ...): a key missing while
    /// another is given, or a value out of shape.
    pub fn resolve(self) -> Result<Option<ClusterConfig>, ConfigError> {
        if self.is_empty() {
            return Ok(None);
        }
        let missing = |field| ConfigError::Invalid {
            field,
            value: String::new(),
            reason: "required in cluster mode (node_id, advertise_url, nats_urls and \
                     etcd_endpoints are given together)",
        };
        let c = ClusterConfig {
            node_id: self.node_id.ok_or_else(|| missing("cluster.node_id"))?,
            advertise_url: self
                .advertise_url
                .ok_or_else(|| missing("cluster.advertise_url"))?,
            nats_urls: self.nats_urls.ok_or_else(|| missing("cluster.nats_urls"))?,
            etcd_endpoints: self
                .etcd_endpoints
                .ok_or_else(|| missing("cluster.etcd_endpoints"))?,
            nats_monitor_urls: self.nats_monitor_urls.unwrap_or_default(),
            nats_tls: EngineTls::resolve(
                &EngineTlsKeys {
                    ca_cert: "cluster.nats_ca_cert",
                    client_cert: "cluster.nats_client_cert",
                    client_key: "cluster.nats_client_key",
                },
                self.nats_ca_cert,
                self.nats_client_cert,
                self.nats_client_key,
            )?,
            etcd_tls: EngineTls::resolve(
                &EngineTlsKeys {
                    ca_cert: "cluster.etcd_ca_cert",
                    client_cert: "cluster.etcd_client_cert",
                    client_key: "cluster.etcd_client_key",
                },
                self.etcd_ca_cert,
                self.etcd_client_cert,
                self.etcd_client_key,
            )?,
        };
        check_node_id(&c.node_id)?;
        check_url(
            "cluster.advertise_url",
            &c.advertise_url,
            &["http", "https"],
        )?;
        check_urls("cluster.nats_urls", &c.nats_urls, &["nats", "tls"])?;
        // The etcd client speaks TLS on https:// endpoints only, and those only with a CA.
        let etcd_schemes: &[&str] = if c.etcd_tls.is_some() {
            &["https"]
        } else {
            &["http"]
        };
        check_urls("cluster.etcd_endpoints", &c.etcd_endpoints, etcd_schemes)?;
        check_monitor_urls(&c.nats_monitor_urls)?;
        Ok(Some(c))
    }
}

fn check_node_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= NODE_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field: "cluster.node_id",
        value: id.to_string(),
        reason: "expected 1..=128 bytes of [A-Za-z0-9._-]",
    })
}

fn check_urls(field: &'static str, urls: &[String], schemes: &[&str]) -> Result<(), ConfigError> {
    if urls.is_empty() || urls.len() > CLUSTER_URLS_MAX {
        return Err(ConfigError::Invalid {
            field,
            value: urls.join(","),
            reason: "expected 1..=16 URLs",
        });
    }
    urls.iter().try_for_each(|u| check_url(field, u, schemes))
}

/// The NATS servers' monitoring URLs: at most [`CLUSTER_URLS_MAX`], each `http://HOST:PORT`
/// without a path (the node appends `/varz` itself).
fn check_monitor_urls(urls: &[String]) -> Result<(), ConfigError> {
    const FIELD: &str = "cluster.nats_monitor_urls";
    if urls.len() > CLUSTER_URLS_MAX {
        return Err(ConfigError::Invalid {
            field: FIELD,
            value: urls.join(","),
            reason: "expected at most 16 URLs (one per NATS server)",
        });
    }
    for url in urls {
        check_url(FIELD, url, &["http"])?;
        let path = url.split_once("://").map_or("", |(_, rest)| rest);
        if path.trim_end_matches('/').contains('/') {
            return Err(ConfigError::Invalid {
                field: FIELD,
                value: url.clone(),
                reason: "expected http://HOST:PORT without a path (the monitoring port's root)",
            });
        }
    }
    Ok(())
}

/// `SCHEME://HOST:PORT` with an optional path; the scheme one of `schemes`.
fn check_url(field: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::Invalid {
        field,
        value: url.to_string(),
        reason,
    };
    if url.len() > URL_BYTES_MAX || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("expected a URL of at most 2,048 bytes without spaces"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or(bad("expected SCHEME://HOST:PORT"))?;
    if !schemes.contains(&scheme) {
        return Err(bad(match schemes {
            ["nats", ..] => "the scheme must be nats:// or tls://",
            ["https"] => "the scheme must be https:// (etcd_ca_cert is given)",
            ["http"] => "the scheme must be http:// (https:// needs etcd_ca_cert)",
            _ => "the scheme must be http:// or https://",
        }));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(p))) if !host.is_empty() && p > 0 => Ok(()),
        _ => Err(bad("expected SCHEME://HOST:PORT with a port in 1..=65535")),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:7700".to_string(),
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
            requests_max: limits::REQUESTS_MAX_DEFAULT,
            connections_per_client_max: limits::CONNECTIONS_PER_CLIENT_MAX_DEFAULT,
            connections_per_principal_max: limits::CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT,
            requests_per_principal_max: limits::REQUESTS_PER_PRINCIPAL_MAX_DEFAULT,
            long_polls_max: limits::LONG_POLLS_MAX_DEFAULT,
            wait_ms_max: None,
            txns_per_principal_max: limits::TXNS_PER_PRINCIPAL_MAX_DEFAULT,
            groups_per_principal_max: limits::GROUPS_PER_PRINCIPAL_MAX_DEFAULT,
            group_members_per_principal_max: limits::GROUP_MEMBERS_PER_PRINCIPAL_MAX_DEFAULT,
            header_read_timeout_ms: limits::HEADER_READ_TIMEOUT_MS_DEFAULT,
            body_read_timeout_ms: limits::BODY_READ_TIMEOUT_MS_DEFAULT,
            body_rate_min_bytes_per_s: limits::BODY_RATE_MIN_BYTES_PER_S_DEFAULT,
            open_txns_max: limits::OPEN_TXNS_MAX_DEFAULT,
            txn_idle_timeout_ms: limits::TXN_IDLE_TIMEOUT_MS_DEFAULT,
            shutdown_grace_ms: limits::SHUTDOWN_GRACE_MS_DEFAULT,
            snapshot_window_commits: logbook_txn::limits::SNAPSHOT_WINDOW_COMMITS_DEFAULT,
            certifier_bytes_max: logbook_txn::limits::CERTIFIER_BYTES_DEFAULT as u64,
            partitions_max: limits::PARTITIONS_MAX_DEFAULT,
            scrub_rate_mb_per_s: limits::SCRUB_RATE_MB_PER_S_DEFAULT,
            audit_interval_s: limits::AUDIT_INTERVAL_S_DEFAULT,
            max_clock_offset_ms: limits::MAX_CLOCK_OFFSET_MS_DEFAULT,
            phi_threshold: limits::PHI_THRESHOLD_DEFAULT,
            heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
            audit_records_per_s: limits::AUDIT_RECORDS_PER_S_DEFAULT,
            audit_repair: false,
            audit_memory_bytes_max: limits::AUDIT_MEMORY_BYTES_MAX_DEFAULT,
            allowed_hosts: Vec::new(),
            master_key_file: None,
            cluster: None,
            auth: AUTH_DEFAULT,
            tls: None,
        }
    }
}

/// The settings a TOML file (or flags) may give; `None` leaves the layer below in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// See [`ServerConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`ServerConfig::listen`].
    pub listen: Option<String>,
    /// See [`ServerConfig::connections_max`].
    pub connections_max: Option<usize>,
    /// See [`ServerConfig::requests_max`].
    pub requests_max: Option<usize>,
    /// See [`ServerConfig::connections_per_client_max`].
    pub connections_per_client_max: Option<usize>,
    /// See [`ServerConfig::connections_per_principal_max`].
    pub connections_per_principal_max: Option<usize>,
    /// See [`ServerConfig::requests_per_principal_max`].
    pub requests_per_principal_max: Option<usize>,
    /// See [`ServerConfig::long_polls_max`].
    pub long_polls_max: Option<usize>,
    /// See [`ServerConfig::wait_ms_max`].
    pub wait_ms_max: Option<u64>,
    /// See [`ServerConfig::txns_per_principal_max`].
    pub txns_per_principal_max: Option<usize>,
    /// See [`ServerConfig::groups_per_principal_max`].
    pub groups_per_principal_max: Option<usize>,
    /// See [`ServerConfig::group_members_per_principal_max`].
    pub group_members_per_principal_max: Option<usize>,
    /// See [`ServerConfig::header_read_timeout_ms`].
    pub header_read_timeout_ms: Option<u64>,
    /// See [`ServerConfig::body_read_timeout_ms`].
    pub body_read_timeout_ms: Option<u64>,
    /// See [`ServerConfig::body_rate_min_bytes_per_s`].
    pub body_rate_min_bytes_per_s: Option<u64>,
    /// See [`ServerConfig::open_txns_max`].
    pub open_txns_max: Option<usize>,
    /// See [`ServerConfig::txn_idle_timeout_ms`].
    pub txn_idle_timeout_ms: Option<u64>,
    /// See [`ServerConfig::shutdown_grace_ms`].
    pub shutdown_grace_ms: Option<u64>,
    /// See [`ServerConfig::snapshot_window_commits`].
    pub snapshot_window_commits: Option<u64>,
    /// See [`ServerConfig::certifier_bytes_max`].
    pub certifier_bytes_max: Option<u64>,
    /// See [`ServerConfig::partitions_max`].
    pub partitions_max: Option<u32>,
    /// See [`ServerConfig::scrub_rate_mb_per_s`].
    pub scrub_rate_mb_per_s: Option<u64>,
    /// See [`ServerConfig::audit_interval_s`].
    pub audit_interval_s: Option<u64>,
    /// See [`ServerConfig::max_clock_offset_ms`].
    pub max_clock_offset_ms: Option<u64>,
    /// See [`ServerConfig::phi_threshold`].
    pub phi_threshold: Option<u32>,
    /// See [`ServerConfig::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: Option<u64>,
    /// See [`ServerConfig::audit_records_per_s`].
    pub audit_records_per_s: Option<u64>,
    /// See [`ServerConfig::audit_repair`].
    pub audit_repair: Option<bool>,
    /// See [`ServerConfig::audit_memory_bytes_max`].
    pub audit_memory_bytes_max: Option<u64>,
    /// See [`ServerConfig::allowed_hosts`].
    pub allowed_hosts: Option<Vec<String>>,
    /// See [`ServerConfig::master_key_file`].
    pub master_key_file: Option<PathBuf>,
    /// The `[cluster]` table; see [`ClusterConfig`].
    #[serde(default)]
    pub cluster: ClusterLayer,
    /// See [`ServerConfig::auth`].
    pub auth: Option<AuthMode>,
    /// See [`TlsFiles::cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`TlsFiles::key`].
    pub tls_key: Option<PathBuf>,
    /// See [`TlsFiles::ca_cert`].
    pub tls_ca_cert: Option<PathBuf>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field} = {value}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl ConfigLayer {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`] (unknown keys are refused).
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// This layer over `below`: every setting given here wins.
    pub fn over(self, below: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(below.data_dir),
            listen: self.listen.or(below.listen),
            connections_max: self.connections_max.or(below.connections_max),
            requests_max: self.requests_max.or(below.requests_max),
            connections_per_client_max: self
                .connections_per_client_max
                .or(below.connections_per_client_max),
            connections_per_principal_max: self
                .connections_per_principal_max
                .or(below.connections_per_principal_max),
            requests_per_principal_max: self
                .requests_per_principal_max
                .or(below.requests_per_principal_max),
            long_polls_max: self.long_polls_max.or(below.long_polls_max),
            wait_ms_max: self.wait_ms_max.or(below.wait_ms_max),
            txns_per_principal_max: self.txns_per_principal_max.or(below.txns_per_principal_max),
            groups_per_principal_max: self
                .groups_per_principal_max
                .or(below.groups_per_principal_max),
            group_members_per_principal_max: self
                .group_members_per_principal_max
                .or(below.group_members_per_principal_max),
            header_read_timeout_ms: self.header_read_timeout_ms.or(below.header_read_timeout_ms),
            body_read_timeout_ms: self.body_read_timeout_ms.or(below.body_read_timeout_ms),
            body_rate_min_bytes_per_s: self
                .body_rate_min_bytes_per_s
                .or(below.body_rate_min_bytes_per_s),
            open_txns_max: self.open_txns_max.or(below.open_txns_max),
            txn_idle_timeout_ms: self.txn_idle_timeout_ms.or(below.txn_idle_timeout_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.or(below.shutdown_grace_ms),
            snapshot_window_commits: self
                .snapshot_window_commits
                .or(below.snapshot_window_commits),
            certifier_bytes_max: self.certifier_bytes_max.or(below.certifier_bytes_max),
            partitions_max: self.partitions_max.or(below.partitions_max),
            scrub_rate_mb_per_s: self.scrub_rate_mb_per_s.or(below.scrub_rate_mb_per_s),
            audit_interval_s: self.audit_interval_s.or(below.audit_interval_s),
            max_clock_offset_ms: self.max_clock_offset_ms.or(below.max_clock_offset_ms),
            phi_threshold: self.phi_threshold.or(below.phi_threshold),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(below.heartbeat_interval_ms),
            audit_records_per_s: self.audit_records_per_s.or(below.audit_records_per_s),
            audit_repair: self.audit_repair.or(below.audit_repair),
            audit_memory_bytes_max: self.audit_memory_bytes_max.or(below.audit_memory_bytes_max),
            allowed_hosts: self.allowed_hosts.or(below.allowed_hosts),
            master_key_file: self.master_key_file.or(below.master_key_file),
            cluster: self.cluster.over(below.cluster),
            auth: self.auth.or(below.auth),
            tls_cert: self.tls_cert.or(below.tls_cert),
            tls_key: self.tls_key.or(below.tls_key),
            tls_ca_cert: self.tls_ca_cert.or(below.tls_ca_cert),
        }
    }

    /// The settings, with defaults for everything not given, checked.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero limit, an unparsable `listen`, a `[cluster]`
    /// table that is incomplete or out of shape ([`ClusterLayer::resolve`]), or `tls_cert`
    /// without `tls_key` (or the other way round, or `tls_ca_cert` without both).
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::default();
        let tls = tls_files(self.tls_cert, self.tls_key, self.tls_ca_cert)?;
        let c = ServerConfig {
            data_dir: self.data_dir.unwrap_or(d.data_dir),
            listen: self.listen.unwrap_or(d.listen),
            connections_max: self.connections_max.unwrap_or(d.connections_max),
            requests_max: self.requests_max.unwrap_or(d.requests_max),
            connections_per_client_max: self
                .connections_per_client_max
                .unwrap_or(d.connections_per_client_max),
            connections_per_principal_max: self
                .connections_per_principal_max
                .unwrap_or(d.connections_per_principal_max),
            requests_per_principal_max: self
                .requests_per_principal_max
                .unwrap_or(d.requests_per_principal_max),
            long_polls_max: self.long_polls_max.unwrap_or(d.long_polls_max),
            wait_ms_max: self.wait_ms_max,
            txns_per_principal_max: self
                .txns_per_principal_max
                .unwrap_or(d.txns_per_principal_max),
            groups_per_principal_max: self
                .groups_per_principal_max
                .unwrap_or(d.groups_per_principal_max),
            group_members_per_principal_max: self
                .group_members_per_principal_max
                .unwrap_or(d.group_members_per_principal_max),
            header_read_timeout_ms: self
                .header_read_timeout_ms
                .unwrap_or(d.header_read_timeout_ms),
            body_read_timeout_ms: self.body_read_timeout_ms.unwrap_or(d.body_read_timeout_ms),
            body_rate_min_bytes_per_s: self
                .body_rate_min_bytes_per_s
                .unwrap_or(d.body_rate_min_bytes_per_s),
            open_txns_max: self.open_txns_max.unwrap_or(d.open_txns_max),
            txn_idle_timeout_ms: self.txn_idle_timeout_ms.unwrap_or(d.txn_idle_timeout_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.unwrap_or(d.shutdown_grace_ms),
            snapshot_window_commits: self
                .snapshot_window_commits
                .unwrap_or(d.snapshot_window_commits),
            certifier_bytes_max: self.certifier_bytes_max.unwrap_or(d.certifier_bytes_max),
            partitions_max: self.partitions_max.unwrap_or(d.partitions_max),
            scrub_rate_mb_per_s: self.scrub_rate_mb_per_s.unwrap_or(d.scrub_rate_mb_per_s),
            audit_interval_s: self.audit_interval_s.unwrap_or(d.audit_interval_s),
            max_clock_offset_ms: self.max_clock_offset_ms.unwrap_or(d.max_clock_offset_ms),
            phi_threshold: self.phi_threshold.unwrap_or(d.phi_threshold),
            heartbeat_interval_ms: self
                .heartbeat_interval_ms
                .unwrap_or(d.heartbeat_interval_ms),
            audit_records_per_s: self.audit_records_per_s.unwrap_or(d.audit_records_per_s),
            audit_repair: self.audit_repair.unwrap_or(d.audit_repair),
            audit_memory_bytes_max: self
                .audit_memory_bytes_max
                .unwrap_or(d.audit_memory_bytes_max),
            allowed_hosts: self.allowed_hosts.unwrap_or(d.allowed_hosts),
            master_key_file: self.master_key_file,
            cluster: self.cluster.resolve()?,
            auth: self.auth.unwrap_or(d.auth),
            tls,
        };
        let positive = |field, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    field,
                    value: v.to_string(),
                    reason: "must be at least 1",
                })
            } else {
                Ok(())
            }
        };
        positive("connections_max", c.connections_max as u64)?;
        positive("requests_max", c.requests_max as u64)?;
        positive(
            "connections_per_client_max",
            c.connections_per_client_max as u64,
        )?;
        positive(
            "connections_per_principal_max",
            c.connections_per_principal_max as u64,
        )?;
        positive(
            "requests_per_principal_max",
            c.requests_per_principal_max as u64,
        )?;
        positive("long_polls_max", c.long_polls_max as u64)?;
        if let Some(ms) = c.wait_ms_max {
            positive("wait_ms_max", ms)?;
        }
        positive("txns_per_principal_max", c.txns_per_principal_max as u64)?;
        positive(
            "groups_per_principal_max",
            c.groups_per_principal_max as u64,
        )?;
        positive(
            "group_members_per_principal_max",
            c.group_members_per_principal_max as u64,
        )?;
        positive("header_read_timeout_ms", c.header_read_timeout_ms)?;
        positive("body_read_timeout_ms", c.body_read_timeout_ms)?;
        positive("body_rate_min_bytes_per_s", c.body_rate_min_bytes_per_s)?;
        positive("open_txns_max", c.open_txns_max as u64)?;
        positive("txn_idle_timeout_ms", c.txn_idle_timeout_ms)?;
        positive("partitions_max", u64::from(c.partitions_max))?;
        if c.certifier_bytes_max < logbook_txn::limits::CERTIFIER_BYTES_MIN as u64 {
            return Err(ConfigError::Invalid {
                field: "certifier_bytes_max",
                value: c.certifier_bytes_max.to_string(),
                reason: "must be at least 33554432 (32 MiB: four of the largest footprints)",
            });
        }
        if c.scrub_rate_mb_per_s > limits::SCRUB_RATE_MB_PER_S_MAX {
            return Err(ConfigError::Invalid {
                field: "scrub_rate_mb_per_s",
                value: c.scrub_rate_mb_per_s.to_string(),
                reason: "must not exceed 10000 (10 GB/s); 0 turns the scrubber off",
            });
        }
        if c.audit_interval_s > limits::AUDIT_INTERVAL_S_MAX {
            return Err(ConfigError::Invalid {
                field: "audit_interval_s",
                value: c.audit_interval_s.to_string(),
                reason: "must not exceed 604800 (a week); 0 turns the view auditor off",
            });
        }
        positive("audit_memory_bytes_max", c.audit_memory_bytes_max)?;
        positive("max_clock_offset_ms", c.max_clock_offset_ms)?;
        if c.max_clock_offset_ms > limits::MAX_CLOCK_OFFSET_MS_MAX {
            return Err(ConfigError::Invalid {
                field: "max_clock_offset_ms",
                value: c.max_clock_offset_ms.to_string(),
                reason: "must not exceed 60000 (a minute)",
            });
        }
        if !(limits::PHI_THRESHOLD_MIN..=limits::PHI_THRESHOLD_MAX).contains(&c.phi_threshold) {
            return Err(ConfigError::Invalid {
                field: "phi_threshold",
                value: c.phi_threshold.to_string(),
                reason: "must be 1..=16 (φ = k: a 10^-k chance that a suspicion is a mistake)",
            });
        }
        if !(limits::HEARTBEAT_INTERVAL_MS_MIN..=limits::HEARTBEAT_INTERVAL_MS_MAX)
            .contains(&c.heartbeat_interval_ms)
        {
            return Err(ConfigError::Invalid {
                field: "heartbeat_interval_ms",
                value: c.heartbeat_interval_ms.to_string(),
                reason: "must be 50..=2000 (at most a fifth of the 10 s etcd lease)",
            });
        }
        if c.requests_max > limits::BLOCKING_THREADS_MAX {
            return Err(ConfigError::Invalid {
                field: "requests_max",
                value: c.requests_max.to_string(),
                reason: "must not exceed the blocking threads (BLOCKING_THREADS_MAX, 256)",
            });
        }
        if let Some(bad) = c
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ' ', ',']))
        {
            return Err(ConfigError::Invalid {
                field: "allowed_hosts",
                value: bad.clone(),
                reason: "expected a host name or address, e.g. logbook.internal",
            });
        }
        if !c.listen.contains(':') {
            return Err(ConfigError::Invalid {
                field: "listen",
                value: c.listen,
                reason: "expected HOST:PORT",
            });
        }
        if c.auth == AuthMode::Off && !is_loopback(&c.listen) {
            return Err(ConfigError::Invalid {
                field: "auth",
                value: format!("off with listen = {}", c.listen),
                reason: "authentication can be off only on a loopback listen address \
                         (127.0.0.1, [::1], localhost): anyone who reaches the port could \
                         read and change everything",
            });
        }
        Ok(c)
    }
}

/// The TLS files, given together or not at all.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let missing = |field, given: &Option<PathBuf>| ConfigError::Invalid {
        field,
        value: given
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reason: "tls_cert and tls_key are given together (tls_ca_cert only with both)",
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key, ca_cert })),
        (Some(cert), None) => Err(missing("tls_key", &Some(cert))),
        (None, Some(key)) => Err(missing("tls_cert", &Some(key))),
        (None, None) if ca_cert.is_some() => Err(missing("tls_cert", &ca_cert)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_defaults() {
        let file: ConfigLayer = toml::from_str(
            "listen = \"0.0.0.0:1\"\nopen_txns_max = 5\nsnapshot_window_commits = 50",
        )
        .unwrap();
        let flags = ConfigLayer {
            open_txns_max: Some(7),
            auth: Some(AuthMode::On),
            ..ConfigLayer::default()
        };
        let c = flags.over(file).resolve().unwrap();
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.open_txns_max, 7);
        assert_eq!(c.snapshot_window_commits, 50);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(toml::from_str::<ConfigLayer>("bogus = 1").is_err());
        let zero = ConfigLayer {
            requests_max: Some(0),
            ..ConfigLayer::default()
        };
        assert!(matches!(
            zero.resolve(),
            Err(ConfigError::Invalid {
                field: "requests_max",
                ..
            })
        ));
        assert_eq!(c.cluster, None);
    }

    #[test]
    fn failure_detection_settings_are_bounded_by_name() {
        let file: ConfigLayer =
            toml::from_str("phi_threshold = 12\nheartbeat_interval_ms = 250").unwrap();
        let c = file.resolve().unwrap();
        assert_eq!((c.phi_threshold, c.heartbeat_interval_ms), (12, 250));
        let d = ConfigLayer::default().resolve().unwrap();
        assert_eq!((d.phi_threshold, d.heartbeat_interval_ms), (8, 500));
        let refused = |layer: ConfigLayer| match layer.resolve() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for phi in [0, 17] {
            let layer = ConfigLayer {
                phi_threshold: Some(phi),
                ..ConfigLayer::default()
            };
            assert_eq!(refused(layer), "phi_threshold", "{phi}");
        }
        for ms in [49, 2_001] {
            let layer = ConfigLayer {
                heartbeat_interval_ms: Some(ms),
                ..ConfigLayer::default()
            };
            assert_eq!(refused(layer), "heartbeat_interval_ms", "{ms}");
        }
    }

    fn cluster_file() -> ConfigLayer {
        toml::from_str(
            "[cluster]\nnode_id = \"a\"\nadvertise_url = \"http://127.0.0.1:7700\"\n\
             nats_urls = [\"nats://127.0.0.1:4222\"]\netcd_endpoints = [\"http://127.0.0.1:2379\"]",
        )
        .unwrap()
    }

    #[test]
    fn a_cluster_table_layers_key_by_key() {
        let flags = ConfigLayer {
            cluster: ClusterLayer {
                node_id: Some("b".into()),
                ..ClusterLayer::default()
            },
            ..ConfigLayer::default()
        };
        let c = flags
            .over(cluster_file())
            .resolve()
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.node_id, "b");
        assert_eq!(c.nats_urls, vec!["nats://127.0.0.1:4222".to_string()]);
        assert_eq!(c.etcd_endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert!(toml::from_str::<ConfigLayer>("[cluster]\nbogus = 1").is_err());
    }

    #[test]
    fn nats_monitor_urls_are_optional_bounded_and_without_a_path() {
        assert!(
            cluster_file()
                .resolve()
                .unwrap()
                .cluster
                .unwrap()
                .nats_monitor_urls
                .is_empty()
        );
        let with = |urls: Vec<String>| {
            let mut layer = cluster_file();
            layer.cluster.nats_monitor_urls = Some(urls);
            layer
                .resolve()
                .map(|c| c.cluster.unwrap().nats_monitor_urls)
        };
        let given = vec![
            "http://127.0.0.1:8222".to_string(),
            "http://n2:8222/".into(),
        ];
        assert_eq!(with(given.clone()).unwrap(), given);
        let refused = |urls: Vec<String>| match with(urls) {
            Err(ConfigError::Invalid { field, reason, .. }) => (field, reason),
            other => panic!("expected a refusal, got {other:?}"),
        };
        for bad in [
            "https://h:8222",
            "nats://h:4222",
            "http://h",
            "http://h:8222/varz",
        ] {
            let (field, reason) = refused(vec![bad.into()]);
            assert_eq!(field, "cluster.nats_monitor_urls", "{bad}: {reason}");
        }
        let (field, reason) = refused(vec!["http://h:8222".into(); CLUSTER_URLS_MAX + 1]);
        assert_eq!(field, "cluster.nats_monitor_urls");
        assert!(reason.contains("at most 16"), "{reason}");
    }

    #[test]
    fn bad_cluster_settings_are_refused_by_name() {
        let with = |f: &dyn Fn(&mut ClusterLayer)| {
            let mut layer = cluster_file();
            f(&mut layer.cluster);
            match layer.resolve() {
                Err(ConfigError::Invalid { field, .. }) => field,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert_eq!(with(&|c| c.etcd_endpoints = None), "cluster.etcd_endpoints");
        assert_eq!(with(&|c| c.node_id = Some("a/b".into())), "cluster.node_id");
        assert_eq!(
            with(&|c| c.node_id = Some(String::new())),
            "cluster.node_id"
        );
        assert_eq!(
            with(&|c| c.advertise_url = Some("127.0.0.1:7700".into())),
            "cluster.advertise_url"
        );
        assert_eq!(
            with(&|c| c.nats_urls = Some(vec!["http://127.0.0.1:4222".into()])),
            "cluster.nats_urls"
        );
        assert_eq!(with(&|c| c.nats_urls = Some(vec![])), "cluster.nats_urls");
        assert_eq!(
            with(&|c| c.etcd_endpoints = Some(vec!["http://127.0.0.1".into()])),
            "cluster.etcd_endpoints"
        );
        assert_eq!(
            with(&|c| c.etcd_endpoints = Some(vec!["http://h:0".into()])),
            "cluster.etcd_endpoints"
        );
    }

    #[test]
    fn tls_to_the_engines_needs_its_ca_and_https_endpoints_for_etcd() {
        let file: ConfigLayer = toml::from_str(
            "[cluster]\nnode_id = \"a\"\nadvertise_url = \"http://127.0.0.1:7700\"\n\
             nats_urls = [\"nats://127.0.0.1:4222\"]\n\
             etcd_endpoints = [\"https://127.0.0.1:2379\"]\n\
             nats_ca_cert = \"n-ca.pem\"\netcd_ca_cert = \"e-ca.pem\"\n\
             etcd_client_cert = \"e.pem\"\netcd_client_key = \"e.key\"",
        )
        .unwrap();
        let c = file.clone().resolve().unwrap().cluster.unwrap();
        let tls = |ca: &str, client: Option<(&str, &str)>| {
            Some(EngineTls {
                ca_cert: ca.into(),
                client: client.map(|(c, k)| (c.into(), k.into())),
            })
        };
        assert_eq!(c.nats_tls, tls("n-ca.pem", None));
        assert_eq!(c.etcd_tls, tls("e-ca.pem", Some(("e.pem", "e.key"))));
        assert_eq!(
            cluster_file().resolve().unwrap().cluster.unwrap().nats_tls,
            None
        );
        let with = |f: &dyn Fn(&mut ClusterLayer)| {
            let mut layer = file.clone();
            f(&mut layer.cluster);
            match layer.resolve() {
                Err(ConfigError::Invalid { field, .. }) => field,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert_eq!(
            with(&|c| c.etcd_client_key = None),
            "cluster.etcd_client_key"
        );
        assert_eq!(
            with(&|c| c.nats_client_key = Some("n.key".into())),
            "cluster.nats_client_cert"
        );
        assert_eq!(
            with(&|c| {
                c.nats_ca_cert = None;
                c.nats_client_cert = Some("n.pem".into());
                c.nats_client_key = Some("n.key".into());
            }),
            "cluster.nats_ca_cert"
        );
        // https:// only with etcd_ca_cert, and with it only https://.
        assert_eq!(
            with(&|c| c.etcd_endpoints = Some(vec!["http://127.0.0.1:2379".into()])),
            "cluster.etcd_endpoints"
        );
        assert_eq!(
            with(&|c| {
                c.etcd_ca_cert = None;
                c.etcd_client_cert = None;
                c.etcd_client_key = None;
            }),
            "cluster.etcd_endpoints"
        );
    }

    #[test]
    fn tls_files_come_together() {
        let file: ConfigLayer =
            toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
        let tls = file.resolve().unwrap().tls.unwrap();
        assert_eq!(tls.peer_ca(), Path::new("c.pem"));
        let only = |cert: bool, key: bool, ca: bool| ConfigLayer {
            tls_cert: cert.then(|| "c.pem".into()),
            tls_key: key.then(|| "k.pem".into()),
            tls_ca_cert: ca.then(|| "ca.pem".into()),
            ..ConfigLayer::default()
        };
        for (layer, field) in [
            (only(true, false, false), "tls_key"),
            (only(false, true, false), "tls_cert"),
            (only(false, false, true), "tls_cert"),
        ] {
            match layer.resolve() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a refusal naming {field}, got {other:?}"),
            }
        }
        let all = only(true, true, true).resolve().unwrap().tls.unwrap();
        assert_eq!(all.peer_ca(), Path::new("ca.pem"));
        assert_eq!(ConfigLayer::default().resolve().unwrap().tls, None);
    }

    #[test]
    fn auth_off_only_on_loopback() {
        let off = |listen: &str| ConfigLayer {
            listen: Some(listen.into()),
            auth: Some(AuthMode::Off),
            ..ConfigLayer::default()
        };
        for ok in ["127.0.0.1:0", "127.9.0.1:7700", "[::1]:7700", "localhost:1"] {
            assert_eq!(off(ok).resolve().unwrap().auth, AuthMode::Off, "{ok}");
        }
        for bad in [
            "0.0.0.0:7700",
            "[::]:7700",
            "10.0.0.5:7700",
            "example.com:80",
        ] {
            assert!(
                matches!(
                    off(bad).resolve(),
                    Err(ConfigError::Invalid { field: "auth", .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(ConfigLayer::default().resolve().unwrap().auth, AUTH_DEFAULT);
        let file: ConfigLayer = toml::from_str("auth = \"off\"").unwrap();
        assert_eq!(file.auth, Some(AuthMode::Off));
    }
}
