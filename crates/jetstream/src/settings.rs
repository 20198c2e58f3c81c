//! The JetStream stream configuration of a Logbook partition, and the check that an existing
//! stream has it.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::error::{JetStreamError, Result};
use crate::limits;
use crate::naming::PartitionRef;

/// How a partition's JetStream stream is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSettings {
    /// Replicas of the stream (1..=5, odd recommended). Default
    /// [`limits::REPLICAS_DEFAULT`] (3): an acknowledged append is on a majority (2).
    pub replicas: u32,
    /// The `Nats-Msg-Id` duplicate window in ms. Default
    /// [`limits::DUPLICATE_WINDOW_MS_DEFAULT`] (2 minutes).
    pub duplicate_window_ms: u64,
    /// How long JetStream keeps a message, in ms (its `max_age`). Default `None`: every
    /// message is kept (a Logbook partition); the request-id claims keep theirs twice the
    /// duplicate window.
    pub max_age_ms: Option<u64>,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings {
            replicas: limits::REPLICAS_DEFAULT,
            duplicate_window_ms: limits::DUPLICATE_WINDOW_MS_DEFAULT,
            max_age_ms: None,
        }
    }
}

impl PartitionSettings {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`JetStreamError::InvalidArgument`] naming `replicas` or `duplicate_window_ms`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=limits::REPLICAS_MAX).contains(&self.replicas) {
            return Err(JetStreamError::InvalidArgument {
                field: "replicas",
                why: format!("{} is outside 1..={}", self.replicas, limits::REPLICAS_MAX),
            });
        }
        if self.duplicate_window_ms == 0 {
            return Err(JetStreamError::InvalidArgument {
                field: "duplicate_window_ms",
                why: "0 would turn off idempotent publish retries".into(),
            });
        }
        if self
            .max_age_ms
            .is_some_and(|age| age < self.duplicate_window_ms)
        {
            return Err(JetStreamError::InvalidArgument {
                field: "max_age_ms",
                why: "shorter than the duplicate window: a duplicate's original could be gone"
                    .into(),
            });
        }
        Ok(())
    }

    /// The JetStream stream configuration for `partition`: file storage, limits retention with
    /// no limits but `max_age_ms` when given, `deny_delete` and `deny_purge` (the log is
    /// append-only; retention comes later, from Logbook), one subject, direct get off (it may
    /// answer from a lagging replica).
    pub(crate) fn stream_config(&self, partition: &PartitionRef) -> Config {
        Config {
            name: partition.jetstream_name(),
            description: Some(partition.description()),
            subjects: vec![partition.subject()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: self.replicas as usize,
            duplicate_window: Duration::from_millis(self.duplicate_window_ms),
            max_age: Duration::from_millis(self.max_age_ms.unwrap_or(0)),
            max_bytes: -1,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            max_message_size: -1,
            deny_delete: true,
            deny_purge: true,
            allow_direct: false,
            ..Config::default()
        }
    }
}

/// Checks that an existing stream's configuration `found` is the one `expected` asks for, in
/// every setting Logbook relies on.
///
/// # Errors
/// [`JetStreamError::StreamSettingsDiffer`] naming the first setting that differs.
pub(crate) fn check_same(expected: &Config, found: &Config) -> Result<()> {
    macro_rules! same {
        ($field:literal, $($path:tt)+) => {
            if found.$($path)+ != expected.$($path)+ {
                return Err(JetStreamError::StreamSettingsDiffer {
                    stream: expected.name.clone(),
                    field: $field,
                    found: format!("{:?}", found.$($path)+),
                    expected: format!("{:?}", expected.$($path)+),
                });
            }
        };
    }
    same!("description", description);
    same!("subjects", subjects);
    same!("replicas", num_replicas);
    same!("storage", storage);
    same!("retention", retention);
    same!("discard", discard);
    same!("deny_delete", deny_delete);
    same!("deny_purge", deny_purge);
    same!("duplicate_window", duplicate_window);
    same!("max_bytes", max_bytes);
    same!("max_msgs", max_messages);
    same!("max_msgs_per_subject", max_messages_per_subject);
    same!("max_age", max_age);
    same!("sealed", sealed);
    same!("allow_rollup_hdrs", allow_rollup);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_r3_file_storage_no_delete_no_purge() {
        let config = PartitionSettings::default().stream_config(&PartitionRef::new("s", 1, 0));
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.storage, StorageType::File);
        assert!(config.deny_delete && config.deny_purge);
        assert!(!config.allow_direct);
    }

    #[test]
    fn a_different_replica_count_is_named() {
        let p = PartitionRef::new("s", 1, 0);
        let expected = PartitionSettings::default().stream_config(&p);
        let mut found = expected.clone();
        found.num_replicas = 1;
        match check_same(&expected, &found) {
            Err(JetStreamError::StreamSettingsDiffer {
                field,
                found,
                expected,
                ..
            }) => {
                assert_eq!(
                    (field, found.as_str(), expected.as_str()),
                    ("replicas", "1", "3")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(check_same(&expected, &expected.clone()).is_ok());
    }

    #[test]
    fn bad_settings_name_their_field() {
        let zero = PartitionSettings {
            replicas: 0,
            ..PartitionSettings::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(JetStreamError::InvalidArgument {
                field: "replicas",
                ..
            })
        ));
        let no_window = PartitionSettings {
            duplicate_window_ms: 0,
            ..PartitionSettings::default()
        };
        assert!(matches!(
            no_window.validate(),
            Err(JetStreamError::InvalidArgument {
                field: "duplicate_window_ms",
                ..
            })
        ));
    }
}
