//! The commit record: one per committed read-write transaction, the value of one record in
//! the single-partition commit stream (`_txn`). The key-value table is derived from these.
//!
//! Little-endian, versioned; the log's batch CRC32C protects it on disk, and decoding still
//! checks every length so that a damaged or foreign record is an error, never a panic.
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version (1, 2 or 3) |
//! | 8 | version 3 only: epoch (the fencing token of the elected leader that certified it) |
//! | 1 | isolation: 0 read_committed, 1 snapshot, 2 serializable |
//! | 8 | snapshot (commit-stream offset the transaction read at; exclusive) |
//! | 2 + n | request id in its principal's namespace (length; length 0: none): `principal` U+001F `id`, or the `id` alone for a request no principal sent ([`scoped_request_id`]) |
//! | 1 + n | traceparent (length, ASCII; length 0: none) |
//! | 1 | versions 2, 3: intents flags (bit 0: the transaction read before committing; version 3, bit 1: a fingerprint follows) |
//! | 16 | version 2, and version 3 with flag bit 1: intents fingerprint (XXH3-128, computed by the `txn` module) |
//! | 4 | number of writes |
//! | per write | kind (1 put, 2 delete, 3 put resolved from increments), key (2-byte length + bytes), value for kinds 1 and 3 (4-byte length + bytes) |
//!
//! Writes hold *resolved* values: an increment is stored as the value it produced, so replay
//! never re-evaluates anything.
//!
//! Version 2 adds the *intents fingerprint*: a hash of what the transaction asked for (its
//! buffered operations and locks, before resolution), which tells a retry of the same
//! request id apart from a different transaction reusing it. This code writes version 2
//! for a commit with a request id and version 1 (no fingerprint: nothing would compare it)
//! for one without; version 1 records with a request id, written before the fingerprint
//! existed, still decode, and a retry of their request id is accepted as a duplicate
//! whatever its operations, as it was then.
//!
//! Version 3 adds the *epoch*: on a cluster the commit stream is written by one elected
//! leader at a time, which first appends an **epoch record** carrying its fencing token and
//! then stamps every commit record with it. Replay ignores a commit whose epoch is older than
//! an epoch record before it (a deposed leader's append that storage should have refused).
//! The epoch record:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | kind and version: `0x45` (`E`), epoch record version 1 |
//! | 8 | fencing token (the leader key's create revision in etcd) |
//! | 1 + n | the leader's node id (length, UTF-8) |

use crate::Isolation;

/// Commit record format version written by this code (for records with a fingerprint).
pub const COMMIT_FORMAT_VERSION: u8 = 2;

/// The commit record format version without an intents fingerprint; still decoded.
pub const COMMIT_FORMAT_VERSION_V1: u8 = 1;

/// The commit record format version with an epoch: written for commits certified by an
/// elected leader (a cluster).
pub const COMMIT_FORMAT_VERSION_V3: u8 = 3;

/// What separates the principal from the request id in a commit record's request id: a
/// control character, which neither a principal name nor a request id (printable ASCII)
/// holds, so the two read back unambiguously.
pub const PRINCIPAL_SEPARATOR: char = '\u{1f}';

/// A commit's request id in its principal's namespace, as the commit record holds it and the
/// store's request-id index keys it: `principal` U+001F `id`; `id` alone without a principal
/// (a node without authentication, and every record written before ids were scoped). Two
/// principals' commits under the same id are two requests.
pub fn scoped_request_id(principal: Option<&str>, id: &str) -> String {
    match principal {
        Some(p) => format!("{p}{PRINCIPAL_SEPARATOR}{id}"),
        None => id.to_string(),
    }
}

/// The first byte of an epoch record (its kind and version).
pub const EPOCH_RECORD_VERSION: u8 = 0x45;

/// Longest node id in an epoch record, in bytes.
pub const EPOCH_NODE_ID_BYTES_MAX: usize = 255;

/// An elected leader's first record in the commit stream: from here on, commits of older
/// epochs are not part of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// The fencing token: strictly greater than every earlier leader's.
    pub token: u64,
    /// The leader's node id (for operators; at most [`EPOCH_NODE_ID_BYTES_MAX`] bytes).
    pub node_id: String,
}

