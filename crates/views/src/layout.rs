//! How a view version's state entries are keyed and encoded, byte for byte (held in memory,
//! stored inside checkpoint chunks: [`crate::state`]).
//!
//! Every key starts with a tag byte and the source partition (`u32` big-endian), so each
//! processor owns a disjoint key range: it is the only writer of its keys, which is what lets
//! it cache them, and per-partition state is what reads merge in partition order.
//!
//! | tag | key after `tag · partition` | value |
//! | --- | --- | --- |
//! | `A` | — | [`ApplyState`]: next offset to apply, last applied timestamp, skipped records, request-id cursor, then the offset the version began at (`u64` LE; added within format 4: a state without it began at 0, and readers that predate it ignore it) |
//! | `R` | record key | table row: [`RowMeta`] · JSON value |
//! | `I` | `esc(value key) · 00 00 · pk` | index entry: [`RowMeta`]; `pk` is `01 · record key` or, for an unkeyed record, `00 · partition u32 BE · offset u64 BE` |
//! | `C` | primary key | what the key's current record contributes (index: value key; aggregate: group key, group-by values, aggregate inputs) |
//! | `G` | `esc(group key)` | aggregate partial (count, last change, forms of the group-by values with their record counts, sums) |
//! | `M` | `aggregate# · esc(group key) · 00 00 · value` | multiset count of a value (min/max, count_distinct): `i64` LE |
//! | `H` | — | the partition's checkpoint header ([`crate::state`]; in the store only) |
//! | `K` | chunk sequence number `u64` BE | a checkpoint chunk: entries written or deleted ([`crate::state`]; in the store only) |
//!
//! `esc` doubles nothing but maps byte `00` to `00 FF`, so `00 00` ends a component and byte
//! order of escaped keys equals byte order of the keys (prefix scans stay prefix scans).
//! Integers inside values are little-endian and fixed-width. Format version: 4
//! ([`crate::engine::FORMAT_VERSION`]; the catalog records it; a store of another version is
//! refused, except 3, whose catalog is upgraded). Version 2 wrote record keys as escaped text
//! and tagged index primary keys; version 3 keeps these entries in memory and stores them
//! inside checkpoint chunks ([`crate::state`]); version 4 changes only the catalog (versions
//! numbered per view), not this layout.

use serde_json::Value;

use crate::error::{Result, ViewError};
use crate::value::Scalar;

/// Tag of the apply state.
pub const TAG_APPLIED: u8 = b'A';
/// Tag of table rows.
pub const TAG_ROW: u8 = b'R';
/// Tag of index entries.
pub const TAG_INDEX: u8 = b'I';
/// Tag of contributions.
pub const TAG_CONTRIB: u8 = b'C';
/// Tag of aggregate partials.
pub const TAG_GROUP: u8 = b'G';
/// Tag of multiset entries.
pub const TAG_MULTI: u8 = b'M';
/// Tag of a partition's checkpoint header in the store.
pub const TAG_HEADER: u8 = b'H';
/// Tag of checkpoint chunks in the store.
pub const TAG_CHUNK: u8 = b'K';

/// Tag of a record key as an index entry's primary key.
pub const PK_KEYED: u8 = 1;
/// Tag of an unkeyed record's stand-in primary key (partition and offset follow, big-endian).
pub const PK_UNKEYED: u8 = 0;

/// How a primary key (an index entry's tagged `pk`, see the table above) reads: a record
/// key as [`key_text`], an unkeyed record as `\@partition:offset` (a single backslash, which
/// [`key_text`] never leaves alone, so it is apart from every record key).
pub fn pk_text(pk: &[u8]) -> Option<String> {
    match pk.split_first()? {
        (&PK_KEYED, key) => Some(key_text(key)),
        (&PK_UNKEYED, rest) if rest.len() == 12 => {
            let p = u32::from_be_bytes(rest[..4].try_into().ok()?);
            let o = u64::from_be_bytes(rest[4..].try_into().ok()?);
            Some(format!("\\@{p}:{o}"))
        }
        _ => None,
    }
}

