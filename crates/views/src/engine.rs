//! The views engine: the catalog of views and their versions, the processors that keep
//! them, reads with consistency tokens, rebuilds, switches and gradual rollouts.
//!
//! ```text
//!  Views ── catalog (space "catalog", fsynced on change): name → { versions, current, rollout }
//!    │
//!    ├─ version 1 (space "v7") ── processor p0 … p(P-1) ── log partitions of the source
//!    └─ version 2 (space "v9", rebuilding from offset 0 while 1 serves)
//!
//!  read(view, key, token) ─▶ route (rollout: key hash % 100 < percent → new version)
//!                          ─▶ wait: applied ≥ token, applied ≥ what this view already showed
//!                          ─▶ snapshot ─▶ rows + applied offsets from the same snapshot
//! ```
//!
//! **Monotonic reads across switches.** A view remembers the highest applied offsets it has
//! shown (per partition). A read routed to any version first waits until that version has
//! applied that far, and a switch or rollout only happens once the target has caught up with
//! the current version, so neither a switch nor a rollback makes a reader see the view go back.
//!
//! **Monotonic reads across restarts.** What was shown lives in memory only, and a reopened
//! version resumes from its last checkpoint, older than what readers may have seen before a
//! crash. So `open` sets each view's floor to its source partitions' durable end as recovered
//! at open (a bound of anything applied, hence shown, before): reads right after a restart
//! wait (up to [`READ_FLOOR_WAIT_MS`], then [`ViewError::ConsistencyTimeout`]) until the
//! replay has passed it.
//!
//! **Version numbers** are per view (1, 2, …); every entry point takes and returns them and
//! translates to the data-directory-wide store ids of the spaces (`crate::catalog`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logbook_log::{LogBackend, LogError, LogPartition, LogStream};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::batch::Sources;
use crate::catalog::{Catalog, VersionEntry, ViewEntry};
pub use crate::catalog::{FORMAT_VERSION, Rollout};
use crate::error::{Result, ViewError};
use crate::layout::{self, ApplyState};
use crate::limits::{
    PROCESSORS_MAX, READ_FLOOR_WAIT_MS, READ_KEYS_MAX, READ_LIMIT_MAX, READ_TIMEOUT_MS_MAX,
    SWITCH_WAIT_MS_MAX, VERSIONS_PER_VIEW_MAX, VIEW_NAME_BYTES_MAX, VIEWS_MAX,
};
use crate::processor::Version;
use crate::read::{Digest, Reader, Row, ScanRange};
use crate::spec::{Plan, PlanKind, ViewSpec};
use crate::state::ViewsConfig;
use crate::store::{FjallStore, Space, StateStore};
use crate::token::ConsistencyToken;

const CATALOG_SPACE: &str = "catalog";
const CATALOG_KEY: &[u8] = b"catalog";
/// How a read waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// A consistency token of earlier writes: the read waits until the view applied it.
    pub token: Option<String>,
    /// Longest wait for the token, ms (≤ [`READ_TIMEOUT_MS_MAX`]; 0 = do not wait).
    pub timeout_ms: u64,
}

/// Rows read, with the offsets the version had applied in the snapshot they come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadResult {
    /// Rows in key order (a point lookup: zero or one).
    pub rows: Vec<Row>,
    /// Where the next page starts (`ScanRange::start`), if there is more.
    pub next: Option<String>,
    /// Partition → next offset to apply, in the snapshot read.
    pub applied: BTreeMap<u32, u64>,
    /// The version that served the read.
    pub version: u64,
    /// The stream that version derives from, and its incarnation: with `applied`, the
    /// consistency token of what the read reflected.
    pub source: String,
    /// The incarnation of `source`.
    pub source_incarnation: u64,
}

/// A view as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewInfo {
    /// Its name.
    pub name: String,
    /// The current version's spec.
    pub spec: ViewSpec,
    /// The version serving reads.
    pub current: u64,
    /// All versions.
    pub versions: Vec<u64>,
    /// A rollout in progress.
    pub rollout: Option<Rollout>,
}

/// Rebuild (or catch-up) progress of a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Records applied, over all partitions.
    pub done: u64,
    /// Records in the source stream now.
    pub total: u64,
    /// Records per second since the processors started.
    pub rate_per_s: f64,
    /// Seconds to catch up at that rate (`None`: no rate yet).
    pub eta_s: Option<f64>,
}

/// A partition whose records a view version has not applied were deleted by retention: the
/// version cannot complete (its processor stops with an error) until it is rebuilt from
/// the retained records, or its source's retention is raised before the next deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BelowRetention {
    /// The partition.
    pub partition: u32,
    /// The next offset the version would apply.
    pub applied: u64,
    /// The partition's first retained offset (greater than `applied`).
    pub start: u64,
}

impl BelowRetention {
    /// `Some` when retention has passed the version's position `state` in `part` after it
    /// applied records there. A version that has applied nothing of the partition yet is
    /// not below retention: it begins at the first retained offset ([`RetentionGap`]).
    pub fn check(part: &dyn LogPartition, state: &ApplyState) -> Option<BelowRetention> {
        let start = part.start_offset();
        (state.applied < start && !state.nothing_applied()).then_some(BelowRetention {
            partition: part.id(),
            applied: state.applied,
            start,
        })
    }
}

