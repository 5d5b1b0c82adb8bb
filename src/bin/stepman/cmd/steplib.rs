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

/// The output format of `-f/--format` and `--json` (the same as `--format json`); `--json`
/// with `--format raw` is bad usage (exit 2). Decided before anything is opened.
pub(crate) fn format(format: Option<Format>, json: bool) -> anyhow::Result<Format> {
    match (format, json) {
        (Some(Format::Raw), true) => {
            Err(super::CouldNotRun("--json cannot be used with --format raw".into()).into())
        }
        (_, true) => Ok(Format::Json),
        (f, false) => Ok(f.unwrap_or_default()),
    }
}

/// Parses a collection URI (errors name it). A URI that cannot be one (an empty one) is bad
/// usage: exit 2. The public StepLib's git URI is read through its API unless
/// `BITRISE_STEPLIB_USE_API` is `false` or `0`, as in the old tool.
pub(crate) fn collection(uri: &str) -> anyhow::Result<stepman::steplib::Collection> {
    let public = stepman::steplib::PublicApi::from_env_value(
        std::env::var("BITRISE_STEPLIB_USE_API").ok().as_deref(),
    );
    stepman::steplib::Collection::parse_mapped(uri, public)
        .map_err(|e| super::CouldNotRun(e.to_string()).into())
}

/// The collection of a set-up object (a listing's).
pub(crate) fn of_meta(
    meta: &stepman::steplib::CollectionMeta,
) -> anyhow::Result<stepman::steplib::Collection> {
    stepman::steplib::Collection::of_meta(meta)
        .map_err(|e| super::CouldNotRun(e.to_string()).into())
}
