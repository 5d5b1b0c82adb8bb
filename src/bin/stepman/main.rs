//! The `stepman` command line: parses arguments, calls the library, prints, maps errors to exit
//! codes. Data goes to stdout, messages to stderr.
//!
//! Exit codes: 0 success; 1 the operation failed (or `fsck` found damage); 2 bad usage, or `fsck`
//! could not run.

#![forbid(unsafe_code)]

mod cmd;
mod deferred;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// A step manager for CI runners, built on a content-addressed store.
#[derive(Debug, Parser)]
#[command(
    name = "stepman",
    disable_version_flag = true,
    about,
    long_about = None,
    after_help = "Example:\n  stepman activate -c https://github.com/bitrise-io/bitrise-steplib.git -i git-clone -v 8 -p ./step"
)]
pub struct Cli {
    /// Store root (holds `store-v1/`) [env: STEPMAN_HOME] [default: ~/.stepman]. An empty value
    /// counts as unset.
    // The variables of the global options are read by `Cli::fill_from_env`, not by clap, which
    // would show every option set in the environment as given in its usage lines.
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL, value_parser = clap::builder::ValueParser::os_string())]
    home: Option<std::ffi::OsString>,

    /// Do not fsync ingested trees before publishing them (for throwaway stores only) [env:
    /// STEPMAN_NO_FSYNC: true/false/1/0/yes/no; empty counts as unset].
    #[arg(long, global = true, help_heading = GLOBAL)]
    no_fsync: bool,

    /// A read-only store (its `$STEPMAN_HOME`) layered under the writable one: names missing in
    /// the writable store are looked up here, in order; nothing is ever written to it. Repeat the
    /// flag, or set STEPMAN_READ_ONLY_STORES to a `:`-separated list.
    #[arg(
        long = "read-only-store",
        global = true,
        value_name = "DIR",
        help_heading = GLOBAL,
        value_parser = clap::builder::ValueParser::os_string()
    )]
    read_only_stores: Vec<std::ffi::OsString>,

    /// Never use the network (also BITRISE_OFFLINE_MODE=true).
    #[arg(long, global = true, help_heading = GLOBAL)]
    offline: bool,

    /// The fleet's shared remote tier: s3://bucket/prefix, gs://…, az://… or https://… (read
    /// only) [env: STEPMAN_REMOTE]. README: "Sharing a store across a fleet".
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    remote: Option<String>,

    /// Log level: trace, debug, info, warn or error (the old tool's `fatal` and `panic` mean
    /// error) [env: LOGLEVEL].
    /// Takes precedence over RUST_LOG; LOGLEVEL counts only when RUST_LOG is not set.
    #[arg(
        short = 'l',
        long,
        global = true,
        value_name = "LEVEL",
        help_heading = GLOBAL
    )]
    loglevel: Option<String>,

    /// Print only errors on stderr: no progress, no informational lines, log level `error`
    /// (wins over RUST_LOG and LOGLEVEL; not with --loglevel).
    #[arg(short = 'q', long, global = true, help_heading = GLOBAL)]
    quiet: bool,

    /// When to color help, errors and log lines: auto (when stderr is a terminal, unless
    /// NO_COLOR is set to anything but ""; CLICOLOR_FORCE forces it), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN", help_heading = GLOBAL)]
    color: ColorWhen,

    /// Print the version (also `-version`, as the bitrise CLI calls it, and `stepman version`).
    #[arg(short = 'v', long = "version")]
    version: bool,

    #[command(subcommand)]
    command: Option<Command>,

    /// Where `home` came from, for messages (set from the matches after parsing).
    #[arg(skip)]
    home_from: HomeFrom,
}

/// Where the store root given to [`Cli`] came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum HomeFrom {
    /// `--home DIR`.
    #[default]
    Flag,
    /// `STEPMAN_HOME`.
    Env,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorWhen {
    /// When stderr is a terminal, unless NO_COLOR is set; always with CLICOLOR_FORCE.
    Auto,
    /// Always, whatever NO_COLOR says.
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// The `--color` of the arguments, read before they are parsed (clap's own help and errors
    /// need it): the last one given before a `--`.
    fn of_args(args: &[std::ffi::OsString]) -> ColorWhen {
        let mut when = ColorWhen::Auto;
        let mut it = args.iter().skip(1).filter_map(|a| a.to_str());
        while let Some(a) = it.next() {
            let value = match a {
                "--" => break,
                "--color" => it.next(),
                _ => a.strip_prefix("--color="),
            };
            when = match value {
                Some("always") => ColorWhen::Always,
                Some("never") => ColorWhen::Never,
                Some("auto") => ColorWhen::Auto,
                _ => continue,
            };
        }
        when
    }

    /// What `auto` means here: NO_COLOR (not empty) turns color off, else CLICOLOR_FORCE (not
    /// empty, not `0`) turns it on, else color when stderr is a terminal.
    fn choice(self) -> clap::ColorChoice {
        let set = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        match self {
            ColorWhen::Always => clap::ColorChoice::Always,
            ColorWhen::Never => clap::ColorChoice::Never,
            ColorWhen::Auto if set("NO_COLOR").is_some() => clap::ColorChoice::Never,
            ColorWhen::Auto if set("CLICOLOR_FORCE").is_some_and(|v| v != "0") => {
                clap::ColorChoice::Always
            }
            ColorWhen::Auto => clap::ColorChoice::Auto,
        }
    }
}

