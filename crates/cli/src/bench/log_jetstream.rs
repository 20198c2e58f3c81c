//! `logbook bench log --backend jetstream`: Logbook's JetStream backend against a raw
//! async-nats publisher sending the same bytes, in the same run, taking turns.
//!
//! ```text
//!  producers ──append_batch──▶ JetStream backend (dyn LogStream) ──publish──▶ stream LB_<hash> (R3)
//!  raw tasks ──publish(same batch bytes)────────────────────────────────────▶ stream LBBENCH_RAW_<id> (R3)
//!
//!  time ─▶ | warm-up | Logbook slice | raw slice | Logbook slice | raw slice | …
//! ```
//!
//! Both sides send one message per batch of `--batch-records` records (the bytes Logbook
//! writes: [`encode_batch`]'s CRC-framed batch), keep `--in-flight` publishes outstanding
//! per producer, and wait for JetStream's acknowledgment — so the difference is what the
//! backend adds (the seam, its runtime hop, completion, offset bookkeeping). The two streams
//! have the same replicas and storage. Each side gets slices of `--slice-seconds` in turn,
//! because a shared machine changes speed from one second to the next.
//!
//! Figures: `records_per_s` and `ack_latency_us` (per record, from the call to the
//! acknowledgment, each batch counted `B` times) for `logbook` and `raw`, and
//! `ratio = logbook.records_per_s / raw.records_per_s` (issue 13's target: ≥ 0.8).
//! `ack_guarantee` says what an acknowledgment meant on this cluster.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use bytes::Bytes;
use hdrhistogram::Histogram;
use logbook_jetstream::{BackendSettings, JetStreamBackend};
use logbook_log::format::encode_batch;
use logbook_log::{LogBackend, LogStream, StreamConfig};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::kit::{elapsed_us, latency_histogram, loadavg_1m, round1, round3};
use super::log::{
    Control, LogBenchArgs, PHASE_MEASURE, PHASE_PAUSE, PHASE_STOP, build_batches, join_producers,
    producer, progress_bar, sleep_watching,
};

/// What one side measured over all its slices.
struct Side {
    records: u64,
    time: Duration,
    latency: Histogram<u64>,
}

impl Side {
    fn json(&self) -> serde_json::Value {
        let secs = self.time.as_secs_f64().max(1e-9);
        let h = &self.latency;
        json!({
            "records": self.records,
            "seconds": round3(secs),
            "records_per_s": round1(self.records as f64 / secs),
            "ack_latency_us": {
                "p50": h.value_at_quantile(0.50),
                "p95": h.value_at_quantile(0.95),
                "p99": h.value_at_quantile(0.99),
                "max": h.max(),
                "mean": round1(h.mean()),
            },
        })
    }
}

