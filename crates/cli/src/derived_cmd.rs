//! `logbook derived ...`: derived streams through a running server (HTTP API v1,
//! `/v1/derived-streams`; docs/derived-streams.md). Admin only, as the routes are.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use logbook_api::derived::{DerivedStreamList, DerivedStreamOut};
use logbook_api::paths;

use crate::client::{Answer, Client, ServerArgs, json_arg, print_json};

/// How often `status --wait` polls.
const POLL: Duration = Duration::from_millis(200);

/// Derived streams on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum DerivedCommand {
    /// Create a derived stream from a JSON spec (docs/derived-streams.md): `source`,
    /// `target` (both existing streams), `filter`, `fields`, `key_by`, `unique`.
    ///
    /// The same spec again is no change; another spec under the name is
    /// `derived_stream_exists`. Its processors start at the source's first record.
    ///
    /// Example:
    ///   logbook derived create paid_by_customer --spec '{"source":"orders",
    ///     "target":"by_customer","filter":{"field":"status","op":"eq","value":"paid"},
    ///     "key_by":["customer"]}'
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Its name: 1 to 48 bytes of letters, digits, '.', '_' and '-'.
        name: String,
        /// The spec: JSON text, or @FILE. Sent as it is; the server names a bad field.
        #[arg(long)]
        spec: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List derived streams: source, target, records still to read, and an error that
    /// stopped one (`STOPPED`).
    ///
    /// Example: `logbook derived list`
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A derived stream's spec and, per source partition, the next input offset, the end,
    /// records emitted and skipped since its processor started.
    ///
    /// Example: `logbook derived status paid_by_customer --wait`
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// The derived stream.
        name: String,
        /// First wait (up to --timeout-ms) until it has read every source partition to the
        /// end (or stopped).
        #[arg(long)]
        wait: bool,
        /// Longest wait, ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop and drop a derived stream; what it emitted stays in its target.
    ///
    /// Example: `logbook derived drop paid_by_customer`
    Drop {
        #[command(flatten)]
        server: ServerArgs,
        /// The derived stream.
        name: String,
        /// Print `{"dropped": NAME}`.
        #[arg(long)]
        json: bool,
    },
}

impl DerivedCommand {
    /// Whether the command was asked for JSON output (errors then print the problem
    /// document).
    pub fn json(&self) -> bool {
        match self {
            DerivedCommand::Create { json, .. }
            | DerivedCommand::List { json, .. }
            | DerivedCommand::Status { json, .. }
            | DerivedCommand::Drop { json, .. } => *json,
        }
    }
}

/// Input records not yet read, over every source partition (`None` while the processor
/// reads its target back).
fn behind(st: &DerivedStreamOut) -> Option<u64> {
    if st.partitions.is_empty() {
        return None;
    }
    Some(
        st.partitions
            .iter()
            .map(|p| p.end.saturating_sub(p.next))
            .sum(),
    )
}

fn stopped(st: &DerivedStreamOut) -> String {
    st.error
        .as_deref()
        .map(|e| format!("  STOPPED: {e}"))
        .unwrap_or_default()
}

/// A spec member's text (`source`, `target`).
fn member<'a>(st: &'a DerivedStreamOut, name: &str) -> &'a str {
    st.spec[name].as_str().unwrap_or_default()
}

/// Runs a `logbook derived` command.
pub fn run(cmd: DerivedCommand) -> anyhow::Result<()> {
    match cmd {
        DerivedCommand::Create {
            server,
            name,
            spec,
            json,
        } => {
            let client = Client::new(&server)?;
            let answer: Answer<DerivedStreamOut> =
                client.put_raw(&paths::derived_stream(&name), &json_arg(&spec)?)?;
            if json {
                return print_json(&answer.body);
            }
            let verb = if answer.status == 201 {
                "created"
            } else {
                "exists with this spec:"
            };
            outln!(
                "{verb} derived stream {name} ({} → {})",
                member(&answer.body, "source"),
                member(&answer.body, "target"),
            );
        }
        DerivedCommand::List { server, json } => {
            let list: DerivedStreamList =
                Client::new(&server)?.get_as(&paths::derived_streams(), &[])?;
            if json {
                return print_json(&list);
            }
            outln!(
                "{:<24} {:<20} {:<20} {:>10}",
                "derived stream",
                "source",
                "target",
                "behind"
            );
            for d in &list.derived_streams {
                outln!(
                    "{:<24} {:<20} {:<20} {:>10}{}",
                    d.name,
                    member(d, "source"),
                    member(d, "target"),
                    behind(d).map_or("starting".to_string(), |n| n.to_string()),
                    stopped(d),
                );
            }
        }
        DerivedCommand::Status {
            server,
            name,
            wait,
            timeout_ms,
            json,
        } => {
            let client = Client::new(&server)?;
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            let st = loop {
                let st: DerivedStreamOut = client.get_as(&paths::derived_stream(&name), &[])?;
                if !wait || behind(&st) == Some(0) || st.error.is_some() {
                    break st;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "derived stream {name} has not caught up within {timeout_ms} ms (raise --timeout-ms)"
                    );
                }
                std::thread::sleep(POLL);
            };
            if json {
                return print_json(&st);
            }
            outln!(
                "{name}: {} → {} (generation {}){}",
                member(&st, "source"),
                member(&st, "target"),
                st.generation,
                stopped(&st),
            );
            outln!("  spec {}", st.spec);
            if st.partitions.is_empty() {
                outln!("  reading its target back (starting)");
            }
            for p in &st.partitions {
                outln!(
                    "  partition {}: next {} of {}, {} emitted, {} skipped",
                    p.partition,
                    p.next,
                    p.end,
                    p.emitted,
                    p.skipped,
                );
            }
        }
        DerivedCommand::Drop { server, name, json } => {
            Client::new(&server)?.delete(&paths::derived_stream(&name), &[])?;
            if json {
                return print_json(&json!({ "dropped": name }));
            }
            outln!("dropped derived stream {name} (its output stays in the target)");
        }
    }
    Ok(())
}
