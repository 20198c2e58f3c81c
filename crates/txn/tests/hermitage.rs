//! Hermitage: the classic isolation anomalies as script tests, each run at all three levels.
//!
//! Every file in `tests/scripts/` is one schedule of interleaved transactions with the
//! expected output of each step beside it. The runner executes the script once per level
//! (`read_committed`, `snapshot`, `serializable`), each on a fresh store in a temp dir, and
//! compares every output. It then checks the level's verdict against the matrix of
//! docs/DESIGN.md ("Transactions"), written down once in [`MATRIX`] below:
//!
//! | level | prevents |
//! | --- | --- |
//! | `read_committed` | G0, G1a, G1b, G1c |
//! | `snapshot` | + OTV, PMP (PMP-write), P4, G-single (all four variants) |
//! | `serializable` | + G2-item, G2 (phantoms), G2-two-edges |
//!
//! ## Script format
//!
//! ```text
//! # comment
//! anomaly: G-single            the anomaly this schedule provokes (must match MATRIX)
//! setup x=10 y=20              commit these values before anything else
//! T1: begin                    begin at the level of the run
//! T3: begin read_only          ... declared read-only
//! T1: get x -> 10              read in T1; expect 10 (`absent` for no value)
//! T1: get_for_update x -> 10   a read that conflicts like a write
//! T1: scan item: -> item:1=10 item:2=20     prefix scan (`empty` for no rows)
//! T1: scan a..c -> ...         range scan, start inclusive, end exclusive
//! T1: put x 11 | delete x | increment x 5 | abort
//! T1: commit -> ok             or `serialization_failure` (any error prints its code)
//! get x -> 12                  latest committed value, outside any transaction
//! scan item: -> ...            ... and rows
//! ```
//!
//! An expectation is `-> DEFAULT` optionally followed by `; LEVEL[, LEVEL]: VALUE` for the
//! levels where the output differs, and `; LEVEL one-shot: VALUE` where it differs in the
//! runs in which T1 is a one-shot transaction.
//!
//! Each script runs in three forms: every transaction interactive; every read-write one
//! in the one-round-trip form (reads at a snapshot, one self-contained commit request —
//! [`common::oneshot`]); and mixed (odd-numbered one-shot). Declared read-only
//! transactions stay interactive. A value ending in `*` is the **witness** of the
//! anomaly: if a level's run produces a starred value, the anomaly was *observed* at that
//! level; otherwise it was *prevented* — by reading the right values or by aborting a
//! transaction (`serialization_failure` at commit counts as prevention). Writes without
//! `->` must succeed.
//!
//! Writes are buffered until commit, so there are no dirty writes or reads, and nothing
//! blocks: where PostgreSQL would make a transaction wait for a row lock, ours proceed and
//! the later committer aborts. Schedules are therefore written in our own words, not as
//! copies of the Hermitage ones (which rely on blocking).

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use logbook_txn::{Isolation, KeyRange, TxnOptions, TxnStore, TxnStoreOptions};

mod common;
use common::oneshot::Handle;

/// How a run's transactions talk to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Every transaction interactive.
    Interactive,
    /// Every read-write transaction in the one-round-trip form (reads at a snapshot, one
    /// self-contained commit request).
    OneShot,
    /// T1, T3, ... one-shot; T2, T4, ... interactive.
    Mixed,
}

const FORMS: [Form; 3] = [Form::Interactive, Form::OneShot, Form::Mixed];

impl Form {
    fn one_shot(self, txn: &str) -> bool {
        match self {
            Form::Interactive => false,
            Form::OneShot => true,
            Form::Mixed => txn
                .trim_start_matches('T')
                .parse::<u32>()
                .is_ok_and(|n| n % 2 == 1),
        }
    }
}

const LEVELS: [Isolation; 3] = [
    Isolation::ReadCommitted,
    Isolation::Snapshot,
    Isolation::Serializable,
];

/// What a level does with an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The anomaly cannot be observed (values are consistent, or a transaction aborted).
    Prevented,
    /// The schedule shows the anomaly (a starred value was produced).
    Observed,
}
use Verdict::{Observed, Prevented};

