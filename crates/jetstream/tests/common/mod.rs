//! A test harness of real processes: N nats-server as a JetStream cluster and M etcd members
//! on free loopback ports (or on another address of this host: [`ClusterSpec::host`]) in a
//! temporary directory, started healthy, killed on drop.
//!
//! Reusable by later cluster tests: [`Cluster::start`] with [`ClusterSpec`]; every name
//! (cluster, token, directory) is per run, and every process is killed (SIGKILL) when the
//! [`Cluster`] is dropped, on every path out of a test, panics included. Programs are found as
//! `$LOGBOOK_NATS_SERVER` / `$LOGBOOK_ETCD` or on PATH (and `/usr/sbin`); `scripts/test`
//! installs them.
#![allow(
    dead_code,
    clippy::expect_used,
    reason = "shared by several test crates and the crate's unit tests, each using a part (so \
              which lint fires differs: `allow`, not `expect`); a panic is the failure report"
)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_jetstream::monitor;

/// How long a cluster may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when a port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 3;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// nats-server processes (1: a single JetStream server, no cluster block).
    pub nats: usize,
    /// etcd members (0: none).
    pub etcd: usize,
    /// Every nats-server's `max_payload`, bytes.
    pub max_payload: u32,
    /// Set `jetstream { sync_interval: always }` (nats-server ≥ 2.10 only).
    pub sync_always: bool,
    /// The nats-server program; default `$LOGBOOK_NATS_SERVER` or `nats-server`.
    pub nats_program: Option<PathBuf>,
    /// TLS on every client port (NATS and etcd), clients verified. Default none.
    pub tls: Option<TlsFiles>,
    /// The address every port listens on and every URL names (default `127.0.0.1`; a
    /// bridge's address when the clients run in network namespaces of their own).
    pub host: String,
}

/// TLS on the engines' client ports: each nats-server and etcd member presents `cert`, and
/// takes only clients whose certificate `ca` signed (mutual TLS). Monitoring stays plain
/// HTTP (etcd's on a port of its own), as do the engines' own cluster links.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM) of the servers' and the clients' certificates.
    pub ca: PathBuf,
    /// The servers' certificate (PEM), valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nats: 3,
            etcd: 0,
            max_payload: logbook_jetstream::limits::MAX_PAYLOAD_BYTES_FOR_LARGEST_BATCH,
            sync_always: false,
            nats_program: None,
            tls: None,
            host: "127.0.0.1".into(),
        }
    }
}

/// One nats-server.
#[derive(Debug)]
pub struct NatsNode {
    /// `server_name`, e.g. `n1`.
    pub name: String,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port.
    pub monitor_port: u16,
    /// The client port speaks TLS.
    pub tls: bool,
    /// The address it listens on ([`ClusterSpec::host`]).
    pub host: String,
    child: Option<Child>,
}

impl NatsNode {
    /// `nats://host:port` (`tls://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
    /// `http://host:monitor_port`.
    pub fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.host, self.monitor_port)
    }
}

/// One etcd member.
#[derive(Debug)]
pub struct EtcdNode {
    /// `--name`, e.g. `e1`.
    pub name: String,
    /// Client port.
    pub port: u16,
    /// With TLS on the client port, the plain HTTP port of `/health` and `/metrics`.
    pub metrics_port: Option<u16>,
    /// The address it listens on ([`ClusterSpec::host`]).
    pub host: String,
    child: Option<Child>,
}

impl EtcdNode {
    /// `http://host:port` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.metrics_port.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Where `/health` answers in plain HTTP.
    pub fn health_url(&self) -> String {
        match self.metrics_port {
            Some(port) => format!("http://{}:{port}", self.host),
            None => self.url(),
        }
    }
}

