//! `stepman fsck`.

use std::process::ExitCode;

use clap::Args;

use stepman::fsck::Repair;

use super::CouldNotRun;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  stepman fsck --repair --json")]
pub(crate) struct FsckArgs {
    /// Move damaged objects aside, drop names that point at them, fix permissions, reclaim dead
    /// temp dirs.
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, args: &FsckArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_ro(cli).map_err(|e| CouldNotRun(format!("{e:#}")))?;
    let report = match &store {
        Some(s) => stepman::fsck::fsck(s, if args.repair { Repair::Yes } else { Repair::No })
            .map_err(|e| CouldNotRun(format!("{:#}", anyhow::Error::from(e))))?,
        None => stepman::fsck::FsckReport::default(),
    };
    if args.json {
        super::outln!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.problems {
            let state = if p.repaired { "repaired" } else { "found" };
            super::outln!(
                "{state}\t{}\t{}\t{}",
                p.kind.as_str(),
                p.path.display(),
                p.detail
            );
        }
    }
    let unrepaired = report.unrepaired();
    let summary = format!(
        "{} objects ({} bytes) and {} names checked: {} problems, {} repaired, {} left",
        report.objects,
        report.bytes,
        report.names,
        report.problems.len(),
        report.problems.len() - unrepaired,
        unrepaired
    );
    if report.problems.is_empty() {
        crate::ui::note!("stepman fsck: {summary}");
    } else {
        // Damage found (repaired or not) is said even with --quiet: the exit status is 1.
        crate::ui::write_line(format_args!("stepman fsck: {summary}"));
    }
    if let Some(e) = &report.repair_error {
        eprintln!("stepman fsck: repair stopped: {e}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
