//! `logbook bench tail`: the push tail (server-sent events, decision 0015) against the long
//! poll, in one run, to 1 and to many subscribers.
//!
//! ```text
//!  this process ── server runtime (--server-threads) ◀── loopback TCP ──┐
//!               └─ client runtime (--client-threads):
//!                    producer:  POST /v1/streams/tail/records, --batch records per request,
//!                               values {"t_us": due time, µs since the epoch, "pad": …}
//!                    SSE:       per subscriber, GET /v1/streams/tail/records/events?from=P:O,…
//!                    long poll: per subscriber and partition, a connection looping
//!                               GET /v1/streams/tail/records?partition=P&from=O&limit=1000&wait_ms=1000
//! ```
//!
//! Each round runs, for each subscriber count, both transports (which goes first alternates
//! round by round) through two phases:
//! * **catch-up**: every subscriber reads `--records` stored records from the start of each
//!   partition: records/s delivered per subscriber and in total;
//! * **live**: the producer appends at `--rate` records/s for `--seconds`; every subscriber
//!   records, per record, the wall-clock time it got it minus the record's `t_us` (the time
//!   its append was due: a late send keeps its due time, so queueing is measured, no
//!   coordinated omission), until it has every record appended in the phase.
//!
//! Both transports parse every record's JSON on the client, so the client's cost per record
//! is the same. The report gives each run, the median over rounds per (phase, transport,
//! subscribers) and the ratio SSE ÷ long poll of those medians.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::Method;
use logbook_api::paths::{self, Query};
use logbook_api::streams::{RecordOut, RecordsOut, StreamInfo};
use logbook_server::ServerConfig;
use serde_json::json;

use super::conn::Conn;
use super::kit::{LATENCY_US_MAX, TempDir, latency_histogram, loadavg_1m, round1, round3};
use super::server::{BenchServer, wait_ready};

/// The stream appended to and followed.
const STREAM: &str = "tail";
/// Records per request when storing the catch-up records.
const PRELOAD_BATCH: u64 = 1000;
/// `limit` of each long poll (the API's most).
const POLL_LIMIT: usize = logbook_api::limits::READ_RECORDS_MAX;
/// `wait_ms` of each long poll, and the SSE heartbeat: how often an idle subscriber looks
/// whether it is done.
const IDLE_WAKE_MS: u64 = 1000;
/// How long a phase may run past its producer before it is reported as failed.
const PHASE_GRACE: Duration = Duration::from_secs(120);

/// Arguments of `logbook bench tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailBenchArgs {
    /// Seconds the producer appends in each live run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Records appended per second in live runs.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Records per append request in live runs.
    #[arg(long, default_value_t = 20)]
    pub batch: u64,
    /// Producer connections the live rate is spread over (each sends its batches in turn).
    #[arg(long, default_value_t = 4)]
    pub producers: u64,
    /// Records every subscriber reads in a catch-up run (stored once, before the rounds).
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
    /// Bytes of each record's value (a JSON object padded to this size).
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Subscriber counts, each measured in every round (comma-separated; at most 64: the
    /// server's subscription budget).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub subscribers: Vec<usize>,
    /// Rounds; the medians over them are compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How a subscriber follows the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Sse,
    LongPoll,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::LongPoll => "long_poll",
        }
    }
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Live,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::CatchUp => "catch_up",
            Phase::Live => "live",
        }
    }
}

