//! Consumer groups: `GET /v1/groups`, `GET /v1/groups/{group}`, members joining,
//! heart-beating, committing and leaving, and resets (the coordinator is
//! [`crate::groups`]; the protocol is docs/decisions/0019). Every operation takes the groups'
//! lock and may append to `_groups` and wait for its fsync: all run on the blocking pool.
//! A cluster node that does not coordinate the groups sends every group route on to the
//! node that does (the election `groups`), as the client sent it: one node decides joins,
//! commits and expiry, and the answers read what it decided.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use logbook_api::groups::{
    CommitOffsets, GroupInfo, GroupList, GroupReset, Heartbeat, JoinGroup, MemberAssignment,
    OffsetsCommitted, ResetGroup,
};
use logbook_api::paths::route;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::scope::{Action, Kind, Need};
use crate::auth::{Caller, Principal, authorize};
use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, Tracking, blocking};
use crate::groups::{GroupError, GroupQuota, Groups, GroupsError, validate_name};
use crate::state::{AppState, Forwarded};

use super::Params;

/// A groups error as problem+json.
pub(crate) fn problem(e: GroupsError) -> ApiError {
    use ProblemCode as C;
    match e {
        GroupsError::Log(e) => ApiError::from_log(e, |_| String::new()),
        GroupsError::Invalid { field, reason } => ApiError::invalid(field, reason),
        GroupsError::ReservedStream { .. } => {
            ApiError::new(C::ReservedStream, e.to_string()).field("stream")
        }
        GroupsError::RequestIdConflict => {
            ApiError::new(C::RequestIdConflict, e.to_string()).field("Idempotency-Key")
        }
        GroupsError::Group(g) => {
            let (code, field) = match &g {
                GroupError::UnknownGroup { .. } => (C::UnknownGroup, "group"),
                GroupError::Fenced { .. } => (C::MemberFenced, "epoch"),
                GroupError::NotAssigned { .. } => (C::PartitionNotAssigned, "offsets"),
                GroupError::Behind { .. } => (C::OffsetBehindCommit, "offsets"),
                GroupError::NoSuchPartition { .. } => (C::InvalidRequest, "offsets"),
                GroupError::StreamMismatch { .. } => (C::GroupStreamMismatch, "stream"),
                GroupError::Active { .. } => (C::GroupActive, "group"),
                GroupError::TooMany { .. } => (C::TooManyGroups, "group"),
                GroupError::Quota(q) => (C::GroupQuotaExceeded, q.field),
            };
            ApiError::new(code, g.to_string()).field(field)
        }
        GroupsError::NotCoordinator { .. } => {
            ApiError::new(C::LeaderUnavailable, e.to_string()).retry_after(1)
        }
    }
}

/// How the request came, to send it on to the coordinator as it is.
#[derive(Debug, Clone)]
pub struct Origin {
    method: Method,
    path_and_query: String,
    authorization: Option<String>,
    forwarded_by: Option<String>,
    tracking: Tracking,
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(Origin {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
            authorization: text(header::AUTHORIZATION.as_str()),
            forwarded_by: text(logbook_api::paths::FORWARDED_BY_HEADER),
            tracking: Tracking::from_request_parts(parts, state).await?,
        })
    }
}

/// What one principal may hold of the groups, as `config` sets it.
pub(crate) fn group_quota(config: &crate::config::ServerConfig) -> GroupQuota {
    GroupQuota {
        groups_max: config.groups_per_principal_max,
        members_max: config.group_members_per_principal_max,
    }
}

/// No body to send on.
const NO_BODY: Option<&()> = None;

/// The scope a route naming a group needs beside its `groups:` one: reading the group's
/// stream (`streams:read:S`). A group shows its stream's offsets and ends, and its members
/// read the stream: a token that may not read a stream may not join, commit to, reset,
/// delete or describe a group on it. Checked where the group's stream is known: on the
/// node that runs the operation (a forwarded request is checked by the coordinator's edge
/// and here again). Nothing to check without a caller (`--auth off`) or an unknown group
/// (the operation names it).
fn check_stream_read(
    caller: Option<&Principal>,
    groups: &Groups,
    group: &str,
) -> Result<(), ApiError> {
    let (Some(principal), Ok(stream)) = (caller, groups.stream_of(group)) else {
        return Ok(());
    };
    authorize(
        principal,
        &[Need::Name(Kind::Streams, Action::Read, stream)],
    )
}

