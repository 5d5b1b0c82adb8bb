//! The store used by a non-root user, a store baked by root and read by another user, and FIFOs
//! that another user plants where stepman opens lock files (none may hang a command).
//!
//! Root can do things an ordinary owner cannot (move a 0555 directory to another parent, write
//! into read-only directories), so these tests run the real binary as `nobody` through `setpriv`.
//! They need root to switch users: as any other user, or without `setpriv`, they say so and skip.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support::{
    self, NOBODY, activate_args, as_nobody, nobody, nobody_stepman, ok_stdout, output,
};

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `stepman <args>` as root (the test's own user) against `home`.
fn as_root(home: &Path, args: &[&str]) -> Output {
    support::run(home, args)
}

/// A world-readable scratch dir owned by `nobody`.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY)).unwrap();
    (t, work)
}

/// [`scratch`] with a local StepLib at `<tmp>/lib` (step `s` 1.0.0 and 2.0.0): the temp dir,
/// the work dir and the StepLib.
fn scratch_with_steplib() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (t, work) = scratch();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
    (t, work, lib)
}

fn make_tree(dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(dir.join("step.sh"), format!("#!/bin/sh\necho {tag}\n")).unwrap();
    fs::set_permissions(dir.join("step.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("sub/deeper/data.txt"), tag.repeat(1000)).unwrap();
    std::os::unix::fs::symlink("../step.sh", dir.join("sub/link")).unwrap();
}

/// Every path under `root` with its mode, size and mtime: what "wrote nothing" is checked against.
fn snapshot(root: &Path) -> Vec<String> {
    support::paths_under(root)
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            format!(
                "{} {:o} {} {} {}",
                p.display(),
                m.mode(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .collect()
}

#[test]
fn unprivileged_owner_can_gc_sweep_and_repair() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (_t, work) = scratch();
    let home = work.join("home");
    let (a, b) = (_t.path().join("a"), _t.path().join("b"));
    make_tree(&a, "a");
    make_tree(&b, "b");
    let ida = ok_stdout(
        &as_nobody(
            &home,
            &["store", "import", a.to_str().unwrap(), "--name", "r/a/1"],
        ),
        "import a",
    );
    let idb = ok_stdout(
        &as_nobody(&home, &["store", "import", b.to_str().unwrap()]),
        "import b",
    );
    assert_ne!(ida, idb);

    // A dead temp dir holding a read-only tree (its owner died before publishing).
    let dead = home.join("store-v1/tmp/ingest-dead");
    let o = nobody()
        .args([
            "sh",
            "-c",
            &format!(
                "mkdir -p {0}/tree/ro && echo x > {0}/tree/ro/f && chmod 555 {0}/tree/ro",
                dead.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());

    // gc must move the unnamed read-only object out (a non-root owner cannot rename a 0555
    // directory to another parent) and sweep the dead temp dir.
    let gc = ok_stdout(&as_nobody(&home, &["gc", "--json"]), "gc as nobody");
    let report: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(report["removed_objects"], serde_json::json!([idb]));
    assert_eq!(
        report["temp"]["reclaimed"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(!dead.exists());
    assert!(
        !home
            .join(format!("store-v1/objects/{}/{}", &idb[..2], idb))
            .exists()
    );
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck after gc");

    // Corrupt the named object; repair as nobody moves it aside and drops the name.
    let obj = home.join(format!("store-v1/objects/{}/{}", &ida[..2], ida));
    let f = obj.join("sub/deeper/data.txt");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&f, "tampered").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o444)).unwrap();
    let o = as_nobody(&home, &["fsck", "--repair", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<_> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"corrupt-object".to_string())
            && kinds.contains(&"dangling-name".to_string()),
        "{kinds:?}"
    );
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["repaired"] == true),
        "{report}"
    );
    assert!(!obj.exists());
    assert_eq!(
        as_nobody(&home, &["store", "resolve", "r/a/1"])
            .status
            .code(),
        Some(1)
    );
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck after repair");
    // A re-import as nobody restores it.
    assert_eq!(
        ok_stdout(
            &as_nobody(
                &home,
                &["store", "import", a.to_str().unwrap(), "--name", "r/a/1"]
            ),
            "re-import"
        ),
        ida
    );
}

#[test]
fn store_baked_by_root_serves_another_user_without_writing() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (_t, work) = scratch();
    let home = _t.path().join("baked");
    let a = _t.path().join("a");
    make_tree(&a, "a");
    let id = ok_stdout(
        &as_root(
            &home,
            &["store", "import", a.to_str().unwrap(), "--name", "r/a/1"],
        ),
        "import as root",
    );
    let before = snapshot(&home);

    let dir = ok_stdout(
        &as_nobody(&home, &["store", "resolve", "r/a/1"]),
        "resolve as nobody",
    );
    assert!(dir.ends_with(&id));
    let dest = work.join("step");
    ok_stdout(
        &as_nobody(&home, &["store", "export", "r/a/1", dest.to_str().unwrap()]),
        "export as nobody",
    );
    assert_eq!(
        fs::read(dest.join("step.sh")).unwrap(),
        fs::read(a.join("step.sh")).unwrap()
    );
    assert_eq!(
        fs::metadata(&dest).unwrap().uid(),
        NOBODY,
        "the copy belongs to the user"
    );
    fs::write(dest.join("step.sh"), "mine now").unwrap();
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck as nobody");

    // A miss needs write access: a clear error, exit 1, nothing written.
    let o = as_nobody(
        &home,
        &["store", "import", a.to_str().unwrap(), "--name", "r/a/2"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(snapshot(&home), before, "the baked store was modified");
}

/// Runs `stepman args` as `nobody` with a writable home layered over read-only stores.
fn as_nobody_layered(home: &Path, lower: &Path, args: &[&str]) -> Output {
    output(nobody_stepman(home, args).env("STEPMAN_READ_ONLY_STORES", lower))
}

#[test]
fn layered_writable_store_takes_the_misses_of_a_baked_one() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work, lib) = scratch_with_steplib();
    let lib_s = lib.to_str().unwrap();
    // Root bakes 1.0.0, then the archive of 1.0.0 disappears: a hit must not download.
    let baked = t.path().join("baked");
    ok_stdout(
        &as_root(&baked, &["preload", "-c", lib_s, "s@1.0.0"]),
        "preload as root",
    );
    fs::remove_file(lib.join("archives/s/1.0.0/step.zip")).unwrap();
    let before = snapshot(&baked);

    // Without a writable layer, the miss is a clear read-only error.
    let o = as_nobody(&baked, &activate_args(lib_s, "s", "2.0.0", &work.join("x")));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let home = work.join("home");
    for (v, dest) in [("1.0.0", "one"), ("2.0.0", "two")] {
        let dest = work.join(dest);
        let o = as_nobody_layered(&home, &baked, &activate_args(lib_s, "s", v, &dest));
        assert!(
            o.status.success(),
            "{v}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            fs::read(dest.join("step.sh")).unwrap(),
            format!("echo {v}\n").as_bytes()
        );
    }
    let cached = ok_stdout(
        &as_nobody_layered(&home, &baked, &["list-cached", "-c", lib_s]),
        "list-cached",
    );
    assert_eq!(cached.lines().collect::<Vec<_>>(), ["s@1.0.0", "s@2.0.0"]);
    // The miss went to the writable store only; the baked one is byte-for-byte as it was.
    assert_eq!(snapshot(&baked), before, "the read-only store was modified");
    let own = ok_stdout(
        &as_nobody(&home, &["list-cached", "-c", lib_s]),
        "list-cached of the writable store alone",
    );
    assert_eq!(own.lines().collect::<Vec<_>>(), ["s@2.0.0"]);
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck of the writable store");
    ok_stdout(
        &as_nobody(&baked, &["fsck"]),
        "fsck of the baked store as another user",
    );
}

/// Runs `cmd` to completion; kills it and fails when it is still running after 10 s (the
/// commands here take well under a second: only a hang gets near that).
fn finishes(mut cmd: Command, what: &str) -> Output {
    support::run_within(&mut cmd, std::time::Duration::from_secs(10), what)
}

/// `stepman <args>` as `nobody` (see [`nobody_stepman`]), which must finish (see [`finishes`]) and
/// succeed; returns its stdout.
fn finishes_ok(home: &Path, args: &[&str], what: &str) -> String {
    ok_stdout(&finishes(nobody_stepman(home, args), what), what)
}

/// Panics unless `o` failed (`what` it must not have done) with an error that names `planted`
/// and says it is not a regular file.
fn assert_fifo_refused(o: &Output, planted: &str, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what}: {err}");
    assert!(
        err.contains(planted) && err.contains("regular file"),
        "the error names the FIFO: {err}"
    );
}