/// Append → delivered latency, ms.
#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    samples: u64,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
struct RunResult {
    round: usize,
    phase: &'static str,
    transport: &'static str,
    subscribers: usize,
    /// Records each subscriber received (the fewest of any).
    records_per_subscriber: u64,
    /// From the subscribers' start to the last record any of them received.
    seconds: f64,
    records_per_s_per_subscriber: f64,
    records_per_s_total: f64,
    /// Live runs: records the producer appended and its achieved rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    appended: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    append_rate_per_s: Option<f64>,
    /// Live runs: append due → delivered, over every record of every subscriber.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// Bad arguments, the server cannot start, a request fails, or a subscriber does not get
/// every record within [`PHASE_GRACE`] of the end of its phase.
pub fn run(args: &TailBenchArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let tmp = TempDir::create(&std::env::temp_dir(), "logbook-bench-tail")?;
    let data = tmp.path().join("data");
    let load_before = loadavg_1m();
    let server = BenchServer::start(&data, args.server_threads, ServerConfig::default())?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let runs = client_rt.block_on(measure(args, server.addr(), &data));
    drop(client_rt);
    server.stop();
    drop(tmp);
    let runs = runs?;
    let load_after = loadavg_1m();
    let summary = summarise(args, &runs);
    let report = json!({
        "benchmark": "tail",
        "parameters": {
            "seconds": args.seconds,
            "rate_records_per_s": args.rate,
            "batch_records": args.batch,
            "producers": args.producers,
            "catch_up_records": args.records,
            "record_bytes": args.record_bytes,
            "partitions": args.partitions,
            "subscribers": args.subscribers,
            "rounds": args.rounds,
            "fsync": "always",
            "auth": "on",
            "long_poll": {"limit": POLL_LIMIT, "wait_ms": IDLE_WAKE_MS, "connections_per_subscriber": args.partitions},
            "server_threads": args.server_threads,
            "client_threads": args.client_threads,
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        },
        "loadavg_1m": { "before": load_before, "after": load_after },
        "summary": summary,
        "runs": runs,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&runs);
        println!("{}", serde_json::to_string_pretty(&report["summary"])?);
    }
    Ok(())
}

fn check_args(args: &TailBenchArgs) -> anyhow::Result<()> {
    let positive = [
        ("--seconds", args.seconds),
        ("--rate", args.rate),
        ("--batch", args.batch),
        ("--producers", args.producers),
        ("--records", args.records),
        ("--partitions", u64::from(args.partitions)),
        ("--rounds", args.rounds as u64),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        bail!("{name} must be positive");
    }
    let max = logbook_server::limits::SUBSCRIPTIONS_MAX;
    if args.subscribers.is_empty() || args.subscribers.iter().any(|n| *n == 0 || *n > max) {
        bail!("--subscribers: each count must be 1..={max} (the server's subscription budget)");
    }
    if args.batch > logbook_api::limits::BATCH_RECORDS_MAX as u64 {
        bail!(
            "--batch must be at most {}",
            logbook_api::limits::BATCH_RECORDS_MAX
        );
    }
    Ok(())
}

/// What every request needs: the server, the bearer token, the stream's partitions.
#[derive(Clone)]
struct Ctx {
    addr: SocketAddr,
    bearer: Option<String>,
    partitions: u32,
    pad: Arc<str>,
}

impl Ctx {
    async fn conn(&self) -> anyhow::Result<Conn> {
        Conn::open_as(self.addr, self.bearer.as_deref()).await
    }
}

/// Sets up the stream and its catch-up records, then runs every round.
async fn measure(
    args: &TailBenchArgs,
    addr: SocketAddr,
    data: &std::path::Path,
) -> anyhow::Result<Vec<RunResult>> {
    wait_ready(addr, Duration::from_secs(60)).await?;
    let ctx = Ctx {
        addr,
        bearer: crate::client::admin_token(data)?,
        partitions: args.partitions,
        pad: "x".repeat(args.record_bytes.saturating_sub(30)).into(),
    };
    let mut c = ctx.conn().await?;
    let spec = json!({"partitions": args.partitions, "fsync": "always"});
    expect(
        c.call(Method::PUT, &paths::stream(STREAM), Some(spec.to_string()))
            .await?,
        "creating the stream",
    )?;
    let mut n = 0;
    while n < args.records {
        let end = (n + PRELOAD_BATCH).min(args.records);
        let body = batch_body(&ctx, n..end, now_us());
        expect(
            c.call(Method::POST, &paths::records(STREAM), Some(body))
                .await?,
            "storing the catch-up records",
        )?;
        n = end;
    }
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for &subscribers in &args.subscribers {
            let order = if round % 2 == 1 {
                [Transport::Sse, Transport::LongPoll]
            } else {
                [Transport::LongPoll, Transport::Sse]
            };
            for transport in order {
                for phase in [Phase::CatchUp, Phase::Live] {
                    let mut r = run_once(args, &ctx, phase, transport, subscribers).await?;
                    r.round = round;
                    eprintln!("{}", serde_json::to_string(&r)?);
                    runs.push(r);
                }
            }
        }
    }
    Ok(runs)
}

