//! The bytes of the push tail's events (WHATWG HTML, "server-sent events"), and the cursor
//! every record event carries as its id.
//!
//! A partition's read becomes one chunk — every record of it as its own event, in one
//! `Bytes` and one body frame — in two steps:
//!
//! ```text
//!  read of partition p  (blocking pool; the partitions of a round concurrently)
//!    └─ serialise: per record its `data: {json}\n` line and the offset after it
//!  in the subscription's order (its task), with the cursor as it stands then:
//!    └─ frame: per record `id: <cursor, p at the offset after it>\nevent: record\n` + line + `\n`
//! ```
//!
//! An event's id names where *every* partition read stands after it, so it depends on what
//! was queued before — which a read running beside the others cannot know. The record's
//! JSON (the costly part) does not, so it is made off the runtime and concurrently; the ids
//! (a copy and a number per record) in queue order. Framing a read as one chunk changes
//! nothing a client sees: the events and their ids are the ones one event per frame gave.

use std::collections::BTreeMap;
use std::io::Write as _;

use axum::body::Bytes;
use logbook_api::streams::{EventCursor, EventKind};
use logbook_log::StoredRecord;

use crate::error::ApiError;

use super::super::streams::{Reveal, record_out};

/// Per partition read, the offset of the next record to send.
pub(super) type Cursor = BTreeMap<u32, u64>;

/// `P:O,...`, the form of an event id and of `from` ([`EventCursor`]'s text).
pub(super) fn format_cursor(cursor: &Cursor) -> String {
    EventCursor(cursor.clone()).to_string()
}

/// Parses `P:O,...` ([`EventCursor`]); the error names `field`.
pub(super) fn parse_cursor(text: &str, field: &str) -> Result<Cursor, ApiError> {
    match text.parse::<EventCursor>() {
        Ok(cursor) => Ok(cursor.0),
        Err(why) => Err(ApiError::invalid(field, format!("{field} {text:?}: {why}"))),
    }
}

/// Queued bytes: one or more whole events (or a comment), and how many.
#[derive(Debug)]
pub(super) struct Chunk {
    pub bytes: Bytes,
    pub events: usize,
}

/// One event of `kind` with `data` (JSON on one line) and the id `cursor`.
pub(super) fn event(cursor: &Cursor, kind: EventKind, data: &serde_json::Value) -> Chunk {
    let text = format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        format_cursor(cursor),
        kind.as_str()
    );
    Chunk {
        bytes: Bytes::from(text),
        events: 1,
    }
}

/// The opening event: only an id, the cursor the subscription starts from (no `event:`,
/// no `data:`, so `EventSource` dispatches nothing but takes the id as its last one). A
/// client that loses the connection before any record then resumes from where it started
/// — on a quiet stream subscribed from `end`, without it, the reconnect would start at the
/// end again and miss what was appended meanwhile.
pub(super) fn opening(cursor: &Cursor) -> Chunk {
    Chunk {
        bytes: Bytes::from(format!("id: {}\n\n", format_cursor(cursor))),
        events: 1,
    }
}

/// A comment line that keeps an idle connection visibly alive.
pub(super) fn heartbeat() -> Chunk {
    Chunk {
        bytes: Bytes::from_static(b": heartbeat\n\n"),
        events: 1,
    }
}

/// A partition's read with each record's `data:` line made, waiting for its ids.
#[derive(Debug, Default)]
pub(super) struct Serialised {
    pub partition: u32,
    /// The records' `data: ...\n` lines, one after the other.
    lines: Vec<u8>,
    /// Per record, in offset order: the offset after it and where its line ends in `lines`.
    ends: Vec<(u64, usize)>,
}

impl Serialised {
    /// The offset after the last record, if any.
    pub fn next(&self) -> Option<u64> {
        self.ends.last().map(|(next, _)| *next)
    }
}

