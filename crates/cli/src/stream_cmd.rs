//! `logbook stream ...`: streams and records through a running server (HTTP API v1).
//!
//! The same operations as `logbook log ...`, but over HTTP, so they work while the server
//! holds the data directory, and from another machine. Appends print where each record
//! landed and a consistency token to pass to view reads (`logbook view get --token`).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use serde_json::json;
use serde_json::value::RawValue;

use logbook_views::ConsistencyToken;

use logbook_api::limits::{BATCH_RECORDS_MAX, BODY_BYTES_MAX};
use logbook_api::paths;
use logbook_api::streams::{
    AppendAnswer, AppendBody, AppendMany, CreateStream, OffsetsAtTime, PositionOut, ReaderKind,
    RecordIn, Retention, StreamInfo, StreamList,
};

use crate::client::{Answer, ApiProblem, Client, ServerArgs, count, print_json, problem_of};
use crate::tail_cmd::{TailFrom, follow_tail, tail};

/// Records sent in one request by `stream append` without `--request-id` (the server's batch
/// limit is far higher; this keeps each answer, and a failure's blast radius, small).
const APPEND_BATCH: usize = 500;

/// Bytes of records sent in one request by `stream append` from stdin: half the server's
/// body limit, so a batch of large records is split rather than refused with 413.
const APPEND_BATCH_BYTES: usize = BODY_BYTES_MAX / 2;

