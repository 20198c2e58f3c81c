//! `logbook bench`: benchmarks that measure Logbook against the machine it runs on and print
//! their figures as JSON.
//!
//! `logbook bench log` drives the embedded log the way Kafka producers drive a broker and
//! then, in the same run and on the same file system, measures what the raw disk does with
//! the same bytes and the same fsync cadence:
//!
//! ```text
//!  producer 0 ─┐  each: up to D appends in flight, each append = one batch of B records
//!  producer 1 ─┼──▶ stream (K partitions, round-robin or keyed) ──▶ K writer threads
//!  …          ─┘    per-record ack latency → HDR histogram          (group commit + fdatasync)
//!                                   │
//!        PartitionStats deltas over the measured window: bytes written, fsyncs, records
//!                                   ▼
//!  raw disk: one thread, a fresh file, sequential writes of the same total bytes,
//!            one fdatasync per chunk of (log bytes written / log fsyncs) bytes
//! ```
//!
//! Definitions (what each JSON figure means):
//! * `records`, `bytes_per_s`, `fsyncs` come from the log's own [`PartitionStats`] counters,
//!   taken at the start and the end of the measured window (the warm-up is excluded), summed
//!   over partitions. `bytes_per_s` counts encoded batch bytes written to segments (framing,
//!   headers and CRCs included): the bytes the disk had to take. `payload_bytes_per_s` counts
//!   only record values (`records × record_bytes`).
//! * `ack_latency_us`: per record, from the `append` call to its completion resolving (for
//!   fsync `always`: the batch is on disk), for every append *issued* inside the window.
//!   All records of one append share its latency, so each append is recorded `B` times.
//! * `raw_disk_bytes_per_s`: the comparator. `ratio_to_raw_disk = bytes_per_s /
//!   raw_disk_bytes_per_s`. It writes at most what the log wrote in the window and stops
//!   after at most `--seconds`.
//!
//! Defaults and why:
//! * `--in-flight 8` appends per producer, like Kafka's
//!   `max.in.flight.requests.per.connection` (default 5; 8 keeps two producers able to fill a
//!   group commit while the previous group's fdatasync runs).
//! * `--batch-records 64`: client-side batching (Kafka's `batch.size`/`linger.ms`). Every
//!   append costs one encode, one queue hop and one completion, whatever its size, so one
//!   record per append caps a 2-core machine far below 1 M records/s. 64 records of 100 bytes
//!   make a ~7.8 KiB batch (under Kafka's 16 KiB `batch.size` default), so 1 M records/s
//!   needs only ~16 k appends/s; 64 records of 1 KiB make a 66 KiB batch.
//! * `--partitions 1`: one writer thread, one file — the simplest case to compare with one
//!   raw-disk thread on one file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logbook_log::{
    AppendCompletion, FsyncPolicy, Log, PartitionStats, Record, Stream, StreamConfig,
    partition_for_key,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Append throughput and ack latency of the log, against raw disk writes.
    ///
    /// Creates a fresh stream in a temporary directory (removed afterwards), runs `--producers`
    /// threads appending for `--seconds` after a warm-up, then writes the same bytes to a
    /// plain file with the same fsync cadence and reports both.
    Log(LogBenchArgs),
}

/// Arguments of `logbook bench log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogBenchArgs {
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Producer threads.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Measured duration, seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up before measuring, seconds (excluded from every figure). Long enough by default
    /// to use up the burst allowance of a cloud disk, so that the log's window and the raw-disk
    /// measurement after it both see the disk's sustained rate.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Records per append (one append = one batch on disk). Default 64: see the module docs.
    #[arg(long, default_value_t = 64)]
    batch_records: usize,
    /// Appends each producer keeps outstanding (Kafka's
    /// max.in.flight.requests.per.connection).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Partitions of the stream (one writer thread each).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Fsync policy of the stream: always, never or interval_ms=N.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Give every record a 16-byte key and send each batch to its keys' partition (default:
    /// unkeyed records, batches spread round-robin over partitions).
    #[arg(long)]
    keyed: bool,
    /// Directory in which the temporary benchmark directory is made. Default: ./target/bench
    /// if ./target exists (the repository's file system), else the system temp directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Log(args) => run_log(&args),
    }
}

/// Largest piece written by one `write` call of the raw-disk measurement (bounds its buffer).
const RAW_WRITE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Bytes of a key in `--keyed` mode.
const KEY_BYTES: usize = 16;

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// A directory removed when dropped (also on error).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove the benchmark directory");
        }
    }
}

