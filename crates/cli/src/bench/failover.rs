//! `logbook bench failover`: the stall of appends when a partition's JetStream stream leader
//! dies, on a development cluster (`scripts/dev-cluster up DIR`).
//!
//! ```text
//!  setup:  a fresh one-partition stream through --server (name with this run's time)
//!  load:   --clients tasks on --server, each appending one record at a time with a request
//!          id (`Idempotency-Key`), the same id sent again after a failure until acknowledged
//!  kill k: after --settle-seconds, the stream's leader nats-server from any server's
//!          /jsz (its stream description names the Logbook stream), its pid file removed
//!          (so dev-cluster's watcher lets it go), `kill -9`; stall = the first ack of a
//!          request sent after the kill − the last ack before the kill (an ack the dead
//!          leader had sent before it died, arriving just after, is not a recovery); the
//!          election = when a surviving server first names a new leader (polled every
//!          50 ms), so stall = election (nats-server's) + after_election (Logbook's); then
//!          the server started again from DIR/nI.conf and waited for until the leader
//!          reports every replica current
//!  check:  the stream read back from offset 0: every acknowledged record exactly once
//! ```
//!
//! The clients retry without limit while the cluster recovers (a stall is what is
//! measured); a request still unacknowledged a minute after the run is counted as
//! `unknown`, neither lost nor duplicated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hyper::Method;
use logbook_api::paths::{self, Query};
use serde_json::json;

use super::conn::{Conn, socket_addr};
use super::kit::{loadavg_1m, round1};
use super::server::wait_ready;
use super::stall::{Ack, Acks, CommandLine, kill_by_pid_file, since_us, start_detached, summary};

/// How long a request or a recovery step may take before the benchmark gives up on it.
const RECOVERY_MAX: Duration = Duration::from_secs(120);
/// Pause between a client's tries of one request.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Records per read when checking the stream.
const READ_LIMIT: usize = 1000;
/// Pause between two looks for the new leader after a kill: the resolution of `election_ms`
/// (and of `after_election_ms`, which may come out below 0 by up to about this much).
const ELECTION_POLL: Duration = Duration::from_millis(50);

/// Arguments of `logbook bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// The development cluster's directory (`scripts/dev-cluster up DIR`): its nI.conf,
    /// nI.pid and nI.log of the nats-servers.
    #[arg(long)]
    pub dev_cluster: PathBuf,
    /// The Logbook node the clients append through.
    #[arg(long, default_value = "http://127.0.0.1:17701")]
    pub server: String,
    /// Bearer token (default: DIR/l1/admin.token).
    #[arg(long = "auth-token", env = "LOGBOOK_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Leader kills, one after another.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Appending clients (one request in flight each).
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Seconds of appends before each kill.
    #[arg(long, default_value_t = 2)]
    pub settle_seconds: u64,
    /// The nats-server program (default: looked up on PATH, then /usr/sbin).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Print one JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// One nats-server of the development cluster.
struct NatsServer {
    /// `server_name` of its configuration (`n1`…).
    name: String,
    conf: PathBuf,
    /// Its monitoring endpoint.
    monitor: SocketAddr,
}

/// What the clients share with the benchmark.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Acknowledged requests since the last kill's measurement.
    acks: Acks,
    /// Tries that failed (an error answer or a broken connection), all clients.
    failed_tries: AtomicU64,
}

