//! The request-head guard: every request head on a connection is measured as it arrives, so
//! one over the limits is answered 414 `uri_too_long` or 431 `headers_too_large` as
//! problem+json — not hyper's bare 431, nor a reset when hyper's buffer overflows. A head
//! hyper cannot parse is answered 400 `malformed_request` instead of hyper's bare 400.
//!
//! ```text
//!  socket ─▶ HeadIo (reads ≤ READ_CHUNK_BYTES_MAX, scans the head) ─▶ hyper ─▶ router
//!              │ head over a limit: the socket is set aside,            │
//!              │ hyper sees a read error and ends (writes nothing)      │ service call / body
//!              ▼                                                        │ end: the next head
//!            Refused::answer: read the rest of the head (bounded),      │ starts here (mark)
//!            write the problem, close                         Tracker ◀─┘
//! ```
//!
//! Heads are scanned from a *mark*, the stream offset where the next head starts: 0, then
//! the bytes read when a request without a body reaches the router, or when a request's body
//! has been read to its end (or dropped: plus what hyper still has to skip of it). The scan
//! stops at the head's blank line, so bodies are never scanned.
//!
//! Invariant: hyper's buffer never fills while a head is incomplete. It holds at most one
//! read from before the mark (a pipelined client's next head) plus what the scan lets
//! through ([`limits::HEAD_BYTES_MAX`]), less than [`limits::HTTP1_BUF_BYTES`] (checked at
//! compile time). Heads within the limits but over the contract's (a 20 KB URL, 17 KB of
//! headers) reach the edge, which answers the same problems ([`crate::edge`]).
//!
//! **Heads hyper cannot parse.** hyper answers those itself with a bare status and no
//! body — when the bad bytes left its buffer (a bad target or `Content-Length`, found after
//! the head parsed); else, under `pipeline_flush`, that answer waits behind the unparsed
//! bytes and is never written, and the client only sees the connection close. The guard
//! does not parse heads a second time: while the head being read has not reached the
//! router, it takes hyper's bare answer as it is written (`automatic_answer`), or hyper's
//! close (`poll_shutdown`), and sets the socket aside like an oversized head; the answer
//! comes from hyper's error — a parse error is 400 `malformed_request` naming the part; a
//! timeout or a head cut short get none (the connection closes as before).
//!
//! **Pipelined heads.** hyper would parse a head that arrived in the same read as the end of
//! a request before it while that request's answer waits in its buffer, and a head it
//! cannot parse ends the connection with the answer unwritten. After a head without a body,
//! the bytes that follow in the read are checked as heads (`pipelined_heads`): hyper gets
//! those that parse and have no body at once (a pipelining client's answers still leave in
//! one write); from the first other one on, the bytes are held back — hyper's reads wait —
//! until every head handed over has been answered and the answers flushed to the socket
//! (the flush wakes the reader), and that head is then scanned like any other. Not
//! covered: a bad head in the same read as the end of a request *with* a body (the guard
//! does not parse bodies' framing): hyper answers it as before, and the answer to the
//! request before it is lost; nor is a pipelined head that hyper gets at once measured
//! against the limits (hyper's own limits apply).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::http;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::error::{ApiError, ProblemCode};
use crate::limits;
use crate::tls::Conn;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request line is longer than [`limits::REQUEST_LINE_BYTES_MAX`]: 414.
    RequestLine,
    /// The head is longer than [`limits::HEAD_BYTES_MAX`]: 431.
    HeadBytes,
    /// More header lines than [`limits::HEADER_LINES_MAX`]: 431.
    HeaderLines,
    /// hyper ended the connection while reading a head: it could not parse it (400, or
    /// 414/431 for hyper's own limits), or the head timed out or was cut short (no answer).
    Unparsed,
}

impl Refusal {
    /// The HTTP status line and the problem answered; `cause` is hyper's error, which names
    /// what it could not parse.
    fn answer(self, cause: Option<&hyper::Error>) -> (&'static str, ApiError) {
        match self {
            Refusal::RequestLine => (
                "414 URI Too Long",
                ApiError::uri_too_long(limits::REQUEST_LINE_BYTES_MAX + 1),
            ),
            Refusal::HeadBytes => (
                "431 Request Header Fields Too Large",
                ApiError::new(
                    ProblemCode::HeadersTooLarge,
                    format!(
                        "the request head is over {} bytes (headers may total {} bytes of \
                         names and values); nothing was done",
                        limits::HEAD_BYTES_MAX,
                        limits::HEADER_BYTES_MAX
                    ),
                ),
            ),
            Refusal::HeaderLines => (
                "431 Request Header Fields Too Large",
                ApiError::new(
                    ProblemCode::HeadersTooLarge,
                    format!(
                        "the request has more than {} header lines; nothing was done",
                        limits::HEADER_LINES_MAX
                    ),
                ),
            ),
            Refusal::Unparsed => unparsable(cause),
        }
    }
}

