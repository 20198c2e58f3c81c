//! `logbook stats`: latency percentiles and counters of a running server, from `/metrics`.
//!
//! The server exports Prometheus histograms (buckets from 50 µs doubling to ~13 s), not the
//! samples, so a percentile is estimated the way Prometheus' `histogram_quantile` does it:
//! find the bucket holding the rank and interpolate linearly inside it. The true value lies
//! in that bucket, so the estimate is within a factor of two; the table says so. A
//! percentile in the last, unbounded bucket is shown as "> the largest bound" (in JSON: the
//! bound, with the column listed under `overflow`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use logbook_api::paths;
use logbook_api::views::{ViewDetail, ViewList};

use crate::client::{Client, ServerArgs, print_json};

/// The quantiles printed, with their column names.
const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (0.999, "p999")];

/// Options of `logbook stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print one JSON document: latencies (ms), counters and view lag. Percentiles are
    /// numbers (`null` with no samples); one above the largest bucket is that bound, and its
    /// column (e.g. "p999") is listed in the row's `overflow`. The counters `duplicates` and
    /// `txn_aborts` are always objects (by kind / reason), the others always numbers.
    #[arg(long)]
    pub json: bool,
}

/// One sample line of the text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one line of the Prometheus text format (comments and blank lines give `None`).
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// One histogram series: cumulative buckets (upper bound, count), sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// A quantile estimate, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Estimate {
    /// Interpolated inside a bounded bucket.
    Within(f64),
    /// In the unbounded last bucket: above this bound.
    Above(f64),
}

impl Histogram {
    /// Estimates the `q` quantile as Prometheus' `histogram_quantile` does, except that the
    /// rank is a whole sample (nearest rank, `ceil(q × count)`): quantiles that fall on the
    /// same sample get the same estimate (with one sample, p50 = p99); `None` when empty.
    fn quantile(&self, q: f64) -> Option<Estimate> {
        if self.count <= 0.0 {
            return None;
        }
        let mut buckets = self.buckets.clone();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The tolerance keeps 0.5 × 20 at rank 10 despite floating point.
        let rank = (q * self.count - 1e-9).ceil().max(1.0);
        let (mut lower, mut below) = (0.0, 0.0);
        for (bound, cumulative) in buckets {
            if cumulative >= rank && cumulative > below {
                if bound.is_infinite() {
                    return Some(Estimate::Above(lower));
                }
                let share = (rank - below) / (cumulative - below);
                return Some(Estimate::Within(lower + (bound - lower) * share));
            }
            lower = bound;
            below = cumulative;
        }
        Some(Estimate::Above(lower))
    }
}

/// A quantile in ms for JSON: always a number (or `null` with no samples); one in the
/// unbounded bucket is the largest bound, and the caller lists it under `overflow`.
fn estimate_ms(e: Option<Estimate>) -> (Value, bool) {
    match e {
        None => (Value::Null, false),
        Some(Estimate::Within(s)) => (json!(s * 1e3), false),
        Some(Estimate::Above(s)) => (json!(s * 1e3), true),
    }
}

/// Counters a script may look for, present (empty, or 0) even before any traffic: scalar
/// ones, and ones by label (objects keyed by the label value).
const SCALARS: [&str; 5] = [
    "records_appended",
    "appends",
    "commits",
    "open_transactions",
    "ready",
];
const BY_LABEL: [&str; 2] = ["duplicates", "txn_aborts"];

fn estimate_text(e: Option<Estimate>) -> String {
    match e {
        None => "-".to_string(),
        Some(Estimate::Within(s)) => format!("{:.3}", s * 1e3),
        Some(Estimate::Above(s)) => format!(">{:.0}", s * 1e3),
    }
}

