//! The phi accrual failure detector (Hayashibara, Défago, Yared, Katayama: "The φ Accrual
//! Failure Detector", SRDS 2004), as Cassandra and Akka use it between cluster nodes.
//!
//! Instead of a yes/no verdict after a fixed timeout, the detector answers with a level of
//! suspicion, φ, that grows the longer a peer stays silent *relative to how its heartbeats
//! have been arriving*: a peer whose heartbeats come every 100 ms ± 5 ms is suspect after a
//! few hundred ms of silence, one whose heartbeats jitter by seconds (a loaded machine, a
//! slow network) is not. φ = −log₁₀ P(a heartbeat arrives later than now), under a normal
//! distribution fitted to the last [`PhiSettings::window`] inter-arrival times; φ = 1 means a
//! 10 % chance that suspecting the peer is a mistake, φ = 3 a 0.1 % chance, φ = 8 (the usual
//! threshold) one in 10⁸.
//!
//! ```text
//!  heartbeat(t₀) heartbeat(t₁) …  heartbeat(tₙ)            now
//!      │            │                 │                     │
//!      └─ Δ₁ ───────┴── … ── Δₙ ──────┘◀──── elapsed ───────▶│
//!   window: the last `window` intervals Δ (oldest dropped)   φ(now) = −log₁₀(1 − F(elapsed))
//!   F: normal CDF, mean μ(Δ) + acceptable pause, deviation max(σ(Δ), min deviation)
//!   Δ recorded: min(Δ, the silence at which φ reached the threshold) — censored
//! ```
//!
//! **Censoring at the suspicion point.** An interval longer than the silence at which φ
//! reached [`PhiSettings::threshold`] ended a suspicion: past that point the silence was a
//! failure (a pause, a partition), not the heartbeats' variation, and is recorded as that
//! point — all the detector knows is that the interval was at least that long. Recorded
//! whole, one 13 s pause among 50 heartbeats 500 ms apart raises σ to 1.7 s and the next
//! silence is suspected after 10.8 s instead of 2.6 s, for as long as the pause
//! stays in the window (decision 0029's amendment has the figures). Dropped instead (as
//! Cassandra drops intervals above a fixed bound), a peer that became slower for good would
//! be suspected at every heartbeat and never learned; censored, each long interval still
//! raises the estimate a little, so the detector follows a lasting change.
//!
//! This module is pure: no clock, no I/O. The caller passes the time of each arrival and of
//! each question in milliseconds of a monotonic clock (`tokio::time::Instant` since some
//! origin); a wall clock would make a clock step look like silence.
//!
//! Invariants: the window never holds more than `window` intervals (memory is bounded);
//! φ is finite, never negative, and never decreases while no heartbeat arrives; a heartbeat
//! at `now` brings φ(now) down to its floor (the value for zero elapsed time).
//!
//! ```
//! use logbook_server::phi::{PhiDetector, PhiSettings};
//! let mut peer = PhiDetector::new(PhiSettings::default());
//! for t in (0..=2_000).step_by(100) {
//!     peer.heartbeat(t); // every 100 ms
//! }
//! assert!(peer.phi(2_050) < 1.0); // half an interval late: not suspect
//! assert!(peer.phi(6_000) > 8.0); // four seconds of silence: suspect
//! ```

use std::collections::VecDeque;

/// The detector's settings; [`PhiSettings::default`] suits heartbeats every second or less.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiSettings {
    /// How many of the latest inter-arrival times the estimate uses (default 200, ≥ 1).
    /// Memory is `window` × 8 bytes per peer.
    pub window: usize,
    /// A floor under the estimated standard deviation, in ms (default 100): perfectly
    /// regular heartbeats would otherwise make one late packet look like a crash.
    pub min_std_dev_ms: u64,
    /// Silence tolerated on top of the mean interval before φ starts to climb, in ms
    /// (default 1 000): a garbage-collection-like pause or one lost heartbeat.
    pub acceptable_pause_ms: u64,
    /// The interval assumed before the second heartbeat gives a real one, in ms
    /// (default 1 000); its deviation is taken to be a quarter of it.
    pub first_interval_ms: u64,
    /// φ at which the peer is suspected (default 8, Akka's and Cassandra's). An interval
    /// is recorded no longer than the silence at which φ reached it (censoring, above);
    /// a threshold that is not finite and positive records every interval whole.
    pub threshold: f64,
}

