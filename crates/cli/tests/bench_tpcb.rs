//! `logbook bench tpcb` end to end, on the real binary: a one-second run at scale 1 with
//! two clients and no PostgreSQL peer prints the documented JSON, the balances add up, and
//! the atomic form never aborts.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// Runs `logbook bench tpcb --seconds 1 --scale 1 --clients 2 --no-postgres --json` with
/// `extra` and returns its JSON.
fn tpcb(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "bench",
            "tpcb",
            "--seconds",
            "1",
            "--scale",
            "1",
            "--clients",
            "2",
            "--no-postgres",
            "--json",
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench tpcb {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_shape(r: &serde_json::Value, isolation: &str, form: &str) {
    for key in ["tps", "abort_rate"] {
        assert!(r[key].as_f64().is_some(), "{key} missing in {r}");
    }
    for key in ["failed_after_retries", "transactions"] {
        assert!(r[key].as_u64().is_some(), "{key} missing in {r}");
    }
    for p in ["p50", "p95", "p99"] {
        assert!(
            r["latency_ms"][p].as_f64().is_some_and(|v| v > 0.0),
            "latency_ms.{p} in {r}"
        );
    }
    assert!(r["tps"].as_f64().unwrap() > 0.0, "tps in {r}");
    assert_eq!(r["consistent"], true, "consistency check in {r}");
    let p = &r["params"];
    assert_eq!(p["isolation"], isolation);
    assert_eq!(p["form"], form);
    assert_eq!(p["clients"], 2);
    assert_eq!(p["seconds"], 1);
    assert_eq!(p["scale"], 1);
    assert_eq!(p["fsync"], "always");
    assert_eq!(p["early_lock_release"], true);
    assert!(r["postgres"].is_null(), "postgres in {r}");
    assert!(r["ratio_tps"].is_null(), "ratio_tps in {r}");
    assert!(r["postgres_note"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(r["consistency"]["accounts"], 100_000);
    assert_eq!(r["consistency"]["tellers"], 10);
    assert_eq!(r["consistency"]["branches"], 1);
}

#[test]
fn serializable_read_modify_write_keeps_the_balances_consistent() {
    let r = tpcb(&["--isolation", "serializable", "--form", "rmw"]);
    assert_shape(&r, "serializable", "rmw");
}

/// The one-round-trip protocol over HTTP: reads at a snapshot, then one commit request
/// declaring them; the balances still add up (the certifier caught every conflict).
#[test]
fn one_shot_read_modify_write_over_http_keeps_the_balances_consistent() {
    let r = tpcb(&[
        "--isolation",
        "serializable",
        "--form",
        "rmw",
        "--over",
        "http",
        "--protocol",
        "one-shot",
    ]);
    assert_shape(&r, "serializable", "rmw");
    assert_eq!(r["params"]["over"], "http");
    assert_eq!(r["params"]["protocol"], "one-shot");
}

#[test]
fn one_shot_atomic_increments_over_http_never_abort() {
    let r = tpcb(&[
        "--form",
        "atomic",
        "--over",
        "http",
        "--protocol",
        "one-shot",
    ]);
    assert_shape(&r, "serializable", "atomic");
    assert_eq!(r["aborts"], 0, "aborts in {r}");
}

#[test]
fn atomic_increments_never_abort() {
    let r = tpcb(&["--isolation", "serializable", "--form", "atomic"]);
    assert_shape(&r, "serializable", "atomic");
    assert_eq!(r["abort_rate"], 0.0, "aborts in {r}");
    assert_eq!(r["aborts"], 0, "aborts in {r}");
    assert_eq!(r["failed_after_retries"], 0, "failures in {r}");
}

#[test]
fn a_data_dir_that_is_not_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    let out = Command::new(BIN)
        .args(["bench", "tpcb", "--no-postgres", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
}
