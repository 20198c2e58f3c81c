//! View definitions in the replicated log, on a cluster node (issue 13, item 3): creating or
//! dropping a view appends a change to the internal stream [`VIEWS_STREAM`] (one partition);
//! every node follows that stream and applies each change to its own views engine, in log
//! order, so a view created on node A exists on B and C with the same spec, and two nodes
//! racing for one name agree on the first change in the log.
//!
//! ```text
//!  PUT /v1/views/v on A ── name, spec, source checked ── append {op: create, view, spec}
//!      ── wait until A's follower applied that offset ── answer from A's views
//!  every node: follower thread ── read _views ── create / drop on its own Views
//!  start: read _views to its end, fold it into the defined views, make the local catalog
//!         match (drop what is not defined or defined otherwise, create what is missing),
//!         then follow
//! ```
//!
//! Rebuilds, switches and rollouts stay per node in this part: they change which version
//! serves on the node that was asked (docs/decisions/0011, "Views on a cluster").

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logbook_log::{LogBackend, LogError, LogStream, Record};
use logbook_views::{ViewError, ViewInfo, ViewSpec, Views};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ProblemCode};

/// The internal stream of view definitions.
pub const VIEWS_STREAM: &str = "_views";
/// Records per read of the follower.
const READ_RECORDS: usize = 256;
/// Bytes per read of the follower (a change is at most a view spec, 64 KiB).
const READ_BYTES: usize = 4 << 20;
/// Longest pause of the follower before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait of a request for this node to apply the change it appended.
const APPLY_WAIT: Duration = Duration::from_secs(30);
/// Apply failures kept for the requests that appended them (older ones are forgotten).
const FAILURES_MAX: usize = 64;

/// One change of the view catalog, as a record's value (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Change {
    Create {
        view: String,
        spec: serde_json::Value,
    },
    Drop {
        view: String,
    },
}

/// What the follower has applied.
#[derive(Debug, Default)]
struct Progress {
    /// Every change below this offset is applied.
    next: u64,
    /// Changes this node could not apply, by offset (bounded by [`FAILURES_MAX`]).
    failures: VecDeque<(u64, ViewError)>,
}

