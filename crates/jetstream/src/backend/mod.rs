//! [`JetStreamBackend`]: Logbook's log on NATS JetStream behind the log crate's seam
//! ([`LogBackend`], [`LogStream`], [`LogPartition`](logbook_log::LogPartition);
//! docs/decisions/0011), so the views engine, the transaction store and the server run on it
//! unchanged.
//!
//! ```text
//!  LogBackend  create / stream / names / drop ──▶ catalog (one JetStream stream, followed)
//!  LogStream   append_batch: group by key, check every share ──▶ one publish task each
//!  LogPartition append (+ EndOffset → expected last sequence), read, waits
//!               ──▶ JetStream stream LB_<hash(name, incarnation, p)>   (crate::partition)
//!  all I/O on the backend's own tokio runtime; blocking calls wait on it from the caller's
//!  thread, completions and end_offset_above are resolved by its tasks
//! ```
//!
//! What differs from the embedded log, as the seam allows:
//! * offsets have gaps (`(sequence − 1)·2^16 + index`, [`crate::offset`]);
//! * an acknowledgment means a majority of the stream's replicas hold the batch, fsynced only
//!   where every server is nats-server ≥ 2.10 with `sync_interval: always`
//!   ([`LogStream::ack_guarantee`]; decision 0010). A stream asking for an `fsync` the
//!   cluster cannot honour (`always` or `interval_ms` without it) is refused with
//!   [`LogError::InvalidConfig`] naming `fsync`; so are retention limits (JetStream streams of
//!   Logbook partitions deny deletes);
//! * `end_offset` is the end this handle observed last (its acknowledgments, reads, waits);
//!   `durable_offset` equals it; `record_count` counts batches;
//! * appends with a request id ([`LogStream::append_with_id`]) are exactly once across
//!   nodes through `Nats-Msg-Id` within the duplicate window and each node's request-id index
//!   (in memory, derived from the log) beyond it (`request_ids`); on a stream of several
//!   partitions a request first claims its id for the stream (`claims`), so the same id with
//!   another body is refused whichever partition it maps to;
//! * unavailability (no responders, an election) is retried for
//!   [`BackendSettings::retry_ms`], then reported as [`LogError::Unavailable`]; a publish
//!   never answered as [`LogError::OutcomeUnknown`] — never as a failure.
//!
//! One Logbook cluster per NATS account: every backend connected to it shares the catalog.

mod catalog;
mod claims;
mod partition;
mod request_ids;
mod runtime;
mod stream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use logbook_log::storage::OsStorage;
use logbook_log::{
    FsyncPolicy, HashKey, LogBackend, LogError, LogStream, Result, StreamConfig,
    validate_stream_name,
};

use self::catalog::{CATALOG_STREAM, Catalog, Created, Definition};
use self::claims::Claims;
use self::partition::JsPartition;
use self::request_ids::CheckpointFile;
use self::runtime::Runtime;
use self::stream::JsStream;
use crate::ack::Durability;
use crate::client::{ConnectSettings, JetStreamLog};
use crate::error::JetStreamError;
use crate::naming::PartitionRef;
use crate::partition::{JetStreamPartition, PartitionState};
use crate::settings::PartitionSettings;

/// The backend's name in [`LogError`]s.
pub(crate) const BACKEND: &str = "jetstream";

/// Default of [`BackendSettings::retry_ms`].
pub const RETRY_MS_DEFAULT: u64 = 10_000;
/// Default of [`BackendSettings::runtime_threads`].
pub const RUNTIME_THREADS_DEFAULT: usize = 2;

/// How a [`JetStreamBackend`] connects and creates streams.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// The NATS servers and request deadline.
    pub connect: ConnectSettings,
    /// Replicas and duplicate window of the catalog and of every stream created through this
    /// backend (a stream keeps the ones it was created with, whoever opens it).
    pub partitions: PartitionSettings,
    /// Monitoring URLs (`http://host:port`) of every server of the cluster, read for what an
    /// acknowledgment guarantees ([`crate::ack`]) when connecting and again at each
    /// reconnection; none: not fsynced (it cannot be confirmed). Default none.
    pub monitor_urls: Vec<String>,
    /// How long, in ms, an append, create or drop is retried while the cluster is
    /// unavailable (an election, no responders) before it is reported. Default
    /// [`RETRY_MS_DEFAULT`]; well below the duplicate window, so a retried publish is stored
    /// once.
    pub retry_ms: u64,
    /// Worker threads of the backend's runtime. Default [`RUNTIME_THREADS_DEFAULT`].
    pub runtime_threads: usize,
    /// This node's directory for the request-id indexes' checkpoints (one file per stream)
    /// and the key they are hashed under (`hash.key`, made on first use): a restart then
    /// reads only the log after the checkpoint. Default `None`: the indexes live in memory
    /// and a restart reads each stream's whole log before its first append with an id.
    pub checkpoint_dir: Option<PathBuf>,
}

