//! `logbook log ...`: create, append to, read and verify streams in a data directory directly.
//!
//! Only `log create` makes a new data directory; `append`, `read`, `list` and `verify` refuse
//! a path that holds no log, so a mistyped `--data-dir` is an error rather than a new, empty
//! log.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use anyhow::{Context, anyhow, bail};
use logbook_log::storage::OsStorage;
use logbook_log::{
    AppendCompletion, FsyncPolicy, Log, LogError, LogOptions, Record, StreamConfig, limits, verify,
};
use serde_json::json;

use crate::data_dir::DataDirArgs;

/// Appends of `log append` (without `--request-id`) queued but not yet acknowledged: enough
/// for the partition writers to group-commit them, few enough to bound memory.
const APPENDS_IN_FLIGHT: usize = 256;

/// `logbook log` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Create a stream (no change if it exists with the same settings).
    Create(CreateArgs),
    /// List streams with their partitions, records and bytes.
    List {
        #[command(flatten)]
        data: DataDirArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append records: one value given as an argument, or one record per line of stdin.
    ///
    /// Prints the position of each record as JSON: {"partition": P, "offset": O}.
    ///
    /// Without --request-id, stdin is streamed: each line is appended as it is read (up to
    /// 256 appends in flight) and its position is printed as soon as it is acknowledged, in
    /// input order. A line that is refused (longer than the record limit of 1 MiB, or not
    /// UTF-8) stops the command with an error naming its line number and the limit: every
    /// line before it has been appended and its position printed, nothing from it on.
    ///
    /// With --request-id, all lines are one request appended as one batch, so they are read
    /// first, up to the batch limits (100000 records, 16 MiB); every line is checked before
    /// anything is appended, and on any error nothing is.
    Append(AppendArgs),
    /// Read records of one partition from an offset, one JSON object per line.
    Read(ReadArgs),
    /// Check every segment of every stream without changing anything; report each problem
    /// with its file and byte offset. Exits with status 1 if any problem is found.
    Verify {
        #[command(flatten)]
        data: DataDirArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `logbook log create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Stream name: letters, digits, '.', '_' and '-', at most 128 bytes.
    stream: String,
    /// Number of partitions (fixed for the stream's life).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Roll segment files at this many bytes.
    #[arg(long, default_value_t = limits::SEGMENT_BYTES_DEFAULT)]
    segment_bytes_max: u64,
    /// Keep at least this many bytes per partition; delete older whole segments.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many ms.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// When appends are acknowledged: `always` (fdatasync first; default), `interval_ms=N`
    /// (power loss can lose the last N ms), or `never` (power loss can lose a segment).
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
}

/// Arguments of `logbook log append`.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The stream.
    stream: String,
    /// The value of one record. Without it, each line of stdin is one record's value.
    value: Option<String>,
    /// Key of the record (chooses its partition by hash).
    #[arg(long)]
    key: Option<String>,
    /// Put the records in this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<u32>,
    /// A header `name=value` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Make the whole invocation one request with this id (≤ 128 printable ASCII bytes):
    /// running the same command again appends nothing and prints the original positions with
    /// "duplicate": true; the same id with other records fails with a conflict.
    #[arg(long)]
    request_id: Option<String>,
    /// A W3C trace context stored beside the request id (only with --request-id).
    #[arg(long, requires = "request_id")]
    traceparent: Option<String>,
}

/// Arguments of `logbook log read`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The stream.
    stream: String,
    /// The partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// First offset to read (default: the first retained).
    #[arg(long)]
    from: Option<u64>,
    /// Most records to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        None => Err(format!("header {s:?} must be name=value")),
        Some(("", _)) => Err(format!("header {s:?} has an empty name; use name=value")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
    }
}

/// Runs a `logbook log` command.
pub fn run(cmd: LogCommand) -> anyhow::Result<()> {
    match cmd {
        LogCommand::Create(args) => create(args),
        LogCommand::List { data, json } => list(&data, json),
        LogCommand::Append(args) => append(args),
        LogCommand::Read(args) => read(args),
        LogCommand::Verify { data, json } => verify_cmd(&data, json),
    }
}

/// Opens the data directory; creates it only when `create` is set (`log create`).
fn open(data: &DataDirArgs, create: bool) -> anyhow::Result<Log> {
    let options = LogOptions {
        create_if_missing: create,
        ..LogOptions::default()
    };
    Log::open_with(&data.data_dir, options).map_err(|e| data_dir_error(e, data))
}

fn data_dir_error(e: LogError, data: &DataDirArgs) -> anyhow::Error {
    let dir = data.data_dir.display();
    let context = match e {
        LogError::NoDataDirectory { .. } => format!(
            "opening data directory {dir}: this command does not create one (check --data-dir; `logbook log create` makes one)"
        ),
        _ => format!("opening data directory {dir}"),
    };
    anyhow::Error::new(e).context(context)
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let log = open(&args.data, true)?;
    let config = StreamConfig {
        partitions: args.partitions,
        segment_bytes_max: args.segment_bytes_max,
        retention_bytes: args.retention_bytes,
        retention_ms: args.retention_ms,
        fsync: args.fsync,
        ..StreamConfig::default()
    };
    let stream = log.create_stream(&args.stream, config)?;
    println!(
        "{}",
        json!({"stream": stream.name(), "partitions": stream.partition_count(), "config": stream.config()})
    );
    Ok(())
}

fn list(data: &DataDirArgs, as_json: bool) -> anyhow::Result<()> {
    let log = open(data, false)?;
    let mut rows = Vec::new();
    for name in log.stream_names() {
        let stream = log.stream(&name)?;
        rows.push(json!({
            "stream": name,
            "partitions": stream.partition_count(),
            "records": stream.record_count(),
            "bytes": stream.size_bytes(),
            "fsync": stream.config().fsync.to_string(),
            "request_ids_remembered": stream.request_ids().len(),
            "request_id_index_bytes": stream.request_ids().memory_bytes(),
        }));
    }
    if as_json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{:<32} {:>10} {:>12} {:>14}  fsync",
            "stream", "partitions", "records", "bytes"
        );
        for r in rows {
            println!(
                "{:<32} {:>10} {:>12} {:>14}  {}",
                r["stream"].as_str().unwrap_or(""),
                r["partitions"].as_u64().unwrap_or(0),
                r["records"].as_u64().unwrap_or(0),
                r["bytes"].as_u64().unwrap_or(0),
                r["fsync"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn append(args: AppendArgs) -> anyhow::Result<()> {
    if args.request_id.is_some() && args.partition.is_some() {
        bail!("--partition cannot be combined with --request-id (records are placed by key)");
    }
    let request_id = args
        .request_id
        .clone()
        .map(logbook_log::RequestId::new)
        .transpose()?;
    let log = open(&args.data, false)?;
    let stream = log.stream(&args.stream)?;
    let make = |value: Vec<u8>| Record {
        key: args.key.clone().map(String::into_bytes),
        value,
        headers: args
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
        timestamp_ms: None,
    };
    let mut out = std::io::stdout();
    if let Some(request_id) = &request_id {
        let records: Vec<Record> = match &args.value {
            Some(v) => vec![make(v.clone().into_bytes())],
            None => read_batch(&mut std::io::stdin().lock(), &make)?,
        };
        let outcome = stream
            .append_with_id(request_id, args.traceparent.as_deref(), records)
            .map_err(|e| batch_error(e, args.value.is_none()))?
            .wait()?;
        let mut out = out.lock();
        for p in &outcome.positions {
            writeln!(
                out,
                "{}",
                json!({"partition": p.partition, "offset": p.offset, "duplicate": outcome.duplicate})
            )?;
        }
        return Ok(());
    }
    let append_one = |record: Record| match args.partition {
        Some(p) => stream.append_to(p, std::slice::from_ref(&record)),
        None => stream.append(record),
    };
    if let Some(value) = args.value {
        let ack = append_one(make(value.into_bytes()))?.wait()?;
        writeln!(
            out,
            "{}",
            json!({"partition": ack.partition, "offset": ack.base_offset})
        )?;
        return Ok(());
    }
    let lines = append_lines(&mut std::io::stdin().lock(), &mut out, |value| {
        append_one(make(value))
    })?;
    if lines == 0 {
        bail!("nothing to append: give a value or lines on stdin");
    }
    Ok(())
}

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (its `\n` or `\r\n` removed) is in the buffer.
    Read,
    /// The input is at its end.
    End,
    /// The line is longer than the cap; the buffer holds only its start.
    TooLong,
}

/// Reads one line of at most `max` bytes (not counting its `\n` or `\r\n`) into `buf`,
/// never holding more than `max + 2` bytes of it, however long the line is.
fn read_line_capped(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let read = std::io::Read::take(&mut *input, max as u64 + 2).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(if buf.len() > max {
        Line::TooLong
    } else {
        Line::Read
    })
}

/// Reads the next line of stdin as a record value: `Ok(None)` at the end; an error naming
/// the line (1-based) and the limit for a line that cannot be a record.
fn next_value(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    line: u64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let max = limits::RECORD_BYTES_MAX as usize;
    match read_line_capped(input, buf, max).context("reading stdin")? {
        Line::End => Ok(None),
        Line::TooLong => bail!(
            "line {line} is longer than {max} bytes, the largest record (limits::RECORD_BYTES_MAX)"
        ),
        Line::Read => {
            if std::str::from_utf8(buf).is_err() {
                bail!("line {line} is not valid UTF-8");
            }
            Ok(Some(buf.clone()))
        }
    }
}

/// Streams `input` line by line: appends each line with `append_one` (at most
/// [`APPENDS_IN_FLIGHT`] outstanding) and prints each position to `out` once acknowledged, in
/// input order, from a second thread, so positions appear while stdin is still open. Returns
/// the number of lines appended.
///
/// # Errors
/// On a refused line: its line number and the limit; every line before it was appended and
/// its position printed, nothing from it on. On a failed acknowledgment: the line, and how
/// many later lines were appended anyway (their positions are not printed).
fn append_lines(
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
    append_one: impl Fn(Vec<u8>) -> Result<AppendCompletion, LogError>,
) -> anyhow::Result<u64> {
    let (sender, receiver) = mpsc::sync_channel::<(u64, AppendCompletion)>(APPENDS_IN_FLIGHT);
    let printer_failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let printer = scope.spawn(|| print_positions(receiver, out, &printer_failed));
        let mut line = 0u64;
        let mut buf = Vec::new();
        // On a refused line: its number and why.
        let refused: Option<(u64, anyhow::Error)> = loop {
            if printer_failed.load(Ordering::Relaxed) {
                break None;
            }
            let value = match next_value(input, &mut buf, line + 1) {
                Ok(Some(value)) => value,
                Ok(None) => break None,
                Err(e) => break Some((line + 1, e)),
            };
            line += 1;
            let completion = match append_one(value) {
                Ok(c) => c,
                Err(e) => break Some((line, anyhow!("line {line}: {}", describe(&e)))),
            };
            if sender.send((line, completion)).is_err() {
                break None; // The printer stopped; it reports why.
            }
        };
        drop(sender);
        printer
            .join()
            .map_err(|_| anyhow!("the thread printing positions panicked"))??;
        match refused {
            None => Ok(line),
            Some((1, e)) => Err(anyhow!("{e:#}; nothing was appended")),
            Some((bad, e)) => Err(anyhow!(
                "{e:#}; lines 1 to {} were appended and their positions printed, nothing from line {bad} on",
                bad - 1
            )),
        }
    })
}

/// Waits for each completion in turn and prints its position. After the first failure it
/// stops printing (and tells the reader to stop) but still waits for the appends already
/// queued, to say how many of them went through.
fn print_positions(
    receiver: mpsc::Receiver<(u64, AppendCompletion)>,
    out: &mut (dyn Write + Send),
    failed: &AtomicBool,
) -> anyhow::Result<()> {
    let mut first_error: Option<anyhow::Error> = None;
    let mut appended_after = 0u64;
    for (line, completion) in receiver {
        let ack = completion.wait();
        if first_error.is_some() {
            appended_after += u64::from(ack.is_ok());
            continue;
        }
        let result = ack
            .map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "line {line} could not be appended; the positions of the lines before it were printed"
                ))
            })
            .and_then(|ack| {
                writeln!(
                    out,
                    "{}",
                    json!({"partition": ack.partition, "offset": ack.base_offset})
                )
                .and_then(|()| out.flush())
                .with_context(|| format!("printing the position of line {line}"))
            });
        if let Err(e) = result {
            failed.store(true, Ordering::Relaxed);
            first_error = Some(e);
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) if appended_after > 0 => Err(e.context(format!(
            "{appended_after} later line(s) already queued were appended anyway; their positions were not printed"
        ))),
        Some(e) => Err(e),
    }
}

/// Reads every line of `input` as one request's records (`--request-id`), stopping with an
/// error as soon as the batch limits are exceeded (counting each record's key, value and
/// headers), so at most about [`limits::BATCH_BYTES_MAX`] of records is held.
fn read_batch(
    input: &mut dyn BufRead,
    make: &dyn Fn(Vec<u8>) -> Record,
) -> anyhow::Result<Vec<Record>> {
    const ONE_BATCH: &str = "with --request-id all lines are one batch; nothing was appended";
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        let value =
            next_value(input, &mut buf, line + 1).map_err(|e| anyhow!("{e:#}; {ONE_BATCH}"))?;
        let Some(value) = value else { break };
        line += 1;
        if line > u64::from(limits::BATCH_RECORDS_MAX) {
            bail!(
                "stdin has more than {} lines, the most records in one batch (limits::BATCH_RECORDS_MAX); {ONE_BATCH}",
                limits::BATCH_RECORDS_MAX
            );
        }
        let record = make(value);
        // Key and headers count too: each record holds its own copy.
        bytes += (record.value.len()
            + record.key.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()) as u64;
        if bytes > u64::from(limits::BATCH_BYTES_MAX) {
            bail!(
                "lines 1 to {line} hold more than {} bytes, the largest batch (limits::BATCH_BYTES_MAX); {ONE_BATCH}",
                limits::BATCH_BYTES_MAX
            );
        }
        records.push(record);
    }
    if records.is_empty() {
        bail!("nothing to append: give a value or lines on stdin");
    }
    Ok(records)
}

/// An error of `append_with_id`, with record indices turned into line numbers when the
/// records are the lines of stdin.
fn batch_error(e: LogError, from_stdin: bool) -> anyhow::Error {
    if !e.is_bad_input() {
        return anyhow::Error::new(e).context("appending the request");
    }
    match (&e, record_index(&e)) {
        (_, Some(index)) if from_stdin => {
            anyhow!("line {}: {}; nothing was appended", index + 1, describe(&e))
        }
        (_, Some(_)) => anyhow!("{}; nothing was appended", describe(&e)),
        (LogError::BatchTooLarge { .. } | LogError::BatchTooManyRecords { .. }, _) => {
            anyhow!("{e} (with --request-id all lines are one batch); nothing was appended")
        }
        _ => anyhow!("{e}; nothing was appended"),
    }
}

/// The index in its batch of the record a limit error is about.
fn record_index(e: &LogError) -> Option<usize> {
    match e {
        LogError::RecordTooLarge { index, .. }
        | LogError::KeyTooLarge { index, .. }
        | LogError::TooManyHeaders { index, .. }
        | LogError::HeaderTooLarge { index, .. }
        | LogError::TimestampOutOfRange { index, .. }
        | LogError::ReservedHeader { index, .. }
        | LogError::RequestIdConflict { index, .. } => Some(*index),
        _ => None,
    }
}

/// An error about one record, worded without its index in the batch (the caller names the
/// line instead).
fn describe(e: &LogError) -> String {
    match e {
        LogError::RecordTooLarge { bytes, max, .. } => format!(
            "the record is {bytes} bytes encoded; the limit is {max} bytes (limits::RECORD_BYTES_MAX)"
        ),
        LogError::KeyTooLarge { bytes, max, .. } => {
            format!("the key is {bytes} bytes; the limit is {max} bytes (limits::KEY_BYTES_MAX)")
        }
        LogError::TooManyHeaders { count, max, .. } => {
            format!("{count} headers; the limit is {max} (limits::HEADER_COUNT_MAX)")
        }
        LogError::HeaderTooLarge {
            field, bytes, max, ..
        } => format!("header {field} is {bytes} bytes; the limit is {max} bytes"),
        LogError::ReservedHeader { name, .. } => {
            format!("header {name:?} is reserved; pass the request id with --request-id")
        }
        LogError::RequestIdConflict { request_id, .. } => format!(
            "request id {request_id:?} was already used for a different request, and this record differs from it"
        ),
        other => other.to_string(),
    }
}

fn read(args: ReadArgs) -> anyhow::Result<()> {
    let log = open(&args.data, false)?;
    let stream = log.stream(&args.stream)?;
    let partition = stream.partition(args.partition)?;
    let mut from = args.from.unwrap_or_else(|| partition.start_offset());
    let mut left = args.limit;
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let records = partition.read(from, left.min(1000), 4 << 20)?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            // As the HTTP API shows records: values as their JSON, internal headers hidden.
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .filter(|(k, _)| k != logbook_log::dedup::REQUEST_RECORDS_HEADER)
                .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
                .collect();
            let value = serde_json::from_slice::<serde_json::Value>(&r.value)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.value)));
            writeln!(
                out,
                "{}",
                json!({
                    "partition": args.partition,
                    "offset": r.offset,
                    "timestamp_ms": r.timestamp_ms,
                    "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "value": value,
                    "headers": headers,
                })
            )?;
        }
        left -= records.len();
        from = records.last().map_or(from, |r| r.offset + 1);
    }
    Ok(())
}

fn verify_cmd(data: &DataDirArgs, as_json: bool) -> anyhow::Result<()> {
    Log::check_data_dir(&OsStorage, &data.data_dir).map_err(|e| data_dir_error(e, data))?;
    let report = verify::verify_data_dir(&OsStorage, &data.data_dir)
        .with_context(|| format!("verifying {}", data.data_dir.display()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!(
                "{:?}: {} at byte {}: {}",
                p.kind,
                p.path.display(),
                p.file_offset,
                p.detail
            );
        }
        println!(
            "checked {} streams, {} partitions, {} segments, {} batches, {} records, {} bytes: {} problem(s)",
            report.streams,
            report.partitions,
            report.segments,
            report.batches,
            report.records,
            report.bytes,
            report.problems.len()
        );
    }
    if !report.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