/// Bytes of `{"records":[...]}` around a batch's records.
const BODY_OVERHEAD: usize = 16;

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
        #[command(flatten)]
        retention: RetentionArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a stream's retention (replacing the one in force: a limit not given is no
    /// limit) and apply it now: whole sealed segments beyond it are deleted, oldest first.
    ///
    /// Prints the retention and each partition's first and next offset, and any view whose
    /// unread records retention deleted.
    ///
    /// Examples:
    ///   logbook stream retention orders --retention-bytes 1073741824 --retention-ms 604800000
    ///   logbook stream retention orders            # no limits: keep everything from now on
    #[command(verbatim_doc_comment)]
    Retention {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        #[command(flatten)]
        retention: RetentionArgs,
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
        /// Also list internal streams (names starting with `_`, e.g. `_txn`, the
        /// transaction log).
        #[arg(long)]
        all: bool,
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
    /// "duplicate"; the same id with other records fails with `request_id_conflict`
    /// (at most 10,000 records and 16 MiB in all).
    /// Without it, stdin is sent as it is read: in batches of up to 500 lines and 8 MiB
    /// from a pipe, line by line from a terminal. When it took several requests, a last
    /// line `token T (covers all N records ...)` (--json: {"token", "records", "requests",
    /// "last_line"}) gives one token for every line appended. A bad line stops the command;
    /// the error names the stdin line and which lines were appended before it.
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
    /// Show where a stream was at a time: per partition, the first record at or after it.
    ///
    /// Prints each partition's offset and that record's timestamp; a partition with no
    /// record that recent shows its end offset (where the next record goes) and `-`. Pass
    /// an offset to `stream tail --from` to read the stream from that time on. On a cluster
    /// the answer is exact while timestamps rise with the offsets; with client timestamps
    /// out of order it may be a later record than the first at or after the time.
    ///
    /// Examples:
    ///   logbook stream offsets orders --ago 1h
    ///   logbook stream offsets orders --timestamp-ms 1764748800000 --json
    #[command(verbatim_doc_comment)]
    Offsets {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// The time, ms since the Unix epoch.
        #[arg(long, conflicts_with = "ago", required_unless_present = "ago")]
        timestamp_ms: Option<i64>,
        /// The time as a duration before now: a number and a unit, `ms`, `s`, `m`, `h` or
        /// `d` (`90s`, `15m`, `2h`).
        #[arg(long, value_parser = parse_ago)]
        ago: Option<u64>,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records of one partition from an offset; `--follow` keeps printing new ones,
    /// of every partition (or the one given) as they arrive.
    ///
    /// One record per line: partition, offset, key and value, tab-separated (`--json`: one
    /// JSON object per record and line, as the server sends it). When more records follow
    /// the last one printed, `# more: continue with --from N` goes to stderr. `--follow`
    /// subscribes to the server's push tail (server-sent events) and says on stderr where
    /// it starts (`# from P:O,...`); if the server drops it for reading too slowly, closes
    /// it at the node's --wait-ms-max, or the connection breaks (a server restart), it
    /// resumes where it was, losing and repeating nothing.
    ///
    /// Examples:
    ///   logbook stream tail orders --partition 3 --from 0 --limit 10
    ///   logbook stream tail orders --follow                   # every partition, until Ctrl-C
    ///   logbook stream tail orders --follow --from start      # everything retained, then new
    ///   logbook stream tail orders --follow --from 0:120,1:98 # per partition, P:O
    ///   logbook stream tail orders --follow --from group:billing
    #[command(verbatim_doc_comment)]
    Tail {
        #[command(flatten)]
        server: ServerArgs,
        /// The stream.
        stream: String,
        /// The partition (required when the stream has several, but with --follow, which
        /// reads every partition unless given one).
        #[arg(long)]
        partition: Option<u32>,
        /// Where to start: an offset of the partition, or `start` (the default: the first
        /// retained). With --follow also `end` (the default: only new records), `P:O,...`
        /// (an offset per partition; others start at their end) or `group:NAME` (a consumer
        /// group's committed offsets); an offset alone needs --partition unless the stream
        /// has one.
        #[arg(long)]
        from: Option<TailFrom>,
        /// Most records to print, read in pages of up to 1000 (ignored with --follow).
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

/// A stream's retention limits on the command line.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Keep at least this many bytes per partition, deleting older whole segments (≥ 1).
    /// Default: no limit.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many ms (≥ 1).
    /// Default: no limit.
    #[arg(long)]
    retention_ms: Option<u64>,
}

impl RetentionArgs {
    /// The limits as the retention body (a limit not given is no limit).
    fn body(&self) -> Retention {
        Retention {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
        }
    }
}

impl StreamCommand {
    /// Whether the command was asked for JSON output (errors then print the problem
    /// document).
    pub fn json(&self) -> bool {
        match self {
            StreamCommand::Create { json, .. }
            | StreamCommand::Retention { json, .. }
            | StreamCommand::List { json, .. }
            | StreamCommand::Show { json, .. }
            | StreamCommand::Drop { json, .. }
            | StreamCommand::Append { json, .. }
            | StreamCommand::Offsets { json, .. }
            | StreamCommand::Tail { json, .. } => *json,
        }
    }
}

/// Prints a stream's retention, each partition's first and next offset, and the readers
/// retention has passed.
fn print_extent(s: &StreamInfo) -> anyhow::Result<()> {
    let limit = |v: Option<u64>, unit: &str| match v {
        Some(n) => format!("{n} {unit}"),
        None => "no limit".to_string(),
    };
    outln!(
        "retention: {} per partition, {}",
        limit(s.retention.retention_bytes, "bytes"),
        limit(s.retention.retention_ms, "ms")
    );
    outln!(
        "{:>9} {:>14} {:>14}",
        "partition",
        "first offset",
        "next offset"
    );
    for p in &s.offsets {
        outln!("{:>9} {:>14} {:>14}", p.partition, p.start, p.end);
    }
    for b in &s.below_retention {
        let version = b.version.map_or(String::new(), |v| format!(" version {v}"));
        let kind = match b.kind {
            ReaderKind::View => "view",
            ReaderKind::Group => "group",
        };
        outln!(
            "below retention: {kind} {}{version}, partition {}: at offset {}, first retained {} (records in between were deleted unread)",
            b.name,
            b.partition,
            b.position,
            b.start
        );
    }
    Ok(())
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        None => Err(format!("header {s:?} must be name=value")),
        Some(("", _)) => Err(format!("header {s:?} has an empty name; use name=value")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
    }
}

/// `--ago`: a duration in ms from a number and a unit (`ms`, `s`, `m`, `h`, `d`).
pub(crate) fn parse_ago(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} must start with a whole number (e.g. 15m)"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} needs a unit: ms, s, m, h or d (e.g. 15m)")),
    };
    n.checked_mul(ms_per_unit)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
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
            retention,
            json,
        } => {
            let body = CreateStream {
                partitions: Some(partitions),
                fsync,
                segment_bytes_max,
                retention_bytes: retention.retention_bytes,
                retention_ms: retention.retention_ms,
                personal_data: None,
            };
            let answer: Answer<StreamInfo> =
                Client::new(&server)?.put_as(&paths::stream(&stream), &body)?;
            if json {
                return print_json(&answer.body);
            }
            let verb = if answer.status == 201 {
                "created"
            } else {
                "exists (same settings)"
            };
            outln!(
                "stream {stream} {verb}: {}, fsync {}",
                count(answer.body.partitions, "partition", "partitions"),
                answer.body.fsync
            );
        }
        StreamCommand::List { server, all, json } => {
            let mut list: StreamList = Client::new(&server)?.get_as(&paths::streams(), &[])?;
            if !all {
                list.streams.retain(|s| !s.stream.starts_with('_'));
            }
            if json {
                return print_json(&list);
            }
            outln!(
                "{:<24} {:>10} {:>12}  fsync",
                "stream",
                "partitions",
                "records"
            );
            for s in &list.streams {
                outln!(
                    "{:<24} {:>10} {:>12}  {}",
                    s.stream,
                    s.partitions,
                    s.records,
                    s.fsync
                );
            }
        }
        StreamCommand::Show {
            server,
            stream,
            json,
        } => {
            let s: StreamInfo = Client::new(&server)?.get_as(&paths::stream(&stream), &[])?;
            if json {
                return print_json(&s);
            }
            outln!(
                "stream {stream}: {}, {}, fsync {}, incarnation {}",
                count(s.partitions, "partition", "partitions"),
                count(s.records, "record", "records"),
                s.fsync,
                s.incarnation
            );
            print_extent(&s)?;
        }
        StreamCommand::Retention {
            server,
            stream,
            retention,
            json,
        } => {
            let s: Answer<StreamInfo> = Client::new(&server)?
                .put_as(&paths::stream_retention(&stream), &retention.body())?;
            if json {
                return print_json(&s.body);
            }
            outln!("stream {stream}: retention set and applied");
            print_extent(&s.body)?;
        }
        StreamCommand::Drop {
            server,
            stream,
            json,
        } => {
            Client::new(&server)?.delete(&paths::stream(&stream), &[])?;
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
                client: Client::new(&server)?,
                path: paths::records(&stream),
                key,
                headers: headers.into_iter().collect(),
                request_id,
                traceparent,
                json,
            };
            match value {
                Some(text) => {
                    let value = serde_json::from_str(&text)
                        .with_context(|| format!("--value is not JSON: {text:?}"))?;
                    append.send(vec![value])?;
                }
                None => append.stdin()?,
            }
        }
        StreamCommand::Offsets {
            server,
            stream,
            timestamp_ms,
            ago,
            json,
        } => offsets(&Client::new(&server)?, &stream, timestamp_ms, ago, json)?,
        StreamCommand::Tail {
            server,
            stream,
            partition,
            from,
            limit: _,
            follow,
            json,
        } if follow => follow_tail(&Client::new(&server)?, &stream, partition, from, json)?,
        StreamCommand::Tail {
            server,
            stream,
            partition,
            from,
            limit,
            follow: _,
            json,
        } => tail(
            &Client::new(&server)?,
            &stream,
            partition,
            from,
            limit,
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
    headers: BTreeMap<String, String>,
    request_id: Option<String>,
    traceparent: Option<String>,
    json: bool,
}

