//! `bench tpcb --over http --cluster URL,… --failovers K --dev-cluster DIR`: the commit
//! stall when the certifier's leader dies, after the cluster's measured run, in the same
//! invocation. The kill and the stall are `bench failover`'s (`bench/stall.rs`).
//!
//! ```text
//!  load:   the clients of the cluster run (one-shot form), riding (link.rs): every commit
//!          with an Idempotency-Key, sent again with it until answered, on the next node
//!          when theirs is gone
//!  kill k: after --settle-seconds, the certifier's leader (GET /v1/cluster) found among
//!          DIR/l*.pid by its advertise URL (/proc/PID/cmdline), kill -9;
//!          stall = first acknowledgment of a commit first sent after the kill − the last
//!          acknowledged before it, overall and per client; leader_named = kill → a
//!          surviving node names another leader (the etcd lease's expiry + a campaign);
//!          after_named = that → the first acknowledgment (the new leader's replay of
//!          `_txn`, its epoch record, the commit); then the node started again with its
//!          command line and timed until it answers a snapshot read (`restart_to_serving`:
//!          connect, open, replay `_txn` — the window in which a node changing role answers
//!          reads and begins 503 with Retry-After: 1)
//!  check:  the balances' sums − the sums before = Σ committed deltas (each commit applied
//!          once, its retries included)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hyper::Method;
use logbook_api::paths;
use serde_json::json;

use super::args::TpcbArgs;
use super::cluster::{leader_of, same_url, sums};
use super::figures::fold_tallies;
use super::http_clients::run_http_clients_while;
use super::link::Riding;
use crate::bench::conn::Conn;
use crate::bench::kit::round1;
use crate::bench::stall::{
    Acks, CommandLine, kill_by_pid_file, read_pid, since_us, start_detached, summary,
};

/// How long a recovery step may take before the benchmark gives up.
const RECOVERY_MAX: Duration = Duration::from_secs(120);
/// Pause between two looks for the new leader: the resolution of `leader_named_ms`.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a restarted node is waited for until it serves snapshot reads; beyond it the
/// kill reports `restart_to_serving_ms` null and the phase goes on (a node replaying `_txn`
/// under load may chase the stream's end for minutes: docs/benchmarks.md, issue 15's F5).
const SERVING_MAX: Duration = Duration::from_secs(60);
/// What the stall's budget adds to the lease TTL, s (issue 15: lease TTL + 5 s).
const BUDGET_OVER_LEASE_S: u64 = 5;

