//! `stepman step-list`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stepman::steplib;

use super::steplib::Format;

/// List a collection's steps.
///
/// List the step ids of a collection.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman step-list -c https://github.com/bitrise-io/bitrise-steplib.git -f json"
)]
pub(crate) struct StepListArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value = "raw")]
    format: Format,
}

pub(crate) fn run(cli: &crate::Cli, a: &StepListArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let store =
        super::open_ro(cli)?.ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?;
    let mut retries = 0;
    let ids = loop {
        let o = steplib::open(&store, &c)?
            .ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?;
        match o.step_ids() {
            // The object we opened went away (an update re-pointed the name, a gc removed it):
            // read the name again.
            Err(stepman::Error::Io { source, .. })
                if retries < 16 && source.kind() == std::io::ErrorKind::NotFound =>
            {
                retries += 1;
            }
            other => break other?,
        }
    };
    match a.format {
        Format::Json => super::outln!("{}", json!({"steplib": c.uri, "steps": ids})),
        Format::Raw => {
            for id in ids {
                super::outln!("{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