/// The color choice of this process (`--color`, NO_COLOR, CLICOLOR_FORCE), set once in `main`.
static COLOR: std::sync::OnceLock<clap::ColorChoice> = std::sync::OnceLock::new();

/// The command line's definition, colored as `--color` says.
fn command() -> clap::Command {
    Cli::command().color(COLOR.get().copied().unwrap_or(clap::ColorChoice::Auto))
}

/// The subcommands. Each one's summary and description are its variant's doc comment here, not
/// its arguments' (`deferred`: those are built only for the subcommand that runs, and the
/// top-level help lists the summaries without building them).
#[derive(Debug, Subcommand)]
enum Command {
    /// Set up a StepLib collection.
    ///
    /// Set up a StepLib collection (git URL, `file://` URI or local path, or an HTTP(S) URL of a
    /// spec.json). Safe to run from many processes at once: the first does the work, the others
    /// wait for it.
    Setup(deferred::Deferred<cmd::setup::SetupArgs>),
    /// Regenerate one collection or all.
    ///
    /// Regenerate a collection (or all) from its source. Readers keep using the old spec until the
    /// new one is swapped in; the collection's cached steps are kept.
    Update(deferred::Deferred<cmd::update::UpdateArgs>),
    /// List the collections.
    ///
    /// List the collections set up in the store.
    Collections(deferred::Deferred<cmd::collections::CollectionsArgs>),
    /// Remove a collection.
    ///
    /// Remove a collection and its cached steps from the store. Safe while other processes activate
    /// from it; the space is reclaimed by the next `stepman gc`.
    Delete(deferred::Deferred<cmd::delete::DeleteArgs>),
    /// List a collection's steps.
    ///
    /// List the steps of a collection (set up first if it is not), or of every collection set up
    /// when `-c` is not given, as the old tool does: JSON (`{"steplib":URI,"steps":[ids]}`, one
    /// line per collection), or each step's title, id, latest version and summary.
    StepList(deferred::Deferred<cmd::step_list::StepListArgs>),
    /// Show a step version.
    ///
    /// Show a step version of a collection, of a local step directory (`--library path --id DIR`)
    /// or of a git repository (`--library git --id URL --version REF`), as the old tool does: JSON,
    /// or a few lines followed by the step.yml as it is written. Reads one small index entry, never
    /// the whole spec; needs no write access when the collection is set up.
    StepInfo(deferred::Deferred<cmd::step_info::StepInfoArgs>),
    /// Put a step version into the store.
    ///
    /// Put a step version's source into the store (nothing is copied anywhere).
    Download(deferred::Deferred<cmd::download::DownloadArgs>),
    /// Copy a step version into a working directory.
    ///
    /// Copy a step version into a working directory, downloading it into the store first if needed.
    /// The directory appears complete or not at all; the copy is yours to modify. PATH may be
    /// missing, an empty directory, or a tree an earlier activation made (recognised by the marker
    /// `.<name>.stepman.tree` beside it); anything else is refused and left as it is, unless
    /// `--replace` is given. Safe from many processes at once: one download, identical trees.
    Activate(deferred::Deferred<cmd::activate::ActivateArgs>),
    /// Write a collection's spec.json.
    ExportSpec(deferred::Deferred<cmd::export_spec::ExportSpecArgs>),
    /// Warm the store with many steps in parallel
    ///
    /// Warm the store with many step versions in parallel (for runner images). Safe while builds
    /// activate from the same store; never deletes or rewrites what is there. Every failure is
    /// reported at the end; exit 1 when any step failed, 130 when stopped by Ctrl-C or SIGTERM
    /// (finished steps stay, nothing partial is left).
    ///
    /// Without step arguments, --from-file or --all-latest, the versions are chosen like `bitrise
    /// steps preload` does: the latest patch of the latest --minors minors of the latest --majors
    /// majors, the latest patch of every minor published in the last --minors-since months, and every
    /// version published in the last --patches-since months (a month is 31 days), plus each step's
    /// latest version, of the steps of --maintainer without deprecate notes. Giving any of these
    /// flags adds that selection to the named steps. --dry-run prints what would be preloaded.
    #[command(verbatim_doc_comment)]
    Preload(deferred::Deferred<cmd::preload::PreloadArgs>),
    /// List a collection's step versions that are in the store.
    ///
    /// List the step versions of a collection that are in the store. Writes nothing.
    ListCached(deferred::Deferred<cmd::list_cached::ListCachedArgs>),
    /// Write the old tool's layout (what the bitrise CLI reads) from the store.
    ///
    /// Writes `routing.json` and `step_collections/<alias>/` (`collection/`, `spec/spec.json`,
    /// `spec/slim-spec.json`, `cache/<id>/<version>/` for every step version in the store) into the
    /// old tool's home, so that `bitrise run` finds the steps preloaded here, offline too. Every file
    /// and directory appears complete or not at all; what is there already and identical is left
    /// alone; a cached step that differs is refused (exit 1) unless --replace-differing. Run it
    /// before the bitrise CLI, never while it runs: the old code takes no lock.
    LegacyView(deferred::Deferred<cmd::legacy_view::LegacyViewArgs>),
    /// Check a step.yml, or every version of a StepLib, as a StepLib pull request needs.
    ///
    /// Without --before-pr, a step.yml's fields (title, summary and website not empty, timeout not
    /// negative, a title for every input and output, is_sensitive only with is_expand). With
    /// --before-pr, and for every version of a StepLib (-c), also its path
    /// (steps/<id>/<version>/step.yml), published_at, source.git (http(s), ending in .git) and
    /// source.commit, and a clone of the tag <version> that must check out exactly source.commit.
    /// Every failure is listed (one line each on stdout); exit 0 when all pass, 1 when any fails.
    Audit(deferred::Deferred<cmd::audit::AuditArgs>),
    /// Share a step in a StepLib: start, create, audit, finish (without a command: the guide).
    ///
    /// Each `create` works in its own clone of your fork (`$STEPMAN_HOME/share/<id>-<tag>/`) on the
    /// branch `<id>-<tag>`, so shares of different steps at once, or in two terminals, never see
    /// each other's files; the share state (`$STEPMAN_HOME/share.json`) is changed under a lock and
    /// replaced atomically. Nothing prompts: flags decide.
    // Not deferred: its own subcommands must be there when clap makes `help share …`.
    Share(cmd::share::ShareArgs),
    /// Plumbing: import, resolve and export store entries.
    #[command(
        subcommand,
        after_help = "Example:\n  stepman store import step.zip --name steplib/git-clone/8.5.1"
    )]
    Store(cmd::store::StoreCmd),
    /// The fleet's shared remote tier: its configuration, uploads and checks.
    #[command(
        subcommand,
        after_help = "Example:\n  stepman remote verify --remote s3://ci-steps/stepman"
    )]
    Remote(cmd::remote::RemoteCmd),
    /// Rehash every object and check every name; optionally repair.
    ///
    /// Exit status: 0 clean, 1 damage found (or repaired: the output says which), 2 could not run.
    Fsck(deferred::Deferred<cmd::fsck::FsckArgs>),
    /// Remove objects no name points at, and temp dirs whose owner died.
    ///
    /// Safe while other processes import, resolve and export.
    Gc(deferred::Deferred<cmd::gc::GcArgs>),
    /// Toolkits in the store: the Go toolchain that builds Go steps.
    #[command(subcommand, after_help = "Example:\n  stepman toolkit install go")]
    Toolkit(cmd::toolkit::ToolkitCmd),
    /// Print the version.
    ///
    /// Print the version as the old tool does: a bare semver line (what the bitrise CLI reads from
    /// `stepman -version`), or with `--full` also the platform, build number and commit.
    Version(deferred::Deferred<cmd::version::VersionArgs>),
    /// Print a shell completion script.
    ///
    /// Print the completion script for SHELL on stdout: every command, flag and value stepman
    /// knows. Load it in the shell's startup file or install it where the shell looks for
    /// completions (README: "Shell completions and man page").
    Completions(deferred::Deferred<cmd::completions::CompletionsArgs>),
    /// Print the man page.
    ///
    /// Print the man page (roff) of stepman on stdout, or with --output write one page per command
    /// into DIR: `stepman.1`, `stepman-activate.1`, `stepman-store-import.1`, … (each written
    /// atomically; DIR is created when missing).
    Man(deferred::Deferred<cmd::man::ManArgs>),
}

