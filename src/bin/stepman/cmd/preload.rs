//! `stepman preload`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use stepman::preload::{self, Request};

/// Warm the store with many step versions in parallel (for runner images). Safe while builds
/// activate from the same store; never deletes or rewrites what is there. Every failure is
/// reported at the end; exit 1 when any step failed.
///
/// Example: stepman preload -c https://github.com/bitrise-io/bitrise-steplib.git git-clone@8 script@1 --jobs 8 --json
#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Steps as `id` or `id@constraint`.
    steps: Vec<String>,
    /// Read more `id@constraint` lines from this file (`-`: stdin).
    #[arg(long = "from-file", value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// Every non-deprecated step's latest version.
    #[arg(long = "all-latest")]
    all_latest: bool,
    /// Parallel downloads (default: 4 per core, at most 16).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print a JSON report of every step on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &crate::Cli, a: &PreloadArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let store = super::open_rw(cli)?;
    let net = cli.net();
    let mut requests: Vec<Request> = a.steps.iter().map(|s| Request::parse(s)).collect();
    if let Some(f) = &a.from_file {
        let lines: Vec<String> = if f.as_os_str() == "-" {
            std::io::stdin().lock().lines().collect::<Result<_, _>>()?
        } else {
            std::fs::read_to_string(f)
                .with_context(|| format!("read {}", f.display()))?
                .lines()
                .map(String::from)
                .collect()
        };
        requests.extend(
            lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(Request::parse),
        );
    }
    if a.all_latest {
        requests.extend(preload::all_latest(&store, &c, &net)?);
    }
    anyhow::ensure!(
        !requests.is_empty(),
        "nothing to preload: name steps, --from-file or --all-latest"
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let jobs = a.jobs.unwrap_or((cores * 4).min(16)).max(1);
    let tty = std::io::stderr().is_terminal();
    let progress = |o: &preload::Outcome, n: usize, total: usize| {
        let version = o.version.as_deref().unwrap_or("?");
        let line = match &o.error {
            Some(e) => format!("[{n}/{total}] {}@{}: failed: {e}", o.id, o.constraint),
            None => format!(
                "[{n}/{total}] {}@{version}: {} ({} bytes, {:.2}s)",
                o.id, o.status, o.bytes, o.seconds
            ),
        };
        if tty {
            eprint!("\r\x1b[2K{line}");
            if o.error.is_some() || n == total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    };
    let outcomes = preload::preload(&store, &c, &requests, jobs, &net, &progress)?;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status == "failed").collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "collection": c.uri, "steps": outcomes })
            )?
        );
    }
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    eprintln!(
        "preload: {} steps: {} downloaded, {} already cached, {} failed",
        outcomes.len(),
        count("downloaded"),
        count("cached"),
        failed.len()
    );
    for o in &failed {
        eprintln!(
            "  failed {}@{}: {}",
            o.id,
            o.constraint,
            o.error.as_deref().unwrap_or("")
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
