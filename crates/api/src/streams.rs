//! Streams and records: the bodies of `/v1/streams`, `/v1/streams/{stream}` and
//! `/v1/streams/{stream}/records`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// `PUT /v1/streams/{stream}` body. Every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Partitions, 1..=256. Default 1. Fixed for the stream's life.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "partitions"
    )]
    pub partitions: Option<u32>,
    /// `always` (default: acknowledged after fdatasync), `interval_ms=N` (fdatasync at most
    /// every N ms, N ≥ 1; `interval:N` is accepted too) or `never` (the CLI's `--fsync` and
    /// the server's errors spell them alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(always|never|interval_ms=[1-9][0-9]{0,17}|interval:[1-9][0-9]{0,17})$"
        )
    )]
    pub fsync: Option<String>,
    /// Segment size in bytes before rolling. Default 128 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_bytes_max: Option<u64>,
    /// Keep at least this many bytes per partition, deleting older whole segments; ≥ 1.
    /// Default: no limit. For an existing stream, compared with its retention when given
    /// (change it with `PUT /v1/streams/{stream}/retention`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many ms; ≥ 1. Default:
    /// no limit. Compared like `retention_bytes` for an existing stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// The members of a record's value that are personal data, encrypted under their data
    /// subject's key (decision 0030). Fixed for the stream's life. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<PersonalData>,
}

/// A stream's personal data: JSON Pointers (RFC 6901) into each record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    /// The member naming the record's data subject (e.g. `/user_id`): a string of 1..=64
    /// bytes of `[A-Za-z0-9._:@-]` or a non-negative integer, a pseudonymous id (it stays
    /// readable). A record without it is refused (400 `invalid_data_subject`).
    pub subject: String,
    /// The members holding personal data (1..=32 pointers, each ≤ 256 bytes, none inside
    /// another or the subject), e.g. `["/email", "/address/ip"]`. Stored encrypted; read back
    /// decrypted, or as `{"erased": true}` once the subject is erased.
    pub fields: Vec<String>,
}

/// `PUT /v1/streams/{stream}/retention` body: the stream's whole retention, replacing the
/// one in force (a limit left out, or `null`, is no limit). Whole sealed segments beyond
/// either limit are deleted, oldest first, before the answer; the active segment never is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep at least this many bytes per partition; ≥ 1, `null` for no limit.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Keep segments whose newest record is at most this many ms old (by record
    /// timestamps); ≥ 1, `null` for no limit.
    #[serde(default)]
    pub retention_ms: Option<u64>,
}

/// What reads a stream and keeps a position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// A view (its version is named).
    View,
    /// A consumer group.
    Group,
}

/// A reader whose position retention has passed in one partition: the records between its
/// position and `start` were deleted before it read them. A view stops with an error until
/// rebuilt; a group's members continue from `start` once it is reset there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BelowRetention {
    /// `view` or `group`.
    pub kind: ReaderKind,
    /// The view's or the group's name.
    pub name: String,
    /// The view's version (views only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The partition.
    pub partition: u32,
    /// The next offset the reader would read.
    pub position: u64,
    /// The partition's first retained offset (greater than `position`).
    pub start: u64,
}

/// `partitions` as an integer, its errors naming the API's range (1..=256) instead of
/// `u32`'s; the range itself is the server's to check (400 `invalid_stream_config`).
fn partitions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};
    struct Partitions;
    impl Visitor<'_> for Partitions {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an integer from 1 to {}", crate::limits::PARTITIONS_MAX)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Partitions)
}