/// One run of `phase` over `transport` to `subscribers` subscribers.
async fn run_once(
    args: &TailBenchArgs,
    ctx: &Ctx,
    phase: Phase,
    transport: Transport,
    subscribers: usize,
) -> anyhow::Result<RunResult> {
    let offsets = stream_offsets(ctx).await?;
    // Catch-up reads from each partition's first record, live from its end.
    let (from, target): (Arc<[u64]>, u64) = match phase {
        Phase::CatchUp => (offsets.iter().map(|o| o.0).collect(), args.records),
        Phase::Live => (offsets.iter().map(|o| o.1).collect(), u64::MAX),
    };
    let target = Arc::new(AtomicU64::new(target));
    let deadline = Instant::now() + Duration::from_secs(args.seconds) + PHASE_GRACE;
    let started = Instant::now();
    let mut subs = Vec::with_capacity(subscribers);
    let mut ready = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sub = Subscriber {
            ctx: ctx.clone(),
            from: from.clone(),
            target: target.clone(),
            deadline,
            latency: phase == Phase::Live,
        };
        subs.push(tokio::spawn(sub.run(transport, ready_tx)));
        ready.push(ready_rx);
    }
    let mut produced = None;
    if phase == Phase::Live {
        // Every subscription in place first, so the first records do not pay for setup.
        for r in ready {
            let _ = r.await;
        }
        let (appended, seconds) = produce(args, ctx).await?;
        target.store(appended, Ordering::Release);
        produced = Some((appended, seconds));
    }
    let mut tallies = Vec::with_capacity(subscribers);
    for sub in subs {
        tallies.push(sub.await.context("a subscriber task failed")??);
    }
    let mut hist = latency_histogram()?;
    for t in &tallies {
        hist.add(&t.hist).context("merging histograms")?;
    }
    let fewest = tallies.iter().map(|t| t.received).min().unwrap_or(0);
    let total: u64 = tallies.iter().map(|t| t.received).sum();
    let seconds = tallies
        .iter()
        .filter_map(|t| t.last)
        .max()
        .map_or(0.0, |last| last.duration_since(started).as_secs_f64())
        .max(1e-6);
    let ms = |q: f64| round3(hist.value_at_quantile(q) as f64 / 1000.0);
    Ok(RunResult {
        round: 0,
        phase: phase.name(),
        transport: transport.name(),
        subscribers,
        records_per_subscriber: fewest,
        seconds: round3(seconds),
        records_per_s_per_subscriber: round1(total as f64 / subscribers as f64 / seconds),
        records_per_s_total: round1(total as f64 / seconds),
        appended: produced.map(|p| p.0),
        append_rate_per_s: produced.map(|(n, s)| round1(n as f64 / s)),
        latency: (phase == Phase::Live).then(|| Latency {
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: round3(hist.max() as f64 / 1000.0),
            samples: hist.len(),
        }),
    })
}

/// Per partition, (first retained offset, end offset), from the stream's info.
async fn stream_offsets(ctx: &Ctx) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut c = ctx.conn().await?;
    let (status, body) = c.call(Method::GET, &paths::stream(STREAM), None).await?;
    expect((status, body.clone()), "reading the stream's offsets")?;
    let info: StreamInfo = serde_json::from_slice(&body).context("the stream's info")?;
    let mut offsets = vec![(0, 0); ctx.partitions as usize];
    for o in info.offsets {
        if let Some(slot) = offsets.get_mut(o.partition as usize) {
            *slot = (o.start, o.end);
        }
    }
    Ok(offsets)
}

/// An append request's body: records `range`, keyed by number, each value stamped `t_us`.
fn batch_body(ctx: &Ctx, range: std::ops::Range<u64>, t_us: u64) -> String {
    let records: Vec<serde_json::Value> = range
        .map(|i| json!({"key": format!("k{i}"), "value": {"t_us": t_us, "pad": &*ctx.pad}}))
        .collect();
    json!({ "records": records }).to_string()
}

