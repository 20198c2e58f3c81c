//! A client of the push tail (`GET /v1/streams/{stream}/records/events`): one HTTP/1.1
//! connection whose body is read as server-sent events, frame by frame, as they arrive.
//!
//! `stream tail --follow` prints each record event. When the server ends the subscription
//! because this client read too slowly (`event: dropped`) or the subscription reached the
//! node's longest life (`event: closed`), it reconnects with the last
//! event's id as `Last-Event-ID` and so resumes exactly where it was: nothing lost, nothing
//! printed twice.

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use logbook_api::streams::EventKind;

/// Most bytes of one event (a record of up to 1 MiB, escaped as JSON, with room).
const EVENT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// One server-sent event.
#[derive(Debug, Default)]
pub struct Event {
    /// `id:` (the cursor after this event).
    pub id: Option<String>,
    /// `event:` (an [`EventKind`]'s name, or `message` when the block has none).
    pub kind: String,
    /// `data:` lines, joined by `\n`.
    pub data: String,
}

/// Parses one event block (the lines before a blank line); `None` for a comment-only block
/// (a heartbeat).
fn parse_event(block: &str) -> Option<Event> {
    let mut event = Event {
        kind: "message".into(),
        ..Event::default()
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

/// Follows `path_and_query` on `base` (`http://HOST:PORT`, or `https://HOST:PORT` checked
/// against `ca_cert_pem`, else the system's roots), sending `token` as a bearer
/// token when given, calling `on_event` for each
/// record event; after `dropped` or `closed` it reconnects with `Last-Event-ID` and goes on. Runs until
/// `on_event` fails or the server ends the stream another way (`shutdown`, `error`: an
/// error naming it).
///
/// # Errors
/// No connection, a non-200 answer (its problem's detail), an event over
/// [`EVENT_BYTES_MAX`], or the stream ending.
pub fn follow(
    base: &str,
    token: Option<&str>,
    ca_cert_pem: Option<&[u8]>,
    path_and_query: &str,
    mut on_event: impl FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("no runtime for the event stream")?;
    let (tls, authority) = match base.strip_prefix("https://") {
        Some(rest) => (Some(crate::net::connector(ca_cert_pem)?), rest),
        None => (None, base.strip_prefix("http://").unwrap_or(base)),
    };
    let authority = authority.trim_end_matches('/').to_string();
    // Where to resume: the id of the last event received, a record's or the end's. On a
    // quiet stream the end (`closed`, `dropped`) is the only event, and its id is what
    // keeps a reconnect from starting at the end again and skipping what was appended
    // in between.
    let mut last_id: Option<String> = None;
    loop {
        let resume = last_id.clone();
        let ended = runtime.block_on(subscribe(
            &authority,
            tls.as_ref(),
            token,
            path_and_query,
            resume.as_deref(),
            &mut last_id,
            &mut on_event,
        ))?;
        match EventKind::parse(&ended) {
            Some(EventKind::Dropped) => {
                eprintln!("# the server dropped this slow subscription; resuming where it was");
            }
            Some(EventKind::Closed) => {
                eprintln!(
                    "# the subscription reached the node's wait_ms_max; resuming where it was"
                );
            }
            _ => bail!("the server ended the event stream: {ended}"),
        }
    }
}

/// One connection: reads events until the server ends the stream, keeping `cursor` at the
/// id of the last event received; how it ended (as [`take_events`] says).
async fn subscribe(
    authority: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    token: Option<&str>,
    path_and_query: &str,
    last_id: Option<&str>,
    cursor: &mut Option<String>,
    on_event: &mut impl FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let io = crate::net::connect(authority, tls).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let mut request = Request::get(path_and_query)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "text/event-stream");
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .context("building the request")?;
    let mut response = sender.send_request(request).await.context("no answer")?;
    if response.status() != hyper::StatusCode::OK {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
        let detail = text
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_default();
        bail!("GET {path_and_query}: {status} {detail}");
    }
    // Bytes, not text: a frame may end inside a character (and the server sends many
    // events per frame); each whole event is decoded on its own.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = response.body_mut().frame().await {
        let frame = frame.context("reading the event stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        if let Some(ended) = take_events(&mut pending, cursor, on_event)? {
            return Ok(ended);
        }
    }
    Ok("the connection closed".into())
}

