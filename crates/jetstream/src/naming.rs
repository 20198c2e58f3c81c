//! JetStream names for Logbook partitions.
//!
//! Logbook stream names may contain characters JetStream forbids in stream names and subjects
//! (`.` separates subject tokens; `*`, `>` and whitespace are wildcards or separators), and a
//! dropped and re-created stream must not find its predecessor's messages. So a partition's
//! JetStream stream is named from a hash of (Logbook stream name, incarnation, partition):
//!
//! ```text
//! key     = u32 LE name length | name bytes | incarnation u64 LE | partition u32 LE
//! stream  = "LB_" + 32 hex digits of XXH3-128(key)        e.g. LB_5f0c…e1
//! subject = "logbook.p." + the same 32 hex digits
//! ```
//!
//! The unhashed identity is kept in the JetStream stream's `description`, so an operator sees
//! which partition a stream holds and a hash collision is detected (as a settings mismatch)
//! rather than silently shared.

use xxhash_rust::xxh3::xxh3_128;

/// The Logbook identity of one partition: stream name, incarnation and partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionRef {
    /// The Logbook stream's name (any bytes the catalog accepts).
    pub stream: String,
    /// The stream's incarnation: changes when a stream of the same name is dropped and created
    /// again, so the new one starts empty.
    pub incarnation: u64,
    /// Partition number within the stream.
    pub partition: u32,
}

impl PartitionRef {
    /// A partition reference.
    pub fn new(stream: impl Into<String>, incarnation: u64, partition: u32) -> Self {
        PartitionRef {
            stream: stream.into(),
            incarnation,
            partition,
        }
    }

    fn hash_hex(&self) -> String {
        let mut key = Vec::with_capacity(4 + self.stream.len() + 12);
        // Stream names are bounded far below u32::MAX by the catalog's limits.
        key.extend_from_slice(&(self.stream.len() as u32).to_le_bytes());
        key.extend_from_slice(self.stream.as_bytes());
        key.extend_from_slice(&self.incarnation.to_le_bytes());
        key.extend_from_slice(&self.partition.to_le_bytes());
        format!("{:032x}", xxh3_128(&key))
    }

    /// The JetStream stream name of this partition (`LB_` + 32 hex digits).
    pub fn jetstream_name(&self) -> String {
        format!("LB_{}", self.hash_hex())
    }

    /// The one subject this partition's JetStream stream holds.
    pub fn subject(&self) -> String {
        format!("logbook.p.{}", self.hash_hex())
    }

    /// The description stored on the JetStream stream: the unhashed identity.
    pub fn description(&self) -> String {
        format!(
            "logbook partition: stream={:?} incarnation={} partition={}",
            self.stream, self.incarnation, self.partition
        )
    }
}

impl std::fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (incarnation {})",
            self.stream, self.partition, self.incarnation
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_jetstream_names_whatever_the_logbook_name() {
        let p = PartitionRef::new("orders.eu *>\t/", 7, 3);
        let name = p.jetstream_name();
        assert_eq!(name.len(), 3 + 32);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(p.subject().starts_with("logbook.p."));
        assert_eq!(p.subject().matches('.').count(), 2);
    }

    #[test]
    fn each_part_of_the_identity_changes_the_name() {
        let base = PartitionRef::new("orders", 1, 0);
        let others = [
            PartitionRef::new("orders2", 1, 0),
            PartitionRef::new("orders", 2, 0),
            PartitionRef::new("orders", 1, 1),
        ];
        for other in others {
            assert_ne!(base.jetstream_name(), other.jetstream_name(), "{other}");
        }
        // Length-prefixed: ("ab", …) and ("a", …) with shifted bytes do not collide by layout.
        assert_ne!(
            PartitionRef::new("a", 0x62, 0).jetstream_name(),
            PartitionRef::new("ab", 0, 0).jetstream_name()
        );
    }

    /// A name is where a partition's data lives: changing the scheme orphans every stream.
    #[test]
    fn names_are_stable_across_builds() {
        let p = PartitionRef::new("orders", 1, 0);
        assert_eq!(p.jetstream_name(), "LB_d1d4c83cba2be731f8264313ecf7bbfb");
        assert_eq!(
            p.subject(),
            format!("logbook.p.{}", &p.jetstream_name()[3..])
        );
        assert!(p.description().contains("stream=\"orders\""));
    }
}
