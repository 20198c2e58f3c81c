//! Helpers shared by the transaction integration tests: a store in a temp dir, and the
//! Elle-style history checker (`elle`).

#![expect(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

pub mod elle;
pub mod oneshot;

use std::sync::Arc;

use logbook_log::{FsyncPolicy, Log};
use logbook_txn::{TxnStore, TxnStoreOptions};

/// What must outlive a store made by [`temp_store`].
pub type Guards = (tempfile::TempDir, Log);

/// A store on a fresh log in a temp dir. Keep the returned guards alive for the test.
///
/// `fsync` `never`: these tests are about isolation, not durability, and the log still
/// reports each commit durable only once written (early lock release waits for that).
pub fn temp_store() -> (tempfile::TempDir, Log, Arc<TxnStore>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let store = TxnStore::open(
        &log,
        TxnStoreOptions {
            fsync: FsyncPolicy::Never,
            ..TxnStoreOptions::default()
        },
    )
    .unwrap();
    (dir, log, store)
}
