//! Floating constraints see new releases: a lookup of latest, `X` or `X.Y` refreshes a
//! collection older than `STEPMAN_STEPLIB_TTL` (default 600 s, `0` every time, `off` never)
//! first; an exact version never does, offline nothing does, a refresh that fails falls back to
//! the cached collection with a warning, and ten lookups that find it stale at once refresh it
//! once. The age of a collection is the age of its name's link (`store-format.md`).

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{TestDir, run_ok, stepman};

/// A local StepLib with `s@1.0.0`, set up in a store.
struct Lib {
    _t: TestDir,
    t: PathBuf,
    home: PathBuf,
    lib: PathBuf,
    uri: String,
}

impl Lib {
    fn new() -> Lib {
        let t = TestDir::new();
        let lib = t.path().join("lib");
        support::write_steplib_yml(&lib, &[("zip", "http://127.0.0.1:9/unused/")]);
        support::write_step(&lib, "s", "1.0.0", &support::step_yml("s", None));
        let home = t.path().join("home");
        let uri = lib.to_str().unwrap().to_string();
        run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
        Lib {
            t: t.path().to_path_buf(),
            _t: t,
            home,
            lib,
            uri,
        }
    }

    /// Publishes a new version of `s` upstream.
    fn release(&self, version: &str) {
        support::write_step(&self.lib, "s", version, &support::step_yml("s", None));
    }

    /// The collection's name link in the store.
    fn link(&self) -> PathBuf {
        collection_link(&self.home)
    }

    /// Makes the collection look last updated `minutes` ago.
    fn age(&self, minutes: u32) {
        let st = Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("{minutes} minutes ago"))
            .arg(self.link())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// `step-info` of `s@constraint` with `env`: its output.
    fn info(&self, constraint: &str, env: &[(&str, &str)]) -> Output {
        let mut c = stepman(
            &self.home,
            [
                "step-info",
                "--library",
                &self.uri,
                "--id",
                "s",
                "--version",
                constraint,
                "--format",
                "json",
            ],
        );
        c.envs(env.iter().copied());
        support::output(&mut c)
    }

    /// The version `step-info` of `s@constraint` picks with `env`.
    fn picks(&self, constraint: &str, env: &[(&str, &str)]) -> String {
        let o = self.info(constraint, env);
        assert!(o.status.success(), "{}", support::stderr_of(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["version"].as_str().unwrap().to_string()
    }
}

/// A git StepLib with `s@1.0.0`, served by `git daemon` on loopback and set up in a store.
struct GitLib {
    src: PathBuf,
    bare: PathBuf,
    home: PathBuf,
    uri: String,
    _daemon: support::GitDaemon,
}

impl GitLib {
    fn new(dir: &Path) -> GitLib {
        let src = dir.join("steplib-src");
        support::write_steplib_yml(&src, &[("zip", "http://127.0.0.1:9/unused/")]);
        support::write_step(&src, "s", "1.0.0", &support::step_yml("s", None));
        let bare = support::git_bare_of(dir, &src, "lib.git");
        let daemon = support::GitDaemon::start(dir);
        let uri = daemon.url("lib.git");
        let home = dir.join("home");
        run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
        GitLib {
            src,
            bare,
            home,
            uri,
            _daemon: daemon,
        }
    }

    /// Commits and pushes a new version of `s` upstream.
    fn release(&self, version: &str) {
        support::write_step(&self.src, "s", version, &support::step_yml("s", None));
        support::git(&self.src, &["add", "-A"]);
        support::git(&self.src, &["commit", "-q", "-m", "release"]);
        support::git(
            &self.src,
            &["push", "-q", self.bare.to_str().unwrap(), "HEAD"],
        );
    }
}

/// Sets the modification time of the link itself (`touch -h -d WHEN`).
fn age_link(link: &Path, when: &str) {
    let st = Command::new("touch")
        .args(["-h", "-d", when])
        .arg(link)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The one collection name link in `home`'s store.
fn collection_link(home: &Path) -> PathBuf {
    let names = support::store_root(home).join("names");
    for route in fs::read_dir(&names).unwrap().flatten() {
        let link = route.path().join("_steplib/current");
        if link.is_symlink() {
            return link;
        }
    }
    panic!("no collection name under {}", names.display());
}

#[test]
fn a_floating_lookup_refreshes_a_stale_collection_and_an_exact_one_never() {
    let l = Lib::new();
    l.release("1.1.0");
    // Fresh (just set up): the cached collection answers.
    assert_eq!(l.picks("", &[]), "1.0.0");
    // Older than the default 600 s: latest and `1` see the new release.
    l.age(11);
    assert_eq!(l.picks("1", &[]), "1.1.0");
    assert_eq!(l.picks("", &[]), "1.1.0");
    // `0`: every floating lookup refreshes.
    l.release("1.2.0");
    assert_eq!(l.picks("1.x", &[("STEPMAN_STEPLIB_TTL", "0")]), "1.2.0");
    // An exact version never refreshes, even with `0`; `off` never refreshes, however old.
    l.release("1.3.0");
    assert_eq!(l.picks("1.0.0", &[("STEPMAN_STEPLIB_TTL", "0")]), "1.0.0");
    l.age(60 * 24);
    assert_eq!(l.picks("", &[("STEPMAN_STEPLIB_TTL", "off")]), "1.2.0");
    // Offline, nothing refreshes.
    let offline = [
        ("STEPMAN_STEPLIB_TTL", "0"),
        ("BITRISE_OFFLINE_MODE", "true"),
    ];
    assert_eq!(l.picks("", &offline), "1.2.0");
    assert_eq!(l.picks("", &[("STEPMAN_STEPLIB_TTL", "0")]), "1.3.0");
    support::assert_fsck_clean(&l.home);
}

#[test]
fn a_refresh_that_fails_falls_back_to_the_cached_collection_with_a_warning() {
    let l = Lib::new();
    fs::rename(&l.lib, l.t.join("moved")).unwrap();
    let o = l.info("", &[("STEPMAN_STEPLIB_TTL", "0")]);
    let err = support::stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("could not update") && err.contains(&l.uri),
        "the fallback is said: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "1.0.0");
    support::assert_fsck_clean(&l.home);
}

#[test]
fn an_unreadable_ttl_is_bad_usage() {
    let l = Lib::new();
    for bad in ["ten", "-1", "1.5", "600s"] {
        let o = l.info("", &[("STEPMAN_STEPLIB_TTL", bad)]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad:?}: {}",
            support::stderr_of(&o)
        );
        assert!(
            support::stderr_of(&o).contains("STEPMAN_STEPLIB_TTL"),
            "{}",
            support::stderr_of(&o)
        );
    }
}

/// Eight activations of a floating constraint that all find a git StepLib stale refresh it with
/// one clone (the others wait on the name lock and take its result), and all see the release.
#[test]
fn concurrent_stale_lookups_refresh_once() {
    let _s = support::alone();
    let t = TestDir::new();
    let g = GitLib::new(t.path());
    let (home, uri) = (g.home.clone(), g.uri.clone());
    g.release("1.1.0");
    let link = collection_link(&home);
    age_link(&link, "1 hour ago");
    let log = t.path().join("git-calls.log");
    let wrapper = support::git_wrapper(&t.path().join("git-wrapper"), &log);
    let path = support::path_with_first(&wrapper);
    let mut children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = support::gated_stepman(
                &home,
                [
                    "step-info",
                    "--library",
                    &uri,
                    "--id",
                    "s",
                    "--format",
                    "json",
                ],
            );
            c.env("PATH", &path);
            c.spawn().unwrap()
        })
        .collect();
    support::release(&mut children);
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", support::stderr_of(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["version"], "1.1.0", "every lookup sees the release");
    }
    let calls = fs::read_to_string(&log).unwrap_or_default();
    // The collection's kept mirror (made by the setup) is fetched into, once.
    let fetches = calls
        .lines()
        .filter(|l| l.contains(" clone ") || l.contains(" fetch "))
        .count();
    assert_eq!(fetches, 1, "one refresh for eight stale lookups:\n{calls}");
    support::assert_fsck_clean(&home);
}

