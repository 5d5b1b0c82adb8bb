//! `stepman list-cached`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stepman::preload;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman list-cached -c https://github.com/bitrise-io/bitrise-steplib.git --json"
)]
pub(crate) struct ListCachedArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, a: &ListCachedArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let cached = match super::open_ro(cli)? {
        Some(store) => preload::list_cached(&store, &c)?,
        None => Vec::new(),
    };
    if a.json {
        let steps: Vec<_> = cached
            .iter()
            .map(|(id, v)| json!({"id": id, "version": v}))
            .collect();
        super::outln!("{}", json!({"collection": c.uri, "steps": steps}));
    } else {
        for (id, v) in &cached {
            super::outln!("{id}@{v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
