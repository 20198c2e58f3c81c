//! PostgreSQL as a peer to measure against: finds its programs, runs a throwaway cluster
//! in a temporary directory (as another user when this process is root), and reads
//! pgbench's summary. Used by `bench tpcb` and `bench http`.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::kit::TempDir;

/// PostgreSQL settings of the throwaway cluster (durable commits, like fsync `always`).
pub(crate) const PG_SETTINGS: [(&str, &str); 4] = [
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("shared_buffers", "128MB"),
    ("listen_addresses", ""),
];
/// How long the PostgreSQL server may take to accept connections.
const PG_START_TIMEOUT: Duration = Duration::from_secs(60);

/// PostgreSQL's programs, and the user to run the server as.
pub(crate) struct PgTools {
    bin: PathBuf,
    pgbench: PathBuf,
    /// `Some((name, uid, gid))` when this process is root: PostgreSQL refuses to run as
    /// root, so its programs run through `runuser -u name --`.
    pub(crate) run_as: Option<(String, u32, u32)>,
}

impl PgTools {
    /// Finds PostgreSQL; `Err` says why it is considered absent.
    pub(crate) fn find(explicit: Option<&Path>) -> Result<PgTools, String> {
        const SERVER: [&str; 4] = ["initdb", "postgres", "pg_ctl", "pg_isready"];
        let complete = |dir: &Path| SERVER.iter().all(|p| dir.join(p).is_file());
        let bin = match explicit {
            Some(dir) if complete(dir) => dir.to_path_buf(),
            Some(dir) => {
                return Err(format!(
                    "--pg-bin {} lacks one of {}",
                    dir.display(),
                    SERVER.join(", ")
                ));
            }
            None => {
                let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let v = e.file_name().to_str()?.parse().ok()?;
                        Some((v, e.path().join("bin")))
                    })
                    .filter(|(_, dir)| complete(dir))
                    .collect();
                versions.sort();
                let from_path = || {
                    let initdb = find_on_path("initdb")?.canonicalize().ok()?;
                    initdb
                        .parent()
                        .filter(|d| complete(d))
                        .map(Path::to_path_buf)
                };
                match versions.pop().map(|(_, dir)| dir).or_else(from_path) {
                    Some(dir) => dir,
                    None => {
                        return Err(format!(
                            "no directory with {} (looked in /usr/lib/postgresql/*/bin and PATH; --pg-bin names one)",
                            SERVER.join(", ")
                        ));
                    }
                }
            }
        };
        let pgbench = if bin.join("pgbench").is_file() {
            bin.join("pgbench")
        } else {
            find_on_path("pgbench").ok_or("pgbench is not installed")?
        };
        let run_as = if is_root() {
            if find_on_path("runuser").is_none() {
                return Err(
                    "running as root, and PostgreSQL refuses root; runuser is missing".into(),
                );
            }
            let user = ["postgres", "nobody"]
                .iter()
                .find_map(|name| passwd_entry(name))
                .ok_or("running as root, and neither user postgres nor nobody exists")?;
            Some(user)
        } else {
            None
        };
        Ok(PgTools {
            bin,
            pgbench,
            run_as,
        })
    }

    /// A command running `program` as the PostgreSQL user.
    fn command(&self, program: &Path) -> Command {
        match &self.run_as {
            Some((user, _, _)) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub(crate) fn server_version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `(name, uid, gid)` of a user from /etc/passwd.
fn passwd_entry(name: &str) -> Option<(String, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((name.to_string(), uid, gid))
    })
}

/// A throwaway PostgreSQL cluster in a temporary directory. Dropping it stops the server
/// (fast shutdown; killed if that fails) and removes the directory — also on error. The
/// server runs in this process's process group, so a Ctrl-C in the terminal reaches it too
/// (SIGINT is PostgreSQL's fast shutdown).
pub(crate) struct PgCluster<'t> {
    tools: &'t PgTools,
    pub(crate) dir: TempDir,
    data: PathBuf,
    port: u16,
    server: Option<Child>,
}

