//! Which partition a record goes to: the key's hash, or a partition the caller picks for
//! unkeyed records. Every backend and the request-id index route the same way, so a retry
//! reaches the partition the original may have.

use crate::format::Record;

/// The partition of a keyed record in a stream of `partitions` partitions:
/// `xxh3_64(key, seed 0) % partitions`.
///
/// # Panics
/// If `partitions` is 0 (streams always have at least one).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a stream has at least one partition");
    let p = xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions);
    u32::try_from(p).unwrap_or(0)
}

/// Splits records by partition (keyed by hash; all unkeyed ones to `unkeyed`):
/// `(partition, records, their input indices)`, in partition order.
pub(crate) fn group_by_partition(
    records: Vec<Record>,
    partitions: u32,
    unkeyed: u32,
) -> Vec<(u32, Vec<Record>, Vec<usize>)> {
    let mut by_partition: Vec<(Vec<Record>, Vec<usize>)> =
        (0..partitions).map(|_| (Vec::new(), Vec::new())).collect();
    for (index, record) in records.into_iter().enumerate() {
        let p = match &record.key {
            Some(key) => partition_for_key(key, partitions),
            None => unkeyed,
        };
        by_partition[p as usize].0.push(record);
        by_partition[p as usize].1.push(index);
    }
    by_partition
        .into_iter()
        .enumerate()
        .filter(|(_, (r, _))| !r.is_empty())
        .map(|(p, (r, i))| (u32::try_from(p).unwrap_or(0), r, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: [u32; 3] = [778_394, 871_925, 2];

    #[test]
    fn key_partitioning_is_stable_and_spreads() {
        // Pinned values: changing the hash would move every existing key to another
        // partition. XXH3-64 of the empty input with seed 0 is the published 0x2D06800538D394C2.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(partition_for_key(b"", 1_000_003), PINNED[0]);
        assert_eq!(
            partition_for_key(b"2013-1-1|UA|1545|EWR", 1_000_003),
            PINNED[1]
        );
        assert_eq!(partition_for_key(b"2013-1-1|UA|1545|EWR", 4), PINNED[2]);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
