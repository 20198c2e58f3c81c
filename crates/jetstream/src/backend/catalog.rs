//! The catalog is a log too: one internal JetStream stream holds the stream definitions, and
//! every backend instance derives its list of streams from it.
//!
//! ```text
//!  catalog partition ("catalog/", incarnation 0, partition 0 — not a valid stream name, so
//!  no user partition shares its JetStream stream), one record per message, key = name:
//!    offset 0        {"op":"create","name":"orders","config":{…},"replicas":3,…}
//!    offset 65,536   {"op":"create","name":"audit",…}
//!    offset 131,072  {"op":"drop","name":"orders","incarnation":0}
//!  a stream's incarnation = the offset of its create record (every node agrees)
//! ```
//!
//! Writers append under `Nats-Expected-Last-Sequence` = the last catalog sequence they have
//! applied, after checking the name against everything up to it: two nodes creating the same
//! name race, one append wins, the other re-reads and finds the name taken (the same settings:
//! it opens that stream; others: `StreamExists`). Applying is deterministic: the first live
//! create of a name wins, a drop removes the incarnation it names. Records of an unknown `op`
//! (a later version's) are skipped; a record that does not parse stops the catalog with an
//! error rather than letting nodes disagree.
//!
//! Nodes follow the catalog: a core NATS subscription on its subject wakes a refresh at each
//! new record (with a periodic refresh as a fallback), and a name not known locally is looked
//! up in the catalog before it is reported unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use logbook_log::format::encode_batch;
use logbook_log::{LogError, Record, Result, StreamConfig, limits as log_limits};
use serde::{Deserialize, Serialize};

use super::{BACKEND, log_error, now_ms};
use crate::error::JetStreamError;
use crate::partition::{AppendOptions, JetStreamPartition};
use crate::settings::PartitionSettings;

/// The Logbook stream name of the catalog's partition: the `/` makes it invalid as a user
/// stream's name, so no user partition ever hashes to the catalog's JetStream stream.
pub(crate) const CATALOG_STREAM: &str = "catalog/";
/// Records read per catalog request while refreshing.
const REFRESH_PAGE: usize = 256;
/// How often a follower refreshes without a wake-up (a lost subscription message).
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// Appends a create or drop tries before giving up on a catalog that keeps moving.
const APPEND_ATTEMPTS: usize = 64;

/// One catalog record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    /// A stream is created with these settings.
    Create {
        name: String,
        config: StreamConfig,
        replicas: u32,
        duplicate_window_ms: u64,
    },
    /// The incarnation `incarnation` of stream `name` is dropped.
    Drop { name: String, incarnation: u64 },
    /// A record of a later version; skipped.
    #[serde(other)]
    Unknown,
}

/// A live stream as the catalog defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Definition {
    pub(crate) name: String,
    /// The offset of its create record.
    pub(crate) incarnation: u64,
    pub(crate) config: StreamConfig,
    /// Its partitions' JetStream settings (replicas, duplicate window).
    pub(crate) settings: PartitionSettings,
}

/// What this node has applied of the catalog.
#[derive(Debug, Default)]
struct State {
    /// Where the next read starts: the record after the last one applied.
    next: u64,
    /// The sequence of the last record applied (0: none): the precondition of an append.
    last_sequence: u64,
    live: BTreeMap<String, Definition>,
    /// "Dropped" flags of the incarnations handles were opened for.
    closed: HashMap<(String, u64), Arc<AtomicBool>>,
}

/// The catalog as this node follows it.
#[derive(Debug)]
pub(crate) struct Catalog {
    partition: JetStreamPartition,
    state: Mutex<State>,
    /// One refresh at a time, so records are applied once and in order.
    refreshing: tokio::sync::Mutex<()>,
}

/// What a catalog write does next.
enum Step<T> {
    /// Nothing (more) to append.
    Done(T),
    /// Append this record.
    Append(Entry),
}

/// The outcome of a create.
pub(crate) enum Created {
    /// The definition (new, or an existing one with the same settings).
    Stream(Definition),
    /// The name is taken with other settings.
    Exists,
}

