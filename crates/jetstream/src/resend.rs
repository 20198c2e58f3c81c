//! Wake-ups of appends that wait for an acknowledgment which will not come.
//!
//! A publish is acknowledged by its stream's leader. When that leader dies, the messages it
//! was sent are answered by nobody: the followers drop them while they elect a new leader
//! (seconds: nats-server's Raft election timeout), and a publish would wait out its whole
//! acknowledgment deadline before it is sent again — the deadline, not the election, set the
//! stall. Two events say that an awaited acknowledgment will not come, and wake the waiting
//! appends so they are sent again at once, under the same `Nats-Msg-Id` (stored once):
//!
//! ```text
//!  $JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream> ──▶ the appends to <stream>
//!  the connection re-established (Event::Connected)   ──▶ every append of the connection
//! ```
//!
//! A wake-up says only "send again": the outcome of the attempt it ends is unknown (it may
//! be stored), and the retry's answer — stored, or a duplicate of the stored one — settles
//! it. Missing a wake-up costs time, never correctness: the acknowledgment deadline still
//! ends the wait.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// The subject prefix of JetStream's stream-leader-elected advisories; the stream's name
/// follows it.
pub(crate) const LEADER_ELECTED_PREFIX: &str = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.";

/// The wake-ups of one connection's appends, per JetStream stream. Cheap to share by `Arc`.
#[derive(Debug, Default)]
pub(crate) struct Resends {
    /// One `Notify` per stream some partition handle has; entries of dropped handles are
    /// removed when the next one registers (so the map holds at most the live streams).
    streams: Mutex<HashMap<String, Weak<Notify>>>,
}

impl Resends {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Notify>>> {
        // Only whole entries are inserted and removed under the lock.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wake-ups of `stream`'s appends (shared by every handle on it).
    pub(crate) fn register(&self, stream: &str) -> Arc<Notify> {
        let mut streams = self.streams();
        if let Some(notify) = streams.get(stream).and_then(Weak::upgrade) {
            return notify;
        }
        streams.retain(|_, n| n.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        streams.insert(stream.to_string(), Arc::downgrade(&notify));
        notify
    }

    /// A new leader of `stream` was elected: wake its appends.
    pub(crate) fn leader_elected(&self, stream: &str) {
        if let Some(notify) = self.streams().get(stream).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
    }

    /// The connection was (re-)established: acknowledgments of what was sent before are lost
    /// with the old one; wake every append.
    pub(crate) fn reconnected(&self) {
        let live: Vec<Arc<Notify>> = self.streams().values().filter_map(Weak::upgrade).collect();
        for notify in live {
            notify.notify_waiters();
        }
    }

    /// Wakes appends at each leader-elected advisory until the subscription ends (the
    /// connection closed). Without the subscription (e.g. an account that may not subscribe
    /// to advisories) appends are sent again only at their deadline.
    pub(crate) async fn follow_advisories(self: Arc<Self>, client: async_nats::Client) {
        let subject = format!("{LEADER_ELECTED_PREFIX}>");
        let mut advisories = match client.subscribe(subject).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e,
                    "no leader-elected advisories: appends to a dead leader wait out their deadline");
                return;
            }
        };
        while let Some(message) = advisories.next().await {
            if let Some(stream) = message.subject.as_str().strip_prefix(LEADER_ELECTED_PREFIX) {
                self.leader_elected(stream);
            }
        }
    }
}

/// A wake-up of one stream's appends, registered when made: a wake-up after this call and
/// before the future is awaited is not missed.
pub(crate) fn armed(notify: &Arc<Notify>) -> Pin<Box<OwnedNotified>> {
    let mut wake = Box::pin(notify.clone().notified_owned());
    wake.as_mut().enable();
    wake
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll};

    fn is_woken(wake: &mut Pin<Box<OwnedNotified>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        wake.as_mut().poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn an_election_wakes_the_appends_of_its_stream_only() {
        let resends = Resends::default();
        let (a, b) = (resends.register("LB_a"), resends.register("LB_b"));
        let (mut on_a, mut on_b) = (armed(&a), armed(&b));
        resends.leader_elected("LB_a");
        assert!(is_woken(&mut on_a), "armed before the election: woken");
        assert!(!is_woken(&mut on_b), "another stream's election");
        resends.leader_elected("LB_unknown");
        assert!(!is_woken(&mut on_b));
    }

    #[test]
    fn a_reconnection_wakes_every_append() {
        let resends = Resends::default();
        let (a, b) = (resends.register("LB_a"), resends.register("LB_b"));
        let (mut on_a, mut on_b) = (armed(&a), armed(&b));
        resends.reconnected();
        assert!(is_woken(&mut on_a) && is_woken(&mut on_b));
    }

    #[test]
    fn handles_of_one_stream_share_its_wake_ups_and_dropped_ones_are_forgotten() {
        let resends = Resends::default();
        let first = resends.register("LB_a");
        assert!(Arc::ptr_eq(&first, &resends.register("LB_a")));
        drop(first);
        let _other = resends.register("LB_b");
        assert_eq!(
            resends.streams().len(),
            1,
            "the dropped stream's entry is gone"
        );
    }
}
