//! `logbook bench`: benchmarks that measure Logbook against the machine it runs on and print
//! their figures as JSON.
//!
//! `logbook bench log` drives the embedded log the way Kafka producers drive a broker and,
//! in the same run and on the same file system, measures what the raw disk does with the
//! same bytes and the same fsync cadence:
//!
//! ```text
//!  producer 0 ─┐  each: up to D appends in flight, each append = one batch of B records
//!  producer 1 ─┼──▶ stream (K partitions, round-robin or keyed) ──▶ K writer threads
//!  …          ─┘    per-record ack latency → HDR histogram          (group commit + fdatasync)
//!
//!  time ─▶ | warm-up | log slice | raw slice | log slice | raw slice | … (--seconds of log)
//!
//!  raw slice: one thread appends to one fresh file as many bytes as the log slice before it
//!             wrote (for at most as long), one fdatasync per (log bytes / log fsyncs) of
//!             that slice
//! ```
//!
//! The log and the raw disk take turns in slices of `--slice-seconds` (default 1 s) rather
//! than one after the other, because a shared or throttled disk (a cloud volume) changes
//! speed from one second to the next: measured minutes apart, the two would be compared
//! under different conditions. Before each raw slice the producers stop issuing and wait for
//! what they have in flight, so the two never compete for the disk.
//!
//! Definitions (what each JSON figure means):
//! * `records`, `bytes_per_s`, `fsyncs` come from the log's own [`PartitionStats`] counters,
//!   summed over partitions and over the log slices (warm-up excluded); `seconds` is the
//!   total time of the log slices. `bytes_per_s` counts encoded batch bytes written to
//!   segments (framing, headers and CRCs included): the bytes the disk had to take.
//!   `payload_bytes_per_s` counts only record values (`records × record_bytes`).
//! * `ack_latency_us`: per record, from the `append` call to its completion resolving (under
//!   fsync `always`: the batch is on disk), for every append issued inside a log slice. All
//!   records of one append share its latency, so each append is counted `B` times.
//! * `raw_disk_bytes_per_s`: bytes over time of the raw slices; `raw_chunk_bytes`: the log's
//!   average bytes per fsync (each raw slice uses the average of the log slice before it);
//!   `ratio_to_raw_disk =
//!   bytes_per_s / raw_disk_bytes_per_s`. `raw_fsync_us` is the distribution of the raw
//!   `fdatasync` calls: a floor under the log's ack latency at that chunk size.
//! * `cpu_cores`: average cores used during the log slices by the partition writer threads,
//!   the producer threads and the rest of the process; `runqueue_wait_ms_per_s`: how long
//!   writers and producers were runnable but waiting for a CPU, per second (other work on
//!   the machine shows up here). Both from Linux `/proc/self/task/*/schedstat`; `null`
//!   elsewhere.
//!
//! Defaults and why:
//! * `--in-flight 8` appends per producer, like Kafka's
//!   `max.in.flight.requests.per.connection` (default 5). Under fsync `always` throughput is
//!   bounded by Little's law: records in flight (`P × D × B`) divided by the ack latency, so
//!   a producer needs several appends outstanding to fill a group commit while the previous
//!   group's fdatasync runs.
//! * `--batch-records 64`: client-side batching (Kafka's `batch.size`/`linger.ms`). Every
//!   append costs one encode, one queue hop and one completion whatever its size, so one
//!   record per append caps a 2-core machine far below 1 M records/s. 64 records of 100 bytes
//!   make a ~7.8 KiB batch (under Kafka's 16 KiB `batch.size` default), so 1 M records/s
//!   needs only ~16 k appends/s; 64 records of 1 KiB make a 66 KiB batch.
//! * `--partitions 1`: one writer thread and one file, the like-for-like comparison with one
//!   raw-disk thread writing one file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logbook_log::{
    AppendCompletion, AppendCondition, FsyncPolicy, Log, LogStream, PartitionStats, Record,
    RequestId, Stream, StreamConfig, partition_for_key,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::kit::{
    TempDir, elapsed_us, file_system_of, latency_histogram, loadavg_1m, round1, round3,
};