impl Default for PhiSettings {
    fn default() -> Self {
        PhiSettings {
            window: 200,
            min_std_dev_ms: 100,
            acceptable_pause_ms: 1_000,
            first_interval_ms: 1_000,
            threshold: 8.0,
        }
    }
}

/// An interval longer than this (ms, one hour) is counted as this: it keeps the sums of
/// squares far from overflow whatever the threshold.
const INTERVAL_MS_MAX: u64 = 3_600_000;

/// The phi accrual detector of one peer: the last arrival and a bounded window of
/// inter-arrival times with their running sums (exact integers, so no drift accumulates).
#[derive(Debug, Clone)]
pub struct PhiDetector {
    settings: PhiSettings,
    intervals: VecDeque<u64>,
    sum_ms: u64,
    sum_sq_ms: u128,
    last_arrival_ms: Option<u64>,
}

impl PhiDetector {
    /// A detector that has heard nothing yet (φ = 0 until the first heartbeat).
    /// A `window` of 0 is taken as 1.
    pub fn new(settings: PhiSettings) -> Self {
        let window = settings.window.max(1);
        PhiDetector {
            settings: PhiSettings { window, ..settings },
            intervals: VecDeque::with_capacity(window),
            sum_ms: 0,
            sum_sq_ms: 0,
            last_arrival_ms: None,
        }
    }

    /// Records a heartbeat that arrived at `now_ms` (monotonic ms). An arrival earlier than
    /// the last one (a caller's clock that went back) counts as an interval of 0; one after
    /// the peer was suspected counts as the silence at which it was (censoring).
    pub fn heartbeat(&mut self, now_ms: u64) {
        if let Some(last) = self.last_arrival_ms {
            let interval = now_ms
                .saturating_sub(last)
                .min(self.suspected_after_ms())
                .min(INTERVAL_MS_MAX);
            if self.intervals.len() == self.settings.window
                && let Some(oldest) = self.intervals.pop_front()
            {
                self.sum_ms -= oldest;
                self.sum_sq_ms -= u128::from(oldest) * u128::from(oldest);
            }
            self.intervals.push_back(interval);
            self.sum_ms += interval;
            self.sum_sq_ms += u128::from(interval) * u128::from(interval);
            assert!(self.intervals.len() <= self.settings.window);
        }
        self.last_arrival_ms = Some(self.last_arrival_ms.map_or(now_ms, |l| l.max(now_ms)));
    }

