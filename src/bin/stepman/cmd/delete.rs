//! `stepman delete`.

use std::process::ExitCode;

use clap::Args;
use stepman::steplib;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman delete -c https://github.com/bitrise-io/bitrise-steplib.git"
)]
pub(crate) struct DeleteArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
}

pub(crate) fn run(cli: &crate::Cli, a: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let Some(store) = super::open_ro(cli)? else {
        crate::ui::note!("{} is not set up", c.uri);
        return Ok(ExitCode::SUCCESS);
    };
    let n = steplib::delete(&store, &c)?;
    crate::ui::note!("deleted {} ({n} names)", c.uri);
    Ok(ExitCode::SUCCESS)
}
