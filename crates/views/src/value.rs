//! Values as views see them: field paths into JSON, scalars, their order, their encodings.
//!
//! **Field paths** are dot-separated member names (`a.b.c`) looked up in JSON objects; there
//! is no array indexing. A path that meets a missing member or a non-object is *missing*,
//! and a missing field behaves exactly like JSON `null` everywhere (filters, group keys,
//! aggregates).
//!
//! **Numbers.** A JSON integer that fits `i64` is exact ([`Scalar::Int`]); every other number
//! (fractions, exponents, integers beyond `i64`) is an `f64` ([`Scalar::Float`]). Integers and
//! floats compare numerically with each other.
//!
//! **Order** (filters `lt`..`ge`, `min`/`max`): `false < true < numbers < strings` (strings by
//! UTF-8 bytes); arrays and objects are not ordered (comparisons with them are false and
//! `min`/`max` skip them). A filter comparison between different classes (a string with a
//! number) is false.
//!
//! **Canonical JSON** ([`canonical_json`]) follows RFC 8785 (JCS): object members sorted by
//! UTF-16 code units, no whitespace, shortest round-trip numbers in ECMAScript form.

use std::cmp::Ordering;

use serde_json::Value;

/// A value extracted from a record for filtering, grouping and aggregation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// JSON `null` or a missing field.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// An array or object, as canonical JSON.
    Json(String),
}

