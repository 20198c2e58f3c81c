//! The push tail: `GET /v1/streams/{stream}/records/events`, a stream's records as
//! server-sent events (the WHATWG HTML "server-sent events" format), from given offsets,
//! the start or the end, across chosen partitions.
//!
//! ```text
//!  log partitions ──reads (blocking pool, up to SSE_READS_CONCURRENT at once)──▶ producer task
//!        ▲  wake: end_offset_above / heartbeat /    │ one chunk per read (frame.rs)
//!        └────────  50 ms tick (shutdown, client gone)  ▼ try_send
//!                   bounded queue (events, bytes) ──▶ body: one frame per chunk (hyper polls)
//!                   full: wait; nothing taken for stall_ms: `event: dropped`, then end
//! ```
//!
//! The first event is only an id: the cursor the subscription starts from (`P:O,...`: per
//! partition read, the next offset), with `from=end` each partition's latest end. Each
//! record is then one event: `id:` the cursor after it, `event: record`, `data:` the record
//! as `GET .../records` shows it. A client that reconnects with the last id it received as
//! `Last-Event-ID` resumes exactly after the last event it received, nothing lost, nothing
//! repeated — even one that received no record: the opening id fixed where `end` was
//! (decision 0015's amendment). The cursor moves only with record events, so heartbeats
//! need no id. A comment line `: heartbeat` goes out when
//! nothing else has for `heartbeat_ms`, so proxies and clients see a live connection. The
//! events of one partition's read travel together, as one chunk of the queue and one frame
//! of the body (`frame.rs`): the per-record cost is the record's JSON and its id, not a
//! queue entry, a wake-up and a write each.
//!
//! Invariants and limits:
//! * memory per connection is bounded: at most [`limits::SSE_QUEUE_EVENTS`] events and
//!   [`limits::SSE_QUEUE_BYTES_MAX`] bytes wait for the client (one chunk larger than that
//!   still goes out alone), and at most [`limits::SSE_READS_CONCURRENT`] reads of
//!   [`limits::SSE_READ_BYTES_MAX`] are in hand beside them (as records and as events:
//!   about 12 MiB per subscription whose client reads nothing, 64 of them about 770 MB;
//!   decision 0015's last amendment has the measurement). While the queue is full the
//!   task stops reading (back-pressure: the records wait in the log, which is the buffer).
//!   A client that takes nothing from a full queue for `stall_ms` gets `event: dropped`
//!   with the reason, its id where to resume, and the connection ends: a slow consumer
//!   never makes the server buffer without bound, nor holds a subscription forever;
//! * the cursor moves only once a chunk is queued, in the order chunks are queued: an id
//!   (of a record event or of the last event) names exactly what was queued before it;
//! * subscriptions count against a budget of their own ([`limits::SUBSCRIPTIONS_MAX`]), not
//!   the requests in flight, so long-lived connections cannot starve short requests; one
//!   more is 429 `subscription_budget_exhausted` with `Retry-After`, as the long-poll
//!   budget answers (decision 0021: the client backs off, the server is not failing);
//! * at shutdown every subscription ends with `event: shutdown` (it must not hold the drain);
//! * with `wait_ms_max` set (a node setting), a subscription ends after that long with
//!   `event: closed` and the id to resume from, like any other wait the node cuts.