impl BackendSettings {
    /// Settings for the servers at `urls`, with the defaults.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        BackendSettings {
            connect: ConnectSettings::new(urls),
            partitions: PartitionSettings::default(),
            monitor_urls: Vec::new(),
            retry_ms: RETRY_MS_DEFAULT,
            runtime_threads: RUNTIME_THREADS_DEFAULT,
            checkpoint_dir: None,
        }
    }

    fn retry(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }
}

/// Logbook's log on a NATS JetStream cluster, as a [`LogBackend`]. Cheap to share
/// (`Arc<dyn LogBackend>`); the connection, the runtime and the catalog follower live until
/// the last handle (backend, stream or partition) is dropped.
#[derive(Debug)]
pub struct JetStreamBackend {
    runtime: Arc<Runtime>,
    log: JetStreamLog,
    catalog: Arc<Catalog>,
    settings: BackendSettings,
    /// What acknowledgments guarantee on this cluster, as last read from its servers
    /// (decision 0010).
    durability: Arc<Durability>,
    /// The request ids' claims on their streams (`claims`).
    claims: Arc<Claims>,
    /// The checkpoints' directory and this node's hash key, when checkpointed.
    checkpoints: Option<(PathBuf, HashKey)>,
    /// Streams opened through this backend, by name.
    open: Mutex<HashMap<String, Arc<JsStream>>>,
}

impl JetStreamBackend {
    /// Connects to the cluster, reads what its acknowledgments guarantee (a server whose
    /// monitoring URL cannot be read makes them "not fsynced" until it is read: the reads are
    /// retried in the background, and made again at each reconnection), creates or opens the
    /// catalog (retrying while the cluster elects its leaders, up to `retry_ms`) and starts
    /// following it. Blocks; call it where blocking is allowed.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] for bad settings (naming the field);
    /// [`LogError::Unavailable`] when no server accepts or the cluster is not ready in time;
    /// [`LogError::Backend`] for a catalog (or claims) stream with other settings;
    /// [`LogError::Io`] / [`LogError::Corrupt`] when the checkpoint directory or its key
    /// cannot be made or read.
    pub fn connect(settings: BackendSettings) -> Result<JetStreamBackend> {
        settings.partitions.validate().map_err(log_error)?;
        if settings.retry_ms == 0 {
            return Err(LogError::InvalidConfig {
                field: "retry_ms",
                value: "0".into(),
                reason: "must be > 0".into(),
            });
        }
        let checkpoints = match &settings.checkpoint_dir {
            Some(dir) => Some((dir.clone(), checkpoint_key(dir)?)),
            None => None,
        };
        let runtime =
            Arc::new(
                Runtime::new(settings.runtime_threads).map_err(|e| LogError::Backend {
                    backend: BACKEND,
                    detail: format!("cannot start the backend's runtime: {e}"),
                })?,
            );
        let s = settings.clone();
        let durability = Arc::new(Durability::new(
            &settings.monitor_urls,
            Duration::from_millis(crate::limits::REQUEST_TIMEOUT_MS_DEFAULT),
        ));
        let d = durability.clone();
        let (log, catalog, claims) = runtime.block_on(async move {
            let log = JetStreamLog::connect(&s.connect).await.map_err(log_error)?;
            d.read().await;
            tokio::spawn(d.follow(log.reconnects()));
            let catalog_ref = PartitionRef::new(CATALOG_STREAM, 0, 0);
            let (partition, _) = open_partition(&log, &catalog_ref, &s.partitions, s.retry())
                .await
                .map_err(log_error)?;
            let catalog = Arc::new(Catalog::new(partition));
            catalog.refresh().await?;
            let claims_settings = Claims::settings(&s.partitions);
            let claims = open_partition(&log, &Claims::reference(), &claims_settings, s.retry())
                .await
                .map_err(log_error)?;
            Ok::<_, LogError>((log, catalog, claims))
        })??;
        let (claims_partition, claims_state) = claims;
        let claims = Arc::new(Claims::new(
            claims_partition,
            &claims_state,
            runtime.clone(),
            Duration::from_millis(settings.partitions.duplicate_window_ms),
            settings.retry(),
        ));
        runtime.spawn(catalog.clone().follow(log.client().clone()));
        Ok(JetStreamBackend {
            runtime,
            log,
            catalog,
            settings,
            durability,
            claims,
            checkpoints,
            open: Mutex::default(),
        })
    }

    /// What this cluster's acknowledgments guarantee, as last read from its servers: shared,
    /// so it stays current (e.g. for `GET /v1/cluster`).
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    /// The replicas of the streams this backend creates.
    pub fn replicas(&self) -> u32 {
        self.settings.partitions.replicas
    }

