//! An Elle-style checker for list-append histories, written from the rules of Kingsbury &
//! Alvaro, "Elle: Inferring Isolation Anomalies from Experimental Observations" (VLDB 2020).
//!
//! Each key holds a list of unique elements; a transaction appends by reading the list and
//! writing it back extended by one element. Because every version of a key is a prefix of
//! the next, the version order is *recoverable* from what was observed:
//!
//! 1. **Version order.** Per key, every observation — a read from outside the reading
//!    transaction's own writes, the final list a committed transaction wrote, and the
//!    final state — must be a prefix of the longest one (else: incompatible order). The
//!    longest list is the key's version order; element `i` was installed by its appender.
//! 2. **Direct checks.** An element of an aborted transaction in any observation is G1a;
//!    a read ending in an element that was not its writer's last append to the key is an
//!    intermediate read, G1b; an element nobody appended is garbage; a repeated element is
//!    a duplicate; a read after the transaction's own append that lacks that append is an
//!    internal inconsistency; a committed append missing from the final state is lost.
//! 3. **Dependency graph** over committed transactions (Adya): `ww` from the appender of
//!    element `i` to the appender of `i + 1`; `wr` from the appender of the last element a
//!    read saw to the reader; `rw` from a reader to the appender of the first element its
//!    read did not see.
//! 4. **Cycles.** Strongly connected components (Tarjan), then per component the most
//!    specific anomaly: **G0** a cycle of `ww` edges only; **G1c** of `ww` and `wr`;
//!    **G-single** a cycle with exactly one `rw` edge (an `rw` edge `u → v` with `v`
//!    reaching `u` through `ww`/`wr` edges); **G2** any other cycle (two or more `rw`).
//!
//! Levels: `read_committed` forbids G0, G1a, G1b, G1c; `snapshot` also G-single;
//! `serializable` every cycle. The non-cycle checks are forbidden at every level. No
//! real-time edges are added: the store promises serializability, not strict
//! serializability (a read-only serializable transaction may read an older, safe
//! snapshot).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use logbook_txn::Isolation;

/// A list element: unique over a whole history.
pub type Elem = u64;

/// One micro-operation of a transaction, with what it observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    /// `key` was read as `value` (empty: absent).
    Read {
        /// The key.
        key: String,
        /// The list observed.
        value: Vec<Elem>,
    },
    /// `elem` was appended to `key` by writing `wrote` (which ends with `elem`).
    Append {
        /// The key.
        key: String,
        /// The new element.
        elem: Elem,
        /// The whole list written.
        wrote: Vec<Elem>,
    },
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its commit was acknowledged.
    Committed,
    /// It was refused or aborted: none of its writes may ever be seen.
    Aborted,
}

/// A completed transaction as a client saw it.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// The client (thread) that ran it.
    pub process: usize,
    /// Micro-operations in order.
    pub mops: Vec<Mop>,
    /// How it ended.
    pub outcome: Outcome,
    /// Free text for reports (e.g. snapshot and commit offset).
    pub note: String,
}

/// A history: transactions, and the final state of every key read after all of them.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// All transactions, committed and aborted.
    pub txns: Vec<TxnRecord>,
    /// `(key, list)` for every key of the key space after the run (empty: absent).
    pub final_state: Vec<(String, Vec<Elem>)>,
}

/// The kinds of anomaly the checker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Two observations of a key are not prefixes of one another.
    IncompatibleOrder,
    /// An element appears twice in one list.
    Duplicate,
    /// An element nobody appended.
    Garbage,
    /// A read after the transaction's own append does not end with that append.
    Internal,
    /// A committed append is missing from the final state.
    LostAppend,
    /// An aborted transaction's element was observed.
    G1a,
    /// An intermediate version (not the writer's last append) was read.
    G1b,
    /// A cycle of write-write edges.
    G0,
    /// A cycle of write-write and write-read edges.
    G1c,
    /// A cycle with exactly one read-write (anti-dependency) edge.
    GSingle,
    /// A cycle with two or more anti-dependency edges.
    G2,
}

impl Kind {
    /// Whether `level` forbids this anomaly.
    pub fn forbidden_at(self, level: Isolation) -> bool {
        match self {
            Kind::GSingle => level != Isolation::ReadCommitted,
            Kind::G2 => level == Isolation::Serializable,
            _ => true,
        }
    }
}

