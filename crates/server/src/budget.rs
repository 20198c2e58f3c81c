//! The node's partition budget (issue 17, item 6): every partition of the embedded log costs
//! a writer thread, a file descriptor and its buffers, so the partitions of all streams
//! together — internal ones included — are bounded by `partitions_max`. A creation that
//! would go over it is refused with 409 `too_many_partitions`, naming the budget, and
//! creates nothing.
//!
//! Creations take turns (one lock per node): the count and the creation happen as one
//! step, so two creations at once cannot both fit into the last free partitions. Confirming
//! an existing stream (the same `PUT` again) needs no budget.

use std::sync::{Arc, Mutex};

use logbook_log::{LogBackend, LogStream, StreamConfig};

use crate::error::{ApiError, ProblemCode};

/// The budget of one node.
#[derive(Debug)]
pub struct PartitionBudget {
    max: u32,
    /// Held while a creation counts and creates.
    creating: Mutex<()>,
}

impl PartitionBudget {
    /// A budget of `max` partitions.
    pub fn new(max: u32) -> Self {
        PartitionBudget {
            max,
            creating: Mutex::new(()),
        }
    }

    /// The budget, in partitions.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Partitions of every stream of `log` now.
    pub fn used(log: &dyn LogBackend) -> u64 {
        log.stream_names()
            .iter()
            .filter_map(|n| log.stream(n).ok())
            .map(|s| u64::from(s.partition_count()))
            .sum()
    }

    /// Creates stream `name` (or confirms it) if its partitions fit the budget: whether it
    /// existed, and the stream. Blocks (the count and the creation may wait on the disk or
    /// the network): call it off the async workers.
    ///
    /// # Errors
    /// 409 `too_many_partitions` naming `partitions`; the log's errors as problems.
    pub fn create(
        &self,
        log: &dyn LogBackend,
        name: &str,
        config: StreamConfig,
    ) -> Result<(bool, Arc<dyn LogStream>), ApiError> {
        let _turn = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        let existed = log.stream(name).is_ok();
        // Settings out of range are the log's to refuse, by name (`invalid_stream_config`).
        let in_range = (1..=logbook_log::limits::PARTITIONS_MAX).contains(&config.partitions);
        if !existed && in_range {
            let used = PartitionBudget::used(log);
            let asked = u64::from(config.partitions);
            if used + asked > u64::from(self.max) {
                return Err(ApiError::new(
                    ProblemCode::TooManyPartitions,
                    format!(
                        "stream {name:?} would add {asked} partition(s) to the {used} in use, \
                         over this node's budget of {} (partitions_max); drop streams, use \
                         fewer partitions, or raise partitions_max",
                        self.max
                    ),
                )
                .field("partitions"));
            }
        }
        let stream = log
            .create_stream(name, config)
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        Ok((existed, stream))
    }
}