/// Running processes; all are killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Per-run name (cluster name, etcd token, prefix of stream names a test may use).
    pub run_id: String,
    /// The nats-servers, in start order.
    pub nats: Vec<NatsNode>,
    /// The etcd members.
    pub etcd: Vec<EtcdNode>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the processes `spec` asks for and waits until each is healthy (nats-server
    /// `/healthz`, etcd `/health`). Panics with the processes' log tails when they do not
    /// become healthy within 30 s.
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = Cluster::spawn(&spec);
            match cluster.wait_healthy().await {
                Ok(()) => return cluster,
                Err(why) => last_error = why, // Dropping `cluster` kills what started.
            }
        }
        panic!("test cluster did not start: {last_error}");
    }

    fn spawn(spec: &ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("logbook-cluster-")
            .tempdir()
            .expect("temporary directory");
        let run_id = format!(
            "lb{}{}",
            std::process::id(),
            rand::random::<u32>() % 1_000_000
        );
        // etcd: client and peer ports, and with TLS a plain one for its health.
        let per_etcd = if spec.tls.is_some() { 3 } else { 2 };
        let ports = free_ports(spec.nats * 3 + spec.etcd * per_etcd);
        let (nats_ports, etcd_ports) = ports.split_at(spec.nats * 3);
        let mut cluster = Cluster {
            run_id,
            nats: Vec::new(),
            etcd: Vec::new(),
            dir,
        };
        let routes: Vec<u16> = nats_ports.chunks(3).map(|p| p[2]).collect();
        for (i, p) in nats_ports.chunks(3).enumerate() {
            let name = format!("n{}", i + 1);
            let conf = nats_config(spec, &cluster, &name, p, &routes);
            let child = cluster.spawn_nats(spec, &name, &conf);
            cluster.nats.push(NatsNode {
                name,
                port: p[0],
                monitor_port: p[1],
                tls: spec.tls.is_some(),
                host: spec.host.clone(),
                child: Some(child),
            });
        }
        let peers: Vec<(String, u16)> = etcd_ports
            .chunks(per_etcd)
            .enumerate()
            .map(|(i, p)| (format!("e{}", i + 1), p[1]))
            .collect();
        for (i, p) in etcd_ports.chunks(per_etcd).enumerate() {
            let name = format!("e{}", i + 1);
            let mut node = EtcdNode {
                name,
                port: p[0],
                metrics_port: p.get(2).copied(),
                host: spec.host.clone(),
                child: None,
            };
            node.child = Some(cluster.spawn_etcd(spec, &node, p[1], &peers));
            cluster.etcd.push(node);
        }
        cluster
    }

    fn spawn_nats(&self, spec: &ClusterSpec, name: &str, conf: &str) -> Child {
        let conf_path = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).expect("write nats config");
        let program = spec.nats_program.clone().unwrap_or_else(nats_program);
        Command::new(&program)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(self.log_file(name))
            .stderr(self.log_file(name))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/test)", program.display()))
    }

    fn spawn_etcd(
        &self,
        spec: &ClusterSpec,
        node: &EtcdNode,
        peer: u16,
        peers: &[(String, u16)],
    ) -> Child {
        let name = node.name.as_str();
        let initial: Vec<String> = peers
            .iter()
            .map(|(n, p)| format!("{n}=http://{}:{p}", spec.host))
            .collect();
        let client_url = node.url();
        let peer_url = format!("http://{}:{peer}", spec.host);
        let program = std::env::var_os("LOGBOOK_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| find_program("etcd"));
        let mut command = Command::new(&program);
        if let (Some(tls), Some(_)) = (&spec.tls, node.metrics_port) {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth")
                .args(["--listen-metrics-urls", &node.health_url()]);
        }
        command
            .args(["--name", name])
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.run_id])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(self.log_file(name))
            .stderr(self.log_file(name))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/test)", program.display()))
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("open process log")
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut checks: Vec<(String, String, &str)> = Vec::new();
        for n in &self.nats {
            checks.push((n.name.clone(), n.monitor_url(), "/healthz"));
        }
        for e in &self.etcd {
            checks.push((e.name.clone(), e.health_url(), "/health"));
        }
        for (name, url, path) in checks {
            loop {
                if let Some(exited) = self.exited(&name) {
                    return Err(format!(
                        "{name} exited ({exited}):\n{}",
                        self.log_tail(&name)
                    ));
                }
                let answer = monitor::get_json(&url, path, Duration::from_secs(1)).await;
                let healthy = match &answer {
                    Ok(v) => v["status"] == "ok" || v["health"] == "true",
                    Err(_) => false,
                };
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{name} not healthy: {answer:?}\n{}",
                        self.log_tail(&name)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn exited(&mut self, name: &str) -> Option<String> {
        let child = self
            .nats
            .iter_mut()
            .find(|n| n.name == name)
            .map(|n| &mut n.child)
            .or_else(|| {
                self.etcd
                    .iter_mut()
                    .find(|e| e.name == name)
                    .map(|e| &mut e.child)
            })?;
        match child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// The last lines of a process's log, for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Every nats-server's client URL.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats.iter().map(NatsNode::url).collect()
    }

    /// Every nats-server's monitoring URL.
    pub fn nats_monitor_urls(&self) -> Vec<String> {
        self.nats.iter().map(NatsNode::monitor_url).collect()
    }

    /// Every etcd member's client URL.
    pub fn etcd_urls(&self) -> Vec<String> {
        self.etcd.iter().map(EtcdNode::url).collect()
    }

    /// SIGKILLs the nats-server named `name` (`kill -9`) and reaps it.
    pub fn kill_nats(&mut self, name: &str) {
        let node = self
            .nats
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no nats-server {name}"));
        kill(&mut node.child);
    }

    /// Sends `signal` (`STOP`, `CONT`) to the nats-server named `name`: a stopped server
    /// keeps its connections open and answers nothing, as a leader does that went silent.
    pub fn signal_nats(&self, name: &str, signal: &str) {
        let child = self
            .nats
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.child.as_ref())
            .unwrap_or_else(|| panic!("no running nats-server {name}"));
        send_signal(child, signal);
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the etcd member named `name`; one killed
    /// so is reaped when the cluster is dropped.
    pub fn signal_etcd(&self, name: &str, signal: &str) {
        let child = self
            .etcd
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.child.as_ref())
            .unwrap_or_else(|| panic!("no running etcd member {name}"));
        send_signal(child, signal);
    }

    /// SIGKILLs the etcd member named `name` and reaps it.
    pub fn kill_etcd(&mut self, name: &str) {
        let node = self
            .etcd
            .iter_mut()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no etcd member {name}"));
        kill(&mut node.child);
    }

    /// The directory holding every process's data, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nats {
            kill(&mut n.child);
        }
        for e in &mut self.etcd {
            kill(&mut e.child);
        }
    }
}

