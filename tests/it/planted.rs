//! Planted symlinks and foreign-owned stores.
//!
//! Someone who can write into a store (another user of a shared cache, a compromised job) swaps
//! one of its directories (`tmp`, `locks`, an object shard, a name route) or a temp dir for a
//! symlink to a directory outside the store. stepman must refuse or leave the link alone: nothing
//! is ever written, changed or deleted outside the store through it. Each case puts a sentinel
//! (plus whatever the attacker moved there) in the outside directory and checks, after import,
//! gc (with its sweep), `fsck --repair` and `delete`, that the outside tree is byte-identical.
//! The other way round, an `activate` or `export` destination that is (or leads through a
//! symlink) inside a store, or contains one, is refused and leaves the store whole.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{
    NOBODY, TestDir, as_nobody, import, nobody, output, run, stderr_of, stepman, store_root,
};

/// Every entry under `dir`: kind, mode, and contents or link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    support::paths_under(dir)
        .into_iter()
        .filter(|p| p != dir)
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {:o}", m.mode())
            } else {
                format!("file {:o} {:?}", m.mode(), fs::read(&p).unwrap())
            };
            (p.strip_prefix(dir).unwrap().to_path_buf(), what)
        })
        .collect()
}

/// An outside directory holding a sentinel file.
fn outside(t: &TestDir, name: &str) -> PathBuf {
    let d = t.path().join(name);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("sentinel"), b"do not touch").unwrap();
    d
}

fn small_tree(dir: &Path, tag: &str) -> PathBuf {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), tag).unwrap();
    fs::write(dir.join("sub/b.txt"), format!("{tag} b")).unwrap();
    dir.to_path_buf()
}

/// A local StepLib with one step, and the store route its names live under once set up.
fn steplib(t: &TestDir) -> PathBuf {
    let lib = t.path().join("lib");
    support::hello_steplib(&lib);
    lib
}

/// The tree `<t>/new` ([`small_tree`] tagged `new`): what the attacks try to import.
fn new_tree(t: &TestDir) -> PathBuf {
    small_tree(&t.path().join("new"), "new")
}

