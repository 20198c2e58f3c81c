//! Eventual uniqueness with compensation (issue 21, decision 0031): the state of a derived
//! stream with `unique` — per source partition, the winning claim of each constrained value —
//! and the outcome record each claim gets.
//!
//! ```text
//!  claims, keyed by the constrained value (all rivals in one partition)
//!    offset 3  {"username":"ada", "signup":"s-1"}  ─▶ {"outcome":"accepted", …}
//!    offset 9  {"username":"ada", "signup":"s-7"}  ─▶ {"outcome":"rejected", …,
//!                                                      "taken_by":{"offset":3,"key":"s-1"}}
//! ```
//!
//! The first claim in the partition's offset order wins; every later claim of the same value
//! is rejected — the compensating record applications consume. The state is a pure function
//! of the partition's records from its start, so a restarted processor rebuilds it by
//! reading the input again up to where it resumes, and makes the same outcomes again.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Bytes a winner costs in memory beyond its value and key (map entry, offset).
const WINNER_OVERHEAD_BYTES: usize = 64;

/// The claim that holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner {
    /// Its offset in the source partition.
    pub offset: u64,
    /// Its output key (text; bytes that are not UTF-8 are replaced).
    pub key: Option<String>,
}

/// What a claim gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The value was free: this claim holds it now.
    Accepted,
    /// An earlier claim holds it.
    Rejected(Winner),
    /// Holding one more winner would pass the state's byte limit.
    Full {
        /// Bytes the state would hold.
        bytes: usize,
    },
}

/// The winners of one source partition.
#[derive(Debug, Default)]
pub struct Winners {
    by_value: HashMap<String, Winner>,
    bytes: usize,
}

impl Winners {
    /// Decides the claim at `offset` of `value` whose output key is `key`, holding at most
    /// `max_bytes` of winners.
    pub fn claim(
        &mut self,
        value: &str,
        offset: u64,
        key: Option<&[u8]>,
        max_bytes: usize,
    ) -> Verdict {
        if let Some(w) = self.by_value.get(value) {
            return Verdict::Rejected(w.clone());
        }
        let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
        let bytes =
            self.bytes + value.len() + key.as_ref().map_or(0, String::len) + WINNER_OVERHEAD_BYTES;
        if bytes > max_bytes {
            return Verdict::Full { bytes };
        }
        self.bytes = bytes;
        self.by_value
            .insert(value.to_string(), Winner { offset, key });
        Verdict::Accepted
    }
}

/// The outcome record's value: `{"outcome": "accepted" | "rejected", "unique": value,
/// "offset": the claim's offset, "claim": the (projected) claim, "taken_by": {"offset",
/// "key"}}` (`taken_by` on a rejection only).
pub fn outcome(unique: &str, offset: u64, claim: Value, taken_by: Option<&Winner>) -> Value {
    match taken_by {
        None => json!({"outcome": "accepted", "unique": unique, "offset": offset, "claim": claim}),
        Some(w) => json!({"outcome": "rejected", "unique": unique, "offset": offset,
            "claim": claim, "taken_by": {"offset": w.offset, "key": w.key}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claim_wins_and_later_ones_name_it() {
        let mut w = Winners::default();
        assert_eq!(w.claim("ada", 3, Some(b"s-1"), 1 << 20), Verdict::Accepted);
        assert_eq!(w.claim("bob", 4, Some(b"s-2"), 1 << 20), Verdict::Accepted);
        let first = Winner {
            offset: 3,
            key: Some("s-1".into()),
        };
        assert_eq!(
            w.claim("ada", 9, Some(b"s-7"), 1 << 20),
            Verdict::Rejected(first.clone())
        );
        assert_eq!(
            outcome("ada", 9, json!({"signup": "s-7"}), Some(&first)),
            json!({"outcome": "rejected", "unique": "ada", "offset": 9,
                "claim": {"signup": "s-7"}, "taken_by": {"offset": 3, "key": "s-1"}})
        );
    }

    #[test]
    fn the_state_is_bounded() {
        let mut w = Winners::default();
        let max = 2 * (3 + WINNER_OVERHEAD_BYTES);
        assert_eq!(w.claim("a", 0, Some(b"k"), max), Verdict::Accepted);
        assert_eq!(w.claim("b", 1, Some(b"k"), max), Verdict::Accepted);
        assert!(matches!(
            w.claim("c", 2, Some(b"k"), max),
            Verdict::Full { .. }
        ));
        // A rejection holds nothing new: still answered.
        assert!(matches!(w.claim("a", 3, None, max), Verdict::Rejected(_)));
    }
}
