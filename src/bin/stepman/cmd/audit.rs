//! `stepman audit`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stepman::audit::{self, Audited, Depth};

/// Check a step.yml, or every version of a StepLib, as a StepLib pull request needs.
///
/// Without --before-pr, a step.yml's fields (title, summary and website not empty, timeout not
/// negative, a title for every input and output, is_sensitive only with is_expand). With
/// --before-pr, and for every version of a StepLib (-c), also its path
/// (steps/<id>/<version>/step.yml), published_at, source.git (http(s), ending in .git) and
/// source.commit, and a clone of the tag <version> that must check out exactly source.commit.
/// Every failure is listed (one line each on stdout); exit 0 when all pass, 1 when any fails.
#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("what").required(true).args(["collection", "step_yml"])),
    after_help = "Examples:\n  stepman audit --step-yml steps/my-step/1.0.0/step.yml --before-pr\n  stepman audit -c https://github.com/bitrise-io/bitrise-steplib.git"
)]
pub(crate) struct AuditArgs {
    /// Audit every version of this StepLib (set up first if it is not).
    #[arg(short = 'c', long = "collection")]
    collection: Option<String>,
    /// Audit this step.yml.
    #[arg(long = "step-yml", value_name = "PATH")]
    step_yml: Option<PathBuf>,
    /// With --step-yml: the checks of a StepLib pull request too (always done with -c).
    #[arg(long = "before-pr")]
    before_pr: bool,
    /// With -c: how many versions are audited at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cli: &crate::Cli, a: &AuditArgs) -> anyhow::Result<ExitCode> {
    let c = a
        .collection
        .as_deref()
        .map(super::steplib::collection)
        .transpose()?;
    let net = cli.net()?;
    super::stop_on_signals(&net.cancel)?;
    let store = super::open_rw(cli)?.with_interrupt(net.cancel.clone());
    let audited: Vec<Audited> = match (&c, &a.step_yml) {
        (Some(c), _) => {
            if a.before_pr {
                log::warn!("--before-pr is for --step-yml: a StepLib's versions get every check");
            }
            let o = stepman::activate::open_or_setup(&store, c, &net)?;
            store.read_locked(|| audit::audit_collection(&store, c, &o, a.jobs.into(), &net))?
        }
        (None, Some(path)) => {
            let depth = if a.before_pr {
                Depth::BeforePr
            } else {
                Depth::Fields
            };
            vec![audit::audit_step_yml(&store, path, depth, &net)?]
        }
        (None, None) => {
            return Err(super::CouldNotRun("audit needs -c URI or --step-yml PATH".into()).into());
        }
    };
    let failed = audited.iter().filter(|x| !x.passed()).count();
    if a.json {
        super::outln!("{}", json!({"audited": audited, "failed": failed}));
    } else {
        for x in &audited {
            if x.passed() {
                super::outln!("[OK] {}", x.subject);
            }
            for f in &x.failures {
                super::outln!("[FAILED] {}: {f}", x.subject);
            }
        }
    }
    if failed == 0 {
        eprintln!("audit: {} passed", count(audited.len()));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("audit: {} of {} failed", failed, count(audited.len()));
        Ok(ExitCode::from(1))
    }
}

fn count(n: usize) -> String {
    match n {
        1 => "1 step version".into(),
        n => format!("{n} step versions"),
    }
}
