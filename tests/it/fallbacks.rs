//! The filesystem fallbacks and failure paths (`store-format.md`), exercised on
//! the real binary by injecting the error with `strace -f -e inject=...`, since this kernel has no
//! NFS, no full disk and no failing disk at hand:
//! - no `RENAME_NOREPLACE` (`renameat2` → `EINVAL`, as NFS and 9p answer): import publishes with
//!   the documented plain-`rename(2)` fallback, alone and with concurrent importers;
//! - a failing `fsync` (`EIO`): the import fails naming the path, and nothing is published;
//! - `EXDEV`: `gc` removes the object in place; an import whose publish gets it fails cleanly;
//! - `ENOSPC` in the middle of an ingest: a clear error, nothing published, a retry succeeds.
//!
//! Every test checks in strace's own log that the fault really was injected (`(INJECTED)`), so a
//! test cannot pass without exercising its path. Without `strace` the tests print why and pass
//! (CI installs it).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{assert_fsck_clean, object_ids as objects, store_root};

/// A test's temp dir (made writable again when dropped: objects are read-only).
struct Env(support::TestDir);

impl Env {
    fn new() -> Env {
        Env(support::TestDir::new())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }
}

fn stepman(home: &Path) -> Command {
    let mut c = support::stepman(home, std::iter::empty::<&str>());
    c.env_remove("STEPMAN_NO_FSYNC").env("RUST_LOG", "debug");
    c
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs stepman without faults; panics unless it exits 0; its stdout.
fn ok<S: AsRef<OsStr> + std::fmt::Debug>(home: &Path, args: &[S]) -> String {
    let o = stepman(home).args(args).output().expect("run stepman");
    assert!(
        o.status.success(),
        "stepman {args:?} failed: {}\n{}",
        o.status,
        err(&o)
    );
    out(&o)
}

/// Starts stepman under `strace -f`, tracing `trace` and injecting `inject`; strace logs to `log`.
fn spawn_strace<S: AsRef<OsStr>>(
    home: &Path,
    log: &Path,
    trace: &str,
    inject: &str,
    extra: &[&str],
    args: &[S],
) -> std::process::Child {
    // Debug logs name the fallbacks taken; not where every write(2) counts.
    let verbosity = if trace.contains("write") {
        "warn"
    } else {
        "debug"
    };
    let mut c = support::Traced::new(home, log)
        .follow()
        .opt(extra)
        .trace(trace)
        .inject(inject)
        .env_remove("STEPMAN_NO_FSYNC")
        .env("RUST_LOG", verbosity)
        .stepman(args);
    c.spawn().expect("start strace")
}

/// Runs stepman under strace (see [`spawn_strace`]); its output and strace's log.
fn under_strace<S: AsRef<OsStr>>(
    home: &Path,
    log: &Path,
    trace: &str,
    inject: &str,
    extra: &[&str],
    args: &[S],
) -> (Output, String) {
    let o = spawn_strace(home, log, trace, inject, extra, args)
        .wait_with_output()
        .expect("wait for strace");
    let l = fs::read_to_string(log).expect("read strace log");
    (o, l)
}

fn assert_injected(log: &str) {
    assert!(
        log.contains("(INJECTED)"),
        "the fault was never injected; strace log:\n{log}"
    );
}

/// Entries of the temp area: after a failed command, none may be left behind.
fn temp_entries(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store_root(home).join("tmp"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An import into a seeded store under a fault (`trace`, `inject`, extra strace options) that
/// must fail: the test dir, the store, the seed object, the tree and the id it gets without the
/// fault, and the import's output.
struct FailedImport {
    _env: Env,
    home: PathBuf,
    seed: String,
    src: PathBuf,
    want: String,
    o: Output,
}

impl FailedImport {
    /// None (with a note) where strace cannot trace. `extra` gets the store's root and the
    /// tree's id.
    fn run(
        test: &str,
        tree: (u64, usize),
        name: &str,
        (trace, inject): (&str, &str),
        extra: impl FnOnce(&Path, &str) -> Vec<String>,
    ) -> Option<FailedImport> {
        if !support::strace_usable(test) {
            return None;
        }
        let env = Env::new();
        let home = env.path("home");
        let seed = seeded_store(&env, &home);
        let src = env.path("src");
        support::make_tree(&src, tree.0, tree.1);
        let want = reference_id(&env, &src, "fault");
        let extra = extra(&store_root(&home), &want);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (o, log) = under_strace(
            &home,
            &env.path("strace.log"),
            trace,
            inject,
            &extra,
            &import_args(&src, name),
        );
        assert_injected(&log);
        assert!(
            !o.status.success(),
            "{test}: the import succeeded despite {inject}"
        );
        Some(FailedImport {
            _env: env,
            home,
            seed,
            src,
            want,
            o,
        })
    }
}

/// `store import SRC --name NAME`.
fn import_args(src: &Path, name: &str) -> Vec<String> {
    let src = src.to_str().expect("utf-8 path").to_string();
    ["store", "import", &src, "--name", name]
        .map(String::from)
        .to_vec()
}

/// After an import of `name` that failed: nothing published beside `seed`, `name` unbound, the
/// temp area empty and the store clean.
fn assert_nothing_published(home: &Path, seed: &str, name: &str) {
    assert_eq!(
        objects(home),
        vec![seed.to_string()],
        "something was published"
    );
    assert_unbound(home, name);
    assert!(temp_entries(home).is_empty(), "{:?}", temp_entries(home));
    assert_fsck_clean(home);
}

fn assert_unbound(home: &Path, name: &str) {
    let o = stepman(home)
        .args(["store", "resolve", name])
        .output()
        .expect("run resolve");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{name} should not be bound: {}",
        out(&o)
    );
}

/// The id a tree gets, from a store of its own, without any fault.
fn reference_id(env: &Env, src: &Path, tag: &str) -> String {
    ok(
        &env.path(&format!("ref-{tag}")),
        &["store", "import", src.to_str().expect("utf-8 path")],
    )
}

/// A store that exists and holds one named object, made without faults; returns that object.
fn seeded_store(env: &Env, home: &Path) -> String {
    let seed = env.path("seed-tree");
    if !seed.exists() {
        support::make_tree(&seed, 99, 8);
    }
    ok(
        home,
        &[
            "store",
            "import",
            seed.to_str().expect("utf-8"),
            "--name",
            "seed/tree/1.0.0",
        ],
    )
}

#[test]
fn without_noreplace_rename_import_falls_back_to_rename() {
    if !support::strace_usable("without_noreplace_rename_import_falls_back_to_rename") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    support::make_tree(&src, 1, 60);
    let want = reference_id(&env, &src, "a");
    // A fresh home: creating the store publishes with the same primitive, and falls back too.
    let home = env.path("home");
    let (o, log) = under_strace(
        &home,
        &env.path("strace.log"),
        "renameat2,rename",
        "renameat2:error=EINVAL",
        &[],
        &import_args(&src, "steps/tree/1.0.0"),
    );
    assert_injected(&log);
    assert!(o.status.success(), "import failed: {}", err(&o));
    assert_eq!(out(&o), want, "wrong object id");
    assert!(
        err(&o).contains("using rename(2)"),
        "the fallback was not logged:\n{}",
        err(&o)
    );
    // The object was moved in with a plain rename(2).
    let objects_dir = store_root(&home).join("objects");
    assert!(
        log.lines().any(|l| l.contains("rename(")
            && l.contains(&format!("{}/", objects_dir.display()))
            && l.ends_with("= 0")),
        "no plain rename into objects/ in:\n{log}"
    );
    assert_eq!(objects(&home), vec![want.clone()]);
    let dir = ok(&home, &["store", "resolve", "steps/tree/1.0.0"]);
    assert!(dir.ends_with(&want), "{dir}");
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o555, "published object is not read-only");
    assert!(temp_entries(&home).is_empty(), "{:?}", temp_entries(&home));
    assert_fsck_clean(&home);
}

#[test]
fn without_noreplace_rename_concurrent_importers_agree() {
    if !support::strace_usable("without_noreplace_rename_concurrent_importers_agree") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    support::make_tree(&src, 2, 400);
    let want = reference_id(&env, &src, "b");
    let home = env.path("home");
    const N: usize = 4;
    // Started together into a home without a store: they also race to create it.
    let children: Vec<_> = (0..N)
        .map(|i| {
            spawn_strace(
                &home,
                &env.path(&format!("strace-{i}.log")),
                "renameat2,rename",
                "renameat2:error=EINVAL",
                &[],
                &import_args(&src, "steps/tree/2.0.0"),
            )
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let objects_dir = format!("{}/", store_root(&home).join("objects").display());
    let (mut moved, mut lost) = (0, 0);
    for (i, o) in outputs.iter().enumerate() {
        let log = fs::read_to_string(env.path(&format!("strace-{i}.log"))).unwrap();
        assert_injected(&log);
        assert!(o.status.success(), "importer {i} failed: {}", err(o));
        assert_eq!(out(o), want, "importer {i} printed a different id");
        for l in log
            .lines()
            .filter(|l| l.contains("rename(") && l.contains(&objects_dir))
        {
            if l.ends_with("= 0") {
                moved += 1;
            } else if l.contains("ENOTEMPTY") || l.contains("EEXIST") {
                lost += 1;
            }
        }
    }
    // Every importer published with the fallback: one moved its tree in, the others found the
    // object there (a plain rename cannot replace a non-empty directory).
    assert_eq!((moved, lost), (1, N - 1), "plain renames into objects/");
    assert_eq!(objects(&home), vec![want.clone()]);
    let dir = ok(&home, &["store", "resolve", "steps/tree/2.0.0"]);
    assert!(dir.ends_with(&want), "{dir}");
    assert!(temp_entries(&home).is_empty(), "{:?}", temp_entries(&home));
    assert_fsck_clean(&home);
}

#[test]
fn failed_fsync_fails_the_import_and_publishes_nothing() {
    let name = "steps/tree/3.0.0";
    let Some(f) = FailedImport::run(
        "failed_fsync_fails_the_import_and_publishes_nothing",
        (3, 60),
        name,
        ("fsync", "fsync:error=EIO"),
        |_, _| vec![],
    ) else {
        return;
    };
    let e = err(&f.o);
    let tmp = store_root(&f.home).join("tmp");
    assert!(
        e.contains("fsync ")
            && e.contains(&tmp.display().to_string())
            && e.contains("Input/output error"),
        "the error does not name the operation and path:\n{e}"
    );
    assert_nothing_published(&f.home, &f.seed, name);
    // Without the fault, the same import goes through.
    assert_eq!(ok(&f.home, &import_args(&f.src, name)), f.want);
    assert_fsck_clean(&f.home);
}

#[test]
fn failed_fsync_while_creating_the_store_leaves_no_store() {
    if !support::strace_usable("failed_fsync_while_creating_the_store_leaves_no_store") {
        return;
    }
    let env = Env::new();
    let home = env.path("home");
    let src = env.path("src");
    support::make_tree(&src, 4, 4);
    let (o, log) = under_strace(
        &home,
        &env.path("strace.log"),
        "fsync",
        "fsync:error=EIO",
        &[],
        &["store", "import", src.to_str().unwrap()],
    );
    assert_injected(&log);
    assert!(!o.status.success(), "import succeeded despite EIO on fsync");
    assert!(err(&o).contains("fsync "), "{}", err(&o));
    assert!(
        !store_root(&home).exists(),
        "a store was created although its creation failed"
    );
    let left: Vec<_> = fs::read_dir(&home)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in the home: {left:?}");
}

#[test]
fn failed_fsync_after_publish_leaves_a_clean_store() {
    let name = "steps/tree/5.0.0";
    // Only the flush of the object's shard directory, right after the rename, fails (-P).
    let Some(f) = FailedImport::run(
        "failed_fsync_after_publish_leaves_a_clean_store",
        (5, 30),
        name,
        ("fsync", "fsync:error=EIO"),
        |root, want| {
            let shard = root.join("objects").join(&want[..2]);
            fs::create_dir_all(&shard).unwrap();
            vec!["-P".into(), shard.to_str().unwrap().into()]
        },
    ) else {
        return;
    };
    let (home, seed, want) = (&f.home, &f.seed, &f.want);
    let shard = store_root(home).join("objects").join(&want[..2]);
    assert!(
        err(&f.o).contains(&format!("fsync {}", shard.display())),
        "the error does not name the shard:\n{}",
        err(&f.o)
    );
    // The object may be there (it was complete before it was renamed), but no name points at it
    // and the store is clean: read-only, nothing half-done.
    let mut present = objects(home);
    present.retain(|o| o != seed);
    assert!(
        present.is_empty() || present == vec![want.clone()],
        "{present:?}"
    );
    assert_unbound(home, name);
    assert!(temp_entries(home).is_empty(), "{:?}", temp_entries(home));
    assert_fsck_clean(home);
    // gc takes the unnamed object away; a retry publishes it again.
    ok(home, &["gc"]);
    assert_eq!(objects(home), vec![seed.clone()]);
    assert_eq!(&ok(home, &import_args(&f.src, name)), want);
    assert_fsck_clean(home);
}

#[test]
fn gc_on_exdev_removes_the_object_in_place() {
    if !support::strace_usable("gc_on_exdev_removes_the_object_in_place") {
        return;
    }
    let env = Env::new();
    let home = env.path("home");
    let keep = seeded_store(&env, &home);
    let src = env.path("src");
    support::make_tree(&src, 6, 40);
    let garbage = ok(&home, &["store", "import", src.to_str().unwrap()]);
    assert_eq!(objects(&home).len(), 2);
    // gc moves objects out with rename(2) (std::fs::rename): make it cross-device.
    let (o, log) = under_strace(
        &home,
        &env.path("strace.log"),
        "rename,renameat,renameat2",
        "rename:error=EXDEV",
        &[],
        &["gc"],
    );
    assert_injected(&log);
    assert!(
        log.lines()
            .any(|l| l.contains(&garbage) && l.contains("EXDEV") && l.contains("(INJECTED)")),
        "the object's move out was not the injected rename:\n{log}"
    );
    assert!(o.status.success(), "gc failed: {}", err(&o));
    assert!(
        err(&o).contains("EXDEV") && err(&o).contains("removing in place"),
        "the fallback was not logged:\n{}",
        err(&o)
    );
    assert_eq!(out(&o), garbage, "gc should report the object it removed");
    assert_eq!(objects(&home), vec![keep], "gc removed the wrong objects");
    ok(&home, &["store", "resolve", "seed/tree/1.0.0"]);
    assert!(temp_entries(&home).is_empty(), "{:?}", temp_entries(&home));
    assert_fsck_clean(&home);
}

#[test]
fn exdev_on_publish_fails_the_import_cleanly() {
    let name = "steps/tree/7.0.0";
    let Some(f) = FailedImport::run(
        "exdev_on_publish_fails_the_import_cleanly",
        (7, 40),
        name,
        ("renameat2", "renameat2:error=EXDEV"),
        |_, _| vec![],
    ) else {
        return;
    };
    let e = err(&f.o);
    assert!(
        e.contains("publish ")
            && e.contains(&store_root(&f.home).join("objects").display().to_string())
            && e.contains("cross-device"),
        "the error does not name the operation and path:\n{e}"
    );
    assert_nothing_published(&f.home, &f.seed, name);
}

#[test]
fn enospc_mid_ingest_fails_cleanly_and_a_retry_succeeds() {
    let name = "steps/tree/8.0.0";
    // Each file of the tree is at least one write(2): the 50th falls in the middle of the ingest.
    let Some(f) = FailedImport::run(
        "enospc_mid_ingest_fails_cleanly_and_a_retry_succeeds",
        (8, 120),
        name,
        ("write", "write:error=ENOSPC:when=50"),
        |_, _| vec![],
    ) else {
        return;
    };
    let e = err(&f.o);
    let tmp = store_root(&f.home).join("tmp");
    assert!(
        e.contains("write ")
            && e.contains(&tmp.display().to_string())
            && e.contains("No space left on device"),
        "the error does not name the operation and path:\n{e}"
    );
    // The failed ingest removed its temp dir itself; a sweep (gc) finds nothing to reclaim.
    assert_nothing_published(&f.home, &f.seed, name);
    ok(&f.home, &["gc"]);
    assert_fsck_clean(&f.home);
    // With space again, the same import goes through.
    assert_eq!(ok(&f.home, &import_args(&f.src, name)), f.want);
    let mut all = vec![f.seed.clone(), f.want.clone()];
    all.sort();
    assert_eq!(objects(&f.home), all);
    assert_fsck_clean(&f.home);
}
