//! What an import did: the report (JSON with `--json`) and its lines for people.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::input::Format;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Of a histogram; `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The stream.
    pub stream: String,
    /// The file.
    pub file: String,
    /// How it was read.
    pub format: Format,
    /// The request ids' common part: each record's is this, `:`, and its line.
    pub request_id_prefix: String,
    /// Whether the stream was created by this import.
    pub created_stream: bool,
    /// Records read from the file.
    pub records: u64,
    /// Records appended now.
    pub appended: u64,
    /// Records the server already had (their request ids were recognised): not appended again.
    pub duplicates: u64,
    /// Attempts repeated after no answer or 429/503.
    pub retries: u64,
    /// Size of the file, bytes.
    pub file_bytes: u64,
    /// Request bodies sent (JSON), bytes.
    pub sent_bytes: u64,
    /// Time of the checking pass (hash, conversion), s.
    pub check_s: f64,
    /// Time of the sending pass, s.
    pub elapsed_s: f64,
    /// Records per second of the sending pass.
    pub records_per_s: f64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Latency of appends, request sent → answer (the server answers once the record is
    /// durable), µs.
    pub append_latency_us: Option<Percentiles>,
    /// Latency of duplicates (a lookup of the request id, nothing written), µs.
    pub duplicate_latency_us: Option<Percentiles>,
}

/// The human report, one line each, indented (the quickstart prints them too).
pub fn report_lines(r: &ImportReport) -> Vec<String> {
    let mut lines = vec![format!(
        "  records     {} read: {} appended, {} duplicates{}",
        grouped(r.records),
        grouped(r.appended),
        grouped(r.duplicates),
        if r.duplicates > 0 {
            " (already in the stream: recognised by their request ids, not appended twice)"
        } else {
            ""
        }
    )];
    lines.push(format!(
        "  bytes       {} in the file, {} of JSON sent",
        bytes(r.file_bytes),
        bytes(r.sent_bytes)
    ));
    lines.push(format!(
        "  time        {:.2} s, {} records/s, {} requests in flight, {} retries (checking the file first: {:.2} s)",
        r.elapsed_s,
        grouped(r.records_per_s.round() as u64),
        r.in_flight,
        r.retries,
        r.check_s
    ));
    if let Some(p) = &r.append_latency_us {
        lines.push(format!(
            "  append      p50 {}   p99 {}   max {}   (request → durable acknowledgment)",
            micros(p.p50),
            micros(p.p99),
            micros(p.max)
        ));
    }
    if let Some(p) = &r.duplicate_latency_us {
        lines.push(format!(
            "  duplicate   p50 {}   p99 {}   max {}   (request → original position; nothing written)",
            micros(p.p50),
            micros(p.p99),
            micros(p.max)
        ));
    }
    lines.push(format!("  request ids {}:<line>", r.request_id_prefix));
    lines
}

/// `27004` → `27,004`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes for people: `1.2 MB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// µs for people: `840 µs`, `3.1 ms`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(27_004), "27,004");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(micros(840), "840 µs");
        assert_eq!(micros(3_140), "3.1 ms");
        assert_eq!(bytes(1_500_000), "1.5 MB");
    }
}
