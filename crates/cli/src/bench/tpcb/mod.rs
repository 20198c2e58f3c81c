//! `logbook bench tpcb`: pgbench's TPC-B-like workload on the transaction store, and — in
//! the same run, when PostgreSQL is installed — the same workload on a throwaway PostgreSQL
//! cluster driven by `pgbench`, so the two are measured on the same machine minutes apart.
//!
//! ```text
//!  load:  b:1..=S  t:1..=10S  a:1..=100000S  (balance "0"), commits of 10,000 keys
//!  run:   client 0 ─┐  closed loop for --seconds, each transaction through `retry`
//!         …         ├─▶ TxnStore (commit stream `_txn`, fsync always, group commit)
//!         client N ─┘  latency per transaction (all tries) → HDR histogram
//!  check: sum(a:*) = sum(t:*) = sum(b:*) = Σ committed deltas; one history row each
//!  peer:  initdb → postgres (Unix socket in a temp dir) → pgbench -i -s S
//!         → pgbench -c N -j 2 -T S --max-tries=10 --log → stop (also on error)
//! ```
//!
//! One transaction, as pgbench's built-in script: uniform `aid` in `1..=100000×S`, `tid` in
//! `1..=10×S`, `bid` in `1..=S`, `delta` in `-5000..=5000`;
//! * `--form rmw`: get + put `a:<aid>`, get `a:<aid>`, get + put `t:<tid>`, get + put
//!   `b:<bid>`, put `history:<client>:<n>` — the client reads and writes, so concurrent
//!   transactions conflict on the 10 × S-way hot branch keys (snapshot, serializable) or lose
//!   updates (read_committed, which does no check at commit);
//! * `--form atomic`: increment the three balances (evaluated at commit, they commute) and
//!   put the history row; the account's new balance comes from `CommitOutcome::incremented`.
//!
//! Definitions (the same for Logbook and PostgreSQL):
//! * `tps`: committed transactions per second of the run;
//! * `abort_rate`: aborted tries over all tries (a transaction committed at its third try
//!   counts two aborted tries out of three; one that failed all its tries counts each);
//! * `failed_after_retries`: transactions that still failed after `--max-tries` tries;
//! * `latency_ms`: committed transactions, first try's begin to the commit's
//!   acknowledgment, retries and backoff included. PostgreSQL's come from pgbench's
//!   per-transaction log (`--log`), as pgbench prints no percentiles.

