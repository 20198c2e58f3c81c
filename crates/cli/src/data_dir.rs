//! The `--data-dir` option, shared by the commands that open a data directory themselves
//! (`log`, `quickstart`, the hidden `debug` commands); in a module of its own so that none
//! of them imports from the binary's root.

use std::path::PathBuf;

/// Options every command that touches a data directory takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArgs {
    /// The data directory. `log create` and `quickstart` create it if missing; other
    /// commands require an existing one. One process at a time may open it.
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}
