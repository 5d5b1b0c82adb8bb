//! A full disk: the store on a small tmpfs, out of bytes (`size=`) or out of inodes
//! (`nr_inodes=`) at many points of an ingest, and during a name swap; and an export's
//! destination on one, out of inodes at every point of the copy.
//!
//! Every failure must be a clear error naming the path (exit non-zero), publish nothing under
//! the name, leave the old name resolving to its old object byte for byte, and leave `fsck`
//! clean; once space is freed, the retry succeeds and gc leaves nothing in `tmp/`.
//!
//! The tmpfs is mounted directly when the test can (root, as in CI). Otherwise the test runs
//! itself again as a child inside `unshare -Urm` (a user and mount namespace, no privileges
//! needed), which mounts the tmpfs first; the child sees `STEPMAN_TMPFS_DIR` and runs the
//! scenario. Without either, the test says so and skips. `STEPMAN_TMPFS_VIA_UNSHARE=1` forces
//! the namespace path (to test it as root).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{TestDir, assert_fsck_clean, assert_same_tree, make_tree, output, stepman};

const DIR_ENV: &str = "STEPMAN_TMPFS_DIR";
const WORK_ENV: &str = "STEPMAN_TMPFS_WORK";

/// Unmounts on drop (also when the test panics).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Runs `scenario(tmpfs, work)` with `tmpfs` a fresh tmpfs mounted with `opts` and `work` a
/// directory on the ordinary file system.
fn with_tmpfs(test: &str, opts: &str, scenario: fn(&Path, &Path)) {
    if let (Some(dir), Some(work)) = (std::env::var_os(DIR_ENV), std::env::var_os(WORK_ENV)) {
        // The child inside the namespace: the mount is there.
        scenario(Path::new(&dir), Path::new(&work));
        return;
    }
    let t = TestDir::new();
    let mnt = t.path().join("mnt");
    let work = t.path().join("work");
    fs::create_dir_all(&mnt).unwrap();
    fs::create_dir_all(&work).unwrap();
    let direct = std::env::var_os("STEPMAN_TMPFS_VIA_UNSHARE").is_none()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if direct {
        let _m = Mounted(mnt.clone());
        scenario(&mnt, &work);
        return;
    }
    let userns = Command::new("unshare")
        .args(["-Urm", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !userns {
        eprintln!("skipping {test}: cannot mount a tmpfs (not root) and `unshare -Urm` fails");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = output(
        Command::new("unshare")
            .args([
                "-Urm",
                "sh",
                "-c",
                "mount -t tmpfs -o \"$1\" tmpfs \"$0\" && shift && exec \"$@\"",
            ])
            .arg(&mnt)
            .arg(opts)
            .arg(exe)
            .arg(format!(
                "{}::{test}",
                module_path!().trim_start_matches("it::")
            ))
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &mnt)
            .env(WORK_ENV, &work),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} inside `unshare -Urm` failed"
    );
}

/// `store resolve name`: the object id (from the directory it prints) and the directory.
fn resolve(home: &Path, name: &str) -> (String, PathBuf) {
    let dir = support::run_ok(&mut stepman(home, ["store", "resolve", name]));
    let dir = PathBuf::from(dir);
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    (id, dir)
}

/// After a failed import: a clear error, nothing new under the name, the old object intact
/// byte for byte, fsck clean.
fn assert_failed_cleanly(
    home: &Path,
    out: &std::process::Output,
    what: &str,
    name: &str,
    (old_id, old_src): (&str, &Path),
) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded on a full disk");
    assert!(
        err.contains("No space left on device") && err.contains(&home.display().to_string()),
        "{what}: the error says ENOSPC and names the path in the store: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: printed an id: {:?}",
        out.stdout
    );
    let (id, dir) = resolve(home, name);
    assert_eq!(id, old_id, "{what}: the name moved");
    assert_same_tree(old_src, &dir);
    assert_fsck_clean(home);
}

/// Appends zeros to `f` until the file system is full; returns the file's length.
///
/// Space is only ever given back by truncating this file, never by unlinking it: a child that
/// another test thread forks (before its exec closes our descriptors) may hold the file open,
/// and an unlinked file's pages stay allocated until the last holder closes it.
fn fill_bytes(f: &mut fs::File) -> u64 {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::End(0)).unwrap();
    let chunk = vec![0u8; 256 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("fill: {e}"),
        }
    }
    f.metadata().unwrap().len()
}

/// Creates inodes (symlinks: no descriptor is ever open on them, see [`fill_bytes`]) in `dir`
/// until the file system is out of them; returns how many.
fn fill_inodes(dir: &Path, from: usize) -> usize {
    let mut n = from;
    loop {
        match std::os::unix::fs::symlink("x", dir.join(format!("f{n}"))) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(28) => return n,
            Err(e) => panic!("fill inodes in {}: {e}", dir.display()),
        }
    }
}

