//! Transactions in one round trip: `POST /v1/kv/read` (keys and ranges at one snapshot) and
//! `POST /v1/commits` (a whole transaction as one self-contained request). The wire body is
//! turned into the transaction store's `CommitRequest` — the same value an interactive
//! commit hands to the commit path — and certified the same way.

use std::ops::Bound;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use logbook_api::paths::route;
use logbook_api::txns::{
    CommitBody, Committed, KeyAt, RangeSpec, ReadAnswer, ReadBody, ReadKey, Row, WriteKind,
    WriteSpec,
};
use logbook_txn::{CommitRequest, Condition, Isolation, KeyRange, TxnError, Value, Write};

use crate::auth::scope::{Action, Kind, Need};
use crate::auth::{
    Caller, Principal, authorize_body, authorize_held_snapshot_write, may_read, range_need,
    reveals_state,
};
use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, RequiredJsonBody, Tracking, blocking, commit_to_the_end};
use crate::limits;
use crate::state::{AppState, Opened};

use super::txns::{committed_response, isolation, put_write, rows};
use super::{Params, raw_json};

/// Whether `next` (an exclusive end) cuts a range ending at `end` short, widening nothing.
fn cuts(next: &[u8], end: &Bound<Vec<u8>>) -> bool {
    match end {
        Bound::Unbounded => true,
        Bound::Included(e) | Bound::Excluded(e) => next <= e.as_slice(),
    }
}

/// Whether `next` lies after a range's `start` (a page cut there read at least one row).
fn after_start(next: &[u8], start: &Bound<Vec<u8>>) -> bool {
    match start {
        Bound::Unbounded => true,
        Bound::Included(s) | Bound::Excluded(s) => next > s.as_slice(),
    }
}

/// The key range of a spec ([`super::txns::key_range`]); `at` is the spec's JSON path.
fn key_range(spec: &RangeSpec, at: &str) -> Result<KeyRange, ApiError> {
    super::txns::key_range(
        spec.prefix.as_deref(),
        spec.start.as_deref(),
        spec.end.as_deref(),
        at,
    )
}

/// A problem whose `field` is the body path of what failed (`writes[3].if_version`,
/// `reads[0].version`): the store names the list and the key, `index_of(list, key)` finds
/// the key's place in the body.
fn name_field(e: TxnError, index_of: impl Fn(&str, &str) -> Option<usize>) -> ApiError {
    let at = |list: &str, key: &str, member: &str| {
        index_of(list, key).map(|i| format!("{list}[{i}]{member}"))
    };
    let path = match &e {
        TxnError::InvalidRequest {
            field,
            key: Some(key),
            ..
        } => at(field, key, if *field == "reads" { ".version" } else { "" }),
        TxnError::VersionMismatch { key, .. } => at("writes", key, ".if_version"),
        TxnError::KeyExists { key, .. } => at("writes", key, ".if_absent"),
        TxnError::NotAnInteger { key } => at("writes", key, ".key"),
        TxnError::IncrementOverflow { key, .. } => at("writes", key, ".by"),
        TxnError::ValueTooLarge { key, .. } => at("writes", key, ".value"),
        TxnError::TooMany { what, .. } => Some(
            match *what {
                "read keys" | "footprint bytes" => "reads",
                "range reads" => "ranges",
                _ => "writes",
            }
            .to_string(),
        ),
        _ => None,
    };
    let mut out = ApiError::from(e);
    if path.is_some() {
        out.field = path;
    }
    out
}

/// Each key of a body list within the key limit: 413 `key_too_large` naming its path
/// (`{list}[i]{member}`) — the store's check cannot say where in the body the key is.
fn check_keys<'a>(
    list: &str,
    member: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let max = logbook_txn::limits::KEY_BYTES_MAX;
    match keys.into_iter().enumerate().find(|(_, k)| k.len() > max) {
        Some((i, k)) => Err(ApiError::new(
            ProblemCode::KeyTooLarge,
            format!("key is {} bytes; keys must be 0..={max} bytes", k.len()),
        )
        .field(format!("{list}[{i}]{member}"))),
        None => Ok(()),
    }
}

