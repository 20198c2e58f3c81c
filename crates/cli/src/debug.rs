//! Hidden commands for the test suite: `logbook debug ...`.
//!
//! `crash-child` is the process that `crates/cli/tests/crash.rs` kills with SIGKILL. It
//! appends records with ids `K, K+1, ...` forever and prints one line per acknowledged record:
//!
//! ```text
//! ack <id> <partition> <offset>
//! ```
//!
//! A line is written (in one `write`) and flushed only after the append's completion resolved,
//! so every line the test reads names a record the log acknowledged (durable: the stream is
//! created with fsync `always`). What a record holds is a pure function of its id,
//! [`crash_record`], which the test re-derives independently to check every byte on disk.

use std::collections::VecDeque;
use std::io::Write;

use anyhow::Context;
use logbook_log::{FsyncPolicy, Log, Record, StreamAppend, StreamConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data_dir::DataDirArgs;

/// Test-suite commands: each is a child process that a crash test kills.
#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::enum_variant_names,
    reason = "every one of them is a test's child process"
)]
pub enum DebugCommand {
    /// Append deterministic records forever, printing `ack <id> <partition> <offset>` for each
    /// acknowledged one (the crash test kills this process).
    CrashChild(CrashChildArgs),
    /// Append the records of ids `--from-id ..< --to-id`, each as one request with request id
    /// `req-<id>`, printing `ack <id> <partition> <offset> <duplicate 0|1>` for each; exits 0
    /// when all are acknowledged (the exactly-once crash loop kills and restarts this).
    IdemChild(IdemChildArgs),
    /// Run the transfers `--from-id ..< --to-id` as serializable transactions with request
    /// ids `txn-<id>` from several threads, printing `ack <id> <offset> <duplicate 0|1>` for
    /// each acknowledged commit (the transaction crash test kills this).
    TxnChild(TxnChildArgs),
}

/// Arguments of `logbook debug txn-child`.
#[derive(Debug, clap::Args)]
pub struct TxnChildArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// First transfer id (inclusive).
    #[arg(long)]
    from_id: u64,
    /// Last transfer id (exclusive).
    #[arg(long)]
    to_id: u64,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Accounts the transfers move money between.
    #[arg(long, default_value_t = 10)]
    accounts: u64,
}

/// The transfer with id `id` over `accounts` accounts: `(from, to, amount)`.
pub fn transfer_of(id: u64, accounts: u64) -> (u64, u64, i64) {
    let from = id % accounts;
    let mut to = (id.wrapping_mul(7) + 3) % accounts;
    if to == from {
        to = (to + 1) % accounts;
    }
    (from, to, (id % 97) as i64 + 1)
}

fn txn_child(args: &TxnChildArgs) -> anyhow::Result<()> {
    use logbook_txn::{Isolation, RetryPolicy, TxnOptions, TxnStore, TxnStoreOptions, retry};
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    let log = Log::open(&args.data.data_dir)
        .with_context(|| format!("opening {}", args.data.data_dir.display()))?;
    let store = TxnStore::open(&log, TxnStoreOptions::default()).context("opening the store")?;
    let next = AtomicU64::new(args.from_id);
    let policy = RetryPolicy {
        max_attempts: 1000,
        ..RetryPolicy::default()
    };
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..args.clients.max(1) {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= args.to_id {
                        return Ok(());
                    }
                    let (from, to, amount) = transfer_of(id, args.accounts);
                    let request = logbook_log::RequestId::new(format!("txn-{id}"))?;
                    let done = retry(
                        &store,
                        TxnOptions::new(Isolation::Serializable),
                        &policy,
                        Some(&request),
                        |t| {
                            let read = |t: &mut logbook_txn::Txn,
                                        k: &str|
                             -> logbook_txn::Result<i64> {
                                Ok(t.get(k.as_bytes())?
                                    .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse().ok())
                                    .unwrap_or(0))
                            };
                            let (fk, tk) = (format!("acct:{from}"), format!("acct:{to}"));
                            let a = read(t, &fk)?;
                            let b = read(t, &tk)?;
                            t.put(fk.as_bytes(), (a - amount).to_string().as_bytes())?;
                            t.put(tk.as_bytes(), (b + amount).to_string().as_bytes())?;
                            t.put(format!("done:{id}").as_bytes(), b"1")?;
                            t.increment(b"count", 1)?;
                            Ok(())
                        },
                    )
                    .with_context(|| format!("transfer {id}"))?;
                    let offset = done.outcome.offset.unwrap_or(u64::MAX);
                    let line = format!("ack {id} {offset} {}\n", u8::from(done.outcome.duplicate));
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    out.write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .context("writing acks to stdout")?;
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })
}

/// Arguments of `logbook debug idem-child`.
#[derive(Debug, clap::Args)]
pub struct IdemChildArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The stream (created with fsync `always` if missing).
    #[arg(long)]
    stream: String,
    /// Partitions of the stream when it is created.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// First id to append (inclusive).
    #[arg(long)]
    from_id: u64,
    /// Last id to append (exclusive).
    #[arg(long)]
    to_id: u64,
    /// Requests waiting for their acknowledgment at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
}