/// The name `r/s/1` of [`prepared`] still resolves to its object `old_id`.
fn assert_old_name_resolves(home: &Path, old_id: &str) {
    let o = run(home, &["store", "resolve", "r/s/1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(old_id));
}

/// [`assert_old_name_resolves`], and fsck is clean.
fn assert_intact(home: &Path, old_id: &str) {
    assert_old_name_resolves(home, old_id);
    support::assert_fsck_clean(home);
}

/// The id the bytes of `src` get, from a throwaway store.
fn id_of(t: &TestDir, src: &Path) -> String {
    import(&t.path().join("scratch-home"), src, None)
}

/// Runs the commands that write or delete (import, gc with its sweep, fsck --repair, delete),
/// checking after each that `outside` is unchanged. Returns the import's output.
fn attack_commands(home: &Path, lib: &Path, src: &Path, name: &str, outside: &Path) -> Output {
    let before = snapshot(outside);
    let lib = lib.to_str().unwrap();
    let imp = run(
        home,
        &["store", "import", src.to_str().unwrap(), "--name", name],
    );
    assert_eq!(snapshot(outside), before, "import wrote outside the store");
    let steps: [&[&str]; 5] = [
        &["gc"],
        &["fsck", "--repair"],
        &["delete", "-c", lib],
        &["gc"],
        &["store", "import", src.to_str().unwrap()],
    ];
    for args in steps {
        let o = run(home, args);
        assert_eq!(
            snapshot(outside),
            before,
            "`stepman {}` touched the outside directory (exit {}, stderr {})",
            args.join(" "),
            o.status,
            stderr_of(&o)
        );
    }
    imp
}

fn assert_refused(o: &Output, planted: &Path) {
    let err = stderr_of(o);
    assert!(!o.status.success(), "accepted a planted symlink: {err}");
    assert!(
        err.contains(&planted.display().to_string()) && err.contains("symlink"),
        "the error names the planted symlink {}: {err}",
        planted.display()
    );
}

/// A store with a collection and one named object, ready to be tampered with.
fn prepared(t: &TestDir) -> (PathBuf, PathBuf, String) {
    let home = t.path().join("home");
    let lib = steplib(t);
    support::run_ok(&mut stepman(&home, ["setup", "-c", lib.to_str().unwrap()]));
    let old = small_tree(&t.path().join("old"), "old");
    let id = import(&home, &old, Some("r/s/1"));
    (home, lib, id)
}

fn route_of_collection(home: &Path) -> String {
    fs::read_dir(store_root(home).join("names"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|r| r != "r")
        .expect("the collection's route")
}

/// Replaces `dir` (inside the store) by a symlink to `to`, moving its contents there first.
fn plant(dir: &Path, to: &Path) {
    if dir.exists() {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            fs::rename(e.path(), to.join(e.file_name())).unwrap();
        }
        fs::remove_dir(dir).unwrap();
    }
    symlink(to, dir).unwrap();
}

#[test]
fn planted_store_directories_are_refused() {
    for which in ["tmp", "locks", "objects", "names"] {
        let t = TestDir::new();
        let (home, lib, _) = prepared(&t);
        let out = outside(&t, "outside");
        let planted = store_root(&home).join(which);
        plant(&planted, &out);
        let new = new_tree(&t);
        let imp = attack_commands(&home, &lib, &new, "r/s/2", &out);
        assert_refused(&imp, &planted);
        for args in [&["gc"][..], &["fsck"], &["store", "resolve", "r/s/1"]] {
            assert_refused(&run(&home, args), &planted);
        }
        // Put back by hand, the store is intact.
        fs::remove_file(&planted).unwrap();
        fs::create_dir(&planted).unwrap();
        for e in fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "sentinel" {
                fs::rename(e.path(), planted.join(e.file_name())).unwrap();
            }
        }
        support::assert_fsck_clean(&home);
    }
}

/// The store lock files are opened with `O_CREAT`: a dangling link would create its target.
#[test]
fn planted_store_lock_files_are_refused() {
    for which in ["gc.lock", "gc-intent.lock"] {
        let t = TestDir::new();
        let (home, lib, old_id) = prepared(&t);
        let out = outside(&t, "outside");
        let planted = store_root(&home).join("locks").join(which);
        fs::remove_file(&planted).unwrap();
        symlink(out.join("created"), &planted).unwrap();
        let new = new_tree(&t);
        let imp = attack_commands(&home, &lib, &new, "r/s/2", &out);
        assert_refused(&imp, &planted);
        assert!(!out.join("created").exists());
        fs::remove_file(&planted).unwrap();
        fs::write(&planted, b"").unwrap();
        assert_intact(&home, &old_id);
    }
}

#[test]
fn planted_name_lock_is_not_followed() {
    let t = TestDir::new();
    let (home, _lib, old_id) = prepared(&t);
    let out = outside(&t, "outside");
    let digest = blake3::hash(b"r/s/2").to_hex();
    let planted = store_root(&home)
        .join("locks/names")
        .join(format!("{}.lock", &digest[..32]));
    symlink(out.join("created"), &planted).unwrap();
    let before = snapshot(&out);
    let new = new_tree(&t);
    // The single-flight lock of this name is the planted link: the fill is refused.
    let o = run(
        &home,
        &[
            "store",
            "import",
            new.to_str().unwrap(),
            "--name",
            "r/s/2",
            "--if-missing",
        ],
    );
    let err = stderr_of(&o);
    assert!(!o.status.success(), "accepted a planted lock link: {err}");
    assert!(err.contains(&planted.display().to_string()), "{err}");
    assert!(
        !out.join("created").exists(),
        "a file was created through the link"
    );
    assert_eq!(snapshot(&out), before);
    // Everything else still works, and the link itself is left for the operator.
    assert_old_name_resolves(&home, &old_id);
    fs::remove_file(&planted).unwrap();
    let o = run(
        &home,
        &[
            "store",
            "import",
            new.to_str().unwrap(),
            "--name",
            "r/s/2",
            "--if-missing",
        ],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    support::assert_fsck_clean(&home);
}

#[test]
fn planted_object_shard_is_refused() {
    let t = TestDir::new();
    let (home, lib, old_id) = prepared(&t);
    let out = outside(&t, "outside");
    let new = new_tree(&t);
    let new_id = id_of(&t, &new);
    assert_ne!(
        &new_id[..2],
        &old_id[..2],
        "pick other contents: same shard"
    );
    let planted = store_root(&home).join("objects").join(&new_id[..2]);
    assert!(!planted.exists());
    symlink(&out, &planted).unwrap();
    let imp = attack_commands(&home, &lib, &new, "r/s/2", &out);
    assert_refused(&imp, &planted);
    assert!(!out.join(&new_id).exists(), "published outside the store");
    assert!(
        run(&home, &["store", "resolve", "r/s/2"]).status.code() == Some(1),
        "the name was not bound"
    );
    // fsck --repair (run above) moved the foreign link into quarantine, not what it points at;
    // the last import without a name then made the shard a real directory.
    assert!(fs::symlink_metadata(&planted).is_ok_and(|m| m.is_dir()));
    let quarantined: Vec<_> = fs::read_dir(store_root(&home).join("quarantine"))
        .unwrap()
        .map(|e| fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(quarantined, std::slice::from_ref(&out));
    assert_eq!(
        import(&home, &new, Some("r/s/2")),
        new_id,
        "with the link gone, the import works"
    );
    assert!(!out.join(&new_id).exists());
    assert_intact(&home, &old_id);
}

#[test]
fn planted_name_route_is_refused() {
    let t = TestDir::new();
    let (home, lib, old_id) = prepared(&t);
    let route = route_of_collection(&home);
    // The attacker moves the collection's route (its `_steplib/current` name) outside and links
    // it back: `delete` would then unbind names outside the store.
    let out = outside(&t, "outside");
    let planted = store_root(&home).join("names").join(&route);
    plant(&planted, &out);
    assert!(fs::symlink_metadata(out.join("_steplib/current")).is_ok());
    let new = new_tree(&t);
    let name = format!("{route}/x/1");
    let imp = attack_commands(&home, &lib, &new, &name, &out);
    assert_refused(&imp, &planted);
    let del = run(&home, &["delete", "-c", lib.to_str().unwrap()]);
    assert_refused(&del, &planted);
    // And an id directory planted inside a real route.
    let out2 = outside(&t, "outside2");
    fs::create_dir_all(store_root(&home).join("names/r/t")).unwrap();
    let planted2 = store_root(&home).join("names/r/t");
    fs::remove_dir(&planted2).unwrap();
    symlink(&out2, &planted2).unwrap();
    let before = snapshot(&out2);
    let o = run(
        &home,
        &["store", "import", new.to_str().unwrap(), "--name", "r/t/1"],
    );
    assert_refused(&o, &planted2);
    assert_eq!(snapshot(&out2), before);
    assert_old_name_resolves(&home, &old_id);
}

#[test]
fn planted_temp_dirs_and_lock_links_are_not_followed() {
    let t = TestDir::new();
    let (home, lib, old_id) = prepared(&t);
    let tmp = store_root(&home).join("tmp");
    let out = outside(&t, "outside");
    fs::create_dir(out.join("dir")).unwrap();
    fs::write(out.join("dir/inner"), b"inner").unwrap();
    // A dead temp dir that is a link (no lock file), one with a lock file, a lock file that is
    // a link to an outside file, and a link inside a real dead temp dir.
    symlink(&out, tmp.join("ingest-00000000000000aa00000001")).unwrap();
    symlink(&out, tmp.join("ingest-00000000000000bb00000001")).unwrap();
    fs::write(tmp.join("ingest-00000000000000bb00000001.lock"), b"").unwrap();
    symlink(
        out.join("sentinel"),
        tmp.join("ingest-00000000000000cc00000001.lock"),
    )
    .unwrap();
    fs::create_dir(tmp.join("ingest-00000000000000dd00000001")).unwrap();
    symlink(&out, tmp.join("ingest-00000000000000dd00000001/tree")).unwrap();
    fs::set_permissions(
        tmp.join("ingest-00000000000000dd00000001"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let new = new_tree(&t);
    let imp = attack_commands(&home, &lib, &new, "r/s/2", &out);
    assert!(imp.status.success(), "{}", stderr_of(&imp));
    // The sweep removed the links themselves.
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "tmp holds {left:?}");
    assert_intact(&home, &old_id);
}

fn chown_tree(p: &Path, uid: u32) {
    let st = Command::new("chown")
        .args(["-hR", &format!("{uid}:{uid}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A store owned by another user, used by root: a link that user planted is still refused; with
/// the link gone, root's writes are refused as the owner's store (issue 9, item 10), the owner's
/// work is safe and the store stays clean.
#[test]
fn store_owned_by_another_user_with_planted_tmp() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let t = TestDir::new();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (home, lib, old_id) = prepared(&t);
    chown_tree(&home, NOBODY);
    let out = outside(&t, "outside");
    chown_tree(&out, NOBODY);
    let tmp = store_root(&home).join("tmp");
    // The other user plants the link.
    let o = nobody()
        .args(["sh", "-c", "rmdir \"$0\" && ln -s \"$1\" \"$0\""])
        .arg(&tmp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let new = new_tree(&t);
    let imp = attack_commands(&home, &lib, &new, "r/s/2", &out);
    assert_refused(&imp, &tmp);
    fs::remove_file(&tmp).unwrap();
    fs::create_dir(&tmp).unwrap();
    chown_tree(&tmp, NOBODY);
    let o = run(
        &home,
        &["store", "import", new.to_str().unwrap(), "--name", "r/s/2"],
    );
    assert!(
        !o.status.success() && stderr_of(&o).contains("belongs to uid 65534"),
        "root wrote into another user's store: {}",
        stderr_of(&o)
    );
    chown_tree(&new, NOBODY);
    let o = as_nobody(
        &home,
        &["store", "import", new.to_str().unwrap(), "--name", "r/s/2"],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_intact(&home, &old_id);
}

/// A store owned by root, used by `nobody`: writes are refused with an error naming the store,
/// nothing changes, and reads still work.
#[test]
fn store_owned_by_root_used_by_nobody() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let t = TestDir::new();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (home, _lib, old_id) = prepared(&t);
    let new = new_tree(&t);
    chown_tree(&new, NOBODY);
    let before = snapshot(&home);
    for args in [
        vec!["store", "import", new.to_str().unwrap(), "--name", "r/s/1"],
        vec!["gc"],
        vec!["fsck", "--repair"],
    ] {
        let o = as_nobody(&home, &args);
        let err = stderr_of(&o);
        // fsck --repair finds nothing to repair: it may succeed, writing nothing.
        if args[0] != "fsck" || !o.status.success() {
            assert!(!o.status.success(), "`{}` as nobody: {err}", args.join(" "));
            assert!(
                err.contains(&store_root(&home).display().to_string()),
                "the error names the store: {err}"
            );
        }
        assert_eq!(
            snapshot(&home),
            before,
            "`{}` changed the store",
            args.join(" ")
        );
    }
    let o = as_nobody(&home, &["store", "resolve", "r/s/1"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&old_id),
        "reads work: {}",
        stderr_of(&o)
    );
    support::assert_fsck_clean(&home);
}

/// The object a name of the local StepLib's step `s` (see [`support::local_steplib`]) points at:
/// the one whose `step.sh` echoes `version`.
fn step_object(home: &Path, version: &str) -> PathBuf {
    support::object_dirs(home)
        .into_iter()
        .find(|o| fs::read(o.join("step.sh")).ok() == Some(format!("echo {version}\n").into()))
        .unwrap_or_else(|| panic!("no object of step s {version}"))
}

/// `activate -p PATH` replaces what is at PATH, `-y YML` writes YML: a PATH or YML inside the
/// store (an object, the store's own directories, through a symlink too) or containing it (the
/// home, an ancestor of the home) would rewrite objects or wipe the store. Each is refused with
/// an error that says why, and the store stays whole: fsck is clean and both steps activate
/// with their own files afterwards.
#[test]
fn activate_inside_or_around_the_store_is_refused() {
    type Case = (&'static str, fn(&Path, &Path) -> (PathBuf, Option<PathBuf>));
    let cases: [Case; 10] = [
        ("-p an object", |h, _| (step_object(h, "1.0.0"), None)),
        ("-p the home", |h, _| (h.to_path_buf(), None)),
        ("-p store-v1", |h, _| (store_root(h), None)),
        ("-p objects", |h, _| (store_root(h).join("objects"), None)),
        ("-p a new dir in tmp", |h, _| {
            (store_root(h).join("tmp/x"), None)
        }),
        ("-p an ancestor of the home", |h, _| {
            (h.parent().unwrap().to_path_buf(), None)
        }),
        ("-p a symlink to an object", |h, t| {
            let link = t.join("link-to-object");
            symlink(step_object(h, "1.0.0"), &link).unwrap();
            (link, None)
        }),
        ("-p through a symlink to the store", |h, t| {
            let link = t.join("link-to-store");
            symlink(store_root(h), &link).unwrap();
            (link.join("objects"), None)
        }),
        ("-y into an object", |h, t| {
            (t.join("out"), Some(step_object(h, "1.0.0").join("step.sh")))
        }),
        ("-y through .. into the store", |h, t| {
            let y = t.join("nowhere/../home-parent/home/store-v1/format");
            assert!(h.ends_with("home-parent/home"));
            (t.join("out"), Some(y))
        }),
    ];
    // Every case runs (and all the failing ones are named), not just up to the first failure.
    let failed: Vec<&str> = cases
        .into_iter()
        .filter(|(what, case)| std::panic::catch_unwind(|| refused(what, *case)).is_err())
        .map(|(what, _)| what)
        .collect();
    assert!(failed.is_empty(), "not refused cleanly: {failed:?}");
}

fn refused(what: &str, case: fn(&Path, &Path) -> (PathBuf, Option<PathBuf>)) {
    {
        let t = TestDir::new();
        let home = t.path().join("home-parent/home");
        let lib = t.path().join("lib");
        support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
        let lib = lib.to_str().unwrap();
        let activate = |v: &str, p: &Path, y: Option<&Path>| {
            let mut args = vec![
                "activate".to_string(),
                "-c".into(),
                lib.into(),
                "-i".into(),
                "s".into(),
                "-v".into(),
                v.into(),
                "-p".into(),
                p.to_str().unwrap().into(),
            ];
            if let Some(y) = y {
                args.extend(["-y".into(), y.to_str().unwrap().into()]);
            }
            run(&home, &args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let first = activate("1.0.0", &t.path().join("first"), None);
        assert!(first.status.success(), "{what}: {}", stderr_of(&first));
        let (p, y) = case(&home, t.path());
        let o = activate("2.0.0", &p, y.as_deref());
        let err = stderr_of(&o);
        assert!(
            !o.status.success(),
            "{what}: activate -p {} {:?} was accepted: {err}",
            p.display(),
            y
        );
        assert!(
            err.contains("inside the store") || err.contains("contains the store"),
            "{what}: the error says why: {err}"
        );
        assert!(
            home.join("store-v1/format").is_file(),
            "{what}: the store is gone"
        );
        support::assert_fsck_clean(&home);
        for v in ["1.0.0", "2.0.0"] {
            let dest = t.path().join(format!("after-{v}"));
            let o = activate(v, &dest, None);
            assert!(o.status.success(), "{what}: {}", stderr_of(&o));
            assert_eq!(
                fs::read_to_string(dest.join("step.sh")).unwrap(),
                format!("echo {v}\n"),
                "{what}: activating {v} afterwards"
            );
        }
    }
}

/// The read-only stores layered under the writable one are stores too: a destination inside
/// one of them, or containing it, is refused like one in the writable store; so is a
/// `store export` into a store.
#[test]
fn a_destination_in_or_around_a_layered_store_is_refused() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
    let lib = lib.to_str().unwrap();
    let baked = t.path().join("baked");
    support::run_ok(&mut stepman(&baked, ["preload", "-c", lib, "s@1.0.0"]));
    let home = t.path().join("home");
    let layered = |args: &[&str]| {
        let mut cmd = stepman(&home, args);
        cmd.env("STEPMAN_READ_ONLY_STORES", &baked);
        output(&mut cmd)
    };
    let object = step_object(&baked, "1.0.0");
    for dest in [object.clone(), store_root(&baked), baked.clone()] {
        let d = dest.to_str().unwrap();
        let o = layered(&["activate", "-c", lib, "-i", "s", "-v", "2.0.0", "-p", d]);
        let err = stderr_of(&o);
        assert!(!o.status.success(), "activate -p {d} was accepted: {err}");
        assert!(
            err.contains("the store at") && err.contains(&store_root(&baked).display().to_string()),
            "the error names the read-only store: {err}"
        );
    }
    support::assert_fsck_clean(&baked);
    let dest = t.path().join("one");
    let o = layered(&support::activate_args(lib, "s", "1.0.0", &dest));
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        "echo 1.0.0\n"
    );

    // `store export` into a store.
    import(
        &home,
        &small_tree(&t.path().join("src"), "x"),
        Some("r/x/1"),
    );
    let inside = store_root(&home).join("tmp/x");
    let o = output(&mut support::export_cmd(&home, "r/x/1", &inside));
    assert!(
        !o.status.success() && stderr_of(&o).contains("inside the store"),
        "{}",
        stderr_of(&o)
    );
    assert!(!inside.exists());
    support::assert_fsck_clean(&home);
}

/// Every directory and file under `root` (symlinks aside) whose mode lets group or others write.
fn group_or_other_writable(root: &Path) -> Vec<String> {
    support::paths_under(root)
        .into_iter()
        .filter_map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            (!m.file_type().is_symlink() && m.mode() & 0o022 != 0)
                .then(|| format!("{} {:o}", p.display(), m.mode() & 0o7777))
        })
        .collect()
}

/// A store in a setgid group directory (`2775`, as a CI group's cache dir is) written under
/// `umask 002`: every directory and file stepman creates in it has a fixed mode that no group
/// member can write through (issue 9, item 5).
#[test]
fn store_in_a_group_dir_under_umask_002_is_writable_by_its_owner_only() {
    let t = TestDir::new();
    let group = t.path().join("ci-cache");
    fs::create_dir(&group).unwrap();
    fs::set_permissions(&group, fs::Permissions::from_mode(0o2775)).unwrap();
    let home = group.join("stepman");
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0"]);
    let lib_s = lib.to_str().unwrap();
    let src = small_tree(&t.path().join("src"), "x");
    let other = small_tree(&t.path().join("other"), "y");
    let dest = t.path().join("dest");
    let umask_002 = |args: &[&str]| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "umask 002; exec \"$STEPMAN\" \"$@\"", "sh"])
            .args(args);
        support::store_env(&mut cmd, &home);
        support::run_ok(&mut cmd);
    };
    umask_002(&["store", "import", src.to_str().unwrap(), "--name", "r/s/1"]);
    umask_002(&["store", "import", other.to_str().unwrap()]);
    umask_002(&["preload", "-c", lib_s, "s@1.0.0"]);
    umask_002(&support::activate_args(lib_s, "s", "1.0.0", &dest));
    umask_002(&["gc"]);
    umask_002(&["fsck", "--repair"]);
    let bad = group_or_other_writable(&store_root(&home));
    assert!(bad.is_empty(), "group- or other-writable: {bad:#?}");
    support::assert_fsck_clean(&home);
}

/// Store directories made group-writable, and entries owned by another user (a name bound by a
/// co-tenant, an id dir and an object file created by them): `fsck` reports each, `--repair`
/// (here as root, the store's owner) takes write access away, gives ownership back and drops the
/// names it did not bind, and `fsck` is clean again (issue 9, items 5 and 10).
#[test]
fn unsafe_modes_and_foreign_owners_are_reported_and_repaired() {
    let t = TestDir::new();
    let (home, _lib, old_id) = prepared(&t);
    let root = store_root(&home);
    let other = small_tree(&t.path().join("other"), "other");
    let other_id = import(&home, &other, Some("r/o/1"));
    for (d, mode) in [
        ("names", 0o775),
        ("names/r", 0o777),
        ("names/r/s", 0o2775),
        ("locks", 0o775),
        ("tmp", 0o757),
    ] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(root.join("format"), fs::Permissions::from_mode(0o664)).unwrap();
    // A co-tenant re-points a name at another step's object, owning the link; owns an id dir
    // and a file of an object.
    let planted = root.join("names/r/s/2");
    symlink(
        format!("../../../objects/{}/{other_id}", &other_id[..2]),
        &planted,
    )
    .unwrap();
    std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::lchown(root.join("names/r/o"), Some(NOBODY), None).unwrap();
    let obj = root.join(format!("objects/{}/{old_id}", &old_id[..2]));
    std::os::unix::fs::lchown(obj.join("sub/b.txt"), Some(NOBODY), None).unwrap();

    let f = support::fsck_json(&home, &[]);
    assert_eq!(f.code, 1, "{}", f.stderr);
    let found: Vec<(String, PathBuf)> = f
        .problems()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                PathBuf::from(p["path"].as_str().unwrap()),
            )
        })
        .collect();
    for (kind, p) in [
        ("unsafe-permissions", root.join("names")),
        ("unsafe-permissions", root.join("names/r")),
        ("unsafe-permissions", root.join("names/r/s")),
        ("unsafe-permissions", root.join("locks")),
        ("unsafe-permissions", root.join("tmp")),
        ("unsafe-permissions", root.join("format")),
        ("foreign-owner", planted.clone()),
        ("foreign-owner", root.join("names/r/o")),
        ("foreign-owner", obj.clone()),
    ] {
        assert!(
            found.contains(&(kind.to_string(), p.clone())),
            "{kind} {} not reported: {found:#?}",
            p.display()
        );
    }

    let f = support::fsck_json(&home, &["--repair"]);
    assert!(
        f.problems().iter().all(|p| p["repaired"] == true),
        "{:#}\n{}",
        f.report,
        f.stderr
    );
    support::assert_fsck_clean(&home);
    assert!(
        fs::symlink_metadata(&planted).is_err(),
        "the planted name is kept"
    );
    assert!(group_or_other_writable(&root).is_empty());
    assert_eq!(fs::metadata(root.join("names/r/o")).unwrap().uid(), 0);
    assert_eq!(
        fs::symlink_metadata(obj.join("sub/b.txt")).unwrap().uid(),
        0
    );
    assert_old_name_resolves(&home, &old_id);
    let o = run(&home, &["store", "resolve", "r/o/1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&other_id));
}
