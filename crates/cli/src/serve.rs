//! `logbook serve`: the HTTP API (v1) of docs/DESIGN.md on a data directory.
//!
//! Settings come from, lowest precedence first: built-in defaults, `--config FILE.toml`,
//! `LOGBOOK_*` environment variables, flags. With a node id, advertise URL, NATS URLs and etcd
//! endpoints (`[cluster]`, `LOGBOOK_CLUSTER_*`, `--cluster-*`) it is a node of a cluster: the
//! log on NATS JetStream, membership in etcd (a binary built with the `cluster` feature). On
//! start it prints one line to stdout,
//! `listening on http://HOST:PORT` (`https://` with `--tls-cert` and `--tls-key`; the real
//! port when `--listen` asks for port 0), then
//! serves until SIGINT or SIGTERM, drains in-flight requests, closes the log and exits 0.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use logbook_server::{AuthMode, ClusterLayer, ConfigLayer, Server, ServerError, limits};

/// Options of `logbook serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys, e.g. `listen`,
    /// `txn_idle_timeout_ms`); flags and environment variables override it.
    #[arg(long, env = "LOGBOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory (created if missing). Default `./data`.
    #[arg(long, env = "LOGBOOK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT; port 0 picks a free one. Default `127.0.0.1:7700`.
    #[arg(long, env = "LOGBOOK_LISTEN")]
    pub listen: Option<String>,
    /// Most open connections; one more is answered 503. Default 1024.
    #[arg(long, env = "LOGBOOK_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Most requests handled at once; one more is answered 503. Default 256.
    #[arg(long, env = "LOGBOOK_REQUESTS_MAX")]
    pub requests_max: Option<usize>,
    /// Most open connections from one client address; one more is answered 429
    /// connection_quota_exceeded. Default 256.
    #[arg(long, env = "LOGBOOK_CONNECTIONS_PER_CLIENT_MAX")]
    pub connections_per_client_max: Option<usize>,
    /// Most connections one principal (a token; its address with --auth off) sends
    /// requests over; over it: 429 principal_quota_exceeded. Default 256.
    #[arg(long, env = "LOGBOOK_CONNECTIONS_PER_PRINCIPAL_MAX")]
    pub connections_per_principal_max: Option<usize>,
    /// Most requests of one principal handled at once; one more: 429
    /// principal_quota_exceeded. Default 128.
    #[arg(long, env = "LOGBOOK_REQUESTS_PER_PRINCIPAL_MAX")]
    pub requests_per_principal_max: Option<usize>,
    /// Most long polls (record reads with wait_ms, reads waiting for a token) waiting at
    /// once, apart from --requests-max; one more: 429 long_poll_budget_exhausted. Default 256.
    #[arg(long, env = "LOGBOOK_LONG_POLLS_MAX")]
    pub long_polls_max: Option<usize>,
    /// The longest one request may hold the server waiting, in ms: a read's wait_ms, a
    /// consistency token's timeout_ms and the life of a push-tail subscription (then ended
    /// with `event: closed`) are cut to it. Default: no cut (each parameter's own maximum).
    #[arg(long, env = "LOGBOOK_WAIT_MS_MAX")]
    pub wait_ms_max: Option<u64>,
    /// Most interactive transactions one principal holds open; one more: 429
    /// transaction_quota_exceeded. Default 250.
    #[arg(long, env = "LOGBOOK_TXNS_PER_PRINCIPAL_MAX")]
    pub txns_per_principal_max: Option<usize>,
    /// Most consumer groups one principal's joins may have made and not yet deleted; one
    /// more: 429 group_quota_exceeded. Default 256.
    #[arg(long, env = "LOGBOOK_GROUPS_PER_PRINCIPAL_MAX")]
    pub groups_per_principal_max: Option<usize>,
    /// Most consumer group members one principal may have joined, over every group, until
    /// they leave or expire; one more: 429 group_quota_exceeded. Default 1024.
    #[arg(long, env = "LOGBOOK_GROUP_MEMBERS_PER_PRINCIPAL_MAX")]
    pub group_members_per_principal_max: Option<usize>,
    /// Time a client has to send a request head, in ms; also how long a connection may
    /// idle between requests before it is closed. Default 10000.
    #[arg(long, env = "LOGBOOK_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// A request body must arrive within this many ms plus one second per
    /// --body-rate-min-bytes-per-s bytes received, else 408 body_timeout. Default 10000.
    #[arg(long, env = "LOGBOOK_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Least rate of a request body past --body-read-timeout-ms, bytes per second.
    /// Default 16384.
    #[arg(long, env = "LOGBOOK_BODY_RATE_MIN_BYTES_PER_S")]
    pub body_rate_min_bytes_per_s: Option<u64>,
    /// Most interactive transactions open at once; one more is answered 429. Default 1000.
    #[arg(long, env = "LOGBOOK_OPEN_TXNS_MAX")]
    pub open_txns_max: Option<usize>,
    /// Idle interactive transactions are aborted after this many ms. Default 30000.
    #[arg(long, env = "LOGBOOK_TXN_IDLE_TIMEOUT_MS")]
    pub txn_idle_timeout_ms: Option<u64>,
    /// Time in-flight requests get to finish at shutdown, in ms. Default 30000.
    #[arg(long, env = "LOGBOOK_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// How many commits back a one-shot read or commit request may name its snapshot
    /// (older: 409 snapshot_too_old). Default 10000.
    #[arg(long, env = "LOGBOOK_SNAPSHOT_WINDOW_COMMITS")]
    pub snapshot_window_commits: Option<u64>,
    /// The transaction certifier's memory of committed transactions, in bytes, shared by
    /// the principals that commit (each may hold the budget / (principals holding some +
    /// 1)). History no open transaction needs is forgotten for room (a one-shot request at
    /// a snapshot before it is then 409 snapshot_too_old); a commit still without room is
    /// refused, nothing written, retryable: 429 certifier_share_full over its principal's
    /// share, 503 certifier_full over the budget. At least 33554432. Default 268435456.
    #[arg(long, env = "LOGBOOK_CERTIFIER_BYTES_MAX")]
    pub certifier_bytes_max: Option<u64>,
    /// The node's partition budget: most partitions of all streams together (internal ones
    /// included); a stream that would go over it is refused (409 too_many_partitions).
    /// Default 2048.
    #[arg(long, env = "LOGBOOK_PARTITIONS_MAX")]
    pub partitions_max: Option<u32>,
    /// The segment scrubber's rate in MB (10^6 bytes) per second: sealed segments are
    /// re-read in the background and every batch's checksum checked (`logbook audit
    /// status`). 0 turns it off. Default 4.
    #[arg(long, env = "LOGBOOK_SCRUB_RATE_MB_PER_S")]
    pub scrub_rate_mb_per_s: Option<u64>,
    /// On a cluster node: the most its clock may be off the cluster's median clock, in ms.
    /// Further off, the node stops leading, answers unready and refuses writes until its
    /// clock is back within the bound. Default 500.
    #[arg(long, env = "LOGBOOK_MAX_CLOCK_OFFSET_MS")]
    pub max_clock_offset_ms: Option<u64>,
    /// On a cluster node: the φ (phi accrual) at or above which a peer is suspected, a whole
    /// number 1..=16 (φ = k: a 10^-k chance that the suspicion is a mistake). A suspected
    /// leader is not forwarded to; a leader that suspects most of its peers resigns.
    /// Default 8.
    #[arg(long, env = "LOGBOOK_PHI_THRESHOLD")]
    pub phi_threshold: Option<u32>,
    /// On a cluster node: the interval between the heartbeats it sends each peer, in ms
    /// (50..=2000). Default 500.
    #[arg(long, env = "LOGBOOK_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Seconds between rounds of the view auditor, which recomputes every view from the log
    /// up to the offsets it applied and compares digests (`logbook audit status`). 0 turns
    /// it off. Default 3600.
    #[arg(long, env = "LOGBOOK_AUDIT_INTERVAL_S")]
    pub audit_interval_s: Option<u64>,
    /// Pace of each view's recomputation by the auditor, records per second (0: unpaced).
    /// Default 10000.
    #[arg(long, env = "LOGBOOK_AUDIT_RECORDS_PER_S")]
    pub audit_records_per_s: Option<u64>,
    /// On a mismatch, the auditor rebuilds the view from the log and switches to it.
    #[arg(long, env = "LOGBOOK_AUDIT_REPAIR")]
    pub audit_repair: bool,
    /// Most bytes one view audit may hold (its recomputed copy of the view's state, and the
    /// stored checkpoints while they are compared); a view that needs more is skipped with
    /// a note. At least 1. Default 1073741824 (1 GiB).
    #[arg(long, env = "LOGBOOK_AUDIT_MEMORY_BYTES_MAX")]
    pub audit_memory_bytes_max: Option<u64>,
    /// A host name or address the server answers for (repeat for several; `*` for any),
    /// besides localhost, 127.0.0.1, ::1 and the --listen host. Requests naming another
    /// `Host` are refused (421), against DNS rebinding.
    #[arg(
        long = "allowed-host",
        env = "LOGBOOK_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Cluster mode (with the other three --cluster-* settings, or a `[cluster]` table in
    /// the config file): this node's id, 1..=128 bytes of [A-Za-z0-9._-].
    #[arg(long, env = "LOGBOOK_CLUSTER_NODE_ID")]
    pub cluster_node_id: Option<String>,
    /// Cluster mode: the http(s)://HOST:PORT clients and other nodes reach this node at.
    #[arg(long, env = "LOGBOOK_CLUSTER_ADVERTISE_URL")]
    pub cluster_advertise_url: Option<String>,
    /// Cluster mode: the NATS JetStream servers, nats://HOST:PORT, comma-separated.
    #[arg(long, env = "LOGBOOK_CLUSTER_NATS_URLS", value_delimiter = ',')]
    pub cluster_nats_urls: Option<Vec<String>>,
    /// Cluster mode: the etcd client endpoints, http://HOST:PORT (https:// with
    /// --cluster-etcd-ca-cert), comma-separated.
    #[arg(long, env = "LOGBOOK_CLUSTER_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub cluster_etcd_endpoints: Option<Vec<String>>,
    /// Cluster mode: the monitoring URL, http://HOST:PORT, of every NATS server
    /// (comma-separated, at most 16): read for what an acknowledgment guarantees — "fsynced"
    /// only when every server is nats-server ≥ 2.10 with sync_interval: always. Without it,
    /// acknowledgments are reported not fsynced.
    #[arg(long, env = "LOGBOOK_CLUSTER_NATS_MONITOR_URLS", value_delimiter = ',')]
    pub cluster_nats_monitor_urls: Option<Vec<String>>,
    /// Cluster mode, TLS to NATS: the CA certificates (PEM) the servers' certificates are
    /// checked against; every NATS connection is then TLS.
    #[arg(long, env = "LOGBOOK_CLUSTER_NATS_CA_CERT")]
    pub cluster_nats_ca_cert: Option<PathBuf>,
    /// Cluster mode, TLS to NATS: this node's client certificate (PEM), for servers that
    /// verify clients; with --cluster-nats-client-key.
    #[arg(long, env = "LOGBOOK_CLUSTER_NATS_CLIENT_CERT")]
    pub cluster_nats_client_cert: Option<PathBuf>,
    /// Cluster mode, TLS to NATS: the client certificate's private key (PEM).
    #[arg(long, env = "LOGBOOK_CLUSTER_NATS_CLIENT_KEY")]
    pub cluster_nats_client_key: Option<PathBuf>,
    /// Cluster mode, TLS to etcd: the CA certificates (PEM) the members' certificates are
    /// checked against; the endpoints are then https://.
    #[arg(long, env = "LOGBOOK_CLUSTER_ETCD_CA_CERT")]
    pub cluster_etcd_ca_cert: Option<PathBuf>,
    /// Cluster mode, TLS to etcd: this node's client certificate (PEM), for members that
    /// verify clients (--client-cert-auth); with --cluster-etcd-client-key.
    #[arg(long, env = "LOGBOOK_CLUSTER_ETCD_CLIENT_CERT")]
    pub cluster_etcd_client_cert: Option<PathBuf>,
    /// Cluster mode, TLS to etcd: the client certificate's private key (PEM).
    #[arg(long, env = "LOGBOOK_CLUSTER_ETCD_CLIENT_KEY")]
    pub cluster_etcd_client_key: Option<PathBuf>,
    /// `on` (the default): every route but /v1/health and /openapi.json needs a bearer token
    /// (the first admin token is written to DATA_DIR/admin.token on first start). `off`:
    /// nothing is checked — refused unless --listen is a loopback address.
    #[arg(long, env = "LOGBOOK_AUTH")]
    pub auth: Option<AuthMode>,
    /// HTTPS: the certificate chain (PEM, the server's certificate first); with --tls-key.
    /// `logbook tls self-signed` makes a pair for development.
    #[arg(long, env = "LOGBOOK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); with --tls-cert.
    #[arg(long, env = "LOGBOOK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Cluster mode over HTTPS: the CA certificates (PEM) other nodes' certificates are
    /// checked against when this node forwards a request. Default: --tls-cert itself.
    #[arg(long, env = "LOGBOOK_TLS_CA_CERT")]
    pub tls_ca_cert: Option<PathBuf>,
    /// The master key of personal data: a file of 64 hex digits, mode 0600, outside the
    /// data directory (decision 0030). Without it, the key itself may be given in
    /// LOGBOOK_MASTER_KEY; without either, no stream may declare personal data.
    #[arg(long, env = "LOGBOOK_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let given = ConfigLayer {
        data_dir: args.data_dir,
        listen: args.listen,
        connections_max: args.connections_max,
        requests_max: args.requests_max,
        connections_per_client_max: args.connections_per_client_max,
        connections_per_principal_max: args.connections_per_principal_max,
        requests_per_principal_max: args.requests_per_principal_max,
        long_polls_max: args.long_polls_max,
        wait_ms_max: args.wait_ms_max,
        txns_per_principal_max: args.txns_per_principal_max,
        groups_per_principal_max: args.groups_per_principal_max,
        group_members_per_principal_max: args.group_members_per_principal_max,
        header_read_timeout_ms: args.header_read_timeout_ms,
        body_read_timeout_ms: args.body_read_timeout_ms,
        body_rate_min_bytes_per_s: args.body_rate_min_bytes_per_s,
        open_txns_max: args.open_txns_max,
        txn_idle_timeout_ms: args.txn_idle_timeout_ms,
        shutdown_grace_ms: args.shutdown_grace_ms,
        snapshot_window_commits: args.snapshot_window_commits,
        certifier_bytes_max: args.certifier_bytes_max,
        partitions_max: args.partitions_max,
        scrub_rate_mb_per_s: args.scrub_rate_mb_per_s,
        audit_interval_s: args.audit_interval_s,
        max_clock_offset_ms: args.max_clock_offset_ms,
        phi_threshold: args.phi_threshold,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        audit_records_per_s: args.audit_records_per_s,
        audit_repair: args.audit_repair.then_some(true),
        audit_memory_bytes_max: args.audit_memory_bytes_max,
        allowed_hosts: (!args.allowed_hosts.is_empty()).then_some(args.allowed_hosts),
        cluster: ClusterLayer {
            node_id: args.cluster_node_id,
            advertise_url: args.cluster_advertise_url,
            nats_urls: args.cluster_nats_urls,
            etcd_endpoints: args.cluster_etcd_endpoints,
            nats_monitor_urls: args.cluster_nats_monitor_urls,
            nats_ca_cert: args.cluster_nats_ca_cert,
            nats_client_cert: args.cluster_nats_client_cert,
            nats_client_key: args.cluster_nats_client_key,
            etcd_ca_cert: args.cluster_etcd_ca_cert,
            etcd_client_cert: args.cluster_etcd_client_cert,
            etcd_client_key: args.cluster_etcd_client_key,
        },
        auth: args.auth,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_ca_cert: args.tls_ca_cert,
        master_key_file: args.master_key_file,
    };
    let config = given.over(file).resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(limits::BLOCKING_THREADS_MAX)
        .thread_name("logbook-http")
        .build()
        .context("starting the async runtime")?;
    let listen = config.listen.clone();
    runtime.block_on(async {
        let server = Server::bind(config)
            .await
            .map_err(|e| bind_error(e, &listen))?;
        let addr = server.local_addr().context("reading the bound address")?;
        let scheme = server.scheme();
        tracing::info!(%addr, scheme, "listening");
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
        drop(out);
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// An error of `Server::bind` in the user's terms: an address in use says which and what
/// to do (`--listen`, which `serve` and `quickstart` share); others as they are.
pub(crate) fn bind_error(e: ServerError, listen: &str) -> anyhow::Error {
    match &e {
        ServerError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!(
                "cannot listen on {listen}: the address is in use (another `logbook serve` or \
                 quickstart running?). Stop it, or pass --listen HOST:PORT (e.g. --listen \
                 127.0.0.1:7701, or --listen 127.0.0.1:0 for any free port)"
            )
        }
        ServerError::Bind { .. } => anyhow::anyhow!(e).context("starting the server (--listen)"),
        _ => anyhow::anyhow!(e),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
