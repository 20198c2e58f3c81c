//! `logbook log ...`: create, append to, read and verify streams in a data directory directly.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use logbook_log::storage::OsStorage;
use logbook_log::{FsyncPolicy, Log, Record, StreamConfig, limits, verify};
use serde_json::json;

use crate::DataDirArgs;

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
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("header {s:?} must be name=value"))
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

fn open(data: &DataDirArgs) -> anyhow::Result<Log> {
    Log::open(&data.data_dir)
        .with_context(|| format!("opening data directory {}", data.data_dir.display()))
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let log = open(&args.data)?;
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
    let log = open(data)?;
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
    let log = open(&args.data)?;
    let stream = log.stream(&args.stream)?;
    let make = |value: String| Record {
        key: args.key.clone().map(String::into_bytes),
        value: value.into_bytes(),
        headers: args
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
        timestamp_ms: None,
    };
    let values: Vec<String> = match args.value {
        Some(v) => vec![v],
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .context("reading stdin")?,
    };
    if values.is_empty() {
        bail!("nothing to append: give a value or lines on stdin");
    }
    if let Some(request_id) = &args.request_id {
        if args.partition.is_some() {
            bail!("--partition cannot be combined with --request-id (records are placed by key)");
        }
        let request_id = logbook_log::RequestId::new(request_id.clone())?;
        let records: Vec<Record> = values.into_iter().map(make).collect();
        let outcome = stream
            .append_with_id(&request_id, args.traceparent.as_deref(), records)?
            .wait()?;
        let mut out = std::io::stdout().lock();
        for p in &outcome.positions {
            writeln!(
                out,
                "{}",
                json!({"partition": p.partition, "offset": p.offset, "duplicate": outcome.duplicate})
            )?;
        }
        return Ok(());
    }
    // Keep a bounded number of appends in flight so the writer can group-commit them.
    let mut in_flight = std::collections::VecDeque::new();
    let mut out = std::io::stdout().lock();
    for value in values {
        let record = make(value);
        let completion = match args.partition {
            Some(p) => stream.append_to(p, std::slice::from_ref(&record))?,
            None => stream.append(record)?,
        };
        in_flight.push_back(completion);
        if in_flight.len() >= 256
            && let Some(c) = in_flight.pop_front()
        {
            let ack = c.wait()?;
            writeln!(
                out,
                "{}",
                json!({"partition": ack.partition, "offset": ack.base_offset})
            )?;
        }
    }
    for c in in_flight {
        let ack = c.wait()?;
        writeln!(
            out,
            "{}",
            json!({"partition": ack.partition, "offset": ack.base_offset})
        )?;
    }
    Ok(())
}

fn read(args: ReadArgs) -> anyhow::Result<()> {
    let log = open(&args.data)?;
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
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
                .collect();
            writeln!(
                out,
                "{}",
                json!({
                    "partition": args.partition,
                    "offset": r.offset,
                    "timestamp_ms": r.timestamp_ms,
                    "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "value": String::from_utf8_lossy(&r.value),
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
