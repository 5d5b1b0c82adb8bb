//! Steps named by where they are, as CI configs name them: `activate -i git::URL@REF` (also
//! `-c git -i URL -v REF`, `download`, `step-info --library git::…`) and `-i path::DIR`. A git
//! ref resolves to a commit with one `ls-remote`; the commit's tree is stored once and a second
//! activation of it clones nothing; a branch that moves resolves again; a full commit id needs
//! no network (also offline); a path is copied as it is.

use crate::git_transports::{Served, Transport, commit_all};
use crate::support;

use std::fs;
use std::path::Path;
use std::process::Output;

use support::{TestDir, assert_fsck_clean, assert_same_tree, stepman};

fn run(home: &Path, args: &[&str]) -> Output {
    support::output(&mut stepman(home, args))
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A step repository work tree at `wt` whose `step.sh` says `says`; returns the new commit.
fn step_commit(wt: &Path, says: &str) -> String {
    fs::create_dir_all(wt).unwrap();
    fs::write(wt.join("step.sh"), format!("echo {says}\n")).unwrap();
    fs::write(wt.join("step.yml"), support::step_yml(says, None)).unwrap();
    commit_all(wt, says)
}

fn step_sh(dest: &Path) -> String {
    fs::read_to_string(dest.join("step.sh")).unwrap_or_default()
}

/// `ls-remote`s (and clones' ref listings) the smart server answered.
fn listings(served: &Served) -> usize {
    served
        .server
        .requests()
        .iter()
        .filter(|r| {
            r.path.starts_with("/smart/")
                && r.path.ends_with("/info/refs")
                && r.query == "service=git-upload-pack"
        })
        .count()
}

#[test]
fn a_commit_is_cloned_once_and_a_moving_branch_resolves_again() {
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    let c1 = step_commit(&wt, "one");
    served.publish(&wt, "ref.git");
    let url = served.url(Transport::Smart, "ref.git");
    let home = t.path().join("home");
    let d = |n: &str| t.path().join(n);
    let at = |r: &str| format!("git::{url}@{r}");

    // First activation: one ls-remote, one clone; the tree without `.git`; -y from the tree.
    let yml = d("y1.yml");
    let o = run(
        &home,
        &[
            "activate",
            "-i",
            &at("main"),
            "-p",
            d("d1").to_str().unwrap(),
            "-y",
            yml.to_str().unwrap(),
        ],
    );
    ok(&o, "first activation");
    assert_eq!(step_sh(&d("d1")), "echo one\n");
    assert!(!d("d1").join(".git").exists(), ".git was kept");
    assert_eq!(
        fs::read_to_string(&yml).unwrap(),
        fs::read_to_string(wt.join("step.yml")).unwrap()
    );
    assert_eq!(served.fetches(Transport::Smart).len(), 1);

    // The same commit again: one ls-remote, no clone.
    let before = listings(&served);
    let o = run(
        &home,
        &[
            "activate",
            "-i",
            &at("main"),
            "-p",
            d("d1").to_str().unwrap(),
        ],
    );
    ok(&o, "second activation");
    assert_eq!(listings(&served), before + 1, "not exactly one ls-remote");
    assert_eq!(served.fetches(Transport::Smart).len(), 1, "cloned again");

    // The branch moves: resolved again, the new commit cloned.
    let c2 = step_commit(&wt, "two");
    served.publish(&wt, "ref.git");
    let o = run(
        &home,
        &[
            "activate",
            "-i",
            &at("main"),
            "-p",
            d("d2").to_str().unwrap(),
        ],
    );
    ok(&o, "activation after the branch moved");
    assert_eq!(step_sh(&d("d2")), "echo two\n");
    assert_eq!(served.fetches(Transport::Smart).len(), 2);

    // A full commit id: no network at all, the old tree.
    let requests = served.server.requests().len();
    let o = run(
        &home,
        &["activate", "-i", &at(&c1), "-p", d("d3").to_str().unwrap()],
    );
    ok(&o, "activation of the first commit by its id");
    assert_eq!(step_sh(&d("d3")), "echo one\n");
    assert_eq!(
        served.server.requests().len(),
        requests,
        "a full commit id used the network"
    );

    // Offline: a stored commit works; a branch is refused, naming it.
    let o = run(
        &home,
        &[
            "--offline",
            "activate",
            "-i",
            &at(&c2),
            "-p",
            d("d4").to_str().unwrap(),
        ],
    );
    ok(&o, "offline activation of a stored commit");
    assert_eq!(step_sh(&d("d4")), "echo two\n");
    let o = run(
        &home,
        &[
            "--offline",
            "activate",
            "-i",
            &at("main"),
            "-p",
            d("d5").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("main") && err.contains(&url) && err.contains("offline"),
        "{err}"
    );
    assert!(!d("d5").exists());
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let o = run(
        &home,
        &[
            "--offline",
            "activate",
            "-i",
            &at(unknown),
            "-p",
            d("d5").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        served.server.requests().len(),
        requests,
        "offline used the network"
    );

    // The old tool's spellings, download, step-info and file:// name the same trees.
    let o = run(
        &home,
        &[
            "activate",
            "-c",
            "git",
            "-i",
            &url,
            "-v",
            "main",
            "-p",
            d("d6").to_str().unwrap(),
        ],
    );
    ok(&o, "activate -c git -i URL -v main");
    assert_same_tree(&d("d2"), &d("d6"));
    let o = run(&home, &["download", "-i", &at("main")]);
    ok(&o, "download");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already in the store"));
    let info = ok(
        &run(
            &home,
            &[
                "step-info",
                "--library",
                "git",
                "--id",
                &url,
                "--version",
                "main",
                "--format",
                "json",
            ],
        ),
        "step-info --library git",
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["version"], "main");
    assert_eq!(info["info"]["commit"], c2.as_str());
    let file = format!("git::file://{}@main", served.root.join("ref.git").display());
    let o = run(
        &home,
        &["activate", "-i", &file, "-p", d("d7").to_str().unwrap()],
    );
    ok(&o, "activate of a file:// ref");
    assert_same_tree(&d("d2"), &d("d7"));
    assert_eq!(
        served.fetches(Transport::Smart).len(),
        2,
        "cloned once per commit"
    );
    assert_fsck_clean(&home);
    // A full ref name (which `git clone --branch` does not take) in a store without its commit.
    let home2 = t.path().join("home2");
    let o = run(
        &home2,
        &[
            "activate",
            "-i",
            &at("refs/heads/main"),
            "-p",
            d("d8").to_str().unwrap(),
        ],
    );
    ok(&o, "activate of refs/heads/main");
    assert_same_tree(&d("d2"), &d("d8"));
    assert_fsck_clean(&home2);
}

#[test]
fn bad_refs_urls_and_paths_fail_with_one_line_naming_them() {
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    step_commit(&wt, "one");
    served.publish(&wt, "ref.git");
    let url = served.url(Transport::Smart, "ref.git");
    let home = t.path().join("home");
    let file = t.path().join("a-file");
    fs::write(&file, "not a directory\n").unwrap();
    let gone = "http://127.0.0.1:1/gone.git";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("git::{url}@no-such-branch"),
            vec![&url, "no-such-branch"],
        ),
        (format!("git::{gone}@main"), vec![gone]),
        (
            format!(
                "git::ext::sh -c touch% {}@main",
                t.path().join("pwned").display()
            ),
            vec!["ext::", "not allowed"],
        ),
        (
            format!("git::{url}@--upload-pack=x"),
            vec![&url, "--upload-pack=x"],
        ),
        (
            format!("path::{}", file.display()),
            vec![file.to_str().unwrap()],
        ),
        (
            format!("path::{}", t.path().join("missing").display()),
            vec!["missing"],
        ),
    ];
    for (i, (id, names)) in cases.iter().enumerate() {
        let dest = t.path().join(format!("dest{i}"));
        let o = run(&home, &["activate", "-i", id, "-p", dest.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{id}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{id}: not one line: {err}");
        for n in names {
            assert!(err.contains(n), "{id}: the error does not name {n}: {err}");
        }
        assert!(!dest.exists(), "{id}: {} exists", dest.display());
    }
    assert!(!t.path().join("pwned").exists(), "a remote helper ran");
    assert_fsck_clean(&home);
}

#[test]
fn a_path_is_copied_as_it_is() {
    let t = TestDir::new();
    let home = t.path().join("home");
    let dir = t.path().join("steps/my-step");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("step.sh"), "echo path\n").unwrap();
    fs::write(dir.join("step.yml"), support::step_yml("path step", None)).unwrap();
    fs::write(dir.join("sub/data"), "x\n").unwrap();
    let dest = t.path().join("dest");
    let yml = t.path().join("y.yml");
    let spec = format!("path::{}", dir.display());
    let o = run(
        &home,
        &[
            "activate",
            "-i",
            &spec,
            "-p",
            dest.to_str().unwrap(),
            "-y",
            yml.to_str().unwrap(),
        ],
    );
    ok(&o, "activate -i path::DIR");
    assert_same_tree(&dir, &dest);
    assert_eq!(
        fs::read(&yml).unwrap(),
        fs::read(dir.join("step.yml")).unwrap()
    );
    // Not cached: a change shows at the next activation (into the tree the first one made).
    fs::write(dir.join("step.sh"), "echo changed\n").unwrap();
    let o = run(
        &home,
        &[
            "activate",
            "-c",
            "path",
            "-i",
            dir.to_str().unwrap(),
            "-p",
            dest.to_str().unwrap(),
        ],
    );
    ok(&o, "activate -c path -i DIR");
    assert_same_tree(&dir, &dest);
    // `~/…` is the home directory; a relative path is the working directory's.
    let o = support::output(
        stepman(&home, ["activate", "-i", "path::~/steps/my-step", "-p"])
            .arg(t.path().join("dest-home"))
            .env("HOME", t.path()),
    );
    ok(&o, "activate -i path::~/…");
    assert_same_tree(&dir, &t.path().join("dest-home"));
    let o = support::output(
        stepman(
            &home,
            ["activate", "-i", "path::./steps/my-step", "-p", "dest-rel"],
        )
        .current_dir(t.path()),
    );
    ok(&o, "activate -i path::./…");
    assert_same_tree(&dir, &t.path().join("dest-rel"));
    // A destination inside the directory would copy itself: refused, nothing written there.
    let inside = dir.join("sub/dest");
    let o = run(
        &home,
        &["activate", "-i", &spec, "-p", inside.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!inside.exists());
    assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
    // step-info reads the directory's step.yml, both spellings.
    for args in [
        vec![
            "step-info",
            "--library",
            "path",
            "--id",
            dir.to_str().unwrap(),
            "--format",
            "json",
        ],
        vec!["step-info", "--library", &spec, "--format", "json"],
    ] {
        let info = ok(&run(&home, &args), &format!("{args:?}"));
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["step"]["title"], "path step", "{args:?}");
        assert_eq!(
            info["definition_pth"],
            dir.join("step.yml").display().to_string(),
            "{args:?}"
        );
    }
    // No object was stored for a path.
    assert!(support::object_ids(&home).is_empty());
}
