//! The consumer side of the log through the real binary: a `logbook serve` on a free port,
//! driven by the Rust client and the `logbook stream` commands.
//!
//! Offsets by time: `GET /v1/streams/{stream}/offsets?timestamp_ms=` against a model of what
//! was appended (each record's partition, offset and timestamp), the same answer from
//! `logbook stream offsets --json`, and bad input named.
//!
//! The push tail (`GET /v1/streams/{stream}/records/events`, server-sent events): every
//! record of every partition exactly once and in order, across a dropped connection resumed
//! with `Last-Event-ID`; the opening id (where a subscription starts); heartbeats; a client
//! that stops reading is cut off with `event:
//! dropped` (the server's queue for it is bounded) and resumes from that event's id;
//! subscriptions have a budget of their own; `logbook stream tail --follow` prints records
//! of every partition as they are appended.
//!
//! The client's subscription (`Client::subscribe`): typed records with their cursors, bad
//! input named, and a quiet subscription closed at the node's `wait_ms_max` resumed from the
//! `closed` event's cursor, so what was appended while it reconnected is not skipped;
//! `stream tail --follow` goes on across those closes and across a server restart (from
//! the opening id), and starts where `--from` says.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use logbook_api::client::{StartAt, Subscribe, SubscriptionEvent};
use logbook_api::paths;
use logbook_api::problem::ProblemCode;
use logbook_api::streams::{
    CreateStream, EventCursor, EventKind, OffsetAtTime, OffsetsAtTime, RecordIn,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

mod common;
use common::BIN;
use common::api::call;
use common::wire::{self, Event, EventStream};

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

    // First an event of only an id, where the subscription starts (from the end: each
    // partition's end); then heartbeats while nothing is appended.
    let path = paths::record_events("events") + "?heartbeat_ms=100";
    let mut events = subscribe(&serve, &path, None);
    let ends = EventCursor(
        (0..4)
            .map(|p| (p, expected.get(&p).map_or(0, |o| o.len() as u64)))
            .collect(),
    );
    let opening = events.next_event().unwrap();
    assert_eq!(
        (opening.id, opening.kind.as_str(), opening.data.as_str()),
        (Some(ends.to_string()), ":", ""),
        "the opening id alone"
    );
    let heartbeat = events.next_event().unwrap();
    assert_eq!(
        (heartbeat.id, heartbeat.kind.as_str()),
        (None, ":"),
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
    // Like the other budgets' refusals: 429 with `Retry-After`, the client's to back off.
    let bearer = serve.bearer();
    let mut conn = wire::connect(serve.addr());
    let headers = [("host", serve.addr()), ("authorization", bearer.as_str())];
    let refused = wire::exchange(&mut conn, &wire::request("GET", &path, &headers, b""));
    refused.assert_problem(429, "subscription_budget_exhausted");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    let streams = client.list_streams().unwrap().streams;
    assert!(streams.iter().any(|s| s.stream == "events"));
    drop(open);
}

/// A counter's value in the server's metrics (`0` while it has none).
fn metric(serve: &common::Serve, series: &str) -> u64 {
    let bearer = serve.bearer();
    let metrics = common::wire::one(
        serve.addr(),
        "GET",
        "/metrics",
        &[("authorization", &bearer)],
        b"",
    )
    .body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Review r12b R2. A subscription from the end of a quiet stream hears nothing before the
/// node closes it at its `wait_ms_max` but the `closed` event, whose id is where it stood.
/// It must resume from that id: a record appended between the cut and the reconnect is
/// delivered, not skipped. The client reconnects only when asked for the next event, so
/// each append here lands in that gap.
#[test]
fn a_quiet_subscription_resumes_from_the_closed_events_cursor_and_skips_nothing() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(
        data.path(),
        &["--wait-ms-max", "300"],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let client = serve.client();
    client
        .create_stream("events", &CreateStream::default())
        .unwrap();
    let mut subscription = client.subscribe("events", &Subscribe::default()).unwrap();
    for round in 0..3_u64 {
        let SubscriptionEvent::Ended { kind, end } = subscription.next_event().unwrap() else {
            panic!("round {round}: the node's close first");
        };
        assert_eq!(
            (kind, end.reason.as_str()),
            (EventKind::Closed, "wait_ms_max")
        );
        let at = subscription.cursor().map(ToString::to_string);
        assert_eq!(
            at,
            Some(format!("0:{round}")),
            "the close names where it stood"
        );
        client
            .append("events", RecordIn::new(json!({"round": round})))
            .unwrap();
        let SubscriptionEvent::Record { record, cursor } = subscription.next_event().unwrap()
        else {
            panic!("round {round}: the record appended while it reconnected");
        };
        assert_eq!(record.offset, round);
        assert_eq!(record.value.get(), format!("{{\"round\":{round}}}"));
        assert_eq!(cursor.to_string(), format!("0:{}", round + 1));
    }
    assert_eq!(subscription.connections(), 4, "one connection per close");

    // From given offsets, a chosen partition; bad input is the server's problem, named.
    let from_one = Subscribe {
        partitions: Some(vec![0]),
        start: StartAt::Cursor(EventCursor(BTreeMap::from([(0, 1)]))),
        ..Subscribe::default()
    };
    let mut again = client.subscribe("events", &from_one).unwrap();
    for offset in 1..3 {
        let Ok(SubscriptionEvent::Record { record, .. }) = again.next_event() else {
            panic!("the records from offset 1");
        };
        assert_eq!(record.offset, offset);
    }
    let unknown = client.subscribe("nope", &Subscribe::default()).unwrap_err();
    assert_eq!(
        unknown.code(),
        Some(ProblemCode::UnknownStream),
        "{unknown}"
    );
    let bad = Subscribe {
        partitions: Some(vec![7]),
        ..Subscribe::default()
    };
    let refused = client.subscribe("events", &bad).unwrap_err();
    let field = refused.problem().and_then(|p| p.field.clone());
    assert_eq!(field.as_deref(), Some("partitions"), "{refused}");
}

/// `stream tail --follow` against a node that closes every subscription at its
/// `--wait-ms-max` resumes each time and goes on printing (review r12b R2: it used to exit
/// at the first `closed`).
#[test]
fn tail_follow_goes_on_across_the_nodes_wait_ms_max() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(
        data.path(),
        &["--wait-ms-max", "200"],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let client = serve.client();
    client
        .create_stream("events", &CreateStream::default())
        .unwrap();
    let mut follow = Command::new(BIN)
        .args(["stream", "tail", "events", "--follow", "--json"])
        .envs(serve.cli_env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let closed = "logbook_subscriptions_ended_total{reason=\"lifetime\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metric(&serve, closed) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never closed it twice"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    until_metric(&serve, "logbook_subscriptions 1");
    let appended = append_spread(&client, 0, 5, 10);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    for (partition, offset) in appended {
        let line = lines.next().expect("tail --follow ended").unwrap();
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (line["partition"].as_u64(), line["offset"].as_u64()),
            (Some(u64::from(partition)), Some(offset))
        );
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

/// A child process killed (and reaped) when the test ends on any path.
struct Killed(std::process::Child);

impl Killed {
    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines `from` gives, as a thread reads them (so the writer never blocks on them, nor
/// fails writing to a closed pipe).
fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(from)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Review r12c F1, through the binary: `stream tail --follow` from the end of a quiet
/// stream loses its connection to a server restart while it is paused (SIGSTOP, so the
/// records appended meanwhile are in before it can reconnect). It prints every record
/// appended after it started exactly once, those of the restart included: it resumes from
/// the server's opening id, where the end was. Before, it had received no id, reconnected
/// without `Last-Event-ID`, started at the end again and skipped them.
#[test]
fn tail_follow_from_the_end_resumes_after_a_server_restart_and_skips_nothing() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(3),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();
    let before = append_spread(&client, 0, 12, 10);
    let mut follow = Killed(
        Command::new(BIN)
            .args(["stream", "tail", "events", "--follow", "--json"])
            .envs(serve.cli_env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let printed = lines_of(follow.0.stdout.take().unwrap());
    let said = lines_of(follow.0.stderr.take().unwrap());
    let wait = std::time::Duration::from_secs(120);

    // Subscribed: it says where it starts, each partition's end.
    let ends = EventCursor(
        (0..3)
            .map(|p| {
                let end = before.iter().filter(|(q, _)| *q == p).map(|(_, o)| o + 1);
                (p, end.max().unwrap_or(0))
            })
            .collect(),
    );
    let from = said.recv_timeout(wait).expect("tail --follow said nothing");
    assert_eq!(from, format!("# from {ends}"));

    // Paused, the server killed and started again on its address, records appended.
    follow.signal("STOP");
    let addr = serve.addr().to_string();
    drop(serve);
    let serve = common::spawn_serve_at(&addr, data.path(), &[], Stdio::null());
    let client = serve.client();
    let mut appended = append_spread(&client, 12, 30, 10);
    follow.signal("CONT");
    appended.extend(append_spread(&client, 42, 20, 10));

    let mut got = Vec::new();
    while got.len() < appended.len() {
        let Ok(line) = printed.recv_timeout(wait) else {
            let stderr: Vec<String> = said.try_iter().collect();
            panic!(
                "{} of {} records printed: {got:?}; stderr {stderr:?}",
                got.len(),
                appended.len()
            );
        };
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        let partition = u32::try_from(record["partition"].as_u64().unwrap()).unwrap();
        got.push((partition, record["offset"].as_u64().unwrap()));
    }
    for p in 0..3 {
        let offsets: Vec<u64> = got
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in order: {offsets:?}"
        );
    }
    got.sort_unstable();
    appended.sort_unstable();
    assert_eq!(got, appended, "every record appended after the start, once");
}

/// Issue 22's F7: `stream tail --follow --from` starts at the start, at per-partition
/// offsets (`P:O,...`, others at their end) or at a group's commits; a form `tail` without
/// `--follow` cannot take is named.
#[test]
fn tail_follow_starts_where_from_says() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(2),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();
    let appended = append_spread(&client, 0, 20, 10);
    let count = |p: u32| appended.iter().filter(|(q, _)| *q == p).count() as u64;
    assert!(count(0) > 1 && count(1) > 1, "both partitions hold records");
    let wait = std::time::Duration::from_secs(120);
    // Reads `want` records of a `--follow --from FROM`; what it said it starts from.
    let follow = |from: &str, want: usize| -> (String, Vec<(u32, u64)>) {
        let mut child = Killed(
            Command::new(BIN)
                .args([
                    "stream", "tail", "events", "--follow", "--json", "--from", from,
                ])
                .envs(serve.cli_env())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let printed = lines_of(child.0.stdout.take().unwrap());
        let said = lines_of(child.0.stderr.take().unwrap());
        let start = said.recv_timeout(wait).expect("it says where it starts");
        let got = (0..want)
            .map(|_| {
                let line = printed.recv_timeout(wait).expect("a record");
                let record: serde_json::Value = serde_json::from_str(&line).unwrap();
                let partition = u32::try_from(record["partition"].as_u64().unwrap()).unwrap();
                (partition, record["offset"].as_u64().unwrap())
            })
            .collect::<Vec<_>>();
        (start, got)
    };

    let (start, mut got) = follow("start", appended.len());
    assert_eq!(start, "# from 0:0,1:0");
    got.sort_unstable();
    let mut all = appended.clone();
    all.sort_unstable();
    assert_eq!(got, all, "--from start: every record");

    // Partition 0 from its last record, partition 1 from its end (not named).
    let last = count(0) - 1;
    let (start, got) = follow(&format!("0:{last}"), 1);
    assert_eq!(start, format!("# from 0:{last},1:{}", count(1)));
    assert_eq!(got, vec![(0, last)]);

    // A group with commits: where it would read.
    let join = json!({"stream": "events", "member": "m"});
    let (status, joined) = call(&client, "POST", &paths::group_members("g"), Some(&join));
    assert!((200..300).contains(&status), "{joined}");
    let offsets = json!([{"partition": 0, "offset": 1}, {"partition": 1, "offset": 0}]);
    let commit = json!({"epoch": joined["epoch"], "offsets": offsets});
    let (status, committed) = call(
        &client,
        "POST",
        &paths::group_commit("g", "m"),
        Some(&commit),
    );
    assert!((200..300).contains(&status), "{committed}");
    let (start, got) = follow("group:g", 1);
    assert_eq!(start, "# from 0:1,1:0");
    assert!(got == vec![(0, 1)] || got == vec![(1, 0)], "{got:?}");

    // Without --follow: an offset or `start` only, the others named.
    for from in ["end", "0:1", "group:g"] {
        let out = cli(
            &serve,
            &[
                "stream",
                "tail",
                "events",
                "--partition",
                "0",
                "--from",
                from,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{from}");
        assert!(stderr.contains("is for --follow"), "{from}: {stderr}");
    }
    let out = cli(&serve, &["stream", "tail", "events", "--from", "later"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"later\" is not an offset"), "{stderr}");
}

/// Retention set and changed while appends flow (`PUT /v1/streams/{stream}/retention`):
/// each change is applied before its answer (the first retained offsets move up and never
/// back), every acknowledged record at or above them stays readable with dense offsets,
/// nothing is lost above the start, the settings survive a restart, a view created (and
/// rebuilt) after retention deleted the first records begins at the first retained offsets
/// and names that gap in its status (it is not below retention), and bad settings are
/// refused by name, changing nothing.
#[test]
fn retention_changed_under_load_keeps_what_it_must_and_a_late_view_begins_after_it() {
    use logbook_api::streams::Retention;
    use logbook_api::views::RetentionGap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(2),
        // The smallest segments (4 KiB): a few hundred records make dozens of them.
        segment_bytes_max: Some(4096),
        ..CreateStream::default()
    };
    let created = client.create_stream("events", &settings).unwrap();
    assert_eq!(
        created.retention,
        Retention::default(),
        "no limit by default"
    );
    // Small requests: a batch is never split across segments, so many small ones make
    // many segments (about ten per partition here).
    let mut acked: Vec<(u32, u64)> = Vec::new();
    for i in 0..40 {
        acked.extend(append_spread(&client, i * 10, 10, 200));
    }

    // Appends keep flowing in another thread; it says when its first batch is in.
    let stop = Arc::new(AtomicBool::new(false));
    let (started, first_batch) = mpsc::channel();
    let load = {
        let (stop, client) = (stop.clone(), serve.client());
        std::thread::spawn(move || {
            let mut positions = Vec::new();
            let mut next = 1_000_000;
            while !stop.load(Ordering::Acquire) {
                positions.extend(append_spread(&client, next, 20, 200));
                next += 20;
                let _ = started.send(());
            }
            positions
        })
    };
    first_batch.recv().unwrap();
    let starts = |info: &logbook_api::streams::StreamInfo| -> Vec<u64> {
        info.offsets.iter().map(|p| p.start).collect()
    };
    let by_bytes = Retention {
        retention_bytes: Some(8192),
        retention_ms: None,
    };
    let info = client.set_retention("events", &by_bytes).unwrap();
    assert_eq!(info.retention, by_bytes);
    let after_bytes = starts(&info);
    assert!(
        after_bytes.iter().all(|s| *s > 0),
        "each partition held dozens of segments beyond 8 KiB: {after_bytes:?}"
    );
    // By age too: every sealed segment older than a millisecond goes.
    let by_age = Retention {
        retention_bytes: Some(8192),
        retention_ms: Some(1),
    };
    let info = client.set_retention("events", &by_age).unwrap();
    assert_eq!(info.retention, by_age);
    let after_age = starts(&info);
    assert!(
        after_age.iter().zip(&after_bytes).all(|(a, b)| a >= b),
        "first offsets never move back: {after_bytes:?} then {after_age:?}"
    );
    let info = client
        .set_retention("events", &Retention::default())
        .unwrap();
    assert_eq!(info.retention, Retention::default(), "limits removed");
    stop.store(true, Ordering::Release);
    acked.extend(load.join().unwrap());

    // Every acknowledged record at or above its partition's start is there, densely.
    let info = client.stream("events").unwrap();
    for part in &info.offsets {
        let mut want: Vec<u64> = acked
            .iter()
            .filter(|(p, o)| *p == part.partition && *o >= part.start)
            .map(|(_, o)| *o)
            .collect();
        want.sort_unstable();
        assert_eq!(
            want,
            (part.start..part.end).collect::<Vec<_>>(),
            "partition {}: every acknowledged offset from the start to the end, once",
            part.partition
        );
        let mut from = part.start;
        while from < part.end {
            let at = logbook_api::client::ReadRecords {
                partition: Some(part.partition),
                from: Some(from),
                limit: Some(1000),
                wait_ms: None,
            };
            let page = client.read("events", &at).unwrap();
            for (i, r) in page.records.iter().enumerate() {
                assert_eq!(r.offset, from + i as u64, "dense offsets");
            }
            from = page.next;
        }
    }

    // A view created now, after retention deleted the stream's first records, begins at
    // the first retained offsets: it says so, is not below retention, and reflects every
    // retained record; a rebuild begins there too.
    let retained: u64 = info.offsets.iter().map(|p| p.end - p.start).sum();
    let gaps: Vec<RetentionGap> = info
        .offsets
        .iter()
        .map(|p| RetentionGap {
            partition: p.partition,
            start: p.start,
        })
        .collect();
    let ends: std::collections::BTreeMap<u32, u64> =
        info.offsets.iter().map(|p| (p.partition, p.end)).collect();
    let spec = r#"{"source": "events", "kind": "table"}"#;
    cli_ok(
        &serve,
        &["view", "create", "late", "--wait", "--spec", spec],
    );
    for version in [1, 2] {
        let status = client.view_status("late", false).unwrap().status;
        assert_eq!(status.version, version);
        assert_eq!(status.error, None, "the view runs");
        assert_eq!(status.retention_gaps, gaps, "each partition's gap is named");
        assert_eq!(status.below_retention, [], "nothing it applied was deleted");
        assert_eq!(status.applied, ends, "caught up to the end");
        assert_eq!(
            status.rows,
            Some(retained),
            "one row per retained record's key"
        );
        assert_eq!(client.stream("events").unwrap().below_retention, []);
        let shown = cli_ok(&serve, &["view", "status", "late"]);
        let named: Vec<String> = gaps
            .iter()
            .map(|g| format!("{}:{}", g.partition, g.start))
            .collect();
        assert!(
            shown.contains(&format!(
                "began after retention (partition:first offset) {}",
                named.join(" ")
            )),
            "{shown}"
        );
        if version == 1 {
            cli_ok(&serve, &["view", "rebuild", "late", "--switch"]);
        }
    }

    // Bad settings are named and change nothing; the CLI sets and shows retention.
    for (body, field) in [
        (json!({"retention_bytes": 0}), "retention_bytes"),
        (json!({"retention_ms": 0}), "retention_ms"),
        (json!({"retention_ms": -5}), "retention_ms"),
        (json!({"retention_days": 7}), "retention_days"),
    ] {
        let (status, problem) = call(
            &client,
            "PUT",
            &paths::stream_retention("events"),
            Some(&body),
        );
        assert_eq!(
            (status, problem["field"].as_str()),
            (400, Some(field)),
            "{body}: {problem}"
        );
    }
    let (status, problem) = call(
        &client,
        "PUT",
        &paths::stream_retention("nope"),
        Some(&json!({})),
    );
    assert_eq!(
        (status, problem["code"].clone()),
        (404, json!("unknown_stream"))
    );
    let (status, problem) = call(
        &client,
        "PUT",
        &paths::stream_retention("_txn"),
        Some(&json!({})),
    );
    assert_eq!(
        (status, problem["code"].clone()),
        (403, json!("reserved_stream"))
    );
    assert_eq!(
        client.stream("events").unwrap().retention,
        Retention::default()
    );
    let set = cli_ok(
        &serve,
        &[
            "stream",
            "retention",
            "events",
            "--retention-bytes",
            "1048576",
            "--retention-ms",
            "604800000",
        ],
    );
    assert!(
        set.contains("retention: 1048576 bytes per partition, 604800000 ms"),
        "{set}"
    );

    // The settings are in stream.json: a restarted server has them.
    drop(serve);
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    assert_eq!(
        serve.client().stream("events").unwrap().retention,
        Retention {
            retention_bytes: Some(1_048_576),
            retention_ms: Some(604_800_000),
        }
    );
}

/// A successful commit seen by a member: partition, from, to (offsets `from..to` are
/// processed), member.
type Committed = (u32, u64, u64, String);

/// How a member thread ends: by the test's `stop` (leaving the group), or killed (it just
/// stops: no leave, no more heartbeats, as a crashed process).
struct MemberRun {
    name: String,
    session_timeout_ms: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    kill: std::sync::Arc<std::sync::atomic::AtomicBool>,
    commits: std::sync::Arc<std::sync::Mutex<Vec<Committed>>>,
}

/// A group member's loop: join, then read each owned partition from its position, commit
/// what it read (a fresh request id per commit), heartbeat (releasing what it was asked to
/// revoke, after committing it), and rejoin when fenced. Returns its first assignment.
fn run_member(
    client: &logbook_api::client::blocking::Client,
    run: &MemberRun,
    first: &std::sync::mpsc::Sender<logbook_api::groups::MemberAssignment>,
) {
    use logbook_api::ProblemCode;
    use logbook_api::client::ReadRecords;
    use logbook_api::groups::{CommitOffsets, Heartbeat, JoinGroup, PartitionOffset};
    use std::sync::atomic::Ordering;

    let code = |e: &logbook_api::client::ClientError| e.code();
    let join = JoinGroup {
        stream: "events".into(),
        member: run.name.clone(),
        session_timeout_ms: Some(run.session_timeout_ms),
    };
    let mut n = 0u64;
    'join: loop {
        let mut a = client.join_group("g", &join).unwrap();
        let _ = first.send(a.clone());
        let mut positions: BTreeMap<u32, u64> =
            a.assigned.iter().map(|p| (p.partition, p.from)).collect();
        loop {
            if run.kill.load(Ordering::Acquire) {
                return;
            }
            if run.stop.load(Ordering::Acquire) {
                client.leave_group("g", &run.name, a.epoch).unwrap();
                return;
            }
            let mut read_any = false;
            for (p, pos) in positions.clone() {
                let at = ReadRecords {
                    partition: Some(p),
                    from: Some(pos),
                    limit: Some(200),
                    wait_ms: None,
                };
                let page = client.read("events", &at).unwrap();
                if page.records.is_empty() {
                    continue;
                }
                read_any = true;
                n += 1;
                let body = CommitOffsets {
                    epoch: a.epoch,
                    offsets: vec![PartitionOffset {
                        partition: p,
                        offset: page.next,
                    }],
                };
                let id = format!("{}-{}-{n}", run.name, a.epoch);
                match client.commit_offsets("g", &run.name, &id, &body) {
                    Ok(_) => {
                        run.commits
                            .lock()
                            .unwrap()
                            .push((p, pos, page.next, run.name.clone()));
                        positions.insert(p, page.next);
                    }
                    Err(e) if code(&e) == Some(ProblemCode::MemberFenced) => continue 'join,
                    Err(e) if code(&e) == Some(ProblemCode::PartitionNotAssigned) => {
                        positions.remove(&p);
                    }
                    Err(e) => panic!("{}: commit {body:?}: {e}", run.name),
                }
            }
            // Everything read of the partitions to revoke is committed: release them.
            let beat = Heartbeat {
                epoch: a.epoch,
                released: a.revoke.clone(),
            };
            a = match client.heartbeat("g", &run.name, &beat) {
                Ok(a) => a,
                Err(e) if code(&e) == Some(ProblemCode::MemberFenced) => continue 'join,
                Err(e) => panic!("{}: heartbeat: {e}", run.name),
            };
            positions = a
                .assigned
                .iter()
                .map(|p| {
                    (
                        p.partition,
                        positions.get(&p.partition).copied().unwrap_or(p.from),
                    )
                })
                .collect();
            if !read_any && let Some(p) = positions.keys().next() {
                // Nothing new: wait on the server for a record (a long poll) rather than spin.
                let at = ReadRecords {
                    partition: Some(*p),
                    from: positions.get(p).copied(),
                    limit: Some(1),
                    wait_ms: Some(100),
                };
                client.read("events", &at).unwrap();
            }
        }
    }
}

/// Polls (bounded) until `done(describe)` holds; the last description.
fn until_group(
    client: &logbook_api::client::blocking::Client,
    what: &str,
    done: impl Fn(&logbook_api::groups::GroupInfo) -> bool,
) -> logbook_api::groups::GroupInfo {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let g = client.group("g").unwrap();
        if done(&g) {
            return g;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {g:#?}");
        // The group changes by records in `_groups`: wait (bounded) for the next one
        // rather than sleep. A member's progress is a commit, a record too.
        let end = client.stream("_groups").unwrap().offsets[0].end;
        let at = logbook_api::client::ReadRecords {
            partition: Some(0),
            from: Some(end),
            limit: Some(1),
            wait_ms: Some(200),
        };
        client.read("_groups", &at).unwrap();
    }
}

/// Three members over a 12-partition stream, one killed (its session times out), one
/// added, one restarted, while records flow: every record is committed by exactly one member
/// (the commits of each partition tile its offsets), no committed offset goes back (in the
/// `_groups` log itself), the restarted member resumes at its commits and its old epoch is
/// fenced, a retried commit is a duplicate; `logbook group list|describe|reset` and the push
/// tail from a group's commits.
#[test]
fn a_group_shares_partitions_commits_each_record_once_and_resumes_after_restarts() {
    use logbook_api::ProblemCode;
    use logbook_api::groups::{CommitOffsets, PartitionOffset, ResetGroup, ResetPoint};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(12),
        ..CreateStream::default()
    };
    client.create_stream("events", &settings).unwrap();
    append_spread(&client, 0, 600, 20);

    let commits: Arc<Mutex<Vec<Committed>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let start = |name: &str, session_timeout_ms: u64| {
        let run = MemberRun {
            name: name.to_string(),
            session_timeout_ms,
            stop: stop.clone(),
            kill: Arc::new(AtomicBool::new(false)),
            commits: commits.clone(),
        };
        let kill = run.kill.clone();
        let member_client = serve.client();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || run_member(&member_client, &run, &tx));
        let first = rx.recv().unwrap();
        (thread, kill, first)
    };
    let committed = |g: &logbook_api::groups::GroupInfo| -> u64 {
        g.partitions.iter().filter_map(|p| p.committed).sum()
    };
    let (a, _, _) = start("a", 5_000);
    let (b, kill_b, _) = start("b", 1_000);
    let (c, kill_c, _) = start("c", 5_000);
    until_group(&client, "3 members sharing 12 partitions", |g| {
        g.members.len() == 3 && g.members.iter().all(|m| m.assigned.len() == 4)
    });
    until_group(&client, "300 records committed", |g| committed(g) >= 300);

    // b is killed while records flow; its session times out and its partitions move on.
    kill_b.store(true, Ordering::Release);
    b.join().unwrap();
    append_spread(&client, 600, 600, 20);
    let g = until_group(&client, "b removed", |g| {
        !g.members.iter().any(|m| m.member == "b")
    });
    assert!(g.partitions.iter().all(|p| p.owner.is_some()), "{g:#?}");
    // d is added.
    let (d, _, _) = start("d", 5_000);
    until_group(&client, "d owning partitions", |g| {
        g.members
            .iter()
            .any(|m| m.member == "d" && !m.assigned.is_empty())
    });

    // c is killed and restarted under its name: it resumes at its commits; the old
    // incarnation is fenced.
    kill_c.store(true, Ordering::Release);
    c.join().unwrap();
    let before = client.group("g").unwrap();
    let old = before
        .members
        .iter()
        .find(|m| m.member == "c")
        .unwrap()
        .clone();
    let (c2, _, resumed) = start("c", 5_000);
    assert_eq!(resumed.epoch, old.epoch + 1);
    let owned: Vec<u32> = resumed.assigned.iter().map(|p| p.partition).collect();
    assert_eq!(
        owned, old.assigned,
        "a restarted member keeps its partitions"
    );
    for p in &resumed.assigned {
        let at = &before.partitions[p.partition as usize];
        assert_eq!(
            p.from,
            at.committed.unwrap_or(at.start),
            "partition {}: resumes at its commit",
            p.partition
        );
    }
    let stale = CommitOffsets {
        epoch: old.epoch,
        offsets: vec![PartitionOffset {
            partition: owned[0],
            offset: resumed.assigned[0].from,
        }],
    };
    let e = client
        .commit_offsets("g", "c", "stale", &stale)
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::MemberFenced), "{e}");

    // More records while the group runs; then everything gets committed.
    append_spread(&client, 1200, 600, 20);
    let info = client.stream("events").unwrap();
    let ends: BTreeMap<u32, u64> = info.offsets.iter().map(|p| (p.partition, p.end)).collect();
    let g = until_group(&client, "every record committed", |g| {
        g.partitions
            .iter()
            .all(|p| p.committed == Some(ends[&p.partition]))
    });
    assert_eq!(g.lag, 0);
    let e = client
        .reset_group(
            "g",
            &ResetGroup {
                to: Some(ResetPoint::Start),
                ..ResetGroup::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::GroupActive), "{e}");
    stop.store(true, Ordering::Release);
    for t in [a, c2, d] {
        t.join().unwrap();
    }

    // Every record committed by exactly one member: per partition, the commits tile it.
    let mut by_partition: BTreeMap<u32, Vec<Committed>> = BTreeMap::new();
    for c in commits.lock().unwrap().iter() {
        by_partition.entry(c.0).or_default().push(c.clone());
    }
    for (p, end) in &ends {
        let mut ranges = by_partition.remove(p).unwrap_or_default();
        ranges.sort_by_key(|c| c.1);
        let mut next = 0;
        for (_, from, to, member) in &ranges {
            assert_eq!(
                *from, next,
                "partition {p}: {member}'s commit of {from}..{to} overlaps or leaves a gap"
            );
            next = *to;
        }
        assert_eq!(next, *end, "partition {p}: committed to its end");
    }
    // No committed offset went back: the commits in the `_groups` log, in order.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut from = 0;
    loop {
        let at = logbook_api::client::ReadRecords {
            partition: Some(0),
            from: Some(from),
            limit: Some(1000),
            wait_ms: None,
        };
        let page = client.read("_groups", &at).unwrap();
        if page.records.is_empty() {
            break;
        }
        for r in &page.records {
            let v: serde_json::Value = serde_json::from_str(r.value.get()).unwrap();
            if let Some(commit) = v.get("commit") {
                for (p, o) in commit["offsets"].as_object().unwrap() {
                    let (p, o): (u64, u64) = (p.parse().unwrap(), o.as_u64().unwrap());
                    let prev = last.insert(p, o).unwrap_or(0);
                    assert!(o >= prev, "partition {p}: commit {o} after {prev}");
                }
            }
        }
        from = page.next;
    }

    // A commit retried under its request id is a duplicate; a bad body changes nothing.
    stop.store(false, Ordering::Release);
    let (rejoined, _, _) = start("e", 5_000);
    let a = client.group("g").unwrap();
    let e_member = a.members.iter().find(|m| m.member == "e").unwrap();
    let p = e_member.assigned[0];
    let body = CommitOffsets {
        epoch: e_member.epoch,
        offsets: vec![PartitionOffset {
            partition: p,
            offset: ends[&p],
        }],
    };
    let again = client.commit_offsets("g", "e", "once", &body).unwrap();
    assert!(!again.duplicate);
    assert!(
        client
            .commit_offsets("g", "e", "once", &body)
            .unwrap()
            .duplicate
    );
    let other = CommitOffsets {
        epoch: e_member.epoch,
        offsets: vec![],
    };
    let e = client
        .commit_offsets("g", "e", "twice", &other)
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ProblemCode::InvalidRequest),
        "no offsets: {e}"
    );
    let moved = CommitOffsets {
        epoch: e_member.epoch,
        offsets: vec![PartitionOffset {
            partition: p,
            offset: ends[&p] - 1,
        }],
    };
    let e = client.commit_offsets("g", "e", "once", &moved).unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::RequestIdConflict), "{e}");
    let e = client.commit_offsets("g", "e", "back", &moved).unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::OffsetBehindCommit), "{e}");
    stop.store(true, Ordering::Release);
    rejoined.join().unwrap();

    // The CLI: list, describe, reset with a dry run, then for real.
    let list = cli_ok(&serve, &["group", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("g ") && l.contains("events")),
        "{list}"
    );
    let shown = cli_ok(&serve, &["group", "describe", "g"]);
    assert!(shown.contains("group g on stream events"), "{shown}");
    let dry = cli_ok(
        &serve,
        &["group", "reset", "g", "--offset", "0:5", "--dry-run"],
    );
    assert!(
        dry.contains("would move") && dry.contains("partition 0:"),
        "{dry}"
    );
    assert_eq!(
        client.group("g").unwrap().partitions[0].committed,
        Some(ends[&0])
    );
    cli_ok(&serve, &["group", "reset", "g", "--offset", "0:5"]);
    assert_eq!(client.group("g").unwrap().partitions[0].committed, Some(5));

    // The push tail from the group's commits starts partition 0 at 5.
    let mut events = subscribe(
        &serve,
        &(paths::record_events("events") + "?partitions=0&from=group:g"),
        None,
    );
    let first = next_non_comment(&mut events).unwrap();
    assert_eq!(position(&first), (0, 5));

    // The groups survive a restart (they are records in `_groups`).
    let before = client.group("g").unwrap();
    drop(events);
    drop(serve);
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let after = serve.client().group("g").unwrap();
    assert_eq!(after.partitions, before.partitions);
    assert_eq!(after.generation, before.generation);
}

