//! Consumer groups: `GET /v1/groups`, `GET /v1/groups/{group}`, members joining,
//! heart-beating, committing and leaving, and resets (the coordinator is
//! [`crate::groups`]; the protocol is docs/decisions/0019). Every operation takes the groups'
//! lock and may append to `_groups` and wait for its fsync: all run on the blocking pool.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use logbook_api::groups::{
    CommitOffsets, GroupInfo, GroupList, GroupReset, Heartbeat, JoinGroup, MemberAssignment,
    OffsetsCommitted, ResetGroup,
};
use logbook_api::paths::route;

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, Tracking, blocking};
use crate::groups::{GroupError, GroupsError, validate_name};
use crate::state::AppState;

use super::Params;

/// A groups error as problem+json.
pub(crate) fn problem(e: GroupsError) -> ApiError {
    use ProblemCode as C;
    match e {
        GroupsError::Log(e) => ApiError::from_log(e, |_| String::new()),
        GroupsError::Invalid { field, reason } => ApiError::invalid(field, reason),
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
            };
            ApiError::new(code, g.to_string()).field(field)
        }
    }
}

/// Runs a groups operation on the blocking pool.
async fn run<T: Send + 'static>(
    state: &AppState,
    group: Option<&str>,
    op: impl FnOnce(&crate::groups::Groups) -> Result<T, GroupsError> + Send + 'static,
) -> Result<T, ApiError> {
    if let Some(group) = group {
        validate_name("group", group).map_err(problem)?;
    }
    let groups = state.opened()?.groups()?;
    blocking(move || op(&groups)).await?.map_err(problem)
}

/// Every consumer group: members, assignments, committed offsets, lag.
#[utoipa::path(get, path = route::GROUPS, tag = "groups",
    responses((status = 200, body = GroupList)))]
pub async fn list_groups(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<GroupList>, ApiError> {
    q.only(&[])?;
    let groups = run(&state, None, |g| Ok(g.list())).await?;
    Ok(Json(GroupList { groups }))
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
    q: Params,
) -> Result<Json<GroupInfo>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(&state, Some(&group), move |g| g.describe(&name)).await?,
    ))
}

/// A member joins the group (the group is made by its first join), or rejoins after a
/// restart under its name: it keeps its partitions and resumes at their commits.
#[utoipa::path(post, path = route::GROUP_MEMBERS, tag = "groups",
    params(("group" = String, Path, description = "Group name: [A-Za-z0-9._-], ≤ 128 bytes")),
    request_body = JoinGroup,
    responses((status = 200, description = "Joined: the member's partitions", body = MemberAssignment),
        (status = 400, description = "`invalid_request` naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`group_stream_mismatch`, `too_many_groups`", body = Problem, content_type = "application/problem+json")))]
pub async fn join(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: Params,
    JsonBody(body): JsonBody<JoinGroup>,
) -> Result<Json<MemberAssignment>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(&state, Some(&group), move |g| g.join(&name, &body)).await?,
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
    q: Params,
    JsonBody(body): JsonBody<Heartbeat>,
) -> Result<Json<MemberAssignment>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(&state, Some(&group), move |g| {
            g.heartbeat(&name, &member, &body)
        })
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
    q: Params,
    tracking: Tracking,
    JsonBody(body): JsonBody<CommitOffsets>,
) -> Result<Json<OffsetsCommitted>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    let id = tracking.request_id.map(|id| id.as_str().to_string());
    Ok(Json(
        run(&state, Some(&group), move |g| {
            g.commit(&name, &member, &body, id.as_deref())
        })
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
    run(&state, Some(&group), move |g| {
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
    q: Params,
    JsonBody(body): JsonBody<ResetGroup>,
) -> Result<Json<GroupReset>, ApiError> {
    q.only(&[])?;
    let name = group.clone();
    Ok(Json(
        run(&state, Some(&group), move |g| g.reset(&name, &body)).await?,
    ))
}
