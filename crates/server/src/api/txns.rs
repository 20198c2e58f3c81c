//! Interactive transactions over HTTP and key-value reads outside them.
//!
//! A transaction lives in the server between requests (see [`crate::state::TxnRegistry`]):
//! `POST /v1/txns` begins one and names it; each operation locks it, runs on the blocking
//! pool, and marks it used; commit and abort end it. Values are JSON, stored as their
//! compact JSON text, so `increment` works on JSON integers. An operation that reports a
//! retryable conflict (`serialization_failure`) ends the transaction: retry it whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use logbook_api::paths::route;
use logbook_api::txns::{BeginBody, Begun, Committed, IncrementBody, PutBody, Row, Rows};
use logbook_txn::{Condition, Isolation, KeyRange, ScanPage, Txn, TxnError, TxnOptions, Versioned};

use crate::auth::{Caller, authorize_body, authorize_held_snapshot_write, reveals_state};
use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, Tracking, blocking, commit_to_the_end};
use crate::limits;
use crate::state::{AppState, Lookup, OpenTxn, Opened, Phase, Resend, TxnEnd, unknown_txn};
use axum::http::HeaderMap;
use logbook_views::ConsistencyToken;

use super::certify::{
    certify_or_forward, commit_body, committed_response, detail_for, isolation, key_range,
    put_write,
};
use super::{Params, raw_json, text};

fn row(key: &[u8], v: Versioned) -> Row {
    Row {
        key: text(key),
        value: raw_json(&v.value),
        version: v.version,
        token: None,
    }
}

pub(super) fn rows(page: ScanPage) -> Rows {
    Rows {
        rows: page
            .rows
            .into_iter()
            .map(|kv| Row {
                key: text(&kv.key),
                value: raw_json(&kv.value),
                version: kv.version,
                token: None,
            })
            .collect(),
        next: page.next.as_deref().map(text),
        token: None,
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
    if guard.is_none() {
        return Err(ended_error_when_settled(state, id, &entry).await);
    }
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
        && let Some(t) = guard.take()
    {
        t.abort();
    }
    ended_by_error(state, &entry, result)
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
    let Some(t) = guard.as_mut() else {
        drop(guard);
        return Err(ended_error_when_settled(state, id, &entry).await);
    };
    let result = f(t);
    state.txns().touch(&entry);
    if let Err(e) = &result
        && e.is_retryable()
        && let Some(t) = guard.take()
    {
        t.abort();
    }
    ended_by_error(state, &entry, result)
}

/// Why a request found its transaction no longer open. While its commit is in flight the
/// answer waits for the outcome: "committed" could be untrue of a commit that then fails.
async fn ended_error_when_settled(state: &AppState, id: &str, entry: &OpenTxn) -> ApiError {
    let end = entry.settled().await;
    state.txns().ended_error(id, &end)
}

/// The answer of an operation on an open transaction; a retryable error (the transaction
/// was aborted for it) ends the transaction, remembering the error for later requests.
fn ended_by_error<T>(
    state: &AppState,
    entry: &OpenTxn,
    result: Result<T, TxnError>,
) -> Result<T, ApiError> {
    result.map_err(|e| {
        let retryable = e.is_retryable();
        let code = e.code();
        let error = ApiError::from(e);
        if retryable {
            let how = TxnEnd::Aborted {
                by: Some(error.clone()),
            };
            end(state, entry, how, code);
        }
        error
    })
}

/// Ends a transaction `how`; `reason` labels the abort metric (`commit` counts none).
fn end(state: &AppState, entry: &OpenTxn, how: TxnEnd, reason: &str) {
    state.txns().finish(entry, how);
    state.metrics().open_txns.set(state.txns().len() as i64);
    if reason != "commit" {
        state.metrics().aborts.with_label_values(&[reason]).inc();
    }
}

fn range(q: &Params) -> Result<KeyRange, ApiError> {
    let (prefix, start, end) = (q.text("prefix"), q.text("start"), q.text("end"));
    key_range(prefix, start, end, "")
}

fn scan_limit(q: &Params) -> Result<usize, ApiError> {
    let limit = q
        .get::<usize>("limit")?
        .unwrap_or(limits::SCAN_ROWS_DEFAULT);
    if limit == 0 || limit > limits::SCAN_ROWS_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1..={}", limits::SCAN_ROWS_MAX),
        ));
    }
    Ok(limit)
}