/// A token for `principal` with `scopes`, made by the admin; a client sending it.
fn client_of(
    serve: &common::Serve,
    principal: &str,
    scopes: &[&str],
) -> logbook_api::client::blocking::Client {
    let body = json!({"principal": principal, "scopes": scopes});
    let (status, created) = call(&serve.client(), "POST", paths::route::TOKENS, Some(&body));
    assert_eq!(status, 201, "{created}");
    let base = format!("http://{}", serve.addr());
    common::api::client_with_token(&base, created["token"].as_str())
}

/// The end of `_groups` (every group change is a record there).
fn groups_end(client: &logbook_api::client::blocking::Client) -> u64 {
    client.stream("_groups").unwrap().offsets[0].end
}

/// A group shows its stream's offsets and its members read the stream: every group route
/// needs `streams:read` on the group's stream (review r22: a token scoped to groups alone
/// joined groups on streams it could not read, `_auth` included), and the list shows only
/// groups on streams the caller reads. A group without members can be deleted (its slot
/// is free again), and a member of the deleted group that comes back is fenced. Refused
/// input (a reset naming a partition twice, or none) changes nothing.
#[test]
fn groups_need_their_streams_read_scope_and_can_be_deleted() {
    use logbook_api::ProblemCode;
    use logbook_api::groups::{CommitOffsets, JoinGroup, PartitionOffset};

    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let admin = serve.client();
    let settings = CreateStream {
        partitions: Some(2),
        ..CreateStream::default()
    };
    admin.create_stream("ev", &settings).unwrap();
    admin.create_stream("other", &settings).unwrap();
    let records: Vec<RecordIn> = (0..10)
        .map(|i| RecordIn::new(json!({"i": i})).key(format!("k{i}")))
        .collect();
    admin.append_batch("ev", records).unwrap();
    let join = |stream: &str, member: &str| JoinGroup {
        stream: stream.into(),
        member: member.into(),
        session_timeout_ms: Some(60_000),
    };
    let groups_only = client_of(
        &serve,
        "mallory",
        &["groups:consume:q*", "groups:read:q*", "groups:manage:q*"],
    );
    let reader = client_of(
        &serve,
        "reader",
        &["groups:consume:q*", "groups:read:*", "streams:read:ev"],
    );

    // Joins: without streams:read on the stream, 403 and no group; no group on `_auth`.
    let before = groups_end(&admin);
    let e = groups_only.join_group("q1", &join("ev", "m")).unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::Forbidden), "{e}");
    assert!(e.to_string().contains("streams:read:ev"), "{e}");
    let e = groups_only
        .join_group("q1", &join("_auth", "m"))
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::Forbidden), "{e}");
    let e = admin.join_group("q2", &join("_auth", "m")).unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::ReservedStream), "{e}");
    assert_eq!(groups_end(&admin), before, "refused joins write nothing");
    assert!(admin.list_groups().unwrap().groups.is_empty());

    // A token that reads the stream joins; one that does not may not describe the group,
    // commit to it, reset or delete it.
    let m = reader.join_group("q1", &join("ev", "m")).unwrap();
    admin.join_group("q3", &join("other", "m3")).unwrap();
    let e = groups_only.group("q1").unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::Forbidden), "{e}");
    let commit = CommitOffsets {
        epoch: m.epoch,
        offsets: vec![PartitionOffset {
            partition: 0,
            offset: 1,
        }],
    };
    let e = groups_only
        .commit_offsets("q1", "m", "c1", &commit)
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::Forbidden), "{e}");
    let e = groups_only.delete_group("q1").unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::Forbidden), "{e}");
    reader.commit_offsets("q1", "m", "c1", &commit).unwrap();
    let listed: Vec<String> = reader
        .list_groups()
        .unwrap()
        .groups
        .into_iter()
        .map(|g| g.group)
        .collect();
    assert_eq!(listed, ["q1"], "only groups on streams the caller reads");

    // A group with members is not deleted.
    let e = admin.delete_group("q1").unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::GroupActive), "{e}");

    // Resets naming a partition twice, or none, are refused and write nothing.
    reader.leave_group("q1", "m", m.epoch).unwrap();
    let before = groups_end(&admin);
    for (offsets, field) in [
        (
            json!([{"partition": 0, "offset": 0}, {"partition": 0, "offset": 1}]),
            "offsets[1].partition",
        ),
        (json!([]), "offsets"),
    ] {
        let body = json!({"offsets": offsets});
        let (status, problem) = call(&admin, "POST", &paths::group_reset("q1"), Some(&body));
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    assert_eq!(groups_end(&admin), before, "refused resets write nothing");
    assert_eq!(admin.group("q1").unwrap().partitions[0].committed, Some(1));
    // As is a push tail naming a partition twice.
    let events = subscribe(
        &serve,
        &(paths::record_events("ev") + "?partitions=0,0"),
        None,
    );
    assert_eq!(events.status, 400);

    // Deleted: gone, its commits too; a new group under the name starts over, and the old
    // member's epoch is fenced in it.
    admin.delete_group("q1").unwrap();
    let e = admin.group("q1").unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::UnknownGroup), "{e}");
    let e = admin.delete_group("q1").unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::UnknownGroup), "{e}");
    let again = reader.join_group("q1", &join("ev", "m")).unwrap();
    assert!(again.epoch > m.epoch, "{} after {}", again.epoch, m.epoch);
    assert!(again.assigned.iter().all(|p| p.from == 0), "{again:?}");
    let e = reader.commit_offsets("q1", "m", "c2", &commit).unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::MemberFenced), "{e}");

    // The CLI deletes a group without members; the deletion survives a restart.
    admin.leave_group("q3", "m3", 1).unwrap();
    let out = cli_ok(&serve, &["group", "delete", "q3"]);
    assert!(out.contains("deleted group q3"), "{out}");
    drop(serve);
    let serve = common::spawn_serve(data.path(), &[], &[("RUST_LOG", "warn")], Stdio::null());
    let names: Vec<String> = serve
        .client()
        .list_groups()
        .unwrap()
        .groups
        .into_iter()
        .map(|g| g.group)
        .collect();
    assert_eq!(names, ["q1"]);
}
