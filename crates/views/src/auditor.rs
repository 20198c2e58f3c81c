//! The background view auditor: a thread that audits every view once per interval
//! ([`crate::audit`] does one audit), paced per view, records each view's latest report,
//! logs and counts mismatches, and repairs by rebuild + switch when told to (issue 18;
//! decision 0028).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::audit::{AuditOptions, AuditReport, Verdict};
use crate::engine::Views;
use crate::error::{Result, ViewError};

/// What the background auditor knows of one view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewAuditStatus {
    /// The view.
    pub view: String,
    /// Audits finished.
    pub audits: u64,
    /// Audits that found a mismatch.
    pub mismatches: u64,
    /// The latest audit's report.
    pub last: Option<AuditReport>,
    /// The latest audit's error, when it could not finish.
    pub error: Option<String>,
    /// The version the auditor switched to after the latest mismatch, when repairing.
    pub repaired_to: Option<u64>,
}

/// The background auditor's settings and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditorStatus {
    /// Seconds between rounds (each round audits every view in turn).
    pub interval_s: u64,
    /// Each audit's pace, records per second (0: unpaced).
    pub records_per_s: u64,
    /// Each audit's memory budget, bytes (0: none; see [`AuditOptions::memory_bytes_max`]).
    pub memory_bytes_max: usize,
    /// Whether a mismatch is repaired (rebuild, then switch).
    pub repair: bool,
    /// Rounds finished.
    pub rounds: u64,
    /// Per view, by name.
    pub views: Vec<ViewAuditStatus>,
}

/// How the background auditor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditorConfig {
    /// Seconds between rounds (> 0).
    pub interval_s: u64,
    /// Each audit's pace, records per second (0: unpaced).
    pub records_per_s: u64,
    /// Each audit's memory budget, bytes (0: none; see [`AuditOptions::memory_bytes_max`]).
    pub memory_bytes_max: usize,
    /// Repair a mismatch: rebuild the view from the log and switch to the new version once
    /// it has caught up.
    pub repair: bool,
}

/// A thread auditing every view of a [`Views`] once per interval, one after another, each
/// at the configured pace. It holds the views only during a round and stops when dropped
/// ([`AuditorThread::stop`]: an audit under way gives up at its next batch).
#[derive(Debug)]
pub struct AuditorThread {
    stop: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    cancel: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    status: Arc<std::sync::Mutex<AuditorStatus>>,
}

impl AuditorThread {
    /// Starts auditing `views` with `config`.
    ///
    /// # Errors
    /// [`ViewError::Store`] if the thread cannot be spawned.
    ///
    /// # Panics
    /// If `config.interval_s` is 0 (a caller bug: 0 means no auditor).
    pub fn spawn(views: std::sync::Weak<Views>, config: AuditorConfig) -> Result<AuditorThread> {
        assert!(config.interval_s > 0, "an auditor needs an interval");
        let status = Arc::new(std::sync::Mutex::new(AuditorStatus {
            interval_s: config.interval_s,
            records_per_s: config.records_per_s,
            memory_bytes_max: config.memory_bytes_max,
            repair: config.repair,
            rounds: 0,
            views: Vec::new(),
        }));
        let cancel = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let (status, cancel) = (status.clone(), cancel.clone());
            std::thread::Builder::new()
                .name("logbook-view-auditor".into())
                .spawn(move || run_auditor(&views, config, &stopped, &cancel, &status))
                .map_err(|e| ViewError::Store {
                    op: "spawn the view auditor",
                    reason: e.to_string(),
                })?
        };
        Ok(AuditorThread {
            stop: std::sync::Mutex::new(Some(stop)),
            cancel,
            thread: std::sync::Mutex::new(Some(thread)),
            status,
        })
    }

    /// The settings and every view's latest audit.
    pub fn status(&self) -> AuditorStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the thread (an audit under way gives up) and waits for it. Later calls do
    /// nothing.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Release);
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditorThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_auditor(
    views: &std::sync::Weak<Views>,
    config: AuditorConfig,
    stopped: &std::sync::mpsc::Receiver<()>,
    cancel: &Arc<AtomicBool>,
    status: &std::sync::Mutex<AuditorStatus>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let options = AuditOptions {
        records_per_s: config.records_per_s,
        memory_bytes_max: config.memory_bytes_max,
        cancel: Some(cancel.clone()),
    };
    loop {
        match stopped.recv_timeout(Duration::from_secs(config.interval_s)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(views) = views.upgrade() else {
            return;
        };
        let names: Vec<String> = views.list().into_iter().map(|i| i.name).collect();
        for name in &names {
            let outcome = views.audit(name, &options);
            if options.cancelled() {
                return;
            }
            let repaired_to = match &outcome {
                Ok(report) if report.verdict == Verdict::Mismatch => {
                    tracing::error!(
                        target: "logbook::audit",
                        view = %name,
                        version = report.version,
                        applied = ?report.applied,
                        live_digest = %format!("{:032x}", report.live.hash),
                        recomputed_digest = %format!("{:032x}", report.recomputed.hash),
                        first_differences = %serde_json::to_string(&report.differences).unwrap_or_default(),
                        checkpoint = %serde_json::to_string(&report.checkpoint).unwrap_or_default(),
                        "view auditor: the live view or its stored checkpoint differs from its recomputation from the log"
                    );
                    if config.repair {
                        repair(&views, name, cancel)
                    } else {
                        None
                    }
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(target: "logbook::audit", view = %name, error = %e, "view auditor: audit did not finish");
                    None
                }
            };
            record(status, name, outcome, repaired_to);
        }
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.views.retain(|v| names.contains(&v.view));
        st.rounds += 1;
    }
}

/// Rebuilds `name` from the log and switches to the new version once it caught up; the
/// new version, or `None` when that failed (logged).
fn repair(views: &Views, name: &str, cancel: &AtomicBool) -> Option<u64> {
    let attempt = || -> Result<Option<u64>> {
        let version = views.rebuild(name, None)?;
        while !views.wait_caught_up(name, Some(version), Duration::from_secs(1))? {
            if cancel.load(Ordering::Acquire) {
                return Ok(None);
            }
        }
        views.switch(name, version, crate::limits::SWITCH_WAIT_MS_MAX)?;
        Ok(Some(version))
    };
    match attempt() {
        Ok(Some(version)) => {
            tracing::warn!(target: "logbook::audit", view = %name, version, "view auditor: repaired by switching to a version rebuilt from the log");
            Some(version)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(target: "logbook::audit", view = %name, error = %e, "view auditor: repair failed");
            None
        }
    }
}

fn record(
    status: &std::sync::Mutex<AuditorStatus>,
    name: &str,
    outcome: Result<AuditReport>,
    repaired_to: Option<u64>,
) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    let i = match st.views.binary_search_by(|v| v.view.as_str().cmp(name)) {
        Ok(i) => i,
        Err(i) => {
            st.views.insert(
                i,
                ViewAuditStatus {
                    view: name.to_string(),
                    audits: 0,
                    mismatches: 0,
                    last: None,
                    error: None,
                    repaired_to: None,
                },
            );
            i
        }
    };
    let v = &mut st.views[i];
    match outcome {
        Ok(report) => {
            v.audits += 1;
            if report.verdict == Verdict::Mismatch {
                v.mismatches += 1;
                v.repaired_to = repaired_to;
            }
            v.last = Some(report);
            v.error = None;
        }
        Err(e) => v.error = Some(e.to_string()),
    }
}
