//! The processor's state machine: how one record changes one partition's state of a view.
//!
//! `apply` is a pure function of the state it reads through [`Txn`] and the record: no clock,
//! no randomness, no outside I/O, so replaying the same records from the same state gives the
//! same bytes (DESIGN.md rule 2).
//!
//! **Table semantics.** A keyed record replaces the key's previous record; a record whose
//! value is empty, JSON `null` or not JSON at all — or that the filter rejects — deletes it.
//! For aggregates and indexes the previous record's *contribution* is stored under the key
//! (`C` in [`crate::layout`]) and retracted before the new one is added:
//!
//! ```text
//!  record(key, value) ─▶ old = C[key] ─▶ retract old: partial(old group) -= old inputs,
//!                                                     multiset(old group, value)  -= 1
//!                     ─▶ new = filter? extract     ─▶ add new:  partial(new group) += …
//!                     ─▶ C[key] = new (or delete)
//! ```
//!
//! `min`/`max` keep a multiset (value → count) per group, so retracting the current minimum
//! leaves the next one in place. Unkeyed records cannot be replaced: tables skip them;
//! indexes and aggregates count them under a key of their own, `@partition:offset`.

use std::collections::HashMap;

use logbook_log::StoredRecord;
use serde_json::Value;

use crate::error::{Result, ViewError};
use crate::layout::{
    self, ApplyState, Dec, Enc, RowMeta, TAG_CONTRIB, TAG_GROUP, TAG_INDEX, TAG_MULTI, TAG_ROW,
};
use crate::limits::ROW_KEY_BYTES_MAX;
use crate::spec::{AggFn, Aggregate, FieldPath, Plan, PlanKind};
use crate::store::{Space, Write};
use crate::value::{Scalar, to_fixed};

/// Reads and buffered writes of one commit. Reads see the buffered writes, then the
/// processor's cache of its hot keys (groups and multisets), then the store.
pub struct Txn<'a> {
    space: &'a dyn Space,
    cache: &'a mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    /// A transaction over `space` with the processor's `cache`.
    pub fn new(space: &'a dyn Space, cache: &'a mut HashMap<Vec<u8>, Option<Vec<u8>>>) -> Self {
        Txn {
            space,
            cache,
            pending: HashMap::new(),
        }
    }

    fn cached(key: &[u8]) -> bool {
        matches!(key.first(), Some(&TAG_GROUP) | Some(&TAG_MULTI))
    }

    /// The value of `key` as this transaction sees it.
    ///
    /// # Errors
    /// [`ViewError::Store`].
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        let v = self.space.get(key)?;
        if Txn::cached(key) {
            self.cache.insert(key.to_vec(), v.clone());
        }
        Ok(v)
    }

    /// Buffers a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// The buffered writes, in key order (deterministic commits); the hot ones are copied
    /// into the cache, which the caller must clear if the commit then fails.
    pub fn into_writes(self) -> Vec<Write> {
        let mut writes: Vec<Write> = self.pending.into_iter().collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &writes {
            if Txn::cached(k) {
                self.cache.insert(k.clone(), v.clone());
            }
        }
        writes
    }
}

/// The request-id header of a share's first record and its `request-records` header
/// (`s:k/n;…`): returns the id and `k`, the records of the share.
fn share_start(r: &StoredRecord) -> Option<(String, u32)> {
    let h = |name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    let id = std::str::from_utf8(h(logbook_log::dedup::REQUEST_ID_HEADER)?).ok()?;
    let k = h(logbook_log::dedup::REQUEST_RECORDS_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split_once(':'))
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(k, _)| k.parse::<u32>().ok())
        .unwrap_or(1);
    Some((id.to_string(), k.max(1)))
}

/// The request id of `r`, advancing the share cursor in `state`.
pub fn request_id_of(r: &StoredRecord, state: &mut ApplyState) -> Option<String> {
    if let Some((id, k)) = share_start(r) {
        state.request = (k > 1).then(|| (id.clone(), k - 1));
        return Some(id);
    }
    match state.request.take() {
        Some((id, left)) => {
            if left > 1 {
                state.request = Some((id.clone(), left - 1));
            }
            Some(id)
        }
        None => None,
    }
}

/// The record's value as a view sees it: `None` deletes (empty, `null`, not JSON).
pub fn parse_value(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(v),
    }
}

/// The key text of several fields joined by `|` (each part escaped).
pub fn join_key(paths: &[FieldPath], value: &Value) -> (String, Vec<Scalar>) {
    let scalars: Vec<Scalar> = paths.iter().map(|p| p.get(value)).collect();
    let text = scalars
        .iter()
        .map(Scalar::key_text)
        .collect::<Vec<_>>()
        .join("|");
    (text, scalars)
}