/// Arguments of `logbook bench log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogBenchArgs {
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub(super) record_bytes: usize,
    /// Producer threads.
    #[arg(long, default_value_t = 2)]
    pub(super) producers: usize,
    /// Measured time of the log, seconds (after the warm-up; the raw-disk slices come on top).
    #[arg(long, default_value_t = 10.0)]
    pub(super) seconds: f64,
    /// Warm-up before measuring, seconds (excluded from every figure).
    #[arg(long, default_value_t = 2.0)]
    pub(super) warmup_seconds: f64,
    /// Length of one log slice, seconds; the raw disk gets a turn after each. A value of at
    /// least `--seconds` measures the raw disk once, after the log.
    #[arg(long, default_value_t = 1.0)]
    pub(super) slice_seconds: f64,
    /// Records per append: one append is one batch on disk (client-side batching, like
    /// Kafka's batch.size). Each append has a fixed cost (encode, queue hop, completion), so
    /// 64 lets 100-byte records pass 1 M records/s on 2 cores: ~16 k appends/s of ~7.8 KiB.
    #[arg(long, default_value_t = 64)]
    pub(super) batch_records: usize,
    /// Appends each producer keeps outstanding (Kafka's
    /// max.in.flight.requests.per.connection). Under fsync always, throughput is at most the
    /// records in flight (producers × in-flight × batch-records) per ack latency; fewer in
    /// flight means smaller group commits and lower latency.
    #[arg(long, default_value_t = 8)]
    pub(super) in_flight: usize,
    /// Partitions of the stream (one writer thread each).
    #[arg(long, default_value_t = 1)]
    pub(super) partitions: u32,
    /// Fsync policy of the stream: always, never or interval_ms=N.
    #[arg(long, default_value = "always")]
    pub(super) fsync: FsyncPolicy,
    /// Give every record a 16-byte key and send each batch to its keys' partition (default:
    /// unkeyed records, batches spread round-robin over partitions).
    #[arg(long)]
    pub(super) keyed: bool,
    /// Directory in which the temporary benchmark directory is made. Default: ./target/bench
    /// if ./target exists (the repository's file system), else the system temp directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give every append a unique request id (`Stream::append_with_id`: one id per batch,
    /// one remembered entry per record) and report the request-id index's memory per id as
    /// `dedup_bytes_per_id`. Compare with the same command without it.
    #[arg(long)]
    request_ids: bool,
    /// Print the figures as one JSON object instead of a summary.
    #[arg(long)]
    pub(super) json: bool,
    /// Where the log lives: `embedded` (this machine's disk, against raw disk writes) or
    /// `jetstream` (a NATS JetStream cluster at `--nats-urls`, against a raw async-nats
    /// publisher; a binary built with `--features cluster`).
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub(super) backend: Backend,
    /// NATS servers of the JetStream cluster, comma-separated (with `--backend jetstream`),
    /// e.g. the development cluster's `nats://127.0.0.1:14222,nats://127.0.0.1:14223`.
    #[arg(long, value_delimiter = ',')]
    pub(super) nats_urls: Vec<String>,
    /// Replicas of the benchmark's JetStream streams, Logbook's and the raw publisher's
    /// (with `--backend jetstream`).
    #[arg(long, default_value_t = 3)]
    pub(super) replicas: u32,
}

/// Where `logbook bench log` appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Backend {
    /// The embedded segment log on this machine's disk.
    Embedded,
    /// The JetStream backend (the cluster mode's log).
    Jetstream,
}

/// Largest piece written by one `write` call of the raw-disk measurement (bounds its buffer).
const RAW_WRITE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Bytes of a key in `--keyed` mode.
const KEY_BYTES: usize = 16;

/// What the producers are to do (set by the main thread).
pub(super) const PHASE_WARMUP: u8 = 0;
pub(super) const PHASE_MEASURE: u8 = 1;
/// Stop issuing, wait for everything in flight, then idle until the phase changes.
pub(super) const PHASE_PAUSE: u8 = 2;
pub(super) const PHASE_STOP: u8 = 3;