fn import_cmd(home: &Path, src: &Path, name: &str) -> std::process::Output {
    output(&mut stepman(
        home,
        [
            "store".as_ref(),
            "import".as_ref(),
            src.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
        ],
    ))
}

/// Out of bytes at several points of an ingest (a directory and a tar.gz source), with a big
/// file filling the disk; the name swap of an existing name never happens.
fn enospc_scenario(mnt: &Path, work: &Path) {
    let home = mnt.join("home");
    let old = work.join("old");
    make_tree(&old, 1, 12);
    let new = work.join("new");
    let stats = make_tree(&new, 2, 60);
    let new_tgz = work.join("new.tar.gz");
    support::tar_gz(&new, &new_tgz);
    let old_id = support::import(&home, &old, Some("r/s/1"));
    let before = support::object_ids(&home);

    let filler = mnt.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let full = fill_bytes(&mut f);
    // Free space from none to most of what the new tree needs: the ingest stops at its first
    // file, in the middle, or near its end.
    let need = stats.bytes;
    let mut points = vec![0, 4096, 64 << 10];
    points.extend([
        need / 4,
        need / 2,
        need * 3 / 4,
        need.saturating_sub(16 << 10),
    ]);
    for free in points {
        f.set_len(full - free.min(full)).unwrap();
        for src in [&new, &new_tgz] {
            let what = format!("import of {} with {free} bytes free", src.display());
            let out = import_cmd(&home, src, "r/s/1");
            assert_failed_cleanly(&home, &out, &what, "r/s/1", (&old_id, &old));
            assert_eq!(
                support::object_ids(&home),
                before,
                "{what}: published an object"
            );
            assert!(
                support::temp_entries(&home).is_empty(),
                "{what}: left {:?}",
                support::temp_entries(&home)
            );
        }
    }

    // Re-pointing a name at contents the store already holds, on a full disk.
    fill_bytes(&mut f);
    let out = import_cmd(&home, &old, "r/s/2");
    assert_failed_cleanly(
        &home,
        &out,
        "re-import of stored contents",
        "r/s/1",
        (&old_id, &old),
    );
    assert!(
        output(&mut stepman(&home, ["store", "resolve", "r/s/2"]))
            .status
            .code()
            == Some(1),
        "no new name on a full disk"
    );

    f.set_len(0).unwrap();
    drop(f);
    fs::remove_file(&filler).unwrap();
    let new_id = support::import(&home, &new_tgz, Some("r/s/1"));
    let (id, dir) = resolve(&home, "r/s/1");
    assert_eq!(id, new_id);
    assert_same_tree(&new, &dir);
    support::run_ok(&mut stepman(&home, ["gc"]));
    assert_eq!(
        support::object_ids(&home),
        [new_id],
        "gc removed the old, unnamed object"
    );
    assert!(
        support::temp_entries(&home).is_empty(),
        "tmp holds {:?}",
        support::temp_entries(&home)
    );
    assert_fsck_clean(&home);
}

