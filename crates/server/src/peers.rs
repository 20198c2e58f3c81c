//! Heartbeats between the nodes of a cluster (feature `cluster`; decision 0029): how this
//! node sees each other node — alive or suspected, how long a request to it takes, how far
//! its clock is from ours.
//!
//! ```text
//!  membership task ── every 2 s: the registered nodes (etcd) ── a probe task per other
//!                     node (started when it registers, ended when it leaves)
//!  probe task ─ every heartbeat_interval_ms (500): GET <its URL>/v1/health?probe=live,
//!               within its timeout
//!     answered ──▶ PhiDetector::heartbeat(arrival)       (phi.rs: suspicion)
//!              ──▶ RtoEstimator::sample(round trip)      (rto.rs: the next timeout)
//!              ──▶ clock offset = its clock_unix_ms + RTT/2 − our clock at the answer
//!     timed out ─▶ RtoEstimator::timed_out (the next timeout doubles)
//!  Peers ◀── GET /v1/cluster (`peers`), /metrics, `logbook cluster status`
//!        ◀── the forwarder: a suspected leader is not sent a request (cluster.rs)
//!        ◀── watch_node, every heartbeat interval: the clock watch, and whether this node
//!            hears only a minority of the cluster ─▶ `unfit` (why not to lead) ─▶ elected.rs
//! ```
//!
//! One request, three uses: the live probe is answered by any process that runs, ready or
//! not, is open (no credentials: a node has no token of its own) and exempt from the
//! in-flight limit, so a busy peer is not taken for a dead one. Its round trip is the path a
//! forwarded commit takes. Suspicion is advice, never authority: leadership is the etcd
//! lease's, and a write is fenced where it is stored (decision 0014). Advice steers two
//! things: a request for a suspected leader fails at once with nothing sent (rather than
//! waiting out a timeout into an unknown outcome), and a leader that suspects so many peers
//! that it hears only a minority of the cluster (itself included) resigns, and does not
//! campaign until it hears a majority again.
//!
//! Why the leader's own suspicion stands for its peers' suspicion of it: a heartbeat is a
//! round trip, so a peer whose heartbeats this node cannot get answered cannot, as far as
//! heartbeats tell, get its own answered by this node either. A leader that hears only a
//! minority is cut off from the majority (or the majority is paused), which suspects it —
//! and so it steps down before its etcd lease (10 s) would make it. Peers that stay silent
//! leave the list when their own leases expire; the leader then hears a majority of those
//! left and campaigns again.
//!
//! Bounds: at most [`PEERS_MAX`] peers are probed; each probe task has one request in
//! flight at a time, bounded by its adaptive timeout (≤ 5 s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbook_api::client::{Client, ClientConfig, ClientOptions, RawRequest, RetryPolicy, Verb};
use logbook_api::ops::{ClusterPeer, Health};
use logbook_jetstream::membership::Membership;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::deadline::AdaptiveTimeout;
use crate::phi::{PhiDetector, PhiSettings};
use crate::rto::RtoSettings;

/// How often the registered nodes are listed from etcd, in ms.
const MEMBERSHIP_REFRESH_MS: u64 = 2_000;
/// The most peers one node probes (the rest are not watched; a log line says so).
pub const PEERS_MAX: usize = 64;

/// How this node watches its peers (`ServerConfig::phi_threshold`, `heartbeat_interval_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PeerSettings {
    /// φ at or above which a peer is suspected.
    pub phi_threshold: f64,
    /// The interval between heartbeats to each peer, in ms.
    pub heartbeat_interval_ms: u64,
}

