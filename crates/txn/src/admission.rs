//! The checks a commit request passes against the table — with the table locked, so garbage
//! collection and newer commits cannot move under them — before the certifier sees it: the
//! snapshot lies in the retained window and in the certifier's memory, locks are not ahead
//! of the durable log, and each declared read is what the key held at the snapshot. Both
//! forms of commit run them: the one-shot request ([`crate::oneshot`]) and the certifying
//! step of [`crate::store`] — which runs the snapshot's checks for a registered
//! transaction too when it kept no history while open (a read-only one at the newest
//! snapshot).

use crate::Isolation;
use crate::error::{Result, TxnError};
use crate::mvcc::Table;
use crate::request::CommitRequest;

/// A named snapshot must not be ahead of the durable log.
pub(crate) fn check_ahead(snapshot: u64, durable: u64) -> Result<()> {
    if snapshot > durable {
        return Err(TxnError::InvalidRequest {
            field: "snapshot",
            key: None,
            reason: format!(
                "snapshot {snapshot} is ahead of the log: commits are durable below offset {durable}"
            ),
        });
    }
    Ok(())
}

/// A snapshot whose commit is certified within the window must lie in it, behind the
/// newest commit. Called with the table locked, so garbage collection cannot pass it.
pub(crate) fn check_window(table: &Table, snapshot: u64, window: u64) -> Result<()> {
    let oldest = table.applied().saturating_sub(window);
    if snapshot < oldest {
        return Err(TxnError::SnapshotTooOld { snapshot, oldest });
    }
    Ok(())
}

/// A one-shot commit's snapshot must not lie below `certified_from`, where the certifier's
/// memory of commits begins (a restart or a new leader replays the table but not the
/// summaries): certifying it would miss conflicts with the commits in between and let a
/// lost update or write skew through. Refused as retryable `snapshot_too_old`.
pub(crate) fn check_certified(snapshot: u64, certified_from: u64) -> Result<()> {
    if snapshot < certified_from {
        return Err(TxnError::SnapshotTooOld {
            snapshot,
            oldest: certified_from,
        });
    }
    Ok(())
}

/// A lock's position (the snapshot its `get_for_update` read at: after the request's own
/// snapshot at `read_committed`) must not be ahead of the durable log either.
pub(crate) fn check_locks(r: &CommitRequest, durable: u64) -> Result<()> {
    match r.locks.iter().find(|(_, at)| **at > durable) {
        Some((key, at)) => Err(TxnError::invalid_key(
            "locks",
            key,
            format!("locked at {at}, ahead of the log: commits are durable below offset {durable}"),
        )),
        None => Ok(()),
    }
}

/// Each declared read must be what the key held at the snapshot: its version, or `None`
/// for absent (a tombstone is absent). At `read_committed` reads are not tracked, so they
/// are not checked either.
pub(crate) fn check_versions(table: &Table, r: &CommitRequest) -> Result<()> {
    if r.isolation == Isolation::ReadCommitted {
        return Ok(());
    }
    for (key, declared) in &r.reads {
        let held = table
            .get(key, r.snapshot)
            .and_then(|(v, value)| value.map(|_| v));
        if held != *declared {
            let show = |v: Option<u64>| v.map_or("absent".to_string(), |v| format!("version {v}"));
            return Err(TxnError::invalid_key(
                "reads",
                key,
                format!(
                    "declared {}, but at snapshot {} the key was {}",
                    show(*declared),
                    r.snapshot,
                    show(held)
                ),
            ));
        }
    }
    Ok(())
}
