//! `logbook audit status`: what a running node's background auditors checked and found
//! (`GET /v1/audit`): the segment scrubber's totals and each damaged place by file and byte
//! offset; each view's latest audit (digests compared at the offsets named — the live state
//! and the stored checkpoints — and the first rows that differ). Exits non-zero when damage or a mismatch was found, so a script or a cron
//! job can alert on it.

use logbook_api::audit::{AuditStatus, CheckpointAudit};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

/// The continuous audit of a running node.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The segment scrubber's state, rate and totals, and every damaged place it found
    /// (stream, partition, file, byte offset, reason); each view's latest audit. Exits 1
    /// when the scrubber found damage or a view's latest audit a mismatch.
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
            let differ: Vec<&str> = status
                .views
                .views
                .iter()
                .filter(|v| v.last.as_ref().is_some_and(|r| r.verdict == "mismatch"))
                .map(|v| v.view.as_str())
                .collect();
            if !differ.is_empty() {
                anyhow::bail!(
                    "views differing from their recomputation from the log: {}",
                    differ.join(", ")
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
    let v = &status.views;
    match v.state.as_str() {
        "running" => outln!(
            "view auditor: running, a round every {} s at {} records/s per view (at most {} bytes each){}; {} rounds",
            v.interval_s,
            v.records_per_s,
            v.memory_bytes_max,
            if v.repair { ", repairing" } else { "" },
            v.rounds
        ),
        other => outln!("view auditor: {other}"),
    }
    for view in &v.views {
        let Some(r) = &view.last else {
            outln!(
                "  {}: not audited yet{}",
                view.view,
                view.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            continue;
        };
        let at: Vec<String> = r.applied.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        outln!(
            "  {} version {}: {} at offsets {} (live {} rows {}, recomputed {} rows {}); {} audits, {} mismatches",
            view.view,
            r.version,
            r.verdict,
            at.join(","),
            r.live_digest.rows,
            r.live_digest.hash,
            r.recomputed_digest.rows,
            r.recomputed_digest.hash,
            view.audits,
            view.mismatches
        );
        if let Some(note) = &r.note {
            outln!("    {note}");
        }
        for d in &r.differences {
            outln!(
                "    row {:?}: live {} recomputed {}",
                d.key,
                show(&d.live),
                show(&d.recomputed)
            );
        }
        if let Some(c) = &r.checkpoint {
            print_checkpoint(c)?;
        }
        if let Some(to) = view.repaired_to {
            outln!("    repaired: switched to version {to}, rebuilt from the log");
        }
    }
    Ok(())
}

/// A row as printed, or `(missing)`.
fn show(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map_or("(missing)".to_string(), |v| v.to_string())
}

/// The stored checkpoints' part of a view's audit.
fn print_checkpoint(c: &CheckpointAudit) -> anyhow::Result<()> {
    let at: Vec<String> = c.applied.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    outln!(
        "    stored checkpoints: {} at offsets {} (stored {} rows {}, recomputed {} rows {})",
        c.verdict,
        at.join(","),
        c.stored_digest.rows,
        c.stored_digest.hash,
        c.recomputed_digest.rows,
        c.recomputed_digest.hash
    );
    for note in &c.notes {
        outln!("      {note}");
    }
    for d in &c.differences {
        outln!(
            "      row {:?}: stored {} recomputed {}",
            d.key,
            show(&d.stored),
            show(&d.recomputed)
        );
    }
    Ok(())
}
