//! StepLibs written into temp dirs (`steplib.yml`, `step.yml`, local StepLibs), git
//! repositories with a tag per version and a `git daemon` serving them on loopback.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::*;

/// A local StepLib at `lib` with step `s` in each of `versions`, each a zip (relative
/// `archives/` download location) whose `step.sh` is `echo <version>`.
pub(crate) fn local_steplib(lib: &Path, versions: &[&str]) {
    for v in versions {
        fs::create_dir_all(lib.join(format!("steps/s/{v}"))).unwrap();
        fs::write(lib.join(format!("steps/s/{v}/step.yml")), "title: S\n").unwrap();
        fs::create_dir_all(lib.join(format!("archives/s/{v}"))).unwrap();
        fs::write(
            lib.join(format!("archives/s/{v}/step.zip")),
            zip_of_script(format!("echo {v}\n").as_bytes()),
        )
        .unwrap();
    }
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.0.0\nsteplib_source: t\ndownload_locations:\n  - type: zip\n    src: archives/\n",
    )
    .unwrap();
}

/// Writes `steplib.yml` into `dir` with the given `(type, src)` download locations.
pub(crate) fn write_steplib_yml(dir: &Path, locations: &[(&str, &str)]) {
    fs::create_dir_all(dir.join("steps")).unwrap();
    let mut y = String::from(
        "format_version: 1.0.0\nsteplib_source: https://example.invalid/steplib.git\n\
         download_locations:\n",
    );
    for (kind, src) in locations {
        y.push_str(&format!("  - type: {kind}\n    src: \"{src}\"\n"));
    }
    fs::write(dir.join("steplib.yml"), y).unwrap();
}

/// A step.yml with a title, and `source` when given as `(git, commit)`.
pub(crate) fn step_yml(title: &str, source: Option<(&str, &str)>) -> String {
    let mut y = format!(
        "title: \"{title}\"\nsummary: A step made by the scenario tests\n\
         website: https://example.invalid\ntoolkit:\n  bash:\n    entry_file: step.sh\n\
         inputs:\n  - greeting: hello\n    opts:\n      title: Greeting\n"
    );
    if let Some((git, commit)) = source {
        y.push_str(&format!(
            "source:\n  git: \"{git}\"\n  commit: \"{commit}\"\n"
        ));
    }
    y
}

/// Writes `steps/<id>/<version>/step.yml` (and a `step-info.yml` for the group).
pub(crate) fn write_step(dir: &Path, id: &str, version: &str, yml: &str) {
    let g = dir.join("steps").join(id);
    fs::create_dir_all(g.join(version)).unwrap();
    fs::write(g.join("step-info.yml"), "maintainer: scenario-tests\n").unwrap();
    fs::write(g.join(version).join("step.yml"), yml).unwrap();
}

/// Runs `git <args>` in `dir` with a fixed identity and dates; returns its stdout, trimmed.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_AUTHOR_NAME", "scenario")
        .env("GIT_AUTHOR_EMAIL", "scenario@example.invalid")
        .env("GIT_COMMITTER_NAME", "scenario")
        .env("GIT_COMMITTER_EMAIL", "scenario@example.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository made by [`git_repo`].
#[derive(Debug, Clone)]
pub(crate) struct GitRepo {
    /// `file:///…/repo.git`.
    pub url: String,
    /// The commit the tag points at (its tree is exactly the source tree).
    pub tagged: String,
    /// An earlier commit of the same repository (its tree has one extra file).
    pub earlier: String,
}

/// Creates `<work>/repo.git` (bare) with two commits: an earlier one holding `src` plus
/// `OLD-FILE`, and the tagged one holding exactly `src` (tag `tag`).
pub(crate) fn git_repo(work: &Path, src: &Path, tag: &str) -> GitRepo {
    let wt = work.join("worktree");
    fs::create_dir_all(&wt).unwrap();
    git(&wt, &["init", "-q"]);
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&wt)
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(wt.join("OLD-FILE"), "only in the earlier commit\n").unwrap();
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-q", "-m", "earlier"]);
    let earlier = git(&wt, &["rev-parse", "HEAD"]);
    git(&wt, &["rm", "-q", "OLD-FILE"]);
    git(&wt, &["commit", "-q", "-m", "release"]);
    git(&wt, &["tag", tag]);
    let tagged = git(&wt, &["rev-parse", &format!("{tag}^{{commit}}")]);
    let bare = work.join("repo.git");
    git(
        work,
        &["clone", "-q", "--bare", wt.to_str().unwrap(), "repo.git"],
    );
    GitRepo {
        url: format!("file://{}", bare.display()),
        tagged,
        earlier,
    }
}

