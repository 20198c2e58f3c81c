//! `logbook stream ...`: streams and records through a running server (HTTP API v1).
//!
//! The same operations as `logbook log ...`, but over HTTP, so they work while the server
//! holds the data directory, and from another machine. Appends print where each record
//! landed and a consistency token to pass to view reads (`logbook view get --token`).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, print_json, segment};

/// Records sent in one request by `stream append` without `--request-id` (the server's batch
/// limit is far higher; this keeps each answer, and a failure's blast radius, small).
const APPEND_BATCH: usize = 500;

/// How long one `tail --follow` request waits on the server for a new record, ms (a long
/// poll: no busy polling, and Ctrl-C ends it at once).
const FOLLOW_WAIT_MS: u64 = 10_000;

/// Streams and records on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// Create a stream; no change if it exists with the same settings.
    ///
    /// Example: `logbook stream create orders --partitions 8`
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Stream name: letters, digits, '.', '_' and '-', at most 128 bytes.
        stream: String,
        /// Number of partitions, 1..=256 (fixed for the stream's life).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// When appends are acknowledged: `always` (after fdatasync; the default), `never`,
        /// or `interval_ms=N` (fsync at most every N ms).
        #[arg(long)]
        fsync: Option<String>,
        /// Roll segment files at this many bytes (default 128 MiB).
        #[arg(long)]
        segment_bytes_max: Option<u64>,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List streams with their partitions and record counts.
    ///
    /// Example: `logbook stream list --json`
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a stream's settings and each partition's first and next offset.
    ///
    /// Example: `logbook stream show orders`
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop a stream and all its records. The name may be reused; consistency tokens of the
    /// old stream are never satisfied by a new one.
    ///
    /// Example: `logbook stream drop orders`
    Drop {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// Print `{"dropped": STREAM}`.
        #[arg(long)]
        json: bool,
    },
    /// Append records: `--value JSON`, or one JSON value per line of stdin.
    ///
    /// Prints, for each record, its partition and offset, and the consistency token of the
    /// request (pass it to `logbook view get --token` to read your own write).
    ///
    /// With `--request-id` the whole invocation is one request, appended exactly once:
    /// running it again appends nothing and prints the original positions marked
    /// "duplicate"; the same id with other records fails with `request_id_conflict`.
    /// Without it, stdin is sent as it is read: in batches of up to 500 lines from a pipe,
    /// line by line from a terminal.
    ///
    /// Examples:
    ///   logbook stream append orders --key customer-7 --value '{"total": 42}'
    ///   printf '{"n":1}\n{"n":2}\n' | logbook stream append orders --request-id import-1
    #[command(verbatim_doc_comment)]
    Append {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// The value of one record (JSON). Without it, each non-empty line of stdin is one.
        #[arg(long)]
        value: Option<String>,
        /// Key of every record appended (chooses the partition by hash; records with one key
        /// stay in order).
        #[arg(long)]
        key: Option<String>,
        /// A header `name=value` on every record (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The request id (sent as `Idempotency-Key`, ≤ 128 printable ASCII bytes): a retry
        /// with the same id appends nothing.
        #[arg(long)]
        request_id: Option<String>,
        /// A W3C trace context (`traceparent` header), stored in the record headers.
        #[arg(long)]
        traceparent: Option<String>,
        /// Print the server's answer to each request as one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records of one partition from an offset; `--follow` keeps printing new ones.
    ///
    /// One record per line: partition, offset, key and value, tab-separated (`--json`: one
    /// JSON object per record and line, as the server sends it).
    ///
    /// Examples:
    ///   logbook stream tail orders --partition 3 --from 0 --limit 10
    ///   logbook stream tail orders --partition 3 --follow     # until Ctrl-C
    #[command(verbatim_doc_comment)]
    Tail {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// The partition (required when the stream has several).
        #[arg(long)]
        partition: Option<u32>,
        /// First offset (default: the first retained).
        #[arg(long)]
        from: Option<u64>,
        /// Most records to print (with `--follow`: per request).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep reading: wait on the server for new records and print them until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// One JSON object per record and line.
        #[arg(long)]
        json: bool,
    },
}

