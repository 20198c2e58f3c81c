//! Stream settings, fsync policies and the clock.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::dedup::RequestIdWindow;
use crate::error::{LogError, Result};
use crate::limits;

/// When an append is acknowledged, and so what a crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum FsyncPolicy {
    /// Acknowledge only after the batch is written and `fdatasync` returned (the default).
    /// Concurrent appends share one fdatasync (group commit). A crash or power loss loses
    /// nothing acknowledged.
    #[default]
    Always,
    /// Acknowledge after the batch is written to the OS page cache; `fdatasync` at most every
    /// `interval_ms` ms while there are unsynced bytes, and when a segment rolls or the log
    /// closes. **Risk:** a power loss or kernel crash loses up to the last `interval_ms` ms of
    /// acknowledged appends (a process crash alone loses nothing: the page cache survives).
    Interval {
        /// Longest time acknowledged bytes stay unsynced, ms.
        interval_ms: u64,
    },
    /// Acknowledge after the write to the page cache; `fdatasync` only when a segment rolls
    /// or the log closes. **Risk:** a power loss or kernel crash loses every acknowledged
    /// append since the last roll — up to a whole segment. For data you can recreate.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval { interval_ms } => write!(f, "interval_ms={interval_ms}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    /// Parses `always`, `never` or `interval_ms=N` (also `interval:N`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => {
                let ms = other
                    .strip_prefix("interval_ms=")
                    .or_else(|| other.strip_prefix("interval:"))
                    .ok_or_else(|| {
                        format!(
                            "unknown fsync policy {other:?}: use always, interval_ms=N or never"
                        )
                    })?;
                let interval_ms =
                    ms.parse::<u64>().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("interval_ms must be a positive integer, got {ms:?}")
                    })?;
                Ok(FsyncPolicy::Interval { interval_ms })
            }
        }
    }
}

/// How much of a stream is kept: the only settings that change after creation
/// ([`crate::Log::set_retention`]). Whole sealed segments beyond either limit are deleted,
/// oldest first; the active segment never is, and offsets are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    /// Keep at least this many bytes per partition, deleting older whole segments. `None`
    /// (the default): no limit.
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many ms (by record
    /// timestamps). `None` (the default): no limit.
    pub retention_ms: Option<u64>,
}

impl Retention {
    /// Checks both limits; the error names the field.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] for a limit of 0 (omit it for no limit).
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("retention_bytes", self.retention_bytes),
            ("retention_ms", self.retention_ms),
        ] {
            if value == Some(0) {
                return Err(LogError::InvalidConfig {
                    field,
                    value: "0".into(),
                    reason: "must be positive (omit it for no limit)".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.retention_bytes.is_some() || self.retention_ms.is_some()
    }
}

/// Settings of a stream, fixed at creation except its [`Retention`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Number of partitions, 1 ..= [`limits::PARTITIONS_MAX`]. Fixed for the stream's life,
    /// so a key's partition never changes.
    pub partitions: u32,
    /// A segment is rolled when the next batch would take it past this many bytes.
    /// [`limits::SEGMENT_BYTES_MIN`] ..= [`limits::SEGMENT_BYTES_MAX_LIMIT`]; default
    /// [`limits::SEGMENT_BYTES_DEFAULT`] (128 MiB).
    pub segment_bytes_max: u64,
    /// Keep at least this many bytes per partition, deleting older whole segments. Default:
    /// no limit.
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many ms (by record
    /// timestamps). Default: no limit.
    pub retention_ms: Option<u64>,
    /// When appends are acknowledged. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// How long request ids are remembered for deduplication (default: 1,000,000 ids or
    /// 7 days, whichever forgets first). See [`crate::dedup`].
    #[serde(default)]
    pub request_ids: RequestIdWindow,
    /// Which members of a record's JSON value are personal data, and which names its data
    /// subject (issue 19, decision 0030). Stored with the stream so that it holds before the
    /// first record; the log neither reads nor checks it (the server does: it encrypts those
    /// members before appending). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<PersonalData>,
}

/// A stream's declaration of personal data: JSON Pointers (RFC 6901) into a record's value.
/// What they must look like is the server's to check (`logbook-server`'s `privacy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    /// The member naming the record's data subject, e.g. `/user_id`.
    pub subject: String,
    /// The members holding personal data, e.g. `["/email", "/address/ip"]`.
    pub fields: Vec<String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            partitions: 1,
            segment_bytes_max: limits::SEGMENT_BYTES_DEFAULT,
            retention_bytes: None,
            retention_ms: None,
            fsync: FsyncPolicy::Always,
            request_ids: RequestIdWindow::default(),
            personal_data: None,
        }
    }
}

