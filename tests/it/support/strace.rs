//! `stepman` under `strace`: the one builder of traced runs (kill at the N-th call, hold a call,
//! count calls) and the wait for a traced process to reach a chosen call.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{bin, store_env};

/// How long a traced process may take to reach the call a test waits for.
const REACH: Duration = Duration::from_secs(30);

/// A `strace … -- stepman ARGS` command line, built up by its options. The store environment is
/// the tests' ([`store_env`]); stdout and stderr are piped.
pub(crate) struct Traced {
    cmd: Command,
}

impl Traced {
    /// strace, quiet, writing its log to `log` (`/dev/null` when only the injection matters).
    pub(crate) fn new(home: &Path, log: &Path) -> Self {
        let mut cmd = Command::new("strace");
        cmd.arg("-qq").arg("-o").arg(log);
        store_env(&mut cmd, home);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Traced { cmd }
    }

    /// Trace the children too (`-f`): git, the helpers a step build runs.
    pub(crate) fn follow(mut self) -> Self {
        self.cmd.arg("-f");
        self
    }

    /// Only calls on `path` (`-P`).
    pub(crate) fn on(mut self, path: &Path) -> Self {
        self.cmd.arg("-P").arg(path);
        self
    }

    /// Any other strace option, as is.
    pub(crate) fn opt(mut self, args: &[&str]) -> Self {
        self.cmd.args(args);
        self
    }

    /// `-e trace=CALLS`.
    pub(crate) fn trace(mut self, calls: &str) -> Self {
        self.cmd.arg("-e").arg(format!("trace={calls}"));
        self
    }

    /// `-e inject=SPEC` (`openat:delay_enter=6000000:when=2`, `mkdir:signal=SIGKILL:when=3`).
    pub(crate) fn inject(mut self, spec: &str) -> Self {
        self.cmd.arg("-e").arg(format!("inject={spec}"));
        self
    }

    /// Holds each traced call (of `calls`, the `when`-th one on) for 6 s on entering it:
    /// long enough for a test to play a race while the process waits.
    pub(crate) fn hold(self, calls: &str, when: u32) -> Self {
        let spec = format!("{calls}:delay_enter=6000000:when={when}");
        self.trace(calls).inject(&spec)
    }

    /// With a variable of stepman's environment set (or replaced).
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Without a variable of stepman's environment.
    pub(crate) fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// The command: `strace OPTIONS -- stepman ARGS`.
    pub(crate) fn stepman<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.arg("--").arg(bin()).args(args);
        self.cmd
    }
}

/// A traced process running while its test plays a race.
pub(crate) struct Held {
    child: Child,
    log: PathBuf,
}

impl Held {
    /// Starts `cmd` (a [`Traced`] command writing its log to `log`).
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Self {
        let child = cmd.spawn().expect("start strace");
        Held {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Waits until the log says the process reached the call the test waits for (`reached` of
    /// the log's text; strace writes a call when it enters it, so a held call is there while the
    /// process waits in it). Panics naming `what` if that takes longer than 30 s.
    pub(crate) fn wait_until(&self, what: &str, reached: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !fs::read_to_string(&self.log).is_ok_and(|l| reached(&l)) {
            assert!(start.elapsed() < REACH, "the traced process never {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to end: its output and strace's whole log.
    pub(crate) fn finish(self) -> (Output, String) {
        let o = self.child.wait_with_output().expect("wait for strace");
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        (o, log)
    }
}

/// True when a call of the log was held and returned ENOENT: the race was played and the thing
/// the held call looked for was gone when it ran.
pub(crate) fn held_and_missed(log: &str) -> bool {
    log.lines()
        .any(|x| x.contains("(DELAYED)") && x.contains("ENOENT"))
}