impl Catalog {
    pub(crate) fn new(partition: JetStreamPartition) -> Catalog {
        Catalog {
            partition,
            state: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole; a panic elsewhere changes nothing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live stream's definition, as last applied.
    pub(crate) fn definition(&self, name: &str) -> Option<Definition> {
        self.state().live.get(name).cloned()
    }

    /// Names of the live streams, sorted, as last applied.
    pub(crate) fn names(&self) -> Vec<String> {
        self.state().live.keys().cloned().collect()
    }

    /// The flag that tells handles of `name`'s incarnation `incarnation` it was dropped
    /// (already set if it is no longer live).
    pub(crate) fn closed_flag(&self, name: &str, incarnation: u64) -> Arc<AtomicBool> {
        let mut state = self.state();
        let live = state
            .live
            .get(name)
            .is_some_and(|d| d.incarnation == incarnation);
        state
            .closed
            .entry((name.to_string(), incarnation))
            .or_insert_with(|| Arc::new(AtomicBool::new(!live)))
            .clone()
    }

    /// Reads and applies every catalog record after the last one applied.
    ///
    /// # Errors
    /// The catalog's read errors; [`LogError::Backend`] for a record that does not parse.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        loop {
            let from = self.state().next;
            let records = self
                .partition
                .read(from, REFRESH_PAGE)
                .await
                .map_err(log_error)?;
            let Some(last) = records.last() else {
                return Ok(());
            };
            let next = last.offset + 1;
            let mut state = self.state();
            for record in &records {
                apply(&mut state, record.offset, &record.value)?;
            }
            state.next = next;
            state.last_sequence = crate::offset::position_of(next - 1).0;
        }
    }

    /// Creates `name` with `config` unless it exists: appends a create record under the
    /// catalog's last sequence, re-reading when another node wrote first.
    ///
    /// # Errors
    /// [`LogError::TooManyStreams`], the catalog's append and read errors
    /// ([`LogError::Unavailable`] once `retry` has passed).
    pub(crate) async fn create(
        &self,
        name: &str,
        config: &StreamConfig,
        settings: &PartitionSettings,
        retry: Duration,
    ) -> Result<Created> {
        self.write(name, retry, |catalog| match catalog.definition(name) {
            Some(d) if d.config == *config => Ok(Step::Done(Created::Stream(d))),
            Some(_) => Ok(Step::Done(Created::Exists)),
            None if catalog.state().live.len() >= log_limits::STREAMS_MAX as usize => {
                Err(LogError::TooManyStreams {
                    max: log_limits::STREAMS_MAX,
                })
            }
            None => Ok(Step::Append(Entry::Create {
                name: name.to_string(),
                config: config.clone(),
                replicas: settings.replicas,
                duplicate_window_ms: settings.duplicate_window_ms,
            })),
        })
        .await
    }

    /// Drops the live incarnation of `name`: appends a drop record under the catalog's last
    /// sequence. Returns the dropped definition.
    ///
    /// # Errors
    /// [`LogError::UnknownStream`]; the catalog's append and read errors.
    pub(crate) async fn drop_stream(&self, name: &str, retry: Duration) -> Result<Definition> {
        let mut target: Option<Definition> = None;
        self.write(name, retry, |catalog| {
            match (catalog.definition(name), target.take()) {
                (None, None) => Err(LogError::UnknownStream {
                    name: name.to_string(),
                }),
                (None, Some(dropped)) => Ok(Step::Done(dropped)),
                // Dropped (by us or another node) and created again meanwhile: ours is done.
                (Some(d), Some(dropped)) if d.incarnation != dropped.incarnation => {
                    Ok(Step::Done(dropped))
                }
                (Some(d), _) => {
                    let entry = Entry::Drop {
                        name: d.name.clone(),
                        incarnation: d.incarnation,
                    };
                    target = Some(d);
                    Ok(Step::Append(entry))
                }
            }
        })
        .await
    }

    /// The write loop of the catalog: refresh, let `decide` look at the applied state and
    /// either finish or name the record to append; append it under the last sequence applied
    /// (refused if another node wrote since); repeat. The record, once stored, is applied by
    /// the next refresh, where `decide` sees it.
    async fn write<T>(
        &self,
        name: &str,
        retry: Duration,
        mut decide: impl FnMut(&Catalog) -> Result<Step<T>>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + retry;
        let mut pause = Duration::from_millis(10);
        let mut last_error = None;
        for _ in 0..APPEND_ATTEMPTS {
            self.refresh().await?;
            let entry = match decide(self)? {
                Step::Done(done) => return Ok(done),
                Step::Append(entry) => entry,
            };
            let last_sequence = self.state().last_sequence;
            match self.append(name, &entry, last_sequence).await {
                Ok(()) | Err(JetStreamError::WrongLastSequence { .. }) => {}
                // Stored or not, the next refresh tells; nothing was stored when unavailable.
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    last_error = Some(e);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(log_error(e)),
            }
        }
        Err(match last_error {
            Some(e) => log_error(e),
            None => LogError::Unavailable {
                backend: BACKEND,
                why: format!("the catalog kept moving for {APPEND_ATTEMPTS} attempts"),
            },
        })
    }

