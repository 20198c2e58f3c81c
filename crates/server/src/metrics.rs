//! Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! One registry per server (no globals, so tests can run several servers in one process);
//! see `docs/decisions/0004-server-metrics-and-http-stack.md` for the choice of the `prometheus` crate.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `logbook_http_request_duration_seconds` | `method`, `route` | latency histogram per endpoint (route template) |
//! | `logbook_http_responses_total` | `method`, `route`, `status` | responses by status |
//! | `logbook_operation_duration_seconds` | `op` (`append`, `append_idempotent`, `commit`) | latency of the library call, fsync wait included |
//! | `logbook_records_appended_total` | — | records acknowledged |
//! | `logbook_appends_total` | — | append requests acknowledged (duplicates included) |
//! | `logbook_duplicates_total` | `kind` (`append`, `commit`) | retries answered from the request-id index |
//! | `logbook_commits_total` | — | transactions committed |
//! | `logbook_txn_aborts_total` | `reason` (an error code, `explicit`, `idle_timeout`, `shutdown`) | transactions ended without a commit; `outcome_unknown`: commits whose append's outcome the leader could not learn (they may be stored; the leader's store is poisoned and replaced) |
//! | `logbook_open_transactions` | — | interactive transactions open now |
//! | `logbook_txn_certifier_bytes` | — | bytes the certifier keeps of committed transactions, as its budget (`certifier_bytes_max`) counts them (set at each scrape) |
//! | `logbook_ready` | — | 1 once the data directory is open |
//! | `logbook_subscriptions` | — | push-tail subscriptions open now |
//! | `logbook_subscriptions_ended_total` | `reason` (`client_gone`, `slow_consumer`, `shutdown`, `error`, `lifetime`) | push-tail subscriptions ended, by why |
//! | `logbook_scrub_bytes_total` | — | bytes of sealed segments the scrubber read and checked (set at each scrape) |
//! | `logbook_scrub_errors_total` | — | damaged places the scrubber found, each once (set at each scrape) |
//! | `logbook_scrub_passes_total` | — | scrubber passes finished over every sealed segment (set at each scrape) |
//! | `logbook_view_audits_total` | `view` | audits of the view finished (set at each scrape) |
//! | `logbook_view_audit_mismatches_total` | `view` | audits that found the live view or its stored checkpoints different from the recomputation (set at each scrape) |
//! | `logbook_view_lag_records` | `view`, `version` | records of the source not yet applied (set at each scrape) |
//! | `logbook_view_lag_ms` | `view`, `version` | how far the applied records trail the newest, by record timestamps (set at each scrape) |
//! | `logbook_peer_phi` | `peer` | a cluster node's suspicion of another node, φ of its heartbeats (set at each scrape) |
//! | `logbook_peer_suspected` | `peer` | 1 while φ is at or above `phi_threshold` (default 8) (set at each scrape) |
//! | `logbook_peer_clock_offset_ms` | `peer` | the other node's clock minus this node's, from its latest heartbeat (set at each scrape) |
//! | `logbook_clock_offset_ms` | — | this cluster node's clock minus the cluster's median clock |
//! | `logbook_clock_offset_alarm` | — | 1 while that offset exceeds `max_clock_offset_ms` (the node then leads nothing and takes no writes) |

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Latency per endpoint.
    pub http_duration: HistogramVec,
    /// Responses per endpoint and status.
    pub http_responses: IntCounterVec,
    /// Latency per library operation.
    pub op_duration: HistogramVec,
    /// Records acknowledged.
    pub records_appended: IntCounter,
    /// Append requests acknowledged.
    pub appends: IntCounter,
    /// Retries answered from a request-id index.
    pub duplicates: IntCounterVec,
    /// Commits.
    pub commits: IntCounter,
    /// Aborts by reason.
    pub aborts: IntCounterVec,
    /// Open interactive transactions.
    pub open_txns: IntGauge,
    /// Bytes of the certifier's summaries, set at each scrape.
    pub certifier_bytes: IntGauge,
    /// 1 when ready.
    pub ready: IntGauge,
    /// Push-tail subscriptions open.
    pub subscriptions: IntGauge,
    /// Push-tail subscriptions ended, by reason.
    pub subscriptions_ended: IntCounterVec,
    /// Requests being handled (those counted against `requests_max` or `long_polls_max`),
    /// set at each scrape.
    pub requests_in_flight: IntGauge,
    /// Per view version: records not yet applied.
    pub view_lag_records: IntGaugeVec,
    /// Per view version: lag by record timestamps, ms.
    pub view_lag_ms: IntGaugeVec,
    /// Bytes the segment scrubber checked.
    pub scrub_bytes: IntCounter,
    /// Damaged places the segment scrubber found.
    pub scrub_errors: IntCounter,
    /// Passes the segment scrubber finished.
    pub scrub_passes: IntCounter,
    /// Audits finished, per view.
    pub view_audits: IntCounterVec,
    /// Audits that found a mismatch, per view.
    pub view_audit_mismatches: IntCounterVec,
    /// φ per peer (cluster).
    pub peer_phi: GaugeVec,
    /// 1 per suspected peer (cluster).
    pub peer_suspected: IntGaugeVec,
    /// Clock offset per peer, ms (cluster).
    pub peer_clock_offset_ms: IntGaugeVec,
    /// This node's clock minus the cluster's median, ms (cluster).
    pub clock_offset_ms: IntGauge,
    /// 1 while this node's clock is off the median beyond the bound (cluster).
    pub clock_offset_alarm: IntGauge,
    /// Held while the scrubber's counters are brought up to its totals, so that two scrapes
    /// at once do not both add the difference.
    scrub_sync: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Latency buckets in seconds: 50 µs doubling to about 13 s.