    fn open_streams(&self) -> MutexGuard<'_, HashMap<String, Arc<JsStream>>> {
        // Only inserts and removals of whole handles happen under this lock.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle on the stream `definition` defines: the cached one of that incarnation, or
    /// one made by creating or opening each partition's JetStream stream (idempotent, so a
    /// creator that died between its catalog record and its partitions is completed here).
    fn handle(&self, definition: Definition) -> Result<Arc<JsStream>> {
        if let Some(s) = self.open_streams().get(&definition.name)
            && s.incarnation() == definition.incarnation
        {
            return Ok(s.clone());
        }
        let log = self.log.clone();
        let d = definition.clone();
        let retry = self.settings.retry();
        let opened = self.runtime.block_on(async move {
            let mut out = Vec::with_capacity(d.config.partitions as usize);
            for p in 0..d.config.partitions {
                let reference = PartitionRef::new(d.name.as_str(), d.incarnation, p);
                out.push(open_partition(&log, &reference, &d.settings, retry).await?);
            }
            Ok::<_, JetStreamError>(out)
        })?;
        let closed = self
            .catalog
            .closed_flag(&definition.name, definition.incarnation);
        let partitions = opened
            .map_err(log_error)?
            .into_iter()
            .map(|(inner, state)| {
                JsPartition::new(inner, &state, self.runtime.clone(), closed.clone(), retry)
            })
            .collect();
        let stream = Arc::new(JsStream::new(
            definition.clone(),
            partitions,
            self.durability.clone(),
            self.claims.clone(),
            self.checkpoint_file(&definition),
            closed,
        ));
        self.open_streams()
            .insert(definition.name.clone(), stream.clone());
        Ok(stream)
    }

    /// Where the request-id index of `definition`'s incarnation is checkpointed, if anywhere.
    fn checkpoint_file(&self, definition: &Definition) -> Option<CheckpointFile> {
        let (dir, key) = self.checkpoints.as_ref()?;
        let name = PartitionRef::new(definition.name.as_str(), definition.incarnation, 0);
        Some(CheckpointFile {
            path: dir.join(format!("{}.request-ids", name.jetstream_name())),
            key: *key,
        })
    }

    /// Refuses settings this backend cannot honour, naming the field.
    fn check_supported(&self, config: &StreamConfig) -> Result<()> {
        let fsync_honoured = match config.fsync {
            FsyncPolicy::Never => true,
            FsyncPolicy::Always | FsyncPolicy::Interval { .. } => self.durability.fsynced(),
        };
        if !fsync_honoured {
            return Err(LogError::InvalidConfig {
                field: "fsync",
                value: config.fsync.to_string(),
                reason: "acknowledgments of this JetStream cluster are not known to be fsynced \
                         (nats-server 2.9 has no fsync setting; ≥ 2.10 needs sync_interval: \
                         always, confirmed through every server's monitoring URL): use fsync \
                         never, or run the cluster with sync_interval: always and give the \
                         node the servers' monitoring URLs"
                    .into(),
            });
        }
        let retention = [
            ("retention_bytes", config.retention_bytes),
            ("retention_ms", config.retention_ms),
        ];
        if let Some((field, Some(value))) = retention.into_iter().find(|(_, v)| v.is_some()) {
            return Err(LogError::InvalidConfig {
                field,
                value: value.to_string(),
                reason: "the JetStream backend keeps every record (its streams deny deletes); \
                         retention is not available on it yet"
                    .into(),
            });
        }
        Ok(())
    }
}

impl LogBackend for JetStreamBackend {
    fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<dyn LogStream>> {
        validate_stream_name(name)?;
        config.validate()?;
        self.check_supported(&config)?;
        let catalog = self.catalog.clone();
        let (n, c, s) = (name.to_string(), config, self.settings.partitions.clone());
        let retry = self.settings.retry();
        let created = self
            .runtime
            .block_on(async move { catalog.create(&n, &c, &s, retry).await })??;
        match created {
            Created::Stream(definition) => Ok(self.handle(definition)?),
            Created::Exists => Err(LogError::StreamExists {
                name: name.to_string(),
            }),
        }
    }

    /// From the catalog as last applied; a name not found there is looked up in the catalog
    /// (created on another node moments ago) before it is reported unknown.
    fn stream(&self, name: &str) -> Result<Arc<dyn LogStream>> {
        let definition = match self.catalog.definition(name) {
            Some(d) => d,
            None => {
                let catalog = self.catalog.clone();
                self.runtime
                    .block_on(async move { catalog.refresh().await })??;
                self.catalog
                    .definition(name)
                    .ok_or_else(|| LogError::UnknownStream {
                        name: name.to_string(),
                    })?
            }
        };
        Ok(self.handle(definition)?)
    }

