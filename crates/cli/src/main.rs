//! The `logbook` binary: the server, its command-line client, offline log tools and
//! benchmarks.
//!
//! `serve` runs the HTTP API; `stream`, `view`, `txn`, `commit`, `kv`, `stats`, `import` and `quickstart` are
//! clients of it (`client.rs`); `log` works on a data directory directly, with no server;
//! `bench` measures, and the hidden `debug` commands serve the crash tests. Errors become
//! `anyhow` reports with context, and structured logs go to stderr (`RUST_LOG`,
//! `--log-format json`).

/// `println!` for command output: a closed stdout (`logbook ... | head`) becomes an error that
/// ends the command quietly, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        anyhow::Context::context(
            writeln!(std::io::stdout().lock(), $($arg)*),
            "writing to stdout",
        )?
    }};
}

mod audit_cmd;
mod bench;
mod client;
mod cluster_cmd;
mod commit_cmd;
mod data_dir;
mod data_subject_cmd;
mod debug;
mod derived_cmd;
mod flights;
mod group_cmd;
mod import;
mod keys_cmd;
mod kv_cmd;
mod log_cmd;
mod log_fields;
mod private_file;
mod quickstart;
mod serve;
mod stats_cmd;
mod stream_cmd;
mod tail_cmd;
mod tls_cmd;
mod token_cmd;
mod txn_cmd;
mod view_cmd;

use clap::{Parser, Subcommand, ValueEnum};

/// Logbook: the event log is the database.
///
/// Every write is a record appended to a partitioned, durable log; everything else is derived
/// from it. Start with `logbook quickstart`, which imports real flight data into ./data.
///
/// `logbook serve` runs the server; `stream`, `view`, `txn` and `stats` talk to it over HTTP
/// (`--server`, default http://127.0.0.1:7700); `log` works on a stopped server's data
/// directory.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOGBOOK_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a Logbook full of real flight data and serve it over HTTP.
    ///
    /// Starts the HTTP API on --listen (127.0.0.1:7700) over the data directory (./data),
    /// imports the bundled sample (27,004 flights of January 2013) into the stream `flights`
    /// over HTTP, creates three views, runs a few transactions, prints what to look at and
    /// curl commands to try, then serves until Ctrl-C (--exit: shut down instead). Running
    /// it again appends nothing twice.
    Quickstart(quickstart::QuickstartArgs),
    /// Import a CSV or JSON Lines file into a stream through a running server.
    ///
    /// One record per row, each with a request id derived from the file's content and the
    /// line, so running the same import again (after an interruption) appends nothing twice.
    Import(import::ImportArgs),
    /// Serve the HTTP API (v1) on a data directory until SIGINT/SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Streams and records on a running server: create, list, show, drop, append, tail.
    #[command(subcommand)]
    Stream(stream_cmd::StreamCommand),
    /// Derived views on a running server: tables, indexes and aggregates kept from a stream
    /// (docs/views.md).
    #[command(subcommand)]
    View(view_cmd::ViewCommand),
    /// Derived streams on a running server: processors that filter, project, re-key or
    /// check uniqueness of one stream into another, exactly once (docs/derived-streams.md).
    #[command(subcommand)]
    Derived(derived_cmd::DerivedCommand),
    /// An interactive transaction shell on a running server (reads commands from stdin).
    Txn(txn_cmd::TxnArgs),
    /// A whole transaction in one request on a running server: writes, conditions,
    /// increments, declared reads.
    ///
    /// Example: `logbook commit --put 'user/ada={"seats":2}' --increment seats/booked=2`
    Commit(commit_cmd::CommitArgs),
    /// The committed key-value table on a running server: `kv read` reads keys and ranges
    /// at one snapshot (the first half of a read-modify-write with `logbook commit`).
    ///
    /// Example: `logbook kv read seats/booked --range 'user/a..user/m'`
    #[command(subcommand)]
    Kv(kv_cmd::KvCommand),
    /// Consumer groups on a running server: list, describe (members, assignments,
    /// committed offsets, lag per partition), reset to an offset or a time.
    #[command(subcommand)]
    Group(group_cmd::GroupCommand),
    /// The cluster a running node belongs to: its nodes, their health, what each serves.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// The continuous audit of a running node: what the segment scrubber checked and the
    /// damage it found (file and byte offset).
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Latency percentiles per operation and endpoint, counters and view lag of a running
    /// server (from its /metrics).
    ///
    /// Example: `logbook stats --server http://127.0.0.1:7700`
    Stats(stats_cmd::StatsArgs),
    /// Bearer tokens of a running server (admin only): create (the secret is printed once),
    /// list (no secrets), revoke.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Data subjects of a running server (scope `data_subjects:erase`): `show` a subject's
    /// key state, `erase` one (`--dry-run` first, `--yes` to erase; cannot be undone).
    #[command(subcommand, name = "data-subjects")]
    DataSubjects(data_subject_cmd::DataSubjectCommand),
    /// The master key of personal data, offline (stop `logbook serve` first): `keys rotate`
    /// re-wraps every data key under a new master key.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// TLS certificates for `logbook serve --tls-cert/--tls-key`: `tls self-signed` makes a
    /// development pair.
    #[command(subcommand)]
    Tls(tls_cmd::TlsCommand),
    /// The offline tool: work on a data directory directly, with no server (stop
    /// `logbook serve` first; one process at a time may open a data directory).
    ///
    /// Examples:
    ///   logbook log verify --data-dir ./data     # check every segment; non-zero on damage
    ///   logbook log read orders --partition 0 --from 0 --limit 10
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Measure Logbook against the disk it runs on.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Internal commands used by the test suite (crash tests).
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

