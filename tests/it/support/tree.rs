//! Deterministic trees and their comparison, temp dirs and a seeded RNG.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

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

/// The tests' deterministic generator: `Rng::with_seed(seed)` always gives the same numbers, so
/// the same seed always gives the same tree (fastrand's wyrand, seeded; never its thread-local
/// generator, which is seeded at random).
pub(crate) use fastrand::Rng;

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
    let mut rng = Rng::with_seed(seed);
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
        let sub = match rng.u64(..4) {
            0 => String::new(),
            1 => format!("d{}/", rng.u64(..6)),
            2 => format!("d{}/e{}/", rng.u64(..6), rng.u64(..3)),
            _ => format!("d{}/e{}/f{}/", rng.u64(..6), rng.u64(..3), rng.u64(..2)),
        };
        fs::create_dir_all(dir.join(&sub)).unwrap();
        let path = dir.join(format!("{sub}file-{i}.dat"));
        buf.resize(SIZES[rng.usize(..SIZES.len())], 0);
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

pub(crate) fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// `root` and every entry below it, sorted; symlinks are listed, not followed.
pub(crate) fn paths_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        if m.is_dir() {
            let rd = fs::read_dir(&p).unwrap_or_else(|e| panic!("read dir {}: {e}", p.display()));
            stack.extend(rd.map(|e| e.unwrap().path()));
        }
        out.push(p);
    }
    out.sort();
    out
}

/// Trees depend on the seed only: the same seed gives byte-identical trees (two generators,
/// two directories), another seed a different one.
#[test]
fn trees_depend_on_the_seed_only() {
    let t = TestDir::new();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    assert_eq!(make_tree(&a, 42, 40), make_tree(&b, 42, 40));
    diff_trees(&a, &b).unwrap();
    make_tree(&c, 43, 40);
    assert!(
        diff_trees(&a, &c).is_err(),
        "seeds 42 and 43 gave the same tree"
    );
}
