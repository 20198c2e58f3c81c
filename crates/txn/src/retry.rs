//! Re-running a transaction on `serialization_failure`, bounded, with jittered exponential
//! backoff ("full jitter": each wait is uniform in `[0, min(max, base × 2^attempt)]`, which
//! spreads out clients that conflicted at the same moment).

use std::sync::Arc;
use std::time::Duration;

use logbook_log::RequestId;
use rand::Rng;

use crate::TxnOptions;
use crate::error::{Result, TxnError};
use crate::store::{CommitOutcome, TxnStore};
use crate::txn::Txn;

/// How [`retry`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1. Default 10 (as `pgbench --max-tries=10`).
    pub max_attempts: u32,
    /// Backoff cap of the first retry, µs. Default 100.
    pub base_delay_us: u64,
    /// Largest backoff cap, µs. Default 20,000.
    pub max_delay_us: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay_us: 100,
            max_delay_us: 20_000,
        }
    }
}

/// A transaction that committed, with what its body returned.
#[derive(Debug)]
pub struct Retried<T> {
    /// The body's result of the attempt that committed.
    pub value: T,
    /// The commit.
    pub outcome: CommitOutcome,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
}

/// Runs `body` in a new transaction and commits it; on a retryable error
/// ([`TxnError::is_retryable`]) from the body or the commit, waits and runs it again in a
/// fresh transaction, up to `policy.max_attempts` in all. Every attempt commits with the
/// same `request_id`, so a commit whose acknowledgment was lost is not applied twice.
///
/// # Errors
/// The first non-retryable error, or the last retryable one when attempts run out.
pub fn retry<T>(
    store: &Arc<TxnStore>,
    options: TxnOptions,
    policy: &RetryPolicy,
    request_id: Option<&RequestId>,
    mut body: impl FnMut(&mut Txn) -> Result<T>,
) -> Result<Retried<T>> {
    let attempts = policy.max_attempts.max(1);
    let mut last: Option<TxnError> = None;
    for attempt in 1..=attempts {
        if attempt > 1 {
            let cap = policy
                .base_delay_us
                .saturating_mul(1 << (attempt - 2).min(20))
                .min(policy.max_delay_us);
            let wait = rand::thread_rng().gen_range(0..=cap);
            std::thread::sleep(Duration::from_micros(wait));
        }
        let mut txn = store.begin(options)?;
        let value = match body(&mut txn) {
            Ok(v) => v,
            Err(e) if e.is_retryable() => {
                txn.abort();
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        match txn.commit_with(request_id, None) {
            Ok(outcome) => {
                return Ok(Retried {
                    value,
                    outcome,
                    attempts: attempt,
                });
            }
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(TxnError::Closed))
}
