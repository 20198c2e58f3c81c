//! What a JetStream acknowledgment guarantees, stated honestly.
//!
//! A JetStream stream with R replicas acknowledges a publish once a majority of its replicas
//! have the message in their Raft log. Whether that means *on disk* depends on the server:
//!
//! | nats-server | configuration                    | an ack means                          |
//! |-------------|----------------------------------|---------------------------------------|
//! | 2.9.x       | (no setting exists)              | replicated to a majority, not fsynced |
//! | ≥ 2.10      | default (`sync_interval: 2m`)    | replicated to a majority, not fsynced |
//! | ≥ 2.10      | `jetstream { sync_interval: always }` | fsynced on a majority            |
//!
//! The server's version and `sync_always` are read from each server's monitoring `/varz`;
//! anything that cannot be confirmed counts as not fsynced (a claim is never guessed upward).
//! A backend keeps them in a [`Durability`]: read when it connects, read again whenever the
//! connection is re-established (a server may have restarted with other settings), and
//! retried while a server cannot be read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;
use crate::monitor;

/// What an acknowledged append guarantees: the log crate's type, one for every backend.
pub use logbook_log::AckGuarantee;

/// One server's durability facts, from its `/varz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDurability {
    /// `version`, e.g. `2.9.10`.
    pub version: String,
    /// `jetstream.config.sync_always` (absent before 2.10: `false`).
    pub sync_always: bool,
}

/// Whether `version` (`MAJOR.MINOR.PATCH…`) is at least 2.10, the first with
/// `sync_interval: always`. An unparsable version is not.
pub fn supports_sync_always(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 10),
        _ => false,
    }
}

/// The guarantee of a stream with `replicas` replicas placed on servers described by
/// `servers` (all of the cluster's, since a stream may move): fsynced only if every one of them
/// is ≥ 2.10 with `sync_always`, and there is at least one.
pub fn guarantee(replicas: u32, servers: &[ServerDurability]) -> AckGuarantee {
    let fsynced = !servers.is_empty()
        && servers
            .iter()
            .all(|s| s.sync_always && supports_sync_always(&s.version));
    AckGuarantee { replicas, fsynced }
}

/// Reads one server's durability facts from its monitoring URL (`http://host:port`).
///
/// # Errors
/// [`crate::JetStreamError::Monitor`] when `/varz` cannot be read or lacks `version`.
pub async fn probe(monitor_url: &str, timeout: Duration) -> Result<ServerDurability> {
    let varz = monitor::get_json(monitor_url, "/varz", timeout).await?;
    let version = varz["version"]
        .as_str()
        .ok_or_else(|| crate::JetStreamError::Monitor {
            url: format!("{monitor_url}/varz"),
            detail: "no version field".into(),
        })?
        .to_string();
    let sync_always = varz["jetstream"]["config"]["sync_always"]
        .as_bool()
        .unwrap_or(false);
    Ok(ServerDurability {
        version,
        sync_always,
    })
}

/// First pause before a server whose `/varz` could not be read is read again, in ms;
/// doubles up to [`REREAD_PAUSE_MS_MAX`].
const REREAD_PAUSE_MS_MIN: u64 = 1_000;
/// Longest pause between reads of a server that cannot be read, in ms.
const REREAD_PAUSE_MS_MAX: u64 = 30_000;

/// One server as its monitoring URL last answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// The monitoring URL (`http://host:port`).
    pub monitor_url: String,
    /// Its durability facts, or why they could not be read (`None`: not read yet).
    pub read: Option<std::result::Result<ServerDurability, String>>,
}

/// What the acknowledgments of one JetStream cluster guarantee, as last read from the
/// monitoring URLs of all its servers. Fsynced only while every one of them was read and
/// is ≥ 2.10 with `sync_always`; with no URL, or while one cannot be read, not fsynced.
#[derive(Debug)]
pub struct Durability {
    servers: Mutex<Vec<ServerReport>>,
    timeout: Duration,
}

