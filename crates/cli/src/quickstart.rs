//! `logbook quickstart`: the main job — a running Logbook full of real data, in one command.
//!
//! ```text
//!  this process
//!  ├─ tokio runtime: logbook_server::Server on --listen (the embedded default: ./data)
//!  └─ main thread: an HTTP client of that server, like any other
//!       1. PUT  /v1/streams/flights {"partitions": 4}         (create if missing)
//!       2. POST /v1/streams/flights/records × 27,004          (logbook import's code:
//!             one flight per request, Idempotency-Key import:<file hash>:<line>)
//!       3. PUT  /v1/views/{view} × 3; GET /v1/views/{view} until caught up
//!       4. POST /v1/txns … /commit × 3                        (Idempotency-Key quickstart-…)
//!       5. GET  /v1/views/{view}/rows… (read latency), /v1/kv/… → the report
//!  then serves until Ctrl-C / SIGTERM (or, with --exit, shuts down at once): graceful —
//!  in-flight requests drain, the log syncs and closes.
//! ```
//!
//! **Running it twice is safe.** Every write carries a request id derived from what it is
//! (a flight: the sample file's content hash and its line; a transaction: its name), so a
//! second run — or a run after an interrupted one — appends only what is missing; the server
//! answers the rest as duplicates with their original positions, and the report says how many.
//! Creating a stream or a view that exists with the same settings is a no-op.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use logbook_server::{ConfigLayer, Server, ServerError, limits};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use logbook_api::streams::StreamInfo;
use logbook_api::txns::{BeginBody, Begun, Committed, IncrementBody, Isolation, PutBody, Row};
use logbook_api::views::{ViewDetail, ViewOut, ViewRow, ViewRows};
use logbook_api::{ProblemCode, paths};

use crate::client::{Answer, Client, Empty, ServerArgs, is_problem};
use crate::data_dir::DataDirArgs;
use crate::flights;
use crate::import::{self, Format, ImportReport, Input, Percentiles, Settings, grouped, micros};

/// Arguments of `logbook quickstart`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo run --release -- quickstart              # inside the repository
  logbook quickstart --listen 127.0.0.1:7701     # when port 7700 is taken
  logbook quickstart --exit --json               # for scripts and CI: do it all, then exit 0

Run it again at any time: it appends nothing twice (every write has a request id).")]
pub struct QuickstartArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// Address of the HTTP API, HOST:PORT; port 0 picks a free one.
    #[arg(long, env = "LOGBOOK_LISTEN", default_value = "127.0.0.1:7700")]
    listen: String,
    /// The flights file to import (`.csv` or `.csv.gz`, nycflights13 columns). Default: the
    /// bundled January 2013 sample.
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Partitions of the `flights` stream when it is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Import requests kept in flight at once, 1 to 1024 (the log group-commits what arrives
    /// together).
    #[arg(long, default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=import::IN_FLIGHT_MAX))]
    in_flight: usize,
    /// Drop the stream `flights` and the three views first, then start over. (Without it, a
    /// second run appends nothing: every flight's request id is recognised.)
    #[arg(long)]
    fresh: bool,
    /// Do everything, then shut down gracefully and exit 0 instead of serving (for CI and
    /// scripts).
    #[arg(long, env = "LOGBOOK_QUICKSTART_EXIT", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true", default_value = "false")]
    exit: bool,
    /// Print the report as one JSON object on stdout (then serve, unless --exit).
    #[arg(long)]
    json: bool,
}

impl QuickstartArgs {
    /// Whether the report (and an error's problem document) is printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }
}

/// The stream the sample goes to (the views' source).
const STREAM: &str = "flights";

