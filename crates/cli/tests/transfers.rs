//! Money transfers without two-phase commit (issue 21 item 3), under SIGKILL: `transfers`
//! (requests keyed by id) → a derived stream keys each by its `from` account into `ledger`
//! → the ledger processor (`"ledger": true`, serial per partition) debits or rejects and
//! sends a credit instruction into the `to` account's partition, which it applies in turn.
//! Two writers append transfers while the server is killed 6 times; `ledger` remembers 2
//! request ids. At the end: every transfer has exactly one outcome, every output is the
//! one a serial model of each ledger partition makes (no balance ever negative), money is
//! neither made nor lost, and the balances view equals the model's balances. The seed is
//! printed; `DERIVED_CRASH_SEED=<n>` replays a run.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::api::call;
use common::derived::{LIVES, create_streams, killed_lives, read_all, seed, wait_caught_up};
use logbook_api::client::blocking::Client;
use logbook_api::paths;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ACCOUNTS: u32 = 40;
const OPENING: i64 = 1_000;
const LEDGER_PARTITIONS: u32 = 4;
const REQUESTS: &str = "transfer_requests";
const ACCOUNTS_PROCESSOR: &str = "accounts";
const BALANCES: &str = "balances";

/// Appends transfers (numbered from `next`, keyed by their id) until `stop`, ignoring
/// failures.
fn append_transfers(client: Client, seed: u64, next: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let records: Vec<Value> = (0..rng.gen_range(1..40))
            .map(|_| {
                let id = format!("t-{}", next.fetch_add(1, Ordering::Relaxed));
                json!({"key": id, "value": {"id": id,
                    "from": format!("a{}", rng.gen_range(0..ACCOUNTS)),
                    "to": format!("a{}", rng.gen_range(0..ACCOUNTS)),
                    "amount": rng.gen_range(1..400)}})
            })
            .collect();
        let body = json!({ "records": records });
        if common::api::send(
            &client,
            common::api::request("POST", &paths::records("transfers"), Some(&body)),
        )
        .is_err()
        {
            return;
        }
    }
}

