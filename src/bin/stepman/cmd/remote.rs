//! `stepman remote status|push|verify`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCmd {
    /// Show the remote tier's configuration (never a secret).
    #[command(after_help = "Example:\n  stepman remote status --remote s3://ci-steps/stepman")]
    Status {
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Upload what the local store has (trees first, then names, each create-only).
    #[command(
        after_help = "Example:\n  stepman remote push -c https://github.com/bitrise-io/bitrise-steplib.git\n  stepman remote push --all --remote s3://ci-steps/stepman"
    )]
    Push {
        /// The collections whose cached steps to upload.
        #[arg(short = 'c', long = "collection", required_unless_present = "all")]
        collection: Vec<String>,
        /// Every collection's cached steps.
        #[arg(long, conflicts_with = "collection")]
        all: bool,
    },
    /// Check that every remote name's tree exists and hashes to its id.
    ///
    /// Exit status as `fsck`: 0 clean, 1 damage found, 2 could not run.
    #[command(after_help = "Example:\n  stepman remote verify --json")]
    Verify {
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn open(cli: &crate::Cli) -> anyhow::Result<stepman::remote::Remote> {
    let settings = stepman::remote::from_env(cli.remote.as_deref())
        .map_err(|e| super::CouldNotRun(e.to_string()))?
        .ok_or_else(|| {
            super::CouldNotRun("no remote tier: pass --remote URL or set STEPMAN_REMOTE".into())
        })?;
    stepman::remote::Remote::open(settings).map_err(|e| match e {
        e @ stepman::Error::BadSetting { .. } => super::CouldNotRun(e.to_string()).into(),
        e => anyhow::Error::from(e),
    })
}

pub(crate) fn run(cli: &crate::Cli, cmd: &RemoteCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RemoteCmd::Status { json } => status(cli, *json),
        RemoteCmd::Push { collection, all } => {
            let remote = open(cli)?;
            let store = super::open_rw(cli)?;
            let mut routes = Vec::new();
            if *all {
                routes = store.routes()?;
            } else {
                for uri in collection {
                    routes.push(super::steplib::collection(uri)?.alias);
                }
            }
            let names = stepman::remote::Remote::pushable(&store, &routes)?;
            let pushed = remote.push(&store, &names);
            let failed = super::report_pushed(&pushed);
            for u in &pushed {
                super::outln!("{}\t{}\t{:?}", u.name, u.id, u.outcome);
            }
            crate::ui::note!("remote push: {} names, {} failed", pushed.len(), failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        RemoteCmd::Verify { json } => {
            let remote = open(cli)?;
            let store = super::open_rw(cli)?;
            let v = remote.verify(&store)?;
            let damaged: Vec<(String, String)> = v
                .damaged
                .iter()
                .map(|d| (d.name.to_string(), d.problem.describe()))
                .collect();
            if *json {
                let d: Vec<_> = damaged
                    .iter()
                    .map(|(n, why)| json!({ "name": n, "problem": why }))
                    .collect();
                super::outln!(
                    "{}",
                    serde_json::to_string(
                        &json!({ "names": v.names, "trees": v.trees, "damaged": d })
                    )?
                );
            } else {
                for (n, why) in &damaged {
                    super::outln!("damaged {n}: {why}");
                }
            }
            crate::ui::note!(
                "remote verify: {} names, {} trees, {} damaged",
                v.names,
                v.trees,
                damaged.len()
            );
            Ok(if damaged.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn status(cli: &crate::Cli, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(s) = stepman::remote::from_env(cli.remote.as_deref())
        .map_err(|e| super::CouldNotRun(e.to_string()))?
    else {
        if as_json {
            super::outln!("{}", json!({ "remote": null }));
        } else {
            super::outln!("no remote tier (set STEPMAN_REMOTE or pass --remote)");
        }
        return Ok(ExitCode::SUCCESS);
    };
    // Which of the object stores' own settings are present: names only, never values (an
    // endpoint is not a secret and is shown).
    let present: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            ["AWS_", "GOOGLE_", "AZURE_", "AZURITE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    let endpoint = s.endpoint();
    // Where the keys come from when no variable gives them: a profile's name and file only.
    let profile = s.aws_profile();
    let mode = match s.mode {
        stepman::remote::Mode::Read => "read",
        stepman::remote::Mode::ReadWrite => "read-write",
    };
    if as_json {
        super::outln!(
            "{}",
            json!({
                "remote": s.url,
                "mode": mode,
                "endpoint": endpoint,
                "aws_profile": profile.as_ref().map(|(name, file)| json!({
                    "name": name,
                    "file": file.display().to_string(),
                })),
                "settings_present": present,
                "connect_timeout_s": s.connect_timeout.as_secs(),
                "timeout_s": s.timeout.as_secs(),
                "lease_ttl_s": s.lease_ttl.as_secs(),
                "wait_s": s.wait.as_secs(),
                "max_tree_bytes": s.max_tree,
            })
        );
    } else {
        super::outln!("remote: {}", s.url);
        super::outln!("mode: {mode}");
        if let Some(e) = &endpoint {
            super::outln!("endpoint: {e}");
        }
        super::outln!("object store settings present: {}", present.join(" "));
        if let Some((name, file)) = &profile {
            super::outln!("AWS profile: {name} (keys from {})", file.display());
        }
        super::outln!(
            "timeouts: connect {}s, request {}s; lease {}s; wait {}s; largest tree {} bytes",
            s.connect_timeout.as_secs(),
            s.timeout.as_secs(),
            s.lease_ttl.as_secs(),
            s.wait.as_secs(),
            s.max_tree
        );
    }
    Ok(ExitCode::SUCCESS)
}
