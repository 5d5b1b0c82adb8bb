//! `stepman preload`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use indicatif::HumanBytes;
use stepman::preload::{self, Request, Selection, Status};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stepman preload -c https://github.com/bitrise-io/bitrise-steplib.git\n  stepman preload -c https://github.com/bitrise-io/bitrise-steplib.git --maintainer \"\" --majors 1 --minors-since 0 --patches-since 0\n  stepman preload -c https://github.com/bitrise-io/bitrise-steplib.git git-clone@8 script@1 --jobs 8 --json\n  stepman preload -c ./steplib my-go-step@1 --prepare\n  stepman preload -c ./steplib --as-of 2026-12-01T00:00:00Z --dry-run   # the selection, reproducibly"
)]
pub(crate) struct PreloadArgs {
    /// The collection's URI.
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    collection: String,
    /// Steps as `id` or `id@constraint`.
    steps: Vec<String>,
    /// Read more `id@constraint` lines from this file (`-`: stdin).
    #[arg(long = "from-file", value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// Also upload every preloaded step (cached ones too) to the remote tier (`--remote`,
    /// `STEPMAN_REMOTE`): a pre-bake job warming the fleet's tier.
    #[arg(long)]
    push: bool,
    /// Every non-deprecated step's latest version.
    #[arg(long = "all-latest")]
    all_latest: bool,
    /// Selection: only steps of this maintainer (step-info.yml); "" for every maintainer.
    /// [default: bitrise]
    #[arg(long)]
    maintainer: Option<String>,
    /// Selection: the latest N major versions of each step. [default: 2]
    #[arg(long, value_name = "N")]
    majors: Option<u32>,
    /// Selection: the latest N minor versions of each of those majors. [default: 1]
    #[arg(long, value_name = "N")]
    minors: Option<u32>,
    /// Selection: the latest patch of minors published in the last N months. [default: 2]
    #[arg(long = "minors-since", value_name = "MONTHS")]
    minors_since: Option<u32>,
    /// Selection: every version published in the last N months. [default: 1]
    #[arg(long = "patches-since", value_name = "MONTHS")]
    patches_since: Option<u32>,
    /// Selection: choose as of this time (RFC 3339) instead of now, for a selection that does not
    /// change with the day an image is baked.
    #[arg(long = "as-of", value_name = "TIME")]
    as_of: Option<jiff::Timestamp>,
    /// Print the chosen `id@version` lines (with --json: a JSON list) and download nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Parallel downloads (default: 4 per core, at most 16).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print a JSON report of every step on stdout.
    #[arg(long)]
    json: bool,
    /// Also make each step ready to run: build Go steps into the store's build cache (one
    /// build at a time; see `activate --prepare`).
    #[arg(long)]
    prepare: bool,
    /// With --prepare: the `go` that builds Go steps; ignored without it (not `requires`:
    /// STEPMAN_GO in the environment would count as the flag).
    #[arg(long, value_name = "PATH", env = "STEPMAN_GO")]
    go: Option<PathBuf>,
}

impl PreloadArgs {
    /// The selection, when the flags or the absence of any other source ask for one.
    fn selection(&self) -> Option<Selection> {
        let flags = self.maintainer.is_some()
            || self.as_of.is_some()
            || self.majors.is_some()
            || self.minors.is_some()
            || self.minors_since.is_some()
            || self.patches_since.is_some();
        let named = !self.steps.is_empty() || self.from_file.is_some() || self.all_latest;
        if named && !flags {
            return None;
        }
        let d = Selection::default();
        Some(Selection {
            maintainer: match &self.maintainer {
                Some(m) if m.is_empty() => None,
                Some(m) => Some(m.clone()),
                None => d.maintainer,
            },
            majors: self.majors.unwrap_or(d.majors),
            minors: self.minors.unwrap_or(d.minors),
            minors_since_months: self.minors_since.unwrap_or(d.minors_since_months),
            patches_since_months: self.patches_since.unwrap_or(d.patches_since_months),
        })
    }
}

fn read_list(f: &PathBuf) -> anyhow::Result<Vec<Request>> {
    let lines: Vec<String> = if f.as_os_str() == "-" {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        std::fs::read_to_string(f)
            .with_context(|| format!("read {}", f.display()))?
            .lines()
            .map(String::from)
            .collect()
    };
    Ok(lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Request::parse)
        .collect())
}

