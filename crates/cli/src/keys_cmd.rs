//! `logbook keys rotate`: the offline rotation of the master key that wraps every data key
//! of personal data (decision 0030). Run with the server stopped (the data directory's lock
//! is taken); afterwards start the server with the new key and destroy the old one — from
//! then on, old copies of the key store (backups, snapshots, blocks a copy-on-write file
//! system kept) and every key erased before the rotation are unrecoverable.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use logbook_server::privacy::master_key::MasterKey;
use logbook_server::privacy::rotate_master_key;

use crate::data_dir::DataDirArgs;

/// `logbook keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every data key of the data directory's key store under a new master key
    /// (offline: stop `logbook serve` first). Key ids stay, so every record still reads;
    /// erased keys stay erased. Then start the server with the new key and destroy the old
    /// one: that is when erasures reach old copies of the store (backups, snapshots).
    ///
    /// Example: `openssl rand -hex 32 > new.key && chmod 600 new.key &&
    /// logbook keys rotate --master-key-file old.key --new-master-key-file new.key`
    Rotate {
        #[command(flatten)]
        data: DataDirArgs,
        /// The current master key: a file of 64 hex digits, mode 0600 (or the environment
        /// variable LOGBOOK_MASTER_KEY).
        #[arg(long, env = "LOGBOOK_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// The new master key: a file of 64 hex digits, mode 0600.
        #[arg(long)]
        new_master_key_file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `logbook keys` command.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Rotate {
            data,
            master_key_file,
            new_master_key_file,
            json,
        } => {
            let old = MasterKey::load(master_key_file.as_deref())?.ok_or_else(|| {
                anyhow!("--master-key-file (or LOGBOOK_MASTER_KEY): the current master key is needed to unwrap the data keys")
            })?;
            let new =
                MasterKey::load(Some(&new_master_key_file))?.context("--new-master-key-file")?;
            let done = rotate_master_key(&data.data_dir, &old, &new).with_context(|| {
                format!("rotating the master key of {}", data.data_dir.display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "{} data keys re-wrapped under {} ({} torn slots cleared); start the server with the new key, then destroy the old one",
                    done.rewrapped,
                    new_master_key_file.display(),
                    done.torn_cleared
                );
            }
            Ok(())
        }
    }
}