/// The three views of issue 5 (the same specs as `logbook bench views`). The aggregates name
/// their semantics, `table` (the default, docs/views.md): each flight key counts once, by its
/// latest record — on this stream, whose keys are unique, the same rows as `events`.
const VIEWS: [(&str, &str, &str); 3] = [
    (
        "delay_by_carrier",
        "aggregate (table semantics: each flight once, by its key): flights, average and \
         largest departure delay per carrier",
        r#"{"source":"flights","kind":"aggregate","semantics":"table",
            "filter":{"field":"dep_delay","op":"is_not_null"},"group_by":["carrier"],
            "aggregates":{"flights":{"fn":"count"},"avg_dep_delay":{"fn":"avg","field":"dep_delay"},
                          "max_dep_delay":{"fn":"max","field":"dep_delay"}}}"#,
    ),
    (
        "flights_by_tailnum",
        "index: the flights of each aircraft (tail number)",
        r#"{"source":"flights","kind":"index","on":["tailnum"]}"#,
    ),
    (
        "departures_by_origin_day",
        "aggregate (table semantics): departures per airport and day",
        r#"{"source":"flights","kind":"aggregate","semantics":"table",
            "group_by":["origin","year","month","day"],
            "aggregates":{"departures":{"fn":"count"}}}"#,
    ),
];

/// Longest wait for the data directory to open, or for a view to catch up.
const WAIT_MAX: Duration = Duration::from_secs(600);
/// Point reads made to measure view read latency.
const READS: usize = 2_000;

/// Runs the quickstart.
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let sample = resolve_sample(args.sample.as_deref())?;
    let config = ConfigLayer {
        data_dir: Some(args.data.data_dir.clone()),
        listen: Some(args.listen.clone()),
        ..ConfigLayer::default()
    }
    .resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(limits::BLOCKING_THREADS_MAX)
        .thread_name("logbook-http")
        .build()
        .context("starting the async runtime")?;
    let server = runtime
        .block_on(Server::bind(config))
        .map_err(|e| crate::serve::bind_error(e, &args.listen))?;
    let addr = server.local_addr().context("reading the bound address")?;

    // The server stops on Ctrl-C / SIGTERM, or when this thread is done (--exit).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let interrupted = Arc::new(AtomicBool::new(false));
    let signalled = interrupted.clone();
    let serving = runtime.spawn(server.run(async move {
        tokio::select! {
            _ = stopped => {}
            () = crate::serve::shutdown_signal() => {
                signalled.store(true, Ordering::SeqCst);
                // The shutdown drains and syncs; a second Ctrl-C means "now".
                tokio::spawn(async {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!("logbook: second interrupt: exiting at once");
                        std::process::exit(130);
                    }
                });
            }
        }
    }));

    let base = format!("http://{}", reachable(addr));
    let client = Client::new(&ServerArgs::local(base.clone(), &args.data.data_dir))?;
    let worked = wait_ready(&client, &serving).and_then(|()| {
        // The admin token is in the data directory once it is open (written on first start).
        let client = Client::new(&ServerArgs::local(base.clone(), &args.data.data_dir))?;
        steps(&args, &client, &sample, interrupted.clone())
    });
    let report = match worked {
        Ok(report) => report,
        Err(e) => {
            // Stop the server (it may have stopped already: an interrupt, a failed open).
            let _ = stop.send(());
            let ended = runtime.block_on(serving);
            if interrupted.load(Ordering::SeqCst) {
                bail!(
                    "interrupted; the server shut down cleanly. Run the quickstart again to carry on: \
                     what is already in {} is recognised by its request ids, nothing is appended twice",
                    args.data.data_dir.display()
                );
            }
            if let Ok(Err(server_error)) = ended {
                return Err(anyhow!(server_error).context("the server stopped"));
            }
            return Err(e);
        }
    };

    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, &args)?;
    }
    if args.exit {
        let _ = stop.send(());
    } else if !args.json {
        outln!();
        outln!("Serving on {base} — press Ctrl-C to stop (a graceful shutdown).");
    }
    match runtime.block_on(serving) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!(e).context("the server stopped with an error")),
        Err(e) => Err(anyhow!("the server task failed: {e}")),
    }
}