    /// The suspicion level φ at `now_ms` (monotonic ms): 0 before the first heartbeat, then
    /// −log₁₀ of the probability that the next heartbeat is still to come. Finite, ≥ 0,
    /// non-decreasing in `now_ms` between heartbeats.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_arrival_ms else {
            return 0.0;
        };
        let elapsed = now_ms.saturating_sub(last) as f64;
        let (mean, std_dev) = self.fit();
        phi_of(elapsed, mean, std_dev)
    }

    /// The silence, in ms, at which φ reaches the threshold under the current estimate
    /// (`u64::MAX` for a threshold that is not finite and positive).
    pub fn suspected_after_ms(&self) -> u64 {
        let (mean, std_dev) = self.fit();
        match silence_at(self.settings.threshold, mean, std_dev) {
            // Rounded up, so φ has reached the threshold there; `as` saturates (< 0 → 0).
            Some(ms) => ms.ceil() as u64,
            None => u64::MAX,
        }
    }

    /// The normal distribution φ uses: the window's mean plus the acceptable pause, and its
    /// deviation with the floor under it (ms).
    fn fit(&self) -> (f64, f64) {
        let (mean, std_dev) = self.estimate();
        let mean = mean + self.settings.acceptable_pause_ms as f64;
        let std_dev = std_dev.max(self.settings.min_std_dev_ms as f64).max(1.0);
        (mean, std_dev)
    }

    /// The time of the last heartbeat (monotonic ms), if any arrived.
    pub fn last_arrival_ms(&self) -> Option<u64> {
        self.last_arrival_ms
    }

    /// How many inter-arrival times the estimate holds now (≤ the window).
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    /// Mean and standard deviation of the window's intervals in ms; before the second
    /// heartbeat, the assumed first interval and a quarter of it.
    fn estimate(&self) -> (f64, f64) {
        let n = self.intervals.len() as u128;
        if n == 0 {
            let first = self.settings.first_interval_ms as f64;
            return (first, first / 4.0);
        }
        let mean = self.sum_ms as f64 / n as f64;
        // n·Σx² − (Σx)² is exact in integers and never negative (Cauchy–Schwarz).
        let sum = u128::from(self.sum_ms);
        let spread = (n * self.sum_sq_ms).saturating_sub(sum * sum);
        let variance = spread as f64 / (n * n) as f64;
        (mean, variance.sqrt())
    }
}

/// The logistic approximation of the normal CDF (below): a = y·(LINEAR + CUBIC·y²).
const LOGISTIC_LINEAR: f64 = 1.5976;
const LOGISTIC_CUBIC: f64 = 0.070566;

/// φ for `elapsed` ms of silence when intervals are normal with `mean` and `std_dev` (ms).
/// The normal tail uses the logistic approximation of the CDF, Φ(y) ≈ 1 / (1 + e^(−a)) with
/// a = y·(1.5976 + 0.070566·y²) (error below 1.4·10⁻⁴; Bowling et al. 2009), so
/// 1 − Φ(y) = 1 / (1 + e^a) and φ = log₁₀(1 + e^a) = softplus(a) / ln 10. Softplus is
/// computed without overflow on either side, so φ stays finite for any silence and is
/// increasing in `elapsed` (a is increasing in y).
fn phi_of(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let a = y * (LOGISTIC_LINEAR + LOGISTIC_CUBIC * y * y);
    let softplus = if a > 0.0 {
        a + (-a).exp().ln_1p()
    } else {
        a.exp().ln_1p()
    };
    softplus / std::f64::consts::LN_10
}

