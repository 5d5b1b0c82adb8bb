//! `stepman toolkit install go`: the archive is verified by its sha256 before anything is
//! published, vetted like any archive, and named `_toolkits/go/<version>`; ten installers at
//! once download it once. Served from a loopback HTTP server (`STEPMAN_GO_DOWNLOAD_BASE`).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Mode, Server};
use support::{TestDir, assert_fsck_clean, store_root};

const VERSION: &str = "1.99.1";

fn archive_path() -> String {
    format!(
        "/go{VERSION}.{}.tar.gz",
        stepman::activate::precompiled::platform()
    )
}

/// A small stand-in for the official archive: `go/bin/go`, `go/VERSION`, `go/src/x.go`.
fn fake_toolkit(root: &Path) -> Vec<u8> {
    let dir = root.join("fake");
    fs::create_dir_all(dir.join("go/bin")).unwrap();
    fs::create_dir_all(dir.join("go/src")).unwrap();
    fs::write(dir.join("go/bin/go"), "#!/bin/sh\necho fake go\n").unwrap();
    fs::write(dir.join("go/VERSION"), format!("go{VERSION}\n")).unwrap();
    fs::write(dir.join("go/src/x.go"), "package x\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("go/bin/go"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = root.join("fake.tar.gz");
    support::tar_gz(&dir, &out);
    fs::read(out).unwrap()
}

fn install(home: &Path, base: &str, extra: &[&str]) -> Command {
    let mut c = support::stepman(home, ["toolkit", "install", "go"]);
    c.args(extra).env("STEPMAN_GO_DOWNLOAD_BASE", base);
    c
}

fn toolkit_name(home: &Path) -> PathBuf {
    store_root(home).join(format!("names/_toolkits/go/{VERSION}"))
}

#[test]
fn ten_concurrent_installs_download_once_and_agree() {
    let t = TestDir::new();
    let body = fake_toolkit(t.path());
    let sha = support::sha256_hex(&body);
    let server = Server::start();
    // Slow enough that the ten overlap: the nine others wait on the name lock.
    server.serve(
        &archive_path(),
        body,
        Mode::Full {
            delay: Duration::from_millis(800),
        },
    );
    let home = t.path().join("home");
    let children: Vec<_> = (0..10)
        .map(|_| {
            install(&home, &server.url(), &[VERSION, "--sha256", &sha, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut objects = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "install failed: {}",
            support::stderr_of(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        objects.push(v["object"].as_str().unwrap().to_string());
        let goroot = PathBuf::from(v["goroot"].as_str().unwrap());
        assert_eq!(
            fs::read_to_string(goroot.join("VERSION")).unwrap(),
            format!("go{VERSION}\n")
        );
        assert!(goroot.join("bin/go").is_file());
    }
    objects.dedup();
    assert_eq!(objects.len(), 1, "installers disagree: {objects:?}");
    assert_eq!(
        server.count(&archive_path()),
        1,
        "downloaded more than once"
    );
    assert!(toolkit_name(&home).is_symlink());
    assert_fsck_clean(&home);
}

#[test]
fn a_wrong_hash_a_hostile_or_truncated_archive_installs_nothing() {
    let t = TestDir::new();
    let good = fake_toolkit(t.path());
    let server = Server::start();
    let home = t.path().join("home");
    let full = Mode::Full {
        delay: Duration::ZERO,
    };

    // The right archive, the wrong hash.
    server.serve(&archive_path(), good.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &"ab".repeat(32)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("sha256 is"),
        "{}",
        support::stderr_of(&o)
    );
    assert!(
        support::stderr_of(&o).contains("nothing was installed"),
        "{}",
        support::stderr_of(&o)
    );

    // An archive whose hash is right but that writes outside its tree.
    let evil = support::targz_with_entry("../../escaped", b"marker");
    server.serve(&archive_path(), evil.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &support::sha256_hex(&evil)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("escaped"),
        "{}",
        support::stderr_of(&o)
    );

    // A truncated archive (its hash is that of the truncated bytes).
    let cut = good[..good.len() / 2].to_vec();
    server.serve(&archive_path(), cut.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &support::sha256_hex(&cut)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));

    // A well-formed archive that holds no go/bin/go.
    let other = support::targz_tree(&t.path().join("fake/go/src"));
    server.serve(&archive_path(), other.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &support::sha256_hex(&other)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("no go/bin/go"),
        "{}",
        support::stderr_of(&o)
    );

    assert!(!toolkit_name(&home).exists() && !toolkit_name(&home).is_symlink());
    assert!(!t.path().join("escaped").exists());
    assert_fsck_clean(&home);
    let names = store_root(&home).join("names");
    let bound: Vec<_> = fs::read_dir(&names)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(bound.is_empty(), "a failed install bound a name: {bound:?}");
    let tmp: Vec<_> = fs::read_dir(store_root(&home).join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");

    // Then the right one installs.
    server.serve(&archive_path(), good.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &support::sha256_hex(&good)],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    assert!(toolkit_name(&home).is_symlink());
}

#[test]
fn no_hash_for_another_version_or_offline_asks_nothing_of_the_network() {
    let t = TestDir::new();
    let server = Server::start();
    let home = t.path().join("home");
    server.serve(
        &archive_path(),
        fake_toolkit(t.path()),
        Mode::Full {
            delay: Duration::ZERO,
        },
    );
    let o = install(&home, &server.url(), &[VERSION]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("--sha256"),
        "{}",
        support::stderr_of(&o)
    );
    let o = install(
        &home,
        &server.url(),
        &["--offline", VERSION, "--sha256", &"ab".repeat(32)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("offline"),
        "{}",
        support::stderr_of(&o)
    );
    let o = install(
        &home,
        &server.url(),
        &["../1.2", "--sha256", &"ab".repeat(32)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    assert_eq!(server.count(&archive_path()), 0);
}

/// A stand-in `go` at `root/bin/go` whose version is `root/VERSION`: it answers `env -json
/// VARS` (GOROOT is `root`) and `build ... -o OUT .` (OUT is a script printing `built by
/// <version>`), and logs each call to `$FAKE_GO_LOG` (never into its own tree, which may be a
/// store object).
fn scripted_go(root: &Path, version: &str) -> PathBuf {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("VERSION"), format!("{version}\n")).unwrap();
    let script = r#"#!/bin/sh
root=$(cd "$(dirname "$0")/.." && pwd)
ver=$(cat "$root/VERSION")
echo "$ver $*" >> "$FAKE_GO_LOG"
case "$1" in
env)
    printf '{"GOROOT": "%s", "GOVERSION": "%s", "GOOS": "linux", "GOARCH": "amd64", "CGO_ENABLED": "0"}\n' "$root" "$ver"
    ;;
build)
    if [ -n "$FAKE_GO_HOLD" ]; then
        while [ ! -e "$FAKE_GO_HOLD" ]; do sleep 0.05; done
    fi
    out=""
    while [ $# -gt 0 ]; do
        if [ "$1" = "-o" ]; then out=$2; fi
        shift
    done
    printf '#!/bin/sh\necho built by %s\n' "$ver" > "$out"
    ;;
*) exit 3 ;;
esac
"#;
    let go = root.join("bin/go");
    fs::write(&go, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&go, fs::Permissions::from_mode(0o755)).unwrap();
    go
}

/// A local StepLib with the Go step `g@1.0.0` (a zip holding `main.go`).
fn go_steplib(lib: &Path) {
    fs::create_dir_all(lib.join("steps/g/1.0.0")).unwrap();
    fs::write(
        lib.join("steps/g/1.0.0/step.yml"),
        "title: G\ntoolkit:\n  go:\n    package_name: example.com/g\n",
    )
    .unwrap();
    fs::create_dir_all(lib.join("archives/g/1.0.0")).unwrap();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("main.go", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut z, b"package main\n\nfunc main() {}\n").unwrap();
    fs::write(
        lib.join("archives/g/1.0.0/step.zip"),
        z.finish().unwrap().into_inner(),
    )
    .unwrap();
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.0.0\nsteplib_source: t\ndownload_locations:\n  - type: zip\n    src: archives/\n",
    )
    .unwrap();
}

/// `activate --prepare` of `g` with `path_dir` first on PATH, the fake go's calls logged to
/// `log`.
fn prepare(home: &Path, lib: &Path, dest: &Path, path_dir: &Path, log: &Path) -> Command {
    let mut c = support::stepman(home, ["activate", "-c"]);
    c.arg(lib)
        .args(["-i", "g", "--prepare", "--json", "-p"])
        .arg(dest)
        .env_remove("STEPMAN_GO")
        .env("FAKE_GO_LOG", log)
        .env("PATH", format!("{}:/usr/bin:/bin", path_dir.display()));
    c
}

#[test]
fn an_old_go_on_path_gives_way_to_the_stores_toolkit() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    go_steplib(&lib);
    let home = t.path().join("home");
    let old = scripted_go(&t.path().join("old/go"), "go1.21.0");
    let log = t.path().join("calls.log");

    // Offline, no toolkit in the store: a clear refusal that names the old version, the
    // minimum and what to do; nothing activated.
    let dest = t.path().join("d1");
    let o = prepare(&home, &lib, &dest, old.parent().unwrap(), &log)
        .arg("--offline")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::stderr_of(&o));
    for want in ["go1.21.0", "1.22.12", "toolkit install go"] {
        assert!(
            support::stderr_of(&o).contains(want),
            "no {want:?} in: {}",
            support::stderr_of(&o)
        );
    }
    assert!(!dest.exists());

    // With a newer Go toolkit installed in the store, that one builds (from its read-only
    // GOROOT inside the store), and the old one on PATH is only asked for its version.
    let server = Server::start();
    let staged = t.path().join("toolkit-src");
    scripted_go(&staged.join("go"), &format!("go{VERSION}"));
    let archive = t.path().join("toolkit.tar.gz");
    support::tar_gz(&staged, &archive);
    let body = fs::read(&archive).unwrap();
    let sha = support::sha256_hex(&body);
    server.serve(
        &archive_path(),
        body,
        Mode::Full {
            delay: Duration::ZERO,
        },
    );
    let o = install(&home, &server.url(), &[VERSION, "--sha256", &sha])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    let dest = t.path().join("d2");
    let o = prepare(&home, &lib, &dest, old.parent().unwrap(), &log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    assert!(
        support::stderr_of(&o).contains("go1.21.0"),
        "no warning: {}",
        support::stderr_of(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["build"], "built");
    assert_eq!(v["go"]["origin"], "store");
    assert_eq!(v["go"]["version"], format!("go{VERSION}"));
    let goroot = v["go"]["goroot"].as_str().unwrap();
    assert!(
        goroot.starts_with(store_root(&home).to_str().unwrap()),
        "{goroot}"
    );
    let run = Command::new(v["run"][0].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("built by go{VERSION}\n")
    );
    let calls = fs::read_to_string(&log).unwrap();
    let old_calls: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("go1.21.0 "))
        .collect();
    assert!(
        !old_calls.is_empty() && old_calls.iter().all(|l| l.contains(" env ")),
        "the old go was asked to build: {calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with(&format!("go{VERSION} build"))),
        "the store's toolkit did not build: {calls}"
    );
    assert_fsck_clean(&home);
}

/// The lock files under `locks/names/` that process `pid` has open.
fn open_name_locks(pid: u32, home: &Path) -> Vec<PathBuf> {
    let locks = store_root(home).join("locks/names");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter(|t| t.starts_with(&locks))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_a_wait_for_another_jobs_build() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    go_steplib(&lib);
    let home = t.path().join("home");
    let go = scripted_go(&t.path().join("new/go"), &format!("go{VERSION}"));
    let log = t.path().join("calls.log");
    let hold = t.path().join("release");
    let start = |dest: &str| {
        prepare(
            &home,
            &lib,
            &t.path().join(dest),
            go.parent().unwrap(),
            &log,
        )
        .env("FAKE_GO_HOLD", &hold)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let builder = start("a");
    wait_for("the first build to start", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains(" build "))
    });
    let waiter = start("b");
    let build_lock = open_name_locks(builder.id(), &home);
    assert!(!build_lock.is_empty(), "the builder holds no name lock");
    wait_for("the second job to wait on the build's lock", || {
        open_name_locks(waiter.id(), &home)
            .iter()
            .any(|l| build_lock.contains(l))
    });
    let t0 = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&waiter),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", support::stderr_of(&o));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(!t.path().join("b").exists());
    fs::write(&hold, "").unwrap();
    let o = builder.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", support::stderr_of(&o));
    let builds = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" build "))
        .count();
    assert_eq!(builds, 1);
    assert_fsck_clean(&home);
}
