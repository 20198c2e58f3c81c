//! Request ids of appends over HTTP, in process: what a retry with the same
//! `Idempotency-Key` must repeat. The fingerprint covers everything the body carries —
//! values compared as canonical JSON with numbers by exact decimal value, the
//! `timestamp_ms` asked for, record headers such as a `traceparent` set in the body — but
//! not the retry's HTTP `traceparent` header. The first attempt's bytes are what is stored.
//! Each test failed before the fix of the defect it names.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

mod common;

use axum::http::StatusCode;
use common::{Node, node, send_with};
use logbook_api::paths::{self, Query};
use serde_json::{Value, json};

const TP_A: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TP_B: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Appends `body` (raw JSON text, so numbers keep their spelling) with request id `key`.
async fn append(n: &Node, key: &str, traceparent: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut headers = vec![("Idempotency-Key", key)];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    send_with(
        n.router.clone(),
        "POST",
        &paths::records("ev"),
        &headers,
        Some(body),
    )
    .await
}

async fn stream(n: &Node) {
    let (s, b) = send_with(n.router.clone(), "PUT", &paths::stream("ev"), &[], None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn records(n: &Node) -> Vec<Value> {
    let (s, b) = send_with(n.router.clone(), "GET", &paths::records("ev"), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["records"].as_array().unwrap().clone()
}

/// The stored value of record `offset` as the server sent it.
async fn stored_value_text(n: &Node, offset: u64) -> String {
    let resp = tower::ServiceExt::oneshot(
        n.router.clone(),
        axum::http::Request::builder()
            .uri(
                paths::records("ev") + &Query::new().push("from", offset).push("limit", 1).finish(),
            )
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let at = text.find("\"value\":").unwrap() + "\"value\":".len();
    text[at..].split([',', '}']).next().unwrap().to_string()
}

fn assert_conflict((s, b): (StatusCode, Value), what: &str) {
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("request_id_conflict")),
        "{what}: {b}"
    );
}

fn assert_duplicate((s, b): (StatusCode, Value), what: &str) {
    assert_eq!(
        (s, b["duplicate"].clone()),
        (StatusCode::OK, json!(true)),
        "{what}: {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_compare_by_exact_decimal_value_and_the_first_attempts_bytes_are_stored() {
    let n = node();
    stream(&n).await;
    let (s, b) = append(&n, "n-1", None, r#"{"value": {"b": 1.0, "a": [1e2, -0]}}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Before the fix: 409 (1.0 is not 1, 1e2 is not 100).
    assert_duplicate(
        append(&n, "n-1", None, r#"{"value": {"a": [100, 0], "b": 1}}"#).await,
        "the same value spelled otherwise",
    );
    assert_conflict(
        append(&n, "n-1", None, r#"{"value": {"a": [100, 0], "b": 1.5}}"#).await,
        "another value",
    );
    // Distinct integers beyond 2^53 (equal as doubles). Before the fix: a duplicate. (Beyond
    // 64 bits an integer is not I-JSON, refused.)
    let (s, b) = append(&n, "n-2", None, r#"{"value": 18446744073709551615}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_conflict(
        append(&n, "n-2", None, r#"{"value": 18446744073709551614}"#).await,
        "a distinct integer",
    );
    let stored = records(&n).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["value"], json!({"a": [100, 0], "b": 1}));
    // Every digit kept (before the fix: stored as 1.8446744073709552e19). The body is read
    // as text: a `Value` would round the number.
    assert_eq!(stored_value_text(&n, 1).await, "18446744073709551615");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_another_timestamp_is_a_conflict() {
    let n = node();
    stream(&n).await;
    let t = now_ms();
    let body = |t: i64| format!(r#"{{"value": 1, "timestamp_ms": {t}}}"#);
    let (s, b) = append(&n, "t-1", None, &body(t)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_duplicate(
        append(&n, "t-1", None, &body(t)).await,
        "the same timestamp",
    );
    // Before the fix: a silent duplicate, the second timestamp dropped.
    assert_conflict(
        append(&n, "t-1", None, &body(t - 1000)).await,
        "another timestamp",
    );
    assert_conflict(
        append(&n, "t-1", None, r#"{"value": 1}"#).await,
        "no timestamp (the server's clock) after one asked for",
    );
    let stored = records(&n).await;
    assert_eq!(
        (stored.len(), stored[0]["timestamp_ms"].as_i64()),
        (1, Some(t))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_another_traceparent_record_header_is_a_conflict_but_not_another_http_one() {
    let n = node();
    stream(&n).await;
    let body = |tp: &str| format!(r#"{{"value": 1, "headers": {{"traceparent": "{tp}"}}}}"#);
    let (s, b) = append(&n, "h-1", Some(TP_A), &body(TP_A)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // The HTTP traceparent of a retry may differ: it traces the retry.
    assert_duplicate(
        append(&n, "h-1", Some(TP_B), &body(TP_A)).await,
        "another HTTP traceparent",
    );
    // Before the fix: a silent duplicate, the second body dropped.
    assert_conflict(
        append(&n, "h-1", Some(TP_A), &body(TP_B)).await,
        "another record header",
    );
    assert_conflict(
        append(&n, "h-1", None, r#"{"value": 1}"#).await,
        "no record header",
    );

    // Without a record header, the HTTP one is stamped and retries may change it.
    let (s, b) = append(&n, "h-2", Some(TP_A), r#"{"value": 2}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_duplicate(
        append(&n, "h-2", Some(TP_B), r#"{"value": 2}"#).await,
        "another HTTP traceparent",
    );
    assert_duplicate(
        append(&n, "h-2", None, r#"{"value": 2}"#).await,
        "no HTTP traceparent",
    );
    let stored = records(&n).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["headers"]["traceparent"], TP_A);
    assert_eq!(stored[1]["headers"]["traceparent"], TP_A);
}
