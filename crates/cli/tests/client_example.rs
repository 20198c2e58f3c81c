//! The Rust client's example program (`crates/api/examples/client_tour.rs`) against a real
//! `logbook serve`: it appends, reads its own write from a view, and runs a transaction that
//! is retried after a conflict.

mod common;

#[path = "../../api/examples/client_tour.rs"]
#[expect(
    dead_code,
    reason = "the example's main is not called here; its run() is"
)]
mod client_tour;

use std::process::Stdio;

#[test]
fn the_client_tour_appends_reads_its_write_and_retries_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::inherit());
    let base = serve.base.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tour = rt
        .block_on(client_tour::run(&base, serve.token.as_deref()))
        .unwrap();
    assert_eq!(tour.total_read_back, serde_json::json!(12));
    assert_eq!(tour.attempts, 2, "the first attempt met a conflict");
    // The retry read the other transaction's 100 and added 12.
    assert_eq!(tour.balance, serde_json::json!(112));
}