/// Sums of the partitions' counters at one moment, or differences of two such sums.
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

    fn add(&mut self, other: Totals) {
        self.records += other.records;
        self.appends += other.appends;
        self.bytes_written += other.bytes_written;
        self.groups += other.groups;
        self.syncs += other.syncs;
        self.sync_us += other.sync_us;
    }

    /// The raw-disk chunk for these counters: the average bytes the log wrote per fsync
    /// (all of them if it did not fsync).
    fn bytes_per_sync(&self) -> u64 {
        self.bytes_written
            .checked_div(self.syncs)
            .unwrap_or(self.bytes_written)
            .max(1)
    }
}

/// Refuses arguments no run can use, naming the flag.
pub(super) fn validate(args: &LogBenchArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.in_flight == 0 || args.batch_records == 0 {
        bail!("--producers, --in-flight and --batch-records must each be at least 1");
    }
    for (name, value, zero_allowed) in [
        ("--seconds", args.seconds, false),
        ("--slice-seconds", args.slice_seconds, false),
        ("--warmup-seconds", args.warmup_seconds, true),
    ] {
        let ok = value.is_finite() && (value > 0.0 || (zero_allowed && value == 0.0));
        if !ok {
            let what = if zero_allowed {
                "zero or positive"
            } else {
                "positive"
            };
            bail!("{name} must be a {what} number of seconds, got {value}");
        }
    }
    Ok(())
}