/// Plants a FIFO at `path`, owned by root (another user than `nobody`, who cannot write it).
fn plant_fifo(path: &Path) {
    let o = Command::new("mkfifo")
        .args(["-m", "0644"])
        .arg(path)
        .output()
        .expect("run mkfifo");
    assert!(o.status.success(), "mkfifo {}", path.display());
}

/// Another user plants a FIFO named like an export's staging lock beside a shared destination.
/// The export's sweep of that directory must neither block in `open` (holding the store lock,
/// which would freeze the user's gc and every later activation) nor fail: it skips the foreign
/// entry, leaves it alone, and the activation exits 0 promptly. Later commands on the store
/// run as usual.
#[test]
fn a_fifo_planted_beside_the_destination_does_not_hang_activate() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work, lib) = scratch_with_steplib();
    let lib = lib.to_str().unwrap();
    let shared = t.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let fifo = shared.join(".step.stepman-0123456789abcdef.lock");
    plant_fifo(&fifo);
    // And staging dirs without their lock files of another user (not ours to remove) and of
    // root (which a sweep may try to remove, and cannot in this sticky directory).
    let theirs = shared.join(".step.stepman-00000000000000ff");
    let roots = shared.join(".step.stepman-00000000000000ee");
    for d in [&theirs, &roots] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("file"), b"theirs").unwrap();
    }
    std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
    let home = work.join("home");
    let dest = shared.join("step");
    for v in ["1.0.0", "2.0.0"] {
        let o = finishes(
            nobody_stepman(&home, activate_args(lib, "s", v, &dest)),
            &format!("activate {v} beside a planted FIFO"),
        );
        ok_stdout(&o, &format!("activate {v} beside a planted FIFO"));
        assert_eq!(
            fs::read(dest.join("step.sh")).unwrap(),
            format!("echo {v}\n").as_bytes()
        );
    }
    assert!(
        fs::symlink_metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()),
        "the other user's FIFO was left alone"
    );
    assert_eq!(fs::read(theirs.join("file")).unwrap(), b"theirs");
    assert_eq!(
        support::staging_entries(&shared),
        [
            ".step.stepman-00000000000000ee",
            ".step.stepman-00000000000000ff",
            ".step.stepman-0123456789abcdef.lock"
        ],
        "nothing of ours is left beside the destination"
    );
    finishes_ok(&home, &["gc"], "gc");
    finishes_ok(&home, &["fsck"], "fsck");
}