/// The answer to a head hyper could not parse, from hyper's error (whose words name the
/// part: hyper has no finer public accessor).
fn unparsable(cause: Option<&hyper::Error>) -> (&'static str, ApiError) {
    let words = cause.map(ToString::to_string).unwrap_or_default();
    let too_large = cause.is_some_and(hyper::Error::is_parse_too_large);
    match (too_large, words.starts_with("URI too long")) {
        (true, true) => (
            "414 URI Too Long",
            ApiError::uri_too_long(limits::URI_BYTES_MAX + 1),
        ),
        (true, false) => (
            "431 Request Header Fields Too Large",
            ApiError::new(
                ProblemCode::HeadersTooLarge,
                format!("the request head is too large ({words}); nothing was done"),
            ),
        ),
        _ => {
            // hyper's descriptions (its `Parse` kinds), each mapped to the part of the head.
            let part = [
                ("invalid HTTP method", "method"),
                ("invalid URI", "request-target"),
                ("invalid HTTP version", "version"),
                ("invalid HTTP header", "headers"),
                ("invalid content-length", "Content-Length"),
                ("invalid transfer-encoding", "Transfer-Encoding"),
                ("unexpected transfer-encoding", "Transfer-Encoding"),
            ]
            .into_iter()
            .find(|(prefix, _)| words.starts_with(prefix))
            .map(|(_, part)| part);
            let detail = if words.is_empty() {
                "the request head is not HTTP/1.1 this server can parse; nothing was done".into()
            } else {
                format!(
                    "the request head is not HTTP/1.1 this server can parse ({words}); nothing \
                     was done"
                )
            };
            let problem = ApiError::new(ProblemCode::MalformedRequest, detail);
            (
                "400 Bad Request",
                match part {
                    Some(part) => problem.field(part),
                    None => problem,
                },
            )
        }
    }
}

/// hyper's own answer to a head it could not parse, if `data` ends with it: where it
/// starts. hyper writes a status line (400, 414 or 431), `content-length: 0` and `date`,
/// and nothing after it; every answer of the router has a body and a `content-type`, and no
/// body of the API holds a raw blank line (`\r\n\r\n`: JSON escapes control characters),
/// so a bodiless head at the end of a write is hyper's.
fn automatic_answer(data: &[u8]) -> Option<usize> {
    if !data.ends_with(b"\r\n\r\n") {
        return None;
    }
    let start = memchr::memmem::rfind(data, b"HTTP/1.1 ")?;
    let head = &data[start..];
    if memchr::memmem::find(head, b"\r\n\r\n")? != head.len() - 4 {
        return None;
    }
    let status = head.get(9..12)?;
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| memchr::memmem::find(&lower, needle).is_some();
    let bodiless = has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\ncontent-type:");
    (matches!(status, b"400" | b"414" | b"431") && bodiless).then_some(start)
}

/// Whether a header line that starts with `start` may name a body's framing
/// (`Content-Length` or `Transfer-Encoding`, any case): `whole` when `start` is all of the
/// line's first run, else the line goes on in a later read and a prefix of a name counts.
fn may_frame_a_body(start: &[u8], whole: bool) -> bool {
    [&b"content-length"[..], b"transfer-encoding"]
        .iter()
        .any(|name| {
            let n = name.len().min(start.len());
            start[..n].eq_ignore_ascii_case(&name[..n]) && (n == name.len() || !whole)
        })
}

/// How much of `rest` to hand hyper at once, and how many heads that is: `rest` follows a
/// request head without a body in the same read, so it holds pipelined heads. hyper parses
/// them before it writes its answers to the ones before (`pipeline_flush` holds answers
/// while its buffer has bytes), and one it cannot parse ends the connection with those
/// answers unwritten. So it is handed the heads that are complete, parse (as hyper parses
/// them: httparse, then the target as a URI) and have no body; from the first other one on,
/// the bytes are held back until hyper has answered and written the ones before, and the
/// guard then reads them as a new head.
fn pipelined_heads(rest: &[u8]) -> (usize, u64) {
    let mut headers = [httparse::EMPTY_HEADER; limits::HEADER_LINES_MAX];
    let (mut at, mut heads) = (0, 0);
    while at < rest.len() {
        let mut head = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = head.parse(&rest[at..]) else {
            break;
        };
        let framed = head.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
        });
        let target = head.path.is_some_and(|p| p.parse::<http::Uri>().is_ok());
        if framed || !target {
            break;
        }
        at += n;
        heads += 1;
    }
    (at, heads)
}