/// The serial model of one ledger partition's records in offset order: the outputs it
/// must have made, as (type, id) → count, checking that no balance goes negative.
fn model(
    records: &[&(u32, u64, Option<String>, Value)],
    balances: &mut BTreeMap<String, i64>,
    want: &mut BTreeMap<(String, String), u32>,
) {
    for (_, _, key, v) in records {
        let id = v["id"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str() {
            Some("deposit") => {
                *balances.entry(key.clone().unwrap()).or_default() += v["delta"].as_i64().unwrap();
            }
            None => {
                let (from, to) = (v["from"].as_str().unwrap(), v["to"].as_str().unwrap());
                let amount = v["amount"].as_i64().unwrap();
                let balance = balances.entry(from.to_string()).or_default();
                if from == to || *balance < amount {
                    *want.entry(("rejected".into(), id)).or_default() += 1;
                } else {
                    *balance -= amount;
                    assert!(*balance >= 0);
                    *want.entry(("debited".into(), id.clone())).or_default() += 1;
                    *want.entry(("credit".into(), id)).or_default() += 1;
                }
            }
            Some("credit") => {
                *balances.entry(key.clone().unwrap()).or_default() += v["amount"].as_i64().unwrap();
                *want.entry(("credited".into(), id)).or_default() += 1;
            }
            Some(_) => {}
        }
    }
}

/// Waits until view `name` has applied its whole source; its rows (key → value).
fn view_rows(client: &Client, name: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(client, "GET", &paths::view(name), None);
        assert_eq!(status, 200, "{body}");
        if body["status"]["lag_records"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "view {name} did not catch up: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!("{}?limit=1000", paths::view_rows(name));
    let (status, body) = call(client, "GET", &path, None);
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect()
}

#[test]
fn transfers_apply_exactly_once_without_overdraft_through_sigkills() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_streams(
        &data,
        &[("transfers", 3, false), ("ledger", LEDGER_PARTITIONS, true)],
    );
    let serve = common::spawn_serve(&data, &[], &[], Stdio::null());
    let client = serve.client();
    let deposits: Vec<Value> = (0..ACCOUNTS)
        .map(|a| {
            let account = format!("a{a}");
            json!({"key": account, "value": {"type": "deposit", "account": account, "delta": OPENING}})
        })
        .collect();
    let (status, body) = call(
        &client,
        "POST",
        &paths::records("ledger"),
        Some(&json!({ "records": deposits })),
    );
    assert_eq!(status, 201, "{body}");
    for (name, spec) in [
        (
            REQUESTS,
            json!({"source": "transfers", "target": "ledger", "key_by": ["from"]}),
        ),
        (
            ACCOUNTS_PROCESSOR,
            json!({"source": "ledger", "target": "ledger", "ledger": true}),
        ),
    ] {
        let (status, body) = call(&client, "PUT", &paths::derived_stream(name), Some(&spec));
        assert_eq!(status, 201, "{name}: {body}");
    }
    let balances_spec = json!({"source": "ledger", "kind": "aggregate", "semantics": "events",
        "filter": {"field": "delta", "op": "is_not_null"}, "group_by": ["account"],
        "aggregates": {"balance": {"fn": "sum", "field": "delta"}}});
    let (status, body) = call(&client, "PUT", &paths::view(BALANCES), Some(&balances_spec));
    assert_eq!(status, 201, "{body}");

    let next = Arc::new(AtomicU64::new(0));
    let serve = {
        let next = next.clone();
        killed_lives(serve, &data, seed, 2, move |client, seed, stop| {
            append_transfers(client, seed, next.clone(), stop)
        })
    };
    let client = serve.client();
    wait_caught_up(&client, &[REQUESTS, ACCOUNTS_PROCESSOR]);
    eprintln!(
        "{} transfers sent over {LIVES} lives",
        next.load(Ordering::Relaxed)
    );

    let transfers = read_all(&client, "transfers", 3);
    let ledger = read_all(&client, "ledger", LEDGER_PARTITIONS);
    let mut balances = BTreeMap::new();
    let mut want = BTreeMap::new();
    for p in 0..LEDGER_PARTITIONS {
        let part: Vec<_> = ledger.iter().filter(|r| r.0 == p).collect();
        model(&part, &mut balances, &mut want);
    }
    let mut got: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut requests: BTreeMap<String, u32> = BTreeMap::new();
    for (_, _, _, v) in &ledger {
        let id = v["id"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str() {
            None => *requests.entry(id).or_default() += 1,
            Some("deposit") => {}
            Some(t) => *got.entry((t.to_string(), id)).or_default() += 1,
        }
    }
    assert_eq!(
        requests.len(),
        transfers.len(),
        "seed {seed}: every request keyed into the ledger"
    );
    assert!(
        requests.values().all(|n| *n == 1),
        "seed {seed}: a request twice"
    );
    assert_eq!(
        got, want,
        "seed {seed}: the outputs are the serial model's, each once"
    );
    // One outcome per transfer: rejected, or credited.
    for (_, _, _, t) in &transfers {
        let id = t["id"].as_str().unwrap().to_string();
        let outcomes = got
            .get(&("rejected".into(), id.clone()))
            .copied()
            .unwrap_or(0)
            + got
                .get(&("credited".into(), id.clone()))
                .copied()
                .unwrap_or(0);
        assert_eq!(outcomes, 1, "seed {seed}: transfer {id}");
    }
    let rejected = got.keys().filter(|(t, _)| t == "rejected").count();
    assert!(
        rejected > 0 && rejected < transfers.len(),
        "seed {seed}: {rejected} rejected"
    );
    // Nothing in flight now: money is neither made nor lost.
    assert_eq!(
        balances.values().sum::<i64>(),
        i64::from(ACCOUNTS) * OPENING,
        "seed {seed}"
    );
    assert!(balances.values().all(|b| *b >= 0), "seed {seed}");
    let rows = view_rows(&client, BALANCES);
    let view: BTreeMap<String, i64> = rows
        .iter()
        .map(|(k, v)| (k.clone(), v["balance"].as_i64().unwrap()))
        .collect();
    assert_eq!(view, balances, "seed {seed}: the balances view");
    eprintln!(
        "{} transfers, {rejected} rejected, over {} accounts",
        transfers.len(),
        balances.len()
    );
}
