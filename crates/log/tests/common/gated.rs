//! The log on storage whose `fdatasync` waits while a test holds the gate
//! ([`logbook_log::sim::GatedStorage`]): the writer stays in its group commit, so what queues
//! behind it is decided without any timing.

use std::sync::Arc;

pub use logbook_log::sim::GatedStorage;
use logbook_log::{Log, LogOptions};

use super::{DATA_DIR, ManualClock, START_MS};

/// Opens the log in [`DATA_DIR`] on `storage` with a manual clock at [`START_MS`].
pub fn open(storage: &GatedStorage) -> Log {
    Log::open_with(
        DATA_DIR,
        LogOptions {
            storage: Arc::new(storage.clone()),
            clock: ManualClock::at(START_MS),
            ..LogOptions::default()
        },
    )
    .unwrap()
}