/// Takes the whole events at the front of `pending`, calling `on_event` for each record
/// and setting `cursor` to each event's id (the end's too); `Some` once the server ended
/// the subscription: `dropped` or `closed`, else the last event's kind and data.
///
/// # Errors
/// What `on_event` returned, or an unfinished event over [`EVENT_BYTES_MAX`].
fn take_events(
    pending: &mut Vec<u8>,
    cursor: &mut Option<String>,
    on_event: &mut impl FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<Option<String>> {
    let mut used = 0;
    while let Some(end) = memchr::memmem::find(&pending[used..], b"\n\n") {
        let block = String::from_utf8_lossy(&pending[used..used + end + 2]);
        used += end + 2;
        let Some(event) = parse_event(&block) else {
            continue;
        };
        if event.id.is_some() {
            cursor.clone_from(&event.id);
        }
        match EventKind::parse(&event.kind) {
            Some(EventKind::Record) => on_event(&event)?,
            Some(kind @ (EventKind::Dropped | EventKind::Closed)) => {
                return Ok(Some(kind.as_str().into()));
            }
            _ => return Ok(Some(format!("{} {}", event.kind, event.data))),
        }
    }
    pending.drain(..used);
    if pending.len() > EVENT_BYTES_MAX {
        bail!("an event longer than {EVENT_BYTES_MAX} bytes");
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_with_ids_kinds_and_data_and_heartbeats_are_skipped() {
        let event = parse_event("id: 0:3,1:0\nevent: record\ndata: {\"a\":1}\n\n").unwrap();
        assert_eq!(event.id.as_deref(), Some("0:3,1:0"));
        assert_eq!(event.kind, "record");
        assert_eq!(event.data, "{\"a\":1}");
        assert!(parse_event(": heartbeat\n\n").is_none());
        let two = parse_event("data: a\ndata: b\n\n").unwrap();
        assert_eq!((two.kind.as_str(), two.data.as_str()), ("message", "a\nb"));
    }

    /// Review r12b R2: a subscription on a quiet stream gets no record before the node
    /// closes it; the reconnect must resume from the `closed` event's id (where the
    /// subscription stood), not start at the end again and skip what was appended between
    /// the cut and the reconnect.
    #[test]
    fn the_end_events_id_is_where_a_quiet_subscription_resumes() -> anyhow::Result<()> {
        for kind in ["closed", "dropped"] {
            let mut pending = format!(
                ": heartbeat\n\nid: 0:7,1:3\nevent: {kind}\ndata: {{\"reason\":\"x\"}}\n\n"
            )
            .into_bytes();
            let mut cursor = None;
            let mut records = 0;
            let ended = take_events(&mut pending, &mut cursor, &mut |_| {
                records += 1;
                Ok(())
            })?;
            assert_eq!(ended.as_deref(), Some(kind));
            assert_eq!((cursor.as_deref(), records), (Some("0:7,1:3"), 0), "{kind}");
        }
        Ok(())
    }

    #[test]
    fn records_move_the_cursor_and_a_part_event_waits_for_its_end() -> anyhow::Result<()> {
        let mut pending = b"id: 0:1\nevent: record\ndata: {}\n\nid: 0:2\nevent: rec".to_vec();
        let mut cursor = Some("0:0".to_string());
        let mut records = 0;
        let ended = take_events(&mut pending, &mut cursor, &mut |_| {
            records += 1;
            Ok(())
        })?;
        assert_eq!((ended, cursor.as_deref(), records), (None, Some("0:1"), 1));
        assert_eq!(pending, b"id: 0:2\nevent: rec");
        Ok(())
    }
}
