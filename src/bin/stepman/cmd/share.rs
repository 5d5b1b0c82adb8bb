//! `stepman share`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use stepman::share::{self, CreateOptions, Existing, Select, Tool};

/// Share a step in a StepLib: start, create, audit, finish (without a command: the guide).
///
/// Each `create` works in its own clone of your fork (`$STEPMAN_HOME/share/<id>-<tag>/`) on the
/// branch `<id>-<tag>`, so shares of different steps at once, or in two terminals, never see
/// each other's files; the share state (`$STEPMAN_HOME/share.json`) is changed under a lock and
/// replaced atomically. Nothing prompts: flags decide.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  stepman share start -c https://github.com/me/bitrise-steplib.git && stepman share create --tag 1.0.0 --git https://github.com/me/steps-my-step.git && stepman share finish"
)]
pub(crate) struct ShareArgs {
    #[command(subcommand)]
    cmd: Option<ShareCmd>,
    /// Name the bitrise CLI (`bitrise …`) in guides and messages, as when it calls stepman.
    #[arg(long, global = true)]
    toolmode: bool,
}

#[derive(Debug, Subcommand)]
enum ShareCmd {
    /// Record your fork of the StepLib for the next `create`s.
    #[command(
        after_help = "Example:\n  stepman share start -c https://github.com/me/bitrise-steplib.git"
    )]
    Start {
        /// Your fork's git URL.
        #[arg(short = 'c', long = "collection", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        collection: String,
    },
    /// Add a version of your step to a clone of your fork, on the branch <id>-<tag>.
    #[command(
        after_help = "Example:\n  stepman share create --tag 1.0.0 --git https://github.com/me/steps-my-step.git --stepid my-step"
    )]
    Create {
        /// The version tag in the step's repository (X.Y.Z).
        #[arg(long)]
        tag: String,
        /// The step's git repository.
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        git: String,
        /// The step's id [default: the repository's name].
        #[arg(long = "stepid")]
        stepid: Option<String>,
        /// Share this step.yml instead of the repository's.
        #[arg(long = "stepyml-override", value_name = "PATH")]
        stepyml_override: Option<PathBuf>,
        /// Replace a share of the same step and tag that is in progress (else it is refused).
        #[arg(long)]
        overwrite: bool,
    },
    /// Audit the shared step.yml as a StepLib pull request needs (its tag cloned).
    #[command(after_help = "Example:\n  stepman share audit --stepid my-step")]
    Audit {
        #[command(flatten)]
        which: Which,
    },
    /// Commit `<id> <tag>` and push the branch <id>-<tag> to your fork.
    #[command(after_help = "Example:\n  stepman share finish --stepid my-step")]
    Finish {
        #[command(flatten)]
        which: Which,
    },
}

/// Which share: the only one in progress, or this step's.
#[derive(Debug, Args)]
struct Which {
    /// The step's id (needed when several shares are in progress).
    #[arg(long = "stepid")]
    stepid: Option<String>,
    /// The tag (needed when one step has several shares in progress).
    #[arg(long)]
    tag: Option<String>,
}

impl Which {
    fn select(&self) -> Select {
        Select {
            step_id: self.stepid.clone(),
            tag: self.tag.clone(),
        }
    }
}

pub(crate) fn run(cli: &crate::Cli, a: &ShareArgs) -> anyhow::Result<ExitCode> {
    let tool = if a.toolmode {
        Tool::Bitrise
    } else {
        Tool::Stepman
    };
    let n = tool.name();
    let Some(cmd) = &a.cmd else {
        super::out_bytes(share::guide(tool).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    let home = cli.home()?;
    let net = cli.net()?;
    match cmd {
        ShareCmd::Start { collection } => {
            share::start(&home, collection, &net)?;
            eprintln!(
                "share: fork {collection} recorded\n\nNext, call $ {n} share create --tag \
                 [step-version-tag] --git [step-git-uri].git --stepid [step-id]"
            );
        }
        ShareCmd::Create {
            tag,
            git,
            stepid,
            stepyml_override,
            overwrite,
        } => {
            let store = super::open_rw(cli)?;
            let o = CreateOptions {
                tag: tag.clone(),
                git: git.clone(),
                step_id: stepid.clone(),
                stepyml_override: stepyml_override.clone(),
                existing: if *overwrite {
                    Existing::Replace
                } else {
                    Existing::Refuse
                },
                tool,
            };
            let s = share::create(&store, &home, &o, &net)?;
            super::outln!("{}", s.step_yml().display());
            eprintln!(
                "share: your Step ({}@{}) is added on branch {} of {}\n\nReview it, then call \
                 $ {n} share finish{}",
                s.step_id,
                s.step_tag,
                s.branch(),
                s.clone.display(),
                format_args!(" --stepid {}", s.step_id)
            );
        }
        ShareCmd::Audit { which } => {
            let store = super::open_rw(cli)?;
            let r = share::audit(&store, &home, &which.select(), tool, &net)?;
            if r.passed() {
                super::outln!("[OK] {}", r.subject);
                eprintln!("share: the step is valid\n\nNext, call $ {n} share finish");
            } else {
                for f in &r.failures {
                    super::outln!("[FAILED] {}: {f}", r.subject);
                }
                return Ok(ExitCode::from(1));
            }
        }
        ShareCmd::Finish { which } => {
            let s = share::finish(&home, &which.select(), tool, &net)?;
            eprintln!(
                "share: pushed branch {} to your fork {}\n\nThe only remaining thing is to \
                 create a Pull Request in the original StepLib repository.",
                s.branch(),
                s.collection
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