/// A stream's settings and extent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamInfo {
    /// Name.
    pub stream: String,
    /// Partition count.
    pub partitions: u32,
    /// Distinguishes this stream from a dropped one of the same name.
    pub incarnation: u64,
    /// Fsync policy: `always`, `interval_ms=N` or `never`.
    pub fsync: String,
    /// Segment size in bytes before rolling.
    #[serde(default)]
    pub segment_bytes_max: u64,
    /// Retention in force (`null` limits: none).
    #[serde(default)]
    pub retention: Retention,
    /// Views and consumer groups whose positions retention has passed: what they had not
    /// read is gone. Empty when none.
    #[serde(default)]
    pub below_retention: Vec<BelowRetention>,
    /// What an acknowledged append to this stream guarantees.
    pub ack_guarantee: AckGuarantee,
    /// The stream's personal data, when it declares some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<PersonalData>,
    /// Records retained, over all partitions.
    pub records: u64,
    /// Per partition: first retained offset and next offset to be written.
    pub offsets: Vec<PartitionOffsets>,
}

/// What an acknowledged append guarantees: on how many copies it is, and whether on disk.
/// A single node: `{"replicas": 1, "fsynced": true}` under fsync `always`, `false` under
/// `interval:<ms>` or `never`. A replicated log: its replicas, a majority of which hold an
/// acknowledged record, fsynced there or not (e.g. `{"replicas": 3, "fsynced": false}` on
/// nats-server 2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckGuarantee {
    /// Copies the stream keeps; an acknowledgment means a majority of them hold the record.
    pub replicas: u32,
    /// Whether those copies were fsynced before the acknowledgment.
    pub fsynced: bool,
}

/// One partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionOffsets {
    /// Partition.
    pub partition: u32,
    /// First retained offset.
    pub start: u64,
    /// Next offset to be written.
    pub end: u64,
}

/// `GET /v1/streams/{stream}/offsets?timestamp_ms=T` response: per partition, where the
/// stream was at a time (Kafka's ListOffsets by timestamp), to start reading from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetsAtTime {
    /// The stream.
    pub stream: String,
    /// The time asked for, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Every partition, in order.
    pub partitions: Vec<OffsetAtTime>,
}

/// One partition's first record at or after a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetAtTime {
    /// Partition.
    pub partition: u32,
    /// Offset of the first retained record whose timestamp is at or after the time; the
    /// partition's end (where the next record goes) when none is. Records after it may be
    /// older when their timestamps were chosen by clients out of order. On a cluster the
    /// answer is a binary search over the appended batches, exact while timestamps rise
    /// with the offsets: with client timestamps out of order (or server timestamps from
    /// nodes whose clocks differ, by up to 500 ms) it may be a later record than the first
    /// at or after the time.
    pub offset: u64,
    /// That record's timestamp, ms since the Unix epoch; `null` when `offset` is the end.
    pub timestamp_ms: Option<i64>,
}

/// `GET /v1/streams` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamList {
    /// Every stream, by name.
    pub streams: Vec<StreamInfo>,
    /// The node's limits on streams, and the partitions in use (absent from servers older
    /// than the partition budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<StreamLimits>,
}

/// A node's limits on streams (`GET /v1/streams`): creating a stream past one is refused
/// with a named problem and creates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamLimits {
    /// Most streams, internal ones included (`too_many_streams`).
    pub streams_max: u32,
    /// Most partitions of one stream (`invalid_stream_config`).
    pub partitions_per_stream_max: u32,
    /// The node's partition budget: most partitions of all streams together, internal ones
    /// included (`too_many_partitions`; setting `partitions_max`).
    pub partitions_max: u32,
    /// Partitions of all streams now.
    pub partitions_used: u64,
}

/// One record of an append.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    /// Key: records with the same key go to the same partition, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value: any JSON (`null` is a deletion for table views), kept as sent (so
    /// numbers keep every digit). The server stores its canonical form: members sorted, no
    /// whitespace, numbers by exact decimal value (`1.0` and `1e0` are `1`).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Box<RawValue>,
    /// Headers, name → value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Event time in ms since the epoch (within a day of the server's clock). Default: the
    /// server's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

impl RecordIn {
    /// A record with this value and nothing else.
    pub fn new(value: serde_json::Value) -> Self {
        RecordIn::raw(raw(&value))
    }

