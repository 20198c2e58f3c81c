//! Consistency tokens: how a client carries "I wrote this" (or "I read this") to a read.
//!
//! A token is, per stream, its name, its incarnation (so a dropped and recreated stream
//! never satisfies an old token) and a map partition → offset, meaning "every record below
//! this offset". Tokens merge by per-partition maximum. A read that carries one waits until
//! its source has applied every named partition of its stream that far.
//!
//! Text form: `v1.` then URL-safe base64 (no padding) of
//! `[streams u8] ([name len u8] name [incarnation u64 LE] [entries u16 LE] ([partition u32 LE] [offset u64 LE])*)*`.
//! At most [`TOKEN_BYTES_MAX`] bytes: one stream's entry with every partition a stream may
//! have and the longest name fits, so a one-stream token (every token a server answers) is
//! always representable; a merged token past the limit is refused ([`TokenError::TooLarge`]),
//! never cut.
//!
//! ```
//! use logbook_api::token::ConsistencyToken;
//! let mut t = ConsistencyToken::from_positions("orders", 1, [(0, 4), (2, 9)]);
//! t.merge(&ConsistencyToken::from_positions("orders", 1, [(0, 7)]));
//! let text = t.encode().unwrap();
//! assert_eq!(ConsistencyToken::decode(&text).unwrap().streams["orders"].offsets,
//!            [(0, 8), (2, 10)].into());
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::limits::TOKEN_BYTES_MAX;

/// A token that cannot be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text is not a token.
    #[error("invalid consistency token: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A token longer than [`TOKEN_BYTES_MAX`] would be made, or was given.
    #[error("consistency token would be {bytes} bytes; the limit is {max}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The positions a token names in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPositions {
    /// The stream's incarnation.
    pub incarnation: u64,
    /// Partition → offset: records below it must be applied.
    pub offsets: BTreeMap<u32, u64>,
}

/// A consistency token (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsistencyToken {
    /// Stream name → positions.
    pub streams: BTreeMap<String, StreamPositions>,
}

impl ConsistencyToken {
    /// The token of writes to `stream` (of this `incarnation`) that landed at `positions`
    /// (partition, offset): each partition names the offset after its last position.
    pub fn from_positions(
        stream: &str,
        incarnation: u64,
        positions: impl IntoIterator<Item = (u32, u64)>,
    ) -> ConsistencyToken {
        let mut sp = StreamPositions {
            incarnation,
            offsets: BTreeMap::new(),
        };
        for (partition, offset) in positions {
            let e = sp.offsets.entry(partition).or_insert(0);
            *e = (*e).max(offset + 1);
        }
        let mut t = ConsistencyToken::default();
        t.streams.insert(stream.to_string(), sp);
        t
    }

    /// The part of this token that names `stream` (empty if it names none).
    pub fn only(&self, stream: &str) -> ConsistencyToken {
        let mut t = ConsistencyToken::default();
        if let Some(sp) = self.streams.get(stream) {
            t.streams.insert(stream.to_string(), sp.clone());
        }
        t
    }