/// What one client did: records 0..acked acknowledged, in order; `unknown` the one it was
/// still sending when it gave up, if any.
struct ClientTally {
    acked: u64,
    unknown: Option<u64>,
    conflicts: u64,
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// The cluster's files cannot be read, a setup request fails, a leader cannot be found, or a
/// step of the recovery takes longer than two minutes.
pub fn run(args: &FailoverArgs) -> anyhow::Result<()> {
    if args.kills == 0 || args.clients == 0 {
        bail!("--kills and --clients must be positive");
    }
    let servers = nats_servers(&args.dev_cluster)?;
    let program = match &args.nats_server {
        Some(p) => p.clone(),
        None => find_program("nats-server").context("nats-server not found: --nats-server")?,
    };
    let token = match &args.auth_token {
        Some(t) => Some(t.clone()),
        None => crate::client::admin_token(&args.dev_cluster.join("l1"))?,
    };
    let node = socket_addr(&args.server).context("--server")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-failover")
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let load_before = loadavg_1m();
    let report = rt.block_on(measure(args, &servers, &program, node, token.as_deref()))?;
    let report = json!({
        "benchmark": "failover",
        "parameters": {
            "server": args.server,
            "kills": args.kills,
            "clients": args.clients,
            "settle_seconds": args.settle_seconds,
            "nats_server": program.display().to_string(),
            "stall": "first acknowledgment of a request sent after the kill − last acknowledgment before the kill",
            "election": "kill → a surviving nats-server first names a new stream leader (polled every 50 ms): nats-server's part",
            "after_election": "that → the first acknowledgment of a request sent after the kill: Logbook's part",
        },
        "loadavg_1m": { "before": load_before, "after": loadavg_1m() },
        "result": report,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report["result"];
        println!(
            "stall ms p50 {} p99 {} over {} kills; exactly once: {}",
            r["stall_ms"]["p50"], r["stall_ms"]["p99"], args.kills, r["exactly_once"]["ok"]
        );
    }
    Ok(())
}

async fn measure(
    args: &FailoverArgs,
    servers: &[NatsServer],
    program: &Path,
    node: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    wait_ready(node, Duration::from_secs(60)).await?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stream = format!("failover_{millis}");
    let mut c = Conn::open_as(node, token).await?;
    let (status, body) = c
        .call(
            Method::PUT,
            &paths::stream(&stream),
            Some(json!({"partitions": 1}).to_string()),
        )
        .await?;
    if !(200..300).contains(&status) {
        bail!(
            "creating {stream}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (shared, stream) = (shared.clone(), stream.clone());
            let token = token.map(str::to_string);
            tokio::spawn(client(i, node, token, stream, shared, start, millis))
        })
        .collect();

    let mut kills = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..args.kills {
        tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
        match kill_leader(servers, program, &stream, &shared, start).await {
            Ok(kill) => kills.push(kill),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for task in clients {
        tallies.push(task.await.context("a client task failed")?);
    }
    outcome?;
    // A fresh connection: the node closes one idle for longer than its keep-alive timeout.
    let mut c = Conn::open_as(node, token).await?;
    let check = check_exactly_once(&mut c, &stream, &tallies).await?;
    let over_kills = |field: &str| {
        summary(
            kills
                .iter()
                .map(|k| k[field].as_f64().unwrap_or(0.0))
                .collect(),
        )
    };
    Ok(json!({
        "stream": stream,
        "stall_ms": over_kills("stall_ms"),
        "election_ms": over_kills("election_ms"),
        "after_election_ms": over_kills("after_election_ms"),
        "kills": kills,
        "appends_acknowledged": tallies.iter().map(|t| t.acked).sum::<u64>(),
        "failed_tries": shared.failed_tries.load(Ordering::Relaxed),
        "seconds": round1(start.elapsed().as_secs_f64()),
        "exactly_once": check,
    }))
}

/// One appending client: record n of client i has request id `failover-RUN-i-n` and value
/// `{"client": i, "n": n}`; each is sent until acknowledged (201, or 200 for a duplicate).
async fn client(
    i: u32,
    node: SocketAddr,
    token: Option<String>,
    stream: String,
    shared: Arc<Shared>,
    start: Instant,
    run: u128,
) -> ClientTally {
    let mut tally = ClientTally {
        acked: 0,
        unknown: None,
        conflicts: 0,
    };
    let path = paths::records(&stream);
    let mut conn = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = tally.acked;
        let id = format!("failover-{run}-{i}-{n}");
        let body = json!({"key": format!("c{i}"), "value": {"client": i, "n": n}}).to_string();
        let tried_since = Instant::now();
        let sent_us = since_us(start);
        loop {
            if tried_since.elapsed() > RECOVERY_MAX {
                tally.unknown = Some(n);
                return tally;
            }
            if conn.is_none() {
                conn = Conn::open_as(node, token.as_deref()).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                shared.failed_tries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let sent = tokio::time::timeout(
                RECOVERY_MAX,
                c.call_with(
                    Method::POST,
                    &path,
                    Some(body.clone()),
                    &[("idempotency-key", id.as_str())],
                ),
            )
            .await;
            match sent {
                Ok(Ok((200 | 201, _))) => break,
                Ok(Ok((409, _))) => {
                    // Never expected: the same id with the same body. Counted, and not
                    // retried (it would conflict again).
                    tally.conflicts += 1;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => conn = None,
            }
            shared.failed_tries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        shared.acks.record(Ack {
            client: i,
            sent_us,
            acked_us: since_us(start),
        });
        tally.acked += 1;
    }
    tally
}

/// Kills the stream's leader nats-server, measures the stall, starts it again and waits for
/// it to catch up. The kill's figures.
async fn kill_leader(
    servers: &[NatsServer],
    program: &Path,
    stream: &str,
    shared: &Shared,
    start: Instant,
) -> anyhow::Result<serde_json::Value> {
    let leader = stream_leader(servers, stream).await?;
    let server = servers
        .iter()
        .find(|s| s.name == leader)
        .with_context(|| format!("the stream's leader {leader} is not a server of the cluster"))?;
    let pid_file = server.conf.with_extension("pid");
    let command = nats_command(program, server);
    kill_by_pid_file(&pid_file)?;
    // The kill's time: when `kill` returned (the signal delivered).
    let kill_at = since_us(start);
    let killed_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let recovered = shared.acks.recovered(kill_at, RECOVERY_MAX, &leader);
    let (recovered, elected) =
        tokio::join!(recovered, election_seen(servers, stream, &leader, start));
    let ((last_before, first_after), elected) = (recovered?, elected?);
    let restarted = Instant::now();
    start_detached(&command, &server.conf.with_extension("log"), &pid_file)?;
    wait_caught_up(servers, stream, &leader).await?;
    shared.acks.keep_last();
    let since = last_before.unwrap_or(kill_at);
    Ok(json!({
        "leader_killed": leader,
        "killed_at_unix_ms": killed_unix_ms,
        "stall_ms": round1((first_after - since) as f64 / 1000.0),
        "kill_to_first_ack_ms": round1((first_after - kill_at) as f64 / 1000.0),
        "election_ms": round1(elected.saturating_sub(kill_at) as f64 / 1000.0),
        "after_election_ms": round1((first_after as f64 - elected as f64) / 1000.0),
        "catch_up_ms": round1(restarted.elapsed().as_secs_f64() * 1000.0),
    }))
}

/// When (µs since `start`) a surviving server first names a leader of `stream` other than
/// `killed`: the end of nats-server's election as seen from outside, within
/// [`ELECTION_POLL`] and one monitoring request.
async fn election_seen(
    servers: &[NatsServer],
    stream: &str,
    killed: &str,
    start: Instant,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        for server in servers.iter().filter(|s| s.name != killed) {
            if let Some(detail) = stream_detail(server, stream).await
                && let Some(leader) = detail["cluster"]["leader"].as_str()
                && !leader.is_empty()
                && leader != killed
            {
                return Ok(since_us(start));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no surviving nats-server named a new leader of {stream}'s stream in two minutes"
            );
        }
        tokio::time::sleep(ELECTION_POLL).await;
    }
}

/// How `server` is started: `program -c CONF`, in this process's environment.
fn nats_command(program: &Path, server: &NatsServer) -> CommandLine {
    CommandLine {
        program: program.to_path_buf(),
        args: vec!["-c".into(), server.conf.clone().into_os_string()],
        env: std::env::vars_os().collect(),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    }
}

/// The `/jsz` entry of `stream`'s partition 0 as `server` reports it, if it hosts it.
async fn stream_detail(server: &NatsServer, stream: &str) -> Option<serde_json::Value> {
    let mut c = Conn::open(server.monitor).await.ok()?;
    let path = "/jsz?accounts=true&streams=true&config=true";
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(5), c.call(Method::GET, path, None))
            .await
            .ok()?
            .ok()?;
    if status != 200 {
        return None;
    }
    let jsz: serde_json::Value = serde_json::from_slice(&body).ok()?;
    // The JetStream stream's description holds the unhashed identity (crates/jetstream's
    // naming): `logbook partition: stream="NAME" incarnation=N partition=0`.
    let identity = format!("stream={stream:?} ");
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .find(|s| {
            s["config"]["description"]
                .as_str()
                .is_some_and(|d| d.contains(&identity) && d.ends_with("partition=0"))
        })
        .cloned()
}

/// The name of the server leading `stream`'s JetStream stream, as the live servers say.
async fn stream_leader(servers: &[NatsServer], stream: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        for server in servers {
            if let Some(detail) = stream_detail(server, stream).await
                && let Some(leader) = detail["cluster"]["leader"].as_str()
                && !leader.is_empty()
            {
                return Ok(leader.to_string());
            }
        }
        if Instant::now() > deadline {
            bail!("no nats-server names a leader of {stream}'s stream");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the stream's leader (any, after the election) reports both followers
/// current with no lag, and the restarted `killed` among them.
async fn wait_caught_up(servers: &[NatsServer], stream: &str, killed: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        let leader = stream_leader(servers, stream).await?;
        if let Some(server) = servers.iter().find(|s| s.name == leader)
            && let Some(detail) = stream_detail(server, stream).await
            && detail["cluster"]["leader"].as_str() == Some(leader.as_str())
        {
            let replicas = detail["cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let current = |r: &serde_json::Value| {
                r["current"].as_bool() == Some(true) && r["lag"].as_u64().unwrap_or(0) == 0
            };
            if replicas.len() + 1 == servers.len()
                && replicas.iter().all(current)
                && (leader == killed || replicas.iter().any(|r| r["name"] == killed))
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{killed} did not catch up on {stream} within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the stream back from its start and counts each (client, n): every acknowledged
/// record must be there exactly once; the one a client gave up on, at most once.
async fn check_exactly_once(
    c: &mut Conn,
    stream: &str,
    tallies: &[ClientTally],
) -> anyhow::Result<serde_json::Value> {
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    let mut from = 0u64;
    loop {
        let path = paths::records(stream)
            + &Query::new()
                .push("partition", 0)
                .push("from", from)
                .push("limit", READ_LIMIT)
                .finish();
        let (status, body) = c.call(Method::GET, &path, None).await?;
        if status != 200 {
            bail!(
                "reading {stream} back: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            let (Some(i), Some(n)) = (r["value"]["client"].as_u64(), r["value"]["n"].as_u64())
            else {
                bail!("a record the benchmark did not write: {r}");
            };
            *seen.entry((i, n)).or_default() += 1;
        }
        let next = page["next"].as_u64().context("a read without `next`")?;
        if records.is_empty() || next <= from {
            break;
        }
        from = next;
    }
    let (mut missing, mut duplicated) = (0u64, 0u64);
    for (i, t) in tallies.iter().enumerate() {
        let i = i as u64;
        for n in 0..t.acked {
            match seen.remove(&(i, n)).unwrap_or(0) {
                0 => missing += 1,
                1 => {}
                _ => duplicated += 1,
            }
        }
        if let Some(n) = t.unknown
            && seen.remove(&(i, n)).unwrap_or(0) > 1
        {
            duplicated += 1;
        }
    }
    // Anything left was never sent (or acknowledged) by a client.
    let unexpected: u64 = seen.values().map(|&v| u64::from(v)).sum();
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    let unknown = tallies.iter().filter(|t| t.unknown.is_some()).count();
    Ok(json!({
        "checked": true,
        "acknowledged": tallies.iter().map(|t| t.acked).sum::<u64>(),
        "missing": missing,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "request_id_conflicts": conflicts,
        "unknown_outcomes": unknown,
        "ok": missing == 0 && duplicated == 0 && unexpected == 0 && conflicts == 0,
    }))
}

/// The nats-servers of a development cluster, from its `nI.conf` files.
fn nats_servers(dir: &Path) -> anyhow::Result<Vec<NatsServer>> {
    let mut servers = Vec::new();
    for i in 1.. {
        let conf = dir.join(format!("n{i}.conf"));
        if !conf.exists() {
            break;
        }
        let text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        let setting = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("{} has no `{key}`", conf.display()))
        };
        let name = setting("server_name:")?;
        let monitor = setting("http:")?
            .parse()
            .with_context(|| format!("{}: `http:` is not HOST:PORT", conf.display()))?;
        servers.push(NatsServer {
            name,
            conf,
            monitor,
        });
    }
    if servers.len() < 3 {
        bail!(
            "{} holds {} nats-server configurations (n1.conf…); a leader kill needs 3",
            dir.display(),
            servers.len()
        );
    }
    Ok(servers)
}

/// `name` on PATH, else in /usr/sbin (Debian's nats-server is there).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_are_read_from_dev_clusters_configurations() -> anyhow::Result<()> {
        let dir = crate::bench::kit::TempDir::create(&std::env::temp_dir(), "failover-conf")?;
        for i in 1..=3 {
            // As scripts/dev-cluster writes them.
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{ store_dir: \"x\" }}\n",
                14221 + i,
                18221 + i
            );
            std::fs::write(dir.path().join(format!("n{i}.conf")), conf)?;
        }
        let servers = nats_servers(dir.path())?;
        let names: Vec<_> = servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert_eq!(servers[1].monitor.port(), 18223);
        assert_eq!(
            servers[2].conf.with_extension("pid"),
            dir.path().join("n3.pid")
        );
        std::fs::remove_file(dir.path().join("n3.conf"))?;
        let err = nats_servers(dir.path()).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("needs 3")));
        Ok(())
    }
}