/// Runs `logbook bench log --backend jetstream` (arguments already validated).
pub(super) fn run(args: &LogBenchArgs) -> anyhow::Result<()> {
    if args.nats_urls.is_empty() {
        bail!(
            "--backend jetstream needs --nats-urls (e.g. from `scripts/dev-cluster up`: \
             nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224)"
        );
    }
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let mut settings = BackendSettings::new(args.nats_urls.iter().cloned());
    settings.partitions.replicas = args.replicas;
    let backend = JetStreamBackend::connect(settings).context("connecting to JetStream")?;
    let name = format!("bench-{unique}");
    let config = StreamConfig {
        fsync: args.fsync,
        ..StreamConfig::with_partitions(args.partitions)
    };
    let stream = backend
        .create_stream(&name, config)
        .context("creating the benchmark stream (on nats-server 2.9 pass --fsync never)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let raw = runtime.block_on(RawPublisher::create(args, &unique))?;
    let result = measure(args, &stream, &runtime, &raw);
    let guarantee = stream.ack_guarantee().to_string();
    drop(stream);
    let cleanup = backend.drop_stream(&name);
    let raw_cleanup = runtime.block_on(raw.delete());
    let (logbook, raw_side) = result?;
    cleanup.context("dropping the benchmark stream")?;
    raw_cleanup?;
    let report = json!({
        "backend": "jetstream",
        "nats_urls": args.nats_urls,
        "replicas": args.replicas,
        "ack_guarantee": guarantee,
        "record_bytes": args.record_bytes,
        "producers": args.producers,
        "in_flight_per_producer": args.in_flight,
        "batch_records": args.batch_records,
        "partitions": args.partitions,
        "warmup_seconds": args.warmup_seconds,
        "logbook": logbook.json(),
        "raw": raw_side.json(),
        "ratio": round3(logbook.records as f64 / logbook.time.as_secs_f64().max(1e-9)
            / (raw_side.records as f64 / raw_side.time.as_secs_f64().max(1e-9)).max(1e-9)),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_1m": loadavg_1m(),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let side = |s: &serde_json::Value| {
            format!(
                "{} records/s, ack µs p50 {} p99 {}",
                s["records_per_s"], s["ack_latency_us"]["p50"], s["ack_latency_us"]["p99"]
            )
        };
        println!(
            "logbook bench log --backend jetstream: {} producers × {} in flight × {} records of {} bytes, R{} ({})",
            args.producers,
            args.in_flight,
            args.batch_records,
            args.record_bytes,
            args.replicas,
            report["ack_guarantee"].as_str().unwrap_or("?"),
        );
        println!("  logbook: {}", side(&report["logbook"]));
        println!("  raw:     {}", side(&report["raw"]));
        println!("  ratio:   {}", report["ratio"]);
    }
    Ok(())
}

/// The producers through the backend, taking turns with the raw publisher.
fn measure(
    args: &LogBenchArgs,
    stream: &Arc<dyn LogStream>,
    runtime: &tokio::runtime::Runtime,
    raw: &RawPublisher,
) -> anyhow::Result<(Side, Side)> {
    let value = printable_value(args.record_bytes);
    let control = Arc::new(Control::new());
    let start = Arc::new(Barrier::new(args.producers + 1));
    let mut handles = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let batches = build_batches(args, i, &value);
        let (stream, control, start) = (stream.clone(), control.clone(), start.clone());
        let in_flight = args.in_flight;
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-prod-{i}"))
                .spawn(move || {
                    start.wait();
                    let result = producer(&stream, &batches, in_flight, &control, None);
                    if result.is_err() {
                        control.failed.store(true, Ordering::Relaxed);
                    }
                    result
                })?,
        );
    }
    let payload = Bytes::from(
        encode_batch(&build_batches(args, 0, &value).batches[0].1, 0)?
            .bytes()
            .to_vec(),
    );
    let progress = progress_bar(args);
    start.wait();
    progress.set_message("warming up");
    sleep_watching(
        Duration::from_secs_f64(args.warmup_seconds),
        &control.failed,
    );

    let total = Duration::from_secs_f64(args.seconds);
    let slice = Duration::from_secs_f64(args.slice_seconds.min(args.seconds));
    let mut logbook_time = Duration::ZERO;
    let mut raw_side = Side {
        records: 0,
        time: Duration::ZERO,
        latency: latency_histogram()?,
    };
    let mut raw_result = Ok(());
    while logbook_time < total && !control.failed.load(Ordering::Relaxed) {
        let this = slice.min(total - logbook_time);
        let started = Instant::now();
        control.phase.store(PHASE_MEASURE, Ordering::Release);
        sleep_watching(this, &control.failed);
        control.phase.store(PHASE_PAUSE, Ordering::Release);
        while control.drained.load(Ordering::Acquire) < args.producers
            && !control.failed.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        control.drained.store(0, Ordering::Release);
        logbook_time += started.elapsed();
        progress.set_position(logbook_time.as_millis() as u64);
        progress.set_message("raw publisher");
        raw_result = runtime.block_on(raw.slice(args, &payload, this, &mut raw_side));
        if raw_result.is_err() {
            break;
        }
        progress.set_message(format!(
            "{:.0} records/s",
            control.measured_records.load(Ordering::Relaxed) as f64
                / logbook_time.as_secs_f64().max(1e-3)
        ));
    }
    control.phase.store(PHASE_STOP, Ordering::Release);
    progress.finish_and_clear();
    let (latency, first_error) = join_producers(handles)?;
    if let Some(e) = first_error {
        return Err(e.context("the benchmark's appends through the backend failed"));
    }
    raw_result?;
    let records = control.measured_records.load(Ordering::Relaxed);
    Ok((
        Side {
            records,
            time: logbook_time,
            latency,
        },
        raw_side,
    ))
}

/// Printable bytes, not compressible to nothing (what `bench log` appends).
fn printable_value(bytes: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x10_6b00c);
    (0..bytes).map(|_| rng.gen_range(b' '..=b'~')).collect()
}

/// A plain JetStream stream and a publisher to it, with no Logbook code in the way.
struct RawPublisher {
    context: jetstream::Context,
    stream: String,
    subject: String,
}

impl RawPublisher {
    async fn create(args: &LogBenchArgs, unique: &str) -> anyhow::Result<RawPublisher> {
        // One address per server: async-nats does not split a comma-joined list.
        let client = async_nats::connect(args.nats_urls.clone())
            .await
            .context("connecting the raw publisher")?;
        let context = jetstream::new(client);
        let stream = format!("LBBENCH_RAW_{}", unique.replace('-', "_"));
        let subject = format!("lbbench.raw.{}", unique.replace('-', "_"));
        context
            .create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                num_replicas: usize::try_from(args.replicas)?,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("creating the raw publisher's stream")?;
        Ok(RawPublisher {
            context,
            stream,
            subject,
        })
    }

    /// Publishes `payload` for `time` from `--producers` tasks, each keeping `--in-flight`
    /// acknowledgments outstanding, then waits for every one.
    async fn slice(
        &self,
        args: &LogBenchArgs,
        payload: &Bytes,
        time: Duration,
        side: &mut Side,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.producers {
            let (context, subject, payload) =
                (self.context.clone(), self.subject.clone(), payload.clone());
            let (in_flight, records) = (args.in_flight, args.batch_records as u64);
            tasks.spawn(async move {
                let mut latency = latency_histogram()?;
                let mut queue = VecDeque::with_capacity(in_flight);
                let mut acked = 0u64;
                loop {
                    while queue.len() < in_flight && started.elapsed() < time {
                        let issued = Instant::now();
                        let ack = context.publish(subject.clone(), payload.clone()).await?;
                        queue.push_back((ack, issued));
                    }
                    let Some((ack, issued)) = queue.pop_front() else {
                        break;
                    };
                    ack.await?;
                    latency.saturating_record_n(elapsed_us(issued), records);
                    acked += records;
                }
                anyhow::Ok((acked, latency))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (acked, latency) = joined??;
            side.records += acked;
            side.latency.add(&latency)?;
        }
        side.time += started.elapsed();
        Ok(())
    }

    async fn delete(&self) -> anyhow::Result<()> {
        self.context
            .delete_stream(&self.stream)
            .await
            .context("deleting the raw publisher's stream")?;
        Ok(())
    }
}
