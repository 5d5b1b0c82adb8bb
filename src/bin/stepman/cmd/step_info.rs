//! `stepman step-info`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use stepman::activate::{self, Picked, StepInfo, StepRef};

use super::CouldNotRun;
use super::steplib::Format;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stepman step-info --library https://github.com/bitrise-io/bitrise-steplib.git --id git-clone --version 8 --format json\n  stepman step-info --library path --id ./my-step\n  stepman step-info --library git --id https://github.com/bitrise-steplib/steps-script.git --version 1.1.5"
)]
pub(crate) struct StepInfoArgs {
    /// The collection's URI; `path` (with `--id DIR`) or `git` (with `--id URL` and `--version
    /// REF`) for a step outside a collection; also `path::DIR` and `git::URL@REF`.
    #[arg(long, env = "STEPMAN_LIBRARY_URI")]
    library: Option<String>,
    /// Deprecated: the collection's URI (as `--library`, which wins).
    #[arg(short = 'c', long, env = "STEPMAN_COLLECTION", value_name = "URI")]
    collection: Option<String>,
    /// Step id (with `--library path`: the step's directory; with `--library git`: the
    /// repository's URL).
    #[arg(long)]
    id: Option<String>,
    /// Version constraint ("", X, X.Y, X.Y.Z, X.x.x, X.Y.x); with `--library git` a tag or a
    /// branch (none: the default branch).
    #[arg(long, default_value = "")]
    version: String,
    /// Output format [default: raw].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Print JSON on stdout (as `--format json`).
    #[arg(long)]
    json: bool,
    /// Raw output: the identifying lines only, without the step.yml.
    #[arg(long)]
    short: bool,
    /// Deprecated: the local step's directory (or its step.yml), as `--library path --id`.
    #[arg(long = "step-yml", value_name = "PATH")]
    step_yml: Option<PathBuf>,
}

/// A local step: `target` is its directory (holding step.yml) or the step.yml itself.
fn local_info(library: &str, id: &str, target: &Path) -> anyhow::Result<(StepInfo, String)> {
    let yml = if target.is_dir() {
        target.join("step.yml")
    } else {
        target.to_path_buf()
    };
    let (text, step) = stepman::steplib::read_step_yml_text(&yml)?;
    let info = StepInfo {
        library: library.into(),
        picked: Picked {
            id: id.into(),
            version: String::new(),
            original_version: String::new(),
            latest_version: String::new(),
            info: json!({}),
            step,
            step_json: None,
        },
        definition_pth: yml.display().to_string(),
    };
    Ok((info, text))
}

/// The text of a step.yml inside the store (a collection's or a cloned step's object).
fn definition(info: &StepInfo) -> anyhow::Result<String> {
    Ok(stepman::steplib::read_step_yml_definition(Path::new(
        &info.definition_pth,
    ))?)
}

fn usage(msg: &str) -> anyhow::Error {
    CouldNotRun(format!("step-info: {msg}")).into()
}

pub(crate) fn run(cli: &crate::Cli, a: &StepInfoArgs) -> anyhow::Result<ExitCode> {
    let format = super::steplib::format(a.format, a.json)?;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    // The old tool's reading: `--library`, else `-c`; no `--id` but `--step-yml`: a local step.
    let mut library = nonempty(&a.library).or_else(|| nonempty(&a.collection));
    let mut id = nonempty(&a.id);
    if id.is_none()
        && let Some(y) = a.step_yml.as_ref().filter(|y| !y.as_os_str().is_empty())
    {
        id = Some(y.display().to_string());
        library = Some("path".into());
    }
    let library = library.ok_or_else(|| {
        usage("missing --library (or STEPMAN_LIBRARY_URI, or --step-yml for a local step)")
    })?;
    let needs_id = || id.as_deref().ok_or_else(|| usage("missing --id"));
    let (info, text) = if library == "path" {
        let dir = needs_id()?;
        local_info("path", dir, Path::new(dir))?
    } else if let Some(dir) = library.strip_prefix("path::") {
        local_info("path", dir, Path::new(dir))?
    } else if let Some(r) = if library == "git" {
        StepRef::from_parts(Some("git"), needs_id()?, &a.version)
    } else {
        StepRef::parse_prefixed(&library)
    } {
        // A git step: a cache hit needs no write access.
        let store = match super::open_ro(cli)? {
            Some(s) => s,
            None => super::open_rw(cli)?,
        };
        let mut info = activate::ref_step_info(Some(&store), &r, &cli.net()?)?;
        if library == "git" {
            // The old tool names the form, and sets no original version.
            info.library = "git".into();
            info.picked.original_version.clear();
        }
        let text = definition(&info)?;
        (info, text)
    } else {
        let id = needs_id()?;
        let c = super::steplib::collection(&library)?;
        let store = match super::open_ro(cli)? {
            Some(s) => s,
            None => super::open_rw(cli)?,
        };
        // Raw output prints the step.yml's own text, not its parsed definition.
        let raw_text = !a.short && format == Format::Raw;
        let lookup = activate::Lookup {
            read: match format {
                _ if raw_text => activate::Read::Identity,
                // Printed from its stored text, never parsed into a tree (`StepInfo::to_json`).
                Format::Json => activate::Read::Text,
                Format::Raw => activate::Read::Definition,
            },
            ..super::lookup(false)?
        };
        let r = activate::resolve(&store, &c, id, &a.version, lookup, &cli.net()?)?;
        if !raw_text {
            (StepInfo::of(&store, r)?, String::new())
        } else {
            // The step.yml's text is printed, not its path: nothing is written.
            let text = r.definition_text(&store)?;
            let info = StepInfo {
                library: r.collection.uri.clone(),
                picked: r.picked,
                definition_pth: String::new(),
            };
            (info, text)
        }
    };
    match format {
        Format::Json => super::outln!("{}", info.to_json()?),
        Format::Raw => print_raw(&info.in_old_shape(), (!a.short).then_some(text.as_str()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The old tool's raw step info: deprecation and maintainer, the identifying lines, then the
/// step.yml as it is written (`definition`, unless `--short`).
fn print_raw(info: &StepInfo, definition: Option<&str>) -> anyhow::Result<()> {
    let group = |k: &str| {
        info.picked
            .info
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if let Some(notes) = group("deprecate_notes") {
        super::outln!("This step is deprecated!");
        super::outln!("Note: {notes}");
        if let Some(date) = group("removal_date") {
            super::outln!("Removal date: {date}");
        }
    }
    if let Some(m) = group("maintainer") {
        super::outln!("Maintainer: {m}");
    }
    super::outln!("Library: {}", info.library);
    super::outln!("ID: {}", info.picked.id);
    super::outln!("Version: {}", info.picked.version);
    super::outln!("LatestVersion: {}", info.picked.latest_version);
    match definition {
        Some(d) => super::outln!("Definition:\n\n{d}"),
        // `--short`: where the definition is, instead of what it says.
        None => super::outln!("Definition: {}", info.definition_pth),
    }
    Ok(())
}
