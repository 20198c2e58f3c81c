//! `logbook bench`: benchmarks that measure Logbook against the machine it runs on (and
//! against PostgreSQL where one is installed) and print their figures as JSON.
//!
//! One file per benchmark — [`log`] (the embedded log against raw disk writes; with
//! `--backend jetstream`, `log_jetstream`: the JetStream backend against a raw publisher), [`views`]
//! (the view processors on the flights data), [`tpcb`] (pgbench's TPC-B-like workload on
//! the transaction store), [`http`] (the HTTP API under load), [`tail`] (the push tail against
//! the long poll), [`failover`] (the append stall when a JetStream leader dies) — and the
//! pieces they share: [`stall`] (the failover benchmarks' kill and stall), [`kit`] (temporary directories, histograms,
//! machine facts), [`conn`] (a keep-alive HTTP connection), [`net`] (its TCP or TLS
//! socket), [`server`] (a server in this process) and [`postgres`] (a throwaway PostgreSQL
//! cluster and pgbench's summary).
//!
//! The load generators open their own connections rather than go through `logbook-api`'s
//! client: they measure the server, so each simulated client owns one connection (no pool
//! deciding how many there are), `bench http` pipelines requests on it, and nothing retries
//! (a retry would hide the failure being counted).

mod conn;
mod erasure;
mod failover;
mod http;
mod kit;
mod log;
#[cfg(feature = "cluster")]
mod log_jetstream;
mod net;
mod postgres;
mod server;
mod stall;
mod tail;
mod tpcb;
mod views;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Append throughput and ack latency of the log, against raw disk writes.
    ///
    /// Creates a fresh stream in a temporary directory (removed afterwards) and runs
    /// `--producers` threads appending for `--seconds` after a warm-up, taking turns with a
    /// raw-disk writer that writes the same bytes to a plain file with the same fsync
    /// cadence. Prints both.
    Log(log::LogBenchArgs),
    /// The derived-view processors on the real flights data: events/s, rebuild time of three
    /// views, and freshness (append ack → visible) under a steady append rate.
    Views(views::ViewsBenchArgs),
    /// pgbench's TPC-B-like workload on the transaction store, against PostgreSQL.
    ///
    /// Loads branches, tellers and accounts (scale 10: 1,000,000 accounts) into a fresh
    /// store (fsync always), runs `--clients` threads in a closed loop for `--seconds` at
    /// `--isolation` with read-modify-write (`--form rmw`) or increments (`--form atomic`),
    /// retrying serialization failures up to `--max-tries`, and checks that the balances
    /// still add up. Then, when PostgreSQL is installed, runs `pgbench` at the same scale and
    /// isolation on a throwaway cluster and prints both and their throughput ratio.
    Tpcb(tpcb::TpcbArgs),
    /// The HTTP API under load: single-record appends (fsync always) and point reads of a
    /// table view, closed loop and open loop at fixed rates, from a load generator in this
    /// process against a server in this process on a temporary data directory; with
    /// `pgbench -S` beside it when PostgreSQL is installed.
    Http(http::HttpBenchArgs),
    /// Following a stream: the push tail (server-sent events) against the long poll, to 1
    /// and to 16 subscribers — catch-up delivery throughput (records/s) and append →
    /// delivered latency at a steady append rate, alternating the two round by round, from a
    /// load generator in this process against a server in this process.
    Tail(tail::TailBenchArgs),
    /// The stall of appends when a partition's JetStream stream leader dies, on a
    /// development cluster (`scripts/dev-cluster up DIR`): appends with request ids through
    /// one node, `kill -9` of the stream's leader nats-server `--kills` times (restarted and
    /// caught up after each), the stall's p50/p99, and a check that every acknowledged record
    /// is in the stream exactly once.
    Failover(failover::FailoverArgs),
    /// Erasure latency (`DELETE /v1/data-subjects/{id}`, request to answer, after which no
    /// copy of the subject's personal fields reads) on a key store of `--subjects` live keys
    /// (default 1,000,000), beside the same erasures on `--small-subjects`, from a client in
    /// this process against a server in this process; checks every erased subject reads
    /// erased in a table view and kept ones their plaintext.
    Erasure(erasure::ErasureBenchArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Log(args) => run_log(&args),
        BenchCommand::Views(args) => views::run(&args),
        BenchCommand::Tpcb(args) => tpcb::run(&args),
        BenchCommand::Http(args) => http::run(&args),
        BenchCommand::Tail(args) => tail::run(&args),
        BenchCommand::Failover(args) => failover::run(&args),
        BenchCommand::Erasure(args) => erasure::run(&args),
    }
}

/// Runs `logbook bench log` on the backend it names. The dispatch lives here so that the
/// JetStream benchmark can share the embedded one's load generator without a circle.
fn run_log(args: &log::LogBenchArgs) -> anyhow::Result<()> {
    log::validate(args)?;
    match args.backend {
        log::Backend::Embedded => log::run_embedded(args),
        #[cfg(feature = "cluster")]
        log::Backend::Jetstream => log_jetstream::run(args),
        #[cfg(not(feature = "cluster"))]
        log::Backend::Jetstream => {
            anyhow::bail!("--backend jetstream needs a binary built with `--features cluster`")
        }
    }
}