/// A variable's value, `None` when it is unset or empty.
fn env_var(k: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(k).filter(|v| !v.is_empty())
}

impl Cli {
    /// Fills in the global options from their variables where the command line did not give
    /// them (`STEPMAN_HOME`, `STEPMAN_READ_ONLY_STORES`; empty counts as unset);
    /// `STEPMAN_NO_FSYNC` is read by `durability`, `LOGLEVEL` by `init_logging`.
    fn fill_from_env(&mut self) {
        if self.home.as_ref().is_none_or(|h| h.is_empty())
            && let Some(h) = env_var("STEPMAN_HOME")
        {
            self.home = Some(h);
            self.home_from = HomeFrom::Env;
        }
        if self.read_only_stores.is_empty()
            && let Some(v) = env_var("STEPMAN_READ_ONLY_STORES")
        {
            self.read_only_stores = std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::into_os_string)
                .collect();
        }
    }

    /// The store root: `--home`, else `STEPMAN_HOME`, else `$HOME/.stepman`; an empty value
    /// counts as unset. Neither set, or a root (or `HOME`) that is there but no directory, is bad
    /// usage naming where the path came from.
    fn home(&self) -> anyhow::Result<PathBuf> {
        let not_a_dir = |whence: String| cmd::CouldNotRun(format!("{whence}: not a directory"));
        let is_non_dir = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| !m.is_dir());
        if let Some(h) = self
            .home
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
        {
            if is_non_dir(&h) {
                return Err(not_a_dir(match self.home_from {
                    HomeFrom::Flag => format!("--home {}", h.display()),
                    HomeFrom::Env => format!("STEPMAN_HOME={}", h.display()),
                })
                .into());
            }
            return Ok(h);
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                cmd::CouldNotRun(
                    "neither STEPMAN_HOME nor HOME is set (an empty value counts as unset): set \
                     STEPMAN_HOME or pass --home DIR"
                        .into(),
                )
            })?;
        let root = home.join(".stepman");
        if is_non_dir(&home) {
            return Err(not_a_dir(format!("HOME={}", home.display())).into());
        }
        if is_non_dir(&root) {
            return Err(not_a_dir(format!("{} (from HOME)", root.display())).into());
        }
        Ok(root)
    }

    /// The network settings from the environment (a value that cannot be read is bad usage),
    /// with `--offline`.
    fn net(&self) -> anyhow::Result<stepman::fetch::NetConfig> {
        let mut n =
            stepman::fetch::NetConfig::from_env().map_err(|e| cmd::CouldNotRun(e.to_string()))?;
        n.offline |= self.offline;
        n.progress = ui::reporter();
        Ok(n)
    }

    /// `--no-fsync` or `STEPMAN_NO_FSYNC` (a value it does not take is bad usage).
    fn durability(&self) -> anyhow::Result<stepman::Durability> {
        let from_env = stepman::settings::env_flag("STEPMAN_NO_FSYNC")
            .map_err(|e| cmd::CouldNotRun(e.to_string()))?;
        Ok(if self.no_fsync || from_env {
            stepman::Durability::NoSync
        } else {
            stepman::Durability::Sync
        })
    }
}