impl PgCluster<'_> {
    pub(crate) fn start(tools: &PgTools, clients: usize) -> anyhow::Result<PgCluster<'_>> {
        let dir = TempDir::create(&std::env::temp_dir(), "logbook-tpcb-pg")?;
        if let Some((user, uid, gid)) = &tools.run_as {
            std::os::unix::fs::chown(&dir.0, Some(*uid), Some(*gid))
                .with_context(|| format!("giving {} to user {user}", dir.0.display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("finding a free port")?;
        let mut cluster = PgCluster {
            tools,
            data: dir.0.join("data"),
            dir,
            port,
            server: None,
        };
        let out = tools
            .command(&tools.bin.join("initdb"))
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        check_output("initdb", &out)?;
        let log_path = cluster.dir.0.join("postgres.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut server = tools.command(&tools.bin.join("postgres"));
        server
            .arg("-D")
            .arg(&cluster.data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&cluster.dir.0)
            .args(["-c", &format!("max_connections={}", clients + 10)]);
        for (name, value) in PG_SETTINGS {
            server.arg("-c").arg(format!("{name}={value}"));
        }
        let child = server
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        cluster.server = Some(child);
        let deadline = Instant::now() + PG_START_TIMEOUT;
        loop {
            let ready = Command::new(tools.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&cluster.dir.0)
                .arg("-p")
                .arg(port.to_string())
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(cluster);
            }
            let exited = match cluster.server.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!(
                    "postgres did not start ({}); its log ends with:\n{}",
                    if exited { "it exited" } else { "timed out" },
                    tail(&log, 10)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A pgbench command connected to this cluster, run from its directory.
    pub(crate) fn pgbench(&self) -> Command {
        let mut c = self.tools.command(&self.tools.pgbench);
        c.current_dir(&self.dir.0)
            .arg("-h")
            .arg(&self.dir.0)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"]);
        c
    }
}

impl Drop for PgCluster<'_> {
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let stopped = self
            .tools
            .command(&self.tools.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            tracing::warn!("pg_ctl stop failed; killing the PostgreSQL server");
            let _ = server.kill();
        }
        let _ = server.wait();
    }
}

pub(crate) fn check_output(what: &str, out: &std::process::Output) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 10),
            tail(&String::from_utf8_lossy(&out.stderr), 10)
        );
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for line in &all[all.len().saturating_sub(lines)..] {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The lines of pgbench's summary this benchmark reads.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PgbenchSummary {
    pub(crate) processed: Option<u64>,
    pub(crate) failed: Option<u64>,
    pub(crate) retried: Option<u64>,
    pub(crate) total_retries: Option<u64>,
    pub(crate) latency_average_ms: Option<f64>,
    pub(crate) tps: Option<f64>,
}

impl PgbenchSummary {
    pub(crate) fn parse(text: &str) -> PgbenchSummary {
        let first_number = |rest: &str| -> Option<String> {
            let rest = rest.trim_start_matches([':', '=', ' ']);
            let n: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            (!n.is_empty()).then_some(n)
        };
        let mut s = PgbenchSummary::default();
        for line in text.lines() {
            let line = line.trim();
            let after = |prefix: &str| line.strip_prefix(prefix).and_then(first_number);
            if let Some(n) = after("number of transactions actually processed") {
                s.processed = n.parse().ok();
            } else if let Some(n) = after("number of failed transactions") {
                s.failed = n.parse().ok();
            } else if let Some(n) = after("number of transactions retried") {
                s.retried = n.parse().ok();
            } else if let Some(n) = after("total number of retries") {
                s.total_retries = n.parse().ok();
            } else if let Some(n) = after("latency average") {
                s.latency_average_ms = n.parse().ok();
            } else if let Some(n) = after("tps") {
                s.tps = n.parse().ok();
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_summary_lines_are_read() {
        let text = "transaction type: <builtin: TPC-B (sort of)>\n\
            scaling factor: 10\n\
            number of transactions actually processed: 2163\n\
            number of failed transactions: 994 (31.486%)\n\
            number of transactions retried: 2291 (72.569%)\n\
            total number of retries: 12894\n\
            latency average = 12.674 ms (including failures)\n\
            initial connection time = 15.668 ms\n\
            tps = 432.480203 (without initial connection time)\n";
        let s = PgbenchSummary::parse(text);
        assert_eq!(
            s,
            PgbenchSummary {
                processed: Some(2163),
                failed: Some(994),
                retried: Some(2291),
                total_retries: Some(12894),
                latency_average_ms: Some(12.674),
                tps: Some(432.480203),
            }
        );
    }
}
