//! `logbook bench erasure`: erasure latency — `DELETE /v1/data-subjects/{id}` from request to
//! answer, after which no copy of the subject's personal fields is readable (issue 19,
//! decision 0030) — on a key store of `--subjects` live keys, beside the same erasures on a
//! store of `--small-subjects`, in one run.
//!
//! ```text
//!  server in this process (fsync always, a master key) ◀── loopback HTTP ── this thread
//!   preload: --subjects records {"user": ID, "email": marker}, one new subject each, in
//!            append batches of --batch from --preload-threads clients (every batch: its new
//!            keys written and fdatasynced, then the records fsynced)
//!   erase:   --erasures subjects chosen at random (seeded), one request at a time
//!   check:   every erased subject's row in a table view reads {"erased": true}; as many
//!            kept subjects read their plaintext
//! ```
//!
//! An erasure is one fsynced record in `_data_subjects` and one fdatasynced 192-byte slot
//! overwrite; views hold ciphertext, so they need nothing. The budget (docs/benchmarks.md):
//! p99 ≤ 50 ms and no growth with the number of subjects (the key store is a hash map in
//! memory and a slot at a fixed offset).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use logbook_api::data_subjects::{DataSubject, KeyState};
use logbook_api::paths;
use logbook_api::views::ViewDetail;
use logbook_server::{AuthMode, ServerConfig};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::kit::{
    TempDir, bench_master_key, elapsed_us, latency_histogram, loadavg_1m, round1, round3,
};
use super::server::{BenchServer, wait_ready};
use crate::client::{Client, ServerArgs};

const STREAM: &str = "people";
const VIEW: &str = "people_rows";
/// The budget of an erasure's p99, ms.
const P99_BUDGET_MS: f64 = 50.0;