pub(crate) fn run(cli: &crate::Cli, a: &PreloadArgs) -> anyhow::Result<ExitCode> {
    let c = super::steplib::collection(&a.collection)?;
    let refresh = super::lookup(false)?.refresh;
    let net = super::remote_net(cli, cli.net()?)?;
    if a.push && net.remote.is_none() {
        return Err(super::CouldNotRun(
            "--push needs a remote tier: --remote URL or STEPMAN_REMOTE (and not --offline)".into(),
        )
        .into());
    }
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let mut requests: Vec<Request> = a.steps.iter().map(|s| Request::parse(s)).collect();
    if let Some(f) = &a.from_file {
        requests.extend(read_list(f)?);
    }
    if a.all_latest {
        requests.extend(preload::all_latest(&store, &c, &net)?);
    }
    if let Some(sel) = a.selection() {
        let now = a.as_of.map_or_else(SystemTime::now, SystemTime::from);
        requests.extend(preload::select(&store, &c, &net, &sel, now)?);
    }
    let mut seen = std::collections::HashSet::new();
    requests.retain(|r| seen.insert(r.clone()));
    if a.dry_run {
        if a.json {
            let steps: Vec<_> = requests
                .iter()
                .map(|r| serde_json::json!({ "id": r.id, "version": r.constraint }))
                .collect();
            let doc = serde_json::json!({ "collection": c.uri, "steps": steps });
            super::outln!("{}", serde_json::to_string(&doc)?);
        } else {
            for r in &requests {
                super::outln!("{r}");
            }
        }
        crate::ui::note!("preload: {} step versions chosen (dry run)", requests.len());
        return Ok(ExitCode::SUCCESS);
    }
    if requests.is_empty() {
        crate::ui::note!("preload: the selection chose no step versions");
        return Ok(ExitCode::SUCCESS);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let jobs = a.jobs.unwrap_or((cores * 4).min(16)).max(1);

    // Progress: the bars on a terminal (set up by `cli.net()`), else a line per step.
    let mut net = net;
    if !crate::ui::shown() {
        net.progress = std::sync::Arc::new(crate::ui::StepLines);
    }
    let started = Instant::now();
    let prepare = a.prepare.then(|| stepman::activate::PrepareOptions {
        go: stepman::toolkit::go::Choice {
            explicit: a.go.clone().filter(|p| !p.as_os_str().is_empty()),
        },
        precompiled: stepman::activate::Precompiled::Skip,
    });
    let opts = preload::Options {
        jobs,
        refresh,
        prepare: prepare.as_ref(),
    };
    let outcomes = preload::preload(&store, &c, &requests, &opts, &net);
    crate::ui::clear();
    super::flush_remote(&store, &net);
    let outcomes = outcomes?;

    if a.push
        && let Some(remote) = net.remote.as_deref()
    {
        let ok: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Downloaded | Status::Cached))
            .collect();
        // Each step's source, then (with --prepare) the builds the fleet may share.
        let names: Vec<_> = ok
            .iter()
            .filter_map(|o| stepman::Name::new(&c.alias, &o.id, o.version.as_deref()?).ok())
            .chain(ok.iter().filter_map(|o| o.shared_build.clone()))
            .collect();
        let pushed = remote.push(&store, &names);
        let failed = super::report_pushed(&pushed);
        crate::ui::note!(
            "preload: {} steps pushed to the remote, {failed} failed",
            pushed.len() - failed
        );
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    if a.json {
        super::outln!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "collection": c.uri, "steps": outcomes }))?
        );
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == Status::Failed)
        .collect();
    crate::ui::note!(
        "preload: {} steps: {} downloaded, {} already cached, {} failed{}; {} received in {:.1}s",
        outcomes.len(),
        count(Status::Downloaded),
        count(Status::Cached),
        failed.len(),
        match count(Status::Cancelled) {
            0 => String::new(),
            n => format!(", {n} cancelled"),
        },
        HumanBytes(net.received.load(Ordering::Relaxed)),
        started.elapsed().as_secs_f64(),
    );
    for o in &failed {
        eprintln!(
            "  failed {}@{}: {}",
            o.id,
            o.constraint,
            o.error.as_deref().unwrap_or("")
        );
    }
    Ok(if net.cancelled() {
        eprintln!("preload: stopped by a signal; finished steps are kept, nothing partial is left");
        ExitCode::from(130)
    } else if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