/// Reads keys and ranges at one snapshot (the newest, or one named within the snapshot
/// window) — the first round trip of a read-modify-write; declare what it returned in
/// `POST /v1/commits`. Nothing is registered on the server between the two. A `token` is a
/// minimum snapshot (the session's commits are read), as for the other key-value reads.
#[utoipa::path(post, path = route::KV_READ, tag = "transactions",
    params(("token" = Option<String>, Query, description = "Consistency token of earlier commits (a `_txn` position): the snapshot includes them (waiting for them to be durable, or on a cluster follower applied, at most `timeout_ms`). With a `snapshot` in the body, it must be at least the token's position"),
        ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "How long to wait for the token, and on a cluster follower to apply the commit stream up to `snapshot`, ms (default 5000, at most 60000)")),
    request_body = ReadBody,
    responses((status = 200, description = "The values, versions and pages at one snapshot. A range whose `next` is set with fewer rows than its `limit` was cut by the answer's byte budget (`KV_READ_ANSWER_BYTES_MAX`, 4 MiB): read on from `next` at the same snapshot", body = ReadAnswer),
        (status = 400, description = "`invalid_json` (the body; `field` its path), `invalid_request` (`ranges[i].limit` outside 1..=10000, `ranges[i].end` beside a prefix, `ranges[i].next` in a read, a range's `end` not after its `start`, a `start` outside its `prefix`, a bound longer than a key, `snapshot` below the token's position, `timeout_ms`, an unknown query parameter), `invalid_token`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: no valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a key or range no `kv:read` scope of the token covers; `field` names it (`keys[2]`, `ranges[0]`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`snapshot_too_old`: the snapshot is behind the snapshot window (retryable: read again); `token_incarnation`: the token names an earlier incarnation of the commit stream", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (the body), `key_too_large` (`keys[i]`), `answer_too_large` (the values of `keys` pass the answer's byte budget, or one row alone does; `field` names where)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: a body not declared JSON", body = Problem, content_type = "application/problem+json"),
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
    let wait = follower_wait(&q)?;
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
        if limit == 0 || limit > logbook_txn::limits::SCAN_ROWS_MAX {
            return Err(ApiError::invalid(
                format!("{at}.limit"),
                format!("limit must be 1..={}", logbook_txn::limits::SCAN_ROWS_MAX),
            ));
        }
        ranges.push((key_range(spec, &at)?, limit));
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
/// limit).
fn follower_wait(q: &Params) -> Result<std::time::Duration, ApiError> {
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
    Ok(std::time::Duration::from_millis(ms))
}

/// The wire body of a store's request: what a cluster follower forwards for an interactive
/// transaction ([`commit_request`] turns it back into the same request). Two shapes the
/// wire has no word for are sent wider, which can only add conflicts, never miss one: a
/// range bound that is not UTF-8 (a prefix's successor can be) becomes unbounded, and a
/// lock is declared at the request's snapshot (a `read_committed` `get_for_update` read
/// later than that).
///
/// # Errors
/// 500 `internal_error` for a key that is not UTF-8 (every key over HTTP is).
pub(super) fn commit_body(r: &CommitRequest) -> Result<CommitBody, ApiError> {
    let key = |k: &[u8]| {
        String::from_utf8(k.to_vec())
            .map_err(|_| ApiError::internal("a transaction's key is not UTF-8"))
    };
    // `k` included is `k` + NUL excluded (no key lies between them), and the other way.
    let after = |k: &[u8]| String::from_utf8([k, b"\0"].concat()).ok();
    let as_text = |k: &[u8]| String::from_utf8(k.to_vec()).ok();
    let ranges = r
        .ranges
        .iter()
        .map(|(start, end)| RangeSpec {
            start: match start {
                Bound::Included(k) => as_text(k),
                Bound::Excluded(k) => after(k),
                Bound::Unbounded => None,
            },
            end: match end {
                Bound::Excluded(k) => as_text(k),
                Bound::Included(k) => after(k),
                Bound::Unbounded => None,
            },
            ..RangeSpec::default()
        })
        .collect();
    let writes = r
        .writes
        .iter()
        .map(|(k, w)| {
            let key = key(k)?;
            Ok(match w {
                Write::Put { value, cond } => {
                    let (if_version, if_absent) = conditions(cond);
                    WriteSpec {
                        if_version,
                        if_absent,
                        ..WriteSpec::put(key, raw_json(value))
                    }
                }
                Write::Delete { cond } => WriteSpec {
                    if_version: conditions(cond).0,
                    ..WriteSpec::delete(key)
                },
                Write::Increment(by) => WriteSpec::increment(key, *by),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(CommitBody {
        isolation: Some(wire_isolation(r.isolation)),
        snapshot: Some(r.snapshot),
        reads: r
            .reads
            .iter()
            .map(|(k, version)| {
                Ok(ReadKey {
                    key: key(k)?,
                    version: *version,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        ranges,
        locks: r.locks.keys().map(|k| key(k)).collect::<Result<_, _>>()?,
        writes,
        read_only: r.read_only.then_some(true),
    })
}

/// A write condition as the wire's `if_version` and `if_absent`.
fn conditions(c: &Condition) -> (Option<u64>, Option<bool>) {
    match c {
        Condition::None => (None, None),
        Condition::IfAbsent => (None, Some(true)),
        Condition::IfVersion(v) => (Some(*v), None),
    }
}

/// The wire's isolation level for the library's.
fn wire_isolation(i: Isolation) -> logbook_api::txns::Isolation {
    use logbook_api::txns::Isolation as Wire;
    match i {
        Isolation::ReadCommitted => Wire::ReadCommitted,
        Isolation::Snapshot => Wire::Snapshot,
        Isolation::Serializable => Wire::Serializable,
    }
}

/// The store's request for a wire body; `snapshot` fills in an absent one.
fn commit_request(body: &CommitBody, snapshot: u64) -> Result<CommitRequest, ApiError> {
    check_keys("reads", ".key", body.reads.iter().map(|r| r.key.as_str()))?;
    check_keys("locks", "", body.locks.iter().map(String::as_str))?;
    check_keys("writes", ".key", body.writes.iter().map(|w| w.key.as_str()))?;
    let level = body.isolation.map_or(Isolation::Serializable, isolation);
    let mut r = CommitRequest::new(level, body.snapshot.unwrap_or(snapshot));
    r.read_only = body.read_only == Some(true);
    r.read_any = !body.reads.is_empty() || !body.ranges.is_empty() || !body.locks.is_empty();
    for (i, read) in body.reads.iter().enumerate() {
        let key = read.key.as_bytes().to_vec();
        if r.reads
            .insert(key, read.version)
            .is_some_and(|v| v != read.version)
        {
            return Err(unprocessable(
                format!("reads[{i}].version"),
                "the key is declared twice with different versions",
            ));
        }
    }
    for (i, spec) in body.ranges.iter().enumerate() {
        let at = format!("ranges[{i}]");
        if spec.limit.is_some() {
            return Err(ApiError::invalid(
                format!("{at}.limit"),
                "a range as read carries `next` where its limit cut it, not the limit",
            ));
        }
        let range = key_range(spec, &at)?;
        let end = match &spec.next {
            // `next` only cuts a range short: one past the range's end would widen what is
            // certified beyond what the scope check saw (and make conflicts an oracle on keys
            // outside it).
            Some(next) if !cuts(next.as_bytes(), &range.end) => {
                return Err(ApiError::invalid(
                    format!("{at}.next"),
                    "next must lie within the range it cuts short (at or before its end)",
                ));
            }
            // A page holds at least one row: its `next` is after the range's start.
            Some(next) if !after_start(next.as_bytes(), &range.start) => {
                return Err(ApiError::invalid(
                    format!("{at}.next"),
                    "next must lie after the range's start: a page read at least one row",
                ));
            }
            Some(next) => Bound::Excluded(next.as_bytes().to_vec()),
            None => range.end,
        };
        r.ranges.push((range.start, end));
    }
    for key in &body.locks {
        r.locks.insert(key.as_bytes().to_vec(), r.snapshot);
    }
    for (i, w) in body.writes.iter().enumerate() {
        let at = format!("writes[{i}]");
        let write = write_of(w, &at)?;
        if r.writes.insert(w.key.as_bytes().to_vec(), write).is_some() {
            return Err(unprocessable(
                format!("{at}.key"),
                format!("key {:?} is written twice: give one write per key", w.key),
            ));
        }
    }
    Ok(r)
}

fn unprocessable(field: String, detail: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(ProblemCode::UnprocessableRequest, detail).field(field);
    e.retryable = Some(false);
    e
}

/// One wire write as the store's; `at` is its JSON path.
fn write_of(w: &logbook_api::txns::WriteSpec, at: &str) -> Result<Write, ApiError> {
    let stray = |name: &str, present: bool| {
        if present {
            Err(ApiError::invalid(
                format!("{at}.{name}"),
                format!("{name} does not go with op {:?}", w.op),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match w.op {
        WriteKind::Put => {
            stray("by", w.by.is_some())?;
            let (bytes, cond) = put_write(w.value.as_deref(), w.if_version, w.if_absent, at)?;
            Write::Put {
                value: Value::from(bytes),
                cond,
            }
        }
        WriteKind::Delete => {
            stray("value", w.value.is_some())?;
            stray("by", w.by.is_some())?;
            stray("if_absent", w.if_absent.is_some())?;
            let cond = w.if_version.map_or(Condition::None, Condition::IfVersion);
            Write::Delete { cond }
        }
        WriteKind::Increment => {
            stray("value", w.value.is_some())?;
            stray("if_version", w.if_version.is_some())?;
            stray("if_absent", w.if_absent.is_some())?;
            Write::Increment(
                w.by.ok_or_else(|| {
                    ApiError::invalid(format!("{at}.by"), "an increment needs `by`")
                })?,
            )
        }
    })
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
        (status = 400, description = "`body_required` (no body), `invalid_json` (`field` its path; `reads[i].version` missing — a key read as absent is declared with `\"version\": null`), `invalid_request` (`writes[i].value` missing, a member that does not go with the op, both `if_version` and `if_absent`, `ranges[i].limit`; a range's `end` not after its `start`, a `start` outside its `prefix`, a bound longer than a key, a `next` not after the range's `start`, each naming the member), `invalid_request_id` (`Idempotency-Key`), `invalid_traceparent`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: no valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a declared read, range or lock no `kv:read` scope covers, or a write no `kv:write` scope covers (`writes[0].key`); an atomic write also needs `kv:read` on its key, since its answer reveals the key's state — an increment's result (`writes[i].op`), the version a `version_mismatch` found (`writes[i].if_version`), a `key_exists` (`writes[i].if_absent`); a write at `snapshot` or `serializable` in a request that names `snapshot` needs `kv:read` on its key too (`field` `snapshot`: whether it conflicts tells whether the key was written since); `field` names it; nothing was committed (decision 0018)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`serialization_failure` (read again and retry), `snapshot_too_old` (retryable), `version_mismatch` (`writes[i].if_version`), `key_exists` (`writes[i].if_absent`), `not_an_integer` (`writes[i].key`), `increment_overflow` (`writes[i].by`), `request_id_conflict` (`Idempotency-Key`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (the body), `key_too_large` (`writes[i].key`, `reads[i].key`, `locks[i]`), `value_too_large` (`writes[i].value`), `transaction_too_large` (`writes`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: a body not declared JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unprocessable_request`: a snapshot ahead of the log, a declared version the key did not have at the snapshot (`reads[i].version`), a key written twice (`writes[i].key`), writes or locks in a read-only request, more keys or ranges than the limits; `snapshot_ahead` (retryable, with `Retry-After`): the cluster's leader did not reach the snapshot within a second", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`not_ready`, `server_busy`, `closed`, `leader_unavailable` (no certifier's leader now; nothing was committed), `log_unavailable`, `store_poisoned`: retry after `Retry-After` where given", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`outcome_unknown`: a cluster follower forwarded the commit and got no answer; it may have committed — retry with the same `Idempotency-Key` to learn the outcome", body = Problem, content_type = "application/problem+json"),
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

/// The detail of a refused commit for a caller that may not read the key it conflicted on:
/// a `serialization_failure` is then told without the offset of the other commit, which is
/// a version of the key (decision 0018). `None`: the error's own detail.
pub(super) fn detail_for(e: &TxnError, principal: Option<&Principal>) -> Option<String> {
    match e {
        TxnError::SerializationFailure { kind, key, .. } if !may_read(principal, key) => {
            Some(format!(
                "serialization_failure: {kind} on key {key:?} with a transaction committed \
                 after this one's snapshot; retry"
            ))
        }
        _ => None,
    }
}

/// A self-contained commit request, certified here (a single node, a cluster's leader) or
/// forwarded to the certifier's leader (a cluster follower): the one-shot commit, and an
/// interactive transaction's commit that this node cannot certify.
///
/// # Errors
/// As [`commit`]; a follower's, as [`forward`].
pub(super) async fn certify_or_forward(
    state: &AppState,
    opened: &crate::state::Opened,
    body: CommitBody,
    tracking: &Tracking,
    headers: &axum::http::HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    let txns = opened.txns()?;
    if txns.options().elected && txns.leading().is_none() {
        return forward(opened, body, tracking, headers).await.map(Json);
    }
    let mut request = commit_request(&body, txns.durable_end())?;
    request.principal = tracking.principal_name();
    let m = state.metrics();
    let started = Instant::now();
    let (rid, traceparent) = (tracking.request_id.clone(), tracking.traceparent.clone());
    let outcome = commit_to_the_end(move || {
        txns.commit_request_async(request, rid.as_ref(), traceparent.as_deref())
    })
    .await?;
    m.op_duration
        .with_label_values(&["commit"])
        .observe(started.elapsed().as_secs_f64());
    let outcome = outcome.map_err(|e| {
        m.aborts.with_label_values(&[e.code()]).inc();
        let hidden = detail_for(&e, tracking.principal.as_deref());
        let mut refused = name_field(e, |list, key| match list {
            "reads" => body.reads.iter().position(|r| r.key == key),
            "writes" => body.writes.iter().position(|w| w.key == key),
            "locks" => body.locks.iter().position(|k| k == key),
            _ => None,
        });
        if let Some(detail) = hidden {
            refused.detail = detail;
        }
        refused
    })?;
    m.commits.inc();
    if outcome.duplicate {
        m.duplicates.with_label_values(&["commit"]).inc();
    }
    committed_response(opened, outcome)
}

/// A cluster follower's commit: sent to the leader as the self-contained request it is,
/// with the client's request id. A request that was itself forwarded is not forwarded
/// again (a stale view of the leader must not make a loop): 503 `leader_unavailable`.
async fn forward(
    opened: &crate::state::Opened,
    body: CommitBody,
    tracking: &Tracking,
    headers: &axum::http::HeaderMap,
) -> Result<Committed, ApiError> {
    let unavailable =
        |detail: String| ApiError::new(ProblemCode::LeaderUnavailable, detail).retry_after(1);
    if let Some(from) = headers.get(logbook_api::paths::FORWARDED_BY_HEADER) {
        return Err(unavailable(format!(
            "forwarded by {from:?} to a node that does not lead (the leader just changed); \
             nothing was committed, retry"
        )));
    }
    let member = opened
        .cluster
        .as_ref()
        .ok_or_else(|| unavailable("no cluster to forward to".into()))?;
    let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
    // The leader checks the caller's credentials again.
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    member
        .forward_commit(
            body,
            request_id,
            tracking.traceparent.clone(),
            authorization,
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_body_becomes_the_stores_request() {
        let value = serde_json::value::to_raw_value(&serde_json::json!({"b": 1, "a": 2})).unwrap();
        let body = CommitBody {
            snapshot: Some(7),
            reads: vec![ReadKey {
                key: "x".into(),
                version: Some(3),
            }],
            ranges: vec![RangeSpec {
                prefix: Some("item:".into()),
                next: Some("item:5".into()),
                ..RangeSpec::default()
            }],
            locks: vec!["l".into()],
            writes: vec![WriteSpec::put("x", value), WriteSpec::increment("n", 2)],
            ..CommitBody::default()
        };
        let r = commit_request(&body, 99).unwrap();
        assert_eq!(r.isolation, Isolation::Serializable);
        assert_eq!(r.snapshot, 7, "the body's snapshot, not the default");
        assert!(r.read_any);
        assert_eq!(r.reads.get(b"x".as_slice()), Some(&Some(3)));
        assert_eq!(
            r.ranges,
            vec![(
                Bound::Included(b"item:".to_vec()),
                Bound::Excluded(b"item:5".to_vec())
            )],
            "a cut range ends before next"
        );
        assert_eq!(r.locks.get(b"l".as_slice()), Some(&7));
        assert_eq!(
            r.writes.get(b"x".as_slice()),
            Some(&Write::Put {
                value: Value::from(&b"{\"a\":2,\"b\":1}"[..]),
                cond: Condition::None
            }),
            "values stored canonical"
        );
        assert_eq!(r.writes.get(b"n".as_slice()), Some(&Write::Increment(2)));
    }

    #[test]
    fn an_interactive_request_goes_over_the_wire_and_back_unchanged() {
        let mut r = CommitRequest::new(Isolation::Snapshot, 12);
        r.read_any = true;
        r.reads.insert(b"x".to_vec(), Some(3));
        r.reads.insert(b"gone".to_vec(), None);
        // A cut page's range ends at its last row, included.
        r.ranges.push((
            Bound::Included(b"item:".to_vec()),
            Bound::Included(b"item:7".to_vec()),
        ));
        r.ranges
            .push((Bound::Unbounded, Bound::Excluded(b"m".to_vec())));
        r.locks.insert(b"l".to_vec(), 12);
        r.writes.insert(
            b"x".to_vec(),
            Write::Put {
                value: Value::from(&b"{\"a\":1}"[..]),
                cond: Condition::IfVersion(3),
            },
        );
        r.writes.insert(
            b"d".to_vec(),
            Write::Delete {
                cond: Condition::None,
            },
        );
        r.writes.insert(b"n".to_vec(), Write::Increment(-2));
        r.writes.insert(
            b"p".to_vec(),
            Write::Put {
                value: Value::from(&b"2"[..]),
                cond: Condition::IfAbsent,
            },
        );
        let body = commit_body(&r).unwrap();
        let wire = serde_json::to_vec(&body).unwrap();
        let back = commit_request(&serde_json::from_slice(&wire).unwrap(), 0).unwrap();
        let mut expected = r.clone();
        expected.ranges[0].1 = Bound::Excluded(b"item:7\0".to_vec());
        assert_eq!(
            back, expected,
            "the same request, the included end as its successor"
        );
    }

    #[test]
    fn a_bound_the_wire_cannot_spell_is_sent_unbounded() {
        let mut r = CommitRequest::new(Isolation::Serializable, 1);
        r.ranges.push((
            Bound::Included(b"\x7f".to_vec()),
            Bound::Excluded(b"\x80".to_vec()),
        ));
        let body = commit_body(&r).unwrap();
        assert_eq!(body.ranges[0].start.as_deref(), Some("\u{7f}"));
        assert_eq!(body.ranges[0].end, None, "wider, never narrower");
    }

    #[test]
    fn a_key_written_twice_is_unprocessable_naming_the_second() {
        let body = CommitBody {
            writes: vec![WriteSpec::delete("k"), WriteSpec::increment("k", 1)],
            ..CommitBody::default()
        };
        let e = commit_request(&body, 0).err();
        let e = e.map(|e| (e.status().as_u16(), e.field));
        assert_eq!(e, Some((422, Some("writes[1].key".to_string()))));
    }
}
