//! Interactive transactions over HTTP and key-value reads outside them.
//!
//! A transaction lives in the server between requests (see [`crate::state::TxnRegistry`]):
//! `POST /v1/txns` begins one and names it; each operation locks it, runs on the blocking
//! pool, and marks it used; commit and abort end it. Values are JSON, stored as their
//! compact JSON text, so `increment` works on JSON integers. An operation that reports a
//! retryable conflict (`serialization_failure`) ends the transaction: retry it whole.

use std::ops::Bound;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use logbook_api::paths::route;
use logbook_api::txns::{BeginBody, Begun, Committed, IncrementBody, PutBody, Row, Rows};
use logbook_txn::{Isolation, KeyRange, KeyValue, Txn, TxnError, TxnOptions, Versioned};

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Tracking, blocking};
use crate::limits;
use crate::state::{AppState, OpenTxn};
use logbook_views::ConsistencyToken;

use super::{Params, json_value, raw_json, text};

/// The library's isolation level for the wire's.
fn isolation(i: logbook_api::txns::Isolation) -> Isolation {
    use logbook_api::txns::Isolation as Wire;
    match i {
        Wire::ReadCommitted => Isolation::ReadCommitted,
        Wire::Snapshot => Isolation::Snapshot,
        Wire::Serializable => Isolation::Serializable,
    }
}

fn row(key: &[u8], v: Versioned) -> Row {
    Row {
        key: text(key),
        value: raw_json(&v.value),
        version: v.version,
    }
}

fn rows(kvs: Vec<KeyValue>) -> Rows {
    Rows {
        rows: kvs
            .into_iter()
            .map(|kv| Row {
                key: text(&kv.key),
                value: raw_json(&kv.value),
                version: kv.version,
            })
            .collect(),
    }
}

fn key_not_found(key: &str) -> ApiError {
    ApiError::new(
        ProblemCode::KeyNotFound,
        format!("key {key:?} has no value"),
    )
    .field("key")
}

/// Runs `f` on an open transaction on the blocking pool. A retryable error ends the
/// transaction (it could never commit).
async fn with_txn<T: Send + 'static>(
    state: &AppState,
    id: &str,
    f: impl FnOnce(&mut Txn) -> Result<T, TxnError> + Send + 'static,
) -> Result<T, ApiError> {
    let entry = state.txns().get(id)?;
    let guard = entry.txn.clone().lock_owned().await;
    let (mut guard, result) = blocking(move || {
        let mut guard = guard;
        let r = match guard.as_mut() {
            Some(t) => f(t),
            None => Err(TxnError::Closed),
        };
        (guard, r)
    })
    .await?;
    state.txns().touch(&entry);
    if let Err(e) = &result
        && e.is_retryable()
    {
        if let Some(t) = guard.take() {
            t.abort();
        }
        end(state, &entry, e.code());
    }
    result.map_err(ApiError::from)
}

/// Runs `f` on an open transaction on this worker, for the operations that only buffer a
/// write in memory (put, delete, increment: no read, no wait), sparing them the hop to the
/// blocking pool. A retryable error ends the transaction, as in [`with_txn`].
async fn with_txn_inline<T>(
    state: &AppState,
    id: &str,
    f: impl FnOnce(&mut Txn) -> Result<T, TxnError>,
) -> Result<T, ApiError> {
    let entry = state.txns().get(id)?;
    let mut guard = entry.txn.clone().lock_owned().await;
    let result = match guard.as_mut() {
        Some(t) => f(t),
        None => Err(TxnError::Closed),
    };
    state.txns().touch(&entry);
    if let Err(e) = &result
        && e.is_retryable()
    {
        if let Some(t) = guard.take() {
            t.abort();
        }
        end(state, &entry, e.code());
    }
    result.map_err(ApiError::from)
}

fn end(state: &AppState, entry: &OpenTxn, reason: &str) {
    state.txns().remove(&entry.id);
    state.metrics().open_txns.set(state.txns().len() as i64);
    if reason != "commit" {
        state.metrics().aborts.with_label_values(&[reason]).inc();
    }
}

