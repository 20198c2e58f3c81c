//! Idle keep-alive connections, and closing the oldest of them when the node is full.
//!
//! A connection is an *idle keep-alive* when it has been answered at least once, no request
//! of it is in the router or being answered, and no byte of its next head has arrived: the
//! state in which HTTP/1.1 lets a server close it (RFC 9112 §9.3: a client must be ready
//! for a kept-alive connection to close, and retries a request it had not sent). When every
//! connection slot is taken, admission ([`crate::admission`]) asks the one idle longest to
//! close, and the new client waits (bounded) for its slot instead of being refused.
//!
//! ```text
//!  router:   track() ── in_service +1 ──▶ … ──▶ answer's body dropped: in_service −1,
//!                                                idle_since = the activity clock
//!  head guard: a byte of the next head ──▶ pending_head (until the router has it)
//!  admission, node full: min idle_since over idle connections ──▶ evict(): flag + wake
//!  head guard's next read, idle, evicted, nothing on the socket ──▶ end of stream:
//!                                                                  hyper closes cleanly
//! ```
//!
//! The close happens in the connection's own reader (the head guard answers hyper's read
//! with the end of the stream, once the socket has nothing to read), so hyper ends the
//! connection as if the client had closed it between requests: no answer is cut short, a
//! request already in the socket is served, and graceful shutdown is unchanged. A
//! connection that turns busy between the choice and its next read is not closed then; it
//! closes once it is idle again, and the waiting client may time out (it is then given a
//! probe connection or refused, as before). A request still on the network when the
//! connection closes meets a closed connection, as with any server that closes idle
//! connections: clients retry such requests (RFC 9112 §9.3.1).
//!
//! Costs per request: two atomic additions and a load of the activity clock; a registered
//! waker only when the reader waits while idle.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Orders the ends of answers across connections: the smaller, the longer idle.
static ACTIVITY_CLOCK: AtomicU64 = AtomicU64::new(1);

/// One connection's activity, as admission sees it.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests handed to the router whose answer has not been dropped by hyper.
    in_service: AtomicU64,
    /// Answers completed (their bodies dropped by hyper).
    answered: AtomicU64,
    /// A byte of a head arrived that the router has not been handed yet.
    pending_head: AtomicBool,
    /// [`ACTIVITY_CLOCK`] when the last answer ended.
    idle_since: AtomicU64,
    /// Admission asked this connection to close when next idle.
    evicted: AtomicBool,
    /// The reader, when it waits for the socket while idle.
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    /// A request reached the router.
    pub fn dispatched(&self) {
        self.in_service.fetch_add(1, Ordering::AcqRel);
        self.pending_head.store(false, Ordering::Release);
    }

    /// A byte of a new head arrived (the head guard saw it begin).
    pub fn head_begun(&self) {
        self.pending_head.store(true, Ordering::Release);
    }

    /// An answer's body was dropped by hyper: written whole, or the connection ended.
    pub(crate) fn answered(&self) {
        self.idle_since.store(
            ACTIVITY_CLOCK.fetch_add(1, Ordering::AcqRel),
            Ordering::Release,
        );
        self.answered.fetch_add(1, Ordering::AcqRel);
        self.in_service.fetch_sub(1, Ordering::AcqRel);
    }

    /// Answers completed so far (bodies dropped by hyper).
    pub fn answered_count(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// When the connection became idle (the smaller, the longer ago), if it is an idle
    /// keep-alive now.
    pub fn idle_since(&self) -> Option<u64> {
        let idle = self.answered.load(Ordering::Acquire) > 0
            && self.in_service.load(Ordering::Acquire) == 0
            && !self.pending_head.load(Ordering::Acquire);
        idle.then(|| self.idle_since.load(Ordering::Acquire))
    }

    /// Asks the connection to close when idle, and wakes its reader if it waits. False if
    /// it was asked already.
    pub fn evict(&self) -> bool {
        if self.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        let reader = self.reader.lock().ok().and_then(|mut r| r.take());
        if let Some(waker) = reader {
            waker.wake();
        }
        true
    }

    /// Whether admission asked this connection to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Whether the reader should end the stream now: asked to close, and idle.
    pub fn should_close(&self) -> bool {
        self.evicted.load(Ordering::Acquire) && self.idle_since().is_some()
    }

    /// The reader is about to wait for the socket: registered while idle, so that
    /// [`Activity::evict`] can wake it.
    pub fn waiting(&self, waker: &Waker) {
        if self.idle_since().is_none() {
            return;
        }
        if let Ok(mut slot) = self.reader.lock() {
            match slot.as_ref() {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        // An eviction between the check above and the registration found no waker: the
        // caller looks at `should_close` again after registering.
    }
}

/// An answer's body that tells its connection's [`Activity`] when hyper is done with it.
#[derive(Debug)]
pub struct AnswerBody {
    inner: axum::body::Body,
    activity: Arc<Activity>,
}

impl AnswerBody {
    /// Wraps `inner`, the answer to a request dispatched on the connection of `activity`.
    pub fn new(inner: axum::body::Body, activity: Arc<Activity>) -> Self {
        AnswerBody { inner, activity }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.activity.answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_after_an_answer_until_its_next_head_begins() {
        let a = Activity::default();
        assert_eq!(
            a.idle_since(),
            None,
            "a new connection is not a kept-alive one"
        );
        a.dispatched();
        assert_eq!(a.idle_since(), None, "in the router");
        a.answered();
        let first = a.idle_since().unwrap();
        a.head_begun();
        assert_eq!(a.idle_since(), None, "a head is arriving");
        a.dispatched();
        a.answered();
        assert!(a.idle_since().unwrap() > first, "idle again, more recently");
        assert!(!a.should_close());
        assert!(a.evict());
        assert!(!a.evict(), "asked once");
        assert!(a.should_close());
        a.head_begun();
        assert!(!a.should_close(), "never while a head arrives");
    }
}
