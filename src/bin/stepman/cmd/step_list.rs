//! `stepman step-list`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use stepman::steplib::{self, Collection, Opened};

use super::steplib::Format;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman step-list -c https://github.com/bitrise-io/bitrise-steplib.git -f json"
)]
pub(crate) struct StepListArgs {
    /// The collection's URI (none: every collection set up).
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: Option<String>,
    /// Output format [default: raw].
    #[arg(short = 'f', long, value_enum)]
    format: Option<Format>,
    /// Print JSON on stdout (as `--format json`).
    #[arg(long)]
    json: bool,
}

/// The step ids of `o`, reading the name again if the object went away meanwhile (an update
/// re-pointed the name, a gc removed it).
fn step_ids(
    store: &stepman::Store,
    c: &Collection,
    mut o: Opened,
    net: &stepman::fetch::NetConfig,
) -> anyhow::Result<(Opened, Vec<String>)> {
    let mut retries = 0;
    loop {
        match o.step_ids() {
            Err(stepman::Error::Io { error, .. })
                if retries < 16 && error.kind() == std::io::ErrorKind::NotFound =>
            {
                retries += 1;
                o = steplib::open(store, c)?
                    .ok_or_else(|| stepman::Error::NotSetUp { uri: c.uri.clone() })?
                    .online(net);
            }
            other => return Ok((o, other?)),
        }
    }
}

/// `text` as the old tool prints a summary: lines longer than 130 bytes cut into pieces, every
/// line after the first indented to sit under the first.
fn indent_summary(text: &str) -> String {
    const WIDTH: usize = 130;
    let indent = " ".repeat(12);
    let mut out = String::new();
    let mut add = |piece: &str| {
        if out.is_empty() {
            out.push_str(piece);
        } else {
            out.push('\n');
            out.push_str(&indent);
            out.push_str(piece);
        }
    };
    for line in text.lines() {
        let mut rest = line;
        if rest.len() <= WIDTH {
            add(rest);
            continue;
        }
        while !rest.is_empty() {
            let mut cut = rest.len().min(WIDTH);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            add(&rest[..cut]);
            rest = &rest[cut..];
        }
    }
    out
}

fn print(o: &Opened, uri: &str, ids: &[String], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            // The old tool leaves an empty list out (`omitempty`).
            let v = if ids.is_empty() {
                json!({ "steplib": uri })
            } else {
                json!({ "steplib": uri, "steps": ids })
            };
            super::outln!("{v}");
        }
        Format::Raw => {
            super::outln!("Steps in StepLib ({uri}):");
            super::outln!("");
            for id in ids {
                // The latest version alone: its index and one step, not the whole group.
                let Some(e) = o.entry(id)? else { continue };
                let Some(step) = e.step(&e.latest_version_number)? else {
                    log::error!("No version found for step: {id}");
                    continue;
                };
                let field = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or_default();
                super::outln!(" * {}", field("title"));
                super::outln!("   ID: {id}");
                super::outln!("   Latest Version: {}", e.latest_version_number);
                super::outln!("   Summary: {}", indent_summary(field("summary")));
                super::outln!("");
            }
            super::outln!("");
        }
    }
    Ok(())
}

pub(crate) fn run(cli: &crate::Cli, a: &StepListArgs) -> anyhow::Result<ExitCode> {
    let format = super::steplib::format(a.format, a.json)?;
    let wanted = a.collection.as_deref().filter(|c| !c.is_empty());
    let Some(uri) = wanted else {
        // Every collection set up, as the old tool does without `-c`.
        let Some(store) = super::open_ro(cli)? else {
            return Ok(ExitCode::SUCCESS);
        };
        let net = cli.net()?;
        for (_, o) in steplib::list(&store)? {
            let c = super::steplib::of_meta(&o.meta)?;
            let (o, ids) = step_ids(&store, &c, o.online(&net), &net)?;
            print(&o, &c.uri, &ids, format)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let c = super::steplib::collection(uri)?;
    let net = cli.net()?;
    // Set up first when it is not (that needs write access), as the old tool does.
    let opened = match super::open_ro(cli)? {
        Some(store) => steplib::open(&store, &c)?.map(|o| (store, o.online(&net))),
        None => None,
    };
    let (store, o) = match opened {
        Some(found) => found,
        None => {
            let store = super::open_rw(cli)?;
            let o = stepman::activate::open_or_setup(&store, &c, &net)?;
            (store, o)
        }
    };
    let (o, ids) = step_ids(&store, &c, o, &net)?;
    print(&o, &c.uri, &ids, format)?;
    Ok(ExitCode::SUCCESS)
}