/// A table row's projected value.
pub fn project(fields: &Option<Vec<FieldPath>>, value: Value) -> Value {
    match fields {
        None => value,
        Some(fields) => {
            let mut out = serde_json::Map::new();
            for f in fields {
                if let Some(v) = crate::value::lookup(&value, &f.segments) {
                    out.insert(f.text.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
    }
}

/// Applies one record of partition `p` to the view. `state.applied` is not advanced here.
///
/// # Errors
/// [`ViewError::Store`], [`ViewError::Corrupt`].
pub fn apply(
    plan: &Plan,
    txn: &mut Txn<'_>,
    p: u32,
    r: &StoredRecord,
    state: &mut ApplyState,
) -> Result<()> {
    let request_id = request_id_of(r, state);
    let meta = RowMeta {
        offset: r.offset,
        request_id,
    };
    let value = parse_value(&r.value).filter(|v| plan.filter.as_ref().is_none_or(|f| f.matches(v)));
    let synthetic;
    let pk: &[u8] = match &r.key {
        Some(k) => k,
        None => {
            synthetic = format!("@{p}:{}", r.offset);
            synthetic.as_bytes()
        }
    };
    match &plan.kind {
        PlanKind::Table { fields } => {
            if r.key.is_none() {
                return Ok(());
            }
            let k = layout::key(TAG_ROW, p, pk);
            match value {
                Some(v) => {
                    let mut e = Enc::default();
                    meta.encode_into(&mut e);
                    let json = serde_json::to_vec(&project(fields, v))
                        .map_err(|err| ViewError::corrupt("row", err.to_string()))?;
                    e.0.extend_from_slice(&json);
                    txn.put(k, e.0);
                }
                None => txn.delete(k),
            }
        }
        PlanKind::Index { on } => {
            let ck = layout::key(TAG_CONTRIB, p, pk);
            let old = if r.key.is_some() { txn.get(&ck)? } else { None };
            let new = value.and_then(|v| {
                let (text, scalars) = join_key(on, &v);
                if scalars.iter().any(Scalar::is_null) {
                    return None;
                }
                if text.len() > ROW_KEY_BYTES_MAX {
                    state.skipped += 1;
                    return None;
                }
                Some(text.into_bytes())
            });
            let entry = |vk: &[u8]| {
                let mut k = layout::prefix(TAG_INDEX, p);
                layout::push_escaped(&mut k, vk);
                k.extend_from_slice(&[0, 0]);
                k.extend_from_slice(pk);
                k
            };
            if let Some(old) = &old
                && new.as_deref() != Some(old.as_slice())
            {
                txn.delete(entry(old));
            }
            match new {
                Some(vk) => {
                    let mut e = Enc::default();
                    meta.encode_into(&mut e);
                    txn.put(entry(&vk), e.0);
                    if r.key.is_some() {
                        txn.put(ck, vk);
                    }
                }
                None => {
                    if old.is_some() {
                        txn.delete(ck);
                    }
                }
            }
        }
        PlanKind::Aggregate {
            group_by,
            aggregates,
        } => {
            let ck = layout::key(TAG_CONTRIB, p, pk);
            let old = if r.key.is_some() { txn.get(&ck)? } else { None };
            if let Some(old) = &old {
                let c = Contribution::decode(old, aggregates.len())?;
                update_group(txn, p, aggregates, &c, -1, &meta, None)?;
            }
            let new = value.and_then(|v| {
                let (text, scalars) = join_key(group_by, &v);
                if text.len() > ROW_KEY_BYTES_MAX {
                    state.skipped += 1;
                    return None;
                }
                let inputs = aggregates
                    .iter()
                    .map(|a| a.field.as_ref().map_or(Scalar::Null, |f| f.get(&v)))
                    .collect();
                let group_values = Value::Array(scalars.iter().map(Scalar::to_json).collect());
                Some((
                    Contribution {
                        group: text.into_bytes(),
                        inputs,
                    },
                    group_values,
                ))
            });
            match new {
                Some((c, group_values)) => {
                    update_group(txn, p, aggregates, &c, 1, &meta, Some(&group_values))?;
                    if r.key.is_some() {
                        txn.put(ck, c.encode());
                    }
                }
                None => {
                    if old.is_some() {
                        txn.delete(ck);
                    }
                }
            }
        }
    }
    Ok(())
}

/// What one primary key's current record contributes to an aggregate view.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// Group key text.
    pub group: Vec<u8>,
    /// One input per aggregate (`Null` where it has no field).
    pub inputs: Vec<Scalar>,
}

impl Contribution {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(&self.group);
        for s in &self.inputs {
            e.bytes(&s.encode());
        }
        e.0
    }

    fn decode(b: &[u8], n: usize) -> Result<Contribution> {
        let mut d = Dec::new(b, "contribution");
        let group = d.bytes()?.to_vec();
        let inputs = (0..n)
            .map(|_| {
                Scalar::decode(d.bytes()?)
                    .ok_or_else(|| ViewError::corrupt("contribution", "bad scalar"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Contribution { group, inputs })
    }
}

/// Running state of one aggregate in one group and partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggState {
    /// Inputs counted (non-null; for sum/avg: numbers).
    pub n: i64,
    /// Exact sum of integer inputs.
    pub int_sum: i128,
    /// Sum of non-integer inputs in fixed point (see [`crate::value::to_fixed`]).
    pub fixed_sum: i128,
    /// Non-integer inputs counted.
    pub float_n: i64,
}

/// One group's partial aggregate in one partition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Partial {
    /// Rows (primary keys) in the group.
    pub count: i64,
    /// The record that last changed the group.
    pub meta: RowMeta,
    /// The group-by values (JSON array), from the last record added.
    pub group_values: Vec<u8>,
    /// One per aggregate.
    pub aggs: Vec<AggState>,
}

impl Partial {
    /// Encodes the partial.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.i64(self.count);
        self.meta.encode_into(&mut e);
        e.bytes(&self.group_values);
        for a in &self.aggs {
            e.i64(a.n).i128(a.int_sum).i128(a.fixed_sum).i64(a.float_n);
        }
        e.0
    }

    /// Decodes a partial of `n` aggregates.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`].
    pub fn decode(b: &[u8], n: usize) -> Result<Partial> {
        let mut d = Dec::new(b, "aggregate partial");
        let count = d.i64()?;
        let meta = RowMeta::decode(&mut d)?;
        let group_values = d.bytes()?.to_vec();
        let mut aggs = Vec::with_capacity(n);
        for _ in 0..n {
            aggs.push(AggState {
                n: d.i64()?,
                int_sum: d.i128()?,
                fixed_sum: d.i128()?,
                float_n: d.i64()?,
            });
        }
        Ok(Partial {
            count,
            meta,
            group_values,
            aggs,
        })
    }
}

/// Key of a multiset entry: `M · p · agg# · esc(group) · 00 00 · value`.
pub fn multi_key(p: u32, agg: usize, group: &[u8], value: &[u8]) -> Vec<u8> {
    let mut k = multi_prefix(p, agg, group);
    k.extend_from_slice(value);
    k
}

/// `M · p · agg# · esc(group) · 00 00`.
pub fn multi_prefix(p: u32, agg: usize, group: &[u8]) -> Vec<u8> {
    let mut k = layout::prefix(TAG_MULTI, p);
    k.push(u8::try_from(agg).unwrap_or(u8::MAX));
    layout::push_escaped(&mut k, group);
    k.extend_from_slice(&[0, 0]);
    k
}

/// Key of a group partial.
pub fn group_key(p: u32, group: &[u8]) -> Vec<u8> {
    let mut k = layout::prefix(TAG_GROUP, p);
    layout::push_escaped(&mut k, group);
    k
}

fn bump_multi(txn: &mut Txn<'_>, key: Vec<u8>, sign: i64) -> Result<()> {
    let old = match txn.get(&key)? {
        Some(b) => Dec::new(&b, "multiset count").i64()?,
        None => 0,
    };
    let new = old + sign;
    assert!(
        new >= 0,
        "multiset count below zero: a retraction without its addition"
    );
    if new == 0 {
        txn.delete(key);
    } else {
        txn.put(key, new.to_le_bytes().to_vec());
    }
    Ok(())
}

/// Adds (`sign` 1) or retracts (`sign` -1) a contribution to its group.
fn update_group(
    txn: &mut Txn<'_>,
    p: u32,
    aggregates: &[Aggregate],
    c: &Contribution,
    sign: i64,
    meta: &RowMeta,
    group_values: Option<&Value>,
) -> Result<()> {
    let gk = group_key(p, &c.group);
    let mut partial = match txn.get(&gk)? {
        Some(b) => Partial::decode(&b, aggregates.len())?,
        None => Partial {
            aggs: vec![AggState::default(); aggregates.len()],
            ..Partial::default()
        },
    };
    partial.count += sign;
    assert!(partial.count >= 0, "group count below zero");
    for (i, (a, input)) in aggregates.iter().zip(&c.inputs).enumerate() {
        let st = &mut partial.aggs[i];
        match a.func {
            AggFn::Count => {
                if a.field.is_some() && !input.is_null() {
                    st.n += sign;
                }
            }
            AggFn::Sum | AggFn::Avg => match input {
                Scalar::Int(v) => {
                    st.n += sign;
                    st.int_sum += i128::from(sign) * i128::from(*v);
                }
                Scalar::Float(f) => {
                    if let Some(fx) = to_fixed(*f) {
                        st.n += sign;
                        st.float_n += sign;
                        st.fixed_sum += i128::from(sign) * fx;
                    }
                }
                _ => {}
            },
            AggFn::Min | AggFn::Max => {
                if let Some(k) = input.order_key() {
                    st.n += sign;
                    bump_multi(txn, multi_key(p, i, &c.group, &k), sign)?;
                }
            }
            AggFn::CountDistinct => {
                if !input.is_null() {
                    st.n += sign;
                    bump_multi(txn, multi_key(p, i, &c.group, &input.encode()), sign)?;
                }
            }
        }
    }
    partial.meta = meta.clone();
    if let Some(values) = group_values {
        partial.group_values = serde_json::to_vec(values).unwrap_or_default();
    }
    if partial.count == 0 {
        txn.delete(gk);
    } else {
        txn.put(gk, partial.encode());
    }
    Ok(())
}
