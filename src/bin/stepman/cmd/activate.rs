//! `stepman activate`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use stepman::activate::{self, Precompiled};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman activate -c https://github.com/bitrise-io/bitrise-steplib.git -i git-clone -v 8 -p ./step -y ./step.yml\n  stepman activate -i git::https://github.com/bitrise-steplib/steps-script.git@master -p ./step -y ./step.yml\n  stepman activate -i path::./steps/my-step -p ./step\n  stepman activate -c ./steplib -i my-go-step -p ./step --prepare --json"
)]
pub(crate) struct ActivateArgs {
    #[command(flatten)]
    step: super::StepArgs,
    /// Where to put the step's files.
    #[arg(short = 'p', long)]
    path: PathBuf,
    /// Replace whatever PATH holds (a directory of your own, a file, a symlink), atomically.
    #[arg(long)]
    replace: bool,
    /// Also write the step's step.yml here.
    #[arg(short = 'y', long = "copyyml", value_name = "PATH")]
    copyyml: Option<PathBuf>,
    /// Use the step's precompiled executable for this platform when it has one (verified by its
    /// sha256; falls back to the source). Also BITRISE_EXPERIMENT_PRECOMPILED_STEPS=true.
    #[arg(long)]
    precompiled: bool,
    #[command(flatten)]
    prepare: super::PrepareArgs,
}

pub(crate) fn run(cli: &crate::Cli, a: &ActivateArgs) -> anyhow::Result<ExitCode> {
    let net = super::remote_net(cli, cli.net()?)?;
    if let Some(r) = a.step.step_ref() {
        return activate_ref(cli, a, &r, net);
    }
    let c = a.step.collection()?;
    // Read before anything is done: a value it does not take is bad usage.
    let from_env =
        activate::precompiled::enabled_by_env().map_err(|e| super::CouldNotRun(e.to_string()))?;
    let precompiled = if a.precompiled || from_env {
        Precompiled::Use
    } else {
        Precompiled::Skip
    };
    super::stop_on_signals(&net.cancel)?;
    // A cache hit must work on a read-only store: open without creating when possible.
    let store = match super::open_ro(cli)? {
        Some(s) => s,
        None => super::open_rw(cli)?,
    }
    .with_interrupt(net.cancel.clone());
    let r = a.step.resolve(&store, &c, &net)?;
    let replace = if a.replace {
        stepman::Replace::Anything
    } else {
        stepman::Replace::Activated
    };
    if a.prepare.prepare {
        let opts = a.prepare.options(precompiled);
        let p = activate::activate_prepared(
            &store,
            &r,
            &a.path,
            a.copyyml.as_deref(),
            &opts,
            replace,
            &net,
        );
        // What came from the origin is owed to the remote even when the activation failed.
        super::flush_remote(&store, &net);
        let p = p.with_context(|| {
            format!(
                "prepare {}@{} in {}",
                r.picked.id,
                r.picked.version,
                a.path.display()
            )
        })?;
        crate::ui::note!(
            "activated {}@{} into {}, ready to run ({})",
            r.picked.id,
            r.picked.version,
            a.path.display(),
            match p.build {
                stepman::toolkit::BuildStatus::Built => "built now",
                stepman::toolkit::BuildStatus::Cached => "build cached",
                stepman::toolkit::BuildStatus::Remote => "build from the fleet's remote",
                stepman::toolkit::BuildStatus::None => "nothing to build",
            }
        );
        a.prepare.print(&p)?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = activate::activate_with(
        &store,
        &r,
        &a.path,
        a.copyyml.as_deref(),
        precompiled,
        replace,
        &net,
    );
    super::flush_remote(&store, &net);
    let id = id.map_err(|e| {
        let path = a.path.display().to_string();
        let verb = format!("activate {}@{}", r.picked.id, r.picked.version);
        super::context_once(e, &verb, &format!("into {path}"), &path)
    })?;
    crate::ui::note!(
        "activated {}@{} ({id}) into {}",
        r.picked.id,
        r.picked.version,
        a.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `activate` of a step named by where it is: `git::URL@REF` (from the store, cloned once per
/// commit) or `path::DIR` (copied as it is).
fn activate_ref(
    cli: &crate::Cli,
    a: &ActivateArgs,
    r: &activate::StepRef,
    net: stepman::fetch::NetConfig,
) -> anyhow::Result<ExitCode> {
    if a.prepare.prepare {
        return Err(super::CouldNotRun("--prepare works with StepLib steps only".into()).into());
    }
    super::stop_on_signals(&net.cancel)?;
    // A stored commit (and a path) needs no write access: open without creating when possible.
    let store = match super::open_ro(cli)? {
        Some(s) => s,
        None => super::open_rw(cli)?,
    }
    .with_interrupt(net.cancel.clone());
    let replace = if a.replace {
        stepman::Replace::Anything
    } else {
        stepman::Replace::Activated
    };
    let done = activate::activate_ref(&store, r, &a.path, a.copyyml.as_deref(), replace, &net);
    // A commit's tree cloned here is owed to the remote even when the activation failed.
    super::flush_remote(&store, &net);
    let done = done.map_err(|e| {
        let path = a.path.display().to_string();
        let verb = format!("activate {}", r.shown());
        super::context_once(e, &verb, &format!("into {path}"), &path)
    })?;
    match done {
        activate::ActivatedRef::Git(t) => crate::ui::note!(
            "activated {} (commit {}, {}) into {}",
            r.shown(),
            t.commit,
            t.id,
            a.path.display()
        ),
        activate::ActivatedRef::Path(_) => {
            crate::ui::note!("activated {} into {}", r.shown(), a.path.display())
        }
    }
    Ok(ExitCode::SUCCESS)
}