impl StreamCommand {
    /// Whether the command was asked for JSON output (errors then print the problem
    /// document).
    pub fn json(&self) -> bool {
        match self {
            StreamCommand::Create { json, .. }
            | StreamCommand::List { json, .. }
            | StreamCommand::Show { json, .. }
            | StreamCommand::Drop { json, .. }
            | StreamCommand::Append { json, .. }
            | StreamCommand::Tail { json, .. } => *json,
        }
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        None => Err(format!("header {s:?} must be name=value")),
        Some(("", _)) => Err(format!("header {s:?} has an empty name; use name=value")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
    }
}

/// Runs a `logbook stream` command.
pub fn run(cmd: StreamCommand) -> anyhow::Result<()> {
    match cmd {
        StreamCommand::Create {
            server,
            stream,
            partitions,
            fsync,
            segment_bytes_max,
            json,
        } => {
            let mut body = json!({ "partitions": partitions });
            if let Some(f) = fsync {
                body["fsync"] = json!(f);
            }
            if let Some(b) = segment_bytes_max {
                body["segment_bytes_max"] = json!(b);
            }
            let answer =
                Client::new(&server).put(&format!("/v1/streams/{}", segment(&stream)), &body)?;
            if json {
                return print_json(&answer.body);
            }
            let verb = if answer.status == 201 {
                "created"
            } else {
                "exists (same settings)"
            };
            outln!(
                "stream {stream} {verb}: {} partitions, fsync {}",
                answer.body["partitions"],
                answer.body["fsync"].as_str().unwrap_or_default()
            );
        }
        StreamCommand::List { server, json } => {
            let list = Client::new(&server).get("/v1/streams", &[])?;
            if json {
                return print_json(&list);
            }
            outln!(
                "{:<24} {:>10} {:>12}  fsync",
                "stream",
                "partitions",
                "records"
            );
            for s in list["streams"].as_array().map_or(&[][..], Vec::as_slice) {
                outln!(
                    "{:<24} {:>10} {:>12}  {}",
                    s["stream"].as_str().unwrap_or_default(),
                    s["partitions"].to_string(),
                    s["records"].to_string(),
                    s["fsync"].as_str().unwrap_or_default()
                );
            }
        }
        StreamCommand::Show {
            server,
            stream,
            json,
        } => {
            let s = Client::new(&server).get(&format!("/v1/streams/{}", segment(&stream)), &[])?;
            if json {
                return print_json(&s);
            }
            outln!(
                "stream {stream}: {} partitions, {} records, fsync {}, incarnation {}",
                s["partitions"],
                s["records"],
                s["fsync"].as_str().unwrap_or_default(),
                s["incarnation"]
            );
            outln!(
                "{:>9} {:>14} {:>14}",
                "partition",
                "first offset",
                "next offset"
            );
            for p in s["offsets"].as_array().map_or(&[][..], Vec::as_slice) {
                outln!(
                    "{:>9} {:>14} {:>14}",
                    p["partition"].to_string(),
                    p["start"].to_string(),
                    p["end"].to_string()
                );
            }
        }
        StreamCommand::Drop {
            server,
            stream,
            json,
        } => {
            Client::new(&server).delete(&format!("/v1/streams/{}", segment(&stream)), &[])?;
            if json {
                return print_json(&json!({ "dropped": stream }));
            }
            outln!("dropped stream {stream}");
        }
        StreamCommand::Append {
            server,
            stream,
            value,
            key,
            headers,
            request_id,
            traceparent,
            json,
        } => {
            let append = Append {
                client: Client::new(&server),
                path: format!("/v1/streams/{}/records", segment(&stream)),
                key,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
                request_id,
                traceparent,
                json,
            };
            match value {
                Some(text) => {
                    let value: Value = serde_json::from_str(&text)
                        .with_context(|| format!("--value is not JSON: {text:?}"))?;
                    append.send(vec![value])?;
                }
                None => append.stdin()?,
            }
        }
        StreamCommand::Tail {
            server,
            stream,
            partition,
            from,
            limit,
            follow,
            json,
        } => tail(
            &Client::new(&server),
            &stream,
            partition,
            from,
            limit,
            follow,
            json,
        )?,
    }
    Ok(())
}

/// One `stream append` invocation.
struct Append {
    client: Client,
    path: String,
    key: Option<String>,
    headers: serde_json::Map<String, Value>,
    request_id: Option<String>,
    traceparent: Option<String>,
    json: bool,
}

impl Append {
    /// Reads stdin: one JSON value per non-empty line. Every line is checked as JSON as it is
    /// read; a bad one stops the command naming its line (earlier batches were appended
    /// and printed, unless `--request-id` makes the whole input one request).
    fn stdin(&self) -> anyhow::Result<()> {
        // At a terminal each line is sent as it is typed; from a pipe, in batches.
        let batch_max = if std::io::stdin().is_terminal() {
            1
        } else {
            APPEND_BATCH
        };
        let mut batch = Vec::new();
        for (index, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.with_context(|| format!("reading line {} of stdin", index + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line).with_context(|| {
                let sent = if self.request_id.is_some() {
                    "nothing was appended"
                } else {
                    "the lines before it were appended (their positions are printed above)"
                };
                format!("line {} of stdin is not JSON; {sent}", index + 1)
            })?;
            batch.push(value);
            if self.request_id.is_none() && batch.len() == batch_max {
                self.send(std::mem::take(&mut batch))?;
            }
        }
        if batch.is_empty() {
            if self.request_id.is_some() {
                bail!("stdin held no records: nothing to append (pass --value, or pipe lines)");
            }
            return Ok(());
        }
        self.send(batch)
    }

    /// Appends the values as one request and prints the answer.
    fn send(&self, values: Vec<Value>) -> anyhow::Result<()> {
        let record = |value: Value| {
            let mut r = json!({ "value": value });
            if let Some(k) = &self.key {
                r["key"] = json!(k);
            }
            if !self.headers.is_empty() {
                r["headers"] = Value::Object(self.headers.clone());
            }
            r
        };
        let single = values.len() == 1;
        let body = if single {
            values.into_iter().map(record).next().unwrap_or(Value::Null)
        } else {
            json!({ "records": values.into_iter().map(record).collect::<Vec<_>>() })
        };
        let mut tracking = Vec::new();
        if let Some(id) = &self.request_id {
            tracking.push(("Idempotency-Key", id.as_str()));
        }
        if let Some(tp) = &self.traceparent {
            tracking.push(("traceparent", tp.as_str()));
        }
        let answer = self.client.post(&self.path, &body, &tracking)?.body;
        if self.json {
            return print_json(&answer);
        }
        let duplicate = answer["duplicate"].as_bool().unwrap_or(false);
        let positions: Vec<&Value> = if single {
            vec![&answer]
        } else {
            answer["positions"]
                .as_array()
                .map_or(Vec::new(), |p| p.iter().collect())
        };
        let mut out = std::io::stdout().lock();
        for p in positions {
            writeln!(
                out,
                "partition {} offset {}{}",
                p["partition"],
                p["offset"],
                if duplicate { " (duplicate)" } else { "" }
            )?;
        }
        if duplicate {
            writeln!(
                out,
                "duplicate: request id {:?} was already appended; nothing new was written",
                self.request_id.as_deref().unwrap_or_default()
            )?;
        }
        if let Some(token) = answer["token"].as_str() {
            writeln!(out, "token {token}")?;
        }
        Ok(())
    }
}

fn tail(
    client: &Client,
    stream: &str,
    partition: Option<u32>,
    from: Option<u64>,
    limit: usize,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/v1/streams/{}/records", segment(stream));
    let mut from = from;
    loop {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(p) = partition {
            query.push(("partition", p.to_string()));
        }
        if let Some(f) = from {
            query.push(("from", f.to_string()));
        }
        if follow {
            query.push(("wait_ms", FOLLOW_WAIT_MS.to_string()));
        }
        let page = client.get(&path, &query)?;
        let mut out = std::io::stdout().lock();
        for r in page["records"].as_array().map_or(&[][..], Vec::as_slice) {
            if json {
                writeln!(out, "{r}")?;
            } else {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    r["partition"],
                    r["offset"],
                    r["key"].as_str().unwrap_or("-"),
                    r["value"]
                )?;
            }
        }
        // Flushed per page, so a pipe (`| grep`) sees records as they arrive.
        out.flush()?;
        if !follow {
            return Ok(());
        }
        from = Some(
            page["next"]
                .as_u64()
                .context("the server's answer has no `next` offset")?,
        );
    }
}
