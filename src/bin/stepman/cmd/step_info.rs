//! `stepman step-info`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use stepman::activate::{self, Picked, StepInfo, StepRef};

use super::steplib::Format;

/// Show a step version.
///
/// Show a step version of a collection (or of a local step.yml). Reads one small index entry,
/// never the whole spec; needs no write access when the collection is set up.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman step-info --library https://github.com/bitrise-io/bitrise-steplib.git --id git-clone --version 8 --format json\n  stepman step-info --library git::https://github.com/bitrise-steplib/steps-script.git@master"
)]
pub(crate) struct StepInfoArgs {
    /// The collection's URI, or `path::DIR` for a local step, or `git::URL@REF` (a repository
    /// at a branch, tag or commit); also `git` (with `--id URL --version REF`) and `path`
    /// (with `--id DIR`), as the old tool spells them.
    #[arg(long, env = "STEPMAN_LIBRARY_URI", alias = "collection", short = 'c')]
    library: Option<String>,
    /// Step id.
    #[arg(long)]
    id: Option<String>,
    /// Version constraint ("", X, X.Y, X.Y.Z, X.x.x, X.Y.x).
    #[arg(long, default_value = "")]
    version: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "raw")]
    format: Format,
    /// Raw output: the identifying lines only.
    #[arg(long)]
    short: bool,
    /// Show this step.yml instead of looking a step up.
    #[arg(long = "step-yml", value_name = "PATH")]
    step_yml: Option<PathBuf>,
}

fn local_info(library: &str, id: &str, yml: PathBuf) -> anyhow::Result<StepInfo> {
    let step = stepman::steplib::read_step_yml(&yml)?;
    Ok(StepInfo {
        library: library.into(),
        picked: Picked {
            id: id.into(),
            version: String::new(),
            original_version: String::new(),
            latest_version: String::new(),
            info: json!({}),
            step,
        },
        definition_pth: yml.display().to_string(),
    })
}

pub(crate) fn run(cli: &crate::Cli, a: &StepInfoArgs) -> anyhow::Result<ExitCode> {
    let info = if let Some(yml) = &a.step_yml {
        local_info("path", &yml.display().to_string(), yml.clone())?
    } else {
        let library = a
            .library
            .as_deref()
            .context("--library (or STEPMAN_LIBRARY_URI) is required")?;
        let id = a.id.as_deref().unwrap_or_default();
        if let Some(r) = StepRef::from_parts(Some(library), id, &a.version)
            .or_else(|| StepRef::parse_prefixed(library))
        {
            let store = match &r {
                StepRef::Git(_) => Some(match super::open_ro(cli)? {
                    Some(s) => s,
                    None => super::open_rw(cli)?,
                }),
                StepRef::Path(_) => None,
            };
            activate::ref_step_info(store.as_ref(), &r, &cli.net())?
        } else {
            let id = a.id.as_deref().context("--id is required")?;
            let c = super::steplib::collection(library)?;
            let store = match super::open_ro(cli)? {
                Some(s) => s,
                None => super::open_rw(cli)?,
            };
            let r = activate::resolve(
                &store,
                &c,
                id,
                &a.version,
                super::lookup(false)?,
                &cli.net(),
            )?;
            StepInfo::from(&r)
        }
    };
    match a.format {
        Format::Json => super::outln!("{}", serde_json::to_string(&info)?),
        Format::Raw => {
            super::outln!("Library: {}", info.library);
            super::outln!("ID: {}", info.picked.id);
            super::outln!("Version: {}", info.picked.version);
            super::outln!("LatestVersion: {}", info.picked.latest_version);
            super::outln!("Definition: {}", info.definition_pth);
            if !a.short {
                for k in ["title", "summary", "description"] {
                    if let Some(v) = info.picked.step.get(k).and_then(Value::as_str) {
                        super::outln!("{}{}: {}", k[..1].to_uppercase(), &k[1..], v.trim());
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
