//! The commit record: one per committed read-write transaction, the value of one record in
//! the single-partition commit stream (`_txn`). The key-value table is derived from these.
//!
//! Little-endian, versioned; the log's batch CRC32C protects it on disk, and decoding still
//! checks every length so that a damaged or foreign record is an error, never a panic.
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version (1) |
//! | 1 | isolation: 0 read_committed, 1 snapshot, 2 serializable |
//! | 8 | snapshot (commit-stream offset the transaction read at; exclusive) |
//! | 2 + n | request id (length, ASCII; length 0: none) |
//! | 1 + n | traceparent (length, ASCII; length 0: none) |
//! | 4 | number of writes |
//! | per write | kind (1 put, 2 delete, 3 put resolved from increments), key (2-byte length + bytes), value for kinds 1 and 3 (4-byte length + bytes) |
//!
//! Writes hold *resolved* values: an increment is stored as the value it produced, so replay
//! never re-evaluates anything.

use crate::Isolation;

/// Commit record format version written by this code.
pub const COMMIT_FORMAT_VERSION: u8 = 1;

/// One resolved write of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// The key now holds this value.
    Put(Vec<u8>),
    /// The key is now absent.
    Delete,
    /// The key now holds this value, produced by increments (decimal i64).
    Incremented(i64),
}

/// A decoded commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// Isolation level of the transaction.
    pub isolation: Isolation,
    /// The snapshot it read at (commits at offsets below it were visible).
    pub snapshot: u64,
    /// Its request id, if it had one.
    pub request_id: Option<String>,
    /// Its W3C traceparent, if it had one.
    pub traceparent: Option<String>,
    /// Its writes, in key order.
    pub writes: Vec<(Vec<u8>, WriteOp)>,
}

impl CommitRecord {
    /// Encodes the record. Lengths are within the crate's limits (checked by the caller).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.writes.len() * 32);
        out.push(COMMIT_FORMAT_VERSION);
        out.push(match self.isolation {
            Isolation::ReadCommitted => 0,
            Isolation::Snapshot => 1,
            Isolation::Serializable => 2,
        });
        out.extend_from_slice(&self.snapshot.to_le_bytes());
        let id = self.request_id.as_deref().unwrap_or("").as_bytes();
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        let tp = self.traceparent.as_deref().unwrap_or("").as_bytes();
        out.push(tp.len() as u8);
        out.extend_from_slice(tp);
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        for (key, op) in &self.writes {
            let kind = match op {
                WriteOp::Put(_) => 1u8,
                WriteOp::Delete => 2,
                WriteOp::Incremented(_) => 3,
            };
            out.push(kind);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            match op {
                WriteOp::Put(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
                WriteOp::Incremented(n) => {
                    let v = n.to_string();
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
                WriteOp::Delete => {}
            }
        }
        out
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// A message saying what is wrong (unknown version, truncated field, bad kind).
    pub fn decode(b: &[u8]) -> Result<CommitRecord, String> {
        let mut r = Reader { b, pos: 0 };
        let version = r.u8("format version")?;
        if version != COMMIT_FORMAT_VERSION {
            return Err(format!("unknown commit format version {version}"));
        }
        let isolation = match r.u8("isolation")? {
            0 => Isolation::ReadCommitted,
            1 => Isolation::Snapshot,
            2 => Isolation::Serializable,
            n => return Err(format!("unknown isolation {n}")),
        };
        let snapshot = u64::from_le_bytes(r.array("snapshot")?);
        let id_len = u16::from_le_bytes(r.array("request id length")?) as usize;
        let id = r.bytes(id_len, "request id")?;
        let request_id = if id.is_empty() {
            None
        } else {
            Some(String::from_utf8(id.to_vec()).map_err(|_| "request id is not UTF-8")?)
        };
        let tp_len = r.u8("traceparent length")? as usize;
        let tp = r.bytes(tp_len, "traceparent")?;
        let traceparent = if tp.is_empty() {
            None
        } else {
            Some(String::from_utf8(tp.to_vec()).map_err(|_| "traceparent is not UTF-8")?)
        };
        let n = u32::from_le_bytes(r.array("write count")?) as usize;
        // Each write takes at least 3 bytes: a count beyond that is damage, not a big commit.
        if n > b.len() / 3 {
            return Err(format!(
                "write count {n} exceeds what {} bytes can hold",
                b.len()
            ));
        }
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = r.u8("write kind")?;
            let key_len = u16::from_le_bytes(r.array("key length")?) as usize;
            let key = r.bytes(key_len, "key")?.to_vec();
            let op = match kind {
                1 | 3 => {
                    let len = u32::from_le_bytes(r.array("value length")?) as usize;
                    let v = r.bytes(len, "value")?;
                    if kind == 1 {
                        WriteOp::Put(v.to_vec())
                    } else {
                        let n = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .ok_or("incremented value is not a decimal i64")?;
                        WriteOp::Incremented(n)
                    }
                }
                2 => WriteOp::Delete,
                k => return Err(format!("unknown write kind {k}")),
            };
            writes.push((key, op));
        }
        if r.pos != b.len() {
            return Err(format!("{} trailing bytes", b.len() - r.pos));
        }
        Ok(CommitRecord {
            isolation,
            snapshot,
            request_id,
            traceparent,
            writes,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.b.len())
            .ok_or_else(|| format!("truncated at {what}"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.bytes(1, what)?[0])
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = WriteOp> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(WriteOp::Put),
            Just(WriteOp::Delete),
            any::<i64>().prop_map(WriteOp::Incremented),
        ]
    }

    proptest! {
        #[test]
        fn commit_records_round_trip(
            snapshot in any::<u64>(),
            id in proptest::option::of("[a-z0-9:-]{1,40}"),
            writes in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..20), op()), 0..20),
        ) {
            let rec = CommitRecord { isolation: Isolation::Serializable, snapshot, request_id: id,
                traceparent: None, writes };
            let bytes = rec.encode();
            prop_assert_eq!(CommitRecord::decode(&bytes).unwrap(), rec);
            // Every strict prefix is an error, never a panic or a shorter record.
            for cut in 0..bytes.len() {
                prop_assert!(CommitRecord::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn foreign_bytes_are_refused() {
        assert!(CommitRecord::decode(b"").is_err());
        assert!(CommitRecord::decode(b"{\"not\":\"a commit\"}").is_err());
        let mut b = CommitRecord {
            isolation: Isolation::Snapshot,
            snapshot: 3,
            request_id: None,
            traceparent: None,
            writes: vec![(b"k".to_vec(), WriteOp::Delete)],
        }
        .encode();
        b.push(0);
        assert!(CommitRecord::decode(&b).unwrap_err().contains("trailing"));
    }
}