/// The scan of one request head as its bytes arrive.
#[derive(Debug, Default, Clone)]
pub struct HeadScan {
    /// Bytes of the head so far (leading blank lines included).
    bytes: usize,
    /// Bytes of the current line, CR excluded.
    line_bytes: usize,
    /// Complete non-blank lines (the request line, then one per header).
    lines: usize,
    /// The blank line that ends the head was seen.
    done: bool,
    /// A header line may name a body's framing (`Content-Length`, `Transfer-Encoding`): the
    /// request may have a body, so what follows the head in a read is not known to be a
    /// head (`pipelined_heads`).
    framed: bool,
}

impl HeadScan {
    /// Scans `data`, the head's next bytes. Returns the refusal and how many bytes of `data`
    /// were scanned when a limit is crossed, else `None` (the head ended within `data`, or
    /// needs more).
    ///
    /// Runs of bytes other than CR and LF are taken in one step (every request passes
    /// here; a byte at a time cost ~25 instructions a byte). Within a run only the byte
    /// counts grow, so a limit crossed at its end was crossed inside it: only then is the
    /// run walked a byte at a time, to name the byte where it happened.
    pub fn feed(&mut self, data: &[u8]) -> Option<(Refusal, usize)> {
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            if self.done {
                return None;
            }
            if b == b'\n' || b == b'\r' {
                self.step(b);
                i += 1;
                if let Some(r) = self.refusal() {
                    return Some((r, i));
                }
                continue;
            }
            let rest = &data[i..];
            let run = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
            if self.line_bytes == 0 && self.lines > 0 {
                self.framed |= may_frame_a_body(&rest[..run], run < rest.len());
            }
            let mut after = self.clone();
            after.bytes += run;
            after.line_bytes += run;
            if after.refusal().is_none() {
                *self = after;
            } else {
                for (j, &b) in rest[..run].iter().enumerate() {
                    self.step(b);
                    if let Some(r) = self.refusal() {
                        return Some((r, i + j + 1));
                    }
                }
            }
            i += run;
        }
        None
    }

    /// The limit the scan so far has crossed, if any.
    fn refusal(&self) -> Option<Refusal> {
        if self.lines == 0 && self.line_bytes > limits::REQUEST_LINE_BYTES_MAX {
            Some(Refusal::RequestLine)
        } else if self.bytes > limits::HEAD_BYTES_MAX {
            Some(Refusal::HeadBytes)
        } else if self.lines > limits::HEADER_LINES_MAX + 1 {
            Some(Refusal::HeaderLines)
        } else {
            None
        }
    }

    /// Scans `data` with no limit; true once the head has ended.
    pub fn skip(&mut self, data: &[u8]) -> bool {
        for &b in data {
            if self.done {
                break;
            }
            self.step(b);
        }
        self.done
    }

    /// True once the blank line that ends the head was seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// True if a header line may name a body's framing (see the field).
    pub fn framed(&self) -> bool {
        self.framed
    }

    /// True once a byte of the head other than a line end was seen.
    fn begun(&self) -> bool {
        self.lines > 0 || self.line_bytes > 0
    }

    fn step(&mut self, b: u8) {
        self.bytes += 1;
        match b {
            b'\n' if self.line_bytes == 0 => {
                // Blank lines before the request line are ignored (RFC 9112 §2.2).
                self.done = self.lines > 0;
            }
            b'\n' => {
                self.lines += 1;
                self.line_bytes = 0;
            }
            b'\r' => {}
            _ => self.line_bytes += 1,
        }
    }
}

/// What a connection's reader and its requests share.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Bytes handed to hyper so far.
    read: AtomicU64,
    /// Where the next head starts (a stream offset).
    mark: AtomicU64,
    /// Requests handed to the router so far.
    dispatched: AtomicU64,
    /// Whether the connection is an idle keep-alive, for admission ([`crate::idle`]).
    activity: Arc<crate::idle::Activity>,
    /// The socket of a refused head, set aside for its answer.
    refused: Mutex<Option<Refused>>,
    /// Bytes written to the socket so far.
    written: AtomicU64,
    /// A streaming response body waiting for its bytes to reach the socket (hyper buffers
    /// a body without bound under `pipeline_flush`; the push tail bounds it by this).
    write_waiter: Mutex<Option<std::task::Waker>>,
    /// The client's address (`None` in tests that build a tracker alone), and its key as a
    /// principal for quotas (made once per connection).
    peer: Option<(std::net::IpAddr, crate::quota::PrincipalKey)>,
    /// On a probe connection ([`crate::admission`]): the refusal any route but a probe's
    /// gets.
    probe_only: Option<ApiError>,
    /// The principals this connection's requests acted as, each holding one of its
    /// connections ([`crate::quota`]) until the connection closes.
    pub(crate) principals: Mutex<Vec<crate::quota::ConnCharge>>,
}

