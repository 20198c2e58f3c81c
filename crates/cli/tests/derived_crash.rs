//! Derived streams under SIGKILL (decision 0031): a chain of two derived streams —
//! `orders` → (paid orders, re-keyed by customer) → `by_customer` → (the big ones) → `big` —
//! runs in a real `logbook serve` that is killed at random moments while orders arrive, and
//! restarted on the same data directory. At the end every output is in its target exactly
//! once and the targets equal a model computed from what `orders` holds. The targets
//! remember only 2 request ids each, so exactly-once cannot come from the request-id
//! window: it comes from the processors reading their own output back. A second kill loop
//! runs the uniqueness constraint (signups → claims by username → one outcome per claim)
//! against a serial model. The seed is printed; `DERIVED_CRASH_SEED=<n>` replays a run.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::api::call;
use common::derived::{LIVES, create_streams, killed_lives, read_all, seed, wait_caught_up};
use logbook_api::client::blocking::Client;
use logbook_api::paths;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const PAID: &str = "paid_by_customer";
const BIG: &str = "big_paid";

fn specs() -> [(&'static str, Value); 2] {
    [
        (
            PAID,
            json!({"source": "orders", "target": "by_customer",
                   "filter": {"field": "status", "op": "eq", "value": "paid"},
                   "fields": ["i", "customer", "total"], "key_by": ["customer"]}),
        ),
        (
            BIG,
            json!({"source": "by_customer", "target": "big",
                   "filter": {"field": "total", "op": "ge", "value": 500},
                   "fields": ["i", "total"]}),
        ),
    ]
}

/// Appends orders (numbered from `next`) until `stop`, ignoring failures (the server is
/// killed under it: what landed is whatever `orders` holds at the end).
fn append_orders(client: Client, seed: u64, next: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let records: Vec<Value> = (0..rng.gen_range(1..60))
            .map(|_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let status = if rng.gen_range(0..3) == 0 { "open" } else { "paid" };
                json!({"key": format!("order-{i}"), "value": {"i": i, "status": status,
                    "customer": format!("c{}", rng.gen_range(0..40)), "total": rng.gen_range(0..1000)}})
            })
            .collect();
        let body = json!({ "records": records });
        if common::api::send(
            &client,
            common::api::request("POST", &paths::records("orders"), Some(&body)),
        )
        .is_err()
        {
            return;
        }
    }
}

#[test]
fn every_output_exactly_once_through_sigkills() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_streams(
        &data,
        &[
            ("orders", 3, false),
            ("by_customer", 4, true),
            ("big", 2, true),
        ],
    );
    let serve = common::spawn_serve(&data, &[], &[], Stdio::null());
    for (name, spec) in specs() {
        let (status, body) = call(
            &serve.client(),
            "PUT",
            &paths::derived_stream(name),
            Some(&spec),
        );
        assert_eq!(status, 201, "{name}: {body}");
    }
    let next = Arc::new(AtomicU64::new(0));
    let serve = {
        let next = next.clone();
        killed_lives(serve, &data, seed, 1, move |client, seed, stop| {
            append_orders(client, seed, next.clone(), stop)
        })
    };
    let client = serve.client();
    wait_caught_up(&client, &[PAID, BIG]);
    eprintln!(
        "{} orders sent over {LIVES} lives",
        next.load(Ordering::Relaxed)
    );

    // The model, from what `orders` holds.
    let orders = read_all(&client, "orders", 3);
    let paid: BTreeMap<u64, &Value> = orders
        .iter()
        .filter(|(_, _, _, v)| v["status"] == "paid")
        .map(|(_, _, _, v)| (v["i"].as_u64().unwrap(), v))
        .collect();
    assert!(!paid.is_empty(), "seed {seed}: no paid order landed");
    // First link: each paid order once, projected, keyed by its customer, in its partition.
    let by_customer = read_all(&client, "by_customer", 4);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (p, _, key, v) in &by_customer {
        let i = v["i"].as_u64().unwrap();
        *seen.entry(i).or_default() += 1;
        let order = paid
            .get(&i)
            .unwrap_or_else(|| panic!("seed {seed}: output {v} of no paid order"));
        assert_eq!(
            v,
            &json!({"i": i, "customer": order["customer"], "total": order["total"]}),
            "seed {seed}"
        );
        assert_eq!(key.as_deref(), order["customer"].as_str(), "seed {seed}");
        assert_eq!(
            *p,
            logbook_log::partition_for_key(key.as_ref().unwrap().as_bytes(), 4),
            "seed {seed}"
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: orders emitted more than once: {twice:?}"
    );
    assert_eq!(
        seen.len(),
        paid.len(),
        "seed {seed}: paid orders missing from by_customer"
    );
    // Second link: the big ones, once each, keys kept.
    let big = read_all(&client, "big", 2);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, _, key, v) in &big {
        let i = v["i"].as_u64().unwrap();
        *seen.entry(i).or_default() += 1;
        let order = paid[&i];
        assert_eq!(v, &json!({"i": i, "total": order["total"]}), "seed {seed}");
        assert_eq!(key.as_deref(), order["customer"].as_str(), "seed {seed}");
    }
    let want: Vec<u64> = paid
        .iter()
        .filter(|(_, o)| o["total"].as_i64().unwrap() >= 500)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        want,
        "seed {seed}: big"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "seed {seed}: big orders emitted more than once"
    );
}

