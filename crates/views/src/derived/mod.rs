//! Derived streams: processors that read one stream and append to another — filter,
//! project, re-key — each output exactly once (decision 0031; issue 21).
//!
//! ```text
//!  PUT /v1/derived-streams/{name}  ─▶ DerivedStreams::create ─▶ a create record in `_derived`
//!                                                              ─▶ Runner (processor.rs)
//!  source ──▶ Runner: per source partition, batches ≤ DERIVED_BATCH_RECORDS, never past the
//!             durable end ──▶ target: one append per (batch, target partition) under a
//!             request id made of the input range (progress.rs)
//! ```
//!
//! What it is not: a view (its output is records, not rows) nor a transaction (each batch's
//! groups are separate atomic appends; exactly-once comes from reading the output back,
//! not from atomicity across partitions: no two-phase commit, DESIGN.md rule 1).
//!
//! **Invariants.** A source partition's batches are appended in order, each only after the
//! one before it is durable, so only the newest batch found in the target can be partial.
//! Outputs are a pure function of the input range (no clock, no randomness), so a batch read
//! again makes the same groups under the same ids. The catalog is the internal stream
//! `_derived` — create and drop records, replayed at open — so the log is the one source of
//! truth; a creation's position in it is the derived stream's *generation*, part of every
//! request id, so one created again under a dropped one's name does not take its outputs
//! for its own.
//!
//! **Cycles.** Derived streams are edges source → target; an edge that would close a cycle
//! through two or more streams is refused (`InvalidSpec` on `target`). A derived stream may
//! write to its own source; it passes over the records it emitted itself
//! ([`DERIVED_BY_HEADER`]).

pub mod ledger;
pub mod processor;
pub mod progress;
pub mod spec;
pub mod unique;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use logbook_log::{LogBackend, LogStream, Record};
use serde::{Deserialize, Serialize};

pub use processor::{DERIVED_BY_HEADER, PartitionStatus, Runner};
pub use spec::{DerivedPlan, DerivedSpec};

use crate::engine::validate_view_name;
use crate::error::{Result, ViewError};
use crate::limits::{DERIVED_NAME_BYTES_MAX, DERIVED_STREAMS_MAX};

/// The internal stream that holds the catalog of derived streams.
pub const CATALOG_STREAM: &str = "_derived";

/// Records read per step when the catalog is replayed.
const REPLAY_RECORDS: usize = 4096;

/// One record of [`CATALOG_STREAM`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Change {
    /// A derived stream was created (its generation: this record's offset).
    Create {
        /// Its name.
        name: String,
        /// Its spec.
        spec: DerivedSpec,
    },
    /// It was dropped.
    Drop {
        /// Its name.
        name: String,
    },
}

/// A derived stream as created or listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedInfo {
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: DerivedSpec,
    /// The creation's offset in `_derived` (part of its request ids).
    pub generation: u64,
    /// Per source partition, its progress (empty until the target has been read back).
    pub partitions: Vec<PartitionStatus>,
    /// The error that stopped a processor, if any.
    pub error: Option<String>,
}

struct Entry {
    spec: DerivedSpec,
    generation: u64,
    runner: Option<Arc<Runner>>,
    /// Why it does not run (its streams are gone), when it does not.
    not_running: Option<String>,
}

/// The derived streams of a node: the catalog, and a [`Runner`] for each.
pub struct DerivedStreams {
    log: Arc<dyn LogBackend>,
    catalog: Arc<dyn LogStream>,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for DerivedStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedStreams").finish_non_exhaustive()
    }
}

