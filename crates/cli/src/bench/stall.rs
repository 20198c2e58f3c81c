//! What the failover benchmarks share (`bench failover` for appends, `bench tpcb
//! --failovers` for commits): the acknowledgments clients record, the stall they show around
//! a kill, killing a process of a development cluster by its pid file and starting it again,
//! and nearest-rank quantiles.
//!
//! ```text
//!  clients ── Acks::record(client, first sent, acknowledged) ──▶ Acks
//!  kill    ── kill_by_pid_file: pid read, pid file removed (dev-cluster's watcher then lets
//!             the process go), kill -9; `kill_at` = when kill returned
//!  stall   ── first acknowledgment of a request first sent after `kill_at`
//!             − last acknowledgment at or before it (overall: Acks::recovered; per client:
//!             Acks::client_stalls). An acknowledgment sent before the kill and arriving
//!             just after it is not a recovery.
//!  again   ── start_detached: the program started again, its output appended to its log,
//!             its pid file written
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

/// One acknowledged request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    /// The client that sent it.
    pub(crate) client: u32,
    /// When its first try was sent, µs since the run's start.
    pub(crate) sent_us: u64,
    /// When it was acknowledged, µs since the run's start.
    pub(crate) acked_us: u64,
}

/// The acknowledgments since the last kill's measurement (and each client's last one before
/// it), shared by the clients and the benchmark.
#[derive(Debug, Default)]
pub(crate) struct Acks(Mutex<Vec<Ack>>);

impl Acks {
    /// Records one acknowledgment.
    pub(crate) fn record(&self, ack: Ack) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
    }

    /// Forgets every acknowledgment but each client's newest (the "last before" of the next
    /// kill).
    pub(crate) fn keep_last(&self) {
        let mut acks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut last: Vec<Ack> = Vec::new();
        for a in acks.iter() {
            match last.iter_mut().find(|l| l.client == a.client) {
                Some(l) if l.acked_us < a.acked_us => *l = *a,
                Some(_) => {}
                None => last.push(*a),
            }
        }
        *acks = last;
    }

    /// Waits (polling every 5 ms, at most `within`) until a request first sent after
    /// `kill_at` is acknowledged: the last acknowledgment at or before `kill_at` (if any)
    /// and that first one after, µs since the run's start.
    ///
    /// # Errors
    /// None came within `within` (`what` names what was killed).
    pub(crate) async fn recovered(
        &self,
        kill_at: u64,
        within: Duration,
        what: &str,
    ) -> anyhow::Result<(Option<u64>, u64)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.recovery(kill_at, None) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!("no request acknowledged within {within:?} of killing {what}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (at most `within`) until each of `clients` had a request first sent after
    /// `kill_at` acknowledged; each client's stall, µs: that acknowledgment − its last one at
    /// or before `kill_at` (or `kill_at` when it had none), in client order.
    ///
    /// # Errors
    /// A client did not recover within `within`.
    pub(crate) async fn client_stalls(
        &self,
        kill_at: u64,
        clients: u32,
        within: Duration,
    ) -> anyhow::Result<Vec<u64>> {
        let deadline = Instant::now() + within;
        loop {
            let stalls: Option<Vec<u64>> = (0..clients)
                .map(|c| {
                    self.recovery(kill_at, Some(c))
                        .map(|(before, after)| after - before.unwrap_or(kill_at))
                })
                .collect();
            if let Some(stalls) = stalls {
                return Ok(stalls);
            }
            if Instant::now() > deadline {
                bail!("a client had no request acknowledged within {within:?} of the kill");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last acknowledgment at or before `kill_at` and the first of a request sent
    /// after it, of `client` (or of any), once there is one after.
    fn recovery(&self, kill_at: u64, client: Option<u32>) -> Option<(Option<u64>, u64)> {
        let acks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mine = || {
            acks.iter()
                .filter(move |a| client.is_none_or(|c| a.client == c))
        };
        let after = mine()
            .filter(|a| a.sent_us > kill_at)
            .map(|a| a.acked_us)
            .min()?;
        let before = mine()
            .filter(|a| a.acked_us <= kill_at)
            .map(|a| a.acked_us)
            .max();
        Some((before, after))
    }
}

/// µs since `start`.
pub(crate) fn since_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Kills (`kill -9`) the process `pid_file` names, removing the file first so that
/// `scripts/dev-cluster`'s watcher takes the exit for intended. Returns the pid.
///
/// # Errors
/// The file cannot be read or removed, or `kill` fails.
pub(crate) fn kill_by_pid_file(pid_file: &Path) -> anyhow::Result<u32> {
    let pid = read_pid(pid_file)?;
    std::fs::remove_file(pid_file).with_context(|| format!("removing {}", pid_file.display()))?;
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -9 {pid} ({}) failed", pid_file.display());
    }
    Ok(pid)
}

/// The pid a pid file names.
///
/// # Errors
/// The file cannot be read or holds no number.
pub(crate) fn read_pid(pid_file: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no pid: {text:?}", pid_file.display()))
}

/// How a running process was started (Linux `/proc`): enough to start it again as it was.
#[derive(Debug, Clone)]
pub(crate) struct CommandLine {
    /// The executable.
    pub(crate) program: PathBuf,
    /// Its arguments, the program's name not included.
    pub(crate) args: Vec<OsString>,
    /// Its environment.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Its working directory.
    pub(crate) cwd: PathBuf,
}

impl CommandLine {
    /// The command line of process `pid`, from `/proc/PID/{exe,cmdline,environ,cwd}`.
    ///
    /// # Errors
    /// The process is gone or its `/proc` entries cannot be read.
    pub(crate) fn of(pid: u32) -> anyhow::Result<CommandLine> {
        use std::os::unix::ffi::OsStrExt;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let read = |name: &str| {
            std::fs::read(proc.join(name)).with_context(|| format!("reading /proc/{pid}/{name}"))
        };
        let split = |bytes: &[u8]| -> Vec<OsString> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string())
                .collect()
        };
        let args = split(&read("cmdline")?).into_iter().skip(1).collect();
        let env = split(&read("environ")?)
            .into_iter()
            .filter_map(|kv| {
                let bytes = kv.as_bytes();
                let eq = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&bytes[..eq]).to_os_string(),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]).to_os_string(),
                ))
            })
            .collect();
        let link = |name: &str| {
            std::fs::read_link(proc.join(name))
                .with_context(|| format!("reading /proc/{pid}/{name}"))
        };
        Ok(CommandLine {
            program: link("exe")?,
            args,
            env,
            cwd: link("cwd")?,
        })
    }

    /// The value of `--flag VALUE` or `--flag=VALUE`, if given.
    pub(crate) fn flag(&self, flag: &str) -> Option<String> {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let prefixed = format!("{flag}=");
        args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&prefixed).map(str::to_string)
            }
        })
    }
}

