//! `logbook bench http`: the HTTP API under load, from a load generator in this process.
//!
//! ```text
//!  this process ── server runtime (--server-threads)  ◀── loopback TCP ──┐
//!               └─ client runtime (--client-threads): raw HTTP/1.1 connections, each a
//!                  sending task and a receiving task, ≤ --depth requests in flight
//!                   appends: POST /v1/streams/bench/records, one record each (fsync always)
//!                   reads:   GET /v1/views/bench_rows/rows/{key}  (a table view of the stream)
//! ```
//!
//! Each phase runs `--seconds`: **closed loop** (`--connections` connections, each keeping
//! `--depth` requests in flight) and **open loop** at fixed rates (the rate spread over
//! `--open-connections` connections, each on its own schedule, sending each request when it
//! is due without waiting for earlier answers, up to `--depth` unanswered — HTTP/1.1
//! pipelining above 1; requests due at once leave in one write). Open-loop latency counts
//! from the *scheduled* send time whenever a request is late (so queueing behind a slow
//! answer is measured — no coordinated omission); when it is on schedule it counts from the
//! actual send, so the 1 ms granularity of the timer is not billed to the server. With
//! PostgreSQL installed, `pgbench -S` (select-only point reads) runs beside it on a
//! throwaway cluster for comparison.
//!
//! **Configurations.** `--auth off,on` × `--tls off,on` each run every phase on a fresh
//! server (TLS: a self-signed certificate made for the run, which the load generator
//! trusts); `--rounds N` runs the whole list N times in turn, so load from elsewhere on the
//! machine falls on every configuration alike, and the report's `summary` gives each
//! configuration's medians over the rounds and the ratios issue 17 budgets: authentication
//! on ÷ off (plain HTTP) and TLS ÷ plain (authentication on).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hyper::Method;
use logbook_api::paths::{self, Query};
use logbook_server::{AuthMode, ServerConfig};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::conn::Conn;

mod cluster;
mod summary;
use super::kit::{
    LATENCY_US_MAX, TempDir, latency_histogram, loadavg_1m, process_cpu_seconds, round1, round3,
};
use super::postgres::{PgCluster, PgTools, PgbenchSummary, check_output};
use super::server::{BenchServer, wait_ready_over};

/// The stream appended to.
const STREAM: &str = "bench";
/// The table view read.
const VIEW: &str = "bench_rows";
/// Records per request when preloading the keys.
const PRELOAD_BATCH: usize = 1000;

/// Arguments of `logbook bench http`.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpBenchArgs {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Open-loop append rates, records/s (single-record requests).
    #[arg(long, value_delimiter = ',', default_value = "10000,25000,50000")]
    pub append_rates: Vec<u64>,
    /// Open-loop point-read rates, reads/s.
    #[arg(long, value_delimiter = ',', default_value = "25000,50000,100000")]
    pub read_rates: Vec<u64>,
    /// Connections of the closed-loop runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Connections the open-loop rate is spread over.
    #[arg(long, default_value_t = 128)]
    pub open_connections: usize,
    /// Most requests in flight per connection (HTTP/1.1 pipelining above 1). Closed loop
    /// keeps this many in flight; open loop sends when due unless this many are unanswered.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Bytes of each appended record's value (a JSON object padded to this size).
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Distinct keys (appends cycle through them; reads pick one at random).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Skip the `pgbench -S` comparison.
    #[arg(long)]
    pub no_pg: bool,
    /// A directory of PostgreSQL programs (default: looked up).
    #[arg(long)]
    pub pg_bin: Option<std::path::PathBuf>,
    /// Authentication of the server, `on` and/or `off` (comma-separated): each runs every
    /// phase on a fresh server, in this order, so `--auth off,on` compares them in one run.
    #[arg(long, value_delimiter = ',', default_value = "on")]
    pub auth: Vec<AuthMode>,
    /// TLS of the server, `off` and/or `on` (comma-separated): each runs every phase on a
    /// fresh server, after the `--auth` configurations of the one before it.
    #[arg(long, value_delimiter = ',', default_value = "off")]
    pub tls: Vec<TlsMode>,
    /// How many times every configuration (`--auth` × `--tls`) runs, in turn; the summary
    /// takes medians over the rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Also run every phase against this running cluster (its nodes' URLs, comma-separated,
    /// e.g. `scripts/dev-cluster up`'s), the connections spread round-robin over the nodes,
    /// after the single node of this process; reads then carry the session's consistency
    /// token on both. Reported under `cluster`, with each run's ratio to the single node's.
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// The bearer token the clients send to `--cluster` (it creates a stream and a view).
    #[arg(long = "auth-token", env = "LOGBOOK_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run every configuration with the padding declared a personal field (decision
    /// 0030), its subject the record's key number: every append encrypts it under that
    /// subject's key (keys made while preloading) and every view read decrypts it. Each
    /// configuration then runs plain, then encrypted, on fresh servers; the report's
    /// `personal_fields` gives the encrypted medians' ratio to the plain ones (budget:
    /// appends ≥ 0.8× plain, issue 19).
    #[arg(long)]
    pub personal_fields: bool,
}

