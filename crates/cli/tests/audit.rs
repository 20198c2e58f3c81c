//! Continuous audit through the real binary (issue 18): a byte flipped on disk in a sealed
//! segment of a running `logbook serve` is found by the background scrubber and named by
//! file and byte offset in `GET /v1/audit`, `/metrics`, `logbook audit status` and a
//! structured log line — counted once however many passes see it. The view auditor runs
//! on its schedule, compares the stored checkpoints too, and stays within its memory budget.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logbook_api::audit::AuditStatus;
use logbook_api::client::blocking::Client;
use logbook_api::paths;
use logbook_api::streams::{CreateStream, RecordIn};
use serde_json::{Value, json};

mod common;
use common::api::call;

/// Longest wait for the scrubber to report something (it scrubs once a second).
const SCRUB_WAIT: Duration = Duration::from_secs(60);

/// The segment files of partition 0 of `stream`, in offset order.
fn segments(data: &Path, stream: &str) -> Vec<PathBuf> {
    let dir = data.join("streams").join(stream).join("0");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn audit(client: &Client) -> AuditStatus {
    let (status, body) = call(client, "GET", &paths::audit(), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// Polls `GET /v1/audit` until `done` holds; panics after [`SCRUB_WAIT`].
fn audit_until(client: &Client, what: &str, done: impl Fn(&AuditStatus) -> bool) -> AuditStatus {
    let deadline = Instant::now() + SCRUB_WAIT;
    loop {
        let status = audit(client);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn the_scrubber_names_the_file_and_offset_of_a_byte_flipped_in_a_sealed_segment() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("serve.log");
    let stderr = Stdio::from(File::create(&log_path).unwrap());
    let serve = common::spawn_serve(
        &data.path().join("data"),
        &["--scrub-rate-mb-per-s", "1"],
        &[("RUST_LOG", "warn")],
        stderr,
    );
    let data_dir = data.path().join("data");
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(1),
        segment_bytes_max: Some(4096),
        ..CreateStream::default()
    };
    client.create_stream("s", &settings).unwrap();
    for i in 0..60 {
        let value = json!({"i": i, "pad": "x".repeat(200)});
        client
            .append("s", RecordIn::new(value).key(format!("k{i}")))
            .unwrap();
    }
    let files = segments(&data_dir, "s");
    assert!(
        files.len() >= 3,
        "the test needs sealed segments: {files:?}"
    );

    // Healthy first: at least one whole pass over the sealed segments finds nothing.
    let clean = audit_until(&client, "a clean pass", |s| s.scrubber.passes >= 2);
    assert_eq!(clean.scrubber.state, "running");
    assert_eq!(clean.scrubber.rate_mb_per_s, 1);
    assert_eq!(clean.scrubber.errors, 0, "{clean:?}");
    assert!(clean.scrubber.bytes_scrubbed > 0);

    // Flip one bit inside the first record of the first batch of the second segment (a
    // sealed one): the batch starts right after the 32-byte segment header.
    let damaged = &files[1];
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(damaged)
        .unwrap();
    let at = 32 + 40 + 30;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
    file.sync_all().unwrap();

    let found = audit_until(&client, "the damage", |s| s.scrubber.errors > 0);
    let f = &found.scrubber.findings;
    assert_eq!(f.len(), 1, "{found:?}");
    assert_eq!((f[0].stream.as_str(), f[0].partition), ("s", 0));
    assert_eq!(Path::new(&f[0].file), damaged.as_path());
    assert_eq!(
        f[0].file_offset, 32,
        "the damaged batch starts after the header"
    );
    assert!(f[0].reason.contains("checksum"), "{}", f[0].reason);

    // Seen again by later passes, still counted once.
    let passes = found.scrubber.passes;
    let later = audit_until(&client, "two more passes", |s| {
        s.scrubber.passes >= passes + 2
    });
    assert_eq!(later.scrubber.errors, 1, "{later:?}");
    assert_eq!(later.scrubber.findings, found.scrubber.findings);

    let (status, page) = call(&client, "GET", &paths::metrics(), None);
    assert_eq!(status, 200);
    let page = page.as_str().unwrap().to_string();
    assert_eq!(metric(&page, "logbook_scrub_errors_total"), 1);
    assert!(metric(&page, "logbook_scrub_bytes_total") >= later.scrubber.bytes_scrubbed);

    // The CLI prints the place and exits non-zero; --json prints the answer.
    let out = Command::new(common::BIN)
        .args(["audit", "status"])
        .envs(serve.cli_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let place = format!("{} at byte 32", damaged.display());
    assert!(stdout.contains(&place), "{stdout}");
    let out = Command::new(common::BIN)
        .args(["audit", "status", "--json"])
        .envs(serve.cli_env())
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["scrubber"]["findings"][0]["file_offset"], 32);

    // One structured log line for the finding, naming file and offset.
    drop(serve);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("scrubber: damaged batch"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("file_offset=32"), "{}", lines[0]);
    assert!(
        lines[0].contains(&damaged.display().to_string()),
        "{}",
        lines[0]
    );
}

#[test]
fn a_scrub_rate_of_zero_turns_the_scrubber_off_and_too_high_a_rate_is_refused_by_name() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(
        data.path(),
        &["--scrub-rate-mb-per-s", "0"],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let status = audit(&serve.client());
    assert_eq!(status.scrubber.state, "off");
    assert_eq!(status.scrubber.bytes_scrubbed, 0);
    drop(serve);

    let out = Command::new(common::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--scrub-rate-mb-per-s",
            "10001",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scrub_rate_mb_per_s"), "{stderr}");
}

#[test]
fn the_view_auditor_recomputes_each_view_on_its_schedule_and_reports_a_match() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(
        data.path(),
        &["--audit-interval-s", "1", "--scrub-rate-mb-per-s", "0"],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let client = serve.client();
    let settings = CreateStream {
        partitions: Some(2),
        ..CreateStream::default()
    };
    client.create_stream("orders", &settings).unwrap();
    let spec = json!({"source": "orders", "kind": "aggregate", "group_by": ["c"],
        "aggregates": {"n": {"fn": "count"}, "sum": {"fn": "sum", "field": "v"}}});
    client.create_view("by_c", &spec).unwrap();
    for i in 0..50 {
        let value = json!({"c": format!("c{}", i % 5), "v": i});
        client
            .append("orders", RecordIn::new(value).key(format!("o{i}")))
            .unwrap();
    }
    // An audit that saw all 50 records (the first may have run before they arrived).
    let status = audit_until(&client, "an audit of all 50 records", |s| {
        s.views.views.iter().any(|v| {
            v.last
                .as_ref()
                .is_some_and(|r| r.applied.values().sum::<u64>() == 50)
        })
    });
    assert_eq!(status.views.state, "running");
    assert_eq!(status.views.interval_s, 1);
    let v = &status.views.views[0];
    assert_eq!(v.view, "by_c");
    assert_eq!(v.mismatches, 0, "{v:?}");
    let last = v.last.as_ref().unwrap();
    assert_eq!(last.verdict, "match", "{last:?}");
    assert_eq!(last.live_digest, last.recomputed_digest);
    assert_eq!(last.live_digest.rows, 5);
    assert!(last.differences.is_empty());
    // The stored checkpoints — what a restart would load — were compared too.
    let checkpoint = last.checkpoint.as_ref().unwrap();
    assert_eq!(checkpoint.verdict, "match", "{checkpoint:?}");
    assert_eq!(checkpoint.stored_digest, checkpoint.recomputed_digest);
    assert!(checkpoint.notes.is_empty(), "{checkpoint:?}");
    assert_eq!(status.views.memory_bytes_max, 1 << 30, "the default budget");

    // The view's own status carries it too, and the metrics count it.
    let detail = client.view_status("by_c", false).unwrap();
    let audit = detail.audit.unwrap();
    assert_eq!(audit.view, "by_c");
    assert!(audit.audits >= 1);
    let (_, page) = call(&client, "GET", &paths::metrics(), None);
    let page = page.as_str().unwrap().to_string();
    assert!(
        page.lines()
            .any(|l| l.starts_with("logbook_view_audits_total{view=\"by_c\"}")),
        "{page}"
    );
    assert!(
        page.contains("logbook_view_audit_mismatches_total{view=\"by_c\"} 0"),
        "{page}"
    );

    // `logbook audit status` prints the verdict and exits 0.
    let out = Command::new(common::BIN)
        .args(["audit", "status"])
        .envs(serve.cli_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("by_c version 1: match"), "{stdout}");
    assert!(stdout.contains("stored checkpoints: match"), "{stdout}");
}

#[test]
fn a_view_audit_over_its_memory_budget_is_skipped_saying_so_and_a_zero_budget_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(
        data.path(),
        &[
            "--audit-interval-s",
            "1",
            "--scrub-rate-mb-per-s",
            "0",
            "--audit-memory-bytes-max",
            "1024",
        ],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let client = serve.client();
    client
        .create_stream("orders", &CreateStream::default())
        .unwrap();
    let spec = json!({"source": "orders", "kind": "table"});
    client.create_view("by_key", &spec).unwrap();
    for i in 0..100 {
        let value = json!({"v": i, "note": "x".repeat(40)});
        client
            .append("orders", RecordIn::new(value).key(format!("o{i}")))
            .unwrap();
    }
    // About 100 rows of ~150 bytes: more than 1,024 bytes, so every audit with the rows
    // stops, skipped, naming the budget (the first may have run before they arrived).
    let status = audit_until(&client, "an audit skipped for its memory budget", |s| {
        s.views
            .views
            .iter()
            .any(|v| v.last.as_ref().is_some_and(|r| r.verdict == "skipped"))
    });
    assert_eq!(status.views.memory_bytes_max, 1024);
    let v = &status.views.views[0];
    assert_eq!(v.mismatches, 0, "{v:?}");
    let note = v.last.as_ref().unwrap().note.clone().unwrap();
    assert!(note.contains("memory budget of 1024 bytes"), "{note}");

    // `logbook audit status` shows the budget and the note; a skip is no alarm (exit 0).
    let out = Command::new(common::BIN)
        .args(["audit", "status"])
        .envs(serve.cli_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("at most 1024 bytes each"), "{stdout}");
    assert!(stdout.contains("memory budget of 1024 bytes"), "{stdout}");
    drop(serve);

    let out = Command::new(common::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--audit-memory-bytes-max",
            "0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit_memory_bytes_max"), "{stderr}");
}

/// `bench http --audit` with its smallest parameters: every phase runs plain and audited,
/// each audited phase has its ratio to the plain one against the 0.9× budget, and the
/// report says what the auditors did (the figures depend on the machine, not checked).
#[test]
fn bench_http_audit_gives_each_phase_its_audited_over_plain_ratio_and_the_auditors_work() {
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "http",
            "--seconds",
            "1",
            "--no-pg",
            "--append-rates",
            "200",
            "--read-rates",
            "200",
            "--keys",
            "200",
            "--connections",
            "2",
            "--open-connections",
            "2",
            "--audit",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let audited = runs.iter().filter(|r| r["audited"] == true).count();
    assert_eq!(
        audited, 4,
        "appends and reads, closed and open loop: {report}"
    );
    assert_eq!(runs.len(), 2 * audited, "each phase plain and audited");
    let audit = &report["audit"];
    assert_eq!(audit["budget"], 0.9, "{audit}");
    let ratios = audit["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), audited, "{audit}");
    for r in ratios {
        assert!(
            r["achieved_audited_over_plain"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        assert!(r["within_budget"].is_boolean(), "{r}");
        assert!(r["p99_ms"]["audited"].is_number(), "{r}");
    }
    let work = audit["work"].as_array().unwrap();
    assert_eq!(work.len(), 1, "one audited server: {audit}");
    assert_eq!(work[0]["mismatches"], 0, "{audit}");
    for field in ["scrub_bytes", "audit_rounds", "audits"] {
        assert!(work[0][field].is_u64(), "{field}: {audit}");
    }
    assert_eq!(report["parameters"]["audit"]["audit_interval_s"], 1);
}