/// The histograms of a scrape by (what, name): `op` for library operations, `endpoint`
/// for HTTP routes.
fn histograms(samples: &[Sample]) -> BTreeMap<(&'static str, String), Histogram> {
    let mut out: BTreeMap<(&'static str, String), Histogram> = BTreeMap::new();
    for s in samples {
        let (kind, series) = if let Some(part) =
            s.name.strip_prefix("logbook_operation_duration_seconds")
        {
            ("op", (part, s.label("op").unwrap_or_default().to_string()))
        } else if let Some(part) = s.name.strip_prefix("logbook_http_request_duration_seconds") {
            let name = format!(
                "{} {}",
                s.label("method").unwrap_or_default(),
                s.label("route").unwrap_or_default()
            );
            ("endpoint", (part, name))
        } else {
            continue;
        };
        let (part, name) = series;
        let h = out.entry((kind, name)).or_default();
        match part {
            "_bucket" => {
                if let Some(le) = s.label("le").and_then(|le| match le {
                    "+Inf" => Some(f64::INFINITY),
                    v => v.parse().ok(),
                }) {
                    h.buckets.push((le, s.value));
                }
            }
            "_sum" => h.sum = s.value,
            "_count" => h.count = s.value,
            _ => {}
        }
    }
    out
}

/// Counters and gauges (not histograms, not per-endpoint responses) as JSON: a metric with
/// one label becomes an object keyed by that label's value.
fn counters(samples: &[Sample]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for s in samples {
        if s.name.contains("_duration_seconds") || s.name == "logbook_http_responses_total" {
            continue;
        }
        let Some(short) = s.name.strip_prefix("logbook_") else {
            continue;
        };
        let short = short.strip_suffix("_total").unwrap_or(short).to_string();
        let value = json!(s.value as u64);
        match s.labels.as_slice() {
            [] => {
                out.insert(short, value);
            }
            [(_, label)] => {
                let entry = out.entry(short).or_insert_with(|| json!({}));
                if let Some(map) = entry.as_object_mut() {
                    map.insert(label.clone(), value);
                }
            }
            _ => {}
        }
    }
    out
}

/// HTTP responses by status class (2xx, 4xx, 5xx).
fn responses(samples: &[Sample]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "logbook_http_responses_total")
    {
        let class = s
            .label("status")
            .and_then(|st| st.chars().next())
            .map_or_else(|| "?".to_string(), |c| format!("{c}xx"));
        *out.entry(class).or_insert(0) += s.value as u64;
    }
    out
}

/// One version of a view and its lag (`--json`: an element of `views`).
#[derive(Debug, Serialize)]
struct ViewLag {
    view: String,
    version: u64,
    /// Whether this version serves reads.
    current: bool,
    lag_records: u64,
    lag_ms: i64,
    /// Why the version stopped, if it did.
    error: Option<String>,
}

/// The lag of every version of every view (from the views API: `/metrics` has no view
/// gauges yet).
fn view_lag(client: &Client) -> anyhow::Result<Vec<ViewLag>> {
    let list: ViewList = client.get_as(&paths::views(), &[])?;
    let mut out = Vec::new();
    for v in list.views {
        let detail: ViewDetail = client.get_as(&paths::view(&v.view), &[])?;
        out.extend(detail.versions.into_iter().map(|version| ViewLag {
            view: v.view.clone(),
            version: version.version,
            current: version.version == detail.current,
            lag_records: version.lag_records,
            lag_ms: version.lag_ms,
            error: version.error,
        }));
    }
    Ok(out)
}