/// Whether the benchmarked server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// HTTPS with a self-signed certificate made for the run.
    On,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s {
            "on" => Ok(TlsMode::On),
            "off" => Ok(TlsMode::Off),
            other => Err(format!("tls must be on or off, not {other:?}")),
        }
    }
}

/// One server configuration of a run.
#[derive(Debug, Clone, Copy)]
struct Setup {
    auth: AuthMode,
    tls: TlsMode,
    /// Which pass over the configurations this is (from 0).
    round: usize,
    /// The stream declares personal fields (its padding is encrypted).
    encrypted: bool,
}

impl Setup {
    fn auth_label(self) -> &'static str {
        match self.auth {
            AuthMode::On => "on",
            AuthMode::Off => "off",
        }
    }

    fn tls_label(self) -> &'static str {
        match self.tls {
            TlsMode::On => "on",
            TlsMode::Off => "off",
        }
    }
}

/// The certificate of the TLS runs: the files the server reads, and the connector that
/// trusts it.
struct TlsPair {
    cert: PathBuf,
    key: PathBuf,
    connector: TlsConnector,
}

impl TlsPair {
    /// A self-signed pair for `127.0.0.1` and `localhost` in `dir`.
    fn create(dir: &Path) -> anyhow::Result<TlsPair> {
        let names = ["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = crate::tls_cmd::self_signed(dir, &names)?;
        let pem = std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
        let connector = crate::net::connector(Some(&pem))?;
        Ok(TlsPair {
            cert,
            key,
            connector,
        })
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct RunResult {
    /// `on`: every request carried a bearer token the server checked; `off`: none.
    auth: &'static str,
    /// `on`: HTTPS (keep-alive connections: one handshake per connection).
    tls: &'static str,
    /// The pass over the configurations (from 0).
    round: usize,
    /// Whether the stream declared personal fields (its padding encrypted).
    encrypted: bool,
    op: &'static str,
    mode: &'static str,
    /// Target rate (open loop); null for closed loop.
    rate: Option<u64>,
    connections: usize,
    /// Most requests in flight per connection.
    depth: usize,
    requests: u64,
    achieved_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    errors: u64,
    /// CPU time of this whole process (server, its log writers and view processors, and the
    /// load generator) per request, µs: what a request costs all in, whatever else the
    /// machine runs. 2 cores give 2,000,000 CPU-µs per second.
    cpu_us_per_request: Option<f64>,
    /// CPU cores this process kept busy on average during the run.
    cpu_cores_used: Option<f64>,
    /// The first failed answer (or why requests went unanswered), to tell what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// The request a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Append,
    Read,
}

/// How a run paces its requests.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Closed,
    Open { rate: u64 },
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// The server cannot start, a setup request fails, or the load generator cannot connect.
pub fn run(args: &HttpBenchArgs) -> anyhow::Result<()> {
    if args.seconds == 0
        || args.connections == 0
        || args.open_connections == 0
        || args.keys == 0
        || args.rounds == 0
    {
        bail!("--seconds, --connections, --open-connections, --keys and --rounds must be positive");
    }
    let tmp = TempDir::create(&std::env::temp_dir(), "logbook-bench-http")?;
    let tls = match args.tls.contains(&TlsMode::On) {
        true => Some(TlsPair::create(&tmp.0.join("tls"))?),
        false => None,
    };
    let load_before = loadavg_1m();
    let mut results = Vec::new();
    for round in 0..args.rounds {
        for &tls_mode in &args.tls {
            for &auth in &args.auth {
                for encrypted in [false, true] {
                    if encrypted && !args.personal_fields {
                        continue;
                    }
                    let setup = Setup {
                        auth,
                        tls: tls_mode,
                        round,
                        encrypted,
                    };
                    results.extend(run_server(args, &tmp.0, setup, tls.as_ref())?);
                }
            }
        }
    }
    drop(tmp);
    let plain: Vec<RunResult> = results.iter().filter(|r| !r.encrypted).cloned().collect();
    let summary = summary::summary(&plain);
    let personal = match args.personal_fields {
        true => summary::personal_ratios(&results),
        false => serde_json::Value::Null,
    };
    let cluster = match args.cluster.is_empty() {
        true => serde_json::Value::Null,
        false => cluster::run(args, &results)?,
    };
    let load_after = loadavg_1m();

    let pg = if args.no_pg {
        json!({"skipped": "--no-pg"})
    } else {
        match PgTools::find(args.pg_bin.as_deref()) {
            Err(why) => json!({ "skipped": why }),
            Ok(tools) => match pgbench_select(args, &tools) {
                Ok(v) => v,
                Err(e) => json!({ "error": format!("{e:#}") }),
            },
        }
    };
    let report = json!({
        "benchmark": "http",
        "parameters": {
            "seconds": args.seconds,
            "connections_closed_loop": args.connections,
            "connections_open_loop": args.open_connections,
            "depth": args.depth,
            "record_bytes": args.record_bytes,
            "partitions": args.partitions,
            "fsync": "always",
            "keys": args.keys,
            "server_threads": args.server_threads,
            "client_threads": args.client_threads,
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "view": "table view over the appended stream",
            "personal_fields": args.personal_fields,
            "rounds": args.rounds,
        },
        "loadavg_1m": { "before": load_before, "after": load_after },
        "runs": results,
        "summary": summary,
        "personal_fields": personal,
        "cluster": cluster,
        "pgbench_select_only": pg,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&results_of(&report));
        println!(
            "summary: {}",
            serde_json::to_string_pretty(&report["summary"])?
        );
        if !report["personal_fields"].is_null() {
            println!(
                "encrypted ÷ plain: {}",
                serde_json::to_string_pretty(&report["personal_fields"])?
            );
        }
        if !report["cluster"].is_null() {
            println!("cluster ({}):", report["cluster"]["nodes"]);
            print_table(&results_of(&report["cluster"]));
            println!("cluster ÷ single: {}", report["cluster"]["ratios"]);
        }
        println!("pgbench -S: {}", report["pgbench_select_only"]);
    }
    Ok(())
}

/// Runs every phase against a fresh server in a directory of its own under `dir`, as
/// `setup` says: with authentication on, its requests carry the admin token the server
/// wrote there; with TLS, it serves `tls`'s certificate and the clients trust it.
fn run_server(
    args: &HttpBenchArgs,
    dir: &Path,
    setup: Setup,
    tls: Option<&TlsPair>,
) -> anyhow::Result<Vec<RunResult>> {
    let tls = match setup.tls {
        TlsMode::On => Some(tls.context("no certificate for a TLS run")?),
        TlsMode::Off => None,
    };
    let data = dir.join(format!(
        "data-auth-{}-tls-{}-{}{}",
        setup.auth_label(),
        setup.tls_label(),
        setup.round,
        if setup.encrypted { "-encrypted" } else { "" }
    ));
    let master_key_file = if setup.encrypted {
        Some(bench_master_key(dir)?)
    } else {
        None
    };
    let config = ServerConfig {
        auth: setup.auth,
        master_key_file,
        tls: tls.map(|t| logbook_server::config::TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            ca_cert: None,
        }),
        ..ServerConfig::default()
    };
    let server = BenchServer::start(&data, args.server_threads, config)?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let connector = tls.map(|t| t.connector.clone());
    client_rt.block_on(wait_ready_over(
        server.addr(),
        Duration::from_secs(60),
        connector.as_ref(),
    ))?;
    let bearer = match setup.auth {
        AuthMode::On => crate::client::admin_token(&data)?,
        AuthMode::Off => None,
    };
    let target = Target {
        addrs: vec![server.addr()],
        bearer,
        stream: STREAM.to_string(),
        view: VIEW.to_string(),
        spec: stream_spec(args, setup.encrypted),
        session_token: !args.cluster.is_empty(),
        tls: connector,
    };
    let results = client_rt.block_on(measure(args, &target));
    drop(client_rt);
    server.stop();
    // Each configuration's data is its own; the next starts from an empty directory.
    let _ = std::fs::remove_dir_all(&data);
    let mut results = results?;
    for r in &mut results {
        r.auth = setup.auth_label();
        r.tls = setup.tls_label();
        r.round = setup.round;
        r.encrypted = setup.encrypted;
    }
    Ok(results)
}

/// The benchmark stream's creation body: when `encrypted`, `pad` is personal data of the
/// subject named by `user`.
fn stream_spec(args: &HttpBenchArgs, encrypted: bool) -> serde_json::Value {
    let mut spec = json!({"partitions": args.partitions, "fsync": "always"});
    if encrypted {
        spec["personal_data"] = json!({"subject": "/user", "fields": ["/pad"]});
    }
    spec
}

/// A random master key in a 0600 file beside (not inside) the data directory.
fn bench_master_key(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("master.key");
    if !path.exists() {
        let mut hex = String::with_capacity(64);
        for _ in 0..32 {
            hex.push_str(&format!("{:02x}", rand::random::<u8>()));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(hex.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

fn results_of(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["runs"].as_array().cloned().unwrap_or_default()
}

fn print_table(runs: &[serde_json::Value]) {
    println!(
        "{:<5} {:<4} {:<4} {:<10} {:<7} {:>9} {:>6} {:>6} {:>12} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "round",
        "auth",
        "tls",
        "op",
        "mode",
        "rate",
        "conns",
        "depth",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "cpu µs/op"
    );
    for r in runs {
        println!(
            "{:<5} {:<4} {:<4} {:<10} {:<7} {:>9} {:>6} {:>6} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>9}",
            r["round"].as_u64().unwrap_or(0),
            r["auth"].as_str().unwrap_or(""),
            r["tls"].as_str().unwrap_or(""),
            match r["encrypted"].as_bool() {
                Some(true) => format!("{}+pf", r["op"].as_str().unwrap_or("")),
                _ => r["op"].as_str().unwrap_or("").to_string(),
            },
            r["mode"].as_str().unwrap_or(""),
            r["rate"]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string()),
            r["connections"].as_u64().unwrap_or(0),
            r["depth"].as_u64().unwrap_or(0),
            r["achieved_per_s"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["p999_ms"].as_f64().unwrap_or(0.0),
            r["errors"].as_u64().unwrap_or(0),
            r["cpu_us_per_request"].to_string(),
        );
    }
}

/// Where a benchmark's requests go, and what they name.
pub(super) struct Target {
    /// The nodes: the setup calls go to the first, the connections of a run round-robin to
    /// all.
    pub(super) addrs: Vec<SocketAddr>,
    /// The bearer token every request carries, if any.
    pub(super) bearer: Option<String>,
    pub(super) stream: String,
    pub(super) view: String,
    /// The body of the stream's creation.
    pub(super) spec: serde_json::Value,
    /// Reads carry the session's consistency token (that of its last append), as the client
    /// does when it moves between nodes.
    pub(super) session_token: bool,
    /// HTTPS through this connector (which trusts the nodes' certificate), or plain HTTP.
    pub(super) tls: Option<TlsConnector>,
}

/// Sets up the stream, the view and the keys, then runs every phase.
pub(super) async fn measure(
    args: &HttpBenchArgs,
    target: &Target,
) -> anyhow::Result<Vec<RunResult>> {
    let bearer = target.bearer.as_deref();
    let mut c = Conn::open_with(target.addrs[0], bearer, target.tls.as_ref()).await?;
    expect(
        c.call(
            Method::PUT,
            &paths::stream(&target.stream),
            Some(target.spec.to_string()),
        )
        .await?,
        "creating the stream",
    )?;
    let view = json!({"source": target.stream, "kind": "table"});
    expect(
        c.call(
            Method::PUT,
            &paths::view(&target.view),
            Some(view.to_string()),
        )
        .await?,
        "creating the view",
    )?;
    // Every key once, in batches; then wait until the view has applied the last batch.
    let padding = padding(args.record_bytes);
    let mut token = String::new();
    let mut k = 0;
    while k < args.keys {
        let end = (k + PRELOAD_BATCH as u64).min(args.keys);
        let records: Vec<serde_json::Value> = (k..end)
            .map(|i| json!({"key": format!("k{i}"), "value": {"i": i, "user": i, "pad": padding}}))
            .collect();
        let body = json!({ "records": records }).to_string();
        token = append_token(&mut c, &target.stream, body, "preloading the keys").await?;
        k = end;
    }
    wait_applied(target, &format!("k{}", args.keys - 1), &token).await?;

    let mut out = Vec::new();
    for &pace in std::iter::once(&Pace::Closed).chain(&open(&args.append_rates)) {
        let r = run_phase(args, target, Op::Append, pace, "").await?;
        eprintln!("{}", serde_json::to_string(&r)?);
        out.push(r);
    }
    let read_query = match target.session_token {
        // The session's last write: every node has applied it before the reads start, so
        // they measure reads that carry a token, not the views catching up.
        true => {
            let body = json!({"key": "k0", "value": {"i": 0, "pad": padding}}).to_string();
            let token =
                append_token(&mut c, &target.stream, body, "the session's last write").await?;
            wait_applied(target, "k0", &token).await?;
            Query::new().push("token", &token).finish()
        }
        false => String::new(),
    };
    for &pace in std::iter::once(&Pace::Closed).chain(&open(&args.read_rates)) {
        let r = run_phase(args, target, Op::Read, pace, &read_query).await?;
        eprintln!("{}", serde_json::to_string(&r)?);
        out.push(r);
    }
    Ok(out)
}

fn open(rates: &[u64]) -> Vec<Pace> {
    rates.iter().map(|&rate| Pace::Open { rate }).collect()
}

/// Appends `body` on `c`; the write's consistency token.
async fn append_token(
    c: &mut Conn,
    stream: &str,
    body: String,
    what: &str,
) -> anyhow::Result<String> {
    let (status, resp) = c
        .call(Method::POST, &paths::records(stream), Some(body))
        .await?;
    expect((status, resp.clone()), what)?;
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap_or_default();
    match v["token"].as_str() {
        Some(t) => Ok(t.to_string()),
        None => bail!("{what}: the answer has no token: {v}"),
    }
}

/// Reads `key` of the view with `token` on every node of `target` (waiting there until the
/// node's view has applied the write the token names); a node that does not know the view
/// yet (its catalog is behind) is asked again, for up to a minute.
async fn wait_applied(target: &Target, key: &str, token: &str) -> anyhow::Result<()> {
    let path = paths::view_row(&target.view, key)
        + &Query::new()
            .push("token", token)
            .push("timeout_ms", 60_000)
            .finish();
    for &addr in &target.addrs {
        let mut c = Conn::open_with(addr, target.bearer.as_deref(), target.tls.as_ref()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = c.call(Method::GET, &path, None).await?;
            if matches!(status, 404 | 503) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            expect(
                (status, body),
                &format!("waiting for {addr}'s view to apply {key}"),
            )?;
            break;
        }
    }
    Ok(())
}

fn expect(got: (u16, Vec<u8>), what: &str) -> anyhow::Result<()> {
    if !(200..300).contains(&got.0) {
        bail!(
            "{what}: HTTP {}: {}",
            got.0,
            String::from_utf8_lossy(&got.1)
        );
    }
    Ok(())
}

fn padding(record_bytes: usize) -> String {
    // `{"i":NNNN,"pad":""}` is about 20 bytes.
    "x".repeat(record_bytes.saturating_sub(20))
}

/// A connection's halves, each driven by a task of its own.
type Halves = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

/// A connection to `addr` as `target` says, split: a TCP socket's own halves, or a TLS
/// stream's (which share a lock; the handshake is made here, before the run's clock starts).
async fn connect(target: &Target, addr: SocketAddr) -> anyhow::Result<Halves> {
    match &target.tls {
        None => {
            let tcp = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            tcp.set_nodelay(true)?;
            let (rd, wr) = tcp.into_split();
            Ok((Box::new(rd), Box::new(wr)))
        }
        Some(tls) => {
            let io = crate::net::connect(&addr.to_string(), Some(tls)).await?;
            let (rd, wr) = tokio::io::split(io);
            Ok((Box::new(rd), Box::new(wr)))
        }
    }
}

/// One measured run: `connections` connections, merged histograms.
async fn run_phase(
    args: &HttpBenchArgs,
    target: &Target,
    op: Op,
    pace: Pace,
    read_query: &str,
) -> anyhow::Result<RunResult> {
    let connections = match pace {
        Pace::Closed => args.connections,
        Pace::Open { .. } => args.open_connections,
    };
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let addr = target.addrs[i % target.addrs.len()];
        conns.push(connect(target, addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(args.seconds);
    let cpu_before = process_cpu_seconds();
    let shape = Arc::new(RequestShape {
        op,
        host: target.addrs[0].to_string(),
        auth: target
            .bearer
            .as_ref()
            .map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n")),
        pad: padding(args.record_bytes),
        keys: args.keys,
        stream: target.stream.clone(),
        view: target.view.clone(),
        read_query: read_query.to_string(),
    });
    let mut tasks = Vec::with_capacity(connections);
    for (i, (rd, wr)) in conns.into_iter().enumerate() {
        let schedule = match pace {
            Pace::Closed => None,
            Pace::Open { rate } => {
                let interval = Duration::from_secs_f64(connections as f64 / rate.max(1) as f64);
                Some((interval, interval.mul_f64(i as f64 / connections as f64)))
            }
        };
        let depth = Arc::new(Semaphore::new(args.depth.max(1)));
        let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(send_loop(
            wr,
            shape.clone(),
            i as u64,
            depth.clone(),
            sent_tx,
            start,
            end,
            schedule,
        ));
        let reader = tokio::spawn(receive_loop(rd, depth, sent_rx));
        tasks.push((writer, reader));
    }
    let mut hist = latency_histogram()?;
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    for (writer, reader) in tasks {
        // The write half stays open until every answer is in: dropping it half-closes the
        // connection, and a server may then drop answers it has not written yet.
        let (sent, write_half) = writer.await.context("a load task failed")?;
        let tally = reader.await.context("a load task failed")??;
        drop(write_half);
        hist.add(&tally.hist).context("merging histograms")?;
        // Requests sent but never answered (a broken connection) are errors.
        requests += sent;
        let unanswered = sent.saturating_sub(tally.answered);
        errors += tally.errors + unanswered;
        if first_error.is_none() {
            first_error = tally
                .first_error
                .or_else(|| (unanswered > 0).then(|| format!("{unanswered} requests unanswered")));
        }
    }
    // Requests still in flight at the end of the window finish after it: rate over the
    // whole time taken.
    let seconds = start.elapsed().as_secs_f64().max(args.seconds as f64);
    let ms = |q: f64| round3(hist.value_at_quantile(q) as f64 / 1000.0);
    // One reading for both figures, so they describe the same interval.
    let cpu_seconds = cpu_before
        .zip(process_cpu_seconds())
        .map(|(b, a)| (a - b).max(0.0));
    Ok(RunResult {
        auth: "",
        tls: "",
        round: 0,
        encrypted: false,
        cpu_us_per_request: cpu_seconds
            .filter(|_| requests > 0)
            .map(|s| round1(s * 1e6 / requests as f64)),
        cpu_cores_used: cpu_seconds.map(|s| round3(s / seconds)),
        op: match op {
            Op::Append => "append",
            Op::Read => "read",
        },
        mode: match pace {
            Pace::Closed => "closed",
            Pace::Open { .. } => "open",
        },
        rate: match pace {
            Pace::Closed => None,
            Pace::Open { rate } => Some(rate),
        },
        connections,
        depth: args.depth.max(1),
        requests,
        achieved_per_s: round1(requests.saturating_sub(errors) as f64 / seconds),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: round3(hist.max() as f64 / 1000.0),
        errors,
        first_error,
    })
}

/// What every request of a run looks like.
struct RequestShape {
    op: Op,
    /// The `host` header (the first node's address: a node does not check it).
    host: String,
    /// The `authorization` header line (with its CRLF), or empty.
    auth: String,
    pad: String,
    keys: u64,
    stream: String,
    view: String,
    /// Appended to a read's path: `?token=…` or empty.
    read_query: String,
}

impl RequestShape {
    /// Appends request `n` (key from `rng`) to `buf`, as HTTP/1.1 bytes.
    fn write(&self, buf: &mut Vec<u8>, key: u64, n: u64) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match self.op {
            Op::Append => {
                let body = format!(
                    "{{\"key\":\"k{key}\",\"value\":{{\"i\":{n},\"user\":{key},\"pad\":\"{}\"}}}}",
                    self.pad
                );
                write!(
                    buf,
                    "POST /v1/streams/{}/records HTTP/1.1\r\nhost: {}\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    self.stream,
                    self.host,
                    self.auth,
                    body.len()
                )
            }
            Op::Read => write!(
                buf,
                "GET /v1/views/{}/rows/k{key}{} HTTP/1.1\r\nhost: {}\r\n{}\r\n",
                self.view, self.read_query, self.host, self.auth
            ),
        };
    }
}

/// One connection's sending side. Closed loop (`schedule` None): keeps `depth` requests in
/// flight, sending as soon as an answer frees a slot. Open loop: sends each request when it
/// is due, without waiting for earlier answers (HTTP/1.1 pipelining) unless `depth` are
/// already in flight; requests due at the same moment leave in one write. Each request's
/// latency starts at its due time when late (no coordinated omission), else at its send.
/// Returns the number of requests sent, and the write half (still open).
#[expect(
    clippy::too_many_arguments,
    reason = "a task's inputs, moved in once at spawn; one caller"
)]
async fn send_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    shape: Arc<RequestShape>,
    seed: u64,
    depth: Arc<Semaphore>,
    sent: tokio::sync::mpsc::UnboundedSender<Instant>,
    start: Instant,
    end: Instant,
    schedule: Option<(Duration, Duration)>,
) -> (u64, W) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut n: u64 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    tokio::time::sleep_until(start.into()).await;
    loop {
        buf.clear();
        // The first request of this write: wait for its due time and a free slot.
        let first_due = match schedule {
            None => None,
            Some((interval, offset)) => {
                let due = start + offset + interval.mul_f64(n as f64);
                if due >= end {
                    break;
                }
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                Some(due)
            }
        };
        let Ok(permit) = depth.acquire().await else {
            break;
        };
        permit.forget();
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut from = match first_due {
            Some(due) if due < now => due,
            _ => now,
        };
        loop {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            shape.write(&mut buf, rng % shape.keys, n);
            n += 1;
            if sent.send(from).is_err() {
                return (n, wr);
            }
            // More requests in this write: those already due, while slots are free.
            let next_due = match schedule {
                None => now,
                Some((interval, offset)) => start + offset + interval.mul_f64(n as f64),
            };
            if next_due > now || next_due >= end || buf.len() > 48 * 1024 {
                break;
            }
            let Ok(permit) = depth.try_acquire() else {
                break;
            };
            permit.forget();
            from = if schedule.is_some() { next_due } else { now };
        }
        // A TLS stream holds what it encrypted until flushed.
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            break;
        }
    }
    (n, wr)
}

/// What one connection's answers measured.
struct Tally {
    hist: Histogram<u64>,
    answered: u64,
    errors: u64,
    /// The first answer that was not a success, as received.
    first_error: Option<String>,
}

/// One connection's receiving side: parses answers in order (they come in request order on
/// HTTP/1.1), records each one's latency against its send time, frees its slot. Ends when
/// the sender is done and every request it sent is answered, or the connection breaks.
async fn receive_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    depth: Arc<Semaphore>,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        hist: latency_histogram()?,
        answered: 0,
        errors: 0,
        first_error: None,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while let Some(from) = sent.recv().await {
        // One full answer in `buf`: its status and length.
        let (status, len) = loop {
            if let Some(parsed) = parse_response(&buf)? {
                break parsed;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(tally),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        tally.answered += 1;
        if !(200..300).contains(&status) {
            tally.errors += 1;
            if tally.first_error.is_none() {
                tally.first_error = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
        buf.drain(..len);
        let us = u64::try_from(from.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
        depth.add_permits(1);
    }
    Ok(tally)
}

/// The status and total length of the first HTTP/1.1 answer in `buf`, if it is complete.
/// The server always sends `content-length` (no chunked bodies).
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("a response head is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .context("a response without a status line")?;
    let mut body = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            body = value.trim().parse().context("a bad content-length")?;
        }
    }
    let total = head_end + 4 + body;
    Ok((buf.len() >= total).then_some((status, total)))
}

/// `pgbench -S` (select-only: one primary-key lookup per transaction) on a throwaway
/// cluster, closed loop with `--connections` clients, 2 pgbench threads.
fn pgbench_select(args: &HttpBenchArgs, tools: &PgTools) -> anyhow::Result<serde_json::Value> {
    let version = tools.server_version();
    eprintln!("PostgreSQL peer: {version}, pgbench -S");
    let cluster = PgCluster::start(tools, args.connections)?;
    let out = cluster
        .pgbench()
        .args(["-i", "-q", "-s", "10", "postgres"])
        .output()
        .context("running pgbench -i")?;
    check_output("pgbench -i", &out)?;
    let run_args = [
        "-S".to_string(),
        "-c".to_string(),
        args.connections.to_string(),
        "-j".to_string(),
        "2".to_string(),
        "-T".to_string(),
        args.seconds.to_string(),
        "--log".to_string(),
        "--log-prefix=pgbench_log".to_string(),
        "postgres".to_string(),
    ];
    let out = cluster
        .pgbench()
        .args(&run_args)
        .output()
        .context("running pgbench -S")?;
    check_output("pgbench -S", &out)?;
    let summary = PgbenchSummary::parse(&String::from_utf8_lossy(&out.stdout));
    let hist = pgbench_latencies(&cluster.dir.0)?;
    let ms = |q: f64| round3(hist.value_at_quantile(q) as f64 / 1000.0);
    Ok(json!({
        "version": version,
        "command": format!("pgbench -i -s 10; pgbench {}", run_args.join(" ")),
        "tps": summary.tps.map(round1),
        "latency_average_ms": summary.latency_average_ms,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "transactions": hist.len(),
    }))
}

/// Latencies (µs, the third field of each line) from pgbench's per-transaction logs.
fn pgbench_latencies(dir: &Path) -> anyhow::Result<Histogram<u64>> {
    let mut hist = latency_histogram()?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("pgbench_log."))
        {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<u64>().ok())
            {
                hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
            }
        }
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_answers_are_split_by_content_length() -> anyhow::Result<()> {
        let one = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{\"a\":";
        // Incomplete head, incomplete body: not yet.
        assert_eq!(parse_response(&one[..20])?, None);
        assert_eq!(parse_response(&one[..one.len() - 1])?, None);
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let (status, len) = parse_response(&two)?.ok_or_else(|| anyhow::anyhow!("first"))?;
        assert_eq!((status, len), (201, one.len()));
        let (status, len) =
            parse_response(&two[len..])?.ok_or_else(|| anyhow::anyhow!("second"))?;
        assert_eq!((status, len), (404, two.len() - one.len()));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        Ok(())
    }

    #[test]
    fn requests_are_well_formed_http() {
        let shape = RequestShape {
            op: Op::Append,
            host: "127.0.0.1:1".into(),
            auth: String::new(),
            pad: "xx".into(),
            keys: 10,
            stream: STREAM.into(),
            view: VIEW.into(),
            read_query: String::new(),
        };
        let mut buf = Vec::new();
        shape.write(&mut buf, 7, 3);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("POST /v1/streams/bench/records HTTP/1.1\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["key"], "k7");
        assert_eq!(v["value"]["i"], 3);
        let read = RequestShape {
            op: Op::Read,
            ..shape
        };
        buf.clear();
        read.write(&mut buf, 9, 0);
        assert_eq!(
            buf,
            b"GET /v1/views/bench_rows/rows/k9 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n"
        );
        let authed = RequestShape {
            auth: "authorization: Bearer lb_x\r\n".into(),
            ..read
        };
        buf.clear();
        authed.write(&mut buf, 9, 0);
        assert_eq!(
            buf,
            b"GET /v1/views/bench_rows/rows/k9 HTTP/1.1\r\nhost: 127.0.0.1:1\r\nauthorization: Bearer lb_x\r\n\r\n"
        );
        let with_token = RequestShape {
            read_query: "?token=t1".into(),
            auth: String::new(),
            ..authed
        };
        let mut tokened = Vec::new();
        with_token.write(&mut tokened, 4, 0);
        assert_eq!(
            tokened,
            b"GET /v1/views/bench_rows/rows/k4?token=t1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n"
        );
    }
}