/// Runs the failover phase on the cluster of `urls` (`addrs` in the same order), whose
/// balances summed to `before` after the measured run; its report.
///
/// # Errors
/// A node or the leader cannot be found, a kill or a restart fails, a recovery step takes
/// longer than two minutes, or a client fails.
pub(super) async fn run(
    args: &TpcbArgs,
    urls: &[String],
    addrs: &[SocketAddr],
    seed: u64,
    before: [i128; 3],
) -> anyhow::Result<serde_json::Value> {
    let dev = args
        .dev_cluster
        .as_deref()
        .context("--failovers needs --dev-cluster DIR")?;
    let token = args.auth_token.as_deref();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let riding = Riding {
        acks: Arc::new(Acks::default()),
        start: Instant::now(),
        run: format!("tpcb-failover-{millis}"),
    };
    let kills = async {
        let mut kills = Vec::new();
        for _ in 0..args.failovers {
            tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
            kills.push(kill_leader(args, dev, urls, addrs, &riding).await?);
        }
        Ok::<_, anyhow::Error>(kills)
    };
    let (tallies, seconds, kills) =
        run_http_clients_while(args, addrs, seed, token, Some(&riding), kills).await?;
    let (figures, deltas) = fold_tallies(&tallies, seconds)?;
    let after = sums(addrs[0], token, args.scale).await?;
    let over = |field: &str| {
        summary(
            kills
                .iter()
                .filter_map(|k: &serde_json::Value| k[field].as_f64())
                .collect(),
        )
    };
    let client_stalls: Vec<f64> = kills
        .iter()
        .flat_map(|k| k["client_stall_ms"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    let budget_ms = (args.lease_ttl_s + BUDGET_OVER_LEASE_S) as f64 * 1000.0;
    let worst = client_stalls.iter().copied().fold(0.0, f64::max);
    let (stall, named, after_named, restart) = (
        over("stall_ms"),
        over("leader_named_ms"),
        over("after_named_ms"),
        over("restart_to_serving_ms"),
    );
    let mut report = json!({
        "failovers": args.failovers,
        "settle_seconds": args.settle_seconds,
        "stall": "first acknowledgment of a commit first sent after the kill − last acknowledgment before it",
        "budget": {
            "stall_ms_max": budget_ms,
            "what": "lease TTL + 5 s per failover, every client",
            "met": !kills.is_empty() && worst <= budget_ms,
        },
        "stall_ms": stall,
        "client_stall_ms": summary(client_stalls),
        "leader_named_ms": named,
        "after_named_ms": after_named,
        "restart_to_serving_ms": restart,
        "kills": kills,
        "consistent": (0..3).all(|i| after[i] - before[i] == deltas),
        "sum_committed_deltas": deltas.to_string(),
    });
    report["commits"] = figures.json();
    Ok(report)
}

/// Kills the certifier's leader, measures the stall, starts it again and waits until it
/// serves snapshot reads. The kill's figures.
async fn kill_leader(
    args: &TpcbArgs,
    dev: &Path,
    urls: &[String],
    addrs: &[SocketAddr],
    riding: &Riding,
) -> anyhow::Result<serde_json::Value> {
    let token = args.auth_token.as_deref();
    let leader = leader_of(addrs[0], token, None, LEADER_POLL).await?;
    let Some(killed) = urls.iter().position(|u| same_url(u, &leader)) else {
        bail!("the certifier's leader {leader} is not one of --cluster {urls:?}");
    };
    let (pid_file, command) = node_process(dev, &leader)?;
    kill_by_pid_file(&pid_file)?;
    let (start, kill_at) = (riding.start, since_us(riding.start));
    let killed_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let survivor = addrs[(killed + 1) % addrs.len()];
    let named = async {
        leader_of(survivor, token, Some(leader.as_str()), LEADER_POLL).await?;
        Ok::<_, anyhow::Error>(since_us(start))
    };
    let recovered = riding.acks.recovered(kill_at, RECOVERY_MAX, &leader);
    let (named, recovered) = tokio::join!(named, recovered);
    let ((last_before, first_after), named) = (recovered?, named?);
    let clients = u32::try_from(args.clients).unwrap_or(u32::MAX);
    let client_stalls = riding
        .acks
        .client_stalls(kill_at, clients, RECOVERY_MAX)
        .await?;
    let restarted = Instant::now();
    start_detached(&command, &pid_file.with_extension("log"), &pid_file)?;
    let snapshot = serving(addrs[killed], token).await?;
    let restart_to_serving_ms = snapshot
        .is_some()
        .then(|| round1(restarted.elapsed().as_secs_f64() * 1000.0));
    riding.acks.keep_last();
    let ms = |us: f64| round1(us / 1000.0);
    Ok(json!({
        "leader_killed": leader,
        "killed_at_unix_ms": killed_unix_ms,
        "stall_ms": ms((first_after - last_before.unwrap_or(kill_at)) as f64),
        "kill_to_first_commit_ms": ms((first_after - kill_at) as f64),
        "leader_named_ms": ms(named.saturating_sub(kill_at) as f64),
        "after_named_ms": ms(first_after as f64 - named as f64),
        "client_stall_ms": client_stalls.iter().map(|&us| ms(us as f64)).collect::<Vec<_>>(),
        "restart_to_serving_ms": restart_to_serving_ms,
        "commit_stream_snapshot": snapshot,
    }))
}

/// The pid file (`DIR/lI.pid`) and command line of the Logbook node advertising `url`.
fn node_process(dev: &Path, url: &str) -> anyhow::Result<(PathBuf, CommandLine)> {
    let entries = std::fs::read_dir(dev).with_context(|| format!("reading {}", dev.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_node = name
            .strip_prefix('l')
            .and_then(|n| n.strip_suffix(".pid"))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        if !is_node {
            continue;
        }
        let Ok(command) = read_pid(&path).and_then(CommandLine::of) else {
            continue;
        };
        if command
            .flag("--cluster-advertise-url")
            .is_some_and(|u| same_url(&u, url))
        {
            return Ok((path, command));
        }
    }
    bail!(
        "no running node of {} (lI.pid) advertises {url}",
        dev.display()
    )
}

/// Waits until `node` answers a snapshot read of `b:1` (its transaction store is open);
/// the snapshot it read at, or `None` when it did not within [`SERVING_MAX`].
async fn serving(
    node: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let deadline = Instant::now() + SERVING_MAX;
    let read = json!({ "keys": ["b:1"] }).to_string();
    loop {
        if let Ok(mut conn) = Conn::open_as(node, token).await
            && let Ok((200, body)) = conn
                .call(Method::POST, &paths::kv_read(), Some(read.clone()))
                .await
        {
            let answer: serde_json::Value = serde_json::from_slice(&body)?;
            return Ok(Some(answer["snapshot"].clone()));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}