/// Runs `logbook bench log` on the embedded backend (`args` already validated).
pub(super) fn run_embedded(args: &LogBenchArgs) -> anyhow::Result<()> {
    let parent = match &args.dir {
        Some(dir) => dir.clone(),
        None if Path::new("target").is_dir() => PathBuf::from("target").join("bench"),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("creating benchmark directory {}", parent.display()))?;
    let parent = parent
        .canonicalize()
        .with_context(|| format!("resolving {}", parent.display()))?;
    let unique = format!(
        "logbook-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let run_dir = TempDir(parent.join(unique));
    std::fs::create_dir(&run_dir.0).with_context(|| format!("creating {}", run_dir.0.display()))?;

    let result = run_slices(args, &run_dir.0)?;
    drop(run_dir);

    let report = report_json(args, &result, &parent);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// What a run measured.
struct Measured {
    totals: Totals,
    /// Total time of the log slices.
    log_time: Duration,
    slices: u32,
    latency: Histogram<u64>,
    /// Core-seconds used during the log slices, by kind of thread.
    cpu: Option<CpuSeconds>,
    raw: RawDisk,
    /// Request ids remembered and the index's bytes at the end (with `--request-ids`).
    dedup: Option<(u64, u64)>,
}

/// One producer's records, each batch prepared once and appended again and again.
pub(super) struct Batches {
    /// `(partition, records)`, cycled through in order.
    pub(super) batches: Vec<(u32, Vec<Record>)>,
}

pub(super) fn build_batches(args: &LogBenchArgs, producer: usize, value: &[u8]) -> Batches {
    let partitions = args.partitions.max(1);
    let start = producer % partitions as usize;
    if !args.keyed {
        let records = vec![Record::new(value.to_vec()); args.batch_records];
        let mut batches: Vec<(u32, Vec<Record>)> =
            (0..partitions).map(|p| (p, records.clone())).collect();
        // Start each producer at a different partition so that P producers spread at once.
        batches.rotate_left(start);
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
    let mut batches: Vec<(u32, Vec<Record>)> = (0..partitions).zip(by_partition).collect();
    batches.rotate_left(start);
    Batches { batches }
}

/// What the main thread and the producers share.
pub(super) struct Control {
    pub(super) phase: AtomicU8,
    /// Producers that have emptied their in-flight queue since the last `PHASE_PAUSE`.
    pub(super) drained: AtomicUsize,
    pub(super) failed: AtomicBool,
    /// Records acknowledged of appends issued inside a measured slice (for backends without
    /// their own counters).
    pub(super) measured_records: AtomicU64,
}

impl Control {
    pub(super) fn new() -> Control {
        Control {
            phase: AtomicU8::new(PHASE_WARMUP),
            drained: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            measured_records: AtomicU64::new(0),
        }
    }
}

/// The pending outcome of an append, with or without a request id.
enum Pending {
    Plain(AppendCompletion),
    WithId(logbook_log::IdempotentAppend),
}

impl Pending {
    fn is_ready(&self) -> bool {
        match self {
            Pending::Plain(c) => c.is_ready(),
            Pending::WithId(c) => c.is_ready(),
        }
    }
    fn wait(self) -> anyhow::Result<()> {
        match self {
            Pending::Plain(c) => {
                c.wait()?;
            }
            Pending::WithId(c) => {
                let outcome = c.wait()?;
                anyhow::ensure!(
                    !outcome.duplicate,
                    "a fresh request id was reported as a duplicate"
                );
            }
        }
        Ok(())
    }
}

/// An append in flight: its completion, when it was issued, whether it was issued inside a
/// log slice (then its latency counts), and its record count.
type InFlight = (Pending, Instant, bool, u64);

pub(super) fn producer(
    stream: &Arc<dyn LogStream>,
    batches: &Batches,
    in_flight: usize,
    control: &Control,
    request_ids: Option<usize>,
) -> anyhow::Result<Histogram<u64>> {
    let mut request_counter = 0u64;
    let mut latency = latency_histogram()?;
    let mut queue: VecDeque<InFlight> = VecDeque::with_capacity(in_flight);
    let mut next = 0usize;
    let resolve = |latency: &mut Histogram<u64>, (completion, issued, measured, n): InFlight| {
        completion.wait()?;
        if measured {
            latency.saturating_record_n(elapsed_us(issued), n);
            control.measured_records.fetch_add(n, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    loop {
        if control.failed.load(Ordering::Relaxed) {
            break;
        }
        let phase = control.phase.load(Ordering::Acquire);
        if phase == PHASE_STOP {
            break;
        }
        if phase == PHASE_PAUSE {
            while let Some(entry) = queue.pop_front() {
                resolve(&mut latency, entry)?;
            }
            control.drained.fetch_add(1, Ordering::AcqRel);
            while control.phase.load(Ordering::Acquire) == PHASE_PAUSE
                && !control.failed.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_micros(500));
            }
            continue;
        }
        let measured = phase == PHASE_MEASURE;
        while queue.len() < in_flight {
            let (partition, records) = &batches.batches[next];
            next = (next + 1) % batches.batches.len();
            let issued = Instant::now();
            let completion = match request_ids {
                // Through the LogBackend seam, as views, transactions and the server append.
                None => Pending::Plain(
                    stream
                        .partition(*partition)?
                        .append_batch(records, AppendCondition::Always)?,
                ),
                Some(producer) => {
                    // A client builds its records for each request; the id path takes them
                    // by value (it adds the request-id headers), so the clone is its cost.
                    request_counter += 1;
                    let id = RequestId::new(format!("bench-{producer}-{request_counter}"))?;
                    Pending::WithId(stream.clone().append_with_id(&id, None, records.clone())?)
                }
            };
            queue.push_back((completion, issued, measured, records.len() as u64));
        }
        // Wait for the oldest, then take every other one already resolved (a group commit
        // resolves many at once; with several partitions they need not resolve in the order
        // they were issued). A completion is noticed when this thread looks, so a latency can
        // be overstated by the time spent on the others — microseconds.
        if let Some(entry) = queue.pop_front() {
            resolve(&mut latency, entry)?;
        }
        let mut i = 0;
        while i < queue.len() {
            if queue[i].0.is_ready() {
                if let Some(entry) = queue.remove(i) {
                    resolve(&mut latency, entry)?;
                }
            } else {
                i += 1;
            }
        }
    }
    for (completion, ..) in queue {
        completion.wait()?;
    }
    Ok(latency)
}

fn run_slices(args: &LogBenchArgs, dir: &Path) -> anyhow::Result<Measured> {
    let log_dir = dir.join("log");
    let log =
        Log::open(&log_dir).with_context(|| format!("opening a log in {}", log_dir.display()))?;
    let config = StreamConfig {
        fsync: args.fsync,
        ..StreamConfig::with_partitions(args.partitions)
    };
    let stream = log.create_stream("bench", config)?;
    let mut raw = RawWriter::create(&dir.join("raw-disk.bin"))?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x10_6b00c);
    // Printable, not compressible to nothing: what a JSON payload roughly looks like to a disk.
    let value: Vec<u8> = (0..args.record_bytes)
        .map(|_| rng.gen_range(b' '..=b'~'))
        .collect();

    let control = Arc::new(Control::new());
    let start = Arc::new(Barrier::new(args.producers + 1));
    let mut handles = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let batches = build_batches(args, i, &value);
        let stream: Arc<dyn LogStream> = stream.clone();
        let control = control.clone();
        let start = start.clone();
        let in_flight = args.in_flight;
        let request_ids = args.request_ids;
        let handle = std::thread::Builder::new()
            .name(format!("bench-prod-{i}"))
            .spawn(move || {
                start.wait();
                let result = producer(
                    &stream,
                    &batches,
                    in_flight,
                    &control,
                    request_ids.then_some(i),
                );
                if result.is_err() {
                    control.failed.store(true, Ordering::Relaxed);
                }
                result
            })?;
        handles.push(handle);
    }

    let progress = progress_bar(args);
    start.wait();
    progress.set_message("warming up");
    sleep_watching(
        Duration::from_secs_f64(args.warmup_seconds),
        &control.failed,
    );

    let total = Duration::from_secs_f64(args.seconds);
    let slice = Duration::from_secs_f64(args.slice_seconds.min(args.seconds));
    let mut totals = Totals::default();
    let mut log_time = Duration::ZERO;
    let mut slices = 0u32;
    let mut cpu = Some(CpuSeconds::default());
    let mut raw_result = Ok(());
    while log_time < total && !control.failed.load(Ordering::Relaxed) {
        let this = slice.min(total - log_time);
        // A log slice.
        let before = Totals::of(&stream);
        let cpu_before = thread_times();
        let started = Instant::now();
        control.phase.store(PHASE_MEASURE, Ordering::Release);
        while started.elapsed() < this && !control.failed.load(Ordering::Relaxed) {
            std::thread::sleep(
                (this - started.elapsed().min(this)).min(Duration::from_millis(100)),
            );
            let done = log_time + started.elapsed();
            progress.set_position(done.as_millis() as u64);
            let now = Totals::of(&stream);
            let so_far = totals.records + (now.records - before.records);
            progress.set_message(format!(
                "{:.0} records/s",
                so_far as f64 / done.as_secs_f64().max(1e-3)
            ));
        }
        control.phase.store(PHASE_PAUSE, Ordering::Release);
        while control.drained.load(Ordering::Acquire) < args.producers
            && !control.failed.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        control.drained.store(0, Ordering::Release);
        let elapsed = started.elapsed();
        let delta = Totals::of(&stream).minus(before);
        cpu = match (cpu, cpu_before, thread_times()) {
            (Some(c), Some(b), Some(a)) => Some(c.plus(&b, &a)),
            _ => None,
        };
        totals.add(delta);
        log_time += elapsed;
        slices += 1;
        // The raw disk's turn, with the same chunk size and at most the same bytes and time.
        if control.failed.load(Ordering::Relaxed) {
            break;
        }
        progress.set_message("raw disk");
        raw_result = raw.write(delta.bytes_written, delta.bytes_per_sync(), elapsed);
        if raw_result.is_err() {
            break;
        }
    }
    control.phase.store(PHASE_STOP, Ordering::Release);
    progress.finish_and_clear();

    let (latency, first_error) = join_producers(handles)?;
    let dedup = args.request_ids.then(|| {
        (
            stream.request_ids().len(),
            stream.request_ids().memory_bytes(),
        )
    });
    drop(stream);
    log.close();
    if let Some(e) = first_error {
        return Err(e.context("the benchmark's appends failed"));
    }
    raw_result?;
    Ok(Measured {
        totals,
        log_time,
        slices,
        latency,
        cpu,
        raw: raw.finish()?,
        dedup,
    })
}

/// Joins the producer threads: their latency histograms merged, and the first error one of
/// them ended with (kept for the caller to report after its cleanup).
pub(super) fn join_producers(
    handles: Vec<std::thread::JoinHandle<anyhow::Result<Histogram<u64>>>>,
) -> anyhow::Result<(Histogram<u64>, Option<anyhow::Error>)> {
    let mut latency = latency_histogram()?;
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(h)) => latency.add(&h)?,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a producer thread panicked"));
            }
        }
    }
    Ok((latency, first_error))
}

