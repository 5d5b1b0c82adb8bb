//! `stepman setup`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stepman::Fill;
use stepman::steplib::{ExportType, generate};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman setup -c https://github.com/bitrise-io/bitrise-steplib.git"
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
}

pub(crate) fn run(cli: &crate::Cli, a: &SetupArgs) -> anyhow::Result<ExitCode> {
    let uri = if a.local && !a.collection.contains("://") {
        format!("file://{}", std::path::absolute(&a.collection)?.display())
    } else {
        a.collection.clone()
    };
    let c = super::steplib::collection(&uri)?;
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let r = generate::setup(&store, &c, Fill::IfMissing, &net)
        .map_err(|e| super::context_once(e, "setup", &c.uri, &c.uri))?;
    // A `delete` may remove the collection right after it was set up (delete is safe while
    // others work): set it up again rather than fail (`open_or_setup`, the one retry policy).
    let opened = stepman::activate::open_or_setup(&store, &c, &net)?;
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
