//! The commit path both commit routes share: a wire `CommitBody` turned into the
//! transaction store's `CommitRequest` (and back, for a follower's forward), certified here
//! (a single node, a cluster's leader) or forwarded to the certifier's leader, and the
//! answer; with the conversions between the wire's and the store's words (isolation, key
//! ranges, write conditions) that the interactive routes ([`super::txns`]) and the one-shot
//! routes ([`super::commits`]) both use. It imports neither of them.

use std::ops::Bound;
use std::time::Instant;

use axum::Json;
use logbook_api::txns::{CommitBody, Committed, RangeSpec, ReadKey, WriteKind, WriteSpec};
use logbook_txn::{CommitRequest, Condition, Isolation, KeyRange, TxnError, Value, Write};

use crate::auth::{Principal, may_read};
use crate::error::{ApiError, ProblemCode};
use crate::extract::{Tracking, commit_to_the_end};
use crate::state::{AppState, Opened};

use super::{json_value, raw_json, text};

/// The library's isolation level for the wire's.
pub(super) fn isolation(i: logbook_api::txns::Isolation) -> Isolation {
    use logbook_api::txns::Isolation as Wire;
    match i {
        Wire::ReadCommitted => Isolation::ReadCommitted,
        Wire::Snapshot => Isolation::Snapshot,
        Wire::Serializable => Isolation::Serializable,
    }
}

/// A key range from `prefix` (with a `start` to resume from, within it: a page continued
/// from its `next`), or from `start` (inclusive) to `end` (exclusive), either open. `at` is
/// the range's body path (`ranges[2]`; `""`: query parameters), which the problem's `field`
/// extends. The same for every scan and declared range (`GET /v1/kv`, `GET
/// /v1/txns/{txn}/kv`, `POST /v1/kv/read`, `POST /v1/commits`).
///
/// # Errors
/// 400 `invalid_request` naming the member: a bound longer than a key may be, `end`
/// beside `prefix`, a `start` outside the prefix, an empty or inverted range.
pub(super) fn key_range(
    prefix: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    at: &str,
) -> Result<KeyRange, ApiError> {
    let field = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        }
    };
    for (name, bound) in [("prefix", prefix), ("start", start), ("end", end)] {
        if let Some(b) = bound {
            check_bound(name, b, || field(name))?;
        }
    }
    if let Some(p) = prefix {
        if end.is_some() {
            return Err(ApiError::invalid(
                field("end"),
                "give prefix (and a start to resume from), or start and/or end, not both",
            ));
        }
        let mut range = KeyRange::prefix(p.as_bytes());
        if let Some(s) = start {
            if !s.starts_with(p) {
                return Err(ApiError::invalid(
                    field("start"),
                    format!(
                        "start {s:?} lies outside the prefix {p:?}: resume from a key within it"
                    ),
                ));
            }
            range.start = Bound::Included(s.as_bytes().to_vec());
        }
        return Ok(range);
    }
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(ApiError::invalid(
            field("end"),
            format!("end {e:?} is not after start {s:?}: the range holds no key"),
        ));
    }
    Ok(KeyRange {
        start: start.map_or(Bound::Unbounded, |s| Bound::Included(s.as_bytes().to_vec())),
        end: end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_bytes().to_vec())),
    })
}

/// A range bound (`name`: `prefix`, `start`, `end`, `next`) within the key limit — a bound
/// is a key.
///
/// # Errors
/// 400 `invalid_request` naming `field()`.
fn check_bound(name: &str, bound: &str, field: impl FnOnce() -> String) -> Result<(), ApiError> {
    let max = logbook_txn::limits::KEY_BYTES_MAX;
    if bound.len() > max {
        return Err(ApiError::invalid(
            field(),
            format!(
                "{name} is {} bytes; a range bound is a key: 0..={max} bytes",
                bound.len()
            ),
        ));
    }
    Ok(())
}

/// A put's value (stored canonical) and condition, checked alike for both forms of a
/// transaction — an interactive `PUT .../kv/{key}` and a one-shot commit's `put` — so they
/// accept the same puts: any JSON value, `null` included; `if_version` or `if_absent`, not
/// both. `at` is the write's body path (`""`: the body itself; `writes[3]`), which the
/// problem's `field` extends (`value`, `writes[3].if_absent`).
///
/// # Errors
/// 400 `invalid_request` (no value, both conditions); 400 `invalid_json` (a value without
/// a canonical form).
pub(super) fn put_write(
    value: Option<&serde_json::value::RawValue>,
    if_version: Option<u64>,
    if_absent: Option<bool>,
    at: &str,
) -> Result<(Vec<u8>, Condition), ApiError> {
    let field = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        }
    };
    let value = value.ok_or_else(|| ApiError::invalid(field("value"), "a put needs a value"))?;
    let bytes = json_value(value, || field("value"))?;
    let cond = match (if_version, if_absent) {
        (Some(_), Some(true)) => {
            return Err(ApiError::invalid(
                field("if_absent"),
                "give if_version or if_absent, not both",
            ));
        }
        (Some(v), _) => Condition::IfVersion(v),
        (None, Some(true)) => Condition::IfAbsent,
        _ => Condition::None,
    };
    Ok((bytes, cond))
}

