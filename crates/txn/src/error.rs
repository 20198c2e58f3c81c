//! The transaction layer's one error type.

use logbook_log::LogError;

/// Why a commit was refused with [`TxnError::SerializationFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// Another transaction committed a write to a key this one also writes (or locked with
    /// `get_for_update`) after this one's snapshot: first committer wins.
    WriteWrite,
    /// Serializable only: committing would complete a dangerous structure of two
    /// rw-antidependencies `T1 → T2 → T3` with `T3` committed first (Cahill et al. 2008;
    /// Ports & Grittner 2012). The named transaction is the other end of this
    /// transaction's edge in that structure.
    DangerousStructure,
    /// `snapshot`/`serializable`: the transaction increments a key that a concurrent
    /// transaction also incremented (increments commute), but its reads missed a write of
    /// a concurrent commit — so the value the increment reports, taken at commit, would
    /// observe a state its snapshot reads do not.
    StaleIncrement,
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictKind::WriteWrite => "write-write conflict",
            ConflictKind::DangerousStructure => "rw-antidependency pivot",
            ConflictKind::StaleIncrement => "increment observing a commit its reads missed",
        })
    }
}

impl TxnError {
    /// An invalid request naming `field` and the key (shown as [`show_key`] does).
    pub(crate) fn invalid_key(
        field: &'static str,
        key: &[u8],
        reason: impl Into<String>,
    ) -> TxnError {
        TxnError::InvalidRequest {
            field,
            key: Some(show_key(key)),
            reason: reason.into(),
        }
    }
}

/// Renders a key for messages: UTF-8 as is, other bytes escaped.
pub(crate) fn show_key(key: &[u8]) -> String {
    String::from_utf8(key.to_vec()).unwrap_or_else(|_| key.escape_ascii().to_string())
}