/// Begins a transaction.
#[utoipa::path(post, path = route::TXNS, tag = "transactions",
    params(("token" = Option<String>, Query, description = "Consistency token of earlier commits (a `_txn` position): the snapshot includes them. On a cluster follower the node first applies the commit stream that far"),
        ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    request_body(content = BeginBody, description = "May be empty: serializable, read-write"),
    responses((status = 201, body = Begun),
        (status = 422, description = "`snapshot_ahead`: a cluster follower did not apply the token's commits within `timeout_ms`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_transactions`; `transaction_quota_exceeded`: the principal holds `txns_per_principal_max`", body = Problem, content_type = "application/problem+json")))]
pub async fn begin(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    conn: Option<axum::Extension<Arc<crate::head::Tracker>>>,
    q: Params,
    JsonBody(body): JsonBody<BeginBody>,
) -> Result<(StatusCode, Json<Begun>), ApiError> {
    q.only(&["token", "timeout_ms"])?;
    let opened = state.opened()?;
    let owner = crate::quota::request_key(
        caller.as_deref().map(|p| &**p),
        conn.as_deref().and_then(|c| c.peer_key()),
    );
    state.txns().check_room(&owner)?;
    // A follower's snapshot is what it has applied: catch up first (to the token, if any).
    wait_token(&state, &opened, &q).await?;
    let mut options = TxnOptions::new(body.isolation.map_or(Isolation::Serializable, isolation));
    if body.read_only == Some(true) {
        options = options.read_only();
    } else if !crate::auth::may_write_kv(caller.as_deref().map(|p| &**p)) {
        // It can commit nothing, so it keeps no history of others' commits while open
        // (decision 0021): read-only, at the newest snapshot as any begin.
        options = options.read_only_at_newest();
    }
    let store = opened.txns()?;
    let txn = if store.options().elected && store.leading().is_none() {
        // A follower's begin waits for its thread to apply what the node has seen since.
        blocking(move || store.begin(options)).await??
    } else {
        store.begin(options)?
    };
    let snapshot = txn.snapshot();
    // Early lock release: the snapshot may count commits not yet durable, which a crash
    // would undo (and their offsets go to other commits). The answer waits until they are
    // durable, so no number a client sees depends on them; the snapshot is not lowered.
    durable_through(&state, &opened, snapshot, None).await?;
    let principal = caller.as_deref().map(|p| p.name.clone());
    let entry = state.txns().insert(txn, owner, principal)?;
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
        (status = 410, description = "`transaction_expired`", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
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

/// Scans keys in a transaction (the range is recorded for SSI: phantoms are caught). A page
/// stops at `limit` rows or at the answer's byte budget, whichever comes first, with
/// `next` where it stopped.
#[utoipa::path(get, path = route::TXN_KV, tag = "transactions",
    params(("txn" = String, Path),
        ("prefix" = Option<String>, Query), ("start" = Option<String>, Query, description = "Inclusive; beside `prefix`, a key within it to resume from (a page's `next`)"),
        ("end" = Option<String>, Query, description = "Exclusive"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "1..=10000, default 100")),
    responses((status = 200, description = "A page of rows; `next` set with fewer rows than `limit` when the answer's byte budget (`KV_READ_ANSWER_BYTES_MAX`, 4 MiB: each row its key as JSON writes it, its value bytes and 64) cut it — read on from `next` (as `start`, beside the same `prefix`)", body = Rows),
        (status = 400, description = "`invalid_request` naming the parameter: `end` beside `prefix`, a `start` outside the prefix, an `end` not after `start`, a bound longer than a key (1024 bytes), `limit`", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
pub async fn scan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Rows>, ApiError> {
    q.only(&["prefix", "start", "end", "limit"])?;
    let r = range(&q)?;
    let limit = scan_limit(&q)?;
    let budget = limits::KV_READ_ANSWER_BYTES_MAX;
    let found = with_txn(&state, &id, move |t| t.scan_page_within(&r, limit, budget)).await?;
    Ok(Json(rows(found)))
}

/// Writes a key in a transaction (buffered until commit).
#[utoipa::path(put, path = route::TXN_KEY, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path)),
    request_body = PutBody,
    responses((status = 204, description = "Buffered"),
        (status = 400, description = "`invalid_json` naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a conditional put (`if_version`, `if_absent`; `field` names it) needs `kv:read` on the key beside `kv:write` — its outcome reveals the key's version or presence; so does any put in a `snapshot` or `serializable` transaction (`field` `key`: it is checked against the snapshot the transaction holds) (decision 0018); nothing was buffered", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
pub async fn put_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key)): Path<(String, String)>,
    q: Params,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let (value, cond) = put_write(Some(&body.value), body.if_version, body.if_absent, "")?;
    let condition = match cond {
        Condition::IfVersion(_) => Some("if_version"),
        Condition::IfAbsent => Some("if_absent"),
        Condition::None => None,
    };
    if let Some(field) = condition {
        authorize_body(&caller, [(field.to_string(), reveals_state(&key))])?;
    }
    authorize_write_at_snapshot(&state, &caller, &id, &key).await?;
    with_txn_inline(&state, &id, move |t| match cond {
        Condition::IfVersion(v) => t.put_if_version(key.as_bytes(), &value, v),
        Condition::IfAbsent => t.put_if_absent(key.as_bytes(), &value),
        Condition::None => t.put(key.as_bytes(), &value),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A write in transaction `id` without `kv:read` on `key`: allowed at `read_committed`
/// only — at `snapshot` and `serializable` it is checked against the snapshot the
/// transaction holds since it began ([`authorize_held_snapshot_write`]). Checked before
/// anything is buffered; the field is `key`.
///
/// # Errors
/// 403 `forbidden`; the errors of a transaction no longer open.
async fn authorize_write_at_snapshot(
    state: &AppState,
    caller: &Caller,
    id: &str,
    key: &str,
) -> Result<(), ApiError> {
    if crate::auth::may_read(caller.as_deref().map(|p| &**p), key) {
        return Ok(());
    }
    let level = with_txn_inline(state, id, |t| Ok(t.isolation())).await?;
    if level == logbook_txn::Isolation::ReadCommitted {
        return Ok(());
    }
    authorize_held_snapshot_write(caller, "key", key)
}

/// Deletes a key in a transaction.
#[utoipa::path(delete, path = route::TXN_KEY, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path),
        ("if_version" = Option<u64>, Query, description = "Delete only if at this version at commit (needs `kv:read` on the key beside `kv:write`)")),
    responses((status = 204, description = "Buffered"),
        (status = 403, description = "`forbidden`: a delete with `if_version` needs `kv:read` on the key beside `kv:write` — its outcome reveals the key's version; so does any delete in a `snapshot` or `serializable` transaction (`field` `key`: it is checked against the snapshot the transaction holds) (decision 0018); nothing was buffered", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key)): Path<(String, String)>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&["if_version"])?;
    let if_version = q.get::<u64>("if_version")?;
    if if_version.is_some() {
        authorize_body(&caller, [("if_version".to_string(), reveals_state(&key))])?;
    }
    authorize_write_at_snapshot(&state, &caller, &id, &key).await?;
    with_txn_inline(&state, &id, move |t| match if_version {
        Some(v) => t.delete_if_version(key.as_bytes(), v),
        None => t.delete(key.as_bytes()),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds to a key's integer value at commit (increments commute: no conflict with other
/// increments). Needs `kv:read` on the key beside `kv:write`: the commit answers the value
/// the key ended with.
#[utoipa::path(post, path = route::TXN_INCREMENT, tag = "transactions",
    params(("txn" = String, Path), ("key" = String, Path)),
    request_body = IncrementBody,
    responses((status = 204, description = "Buffered"),
        (status = 403, description = "`forbidden`: an increment needs `kv:write` and `kv:read` on the key — the commit answers the value it ended with (decision 0018)", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
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
/// commit with `"duplicate": true` — also while the original is still in flight (the retry
/// waits for it); a read-only commit's id is remembered in memory only (nothing is logged
/// for it), so a restart forgets it. A commit or abort that loses a race with another ending of the same
/// transaction is 409 `transaction_committed` / `transaction_aborted`. The commit runs in a
/// task of its own, so it ends (and tells those waiting) even if its client goes away; it
/// awaits the commit's durability ([`Txn::commit_async`]) without parking a blocking thread
/// through the fsync. On a cluster follower (or after this node's role changed) the
/// transaction is sent as a self-contained commit request to the certifier's leader, as a
/// one-shot commit is; an answer lost on the way is 504 `outcome_unknown`, and a retry with
/// the same `Idempotency-Key` sends the request again to learn the outcome.
#[utoipa::path(post, path = route::TXN_COMMIT, tag = "transactions",
    params(("txn" = String, Path),
        ("Idempotency-Key" = Option<String>, Header), ("traceparent" = Option<String>, Header)),
    responses((status = 200, body = Committed),
        (status = 409, description = "`serialization_failure` (retry the whole transaction), `version_mismatch`, `key_exists`, `request_id_conflict` (the Idempotency-Key names a committed transaction with other writes), `transaction_committed`, `transaction_aborted` (the transaction already ended that way; `retryable` as what ended it)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden` (`Idempotency-Key`): the request id names a commit already made whose answer holds a value this token may not read", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`certifier_share_full` (retryable, with `Retry-After`): the principal's commits that open transactions still need fill its share of the certifier's memory; nothing was committed (decision 0021)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`leader_unavailable`: on a cluster, no leader certifies now; `certifier_full`: commits open transactions still need fill the certifier's memory (decision 0021); nothing was committed, retry", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`outcome_unknown`: on a cluster follower, the commit was forwarded to the leader and its answer lost; with an Idempotency-Key, retry with the same key to learn the outcome (`retryable` true); without one a retry may commit it twice (`retryable` false)", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
pub async fn commit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
    tracking: Tracking,
    headers: HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
    let entry = match state.txns().lookup(&id) {
        Lookup::Registered(entry) => entry,
        ended => return commit_ended(&state, &opened, &id, ended, &tracking, &headers).await,
    };
    state.txns().touch(&entry);
    let mut guard = entry.txn.clone().lock_owned().await;
    let Some(txn) = guard.take() else {
        drop(guard);
        // Another request is committing it (or has ended it): wait for that, then answer.
        let end = entry.settled().await;
        return commit_again(&state, &opened, &id, end, &tracking, &headers).await;
    };
    entry.set_end(TxnEnd::Committing {
        request_id: request_id.clone(),
    });
    drop(guard);
    let task = tokio::spawn(run_commit(
        state.clone(),
        opened,
        entry,
        txn,
        tracking,
        headers,
    ));
    task.await
        .map_err(|e| ApiError::internal(format!("the commit task failed: {e}")))?
}

/// Whether the store `txn` was begun on certifies its commit: a single node's always; on a
/// cluster only while it leads and is still this node's store (a role change replaces it).
fn certified_here(opened: &Opened, txn: &Txn) -> bool {
    let store = txn.store();
    !store.options().elected
        || (store.leading().is_some() && opened.txns().is_ok_and(|now| Arc::ptr_eq(&now, store)))
}

/// Commits `txn` and records how it ended in the registry.
async fn run_commit(
    state: AppState,
    opened: Opened,
    entry: Arc<OpenTxn>,
    txn: Txn,
    tracking: Tracking,
    headers: HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    if !certified_here(&opened, &txn) {
        let request = txn.into_request().map_err(ApiError::from);
        let body = request.and_then(|r| commit_body(&r));
        let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
        let (result, how) = match body {
            Ok(body) => send_request(&state, &opened, Arc::new(body), &tracking, &headers).await,
            Err(error) => {
                let how = TxnEnd::CommitFailed {
                    error: error.clone(),
                    request_id,
                    resend: None,
                };
                (Err(error), how)
            }
        };
        let reason = result.as_ref().err().map_or("commit", |e| e.code.as_str());
        end(&state, &entry, how, reason);
        return result;
    }
    let m = state.metrics();
    let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
    let started = Instant::now();
    let rid = tracking.request_id.clone();
    let traceparent = tracking.traceparent.clone();
    let mut txn = txn;
    txn.set_principal(tracking.principal_name());
    let outcome =
        commit_to_the_end(move || txn.commit_async(rid.as_ref(), traceparent.as_deref())).await?;
    m.op_duration
        .with_label_values(&["commit"])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match outcome {
        Ok(o) => {
            let how = TxnEnd::Committed {
                outcome: o.clone(),
                request_id,
            };
            end(&state, &entry, how, "commit");
            o
        }
        Err(e) => {
            let code = e.code();
            let hidden = detail_for(&e, tracking.principal.as_deref());
            let mut error = ApiError::from(e);
            if let Some(detail) = hidden {
                error.detail = detail;
            }
            let how = TxnEnd::CommitFailed {
                error: error.clone(),
                request_id,
                resend: None,
            };
            end(&state, &entry, how, code);
            return Err(error);
        }
    };
    m.commits.inc();
    if outcome.duplicate {
        m.duplicates.with_label_values(&["commit"]).inc();
    }
    committed_response(&opened, outcome, tracking.principal.as_deref())
}

/// An interactive transaction's commit as a self-contained request (`body`), certified by
/// this node's store if it leads now, else forwarded to the certifier's leader — the
/// one-shot commit's path. Returns the answer and the end to record: an answer lost on the
/// way keeps `body`, so a retry with the same `Idempotency-Key` sends it again
/// ([`resend_of`]) and learns the outcome.
async fn send_request(
    state: &AppState,
    opened: &Opened,
    body: Arc<logbook_api::txns::CommitBody>,
    tracking: &Tracking,
    headers: &HeaderMap,
) -> (Result<Json<Committed>, ApiError>, TxnEnd) {
    let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
    let sent = (*body).clone();
    let result = certify_or_forward(state, opened, sent, tracking, headers).await;
    let how = match &result {
        Ok(Json(c)) => TxnEnd::Committed {
            outcome: logbook_txn::CommitOutcome {
                offset: c.offset,
                duplicate: c.duplicate,
                incremented: c
                    .incremented
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), *v))
                    .collect(),
            },
            request_id,
        },
        Err(error) => TxnEnd::CommitFailed {
            error: error.clone(),
            resend: (error.status().is_server_error() && request_id.is_some())
                .then_some(Resend(body)),
            request_id,
        },
    };
    (result, how)
}

/// The request to send again for a retry with `tracking`'s request id of a forwarded
/// commit whose outcome was unknown.
fn resend_of(end: &TxnEnd, tracking: &Tracking) -> Option<Arc<logbook_api::txns::CommitBody>> {
    let asked = tracking.request_id.as_ref().map(|r| r.as_str());
    match end {
        TxnEnd::CommitFailed {
            request_id: Some(original),
            resend: Some(Resend(body)),
            ..
        } if asked == Some(original.as_str()) => Some(body.clone()),
        _ => None,
    }
}

/// Whether `end` is the end of a commit sent with `tracking`'s request id.
fn same_request(end: &TxnEnd, tracking: &Tracking) -> bool {
    let asked = tracking.request_id.as_ref().map(|r| r.as_str());
    match end {
        TxnEnd::Committed { request_id, .. } | TxnEnd::CommitFailed { request_id, .. } => {
            asked.is_some() && request_id.as_deref() == asked
        }
        _ => false,
    }
}

/// Sends a forwarded commit again (see [`resend_of`]) and remembers its new end.
async fn resend(
    state: &AppState,
    opened: &Opened,
    id: &str,
    body: Arc<logbook_api::txns::CommitBody>,
    tracking: &Tracking,
    headers: &HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    let (result, how) = send_request(state, opened, body, tracking, headers).await;
    state.txns().remember_end(id, how);
    result
}

/// A commit of a transaction whose commit already settled (`end`): a retry with the
/// original's `Idempotency-Key` gets the original's answer (a duplicate when it
/// committed; a forwarded commit whose answer was lost is sent again); anything else
/// learns how the transaction ended.
async fn commit_again(
    state: &AppState,
    opened: &Opened,
    id: &str,
    end: TxnEnd,
    tracking: &Tracking,
    headers: &HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    if let Some(body) = resend_of(&end, tracking) {
        return resend(state, opened, id, body, tracking, headers).await;
    }
    let request_id = tracking.request_id.as_ref().map(|r| r.as_str().to_string());
    match end {
        TxnEnd::Committed {
            outcome,
            request_id: original,
        } if request_id.is_some() && original == request_id => {
            state
                .metrics()
                .duplicates
                .with_label_values(&["commit"])
                .inc();
            let outcome = with_increments(opened, outcome).await?;
            committed_response(
                opened,
                logbook_txn::CommitOutcome {
                    duplicate: true,
                    ..outcome
                },
                tracking.principal.as_deref(),
            )
        }
        TxnEnd::CommitFailed {
            error,
            request_id: original,
            ..
        } if request_id.is_some() && original == request_id => Err(error),
        other => Err(state.txns().ended_error(id, &other)),
    }
}

/// `outcome` with its increments: a recently ended transaction is remembered with its
/// commit's offset only ([`crate::state::TxnRegistry::finish`]), so a commit that wrote
/// something and answers no increments has them read back from its record — the retry is
/// answered as the original was, and as a token that may not read them is refused.
///
/// # Errors
/// As [`logbook_txn::TxnStore::committed_at`].
async fn with_increments(
    opened: &Opened,
    outcome: logbook_txn::CommitOutcome,
) -> Result<logbook_txn::CommitOutcome, ApiError> {
    let Some(offset) = outcome.offset.filter(|_| outcome.incremented.is_empty()) else {
        return Ok(outcome);
    };
    let txns = opened.txns()?.clone();
    tokio::task::spawn_blocking(move || txns.committed_at(offset))
        .await
        .map_err(|_| ApiError::from(TxnError::Closed))?
        .map_err(ApiError::from)
}

/// A commit of a handle no longer registered: a retry whose response was lost is answered
/// from its request id, which still names the commit it made; otherwise how the
/// transaction ended, if that is remembered.
async fn commit_ended(
    state: &AppState,
    opened: &Opened,
    id: &str,
    lookup: Lookup,
    tracking: &Tracking,
    headers: &HeaderMap,
) -> Result<Json<Committed>, ApiError> {
    // A retry of the commit that ended it is answered from that end (on a cluster
    // follower, this node's table may not hold the leader's commit yet).
    if let Lookup::Ended(end) = &lookup
        && same_request(end, tracking)
    {
        return commit_again(state, opened, id, end.clone(), tracking, headers).await;
    }
    if let Some(request_id) = tracking.request_id.clone() {
        let txns = opened.txns()?.clone();
        let principal = tracking.principal_name();
        let found =
            tokio::task::spawn_blocking(move || txns.committed(principal.as_deref(), &request_id))
                .await
                .map_err(|_| ApiError::from(TxnError::Closed))??;
        if let Some(outcome) = found {
            state
                .metrics()
                .duplicates
                .with_label_values(&["commit"])
                .inc();
            return committed_response(opened, outcome, tracking.principal.as_deref());
        }
    }
    Err(match lookup {
        Lookup::Ended(end) => state.txns().ended_error(id, &end),
        Lookup::Registered(_) | Lookup::Unknown => unknown_txn(id),
    })
}

/// Aborts: nothing the transaction wrote is applied. Aborting an aborted transaction is
/// a no-op; one whose commit is in flight waits for it: if it committed, 409
/// `transaction_committed` (the commit won).
#[utoipa::path(post, path = route::TXN_ABORT, tag = "transactions",
    params(("txn" = String, Path)),
    responses((status = 204, description = "Aborted"),
        (status = 404, description = "`unknown_transaction`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`transaction_committed`: the transaction committed before the abort", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "`misdirected_request`: on a cluster, the transaction lives on another node (named in its handle); `location` is this request's URL there", body = Problem, content_type = "application/problem+json")))]
pub async fn abort(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let end = match state.txns().lookup(&id) {
        Lookup::Registered(entry) => {
            let mut guard = entry.txn.clone().lock_owned().await;
            if let Some(t) = guard.take() {
                t.abort();
                end(&state, &entry, TxnEnd::Aborted { by: None }, "explicit");
                return Ok(StatusCode::NO_CONTENT);
            }
            drop(guard);
            entry.settled().await
        }
        Lookup::Ended(end) => end,
        Lookup::Unknown => return Err(unknown_txn(&id)),
    };
    match end {
        // Nothing it wrote was applied: what the abort asked for.
        TxnEnd::Aborted { .. } => Ok(StatusCode::NO_CONTENT),
        TxnEnd::CommitFailed { error, .. } if !error.status().is_server_error() => {
            Ok(StatusCode::NO_CONTENT)
        }
        other => Err(state.txns().ended_error(&id, &other)),
    }
}

/// The commits below `end` (a `_txn` position) become durable: waits at most `timeout`
/// (forever with `None`). `Ok(false)` when the time ran out.
///
/// # Errors
/// 503 when the store is poisoned (a commit below `end` failed: it never will be durable),
/// or the log closed; 503 `closed` once the server shuts down (a wait would hold the drain
/// past its grace period).
async fn durable_through(
    state: &AppState,
    opened: &Opened,
    end: u64,
    timeout: Option<Duration>,
) -> Result<bool, ApiError> {
    let store = opened.txns()?;
    if store.durable_end() >= end {
        return Ok(true);
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    // One wait for the whole loop (on JetStream it polls the stream's state): it resolves
    // with an acknowledgment; a failed append poisons the store instead, so look at that
    // every 50 ms.
    let mut reached = store.durable_reached(end);
    let tick = Duration::from_millis(50);
    loop {
        if store.durable_end() >= end {
            return Ok(true);
        }
        if store.is_poisoned() {
            return Err(TxnError::Poisoned.into());
        }
        if state.phase() == Phase::ShuttingDown {
            return Err(ApiError::new(
                ProblemCode::Closed,
                format!(
                    "the server is shutting down; commits up to offset {end} were waited \
                     for, {} are durable; retry on the restarted server",
                    store.durable_end()
                ),
            ));
        }
        let mut wait = tick;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            wait = wait.min(left);
        }
        if let Ok(durable) = tokio::time::timeout(wait, &mut reached).await {
            if durable < end {
                // Resolved below `end`: the log is closing.
                return Err(ApiError::from_log(logbook_log::LogError::Closed, |_| {
                    String::new()
                }));
            }
            return Ok(true);
        }
    }
}

/// The `_txn` position a key-value read's `token` asks for: the end of the commits it
/// names (none without a token). Like a view read, the token must decode, name this
/// node's commit stream, in its current incarnation, at partition 0.
pub(super) fn token_end(opened: &Opened, q: &Params) -> Result<Option<u64>, ApiError> {
    let Some(text) = q.text("token") else {
        return Ok(None);
    };
    let invalid = |detail: String| ApiError::new(ProblemCode::InvalidToken, detail).field("token");
    let token = ConsistencyToken::decode(text).map_err(|e| invalid(e.to_string()))?;
    let store = opened.txns()?;
    let name = &store.options().stream;
    let Some(sp) = token.streams.get(name) else {
        let named: Vec<&str> = token.streams.keys().map(String::as_str).collect();
        return Err(invalid(format!(
            "invalid consistency token: it names no position of the commit stream {name:?}, \
             which key-value reads follow (it names {named:?}); use the token of a commit"
        )));
    };
    let stream = opened
        .log
        .stream(name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    if sp.incarnation != stream.incarnation() {
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
    if let Some(p) = sp.offsets.keys().find(|p| **p != 0) {
        return Err(invalid(format!(
            "invalid consistency token: partition {p} does not exist in the commit stream {name:?}"
        )));
    }
    Ok(sp.offsets.get(&0).copied())
}

/// On a cluster follower, applies the commit stream before a read: up to `end` (a client's
/// token or snapshot), waiting at most `timeout`, or as far as the stream holds now. `false`
/// on a leader or a single node, whose tables are ahead of the stream already.
///
/// # Errors
/// 422 `snapshot_ahead` when the follower does not reach `end` in time; 503
/// `store_poisoned`.
pub(super) async fn follow(
    opened: &Opened,
    end: Option<u64>,
    timeout: Duration,
) -> Result<bool, ApiError> {
    let store = opened.txns()?;
    if !store.options().elected || store.leading().is_some() {
        return Ok(false);
    }
    blocking(move || match end {
        Some(end) => store.follow_to(end, timeout),
        None => store.follow_to(store.stream_end(), timeout),
    })
    .await??;
    Ok(true)
}

/// Waits until the commits a read's `token` names are durable (and so visible to reads
/// outside transactions), at most `timeout_ms` (default 5000 ms with a token). On a cluster
/// follower: until it has applied them (else 422 `snapshot_ahead`), and without a token as
/// far as the commit stream holds now.
///
/// # Errors
/// 400 `invalid_token`, `invalid_request` (`timeout_ms`); 409 `token_incarnation`; 422
/// `snapshot_ahead`; 504 `consistency_timeout`; 503 `closed` at shutdown.
pub(super) async fn wait_token(
    state: &AppState,
    opened: &Opened,
    q: &Params,
) -> Result<(), ApiError> {
    let timeout_ms = q.get::<u64>("timeout_ms")?;
    let max = logbook_views::limits::READ_TIMEOUT_MS_MAX;
    if let Some(t) = timeout_ms
        && t > max
    {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!("timeout_ms must be at most {max}"),
        ));
    }
    let end = token_end(opened, q)?;
    let timeout_ms = state.wait_ms(timeout_ms.unwrap_or(limits::VIEW_READ_TIMEOUT_MS_DEFAULT));
    let timeout = Duration::from_millis(timeout_ms);
    if follow(opened, end, timeout).await? {
        return Ok(());
    }
    let Some(end) = end else {
        return Ok(());
    };
    if durable_through(state, opened, end, Some(timeout)).await? {
        return Ok(());
    }
    let mut e = ApiError::new(
        ProblemCode::ConsistencyTimeout,
        format!(
            "commits up to offset {end} were asked for; {} are durable after {timeout_ms} ms",
            opened.txns()?.durable_end()
        ),
    )
    .field("token")
    .retry_after(1);
    e.retryable = Some(true);
    Err(e)
}

/// The token of what a key-value read outside a transaction reflects at least: every commit
/// durable before the read (reads see all of them). Taken before the read, so it never
/// names more than the answer shows; absent before any commit is durable (a token naming
/// no position would be refused by the next read that sent it).
fn kv_token(opened: &Opened) -> Option<String> {
    let store = opened.txns().ok()?;
    // A cluster follower's table may trail the durable stream: it reads what it applied.
    let last = store
        .durable_end()
        .min(store.applied_end())
        .checked_sub(1)?;
    let stream = opened.log.stream(&store.options().stream).ok()?;
    let position = logbook_log::Position {
        partition: 0,
        offset: last,
    };
    logbook_views::token_of(&*stream, &[position]).encode().ok()
}

/// The latest committed value of a key, outside any transaction. With `token` (of an
/// earlier commit), waits (≤ `timeout_ms`, default 5000) until the commits it names are
/// durable and so visible here.
#[utoipa::path(get, path = route::KV_KEY, tag = "transactions",
    params(("key" = String, Path), ("token" = Option<String>, Query, description = "Consistency token of earlier commits: it must name a `_txn` position"),
        ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    responses((status = 200, body = Row),
        (status = 400, description = "`invalid_token`: it does not decode or names no `_txn` position", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`key_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`consistency_timeout`: the commits the token names are not durable in time", body = Problem, content_type = "application/problem+json")))]
pub async fn kv_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Json<Row>, ApiError> {
    q.only(&["token", "timeout_ms"])?;
    let opened = state.opened()?;
    wait_token(&state, &opened, &q).await?;
    let token = kv_token(&opened);
    let store = opened.txns()?.clone();
    let k = key.clone();
    let found = blocking(move || store.get(k.as_bytes())).await??;
    match found {
        Some(v) => Ok(Json(Row {
            token,
            ..row(key.as_bytes(), v)
        })),
        None => Err(key_not_found(&key)),
    }
}

/// The latest committed rows of a range, outside any transaction. A page stops at `limit`
/// rows or at the answer's byte budget, whichever comes first, with `next` where it
/// stopped.
#[utoipa::path(get, path = route::KV, tag = "transactions",
    params(("prefix" = Option<String>, Query), ("start" = Option<String>, Query, description = "Inclusive; beside `prefix`, a key within it to resume from (a page's `next`)"),
        ("end" = Option<String>, Query, description = "Exclusive"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "1..=10000, default 100"),
        ("token" = Option<String>, Query, description = "As for `GET /v1/kv/{key}`"), ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    responses((status = 200, description = "A page of rows; `next` set with fewer rows than `limit` when the answer's byte budget (`KV_READ_ANSWER_BYTES_MAX`, 4 MiB: each row its key as JSON writes it, its value bytes and 64) cut it — read on from `next` (as `start`, beside the same `prefix`)", body = Rows),
        (status = 400, description = "`invalid_request` naming the parameter: `end` beside `prefix`, a `start` outside the prefix, an `end` not after `start`, a bound longer than a key (1024 bytes), `limit`; `invalid_token`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`consistency_timeout`", body = Problem, content_type = "application/problem+json")))]
pub async fn kv_scan(State(state): State<AppState>, q: Params) -> Result<Json<Rows>, ApiError> {
    q.only(&["prefix", "start", "end", "limit", "token", "timeout_ms"])?;
    let r = range(&q)?;
    let limit = scan_limit(&q)?;
    let opened = state.opened()?;
    wait_token(&state, &opened, &q).await?;
    let token = kv_token(&opened);
    let store = opened.txns()?.clone();
    let budget = limits::KV_READ_ANSWER_BYTES_MAX;
    let found = blocking(move || store.scan_page_within(&r, limit, budget)).await??;
    Ok(Json(Rows {
        token,
        ..rows(found)
    }))
}
