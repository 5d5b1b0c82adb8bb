//! StepLibs, step sources and `git::` steps served over loopback HTTP both ways git can be:
//! smart (`git http-backend` as CGI behind `support::http::Server`) and dumb (the same bare
//! repositories as static files after `git update-server-info`, which cannot clone shallow).
//! `setup`, `update`, `activate` of a git-source step, `activate -i git::…` and `step-info
//! --library git::…` must work with both, and say on stderr which clone they made.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{Server, TestDir, git, stepman};

/// How the repositories are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `git http-backend`.
    Smart,
    /// Static files.
    Dumb,
}

impl Transport {
    fn prefix(self) -> &'static str {
        match self {
            Transport::Smart => "/smart",
            Transport::Dumb => "/dumb",
        }
    }

    /// The StepLib served for this transport.
    fn steplib(self) -> String {
        format!("steplib-{}.git", &self.prefix()[1..])
    }

    /// What stderr says about each clone made over this transport.
    fn says(self) -> &'static str {
        match self {
            Transport::Smart => "shallow clone",
            Transport::Dumb => "full clone (the server speaks git's dumb HTTP protocol",
        }
    }

    /// What stderr says about each fetch into a kept StepLib mirror over this transport.
    fn fetch_says(self) -> &'static str {
        match self {
            Transport::Smart => "shallow fetch",
            Transport::Dumb => "full fetch (the server speaks git's dumb HTTP protocol",
        }
    }
}

/// Bare repositories under one directory, served both ways by one loopback server.
pub(crate) struct Served {
    pub(crate) server: Server,
    pub(crate) root: PathBuf,
}

impl Served {
    /// Serves the bare repositories under `root`: smart at `/smart/<repo>`, dumb at
    /// `/dumb/<repo>`.
    pub(crate) fn start(root: &Path) -> Served {
        fs::create_dir_all(root).unwrap();
        let server = Server::start();
        server.mount_git_backend(Transport::Smart.prefix(), root);
        server.mount_static(Transport::Dumb.prefix(), root);
        Served {
            server,
            root: root.to_path_buf(),
        }
    }

    /// The URL of `repo` over `t`.
    pub(crate) fn url(&self, t: Transport, repo: &str) -> String {
        format!("{}{}/{repo}", self.server.url(), t.prefix())
    }

    /// Publishes the work tree `wt` (a repository) as the bare `<root>/<repo>`, or pushes its
    /// `main` and tags there when it exists, and refreshes the dumb server's files.
    pub(crate) fn publish(&self, wt: &Path, repo: &str) {
        let bare = self.root.join(repo);
        if bare.exists() {
            git(
                wt,
                &["push", "-q", "--force", bare.to_str().unwrap(), "main"],
            );
            git(
                wt,
                &["push", "-q", "--force", "--tags", bare.to_str().unwrap()],
            );
        } else {
            git(
                &self.root,
                &["clone", "-q", "--bare", wt.to_str().unwrap(), repo],
            );
        }
        git(&bare, &["update-server-info"]);
    }

    /// The POSTs to `git-upload-pack` that asked for objects (clones and fetches, not
    /// `ls-remote`), over `t`.
    pub(crate) fn fetches(&self, t: Transport) -> Vec<support::Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && r.path.starts_with(t.prefix())
                    && r.path.ends_with("/git-upload-pack")
                    && r.body.windows(5).any(|w| w == b"want ")
            })
            .collect()
    }

    /// The object and pack files fetched from the dumb server (what a dumb clone reads).
    pub(crate) fn dumb_object_reads(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/dumb/") && r.path.contains("/objects/"))
            .count()
    }
}

/// Commits everything in `wt` (made a repository on first use) on `main`.
pub(crate) fn commit_all(wt: &Path, message: &str) -> String {
    if !wt.join(".git").exists() {
        git(wt, &["init", "-q", "-b", "main"]);
    }
    git(wt, &["add", "-A"]);
    git(wt, &["commit", "-q", "--allow-empty", "-m", message]);
    git(wt, &["rev-parse", "HEAD"])
}

/// `stepman <args>` with the log at `info`, so that every clone is reported.
fn run(home: &Path, args: &[&str]) -> Output {
    support::output(stepman(home, args).env("RUST_LOG", "info"))
}

