//! A baked store on a read-only mount: cache hits (`activate`,
//! `step-info`, `list-cached`, `fsck`) work; a miss, `gc` and `fsck --repair` fail with a clear
//! "read-only" error; a writable store layered on top takes the misses.
//!
//! Each command runs in a private mount namespace (`unshare -m`) in which the baked store is
//! bind-mounted read-only, so the kernel itself refuses any write. Needs root (or a user
//! namespace that allows mounts); otherwise the tests print why and pass.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support::{self, activate_args, describe};

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `stepman args` where `mnt` is `baked` bind-mounted read-only: as the store itself
/// (`--home mnt`), or, with `layered`, under that writable store (`STEPMAN_READ_ONLY_STORES`).
fn on_ro_mount(baked: &Path, mnt: &Path, layered: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#)
        .arg(baked)
        .arg(mnt)
        .arg(support::bin())
        .env("STEPMAN_NO_FSYNC", "1");
    match layered {
        None => c.arg("--home").arg(mnt).env_remove("STEPMAN_HOME"),
        Some(home) => c
            .env("STEPMAN_HOME", home)
            .env("STEPMAN_READ_ONLY_STORES", mnt),
    };
    c.args(args).output().expect("run unshare")
}

/// Whether read-only bind mounts can be made here; prints why not.
fn can_mount(dir: &Path) -> bool {
    let a = dir.join("probe-a");
    let m = dir.join("probe-m");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&m).unwrap();
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/x" 2>/dev/null"#)
        .arg(&a)
        .arg(&m)
        .output();
    match o {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "skipped: no read-only bind mounts here (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipped: unshare is not available: {e}");
            false
        }
    }
}

#[test]
fn read_only_mount_serves_hits_and_refuses_writes_clearly() {
    let _alone = support::alone();
    let t = support::TestDir::new();
    if !can_mount(t.path()) {
        return;
    }
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
    let lib_s = lib.to_str().unwrap();
    let baked = t.path().join("baked");
    let o = support::run(&baked, &["preload", "-c", lib_s, "s@1.0.0"]);
    assert!(o.status.success(), "{}", describe(&o));
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let work = t.path().join("work");

    // Hits.
    let dest = work.join("one");
    let o = on_ro_mount(&baked, &mnt, None, &activate_args(lib_s, "s", "1", &dest));
    assert!(o.status.success(), "activate hit: {}", describe(&o));
    assert_eq!(fs::read(dest.join("step.sh")).unwrap(), b"echo 1.0.0\n");
    let o = on_ro_mount(
        &baked,
        &mnt,
        None,
        &[
            "step-info",
            "--library",
            lib_s,
            "--id",
            "s",
            "--version",
            "1.0.0",
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "step-info: {}", describe(&o));
    let o = on_ro_mount(&baked, &mnt, None, &["list-cached", "-c", lib_s]);
    assert!(o.status.success(), "list-cached: {}", describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "s@1.0.0");
    let o = on_ro_mount(&baked, &mnt, None, &["fsck", "--json"]);
    assert!(o.status.success(), "fsck: {}", describe(&o));

    // Writes: each a clear read-only error, nothing else.
    let miss = work.join("two");
    for args in [activate_args(lib_s, "s", "2.0.0", &miss), vec!["gc"]] {
        let o = on_ro_mount(&baked, &mnt, None, &args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(err.contains("read-only"), "{args:?}: {}", describe(&o));
        assert!(!err.contains("panicked"), "{args:?}: {}", describe(&o));
    }
    assert!(!miss.exists());
    // `fsck --repair` with nothing to repair writes nothing and succeeds; with damage it reports
    // the damage and cannot move it aside.
    let o = on_ro_mount(&baked, &mnt, None, &["fsck", "--repair"]);
    assert!(o.status.success(), "fsck --repair, clean: {}", describe(&o));
    let victim = support::object_dirs(&baked)
        .into_iter()
        .map(|d| d.join("step.sh"))
        .find(|f| f.exists())
        .expect("the step's object");
    support::make_writable(&victim);
    fs::write(&victim, "echo tampered\n").unwrap();
    let o = on_ro_mount(&baked, &mnt, None, &["fsck", "--repair", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "fsck --repair, damaged: {}",
        describe(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        !report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .to_lowercase()
            .contains("read-only")
            || report.to_string().to_lowercase().contains("read-only"),
        "{}",
        describe(&o)
    );
    // Put the damage right for the checks below.
    fs::write(&victim, "echo 1.0.0\n").unwrap();

    // A writable store layered on top takes the miss.
    let home = t.path().join("home");
    let o = on_ro_mount(
        &baked,
        &mnt,
        Some(&home),
        &activate_args(lib_s, "s", "2.0.0", &miss),
    );
    assert!(o.status.success(), "layered miss: {}", describe(&o));
    assert_eq!(fs::read(miss.join("step.sh")).unwrap(), b"echo 2.0.0\n");
    let o = support::run(&home, &["list-cached", "-c", lib_s]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "s@2.0.0");
    support::assert_fsck_clean(&home);
    support::assert_fsck_clean(&baked);
}