pub(super) fn progress_bar(args: &LogBenchArgs) -> ProgressBar {
    let total_ms = (args.seconds * 1000.0) as u64;
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let progress = ProgressBar::with_draw_target(Some(total_ms), target);
    if let Ok(style) = ProgressStyle::with_template("bench log [{bar:30}] {elapsed_precise} {msg}")
    {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}

pub(super) fn sleep_watching(total: Duration, failed: &AtomicBool) {
    let until = Instant::now() + total;
    while !failed.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// The raw-disk writer: one fresh file, appended to sequentially across slices.
struct RawWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    rng: rand::rngs::StdRng,
    disk: RawDisk,
}

/// What the raw-disk measurement did, over all its slices.
struct RawDisk {
    bytes: u64,
    fsyncs: u64,
    time: Duration,
    /// Latency of each `fdatasync`, µs.
    fsync_us: Histogram<u64>,
}

impl RawDisk {
    fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

impl RawWriter {
    fn create(path: &Path) -> anyhow::Result<RawWriter> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(RawWriter {
            path: path.to_path_buf(),
            file,
            buf: Vec::new(),
            rng: rand::rngs::StdRng::seed_from_u64(7),
            disk: RawDisk {
                bytes: 0,
                fsyncs: 0,
                time: Duration::ZERO,
                fsync_us: latency_histogram()?,
            },
        })
    }

    /// Writes up to `total` bytes (at least one chunk), one `fdatasync` per `chunk` bytes,
    /// for at most about `max_time`.
    fn write(&mut self, total: u64, chunk: u64, max_time: Duration) -> anyhow::Result<()> {
        let piece = usize::try_from(chunk)
            .unwrap_or(usize::MAX)
            .min(RAW_WRITE_BYTES_MAX);
        if self.buf.len() < piece {
            let rng = &mut self.rng;
            self.buf
                .extend((self.buf.len()..piece).map(|_| rng.gen_range(b' '..=b'~')));
        }
        let started = Instant::now();
        let mut written = 0u64;
        while written == 0 || (written < total && started.elapsed() < max_time) {
            let mut in_chunk = 0u64;
            while in_chunk < chunk {
                let n = usize::try_from(chunk - in_chunk).map_or(piece, |left| left.min(piece));
                self.file
                    .write_all(&self.buf[..n])
                    .with_context(|| format!("writing {}", self.path.display()))?;
                in_chunk += n as u64;
            }
            let synced = Instant::now();
            self.file
                .sync_data()
                .with_context(|| format!("fdatasync {}", self.path.display()))?;
            self.disk.fsync_us.saturating_record(elapsed_us(synced));
            written += in_chunk;
            self.disk.fsyncs += 1;
        }
        self.disk.time += started.elapsed();
        self.disk.bytes += written;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<RawDisk> {
        drop(self.file);
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing {}", self.path.display()))?;
        Ok(self.disk)
    }
}

/// One thread's scheduler times, from `/proc/self/task/TID/schedstat` (Linux only).
struct ThreadTimes {
    tid: u64,
    name: String,
    /// Time on a CPU, ns.
    run_ns: u64,
    /// Time runnable but waiting for a CPU, ns: how much other work got in its way.
    wait_ns: u64,
}

/// Scheduler times of every thread of this process, or `None` where /proc lacks them.
fn thread_times() -> Option<Vec<ThreadTimes>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let tid: u64 = entry.file_name().to_str()?.parse().ok()?;
        let (Ok(name), Ok(sched)) = (
            std::fs::read_to_string(entry.path().join("comm")),
            std::fs::read_to_string(entry.path().join("schedstat")),
        ) else {
            continue; // the thread ended
        };
        let mut fields = sched.split_whitespace();
        let run_ns = fields.next()?.parse().ok()?;
        let wait_ns = fields.next()?.parse().ok()?;
        out.push(ThreadTimes {
            tid,
            name: name.trim_end().to_string(),
            run_ns,
            wait_ns,
        });
    }
    Some(out)
}

