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

/// Parses a collection URI (errors name it).
pub(crate) fn collection(uri: &str) -> anyhow::Result<stepman::steplib::Collection> {
    Ok(stepman::steplib::Collection::parse(uri)?)
}