/// The checks of one run: every failure is kept, so that one run shows each command that
/// fails, not only the first.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    /// `o` must have succeeded and its stderr say `says` (`what`: the command).
    fn ok_saying(&mut self, o: &Output, what: &str, says: &str) -> bool {
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            self.0
                .push(format!("{what} failed ({}): {}", o.status, err.trim()));
            false
        } else if !err.contains(says) {
            self.0.push(format!(
                "{what}: stderr does not say {says:?}: {}",
                err.trim()
            ));
            false
        } else {
            true
        }
    }

    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.0.push(failure());
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} failures:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The step source repository (`step.git`, tag `1.0.0`) and a StepLib for each transport
/// (`steplib-<smart|dumb>.git`) whose step `s@1.0.0` clones it over that transport.
fn publish_repos(t: &Path, served: &Served) -> String {
    let step = t.join("step-wt");
    fs::create_dir_all(&step).unwrap();
    fs::write(step.join("step.sh"), "echo served\n").unwrap();
    fs::write(
        step.join("step.yml"),
        support::step_yml("Served step", None),
    )
    .unwrap();
    let commit = commit_all(&step, "step");
    git(&step, &["tag", "1.0.0"]);
    served.publish(&step, "step.git");
    for tr in [Transport::Smart, Transport::Dumb] {
        let lib = t.join(format!("steplib-{tr:?}"));
        support::write_steplib_yml(&lib, &[("git", "source/git")]);
        let src = served.url(tr, "step.git");
        support::write_step(
            &lib,
            "s",
            "1.0.0",
            &support::step_yml("s", Some((&src, &commit))),
        );
        commit_all(&lib, "steplib");
        served.publish(&lib, &tr.steplib());
    }
    // A smart StepLib whose step's source is on the dumb server.
    let lib = t.join("steplib-mixed");
    support::write_steplib_yml(&lib, &[("git", "source/git")]);
    let src = served.url(Transport::Dumb, "step.git");
    support::write_step(
        &lib,
        "s",
        "1.0.0",
        &support::step_yml("s", Some((&src, &commit))),
    );
    commit_all(&lib, "steplib");
    served.publish(&lib, "steplib-mixed.git");
    commit
}