/// One anomaly found, with an explanation naming the transactions (`T<index>`).
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// What kind.
    pub kind: Kind,
    /// The evidence.
    pub explanation: String,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every anomaly found (allowed ones included).
    pub anomalies: Vec<Anomaly>,
    /// Committed transactions.
    pub committed: usize,
    /// Aborted transactions.
    pub aborted: usize,
    /// Edges of the dependency graph: ww, wr, rw.
    pub edges: [usize; 3],
}

impl Report {
    /// The anomalies `level` forbids.
    pub fn forbidden(&self, level: Isolation) -> Vec<&Anomaly> {
        self.anomalies
            .iter()
            .filter(|a| a.kind.forbidden_at(level))
            .collect()
    }

    /// Count per kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind).or_insert(0) += 1;
        }
        m
    }

    /// Whether an anomaly of `kind` was found.
    pub fn has(&self, kind: Kind) -> bool {
        self.anomalies.iter().any(|a| a.kind == kind)
    }
}

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;

fn edge_name(bits: u8) -> &'static str {
    if bits & WW != 0 {
        "ww"
    } else if bits & WR != 0 {
        "wr"
    } else {
        "rw"
    }
}

/// A read that counts as an observation of the database: taken before the transaction's
/// own first append to the key.
struct ExternalRead<'a> {
    txn: usize,
    key: &'a str,
    value: &'a [Elem],
}

