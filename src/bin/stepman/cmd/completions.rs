//! `stepman completions`.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman completions bash > ~/.local/share/bash-completion/completions/stepman\n  stepman completions zsh > \"${fpath[1]}/_stepman\"\n  stepman completions fish > ~/.config/fish/completions/stepman.fish"
)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub(crate) fn run(a: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "stepman", &mut script);
    super::out_bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}
