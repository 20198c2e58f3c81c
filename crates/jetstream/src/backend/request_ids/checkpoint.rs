//! The checkpoint of a stream's request-id index on this node (review r13 F3): the embedded
//! log's file format and check ([`DedupIndex::write_checkpoint`],
//! [`DedupIndex::read_checkpoint`] → the fingerprint check here → [`DedupIndex::install`]),
//! written after a refresh and loaded by the first refresh after a start, so a restart reads
//! only the log after it.
//!
//! ```text
//!  refresh (catch_up) ── new ids, last checkpoint ≥ CHECKPOINT_INTERVAL ago, no share half
//!                        read ──▶ plan: per partition the last record read + 1, its
//!                        fingerprint ──(appends let go)──▶ write on the blocking pool
//!  first refresh ── read the file ── each partition still holds the fingerprinted record?
//!                   yes → install, read from there;  no → read the log from the start
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[cfg(doc)]
use logbook_log::dedup::DedupIndex;
use logbook_log::dedup::record_fingerprint;
use logbook_log::storage::OsStorage;
use logbook_log::{HashKey, LogError, Result};

use super::{Followed, RequestIds};
use crate::backend::partition::Publish;
use crate::backend::{BACKEND, log_error};

/// Least time between two checkpoints of one stream's index: a restart reads at most about
/// this much of the log (plus the refresh interval) before appends with ids are answered.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Where a stream's index is checkpointed, and the node's key its share keys are hashed
/// under (a checkpoint is loaded only under the key it was written with).
#[derive(Debug, Clone)]
pub(crate) struct CheckpointFile {
    pub(crate) path: PathBuf,
    pub(crate) key: HashKey,
}

/// A checkpoint to write: per partition, the offset every request id below is remembered
/// up to, and the fingerprint of the record just below it.
#[derive(Debug)]
pub(super) struct CheckpointPlan {
    applied: Vec<u64>,
    fingerprints: Vec<u64>,
}

impl RequestIds {
    /// A checkpoint of what `followed` has read: `None` when the index is not checkpointed or
    /// a share is half read (its start would be lost). Notes the time.
    pub(super) fn checkpoint_plan(&self, followed: &mut Followed) -> Option<CheckpointPlan> {
        if !self.checkpointed || followed.partitions.iter().any(|f| f.cursor.in_share()) {
            return None;
        }
        followed.checkpointed_at = Some(Instant::now());
        followed.read_at_checkpoint = self.records_read();
        let lasts = followed.partitions.iter().map(|f| f.last);
        Some(CheckpointPlan {
            applied: lasts.clone().map(|l| l.map_or(0, |(o, _)| o + 1)).collect(),
            fingerprints: lasts.map(|l| l.map_or(0, |(_, fp)| fp)).collect(),
        })
    }

    /// Writes `plan` (on the blocking pool); a failure is logged, and the next refresh plans
    /// another.
    pub(super) async fn write_checkpoint(self: &Arc<Self>, plan: CheckpointPlan) {
        if self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let ids = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let CheckpointPlan {
                applied,
                fingerprints,
            } = plan;
            ids.index
                .write_checkpoint(&OsStorage, || applied, |p, _| fingerprints.get(p).copied())
        })
        .await;
        self.writing.store(false, Ordering::Release);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "request-id checkpoint not written"),
            Err(e) => tracing::warn!(error = %e, "request-id checkpoint task failed"),
        }
    }

    /// Installs this stream's checkpoint, if there is one and the log still holds the record
    /// just below each partition's applied offset with the fingerprint it recorded; the
    /// refreshes then read the log from there. Otherwise the log is read from the start.
    ///
    /// # Errors
    /// Those of the reads of those records.
    pub(super) async fn load_checkpoint(
        self: &Arc<Self>,
        followed: &mut Followed,
        partitions: &[Publish],
    ) -> Result<()> {
        if !self.checkpointed {
            return Ok(());
        }
        let count = u32::try_from(partitions.len()).unwrap_or(u32::MAX);
        let ids = self.clone();
        let read =
            tokio::task::spawn_blocking(move || ids.index.read_checkpoint(&OsStorage, count))
                .await
                .map_err(|e| LogError::Backend {
                    backend: BACKEND,
                    detail: format!("reading the request-id checkpoint: {e}"),
                })?;
        let Some(checkpoint) = read else {
            return Ok(());
        };
        let mut lasts = Vec::with_capacity(partitions.len());
        for (&(applied, fingerprint), publisher) in checkpoint.applied().iter().zip(partitions) {
            let Some(last) = applied.checked_sub(1) else {
                lasts.push(None);
                continue;
            };
            let found = publisher.inner().read(last, 1).await.map_err(log_error)?;
            let holds = found
                .first()
                .is_some_and(|r| r.offset == last && record_fingerprint(r) == fingerprint);
            if !holds {
                tracing::warn!(
                    offset = last,
                    "the request-id checkpoint does not match the log; reading the log from the start"
                );
                return Ok(());
            }
            lasts.push(Some((last, fingerprint)));
        }
        let applied = self.index.install(checkpoint);
        for ((f, next), last) in followed.partitions.iter_mut().zip(applied).zip(lasts) {
            f.next = next;
            f.last = last;
        }
        tracing::info!(
            ids = self.index.len(),
            "request-id index loaded from its checkpoint"
        );
        Ok(())
    }
}
