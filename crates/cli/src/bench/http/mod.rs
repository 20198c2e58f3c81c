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

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use logbook_server::{AuthMode, ServerConfig};
use serde_json::json;
use tokio_rustls::TlsConnector;

mod args;
mod cluster;
mod load;
mod summary;

pub use args::{HttpBenchArgs, TlsMode};
use load::{RunResult, STREAM, Target, VIEW, measure};

use super::kit::{LATENCY_US_MAX, TempDir, latency_histogram, loadavg_1m, round1, round3};
use super::postgres::{PgCluster, PgTools, PgbenchSummary, check_output};
use super::server::{BenchServer, wait_ready_over};

/// One server configuration of a run.
#[derive(Debug, Clone, Copy)]
struct Setup {
    auth: AuthMode,
    tls: TlsMode,
    /// Which pass over the configurations this is (from 0).
    round: usize,
    /// What runs beside the plain server.
    variant: Variant,
}

/// What a configuration runs beside the plain server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Nothing more.
    Plain,
    /// The stream declares personal fields: its padding is encrypted (`--personal-fields`).
    Encrypted,
    /// The view auditor and the segment scrubber at work (`--audit`).
    Audited,
}

impl Variant {
    /// The variants `args` asks for, the plain one first.
    fn wanted(args: &HttpBenchArgs) -> Vec<Variant> {
        let mut v = vec![Variant::Plain];
        if args.personal_fields {
            v.push(Variant::Encrypted);
        }
        if args.audit {
            v.push(Variant::Audited);
        }
        v
    }

    fn suffix(self) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Encrypted => "-encrypted",
            Variant::Audited => "-audited",
        }
    }
}

