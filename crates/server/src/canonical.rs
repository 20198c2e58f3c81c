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
//! refused, as before. Its input has passed [`crate::ijson::check`] with the request body
//! (no member name twice, integers within 64 bits); a name given twice anyway keeps its last
//! value. A value nested
//! deeper than [`JSON_DEPTH_MAX`] is refused (the parse is recursive: an unbounded depth
//! would overflow the stack).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

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
        text: value.get(),
        s: value.get().as_bytes(),
        at: 0,
        depth: 0,
    };
    p.value(&mut out)?;
    Ok(out.into_bytes())
}

/// A cursor over JSON text already checked by `serde_json` (so only its shape matters).
struct Parser<'a> {
    text: &'a str,
    /// `text` as bytes.
    s: &'a [u8],
    at: usize,
    /// Arrays and objects open around the cursor.
    depth: usize,
}

impl<'a> Parser<'a> {
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
                push_decoded(out, &s, matches!(s, Cow::Borrowed(_)));
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
        // Each member's canonical value is written into `values` (one buffer for all of
        // them, not one per member), then copied out in name order.
        let mut members: Vec<(Cow<'a, str>, Range<usize>)> = Vec::new();
        let rest = self.s.len() - self.at.min(self.s.len());
        let mut values = String::with_capacity(rest.min(VALUES_CAPACITY_MAX));
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
                    let from = values.len();
                    self.value(&mut values)?;
                    members.push((name, from..values.len()));
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
            push_decoded(out, name, matches!(name, Cow::Borrowed(_)));
            out.push(':');
            out.push_str(values.get(v.clone()).unwrap_or_default());
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

    /// A string token, decoded: borrowed from the text when it has no escapes (the common
    /// case, decoded without a copy), else decoded by `serde_json`.
    fn string(&mut self) -> Result<Cow<'a, str>, CanonicalError> {
        let start = self.at;
        self.at += 1;
        let mut plain = true;
        let mut closed = false;
        while let Some(i) = memchr::memchr2(b'"', b'\\', self.s.get(self.at..).unwrap_or_default())
        {
            self.at += i + 1;
            if self.s.get(self.at - 1) == Some(&b'"') {
                closed = true;
                break;
            }
            plain = false;
            self.at += 1;
        }
        if !closed {
            self.at = self.s.len().max(self.at);
        }
        if plain
            && closed
            && let Some(inner) = self.text.get(start + 1..self.at - 1)
        {
            return Ok(Cow::Borrowed(inner));
        }
        let token = self.s.get(start..self.at).unwrap_or_default();
        serde_json::from_slice(token)
            .map(Cow::Owned)
            .map_err(|e| CanonicalError(format!("bad string: {e}")))
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

/// Most bytes reserved up front for an object's member values (the rest of the text, up to
/// this; more grows the buffer as usual).
const VALUES_CAPACITY_MAX: usize = 256;

/// A decoded string token as RFC 8785 writes it. One borrowed from the text had no escapes,
/// so it holds nothing to escape (JSON text has no raw `"`, `\` or controls in a string):
/// it is written as it is, unscanned.
fn push_decoded(out: &mut String, s: &str, borrowed: bool) {
    if borrowed {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        push_string(out, s);
    }
}

/// A string as RFC 8785 writes it (the ECMAScript escapes, which `serde_json` shares).
fn push_string(out: &mut String, s: &str) {
    // `serde_json` escapes `"`, `\` and the controls below U+0020, nothing else: a string
    // without them is written as it is, without a serializer and a copy.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // Serializing a `str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Most digits of an integer written as it is: ECMAScript writes integers below 10^21 in
/// full, larger ones with an exponent.
const PLAIN_INTEGER_DIGITS_MAX: usize = 21;

/// A JSON number token (grammar already checked) written as its exact decimal value.
fn push_number(out: &mut String, token: &str) -> Result<(), CanonicalError> {
    // An integer (no fraction, no exponent; JSON has no leading zeros) of at most 21 digits
    // is its own canonical form, except -0 (0): no digit arithmetic for the common case.
    let digits = token.strip_prefix('-').unwrap_or(token);
    if !digits.is_empty()
        && digits.len() <= PLAIN_INTEGER_DIGITS_MAX
        && digits.bytes().all(|b| b.is_ascii_digit())
        && token != "-0"
    {
        out.push_str(token);
        return Ok(());
    }
    push_number_exact(out, token)
}

/// [`push_number`] for any number, by its digits and exponent.
fn push_number_exact(out: &mut String, token: &str) -> Result<(), CanonicalError> {
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
    fn the_shortcuts_agree_with_the_general_forms() {
        // Strings: every ASCII character, some beyond, escapes of each kind.
        let mut strings: Vec<String> = (0u8..128).map(|b| format!("a{}z", b as char)).collect();
        strings.extend(["", "plain", "é\u{2028}\u{1f600}", "q\"\\\u{7f}"].map(String::from));
        for s in &strings {
            let mut out = String::new();
            push_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
            // A string token, plain or escaped, decodes to the string.
            assert_eq!(c(&serde_json::to_string(s).unwrap()), out, "{s:?}");
        }
        // Integers up to and past the plain limit, both signs, and -0.
        let mut x: u128 = 0;
        for digits in 0..30u32 {
            x = x * 10 + u128::from(digits % 9 + 1);
            for token in [
                x.to_string(),
                format!("-{x}"),
                10u128.pow(digits).to_string(),
            ] {
                let (mut fast, mut exact) = (String::new(), String::new());
                push_number(&mut fast, &token).unwrap();
                push_number_exact(&mut exact, &token).unwrap();
                assert_eq!(fast, exact, "{token}");
            }
        }
        for token in ["0", "-0"] {
            let (mut fast, mut exact) = (String::new(), String::new());
            push_number(&mut fast, token).unwrap();
            push_number_exact(&mut exact, token).unwrap();
            assert_eq!((fast.as_str(), exact.as_str()), ("0", "0"));
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        let raw = RawValue::from_string("[1e400]".to_string()).unwrap();
        assert!(canonical(&raw).is_err());
    }
}
