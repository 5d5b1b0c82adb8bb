//! Hostile archives: every class of bad tar, tar.gz and zip input, built here
//! in memory and fed to the real binary with `stepman store import FILE --name r/x/1`.
//!
//! Every rejection case checks the same things (see [`Env::expect_rejected`]):
//! - the command exits non-zero with exactly one line on stderr naming the archive (and the entry,
//!   where there is one) and nothing on stdout;
//! - nothing was published: the only object is the good one imported first, `r/x/1` is unbound,
//!   and the store's temp area is empty;
//! - nothing was written outside the store: no path anywhere under the test's temp dir carries
//!   the sentinel [`MARK`] that every escaping entry name or symlink target holds;
//! - what was already there is untouched: `r/good/1` resolves to the same directory with the same
//!   files, modes and contents;
//! - `stepman fsck` exits 0.
//!
//! The positive cases show the other half: the same tree gives the same object id whatever form
//! it arrives in.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};
use zip::write::SimpleFileOptions;

/// Every entry name or symlink target that aims outside the tree contains this; after each case
/// no path under the test's temp dir may contain it.
const MARK: &str = "ESCAPE";

// ---------------------------------------------------------------------------------------------
// Peak-allocation tracking (for the header-size case, run in-process).

struct Counting;

thread_local! {
    static CUR: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(add: usize, sub: usize) {
    let _ = CUR.try_with(|c| {
        let v = c.get().saturating_add(add).saturating_sub(sub);
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: forwards every call to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        track(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        track(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        track(layout.size(), 0);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        track(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak of bytes this thread had allocated beyond what
/// it held when `f` started.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CUR.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(base))
}

// ---------------------------------------------------------------------------------------------
// The test environment.

/// A store with one good object bound to `r/good/1`, and a place to put archives.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    cwd: PathBuf,
    good_id: String,
    good_dir: PathBuf,
    good_snapshot: Vec<(String, u32, Vec<u8>)>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let home = root.join("home");
        // Commands run deep inside the temp dir, so that relative escapes land where we look.
        let cwd = root.join("cwd/a/b/c");
        fs::create_dir_all(&cwd).unwrap();
        fs::create_dir_all(root.join("in")).unwrap();
        let src = root.join("good-src");
        write_tree(&src, GOOD_TREE);
        let mut env = Env {
            _tmp: tmp,
            root,
            home,
            cwd,
            good_id: String::new(),
            good_dir: PathBuf::new(),
            good_snapshot: Vec::new(),
        };
        env.good_id = env.import_ok(&src, "r/good/1");
        env.good_dir = env.resolve("r/good/1").expect("good name resolves");
        env.good_snapshot = snapshot(&env.good_dir);
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        support::output(
            support::stepman(&self.home, args)
                .env_remove("RUST_LOG")
                .current_dir(&self.cwd),
        )
    }

    /// Writes `bytes` to a file named `name` in the input folder.
    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join("in").join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn import(&self, src: &Path, name: &str) -> Output {
        self.run(&["store", "import", src.to_str().unwrap(), "--name", name])
    }

    /// Imports `src` under `name`, expecting success; returns the object id.
    fn import_ok(&self, src: &Path, name: &str) -> String {
        let out = self.import(src, name);
        assert!(
            out.status.success(),
            "import of {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(id.len(), 64, "object id on stdout: {id:?}");
        id
    }

    fn resolve(&self, name: &str) -> Option<PathBuf> {
        let out = self.run(&["store", "resolve", name]);
        if out.status.success() {
            Some(PathBuf::from(
                String::from_utf8(out.stdout)
                    .unwrap()
                    .trim_end_matches('\n'),
            ))
        } else {
            assert_eq!(out.status.code(), Some(1), "resolve {name}: {out:?}");
            None
        }
    }

    fn store(&self) -> PathBuf {
        self.home.join("store-v1")
    }

    /// Every object directory in the store, as hex ids.
    fn objects(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for shard in fs::read_dir(self.store().join("objects")).unwrap() {
            for obj in fs::read_dir(shard.unwrap().path()).unwrap() {
                ids.push(obj.unwrap().file_name().into_string().unwrap());
            }
        }
        ids.sort();
        ids
    }

    fn fsck_clean(&self) {
        let out = self.run(&["fsck"]);
        assert!(
            out.status.success(),
            "fsck not clean: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Imports `bytes` (written as `file`), expects a rejection, and checks that nothing changed.
    /// `entry`: a piece of the offending entry's name the message must hold; `why`: words of
    /// which the message must hold at least one. Returns the error line.
    fn expect_rejected(
        &self,
        file: &str,
        bytes: &[u8],
        entry: Option<&str>,
        why: &[&str],
    ) -> String {
        let path = self.archive(file, bytes);
        let out = self.import(&path, "r/x/1");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{file} was accepted: id {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(out.stdout.is_empty(), "{file}: stdout {:?}", out.stdout);
        let line = stderr.trim_end_matches('\n');
        assert!(!line.is_empty(), "{file}: empty stderr");
        assert!(
            !line.contains('\n'),
            "{file}: more than one line:\n{stderr}"
        );
        assert!(
            line.len() < 2000,
            "{file}: error line is {} bytes",
            line.len()
        );
        assert!(
            line.contains(&path.display().to_string()),
            "{file}: error does not name the archive: {line}"
        );
        if let Some(e) = entry {
            assert!(
                line.contains(e),
                "{file}: error does not name {e:?}: {line}"
            );
        }
        if !why.is_empty() {
            let lower = line.to_lowercase();
            assert!(
                why.iter().any(|w| lower.contains(&w.to_lowercase())),
                "{file}: error says none of {why:?}: {line}"
            );
        }
        self.check_untouched();
        // Shown with `--nocapture`, to read the messages users get.
        eprintln!("{file}: {line}");
        line.to_string()
    }

    /// Nothing published, nothing left over, nothing outside, the good object intact, fsck clean.
    fn check_untouched(&self) {
        assert_eq!(
            self.objects(),
            vec![self.good_id.clone()],
            "objects changed"
        );
        assert_eq!(self.resolve("r/x/1"), None, "r/x/1 is bound");
        assert_eq!(self.resolve("r/good/1").as_ref(), Some(&self.good_dir));
        assert_eq!(
            snapshot(&self.good_dir),
            self.good_snapshot,
            "good object changed"
        );
        let leftovers: Vec<_> = fs::read_dir(self.store().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(leftovers.is_empty(), "temp area not empty: {leftovers:?}");
        let mut escaped = find_marked(&self.root);
        // Escapes deeper than the temp dir land in its ancestors (at worst in `/`).
        for dir in self.root.ancestors().skip(1) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().contains(MARK) {
                    escaped.push(e.path());
                }
            }
        }
        assert!(escaped.is_empty(), "written outside the store: {escaped:?}");
        self.fsck_clean();
    }

    /// Imports `bytes` (written as `file`), expects success, checks the store; returns the id.
    fn expect_accepted(&self, file: &str, bytes: &[u8]) -> String {
        let path = self.archive(file, bytes);
        let id = self.import_ok(&path, "r/x/1");
        assert!(self.objects().contains(&id));
        assert_eq!(snapshot(&self.good_dir), self.good_snapshot);
        self.fsck_clean();
        id
    }
}

/// Every path under `dir` whose name holds [`MARK`].
fn find_marked(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return found;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        if e.file_name().to_string_lossy().contains(MARK) {
            found.push(p.clone());
        }
        if e.file_type().unwrap().is_dir() {
            found.extend(find_marked(&p));
        }
    }
    found
}

/// (relative path, mode bits, contents or link target) of everything under `dir`, sorted.
fn snapshot(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    fn walk(top: &Path, dir: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((rel, 0, t.to_string_lossy().as_bytes().to_vec()));
            } else if m.is_dir() {
                out.push((rel, mode, Vec::new()));
                walk(top, &p, out);
            } else {
                out.push((rel, mode, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Trees and archive builders.

#[derive(Clone, Copy)]
enum E {
    D(&'static str),
    F(&'static str, &'static [u8], bool),
    L(&'static str, &'static str),
}

const GOOD_TREE: &[E] = &[
    E::D("good"),
    E::F("good/step.sh", b"#!/bin/bash\necho good\n", true),
    E::F("good/step.yml", b"title: good\n", false),
    E::L("good/link", "step.yml"),
];

/// The tree of the positive cases; it has an empty directory, an executable and a symlink.
const TREE: &[E] = &[
    E::D("bin"),
    E::F("bin/run.sh", b"#!/bin/sh\necho hi\n", true),
    E::F("README.md", b"hello\n", false),
    E::D("lib"),
    E::D("lib/a"),
    E::F("lib/a/b.txt", b"b\n", false),
    E::L("lib/link", "a/b.txt"),
    E::D("empty"),
    E::F("step.yml", b"title: t\nsummary: s\n", false),
];

fn write_tree(dir: &Path, tree: &[E]) {
    fs::create_dir_all(dir).unwrap();
    for e in tree {
        match *e {
            E::D(n) => fs::create_dir_all(dir.join(n)).unwrap(),
            E::F(n, data, exec) => {
                let p = dir.join(n);
                fs::write(&p, data).unwrap();
                let mode = if exec { 0o755 } else { 0o644 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            E::L(n, t) => symlink(t, dir.join(n)).unwrap(),
        }
    }
}

/// Writes `name` into the header's 100-byte name field as raw bytes (`set_path` refuses `..`).
fn raw_name(h: &mut Header, name: &[u8]) {
    let f = &mut h.as_old_mut().name;
    assert!(name.len() <= f.len(), "raw name too long");
    f.fill(0);
    f[..name.len()].copy_from_slice(name);
    h.set_cksum();
}

/// Writes `target` into the header's 100-byte link name field as raw bytes.
fn raw_link(h: &mut Header, target: &[u8]) {
    let f = &mut h.as_old_mut().linkname;
    assert!(target.len() <= f.len(), "raw link name too long");
    f.fill(0);
    f[..target.len()].copy_from_slice(target);
    h.set_cksum();
}

/// A GNU header with the given type, raw name, size and mode.
fn header(kind: EntryType, name: &[u8], size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_uid(1000);
    h.set_gid(1000);
    raw_name(&mut h, name);
    h
}

/// A tar under construction, entry by entry, with raw control over every header.
struct TarB(tar::Builder<Vec<u8>>);

impl TarB {
    fn new() -> TarB {
        TarB(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, h: &Header, data: &[u8]) -> &mut TarB {
        self.0.append(h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut TarB {
        self.file_mode(name.as_bytes(), data, 0o644)
    }

    fn file_mode(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut TarB {
        let h = header(EntryType::Regular, name, data.len() as u64, mode);
        self.entry(&h, data)
    }

    fn dir(&mut self, name: &str) -> &mut TarB {
        self.dir_mode(name, 0o755)
    }

    fn dir_mode(&mut self, name: &str, mode: u32) -> &mut TarB {
        let h = header(EntryType::Directory, name.as_bytes(), 0, mode);
        self.entry(&h, b"")
    }

    fn link(&mut self, kind: EntryType, name: &str, target: &str) -> &mut TarB {
        let mut h = header(kind, name.as_bytes(), 0, 0o777);
        raw_link(&mut h, target.as_bytes());
        self.entry(&h, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut TarB {
        self.link(EntryType::Symlink, name, target)
    }

    /// A PAX extended header ('x') with the given records, describing the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut TarB {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let h = header(
            EntryType::XHeader,
            b"./PaxHeaders/entry",
            data.len() as u64,
            0o644,
        );
        self.entry(&h, &data)
    }

    /// A GNU long-name ('L') or long-link ('K') entry describing the next entry.
    fn gnu_long(&mut self, kind: EntryType, value: &[u8]) -> &mut TarB {
        let mut data = value.to_vec();
        data.push(0);
        let h = header(kind, b"././@LongLink", data.len() as u64, 0o644);
        self.entry(&h, &data)
    }

    /// Appends raw bytes (headers without their data, garbage).
    fn raw(&mut self, bytes: &[u8]) -> &mut TarB {
        self.0.get_mut().write_all(bytes).unwrap();
        self
    }

    /// The archive with its end-of-archive marker.
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }

    /// The archive without its end-of-archive marker.
    fn unfinished(self) -> Vec<u8> {
        let mut b = self.0;
        std::mem::take(b.get_mut())
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// How [`tar_of`] lays a tree out.
#[derive(Clone, Copy)]
struct TarStyle {
    prefix: &'static str,
    dirs: bool,
    reverse: bool,
    mtime: u64,
    uid: u64,
    ustar: bool,
}

const PLAIN: TarStyle = TarStyle {
    prefix: "",
    dirs: true,
    reverse: false,
    mtime: 1_600_000_000,
    uid: 1000,
    ustar: false,
};

fn tar_of(tree: &[E], style: TarStyle) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut entries: Vec<E> = tree.to_vec();
    if style.reverse {
        entries.reverse();
    }
    for e in entries {
        let mut h = if style.ustar {
            Header::new_ustar()
        } else {
            Header::new_gnu()
        };
        h.set_mtime(style.mtime);
        h.set_uid(style.uid);
        h.set_gid(style.uid + 7);
        if !style.ustar {
            h.set_username(&format!("user{}", style.uid)).unwrap();
        }
        let (name, data): (String, &[u8]) = match e {
            E::D(n) => {
                if !style.dirs {
                    continue;
                }
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                (format!("{}{n}/", style.prefix), b"")
            }
            E::F(n, data, exec) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(if exec { 0o755 } else { 0o644 });
                (format!("{}{n}", style.prefix), data)
            }
            E::L(n, t) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_mode(0o777);
                raw_link(&mut h, t.as_bytes());
                (format!("{}{n}", style.prefix), b"")
            }
        };
        h.set_size(data.len() as u64);
        raw_name(&mut h, name.as_bytes());
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn zip_opts() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .system(zip::System::Unix)
}

fn zip_of(tree: &[E]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for e in tree {
        match *e {
            E::D(n) => z
                .add_directory(n, zip_opts().unix_permissions(0o755))
                .unwrap(),
            E::F(n, data, exec) => {
                let mode = if exec { 0o755 } else { 0o644 };
                z.start_file(n, zip_opts().unix_permissions(mode)).unwrap();
                z.write_all(data).unwrap();
            }
            E::L(n, t) => z.add_symlink(n, t, zip_opts()).unwrap(),
        }
    }
    z.finish().unwrap().into_inner()
}

/// A zip built by `f`.
fn zip_with(f: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    f(&mut z);
    z.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` in `bytes` by `to` (same length); panics if none.
fn patch(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(n > 0, "pattern not found");
    bytes
}

/// A small valid tar to start from in the corruption cases.
fn small_tar() -> Vec<u8> {
    let mut t = TarB::new();
    t.dir("d")
        .file("d/one.txt", &[b'1'; 3000])
        .file("d/two.txt", b"two\n");
    t.finish()
}

// ---------------------------------------------------------------------------------------------
// Positive cases: one tree, one id.

#[test]
fn same_tree_same_id_from_dir_tar_targz_and_zip() {
    let env = Env::new();
    let dir = env.root.join("tree");
    write_tree(&dir, TREE);
    let from_dir = env.import_ok(&dir, "r/dir/1");
    let tar = env.archive("tree.tar", &tar_of(TREE, PLAIN));
    let other = TarStyle {
        reverse: true,
        mtime: 1_234,
        uid: 0,
        ustar: true,
        ..PLAIN
    };
    let tgz = env.archive("tree.tar.gz", &gz(&tar_of(TREE, other)));
    let zip = env.archive("tree.zip", &zip_of(TREE));
    assert_eq!(env.import_ok(&tar, "r/tar/1"), from_dir, "tar");
    assert_eq!(env.import_ok(&tgz, "r/tgz/1"), from_dir, "tar.gz, reversed");
    assert_eq!(env.import_ok(&zip, "r/zip/1"), from_dir, "zip");
    // And the tree in the store is the tree we gave.
    let stored = env.resolve("r/zip/1").unwrap();
    let expect = env.root.join("expect");
    write_tree(&expect, TREE);
    let strip = |s: Vec<(String, u32, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        s.into_iter().map(|(p, _, c)| (p, c)).collect()
    };
    assert_eq!(strip(snapshot(&stored)), strip(snapshot(&expect)));
    assert_eq!(env.objects().len(), 2);
    env.fsck_clean();
}

#[test]
fn dot_slash_prefixed_tar_gives_the_same_id() {
    let env = Env::new();
    let plain = env.expect_accepted("plain.tar", &tar_of(TREE, PLAIN));
    let mut t = TarB::new();
    t.dir("./").dir(".");
    let mut bytes = t.unfinished();
    bytes.extend_from_slice(&tar_of(
        TREE,
        TarStyle {
            prefix: "./",
            ..PLAIN
        },
    ));
    let path = env.archive("dotslash.tar", &bytes);
    assert_eq!(env.import_ok(&path, "r/dot/1"), plain);
}

#[test]
fn tar_without_directory_entries_gives_the_same_id() {
    let tree: Vec<E> = TREE
        .iter()
        .copied()
        .filter(|e| !matches!(e, E::D("empty")))
        .collect();
    let env = Env::new();
    let with = env.expect_accepted("with-dirs.tar", &tar_of(&tree, PLAIN));
    let without = tar_of(
        &tree,
        TarStyle {
            dirs: false,
            ..PLAIN
        },
    );
    let path = env.archive("without-dirs.tar.gz", &gz(&without));
    assert_eq!(env.import_ok(&path, "r/nodirs/1"), with);
}

#[test]
fn setuid_setgid_sticky_bits_are_dropped() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir_mode("sticky", 0o1777)
        .file_mode(b"sticky/suid", b"#!/bin/sh\n", 0o4755)
        .file_mode(b"sgid", b"data\n", 0o2644)
        .file_mode(b"all", b"all\n", 0o7777);
    env.expect_accepted("setuid.tar", &t.finish());
    let dir = env.resolve("r/x/1").unwrap();
    let mode = |p: &str| {
        fs::symlink_metadata(dir.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("sticky"), 0o555);
    assert_eq!(mode("sticky/suid"), 0o555);
    assert_eq!(mode("sgid"), 0o444);
    assert_eq!(mode("all"), 0o555);
    // The same from a zip.
    let z = zip_with(|z| {
        z.start_file("suid", zip_opts().external_attributes(0o104755 << 16))
            .unwrap();
        z.write_all(b"#!/bin/sh\n").unwrap();
    });
    let p = env.archive("setuid.zip", &z);
    env.import_ok(&p, "r/x/2");
    let dir = env.resolve("r/x/2").unwrap();
    let m = fs::metadata(dir.join("suid")).unwrap().permissions().mode();
    assert_eq!(m & 0o7777, 0o555);
    env.fsck_clean();
}

// ---------------------------------------------------------------------------------------------
// `..` and absolute paths.

#[test]
fn tar_dotdot_entry_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("ok.txt", b"ok").file("../../ESCAPE-dotdot", b"x");
    env.expect_rejected("dotdot.tar", &t.finish(), Some("ESCAPE-dotdot"), &[".."]);
}

#[test]
fn tar_deep_dotdot_entry_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("a")
        .file("a/../../../../../../../../ESCAPE-deep", b"x");
    env.expect_rejected(
        "deep.tar.gz",
        &gz(&t.finish()),
        Some("ESCAPE-deep"),
        &[".."],
    );
}

#[test]
fn tar_dotdot_via_pax_path_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.pax(&[("path", b"../../ESCAPE-pax")])
        .file("innocent.txt", b"x");
    env.expect_rejected("pax.tar", &t.finish(), Some("ESCAPE-pax"), &[".."]);
}

#[test]
fn tar_dotdot_via_gnu_longname_is_rejected() {
    let env = Env::new();
    let long = format!("{}/../../../../ESCAPE-longname", "d".repeat(120));
    let mut t = TarB::new();
    t.gnu_long(EntryType::GNULongName, long.as_bytes())
        .file("short", b"x");
    env.expect_rejected(
        "longname.tar",
        &t.finish(),
        Some("ESCAPE-longname"),
        &[".."],
    );
}

#[test]
fn tar_dotdot_via_ustar_prefix_is_rejected() {
    let env = Env::new();
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    raw_name(&mut h, b"ESCAPE-prefix");
    let u = h.as_ustar_mut().unwrap();
    u.prefix[..5].copy_from_slice(b"../..");
    h.set_cksum();
    let mut t = TarB::new();
    t.entry(&h, b"x");
    env.expect_rejected("prefix.tar", &t.finish(), Some("ESCAPE-prefix"), &[".."]);
}

#[test]
fn tar_absolute_path_is_rejected() {
    let env = Env::new();
    let abs = format!("{}/ESCAPE-abs", env.root.display());
    let mut t = TarB::new();
    t.file("ok", b"ok").file_mode(abs.as_bytes(), b"x", 0o644);
    env.expect_rejected("abs.tar", &t.finish(), Some("ESCAPE-abs"), &["absolute"]);
}

#[test]
fn tar_absolute_path_via_pax_is_rejected() {
    let env = Env::new();
    let abs = format!("{}/ESCAPE-abspax", env.root.display());
    let mut t = TarB::new();
    t.pax(&[("path", abs.as_bytes())]).file("innocent", b"x");
    env.expect_rejected(
        "abspax.tar.gz",
        &gz(&t.finish()),
        Some("ESCAPE-abspax"),
        &["absolute"],
    );
}

#[test]
fn zip_dotdot_entry_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.start_file("ok.txt", zip_opts()).unwrap();
        z.write_all(b"ok").unwrap();
        z.start_file("../../../../ESCAPE-zipslip", zip_opts())
            .unwrap();
        z.write_all(b"x").unwrap();
    });
    env.expect_rejected("slip.zip", &z, Some("ESCAPE-zipslip"), &[".."]);
}

#[test]
fn zip_absolute_entry_is_rejected() {
    let env = Env::new();
    let abs = format!("{}/ESCAPE-zipabs", env.root.display());
    let z = zip_with(|z| {
        z.start_file(abs.as_str(), zip_opts()).unwrap();
        z.write_all(b"x").unwrap();
    });
    env.expect_rejected("abs.zip", &z, Some("ESCAPE-zipabs"), &["absolute"]);
}

#[test]
fn zip_backslash_dotdot_entry_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.start_file("..\\..\\ESCAPE-backslash", zip_opts())
            .unwrap();
        z.write_all(b"x").unwrap();
    });
    env.expect_rejected(
        "backslash.zip",
        &z,
        Some("ESCAPE-backslash"),
        &["backslash"],
    );
}

// ---------------------------------------------------------------------------------------------
// Symlinks.

#[test]
fn tar_symlink_with_absolute_target_is_rejected() {
    let env = Env::new();
    let target = format!("{}/ESCAPE-abs-target", env.root.display());
    let mut t = TarB::new();
    t.symlink("link", &target);
    env.expect_rejected(
        "symabs.tar",
        &t.finish(),
        Some("link"),
        &["absolute", "outside"],
    );
}

#[test]
fn tar_symlink_with_dotdot_target_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("d").symlink("d/link", "../../ESCAPE-up");
    env.expect_rejected("symup.tar", &t.finish(), Some("d/link"), &["outside"]);
}

#[test]
fn tar_symlink_chain_that_escapes_is_rejected() {
    // d/l1 -> ..           (the root: inside)
    // l2   -> d/l1/..      (looks like `d`, but resolves to the root's parent)
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("d")
        .symlink("d/l1", "..")
        .symlink("l2", "d/l1/../ESCAPE-chain");
    env.expect_rejected("chain.tar", &t.finish(), Some("l2"), &["outside"]);
}

#[test]
fn tar_symlink_chain_of_two_links_that_escapes_is_rejected() {
    // a/up -> ..      (inside)   b -> a/up/a/up/..  each hop looks inside, the last `..` leaves
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("a")
        .symlink("a/up", "..")
        .symlink("b", "a/up/a/up/../ESCAPE-chain2");
    env.expect_rejected("chain2.tar.gz", &gz(&t.finish()), Some("b"), &["outside"]);
}

#[test]
fn tar_symlink_to_a_link_with_absolute_target_is_rejected() {
    // `a -> b` and `b -> /...`: the absolute one is caught on its own, and `a` never passes.
    let env = Env::new();
    let abs = format!("{}/ESCAPE-via", env.root.display());
    let mut t = TarB::new();
    t.symlink("a", "b").symlink("b", &abs);
    env.expect_rejected("via.tar", &t.finish(), None, &["absolute", "outside"]);
}

#[test]
fn tar_symlink_target_via_pax_linkpath_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.pax(&[("linkpath", b"../../../ESCAPE-linkpath")])
        .symlink("link", "harmless");
    env.expect_rejected("linkpath.tar", &t.finish(), Some("link"), &["outside"]);
}

#[test]
fn tar_symlink_target_via_gnu_longlink_is_rejected() {
    let env = Env::new();
    // Over 100 bytes, so it needs the long-link record; four levels down, five up.
    let target = format!(
        "{}../../../../../ESCAPE-longlink",
        "long-directory-name/".repeat(4)
    );
    let mut t = TarB::new();
    t.gnu_long(EntryType::GNULongLink, target.as_bytes())
        .symlink("link", "harmless");
    env.expect_rejected("longlink.tar", &t.finish(), Some("link"), &["outside"]);
}

#[test]
fn tar_symlink_loop_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.symlink("a", "b/x").symlink("b", "a/y");
    env.expect_rejected("loop.tar", &t.finish(), None, &["outside", "loop"]);
}

#[test]
fn tar_entry_written_through_symlink_to_dir_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("sub").symlink("a", "sub").file("a/x", b"x");
    env.expect_rejected("through.tar", &t.finish(), Some("a/x"), &["symlink"]);
}

#[test]
fn tar_entry_written_through_symlink_to_parent_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.symlink("a", "..").file("a/ESCAPE-through", b"x");
    env.expect_rejected(
        "through-up.tar",
        &t.finish(),
        Some("a/ESCAPE-through"),
        &["symlink"],
    );
}

#[test]
fn tar_dir_entry_through_symlink_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.symlink("a", "..").dir("a/ESCAPE-dir/");
    env.expect_rejected(
        "dir-through.tar",
        &t.finish(),
        Some("a/ESCAPE-dir"),
        &["symlink"],
    );
}

#[test]
fn zip_symlink_pointing_outside_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.add_symlink("link", "../../../ESCAPE-zipsym", zip_opts())
            .unwrap();
    });
    env.expect_rejected("sym.zip", &z, Some("link"), &["outside"]);
}

#[test]
fn zip_symlink_with_absolute_target_is_rejected() {
    let env = Env::new();
    let abs = format!("{}/ESCAPE-zipsymabs", env.root.display());
    let z = zip_with(|z| {
        z.add_symlink("link", abs.as_str(), zip_opts()).unwrap();
    });
    env.expect_rejected("symabs.zip", &z, Some("link"), &["absolute", "outside"]);
}

#[test]
fn zip_entry_written_through_symlink_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.add_symlink("a", "..", zip_opts()).unwrap();
        z.start_file("a/ESCAPE-zipthrough", zip_opts()).unwrap();
        z.write_all(b"x").unwrap();
    });
    env.expect_rejected("through.zip", &z, Some("a/ESCAPE-zipthrough"), &["symlink"]);
}

// ---------------------------------------------------------------------------------------------
// Entry kinds that are not accepted.

#[test]
fn tar_hardlink_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("target", b"x")
        .link(EntryType::Link, "hard", "target");
    env.expect_rejected("hard.tar", &t.finish(), Some("hard"), &["hardlink"]);
}

#[test]
fn tar_hardlink_to_outside_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.link(EntryType::Link, "hard", "../../../../etc/ESCAPE-passwd");
    env.expect_rejected(
        "hard-out.tar.gz",
        &gz(&t.finish()),
        Some("hard"),
        &["hardlink"],
    );
}

#[test]
fn tar_char_device_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.entry(&header(EntryType::Char, b"dev/null", 0, 0o666), b"");
    env.expect_rejected("chr.tar", &t.finish(), Some("dev/null"), &["device"]);
}

#[test]
fn tar_block_device_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.entry(&header(EntryType::Block, b"sda", 0, 0o660), b"");
    env.expect_rejected("blk.tar", &t.finish(), Some("sda"), &["device"]);
}

#[test]
fn tar_fifo_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.entry(&header(EntryType::Fifo, b"pipe", 0, 0o644), b"");
    env.expect_rejected("fifo.tar", &t.finish(), Some("pipe"), &["fifo"]);
}

#[test]
fn tar_unknown_entry_types_are_rejected() {
    let env = Env::new();
    for (file, kind) in [
        ("weird.tar", b'Z'),
        ("volume.tar", b'V'),
        ("multivol.tar", b'M'),
    ] {
        let mut t = TarB::new();
        t.entry(&header(EntryType::new(kind), b"weird", 0, 0o644), b"");
        env.expect_rejected(file, &t.finish(), Some("weird"), &["unsupported"]);
    }
}

#[test]
fn tar_sparse_entry_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.entry(&header(EntryType::GNUSparse, b"sparse", 0, 0o644), b"");
    env.expect_rejected("sparse.tar", &t.finish(), None, &["sparse"]);
}

/// A GNU sparse entry (type `S`) with a real sparse map (two data regions of a 64 KiB file) is
/// refused naming the entry, not imported as the regions laid end to end.
#[test]
fn tar_gnu_sparse_entry_with_a_map_is_rejected() {
    let env = Env::new();
    let mut h = header(EntryType::GNUSparse, b"holes.bin", 1024, 0o644);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].offset = *b"00000000000\0";
        g.sparse[0].numbytes = *b"00000001000\0";
        g.sparse[1].offset = *b"00000100000\0";
        g.sparse[1].numbytes = *b"00000001000\0";
        g.realsize = *b"00000101000\0";
    }
    h.set_cksum();
    let mut t = TarB::new();
    t.file("before.txt", b"x").entry(&h, &[b'd'; 1024]);
    env.expect_rejected(
        "gnu-sparse.tar",
        &t.finish(),
        Some("holes.bin"),
        &["sparse"],
    );
}

/// PAX sparse files (GNU tar's `--sparse` with `--format=pax`): format 1.0 (the map at the start
/// of the data, the real name in `GNU.sparse.name`) and 0.0/0.1 (the map in `GNU.sparse.offset`/
/// `numbytes` or `GNU.sparse.map` records) are refused naming the entry; they were imported as
/// a small regular file holding the map and the data regions.
#[test]
fn tar_pax_sparse_entries_are_rejected() {
    let env = Env::new();
    let mut data = b"1\n0\n5\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"hello");
    let mut t = TarB::new();
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"sparse-one.bin"),
        ("GNU.sparse.realsize", b"4096"),
    ])
    .file("GNUSparseFile.0/sparse-one.bin", &data);
    env.expect_rejected(
        "pax-sparse-1.0.tar",
        &t.finish(),
        Some("sparse-one.bin"),
        &["sparse"],
    );

    let mut t = TarB::new();
    t.pax(&[
        ("GNU.sparse.size", b"4096"),
        ("GNU.sparse.numblocks", b"1"),
        ("GNU.sparse.offset", b"0"),
        ("GNU.sparse.numbytes", b"5"),
    ])
    .file("sparse-zero.bin", b"hello");
    env.expect_rejected(
        "pax-sparse-0.0.tar",
        &t.finish(),
        Some("sparse-zero.bin"),
        &["sparse"],
    );

    let mut t = TarB::new();
    t.pax(&[
        ("GNU.sparse.size", b"4096"),
        ("GNU.sparse.numblocks", b"1"),
        ("GNU.sparse.map", b"0,5"),
    ])
    .file("sparse-map.bin", b"hello");
    env.expect_rejected(
        "pax-sparse-0.1.tar",
        &t.finish(),
        Some("sparse-map.bin"),
        &["sparse"],
    );
}

/// A PAX extended header whose data is not exactly its length-prefixed records is a corrupt
/// archive: a length that is not the record's (`99 path=foo.txt`), a record cut by a newline in
/// its value, anything after an empty line, a record without `=`. Each was accepted (the `tar`
/// crate skips records it cannot read and stops at an empty line), so the entry kept its ustar
/// name where another tool would fail or use the PAX one.
#[test]
fn tar_malformed_pax_records_are_rejected() {
    let env = Env::new();
    // The entry is named as the `tar` crate reads it (a path record it could read is used).
    for (file, records, entry) in [
        ("pax-len.tar", &b"99 path=foo.txt\n"[..], "bar.txt"),
        ("pax-short-len.tar", b"10 path=foo.txt\n", "bar.txt"),
        (
            "pax-newline.tar",
            b"15 comment=a\nb\n16 path=foo.txt\n",
            "foo.txt",
        ),
        (
            "pax-after-empty.tar",
            b"16 path=foo.txt\n\n11 mtime=1\n",
            "foo.txt",
        ),
        ("pax-no-equals.tar", b"13 pathfoo.t\n", "bar.txt"),
        ("pax-no-newline.tar", b"16 path=foo.txtX", "bar.txt"),
        ("pax-not-a-number.tar", b"1x path=foo.txt\n", "bar.txt"),
    ] {
        let mut t = TarB::new();
        let h = header(
            EntryType::XHeader,
            b"./PaxHeaders/entry",
            records.len() as u64,
            0o644,
        );
        t.entry(&h, records).file("bar.txt", b"x");
        env.expect_rejected(file, &t.finish(), Some(entry), &["PAX"]);
    }
    // Well-formed records, several digits of length included, are read.
    let mut t = TarB::new();
    t.pax(&[("path", b"foo.txt"), ("comment", &[b'c'; 200])])
        .file("bar.txt", b"x");
    let id = env.expect_accepted("pax-good.tar", &t.finish());
    let stored = env.resolve("r/x/1").unwrap();
    assert!(
        stored.join("foo.txt").is_file(),
        "{id}: the PAX path is the name"
    );
}

/// POSIX reads a contiguous file (type `7`) as a regular file: the same tree, the same id.
#[test]
fn tar_contiguous_file_is_a_regular_file() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("d").file("d/a.txt", b"contiguous\n");
    let regular = env.expect_accepted("regular.tar", &t.finish());
    let mut t = TarB::new();
    t.dir("d").entry(
        &header(EntryType::Continuous, b"d/a.txt", 11, 0o644),
        b"contiguous\n",
    );
    let path = env.archive("contiguous.tar", &t.finish());
    assert_eq!(env.import_ok(&path, "r/contiguous/1"), regular);
    env.fsck_clean();
}

/// An archive is read by what it holds, never by its name: an uncompressed tar named `.tar.gz`
/// (a `tar.gz` download location serving a plain tar) is read as the tar it is, and a gzip named
/// `.tar` as a tar.gz.
#[test]
fn an_archive_is_read_by_its_bytes_not_its_name() {
    let env = Env::new();
    let tar = tar_of(TREE, PLAIN);
    let id = env.expect_accepted("tree.tar", &tar);
    let plain = env.archive("plain-tar-named.tar.gz", &tar);
    assert_eq!(env.import_ok(&plain, "r/plain/1"), id);
    let gzipped = env.archive("gzip-named.tar", &gz(&tar));
    assert_eq!(env.import_ok(&gzipped, "r/gzipped/1"), id);
    env.fsck_clean();
}

/// A `tar.gz` download location that serves an uncompressed tar: `activate` reads it as the tar
/// it is (content, not the location's name, says what an archive is).
#[test]
fn a_plain_tar_at_a_tar_gz_location_activates() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("tar.gz", "archives/")]);
    support::write_step(&lib, "s", "1.0.0", "title: S\n");
    fs::create_dir_all(lib.join("archives/s/1.0.0")).unwrap();
    let mut b = TarB::new();
    b.file_mode(b"step.sh", b"echo plain\n", 0o755);
    let tar = b.finish();
    assert_eq!(&tar[257..262], b"ustar", "an uncompressed tar");
    fs::write(lib.join("archives/s/1.0.0/step.tar.gz"), &tar).unwrap();
    let home = t.path().join("home");
    let dest = t.path().join("dest");
    let out = support::run(
        &home,
        &[
            "activate",
            "-c",
            lib.to_str().unwrap(),
            "-i",
            "s",
            "-v",
            "1.0.0",
            "-p",
            dest.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        "echo plain\n"
    );
    support::assert_fsck_clean(&home);
}

#[test]
fn zip_encrypted_entry_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        let o = zip_opts().compression_method(zip::CompressionMethod::Stored);
        z.start_file("secret.txt", o).unwrap();
        z.write_all(b"not really encrypted").unwrap();
    });
    // Set bit 0 (encrypted) of the flags in the local and the central header.
    let mut z = z;
    let local = z.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    z[local + 6] |= 1;
    let central = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    z[central + 8] |= 1;
    env.expect_rejected("encrypted.zip", &z, None, &["encrypt", "password"]);
}

#[test]
fn zip_device_and_fifo_entries_are_rejected() {
    let env = Env::new();
    for (file, mode) in [
        ("chr.zip", 0o020666u32),
        ("fifo.zip", 0o010644),
        ("sock.zip", 0o140755),
    ] {
        let z = zip_with(|z| {
            z.start_file("node", zip_opts().external_attributes(mode << 16))
                .unwrap();
            z.write_all(b"").unwrap();
        });
        env.expect_rejected(file, &z, Some("node"), &["device", "fifo"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Duplicates.

#[test]
fn tar_duplicate_files_are_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("same", b"first").file("same", b"second");
    env.expect_rejected("dup.tar", &t.finish(), Some("same"), &["duplicate"]);
}

#[test]
fn tar_duplicate_via_dot_slash_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("d/same", b"first").file("./d//same", b"second");
    env.expect_rejected("dup2.tar", &t.finish(), Some("same"), &["duplicate"]);
}

#[test]
fn tar_file_then_dir_same_path_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("x", b"file").dir("x/");
    env.expect_rejected("filedir.tar", &t.finish(), Some("x"), &["duplicate"]);
}

#[test]
fn tar_dir_then_file_same_path_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.dir("x/").file("x", b"file");
    env.expect_rejected("dirfile.tar", &t.finish(), Some("x"), &["duplicate"]);
}

#[test]
fn tar_symlink_then_file_same_path_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.symlink("x", "y").file("x", b"file");
    env.expect_rejected("symfile.tar", &t.finish(), Some("x"), &["duplicate"]);
}

#[test]
fn tar_file_under_a_file_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("x", b"file").file("x/y", b"under");
    env.expect_rejected("under.tar", &t.finish(), Some("x/y"), &["file"]);
}

#[test]
fn zip_duplicate_files_are_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.start_file("dupA", zip_opts()).unwrap();
        z.write_all(b"first").unwrap();
        z.start_file("dupB", zip_opts()).unwrap();
        z.write_all(b"second").unwrap();
    });
    let z = patch(z, b"dupB", b"dupA");
    // The zip crate keeps one entry per name, so the message cannot say which one.
    env.expect_rejected("dup.zip", &z, None, &["duplicate"]);
}

#[test]
fn zip_file_then_dir_same_path_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.start_file("x", zip_opts()).unwrap();
        z.write_all(b"file").unwrap();
        z.add_directory("x/", zip_opts()).unwrap();
    });
    env.expect_rejected("filedir.zip", &z, Some("x"), &["duplicate"]);
}

// ---------------------------------------------------------------------------------------------
// Sizes and compression ratio.

#[test]
fn tar_huge_declared_entry_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.raw(header(EntryType::Regular, b"huge.bin", 4 << 30, 0o644).as_bytes())
        .raw(&[0xAB; 4096]);
    env.expect_rejected("huge.tar", &t.unfinished(), Some("huge.bin"), &["limit"]);
}

#[test]
fn targz_huge_declared_entry_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("small", b"x")
        .raw(header(EntryType::Regular, b"huge.bin", (1 << 30) + 1, 0o644).as_bytes());
    env.expect_rejected(
        "huge.tar.gz",
        &gz(&t.unfinished()),
        Some("huge.bin"),
        &["limit"],
    );
}

/// A tar.gz holding one file of `size` zero bytes, streamed through the encoder.
fn zeros_targz(name: &str, size: u64) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
    let h = header(EntryType::Regular, name.as_bytes(), size, 0o644);
    enc.write_all(h.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let pad = (512 - (size % 512) as usize) % 512;
    enc.write_all(&vec![0u8; pad + 1024]).unwrap();
    enc.finish().unwrap()
}

#[test]
fn targz_compression_bomb_is_rejected() {
    let env = Env::new();
    let bomb = zeros_targz("zeros.bin", 300 << 20);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    env.expect_rejected(
        "bomb.tar.gz",
        &bomb,
        Some("zeros.bin"),
        &["compression ratio"],
    );
}

#[test]
fn zip_compression_bomb_is_rejected() {
    let env = Env::new();
    let chunk = vec![0u8; 1 << 20];
    let z = zip_with(|z| {
        z.start_file("zeros.bin", zip_opts().compression_level(Some(6)))
            .unwrap();
        for _ in 0..300 {
            z.write_all(&chunk).unwrap();
        }
    });
    assert!(z.len() < 2 << 20, "bomb is {} bytes", z.len());
    env.expect_rejected("bomb.zip", &z, Some("zeros.bin"), &["compression ratio"]);
}

#[test]
fn zip_entry_larger_than_declared_is_rejected() {
    // Both size fields say 16 bytes; the deflate stream holds 1 MiB.
    let env = Env::new();
    let data = vec![b'z'; 1 << 20];
    let z = zip_with(|z| {
        z.start_file("liar.bin", zip_opts()).unwrap();
        z.write_all(&data).unwrap();
    });
    let z = patch(z, &(1u32 << 20).to_le_bytes(), &16u32.to_le_bytes());
    env.expect_rejected("liar.zip", &z, Some("liar.bin"), &[]);
}

#[test]
fn tar_huge_gnu_longname_header_is_rejected() {
    // 100 MiB of name: the error must come before it is all held in memory (and must not print it).
    let env = Env::new();
    let mut t = TarB::new();
    let name = vec![b'n'; 100 << 20];
    t.gnu_long(EntryType::GNULongName, &name).file("f", b"x");
    let bytes = gz(&t.finish());
    env.expect_rejected("longhdr.tar.gz", &bytes, None, &["header", "path too long"]);
}

#[test]
fn huge_extension_headers_are_refused_in_bounded_memory() {
    // In-process, so the allocation peak can be measured: a GNU long name and a PAX header of
    // 100 MiB each, in a tar.gz (ratio ~1000: caught by the ratio limit only after 64 MiB) and
    // in a plain tar. README "Performance": peak memory of any command ≤ 64 MB whatever the archive.
    let big = vec![b'a'; 100 << 20];
    let mut pax_rec = b"104857600 comment=".to_vec();
    pax_rec.resize(100 << 20, b'c');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("longname", {
            let mut t = TarB::new();
            t.gnu_long(EntryType::GNULongName, &big).file("f", b"x");
            t.finish()
        }),
        ("pax", {
            let mut t = TarB::new();
            let h = header(EntryType::XHeader, b"pax", pax_rec.len() as u64, 0o644);
            t.entry(&h, &pax_rec).file("f", b"x");
            t.finish()
        }),
    ];
    drop(big);
    for (what, tar) in &cases {
        for gzip in [false, true] {
            let data = if gzip { gz(tar) } else { tar.clone() };
            let format = if gzip {
                stepman::fuzzing::Format::TarGz
            } else {
                stepman::fuzzing::Format::Tar
            };
            let tmp = tempfile::tempdir().unwrap();
            let (r, peak) = peak_alloc(|| {
                stepman::fuzzing::ingest_bytes(
                    format,
                    &data,
                    &tmp.path().join("t"),
                    stepman::Limits::default(),
                )
            });
            let err = r.expect_err(what).to_string();
            assert!(err.len() < 2000, "{what}: error is {} bytes", err.len());
            assert!(
                peak < 16 << 20,
                "{what} (gzip: {gzip}): peak allocation {} MiB: {err}",
                peak >> 20
            );
            assert!(err.contains("header size"), "{what}: {err}");
        }
    }
    // The measurement itself: without the header limit, the `tar` crate holds the whole record.
    let tmp = tempfile::tempdir().unwrap();
    let (r, peak) = peak_alloc(|| {
        stepman::fuzzing::ingest_bytes(
            stepman::fuzzing::Format::Tar,
            &cases[0].1,
            &tmp.path().join("t"),
            stepman::Limits {
                max_header_bytes: u64::MAX,
                ..stepman::Limits::default()
            },
        )
    });
    assert!(r.is_err());
    assert!(peak > 64 << 20, "peak {peak} with the header limit off");
}

// ---------------------------------------------------------------------------------------------
// Truncated and corrupt archives.

#[test]
fn tar_without_end_marker_is_rejected() {
    let env = Env::new();
    let mut bytes = small_tar();
    bytes.truncate(bytes.len() - 1024);
    env.expect_rejected("noend.tar", &bytes, None, &["truncated", "end-of-archive"]);
}

#[test]
fn tar_with_half_an_end_marker_is_rejected() {
    let env = Env::new();
    let mut bytes = small_tar();
    bytes.truncate(bytes.len() - 1024 + 100);
    env.expect_rejected(
        "halfend.tar",
        &bytes,
        None,
        &["truncated", "end-of-archive", "header"],
    );
}

#[test]
fn tar_cut_mid_entry_is_rejected() {
    let env = Env::new();
    let bytes = small_tar();
    // Inside d/one.txt's data (header d/ at 0, header one.txt at 512, data from 1024).
    env.expect_rejected(
        "cut.tar",
        &bytes[..2000],
        None,
        &["truncated", "eof", "end"],
    );
}

#[test]
fn targz_cut_mid_entry_is_rejected() {
    let env = Env::new();
    let bytes = gz(&small_tar()[..2000]);
    env.expect_rejected("cut.tar.gz", &bytes, None, &["truncated", "eof", "end"]);
}

#[test]
fn targz_cut_trailer_is_rejected() {
    let env = Env::new();
    let mut bytes = gz(&small_tar());
    bytes.truncate(bytes.len() - 4);
    env.expect_rejected("trailer.tar.gz", &bytes, None, &["corrupt", "eof", "gzip"]);
}

#[test]
fn targz_cut_in_deflate_stream_is_rejected() {
    let env = Env::new();
    let bytes = gz(&small_tar());
    let cut = &bytes[..bytes.len() - 12];
    env.expect_rejected("cutgz.tar.gz", cut, None, &[]);
}

#[test]
fn targz_wrong_crc_is_rejected() {
    let env = Env::new();
    let mut bytes = gz(&small_tar());
    let n = bytes.len();
    bytes[n - 8] ^= 0xff;
    env.expect_rejected("crc.tar.gz", &bytes, None, &["corrupt", "crc", "checksum"]);
}

#[test]
fn targz_wrong_length_in_trailer_is_rejected() {
    let env = Env::new();
    let mut bytes = gz(&small_tar());
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    env.expect_rejected("isize.tar.gz", &bytes, None, &[]);
}

#[test]
fn tar_trailing_garbage_after_end_marker_is_rejected() {
    let env = Env::new();
    let mut bytes = small_tar();
    bytes.extend_from_slice(b"GARBAGE after the end of the archive");
    env.expect_rejected("garbage.tar", &bytes, None, &["after the end"]);
}

#[test]
fn targz_trailing_garbage_inside_gzip_is_rejected() {
    let env = Env::new();
    let mut tar = small_tar();
    tar.extend_from_slice(&[0u8; 512]);
    tar.extend_from_slice(b"GARBAGE");
    env.expect_rejected("garbage-in.tar.gz", &gz(&tar), None, &["after the end"]);
}

#[test]
fn targz_trailing_garbage_after_gzip_is_rejected() {
    let env = Env::new();
    let mut bytes = gz(&small_tar());
    bytes.extend_from_slice(b"GARBAGE after the gzip member");
    env.expect_rejected("garbage-out.tar.gz", &bytes, None, &[]);
}

#[test]
fn tar_bad_header_checksum_is_rejected() {
    let env = Env::new();
    let mut bytes = small_tar();
    bytes[512 + 10] ^= 0x20; // a byte of d/one.txt's name
    env.expect_rejected("cksum.tar", &bytes, None, &["checksum"]);
}

#[test]
fn zip_bad_crc_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        let o = zip_opts().compression_method(zip::CompressionMethod::Stored);
        z.start_file("data.txt", o).unwrap();
        z.write_all(b"the quick brown fox").unwrap();
    });
    let z = patch(z, b"quick", b"quack");
    env.expect_rejected("crc.zip", &z, Some("data.txt"), &["checksum", "crc"]);
}

#[test]
fn zip_corrupt_deflate_data_is_rejected() {
    let env = Env::new();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut z = zip_with(|z| {
        z.start_file("data.bin", zip_opts()).unwrap();
        z.write_all(&data).unwrap();
    });
    for b in &mut z[60..200] {
        *b = !*b;
    }
    env.expect_rejected("deflate.zip", &z, None, &[]);
}

#[test]
fn zip_truncated_central_directory_is_rejected() {
    let env = Env::new();
    let z = zip_of(TREE);
    let cd = z
        .windows(4)
        .position(|w| w == b"PK\x01\x02")
        .expect("central directory");
    env.expect_rejected("cd.zip", &z[..cd + 30], None, &["zip"]);
}

#[test]
fn zip_truncated_data_is_rejected() {
    let env = Env::new();
    let z = zip_of(TREE);
    env.expect_rejected("cut.zip", &z[..z.len() / 2], None, &["zip"]);
}

// ---------------------------------------------------------------------------------------------
// Names that are not UTF-8, and inputs that are no archive at all.

#[test]
fn tar_non_utf8_name_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file_mode(b"bad-\xff\xfe-name", b"x", 0o644);
    env.expect_rejected("latin.tar", &t.finish(), Some("bad-"), &["utf-8"]);
}

#[test]
fn tar_non_utf8_symlink_target_is_rejected() {
    let env = Env::new();
    let mut h = header(EntryType::Symlink, b"link", 0, 0o777);
    raw_link(&mut h, b"t\xff");
    let mut t = TarB::new();
    t.entry(&h, b"");
    env.expect_rejected("latin-link.tar", &t.finish(), Some("link"), &["utf-8"]);
}

#[test]
fn zip_non_utf8_name_is_rejected() {
    let env = Env::new();
    let z = zip_with(|z| {
        z.start_file("bad-QQ-name", zip_opts()).unwrap();
        z.write_all(b"x").unwrap();
    });
    let z = patch(z, b"bad-QQ-name", b"bad-\xff\xfe-name");
    env.expect_rejected("latin.zip", &z, Some("bad-"), &["utf-8"]);
}

#[test]
fn tar_nul_in_pax_path_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.pax(&[("path", b"a\0b")]).file("innocent", b"x");
    env.expect_rejected("nul.tar", &t.finish(), None, &["nul"]);
}

#[test]
fn empty_file_is_rejected() {
    let env = Env::new();
    env.expect_rejected("empty.bin", b"", None, &["not a directory, tar"]);
}

#[test]
fn unknown_format_is_rejected() {
    let env = Env::new();
    env.expect_rejected(
        "notes.txt",
        b"just some text\n",
        None,
        &["not a directory, tar"],
    );
}

#[test]
fn gzip_of_something_that_is_not_a_tar_is_rejected() {
    let env = Env::new();
    let bytes = gz(&[0x42u8; 5000]);
    env.expect_rejected("notatar.tar.gz", &bytes, None, &[]);
}

#[test]
fn entry_naming_the_root_as_a_file_is_rejected() {
    let env = Env::new();
    let mut t = TarB::new();
    t.file("./", b"x");
    env.expect_rejected("root.tar", &t.finish(), None, &["root"]);
}

#[test]
fn too_deep_path_is_rejected() {
    let env = Env::new();
    let deep = vec!["d"; 200].join("/");
    let mut t = TarB::new();
    t.pax(&[("path", deep.as_bytes())]).file("x", b"x");
    env.expect_rejected("deep.tar", &t.finish(), None, &["deep"]);
}

#[test]
fn configured_limits_are_enforced() {
    // In-process, with small limits: each one is named in the error.
    let lim = stepman::Limits {
        max_total_bytes: 10_000,
        max_file_bytes: 4_000,
        max_entries: 5,
        max_path_bytes: 64,
        max_depth: 4,
        max_index_bytes: 100,
        ..stepman::Limits::default()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "file size",
            {
                let mut t = TarB::new();
                t.file("big", &[1; 4_001]);
                t.finish()
            },
            "file size",
        ),
        (
            "total size",
            {
                let mut t = TarB::new();
                t.file("a", &[1; 4_000])
                    .file("b", &[2; 4_000])
                    .file("c", &[3; 4_000]);
                t.finish()
            },
            "total size",
        ),
        (
            "entries",
            {
                let mut t = TarB::new();
                for i in 0..6 {
                    t.file(&format!("f{i}"), b"x");
                }
                t.finish()
            },
            "number of entries",
        ),
        (
            "implicit dirs count",
            {
                let mut t = TarB::new();
                t.file("a/b/c/f1", b"x")
                    .file("a/b/c/f2", b"x")
                    .file("a/b/c/f3", b"x");
                t.finish()
            },
            "number of entries",
        ),
        (
            "index bytes",
            {
                let mut t = TarB::new();
                for c in ["a", "b", "c"] {
                    t.file(&c.repeat(40), b"x");
                }
                t.finish()
            },
            "index size",
        ),
        (
            "path bytes",
            {
                let mut t = TarB::new();
                t.file(&"p".repeat(65), b"x");
                t.finish()
            },
            "too long",
        ),
        (
            "depth",
            {
                let mut t = TarB::new();
                t.file("a/b/c/d/e", b"x");
                t.finish()
            },
            "too deep",
        ),
    ];
    for (what, tar, expect) in cases {
        for format in [
            stepman::fuzzing::Format::Tar,
            stepman::fuzzing::Format::TarGz,
        ] {
            let data = match format {
                stepman::fuzzing::Format::TarGz => gz(&tar),
                _ => tar.clone(),
            };
            let tmp = tempfile::tempdir().unwrap();
            let r = stepman::fuzzing::ingest_bytes(format, &data, &tmp.path().join("t"), lim);
            let err = r.expect_err(what).to_string();
            assert!(err.contains(expect), "{what}: {err}");
        }
    }
}

// The limits are configurable from the environment (README: "What an import refuses").

impl Env {
    fn import_with(&self, src: &Path, envs: &[(&str, &str)]) -> Output {
        let mut c = Command::new(support::bin());
        c.args(["store", "import", src.to_str().unwrap(), "--name", "r/x/1"])
            .env("STEPMAN_HOME", &self.home)
            .env("STEPMAN_NO_FSYNC", "1")
            .env_remove("RUST_LOG")
            .current_dir(&self.cwd);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run stepman")
    }
}

#[test]
fn limits_come_from_the_environment() {
    let env = Env::new();
    let mut t = TarB::new();
    for i in 0..20 {
        t.file(&format!("f{i:02}"), &[b'a'; 3000]);
    }
    let tar = env.archive("twenty.tar", &t.finish());
    let before = env.objects();
    for (var, value, words) in [
        ("STEPMAN_MAX_ENTRIES", "10", "entries"),
        ("STEPMAN_MAX_FILE_BYTES", "2K", "f00"),
        ("STEPMAN_MAX_TOTAL_BYTES", "50k", "limit"),
        ("STEPMAN_MAX_INDEX_BYTES", "40", "index size"),
    ] {
        let out = env.import_with(&tar, &[(var, value)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {err}");
        assert!(
            err.contains(words) && err.contains("limit"),
            "{var}={value}: {err}"
        );
        assert_eq!(env.objects(), before, "{var}: nothing published");
    }
    // A bad value is a usage error that names the variable; nothing is done.
    let out = env.import_with(&tar, &[("STEPMAN_MAX_ENTRIES", "lots")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STEPMAN_MAX_ENTRIES"));
    // Raised limits let it through.
    let out = env.import_with(&tar, &[("STEPMAN_MAX_ENTRIES", "21")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.fsck_clean();
}

/// A zip of `n` empty stored entries named by `name`.
fn zip_of_empty_entries(n: usize, name: impl Fn(usize) -> String) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..n {
        z.start_file(name(i), opts).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// Ingests `data` as a zip in-process; the result and the peak allocation.
fn ingest_zip_measured(
    data: &[u8],
    limits: stepman::Limits,
) -> (Result<String, stepman::Error>, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (r, peak) = peak_alloc(|| {
        stepman::fuzzing::ingest_bytes(
            stepman::fuzzing::Format::Zip,
            data,
            &tmp.path().join("t"),
            limits,
        )
    });
    (r.map(|id| id.to_string()), peak)
}

#[test]
fn a_huge_zip_central_directory_is_refused_in_bounded_memory() {
    // In-process, so the allocation peak can be measured. README "Performance": peak memory of any
    // command ≤ 64 MB. The `zip` crate holds every central directory entry as a record of a few
    // hundred bytes, and reserves room for as many as the end record claims, before the first
    // entry can be vetted.
    //
    // 200,000 entries (a zip64 end record): refused from the end record's claim alone.
    let many = zip_of_empty_entries(200_000, |i| format!("d{}/f{i:06}", i / 1000));
    let (r, many_peak) = ingest_zip_measured(&many, stepman::Limits::default());
    let err = r.expect_err("200,000 entries").to_string();
    assert!(err.contains("number of entries"), "{err}");
    assert!(
        many_peak < 8 << 20,
        "peak allocation {} MiB: {err}",
        many_peak >> 20
    );
    eprintln!("200,000 entries: refused with {} KiB", many_peak >> 10);
    // 300 entries with 60,000-byte names (a zip32 end record, few entries; each name would be
    // refused, but only after the crate has read them all): a central directory of ~17 MiB,
    // refused once 4 MiB of it were read.
    let long = zip_of_empty_entries(300, |i| format!("{i:060000}"));
    let (r, long_peak) = ingest_zip_measured(&long, stepman::Limits::default());
    let err = r.expect_err("a 17 MiB central directory").to_string();
    assert!(err.contains("index size"), "{err}");
    assert!(
        long_peak < 48 << 20,
        "peak allocation {} MiB: {err}",
        long_peak >> 20
    );
    eprintln!("60,000-byte names: refused with {} KiB", long_peak >> 10);
    // The measurement itself: the `zip` crate alone, opening each archive, allocates at least
    // twice what the refusal did.
    for (what, data, refused) in [
        ("200,000 entries", &many, many_peak),
        ("60,000-byte names", &long, long_peak),
    ] {
        let (r, peak) =
            peak_alloc(|| zip::ZipArchive::new(Cursor::new(data.as_slice())).map(|a| a.len()));
        assert!(r.is_ok(), "{what}: {r:?}");
        eprintln!("{what}: the zip crate alone: {} KiB", peak >> 10);
        assert!(
            peak > 2 * refused,
            "{what}: the crate alone took {} KiB, the refusal {} KiB",
            peak >> 10,
            refused >> 10
        );
    }
}
