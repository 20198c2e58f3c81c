//! The benchmark's HTTP clients: one closed loop per client over its own keep-alive
//! connection, each TPC-B transaction interactive (a request per operation) or one-shot,
//! retried on `serialization_failure`. The single-node run, the cluster run and the cluster's
//! failover phase (the clients riding through the loss of a node: `link.rs`) all use them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use logbook_api::paths;
use logbook_api::problem::ProblemCode;
use logbook_txn::{Isolation, RetryPolicy};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::args::{ACCOUNTS_PER_SCALE, Form, Protocol, TELLERS_PER_SCALE, TpcbArgs};
use super::figures::{ClientTally, bar, gather};
use super::link::{Link, Riding};
use crate::bench::kit::elapsed_us;

/// Runs `--clients` client tasks for `--seconds`, client `c` on `addrs[c % addrs.len()]`;
/// each client's tallies (in client order) and the seconds the run took.
pub(super) async fn run_http_clients(
    args: &TpcbArgs,
    addrs: &[std::net::SocketAddr],
    seed: u64,
    token: Option<&str>,
) -> anyhow::Result<(Vec<ClientTally>, f64)> {
    let (tallies, seconds, ()) =
        run_http_clients_while(args, addrs, seed, token, None, timed(args.seconds)).await?;
    Ok((tallies, seconds))
}

/// Runs `--clients` client tasks as [`run_http_clients`] does, riding when `riding` is
/// given, for as long as `phase` runs; the tallies, the seconds and what `phase` returned.
///
/// # Errors
/// A client's error (the first, in client order), else `phase`'s.
pub(super) async fn run_http_clients_while<T>(
    args: &TpcbArgs,
    addrs: &[std::net::SocketAddr],
    seed: u64,
    token: Option<&str>,
    riding: Option<&Riding>,
    phase: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Vec<ClientTally>, f64, T)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let link = Link::open(addrs, client, token, riding).await?;
        let (args, stop) = (args.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            http_client_loop(&args, link, client, seed, &stop).await
        }));
    }
    let started = Instant::now();
    let mut phase = std::pin::pin!(phase);
    // `None`: a client ended first (with an error, which `gather` returns).
    let ended = loop {
        tokio::select! {
            done = &mut phase => break Some(done),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if tasks.iter().any(|t| t.is_finished()) {
                    break None;
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let mut ends = Vec::with_capacity(tasks.len());
    for t in tasks {
        ends.push(
            t.await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("a client task failed: {e}"))),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let tallies = gather(ends)?;
    let out = ended.context("a client ended before the run did")??;
    Ok((tallies, seconds, out))
}

/// A phase of `seconds`, shown on a progress bar.
async fn timed(seconds: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let progress = bar(seconds, "run over HTTP (s)");
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.set_position(started.elapsed().as_secs());
    }
    progress.finish_and_clear();
    Ok(())
}

/// How one try of a transaction over HTTP ended.
enum Try {
    /// Committed; the account's new balance.
    Committed(i64),
    /// `serialization_failure` (from an operation or the commit): retry the transaction.
    Conflict,
}

/// One client's closed loop over its connection: transactions back to back until `stop`,
/// each retried on `serialization_failure` with full-jitter backoff (as `logbook_txn::retry`).
async fn http_client_loop(
    args: &TpcbArgs,
    mut conn: Link,
    client: usize,
    seed: u64,
    stop: &AtomicBool,
) -> anyhow::Result<ClientTally> {
    let scale = u64::from(args.scale);
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let policy = RetryPolicy::default();
    let begin_body = json!({ "isolation": args.isolation.to_string() }).to_string();
    let mut tally = ClientTally::new()?;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let tx = TpcbTxn {
            account: format!("a:{}", rng.gen_range(1..=ACCOUNTS_PER_SCALE * scale)),
            teller: format!("t:{}", rng.gen_range(1..=TELLERS_PER_SCALE * scale)),
            branch: format!("b:{}", rng.gen_range(1..=scale)),
            history: format!("history:{client}:{n}"),
            delta: rng.gen_range(-5000..=5000),
        };
        n += 1;
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let timing = &mut tally.commit_latency;
            let outcome = match args.protocol {
                Protocol::Interactive => {
                    http_try(&mut conn, args.form, &begin_body, &tx, timing).await?
                }
                Protocol::OneShot => {
                    one_shot_try(&mut conn, args.form, args.isolation, &tx, timing).await?
                }
            };
            match outcome {
                Try::Committed(_balance) => {
                    tally.latency.saturating_record(elapsed_us(started));
                    tally.committed += 1;
                    tally.tries += u64::from(tries);
                    tally.aborts += u64::from(tries - 1);
                    tally.deltas += i128::from(tx.delta);
                    break;
                }
                Try::Conflict if tries >= args.max_tries => {
                    tally.failed += 1;
                    tally.tries += u64::from(tries);
                    tally.aborts += u64::from(tries);
                    break;
                }
                Try::Conflict => {
                    let cap = policy
                        .base_delay_us
                        .saturating_mul(1u64 << (tries - 1).min(20))
                        .min(policy.max_delay_us);
                    let wait = rng.gen_range(0..=cap);
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
            }
        }
    }
    Ok(tally)
}

