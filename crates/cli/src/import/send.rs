//! Sending one record: a single-record append with its request id, retried after no
//! answer or 429/503 with jittered backoff, counted and timed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;

use logbook_api::ProblemCode;
use logbook_api::streams::AppendOne;

use super::report::Percentiles;
use crate::client::{Client, is_problem};

/// A worker's counts.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) appended: u64,
    pub(super) duplicates: u64,
    pub(super) retries: u64,
    pub(super) sent_bytes: u64,
}

impl Tally {
    pub(super) fn merge(&mut self, other: &Tally) {
        self.appended += other.appended;
        self.duplicates += other.duplicates;
        self.retries += other.retries;
        self.sent_bytes += other.sent_bytes;
    }
}

/// Latencies, shared by all workers: a histogram of this range is ~200 kB, one pair per
/// worker would cost hundreds of MB at high --in-flight. A lock per answer is nothing beside
/// an HTTP round trip.
pub(super) struct Histograms {
    pub(super) append_us: Mutex<Histogram<u64>>,
    pub(super) duplicate_us: Mutex<Histogram<u64>>,
}

impl Histograms {
    pub(super) fn new() -> anyhow::Result<Histograms> {
        // 3 significant digits from 1 µs to 1 h.
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Histograms {
            append_us: Mutex::new(histogram()?),
            duplicate_us: Mutex::new(histogram()?),
        })
    }

    fn record(&self, duplicate: bool, us: u64) {
        let h = if duplicate {
            &self.duplicate_us
        } else {
            &self.append_us
        };
        if let Ok(mut h) = h.lock() {
            h.saturating_record(us.max(1));
        }
    }

    pub(super) fn percentiles(h: &Mutex<Histogram<u64>>) -> Option<Percentiles> {
        h.lock().ok().and_then(|h| Percentiles::of(&h))
    }
}

/// What a worker needs to send records.
pub(super) struct Sending<'a> {
    pub(super) client: &'a Client,
    pub(super) path: &'a str,
    pub(super) retries: u32,
    pub(super) cancel: &'a AtomicBool,
    pub(super) histograms: &'a Histograms,
}

/// The error of a send that stopped because the import was cancelled (not the record's fault).
#[derive(Debug)]
pub(super) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Cancelled {}

impl Sending<'_> {
    /// Sends one record, retrying transient failures; counts the outcome.
    pub(super) fn send(
        &self,
        body: &[u8],
        request_id: &str,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let retries = self.retries;
        let mut attempt = 0u32;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Cancelled.into());
            }
            let sent = Instant::now();
            tally.sent_bytes += body.len() as u64;
            match self.client.try_post_json::<AppendOne>(
                self.path,
                body,
                &[("idempotency-key", request_id)],
            ) {
                Ok(answer) => {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let duplicate = answer.status == 200 || answer.body.duplicate;
                    if duplicate {
                        tally.duplicates += 1;
                    } else {
                        tally.appended += 1;
                    }
                    self.histograms.record(duplicate, us);
                    return Ok(());
                }
                Err(f) if f.transient && attempt < retries => {
                    attempt += 1;
                    tally.retries += 1;
                    tracing::debug!(request_id, attempt, error = %f.error, "retrying");
                    sleep_unless(self.cancel, backoff(attempt, f.retry_after));
                }
                Err(f) => {
                    let mut error = f.error;
                    if f.transient {
                        error = error.context(format!("no success after {retries} retries"));
                    }
                    if is_problem(&error, ProblemCode::RequestIdConflict) {
                        error = error.context(
                            "this file's content was imported into this stream before with other settings \
                             (--key, --format): its request ids are taken by other records. Import into a new \
                             stream, or with the settings used before",
                        );
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Sleeps for `wait`, waking early (within 20 ms) once `cancel` is set.
fn sleep_unless(cancel: &AtomicBool, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// Wait before retry `attempt` (1-based): the server's Retry-After, else 50 ms doubling up to
/// 6.4 s; plus up to 25 % jitter so retrying workers do not come back in step.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = retry_after
        .unwrap_or_else(|| Duration::from_millis(50u64 << attempt.saturating_sub(1).min(7)));
    let jitter_ms = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 4);
    base + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ServerArgs;

    #[test]
    fn backoff_doubles_from_50_ms_and_follows_retry_after() {
        for attempt in 1..=12 {
            let wait = backoff(attempt, None);
            let base = Duration::from_millis(50 << (attempt - 1).min(7));
            assert!(
                wait >= base && wait <= base + base / 4,
                "{attempt}: {wait:?}"
            );
        }
        let wait = backoff(1, Some(Duration::from_secs(2)));
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2_500));
    }

    #[test]
    fn a_cancelled_import_sends_nothing_and_stops_waiting() {
        let cancel = AtomicBool::new(true);
        // Would wait a minute; returns at once.
        sleep_unless(&cancel, Duration::from_secs(60));
        let client = Client::new(&ServerArgs {
            server: "http://127.0.0.1:9/".into(),
            client_timeout_ms: 2_000,
            token: Some("lb_test".into()),
            data_dir: "./data".into(),
            ca_cert: None,
        })
        .unwrap();
        let histograms = Histograms::new().unwrap();
        let sending = Sending {
            client: &client,
            path: &logbook_api::paths::records("s"),
            retries: 8,
            cancel: &cancel,
            histograms: &histograms,
        };
        let mut tally = Tally::default();
        let e = sending.send(b"{}", "import:0:2", &mut tally).unwrap_err();
        assert!(e.is::<Cancelled>(), "{e}");
        assert_eq!(tally.sent_bytes, 0);
    }
}