/// The arguments, with the old tool's one-dash `-version` (which the bitrise CLI runs) spelled
/// `--version`: clap would read it as `-v -e -r …`.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = std::env::args_os().collect();
    if let Some(a) = args.get_mut(1).filter(|a| *a == "-version") {
        *a = "--version".into();
    }
    args
}

/// The log filter: `error` with `--quiet`, else `--loglevel` given on the command line, else
/// `RUST_LOG`, else `LOGLEVEL`, else `warn`. A level that is not one of the old tool's is bad
/// usage naming where it came from, and so are `--quiet` and `--loglevel` given together.
fn init_logging(cli: &Cli) {
    let from_flag = cli.loglevel.is_some();
    if cli.quiet {
        if from_flag {
            command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "the argument '--quiet' cannot be used with '--loglevel <LEVEL>'",
                )
                .exit()
        }
        ui::set_quiet();
        env_logger::Builder::new()
            .parse_filters("error")
            .write_style(write_style())
            .format_timestamp(None)
            .format_target(false)
            .init();
        return;
    }
    let env_level = env_var("LOGLEVEL").map(|v| v.to_string_lossy().into_owned());
    let filter = match cli
        .loglevel
        .as_deref()
        .or(env_level.as_deref())
        .map(|l| (l, l.trim().to_ascii_lowercase()))
    {
        None => None,
        Some((_, l)) if matches!(l.as_str(), "trace" | "debug" | "info" | "warn" | "error") => {
            Some(l)
        }
        Some((_, l)) if l == "warning" => Some("warn".to_string()),
        Some((_, l)) if matches!(l.as_str(), "fatal" | "panic") => Some("error".to_string()),
        Some((raw, _)) => {
            let whence = if from_flag { "--loglevel" } else { "LOGLEVEL" };
            command()
                .error(
                    clap::error::ErrorKind::InvalidValue,
                    format!(
                        "invalid value '{raw}' for {whence}: expected trace, debug, info, warn or error"
                    ),
                )
                .exit()
        }
    };
    // LOGLEVEL gives way to RUST_LOG; the flag does not.
    let filter = filter.filter(|_| from_flag || std::env::var_os("RUST_LOG").is_none());
    let mut b = match filter {
        Some(f) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(&f);
            b
        }
        None => env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")),
    };
    if ui::shown() {
        b.target(env_logger::Target::Pipe(Box::new(ui::AboveBars)));
    }
    b.write_style(write_style())
        .format_timestamp(None)
        .format_target(false)
        .init();
}