mod frame;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use logbook_api::paths::route;
use logbook_api::streams::{EventEnd, EventKind};
use logbook_log::{LogError, LogStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{Path, blocking};
use crate::head::Tracker;
use crate::limits;
use crate::state::{AppState, Phase};

use super::Params;
use frame::{Chunk, Cursor, Serialised, parse_cursor};

/// Where each chosen partition starts: `Last-Event-ID` when the client resumes, else
/// `from` (`start`, `end` — the default — `group:G`, the positions of the group `G` given as
/// `group`, or `P:O,...`, unnamed partitions at their end).
fn starting_cursor(
    stream: &dyn LogStream,
    q: &Params,
    headers: &HeaderMap,
    group: Option<Cursor>,
) -> Result<(Cursor, &'static str), ApiError> {
    let count = stream.partition_count();
    let chosen: Vec<u32> = match q.text("partitions") {
        None => (0..count).collect(),
        Some(list) => list
            .split(',')
            .map(|p| {
                p.parse::<u32>().ok().filter(|p| *p < count).ok_or_else(|| {
                    ApiError::invalid(
                        "partitions",
                        format!("{p:?} is not a partition of this stream (0..{count})"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut named = std::collections::BTreeSet::new();
    if let Some(p) = chosen.iter().find(|p| !named.insert(**p)) {
        return Err(ApiError::invalid(
            "partitions",
            format!("partition {p} is named twice"),
        ));
    }
    let end = |p: u32| stream.partition(p).map(|p| p.end_offset()).unwrap_or(0);
    let start = |p: u32| stream.partition(p).map(|p| p.start_offset()).unwrap_or(0);
    if let Some(id) = headers.get("last-event-id") {
        let text = id
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "not ASCII"))?;
        let cursor = parse_cursor(text, "Last-Event-ID")?;
        if let Some(p) = cursor.keys().find(|p| **p >= count) {
            return Err(ApiError::invalid(
                "Last-Event-ID",
                format!("partition {p} is not a partition of this stream (0..{count})"),
            ));
        }
        return Ok((cursor, "Last-Event-ID"));
    }
    if let Some(group) = group {
        let cursor = chosen
            .iter()
            .map(|p| (*p, group.get(p).copied().unwrap_or_else(|| start(*p))))
            .collect();
        return Ok((cursor, "from"));
    }
    let cursor = match q.text("from").unwrap_or("end") {
        "end" => chosen.iter().map(|p| (*p, end(*p))).collect(),
        "start" => chosen.iter().map(|p| (*p, start(*p))).collect(),
        text => {
            let named = parse_cursor(text, "from")?;
            if let Some(p) = named.keys().find(|p| !chosen.contains(p)) {
                return Err(ApiError::invalid(
                    "from",
                    format!("partition {p} is not one of the partitions read"),
                ));
            }
            chosen
                .iter()
                .map(|p| (*p, named.get(p).copied().unwrap_or_else(|| end(*p))))
                .collect()
        }
    };
    Ok((cursor, "from"))
}

/// A duration parameter in ms, [`limits::SSE_WAIT_MS_MIN`]..=[`limits::SSE_WAIT_MS_MAX`].
fn ms_param(q: &Params, name: &str, default: u64) -> Result<u64, ApiError> {
    let ms = q.get::<u64>(name)?.unwrap_or(default);
    if !(limits::SSE_WAIT_MS_MIN..=limits::SSE_WAIT_MS_MAX).contains(&ms) {
        return Err(ApiError::invalid(
            name,
            format!(
                "{name} must be {}..={}",
                limits::SSE_WAIT_MS_MIN,
                limits::SSE_WAIT_MS_MAX
            ),
        ));
    }
    Ok(ms)
}

/// Brings the stream's handle up to each partition's latest end
/// ([`logbook_log::LogPartition::latest_end_offset`]) before a subscription starts. A cluster
/// node's handle knows the end it last saw, which trails what other nodes appended: `end`
/// would then start at old records, and a `Last-Event-ID`, `P:O` or group commit taken on
/// another node would be refused as out of range. One round trip to each partition's leader
/// on a cluster; nothing on the embedded log, whose end is current.
async fn latest_ends(stream: &Arc<dyn LogStream>) -> Result<(), ApiError> {
    let stream = stream.clone();
    blocking(move || {
        stream
            .partitions()
            .iter()
            .try_for_each(|p| p.latest_end_offset().map(|_| ()))
    })
    .await?
    .map_err(|e| ApiError::from_log(e, |_| String::new()))
}

/// Refuses a starting offset outside what the partition holds, naming `field`.
fn check_in_range(stream: &dyn LogStream, cursor: &Cursor, field: &str) -> Result<(), ApiError> {
    for (p, offset) in cursor {
        let part = stream
            .partition(*p)
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        let (start, end) = (part.start_offset(), part.end_offset());
        if *offset < start || *offset > end {
            let e = LogError::OffsetOutOfRange {
                partition: *p,
                offset: *offset,
                start,
                end,
            };
            return Err(ApiError::from_log(e, |_| String::new()).field(field));
        }
    }
    Ok(())
}

/// Streams records as server-sent events (see the module docs): from `Last-Event-ID`, else
/// from `from`, with a heartbeat comment after `heartbeat_ms` of silence.
#[utoipa::path(get, path = route::RECORD_EVENTS, tag = "streams",
    params(("stream" = String, Path),
        ("partitions" = Option<String>, Query, description = "Partitions to read, `0,3,5`; default all"),
        ("from" = Option<String>, Query, description = "`end` (default: only new records), `start`, `group:G` (the consumer group G's committed offsets; needs groups:read:G), or `P:O,...` (unnamed partitions start at their end)"),
        ("heartbeat_ms" = Option<u64>, Query, minimum = 100, maximum = 300000, description = "A `: heartbeat` comment after this long without an event, ms; 100..=300000, default 15000"),
        ("stall_ms" = Option<u64>, Query, minimum = 100, maximum = 300000, description = "Drop the subscription (`event: dropped`) when the client takes nothing from its full queue for this long, ms; 100..=300000, default 30000"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (its id): overrides `from` and `partitions`")),
    responses(
        (status = 200, description = "`text/event-stream`: first an event of only an id, the cursor the subscription starts from (with `from=end`, each partition's end), then `record` events (id = the cursor after the record), `dropped` (slow consumer), `error`, `shutdown`, `closed` (the node's `wait_ms_max` passed)", content_type = "text/event-stream"),
        (status = 400, description = "`invalid_request` naming the parameter, `offset_out_of_range`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`subscription_budget_exhausted`: every subscription slot is taken (with `Retry-After`)", body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    headers: HeaderMap,
    tracker: Option<Extension<Arc<Tracker>>>,
) -> Result<Response, ApiError> {
    q.only(&["partitions", "from", "heartbeat_ms", "stall_ms"])?;
    let heartbeat_ms = ms_param(&q, "heartbeat_ms", limits::SSE_HEARTBEAT_MS_DEFAULT)?;
    let stall_ms = ms_param(&q, "stall_ms", limits::SSE_STALL_MS_DEFAULT)?;
    let opened = state.opened()?;
    let stream = opened
        .log
        .stream(&name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    // `from=group:G`: where the group `G` would read each partition (its commits).
    let group = match q.text("from").and_then(|f| f.strip_prefix("group:")) {
        Some(group) => {
            let (groups, group, s) = (opened.groups()?, group.to_string(), stream.clone());
            let positions = blocking(move || groups.positions(&group, &*s))
                .await?
                .map_err(super::groups::problem)?;
            Some(positions)
        }
        None => None,
    };
    latest_ends(&stream).await?;
    let (cursor, field) = starting_cursor(&*stream, &q, &headers, group)?;
    check_in_range(&*stream, &cursor, field)?;
    let Ok(permit) = state.subscriptions().clone().try_acquire_owned() else {
        return Err(ApiError::new(
            ProblemCode::SubscriptionBudgetExhausted,
            format!(
                "{} subscriptions are open, the limit; retry shortly",
                limits::SUBSCRIPTIONS_MAX
            ),
        )
        .retry_after(1));
    };
    let (tx, rx) = mpsc::channel(limits::SSE_QUEUE_EVENTS);
    let queued = Arc::new(Queued::default());
    let reveal = super::streams::Reveal::of(&*stream, &opened).map(Arc::new);
    let lifetime = state.config().wait_ms_max.map(Duration::from_millis);
    let producer = Producer {
        state,
        stream,
        reveal,
        cursor,
        heartbeat: Duration::from_millis(heartbeat_ms),
        stall: Duration::from_millis(stall_ms),
        lifetime,
        tx,
        queued: queued.clone(),
        _permit: permit,
    };
    tokio::spawn(producer.run());
    let pace = tracker.map(|Extension(t)| {
        let base = t.written();
        (t, base)
    });
    let body = Body::new(EventBody {
        rx,
        queued,
        pace,
        handed_out: 0,
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// What a subscription's queue holds, shared by its producer and its body.
#[derive(Debug, Default)]
struct Queued {
    /// Bytes queued and not yet taken by the body.
    bytes: AtomicUsize,
    /// Events (and comments) queued and not yet taken by the body.
    events: AtomicUsize,
    /// Signalled each time the body takes a chunk (room for the producer).
    taken: tokio::sync::Notify,
}

impl Queued {
    fn queue(&self, chunk: &Chunk) {
        self.bytes.fetch_add(chunk.bytes.len(), Ordering::AcqRel);
        self.events.fetch_add(chunk.events, Ordering::AcqRel);
    }

    fn taken(&self, chunk: &Chunk) {
        self.bytes.fetch_sub(chunk.bytes.len(), Ordering::AcqRel);
        self.events.fetch_sub(chunk.events, Ordering::AcqRel);
        self.taken.notify_one();
    }
}

/// The response body: chunks of events as the producer queued them, one frame each; ends
/// when the producer does.
///
/// hyper polls a body for as long as its write buffer takes more, and under the server's
/// `pipeline_flush` that buffer has no bound: the body paces itself instead, handing out
/// at most [`limits::SSE_UNFLUSHED_BYTES_MAX`] bytes that have not reached the socket
/// (counted by the connection's [`Tracker`]). So a client that stops reading fills the
/// socket, then that allowance, then the queue — and is dropped.
struct EventBody {
    rx: mpsc::Receiver<Chunk>,
    queued: Arc<Queued>,
    /// The connection's write counter (absent when the router is driven without one, in
    /// tests), with its count when the body began and the bytes handed out since.
    pace: Option<(Arc<Tracker>, u64)>,
    handed_out: u64,
}

impl EventBody {
    /// Whether more than the allowance of handed-out bytes has not reached the socket yet.
    fn ahead_of_socket(&self) -> bool {
        self.pace.as_ref().is_some_and(|(tracker, base)| {
            let written = tracker.written().saturating_sub(*base);
            self.handed_out.saturating_sub(written) > limits::SSE_UNFLUSHED_BYTES_MAX as u64
        })
    }
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.ahead_of_socket() {
            if let Some((tracker, _)) = &self.pace {
                tracker.wake_on_write(cx.waker());
            }
            // A write may have landed between the look and the registration.
            if self.ahead_of_socket() {
                return Poll::Pending;
            }
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.queued.taken(&chunk);
                self.handed_out += chunk.bytes.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk.bytes))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a subscription ended (its last event says so, when the client can still hear it).
#[derive(Debug, Clone, Copy)]
enum End {
    /// The client went away.
    ClientGone,
    /// The queue filled: `event: dropped` was sent.
    SlowConsumer,
    /// The server is shutting down: `event: shutdown` was sent.
    Shutdown,
    /// A read failed (retention deleted the records, a corrupt batch): `event: error`.
    Error,
    /// The node's `wait_ms_max` passed: `event: closed` was sent.
    Lifetime,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::SlowConsumer => "slow_consumer",
            End::Shutdown => "shutdown",
            End::Error => "error",
            End::Lifetime => "lifetime",
        }
    }
}

/// One subscription's task: reads the partitions from its cursor and queues events.
struct Producer {
    state: AppState,
    stream: Arc<dyn LogStream>,
    /// How personal fields are shown (decrypted or erased); `None` for a plain stream.
    reveal: Option<Arc<super::streams::Reveal>>,
    cursor: Cursor,
    heartbeat: Duration,
    /// How long a client may take nothing from a full queue before it is dropped.
    stall: Duration,
    /// How long the subscription may last (the node's `wait_ms_max`), if bounded.
    lifetime: Option<Duration>,
    tx: mpsc::Sender<Chunk>,
    /// What is queued and not yet taken by the body.
    queued: Arc<Queued>,
    /// Held for the subscription's life: the budget of [`limits::SUBSCRIPTIONS_MAX`].
    _permit: OwnedSemaphorePermit,
}

impl Producer {
    async fn run(mut self) {
        let metrics = self.state.metrics().clone();
        metrics.subscriptions.inc();
        let end = self.stream_events().await;
        metrics.subscriptions.dec();
        metrics
            .subscriptions_ended
            .with_label_values(&[end.reason()])
            .inc();
        tracing::debug!(stream = %self.stream.name(), reason = end.reason(), "subscription ended");
    }

    /// Queues events until the subscription ends; why it did.
    async fn stream_events(&mut self) -> End {
        let started = tokio::time::Instant::now();
        if let Err(end) = self.push(frame::opening(&self.cursor)).await {
            return end;
        }
        let mut quiet_since = started;
        loop {
            if self.tx.is_closed() {
                return End::ClientGone;
            }
            if let Some(lifetime) = self.lifetime.filter(|l| started.elapsed() >= *l) {
                let detail = format!(
                    "a subscription lasts at most {} ms on this node (wait_ms_max); reconnect with Last-Event-ID to resume",
                    lifetime.as_millis()
                );
                let why = EventEnd {
                    reason: "wait_ms_max".into(),
                    detail: Some(detail),
                };
                self.last(EventKind::Closed, &why);
                return End::Lifetime;
            }
            if self.state.phase() == Phase::ShuttingDown {
                let why = EventEnd {
                    reason: "the server is shutting down".into(),
                    detail: None,
                };
                self.last(EventKind::Shutdown, &why);
                return End::Shutdown;
            }
            match self.send_available().await {
                Err(end) => return end,
                Ok(true) => {
                    quiet_since = tokio::time::Instant::now();
                    continue;
                }
                Ok(false) => {}
            }
            if quiet_since.elapsed() >= self.heartbeat {
                if let Err(end) = self.push(frame::heartbeat()).await {
                    return end;
                }
                quiet_since = tokio::time::Instant::now();
            }
            let left = self.heartbeat.saturating_sub(quiet_since.elapsed());
            self.wait_for_records(left.min(SHUTDOWN_TICK)).await;
        }
    }

    /// Reads every partition that has records past its cursor, one read each, at most
    /// [`limits::SSE_READS_CONCURRENT`] side by side on the blocking pool, and queues each
    /// read as one chunk in partition order; whether anything was sent.
    async fn send_available(&mut self) -> Result<bool, End> {
        let due: Vec<(u32, u64)> = self
            .cursor
            .iter()
            .filter(|(p, o)| {
                self.stream
                    .partition(**p)
                    .is_ok_and(|part| **o < part.end_offset())
            })
            .map(|(p, o)| (*p, *o))
            .collect();
        let mut sent = false;
        for group in due.chunks(limits::SSE_READS_CONCURRENT) {
            // Started together, so they run side by side; queued in order, each framed with
            // the cursor as the chunks before it left it.
            let reads: Vec<_> = group
                .iter()
                .map(|(p, from)| self.start_read(*p, *from))
                .collect();
            for read in reads {
                let read = match read.await {
                    Ok(Ok(read)) => read,
                    Ok(Err(e)) => {
                        let problem = ApiError::from_log(e, |_| String::new()).problem();
                        self.last(EventKind::Error, &problem);
                        return Err(End::Error);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a subscription's read task failed");
                        return Err(End::Error);
                    }
                };
                let Some(next) = read.next() else {
                    continue;
                };
                self.push(frame::frame(&self.cursor, &read)).await?;
                // The cursor moves only once the chunk is queued: a drop's id then names
                // the first record the client has not got.
                self.cursor.insert(read.partition, next);
                sent = true;
            }
        }
        Ok(sent)
    }

    /// Starts reading partition `p` from `from` on the blocking pool, and making the records'
    /// `data:` lines there too (the costly part of an event, which needs no cursor).
    fn start_read(
        &self,
        p: u32,
        from: u64,
    ) -> tokio::task::JoinHandle<Result<Serialised, LogError>> {
        let stream = self.stream.clone();
        let reveal = self.reveal.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let records = stream.partition(p)?.read(
                from,
                limits::SSE_READ_RECORDS,
                limits::SSE_READ_BYTES_MAX,
            )?;
            Ok(frame::serialise(p, records, reveal.as_deref()))
        })
    }

    /// Whether `chunk` would overfill the queue: by events (one slot is kept for the last
    /// event) or by bytes. An empty queue takes any chunk, so one large record still goes.
    fn full(&self, chunk: &Chunk) -> bool {
        let events = self.queued.events.load(Ordering::Acquire);
        let bytes = self.queued.bytes.load(Ordering::Acquire);
        self.tx.capacity() <= 1
            || (events > 0
                && (events + chunk.events >= limits::SSE_QUEUE_EVENTS
                    || bytes + chunk.bytes.len() > limits::SSE_QUEUE_BYTES_MAX))
    }

    /// Queues one chunk, waiting while the queue is full (back-pressure: the records stay
    /// in the log meanwhile). A client that takes nothing from a full queue for `stall` is
    /// a slow consumer: it gets `event: dropped` in the slot kept for it, and the
    /// subscription ends.
    async fn push(&self, chunk: Chunk) -> Result<(), End> {
        while self.full(&chunk) {
            let room = async {
                tokio::select! {
                    () = self.queued.taken.notified() => Ok(()),
                    () = self.tx.closed() => Err(End::ClientGone),
                }
            };
            match tokio::time::timeout(self.stall, room).await {
                Ok(Ok(())) => {}
                Ok(Err(end)) => return Err(end),
                Err(_) => {
                    let why = EventEnd {
                        reason: "slow_consumer".into(),
                        detail: Some(format!(
                            "the client took nothing for {} ms from a full queue ({} events, {} bytes; limits {} / {}); reconnect with Last-Event-ID to resume",
                            self.stall.as_millis(),
                            self.queued.events.load(Ordering::Acquire),
                            self.queued.bytes.load(Ordering::Acquire),
                            limits::SSE_QUEUE_EVENTS,
                            limits::SSE_QUEUE_BYTES_MAX
                        )),
                    };
                    self.last(EventKind::Dropped, &why);
                    return Err(End::SlowConsumer);
                }
            }
        }
        self.send(chunk).map_err(|()| End::ClientGone)
    }

    /// Sends the subscription's last event (into the slot [`Self::push`] keeps free), with
    /// the cursor to resume from as its id.
    fn last(&self, kind: EventKind, data: &impl serde::Serialize) {
        let data = serde_json::to_value(data).unwrap_or_default();
        let _ = self.send(frame::event(&self.cursor, kind, &data));
    }

    /// Puts `chunk` in the queue, counted; `Err` if the queue is full or the body gone.
    fn send(&self, chunk: Chunk) -> Result<(), ()> {
        // Counted first: the body may take it as soon as it is in.
        self.queued.queue(&chunk);
        self.tx.try_send(chunk).map_err(|e| {
            self.queued.taken(&e.into_inner());
        })
    }

    /// Returns when a partition has a record past its cursor, the client went away, or
    /// `at_most` passed.
    async fn wait_for_records(&self, at_most: Duration) {
        let mut waits: Vec<_> = self
            .cursor
            .iter()
            .filter_map(|(p, o)| {
                Some(Box::pin(
                    self.stream.partition(*p).ok()?.end_offset_above(*o),
                ))
            })
            .collect();
        let closed = self.tx.closed();
        tokio::pin!(closed);
        let any = std::future::poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            for wait in &mut waits {
                if wait.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        let _ = tokio::time::timeout(at_most, any).await;
    }
}

/// How often a waiting subscription looks at the server's phase (shutdown ends it).
const SHUTDOWN_TICK: Duration = Duration::from_millis(50);
