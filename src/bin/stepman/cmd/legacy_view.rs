//! `stepman legacy-view`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stepman::legacy::{self, Differing, Outcome, ViewOptions};
use stepman::steplib;

#[derive(Debug, Args)]
#[command(
    after_help = "Example (after `stepman preload -c URI`):\n  stepman legacy-view -c https://github.com/bitrise-io/bitrise-steplib.git"
)]
pub(crate) struct LegacyViewArgs {
    /// A collection's URI (repeat for several; it must be set up).
    #[arg(short = 'c', long = "collection")]
    collections: Vec<String>,
    /// Every collection set up in the store.
    #[arg(long, conflicts_with = "collections")]
    all: bool,
    /// The old tool's home [default: $HOME/.stepman].
    #[arg(long, value_name = "DIR")]
    legacy_home: Option<PathBuf>,
    /// Replace a `cache/<id>/<version>/` that differs from the store's object, and re-point a
    /// route of the URI to another alias (else both are left as they are and named, exit 1).
    #[arg(long)]
    replace_differing: bool,
    /// Print what was done as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn legacy_home(a: &LegacyViewArgs) -> anyhow::Result<PathBuf> {
    if let Some(h) = a.legacy_home.as_ref().filter(|h| !h.as_os_str().is_empty()) {
        return Ok(h.clone());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| super::CouldNotRun("HOME is not set: pass --legacy-home DIR".into()))?;
    Ok(PathBuf::from(home).join(".stepman"))
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Written => "written",
        Outcome::Kept => "kept",
        Outcome::Replaced => "replaced",
        Outcome::Absent => "none",
    }
}

pub(crate) fn run(cli: &crate::Cli, a: &LegacyViewArgs) -> anyhow::Result<ExitCode> {
    if a.collections.is_empty() && !a.all {
        return Err(super::CouldNotRun(
            "name the collections with -c URI (repeatable), or pass --all".into(),
        )
        .into());
    }
    let home = legacy_home(a)?;
    let mut cs = Vec::new();
    for uri in &a.collections {
        cs.push(super::steplib::collection(uri)?);
    }
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    if a.all {
        for (_, o) in steplib::list(&store)? {
            cs.push(steplib::Collection::of_meta(&o.meta)?);
        }
    }
    let opts = ViewOptions {
        home,
        differing: if a.replace_differing {
            Differing::Replace
        } else {
            Differing::Refuse
        },
    };
    let report = legacy::write_view(&store, &cs, &opts, &net)?;
    if a.json {
        super::outln!("{}", serde_json::to_string(&report)?);
    } else {
        for v in &report.collections {
            let count = |o: Outcome| v.steps.iter().filter(|s| s.2 == o).count();
            super::outln!(
                "{} -> {}: spec {}, collection {}, steps: {} written, {} kept, {} replaced",
                v.uri,
                v.spec_path.display(),
                word(v.spec),
                word(v.checkout),
                count(Outcome::Written),
                count(Outcome::Kept),
                count(Outcome::Replaced)
            );
        }
    }
    if report.refused.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (path, why) in &report.refused {
        eprintln!("stepman: legacy-view: {}: {why}", path.display());
    }
    eprintln!(
        "stepman: legacy-view: {} left as it is; everything else is written",
        match report.refused.len() {
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        }
    );
    Ok(ExitCode::from(1))
}
