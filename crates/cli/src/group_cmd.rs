//! `logbook group ...`: consumer groups on a running server — list, describe (members,
//! assignments, committed offsets and lag per partition), reset (to the start, the end, a
//! time or given offsets, with a dry run), delete (a group without members).

use anyhow::bail;

use logbook_api::groups::{
    GroupInfo, GroupList, GroupReset, PartitionOffset, ResetGroup, ResetPoint,
};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

/// Consumer groups on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List groups: stream, members, generation and total lag.
    ///
    /// Example: `logbook group list`
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a group: its members with their partitions, and per partition the owner, the
    /// committed offset, the retained range and the lag.
    ///
    /// Example: `logbook group describe billing`
    Describe {
        #[command(flatten)]
        server: ServerArgs,
        /// The group.
        group: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets (a group without members only): to the start or
    /// the end of every partition, to where the stream was at a time, or to given offsets.
    ///
    /// Examples:
    ///   logbook group reset billing --to-start --dry-run
    ///   logbook group reset billing --ago 1h
    ///   logbook group reset billing --offset 0:120 --offset 3:0
    #[command(verbatim_doc_comment)]
    Reset {
        #[command(flatten)]
        server: ServerArgs,
        /// The group.
        group: String,
        /// Every partition's first retained offset.
        #[arg(long, group = "target")]
        to_start: bool,
        /// Every partition's end.
        #[arg(long, group = "target")]
        to_end: bool,
        /// Each partition's first record at or after this time, ms since the Unix epoch.
        #[arg(long, group = "target")]
        timestamp_ms: Option<i64>,
        /// As --timestamp-ms, given as a duration before now (`90s`, `15m`, `2h`, `1d`).
        #[arg(long, group = "target", value_parser = crate::stream_cmd::parse_ago)]
        ago: Option<u64>,
        /// `PARTITION:OFFSET` (repeatable); other partitions keep their commits.
        #[arg(long = "offset", group = "target", value_parser = parse_offset)]
        offsets: Vec<(u32, u64)>,
        /// Show what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a group without members: its committed offsets go and its name is free.
    ///
    /// Example: `logbook group delete billing`
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        /// The group.
        group: String,
    },
}

impl GroupCommand {
    /// Whether the command was asked for JSON output.
    pub fn json(&self) -> bool {
        match self {
            GroupCommand::List { json, .. }
            | GroupCommand::Describe { json, .. }
            | GroupCommand::Reset { json, .. } => *json,
            GroupCommand::Delete { .. } => false,
        }
    }
}

fn parse_offset(s: &str) -> Result<(u32, u64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} must be PARTITION:OFFSET (e.g. 3:120)"))?;
    let p = p
        .parse()
        .map_err(|_| format!("{s:?}: the partition must be a whole number"))?;
    let o = o
        .parse()
        .map_err(|_| format!("{s:?}: the offset must be a whole number"))?;
    Ok((p, o))
}

/// Runs a `logbook group` command.
pub fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { server, json } => {
            let list: GroupList = Client::new(&server)?.get_as(&paths::groups(), &[])?;
            if json {
                return print_json(&list);
            }
            outln!(
                "{:<24} {:<24} {:>8} {:>10} {:>12}",
                "group",
                "stream",
                "members",
                "generation",
                "lag"
            );
            for g in &list.groups {
                outln!(
                    "{:<24} {:<24} {:>8} {:>10} {:>12}",
                    g.group,
                    g.stream,
                    g.members.len(),
                    g.generation,
                    g.lag
                );
            }
        }
        GroupCommand::Describe {
            server,
            group,
            json,
        } => {
            let g: GroupInfo = Client::new(&server)?.get_as(&paths::group(&group), &[])?;
            if json {
                return print_json(&g);
            }
            describe(&g)?;
        }
        GroupCommand::Reset {
            server,
            group,
            to_start,
            to_end,
            timestamp_ms,
            ago,
            offsets,
            dry_run,
            json,
        } => {
            let mut body = ResetGroup {
                dry_run,
                ..ResetGroup::default()
            };
            if to_start {
                body.to = Some(ResetPoint::Start);
            } else if to_end {
                body.to = Some(ResetPoint::End);
            } else if let Some(t) = timestamp_ms {
                body.timestamp_ms = Some(t);
            } else if let Some(ago) = ago {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let at = now.saturating_sub(u128::from(ago));
                body.timestamp_ms = Some(i64::try_from(at).unwrap_or(i64::MAX));
            } else if !offsets.is_empty() {
                let offsets = offsets
                    .iter()
                    .map(|&(partition, offset)| PartitionOffset { partition, offset });
                body.offsets = Some(offsets.collect());
            } else {
                bail!("give where to: --to-start, --to-end, --timestamp-ms, --ago or --offset");
            }
            let answer: GroupReset = Client::new(&server)?
                .post_as(&paths::group_reset(&group), &body, &[], 0)?
                .body;
            if json {
                return print_json(&answer);
            }
            let verb = if dry_run { "would move" } else { "moved" };
            outln!("group {group}: {verb}");
            for m in &answer.offsets {
                let from = m.from.map_or("-".to_string(), |o| o.to_string());
                outln!("  partition {}: {from} -> {}", m.partition, m.to);
            }
        }
        GroupCommand::Delete { server, group } => {
            Client::new(&server)?.delete(&paths::group(&group), &[])?;
            outln!("deleted group {group}");
        }
    }
    Ok(())
}

/// Prints a group: members, then one line per partition.
fn describe(g: &GroupInfo) -> anyhow::Result<()> {
    outln!(
        "group {} on stream {}: generation {}, lag {}",
        g.group,
        g.stream,
        g.generation,
        g.lag
    );
    // Partition lists as JSON arrays: `[0,2]`.
    let list = |ps: &[u32]| {
        let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
        format!("[{}]", ps.join(","))
    };
    for m in &g.members {
        outln!(
            "member {} (epoch {}): partitions {} revoking {}",
            m.member,
            m.epoch,
            list(&m.assigned),
            list(&m.revoking)
        );
    }
    outln!(
        "{:>9} {:<24} {:>10} {:>10} {:>10} {:>10}",
        "partition",
        "owner",
        "committed",
        "start",
        "end",
        "lag"
    );
    for p in &g.partitions {
        let below = if p.below_retention {
            "  below retention: records it had not committed were deleted"
        } else {
            ""
        };
        outln!(
            "{:>9} {:<24} {:>10} {:>10} {:>10} {:>10}{below}",
            p.partition,
            p.owner.as_deref().unwrap_or("-"),
            p.committed.map_or("-".to_string(), |o| o.to_string()),
            p.start,
            p.end,
            p.lag
        );
    }
    Ok(())
}
