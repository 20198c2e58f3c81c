//! The cluster benchmarks in CI (feature `cluster`): `logbook bench http --cluster`,
//! `logbook bench failover` and `logbook bench tpcb --cluster --failovers`, each with its
//! smallest parameters, on a development cluster
//! started by `scripts/dev-cluster up` with this build's binary (3 nats-server, 3 etcd,
//! 3 nodes on loopback, ports shifted to free ones). What is checked is the JSON each
//! prints — its fields there, its counts consistent with each other and with the
//! parameters, every acknowledged append of the failover run stored exactly once — not the
//! figures, which depend on the machine.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

mod common;

/// `scripts/dev-cluster` of this repository.
fn dev_cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev-cluster")
}

/// The ports `scripts/dev-cluster` uses with no offset: nodes, NATS clients, NATS monitoring,
/// NATS routes, etcd clients, etcd peers (three each).
const BASE_PORTS: [u16; 6] = [17701, 14222, 18222, 16222, 12379, 12480];

/// A port offset under which all 18 ports of a development cluster are free now: tried from
/// one that depends on this process, so concurrent runs start apart.
fn free_offset() -> u16 {
    let start = (std::process::id() % 97) as u16;
    (0..97u16)
        .map(|i| 2000 + 20 * ((start + i) % 97))
        .find(|&offset| {
            BASE_PORTS.iter().all(|&base| {
                (0..3)
                    .all(|i| std::net::TcpListener::bind(("127.0.0.1", base + offset + i)).is_ok())
            })
        })
        .unwrap_or_else(|| panic!("no port offset with 18 free ports"))
}

/// A running `scripts/dev-cluster up DIR`; brought `down` (every process stopped) when
/// dropped, on every path out of the test.
struct DevCluster {
    dir: tempfile::TempDir,
    offset: u16,
    up: Child,
}

impl DevCluster {
    /// Starts the cluster and waits until `up` says every process is healthy.
    fn up() -> DevCluster {
        let dir = tempfile::tempdir().unwrap();
        let offset = free_offset();
        let mut up = Command::new("bash")
            .arg(dev_cluster_script())
            .arg("up")
            .arg(dir.path())
            .env("LOGBOOK_BIN", common::BIN)
            .env("LOGBOOK_DEV_PORT_OFFSET", offset.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = up.stdout.take().unwrap();
        let cluster = DevCluster { dir, offset, up };
        // `up` prints its summary once all nine processes answer healthy, or exits (closing
        // its output) with what failed on stderr (the test's); either way this read ends.
        let mut printed = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("dev-cluster up in") {
                return cluster;
            }
        }
        panic!("dev-cluster up did not come up:\n{printed}");
    }

    fn node_url(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", 17700 + i + self.offset)
    }

    fn admin_token(&self) -> String {
        common::admin_token(&self.dir.path().join("l1")).unwrap()
    }

