//! Opening a transaction store: the table rebuilt from its commit stream (`store.rs`), then,
//! for a store whose leader is elected elsewhere (a cluster), its follower's thread
//! (`follower.rs`). Apart from both, so that the store never names the follower built on it.

use std::sync::Arc;

use logbook_log::LogBackend;

use crate::error::Result;
use crate::store::{TxnStore, TxnStoreOptions};

impl TxnStore {
    /// Opens (or creates) the commit stream in `log` and rebuilds the table from it; with
    /// [`TxnStoreOptions::elected`], starts the thread that follows the leader's commits.
    ///
    /// # Errors
    /// [`TxnError::CommitStream`](crate::TxnError::CommitStream) if the stream exists with
    /// more than one partition or has lost its first records to retention, or the follower's
    /// thread cannot start; [`TxnError::Corrupt`](crate::TxnError::Corrupt) if a record is
    /// not a commit record; [`TxnError::Log`](crate::TxnError::Log) for log failures.
    pub fn open(log: &dyn LogBackend, options: TxnStoreOptions) -> Result<Arc<TxnStore>> {
        let store = TxnStore::rebuild(log, options)?;
        if store.options().elected {
            crate::follower::start(&store)?;
        }
        Ok(store)
    }
}
