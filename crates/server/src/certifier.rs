//! A cluster node's transaction store over its life (feature `cluster`): a follower of the
//! commit stream `_txn` while another node leads, the certifier once this node wins the
//! election, a follower again once it loses the lease or its append is refused at storage.
//! The election loop is `elected.rs`'s; this is what following and leading mean here.
//!
//! ```text
//!  follower ── open (replay `_txn`) ── campaign (etcd; waits while another leads)
//!     ▲            won: re-check the key (etcd txn) ── open a fresh store, lead(token):
//!     │                 replay to the end, epoch record under the expected end
//!     │      leader ── certifies; every commit chained on the previous record
//!     └───── lease lost │ store poisoned (fenced: a newer epoch is in `_txn`) │ lead refused
//!            → resign, discard the store (its uncommitted certifications with it)
//! ```
//!
//! A new store is opened for every role change: the table is rebuilt from `_txn`, so
//! nothing a deposed leader certified but could not append survives. Decision record 0014.

use std::sync::Arc;

use logbook_log::LogBackend;
use logbook_txn::{TxnStore, TxnStoreOptions};

use crate::elected::Role;
use crate::state::TxnCell;

/// The election of the certifier's leader.
pub const ELECTION: &str = "certifier";

/// The certifier's role: the transaction store in the cell, a follower's or the leader's.
pub(crate) struct Certifier {
    pub log: Arc<dyn LogBackend>,
    pub node_id: String,
    pub cell: TxnCell,
    pub options: TxnStoreOptions,
}

impl Certifier {
    async fn open(&self) -> Result<Arc<TxnStore>, String> {
        let (log, options) = (self.log.clone(), self.options.clone());
        tokio::task::spawn_blocking(move || TxnStore::open(&*log, options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn put(&self, store: Option<Arc<TxnStore>>) {
        *self.cell.write().unwrap_or_else(|e| e.into_inner()) = store;
    }
}

impl Role for Certifier {
    const NAME: &'static str = "certifier";

    /// Opens a follower store (replaying `_txn`) and puts it in the cell.
    async fn follow(&self) -> Result<(), String> {
        let store = self.open().await?;
        self.put(Some(store));
        Ok(())
    }

    /// Opens a fresh store and appends its epoch.
    async fn lead(&self, token: u64) -> Result<(), String> {
        let store = self.open().await?;
        let node = self.node_id.clone();
        let leading = store.clone();
        tokio::task::spawn_blocking(move || leading.lead(token, &node))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.put(Some(store));
        tracing::info!(token, "certifying: this node leads the commit stream");
        Ok(())
    }

    fn fenced(&self) -> bool {
        self.cell
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|store| store.is_poisoned())
    }

    /// Takes the store out of service at once.
    fn step_down(&self) {
        self.put(None);
    }
}
