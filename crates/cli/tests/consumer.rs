//! The consumer side of the log through the real binary: a `logbook serve` on a free port,
//! driven by the Rust client and the `logbook stream` commands.
//!
//! Offsets by time: `GET /v1/streams/{stream}/offsets?timestamp_ms=` against a model of what
//! was appended (each record's partition, offset and timestamp), the same answer from
//! `logbook stream offsets --json`, and bad input named.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use logbook_api::paths;
use logbook_api::streams::{CreateStream, OffsetAtTime, OffsetsAtTime, RecordIn};
use rand::{Rng, SeedableRng};
use serde_json::json;

mod common;
use common::BIN;
use common::api::call;

/// Runs `logbook ARGS` against `serve` as its admin; its output.
fn cli(serve: &common::Serve, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a command that must succeed; its stdout.
fn cli_ok(serve: &common::Serve, args: &[&str]) -> String {
    let out = cli(serve, args);
    assert!(
        out.status.success(),
        "logbook {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// What the server must answer: per partition, the first record at or after `t` in offset
/// order, else the partition's end.
fn model(
    stream: &str,
    appended: &BTreeMap<u32, Vec<(u64, i64)>>,
    partitions: u32,
    t: i64,
) -> OffsetsAtTime {
    let partitions = (0..partitions)
        .map(|p| {
            let records = appended.get(&p).map_or(&[][..], Vec::as_slice);
            let found = records.iter().find(|(_, ts)| *ts >= t);
            OffsetAtTime {
                partition: p,
                offset: found.map_or(records.len() as u64, |(o, _)| *o),
                timestamp_ms: found.map(|(_, ts)| *ts),
            }
        })
        .collect();
    OffsetsAtTime {
        stream: stream.to_string(),
        timestamp_ms: t,
        partitions,
    }
}

#[test]
fn offsets_by_time_match_a_model_over_the_api_and_the_cli() {
    let seed: u64 = std::env::var("LOGBOOK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (LOGBOOK_TEST_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let partitions = 3;
    let settings = CreateStream {
        partitions: Some(partitions),
        // Small segments (16 KiB): the lookups cross sealed segments and their index files.
        segment_bytes_max: Some(16 * 1024),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();

    // Timestamps mostly rising with the occasional one out of order, as clients may send.
    let base = now_ms() - 3_600_000;
    let mut appended: BTreeMap<u32, Vec<(u64, i64)>> = BTreeMap::new();
    let mut times = Vec::new();
    for batch in 0..20 {
        let records: Vec<RecordIn> = (0..25)
            .map(|i| {
                let mut t = base + (batch * 25 + i) * 1_000;
                if rng.gen_ratio(1, 10) {
                    t -= rng.gen_range(0..60_000);
                }
                times.push(t);
                let mut r = RecordIn::new(json!({"pad": "x".repeat(rng.gen_range(10..300))}))
                    .key(format!("k{}", rng.gen_range(0..50)));
                r.timestamp_ms = Some(t);
                r
            })
            .collect();
        let stamps: Vec<i64> = records.iter().filter_map(|r| r.timestamp_ms).collect();
        let positions = client.append_batch("events", records).unwrap().positions;
        for (p, t) in positions.iter().zip(stamps) {
            let partition = appended.entry(p.partition).or_default();
            assert_eq!(partition.len() as u64, p.offset, "dense offsets");
            partition.push((p.offset, t));
        }
    }

    let mut probes = vec![i64::MIN, base - 1, now_ms() + 86_400_000];
    for _ in 0..40 {
        let t = times[rng.gen_range(0..times.len())];
        probes.push(t + rng.gen_range(-1..=1));
    }
    for t in probes {
        let got = client.offsets_at_time("events", t).unwrap();
        assert_eq!(got, model("events", &appended, partitions, t), "time {t}");
    }

    // The CLI prints the server's answer.
    let t = times[times.len() / 2];
    let printed = cli_ok(
        &serve,
        &[
            "stream",
            "offsets",
            "events",
            "--timestamp-ms",
            &t.to_string(),
            "--json",
        ],
    );
    let printed: OffsetsAtTime = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed, model("events", &appended, partitions, t));
    let table = cli_ok(&serve, &["stream", "offsets", "events", "--ago", "1s"]);
    assert_eq!(
        table.lines().filter(|l| l.contains("- (end)")).count(),
        partitions as usize,
        "a second ago is after every record: every partition shows its end\n{table}"
    );

    // Bad input is named, and changes nothing.
    let (status, problem) = call(&client, "GET", &paths::stream_offsets("events"), None);
    assert_eq!(
        (status, problem["field"].clone()),
        (400, json!("timestamp_ms"))
    );
    let path = paths::stream_offsets("events") + "?timestamp_ms=noon";
    let (status, problem) = call(&client, "GET", &path, None);
    assert_eq!(
        (status, problem["field"].clone()),
        (400, json!("timestamp_ms"))
    );
    let path = paths::stream_offsets("nope") + "?timestamp_ms=0";
    let (status, problem) = call(&client, "GET", &path, None);
    assert_eq!(
        (status, problem["code"].clone()),
        (404, json!("unknown_stream"))
    );
    let out = cli(&serve, &["stream", "offsets", "events", "--ago", "5"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a unit"), "{stderr}");
}