/// Rolls the benchmark stream's segments at this size under `--audit`, so that the
/// scrubber has sealed segments to read within a run.
const AUDIT_SEGMENT_BYTES: u64 = 1 << 20;

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
        let connector = crate::bench::net::connector(Some(&pem))?;
        Ok(TlsPair {
            cert,
            key,
            connector,
        })
    }
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
    let mut audit_work = Vec::new();
    for round in 0..args.rounds {
        for &tls_mode in &args.tls {
            for &auth in &args.auth {
                for variant in Variant::wanted(args) {
                    let setup = Setup {
                        auth,
                        tls: tls_mode,
                        round,
                        variant,
                    };
                    let (runs, work) = run_server(args, &tmp.0, setup, tls.as_ref())?;
                    results.extend(runs);
                    audit_work.extend(work);
                }
            }
        }
    }
    drop(tmp);
    let plain: Vec<RunResult> = results
        .iter()
        .filter(|r| !r.encrypted && !r.audited)
        .cloned()
        .collect();
    let summary = summary::summary(&plain);
    let personal = match args.personal_fields {
        true => summary::variant_ratios(&results, &summary::PERSONAL),
        false => serde_json::Value::Null,
    };
    let audit = match args.audit {
        true => {
            let mut a = summary::variant_ratios(&results, &summary::AUDIT);
            a["work"] = serde_json::Value::Array(audit_work);
            a
        }
        false => serde_json::Value::Null,
    };
    let cluster = match args.cluster.is_empty() {
        true => serde_json::Value::Null,
        false => cluster::run(args, &plain)?,
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
            "audit": args.audit.then(|| json!({
                "audit_interval_s": 1,
                "audit_records_per_s": logbook_server::limits::AUDIT_RECORDS_PER_S_DEFAULT,
                "scrub_rate_mb_per_s": logbook_server::limits::SCRUB_RATE_MB_PER_S_DEFAULT,
                "segment_bytes_max": AUDIT_SEGMENT_BYTES,
            })),
            "rounds": args.rounds,
        },
        "loadavg_1m": { "before": load_before, "after": load_after },
        "runs": results,
        "summary": summary,
        "personal_fields": personal,
        "audit": audit,
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
        if !report["audit"].is_null() {
            println!(
                "audited ÷ plain: {}",
                serde_json::to_string_pretty(&report["audit"])?
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
/// wrote there; with TLS, it serves `tls`'s certificate and the clients trust it. Audited:
/// also what the auditors did meanwhile.
fn run_server(
    args: &HttpBenchArgs,
    dir: &Path,
    setup: Setup,
    tls: Option<&TlsPair>,
) -> anyhow::Result<(Vec<RunResult>, Option<serde_json::Value>)> {
    let tls = match setup.tls {
        TlsMode::On => Some(tls.context("no certificate for a TLS run")?),
        TlsMode::Off => None,
    };
    let data = dir.join(format!(
        "data-auth-{}-tls-{}-{}{}",
        setup.auth_label(),
        setup.tls_label(),
        setup.round,
        setup.variant.suffix()
    ));
    let master_key_file = if setup.variant == Variant::Encrypted {
        Some(super::kit::bench_master_key(dir)?)
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
        ..audit_settings(args, setup.variant)
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
        spec: stream_spec(args, setup.variant),
        session_token: !args.cluster.is_empty(),
        tls: connector,
    };
    let results = client_rt.block_on(measure(args, &target));
    drop(client_rt);
    let work = (setup.variant == Variant::Audited).then(|| audit_work(&server, setup));
    server.stop();
    // Each configuration's data is its own; the next starts from an empty directory.
    let _ = std::fs::remove_dir_all(&data);
    let mut results = results?;
    for r in &mut results {
        r.auth = setup.auth_label();
        r.tls = setup.tls_label();
        r.round = setup.round;
        r.encrypted = setup.variant == Variant::Encrypted;
        r.audited = setup.variant == Variant::Audited;
    }
    Ok((results, work))
}

/// The server's settings but for what `setup` sets: under `--audit` the auditors run
/// only in the audited variant — the view auditor starting a round every second, the
/// scrubber at its default rate — and are off in the others; without it, the defaults.
fn audit_settings(args: &HttpBenchArgs, variant: Variant) -> ServerConfig {
    let defaults = ServerConfig::default();
    match (args.audit, variant) {
        (false, _) => defaults,
        (true, Variant::Audited) => ServerConfig {
            audit_interval_s: 1,
            ..defaults
        },
        (true, _) => ServerConfig {
            audit_interval_s: 0,
            scrub_rate_mb_per_s: 0,
            ..defaults
        },
    }
}

/// What the auditors of an audited server did over all its phases: bytes of sealed
/// segments scrubbed and passes, view audit rounds, audits and mismatches.
fn audit_work(server: &BenchServer, setup: Setup) -> serde_json::Value {
    let Ok(opened) = server.state().opened() else {
        return json!({"error": "the server was not open"});
    };
    let scrub = opened.scrubber.as_ref().map(|s| s.status());
    let views = opened.auditor.as_ref().map(|a| a.status());
    let sum = |f: fn(&logbook_views::ViewAuditStatus) -> u64| {
        views
            .as_ref()
            .map_or(0, |v| v.views.iter().map(f).sum::<u64>())
    };
    json!({
        "round": setup.round, "auth": setup.auth_label(), "tls": setup.tls_label(),
        "scrub_bytes": scrub.as_ref().map(|s| s.bytes_scrubbed),
        "scrub_segments": scrub.as_ref().map(|s| s.segments_scrubbed),
        "scrub_passes": scrub.as_ref().map(|s| s.passes),
        "audit_rounds": views.as_ref().map(|v| v.rounds),
        "audits": sum(|a| a.audits),
        "mismatches": sum(|a| a.mismatches),
    })
}

/// The benchmark stream's creation body: when encrypted, `pad` is personal data of the
/// subject named by `user`; under `--audit`, segments roll at [`AUDIT_SEGMENT_BYTES`].
fn stream_spec(args: &HttpBenchArgs, variant: Variant) -> serde_json::Value {
    let mut spec = json!({"partitions": args.partitions, "fsync": "always"});
    if variant == Variant::Encrypted {
        spec["personal_data"] = json!({"subject": "/user", "fields": ["/pad"]});
    }
    if args.audit {
        spec["segment_bytes_max"] = json!(AUDIT_SEGMENT_BYTES);
    }
    spec
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
            match (r["encrypted"].as_bool(), r["audited"].as_bool()) {
                (Some(true), _) => format!("{}+pf", r["op"].as_str().unwrap_or("")),
                (_, Some(true)) => format!("{}+audit", r["op"].as_str().unwrap_or("")),
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