fn send_signal(child: &Child, signal: &str) {
    let pid = child.id();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL; an already exited process is fine.
        let _ = c.wait();
    }
}

fn nats_config(
    spec: &ClusterSpec,
    cluster: &Cluster,
    name: &str,
    ports: &[u16],
    routes: &[u16],
) -> String {
    let store = cluster.dir.path().join(name);
    let mut conf = String::new();
    let _ = writeln!(conf, "server_name: {name}");
    let host = &spec.host;
    let _ = writeln!(conf, "listen: {host}:{}", ports[0]);
    let _ = writeln!(conf, "http: {host}:{}", ports[1]);
    let _ = writeln!(conf, "max_payload: {}", spec.max_payload);
    let _ = writeln!(conf, "jetstream {{");
    let _ = writeln!(conf, "  store_dir: {:?}", store.display().to_string());
    let _ = writeln!(conf, "  max_memory_store: 64MB");
    let _ = writeln!(conf, "  max_file_store: 1GB");
    if spec.sync_always {
        let _ = writeln!(conf, "  sync_interval: always");
    }
    let _ = writeln!(conf, "}}");
    if let Some(tls) = &spec.tls {
        let _ = writeln!(conf, "tls {{");
        let _ = writeln!(conf, "  cert_file: {:?}", tls.cert.display().to_string());
        let _ = writeln!(conf, "  key_file: {:?}", tls.key.display().to_string());
        let _ = writeln!(conf, "  ca_file: {:?}", tls.ca.display().to_string());
        let _ = writeln!(conf, "  verify: true");
        let _ = writeln!(conf, "}}");
    }
    if spec.nats > 1 {
        let others: Vec<String> = routes
            .iter()
            .filter(|p| **p != ports[2])
            .map(|p| format!("nats-route://{host}:{p}"))
            .collect();
        let _ = writeln!(conf, "cluster {{");
        let _ = writeln!(conf, "  name: {}", cluster.run_id);
        let _ = writeln!(conf, "  listen: {host}:{}", ports[2]);
        let _ = writeln!(conf, "  routes: [{}]", others.join(", "));
        let _ = writeln!(conf, "}}");
    }
    conf
}

/// `n` distinct free loopback ports (held together while chosen, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

fn nats_program() -> PathBuf {
    std::env::var_os("LOGBOOK_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| find_program("nats-server"))
}

/// `name` on PATH, else in `/usr/sbin` (Debian's nats-server lives there, off a user's PATH).
fn find_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

/// Retries `op` while it fails with an error `retryable` accepts, for up to `limit`; returns
/// the last result.
pub async fn retry<T, E: std::fmt::Debug, F, Fut>(
    limit: Duration,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
