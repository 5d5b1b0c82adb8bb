//! Shared argument types for the StepLib commands.

use clap::ValueEnum;

/// `--format` of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    /// Human-readable lines.
    #[default]
    Raw,
    /// JSON on stdout.
    Json,
}

/// Parses a collection URI (errors name it). A URI that cannot be one (an empty one) is bad
/// usage: exit 2.
pub(crate) fn collection(uri: &str) -> anyhow::Result<stepman::steplib::Collection> {
    stepman::steplib::Collection::parse(uri).map_err(|e| super::CouldNotRun(e.to_string()).into())
}