/// Appends at `--rate` for `--seconds` over `--producers` connections: batch `n` is due at
/// `n × batch / rate` and goes out on connection `n mod producers`. The records appended
/// (acknowledged) and the seconds it took.
async fn produce(args: &TailBenchArgs, ctx: &Ctx) -> anyhow::Result<(u64, f64)> {
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let batches = (args.rate * args.seconds).div_ceil(args.batch);
    let start = Instant::now() + Duration::from_millis(20);
    let start_us = now_us() + 20_000;
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let mut c = ctx.conn().await?;
        let ctx = ctx.clone();
        let batch = args.batch;
        let producers = args.producers;
        tasks.push(tokio::spawn(async move {
            let mut appended = 0u64;
            let mut n = p;
            while n < batches {
                let offset = interval.mul_f64(n as f64);
                tokio::time::sleep_until((start + offset).into()).await;
                let due_us = start_us + u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
                let body = batch_body(&ctx, n * batch..(n + 1) * batch, due_us);
                let got = c
                    .call(Method::POST, &paths::records(STREAM), Some(body))
                    .await?;
                expect(got, "appending")?;
                appended += batch;
                n += producers;
            }
            Ok::<u64, anyhow::Error>(appended)
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await.context("a producer task failed")??;
    }
    Ok((appended, start.elapsed().as_secs_f64()))
}

/// What one subscriber got.
struct Tally {
    received: u64,
    /// Delivered − due per record (live runs only), µs.
    hist: Histogram<u64>,
    /// When it received its last record.
    last: Option<Instant>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            received: 0,
            hist: latency_histogram()?,
            last: None,
        })
    }

    /// Counts one delivered record (its value's `t_us`), recording its latency when asked.
    fn record(&mut self, record: &RecordOut, latency: bool) {
        self.received += 1;
        if latency && let Some(t_us) = stamp(record) {
            let us = now_us().saturating_sub(t_us);
            self.hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
        }
    }
}

/// The member of a delivered record's value the benchmark reads.
#[derive(serde::Deserialize)]
struct Stamp {
    t_us: Option<u64>,
}

/// When the producer stamped a delivered record (its value's `t_us`), if it did. Both
/// transports deliver records as the api's `RecordOut`; its value stays raw JSON until here.
fn stamp(record: &RecordOut) -> Option<u64> {
    serde_json::from_str::<Stamp>(record.value.get())
        .ok()
        .and_then(|s| s.t_us)
}

/// One subscriber: follows every partition from `from` until it has `target` records (a
/// target that is `u64::MAX` until the producer is done), or fails past `deadline`.
struct Subscriber {
    ctx: Ctx,
    from: Arc<[u64]>,
    target: Arc<AtomicU64>,
    deadline: Instant,
    latency: bool,
}

impl Subscriber {
    async fn run(
        self,
        transport: Transport,
        ready: tokio::sync::oneshot::Sender<()>,
    ) -> anyhow::Result<Tally> {
        match transport {
            Transport::Sse => self.sse(ready).await,
            Transport::LongPoll => self.long_poll(ready).await,
        }
    }

    fn done(&self, received: u64) -> anyhow::Result<bool> {
        let target = self.target.load(Ordering::Acquire);
        if received >= target {
            return Ok(true);
        }
        if Instant::now() > self.deadline {
            bail!(
                "a subscriber got {received} records of {} in time",
                if target == u64::MAX {
                    "the producer's".to_string()
                } else {
                    target.to_string()
                }
            );
        }
        Ok(false)
    }

