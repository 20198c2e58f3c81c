//! Stream info over HTTP says what an acknowledged append guarantees (`ack_guarantee`,
//! issue 13): on a single node one copy, fsynced only under fsync `always`.

mod common;

use axum::http::StatusCode;
use common::node;
use logbook_api::paths;
use serde_json::json;

#[tokio::test]
async fn stream_info_reports_the_acknowledgment_guarantee_per_fsync_policy() {
    let n = node();
    for (name, fsync, fsynced) in [
        ("a", "always", true),
        ("b", "interval:100", false),
        ("c", "never", false),
    ] {
        let (s, b) = n
            .call(
                "PUT",
                &paths::stream(name),
                None,
                Some(json!({ "partitions": 2, "fsync": fsync })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let expected = json!({ "replicas": 1, "fsynced": fsynced });
        assert_eq!(b["ack_guarantee"], expected, "{name}: {b}");
        let (s, b) = n.call("GET", &paths::stream(name), None, None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["ack_guarantee"], expected, "{name}: {b}");
    }
    let (s, b) = n.call("GET", &paths::streams(), None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let listed: Vec<(String, bool)> = b["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["stream"].as_str().unwrap().starts_with('_'))
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["ack_guarantee"]["fsynced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("a".into(), true), ("b".into(), false), ("c".into(), false)]
    );
}
