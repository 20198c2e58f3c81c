//! Transactions and key-value reads: the bodies of `/v1/txns/...` and `/v1/kv...`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Isolation level of a transaction (PostgreSQL's three, with its guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
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
    /// Whether it is read-only.
    pub read_only: bool,
}

/// A key-value row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Row {
    /// The key.
    pub key: String,
    /// The value.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub value: Box<RawValue>,
    /// The `_txn` offset of the commit that wrote it; null for the transaction's own write.
    pub version: Option<u64>,
}

/// Rows of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rows {
    /// In key order.
    pub rows: Vec<Row>,
    /// When `limit` cut the rows: where the next page starts (pass it as `start`).
    /// Absent when these are all the rows of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `PUT /v1/txns/{txn}/kv/{key}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The value, any JSON, kept as sent (stored canonical, as a record's value).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
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
    /// The value each incremented key ended with.
    pub incremented: BTreeMap<String, i64>,
    /// True when this was a retry of an `Idempotency-Key` that had committed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}
