//! `stepman version` (and `-version`, `-v`, `--version`).

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};

use super::steplib::Format;

/// The version (one source: the package version in Cargo.toml).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Args, Default)]
#[command(after_help = "Example:\n  stepman version --full --format json")]
pub(crate) struct VersionArgs {
    /// Output format (json: the version as a JSON string; with --full an object) [default:
    /// raw].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Print JSON on stdout (as `--format json`).
    #[arg(long)]
    json: bool,
    /// Also print the platform, build number and commit.
    #[arg(long)]
    full: bool,
}

/// `build_number` and `commit` are what the build set in `STEPMAN_BUILD_NUMBER` and
/// `STEPMAN_COMMIT` (empty otherwise, as in the old tool's own local builds).
fn fields() -> [(&'static str, String); 4] {
    let platform = stepman::step::precompiled::platform();
    let (os, arch) = platform.split_once('-').unwrap_or((&platform, ""));
    [
        ("version", VERSION.to_string()),
        ("os", format!("{os} ({arch})")),
        (
            "build_number",
            option_env!("STEPMAN_BUILD_NUMBER")
                .unwrap_or("")
                .to_string(),
        ),
        (
            "commit",
            option_env!("STEPMAN_COMMIT").unwrap_or("").to_string(),
        ),
    ]
}

pub(crate) fn run(a: &VersionArgs) -> anyhow::Result<ExitCode> {
    match (super::steplib::format(a.format, a.json)?, a.full) {
        (Format::Raw, false) => super::outln!("{VERSION}"),
        (Format::Json, false) => super::outln!("{}", Value::String(VERSION.into())),
        (Format::Raw, true) => {
            for (k, v) in fields() {
                super::outln!("{k}: {v}");
            }
        }
        (Format::Json, true) => {
            // The old tool leaves empty fields out (`omitempty`).
            let m: Map<String, Value> = fields()
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
            super::outln!("{}", Value::Object(m));
        }
    }
    Ok(ExitCode::SUCCESS)
}