    /// One subscription across all partitions; events parsed as they arrive.
    async fn sse(self, ready: tokio::sync::oneshot::Sender<()>) -> anyhow::Result<Tally> {
        let mut tally = Tally::new()?;
        let from: Vec<String> = self
            .from
            .iter()
            .enumerate()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect();
        let path = paths::record_events(STREAM)
            + &Query::new()
                .push("from", from.join(","))
                .push("heartbeat_ms", IDLE_WAKE_MS)
                .finish();
        let mut c = self.ctx.conn().await?;
        let (status, mut body) = c.get_streaming(&path).await?;
        if status != 200 {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bail!(
                "subscribing: HTTP {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        let _ = ready.send(());
        let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
        while !self.done(tally.received)? {
            let frame = tokio::time::timeout(Duration::from_millis(IDLE_WAKE_MS * 5), body.frame())
                .await
                .context("no event nor heartbeat for 5 heartbeats")?;
            let Some(frame) = frame else {
                bail!("the server ended the subscription");
            };
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            // Every whole event of the frame (a server frames many at once), then the time:
            // a long poll's answer is likewise counted as a whole.
            let before = tally.received;
            let mut used = 0;
            while let Some(end) = find_blank_line(&buf[used..]) {
                let event = &buf[used..used + end];
                used += end + 2;
                self.sse_event(event, &mut tally)?;
            }
            buf.drain(..used);
            if tally.received > before {
                tally.last = Some(Instant::now());
            }
        }
        Ok(tally)
    }

    /// One event: a record is counted, a heartbeat or the opening id ignored, any other ends
    /// the run. Read as bytes: the data's JSON parser checks its text.
    fn sse_event(&self, event: &[u8], tally: &mut Tally) -> anyhow::Result<()> {
        let mut kind: &[u8] = b"message";
        let mut data: &[u8] = b"";
        for line in event.split(|b| *b == b'\n') {
            if let Some(k) = line.strip_prefix(b"event: ") {
                kind = k;
            } else if let Some(d) = line.strip_prefix(b"data: ") {
                data = d;
            }
        }
        match kind {
            b"record" => {
                let record: RecordOut = serde_json::from_slice(data).context("a record event")?;
                tally.record(&record, self.latency);
                Ok(())
            }
            b"message" if data.is_empty() => Ok(()),
            other => bail!(
                "the subscription ended: event {}: {}",
                String::from_utf8_lossy(other),
                String::from_utf8_lossy(data)
            ),
        }
    }

    /// A connection per partition, each looping on long polls; they share the count.
    async fn long_poll(self, ready: tokio::sync::oneshot::Sender<()>) -> anyhow::Result<Tally> {
        let received = Arc::new(AtomicU64::new(0));
        let this = Arc::new(self);
        let mut conns = Vec::new();
        for _ in 0..this.from.len() {
            conns.push(this.ctx.conn().await?);
        }
        let _ = ready.send(());
        let mut tasks = Vec::new();
        for (p, c) in conns.into_iter().enumerate() {
            let (this, received) = (this.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                this.poll_partition(c, p, &received).await
            }));
        }
        let mut tally = Tally::new()?;
        for t in tasks {
            let part = t.await.context("a long-poll task failed")??;
            tally.hist.add(&part.hist).context("merging histograms")?;
            tally.received += part.received;
            tally.last = tally.last.max(part.last);
        }
        Ok(tally)
    }

    /// Polls partition `p` from its starting offset until the subscriber is done.
    async fn poll_partition(
        &self,
        mut c: Conn,
        p: usize,
        received: &AtomicU64,
    ) -> anyhow::Result<Tally> {
        let mut tally = Tally::new()?;
        let mut from = self.from.get(p).copied().unwrap_or(0);
        while !self.done(received.load(Ordering::Acquire))? {
            let path = paths::records(STREAM)
                + &Query::new()
                    .push("partition", p)
                    .push("from", from)
                    .push("limit", POLL_LIMIT)
                    .push("wait_ms", IDLE_WAKE_MS)
                    .finish();
            let (status, body) = c.call(Method::GET, &path, None).await?;
            expect((status, body.clone()), "a long poll")?;
            let page: RecordsOut = serde_json::from_slice(&body).context("a long poll's answer")?;
            if page.records.is_empty() {
                continue;
            }
            for record in &page.records {
                tally.record(record, self.latency);
            }
            tally.last = Some(Instant::now());
            received.fetch_add(page.records.len() as u64, Ordering::AcqRel);
            from = page.next;
        }
        Ok(tally)
    }
}

