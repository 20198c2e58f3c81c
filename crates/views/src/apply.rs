//! The processor's state machine: how one record changes one partition's state of a view.
//!
//! `apply` is a pure function of the state it reads through [`Txn`] and the record: no clock,
//! no randomness, no outside I/O, so replaying the same records from the same state gives the
//! same bytes (docs/DESIGN.md rule 2).
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
//! **Event semantics** (`"semantics": "events"`, aggregates only): every record is added and
//! none is retracted — a keyed record is handled as an unkeyed one is, with no contribution
//! kept; a record that would delete under table semantics is simply not counted.
//!
//! `min`/`max` keep a multiset (value → count) per group, so retracting the current minimum
//! leaves the next one in place. Unkeyed records cannot be replaced: tables skip them;
//! indexes and aggregates count them under a key of their own (index entries: a primary key
//! tagged [`layout::PK_UNKEYED`] · partition · offset, apart from every record key, which is
//! tagged [`layout::PK_KEYED`]; reads show it as `\@partition:offset`). They never get a
//! contribution, so a record key can never retract them.

use logbook_log::StoredRecord;
use serde_json::Value;

use crate::error::{Result, ViewError};
use crate::hash::KeyMap;
use crate::layout::{
    self, AggState, ApplyState, Contribution, Enc, Partial, RowMeta, TAG_CONTRIB, TAG_ROW,
    encode_group_values, multi_key,
};
use crate::limits::{ROW_KEY_BYTES_MAX, STATE_CACHE_ENTRIES_MAX};
use crate::spec::{AggFn, Aggregate, FieldPath, Plan, PlanKind, Semantics};
use crate::state::{Contribs, Delta, PartState};
use crate::store::Write;
use crate::value::{Scalar, to_fixed};

/// A group partial held in memory, decoded.
#[derive(Debug)]
struct GroupSlot {
    /// The committed-or-pending partial (`None`: the group does not exist).
    partial: Option<Partial>,
    /// Changed since the last commit (and listed in [`Txn`]'s dirty groups).
    dirty: bool,
}

/// A multiset count held in memory (0: no entry).
#[derive(Debug)]
struct MultiSlot {
    count: i64,
    dirty: bool,
}

/// A processor's decoded copies of hot state between commits: aggregate partials and
/// multiset counts, read once from the partition's [`PartState`], then kept; written back
/// (encoded) once per commit however many records touched them. It is the only writer of
/// its partition's keys, so what it holds is exactly the state after the last commit plus
/// the current batch's changes. Cleared after a commit when it holds more than
/// [`STATE_CACHE_ENTRIES_MAX`] entries.
#[derive(Debug, Default)]
pub struct StateCache {
    groups: KeyMap<GroupSlot>,
    multis: KeyMap<MultiSlot>,
}

impl StateCache {
    /// An empty cache.
    pub fn new() -> StateCache {
        StateCache::default()
    }

    /// Called after a commit: bounds the memory held.
    pub fn committed(&mut self) {
        if self.groups.len() + self.multis.len() > STATE_CACHE_ENTRIES_MAX {
            self.groups.clear();
            self.multis.clear();
        }
    }
}

