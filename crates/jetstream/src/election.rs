//! Leader election through etcd: one key per election, created under a lease by whichever
//! candidate gets there first; the key's **create revision** is the winner's fencing token.
//!
//! ```text
//!  campaign ── LeaseGrant(ttl) + keep-alive task (every ttl/3; lost after a whole ttl)
//!           └─ loop: Txn(if create_revision(key) == 0 then Put(key, record, lease)
//!                        else Get(key))
//!                    won  → Leadership { token = the Put's revision }
//!                    lost → pause (poll), again; the key goes when its holder's lease does
//!  is_leader ── Txn(if create_revision(key) == token and lease(key) == lease) — a re-check
//!  resign ── stop the keep-alives, LeaseRevoke (the key goes at once)
//! ```
//!
//! Tokens only grow: etcd revisions are the store's global, monotonic counter, and a key
//! created again gets a new, greater create revision. Lease ids are not ordered and are no
//! token. Winning says only that this candidate *was* the leader when etcd answered: a
//! paused process may go on believing it (etcd's own election helper can report leadership
//! on an expired lease, etcd#19597). So leadership is never trusted alone — whatever the
//! leader writes must be fenced by its token at the storage it writes to (the transaction
//! store's epoch records; decision record 0014).

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::membership::{Membership, MembershipError, Renewal, Result, renew};

/// Pause between two attempts of a candidate that lost, in ms: a new leader is found within
/// this after the old one's key goes.
pub const CAMPAIGN_POLL_MS: u64 = 250;

/// What the leader key holds: who leads and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leader's node id.
    pub node_id: String,
    /// The URL other nodes forward to.
    pub advertise_url: String,
}

/// The current leader as etcd shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// What it wrote.
    pub record: LeaderRecord,
    /// Its fencing token (the key's create revision).
    pub token: u64,
}

/// One election (one key) of a cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Election {
    membership: Membership,
    key: String,
}

impl Membership {
    /// The election `name` of this cluster (key `/logbook/<cluster>/elections/<name>`).
    pub fn election(&self, name: &str) -> Election {
        Election {
            key: format!("/logbook/{}/elections/{name}", self.settings.cluster),
            membership: self.clone(),
        }
    }
}

impl Election {
    /// The leader now, if any.
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]; [`MembershipError::Decode`] for a value that is
    /// not a leader record.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let key = self.key.as_str();
        let got = self
            .membership
            .call(|mut c| async move { c.get(key, None).await })
            .await?;
        got.kvs().first().map(|kv| self.decode(kv)).transpose()
    }

    fn decode(&self, kv: &etcd_client::KeyValue) -> Result<Leader> {
        let record = serde_json::from_slice(kv.value()).map_err(|e| MembershipError::Decode {
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        Ok(Leader {
            record,
            token: u64::try_from(kv.create_revision()).unwrap_or(0),
        })
    }

    /// Campaigns until this candidate leads (or etcd cannot be reached): waits while another
    /// holds the key. The lease is kept alive from a background task until
    /// [`Leadership::resign`] or drop (then the key goes when the lease expires).
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]; [`MembershipError::Decode`].
    pub async fn campaign(&self, record: &LeaderRecord) -> Result<Leadership> {
        let value = serde_json::to_vec(record).map_err(|e| MembershipError::Decode {
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        let ttl = self.membership.settings.lease_ttl_s;
        let lease_id = self
            .membership
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn(keep_alive(self.membership.clone(), lease_id, lost_tx));
        let leadership = |token| Leadership {
            election: self.clone(),
            lease_id,
            token,
            lost: lost.clone(),
            task: Some(task),
        };
        loop {
            if *lost.borrow() {
                return Err(MembershipError::Unavailable {
                    endpoints: self.membership.settings.endpoints.join(","),
                    detail: "the campaign's lease expired before it won".into(),
                });
            }
            if let Some(token) = self.try_once(&value, lease_id).await? {
                tracing::info!(key = %self.key, token, "won the election");
                return Ok(leadership(token));
            }
            tokio::time::sleep(Duration::from_millis(CAMPAIGN_POLL_MS)).await;
        }
    }

    /// One attempt: creates the key under `lease_id` if it does not exist. `Some(token)`
    /// when this attempt created it.
    async fn try_once(&self, value: &[u8], lease_id: i64) -> Result<Option<u64>> {
        let key = self.key.as_str();
        let answer = self
            .membership
            .call(|mut c| async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value,
                        Some(PutOptions::new().with_lease(lease_id)),
                    )]);
                c.txn(txn).await
            })
            .await?;
        if !answer.succeeded() {
            return Ok(None);
        }
        // The put created the key: its create revision is the transaction's revision.
        let revision = answer.header().map_or(0, |h| h.revision());
        match u64::try_from(revision) {
            Ok(token) if token > 0 => Ok(Some(token)),
            _ => Err(MembershipError::Decode {
                key: self.key.clone(),
                detail: format!("etcd answered revision {revision} for a created key"),
            }),
        }
    }
}

/// This candidate's leadership: its token, and a flag the keep-alive task raises when the
/// lease is lost.
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    lease_id: i64,
    token: u64,
    lost: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// The fencing token: greater than every earlier leader's of this election.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the keep-alives stopped renewing the lease (expired, or unanswered for a
    /// whole TTL): another candidate may lead by now.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Waits until the lease is lost (see [`Leadership::is_lost`]).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the task ended: the lease is not renewed any more either.
        let _ = lost.wait_for(|l| *l).await;
    }

    /// Re-checks with etcd that the key is still this leadership's (same create revision,
    /// same lease).
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]: unknown.
    pub async fn is_leader(&self) -> Result<bool> {
        let key = self.election.key.as_str();
        let (token, lease) = (self.token as i64, self.lease_id);
        let answer = self
            .election
            .membership
            .call(|mut c| async move {
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(key, CompareOp::Equal, token),
                        Compare::lease(key, CompareOp::Equal, lease),
                    ])
                    .and_then([TxnOp::get(key, None)]);
                c.txn(txn).await
            })
            .await?;
        let held = answer.succeeded()
            && answer
                .op_responses()
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
        Ok(held)
    }

    /// Steps down: stops the keep-alives and revokes the lease, so the key goes at once.
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`]: the key then goes when the lease expires.
    pub async fn resign(mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let lease = self.lease_id;
        self.election
            .membership
            .call(|mut c| async move { c.lease_revoke(lease).await })
            .await
            .map(|_| ())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renews the lease every third of its TTL; raises `lost` once the lease expired or went a
/// whole TTL without a renewal, and stops (a lost leadership is not won back: campaign
/// again, for a new token).
async fn keep_alive(membership: Membership, lease_id: i64, lost: watch::Sender<bool>) {
    let ttl = Duration::from_secs(membership.settings.lease_ttl_s.unsigned_abs());
    let period = ttl / 3;
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        match renew(&membership, lease_id, period).await {
            Ok(()) => {
                renewed_at = tokio::time::Instant::now();
                tokio::time::sleep(period).await;
            }
            Err(Renewal::Failed(error)) if renewed_at.elapsed() < ttl => {
                tracing::warn!(lease_id, %error, "election lease renewal failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Renewal::Expired) | Err(Renewal::Failed(_)) => {
                tracing::warn!(lease_id, "election lease lost");
                lost.send_replace(true);
                return;
            }
        }
    }
}
