//! What each principal holds of the consumer groups — the groups its joins made and the
//! members it joined — and the per-principal quotas on them (review r22b N1, decision
//! 0021). Without them one token with `groups:consume` and `streams:read` could fill the
//! node's [`crate::limits::GROUPS_MAX`] groups and keep them by heart-beating: a group with
//! members cannot be deleted.
//!
//! The counts derive from `_groups` with the rest of the state (a join names its
//! principal), so they survive restarts and a new coordinator counts what the old one did.
//! The quotas are settings, checked only when a join is admitted — never when a record is
//! applied, so a lowered setting never makes replay refuse what was stored.

use std::collections::BTreeMap;

/// What one principal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Groups its joins made, not deleted since.
    pub groups: usize,
    /// Members it joined, in every group, that have not left or expired.
    pub members: usize,
}

/// The most one principal may hold (`groups_per_principal_max`,
/// `group_members_per_principal_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupQuota {
    /// Groups its joins made.
    pub groups_max: usize,
    /// Members it joined.
    pub members_max: usize,
}

/// A join over its principal's quota; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{principal} holds {held} {what}, its quota ({setting} = {max}); nothing was written — {remedy}"
)]
pub struct QuotaExceeded {
    /// The principal (`token:ID`, or `address:IP` with authentication off).
    pub principal: String,
    /// What is counted: `consumer groups it made` or `group members it joined`.
    pub what: &'static str,
    /// The setting that bounds it.
    pub setting: &'static str,
    /// What it holds.
    pub held: usize,
    /// The quota.
    pub max: usize,
    /// How a unit is freed.
    pub remedy: &'static str,
    /// The request field the quota is about: `group` (a new group) or `member`.
    pub field: &'static str,
}

/// [`Held`] by principal; principals holding nothing are not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings(BTreeMap<String, Held>);

impl Holdings {
    /// What `principal` holds.
    pub fn of(&self, principal: &str) -> Held {
        self.0.get(principal).copied().unwrap_or_default()
    }

    /// Checks that `principal` may make a group (`new_group`) and join one more member
    /// (`new_member`: a name not in the group, or one another principal joined).
    ///
    /// # Errors
    /// [`QuotaExceeded`] naming the first quota the join would pass.
    pub fn admit(
        &self,
        principal: &str,
        new_group: bool,
        new_member: bool,
        quota: GroupQuota,
    ) -> Result<(), QuotaExceeded> {
        let held = self.of(principal);
        let over = |what, setting, held, max, remedy, field| QuotaExceeded {
            principal: principal.to_string(),
            what,
            setting,
            held,
            max,
            remedy,
            field,
        };
        if new_group && held.groups >= quota.groups_max {
            return Err(over(
                "consumer groups it made",
                "groups_per_principal_max",
                held.groups,
                quota.groups_max,
                "a group is freed when it is deleted (DELETE /v1/groups/{group}, groups:manage, \
                 once nobody consumes it)",
                "group",
            ));
        }
        if new_member && held.members >= quota.members_max {
            return Err(over(
                "group members it joined",
                "group_members_per_principal_max",
                held.members,
                quota.members_max,
                "a member is freed when it leaves or its session times out",
                "member",
            ));
        }
        Ok(())
    }

    /// Changes what `principal` holds by `f`; nothing for a record without a principal
    /// (written before the quotas).
    pub fn change(&mut self, principal: Option<&str>, f: impl FnOnce(&mut Held)) {
        let Some(p) = principal else { return };
        let held = self.0.entry(p.to_string()).or_default();
        f(held);
        if *held == Held::default() {
            self.0.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_at_its_quota_is_refused_by_name_and_others_are_not() {
        let quota = GroupQuota {
            groups_max: 1,
            members_max: 2,
        };
        let mut h = Holdings::default();
        h.change(Some("token:a"), |h| h.groups += 1);
        h.change(Some("token:a"), |h| h.members += 1);
        h.change(None, |h| h.groups += 1);
        let e = h.admit("token:a", true, false, quota).unwrap_err();
        assert_eq!(
            (e.setting, e.held, e.max),
            ("groups_per_principal_max", 1, 1)
        );
        assert!(h.admit("token:a", false, true, quota).is_ok());
        h.change(Some("token:a"), |h| h.members += 1);
        let e = h.admit("token:a", false, true, quota).unwrap_err();
        assert_eq!(e.setting, "group_members_per_principal_max");
        assert!(
            e.to_string().contains("token:a holds 2 group members"),
            "{e}"
        );
        assert!(h.admit("token:b", true, true, quota).is_ok());
        // Freed units are counted no more, and an empty principal is forgotten.
        h.change(Some("token:a"), |h| h.groups -= 1);
        h.change(Some("token:a"), |h| h.members -= 2);
        assert_eq!(h, Holdings::default());
    }
}
