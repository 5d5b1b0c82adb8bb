//! One module per subcommand.

pub(crate) mod activate;
pub(crate) mod audit;
pub(crate) mod collections;
pub(crate) mod completions;
pub(crate) mod delete;
pub(crate) mod download;
pub(crate) mod export_spec;
pub(crate) mod fsck;
pub(crate) mod gc;
pub(crate) mod legacy_view;
pub(crate) mod list_cached;
pub(crate) mod man;
pub(crate) mod preload;
pub(crate) mod remote;
pub(crate) mod setup;
pub(crate) mod share;
pub(crate) mod step_info;
pub(crate) mod step_list;
pub(crate) mod steplib;
pub(crate) mod store;
pub(crate) mod toolkit;
pub(crate) mod update;
pub(crate) mod version;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Marks an error that means "the command could not run at all" (exit 2).
#[derive(Debug)]
pub(crate) struct CouldNotRun(pub String);

impl fmt::Display for CouldNotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CouldNotRun {}

/// Set once stdout's reader has gone (`EPIPE`): nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Marks an error that means "stdout's reader went away" (`stepman … | head -1`): the command
/// ends quietly, with exit 0, since everything it had to do before printing is done.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line of data to stdout (what `outln!` expands to). Once the reader has closed
/// the pipe, this and every later line are dropped without a word, and the command finishes
/// with its own exit status; any other write error is an error.
pub(crate) fn out_line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("write to stdout")),
    }
}

/// Writes `bytes` (a generated document: a completion script, a man page) to stdout as they are,
/// with [`out_line`]'s handling of a closed pipe.
pub(crate) fn out_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("write to stdout")),
    }
}

/// Whether `e` says stdout's reader has gone.
pub(crate) fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// `println!` for data on stdout, through [`out_line`]: `outln!("{x}")` in a function that
/// returns `anyhow::Result`.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cmd::out_line(format_args!($($t)*))?
    };
}
pub(crate) use outln;

/// Makes SIGINT and SIGTERM set `flag` instead of killing the process, for commands that stop
/// cleanly by polling it (the library's cancellation points). Signals that arrive after the
/// first only set the flag again.
pub(crate) fn stop_on_signals(
    flag: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|e| anyhow::anyhow!("installing the handler of signal {sig}: {e}"))?;
    }
    Ok(())
}

/// `e` in the context `<verb> <object>`, or just `<verb>` when the error names `named` already
/// (the library's errors about a collection start with its URI, one about a destination names
/// it): a URI or a path appears once per message.
pub(crate) fn context_once(
    e: stepman::Error,
    verb: &str,
    object: &str,
    named: &str,
) -> anyhow::Error {
    let msg = e.to_string();
    // As a word of its own (`d` is not named by `…/dest`).
    let said = msg.match_indices(named).any(|(i, _)| {
        let before = msg[..i].chars().next_back();
        let after = msg[i + named.len()..].chars().next();
        before.is_none_or(|c| c == ' ') && after.is_none_or(|c| matches!(c, ' ' | ':' | ';' | ','))
    });
    let e = anyhow::Error::new(e);
    if said {
        e.context(verb.to_string())
    } else {
        e.context(format!("{verb} {object}"))
    }
}

/// The read-only stores layered under the writable one.
fn lower(cli: &crate::Cli) -> anyhow::Result<Vec<stepman::Store>> {
    let mut out = Vec::new();
    for home in cli
        .read_only_stores
        .iter()
        .filter(|h| !h.is_empty())
        .map(std::path::Path::new)
    {
        match stepman::Store::open_existing(home)? {
            Some(s) => out.push(s),
            None => log::warn!(
                "read-only store {}: no store there; ignored",
                home.display()
            ),
        }
    }
    Ok(out)
}