impl DerivedStreams {
    /// Replays the catalog stream `catalog` (one partition, [`CATALOG_STREAM`]) and starts a
    /// runner for each derived stream whose streams exist.
    ///
    /// # Errors
    /// The log's read errors; [`ViewError::Corrupt`] for a catalog record that does not
    /// decode.
    pub fn open(log: Arc<dyn LogBackend>, catalog: Arc<dyn LogStream>) -> Result<DerivedStreams> {
        let mut entries = BTreeMap::new();
        let part = catalog.partition(0)?;
        let mut at = part.start_offset();
        let end = part.end_offset();
        while at < end {
            let records = part.read(at, REPLAY_RECORDS, crate::limits::APPLY_BATCH_BYTES)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for r in records {
                let change: Change = serde_json::from_slice(&r.value).map_err(|e| {
                    ViewError::corrupt(
                        "derived stream catalog",
                        format!("offset {}: {e}", r.offset),
                    )
                })?;
                match change {
                    Change::Create { name, spec } => {
                        entries.insert(
                            name,
                            Entry {
                                spec,
                                generation: r.offset,
                                runner: None,
                                not_running: None,
                            },
                        );
                    }
                    Change::Drop { name } => {
                        entries.remove(&name);
                    }
                }
            }
        }
        for (name, e) in &mut entries {
            match DerivedPlan::compile(e.spec.clone())
                .and_then(|plan| Runner::start(name, e.generation, Arc::new(plan), log.clone()))
            {
                Ok(runner) => e.runner = Some(runner),
                Err(err) => {
                    tracing::warn!(derived_stream = %name, error = %err, "derived stream not started");
                    e.not_running = Some(err.to_string());
                }
            }
        }
        Ok(DerivedStreams {
            log,
            catalog,
            entries: Mutex::new(entries),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates derived stream `name` from a JSON spec and starts it; `Ok((info, false))` when
    /// it exists with this spec already.
    ///
    /// # Errors
    /// [`ViewError::InvalidViewName`] (also past [`DERIVED_NAME_BYTES_MAX`] bytes);
    /// [`ViewError::InvalidSpec`] naming the field (a cycle: on `target`);
    /// [`ViewError::UnknownStream`] for `source` or `target`;
    /// [`ViewError::DerivedStreamExists`]; [`ViewError::TooManyDerivedStreams`]; the log's
    /// errors appending to the catalog. On error nothing is created.
    pub fn create(&self, name: &str, spec: &[u8]) -> Result<(DerivedInfo, bool)> {
        validate_view_name(name)?;
        if name.len() > DERIVED_NAME_BYTES_MAX {
            return Err(ViewError::InvalidViewName {
                name: name.to_string(),
                reason: "a derived stream's name is at most 48 bytes",
            });
        }
        let plan = DerivedPlan::parse(spec)?;
        let mut entries = self.lock();
        if let Some(e) = entries.get(name) {
            if e.spec == plan.spec {
                return Ok((info_of(name, e), false));
            }
            return Err(ViewError::DerivedStreamExists {
                name: name.to_string(),
            });
        }
        if entries.len() >= DERIVED_STREAMS_MAX {
            return Err(ViewError::TooManyDerivedStreams {
                max: DERIVED_STREAMS_MAX,
            });
        }
        for stream in [&plan.spec.source, &plan.spec.target] {
            if stream.starts_with('_') || self.log.stream(stream).is_err() {
                return Err(ViewError::UnknownStream {
                    stream: stream.clone(),
                });
            }
        }
        check_no_cycle(&entries, &plan.spec)?;
        let generation = self.append(&Change::Create {
            name: name.to_string(),
            spec: plan.spec.clone(),
        })?;
        let runner = Runner::start(name, generation, Arc::new(plan.clone()), self.log.clone())?;
        let entry = Entry {
            spec: plan.spec,
            generation,
            runner: Some(runner),
            not_running: None,
        };
        let info = info_of(name, &entry);
        entries.insert(name.to_string(), entry);
        Ok((info, true))
    }

    /// Stops and drops derived stream `name` (its output stays in the target).
    ///
    /// # Errors
    /// [`ViewError::UnknownDerivedStream`]; the log's errors appending to the catalog.
    pub fn drop_stream(&self, name: &str) -> Result<()> {
        let mut entries = self.lock();
        if !entries.contains_key(name) {
            return Err(ViewError::UnknownDerivedStream {
                name: name.to_string(),
            });
        }
        self.append(&Change::Drop {
            name: name.to_string(),
        })?;
        if let Some(e) = entries.remove(name)
            && let Some(r) = e.runner
        {
            r.stop();
        }
        Ok(())
    }

    /// Derived stream `name` with its status.
    ///
    /// # Errors
    /// [`ViewError::UnknownDerivedStream`].
    pub fn info(&self, name: &str) -> Result<DerivedInfo> {
        self.lock()
            .get(name)
            .map(|e| info_of(name, e))
            .ok_or_else(|| ViewError::UnknownDerivedStream {
                name: name.to_string(),
            })
    }

    /// Every derived stream, by name.
    pub fn list(&self) -> Vec<DerivedInfo> {
        self.lock().iter().map(|(n, e)| info_of(n, e)).collect()
    }

    /// Stops every runner (the server's shutdown).
    pub fn close(&self) {
        for e in self.lock().values() {
            if let Some(r) = &e.runner {
                r.stop();
            }
        }
    }

    /// Appends one change to the catalog and waits until it is durable; returns its offset.
    fn append(&self, change: &Change) -> Result<u64> {
        let value = serde_json::to_vec(change)
            .map_err(|e| ViewError::corrupt("derived stream catalog", e.to_string()))?;
        let positions = self
            .catalog
            .append_batch(vec![Record::new(value)])?
            .wait()?;
        positions.first().map(|p| p.offset).ok_or_else(|| {
            ViewError::corrupt("derived stream catalog", "an append without a position")
        })
    }
}

impl Drop for DerivedStreams {
    fn drop(&mut self) {
        self.close();
    }
}

fn info_of(name: &str, e: &Entry) -> DerivedInfo {
    let (partitions, error) = match &e.runner {
        Some(r) => (if r.resumed() { r.status() } else { Vec::new() }, r.error()),
        None => (Vec::new(), e.not_running.clone()),
    };
    DerivedInfo {
        name: name.to_string(),
        spec: e.spec.clone(),
        generation: e.generation,
        partitions,
        error,
    }
}

/// Refuses `spec` when its edge source → target would close a cycle through two or more
/// streams (an edge from a stream to itself is allowed).
fn check_no_cycle(entries: &BTreeMap<String, Entry>, spec: &DerivedSpec) -> Result<()> {
    if spec.source == spec.target {
        return Ok(());
    }
    // Is there a path target → … → source already? Then source → target closes it.
    let mut path = vec![spec.target.clone()];
    let mut seen = std::collections::BTreeSet::new();
    if let Some(cycle) = find_path(entries, &spec.target, &spec.source, &mut path, &mut seen) {
        let mut names = vec![spec.source.clone()];
        names.extend(cycle);
        return Err(ViewError::spec(
            "target",
            format!("derived streams would form a cycle: {}", names.join(" → ")),
        ));
    }
    Ok(())
}

/// A path of derived streams from `from` to `to` (as the streams it passes), if any.
fn find_path(
    entries: &BTreeMap<String, Entry>,
    from: &str,
    to: &str,
    path: &mut Vec<String>,
    seen: &mut std::collections::BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(path.clone());
    }
    if !seen.insert(from.to_string()) {
        return None;
    }
    for e in entries.values() {
        if e.spec.source == from && e.spec.target != from {
            path.push(e.spec.target.clone());
            if let Some(found) = find_path(entries, &e.spec.target, to, path, seen) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}
