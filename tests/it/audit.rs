//! `audit`: a step.yml's fields, and every version of a StepLib against its step repository
//! (served by `git http-backend` on loopback), every failure named, no clone left behind.

use std::fs;

use serde_json::Value;

use crate::support::{self, output, stepman};

/// A step.yml that passes every check, with `source` at `(git, commit)` (and `title` as given).
fn good_yml(title: &str, git: &str, commit: &str) -> String {
    format!(
        "{}published_at: 2024-01-01T00:00:00Z\n",
        support::step_yml(title, Some((git, commit)))
    )
}

/// A step repository with the tags `1.0.0` and `2.0.0` (both at `tagged`; `earlier` is another
/// commit), served by `git http-backend` on loopback: the repository, the server and its URL.
fn served_step_repo(dir: &std::path::Path) -> (support::GitRepo, support::Server, String) {
    let src = dir.join("step-src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("step.sh"), "echo hi\n").unwrap();
    let repos = dir.join("repos");
    fs::create_dir_all(&repos).unwrap();
    let repo = support::git_repo(&repos, &src, "1.0.0");
    support::git(&repos.join("repo.git"), &["tag", "2.0.0", "1.0.0"]);
    let server = support::Server::start();
    server.mount_git_backend("/git", &repos);
    let git = format!("{}/git/repo.git", server.url());
    (repo, server, git)
}

/// A local StepLib whose versions name a step repository over loopback HTTP: `s@1.0.0` right,
/// `s@2.0.0` with a commit its tag is not at, `t@1.0.0` without a title (which setup leaves
/// out of the collection: its file is named); all at once, in parallel, each failure named, and neither the store's temp area nor `TMPDIR` keeps a clone.
#[test]
fn audit_of_a_steplib_names_a_wrong_commit_and_a_missing_title() {
    let t = support::TestDir::new();
    let (repo, _server, git) = served_step_repo(t.path());

    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("git", "unused")]);
    support::write_step(&lib, "s", "1.0.0", &good_yml("S", &git, &repo.tagged));
    support::write_step(&lib, "s", "2.0.0", &good_yml("S", &git, &repo.earlier));
    support::write_step(
        &lib,
        "t",
        "1.0.0",
        &good_yml("T", &git, &repo.tagged).replace("title: \"T\"\n", ""),
    );
    let home = t.path().join("home");
    let tmpdir = t.path().join("tmpdir");
    fs::create_dir_all(&tmpdir).unwrap();
    let lib = lib.to_str().unwrap();
    let o = output(stepman(&home, ["audit", "-c", lib, "--json"]).env("TMPDIR", &tmpdir));
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let failures = |subject: &str| -> Vec<String> {
        report["audited"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject} not audited: {report}"))["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(failures("s@1.0.0"), Vec::<String>::new(), "{report}");
    let wrong = failures("s@2.0.0");
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].contains(&format!(
            "tag 2.0.0 is at commit {}, but the step requires commit {}",
            repo.tagged, repo.earlier
        )),
        "{wrong:?}"
    );
    // A step.yml without a title is left out of the collection by setup: its file is named.
    assert_eq!(
        failures("steps/t/1.0.0/step.yml"),
        ["missing required field: title"],
        "{report}"
    );
    assert_eq!(failures("steps/t"), ["no valid version"], "{report}");
    assert_eq!(report["failed"], 3, "{report}");
    assert_eq!(support::temp_entries(&home), Vec::<String>::new());
    assert_eq!(
        fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "a clone in TMPDIR"
    );

    // The plain output: one line per failure, each naming its version.
    let o = output(&mut stepman(&home, ["audit", "-c", lib]));
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("[OK] s@1.0.0\n"), "{text}");
    assert!(text.contains("[FAILED] s@2.0.0: tag 2.0.0: git "), "{text}");
    assert!(
        text.contains("[FAILED] steps/t/1.0.0/step.yml: missing required field: title\n"),
        "{text}"
    );
}

/// `audit --step-yml` lists every failing field (the old tool stops at the first); with
/// `--before-pr` a path that is not `steps/<id>/<version>/step.yml` and the missing PR fields
/// too. A passing one exits 0; neither `-c` nor `--step-yml` is bad usage.
#[test]
fn audit_of_a_step_yml_lists_every_failure() {
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let yml = t.path().join("step.yml");
    fs::write(
        &yml,
        "title: X\ntimeout: -1\ninputs:\n  - a: 1\n    opts:\n      is_sensitive: true\n      is_expand: false\n",
    )
    .unwrap();
    let p = yml.to_str().unwrap();
    let o = output(&mut stepman(&home, ["audit", "--step-yml", p]));
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "missing or empty required 'summary' property",
        "missing or empty required 'website' property",
        "timeout -1 is less than 0",
        "input a: missing or empty title",
        "input a: is_sensitive is true, which needs is_expand (it is false)",
    ] {
        assert!(
            text.contains(&format!("[FAILED] {p}: {want}\n")),
            "{want}: {text}"
        );
    }
    let o = output(&mut stepman(
        &home,
        ["audit", "--step-yml", p, "--before-pr"],
    ));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "the path should end with steps/<id>/<version>/step.yml",
        "missing or empty required 'published_at' property",
        "missing or empty required 'source.git' property",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    let good = t.path().join("steps/g/1.0.0/step.yml");
    fs::create_dir_all(good.parent().unwrap()).unwrap();
    fs::write(&good, support::step_yml("G", None)).unwrap();
    let o = output(&mut stepman(
        &home,
        ["audit", "--step-yml", good.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("[OK] {}\n", good.display())
    );
    let o = output(&mut stepman(&home, ["audit"]));
    assert_eq!(o.status.code(), Some(2), "{}", support::describe(&o));
}

/// `audit -c` clones the versions' tags at once, not one after another: a `git` wrapper holds
/// each clone until another one is running too (at most 10 s), and logs when it saw that; run
/// one after another (`--jobs 1`), no clone ever sees another.
#[test]
fn audit_of_a_steplib_clones_its_versions_in_parallel() {
    let t = support::TestDir::new();
    let (repo, _server, git) = served_step_repo(t.path());
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("git", "unused")]);
    for v in ["1.0.0", "2.0.0"] {
        support::write_step(&lib, "s", v, &good_yml("S", &git, &repo.tagged));
    }
    let real = support::real_git();
    let bin = t.path().join("bin");
    let running = t.path().join("running");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&running).unwrap();
    let log = t.path().join("overlap.log");
    let wrapper = bin.join("git");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *' clone '*)\n  touch '{r}'/$$\n  i=0\n  while [ \"$(ls '{r}' | wc -l)\" -lt 2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n  [ \"$(ls '{r}' | wc -l)\" -ge 2 ] && echo overlap >> '{l}'\n  '{g}' \"$@\"; s=$?\n  rm -f '{r}'/$$\n  exit $s;;\nesac\nexec '{g}' \"$@\"\n",
            r = running.display(),
            l = log.display(),
            g = real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let home = t.path().join("home");
    let o = output(
        stepman(&home, ["audit", "-c", lib.to_str().unwrap()])
            .env("PATH", support::path_with_first(&bin)),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    let seen = fs::read_to_string(&log).unwrap_or_default();
    // A clone's marker goes when it ends: one clone that saw two markers ran beside another
    // (the other may have missed it, having looked after the first ended).
    assert!(
        seen.lines().count() >= 1,
        "the two versions' clones never ran at the same time: {seen:?}"
    );
}