#[test]
fn every_git_command_works_over_smart_and_dumb_http() {
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    publish_repos(t.path(), &served);
    let mut checks = Checks::default();
    for tr in [Transport::Smart, Transport::Dumb] {
        let home = t.path().join(format!("home-{tr:?}"));
        let lib = served.url(tr, &tr.steplib());
        let says = tr.says();

        let o = run(&home, &["setup", "-c", &lib]);
        checks.ok_saying(&o, &format!("setup over {tr:?}"), says);

        // A new version upstream: `update` must clone again and see it.
        let wt = t.path().join(format!("steplib-{tr:?}"));
        let src = served.url(tr, "step.git");
        let commit = git(&t.path().join("step-wt"), &["rev-parse", "HEAD"]);
        support::write_step(
            &wt,
            "s",
            "1.1.0",
            &support::step_yml("s", Some((&src, &commit))),
        );
        commit_all(&wt, "1.1.0");
        served.publish(&wt, &tr.steplib());
        let o = run(&home, &["update", "-c", &lib]);
        if checks.ok_saying(&o, &format!("update over {tr:?}"), tr.fetch_says()) {
            let o = run(
                &home,
                &[
                    "step-info",
                    "--library",
                    &lib,
                    "--id",
                    "s",
                    "--version",
                    "1.1.0",
                ],
            );
            checks.check(
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Version: 1.1.0"),
                || {
                    format!(
                        "the update over {tr:?} did not bring 1.1.0: {}",
                        String::from_utf8_lossy(&o.stderr)
                    )
                },
            );
        }

        let dest = t.path().join(format!("dest-{tr:?}"));
        let o = run(
            &home,
            &[
                "activate",
                "-c",
                &lib,
                "-i",
                "s",
                "-v",
                "1.0.0",
                "-p",
                dest.to_str().unwrap(),
            ],
        );
        if checks.ok_saying(
            &o,
            &format!("activate of a git-source step over {tr:?}"),
            says,
        ) {
            checks.check(
                fs::read_to_string(dest.join("step.sh")).ok().as_deref() == Some("echo served\n"),
                || format!("activate over {tr:?}: wrong step.sh"),
            );
        }

        let spec = format!("git::{src}@1.0.0");
        let o = run(&home, &["step-info", "--library", &spec]);
        if checks.ok_saying(&o, &format!("step-info --library {spec}"), says) {
            checks.check(
                String::from_utf8_lossy(&o.stdout).contains("Served step"),
                || {
                    format!(
                        "step-info --library {spec}: {}",
                        String::from_utf8_lossy(&o.stdout)
                    )
                },
            );
        }

        let dest = t.path().join(format!("dest-ref-{tr:?}"));
        let o = run(
            &home,
            &["activate", "-i", &spec, "-p", dest.to_str().unwrap()],
        );
        // The tree of that commit is stored already (step-info fetched it): nothing cloned.
        if checks.ok_saying(&o, &format!("activate -i {spec}"), "nothing cloned") {
            checks.check(
                fs::read_to_string(dest.join("step.sh")).ok().as_deref() == Some("echo served\n"),
                || format!("activate -i {spec}: wrong step.sh"),
            );
        }
        support::assert_fsck_clean(&home);
    }
    // A step source on the dumb server, from a StepLib on the smart one.
    let home = t.path().join("home-mixed");
    let lib = served.url(Transport::Smart, "steplib-mixed.git");
    let dest = t.path().join("dest-mixed");
    let o = run(
        &home,
        &[
            "activate",
            "-c",
            &lib,
            "-i",
            "s",
            "-v",
            "1.0.0",
            "-p",
            dest.to_str().unwrap(),
        ],
    );
    if checks.ok_saying(
        &o,
        "activate of a dumb-served source from a smart StepLib",
        Transport::Smart.says(),
    ) {
        checks.ok_saying(
            &o,
            "activate of a dumb-served source from a smart StepLib",
            Transport::Dumb.says(),
        );
    }
    checks.assert_none();
    // The smart clones were shallow indeed, and the dumb ones read the objects themselves.
    let smart = served.fetches(Transport::Smart);
    assert!(
        smart.len() >= 4
            && smart
                .iter()
                .all(|r| r.body.windows(8).any(|w| w == b"deepen 1")),
        "{} smart fetches, not all shallow",
        smart.len()
    );
    assert!(
        served.dumb_object_reads() > 0,
        "nothing read from the dumb server"
    );
}

/// A commit behind the tip of every branch and tag, by its id: fetched alone where the server
/// allows it (smart, protocol v2), else from a full clone (dumb), in a store that has nothing.
#[test]
fn a_commit_behind_every_tip_is_fetched_over_both_transports() {
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    fs::create_dir_all(&wt).unwrap();
    fs::write(wt.join("step.sh"), "echo old\n").unwrap();
    let old = commit_all(&wt, "old");
    fs::write(wt.join("step.sh"), "echo new\n").unwrap();
    commit_all(&wt, "new");
    served.publish(&wt, "r.git");
    let mut checks = Checks::default();
    for tr in [Transport::Smart, Transport::Dumb] {
        let home = t.path().join(format!("home-{tr:?}"));
        let dest = t.path().join(format!("dest-{tr:?}"));
        let spec = format!("git::{}@{old}", served.url(tr, "r.git"));
        let o = run(
            &home,
            &["activate", "-i", &spec, "-p", dest.to_str().unwrap()],
        );
        if checks.ok_saying(&o, &format!("activate -i {spec}"), tr.says()) {
            checks.check(
                fs::read_to_string(dest.join("step.sh")).ok().as_deref() == Some("echo old\n"),
                || format!("activate -i {spec}: not the old commit's tree"),
            );
        }
        support::assert_fsck_clean(&home);
    }
    checks.assert_none();
}

