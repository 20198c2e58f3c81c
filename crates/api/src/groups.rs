//! Consumer groups: the bodies of `/v1/groups` and `/v1/groups/{group}/...`.
//!
//! A group reads one stream; its members share the stream's partitions, each partition
//! owned by one member at a time. A member joins under a name it keeps across restarts,
//! heart-beats, commits the offsets it has processed, and gives up the partitions it is
//! asked to revoke (cooperative rebalancing: partitions that stay with their owner are never
//! taken away in the meantime). The protocol is docs/decisions/0019.
//!
//! ```text
//!  member                                     server (the group's state, derived from _groups)
//!  POST /members {stream, member} ──────────▶ join: epoch + 1, partitions assigned
//!       ◀── {epoch, generation, assigned: [{partition, from}], revoke: []}
//!  read records from `from`, process them
//!  POST /members/M/commit {epoch, offsets} ─▶ accepted if M (this epoch) owns them and no
//!                                             offset goes back
//!  POST /members/M/heartbeat {epoch, released}  (every heartbeat_interval_ms)
//!       ◀── {assigned, revoke}: commit and stop reading `revoke`, then send it as `released`
//! ```

use serde::{Deserialize, Serialize};

/// `POST /v1/groups/{group}/members` body: a member joins, or rejoins after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinGroup {
    /// The stream the group reads (set by the group's first join; later joins must name it).
    pub stream: String,
    /// The member's name: 1..=128 bytes of `[A-Za-z0-9._-]`, chosen by the client and kept
    /// across its restarts. A join under a name already in the group is that member
    /// restarted: it keeps its partitions (resuming at their commits) under a new epoch,
    /// and the old incarnation is fenced.
    pub member: String,
    /// Without a heartbeat for this long the member is removed and its partitions go to the
    /// others, ms; 500..=300,000, default 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
}

/// `POST /v1/groups/{group}/members/{member}/heartbeat` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The epoch the member's join answered.
    pub epoch: u64,
    /// Partitions the member gives up (those it was asked to revoke, once it committed what
    /// it processed of them and stopped reading them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<u32>,
}

/// One partition a member owns, and where it reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignedPartition {
    /// The partition.
    pub partition: u32,
    /// The offset to read from: the group's committed offset, or the partition's first
    /// retained offset when nothing is committed or retention passed the commit.
    pub from: u64,
}

/// A member's share of the group: the answer to a join and to each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberAssignment {
    /// The group.
    pub group: String,
    /// The stream it reads.
    pub stream: String,
    /// The member.
    pub member: String,
    /// The member's epoch: grows with each join under its name. Heartbeats and commits carry
    /// it; one of an older epoch is refused (`member_fenced`).
    pub epoch: u64,
    /// The group's generation: grows with each change of membership or ownership.
    pub generation: u64,
    /// Partitions the member owns now (including those to revoke), in order.
    pub assigned: Vec<AssignedPartition>,
    /// Partitions to give up: commit what was processed, stop reading them, then name them
    /// in the next heartbeat's `released`. They stay owned (commits accepted) until then.
    pub revoke: Vec<u32>,
    /// The session timeout in force, ms.
    pub session_timeout_ms: u64,
    /// Send a heartbeat at least this often, ms (a third of the session timeout).
    pub heartbeat_interval_ms: u64,
}

/// One partition's offset: a commit's, a reset's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionOffset {
    /// The partition.
    pub partition: u32,
    /// The next offset to process (everything below it is processed), as Kafka commits.
    pub offset: u64,
}

/// `POST /v1/groups/{group}/members/{member}/commit` body; with an `Idempotency-Key`, a
/// retry is answered with the original outcome and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitOffsets {
    /// The member's epoch.
    pub epoch: u64,
    /// Offsets of partitions the member owns, each at or after the group's committed one
    /// and at most the partition's end; 1..=256 of them, each partition once.
    #[serde(deserialize_with = "crate::objects::vec")]
    pub offsets: Vec<PartitionOffset>,
}

/// The answer to a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetsCommitted {
    /// The group.
    pub group: String,
    /// The offsets committed, as sent.
    pub offsets: Vec<PartitionOffset>,
    /// True when this was a retry of an `Idempotency-Key` already committed: nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A member as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberInfo {
    /// The member's name.
    pub member: String,
    /// Its epoch.
    pub epoch: u64,
    /// Partitions it owns.
    pub assigned: Vec<u32>,
    /// Partitions it was asked to give up.
    pub revoking: Vec<u32>,
    /// Its session timeout, ms.
    pub session_timeout_ms: u64,
}

/// One partition of a group's stream, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupPartition {
    /// The partition.
    pub partition: u32,
    /// The member that owns it (`null`: none).
    pub owner: Option<String>,
    /// The group's committed offset (`null`: nothing committed).
    pub committed: Option<u64>,
    /// The partition's first retained offset.
    pub start: u64,
    /// The partition's end (next offset to be written).
    pub end: u64,
    /// What is not committed yet, from the committed offset (or `start`) to `end`: on a
    /// single node, whose offsets are dense, the records; on a cluster, whose offsets have
    /// gaps, the appended batches (each one record or more) holding such records. 0 exactly
    /// when every record is committed.
    pub lag: u64,
    /// Whether retention deleted records the group had not committed.
    pub below_retention: bool,
}

/// `GET /v1/groups/{group}`: members, assignments, committed offsets and lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    /// The group.
    pub group: String,
    /// The stream it reads.
    pub stream: String,
    /// Its generation.
    pub generation: u64,
    /// Its members, by name.
    pub members: Vec<MemberInfo>,
    /// Every partition of the stream, in order.
    pub partitions: Vec<GroupPartition>,
    /// The partitions' `lag` summed: records on a single node, appended batches on a
    /// cluster; 0 exactly when every record is committed.
    pub lag: u64,
}

/// `GET /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupList {
    /// Every group, by name.
    pub groups: Vec<GroupInfo>,
}

/// Where a reset moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResetPoint {
    /// Each partition's first retained offset: reprocess everything retained.
    Start,
    /// Each partition's end: skip everything appended so far.
    End,
}

/// `POST /v1/groups/{group}/reset` body: exactly one of `to`, `timestamp_ms`, `offsets`.
/// Only a group without members can be reset (`group_active` otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetGroup {
    /// `start` or `end` of every partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ResetPoint>,
    /// Each partition's first record at or after this time, ms since the Unix epoch (its
    /// end when none is that recent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// These partitions to these offsets (others unchanged).
    #[serde(
        default,
        deserialize_with = "crate::objects::option_vec",
        skip_serializing_if = "Option::is_none"
    )]
    pub offsets: Option<Vec<PartitionOffset>>,
    /// Only answer what the reset would do; change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One partition's move in a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetMove {
    /// The partition.
    pub partition: u32,
    /// The committed offset before (`null`: none).
    pub from: Option<u64>,
    /// The committed offset after.
    pub to: u64,
}

/// The answer to a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupReset {
    /// The group.
    pub group: String,
    /// True when nothing was changed (`dry_run`).
    pub dry_run: bool,
    /// The partitions moved, in order.
    pub offsets: Vec<OffsetMove>,
}