/// The docs/DESIGN.md matrix per script: file stem, the anomaly it provokes, and the verdict
/// at `read_committed`, `snapshot`, `serializable`.
const MATRIX: &[(&str, &str, [Verdict; 3])] = &[
    ("g0", "G0", [Prevented, Prevented, Prevented]),
    ("g1a", "G1a", [Prevented, Prevented, Prevented]),
    ("g1b", "G1b", [Prevented, Prevented, Prevented]),
    ("g1c", "G1c", [Prevented, Prevented, Prevented]),
    ("otv", "OTV", [Observed, Prevented, Prevented]),
    ("pmp", "PMP", [Observed, Prevented, Prevented]),
    ("pmp-write", "PMP-write", [Observed, Prevented, Prevented]),
    ("p4", "P4", [Observed, Prevented, Prevented]),
    (
        "p4-get-for-update",
        "P4 with get_for_update",
        [Prevented, Prevented, Prevented],
    ),
    (
        "p4-increment",
        "P4 with increment",
        [Prevented, Prevented, Prevented],
    ),
    ("g-single", "G-single", [Observed, Prevented, Prevented]),
    (
        "g-single-dependencies",
        "G-single-dependencies",
        [Observed, Prevented, Prevented],
    ),
    (
        "g-single-write-1",
        "G-single-write-1",
        [Observed, Prevented, Prevented],
    ),
    (
        "g-single-write-2",
        "G-single-write-2",
        [Observed, Prevented, Prevented],
    ),
    ("g2-item", "G2-item", [Observed, Observed, Prevented]),
    ("g2", "G2", [Observed, Observed, Prevented]),
    (
        "g2-two-edges",
        "G2-two-edges",
        [Observed, Observed, Prevented],
    ),
    (
        "g2-two-edges-read-only",
        "G2-two-edges with a read-only reader",
        [Observed, Observed, Prevented],
    ),
];

/// The anomalies issue 4 asks for; each must have a script.
const REQUIRED: &[&str] = &[
    "G0",
    "G1a",
    "G1b",
    "G1c",
    "OTV",
    "PMP",
    "PMP-write",
    "P4",
    "G-single",
    "G-single-dependencies",
    "G-single-write-1",
    "G-single-write-2",
    "G2-item",
    "G2",
    "G2-two-edges",
];

// ---- the script language ----

#[derive(Debug, Clone)]
enum Op {
    Begin { read_only: bool },
    Get(String),
    GetForUpdate(String),
    Scan(String),
    Put(String, String),
    Delete(String),
    Increment(String, i64),
    Commit,
    Abort,
}

#[derive(Debug, Clone)]
struct Expected {
    text: String,
    witness: bool,
}

#[derive(Debug, Clone)]
struct Expectation {
    default: Expected,
    /// `(level, only where T1 is one-shot, value)`.
    per_level: Vec<(Isolation, bool, Expected)>,
}

