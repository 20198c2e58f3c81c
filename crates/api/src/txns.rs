//! Transactions and key-value reads: the bodies of `/v1/txns/...` and `/v1/kv...`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Isolation level of a transaction (PostgreSQL's three, with its guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Each read sees the newest committed state.
    ReadCommitted,
    /// Snapshot isolation: one snapshot for all reads; first committer wins.
    Snapshot,
    /// Serializable snapshot isolation (SSI).
    Serializable,
}

impl Isolation {
    /// The name on the wire: `read_committed`, `snapshot`, `serializable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// From its name only: anything else is refused naming the three names.
impl<'de> Deserialize<'de> for Isolation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Isolation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of \"read_committed\", \"snapshot\", \"serializable\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Isolation, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read_committed" => Ok(Isolation::ReadCommitted),
            "snapshot" => Ok(Isolation::Snapshot),
            "serializable" => Ok(Isolation::Serializable),
            other => Err(format!(
                "unknown isolation {other:?}: expected read_committed, snapshot or serializable"
            )),
        }
    }
}

/// `POST /v1/txns` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    /// `read_committed`, `snapshot` or `serializable` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// Declared read-only: writes fail; at `serializable` it reads a safe snapshot and never
    /// aborts. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A begun transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Begun {
    /// Its handle, for the `/v1/txns/{txn}/...` routes.
    pub txn: String,
    /// The commit offset it reads at (it sees commits below it).
    pub snapshot: u64,
    /// Its isolation level.
    pub isolation: String,
    /// Whether it is read-only: declared, or begun by a token that may write no key. The
    /// latter reads at the newest snapshot, not a safe one, and keeps no history of other
    /// commits while open: at `serializable` its commit is refused `snapshot_too_old`
    /// (retryable) once its snapshot has left the snapshot window.
    pub read_only: bool,
}

/// A key-value row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Row {
    /// The key.
    pub key: String,
    /// The value.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Box<RawValue>,
    /// The `_txn` offset of the commit that wrote it; null for the transaction's own write.
    pub version: Option<u64>,
    /// Reads outside a transaction: a consistency token of the commits this answer
    /// reflected (at least). Absent in a transaction and on the rows of a scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Rows of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rows {
    /// In key order.
    pub rows: Vec<Row>,
    /// When `limit` cut the rows, or the answer's byte budget did
    /// ([`crate::limits::KV_READ_ANSWER_BYTES_MAX`]; then with fewer rows than `limit`):
    /// where the next page starts (pass it as `start`). Absent when these are all the
    /// rows of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Scans outside a transaction: a consistency token of the commits this answer
    /// reflected (at least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `PUT /v1/txns/{txn}/kv/{key}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The value, any JSON, kept as sent (stored canonical, as a record's value).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Box<RawValue>,
    /// Write only if the key is at this version at commit (compare-and-set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
    /// Write only if the key is absent at commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_absent: Option<bool>,
}

/// `POST /v1/txns/{txn}/kv/{key}/increment` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IncrementBody {
    /// Added at commit to the key's integer value (absent = 0).
    pub by: i64,
}

/// A commit's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Committed {
    /// The `_txn` offset of the commit record (the version of every key it wrote); null for
    /// a transaction that wrote nothing.
    pub offset: Option<u64>,
    /// Consistency token of the commit.
    pub token: Option<String>,
    /// The value each incremented key ended with (an increment needs `kv:read` on its key
    /// beside `kv:write`, as this reveals the key's value).
    pub incremented: BTreeMap<String, i64>,
    /// True when this was a retry of an `Idempotency-Key` that had committed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A range to read or as read: `prefix`, or `start` (inclusive) and/or `end` (exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Keys starting with this (not with `end`; with `start`, those from `start` on — a
    /// page resumed from its `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// First key, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Key after the last, exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Reading: most rows, 1..=10000, default 100. Not allowed in a commit request.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// In a commit request: the `next` the read answered when its limit cut the range —
    /// the range was read up to, not including, this key. Not allowed when reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /v1/kv/read` body: keys and ranges read at one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    /// Keys to read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Ranges to read, each with its own `limit`.
    #[serde(
        default,
        deserialize_with = "crate::objects::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ranges: Vec<RangeSpec>,
    /// The snapshot to read at (a `_txn` offset: the commits below it); default the newest.
    /// It may lie back as far as the server's snapshot window (409 `snapshot_too_old`
    /// beyond it); ahead of the log is 422 `unprocessable_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<u64>,
}

