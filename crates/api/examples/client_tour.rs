//! A tour of the Rust client against a running `logbook serve`: create a stream and a view,
//! append a record exactly once, read that write back from the view (read-your-writes through
//! the client's session), and run a transaction that meets a conflict on its first attempt
//! and is retried whole by `Client::transaction`.
//!
//! ```text
//! logbook serve --data-dir /tmp/tour &
//! LOGBOOK_TOKEN=$(cat /tmp/tour/admin.token) \
//!   cargo run -p logbook-api --example client_tour -- 127.0.0.1:7700
//! ```

use logbook_api::client::{Client, ClientConfig, ClientError, ReadOptions};
use logbook_api::streams::{CreateStream, RecordIn};
use logbook_api::txns::BeginBody;
use serde_json::json;

/// What the tour saw.
#[derive(Debug)]
pub struct Tour {
    /// The order's total as read back from the view.
    pub total_read_back: serde_json::Value,
    /// Attempts the transaction took (2: the first met a conflict).
    pub attempts: u32,
    /// The balance after the transaction, read outside it.
    pub balance: serde_json::Value,
}

/// Runs the tour against the server at `server` (`HOST:PORT`), sending `token` (a bearer
/// token's secret; authentication is on by default).
///
/// # Errors
/// Any client error.
pub async fn run(server: &str, token: Option<&str>) -> Result<Tour, ClientError> {
    let client = Client::with_bearer(server, ClientConfig::default(), token)?;
    let settings = CreateStream {
        partitions: Some(2),
        ..CreateStream::default()
    };
    client.create_stream("tour_orders", &settings).await?;
    let spec = json!({"source": "tour_orders", "kind": "table"});
    client.create_view("tour_orders_by_id", &spec).await?;

    // An append with a fresh Idempotency-Key; a retry after a lost answer could not
    // append it twice.
    let order = RecordIn::new(json!({"customer": "c1", "total": 12})).key("o-1");
    let at = client.append("tour_orders", order).await?;
    println!(
        "appended o-1 at partition {} offset {}",
        at.partition, at.offset
    );

    // The session's token makes the read wait until the view has applied the append.
    let row = client
        .get_row("tour_orders_by_id", "o-1", &ReadOptions::default())
        .await?;
    let total_read_back = row.map_or(json!(null), |r| r.value["total"].clone());
    println!("read back from the view: total = {total_read_back}");

    // A read-modify-write; on its first attempt another transaction changes the balance
    // before it commits, so the commit is refused (serialization_failure) and the helper
    // runs the whole transaction again on a fresh snapshot.
    let mut attempts = 0;
    let (_, committed) = client
        .transaction(&BeginBody::default(), async |txn| {
            attempts += 1;
            let balance = txn.get("balance:c1").await?;
            let old = balance.map_or(Ok(0), |r| {
                serde_json::from_str::<i64>(r.value.get()).map_err(|e| {
                    ClientError::InvalidArgument {
                        field: "balance:c1",
                        reason: e.to_string(),
                    }
                })
            })?;
            if attempts == 1 {
                let other = client.begin(&BeginBody::default()).await?;
                other.put("balance:c1", json!(100)).await?;
                other.commit().await?;
            }
            txn.put("balance:c1", json!(old + 12)).await
        })
        .await?;
    println!(
        "transaction committed at {:?} after {attempts} attempt(s)",
        committed.offset
    );
    let balance = client
        .kv_get("balance:c1", &ReadOptions::default())
        .await?
        .map_or(json!(null), |r| {
            serde_json::from_str(r.value.get()).unwrap_or(json!(null))
        });
    println!("balance:c1 = {balance}");
    Ok(Tour {
        total_read_back,
        attempts,
        balance,
    })
}

#[tokio::main]
async fn main() {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7700".into());
    let token = std::env::var("LOGBOOK_TOKEN").ok();
    if let Err(e) = run(&server, token.as_deref()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