/// Runs a groups operation on the blocking pool — here if this node writes `_groups` (a
/// single node; the cluster's coordinator), else on the coordinator: `origin` and `body`
/// sent on, its answer parsed as `T`. For a route naming `group`, the caller must read its
/// stream ([`check_stream_read`]).
async fn run<T: DeserializeOwned + Send + 'static>(
    state: &AppState,
    group: Option<&str>,
    (origin, caller): (Origin, &Caller),
    body: Option<&impl Serialize>,
    op: impl FnOnce(&Groups) -> Result<T, GroupsError> + Send + 'static,
) -> Result<T, ApiError> {
    if let Some(group) = group {
        validate_name("group", group).map_err(problem)?;
    }
    let opened = state.opened()?;
    let groups = opened.groups()?;
    if let Some(member) = opened.cluster.as_ref().filter(|_| !groups.is_writer()) {
        if let Some(from) = &origin.forwarded_by {
            // A stale view of the coordinator must not make a loop.
            return Err(ApiError::new(
                ProblemCode::LeaderUnavailable,
                format!(
                    "forwarded by {from:?} to a node that does not coordinate the groups (the \
                     coordinator just changed); nothing was done, retry"
                ),
            )
            .retry_after(1));
        }
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let answer = member
            .forward_to_coordinator(Forwarded {
                method: origin.method,
                path: origin.path_and_query,
                body,
                request_id: origin.tracking.request_id.map(|r| r.as_str().to_string()),
                traceparent: origin.tracking.traceparent,
                authorization: origin.authorization,
            })
            .await?;
        // A 204 has no body: `()` reads it as `null`.
        let answer = if answer.is_empty() {
            b"null".to_vec()
        } else {
            answer
        };
        return serde_json::from_slice(&answer).map_err(|e| {
            ApiError::internal(format!(
                "the groups' coordinator answered a body this node cannot read: {e}"
            ))
        });
    }
    let caller = caller.as_ref().map(|axum::Extension(p)| p.clone());
    let group = group.map(str::to_string);
    blocking(move || {
        if let Some(group) = &group {
            check_stream_read(caller.as_deref(), &groups, group)?;
        }
        op(&groups).map_err(problem)
    })
    .await?
}

/// Every consumer group: members, assignments, committed offsets, lag.
#[utoipa::path(get, path = route::GROUPS, tag = "groups",
    responses((status = 200, body = GroupList)))]
pub async fn list_groups(
    State(state): State<AppState>,
    origin: Origin,
    caller: Caller,
    q: Params,
) -> Result<Json<GroupList>, ApiError> {
    q.only(&[])?;
    let principal = caller.as_ref().map(|axum::Extension(p)| p.clone());
    let list = run(&state, None, (origin, &caller), NO_BODY, move |g| {
        let mut groups = g.list()?;
        // Only the groups on streams the caller may read (see `check_stream_read`).
        if let Some(p) = &principal {
            groups.retain(|g| {
                let need = Need::Name(Kind::Streams, Action::Read, g.stream.clone());
                p.scopes.iter().any(|s| s.covers(&need))
            });
        }
        Ok(GroupList { groups })
    })
    .await?;
    Ok(Json(list))
}

/// One group: its members with their assignments, and per partition the owner, the
/// committed offset, the retained range and the lag.
#[utoipa::path(get, path = route::GROUP, tag = "groups",
    params(("group" = String, Path)),
    responses((status = 200, body = GroupInfo),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json")))]
pub async fn describe_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    origin: Origin,
    caller: Caller,
    q: Params,
) -> Result<Json<GroupInfo>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(&state, Some(&group), (origin, &caller), NO_BODY, move |g| {
            g.describe(&name)
        })
        .await?,
    ))
}

/// A member joins the group (the group is made by its first join), or rejoins after a
/// restart under its name: it keeps its partitions and resumes at their commits. The group
/// made counts against the caller's `groups_per_principal_max`, the member against its
/// `group_members_per_principal_max` (until the group is deleted, the member gone).
#[utoipa::path(post, path = route::GROUP_MEMBERS, tag = "groups",
    params(("group" = String, Path, description = "Group name: [A-Za-z0-9._-], ≤ 128 bytes")),
    request_body = JoinGroup,
    responses((status = 200, description = "Joined: the member's partitions", body = MemberAssignment),
        (status = 400, description = "`invalid_request` naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_stream_mismatch`, `too_many_groups`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`group_quota_exceeded`: the caller holds `groups_per_principal_max` groups or `group_members_per_principal_max` members", body = Problem, content_type = "application/problem+json")))]
pub async fn join(
    State(state): State<AppState>,
    Path(group): Path<String>,
    origin: Origin,
    caller: Caller,
    conn: Option<axum::Extension<std::sync::Arc<crate::head::Tracker>>>,
    q: Params,
    JsonBody(body): JsonBody<JoinGroup>,
) -> Result<Json<MemberAssignment>, ApiError> {
    q.only(&[])?;
    let principal = crate::quota::request_key(
        caller.as_deref().map(|p| &**p),
        conn.as_deref().and_then(|c| c.peer_key()),
    );
    let quota = group_quota(state.config());
    // The group may not exist yet: the stream named is the one it would read.
    if let Some(axum::Extension(principal)) = &caller {
        authorize(
            principal,
            &[Need::Name(Kind::Streams, Action::Read, body.stream.clone())],
        )?;
    }
    let name = group.clone();
    Ok(Json(
        run(
            &state,
            Some(&group),
            (origin, &caller),
            Some(&body.clone()),
            move |g| g.join(&name, &body, &principal, quota),
        )
        .await?,
    ))
}

