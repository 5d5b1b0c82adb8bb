//! `stepman export-spec`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use stepman::steplib::{self, ExportType, Opened};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Full,
    Latest,
    Minimal,
}

/// Write a collection's spec.json.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman export-spec --steplib https://github.com/bitrise-io/bitrise-steplib.git --output spec.json --export-type latest"
)]
pub(crate) struct ExportSpecArgs {
    /// The collection's URI.
    #[arg(long, alias = "collection", short = 'c')]
    steplib: String,
    /// Output file (`-`: stdout).
    #[arg(long)]
    output: PathBuf,
    /// full: every version; latest: each step's latest version; minimal: latest version numbers.
    #[arg(long = "export-type", value_enum, default_value = "full")]
    export_type: Kind,
}

/// Writes the spec to `path` atomically (or to stdout for `-`).
pub(crate) fn write_to(o: &Opened, kind: ExportType, path: &Path) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
        return match steplib::write_spec(o, kind, &mut out) {
            Err(stepman::Error::Io { source, .. }) if closed(&source) => {
                Err(super::StdoutClosed.into())
            }
            Err(e) => Err(e.into()),
            Ok(()) => match out.flush() {
                Err(e) if closed(&e) => Err(super::StdoutClosed.into()),
                other => Ok(other?),
            },
        };
    }
    let mode = stepman::atomic::FileMode::LessUmask(0o666);
    stepman::atomic::write_file_atomically(path, mode, |mut w| {
        steplib::write_spec(o, kind, &mut w)
    })?;
    Ok(())
}

pub(crate) fn run(cli: &crate::Cli, a: &ExportSpecArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.steplib)?;
    let store =
        super::open_ro(cli)?.ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?;
    let kind = match a.export_type {
        Kind::Full => ExportType::Full,
        Kind::Latest => ExportType::Latest,
        Kind::Minimal => ExportType::Minimal,
    };
    // The spec is read from many files of the collection object: hold the store lock while
    // reading, so that a gc after a concurrent update cannot remove the object half-way.
    store.read_locked(|| -> anyhow::Result<()> {
        let o = steplib::open(&store, &c)?
            .ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?;
        write_to(&o, kind, &a.output)
    })?;
    Ok(ExitCode::SUCCESS)
}