/// The branch moves between the `ls-remote` that resolved it and the clone (a `git` wrapper
/// moves it right after `ls-remote`): the shallow (or, dumb, full) clone of the branch lands on
/// the new tip, and the commit that was resolved is fetched itself.
#[test]
fn a_branch_that_moves_between_resolve_and_clone_still_gives_the_resolved_commit() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    fs::create_dir_all(&wt).unwrap();
    fs::write(wt.join("step.sh"), "echo resolved\n").unwrap();
    let resolved = commit_all(&wt, "resolved");
    served.publish(&wt, "r.git");
    let real = support::real_git();
    let real = real.trim();
    let bare = served.root.join("r.git");
    let bin = t.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let mark = t.path().join("moved");
    let wrapper = bin.join("git");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" ls-remote \"*)\n  '{real}' \"$@\"; rc=$?\n  \
             if [ ! -e '{mark}' ]; then touch '{mark}'\n    \
             (unset GIT_ALLOW_PROTOCOL GIT_PROTOCOL_FROM_USER GIT_CONFIG_COUNT\n     \
             cd '{wt}' && echo 'echo moved' > step.sh && '{real}' add -A && \
             '{real}' -c user.name=t -c user.email=t@example.invalid commit -q -m moved && \
             '{real}' push -q '{bare}' main && '{real}' -C '{bare}' update-server-info) >/dev/null 2>&1\n  \
             fi\n  exit $rc;;\nesac\nexec '{real}' \"$@\"\n",
            mark = mark.display(),
            wt = wt.display(),
            bare = bare.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = support::path_with_first(&bin);
    let mut checks = Checks::default();
    for tr in [Transport::Smart, Transport::Dumb] {
        // Back to the resolved commit, for this round's wrapper to move again.
        git(&wt, &["reset", "-q", "--hard", &resolved]);
        served.publish(&wt, "r.git");
        let _ = fs::remove_file(&mark);
        let home = t.path().join(format!("home-{tr:?}"));
        let dest = t.path().join(format!("dest-{tr:?}"));
        let spec = format!("git::{}@main", served.url(tr, "r.git"));
        let o = support::output(
            stepman(
                &home,
                ["activate", "-i", &spec, "-p", dest.to_str().unwrap()],
            )
            .env("RUST_LOG", "info")
            .env("PATH", &path),
        );
        checks.check(mark.exists(), || {
            format!("{tr:?}: the branch was not moved")
        });
        if checks.ok_saying(&o, &format!("activate -i {spec}"), "moved past") {
            checks.check(
                fs::read_to_string(dest.join("step.sh")).ok().as_deref() == Some("echo resolved\n"),
                || format!("activate -i {spec}: not the resolved commit's tree"),
            );
        }
        support::assert_fsck_clean(&home);
    }
    checks.assert_none();
}

/// git's message about dumb servers is not relied on (it may be translated): with a `git`
/// wrapper that rewrites it, the server is asked (`GET info/refs?service=git-upload-pack`
/// answered with a plain file) and the repository still cloned in full.
#[test]
fn a_dumb_server_is_told_by_its_info_refs_when_git_says_something_else() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let served = Served::start(&t.path().join("served"));
    let wt = t.path().join("wt");
    fs::create_dir_all(&wt).unwrap();
    fs::write(wt.join("step.sh"), "echo probed\n").unwrap();
    commit_all(&wt, "probed");
    served.publish(&wt, "r.git");
    let real = support::real_git();
    let bin = t.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let err = t.path().join("git-stderr");
    fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\n'{real}' \"$@\" 2>'{err}.$$'\nrc=$?\n\
             sed 's/dumb http transport does not support shallow capabilities/das hat nicht geklappt/' \
             '{err}.$$' >&2\nrm -f '{err}.$$'\nexit $rc\n",
            real = real.trim(),
            err = err.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("git"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = support::path_with_first(&bin);
    let home = t.path().join("home");
    let dest = t.path().join("dest");
    let spec = format!("git::{}@main", served.url(Transport::Dumb, "r.git"));
    let o = support::output(
        stepman(
            &home,
            ["activate", "-i", &spec, "-p", dest.to_str().unwrap()],
        )
        .env("RUST_LOG", "info")
        .env("PATH", &path),
    );
    let mut checks = Checks::default();
    checks.ok_saying(&o, &format!("activate -i {spec}"), Transport::Dumb.says());
    checks.assert_none();
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        "echo probed\n"
    );
    let probes = served
        .server
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == "/dumb/r.git/info/refs"
                && r.query == "service=git-upload-pack"
                && r.header("user-agent")
                    .is_some_and(|u| u.starts_with("stepman/"))
        })
        .count();
    assert_eq!(probes, 1, "stepman did not ask the server once");
    support::assert_fsck_clean(&home);
}