/// Reads and writes of one batch. Contributions are written through at once (the
/// processor's own map, logged to the checkpoint delta); other writes are buffered until
/// [`Txn::into_writes`], and reads see them, then the [`StateCache`], then the partition's
/// published [`PartState`].
pub struct Txn<'a> {
    part: &'a PartState,
    contribs: &'a mut Contribs,
    delta: &'a mut Delta,
    cache: &'a mut StateCache,
    pending: KeyMap<Option<Vec<u8>>>,
    dirty_groups: Vec<Vec<u8>>,
    dirty_multis: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl<'a> Txn<'a> {
    /// A batch over the published state `part`, the processor's `contribs`, its checkpoint
    /// `delta` and its `cache`.
    pub fn new(
        part: &'a PartState,
        contribs: &'a mut Contribs,
        delta: &'a mut Delta,
        cache: &'a mut StateCache,
    ) -> Self {
        Txn {
            part,
            contribs,
            delta,
            cache,
            pending: KeyMap::default(),
            dirty_groups: Vec::new(),
            dirty_multis: Vec::new(),
            key: Vec::with_capacity(64),
        }
    }

    /// The contribution stored under `key` (a `C` key).
    fn contribution(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.contribs.get(key).cloned()
    }

    /// Sets (`Some`) or deletes (`None`) the contribution under `key`.
    fn set_contribution(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.delta.log(&key, value.as_deref());
        self.contribs.write(key, value);
    }

    /// Buffers a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Takes the partial of the group whose store key is in `self.key` out of the cache
    /// (loading it on a miss); give it back with [`Txn::put_group`].
    fn take_group(&mut self, n: usize) -> Result<Option<Partial>> {
        if let Some(slot) = self.cache.groups.get_mut(self.key.as_slice()) {
            return Ok(slot.partial.take());
        }
        let loaded = match self.part.get(&self.key) {
            Some(b) => Some(Partial::decode(b, n)?),
            None => None,
        };
        self.cache.groups.insert(
            self.key.clone(),
            GroupSlot {
                partial: None,
                dirty: false,
            },
        );
        Ok(loaded)
    }

    /// Puts back the partial taken by [`Txn::take_group`] (same `self.key`), marking it dirty.
    fn put_group(&mut self, partial: Option<Partial>) {
        let mut newly_dirty = false;
        if let Some(slot) = self.cache.groups.get_mut(self.key.as_slice()) {
            slot.partial = partial;
            newly_dirty = !slot.dirty;
            slot.dirty = true;
        }
        if newly_dirty {
            self.dirty_groups.push(self.key.clone());
        }
    }

    /// Adds `sign` to the multiset count whose store key is `key`.
    fn bump_multi(&mut self, key: &[u8], sign: i64) -> Result<()> {
        if !self.cache.multis.contains_key(key) {
            let count = match self.part.get(key) {
                Some(b) => layout::decode_count(b)?,
                None => 0,
            };
            self.cache.multis.insert(
                key.to_vec(),
                MultiSlot {
                    count,
                    dirty: false,
                },
            );
        }
        let Some(slot) = self.cache.multis.get_mut(key) else {
            return Err(ViewError::corrupt("multiset count", "cache entry vanished"));
        };
        slot.count += sign;
        assert!(
            slot.count >= 0,
            "multiset count below zero: a retraction without its addition"
        );
        if !slot.dirty {
            slot.dirty = true;
            self.dirty_multis.push(key.to_vec());
        }
        Ok(())
    }

    /// The buffered writes (not contributions), in key order, each also logged to the
    /// checkpoint delta. The cache now holds them as published; the caller publishes them.
    pub fn into_writes(self) -> Vec<Write> {
        let mut writes: Vec<Write> = Vec::with_capacity(
            self.pending.len() + self.dirty_groups.len() + self.dirty_multis.len(),
        );
        writes.extend(self.pending);
        for k in self.dirty_groups {
            let Some(slot) = self.cache.groups.get_mut(&k) else {
                continue;
            };
            slot.dirty = false;
            let v = slot.partial.as_ref().map(Partial::encode);
            writes.push((k, v));
        }
        for k in self.dirty_multis {
            let Some(slot) = self.cache.multis.get_mut(&k) else {
                continue;
            };
            slot.dirty = false;
            let v = (slot.count != 0).then(|| layout::encode_count(slot.count));
            writes.push((k, v));
        }
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &writes {
            self.delta.log(k, v.as_deref());
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
    crate::extract::parse_members(bytes, None)
}

/// The key text of several fields joined by `|` (each part escaped).
pub fn join_key(paths: &[FieldPath], value: &Value) -> (String, Vec<Scalar>) {
    let scalars: Vec<Scalar> = paths.iter().map(|p| p.get(value)).collect();
    let mut text = String::new();
    for (i, s) in scalars.iter().enumerate() {
        if i > 0 {
            text.push('|');
        }
        s.push_key_text(&mut text);
    }
    (text, scalars)
}

/// A table row's projected value.
pub fn project(fields: &Option<Vec<FieldPath>>, value: &Value) -> Value {
    match fields {
        None => value.clone(),
        Some(fields) => {
            let mut out = serde_json::Map::new();
            for f in fields {
                if let Some(v) = crate::value::lookup(value, &f.segments) {
                    out.insert(f.text.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
    }
}

/// Applies one record of partition `p` to the view. `state.applied` is not advanced here.
/// `value` is the record's value as [`crate::extract::parse_members`] gives it for the
/// plan's members or a superset of them (`None`: the record deletes).
///
/// # Errors
/// [`ViewError::Store`], [`ViewError::Corrupt`].
pub fn apply(
    plan: &Plan,
    txn: &mut Txn<'_>,
    p: u32,
    r: &StoredRecord,
    value: Option<&Value>,
    state: &mut ApplyState,
) -> Result<()> {
    let request_id = request_id_of(r, state);
    let meta = RowMeta {
        offset: r.offset,
        request_id,
    };
    let value = value.filter(|v| plan.filter.as_ref().is_none_or(|f| f.matches(v)));
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
                    let json = serde_json::to_vec(&project(fields, v))
                        .map_err(|err| ViewError::corrupt("row", err.to_string()))?;
                    txn.put(k, layout::encode_row(&meta, &json));
                }
                None => txn.delete(k),
            }
        }
        PlanKind::Index { on } => {
            let ck = layout::key(TAG_CONTRIB, p, pk);
            let old = if r.key.is_some() {
                txn.contribution(&ck)
            } else {
                None
            };
            let new = value.and_then(|v| {
                let (text, scalars) = join_key(on, v);
                if scalars.iter().any(Scalar::is_null) {
                    return None;
                }
                if text.len() > ROW_KEY_BYTES_MAX {
                    state.skipped += 1;
                    return None;
                }
                Some(text.into_bytes())
            });
            let entry = |vk: &[u8]| layout::index_key(p, vk, r.key.as_deref(), r.offset);
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
                    if r.key.is_some() && old.as_deref() != Some(vk.as_slice()) {
                        txn.set_contribution(ck, Some(vk));
                    }
                }
                None => {
                    if old.is_some() {
                        txn.set_contribution(ck, None);
                    }
                }
            }
        }
        PlanKind::Aggregate {
            group_by,
            aggregates,
        } => {
            // Under event semantics every record stands alone, as an unkeyed one does: no
            // contribution is kept, so nothing is ever retracted.
            let replaces = r.key.is_some() && plan.spec.semantics == Semantics::Table;
            let ck = layout::key(TAG_CONTRIB, p, pk);
            let old = if replaces {
                txn.contribution(&ck)
            } else {
                None
            };
            if let Some(old) = &old {
                let c = Contribution::decode(old, aggregates.len())?;
                update_group(txn, p, aggregates, &c, -1, &meta)?;
            }
            let new = value.and_then(|v| {
                let (text, scalars) = join_key(group_by, v);
                if text.len() > ROW_KEY_BYTES_MAX {
                    state.skipped += 1;
                    return None;
                }
                let inputs = aggregates
                    .iter()
                    .map(|a| a.field.as_ref().map_or(Scalar::Null, |f| f.get(v)))
                    .collect();
                Some(Contribution {
                    group: text.into_bytes(),
                    values: encode_group_values(&scalars),
                    inputs,
                })
            });
            match new {
                Some(c) => {
                    update_group(txn, p, aggregates, &c, 1, &meta)?;
                    if replaces {
                        let enc = c.encode();
                        if old.as_deref() != Some(enc.as_slice()) {
                            txn.set_contribution(ck, Some(enc));
                        }
                    }
                }
                None => {
                    if old.is_some() {
                        txn.set_contribution(ck, None);
                    }
                }
            }
        }
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
) -> Result<()> {
    layout::group_key_into(&mut txn.key, p, &c.group);
    let mut partial = txn
        .take_group(aggregates.len())?
        .unwrap_or_else(|| Partial {
            aggs: vec![AggState::default(); aggregates.len()],
            ..Partial::default()
        });
    partial.count += sign;
    assert!(partial.count >= 0, "group count below zero");
    match partial
        .group_values
        .binary_search_by(|(form, _)| form.as_slice().cmp(&c.values))
    {
        Ok(i) => {
            partial.group_values[i].1 += sign;
            assert!(
                partial.group_values[i].1 >= 0,
                "group values count below zero"
            );
            if partial.group_values[i].1 == 0 {
                partial.group_values.remove(i);
            }
        }
        Err(i) => {
            assert!(sign > 0, "a retraction of group values never added");
            partial.group_values.insert(i, (c.values.clone(), sign));
        }
    }
    let mut multi = Vec::new();
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
                    multi.push(multi_key(p, i, &c.group, &k));
                }
            }
            AggFn::CountDistinct => {
                if !input.is_null() {
                    st.n += sign;
                    multi.push(multi_key(p, i, &c.group, &input.distinct_key()));
                }
            }
        }
    }
    partial.meta = meta.clone();
    let partial = (partial.count > 0).then_some(partial);
    txn.put_group(partial);
    for k in multi {
        txn.bump_multi(&k, sign)?;
    }
    Ok(())
}