    /// A record with this value, as JSON text, and nothing else.
    pub fn raw(value: Box<RawValue>) -> Self {
        RecordIn {
            key: None,
            value,
            headers: None,
            timestamp_ms: None,
        }
    }

    /// The same record with a key.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// A JSON value as text.
pub(crate) fn raw(value: &serde_json::Value) -> Box<RawValue> {
    // Serializing a `Value` cannot fail (its map keys are strings).
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A present field, even `null`, is `Some` (so `"value": null` is a value, a deletion).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// `POST /v1/streams/{stream}/records` body: one record, or `{"records": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// A batch (instead of the single-record fields).
    #[serde(
        default,
        deserialize_with = "crate::objects::option_vec",
        skip_serializing_if = "Option::is_none"
    )]
    pub records: Option<Vec<RecordIn>>,
    /// Single record: key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Single record: value (required for a single record).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub value: Option<Box<RawValue>>,
    /// Single record: headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Single record: event time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

impl AppendBody {
    /// The body of a single-record append.
    pub fn one(r: RecordIn) -> Self {
        AppendBody {
            records: None,
            key: r.key,
            value: Some(r.value),
            headers: r.headers,
            timestamp_ms: r.timestamp_ms,
        }
    }

    /// The body of a batch append.
    pub fn batch(records: Vec<RecordIn>) -> Self {
        AppendBody {
            records: Some(records),
            ..AppendBody::default()
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PositionOut {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// Answer to a single-record append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendOne {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Consistency token of this write (a one-stream token, which always fits
    /// [`crate::limits::TOKEN_BYTES_MAX`]).
    pub token: Option<String>,
    /// True when this was a retry of an `Idempotency-Key` already in the log: nothing was
    /// appended and the original position is returned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// What this acknowledgment guarantees: on how many copies the record is, and whether
    /// fsynced there (the stream's `ack_guarantee` when it was acknowledged). Absent from
    /// servers older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_guarantee: Option<AckGuarantee>,
}

/// Answer to a batch append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendMany {
    /// Positions, in input order.
    pub positions: Vec<PositionOut>,
    /// Consistency token of this write (a one-stream token, which always fits
    /// [`crate::limits::TOKEN_BYTES_MAX`]).
    pub token: Option<String>,
    /// As [`AppendOne::duplicate`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// As [`AppendOne::ack_guarantee`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_guarantee: Option<AckGuarantee>,
}

/// Answer to an append: [`AppendOne`] for a single record, [`AppendMany`] for a batch
/// (`records`). For the OpenAPI document and for clients that send either form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum AppendAnswer {
    /// A single record's position.
    One(AppendOne),
    /// A batch's positions.
    Many(AppendMany),
}

/// A stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordOut {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Key (UTF-8; other bytes replaced).
    pub key: Option<String>,
    /// Value: its JSON, or a JSON string if the stored bytes are not JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Box<RawValue>,
    /// Headers: the record's own, and `request-id` and `traceparent` set from the append's
    /// `Idempotency-Key` and `traceparent`. The log's internal bookkeeping header
    /// (`request-records`) is not shown.
    pub headers: BTreeMap<String, String>,
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: i64,
}

/// `GET /v1/streams/{stream}/records` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordsOut {
    /// Records in offset order.
    pub records: Vec<RecordOut>,
    /// The offset to read from next.
    pub next: u64,
}

