//! The exactly-once crash loop (issue 3): a client appends N records, each with its own
//! request id, through `logbook debug idem-child`; the test SIGKILLs the child at random
//! moments and restarts it on every id not yet acknowledged (some of which the log already
//! holds: their acks were lost with the process), until every id is acknowledged. At the end
//! every id is in the log exactly once and every acknowledged position — first acks and
//! duplicate answers alike — is where the log has it.
//!
//! The seed is printed; replay with `LOGBOOK_CRASH_SEED=<seed>`.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logbook_log::Log;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");
const IDS: u64 = 6000;

#[test]
fn sigkill_and_retry_every_unacknowledged_request_leaves_each_id_exactly_once() {
    let seed: u64 = std::env::var("LOGBOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("exactly-once crash loop: seed {seed} (replay with LOGBOOK_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let partitions: u32 = rng.gen_range(1..=4);
    // id -> (partition, offset), from the first ack; every later ack must agree.
    let mut acked: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut duplicates_seen = 0u64;
    let mut kills = 0;
    for round in 0.. {
        let Some(from) = (0..IDS).find(|id| !acked.contains_key(id)) else {
            break;
        };
        // Kill the first rounds at random moments; let the last one finish.
        let kill_after = (round < 12).then(|| Duration::from_millis(rng.gen_range(1..40)));
        let in_flight: usize = rng.gen_range(1..=64);
        let mut child = Command::new(BIN)
            .args(["debug", "idem-child", "--stream", "idem"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--partitions", &partitions.to_string()])
            .args(["--from-id", &from.to_string(), "--to-id", &IDS.to_string()])
            .args(["--in-flight", &in_flight.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting logbook debug idem-child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        if let Some(delay) = kill_after {
            // Wait for the first ack (or the end), then a random moment more.
            if let Ok(first) = rx.recv_timeout(Duration::from_secs(60)) {
                lines.push(first);
            }
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            // A line cut by the kill has fewer fields: it was never a whole ack.
            let ["ack", id, p, o, dup] = parts[..] else {
                continue;
            };
            let (id, p, o): (u64, u32, u64) =
                (id.parse().unwrap(), p.parse().unwrap(), o.parse().unwrap());
            if dup == "1" {
                duplicates_seen += 1;
            }
            if let Some(&first) = acked.get(&id) {
                assert_eq!(
                    first,
                    (p, o),
                    "seed {seed}: id {id} acknowledged at two positions"
                );
            } else {
                acked.insert(id, (p, o));
            }
        }
        if kill_after.is_none() {
            assert!(
                status.success(),
                "seed {seed}: the last round must finish: {status:?}"
            );
        }
        assert!(round < 30, "seed {seed}: no progress after {round} rounds");
    }
    assert_eq!(acked.len() as u64, IDS);
    // Every id is in the log exactly once, at its acknowledged position.
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("idem").unwrap();
    let mut found: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    for partition in stream.partitions() {
        let mut from = 0;
        loop {
            let records = partition.read(from, 4096, 8 << 20).unwrap();
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in records {
                let id: u64 =
                    std::str::from_utf8(&r.headers.iter().find(|(n, _)| n == "id").unwrap().1)
                        .unwrap()
                        .parse()
                        .unwrap();
                let previous = found.insert(id, (partition.id(), r.offset));
                assert!(
                    previous.is_none(),
                    "seed {seed}: id {id} is in the log twice"
                );
            }
        }
    }
    assert_eq!(
        found, acked,
        "seed {seed}: the log and the acknowledgments disagree"
    );
    eprintln!(
        "exactly-once crash loop: {kills} kills, {duplicates_seen} retries answered as duplicates"
    );
}
