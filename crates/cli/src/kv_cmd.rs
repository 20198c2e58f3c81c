//! `logbook kv read`: keys and key ranges read at one snapshot (`POST /v1/kv/read`) — the
//! first round trip of a read-modify-write, whose answer `logbook commit --snapshot S --read
//! KEY=VERSION` declares.

use logbook_api::txns::{RangeSpec, ReadBody};
use serde_json::value::RawValue;

use crate::client::{Client, ServerArgs, print_json};

/// The committed key-value table on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Read keys and ranges at one snapshot: each key's value and version, each range's
    /// rows, and the snapshot they were read at.
    ///
    /// Prints `snapshot S`, then `KEY = VALUE (version V)` per key (`KEY absent`) and per
    /// row of each range. Declare what was read in `logbook commit --snapshot S --read
    /// KEY=V` (`KEY=absent`), so the commit is refused if another commit changed it since.
    ///
    /// Examples:
    ///   logbook kv read seats/booked user/ada
    ///   logbook kv read --range 'user/a..user/m' --limit 50
    ///   logbook kv read --prefix user/ --snapshot 57 --json
    #[command(verbatim_doc_comment)]
    Read(ReadArgs),
}

impl KvCommand {
    /// Whether errors are printed as problem documents (`--json`).
    pub fn json(&self) -> bool {
        match self {
            KvCommand::Read(args) => args.json,
        }
    }
}

/// Options of `logbook kv read`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Keys to read.
    keys: Vec<String>,
    /// A key range START..END: from START (inclusive) to END (exclusive), split at the
    /// first `..`; an empty side is unbounded (`a..` from `a` on, `..` everything).
    #[arg(long = "range", value_name = "START..END")]
    ranges: Vec<String>,
    /// The keys starting with this.
    #[arg(long = "prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
    /// Most rows per range, 1..=10000 (default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// The snapshot to read at (a `_txn` offset: the commits below it), within the
    /// server's snapshot window. Default: the newest.
    #[arg(long)]
    snapshot: Option<u64>,
    /// Print the server's answer as one line of JSON (errors: its problem document).
    #[arg(long)]
    json: bool,
}

/// `START..END` as a range; either side may be empty (unbounded).
fn range_of(text: &str) -> anyhow::Result<RangeSpec> {
    let Some((start, end)) = text.split_once("..") else {
        anyhow::bail!("--range {text:?}: expected START..END (either side may be empty)");
    };
    let side = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(RangeSpec {
        start: side(start),
        end: side(end),
        ..RangeSpec::default()
    })
}

impl ReadArgs {
    /// The request, or an error naming the flag; nothing is sent for a bad one.
    fn request(&self) -> anyhow::Result<ReadBody> {
        let mut ranges = Vec::new();
        for text in &self.ranges {
            ranges.push(range_of(text)?);
        }
        ranges.extend(self.prefixes.iter().map(|p| RangeSpec {
            prefix: Some(p.clone()),
            ..RangeSpec::default()
        }));
        for r in &mut ranges {
            r.limit = self.limit;
        }
        Ok(ReadBody {
            keys: self.keys.clone(),
            ranges,
            snapshot: self.snapshot,
        })
    }
}

/// Runs `logbook kv ...`.
pub fn run(cmd: KvCommand) -> anyhow::Result<()> {
    let KvCommand::Read(args) = cmd;
    let read = args.request()?;
    if read.keys.is_empty() && read.ranges.is_empty() {
        anyhow::bail!("kv read: name keys, --range START..END or --prefix P to read");
    }
    let client = Client::new(&args.server)?;
    let answer = client.kv_read(&read)?;
    if args.json {
        return print_json(&answer);
    }
    let snapshot = answer.snapshot;
    outln!("snapshot {snapshot}");
    for key in &answer.keys {
        outln!("{}", row_text(&key.key, key.value.as_deref(), key.version));
    }
    let asked = args.ranges.iter().chain(&args.prefixes);
    for (page, asked) in answer.ranges.iter().zip(asked) {
        for row in &page.rows {
            outln!("{}", row_text(&row.key, Some(&row.value), row.version));
        }
        // A note, not data: stdout keeps only rows.
        if let Some(next) = &page.next {
            eprintln!("# more in {asked:?}: read on from {next:?} at snapshot {snapshot}");
        }
    }
    Ok(())
}

/// `KEY = VALUE (version V)`, or `KEY absent`.
fn row_text(key: &str, value: Option<&RawValue>, version: Option<u64>) -> String {
    match (version, value) {
        (Some(v), Some(value)) => format!("{key} = {} (version {v})", value.get()),
        (Some(v), None) => format!("{key} = null (version {v})"),
        (None, _) => format!("{key} absent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: KvCommand,
    }

    fn request(args: &[&str]) -> anyhow::Result<ReadBody> {
        let cli = Cli::try_parse_from(["kv", "read"].into_iter().chain(args.iter().copied()))?;
        let KvCommand::Read(args) = cli.cmd;
        args.request()
    }

    #[test]
    fn flags_become_the_wire_request() {
        let body = request(&[
            "a",
            "b",
            "--range",
            "u/a..u/m",
            "--range",
            "x..",
            "--prefix",
            "p/",
            "--limit",
            "5",
            "--snapshot",
            "9",
        ])
        .unwrap();
        assert_eq!(body.keys, ["a", "b"]);
        assert_eq!(body.snapshot, Some(9));
        let r = &body.ranges;
        assert_eq!(
            (r[0].start.as_deref(), r[0].end.as_deref()),
            (Some("u/a"), Some("u/m"))
        );
        assert_eq!(
            (r[1].start.as_deref(), r[1].end.as_deref()),
            (Some("x"), None)
        );
        assert_eq!(r[2].prefix.as_deref(), Some("p/"));
        assert!(r.iter().all(|r| r.limit == Some(5)));
        let e = request(&["--range", "a-b"]).unwrap_err().to_string();
        assert!(e.contains("expected START..END"), "{e}");
    }
}
