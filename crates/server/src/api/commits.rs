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

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Tracking, blocking, commit_to_the_end};
use crate::limits;
use crate::state::AppState;

use super::txns::{committed_response, isolation, rows};
use super::{Params, json_value, raw_json};

/// The key range of a spec; `at` is the spec's JSON path for errors.
fn key_range(spec: &RangeSpec, at: &str) -> Result<KeyRange, ApiError> {
    if let Some(p) = &spec.prefix {
        if spec.start.is_some() || spec.end.is_some() {
            return Err(ApiError::invalid(
                format!("{at}.prefix"),
                "give prefix, or start and/or end, not both",
            ));
        }
        return Ok(KeyRange::prefix(p.as_bytes()));
    }
    Ok(KeyRange {
        start: spec
            .start
            .as_ref()
            .map_or(Bound::Unbounded, |s| Bound::Included(s.as_bytes().to_vec())),
        end: spec
            .end
            .as_ref()
            .map_or(Bound::Unbounded, |s| Bound::Excluded(s.as_bytes().to_vec())),
    })
}

/// A problem naming the unprocessable field by its JSON path in the body: the store names
/// the list and the key, the body has the index.
fn name_field(e: TxnError, body_keys: impl Fn(&str) -> Option<Vec<String>>) -> ApiError {
    let path = match &e {
        TxnError::InvalidRequest {
            field,
            key: Some(key),
            ..
        } => body_keys(field).and_then(|keys| {
            let i = keys.iter().position(|k| k == key)?;
            Some(match *field {
                "reads" => format!("reads[{i}].version"),
                "writes" => format!("writes[{i}]"),
                other => format!("{other}[{i}]"),
            })
        }),
        _ => None,
    };
    let mut out = ApiError::from(e);
    if path.is_some() {
        out.field = path;
    }
    out
}

/// Reads keys and ranges at one snapshot (the newest, or one named within the snapshot
/// window) — the first round trip of a read-modify-write; declare what it returned in
/// `POST /v1/commits`. Nothing is registered on the server between the two.
#[utoipa::path(post, path = route::KV_READ, tag = "transactions",
    params(("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "On a cluster follower: how long to wait to apply the commit stream up to `snapshot`, ms (default 5000, at most 60000)")),
    request_body = ReadBody,
    responses((status = 200, body = ReadAnswer),
        (status = 409, description = "`snapshot_too_old`: the snapshot is behind the snapshot window (retryable: read again)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unprocessable_request`: a snapshot ahead of the log, more keys or ranges than a transaction may read; `snapshot_ahead`: a cluster follower did not reach the snapshot within `timeout_ms`", body = Problem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<AppState>,
    q: Params,
    JsonBody(body): JsonBody<ReadBody>,
) -> Result<Json<ReadAnswer>, ApiError> {
    q.only(&["timeout_ms"])?;
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
    let keys: Vec<Vec<u8>> = body.keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let snapshot = body.snapshot;
    // A cluster follower applies the commit stream first: up to the client's snapshot
    // (waiting for it), or all it holds now.
    super::txns::follow(&opened, snapshot, wait).await?;
    let store = opened.txns()?;
    let read = blocking(move || store.read_at(snapshot, &keys, &ranges)).await?;
    let read = read.map_err(|e| name_field(e, |_| None))?;
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
    }))
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
    let cond = match (w.if_version, w.if_absent) {
        (Some(_), Some(true)) => {
            return Err(ApiError::invalid(
                format!("{at}.if_absent"),
                "give if_version or if_absent, not both",
            ));
        }
        (Some(v), _) => Condition::IfVersion(v),
        (None, Some(true)) => Condition::IfAbsent,
        _ => Condition::None,
    };
    Ok(match w.op {
        WriteKind::Put => {
            stray("by", w.by.is_some())?;
            let value = w
                .value
                .as_ref()
                .ok_or_else(|| ApiError::invalid(format!("{at}.value"), "a put needs a value"))?;
            let bytes = json_value(value, || format!("{at}.value"))?;
            Write::Put {
                value: Value::from(bytes),
                cond,
            }
        }
        WriteKind::Delete => {
            stray("value", w.value.is_some())?;
            stray("by", w.by.is_some())?;
            stray("if_absent", w.if_absent.is_some())?;
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
    params(("Idempotency-Key" = Option<String>, Header), ("traceparent" = Option<String>, Header)),
    request_body = CommitBody,
    responses((status = 200, body = Committed),
        (status = 409, description = "`serialization_failure` (read again and retry), `snapshot_too_old` (retryable), `version_mismatch`, `key_exists`, `request_id_conflict`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unprocessable_request`: a snapshot ahead of the log, a declared version the key did not have at the snapshot, a key written twice, writes in a read-only request, more keys or ranges than the limits; `field` names it", body = Problem, content_type = "application/problem+json")))]
pub async fn commit(
    State(state): State<AppState>,
    q: Params,
    tracking: Tracking,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<CommitBody>,
) -> Result<Json<Committed>, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    certify_or_forward(&state, &opened, body, &tracking, &headers).await
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
    let request = commit_request(&body, txns.durable_end())?;
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
        name_field(e, |field| {
            let keys = match field {
                "reads" => body.reads.iter().map(|r| r.key.clone()).collect(),
                "writes" => body.writes.iter().map(|w| w.key.clone()).collect(),
                "locks" => body.locks.clone(),
                _ => return None,
            };
            Some(keys)
        })
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
