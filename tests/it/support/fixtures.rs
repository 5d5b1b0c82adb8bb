//! Fixtures for the scenario tests (`tests/scenarios.rs`): a loopback HTTP server that counts
//! requests per path and can serve slowly or stall mid-body, StepLibs written into temp dirs,
//! step archives (zip, tar.gz) and local git repositories with a tag per version.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------------------------

/// How a path is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `200` with the whole body, spread evenly over `delay` (20 chunks).
    Full {
        /// Time the body takes to send.
        delay: Duration,
    },
    /// `200` with the full Content-Length, half the body, then nothing until the server stops.
    HalfThenStall,
}

#[derive(Debug, Clone)]
struct Route {
    body: Arc<Vec<u8>>,
    mode: Mode,
}

#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    counts: Mutex<HashMap<String, usize>>,
    /// Number of `HalfThenStall` answers whose half body has been written.
    stalled: Mutex<usize>,
    stalled_cv: Condvar,
    stop: AtomicBool,
}

/// A small HTTP/1.1 server on `127.0.0.1:0`: one thread accepts, one thread per connection
/// answers `GET` with `Connection: close`. Unknown paths get `404`.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a free loopback port and starts serving.
    pub(crate) fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let _ = handle(conn, &s);
                });
            }
            // The listener is dropped here: the port refuses connections from now on.
        });
        Server {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` at `path` (which starts with `/`), replacing any earlier route.
    pub(crate) fn serve(&self, path: &str, body: Vec<u8>, mode: Mode) {
        self.shared.routes.lock().unwrap().insert(
            path.to_string(),
            Route {
                body: Arc::new(body),
                mode,
            },
        );
    }

    /// Changes how `path` is answered from now on.
    pub(crate) fn set_mode(&self, path: &str, mode: Mode) {
        let mut routes = self.shared.routes.lock().unwrap();
        routes.get_mut(path).expect("no such route").mode = mode;
    }

    /// Changes how every route is answered from now on.
    pub(crate) fn serve_all_mode(&self, mode: Mode) {
        for r in self.shared.routes.lock().unwrap().values_mut() {
            r.mode = mode;
        }
    }

    /// How many requests for `path` arrived (any method, any answer).
    pub(crate) fn count(&self, path: &str) -> usize {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every path requested, with its count.
    pub(crate) fn counts(&self) -> HashMap<String, usize> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Waits until `n` stalling answers have sent their half body; false on timeout.
    pub(crate) fn wait_stalled(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut got = self.shared.stalled.lock().unwrap();
        while *got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            got = self.shared.stalled_cv.wait_timeout(got, left).unwrap().0;
        }
        true
    }

    /// Stops accepting (the port is closed when this returns) and ends stalled answers.
    pub(crate) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            // Wake the acceptor so it sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
            let _ = a.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_request(conn: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let _method = parts.next();
    let target = parts.next().unwrap_or("/");
    Ok(target.split('?').next().unwrap_or(target).to_string())
}

fn handle(mut conn: TcpStream, s: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let path = read_request(&mut conn)?;
    *s.counts.lock().unwrap().entry(path.clone()).or_default() += 1;
    let route = s.routes.lock().unwrap().get(&path).cloned();
    let Some(route) = route else {
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return conn.shutdown(Shutdown::Both);
    };
    let body = &route.body;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    match route.mode {
        Mode::Full { delay } => {
            const CHUNKS: usize = 20;
            let step = body.len().div_ceil(CHUNKS).max(1);
            for (i, part) in body.chunks(step).enumerate() {
                if i > 0 && !delay.is_zero() {
                    thread::sleep(delay / CHUNKS as u32);
                }
                conn.write_all(part)?;
            }
        }
        Mode::HalfThenStall => {
            conn.write_all(&body[..body.len() / 2])?;
            conn.flush()?;
            *s.stalled.lock().unwrap() += 1;
            s.stalled_cv.notify_all();
            let until = Instant::now() + Duration::from_secs(60);
            while !s.stop.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    conn.flush()?;
    conn.shutdown(Shutdown::Both)
}

// ---------------------------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------------------------

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

/// Every entry under `root` (not `root` itself), as `(relative path, kind)`, sorted by path so
/// that parents come before their children.
pub(crate) fn walk(root: &Path) -> Vec<(PathBuf, Kind)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let ft = e.file_type().unwrap();
            let k = if ft.is_dir() {
                stack.push(r.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::File
            };
            out.push((r, k));
        }
    }
    out.sort();
    out
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// The tree `src` as a zip with unix modes and symlinks (deflated).
pub(crate) fn zip_tree(src: &Path) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    for (rel, kind) in walk(src) {
        let name = rel.to_str().unwrap();
        let p = src.join(&rel);
        match kind {
            Kind::Dir => z
                .add_directory(format!("{name}/"), opts.unix_permissions(0o755))
                .unwrap(),
            Kind::File => {
                z.start_file(name, opts.unix_permissions(mode_of(&p)))
                    .unwrap();
                z.write_all(&fs::read(&p).unwrap()).unwrap();
            }
            Kind::Symlink => {
                let t = fs::read_link(&p).unwrap();
                z.add_symlink(name, t.to_str().unwrap(), opts).unwrap();
            }
        }
    }
    z.finish().unwrap().into_inner()
}

/// The tree `src` as a tar.gz (`tar` + `flate2`), symlinks kept as symlinks.
pub(crate) fn targz_tree(src: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.follow_symlinks(false);
    for (rel, _) in walk(src) {
        b.append_path_with_name(src.join(&rel), &rel).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A zip of a small valid step plus one entry named `evil` (written as given, e.g. `../../x`).
pub(crate) fn zip_with_entry(evil: &str, marker: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default().system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    z.start_file("step.sh", opts.unix_permissions(0o755))
        .unwrap();
    z.write_all(b"#!/bin/sh\necho ok\n").unwrap();
    z.start_file(evil, opts.unix_permissions(0o644)).unwrap();
    z.write_all(marker).unwrap();
    z.finish().unwrap().into_inner()
}

/// A tar.gz of a small valid step plus one file entry whose raw header name is `evil` (the
/// `tar` crate's `set_path` refuses `..`, so the name is written into the header directly).
pub(crate) fn targz_with_entry(evil: &str, marker: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &[u8], data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        let f = &mut h.as_old_mut().name;
        assert!(name.len() < f.len());
        f.fill(0);
        f[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(b"step.sh", b"#!/bin/sh\necho ok\n", 0o755);
    add(evil.as_bytes(), marker, 0o644);
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// StepLibs
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// git
// ---------------------------------------------------------------------------------------------

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

/// A directory holding a `git` wrapper that logs every invocation's arguments to `log` and
/// runs the real git; put it first in `PATH` to count clones.
pub(crate) fn git_wrapper(dir: &Path, log: &Path) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!real.is_empty(), "git not found in PATH");
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