/// The log lines' color, as `--color` says (`auto`: when stderr is a terminal; decided here,
/// not by env_logger, whose own reading of CLICOLOR_FORCE differs).
fn write_style() -> env_logger::WriteStyle {
    use std::io::IsTerminal;
    match COLOR.get() {
        Some(clap::ColorChoice::Always) => env_logger::WriteStyle::Always,
        Some(clap::ColorChoice::Never) => env_logger::WriteStyle::Never,
        _ if std::io::stderr().is_terminal() => env_logger::WriteStyle::Always,
        _ => env_logger::WriteStyle::Never,
    }
}

fn main() -> ExitCode {
    let args = args();
    let _ = COLOR.set(ColorWhen::of_args(&args).choice());
    let mut definition = command();
    let matches = definition
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|e| e.exit());
    // The definition is not used again, and freeing its tree of small allocations is about a
    // tenth of a cache-hit lookup's instructions: the process's exit frees it.
    std::mem::forget(definition);
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli.fill_from_env();
    init_logging(&cli);
    log::debug!("stepman {}", cmd::version::VERSION);
    // The version flag wins over a command given with it, as in the old tool.
    if cli.version {
        return finish(cmd::version::run(&cmd::version::VersionArgs::default()));
    }
    let Some(command) = &cli.command else {
        command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required (see --help)",
            )
            .exit()
    };
    let result = match command {
        Command::Version(a) => cmd::version::run(a),
        Command::Completions(a) => cmd::completions::run(a),
        Command::Man(a) => cmd::man::run(a),
        Command::Setup(a) => cmd::setup::run(&cli, a),
        Command::Update(a) => cmd::update::run(&cli, a),
        Command::Collections(a) => cmd::collections::run(&cli, a),
        Command::Delete(a) => cmd::delete::run(&cli, a),
        Command::StepList(a) => cmd::step_list::run(&cli, a),
        Command::StepInfo(a) => cmd::step_info::run(&cli, a),
        Command::Download(a) => cmd::download::run(&cli, a),
        Command::Activate(a) => cmd::activate::run(&cli, a),
        Command::ExportSpec(a) => cmd::export_spec::run(&cli, a),
        Command::Preload(a) => cmd::preload::run(&cli, a),
        Command::ListCached(a) => cmd::list_cached::run(&cli, a),
        Command::LegacyView(a) => cmd::legacy_view::run(&cli, a),
        Command::Audit(a) => cmd::audit::run(&cli, a),
        Command::Share(a) => cmd::share::run(&cli, a),
        Command::Store(c) => cmd::store::run(&cli, c),
        Command::Remote(c) => cmd::remote::run(&cli, c),
        Command::Fsck(a) => cmd::fsck::run(&cli, a),
        Command::Gc(a) => cmd::gc::run(&cli, a),
        Command::Toolkit(c) => cmd::toolkit::run(&cli, c),
    };
    finish(result)
}

/// Maps a command's result to the exit status (README: exit codes).
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    ui::clear();
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to say, nothing failed.
        Err(e) if cmd::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stepman: {e:#}");
            let cancelled = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<stepman::Error>(),
                    Some(stepman::Error::Cancelled)
                )
            });
            // A setting the library read late (STEPMAN_GO_DOWNLOAD_BASE, say) is bad usage too.
            let bad_setting = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<stepman::Error>(),
                    Some(stepman::Error::BadSetting { .. })
                )
            });
            if cancelled {
                ExitCode::from(130)
            } else if bad_setting || e.downcast_ref::<cmd::CouldNotRun>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