/// Out of inodes at every point of an import: for k = 0, 1, 2, … free inodes, until the import
/// succeeds. Done for new contents and for contents already in the store (where the ingest
/// succeeds and the name swap is what runs out).
fn inodes_scenario(mnt: &Path, work: &Path) {
    let home = mnt.join("home");
    let old = work.join("old");
    make_tree(&old, 1, 6);
    let new = work.join("new");
    make_tree(&new, 3, 14);
    let other = work.join("other");
    make_tree(&other, 4, 8);
    let old_id = support::import(&home, &old, Some("r/s/1"));
    let other_id = support::import(&home, &other, Some("r/s/2"));
    let third = work.join("third");
    make_tree(&third, 5, 10);
    let third_tgz = work.join("third.tar.gz");
    support::tar_gz(&third, &third_tgz);

    let fill = mnt.join("fill");
    fs::create_dir(&fill).unwrap();
    let mut files = fill_inodes(&fill, 0);
    let mut current = (old_id.clone(), old.clone());
    // (source, its id when already stored)
    for (src, tree, existing) in [
        (&new, &new, None),
        (&third_tgz, &third, None),
        (&other, &other, Some(&other_id)),
    ] {
        let mut failures = 0;
        let mut swap_failures = 0;
        let mut succeeded = false;
        for k in 0..200 {
            // Exactly k inodes free.
            files = fill_inodes(&fill, files);
            for i in 0..k {
                fs::remove_file(fill.join(format!("f{}", files - 1 - i))).unwrap();
            }
            files -= k;
            let before = support::object_ids(&home);
            let what = format!("import of {} with {k} inodes free", src.display());
            let out = import_cmd(&home, src, "r/s/1");
            if out.status.success() {
                succeeded = true;
                break;
            }
            failures += 1;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_failed_cleanly(&home, &out, &what, "r/s/1", (&current.0, &current.1));
            let after = support::object_ids(&home);
            // Past the ingest: creating the object's shard, or the name's new link.
            let late = err.contains("/store-v1/objects/") || err.contains("/name:");
            if late {
                swap_failures += 1;
            }
            if after != before {
                // Published, then out of inodes for the name's link: the object is complete
                // (fsck rehashed it above) and unnamed; the name was not touched.
                assert!(
                    existing.is_none(),
                    "{what}: a second copy of a stored object"
                );
                assert!(
                    late,
                    "{what}: published, yet failed before publishing: {err}"
                );
                assert_eq!(after.len(), before.len() + 1, "{what}");
            }
            assert!(
                support::temp_entries(&home).is_empty(),
                "{what}: left {:?}",
                support::temp_entries(&home)
            );
        }
        assert!(succeeded, "{}: never succeeded", src.display());
        assert!(
            failures > 5,
            "{}: only {failures} failing points",
            src.display()
        );
        assert!(
            swap_failures >= 1,
            "{}: never failed at the name swap",
            src.display()
        );
        eprintln!(
            "{}: {failures} failing points ({swap_failures} after the ingest), then success",
            src.display()
        );
        let (id, dir) = resolve(&home, "r/s/1");
        assert_same_tree(tree, &dir);
        if let Some(e) = existing {
            assert_eq!(&id, e);
        }
        current = (id, tree.to_path_buf());
    }

    fs::remove_dir_all(&fill).unwrap();
    support::run_ok(&mut stepman(&home, ["gc"]));
    let mut want = vec![current.0.clone(), other_id.clone()];
    want.sort();
    want.dedup();
    assert_eq!(
        support::object_ids(&home),
        want,
        "gc left only the named objects"
    );
    assert!(
        support::temp_entries(&home).is_empty(),
        "tmp holds {:?}",
        support::temp_entries(&home)
    );
    assert_fsck_clean(&home);
    let (id, _) = resolve(&home, "r/s/2");
    assert_eq!(id, other_id);
    let _ = old_id;
}

#[test]
fn enospc_during_import_and_name_swap() {
    let _alone = support::alone();
    with_tmpfs(
        "enospc_during_import_and_name_swap",
        "size=4m,nr_inodes=4096",
        enospc_scenario,
    );
}

#[test]
fn inode_exhaustion_at_every_point_of_an_import() {
    let _alone = support::alone();
    with_tmpfs(
        "inode_exhaustion_at_every_point_of_an_import",
        "size=64m,nr_inodes=2000",
        inodes_scenario,
    );
}

/// A collection update (a new collection object, then the swap of its name) out of inodes at
/// every point: `step-list` keeps showing the old spec until an update succeeds.
fn collection_update_scenario(mnt: &Path, work: &Path) {
    let home = mnt.join("home");
    let lib = work.join("lib");
    support::hello_steplib(&lib);
    let uri = lib.to_str().unwrap();
    support::run_ok(&mut stepman(&home, ["setup", "-c", uri]));
    let list = || support::run_ok(&mut stepman(&home, ["step-list", "-c", uri, "-f", "json"]));
    let old_list = list();
    for id in ["bye", "again"] {
        fs::create_dir_all(lib.join(format!("steps/{id}/2.0.0"))).unwrap();
        fs::write(lib.join(format!("steps/{id}/2.0.0/step.yml")), "title: T\n").unwrap();
    }

    let fill = mnt.join("fill");
    fs::create_dir(&fill).unwrap();
    let mut files = fill_inodes(&fill, 0);
    let mut failures = 0;
    let mut succeeded = false;
    for k in 0..100 {
        files = fill_inodes(&fill, files);
        for i in 0..k {
            fs::remove_file(fill.join(format!("f{}", files - 1 - i))).unwrap();
        }
        files -= k;
        let out = output(&mut stepman(&home, ["update", "-c", uri]));
        if out.status.success() {
            succeeded = true;
            break;
        }
        failures += 1;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No space left on device") && err.contains(&home.display().to_string()),
            "update with {k} inodes free: {err}"
        );
        assert_eq!(
            list(),
            old_list,
            "update with {k} inodes free changed the spec"
        );
        assert!(
            support::temp_entries(&home).is_empty(),
            "{k}: left {:?}",
            support::temp_entries(&home)
        );
        assert_fsck_clean(&home);
    }
    assert!(
        succeeded && failures > 3,
        "{failures} failures, succeeded: {succeeded}"
    );
    eprintln!("collection update: {failures} failing points, then success");
    let new_list = list();
    assert!(
        new_list.contains("bye") && new_list.contains("again"),
        "{new_list}"
    );
    fs::remove_dir_all(&fill).unwrap();
    support::run_ok(&mut stepman(&home, ["gc"]));
    assert!(
        support::temp_entries(&home).is_empty(),
        "tmp holds {:?}",
        support::temp_entries(&home)
    );
    assert_fsck_clean(&home);
    assert_eq!(list(), new_list);
}