use std::collections::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use logbook_log::Log;
use logbook_txn::{
    Isolation, KeyRange, RetryPolicy, TxnError, TxnOptions, TxnStore, TxnStoreOptions, retry,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::kit::{
    TempDir, elapsed_us, file_system_of, latency_histogram, loadavg_1m, round1, round3,
};
use super::postgres::{PG_SETTINGS, PgCluster, PgTools, PgbenchSummary, check_output};
use super::server::{BenchServer, wait_ready};

mod args;
mod cluster;
mod failover;
mod figures;
mod http_clients;
mod link;

pub use args::TpcbArgs;
use args::{ACCOUNTS_PER_SCALE, Form, Over, Protocol, TELLERS_PER_SCALE};
use figures::{ClientTally, Figures, bar, commit_latency_json, fold_tallies, gather};
use http_clients::run_http_clients;

/// Keys per load commit (at most `logbook_txn::limits::WRITE_SET_KEYS_MAX`).
const LOAD_KEYS_PER_COMMIT: usize = 10_000;
/// Rows per scan of the consistency check (`logbook_txn::limits::SCAN_ROWS_MAX`).
const SCAN_ROWS: usize = 10_000;

/// Runs `logbook bench tpcb`.
pub fn run(args: &TpcbArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.scale == 0 || args.max_tries == 0 {
        bail!("--clients, --seconds, --scale and --max-tries must each be at least 1");
    }
    if args.protocol == Protocol::OneShot && args.over != Over::Http {
        bail!("--protocol one-shot is an HTTP protocol: use it with --over http");
    }
    if !args.cluster.is_empty() && args.over != Over::Http {
        bail!("--cluster runs the HTTP clients against a cluster: use it with --over http");
    }
    if args.failovers > 0
        && (args.cluster.is_empty()
            || args.dev_cluster.is_none()
            || args.protocol != Protocol::OneShot)
    {
        bail!(
            "--failovers kills the leader of a development cluster: it needs --cluster, \
             --dev-cluster and --protocol one-shot (an interactive transaction dies with its \
             node; a one-shot commit is sent again with its Idempotency-Key)"
        );
    }
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().r#gen());
    sweep_stale_dirs(&std::env::temp_dir());

    let (dir, _temp) = match &args.data_dir {
        Some(dir) => {
            let fresh = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
            };
            if !fresh {
                bail!(
                    "--data-dir {} is not empty: the benchmark loads a fresh store, give it an empty or absent directory",
                    dir.display()
                );
            }
            (dir.clone(), None)
        }
        None => {
            let temp = TempDir::create(&std::env::temp_dir(), "logbook-tpcb")?;
            (temp.0.join("data"), Some(temp))
        }
    };
    let logbook = match args.over {
        Over::InProcess => run_logbook(args, &dir, seed)?,
        Over::Http => run_logbook_http(args, &dir, seed)?,
    };
    let file_system = file_system_of(&dir);
    drop(_temp);
    let cluster = match args.cluster.is_empty() {
        true => None,
        false => Some(cluster::run(args, seed)?),
    };

    let (postgres, postgres_note) = if args.no_postgres {
        (None, "skipped: --no-postgres".to_string())
    } else {
        match PgTools::find(args.pg_bin.as_deref()) {
            Err(why) => {
                eprintln!("note: PostgreSQL peer skipped: {why}");
                (None, format!("PostgreSQL not found, peer skipped: {why}"))
            }
            Ok(tools) => match run_postgres(args, &tools) {
                Ok((figures, note)) => (Some(figures), note),
                Err(e) => {
                    eprintln!("warning: the PostgreSQL peer failed: {e:#}");
                    (None, format!("the PostgreSQL peer failed: {e:#}"))
                }
            },
        }
    };

    let mut report = report_json(
        args,
        seed,
        &logbook,
        postgres.as_ref(),
        &postgres_note,
        &dir,
        file_system,
    );
    if let Some(c) = &cluster {
        report["cluster"] = c.json(&logbook.figures);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Logbook

/// What the Logbook side measured.
struct LogbookRun {
    figures: Figures,
    consistency: Consistency,
    load_seconds: f64,
    fsyncs: u64,
    commits: u64,
    aborts_write_write: u64,
    aborts_dangerous_structure: u64,
    durability_waits: u64,
    /// Over HTTP: the commit requests' latency (µs).
    commit_latency: Option<Histogram<u64>>,
}

/// The TPC-B consistency check: sums and row counts after the run.
struct Consistency {
    accounts: (u64, i128),
    tellers: (u64, i128),
    branches: (u64, i128),
    history_rows: u64,
    deltas: i128,
    expected: (u64, u64, u64),
}

impl Consistency {
    fn holds(&self, committed: u64) -> bool {
        let sums = [self.accounts.1, self.tellers.1, self.branches.1];
        (self.accounts.0, self.tellers.0, self.branches.0) == self.expected
            && sums.iter().all(|s| *s == self.deltas)
            && self.history_rows == committed
    }
}

fn run_logbook(args: &TpcbArgs, dir: &Path, seed: u64) -> anyhow::Result<LogbookRun> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = Log::open(dir).with_context(|| format!("opening the log in {}", dir.display()))?;
    let options = TxnStoreOptions {
        early_lock_release: args.early_lock_release,
        history_commits: args.history_commits,
        ..TxnStoreOptions::default()
    };
    let stream_name = options.stream.clone();
    let store = TxnStore::open(&log, options).context("opening the transaction store")?;

    let load_started = Instant::now();
    load(&store, args.scale)?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    let stream = log.stream(&stream_name)?;
    let partition = stream.partition(0)?;
    let syncs_before = partition.stats().syncs.load(Ordering::Relaxed);
    let s = store.stats();
    let counters = |s: &logbook_txn::TxnStats| {
        [
            s.commits.load(Ordering::Relaxed),
            s.aborts_write_write.load(Ordering::Relaxed),
            s.aborts_dangerous_structure.load(Ordering::Relaxed),
            s.durability_waits.load(Ordering::Relaxed),
        ]
    };
    let before = counters(s);

    let (figures, deltas) = run_clients(args, &store, seed)?;

    let after = counters(store.stats());
    let fsyncs = partition.stats().syncs.load(Ordering::Relaxed) - syncs_before;
    let scale = u64::from(args.scale);
    let consistency = Consistency {
        accounts: sum_prefix(&store, b"a:")?,
        tellers: sum_prefix(&store, b"t:")?,
        branches: sum_prefix(&store, b"b:")?,
        history_rows: sum_prefix(&store, b"history:")?.0,
        deltas,
        expected: (ACCOUNTS_PER_SCALE * scale, TELLERS_PER_SCALE * scale, scale),
    };
    drop(store);
    log.close();
    Ok(LogbookRun {
        figures,
        consistency,
        load_seconds,
        fsyncs,
        commits: after[0] - before[0],
        aborts_write_write: after[1] - before[1],
        aborts_dangerous_structure: after[2] - before[2],
        durability_waits: after[3] - before[3],
        commit_latency: None,
    })
}

/// Loads branches, tellers and accounts with balance 0, in commits of
/// [`LOAD_KEYS_PER_COMMIT`] keys.
fn load(store: &Arc<TxnStore>, scale: u32) -> anyhow::Result<()> {
    let scale = u64::from(scale);
    let keys = (1..=scale)
        .map(|b| format!("b:{b}"))
        .chain((1..=TELLERS_PER_SCALE * scale).map(|t| format!("t:{t}")))
        .chain((1..=ACCOUNTS_PER_SCALE * scale).map(|a| format!("a:{a}")));
    let total = scale * (1 + TELLERS_PER_SCALE + ACCOUNTS_PER_SCALE);
    let progress = bar(total, "load");
    let mut txn = store.begin(TxnOptions::new(Isolation::ReadCommitted))?;
    let mut in_txn = 0;
    for key in keys {
        txn.put(key.as_bytes(), b"0")?;
        in_txn += 1;
        if in_txn == LOAD_KEYS_PER_COMMIT {
            txn.commit().context("committing loaded rows")?;
            progress.inc(in_txn as u64);
            txn = store.begin(TxnOptions::new(Isolation::ReadCommitted))?;
            in_txn = 0;
        }
    }
    txn.commit().context("committing loaded rows")?;
    progress.inc(in_txn as u64);
    progress.finish_and_clear();
    Ok(())
}

/// Runs the clients for `--seconds`; returns the figures and the sum of committed deltas.
fn run_clients(
    args: &TpcbArgs,
    store: &Arc<TxnStore>,
    seed: u64,
) -> anyhow::Result<(Figures, i128)> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.clients + 1));
    let mut handles = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let store = store.clone();
        let stop = stop.clone();
        let start = start.clone();
        let args = args.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tpcb-client-{client}"))
            .spawn(move || {
                start.wait();
                let result = client_loop(&args, &store, client, seed, &stop);
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .context("starting a client thread")?;
        handles.push(handle);
    }
    let progress = bar(args.seconds, "run (s)");
    start.wait();
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(200)));
        progress.set_position(started.elapsed().as_secs());
    }
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<_> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    fold_tallies(&gather(ends)?, seconds)
}

