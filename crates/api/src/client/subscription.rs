//! The push tail as a typed subscription that resumes itself:
//! `GET /v1/streams/{stream}/records/events` (server-sent events) over the client's own
//! transport, its connection pool, credentials, TLS and retries.
//!
//! * **Typed events.** Each record arrives as a [`RecordOut`] with the [`EventCursor`] after
//!   it; the server's end of a connection (`dropped`, `closed`, `shutdown`) as
//!   [`SubscriptionEvent::Ended`] with its [`EventKind`] and [`EventEnd`]; an `error` event
//!   as [`ClientError::Problem`].
//! * **Resuming.** The subscription keeps the id of the last event it received — the
//!   opening one, a record's or an end's — and connects again with it as `Last-Event-ID`:
//!   nothing is lost or repeated across a slow consumer's drop, the node's `wait_ms_max`, or
//!   a broken connection. The server's first event is only an id, the cursor the
//!   subscription starts from (with [`StartAt::End`], each partition's end then), and
//!   [`Client::subscribe`] returns once it has it: a subscription from the end on a quiet
//!   stream that loses its connection before any record resumes from that cursor, not from
//!   the end again, so what was appended while it reconnected is not skipped. (The other
//!   design, the client reading each partition's end before it subscribes, costs a round
//!   trip, races appends between the two, and helps no other SSE client: decision 0015's
//!   amendment.)
//! * **Bounded.** The body is read only when the caller asks for the next event, so a slow
//!   caller slows the server's sending (which drops a subscription that takes nothing for
//!   `stall_ms`; the next call resumes it). What the subscription holds is at most one
//!   unfinished event of [`EVENT_BYTES_MAX`] and one frame of the body.
//!
//! Events are separated by a blank line (`\n\n`) as the server writes them; lines starting
//! with `:` (the heartbeat) are comments; kinds this client does not know are skipped.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;

use super::http::Call;
use super::{Client, ClientError};
use crate::paths::{self, Query};
use crate::problem::Problem;
use crate::streams::{EventCursor, EventEnd, EventKind, RecordOut};

/// Longest event a subscription takes, in bytes (8 MiB): a record of up to 1 MiB escaped as
/// JSON, with room. An unfinished event longer than this is [`ClientError::Answer`].
pub const EVENT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Where a subscription starts (its `from`). A subscription that resumes starts from its
/// cursor instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartAt {
    /// Only records appended from now on: each partition's end when the server answers.
    #[default]
    End,
    /// Each partition's first retained record.
    Start,
    /// These offsets (a partition read but not named starts at its end).
    Cursor(EventCursor),
    /// The committed offsets of this consumer group (the token needs `groups:read:<group>`).
    Group(String),
}

/// What a subscription reads, and how the server paces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// The partitions read (default: every partition).
    pub partitions: Option<Vec<u32>>,
    /// Where it starts.
    pub start: StartAt,
    /// A `: heartbeat` after this long without an event, ms (100..=300,000; server default
    /// [`crate::limits::SSE_HEARTBEAT_MS_DEFAULT`]). A connection that brings nothing for
    /// this long plus the client's request timeout is taken as lost and resumed.
    pub heartbeat_ms: Option<u64>,
    /// The server drops the subscription (`dropped`) when it takes nothing from its full
    /// queue for this long, ms (100..=300,000; server default 30,000).
    pub stall_ms: Option<u64>,
}

