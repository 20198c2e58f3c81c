//! The bytes stored for a JSON value: its canonical form, so that two spellings of one
//! value are the same bytes (a retry with reordered members or `1.0` for `1` is no
//! request-id conflict, and the same value always digests alike).
//!
//! The form is RFC 8785 (JSON Canonicalization Scheme) — no insignificant whitespace,
//! object members sorted by their names' UTF-16 code units, strings escaped as ECMAScript
//! does — except for numbers: RFC 8785 writes them as IEEE 754 doubles, which would make
//! distinct integers beyond 2^53 equal. Here a number is its **exact decimal value**,
//! written in the ECMAScript layout: `1.0`, `1` and `0.1e1` are `1`; `1e2` is `100`;
//! `-0` is `0`; `1.50` is `1.5`; `1e21` is `1e+21`; `0.0000001` is `1e-7`; every digit of
//! `18446744073709551617` is kept. Numbers beyond the range of a double (`1e400`) are
//! refused, as before. A member name given twice keeps its last value. A value nested
//! deeper than [`JSON_DEPTH_MAX`] is refused (the parse is recursive: an unbounded depth
//! would overflow the stack).

use std::cmp::Ordering;

use logbook_api::limits::JSON_DEPTH_MAX;
use serde_json::value::RawValue;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CanonicalError(String);

/// The canonical text of a JSON value (see the module documentation).
///
/// # Errors
/// [`CanonicalError`] for a number out of the range of a double, a string with a lone
/// surrogate, or nesting deeper than [`JSON_DEPTH_MAX`].
pub fn canonical(value: &RawValue) -> Result<Vec<u8>, CanonicalError> {
    let mut out = String::with_capacity(value.get().len());
    let mut p = Parser {
        s: value.get().as_bytes(),
        at: 0,
        depth: 0,
    };
    p.value(&mut out)?;
    Ok(out.into_bytes())
}

/// A cursor over JSON text already checked by `serde_json` (so only its shape matters).
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    /// Arrays and objects open around the cursor.
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        self.skip_ws();
        match self.s.get(self.at) {
            Some(b'{' | b'[') if self.depth == JSON_DEPTH_MAX => Err(CanonicalError(format!(
                "nested deeper than {JSON_DEPTH_MAX} levels of arrays and objects"
            ))),
            Some(b'{') => self.nested(|p| p.object(out)),
            Some(b'[') => self.nested(|p| p.array(out)),
            Some(b'"') => {
                let s = self.string()?;
                push_string(out, &s);
                Ok(())
            }
            Some(b't') => self.literal(out, "true"),
            Some(b'f') => self.literal(out, "false"),
            Some(b'n') => self.literal(out, "null"),
            Some(_) => self.number(out),
            None => Err(CanonicalError("unexpected end of JSON".into())),
        }
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), CanonicalError>,
    ) -> Result<(), CanonicalError> {
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn literal(&mut self, out: &mut String, word: &str) -> Result<(), CanonicalError> {
        self.at += word.len();
        out.push_str(word);
        Ok(())
    }

    fn object(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        self.at += 1;
        let mut members: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_ws();
            match self.s.get(self.at) {
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                Some(b',') => self.at += 1,
                _ => {
                    let name = self.string()?;
                    self.skip_ws();
                    self.at += 1; // ':'
                    let mut v = String::new();
                    self.value(&mut v)?;
                    members.push((name, v));
                }
            }
        }
        // Stable: among equal names the last given stays last; keep only it.
        members.sort_by(|a, b| utf16_order(&a.0, &b.0));
        out.push('{');
        let mut first = true;
        for (i, (name, v)) in members.iter().enumerate() {
            if members.get(i + 1).is_some_and(|next| next.0 == *name) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_string(out, name);
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        Ok(())
    }

    fn array(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        self.at += 1;
        out.push('[');
        let mut first = true;
        loop {
            self.skip_ws();
            match self.s.get(self.at) {
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                Some(b',') => self.at += 1,
                _ => {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    self.value(out)?;
                }
            }
        }
        out.push(']');
        Ok(())
    }

    /// A string token, decoded.
    fn string(&mut self) -> Result<String, CanonicalError> {
        let start = self.at;
        self.at += 1;
        while let Some(&b) = self.s.get(self.at) {
            self.at += 1;
            match b {
                b'\\' => self.at += 1,
                b'"' => break,
                _ => {}
            }
        }
        let token = self.s.get(start..self.at).unwrap_or_default();
        serde_json::from_slice(token).map_err(|e| CanonicalError(format!("bad string: {e}")))
    }

    fn number(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        let start = self.at;
        while matches!(
            self.s.get(self.at),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.at += 1;
        }
        let token = std::str::from_utf8(self.s.get(start..self.at).unwrap_or_default())
            .map_err(|_| CanonicalError("bad number".into()))?;
        push_number(out, token)
    }
}

