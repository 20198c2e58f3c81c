//! The transaction store on a cluster: one leader, elected elsewhere (etcd), certifies and
//! writes the commit stream; every other node follows it.
//!
//! ```text
//!  follower ── its thread applies `_txn` as it grows (follower.rs) ──▶ follow_to ──▶ reads
//!      │
//!      │ lead(token): replay to the end, append an epoch record under the expected end
//!      ▼
//!  leader ── every commit record stamped with the token, appended under the expected end
//!      │
//!      │ an append refused at storage (a newer epoch is there): poisoned, never again leader
//!      ▼
//!  stepped down ── the caller opens a new follower (the table rebuilt from `_txn`)
//! ```
//!
//! Why the check at storage is the one that counts: an election alone cannot stop a deposed
//! leader (paused, partitioned, or trusting an expired lease) from writing — etcd's
//! election helper can report leadership on an expired lease (etcd#19597), and locks
//! lacking the lock-after-expiry fix (etcd#11456) were found unsafe. The commit stream's
//! expected-end precondition lets exactly one writer extend a given end, so once a new
//! leader's epoch record is in, every append of the old leader names a stale end and is
//! refused — all but one chained on a record of its own that the epoch record displaced:
//! that one's expected end holds, and it is stored after the epoch. Replay ignores a commit
//! stamped with an epoch older than one before it (and the newest epoch's commits after
//! such a record), and the old leader answers none of them as committed: a commit is
//! acknowledged only once the one before it is known to be in the chain (`store.rs`).
//! Decision record 0014.

use logbook_log::{AppendCondition, LogError, Record};

use crate::error::{Result, TxnError};
use crate::mvcc::Table;
use crate::record::EpochRecord;
use crate::store::{CommitState, TxnStore, lock, replay};

impl TxnStore {
    /// Applies what the commit stream holds beyond the table (both locks held).
    fn replay_into(&self, state: &mut CommitState, table: &mut Table) -> Result<()> {
        replay(self.partition(), self.span, self.options(), state, table)
    }

    /// The epoch (fencing token) this store certifies under; `None` while it follows.
    pub fn leading(&self) -> Option<u64> {
        lock(&self.state).leading
    }

    /// Becomes the commit stream's writer under `token` (the election's fencing token,
    /// greater than every earlier leader's): replays to the end, then appends an epoch
    /// record naming `node_id` where the stream ends now. From then on every commit record
    /// carries the token and is appended right after the previous one.
    ///
    /// # Errors
    /// [`TxnError::Fenced`] when the stream already holds an epoch at or above `token`, or
    /// another writer extended the stream first (campaign again); [`TxnError::CommitStream`]
    /// for a store not opened with [`crate::TxnStoreOptions::elected`] or already leading;
    /// [`TxnError::Corrupt`], [`TxnError::Log`] — then the epoch's outcome may be unknown: open a new
    /// follower before leading again.
    pub fn lead(&self, token: u64, node_id: &str) -> Result<()> {
        self.check_poisoned()?;
        let mut state = lock(&self.state);
        if !self.options().elected || state.leading.is_some() {
            return Err(TxnError::CommitStream {
                stream: self.options().stream.clone(),
                reason: "lead: only a follower opened with `elected` can become its leader".into(),
            });
        }
        let mut table = self.write_table();
        self.replay_into(&mut state, &mut table)?;
        // As a follower it certified nothing: its memory of commits starts here.
        state.certified_from = table.applied();
        let fenced = |detail: String| TxnError::Fenced {
            epoch: token,
            detail,
        };
        if token <= state.epoch_seen {
            return Err(fenced(format!(
                "the commit stream already holds epoch {}",
                state.epoch_seen
            )));
        }
        let position = state.next_offset;
        let record = EpochRecord {
            token,
            node_id: node_id.to_string(),
        };
        let appended = self
            .partition()
            .append_batch(
                &[Record::new(record.encode())],
                AppendCondition::EndOffset(position * self.span),
            )
            .and_then(|completion| completion.wait());
        match appended {
            Ok(_) => {}
            Err(LogError::EndOffsetMismatch { actual, .. }) => {
                return Err(fenced(format!(
                    "another writer extended the commit stream to offset {actual} first"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        table.apply(position, &[], 0);
        state.next_offset = position + 1;
        // Its chain starts here: every record up to the epoch record is in the stream.
        self.settled.raise(position + 1);
        state.epoch_seen = token;
        state.leading = Some(token);
        // Waits for the follower's table end: a leader's table is ahead of the stream.
        self.advanced.notify_all();
        tracing::info!(
            epoch = token,
            position,
            node_id,
            "leading the commit stream"
        );
        Ok(())
    }
}
