//! `stepman toolkit install go`: the archive is verified by its sha256 before anything is
//! published, vetted like any archive, and named `_toolkits/go/<version>`; ten installers at
//! once download it once. Served from a loopback HTTP server (`STEPMAN_GO_DOWNLOAD_BASE`).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{Mode, Server};
use support::{TestDir, assert_fsck_clean, store_root};

const VERSION: &str = "1.99.1";

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ten_concurrent_installs_download_once_and_agree() {
    let t = TestDir::new();
    let body = fake_toolkit(t.path());
    let sha = sha256_hex(&body);
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
        assert!(o.status.success(), "install failed: {}", stderr(&o));
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
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("sha256 is"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing was installed"),
        "{}",
        stderr(&o)
    );

    // An archive whose hash is right but that writes outside its tree.
    let evil = support::targz_with_entry("../../escaped", b"marker");
    server.serve(&archive_path(), evil.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &sha256_hex(&evil)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("escaped"), "{}", stderr(&o));

    // A truncated archive (its hash is that of the truncated bytes).
    let cut = good[..good.len() / 2].to_vec();
    server.serve(&archive_path(), cut.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &sha256_hex(&cut)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // A well-formed archive that holds no go/bin/go.
    let other = support::targz_tree(&t.path().join("fake/go/src"));
    server.serve(&archive_path(), other.clone(), full);
    let o = install(
        &home,
        &server.url(),
        &[VERSION, "--sha256", &sha256_hex(&other)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no go/bin/go"), "{}", stderr(&o));

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
        &[VERSION, "--sha256", &sha256_hex(&good)],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
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
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--sha256"), "{}", stderr(&o));
    let o = install(
        &home,
        &server.url(),
        &["--offline", VERSION, "--sha256", &"ab".repeat(32)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("offline"), "{}", stderr(&o));
    let o = install(
        &home,
        &server.url(),
        &["../1.2", "--sha256", &"ab".repeat(32)],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(server.count(&archive_path()), 0);
}
