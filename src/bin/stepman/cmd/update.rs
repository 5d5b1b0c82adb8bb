//! `stepman update`.

use std::process::ExitCode;

use clap::Args;
use stepman::Fill;
use stepman::steplib::{self, generate};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman update -c https://github.com/bitrise-io/bitrise-steplib.git"
)]
pub(crate) struct UpdateArgs {
    /// The collection's URI (none, or empty: every collection).
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: Option<String>,
}

pub(crate) fn run(cli: &crate::Cli, a: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    // An empty `-c` means every collection, as in the old tool.
    let cs = match a.collection.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => vec![super::steplib::collection(c)?],
        None => steplib::list(&store)?
            .into_iter()
            .map(|(_, o)| super::steplib::of_meta(&o.meta))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let mut failed = 0;
    for c in cs {
        // `c.uri` is the URI without its credentials, which must not be printed.
        let shown = &c.uri;
        match generate::setup(&store, &c, Fill::Again, &net)
            .map_err(|e| super::context_once(e, "update", shown, shown))
        {
            // Nothing made: the StepLib's HEAD is the commit its collection was built from.
            Ok(p) if !p.ingested => crate::ui::note!("{shown} is up to date"),
            Ok(_) => crate::ui::note!("updated {shown}"),
            Err(e) => {
                crate::ui::write_line(format_args!("stepman: {e:#}"));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
