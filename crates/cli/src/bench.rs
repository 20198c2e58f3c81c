//! `logbook bench`: benchmarks that print their figures as JSON (being written).

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Append throughput and ack latency of the log, against raw disk writes.
    Log,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Log => anyhow::bail!("not yet"),
    }
}
