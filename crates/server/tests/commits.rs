//! Transactions in one round trip over HTTP (in process): `POST /v1/kv/read` and
//! `POST /v1/commits` — reads at a snapshot, a read-modify-write certified from its declared
//! reads (mixed with interactive transactions), the 422s naming the field, and request ids.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

mod common;

use axum::http::StatusCode;
use logbook_api::paths;
use serde_json::{Value, json};

use common::{Node, node};

async fn setup(n: &Node, pairs: Value) {
    let writes: Vec<Value> = pairs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"op": "put", "key": k, "value": v}))
        .collect();
    let (s, b) = n
        .call(
            "POST",
            &paths::commits(),
            None,
            Some(json!({ "writes": writes })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn read(n: &Node, body: Value) -> Value {
    let (s, b) = n.call("POST", &paths::kv_read(), None, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// One transfer as a client does it in two round trips: read both balances, then commit
/// the new ones with the reads declared.
async fn transfer(n: &Node, key: Option<&str>) -> (StatusCode, Value) {
    let r = read(n, json!({"keys": ["a", "b"]})).await;
    let a = r["keys"][0]["value"].as_i64().unwrap();
    let b = r["keys"][1]["value"].as_i64().unwrap();
    let body = json!({
        "snapshot": r["snapshot"],
        "reads": [{"key": "a", "version": r["keys"][0]["version"]},
                  {"key": "b", "version": r["keys"][1]["version"]}],
        "writes": [{"op": "put", "key": "a", "value": a - 10},
                   {"op": "put", "key": "b", "value": b + 10}],
    });
    n.call("POST", &paths::commits(), key, Some(body)).await
}

async fn value(n: &Node, key: &str) -> Value {
    let (s, b) = n.call("GET", &paths::kv_key(key), None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["value"].clone()
}

#[tokio::test]
async fn a_read_at_a_snapshot_returns_values_versions_next_and_the_snapshot() {
    let n = node();
    setup(
        &n,
        json!({"a": 1, "item:1": "x", "item:2": "y", "item:3": "z"}),
    )
    .await;
    let r = read(
        &n,
        json!({"keys": ["a", "missing"], "ranges": [{"prefix": "item:", "limit": 2}]}),
    )
    .await;
    assert_eq!(r["snapshot"], 1);
    assert_eq!(r["keys"][0], json!({"key": "a", "value": 1, "version": 0}));
    assert_eq!(
        r["keys"][1],
        json!({"key": "missing", "value": null, "version": null})
    );
    let rows = &r["ranges"][0];
    assert_eq!(rows["rows"].as_array().unwrap().len(), 2);
    assert_eq!(rows["next"], "item:3");
    // A later commit does not change what the same snapshot reads.
    setup(&n, json!({"a": 2})).await;
    let again = read(&n, json!({"keys": ["a"], "snapshot": 1})).await;
    assert_eq!(again["keys"][0]["value"], 1);
    let (s, b) = n
        .call(
            "POST",
            &paths::kv_read(),
            None,
            Some(json!({"snapshot": 99})),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("unprocessable_request"),
            Some("snapshot")
        ),
        "{b}"
    );
}

#[tokio::test]
async fn a_read_modify_write_in_two_round_trips_is_certified_from_its_declared_reads() {
    let n = node();
    setup(&n, json!({"a": 100, "b": 0})).await;
    // Two clients read the same snapshot; the second commit is a lost update: refused.
    let r = read(&n, json!({"keys": ["a"]})).await;
    let commit = |v: i64| {
        json!({
            "isolation": "snapshot",
            "snapshot": r["snapshot"],
            "reads": [{"key": "a", "version": r["keys"][0]["version"]}],
            "writes": [{"op": "put", "key": "a", "value": v}],
        })
    };
    let (s, b) = n
        .call("POST", &paths::commits(), None, Some(commit(101)))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["offset"], 1);
    assert!(b["token"].is_string());
    let (s, b) = n
        .call("POST", &paths::commits(), None, Some(commit(102)))
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["retryable"].as_bool()),
        (
            StatusCode::CONFLICT,
            Some("serialization_failure"),
            Some(true)
        ),
        "{b}"
    );
    assert_eq!(value(&n, "a").await, 101);
}

#[tokio::test]
async fn a_one_shot_commit_conflicts_with_an_interactive_transaction() {
    let n = node();
    setup(&n, json!({"x": 10, "y": 20})).await;
    // Write skew at serializable: the interactive transaction reads x, y and writes y; the
    // one-shot one reads x, y and writes x.
    let t = n.begin(json!({"isolation": "serializable"})).await;
    for k in ["x", "y"] {
        let (s, b) = n.call("GET", &paths::txn_key(&t, k), None, None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, _) = n
        .call(
            "PUT",
            &paths::txn_key(&t, "y"),
            None,
            Some(json!({"value": -5})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = read(&n, json!({"keys": ["x", "y"]})).await;
    let body = json!({
        "snapshot": r["snapshot"],
        "reads": [{"key": "x", "version": r["keys"][0]["version"]},
                  {"key": "y", "version": r["keys"][1]["version"]}],
        "writes": [{"op": "put", "key": "x", "value": -15}],
    });
    let (s, b) = n.call("POST", &paths::commits(), None, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = n.call("POST", &paths::txn_commit(&t), None, None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("serialization_failure")),
        "{b}"
    );
    assert_eq!(value(&n, "y").await, 20);
}

#[tokio::test]
async fn unprocessable_commit_requests_name_the_field_and_change_nothing() {
    let n = node();
    setup(&n, json!({"a": 1})).await;
    let cases = [
        (
            json!({"snapshot": 1, "reads": [{"key": "z", "version": null}, {"key": "a", "version": 5}],
                   "writes": [{"op": "put", "key": "a", "value": 2}]}),
            "reads[1].version",
        ),
        (
            json!({"snapshot": 7, "writes": [{"op": "put", "key": "a", "value": 2}]}),
            "snapshot",
        ),
        (
            json!({"writes": [{"op": "put", "key": "a", "value": 2}, {"op": "delete", "key": "a"}]}),
            "writes[1].key",
        ),
        (
            json!({"read_only": true, "writes": [{"op": "increment", "key": "a", "by": 1}]}),
            "writes[0]",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = n.call("POST", &paths::commits(), None, Some(body)).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("unprocessable_request"),
                Some(field)
            ),
            "{b}"
        );
    }
    // Shape errors are 400, naming the member.
    let (s, b) = n
        .call(
            "POST",
            &paths::commits(),
            None,
            Some(json!({"writes": [{"op": "increment", "key": "a"}]})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("writes[0].by"))
    );
    assert_eq!(value(&n, "a").await, 1, "nothing changed");
}

#[tokio::test]
async fn a_one_shot_commit_retried_with_its_key_is_answered_with_the_original() {
    let n = node();
    setup(&n, json!({"a": 100, "b": 0})).await;
    let (s, first) = transfer(&n, Some("transfer-1")).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    // The answer was lost; the client re-runs read and commit with the same key.
    let (s, retry) = transfer(&n, Some("transfer-1")).await;
    assert_eq!(s, StatusCode::OK, "{retry}");
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["offset"], first["offset"]);
    assert_eq!(value(&n, "a").await, 90, "applied once");
}

#[tokio::test]
async fn a_one_shot_commit_that_failed_is_certified_afresh_on_retry() {
    let n = node();
    setup(&n, json!({"a": 100, "b": 0})).await;
    let r = read(&n, json!({"keys": ["a"]})).await;
    setup(&n, json!({"a": 50})).await; // a concurrent write
    let stale = json!({
        "snapshot": r["snapshot"],
        "reads": [{"key": "a", "version": r["keys"][0]["version"]}],
        "writes": [{"op": "put", "key": "a", "value": 90}],
    });
    let (s, b) = n
        .call("POST", &paths::commits(), Some("transfer-2"), Some(stale))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = transfer(&n, Some("transfer-2")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("duplicate").is_none(), "a new commit: {b}");
    assert_eq!(value(&n, "a").await, 40);
}

#[tokio::test]
async fn atomic_operations_need_one_round_trip() {
    let n = node();
    let body = json!({"writes": [{"op": "increment", "key": "n", "by": 5},
                                 {"op": "put", "key": "h:1", "value": {"x": 1}, "if_absent": true}]});
    let (s, b) = n
        .call("POST", &paths::commits(), None, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["incremented"], json!({"n": 5}));
    let (s, b) = n.call("POST", &paths::commits(), None, Some(body)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("key_exists"))
    );
    assert_eq!(
        value(&n, "n").await,
        5,
        "the failed request changed nothing"
    );
}

/// `POST /v1/kv/read` takes the path; the key named `read` stays readable with `GET`.
#[tokio::test]
async fn the_key_named_read_is_still_readable() {
    let n = node();
    setup(&n, json!({"read": "still here"})).await;
    assert_eq!(value(&n, "read").await, "still here");
}