/// The kind of one event of the push tail (`GET /v1/streams/{stream}/records/events`, a
/// `text/event-stream` of server-sent events): its `event:` line. The first event of a
/// connection is only an `id:`, the [`EventCursor`] the subscription starts from (with
/// `from=end`, each partition's end when the server answered): no kind, no data. Every
/// event after it but the last is a [`EventKind::Record`]; the last one (there may be none:
/// the connection can just close) says why the subscription ended, its data an
/// [`EventEnd`]. A client resumes with the id of the last event it received, the opening
/// one included, as `Last-Event-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// One record: data a [`RecordOut`] on one line, id the [`EventCursor`] after it.
    Record,
    /// The client read too slowly and the server dropped the subscription: reconnect with
    /// the last event's id as `Last-Event-ID` to resume where it was.
    Dropped,
    /// The subscription reached the longest a subscription lasts on this node (its
    /// `wait_ms_max`): reconnect with the last event's id as `Last-Event-ID` to resume.
    Closed,
    /// The subscription failed on the server (data: the problem document).
    Error,
    /// The server is shutting down.
    Shutdown,
}

impl EventKind {
    /// The `event:` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Record => "record",
            EventKind::Dropped => "dropped",
            EventKind::Closed => "closed",
            EventKind::Error => "error",
            EventKind::Shutdown => "shutdown",
        }
    }

    /// The kind named by an `event:` value; `None` for any other (a client skips those).
    pub fn parse(text: &str) -> Option<EventKind> {
        [
            EventKind::Record,
            EventKind::Dropped,
            EventKind::Closed,
            EventKind::Error,
            EventKind::Shutdown,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// The data of a `dropped`, `closed` or `shutdown` event (an `error` event carries the problem
/// document, which has a `detail` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnd {
    /// Why: a word for `dropped` (`slow_consumer`) and `closed` (`wait_ms_max`), a
    /// sentence for `shutdown`.
    pub reason: String,
    /// More, for a person (the queue's size and limits of a slow consumer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where a push-tail subscription stands: per partition read, the offset of the next record
/// to send. Its text form `P:O,...` (partitions ascending, e.g. `0:12,3:0`) is every
/// event's id (the opening event's: where the subscription starts), the `Last-Event-ID` a
/// client resumes with, and the `from` that starts a subscription at given offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCursor(pub BTreeMap<u32, u64>);

/// A text that is not an [`EventCursor`]: why, naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(pub String);

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (p, o)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}:{o}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for EventCursor {
    type Err = CursorError;

    /// Parses `P:O,...` (empty items are skipped).
    ///
    /// # Errors
    /// An item that is not `PARTITION:OFFSET` of a `u32` and a `u64`, a partition named
    /// twice, or no partition at all.
    fn from_str(text: &str) -> Result<EventCursor, CursorError> {
        let mut cursor = BTreeMap::new();
        for item in text.split(',').filter(|s| !s.is_empty()) {
            let (p, o) = item
                .split_once(':')
                .ok_or_else(|| CursorError(format!("{item:?} is not PARTITION:OFFSET")))?;
            let p: u32 = p
                .parse()
                .map_err(|e| CursorError(format!("partition {p:?}: {e}")))?;
            let o: u64 = o
                .parse()
                .map_err(|e| CursorError(format!("offset {o:?}: {e}")))?;
            if cursor.insert(p, o).is_some() {
                return Err(CursorError(format!("partition {p} is named twice")));
            }
        }
        if cursor.is_empty() {
            return Err(CursorError("names no partition".into()));
        }
        Ok(EventCursor(cursor))
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_say_why() {
        let cursor = EventCursor(BTreeMap::from([(0, 12), (3, 0)]));
        assert_eq!(cursor.to_string(), "0:12,3:0");
        assert_eq!("0:12,3:0".parse::<EventCursor>(), Ok(cursor));
        for (bad, why) in [
            ("", "names no partition"),
            ("0:1,0:2", "named twice"),
            ("x", "is not PARTITION:OFFSET"),
            ("a:1", "partition"),
            ("0:-1", "offset"),
        ] {
            let e = bad.parse::<EventCursor>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn event_kinds_are_named_as_on_the_wire() {
        for kind in ["record", "dropped", "closed", "error", "shutdown"] {
            assert_eq!(EventKind::parse(kind).map(EventKind::as_str), Some(kind));
        }
        assert_eq!(EventKind::parse("message"), None);
    }
}
