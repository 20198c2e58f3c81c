//! The consumer groups' coordinator on a cluster (feature `cluster`): the node the election
//! `groups` names writes `_groups` — joins, commits, expiry — under its fencing token; the
//! others follow the records and forward the group routes to it. The election loop is
//! `elected.rs`'s; the fencing is [`Groups::lead`]'s epoch record and expected-end appends.

use std::sync::Arc;

use super::Groups;
use crate::elected::Role;

/// The election of the groups' coordinator.
pub const ELECTION: &str = "groups";

/// The coordinator's role over this node's [`Groups`].
pub(crate) struct Coordinator {
    pub groups: Arc<Groups>,
    pub node_id: String,
}

impl Role for Coordinator {
    const NAME: &'static str = "groups coordinator";

    /// A follower's groups follow `_groups` by themselves.
    async fn follow(&self) -> Result<(), String> {
        Ok(())
    }

    async fn lead(&self, token: u64) -> Result<(), String> {
        let (groups, node) = (self.groups.clone(), self.node_id.clone());
        tokio::task::spawn_blocking(move || groups.lead(token, &node))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn fenced(&self) -> bool {
        self.groups.is_deposed()
    }

    fn step_down(&self) {
        self.groups.step_down();
    }
}