/// A FIFO where the store has a lock file (a temp dir's, or the store lock in a store others
/// can write): every command finishes promptly. A sweep skips a foreign temp lock and `fsck`
/// reports it as a foreign entry; a FIFO as the store lock is refused with an error naming it.
#[test]
fn a_fifo_as_a_store_lock_file_hangs_nothing() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work, lib) = scratch_with_steplib();
    let lib = lib.to_str().unwrap();
    let home = work.join("home");
    finishes_ok(
        &home,
        &activate_args(lib, "s", "1.0.0", &work.join("one")),
        "first activate",
    );
    let store = support::store_root(&home);
    let fifo = store.join("tmp/ingest-0123456789abcdef00000001.lock");
    plant_fifo(&fifo);
    // Every command that sweeps the temp area: an activation that downloads, gc, fsck.
    finishes_ok(
        &home,
        &activate_args(lib, "s", "2.0.0", &work.join("two")),
        "activate with a FIFO in tmp/",
    );
    finishes_ok(&home, &["gc"], "gc");
    for args in [&["fsck", "--json"][..], &["fsck", "--repair", "--json"]] {
        let o = finishes(nobody_stepman(&home, args), &args.join(" "));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON report ({e}): {o:?}"));
        let problems = report["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p["kind"] == "foreign-entry" && p["path"].as_str() == fifo.to_str()),
            "{args:?} reports the FIFO as a foreign entry: {report:#}"
        );
        assert_eq!(problems.len(), 1, "{args:?}: {report:#}");
    }
    fs::remove_file(&fifo).unwrap();

    // The store lock itself.
    let gc_lock = store.join("locks/gc.lock");
    fs::remove_file(&gc_lock).unwrap();
    plant_fifo(&gc_lock);
    let o = finishes(
        nobody_stepman(&home, activate_args(lib, "s", "1.0.0", &work.join("three"))),
        "activate with a FIFO as gc.lock",
    );
    assert_fifo_refused(
        &o,
        gc_lock.to_str().unwrap(),
        "used a FIFO as the store lock",
    );
    fs::remove_file(&gc_lock).unwrap();
    fs::write(&gc_lock, b"").unwrap();
    std::os::unix::fs::chown(&gc_lock, Some(NOBODY), Some(NOBODY)).unwrap();

    // A name's single-flight lock: the fill is refused, like a planted symlink there.
    let digest = blake3::hash(b"r/x/1").to_hex();
    let name_lock = store
        .join("locks/names")
        .join(format!("{}.lock", &digest[..32]));
    plant_fifo(&name_lock);
    let src = t.path().join("src");
    make_tree(&src, "x");
    let o = finishes(
        nobody_stepman(
            &home,
            [
                "store",
                "import",
                src.to_str().unwrap(),
                "--name",
                "r/x/1",
                "--if-missing",
            ],
        ),
        "import --if-missing with a FIFO as the name lock",
    );
    assert_fifo_refused(
        &o,
        name_lock.to_str().unwrap(),
        "used a FIFO as a name lock",
    );
    fs::remove_file(&name_lock).unwrap();

    // Not a lock, but read by every command the same way: the `format` file.
    let format = store.join("format");
    let text = fs::read(&format).unwrap();
    fs::remove_file(&format).unwrap();
    plant_fifo(&format);
    let o = finishes(
        nobody_stepman(&home, ["fsck"]),
        "fsck with a FIFO as format",
    );
    assert_fifo_refused(&o, "format", "read a FIFO as the format file");
    fs::remove_file(&format).unwrap();
    fs::write(&format, text).unwrap();
    std::os::unix::fs::chown(&format, Some(NOBODY), Some(NOBODY)).unwrap();
    finishes_ok(&home, &["fsck"], "fsck");
}

