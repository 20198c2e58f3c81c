//! Transactions in one round trip: `POST /v1/kv/read` (keys and ranges at one snapshot) and
//! `POST /v1/commits` (a whole transaction as one self-contained request). The wire body is
//! turned into the transaction store's `CommitRequest` — the same value an interactive
//! commit hands to the commit path — and certified the same way.

use axum::Json;
use axum::extract::State;
use logbook_api::paths::route;
use logbook_api::txns::{
    CommitBody, Committed, KeyAt, RangeSpec, ReadAnswer, ReadBody, Row, WriteKind,
};
use logbook_txn::Isolation;

use crate::auth::scope::{Action, Kind, Need};
use crate::auth::{
    Caller, authorize_body, authorize_held_snapshot_write, range_need, reveals_state,
};
use crate::error::{ApiError, Problem};
use crate::extract::{JsonBody, RequiredJsonBody, Tracking, blocking};
use crate::limits;
use crate::state::{AppState, Opened};

use super::certify::{certify_or_forward, check_keys, isolation, name_field, spec_range};
use super::txns::rows;
use super::{Params, raw_json};

/// Reads keys and ranges at one snapshot (the newest, or one named within the snapshot
/// window) — the first round trip of a read-modify-write; declare what it returned in
/// `POST /v1/commits`. Nothing is registered on the server between the two. A `token` is a
/// minimum snapshot (the session's commits are read), as for the other key-value reads.
#[utoipa::path(post, path = route::KV_READ, tag = "transactions",
    params(("Idempotency-Key" = Option<String>, Header, description = "Accepted and has no effect: a read changes nothing, so there is nothing to deduplicate (a client that sends a request id with every POST is not refused)"),
        ("token" = Option<String>, Query, description = "Consistency token of earlier commits (a `_txn` position): the snapshot includes them (waiting for them to be durable, or on a cluster follower applied, at most `timeout_ms`). With a `snapshot` in the body, it must be at least the token's position"),
        ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "How long to wait for the token, and on a cluster follower to apply the commit stream up to `snapshot`, ms (default 5000, at most 60000)")),
    request_body = ReadBody,
    responses((status = 200, description = "The values, versions and pages at one snapshot. A range whose `next` is set with fewer rows than its `limit` was cut by the answer's byte budget (`KV_READ_ANSWER_BYTES_MAX`, 4 MiB): read on from `next` at the same snapshot", body = ReadAnswer),
        (status = 400, description = "`invalid_json` (the body; `field` its path), `invalid_request` (`ranges[i].limit` outside 1..=10000, `ranges[i].end` beside a prefix, `ranges[i].next` in a read, a range's `end` not after its `start`, a `start` outside its `prefix`, a bound longer than a key, `snapshot` below the token's position, `timeout_ms`, an unknown query parameter), `invalid_token`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: no valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a key or range no `kv:read` scope of the token covers; `field` names it (`keys[2]`, `ranges[0]`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`snapshot_too_old`: the snapshot is behind the snapshot window (retryable: read again); `token_incarnation`: the token names an earlier incarnation of the commit stream", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (the body), `key_too_large` (`keys[i]`), `answer_too_large` (the values of `keys` pass the answer's byte budget, or one row alone does; `field` names where)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: a body not declared JSON (`field` `Content-Type`), or content-coded (`field` `Content-Encoding`: only `identity` is taken)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unprocessable_request`: a snapshot ahead of the log, more keys or ranges than a transaction may read (`field` names which); `snapshot_ahead` (retryable, with `Retry-After`): a cluster node did not reach the snapshot in time", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`not_ready`, `server_busy`, `closed`, `leader_unavailable` (a cluster node's store is opening), `log_unavailable`: retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`consistency_timeout`: the token's commits were not durable within `timeout_ms` (retryable)", body = Problem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<AppState>,
    q: Params,
    caller: Caller,
    JsonBody(body): JsonBody<ReadBody>,
) -> Result<Json<ReadAnswer>, ApiError> {
    q.only(&["token", "timeout_ms"])?;
    authorize_body(&caller, read_needs(body.keys.iter(), "keys", &body.ranges))?;
    let wait = follower_wait(&q, &state)?;
    let opened = state.opened()?;
    let mut ranges = Vec::with_capacity(body.ranges.len());
    for (i, spec) in body.ranges.iter().enumerate() {
        let at = format!("ranges[{i}]");
        if spec.next.is_some() {
            return Err(ApiError::invalid(
                format!("{at}.next"),
                "next belongs in a commit request's ranges; read from `start` instead",
            ));
        }
        let limit = spec.limit.unwrap_or(limits::SCAN_ROWS_DEFAULT);
        if limit == 0 || limit > limits::SCAN_ROWS_MAX {
            return Err(ApiError::invalid(
                format!("{at}.limit"),
                format!("limit must be 1..={}", limits::SCAN_ROWS_MAX),
            ));
        }
        ranges.push((spec_range(spec, &at)?, limit));
    }
    check_keys("keys", "", body.keys.iter().map(String::as_str))?;
    let keys: Vec<Vec<u8>> = body.keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let snapshot = body.snapshot;
    // A token is a minimum snapshot: its commits are waited for (durable, or applied on a
    // follower), so the newest snapshot includes them; a named one must not be below it.
    if let Some(end) = super::txns::token_end(&opened, &q)? {
        if let Some(s) = snapshot.filter(|s| *s < end) {
            return Err(ApiError::invalid(
                "snapshot",
                format!(
                    "snapshot {s} is below the token's position {end}: read at the newest \
                     snapshot (no `snapshot`) or at one of at least {end}"
                ),
            ));
        }
        super::txns::wait_token(&state, &opened, &q).await?;
    }
    // A cluster follower applies the commit stream first: up to the client's snapshot
    // (waiting for it), or all it holds now.
    super::txns::follow(&opened, snapshot, wait).await?;
    let store = opened.txns()?;
    let budget = limits::KV_READ_ANSWER_BYTES_MAX;
    let read = blocking(move || store.read_at_within(snapshot, &keys, &ranges, budget)).await?;
    let read = read.map_err(|e| name_field(e, |_, _| None))?;
    Ok(Json(ReadAnswer {
        snapshot: read.snapshot,
        keys: body
            .keys
            .into_iter()
            .zip(read.keys)
            .map(|(key, found)| KeyAt {
                key,
                version: found.as_ref().and_then(|v| v.version),
                value: found.map(|v| raw_json(&v.value)),
            })
            .collect(),
        ranges: read.ranges.into_iter().map(rows).collect(),
        token: snapshot_token(&opened, read.snapshot)?,
    }))
}

/// The token of a read at `snapshot`: the commit stream's position below which it read
/// every commit (none at snapshot 0, before any commit: a token naming no position would be
/// refused by the next read that sent it).
fn snapshot_token(opened: &Opened, snapshot: u64) -> Result<Option<String>, ApiError> {
    let Some(last) = snapshot.checked_sub(1) else {
        return Ok(None);
    };
    let stream = opened
        .log
        .stream(&opened.txns()?.options().stream)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    let read = [logbook_log::Position {
        partition: 0,
        offset: last,
    }];
    logbook_views::token_of(&*stream, &read)
        .encode()
        .map(Some)
        .map_err(|e| ApiError::token(&e))
}

/// What reading `keys` (at body path `list`) and `ranges` needs, each with its body path.
fn read_needs<'a>(
    keys: impl Iterator<Item = &'a String> + 'a,
    list: &'a str,
    ranges: &'a [RangeSpec],
) -> impl Iterator<Item = (String, Need)> + 'a {
    let keys = keys.enumerate().map(move |(i, k)| {
        let need = Need::Name(Kind::Kv, Action::Read, k.clone());
        (format!("{list}[{i}]"), need)
    });
    let ranges = ranges.iter().enumerate().map(|(i, r)| {
        // A declared range ends at its `next` where a limit cut it.
        let end = r.next.clone().or_else(|| r.end.clone());
        let need = range_need(
            Kind::Kv,
            Action::Read,
            r.prefix.clone(),
            r.start.clone(),
            end,
        );
        (format!("ranges[{i}]"), need)
    });
    keys.chain(ranges)
}