/// Where the first event in `buf` ends (the index of its blank line's `\n\n`), if whole.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        if buf.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Wall-clock µs since the Unix epoch (the producer's stamps and the subscribers' clock are
/// this process's own).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn expect(got: (u16, Vec<u8>), what: &str) -> anyhow::Result<()> {
    if !(200..300).contains(&got.0) {
        bail!(
            "{what}: HTTP {}: {}",
            got.0,
            String::from_utf8_lossy(&got.1)
        );
    }
    Ok(())
}

/// The median of `xs` (the mean of the middle two for an even count); `None` when empty.
fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    })
}

/// Per phase and subscriber count: each transport's medians over the rounds and the
/// ratios SSE ÷ long poll (throughput: above 1 is SSE faster; latency: below 1 is SSE
/// quicker).
fn summarise(args: &TailBenchArgs, runs: &[RunResult]) -> serde_json::Value {
    let mut out = Vec::new();
    for phase in [Phase::CatchUp, Phase::Live] {
        for &subscribers in &args.subscribers {
            let of = |t: Transport, f: &dyn Fn(&RunResult) -> Option<f64>| {
                median(
                    runs.iter()
                        .filter(|r| {
                            r.phase == phase.name()
                                && r.transport == t.name()
                                && r.subscribers == subscribers
                        })
                        .filter_map(f)
                        .collect(),
                )
            };
            let total = |r: &RunResult| Some(r.records_per_s_total);
            let p50 = |r: &RunResult| r.latency.as_ref().map(|l| l.p50_ms);
            let p99 = |r: &RunResult| r.latency.as_ref().map(|l| l.p99_ms);
            let side = |t: Transport| {
                json!({
                    "records_per_s_total": of(t, &total),
                    "p50_ms": of(t, &p50),
                    "p99_ms": of(t, &p99),
                })
            };
            let ratio = |f: &dyn Fn(&RunResult) -> Option<f64>| match (
                of(Transport::Sse, f),
                of(Transport::LongPoll, f),
            ) {
                (Some(s), Some(l)) if l > 0.0 => Some(super::kit::round3(s / l)),
                _ => None,
            };
            out.push(json!({
                "phase": phase.name(),
                "subscribers": subscribers,
                "sse": side(Transport::Sse),
                "long_poll": side(Transport::LongPoll),
                "ratio_sse_to_long_poll": {
                    "throughput": ratio(&total),
                    "p50": ratio(&p50),
                    "p99": ratio(&p99),
                },
            }));
        }
    }
    serde_json::Value::Array(out)
}

fn print_table(runs: &[RunResult]) {
    println!(
        "{:>5} {:<8} {:<9} {:>4} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9}",
        "round",
        "phase",
        "transport",
        "subs",
        "records",
        "seconds",
        "per sub/s",
        "total/s",
        "p50 ms",
        "p99 ms"
    );
    for r in runs {
        let (p50, p99) = r.latency.as_ref().map_or(("-".into(), "-".into()), |l| {
            (format!("{:.3}", l.p50_ms), format!("{:.3}", l.p99_ms))
        });
        println!(
            "{:>5} {:<8} {:<9} {:>4} {:>10} {:>8.3} {:>12.0} {:>12.0} {:>9} {:>9}",
            r.round,
            r.phase,
            r.transport,
            r.subscribers,
            r.records_per_subscriber,
            r.seconds,
            r.records_per_s_per_subscriber,
            r.records_per_s_total,
            p50,
            p99
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_at_blank_lines() {
        let buf = b"id: 0:1\nevent: record\ndata: {}\n\n: heartbeat\n\nid: 0:2";
        let first = find_blank_line(buf);
        assert_eq!(first, Some(30));
        let rest = &buf[32..];
        assert_eq!(find_blank_line(rest), Some(11));
        assert_eq!(find_blank_line(&rest[13..]), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn a_delivered_record_yields_its_stamp() -> anyhow::Result<()> {
        let page: RecordsOut = serde_json::from_str(
            r#"{"records":[{"partition":0,"offset":7,"key":"k1","value":{"t_us":42,"pad":"x"},
                "headers":{},"timestamp_ms":1}],"next":8}"#,
        )?;
        assert_eq!(page.next, 8);
        assert_eq!(page.records.first().and_then(stamp), Some(42));
        Ok(())
    }
}
