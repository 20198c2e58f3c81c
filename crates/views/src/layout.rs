//! How a view version's state entries are keyed and encoded, byte for byte (held in memory,
//! stored inside checkpoint chunks: [`crate::state`]).
//!
//! Every key starts with a tag byte and the source partition (`u32` big-endian), so each
//! processor owns a disjoint key range: it is the only writer of its keys, which is what lets
//! it cache them, and per-partition state is what reads merge in partition order.
//!
//! | tag | key after `tag · partition` | value |
//! | --- | --- | --- |
//! | `A` | — | [`ApplyState`]: next offset to apply, last applied timestamp, request-id cursor |
//! | `R` | record key | table row: [`RowMeta`] · JSON value |
//! | `I` | `esc(value key) · 00 00 · pk` | index entry: [`RowMeta`]; `pk` is `01 · record key` or, for an unkeyed record, `00 · partition u32 BE · offset u64 BE` |
//! | `C` | primary key | what the key's current record contributes (index: value key; aggregate: group key, group-by values, aggregate inputs) |
//! | `G` | `esc(group key)` | aggregate partial (count, last change, forms of the group-by values with their record counts, sums) |
//! | `M` | `aggregate# · esc(group key) · 00 00 · value` | multiset count of a value (min/max, count_distinct) |
//!
//! `esc` doubles nothing but maps byte `00` to `00 FF`, so `00 00` ends a component and byte
//! order of escaped keys equals byte order of the keys (prefix scans stay prefix scans).
//! Integers inside values are little-endian and fixed-width. Format version: 3
//! ([`crate::engine::FORMAT_VERSION`]; the catalog records it; a store of another version is
//! refused). Version 2 wrote record keys as escaped text and tagged index primary keys;
//! version 3 keeps these entries in memory and stores them inside checkpoint chunks
//! ([`crate::state`]).

use crate::error::{Result, ViewError};

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
        e.0
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
        Ok(ApplyState {
            applied,
            last_timestamp_ms,
            skipped,
            request,
        })
    }
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
        };
        assert_eq!(ApplyState::decode(&s.encode()).unwrap(), s);
    }
}
