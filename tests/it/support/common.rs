//! Helpers shared by the integration tests that drive the real `stepman` binary.
//!
//! Everything here is generic: spawning the binary against a store, generating deterministic
//! trees, packing them, comparing trees and checking a store with `fsck`. Not every test file
//! uses every helper.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
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

/// The entries of `dir` that are export staging dirs or their lock files (`.stepman-` in the
/// name), sorted; none when `dir` cannot be read.
pub(crate) fn staging_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".stepman-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
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

/// A small deterministic generator (SplitMix64): the same seed always gives the same tree.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with generated bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What [`make_tree`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeStats {
    /// Regular files.
    pub files: usize,
    /// Bytes of file content.
    pub bytes: u64,
}

/// File sizes the generator picks from: empty, tiny, around a page, and tens of KiB.
const SIZES: [usize; 10] = [0, 1, 17, 300, 1_000, 4_096, 9_000, 20_000, 33_000, 64_000];

/// Writes a deterministic tree of `files` regular files (`files >= 1`) of mixed sizes under
/// `dir` (created if missing): files spread over nested directories, `bin/run.sh` and every
/// 13th file executable, and two symlinks (to a file and to a directory, both inside the tree).
/// The same `(seed, files)` always gives byte-identical trees; different seeds give different
/// trees.
pub(crate) fn make_tree(dir: &Path, seed: u64, files: usize) -> TreeStats {
    assert!(files >= 1, "a tree needs at least one file");
    let mut rng = Rng::new(seed);
    fs::create_dir_all(dir.join("bin")).unwrap();
    let run = dir.join("bin/run.sh");
    fs::write(&run, format!("#!/bin/sh\necho tree {seed}\n")).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    let mut stats = TreeStats {
        files: 1,
        bytes: fs::metadata(&run).unwrap().len(),
    };
    let mut buf = Vec::new();
    for i in 1..files {
        let sub = match rng.below(4) {
            0 => String::new(),
            1 => format!("d{}/", rng.below(6)),
            2 => format!("d{}/e{}/", rng.below(6), rng.below(3)),
            _ => format!("d{}/e{}/f{}/", rng.below(6), rng.below(3), rng.below(2)),
        };
        fs::create_dir_all(dir.join(&sub)).unwrap();
        let path = dir.join(format!("{sub}file-{i}.dat"));
        buf.resize(SIZES[rng.below(SIZES.len() as u64) as usize], 0);
        rng.fill(&mut buf);
        fs::write(&path, &buf).unwrap();
        let mode = if i % 13 == 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        stats.files += 1;
        stats.bytes += buf.len() as u64;
    }
    fs::create_dir_all(dir.join("d0")).unwrap();
    symlink("bin/run.sh", dir.join("run-link")).unwrap();
    symlink("../d0", dir.join("bin/d0-link")).unwrap();
    stats
}

/// Packs the contents of `dir` into the tar.gz `out` with the `tar` command.
pub(crate) fn tar_gz(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -czf {} failed: {st}", out.display());
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File { exec: bool, len: u64 },
    Symlink(PathBuf),
}

fn listing(root: &Path) -> Result<BTreeMap<PathBuf, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = fs::read_dir(&dir).map_err(|e| format!("read dir {}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("read dir {}: {e}", dir.display()))?;
            let r = rel.join(entry.file_name());
            let p = root.join(&r);
            let meta =
                fs::symlink_metadata(&p).map_err(|e| format!("stat {}: {e}", p.display()))?;
            let ft = meta.file_type();
            let e = if ft.is_dir() {
                stack.push(r.clone());
                Entry::Dir
            } else if ft.is_symlink() {
                Entry::Symlink(
                    fs::read_link(&p).map_err(|e| format!("read link {}: {e}", p.display()))?,
                )
            } else if ft.is_file() {
                Entry::File {
                    exec: meta.permissions().mode() & 0o111 != 0,
                    len: meta.len(),
                }
            } else {
                return Err(format!("{}: not a file, directory or symlink", p.display()));
            };
            out.insert(r, e);
        }
    }
    Ok(out)
}