impl PeerSettings {
    /// The detector of one peer: the interval assumed before the second heartbeat is two
    /// intervals (one heartbeat may be lost before a real interval is known); intervals
    /// are censored at this node's threshold.
    fn phi(&self) -> PhiSettings {
        PhiSettings {
            first_interval_ms: self.heartbeat_interval_ms.saturating_mul(2),
            threshold: self.phi_threshold,
            ..PhiSettings::default()
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

/// What this node's heartbeats know of every other node, by node id.
#[derive(Debug)]
pub(crate) struct Peers {
    settings: PeerSettings,
    /// The origin of the monotonic ms the detectors are fed.
    origin: Instant,
    table: Mutex<BTreeMap<String, Peer>>,
}

/// One peer's detector, timeout and clock probe.
#[derive(Debug)]
struct Peer {
    advertise_url: String,
    phi: PhiDetector,
    /// The heartbeats' timeout (its probe task holds it too).
    deadline: Arc<AdaptiveTimeout>,
    heartbeats: u64,
    /// (offset, error bound) of the latest clock probe, in ms.
    clock: Option<(i64, u64)>,
    last_error: Option<String>,
}

/// One answered heartbeat.
struct Answer {
    /// The peer's clock minus ours, ms.
    offset_ms: i64,
    /// The bound on that offset's error (half the round trip), ms.
    error_ms: u64,
}

impl Peers {
    pub(crate) fn new(settings: PeerSettings) -> Self {
        Peers {
            settings,
            origin: Instant::now(),
            table: Mutex::new(BTreeMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Peer>) -> T) -> T {
        f(&mut self.table.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts watching `node_id` at `url`; the timeout its probes get.
    fn add(&self, node_id: &str, url: &str) -> Arc<AdaptiveTimeout> {
        let now = self.now_ms();
        let deadline = Arc::new(AdaptiveTimeout::new(RtoSettings::default()));
        self.with(|t| {
            let mut phi = PhiDetector::new(self.settings.phi());
            // The first arrival is the moment the peer was found: a peer paused before its
            // first answer is then suspected too.
            phi.heartbeat(now);
            t.insert(
                node_id.to_string(),
                Peer {
                    advertise_url: url.to_string(),
                    phi,
                    deadline: deadline.clone(),
                    heartbeats: 0,
                    clock: None,
                    last_error: None,
                },
            );
        });
        deadline
    }

    fn remove(&self, node_id: &str) {
        self.with(|t| t.remove(node_id));
    }

    fn answered(&self, node_id: &str, answer: &Answer) {
        let now = self.now_ms();
        self.with(|t| {
            if let Some(p) = t.get_mut(node_id) {
                p.phi.heartbeat(now);
                p.heartbeats += 1;
                p.clock = Some((answer.offset_ms, answer.error_ms));
                p.last_error = None;
            }
        });
    }

    fn failed(&self, node_id: &str, why: String) {
        self.with(|t| {
            if let Some(p) = t.get_mut(node_id) {
                p.last_error = Some(why);
            }
        });
    }

    /// This node's clock minus the cluster's median clock, in ms, from the latest clock
    /// probes of the peers that answer (a suspected peer's old offset does not count);
    /// `None` while no peer answers.
    pub(crate) fn clock_offset_ms(&self) -> Option<i64> {
        let now = self.now_ms();
        let offsets: Vec<i64> = self.with(|t| {
            t.values()
                .filter(|p| p.heartbeats > 0 && p.phi.phi(now) < self.settings.phi_threshold)
                .filter_map(|p| p.clock.map(|(offset, _)| offset))
                .collect()
        });
        (!offsets.is_empty()).then(|| off_median_ms(&offsets))
    }

    /// φ of `node_id` if this node suspects it (`None`: alive, or not watched).
    pub(crate) fn suspected(&self, node_id: &str) -> Option<f64> {
        let now = self.now_ms();
        self.with(|t| t.get(node_id).map(|p| p.phi.phi(now)))
            .filter(|phi| *phi >= self.settings.phi_threshold)
    }

    /// Why this node should not lead: it suspects so many of the peers it watches that it
    /// and those it hears are a minority of the cluster (`None` otherwise).
    pub(crate) fn in_minority(&self) -> Option<String> {
        let now = self.now_ms();
        let (watched, suspected) = self.with(|t| {
            let suspected = t
                .values()
                .filter(|p| p.phi.phi(now) >= self.settings.phi_threshold)
                .count();
            (t.len(), suspected)
        });
        is_minority(suspected, watched).then(|| {
            format!(
                "this node suspects {suspected} of its {watched} peers (φ ≥ {}): cut off from \
                 the majority as far as heartbeats tell",
                self.settings.phi_threshold
            )
        })
    }

    /// Every peer as `GET /v1/cluster` shows it, by node id.
    pub(crate) fn status(&self) -> Vec<ClusterPeer> {
        let now = self.now_ms();
        self.with(|t| {
            t.iter()
                .map(|(id, p)| {
                    let phi = p.phi.phi(now);
                    ClusterPeer {
                        node_id: id.clone(),
                        advertise_url: p.advertise_url.clone(),
                        phi,
                        suspected: phi >= self.settings.phi_threshold,
                        heartbeats: p.heartbeats,
                        last_heartbeat_ms_ago: (p.heartbeats > 0)
                            .then(|| p.phi.last_arrival_ms().map(|at| now.saturating_sub(at)))
                            .flatten(),
                        srtt_us: p.deadline.srtt_us(),
                        timeout_ms: u64::try_from(p.deadline.timeout().as_millis())
                            .unwrap_or(u64::MAX),
                        clock_offset_ms: p.clock.map(|(o, _)| o),
                        clock_error_ms: p.clock.map(|(_, e)| e),
                        last_error: p.last_error.clone(),
                    }
                })
                .collect()
        })
    }
}

/// Whether a node that suspects `suspected` of the `watched` peers is in a minority of the
/// cluster: it and the peers it hears are fewer than half of all (itself included). A tie
/// is not a minority (neither half can tell which is cut off; the lease decides), so a
/// node of a two-node cluster never resigns for its one peer.
fn is_minority(suspected: usize, watched: usize) -> bool {
    suspected.saturating_mul(2) > watched.saturating_add(1)
}

/// What the heartbeat tasks need besides the table.
pub(crate) struct Heartbeats {
    pub peers: Arc<Peers>,
    pub membership: Membership,
    /// This node's id (not probed).
    pub node_id: String,
    /// The CA certificates an `https://` peer is checked against.
    pub peer_ca_pem: Option<Vec<u8>>,
}

impl Heartbeats {
    /// Lists the registered nodes every 2 s and keeps one probe task per other node, until
    /// `stop`. While etcd cannot be read, the peers known stay probed.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut probes: BTreeMap<String, (String, tokio::task::JoinHandle<()>)> = BTreeMap::new();
        let mut warned_full = false;
        loop {
            if *stop.borrow() {
                break;
            }
            if let Ok(nodes) = self.membership.nodes().await {
                let listed: BTreeMap<String, String> = nodes
                    .into_iter()
                    .filter(|n| n.record.node_id != self.node_id)
                    .map(|n| (n.record.node_id, n.record.advertise_url))
                    .collect();
                // Gone, or back at another URL: stop probing the old one.
                probes.retain(|id, (url, task)| {
                    let keep = listed.get(id) == Some(url);
                    if !keep {
                        task.abort();
                        self.peers.remove(id);
                    }
                    keep
                });
                for (id, url) in listed {
                    if probes.contains_key(&id) {
                        continue;
                    }
                    if probes.len() >= PEERS_MAX {
                        if !warned_full {
                            tracing::warn!(peers_max = PEERS_MAX, node_id = %id,
                                "more peers than are watched; this one is not probed");
                            warned_full = true;
                        }
                        continue;
                    }
                    match self.client(&url) {
                        Ok(client) => {
                            let deadline = self.peers.add(&id, &url);
                            let peers = self.peers.clone();
                            let task = tokio::spawn(probe(peers, id.clone(), client, deadline));
                            probes.insert(id, (url, task));
                        }
                        Err(why) => tracing::warn!(node_id = %id, %url, %why, "peer not probed"),
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(MEMBERSHIP_REFRESH_MS)) => {}
                _ = stop.changed() => {}
            }
        }
        for (_, (_, task)) in probes {
            task.abort();
        }
    }

    /// An HTTP client for heartbeats to `url`: one attempt each (the next heartbeat is the
    /// retry), the adaptive timeout applied around it, the ceiling as its own.
    fn client(&self, url: &str) -> Result<Client, String> {
        let options = ClientOptions {
            config: ClientConfig {
                request_timeout_ms: RtoSettings::default().ceiling_us / 1_000,
                retry: RetryPolicy::none(),
                ..ClientConfig::default()
            },
            bearer_token: None,
            ca_cert_pem: self.peer_ca_pem.clone(),
        };
        Client::with_options(url, &options).map_err(|e| e.to_string())
    }
}

/// Probes `node_id` every heartbeat interval, one request at a time, until aborted.
async fn probe(peers: Arc<Peers>, node_id: String, client: Client, deadline: Arc<AdaptiveTimeout>) {
    let mut tick = tokio::time::interval(peers.settings.interval());
    // A probe that waited out its timeout is followed by the next at once, not by a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match heartbeat(&client, &deadline).await {
            Ok(answer) => peers.answered(&node_id, &answer),
            Err(why) => peers.failed(&node_id, why),
        }
    }
}

/// One heartbeat: the peer's clock offset (Cristian's method), or why it failed.
async fn heartbeat(client: &Client, deadline: &AdaptiveTimeout) -> Result<Answer, String> {
    let path = format!("{}?probe=live", logbook_api::paths::health());
    let sent_unix_ms = crate::auth::tokens::now_ms();
    let sent = Instant::now();
    let answer = deadline
        .run(
            client.send_raw(RawRequest::new(Verb::Get, path)),
            Result::is_ok,
        )
        .await
        .map_err(|t| format!("no answer within {} ms", t.after.as_millis()))?
        .map_err(|e| e.to_string())?;
    let rtt_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
    let health: Health = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("its health answer is malformed: {e}"))?;
    let clock = health
        .clock_unix_ms
        .ok_or("its health answer has no clock_unix_ms")?;
    // Our clock when its clock was read, taken as the middle of the round trip.
    let ours = sent_unix_ms.saturating_add(rtt_ms / 2);
    let offset_ms = i64::try_from(i128::from(clock) - i128::from(ours)).unwrap_or(i64::MAX);
    Ok(Answer {
        offset_ms,
        error_ms: rtt_ms.div_ceil(2),
    })
}

/// This node's clock minus the median of the cluster's clocks (its own and the peers',
/// given as each peer's clock minus ours), in ms. With an even count the two middle clocks
/// are equally the median; the one nearer ours is taken, so that of two nodes that
/// disagree neither is called the odd one out.
fn off_median_ms(peer_offsets: &[i64]) -> i64 {
    let mut clocks: Vec<i64> = peer_offsets.to_vec();
    clocks.push(0);
    clocks.sort_unstable();
    let n = clocks.len();
    let median = if n % 2 == 1 {
        clocks[n / 2]
    } else {
        let (low, high) = (clocks[n / 2 - 1], clocks[n / 2]);
        if low.unsigned_abs() <= high.unsigned_abs() {
            low
        } else {
            high
        }
    };
    median.saturating_neg()
}

/// Watches this node against the cluster every heartbeat interval, until `stop`:
///
/// * its clock: beyond `max_offset_ms` from the median the node answers unready and refuses
///   writes (`AppState::set_clock_fault`), and may not lead;
/// * its peers: while it hears only a minority of the cluster (itself included) it may not
///   lead (it still serves).
///
/// `unfit` says why the node may not lead (`None`: it may); the elected roles resign and
/// stop campaigning while it is `Some` (`elected.rs`). Back within the bound or hearing a
/// majority again, all of it is undone. Each change of either is logged once.
pub(crate) async fn watch_node(
    peers: Arc<Peers>,
    max_offset_ms: u64,
    state: crate::state::AppState,
    unfit: watch::Sender<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(peers.settings.interval());
    // Ticks at least an interval apart, even after this process stalled: see below.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut clock_was_off, mut cut_off_was) = (false, false);
    let mut minority_ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let offset = peers.clock_offset_ms();
        state.metrics().clock_offset_ms.set(offset.unwrap_or(0));
        let clock_fault = offset
            .filter(|o| o.unsigned_abs() > max_offset_ms)
            .map(|o| {
                format!(
                    "this node's clock is {o:+} ms off the cluster's median clock, beyond \
                 max_clock_offset_ms ({max_offset_ms})"
                )
            });
        match (&clock_fault, clock_was_off) {
            (Some(why), false) => {
                tracing::error!(offset_ms = offset.unwrap_or(0), max_offset_ms, %why,
                    "clock off the cluster's: resigning, unready, refusing writes");
            }
            (None, true) => {
                tracing::warn!(
                    offset_ms = offset.unwrap_or(0),
                    max_offset_ms,
                    "clock back within the bound: ready, taking writes, campaigning again"
                );
            }
            _ => {}
        }
        clock_was_off = clock_fault.is_some();
        // A minority on two ticks in a row: after a stall of this process (scheduling, a
        // pause) every peer looks silent until the probes sent on waking are answered, which
        // takes a round trip, not an interval.
        let minority = peers.in_minority();
        minority_ticks = if minority.is_some() {
            minority_ticks.saturating_add(1)
        } else {
            0
        };
        let cut_off = minority.filter(|_| minority_ticks >= 2);
        match (&cut_off, cut_off_was) {
            (Some(why), false) => {
                tracing::warn!(%why, "in a minority: not leading, not campaigning");
            }
            (None, true) => tracing::info!("a majority of peers heard again: campaigning"),
            _ => {}
        }
        cut_off_was = cut_off.is_some();
        let why_not = clock_fault.clone().or(cut_off);
        unfit.send_if_modified(|now| {
            let changed = *now != why_not;
            if changed {
                now.clone_from(&why_not);
            }
            changed
        });
        state.set_clock_fault(clock_fault);
    }
}

#[cfg(test)]
mod tests {
    use super::{is_minority, off_median_ms};

    #[test]
    fn a_node_hearing_fewer_than_half_the_cluster_is_in_a_minority() {
        assert!(!is_minority(0, 0), "alone: nobody to be cut off from");
        assert!(!is_minority(1, 1), "two nodes, a tie: the lease decides");
        assert!(!is_minority(1, 2), "three nodes, hears one: two of three");
        assert!(is_minority(2, 2), "three nodes, hears none");
        assert!(!is_minority(2, 3), "four nodes, a tie");
        assert!(is_minority(3, 3));
        assert!(is_minority(3, 4), "five nodes, hears one: two of five");
        assert!(!is_minority(2, 4));
    }

    #[test]
    fn the_odd_clock_out_is_off_the_median() {
        // A's view: B and C are both 2 s behind it; A is the odd one out.
        assert_eq!(off_median_ms(&[-2_000, -2_000]), 2_000);
        // B's view: A is 2 s ahead, C agrees with B: B is on the median.
        assert_eq!(off_median_ms(&[2_000, 0]), 0);
        assert_eq!(off_median_ms(&[3, -4]), 0);
    }

    #[test]
    fn of_two_disagreeing_clocks_neither_is_the_odd_one_out() {
        assert_eq!(off_median_ms(&[2_000]), 0);
        assert_eq!(off_median_ms(&[-2_000]), 0);
        // Four nodes: two middles (−20, −10), the nearer one counts.
        assert_eq!(off_median_ms(&[-30, -20, -10]), 10);
    }

    #[test]
    fn no_overflow_at_the_extremes() {
        assert_eq!(off_median_ms(&[i64::MIN, i64::MIN]), i64::MAX);
        assert_eq!(off_median_ms(&[i64::MAX, i64::MAX]), -i64::MAX);
    }
}
