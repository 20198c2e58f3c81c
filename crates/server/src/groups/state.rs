//! The consumer groups' state machine: what the records of `_groups` mean, applied in log
//! order. Deterministic (no clock, no randomness): replaying the stream rebuilds the same
//! groups, members, ownership and committed offsets, so they survive restarts.
//!
//! Invariants, asserted after every change:
//! * a partition is owned by at most one member; a member's `revoking` ⊆ its `owned`;
//! * a committed offset never moves back, except by a reset of a group without members;
//! * `generation` grows with every change of membership or ownership.
//!
//! Assignment (cooperative, sticky): with `n` members and `P` partitions each member's quota
//! is ⌊P/n⌋, plus one for the first `P mod n` members by name. A member over its quota is
//! asked to revoke its highest partitions and keeps the rest; a free partition (never
//! owned, released, or left by a member that is gone) goes to the first member under its
//! quota. So a partition changes owner only through a release or the owner's departure,
//! and a member keeping its partitions is never stopped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::held::{GroupQuota, Holdings, QuotaExceeded};
use crate::limits::{COMMIT_IDS_PER_GROUP_MAX, GROUPS_MAX, MEMBERS_PER_GROUP_MAX};

/// One record of the internal stream `_groups` (its value, JSON). Only records the state
/// accepted are appended; replay applies them again to the same result. Every variant names
/// its `group`; `member` and `epoch` name the member acting, as in the API.
#[expect(
    missing_docs,
    reason = "the fields are the API's terms, documented on the variants"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (`{"commit": {...}}`): an internally tagged enum is parsed through a
// buffer that cannot turn the offsets' map keys (JSON strings) back into numbers.
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupRecord {
    /// A member joins (again): its epoch becomes one more than the name's last.
    Join {
        group: String,
        stream: String,
        /// The stream's partition count when the group was joined.
        partitions: u32,
        member: String,
        session_timeout_ms: u64,
        /// Who joined: the quota key of the request's principal (`token:ID`, or
        /// `address:IP` with authentication off), which the per-principal quotas count
        /// (`held.rs`). Absent in records written before them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// A member leaves, or is removed after its session timed out.
    Leave {
        group: String,
        member: String,
        epoch: u64,
        /// `left` or `expired`.
        reason: String,
    },
    /// A member gives up partitions.
    Release {
        group: String,
        member: String,
        epoch: u64,
        partitions: Vec<u32>,
    },
    /// A member commits processed offsets.
    Commit {
        group: String,
        member: String,
        epoch: u64,
        offsets: BTreeMap<u32, u64>,
        /// The commit's `Idempotency-Key`, remembered to answer a retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// Committed offsets set by an operator (a group without members).
    Reset {
        group: String,
        offsets: BTreeMap<u32, u64>,
    },
    /// An operator deletes a group without members: its commits and request ids go.
    Delete { group: String },
}

impl GroupRecord {
    /// The group the record is about.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Join { group, .. }
            | GroupRecord::Leave { group, .. }
            | GroupRecord::Release { group, .. }
            | GroupRecord::Commit { group, .. }
            | GroupRecord::Reset { group, .. }
            | GroupRecord::Delete { group } => group,
        }
    }
}

