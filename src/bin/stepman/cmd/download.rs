//! `stepman download`.

use std::process::ExitCode;

use clap::Args;
use stepman::activate;

/// Put a step version into the store.
///
/// Put a step version's source into the store (nothing is copied anywhere).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman download -c https://github.com/bitrise-io/bitrise-steplib.git --id git-clone --version 8\n  stepman download -c ./steplib --id my-go-step --prepare --json"
)]
pub(crate) struct DownloadArgs {
    #[command(flatten)]
    step: super::StepArgs,
    #[command(flatten)]
    prepare: super::PrepareArgs,
}

pub(crate) fn run(cli: &crate::Cli, a: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.step.collection)?;
    let net = cli.net();
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let r = a.step.resolve(&store, &c, &net)?;
    if a.prepare.prepare {
        let opts = a.prepare.options(activate::Precompiled::Skip);
        let p = activate::download_prepared(&store, &r, &opts, &net)?;
        eprintln!(
            "{}@{} ready ({:?} build)",
            r.picked.id, r.picked.version, p.build
        );
        a.prepare.print(&p)?;
        return Ok(ExitCode::SUCCESS);
    }
    let got = activate::download(&store, &r, &net)?;
    eprintln!(
        "{}@{} {} ({})",
        r.picked.id,
        r.picked.version,
        if got.ingested {
            "downloaded"
        } else {
            "already in the store"
        },
        got.id
    );
    Ok(ExitCode::SUCCESS)
}
