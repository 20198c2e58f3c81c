//! `bench http --cluster URL,…`: the phases of the single-node run, against a running cluster
//! (`scripts/dev-cluster up`) in the same run.
//!
//! ```text
//!  setup:  a fresh stream and table view (names with this run's time: a cluster keeps
//!          earlier runs'), created and preloaded through the first node; every node then
//!          reads the last key with the preload's token (read-your-writes across nodes)
//!  runs:   connection i on node i % N; appends, then reads carrying the session's token
//!  report: each run beside the single node's run of the same op, mode and rate:
//!          achieved ÷ single, p50/p95/p99 both
//! ```
//!
//! The stream takes the cluster's default replication and the acknowledgment the engine
//! gives (reported as `ack_guarantee`); the single node's is fsynced locally. The CPU
//! figures of a cluster run are the load generator's only (the nodes are other processes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hyper::Method;
use logbook_api::paths;
use serde_json::json;

use super::args::HttpBenchArgs;
use super::load::{RunResult, Target, measure};
use crate::bench::conn::{Conn, socket_addr};
use crate::bench::kit::round3;
use crate::bench::server::wait_ready;

/// Runs every phase on the cluster of `--cluster`; the report's `cluster` object, with each
/// run's ratio to the run of `single` with the same op, mode and rate (the first round of
/// the first `--tls` and `--auth`: a cluster's requests carry `--auth-token` when given).
pub(super) fn run(args: &HttpBenchArgs, single: &[RunResult]) -> anyhow::Result<serde_json::Value> {
    let addrs = args
        .cluster
        .iter()
        .map(|url| socket_addr(url).with_context(|| "--cluster"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let target = Target {
        addrs,
        bearer: args.auth_token.clone(),
        stream: format!("bench_{millis}"),
        view: format!("bench_rows_{millis}"),
        spec: json!({"partitions": args.partitions}),
        session_token: true,
        // The benchmark's clients reach a cluster over plain HTTP (`socket_addr`).
        tls: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-cluster-client")
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let (runs, stream_info) = rt.block_on(async {
        for &addr in &target.addrs {
            wait_ready(addr, Duration::from_secs(60)).await?;
        }
        let mut runs = measure(args, &target).await?;
        for r in &mut runs {
            r.auth = if target.bearer.is_some() { "on" } else { "off" };
        }
        let mut c = Conn::open_as(target.addrs[0], target.bearer.as_deref()).await?;
        let (_, info) = c
            .call(Method::GET, &paths::stream(&target.stream), None)
            .await?;
        anyhow::Ok((runs, serde_json::from_slice::<serde_json::Value>(&info)?))
    })?;
    let first = single.first().map(|r| (r.auth, r.tls, r.round));
    let ratios: Vec<serde_json::Value> = runs
        .iter()
        .filter_map(|c| {
            let s = single.iter().find(|s| {
                Some((s.auth, s.tls, s.round)) == first
                    && s.op == c.op
                    && s.mode == c.mode
                    && s.rate == c.rate
            })?;
            Some(json!({
                "op": c.op,
                "mode": c.mode,
                "rate": c.rate,
                "achieved_cluster_over_single": (s.achieved_per_s > 0.0)
                    .then(|| round3(c.achieved_per_s / s.achieved_per_s)),
                "p50_ms": {"single": s.p50_ms, "cluster": c.p50_ms},
                "p95_ms": {"single": s.p95_ms, "cluster": c.p95_ms},
                "p99_ms": {"single": s.p99_ms, "cluster": c.p99_ms},
            }))
        })
        .collect();
    Ok(json!({
        "nodes": args.cluster,
        "stream": target.stream,
        "partitions": args.partitions,
        "ack_guarantee": stream_info["ack_guarantee"],
        "reads_carry_token": true,
        "runs": runs,
        "ratios": ratios,
    }))
}