/// Why a record cannot be applied; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// No such group.
    #[error("no consumer group {group:?}")]
    UnknownGroup {
        /// The group.
        group: String,
    },
    /// The member is not in the group under this epoch.
    #[error(
        "member {member:?} of group {group:?} is not in the group under epoch {epoch} ({why}); join again"
    )]
    Fenced {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch given.
        epoch: u64,
        /// What is the case instead.
        why: String,
    },
    /// The member does not own a partition it names.
    #[error(
        "partition {partition} is not assigned to member {member:?} (now): nothing was committed"
    )]
    NotAssigned {
        /// The member.
        member: String,
        /// The partition.
        partition: u32,
    },
    /// A commit would move an offset back.
    #[error(
        "partition {partition}: offset {offset} is behind the committed {committed}: nothing was committed"
    )]
    Behind {
        /// The partition.
        partition: u32,
        /// The offset given.
        offset: u64,
        /// The committed one.
        committed: u64,
    },
    /// A partition outside the group's stream.
    #[error("partition {partition} is not a partition of the group's stream (0..{partitions})")]
    NoSuchPartition {
        /// The partition.
        partition: u32,
        /// The stream's partition count.
        partitions: u32,
    },
    /// The group reads another stream.
    #[error("group {group:?} reads stream {stream:?}, not {asked:?}")]
    StreamMismatch {
        /// The group.
        group: String,
        /// Its stream.
        stream: String,
        /// The stream named.
        asked: String,
    },
    /// A reset or delete of a group with members.
    #[error(
        "group {group:?} has {members} member(s); a {op} needs a group nobody consumes (its members leave, or their sessions time out, first)"
    )]
    Active {
        /// The group.
        group: String,
        /// Its member count.
        members: usize,
        /// What was asked: `reset` or `delete`.
        op: &'static str,
    },
    /// Too many groups, or members in a group.
    #[error("at most {max} {what}")]
    TooMany {
        /// What: `groups` or `members in a group`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A join over its principal's quota of groups or members.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Grows with each join under the member's name.
    pub epoch: u64,
    /// Without a heartbeat for this long the coordinator removes the member, ms.
    pub session_timeout_ms: u64,
    /// Partitions it owns (commits to them are accepted).
    pub owned: BTreeSet<u32>,
    /// Owned partitions it is asked to give up.
    pub revoking: BTreeSet<u32>,
    /// The principal whose join it is (`None`: a join written before the quotas).
    pub principal: Option<String>,
}

/// One group: its stream, members, and committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The stream it reads.
    pub stream: String,
    /// The stream's partitions.
    pub partitions: u32,
    /// Grows with each change of membership or ownership.
    pub generation: u64,
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// The last epoch of every name that ever joined (a rejoin gets a greater one).
    epochs: BTreeMap<String, u64>,
    /// A first join's epoch is one more: above every epoch a deleted group of any name
    /// handed out before this group was made (0 while no group was ever deleted).
    epoch_base: u64,
    /// Committed offsets by partition.
    pub committed: BTreeMap<u32, u64>,
    /// The principal whose join made the group (`None`: made before the quotas).
    pub owner: Option<String>,
    /// Request ids of accepted commits with what they committed, oldest first (at most
    /// [`COMMIT_IDS_PER_GROUP_MAX`]).
    commit_ids: VecDeque<(String, String, BTreeMap<u32, u64>)>,
}

/// What a commit with a request id finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    /// Not remembered: a new commit.
    New,
    /// The same commit (member and offsets) was accepted before: answer it, change nothing.
    Duplicate,
    /// The id was used for another commit.
    Conflict,
}

/// Every group (the whole state `_groups` derives).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsState {
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
    /// The greatest epoch any deleted group handed out: a group made later (under the same
    /// name or another) starts above it, so a member of a deleted group that comes back is
    /// fenced, never mistaken for a member of the new one.
    epoch_floor: u64,
    /// What each principal holds: the groups its joins made, the members it joined.
    pub held: Holdings,
}

impl GroupsState {
    /// The group named `group`.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`].
    pub fn group(&self, group: &str) -> Result<&Group, GroupError> {
        self.groups
            .get(group)
            .ok_or_else(|| GroupError::UnknownGroup {
                group: group.to_string(),
            })
    }

    /// The member `member` of `group` under `epoch`.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], [`GroupError::Fenced`].
    pub fn member(&self, group: &str, member: &str, epoch: u64) -> Result<&Member, GroupError> {
        member_of(self.groups.get(group), group, member, epoch)
    }