/// A user's own store used by root: every write root tries is refused with an error naming the
/// owner, and writes nothing (before, root created root-owned dirs and objects there, and the
/// owner's `gc`, `delete` and new bindings under them then failed); root's cache hits still
/// work, and afterwards the owner's `gc`, `delete` and new bindings all succeed.
#[test]
fn root_refuses_to_write_a_store_owned_by_another_user() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work, lib) = scratch_with_steplib();
    let home = work.join("home");
    let lib_s = lib.to_str().unwrap();
    let (a, c) = (t.path().join("a"), t.path().join("c"));
    make_tree(&a, "a");
    make_tree(&c, "c");
    ok_stdout(
        &as_nobody(
            &home,
            &["store", "import", a.to_str().unwrap(), "--name", "r/a/1"],
        ),
        "import as the owner",
    );
    ok_stdout(
        &as_nobody(&home, &["preload", "-c", lib_s, "s@1.0.0"]),
        "preload as the owner",
    );
    let before = snapshot(&home);

    // Cache hits as root: served, nothing written.
    let hit = t.path().join("hit");
    ok_stdout(
        &as_root(&home, &activate_args(lib_s, "s", "1.0.0", &hit)),
        "a cache hit as root",
    );
    assert_eq!(fs::read(hit.join("step.sh")).unwrap(), b"echo 1.0.0\n");
    ok_stdout(&as_root(&home, &["fsck"]), "fsck as root");

    // Every write as root: refused, naming the owner.
    let c_s = c.to_str().unwrap();
    let miss = t.path().join("miss");
    for args in [
        vec!["store", "import", c_s, "--name", "r/c/1"],
        vec!["store", "import", c_s, "--name", "r/a/2"],
        vec!["store", "import", c_s],
        activate_args(lib_s, "s", "2.0.0", &miss),
        vec!["delete", "-c", lib_s],
        vec!["gc"],
    ] {
        let o = as_root(&home, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "`{}` as root: {err}",
            args.join(" ")
        );
        assert!(
            err.contains("read-only") && err.contains("nobody") && err.contains("65534"),
            "`{}`: the error names the owner: {err}",
            args.join(" ")
        );
        assert_eq!(
            snapshot(&home),
            before,
            "`{}` as root changed the store",
            args.join(" ")
        );
    }

    // The owner's own writes all work.
    ok_stdout(
        &as_nobody(&home, &["store", "import", c_s, "--name", "r/c/1"]),
        "bind a new id as the owner",
    );
    ok_stdout(
        &as_nobody(&home, &["store", "import", c_s, "--name", "r/a/2"]),
        "bind a new version as the owner",
    );
    ok_stdout(&as_nobody(&home, &["store", "import", c_s]), "import");
    ok_stdout(
        &as_nobody(&home, &["delete", "-c", lib_s]),
        "delete as the owner",
    );
    ok_stdout(&as_nobody(&home, &["gc"]), "gc as the owner");
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck as the owner");
}