/// Everything the transaction layer can fail with.
///
/// * **retry the whole transaction** ([`TxnError::is_retryable`]): `SerializationFailure`,
///   `TransactionTooOld`, `SnapshotTooOld`, `SnapshotAhead` (a cluster node behind the
///   snapshot: the same request passes once it catches up), and `CertifierShareFull` /
///   `CertifierFull` (after a wait: room comes back as open transactions end);
/// * **precondition** (`VersionMismatch`, `KeyExists`, `NotAnInteger`, `IncrementOverflow`):
///   an atomic operation failed at commit; the transaction is aborted, nothing was written;
/// * **bad input** (`*TooLarge`, `TooMany*`, `ReadOnly`, `InvalidOperation`,
///   `InvalidRequest`, `RequestIdConflict`): nothing changed;
/// * **state** (`TooManyOpenTransactions`, `Closed`, `Poisoned`), **storage** (`Log`,
///   `Corrupt`).
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction conflicts with a concurrent one and was aborted; nothing it wrote is
    /// visible. Retry the whole transaction (see [`crate::retry`]).
    #[error(
        "serialization_failure: {kind} on key {key:?} with the transaction committed at offset {conflicting_offset}"
    )]
    SerializationFailure {
        /// What kind of conflict.
        kind: ConflictKind,
        /// The key the conflict was found on (escaped if not UTF-8).
        key: String,
        /// `_txn` offset of the conflicting commit; for a conflicting read-only transaction,
        /// the offset of the first commit after it.
        conflicting_offset: u64,
    },
    /// The transaction stayed open too long: more than `limit` commits happened after its
    /// snapshot, or it was open longer than `limit` ms. It was aborted so that it stops
    /// pinning memory. Retry it.
    #[error("transaction too old: {what} exceeded the limit of {limit}")]
    TransactionTooOld {
        /// `"newer_commits"` or `"age_ms"`.
        what: &'static str,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The committing principal's share of the certifier's byte budget is full of
    /// summaries of its own commits that open transactions still need
    /// ([`crate::TxnStoreOptions::certifier_bytes_max`]; the share is the budget divided by
    /// the principals holding summaries plus one). Nothing was appended; retry after a
    /// wait — the room comes back as those transactions end. Other principals' commits are
    /// not affected.
    #[error(
        "certifier_share_full: this principal's commits that open transactions still need \
         take {held} bytes of its share of {share} bytes of the certifier's memory, and this \
         commit needs {needed} more; retry once those transactions end"
    )]
    CertifierShareFull {
        /// Bytes the principal's summaries take.
        held: usize,
        /// Its share of the budget.
        share: usize,
        /// Bytes this commit's summary would take.
        needed: usize,
    },
    /// The certifier's byte budget is full of summaries that open transactions still need
    /// (more principals began holding summaries than the shares were cut for). Nothing was
    /// appended; retry after a wait.
    #[error(
        "certifier_full: commits that open transactions still need take {held} bytes of the \
         certifier's budget of {max} bytes, and this commit needs {needed} more; retry once \
         those transactions end"
    )]
    CertifierFull {
        /// Bytes the summaries take.
        held: usize,
        /// The budget.
        max: usize,
        /// Bytes this commit's summary would take.
        needed: usize,
    },
    /// A one-shot read or commit request names a snapshot older than the store's snapshot
    /// window ([`crate::TxnStoreOptions::snapshot_window_commits`]): the versions or the
    /// certifier's summaries it needs may be gone. Nothing changed; retry the whole
    /// transaction (read again, then commit).
    #[error(
        "snapshot_too_old: snapshot {snapshot} is older than the snapshot window, which starts at offset {oldest}"
    )]
    SnapshotTooOld {
        /// The snapshot asked for.
        snapshot: u64,
        /// The oldest snapshot the store can serve now.
        oldest: u64,
    },
    /// A one-shot read or commit request that cannot hold against the log: a snapshot
    /// ahead of its durable end, a declared version that is not the one the key had at the
    /// snapshot, a write in a read-only request, more keys or ranges than the limits.
    /// Nothing changed.
    #[error("invalid request: {field}{}: {reason}", match key { Some(k) => format!(" (key {k:?})"), None => String::new() })]
    InvalidRequest {
        /// The request field at fault: `snapshot`, `reads`, `ranges`, `locks`, `writes`,
        /// `keys`.
        field: &'static str,
        /// The key concerned, when the field is a list of keys (escaped if not UTF-8).
        key: Option<String>,
        /// Why.
        reason: String,
    },
    /// A read at a snapshot whose answer would pass its byte budget where it cannot be cut:
    /// the values of its keys (which have no `next` to resume from), or a single row that
    /// alone is over the budget. Nothing was read; ask for fewer keys at once.
    #[error(
        "the answer would pass its budget of {max} bytes at {field}[{index}] ({bytes} bytes \
         of keys and values by then); read fewer keys per request"
    )]
    AnswerTooLarge {
        /// The request list at fault: `keys` or `ranges`.
        field: &'static str,
        /// The entry of that list where the budget ran out.
        index: usize,
        /// The answer's bytes counted up to and including that entry.
        bytes: usize,
        /// The budget.
        max: usize,
    },
    /// A compare-and-set or delete-if-version found another version at commit.
    #[error(
        "version_mismatch on key {key:?}: expected version {expected}, found {}",
        found.map_or("the key absent".to_string(), |v| format!("version {v}"))
    )]
    VersionMismatch {
        /// The key.
        key: String,
        /// The version the operation required.
        expected: u64,
        /// The version found (`None`: the key is absent).
        found: Option<u64>,
    },
    /// A put-if-absent found the key present at commit.
    #[error("key_exists: key {key:?} exists at version {version}")]
    KeyExists {
        /// The key.
        key: String,
        /// Its current version.
        version: u64,
    },
    /// An increment found a value that is not an i64 in decimal (a JSON integer).
    #[error("not_an_integer: key {key:?} holds a value that is not a decimal i64")]
    NotAnInteger {
        /// The key.
        key: String,
    },
    /// An increment would overflow i64.
    #[error("increment_overflow: key {key:?}: {current} + {by} overflows i64")]
    IncrementOverflow {
        /// The key.
        key: String,
        /// The value found.
        current: i64,
        /// The increment.
        by: i64,
    },
    /// A key is longer than [`crate::limits::KEY_BYTES_MAX`].
    #[error("key is {bytes} bytes; keys must be 0..={max} bytes")]
    KeyTooLarge {
        /// Key length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A value is longer than [`crate::limits::VALUE_BYTES_MAX`].
    #[error("value for key {key:?} is {bytes} bytes; the limit is {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Value length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The transaction touches more keys or ranges than a limit allows.
    #[error("transaction has too many {what}: the limit is {max}")]
    TooMany {
        /// `"written keys"`, `"read keys"`, `"range reads"`, or `"commit bytes"`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A write in a transaction begun as read-only.
    #[error("transaction is read-only")]
    ReadOnly,
    /// An operation that cannot be combined with what the transaction already did.
    #[error("invalid operation on key {key:?}: {reason}")]
    InvalidOperation {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The commit's request id already committed a *different* transaction (other
    /// operations, locks or isolation level: its intents fingerprint differs; compared only
    /// when that commit read nothing, see [`crate::Txn::commit_with`]). Nothing was
    /// committed and the transaction is aborted. Not retryable: a new transaction needs a
    /// new request id.
    ///
    /// The message does not name the offset: it is shown to any token of the principal
    /// the id is scoped by, which may not be one that may read what that commit wrote.
    #[error(
        "request_id_conflict: request id {request_id:?} already committed a different \
         transaction; a new transaction needs a new request id"
    )]
    RequestIdConflict {
        /// The request id.
        request_id: String,
        /// `_txn` offset of the commit that used it; `None` for a read-only commit (which
        /// appended nothing).
        offset: Option<u64>,
    },
    /// More transactions are open than the store allows.
    #[error("too many open transactions: the limit is {max}")]
    TooManyOpenTransactions {
        /// The limit.
        max: usize,
    },
    /// The transaction already committed or aborted.
    #[error("transaction is closed")]
    Closed,
    /// An earlier commit failed to become durable; the store refuses work until reopened
    /// (reopening rebuilds it from the log).
    #[error("the transaction store is poisoned by an earlier failed commit; reopen it")]
    Poisoned,
    /// A follower did not apply the commit stream up to a client's snapshot (or version)
    /// within the wait: it is ahead of this node. Retry, or ask with a longer wait.
    #[error(
        "snapshot {snapshot} is ahead of this node: it applied the commit stream below {applied}"
    )]
    SnapshotAhead {
        /// The snapshot asked for.
        snapshot: u64,
        /// Where this node's table is.
        applied: u64,
    },
    /// This store follows a commit stream written by an elected leader (a cluster) and is
    /// not that leader: it derives the table and serves reads, but certifies nothing.
    #[error("this node is not the certifier's leader; commits go to the leader")]
    NotLeader,
    /// A newer leader's epoch is in the commit stream: this store's append was refused at
    /// storage (nothing of it was stored) and the store stepped down for good (it is
    /// poisoned; reopen it as a follower).
    #[error("fenced: a newer leader than epoch {epoch} appended to the commit stream; {detail}")]
    Fenced {
        /// The epoch (fencing token) this store led with.
        epoch: u64,
        /// What was refused.
        detail: String,
    },
    /// The commit stream exists with settings a commit stream cannot have.
    #[error("commit stream {stream:?}: {reason}")]
    CommitStream {
        /// The stream name.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// The commit stream holds a record that is not a valid commit record.
    #[error("commit stream record at offset {offset} is not a valid commit record: {reason}")]
    Corrupt {
        /// Offset in the commit stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log failed (I/O, corruption, limits).
    #[error(transparent)]
    Log(#[from] LogError),
}

impl TxnError {
    /// Whether re-running the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TxnError::SerializationFailure { .. }
                | TxnError::TransactionTooOld { .. }
                | TxnError::SnapshotTooOld { .. }
                | TxnError::SnapshotAhead { .. }
                | TxnError::CertifierShareFull { .. }
                | TxnError::CertifierFull { .. }
        )
    }

    /// The stable code of this error (the `code` of the HTTP problem document).
    pub fn code(&self) -> &'static str {
        match self {
            TxnError::SerializationFailure { .. } => "serialization_failure",
            TxnError::TransactionTooOld { .. } => "transaction_too_old",
            TxnError::SnapshotTooOld { .. } => "snapshot_too_old",
            TxnError::CertifierShareFull { .. } => "certifier_share_full",
            TxnError::CertifierFull { .. } => "certifier_full",
            TxnError::InvalidRequest { .. } => "unprocessable_request",
            TxnError::AnswerTooLarge { .. } => "answer_too_large",
            TxnError::VersionMismatch { .. } => "version_mismatch",
            TxnError::KeyExists { .. } => "key_exists",
            TxnError::NotAnInteger { .. } => "not_an_integer",
            TxnError::IncrementOverflow { .. } => "increment_overflow",
            TxnError::KeyTooLarge { .. } => "key_too_large",
            TxnError::ValueTooLarge { .. } => "value_too_large",
            TxnError::TooMany { .. } => "transaction_too_large",
            TxnError::ReadOnly => "read_only_transaction",
            TxnError::InvalidOperation { .. } => "invalid_operation",
            TxnError::RequestIdConflict { .. } => "request_id_conflict",
            TxnError::TooManyOpenTransactions { .. } => "too_many_transactions",
            TxnError::Closed => "transaction_closed",
            TxnError::Poisoned => "store_poisoned",
            TxnError::SnapshotAhead { .. } => "snapshot_ahead",
            TxnError::NotLeader | TxnError::Fenced { .. } => "leader_unavailable",
            TxnError::Corrupt { .. } => "corrupt",
            TxnError::CommitStream { .. } => "commit_stream",
            TxnError::Log(LogError::OutcomeUnknown { .. }) => "outcome_unknown",
            TxnError::Log(_) => "log_error",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TxnError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_outcome_has_its_own_code_and_other_log_errors_share_one() {
        let unknown = TxnError::Log(LogError::OutcomeUnknown {
            backend: "commit stream's",
            why: "no acknowledgment".into(),
        });
        assert_eq!(unknown.code(), "outcome_unknown");
        assert!(
            !unknown.is_retryable(),
            "a blind re-run may commit it twice"
        );
        assert_eq!(TxnError::Log(LogError::Closed).code(), "log_error");
    }
}
