//! `stepman collections`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stepman::steplib;

use super::steplib::Format;

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

/// The `spec_path` of a collection: the `spec.json` of the legacy view last written for it
/// (`legacy-view`), while that file is there; else its `collection.json` in the store.
fn spec_path(store: &Option<stepman::Store>, o: &steplib::Opened) -> std::path::PathBuf {
    store
        .as_ref()
        .and_then(|s| {
            let c = steplib::Collection::of_meta(&o.meta).ok()?;
            stepman::legacy::view_spec_path(s, &c)
        })
        .unwrap_or_else(|| o.meta_path())
}

pub(crate) fn run(cli: &crate::Cli, a: &CollectionsArgs) -> anyhow::Result<ExitCode> {
    let format = super::steplib::format(a.format, a.json)?;
    let store = super::open_ro(cli)?;
    let list = match &store {
        Some(store) => steplib::list(store)?,
        None => Vec::new(),
    };
    match format {
        Format::Json => {
            let data: Vec<_> = list
                .iter()
                .map(|(_, o)| {
                    let mut c = json!({"uri": o.meta.uri, "spec_path": spec_path(&store, o)});
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
                super::outln!(
                    "{}\n  spec_path: {}",
                    o.meta.uri,
                    spec_path(&store, o).display()
                );
            }
            super::outln!("");
        }
    }
    Ok(ExitCode::SUCCESS)
}