/// Checks a history. See the module documentation.
pub fn check(h: &History) -> Report {
    let mut report = Report::default();
    let mut push = |kind: Kind, explanation: String| {
        report.anomalies.push(Anomaly { kind, explanation });
    };
    let committed = |t: usize| h.txns[t].outcome == Outcome::Committed;

    // Who appended what: element → (txn, key); (txn, key) → its appends in order.
    let mut appender: HashMap<Elem, (usize, &str)> = HashMap::new();
    let mut appends: HashMap<(usize, &str), Vec<Elem>> = HashMap::new();
    for (t, txn) in h.txns.iter().enumerate() {
        for m in &txn.mops {
            if let Mop::Append { key, elem, .. } = m {
                if appender.insert(*elem, (t, key.as_str())).is_some() {
                    push(Kind::Duplicate, format!("element {elem} appended twice"));
                }
                appends.entry((t, key.as_str())).or_default().push(*elem);
            }
        }
    }

    // External reads, and the internal check.
    let mut external: Vec<ExternalRead<'_>> = Vec::new();
    for (t, txn) in h.txns.iter().enumerate() {
        let mut own: HashMap<&str, Vec<Elem>> = HashMap::new();
        for m in &txn.mops {
            match m {
                Mop::Append { key, elem, .. } => own.entry(key.as_str()).or_default().push(*elem),
                Mop::Read { key, value } => match own.get(key.as_str()) {
                    None => external.push(ExternalRead {
                        txn: t,
                        key: key.as_str(),
                        value,
                    }),
                    Some(mine) => {
                        if !value.ends_with(mine) {
                            push(
                                Kind::Internal,
                                format!(
                                    "T{t} read {key} = {value:?} after appending {mine:?} to it"
                                ),
                            );
                        }
                    }
                },
            }
        }
    }

    // Observations per key: external reads, committed final writes, the final state.
    let mut observed: BTreeMap<&str, Vec<(String, &[Elem])>> = BTreeMap::new();
    for r in &external {
        observed
            .entry(r.key)
            .or_default()
            .push((format!("read by T{}", r.txn), r.value));
    }
    for (t, txn) in h.txns.iter().enumerate() {
        if !committed(t) {
            continue;
        }
        let mut last: HashMap<&str, &[Elem]> = HashMap::new();
        for m in &txn.mops {
            if let Mop::Append { key, wrote, .. } = m {
                last.insert(key.as_str(), wrote);
            }
        }
        for (key, wrote) in last {
            observed
                .entry(key)
                .or_default()
                .push((format!("written by T{t}"), wrote));
        }
    }
    for (key, value) in &h.final_state {
        observed
            .entry(key.as_str())
            .or_default()
            .push(("final state".to_string(), value));
    }

    // Direct checks on every observed list.
    let mut seen_bad: HashSet<(Kind, Elem)> = HashSet::new();
    for (key, obs) in &observed {
        for (who, list) in obs {
            let mut uniq = HashSet::new();
            for e in list.iter() {
                if !uniq.insert(*e) && seen_bad.insert((Kind::Duplicate, *e)) {
                    push(
                        Kind::Duplicate,
                        format!("{key} {who} holds {e} twice: {list:?}"),
                    );
                }
                match appender.get(e) {
                    None => {
                        if seen_bad.insert((Kind::Garbage, *e)) {
                            push(
                                Kind::Garbage,
                                format!("{key} {who} holds {e}, which nobody appended"),
                            );
                        }
                    }
                    Some((a, k)) => {
                        if *k != *key && seen_bad.insert((Kind::Garbage, *e)) {
                            push(
                                Kind::Garbage,
                                format!("{key} {who} holds {e}, which T{a} appended to {k}"),
                            );
                        } else if !committed(*a) && seen_bad.insert((Kind::G1a, *e)) {
                            push(
                                Kind::G1a,
                                format!("{key} {who} holds {e}, appended by aborted T{a}"),
                            );
                        }
                    }
                }
            }
        }
    }
    for r in &external {
        let Some(last) = r.value.last() else { continue };
        let Some((a, _)) = appender.get(last) else {
            continue;
        };
        if *a == r.txn {
            continue;
        }
        let theirs = &appends[&(*a, r.key)];
        if theirs.last() != Some(last) {
            push(
                Kind::G1b,
                format!(
                    "T{} read {} = {:?}, ending in {last}, an intermediate append of T{a} (its appends: {theirs:?})",
                    r.txn, r.key, r.value
                ),
            );
        }
    }

    // Version orders.
    let mut order: HashMap<&str, &[Elem]> = HashMap::new();
    for (key, obs) in &observed {
        let Some((long_who, longest)) = obs.iter().max_by_key(|(_, l)| l.len()) else {
            continue;
        };
        let mut ok = true;
        for (who, list) in obs {
            if !longest.starts_with(list) {
                ok = false;
                push(
                    Kind::IncompatibleOrder,
                    format!("{key}: {list:?} ({who}) is not a prefix of {longest:?} ({long_who})"),
                );
                break;
            }
        }
        if !ok {
            continue;
        }
        order.insert(key, longest);
        if let Some((_, fin)) = h.final_state.iter().find(|(k, _)| k == key)
            && let Some(e) = longest
                .iter()
                .skip(fin.len())
                .find(|e| appender.get(e).is_some_and(|(a, _)| committed(*a)))
        {
            push(
                Kind::LostAppend,
                format!(
                    "{key}: final state {fin:?} lacks committed element {e} of {longest:?} ({long_who})"
                ),
            );
        }
    }

    // The dependency graph over committed transactions.
    let n = h.txns.len();
    let mut edges: HashMap<(usize, usize), u8> = HashMap::new();
    let mut add = |from: usize, to: usize, bits: u8| {
        if from != to && committed(from) && committed(to) {
            *edges.entry((from, to)).or_insert(0) |= bits;
        }
    };
    for (key, list) in &order {
        for pair in list.windows(2) {
            if let (Some((a, _)), Some((b, _))) = (appender.get(&pair[0]), appender.get(&pair[1])) {
                add(*a, *b, WW);
            }
        }
        let _ = key;
    }
    for r in &external {
        let Some(list) = order.get(r.key) else {
            continue;
        };
        if let Some(last) = r.value.last()
            && let Some((a, _)) = appender.get(last)
        {
            add(*a, r.txn, WR);
        }
        if let Some(next) = list.get(r.value.len())
            && let Some((b, _)) = appender.get(next)
        {
            add(r.txn, *b, RW);
        }
    }
    let mut out: Vec<Vec<(usize, u8)>> = vec![Vec::new(); n];
    for (&(a, b), &bits) in &edges {
        out[a].push((b, bits));
        for (i, bit) in [WW, WR, RW].into_iter().enumerate() {
            if bits & bit != 0 {
                report.edges[i] += 1;
            }
        }
    }
    for adj in &mut out {
        adj.sort_unstable();
    }

    // Cycles.
    for scc in tarjan(&out, WW | WR | RW, None) {
        let anomaly = classify(&out, &scc);
        report.anomalies.push(anomaly);
    }
    report.committed = (0..n).filter(|t| committed(*t)).count();
    report.aborted = n - report.committed;
    report
}