fn main() -> std::process::ExitCode {
    // Everything this binary creates — data directories, segments, indexes, the view store
    // (fjall's files too), key and token files — is private to its user: directories 0700,
    // files 0600 (docs/DESIGN.md, "Security"). The log asks for those modes itself; the mask
    // covers the files that libraries create.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    // The quickstart prints its own report; the server it runs logs only warnings unless
    // RUST_LOG asks for more.
    let quiet = matches!(cli.command, Command::Quickstart(_));
    init_tracing(cli.log_format, if quiet { "warn" } else { "info" });
    // With --json, a server's error is printed as its problem document, for scripts.
    let json_errors = match &cli.command {
        Command::Stream(cmd) => cmd.json(),
        Command::View(cmd) => cmd.json(),
        Command::Derived(cmd) => cmd.json(),
        Command::Txn(args) => args.json,
        Command::Commit(args) => args.json,
        Command::Kv(cmd) => cmd.json(),
        Command::Cluster(cmd) => cmd.json(),
        Command::Audit(cmd) => cmd.json(),
        Command::Group(cmd) => cmd.json(),
        Command::Stats(args) => args.json,
        Command::Token(cmd) => cmd.json(),
        Command::DataSubjects(cmd) => cmd.json(),
        Command::Import(args) => args.json,
        Command::Quickstart(args) => args.json(),
        _ => false,
    };
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args),
        Command::Import(args) => import::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Stream(cmd) => stream_cmd::run(cmd),
        Command::View(cmd) => view_cmd::run(cmd),
        Command::Derived(cmd) => derived_cmd::run(cmd),
        Command::Txn(args) => txn_cmd::run(args),
        Command::Commit(args) => commit_cmd::run(args),
        Command::Kv(cmd) => kv_cmd::run(cmd),
        Command::Cluster(cmd) => cluster_cmd::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Group(cmd) => group_cmd::run(cmd),
        Command::Stats(args) => stats_cmd::run(args),
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::DataSubjects(cmd) => data_subject_cmd::run(cmd),
        Command::Keys(cmd) => keys_cmd::run(cmd),
        Command::Tls(cmd) => tls_cmd::run(cmd),
        Command::Log(cmd) => log_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A reader that went away (`| head`) is no error of the command: end as SIGPIPE
            // would, without a message.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return std::process::ExitCode::from(141);
            }
            if json_errors
                && let Some(api) = client::problem_of(&e)
                && let Ok(text) = serde_json::to_string(&api.problem)
            {
                eprintln!("{text}");
                return std::process::ExitCode::FAILURE;
            }
            // The error and its causes on one line each, never a backtrace: these are a
            // user's errors (a missing stream, a bad spec), not crashes of ours. A cause
            // whose text a line above already holds (many messages embed their source) is
            // not printed again.
            let mut shown = e.to_string();
            eprintln!("Error: {shown}");
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},fjall=warn,lsm_tree=warn"))
    });
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.fmt_fields(log_fields::PlainFields).init(),
        LogFormat::Json => builder.json().init(),
    }
}