/// `PATH` with `dir` first (where a test's `git` wrapper is found before the real one).
pub(crate) fn path_with_first(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The path of the `git` on `PATH` (what a wrapper of it runs).
pub(crate) fn real_git() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!real.is_empty(), "git not found in PATH");
    real
}

/// A directory holding a `git` wrapper that logs every invocation's arguments to `log` and
/// runs the real git; put it first in `PATH` to count clones.
pub(crate) fn git_wrapper(dir: &Path, log: &Path) -> PathBuf {
    let real = real_git();
    fs::create_dir_all(dir).unwrap();
    let w = dir.join("git");
    fs::write(
        &w,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_path_buf()
}

/// A `git://127.0.0.1:<port>/` server of the bare repositories under a directory: one thread
/// accepts, and each connection is answered by `git daemon --inetd` on that socket (no port race,
/// nothing but loopback). Stops accepting when dropped.
pub(crate) struct GitDaemon {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl GitDaemon {
    /// Serves every repository under `base` (`git://…/<name>.git` is `<base>/<name>.git`).
    pub(crate) fn start(base: &Path) -> GitDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let base = base.to_path_buf();
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Ok(out) = conn.try_clone() else { continue };
                let child = Command::new("git")
                    .arg("daemon")
                    .arg("--inetd")
                    .arg("--export-all")
                    .arg(format!("--base-path={}", base.display()))
                    .stdin(std::os::fd::OwnedFd::from(conn))
                    .stdout(std::os::fd::OwnedFd::from(out))
                    .stderr(std::process::Stdio::null())
                    .spawn();
                if let Ok(mut c) = child {
                    thread::spawn(move || {
                        let _ = c.wait();
                    });
                }
            }
        });
        GitDaemon {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.addr)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
            let _ = a.join();
        }
    }
}

/// Commits the tree `src` (symlinks kept as symlinks) into a new bare repository
/// `<work>/<name>` and returns its path.
pub(crate) fn git_bare_of(work: &Path, src: &Path, name: &str) -> PathBuf {
    git(src, &["init", "-q"]);
    git(src, &["add", "-A"]);
    git(src, &["commit", "-q", "-m", "steplib"]);
    git(
        work,
        &["clone", "-q", "--bare", src.to_str().unwrap(), name],
    );
    work.join(name)
}

/// A local StepLib at `lib` with one step, `hello@1.0.0` (title `Hello`), and no download
/// locations.
pub(crate) fn hello_steplib(lib: &Path) {
    fs::create_dir_all(lib.join("steps/hello/1.0.0")).unwrap();
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.0.0\nsteplib_source: local\n",
    )
    .unwrap();
    fs::write(lib.join("steps/hello/1.0.0/step.yml"), "title: Hello\n").unwrap();
}

/// The real StepLib slice `../shared/steplib-sample` (its canonical path), which CI has and a
/// user's clone does not: `None`, with a line saying `test` is skipped, when it is absent.
pub(crate) fn steplib_sample(test: &str) -> Option<PathBuf> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/steplib-sample");
    if !sample.join("steplib.yml").is_file() {
        eprintln!("skipping {test}: {} is absent", sample.display());
        return None;
    }
    Some(fs::canonicalize(&sample).expect("canonical path of the StepLib sample"))
}
