//! A client's session: the session guarantees of Terry et al., "Session Guarantees for
//! Weakly Consistent Replicated Data" (PDIS 1994), made of consistency tokens.
//!
//! The session remembers, per stream, the positions of every write the client made (the
//! token of each append and commit answer) and of every read answer (the token of the
//! positions a read reflected), merged by per-partition maximum. Each read sends only the
//! session's entry for the stream the read is derived from, so
//!
//! * **read your writes**: a read waits until its source has applied the client's writes;
//! * **monotonic reads**: a read never reflects less than an earlier read of the same source;
//!
//! and a token never grows past one stream's entry (≤ [`crate::limits::TOKEN_BYTES_MAX`]).
//!
//! ```text
//!  append ──▶ token {orders: inc 3, p0 → 8}  ─┐
//!  commit ──▶ token {_txn: inc 1, p0 → 41}   ─┼─▶ session (merge: per-partition max)
//!  view read answer {orders: p0 → 9, p1 → 2} ─┘        │
//!  GET /v1/views/by_customer/rows/c7?token=<session entry for "orders" only> ◀┘
//! ```

use std::collections::BTreeMap;

use crate::token::{ConsistencyToken, StreamPositions, TokenError};

/// Positions seen by one client, per stream (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    seen: ConsistencyToken,
}

impl Session {
    /// An empty session.
    pub fn new() -> Self {
        Session::default()
    }

    /// Merges a token from an answer (a write's or a read's).
    ///
    /// # Errors
    /// [`TokenError`] if the text is not a token; the session is unchanged.
    pub fn observe(&mut self, token: &str) -> Result<(), TokenError> {
        let t = ConsistencyToken::decode(token)?;
        self.seen.merge(&t);
        Ok(())
    }

    /// The session's entry for `stream`, as a token to send with a read of a view derived
    /// from it (or of the key-value table, derived from `_txn`). `None` when the session has
    /// seen nothing of the stream, or when its entry asks for nothing (no partition past
    /// offset 0: an answer that reflected no record). One stream's entry always fits the
    /// token limit ([`crate::limits::TOKEN_BYTES_MAX`] is sized for the most partitions);
    /// only an entry made by hand past the limits is left out.
    pub fn token_for(&self, stream: &str) -> Option<String> {
        let entry = self.seen.streams.get(stream)?;
        if entry.offsets.values().all(|o| *o == 0) {
            return None;
        }
        self.seen.only(stream).encode().ok()
    }

    /// The positions seen in `stream`, if any.
    pub fn positions(&self, stream: &str) -> Option<&StreamPositions> {
        self.seen.streams.get(stream)
    }

    /// Every stream's positions.
    pub fn streams(&self) -> &BTreeMap<String, StreamPositions> {
        &self.seen.streams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(stream: &str, incarnation: u64, positions: &[(u32, u64)]) -> String {
        ConsistencyToken::from_positions(stream, incarnation, positions.iter().copied())
            .encode()
            .unwrap()
    }

    #[test]
    fn writes_and_reads_merge_per_partition_and_reads_send_only_their_source() {
        let mut s = Session::new();
        assert_eq!(s.token_for("orders"), None);
        s.observe(&tok("orders", 3, &[(0, 7)])).unwrap();
        s.observe(&tok("orders", 3, &[(0, 2), (1, 4)])).unwrap();
        s.observe(&tok("_txn", 1, &[(0, 40)])).unwrap();
        // A read answer that reflected more than the session knew moves it forward.
        s.observe(&tok("orders", 3, &[(1, 9)])).unwrap();
        let sent = ConsistencyToken::decode(&s.token_for("orders").unwrap()).unwrap();
        assert_eq!(sent.streams.len(), 1, "only the read's source is sent");
        assert_eq!(sent.streams["orders"].incarnation, 3);
        assert_eq!(sent.streams["orders"].offsets, [(0, 8), (1, 10)].into());
        let txn = ConsistencyToken::decode(&s.token_for("_txn").unwrap()).unwrap();
        assert_eq!(txn.streams["_txn"].offsets, [(0, 41)].into());
        assert_eq!(s.token_for("other"), None);
    }

    #[test]
    fn a_recreated_stream_replaces_the_old_entry_and_bad_tokens_change_nothing() {
        let mut s = Session::new();
        s.observe(&tok("orders", 3, &[(0, 7), (1, 1)])).unwrap();
        s.observe(&tok("orders", 4, &[(0, 0)])).unwrap();
        assert_eq!(s.positions("orders").unwrap().incarnation, 4);
        assert_eq!(s.positions("orders").unwrap().offsets, [(0, 1)].into());
        // A late answer about the dropped incarnation does not bring it back.
        s.observe(&tok("orders", 3, &[(0, 99)])).unwrap();
        assert_eq!(s.positions("orders").unwrap().offsets, [(0, 1)].into());
        let before = s.clone();
        assert!(s.observe("v1.!!").is_err());
        assert!(s.observe("not a token").is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn an_entry_that_asks_for_nothing_is_not_sent() {
        let mut s = Session::new();
        // A read answer that reflected no record of the stream yet.
        s.observe(&tok("orders", 3, &[])).unwrap();
        assert!(s.positions("orders").is_some());
        assert_eq!(s.token_for("orders"), None);
        let zero = ConsistencyToken {
            streams: [(
                "orders".to_string(),
                StreamPositions {
                    incarnation: 3,
                    offsets: [(0, 0)].into(),
                },
            )]
            .into(),
        };
        s.observe(&zero.encode().unwrap()).unwrap();
        assert_eq!(s.token_for("orders"), None);
        s.observe(&tok("orders", 3, &[(1, 0)])).unwrap();
        let sent = ConsistencyToken::decode(&s.token_for("orders").unwrap()).unwrap();
        assert_eq!(sent.streams["orders"].offsets, [(0, 0), (1, 1)].into());
    }

    #[test]
    fn an_entry_of_every_partition_is_sent_and_one_past_the_limits_is_not() {
        let mut s = Session::new();
        let ones = |r: std::ops::Range<u32>| r.map(|p| (p, 1)).collect::<Vec<(u32, u64)>>();
        // Two answers naming half the partitions each merge into an entry of every
        // partition a stream may have: it is sent whole.
        let half = crate::limits::PARTITIONS_MAX / 2;
        s.observe(&tok("wide", 1, &ones(0..half))).unwrap();
        s.observe(&tok("wide", 1, &ones(half..2 * half))).unwrap();
        let sent = ConsistencyToken::decode(&s.token_for("wide").unwrap()).unwrap();
        assert_eq!(sent.streams["wide"].offsets.len(), 2 * half as usize);
        // Only hand-made tokens name partitions past the limit: such an entry is not sent.
        s.observe(&tok("wide", 1, &ones(2 * half..4 * half)))
            .unwrap();
        assert_eq!(
            s.positions("wide").unwrap().offsets.len(),
            4 * half as usize
        );
        assert_eq!(s.token_for("wide"), None);
    }
}