/// What a commit request needs: read scopes for its declared reads, ranges and locks (a
/// lock is a read for update, as `get_for_update` is), write scopes for its writes, and a
/// read scope for each atomic write (an increment, `if_version`, `if_absent`), whose answer
/// reveals the key's state ([`reveals_state`]); the field names what needs it.
fn commit_needs(body: &CommitBody) -> impl Iterator<Item = (String, Need)> + '_ {
    let reads =
        read_needs(body.reads.iter().map(|r| &r.key), "reads", &body.ranges).map(|(at, need)| {
            match at.strip_prefix("reads") {
                Some(rest) => (format!("reads{rest}.key"), need),
                None => (at, need),
            }
        });
    let locks = body.locks.iter().enumerate().map(|(i, k)| {
        let need = Need::Name(Kind::Kv, Action::Read, k.clone());
        (format!("locks[{i}]"), need)
    });
    let writes = body.writes.iter().enumerate().flat_map(|(i, w)| {
        let write = Need::Name(Kind::Kv, Action::Write, w.key.clone());
        let atomic = [
            ("op", w.op == WriteKind::Increment),
            ("if_version", w.if_version.is_some()),
            ("if_absent", w.if_absent == Some(true)),
        ];
        let reads = atomic
            .into_iter()
            .filter(|(_, is)| *is)
            .map(move |(member, _)| (format!("writes[{i}].{member}"), reveals_state(&w.key)));
        std::iter::once((format!("writes[{i}].key"), write)).chain(reads)
    });
    reads.chain(locks).chain(writes)
}

