//! `logbook audit status`: what a running node's background auditors checked and found
//! (`GET /v1/audit`): the segment scrubber's totals and each damaged place by file and byte
//! offset. Exits non-zero when damage was found, so a script or a cron job can alert on it.

use logbook_api::audit::AuditStatus;
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

/// The continuous audit of a running node.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The segment scrubber's state, rate and totals, and every damaged place it found
    /// (stream, partition, file, byte offset, reason). Exits 1 when it found damage.
    ///
    /// Example: `logbook audit status --server http://127.0.0.1:7700`
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl AuditCommand {
    /// Whether errors should print as JSON problem documents.
    pub fn json(&self) -> bool {
        match self {
            AuditCommand::Status { json, .. } => *json,
        }
    }
}

/// Runs a `logbook audit` command.
pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Status { server, json } => {
            let answer = Client::new(&server)?.get(&paths::audit(), &[])?;
            let status: AuditStatus = serde_json::from_value(answer.clone())
                .map_err(|e| anyhow::anyhow!("the server's audit status is malformed: {e}"))?;
            if json {
                print_json(&answer)?;
            } else {
                print_status(&status)?;
            }
            if status.scrubber.errors > 0 {
                anyhow::bail!(
                    "the scrubber found {} damaged place(s) in sealed segments",
                    status.scrubber.errors
                );
            }
            Ok(())
        }
    }
}

fn print_status(status: &AuditStatus) -> anyhow::Result<()> {
    let s = &status.scrubber;
    match s.state.as_str() {
        "running" => outln!("scrubber: running at {} MB/s", s.rate_mb_per_s),
        other => outln!("scrubber: {other}"),
    }
    outln!(
        "  checked {} bytes, {} batches, {} segments; {} passes finished; {} damaged",
        s.bytes_scrubbed,
        s.batches_scrubbed,
        s.segments_scrubbed,
        s.passes,
        s.errors
    );
    for f in &s.findings {
        outln!(
            "  damaged: stream {} partition {}: {} at byte {}: {}",
            f.stream,
            f.partition,
            f.file,
            f.file_offset,
            f.reason
        );
    }
    Ok(())
}
