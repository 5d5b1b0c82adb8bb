//! Precompiled step executables: verified by sha256 before they are trusted, activated as
//! `<path>/<id>` with mode 0755, and on any failure the source is activated instead.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn platform() -> String {
    stepman::activate::precompiled::platform()
}

/// A local StepLib with one step `tool@1.0.0` whose source is a zip and whose executable for this
/// platform is `storage/bins/tool` with the declared `hash`.
fn steplib(root: &Path, hash: &str) {
    let lib = root.join("lib");
    fs::create_dir_all(lib.join("steps/tool/1.0.0")).unwrap();
    fs::create_dir_all(lib.join("archives/tool/1.0.0")).unwrap();
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.0.0\nsteplib_source: test\ndownload_locations:\n  - type: zip\n    src: archives/\n",
    )
    .unwrap();
    fs::write(
        lib.join("steps/tool/1.0.0/step.yml"),
        format!(
            "title: Tool\nexecutables:\n  {}:\n    storage_uri: bins/tool\n    hash: sha256-{hash}\n",
            platform()
        ),
    )
    .unwrap();
    let zip_file = fs::File::create(lib.join("archives/tool/1.0.0/step.zip")).unwrap();
    let mut z = zip::ZipWriter::new(zip_file);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    z.start_file("step.sh", opts).unwrap();
    std::io::Write::write_all(&mut z, b"echo from source\n").unwrap();
    z.finish().unwrap();
}

const EXE: &[u8] = b"#!/bin/sh\necho precompiled\n";

fn activate(home: &Path, root: &Path, dest: &Path, storage: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepman"))
        .args(["activate", "-c"])
        .arg(root.join("lib"))
        .args(["-i", "tool", "-v", "1.0.0", "--precompiled", "-p"])
        .arg(dest)
        .env("STEPMAN_HOME", home)
        .env("STEPMAN_NO_FSYNC", "1")
        .env("BITRISE_PRECOMPILED_STEPS_STORAGE_URLS", storage)
        .output()
        .unwrap()
}

fn setup_storage(root: &Path) -> String {
    fs::create_dir_all(root.join("storage/bins")).unwrap();
    fs::write(root.join("storage/bins/tool"), EXE).unwrap();
    format!("file://{}", root.join("storage").display())
}

#[test]
fn verified_executable_is_activated_as_id_with_mode_0755() {
    let t = tempfile::tempdir().unwrap();
    let storage = setup_storage(t.path());
    steplib(t.path(), &sha256_hex(EXE));
    let dest = t.path().join("out");
    let o = activate(&t.path().join("home"), t.path(), &dest, &storage);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["tool"]);
    assert_eq!(fs::read(dest.join("tool")).unwrap(), EXE);
    assert_eq!(
        fs::metadata(dest.join("tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

#[test]
fn hash_mismatch_falls_back_to_the_source_and_is_never_cached() {
    let t = tempfile::tempdir().unwrap();
    let storage = setup_storage(t.path());
    steplib(t.path(), &sha256_hex(b"something else"));
    let home = t.path().join("home");
    for round in 0..2 {
        let dest = t.path().join(format!("out{round}"));
        let o = activate(&home, t.path(), &dest, &storage);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("sha256 is"), "round {round}: {err}");
        assert!(
            dest.join("step.sh").is_file() && !dest.join("tool").exists(),
            "round {round}: source expected"
        );
    }
}

#[test]
fn plain_http_storage_is_refused_and_the_source_is_used() {
    let t = tempfile::tempdir().unwrap();
    steplib(t.path(), &sha256_hex(EXE));
    let dest = t.path().join("out");
    let o = activate(
        &t.path().join("home"),
        t.path(),
        &dest,
        "http://127.0.0.1:9/storage",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("plain http:// storage is refused"));
    assert!(dest.join("step.sh").is_file());
}