    /// Runs `logbook bench ARGS --json` with the admin token; its JSON report.
    fn bench(&self, args: &[&str]) -> Value {
        let out = Command::new(common::BIN)
            .arg("bench")
            .args(args)
            .arg("--json")
            .env("LOGBOOK_TOKEN", self.admin_token())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "logbook bench {args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(dev_cluster_script())
            .arg("down")
            .arg(self.dir.path())
            .env("LOGBOOK_DEV_PORT_OFFSET", self.offset.to_string())
            .status();
        // `up` ends once `down` removed the pid files; killed in case it did not.
        let _ = self.up.kill();
        let _ = self.up.wait();
    }
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// `bench http --cluster`: one run per (op, mode, rate) on each side, with a ratio each.
fn check_http(report: &Value, nodes: &[String]) {
    assert_eq!(report["benchmark"], "http", "{report}");
    let single = report["runs"].as_array().unwrap();
    let cluster = &report["cluster"];
    assert_eq!(cluster["nodes"], serde_json::json!(nodes), "{cluster}");
    let runs = cluster["runs"].as_array().unwrap();
    // Appends and reads, each closed loop and at one open-loop rate.
    assert_eq!(runs.len(), 4, "{cluster}");
    assert_eq!(single.len(), runs.len(), "the same phases on both sides");
    for run in runs {
        let what = format!("cluster run {run}");
        assert!(number(&run["requests"], &what) > 0.0, "{what}");
        assert!(number(&run["achieved_per_s"], &what) > 0.0, "{what}");
        assert_eq!(run["errors"], 0, "{what}");
        let p50 = number(&run["p50_ms"], &what);
        let p99 = number(&run["p99_ms"], &what);
        assert!(0.0 < p50 && p50 <= p99, "{what}");
    }
    let ops: Vec<(&Value, &Value)> = runs.iter().map(|r| (&r["op"], &r["mode"])).collect();
    let ratios = cluster["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), runs.len(), "a ratio per run: {cluster}");
    for (ratio, (op, mode)) in ratios.iter().zip(ops) {
        assert_eq!((&ratio["op"], &ratio["mode"]), (op, mode), "{ratio}");
        assert!(number(&ratio["achieved_cluster_over_single"], "ratio") > 0.0);
        for p in ["p50_ms", "p95_ms", "p99_ms"] {
            number(&ratio[p]["single"], p);
            number(&ratio[p]["cluster"], p);
        }
    }
    // The engine's acknowledgment, as the cluster's stream reports it.
    assert_eq!(cluster["ack_guarantee"]["replicas"], 3, "{cluster}");
    assert!(
        cluster["ack_guarantee"]["fsynced"].is_boolean(),
        "{cluster}"
    );
}

/// `bench failover --kills 1`: the kill's figures, and every acknowledged append stored once.
fn check_failover(report: &Value) {
    assert_eq!(report["benchmark"], "failover", "{report}");
    let result = &report["result"];
    let kills = result["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{result}");
    let kill = &kills[0];
    assert!(
        ["n1", "n2", "n3"].contains(&kill["leader_killed"].as_str().unwrap()),
        "{kill}"
    );
    let stall = number(&kill["stall_ms"], "stall_ms");
    let to_first_ack = number(&kill["kill_to_first_ack_ms"], "kill_to_first_ack_ms");
    assert!(0.0 < to_first_ack && to_first_ack <= stall, "{kill}");
    assert!(number(&kill["catch_up_ms"], "catch_up_ms") > 0.0, "{kill}");
    assert!(
        number(&kill["killed_at_unix_ms"], "killed_at_unix_ms") > 0.0,
        "{kill}"
    );
    // The stall in its two parts: nats-server's election, then Logbook's (which may come
    // out below 0 by the election's polling interval: the new leader is looked for every
    // 50 ms).
    let election = number(&kill["election_ms"], "election_ms");
    let after = number(&kill["after_election_ms"], "after_election_ms");
    assert!(election > 0.0, "{kill}");
    assert!((to_first_ack - (election + after)).abs() < 0.2, "{kill}");
    // One kill: every quantile is its figure.
    for q in ["p50", "p99", "max"] {
        assert_eq!(number(&result["stall_ms"][q], q), stall, "{result}");
        assert_eq!(number(&result["election_ms"][q], q), election, "{result}");
        assert_eq!(
            number(&result["after_election_ms"][q], q),
            after,
            "{result}"
        );
    }
    let acked = number(&result["appends_acknowledged"], "appends_acknowledged");
    assert!(acked > 0.0, "{result}");
    let once = &result["exactly_once"];
    assert_eq!(once["checked"], true, "{once}");
    assert_eq!(
        number(&once["acknowledged"], "acknowledged"),
        acked,
        "{once}"
    );
    for count in [
        "missing",
        "duplicated",
        "unexpected",
        "request_id_conflicts",
        "unknown_outcomes",
    ] {
        assert_eq!(once[count], 0, "{count}: {once}");
    }
    assert_eq!(once["ok"], true, "{once}");
}

/// `bench tpcb --cluster --failovers 1`: the followers' budget line, the kill's commit
/// stall overall and per client, its parts adding up, and every commit applied once.
fn check_tpcb_failover(report: &Value, nodes: &[String], clients: usize) {
    let cluster = &report["cluster"];
    assert_eq!(cluster["consistent"], true, "{cluster}");
    let budget = &cluster["follower_commit_budget"];
    let leader_p50 = number(&budget["leader_p50_ms"], "leader_p50_ms");
    let bound = number(&budget["bound_ms"], "bound_ms");
    assert!((bound - (leader_p50 + 2.0)).abs() < 0.01, "{budget}");
    number(&budget["followers_p50_ms"], "followers_p50_ms");
    assert!(budget["met"].is_boolean(), "{budget}");

    let failover = &cluster["failover"];
    assert_eq!(failover["failovers"], 1, "{failover}");
    assert_eq!(
        number(&failover["budget"]["stall_ms_max"], "stall_ms_max"),
        15_000.0,
        "lease TTL 10 s + 5 s: {failover}"
    );
    assert!(failover["budget"]["met"].is_boolean(), "{failover}");
    let kills = failover["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{failover}");
    let kill = &kills[0];
    let killed = kill["leader_killed"].as_str().unwrap();
    assert!(nodes.iter().any(|n| n == killed), "{kill}");
    let stall = number(&kill["stall_ms"], "stall_ms");
    let to_first = number(&kill["kill_to_first_commit_ms"], "kill_to_first_commit_ms");
    assert!(0.0 < to_first && to_first <= stall, "{kill}");
    // The lease's part (another leader named), then Logbook's; the leader is looked for
    // every 50 ms, so Logbook's part may come out below 0 by about that much.
    let named = number(&kill["leader_named_ms"], "leader_named_ms");
    let after = number(&kill["after_named_ms"], "after_named_ms");
    assert!(named > 0.0, "{kill}");
    assert!((to_first - (named + after)).abs() < 0.2, "{kill}");
    let per_client = kill["client_stall_ms"].as_array().unwrap();
    assert_eq!(per_client.len(), clients, "{kill}");
    for c in per_client {
        // The first client to commit after the kill sets the overall stall; each client's
        // own runs from its last commit before the kill, which is no later than the last.
        assert!(number(c, "client_stall_ms") >= stall - 0.2, "{kill}");
    }
    // Null when the restarted node did not serve within the phase's wait (its replay of
    // `_txn` chasing the stream under load: issue 15).
    let serving = &kill["restart_to_serving_ms"];
    assert!(
        serving.is_null() || number(serving, "restart_to_serving_ms") > 0.0,
        "{kill}"
    );
    for q in ["p50", "p99", "max"] {
        assert_eq!(number(&failover["stall_ms"][q], q), stall, "{failover}");
    }
    let committed = number(&failover["commits"]["transactions"], "transactions");
    assert!(committed > 0.0, "{failover}");
    assert_eq!(
        failover["consistent"], true,
        "every commit applied once: {failover}"
    );
}

#[test]
fn the_cluster_benchmarks_report_consistent_json() {
    let cluster = DevCluster::up();
    let nodes: Vec<String> = (1..=3).map(|i| cluster.node_url(i)).collect();
    let http = cluster.bench(&[
        "http",
        "--seconds",
        "1",
        "--append-rates",
        "100",
        "--read-rates",
        "100",
        "--connections",
        "2",
        "--open-connections",
        "2",
        "--keys",
        "100",
        "--partitions",
        "1",
        "--no-pg",
        "--cluster",
        &nodes.join(","),
    ]);
    check_http(&http, &nodes);

    let dir = cluster.dir.path().to_str().unwrap().to_string();
    let failover = cluster.bench(&[
        "failover",
        "--dev-cluster",
        &dir,
        "--server",
        &nodes[0],
        "--kills",
        "1",
        "--clients",
        "2",
        "--settle-seconds",
        "1",
    ]);
    check_failover(&failover);

    let clients = 3;
    let tpcb = cluster.bench(&[
        "tpcb",
        "--over",
        "http",
        "--protocol",
        "one-shot",
        "--form",
        "atomic",
        "--scale",
        "1",
        "--clients",
        &clients.to_string(),
        "--seconds",
        "1",
        "--no-postgres",
        "--cluster",
        &nodes.join(","),
        "--failovers",
        "1",
        "--dev-cluster",
        &dir,
        "--settle-seconds",
        "2",
    ]);
    check_tpcb_failover(&tpcb, &nodes, clients);
}