/// The replicated view catalog of a cluster node: the follower and the writes.
#[derive(Debug)]
pub struct ViewCatalog {
    stream: Arc<dyn LogStream>,
    log: Arc<dyn LogBackend>,
    views: Arc<Views>,
    progress: Mutex<Progress>,
    advanced: Condvar,
    stop: AtomicBool,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl ViewCatalog {
    /// Opens (or creates) [`VIEWS_STREAM`], makes `views` match the definitions in it and
    /// starts following it. Blocks (reads the log); call it where blocking is allowed.
    ///
    /// # Errors
    /// The log's, when the stream cannot be opened, created or read.
    pub fn open(log: Arc<dyn LogBackend>, views: Arc<Views>) -> Result<Arc<ViewCatalog>, LogError> {
        // Only a cluster node keeps its view definitions in the log: a replicated one.
        let stream = crate::internal_stream::open_or_create(log.as_ref(), VIEWS_STREAM, true)?;
        let catalog = Arc::new(ViewCatalog {
            stream,
            log,
            views,
            progress: Mutex::new(Progress::default()),
            advanced: Condvar::new(),
            stop: AtomicBool::new(false),
            follower: Mutex::new(None),
        });
        catalog.reconcile()?;
        let follower = catalog.clone();
        let thread = std::thread::Builder::new()
            .name("logbook-view-catalog".into())
            .spawn(move || follower.follow())
            .map_err(|e| LogError::Backend {
                backend: "server",
                detail: format!("cannot start the view catalog's follower: {e}"),
            })?;
        *lock(&catalog.follower) = Some(thread);
        Ok(catalog)
    }

    /// Reads the catalog to its end and makes the local views match what it defines.
    fn reconcile(&self) -> Result<(), LogError> {
        let mut defined: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut next = 0;
        while let Some(changes) = self.read_from(&mut next)? {
            for (_, change) in changes {
                match change {
                    Change::Create { view, spec } => {
                        defined.entry(view).or_insert(spec);
                    }
                    Change::Drop { view } => {
                        defined.remove(&view);
                    }
                }
            }
        }
        for local in self.views.list() {
            let keep = defined
                .get(&local.name)
                .is_some_and(|spec| same_spec(spec, &local));
            if !keep && let Err(e) = self.views.drop_view(&local.name) {
                tracing::warn!(view = %local.name, error = %e, "a view dropped from the cluster's catalog was not dropped here");
            }
        }
        for (view, spec) in defined {
            if self.views.info_of(&view).is_err() {
                let created = spec_bytes(&spec).and_then(|bytes| self.views.create(&view, &bytes));
                if let Err(e) = created {
                    tracing::warn!(view = %view, error = %e, "a view of the cluster's catalog cannot be created on this node");
                }
            }
        }
        lock(&self.progress).next = next;
        Ok(())
    }

    /// The changes at `*next` or after, with their offsets, moving `*next` past them; `None`
    /// at the end.
    fn read_from(&self, next: &mut u64) -> Result<Option<Vec<(u64, Change)>>, LogError> {
        let partition = self.stream.partition(0)?;
        // Everything below the end seen before the read is visible to it: an empty read
        // moves past a gap (another backend's offsets are not dense).
        let limit = partition.end_offset();
        let records = partition.read(*next, READ_RECORDS, READ_BYTES)?;
        let Some(last) = records.last() else {
            *next = (*next).max(limit);
            return Ok(None);
        };
        *next = last.offset + 1;
        let changes = records
            .iter()
            .filter_map(|r| match serde_json::from_slice::<Change>(&r.value) {
                Ok(change) => Some((r.offset, change)),
                Err(e) => {
                    tracing::warn!(offset = r.offset, error = %e, "not a view catalog change; skipped");
                    None
                }
            })
            .collect();
        Ok(Some(changes))
    }

    /// The follower: applies changes in log order until [`Self::stop`].
    fn follow(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let mut next = lock(&self.progress).next;
            match self.read_from(&mut next) {
                Ok(Some(changes)) => {
                    let mut failures = Vec::new();
                    for (offset, change) in changes {
                        if let Err((view, e)) = self.apply(&change) {
                            failures.push((offset, view, e));
                        }
                    }
                    self.advance(next, failures);
                }
                Ok(None) => {
                    self.advance(next, Vec::new());
                    if let Ok(p) = self.stream.partition(0) {
                        p.wait_end_offset_above(next, POLL);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the view catalog; retrying");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// Applies one change to the local views. A create of a name that exists with the same
    /// spec, or a drop of an absent view, changes nothing (the first change in the log wins).
    fn apply(&self, change: &Change) -> Result<(), (String, ViewError)> {
        match change {
            Change::Create { view, spec } => {
                if self.views.info_of(view).is_ok() {
                    return Ok(());
                }
                let bytes = spec_bytes(spec).map_err(|e| (view.clone(), e))?;
                match self.views.create(view, &bytes) {
                    Ok(info) => {
                        tracing::info!(view = %view, version = info.current, "view created from the cluster's catalog");
                        Ok(())
                    }
                    Err(e) => Err((view.clone(), e)),
                }
            }
            Change::Drop { view } => match self.views.drop_view(view) {
                Ok(()) | Err(ViewError::UnknownView { .. }) => Ok(()),
                Err(e) => Err((view.clone(), e)),
            },
        }
    }

    /// Records that every change below `next` is applied (with the failures among them) and
    /// wakes the requests waiting for it.
    fn advance(&self, next: u64, failures: Vec<(u64, String, ViewError)>) {
        let mut progress = lock(&self.progress);
        for (offset, view, e) in failures {
            tracing::warn!(view = %view, error = %e, "a change of the cluster's view catalog cannot be applied on this node");
            if progress.failures.len() == FAILURES_MAX {
                progress.failures.pop_front();
            }
            progress.failures.push_back((offset, e));
        }
        if next > progress.next {
            progress.next = next;
            self.advanced.notify_all();
        }
    }

    /// Appends `change` and waits until this node applied it.
    fn append_and_apply(&self, change: &Change) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(change)
            .map_err(|e| ApiError::internal(format!("encoding a view catalog change: {e}")))?;
        let positions = self
            .stream
            .append_batch(vec![Record::new(bytes)])
            .and_then(logbook_log::StreamAppend::wait)
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        let Some(offset) = positions.first().map(|p| p.offset) else {
            return Err(ApiError::internal(
                "the view catalog's append has no position",
            ));
        };
        let deadline = Instant::now() + APPLY_WAIT;
        let mut progress = lock(&self.progress);
        while progress.next <= offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::new(
                    ProblemCode::LogUnavailable,
                    "the change is in the cluster's view catalog, but this node has not applied \
                     it yet; it will",
                )
                .retry_after(1));
            }
            progress = self
                .advanced
                .wait_timeout(progress, left)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        // A change this node could not apply: its error is the answer.
        let failed = progress.failures.iter().position(|(at, _)| *at == offset);
        match failed.and_then(|i| progress.failures.remove(i)) {
            Some((_, e)) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Creates view `name` on every node: checks it here (name, spec, source stream; an
    /// existing view with the same spec is answered as it is), appends the change and waits
    /// until this node applied it. Returns the view and whether this call created it.
    ///
    /// # Errors
    /// As [`Views::create`]; [`ViewError::ViewExists`] when the name is taken with another
    /// spec (here, or by a change another node appended first); 503 when this node has not
    /// applied the change within 30 s.
    pub fn create(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<(ViewInfo, bool), ApiError> {
        logbook_views::engine::validate_view_name(name)?;
        let bytes =
            serde_json::to_vec(&spec).map_err(|e| ApiError::invalid_json(None, e.to_string()))?;
        let plan = logbook_views::Plan::parse(&bytes)?;
        if let Ok(existing) = self.views.info_of(name) {
            return if same_spec(&spec, &existing) {
                Ok((existing, false))
            } else {
                Err(exists(name))
            };
        }
        self.log
            .stream(&plan.spec.source)
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        self.append_and_apply(&Change::Create {
            view: name.to_string(),
            spec: spec.clone(),
        })?;
        let info = self.views.info_of(name)?;
        if same_spec(&spec, &info) {
            Ok((info, true))
        } else {
            Err(exists(name))
        }
    }

    /// Drops view `name` on every node.
    ///
    /// # Errors
    /// [`ViewError::UnknownView`] when this node does not have it; as
    /// [`Self::create`] for the append and the wait.
    pub fn drop_view(&self, name: &str) -> Result<(), ApiError> {
        self.views.info_of(name)?;
        self.append_and_apply(&Change::Drop {
            view: name.to_string(),
        })
    }

    /// Stops the follower and waits for it (at shutdown, before the views close).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = lock(&self.follower).take()
            && thread.join().is_err()
        {
            tracing::error!("the view catalog's follower panicked");
        }
    }
}

/// A spec from the catalog as the views engine takes it.
fn spec_bytes(spec: &serde_json::Value) -> Result<Vec<u8>, ViewError> {
    serde_json::to_vec(spec).map_err(|e| ViewError::InvalidSpec {
        field: String::new(),
        reason: e.to_string(),
    })
}

fn exists(name: &str) -> ApiError {
    ViewError::ViewExists {
        name: name.to_string(),
    }
    .into()
}

/// Whether `spec` (JSON) is the spec `info` has.
fn same_spec(spec: &serde_json::Value, info: &ViewInfo) -> bool {
    serde_json::from_value::<ViewSpec>(spec.clone()).is_ok_and(|s| s == info.spec)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