/// RFC 8785 member order: by UTF-16 code units.
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A string as RFC 8785 writes it (the ECMAScript escapes, which `serde_json` shares).
fn push_string(out: &mut String, s: &str) {
    // Serializing a `str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// A JSON number token (grammar already checked) written as its exact decimal value.
fn push_number(out: &mut String, token: &str) -> Result<(), CanonicalError> {
    let out_of_range = || {
        CanonicalError(format!(
            "number {token} is out of range (beyond the range of a 64-bit float)"
        ))
    };
    if !token.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err(out_of_range());
    }
    let (negative, unsigned) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        out.push('0');
        return Ok(());
    }
    let exponent: i64 = exponent.parse().map_err(|_| out_of_range())?;
    // value = 0.trimmed × 10^point: where the decimal point sits after the first digit.
    let k = trimmed.len() as i64;
    let zeros_cut = (digits.len() - trimmed.len()) as i64;
    let point = exponent - frac.len() as i64 + zeros_cut + k;
    if negative {
        out.push('-');
    }
    write_decimal(out, trimmed, point);
    Ok(())
}

/// ECMAScript's Number::toString layout (ECMA-262, 7.1.12.1) for the digits `d` (no
/// leading or trailing zeros) with the decimal point after `n` digits.
fn write_decimal(out: &mut String, d: &str, n: i64) {
    let k = d.len() as i64;
    if k <= n && n <= 21 {
        out.push_str(d);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&d[..n as usize]);
        out.push('.');
        out.push_str(&d[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(d);
    } else {
        out.push_str(&d[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&d[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> String {
        let raw = RawValue::from_string(text.to_string()).unwrap();
        String::from_utf8(canonical(&raw).unwrap()).unwrap()
    }

    #[test]
    fn numbers_are_their_exact_decimal_value() {
        for (given, want) in [
            ("1", "1"),
            ("1.0", "1"),
            ("1e2", "100"),
            ("1E+2", "100"),
            ("0.1e1", "1"),
            ("100e-2", "1"),
            ("-0", "0"),
            ("-0.0e5", "0"),
            ("1.50", "1.5"),
            ("-12.5e-1", "-1.25"),
            ("0.0000001", "1e-7"),
            ("0.000001", "0.000001"),
            ("123456789012345678901", "123456789012345678901"),
            ("1e21", "1e+21"),
            ("1234.5e30", "1.2345e+33"),
            ("9007199254740993", "9007199254740993"),
            ("18446744073709551617", "18446744073709551617"),
        ] {
            assert_eq!(c(given), want, "{given}");
        }
        // Distinct integers stay distinct beyond 2^53 (as doubles they would be equal).
        assert_ne!(c("9007199254740993"), c("9007199254740992"));
        assert_ne!(c("18446744073709551617"), c("18446744073709551616"));
    }

    #[test]
    fn members_are_sorted_whitespace_dropped_strings_escaped_as_rfc_8785() {
        assert_eq!(
            c(r#" { "b" : [ 1 , {"z":null,"a":true} ], "a": "x\u0041\n\u001f" } "#),
            r#"{"a":"xA\n\u001f","b":[1,{"a":true,"z":null}]}"#
        );
        // UTF-16 order: U+E000 sorts after a surrogate pair (U+1F600), unlike UTF-8 order.
        assert_eq!(
            c("{\"\u{e000}\":1,\"\u{1f600}\":2}"),
            "{\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
        assert_eq!(c(r#"{"a":1,"a":2}"#), r#"{"a":2}"#, "the last one stays");
        assert_eq!(c("[]"), "[]");
        assert_eq!(c("{}"), "{}");
        assert_eq!(c(r#""\/""#), r#""/""#);
    }

    #[test]
    fn nesting_is_bounded_and_a_deep_value_is_refused_without_overflowing_the_stack() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(c(&nested(JSON_DEPTH_MAX)), nested(JSON_DEPTH_MAX));
        let object = format!(
            "{}1{}",
            r#"{"a":"#.repeat(JSON_DEPTH_MAX),
            "}".repeat(JSON_DEPTH_MAX)
        );
        assert_eq!(c(&object), object);
        for depth in [JSON_DEPTH_MAX + 1, 100_000] {
            let raw = RawValue::from_string(nested(depth)).unwrap();
            let e = canonical(&raw).unwrap_err();
            assert!(e.0.contains("nested deeper than 100"), "{e}");
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        let raw = RawValue::from_string("[1e400]".to_string()).unwrap();
        assert!(canonical(&raw).is_err());
    }
}
