//! `stepman download`.

use std::process::ExitCode;

use clap::Args;
use stepman::activate;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman download -c https://github.com/bitrise-io/bitrise-steplib.git --id git-clone --version 8\n  stepman download -i git::https://github.com/bitrise-steplib/steps-script.git@master\n  stepman download -c ./steplib --id my-go-step --prepare --json"
)]
pub(crate) struct DownloadArgs {
    #[command(flatten)]
    step: super::StepArgs,
    #[command(flatten)]
    prepare: super::PrepareArgs,
}

pub(crate) fn run(cli: &crate::Cli, a: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let net = super::remote_net(cli, cli.net()?)?;
    if let Some(r) = a.step.step_ref() {
        return download_ref(cli, a, &r, net);
    }
    let c = a.step.collection()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let r = a.step.resolve(&store, &c, &net)?;
    if a.prepare.prepare {
        let opts = a.prepare.options(activate::Precompiled::Skip);
        let p = activate::download_prepared(&store, &r, &opts, &net);
        super::flush_remote(&store, &net);
        let p = p?;
        crate::ui::note!(
            "{}@{} ready ({:?} build)",
            r.picked.id,
            r.picked.version,
            p.build
        );
        a.prepare.print(&p)?;
        return Ok(ExitCode::SUCCESS);
    }
    let got = activate::download_from(&store, &r, &net);
    super::flush_remote(&store, &net);
    let (got, came) = got?;
    crate::ui::note!(
        "{}@{} {} ({})",
        r.picked.id,
        r.picked.version,
        came_from(came),
        got.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `download` of a `git::` step: its tree into the store.
fn download_ref(
    cli: &crate::Cli,
    a: &DownloadArgs,
    r: &activate::StepRef,
    net: stepman::fetch::NetConfig,
) -> anyhow::Result<ExitCode> {
    let activate::StepRef::Git(g) = r else {
        return Err(super::CouldNotRun(format!(
            "{}: a path:: step is not stored; activate copies it as it is",
            r.shown()
        ))
        .into());
    };
    if a.prepare.prepare {
        return Err(super::CouldNotRun("--prepare works with StepLib steps only".into()).into());
    }
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let t = activate::fetch_git(&store, g, &net);
    super::flush_remote(&store, &net);
    let t = t?;
    crate::ui::note!(
        "{} (commit {}) {} ({})",
        r.shown(),
        t.commit,
        came_from(t.came),
        t.id
    );
    Ok(ExitCode::SUCCESS)
}

/// How a download's note says where the tree came from.
fn came_from(came: stepman::remote::Came) -> &'static str {
    match came {
        stepman::remote::Came::Origin => "downloaded",
        stepman::remote::Came::Remote => "downloaded from the fleet's remote",
        stepman::remote::Came::Store => "already in the store",
    }
}
