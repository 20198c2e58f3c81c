//! Where a derived stream resumes (decision 0031): the request ids of its output, made from
//! input positions, and the scan of its target that reads them back.
//!
//! ```text
//!  source partition p:  … [from ─── batch ─── to) …      one batch at a time
//!                              │ outputs grouped by target partition (or unkeyed)
//!                              ▼
//!  target:  share "dv:{name}:{generation}:{p}:{from}-{to}:{group}"   one atomic batch each
//! ```
//!
//! A source partition's batch `k + 1` is sent only once every group of batch `k` is
//! acknowledged and durable, so the newest batch of `p` found in the target is the only one
//! that may be incomplete: a restart reads its input range again (the same records make the
//! same groups), appends the groups it does not find, and goes on at `to`. Nothing here
//! depends on the request-id window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use logbook_log::LogStream;
use logbook_log::dedup::REQUEST_ID_HEADER;

use crate::error::{Result, ViewError};
use crate::limits::APPLY_BATCH_BYTES;

/// Records read per step of the scan.
const SCAN_RECORDS: usize = 4096;

/// Where one group of a batch's outputs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Keyed outputs routed to this target partition.
    Partition(u32),
    /// Unkeyed outputs (the log puts them in the partition of the request id's hash).
    Unkeyed,
}

/// The input range of one batch and the group of its outputs an append carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchId {
    /// The source partition.
    pub partition: u32,
    /// First input offset of the batch.
    pub from: u64,
    /// One past its last input offset.
    pub to: u64,
    /// Which outputs.
    pub group: Group,
}

/// The prefix of every request id of one derived stream's generation.
pub fn id_prefix(name: &str, generation: u64) -> String {
    format!("dv:{name}:{generation}:")
}

impl BatchId {
    /// The request id, under the derived stream's [`id_prefix`].
    pub fn request_id(&self, prefix: &str) -> String {
        let group = match self.group {
            Group::Partition(q) => q.to_string(),
            Group::Unkeyed => "u".to_string(),
        };
        format!(
            "{prefix}{}:{}-{}:{group}",
            self.partition, self.from, self.to
        )
    }

    /// Reads back what [`BatchId::request_id`] wrote after `prefix`.
    pub fn parse(rest: &str) -> Option<BatchId> {
        let mut parts = rest.split(':');
        let partition = parts.next()?.parse().ok()?;
        let (from, to) = parts.next()?.split_once('-')?;
        let group = match parts.next()? {
            "u" => Group::Unkeyed,
            q => Group::Partition(q.parse().ok()?),
        };
        if parts.next().is_some() {
            return None;
        }
        let (from, to) = (from.parse().ok()?, to.parse().ok()?);
        (from < to).then_some(BatchId {
            partition,
            from,
            to,
            group,
        })
    }
}

/// The newest batch of one source partition found in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Its first input offset.
    pub from: u64,
    /// One past its last: where the processor goes on.
    pub to: u64,
    /// The groups already in the target (the others are appended again).
    pub groups: BTreeSet<Group>,
}

/// Reads every partition of `target` from its first retained record to its durable end and
/// returns, per source partition, the newest batch whose id starts with `prefix`. Stops
/// early (returning what it has) when `stop` is set.
///
/// # Errors
/// The log's read errors.
pub fn scan(
    target: &dyn LogStream,
    prefix: &str,
    stop: &AtomicBool,
) -> Result<BTreeMap<u32, Resume>> {
    let mut found: BTreeMap<u32, Resume> = BTreeMap::new();
    for part in target.partitions() {
        let end = part.durable_offset().min(part.end_offset());
        let mut at = part.start_offset();
        while at < end && !stop.load(Ordering::Acquire) {
            let records = part.read(at, SCAN_RECORDS, APPLY_BATCH_BYTES)?;
            let Some(last) = records.last() else {
                return Err(ViewError::corrupt(
                    "derived stream target",
                    format!(
                        "partition {} read nothing at offset {at} below its end {end}",
                        part.id()
                    ),
                ));
            };
            at = last.offset + 1;
            for r in records.iter().filter(|r| r.offset < end) {
                let Some(id) = r
                    .headers
                    .iter()
                    .find(|(n, _)| n == REQUEST_ID_HEADER)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
                else {
                    continue;
                };
                let Some(batch) = id.strip_prefix(prefix).and_then(BatchId::parse) else {
                    continue;
                };
                note(&mut found, batch);
            }
        }
    }
    Ok(found)
}

/// Keeps the newest batch per source partition, with the groups seen of it.
fn note(found: &mut BTreeMap<u32, Resume>, batch: BatchId) {
    let entry = found.entry(batch.partition).or_insert_with(|| Resume {
        from: batch.from,
        to: batch.to,
        groups: BTreeSet::new(),
    });
    if batch.to > entry.to {
        *entry = Resume {
            from: batch.from,
            to: batch.to,
            groups: BTreeSet::new(),
        };
    }
    if batch.to == entry.to {
        entry.groups.insert(batch.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back() {
        let prefix = id_prefix("paid-orders", 17);
        for group in [Group::Partition(3), Group::Unkeyed] {
            let b = BatchId {
                partition: 2,
                from: 40,
                to: 1064,
                group,
            };
            let id = b.request_id(&prefix);
            assert!(id.len() <= logbook_log::dedup::REQUEST_ID_BYTES_MAX);
            assert_eq!(BatchId::parse(id.strip_prefix(&prefix).unwrap()), Some(b));
        }
        for bad in ["2:40-40:1", "2:40-41", "2:40-41:1:x", "x:1-2:3", "2:1-2:v"] {
            assert_eq!(BatchId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_batch_wins_with_its_groups() {
        let mut found = BTreeMap::new();
        let b = |from, to, q| BatchId {
            partition: 0,
            from,
            to,
            group: Group::Partition(q),
        };
        for batch in [b(0, 10, 1), b(10, 20, 0), b(0, 10, 0), b(10, 20, 2)] {
            note(&mut found, batch);
        }
        assert_eq!(
            found[&0],
            Resume {
                from: 10,
                to: 20,
                groups: [Group::Partition(0), Group::Partition(2)].into()
            }
        );
    }
}