impl Expectation {
    fn at(&self, level: Isolation, form: Form) -> &Expected {
        let one_shot = form.one_shot("T1");
        let find = |want_one_shot: bool| {
            self.per_level
                .iter()
                .rev()
                .find(|(l, o, _)| *l == level && *o == want_one_shot)
        };
        one_shot
            .then(|| find(true))
            .flatten()
            .or_else(|| find(false))
            .map_or(&self.default, |(_, _, e)| e)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Setup(Vec<(String, String)>),
    /// A transaction operation (`txn` is `Some`) or a read outside transactions.
    Op {
        txn: Option<String>,
        op: Op,
        expect: Option<Expectation>,
    },
}

#[derive(Debug)]
struct Script {
    anomaly: String,
    /// (line number, source line, step)
    steps: Vec<(usize, String, Step)>,
}

fn parse_expected(s: &str) -> Expected {
    let s = s.trim();
    match s.strip_suffix('*') {
        Some(t) => Expected {
            text: t.trim().to_string(),
            witness: true,
        },
        None => Expected {
            text: s.to_string(),
            witness: false,
        },
    }
}

fn parse_expectation(s: &str) -> Result<Expectation, String> {
    let mut parts = s.split(';');
    let default = parse_expected(parts.next().unwrap_or(""));
    let mut per_level = Vec::new();
    for part in parts {
        let (levels, value) = part
            .split_once(": ")
            .ok_or_else(|| format!("expected `LEVEL[, LEVEL]: VALUE`, found {part:?}"))?;
        let value = parse_expected(value);
        for level in levels.split(',') {
            let (level, one_shot) = match level.trim().split_once(' ') {
                Some((l, "one-shot")) => (l, true),
                Some((_, other)) => return Err(format!("unknown qualifier {other:?}")),
                None => (level.trim(), false),
            };
            let level: Isolation = level.parse()?;
            per_level.push((level, one_shot, value.clone()));
        }
    }
    Ok(Expectation { default, per_level })
}

fn parse_op(words: &[&str]) -> Result<Op, String> {
    let arity = |n: usize| {
        if words.len() == n {
            Ok(())
        } else {
            Err(format!("{:?} takes {} argument(s)", words[0], n - 1))
        }
    };
    Ok(match words.first().copied().unwrap_or("") {
        "begin" => match words.get(1).copied() {
            None => Op::Begin { read_only: false },
            Some("read_only") => Op::Begin { read_only: true },
            Some(other) => {
                return Err(format!("begin takes `read_only` or nothing, not {other:?}"));
            }
        },
        "get" => {
            arity(2)?;
            Op::Get(words[1].to_string())
        }
        "get_for_update" => {
            arity(2)?;
            Op::GetForUpdate(words[1].to_string())
        }
        "scan" => {
            arity(2)?;
            Op::Scan(words[1].to_string())
        }
        "put" => {
            arity(3)?;
            Op::Put(words[1].to_string(), words[2].to_string())
        }
        "delete" => {
            arity(2)?;
            Op::Delete(words[1].to_string())
        }
        "increment" => {
            arity(3)?;
            let by = words[2]
                .parse()
                .map_err(|e| format!("increment by {:?}: {e}", words[2]))?;
            Op::Increment(words[1].to_string(), by)
        }
        "commit" => {
            arity(1)?;
            Op::Commit
        }
        "abort" => {
            arity(1)?;
            Op::Abort
        }
        other => return Err(format!("unknown operation {other:?}")),
    })
}

fn parse(name: &str, text: &str) -> Result<Script, String> {
    let mut anomaly = None;
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let at = |e: String| format!("{name}:{line_no}: {e}");
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(a) = line.strip_prefix("anomaly:") {
            anomaly = Some(a.trim().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("setup ") {
            let pairs = rest
                .split_whitespace()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| at(format!("setup wants key=value, found {kv:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            steps.push((line_no, raw.to_string(), Step::Setup(pairs)));
            continue;
        }
        let (txn, rest) = match line.split_once(": ") {
            Some((t, rest)) if t.starts_with('T') && !t.contains(' ') => {
                (Some(t.to_string()), rest)
            }
            _ => (None, line),
        };
        let (op_text, expect) = match rest.split_once("->") {
            Some((o, e)) => (o, Some(parse_expectation(e).map_err(at)?)),
            None => (rest, None),
        };
        let words: Vec<&str> = op_text.split_whitespace().collect();
        let op = parse_op(&words).map_err(at)?;
        let reads = matches!(op, Op::Get(_) | Op::GetForUpdate(_) | Op::Scan(_));
        if reads && expect.is_none() {
            return Err(at("a read needs an expected output (`-> ...`)".into()));
        }
        if txn.is_none() && !matches!(op, Op::Get(_) | Op::Scan(_)) {
            return Err(at(
                "outside a transaction only get and scan are allowed".into()
            ));
        }
        steps.push((line_no, raw.to_string(), Step::Op { txn, op, expect }));
    }
    Ok(Script {
        anomaly: anomaly.ok_or_else(|| format!("{name}: no `anomaly:` line"))?,
        steps,
    })
}

// ---- running ----

fn range_of(spec: &str) -> KeyRange {
    match spec.split_once("..") {
        Some((a, b)) => KeyRange::between(a.as_bytes(), b.as_bytes()),
        None => KeyRange::prefix(spec.as_bytes()),
    }
}

fn show_value(v: Option<logbook_txn::Versioned>) -> String {
    match v {
        Some(v) => String::from_utf8_lossy(&v.value).into_owned(),
        None => "absent".into(),
    }
}

fn show_rows(rows: &[logbook_txn::KeyValue]) -> String {
    if rows.is_empty() {
        return "empty".into();
    }
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&r.key),
                String::from_utf8_lossy(&r.value)
            )
        })
        .collect();
    parts.join(" ")
}

fn show<T>(r: logbook_txn::Result<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.code().to_string(),
    }
}

/// One run of a script at one level.
#[derive(Debug)]
struct Run {
    level: Isolation,
    form: Form,
    /// Each step's line with the actual output, for the failure message.
    transcript: String,
    mismatches: Vec<String>,
    verdict: Verdict,
}