/// Records read from stdin, not yet sent: each with its line number, and the bytes of their
/// JSON text.
#[derive(Default)]
struct Batch {
    records: Vec<(usize, RecordIn)>,
    bytes: usize,
}

/// What the requests of one `stream append` have appended so far.
#[derive(Default)]
struct Appended {
    requests: usize,
    records: usize,
    /// The last stdin line appended.
    last_line: usize,
    /// Every request's token merged (per partition the largest position).
    token: Option<ConsistencyToken>,
}

impl Appended {
    /// "nothing was appended" or "N records (lines up to L) were appended", for errors.
    fn said(&self) -> String {
        if self.records == 0 {
            "nothing was appended".to_string()
        } else {
            format!(
                "the {} records of stdin lines up to {} were appended (printed above); no \
                 later line was",
                self.records, self.last_line
            )
        }
    }
}

impl Append {
    /// One record of `value` with the invocation's key and headers, and the bytes of its JSON
    /// text (what it adds to a request's body).
    fn record(&self, value: Box<RawValue>) -> anyhow::Result<(RecordIn, usize)> {
        let record = RecordIn {
            key: self.key.clone(),
            value,
            headers: (!self.headers.is_empty()).then(|| self.headers.clone()),
            timestamp_ms: None,
        };
        let bytes = serde_json::to_vec(&record)
            .context("encoding a record")?
            .len();
        Ok((record, bytes))
    }