    /// Merges `other` in: per stream and partition the larger offset. If the two name
    /// different incarnations of one stream, the larger incarnation's positions are kept.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for (name, sp) in &other.streams {
            match self.streams.get_mut(name) {
                None => {
                    self.streams.insert(name.clone(), sp.clone());
                }
                Some(mine) if mine.incarnation == sp.incarnation => {
                    for (p, o) in &sp.offsets {
                        let e = mine.offsets.entry(*p).or_insert(0);
                        *e = (*e).max(*o);
                    }
                }
                Some(mine) if mine.incarnation < sp.incarnation => *mine = sp.clone(),
                Some(_) => {}
            }
        }
    }

    /// The text form.
    ///
    /// # Errors
    /// [`TokenError::TooLarge`] past [`TOKEN_BYTES_MAX`].
    pub fn encode(&self) -> Result<String, TokenError> {
        let streams = || self.streams.iter().take(usize::from(u8::MAX));
        let mut b = Vec::with_capacity(
            1 + streams()
                .map(|(name, sp)| entry_bytes(name, &sp.offsets))
                .sum::<usize>(),
        );
        b.push(u8::try_from(self.streams.len()).unwrap_or(u8::MAX));
        for (name, sp) in streams() {
            push_entry(&mut b, name, sp.incarnation, &sp.offsets);
        }
        text_form(&b)
    }

    /// The text form of the token naming only `stream` (of `incarnation`) at `offsets`:
    /// what [`ConsistencyToken::encode`] gives for that token, without building it (a read
    /// answer makes one per request).
    ///
    /// # Errors
    /// [`TokenError::TooLarge`] past [`TOKEN_BYTES_MAX`].
    pub fn encode_one(
        stream: &str,
        incarnation: u64,
        offsets: &BTreeMap<u32, u64>,
    ) -> Result<String, TokenError> {
        let mut b = Vec::with_capacity(1 + entry_bytes(stream, offsets));
        b.push(1);
        push_entry(&mut b, stream, incarnation, offsets);
        text_form(&b)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] naming what is wrong; [`TokenError::TooLarge`].
    pub fn decode(s: &str) -> Result<ConsistencyToken, TokenError> {
        let bad = |reason: &str| TokenError::Invalid {
            reason: reason.to_string(),
        };
        if s.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::TooLarge {
                bytes: s.len(),
                max: TOKEN_BYTES_MAX,
            });
        }
        let body = s
            .strip_prefix("v1.")
            .ok_or_else(|| bad("does not start with v1."))?;
        let b = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not URL-safe base64"))?;
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], TokenError> {
            let s = b.get(at..at + n).ok_or_else(|| bad("truncated"))?;
            at += n;
            Ok(s)
        };
        let mut t = ConsistencyToken::default();
        let n = take(1)?[0];
        for _ in 0..n {
            let len = take(1)?[0] as usize;
            let name = std::str::from_utf8(take(len)?)
                .map_err(|_| bad("stream name is not UTF-8"))?
                .to_string();
            let incarnation =
                u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("truncated"))?);
            let entries = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad("truncated"))?);
            let mut offsets = BTreeMap::new();
            for _ in 0..entries {
                let p = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad("truncated"))?);
                let o = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("truncated"))?);
                offsets.insert(p, o);
            }
            t.streams.insert(
                name,
                StreamPositions {
                    incarnation,
                    offsets,
                },
            );
        }
        if at != b.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(t)
    }
}

/// Bytes of one stream's entry in the binary form.
fn entry_bytes(name: &str, offsets: &BTreeMap<u32, u64>) -> usize {
    1 + name.len().min(255) + 8 + 2 + 12 * offsets.len().min(usize::from(u16::MAX))
}