/// Runs `logbook stats`.
pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let text = client.get_text(&paths::metrics())?;
    let samples: Vec<Sample> = text.lines().filter_map(parse_line).collect();
    let hists = histograms(&samples);
    let mut counters = counters(&samples);
    for name in SCALARS {
        counters.entry(name.to_string()).or_insert_with(|| json!(0));
    }
    for name in BY_LABEL {
        counters
            .entry(name.to_string())
            .or_insert_with(|| json!({}));
    }
    let responses = responses(&samples);
    // Latencies and counters are worth printing even when the views cannot be listed
    // (e.g. a server still opening its data directory).
    let (views, views_error) = match view_lag(&client) {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    if args.json {
        let latency: Vec<Value> = hists
            .iter()
            .map(|((kind, name), h)| {
                let mut row = json!({
                    "kind": kind, "name": name, "count": h.count as u64,
                    "mean_ms": if h.count > 0.0 { json!(h.sum / h.count * 1e3) } else { Value::Null },
                });
                let mut overflow = Vec::new();
                for (q, column) in QUANTILES {
                    let (ms, above) = estimate_ms(h.quantile(q));
                    row[format!("{column}_ms")] = ms;
                    if above {
                        overflow.push(column);
                    }
                }
                row["overflow"] = json!(overflow);
                row
            })
            .collect();
        return print_json(&json!({
            "server": client.base(),
            "quantiles": "interpolated linearly within Prometheus histogram buckets (each bucket spans a factor of 2)",
            "latency": latency,
            "counters": counters,
            "responses": responses,
            "views": views,
            "views_error": views_error,
        }));
    }
    outln!("latency at {}, ms", client.base());
    outln!(
        "{:<9} {:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "kind",
        "name",
        "count",
        "mean",
        "p50",
        "p95",
        "p99",
        "p999"
    );
    for ((kind, name), h) in &hists {
        if h.count <= 0.0 {
            continue;
        }
        let q: Vec<String> = QUANTILES
            .iter()
            .map(|(q, _)| estimate_text(h.quantile(*q)))
            .collect();
        outln!(
            "{:<9} {:<44} {:>9} {:>9.3} {:>9} {:>9} {:>9} {:>9}",
            kind,
            name,
            h.count as u64,
            h.sum / h.count * 1e3,
            q[0],
            q[1],
            q[2],
            q[3]
        );
    }
    outln!(
        "(percentiles are interpolated within the histogram's buckets, which double in width: \
         each is within a factor of 2 of the true value; '>' = above the largest bucket)"
    );
    outln!();
    outln!("counters");
    for (name, value) in &counters {
        match value {
            Value::Object(by) => {
                let parts: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let shown = if parts.is_empty() {
                    "0".to_string()
                } else {
                    parts.join(", ")
                };
                outln!("  {name:<24} {shown}");
            }
            v => outln!("  {name:<24} {v}"),
        }
    }
    let classes: Vec<String> = responses.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let classes = if classes.is_empty() {
        "0".to_string()
    } else {
        classes.join(", ")
    };
    outln!("  {:<24} {classes}", "http_responses");
    outln!();
    if let Some(e) = &views_error {
        outln!("views: unavailable ({e})");
    } else if views.is_empty() {
        outln!("views: none");
    } else {
        outln!(
            "{:<24} {:>8} {:>12} {:>10}",
            "view lag",
            "version",
            "records",
            "ms"
        );
        for v in &views {
            outln!(
                "{:<24} {:>8} {:>12} {:>10}{}",
                v.view,
                format!("v{}{}", v.version, if v.current { "*" } else { "" }),
                v.lag_records,
                v.lag_ms,
                v.error
                    .as_deref()
                    .map(|e| format!("  STOPPED: {e}"))
                    .unwrap_or_default()
            );
        }
        outln!("(* the version serving reads)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_values() {
        let s = parse_line(r#"m_bucket{op="a\"b",le="+Inf"} 7"#);
        assert_eq!(
            s,
            Some(Sample {
                name: "m_bucket".into(),
                labels: vec![("op".into(), "a\"b".into()), ("le".into(), "+Inf".into())],
                value: 7.0
            })
        );
        assert_eq!(
            parse_line("logbook_commits_total 3").map(|s| s.value),
            Some(3.0)
        );
        assert_eq!(parse_line("# HELP x y"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_rank() {
        // 10 samples ≤ 1 ms, 10 more in (1, 2] ms, none above.
        let h = Histogram {
            buckets: vec![(0.001, 10.0), (0.002, 20.0), (f64::INFINITY, 20.0)],
            sum: 0.03,
            count: 20.0,
        };
        let ms = |q| match h.quantile(q) {
            Some(Estimate::Within(s)) => (s * 1e6).round() / 1e3,
            other => panic!("{other:?}"),
        };
        assert_eq!(ms(0.5), 1.0);
        assert_eq!(ms(0.75), 1.5);
        assert_eq!(ms(0.25), 0.5);
        assert_eq!(ms(1.0), 2.0);
        // Samples in the unbounded bucket are only known to be above the last bound.
        let h = Histogram {
            buckets: vec![(0.001, 1.0), (f64::INFINITY, 2.0)],
            sum: 1.0,
            count: 2.0,
        };
        assert_eq!(h.quantile(0.99), Some(Estimate::Above(0.001)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    /// Issue 11: one sample printed p50 0.5 ms, p95 0.95 ms, p99 0.99 ms.
    #[test]
    fn quantiles_of_one_sample_are_that_sample() {
        let h = Histogram {
            buckets: vec![(0.0005, 0.0), (0.001, 1.0), (f64::INFINITY, 1.0)],
            sum: 0.0007,
            count: 1.0,
        };
        let all: Vec<_> = QUANTILES.iter().map(|(q, _)| h.quantile(*q)).collect();
        assert!(all.iter().all(|e| *e == all[0]), "{all:?}");
        assert_eq!(all[0], Some(Estimate::Within(0.001)));
        // Three samples in one bucket: p95, p99 and p999 all fall on the third.
        let h = Histogram {
            buckets: vec![(0.001, 3.0), (f64::INFINITY, 3.0)],
            sum: 0.002,
            count: 3.0,
        };
        assert_eq!(h.quantile(0.95), h.quantile(0.999));
        assert_ne!(h.quantile(0.5), h.quantile(0.95));
    }
}