impl EpochRecord {
    /// Encodes the record; a longer node id is cut at [`EPOCH_NODE_ID_BYTES_MAX`] bytes
    /// (on a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.node_id.len().min(EPOCH_NODE_ID_BYTES_MAX);
        while !self.node_id.is_char_boundary(end) {
            end -= 1;
        }
        let id = &self.node_id.as_bytes()[..end];
        let mut out = Vec::with_capacity(10 + id.len());
        out.push(EPOCH_RECORD_VERSION);
        out.extend_from_slice(&self.token.to_le_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out
    }

    fn decode(b: &[u8]) -> Result<EpochRecord, String> {
        let mut r = Reader { b, pos: 1 };
        let token = u64::from_le_bytes(r.array("epoch token")?);
        let len = r.u8("node id length")? as usize;
        let id = r.bytes(len, "node id")?;
        let node_id = String::from_utf8(id.to_vec()).map_err(|_| "node id is not UTF-8")?;
        if r.pos != b.len() {
            return Err(format!("{} trailing bytes", b.len() - r.pos));
        }
        Ok(EpochRecord { token, node_id })
    }
}

/// One record of the commit stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A committed transaction.
    Commit(CommitRecord),
    /// A new leader's epoch.
    Epoch(EpochRecord),
}

impl Entry {
    /// Decodes a commit-stream record of either kind.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn decode(b: &[u8]) -> Result<Entry, String> {
        match b.first() {
            Some(&EPOCH_RECORD_VERSION) => EpochRecord::decode(b).map(Entry::Epoch),
            _ => CommitRecord::decode(b).map(Entry::Commit),
        }
    }
}

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
    /// Its request id, if it had one, in its principal's namespace
    /// ([`scoped_request_id`]).
    pub request_id: Option<String>,
    /// Its W3C traceparent, if it had one.
    pub traceparent: Option<String>,
    /// Fingerprint of the transaction's intents (XXH3-128 of its buffered operations and
    /// locks in canonical order), compared when its request id is used again. `None` in
    /// records of format version 1; encoding a record without one writes version 1.
    pub intents: Option<u128>,
    /// Whether the transaction read anything (version 2; `false` in version 1): its
    /// writes may then depend on what it read, so a retry's need not match its
    /// fingerprint (see [`crate::TxnStore`]).
    pub read_dependent: bool,
    /// Its writes, in key order.
    pub writes: Vec<(Vec<u8>, WriteOp)>,
    /// The fencing token of the leader that certified it (version 3); `None` on a single
    /// node, where the store is the commit stream's only writer.
    pub epoch: Option<u64>,
}