/// Seconds on a CPU and seconds waiting for one, by kind of thread.
#[derive(Debug, Default, Clone, Copy)]
struct CpuSeconds {
    writers: f64,
    producers: f64,
    other: f64,
    writers_waiting: f64,
    producers_waiting: f64,
}

impl CpuSeconds {
    /// Adds the times between two snapshots of [`thread_times`].
    fn plus(mut self, before: &[ThreadTimes], after: &[ThreadTimes]) -> Self {
        for t in after {
            let earlier = before.iter().find(|b| b.tid == t.tid);
            let run = t.run_ns.saturating_sub(earlier.map_or(0, |b| b.run_ns)) as f64 / 1e9;
            let wait = t.wait_ns.saturating_sub(earlier.map_or(0, |b| b.wait_ns)) as f64 / 1e9;
            // Thread names are cut to 15 bytes by the kernel.
            if t.name.starts_with("logbook-writer") {
                self.writers += run;
                self.writers_waiting += wait;
            } else if t.name.starts_with("bench-prod") {
                self.producers += run;
                self.producers_waiting += wait;
            } else {
                self.other += run;
            }
        }
        self
    }
}

fn report_json(args: &LogBenchArgs, m: &Measured, parent: &Path) -> serde_json::Value {
    let t = &m.totals;
    let secs = m.log_time.as_secs_f64().max(1e-9);
    let bytes_per_s = t.bytes_written as f64 / secs;
    let raw_bytes_per_s = m.raw.bytes_per_s();
    let per_sync = |x: u64| {
        if t.syncs == 0 {
            serde_json::Value::Null
        } else {
            json!(round1(x as f64 / t.syncs as f64))
        }
    };
    let h = &m.latency;
    let r = &m.raw.fsync_us;
    json!({
        "record_bytes": args.record_bytes,
        "producers": args.producers,
        "in_flight_per_producer": args.in_flight,
        "batch_records": args.batch_records,
        "partitions": args.partitions,
        "keyed": args.keyed,
        "request_ids": args.request_ids,
        "dedup_ids_remembered": m.dedup.map(|(ids, _)| ids),
        "dedup_index_bytes": m.dedup.map(|(_, bytes)| bytes),
        "dedup_bytes_per_id": m.dedup.filter(|(ids, _)| *ids > 0).map(|(ids, bytes)| round1(bytes as f64 / ids as f64)),
        "fsync": args.fsync.to_string(),
        "seconds": round3(secs),
        "warmup_seconds": args.warmup_seconds,
        "slices": m.slices,
        "records": t.records,
        "records_per_s": round1(t.records as f64 / secs),
        "bytes_per_s": round1(bytes_per_s),
        "payload_bytes_per_s": round1((t.records * args.record_bytes as u64) as f64 / secs),
        "ack_latency_us": {
            "p50": h.value_at_quantile(0.50),
            "p95": h.value_at_quantile(0.95),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
            "mean": round1(h.mean()),
            "count": h.len(),
        },
        "appends": t.appends,
        "group_commits": t.groups,
        "fsyncs": t.syncs,
        "fsync_us_mean": per_sync(t.sync_us),
        "writer_time_in_fsync": round3(t.sync_us as f64 / 1e6 / secs / f64::from(args.partitions.max(1))),
        "avg_bytes_per_fsync": per_sync(t.bytes_written),
        "avg_records_per_fsync": per_sync(t.records),
        "avg_appends_per_fsync": per_sync(t.appends),
        "raw_disk_bytes_per_s": round1(raw_bytes_per_s),
        // Each raw slice uses its own log slice's bytes per fsync; this is the overall average.
        "raw_chunk_bytes": t.bytes_per_sync(),
        "raw_disk_bytes": m.raw.bytes,
        "raw_disk_fsyncs": m.raw.fsyncs,
        "raw_disk_seconds": round3(m.raw.time.as_secs_f64()),
        "raw_fsync_us": {
            "p50": r.value_at_quantile(0.50),
            "p99": r.value_at_quantile(0.99),
            "max": r.max(),
            "mean": round1(r.mean()),
        },
        "ratio_to_raw_disk": round3(bytes_per_s / raw_bytes_per_s.max(1e-9)),
        "cpu_cores": m.cpu.map(|c| json!({
            "writers": round3(c.writers / secs),
            "producers": round3(c.producers / secs),
            "other": round3(c.other / secs),
        })),
        // Per second of log time: how long threads were runnable but had no CPU.
        "runqueue_wait_ms_per_s": m.cpu.map(|c| json!({
            "writers": round1(c.writers_waiting * 1e3 / secs),
            "producers": round1(c.producers_waiting * 1e3 / secs),
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
    let raw = &r["raw_fsync_us"];
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
        "  log:      {:.0} records/s, {:.1} MiB/s written ({:.1} MiB/s payload)",
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
        r["fsyncs"], r["avg_bytes_per_fsync"], r["avg_records_per_fsync"], r["fsync_us_mean"]
    );
    println!(
        "  raw disk: {:.1} MiB/s with one fdatasync per {} bytes (fdatasync µs p50 {}, p99 {}) → log/raw = {:.3}",
        mib(f("raw_disk_bytes_per_s")),
        r["raw_chunk_bytes"],
        raw["p50"],
        raw["p99"],
        f("ratio_to_raw_disk"),
    );
    if let Some(cpu) = r["cpu_cores"].as_object() {
        println!(
            "  cpu cores used: writers {}  producers {}  other {}; waiting for a CPU (ms/s): writers {}  producers {}",
            cpu["writers"],
            cpu["producers"],
            cpu["other"],
            r["runqueue_wait_ms_per_s"]["writers"],
            r["runqueue_wait_ms_per_s"]["producers"],
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: LogBenchArgs,
    }

    fn args(extra: &[&str]) -> LogBenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn keyed_batches_go_to_their_keys_partition() {
        let a = args(&["--keyed", "--partitions", "5", "--batch-records", "3"]);
        let batches = build_batches(&a, 2, b"v");
        assert_eq!(batches.batches.len(), 5);
        for (partition, records) in &batches.batches {
            assert_eq!(records.len(), 3);
            for r in records {
                let key = r.key.as_deref().unwrap_or_default();
                assert_eq!(key.len(), KEY_BYTES);
                assert_eq!(partition_for_key(key, 5), *partition);
            }
        }
    }

    #[test]
    fn a_short_run_reports_every_figure() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = args(&[
            "--record-bytes",
            "100",
            "--seconds",
            "0.4",
            "--slice-seconds",
            "0.2",
            "--warmup-seconds",
            "0.1",
            "--batch-records",
            "8",
        ]);
        let measured = run_slices(&a, dir.path())?;
        assert_eq!(measured.slices, 2);
        assert!(measured.totals.records > 0);
        assert!(measured.raw.bytes > 0 && measured.raw.fsyncs > 0);
        let report = report_json(&a, &measured, dir.path());
        for key in [
            "record_bytes",
            "producers",
            "in_flight_per_producer",
            "batch_records",
            "partitions",
            "fsync",
            "seconds",
            "records",
            "records_per_s",
            "bytes_per_s",
            "payload_bytes_per_s",
            "fsyncs",
            "avg_bytes_per_fsync",
            "avg_records_per_fsync",
            "raw_disk_bytes_per_s",
            "raw_chunk_bytes",
            "ratio_to_raw_disk",
            "dir",
        ] {
            assert!(!report[key].is_null(), "{key} missing in {report}");
        }
        for p in ["p50", "p95", "p99", "p999", "max"] {
            assert!(report["ack_latency_us"][p].as_u64().is_some_and(|v| v > 0));
        }
        assert_eq!(report["fsync"], "always");
        // The raw-disk file is removed; the log is left to the caller's temporary directory.
        assert!(!dir.path().join("raw-disk.bin").exists());
        Ok(())
    }
}