/// Strongly connected components with more than one node, following edges with a bit in
/// `mask`, restricted to `within` if given. Iterative Tarjan.
fn tarjan(out: &[Vec<(usize, u8)>], mask: u8, within: Option<&HashSet<usize>>) -> Vec<Vec<usize>> {
    let n = out.len();
    let allowed = |v: usize| within.is_none_or(|s| s.contains(&v));
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut sccs = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX || !allowed(root) {
            continue;
        }
        // (node, position in its adjacency list)
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, start)) = call.last() {
            let mut pos = start;
            let mut descended = false;
            while pos < out[v].len() {
                let (w, bits) = out[v][pos];
                pos += 1;
                if bits & mask == 0 || !allowed(w) {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    descended = true;
                    break;
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            }
            if let Some(top) = call.last_mut() {
                top.1 = pos;
            }
            if descended {
                let (w, _) = out[v][pos - 1];
                call.push((w, 0));
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort_unstable();
                    sccs.push(scc);
                }
            }
        }
    }
    sccs
}

/// A shortest path `from ⇝ to` over edges with a bit in `mask` inside `within`, as
/// `(node, edge bits into the next node)`.
fn path(
    out: &[Vec<(usize, u8)>],
    from: usize,
    to: usize,
    mask: u8,
    within: &HashSet<usize>,
) -> Option<Vec<(usize, u8)>> {
    let mut prev: HashMap<usize, (usize, u8)> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut p = Vec::new();
            let mut cur = to;
            while cur != from {
                let (pv, bits) = prev[&cur];
                p.push((pv, bits));
                cur = pv;
            }
            p.reverse();
            return Some(p);
        }
        for &(w, bits) in &out[v] {
            if bits & mask != 0 && within.contains(&w) && seen.insert(w) {
                prev.insert(w, (v, bits & mask));
                queue.push_back(w);
            }
        }
    }
    None
}

fn show_cycle(steps: &[(usize, u8)], first: usize) -> String {
    let mut s = String::new();
    for (v, bits) in steps {
        write!(s, "T{v} -{}-> ", edge_name(*bits)).unwrap();
    }
    write!(s, "T{first}").unwrap();
    s
}

/// A cycle through `v` using edges in `mask`, shown.
fn cycle_through(
    out: &[Vec<(usize, u8)>],
    v: usize,
    mask: u8,
    within: &HashSet<usize>,
) -> Option<String> {
    out[v]
        .iter()
        .filter(|(w, bits)| bits & mask != 0 && within.contains(w))
        .find_map(|&(w, bits)| {
            path(out, w, v, mask, within).map(|rest| {
                let mut steps = vec![(v, bits & mask)];
                steps.extend(rest);
                show_cycle(&steps, v)
            })
        })
}

fn classify(out: &[Vec<(usize, u8)>], scc: &[usize]) -> Anomaly {
    let within: HashSet<usize> = scc.iter().copied().collect();
    for (kind, mask) in [(Kind::G0, WW), (Kind::G1c, WW | WR)] {
        if let Some(sub) = tarjan(out, mask, Some(&within)).first() {
            let sub_set: HashSet<usize> = sub.iter().copied().collect();
            if let Some(c) = cycle_through(out, sub[0], mask, &sub_set) {
                return Anomaly {
                    kind,
                    explanation: c,
                };
            }
        }
    }
    // Exactly one rw edge: u -rw-> v, then v ⇝ u through ww/wr edges.
    for &u in scc {
        for &(v, bits) in &out[u] {
            if bits & RW == 0 || !within.contains(&v) {
                continue;
            }
            if let Some(rest) = path(out, v, u, WW | WR, &within) {
                let mut steps = vec![(u, RW)];
                steps.extend(rest);
                return Anomaly {
                    kind: Kind::GSingle,
                    explanation: show_cycle(&steps, u),
                };
            }
        }
    }
    let explanation = cycle_through(out, scc[0], WW | WR | RW, &within)
        .unwrap_or_else(|| format!("component {scc:?}"));
    Anomaly {
        kind: Kind::G2,
        explanation,
    }
}
