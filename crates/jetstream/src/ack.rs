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

use std::time::Duration;

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
    fn versions_compare_numerically() {
        assert!(supports_sync_always("2.10.0"));
        assert!(supports_sync_always("v2.11.3-beta"));
        assert!(supports_sync_always("3.0.0"));
        assert!(!supports_sync_always("2.9.10"));
        assert!(!supports_sync_always("2.2.0"));
        assert!(!supports_sync_always("garbage"));
    }
}