    /// Reads stdin: one JSON value per non-empty line, sent in batches as it is read (each
    /// batch below the server's body and record limits). A bad line stops the command; the
    /// error says exactly which lines were appended before it.
    fn stdin(&self) -> anyhow::Result<()> {
        // At a terminal each line is sent as it is typed; from a pipe, in batches. With a
        // request id the whole input is one request (one id, appended exactly once).
        let records_max = if self.request_id.is_some() {
            BATCH_RECORDS_MAX
        } else if std::io::stdin().is_terminal() {
            1
        } else {
            APPEND_BATCH
        };
        let mut batch = Batch::default();
        let mut done = Appended::default();
        let result = self.read_and_send(records_max, &mut batch, &mut done);
        if let Err(e) = result {
            // What was appended is still worth a token, to read those writes.
            if done.requests > 1 {
                self.print_total(&done)?;
            }
            return Err(e);
        }
        if done.requests > 1 {
            self.print_total(&done)?;
        }
        Ok(())
    }

    fn read_and_send(
        &self,
        records_max: usize,
        batch: &mut Batch,
        done: &mut Appended,
    ) -> anyhow::Result<()> {
        for (index, line) in std::io::stdin().lock().lines().enumerate() {
            let number = index + 1;
            let line =
                line.with_context(|| format!("reading line {number} of stdin; {}", done.said()))?;
            if line.trim().is_empty() {
                continue;
            }
            let value = serde_json::from_str(&line)
                .with_context(|| format!("line {number} of stdin is not JSON; {}", done.said()))?;
            let (record, bytes) = self.record(value)?;
            if bytes + BODY_OVERHEAD > BODY_BYTES_MAX {
                bail!(
                    "line {number} of stdin is {} bytes as a record, more than the server takes \
                     in one request ({} MiB); {}",
                    bytes,
                    BODY_BYTES_MAX >> 20,
                    done.said()
                );
            }
            let full = batch.records.len() == records_max
                || batch.bytes + bytes + 1 + BODY_OVERHEAD > APPEND_BATCH_BYTES;
            if full && !batch.records.is_empty() {
                if self.request_id.is_some() {
                    bail!(
                        "with --request-id the whole input is one request, and line {number} \
                         takes it past the server's limits ({} records, {} MiB); nothing was \
                         appended: split the input and give each part its own request id",
                        BATCH_RECORDS_MAX,
                        BODY_BYTES_MAX >> 20
                    );
                }
                self.send_batch(std::mem::take(batch), done)?;
            }
            batch.bytes += bytes + 1;
            batch.records.push((number, record));
        }
        if batch.records.is_empty() {
            if self.request_id.is_some() {
                bail!("stdin held no records: nothing to append (pass --value, or pipe lines)");
            }
            return Ok(());
        }
        self.send_batch(std::mem::take(batch), done)
    }

    /// Sends one batch of stdin lines; a refusal names the stdin line, not the index in the
    /// request.
    fn send_batch(&self, batch: Batch, done: &mut Appended) -> anyhow::Result<()> {
        let (lines, records): (Vec<usize>, Vec<RecordIn>) = batch.records.into_iter().unzip();
        match self.send_records(records) {
            Ok(token) => {
                done.requests += 1;
                done.records += lines.len();
                done.last_line = lines.last().copied().unwrap_or(done.last_line);
                if let Some(t) = token.and_then(|t| ConsistencyToken::decode(&t).ok()) {
                    match &mut done.token {
                        Some(all) => all.merge(&t),
                        None => done.token = Some(t),
                    }
                }
                Ok(())
            }
            Err(e) => Err(self.name_the_line(e, &lines, done)),
        }
    }

    /// Rewrites a server error about `records[i]` of a batch to name stdin line `lines[i]`,
    /// and says what was appended before it.
    fn name_the_line(&self, e: anyhow::Error, lines: &[usize], done: &Appended) -> anyhow::Error {
        let first = lines.first().copied().unwrap_or(0);
        let last = lines.last().copied().unwrap_or(0);
        let Some(api) = problem_of(&e) else {
            return e.context(format!(
                "appending stdin lines {first}..={last}; {}",
                done.said()
            ));
        };
        let mut problem = api.problem.clone();
        let status = api.status;
        let (line, rest) = match problem
            .field
            .as_deref()
            .and_then(|f| f.strip_prefix("records["))
        {
            Some(tail) => match tail.split_once(']') {
                Some((i, rest)) => (
                    i.parse::<usize>().ok().and_then(|i| lines.get(i).copied()),
                    rest.trim_start_matches('.').to_string(),
                ),
                None => (None, String::new()),
            },
            None if lines.len() == 1 => (Some(first), problem.field.clone().unwrap_or_default()),
            None => (None, problem.field.clone().unwrap_or_default()),
        };
        let at = match line {
            Some(n) => {
                problem.field = Some(if rest.is_empty() {
                    format!("stdin line {n}")
                } else {
                    format!("stdin line {n}: {rest}")
                });
                format!("stdin line {n}")
            }
            None => format!("the request of stdin lines {first}..={last}"),
        };
        problem.detail = format!("{} ({at} was refused; {})", problem.detail, done.said());
        ApiProblem { status, problem }.into()
    }

