//! Who gets a connection: the node-wide limit (`connections_max`), a cap per client address
//! (`connections_per_client_max`), the idle keep-alive connections closed to make room
//! ([`crate::idle`]), and a small reserve of probe connections so that health checks and
//! scrapes answer while the others are exhausted.
//!
//! ```text
//!  accept ─▶ address under its cap and a node-wide permit? ── yes ─▶ a full connection
//!              │ no: the node is full
//!              ▼
//!            an idle keep-alive connection to close?      ── yes ─▶ the oldest idle closes;
//!              │ no (or the address is at its cap)                 its permit is waited for
//!              ▼                                                   (≤ EVICTION_WAIT_MS)
//!            a probe permit (limits::PROBE_CONNECTIONS,  ── yes ─▶ a probe connection: one
//!              a few per address)?
//!              │ no                                                request, /v1/health or
//!              ▼                                                   /metrics; any other route
//!            refused at once: 429 connection_quota_exceeded         gets the refusal it would
//!            or 503 too_many_connections, closed                    have had at accept
//! ```
//!
//! Idle and half-open connections free their slots within the header timeout (hyper's timer
//! runs while a connection waits for a head, between requests too), so a client that opens
//! connections and sends nothing holds at most its cap, and only for that long.
//!
//! Invariant: a client address's counts are the numbers of its full and probe connections
//! open; they are taken under one lock with the checks, and given back when the
//! connection's [`ConnSlot`] drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ProblemCode};
use crate::idle::Activity;
use crate::limits;

/// The connection budget of a server.
#[derive(Debug)]
pub struct Admission {
    all: Arc<Semaphore>,
    all_max: usize,
    probes: Arc<Semaphore>,
    /// Per client address: its full connections and its probe connections.
    per_client: Mutex<HashMap<IpAddr, (usize, usize)>>,
    per_client_max: usize,
    /// The full connections' activities, by slot id: where idle ones are found. Taken
    /// after `per_client` when both are held, never before.
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// An admitted connection: its slot now, or once an idle connection asked to close has.
#[derive(Debug)]
pub enum Admitted {
    /// The slot.
    Now(ConnSlot),
    /// The node was full and an idle keep-alive connection was asked to close; its permit
    /// is waited for.
    Evicting {
        /// The client's address.
        ip: IpAddr,
        /// Whose permit is waited for.
        admission: Arc<Admission>,
    },
}

impl Admitted {
    /// The connection's slot: at once, or the permit of the connection asked to close
    /// (within [`limits::EVICTION_WAIT_MS`]), else what admission without an idle
    /// connection gives (a probe slot, or the refusal).
    ///
    /// # Errors
    /// The refusal, as [`Admission::admit`].
    pub async fn slot(self) -> Result<ConnSlot, ApiError> {
        let (ip, admission) = match self {
            Admitted::Now(slot) => return Ok(slot),
            Admitted::Evicting { ip, admission } => (ip, admission),
        };
        let wait = Duration::from_millis(limits::EVICTION_WAIT_MS);
        let freed = tokio::time::timeout(wait, admission.all.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = freed else {
            return match admission.admit_with(ip, false)? {
                Admitted::Now(slot) => Ok(slot),
                Admitted::Evicting { .. } => Err(admission.full()),
            };
        };
        let mut counts = admission
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (full, probes) = counts.get(&ip).copied().unwrap_or((0, 0));
        if full >= admission.per_client_max {
            return Err(admission.over_client_cap(ip, full));
        }
        counts.insert(ip, (full + 1, probes));
        Ok(admission.slot(permit, ip, None))
    }
}

/// An admitted connection's hold on the budget, given back on drop.
#[derive(Debug)]
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    /// The client address counted, and where it is given back.
    counted: Option<(IpAddr, Arc<Admission>)>,
    /// The id under which the connection's activity is registered, once it is.
    watched: Option<u64>,
    /// For a probe connection: the refusal any route but a probe's gets.
    pub probe_only: Option<ApiError>,
}

impl ConnSlot {
    /// Whether this is a probe connection (one request, health and metrics only).
    pub fn is_probe(&self) -> bool {
        self.probe_only.is_some()
    }

