//! Adaptive timeouts for requests between nodes: TCP's retransmission timer (RFC 6298,
//! Jacobson/Karels) over the observed round-trip times, with a floor and a ceiling.
//!
//! A fixed timeout is wrong twice: too long when the peer is fast (a dead leader is waited
//! for seconds), too short under load (a busy but healthy leader is given up on, and the
//! client retries into more load). The timeout here follows the round trips the node sees:
//!
//! ```text
//!  first sample R:   SRTT = R            RTTVAR = R / 2
//!  each next R:      RTTVAR = ¾·RTTVAR + ¼·|SRTT − R|      (before SRTT moves)
//!                    SRTT   = ⅞·SRTT   + ⅛·R
//!  timeout:          RTO = clamp(SRTT + max(G, 4·RTTVAR), floor, ceiling)
//!  a timeout:        RTO doubles (up to the ceiling) until the next sample (Karn: a request
//!                    that timed out gives no sample)
//! ```
//!
//! Pure: no clock. Times are microseconds (u64), measured by the caller on a monotonic clock;
//! all arithmetic is integer, so no rounding drift accumulates.
//!
//! ```
//! use logbook_server::rto::{RtoEstimator, RtoSettings};
//! let mut rto = RtoEstimator::new(RtoSettings::default());
//! for _ in 0..50 {
//!     rto.sample(2_000); // 2 ms round trips
//! }
//! assert_eq!(rto.timeout_us(), RtoSettings::default().floor_us);
//! ```

/// Bounds of the adaptive timeout, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoSettings {
    /// The shortest timeout, in µs (default 200 000: a leader's fsync stall or a scheduler
    /// hiccup is not a failure).
    pub floor_us: u64,
    /// The longest timeout, in µs (default 5 000 000, the fixed timeout it replaces).
    pub ceiling_us: u64,
    /// The timeout before the first sample, in µs (default 1 000 000, RFC 6298's initial RTO).
    pub initial_us: u64,
    /// The clock granularity G, in µs (default 1 000).
    pub granularity_us: u64,
}

impl Default for RtoSettings {
    fn default() -> Self {
        RtoSettings {
            floor_us: 200_000,
            ceiling_us: 5_000_000,
            initial_us: 1_000_000,
            granularity_us: 1_000,
        }
    }
}

/// A round trip longer than this (µs, ten minutes) is counted as this, keeping the
/// arithmetic far from overflow.
const SAMPLE_US_MAX: u64 = 600_000_000;

/// The smoothed round-trip time and its deviation for one peer (RFC 6298 § 2).
///
/// Invariant: [`RtoEstimator::timeout_us`] is always within `[floor_us, ceiling_us]`
/// (a floor above the ceiling is taken as the ceiling).
#[derive(Debug, Clone)]
pub struct RtoEstimator {
    settings: RtoSettings,
    /// `(SRTT, RTTVAR)` in µs once a sample arrived.
    smoothed: Option<(u64, u64)>,
    /// How many timeouts since the last sample (each doubles the timeout).
    backoffs: u32,
}

impl RtoEstimator {
    /// An estimator with no samples: its timeout is `initial_us`, clamped.
    pub fn new(settings: RtoSettings) -> Self {
        let floor_us = settings.floor_us.min(settings.ceiling_us);
        RtoEstimator {
            settings: RtoSettings {
                floor_us,
                ..settings
            },
            smoothed: None,
            backoffs: 0,
        }
    }

    /// Feeds one measured round trip (µs) of a request that was answered. Resets the
    /// back-off of earlier timeouts.
    pub fn sample(&mut self, rtt_us: u64) {
        let r = rtt_us.min(SAMPLE_US_MAX);
        self.smoothed = Some(match self.smoothed {
            None => (r, r / 2),
            Some((srtt, rttvar)) => {
                let rttvar = (3 * rttvar + srtt.abs_diff(r)) / 4;
                let srtt = (7 * srtt + r) / 8;
                (srtt, rttvar)
            }
        });
        self.backoffs = 0;
    }

    /// Records that a request timed out: the next timeout doubles (RFC 6298 § 5.5), up to
    /// the ceiling, until a sample arrives.
    pub fn timed_out(&mut self) {
        self.backoffs = self.backoffs.saturating_add(1).min(32);
    }