/// How long a cluster follower waits to apply the commit stream up to a read's snapshot:
/// `timeout_ms` (default [`limits::VIEW_READ_TIMEOUT_MS_DEFAULT`], at most the views' read
/// limit), cut to the node's `wait_ms_max`.
fn follower_wait(q: &Params, state: &AppState) -> Result<std::time::Duration, ApiError> {
    let max = logbook_views::limits::READ_TIMEOUT_MS_MAX;
    let ms = q
        .get::<u64>("timeout_ms")?
        .unwrap_or(limits::VIEW_READ_TIMEOUT_MS_DEFAULT);
    if ms > max {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!("timeout_ms must be at most {max}"),
        ));
    }
    Ok(std::time::Duration::from_millis(state.wait_ms(ms)))
}

/// Commits a whole transaction in one request. It is certified exactly as an interactive
/// transaction at its level (first committer wins; SSI on the declared reads and ranges),
/// after checking that its snapshot lies within the snapshot window and each declared
/// version is what the key held at that snapshot. With `Idempotency-Key`, a retry of a
/// committed request returns the original commit with `"duplicate": true` (across
/// restarts for one that wrote); an attempt that failed left nothing behind, so its retry
/// is certified afresh.
#[utoipa::path(post, path = route::COMMITS, tag = "transactions",
    params(("Idempotency-Key" = Option<String>, Header, description = "Request id: 1..=128 printable ASCII bytes, sent once"), ("traceparent" = Option<String>, Header)),
    request_body = CommitBody,
    responses((status = 200, description = "Committed (`offset` null for a transaction that wrote nothing, e.g. `{}`: an empty transaction commits, as in PostgreSQL)", body = Committed),
        (status = 400, description = "`body_required` (no body), `invalid_json` (`field` its path; `reads[i].version` missing — a key read as absent is declared with `\"version\": null`), `invalid_request` (`writes[i].value` missing, a member that does not go with the op, both `if_version` and `if_absent`, `ranges[i].limit`; a range's `end` not after its `start`, a `start` outside its `prefix`, a bound longer than a key — `next` too —, a `next` not after the range's `start`, each naming the member), `invalid_request_id` (`Idempotency-Key`), `invalid_traceparent`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: no valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a declared read, range or lock no `kv:read` scope covers, or a write no `kv:write` scope covers (`writes[0].key`); an atomic write also needs `kv:read` on its key, since its answer reveals the key's state — an increment's result (`writes[i].op`), the version a `version_mismatch` found (`writes[i].if_version`), a `key_exists` (`writes[i].if_absent`); a write at `snapshot` or `serializable` in a request that names `snapshot` needs `kv:read` on its key too (`field` `snapshot`: whether it conflicts tells whether the key was written since); `field` names it; nothing was committed; `Idempotency-Key`: the request id names a commit already made whose answer holds a value this token may not read (decision 0018)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`serialization_failure` (read again and retry), `snapshot_too_old` (retryable), `version_mismatch` (`writes[i].if_version`), `key_exists` (`writes[i].if_absent`), `not_an_integer` (`writes[i].key`), `increment_overflow` (`writes[i].by`), `request_id_conflict` (`Idempotency-Key`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`certifier_share_full` (retryable, with `Retry-After`): the principal's commits that open transactions still need fill its share of the certifier's memory; nothing was committed (decision 0021)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (the body), `key_too_large` (`writes[i].key`, `reads[i].key`, `locks[i]`), `value_too_large` (`writes[i].value`), `transaction_too_large` (`writes`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: a body not declared JSON (`field` `Content-Type`), or content-coded (`field` `Content-Encoding`: only `identity` is taken)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unprocessable_request`: a snapshot ahead of the log, a declared version the key did not have at the snapshot (`reads[i].version`), a key written twice (`writes[i].key`), writes or locks in a read-only request, more keys or ranges than the limits; `snapshot_ahead` (retryable, with `Retry-After`): the cluster's leader did not reach the snapshot within half a second", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`not_ready`, `server_busy`, `closed`, `leader_unavailable` (no certifier's leader now; nothing was committed), `certifier_full` (commits open transactions still need fill the certifier's memory; nothing was committed), `log_unavailable`, `store_poisoned`: retry after `Retry-After` where given", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`outcome_unknown`: a cluster follower forwarded the commit and got no answer; it may have committed — with an `Idempotency-Key`, retry with the same key to learn the outcome (`retryable` true); without one a retry may commit it twice (`retryable` false)", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`disk_full`: nothing was committed", body = Problem, content_type = "application/problem+json")))]
pub async fn commit(
    State(state): State<AppState>,
    q: Params,
    tracking: Tracking,
    headers: axum::http::HeaderMap,
    caller: Caller,
    RequiredJsonBody(body): RequiredJsonBody<CommitBody>,
) -> Result<Json<Committed>, ApiError> {
    q.only(&[])?;
    authorize_body(&caller, commit_needs(&body))?;
    let level = body.isolation.map_or(Isolation::Serializable, isolation);
    if body.snapshot.is_some() && level != Isolation::ReadCommitted {
        for w in &body.writes {
            authorize_held_snapshot_write(&caller, "snapshot", &w.key)?;
        }
    }
    let opened = state.opened()?;
    certify_or_forward(&state, &opened, body, &tracking, &headers).await
}

/// `GET /v1/kv/read`: the committed key named `read` (the path is taken by `POST`'s
/// snapshot reads; the key stays readable).
#[utoipa::path(get, path = route::KV_READ, tag = "transactions",
    params(("token" = Option<String>, Query), ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    responses((status = 200, body = Row),
        (status = 404, description = "`key_not_found`", body = Problem, content_type = "application/problem+json")))]
pub async fn get_read_key(state: State<AppState>, q: Params) -> Result<Json<Row>, ApiError> {
    super::txns::kv_get(state, crate::extract::Path("read".to_string()), q).await
}
