//! The server's internal streams (`_auth`, `_groups`, `_views`, `_schemas`): each is the
//! state of one mechanism as records, one partition, opened here or created on first use.
//!
//! On a replicated log two nodes may start together and both find the stream missing; the
//! one that loses the race to create it opens the winner's instead of failing its start.

use std::sync::Arc;

use logbook_log::{FsyncPolicy, LogBackend, LogError, LogStream, StreamConfig};

/// `name` as it exists, else created with one partition. `shared`: the log is replicated
/// (a cluster node), so the stream takes what the engine acknowledges (a majority of
/// replicas, decision 0010) instead of an fsync it cannot honour; embedded, fsync always.
///
/// # Errors
/// The log's, when the stream can be neither opened nor created.
pub fn open_or_create(
    log: &dyn LogBackend,
    name: &str,
    shared: bool,
) -> Result<Arc<dyn LogStream>, LogError> {
    match log.stream(name) {
        Err(LogError::UnknownStream { .. }) => {}
        found => return found,
    }
    let mut config = StreamConfig::with_partitions(1);
    if shared {
        config.fsync = FsyncPolicy::Never;
    }
    match log.create_stream(name, config) {
        Err(LogError::StreamExists { .. }) => log.stream(name),
        created => created,
    }
}