/// `net` with the fleet's remote tier when one is configured (`--remote`, `STEPMAN_REMOTE`) and
/// the network may be used. A setting it does not take is bad usage; a remote that cannot be
/// opened is a warning (steps come from their origin).
pub(crate) fn remote_net(
    cli: &crate::Cli,
    mut net: stepman::fetch::NetConfig,
) -> anyhow::Result<stepman::fetch::NetConfig> {
    let settings =
        stepman::remote::from_env(cli.remote.as_deref()).map_err(|e| CouldNotRun(e.to_string()))?;
    if let Some(settings) = settings
        && !net.offline
    {
        match stepman::remote::Remote::open(settings) {
            Ok(r) => net.remote = Some(std::sync::Arc::new(r)),
            Err(e @ stepman::Error::BadSetting { .. }) => {
                return Err(CouldNotRun(e.to_string()).into());
            }
            Err(e) => log::warn!("{}; steps come from their origin", e.describe()),
        }
    }
    Ok(net)
}

/// Uploads to the remote tier what this command downloaded from the origin (after its work is
/// done); a failed upload is a warning, never a failure of the command.
pub(crate) fn flush_remote(store: &stepman::Store, net: &stepman::fetch::NetConfig) {
    let Some(remote) = net.remote.as_deref() else {
        return;
    };
    report_pushed(&remote.flush(store));
}

/// Logs each upload that did not go as it should; returns how many failed.
pub(crate) fn report_pushed(done: &[stepman::remote::Uploaded]) -> usize {
    let mut failed = 0;
    for u in done {
        match &u.outcome {
            stepman::remote::UploadOutcome::Uploaded => {
                log::info!("{}: uploaded to the remote", u.name)
            }
            stepman::remote::UploadOutcome::AlreadyThere => {}
            stepman::remote::UploadOutcome::Differs(there) => log::warn!(
                "{}: the remote names another tree ({there}) than this host's ({})",
                u.name,
                u.id
            ),
            stepman::remote::UploadOutcome::Failed(why) => {
                failed += 1;
                log::warn!("{}: not uploaded to the remote: {why}", u.name)
            }
        }
    }
    failed
}

/// Opens (creating if needed) the store for a command that writes.
pub(crate) fn open_rw(cli: &crate::Cli) -> anyhow::Result<stepman::Store> {
    let home = cli.home()?;
    // Every setting is read before the store is created: bad usage leaves nothing behind.
    let (durability, limits) = (cli.durability()?, limits()?);
    lookup(false)?;
    cli.net()?;
    Ok(stepman::Store::open(&home)?
        .with_durability(durability)
        .with_limits(limits)
        .with_lower(lower(cli)?))
}

/// How a command looks steps up: `--update` says what a miss does, `STEPMAN_STEPLIB_TTL` when a
/// floating constraint refreshes the collection first (an unreadable value is bad usage).
pub(crate) fn lookup(update: bool) -> anyhow::Result<stepman::activate::Lookup> {
    use stepman::activate::{Lookup, OnMiss, Refresh};
    let refresh = match std::env::var("STEPMAN_STEPLIB_TTL") {
        // Unset or empty: the default.
        Err(_) => Refresh::default(),
        Ok(v) if v.trim().is_empty() => Refresh::default(),
        Ok(v) => Refresh::parse(&v).ok_or_else(|| {
            CouldNotRun(format!(
                "STEPMAN_STEPLIB_TTL={v:?}: expected whole seconds or `off`"
            ))
        })?,
    };
    let on_miss = if update { OnMiss::Update } else { OnMiss::Fail };
    Ok(Lookup {
        on_miss,
        refresh,
        read: stepman::activate::Read::Definition,
    })
}

/// The ingest limits, from the environment (README: "What an import refuses").
fn limits() -> anyhow::Result<stepman::Limits> {
    stepman::Limits::from_env().map_err(|e| CouldNotRun(e.to_string()).into())
}

/// Opens the store for a command that only reads; `None` when there is no store yet (with
/// read-only stores layered under it, the writable one is created so they can be read).
pub(crate) fn open_ro(cli: &crate::Cli) -> anyhow::Result<Option<stepman::Store>> {
    let home = cli.home()?;
    let lower = lower(cli)?;
    let (durability, limits) = (cli.durability()?, limits()?);
    lookup(false)?;
    cli.net()?;
    match stepman::Store::open_existing(&home)? {
        Some(s) => Ok(Some(
            s.with_durability(durability)
                .with_limits(limits)
                .with_lower(lower),
        )),
        None if !lower.is_empty() => open_rw(cli).map(Some),
        None => Ok(None),
    }
}