impl Tracker {
    /// The tracker of a connection from `peer`; `probe_only` for a probe connection.
    pub fn new(peer: std::net::IpAddr, probe_only: Option<ApiError>) -> Tracker {
        Tracker {
            peer: Some((peer, crate::quota::address_key(peer))),
            probe_only,
            ..Tracker::default()
        }
    }

    /// The connection's activity: idle or not, asked to close ([`crate::idle`]).
    pub fn activity(&self) -> &Arc<crate::idle::Activity> {
        &self.activity
    }

    /// The client's address.
    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer.as_ref().map(|(ip, _)| *ip)
    }

    /// The client's address as a principal's key (quotas with authentication off).
    pub fn peer_key(&self) -> Option<&crate::quota::PrincipalKey> {
        self.peer.as_ref().map(|(_, key)| key)
    }

    /// Counts this connection against `key`'s connection quota, once per principal; the
    /// charge is held until the connection closes.
    ///
    /// # Errors
    /// 429 `principal_quota_exceeded` when `key` is at its quota of connections.
    pub fn charge_principal(
        &self,
        key: &crate::quota::PrincipalKey,
        counts: &Arc<crate::quota::Counts>,
    ) -> Result<(), ApiError> {
        let mut held = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        if held.iter().any(|c| c.key() == key) {
            return Ok(());
        }
        held.push(counts.charge(key)?);
        Ok(())
    }

    /// On a probe connection, the refusal a route other than a probe's gets.
    pub fn probe_only(&self) -> Option<&ApiError> {
        self.probe_only.as_ref()
    }

    /// Marks where the next head starts: `ahead` bytes after what was read so far.
    fn mark_next_head(&self, ahead: u64) {
        let read = self.read.load(Ordering::Acquire);
        self.mark
            .store(read.saturating_add(ahead), Ordering::Release);
    }

    /// Wraps a request's body so that its end (or drop) marks where the next head starts; a
    /// request without a body marks it at once.
    pub fn track(self: &Arc<Self>, req: http::Request<Incoming>) -> http::Request<TrackedBody> {
        self.dispatched.fetch_add(1, Ordering::AcqRel);
        self.activity.dispatched();
        let ended = req.body().is_end_stream();
        if ended {
            self.mark_next_head(0);
        }
        let mut req = req.map(|inner| TrackedBody {
            inner,
            tracker: self.clone(),
            ended,
        });
        // A streaming answer (the push tail) paces itself by the connection's writes.
        req.extensions_mut().insert(self.clone());
        req
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Wakes `waker` after the next write to the socket.
    pub fn wake_on_write(&self, waker: &std::task::Waker) {
        if let Ok(mut slot) = self.write_waiter.lock() {
            *slot = Some(waker.clone());
        }
    }

    fn note_written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::AcqRel);
        if let Some(waker) = self.write_waiter.lock().ok().and_then(|mut w| w.take()) {
            waker.wake();
        }
    }

    /// The refused head's socket, if the reader set one aside.
    pub fn take_refused(&self) -> Option<Refused> {
        self.refused.lock().ok().and_then(|mut r| r.take())
    }
}

/// A request body that tells its [`Tracker`] when it ends.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    tracker: Arc<Tracker>,
    ended: bool,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) && !this.ended {
            this.ended = true;
            this.tracker.mark_next_head(0);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if !self.ended {
            // hyper skips the rest of a body it can read at once, else closes: the next head
            // starts after what is left (one read at most when the length is unknown).
            let left = self
                .inner
                .size_hint()
                .exact()
                .unwrap_or(limits::READ_CHUNK_BYTES_MAX as u64);
            self.tracker.mark_next_head(left);
        }
    }
}

