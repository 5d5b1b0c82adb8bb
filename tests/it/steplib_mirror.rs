//! A git StepLib's kept mirror (`store-format.md` section 4a, "Mirrors"): an update after a new
//! upstream commit fetches into the mirror and parses only the step groups that commit touched,
//! reusing the others from the bound object, and the object it makes is the one a fresh setup
//! of the same commit makes (same id); a damaged mirror falls back to a fresh clone; concurrent
//! updates leave a clean store. The counts of parsed step.yml files need strace (skipped without).

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{TestDir, run_ok, stepman, strace::Traced, strace_usable};

/// A git StepLib with groups `a` (2 versions), `b` (3) and `c` (1), served by `git daemon`.
struct Served {
    src: PathBuf,
    bare: PathBuf,
    uri: String,
    _daemon: support::GitDaemon,
}

impl Served {
    fn new(dir: &Path) -> Served {
        let src = dir.join("steplib-src");
        support::write_steplib_yml(&src, &[("zip", "http://127.0.0.1:9/unused/")]);
        for (id, versions) in [
            ("a", &["1.0.0", "1.1.0"][..]),
            ("b", &["1.0.0", "1.1.0", "2.0.0"]),
            ("c", &["0.1.0"]),
        ] {
            for v in versions {
                support::write_step(&src, id, v, &version_yml(id, v));
            }
        }
        let bare = support::git_bare_of(dir, &src, "lib.git");
        let daemon = support::GitDaemon::start(dir);
        let uri = daemon.url("lib.git");
        Served {
            src,
            bare,
            uri,
            _daemon: daemon,
        }
    }

    /// Commits and pushes a new version of group `id` upstream.
    fn release(&self, id: &str, version: &str) {
        support::write_step(&self.src, id, version, &version_yml(id, version));
        support::git(&self.src, &["add", "-A"]);
        support::git(&self.src, &["commit", "-q", "-m", "release"]);
        support::git(
            &self.src,
            &["push", "-q", self.bare.to_str().unwrap(), "HEAD"],
        );
    }

    /// The object a fresh setup of the current upstream commit makes, in a store of its own.
    fn fresh_object(&self, dir: &Path) -> PathBuf {
        let home = dir.join(format!(
            "fresh-{}",
            support::git(&self.src, &["rev-parse", "HEAD"])
        ));
        run_ok(&mut stepman(&home, ["setup", "-c", &self.uri]));
        collection_object(&home)
    }
}

/// The one collection name in `home`'s store (a symlink).
fn collection_name(home: &Path) -> PathBuf {
    let names = support::store_root(home).join("names");
    for route in fs::read_dir(&names).unwrap().flatten() {
        let link = route.path().join("_steplib/current");
        if link.is_symlink() {
            return link;
        }
    }
    panic!("no collection name under {}", names.display());
}

/// The target of the one collection name in `home`'s store.
fn collection_object(home: &Path) -> PathBuf {
    fs::read_link(collection_name(home)).unwrap()
}

