//! `stepman download`.

use std::process::ExitCode;

use clap::Args;
use stepman::activate;

/// Put a step version into the store.
///
/// Put a step version's source into the store (nothing is copied anywhere).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman download -c https://github.com/bitrise-io/bitrise-steplib.git --id git-clone --version 8"
)]
pub(crate) struct DownloadArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Step id.
    #[arg(short = 'i', long)]
    id: String,
    /// Version constraint.
    #[arg(short = 'v', long, default_value = "")]
    version: String,
    /// Update the collection if the version is not found.
    #[arg(short = 'u', long)]
    update: bool,
}

pub(crate) fn run(cli: &crate::Cli, a: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let net = cli.net();
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let on_miss = super::on_miss(a.update);
    let r = activate::resolve(&store, &c, &a.id, &a.version, on_miss, &net)?;
    let got = activate::download(&store, &r, &net)?;
    eprintln!(
        "{}@{} {} ({})",
        r.id,
        r.version,
        if got.ingested {
            "downloaded"
        } else {
            "already in the store"
        },
        got.id
    );
    Ok(ExitCode::SUCCESS)
}
