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
    /// The StepLib API's tree of documents (`v2/`), published into the directory `--output`.
    Api,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stepman export-spec --steplib https://github.com/bitrise-io/bitrise-steplib.git --output spec.json --export-type latest\n  stepman export-spec --steplib ./steplib --export-type api --output /srv/www/steplib-api   # serve /srv/www/steplib-api/v2/…"
)]
pub(crate) struct ExportSpecArgs {
    /// The collection's URI.
    #[arg(long, alias = "collection", short = 'c')]
    steplib: String,
    /// Output file (`-`: stdout); with `--export-type api`, the directory to publish (a link to
    /// the tree, swapped atomically).
    #[arg(long)]
    output: PathBuf,
    /// full: every version; latest: each step's info and latest version; minimal: the step ids
    /// (each `{"info":{}}`, as the old tool writes it); api: the StepLib API's documents.
    #[arg(long = "export-type", value_enum, default_value = "full")]
    export_type: Kind,
}

/// Writes the spec to `path` atomically (or to stdout for `-`).
pub(crate) fn write_to(o: &Opened, kind: ExportType, path: &Path) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
        return match steplib::write_spec(o, kind, &mut out) {
            Err(stepman::Error::Io { error, .. }) if closed(&error) => {
                Err(super::StdoutClosed.into())
            }
            Err(e) => Err(e.into()),
            Ok(()) => match out.flush() {
                Err(e) if closed(&e) => Err(super::StdoutClosed.into()),
                other => Ok(other?),
            },
        };
    }
    // The old tool creates the output's directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("create directory {}: {e}", dir.display()))?;
    }
    let mode = stepman::atomic::FileMode::LessUmask(0o666);
    stepman::atomic::write_file_atomically(path, mode, |mut w| {
        steplib::write_spec(o, kind, &mut w)
    })?;
    Ok(())
}

pub(crate) fn run(cli: &crate::Cli, a: &ExportSpecArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.steplib)?;
    // Set the collection up first when it is not (that needs write access), as the old tool.
    let set_up = match super::open_ro(cli)? {
        Some(store) => steplib::open(&store, &c)?.is_some().then_some(store),
        None => None,
    };
    let store = match set_up {
        Some(store) => store,
        None => {
            let store = super::open_rw(cli)?;
            stepman::activate::open_or_setup(&store, &c, &cli.net()?)?;
            store
        }
    };
    let kind = match a.export_type {
        Kind::Full => ExportType::Full,
        Kind::Latest => ExportType::Latest,
        Kind::Minimal => ExportType::Minimal,
        Kind::Api => {
            if a.output == Path::new("-") {
                return Err(super::CouldNotRun(
                    "export-spec: --export-type api publishes a directory: --output DIR".into(),
                )
                .into());
            }
            let p = store.read_locked(|| -> anyhow::Result<_> {
                let o = steplib::open(&store, &c)?
                    .ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?;
                Ok(steplib::api::publish(&store, &o, &a.output)?)
            })?;
            eprintln!(
                "export-spec: {} {} documents at {} ({})",
                if p.replaced {
                    "published"
                } else {
                    "already published:"
                },
                p.documents,
                a.output.display(),
                p.tree.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
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