    /// Registers the connection's activity, so that it may be asked to close when idle and
    /// the node is full. A probe connection (one request) is not registered.
    pub fn watch(&mut self, activity: Arc<Activity>) {
        if self.is_probe() || self.watched.is_some() {
            return;
        }
        if let Some((_, admission)) = &self.counted {
            let id = admission.next_id.fetch_add(1, Ordering::Relaxed);
            let mut open = admission.open.lock().unwrap_or_else(|e| e.into_inner());
            open.insert(id, activity);
            self.watched = Some(id);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let (Some(id), Some((_, admission))) = (self.watched, &self.counted) {
            let mut open = admission.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(&id);
        }
        if let Some((ip, admission)) = self.counted.take() {
            let mut counts = admission
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                let count = if self.probe_only.is_some() {
                    &mut n.1
                } else {
                    &mut n.0
                };
                *count = count.saturating_sub(1);
                if *n == (0, 0) {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// A budget of `all_max` connections, at most `per_client_max` from one address, and
    /// [`limits::PROBE_CONNECTIONS`] probe connections beyond them.
    pub fn new(all_max: usize, per_client_max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            all: Arc::new(Semaphore::new(all_max)),
            all_max,
            probes: Arc::new(Semaphore::new(limits::PROBE_CONNECTIONS)),
            per_client: Mutex::new(HashMap::new()),
            per_client_max,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `ip`: a full one; else, when the node is full, the slot of
    /// the idle keep-alive connection idle longest, which is asked to close
    /// ([`Admitted::Evicting`]); else a probe one (at most
    /// [`limits::PROBE_CONNECTIONS_PER_CLIENT`] per address); else the refusal.
    ///
    /// # Errors
    /// 429 `connection_quota_exceeded` when the address is at its cap, 503
    /// `too_many_connections` when the node is full of busy connections — and no probe
    /// connection is left.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, ApiError> {
        self.admit_with(ip, true)
    }

    fn admit_with(self: &Arc<Self>, ip: IpAddr, evict: bool) -> Result<Admitted, ApiError> {
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let (full, probes) = counts.get(&ip).copied().unwrap_or((0, 0));
        let refusal = match self.admit_full(ip, full) {
            Ok(permit) => {
                counts.insert(ip, (full + 1, probes));
                return Ok(Admitted::Now(self.slot(permit, ip, None)));
            }
            Err(refusal) => refusal,
        };
        if evict && refusal.code == ProblemCode::TooManyConnections && self.evict_oldest_idle() {
            return Ok(Admitted::Evicting {
                ip,
                admission: self.clone(),
            });
        }
        if probes >= limits::PROBE_CONNECTIONS_PER_CLIENT {
            return Err(refusal);
        }
        match self.probes.clone().try_acquire_owned() {
            Ok(permit) => {
                counts.insert(ip, (full, probes + 1));
                Ok(Admitted::Now(self.slot(permit, ip, Some(refusal))))
            }
            Err(_) => Err(refusal),
        }
    }

    /// Asks the connection idle longest, of those not asked already, to close; false if no
    /// connection is an idle keep-alive.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = open
            .values()
            .filter(|a| !a.is_evicted())
            .filter_map(|a| Some((a.idle_since()?, a)))
            .min_by_key(|(since, _)| *since);
        oldest.is_some_and(|(_, a)| a.evict())
    }

    fn slot(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        ip: IpAddr,
        probe_only: Option<ApiError>,
    ) -> ConnSlot {
        ConnSlot {
            _permit: permit,
            counted: Some((ip, self.clone())),
            watched: None,
            probe_only,
        }
    }

    /// A node-wide permit for a full connection of `ip`, which has `n` open.
    fn admit_full(&self, ip: IpAddr, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        if n >= self.per_client_max {
            return Err(self.over_client_cap(ip, n));
        }
        self.all
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.full())
    }

    /// 429 `connection_quota_exceeded`: `ip` has `n` connections, its cap.
    fn over_client_cap(&self, ip: IpAddr, n: usize) -> ApiError {
        ApiError::new(
            ProblemCode::ConnectionQuotaExceeded,
            format!(
                "{ip} has {n} connections open, its quota (connections_per_client_max); \
                 reuse one, or retry shortly"
            ),
        )
        .retry_after(1)
    }

    /// 503 `too_many_connections`: every slot is taken, none by an idle connection.
    fn full(&self) -> ApiError {
        ApiError::new(
            ProblemCode::TooManyConnections,
            format!(
                "{} connections are open, the limit (connections_max), and none is idle; \
                 retry shortly",
                self.all_max
            ),
        )
        .retry_after(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// The slot of a connection admitted at once.
    fn now(admitted: Result<Admitted, ApiError>) -> ConnSlot {
        match admitted {
            Ok(Admitted::Now(slot)) => slot,
            other => panic!("not admitted at once: {other:?}"),
        }
    }

    /// A full connection of `ip` that has been answered once and is idle now.
    fn idle(admission: &Arc<Admission>, last: u8) -> (ConnSlot, Arc<Activity>) {
        let mut slot = now(admission.admit(ip(last)));
        let activity = Arc::new(Activity::default());
        slot.watch(activity.clone());
        activity.dispatched();
        activity.answered();
        (slot, activity)
    }

    #[tokio::test]
    async fn a_full_node_closes_its_oldest_idle_connection_for_a_new_client() {
        let admission = Admission::new(3, 3);
        let (older, older_activity) = idle(&admission, 1);
        let (_newer, newer_activity) = idle(&admission, 2);
        let mut busy = now(admission.admit(ip(3)));
        let busy_activity = Arc::new(Activity::default());
        busy.watch(busy_activity.clone());
        busy_activity.dispatched();

        let waiting = admission.admit(ip(4)).unwrap();
        assert!(matches!(waiting, Admitted::Evicting { .. }), "{waiting:?}");
        assert!(older_activity.is_evicted(), "the oldest idle first");
        assert!(!newer_activity.is_evicted());
        assert!(older_activity.should_close());
        // The evicted connection closes (its reader ends the stream): the new one gets in.
        drop(older);
        let slot = waiting.slot().await.unwrap();
        assert!(!slot.is_probe());

        // The next newcomer evicts the next idle one; with none idle left, a probe slot.
        let next = admission.admit(ip(5)).unwrap();
        assert!(newer_activity.is_evicted());
        drop(next);
        let probe = now(admission.admit(ip(6)));
        assert!(
            probe.is_probe(),
            "the busy connection is never asked to close"
        );
        assert!(!busy_activity.is_evicted());
    }

    #[test]
    fn an_address_at_its_cap_gets_probes_then_refusals_and_others_still_get_in() {
        let admission = Admission::new(100, 2);
        let held: Vec<ConnSlot> = (0..2).map(|_| now(admission.admit(ip(2)))).collect();
        assert!(held.iter().all(|s| !s.is_probe()));
        let probes: Vec<ConnSlot> = (0..limits::PROBE_CONNECTIONS_PER_CLIENT)
            .map(|_| now(admission.admit(ip(2))))
            .collect();
        assert!(probes.iter().all(ConnSlot::is_probe));
        let refused = admission.admit(ip(2)).unwrap_err();
        assert_eq!(refused.code, ProblemCode::ConnectionQuotaExceeded);
        assert!(!now(admission.admit(ip(1))).is_probe());
        drop(held);
        assert!(!now(admission.admit(ip(2))).is_probe());
        drop(probes);
    }

    #[test]
    fn a_full_node_refuses_with_too_many_connections_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
        let a = now(admission.admit(ip(1)));
        let _b = now(admission.admit(ip(2)));
        let _c = now(admission.admit(ip(3)));
        let probe = now(admission.admit(ip(4)));
        assert_eq!(
            probe.probe_only.as_ref().map(|e| e.code),
            Some(ProblemCode::TooManyConnections)
        );
        drop(a);
        let d = now(admission.admit(ip(4)));
        assert!(!d.is_probe());
        drop(probe);
        let counts = admission.per_client.lock().unwrap().clone();
        assert_eq!(counts.get(&ip(4)), Some(&(1, 0)));
        assert_eq!(counts.get(&ip(1)), None);
        // The probe reserve is node-wide: once it is taken, a full node refuses at once.
        let probes: Vec<ConnSlot> = (10..10 + limits::PROBE_CONNECTIONS as u8)
            .map(|last| now(admission.admit(ip(last))))
            .collect();
        assert!(probes.iter().all(ConnSlot::is_probe));
        let refused = admission.admit(ip(200)).unwrap_err();
        assert_eq!(refused.code, ProblemCode::TooManyConnections);
    }
}
