//! The backend's own tokio runtime: where every NATS request and publish runs, so the
//! synchronous seam can be called from any thread, and its futures awaited from any runtime.
//!
//! ```text
//!  caller thread ──block_on(fut)──▶ spawn on this runtime ──▶ std channel ──▶ caller
//!  caller task   ──.await completion / end_offset_above ──▶ woken by this runtime's task
//! ```
//!
//! The runtime lives as long as any handle (backend, stream, partition) holds it; the last one
//! shuts it down in the background (no waiting, so dropping a handle inside an async task is
//! allowed), which drops the tasks still running: their completions resolve as
//! [`LogError::Closed`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use logbook_log::{LogError, Result};
use tokio::task::JoinHandle;

/// A multi-thread tokio runtime owned by the backend's handles.
#[derive(Debug)]
pub(crate) struct Runtime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Runtime {
    /// A runtime of `threads` worker threads named `logbook-jetstream`.
    pub(crate) fn new(threads: usize) -> std::io::Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("logbook-jetstream")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Runtime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `future` on this runtime in the background.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` on this runtime and blocks the calling thread until it finishes. Call it
    /// from a thread that may block (the seam's rule), never from this runtime's own workers.
    ///
    /// # Errors
    /// [`LogError::Closed`] when the runtime shut down before the future finished.
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The receiver is gone only if the caller's thread died; nothing to tell it then.
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| LogError::Closed)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Never waits, so the last handle may be dropped anywhere, async tasks included.
            runtime.shutdown_background();
        }
    }
}

/// A task of this runtime as a future any runtime can await; dropping it aborts the task.
/// Resolves to `fallback` when the task was cancelled (the runtime shut down).
pub(crate) struct AbortOnDrop<T> {
    task: JoinHandle<T>,
    fallback: Option<T>,
}

impl<T> AbortOnDrop<T> {
    pub(crate) fn new(task: JoinHandle<T>, fallback: T) -> Self {
        AbortOnDrop {
            task,
            fallback: Some(fallback),
        }
    }
}

impl<T: Unpin> Future for AbortOnDrop<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        match Pin::new(&mut this.task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(_)) => match this.fallback.take() {
                Some(fallback) => Poll::Ready(fallback),
                // Polled again after it finished: a caller bug, answered as still pending.
                None => Poll::Pending,
            },
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