    /// Appends the values as one request and prints the answer.
    fn send(&self, values: Vec<Box<RawValue>>) -> anyhow::Result<()> {
        let mut records = Vec::new();
        for v in values {
            records.push(self.record(v)?.0);
        }
        self.send_records(records).map(|_| ())
    }

    /// Appends the records as one request (a single record's body for one, a batch's for
    /// several) and prints the answer; the answer's token is returned.
    fn send_records(&self, records: Vec<RecordIn>) -> anyhow::Result<Option<String>> {
        let mut tracking = Vec::new();
        if let Some(id) = &self.request_id {
            tracking.push(("Idempotency-Key", id.as_str()));
        }
        if let Some(tp) = &self.traceparent {
            tracking.push(("traceparent", tp.as_str()));
        }
        let body = match <[RecordIn; 1]>::try_from(records) {
            Ok([one]) => AppendBody::one(one),
            Err(records) => AppendBody::batch(records),
        };
        let answer: AppendAnswer = self.client.post_as(&self.path, &body, &tracking, 0)?.body;
        if self.json {
            print_json(&answer)?;
        }
        let answer = match answer {
            AppendAnswer::One(one) => AppendMany {
                positions: vec![PositionOut {
                    partition: one.partition,
                    offset: one.offset,
                }],
                token: one.token,
                duplicate: one.duplicate,
                ack_guarantee: one.ack_guarantee,
            },
            AppendAnswer::Many(many) => many,
        };
        if self.json {
            return Ok(answer.token);
        }
        let duplicate = if answer.duplicate { " (duplicate)" } else { "" };
        let mut out = std::io::stdout().lock();
        for p in &answer.positions {
            writeln!(
                out,
                "partition {} offset {}{duplicate}",
                p.partition, p.offset
            )?;
        }
        if answer.duplicate {
            writeln!(
                out,
                "duplicate: request id {:?} was already appended; nothing new was written",
                self.request_id.as_deref().unwrap_or_default()
            )?;
        }
        if let Some(token) = &answer.token {
            writeln!(out, "token {token}")?;
        }
        out.flush()?;
        Ok(answer.token)
    }

    /// After several requests: one token covering all of them (each request's token covers
    /// only its own records).
    fn print_total(&self, done: &Appended) -> anyhow::Result<()> {
        let Some(token) = &done.token else {
            return Ok(());
        };
        let token = token
            .encode()
            .map_err(|e| anyhow::anyhow!("combining the requests' tokens: {e}"))?;
        if self.json {
            return print_json(&json!({
                "token": token, "records": done.records, "requests": done.requests,
                "last_line": done.last_line,
            }));
        }
        outln!(
            "token {token} (covers all {} appended, through stdin line {})",
            count(done.records, "record", "records"),
            done.last_line
        );
        Ok(())
    }
}

/// `stream offsets`: per partition, the first record at or after a time.
fn offsets(
    client: &Client,
    stream: &str,
    timestamp_ms: Option<i64>,
    ago_ms: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let timestamp_ms = match (timestamp_ms, ago_ms) {
        (Some(t), _) => t,
        (None, Some(ago)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the system clock is before 1970")?;
            let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            now_ms.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX))
        }
        (None, None) => bail!("give --timestamp-ms or --ago"),
    };
    let query = [("timestamp_ms", timestamp_ms.to_string())];
    let answer: OffsetsAtTime = client.get_as(&paths::stream_offsets(stream), &query)?;
    if json {
        return print_json(&answer);
    }
    outln!("stream {stream} at timestamp_ms {timestamp_ms}:");
    outln!("{:>9} {:>14} {:>16}", "partition", "offset", "timestamp_ms");
    for p in &answer.partitions {
        let at = p
            .timestamp_ms
            .map_or_else(|| "- (end)".to_string(), |t| t.to_string());
        outln!("{:>9} {:>14} {:>16}", p.partition, p.offset, at);
    }
    Ok(())
}
