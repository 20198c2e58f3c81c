//! Consumer groups (issue 22, item 1; docs/decisions/0019): members of a group share the
//! partitions of one stream, commit the offsets they processed, and resume from them.
//!
//! ```text
//!  join · heartbeat(released) · commit · leave · reset     expiry thread (every 100 ms)
//!             │  under one lock                                  │ a member silent for its
//!             ▼                                                  │ session timeout
//!  state.check(record) ── refused: the error, nothing written    ▼
//!             │ accepted                                    Leave {expired}
//!             ▼
//!  append the record to `_groups` (one partition) ── wait until acknowledged
//!             ▼
//!  state.apply(record) ── answer from the new state
//!  open: replay `_groups` from its start through state.apply (state.rs)
//! ```
//!
//! The records of the internal stream `_groups` are the groups: joins, leaves, releases,
//! commits and resets, as Kafka keeps `__consumer_offsets`. Heartbeats are not records (they
//! change nothing but a member's last-seen time, kept in memory; after a restart every
//! member gets a full session timeout to come back). Because the lock is held from the check
//! to the apply, the log's order is the order in which records were applied, and replay
//! rebuilds exactly the state that answered. A join also names its principal: what each
//! principal holds (groups made, members joined) derives from the stream too, and a join
//! over `groups_per_principal_max` or `group_members_per_principal_max` is refused before
//! its record is written (`held.rs`).
//!
//! One writer: every record is appended under the expected end of `_groups` (the end after
//! the last record this node applied), so a record is stored only if the state it was
//! checked against is the whole stream. A single node is always the writer. On a cluster
//! (feature `cluster`), one node — elected through etcd, `coordinator.rs` — is: it replays
//! the stream, appends an epoch record (its fencing token) under the expected end, and from
//! then on decides every join, commit and expiry; the other nodes follow the records
//! (read-only state, for `from=group:G` of the push tail) and forward the group routes to
//! it. A deposed coordinator's next append names an end the new one's epoch record has
//! passed and is refused at storage: it stops writing and follows (decision records 0014,
//! 0019).
//!
//! ```text
//!  follower ── waits (≤ 100 ms) for the end of `_groups` to pass its state's, then reads
//!     │        the new records and applies them (an idle follower makes no request)
//!     │ lead(token): catch up, epoch record under the expected end, every member's
//!     ▼              session restarts (heartbeats went to the old coordinator)
//!  writer  ── records under the expected end; expiry
//!     │ an append refused (another writer) or of unknown outcome
//!     ▼
//!  deposed ── follows again; the election task resigns and campaigns anew
//! ```

#[cfg(feature = "cluster")]
pub(crate) mod coordinator;
pub mod held;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logbook_api::groups::{
    AssignedPartition, CommitOffsets, GroupInfo, GroupPartition, GroupReset, Heartbeat, JoinGroup,
    MemberAssignment, MemberInfo, OffsetMove, OffsetsCommitted, PartitionOffset, ResetGroup,
    ResetPoint,
};
use logbook_log::{AppendCondition, LogBackend, LogError, LogPartition, LogStream, Record};
use serde::{Deserialize, Serialize};

use crate::limits;

pub use held::{GroupQuota, Held};
pub use state::{Group, GroupError, GroupRecord, GroupsState, Remembered};

/// The internal stream of group records.
pub const GROUPS_STREAM: &str = "_groups";

/// Records per read when replaying `_groups`.
const REPLAY_RECORDS: usize = 4096;
/// Bytes per read when replaying `_groups`.
const REPLAY_BYTES: usize = 8 << 20;

/// What a group operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    /// The group's state refuses it; nothing was written.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The log failed (reading a stream, appending the record: then the outcome may be
    /// unknown, as the log's error says).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A field of the request is out of range; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (a JSON path).
        field: String,
        /// Why.
        reason: String,
    },
    /// A group on an internal stream (`_…`): groups read the users' streams.
    #[error(
        "stream {stream:?} is internal (names starting with '_' are reserved): no consumer group reads it"
    )]
    ReservedStream {
        /// The stream named.
        stream: String,
    },
    /// The same `Idempotency-Key` was used for another commit.
    #[error("the Idempotency-Key was used for another commit of this group")]
    RequestIdConflict,
    /// This node does not write `_groups` now (a cluster node that does not coordinate the
    /// groups, or was just deposed); nothing was written: send it to the coordinator.
    #[error("this node does not coordinate the consumer groups now ({why}); nothing was written")]
    NotCoordinator {
        /// Why.
        why: String,
    },
}

