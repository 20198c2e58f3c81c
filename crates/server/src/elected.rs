//! One role a cluster node holds while an etcd election names it (feature `cluster`): the
//! certifier of `_txn` (`certifier.rs`), the coordinator of the consumer groups
//! (`groups/coordinator.rs`). This is the loop they share; what leading means is the role's.
//!
//! ```text
//!  follow ── wait while unfit ── campaign (etcd; waits while another leads)
//!     ▲         won: re-check the key (etcd txn) ── role.lead(token): its first write is
//!     │              fenced at storage (an epoch record under the expected end)
//!     │      leading ── until the lease is lost, the role was fenced, the node became
//!     │                 unfit, or shutdown
//!     └───── role.step_down(); resign (the key goes at once)
//! ```
//!
//! The gate (`unfit`, from `peers::watch_node`: why this node may not lead, `None` when it
//! may): a node whose clock is off the cluster's median beyond `max_clock_offset_ms`, or
//! that hears only a minority of the cluster (phi accrual), neither campaigns nor keeps
//! leading. The gate is advice that makes a doubtful leader go early; the etcd lease and
//! the fencing at storage stay the authority.
//!
//! Winning an election says only that this node *was* the leader when etcd answered; the
//! role's writes must be fenced where they are stored (decision record 0014), and
//! [`Role::fenced`] says when one was refused.

use std::future::Future;
use std::time::Duration;

use logbook_jetstream::election::{Election, LeaderRecord, Leadership};
use tokio::sync::watch;

/// How often a leader looks whether its role was fenced, in ms (the role refuses to write
/// from the moment it is; this only bounds how soon the node campaigns again).
const FENCED_CHECK_MS: u64 = 100;
/// Pause after a failure before trying again, in ms.
const RETRY_PAUSE_MS: u64 = 500;

/// What a node does as the follower and as the leader of one election.
pub(crate) trait Role: Send + Sync {
    /// The role in logs.
    const NAME: &'static str;
    /// Serves as a follower (before each campaign).
    fn follow(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts leading under the election's fencing `token`.
    fn lead(&self, token: u64) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether a write of this term was refused at storage (another leader wrote since).
    fn fenced(&self) -> bool;
    /// Stops leading, at once.
    fn step_down(&self);
}

/// Runs `role` in `election` until `stop` turns true: follows, campaigns while `unfit` is
/// `None` (the clock agrees with the cluster's and a majority is heard), leads, steps down,
/// again.
pub(crate) async fn run<R: Role>(
    role: R,
    election: Election,
    record: LeaderRecord,
    mut unfit: watch::Receiver<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(why) = role.follow().await {
            tracing::warn!(role = R::NAME, %why, "following failed; retrying");
            pause(&mut stop).await;
            continue;
        }
        if unfit.borrow().is_some() {
            // Not a candidate while unfit: wait until it is fit, then follow again (a
            // closed watch never clears: only `stop` ends the wait).
            tokio::select! {
                Ok(_) = unfit.wait_for(Option::is_none) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let leadership = tokio::select! {
            won = election.campaign(&record) => won,
            _ = stop.changed() => return,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(role = R::NAME, error = %e, "campaign failed; retrying");
                pause(&mut stop).await;
                continue;
            }
        };
        match lead(&role, &leadership).await {
            Ok(()) => hold(&role, &leadership, &mut unfit, &mut stop).await,
            Err(why) => {
                tracing::warn!(role = R::NAME, %why, token = leadership.token(), "could not lead");
            }
        }
        if let Err(e) = leadership.resign().await {
            tracing::warn!(role = R::NAME, error = %e, "resigning: the key goes when the lease expires");
        }
    }
}

/// Won: re-checks the key, then the role leads.
async fn lead<R: Role>(role: &R, leadership: &Leadership) -> Result<(), String> {
    if !leadership.is_leader().await.map_err(|e| e.to_string())? {
        return Err("the leader key is not ours any more".into());
    }
    role.lead(leadership.token()).await
}

/// Leads until the lease is lost, the role is fenced, the node is unfit (its clock off the
/// cluster's, or in a minority), or `stop`; then steps down at once.
async fn hold<R: Role>(
    role: &R,
    leadership: &Leadership,
    unfit: &mut watch::Receiver<Option<String>>,
    stop: &mut watch::Receiver<bool>,
) {
    let why: String = loop {
        tokio::select! {
            () = leadership.lost() => break "the election lease was lost".into(),
            _ = stop.changed() => break "shutting down".into(),
            Ok(why) = unfit.wait_for(Option::is_some) => {
                break (*why).clone().unwrap_or_default();
            }
            () = tokio::time::sleep(Duration::from_millis(FENCED_CHECK_MS)) => {
                if role.fenced() {
                    break "a write was refused at storage (fenced)".into();
                }
            }
        }
    };
    tracing::warn!(
        role = R::NAME,
        %why,
        token = leadership.token(),
        "stepping down"
    );
    role.step_down();
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)) => {}
        _ = stop.changed() => {}
    }
}
