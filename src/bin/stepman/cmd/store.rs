//! `stepman store import|resolve|export`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use stepman::Name;

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCmd {
    /// Ingest a directory, .tar, .tar.gz/.tgz or .zip; print the object id on stdout.
    #[command(
        after_help = "Example:\n  stepman store import step.zip --name steplib/git-clone/8.5.1"
    )]
    Import {
        /// What to ingest.
        path: PathBuf,
        /// Bind this name (<route>/<id>/<version>) to the object.
        #[arg(long)]
        name: Option<Name>,
        /// If the name is already bound, print its object and ingest nothing; concurrent callers
        /// wait for the first one (requires --name).
        #[arg(long, requires = "name")]
        if_missing: bool,
    },
    /// Print the directory of the object a name points at.
    #[command(after_help = "Example:\n  stepman store resolve steplib/git-clone/8.5.1")]
    Resolve {
        /// <route>/<id>/<version>
        name: Name,
    },
    /// Copy the object a name points at to DEST (complete or not at all).
    #[command(after_help = "Example:\n  stepman store export steplib/git-clone/8.5.1 ./step")]
    Export {
        /// <route>/<id>/<version>
        name: Name,
        /// Destination: must not exist, or be an empty directory.
        dest: PathBuf,
    },
}

pub(crate) fn run(cli: &crate::Cli, cmd: &StoreCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCmd::Import {
            path,
            name,
            if_missing,
        } => {
            let store = super::open_rw(cli)?;
            let id = match (name, if_missing) {
                (Some(n), true) => {
                    let r = store.import_if_missing(path, n)?;
                    if !r.ingested {
                        log::info!("{n} already present");
                    }
                    r.id
                }
                _ => store.import(path, name.as_ref())?,
            };
            super::outln!("{id}");
        }
        StoreCmd::Resolve { name } => {
            let Some(store) = super::open_ro(cli)? else {
                anyhow::bail!(
                    "name {name} not found: no store at {}",
                    cli.home()?.display()
                );
            };
            let (_, dir) = store.resolve(name)?;
            super::outln!("{}", dir.display());
        }
        StoreCmd::Export { name, dest } => {
            let Some(store) = super::open_ro(cli)? else {
                anyhow::bail!(
                    "name {name} not found: no store at {}",
                    cli.home()?.display()
                );
            };
            store
                .export(name, dest)
                .with_context(|| format!("export {name} to {}", dest.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
