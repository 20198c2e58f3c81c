//! A cluster follower's applier: one thread per follower store applies the commit stream to
//! its table as the stream grows, so that a request only waits until the table holds what
//! it needs ([`TxnStore::follow_to`]) and never reads the log itself.
//!
//! ```text
//!  loop: end observed ≤ applied? ── wait for the end to rise (the log's wait; a read or
//!        │                          state request of any caller wakes it)
//!        └ read the records known stored, ≤ 4096   (no lock held: I/O; JetStream's gets
//!                                                     16 in flight at once)
//!          apply them under the commit lock and the table's write lock   (memory only)
//!          signal `advanced` ──▶ waiting requests
//! ```
//!
//! The thread ends when the store is dropped (it holds only a weak reference between
//! rounds), begins to lead (its table is then ahead of the stream), or is poisoned. A read
//! that fails is tried again after a pause (the log may be between leaders); a record that
//! is not a commit-stream record poisons the store: no table derived past it would be true.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Result, TxnError};
use crate::store::{REPLAY_BYTES_MAX, REPLAY_RECORDS_MAX, TxnStore, apply_records, lock};

/// Longest the thread waits for the stream to grow before it looks whether its store is
/// still there (so a dropped follower's thread ends within this), in ms.
const IDLE_WAIT_MS: u64 = 1_000;
/// Pause after a failed read before the next, in ms.
const RETRY_PAUSE_MS: u64 = 100;

/// Starts the follower thread of `store` (opened with `elected`).
///
/// # Errors
/// [`TxnError::CommitStream`] when the thread cannot be spawned.
pub(crate) fn start(store: &Arc<TxnStore>) -> Result<()> {
    let weak = Arc::downgrade(store);
    std::thread::Builder::new()
        .name(format!("follow-{}", store.options().stream))
        .spawn(move || run(&weak))
        .map(drop)
        .map_err(|e| TxnError::CommitStream {
            stream: store.options().stream.clone(),
            reason: format!("cannot start its follower thread: {e}"),
        })
}

/// The follower loop; see the module documentation.
fn run(weak: &Weak<TxnStore>) {
    let mut failing = false;
    loop {
        let Some(store) = weak.upgrade() else { return };
        if store.is_poisoned() || store.leading().is_some() {
            return;
        }
        let from = store.applied_end();
        let stream = store.stream.clone();
        let above = from * store.span;
        if store.partition().end_offset() <= above {
            // Nothing known beyond the table: wait without keeping the store alive.
            drop(store);
            if let Ok(partition) = stream.partition(0) {
                partition.wait_end_offset_above(above, Duration::from_millis(IDLE_WAIT_MS));
            }
            continue;
        }
        match apply_next(&store, from) {
            Ok(()) => failing = false,
            Err(e @ TxnError::Corrupt { .. }) => {
                tracing::error!(error = %e, "the commit stream holds a record that is not a commit-stream record: the follower stops, the store is poisoned");
                store.poison();
                return;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, from, "following the commit stream failed; retrying");
                }
                failing = true;
                drop(store);
                std::thread::sleep(Duration::from_millis(RETRY_PAUSE_MS));
            }
        }
    }
}

/// Reads the records from position `from` (no lock held) and applies them, unless the table
/// moved meanwhile (the store began to lead: [`TxnStore::lead`] replays under the locks).
fn apply_next(store: &TxnStore, from: u64) -> Result<()> {
    let partition = store.partition();
    // Only the records known to be stored (one per batch): the read then ends without
    // looking for more (on JetStream a get that finds nothing, and a state request).
    let known = (partition.end_offset() / store.span).saturating_sub(from);
    let records_max =
        usize::try_from(known).map_or(REPLAY_RECORDS_MAX, |k| k.clamp(1, REPLAY_RECORDS_MAX));
    let recs = partition.read(from * store.span, records_max, REPLAY_BYTES_MAX)?;
    if recs.is_empty() {
        return Ok(());
    }
    let mut state = lock(&store.state);
    if state.leading.is_some() || state.next_offset != from {
        return Ok(());
    }
    let mut table = store.write_table();
    apply_records(recs, store.span, store.options(), &mut state, &mut table)?;
    drop(table);
    store.advanced.notify_all();
    Ok(())
}

/// How long [`TxnStore::catch_up`] waits for the follower to apply the stream's end.
const CATCH_UP_WAIT_MS: u64 = 5_000;

impl TxnStore {
    /// The commit stream's end now, as a position (records `0..end`): asks the log (one
    /// request on JetStream; none on the embedded log). When the log cannot be asked, the
    /// end this node observed last.
    pub fn stream_end(&self) -> u64 {
        let partition = self.partition();
        partition
            .latest_end_offset()
            .unwrap_or_else(|_| partition.end_offset())
            / self.span
    }

    /// Waits until the table holds the records below `position` (a client's snapshot or
    /// version), at most `timeout`; returns the table's position. The follower thread
    /// applies them; a leader's or a single node's table is ahead of the stream already.
    ///
    /// # Errors
    /// [`TxnError::SnapshotAhead`] when the table does not reach `position` in time;
    /// [`TxnError::Poisoned`].
    pub fn follow_to(&self, position: u64, timeout: Duration) -> Result<u64> {
        let deadline = std::time::Instant::now() + timeout;
        if let Some(last) = position.checked_sub(1) {
            // The log's wait learns the end; a rise wakes the follower thread at once.
            self.partition()
                .wait_end_offset_above(last * self.span, timeout);
        }
        let mut state = lock(&self.state);
        loop {
            self.check_poisoned()?;
            if !self.options().elected || state.leading.is_some() || state.next_offset >= position {
                return Ok(state.next_offset);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TxnError::SnapshotAhead {
                    snapshot: position,
                    applied: state.next_offset,
                });
            }
            state = self
                .advanced
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A follower waits until its table holds what this node has seen the commit stream
    /// hold — every commit acknowledged on this node before the call — at most 5 s: on the
    /// embedded log its end; on JetStream the highest end this node's handle observed (its
    /// acknowledgments, reads, waits; the partition's watch), so nothing is asked of the
    /// log. A leader's or a single node's table is ahead of the stream already. Returns
    /// the table's position.
    ///
    /// # Errors
    /// As [`TxnStore::follow_to`].
    pub fn follow_observed(&self) -> Result<u64> {
        self.check_poisoned()?;
        let observed = self.partition().end_offset() / self.span;
        if !self.options().elected || self.applied_end() >= observed {
            return Ok(self.applied_end());
        }
        self.follow_to(observed, Duration::from_millis(CATCH_UP_WAIT_MS))
    }

    /// A follower waits until its table holds what the commit stream holds now (at most
    /// 5 s; the leader's table is ahead of the stream already). Returns the table's
    /// position: the records `0..position` are applied.
    ///
    /// # Errors
    /// As [`TxnStore::follow_to`].
    pub fn catch_up(&self) -> Result<u64> {
        self.check_poisoned()?;
        if !self.options().elected || self.leading().is_some() {
            return Ok(lock(&self.state).next_offset);
        }
        self.follow_to(self.stream_end(), Duration::from_millis(CATCH_UP_WAIT_MS))
    }
}