/// Sums of the partitions' counters at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    records: u64,
    appends: u64,
    bytes_written: u64,
    groups: u64,
    syncs: u64,
    sync_us: u64,
}

impl Totals {
    fn of(stream: &Stream) -> Totals {
        let mut t = Totals::default();
        for p in stream.partitions() {
            let s: &PartitionStats = p.stats();
            t.records += s.records.load(Ordering::Relaxed);
            t.appends += s.appends.load(Ordering::Relaxed);
            t.bytes_written += s.bytes_written.load(Ordering::Relaxed);
            t.groups += s.groups.load(Ordering::Relaxed);
            t.syncs += s.syncs.load(Ordering::Relaxed);
            t.sync_us += s.sync_us_total.load(Ordering::Relaxed);
        }
        t
    }

    fn minus(self, earlier: Totals) -> Totals {
        Totals {
            records: self.records - earlier.records,
            appends: self.appends - earlier.appends,
            bytes_written: self.bytes_written - earlier.bytes_written,
            groups: self.groups - earlier.groups,
            syncs: self.syncs - earlier.syncs,
            sync_us: self.sync_us - earlier.sync_us,
        }
    }
}

fn run_log(args: &LogBenchArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.in_flight == 0 || args.batch_records == 0 {
        bail!("--producers, --in-flight and --batch-records must each be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    if !(args.warmup_seconds >= 0.0 && args.warmup_seconds.is_finite()) {
        bail!("--warmup-seconds must be zero or positive");
    }
    let parent = match &args.dir {
        Some(dir) => dir.clone(),
        None if Path::new("target").is_dir() => PathBuf::from("target").join("bench"),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("creating benchmark directory {}", parent.display()))?;
    let parent = parent.canonicalize()?;
    let unique = format!(
        "logbook-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let run_dir = TempDir(parent.join(unique));
    std::fs::create_dir(&run_dir.0).with_context(|| format!("creating {}", run_dir.0.display()))?;

    let log_run = run_producers(args, &run_dir.0.join("log"))?;
    // The log's files stay until the raw measurement is done: freeing their page-cache memory
    // first would hand the raw writes recently used memory, which on a VM is several times
    // cheaper to write into than the never-touched memory the log's writes got (see
    // docs/benchmarks.md), and so would flatter the raw disk.
    let raw = measure_raw_disk(
        &run_dir.0.join("raw-disk.bin"),
        log_run.totals.bytes_written,
        raw_chunk_bytes(&log_run.totals),
        Duration::from_secs_f64(args.seconds),
    )?;
    drop(run_dir);

    let report = report_json(args, &log_run, &raw, &parent);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// What the log part of the run measured.
struct LogRun {
    totals: Totals,
    window: Duration,
    latency: Histogram<u64>,
    cpu: Option<CpuShares>,
}

/// One producer's records, each batch prepared once and appended again and again.
struct Batches {
    /// `(partition, records)`, cycled through in order.
    batches: Vec<(u32, Vec<Record>)>,
}

fn build_batches(args: &LogBenchArgs, producer: usize, value: &[u8]) -> Batches {
    let partitions = args.partitions;
    if !args.keyed {
        let records = vec![Record::new(value.to_vec()); args.batch_records];
        // Start each producer at a different partition so P producers spread at once.
        let batches = (0..partitions)
            .map(|i| {
                let p = (i + producer as u32) % partitions;
                (p, records.clone())
            })
            .collect();
        return Batches { batches };
    }
    let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    let mut n: u64 = 0;
    while by_partition.iter().any(|b| b.len() < args.batch_records) {
        let key = format!("{producer:04}-{n:011}");
        debug_assert_eq!(key.len(), KEY_BYTES);
        n += 1;
        let p = partition_for_key(key.as_bytes(), partitions) as usize;
        if by_partition[p].len() < args.batch_records {
            by_partition[p].push(Record::keyed(key, value.to_vec()));
        }
    }
    let mut batches: Vec<(u32, Vec<Record>)> = by_partition
        .into_iter()
        .enumerate()
        .map(|(p, records)| (p as u32, records))
        .collect();
    batches.rotate_left(producer % partitions as usize);
    Batches { batches }
}

/// A producer's outcome.
struct ProducerResult {
    latency: Histogram<u64>,
}

fn producer(
    stream: &Stream,
    batches: &Batches,
    in_flight: usize,
    phase: &AtomicU8,
    failed: &AtomicBool,
) -> anyhow::Result<ProducerResult> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // (completion, issued at, issued inside the measured window, records)
    let mut queue: VecDeque<(AppendCompletion, Instant, bool, u64)> =
        VecDeque::with_capacity(in_flight);
    let mut next = 0usize;
    let record = |latency: &mut Histogram<u64>, issued: Instant, measured: bool, n: u64| {
        if measured {
            let us = u64::try_from(issued.elapsed().as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record_n(us.max(1), n);
        }
    };
    loop {
        let current = phase.load(Ordering::Relaxed);
        if current == PHASE_STOP || failed.load(Ordering::Relaxed) {
            break;
        }
        let measured = current == PHASE_MEASURE;
        while queue.len() < in_flight {
            let (partition, records) = &batches.batches[next];
            next = (next + 1) % batches.batches.len();
            let issued = Instant::now();
            let completion = stream.partitions()[*partition as usize].append(records)?;
            queue.push_back((completion, issued, measured, records.len() as u64));
        }
        // Wait for the oldest; then take every other one that resolved meanwhile (a group
        // commit resolves many at once).
        if let Some((completion, issued, m, n)) = queue.pop_front() {
            completion.wait()?;
            record(&mut latency, issued, m, n);
        }
        // Then every other one already resolved (a group commit resolves many at once; with
        // several partitions they need not resolve in the order they were issued).
        let mut i = 0;
        while i < queue.len() {
            if queue[i].0.is_ready() {
                if let Some((completion, issued, m, n)) = queue.remove(i) {
                    completion.wait()?;
                    record(&mut latency, issued, m, n);
                }
            } else {
                i += 1;
            }
        }
    }
    // Drain what is still in flight (not measured: issued during the window, but the window
    // has closed; counting them would need their completion time anyway).
    for (completion, ..) in queue {
        completion.wait()?;
    }
    Ok(ProducerResult { latency })
}

fn run_producers(args: &LogBenchArgs, dir: &Path) -> anyhow::Result<LogRun> {
    let log = Log::open(dir).with_context(|| format!("opening a log in {}", dir.display()))?;
    let config = StreamConfig {
        fsync: args.fsync,
        ..StreamConfig::with_partitions(args.partitions)
    };
    let stream = log.create_stream("bench", config)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x10_6b00c);
    // Printable, not compressible to nothing: what a JSON payload roughly looks like to a disk.
    let value: Vec<u8> = (0..args.record_bytes)
        .map(|_| rng.gen_range(b' '..=b'~'))
        .collect();

    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.producers + 1));
    let mut handles = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let batches = build_batches(args, i, &value);
        let stream = stream.clone();
        let phase = phase.clone();
        let failed = failed.clone();
        let start = start.clone();
        let in_flight = args.in_flight;
        let handle = std::thread::Builder::new()
            .name(format!("bench-prod-{i}"))
            .spawn(move || {
                start.wait();
                let result = producer(&stream, &batches, in_flight, &phase, &failed);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                result
            })?;
        handles.push(handle);
    }

    let progress = progress_bar(args);
    start.wait();
    progress.set_message("warming up");
    sleep_watching(Duration::from_secs_f64(args.warmup_seconds), &failed);

    let before = Totals::of(&stream);
    let cpu_before = thread_cpu_ticks();
    let window_start = Instant::now();
    phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let window = Duration::from_secs_f64(args.seconds);
    let mut last = (Instant::now(), before.records);
    while window_start.elapsed() < window && !failed.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(100).min(window - window_start.elapsed().min(window)),
        );
        let now = Totals::of(&stream);
        let elapsed = last.0.elapsed().as_secs_f64();
        if elapsed >= 0.5 {
            let rate = (now.records - last.1) as f64 / elapsed;
            progress.set_message(format!("{:.0} records/s", rate));
            last = (Instant::now(), now.records);
        }
        progress.set_position(window_start.elapsed().as_millis() as u64);
    }
    phase.store(PHASE_STOP, Ordering::Relaxed);
    let window = window_start.elapsed();
    let after = Totals::of(&stream);
    let cpu_after = thread_cpu_ticks();
    progress.finish_and_clear();

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(result)) => latency.add(&result.latency)?,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a producer thread panicked"));
            }
        }
    }
    drop(stream);
    log.close();
    if let Some(e) = first_error {
        return Err(e.context("the benchmark's appends failed"));
    }
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(CpuShares::between(&b, &a, window)),
        _ => None,
    };
    Ok(LogRun {
        totals: after.minus(before),
        window,
        latency,
        cpu,
    })
}

