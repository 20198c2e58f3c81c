//! The adaptive timeout of requests to one peer, applied: [`crate::rto`]'s estimator
//! shared by every request to that peer, behind tokio's timer.
//!
//! ```text
//!  run(request) ── timeout = rto.timeout_us() ──▶ answered in time ─▶ rto.sample(round trip)
//!                                              └▶ timeout ─────────▶ rto.timed_out() (doubles)
//! ```
//!
//! A cluster node keeps one per peer it sends to: the heartbeats' (`peers.rs`) and the
//! forwarded commits' per leader URL (`cluster.rs`), apart, since a commit's round trip
//! holds the leader's certification and replicated append and a heartbeat's does not.
//! A timeout says only that no answer came in time: the caller reports a request that may
//! have taken effect as of unknown outcome, never as failed.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use logbook_server::deadline::AdaptiveTimeout;
//! use logbook_server::rto::RtoSettings;
//! let peer = AdaptiveTimeout::new(RtoSettings::default());
//! let answer = peer.run(async { 42 }, |_| true).await;
//! assert_eq!(answer.ok(), Some(42));
//! assert!(peer.srtt_us().is_some()); // the round trip was sampled
//! # });
//! ```

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::rto::{RtoEstimator, RtoSettings};

/// The adaptive timeout of the requests to one peer (thread-safe; share it by `Arc`).
#[derive(Debug)]
pub struct AdaptiveTimeout {
    rto: Mutex<RtoEstimator>,
}

/// No answer came within the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// The timeout that ran out.
    pub after: Duration,
}

impl AdaptiveTimeout {
    /// A timeout with no samples yet (`settings.initial_us`, clamped).
    pub fn new(settings: RtoSettings) -> Self {
        AdaptiveTimeout {
            rto: Mutex::new(RtoEstimator::new(settings)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut RtoEstimator) -> T) -> T {
        f(&mut self.rto.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The timeout the next request gets.
    pub fn timeout(&self) -> Duration {
        Duration::from_micros(self.with(|r| r.timeout_us()))
    }

    /// The smoothed round trip in µs, once a request was answered.
    pub fn srtt_us(&self) -> Option<u64> {
        self.with(|r| r.srtt_us())
    }

    /// Runs `request` within the timeout. Its outcome, if it came in time; its round trip
    /// is a sample when `answered(&outcome)` (an answer from the peer, not a failure to
    /// reach it).
    ///
    /// # Errors
    /// [`TimedOut`] when the timeout ran out first (`request` is dropped; the next timeout
    /// doubles until an answer comes, RFC 6298 § 5.5).
    pub async fn run<T>(
        &self,
        request: impl Future<Output = T>,
        answered: impl FnOnce(&T) -> bool,
    ) -> Result<T, TimedOut> {
        let after = self.timeout();
        let sent = Instant::now();
        match tokio::time::timeout(after, request).await {
            Ok(outcome) => {
                if answered(&outcome) {
                    let rtt_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.with(|r| r.sample(rtt_us));
                }
                Ok(outcome)
            }
            Err(_) => {
                self.with(RtoEstimator::timed_out);
                Err(TimedOut { after })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny bounds, so that the request that never answers costs a few ms of the test.
    fn settings() -> RtoSettings {
        RtoSettings {
            floor_us: 1_000,
            ceiling_us: 50_000,
            initial_us: 2_000,
            granularity_us: 1_000,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"))
    }

    #[test]
    fn an_answer_is_returned_and_sampled() {
        runtime().block_on(async {
            let peer = AdaptiveTimeout::new(settings());
            assert_eq!(peer.run(async { "ok" }, |_| true).await, Ok("ok"));
            assert!(peer.srtt_us().is_some());
        });
    }

    #[test]
    fn an_outcome_that_is_no_answer_is_not_sampled() {
        runtime().block_on(async {
            let peer = AdaptiveTimeout::new(settings());
            let refused: Result<(), &str> = Err("connection refused");
            assert_eq!(
                peer.run(async { refused }, |r| r.is_ok()).await,
                Ok(refused)
            );
            assert_eq!(peer.srtt_us(), None);
        });
    }

    #[test]
    fn no_answer_times_out_and_doubles_the_next_timeout() {
        runtime().block_on(async {
            let peer = AdaptiveTimeout::new(settings());
            let first = peer.timeout();
            assert_eq!(first, Duration::from_micros(settings().initial_us));
            let outcome = peer.run(std::future::pending::<()>(), |_| true).await;
            assert_eq!(outcome, Err(TimedOut { after: first }));
            assert_eq!(peer.timeout(), first * 2, "Karn: back off until an answer");
            assert_eq!(peer.srtt_us(), None, "a timeout gives no sample");
            // An answer ends the back-off.
            assert_eq!(peer.run(async { 1 }, |_| true).await, Ok(1));
            assert!(peer.timeout() <= Duration::from_micros(settings().ceiling_us));
            assert!(peer.srtt_us().is_some());
        });
    }
}
