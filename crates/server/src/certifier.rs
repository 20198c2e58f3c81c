//! A cluster node's transaction store over its life (feature `cluster`): a follower of the
//! commit stream `_txn` while another node leads, the certifier once this node wins the
//! election, a follower again once it loses the lease or its append is refused at storage.
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
use std::time::Duration;

use logbook_jetstream::election::{Election, LeaderRecord, Leadership};
use logbook_log::LogBackend;
use logbook_txn::{TxnStore, TxnStoreOptions};
use tokio::sync::watch;

use crate::state::TxnCell;

/// The election of the certifier's leader.
pub const ELECTION: &str = "certifier";
/// How often a leader looks whether its store was fenced, in ms (the store refuses every
/// commit from the moment it is; this only bounds how soon a new follower replaces it).
const POISON_CHECK_MS: u64 = 100;
/// Pause after a failure before trying again, in ms.
const RETRY_PAUSE_MS: u64 = 500;

/// What the task needs.
pub(crate) struct Certifier {
    pub log: Arc<dyn LogBackend>,
    pub election: Election,
    pub record: LeaderRecord,
    pub cell: TxnCell,
    pub options: TxnStoreOptions,
}

impl Certifier {
    /// Runs until `stop` turns true: follows, campaigns, leads, steps down, again.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(why) = self.follow().await {
                tracing::warn!(%why, "opening the transaction store as a follower failed; retrying");
                pause(&mut stop).await;
                continue;
            }
            let leadership = tokio::select! {
                won = self.election.campaign(&self.record) => won,
                _ = stop.changed() => return,
            };
            let leadership = match leadership {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    pause(&mut stop).await;
                    continue;
                }
            };
            match self.lead(&leadership).await {
                Ok(store) => self.hold(&leadership, &store, &mut stop).await,
                Err(why) => tracing::warn!(%why, token = leadership.token(), "could not lead"),
            }
            if let Err(e) = leadership.resign().await {
                tracing::warn!(error = %e, "resigning: the key goes when the lease expires");
            }
        }
    }

    /// Opens a follower store (replaying `_txn`) and puts it in the cell.
    async fn follow(&self) -> Result<(), String> {
        let store = self.open().await?;
        self.put(Some(store));
        Ok(())
    }

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

    /// Won: re-checks the key, opens a fresh store and appends its epoch.
    async fn lead(&self, leadership: &Leadership) -> Result<Arc<TxnStore>, String> {
        if !leadership.is_leader().await.map_err(|e| e.to_string())? {
            return Err("the leader key is not ours any more".into());
        }
        let store = self.open().await?;
        let (token, node) = (leadership.token(), self.record.node_id.clone());
        let leading = store.clone();
        tokio::task::spawn_blocking(move || leading.lead(token, &node))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.put(Some(store.clone()));
        tracing::info!(token, "certifying: this node leads the commit stream");
        Ok(store)
    }

    /// Serves as the leader until the lease is lost, the store is fenced, or `stop`; then
    /// takes the store out of service at once.
    async fn hold(
        &self,
        leadership: &Leadership,
        store: &TxnStore,
        stop: &mut watch::Receiver<bool>,
    ) {
        let why = loop {
            tokio::select! {
                () = leadership.lost() => break "the election lease was lost",
                _ = stop.changed() => break "shutting down",
                () = tokio::time::sleep(Duration::from_millis(POISON_CHECK_MS)) => {
                    if store.is_poisoned() {
                        break "an append was refused at storage (fenced)";
                    }
                }
            }
        };
        tracing::warn!(why, token = leadership.token(), "stepping down");
        self.put(None);
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)) => {}
        _ = stop.changed() => {}
    }
}
