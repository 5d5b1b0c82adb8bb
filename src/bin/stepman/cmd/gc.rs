//! `stepman gc`.

use std::process::ExitCode;

use clap::Args;
use stepman::gc::GcMode;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  stepman gc --dry-run --json")]
pub(crate) struct GcArgs {
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, args: &GcArgs) -> anyhow::Result<ExitCode> {
    let Some(store) = super::open_ro(cli)? else {
        crate::ui::note!("stepman gc: no store at {}", cli.home()?.display());
        return Ok(ExitCode::SUCCESS);
    };
    let report = stepman::gc::gc(
        &store,
        if args.dry_run {
            GcMode::DryRun
        } else {
            GcMode::Collect
        },
    )?;
    if args.json {
        super::outln!("{}", serde_json::to_string(&report)?);
    } else {
        for o in &report.removed_objects {
            super::outln!("{o}");
        }
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    crate::ui::note!(
        "stepman gc: {verb} {} objects ({} bytes) and {} dead temp dirs; kept {} objects",
        report.removed_objects.len(),
        report.removed_bytes,
        report.temp.reclaimed.len(),
        report.kept_objects
    );
    Ok(ExitCode::SUCCESS)
}