/// Arguments of `logbook debug crash-child`.
#[derive(Debug, clap::Args)]
pub struct CrashChildArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The stream (created with fsync `always` if missing).
    #[arg(long)]
    stream: String,
    /// Partitions of the stream when it is created.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Segment size of the stream when it is created, bytes (small values exercise rolls).
    #[arg(long, default_value_t = 128 * 1024)]
    segment_bytes_max: u64,
    /// Id of the first record; the next ones count up from it.
    #[arg(long)]
    start_id: u64,
    /// Most appends (batches of 1 to 16 records) waiting for their acknowledgment at once, so
    /// that the partition writers group-commit them.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
}

/// Runs a debug command.
pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::CrashChild(args) => crash_child(&args),
        DebugCommand::IdemChild(args) => idem_child(&args),
        DebugCommand::TxnChild(args) => txn_child(&args),
    }
}

/// The record with id `id`, as the crash test expects to find it:
/// * value: the id in decimal, `:`, then 0 to 1998 bytes of splitmix64 output seeded by the id
///   (so batches vary in size and a damaged byte is visible);
/// * key: none when the id is a multiple of 4, else `key-<id % 1009>` (keys repeat, so a key's records
///   share a partition);
/// * one header `id` = the id in decimal.
pub fn crash_record(id: u64) -> Record {
    let mut state = id ^ 0x5851_F42D_4C95_7F2D;
    let mut next = move || {
        // splitmix64 (Steele, Lea, Flood 2014).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let random_len = usize::try_from(next() % 1999).unwrap_or(0);
    let mut value = format!("{id}:").into_bytes();
    let mut left = random_len;
    while left > 0 {
        let word = next().to_le_bytes();
        let n = left.min(word.len());
        value.extend_from_slice(&word[..n]);
        left -= n;
    }
    Record {
        key: (!id.is_multiple_of(4)).then(|| format!("key-{}", id % 1009).into_bytes()),
        value,
        headers: vec![("id".to_string(), id.to_string().into_bytes())],
        timestamp_ms: None,
    }
}

fn crash_child(args: &CrashChildArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let log = Log::open(&args.data.data_dir)
        .with_context(|| format!("opening {}", args.data.data_dir.display()))?;
    let config = StreamConfig {
        partitions: args.partitions,
        segment_bytes_max: args.segment_bytes_max,
        fsync: FsyncPolicy::Always,
        ..StreamConfig::default()
    };
    let stream = log
        .create_stream(&args.stream, config)
        .with_context(|| format!("creating stream {}", args.stream))?;
    // Batch sizes vary (most appends are one record) but need not be replayable: the test
    // checks records by id, whatever batches they travelled in.
    let mut rng = StdRng::seed_from_u64(args.start_id);
    let mut next_id = args.start_id;
    let mut in_flight: VecDeque<(u64, StreamAppend)> = VecDeque::with_capacity(args.in_flight);
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        while in_flight.len() < args.in_flight {
            let count: u64 = if rng.gen_bool(0.75) {
                1
            } else {
                rng.gen_range(2..=16)
            };
            let records = (next_id..next_id + count).map(crash_record).collect();
            let append = stream
                .append_batch(records)
                .with_context(|| format!("appending ids {next_id}..{}", next_id + count))?;
            in_flight.push_back((next_id, append));
            next_id += count;
        }
        let Some((first_id, append)) = in_flight.pop_front() else {
            continue;
        };
        let positions = append
            .wait()
            .with_context(|| format!("append starting at id {first_id}"))?;
        line.clear();
        for (id, position) in (first_id..).zip(&positions) {
            use std::fmt::Write as _;
            let _ = writeln!(line, "ack {id} {} {}", position.partition, position.offset);
        }
        // One write per acknowledged append, then flush: the reader sees whole lines.
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .context("writing acks to stdout")?;
    }
}

fn idem_child(args: &IdemChildArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let log = Log::open(&args.data.data_dir)
        .with_context(|| format!("opening {}", args.data.data_dir.display()))?;
    let config = StreamConfig {
        partitions: args.partitions,
        segment_bytes_max: 256 * 1024,
        fsync: FsyncPolicy::Always,
        ..StreamConfig::default()
    };
    let stream = log
        .create_stream(&args.stream, config)
        .with_context(|| format!("creating stream {}", args.stream))?;
    let mut in_flight: VecDeque<(u64, logbook_log::IdempotentAppend)> = VecDeque::new();
    let mut out = std::io::stdout().lock();
    let mut settle = |in_flight: &mut VecDeque<(u64, logbook_log::IdempotentAppend)>| {
        let Some((id, pending)) = in_flight.pop_front() else {
            return Ok(());
        };
        let outcome = pending
            .wait()
            .with_context(|| format!("append of id {id}"))?;
        let p = outcome.positions[0];
        writeln!(
            out,
            "ack {id} {} {} {}",
            p.partition,
            p.offset,
            u8::from(outcome.duplicate)
        )
        .and_then(|()| out.flush())
        .context("writing acks to stdout")
    };
    for id in args.from_id..args.to_id {
        let request_id = logbook_log::RequestId::new(format!("req-{id}"))?;
        let pending = stream.append_with_id(&request_id, None, vec![crash_record(id)])?;
        in_flight.push_back((id, pending));
        if in_flight.len() >= args.in_flight {
            settle(&mut in_flight)?;
        }
    }
    while !in_flight.is_empty() {
        settle(&mut in_flight)?;
    }
    Ok(())
}