    /// Reads the catalog up to its end first; when it cannot be read, answers from what was
    /// applied last.
    fn stream_names(&self) -> Vec<String> {
        let catalog = self.catalog.clone();
        match self
            .runtime
            .block_on(async move { catalog.refresh().await })
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(error = %e, "listing streams from the catalog as last read");
            }
        }
        self.catalog.names()
    }

    /// Appends the drop to the catalog (handles on every node fail their appends with
    /// [`LogError::Closed`] once they see it), then deletes the partitions' JetStream streams.
    /// A deletion that fails leaves an unreachable JetStream stream behind (the name's next
    /// incarnation gets new ones); it is logged, and the drop still stands.
    fn drop_stream(&self, name: &str) -> Result<()> {
        let catalog = self.catalog.clone();
        let n = name.to_string();
        let retry = self.settings.retry();
        let dropped = self
            .runtime
            .block_on(async move { catalog.drop_stream(&n, retry).await })??;
        self.open_streams().remove(name);
        let log = self.log.clone();
        self.runtime.block_on(async move {
            for p in 0..dropped.config.partitions {
                let reference = PartitionRef::new(dropped.name.as_str(), dropped.incarnation, p);
                match log.delete_partition(&reference).await {
                    Ok(()) | Err(JetStreamError::StreamNotFound { .. }) => {}
                    Err(e) => tracing::warn!(partition = %reference, error = %e,
                        "dropped stream's JetStream stream not deleted"),
                }
            }
        })?;
        Ok(())
    }
}

/// Creates or opens a partition's JetStream stream and reads its state, retrying while the
/// cluster is unavailable for up to `retry`.
async fn open_partition(
    log: &JetStreamLog,
    reference: &PartitionRef,
    settings: &PartitionSettings,
    retry: Duration,
) -> Result<(JetStreamPartition, PartitionState), JetStreamError> {
    let deadline = tokio::time::Instant::now() + retry;
    let mut pause = Duration::from_millis(20);
    loop {
        let attempt = async {
            let partition = log.create_partition(reference, settings).await?;
            let state = partition.state().await?;
            Ok::<_, JetStreamError>((partition, state))
        };
        match attempt.await {
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The hash key of the checkpoints in `dir` (created with it on first use).
///
/// # Errors
/// [`LogError::Io`] when the directory or the key cannot be made or read;
/// [`LogError::Corrupt`] for a damaged key file.
fn checkpoint_key(dir: &Path) -> Result<HashKey> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    HashKey::load_or_create(&OsStorage, dir)
}

/// The [`LogError`] a JetStream failure is reported as.
pub(crate) fn log_error(e: JetStreamError) -> LogError {
    match e {
        JetStreamError::Unavailable { .. } | JetStreamError::Connect { .. } => {
            LogError::Unavailable {
                backend: BACKEND,
                why: e.to_string(),
            }
        }
        JetStreamError::OutcomeUnknown { .. } => LogError::OutcomeUnknown {
            backend: BACKEND,
            why: e.to_string(),
        },
        JetStreamError::BatchTooManyRecords { count, max } => LogError::BatchTooManyRecords {
            count: count as usize,
            max,
        },
        JetStreamError::BatchTooLarge { bytes, max_payload } => LogError::BatchTooLarge {
            bytes: bytes as u64,
            max: u32::try_from(max_payload).unwrap_or(u32::MAX),
        },
        JetStreamError::InvalidArgument { field, why } => LogError::InvalidConfig {
            field,
            value: String::new(),
            reason: why,
        },
        other => LogError::Backend {
            backend: BACKEND,
            detail: other.to_string(),
        },
    }
}

/// This process's hybrid logical clock (`logbook_log::hlc`, decision 0022): one per node,
/// shared by every backend the process opens.
static CLOCK: std::sync::LazyLock<logbook_log::hlc::HybridClock> =
    std::sync::LazyLock::new(logbook_log::hlc::HybridClock::new);

/// Now in ms since the Unix epoch, as record timestamps are stamped (display and retention
/// only, never order): l of this node's hybrid logical clock — never below the wall clock,
/// never decreasing, and at least every record timestamp this node has read ([`observed`]).
pub(crate) fn now_ms() -> i64 {
    logbook_log::Clock::now_ms(&*CLOCK)
}

/// Folds the timestamps of `records`, read from the log, into this node's clock, so that
/// what it stamps next is not older than what it has read (causality across nodes; a
/// timestamp more than `HLC_AHEAD_MS_MAX` ahead of the wall clock is ignored).
pub(crate) fn observed(records: &[logbook_log::StoredRecord]) {
    CLOCK.observe(records.iter().map(|r| r.timestamp_ms));
}