/// Looks `path` (already split on dots) up in `value`; `None` when missing.
pub fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = value;
    for seg in path {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

impl Scalar {
    /// The scalar of a JSON value (`None` = missing = `Null`).
    pub fn of(value: Option<&Value>) -> Scalar {
        match value {
            None | Some(Value::Null) => Scalar::Null,
            Some(Value::Bool(b)) => Scalar::Bool(*b),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
            },
            Some(Value::String(s)) => Scalar::Str(s.clone()),
            Some(v) => Scalar::Json(canonical_json(v)),
        }
    }

    /// Whether this is `Null` (or missing).
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// Back to JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Json(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        }
    }

    /// Order class: bool 1, number 2, string 3; null and JSON have none.
    fn class(&self) -> Option<u8> {
        match self {
            Scalar::Bool(_) => Some(1),
            Scalar::Int(_) | Scalar::Float(_) => Some(2),
            Scalar::Str(_) => Some(3),
            Scalar::Null | Scalar::Json(_) => None,
        }
    }

    /// Compares two ordered scalars of the same class; `None` across classes or for
    /// null/JSON (see the module docs).
    pub fn compare(&self, other: &Scalar) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
            (Scalar::Str(a), Scalar::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            (Scalar::Float(a), Scalar::Float(b)) => a.partial_cmp(b),
            (Scalar::Int(a), Scalar::Float(b)) => Some(cmp_int_float(*a, *b)),
            (Scalar::Float(a), Scalar::Int(b)) => Some(cmp_int_float(*b, *a).reverse()),
            _ => None,
        }
    }

    /// Equality for filters: numbers numerically, arrays/objects by canonical form.
    pub fn equals(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Json(a), Scalar::Json(b)) => a == b,
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }

    /// Order-preserving bytes of an ordered scalar (`None` for null and JSON): the keys of
    /// `min`/`max` multisets. Layout: class byte, then bool `0|1`; number: f64 order bits
    /// (8 bytes BE), then `0` for a float or `1` + i64 order bits for an integer; string:
    /// UTF-8 bytes. An integer's f64 is the largest f64 not above it (rounded toward −∞, not
    /// to nearest), so byte order equals [`Scalar::compare`] between integers and floats
    /// exactly, beyond 2^53 too: a float equal to that f64 is below the integer or equal to
    /// it (then the float sorts first), a larger float is above it. Integers that share the
    /// f64 are ordered by their own bits.
    pub fn order_key(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(18);
        out.push(self.class()?);
        match self {
            Scalar::Bool(b) => out.push(u8::from(*b)),
            Scalar::Int(i) => {
                out.extend_from_slice(&f64_order_bits(f64_at_or_below(*i)).to_be_bytes());
                out.push(1);
                out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
            }
            Scalar::Float(f) => {
                out.extend_from_slice(&f64_order_bits(*f).to_be_bytes());
                out.push(0);
            }
            Scalar::Str(s) => out.extend_from_slice(s.as_bytes()),
            Scalar::Null | Scalar::Json(_) => return None,
        }
        Some(out)
    }

    /// Inverse of [`Scalar::order_key`].
    pub fn from_order_key(b: &[u8]) -> Option<Scalar> {
        let (&class, rest) = b.split_first()?;
        match class {
            1 => Some(Scalar::Bool(*rest.first()? == 1)),
            2 => {
                let bits = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                match rest.get(8)? {
                    0 => Some(Scalar::Float(f64_from_order_bits(bits))),
                    _ => {
                        let i = u64::from_be_bytes(rest.get(9..17)?.try_into().ok()?);
                        Some(Scalar::Int((i ^ (1 << 63)) as i64))
                    }
                }
            }
            3 => Some(Scalar::Str(String::from_utf8(rest.to_vec()).ok()?)),
            _ => None,
        }
    }

    /// Self-describing bytes of any scalar (the distinct-value keys and stored
    /// contributions): tag byte then payload (`0` null, `4` canonical JSON, else
    /// [`Scalar::order_key`]).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Scalar::Null => vec![0],
            Scalar::Json(s) => {
                let mut v = vec![4];
                v.extend_from_slice(s.as_bytes());
                v
            }
            other => other.order_key().unwrap_or_else(|| vec![0]),
        }
    }

    /// [`Scalar::encode`] of the value with numbers normalised: a float with an exact `i64`
    /// value encodes as that integer (`1.0` as `1`), so values that [`Scalar::equals`] holds
    /// equal get one key — the distinct-value keys of `count_distinct`.
    pub fn distinct_key(&self) -> Vec<u8> {
        match self {
            Scalar::Float(f)
                if f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63) =>
            {
                Scalar::Int(*f as i64).encode()
            }
            other => other.encode(),
        }
    }

    /// Inverse of [`Scalar::encode`].
    pub fn decode(b: &[u8]) -> Option<Scalar> {
        match b.first()? {
            0 => Some(Scalar::Null),
            4 => Some(Scalar::Json(String::from_utf8(b[1..].to_vec()).ok()?)),
            _ => Scalar::from_order_key(b),
        }
    }

    /// How the scalar appears in a group key or index key: strings as they are, numbers and
    /// booleans as their canonical JSON text, arrays/objects as canonical JSON, null as `\N`
    /// (unambiguous, since a `\` inside a value is escaped as `\\`).
    pub fn key_text(&self) -> String {
        let mut out = String::new();
        self.push_key_text(&mut out);
        out
    }

    /// Appends [`Scalar::key_text`] to `out` (no intermediate string for the common cases).
    pub fn push_key_text(&self, out: &mut String) {
        match self {
            Scalar::Null => out.push_str("\\N"),
            Scalar::Str(s) => push_escaped_key_part(out, s),
            Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Scalar::Int(i) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{i}");
            }
            Scalar::Float(f) => push_escaped_key_part(out, &format_f64(*f)),
            Scalar::Json(s) => push_escaped_key_part(out, s),
        }
    }
}

/// Escapes `|` and `\` with a `\` (docs/views.md: group-by values are joined by `|`).
pub fn escape_key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped_key_part(&mut out, s);
    out
}

/// Appends [`escape_key_part`] of `s` to `out`.
pub fn push_escaped_key_part(out: &mut String, s: &str) {
    if !s.contains(['|', '\\']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c == '|' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The largest `f64` not above `i` (`i as f64` rounds to nearest, which may be above `i`).
fn f64_at_or_below(i: i64) -> f64 {
    let f = i as f64;
    // `f` is within ±2^63, so its value fits an i128 exactly.
    if f as i128 > i128::from(i) {
        f.next_down()
    } else {
        f
    }
}

/// Compares an integer with a float exactly.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if f >= 9.3e18 {
        return Ordering::Less;
    }
    if f <= -9.3e18 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => {
            let frac = f - t;
            0.0f64.partial_cmp(&frac).unwrap_or(Ordering::Equal)
        }
        o => o,
    }
}