/// Compares two trees: the same entries, kinds, executable bits, file contents (byte for byte)
/// and symlink targets. Timestamps, owners and other mode bits are ignored. `Err` describes the
/// first difference.
pub(crate) fn diff_trees(a: &Path, b: &Path) -> Result<(), String> {
    let la = listing(a)?;
    let lb = listing(b)?;
    for (rel, ea) in &la {
        match lb.get(rel) {
            None => return Err(format!("{} is missing from {}", rel.display(), b.display())),
            Some(eb) if eb != ea => {
                return Err(format!("{}: {ea:?} versus {eb:?}", rel.display()));
            }
            Some(_) => {}
        }
        if let Entry::File { .. } = ea {
            let (pa, pb) = (a.join(rel), b.join(rel));
            let ca = fs::read(&pa).map_err(|e| format!("read {}: {e}", pa.display()))?;
            let cb = fs::read(&pb).map_err(|e| format!("read {}: {e}", pb.display()))?;
            if ca != cb {
                return Err(format!("{}: contents differ", rel.display()));
            }
        }
    }
    if let Some(rel) = lb.keys().find(|k| !la.contains_key(*k)) {
        return Err(format!("{} is extra in {}", rel.display(), b.display()));
    }
    Ok(())
}

/// Panics unless [`diff_trees`] finds the trees identical.
pub(crate) fn assert_same_tree(a: &Path, b: &Path) {
    if let Err(e) = diff_trees(a, b) {
        panic!("{} and {} differ: {e}", a.display(), b.display());
    }
}

/// A temp dir for one test, removed with everything in it when dropped, including the
/// read-only directories a store holds (which `tempfile` alone cannot remove as non-root).
#[derive(Debug)]
pub(crate) struct TestDir(tempfile::TempDir);

impl TestDir {
    /// A fresh, empty temp dir.
    pub(crate) fn new() -> TestDir {
        TestDir(tempfile::tempdir().expect("create a temp dir"))
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for TestDir {
    fn default() -> TestDir {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        make_writable(self.0.path());
    }
}

/// Gives the owner write access to every directory under `path` (not following symlinks).
pub(crate) fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// The store directory under `home`.
pub(crate) fn store_root(home: &Path) -> PathBuf {
    home.join("store-v1")
}

/// Every directory under `store-v1/objects/*/`, sorted.
pub(crate) fn object_dirs(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(store_root(home).join("objects")) else {
        return out;
    };
    for shard in shards {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for o in fs::read_dir(&shard).unwrap() {
            let o = o.unwrap();
            if o.file_type().unwrap().is_dir() {
                out.push(o.path());
            }
        }
    }
    out.sort();
    out
}

/// The ids (directory names) of [`object_dirs`].
pub(crate) fn object_ids(home: &Path) -> Vec<String> {
    object_dirs(home)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// What `stepman fsck --json` said.
#[derive(Debug)]
pub(crate) struct Fsck {
    /// Its exit code: 0 clean, 1 damage, 2 could not run.
    pub code: i32,
    /// The parsed report.
    pub report: serde_json::Value,
    /// Its stderr.
    pub stderr: String,
}

impl Fsck {
    /// The reported problems.
    pub(crate) fn problems(&self) -> &[serde_json::Value] {
        self.report["problems"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }
}

/// Runs `stepman fsck --json` (plus `extra` arguments) and parses its report.
pub(crate) fn fsck_json(home: &Path, extra: &[&str]) -> Fsck {
    let mut args = vec!["fsck", "--json"];
    args.extend_from_slice(extra);
    let out = output(&mut stepman(home, args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck --json (exit {code}) printed no JSON report ({e})\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Fsck {
        code,
        report,
        stderr,
    }
}

/// Panics unless `stepman fsck --json` exits 0 and reports no problem.
pub(crate) fn assert_fsck_clean(home: &Path) -> Fsck {
    let f = fsck_json(home, &[]);
    assert!(
        f.code == 0 && f.problems().is_empty(),
        "fsck is not clean (exit {}): {:#}\nstderr: {}",
        f.code,
        f.report["problems"],
        f.stderr
    );
    f
}

/// A zip holding one executable `step.sh` with `body`.
pub(crate) fn zip_of_script(body: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file(
        "step.sh",
        zip::write::SimpleFileOptions::default().unix_permissions(0o755),
    )
    .unwrap();
    z.write_all(body).unwrap();
    z.finish().unwrap().into_inner()
}

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
