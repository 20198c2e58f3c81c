//! I-JSON (RFC 7493): the JSON the server takes in a request body, so that what it stores
//! and answers every client can read back as it was sent.
//!
//! JSON itself leaves three things to each parser, and parsers disagree on them; I-JSON
//! rules them out, and so does [`check`], on every JSON body before its handler runs:
//!
//! * **duplicate member names** in one object (`{"a":1,"a":2}`): one parser keeps the first,
//!   another the last, a third refuses — the server would store a value its client never
//!   meant. Refused.
//! * **numbers beyond what clients keep**: an integer (no fraction, no exponent) must fit a
//!   64-bit integer, `-9223372036854775808 ..= 18446744073709551615` (i64 or u64, what the
//!   Rust client and most JSON libraries read exactly; RFC 7493 advises 2^53, which would
//!   refuse ordinary 64-bit ids); any other number must be a finite IEEE 754 double. Beyond
//!   them a reader rounds or fails. Send such numbers as strings.
//! * **strings that are not Unicode text**: an escaped lone surrogate (`"\ud800"`).
//!   (Noncharacters such as U+FFFF are accepted: Unicode Corrigendum #9 allows them in
//!   interchange, and every Rust `String` holds them.)
//!
//! Nesting is bounded separately: a stored value may be at most
//! [`logbook_api::limits::JSON_DEPTH_MAX`] levels deep ([`crate::canonical`]), so that every
//! answer carrying it stays within the recursion limits of common parsers.
//!
//! The refusal is 400 `not_i_json`, its `field` the JSON path of the offending member or
//! element (`records[0].value.a`), and nothing is done.

use std::fmt::Write as _;

/// Why a body is not I-JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.path())]
pub struct NotIJson {
    /// Path segments from the offending value up to the body (reversed: each level adds
    /// its own as the error travels up).
    segments: Vec<String>,
    /// What is wrong.
    pub reason: String,
}

impl NotIJson {
    fn new(reason: String) -> Self {
        NotIJson {
            segments: Vec::new(),
            reason,
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.segments.push(segment);
        self
    }

    /// The JSON path of the offending member or element, as the API names fields
    /// (`records[0].value.a`, `["a b"]` for a name that is not an identifier); empty for the
    /// whole document.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for s in self.segments.iter().rev() {
            if path.is_empty() {
                path.push_str(s.strip_prefix('.').unwrap_or(s));
            } else {
                path.push_str(s);
            }
        }
        path
    }
}

/// The deepest nesting [`check`] walks: `serde_json`'s recursion limit, which a body that
/// parsed has already kept.
const DEPTH_MAX: usize = 128;

/// Checks that a JSON document (already parsed by `serde_json`, so well formed) is I-JSON
/// (see the module documentation).
///
/// # Errors
/// [`NotIJson`] naming the first offending value.
pub fn check(text: &[u8]) -> Result<(), NotIJson> {
    let mut p = Walker { s: text, at: 0 };
    p.value(0)
}

/// A cursor over well-formed JSON text.
struct Walker<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Walker<'a> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), NotIJson> {
        self.skip_ws();
        match self.s.get(self.at) {
            Some(b'{' | b'[') if depth == DEPTH_MAX => Err(NotIJson::new(format!(
                "nested deeper than {DEPTH_MAX} levels of arrays and objects"
            ))),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(drop),
            Some(b't') => {
                self.at += 4;
                Ok(())
            }
            Some(b'f') => {
                self.at += 5;
                Ok(())
            }
            Some(b'n') => {
                self.at += 4;
                Ok(())
            }
            Some(_) => self.number(),
            None => Ok(()),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), NotIJson> {
        self.at += 1;
        // Names as their token bytes where they have no escapes (most do), decoded otherwise:
        // equal names are equal tokens then.
        let mut names: Vec<std::borrow::Cow<'a, str>> = Vec::new();
        loop {
            self.skip_ws();
            match self.s.get(self.at) {
                Some(b'}') | None => {
                    self.at += 1;
                    break;
                }
                Some(b',') => self.at += 1,
                _ => {
                    let name = self.string()?;
                    self.skip_ws();
                    self.at += 1; // ':'
                    self.value(depth).map_err(|e| e.at(name_segment(&name)))?;
                    names.push(name);
                }
            }
        }
        if names.len() > 1 {
            let mut sorted: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(NotIJson::new(format!(
                    "the member name {:?} is given more than once in one object; parsers \
                     disagree on which one counts, so I-JSON (RFC 7493) refuses it",
                    w[0]
                ))
                .at(name_segment(w[0])));
            }
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<(), NotIJson> {
        self.at += 1;
        let mut index = 0usize;
        loop {
            self.skip_ws();
            match self.s.get(self.at) {
                Some(b']') | None => {
                    self.at += 1;
                    break;
                }
                Some(b',') => self.at += 1,
                _ => {
                    self.value(depth).map_err(|e| e.at(format!("[{index}]")))?;
                    index += 1;
                }
            }
        }
        Ok(())
    }

    /// A string token, decoded: borrowed when it has no escapes, else decoded by
    /// `serde_json`, which refuses a lone surrogate.
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, NotIJson> {
        let start = self.at;
        self.at += 1;
        let mut plain = true;
        while let Some(i) = memchr::memchr2(b'"', b'\\', self.s.get(self.at..).unwrap_or_default())
        {
            self.at += i + 1;
            if self.s.get(self.at - 1) == Some(&b'"') {
                break;
            }
            plain = false;
            self.at += 1;
        }
        let text: &'a [u8] = self.s;
        let token = text.get(start..self.at).unwrap_or_default();
        if plain {
            let inner = token
                .get(1..token.len().saturating_sub(1))
                .unwrap_or_default();
            return Ok(String::from_utf8_lossy(inner));
        }
        serde_json::from_slice::<String>(token)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| {
                NotIJson::new(format!(
                    "a string that is not Unicode text ({e}); I-JSON (RFC 7493) refuses lone \
                     surrogates"
                ))
            })
    }

    fn number(&mut self) -> Result<(), NotIJson> {
        let start = self.at;
        while matches!(
            self.s.get(self.at),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.at += 1;
        }
        let token =
            std::str::from_utf8(self.s.get(start..self.at).unwrap_or_default()).unwrap_or_default();
        check_number(token).map_err(NotIJson::new)
    }
}