/// One client's closed loop: transactions back to back until `stop`.
fn client_loop(
    args: &TpcbArgs,
    store: &Arc<TxnStore>,
    client: usize,
    seed: u64,
    stop: &AtomicBool,
) -> anyhow::Result<ClientTally> {
    let scale = u64::from(args.scale);
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let policy = RetryPolicy {
        max_attempts: args.max_tries,
        ..RetryPolicy::default()
    };
    let options = TxnOptions::new(args.isolation);
    let mut tally = ClientTally::new()?;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let aid = rng.gen_range(1..=ACCOUNTS_PER_SCALE * scale);
        let tid = rng.gen_range(1..=TELLERS_PER_SCALE * scale);
        let bid = rng.gen_range(1..=scale);
        let delta: i64 = rng.gen_range(-5000..=5000);
        let account = format!("a:{aid}");
        let teller = format!("t:{tid}");
        let branch = format!("b:{bid}");
        let history = format!("history:{client}:{n}");
        let row = format!("{tid},{bid},{aid},{delta}");
        n += 1;
        let mut tries = 0u32;
        let mut problem: Option<String> = None;
        let started = Instant::now();
        let result = retry(store, options, &policy, None, |t| {
            tries += 1;
            match args.form {
                Form::Rmw => {
                    let a = read_balance(t, &account, &mut problem)?;
                    t.put(account.as_bytes(), (a + delta).to_string().as_bytes())?;
                    let balance = read_balance(t, &account, &mut problem)?;
                    let v = read_balance(t, &teller, &mut problem)?;
                    t.put(teller.as_bytes(), (v + delta).to_string().as_bytes())?;
                    let v = read_balance(t, &branch, &mut problem)?;
                    t.put(branch.as_bytes(), (v + delta).to_string().as_bytes())?;
                    t.put(history.as_bytes(), row.as_bytes())?;
                    Ok(Some(balance))
                }
                Form::Atomic => {
                    t.increment(account.as_bytes(), delta)?;
                    t.increment(teller.as_bytes(), delta)?;
                    t.increment(branch.as_bytes(), delta)?;
                    t.put(history.as_bytes(), row.as_bytes())?;
                    Ok(None)
                }
            }
        });
        match result {
            Ok(done) => {
                let balance = match done.value {
                    Some(b) => Some(b),
                    None => done
                        .outcome
                        .incremented
                        .iter()
                        .find(|(k, _)| k.as_slice() == account.as_bytes())
                        .map(|(_, v)| *v),
                };
                if balance.is_none() {
                    bail!("the commit of {account} reported no balance for it");
                }
                tally.latency.saturating_record(elapsed_us(started));
                tally.committed += 1;
                tally.tries += u64::from(done.attempts);
                tally.aborts += u64::from(done.attempts - 1);
                tally.deltas += i128::from(delta);
            }
            Err(e) if e.is_retryable() => {
                tally.failed += 1;
                tally.tries += u64::from(tries);
                tally.aborts += u64::from(tries);
            }
            Err(e) => {
                let what = problem.unwrap_or_else(|| e.to_string());
                bail!("client {client}: a transaction failed for good: {what}");
            }
        }
    }
    Ok(tally)
}