/// Appends one stream's entry: name (at most 255 bytes), incarnation, offsets (at most
/// 65,535).
fn push_entry(b: &mut Vec<u8>, name: &str, incarnation: u64, offsets: &BTreeMap<u32, u64>) {
    let name = &name.as_bytes()[..name.len().min(255)];
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(&incarnation.to_le_bytes());
    b.extend_from_slice(&(offsets.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    for (p, o) in offsets.iter().take(usize::from(u16::MAX)) {
        b.extend_from_slice(&p.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
}

/// `v1.` and the URL-safe base64 of `b`, within [`TOKEN_BYTES_MAX`].
fn text_form(b: &[u8]) -> Result<String, TokenError> {
    let len = 3 + base64::encoded_len(b.len(), false).unwrap_or(usize::MAX - 3);
    if len > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLarge {
            bytes: len,
            max: TOKEN_BYTES_MAX,
        });
    }
    let mut s = String::with_capacity(len);
    s.push_str("v1.");
    URL_SAFE_NO_PAD.encode_string(b, &mut s);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        let mut a = ConsistencyToken::default();
        a.streams.insert(
            "flights".into(),
            StreamPositions {
                incarnation: 7,
                offsets: [(0, 5), (2, 9)].into(),
            },
        );
        let s = a.encode().unwrap();
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        );
        assert_eq!(ConsistencyToken::decode(&s).unwrap(), a);
        let mut b = ConsistencyToken::default();
        b.streams.insert(
            "flights".into(),
            StreamPositions {
                incarnation: 7,
                offsets: [(0, 3), (1, 4)].into(),
            },
        );
        b.merge(&a);
        assert_eq!(
            b.streams["flights"].offsets,
            [(0, 5), (1, 4), (2, 9)].into()
        );
        assert!(matches!(
            ConsistencyToken::decode("v1.!!"),
            Err(TokenError::Invalid { .. })
        ));
        assert!(matches!(
            ConsistencyToken::decode(&s[..s.len() - 2]),
            Err(TokenError::Invalid { .. })
        ));
    }

    fn token(stream: &str, incarnation: u64, offsets: &[(u32, u64)]) -> ConsistencyToken {
        let mut t = ConsistencyToken::default();
        t.streams.insert(
            stream.into(),
            StreamPositions {
                incarnation,
                offsets: offsets.iter().copied().collect(),
            },
        );
        t
    }

    #[test]
    fn the_bytes_are_the_documented_layout() {
        let mut want = vec![1u8, 2, b'a', b'b'];
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&10u64.to_le_bytes());
        assert_eq!(
            token("ab", 7, &[(2, 10)]).encode().unwrap(),
            format!("v1.{}", URL_SAFE_NO_PAD.encode(&want))
        );
    }

    /// The limit is one stream's entry at the limits: the token of a write to every
    /// partition of a stream with the longest name is exactly [`TOKEN_BYTES_MAX`] bytes.
    #[test]
    fn one_stream_at_the_limits_fits_the_token_limit_exactly() {
        let name = "n".repeat(crate::limits::STREAM_NAME_BYTES_MAX);
        let every = (0..crate::limits::PARTITIONS_MAX).map(|p| (p, u64::MAX - 1));
        let t = ConsistencyToken::from_positions(&name, u64::MAX, every);
        let text = t.encode().unwrap();
        assert_eq!(text.len(), TOKEN_BYTES_MAX);
        assert_eq!(ConsistencyToken::decode(&text).unwrap(), t);
        let one = &t.streams[&name];
        assert_eq!(
            ConsistencyToken::encode_one(&name, one.incarnation, &one.offsets).unwrap(),
            text
        );
        // One partition more (only a hand-made token can name it) is refused, not cut.
        let mut more = t.clone();
        more.streams
            .get_mut(&name)
            .unwrap()
            .offsets
            .insert(u32::MAX, 1);
        assert!(matches!(more.encode(), Err(TokenError::TooLarge { .. })));
    }

    #[test]
    fn encode_one_is_the_one_stream_token_encoded() {
        for (name, offsets) in [
            ("ab", vec![(2, 10)]),
            ("", vec![]),
            ("flights", vec![(0, 5), (1, 0), (7, u64::MAX)]),
        ] {
            let t = token(name, 9, &offsets);
            let offsets = &t.streams[name].offsets;
            assert_eq!(ConsistencyToken::encode_one(name, 9, offsets), t.encode());
        }
        // Twice the partitions a stream may have: only a hand-made token names them.
        let wide: BTreeMap<u32, u64> = (0..2 * crate::limits::PARTITIONS_MAX)
            .map(|p| (p, 1))
            .collect();
        assert!(matches!(
            ConsistencyToken::encode_one("s", 1, &wide),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn incarnations_merge_whole_and_bad_text_is_refused() {
        let a = token("flights", 7, &[(0, 5), (2, 9)]);
        let mut b = a.clone();
        // A newer incarnation replaces the old one whole; an older one is ignored.
        b.merge(&token("flights", 8, &[(3, 1)]));
        assert_eq!(b.streams["flights"].offsets, [(3, 1)].into());
        b.merge(&a);
        assert_eq!(b.streams["flights"].incarnation, 8);
        let text = a.encode().unwrap();
        for bad in ["", "v2.AA", "v1.!!", "v1.AQ", &text[..text.len() - 2]] {
            assert!(
                matches!(
                    ConsistencyToken::decode(bad),
                    Err(TokenError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("v1.{}", "A".repeat(TOKEN_BYTES_MAX));
        assert!(matches!(
            ConsistencyToken::decode(&long),
            Err(TokenError::TooLarge { .. })
        ));
        let wide: Vec<(u32, u64)> = (0..2 * crate::limits::PARTITIONS_MAX)
            .map(|p| (p, 1))
            .collect();
        assert!(matches!(
            token("s", 1, &wide).encode(),
            Err(TokenError::TooLarge { .. })
        ));
    }
}