/// An address a client can connect to: the loopback address in place of "any".
/// Where a restarted server (`logbook serve`) listens after `--listen LISTEN`, as a base URL,
/// and the `--listen` flag that restart needs: none for the default or a port-0 listen (the
/// default address, since a port-0 run's port is gone with it).
fn restart_address(listen: &str) -> (String, String) {
    const DEFAULT: &str = "127.0.0.1:7700";
    let parsed = listen.parse::<SocketAddr>().ok();
    if listen == DEFAULT || parsed.is_some_and(|a| a.port() == 0) {
        return (format!("http://{DEFAULT}"), String::new());
    }
    let host = parsed.map_or_else(|| listen.to_string(), |a| reachable(a).to_string());
    (format!("http://{host}"), format!(" --listen {listen}"))
}

fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Waits until the server has opened the data directory (health 200).
fn wait_ready(
    client: &Client,
    serving: &tokio::task::JoinHandle<Result<(), ServerError>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if serving.is_finished() {
            bail!("the server stopped while opening the data directory");
        }
        if client.get(&paths::health(), &[]).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the data directory did not open within {WAIT_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the quickstart did (`--json`).
#[derive(Debug, Serialize)]
pub struct QuickstartReport {
    /// Where the server listens.
    pub server: String,
    /// The data directory.
    pub data_dir: String,
    /// The stream and views dropped first (`--fresh`).
    pub fresh: bool,
    /// The sample's import.
    pub import: ImportReport,
    /// The views.
    pub views: Vec<ViewReport>,
    /// Point reads of the views over HTTP, one after another from one client, µs.
    pub view_reads: ReadsReport,
    /// The transactions.
    pub transactions: Vec<TxnReport>,
    /// The sample's first flight (its key and value): the transactions book seats on it.
    pub flight: FirstFlight,
    /// The key-value key counting the seats booked on it.
    pub seats_key: String,
    /// Its value, read after the transactions.
    pub seats_booked: Box<RawValue>,
    /// Some view rows to look at.
    pub rows: SomeRows,
    /// The whole run until the report, s.
    pub elapsed_s: f64,
}

/// A view and how long it took to catch up.
#[derive(Debug, Serialize)]
pub struct ViewReport {
    /// Name.
    pub view: String,
    /// What it holds.
    pub about: String,
    /// Whether this run created it (else it existed with the same spec).
    pub created: bool,
    /// Records applied.
    pub applied: u64,
    /// Time until it had applied the whole stream, s.
    pub caught_up_s: f64,
}

/// View read latency.
#[derive(Debug, Serialize)]
pub struct ReadsReport {
    /// Reads made.
    pub reads: usize,
    /// Their latency, request → answer, µs.
    pub latency_us: Option<Percentiles>,
}

/// One transaction.
#[derive(Debug, Serialize)]
pub struct TxnReport {
    /// Its request id (`Idempotency-Key` of the commit).
    pub request_id: String,
    /// What it does.
    pub about: String,
    /// The `_txn` offset of its commit record (none for a transaction that wrote nothing).
    pub offset: Option<u64>,
    /// True when the commit was a retry of one already made (by an earlier run): answered
    /// with the original commit, nothing written.
    pub duplicate: bool,
    /// Serialization failures retried before it committed.
    pub retries: u32,
}

fn steps(
    args: &QuickstartArgs,
    client: &Client,
    sample: &Path,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<QuickstartReport> {
    let started = Instant::now();
    let say = |text: String| -> anyhow::Result<()> {
        if !args.json {
            outln!("{text}");
        }
        Ok(())
    };
    say(format!(
        "Logbook quickstart: the HTTP API on {} over the data directory {}",
        client.base(),
        args.data.data_dir.display()
    ))?;
    if args.fresh {
        for (view, _, _) in VIEWS {
            ignore_missing(
                client.delete(&paths::view(view), &[]),
                ProblemCode::UnknownView,
            )?;
        }
        ignore_missing(
            client.delete(&paths::stream(STREAM), &[]),
            ProblemCode::UnknownStream,
        )?;
        say(format!(
            "--fresh: dropped the stream {STREAM:?} and the views (if they existed)"
        ))?;
    }

    // 1 + 2: the stream and the import.
    // --partitions applies only to a stream created now: say what the stream really has.
    let partitions = match client.get_as::<StreamInfo>(&paths::stream(STREAM), &[]) {
        Ok(info) if info.partitions != args.partitions => format!(
            "{} partitions: it already existed, --partitions {} applies only when it is created",
            info.partitions, args.partitions
        ),
        Ok(info) => format!("{} partitions, it already existed", info.partitions),
        Err(e) if is_problem(&e, ProblemCode::UnknownStream) => {
            format!("{} partitions, created now", args.partitions)
        }
        Err(e) => return Err(e.context(format!("looking up the stream {STREAM:?}"))),
    };
    say(String::new())?;
    say(format!(
        "1. Import {} into the stream {STREAM:?} ({partitions}; fsync before every acknowledgment), \
         one request per flight",
        sample.display(),
    ))?;
    let input = Input::new(sample.to_path_buf(), Some(Format::Nycflights), Vec::new())?;
    let settings = Settings {
        in_flight: args.in_flight,
        retries: 8,
        create_partitions: Some(args.partitions),
        progress: !args.json,
        // Ctrl-C stops the server; the import must not retry every record against it.
        cancel: interrupted,
    };
    let imported = import::import(client, STREAM, &input, &settings).map_err(|e| {
        if is_problem(&e, ProblemCode::RequestIdConflict) {
            // E.g. a data directory filled by an older quickstart, which stored the flights
            // with their members in another order.
            e.context(format!(
                "the stream {STREAM:?} already holds other records under the sample's request ids; \
                 run `logbook quickstart --fresh` to drop it and import again"
            ))
        } else {
            e
        }
    })?;
    for line in import::report_lines(&imported) {
        say(line)?;
    }

    // 3: the views.
    say(String::new())?;
    say("2. Views, derived from the stream by processors (exactly once, per partition)".into())?;
    let mut views = Vec::with_capacity(VIEWS.len());
    let views_started = Instant::now();
    for (view, about, spec) in VIEWS {
        let created = match client.put_raw::<ViewOut>(&paths::view(view), spec) {
            Ok(answer) => answer.status == 201,
            Err(e) if is_problem(&e, ProblemCode::ViewExists) => {
                return Err(e.context(format!(
                    "the view {view:?} exists with another spec; drop it \
                     (curl -X DELETE {}{}) or run the quickstart with --fresh",
                    client.base(),
                    paths::view(view)
                )));
            }
            Err(e) => return Err(e.context(format!("creating the view {view:?}"))),
        };
        views.push(ViewReport {
            view: view.to_string(),
            about: about.to_string(),
            created,
            applied: 0,
            caught_up_s: 0.0,
        });
    }
    for v in &mut views {
        v.applied = wait_caught_up(client, &v.view, !args.json)?;
        v.caught_up_s = views_started.elapsed().as_secs_f64();
        say(format!(
            "   {:<25} {:<8} {} records applied after {:.2} s — {}",
            v.view,
            if v.created { "created," } else { "exists," },
            grouped(v.applied),
            v.caught_up_s,
            v.about,
        ))?;
    }

    // 4: transactions.
    say(String::new())?;
    say("3. Transactions over HTTP (serializable; seat bookings on the first flight)".into())?;
    let first = first_flight(sample)?;
    let seats_key = format!("seats:{}", first.key);
    let transactions = book_seats(client, &first.key, &seats_key)?;
    for t in &transactions {
        say(format!(
            "   {:<24} {} → commit offset {}{}",
            t.request_id,
            t.about,
            t.offset
                .map_or_else(|| "none".to_string(), |o| o.to_string()),
            if t.duplicate {
                " (duplicate: committed by an earlier run; the original commit is returned, nothing written)"
            } else {
                ""
            }
        ))?;
    }
    let seats_booked = client
        .get_as::<Row>(&paths::kv_key(&seats_key), &[])
        .with_context(|| format!("reading {seats_key}"))?
        .value;
    say(format!(
        "   {seats_key} = {seats_booked} (read outside a transaction: GET /v1/kv/…)"
    ))?;

    // 5: rows and read latency.
    let rows = some_rows(client, &first)?;
    let view_reads = read_latency(client)?;
    Ok(QuickstartReport {
        server: client.base().to_string(),
        data_dir: args.data.data_dir.display().to_string(),
        fresh: args.fresh,
        import: imported,
        views,
        view_reads,
        transactions,
        flight: first,
        seats_key,
        seats_booked,
        rows,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn ignore_missing(result: anyhow::Result<Answer>, code: ProblemCode) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_problem(&e, code) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Polls a view's status until it has applied every record of its source; returns how many
/// it applied. A progress bar on a terminal.
fn wait_caught_up(client: &Client, view: &str, progress: bool) -> anyhow::Result<u64> {
    let path = paths::view(view);
    let deadline = Instant::now() + WAIT_MAX;
    let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} records, {per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("   {view}"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    loop {
        let status = client.get_as::<ViewDetail>(&path, &[])?.status;
        if let Some(error) = &status.error {
            bail!("the view {view:?} stopped: {error}");
        }
        bar.set_length(status.progress.total);
        bar.set_position(status.progress.done);
        if status.lag_records == 0 {
            bar.finish_and_clear();
            return Ok(status.applied.values().sum());
        }
        if Instant::now() > deadline {
            bail!(
                "the view {view:?} has not caught up after {WAIT_MAX:?}: {} records behind",
                status.lag_records
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first flight of the sample: the transactions book seats on it and the report shows
/// its aircraft and its airport's day.
#[derive(Debug, Serialize)]
pub struct FirstFlight {
    /// Its record key.
    pub key: String,
    /// Its record value (the sample's columns).
    pub value: Value,
}

fn first_flight(sample: &Path) -> anyhow::Result<FirstFlight> {
    let first = flights::read_flights(sample)?
        .next()
        .with_context(|| format!("{}: no flights", sample.display()))??;
    Ok(FirstFlight {
        key: first.key,
        value: serde_json::from_slice(&first.value)?,
    })
}

/// A seat booking: the quickstart's own document in the key-value store (its members in
/// this order, as every earlier run wrote them).
#[derive(Debug, Serialize, serde::Deserialize)]
struct Booking {
    flight: String,
    passenger: String,
    seats: u32,
}

/// Three transactions, each committed with a fixed request id, so a second run commits
/// nothing new (the server answers each commit with the original).
fn book_seats(client: &Client, flight: &str, seats_key: &str) -> anyhow::Result<Vec<TxnReport>> {
    let booking = |n: u32| format!("booking:quickstart-{n}");
    let put = |txn: &str, key: &str, value: &Booking| -> anyhow::Result<()> {
        let body = PutBody {
            value: serde_json::value::to_raw_value(value)?,
            if_version: None,
            if_absent: None,
        };
        client.put(&paths::txn_key(txn, key), &body)?;
        Ok(())
    };
    let increment = |txn: &str, key: &str, by: i64| {
        client.post(&paths::txn_increment(txn, key), &IncrementBody { by }, &[])
    };
    let seat_booking = |passenger: &str, seats: u32| Booking {
        flight: flight.to_string(),
        passenger: passenger.to_string(),
        seats,
    };
    let mut reports = Vec::new();
    reports.push(transaction(
        client,
        "quickstart-book-1",
        "Ada books 2 seats (increment + put)",
        |txn| {
            increment(txn, seats_key, 2)?;
            put(txn, &booking(1), &seat_booking("Ada Lovelace", 2))
        },
    )?);
    reports.push(transaction(
        client,
        "quickstart-book-2",
        "Alan books 1 seat (increment + put)",
        |txn| {
            increment(txn, seats_key, 1)?;
            put(txn, &booking(2), &seat_booking("Alan Turing", 1))
        },
    )?);
    // A read-modify-write: serializable isolation makes a concurrent change of the booking
    // abort one of the two (serialization_failure, retried) instead of losing an update.
    reports.push(transaction(
        client,
        "quickstart-add-seat-1",
        "Ada adds a seat (read, modify, write)",
        |txn| {
            let current: Row = client.get_as(&paths::txn_key(txn, &booking(1)), &[])?;
            let mut value: Booking = serde_json::from_str(current.value.get())
                .context("the booking written by the first transaction")?;
            value.seats += 1;
            put(txn, &booking(1), &value)?;
            increment(txn, seats_key, 1)?;
            Ok(())
        },
    )?);
    Ok(reports)
}

/// Runs `body` in a serializable transaction and commits it with `request_id`; a
/// serialization failure re-runs the whole transaction (an aborted attempt leaves nothing
/// behind, so the same request id is reused). Not `Client::transaction` of the api crate:
/// that commits under a request id of its own, and a re-run of the quickstart must commit
/// under the same fixed one to be answered as a duplicate.
fn transaction(
    client: &Client,
    request_id: &str,
    about: &str,
    body: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<TxnReport> {
    const ATTEMPTS: u32 = 5;
    let begin = BeginBody {
        isolation: Some(Isolation::Serializable),
        read_only: None,
    };
    for attempt in 0..ATTEMPTS {
        let txn = client
            .post_as::<Begun>(&paths::txns(), &begin, &[], 0)?
            .body
            .txn;
        let committed = body(&txn).and_then(|()| {
            client.post_as::<Committed>(
                &paths::txn_commit(&txn),
                &Empty {},
                &[("idempotency-key", request_id)],
                0,
            )
        });
        match committed {
            Ok(answer) => {
                return Ok(TxnReport {
                    request_id: request_id.to_string(),
                    about: about.to_string(),
                    offset: answer.body.offset,
                    duplicate: answer.body.duplicate,
                    retries: attempt,
                });
            }
            Err(e) => {
                // Best effort: the transaction may be gone already (a failed commit ends it).
                let _ = client.post(&paths::txn_abort(&txn), &Empty {}, &[]);
                if !is_problem(&e, ProblemCode::SerializationFailure) {
                    return Err(e.context(format!("transaction {request_id}")));
                }
            }
        }
    }
    bail!("transaction {request_id}: serialization failures {ATTEMPTS} times in a row")
}

/// Some rows of each view, for the report.
#[derive(Debug, Serialize)]
pub struct SomeRows {
    /// The five busiest carriers.
    pub delay_by_carrier: Vec<ViewRow>,
    /// The first flight's aircraft (none when the flight has no tail number).
    pub flights_by_tailnum: Option<ViewRow>,
    /// Every airport on the first flight's day.
    pub departures_by_origin_day: Vec<ViewRow>,
}

/// A few rows of each view, for the report. The rows' values are the views' own documents
/// (the specs above name their members), read by those names.
fn some_rows(client: &Client, first: &FirstFlight) -> anyhow::Result<SomeRows> {
    let rows = |view: &str, limit: &str| {
        client.get_as::<ViewRows>(&paths::view_rows(view), &[("limit", limit.into())])
    };
    let mut carriers = rows("delay_by_carrier", "1000")?.rows;
    // The busiest carriers first.
    carriers.sort_by_key(|r| std::cmp::Reverse(r.value["flights"].as_u64().unwrap_or(0)));
    carriers.truncate(5);
    let tail = first.value["tailnum"].as_str().unwrap_or_default();
    let aircraft = if tail.is_empty() {
        None
    } else {
        Some(client.get_as::<ViewRow>(&paths::view_row("flights_by_tailnum", tail), &[])?)
    };
    let same_day = |r: &ViewRow| {
        ["year", "month", "day"]
            .iter()
            .all(|f| r.value[f] == first.value[f])
    };
    let mut days = rows("departures_by_origin_day", "10000")?.rows;
    days.retain(same_day);
    Ok(SomeRows {
        delay_by_carrier: carriers,
        flights_by_tailnum: aircraft,
        departures_by_origin_day: days,
    })
}

/// Point reads of every row of the two aggregates, round robin, one at a time.
fn read_latency(client: &Client) -> anyhow::Result<ReadsReport> {
    let mut keys = Vec::new();
    for view in ["departures_by_origin_day", "delay_by_carrier"] {
        let page: ViewRows =
            client.get_as(&paths::view_rows(view), &[("limit", "10000".into())])?;
        keys.extend(page.rows.iter().map(|row| paths::view_row(view, &row.key)));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    if keys.is_empty() {
        return Ok(ReadsReport {
            reads: 0,
            latency_us: None,
        });
    }
    for path in keys.iter().cycle().take(READS) {
        let sent = Instant::now();
        client.get(path, &[])?;
        latency.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok(ReadsReport {
        reads: READS,
        latency_us: Percentiles::of(&latency),
    })
}

fn print_report(r: &QuickstartReport, args: &QuickstartArgs) -> anyhow::Result<()> {
    outln!();
    outln!("4. Look at the data");
    outln!("   delay_by_carrier — departure delays of the five busiest carriers:");
    for row in &r.rows.delay_by_carrier {
        let v = &row.value;
        outln!(
            "     {:<3} {:>6} flights   average {:>5.1} min   longest {:>5} min",
            v["carrier"].as_str().unwrap_or("?"),
            grouped(v["flights"].as_u64().unwrap_or(0)),
            v["avg_dep_delay"].as_f64().unwrap_or(f64::NAN),
            v["max_dep_delay"].as_i64().unwrap_or(0)
        );
    }
    if let Some(aircraft) = &r.rows.flights_by_tailnum
        && let Some(keys) = aircraft.value["keys"].as_array()
    {
        outln!(
            "   flights_by_tailnum — aircraft {} flew {} flights, e.g. {}",
            aircraft.key,
            keys.len(),
            keys.iter()
                .take(3)
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let days = r
        .rows
        .departures_by_origin_day
        .iter()
        .map(|row| {
            format!(
                "{} {}",
                row.value["origin"].as_str().unwrap_or("?"),
                row.value["departures"].as_u64().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>();
    if !days.is_empty() {
        let f = &r.flight.value;
        outln!(
            "   departures_by_origin_day — departures on {}-{}-{}: {}",
            f["year"],
            f["month"],
            f["day"],
            days.join(", ")
        );
    }
    if let Some(p) = &r.view_reads.latency_us {
        outln!(
            "   view point reads over HTTP: p50 {}   p99 {}   ({} reads, one at a time)",
            micros(p.p50),
            micros(p.p99),
            grouped(r.view_reads.reads as u64)
        );
    }
    if let Some(p) = &r.import.append_latency_us {
        outln!(
            "   import appends over HTTP:   p50 {}   p99 {}   (durable: fsync before the answer)",
            micros(p.p50),
            micros(p.p99)
        );
    }
    let new_commits = r.transactions.iter().filter(|t| !t.duplicate).count();
    outln!();
    outln!(
        "Done in {:.1} s: {} appended, {} duplicates; {} of {} transactions committed now{}.",
        r.elapsed_s,
        grouped(r.import.appended),
        grouped(r.import.duplicates),
        new_commits,
        r.transactions.len(),
        if r.import.appended == 0 && new_commits == 0 {
            " — this data directory already had everything: a re-run appends nothing twice"
        } else {
            ""
        }
    );
    outln!();
    // With --exit the server is gone: the commands name the address the suggested restart
    // listens on, not the port this run happened to get.
    let (base, listen_flag) = if args.exit {
        restart_address(&args.listen)
    } else {
        (r.server.clone(), String::new())
    };
    let base = &base;
    if args.exit {
        outln!(
            "Try it: the server has shut down (--exit); run `logbook quickstart{listen_flag}` \
             (without --exit) or `logbook serve{listen_flag}{}` first, then:",
            if args.data.data_dir == Path::new("./data") {
                String::new()
            } else {
                format!(" --data-dir {}", r.data_dir)
            }
        );
    } else {
        outln!("Try it (the server is the one this command started):");
    }
    // Every route but health and /openapi.json needs a token: the admin one, which the CLI
    // also reads from LOGBOOK_TOKEN (or finds in --data-dir itself).
    outln!(
        "  export LOGBOOK_TOKEN=$(cat {}/{})",
        r.data_dir,
        logbook_server::auth::tokens::ADMIN_TOKEN_FILE
    );
    let b = "--oauth2-bearer $LOGBOOK_TOKEN";
    let f = &r.flight.value;
    let text = |name: &str| f[name].as_str().unwrap_or_default().to_string();
    let (carrier, tail, origin) = (text("carrier"), text("tailnum"), text("origin"));
    outln!(
        "  curl -s {b} {base}{}",
        paths::view_row("delay_by_carrier", &carrier)
    );
    let prefix = paths::Query::new()
        .push("prefix", format!("{origin}|"))
        .push("limit", 5)
        .finish();
    outln!(
        "  curl -s {b} '{base}{}{prefix}'",
        paths::view_rows("departures_by_origin_day")
    );
    outln!(
        "  curl -s {b} {base}{}",
        paths::view_row("flights_by_tailnum", &tail)
    );
    outln!(
        "  curl -s {b} {base}{}      # status: applied offsets, lag",
        paths::view("delay_by_carrier")
    );
    let page = paths::Query::new()
        .push("partition", 0)
        .push("from", 0)
        .push("limit", 2)
        .finish();
    outln!("  curl -s {b} '{base}{}{page}'", paths::records(STREAM));
    outln!(
        "  curl -s {b} -XPOST {base}{} -H 'Idempotency-Key: my-first' \\\n       -H 'Content-Type: application/json' -d '{{\"key\":\"2013-1-1|XX|1|{origin}\",\"value\":{{\"carrier\":\"XX\",\"dep_delay\":5,\"origin\":\"{origin}\"}}}}'",
        paths::records(STREAM)
    );
    outln!("  curl -s {b} {base}{}", paths::kv_key(&r.seats_key));
    outln!(
        "  curl -s {b} {base}{} | grep logbook_   # latency histograms per operation",
        paths::metrics()
    );
    outln!(
        "  curl -s {base}{}              # every route",
        paths::route::OPENAPI
    );
    // The CLI is a client of the same API; --server only when it is not the default.
    let server = if base == "http://127.0.0.1:7700" {
        String::new()
    } else {
        format!(" --server {base}")
    };
    outln!("  logbook view get delay_by_carrier {carrier}{server}");
    outln!("  logbook view scan departures_by_origin_day --prefix '{origin}|' --limit 5{server}");
    outln!("  logbook stats{server}                    # p50/p95/p99 per operation");
    outln!(
        "  printf 'begin serializable\\nincr {} 1\\ncommit\\n' | logbook txn{server}",
        r.seats_key
    );
    outln!(
        "  logbook import flights {} --format nycflights{server}   # all duplicates now",
        r.import.file
    );
    if args.data.data_dir != Path::new("./data") {
        outln!(
            "(the data directory is {}; `logbook serve --data-dir {}` serves it again later)",
            r.data_dir,
            r.data_dir
        );
    }
    outln!("(inside the repository, `cargo run --release --` stands for `logbook`)");
    Ok(())
}

/// The sample to import: the given path, or the bundled one ([`flights::bundled_sample`]).
fn resolve_sample(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) if path.exists() => path.to_path_buf(),
        Some(path) => bail!("--sample {}: no such file", path.display()),
        None => flights::bundled_sample("--sample")?,
    };
    // The report names the file really imported.
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}