/// Reads a balance: a decimal i64. A missing or malformed row is a broken load, reported
/// through `problem` (the transaction API only carries [`TxnError`]s).
fn read_balance(
    t: &mut logbook_txn::Txn,
    key: &str,
    problem: &mut Option<String>,
) -> logbook_txn::Result<i64> {
    let found = t.get(key.as_bytes())?;
    let parsed = found
        .as_ref()
        .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<i64>().ok());
    parsed.ok_or_else(|| {
        *problem = Some(match found {
            None => format!("row {key} is missing"),
            Some(_) => format!("row {key} does not hold a decimal i64"),
        });
        TxnError::NotAnInteger {
            key: key.to_string(),
        }
    })
}

/// Rows under `prefix` and the sum of their values read as i64 (history rows are not
/// numbers; only their count is used).
fn sum_prefix(store: &TxnStore, prefix: &[u8]) -> anyhow::Result<(u64, i128)> {
    let all = KeyRange::prefix(prefix);
    let mut range = all.clone();
    let mut rows = 0u64;
    let mut sum = 0i128;
    loop {
        let page = store.scan(&range, SCAN_ROWS)?;
        for row in &page {
            rows += 1;
            if let Some(v) = std::str::from_utf8(&row.value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                sum += i128::from(v);
            }
        }
        match page.last() {
            Some(last) if page.len() == SCAN_ROWS => {
                range = KeyRange {
                    start: Bound::Excluded(last.key.clone()),
                    end: all.end.clone(),
                };
            }
            _ => return Ok((rows, sum)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Logbook over HTTP

/// Like [`run_logbook`], with every transaction of the run driven over HTTP: the rows are
/// loaded in-process (a million HTTP puts would measure the loader), the log is closed, and
/// a server opened on the same directory (replaying `_txn`) serves the clients.
fn run_logbook_http(args: &TpcbArgs, dir: &Path, seed: u64) -> anyhow::Result<LogbookRun> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let load_started = Instant::now();
    {
        let log =
            Log::open(dir).with_context(|| format!("opening the log in {}", dir.display()))?;
        let store = TxnStore::open(&log, TxnStoreOptions::default())
            .context("opening the transaction store")?;
        load(&store, args.scale)?;
        drop(store);
        log.close();
    }
    let load_seconds = load_started.elapsed().as_secs_f64();

    let config = logbook_server::ServerConfig {
        open_txns_max: (args.clients * 2).max(logbook_server::limits::OPEN_TXNS_MAX_DEFAULT),
        txns_per_principal_max: (args.clients * 2)
            .max(logbook_server::limits::OPEN_TXNS_MAX_DEFAULT),
        ..logbook_server::ServerConfig::default()
    };
    let server = BenchServer::start(dir, args.server_threads, config)?;
    let (addr, state) = (server.addr(), server.state().clone());
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("tpcb-client")
        .enable_all()
        .build()
        .context("starting the client runtime")?;

    let measured = client_rt.block_on(async {
        // The server replays `_txn` before it answers health.
        wait_ready(addr, Duration::from_secs(600)).await?;
        let opened = state
            .opened()
            .map_err(|e| anyhow::anyhow!("the server is not ready: {}", e.detail))?;
        let txns = opened
            .txns()
            .map_err(|e| anyhow::anyhow!("no transaction store: {}", e.detail))?
            .clone();
        let stream = opened.log.stream(&txns.options().stream)?;
        let partition = stream.partition(0)?;
        let counters = |s: &logbook_txn::TxnStats| {
            [
                s.commits.load(Ordering::Relaxed),
                s.aborts_write_write.load(Ordering::Relaxed),
                s.aborts_dangerous_structure.load(Ordering::Relaxed),
                s.durability_waits.load(Ordering::Relaxed),
            ]
        };
        let syncs = || {
            partition
                .stats()
                .map_or(0, |s| s.syncs.load(Ordering::Relaxed))
        };
        let syncs_before = syncs();
        let before = counters(txns.stats());
        let token = crate::client::admin_token(dir)?;
        let (tallies, seconds) = run_http_clients(args, &[addr], seed, token.as_deref()).await?;
        let (figures, deltas) = fold_tallies(&tallies, seconds)?;
        let mut commit_latency = latency_histogram()?;
        for t in &tallies {
            commit_latency.add(&t.commit_latency)?;
        }
        let after = counters(txns.stats());
        let fsyncs = syncs() - syncs_before;
        let scale = u64::from(args.scale);
        let store = txns.clone();
        let consistency = tokio::task::spawn_blocking(move || -> anyhow::Result<Consistency> {
            Ok(Consistency {
                accounts: sum_prefix(&store, b"a:")?,
                tellers: sum_prefix(&store, b"t:")?,
                branches: sum_prefix(&store, b"b:")?,
                history_rows: sum_prefix(&store, b"history:")?.0,
                deltas,
                expected: (ACCOUNTS_PER_SCALE * scale, TELLERS_PER_SCALE * scale, scale),
            })
        })
        .await
        .context("the consistency check failed")??;
        Ok::<_, anyhow::Error>(LogbookRun {
            figures,
            consistency,
            load_seconds,
            fsyncs,
            commits: after[0] - before[0],
            aborts_write_write: after[1] - before[1],
            aborts_dangerous_structure: after[2] - before[2],
            durability_waits: after[3] - before[3],
            commit_latency: Some(commit_latency),
        })
    });
    drop(client_rt);
    drop(state);
    server.stop();
    measured
}

// ---------------------------------------------------------------------------------------
// The PostgreSQL peer

/// PostgreSQL's name of an isolation level.
fn pg_isolation(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::ReadCommitted => "read committed",
        Isolation::Snapshot => "repeatable read",
        Isolation::Serializable => "serializable",
    }
}

/// `PGOPTIONS` making every transaction of the session run at `isolation` (spaces in an
/// option value are escaped with a backslash).
fn pgoptions(isolation: Isolation) -> String {
    format!(
        "-c default_transaction_isolation={}",
        pg_isolation(isolation).replace(' ', "\\ ")
    )
}

/// What PostgreSQL measured, with pgbench's own summary lines.
struct PgRun {
    figures: Figures,
    retried: Option<u64>,
    total_retries: Option<u64>,
    pgbench_tps: Option<f64>,
    latency_average_ms: Option<f64>,
    command: String,
    version: String,
}

fn run_postgres(args: &TpcbArgs, tools: &PgTools) -> anyhow::Result<(PgRun, String)> {
    let version = tools.server_version();
    eprintln!("PostgreSQL peer: {version}, starting a throwaway cluster");
    let cluster = PgCluster::start(tools, args.clients)?;
    let out = cluster
        .pgbench()
        .args(["-i", "-q", "-s", &args.scale.to_string(), "postgres"])
        .output()
        .context("running pgbench -i")?;
    check_output("pgbench -i", &out)?;
    let threads = args.clients.min(2);
    let run_args = [
        "-c".to_string(),
        args.clients.to_string(),
        "-j".to_string(),
        threads.to_string(),
        "-T".to_string(),
        args.seconds.to_string(),
        format!("--max-tries={}", args.max_tries),
        "--log".to_string(),
        "--log-prefix=pgbench_log".to_string(),
        "postgres".to_string(),
    ];
    let options = pgoptions(args.isolation);
    eprintln!(
        "PostgreSQL peer: pgbench {} (PGOPTIONS='{options}')",
        run_args.join(" ")
    );
    let out = cluster
        .pgbench()
        .env("PGOPTIONS", &options)
        .args(&run_args)
        .output()
        .context("running pgbench")?;
    check_output("pgbench", &out)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = PgbenchSummary::parse(&stdout);
    let mut figures = Figures {
        committed: 0,
        failed: 0,
        tries: 0,
        aborts: 0,
        seconds: args.seconds as f64,
        latency: latency_histogram()?,
    };
    let mut logs = 0;
    for entry in std::fs::read_dir(&cluster.dir.0)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("pgbench_log."))
        {
            logs += 1;
            let text = std::fs::read_to_string(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            for line in text.lines() {
                tally_log_line(line, &mut figures)?;
            }
        }
    }
    if logs == 0 {
        bail!("pgbench wrote no per-transaction log");
    }
    if let Some(processed) = summary.processed
        && processed != figures.committed
    {
        bail!(
            "pgbench reported {processed} transactions but its logs hold {}",
            figures.committed
        );
    }
    // pgbench's own tps excludes the connection time: use it when printed.
    if let Some(tps) = summary.tps
        && tps > 0.0
    {
        figures.seconds = figures.committed as f64 / tps;
    }
    let command = format!(
        "pgbench -i -s {}; PGOPTIONS='{options}' pgbench {}",
        args.scale,
        run_args.join(" ")
    );
    let note = format!(
        "{version}; throwaway cluster ({}, max_connections={}){}; {command}; the same standard TPC-B script for every --form (its UPDATEs are atomic in SQL); percentiles from pgbench's per-transaction log",
        PG_SETTINGS
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.clients + 10,
        match &tools.run_as {
            Some((user, _, _)) => format!(", run as user {user} (this process is root)"),
            None => String::new(),
        },
    );
    drop(cluster);
    Ok((
        PgRun {
            figures,
            retried: summary.retried,
            total_retries: summary.total_retries,
            pgbench_tps: summary.tps,
            latency_average_ms: summary.latency_average_ms,
            command,
            version,
        },
        note,
    ))
}

/// Adds one line of pgbench's per-transaction log (`client_id transaction_no time
/// script_no time_epoch time_us [schedule_lag] retries`; `time` is `failed` for a
/// transaction that failed all its tries) to `figures`.
fn tally_log_line(line: &str, figures: &mut Figures) -> anyhow::Result<()> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.is_empty() {
        return Ok(());
    }
    if fields.len() < 7 {
        bail!("unexpected pgbench log line (expected the retries column): {line:?}");
    }
    let retries: u64 = fields[fields.len() - 1]
        .parse()
        .with_context(|| format!("pgbench log line {line:?}: retries"))?;
    match fields[2] {
        "failed" => {
            figures.failed += 1;
            figures.tries += retries + 1;
            figures.aborts += retries + 1;
        }
        "skipped" => {}
        time => {
            let us: u64 = time
                .parse()
                .with_context(|| format!("pgbench log line {line:?}: time"))?;
            figures.committed += 1;
            figures.tries += retries + 1;
            figures.aborts += retries;
            figures.latency.saturating_record(us.max(1));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report

/// Removes the temporary directories of earlier runs that were interrupted (Ctrl-C ends
/// the process before its guards run; the PostgreSQL server, in the same process group,
/// shuts itself down): `logbook-tpcb-*-<pid>-*` whose process is gone and whose server, if
/// any, is gone too.
fn sweep_stale_dirs(parent: &Path) {
    let alive = |pid: &str| Path::new("/proc").join(pid.trim()).exists();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| {
            n.strip_prefix("logbook-tpcb-pg-")
                .or_else(|| n.strip_prefix("logbook-tpcb-"))
        }) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        let server = std::fs::read_to_string(entry.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        if alive(pid) || server.as_deref().is_some_and(alive) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the directory of an interrupted run")
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove the directory of an interrupted run")
            }
        }
    }
}