/// Arguments of `logbook bench erasure`.
#[derive(Debug, clap::Args)]
pub struct ErasureBenchArgs {
    /// Data subjects with a live key before the erasures (one record each).
    #[arg(long, default_value_t = 1_000_000)]
    pub subjects: u64,
    /// The comparison run's subjects (the same erasures on a small store).
    #[arg(long, default_value_t = 1_000)]
    pub small_subjects: u64,
    /// Subjects erased in each run, one request at a time.
    #[arg(long, default_value_t = 1_000)]
    pub erasures: u64,
    /// Records (each a new subject) per append request while preloading.
    #[arg(long, default_value_t = 1_000)]
    pub batch: u64,
    /// Clients appending side by side while preloading.
    #[arg(long, default_value_t = 4)]
    pub preload_threads: u64,
    /// The server runtime's worker threads.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// The seed choosing the erased subjects (printed; give it to replay the choice).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// Bad arguments, the server cannot start, a request fails, or a check fails (an erased
/// subject readable, a kept one not).
pub fn run(args: &ErasureBenchArgs) -> anyhow::Result<()> {
    if args.erasures == 0 || args.batch == 0 || args.preload_threads == 0 {
        bail!("--erasures, --batch and --preload-threads must be positive");
    }
    if args.erasures > args.small_subjects.min(args.subjects) {
        bail!(
            "--erasures ({}) must not exceed --small-subjects and --subjects",
            args.erasures
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("bench erasure: seed {seed}");
    let load_before = loadavg_1m();
    let tmp = TempDir::create(&std::env::temp_dir(), "logbook-bench-erasure")?;
    let mut runs = Vec::new();
    for subjects in [args.small_subjects, args.subjects] {
        runs.push(run_one(args, tmp.path(), subjects, seed)?);
    }
    drop(tmp);
    let p99 = |r: &Value| r["erase_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
    let large_p99 = p99(&runs[1]);
    let report = json!({
        "benchmark": "erasure",
        "parameters": {
            "subjects": args.subjects, "small_subjects": args.small_subjects,
            "erasures": args.erasures, "batch": args.batch,
            "preload_threads": args.preload_threads, "server_threads": args.server_threads,
            "seed": seed, "fsync": "always", "loadavg_1m_before": load_before,
            "loadavg_1m_after": loadavg_1m(),
        },
        "runs": runs,
        "p99_large_over_small": round3(large_p99 / p99(&runs[0])),
        "p99_budget_ms": P99_BUDGET_MS,
        "within_budget": large_p99 <= P99_BUDGET_MS,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report["runs"].as_array().cloned().unwrap_or_default() {
            println!(
                "{:>9} subjects: preload {} records/s; erase p50 {} ms, p99 {} ms, max {} ms ({} erasures/s)",
                r["subjects"],
                r["preload_records_per_s"],
                r["erase_ms"]["p50"],
                r["erase_ms"]["p99"],
                r["erase_ms"]["max"],
                r["erasures_per_s"]
            );
        }
        println!(
            "p99 at {} ÷ at {} subjects: {}; budget p99 ≤ {P99_BUDGET_MS} ms: {}",
            args.subjects,
            args.small_subjects,
            report["p99_large_over_small"],
            if report["within_budget"] == json!(true) {
                "met"
            } else {
                "missed"
            }
        );
    }
    Ok(())
}

/// One run on a fresh server: preload `subjects`, erase `args.erasures` of them, check.
fn run_one(args: &ErasureBenchArgs, dir: &Path, subjects: u64, seed: u64) -> anyhow::Result<Value> {
    let data = dir.join(format!("data-{subjects}"));
    let config = ServerConfig {
        auth: AuthMode::Off,
        master_key_file: Some(bench_master_key(dir)?),
        ..ServerConfig::default()
    };
    let server = BenchServer::start(&data, args.server_threads, config)?;
    let result = measure(args, &server, &data, subjects, seed);
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
    result
}

fn measure(
    args: &ErasureBenchArgs,
    server: &BenchServer,
    data: &Path,
    subjects: u64,
    seed: u64,
) -> anyhow::Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(wait_ready(
        server.addr(),
        std::time::Duration::from_secs(60),
    ))?;
    let server_args = ServerArgs::local(format!("http://{}", server.addr()), data);
    let client = Client::new(&server_args)?;
    let declared = json!({"subject": "/user", "fields": ["/email"]});
    client.put(
        &paths::stream(STREAM),
        &json!({"partitions": 4, "fsync": "always", "personal_data": declared}),
    )?;
    client.put(
        &paths::view(VIEW),
        &json!({"source": STREAM, "kind": "table"}),
    )?;

    let started = Instant::now();
    preload(args, &server_args, subjects)?;
    let preload_s = started.elapsed().as_secs_f64();
    let store_bytes = std::fs::metadata(data.join("keys").join("data-keys")).map_or(0, |m| m.len());

    wait_caught_up(&client)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ids: Vec<u64> = (0..subjects).collect();
    ids.shuffle(&mut rng);
    let (erased, kept) = ids.split_at(args.erasures as usize);
    let mut hist = latency_histogram()?;
    let started = Instant::now();
    for &i in erased {
        let sent = Instant::now();
        let answer: DataSubject = client.delete_as(&paths::data_subject(&subject(i)))?;
        hist.record(elapsed_us(sent))?;
        ensure!(
            answer.key == KeyState::Erased,
            "erasing {}: {answer:?}",
            subject(i)
        );
    }
    let erase_s = started.elapsed().as_secs_f64();
    check(
        &client,
        erased,
        &kept[..erased.len().min(kept.len())],
        &mut rng,
    )?;
    let ms = |q: f64| round3(hist.value_at_quantile(q) as f64 / 1000.0);
    Ok(json!({
        "subjects": subjects,
        "preload_s": round1(preload_s),
        "preload_records_per_s": round1(subjects as f64 / preload_s),
        "key_store_bytes": store_bytes,
        "erasures": erased.len(),
        "erasures_per_s": round1(erased.len() as f64 / erase_s),
        "erase_ms": {
            "p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99),
            "max": round3(hist.max() as f64 / 1000.0),
        },
    }))
}

fn subject(i: u64) -> String {
    format!("s{i:08}")
}

/// Appends one record per subject `0..subjects`, in batches of `args.batch`, from
/// `args.preload_threads` clients.
fn preload(args: &ErasureBenchArgs, server: &ServerArgs, subjects: u64) -> anyhow::Result<()> {
    let batches = subjects.div_ceil(args.batch);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.preload_threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let client = Client::new(server)?;
                    let mut rng = rand::rngs::StdRng::from_entropy();
                    for b in (t..batches).step_by(args.preload_threads as usize) {
                        let from = b * args.batch;
                        let records: Vec<Value> = (from..(from + args.batch).min(subjects))
                            .map(|i| {
                                let email = format!("{:032x}@example.org", rng.r#gen::<u128>());
                                json!({"key": subject(i), "value": {"user": subject(i), "email": email}})
                            })
                            .collect();
                        client.post(&paths::records(STREAM), &json!({"records": records}), &[])?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| match w.join() {
            Ok(result) => result,
            Err(_) => bail!("a preload client panicked"),
        })
    })
}

/// Waits until the view has applied the whole stream (at most ten minutes).
fn wait_caught_up(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let status: ViewDetail = client.get_as(&paths::view(VIEW), &[])?;
        if let Some(v) = status.versions.iter().find(|v| v.error.is_some()) {
            bail!("the view stopped: {:?}", v.error);
        }
        if status.versions.iter().all(|v| v.lag_records == 0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the view did not catch up within 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every erased subject's row reads `{"erased": true}`; as many kept subjects (a random
/// sample) read their plaintext.
fn check(
    client: &Client,
    erased: &[u64],
    kept: &[u64],
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let mut kept = kept.to_vec();
    kept.shuffle(rng);
    for (&i, is_erased) in erased
        .iter()
        .map(|i| (i, true))
        .chain(kept.iter().map(|i| (i, false)))
    {
        let row = client.get(&paths::view_row(VIEW, &subject(i)), &[])?;
        let email = &row["value"]["email"];
        if is_erased {
            ensure!(
                *email == json!({"erased": true}),
                "erased subject {} reads {row}",
                subject(i)
            );
        } else {
            ensure!(
                email.as_str().is_some_and(|e| e.ends_with("@example.org")),
                "kept subject {} reads {row}",
                subject(i)
            );
        }
    }
    Ok(())
}
