//! Hidden commands for the test suite (being written).

/// Test-suite commands.
#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Placeholder.
    Nothing,
}

/// Runs a debug command.
pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Nothing => Ok(()),
    }
}
