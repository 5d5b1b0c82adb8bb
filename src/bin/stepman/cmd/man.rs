//! `stepman man`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman man | man -l -\n  stepman man --output /usr/local/share/man/man1"
)]
pub(crate) struct ManArgs {
    /// Write one page per command into this directory instead of the top-level page to stdout.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

/// The page of `cmd` (built, with its full name as its display name).
fn page(cmd: clap::Command) -> clap_mangen::Man {
    let title = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_uppercase();
    clap_mangen::Man::new(cmd)
        .title(title)
        .source(format!("stepman {}", super::version::VERSION))
        .manual("User Commands")
}

fn render(man: &clap_mangen::Man) -> anyhow::Result<Vec<u8>> {
    let mut roff = Vec::new();
    man.render(&mut roff).context("render the man page")?;
    Ok(roff)
}

/// Writes the page of `cmd` and of each of its subcommands into `dir`; returns how many.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        n += write_pages(sub, dir)?;
    }
    let man = page(cmd);
    let roff = render(&man)?;
    let path = dir.join(man.get_filename());
    let mode = stepman::atomic::FileMode::LessUmask(0o666);
    stepman::atomic::write_file_atomically(&path, mode, |w| {
        std::io::Write::write_all(w, &roff).map_err(|e| stepman::Error::Io {
            op: "write",
            path: path.clone(),
            error: e,
        })
    })
    .with_context(|| format!("write {}", path.display()))?;
    Ok(n + 1)
}

pub(crate) fn run(a: &ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    match &a.output {
        None => super::out_bytes(&render(&page(cmd))?)?,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create directory {}", dir.display()))?;
            let n = write_pages(cmd, dir)?;
            crate::ui::note!("wrote {n} man pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