fn f64_order_bits(f: f64) -> u64 {
    let f = if f == 0.0 { 0.0 } else { f };
    let b = f.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn f64_from_order_bits(b: u64) -> f64 {
    if b >> 63 == 1 {
        f64::from_bits(b & !(1 << 63))
    } else {
        f64::from_bits(!b)
    }
}

/// Scale of the fixed-point accumulator of non-integer sums: 10^9 units per 1.
pub const FIXED_SCALE: f64 = 1e9;

/// A non-integer number as fixed point (units of 10^-9, rounded half to even), or `None`
/// beyond ±1.7e20 (which no sum can hold exactly; such values are left out of `sum`/`avg`).
/// Fixed point makes sums exact under retraction and independent of order, so a live view and
/// a rebuilt one agree bit for bit — an `f64` running sum would not.
pub fn to_fixed(f: f64) -> Option<i128> {
    let scaled = (f * FIXED_SCALE).round_ties_even();
    (scaled.is_finite() && scaled.abs() < 1.7e29).then_some(scaled as i128)
}

/// Formats an `f64` as ECMAScript's `Number.prototype.toString` does (RFC 8785 §3.2.2.3).
pub fn format_f64(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    if !f.is_finite() {
        return "null".to_string();
    }
    // Shortest round-trip digits and exponent from Rust's `{:e}` (e.g. "1.2345e-7").
    let e = format!("{:e}", f.abs());
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point relative to the digits
    let sign = if f < 0.0 { "-" } else { "" };
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let es = if e >= 0 {
            format!("+{e}")
        } else {
            e.to_string()
        };
        if k == 1 {
            format!("{digits}e{es}")
        } else {
            format!("{}.{}e{es}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

/// Canonical JSON of `v` (RFC 8785).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&format_f64_or_int(i));
            } else if let Some(u) = n.as_u64() {
                out.push_str(&format_f64(u as f64));
            } else {
                out.push_str(&format_f64(n.as_f64().unwrap_or(0.0)));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> = m.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, x)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(x, out);
            }
            out.push('}');
        }
    }
}

/// Integers: exact within ±2^53 (where ECMAScript's form is the plain digits); beyond, the
/// f64 form RFC 8785 prescribes.
fn format_f64_or_int(i: i64) -> String {
    if i.unsigned_abs() <= (1 << 53) {
        i.to_string()
    } else {
        format_f64(i as f64)
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecmascript_numbers() {
        for (f, s) in [
            (1.0, "1"),
            (-1.5, "-1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123.456, "123.456"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(format_f64(f), s, "{f}");
        }
    }

    #[test]
    fn canonical_sorts_members() {
        let v: Value =
            serde_json::from_str(r#"{"b":[1,2.5,"x\n"],"a":{"d":null,"c":true}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":null},"b":[1,2.5,"x\n"]}"#
        );
    }

    #[test]
    fn order_keys_sort_like_compare() {
        let xs = [
            Scalar::Bool(false),
            Scalar::Bool(true),
            Scalar::Float(-1e300),
            Scalar::Int(-5),
            Scalar::Float(-0.5),
            Scalar::Int(0),
            Scalar::Float(0.5),
            Scalar::Int(9_007_199_254_740_992),
            Scalar::Int(9_007_199_254_740_993),
            Scalar::Int(9_007_199_254_740_995),
            Scalar::Float(9_007_199_254_740_996.0),
            Scalar::Int(9_007_199_254_740_996),
            Scalar::Int(9_007_199_254_740_997),
            Scalar::Int(i64::MAX),
            Scalar::Float(1e300),
            Scalar::Str(String::new()),
            Scalar::Str("a".into()),
            Scalar::Str("ab".into()),
        ];
        for w in xs.windows(2) {
            assert!(
                w[0].order_key() < w[1].order_key(),
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            assert_ne!(
                w[0].compare(&w[1]),
                Some(Ordering::Greater),
                "{:?} vs {:?}",
                w[0],
                w[1]
            );
            assert_eq!(
                Scalar::from_order_key(&w[0].order_key().unwrap()).unwrap(),
                w[0]
            );
        }
    }

    #[test]
    fn key_text_escapes() {
        assert_eq!(Scalar::Str("a|b\\c".into()).key_text(), "a\\|b\\\\c");
        assert_eq!(Scalar::Null.key_text(), "\\N");
    }
}