/// `update` of a git StepLib with nothing new upstream costs one `git ls-remote`, no clone: the
/// collection object stays, bound again (its age is now); a new commit upstream is cloned and
/// seen. Counted with a `git` wrapper.
#[test]
fn update_with_nothing_new_upstream_asks_for_head_and_does_not_clone() {
    let t = TestDir::new();
    let g = GitLib::new(t.path());
    let (home, uri) = (g.home.clone(), g.uri.clone());
    let link = collection_link(&home);
    let object = fs::read_link(&link).unwrap();
    age_link(&link, "1 hour ago");
    let aged = fs::symlink_metadata(&link).unwrap().modified().unwrap();

    let log = t.path().join("git-calls.log");
    let wrapper = support::git_wrapper(&t.path().join("git-wrapper"), &log);
    let path = support::path_with_first(&wrapper);
    let update = |expect: &str| {
        let mut c = stepman(&home, ["update", "-c", &uri]);
        c.env("PATH", &path);
        let o = support::output(&mut c);
        let err = support::stderr_of(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(expect), "update said {err:?}, not {expect:?}");
        let calls = fs::read_to_string(&log).unwrap_or_default();
        fs::remove_file(&log).unwrap();
        calls
    };

    let calls = update(&format!("{uri} is up to date"));
    assert!(
        !calls
            .lines()
            .any(|l| l.contains("clone") || l.contains("fetch")),
        "an update with nothing new cloned or fetched:\n{calls}"
    );
    assert_eq!(
        calls.lines().filter(|l| l.contains("ls-remote")).count(),
        1,
        "{calls}"
    );
    assert_eq!(fs::read_link(&link).unwrap(), object, "the object stays");
    let bound = fs::symlink_metadata(&link).unwrap().modified().unwrap();
    assert!(bound > aged, "the name was bound again: its age is now");

    g.release("1.1.0");
    let calls = update(&format!("updated {uri}"));
    // One fetch into the kept mirror that the setup made; no clone.
    assert!(calls.lines().any(|l| l.contains(" fetch ")), "{calls}");
    assert!(!calls.lines().any(|l| l.contains(" clone ")), "{calls}");
    let o = run_ok(&mut stepman(
        &home,
        [
            "step-info",
            "--library",
            &uri,
            "--id",
            "s",
            "--format",
            "json",
        ],
    ));
    assert!(o.contains("\"version\":\"1.1.0\""), "{o}");
    let head = support::git(&g.src, &["rev-parse", "HEAD"]);
    let listed: serde_json::Value = serde_json::from_str(&run_ok(&mut stepman(
        &home,
        ["collections", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(
        listed["data"][0]["steplib_commit"], head,
        "collections names the commit the collection was built from"
    );
    support::assert_fsck_clean(&home);
}
