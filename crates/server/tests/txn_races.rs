//! Transaction protocol edges over HTTP, in process: commits and aborts racing a commit in
//! flight, read-only commits retried by request id, scans cut by their limit, key-value
//! reads with consistency tokens, and the snapshot answered by `POST /v1/txns` under early
//! lock release.
//!
//! Races are made deterministic by holding the commit stream's fsync: a commit is then
//! certified and applied but not durable ("in flight") until the test lets the fsync
//! through (or fail). Each test failed before the fix of the defect it names.
mod common;

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::{Node, node, send, until, until_waiting};
use logbook_api::paths::{self, Query};
use serde_json::{Value, json};

/// Holds the fsync, starts committing `t` with `key`, and returns once the commit is in
/// flight (certified, applied, its fsync waiting at the gate).
async fn commit_in_flight(
    n: &Node,
    t: &str,
    key: Option<&'static str>,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    n.gate.hold();
    let first = n.spawn_call("POST", paths::txn_commit(t), key);
    until_waiting(&n.gate, 1).await;
    first
}

/// Waits until `req` answered or `t`'s commit has a waiting request.
async fn until_answered_or_waiting(
    n: &Node,
    t: &str,
    req: &tokio::task::JoinHandle<(StatusCode, Value)>,
) {
    until("the request answers or waits for the commit", || {
        req.is_finished() || n.waiting_on(t) > 0
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_retried_while_the_original_is_in_flight_waits_and_answers_the_original() {
    let n = node();
    let t = n.increment_txn("c", 5).await;
    let first = commit_in_flight(&n, &t, Some("k-1")).await;
    // The client gave up on the first answer and retries at once, as the API asks.
    let retry = n.spawn_call("POST", paths::txn_commit(&t), Some("k-1"));
    until_answered_or_waiting(&n, &t, &retry).await;
    n.gate.release();
    let (s1, b1) = first.await.unwrap();
    let (s2, b2) = retry.await.unwrap();
    assert_eq!(s1, StatusCode::OK, "{b1}");
    // Before the fix: 410 transaction_closed, retryable false, while the commit went through.
    assert_eq!(s2, StatusCode::OK, "{b2}");
    assert_eq!(b2["duplicate"], true, "{b2}");
    assert_eq!(b2["offset"], b1["offset"]);
    assert_eq!(b2["incremented"]["c"], 5);
    assert!(b1.get("duplicate").is_none(), "{b1}");
    let (s, row) = n.call("GET", &paths::kv_key("c"), None, None).await;
    assert_eq!(
        (s, row["value"].clone()),
        (StatusCode::OK, json!(5)),
        "applied once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_commit_without_the_key_while_one_is_in_flight_hears_transaction_committed() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let first = commit_in_flight(&n, &t, None).await;
    let second = n.spawn_call("POST", paths::txn_commit(&t), None);
    until_answered_or_waiting(&n, &t, &second).await;
    n.gate.release();
    let (s1, b1) = first.await.unwrap();
    let (s2, b2) = second.await.unwrap();
    assert_eq!(s1, StatusCode::OK, "{b1}");
    assert_eq!(
        (s2, b2["code"].as_str()),
        (StatusCode::CONFLICT, Some("transaction_committed")),
        "{b2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_a_commit_in_flight_loses_with_409_transaction_committed() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let commit = commit_in_flight(&n, &t, Some("k-2")).await;
    // "The commit timed out, so abort to be safe."
    let abort = n.spawn_call("POST", paths::txn_abort(&t), None);
    until_answered_or_waiting(&n, &t, &abort).await;
    n.gate.release();
    let (sc, bc) = commit.await.unwrap();
    let (sa, ba) = abort.await.unwrap();
    assert_eq!(sc, StatusCode::OK, "{bc}");
    // Before the fix: 204, although the commit is applied.
    assert_eq!(
        (sa, ba["code"].as_str()),
        (StatusCode::CONFLICT, Some("transaction_committed")),
        "{ba}"
    );
    assert_eq!(ba["retryable"], false);
    // Asked again later, the answer is the same.
    let (sa, ba) = n.call("POST", &paths::txn_abort(&t), None, None).await;
    assert_eq!(
        (sa, ba["code"].as_str()),
        (StatusCode::CONFLICT, Some("transaction_committed")),
        "{ba}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_an_abort_is_409_transaction_aborted() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let (s, b) = n.call("POST", &paths::txn_abort(&t), None, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    // Before the fix: 404 unknown_transaction (for the commit); it could not tell.
    let (s, b) = n
        .call("POST", &paths::txn_commit(&t), Some("k-3"), None)
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("transaction_aborted")),
        "{b}"
    );
    // Aborting again is harmless.
    let (s, b) = n.call("POST", &paths::txn_abort(&t), None, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, _) = n.call("GET", &paths::kv_key("c"), None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_commit_retried_with_its_idempotency_key_is_a_duplicate() {
    let n = node();
    let t = n.begin(json!({"read_only": true})).await;
    let commit = paths::txn_commit(&t);
    let (s, b) = n.call("POST", &commit, Some("ro-1"), None).await;
    assert_eq!(
        (s, b["offset"].clone()),
        (StatusCode::OK, Value::Null),
        "{b}"
    );
    // The answer was lost; the client retries. Before the fix: 404.
    let (s, b) = n.call("POST", &commit, Some("ro-1"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["offset"].clone(), b["duplicate"].clone()),
        (Value::Null, json!(true))
    );
    // Another transaction (with writes) cannot take the key over. Before the fix it
    // committed under it.
    let t2 = n.increment_txn("c", 1).await;
    let (s, b) = n
        .call("POST", &paths::txn_commit(&t2), Some("ro-1"), None)
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("request_id_conflict")),
        "{b}"
    );
    let (s, _) = n.call("GET", &paths::kv_key("c"), None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_scans_cut_by_the_limit_return_next() {
    let n = node();
    let t = n.begin(json!({})).await;
    for k in ["a", "b", "c"] {
        let (s, b) = n
            .call(
                "PUT",
                &paths::txn_key(&t, k),
                None,
                Some(json!({"value": 1})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    let (s, b) = n.call("POST", &paths::txn_commit(&t), None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Outside a transaction. Before the fix: two rows and no `next`.
    let (s, page) = n
        .call(
            "GET",
            &(paths::kv() + &Query::new().push("limit", 2).finish()),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "c", "{page}");
    let (_, rest) = n
        .call(
            "GET",
            &(paths::kv() + &Query::new().push("limit", 2).push("start", "c").finish()),
            None,
            None,
        )
        .await;
    assert_eq!(rest["rows"][0]["key"], "c");
    assert!(
        rest.get("next").is_none(),
        "the last page has no next: {rest}"
    );
    let (_, all) = n
        .call(
            "GET",
            &(paths::kv() + &Query::new().push("limit", 3).finish()),
            None,
            None,
        )
        .await;
    assert!(all.get("next").is_none(), "an exact fit is not cut: {all}");

    // Inside one, own writes included.
    let t = n.begin(json!({})).await;
    let (s, b) = n
        .call(
            "PUT",
            &paths::txn_key(&t, "bb"),
            None,
            Some(json!({"value": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, page) = n
        .call(
            "GET",
            &(paths::txn_kv(&t) + &Query::new().push("limit", 2).finish()),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["next"], "bb", "{page}");
    let (_, page) = n
        .call(
            "GET",
            &(paths::txn_kv(&t) + &Query::new().push("limit", 4).finish()),
            None,
            None,
        )
        .await;
    assert!(page.get("next").is_none(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_reads_with_a_token_wait_for_the_commit_stream_and_refuse_other_tokens() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let (s, b) = n.call("POST", &paths::txn_commit(&t), None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token = b["token"].as_str().unwrap().to_string();
    let (s, b) = n
        .call(
            "GET",
            &(paths::kv_key("c") + &Query::new().push("token", &token).finish()),
            None,
            None,
        )
        .await;
    assert_eq!((s, b["value"].clone()), (StatusCode::OK, json!(1)), "{b}");

    // A token a million commits ahead is not answered at once: 504 after the bound.
    let txn_stream = n.state.opened().unwrap().log.stream("_txn").unwrap();
    let ahead = logbook_views::token_of(
        &*txn_stream,
        &[logbook_log::Position {
            partition: 0,
            offset: 1_000_000,
        }],
    )
    .encode()
    .unwrap();
    for uri in [
        paths::kv_key("c")
            + &Query::new()
                .push("token", &ahead)
                .push("timeout_ms", 50)
                .finish(),
        paths::kv()
            + &Query::new()
                .push("token", &ahead)
                .push("timeout_ms", 50)
                .finish(),
    ] {
        let (s, b) = n.call("GET", &uri, None, None).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (
                StatusCode::GATEWAY_TIMEOUT,
                Some("consistency_timeout"),
                Some("token")
            ),
            "{uri}: {b}"
        );
    }

    // A token of an append names no `_txn` position.
    let (s, b) = n.call("PUT", &paths::stream("orders"), None, None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = n
        .call(
            "POST",
            &paths::records("orders"),
            None,
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let other = b["token"].as_str().unwrap().to_string();
    for uri in [
        paths::kv_key("c") + &Query::new().push("token", &other).finish(),
        paths::kv() + &Query::new().push("token", &other).finish(),
    ] {
        let (s, b) = n.call("GET", &uri, None, None).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("invalid_token"),
                Some("token")
            ),
            "{uri}: {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_never_answers_a_snapshot_counting_a_commit_that_is_not_durable() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let commit = commit_in_flight(&n, &t, None).await;
    // The commit is certified and applied (early lock release): a new snapshot counts it.
    let begun = n.txns().stats().begun.load(Ordering::Relaxed);
    let begin = {
        let router = n.router.clone();
        tokio::spawn(
            async move { send(router, "POST", &paths::txns(), None, Some(json!({}))).await },
        )
    };
    until("the second transaction has begun", || {
        begin.is_finished() || n.txns().stats().begun.load(Ordering::Relaxed) > begun
    })
    .await;
    // The commit's fsync fails: it never becomes durable, and after a restart its offset
    // goes to another commit.
    n.gate.release_failing();
    let (sc, bc) = commit.await.unwrap();
    assert!(sc.is_server_error(), "{sc} {bc}");
    let (sb, bb) = begin.await.unwrap();
    // Before the fix: 201 with snapshot 1, counting the commit that failed.
    assert!(
        !(sb == StatusCode::CREATED && bb["snapshot"].as_u64() > Some(0)),
        "a snapshot counting a commit that is not durable was answered: {sb} {bb}"
    );
    assert_eq!(sb, StatusCode::SERVICE_UNAVAILABLE, "{bb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_answers_its_snapshot_once_the_commits_it_counts_are_durable() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let commit = commit_in_flight(&n, &t, None).await;
    let begun = n.txns().stats().begun.load(Ordering::Relaxed);
    let begin = {
        let router = n.router.clone();
        tokio::spawn(
            async move { send(router, "POST", &paths::txns(), None, Some(json!({}))).await },
        )
    };
    until("the second transaction has begun", || {
        begin.is_finished() || n.txns().stats().begun.load(Ordering::Relaxed) > begun
    })
    .await;
    n.gate.release();
    let (sc, bc) = commit.await.unwrap();
    assert_eq!(sc, StatusCode::OK, "{bc}");
    let (sb, bb) = begin.await.unwrap();
    assert_eq!(sb, StatusCode::CREATED, "{bb}");
    // Not lowered: it still sees the commit.
    assert_eq!(bb["snapshot"].as_u64(), Some(1), "{bb}");
}

/// Ends the process if `done` is not set within 60 s: a test whose failure mode is a
/// deadlock of the runtime (every worker blocked) cannot fail through the runtime's timers.
fn watchdog(what: &'static str) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        for _ in 0..600 {
            if flag.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("deadlock: {what} did not finish within 60 s");
        std::process::exit(101);
    });
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_retries_of_an_in_flight_one_shot_commit_than_workers_all_answer_the_original() {
    let done = watchdog("retries of an in-flight one-shot commit");
    let n = node();
    let body = json!({ "writes": [{ "op": "increment", "key": "h", "by": 1 }] });
    let commit = |body: Value| {
        let router = n.router.clone();
        tokio::spawn(async move {
            send(router, "POST", &paths::commits(), Some("k-h"), Some(body)).await
        })
    };
    n.gate.hold();
    let first = commit(body.clone());
    until_waiting(&n.gate, 1).await;
    // More retries than async workers. Before the fix each waited for the original on a
    // worker, so none was left to settle the original: the server hung, health included.
    let retries: Vec<_> = (0..4).map(|_| commit(body.clone())).collect();
    let waits = || n.txns().stats().request_id_waits.load(Ordering::Relaxed);
    until("every retry waits for the original", || waits() >= 4).await;
    n.gate.release();
    let (s1, b1) = first.await.unwrap();
    assert_eq!(s1, StatusCode::OK, "{b1}");
    for retry in retries {
        let (s, b) = retry.await.unwrap();
        assert_eq!((s, &b["duplicate"]), (StatusCode::OK, &json!(true)), "{b}");
        assert_eq!(b["offset"], b1["offset"], "{b}");
    }
    let (s, row) = n.call("GET", &paths::kv_key("h"), None, None).await;
    assert_eq!(
        (s, row["value"].clone()),
        (StatusCode::OK, json!(1)),
        "applied once"
    );
    done.store(true, Ordering::Release);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_racing_a_commit_that_fails_is_not_told_the_transaction_committed() {
    let n = node();
    let t = n.increment_txn("c", 1).await;
    let commit = commit_in_flight(&n, &t, None).await;
    let put = {
        let router = n.router.clone();
        let uri = paths::txn_key(&t, "d");
        tokio::spawn(
            async move { send(router, "PUT", &uri, None, Some(json!({ "value": 1 }))).await },
        )
    };
    until_answered_or_waiting(&n, &t, &put).await;
    // The commit's fsync fails: the transaction did not commit.
    n.gate.release_failing();
    let (sc, bc) = commit.await.unwrap();
    assert!(sc.is_server_error(), "{sc} {bc}");
    let (sp, bp) = put.await.unwrap();
    // Before the fix: 409 transaction_committed, answered while the commit was in flight.
    assert_ne!(bp["code"], "transaction_committed", "{sp} {bp}");
    assert_eq!((sp, &bp["code"]), (sc, &bc["code"]), "{bp}");
}