/// A connection's socket as hyper reads it: reads of at most
/// [`limits::READ_CHUNK_BYTES_MAX`], each head scanned (see the module docs).
#[derive(Debug)]
pub struct HeadIo {
    tcp: Option<Conn>,
    tracker: Arc<Tracker>,
    scan: HeadScan,
    /// The mark the scan started from.
    scan_from: u64,
    /// The count of dispatched requests when the scanned head began: while it is still the
    /// count, that head has not reached the router.
    scan_begun_at: Option<u64>,
    /// Bytes read from the socket and held back from hyper: pipelined heads from the first
    /// one hyper might not parse (`pipelined_heads`); at most one read.
    held: Vec<u8>,
    /// Complete heads handed to hyper: the scanned ones and the pipelined ones let through.
    heads_handed: u64,
    /// The connection's answers completed when the socket was last flushed.
    flushed_at: u64,
}

impl HeadIo {
    /// Wraps an accepted connection (plain, or TLS past its handshake); the tracker is
    /// shared with the connection's requests.
    pub fn new(tcp: Conn, tracker: Arc<Tracker>) -> HeadIo {
        HeadIo {
            tcp: Some(tcp),
            tracker,
            scan: HeadScan::default(),
            scan_from: 0,
            scan_begun_at: None,
            held: Vec::new(),
            heads_handed: 0,
            flushed_at: 0,
        }
    }

    /// Scans `data`, to be handed to hyper at stream offset `at`: `Err` with the refusal
    /// and how many bytes of `data` were scanned if a head crossed a limit, else where in
    /// `data` the scanned head ended, if it did.
    fn observe(&mut self, at: u64, data: &[u8]) -> Result<Option<usize>, (Refusal, usize)> {
        let mark = self.tracker.mark.load(Ordering::Acquire);
        if mark != self.scan_from {
            self.scan_from = mark;
            self.scan = HeadScan::default();
            self.scan_begun_at = None;
        }
        let skip = usize::try_from(mark.saturating_sub(at)).unwrap_or(usize::MAX);
        if self.scan.done() || skip >= data.len() {
            return Ok(None);
        }
        let before = self.scan.bytes;
        let refused = self.scan.feed(&data[skip..]);
        if self.scan_begun_at.is_none() && self.scan.begun() {
            self.scan_begun_at = Some(self.tracker.dispatched.load(Ordering::Acquire));
            self.tracker.activity.head_begun();
        }
        if let Some((refusal, scanned)) = refused {
            return Err((refusal, skip + scanned));
        }
        Ok(self.scan.done().then(|| skip + (self.scan.bytes - before)))
    }

    /// True while the scanned head has begun and not reached the router: a write now is
    /// not an answer to a request the router saw (see the module docs).
    fn head_undispatched(&self) -> bool {
        self.scan_begun_at == Some(self.tracker.dispatched.load(Ordering::Acquire))
    }

    /// How much of `data`, a write of hyper's, to send: all of it, or what comes before
    /// hyper's own answer to a head it could not parse (`automatic_answer`) — `None` when
    /// the write is that answer alone: the socket is then set aside and the answer is ours.
    fn before_automatic_answer(&mut self, data: &[u8]) -> Option<usize> {
        if !self.head_undispatched() {
            return Some(data.len());
        }
        match automatic_answer(data) {
            None => Some(data.len()),
            Some(0) => {
                self.set_aside_unparsed();
                None
            }
            Some(start) => Some(start),
        }
    }

    /// When hyper writes its own answer to, or closes the connection on, a head that has
    /// not reached the router — it could not parse it, or the head timed out or was cut
    /// short —, the socket is set aside instead; the answer, if any, is decided from
    /// hyper's error ([`Refused::answer`]). True if it was set aside.
    fn set_aside_unparsed(&mut self) -> bool {
        if !self.head_undispatched() {
            return false;
        }
        let Some(tcp) = self.tcp.take() else {
            return false;
        };
        if let Ok(mut slot) = self.tracker.refused.lock() {
            *slot = Some(Refused {
                tcp,
                refusal: Refusal::Unparsed,
                scan: HeadScan::default(),
                ended: true,
            });
        }
        true
    }
}

/// The reader waits for the socket, where an eviction can wake it while the connection is
/// idle ([`crate::idle`]); asked to close meanwhile, it ends the stream instead.
fn wait_or_close(
    activity: &crate::idle::Activity,
    waker: &std::task::Waker,
) -> Poll<io::Result<()>> {
    activity.waiting(waker);
    if activity.should_close() {
        Poll::Ready(Ok(()))
    } else {
        Poll::Pending
    }
}

fn set_aside() -> io::Error {
    io::Error::other("request head over the limit (answered outside hyper)")
}

