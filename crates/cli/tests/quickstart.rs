//! `logbook quickstart` and `logbook import` end to end: the real binary on a free port,
//! checked over HTTP.
//!
//! The quickstart run twice on one data directory (the second appends and commits nothing
//! new), its three views against the same figures computed independently from the sample
//! CSV; imports of CSV and JSON Lines with keys; an import SIGKILLed mid-run and run again
//! (every line exactly once); bad files refused before anything is sent, naming the line and
//! the column or field; a server-side refusal naming the line and the server's problem.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{BIN, api};
use logbook_api::client::blocking::Client;
use logbook_api::paths;
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../samples/flights-2013-01.csv.gz"
);
/// Rows of the bundled sample.
const SAMPLE_ROWS: u64 = 27_004;

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("LOGBOOK_DATA_DIR")
        .env_remove("LOGBOOK_LISTEN")
        .env_remove("LOGBOOK_SERVER")
        .env_remove("LOGBOOK_QUICKSTART_EXIT")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
    cmd
}

fn run(args: &[&str]) -> Output {
    command(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "logbook {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "logbook {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A running `logbook serve` (SIGKILLed when dropped).
struct Node {
    _serve: common::Serve,
    client: Client,
    base: String,
    /// The data directory: client commands find the admin token there (`--data-dir`).
    data: String,
}

impl Node {
    fn start(data: &Path) -> Node {
        let serve = common::spawn_serve(data, &[], &[("RUST_LOG", "warn")], Stdio::null());
        let base = serve.base.clone();
        Node {
            client: serve.client(),
            _serve: serve,
            base,
            data: data.to_str().unwrap().to_string(),
        }
    }

    fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        api::send(&self.client, api::request("GET", path, None)).ok()
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.try_get(path).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn put(&self, path: &str, body: Value) {
        let (status, answer) = api::call(&self.client, "PUT", path, Some(&body));
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {answer}"
        );
    }

    /// Every record of a stream, all partitions.
    fn records(&self, stream: &str) -> Vec<Value> {
        let info = self.get(&paths::stream(stream));
        let mut all = Vec::new();
        for p in info["offsets"].as_array().unwrap() {
            let (partition, mut from) = (p["partition"].as_u64().unwrap(), 0);
            loop {
                let page = self.get(&format!(
                    "{}?partition={partition}&from={from}&limit=1000",
                    paths::records(stream)
                ));
                let records = page["records"].as_array().unwrap();
                if records.is_empty() {
                    break;
                }
                all.extend(records.iter().cloned());
                from = page["next"].as_u64().unwrap();
            }
        }
        all
    }
}

fn quickstart(data: &Path, json: bool) -> String {
    let mut args = vec![
        "quickstart",
        "--exit",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    ok(&args)
}

/// The sample's rows as maps of column → text.
fn sample_rows() -> Vec<BTreeMap<String, String>> {
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(SAMPLE).unwrap());
    let mut csv = csv::Reader::from_reader(gz);
    let headers = csv.headers().unwrap().clone();
    csv.records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn the_quickstart_twice_appends_nothing_new_and_its_views_match_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let first: Value = serde_json::from_str(&quickstart(&data, true)).unwrap();
    assert_eq!(first["import"]["records"], SAMPLE_ROWS);
    assert_eq!(first["import"]["appended"], SAMPLE_ROWS);
    assert_eq!(first["import"]["duplicates"], 0);
    let txns = first["transactions"].as_array().unwrap();
    assert_eq!(txns.len(), 3);
    assert!(txns.iter().all(|t| t["duplicate"] == false), "{txns:?}");
    // 2 + 1 seats booked, then one added by the read-modify-write.
    assert_eq!(first["seats_booked"], 4);
    for v in first["views"].as_array().unwrap() {
        assert_eq!(v["applied"], SAMPLE_ROWS, "{v}");
        assert_eq!(v["created"], true, "{v}");
    }
    assert!(first["view_reads"]["latency_us"]["p99"].as_u64().unwrap() > 0);

    // The second run, as a newcomer sees it: nothing new, and it says so.
    let second = quickstart(&data, false);
    assert!(second.contains("0 appended, 27,004 duplicates"), "{second}");
    assert!(
        second.contains("0 of 3 transactions committed now"),
        "{second}"
    );
    assert!(second.contains("curl -s http://127.0.0.1:"), "{second}");
    // The stream existed: the header says so, with its real partitions; and --exit's server
    // is gone, so the curl lines say to start one.
    assert!(
        second.contains("(4 partitions, it already existed"),
        "{second}"
    );
    assert!(
        second.contains("the server has shut down (--exit)"),
        "{second}"
    );
    assert!(
        second.contains("samples/flights-2013-01.csv.gz"),
        "{second}"
    );
    let more = ok(&[
        "quickstart",
        "--exit",
        "--partitions",
        "8",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        more.contains(
            "(4 partitions: it already existed, --partitions 8 applies only when it is created"
        ),
        "{more}"
    );

    let node = Node::start(&data);
    let stream = node.get(&paths::stream("flights"));
    assert_eq!(stream["records"], SAMPLE_ROWS);
    assert_eq!(stream["partitions"], 4);
    let seats = node.get(&paths::kv_key("seats:2013-1-1|UA|1545|EWR"));
    assert_eq!(seats["value"], 4);
    let booking = node.get(&paths::kv_key("booking:quickstart-1"));
    assert_eq!(booking["value"]["seats"], 3);

    // The views against an independent computation from the CSV.
    let rows = sample_rows();
    let mut delays: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_tail: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        *per_day
            .entry(format!(
                "{}|{}|{}|{}",
                r["origin"], r["year"], r["month"], r["day"]
            ))
            .or_default() += 1;
        if r["tailnum"] != "NA" {
            by_tail.entry(&r["tailnum"]).or_default().insert(format!(
                "{}-{}-{}|{}|{}|{}",
                r["year"], r["month"], r["day"], r["carrier"], r["flight"], r["origin"]
            ));
        }
        if r["dep_delay"] != "NA" {
            let d: i64 = r["dep_delay"].parse().unwrap();
            let e = delays.entry(&r["carrier"]).or_insert((0, 0, i64::MIN));
            e.0 += 1;
            e.1 += d;
            e.2 = e.2.max(d);
        }
    }
    for (carrier, (n, sum, max)) in &delays {
        let row = node.get(&paths::view_row("delay_by_carrier", carrier));
        assert_eq!(row["value"]["flights"], *n, "{carrier}");
        assert_eq!(row["value"]["max_dep_delay"], *max, "{carrier}");
        let avg = row["value"]["avg_dep_delay"].as_f64().unwrap();
        assert!(
            (avg - *sum as f64 / *n as f64).abs() < 1e-9,
            "{carrier}: {avg}"
        );
    }
    let carriers = node.get(&format!(
        "{}?limit=1000",
        paths::view_rows("delay_by_carrier")
    ));
    assert_eq!(carriers["rows"].as_array().unwrap().len(), delays.len());

    let days = node.get(&format!(
        "{}?limit=10000",
        paths::view_rows("departures_by_origin_day")
    ));
    let got: BTreeMap<String, u64> = days["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["value"]["departures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, per_day);

    // A few aircraft: the busiest, the first flight's, and one with a single flight.
    let busiest = by_tail.iter().max_by_key(|(_, k)| k.len()).unwrap().0;
    let single = by_tail.iter().find(|(_, k)| k.len() == 1).unwrap().0;
    for tail in [*busiest, "N14228", *single] {
        let row = node.get(&paths::view_row("flights_by_tailnum", tail));
        let keys: BTreeSet<String> = row["value"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&keys, &by_tail[tail], "{tail}");
    }
}

#[test]
fn the_quickstart_names_the_flag_when_its_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = fails(&[
        "quickstart",
        "--exit",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(stderr.contains("address is in use"), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

/// Imports `file` into `stream`; the `--json` report.
fn import(node: &Node, stream: &str, file: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "import",
        stream,
        file.to_str().unwrap(),
        "--server",
        &node.base,
        "--data-dir",
        &node.data,
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

fn keys_and_values(records: &[Value]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect()
}

#[test]
fn csv_and_json_lines_import_with_keys_and_typed_values() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));

    let csv = dir.path().join("delays.csv");
    std::fs::write(
        &csv,
        "carrier,flight,dep_delay,ratio,tailnum\n\
         UA,1545,2,0.5,N14228\n\
         AA,1141,NA,,N619AA\n\
         \"B,6\",725,-1,1e2,007\n",
    )
    .unwrap();
    let report = import(
        &node,
        "delays",
        &csv,
        &["--key", "carrier,flight", "--create-partitions", "2"],
    );
    assert_eq!(report["records"], 3);
    assert_eq!(report["appended"], 3);
    assert_eq!(report["created_stream"], true);
    let got = keys_and_values(&node.records("delays"));
    assert_eq!(
        got,
        BTreeMap::from([
            (
                "UA|1545".to_string(),
                json!({"carrier": "UA", "flight": 1545, "dep_delay": 2, "ratio": 0.5, "tailnum": "N14228"})
            ),
            (
                "AA|1141".to_string(),
                json!({"carrier": "AA", "flight": 1141, "dep_delay": null, "ratio": null, "tailnum": "N619AA"})
            ),
            (
                "B,6|725".to_string(),
                // Stored canonical: 1e2 is the number 100.
                json!({"carrier": "B,6", "flight": 725, "dep_delay": -1, "ratio": 100, "tailnum": "007"})
            ),
        ])
    );
    assert_eq!(node.get(&paths::stream("delays"))["partitions"], 2);

    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(
        &jsonl,
        "{\"user\":{\"id\":7},\"event\":\"login\"}\n\n{\"user\":{\"id\":\"x\"},\"event\":\"logout\"}\n",
    )
    .unwrap();
    let report = import(
        &node,
        "events",
        &jsonl,
        &["--key", "user.id", "--create-partitions", "1"],
    );
    assert_eq!(report["appended"], 2);
    let records = node.records("events");
    let got = keys_and_values(&records);
    assert_eq!(got["7"], json!({"user": {"id": 7}, "event": "login"}));
    assert_eq!(got["x"], json!({"user": {"id": "x"}, "event": "logout"}));
    // Request ids name the file and the line (the blank line 2 is skipped).
    let prefix = report["request_id_prefix"].as_str().unwrap();
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|r| r["headers"]["request-id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            format!("{prefix}:1").as_str(),
            format!("{prefix}:3").as_str()
        ])
    );

    // Again: nothing appended.
    let again = import(&node, "events", &jsonl, &["--key", "user.id"]);
    assert_eq!(again["appended"], 0);
    assert_eq!(again["duplicates"], 2);
    assert_eq!(node.records("events").len(), 2);
}

#[test]
fn an_interrupted_import_run_again_leaves_every_line_exactly_once() {
    const ROWS: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.put(&paths::stream("big"), json!({"partitions": 4}));
    let file = dir.path().join("big.csv");
    let mut text = String::from("id,n\n");
    for i in 0..ROWS {
        text.push_str(&format!("{i},{}\n", i * 7));
    }
    std::fs::write(&file, text).unwrap();

    // One request in flight makes the first run slow enough to be killed partway.
    let mut child = command(&[
        "import",
        "big",
        file.to_str().unwrap(),
        "--key",
        "id",
        "--in-flight",
        "1",
        "--server",
        &node.base,
        "--data-dir",
        &node.data,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = node.get(&paths::stream("big"))["records"].as_u64().unwrap();
        if records >= 200 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the import made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = node.get(&paths::stream("big"))["records"].as_u64().unwrap();
    assert!(before >= 200, "{before}");

    let report = import(&node, "big", &file, &["--key", "id"]);
    assert_eq!(report["records"], ROWS);
    assert_eq!(
        report["appended"].as_u64().unwrap() + report["duplicates"].as_u64().unwrap(),
        ROWS
    );
    assert!(report["duplicates"].as_u64().unwrap() >= before, "{report}");

    let records = node.records("big");
    assert_eq!(records.len() as u64, ROWS);
    let mut seen = BTreeSet::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        let id: u64 = key.parse().unwrap();
        assert_eq!(r["value"], json!({"id": id, "n": id * 7}));
        assert!(seen.insert(key), "{r} appended twice");
    }
}

#[test]
fn bad_files_are_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let base = node.base.clone();

    // A key column the header does not have: the stream is not even created.
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "carrier,flight\nUA,1\nAA,2\n").unwrap();
    let stderr = fails(&[
        "import",
        "fresh",
        csv.to_str().unwrap(),
        "--key",
        "tailnum",
        "--create-partitions",
        "1",
        "--server",
        &base,
        "--data-dir",
        &node.data,
    ]);
    assert!(
        stderr.contains("line 1: no column `tailnum` for --key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the header has: carrier, flight"),
        "{stderr}"
    );
    assert_eq!(node.try_get(&paths::stream("fresh")).unwrap().0, 404);

    // A malformed JSON line after good ones: nothing is appended.
    node.put(&paths::stream("ev"), json!({"partitions": 1}));
    let jsonl = dir.path().join("e.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\":1}\n{\"id\":2}\n{\"id\": 3,,}\n{\"id\":4}\n",
    )
    .unwrap();
    let stderr = fails(&[
        "import",
        "ev",
        jsonl.to_str().unwrap(),
        "--key",
        "id",
        "--server",
        &base,
        "--data-dir",
        &node.data,
    ]);
    assert!(
        stderr.contains("e.jsonl: line 3, column 10: not valid JSON"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");

    // A key field missing on one line.
    std::fs::write(&jsonl, "{\"id\":1}\n{\"name\":2}\n").unwrap();
    let stderr = fails(&[
        "import",
        "ev",
        jsonl.to_str().unwrap(),
        "--key",
        "id",
        "--server",
        &base,
        "--data-dir",
        &node.data,
    ]);
    assert!(
        stderr.contains("line 2, field `id` (--key) is missing"),
        "{stderr}"
    );
    assert_eq!(node.get(&paths::stream("ev"))["records"], 0);

    // A stream that does not exist, without --create-partitions.
    let stderr = fails(&[
        "import",
        "nope",
        csv.to_str().unwrap(),
        "--server",
        &base,
        "--data-dir",
        &node.data,
    ]);
    assert!(stderr.contains("--create-partitions"), "{stderr}");

    // No server there.
    let stderr = fails(&[
        "import",
        "ev",
        csv.to_str().unwrap(),
        "--server",
        "http://127.0.0.1:9",
    ]);
    assert!(stderr.contains("logbook serve"), "{stderr}");
}

#[test]
fn a_record_the_server_refuses_stops_the_import_naming_the_line_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.put(&paths::stream("s"), json!({"partitions": 1}));
    let csv: PathBuf = dir.path().join("s.csv");
    std::fs::write(&csv, "a,b\n1,x\n2,y\n").unwrap();
    import(&node, "s", &csv, &["--key", "a"]);
    // The same file with another key: its request ids now stand for other records.
    let stderr = fails(&[
        "import",
        "s",
        csv.to_str().unwrap(),
        "--key",
        "b",
        "--in-flight",
        "1",
        "--server",
        &node.base,
        "--data-dir",
        &node.data,
    ]);
    assert!(stderr.contains("s.csv: line 2"), "{stderr}");
    assert!(stderr.contains("request_id_conflict (409)"), "{stderr}");
    assert!(
        stderr.contains("imported into this stream before with other settings"),
        "{stderr}"
    );
    assert_eq!(node.get(&paths::stream("s"))["records"], 2);
}

#[test]
fn other_records_under_the_sample_ids_are_reported_and_fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // A stream `flights` whose line-2 request id stands for another record (as an older
        // quickstart, which stored the flights' members in CSV order, would have left it).
        let node = Node::start(&data);
        node.put(&paths::stream("flights"), json!({"partitions": 4}));
        // The identity is the decompressed content's hash.
        let mut content = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(SAMPLE).unwrap()),
            &mut content,
        )
        .unwrap();
        let hash = xxhash_rust::xxh3::xxh3_64(&content);
        let record = json!({"key": "other", "value": {"not": "a flight"}});
        let request = api::request("POST", &paths::records("flights"), Some(&record))
            .request_id(Some(&format!("import:{hash:016x}:2")));
        let (status, answer) = api::send(&node.client, request).unwrap();
        assert_eq!(status, 201, "{answer}");
    }
    let stderr = fails(&[
        "quickstart",
        "--exit",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(stderr.contains("request_id_conflict"), "{stderr}");
    assert!(stderr.contains("logbook quickstart --fresh"), "{stderr}");

    let out = ok(&[
        "quickstart",
        "--exit",
        "--fresh",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["fresh"], true);
    assert_eq!(report["import"]["appended"], SAMPLE_ROWS);
    assert_eq!(report["import"]["duplicates"], 0);
}

#[test]
fn stream_level_mistakes_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let csv: PathBuf = dir.path().join("s.csv");
    std::fs::write(&csv, "id,b\n1,x\n").unwrap();
    let file = csv.to_str().unwrap();
    // No server listens on port 9: each of these must fail before any request.
    let server = ["--server", "http://127.0.0.1:9"];
    let with = |extra: &[&str]| {
        let mut args = vec!["import"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&server);
        fails(&args)
    };
    let e = with(&["_txn", file]);
    assert!(e.contains("names starting with `_` are reserved"), "{e}");
    let e = with(&["s", file, "--create-partitions", "300"]);
    assert!(
        e.contains("--create-partitions 300: must be 1 to 256"),
        "{e}"
    );
    let e = with(&["s", file, "--key", "id,id"]);
    assert!(e.contains("--key: `id` is named twice"), "{e}");
    for n in ["0", "2000"] {
        let e = with(&["s", file, "--in-flight", n]);
        assert!(e.contains("--in-flight") && e.contains("1..=1024"), "{e}");
        let e = fails(&["quickstart", "--in-flight", n]);
        assert!(e.contains("--in-flight") && e.contains("1..=1024"), "{e}");
    }
}

#[test]
fn the_same_content_gzipped_or_with_a_bom_is_the_same_import() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let text = "{\"id\":1,\"v\":\"a\"}\n{\"id\":2,\"v\":\"b\"}\n";
    let plain: PathBuf = dir.path().join("e.jsonl");
    std::fs::write(&plain, text).unwrap();
    let first = import(
        &node,
        "e",
        &plain,
        &["--key", "id", "--create-partitions", "2"],
    );
    assert_eq!(first["appended"], 2);
    // Gzipped twice with different timestamps: other bytes, the same content.
    for mtime in [1, 2] {
        let gz: PathBuf = dir.path().join(format!("e{mtime}.jsonl.gz"));
        let mut enc = flate2::GzBuilder::new().mtime(mtime).write(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let again = import(&node, "e", &gz, &["--key", "id"]);
        assert_eq!(again["appended"], 0, "{again}");
        assert_eq!(again["duplicates"], 2, "{again}");
        assert_eq!(again["request_id_prefix"], first["request_id_prefix"]);
    }
    // A UTF-8 byte order mark on line 1 is skipped.
    let bom: PathBuf = dir.path().join("bom.jsonl");
    std::fs::write(&bom, "\u{feff}{\"id\":3}\n{\"id\":4}\n").unwrap();
    let r = import(&node, "e", &bom, &["--key", "id"]);
    assert_eq!(r["appended"], 2, "{r}");
    assert_eq!(node.get(&paths::stream("e"))["records"], 4);
}

#[test]
fn import_json_prints_the_problem_document_and_fitting_advice() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    node.put(&paths::stream("s"), json!({"partitions": 1}));
    let csv: PathBuf = dir.path().join("s.csv");
    std::fs::write(&csv, "a,b\n1,x\n").unwrap();
    import(&node, "s", &csv, &["--key", "a"]);
    let args = [
        "import",
        "s",
        csv.to_str().unwrap(),
        "--key",
        "b",
        "--server",
        &node.base,
        "--data-dir",
        &node.data,
    ];
    let stderr = fails(&args);
    assert!(stderr.contains("Import into a new stream"), "{stderr}");
    assert!(!stderr.contains("appends none of them twice"), "{stderr}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let stderr = fails(&json_args);
    let problem: Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(problem["code"], "request_id_conflict", "{problem}");
}
