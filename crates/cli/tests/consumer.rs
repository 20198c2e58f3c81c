//! The consumer side of the log through the real binary: a `logbook serve` on a free port,
//! driven by the Rust client and the `logbook stream` commands.
//!
//! Offsets by time: `GET /v1/streams/{stream}/offsets?timestamp_ms=` against a model of what
//! was appended (each record's partition, offset and timestamp), the same answer from
//! `logbook stream offsets --json`, and bad input named.
//!
//! The push tail (`GET /v1/streams/{stream}/records/events`, server-sent events): every
//! record of every partition exactly once and in order, across a dropped connection resumed
//! with `Last-Event-ID`; heartbeats; a client that stops reading is cut off with `event:
//! dropped` (the server's queue for it is bounded) and resumes from that event's id;
//! subscriptions have a budget of their own; `logbook stream tail --follow` prints records
//! of every partition as they are appended.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
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
use common::wire::{Event, EventStream};

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

/// Appends `n` records keyed over many keys (so they spread over the partitions) in one
/// request; their positions.
fn append_spread(
    client: &logbook_api::client::blocking::Client,
    first: usize,
    n: usize,
    pad: usize,
) -> Vec<(u32, u64)> {
    let records: Vec<RecordIn> = (first..first + n)
        .map(|i| RecordIn::new(json!({"i": i, "pad": "x".repeat(pad)})).key(format!("k{i}")))
        .collect();
    client
        .append_batch("events", records)
        .unwrap()
        .positions
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect()
}

/// Waits (bounded, by polling `/metrics`) until the server's metrics hold `line`.
fn until_metric(serve: &common::Serve, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let bearer = serve.bearer();
    while !common::wire::one(
        serve.addr(),
        "GET",
        "/metrics",
        &[("authorization", &bearer)],
        b"",
    )
    .body
    .lines()
    .any(|l| l == line)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the metrics never showed {line:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A subscription to `path` as the admin, resuming after `last_event_id` when given.
fn subscribe(serve: &common::Serve, path: &str, last_event_id: Option<&str>) -> EventStream {
    let bearer = serve.bearer();
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(id) = last_event_id {
        headers.push(("last-event-id", id));
    }
    EventStream::open(serve.addr(), path, &headers)
}

/// The next event that is not a heartbeat comment.
fn next_non_comment(events: &mut EventStream) -> Option<Event> {
    loop {
        let event = events.next_event()?;
        if event.kind != ":" {
            return Some(event);
        }
    }
}

/// A record event's (partition, offset).
fn position(event: &Event) -> (u32, u64) {
    assert_eq!(event.kind, "record", "{event:?}");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    let partition = u32::try_from(data["partition"].as_u64().unwrap()).unwrap();
    (partition, data["offset"].as_u64().unwrap())
}

/// Reads record events until `seen` holds `want` records; each must be new and follow the
/// previous one of its partition (offsets dense: the embedded log).
fn read_records(
    events: &mut EventStream,
    seen: &mut BTreeMap<u32, Vec<u64>>,
    want: usize,
) -> Option<String> {
    let mut last_id = None;
    while seen.values().map(Vec::len).sum::<usize>() < want {
        let event = next_non_comment(events).expect("the stream ended early");
        let (p, o) = position(&event);
        let offsets = seen.entry(p).or_default();
        assert_eq!(
            offsets.len() as u64,
            o,
            "partition {p}: offsets in order, none repeated or lost"
        );
        offsets.push(o);
        last_id = event.id;
    }
    last_id
}

#[test]
fn the_push_tail_delivers_every_record_once_and_resumes_after_a_dropped_connection() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(4),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();
    let mut appended = append_spread(&client, 0, 100, 10);

    // From the start: the 100 records there, then a connection dropped after 37 more.
    let path = paths::record_events("events") + "?from=start";
    let mut events = subscribe(&serve, &path, None);
    assert_eq!(events.status, 200);
    let mut seen = BTreeMap::new();
    read_records(&mut events, &mut seen, 100);
    appended.extend(append_spread(&client, 100, 80, 10));
    let resume = read_records(&mut events, &mut seen, 137).unwrap();
    drop(events);

    // Records appended while disconnected; the resumed stream starts right after the last
    // event received: the union is every record exactly once.
    appended.extend(append_spread(&client, 180, 50, 10));
    let mut events = subscribe(&serve, &paths::record_events("events"), Some(&resume));
    assert_eq!(events.status, 200);
    read_records(&mut events, &mut seen, appended.len());
    let mut expected: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, o) in &appended {
        expected.entry(*p).or_default().push(*o);
    }
    for offsets in expected.values_mut() {
        offsets.sort_unstable();
    }
    assert_eq!(seen, expected);
    drop(events);

    // Heartbeats while nothing is appended.
    let path = paths::record_events("events") + "?heartbeat_ms=100";
    let mut events = subscribe(&serve, &path, None);
    assert_eq!(
        events.next_event().unwrap().kind,
        ":",
        "a heartbeat comment"
    );
    drop(events);

    // Bad input is named.
    for (query, field) in [
        ("?from=0:x", "from"),
        ("?partitions=9", "partitions"),
        ("?heartbeat_ms=1", "heartbeat_ms"),
        ("?from=0:100000", "from"),
    ] {
        let path = paths::record_events("events") + query;
        let (status, problem) = call(&client, "GET", &path, None);
        assert_eq!(
            (status, problem["field"].clone()),
            (400, json!(field)),
            "{query}: {problem}"
        );
    }
    let events = subscribe(&serve, &paths::record_events("events"), Some("banana"));
    assert_eq!(events.status, 400);
}

