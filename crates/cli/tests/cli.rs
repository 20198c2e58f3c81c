//! The `logbook` binary end to end: `log append` streaming stdin and its errors, read-only
//! commands that must not create a data directory, trace context and header checks, the
//! spread of unkeyed appends over partitions. (The quickstart's tests are in `quickstart.rs`.)
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_logbook");
/// `limits::RECORD_BYTES_MAX`.
const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// `limits::BATCH_BYTES_MAX`.
const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("LOGBOOK_DATA_DIR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
    cmd
}

/// Runs `logbook args...` with `stdin` as its input (written from another thread, so a
/// large input cannot deadlock against a full stdout pipe).
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may stop reading early (that is what some tests check).
        let _ = input.write_all(&bytes);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn ok(args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "logbook {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns (stdout, stderr).
fn fails(args: &[&str], stdin: &[u8]) -> (String, String) {
    let out = run(args, stdin);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success(),
        "logbook {args:?} succeeded: {stdout}"
    );
    (stdout, stderr)
}

fn create_stream(dir: &Path, stream: &str, partitions: u32) {
    ok(
        &[
            "log",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            stream,
            "--partitions",
            &partitions.to_string(),
        ],
        b"",
    );
}

/// Every record of one partition as JSON.
fn read_partition(dir: &Path, stream: &str, partition: u32) -> Vec<serde_json::Value> {
    ok(
        &[
            "log",
            "read",
            "--data-dir",
            dir.to_str().unwrap(),
            stream,
            "--partition",
            &partition.to_string(),
            "--limit",
            "1000000",
        ],
        b"",
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn positions(stdout: &str) -> Vec<(u64, u64)> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["partition"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn append_prints_each_position_while_stdin_is_still_open() {
    let dir = tempfile::tempdir().unwrap();
    create_stream(dir.path(), "s", 1);
    let mut child: Child = command(&[
        "log",
        "append",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "s",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    for (i, value) in ["one", "two", "three"].into_iter().enumerate() {
        writeln!(stdin, "{value}").unwrap();
        stdin.flush().unwrap();
        // stdin stays open: the position must come anyway, once the record is durable.
        let line = printed
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("no position printed for line {} while stdin is open", i + 1)
            });
        assert_eq!(positions(&line), vec![(0, i as u64)]);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let values: Vec<_> = read_partition(dir.path(), "s", 0)
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["one", "two", "three"]);
}

#[test]
fn a_bad_line_stops_append_after_every_earlier_line_is_appended_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 1);
    // A line longer than any record: refused while it is read, without holding all of it.
    let mut input = b"a\r\nb\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 2 * RECORD_BYTES_MAX));
    input.extend(b"\nc\n");
    let (stdout, stderr) = fails(&["log", "append", "--data-dir", d, "s"], &input);
    assert_eq!(positions(&stdout), vec![(0, 0), (0, 1)], "{stderr}");
    assert!(
        stderr.contains("line 3 is longer than 1048576 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("lines 1 to 2 were appended"), "{stderr}");
    assert!(!stderr.contains("record 0"), "{stderr}");
    // A line that fits but whose record, framing included, does not.
    let mut input = b"d\n".to_vec();
    input.extend(std::iter::repeat_n(b'y', RECORD_BYTES_MAX - 4));
    input.extend(b"\ne\n");
    let (stdout, stderr) = fails(&["log", "append", "--data-dir", d, "s"], &input);
    assert_eq!(positions(&stdout), vec![(0, 2)], "{stderr}");
    assert!(
        stderr.contains("line 2: the record is") && stderr.contains("the limit is 1048576 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("record 0"), "{stderr}");
    // A bad first line appends nothing.
    let (stdout, stderr) = fails(&["log", "append", "--data-dir", d, "s"], b"\xff\nz\n");
    assert!(stdout.is_empty());
    assert!(stderr.contains("line 1 is not valid UTF-8"), "{stderr}");
    assert!(stderr.contains("nothing was appended"), "{stderr}");
    let values: Vec<_> = read_partition(dir.path(), "s", 0)
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["a", "b", "d"]);
}

#[test]
fn append_help_says_how_stdin_is_read_and_what_a_bad_line_leaves() {
    let help = ok(&["log", "append", "--help"], b"");
    assert!(help.contains("line number"), "{help}");
    assert!(
        help.contains("every line before it has been appended"),
        "{help}"
    );
    assert!(help.contains("256 appends in flight"), "{help}");
}

#[test]
fn append_with_a_request_id_checks_every_line_and_appends_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 2);
    let mut input = b"a\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', RECORD_BYTES_MAX - 4));
    input.extend(b"\nc\n");
    let (stdout, stderr) = fails(
        &["log", "append", "--data-dir", d, "s", "--request-id", "r1"],
        &input,
    );
    assert!(stdout.is_empty());
    assert!(stderr.contains("line 2: the record is"), "{stderr}");
    assert!(stderr.contains("nothing was appended"), "{stderr}");
    assert!(!stderr.contains("record 1"), "{stderr}");
    // Too many lines for one batch.
    let many = "v\n".repeat(100_001);
    let (_, stderr) = fails(
        &["log", "append", "--data-dir", d, "s", "--request-id", "r2"],
        many.as_bytes(),
    );
    assert!(stderr.contains("100000"), "{stderr}");
    assert!(stderr.contains("nothing was appended"), "{stderr}");
    for p in 0..2 {
        assert!(read_partition(dir.path(), "s", p).is_empty());
    }
    // The request then works, once.
    let out = ok(
        &["log", "append", "--data-dir", d, "s", "--request-id", "r3"],
        b"a\nb\n",
    );
    assert_eq!(out.lines().count(), 2);
    assert!(out.contains(r#""duplicate":false"#), "{out}");
}

#[test]
fn append_with_a_request_id_stops_reading_once_the_batch_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 1);
    let mut child = command(&["log", "append", "--data-dir", d, "s", "--request-id", "big"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Far more than one batch may hold; the command must give up after about 16 MiB
    // instead of reading (and holding) it all.
    let cap = 4 * BATCH_BYTES_MAX;
    let writer = std::thread::spawn(move || {
        let line = format!("{}\n", "z".repeat(999));
        let mut written = 0;
        while written < cap {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
            written += line.len();
        }
        written
    });
    let output = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("16777216"), "{stderr}");
    assert!(stderr.contains("nothing was appended"), "{stderr}");
    assert!(
        written < 2 * BATCH_BYTES_MAX,
        "the command read {written} bytes of stdin before refusing"
    );
    assert!(read_partition(dir.path(), "s", 0).is_empty());
}

#[test]
fn read_only_commands_do_not_create_a_missing_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let t = typo.to_str().unwrap();
    for args in [
        vec!["log", "read", "--data-dir", t, "s"],
        vec!["log", "list", "--data-dir", t],
        vec!["log", "append", "--data-dir", t, "s", "v"],
        vec!["log", "verify", "--data-dir", t],
    ] {
        let (_, stderr) = fails(&args, b"");
        assert!(
            stderr.contains("no Logbook data directory at"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("LOCK"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created {t}");
    }
    // An existing directory that holds no log is not made into one either.
    std::fs::create_dir(&typo).unwrap();
    for args in [
        vec!["log", "list", "--data-dir", t],
        vec!["log", "verify", "--data-dir", t],
    ] {
        let (_, stderr) = fails(&args, b"");
        assert!(
            stderr.contains("no Logbook data directory at"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(&typo).unwrap().count(), 0);
    // `log create` does create it (parents too), and then the others open it.
    let nested = dir.path().join("new/data");
    create_stream(&nested, "s", 1);
    let n = nested.to_str().unwrap();
    ok(&["log", "append", "--data-dir", n, "s", "v"], b"");
    assert!(ok(&["log", "list", "--data-dir", n], b"").contains('s'));
    assert!(ok(&["log", "verify", "--data-dir", n], b"").contains("0 problem(s)"));
}

#[test]
fn a_file_in_place_of_the_data_directory_is_reported_as_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a log").unwrap();
    let f = file.to_str().unwrap();
    for args in [
        vec!["log", "create", "--data-dir", f, "s"],
        vec!["log", "list", "--data-dir", f],
        vec!["log", "verify", "--data-dir", f],
    ] {
        let (_, stderr) = fails(&args, b"");
        assert!(stderr.contains("is not a directory"), "{args:?}: {stderr}");
        assert!(!stderr.contains("File exists"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a log");
}

#[test]
fn traceparent_must_be_a_w3c_trace_context() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 1);
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let (_, stderr) = fails(
            &[
                "log",
                "append",
                "--data-dir",
                d,
                "s",
                "v",
                "--request-id",
                "r",
                "--traceparent",
                bad,
            ],
            b"",
        );
        assert!(stderr.contains("invalid traceparent"), "{bad}: {stderr}");
    }
    assert!(read_partition(dir.path(), "s", 0).is_empty());
    ok(
        &[
            "log",
            "append",
            "--data-dir",
            d,
            "s",
            "v",
            "--request-id",
            "r",
            "--traceparent",
            TRACEPARENT,
        ],
        b"",
    );
    let records = read_partition(dir.path(), "s", 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["headers"]["traceparent"], TRACEPARENT);
}

#[test]
fn a_header_needs_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 1);
    let out = run(
        &["log", "append", "--data-dir", d, "s", "v", "--header", "=v"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty name"));
    ok(
        &["log", "append", "--data-dir", d, "s", "v", "--header", "n="],
        b"",
    );
    assert!(read_partition(dir.path(), "s", 0)[0]["headers"]["n"] == "");
}

#[test]
fn unkeyed_appends_from_separate_processes_spread_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    create_stream(dir.path(), "s", 4);
    let mut used = std::collections::BTreeSet::new();
    for i in 0..16 {
        let out = ok(
            &["log", "append", "--data-dir", d, "s", &format!("v{i}")],
            b"",
        );
        used.insert(positions(&out)[0].0);
    }
    // Starting at partition 0 in every process put all 16 in partition 0.
    assert!(
        used.len() >= 2,
        "every process appended to partitions {used:?}"
    );
}