    /// Whether the principal of `join` (if it names one) may make its group, if new, and
    /// join its member, if new to the group or joined by another principal, under `quota`.
    /// A check of admission only: [`Self::apply`] never refuses a record over a quota.
    ///
    /// # Errors
    /// [`GroupError::Quota`].
    pub fn admit(&self, join: &GroupRecord, quota: GroupQuota) -> Result<(), GroupError> {
        let GroupRecord::Join {
            group,
            member,
            principal: Some(principal),
            ..
        } = join
        else {
            return Ok(());
        };
        let g = self.groups.get(group);
        let new_member = g
            .and_then(|g| g.members.get(member))
            .is_none_or(|m| m.principal.as_ref() != Some(principal));
        self.held
            .admit(principal, g.is_none(), new_member, quota)
            .map_err(GroupError::Quota)
    }

    /// Whether `record` would be applied, and if not why; changes nothing.
    ///
    /// # Errors
    /// [`GroupError`].
    pub fn check(&self, record: &GroupRecord) -> Result<(), GroupError> {
        let group = self.groups.get(record.group());
        match record {
            GroupRecord::Join {
                group: name,
                stream,
                member,
                ..
            } => match group {
                None if self.groups.len() >= GROUPS_MAX => Err(GroupError::TooMany {
                    what: "groups",
                    max: GROUPS_MAX,
                }),
                None => Ok(()),
                Some(g) if &g.stream != stream => Err(GroupError::StreamMismatch {
                    group: name.clone(),
                    stream: g.stream.clone(),
                    asked: stream.clone(),
                }),
                Some(g)
                    if !g.members.contains_key(member)
                        && g.members.len() >= MEMBERS_PER_GROUP_MAX =>
                {
                    Err(GroupError::TooMany {
                        what: "members in a group",
                        max: MEMBERS_PER_GROUP_MAX,
                    })
                }
                Some(_) => Ok(()),
            },
            GroupRecord::Leave {
                group: name,
                member,
                epoch,
                ..
            } => member_of(group, name, member, *epoch).map(|_| ()),
            GroupRecord::Release {
                group: name,
                member,
                epoch,
                partitions,
            } => {
                let m = member_of(group, name, member, *epoch)?;
                match partitions.iter().find(|p| !m.owned.contains(p)) {
                    Some(p) => Err(GroupError::NotAssigned {
                        member: member.clone(),
                        partition: *p,
                    }),
                    None => Ok(()),
                }
            }
            GroupRecord::Commit {
                group: name,
                member,
                epoch,
                offsets,
                ..
            } => {
                let m = member_of(group, name, member, *epoch)?;
                let g = group.ok_or_else(|| unknown(name))?;
                for (p, offset) in offsets {
                    in_range(g, *p)?;
                    if !m.owned.contains(p) {
                        return Err(GroupError::NotAssigned {
                            member: member.clone(),
                            partition: *p,
                        });
                    }
                    if let Some(committed) = g.committed.get(p).filter(|c| *c > offset) {
                        return Err(GroupError::Behind {
                            partition: *p,
                            offset: *offset,
                            committed: *committed,
                        });
                    }
                }
                Ok(())
            }
            GroupRecord::Reset {
                group: name,
                offsets,
            } => {
                let g = group.ok_or_else(|| unknown(name))?;
                if !g.members.is_empty() {
                    return Err(GroupError::Active {
                        group: name.clone(),
                        members: g.members.len(),
                        op: "reset",
                    });
                }
                offsets.keys().try_for_each(|p| in_range(g, *p))
            }
            GroupRecord::Delete { group: name } => {
                let g = group.ok_or_else(|| unknown(name))?;
                if g.members.is_empty() {
                    Ok(())
                } else {
                    Err(GroupError::Active {
                        group: name.clone(),
                        members: g.members.len(),
                        op: "delete",
                    })
                }
            }
        }
    }