/// The silence at which [`phi_of`] reaches `threshold` (ms): its inverse. softplus(a) =
/// threshold · ln 10 gives a = s + ln(1 − e^(−s)) with s = threshold · ln 10 (stable for any
/// s > 0); then y solves the depressed cubic 0.070566·y³ + 1.5976·y − a = 0, which has one
/// real root (its slope is positive), by Cardano's formula. `None` unless the threshold is
/// finite and positive.
fn silence_at(threshold: f64, mean: f64, std_dev: f64) -> Option<f64> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return None;
    }
    let s = threshold * std::f64::consts::LN_10;
    let a = s + (-(-s).exp_m1()).ln();
    let (p, q) = (LOGISTIC_LINEAR / LOGISTIC_CUBIC, -a / LOGISTIC_CUBIC);
    let root = ((q / 2.0).powi(2) + (p / 3.0).powi(3)).sqrt();
    let y = (-q / 2.0 + root).cbrt() + (-q / 2.0 - root).cbrt();
    Some(mean + y * std_dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn detector_with(intervals: &[u64]) -> (PhiDetector, u64) {
        let mut d = PhiDetector::new(PhiSettings::default());
        let mut t = 0;
        d.heartbeat(t);
        for i in intervals {
            t += i;
            d.heartbeat(t);
        }
        (d, t)
    }

    #[test]
    fn silent_peer_has_no_suspicion_before_its_first_heartbeat() {
        let d = PhiDetector::new(PhiSettings::default());
        assert_eq!(d.phi(1_000_000), 0.0);
    }

    #[test]
    fn regular_peer_becomes_suspect_after_a_long_silence_only() {
        let (d, t) = detector_with(&[100; 50]);
        assert!(
            d.phi(t + 100) < 0.5,
            "one interval late: {}",
            d.phi(t + 100)
        );
        assert!(d.phi(t + 5_000) > 8.0, "5 s silent: {}", d.phi(t + 5_000));
    }

    #[test]
    fn jittery_peer_is_suspected_later_than_a_regular_one() {
        let (regular, t1) = detector_with(&[500; 100]);
        let jitter: Vec<u64> = (0..100)
            .map(|i| if i % 2 == 0 { 100 } else { 900 })
            .collect();
        let (jittery, t2) = detector_with(&jitter);
        assert!(jittery.phi(t2 + 2_500) < regular.phi(t1 + 2_500));
    }

    #[test]
    fn estimate_is_the_mean_and_deviation_of_the_window() {
        let (d, _) = detector_with(&[100, 300]);
        let (mean, std_dev) = d.estimate();
        assert_eq!(mean, 200.0);
        assert_eq!(std_dev, 100.0);
    }

    #[test]
    fn phi_is_finite_after_any_silence() {
        let (d, t) = detector_with(&[10; 10]);
        let phi = d.phi(t + INTERVAL_MS_MAX * 10);
        assert!(phi.is_finite() && phi > 1_000.0, "{phi}");
    }

    /// The cluster test's history (decision 0029's amendment): a peer paused for 13 s
    /// between heartbeats every 500 ms. Recorded whole, that interval keeps the peer from
    /// being suspected even 10 s into its next silence — the time after which its etcd
    /// lease expires and it leaves the node list, so a leader whose two peers were paused
    /// never counted both suspected and never resigned. Censored, it is suspected within
    /// 4 s, close to the 2 s of a peer that was never paused.
    #[test]
    fn a_past_pause_does_not_delay_the_next_suspicion() {
        let history: Vec<u64> = [vec![500; 40], vec![13_000], vec![500; 10]].concat();
        let whole = PhiSettings {
            threshold: f64::INFINITY,
            ..PhiSettings::default()
        };
        let (mut uncensored, mut t) = (PhiDetector::new(whole), 0);
        uncensored.heartbeat(t);
        for i in &history {
            t += i;
            uncensored.heartbeat(t);
        }
        let (censored, t_censored) = detector_with(&history);
        let (never_paused, _) = detector_with(&[500; 50]);
        assert_eq!(t, t_censored);
        let late = censored.suspected_after_ms();
        eprintln!(
            "suspected after {late} ms of silence (never paused: {} ms; whole: φ = {:.2} at 10 s)",
            never_paused.suspected_after_ms(),
            uncensored.phi(t + 10_000)
        );
        assert!(
            uncensored.phi(t + 10_000) < 8.0,
            "{}",
            uncensored.phi(t + 10_000)
        );
        assert!(
            censored.phi(t + 4_000) >= 8.0,
            "{}",
            censored.phi(t + 4_000)
        );
        assert!(late <= 4_000 && late >= never_paused.suspected_after_ms());
    }

    /// A peer whose heartbeats slow from every 500 ms to every 4 s for good is suspected at
    /// the first few long intervals, then learned: censoring bounds each sample, not the
    /// estimate, which follows the samples up.
    #[test]
    fn a_peer_that_became_slower_for_good_is_learned() {
        let history: Vec<u64> = [vec![500; 200], vec![4_000; 100]].concat();
        let mut d = PhiDetector::new(PhiSettings::default());
        let (mut t, mut suspected_at) = (0, Vec::new());
        d.heartbeat(t);
        for (i, interval) in history.iter().enumerate() {
            t += interval;
            if d.phi(t) >= 8.0 {
                suspected_at.push(i);
            }
            d.heartbeat(t);
        }
        assert!(!suspected_at.is_empty(), "the change is noticed");
        assert!(
            suspected_at.iter().all(|i| *i < 250),
            "still suspected after 50 slow intervals: {suspected_at:?}"
        );
        assert!(d.phi(t + 4_000) < 8.0, "{}", d.phi(t + 4_000));
    }

    #[test]
    fn no_threshold_means_no_censoring() {
        for threshold in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let d = PhiDetector::new(PhiSettings {
                threshold,
                ..PhiSettings::default()
            });
            assert_eq!(d.suspected_after_ms(), u64::MAX, "{threshold}");
        }
    }

    proptest! {
        /// `suspected_after_ms` inverts φ: φ has reached the threshold at that silence and
        /// not one ms before (within the float error of the inversion).
        #[test]
        fn suspected_after_is_where_phi_reaches_the_threshold(
            intervals in prop::collection::vec(0u64..5_000, 0..300),
            threshold in 1u32..=16,
        ) {
            let settings = PhiSettings { threshold: f64::from(threshold), ..PhiSettings::default() };
            let mut d = PhiDetector::new(settings);
            let mut t = 0;
            d.heartbeat(t);
            for i in &intervals {
                t += i;
                d.heartbeat(t);
            }
            let after = d.suspected_after_ms();
            let at = d.phi(t + after);
            prop_assert!(at >= f64::from(threshold) - 1e-6, "φ({after}) = {at}");
            let before = d.phi(t + after.saturating_sub(1));
            prop_assert!(after == 0 || before < f64::from(threshold) + 1e-6, "φ = {before}");
        }

        /// Between heartbeats φ never decreases as silence grows.
        #[test]
        fn phi_grows_with_silence(
            intervals in prop::collection::vec(0u64..5_000, 0..300),
            a in 0u64..100_000, b in 0u64..100_000,
        ) {
            let (d, t) = detector_with(&intervals);
            let (early, late) = (a.min(b), a.max(b));
            let (p_early, p_late) = (d.phi(t + early), d.phi(t + late));
            prop_assert!(p_early.is_finite() && p_late.is_finite());
            prop_assert!(p_early >= 0.0);
            prop_assert!(p_early <= p_late, "φ({early}) = {p_early} > φ({late}) = {p_late}");
        }

        /// A heartbeat at `now` brings φ(now) back to its floor: φ at zero elapsed time
        /// under the new estimate, well below any suspicion threshold.
        #[test]
        fn phi_resets_on_arrival(
            intervals in prop::collection::vec(1u64..5_000, 1..300),
            silence in 0u64..100_000,
        ) {
            let (mut d, t) = detector_with(&intervals);
            let now = t + silence;
            d.heartbeat(now);
            let after = d.phi(now);
            let (mean, std_dev) = d.estimate();
            let floor = phi_of(
                0.0,
                mean + d.settings.acceptable_pause_ms as f64,
                std_dev.max(d.settings.min_std_dev_ms as f64),
            );
            prop_assert!((after - floor).abs() < 1e-9, "φ after arrival {after} ≠ floor {floor}");
            prop_assert!(after < 0.5, "φ right after a heartbeat: {after}");
        }

        /// Memory is bounded by the window, and the running sums match the window's contents.
        #[test]
        fn memory_is_bounded_by_the_window(
            window in 1usize..64,
            arrivals in prop::collection::vec(0u64..10_000_000, 0..500),
        ) {
            let mut d = PhiDetector::new(PhiSettings { window, ..PhiSettings::default() });
            for t in arrivals {
                d.heartbeat(t);
                prop_assert!(d.samples() <= window);
                prop_assert_eq!(d.sum_ms, d.intervals.iter().sum::<u64>());
            }
        }
    }
}
