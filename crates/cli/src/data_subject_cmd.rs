//! `logbook data-subjects ...`: personal data on a running server (decision 0030). `show`
//! prints a data subject's key state and the streams declaring personal data; `erase`
//! destroys its key, after a dry run (`--dry-run`: what would be affected, nothing changed)
//! or an explicit confirmation (`--yes`). Needs the scope `data_subjects:erase`.

use logbook_api::data_subjects::{DataSubject, KeyState};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

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
}

impl DataSubjectCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            DataSubjectCommand::Show { json, .. } | DataSubjectCommand::Erase { json, .. } => *json,
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
    }
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
