//! The `stepman` command line: parses arguments, calls the library, prints, maps errors to exit
//! codes. Data goes to stdout, messages to stderr.
//!
//! Exit codes: 0 success; 1 the operation failed (or `fsck` found damage); 2 bad usage, or `fsck`
//! could not run.

#![forbid(unsafe_code)]

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A step manager for CI runners, built on a content-addressed store.
#[derive(Debug, Parser)]
#[command(
    name = "stepman",
    version,
    about,
    long_about = None,
    after_help = "Example:\n  stepman activate -c https://github.com/bitrise-io/bitrise-steplib.git -i git-clone -v 8 -p ./step"
)]
pub struct Cli {
    /// Store root (holds `store-v1/`).
    #[arg(long, global = true, env = "STEPMAN_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Do not fsync ingested trees before publishing them (for throwaway stores only).
    #[arg(long, global = true, env = "STEPMAN_NO_FSYNC", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    no_fsync: bool,

    /// A read-only store (its `$STEPMAN_HOME`) layered under the writable one: names missing in
    /// the writable store are looked up here, in order; nothing is ever written to it. Repeat the
    /// flag, or set STEPMAN_READ_ONLY_STORES to a `:`-separated list.
    #[arg(
        long = "read-only-store",
        global = true,
        env = "STEPMAN_READ_ONLY_STORES",
        value_delimiter = ':',
        value_name = "DIR"
    )]
    read_only_stores: Vec<PathBuf>,

    /// Never use the network (also BITRISE_OFFLINE_MODE=true).
    #[arg(long, global = true)]
    offline: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Setup(cmd::setup::SetupArgs),
    Update(cmd::update::UpdateArgs),
    Collections(cmd::collections::CollectionsArgs),
    Delete(cmd::delete::DeleteArgs),
    StepList(cmd::step_list::StepListArgs),
    StepInfo(cmd::step_info::StepInfoArgs),
    Download(cmd::download::DownloadArgs),
    Activate(cmd::activate::ActivateArgs),
    ExportSpec(cmd::export_spec::ExportSpecArgs),
    Preload(cmd::preload::PreloadArgs),
    ListCached(cmd::list_cached::ListCachedArgs),
    /// Plumbing: import, resolve and export store entries.
    #[command(
        subcommand,
        after_help = "Example:\n  stepman store import step.zip --name steplib/git-clone/8.5.1"
    )]
    Store(cmd::store::StoreCmd),
    Fsck(cmd::fsck::FsckArgs),
    Gc(cmd::gc::GcArgs),
    /// Toolkits in the store: the Go toolchain that builds Go steps.
    #[command(subcommand, after_help = "Example:\n  stepman toolkit install go")]
    Toolkit(cmd::toolkit::ToolkitCmd),
}

impl Cli {
    fn home(&self) -> anyhow::Result<PathBuf> {
        if let Some(h) = &self.home {
            return Ok(h.clone());
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| anyhow::anyhow!("neither STEPMAN_HOME nor HOME is set"))?;
        Ok(PathBuf::from(home).join(".stepman"))
    }

    fn net(&self) -> stepman::fetch::NetConfig {
        let mut n = stepman::fetch::NetConfig::from_env();
        n.offline |= self.offline;
        n
    }

    fn durability(&self) -> stepman::Durability {
        if self.no_fsync {
            stepman::Durability::NoSync
        } else {
            stepman::Durability::Sync
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Setup(a) => cmd::setup::run(&cli, a),
        Command::Update(a) => cmd::update::run(&cli, a),
        Command::Collections(a) => cmd::collections::run(&cli, a),
        Command::Delete(a) => cmd::delete::run(&cli, a),
        Command::StepList(a) => cmd::step_list::run(&cli, a),
        Command::StepInfo(a) => cmd::step_info::run(&cli, a),
        Command::Download(a) => cmd::download::run(&cli, a),
        Command::Activate(a) => cmd::activate::run(&cli, a),
        Command::ExportSpec(a) => cmd::export_spec::run(&cli, a),
        Command::Preload(a) => cmd::preload::run(&cli, a),
        Command::ListCached(a) => cmd::list_cached::run(&cli, a),
        Command::Store(c) => cmd::store::run(&cli, c),
        Command::Fsck(a) => cmd::fsck::run(&cli, a),
        Command::Gc(a) => cmd::gc::run(&cli, a),
        Command::Toolkit(c) => cmd::toolkit::run(&cli, c),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to say, nothing failed.
        Err(e) if cmd::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stepman: {e:#}");
            let cancelled = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<stepman::Error>(),
                    Some(stepman::Error::Cancelled)
                )
            });
            if cancelled {
                ExitCode::from(130)
            } else {
                ExitCode::from(e.downcast_ref::<cmd::CouldNotRun>().map_or(1, |_| 2))
            }
        }
    }
}