fn range(q: &Params) -> Result<KeyRange, ApiError> {
    let prefix = q.text("prefix");
    let (start, end) = (q.text("start"), q.text("end"));
    if let Some(p) = prefix {
        if start.is_some() || end.is_some() {
            return Err(ApiError::invalid(
                "prefix",
                "give prefix, or start and/or end, not both",
            ));
        }
        return Ok(KeyRange::prefix(p.as_bytes()));
    }
    Ok(KeyRange {
        start: start.map_or(Bound::Unbounded, |s| Bound::Included(s.as_bytes().to_vec())),
        end: end.map_or(Bound::Unbounded, |s| Bound::Excluded(s.as_bytes().to_vec())),
    })
}

fn scan_limit(q: &Params) -> Result<usize, ApiError> {
    let limit = q
        .get::<usize>("limit")?
        .unwrap_or(limits::SCAN_ROWS_DEFAULT);
    if limit == 0 || limit > logbook_txn::limits::SCAN_ROWS_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1..={}", logbook_txn::limits::SCAN_ROWS_MAX),
        ));
    }
    Ok(limit)
}

/// Begins a transaction.
#[utoipa::path(post, path = route::TXNS, tag = "transactions",
    request_body(content = BeginBody, description = "May be empty: serializable, read-write"),
    responses((status = 201, body = Begun),
        (status = 429, description = "`too_many_transactions`", body = Problem, content_type = "application/problem+json")))]
pub async fn begin(
    State(state): State<AppState>,
    q: Params,
    JsonBody(body): JsonBody<BeginBody>,
) -> Result<(StatusCode, Json<Begun>), ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    state.txns().check_room()?;
    let mut options = TxnOptions::new(body.isolation.map_or(Isolation::Serializable, isolation));
    if body.read_only == Some(true) {
        options = options.read_only();
    }
    let txn = opened.txns.begin(options)?;
    let snapshot = txn.snapshot();
    let entry = state.txns().insert(txn)?;
    state.metrics().open_txns.set(state.txns().len() as i64);
    tracing::debug!(txn = %entry.id, snapshot, "transaction begun");
    Ok((
        StatusCode::CREATED,
        Json(Begun {
            txn: entry.id.clone(),
            snapshot,
            isolation: options.isolation.to_string(),
            read_only: options.read_only,
        }),
    ))
}

/// Reads a key in a transaction (the read is recorded for SSI, present or absent).
#[utoipa::path(get, path = route::TXN_KEY, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path),
        ("for_update" = Option<bool>, Query, description = "Make the read conflict like a write")),
    responses((status = 200, body = Row),
        (status = 404, description = "`key_not_found`, `unknown_transaction`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`serialization_failure`", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`transaction_expired`", body = Problem, content_type = "application/problem+json")))]
pub async fn get_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    q: Params,
) -> Result<Json<Row>, ApiError> {
    q.only(&["for_update"])?;
    let for_update = q.get::<bool>("for_update")?.unwrap_or(false);
    let k = key.clone();
    let found = with_txn(&state, &id, move |t| {
        if for_update {
            t.get_for_update(k.as_bytes())
        } else {
            t.get(k.as_bytes())
        }
    })
    .await?;
    match found {
        Some(v) => Ok(Json(row(key.as_bytes(), v))),
        None => Err(key_not_found(&key)),
    }
}

/// Scans keys in a transaction (the range is recorded for SSI: phantoms are caught).
#[utoipa::path(get, path = route::TXN_KV, tag = "transactions",
    params(("txn" = String, Path),
        ("prefix" = Option<String>, Query), ("start" = Option<String>, Query, description = "Inclusive"),
        ("end" = Option<String>, Query, description = "Exclusive"), ("limit" = Option<usize>, Query, description = "1..=10000, default 100")),
    responses((status = 200, body = Rows)))]
pub async fn scan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Rows>, ApiError> {
    q.only(&["prefix", "start", "end", "limit"])?;
    let r = range(&q)?;
    let limit = scan_limit(&q)?;
    let found = with_txn(&state, &id, move |t| t.scan(&r, limit)).await?;
    Ok(Json(rows(found)))
}