/// Starts `command` detached from this process (it outlives it, as `scripts/dev-cluster`'s
/// own processes do; `down` stops it), its output appended to `log`, its pid written to
/// `pid_file`.
///
/// # Errors
/// The log cannot be opened, the program cannot be started, or the pid file written.
pub(crate) fn start_detached(
    command: &CommandLine,
    log: &Path,
    pid_file: &Path,
) -> anyhow::Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = std::process::Command::new(&command.program)
        .args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", command.program.display()))?;
    std::fs::write(pid_file, format!("{}\n", child.id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    drop(child);
    Ok(())
}

/// The `q` quantile of sorted `xs` (nearest rank), or null when empty.
pub(crate) fn quantile(xs: &[f64], q: f64) -> serde_json::Value {
    if xs.is_empty() {
        return serde_json::Value::Null;
    }
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    json!(xs[rank - 1])
}

/// `{p50, p99, max}` of `xs` (any order).
pub(crate) fn summary(mut xs: Vec<f64>) -> serde_json::Value {
    xs.sort_by(f64::total_cmp);
    json!({ "p50": quantile(&xs, 0.5), "p99": quantile(&xs, 0.99), "max": xs.last() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), serde_json::Value::Null);
        assert_eq!(quantile(&[1.0, 2.0], 0.5), json!(1.0));
        assert_eq!(quantile(&[1.0, 2.0], 0.99), json!(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), json!(2.0));
        assert_eq!(
            summary(vec![3.0, 1.0, 2.0]),
            json!({"p50": 2.0, "p99": 3.0, "max": 3.0})
        );
    }

    #[test]
    fn a_stall_runs_from_the_last_ack_before_the_kill_to_the_first_of_a_request_sent_after()
    -> anyhow::Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?
            .block_on(stalls())
    }

    async fn stalls() -> anyhow::Result<()> {
        let acks = Acks::default();
        let ack = |client, sent_us, acked_us| Ack {
            client,
            sent_us,
            acked_us,
        };
        acks.record(ack(0, 10, 90));
        acks.record(ack(1, 20, 95));
        // Sent before the kill (at 100), acknowledged after: no recovery.
        acks.record(ack(0, 99, 150));
        acks.record(ack(1, 120, 400));
        acks.record(ack(0, 160, 500));
        let within = Duration::from_secs(1);
        assert_eq!(acks.recovered(100, within, "x").await?, (Some(95), 400));
        // Client 0: 90 → 500; client 1: 95 → 400.
        assert_eq!(acks.client_stalls(100, 2, within).await?, vec![410, 305]);
        // A client that never recovers is an error, once the wait is over.
        assert!(
            acks.client_stalls(100, 3, Duration::from_millis(20))
                .await
                .is_err()
        );
        acks.keep_last();
        assert_eq!(acks.recovery(600, None), None);
        acks.record(ack(1, 700, 800));
        assert_eq!(acks.recovery(600, Some(1)), Some((Some(400), 800)));
        assert_eq!(acks.recovery(600, Some(0)), None);
        Ok(())
    }

    #[test]
    fn a_flag_is_read_in_both_spellings() {
        let command = CommandLine {
            program: PathBuf::from("/bin/logbook"),
            args: [
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--cluster-advertise-url=http://a:1",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
        };
        assert_eq!(command.flag("--listen").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(
            command.flag("--cluster-advertise-url").as_deref(),
            Some("http://a:1")
        );
        assert_eq!(command.flag("--data-dir"), None);
    }
}