#[test]
fn inode_exhaustion_during_a_collection_update() {
    let _alone = support::alone();
    with_tmpfs(
        "inode_exhaustion_during_a_collection_update",
        "size=16m,nr_inodes=1000",
        collection_update_scenario,
    );
}

/// A copy out of the store (`store export`, whose copy `activate` shares) into a directory on
/// a tmpfs out of inodes at every point of the copy, which runs on several threads: each
/// failure is a clear error naming the path, leaves no destination and nothing beside it (no
/// staging dir, no lock file), and once there is room the copy is the same tree.
fn export_inodes_scenario(mnt: &Path, work: &Path) {
    let home = work.join("home");
    let src = work.join("src");
    let stats = make_tree(&src, 6, 120);
    support::import(&home, &src, Some("r/s/1"));
    let parent = mnt.join("out");
    fs::create_dir(&parent).unwrap();
    let dest = parent.join("dest");
    let fill = mnt.join("fill");
    fs::create_dir(&fill).unwrap();
    let mut files = fill_inodes(&fill, 0);
    let mut failures = 0;
    let mut midway = 0;
    let mut succeeded = false;
    for k in 0..stats.files + 100 {
        files = fill_inodes(&fill, files);
        for i in 0..k {
            fs::remove_file(fill.join(format!("f{}", files - 1 - i))).unwrap();
        }
        files -= k;
        let out = output(&mut stepman(
            &home,
            [
                "store".as_ref(),
                "export".as_ref(),
                "r/s/1".as_ref(),
                dest.as_os_str(),
            ],
        ));
        if out.status.success() {
            succeeded = true;
            break;
        }
        failures += 1;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No space left on device") && err.contains(&parent.display().to_string()),
            "export with {k} inodes free: the error says ENOSPC and names the path: {err}"
        );
        // Past the staging dir: a file or directory inside the copy.
        if err.contains("/tree/") {
            midway += 1;
        }
        assert!(!dest.exists(), "export with {k} inodes free left {dest:?}");
        assert_eq!(
            support::staging_entries(&parent),
            Vec::<String>::new(),
            "export with {k} inodes free left a staging dir or lock"
        );
        assert_eq!(
            fs::read_dir(&parent).unwrap().count(),
            0,
            "export with {k} inodes free left something in {parent:?}"
        );
    }
    assert!(succeeded, "the export never succeeded");
    assert!(
        midway > stats.files / 2,
        "only {midway} of {failures} failures were inside the copy"
    );
    eprintln!("export: {failures} failing points ({midway} inside the copy), then success");
    assert_same_tree(&src, &dest);
}

#[test]
fn inode_exhaustion_at_every_point_of_an_export() {
    let _alone = support::alone();
    with_tmpfs(
        "inode_exhaustion_at_every_point_of_an_export",
        "size=64m,nr_inodes=2000",
        export_inodes_scenario,
    );
}

/// The whole suite again as `nobody` (when this runs as root with `setpriv`): the test binary and
/// stepman are copied where `nobody` can run them, and the suite reruns itself as `nobody`, which
/// cannot mount and so takes the `unshare -Urm` path with an unprivileged store owner.
#[test]
fn the_suite_runs_as_an_unprivileged_user() {
    let _alone = support::alone();
    let test = "the_suite_runs_as_an_unprivileged_user";
    if std::env::var_os("STEPMAN_FULL_DISK_NOBODY").is_some() || !support::root_with_setpriv(test) {
        return;
    }
    let userns = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "-Urm", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !userns {
        eprintln!("skipping {test}: unprivileged user namespaces are not allowed here");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = t.path().join("full_disk");
    let bin = t.path().join("stepman");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::copy(support::bin(), &bin).unwrap();
    for p in [&exe, &bin] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            // This module's tests only, this one left out.
            .arg(format!("{}::", module_path!().trim_start_matches("it::")))
            .arg("--skip")
            .arg(format!(
                "{}::{test}",
                module_path!().trim_start_matches("it::")
            ))
            .args(["--nocapture", "--test-threads=1"])
            .env("STEPMAN_FULL_DISK_NOBODY", "1")
            .env("STEPMAN_TEST_BIN", &bin)
            .env("TMPDIR", "/tmp")
            .env("HOME", "/tmp")
            .current_dir("/"),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the suite failed as nobody");
    assert!(
        text.contains("4 passed") && !text.contains("skipping"),
        "the suite did not run as nobody"
    );
}