/// Writes a key in a transaction (buffered until commit).
#[utoipa::path(put, path = route::TXN_KEY, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path)),
    request_body = PutBody,
    responses((status = 204, description = "Buffered"),
        (status = 400, description = "`invalid_json` naming the field", body = Problem, content_type = "application/problem+json")))]
pub async fn put_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    q: Params,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let value = json_value(&body.value);
    if body.if_version.is_some() && body.if_absent == Some(true) {
        return Err(ApiError::invalid(
            "if_absent",
            "give if_version or if_absent, not both",
        ));
    }
    with_txn_inline(&state, &id, move |t| {
        match (body.if_version, body.if_absent) {
            (Some(v), _) => t.put_if_version(key.as_bytes(), &value, v),
            (None, Some(true)) => t.put_if_absent(key.as_bytes(), &value),
            _ => t.put(key.as_bytes(), &value),
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a key in a transaction.
#[utoipa::path(delete, path = route::TXN_KEY, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path),
        ("if_version" = Option<u64>, Query, description = "Delete only if at this version at commit")),
    responses((status = 204, description = "Buffered")))]
pub async fn delete_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&["if_version"])?;
    let if_version = q.get::<u64>("if_version")?;
    with_txn_inline(&state, &id, move |t| match if_version {
        Some(v) => t.delete_if_version(key.as_bytes(), v),
        None => t.delete(key.as_bytes()),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds to a key's integer value at commit (increments commute: no conflict with other
/// increments).
#[utoipa::path(post, path = route::TXN_INCREMENT, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path)),
    request_body = IncrementBody,
    responses((status = 204, description = "Buffered")))]
pub async fn increment(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    q: Params,
    JsonBody(body): JsonBody<IncrementBody>,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    with_txn_inline(&state, &id, move |t| t.increment(key.as_bytes(), body.by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commits. With `Idempotency-Key`, a retry of a committed request returns the original
/// commit with `"duplicate": true`. The handler awaits the commit's durability
/// ([`Txn::commit_async`]) instead of parking a blocking thread through the fsync.
#[utoipa::path(post, path = route::TXN_COMMIT, tag = "transactions",
    params(("txn" = String, Path),
        ("Idempotency-Key" = Option<String>, Header), ("traceparent" = Option<String>, Header)),
    responses((status = 200, body = Committed),
        (status = 409, description = "`serialization_failure` (retry the whole transaction), `version_mismatch`, `key_exists`, `request_id_conflict` (the Idempotency-Key names a committed transaction with other writes)", body = Problem, content_type = "application/problem+json")))]
pub async fn commit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
    tracking: Tracking,
) -> Result<Json<Committed>, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    let m = state.metrics();
    let entry = match state.txns().get(&id) {
        Ok(entry) => Some(entry),
        // A retry of a commit whose response was lost: the transaction is gone, but its
        // request id still names the commit it made.
        Err(e) => {
            let Some(request_id) = tracking.request_id.clone() else {
                return Err(e);
            };
            let txns = opened.txns.clone();
            let found = tokio::task::spawn_blocking(move || txns.committed(&request_id))
                .await
                .map_err(|_| ApiError::from(TxnError::Closed))??;
            match found {
                Some(outcome) => {
                    m.duplicates.with_label_values(&["commit"]).inc();
                    return committed_response(&opened, outcome);
                }
                None => return Err(e),
            }
        }
    };
    let Some(entry) = entry else {
        return Err(ApiError::from(TxnError::Closed));
    };
    let mut guard = entry.txn.clone().lock_owned().await;
    let txn = guard.take();
    drop(guard);
    let Some(txn) = txn else {
        return Err(ApiError::from(TxnError::Closed));
    };
    let started = Instant::now();
    // Certification and the append happen in this call (a short critical section); the
    // future resolves once the commit record is durable, without holding a thread.
    let outcome = txn
        .commit_async(
            tracking.request_id.as_ref(),
            tracking.traceparent.as_deref(),
        )
        .await;
    m.op_duration
        .with_label_values(&["commit"])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match outcome {
        Ok(o) => {
            end(&state, &entry, "commit");
            o
        }
        Err(e) => {
            end(&state, &entry, e.code());
            return Err(e.into());
        }
    };
    m.commits.inc();
    if outcome.duplicate {
        m.duplicates.with_label_values(&["commit"]).inc();
    }
    committed_response(&opened, outcome)
}