/// The keys and the delta of one TPC-B transaction.
struct TpcbTxn {
    account: String,
    teller: String,
    branch: String,
    history: String,
    delta: i64,
}

/// One try over HTTP: begin, the operations of `form`, commit. A `serialization_failure`
/// anywhere is [`Try::Conflict`] (the server has then already ended the transaction; the
/// abort sent anyway is for the other paths). Any other failure ends the benchmark.
async fn http_try(
    conn: &mut Link,
    form: Form,
    begin_body: &str,
    tx: &TpcbTxn,
    commit_latency: &mut Histogram<u64>,
) -> anyhow::Result<Try> {
    use hyper::Method;
    let (status, body) = conn
        .call(Method::POST, &paths::txns(), Some(begin_body.to_string()))
        .await?;
    let begun = success(status, &body, "begin")?;
    let Some(id) = begun["txn"].as_str().map(str::to_string) else {
        bail!("begin answered without a txn: {begun}");
    };
    let result = async {
        let balance = match form {
            Form::Rmw => {
                let a = http_balance(conn, &id, &tx.account).await?;
                let Some(a) = a else { return Ok(None) };
                if !http_put(conn, &id, &tx.account, json!(a + tx.delta)).await? {
                    return Ok(None);
                }
                let Some(balance) = http_balance(conn, &id, &tx.account).await? else {
                    return Ok(None);
                };
                for key in [&tx.teller, &tx.branch] {
                    let Some(v) = http_balance(conn, &id, key).await? else {
                        return Ok(None);
                    };
                    if !http_put(conn, &id, key, json!(v + tx.delta)).await? {
                        return Ok(None);
                    }
                }
                Some(balance)
            }
            Form::Atomic => {
                let by = json!({ "by": tx.delta }).to_string();
                for key in [&tx.account, &tx.teller, &tx.branch] {
                    let (status, body) = conn
                        .call(
                            Method::POST,
                            &paths::txn_increment(&id, key),
                            Some(by.clone()),
                        )
                        .await?;
                    if conflict(status, &body, "increment")? {
                        return Ok(None);
                    }
                }
                Some(0)
            }
        };
        let Some(balance) = balance else {
            return Ok(None);
        };
        let row = json!(format!("{},{},{}", tx.teller, tx.branch, tx.delta));
        if !http_put(conn, &id, &tx.history, row).await? {
            return Ok(None);
        }
        let sent = Instant::now();
        let (status, body) = conn
            .call(Method::POST, &paths::txn_commit(&id), None)
            .await?;
        commit_latency.saturating_record(elapsed_us(sent));
        if conflict(status, &body, "commit")? {
            return Ok(None);
        }
        let committed: serde_json::Value = serde_json::from_slice(&body)?;
        Ok::<_, anyhow::Error>(Some(match form {
            Form::Rmw => balance,
            Form::Atomic => committed["incremented"][&tx.account]
                .as_i64()
                .with_context(|| format!("the commit reported no balance for {}", tx.account))?,
        }))
    }
    .await?;
    match result {
        Some(balance) => Ok(Try::Committed(balance)),
        None => {
            // Usually already ended by the server (404 then); the answer does not matter.
            let _ = conn
                .call(Method::POST, &paths::txn_abort(&id), None)
                .await?;
            Ok(Try::Conflict)
        }
    }
}