    async fn append(
        &self,
        name: &str,
        entry: &Entry,
        last_sequence: u64,
    ) -> Result<(), JetStreamError> {
        let value = serde_json::to_vec(entry).map_err(|e| JetStreamError::InvalidArgument {
            field: "catalog record",
            why: e.to_string(),
        })?;
        let batch = encode_batch(&[Record::keyed(name, value)], now_ms()).map_err(|e| {
            JetStreamError::InvalidArgument {
                field: "catalog record",
                why: e.to_string(),
            }
        })?;
        let options = AppendOptions {
            expected_last_sequence: Some(last_sequence),
            message_id: None,
        };
        self.partition.append(batch, &options).await.map(|_| ())
    }

    /// Follows the catalog until the runtime stops: refreshes at each record published on
    /// its subject, and every [`FOLLOW_INTERVAL`] in case a wake-up was missed.
    pub(crate) async fn follow(self: Arc<Self>, client: async_nats::Client) {
        let subject = self.partition.partition().subject();
        let mut wakeups = client.subscribe(subject).await.ok();
        loop {
            match wakeups.as_mut() {
                Some(sub) => {
                    if let Ok(None) = tokio::time::timeout(FOLLOW_INTERVAL, sub.next()).await {
                        wakeups = None; // The subscription ended: poll from now on.
                    }
                }
                None => tokio::time::sleep(FOLLOW_INTERVAL).await,
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "refreshing the JetStream catalog failed");
            }
        }
    }
}

/// Applies one record at `offset`.
fn apply(state: &mut State, offset: u64, value: &[u8]) -> Result<()> {
    let entry: Entry = serde_json::from_slice(value).map_err(|e| LogError::Backend {
        backend: BACKEND,
        detail: format!("catalog record at offset {offset} does not parse: {e}"),
    })?;
    match entry {
        Entry::Create {
            name,
            config,
            replicas,
            duplicate_window_ms,
        } => {
            state.live.entry(name.clone()).or_insert(Definition {
                name,
                incarnation: offset,
                config,
                settings: PartitionSettings {
                    replicas,
                    duplicate_window_ms,
                    max_age_ms: None,
                },
            });
        }
        Entry::Drop { name, incarnation } => {
            if state
                .live
                .get(&name)
                .is_some_and(|d| d.incarnation == incarnation)
            {
                state.live.remove(&name);
                if let Some(flag) = state.closed.get(&(name, incarnation)) {
                    flag.store(true, Ordering::Release);
                }
            }
        }
        Entry::Unknown => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: u32) -> Vec<u8> {
        serde_json::to_vec(&Entry::Create {
            name: name.into(),
            config: StreamConfig::with_partitions(partitions),
            replicas: 3,
            duplicate_window_ms: 1000,
        })
        .unwrap_or_default()
    }

    #[test]
    fn the_first_create_wins_and_a_drop_removes_only_its_incarnation() {
        let mut state = State::default();
        apply(&mut state, 0, &create("a", 1)).ok();
        apply(&mut state, 65_536, &create("a", 2)).ok();
        assert_eq!(state.live["a"].incarnation, 0);
        assert_eq!(state.live["a"].config.partitions, 1);
        let flag = Arc::new(AtomicBool::new(false));
        state.closed.insert(("a".into(), 0), flag.clone());
        let stale = br#"{"op":"drop","name":"a","incarnation":65536}"#;
        apply(&mut state, 131_072, stale).ok();
        assert!(state.live.contains_key("a") && !flag.load(Ordering::Acquire));
        apply(
            &mut state,
            196_608,
            br#"{"op":"drop","name":"a","incarnation":0}"#,
        )
        .ok();
        assert!(!state.live.contains_key("a") && flag.load(Ordering::Acquire));
        apply(&mut state, 262_144, &create("a", 4)).ok();
        assert_eq!(state.live["a"].incarnation, 262_144, "a new incarnation");
    }

    #[test]
    fn unknown_ops_are_skipped_and_garbage_is_an_error() {
        let mut state = State::default();
        assert!(apply(&mut state, 0, br#"{"op":"grant","who":"x"}"#).is_ok());
        assert!(state.live.is_empty());
        assert!(matches!(
            apply(&mut state, 0, b"not json"),
            Err(LogError::Backend { .. })
        ));
    }
}