#[test]
fn a_client_that_stops_reading_is_dropped_with_an_event_and_resumes_from_it() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    client
        .create_stream("events", &CreateStream::default())
        .unwrap();
    // 16 MiB of records: far more than the server queues for one client (4 MiB) plus what
    // the sockets hold (a 4 MiB send buffer at most; the client's receive buffer is small).
    let mut total = 0;
    for round in 0..4 {
        total += append_spread(&client, round * 500, 500, 8 * 1024).len();
    }

    // Subscribe and read nothing until the server has dropped the subscription (after
    // 200 ms of taking nothing from a full queue).
    let path = paths::record_events("events") + "?from=start&stall_ms=200";
    let mut events = subscribe(&serve, &path, None);
    assert_eq!(events.status, 200);
    until_metric(
        &serve,
        "logbook_subscriptions_ended_total{reason=\"slow_consumer\"} 1",
    );

    // What was queued arrives, then the drop, whose id is the cursor after the last record.
    let mut seen = BTreeMap::new();
    let mut last_id = None;
    let dropped = loop {
        let event = next_non_comment(&mut events).expect("a dropped event before the end");
        if event.kind == "dropped" {
            break event;
        }
        let (p, o) = position(&event);
        let offsets: &mut Vec<u64> = seen.entry(p).or_default();
        assert_eq!(offsets.len() as u64, o);
        offsets.push(o);
        last_id = event.id;
    };
    assert!(
        events.next_event().is_none(),
        "the stream ends after the drop"
    );
    let received: usize = seen.values().map(Vec::len).sum();
    assert!(
        received < total,
        "dropped before the end: {received} of {total}"
    );
    let reason: serde_json::Value = serde_json::from_str(&dropped.data).unwrap();
    assert_eq!(reason["reason"], "slow_consumer", "{reason}");
    assert_eq!(dropped.id, last_id, "the drop names where to resume");

    // Resumed from the drop's id and read at once: the rest, exactly.
    let resume = dropped.id.unwrap();
    let mut events = subscribe(&serve, &paths::record_events("events"), Some(&resume));
    read_records(&mut events, &mut seen, total);
    assert_eq!(seen[&0].len(), total);
}

#[test]
fn subscriptions_have_a_budget_of_their_own_and_tail_follow_uses_them() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(3),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();

    // `stream tail --follow` reads every partition.
    let mut follow = Command::new(BIN)
        .args(["stream", "tail", "events", "--follow", "--json"])
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_metric(&serve, "logbook_subscriptions 1");
    let appended = append_spread(&client, 0, 30, 10);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let mut printed = Vec::new();
    for _ in 0..appended.len() {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let partition = u32::try_from(line["partition"].as_u64().unwrap()).unwrap();
        printed.push((partition, line["offset"].as_u64().unwrap()));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    printed.sort_unstable();
    let mut expected = appended.clone();
    expected.sort_unstable();
    assert_eq!(printed, expected);
    assert!(
        expected.iter().any(|(p, _)| *p != expected[0].0),
        "several partitions"
    );

    // Every subscription slot taken: one more is refused, ordinary requests still answer.
    until_metric(&serve, "logbook_subscriptions 0");
    let path = paths::record_events("events");
    let open: Vec<EventStream> = (0..64).map(|_| subscribe(&serve, &path, None)).collect();
    assert!(open.iter().all(|e| e.status == 200));
    let (status, problem) = call(&client, "GET", &path, None);
    assert_eq!(
        (status, problem["code"].clone()),
        (503, json!("server_busy")),
        "{problem}"
    );
    let streams = client.list_streams().unwrap().streams;
    assert!(streams.iter().any(|s| s.stream == "events"));
    drop(open);
}