/// A store of `nobody` with what root left in it before root's writes were refused (a root-owned
/// id dir and name) and a names dir made group-writable: the owner's `fsck` reports both, its
/// `--repair` takes the group's write access away but cannot take root's entries back, and says
/// which `chown` to run as root; after it, the store is clean and the owner binds there again
/// (issue 9, items 5 and 10).
#[test]
fn owner_repair_fixes_modes_and_names_the_chown_for_root_owned_leftovers() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work) = scratch();
    let home = work.join("home");
    let a = t.path().join("a");
    make_tree(&a, "a");
    let a_s = a.to_str().unwrap();
    let id = ok_stdout(
        &as_nobody(&home, &["store", "import", a_s, "--name", "r/a/1"]),
        "import as the owner",
    );
    let root = home.join("store-v1");
    // What a root run used to leave: an id dir and a name of root's.
    fs::create_dir(root.join("names/r/c")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../objects/{}/{id}", &id[..2]),
        root.join("names/r/c/1"),
    )
    .unwrap();
    fs::set_permissions(root.join("names/r/a"), fs::Permissions::from_mode(0o775)).unwrap();

    let o = as_nobody(&home, &["fsck", "--repair", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    let find = |kind: &str, p: &Path| {
        problems
            .iter()
            .find(|x| x["kind"] == kind && x["path"] == p.to_str().unwrap())
            .unwrap_or_else(|| panic!("{kind} {} not reported: {report:#}", p.display()))
    };
    assert_eq!(
        find("unsafe-permissions", &root.join("names/r/a"))["repaired"],
        true
    );
    let left = find("foreign-owner", &root.join("names/r/c"));
    assert_eq!(left["repaired"], false, "{report:#}");
    let detail = left["detail"].as_str().unwrap();
    assert!(detail.contains("uid 0 (root)"), "{detail}");
    assert!(
        detail.contains(&format!(
            "chown -hR {NOBODY} {}",
            root.join("names/r/c").display()
        )),
        "{detail}"
    );
    assert_eq!(
        find("foreign-owner", &root.join("names/r/c/1"))["repaired"],
        false
    );
    assert_eq!(
        fs::metadata(root.join("names/r/a")).unwrap().mode() & 0o777,
        0o755
    );

    // Root runs the chown it was told; the owner's store is clean and writable again.
    let st = Command::new("chown")
        .args(["-hR", &NOBODY.to_string()])
        .arg(root.join("names/r/c"))
        .status()
        .unwrap();
    assert!(st.success());
    ok_stdout(&as_nobody(&home, &["fsck"]), "fsck after the chown");
    ok_stdout(
        &as_nobody(&home, &["store", "import", a_s, "--name", "r/c/2"]),
        "bind under the id dir root made",
    );
}

/// A `git::` step baked by root is a cache hit for another user, who may not write to the
/// store: by its commit id (no network) and by a branch still at that commit (one `ls-remote`);
/// a commit not stored is a "read-only" error. Nothing in the store changes.
#[test]
fn a_baked_git_ref_activates_for_another_user() {
    use crate::git_transports::{Served, Transport, commit_all};
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, work) = scratch();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    make_tree(&wt, "baked");
    let c1 = commit_all(&wt, "one");
    served.publish(&wt, "r.git");
    let url = served.url(Transport::Smart, "r.git");
    let baked = t.path().join("baked");
    support::ok_stdout(
        &as_root(&baked, &["download", "-i", &format!("git::{url}@{c1}")]),
        "download as root",
    );
    fs::write(wt.join("more"), "x\n").unwrap();
    commit_all(&wt, "two");
    let before = snapshot(&baked);
    for (i, r) in [c1.as_str(), "main"].into_iter().enumerate() {
        let dest = work.join(format!("d{i}"));
        let o = output(
            nobody_stepman(
                &baked,
                [
                    "activate",
                    "-i",
                    &format!("git::{url}@{r}"),
                    "-p",
                    dest.to_str().unwrap(),
                ],
            )
            .env("HOME", &work),
        );
        support::ok_stdout(&o, &format!("activate @{r} as nobody"));
        assert_eq!(
            fs::read_to_string(dest.join("step.sh")).unwrap(),
            "#!/bin/sh\necho baked\n"
        );
    }
    // The branch moves to a commit the store does not have: a miss, read-only for nobody.
    served.publish(&wt, "r.git");
    let dest = work.join("d-miss");
    let o = output(
        nobody_stepman(
            &baked,
            [
                "activate",
                "-i",
                &format!("git::{url}@main"),
                "-p",
                dest.to_str().unwrap(),
            ],
        )
        .env("HOME", &work),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("read-only"), "{err}");
    assert!(!dest.exists());
    assert_eq!(snapshot(&baked), before, "the baked store changed");
}

