//! The summary of `bench http --rounds N`: each configuration's medians over the rounds, and
//! the ratios issue 17 budgets.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::load::RunResult;
use crate::bench::kit::{round1, round3};

/// A phase: op, mode and rate (open loop).
type Phase = (&'static str, &'static str, Option<u64>);

/// Each configuration's medians over the rounds, per phase, and the ratios issue 17
/// budgets: `auth_on_over_off` (plain HTTP) and `tls_over_plain` (authentication on), of
/// the median throughput; a ratio is null when a configuration did not run.
pub(super) fn summary(results: &[RunResult]) -> serde_json::Value {
    let mut by: BTreeMap<(Phase, &'static str, &'static str), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        by.entry(((r.op, r.mode, r.rate), r.auth, r.tls))
            .or_default()
            .push(r);
    }
    let mut medians = Vec::new();
    let mut throughput: BTreeMap<(Phase, &'static str, &'static str), f64> = BTreeMap::new();
    for ((phase, auth, tls), runs) in &by {
        let of = |f: fn(&RunResult) -> f64| median(runs.iter().map(|r| f(r)).collect());
        let achieved = of(|r| r.achieved_per_s);
        throughput.insert((*phase, auth, tls), achieved);
        medians.push(json!({
            "op": phase.0, "mode": phase.1, "rate": phase.2, "auth": auth, "tls": tls,
            "rounds": runs.len(),
            "achieved_per_s": round1(achieved),
            "p50_ms": round3(of(|r| r.p50_ms)),
            "p99_ms": round3(of(|r| r.p99_ms)),
            "cpu_us_per_request": round1(of(|r| r.cpu_us_per_request.unwrap_or(0.0))),
        }));
    }
    let phases: BTreeSet<Phase> = by.keys().map(|k| k.0).collect();
    let ratios: Vec<serde_json::Value> = phases
        .into_iter()
        .map(|phase| {
            let t = |auth, tls| throughput.get(&(phase, auth, tls));
            json!({
                "op": phase.0, "mode": phase.1, "rate": phase.2,
                "auth_on_over_off": ratio(t("on", "off"), t("off", "off")),
                "tls_over_plain": ratio(t("on", "on"), t("on", "off")),
            })
        })
        .collect();
    json!({ "medians": medians, "ratios": ratios })
}

/// The budget of appends with personal fields encrypted, as a share of plain ones (issue 19).
const PERSONAL_APPEND_BUDGET: f64 = 0.8;

/// `--personal-fields`: per phase and configuration (auth, tls), the median throughput of
/// the encrypted runs over the plain ones', p99 and CPU per request beside, and for appends
/// whether the ratio meets [`PERSONAL_APPEND_BUDGET`].
pub(super) fn personal_ratios(results: &[RunResult]) -> serde_json::Value {
    type Config = (Phase, &'static str, &'static str);
    let mut by: BTreeMap<(Config, bool), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        by.entry((((r.op, r.mode, r.rate), r.auth, r.tls), r.encrypted))
            .or_default()
            .push(r);
    }
    let of =
        |runs: &[&RunResult], f: fn(&RunResult) -> f64| median(runs.iter().map(|r| f(r)).collect());
    let ratios: Vec<serde_json::Value> = by
        .iter()
        .filter(|((_, encrypted), _)| *encrypted)
        .filter_map(|((config, _), enc)| {
            let plain = by.get(&(*config, false))?;
            let ((op, mode, rate), auth, tls) = *config;
            let achieved = ratio(
                Some(&of(enc, |r| r.achieved_per_s)),
                Some(&of(plain, |r| r.achieved_per_s)),
            );
            Some(json!({
                "op": op, "mode": mode, "rate": rate, "auth": auth, "tls": tls,
                "rounds": enc.len(),
                "achieved_encrypted_over_plain": achieved,
                "within_budget": (op == "append")
                    .then(|| achieved.is_some_and(|a| a >= PERSONAL_APPEND_BUDGET)),
                "p99_ms": {"plain": round3(of(plain, |r| r.p99_ms)),
                           "encrypted": round3(of(enc, |r| r.p99_ms))},
                "cpu_us_per_request": {
                    "plain": round1(of(plain, |r| r.cpu_us_per_request.unwrap_or(0.0))),
                    "encrypted": round1(of(enc, |r| r.cpu_us_per_request.unwrap_or(0.0)))},
            }))
        })
        .collect();
    json!({ "append_budget": PERSONAL_APPEND_BUDGET, "ratios": ratios })
}

/// The median (the upper one of an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ratio(a: Option<&f64>, b: Option<&f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if *b > 0.0 => Some(round3(a / b)),
        _ => None,
    }
}
