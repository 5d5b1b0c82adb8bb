//! `stepman collections`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stepman::steplib;

use super::steplib::Format;

/// List the collections.
///
/// List the collections set up in the store.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  stepman collections --format json")]
pub(crate) struct CollectionsArgs {
    /// Output format [default: raw].
    #[arg(short = 'f', long, value_enum)]
    format: Option<Format>,
    /// Print JSON on stdout (as `--format json`).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, a: &CollectionsArgs) -> anyhow::Result<ExitCode> {
    let format = super::steplib::format(a.format, a.json)?;
    let list = match super::open_ro(cli)? {
        Some(store) => steplib::list(&store)?,
        None => Vec::new(),
    };
    match format {
        Format::Json => {
            let data: Vec<_> = list
                .iter()
                .map(|(_, o)| {
                    let mut c = json!({"uri": o.meta.uri, "spec_path": o.meta_path()});
                    // A git StepLib's collection names the commit it was built from.
                    if let Some(commit) = &o.meta.source_commit {
                        c["steplib_commit"] = json!(commit);
                    }
                    c
                })
                .collect();
            // The old tool's list is `null` when there is none (a nil slice).
            let data = if data.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(data)
            };
            super::outln!("{}", json!({ "data": data }));
        }
        Format::Raw => {
            // As the old tool: a blank line between collections, and one at the end.
            for (i, (_, o)) in list.iter().enumerate() {
                if i > 0 {
                    super::outln!("");
                }
                super::outln!("{}\n  spec_path: {}", o.meta.uri, o.meta_path().display());
            }
            super::outln!("");
        }
    }
    Ok(ExitCode::SUCCESS)
}
