//! `logbook data-subjects ...`: personal data on a running server (decision 0030). `show`
//! prints a data subject's key state and the streams declaring personal data; `erase`
//! destroys its key, after a dry run (`--dry-run`: what would be affected, nothing changed)
//! or an explicit confirmation (`--yes`). Needs the scope `data_subjects:erase`. `export`
//! writes every record about a subject, decrypted (the right of access; needs `data_subjects:export`).

use std::path::PathBuf;

use anyhow::Context as _;
use logbook_api::data_subjects::{DataSubject, KeyState};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};
use crate::private_file;

/// Data subjects on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum DataSubjectCommand {
    /// A data subject's key state (`live`, `erased`, `none`) and the streams declaring
    /// personal data.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The subject's id: 1 to 64 characters of A-Z a-z 0-9 . _ : @ -.
        id: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Erase a data subject: its key is destroyed, so its personal fields read as
    /// `{"erased": true}` everywhere from then on. Cannot be undone: give `--dry-run` to see
    /// what would be affected, or `--yes` to erase.
    ///
    /// Example: `logbook data-subjects erase user-17 --dry-run`
    Erase {
        #[command(flatten)]
        server: ServerArgs,
        /// The subject's id.
        id: String,
        /// Only show what would be affected; change nothing.
        #[arg(long, conflicts_with = "yes")]
        dry_run: bool,
        /// Erase (required unless `--dry-run`: erasure cannot be undone).
        #[arg(long)]
        yes: bool,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export every record about a data subject (the right of access): JSON Lines, one
    /// record per line with its stream, partition and offset, personal fields decrypted
    /// (an erased subject's read `{"erased": true}`). Needs the scope `data_subjects:export`.
    ///
    /// Example: `logbook data-subjects export user-17 --out user-17.jsonl`
    Export {
        #[command(flatten)]
        server: ServerArgs,
        /// The subject's id.
        id: String,
        /// Write to this file (created with mode 0600 — it holds personal data — and never
        /// over an existing file) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

impl DataSubjectCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            DataSubjectCommand::Show { json, .. } | DataSubjectCommand::Erase { json, .. } => *json,
            DataSubjectCommand::Export { .. } => false,
        }
    }
}

/// Runs a data-subject command.
pub fn run(cmd: DataSubjectCommand) -> anyhow::Result<()> {
    match cmd {
        DataSubjectCommand::Show { server, id, json } => {
            let answer: DataSubject =
                Client::new(&server)?.get_as(&paths::data_subject(&id), &[])?;
            if json {
                return print_json(&answer);
            }
            outln!("{}", describe(&answer));
        }
        DataSubjectCommand::Erase {
            server,
            id,
            dry_run,
            yes,
            json,
        } => {
            if !dry_run && !yes {
                anyhow::bail!(
                    "erasing {id:?} cannot be undone: give --dry-run to see what it affects, or --yes to erase"
                );
            }
            let client = Client::new(&server)?;
            if dry_run {
                let answer: DataSubject = client.get_as(&paths::data_subject(&id), &[])?;
                if json {
                    return print_json(&answer);
                }
                outln!("dry run: nothing changed");
                outln!("{}", describe(&answer));
                if answer.key == KeyState::Live {
                    outln!(
                        "erasing would destroy its key: its personal fields in these streams would read as {{\"erased\": true}}"
                    );
                } else {
                    outln!("erasing would change nothing: it has no live key");
                }
                return Ok(());
            }
            let answer: DataSubject = client.delete_as(&paths::data_subject(&id))?;
            if json {
                return print_json(&answer);
            }
            outln!("{}", describe(&answer));
        }
        DataSubjectCommand::Export { server, id, out } => export(&server, &id, out)?,
    }
    Ok(())
}

/// `export`: the server's JSON Lines, each line checked to be an export line (a JSON object
/// naming its stream and offset) before any is
/// written, to `out` or standard output; the count goes to standard error.
fn export(server: &ServerArgs, id: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let text = Client::new(server)?.get_text(&paths::data_subject_export(id))?;
    let mut records = 0usize;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .with_context(|| format!("the export's line {} is not a JSON object", i + 1))?;
        anyhow::ensure!(
            parsed.get("stream").is_some_and(|s| s.is_string())
                && parsed.get("offset").is_some_and(|o| o.is_u64()),
            "the export's line {} names no stream and offset",
            i + 1
        );
        records += 1;
    }
    match &out {
        Some(path) => private_file::write_new(path, text.as_bytes())?,
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
            .context("writing to stdout")?,
    }
    let to = out.map_or("standard output".to_string(), |p| p.display().to_string());
    eprintln!(
        "exported {} about data subject {id} to {to}",
        crate::client::count(records, "record", "records")
    );
    Ok(())
}

/// One line: the subject, its key state, the streams declaring personal data.
fn describe(s: &DataSubject) -> String {
    let key = match s.key {
        KeyState::Live => "live",
        KeyState::Erased => "erased",
        KeyState::None => "none",
    };
    format!(
        "data subject {} key {} streams with personal data: {}",
        s.subject,
        key,
        if s.streams.is_empty() {
            "(none)".to_string()
        } else {
            s.streams.join(", ")
        }
    )
}