impl AsyncRead for HeadIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tcp.is_none() {
            return Poll::Ready(Err(set_aside()));
        }
        if !this.held.is_empty() {
            // Woken by the flush that writes the last answer (`poll_flush`).
            if !this.answers_written() {
                return Poll::Pending;
            }
            return Poll::Ready(this.hand_held(buf));
        }
        let Some(tcp) = this.tcp.as_mut() else {
            return Poll::Ready(Err(set_aside()));
        };
        // Asked to close while idle (crate::idle), the reader ends the stream — which hyper
        // takes as the client closing between requests — only once the socket has nothing
        // to read: a request the client already sent is served.
        let activity = &this.tracker.activity;
        if buf.remaining() <= limits::READ_CHUNK_BYTES_MAX {
            // hyper's usual case (its buffer grows from 8 KiB): read in place.
            let before = buf.filled().len();
            match Pin::new(tcp).poll_read(cx, buf) {
                Poll::Pending => return wait_or_close(activity, cx.waker()),
                Poll::Ready(read) => read?,
            }
            let read = buf.filled().len() - before;
            let keep = this.pass(&buf.filled()[before..])?;
            if keep < read {
                this.hold(&buf.filled()[before + keep..]);
                buf.set_filled(before + keep);
            }
            return Poll::Ready(Ok(()));
        }
        // A larger buffer: read at most one chunk into its first bytes (initialized, as safe
        // code must; this happens for large bodies only).
        let mut chunk = ReadBuf::new(buf.initialize_unfilled_to(limits::READ_CHUNK_BYTES_MAX));
        match Pin::new(tcp).poll_read(cx, &mut chunk) {
            Poll::Pending => return wait_or_close(activity, cx.waker()),
            Poll::Ready(read) => read?,
        }
        let keep = this.pass(chunk.filled())?;
        if keep < chunk.filled().len() {
            this.hold(&chunk.filled()[keep..]);
        }
        buf.advance(keep);
        Poll::Ready(Ok(()))
    }
}

impl HeadIo {
    /// Accounts for `data`, just read, and returns how much of it to hand to hyper now (the
    /// rest is held back: `pipelined_heads`); an error (and the socket set aside) if a head
    /// in it crossed a limit, so that hyper never sees those bytes.
    fn pass(&mut self, data: &[u8]) -> io::Result<usize> {
        let at = self.tracker.read.load(Ordering::Acquire);
        let keep = match self.observe(at, data) {
            Ok(Some(end)) => {
                self.heads_handed += 1;
                if self.scan.framed() {
                    // A body follows: what comes after it is not known to be a head.
                    data.len()
                } else {
                    let (n, heads) = pipelined_heads(&data[end..]);
                    self.heads_handed += heads;
                    end + n
                }
            }
            Ok(None) => data.len(),
            Err((refusal, scanned)) => {
                self.tracker
                    .read
                    .store(at + data.len() as u64, Ordering::Release);
                let mut scan = self.scan.clone();
                let ended = scan.skip(&data[scanned..]);
                if let (Some(tcp), Ok(mut slot)) = (self.tcp.take(), self.tracker.refused.lock()) {
                    *slot = Some(Refused {
                        tcp,
                        refusal,
                        scan,
                        ended,
                    });
                }
                return Err(set_aside());
            }
        };
        self.tracker.read.store(at + keep as u64, Ordering::Release);
        Ok(keep)
    }

    /// Holds `bytes` back from hyper: they begin a head (so the connection is not idle).
    fn hold(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
        self.tracker.activity.head_begun();
    }

    /// Whether every head handed to hyper has been answered and the answers flushed to the
    /// socket: held bytes may go to hyper then without holding an answer back.
    fn answers_written(&self) -> bool {
        let answered = self.tracker.activity.answered_count();
        self.heads_handed <= answered && self.flushed_at == answered
    }

    /// Hands hyper what was held back, as if just read.
    fn hand_held(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let mut held = std::mem::take(&mut self.held);
        let n = held.len().min(buf.remaining());
        let keep = self.pass(&held[..n])?;
        buf.put_slice(&held[..keep]);
        held.drain(..keep);
        self.held = held;
        Ok(())
    }
}