const CLAIMS: &str = "claims_by_username";
const USERNAMES: &str = "unique_usernames";
/// Usernames the claimants pick from: few enough that most are claimed many times.
const USERNAMES_N: u32 = 300;

/// Appends signups (numbered from `next`, each keyed by its id, so rival claims land in
/// different `signups` partitions) until `stop`, ignoring failures.
fn append_signups(client: Client, seed: u64, next: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let records: Vec<Value> = (0..rng.gen_range(1..40))
            .map(|_| {
                let s = format!("s-{}", next.fetch_add(1, Ordering::Relaxed));
                json!({"key": s, "value": {"signup": s,
                    "username": format!("u{}", rng.gen_range(0..USERNAMES_N))}})
            })
            .collect();
        let body = json!({ "records": records });
        if common::api::send(
            &client,
            common::api::request("POST", &paths::records("signups"), Some(&body)),
        )
        .is_err()
        {
            return;
        }
    }
}

/// Issue 21, eventual uniqueness: signups claim usernames concurrently on 4 partitions; a
/// derived stream repartitions the claims by username, the constraint gives each claim one
/// outcome. Killed 6 times. At the end each username has exactly one winner, every other
/// claim exactly one rejection naming it, and the outcomes equal a serial model that takes
/// the claims in the repartitioned stream's offset order.
#[test]
fn unique_usernames_compensated_exactly_once_through_sigkills() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_streams(
        &data,
        &[
            ("signups", 4, false),
            ("claims", 3, true),
            ("outcomes", 2, true),
        ],
    );
    let serve = common::spawn_serve(&data, &[], &[], Stdio::null());
    for (name, spec) in [
        (
            CLAIMS,
            json!({"source": "signups", "target": "claims", "key_by": ["username"]}),
        ),
        (
            USERNAMES,
            json!({"source": "claims", "target": "outcomes", "unique": ["username"],
                   "fields": ["signup"], "key_by": ["signup"]}),
        ),
    ] {
        let (status, body) = call(
            &serve.client(),
            "PUT",
            &paths::derived_stream(name),
            Some(&spec),
        );
        assert_eq!(status, 201, "{name}: {body}");
    }
    let next = Arc::new(AtomicU64::new(0));
    let serve = {
        let next = next.clone();
        killed_lives(serve, &data, seed, 3, move |client, seed, stop| {
            append_signups(client, seed, next.clone(), stop)
        })
    };
    let client = serve.client();
    wait_caught_up(&client, &[CLAIMS, USERNAMES]);
    eprintln!(
        "{} signups sent over {LIVES} lives",
        next.load(Ordering::Relaxed)
    );

    let signups = read_all(&client, "signups", 4);
    let claims = read_all(&client, "claims", 3);
    assert_eq!(
        claims.len(),
        signups.len(),
        "seed {seed}: every signup claims once"
    );
    // The serial model: per claims partition, in offset order, the first claim of a name wins.
    let mut winners: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut want: BTreeMap<String, Value> = BTreeMap::new();
    for (_, offset, key, v) in &claims {
        let (name, signup) = (
            v["username"].as_str().unwrap(),
            v["signup"].as_str().unwrap(),
        );
        assert_eq!(
            key.as_deref(),
            Some(name),
            "seed {seed}: claims are keyed by username"
        );
        let mut outcome = json!({"outcome": "accepted", "unique": name, "offset": offset,
            "claim": {"signup": signup}});
        match winners.get(name) {
            None => {
                winners.insert(name.to_string(), (*offset, signup.to_string()));
            }
            Some((o, s)) => {
                outcome["outcome"] = json!("rejected");
                outcome["taken_by"] = json!({"offset": o, "key": s});
            }
        }
        assert!(
            want.insert(signup.to_string(), outcome).is_none(),
            "seed {seed}: {signup} claimed twice"
        );
    }
    let rejected = want.values().filter(|o| o["outcome"] == "rejected").count();
    assert!(rejected > 0, "seed {seed}: no claim was contested");
    let mut got: BTreeMap<String, Value> = BTreeMap::new();
    for (p, _, key, v) in read_all(&client, "outcomes", 2) {
        let signup = key.unwrap();
        assert_eq!(
            p,
            logbook_log::partition_for_key(signup.as_bytes(), 2),
            "seed {seed}"
        );
        if let Some(before) = got.insert(signup.clone(), v.clone()) {
            panic!("seed {seed}: {signup} has two outcomes: {before} and {v}");
        }
    }
    let accepted: Vec<&Value> = got
        .values()
        .filter(|o| o["outcome"] == "accepted")
        .collect();
    assert_eq!(
        accepted.len(),
        winners.len(),
        "seed {seed}: one winner per claimed username"
    );
    assert_eq!(
        got, want,
        "seed {seed}: the outcomes are the serial model's"
    );
    eprintln!(
        "{} claims of {} usernames: {rejected} compensated",
        claims.len(),
        winners.len()
    );
}