/// One key of a read at a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyAt {
    /// The key.
    pub key: String,
    /// Its value; null when absent (then `version` is null too).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub value: Option<Box<RawValue>>,
    /// The `_txn` offset of the commit that wrote the value; null when absent. Declare it
    /// in a commit request's `reads`.
    pub version: Option<u64>,
}

/// The answer of `POST /v1/kv/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadAnswer {
    /// The snapshot read at: commit it with the reads (`POST /v1/commits`).
    pub snapshot: u64,
    /// One entry per key asked for, in the order asked.
    pub keys: Vec<KeyAt>,
    /// One page per range asked for, in the order asked; `next` set where the range's
    /// `limit` cut it, or the answer's byte budget
    /// ([`crate::limits::KV_READ_ANSWER_BYTES_MAX`]) did — then with fewer rows than the
    /// limit: read on from `next` (as `start`) at this snapshot (the Rust client does).
    pub ranges: Vec<Rows>,
    /// A consistency token of the snapshot (a `_txn` position: every commit below
    /// `snapshot`); absent at snapshot 0, before any commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A key as read, declared in a commit request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadKey {
    /// The key.
    pub key: String,
    /// The version read at the snapshot (the `version` of `POST /v1/kv/read`); `null` when
    /// the key was absent. Required: a read without it is 400 naming `reads[i].version`,
    /// never taken for "absent" (absence is stated, as `null`).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(deserialize_with = "stated")]
    pub version: Option<u64>,
}

/// A member that must be present, `null` included: with `deserialize_with` and no
/// `#[serde(default)]`, serde refuses a missing member ("missing field") instead of
/// taking it for `None`.
fn stated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

/// What a write of a commit request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// Set `value` (optionally `if_version` / `if_absent`).
    Put,
    /// Delete (optionally `if_version`).
    Delete,
    /// Add `by` to the integer value at commit (absent counts as 0).
    Increment,
}

/// One write of a commit request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    /// `put`, `delete` or `increment`.
    pub op: WriteKind,
    /// The key.
    pub key: String,
    /// `put`: the value, any JSON — `null` included (a put of `null` stores `null`, as in
    /// an interactive transaction); absent only for `delete` and `increment`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    #[serde(
        default,
        deserialize_with = "present_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Box<RawValue>>,
    /// `increment`: the amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<i64>,
    /// `put`, `delete`: only if the key is at this version at commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
    /// `put`: only if the key is absent at commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_absent: Option<bool>,
}

/// A member that is present holds a JSON value, `null` included: serde's `Option` would take
/// `null` for "absent" (with `#[serde(default)]`, only a missing member is `None`).
fn present_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl WriteSpec {
    /// A put of `value`.
    pub fn put(key: impl Into<String>, value: Box<RawValue>) -> Self {
        WriteSpec {
            op: WriteKind::Put,
            key: key.into(),
            value: Some(value),
            by: None,
            if_version: None,
            if_absent: None,
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        WriteSpec {
            op: WriteKind::Delete,
            key: key.into(),
            value: None,
            by: None,
            if_version: None,
            if_absent: None,
        }
    }

    /// An increment by `by`.
    pub fn increment(key: impl Into<String>, by: i64) -> Self {
        WriteSpec {
            op: WriteKind::Increment,
            key: key.into(),
            value: None,
            by: Some(by),
            if_version: None,
            if_absent: None,
        }
    }
}

/// `POST /v1/commits` body: a whole transaction in one request — everything the certifier
/// needs. It is certified exactly as an interactive transaction at the same level. The
/// declared `reads` and `ranges` are what the certifier checks this transaction's reads
/// against: leaving a read out only weakens this transaction's own guarantee, never
/// another's. Answers as `POST /v1/txns/{txn}/commit` ([`Committed`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// `read_committed`, `snapshot` or `serializable` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The snapshot the reads were made at (`snapshot` of `POST /v1/kv/read`); default the
    /// newest durable commit (for a transaction that read nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<u64>,
    /// Keys read, with the version seen.
    #[serde(
        default,
        deserialize_with = "crate::objects::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reads: Vec<ReadKey>,
    /// Ranges read (with `next` where a limit cut them).
    #[serde(
        default,
        deserialize_with = "crate::objects::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ranges: Vec<RangeSpec>,
    /// Keys read "for update": they conflict like writes (at every level).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<String>,
    /// The writes, at most one per key.
    #[serde(
        default,
        deserialize_with = "crate::objects::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub writes: Vec<WriteSpec>,
    /// Declared read-only: no writes or locks; certified on its reads. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}
