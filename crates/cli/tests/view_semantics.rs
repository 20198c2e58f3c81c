//! Event versus table semantics of aggregates, through a real `logbook serve`: one stream of
//! clicks keyed by user, two aggregates over it that differ only in `semantics`, checked
//! against two models computed here from what was appended — `events` counts every click,
//! `table` (the default) each user's latest one. The server is SIGKILLed halfway and
//! restarted on its data directory, so the processors replay from their checkpoints: an
//! event counted twice would show. The seed is printed; `VIEW_SEMANTICS_SEED=<n>` replays a
//! run.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use common::api::call;
use logbook_api::paths;
use logbook_api::token::ConsistencyToken;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Clicks per page and their total duration, every click counted.
const EVENTS: &str = r#"{"source":"clicks","kind":"aggregate","semantics":"events",
  "group_by":["page"],"aggregates":{"clicks":{"fn":"count"},"ms":{"fn":"sum","field":"ms"}}}"#;
/// The same aggregate under the default semantics: each user's latest click.
const TABLE: &str = r#"{"source":"clicks","kind":"aggregate",
  "group_by":["page"],"aggregates":{"clicks":{"fn":"count"},"ms":{"fn":"sum","field":"ms"}}}"#;

const USERS: u64 = 16;
const BATCHES: usize = 40;

/// A record: the user (its key) and its value (`None`: JSON null, a delete under table
/// semantics, not counted under event semantics).
type Click = (String, Option<Value>);

fn click(rng: &mut rand::rngs::StdRng) -> Click {
    let user = format!("u{}", rng.gen_range(0..USERS));
    let value = (rng.gen_range(0..100) >= 15).then(
        || json!({"page": format!("p{}", rng.gen_range(0..5)), "ms": rng.gen_range(0..1000)}),
    );
    (user, value)
}

/// The rows an aggregate with `semantics` shows after `clicks`, by page.
fn model(clicks: &[Click], events: bool) -> BTreeMap<String, Value> {
    let counted: Vec<&Value> = if events {
        clicks.iter().filter_map(|(_, v)| v.as_ref()).collect()
    } else {
        let mut latest: BTreeMap<&str, Option<&Value>> = BTreeMap::new();
        for (user, v) in clicks {
            latest.insert(user, v.as_ref());
        }
        latest.into_values().flatten().collect()
    };
    let mut rows: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for v in counted {
        let row = rows
            .entry(v["page"].as_str().unwrap().to_string())
            .or_default();
        row.0 += 1;
        row.1 += v["ms"].as_i64().unwrap();
    }
    rows.into_iter()
        .map(|(page, (n, ms))| {
            let row = json!({"page": page, "clicks": n, "ms": ms});
            (page, row)
        })
        .collect()
}

/// Every row of `view` once it has applied `token`.
fn rows(
    client: &logbook_api::client::blocking::Client,
    view: &str,
    token: &str,
) -> BTreeMap<String, Value> {
    let path = format!("{}?limit=100&token={token}", paths::view_rows(view));
    let (status, body) = call(client, "GET", &path, None);
    assert_eq!(status, 200, "{body}");
    assert!(body["next"].is_null(), "one page holds every page's row");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect()
}

#[test]
fn aggregates_count_every_event_or_each_keys_latest_record() {
    let seed = std::env::var("VIEW_SEMANTICS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u64>());
    eprintln!("VIEW_SEMANTICS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = common::spawn_serve(&data, &[], &[], Stdio::null());
    let mut client = serve.client();
    let (status, body) = call(
        &client,
        "PUT",
        &paths::stream("clicks"),
        Some(&json!({"partitions": 3})),
    );
    assert_eq!(status, 201, "{body}");
    for (view, spec) in [("by_page_events", EVENTS), ("by_page_table", TABLE)] {
        let spec: Value = serde_json::from_str(spec).unwrap();
        let (status, body) = call(&client, "PUT", &paths::view(view), Some(&spec));
        assert_eq!(status, 201, "{view}: {body}");
    }
    let mut clicks: Vec<Click> = Vec::new();
    let mut token = ConsistencyToken::default();
    for batch in 0..BATCHES {
        if batch == BATCHES / 2 {
            // Halfway: SIGKILL, then the same data directory again (processors replay).
            drop(serve);
            serve = common::spawn_serve(&data, &[], &[], Stdio::null());
            client = serve.client();
        }
        let records: Vec<Click> = (0..rng.gen_range(1..30)).map(|_| click(&mut rng)).collect();
        let body = json!({"records": records.iter().map(|(user, v)| {
            json!({"key": user, "value": v.clone().unwrap_or(Value::Null)})
        }).collect::<Vec<_>>()});
        let (status, answer) = call(&client, "POST", &paths::records("clicks"), Some(&body));
        assert_eq!(status, 201, "{answer}");
        token.merge(&ConsistencyToken::decode(answer["token"].as_str().unwrap()).unwrap());
        clicks.extend(records);
    }
    let token = token.encode().unwrap();
    let events = rows(&client, "by_page_events", &token);
    let table = rows(&client, "by_page_table", &token);
    assert_eq!(
        events,
        model(&clicks, true),
        "events semantics, seed {seed}"
    );
    assert_eq!(table, model(&clicks, false), "table semantics, seed {seed}");
    let counted = |rows: &BTreeMap<String, Value>| -> u64 {
        rows.values().map(|r| r["clicks"].as_u64().unwrap()).sum()
    };
    assert!(
        counted(&events) > counted(&table),
        "users clicked more than once: events count more than the users' latest clicks"
    );
}

#[test]
fn semantics_is_checked_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(&dir.path().join("data"), &[], &[], Stdio::null());
    let client = serve.client();
    let (status, _) = call(
        &client,
        "PUT",
        &paths::stream("clicks"),
        Some(&json!({"partitions": 1})),
    );
    assert_eq!(status, 201);
    // `events` is for aggregates: a table shows each key's latest record by definition.
    for spec in [
        json!({"source": "clicks", "kind": "table", "semantics": "events"}),
        json!({"source": "clicks", "kind": "index", "on": ["page"], "semantics": "events"}),
        json!({"source": "clicks", "kind": "aggregate", "semantics": "stream",
               "aggregates": {"n": {"fn": "count"}}}),
    ] {
        let (status, body) = call(&client, "PUT", &paths::view("v"), Some(&spec));
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (400, Some("invalid_view_spec"), Some("semantics")),
            "{spec}: {body}"
        );
    }
    let (status, body) = call(&client, "GET", &paths::views(), None);
    assert_eq!(
        (status, body["views"].as_array().map(Vec::len)),
        (200, Some(0)),
        "refused specs create nothing: {body}"
    );
    // The view's spec shows `events`; naming the default is the same spec as leaving it out.
    let events: Value = serde_json::from_str(EVENTS).unwrap();
    let (status, body) = call(&client, "PUT", &paths::view("e"), Some(&events));
    assert_eq!(
        (status, body["spec"]["semantics"].as_str()),
        (201, Some("events")),
        "{body}"
    );
    let table: Value = serde_json::from_str(TABLE).unwrap();
    let (status, body) = call(&client, "PUT", &paths::view("t"), Some(&table));
    assert_eq!(
        (status, body["spec"].get("semantics")),
        (201, None),
        "{body}"
    );
    let mut named = table.clone();
    named["semantics"] = json!("table");
    let (status, body) = call(&client, "PUT", &paths::view("t"), Some(&named));
    assert_eq!(status, 200, "the same spec: {body}");
    let (status, body) = call(&client, "PUT", &paths::view("e"), Some(&named));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("view_exists")),
        "{body}"
    );
}