fn report_json(
    args: &TpcbArgs,
    seed: u64,
    lb: &LogbookRun,
    pg: Option<&PgRun>,
    postgres_note: &str,
    dir: &Path,
    file_system: Option<String>,
) -> serde_json::Value {
    let mut report = lb.figures.json();
    let c = &lb.consistency;
    let consistent = c.holds(lb.figures.committed);
    let postgres = pg.map(|pg| {
        let mut p = pg.figures.json();
        p["isolation"] = json!(pg_isolation(args.isolation));
        p["transactions_retried"] = json!(pg.retried);
        p["total_retries"] = json!(pg.total_retries);
        p["pgbench_tps"] = json!(pg.pgbench_tps);
        p["pgbench_latency_average_ms"] = json!(pg.latency_average_ms);
        p["command"] = json!(pg.command);
        p["version"] = json!(pg.version);
        p
    });
    let ratio = pg
        .map(|pg| pg.figures.tps())
        .filter(|tps| *tps > 0.0)
        .map(|tps| round3(lb.figures.tps() / tps));
    let extra = json!({
        "consistent": consistent,
        "consistency": {
            "accounts": c.accounts.0,
            "tellers": c.tellers.0,
            "branches": c.branches.0,
            "history_rows": c.history_rows,
            "sum_accounts": c.accounts.1.to_string(),
            "sum_tellers": c.tellers.1.to_string(),
            "sum_branches": c.branches.1.to_string(),
            "sum_committed_deltas": c.deltas.to_string(),
        },
        "logbook": {
            "commits": lb.commits,
            "fsyncs": lb.fsyncs,
            "commits_per_fsync": if lb.fsyncs == 0 { serde_json::Value::Null } else { json!(round1(lb.commits as f64 / lb.fsyncs as f64)) },
            "aborts_write_write": lb.aborts_write_write,
            "aborts_dangerous_structure": lb.aborts_dangerous_structure,
            "durability_waits": lb.durability_waits,
            "load_seconds": round3(lb.load_seconds),
            "commit_latency_ms": lb.commit_latency.as_ref().map(commit_latency_json),
        },
        "params": {
            "isolation": args.isolation.to_string(),
            "form": args.form.name(),
            "clients": args.clients,
            "seconds": args.seconds,
            "scale": args.scale,
            "fsync": "always",
            "early_lock_release": args.early_lock_release,
            "history_commits": args.history_commits,
            "max_tries": args.max_tries,
            "seed": seed,
            "over": args.over.name(),
            "server_threads": (args.over == Over::Http).then_some(args.server_threads),
            "client_threads": (args.over == Over::Http).then_some(args.client_threads),
            "protocol": (args.over == Over::Http).then_some(args.protocol.name()),
        },
        "postgres": postgres,
        "ratio_tps": ratio,
        "postgres_note": postgres_note,
        "dir": dir.display().to_string(),
        "file_system": file_system,
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_1m": loadavg_1m(),
        },
    });
    if let (Some(r), Some(e)) = (report.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    report
}