#[test]
fn specs_are_checked_and_cycles_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(&dir.path().join("data"), &[], &[], Stdio::null());
    let client = serve.client();
    for s in ["a", "b", "c"] {
        let (status, _) = call(
            &client,
            "PUT",
            &paths::stream(s),
            Some(&json!({"partitions": 2})),
        );
        assert_eq!(status, 201);
    }
    let put =
        |name: &str, spec: Value| call(&client, "PUT", &paths::derived_stream(name), Some(&spec));
    for (spec, field) in [
        (json!({"source": "a", "target": "nope"}), "target"),
        (json!({"source": "nope", "target": "a"}), "source"),
        (
            json!({"source": "a", "target": "b", "fields": []}),
            "fields",
        ),
        (
            json!({"source": "a", "target": "b", "filter": {"field": "x", "op": "zz", "value": 1}}),
            "filter.op",
        ),
        (json!({"source": "a"}), "target"),
    ] {
        let (status, body) = put("d", spec.clone());
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (400, Some("invalid_derived_spec"), Some(field)),
            "{spec}: {body}"
        );
    }
    assert_eq!(put("ab", json!({"source": "a", "target": "b"})).0, 201);
    assert_eq!(
        put("ab", json!({"source": "a", "target": "b"})).0,
        200,
        "the same spec again"
    );
    let (status, body) = put("ab", json!({"source": "a", "target": "c"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("derived_stream_exists")),
        "{body}"
    );
    assert_eq!(put("bc", json!({"source": "b", "target": "c"})).0, 201);
    // c → a would close a → b → c → a; a stream into itself is allowed.
    let (status, body) = put("ca", json!({"source": "c", "target": "a"}));
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid_derived_spec"), Some("target")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("c → a → b → c"),
        "{body}"
    );
    assert_eq!(
        put("cc", json!({"source": "c", "target": "c", "key_by": ["x"]})).0,
        201
    );
    let (status, body) = call(&client, "GET", &paths::derived_streams(), None);
    assert_eq!(status, 200);
    let names: Vec<&str> = body["derived_streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ab", "bc", "cc"]);
    // Dropped: gone, and the cycle it was part of may now be closed the other way.
    assert_eq!(
        call(&client, "DELETE", &paths::derived_stream("bc"), None).0,
        204
    );
    let (status, body) = call(&client, "GET", &paths::derived_stream("bc"), None);
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_derived_stream"))
    );
    assert_eq!(put("ca", json!({"source": "c", "target": "a"})).0, 201);
}