/// One try in the one-round-trip form: `rmw` reads the three balances at one snapshot
/// (`POST /v1/kv/read`) and commits the new ones with those reads declared; `atomic`
/// commits the increments and the history row at once (`POST /v1/commits`).
async fn one_shot_try(
    conn: &mut Link,
    form: Form,
    isolation: Isolation,
    tx: &TpcbTxn,
    commit_latency: &mut Histogram<u64>,
) -> anyhow::Result<Try> {
    use hyper::Method;
    let history = json!({"op": "put", "key": tx.history,
        "value": format!("{},{},{}", tx.teller, tx.branch, tx.delta)});
    let keys = [&tx.account, &tx.teller, &tx.branch];
    let body = match form {
        Form::Rmw => {
            let read = json!({ "keys": keys }).to_string();
            let (status, body) = conn
                .call(Method::POST, &paths::kv_read(), Some(read))
                .await?;
            if conflict(status, &body, "read")? {
                return Ok(Try::Conflict);
            }
            let read: serde_json::Value = serde_json::from_slice(&body)?;
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let found = &read["keys"][i];
                let v = found["value"]
                    .as_i64()
                    .with_context(|| format!("row {key} does not hold an integer: {found}"))?;
                reads.push(json!({"key": key, "version": found["version"]}));
                writes.push(json!({"op": "put", "key": key, "value": v + tx.delta}));
            }
            writes.push(history);
            json!({"isolation": isolation.to_string(), "snapshot": read["snapshot"],
                "reads": reads, "writes": writes})
        }
        Form::Atomic => {
            let mut writes: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| json!({"op": "increment", "key": k, "by": tx.delta}))
                .collect();
            writes.push(history);
            json!({"isolation": isolation.to_string(), "writes": writes})
        }
    };
    let sent = Instant::now();
    let (status, answer) = conn
        .commit(&paths::commits(), Some(body.to_string()))
        .await?;
    commit_latency.saturating_record(elapsed_us(sent));
    if conflict(status, &answer, "commit")? {
        return Ok(Try::Conflict);
    }
    let committed: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(Try::Committed(match form {
        Form::Rmw => body["writes"][0]["value"].as_i64().unwrap_or_default(),
        Form::Atomic => committed["incremented"][&tx.account]
            .as_i64()
            .with_context(|| format!("the commit reported no balance for {}", tx.account))?,
    }))
}

/// A balance read in the transaction: `Some(value)`, or None on a conflict.
async fn http_balance(conn: &mut Link, txn: &str, key: &str) -> anyhow::Result<Option<i64>> {
    let (status, body) = conn
        .call(hyper::Method::GET, &paths::txn_key(txn, key), None)
        .await?;
    if conflict(status, &body, "get")? {
        return Ok(None);
    }
    let row: serde_json::Value = serde_json::from_slice(&body)?;
    row["value"]
        .as_i64()
        .map(Some)
        .with_context(|| format!("row {key} does not hold an integer: {row}"))
}

/// A put in the transaction; false on a conflict.
async fn http_put(
    conn: &mut Link,
    txn: &str,
    key: &str,
    value: serde_json::Value,
) -> anyhow::Result<bool> {
    let (status, body) = conn
        .call(
            hyper::Method::PUT,
            &paths::txn_key(txn, key),
            Some(json!({ "value": value }).to_string()),
        )
        .await?;
    Ok(!conflict(status, &body, "put")?)
}

/// True for a retryable 409 (`serialization_failure`, `snapshot_too_old`); Ok(false) for a
/// success; an error otherwise.
fn conflict(status: u16, body: &[u8], what: &str) -> anyhow::Result<bool> {
    if (200..300).contains(&status) {
        return Ok(false);
    }
    /// The problem document's code alone (a 409 from anything else is no conflict).
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    let code = serde_json::from_slice::<Code>(body)
        .ok()
        .and_then(|c| c.code.parse::<ProblemCode>().ok());
    if status == 409
        && matches!(
            code,
            Some(ProblemCode::SerializationFailure | ProblemCode::SnapshotTooOld)
        )
    {
        return Ok(true);
    }
    bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(body))
}

/// The JSON of a success; an error naming `what` otherwise.
fn success(status: u16, body: &[u8], what: &str) -> anyhow::Result<serde_json::Value> {
    if !(200..300).contains(&status) {
        bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(body));
    }
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serialization_failures_are_retried_over_http() {
        let problem = br#"{"type":"about:blank","code":"serialization_failure","status":409}"#;
        assert!(conflict(409, problem, "commit").is_ok_and(|c| c));
        let too_old = br#"{"code":"snapshot_too_old","status":409}"#;
        assert!(conflict(409, too_old, "commit").is_ok_and(|c| c));
        assert!(conflict(204, b"", "put").is_ok_and(|c| !c));
        let other = br#"{"code":"version_mismatch","status":409}"#;
        assert!(conflict(409, other, "commit").is_err());
        assert!(conflict(500, b"oops", "get").is_err());
        assert!(conflict(409, b"not json", "get").is_err());
    }
}