impl Subscribe {
    fn query(&self) -> Query {
        let partitions = self.partitions.as_ref().map(|list| {
            list.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        let from = match &self.start {
            StartAt::End => None,
            StartAt::Start => Some("start".to_string()),
            StartAt::Cursor(cursor) => Some(cursor.to_string()),
            StartAt::Group(group) => Some(format!("group:{group}")),
        };
        Query::new()
            .push_opt("partitions", partitions)
            .push_opt("from", from)
            .push_opt("heartbeat_ms", self.heartbeat_ms)
            .push_opt("stall_ms", self.stall_ms)
    }
}

/// One event of a [`Subscription`].
#[derive(Debug, Clone)]
pub enum SubscriptionEvent {
    /// A record, and the cursor just after it.
    Record {
        /// The record, as `GET .../records` shows it.
        record: RecordOut,
        /// Where a subscription resuming after this record starts.
        cursor: EventCursor,
    },
    /// The server ended the connection and said why: `dropped` (this client read too
    /// slowly), `closed` (the node's `wait_ms_max`) or `shutdown`. The next call to
    /// [`Subscription::next_event`] connects again from [`Subscription::cursor`].
    Ended {
        /// `Dropped`, `Closed` or `Shutdown`.
        kind: EventKind,
        /// The reason the server gave.
        end: EventEnd,
    },
}

/// A subscription to a stream's records (see the module docs), made by
/// [`Client::subscribe`]. Call [`Subscription::next_event`] for each event.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    /// Path and query of every connection; a resumed one adds `Last-Event-ID`, which the
    /// server takes before `from` and `partitions`.
    path: String,
    /// The id of the last event received.
    cursor: Option<EventCursor>,
    /// The open connection's body, if one is open.
    body: Option<Incoming>,
    /// Bytes received not yet taken as events: `pending[taken..]`, of which
    /// `pending[taken..searched]` holds no event's end.
    pending: Vec<u8>,
    taken: usize,
    searched: usize,
    /// Whether the open connection brought anything.
    heard: bool,
    /// Longest silence of an open connection before it is taken as lost.
    idle: Duration,
    /// Connections made.
    connections: u64,
    /// Event blocks taken from the connections, heartbeats and the opening id included.
    blocks: u64,
    /// An event that arrived while [`Client::subscribe`] waited for the opening id (from a
    /// server that sends none), handed out first.
    held: Option<SubscriptionEvent>,
}

impl Client {
    /// Subscribes to `stream`'s records as they are appended (the push tail,
    /// `GET /v1/streams/{stream}/records/events`). It returns once the server's opening
    /// event has said where the subscription starts ([`Subscription::cursor`]), so a
    /// subscription from the end sees every record appended after this returns, across
    /// broken connections too.
    ///
    /// # Errors
    /// As the first connection's answer: `unknown_stream`, `invalid_request` naming the
    /// parameter, `offset_out_of_range`, `subscription_budget_exhausted` (429, retried as
    /// the [`super::RetryPolicy`] says); the transport errors of a read.
    pub async fn subscribe(
        &self,
        stream: &str,
        options: &Subscribe,
    ) -> Result<Subscription, ClientError> {
        let heartbeat_ms = options
            .heartbeat_ms
            .unwrap_or(crate::limits::SSE_HEARTBEAT_MS_DEFAULT);
        let idle = heartbeat_ms.saturating_add(self.inner.config.request_timeout_ms);
        let mut subscription = Subscription {
            client: self.clone(),
            path: paths::record_events(stream) + &options.query().finish(),
            cursor: None,
            body: None,
            pending: Vec::new(),
            taken: 0,
            searched: 0,
            heard: false,
            idle: Duration::from_millis(idle),
            connections: 0,
            blocks: 0,
            held: None,
        };
        subscription.connect().await?;
        subscription.opened().await?;
        Ok(subscription)
    }
}

impl Subscription {
    /// The next event: waits until one arrives, connecting again first (from
    /// [`Subscription::cursor`]) when the last connection ended.
    ///
    /// # Errors
    /// An `error` event's problem; a reconnection's answer or transport error (as
    /// [`Client::subscribe`]); [`ClientError::Transport`] when a connection ended or went
    /// quiet before it brought anything; [`ClientError::Answer`] for an event that is not
    /// what API v1 sends. After any of them the subscription still stands: the next call
    /// connects again from the cursor.
    pub async fn next_event(&mut self) -> Result<SubscriptionEvent, ClientError> {
        if let Some(event) = self.held.take() {
            return Ok(event);
        }
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(event);
            }
            if self.body.is_none() {
                self.connect().await?;
            }
            self.receive().await?;
        }
    }

    /// The id of the last event received, the server's opening id until a record arrives:
    /// where the subscription resumes (`None` only from a server that sends no opening id,
    /// before its first event).
    pub fn cursor(&self) -> Option<&EventCursor> {
        self.cursor.as_ref()
    }

    /// How many connections the subscription has made (the first included).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Waits for the first event block of the connection just made: the server's opening
    /// id, which sets the cursor. An event in its place (a server that sends no opening
    /// id) is held for [`Subscription::next_event`]; a connection lost after bringing
    /// something is left for `next_event` to make again.
    async fn opened(&mut self) -> Result<(), ClientError> {
        let before = self.blocks;
        while self.blocks == before {
            if let Some(event) = self.take_event()? {
                self.held = Some(event);
                return Ok(());
            }
            if self.body.is_none() {
                return Ok(());
            }
            self.receive().await?;
        }
        Ok(())
    }

    fn operation(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("GET {path}")
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        self.disconnect();
        let mut call = Call::new(Method::GET, self.path.clone());
        call.events = true;
        call.last_event_id = self.cursor.as_ref().map(EventCursor::to_string);
        let inner = &self.client.inner;
        let answer = inner.transport.send(&call, &inner.rng).await?;
        self.connections += 1;
        self.body = answer.open;
        Ok(())
    }

    fn disconnect(&mut self) {
        self.body = None;
        self.pending.clear();
        self.taken = 0;
        self.searched = 0;
        self.heard = false;
    }

    /// Waits for the next frame of the open connection; a connection that ended, broke or
    /// went quiet is closed (the next loop connects again), an error if it brought nothing.
    async fn receive(&mut self) -> Result<(), ClientError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        let lost = match tokio::time::timeout(self.idle, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.heard = true;
                    self.pending.extend_from_slice(&data);
                }
                return Ok(());
            }
            Ok(Some(Err(e))) => format!("the event stream broke: {e}"),
            Ok(None) => "the server closed the event stream without an end event".to_string(),
            Err(_) => format!(
                "nothing arrived for {} ms, not even a heartbeat",
                self.idle.as_millis()
            ),
        };
        let heard = self.heard;
        self.disconnect();
        if heard {
            return Ok(());
        }
        Err(ClientError::Transport {
            operation: self.operation(),
            attempts: 1,
            last: lost,
        })
    }

    /// The next whole event among the bytes received, if any; moves the cursor to its id.
    fn take_event(&mut self) -> Result<Option<SubscriptionEvent>, ClientError> {
        loop {
            let from = self.searched.max(self.taken);
            let Some(at) = memchr::memmem::find(&self.pending[from..], b"\n\n") else {
                // No whole event: keep only its start, and what is searched.
                self.searched = self.pending.len().saturating_sub(1);
                self.pending.drain(..self.taken);
                self.searched -= self.taken.min(self.searched);
                self.taken = 0;
                if self.pending.len() > EVENT_BYTES_MAX {
                    self.disconnect();
                    return Err(
                        self.malformed(format!("an event longer than {EVENT_BYTES_MAX} bytes"))
                    );
                }
                return Ok(None);
            };
            let end = from + at + 2;
            let block = parse_block(&String::from_utf8_lossy(&self.pending[self.taken..end]));
            self.taken = end;
            self.searched = end;
            self.blocks += 1;
            if let Some(block) = block
                && let Some(event) = self.event_of(block)?
            {
                return Ok(Some(event));
            }
        }
    }

    /// What one event block means; `None` for a kind this client skips.
    fn event_of(&mut self, block: Block) -> Result<Option<SubscriptionEvent>, ClientError> {
        if let Some(id) = &block.id {
            let cursor = id
                .parse::<EventCursor>()
                .map_err(|e| self.malformed(format!("event id {id:?}: {e}")))?;
            self.cursor = Some(cursor);
        }
        let Some(kind) = EventKind::parse(&block.kind) else {
            return Ok(None);
        };
        match kind {
            EventKind::Record => {
                let record = serde_json::from_str(&block.data)
                    .map_err(|e| self.malformed(format!("a record event: {e}")))?;
                let cursor = match (&block.id, &self.cursor) {
                    (Some(_), Some(cursor)) => cursor.clone(),
                    _ => return Err(self.malformed("a record event without an id".into())),
                };
                Ok(Some(SubscriptionEvent::Record { record, cursor }))
            }
            EventKind::Dropped | EventKind::Closed | EventKind::Shutdown => {
                self.disconnect();
                let end = serde_json::from_str(&block.data).unwrap_or(EventEnd {
                    reason: block.data,
                    detail: None,
                });
                Ok(Some(SubscriptionEvent::Ended { kind, end }))
            }
            EventKind::Error => {
                self.disconnect();
                let problem: Problem = serde_json::from_str(&block.data)
                    .map_err(|e| self.malformed(format!("an error event: {e}")))?;
                Err(ClientError::Problem {
                    problem: Box::new(problem),
                    retry_after_s: None,
                })
            }
        }
    }

    fn malformed(&self, detail: String) -> ClientError {
        ClientError::Answer {
            operation: self.operation(),
            status: 200,
            detail,
        }
    }
}