    /// Applies `record` if [`Self::check`] accepts it.
    ///
    /// # Errors
    /// [`GroupError`], changing nothing.
    pub fn apply(&mut self, record: &GroupRecord) -> Result<(), GroupError> {
        self.check(record)?;
        match record {
            GroupRecord::Join {
                group,
                stream,
                partitions,
                member,
                session_timeout_ms,
                principal,
            } => {
                let epoch_base = self.epoch_floor;
                let held = &mut self.held;
                let g = self.groups.entry(group.clone()).or_insert_with(|| {
                    held.change(principal.as_deref(), |h| h.groups += 1);
                    Group {
                        stream: stream.clone(),
                        partitions: *partitions,
                        generation: 0,
                        members: BTreeMap::new(),
                        epochs: BTreeMap::new(),
                        epoch_base,
                        owner: principal.clone(),
                        committed: BTreeMap::new(),
                        commit_ids: VecDeque::new(),
                    }
                });
                let epoch = g.epochs.get(member).map_or(g.epoch_base + 1, |e| e + 1);
                g.epochs.insert(member.clone(), epoch);
                // A restarted member keeps what it owned: it resumes at its commits.
                let m = g.members.entry(member.clone()).or_insert_with(|| Member {
                    epoch,
                    session_timeout_ms: *session_timeout_ms,
                    owned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    principal: None,
                });
                m.epoch = epoch;
                m.session_timeout_ms = *session_timeout_ms;
                // The member is charged to the principal that joined it last.
                if m.principal != *principal {
                    held.change(m.principal.as_deref(), |h| {
                        h.members = h.members.saturating_sub(1);
                    });
                    held.change(principal.as_deref(), |h| h.members += 1);
                    m.principal.clone_from(principal);
                }
                g.changed();
            }
            GroupRecord::Leave { group, member, .. } => {
                let g = self
                    .groups
                    .get_mut(group)
                    .unwrap_or_else(|| unreachable!("checked: group {group:?} exists"));
                if let Some(m) = g.members.remove(member) {
                    self.held.change(m.principal.as_deref(), |h| {
                        h.members = h.members.saturating_sub(1);
                    });
                }
                g.changed();
            }
            GroupRecord::Release {
                group,
                member,
                partitions,
                ..
            } => {
                let g = self.group_mut(group);
                if let Some(m) = g.members.get_mut(member) {
                    for p in partitions {
                        m.owned.remove(p);
                        m.revoking.remove(p);
                    }
                }
                g.changed();
            }
            GroupRecord::Commit {
                group,
                member,
                offsets,
                request_id,
                ..
            } => {
                let g = self.group_mut(group);
                g.committed.extend(offsets);
                if let Some(id) = request_id {
                    if g.commit_ids.len() >= COMMIT_IDS_PER_GROUP_MAX {
                        g.commit_ids.pop_front();
                    }
                    g.commit_ids
                        .push_back((id.clone(), member.clone(), offsets.clone()));
                }
            }
            GroupRecord::Reset { group, offsets } => {
                self.group_mut(group).committed.extend(offsets);
            }
            GroupRecord::Delete { group } => {
                if let Some(g) = self.groups.remove(group) {
                    let last = g.epochs.values().copied().max().unwrap_or(g.epoch_base);
                    self.epoch_floor = self.epoch_floor.max(last);
                    // Checked: it has no members, so only its maker's count changes.
                    self.held.change(g.owner.as_deref(), |h| {
                        h.groups = h.groups.saturating_sub(1);
                    });
                }
                return Ok(());
            }
        }
        if let Some(g) = self.groups.get(record.group()) {
            g.assert_invariants();
        }
        Ok(())
    }

    fn group_mut(&mut self, name: &str) -> &mut Group {
        // `check` found it.
        self.groups
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("checked: group {name:?} exists"))
    }
}

fn unknown(group: &str) -> GroupError {
    GroupError::UnknownGroup {
        group: group.to_string(),
    }
}