/// The one mirror in `home`'s store.
fn mirror_of(home: &Path) -> PathBuf {
    let mirrors = support::store_root(home).join("mirrors");
    let found: Vec<PathBuf> = fs::read_dir(&mirrors)
        .unwrap_or_else(|e| panic!("{}: {e}", mirrors.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(found.len(), 1, "one mirror: {found:?}");
    found[0].clone()
}

fn update(home: &Path, uri: &str) -> Output {
    let o = support::output(&mut stepman(home, ["update", "-c", uri]));
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    o
}

/// `stepman step-info --library URI ARGS…`'s output (it must exit 0).
fn step_info(home: &Path, uri: &str, args: &[&str]) -> String {
    run_ok(&mut stepman(
        home,
        ["step-info", "--library", uri].iter().chain(args),
    ))
}

/// A step.yml whose bytes name its version too: every file of the StepLib is a blob of its own.
fn version_yml(id: &str, version: &str) -> String {
    format!(
        "{}description: {id} {version}\n",
        support::step_yml(id, None)
    )
}

/// The step.yml files of the StepLib that `stepman update` read: the blobs it asked its
/// `git cat-file --batch` for (the object ids it wrote to it), by their paths in the StepLib.
fn step_ymls_read_by_update(s: &Served, home: &Path, work: &Path, uri: &str) -> Vec<String> {
    let log = work.join("update.strace");
    // Threads (the parsing workers) need -f.
    let mut cmd = Traced::new(home, &log)
        .follow()
        .opt(&["-s", "128"])
        .trace("write")
        .stepman(["update", "-c", uri]);
    let o = support::output(&mut cmd);
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    let text = fs::read_to_string(&log).unwrap();
    let paths: std::collections::HashMap<String, String> =
        support::git(&s.src, &["ls-tree", "-r", "HEAD"])
            .lines()
            .filter_map(|l| {
                let (head, path) = l.split_once('\t')?;
                Some((head.split(' ').nth(2)?.to_string(), path.to_string()))
            })
            .collect();
    let mut read: Vec<String> = text
        .lines()
        .filter_map(|l| l.split('"').nth(1))
        .filter_map(|w| w.strip_suffix("\\n"))
        .filter_map(|oid| paths.get(oid))
        .filter(|p| p.ends_with("/step.yml"))
        .cloned()
        .collect();
    read.sort();
    read.dedup();
    read
}

#[test]
fn an_update_after_a_commit_to_one_group_parses_only_that_group_and_makes_the_fresh_object() {
    if !strace_usable("steplib_mirror") {
        return;
    }
    let t = TestDir::new();
    let s = Served::new(t.path());
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    let before = collection_object(&home);

    s.release("b", "2.1.0");
    let opened = step_ymls_read_by_update(&s, &home, t.path(), &s.uri);
    assert_eq!(
        opened,
        [
            "steps/b/1.0.0/step.yml",
            "steps/b/1.1.0/step.yml",
            "steps/b/2.0.0/step.yml",
            "steps/b/2.1.0/step.yml"
        ],
        "only the changed group's step.yml files are read"
    );
    let after = collection_object(&home);
    assert_ne!(after, before, "the update made a new object");
    assert_eq!(
        after,
        s.fresh_object(t.path()),
        "the updated object is the one a fresh setup of the same commit makes"
    );
    let o = step_info(&home, &s.uri, &["--id", "b", "--format", "json"]);
    assert!(o.contains("\"version\":\"2.1.0\""), "{o}");
    let o = step_info(&home, &s.uri, &["--id", "a", "--version", "1.0.0"]);
    assert!(o.contains("1.0.0"), "a reused group still answers: {o}");

    // A commit that changes steplib.yml regenerates every group.
    let yml = fs::read_to_string(s.src.join("steplib.yml")).unwrap();
    fs::write(
        s.src.join("steplib.yml"),
        format!("{yml}assets_download_base_uri: https://assets.invalid\n"),
    )
    .unwrap();
    s.release("c", "0.2.0");
    let opened = step_ymls_read_by_update(&s, &home, t.path(), &s.uri);
    assert_eq!(
        opened.len(),
        2 + 4 + 2,
        "every group is parsed again: {opened:?}"
    );
    assert_eq!(collection_object(&home), s.fresh_object(t.path()));
    support::assert_fsck_clean(&home);
}

#[test]
fn a_damaged_mirror_falls_back_to_a_fresh_clone_and_the_same_object() {
    type Damage = fn(&Path);
    // Whether git itself can still fetch into the damaged mirror (then the fetch repairs it,
    // and only the reuse of the bound object's groups is lost), or stepman must start afresh.
    #[derive(PartialEq, Debug)]
    enum Then {
        GitRefetches,
        FreshClone,
    }
    let damages: [(&str, Damage, Then); 4] = [
        (
            "its packs removed",
            |m| {
                for p in fs::read_dir(m.join("objects/pack")).unwrap().flatten() {
                    fs::remove_file(p.path()).unwrap();
                }
            },
            Then::GitRefetches,
        ),
        (
            "the middle of its pack overwritten",
            |m| {
                use std::io::{Seek, SeekFrom, Write};
                for p in fs::read_dir(m.join("objects/pack")).unwrap().flatten() {
                    if p.path().extension().is_some_and(|e| e == "pack") {
                        let len = fs::metadata(p.path()).unwrap().len();
                        let mut f = fs::OpenOptions::new().write(true).open(p.path()).unwrap();
                        f.seek(SeekFrom::Start(len / 3)).unwrap();
                        f.write_all(&vec![0x5a; (len / 3) as usize]).unwrap();
                    }
                }
            },
            Then::FreshClone,
        ),
        (
            "an empty directory (a killed clone)",
            |m| {
                fs::remove_dir_all(m).unwrap();
                fs::create_dir(m).unwrap();
            },
            Then::FreshClone,
        ),
        (
            "garbage in HEAD and config",
            |m| {
                for f in ["HEAD", "config"] {
                    let _ = fs::remove_file(m.join(f));
                    fs::write(m.join(f), "not git\0\n").unwrap();
                }
            },
            Then::FreshClone,
        ),
    ];
    let t = TestDir::new();
    let s = Served::new(t.path());
    for (i, (what, damage, then)) in damages.into_iter().enumerate() {
        let home = t.path().join(format!("home-{i}"));
        run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
        let mirror = mirror_of(&home);
        damage(&mirror);
        s.release("a", &format!("3.{i}.0"));
        let o = update(&home, &s.uri);
        let err = support::stderr_of(&o);
        assert_eq!(
            err.contains("cloning afresh"),
            then == Then::FreshClone,
            "{what}: does the update say it starts a fresh mirror? {err}"
        );
        assert_eq!(
            collection_object(&home),
            s.fresh_object(t.path()),
            "{what}: the object is the fresh setup's"
        );
        assert_eq!(
            mirror_of(&home),
            mirror,
            "{what}: the mirror is back in place"
        );
        // The fresh mirror works: the next update fetches into it, no warning.
        s.release("c", &format!("5.{i}.0"));
        let o = update(&home, &s.uri);
        let err = support::stderr_of(&o);
        assert!(!err.contains("cloning afresh"), "{what}: {err}");
        assert_eq!(collection_object(&home), s.fresh_object(t.path()), "{what}");
        support::assert_fsck_clean(&home);
    }
}

#[test]
fn concurrent_updates_after_a_release_agree_and_leave_the_store_clean() {
    let t = TestDir::new();
    let s = Served::new(t.path());
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    s.release("b", "3.0.0");
    let children: Vec<_> = (0..6)
        .map(|_| {
            let mut c = stepman(&home, ["update", "-c", &s.uri]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", support::stderr_of(&o));
    }
    assert_eq!(collection_object(&home), s.fresh_object(t.path()));
    support::assert_fsck_clean(&home);
    assert!(
        support::temp_entries(&home).is_empty(),
        "nothing left in tmp/: {:?}",
        support::temp_entries(&home)
    );
}

#[test]
fn delete_removes_the_mirror() {
    let t = TestDir::new();
    let s = Served::new(t.path());
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    let mirror = mirror_of(&home);
    run_ok(&mut stepman(&home, ["delete", "-c", &s.uri]));
    assert!(!mirror.exists(), "{} is gone", mirror.display());
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    assert_eq!(collection_object(&home), s.fresh_object(t.path()));
    support::assert_fsck_clean(&home);
}

/// An update whose fetch fails because the StepLib cannot be reached (here: its repository gone
/// from the server) fails, naming the cause, and keeps the mirror as it was: a network blip
/// does not cost the next update a full clone. Once the StepLib is back, the update fetches
/// into the same mirror, with no "cloning afresh".
#[test]
fn an_unreachable_steplib_keeps_the_mirror() {
    let t = TestDir::new();
    let (s, home, mirror, ino) = set_up_then_release(&t);
    let away = t.path().join("lib.git.away");
    fs::rename(&s.bare, &away).unwrap();
    let o = support::output(&mut stepman(&home, ["update", "-c", &s.uri]));
    failed_keeping_the_mirror(&o, &home, &mirror, ino, "");
    fs::rename(&away, &s.bare).unwrap();
    recovers_into_the_mirror(&t, &s, &home, &mirror, ino);
}

/// The network goes down between the update's first look at the StepLib (`git ls-remote`,
/// which succeeds) and its fetch into the mirror (which fails, as does every later request):
/// the update fails, naming the cause, and the mirror is kept as it was, not discarded for a
/// fresh clone that cannot work either. Played with a `git` on PATH that passes everything to
/// the real git until the first `ls-remote`, then refuses every network command.
#[test]
fn a_network_failure_during_the_fetch_keeps_the_mirror() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let (s, home, mirror, ino) = set_up_then_release(&t);
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = t.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let state = t.path().join("net");
    fs::create_dir(&state).unwrap();
    fs::write(state.join("arm"), "").unwrap();
    let script = format!(
        "#!/bin/sh\nstate='{}'\nfor a in \"$@\"; do case \"$a\" in\n  ls-remote|fetch|clone)\n    if [ -e \"$state/down\" ]; then echo 'fatal: unable to connect to 127.0.0.1: Connection refused' >&2; exit 128; fi\n    if [ \"$a\" = ls-remote ] && [ -e \"$state/arm\" ]; then mv \"$state/arm\" \"$state/down\"; fi\n    break;;\nesac; done\nexec '{}' \"$@\"\n",
        state.display(),
        real.trim()
    );
    fs::write(bin.join("git"), script).unwrap();
    fs::set_permissions(bin.join("git"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = support::output(stepman(&home, ["update", "-c", &s.uri]).env("PATH", &path));
    assert!(
        state.join("down").exists(),
        "the first ls-remote went through the wrapper"
    );
    failed_keeping_the_mirror(&o, &home, &mirror, ino, "Connection refused");
    recovers_into_the_mirror(&t, &s, &home, &mirror, ino);
}

/// A served StepLib set up in `home/` of `t`, then a new release of group `a` upstream: the
/// StepLib, the home, its mirror and the mirror's inode.
fn set_up_then_release(t: &TestDir) -> (Served, PathBuf, PathBuf, u64) {
    use std::os::unix::fs::MetadataExt;
    let s = Served::new(t.path());
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    let mirror = mirror_of(&home);
    let ino = fs::metadata(&mirror).unwrap().ino();
    s.release("a", "3.0.0");
    (s, home, mirror, ino)
}

/// `o`, an update, failed (saying `cause`) and left the mirror `mirror` (inode `ino`) in place.
fn failed_keeping_the_mirror(o: &Output, home: &Path, mirror: &Path, ino: u64, cause: &str) {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(o));
    let err = support::stderr_of(o);
    assert!(err.contains(cause), "{err}");
    assert!(!err.contains("cloning afresh"), "{err}");
    assert_eq!(mirror_of(home), mirror);
    assert_eq!(
        fs::metadata(mirror).unwrap().ino(),
        ino,
        "the mirror kept: {err}"
    );
    assert!(mirror.join("HEAD").is_file());
}

/// Back online, an update fetches into the kept mirror `mirror` (inode `ino`) and makes the
/// object a fresh setup makes.
fn recovers_into_the_mirror(t: &TestDir, s: &Served, home: &Path, mirror: &Path, ino: u64) {
    use std::os::unix::fs::MetadataExt;
    let o = support::output(stepman(home, ["update", "-c", &s.uri]).env("RUST_LOG", "info"));
    assert!(o.status.success(), "{}", support::describe(&o));
    let err = support::stderr_of(&o);
    assert!(
        err.contains("into the kept mirror") && !err.contains("cloning afresh"),
        "{err}"
    );
    assert_eq!(fs::metadata(mirror).unwrap().ino(), ino);
    assert_eq!(collection_object(home), s.fresh_object(t.path()));
    support::assert_fsck_clean(home);
}

/// The collection object `home`'s name points at, as a directory.
fn collection_dir(home: &Path) -> PathBuf {
    fs::canonicalize(collection_name(home)).unwrap()
}

/// The (device, inode) of each of group `id`'s three files in the collection object `dir`.
fn group_inodes(dir: &Path, id: &str) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    [
        format!("groups/{id}.json"),
        format!("index/{id}.json"),
        format!("definitions/{id}.yml"),
    ]
    .iter()
    .map(|rel| {
        let m = fs::metadata(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        (m.dev(), m.ino())
    })
    .collect()
}

/// An update takes an unchanged group's files from the object it replaces by hard link (the
/// same inodes, nothing copied); where the link is refused (EPERM, injected: a store of another
/// owner under `fs.protected_hardlinks`) it copies them, as it does a file of the old object
/// that is no longer read-only. Either way the object is the one a fresh setup of the commit
/// makes, and fsck stays clean after gc collects the old object.
#[test]
fn an_update_links_the_unchanged_groups_files_and_copies_them_where_it_cannot() {
    let t = TestDir::new();
    let s = Served::new(t.path());
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &s.uri]));
    let first = collection_dir(&home);

    s.release("b", "2.1.0");
    run_ok(&mut stepman(&home, ["update", "-c", &s.uri]));
    let second = collection_dir(&home);
    assert_ne!(second, first, "the update made a new object");
    assert_eq!(
        group_inodes(&second, "a"),
        group_inodes(&first, "a"),
        "the unchanged group's files are not the old object's"
    );
    assert_ne!(
        group_inodes(&second, "b"),
        group_inodes(&first, "b"),
        "the changed group's files were taken over"
    );
    assert_eq!(
        collection_object(&home),
        s.fresh_object(t.path()),
        "a fresh setup of the commit makes another object"
    );
    run_ok(&mut stepman(&home, ["gc"]));
    assert!(!first.exists(), "gc kept the replaced object");
    support::assert_fsck_clean(&home);
    let o = step_info(&home, &s.uri, &["--id", "a", "--version", "1.0.0"]);
    assert!(o.contains("Version: 1.0.0"), "{o}");

    if !strace_usable("steplib_mirror_links_refused") {
        return;
    }
    s.release("c", "0.3.0");
    let log = t.path().join("refused.strace");
    let o = support::output(
        &mut support::Traced::new(&home, &log)
            .follow()
            .inject("linkat:error=EPERM")
            .stepman(["update", "-c", &s.uri]),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    let third = collection_dir(&home);
    assert_ne!(third, second);
    for (x, y) in group_inodes(&third, "a")
        .iter()
        .zip(group_inodes(&second, "a"))
    {
        assert_ne!(*x, y, "a file was linked though every link was refused");
    }
    assert_eq!(collection_object(&home), s.fresh_object(t.path()));
    run_ok(&mut stepman(&home, ["gc"]));
    support::assert_fsck_clean(&home);

    // A file of the bound object made writable (tampered with) is copied, not shared.
    use std::os::unix::fs::PermissionsExt;
    let tampered = third.join("groups/a.json");
    fs::set_permissions(&tampered, fs::Permissions::from_mode(0o644)).unwrap();
    s.release("c", "0.4.0");
    run_ok(&mut stepman(&home, ["update", "-c", &s.uri]));
    let fourth = collection_dir(&home);
    let copy = fs::metadata(fourth.join("groups/a.json")).unwrap();
    assert_eq!(copy.permissions().mode() & 0o7777, 0o444);
    assert_ne!(group_inodes(&fourth, "a")[0], group_inodes(&third, "a")[0]);
    assert_eq!(group_inodes(&fourth, "a")[1], group_inodes(&third, "a")[1]);
    assert_eq!(collection_object(&home), s.fresh_object(t.path()));
    run_ok(&mut stepman(&home, ["gc"]));
    support::assert_fsck_clean(&home);
}
