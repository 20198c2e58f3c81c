//! `logbook quickstart` (being written).

/// Arguments of `logbook quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    data: crate::DataDirArgs,
}

/// Runs the quickstart.
pub fn run(_args: QuickstartArgs) -> anyhow::Result<()> {
    let _ = crate::flights::read_flights(std::path::Path::new(crate::flights::DEFAULT_SAMPLE))?;
    Ok(())
}