impl AsyncWrite for HeadIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(send) = this.before_automatic_answer(data) else {
            // hyper's bare answer to an unparsed head: taken, never sent.
            return Poll::Ready(Ok(data.len()));
        };
        match this.tcp.as_mut() {
            Some(tcp) => {
                let written = ready!(Pin::new(tcp).poll_write(cx, &data[..send]))?;
                this.tracker.note_written(written);
                Poll::Ready(Ok(written))
            }
            None => Poll::Ready(Err(set_aside())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.head_undispatched() {
            // A write that may be hyper's own answer (rare): one buffer at a time, checked.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        match this.tcp.as_mut() {
            Some(tcp) => {
                let written = ready!(Pin::new(tcp).poll_write_vectored(cx, bufs))?;
                this.tracker.note_written(written);
                Poll::Ready(Ok(written))
            }
            None => Poll::Ready(Err(set_aside())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(tcp) = this.tcp.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        ready!(Pin::new(tcp).poll_flush(cx))?;
        // hyper flushes after it wrote an answer whole: held heads may follow it now. The
        // reader returned Pending without a waker of the socket's; this task reads next.
        this.flushed_at = this.tracker.activity.answered_count();
        if !this.held.is_empty() && this.answers_written() {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.set_aside_unparsed() {
            return Poll::Ready(Ok(()));
        }
        match this.tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A connection whose request head crossed a limit, set aside from hyper.
#[derive(Debug)]
pub struct Refused {
    tcp: Conn,
    refusal: Refusal,
    scan: HeadScan,
    ended: bool,
}

impl Refused {
    /// Reads the rest of the head (dropping it; at most [`limits::HEAD_DRAIN_BYTES_MAX`],
    /// within [`limits::HEADER_READ_TIMEOUT_MS_DEFAULT`]) so the client reads the answer rather than
    /// a reset, then answers the problem and closes. `cause`: how hyper's connection ended
    /// (it names what it could not parse).
    pub async fn answer(self, cause: Option<&hyper::Error>) {
        let Refused {
            mut tcp,
            refusal,
            mut scan,
            ended,
        } = self;
        if !ended {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut read = 0usize;
            let _ = tokio::time::timeout(
                Duration::from_millis(limits::HEADER_READ_TIMEOUT_MS_DEFAULT),
                async {
                    while read < limits::HEAD_DRAIN_BYTES_MAX {
                        let n = tcp.read(&mut chunk).await?;
                        read += n;
                        if n == 0 || scan.skip(&chunk[..n]) {
                            break;
                        }
                    }
                    Ok::<_, io::Error>(())
                },
            )
            .await;
        }
        if refusal == Refusal::Unparsed && !cause.is_some_and(hyper::Error::is_parse) {
            // Timed out or cut short: nothing to answer; dropping the socket closes it.
            return;
        }
        let (status, problem) = refusal.answer(cause);
        tracing::debug!(status, "request head over the limit");
        crate::error::answer_and_close(&mut tcp, status, "", problem).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line_and_leading_blank_lines_are_skipped() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"\r\nGET / HTTP/1.1\r\nhost: x\r\n"), None);
        assert!(!scan.done());
        assert_eq!(scan.feed(b"\r\nbody bytes are not scanned"), None);
        assert!(scan.done());
        assert_eq!(scan.bytes, 2 + 16 + 9 + 2);
    }

    #[test]
    fn a_long_request_line_is_refused_where_it_crosses_the_limit() {
        let line = vec![b'a'; limits::REQUEST_LINE_BYTES_MAX + 10];
        let mut scan = HeadScan::default();
        assert_eq!(
            scan.feed(&line),
            Some((Refusal::RequestLine, limits::REQUEST_LINE_BYTES_MAX + 1))
        );
    }

    #[test]
    fn long_headers_and_many_header_lines_are_refused() {
        let mut scan = HeadScan::default();
        scan.feed(b"GET / HTTP/1.1\r\nx: ");
        let value = vec![b'v'; limits::HEAD_BYTES_MAX];
        assert!(matches!(scan.feed(&value), Some((Refusal::HeadBytes, _))));

        let mut scan = HeadScan::default();
        scan.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..limits::HEADER_LINES_MAX {
            assert_eq!(scan.feed(b"a: b\r\n"), None);
        }
        assert_eq!(scan.feed(b"a: b\r\n"), Some((Refusal::HeaderLines, 6)));
    }

    /// The scan one byte at a time, as `feed` must behave.
    fn feed_bytewise(scan: &mut HeadScan, data: &[u8]) -> Option<(Refusal, usize)> {
        for (i, &b) in data.iter().enumerate() {
            if scan.done {
                return None;
            }
            scan.step(b);
            if let Some(r) = scan.refusal() {
                return Some((r, i + 1));
            }
        }
        None
    }

    /// A small deterministic generator (xorshift64*), so a failing case replays from its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        }
    }

    /// A head of random lines: empty, short, or near a limit; CR, LF or CRLF line ends.
    fn random_head(rng: &mut Rng) -> Vec<u8> {
        let mut head = Vec::new();
        for _ in 0..rng.below(limits::HEADER_LINES_MAX + 8) {
            let len = match rng.below(6) {
                0 => 0,
                1 => limits::REQUEST_LINE_BYTES_MAX - 2 + rng.below(5),
                2 => rng.below(limits::HEAD_BYTES_MAX / 8),
                _ => rng.below(40),
            };
            head.extend((0..len).map(|_| b"ab:\r x"[rng.below(6)]));
            head.extend_from_slice([&b"\r\n"[..], b"\n", b"\r"][rng.below(3)]);
        }
        head.extend_from_slice(b"\r\n\r\nbody");
        head
    }

    #[test]
    fn feed_agrees_with_a_scan_byte_by_byte() {
        let seed = std::env::var("HEAD_SCAN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0012_u64);
        println!("HEAD_SCAN_SEED={seed}");
        let mut rng = Rng(seed.max(1));
        for case in 0..300 {
            let head = random_head(&mut rng);
            let (mut fast, mut slow) = (HeadScan::default(), HeadScan::default());
            let mut at = 0;
            while at < head.len() {
                let most = [4, 64, 4096, head.len()][rng.below(4)];
                let n = 1 + rng.below(most);
                let chunk = &head[at..(at + n).min(head.len())];
                let (got, want) = (fast.feed(chunk), feed_bytewise(&mut slow, chunk));
                assert_eq!(got, want, "case {case}, chunk at {at} (seed {seed})");
                assert_eq!(
                    (fast.bytes, fast.line_bytes, fast.lines, fast.done),
                    (slow.bytes, slow.line_bytes, slow.lines, slow.done),
                    "case {case}, chunk at {at} (seed {seed})"
                );
                if got.is_some() || fast.done {
                    break;
                }
                at += chunk.len();
            }
        }
    }

    #[test]
    fn hypers_own_answer_is_recognized_at_the_end_of_a_write_and_nothing_else() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                      date: Fri, 04 Dec 2026 14:04:58 GMT\r\n\r\n";
        assert_eq!(automatic_answer(hyper), Some(0));
        let ours = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: 2\r\n\r\n{}";
        let both = [&ours[..], &hyper[..]].concat();
        assert_eq!(automatic_answer(&both), Some(ours.len()));
        assert_eq!(automatic_answer(ours), None);
        let problem = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\n\
                        content-length: 0\r\n\r\n";
        assert_eq!(
            automatic_answer(problem),
            None,
            "a head with a content-type"
        );
        let no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            automatic_answer(no_content),
            None,
            "not a status hyper answers"
        );
        assert_eq!(
            automatic_answer(&hyper[..hyper.len() - 2]),
            None,
            "not at the end"
        );
    }

    #[test]
    fn a_refusal_of_hyper_names_the_part_it_could_not_parse() {
        let (status, problem) = Refusal::Unparsed.answer(None);
        assert_eq!(status, "400 Bad Request");
        assert_eq!(problem.problem().code, "malformed_request");
        assert_eq!(problem.problem().field, None);
    }

    #[test]
    fn pipelined_heads_are_handed_over_up_to_the_first_that_hyper_might_refuse_or_has_a_body() {
        let get = format!(
            "GET {} HTTP/1.1\r\nhost: x\r\n\r\n",
            logbook_api::paths::route::HEALTH
        );
        let get = get.as_bytes();
        let two = [get, get].concat();
        assert_eq!(
            pipelined_heads(&two),
            (two.len(), 2),
            "well-formed heads without bodies"
        );
        for bad in [
            &b"GE\x01T / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/7.2\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost x\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\n",
        ] {
            let bytes = [&two[..], bad].concat();
            assert_eq!(
                pipelined_heads(&bytes),
                (two.len(), 2),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_head_naming_a_body_framing_is_marked_framed_even_split_across_reads() {
        let framed = |chunks: &[&[u8]]| {
            let mut scan = HeadScan::default();
            for chunk in chunks {
                scan.feed(chunk);
            }
            scan.framed()
        };
        assert!(!framed(&[
            b"GET / HTTP/1.1\r\nhost: x\r\ncontent: y\r\n\r\n"
        ]));
        assert!(framed(&[b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"]));
        assert!(framed(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        ]));
        assert!(framed(&[
            b"POST / HTTP/1.1\r\ncont",
            b"ent-length: 2\r\n\r\n"
        ]));
        assert!(!framed(&[b"GET /content-length HTTP/1.1\r\n\r\n"]));
    }

    #[test]
    fn skip_finds_the_end_of_a_refused_head() {
        let mut scan = HeadScan::default();
        assert!(!scan.skip(b"GET /aaaa"));
        assert!(!scan.skip(b"aaa HTTP/1.1\r\nhost: x\r\n\r"));
        assert!(scan.skip(b"\n"));
    }
}
