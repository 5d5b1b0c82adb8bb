//! `stepman toolkit`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use stepman::toolkit::install;

/// Toolkits in the store: the Go toolchain that builds Go steps.
#[derive(Debug, Subcommand)]
pub(crate) enum ToolkitCmd {
    Install(InstallArgs),
}

/// Which toolkit.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Which {
    /// The Go toolchain (`go<VERSION>.<os>-<arch>.tar.gz` from STEPMAN_GO_DOWNLOAD_BASE, default
    /// https://go.dev/dl).
    Go,
}

/// Install a toolkit into the store.
///
/// Downloads the official archive, verifies its sha256 before anything is stored (the pinned
/// hash of the default version, or --sha256), and stores it as `_toolkits/go/<VERSION>`: used
/// by `--prepare` when no Go 1.22.12 or newer is on PATH. Ten installers at once download once.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stepman toolkit install go\n  stepman toolkit install go 1.24.2 --sha256 68097bd680839cbc9d464a0edce4f7c333975e27a90246890e9f1078c7e702ad"
)]
pub(crate) struct InstallArgs {
    /// The toolkit.
    toolkit: Which,
    /// Its version (default: 1.22.12).
    version: Option<String>,
    /// The archive's sha256 (64 hex digits); needed for any version but the default.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Print the result as JSON (`{"version", "goroot", "object", "downloaded"}`).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, c: &ToolkitCmd) -> anyhow::Result<ExitCode> {
    let ToolkitCmd::Install(a) = c;
    let Which::Go = a.toolkit;
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let got = install::install_go(&store, a.version.as_deref(), a.sha256.as_deref(), &net)?;
    crate::ui::note!(
        "go{} {} ({})",
        got.version,
        if got.downloaded {
            "installed"
        } else {
            "already installed"
        },
        got.goroot.display()
    );
    if a.json {
        super::outln!("{}", serde_json::to_string(&got)?);
    }
    Ok(ExitCode::SUCCESS)
}
