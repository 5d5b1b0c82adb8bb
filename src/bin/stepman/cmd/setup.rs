//! `stepman setup`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stepman::Fill;
use stepman::steplib::{ExportType, generate};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman setup -c https://github.com/bitrise-io/bitrise-steplib.git\n  stepman setup --api -c https://steplib.example.com/api"
)]
pub(crate) struct SetupArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Treat the URI as a local path (accepted for compatibility; local paths are recognised).
    #[arg(long)]
    local: bool,
    /// Also write the generated spec.json here.
    #[arg(long = "copy-spec-json", value_name = "PATH")]
    copy_spec_json: Option<PathBuf>,
    /// The URI is the base URL of a StepLib API (its documents under `v2/`). Without it, an
    /// http(s) URL that is not a git URL by its form is asked for its `v2/meta.json` first.
    #[arg(long, conflicts_with_all = ["local", "copy_spec_json"])]
    api: bool,
}

pub(crate) fn run(cli: &crate::Cli, a: &SetupArgs) -> anyhow::Result<ExitCode> {
    let uri = if a.local && !a.collection.contains("://") {
        format!("file://{}", std::path::absolute(&a.collection)?.display())
    } else {
        a.collection.clone()
    };
    let c = if a.api {
        stepman::steplib::Collection::api(&uri).map_err(|e| super::CouldNotRun(e.to_string()))?
    } else {
        super::steplib::collection(&uri)?
    };
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let r = generate::setup(&store, &c, Fill::IfMissing, &net)
        .map_err(|e| super::context_once(e, "setup", &c.uri, &c.uri))?;
    // A `delete` may remove the collection right after it was set up (delete is safe while
    // others work): set it up again rather than fail (`open_or_setup`, the one retry policy).
    let opened = stepman::activate::open_or_setup(&store, &c, &net)?;
    if let Some(api) = &opened.meta.api {
        crate::ui::note!(
            "{} {}: the StepLib API at {} (updated {}); its documents are fetched as lookups need them",
            if r.ingested {
                "set up"
            } else {
                "already set up:"
            },
            c.uri,
            api.base,
            api.updated_at
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in &opened.meta.skipped {
        log::info!("{}: skipped {}: {}", c.uri, s.path, s.error);
    }
    crate::ui::note!(
        "{} {}: {} steps, {} versions{}",
        if r.ingested {
            "set up"
        } else {
            "already set up:"
        },
        c.uri,
        opened.meta.steps,
        opened.meta.versions,
        if opened.meta.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", opened.meta.skipped.len())
        }
    );
    if let Some(p) = &a.copy_spec_json {
        super::export_spec::write_to(&opened, ExportType::Full, p)?;
    }
    Ok(ExitCode::SUCCESS)
}
