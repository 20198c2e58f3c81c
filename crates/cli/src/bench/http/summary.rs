//! The summary of `bench http --rounds N`: each configuration's medians over the rounds, and
//! the ratios issue 17 budgets; each variant's ratio to the plain runs (personal fields
//! encrypted, issue 19; the auditors at work, issue 18) against its budget.

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

/// A variant of every configuration measured against its plain runs, and its budget.
pub(super) struct VariantBudget {
    /// The variant's name in the ratios' keys (`achieved_{name}_over_plain`).
    name: &'static str,
    /// Whether a run is of the variant.
    is: fn(&RunResult) -> bool,
    /// The least ratio of throughput to the plain runs' that meets the budget.
    budget: f64,
    /// The ops the budget is for.
    ops: &'static [&'static str],
}

/// `--personal-fields`: appends with personal fields encrypted ≥ 0.8× plain ones (issue 19).
pub(super) const PERSONAL: VariantBudget = VariantBudget {
    name: "encrypted",
    is: |r| r.encrypted,
    budget: 0.8,
    ops: &["append"],
};

/// `--audit`: appends and reads with the view auditor and the scrubber at work ≥ 0.9× those
/// with both off (issue 18).
pub(super) const AUDIT: VariantBudget = VariantBudget {
    name: "audited",
    is: |r| r.audited,
    budget: 0.9,
    ops: &["append", "read"],
};

/// Per phase and configuration (auth, tls), the median throughput of the variant's runs
/// over the plain ones', p99 and CPU per request beside, and for the budgeted ops whether
/// the ratio meets the budget.
pub(super) fn variant_ratios(results: &[RunResult], variant: &VariantBudget) -> serde_json::Value {
    type Config = (Phase, &'static str, &'static str);
    let mut by: BTreeMap<(Config, bool), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        let plain = !r.encrypted && !r.audited;
        if !plain && !(variant.is)(r) {
            continue;
        }
        by.entry((((r.op, r.mode, r.rate), r.auth, r.tls), !plain))
            .or_default()
            .push(r);
    }
    let of =
        |runs: &[&RunResult], f: fn(&RunResult) -> f64| median(runs.iter().map(|r| f(r)).collect());
    let name = variant.name;
    let ratios: Vec<serde_json::Value> = by
        .iter()
        .filter(|((_, of_variant), _)| *of_variant)
        .filter_map(|((config, _), runs)| {
            let plain = by.get(&(*config, false))?;
            let ((op, mode, rate), auth, tls) = *config;
            let achieved = ratio(
                Some(&of(runs, |r| r.achieved_per_s)),
                Some(&of(plain, |r| r.achieved_per_s)),
            );
            let mut row = json!({
                "op": op, "mode": mode, "rate": rate, "auth": auth, "tls": tls,
                "rounds": runs.len(),
                "within_budget": variant.ops.contains(&op)
                    .then(|| achieved.is_some_and(|a| a >= variant.budget)),
                "p99_ms": {"plain": round3(of(plain, |r| r.p99_ms)),
                           name: round3(of(runs, |r| r.p99_ms))},
                "cpu_us_per_request": {
                    "plain": round1(of(plain, |r| r.cpu_us_per_request.unwrap_or(0.0))),
                    name: round1(of(runs, |r| r.cpu_us_per_request.unwrap_or(0.0)))},
            });
            row[format!("achieved_{name}_over_plain")] = json!(achieved);
            Some(row)
        })
        .collect();
    json!({ "budget": variant.budget, "budget_ops": variant.ops, "ratios": ratios })
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