fn in_range(g: &Group, partition: u32) -> Result<(), GroupError> {
    if partition < g.partitions {
        Ok(())
    } else {
        Err(GroupError::NoSuchPartition {
            partition,
            partitions: g.partitions,
        })
    }
}

/// The member `name` of `group` under `epoch`.
fn member_of<'g>(
    group: Option<&'g Group>,
    group_name: &str,
    name: &str,
    epoch: u64,
) -> Result<&'g Member, GroupError> {
    let g = group.ok_or_else(|| unknown(group_name))?;
    let fenced = |why: String| GroupError::Fenced {
        group: group_name.to_string(),
        member: name.to_string(),
        epoch,
        why,
    };
    match g.members.get(name) {
        None => Err(fenced("it is not a member now".into())),
        Some(m) if m.epoch != epoch => Err(fenced(format!("its epoch is {}", m.epoch))),
        Some(m) => Ok(m),
    }
}

impl Group {
    /// What a commit under `request_id` by `member` of `offsets` finds.
    pub fn remembered(
        &self,
        request_id: &str,
        member: &str,
        offsets: &BTreeMap<u32, u64>,
    ) -> Remembered {
        match self.commit_ids.iter().find(|(id, ..)| id == request_id) {
            None => Remembered::New,
            Some((_, m, o)) if m == member && o == offsets => Remembered::Duplicate,
            Some(_) => Remembered::Conflict,
        }
    }

    /// The owner of each partition.
    pub fn owners(&self) -> BTreeMap<u32, &str> {
        self.members
            .iter()
            .flat_map(|(name, m)| m.owned.iter().map(move |p| (*p, name.as_str())))
            .collect()
    }

    /// Membership or ownership changed: a new generation, and a rebalance.
    fn changed(&mut self) {
        self.generation += 1;
        self.rebalance();
    }

