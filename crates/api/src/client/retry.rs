//! When to try a request again, and how long to wait first.
//!
//! A request is retried after a connection error, a timeout, `429 Too Many Requests` or
//! `503 Service Unavailable`, at most [`RetryPolicy::attempts_max`] times in all. The wait
//! before attempt `n + 1` is exponential backoff with jitter ("equal jitter": uniformly in
//! `[d·(1 − jitter), d]` with `d = backoff_initial_ms · 2ⁿ⁻¹`, capped at `backoff_max_ms`),
//! and never shorter than a `Retry-After` the server sent (itself capped at
//! `retry_after_max_ms`).
//!
//! Writes are retried with the same `Idempotency-Key`, so a retry of a write that did land is
//! answered with the original outcome (`duplicate: true`) instead of writing twice.

use std::time::Duration;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 6). 1 means no retry.
    pub attempts_max: u32,
    /// The first backoff, ms (default 50).
    pub backoff_initial_ms: u64,
    /// The longest backoff, ms (default 5,000).
    pub backoff_max_ms: u64,
    /// Share of each backoff taken off at random, 0.0..=1.0 (default 0.5).
    pub jitter: f64,
    /// The longest `Retry-After` honoured, ms (default 30,000); longer ones are cut to it.
    pub retry_after_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 6,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
            jitter: 0.5,
            retry_after_max_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            attempts_max: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1 attempts made so far), given a
    /// uniform random `unit` in `[0, 1)` and the server's `Retry-After`, if any.
    pub fn backoff(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self
            .backoff_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        let ms = (full as f64 * (1.0 - jitter)).round() as u64;
        let mut wait = Duration::from_millis(ms);
        if let Some(after) = retry_after {
            wait = wait.max(after.min(Duration::from_millis(self.retry_after_max_ms)));
        }
        wait
    }
}

/// Parses a `Retry-After` header: delay-seconds (RFC 9110 §10.2.3). An HTTP-date is not
/// honoured (`None`: the backoff alone decides), as Logbook sends seconds.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A small random number generator (SplitMix64) for jitter and request ids, seeded from the
/// standard library's per-process random hasher keys. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from the OS (through `RandomState`) and the clock.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        Jitter(h.finish())
    }

    /// A generator that replays from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Jitter(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fresh request id: `lb-` and 32 hex digits (128 random bits), within the server's
    /// 1..=128 printable ASCII bytes.
    pub fn request_id(&mut self) -> String {
        format!("lb-{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_takes_off_at_most_its_share() {
        let p = RetryPolicy::default();
        // No jitter drawn (unit 0): the full exponential value.
        let full: Vec<u64> = (1..=9).map(|a| ms(p.backoff(a, 0.0, None))).collect();
        assert_eq!(full, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // The largest draw takes off at most half.
        assert_eq!(ms(p.backoff(3, 0.999_999, None)), 100);
        let mut rng = Jitter::from_seed(7);
        for attempt in 1..=12 {
            let d = ms(p.backoff(attempt, rng.unit(), None));
            let cap = full[(attempt as usize - 1).min(8)];
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {attempt}: {d} ms vs {cap}"
            );
        }
        // Huge attempt numbers do not overflow.
        assert_eq!(ms(p.backoff(u32::MAX, 0.0, None)), 5000);
    }

    #[test]
    fn retry_after_is_a_floor_with_a_cap() {
        let p = RetryPolicy::default();
        let after = parse_retry_after(" 2 ");
        assert_eq!(after, Some(Duration::from_secs(2)));
        assert_eq!(ms(p.backoff(1, 0.0, after)), 2000);
        // A backoff already longer than Retry-After is kept.
        assert_eq!(ms(p.backoff(9, 0.0, Some(Duration::from_secs(1)))), 5000);
        // An absurd Retry-After is cut to retry_after_max_ms.
        assert_eq!(
            ms(p.backoff(1, 0.0, parse_retry_after("86400"))),
            p.retry_after_max_ms
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn request_ids_are_distinct_printable_and_replayable() {
        let mut a = Jitter::from_seed(42);
        let mut b = Jitter::from_seed(42);
        let ids: Vec<String> = (0..1000).map(|_| a.request_id()).collect();
        assert_eq!(ids[0], b.request_id());
        let set: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 35);
            assert!(id.bytes().all(|c| c.is_ascii_graphic()));
        }
        assert_ne!(
            Jitter::from_entropy().request_id(),
            Jitter::from_entropy().request_id()
        );
    }
}