/// One event block's fields.
#[derive(Debug, Default, PartialEq, Eq)]
struct Block {
    /// `id:`.
    id: Option<String>,
    /// `event:` (`message` when the block names none).
    kind: String,
    /// `data:` lines, joined by `\n`.
    data: String,
}

/// The fields of one event block (its lines up to the blank line); `None` for a block of
/// comments only (a heartbeat).
fn parse_block(block: &str) -> Option<Block> {
    let mut event = Block {
        kind: "message".into(),
        ..Block::default()
    };
    let mut any = false;
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => event.id = Some(value.to_string()),
            "event" => event.kind = value.to_string(),
            "data" => {
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            _ => {}
        }
    }
    any.then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription() -> Subscription {
        let client = Client::new("127.0.0.1:9").unwrap();
        Subscription {
            client,
            path: "/v1/streams/s/records/events".into(),
            cursor: None,
            body: None,
            pending: Vec::new(),
            taken: 0,
            searched: 0,
            heard: false,
            idle: Duration::from_secs(1),
            connections: 0,
            blocks: 0,
            held: None,
        }
    }

    /// Review r12c F1: the opening event is an id alone; it moves the cursor and is no
    /// event for the caller.
    #[test]
    fn the_opening_id_sets_the_cursor_and_yields_nothing() {
        let mut s = subscription();
        s.pending = b"id: 0:4,2:9\n\n: heartbeat\n\n".to_vec();
        assert!(matches!(s.take_event(), Ok(None)));
        assert_eq!(
            s.cursor().map(ToString::to_string).as_deref(),
            Some("0:4,2:9")
        );
        assert_eq!(s.blocks, 2, "the opening and the heartbeat were taken");
    }

    #[test]
    fn blocks_parse_with_ids_kinds_and_data_and_heartbeats_are_skipped() {
        let block = parse_block("id: 0:3,1:0\nevent: record\ndata: {\"a\":1}\n\n").unwrap();
        assert_eq!(block.id.as_deref(), Some("0:3,1:0"));
        assert_eq!(
            (block.kind.as_str(), block.data.as_str()),
            ("record", "{\"a\":1}")
        );
        assert!(parse_block(": heartbeat\n\n").is_none());
        let two = parse_block("data: a\ndata: b\n\n").unwrap();
        assert_eq!((two.kind.as_str(), two.data.as_str()), ("message", "a\nb"));
    }

    const RECORD: &str =
        r#"{"partition":0,"offset":6,"key":null,"value":{"n":1},"headers":{},"timestamp_ms":1}"#;

    /// Review r12b R2: on a quiet stream the end event is the only one, and its id is where
    /// the subscription resumes.
    #[test]
    fn an_end_events_id_moves_the_cursor_and_ends_the_connection() {
        for kind in [EventKind::Closed, EventKind::Dropped, EventKind::Shutdown] {
            let mut s = subscription();
            s.pending = format!(
                ": heartbeat\n\nid: 0:7,1:3\nevent: {}\ndata: {{\"reason\":\"wait_ms_max\"}}\n\n",
                kind.as_str()
            )
            .into_bytes();
            let Ok(Some(SubscriptionEvent::Ended { kind: got, end })) = s.take_event() else {
                panic!("{kind:?}: an end");
            };
            assert_eq!((got, end.reason.as_str()), (kind, "wait_ms_max"));
            assert_eq!(
                s.cursor().map(ToString::to_string).as_deref(),
                Some("0:7,1:3")
            );
            assert!(
                s.pending.is_empty(),
                "the connection's bytes are dropped with it"
            );
        }
    }

    #[test]
    fn records_arrive_typed_with_their_cursor_even_split_across_frames() {
        let mut s = subscription();
        let whole = format!("id: 0:7\nevent: record\ndata: {RECORD}\n\nid: 0:8\nevent: rec");
        let (first, second) = whole.split_at(20);
        s.pending.extend_from_slice(first.as_bytes());
        assert!(matches!(s.take_event(), Ok(None)));
        s.pending.extend_from_slice(second.as_bytes());
        let Ok(Some(SubscriptionEvent::Record { record, cursor })) = s.take_event() else {
            panic!("a record");
        };
        assert_eq!((record.offset, cursor.to_string()), (6, "0:7".to_string()));
        assert!(matches!(s.take_event(), Ok(None)));
        assert_eq!(
            s.pending, b"id: 0:8\nevent: rec",
            "the unfinished event is kept"
        );
        s.pending.extend_from_slice(b"ord\ndata: {}\n\n");
        assert!(
            matches!(s.take_event(), Err(ClientError::Answer { .. })),
            "a record event whose data is not a record"
        );
    }

    #[test]
    fn an_error_event_is_its_problem_and_unknown_kinds_are_skipped() {
        let mut s = subscription();
        s.pending = b"event: ping\ndata: x\n\nevent: error\ndata: {\"type\":\"about:blank\",\"title\":\"Internal\",\"status\":500,\"code\":\"internal\",\"detail\":\"boom\"}\n\n".to_vec();
        match s.take_event() {
            Err(ClientError::Problem { problem, .. }) => assert_eq!(problem.status, 500),
            other => panic!("the problem, not {other:?}"),
        }
        s.pending = b"id: banana\nevent: record\ndata: {}\n\n".to_vec();
        assert!(matches!(s.take_event(), Err(ClientError::Answer { .. })));
    }

    #[test]
    fn an_unfinished_event_is_bounded() {
        let mut s = subscription();
        s.pending = vec![b'x'; EVENT_BYTES_MAX + 1];
        assert!(matches!(s.take_event(), Err(ClientError::Answer { .. })));
        assert!(s.pending.is_empty());
    }

    #[test]
    fn the_query_says_where_to_start() {
        let q = |o: &Subscribe| o.query().finish();
        assert_eq!(q(&Subscribe::default()), "");
        let at = EventCursor([(0, 5), (2, 9)].into_iter().collect());
        let options = Subscribe {
            partitions: Some(vec![0, 2]),
            start: StartAt::Cursor(at),
            heartbeat_ms: Some(500),
            stall_ms: None,
        };
        assert_eq!(
            q(&options),
            "?partitions=0%2C2&from=0%3A5%2C2%3A9&heartbeat_ms=500"
        );
        let group = Subscribe {
            start: StartAt::Group("g".into()),
            ..Subscribe::default()
        };
        assert_eq!(q(&group), "?from=group%3Ag");
    }
}