#[test]
fn a_baked_store_names_the_step_yml_of_every_step_it_preloaded() {
    if !support::root_with_setpriv(module_path!()) {
        return;
    }
    let (t, _work, lib) = scratch_with_steplib();
    fs::write(lib.join("steps/s/2.0.0/step.yml"), "title: S two\n").unwrap();
    let home = t.path().join("baked");
    let l = lib.to_str().unwrap();
    ok_stdout(
        &as_root(&home, &["preload", "-c", l, "s@1.0.0"]),
        "preload as root",
    );
    let before = snapshot(&home);
    let info = |v: &str| {
        let o = as_nobody(
            &home,
            &[
                "step-info",
                "--library",
                l,
                "--id",
                "s",
                "--version",
                v,
                "--format",
                "json",
            ],
        );
        let json: serde_json::Value =
            serde_json::from_str(&ok_stdout(&o, "step-info as nobody")).unwrap();
        (json, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // The preloaded version's step.yml is a file of its own, byte for byte the StepLib's.
    let (one, _) = info("1.0.0");
    let p = one["definition_pth"]
        .as_str()
        .expect("definition_pth of a preloaded step");
    assert_eq!(fs::read(p).unwrap(), b"title: S\n");
    // Another version's cannot be made in a store nobody cannot write: left out, with a warning;
    // the rest of the answer is there.
    let (two, err) = info("2.0.0");
    assert!(two.get("definition_pth").is_none(), "{two}");
    assert_eq!(two["step"]["title"], "S two");
    assert!(err.contains("definition_pth left out"), "{err}");
    // Raw step-info prints its text all the same: it reads the collection, writing nothing.
    let raw = ok_stdout(
        &as_nobody(
            &home,
            &[
                "step-info",
                "--library",
                l,
                "--id",
                "s",
                "--version",
                "2.0.0",
            ],
        ),
        "raw step-info as nobody",
    );
    assert!(raw.ends_with("title: S two"), "{raw}");
    assert_eq!(snapshot(&home), before, "the baked store was modified");
    // Where the store can be written, the first lookup makes the file, and the next finds it.
    let (two, _) = {
        let o = as_root(
            &home,
            &[
                "step-info",
                "--library",
                l,
                "--id",
                "s",
                "--version",
                "2.0.0",
                "--format",
                "json",
            ],
        );
        let json: serde_json::Value = serde_json::from_str(&ok_stdout(&o, "as root")).unwrap();
        (json, ())
    };
    let p2 = two["definition_pth"]
        .as_str()
        .expect("definition_pth as root")
        .to_string();
    assert_eq!(fs::read(&p2).unwrap(), b"title: S two\n");
    let (again, _) = info("2.0.0");
    assert_eq!(again["definition_pth"].as_str(), Some(p2.as_str()));
    ok_stdout(&as_root(&home, &["fsck"]), "fsck");
}
