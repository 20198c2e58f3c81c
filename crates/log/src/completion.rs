//! Completions: how an append reports its outcome, and how readers wait for new records.
//!
//! Both work for blocking callers (a `Condvar`) and for async callers (a `Waker`), so the
//! log needs no async runtime while a tokio server can still `.await` it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};

/// Where an acknowledged append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// The partition.
    pub partition: u32,
    /// Offset of the first record of the append.
    pub base_offset: u64,
    /// Records in the append; they have offsets `base_offset..base_offset + record_count`.
    pub record_count: u32,
}

impl AppendAck {
    /// Offset of the last record of the append.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data half-updated
    // (every critical section is a single assignment), so poisoning carries no meaning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct SlotState {
    result: Option<Result<AppendAck>>,
    waker: Option<Waker>,
    /// A thread is (or is about to be) blocked in [`AppendCompletion::wait`]. Only then is
    /// the condition variable signalled: a signal is a syscall even with nobody waiting, and
    /// async callers (the server) never wait on it.
    blocked: bool,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

/// The pending outcome of one append. Resolved by the partition's writer once the batch is
/// acknowledged (durable under fsync `always`) or failed. Wait with [`Self::wait`] or
/// `.await` it.
#[derive(Debug)]
#[must_use = "an append is only acknowledged once its completion resolves"]
pub struct AppendCompletion {
    slot: Arc<Slot>,
}

/// The writer's end of an [`AppendCompletion`]: whoever performs the append (the embedded
/// partition's writer thread, a network backend's task) resolves it once with
/// [`Completer::complete`]. Dropped unresolved, it resolves the completion with
/// [`LogError::Closed`], so no caller waits forever.
#[derive(Debug)]
pub struct Completer {
    slot: Arc<Slot>,
}

/// Creates a linked completion and completer.
pub(crate) fn completion() -> (AppendCompletion, Completer) {
    let slot = Arc::new(Slot::default());
    (AppendCompletion { slot: slot.clone() }, Completer { slot })
}

impl AppendCompletion {
    /// A pending completion and the [`Completer`] that resolves it: how a backend other than
    /// the embedded log (docs/decisions/0011) hands its callers the same completion type.
    pub fn channel() -> (AppendCompletion, Completer) {
        completion()
    }
}

impl Completer {
    /// Resolves the completion; wakes a blocked or awaiting caller.
    pub fn complete(self, result: Result<AppendAck>) {
        let (waker, blocked) = {
            let mut state = lock(&self.slot.state);
            state.result = Some(result);
            (state.waker.take(), state.blocked)
        };
        if blocked {
            self.slot.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        // A completer dropped without completing (writer thread gone) must not leave a
        // caller waiting forever.
        let mut state = lock(&self.slot.state);
        if state.result.is_none() {
            state.result = Some(Err(LogError::Closed));
            let waker = state.waker.take();
            drop(state);
            self.slot.ready.notify_all();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl AppendCompletion {
    /// Blocks until the append is acknowledged or fails.
    pub fn wait(self) -> Result<AppendAck> {
        let mut state = lock(&self.slot.state);
        loop {
            if let Some(result) = state.result.take() {
                return result;
            }
            state.blocked = true;
            state = self
                .slot
                .ready
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the outcome is known (then [`Self::wait`] returns at once).
    pub fn is_ready(&self) -> bool {
        lock(&self.slot.state).result.is_some()
    }
}

impl Future for AppendCompletion {
    type Output = Result<AppendAck>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.slot.state);
        match state.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A monotonically increasing position that readers can wait on, blocking
/// ([`Watermark::wait_above`]) or async ([`Watermark::above`]): the embedded partition's
/// acknowledged end offset, or another layer's "everything below this is settled" (the
/// transaction store's chain of commit records on a cluster leader).
#[derive(Debug, Default)]
pub struct Watermark {
    value: AtomicU64,
    lock: Mutex<Vec<Waker>>,
    changed: Condvar,
}

impl Watermark {
    /// A watermark at `value`.
    pub fn new(value: u64) -> Self {
        Watermark {
            value: AtomicU64::new(value),
            ..Watermark::default()
        }
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Sets the watermark to `to` and wakes every waiter.
    ///
    /// # Panics
    /// If `to` is below the value: a caller that knows its values only grow broke that.
    pub(crate) fn advance(&self, to: u64) {
        let wakers = {
            let mut wakers = lock(&self.lock);
            let old = self.value.swap(to, Ordering::AcqRel);
            assert!(to >= old, "watermark must not go backwards ({old} -> {to})");
            std::mem::take(&mut *wakers)
        };
        self.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Raises the watermark to `to` if it is below, waking every waiter then; a lower `to`
    /// changes nothing (for positions settled out of order, each implying those below it).
    pub fn raise(&self, to: u64) {
        if self.get() >= to {
            return;
        }
        let wakers = {
            let mut wakers = lock(&self.lock);
            if self.value.fetch_max(to, Ordering::AcqRel) >= to {
                return;
            }
            std::mem::take(&mut *wakers)
        };
        self.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Wakes every waiter without changing the value (used on close).
    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut *lock(&self.lock));
        self.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Blocks until the value exceeds `above` or `timeout` passes; returns the value.
    pub fn wait_above(&self, above: u64, timeout: Duration) -> u64 {
        // A timeout too large to add to now (e.g. Duration::MAX) means "no deadline".
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = lock(&self.lock);
        loop {
            let v = self.get();
            let now = Instant::now();
            if v > above || deadline.is_some_and(|d| now >= d) {
                return v;
            }
            let wait = deadline.map_or(Duration::from_secs(3600), |d| d - now);
            guard = self
                .changed
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A future resolving to the value once it exceeds `above` (it never resolves
    /// otherwise: drop it to stop waiting).
    pub fn above(self: &Arc<Self>, above: u64) -> EndOffsetAbove {
        EndOffsetAbove::watermark(self.clone(), above)
    }

    /// Registers `waker` to be woken at the next advance unless the value already exceeds
    /// `above`; returns the value if it does.
    pub(crate) fn poll_above(&self, above: u64, waker: &Waker) -> Option<u64> {
        let mut wakers = lock(&self.lock);
        let v = self.get();
        if v > above {
            return Some(v);
        }
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        None
    }
}

/// A watermark of its own never closes.
impl WatchedEnd for Watermark {
    fn acked(&self) -> &Watermark {
        self
    }

    fn is_closed(&self) -> bool {
        false
    }
}

/// A future resolving to a partition's acknowledged end offset once it exceeds a value (or
/// the partition closes). Created by [`crate::LogPartition::end_offset_above`]: the embedded
/// log's watermark without allocating, or another backend's future
/// ([`EndOffsetAbove::boxed`]); and by [`Watermark::above`], to the watermark's value.
pub struct EndOffsetAbove {
    inner: EndOffsetInner,
}

/// What the embedded partition's wait watches: its acknowledged end offset and whether it
/// closed. A trait so that this module need not know the partition's state.
pub(crate) trait WatchedEnd: Send + Sync {
    /// The acknowledged end offset.
    fn acked(&self) -> &Watermark;
    /// Whether the partition closed (the wait then ends at the current value).
    fn is_closed(&self) -> bool;
}

enum EndOffsetInner {
    Watermark {
        watermark: Arc<dyn WatchedEnd>,
        above: u64,
    },
    Boxed(Pin<Box<dyn Future<Output = u64> + Send>>),
}

impl std::fmt::Debug for EndOffsetAbove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            EndOffsetInner::Watermark { above, .. } => f
                .debug_struct("EndOffsetAbove")
                .field("above", above)
                .finish(),
            EndOffsetInner::Boxed(_) => f.write_str("EndOffsetAbove(boxed)"),
        }
    }
}

impl EndOffsetAbove {
    /// The embedded partition's wait.
    pub(crate) fn watermark(watermark: Arc<dyn WatchedEnd>, above: u64) -> Self {
        EndOffsetAbove {
            inner: EndOffsetInner::Watermark { watermark, above },
        }
    }

    /// Another backend's wait: `future` resolves to the end offset once it exceeds the value
    /// asked for, or once the partition closes.
    pub fn boxed(future: impl Future<Output = u64> + Send + 'static) -> Self {
        EndOffsetAbove {
            inner: EndOffsetInner::Boxed(Box::pin(future)),
        }
    }
}

impl Future for EndOffsetAbove {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        match &mut self.inner {
            EndOffsetInner::Watermark { watermark, above } => {
                match watermark.acked().poll_above(*above, cx.waker()) {
                    Some(v) => Poll::Ready(v),
                    None if watermark.is_closed() => Poll::Ready(watermark.acked().get()),
                    None => Poll::Pending,
                }
            }
            EndOffsetInner::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_resolves_across_threads() {
        let (c, w) = completion();
        let t = std::thread::spawn(move || c.wait());
        w.complete(Ok(AppendAck {
            partition: 1,
            base_offset: 5,
            record_count: 2,
        }));
        let ack = t.join().unwrap().unwrap();
        assert_eq!(ack.last_offset(), 6);
    }

    #[test]
    fn a_dropped_completer_reports_closed_instead_of_hanging() {
        let (c, w) = completion();
        drop(w);
        assert!(matches!(c.wait(), Err(LogError::Closed)));
    }

    #[test]
    fn watermark_wait_returns_when_advanced_or_timed_out() {
        let w = Arc::new(Watermark::new(3));
        assert_eq!(w.wait_above(3, Duration::from_millis(10)), 3);
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.wait_above(3, Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        w.advance(7);
        assert_eq!(t.join().unwrap(), 7);
    }
}