/// What the background thread does after a step.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Sleeps [`limits::GROUP_EXPIRY_CHECK_MS`] (the writer's expiry period; after a failed
    /// read, the pause before the next).
    Pause,
    /// Waits, at most as long, until `_groups` ends past this offset (a follower's state's
    /// end): woken by the log, not by polling it.
    WaitAbove(u64),
}

/// A record of `_groups` that is no group change: a new coordinator's epoch (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Epoch {
    /// The coordinator elected with `token` writes from here on.
    Epoch {
        /// The election's fencing token (greater than every earlier coordinator's).
        token: u64,
        /// The coordinator's node id.
        node_id: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> GroupsError {
    GroupsError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The state and the members' last heartbeats, under one lock.
#[derive(Debug, Default)]
struct Inner {
    state: GroupsState,
    /// (group, member) → when it was last heard from.
    seen: HashMap<(String, String), Instant>,
    /// The end of `_groups` after the last record applied: where the next one goes.
    end: u64,
    /// The newest epoch record applied (0: none).
    epoch_seen: u64,
    /// Whether this node writes `_groups` now, under which token (0 on a single node).
    writer: Option<u64>,
    /// An append failed without a definite answer: catch up before the next one.
    unsure: bool,
}

/// The consumer groups of a node: their state, derived from `_groups`, and the thread that
/// removes members whose session timed out.
#[derive(Debug)]
pub struct Groups {
    log: Arc<dyn LogBackend>,
    stream: Arc<dyn LogStream>,
    inner: Mutex<Inner>,
    /// Whether a coordinator is elected (a cluster node): else this node always writes.
    elected: bool,
    /// Raised when an elected writer stopped writing (deposed): its election must end.
    deposed: AtomicBool,
    stop: AtomicBool,
    expiry: Mutex<Option<JoinHandle<()>>>,
}

impl Groups {
    /// Opens (creating it if missing) `_groups`, replays it, and starts the thread that
    /// expires silent members (the writer) or follows the stream (a follower). `elected`:
    /// a cluster node, which writes only once [`Groups::lead`] made it the coordinator.
    /// Blocks (reads the log).
    ///
    /// # Errors
    /// The log's, when `_groups` cannot be opened, created or read.
    pub fn open(log: Arc<dyn LogBackend>, elected: bool) -> Result<Arc<Groups>, LogError> {
        // On a cluster node (`elected`) the stream takes what the engine acknowledges.
        let stream = crate::internal_stream::open_or_create(log.as_ref(), GROUPS_STREAM, elected)?;
        let mut inner = Inner {
            end: stream.partition(0)?.start_offset(),
            writer: (!elected).then_some(0),
            ..Inner::default()
        };
        catch_up(&*stream, &mut inner)?;
        restart_sessions(&mut inner);
        let groups = Arc::new(Groups {
            log,
            stream,
            inner: Mutex::new(inner),
            elected,
            deposed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            expiry: Mutex::new(None),
        });
        let weak = Arc::downgrade(&groups);
        let thread = std::thread::Builder::new()
            .name("logbook-groups".into())
            .spawn(move || {
                let pause = Duration::from_millis(limits::GROUP_EXPIRY_CHECK_MS);
                while let Some(groups) = weak.upgrade() {
                    if groups.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let next = groups.tick();
                    // Waits without keeping the groups alive.
                    let stream = groups.stream.clone();
                    drop(groups);
                    match next {
                        Next::Pause => std::thread::sleep(pause),
                        Next::WaitAbove(end) => match stream.partition(0) {
                            Ok(part) => {
                                part.wait_end_offset_above(end, pause);
                            }
                            Err(_) => std::thread::sleep(pause),
                        },
                    }
                }
            })
            .map_err(|e| LogError::Backend {
                backend: "server",
                detail: format!("cannot start the groups' expiry thread: {e}"),
            })?;
        *lock(&groups.expiry) = Some(thread);
        Ok(groups)
    }

    /// The background step: the writer expires silent members, a follower applies the
    /// records this node has seen stored. Says what the thread does before the next step.
    fn tick(&self) -> Next {
        let mut inner = self.lock();
        if inner.writer.is_some() {
            drop(inner);
            self.expire();
            return Next::Pause;
        }
        match self
            .stream
            .partition(0)
            .and_then(|p| apply_observed(p, &mut inner))
        {
            Ok(()) => Next::WaitAbove(inner.end),
            Err(e) => {
                tracing::warn!(error = %e, "following _groups; retrying");
                Next::Pause
            }
        }
    }

    /// Applies what `_groups` holds beyond this node's state (a follower's; the writer's
    /// state is the stream's already).
    ///
    /// # Errors
    /// The log's.
    pub fn catch_up(&self) -> Result<(), LogError> {
        let mut inner = self.lock();
        if inner.writer.is_none() {
            catch_up(&*self.stream, &mut inner)?;
        }
        Ok(())
    }

    /// Whether this node writes `_groups` now (a single node always does).
    pub fn is_writer(&self) -> bool {
        self.lock().writer.is_some()
    }

    /// Whether an elected writer stopped writing since it led (its election must end).
    pub fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }

    /// Becomes the writer of `_groups` under `token` (the election's fencing token, greater
    /// than every earlier coordinator's): catches up, appends an epoch record under the
    /// expected end, and gives every member a full session timeout from now (their
    /// heartbeats went to the coordinator before). Blocks.
    ///
    /// # Errors
    /// [`GroupsError::NotCoordinator`] when the stream holds an epoch at or above `token`
    /// or another writer extended it first (campaign again); the log's (the epoch's outcome
    /// may be unknown: lead again only under a new token).
    pub fn lead(&self, token: u64, node_id: &str) -> Result<(), GroupsError> {
        let mut inner = self.lock();
        if !self.elected || inner.writer.is_some() {
            return Err(GroupsError::NotCoordinator {
                why: "lead: only an elected follower becomes the writer".into(),
            });
        }
        catch_up(&*self.stream, &mut inner)?;
        if token <= inner.epoch_seen {
            return Err(GroupsError::NotCoordinator {
                why: format!("_groups already holds epoch {}", inner.epoch_seen),
            });
        }
        let epoch = Epoch::Epoch {
            token,
            node_id: node_id.to_string(),
        };
        self.append(&mut inner, &epoch, None)?;
        inner.epoch_seen = token;
        inner.writer = Some(token);
        self.deposed.store(false, Ordering::Release);
        restart_sessions(&mut inner);
        tracing::info!(
            epoch = token,
            node_id,
            "coordinating consumer groups: this node leads _groups"
        );
        Ok(())
    }

    /// Stops writing (the election was lost or ended); follows the stream from now on.
    pub fn step_down(&self) {
        let mut inner = self.lock();
        if self.elected {
            inner.writer = None;
        }
    }

    /// Stops the expiry thread.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = lock(&self.expiry).take() {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Checks `record`, appends it to `_groups`, waits for the acknowledgment, applies it.
    fn write(&self, inner: &mut Inner, record: GroupRecord) -> Result<(), GroupsError> {
        self.writable(inner)?;
        inner.state.check(&record)?;
        self.append(inner, &record, Some(record.group()))?;
        // Checked above under the same lock: nothing changed the state since.
        inner.state.apply(&record)?;
        Ok(())
    }

    /// Whether this node may write now: the writer, caught up after an unsure append.
    fn writable(&self, inner: &mut Inner) -> Result<(), GroupsError> {
        if inner.writer.is_none() {
            return Err(GroupsError::NotCoordinator {
                why: "another node coordinates them, or none is elected now".into(),
            });
        }
        if inner.unsure {
            // Only this node writes: whatever is past its end is its own unsure append. A
            // join stored that way was never answered: its member's session starts now, so
            // expiry sees it (a member without a session would never expire).
            catch_up(&*self.stream, inner)?;
            inner.unsure = false;
            start_missing_sessions(inner);
        }
        Ok(())
    }

    /// Appends `value` as one record (keyed `key`) under the expected end, and moves the end
    /// past it. An
    /// append refused because the stream grew elsewhere, or of unknown outcome, ends an
    /// elected writer's term (it follows again); a single node catches up before its next.
    fn append<T: Serialize>(
        &self,
        inner: &mut Inner,
        value: &T,
        key: Option<&str>,
    ) -> Result<(), GroupsError> {
        let bytes = serde_json::to_vec(value).map_err(|e| LogError::Backend {
            backend: "server",
            detail: format!("cannot encode a group record: {e}"),
        })?;
        let mut record = Record::new(bytes);
        record.key = key.map(|k| k.as_bytes().to_vec());
        let part = self.stream.partition(0)?;
        let appended = part
            .append_batch(&[record], AppendCondition::EndOffset(inner.end))
            .and_then(|completion| completion.wait());
        match appended {
            Ok(ack) => {
                inner.end = end_after(ack.last_offset(), part.batch_offset_span());
                Ok(())
            }
            Err(e) => {
                let refused = matches!(e, LogError::EndOffsetMismatch { .. });
                if self.elected {
                    inner.writer = None;
                    self.deposed.store(true, Ordering::Release);
                    tracing::warn!(error = %e, "an append to _groups failed: this node stops coordinating the groups");
                } else {
                    inner.unsure = true;
                }
                Err(if refused {
                    GroupsError::NotCoordinator {
                        why: format!("another writer extended _groups ({e})"),
                    }
                } else {
                    e.into()
                })
            }
        }
    }

    /// A member joins `group` (or rejoins after a restart, keeping its partitions), on
    /// behalf of `principal` (its quota key), within `quota` of what one principal may hold.
    ///
    /// # Errors
    /// [`GroupsError::Invalid`] (names, session timeout), [`GroupsError::ReservedStream`],
    /// `unknown_stream`, [`GroupError::StreamMismatch`], [`GroupError::TooMany`],
    /// [`GroupError::Quota`], the log's.
    pub fn join(
        &self,
        group: &str,
        body: &JoinGroup,
        principal: &str,
        quota: GroupQuota,
    ) -> Result<MemberAssignment, GroupsError> {
        validate_name("member", &body.member)?;
        if body.stream.starts_with('_') {
            return Err(GroupsError::ReservedStream {
                stream: body.stream.clone(),
            });
        }
        let timeout = body
            .session_timeout_ms
            .unwrap_or(limits::GROUP_SESSION_TIMEOUT_MS_DEFAULT);
        let range = limits::GROUP_SESSION_TIMEOUT_MS_MIN..=limits::GROUP_SESSION_TIMEOUT_MS_MAX;
        if !range.contains(&timeout) {
            return Err(invalid(
                "session_timeout_ms",
                format!("must be {} ..= {} ms", range.start(), range.end()),
            ));
        }
        let stream = self.log.stream(&body.stream)?;
        let mut inner = self.lock();
        let record = GroupRecord::Join {
            group: group.to_string(),
            stream: body.stream.clone(),
            partitions: stream.partition_count(),
            member: body.member.clone(),
            session_timeout_ms: timeout,
            principal: Some(principal.to_string()),
        };
        // Against the whole state: the writer's, caught up (on a cluster, the coordinator's).
        self.writable(&mut inner)?;
        inner.state.admit(&record, quota)?;
        self.write(&mut inner, record)?;
        inner
            .seen
            .insert((group.to_string(), body.member.clone()), Instant::now());
        self.assignment(&inner, group, &body.member)
    }

    /// A member's heartbeat: it is alive, and gives up `released`. Answers its assignment.
    ///
    /// # Errors
    /// [`GroupError::Fenced`], [`GroupError::NotAssigned`] (a release of a partition it does
    /// not own), the log's.
    pub fn heartbeat(
        &self,
        group: &str,
        member: &str,
        body: &Heartbeat,
    ) -> Result<MemberAssignment, GroupsError> {
        let mut inner = self.lock();
        // A heartbeat counts only where expiry is decided.
        self.writable(&mut inner)?;
        inner.state.member(group, member, body.epoch)?;
        if !body.released.is_empty() {
            let record = GroupRecord::Release {
                group: group.to_string(),
                member: member.to_string(),
                epoch: body.epoch,
                partitions: body.released.clone(),
            };
            self.write(&mut inner, record)?;
        }
        inner
            .seen
            .insert((group.to_string(), member.to_string()), Instant::now());
        self.assignment(&inner, group, member)
    }

    /// A member commits processed offsets; with `request_id`, a retry answers the original
    /// commit (`duplicate`) and changes nothing.
    ///
    /// # Errors
    /// [`GroupsError::Invalid`] (no offsets, a partition twice, an offset past the end),
    /// [`GroupError::Fenced`], [`GroupError::NotAssigned`], [`GroupError::Behind`],
    /// [`GroupsError::RequestIdConflict`], the log's.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        body: &CommitOffsets,
        request_id: Option<&str>,
    ) -> Result<OffsetsCommitted, GroupsError> {
        let offsets = offsets_by_partition(&body.offsets)?;
        // Checked before the lock: an end only grows.
        let stream = self.lock().state.group(group)?.stream.clone();
        self.check_within_end(&stream, &body.offsets)?;
        let mut inner = self.lock();
        let g = inner.state.group(group)?;
        let answer = |duplicate| OffsetsCommitted {
            group: group.to_string(),
            offsets: body.offsets.clone(),
            duplicate,
        };
        if let Some(id) = request_id {
            match g.remembered(id, member, &offsets) {
                Remembered::New => {}
                Remembered::Duplicate => return Ok(answer(true)),
                Remembered::Conflict => return Err(GroupsError::RequestIdConflict),
            }
        }
        let record = GroupRecord::Commit {
            group: group.to_string(),
            member: member.to_string(),
            epoch: body.epoch,
            offsets,
            request_id: request_id.map(str::to_string),
        };
        self.write(&mut inner, record)?;
        inner
            .seen
            .insert((group.to_string(), member.to_string()), Instant::now());
        Ok(answer(false))
    }

    /// Refuses a commit of an offset past its partition's end. A cluster node's handle knows
    /// the end it has seen: when an offset is past it, the end is asked of the log first
    /// ([`logbook_log::LogPartition::latest_end_offset`], one round trip to the partition's leader).
    fn check_within_end(
        &self,
        stream: &str,
        offsets: &[PartitionOffset],
    ) -> Result<(), GroupsError> {
        let Ok(stream) = self.log.stream(stream) else {
            return Ok(());
        };
        for (i, o) in offsets.iter().enumerate() {
            let Ok(p) = stream.partition(o.partition) else {
                continue;
            };
            let mut end = p.end_offset();
            if o.offset > end && self.elected {
                end = p.latest_end_offset()?;
            }
            if o.offset > end {
                return Err(invalid(
                    format!("offsets[{i}].offset"),
                    format!("offset {} is past the partition's end ({end})", o.offset),
                ));
            }
        }
        Ok(())
    }

    /// A member leaves; its partitions go to the others.
    ///
    /// # Errors
    /// [`GroupError::Fenced`], the log's.
    pub fn leave(&self, group: &str, member: &str, epoch: u64) -> Result<(), GroupsError> {
        let mut inner = self.lock();
        let record = GroupRecord::Leave {
            group: group.to_string(),
            member: member.to_string(),
            epoch,
            reason: "left".into(),
        };
        self.write(&mut inner, record)?;
        inner.seen.remove(&(group.to_string(), member.to_string()));
        Ok(())
    }

    /// Removes every member not heard from within its session timeout.
    fn expire(&self) {
        let mut inner = self.lock();
        if inner.writer.is_none() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<GroupRecord> = inner
            .state
            .groups
            .iter()
            .flat_map(|(name, g)| {
                g.members.iter().filter_map(|(member, m)| {
                    let seen = inner.seen.get(&(name.clone(), member.clone()))?;
                    let timeout = Duration::from_millis(m.session_timeout_ms);
                    (now.duration_since(*seen) > timeout).then(|| GroupRecord::Leave {
                        group: name.clone(),
                        member: member.clone(),
                        epoch: m.epoch,
                        reason: "expired".into(),
                    })
                })
            })
            .collect();
        for record in expired {
            let key = (record.group().to_string(), member_name(&record));
            match self.write(&mut inner, record) {
                Ok(()) => {
                    tracing::info!(group = %key.0, member = %key.1, "member removed: its session timed out");
                    inner.seen.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(group = %key.0, member = %key.1, error = %e, "could not remove a member whose session timed out; will retry");
                }
            }
        }
    }

    /// A member's share of its group.
    fn assignment(
        &self,
        inner: &Inner,
        group: &str,
        member: &str,
    ) -> Result<MemberAssignment, GroupsError> {
        let g = inner.state.group(group)?;
        let m = g.members.get(member).ok_or_else(|| GroupError::Fenced {
            group: group.to_string(),
            member: member.to_string(),
            epoch: 0,
            why: "it is not a member now".into(),
        })?;
        let stream = self.log.stream(&g.stream).ok();
        let start = |p: u32| {
            stream
                .as_ref()
                .and_then(|s| s.partition(p).ok().map(|p| p.start_offset()))
                .unwrap_or(0)
        };
        Ok(MemberAssignment {
            group: group.to_string(),
            stream: g.stream.clone(),
            member: member.to_string(),
            epoch: m.epoch,
            generation: g.generation,
            assigned: m
                .owned
                .iter()
                .map(|p| AssignedPartition {
                    partition: *p,
                    from: g.committed.get(p).copied().unwrap_or(0).max(start(*p)),
                })
                .collect(),
            revoke: m.revoking.iter().copied().collect(),
            session_timeout_ms: m.session_timeout_ms,
            heartbeat_interval_ms: m.session_timeout_ms / 3,
        })
    }

    /// Every group, by name. The lags are computed outside the groups' lock (on a cluster
    /// they take reads): from the state as it was, against ends as they are now or later,
    /// so a lag never counts what was committed as uncommitted.
    ///
    /// # Errors
    /// The log's, when a partition's end cannot be asked (a cluster node).
    pub fn list(&self) -> Result<Vec<GroupInfo>, GroupsError> {
        let groups = self.lock().state.groups.clone();
        let streams: BTreeSet<&str> = groups.values().map(|g| g.stream.as_str()).collect();
        for stream in streams {
            self.refresh_ends(stream)?;
        }
        Ok(groups.iter().map(|(name, g)| self.info(name, g)).collect())
    }

    /// One group: members, assignments, committed offsets and lag per partition.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`]; the log's, when a partition's end cannot be asked.
    pub fn describe(&self, group: &str) -> Result<GroupInfo, GroupsError> {
        let g = self.lock().state.group(group)?.clone();
        self.refresh_ends(&g.stream)?;
        Ok(self.info(group, &g))
    }

    /// What `principal` holds of the groups (on a follower: as far as it has applied
    /// `_groups`).
    pub fn held(&self, principal: &str) -> Held {
        self.lock().state.held.of(principal)
    }

    /// The stream `group` reads.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`].
    pub fn stream_of(&self, group: &str) -> Result<String, GroupsError> {
        Ok(self.lock().state.group(group)?.stream.clone())
    }

    /// Deletes a group without members: its committed offsets and request ids go; its name
    /// is free again (a new group under it starts with no commits, and its members' epochs
    /// above every epoch the old one handed out).
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], [`GroupError::Active`], the log's.
    pub fn delete(&self, group: &str) -> Result<(), GroupsError> {
        let mut inner = self.lock();
        let record = GroupRecord::Delete {
            group: group.to_string(),
        };
        self.write(&mut inner, record)
    }

    /// On a cluster node, asks the log for the current end of each partition of `stream`
    /// (one round trip each, outside the groups' lock), so that lag and a reset to the end
    /// count what other nodes appended. A local log's ends are current already. A stream
    /// that is gone is left to the caller.
    fn refresh_ends(&self, stream: &str) -> Result<(), LogError> {
        if !self.elected {
            return Ok(());
        }
        let Ok(stream) = self.log.stream(stream) else {
            return Ok(());
        };
        for part in stream.partitions() {
            part.latest_end_offset()?;
        }
        Ok(())
    }

    fn info(&self, name: &str, g: &Group) -> GroupInfo {
        let stream = self.log.stream(&g.stream).ok();
        let owners = g.owners();
        let partitions: Vec<GroupPartition> = (0..g.partitions)
            .map(|p| {
                let committed = g.committed.get(&p).copied();
                let (start, end, lag) =
                    stream
                        .as_ref()
                        .and_then(|s| s.partition(p).ok())
                        .map_or((0, 0, 0), |part| {
                            let (start, end) = (part.start_offset(), part.end_offset());
                            (
                                start,
                                end,
                                lag(part, committed.unwrap_or(start).max(start), end),
                            )
                        });
                GroupPartition {
                    partition: p,
                    owner: owners.get(&p).map(|m| (*m).to_string()),
                    committed,
                    start,
                    end,
                    lag,
                    below_retention: committed.is_some_and(|c| c < start),
                }
            })
            .collect();
        GroupInfo {
            group: name.to_string(),
            stream: g.stream.clone(),
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(member, m)| MemberInfo {
                    member: member.clone(),
                    epoch: m.epoch,
                    assigned: m.owned.iter().copied().collect(),
                    revoking: m.revoking.iter().copied().collect(),
                    session_timeout_ms: m.session_timeout_ms,
                })
                .collect(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        }
    }

    /// The groups reading `stream` whose committed offsets retention has passed:
    /// `(group, partition, committed, start)`.
    pub fn below_retention(&self, stream: &str) -> Vec<(String, u32, u64, u64)> {
        let Ok(log_stream) = self.log.stream(stream) else {
            return Vec::new();
        };
        let inner = self.lock();
        let mut below = Vec::new();
        for (name, g) in inner
            .state
            .groups
            .iter()
            .filter(|(_, g)| g.stream == stream)
        {
            for (p, committed) in &g.committed {
                let Ok(part) = log_stream.partition(*p) else {
                    continue;
                };
                if *committed < part.start_offset() {
                    below.push((name.clone(), *p, *committed, part.start_offset()));
                }
            }
        }
        below
    }

    /// Where `group` would have each partition of `stream` read from: its committed offset,
    /// or the first retained one.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], [`GroupError::StreamMismatch`].
    pub fn positions(
        &self,
        group: &str,
        stream: &dyn LogStream,
    ) -> Result<BTreeMap<u32, u64>, GroupsError> {
        self.catch_up()?;
        let inner = self.lock();
        let g = inner.state.group(group)?;
        if g.stream != stream.name() {
            return Err(GroupError::StreamMismatch {
                group: group.to_string(),
                stream: g.stream.clone(),
                asked: stream.name().to_string(),
            }
            .into());
        }
        Ok(stream
            .partitions()
            .iter()
            .map(|p| {
                let from = g.committed.get(&p.id()).copied().unwrap_or(0);
                (p.id(), from.max(p.start_offset()))
            })
            .collect())
    }

    /// Resets a group without members to the start, the end, a time, or given offsets; with
    /// `dry_run`, only says what it would do.
    ///
    /// # Errors
    /// [`GroupsError::Invalid`] (not exactly one target; no offsets, a partition named
    /// twice, an offset outside the retained range), [`GroupError::Active`], [`GroupError::UnknownGroup`], the log's.
    pub fn reset(&self, group: &str, body: &ResetGroup) -> Result<GroupReset, GroupsError> {
        let targets = [
            body.to.is_some(),
            body.timestamp_ms.is_some(),
            body.offsets.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() != 1 {
            return Err(invalid(
                "to",
                "give exactly one of to (start or end), timestamp_ms, offsets",
            ));
        }
        if let Some(offsets) = &body.offsets {
            offsets_by_partition(offsets)?;
        }
        let stream = self.lock().state.group(group)?.stream.clone();
        self.refresh_ends(&stream)?;
        let mut inner = self.lock();
        let g = inner.state.group(group)?;
        let stream = self.log.stream(&g.stream)?;
        let mut offsets = BTreeMap::new();
        for part in stream.partitions() {
            let to = match (body.to, body.timestamp_ms) {
                (Some(ResetPoint::Start), _) => Some(part.start_offset()),
                (Some(ResetPoint::End), _) => Some(part.end_offset()),
                (None, Some(t)) => Some(part.offset_for_timestamp(t)?.offset),
                (None, None) => None,
            };
            if let Some(to) = to {
                offsets.insert(part.id(), to);
            }
        }
        for (i, o) in body.offsets.iter().flatten().enumerate() {
            let part = stream.partition(o.partition).map_err(|_| {
                invalid(
                    format!("offsets[{i}].partition"),
                    format!("not a partition of stream {:?}", g.stream),
                )
            })?;
            if !(part.start_offset()..=part.end_offset()).contains(&o.offset) {
                return Err(invalid(
                    format!("offsets[{i}].offset"),
                    format!(
                        "must be within the retained range {} ..= {}",
                        part.start_offset(),
                        part.end_offset()
                    ),
                ));
            }
            offsets.insert(o.partition, o.offset);
        }
        let moves = offsets
            .iter()
            .map(|(p, to)| OffsetMove {
                partition: *p,
                from: g.committed.get(p).copied(),
                to: *to,
            })
            .collect();
        let record = GroupRecord::Reset {
            group: group.to_string(),
            offsets,
        };
        if body.dry_run {
            inner.state.check(&record)?;
        } else {
            self.write(&mut inner, record)?;
        }
        Ok(GroupReset {
            group: group.to_string(),
            dry_run: body.dry_run,
            offsets: moves,
        })
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What a group has not committed of a partition, from `from` (its committed offset, or the
/// first retained one) to `end`. Where offsets are dense (the embedded log): the records.
/// Where they have gaps (a cluster's JetStream log, `(sequence − 1)·2^16 + index`, one
/// message per append): the appended batches holding a record at or past `from` — each
/// holds one record or more, and a commit past a batch's last record leaves nothing of it.
/// So a lag is 0 exactly when every record is committed, on every backend. A commit inside
/// a batch costs one read (of that batch) to tell whether records of it remain.
fn lag(part: &dyn LogPartition, from: u64, end: u64) -> u64 {
    if from >= end {
        return 0;
    }
    if part.offsets_dense() {
        return end - from;
    }
    let span = part.batch_offset_span().max(1);
    let first = if from.is_multiple_of(span) {
        from
    } else {
        match part.read(from, 1, 1) {
            Ok(records) => match records.first() {
                Some(r) => r.offset,
                None => return 0,
            },
            Err(e) => {
                // Counted as pending: at most one batch too many, never a lag hidden.
                tracing::warn!(partition = part.id(), from, error = %e, "lag: cannot read the committed batch");
                from
            }
        }
    };
    (end.saturating_sub(first - first % span)).div_ceil(span)
}

/// Reads `_groups` from `inner.end` until it holds nothing more, applying each record (a
/// follower's handle learns the end by reading).
fn catch_up(stream: &dyn LogStream, inner: &mut Inner) -> Result<(), LogError> {
    let part = stream.partition(0)?;
    while apply_next(part, inner)? {}
    Ok(())
}

/// A follower's step: applies the records of `_groups` that this node has seen stored
/// beyond its state (its observed end: on JetStream raised by the partition's watch), and
/// reads nothing when there are none — an idle follower asks the log for nothing.
fn apply_observed(part: &dyn LogPartition, inner: &mut Inner) -> Result<(), LogError> {
    while inner.end < part.end_offset() {
        if !apply_next(part, inner)? {
            break;
        }
    }
    Ok(())
}

/// Reads the records of `_groups` from this node's end on (one read) and applies them;
/// false when there were none.
fn apply_next(part: &dyn LogPartition, inner: &mut Inner) -> Result<bool, LogError> {
    let records = part.read(inner.end, REPLAY_RECORDS, REPLAY_BYTES)?;
    let Some(last) = records.last() else {
        return Ok(false);
    };
    inner.end = end_after(last.offset, part.batch_offset_span());
    for r in &records {
        apply_stored(inner, r.offset, &r.value);
    }
    Ok(true)
}

/// Applies one stored record of `_groups`: an epoch, or a group change.
fn apply_stored(inner: &mut Inner, offset: u64, value: &[u8]) {
    if let Ok(Epoch::Epoch { token, node_id }) = serde_json::from_slice::<Epoch>(value) {
        tracing::info!(epoch = token, coordinator = %node_id, offset, "_groups: epoch record");
        inner.epoch_seen = inner.epoch_seen.max(token);
        return;
    }
    let applied = serde_json::from_slice::<GroupRecord>(value)
        .map_err(|e| e.to_string())
        .and_then(|record| inner.state.apply(&record).map_err(|e| e.to_string()));
    if let Err(e) = applied {
        // Only accepted records are appended; one that does not apply is damage (or a newer
        // format): said, and skipped, as replay must go on.
        tracing::warn!(offset, error = %e, "a record of _groups does not apply; skipped");
    }
}

/// Every member's session restarts now: after a restart, or when a new coordinator takes
/// over (the heartbeats went elsewhere until then).
fn restart_sessions(inner: &mut Inner) {
    let now = Instant::now();
    inner.seen = inner
        .state
        .groups
        .iter()
        .flat_map(|(name, g)| {
            g.members
                .keys()
                .map(move |m| ((name.clone(), m.clone()), now))
        })
        .collect();
}

/// Every member without a session (one whose join a catch-up applied) gets one from now.
fn start_missing_sessions(inner: &mut Inner) {
    let now = Instant::now();
    for (name, g) in &inner.state.groups {
        for member in g.members.keys() {
            inner
                .seen
                .entry((name.clone(), member.clone()))
                .or_insert(now);
        }
    }
}

/// The end of a partition after the record at `offset` of a one-record batch, where
/// consecutive one-record batches are `span` apart (1 where offsets are dense).
fn end_after(offset: u64, span: u64) -> u64 {
    (offset / span.max(1) + 1) * span.max(1)
}

fn member_name(record: &GroupRecord) -> String {
    match record {
        GroupRecord::Join { member, .. }
        | GroupRecord::Leave { member, .. }
        | GroupRecord::Release { member, .. }
        | GroupRecord::Commit { member, .. } => member.clone(),
        GroupRecord::Reset { .. } | GroupRecord::Delete { .. } => String::new(),
    }
}

/// The offsets of a commit or a reset by partition: 1 ..= [`limits::MEMBERS_PER_GROUP_MAX`]
/// partitions, none named twice (which of two would win is not the server's guess).
///
/// # Errors
/// [`GroupsError::Invalid`] naming `offsets` or the entry naming a partition again.
fn offsets_by_partition(offsets: &[PartitionOffset]) -> Result<BTreeMap<u32, u64>, GroupsError> {
    if offsets.is_empty() || offsets.len() > limits::MEMBERS_PER_GROUP_MAX {
        return Err(invalid(
            "offsets",
            format!(
                "give 1 ..= {} partitions' offsets",
                limits::MEMBERS_PER_GROUP_MAX
            ),
        ));
    }
    let mut by_partition = BTreeMap::new();
    for (i, o) in offsets.iter().enumerate() {
        if by_partition.insert(o.partition, o.offset).is_some() {
            return Err(invalid(
                format!("offsets[{i}].partition"),
                format!("partition {} is named twice", o.partition),
            ));
        }
    }
    Ok(by_partition)
}

/// Checks a group or member name: 1 ..= 128 bytes of `[A-Za-z0-9._-]`.
///
/// # Errors
/// [`GroupsError::Invalid`] naming `field`.
pub fn validate_name(field: &str, name: &str) -> Result<(), GroupsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} must be 1 ..= 128 bytes of A-Z a-z 0-9 . _ -"),
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a broken invariant (state.rs asserts); the state
    // it left is the last one applied.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
