//! Who gets a connection: the node-wide limit (`connections_max`), a cap per client address
//! (`connections_per_client_max`), and a small reserve of probe connections so that health
//! checks and scrapes answer while the others are exhausted.
//!
//! ```text
//!  accept ─▶ address under its cap and a node-wide permit? ── yes ─▶ a full connection
//!              │ no
//!              ▼
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
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ProblemCode};
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
}

/// An admitted connection's hold on the budget, given back on drop.
#[derive(Debug)]
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    /// The client address counted, and where it is given back.
    counted: Option<(IpAddr, Arc<Admission>)>,
    /// For a probe connection: the refusal any route but a probe's gets.
    pub probe_only: Option<ApiError>,
}

impl ConnSlot {
    /// Whether this is a probe connection (one request, health and metrics only).
    pub fn is_probe(&self) -> bool {
        self.probe_only.is_some()
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
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
        })
    }

    /// Admits a connection from `ip`: a full one, else a probe one (at most
    /// [`limits::PROBE_CONNECTIONS_PER_CLIENT`] per address), else the refusal.
    ///
    /// # Errors
    /// 429 `connection_quota_exceeded` when the address is at its cap, 503
    /// `too_many_connections` when the node is full — and no probe connection is left.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, ApiError> {
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let (full, probes) = counts.get(&ip).copied().unwrap_or((0, 0));
        let refusal = match self.admit_full(ip, full) {
            Ok(permit) => {
                counts.insert(ip, (full + 1, probes));
                return Ok(self.slot(permit, ip, None));
            }
            Err(refusal) => refusal,
        };
        if probes >= limits::PROBE_CONNECTIONS_PER_CLIENT {
            return Err(refusal);
        }
        match self.probes.clone().try_acquire_owned() {
            Ok(permit) => {
                counts.insert(ip, (full, probes + 1));
                Ok(self.slot(permit, ip, Some(refusal)))
            }
            Err(_) => Err(refusal),
        }
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
            probe_only,
        }
    }

    /// A node-wide permit for a full connection of `ip`, which has `n` open.
    fn admit_full(&self, ip: IpAddr, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        if n >= self.per_client_max {
            return Err(ApiError::new(
                ProblemCode::ConnectionQuotaExceeded,
                format!(
                    "{ip} has {n} connections open, its quota (connections_per_client_max); \
                     reuse one, or retry shortly"
                ),
            )
            .retry_after(1));
        }
        self.all.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ProblemCode::TooManyConnections,
                format!(
                    "{} connections are open, the limit (connections_max); retry shortly",
                    self.all_max
                ),
            )
            .retry_after(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_at_its_cap_gets_probes_then_refusals_and_others_still_get_in() {
        let admission = Admission::new(100, 2);
        let held: Vec<ConnSlot> = (0..2).map(|_| admission.admit(ip(2)).unwrap()).collect();
        assert!(held.iter().all(|s| !s.is_probe()));
        let probes: Vec<ConnSlot> = (0..limits::PROBE_CONNECTIONS_PER_CLIENT)
            .map(|_| admission.admit(ip(2)).unwrap())
            .collect();
        assert!(probes.iter().all(ConnSlot::is_probe));
        let refused = admission.admit(ip(2)).unwrap_err();
        assert_eq!(refused.code, ProblemCode::ConnectionQuotaExceeded);
        assert!(!admission.admit(ip(1)).unwrap().is_probe());
        drop(held);
        assert!(!admission.admit(ip(2)).unwrap().is_probe());
        drop(probes);
    }

    #[test]
    fn a_full_node_refuses_with_too_many_connections_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
        let a = admission.admit(ip(1)).unwrap();
        let _b = admission.admit(ip(2)).unwrap();
        let _c = admission.admit(ip(3)).unwrap();
        let probe = admission.admit(ip(4)).unwrap();
        assert_eq!(
            probe.probe_only.as_ref().map(|e| e.code),
            Some(ProblemCode::TooManyConnections)
        );
        drop(a);
        let d = admission.admit(ip(4)).unwrap();
        assert!(!d.is_probe());
        drop(probe);
        let counts = admission.per_client.lock().unwrap().clone();
        assert_eq!(counts.get(&ip(4)), Some(&(1, 0)));
        assert_eq!(counts.get(&ip(1)), None);
        // The probe reserve is node-wide: once it is taken, a full node refuses at once.
        let probes: Vec<ConnSlot> = (10..10 + limits::PROBE_CONNECTIONS as u8)
            .map(|last| admission.admit(ip(last)).unwrap())
            .collect();
        assert!(probes.iter().all(ConnSlot::is_probe));
        let refused = admission.admit(ip(200)).unwrap_err();
        assert_eq!(refused.code, ProblemCode::TooManyConnections);
    }
}