    /// Recomputes who revokes what and hands out free partitions (see the module docs).
    fn rebalance(&mut self) {
        let n = self.members.len() as u32;
        if n == 0 {
            return;
        }
        let (base, extra) = (self.partitions / n, self.partitions % n);
        let quotas: BTreeMap<String, usize> = self
            .members
            .keys()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    (base + u32::from((i as u32) < extra)) as usize,
                )
            })
            .collect();
        for (name, m) in &mut self.members {
            let over = m.owned.len().saturating_sub(quotas[name]);
            m.revoking = m.owned.iter().rev().take(over).copied().collect();
        }
        let owned: BTreeSet<u32> = self
            .members
            .values()
            .flat_map(|m| m.owned.iter().copied())
            .collect();
        for p in (0..self.partitions).filter(|p| !owned.contains(p)) {
            if let Some(m) = self
                .members
                .iter_mut()
                .find(|(name, m)| m.owned.len() < quotas[name.as_str()])
                .map(|(_, m)| m)
            {
                m.owned.insert(p);
            }
        }
    }

    /// Panics if an invariant of the module docs does not hold: a bug in this module.
    fn assert_invariants(&self) {
        let mut seen = BTreeSet::new();
        for (name, m) in &self.members {
            assert!(
                m.revoking.is_subset(&m.owned),
                "member {name:?} revokes partitions it does not own"
            );
            for p in &m.owned {
                assert!(
                    *p < self.partitions && seen.insert(*p),
                    "partition {p} owned twice or out of range"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member: &str) -> GroupRecord {
        GroupRecord::Join {
            group: "g".into(),
            stream: "s".into(),
            partitions: 12,
            member: member.into(),
            session_timeout_ms: 1000,
            principal: None,
        }
    }

    fn join_as(group: &str, member: &str, principal: &str) -> GroupRecord {
        GroupRecord::Join {
            group: group.into(),
            stream: "s".into(),
            partitions: 4,
            member: member.into(),
            session_timeout_ms: 1000,
            principal: Some(principal.into()),
        }
    }

    /// What a principal holds follows joins, rejoins by another principal, leaves and
    /// deletes; a join over a quota is refused at admission, and replay counts the same.
    #[test]
    fn each_principal_holds_the_groups_it_made_and_the_members_it_joined() {
        let quota = GroupQuota {
            groups_max: 2,
            members_max: 3,
        };
        let held = |s: &GroupsState, p: &str| {
            let h = s.held.of(p);
            (h.groups, h.members)
        };
        let mut s = GroupsState::default();
        let records = [
            join_as("g1", "a", "token:x"),
            join_as("g1", "b", "token:x"),
            join_as("g2", "a", "token:x"),
            // y joins into x's group: the member is y's, the group still x's.
            join_as("g1", "c", "token:y"),
            // y takes over x's member b (a restart under another token).
            join_as("g1", "b", "token:y"),
        ];
        for r in &records {
            s.admit(r, quota).unwrap();
            s.apply(r).unwrap();
        }
        assert_eq!(held(&s, "token:x"), (2, 2));
        assert_eq!(held(&s, "token:y"), (0, 2));
        // A third group, a fourth member: refused by name, before anything is applied.
        let refused = s.admit(&join_as("g3", "a", "token:x"), quota).unwrap_err();
        assert!(
            refused.to_string().contains("groups_per_principal_max"),
            "{refused}"
        );
        s.apply(&join_as("g2", "b", "token:x")).unwrap();
        let refused = s.admit(&join_as("g1", "d", "token:x"), quota).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("group_members_per_principal_max"),
            "{refused}"
        );
        // A member it already holds may join again (a restart): nothing new.
        s.admit(&join_as("g1", "a", "token:x"), quota).unwrap();
        let mut replayed = GroupsState::default();
        for r in records.iter().chain([&join_as("g2", "b", "token:x")]) {
            replayed.apply(r).unwrap();
        }
        assert_eq!(replayed, s);
        // Leaving frees a member; deleting an empty group frees its maker's slot.
        for (member, epoch) in [("a", 1), ("b", 1)] {
            s.apply(&GroupRecord::Leave {
                group: "g2".into(),
                member: member.into(),
                epoch,
                reason: "left".into(),
            })
            .unwrap();
        }
        s.apply(&GroupRecord::Delete { group: "g2".into() })
            .unwrap();
        assert_eq!(held(&s, "token:x"), (1, 1));
        s.admit(&join_as("g3", "a", "token:x"), quota).unwrap();
    }

    fn owned(state: &GroupsState, member: &str) -> Vec<u32> {
        state.groups["g"].members[member]
            .owned
            .iter()
            .copied()
            .collect()
    }

    fn revoking(state: &GroupsState, member: &str) -> Vec<u32> {
        state.groups["g"].members[member]
            .revoking
            .iter()
            .copied()
            .collect()
    }

    /// Joins and leaves move only what must move, through revocation: a script of the
    /// cooperative protocol.
    #[test]
    fn cooperative_rebalancing_moves_partitions_only_through_releases() {
        let mut s = GroupsState::default();
        s.apply(&join("a")).unwrap();
        assert_eq!(owned(&s, "a"), (0..12).collect::<Vec<_>>());

        // b joins: a keeps every partition until it releases the six it is asked to revoke.
        s.apply(&join("b")).unwrap();
        assert_eq!(owned(&s, "a").len(), 12);
        assert_eq!(revoking(&s, "a"), vec![6, 7, 8, 9, 10, 11]);
        assert!(owned(&s, "b").is_empty(), "nothing is owned twice");
        let release = GroupRecord::Release {
            group: "g".into(),
            member: "a".into(),
            epoch: 1,
            partitions: vec![6, 7, 8, 9, 10, 11],
        };
        s.apply(&release).unwrap();
        assert_eq!(owned(&s, "a"), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(owned(&s, "b"), vec![6, 7, 8, 9, 10, 11]);
        assert!(revoking(&s, "a").is_empty());

        // a commits; a commit to b's partition, or behind, or by an old epoch, is refused.
        let commit = |member: &str, epoch, p, o| GroupRecord::Commit {
            group: "g".into(),
            member: member.into(),
            epoch,
            offsets: BTreeMap::from([(p, o)]),
            request_id: None,
        };
        s.apply(&commit("a", 1, 0, 10)).unwrap();
        assert!(matches!(
            s.apply(&commit("a", 1, 6, 1)),
            Err(GroupError::NotAssigned { partition: 6, .. })
        ));
        assert!(matches!(
            s.apply(&commit("a", 1, 0, 9)),
            Err(GroupError::Behind { committed: 10, .. })
        ));

        // a restarts (joins again): a new epoch, its partitions kept; the old epoch is fenced.
        s.apply(&join("a")).unwrap();
        assert_eq!(s.groups["g"].members["a"].epoch, 2);
        assert_eq!(owned(&s, "a"), vec![0, 1, 2, 3, 4, 5]);
        assert!(matches!(
            s.apply(&commit("a", 1, 0, 11)),
            Err(GroupError::Fenced { .. })
        ));

        // b leaves: its partitions go to a at once (nobody else owns them).
        let leave = GroupRecord::Leave {
            group: "g".into(),
            member: "b".into(),
            epoch: 1,
            reason: "expired".into(),
        };
        s.apply(&leave).unwrap();
        assert_eq!(owned(&s, "a"), (0..12).collect::<Vec<_>>());

        // A reset needs a group without members.
        let reset = GroupRecord::Reset {
            group: "g".into(),
            offsets: BTreeMap::from([(0, 0)]),
        };
        assert!(matches!(s.check(&reset), Err(GroupError::Active { .. })));
        let generation = s.groups["g"].generation;
        assert_eq!(generation, 5, "join, join, release, join, leave");
    }

    /// A deleted group's name is free again; a member of the old group that comes back
    /// with its epoch is fenced, not taken for the new group's member of the same name.
    #[test]
    fn a_deleted_group_is_gone_and_its_epochs_are_not_handed_out_again() {
        let mut s = GroupsState::default();
        s.apply(&join("a")).unwrap();
        s.apply(&join("a")).unwrap();
        let delete = GroupRecord::Delete { group: "g".into() };
        assert!(matches!(s.check(&delete), Err(GroupError::Active { .. })));
        s.apply(&GroupRecord::Leave {
            group: "g".into(),
            member: "a".into(),
            epoch: 2,
            reason: "left".into(),
        })
        .unwrap();
        s.apply(&delete).unwrap();
        assert!(s.groups.is_empty());
        assert!(matches!(
            s.check(&delete),
            Err(GroupError::UnknownGroup { .. })
        ));
        s.apply(&join("a")).unwrap();
        assert_eq!(s.groups["g"].members["a"].epoch, 3);
        assert!(s.groups["g"].committed.is_empty());
        assert!(matches!(
            s.member("g", "a", 2),
            Err(GroupError::Fenced { .. })
        ));
    }

    #[test]
    fn replay_gives_the_same_state() {
        let records = [
            join("a"),
            join("b"),
            join("c"),
            GroupRecord::Commit {
                group: "g".into(),
                member: "a".into(),
                epoch: 1,
                offsets: BTreeMap::from([(0, 7)]),
                request_id: Some("r".into()),
            },
            GroupRecord::Leave {
                group: "g".into(),
                member: "b".into(),
                epoch: 1,
                reason: "left".into(),
            },
        ];
        let mut one = GroupsState::default();
        let mut two = GroupsState::default();
        for r in &records {
            one.apply(r).unwrap();
            let json = serde_json::to_vec(r).unwrap();
            two.apply(&serde_json::from_slice(&json).unwrap()).unwrap();
            assert!(json.starts_with(b"{\""), "a JSON object");
        }
        assert_eq!(one, two);
    }
}
