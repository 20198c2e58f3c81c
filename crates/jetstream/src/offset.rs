//! The offset mapping: a Logbook offset names a JetStream message and a record in it.
//!
//! ```text
//! offset = (sequence − 1) · 2^16 + index        sequence ≥ 1, index < records in the message
//!
//!   message seq 1: 3 records   → offsets 0, 1, 2
//!   message seq 2: 1 record    → offset 65,536
//!   message seq 3: 2 records   → offsets 131,072, 131,073
//! ```
//!
//! Offsets are monotonic per partition with gaps, as the log contract allows for backends other
//! than the embedded one (which is dense). The end offset of a partition — the offset the next
//! appended record will get — is `last_sequence · 2^16`, known without reading the last message.
//! A batch holds at most [`MESSAGE_RECORDS_MAX`] records so an index always fits; sequences
//! above [`SEQUENCE_MAX`] (2^48 − 1) have no offsets (`None`), rather than offsets that wrap.

use crate::limits::{INDEX_BITS, MESSAGE_RECORDS_MAX, SEQUENCE_MAX};

const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The offset of record `index` of the message with stream sequence `sequence`; `None` if
/// `sequence` is above [`SEQUENCE_MAX`].
///
/// # Panics
/// If `sequence` is 0 (JetStream sequences start at 1) or `index` ≥ [`MESSAGE_RECORDS_MAX`]:
/// callers check both, so either is a bug.
pub fn offset_of(sequence: u64, index: u32) -> Option<u64> {
    assert!(sequence >= 1, "JetStream sequences start at 1");
    assert!(
        index < MESSAGE_RECORDS_MAX,
        "record index {index} exceeds a message"
    );
    (sequence <= SEQUENCE_MAX).then(|| ((sequence - 1) << INDEX_BITS) | u64::from(index))
}

/// The message sequence and record index an offset names.
pub fn position_of(offset: u64) -> (u64, u32) {
    ((offset >> INDEX_BITS) + 1, (offset & INDEX_MASK) as u32)
}

/// The end offset of a partition whose last message has sequence `last_sequence` (0 when the
/// stream is empty): the offset the first record of the next message will get. `None` if
/// `last_sequence` is above [`SEQUENCE_MAX`].
pub fn end_offset(last_sequence: u64) -> Option<u64> {
    (last_sequence <= SEQUENCE_MAX).then_some(last_sequence << INDEX_BITS)
}

/// The last sequence a partition has when its end offset is `end` — the inverse of
/// [`end_offset`] for offsets it returned (an expected-last-sequence precondition from an end
/// offset the caller has seen).
pub fn last_sequence_at(end: u64) -> u64 {
    end >> INDEX_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_records_of_the_first_messages() {
        assert_eq!(offset_of(1, 0), Some(0));
        assert_eq!(offset_of(1, 2), Some(2));
        assert_eq!(offset_of(2, 0), Some(65_536));
        assert_eq!(offset_of(3, 1), Some(131_073));
        assert_eq!(offset_of(1, MESSAGE_RECORDS_MAX - 1), Some(65_535));
    }

    #[test]
    fn position_inverts_offset() {
        for (seq, index) in [(1, 0), (1, 65_535), (2, 7), (1 << 40, 12_345)] {
            assert_eq!(position_of(offset_of(seq, index).unwrap()), (seq, index));
        }
    }

    #[test]
    fn end_offset_is_the_next_messages_base() {
        assert_eq!(end_offset(0), Some(0));
        assert_eq!(end_offset(1), offset_of(2, 0));
        assert_eq!(last_sequence_at(end_offset(41).unwrap()), 41);
        // Every offset of the last message lies below the end.
        assert!(offset_of(41, MESSAGE_RECORDS_MAX - 1) < end_offset(41));
    }

    #[test]
    fn sequences_beyond_the_offset_range_have_no_offsets_instead_of_wrapping() {
        let last = offset_of(SEQUENCE_MAX, MESSAGE_RECORDS_MAX - 1).unwrap();
        assert_eq!(last, u64::MAX - (1 << INDEX_BITS));
        assert_eq!(position_of(last), (SEQUENCE_MAX, MESSAGE_RECORDS_MAX - 1));
        assert!(end_offset(SEQUENCE_MAX).unwrap() > last);
        // 2^48 + 1 would wrap to offset 0 (and 2^48 to an end offset of 0).
        assert_eq!(offset_of(SEQUENCE_MAX + 1, 0), None);
        assert_eq!(offset_of(SEQUENCE_MAX + 2, 0), None);
        assert_eq!(end_offset(SEQUENCE_MAX + 1), None);
        assert_eq!(offset_of(u64::MAX, 0), None);
    }

    #[test]
    #[should_panic(expected = "exceeds a message")]
    fn index_beyond_a_message_is_a_bug() {
        offset_of(1, MESSAGE_RECORDS_MAX);
    }
}