impl Durability {
    /// The durability of the cluster whose servers' monitoring URLs are `monitor_urls`,
    /// nothing read yet (not fsynced); each read waits at most `timeout`.
    pub fn new(monitor_urls: &[String], timeout: Duration) -> Durability {
        let servers = monitor_urls
            .iter()
            .map(|url| ServerReport {
                monitor_url: url.clone(),
                read: None,
            })
            .collect();
        Durability {
            servers: Mutex::new(servers),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ServerReport>> {
        // Only whole reports are replaced under the lock.
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each server as last read.
    pub fn servers(&self) -> Vec<ServerReport> {
        self.lock().clone()
    }

    /// Whether an acknowledgment is fsynced on the replicas that hold it: every server read,
    /// and each ≥ 2.10 with `sync_always` ([`guarantee`]).
    pub fn fsynced(&self) -> bool {
        let servers = self.lock();
        let read: Option<Vec<ServerDurability>> = servers
            .iter()
            .map(|s| s.read.as_ref().and_then(|r| r.as_ref().ok()).cloned())
            .collect();
        read.is_some_and(|read| guarantee(1, &read).fsynced)
    }

    /// The guarantee of a stream with `replicas` replicas, as of the last reads.
    pub fn guarantee(&self, replicas: u32) -> AckGuarantee {
        AckGuarantee {
            replicas,
            fsynced: self.fsynced(),
        }
    }

    /// Reads every server's `/varz` (all at once) and keeps the answers; returns whether
    /// every one was read. A failure is kept as its reason (logged), never an error: the
    /// guarantee is then reported as not fsynced.
    pub async fn read(&self) -> bool {
        let urls: Vec<String> = self.lock().iter().map(|s| s.monitor_url.clone()).collect();
        let probes: Vec<_> = urls
            .iter()
            .map(|url| tokio::spawn(probe_owned(url.clone(), self.timeout)))
            .collect();
        let mut reports = Vec::with_capacity(urls.len());
        for (url, probe) in urls.into_iter().zip(probes) {
            let read = match probe.await {
                Ok(Ok(server)) => Ok(server),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("the read did not finish: {e}")),
            };
            if let Err(why) = &read {
                tracing::warn!(monitor_url = %url, %why,
                    "a NATS server's settings are unknown: acknowledgments are reported not fsynced");
            }
            reports.push(ServerReport {
                monitor_url: url,
                read: Some(read),
            });
        }
        let all = reports.iter().all(|r| matches!(r.read, Some(Ok(_))));
        *self.lock() = reports;
        all
    }

    /// Reads the servers again each time `reconnects` changes (the connection was
    /// re-established), and while a server cannot be read, with pauses from 1 s doubling to
    /// 30 s. Ends when `reconnects`' sender is dropped (the connection is gone).
    pub async fn follow(self: Arc<Self>, mut reconnects: watch::Receiver<u64>) {
        let mut pause = Duration::from_millis(REREAD_PAUSE_MS_MIN);
        let mut all_read = self.lock().iter().all(|s| matches!(s.read, Some(Ok(_))));
        loop {
            if all_read {
                if reconnects.changed().await.is_err() {
                    return;
                }
                pause = Duration::from_millis(REREAD_PAUSE_MS_MIN);
            } else {
                tokio::select! {
                    changed = reconnects.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(pause) => {
                        pause = (pause * 2).min(Duration::from_millis(REREAD_PAUSE_MS_MAX));
                    }
                }
            }
            all_read = self.read().await;
        }
    }
}

/// [`probe`] with an owned URL, for a spawned task.
async fn probe_owned(url: String, timeout: Duration) -> Result<ServerDurability> {
    probe(&url, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str, sync_always: bool) -> ServerDurability {
        ServerDurability {
            version: version.into(),
            sync_always,
        }
    }

    #[test]
    fn debian_2_9_is_replicated_not_fsynced() {
        let g = guarantee(3, &vec![server("2.9.10", false); 3]);
        assert_eq!(
            g,
            AckGuarantee {
                replicas: 3,
                fsynced: false
            }
        );
        assert_eq!(g.majority(), 2);
        assert_eq!(g.to_string(), "replicated to 2 of 3, not fsynced");
    }

    #[test]
    fn fsynced_needs_every_server_at_2_10_with_sync_always() {
        assert!(guarantee(3, &vec![server("2.10.0", true); 3]).fsynced);
        assert!(guarantee(3, &vec![server("2.15.1", true); 3]).fsynced);
        let mixed = [
            server("2.15.1", true),
            server("2.15.1", false),
            server("2.15.1", true),
        ];
        assert!(!guarantee(3, &mixed).fsynced);
        // A 2.9 server claiming sync_always (it cannot) does not count.
        assert!(!guarantee(1, &[server("2.9.10", true)]).fsynced);
        assert!(!guarantee(3, &[]).fsynced);
    }

    #[test]
    fn durability_is_fsynced_only_once_every_server_is_read_and_syncs() {
        let urls = vec!["http://a:1".to_string(), "http://b:1".to_string()];
        let d = Durability::new(&urls, Duration::from_secs(1));
        assert!(!d.fsynced(), "nothing read yet");
        let set = |reads: [Option<std::result::Result<ServerDurability, String>>; 2]| {
            *d.lock() = urls
                .iter()
                .zip(reads)
                .map(|(u, read)| ServerReport {
                    monitor_url: u.clone(),
                    read,
                })
                .collect();
        };
        set([Some(Ok(server("2.15.1", true))), None]);
        assert!(!d.fsynced(), "one server not read yet");
        set([
            Some(Ok(server("2.15.1", true))),
            Some(Err("connection refused".into())),
        ]);
        assert!(!d.fsynced(), "one server unreadable");
        set([
            Some(Ok(server("2.15.1", true))),
            Some(Ok(server("2.15.1", true))),
        ]);
        assert!(d.fsynced());
        assert_eq!(
            d.guarantee(3),
            AckGuarantee {
                replicas: 3,
                fsynced: true
            }
        );
        assert!(!Durability::new(&[], Duration::from_secs(1)).fsynced());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(supports_sync_always("2.10.0"));
        assert!(supports_sync_always("v2.11.3-beta"));
        assert!(supports_sync_always("3.0.0"));
        assert!(!supports_sync_always("2.9.10"));
        assert!(!supports_sync_always("2.2.0"));
        assert!(!supports_sync_always("garbage"));
    }
}