    /// The timeout for the next request, in µs: SRTT + max(G, 4·RTTVAR), doubled once per
    /// timeout since the last sample, within `[floor_us, ceiling_us]`.
    pub fn timeout_us(&self) -> u64 {
        let s = &self.settings;
        let base = match self.smoothed {
            None => s.initial_us,
            Some((srtt, rttvar)) => srtt.saturating_add(s.granularity_us.max(4 * rttvar)),
        };
        let backed_off = base.saturating_mul(1u64 << self.backoffs.min(32));
        let timeout = backed_off.clamp(s.floor_us, s.ceiling_us);
        assert!((s.floor_us..=s.ceiling_us).contains(&timeout));
        timeout
    }

    /// The smoothed round-trip time in µs, once a sample arrived.
    pub fn srtt_us(&self) -> Option<u64> {
        self.smoothed.map(|(srtt, _)| srtt)
    }

    /// The round-trip time's smoothed mean deviation in µs, once a sample arrived.
    pub fn rttvar_us(&self) -> Option<u64> {
        self.smoothed.map(|(_, rttvar)| rttvar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unbounded() -> RtoSettings {
        RtoSettings {
            floor_us: 0,
            ceiling_us: u64::MAX,
            ..RtoSettings::default()
        }
    }

    #[test]
    fn first_sample_gives_three_times_the_round_trip() {
        let mut e = RtoEstimator::new(unbounded());
        assert_eq!(e.timeout_us(), 1_000_000);
        e.sample(100_000);
        // SRTT = R, RTTVAR = R/2: RTO = R + 4·R/2 = 3R.
        assert_eq!(e.timeout_us(), 300_000);
    }

    #[test]
    fn second_sample_follows_rfc_6298() {
        let mut e = RtoEstimator::new(unbounded());
        e.sample(100_000);
        e.sample(200_000);
        // RTTVAR = ¾·50 000 + ¼·100 000 = 62 500; SRTT = ⅞·100 000 + ⅛·200 000 = 112 500.
        assert_eq!(e.rttvar_us(), Some(62_500));
        assert_eq!(e.srtt_us(), Some(112_500));
        assert_eq!(e.timeout_us(), 112_500 + 4 * 62_500);
    }

    #[test]
    fn a_slower_network_lengthens_the_timeout() {
        let mut e = RtoEstimator::new(RtoSettings::default());
        for _ in 0..100 {
            e.sample(10_000);
        }
        let fast = e.timeout_us();
        for _ in 0..100 {
            e.sample(900_000);
        }
        assert!(e.timeout_us() > fast);
        assert!(e.timeout_us() >= 900_000);
    }

    #[test]
    fn timeouts_back_off_to_the_ceiling_and_a_sample_resets() {
        let mut e = RtoEstimator::new(RtoSettings::default());
        e.sample(100_000);
        let first = e.timeout_us();
        e.timed_out();
        assert_eq!(e.timeout_us(), 2 * first);
        for _ in 0..40 {
            e.timed_out();
        }
        assert_eq!(e.timeout_us(), RtoSettings::default().ceiling_us);
        e.sample(100_000);
        assert!(e.timeout_us() < RtoSettings::default().ceiling_us);
    }

    proptest! {
        /// Whatever the samples and timeouts, the timeout stays within floor and ceiling.
        #[test]
        fn timeout_stays_within_floor_and_ceiling(
            floor in 0u64..10_000_000, ceiling in 0u64..10_000_000,
            events in prop::collection::vec(prop::option::of(0u64..u64::MAX), 0..200),
        ) {
            let settings = RtoSettings { floor_us: floor, ceiling_us: ceiling, ..RtoSettings::default() };
            let mut e = RtoEstimator::new(settings);
            for event in events {
                match event {
                    Some(rtt) => e.sample(rtt),
                    None => e.timed_out(),
                }
                let t = e.timeout_us();
                prop_assert!(t <= ceiling && t >= floor.min(ceiling), "{t} outside [{floor}, {ceiling}]");
            }
        }

        /// Steady round trips converge: the deviation decays to (almost) nothing and the
        /// timeout to the round trip plus the granularity.
        #[test]
        fn steady_round_trips_converge(first in 0u64..10_000_000, rtt in 0u64..10_000_000) {
            let mut e = RtoEstimator::new(unbounded());
            e.sample(first);
            for _ in 0..400 {
                e.sample(rtt);
            }
            let srtt = e.srtt_us().unwrap_or(0);
            prop_assert!(srtt.abs_diff(rtt) <= 8, "SRTT {srtt} vs {rtt}");
            prop_assert!(e.rttvar_us().unwrap_or(u64::MAX) <= 8);
            prop_assert!(e.timeout_us() <= rtt + 1_000 + 32);
        }
    }
}
