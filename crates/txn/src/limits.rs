//! Every limit of the transaction layer, in one place, with the relations between them
//! checked at compile time.

use logbook_log::limits as log_limits;

use crate::error::{Result, TxnError};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest key as a JSON string's content, in bytes: a control character is written as
/// six (`\u0001`).
pub const KEY_JSON_BYTES_MAX: usize = 6 * KEY_BYTES_MAX;
/// Longest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 256 * 1024;
/// Most distinct keys one transaction may write (puts, deletes, increments, `get_for_update`).
pub const WRITE_SET_KEYS_MAX: usize = 10_000;
/// Most distinct keys one transaction may read (tracked for `serializable`).
pub const READ_SET_KEYS_MAX: usize = 100_000;
/// Most range or prefix reads one transaction may make.
pub const READ_RANGES_MAX: usize = 1_000;
/// Most rows one scan returns.
pub const SCAN_ROWS_MAX: usize = 10_000;
/// What one row (or key) costs in the byte budget of a read at a snapshot
/// ([`crate::TxnStore::read_at_within`]) beyond its key and value bytes: its framing and
/// version in an answer (64 bytes), so a budget bounds many tiny rows as well as a few
/// large ones.
pub const READ_ROW_OVERHEAD_BYTES: usize = 64;
/// Most bytes of one encoded commit record (the log's record limit).
pub const COMMIT_RECORD_BYTES_MAX: usize = log_limits::RECORD_BYTES_MAX as usize;
/// Default most transactions open at once per store.
pub const OPEN_TXNS_DEFAULT: usize = 10_000;
/// Default most commits that may happen after a transaction's snapshot before it fails with
/// [`crate::TxnError::TransactionTooOld`].
pub const TXN_NEWER_COMMITS_DEFAULT: u64 = 1_000_000;
/// Default most milliseconds a transaction may stay open.
pub const TXN_AGE_MS_DEFAULT: u64 = 60_000;
/// Default number of commit request ids remembered for deduplication.
pub const COMMIT_REQUEST_IDS_DEFAULT: usize = 1_000_000;
/// Default snapshot window, in commits: how far behind the newest commit a one-shot read
/// or commit request may name its snapshot (see
/// [`crate::TxnStoreOptions::snapshot_window_commits`]). At 5,000 commits/s, two seconds —
/// a read and a commit round trip with room to spare.
pub const SNAPSHOT_WINDOW_COMMITS_DEFAULT: u64 = 10_000;
/// Longest wait, in ms, of a cluster's leader for the commit stream to reach a commit
/// request's snapshot (a follower may apply a commit from the replicated log before the
/// leader has its acknowledgment, milliseconds ahead); then
/// [`crate::TxnError::SnapshotAhead`]. Shorter than the least time a follower that
/// forwarded the request waits for the leader's answer (1 s), with room for the round
/// trip: otherwise a snapshot that is never reached is answered 504 `outcome_unknown`
/// by the follower, and every retry the same, instead of 422 `snapshot_ahead`.
pub const LEADER_SNAPSHOT_WAIT_MS: u64 = 500;
/// Default budget of the certifier's memory of committed transactions (keys written, keys
/// and range bounds read, counted with a fixed cost per entry), in bytes: 256 MiB, shared
/// among the principals that commit (see [`crate::TxnStoreOptions::certifier_bytes_max`]).
pub const CERTIFIER_BYTES_DEFAULT: usize = 256 << 20;
/// Most bytes one transaction's footprint may take in the certifier's budget (its keys
/// written, keys and range bounds read, each with its entry cost): 8 MiB. A larger one is
/// refused ([`crate::TxnError::TooMany`], `footprint bytes`) before it is certified.
pub const FOOTPRINT_BYTES_MAX: usize = 8 << 20;
/// The smallest certifier budget: a few of the largest footprints.
pub const CERTIFIER_BYTES_MIN: usize = 4 * FOOTPRINT_BYTES_MAX;
/// Longest principal name a commit request's id is scoped by, in bytes
/// ([`crate::CommitRequest::principal`]).
pub const PRINCIPAL_BYTES_MAX: usize = 128;
/// Keys examined by the incremental MVCC garbage collector after each commit.
pub const GC_KEYS_PER_COMMIT: usize = 32;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 64 < COMMIT_RECORD_BYTES_MAX);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(READ_RANGES_MAX <= READ_SET_KEYS_MAX);
const _: () = assert!(CERTIFIER_BYTES_MIN <= CERTIFIER_BYTES_DEFAULT);

/// Checks a key: 0 ..= [`KEY_BYTES_MAX`] bytes (the empty key is a key like any other).
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(TxnError::KeyTooLarge {
            bytes: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks a commit request's principal: 1..=[`PRINCIPAL_BYTES_MAX`] bytes of printable
/// ASCII, so it cannot hold the separator of a scoped request id.
pub(crate) fn check_principal(principal: Option<&str>) -> Result<()> {
    let Some(p) = principal else { return Ok(()) };
    let reason = if p.is_empty() || p.len() > PRINCIPAL_BYTES_MAX {
        "must be 1 to 128 bytes"
    } else if !p.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        "must be printable ASCII"
    } else {
        return Ok(());
    };
    Err(TxnError::InvalidRequest {
        field: "principal",
        key: None,
        reason: reason.into(),
    })
}

/// Checks a transaction's footprint in the certifier: at most [`FOOTPRINT_BYTES_MAX`]
/// bytes as its budget counts them.
pub(crate) fn check_footprint(r: &crate::CommitRequest) -> Result<()> {
    let bytes = crate::certifier::footprint_bytes(
        r.writes.keys().chain(r.locks.keys()),
        &r.reads,
        &r.ranges,
    );
    if bytes > FOOTPRINT_BYTES_MAX {
        return Err(TxnError::TooMany {
            what: "footprint bytes",
            max: FOOTPRINT_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks a scan's `limit`: at most [`SCAN_ROWS_MAX`].
pub(crate) fn check_scan_limit(limit: usize) -> Result<()> {
    if limit > SCAN_ROWS_MAX {
        return Err(TxnError::TooMany {
            what: "scan rows",
            max: SCAN_ROWS_MAX,
        });
    }
    Ok(())
}
