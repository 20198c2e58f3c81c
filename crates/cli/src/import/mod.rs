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
//!
//! Modules, in the order a row meets them: `input` (the file, its format and key columns,
//! checked together); `rows` (the file opened by format, its identity,
//! the per-row byte cap, the log's limits) with `csv_rows` and `jsonl_rows` (conversion);
//! this file (the two passes and the workers); `send` (one record's append with retries);
//! `report` (what the import did).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logbook_log::limits as log_limits;

use logbook_api::ProblemCode;
use logbook_api::paths;
use logbook_api::streams::CreateStream;

use crate::client::{Client, ServerArgs, is_problem, problem_of};

mod csv_rows;
mod input;
mod jsonl_rows;
mod report;
mod rows;
mod send;
mod source;

pub use input::{Format, Input};
pub use report::{ImportReport, Percentiles, grouped, micros, report_lines};
use rows::{check_limits, file_identity, request_body};
use send::{Cancelled, Histograms, Sending, Tally};
use source::rows;

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

/// Runs `logbook import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let input = Input::new(args.file, args.format, args.key)?;
    let client = Client::new(&args.server)?;
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
    let stream_path = paths::stream(stream);
    let exists = match client.get(&stream_path, &[]) {
        Ok(_) => true,
        Err(e) if is_problem(&e, ProblemCode::UnknownStream) => false,
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
                &CreateStream {
                    partitions: Some(partitions),
                    ..CreateStream::default()
                },
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
            p.is_any(&[ProblemCode::ReservedStream, ProblemCode::RequestIdConflict])
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
