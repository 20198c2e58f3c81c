//! `logbook stream tail`: records of a stream printed one per line, read in pages from an
//! offset, or followed (`--follow`) through the server's push tail from the end, the start,
//! given offsets (`P:O,...`) or a consumer group's commits.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use logbook_api::client::{StartAt, Subscribe, SubscriptionEvent};
use logbook_api::limits::READ_RECORDS_MAX;
use logbook_api::paths;
use logbook_api::streams::{EventCursor, EventKind, RecordOut, RecordsOut, StreamInfo};

use crate::client::Client;

/// Where `stream tail` starts (`--from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailFrom {
    /// `N`: this offset of the partition read.
    Offset(u64),
    /// `start`: each partition's first retained record.
    Start,
    /// `end`: only records appended from now on (`--follow` only).
    End,
    /// `P:O,...`: these offsets, per partition (`--follow` only) — a subscription's cursor.
    Cursor(EventCursor),
    /// `group:G`: where the consumer group `G` would read, its commits (`--follow` only).
    Group(String),
}

impl std::str::FromStr for TailFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<TailFrom, String> {
        let form = "an offset, start, end, P:O,... or group:NAME";
        match text {
            "start" => Ok(TailFrom::Start),
            "end" => Ok(TailFrom::End),
            _ if text.starts_with("group:") => match &text["group:".len()..] {
                "" => Err(format!("{text:?} names no group; {form}")),
                group => Ok(TailFrom::Group(group.to_string())),
            },
            _ if text.contains(':') => text
                .parse()
                .map(TailFrom::Cursor)
                .map_err(|e| format!("{text:?}: {e}; {form}")),
            _ => text
                .parse()
                .map(TailFrom::Offset)
                .map_err(|_| format!("{text:?} is not {form}")),
        }
    }
}

impl std::fmt::Display for TailFrom {
    /// The text `--from` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailFrom::Offset(offset) => write!(f, "{offset}"),
            TailFrom::Start => f.write_str("start"),
            TailFrom::End => f.write_str("end"),
            TailFrom::Cursor(cursor) => write!(f, "{cursor}"),
            TailFrom::Group(group) => write!(f, "group:{group}"),
        }
    }
}

/// One record as `tail` prints it: a JSON line, or partition, offset, key and value
/// tab-separated.
fn print_record(out: &mut impl Write, r: &RecordOut, json: bool) -> anyhow::Result<()> {
    if json {
        let line = serde_json::to_string(r).context("encoding a record")?;
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            r.partition,
            r.offset,
            r.key.as_deref().unwrap_or("-"),
            r.value.get()
        )?;
    }
    Ok(())
}

/// Where a subscription starts for `--from` (default: the end). An offset names a position
/// in `--partition`, or in the stream's only partition.
fn start_at(
    client: &Client,
    stream: &str,
    partition: Option<u32>,
    from: Option<TailFrom>,
) -> anyhow::Result<StartAt> {
    Ok(match (from, partition) {
        (None | Some(TailFrom::End), _) => StartAt::End,
        (Some(TailFrom::Start), _) => StartAt::Start,
        (Some(TailFrom::Cursor(cursor)), _) => StartAt::Cursor(cursor),
        (Some(TailFrom::Group(group)), _) => StartAt::Group(group),
        (Some(TailFrom::Offset(f)), Some(p)) => {
            StartAt::Cursor(EventCursor(BTreeMap::from([(p, f)])))
        }
        (Some(TailFrom::Offset(f)), None) => {
            let shown: StreamInfo = client.get_as(&paths::stream(stream), &[])?;
            if shown.partitions != 1 {
                bail!(
                    "stream {stream} has {} partitions: give --partition with --from {f}, or \
                     --from P:O,... (offsets per partition), start or end",
                    shown.partitions
                );
            }
            StartAt::Cursor(EventCursor(BTreeMap::from([(0, f)])))
        }
    })
}

