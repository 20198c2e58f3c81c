//! What a run measured: each client's tallies, their fold into the figures both systems
//! report, and the progress bar and latency JSON every side of the benchmark shares.

use std::io::IsTerminal;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::bench::kit::{latency_histogram, round1, round3, round4};

/// The figures both systems report.
pub(super) struct Figures {
    pub(super) committed: u64,
    pub(super) failed: u64,
    /// Tries in all: committed and failed transactions' tries.
    pub(super) tries: u64,
    /// Aborted tries.
    pub(super) aborts: u64,
    pub(super) seconds: f64,
    /// Committed transactions' latency, µs.
    pub(super) latency: Histogram<u64>,
}

impl Figures {
    pub(super) fn tps(&self) -> f64 {
        self.committed as f64 / self.seconds.max(1e-9)
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let h = &self.latency;
        let ms = |q: f64| round3(h.value_at_quantile(q) as f64 / 1000.0);
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        json!({
            "tps": round1(self.tps()),
            "abort_rate": round4(ratio(self.aborts, self.tries)),
            "failed_after_retries": self.failed,
            "failed_rate": round4(ratio(self.failed, self.committed + self.failed)),
            "latency_ms": {
                "p50": ms(0.50),
                "p95": ms(0.95),
                "p99": ms(0.99),
                "max": round3(h.max() as f64 / 1000.0),
                "mean": round3(h.mean() / 1000.0),
            },
            "transactions": self.committed,
            "tries": self.tries,
            "aborts": self.aborts,
            "seconds": round3(self.seconds),
        })
    }
}

pub(super) fn bar(total: u64, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let progress = ProgressBar::with_draw_target(Some(total), target);
    let template = format!("bench tpcb {what} [{{bar:30}}] {{pos}}/{{len}} {{elapsed_precise}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}

/// One client's tallies.
pub(super) struct ClientTally {
    pub(super) committed: u64,
    pub(super) failed: u64,
    pub(super) tries: u64,
    pub(super) aborts: u64,
    pub(super) deltas: i128,
    pub(super) latency: Histogram<u64>,
    /// Over HTTP: each commit request's latency (send to answer, µs), whatever its answer.
    pub(super) commit_latency: Histogram<u64>,
}

impl ClientTally {
    /// Zero tallies and empty latency histograms.
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            committed: 0,
            failed: 0,
            tries: 0,
            aborts: 0,
            deltas: 0,
            latency: latency_histogram()?,
            commit_latency: latency_histogram()?,
        })
    }
}

/// The tallies of clients that all ended (each joined before this is called), in client
/// order; or the first error any of them ended with — a client's own, or its join failure.
pub(super) fn gather(
    ends: impl IntoIterator<Item = anyhow::Result<ClientTally>>,
) -> anyhow::Result<Vec<ClientTally>> {
    ends.into_iter().collect()
}

/// The figures of clients' tallies over `seconds`, and the sum of their committed deltas.
pub(super) fn fold_tallies<'a>(
    tallies: impl IntoIterator<Item = &'a ClientTally>,
    seconds: f64,
) -> anyhow::Result<(Figures, i128)> {
    let mut figures = Figures {
        committed: 0,
        failed: 0,
        tries: 0,
        aborts: 0,
        seconds,
        latency: latency_histogram()?,
    };
    let mut deltas = 0i128;
    for t in tallies {
        figures.committed += t.committed;
        figures.failed += t.failed;
        figures.tries += t.tries;
        figures.aborts += t.aborts;
        figures.latency.add(&t.latency)?;
        deltas += t.deltas;
    }
    Ok((figures, deltas))
}

/// Commit requests' latency: p50 and p99 in ms, and how many.
pub(super) fn commit_latency_json(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": round3(h.value_at_quantile(0.50) as f64 / 1000.0),
        "p99": round3(h.value_at_quantile(0.99) as f64 / 1000.0),
        "requests": h.len(),
    })
}