// The step a command works on: `-c`, `-i`, `-v` and `-u`, as the old tool spells them
// (`download`, `activate`).
#[derive(Debug, clap::Args)]
pub(crate) struct StepArgs {
    /// The collection's URI (not needed for a `git::` or `path::` step; `git` and `path` make
    /// `-i` a repository URL or a directory, as in the old tool).
    #[arg(short = 'c', long = "collection", env = "STEPMAN_COLLECTION")]
    pub(crate) collection: Option<String>,
    /// Step id; or `git::URL@REF` (a repository at a branch, tag or commit) or `path::DIR`.
    #[arg(short = 'i', long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) id: String,
    /// Version constraint ("", X, X.Y, X.Y.Z, X.x.x, X.Y.x); with a git step, its branch, tag
    /// or commit.
    #[arg(short = 'v', long, default_value = "")]
    pub(crate) version: String,
    /// Update the collection if the version is not found.
    #[arg(short = 'u', long)]
    pub(crate) update: bool,
}

// `--prepare` and what goes with it (`download`, `activate`).
#[derive(Debug, clap::Args)]
pub(crate) struct PrepareArgs {
    /// Make the step ready to run: build a Go step's binary (once per source and Go toolchain,
    /// shared through the store) and report the command that runs the step.
    #[arg(long)]
    pub(crate) prepare: bool,
    /// With --prepare: the `go` that builds Go steps (else `go` on PATH if it is 1.22.12 or
    /// newer, else the store's Go toolkit); ignored without it.
    // Not `requires = "prepare"`: clap counts STEPMAN_GO in the environment as the flag given,
    // which made every command without --prepare bad usage where STEPMAN_GO is set.
    #[arg(long, value_name = "PATH", env = "STEPMAN_GO")]
    pub(crate) go: Option<std::path::PathBuf>,
    /// With --prepare: print the result as JSON
    /// (`{"toolkit", "run": [argv], "build": "cached"|"built"|"none", ...}`).
    #[arg(long, requires = "prepare")]
    pub(crate) json: bool,
}

impl PrepareArgs {
    pub(crate) fn options(
        &self,
        precompiled: stepman::activate::Precompiled,
    ) -> stepman::activate::PrepareOptions {
        stepman::activate::PrepareOptions {
            go: stepman::toolkit::go::Choice {
                explicit: self.go.clone().filter(|p| !p.as_os_str().is_empty()),
            },
            precompiled,
        }
    }

    /// Prints what `--prepare` did: JSON, or the run command as shell words.
    pub(crate) fn print(&self, p: &stepman::activate::Prepared) -> anyhow::Result<()> {
        if self.json {
            outln!("{}", serde_json::to_string(p)?);
        } else if !p.run.is_empty() {
            outln!("{}", shell_words(&p.run));
        }
        Ok(())
    }
}

/// `argv` as one line a POSIX shell reads back as the same words.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@+,".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl StepArgs {
    /// The step named by where it is (`git::URL@REF`, `path::DIR`, `-c git`, `-c path`), if
    /// it is one.
    pub(crate) fn step_ref(&self) -> Option<stepman::activate::StepRef> {
        stepman::activate::StepRef::from_parts(self.collection.as_deref(), &self.id, &self.version)
    }

    /// The collection (`-c`), parsed: required for a StepLib step.
    pub(crate) fn collection(&self) -> anyhow::Result<stepman::steplib::Collection> {
        let uri = self.collection.as_deref().ok_or_else(|| {
            CouldNotRun(
                "-c/--collection (or STEPMAN_COLLECTION) is required for a StepLib step".into(),
            )
        })?;
        steplib::collection(uri)
    }

    /// Picks the step version in collection `c` (parsed from `collection` before the store was
    /// opened), as `download` and `activate` do.
    pub(crate) fn resolve(
        &self,
        store: &stepman::Store,
        c: &stepman::steplib::Collection,
        net: &stepman::fetch::NetConfig,
    ) -> anyhow::Result<stepman::activate::Resolved> {
        Ok(stepman::activate::resolve(
            store,
            c,
            &self.id,
            &self.version,
            lookup(self.update)?,
            net,
        )?)
    }
}
