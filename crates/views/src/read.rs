//! The read path: rows of one view version from one consistent snapshot of its space,
//! merging the per-partition state in partition order.
//!
//! A key normally lives in one partition (its hash decides), but nothing stops a writer from
//! sending a key to another partition with `append_to`. Reads therefore look in every
//! partition and merge deterministically: for tables and index entries the *later partition
//! wins*; aggregate partials are *summed* in partition order (multisets united), so a live
//! view and a rebuilt one give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Result, ViewError};
use crate::layout::{
    self, ApplyState, Dec, Partial, RowMeta, TAG_APPLIED, TAG_GROUP, TAG_INDEX, TAG_ROW,
    decode_group_values, group_key, multi_prefix, prefix_end,
};
use crate::limits::READ_LIMIT_MAX;
use crate::spec::{AggFn, Aggregate, FieldPath, Plan, PlanKind};
use crate::store::SpaceSnapshot;
use crate::value::{FIXED_SCALE, Scalar, canonical_json};

/// One row of a view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Table: the record key as [`layout::key_text`] (backslashes doubled, bytes outside
    /// UTF-8 as `\xHH`); index: the value key; aggregate: the group key (`|`-joined).
    pub key: String,
    /// Table: the (projected) value; index: `{"keys": [...]}` (record keys as
    /// [`layout::key_text`], unkeyed records as `\@partition:offset`); aggregate: group-by
    /// fields and aggregate outputs.
    pub value: Value,
    /// Partition of the record that last changed the row (aggregates: the last partition,
    /// in partition order, holding part of the group).
    pub partition: u32,
    /// Offset of that record.
    pub offset: u64,
    /// Request id of that record, if it had one.
    pub request_id: Option<String>,
}

/// A range of rows: `prefix`, `start` (inclusive) and `end` (exclusive) combine. Table keys
/// are given as [`layout::key_text`] (read back with [`layout::key_bytes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRange {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Keys from this one on (a `next` from an earlier page continues there; an index
    /// view's `next` is a cursor, `\#` then base64url of the entry it resumes at).
    pub start: Option<String>,
    /// Keys before this one.
    pub end: Option<String>,
    /// Most rows (index views: primary keys); 1 ..= [`READ_LIMIT_MAX`].
    pub limit: usize,
}

/// An order-independent checksum of a view's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Rows counted.
    pub rows: u64,
    /// Sum modulo 2^128 of XXH3-128 over each row's canonical JSON (RFC 8785), as 32 hex digits.
    #[serde(serialize_with = "hex128")]
    pub hash: u128,
}

fn hex128<S: serde::Serializer>(v: &u128, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:032x}"))
}

/// Reads one version's rows from one snapshot.
pub struct Reader<'a> {
    /// The version's plan.
    pub plan: &'a Plan,
    /// The snapshot.
    pub snap: &'a dyn SpaceSnapshot,
    /// Partitions of the source stream.
    pub partitions: u32,
}

/// Text of keys that are UTF-8 by construction (index value keys, group keys).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Marks an index cursor in `start` (no value key contains a backslash followed by `#`:
/// [`crate::value::Scalar::key_text`] escapes every backslash of a value).
const INDEX_CURSOR: &str = "\\#";

/// The `next` of an index page: resumes at entry `k` (escaped value key · 00 00 · pk).
fn index_cursor(k: &[u8]) -> String {
    format!("{INDEX_CURSOR}{}", URL_SAFE_NO_PAD.encode(k))
}

fn row_of(key: &[u8], p: u32, meta: RowMeta, value: Value) -> Row {
    Row {
        key: layout::key_text(key),
        value,
        partition: p,
        offset: meta.offset,
        request_id: meta.request_id,
    }
}