fn run_at(script: &Script, level: Isolation, form: Form) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let log = logbook_log::Log::open(dir.path()).unwrap();
    let store = TxnStore::open(&log, TxnStoreOptions::default()).unwrap();
    let mut open: HashMap<String, Handle> = HashMap::new();
    let mut transcript = String::new();
    let mut mismatches = Vec::new();
    let mut verdict = Prevented;
    for (line_no, raw, step) in &script.steps {
        let (txn, op, expect) = match step {
            Step::Setup(pairs) => {
                let mut t = store
                    .begin(TxnOptions::new(Isolation::Serializable))
                    .unwrap();
                for (k, v) in pairs {
                    t.put(k.as_bytes(), v.as_bytes()).unwrap();
                }
                t.commit().unwrap();
                writeln!(transcript, "{raw}").unwrap();
                continue;
            }
            Step::Op { txn, op, expect } => (txn, op, expect),
        };
        let actual = match txn {
            None => match op {
                Op::Get(k) => show(store.get(k.as_bytes()), show_value),
                Op::Scan(spec) => show(store.scan(&range_of(spec), 1000), |r| show_rows(&r)),
                _ => unreachable!("rejected by the parser"),
            },
            Some(name) => match op {
                Op::Begin { read_only } => {
                    let mut options = TxnOptions::new(level);
                    if *read_only {
                        options = options.read_only();
                    }
                    show(Handle::begin(&store, options, form.one_shot(name)), |t| {
                        open.insert(name.clone(), t);
                        "ok".into()
                    })
                }
                Op::Commit => match open.remove(name) {
                    Some(t) => show(t.commit(), |_| "ok".into()),
                    None => "no_such_transaction".into(),
                },
                Op::Abort => match open.remove(name) {
                    Some(t) => {
                        t.abort();
                        "ok".into()
                    }
                    None => "no_such_transaction".into(),
                },
                _ => match open.get_mut(name) {
                    None => "no_such_transaction".into(),
                    Some(t) => match op {
                        Op::Get(k) => show(t.get(k.as_bytes()), show_value),
                        Op::GetForUpdate(k) => show(t.get_for_update(k.as_bytes()), show_value),
                        Op::Scan(spec) => show(t.scan(&range_of(spec), 1000), |r| show_rows(&r)),
                        Op::Put(k, v) => show(t.put(k.as_bytes(), v.as_bytes()), |_| "ok".into()),
                        Op::Delete(k) => show(t.delete(k.as_bytes()), |_| "ok".into()),
                        Op::Increment(k, by) => {
                            show(t.increment(k.as_bytes(), *by), |_| "ok".into())
                        }
                        Op::Begin { .. } | Op::Commit | Op::Abort => unreachable!(),
                    },
                },
            },
        };
        let expected = match expect {
            Some(e) => e.at(level, form).clone(),
            None => Expected {
                text: "ok".into(),
                witness: false,
            },
        };
        let mark = if expected.text == actual {
            if expected.witness {
                verdict = Observed;
            }
            ""
        } else {
            mismatches.push(format!(
                "line {line_no}: `{}`: expected {:?}, got {actual:?}",
                raw.trim(),
                expected.text
            ));
            "   <-- MISMATCH"
        };
        let op_text = raw.split("->").next().unwrap_or(raw).trim_end();
        writeln!(transcript, "{op_text} -> {actual}{mark}").unwrap();
    }
    Run {
        level,
        form,
        transcript,
        mismatches,
        verdict,
    }
}

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts")
}

