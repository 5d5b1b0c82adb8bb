//! Precompiled step executables: verified by sha256 before they are trusted, activated as
//! `<path>/<id>` with mode 0755, and on any failure the source is activated instead.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

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

/// `stepman activate` of `tool@<version>` from the StepLib under `root` into `dest`.
fn activate_cmd(home: &Path, root: &Path, version: &str, dest: &Path) -> Command {
    let mut c = support::stepman(home, ["activate", "-c"]);
    c.arg(root.join("lib"))
        .args(["-i", "tool", "-v", version, "-p"])
        .arg(dest);
    c
}

/// `tool@1.0.0` activated `--precompiled` with `storage` as the executables' storage.
fn activate(home: &Path, root: &Path, dest: &Path, storage: &str) -> Output {
    support::output(
        activate_cmd(home, root, "1.0.0", dest)
            .arg("--precompiled")
            .env("BITRISE_PRECOMPILED_STEPS_STORAGE_URLS", storage),
    )
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
    steplib(t.path(), &support::sha256_hex(EXE));
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
    steplib(t.path(), &support::sha256_hex(b"something else"));
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
    steplib(t.path(), &support::sha256_hex(EXE));
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

/// What a hostile StepLib puts where an executable should be.
const CRAFTED: &[u8] = b"#!/bin/sh\necho crafted, never verified\n";

/// Adds to the StepLib of [`steplib`] a version `tool@<version>` whose source zip holds `tool`
/// with [`CRAFTED`] content.
fn add_crafted_version(root: &Path, version: &str) {
    let lib = root.join("lib");
    fs::create_dir_all(lib.join("steps/tool").join(version)).unwrap();
    fs::create_dir_all(lib.join("archives/tool").join(version)).unwrap();
    fs::write(
        lib.join("steps/tool").join(version).join("step.yml"),
        "title: Crafted\n",
    )
    .unwrap();
    let zip_file =
        fs::File::create(lib.join("archives/tool").join(version).join("step.zip")).unwrap();
    let mut z = zip::ZipWriter::new(zip_file);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    z.start_file("tool", opts).unwrap();
    std::io::Write::write_all(&mut z, CRAFTED).unwrap();
    z.finish().unwrap();
}

fn activate_version(home: &Path, root: &Path, version: &str, dest: &Path) -> Output {
    support::output(&mut activate_cmd(home, root, version, dest))
}

/// Storage that has nothing (every executable download fails).
fn empty_storage(root: &Path) -> String {
    fs::create_dir_all(root.join("empty-storage")).unwrap();
    format!("file://{}", root.join("empty-storage").display())
}

/// The source was activated, not an executable: a warning says why.
fn assert_source_with_warning(o: &Output, dest: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        dest.join("step.sh").is_file() && !dest.join("tool").exists(),
        "the source expected in {}: {:?}, stderr: {err}",
        dest.display(),
        fs::read(dest.join("tool")).map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    assert!(
        err.contains("precompiled executable unavailable"),
        "a warning: {err}"
    );
}

/// A StepLib version spelled like an executable's store name (`1.0.0+exe.<platform>.<sha256>`,
/// the form older stores used, which such a store may still hold under the collection's route)
/// is refused at setup: activating it fails with "not found", and `activate --precompiled` of
/// `1.0.0` never uses its unverified files as the executable.
#[test]
fn a_version_named_like_an_executable_cannot_forge_it() {
    let t = tempfile::tempdir().unwrap();
    let hash = support::sha256_hex(EXE);
    steplib(t.path(), &hash);
    let crafted = format!("1.0.0+exe.{}.{hash}", platform());
    add_crafted_version(t.path(), &crafted);
    let home = t.path().join("home");

    let first = t.path().join("crafted");
    let o = activate_version(&home, t.path(), &crafted, &first);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the crafted version was activated: {err}"
    );
    assert!(err.contains("not found"), "{err}");
    assert!(!first.exists());
    let o = support::run(&home, &["collections", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let spec = v["data"][0]["spec_path"].as_str().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(spec).unwrap()).unwrap();
    assert!(
        meta["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"] == format!("steps/tool/{crafted}")
                && s["error"].as_str().unwrap().contains("reserved")),
        "the crafted version is listed as skipped: {}",
        meta["skipped"]
    );

    let dest = t.path().join("out");
    let o = activate(&home, t.path(), &dest, &empty_storage(t.path()));
    assert_source_with_warning(&o, &dest);

    let dest = t.path().join("exe");
    let o = activate(&home, t.path(), &dest, &setup_storage(t.path()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(dest.join("tool")).unwrap(), EXE);
}

/// The names of `home`'s single collection that are neither the collection nor `tool@1.0.0`'s
/// source: the executable's, however it is spelled.
fn executable_names(home: &Path) -> Vec<String> {
    let names = home.join("store-v1/names");
    let mut out = Vec::new();
    for route in fs::read_dir(&names).unwrap() {
        let route = route.unwrap();
        for id in fs::read_dir(route.path()).unwrap() {
            let id = id.unwrap();
            for v in fs::read_dir(id.path()).unwrap() {
                let v = v.unwrap();
                let name = format!(
                    "{}/{}/{}",
                    route.file_name().to_string_lossy(),
                    id.file_name().to_string_lossy(),
                    v.file_name().to_string_lossy()
                );
                let dir = fs::canonicalize(v.path()).unwrap();
                if fs::read(dir.join("tool")).is_ok_and(|b| b == EXE) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// An executable's name that points at other content (a damaged store, or one planted by
/// whoever can write it) is checked against the declared sha256 on every hit: it is fetched
/// again when the storage has it, else the source is used, with a warning.
#[test]
fn a_hit_on_an_executable_name_is_checked_against_the_declared_sha256() {
    let t = tempfile::tempdir().unwrap();
    let storage = setup_storage(t.path());
    steplib(t.path(), &support::sha256_hex(EXE));
    let home = t.path().join("home");
    let o = activate(&home, t.path(), &t.path().join("good"), &storage);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = executable_names(&home);
    assert_eq!(names.len(), 1, "{names:?}");

    let planted = t.path().join("planted");
    fs::create_dir_all(&planted).unwrap();
    fs::write(planted.join("tool"), CRAFTED).unwrap();
    fs::set_permissions(planted.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    support::import(&home, &planted, Some(&names[0]));

    let dest = t.path().join("unreachable");
    let o = activate(&home, t.path(), &dest, &empty_storage(t.path()));
    assert_source_with_warning(&o, &dest);

    let dest = t.path().join("refetched");
    let o = activate(&home, t.path(), &dest, &storage);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(fs::read(dest.join("tool")).unwrap(), EXE, "{err}");
    assert!(
        err.contains("sha256"),
        "a warning names the mismatch: {err}"
    );
    assert_eq!(
        executable_names(&home),
        names,
        "the name is bound to the verified executable again"
    );
}

#[test]
fn prepare_runs_the_verified_executable_and_builds_nothing() {
    let t = tempfile::tempdir().unwrap();
    let storage = setup_storage(t.path());
    steplib(t.path(), &support::sha256_hex(EXE));
    let home = t.path().join("home");
    let run = |dest: &Path, extra: &[&str]| {
        let mut c = activate_cmd(&home, t.path(), "1.0.0", dest);
        c.args(["--prepare", "--json"])
            .args(extra)
            // No toolchain is needed: a missing `go` must not matter.
            .args(["--go", "/nonexistent/go"])
            .env("BITRISE_PRECOMPILED_STEPS_STORAGE_URLS", &storage);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let dest = t.path().join("exe");
    let v = run(&dest, &["--precompiled"]);
    assert_eq!(v["precompiled"], true);
    assert_eq!(v["build"], "none");
    let exe = fs::canonicalize(&dest).unwrap().join("tool");
    assert_eq!(v["run"], serde_json::json!([exe.display().to_string()]));
    let out = Command::new(&exe).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "precompiled\n");
    // Without --precompiled the step (no toolkit: bash) runs its step.sh.
    let dest = t.path().join("src");
    let v = run(&dest, &[]);
    assert_eq!(v["precompiled"], false);
    assert_eq!(v["toolkit"], "bash");
    let script = fs::canonicalize(&dest).unwrap().join("step.sh");
    assert_eq!(
        v["run"],
        serde_json::json!(["bash", script.display().to_string()])
    );
}