/// A partition whose first records retention had deleted when a view version began: the
/// version began at `start`, the first offset then retained, and reflects no record below
/// it (a version created, or rebuilt, on a trimmed stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionGap {
    /// The partition.
    pub partition: u32,
    /// The offset the version began at; records below it are not reflected.
    pub start: u64,
}

/// Status of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStatus {
    /// Version id.
    pub version: u64,
    /// Whether it serves reads.
    pub current: bool,
    /// Its spec.
    pub spec: ViewSpec,
    /// Partition → next offset to apply.
    pub applied: BTreeMap<u32, u64>,
    /// Records not yet applied, over all partitions (on a log with gapped offsets counted
    /// by reading, up to 4,096 per partition: a lower bound beyond).
    pub lag_records: u64,
    /// How far the applied records trail the newest record, by record timestamps, ms (the
    /// largest over partitions; 0 when caught up).
    pub lag_ms: i64,
    /// Progress.
    pub progress: Progress,
    /// Rows a full scan returns: table rows, index values, aggregate groups.
    pub rows: u64,
    /// Partition → applied offset of the last checkpoint (a restart resumes there and
    /// replays the rest from the log).
    pub checkpointed: BTreeMap<u32, u64>,
    /// Bytes of state held in memory (approximate; see [`ViewsConfig::state_bytes_max`]).
    pub memory_bytes: u64,
    /// Records left out (row key over the limit).
    pub skipped_records: u64,
    /// Why its processors stopped, if they did.
    pub error: Option<String>,
    /// Partitions where retention deleted records it had not applied.
    pub below_retention: Vec<BelowRetention>,
    /// Partitions whose first records retention had deleted before it began.
    pub retention_gaps: Vec<RetentionGap>,
    /// Digest at the applied offsets, when asked for.
    pub digest: Option<Digest>,
}

/// Status of a view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewStatus {
    /// Name.
    pub name: String,
    /// Current version.
    pub current: u64,
    /// Rollout in progress.
    pub rollout: Option<Rollout>,
    /// Every version.
    pub versions: Vec<VersionStatus>,
}

struct State {
    catalog: Catalog,
    running: HashMap<u64, Arc<Version>>,
    /// Per view: highest applied offsets shown by a read (monotonic reads).
    shown: HashMap<String, Arc<Vec<AtomicU64>>>,
}

/// The views of one data directory. See the module docs.
pub struct Views {
    log: Arc<dyn LogBackend>,
    store: Arc<dyn StateStore>,
    catalog_space: Arc<dyn Space>,
    /// One shared reader per source stream (crate::batch).
    sources: Sources,
    state: Mutex<State>,
    config: ViewsConfig,
    /// Set by [`Views::cancel_waits`] (shutdown): waiting reads and switches give up.
    waits_cancelled: AtomicBool,
}

/// How often a waiting read or switch looks at [`Views::cancel_waits`], ms.
const WAIT_SLICE_MS: u64 = 50;

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").finish_non_exhaustive()
    }
}