/// Digits of an integer that always fits an i64 (and so needs no parse).
const SURE_INTEGER_DIGITS: usize = 18;

/// An integer must fit i64 or u64; any other number a finite double.
fn check_number(token: &str) -> Result<(), String> {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let integer = digits.bytes().all(|b| b.is_ascii_digit());
    if integer {
        if digits.len() <= SURE_INTEGER_DIGITS
            || token.parse::<i64>().is_ok()
            || token.parse::<u64>().is_ok()
        {
            return Ok(());
        }
        return Err(format!(
            "the integer {token} is outside the 64-bit range ({} to {}); clients would round \
             it (I-JSON, RFC 7493): send it as a string",
            i64::MIN,
            u64::MAX
        ));
    }
    if token.parse::<f64>().is_ok_and(f64::is_finite) {
        Ok(())
    } else {
        Err(format!(
            "the number {token} is beyond the range of a 64-bit float (I-JSON, RFC 7493)"
        ))
    }
}

/// A member name as a path segment: `.name` for an identifier, else `["…"]`.
fn name_segment(name: &str) -> String {
    let identifier = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if identifier {
        format!(".{name}")
    } else {
        let mut s = String::from("[");
        // Serializing a `str` cannot fail.
        let _ = write!(s, "{}", serde_json::to_string(name).unwrap_or_default());
        s.push(']');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> NotIJson {
        check(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn duplicate_member_names_are_refused_naming_the_member() {
        let e = refused(r#"{"records": [{"value": {"a": 1, "b": {"x": 1, "x": 2}}}]}"#);
        assert_eq!(e.path(), "records[0].value.b.x");
        assert!(e.reason.contains("\"x\" is given more than once"), "{e}");
        let e = refused(r#"{"value": {"a b": 1, "a b": 1}}"#);
        assert_eq!(e.path(), r#"value["a b"]"#);
        // An escaped spelling is the same name.
        let e = refused(r#"{"value": {"a": 1, "\u0061": 2}}"#);
        assert_eq!(e.path(), "value.a");
        assert!(check(br#"{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
    }

    #[test]
    fn integers_must_fit_64_bits_and_other_numbers_a_double() {
        for ok in [
            "0",
            "-0",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "1e21",
            "1.5",
            "123456789012345678901234.5",
            "-1.7976931348623157e308",
        ] {
            assert!(check(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ] {
            let e = refused(&format!(r#"{{"value": [1, {bad}]}}"#));
            assert_eq!(e.path(), "value[1]", "{bad}");
            assert!(e.reason.contains("64-bit range"), "{e}");
        }
        let e = refused(r#"{"value": 1e400}"#);
        assert!(e.reason.contains("64-bit float"), "{e}");
    }

    #[test]
    fn lone_surrogates_are_refused() {
        let e = refused(r#"{"v": ["\ud800"]}"#);
        assert_eq!(e.path(), "v[0]");
        assert!(e.reason.contains("lone surrogates"), "{e}");
        assert!(check(r#"["\ud83d\ude00", "\uffff", "é"]"#.as_bytes()).is_ok());
    }
}