/// Runs `text` at every level; checks outputs and the verdicts `want`.
fn check_script(name: &str, text: &str, anomaly: &str, want: [Verdict; 3]) -> Result<(), String> {
    let script = parse(name, text)?;
    if script.anomaly != anomaly {
        return Err(format!(
            "{name}: script says `anomaly: {}`, the matrix says {anomaly:?}",
            script.anomaly
        ));
    }
    let mut report = String::new();
    for form in FORMS {
        check_forms(name, &script, anomaly, want, form, &mut report);
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Runs `script` in `form` at every level; appends what went wrong to `report`.
fn check_forms(
    name: &str,
    script: &Script,
    anomaly: &str,
    want: [Verdict; 3],
    form: Form,
    report: &mut String,
) {
    for (level, want) in LEVELS.iter().zip(want) {
        let run = run_at(script, *level, form);
        let mut bad = run.mismatches.clone();
        if run.verdict != want {
            bad.push(format!(
                "{anomaly} at {}: the matrix says {want:?}, the run shows {:?}",
                run.level, run.verdict
            ));
        }
        if !bad.is_empty() {
            writeln!(report, "--- {name} at {} ({:?}) ---", run.level, run.form).unwrap();
            for b in &bad {
                writeln!(report, "{b}").unwrap();
            }
            writeln!(report, "transcript:\n{}", run.transcript).unwrap();
        }
    }
}

fn run_script(stem: &str) {
    let (_, anomaly, want) = MATRIX
        .iter()
        .find(|(s, _, _)| *s == stem)
        .unwrap_or_else(|| panic!("{stem} is not in MATRIX"));
    let path = scripts_dir().join(format!("{stem}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if let Err(report) = check_script(stem, &text, anomaly, *want) {
        panic!("{report}");
    }
}

macro_rules! scripts {
    ($($test:ident => $stem:literal;)*) => {
        $(
            #[test]
            fn $test() {
                run_script($stem);
            }
        )*
        const TESTED: &[&str] = &[$($stem),*];
    };
}

scripts! {
    g0_write_cycles => "g0";
    g1a_aborted_reads => "g1a";
    g1b_intermediate_reads => "g1b";
    g1c_circular_information_flow => "g1c";
    otv_observed_transaction_vanishes => "otv";
    pmp_predicate_many_preceders => "pmp";
    pmp_write_predicate_many_preceders_with_writes => "pmp-write";
    p4_lost_update => "p4";
    p4_lost_update_prevented_by_get_for_update => "p4-get-for-update";
    p4_lost_update_prevented_by_increment => "p4-increment";
    g_single_read_skew => "g-single";
    g_single_dependencies => "g-single-dependencies";
    g_single_write_1 => "g-single-write-1";
    g_single_write_2 => "g-single-write-2";
    g2_item_write_skew => "g2-item";
    g2_phantom_write_skew => "g2";
    g2_two_edges_read_only_anomaly => "g2-two-edges";
    g2_two_edges_with_a_safe_snapshot => "g2-two-edges-read-only";
}

#[test]
fn every_script_has_a_test_and_a_matrix_row() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(scripts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = TESTED.iter().map(|s| s.to_string()).collect();
    let in_matrix: BTreeSet<String> = MATRIX.iter().map(|(s, _, _)| s.to_string()).collect();
    assert_eq!(on_disk, tested, "scripts on disk vs scripts with a test");
    assert_eq!(on_disk, in_matrix, "scripts on disk vs MATRIX rows");
}

#[test]
fn every_anomaly_of_the_issue_is_covered() {
    let covered: BTreeSet<&str> = MATRIX.iter().map(|(_, a, _)| *a).collect();
    for a in REQUIRED {
        assert!(covered.contains(a), "no script for {a}");
    }
    // The matrix rows agree with docs/DESIGN.md level by level.
    let prevented_from: BTreeMap<&str, usize> = [
        ("G0", 0),
        ("G1a", 0),
        ("G1b", 0),
        ("G1c", 0),
        ("OTV", 1),
        ("PMP", 1),
        ("PMP-write", 1),
        ("P4", 1),
        ("G-single", 1),
        ("G-single-dependencies", 1),
        ("G-single-write-1", 1),
        ("G-single-write-2", 1),
        ("G2-item", 2),
        ("G2", 2),
        ("G2-two-edges", 2),
    ]
    .into_iter()
    .collect();
    for (stem, anomaly, verdicts) in MATRIX {
        if let Some(&from) = prevented_from.get(anomaly) {
            for (i, v) in verdicts.iter().enumerate() {
                let want = if i >= from { Prevented } else { Observed };
                assert_eq!(*v, want, "{stem}: {anomaly} at {}", LEVELS[i]);
            }
        }
    }
}

/// The runner must be able to fail: a wrong expected value is reported.
#[test]
fn a_wrong_expectation_is_reported() {
    let text = "anomaly: G1a\nsetup x=10\nT1: begin\nT1: get x -> 11\nT1: commit -> ok\n";
    let err = check_script("wrong", text, "G1a", [Prevented; 3]).unwrap_err();
    assert!(err.contains("expected \"11\", got \"10\""), "{err}");
}

/// ... and so is a verdict that contradicts the matrix (here: claiming write skew is
/// observable at `serializable`).
#[test]
fn a_verdict_against_the_matrix_is_reported() {
    let text = std::fs::read_to_string(scripts_dir().join("g2-item.txt")).unwrap();
    let err = check_script("g2-item", &text, "G2-item", [Observed; 3]).unwrap_err();
    assert!(
        err.contains("G2-item at serializable: the matrix says Observed, the run shows Prevented"),
        "{err}"
    );
    assert!(
        !err.contains("MISMATCH"),
        "the outputs themselves match: {err}"
    );
}

#[test]
fn parser_rejects_reads_without_expectations() {
    let err = parse("bad", "anomaly: G0\nT1: begin\nT1: get x\n").unwrap_err();
    assert!(err.contains("bad:3"), "{err}");
    let err = parse("bad", "anomaly: G0\nT1: get x -> 1; repeatable_read: 2\n").unwrap_err();
    assert!(err.contains("unknown isolation"), "{err}");
}
