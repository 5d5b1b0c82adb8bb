//! The one launcher: the `stepman` binary the tests run, its store environment, output and
//! exit checks, launches held at a gate, and runs as an unprivileged user.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `stepman` binary cargo built for these tests (`STEPMAN_TEST_BIN` overrides it: a test
/// that reruns itself as another user points it at a copy that user can run).
pub(crate) fn bin() -> PathBuf {
    std::env::var_os("STEPMAN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stepman")))
}

/// Sets the environment every test process gets: the store root, no fsync (these tests do not
/// test durability), and a fixed log level so a user's `RUST_LOG` cannot change the output.
pub(crate) fn store_env(cmd: &mut Command, home: &Path) {
    cmd.env("STEPMAN_HOME", home)
        .env("STEPMAN_NO_FSYNC", "1")
        .env("RUST_LOG", "warn")
        .env("STEPMAN", bin())
        .stdin(Stdio::null());
}

/// The output's stderr as text, for assertion messages.
pub(crate) fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `stepman <args>` against the store under `home`.
pub(crate) fn stepman<I, S>(home: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin());
    cmd.args(args);
    store_env(&mut cmd, home);
    cmd
}

/// `stepman store export <name> <dest>` against the store under `home`.
pub(crate) fn export_cmd(home: &Path, name: &str, dest: &Path) -> Command {
    stepman(
        home,
        [
            OsStr::new("store"),
            OsStr::new("export"),
            OsStr::new(name),
            dest.as_os_str(),
        ],
    )
}

/// Runs a command to completion, capturing its output.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout, trimmed.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `stepman store import <src> [--name <name>]`, which must succeed; returns the object id.
pub(crate) fn import(home: &Path, src: &Path, name: Option<&str>) -> String {
    let mut cmd = stepman(
        home,
        [OsStr::new("store"), OsStr::new("import"), src.as_os_str()],
    );
    if let Some(n) = name {
        cmd.args(["--name", n]);
    }
    let id = run_ok(&mut cmd);
    assert!(is_object_id(&id), "import printed {id:?}, not an object id");
    id
}

/// True for 64 lowercase hex digits.
pub(crate) fn is_object_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A shell command (`sh -c <script> sh <args>...`) with the store environment, whose script
/// first waits for one line on stdin: spawn many of them, then [`release`] them together so they
/// really start at once. The script reaches the binary as `"$STEPMAN"`.
pub(crate) fn gated_shell<I, S>(home: &Path, script: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("read _gate; {script}"))
        .arg("sh")
        .args(args);
    store_env(&mut cmd, home);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `stepman <args>` behind a start gate (see [`gated_shell`]).
pub(crate) fn gated_stepman<I, S>(home: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    gated_shell(home, "exec \"$STEPMAN\" \"$@\"", args)
}

/// Opens the start gate of every child spawned from a gated command.
pub(crate) fn release(children: &mut [Child]) {
    let mut stdins: Vec<_> = children.iter_mut().filter_map(|c| c.stdin.take()).collect();
    for s in &mut stdins {
        s.write_all(b"go\n").expect("open the start gate");
    }
    drop(stdins);
}

/// True when `strace` is installed and may trace here; otherwise says why the test is skipped.
pub(crate) fn strace_usable(test: &str) -> bool {
    static USABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = USABLE.get_or_init(|| {
        match Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=none",
                "--",
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Err(e) => Err(format!("strace is not installed ({e})")),
            Ok(o) if !o.status.success() => Err(format!(
                "strace cannot trace here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(_) => Ok(()),
        }
    });
    match r {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// True when running as root with `setpriv` (to run the binary as `nobody`); otherwise says why
/// the test is skipped.
pub(crate) fn root_with_setpriv(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !setpriv {
        eprintln!("skipping {test}: needs root and setpriv to run the binary as another user");
    }
    root && setpriv
}

/// The uid and gid of `nobody`, the user the tests switch to with `setpriv`.
pub(crate) const NOBODY: u32 = 65534;

/// `setpriv` set up to run what follows as `nobody` (no supplementary groups), from `/`.
pub(crate) fn nobody() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ])
    .current_dir("/");
    cmd
}

/// `stepman <args>` as `nobody` against the store under `home`, not yet started.
pub(crate) fn nobody_stepman<I, S>(home: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = nobody();
    cmd.arg(bin()).args(args);
    store_env(&mut cmd, home);
    cmd
}

/// Runs `stepman <args>` as `nobody` against the store under `home`.
pub(crate) fn as_nobody(home: &Path, args: &[&str]) -> Output {
    output(&mut nobody_stepman(home, args))
}

/// Runs `stepman <args>` against the store under `home`, capturing its output.
pub(crate) fn run(home: &Path, args: &[&str]) -> Output {
    output(&mut stepman(home, args))
}

/// An exit status with both outputs, for assertion messages.
pub(crate) fn describe(o: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Panics unless `o` (the output of `what`) is a success; returns its stdout, trimmed.
pub(crate) fn ok_stdout(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", describe(o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The arguments of `stepman activate -c <lib> -i <id> -v <version> -p <dest>`.
pub(crate) fn activate_args<'a>(
    lib: &'a str,
    id: &'a str,
    version: &'a str,
    dest: &'a Path,
) -> Vec<&'a str> {
    vec![
        "activate",
        "-c",
        lib,
        "-i",
        id,
        "-v",
        version,
        "-p",
        dest.to_str().expect("a UTF-8 destination"),
    ]
}

/// Reads `r` to its end on a thread of its own (so a full pipe never blocks the child writing
/// it); the thread returns what it read.
pub(crate) fn drain(
    mut r: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Runs `cmd` (`what`, for messages) to its end with its output piped and drained as it comes;
/// kills it and fails when it is still running after `limit` (a hang is a bug).
pub(crate) fn run_within(cmd: &mut Command, limit: std::time::Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what} ({cmd:?}): {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let end = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?} (hung), killed; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("the stdout reader"),
        stderr: err.join().expect("the stderr reader"),
    }
}