/// Makes the `data:` line of each record read from `partition`, as `GET .../records` shows
/// the record. A stored value is JSON whose whitespace may hold line breaks (values are
/// stored as the appender wrote them on the library's paths); SSE ends a line at `\r` or
/// `\n`, so they become spaces — the same JSON, on one line. Inside a JSON string a line
/// break is always escaped, so nothing else changes.
pub(super) fn serialise(
    partition: u32,
    records: Vec<StoredRecord>,
    reveal: Option<&Reveal>,
) -> Serialised {
    let mut out = Serialised {
        partition,
        lines: Vec::with_capacity(records.len() * 160),
        ends: Vec::with_capacity(records.len()),
    };
    for record in records {
        let next = record.offset + 1;
        out.lines.extend_from_slice(b"data: ");
        let start = out.lines.len();
        if serde_json::to_writer(&mut out.lines, &record_out(partition, record, reveal)).is_err() {
            // Not reachable (a RecordOut always serialises); keep the event well formed.
            out.lines.truncate(start);
            out.lines.extend_from_slice(b"null");
        }
        for b in &mut out.lines[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        out.lines.push(b'\n');
        out.ends.push((next, out.lines.len()));
    }
    out
}

/// The chunk of `read`'s events: ids from `cursor` (where the partitions stand before it)
/// with the read's partition moved past each record in turn.
pub(super) fn frame(cursor: &Cursor, read: &Serialised) -> Chunk {
    let p = read.partition;
    let (before, after) = ids_around(cursor, p);
    let per_event = before.len() + after.len() + 48;
    let mut out = Vec::with_capacity(read.lines.len() + read.ends.len() * per_event);
    let mut start = 0;
    for (next, end) in &read.ends {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(before.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{p}:{next}");
        out.extend_from_slice(after.as_bytes());
        out.extend_from_slice(b"\nevent: ");
        out.extend_from_slice(EventKind::Record.as_str().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(read.lines.get(start..*end).unwrap_or_default());
        out.push(b'\n');
        start = *end;
    }
    Chunk {
        bytes: Bytes::from(out),
        events: read.ends.len(),
    }
}

/// The text of `cursor` before partition `p`'s entry (with its comma) and after it.
fn ids_around(cursor: &Cursor, p: u32) -> (String, String) {
    let text = |range: &mut dyn Iterator<Item = (&u32, &u64)>| -> Vec<String> {
        range.map(|(q, o)| format!("{q}:{o}")).collect()
    };
    let before = text(&mut cursor.range(..p));
    let after = text(
        &mut cursor
            .range(p.saturating_add(1)..)
            .filter(|(q, _)| **q != p),
    );
    let mut b = before.join(",");
    if !b.is_empty() {
        b.push(',');
    }
    let mut a = after.join(",");
    if !a.is_empty() {
        a.insert(0, ',');
    }
    (b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, value: &str) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 7,
            key: Some(b"k".to_vec()),
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    /// The events of a chunk as (id, kind, data), split the way a client does.
    fn events(chunk: &Chunk) -> Vec<(String, String, String)> {
        let text = std::str::from_utf8(&chunk.bytes).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        text.split_terminator("\n\n")
            .map(|event| {
                let mut lines = event.lines();
                let mut field = |name: &str| {
                    let line = lines.next().unwrap();
                    line.strip_prefix(name).unwrap().to_string()
                };
                let got = (field("id: "), field("event: "), field("data: "));
                assert_eq!(lines.next(), None, "one data line: {event:?}");
                got
            })
            .collect()
    }

    #[test]
    fn a_chunk_holds_one_event_per_record_with_the_cursor_after_it() {
        let cursor = Cursor::from([(0, 5), (2, 9), (3, 1)]);
        let read = serialise(2, vec![record(9, "1"), record(10, "{\"a\":2}")], None);
        assert_eq!(read.next(), Some(11));
        let chunk = frame(&cursor, &read);
        assert_eq!(chunk.events, 2);
        let got = events(&chunk);
        let mut after_first = cursor.clone();
        after_first.insert(2, 10);
        let mut after_second = cursor.clone();
        after_second.insert(2, 11);
        assert_eq!(got[0].0, format_cursor(&after_first));
        assert_eq!(got[1].0, format_cursor(&after_second));
        assert!(got.iter().all(|e| e.1 == "record"));
        let second: serde_json::Value = serde_json::from_str(&got[1].2).unwrap();
        assert_eq!(second["partition"], 2);
        assert_eq!(second["offset"], 10);
        assert_eq!(second["value"], serde_json::json!({"a": 2}));
    }

    #[test]
    fn ids_name_the_first_and_last_partition_alone_right() {
        for (cursor, p) in [
            (Cursor::from([(4, 0)]), 4),
            (Cursor::from([(0, 3), (1, 0)]), 0),
            (Cursor::from([(0, 3), (1, 0)]), 1),
        ] {
            let read = serialise(p, vec![record(cursor[&p], "null")], None);
            let mut moved = cursor.clone();
            moved.insert(p, cursor[&p] + 1);
            assert_eq!(events(&frame(&cursor, &read))[0].0, format_cursor(&moved));
        }
    }

    #[test]
    fn the_opening_event_is_only_the_starting_cursor() {
        let chunk = opening(&Cursor::from([(0, 12), (3, 0)]));
        assert_eq!(
            (&chunk.bytes[..], chunk.events),
            (&b"id: 0:12,3:0\n\n"[..], 1)
        );
    }

    #[test]
    fn line_breaks_in_a_stored_value_stay_on_one_data_line() {
        let value = "{\r\n  \"text\": \"a\\nb\",\n  \"n\": [1,\r2]\n}";
        let read = serialise(0, vec![record(0, value)], None);
        let got = events(&frame(&Cursor::from([(0, 0)]), &read));
        let data: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
        assert_eq!(
            data["value"],
            serde_json::json!({"text": "a\nb", "n": [1, 2]})
        );
    }

    #[test]
    fn cursors_parse_back_and_bad_ones_name_the_field() {
        let cursor = Cursor::from([(0, 12), (3, 0)]);
        assert_eq!(
            parse_cursor(&format_cursor(&cursor), "from").unwrap(),
            cursor
        );
        for bad in ["", "0", "0:x", "x:0", "0:1,0:2"] {
            let e = parse_cursor(bad, "Last-Event-ID").unwrap_err();
            assert_eq!(e.problem().field.as_deref(), Some("Last-Event-ID"), "{bad}");
        }
    }
}