/// The response to a commit: its offset, a token for reads after it, increment results.
///
/// A duplicate — the answer of a commit already made under the request id — is answered
/// only to a caller (`principal`; `None`: `--auth off`) that may read every key whose value
/// it holds: ids are scoped by the principal's name, and two tokens of one principal may
/// have different scopes (decision 0018).
///
/// # Errors
/// 403 `forbidden` naming `Idempotency-Key` for a duplicate holding a value the caller may
/// not read; 500 when the token cannot be made.
pub(super) fn committed_response(
    opened: &Opened,
    outcome: logbook_txn::CommitOutcome,
    principal: Option<&Principal>,
) -> Result<Json<Committed>, ApiError> {
    if outcome.duplicate
        && let Some(p) = principal
        && let Some((key, _)) = outcome
            .incremented
            .iter()
            .find(|(k, _)| !may_read(principal, &text(k)))
    {
        let key = text(key);
        return Err(ApiError::new(
            ProblemCode::Forbidden,
            format!(
                "the commit already made under this request id answered the value of key \
                 {key:?}, and principal {:?} lacks the scope {} with this token; nothing was \
                 done (ask again with a token that may read it)",
                p.name,
                crate::auth::reveals_state(&key)
            ),
        )
        .field("Idempotency-Key"));
    }
    let token = match outcome.offset {
        Some(offset) => {
            let stream = opened
                .log
                .stream(&opened.txns()?.options().stream)
                .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
            let written = [logbook_log::Position {
                partition: 0,
                offset,
            }];
            Some(
                logbook_views::token_of(&*stream, &written)
                    .encode()
                    .map_err(|e| ApiError::token(&e))?,
            )
        }
        None => None,
    };
    Ok(Json(Committed {
        offset: outcome.offset,
        token,
        incremented: outcome
            .incremented
            .iter()
            .map(|(k, v)| (text(k), *v))
            .collect(),
        duplicate: outcome.duplicate,
    }))
}

/// Whether `next` (an exclusive end) cuts a range ending at `end` short, widening nothing.
pub(super) fn cuts(next: &[u8], end: &Bound<Vec<u8>>) -> bool {
    match end {
        Bound::Unbounded => true,
        Bound::Included(e) | Bound::Excluded(e) => next <= e.as_slice(),
    }
}

/// Whether `next` lies after a range's `start` (a page cut there read at least one row).
pub(super) fn after_start(next: &[u8], start: &Bound<Vec<u8>>) -> bool {
    match start {
        Bound::Unbounded => true,
        Bound::Included(s) | Bound::Excluded(s) => next > s.as_slice(),
    }
}

/// The key range of a spec ([`key_range`]); `at` is the spec's JSON path.
pub(super) fn spec_range(spec: &RangeSpec, at: &str) -> Result<KeyRange, ApiError> {
    key_range(
        spec.prefix.as_deref(),
        spec.start.as_deref(),
        spec.end.as_deref(),
        at,
    )
}

/// Each key of a body list within the key limit: 413 `key_too_large` naming its path
/// (`{list}[i]{member}`) — the store's check cannot say where in the body the key is.
pub(super) fn check_keys<'a>(
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

/// A problem whose `field` is the body path of what failed (`writes[3].if_version`,
/// `reads[0].version`): the store names the list and the key, `index_of(list, key)` finds
/// the key's place in the body.
pub(super) fn name_field(e: TxnError, index_of: impl Fn(&str, &str) -> Option<usize>) -> ApiError {
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
pub(super) fn conditions(c: &Condition) -> (Option<u64>, Option<bool>) {
    match c {
        Condition::None => (None, None),
        Condition::IfAbsent => (None, Some(true)),
        Condition::IfVersion(v) => (Some(*v), None),
    }
}

/// The wire's isolation level for the library's.
pub(super) fn wire_isolation(i: Isolation) -> logbook_api::txns::Isolation {
    use logbook_api::txns::Isolation as Wire;
    match i {
        Isolation::ReadCommitted => Wire::ReadCommitted,
        Isolation::Snapshot => Wire::Snapshot,
        Isolation::Serializable => Wire::Serializable,
    }
}

/// The store's request for a wire body; `snapshot` fills in an absent one.
pub(super) fn commit_request(body: &CommitBody, snapshot: u64) -> Result<CommitRequest, ApiError> {
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
        let range = spec_range(spec, &at)?;
        if let Some(next) = &spec.next {
            check_bound("next", next, || format!("{at}.next"))?;
        }
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

pub(super) fn unprocessable(field: String, detail: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(ProblemCode::UnprocessableRequest, detail).field(field);
    e.retryable = Some(false);
    e
}

/// One wire write as the store's; `at` is its JSON path.
pub(super) fn write_of(w: &logbook_api::txns::WriteSpec, at: &str) -> Result<Write, ApiError> {
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
    committed_response(opened, outcome, tracking.principal.as_deref())
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