fn buckets() -> Vec<f64> {
    (0..19).map(|i| 0.000_05 * f64::from(1u32 << i)).collect()
}

impl Metrics {
    /// A fresh registry with every metric registered.
    ///
    /// # Panics
    /// Never in practice: registration fails only for duplicate or malformed names, which
    /// are constants here (a unit test registers them all).
    #[expect(
        clippy::expect_used,
        reason = "metric names are constants; a failure is a bug caught by every test"
    )]
    pub fn new() -> Self {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets()), labels)
                .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        Metrics {
            http_duration: hist(
                "logbook_http_request_duration_seconds",
                "HTTP request latency by endpoint",
                &["method", "route"],
            ),
            http_responses: counter_vec(
                "logbook_http_responses_total",
                "HTTP responses by endpoint and status",
                &["method", "route", "status"],
            ),
            op_duration: hist(
                "logbook_operation_duration_seconds",
                "Latency of library operations, fsync wait included",
                &["op"],
            ),
            records_appended: counter("logbook_records_appended_total", "Records acknowledged"),
            appends: counter("logbook_appends_total", "Append requests acknowledged"),
            duplicates: counter_vec(
                "logbook_duplicates_total",
                "Retries answered from a request-id index",
                &["kind"],
            ),
            commits: counter("logbook_commits_total", "Transactions committed"),
            aborts: counter_vec(
                "logbook_txn_aborts_total",
                "Transactions ended without a commit, by reason",
                &["reason"],
            ),
            open_txns: gauge(
                "logbook_open_transactions",
                "Interactive transactions open now",
            ),
            certifier_bytes: gauge(
                "logbook_txn_certifier_bytes",
                "Bytes the transaction certifier keeps of committed transactions (its budget's count)",
            ),
            ready: gauge("logbook_ready", "1 once the data directory is open"),
            subscriptions: gauge("logbook_subscriptions", "Push-tail subscriptions open now"),
            subscriptions_ended: counter_vec(
                "logbook_subscriptions_ended_total",
                "Push-tail subscriptions ended, by reason",
                &["reason"],
            ),
            requests_in_flight: gauge(
                "logbook_http_requests_in_flight",
                "Requests being handled now, long polls included (health and metrics not counted)",
            ),
            view_lag_records: gauge_vec(
                "logbook_view_lag_records",
                "Records of the source stream a view version has not applied yet",
                &["view", "version"],
            ),
            view_lag_ms: gauge_vec(
                "logbook_view_lag_ms",
                "How far a view version's applied records trail the newest, by record timestamps",
                &["view", "version"],
            ),
            scrub_bytes: counter(
                "logbook_scrub_bytes_total",
                "Bytes of sealed segments the scrubber read and checked",
            ),
            scrub_errors: counter(
                "logbook_scrub_errors_total",
                "Damaged places in sealed segments the scrubber found (each once)",
            ),
            scrub_passes: counter(
                "logbook_scrub_passes_total",
                "Scrubber passes finished over every sealed segment",
            ),
            view_audits: counter_vec(
                "logbook_view_audits_total",
                "Audits of a view finished (recomputed from the log, digests compared)",
                &["view"],
            ),
            view_audit_mismatches: counter_vec(
                "logbook_view_audit_mismatches_total",
                "Audits that found the live view or its stored checkpoints different from the recomputation",
                &["view"],
            ),
            peer_phi: float_gauge_vec(
                "logbook_peer_phi",
                "Suspicion of another cluster node: phi accrual over its heartbeats",
                &["peer"],
            ),
            peer_suspected: gauge_vec(
                "logbook_peer_suspected",
                "1 while another cluster node's phi is at or above the threshold (8)",
                &["peer"],
            ),
            peer_clock_offset_ms: gauge_vec(
                "logbook_peer_clock_offset_ms",
                "Another cluster node's clock minus this node's, ms, from its latest heartbeat",
                &["peer"],
            ),
            clock_offset_ms: gauge(
                "logbook_clock_offset_ms",
                "This cluster node's clock minus the cluster's median clock, ms",
            ),
            clock_offset_alarm: gauge(
                "logbook_clock_offset_alarm",
                "1 while this node's clock is off the cluster's median beyond max_clock_offset_ms",
            ),
            scrub_sync: std::sync::Arc::default(),
            registry,
        }
    }

    /// Brings the view auditor's counters up to its totals (per view; they only grow).
    pub fn set_view_audits(&self, status: &logbook_views::AuditorStatus) {
        let _one_at_a_time = self.scrub_sync.lock().unwrap_or_else(|e| e.into_inner());
        for v in &status.views {
            for (counter, total) in [
                (
                    self.view_audits.with_label_values(&[v.view.as_str()]),
                    v.audits,
                ),
                (
                    self.view_audit_mismatches
                        .with_label_values(&[v.view.as_str()]),
                    v.mismatches,
                ),
            ] {
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }

    /// Brings the scrubber's counters up to its totals (they only grow).
    pub fn set_scrub(&self, status: &logbook_log::ScrubStatus) {
        let _one_at_a_time = self.scrub_sync.lock().unwrap_or_else(|e| e.into_inner());
        for (counter, total) in [
            (&self.scrub_bytes, status.bytes_scrubbed),
            (&self.scrub_errors, status.errors),
            (&self.scrub_passes, status.passes),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Sets the view lag gauges from the views' status now; views and versions that are gone
    /// disappear from the gauges.
    pub fn set_view_lag(&self, views: &logbook_views::Views) {
        self.view_lag_records.reset();
        self.view_lag_ms.reset();
        for info in views.list() {
            let Ok(status) = views.status(&info.name, false) else {
                continue;
            };
            for v in status.versions {
                let version = v.version.to_string();
                let labels = [info.name.as_str(), version.as_str()];
                self.view_lag_records
                    .with_label_values(&labels)
                    .set(i64::try_from(v.lag_records).unwrap_or(i64::MAX));
                self.view_lag_ms.with_label_values(&labels).set(v.lag_ms);
            }
        }
    }

    /// Sets the peer gauges from the heartbeats' view now; peers that are gone disappear.
    pub fn set_peers(&self, peers: &[logbook_api::ops::ClusterPeer]) {
        self.peer_phi.reset();
        self.peer_suspected.reset();
        self.peer_clock_offset_ms.reset();
        for p in peers {
            let labels = [p.node_id.as_str()];
            self.peer_phi.with_label_values(&labels).set(p.phi);
            self.peer_suspected
                .with_label_values(&labels)
                .set(i64::from(p.suspected));
            if let Some(offset) = p.clock_offset_ms {
                self.peer_clock_offset_ms
                    .with_label_values(&labels)
                    .set(offset);
            }
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_registers_and_renders() {
        let m = super::Metrics::new();
        m.http_duration
            .with_label_values(&["GET", logbook_api::paths::route::HEALTH])
            .observe(0.001);
        m.aborts.with_label_values(&["idle_timeout"]).inc();
        let text = m.render();
        assert!(text.contains("logbook_http_request_duration_seconds_bucket"));
        assert!(text.contains("logbook_txn_aborts_total{reason=\"idle_timeout\"} 1"));
    }
}