impl Reader<'_> {
    /// Apply state of every partition in the snapshot.
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`].
    pub fn applied(&self) -> Result<Vec<ApplyState>> {
        (0..self.partitions)
            .map(|p| match self.snap.get(&layout::prefix(TAG_APPLIED, p))? {
                Some(b) => ApplyState::decode(&b),
                None => Ok(ApplyState::default()),
            })
            .collect()
    }

    /// The row with this key, whole: an index value with more than [`READ_LIMIT_MAX`]
    /// primary keys is refused ([`ViewError::InvalidRead`] on `keys`; read it with
    /// [`Reader::get_page`]).
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`], [`ViewError::InvalidRead`].
    pub fn get(&self, key: &str) -> Result<Option<Row>> {
        match self.get_page(key)? {
            (row, None) => Ok(row),
            (_, Some(_)) => Err(ViewError::InvalidRead {
                parameter: "keys",
                reason: format!(
                    "index value {key:?} has more than {READ_LIMIT_MAX} primary keys; read it alone (get), page by page"
                ),
            }),
        }
    }

    /// The row with this key and, for an index value with more than [`READ_LIMIT_MAX`]
    /// primary keys, the cursor to the rest: a `start` for [`Reader::scan`], whose rows
    /// begin with the rest of this value (rows of the values after it follow).
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`].
    pub fn get_page(&self, key: &str) -> Result<(Option<Row>, Option<String>)> {
        match &self.plan.kind {
            PlanKind::Table { .. } => {
                let raw = layout::key_bytes(key);
                let mut found = None;
                for p in 0..self.partitions {
                    if let Some(b) = self.snap.get(&layout::key(TAG_ROW, p, &raw))? {
                        found = Some((p, b));
                    }
                }
                let row = found
                    .map(|(p, b)| {
                        let (meta, v) = layout::decode_row(&b)?;
                        Ok::<_, ViewError>(row_of(&raw, p, meta, v))
                    })
                    .transpose()?;
                Ok((row, None))
            }
            PlanKind::Index { .. } => {
                let esc = layout::index_value_prefix(key.as_bytes());
                let hi = prefix_end(&esc);
                let (rows, next) = self.index_entries(&esc, hi.as_deref(), READ_LIMIT_MAX)?;
                Ok((rows.into_iter().next(), next))
            }
            PlanKind::Aggregate {
                group_by,
                aggregates,
            } => Ok((
                self.aggregate_row(group_by, aggregates, key.as_bytes())?,
                None,
            )),
        }
    }

    /// Rows in key order within `range`, and the `start` of the next page if there is one.
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`]; [`ViewError::InvalidRead`] on `start`
    /// for an index cursor that does not decode.
    pub fn scan(&self, range: &ScanRange) -> Result<(Vec<Row>, Option<String>)> {
        let limit = range.limit.clamp(1, READ_LIMIT_MAX);
        let raw = |s: &Option<String>| s.as_ref().map(|s| s.as_bytes().to_vec());
        let (prefix, start, end) = (raw(&range.prefix), raw(&range.start), raw(&range.end));
        match &self.plan.kind {
            PlanKind::Table { .. } => {
                let key = |s: &Option<String>| s.as_deref().map(layout::key_bytes);
                let (prefix, start, end) = (key(&range.prefix), key(&range.start), key(&range.end));
                let (lo, hi) = bounds(prefix, start, end, |b| b.to_vec());
                let mut merged: BTreeMap<Vec<u8>, (u32, Vec<u8>)> = BTreeMap::new();
                for p in 0..self.partitions {
                    let pre = layout::prefix(TAG_ROW, p);
                    self.collect(&pre, &lo, hi.as_deref(), limit + 1, &mut |k, v| {
                        merged.insert(k.to_vec(), (p, v.to_vec()));
                    })?;
                }
                let next = merged.keys().nth(limit).map(|k| layout::key_text(k));
                let rows = merged
                    .into_iter()
                    .take(limit)
                    .map(|(k, (p, b))| {
                        let (meta, v) = layout::decode_row(&b)?;
                        Ok(row_of(&k, p, meta, v))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((rows, next))
            }
            PlanKind::Index { .. } => {
                // A cursor (a `next` of an earlier page) resumes at its entry, mid-value.
                let start = match range.start.as_deref() {
                    Some(s) => Some(match s.strip_prefix(INDEX_CURSOR) {
                        Some(c) => {
                            URL_SAFE_NO_PAD
                                .decode(c)
                                .map_err(|e| ViewError::InvalidRead {
                                    parameter: "start",
                                    reason: format!("not an index cursor: {e}"),
                                })?
                        }
                        None => layout::escaped(s.as_bytes()),
                    }),
                    None => None,
                };
                let lo_hi = bounds(prefix, None, end, layout::escaped);
                let lo = match start {
                    Some(s) if s > lo_hi.0 => s,
                    _ => lo_hi.0,
                };
                self.index_entries(&lo, lo_hi.1.as_deref(), limit)
            }
            PlanKind::Aggregate {
                group_by,
                aggregates,
            } => {
                let (lo, hi) = bounds(prefix, start, end, layout::escaped);
                let mut groups = BTreeSet::new();
                for p in 0..self.partitions {
                    let pre = layout::prefix(TAG_GROUP, p);
                    self.collect(&pre, &lo, hi.as_deref(), limit + 1, &mut |k, _| {
                        groups.insert(layout::unescape(k));
                    })?;
                }
                let next = groups.iter().nth(limit).map(|k| text(k));
                let mut rows = Vec::new();
                for g in groups.into_iter().take(limit) {
                    if let Some(r) = self.aggregate_row(group_by, aggregates, &g)? {
                        rows.push(r);
                    }
                }
                Ok((rows, next))
            }
        }
    }

    /// Visits up to `max` entries `pre · k` with `lo <= k < hi`, passing `k` and the value.
    fn collect(
        &self,
        pre: &[u8],
        lo: &[u8],
        hi: Option<&[u8]>,
        max: usize,
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        let mut from = pre.to_vec();
        from.extend_from_slice(lo);
        let to = match hi {
            Some(h) => {
                let mut t = pre.to_vec();
                t.extend_from_slice(h);
                t
            }
            None => prefix_end(pre).unwrap_or_else(|| vec![0xFF; pre.len() + 1]),
        };
        let mut n = 0;
        self.snap.scan(&from, &to, false, &mut |k, v| {
            f(&k[pre.len()..], v);
            n += 1;
            n < max
        })
    }

    /// Index entries `esc(value) · 00 00 · pk` in `[lo, hi)`, grouped into one row per value.
    fn index_entries(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Row>, Option<String>)> {
        let mut merged: BTreeMap<Vec<u8>, (u32, Vec<u8>)> = BTreeMap::new();
        for p in 0..self.partitions {
            let pre = layout::prefix(TAG_INDEX, p);
            self.collect(&pre, lo, hi, limit + 1, &mut |k, v| {
                merged.insert(k.to_vec(), (p, v.to_vec()));
            })?;
        }
        let next = merged.keys().nth(limit).map(|k| index_cursor(k));
        let mut rows: Vec<Row> = Vec::new();
        for (k, (p, v)) in merged.into_iter().take(limit) {
            let (vk, pk) = layout::split_escaped(&k)
                .ok_or_else(|| ViewError::corrupt("index entry", "no key terminator"))?;
            let meta = RowMeta::decode(&mut Dec::new(&v, "index entry"))?;
            let vk = text(&vk);
            let pk = Value::String(
                layout::pk_text(pk)
                    .ok_or_else(|| ViewError::corrupt("index entry", "bad primary key tag"))?,
            );
            match rows.last_mut() {
                Some(r) if r.key == vk => {
                    if let Some(Value::Array(keys)) = r.value.get_mut("keys") {
                        keys.push(pk);
                    }
                    if (p, meta.offset) >= (r.partition, r.offset) {
                        r.partition = p;
                        r.offset = meta.offset;
                        r.request_id = meta.request_id;
                    }
                }
                _ => rows.push(Row {
                    key: vk,
                    value: serde_json::json!({ "keys": [pk] }),
                    partition: p,
                    offset: meta.offset,
                    request_id: meta.request_id,
                }),
            }
        }
        Ok((rows, next))
    }

    /// One group, merged over partitions in partition order.
    fn aggregate_row(
        &self,
        group_by: &[FieldPath],
        aggregates: &[Aggregate],
        group: &[u8],
    ) -> Result<Option<Row>> {
        let mut parts = Vec::new();
        for p in 0..self.partitions {
            if let Some(b) = self.snap.get(&group_key(p, group))? {
                parts.push((p, Partial::decode(&b, aggregates.len())?));
            }
        }
        let Some((last_p, last)) = parts.last() else {
            return Ok(None);
        };
        let mut out = serde_json::Map::new();
        // The smallest form of the group-by values among the group's records, all partitions.
        let mut forms: BTreeMap<&[u8], i64> = BTreeMap::new();
        for (_, x) in &parts {
            for (form, n) in &x.group_values {
                *forms.entry(form.as_slice()).or_default() += n;
            }
        }
        let values = match forms.into_iter().find(|(_, n)| *n > 0) {
            Some((form, _)) => decode_group_values(form, group_by.len())?,
            None => Vec::new(),
        };
        for (i, g) in group_by.iter().enumerate() {
            out.insert(
                g.text.clone(),
                values.get(i).map_or(Value::Null, Scalar::to_json),
            );
        }
        let count: i64 = parts.iter().map(|(_, x)| x.count).sum();
        for (i, a) in aggregates.iter().enumerate() {
            let n: i64 = parts.iter().map(|(_, x)| x.aggs[i].n).sum();
            let int_sum: i128 = parts.iter().map(|(_, x)| x.aggs[i].int_sum).sum();
            let fixed_sum: i128 = parts.iter().map(|(_, x)| x.aggs[i].fixed_sum).sum();
            let float_n: i64 = parts.iter().map(|(_, x)| x.aggs[i].float_n).sum();
            let total = || int_sum as f64 + fixed_sum as f64 / FIXED_SCALE;
            let v = match a.func {
                AggFn::Count if a.field.is_none() => Value::from(count),
                AggFn::Count => Value::from(n),
                AggFn::Sum if n == 0 => Value::Null,
                AggFn::Sum if float_n == 0 => match i64::try_from(int_sum) {
                    Ok(s) => Value::from(s),
                    Err(_) => Value::String(int_sum.to_string()),
                },
                AggFn::Sum => Scalar::Float(total()).to_json(),
                AggFn::Avg if n == 0 => Value::Null,
                AggFn::Avg => Scalar::Float(total() / n as f64).to_json(),
                AggFn::Min | AggFn::Max => {
                    let max = a.func == AggFn::Max;
                    let mut best: Option<Scalar> = None;
                    for (p, _) in &parts {
                        let pre = multi_prefix(*p, i, group);
                        let to = prefix_end(&pre).unwrap_or_default();
                        let mut found = None;
                        self.snap.scan(&pre, &to, max, &mut |k, _| {
                            found = Scalar::from_order_key(&k[pre.len()..]);
                            false
                        })?;
                        if let Some(s) = found {
                            let better = match &best {
                                None => true,
                                Some(b) => {
                                    s.order_key() > b.order_key() && max
                                        || s.order_key() < b.order_key() && !max
                                }
                            };
                            if better {
                                best = Some(s);
                            }
                        }
                    }
                    best.map_or(Value::Null, |s| s.to_json())
                }
                AggFn::CountDistinct => {
                    let mut distinct = BTreeSet::new();
                    for (p, _) in &parts {
                        let pre = multi_prefix(*p, i, group);
                        let to = prefix_end(&pre).unwrap_or_default();
                        self.snap.scan(&pre, &to, false, &mut |k, _| {
                            distinct.insert(k[pre.len()..].to_vec());
                            true
                        })?;
                    }
                    Value::from(distinct.len() as u64)
                }
            };
            out.insert(a.name.clone(), v);
        }
        Ok(Some(Row {
            key: text(group),
            value: Value::Object(out),
            partition: *last_p,
            offset: last.meta.offset,
            request_id: last.meta.request_id.clone(),
        }))
    }

    /// The digest of every row (see [`Digest`]).
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`].
    pub fn digest(&self) -> Result<Digest> {
        let mut d = Digest { rows: 0, hash: 0 };
        let mut range = ScanRange {
            limit: READ_LIMIT_MAX,
            ..ScanRange::default()
        };
        loop {
            let (rows, next) = self.scan(&range)?;
            for r in &rows {
                if let (PlanKind::Index { .. }, Some(Value::Array(keys))) =
                    (&self.plan.kind, r.value.get("keys"))
                {
                    // Index rows are hashed per primary key, the unit of the index, so that
                    // where a page boundary splits a value does not matter.
                    for pk in keys {
                        let v = serde_json::json!({ "key": r.key, "pk": pk });
                        d.hash = d.hash.wrapping_add(xxh3_128(canonical_json(&v).as_bytes()));
                        d.rows += 1;
                    }
                    continue;
                }
                let v = serde_json::to_value(r)
                    .map_err(|e| ViewError::corrupt("row", e.to_string()))?;
                d.hash = d.hash.wrapping_add(xxh3_128(canonical_json(&v).as_bytes()));
                d.rows += 1;
            }
            match next {
                Some(n) => range.start = Some(n),
                None => return Ok(d),
            }
        }
    }
}

/// `[lo, hi)` in encoded key space from a prefix, a start and an end (`hi` `None`: no bound).
fn bounds(
    prefix: Option<Vec<u8>>,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    enc: fn(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let p = prefix.map(|p| enc(&p));
    let mut lo = p.clone().unwrap_or_default();
    if let Some(s) = start.map(|s| enc(&s))
        && s > lo
    {
        lo = s;
    }
    let mut hi = p.as_deref().and_then(prefix_end);
    if let Some(e) = end.map(|e| enc(&e))
        && hi.as_ref().is_none_or(|h| e < *h)
    {
        hi = Some(e);
    }
    (lo, hi)
}