fn progress_bar(args: &LogBenchArgs) -> ProgressBar {
    let total_ms = (args.seconds * 1000.0) as u64;
    let progress = ProgressBar::with_draw_target(
        Some(total_ms),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("bench log [{bar:30}] {elapsed_precise} {msg}")
    {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}

fn sleep_watching(total: Duration, failed: &AtomicBool) {
    let until = Instant::now() + total;
    while !failed.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// The raw-disk chunk: the average bytes the log wrote per fsync (all bytes if it never
/// fsynced in the window).
fn raw_chunk_bytes(totals: &Totals) -> u64 {
    if totals.syncs == 0 {
        totals.bytes_written.max(1)
    } else {
        (totals.bytes_written / totals.syncs).max(1)
    }
}

/// What the raw-disk measurement did.
struct RawDisk {
    bytes: u64,
    chunk_bytes: u64,
    fsyncs: u64,
    elapsed: Duration,
    /// Latency of each `fdatasync`, µs: the floor under the log's ack latency.
    fsync_us: Histogram<u64>,
}

impl RawDisk {
    fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Writes up to `total` bytes sequentially to a fresh file at `path`, one `fdatasync` per
/// `chunk` bytes, for at most `max_time`; removes the file.
fn measure_raw_disk(
    path: &Path,
    total: u64,
    chunk: u64,
    max_time: Duration,
) -> anyhow::Result<RawDisk> {
    let piece = usize::try_from(chunk)
        .unwrap_or(usize::MAX)
        .min(RAW_WRITE_BYTES_MAX);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let buf: Vec<u8> = (0..piece).map(|_| rng.gen_range(b' '..=b'~')).collect();
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut fsync_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut fsyncs = 0u64;
    // At least one chunk, even if the log wrote less than one chunk.
    while written == 0 || (written < total && started.elapsed() < max_time) {
        let mut in_chunk = 0u64;
        while in_chunk < chunk {
            let n = (chunk - in_chunk).min(piece as u64) as usize;
            file.write_all(&buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
            in_chunk += n as u64;
        }
        let sync_started = Instant::now();
        file.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        let us = u64::try_from(sync_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        fsync_us.saturating_record(us.max(1));
        written += in_chunk;
        fsyncs += 1;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(RawDisk {
        bytes: written,
        chunk_bytes: chunk,
        fsyncs,
        elapsed,
        fsync_us,
    })
}

/// CPU time per thread, from /proc (Linux only): `(thread name, utime + stime ticks)`.
fn thread_cpu_ticks() -> Option<Vec<(u64, String, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let tid: u64 = entry.file_name().to_str()?.parse().ok()?;
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // the thread ended
        };
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat[open + 1..close].to_string();
        // Fields after the name start with field 3 (state); utime and stime are 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        out.push((tid, name, utime + stime));
    }
    Some(out)
}

/// Average cores used during the window, by kind of thread.
struct CpuShares {
    writers: f64,
    producers: f64,
    other: f64,
}

impl CpuShares {
    fn between(
        before: &[(u64, String, u64)],
        after: &[(u64, String, u64)],
        window: Duration,
    ) -> Self {
        // USER_HZ is 100 on every Linux architecture we run on.
        const TICKS_PER_S: f64 = 100.0;
        let mut shares = CpuShares {
            writers: 0.0,
            producers: 0.0,
            other: 0.0,
        };
        for (tid, name, ticks) in after {
            let earlier = before
                .iter()
                .find(|(t, ..)| t == tid)
                .map_or(0, |(.., t)| *t);
            let cores = ticks.saturating_sub(earlier) as f64 / TICKS_PER_S / window.as_secs_f64();
            if name.starts_with("logbook-writer") {
                shares.writers += cores;
            } else if name.starts_with("bench-prod") {
                shares.producers += cores;
            } else {
                shares.other += cores;
            }
        }
        shares
    }
}

/// The file system holding `path`, from /proc/self/mounts: "TYPE DEVICE mounted at POINT".
fn file_system_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind} {device} mounted at {point}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

/// The 1-minute load average (Linux), or `None`.
fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn report_json(
    args: &LogBenchArgs,
    run: &LogRun,
    raw: &RawDisk,
    parent: &Path,
) -> serde_json::Value {
    let t = &run.totals;
    let secs = run.window.as_secs_f64();
    let bytes_per_s = t.bytes_written as f64 / secs;
    let raw_bytes_per_s = raw.bytes_per_s();
    let per_sync = |x: u64| {
        if t.syncs == 0 {
            serde_json::Value::Null
        } else {
            json!(round1(x as f64 / t.syncs as f64))
        }
    };
    let h = &run.latency;
    json!({
        "record_bytes": args.record_bytes,
        "producers": args.producers,
        "in_flight_per_producer": args.in_flight,
        "batch_records": args.batch_records,
        "partitions": args.partitions,
        "keyed": args.keyed,
        "fsync": args.fsync.to_string(),
        "seconds": round3(secs),
        "warmup_seconds": args.warmup_seconds,
        "records": t.records,
        "records_per_s": round1(t.records as f64 / secs),
        "bytes_per_s": round1(bytes_per_s),
        "payload_bytes_per_s": round1((t.records * args.record_bytes as u64) as f64 / secs),
        "ack_latency_us": {
            "count": h.len(),
            "p50": h.value_at_quantile(0.50),
            "p95": h.value_at_quantile(0.95),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
            "mean": round1(h.mean()),
        },
        "appends": t.appends,
        "group_commits": t.groups,
        "fsyncs": t.syncs,
        "fsync_us_avg": per_sync(t.sync_us),
        "avg_bytes_per_fsync": per_sync(t.bytes_written),
        "avg_records_per_fsync": per_sync(t.records),
        "avg_appends_per_fsync": per_sync(t.appends),
        "raw_disk_bytes_per_s": round1(raw_bytes_per_s),
        "raw_chunk_bytes": raw.chunk_bytes,
        "raw_disk_bytes": raw.bytes,
        "raw_disk_fsyncs": raw.fsyncs,
        "raw_disk_seconds": round3(raw.elapsed.as_secs_f64()),
        "raw_fsync_us": {
            "p50": raw.fsync_us.value_at_quantile(0.50),
            "p99": raw.fsync_us.value_at_quantile(0.99),
            "max": raw.fsync_us.max(),
            "mean": round1(raw.fsync_us.mean()),
        },
        "ratio_to_raw_disk": round3(bytes_per_s / raw_bytes_per_s.max(1e-9)),
        "cpu_cores": run.cpu.as_ref().map(|c| json!({
            "writers": round3(c.writers),
            "producers": round3(c.producers),
            "other": round3(c.other),
        })),
        "dir": parent.display().to_string(),
        "file_system": file_system_of(parent),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            // Other work on the machine skews every figure; this says how much there was.
            "loadavg_1m": loadavg_1m(),
        },
    })
}

fn print_summary(r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let lat = &r["ack_latency_us"];
    let mib = |x: f64| x / (1024.0 * 1024.0);
    println!(
        "logbook bench log: {} producers × {} in flight × {} records of {} bytes, {} partition(s), fsync {}, {:.1} s in {}",
        r["producers"],
        r["in_flight_per_producer"],
        r["batch_records"],
        r["record_bytes"],
        r["partitions"],
        r["fsync"].as_str().unwrap_or("?"),
        f("seconds"),
        r["dir"].as_str().unwrap_or("?"),
    );
    println!(
        "  log:      {:>12.0} records/s  {:>8.1} MiB/s written ({:.1} MiB/s payload)",
        f("records_per_s"),
        mib(f("bytes_per_s")),
        mib(f("payload_bytes_per_s")),
    );
    println!(
        "  ack latency µs: p50 {}  p95 {}  p99 {}  p999 {}  max {}",
        lat["p50"], lat["p95"], lat["p99"], lat["p999"], lat["max"]
    );
    println!(
        "  fsyncs:   {} ({} bytes, {} records each on average; {} µs each)",
        r["fsyncs"], r["avg_bytes_per_fsync"], r["avg_records_per_fsync"], r["fsync_us_avg"]
    );
    println!(
        "  raw disk: {:>8.1} MiB/s with one fdatasync per {} bytes → log/raw = {:.3}",
        mib(f("raw_disk_bytes_per_s")),
        r["raw_chunk_bytes"],
        f("ratio_to_raw_disk"),
    );
    println!(
        "  raw fdatasync µs: p50 {}  p99 {}  max {}",
        r["raw_fsync_us"]["p50"], r["raw_fsync_us"]["p99"], r["raw_fsync_us"]["max"]
    );
    if let Some(cpu) = r["cpu_cores"].as_object() {
        println!(
            "  cpu cores used: writers {}  producers {}  other {}",
            cpu["writers"], cpu["producers"], cpu["other"]
        );
    }
}
