//! Consistency tokens: how a client carries "I wrote this" to a later read.
//!
//! A token names, per stream, the stream's name, its incarnation (so a dropped and recreated
//! stream never satisfies an old token) and a map partition → offset meaning "every record
//! *below* this offset" (the last written offset + 1). Tokens merge by per-partition maximum.
//! A read that carries one waits until its source has applied every named partition that far.
//!
//! The text form is the one `logbook-views` reads (`crates/views/src/token.rs`), so a token
//! returned by a write here is accepted by a view read:
//!
//! ```text
//! "v1." base64url-no-pad(
//!     [streams u8]
//!     ( [name len u8] name [incarnation u64 LE] [entries u16 LE]
//!       ( [partition u32 LE] [offset u64 LE] )* )* )
//! ```
//!
//! It is URL-safe (`[A-Za-z0-9._-]`) and at most [`TOKEN_BYTES_MAX`] bytes.
//!
//! ```
//! use logbook_server::token::ConsistencyToken;
//! let mut a = ConsistencyToken::default();
//! a.note("flights", 7, 0, 41);
//! let mut b = ConsistencyToken::decode(&a.encode()?)?;
//! b.note("flights", 7, 1, 3);
//! assert_eq!(b.streams["flights"].offsets[&0], 42);
//! # Ok::<(), logbook_server::token::TokenError>(())
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::limits::TOKEN_BYTES_MAX;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not decode.
    #[error("invalid consistency token: {reason}")]
    Invalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// The text form is (or would be) longer than [`TOKEN_BYTES_MAX`].
    #[error("consistency token is {bytes} bytes; the limit is {max}")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The positions a token names in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPositions {
    /// The stream's incarnation ([`logbook_log::Stream::incarnation`]).
    pub incarnation: u64,
    /// Partition → offset: every record below it must be applied.
    pub offsets: BTreeMap<u32, u64>,
}

/// A consistency token (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsistencyToken {
    /// Stream name → positions.
    pub streams: BTreeMap<String, StreamPositions>,
}

impl ConsistencyToken {
    /// Records that the record at `offset` of `partition` of `stream` was written: the token
    /// then asks for every record below `offset + 1`.
    pub fn note(&mut self, stream: &str, incarnation: u64, partition: u32, offset: u64) {
        let mut one = StreamPositions {
            incarnation,
            offsets: BTreeMap::new(),
        };
        one.offsets.insert(partition, offset.saturating_add(1));
        let mut t = ConsistencyToken::default();
        t.streams.insert(stream.to_string(), one);
        self.merge(&t);
    }

    /// Merges `other` in: per stream and partition the larger offset. If the two name
    /// different incarnations of one stream, the newer (larger) incarnation wins whole.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for (name, theirs) in &other.streams {
            match self.streams.get_mut(name) {
                None => {
                    self.streams.insert(name.clone(), theirs.clone());
                }
                Some(mine) if mine.incarnation == theirs.incarnation => {
                    for (p, o) in &theirs.offsets {
                        let e = mine.offsets.entry(*p).or_insert(0);
                        *e = (*e).max(*o);
                    }
                }
                Some(mine) if mine.incarnation < theirs.incarnation => *mine = theirs.clone(),
                Some(_) => {}
            }
        }
    }

    /// The text form.
    ///
    /// # Errors
    /// [`TokenError::TooLarge`] when it would exceed [`TOKEN_BYTES_MAX`] (or a count field of
    /// the format: 255 streams, 255-byte names, 65,535 partitions).
    pub fn encode(&self) -> Result<String, TokenError> {
        let too_large = |bytes| TokenError::TooLarge {
            bytes,
            max: TOKEN_BYTES_MAX,
        };
        let mut b = Vec::with_capacity(64);
        b.push(u8::try_from(self.streams.len()).map_err(|_| too_large(usize::MAX))?);
        for (name, sp) in &self.streams {
            b.push(u8::try_from(name.len()).map_err(|_| too_large(usize::MAX))?);
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&sp.incarnation.to_le_bytes());
            let n = u16::try_from(sp.offsets.len()).map_err(|_| too_large(usize::MAX))?;
            b.extend_from_slice(&n.to_le_bytes());
            for (p, o) in &sp.offsets {
                b.extend_from_slice(&p.to_le_bytes());
                b.extend_from_slice(&o.to_le_bytes());
            }
        }
        let text = format!("v1.{}", URL_SAFE_NO_PAD.encode(&b));
        if text.len() > TOKEN_BYTES_MAX {
            return Err(too_large(text.len()));
        }
        Ok(text)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] naming what is wrong; [`TokenError::TooLarge`].
    pub fn decode(text: &str) -> Result<ConsistencyToken, TokenError> {
        if text.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::TooLarge {
                bytes: text.len(),
                max: TOKEN_BYTES_MAX,
            });
        }
        let bad = |reason| TokenError::Invalid { reason };
        let body = text
            .strip_prefix("v1.")
            .ok_or(bad("does not start with \"v1.\""))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not URL-safe base64 without padding"))?;
        let mut r = Reader { bytes: &bytes };
        let mut token = ConsistencyToken::default();
        for _ in 0..r.u8()? {
            let len = usize::from(r.u8()?);
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| bad("stream name is not UTF-8"))?
                .to_string();
            let incarnation = r.u64()?;
            let mut offsets = BTreeMap::new();
            for _ in 0..r.u16()? {
                let p = r.u32()?;
                let o = r.u64()?;
                offsets.insert(p, o);
            }
            token.streams.insert(
                name,
                StreamPositions {
                    incarnation,
                    offsets,
                },
            );
        }
        if !r.bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(token)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.bytes.len() < n {
            return Err(TokenError::Invalid {
                reason: "truncated",
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, TokenError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, TokenError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, TokenError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_are_the_documented_layout() {
        let mut t = ConsistencyToken::default();
        t.note("ab", 7, 2, 9);
        let mut want = vec![1u8, 2, b'a', b'b'];
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&10u64.to_le_bytes());
        assert_eq!(
            t.encode().unwrap(),
            format!("v1.{}", URL_SAFE_NO_PAD.encode(&want))
        );
    }

    #[test]
    fn round_trip_merge_and_refusals() {
        let mut a = ConsistencyToken::default();
        a.note("flights", 7, 0, 4);
        a.note("flights", 7, 2, 8);
        a.note("_txn", 1, 0, 0);
        let text = a.encode().unwrap();
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        );
        assert_eq!(ConsistencyToken::decode(&text).unwrap(), a);

        let mut b = ConsistencyToken::default();
        b.note("flights", 7, 0, 2);
        b.note("flights", 7, 1, 3);
        b.merge(&a);
        assert_eq!(
            b.streams["flights"].offsets,
            [(0, 5), (1, 4), (2, 9)].into()
        );
        // A newer incarnation replaces the old one whole; an older one is ignored.
        let mut c = ConsistencyToken::default();
        c.note("flights", 8, 3, 0);
        b.merge(&c);
        assert_eq!(b.streams["flights"].offsets, [(3, 1)].into());
        b.merge(&a);
        assert_eq!(b.streams["flights"].incarnation, 8);

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
    }

    #[test]
    fn too_many_partitions_do_not_fit() {
        let mut t = ConsistencyToken::default();
        for p in 0..100 {
            t.note("s", 1, p, 1);
        }
        assert!(matches!(t.encode(), Err(TokenError::TooLarge { .. })));
    }
}