/// A record key (bytes) as text in rows, cursors and digests: UTF-8 as it is, except that
/// `\` is doubled and every byte that is not part of valid UTF-8 is written `\xHH` (two
/// upper-case hex digits). One text per key, so different keys never look (or digest) alike;
/// [`key_bytes`] reverses it.
pub fn key_text(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// A record key given as text (a `get` key, a table scan's `prefix`/`start`/`end`) as bytes:
/// `\\` is one backslash, `\xHH` one byte; any other backslash stands for itself, so a key
/// with a lone backslash can be given as it is. `key_bytes(&key_text(k)) == k` for every key.
pub fn key_bytes(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x')
                && let Some(h) = b.get(i + 2..i + 4)
                && let Ok(h) = std::str::from_utf8(h)
                && h.bytes().all(|c| c.is_ascii_hexdigit())
                && let Ok(v) = u8::from_str_radix(h, 16)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `tag · partition`.
pub fn prefix(tag: u8, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(tag);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// `tag · partition · rest`.
pub fn key(tag: u8, partition: u32, rest: &[u8]) -> Vec<u8> {
    let mut k = prefix(tag, partition);
    k.extend_from_slice(rest);
    k
}

/// Appends `esc(bytes)` (no terminator).
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// Splits `esc(a) · 00 00 · b` into `(a, b)`.
pub fn split_escaped(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            match bytes.get(i + 1)? {
                0 => return Some((out, &bytes[i + 2..])),
                0xFF => {
                    out.push(0);
                    i += 2;
                    continue;
                }
                _ => return None,
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    None
}

/// Inverse of [`push_escaped`] for a whole key (no terminator).
pub fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        out.push(bytes[i]);
        i += if bytes[i] == 0 { 2 } else { 1 };
    }
    out
}

/// The smallest byte string greater than every string starting with `p` (`None`: none is).
pub fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xFF {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// A little-endian writer for state values.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i128.
    pub fn i128(&mut self, v: i128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends length-prefixed (u32) bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// The reader matching [`Enc`].
pub struct Dec<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// Reads `b`, naming `what` in errors.
    pub fn new(b: &'a [u8], what: &'static str) -> Self {
        Dec { b, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(ViewError::corrupt(self.what, "truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }
    /// Reads an i128.
    pub fn i128(&mut self) -> Result<i128> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(i128::from_le_bytes(a))
    }
    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        let n = u32::from_le_bytes(a) as usize;
        self.take(n)
    }
    /// Reads length-prefixed bytes, or `None` where the length is `u32::MAX`.
    pub fn bytes_or_none(&mut self) -> Result<Option<&'a [u8]>> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        match u32::from_le_bytes(a) {
            u32::MAX => Ok(None),
            n => Ok(Some(self.take(n as usize)?)),
        }
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    /// The bytes not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.b
    }
}

/// Which record last changed a row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowMeta {
    /// Its offset.
    pub offset: u64,
    /// Its request id, if its request had one.
    pub request_id: Option<String>,
}

impl RowMeta {
    /// Encodes: offset u64 · request id (length-prefixed; length `u32::MAX` = none).
    pub fn encode_into(&self, e: &mut Enc) {
        e.u64(self.offset);
        match &self.request_id {
            Some(r) => {
                e.bytes(r.as_bytes());
            }
            None => e.0.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }

    /// Decodes what [`RowMeta::encode_into`] wrote.
    pub fn decode(d: &mut Dec<'_>) -> Result<RowMeta> {
        let offset = d.u64()?;
        let mut a = [0u8; 4];
        a.copy_from_slice(d.take(4)?);
        let n = u32::from_le_bytes(a);
        let request_id = if n == u32::MAX {
            None
        } else {
            let b = d.take(n as usize)?;
            Some(String::from_utf8_lossy(b).into_owned())
        };
        Ok(RowMeta { offset, request_id })
    }
}

/// A processor's durable position, committed with every batch of state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyState {
    /// Next offset to apply (records below it are applied).
    pub applied: u64,
    /// Timestamp of the last applied record, ms (lag in ms; never used for order).
    pub last_timestamp_ms: i64,
    /// Records left out (row key over [`crate::limits::ROW_KEY_BYTES_MAX`]).
    pub skipped: u64,
    /// The request id of the share being applied and how many of its records are still to
    /// come (only a share's first record carries the header).
    pub request: Option<(String, u32)>,
    /// The offset this version began applying the partition at: 0, or the first retained
    /// offset when retention had deleted the records below it before the version applied
    /// any (those records are not reflected). Encoded last and absent in states written
    /// before it existed, which read as 0.
    pub began: u64,
}

impl ApplyState {
    /// Encodes the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.applied)
            .i64(self.last_timestamp_ms)
            .u64(self.skipped);
        match &self.request {
            Some((id, left)) => {
                e.u64(u64::from(*left)).bytes(id.as_bytes());
            }
            None => {
                e.u64(0);
            }
        }
        e.u64(self.began);
        e.0
    }

    /// Whether the version has applied nothing of this partition yet (it would begin at the
    /// first retained offset, whatever retention deleted before).
    pub fn nothing_applied(&self) -> bool {
        self.applied == self.began
    }

    /// Decodes a state.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`].
    pub fn decode(b: &[u8]) -> Result<ApplyState> {
        let mut d = Dec::new(b, "apply state");
        let applied = d.u64()?;
        let last_timestamp_ms = d.i64()?;
        let skipped = d.u64()?;
        let left = d.u64()?;
        let request = if left > 0 {
            let id = String::from_utf8_lossy(d.bytes()?).into_owned();
            Some((id, u32::try_from(left).unwrap_or(u32::MAX)))
        } else {
            None
        };
        let began = if d.is_empty() { 0 } else { d.u64()? };
        Ok(ApplyState {
            applied,
            last_timestamp_ms,
            skipped,
            request,
            began,
        })
    }
}

/// The part of an index entry's key after `tag · partition` shared by every entry of value
/// key `vk`: `esc(vk) · 00 00`.
pub fn index_value_prefix(vk: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(vk.len() + 16);
    push_escaped(&mut k, vk);
    k.extend_from_slice(&[0, 0]);
    k
}

/// Key of an index entry: `I · p · esc(vk) · 00 00 · pk`, where `pk` is
/// `01 · record key` or, for an unkeyed record, `00 · p u32 BE · offset u64 BE`.
pub fn index_key(p: u32, vk: &[u8], record_key: Option<&[u8]>, offset: u64) -> Vec<u8> {
    let mut k = prefix(TAG_INDEX, p);
    push_escaped(&mut k, vk);
    k.extend_from_slice(&[0, 0]);
    match record_key {
        Some(key) => {
            k.push(PK_KEYED);
            k.extend_from_slice(key);
        }
        None => {
            k.push(PK_UNKEYED);
            k.extend_from_slice(&p.to_be_bytes());
            k.extend_from_slice(&offset.to_be_bytes());
        }
    }
    k
}

/// A table row's value: [`RowMeta`] · the JSON value's bytes.
pub fn encode_row(meta: &RowMeta, json: &[u8]) -> Vec<u8> {
    let mut e = Enc::default();
    meta.encode_into(&mut e);
    e.0.extend_from_slice(json);
    e.0
}

/// Decodes what [`encode_row`] wrote.
///
/// # Errors
/// [`ViewError::Corrupt`].
pub fn decode_row(bytes: &[u8]) -> Result<(RowMeta, Value)> {
    let mut d = Dec::new(bytes, "table row");
    let meta = RowMeta::decode(&mut d)?;
    let v = serde_json::from_slice(d.rest())
        .map_err(|e| ViewError::corrupt("table row", e.to_string()))?;
    Ok((meta, v))
}

/// A multiset count's value: `i64` little-endian (entries of count 0 are deleted).
pub fn encode_count(count: i64) -> Vec<u8> {
    count.to_le_bytes().to_vec()
}

/// Decodes what [`encode_count`] wrote.
///
/// # Errors
/// [`ViewError::Corrupt`].
pub fn decode_count(b: &[u8]) -> Result<i64> {
    Dec::new(b, "multiset count").i64()
}

/// `esc(b)`, no terminator.
pub fn escaped(b: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(b.len());
    push_escaped(&mut e, b);
    e
}

/// Key of a partition's checkpoint header: `H · p`.
pub fn checkpoint_header_key(p: u32) -> Vec<u8> {
    prefix(TAG_HEADER, p)
}

/// Key of checkpoint chunk `seq` of a partition: `K · p · seq u64 BE`.
pub fn checkpoint_chunk_key(p: u32, seq: u64) -> Vec<u8> {
    let mut k = prefix(TAG_CHUNK, p);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The stored form of a record's group-by values: each [`Scalar::encode`]d, length-prefixed.
pub fn encode_group_values(values: &[Scalar]) -> Vec<u8> {
    let mut e = Enc::default();
    for v in values {
        e.bytes(&v.encode());
    }
    e.0
}

/// Inverse of [`encode_group_values`] for `n` values.
///
/// # Errors
/// [`ViewError::Corrupt`].
pub fn decode_group_values(b: &[u8], n: usize) -> Result<Vec<Scalar>> {
    let mut d = Dec::new(b, "group values");
    (0..n)
        .map(|_| {
            Scalar::decode(d.bytes()?)
                .ok_or_else(|| ViewError::corrupt("group values", "bad scalar"))
        })
        .collect()
}

/// What one primary key's current record contributes to an aggregate view.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// Group key text.
    pub group: Vec<u8>,
    /// The record's group-by values ([`encode_group_values`]): records whose values differ
    /// in type can share a group key (`1` and `"1"`), so the group counts each form.
    pub values: Vec<u8>,
    /// One input per aggregate (`Null` where it has no field).
    pub inputs: Vec<Scalar>,
}

impl Contribution {
    /// Encodes: group · values · one input per aggregate, each length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(&self.group);
        e.bytes(&self.values);
        for s in &self.inputs {
            e.bytes(&s.encode());
        }
        e.0
    }

    /// Decodes a contribution of `n` aggregate inputs.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`].
    pub fn decode(b: &[u8], n: usize) -> Result<Contribution> {
        let mut d = Dec::new(b, "contribution");
        let group = d.bytes()?.to_vec();
        let values = d.bytes()?.to_vec();
        let inputs = (0..n)
            .map(|_| {
                Scalar::decode(d.bytes()?)
                    .ok_or_else(|| ViewError::corrupt("contribution", "bad scalar"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Contribution {
            group,
            values,
            inputs,
        })
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
    /// The forms of the group-by values among the group's records
    /// ([`encode_group_values`] → records with it), sorted by bytes, counts above zero. Reads
    /// show the smallest form: a function of the records in the group, not of their order.
    pub group_values: Vec<(Vec<u8>, i64)>,
    /// One per aggregate.
    pub aggs: Vec<AggState>,
}

impl Partial {
    /// Encodes the partial.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.i64(self.count);
        self.meta.encode_into(&mut e);
        e.u64(self.group_values.len() as u64);
        for (form, n) in &self.group_values {
            e.bytes(form).i64(*n);
        }
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
        let forms = d.u64()?;
        let mut group_values = Vec::new();
        for _ in 0..forms {
            group_values.push((d.bytes()?.to_vec(), d.i64()?));
        }
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
    let mut k = prefix(TAG_MULTI, p);
    k.push(u8::try_from(agg).unwrap_or(u8::MAX));
    push_escaped(&mut k, group);
    k.extend_from_slice(&[0, 0]);
    k
}

/// Key of a group partial: `G · p · esc(group)`.
pub fn group_key(p: u32, group: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    group_key_into(&mut k, p, group);
    k
}

/// [`group_key`] into `out` (cleared first), reusing its allocation.
pub fn group_key_into(out: &mut Vec<u8>, p: u32, group: &[u8]) {
    out.clear();
    out.push(TAG_GROUP);
    out.extend_from_slice(&p.to_be_bytes());
    push_escaped(out, group);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_preserves_order_and_splits() {
        let parts: [&[u8]; 5] = [b"", b"a", b"a\0", b"a\0b", b"ab"];
        let enc = |p: &[u8], pk: &[u8]| {
            let mut v = Vec::new();
            push_escaped(&mut v, p);
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(pk);
            v
        };
        for w in parts.windows(2) {
            assert!(enc(w[0], b"zz") < enc(w[1], b""));
        }
        for p in parts {
            let e = enc(p, b"pk\0");
            let (a, b) = split_escaped(&e).unwrap();
            assert_eq!((a.as_slice(), b), (p, &b"pk\0"[..]));
        }
    }

    #[test]
    fn key_text_round_trips_and_is_one_to_one() {
        let keys: [&[u8]; 8] = [
            b"",
            b"a",
            b"a\\b",
            b"a\xc0",
            b"\\xC0",
            b"\xff\xfe",
            b"\\",
            "é".as_bytes(),
        ];
        let texts: Vec<String> = keys.iter().map(|k| key_text(k)).collect();
        for (k, t) in keys.iter().zip(&texts) {
            assert_eq!(key_bytes(t), *k, "{t}");
        }
        let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert_eq!(
            key_bytes("a\\b"),
            b"a\\b",
            "a lone backslash stands for itself"
        );
        assert_eq!(
            pk_text(&[PK_UNKEYED, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]).unwrap(),
            "\\@1:7"
        );
    }

    #[test]
    fn apply_state_round_trips() {
        let s = ApplyState {
            applied: 7,
            last_timestamp_ms: -3,
            skipped: 2,
            request: Some(("req-1".into(), 4)),
            began: 5,
        };
        assert_eq!(ApplyState::decode(&s.encode()).unwrap(), s);
        // A state written before `began` existed ends after the request: it began at 0.
        let bytes = s.encode();
        let old = ApplyState::decode(&bytes[..bytes.len() - 8]).unwrap();
        assert_eq!(old, ApplyState { began: 0, ..s });
    }

    #[test]
    fn index_keys_split_back_into_value_key_and_primary_key() {
        for (record_key, pk) in [(Some(&b"key"[..]), "key"), (None, "\\@3:7")] {
            let k = index_key(3, b"a\x00b", record_key, 7);
            let head = [prefix(TAG_INDEX, 3), index_value_prefix(b"a\x00b")].concat();
            assert!(k.starts_with(&head), "{k:?}");
            let (vk, rest) = split_escaped(&k[5..]).unwrap();
            assert_eq!(vk, b"a\x00b");
            assert_eq!(pk_text(rest).as_deref(), Some(pk));
        }
    }

    #[test]
    fn entry_values_round_trip() {
        let meta = RowMeta {
            offset: 9,
            request_id: Some("r".into()),
        };
        let (m, v) = decode_row(&encode_row(&meta, br#"{"a":1}"#)).unwrap();
        assert_eq!((m, v), (meta.clone(), serde_json::json!({"a": 1})));
        assert_eq!(decode_count(&encode_count(-3)).unwrap(), -3);
        let partial = Partial {
            count: 2,
            meta,
            group_values: vec![(encode_group_values(&[Scalar::Null]), 2)],
            aggs: vec![AggState {
                n: 1,
                int_sum: -5,
                fixed_sum: 7,
                float_n: 1,
            }],
        };
        assert_eq!(Partial::decode(&partial.encode(), 1).unwrap(), partial);
        let c = Contribution {
            group: b"g".to_vec(),
            values: encode_group_values(&[Scalar::Null]),
            inputs: vec![Scalar::Null, Scalar::Null],
        };
        assert_eq!(Contribution::decode(&c.encode(), 2).unwrap(), c);
        let mut reused = b"old".to_vec();
        group_key_into(&mut reused, 4, b"g\x00");
        assert_eq!(reused, group_key(4, b"g\x00"));
        assert!(multi_key(4, 1, b"g", b"v").starts_with(&multi_prefix(4, 1, b"g")));
    }
}