/// `tail --follow`: the push tail of every partition (or one), printed as records arrive,
/// from `--from`. It first says on stderr where it starts (`# from P:O,...`, a cursor that
/// `--from` takes). The subscription resumes from the last event's cursor when the server
/// drops it (this client read too slowly), closes it (the node's `wait_ms_max`) or the
/// connection breaks: nothing is lost or printed twice. It runs until Ctrl-C, an error, or
/// the server's shutdown.
pub fn follow_tail(
    client: &Client,
    stream: &str,
    partition: Option<u32>,
    from: Option<TailFrom>,
    json: bool,
) -> anyhow::Result<()> {
    let options = Subscribe {
        partitions: partition.map(|p| vec![p]),
        start: start_at(client, stream, partition, from)?,
        ..Subscribe::default()
    };
    let mut follow = client.subscribe(stream, &options)?;
    if let Some(cursor) = follow.cursor() {
        eprintln!("# from {cursor}");
    }
    loop {
        match follow.next_event()? {
            SubscriptionEvent::Record { record, .. } => {
                let mut out = std::io::stdout().lock();
                print_record(&mut out, &record, json)?;
                // Flushed per record, so a pipe (`| grep`) sees records as they arrive.
                out.flush()?;
            }
            SubscriptionEvent::Ended {
                kind: EventKind::Dropped,
                ..
            } => eprintln!("# the server dropped this slow subscription; resuming where it was"),
            SubscriptionEvent::Ended {
                kind: EventKind::Closed,
                ..
            } => eprintln!(
                "# the subscription reached the node's wait_ms_max; resuming where it was"
            ),
            SubscriptionEvent::Ended { kind, end } => bail!(
                "the server ended the event stream: {} ({})",
                kind.as_str(),
                end.reason
            ),
        }
    }
}

/// `tail` without `--follow`: up to `limit` records of one partition from an offset
/// (default: the first retained), in pages the server allows.
pub fn tail(
    client: &Client,
    stream: &str,
    partition: Option<u32>,
    from: Option<TailFrom>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut from = match from {
        None | Some(TailFrom::Start) => None,
        Some(TailFrom::Offset(f)) => Some(f),
        Some(other) => {
            bail!(
                "--from {other} is for --follow; without it give an offset (of --partition) or start"
            )
        }
    };
    let path = paths::records(stream);
    // Up to --limit records, in pages the server allows.
    let mut left = limit;
    loop {
        // (A --limit of 0 goes to the server, which names the bad parameter.)
        let page_limit = left.min(READ_RECORDS_MAX);
        let mut query = vec![("limit", page_limit.to_string())];
        if let Some(p) = partition {
            query.push(("partition", p.to_string()));
        }
        if let Some(f) = from {
            query.push(("from", f.to_string()));
        }
        let page: RecordsOut = client.get_as(&path, &query)?;
        let mut out = std::io::stdout().lock();
        for r in &page.records {
            print_record(&mut out, r, json)?;
        }
        out.flush()?;
        let next = page.next;
        from = Some(next);
        left = left.saturating_sub(page.records.len());
        if page.records.is_empty() {
            return Ok(());
        }
        if left == 0 {
            // Whether anything follows: one more record asked for, so the hint is never a
            // guess.
            let mut probe = vec![("limit", "1".to_string()), ("from", next.to_string())];
            if let Some(p) = partition {
                probe.push(("partition", p.to_string()));
            }
            let more: RecordsOut = client.get_as(&path, &probe)?;
            if !more.records.is_empty() {
                eprintln!("# more: continue with --from {next}");
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_each_form_and_names_a_bad_one() {
        for (text, want) in [
            ("12", TailFrom::Offset(12)),
            ("start", TailFrom::Start),
            ("end", TailFrom::End),
            (
                "0:5,3:9",
                TailFrom::Cursor(EventCursor(BTreeMap::from([(0, 5), (3, 9)]))),
            ),
            ("group:billing", TailFrom::Group("billing".into())),
        ] {
            let got: TailFrom = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "it prints as it parses");
        }
        for (bad, why) in [
            ("-1", "is not an offset"),
            ("0:x", "offset"),
            ("0:1,0:2", "named twice"),
            ("group:", "names no group"),
            ("later", "is not an offset"),
        ] {
            let e = bad.parse::<TailFrom>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