impl CommitRecord {
    /// Encodes the record. Lengths are within the crate's limits (checked by the caller).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.writes.len() * 32);
        out.push(match (self.epoch, self.intents) {
            (Some(_), _) => COMMIT_FORMAT_VERSION_V3,
            (None, Some(_)) => COMMIT_FORMAT_VERSION,
            (None, None) => COMMIT_FORMAT_VERSION_V1,
        });
        if let Some(epoch) = self.epoch {
            out.extend_from_slice(&epoch.to_le_bytes());
        }
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
        match (self.epoch, self.intents) {
            (None, Some(fp)) => {
                out.push(u8::from(self.read_dependent));
                out.extend_from_slice(&fp.to_le_bytes());
            }
            (Some(_), fp) => {
                out.push(u8::from(self.read_dependent) | (u8::from(fp.is_some()) << 1));
                if let Some(fp) = fp {
                    out.extend_from_slice(&fp.to_le_bytes());
                }
            }
            (None, None) => {}
        }
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
        if version == EPOCH_RECORD_VERSION {
            return Err("an epoch record, not a commit record".into());
        }
        if !(COMMIT_FORMAT_VERSION_V1..=COMMIT_FORMAT_VERSION_V3).contains(&version) {
            return Err(format!("unknown commit format version {version}"));
        }
        let epoch = if version == COMMIT_FORMAT_VERSION_V3 {
            Some(u64::from_le_bytes(r.array("epoch")?))
        } else {
            None
        };
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
        let (intents, read_dependent) = match version {
            COMMIT_FORMAT_VERSION_V1 => (None, false),
            _ => {
                // Version 2 always has a fingerprint; version 3 says so in bit 1.
                let flags = r.u8("intents flags")?;
                let known = if version == COMMIT_FORMAT_VERSION {
                    1
                } else {
                    3
                };
                if flags & !known != 0 {
                    return Err(format!("unknown intents flags {flags}"));
                }
                let has_fp = version == COMMIT_FORMAT_VERSION || flags & 2 != 0;
                let fp = if has_fp {
                    Some(u128::from_le_bytes(r.array("intents fingerprint")?))
                } else {
                    None
                };
                (fp, flags & 1 != 0)
            }
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
            intents,
            read_dependent,
            writes,
            epoch,
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
            intents in proptest::option::of(any::<u128>()),
            read in any::<bool>(),
            writes in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..20), op()), 0..20),
            epoch in proptest::option::of(any::<u64>()),
        ) {
            let read_dependent = read && (intents.is_some() || epoch.is_some());
            let rec = CommitRecord { isolation: Isolation::Serializable, snapshot, request_id: id,
                traceparent: None, intents, read_dependent, writes, epoch };
            let bytes = rec.encode();
            prop_assert_eq!(CommitRecord::decode(&bytes).unwrap(), rec.clone());
            prop_assert_eq!(Entry::decode(&bytes).unwrap(), Entry::Commit(rec));
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
            intents: Some(7),
            read_dependent: false,
            writes: vec![(b"k".to_vec(), WriteOp::Delete)],
            epoch: None,
        }
        .encode();
        b.push(0);
        assert!(CommitRecord::decode(&b).unwrap_err().contains("trailing"));
    }

    /// A record exactly as format version 1 wrote it (bytes spelled out, not produced by
    /// `encode`) still decodes, with no fingerprint.
    #[test]
    fn version_1_records_decode_without_a_fingerprint() {
        let mut b = vec![1u8, 2];
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&5u16.to_le_bytes());
        b.extend_from_slice(b"rid-1");
        b.push(0);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(3);
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"c1");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"1");
        b.push(1);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(b"k");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"\"v\"");
        let rec = CommitRecord::decode(&b).unwrap();
        assert_eq!(
            rec,
            CommitRecord {
                isolation: Isolation::Serializable,
                snapshot: 5,
                request_id: Some("rid-1".into()),
                traceparent: None,
                intents: None,
                read_dependent: false,
                writes: vec![
                    (b"c1".to_vec(), WriteOp::Incremented(1)),
                    (b"k".to_vec(), WriteOp::Put(b"\"v\"".to_vec())),
                ],
                epoch: None,
            }
        );
        // A record without a fingerprint is written in version 1, byte for byte.
        assert_eq!(rec.encode(), b);
        // With one, version 2: the 16 bytes sit after the traceparent.
        let v2 = CommitRecord {
            intents: Some(0x0102),
            ..rec.clone()
        }
        .encode();
        assert_eq!((v2[0], v2.len()), (2, b.len() + 17));
        assert_eq!(CommitRecord::decode(&v2).unwrap().intents, Some(0x0102));
        // Unknown versions are still refused.
        let mut v4 = v2.clone();
        v4[0] = 4;
        assert!(CommitRecord::decode(&v4).unwrap_err().contains("version 4"));
    }

    /// Version 3: the epoch right after the version byte, flags with bit 1 for the
    /// fingerprint; an epoch record is its own kind and never a commit.
    #[test]
    fn epochs_stamp_commits_and_open_with_their_own_record() {
        let rec = CommitRecord {
            isolation: Isolation::Snapshot,
            snapshot: 9,
            request_id: None,
            traceparent: None,
            intents: None,
            read_dependent: true,
            writes: vec![(b"k".to_vec(), WriteOp::Delete)],
            epoch: Some(0x0a0b),
        };
        let b = rec.encode();
        assert_eq!(b[0], 3);
        assert_eq!(&b[1..9], &0x0a0bu64.to_le_bytes());
        assert_eq!(CommitRecord::decode(&b).unwrap(), rec);
        let epoch = EpochRecord {
            token: 42,
            node_id: "node-a".into(),
        };
        let e = epoch.encode();
        assert_eq!((e[0], e.len()), (b'E', 1 + 8 + 1 + 6));
        assert_eq!(Entry::decode(&e).unwrap(), Entry::Epoch(epoch));
        assert!(
            CommitRecord::decode(&e)
                .unwrap_err()
                .contains("epoch record")
        );
        for cut in 0..e.len() {
            assert!(Entry::decode(&e[..cut]).is_err());
        }
    }
}