/// A member's heartbeat, giving up the partitions it names in `released`; answers what it
/// owns now and what it must revoke.
#[utoipa::path(post, path = route::GROUP_HEARTBEAT, tag = "groups",
    params(("group" = String, Path), ("member" = String, Path)),
    request_body = Heartbeat,
    responses((status = 200, body = MemberAssignment),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`member_fenced` (join again), `partition_not_assigned` (a release of a partition it does not own)", body = Problem, content_type = "application/problem+json")))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
    origin: Origin,
    caller: Caller,
    q: Params,
    JsonBody(body): JsonBody<Heartbeat>,
) -> Result<Json<MemberAssignment>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(
            &state,
            Some(&group),
            (origin, &caller),
            Some(&body.clone()),
            move |g| g.heartbeat(&name, &member, &body),
        )
        .await?,
    ))
}

/// A member commits the offsets it processed (the next offset to process, per partition).
/// With an `Idempotency-Key`, exactly once: a retry answers `"duplicate": true` and changes
/// nothing.
#[utoipa::path(post, path = route::GROUP_COMMIT, tag = "groups",
    params(("group" = String, Path), ("member" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Request id: 1..=128 printable ASCII bytes")),
    request_body = CommitOffsets,
    responses((status = 200, body = OffsetsCommitted),
        (status = 400, description = "`invalid_request` naming the field (an offset past the end, a partition twice)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`member_fenced`, `partition_not_assigned`, `offset_behind_commit`, `request_id_conflict`", body = Problem, content_type = "application/problem+json")))]
pub async fn commit(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
    origin: Origin,
    caller: Caller,
    q: Params,
    JsonBody(body): JsonBody<CommitOffsets>,
) -> Result<Json<OffsetsCommitted>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    let id = origin
        .tracking
        .request_id
        .as_ref()
        .map(|id| id.as_str().to_string());
    Ok(Json(
        run(
            &state,
            Some(&group),
            (origin, &caller),
            Some(&body.clone()),
            move |g| g.commit(&name, &member, &body, id.as_deref()),
        )
        .await?,
    ))
}

/// A member leaves; its partitions go to the other members at once.
#[utoipa::path(delete, path = route::GROUP_MEMBER, tag = "groups",
    params(("group" = String, Path), ("member" = String, Path),
        ("epoch" = u64, Query, description = "The member's epoch")),
    responses((status = 204, description = "Left"),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`member_fenced`", body = Problem, content_type = "application/problem+json")))]
pub async fn leave(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
    origin: Origin,
    caller: Caller,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&["epoch"])?;
    let Some(epoch) = q.get::<u64>("epoch")? else {
        return Err(ApiError::invalid(
            "epoch",
            "epoch is required: the member's epoch",
        ));
    };
    let name = group.clone();
    run(&state, Some(&group), (origin, &caller), NO_BODY, move |g| {
        g.leave(&name, &member, epoch)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a group's committed offsets to the start, the end, a time or given offsets — a
/// group without members only; `dry_run` answers the moves and changes nothing.
#[utoipa::path(post, path = route::GROUP_RESET, tag = "groups",
    params(("group" = String, Path)),
    request_body = ResetGroup,
    responses((status = 200, body = GroupReset),
        (status = 400, description = "`invalid_request` naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_active`", body = Problem, content_type = "application/problem+json")))]
pub async fn reset(
    State(state): State<AppState>,
    Path(group): Path<String>,
    origin: Origin,
    caller: Caller,
    q: Params,
    JsonBody(body): JsonBody<ResetGroup>,
) -> Result<Json<GroupReset>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(
            &state,
            Some(&group),
            (origin, &caller),
            Some(&body.clone()),
            move |g| g.reset(&name, &body),
        )
        .await?,
    ))
}

/// Deletes a group without members: its committed offsets go, and its name is free (one
/// slot of the node's groups again). Members of the old group that come back are fenced.
#[utoipa::path(delete, path = route::GROUP, tag = "groups",
    params(("group" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden`: needs groups:manage on the group and streams:read on its stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_group`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_active`: the group has members (they leave, or their sessions time out, first)", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    origin: Origin,
    caller: Caller,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    run(&state, Some(&group), (origin, &caller), NO_BODY, move |g| {
        g.delete(&name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