fn print_summary(r: &serde_json::Value) {
    let p = &r["params"];
    println!(
        "logbook bench tpcb: {} {}, over {}{}, {} clients, {} s, scale {}, fsync always, early lock release {}",
        p["isolation"].as_str().unwrap_or("?"),
        p["form"].as_str().unwrap_or("?"),
        p["over"].as_str().unwrap_or("?"),
        p["protocol"]
            .as_str()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        p["clients"],
        p["seconds"],
        p["scale"],
        p["early_lock_release"],
    );
    let line = |name: &str, f: &serde_json::Value| {
        let l = &f["latency_ms"];
        println!(
            "  {name:<10} {} tps, abort rate {}, failed after retries {}, latency ms p50 {} p95 {} p99 {}",
            f["tps"], f["abort_rate"], f["failed_after_retries"], l["p50"], l["p95"], l["p99"]
        );
    };
    line("logbook", r);
    if !r["cluster"].is_null() {
        let c = &r["cluster"];
        line("cluster", c);
        let commit = |role: &str| {
            let l = &c["commit_latency_ms"][role];
            format!("p50 {} p99 {}", l["p50"], l["p99"])
        };
        println!(
            "  cluster:   ratio_tps to the single node {}; commit latency ms on the leader {}, on followers {}; consistent {}",
            c["ratio_tps_to_single_node"],
            commit("leader"),
            commit("followers"),
            c["consistent"]
        );
        let b = &c["follower_commit_budget"];
        println!(
            "  followers: commit p50 {} ms vs the bound {} ms (leader's p50 + 2 ms): met {}",
            b["followers_p50_ms"], b["bound_ms"], b["met"]
        );
        let f = &c["failover"];
        if !f.is_null() {
            println!(
                "  failover:  {} kills of the leader; commit stall ms p50 {} p99 {}, per client p50 {} p99 {} max {} (budget {} ms: met {}); consistent {}",
                f["failovers"],
                f["stall_ms"]["p50"],
                f["stall_ms"]["p99"],
                f["client_stall_ms"]["p50"],
                f["client_stall_ms"]["p99"],
                f["client_stall_ms"]["max"],
                f["budget"]["stall_ms_max"],
                f["budget"]["met"],
                f["consistent"]
            );
        }
    }
    println!(
        "  consistent: {} (accounts {}, tellers {}, branches {}, committed deltas {})",
        r["consistent"],
        r["consistency"]["sum_accounts"],
        r["consistency"]["sum_tellers"],
        r["consistency"]["sum_branches"],
        r["consistency"]["sum_committed_deltas"]
    );
    if r["postgres"].is_null() {
        println!("  postgres:  {}", r["postgres_note"].as_str().unwrap_or(""));
    } else {
        line("postgres", &r["postgres"]);
        println!("  ratio_tps: {}", r["ratio_tps"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_log_lines_count_tries_and_aborts() -> anyhow::Result<()> {
        let mut f = Figures {
            committed: 0,
            failed: 0,
            tries: 0,
            aborts: 0,
            seconds: 1.0,
            latency: latency_histogram()?,
        };
        tally_log_line("2 1 6658 0 1795986709 156713 0", &mut f)?;
        tally_log_line("1 1 24060 0 1795986709 174103 7", &mut f)?;
        tally_log_line("3 4 failed 0 1795986709 174103 9", &mut f)?;
        assert_eq!((f.committed, f.failed, f.tries, f.aborts), (2, 1, 19, 17));
        assert_eq!(f.latency.len(), 2);
        assert!(tally_log_line("1 2 3", &mut f).is_err());
        Ok(())
    }

    #[test]
    fn isolation_levels_map_to_postgres_names() {
        assert_eq!(
            pgoptions(Isolation::Snapshot),
            "-c default_transaction_isolation=repeatable\\ read"
        );
        assert_eq!(pg_isolation(Isolation::Serializable), "serializable");
    }
}