/// The response to a commit: its offset, a token for reads after it, increment results.
fn committed_response(
    opened: &crate::state::Opened,
    outcome: logbook_txn::CommitOutcome,
) -> Result<Json<Committed>, ApiError> {
    let token = match outcome.offset {
        Some(offset) => {
            let stream = opened
                .log
                .stream(&opened.txns.options().stream)
                .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
            let written = [logbook_log::Position {
                partition: 0,
                offset,
            }];
            ConsistencyToken::from_positions(&stream, &written)
                .encode()
                .ok()
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

/// Aborts: nothing the transaction wrote is applied.
#[utoipa::path(post, path = route::TXN_ABORT, tag = "transactions",
    params(("txn" = String, Path)),
    responses((status = 204, description = "Aborted"),
        (status = 404, description = "`unknown_transaction`", body = Problem, content_type = "application/problem+json")))]
pub async fn abort(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let entry = state.txns().get(&id)?;
    let mut guard = entry.txn.clone().lock_owned().await;
    if let Some(t) = guard.take() {
        t.abort();
    }
    drop(guard);
    end(&state, &entry, "explicit");
    Ok(StatusCode::NO_CONTENT)
}

/// Checks a `token` parameter of a key-value read: it must decode and name this node's
/// commit stream incarnation. Commits are acknowledged only once durable and reads see
/// every durable commit, so a valid token never needs a wait on one node.
fn check_token(state: &AppState, q: &Params) -> Result<(), ApiError> {
    let Some(text) = q.text("token") else {
        return Ok(());
    };
    let token = ConsistencyToken::decode(text)
        .map_err(|e| ApiError::new(ProblemCode::InvalidToken, e.to_string()).field("token"))?;
    let opened = state.opened()?;
    let name = &opened.txns.options().stream;
    if let Some(sp) = token.streams.get(name)
        && let Ok(stream) = opened.log.stream(name)
        && sp.incarnation != stream.incarnation()
    {
        return Err(ApiError::new(
            ProblemCode::TokenIncarnation,
            format!(
                "the token names incarnation {} of {name:?}, which is now incarnation {}",
                sp.incarnation,
                stream.incarnation()
            ),
        )
        .field("token"));
    }
    Ok(())
}

/// The latest committed value of a key, outside any transaction.
#[utoipa::path(get, path = route::KV_KEY, tag = "transactions",
    params(("key" = String, Path), ("token" = Option<String>, Query, description = "Consistency token of earlier commits")),
    responses((status = 200, body = Row),
        (status = 404, description = "`key_not_found`", body = Problem, content_type = "application/problem+json")))]
pub async fn kv_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Json<Row>, ApiError> {
    q.only(&["token"])?;
    check_token(&state, &q)?;
    let store = state.opened()?.txns;
    let k = key.clone();
    let found = blocking(move || store.get(k.as_bytes())).await??;
    match found {
        Some(v) => Ok(Json(row(key.as_bytes(), v))),
        None => Err(key_not_found(&key)),
    }
}

/// The latest committed rows of a range, outside any transaction.
#[utoipa::path(get, path = route::KV, tag = "transactions",
    params(("prefix" = Option<String>, Query), ("start" = Option<String>, Query, description = "Inclusive"),
        ("end" = Option<String>, Query, description = "Exclusive"), ("limit" = Option<usize>, Query),
        ("token" = Option<String>, Query)),
    responses((status = 200, body = Rows)))]
pub async fn kv_scan(State(state): State<AppState>, q: Params) -> Result<Json<Rows>, ApiError> {
    q.only(&["prefix", "start", "end", "limit", "token"])?;
    check_token(&state, &q)?;
    let r = range(&q)?;
    let limit = scan_limit(&q)?;
    let store = state.opened()?.txns;
    let found = blocking(move || store.scan(&r, limit)).await??;
    Ok(Json(rows(found)))
}