impl StreamConfig {
    /// Its retention limits.
    pub fn retention(&self) -> Retention {
        Retention {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
        }
    }

    /// Default settings with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        StreamConfig {
            partitions,
            ..StreamConfig::default()
        }
    }

    /// Checks every setting; the error names the field.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, value: String, reason: String| {
            Err(LogError::InvalidConfig {
                field,
                value,
                reason,
            })
        };
        if self.partitions == 0 || self.partitions > limits::PARTITIONS_MAX {
            return invalid(
                "partitions",
                self.partitions.to_string(),
                format!("must be 1 ..= {}", limits::PARTITIONS_MAX),
            );
        }
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX_LIMIT)
            .contains(&self.segment_bytes_max)
        {
            return invalid(
                "segment_bytes_max",
                self.segment_bytes_max.to_string(),
                format!(
                    "must be {} ..= {} bytes",
                    limits::SEGMENT_BYTES_MIN,
                    limits::SEGMENT_BYTES_MAX_LIMIT
                ),
            );
        }
        self.retention().validate()?;
        if self.request_ids.max_ids == 0 {
            return invalid("request_ids.max_ids", "0".into(), "must be positive".into());
        }
        if self.request_ids.max_age_ms == 0 {
            return invalid(
                "request_ids.max_age_ms",
                "0".into(),
                "must be positive".into(),
            );
        }
        if let FsyncPolicy::Interval { interval_ms: 0 } = self.fsync {
            return invalid("fsync.interval_ms", "0".into(), "must be positive".into());
        }
        Ok(())
    }
}

/// Wall-clock time for record timestamps and age-based retention — never for ordering.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Checks a stream name: 1 ..= [`limits::STREAM_NAME_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`,
/// not starting with `.` (names starting with `.` are reserved for the log's own use).
///
/// # Errors
/// [`LogError::InvalidStreamName`].
pub fn validate_stream_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > limits::STREAM_NAME_BYTES_MAX as usize {
        Some("longer than 128 bytes")
    } else if name.starts_with('.') {
        Some("must not start with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        Some("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LogError::InvalidStreamName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse_and_print() {
        for text in ["always", "never", "interval_ms=50"] {
            let policy: FsyncPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert!("interval_ms=0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn config_errors_name_the_field() {
        let field = |c: StreamConfig| match c.validate() {
            Err(LogError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(field(StreamConfig::with_partitions(0)), "partitions");
        assert_eq!(field(StreamConfig::with_partitions(257)), "partitions");
        let mut c = StreamConfig::with_partitions(1);
        c.segment_bytes_max = 10;
        assert_eq!(field(c), "segment_bytes_max");
        let mut c = StreamConfig::with_partitions(1);
        c.retention_bytes = Some(0);
        assert_eq!(field(c), "retention_bytes");
        let mut c = StreamConfig::with_partitions(1);
        c.retention_ms = Some(0);
        assert_eq!(field(c), "retention_ms");
        assert!(StreamConfig::with_partitions(4).validate().is_ok());
    }

    #[test]
    fn stream_names() {
        for ok in ["flights", "a", "A.b_c-9", &"x".repeat(128)] {
            assert!(validate_stream_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(129), ".."] {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
    }
}