/// Checks a view name: 1 ..= [`VIEW_NAME_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`, not starting
/// with `.`.
///
/// # Errors
/// [`ViewError::InvalidViewName`].
pub fn validate_view_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > VIEW_NAME_BYTES_MAX {
        Some("longer than 128 bytes")
    } else if name.starts_with('.') {
        Some("must not start with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only A-Z a-z 0-9 . _ - are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ViewError::InvalidViewName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The store space of a version's state, by its store id.
fn space_name(space: u64) -> String {
    format!("v{space}")
}

impl Views {
    /// Opens the views of `log` with their state in `dir` (normally `<data-dir>/views`),
    /// starting every version's processors, which resume from their applied offsets.
    ///
    /// # Errors
    /// [`ViewError::Store`], [`ViewError::Corrupt`] (catalog of another format).
    pub fn open(log: Arc<dyn LogBackend>, dir: &Path) -> Result<Views> {
        Views::open_with_config(log, dir, ViewsConfig::default())
    }

    /// Opens with checkpoint and memory settings other than the defaults.
    ///
    /// # Errors
    /// As [`Views::open`].
    pub fn open_with_config(
        log: Arc<dyn LogBackend>,
        dir: &Path,
        config: ViewsConfig,
    ) -> Result<Views> {
        Views::open_inner(log, Arc::new(FjallStore::open(dir)?), config)
    }

    /// Opens with a given store (tests and other engines).
    ///
    /// # Errors
    /// As [`Views::open`].
    pub fn open_with_store(log: Arc<dyn LogBackend>, store: Arc<dyn StateStore>) -> Result<Views> {
        Views::open_inner(log, store, ViewsConfig::default())
    }

    /// Opens with a given store and settings (tests and other engines).
    ///
    /// # Errors
    /// As [`Views::open`].
    pub fn open_with_store_config(
        log: Arc<dyn LogBackend>,
        store: Arc<dyn StateStore>,
        config: ViewsConfig,
    ) -> Result<Views> {
        Views::open_inner(log, store, config)
    }

    fn open_inner(
        log: Arc<dyn LogBackend>,
        store: Arc<dyn StateStore>,
        config: ViewsConfig,
    ) -> Result<Views> {
        let catalog_space = store.open_space(CATALOG_SPACE)?;
        let (catalog, upgraded) = match catalog_space.get(CATALOG_KEY)? {
            Some(b) => Catalog::decode(&b)?,
            None => (Catalog::empty(), false),
        };
        // Spaces of versions a crash left out of the catalog (created, never recorded;
        // recorded as dropped, not yet deleted).
        let known: Vec<String> = catalog
            .views
            .values()
            .flat_map(|v| v.versions.values().map(|e| space_name(e.space)))
            .collect();
        for name in store.space_names() {
            if name.starts_with('v') && !known.contains(&name) {
                store.drop_space(&name)?;
            }
        }
        let views = Views {
            log,
            store,
            catalog_space,
            sources: Sources::default(),
            state: Mutex::new(State {
                catalog,
                running: HashMap::new(),
                shown: HashMap::new(),
            }),
            config,
            waits_cancelled: AtomicBool::new(false),
        };
        if upgraded {
            // Stored at once, so the renumbering happens once and the store says what it holds.
            let upgraded = views.lock().catalog.clone();
            views.save(&upgraded)?;
        }
        let mut st = views.lock();
        let entries: Vec<(String, u64, VersionEntry)> = st
            .catalog
            .views
            .iter()
            .flat_map(|(n, v)| v.versions.iter().map(|(id, e)| (n.clone(), *id, e.clone())))
            .collect();
        for (name, number, entry) in entries {
            let plan = Arc::new(Plan::compile(entry.spec.clone())?);
            match views.log.stream(&entry.spec.source) {
                Ok(stream) if stream.incarnation() == entry.incarnation => {
                    let v = Arc::new(Version::new(
                        entry.space,
                        number,
                        name.clone(),
                        plan,
                        views.store.open_space(&space_name(entry.space))?,
                        stream.clone(),
                        views.log.clone(),
                        views.sources.get(&stream),
                        views.config.clone(),
                    )?);
                    v.start()?;
                    if st
                        .catalog
                        .views
                        .get(&name)
                        .is_some_and(|e| e.current == number)
                    {
                        // Reads before a crash may have shown anything up to the source's
                        // durable end; the version resumes from an older checkpoint. Reads
                        // wait (READ_FLOOR_WAIT_MS) until the replay has passed it, so they
                        // never go backwards across a restart.
                        let floor = v
                            .stream
                            .partitions()
                            .iter()
                            .map(|p| AtomicU64::new(p.durable_offset().min(p.end_offset())))
                            .collect();
                        st.shown.insert(name.clone(), Arc::new(floor));
                    }
                    st.running.insert(entry.space, v);
                }
                _ => {
                    tracing::warn!(view = %name, version = number, "the source stream was dropped; the version does not run (drop and recreate the view)");
                }
            }
        }
        drop(st);
        Ok(views)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, catalog: &Catalog) -> Result<()> {
        self.catalog_space
            .commit(vec![(CATALOG_KEY.to_vec(), Some(catalog.encode()?))])?;
        self.store.sync()
    }

    fn processors(st: &State) -> usize {
        st.running
            .values()
            .map(|v| v.stream.partition_count() as usize)
            .sum()
    }

    /// Starts a new version of `spec` (not yet in the catalog `st`); returns its number.
    fn start_version(&self, st: &mut State, name: &str, plan: Plan) -> Result<u64> {
        let stream = match self.log.stream(&plan.spec.source) {
            Ok(s) => s,
            Err(LogError::UnknownStream { .. }) => {
                return Err(ViewError::UnknownStream {
                    stream: plan.spec.source.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let wanted = Views::processors(st) + stream.partition_count() as usize;
        if wanted > PROCESSORS_MAX {
            return Err(ViewError::TooManyProcessors {
                wanted,
                max: PROCESSORS_MAX,
            });
        }
        let id = st.catalog.next_space;
        let entry = VersionEntry {
            spec: plan.spec.clone(),
            incarnation: stream.incarnation(),
            space: id,
        };
        // Record the version first (with the counters), then create its space: a crash in
        // between leaves an empty version that simply starts from offset 0.
        let mut next = st.catalog.clone();
        next.next_space += 1;
        let view = next
            .views
            .entry(name.to_string())
            .or_insert_with(|| ViewEntry {
                current: 1,
                rollout: None,
                next_version: 1,
                versions: BTreeMap::new(),
            });
        let number = view.next_version;
        view.next_version += 1;
        view.versions.insert(number, entry);
        let space = self.store.open_space(&space_name(id))?;
        if let Err(e) = self.save(&next) {
            drop(space);
            let _ = self.store.drop_space(&space_name(id));
            return Err(e);
        }
        st.catalog = next;
        let v = Arc::new(Version::new(
            id,
            number,
            name.to_string(),
            Arc::new(plan),
            space,
            stream.clone(),
            self.log.clone(),
            self.sources.get(&stream),
            self.config.clone(),
        )?);
        v.start()?;
        st.running.insert(id, v);
        Ok(number)
    }

    /// Creates a view from a JSON spec and starts its processors from offset 0.
    ///
    /// # Errors
    /// [`ViewError::InvalidViewName`], [`ViewError::ViewExists`], [`ViewError::TooManyViews`],
    /// the spec errors of [`Plan::parse`], [`ViewError::UnknownStream`],
    /// [`ViewError::TooManyProcessors`]; storage errors. On error nothing is created.
    pub fn create(&self, name: &str, spec: &[u8]) -> Result<ViewInfo> {
        validate_view_name(name)?;
        let plan = Plan::parse(spec)?;
        let mut st = self.lock();
        if st.catalog.views.contains_key(name) {
            return Err(ViewError::ViewExists {
                name: name.to_string(),
            });
        }
        if st.catalog.views.len() >= VIEWS_MAX {
            return Err(ViewError::TooManyViews { max: VIEWS_MAX });
        }
        self.start_version(&mut st, name, plan)?;
        st.shown.remove(name);
        Views::info(&st, name)
    }

    fn info(st: &State, name: &str) -> Result<ViewInfo> {
        let v = Views::entry(st, name)?;
        Ok(ViewInfo {
            name: name.to_string(),
            spec: v
                .versions
                .get(&v.current)
                .map(|e| e.spec.clone())
                .ok_or_else(|| ViewError::corrupt("catalog", "current version missing"))?,
            current: v.current,
            versions: v.versions.keys().copied().collect(),
            rollout: v.rollout,
        })
    }

    fn entry<'a>(st: &'a State, name: &str) -> Result<&'a ViewEntry> {
        st.catalog
            .views
            .get(name)
            .ok_or_else(|| ViewError::UnknownView {
                name: name.to_string(),
            })
    }

    /// Every view, by name.
    pub fn list(&self) -> Vec<ViewInfo> {
        let st = self.lock();
        st.catalog
            .views
            .keys()
            .filter_map(|n| Views::info(&st, n).ok())
            .collect()
    }

    /// One view.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`].
    pub fn info_of(&self, name: &str) -> Result<ViewInfo> {
        Views::info(&self.lock(), name)
    }

    /// The running version `number` of `view`.
    fn version(st: &State, view: &str, number: u64) -> Result<Arc<Version>> {
        let space = Views::entry(st, view)?
            .space_of(number)
            .ok_or(ViewError::UnknownVersion {
                view: view.to_string(),
                version: number,
                reason: "no such version",
            })?;
        st.running
            .get(&space)
            .cloned()
            .ok_or(ViewError::UnknownVersion {
                view: view.to_string(),
                version: number,
                reason: crate::processor::SOURCE_DROPPED,
            })
    }

    /// Starts rebuilding `name` from offset 0 into a new version (with a new spec, or the
    /// current one's), while the current version keeps serving. Returns the new version's
    /// number (the view's versions are numbered 1, 2, …; a number is never reused).
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::TooManyVersions`], spec errors.
    pub fn rebuild(&self, name: &str, spec: Option<&[u8]>) -> Result<u64> {
        let mut st = self.lock();
        let entry = Views::entry(&st, name)?;
        if entry.versions.len() >= VERSIONS_PER_VIEW_MAX {
            return Err(ViewError::TooManyVersions {
                view: name.to_string(),
                max: VERSIONS_PER_VIEW_MAX,
            });
        }
        let plan = match spec {
            Some(s) => Plan::parse(s)?,
            None => Plan::compile(
                entry
                    .versions
                    .get(&entry.current)
                    .map(|e| e.spec.clone())
                    .ok_or_else(|| ViewError::corrupt("catalog", "current version missing"))?,
            )?,
        };
        self.start_version(&mut st, name, plan)
    }

    /// Makes `version` serve all reads (ends a rollout). Waits up to `timeout_ms`
    /// (≤ [`SWITCH_WAIT_MS_MAX`]) for it to have applied at least what the current version
    /// has on every partition. Switching back to the previous version is the rollback.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::UnknownVersion`], [`ViewError::NotCaughtUp`].
    pub fn switch(&self, name: &str, version: u64, timeout_ms: u64) -> Result<()> {
        self.route_to(name, version, 100, timeout_ms)
    }

    /// Sends `percent` of reads (by key hash) to `version`, the rest to the current one;
    /// `percent` 100 is a [`Views::switch`], 0 ends the rollout. Same catch-up rule as a switch.
    ///
    /// # Errors
    /// As [`Views::switch`]; [`ViewError::InvalidRead`] for a percent over 100.
    pub fn rollout(&self, name: &str, version: u64, percent: u8, timeout_ms: u64) -> Result<()> {
        if percent > 100 {
            return Err(ViewError::InvalidRead {
                parameter: "percent",
                reason: "must be 0 to 100".into(),
            });
        }
        self.route_to(name, version, percent, timeout_ms)
    }

    fn route_to(&self, name: &str, version: u64, percent: u8, timeout_ms: u64) -> Result<()> {
        let (current, target) = {
            let st = self.lock();
            let e = Views::entry(&st, name)?;
            if !e.versions.contains_key(&version) {
                return Err(ViewError::UnknownVersion {
                    view: name.to_string(),
                    version,
                    reason: "no such version",
                });
            }
            (
                Views::version(&st, name, e.current)?,
                Views::version(&st, name, version)?,
            )
        };
        if target.failed().is_some() {
            return Err(ViewError::UnknownVersion {
                view: name.to_string(),
                version,
                reason: "its processors stopped with an error",
            });
        }
        let want = current.applied_now();
        let timeout = Duration::from_millis(timeout_ms.min(SWITCH_WAIT_MS_MAX));
        if percent > 0
            && !self.wait(&target, timeout, |a| {
                a.iter().zip(&want).all(|(x, w)| x >= w)
            })?
        {
            let behind = target
                .applied_now()
                .iter()
                .zip(&want)
                .map(|(x, w)| w.saturating_sub(*x))
                .sum();
            return Err(ViewError::NotCaughtUp {
                view: name.to_string(),
                version,
                behind,
            });
        }
        let mut st = self.lock();
        let mut next = st.catalog.clone();
        let e = next
            .views
            .get_mut(name)
            .ok_or_else(|| ViewError::UnknownView {
                name: name.to_string(),
            })?;
        if percent >= 100 {
            e.current = version;
            e.rollout = None;
        } else if percent == 0 || version == e.current {
            e.rollout = None;
        } else {
            e.rollout = Some(Rollout { version, percent });
        }
        self.save(&next)?;
        st.catalog = next;
        Ok(())
    }

    /// Drops one version (not the current one), stopping its processors and freeing its state.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::UnknownVersion`].
    pub fn drop_version(&self, name: &str, version: u64) -> Result<()> {
        let mut st = self.lock();
        let e = Views::entry(&st, name)?;
        let Some(space) = e.space_of(version) else {
            return Err(ViewError::UnknownVersion {
                view: name.to_string(),
                version,
                reason: "no such version",
            });
        };
        if e.current == version {
            return Err(ViewError::UnknownVersion {
                view: name.to_string(),
                version,
                reason: "it is the current version; switch first or drop the view",
            });
        }
        let mut next = st.catalog.clone();
        if let Some(e) = next.views.get_mut(name) {
            e.versions.remove(&version);
            if e.rollout.is_some_and(|r| r.version == version) {
                e.rollout = None;
            }
        }
        self.save(&next)?;
        st.catalog = next;
        if let Some(v) = st.running.remove(&space) {
            // Its state is deleted next: no final checkpoint.
            v.abandon();
        }
        self.store.drop_space(&space_name(space))
    }

    /// Drops a view and all its versions' state.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`]; storage errors.
    pub fn drop_view(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        let e = Views::entry(&st, name)?.clone();
        let mut next = st.catalog.clone();
        next.views.remove(name);
        self.save(&next)?;
        st.catalog = next;
        st.shown.remove(name);
        for version in e.versions.values() {
            if let Some(v) = st.running.remove(&version.space) {
                // Its state is deleted next: no final checkpoint.
                v.abandon();
            }
            self.store.drop_space(&space_name(version.space))?;
        }
        Ok(())
    }

    /// Status of every version of a view; `with_digest` also computes digests (a full scan).
    ///
    /// # Errors
    /// [`ViewError::UnknownView`]; storage errors.
    pub fn status(&self, name: &str, with_digest: bool) -> Result<ViewStatus> {
        let (entry, versions) = {
            let st = self.lock();
            let e = Views::entry(&st, name)?.clone();
            let vs: Vec<(u64, Option<Arc<Version>>)> = e
                .versions
                .iter()
                .map(|(number, v)| (*number, st.running.get(&v.space).cloned()))
                .collect();
            (e, vs)
        };
        let mut out = Vec::new();
        for (id, v) in versions {
            let spec = entry.versions[&id].spec.clone();
            let Some(v) = v else {
                out.push(VersionStatus {
                    version: id,
                    current: id == entry.current,
                    spec,
                    applied: BTreeMap::new(),
                    lag_records: 0,
                    lag_ms: 0,
                    progress: Progress {
                        done: 0,
                        total: 0,
                        rate_per_s: 0.0,
                        eta_s: None,
                    },
                    rows: 0,
                    checkpointed: BTreeMap::new(),
                    memory_bytes: 0,
                    skipped_records: 0,
                    error: Some("not running: its source stream was dropped".into()),
                    below_retention: Vec::new(),
                    retention_gaps: Vec::new(),
                    digest: None,
                });
                continue;
            };
            out.push(version_status(&v, id == entry.current, spec, with_digest)?);
        }
        Ok(ViewStatus {
            name: name.to_string(),
            current: entry.current,
            rollout: entry.rollout,
            versions: out,
        })
    }

    /// Every view version reading `stream` (its current incarnation) that retention has
    /// passed in some partition: `(view, version, partition)`, by view name.
    ///
    /// # Errors
    /// Storage errors reading a version's applied offsets.
    pub fn below_retention(
        &self,
        stream: &dyn LogStream,
    ) -> Result<Vec<(String, u64, BelowRetention)>> {
        let versions: Vec<(String, u64, Arc<Version>)> = {
            let st = self.lock();
            st.catalog
                .views
                .iter()
                .flat_map(|(name, e)| {
                    e.versions
                        .iter()
                        .filter(|(_, v)| {
                            v.spec.source == stream.name() && v.incarnation == stream.incarnation()
                        })
                        .filter_map(|(number, v)| {
                            let running = st.running.get(&v.space)?.clone();
                            Some((name.clone(), *number, running))
                        })
                })
                .collect()
        };
        let mut out = Vec::new();
        for (name, number, v) in versions {
            for part in stream.partitions() {
                let state = v.apply_state(part.id())?;
                if let Some(b) = BelowRetention::check(part, &state) {
                    out.push((name.clone(), number, b));
                }
            }
        }
        Ok(out)
    }

    /// The running current version of `name`.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::UnknownVersion`].
    pub(crate) fn current_version(&self, name: &str) -> Result<Arc<Version>> {
        let st = self.lock();
        let e = Views::entry(&st, name)?;
        Views::version(&st, name, e.current)
    }

    /// Digest of a version (default: the current one) at its applied offsets.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::UnknownVersion`]; storage errors.
    pub fn digest(&self, name: &str, version: Option<u64>) -> Result<(Digest, BTreeMap<u32, u64>)> {
        let v = {
            let st = self.lock();
            let e = Views::entry(&st, name)?;
            Views::version(&st, name, version.unwrap_or(e.current))?
        };
        let snap = v.snapshot();
        let r = Reader {
            plan: &v.plan,
            snap: &snap,
            partitions: v.stream.partition_count(),
        };
        let applied = r
            .applied()?
            .iter()
            .enumerate()
            .map(|(p, a)| (p as u32, a.applied))
            .collect();
        Ok((r.digest()?, applied))
    }

    /// Waits until a version (default: current) has applied everything the source stream
    /// holds now; returns whether it did within `timeout`.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], [`ViewError::UnknownVersion`].
    pub fn wait_caught_up(
        &self,
        name: &str,
        version: Option<u64>,
        timeout: Duration,
    ) -> Result<bool> {
        let v = {
            let st = self.lock();
            let e = Views::entry(&st, name)?;
            Views::version(&st, name, version.unwrap_or(e.current))?
        };
        let ends: Vec<u64> = v
            .stream
            .partitions()
            .iter()
            .map(|p| p.end_offset())
            .collect();
        self.wait(&v, timeout, |a| a.iter().zip(&ends).all(|(x, e)| x >= e))
    }

    /// Point lookup of `key` (table keys as [`crate::layout::key_text`]). An index value with
    /// more than [`READ_LIMIT_MAX`] primary keys comes with `next`: scan from it (`start`) for
    /// the rest, which come first.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`], token errors, [`ViewError::ConsistencyTimeout`]; storage errors.
    pub fn get(&self, name: &str, key: &str, opts: &ReadOptions) -> Result<ReadResult> {
        self.read(name, key.as_bytes(), opts, |r| {
            let (row, next) = r.get_page(key)?;
            Ok((row.into_iter().collect(), next))
        })
    }

    /// Several keys in one read (one snapshot); missing keys are left out.
    ///
    /// # Errors
    /// As [`Views::get`]; [`ViewError::InvalidRead`] for more than [`READ_KEYS_MAX`] keys,
    /// or (on `keys`) for an index value with more than [`READ_LIMIT_MAX`] primary keys.
    pub fn get_many(&self, name: &str, keys: &[String], opts: &ReadOptions) -> Result<ReadResult> {
        if keys.len() > READ_KEYS_MAX {
            return Err(ViewError::InvalidRead {
                parameter: "keys",
                reason: format!("{} keys; the limit is {READ_KEYS_MAX}", keys.len()),
            });
        }
        let route = keys.first().map_or(&b""[..], |k| k.as_bytes());
        self.read(name, route, opts, |r| {
            let mut rows = Vec::new();
            for k in keys {
                rows.extend(r.get(k)?);
            }
            Ok((rows, None))
        })
    }

    /// Rows in key order within `range`, at most `range.limit` (1 ..= [`READ_LIMIT_MAX`]).
    ///
    /// # Errors
    /// As [`Views::get`]; [`ViewError::InvalidRead`] for a limit out of range.
    pub fn scan(&self, name: &str, range: &ScanRange, opts: &ReadOptions) -> Result<ReadResult> {
        if range.limit == 0 || range.limit > READ_LIMIT_MAX {
            return Err(ViewError::InvalidRead {
                parameter: "limit",
                reason: format!("{}; expected 1 to {READ_LIMIT_MAX}", range.limit),
            });
        }
        let route = range
            .prefix
            .as_deref()
            .or(range.start.as_deref())
            .unwrap_or("");
        self.read(name, route.as_bytes(), opts, |r| r.scan(range))
    }

    fn read(
        &self,
        name: &str,
        route_key: &[u8],
        opts: &ReadOptions,
        f: impl FnOnce(&Reader<'_>) -> Result<(Vec<Row>, Option<String>)>,
    ) -> Result<ReadResult> {
        if opts.timeout_ms > READ_TIMEOUT_MS_MAX {
            return Err(ViewError::InvalidRead {
                parameter: "timeout_ms",
                reason: format!("{}; the limit is {READ_TIMEOUT_MS_MAX}", opts.timeout_ms),
            });
        }
        let token = opts
            .token
            .as_deref()
            .map(ConsistencyToken::decode)
            .transpose()
            .map_err(ViewError::from)?;
        let (v, shown) = {
            let mut st = self.lock();
            let e = Views::entry(&st, name)?;
            let id = match e.rollout {
                Some(r) if xxh3_64(route_key) % 100 < u64::from(r.percent) => r.version,
                _ => e.current,
            };
            let v = Views::version(&st, name, id)?;
            let parts = v.stream.partition_count() as usize;
            let shown = st
                .shown
                .entry(name.to_string())
                .or_insert_with(|| Arc::new((0..parts).map(|_| AtomicU64::new(0)).collect()))
                .clone();
            (v, shown)
        };
        let partitions = v.stream.partition_count();
        if let Some(t) = token {
            // A token that names no position of the source stream cannot be waited for; taking
            // it as satisfied would silently break read-your-writes (it was meant for another
            // view), so it is refused. Other streams a merged token also names are ignored.
            let Some(sp) = t.streams.get(v.stream.name()) else {
                let named: Vec<&str> = t.streams.keys().map(String::as_str).collect();
                return Err(ViewError::InvalidToken {
                    reason: format!(
                        "it names no position of stream {:?}, the source of view {name:?} (it names {named:?})",
                        v.stream.name()
                    ),
                });
            };
            if sp.incarnation != v.stream.incarnation() {
                return Err(ViewError::TokenIncarnation {
                    view: name.to_string(),
                    stream: v.stream.name().to_string(),
                    token: sp.incarnation,
                    built_on: v.stream.incarnation(),
                });
            }
            v.check_source()?;
            if let Some(p) = sp.offsets.keys().find(|p| **p >= partitions) {
                return Err(ViewError::InvalidToken {
                    reason: format!(
                        "partition {p} does not exist in stream {:?}",
                        v.stream.name()
                    ),
                });
            }
            let wanted = sp.offsets.clone();
            let ok = self.wait(&v, Duration::from_millis(opts.timeout_ms), |a| {
                wanted.iter().all(|(p, o)| a[*p as usize] >= *o)
            })?;
            if !ok {
                return Err(ViewError::ConsistencyTimeout {
                    view: name.to_string(),
                    timeout_ms: opts.timeout_ms,
                    applied: v
                        .applied_now()
                        .into_iter()
                        .enumerate()
                        .map(|(p, a)| (p as u32, a))
                        .collect(),
                    wanted,
                });
            }
        }
        // A version whose source stream was dropped says so (after a token's own
        // incarnation check, which names the token's stream more precisely).
        v.check_source()?;
        // Monotonic reads: never show less than this view has shown before.
        let floor: Vec<u64> = shown.iter().map(|a| a.load(Ordering::Acquire)).collect();
        if !self.wait(&v, Duration::from_millis(READ_FLOOR_WAIT_MS), |a| {
            a.iter().zip(&floor).all(|(x, f)| x >= f)
        })? {
            return Err(ViewError::ConsistencyTimeout {
                view: name.to_string(),
                timeout_ms: READ_FLOOR_WAIT_MS,
                applied: v
                    .applied_now()
                    .into_iter()
                    .enumerate()
                    .map(|(p, a)| (p as u32, a))
                    .collect(),
                wanted: floor
                    .into_iter()
                    .enumerate()
                    .map(|(p, a)| (p as u32, a))
                    .collect(),
            });
        }
        let snap = v.snapshot();
        let reader = Reader {
            plan: &v.plan,
            snap: &snap,
            partitions,
        };
        let applied_states = reader.applied()?;
        let (rows, next) = f(&reader)?;
        let mut applied = BTreeMap::new();
        for (p, a) in applied_states.iter().enumerate() {
            applied.insert(p as u32, a.applied);
            if let Some(s) = shown.get(p) {
                s.fetch_max(a.applied, Ordering::AcqRel);
            }
        }
        Ok(ReadResult {
            rows,
            next,
            applied,
            version: v.number,
            source: v.stream.name().to_string(),
            source_incarnation: v.stream.incarnation(),
        })
    }

    /// Stops every processor without its final checkpoint, leaving the store as a crash
    /// between checkpoints would (tests).
    #[doc(hidden)]
    pub fn abandon(&self) {
        let running: Vec<Arc<Version>> = self.lock().running.drain().map(|(_, v)| v).collect();
        for v in running {
            v.abandon();
        }
    }

    /// Makes every waiting read, switch and catch-up wait — now and later — give up with
    /// [`ViewError::Closed`] within 50 ms (`WAIT_SLICE_MS`), so a shutdown is not held up by a
    /// client's long `timeout_ms`. Reads that need no wait still answer. Not undone.
    pub fn cancel_waits(&self) {
        self.waits_cancelled.store(true, Ordering::Release);
    }

    /// Waits (≤ `timeout`) until `done(applied offsets)` holds; whether it does.
    ///
    /// # Errors
    /// [`ViewError::Closed`] after [`Views::cancel_waits`].
    fn wait(
        &self,
        v: &Version,
        timeout: Duration,
        mut done: impl FnMut(&[u64]) -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(WAIT_SLICE_MS));
            if v.wait_until(slice, &mut done) {
                return Ok(true);
            }
            if self.waits_cancelled.load(Ordering::Acquire) {
                return Err(ViewError::Closed);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Stops every processor (each finishes its current batch and checkpoints). Also done
    /// on drop.
    pub fn close(&self) {
        let running: Vec<Arc<Version>> = self.lock().running.drain().map(|(_, v)| v).collect();
        for v in running {
            v.stop();
        }
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        self.close();
    }
}

/// Records of a partition with gapped offsets in `from..end` (an offset difference does not
/// count them): counted by one bounded read of up to [`LAG_COUNT_RECORDS_MAX`] records — a
/// lower bound beyond — with the newest record read, for the time lag.
fn records_behind(
    part: &dyn logbook_log::LogPartition,
    from: u64,
    end: u64,
) -> (u64, Option<logbook_log::StoredRecord>) {
    match part.read(
        from,
        LAG_COUNT_RECORDS_MAX,
        crate::limits::APPLY_BATCH_BYTES,
    ) {
        Ok(mut records) => {
            records.retain(|r| r.offset < end);
            (records.len() as u64, records.pop())
        }
        Err(_) => (0, None),
    }
}

/// Most records one status counts per partition on a log with gapped offsets.
const LAG_COUNT_RECORDS_MAX: usize = 4096;

fn version_status(
    v: &Version,
    current: bool,
    spec: ViewSpec,
    with_digest: bool,
) -> Result<VersionStatus> {
    let mut applied = BTreeMap::new();
    let (mut done, mut total, mut lag_ms, mut skipped) = (0u64, 0u64, 0i64, 0u64);
    let mut lag_records = 0u64;
    let mut below_retention = Vec::new();
    let mut retention_gaps = Vec::new();
    for (p, part) in v.stream.partitions().iter().enumerate() {
        let state = v.apply_state(p as u32)?;
        let end = part.end_offset();
        applied.insert(p as u32, state.applied);
        below_retention.extend(BelowRetention::check(*part, &state));
        if state.began > 0 {
            retention_gaps.push(RetentionGap {
                partition: p as u32,
                start: state.began,
            });
        }
        done += state.applied;
        total += end;
        skipped += state.skipped;
        let (behind, newest) = if state.applied >= end {
            (0, None)
        } else if part.offsets_dense() {
            let newest = part
                .read(end - 1, 1, 1)
                .ok()
                .and_then(|r| r.last().cloned());
            (end - state.applied, newest)
        } else {
            records_behind(*part, state.applied, end)
        };
        lag_records += behind;
        if let Some(r) = newest {
            let since = if state.applied == 0 {
                r.timestamp_ms
            } else {
                state.last_timestamp_ms
            };
            lag_ms = lag_ms.max(r.timestamp_ms.saturating_sub(since).max(0));
        }
    }
    let secs = v.started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        done.saturating_sub(v.applied_at_start) as f64 / secs
    } else {
        0.0
    };
    let (rows, digest) = {
        let snap = v.snapshot();
        let rows = match &v.plan.kind {
            PlanKind::Table { .. } => snap.count_rows(layout::TAG_ROW, |k| k),
            PlanKind::Index { .. } => snap.count_rows(layout::TAG_INDEX, |k| {
                // The value key ends at the first unescaped `00 00`.
                let mut i = 0;
                while i + 1 < k.len() {
                    if k[i] == 0 {
                        if k[i + 1] == 0 {
                            return &k[..i];
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                k
            }),
            PlanKind::Aggregate { .. } => snap.count_rows(layout::TAG_GROUP, |k| k),
        };
        let digest = if with_digest {
            Some(
                Reader {
                    plan: &v.plan,
                    snap: &snap,
                    partitions: v.stream.partition_count(),
                }
                .digest()?,
            )
        } else {
            None
        };
        (rows, digest)
    };
    let checkpointed = v
        .checkpointed_now()
        .into_iter()
        .enumerate()
        .map(|(p, a)| (p as u32, a))
        .collect();
    Ok(VersionStatus {
        version: v.number,
        current,
        spec,
        applied,
        lag_records,
        lag_ms,
        progress: Progress {
            done,
            total,
            rate_per_s: rate,
            eta_s: (rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate),
        },
        rows,
        checkpointed,
        memory_bytes: v.memory_bytes() as u64,
        skipped_records: skipped,
        error: v.error(),
        below_retention,
        retention_gaps,
        digest,
    })
}
