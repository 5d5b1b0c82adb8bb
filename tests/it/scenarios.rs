//! The old tool's failures under concurrency (scenarios A–H), each played by ten `stepman` processes at once against one
//! `$STEPMAN_HOME`, with a loopback HTTP server started by the test where a download is involved;
//! plus a test that reads every step.yml of `../shared/steplib-sample` and resolves every
//! version-constraint form against it.
//!
//! Every test checks outcomes (trees byte for byte, request counts, store contents, `fsck`), not
//! only exit codes. The tests take a file-wide lock so they run one after another: each wants both
//! cores, and the overlap of ten processes is what they test.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Mode, Server};
use support::{assert_fsck_clean, diff_trees, gated_stepman, make_tree, object_ids, stepman};

/// How many processes each scenario runs at once.
const N: usize = 10;
/// Longest a batch of processes may take before the test kills them and fails.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A running process whose stdout and stderr are drained by threads (so a full pipe never
/// blocks it).
struct Proc {
    child: Child,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

/// Waits for every process (killing all of them after [`DEADLINE`]) and collects their output.
fn finish(mut procs: Vec<Proc>) -> Vec<Output> {
    let deadline = Instant::now() + DEADLINE;
    let mut status = vec![None; procs.len()];
    while status.iter().any(Option::is_none) {
        for (p, s) in procs.iter_mut().zip(status.iter_mut()) {
            if s.is_none() {
                *s = p.child.try_wait().expect("wait for a child");
            }
        }
        if Instant::now() > deadline {
            for p in &mut procs {
                let _ = p.child.kill();
            }
            panic!("processes still running after {DEADLINE:?}: the test killed them");
        }
        thread::sleep(Duration::from_millis(5));
    }
    procs
        .into_iter()
        .zip(status)
        .map(|(p, s)| Output {
            status: s.unwrap(),
            stdout: p.out.join().unwrap(),
            stderr: p.err.join().unwrap(),
        })
        .collect()
}

/// Spawns `N` gated `stepman` processes (argument list `args(i)` and extra environment `envs`),
/// then opens their start gate at once. They are running (or done) when this returns.
fn start_n(home: &Path, envs: &[(&str, &str)], args: impl Fn(usize) -> Vec<OsString>) -> Vec<Proc> {
    let mut procs: Vec<Proc> = Vec::new();
    let mut stdins = Vec::new();
    // All N in one new process group, so `kill_group` can stop them with one signal.
    let mut group = 0;
    for i in 0..N {
        let mut cmd = gated_stepman(home, args(i));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, group);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        if group == 0 {
            group = child.id() as i32;
        }
        stdins.push(child.stdin.take().unwrap());
        let out = support::drain(child.stdout.take().unwrap());
        let err = support::drain(child.stderr.take().unwrap());
        procs.push(Proc { child, out, err });
    }
    for mut s in stdins {
        use std::io::Write;
        s.write_all(b"go\n").expect("open the start gate");
    }
    procs
}

/// SIGKILLs every process started by one [`start_n`] with a single `kill(2)` on their group:
/// killing them one by one would let a waiter that wakes when an earlier one dies act (and, say,
/// sweep the dead one's temp dir) before its own kill arrives.
fn kill_group(procs: &[Proc]) {
    let pgid = procs[0].child.id();
    let st = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -KILL -{pgid} failed");
}

/// Runs `N` processes at once (see [`start_n`]) to completion.
fn run_n(home: &Path, envs: &[(&str, &str)], args: impl Fn(usize) -> Vec<OsString>) -> Vec<Output> {
    finish(start_n(home, envs, args))
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn describe(o: &Output) -> String {
    format!(
        "{} stdout={:?} stderr={:?}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Panics unless every process exited 0.
fn assert_all_ok(what: &str, outs: &[Output]) {
    let bad: Vec<String> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.status.success())
        .map(|(i, o)| format!("  #{i}: {}", describe(o)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} failed:\n{}",
        bad.len(),
        outs.len(),
        bad.join("\n")
    );
}

/// One `stepman` process against `home` with extra environment.
fn run1(home: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = stepman(home, args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn stepman")
}

/// Like [`run1`], and it must succeed; returns stdout.
fn ok1(home: &Path, envs: &[(&str, &str)], args: &[&str]) -> String {
    let o = run1(home, envs, args);
    assert!(o.status.success(), "stepman {args:?}: {}", describe(&o));
    text(&o.stdout)
}

// ---------------------------------------------------------------------------------------------
// Store inspection
// ---------------------------------------------------------------------------------------------

/// A test's temp dir. Store objects are read-only, so on drop every directory is made writable
/// again first: without that, a non-root user could not remove them.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(t) = self.0.take() {
            let mut stack = vec![t.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o755));
                for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            let _ = t.close();
        }
    }
}

/// A fresh temp dir with a store home inside (not created: the first command creates it).
fn fresh() -> (Scratch, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("stepman-scenario-")
        .tempdir()
        .unwrap();
    let home = t.path().join("home");
    (Scratch(Some(t)), home)
}

/// `file://` + the canonical path: the collection URI stepman reports for a local StepLib.
fn file_uri(dir: &Path) -> String {
    format!("file://{}", fs::canonicalize(dir).unwrap().display())
}

/// `collections --format json` as `uri -> spec_path`.
fn collections(home: &Path) -> Vec<(String, PathBuf)> {
    let out = ok1(home, &[], &["collections", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // `null` when there is none, as the old tool prints it.
    if v["data"].is_null() {
        return Vec::new();
    }
    v["data"]
        .as_array()
        .expect("collections json has data[] or null")
        .iter()
        .map(|c| {
            (
                c["uri"].as_str().unwrap().to_string(),
                PathBuf::from(c["spec_path"].as_str().unwrap()),
            )
        })
        .collect()
}

/// The `collection.json` of the collection with URI `uri`.
fn collection_meta(home: &Path, uri: &str) -> Value {
    let list = collections(home);
    let (_, spec) = list
        .iter()
        .find(|(u, _)| u == uri)
        .unwrap_or_else(|| panic!("collection {uri} not listed: {list:?}"));
    serde_json::from_slice(&fs::read(spec).unwrap()).unwrap()
}

/// The route (alias) of the collection's names in the store.
fn alias(home: &Path, uri: &str) -> String {
    collection_meta(home, uri)["alias"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `store resolve <name>`: the object directory, or `None` when it fails (the error is kept).
fn resolve(home: &Path, name: &str) -> Result<PathBuf, String> {
    let o = run1(home, &[], &["store", "resolve", name]);
    if o.status.success() {
        Ok(PathBuf::from(text(&o.stdout)))
    } else {
        Err(text(&o.stderr))
    }
}

/// Bytes of the regular files under `dir` (entries that vanish meanwhile are skipped).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The object id an `activate` reported on stderr (`activated id@ver (<object>) into …`).
fn activated_object(o: &Output) -> String {
    let e = text(&o.stderr);
    let start = e.find(" (").map(|i| i + 2);
    let end = e.find(") into");
    match (start, end) {
        (Some(s), Some(t)) if s < t => e[s..t].to_string(),
        _ => panic!("no object id in activate's stderr: {e:?}"),
    }
}

/// Polls `cond` every 5 ms until it holds; false after `timeout`.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Checks that each of `dests` is byte-identical to `src` and reported the same object.
fn assert_trees(src: &Path, dests: &[PathBuf], outs: &[Output]) {
    for (i, d) in dests.iter().enumerate() {
        if let Err(e) = diff_trees(src, d) {
            panic!("process #{i}: {} differs from the source: {e}", d.display());
        }
        assert!(
            !d.join(".git").exists(),
            "process #{i}: {} holds a .git",
            d.display()
        );
    }
    let ids: BTreeSet<String> = outs.iter().map(activated_object).collect();
    assert_eq!(
        ids.len(),
        1,
        "the activations reported different objects: {ids:?}"
    );
}

/// Prints how long each phase of a test took (shown with `--nocapture`).
struct Clock(&'static str, Instant);

impl Clock {
    fn start(test: &'static str) -> Clock {
        Clock(test, Instant::now())
    }

    fn lap(&mut self, phase: &str) {
        eprintln!("[{}] {phase}: {:.2?}", self.0, self.1.elapsed());
        self.1 = Instant::now();
    }
}

/// A step source tree of 300 files, ~4 MB, with executables and symlinks.
fn step_tree(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    let stats = make_tree(&src, seed, 300);
    assert!(stats.bytes > 2_000_000, "tree too small: {stats:?}");
    src
}

/// A StepLib at `dir` with one location and steps `(id, version, step.yml)`.
fn steplib(dir: &Path, locations: &[(&str, &str)], steps: &[(&str, &str, String)]) -> PathBuf {
    support::write_steplib_yml(dir, locations);
    for (id, v, yml) in steps {
        support::write_step(dir, id, v, yml);
    }
    dir.to_path_buf()
}

/// A StepLib at `<dir>/lib` with one step `id@tag` from git: the bare repository
/// [`support::git_repo`] makes of `src` under `<dir>/git`, the step's `source.commit` the one
/// `pin` picks of it. Returns the repository and the StepLib.
fn git_steplib(
    dir: &Path,
    src: &Path,
    (id, tag, title): (&str, &str, &str),
    pin: fn(&support::GitRepo) -> &str,
) -> (support::GitRepo, PathBuf) {
    let repo = support::git_repo(&dir.join("git"), src, tag);
    let lib = steplib(
        &dir.join("lib"),
        &[("git", "source/git")],
        &[(
            id,
            tag,
            support::step_yml(title, Some((&repo.url, pin(&repo)))),
        )],
    );
    (repo, lib)
}

/// A step served over HTTP (see [`http_steplib`]).
struct HttpStep {
    /// The step's source tree.
    src: PathBuf,
    server: Server,
    /// The URL path the archive is served at.
    path: String,
    /// The archive's length in bytes.
    len: u64,
    /// The StepLib.
    lib: PathBuf,
}

/// A StepLib at `<dir>/lib` with one step `id@version` (titled `title`) whose `kind` archive
/// (`zip`, `tar.gz`) of a [`step_tree`] of `seed` a server serves at
/// `/<prefix>/<id>/<version>/step.<kind>` as `mode` says.
fn http_steplib(
    dir: &Path,
    seed: u64,
    (kind, prefix): (&str, &str),
    (id, version, title): (&str, &str, &str),
    mode: Mode,
) -> HttpStep {
    let src = step_tree(dir, seed);
    let body = match kind {
        "zip" => support::zip_tree(&src),
        _ => support::targz_tree(&src),
    };
    let len = body.len() as u64;
    let server = Server::start();
    let path = format!("/{prefix}/{id}/{version}/step.{kind}");
    server.serve(&path, body, mode);
    let base = format!("{}/{prefix}/", server.url());
    let lib = steplib(
        &dir.join("lib"),
        &[(kind, &base)],
        &[(id, version, support::step_yml(title, None))],
    );
    HttpStep {
        src,
        server,
        path,
        len,
        lib,
    }
}

/// `setup -c file://<lib>` against `home`, which must succeed; returns the `file://` URI.
fn set_up(home: &Path, lib: &Path) -> String {
    let uri = file_uri(lib);
    ok1(home, &[], &["setup", "-c", &uri]);
    uri
}

/// The arguments of `activate -c <uri> -i <id> -v <version> -p <dest>`.
fn activate_to(uri: &str, id: &str, version: &str, dest: &Path) -> Vec<OsString> {
    let mut a = os(&["activate", "-c", uri, "-i", id, "-v", version, "-p"]);
    a.push(dest.into());
    a
}

/// `<dir>/work-<i>/step` for each of the [`N`] processes.
fn work_dests(dir: &Path) -> Vec<PathBuf> {
    (0..N).map(|i| dir.join(format!("work-{i}/step"))).collect()
}

/// Panics unless every activation (of `outs`, into `dests`) exited 1 with an error holding
/// each of `needles` (`(what it is, the text)`) and created no destination.
fn assert_all_failed(what: &str, outs: &[Output], dests: &[PathBuf], needles: &[(&str, &str)]) {
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(1),
            "{what}#{i} must fail: {}",
            describe(o)
        );
        let e = text(&o.stderr);
        for (label, needle) in needles {
            assert!(
                e.contains(needle),
                "{what}#{i}: the error names {label}: {e}"
            );
        }
        assert!(!dests[i].exists(), "{what}#{i}: destination created");
    }
}

/// Nothing was published since `before` (the object ids then), and fsck is clean.
fn assert_nothing_published(home: &Path, before: &[String]) {
    assert_eq!(object_ids(home), before, "nothing published");
    assert_fsck_clean(home);
}

// ---------------------------------------------------------------------------------------------
// A, A'
// ---------------------------------------------------------------------------------------------

/// A: ten `setup` of one StepLib at once (half give it as a path, half as `file://`).
#[test]
fn a_ten_setups_of_one_steplib() {
    let _s = support::alone();
    let (t, home) = fresh();
    let mut steps = Vec::new();
    for g in 0..60 {
        for v in 0..4 {
            steps.push((
                format!("group-{g:02}"),
                format!("1.{v}.0"),
                support::step_yml(&format!("group {g} v{v}"), None),
            ));
        }
    }
    let steps: Vec<(&str, &str, String)> = steps
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.clone()))
        .collect();
    let lib = steplib(
        &t.path().join("lib"),
        &[("zip", "https://example.invalid/")],
        &steps,
    );
    let uri = file_uri(&lib);

    let outs = run_n(&home, &[], |i| {
        let c = if i % 2 == 0 {
            lib.display().to_string()
        } else {
            uri.clone()
        };
        os(&["setup", "-c", &c])
    });
    assert_all_ok("setup", &outs);
    let fresh_setups = outs
        .iter()
        .filter(|o| text(&o.stderr).starts_with("set up "))
        .count();
    assert_eq!(
        fresh_setups,
        1,
        "exactly one process generates the collection, the others wait for it: {:?}",
        outs.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>()
    );

    let list = collections(&home);
    assert_eq!(list.len(), 1, "listed once: {list:?}");
    assert_eq!(list[0].0, uri);
    let meta = collection_meta(&home, &uri);
    assert_eq!(meta["versions"], 240);
    assert_eq!(meta["steps"], 60);
    let info: Value = serde_json::from_str(&ok1(
        &home,
        &[],
        &[
            "step-info",
            "--library",
            &uri,
            "--id",
            "group-07",
            "--version",
            "1",
            "--format",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(info["version"], "1.3.0");
    assert_eq!(info["step"]["title"], "group 7 v3");
    let ids: Value =
        serde_json::from_str(&ok1(&home, &[], &["step-list", "-c", &uri, "-f", "json"])).unwrap();
    assert_eq!(ids["steps"].as_array().unwrap().len(), 60);
    assert_fsck_clean(&home);
}

/// A': ten `setup` of ten different StepLibs at once: all ten land, each resolves its own steps.
#[test]
fn a_prime_ten_setups_of_ten_steplibs() {
    let _s = support::alone();
    let (t, home) = fresh();
    let mut libs = Vec::new();
    for i in 0..N {
        let mut steps = vec![
            (
                "common-step".to_string(),
                "1.0.0".to_string(),
                support::step_yml(&format!("common of lib {i}"), None),
            ),
            (
                format!("only-in-{i}"),
                format!("2.{i}.0"),
                support::step_yml(&format!("only in lib {i}"), None),
            ),
        ];
        for g in 0..20 {
            steps.push((
                format!("filler-{g}"),
                "1.0.0".into(),
                support::step_yml("filler", None),
            ));
        }
        let steps: Vec<(&str, &str, String)> = steps
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.clone()))
            .collect();
        libs.push(steplib(
            &t.path().join(format!("lib-{i}")),
            &[("zip", "https://example.invalid/")],
            &steps,
        ));
    }
    let uris: Vec<String> = libs.iter().map(|l| file_uri(l)).collect();

    let outs = run_n(&home, &[], |i| os(&["setup", "-c", &uris[i]]));
    assert_all_ok("setup", &outs);

    let list = collections(&home);
    let listed: BTreeSet<&str> = list.iter().map(|(u, _)| u.as_str()).collect();
    let expected: BTreeSet<&str> = uris.iter().map(String::as_str).collect();
    assert_eq!(listed, expected, "every collection is listed, once");
    assert_eq!(list.len(), N);
    let specs: BTreeSet<&PathBuf> = list.iter().map(|(_, s)| s).collect();
    assert_eq!(specs.len(), N, "each collection has its own spec: {list:?}");

    for (i, uri) in uris.iter().enumerate() {
        let info: Value = serde_json::from_str(&ok1(
            &home,
            &[],
            &[
                "step-info",
                "--library",
                uri,
                "--id",
                "common-step",
                "--format",
                "json",
            ],
        ))
        .unwrap();
        assert_eq!(info["step"]["title"], format!("common of lib {i}"));
        assert_eq!(info["library"], uri.as_str());
        let own = format!("only-in-{i}");
        let info: Value = serde_json::from_str(&ok1(
            &home,
            &[],
            &[
                "step-info",
                "--library",
                uri,
                "--id",
                &own,
                "--format",
                "json",
            ],
        ))
        .unwrap();
        assert_eq!(info["version"], format!("2.{i}.0"));
        let other = format!("only-in-{}", (i + 1) % N);
        let o = run1(&home, &[], &["step-info", "--library", uri, "--id", &other]);
        assert_eq!(o.status.code(), Some(1), "{other} is not in lib {i}");
        assert!(text(&o.stderr).contains("not found"), "{}", describe(&o));
    }
    assert_fsck_clean(&home);
}

// ---------------------------------------------------------------------------------------------
// B, B', B (tar.gz), C
// ---------------------------------------------------------------------------------------------

/// Ten activations at once of one uncached step served over HTTP as `kind` (zip or tar.gz).
/// With `setup_first` false the collection is not set up either: the ten race on that too.
fn ten_activations_over_http(kind: &str, setup_first: bool) {
    let mut clock = Clock::start(if kind == "zip" { "B zip" } else { "B tar.gz" });
    let (t, home) = fresh();
    let HttpStep {
        src,
        server,
        path,
        lib,
        ..
    } = http_steplib(
        t.path(),
        11,
        (kind, "steps"),
        ("http-step", "1.2.3", "over http"),
        Mode::Full {
            delay: Duration::from_millis(1500),
        },
    );
    let uri = file_uri(&lib);
    if setup_first {
        ok1(&home, &[], &["setup", "-c", &uri]);
    }
    clock.lap("fixtures");

    let dests = work_dests(t.path());
    // One destination already holds a tree of the user's: `--replace` replaces it.
    fs::create_dir_all(&dests[0]).unwrap();
    fs::write(dests[0].join("stale-file"), "from an earlier run").unwrap();

    let mut procs = start_n(&home, &[], |i| {
        let mut a = activate_to(&uri, "http-step", "1.2", &dests[i]);
        if i == 0 {
            a.push("--replace".into());
        }
        a
    });
    // Overlap: when the one download starts, all ten processes are alive.
    assert!(
        wait_until(Duration::from_secs(20), || server.count(&path) >= 1),
        "no download started"
    );
    let alive = procs
        .iter_mut()
        .map(|p| p.child.try_wait().unwrap().is_none())
        .filter(|&running| running)
        .count();
    let outs = finish(procs);
    clock.lap("ten activations");
    assert_all_ok("activate", &outs);
    assert_eq!(
        alive, N,
        "all ten were running while the download was served"
    );
    assert_eq!(
        server.count(&path),
        1,
        "exactly one download for ten activations: {:?}",
        server.counts()
    );
    assert_trees(&src, &dests, &outs);
    assert_eq!(collections(&home).len(), 1);
    let obj = resolve(&home, &format!("{}/http-step/1.2.3", alias(&home, &uri)))
        .expect("the step is bound");
    assert_eq!(
        obj.file_name().unwrap().to_string_lossy(),
        activated_object(&outs[0]),
        "the name points at the object the activations reported"
    );
    assert_fsck_clean(&home);
    assert!(
        support::temp_entries(&home).is_empty(),
        "temp area: {:?}",
        support::temp_entries(&home)
    );
    clock.lap("checks");
}

/// B: ten activations of one uncached step from a zip served over HTTP.
#[test]
fn b_ten_activations_zip_over_http() {
    let _s = support::alone();
    ten_activations_over_http("zip", true);
}

/// B (tar.gz): the same from a tar.gz, on a store where the collection is not set up yet (the
/// ten also race to set it up).
#[test]
fn b_ten_activations_targz_over_http() {
    let _s = support::alone();
    ten_activations_over_http("tar.gz", false);
}

/// B': ten activations of one uncached step from a git source (a local bare repository).
#[test]
fn b_prime_ten_activations_from_git() {
    let _s = support::alone();
    let (t, home) = fresh();
    let src = step_tree(t.path(), 12);
    let (_repo, lib) = git_steplib(t.path(), &src, ("git-step", "2.0.1", "from git"), |r| {
        &r.tagged
    });
    let uri = set_up(&home, &lib);

    let log = t.path().join("git-calls.log");
    let wrapper = support::git_wrapper(&t.path().join("git-wrapper"), &log);
    let path = support::path_with_first(&wrapper);
    let dests = work_dests(t.path());
    let outs = run_n(&home, &[("PATH", &path)], |i| {
        activate_to(&uri, "git-step", "2", &dests[i])
    });
    assert_all_ok("activate", &outs);
    assert_trees(&src, &dests, &outs);
    let calls = fs::read_to_string(&log).unwrap_or_default();
    let clones = calls.lines().filter(|l| l.contains(" clone ")).count();
    assert_eq!(clones, 1, "exactly one clone for ten activations:\n{calls}");
    assert_fsck_clean(&home);
}

/// C: ten `download` at once, then activations from the cache with the server gone.
#[test]
fn c_ten_downloads_then_activate_from_cache() {
    let _s = support::alone();
    let (t, home) = fresh();
    let HttpStep {
        src,
        mut server,
        path,
        lib,
        ..
    } = http_steplib(
        t.path(),
        13,
        ("zip", "a"),
        ("cached-step", "3.1.4", "cached"),
        Mode::Full {
            delay: Duration::from_millis(1000),
        },
    );
    let path = path.as_str();
    let uri = set_up(&home, &lib);
    let before: BTreeSet<String> = object_ids(&home).into_iter().collect();

    // Durability matters here: the object must be complete when it is published.
    let sync = [("STEPMAN_NO_FSYNC", "0")];
    let outs = run_n(&home, &sync, |_| {
        os(&[
            "download",
            "-c",
            &uri,
            "--id",
            "cached-step",
            "--version",
            "3.1.4",
        ])
    });
    assert_all_ok("download", &outs);
    assert_eq!(server.count(path), 1, "one download: {:?}", server.counts());
    let downloaded = outs
        .iter()
        .filter(|o| text(&o.stderr).contains(" downloaded "))
        .count();
    assert_eq!(
        downloaded, 1,
        "one process downloads, nine find it in the store"
    );

    let a = alias(&home, &uri);
    let obj = resolve(&home, &format!("{a}/cached-step/3.1.4")).expect("the step is bound");
    let after: BTreeSet<String> = object_ids(&home).into_iter().collect();
    let new: Vec<&String> = after.difference(&before).collect();
    assert_eq!(new.len(), 1, "exactly one new object: {new:?}");
    assert_eq!(
        obj.file_name().unwrap().to_string_lossy(),
        new[0].as_str(),
        "the step's name points at it"
    );
    if let Err(e) = diff_trees(&src, &obj) {
        panic!("the stored object differs from the source: {e}");
    }
    assert_fsck_clean(&home);
    assert!(
        support::temp_entries(&home).is_empty(),
        "{:?}",
        support::temp_entries(&home)
    );

    server.stop();
    for envs in [&[][..], &[("BITRISE_OFFLINE_MODE", "true")][..]] {
        let dests: Vec<PathBuf> = (0..N)
            .map(|i| t.path().join(format!("work-{}-{i}", envs.len())))
            .collect();
        let outs = run_n(&home, envs, |i| {
            activate_to(&uri, "cached-step", "3", &dests[i])
        });
        assert_all_ok(&format!("activate from the cache with {envs:?}"), &outs);
        assert_trees(&src, &dests, &outs);
    }
    assert_eq!(server.count(path), 1);
    assert_fsck_clean(&home);
}

// ---------------------------------------------------------------------------------------------
// D
// ---------------------------------------------------------------------------------------------

/// What one read of the collection during D saw: `Ok(state)` with `state` "old" or "new", or a
/// description of the failure or inconsistency.
fn d_read(home: &Path, uri: &str, kind: usize) -> Result<&'static str, String> {
    let state = |new: bool| if new { "new" } else { "old" };
    match kind {
        // step-info: the version picked, the group's latest version, the step's title and the
        // definition file must all belong to one state.
        0 | 1 => {
            let constraint = if kind == 0 { "" } else { "1" };
            let o = run1(
                home,
                &[],
                &[
                    "step-info",
                    "--library",
                    uri,
                    "--id",
                    "reader-step",
                    "--version",
                    constraint,
                    "--format",
                    "json",
                ],
            );
            if !o.status.success() {
                return Err(format!("step-info: {}", describe(&o)));
            }
            let v: Value = serde_json::from_slice(&o.stdout)
                .map_err(|e| format!("step-info printed bad JSON ({e}): {}", describe(&o)))?;
            let version = v["version"].as_str().unwrap_or_default();
            let latest = v["latest_version"].as_str().unwrap_or_default();
            let title = v["step"]["title"].as_str().unwrap_or_default();
            let yml = fs::read_to_string(v["definition_pth"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let ok = (version == "1.0.0" || version == "1.1.0")
                && latest == version
                && title == format!("reader {version}")
                && yml.contains(&format!("title: \"reader {version}\""));
            if ok {
                Ok(state(version == "1.1.0"))
            } else {
                Err(format!(
                    "step-info inconsistent: version {version:?}, latest {latest:?}, \
                     title {title:?}, definition {yml:?}"
                ))
            }
        }
        // step-list: the group that only the new state has.
        2 => {
            let o = run1(home, &[], &["step-list", "-c", uri, "-f", "json"]);
            if !o.status.success() {
                return Err(format!("step-list: {}", describe(&o)));
            }
            let v: Value = serde_json::from_slice(&o.stdout)
                .map_err(|e| format!("step-list printed bad JSON ({e}): {}", describe(&o)))?;
            let ids = v["steps"].as_array().cloned().unwrap_or_default();
            let has = |id: &str| ids.iter().any(|x| x == id);
            if ids.len() < 41 || !has("reader-step") {
                return Err(format!("step-list incomplete: {} ids", ids.len()));
            }
            Ok(state(has("extra-step")))
        }
        // export-spec: the whole spec in one read; reader-step's latest version and the extra
        // group must agree.
        _ => {
            let o = run1(
                home,
                &[],
                &[
                    "export-spec",
                    "--steplib",
                    uri,
                    "--output",
                    "-",
                    "--export-type",
                    "latest",
                ],
            );
            if !o.status.success() {
                return Err(format!("export-spec: {}", describe(&o)));
            }
            let v: Value = serde_json::from_slice(&o.stdout)
                .map_err(|e| format!("export-spec printed bad JSON ({e}): {}", describe(&o)))?;
            let steps = v["steps"].as_object().cloned().unwrap_or_default();
            // The latest spec holds each group's latest version only.
            let latest = steps
                .get("reader-step")
                .and_then(|g| g["versions"].as_object())
                .and_then(|vs| vs.keys().next().cloned())
                .unwrap_or_default();
            let extra = steps.contains_key("extra-step");
            match (latest.as_str(), extra, steps.len()) {
                ("1.0.0", false, 41) => Ok("old"),
                ("1.1.0", true, 42) => Ok("new"),
                _ => Err(format!(
                    "export-spec mixes states: reader-step latest {latest:?}, extra-step {extra}, \
                     {} groups",
                    steps.len()
                )),
            }
        }
    }
}

/// D: readers (two `step-info` loops, a `step-list` loop and an `export-spec` loop) while
/// another process runs `update` again and again, the StepLib alternating between two states
/// (the new one adds version 1.1.0 of reader-step and the group extra-step).
#[test]
fn d_readers_during_repeated_updates() {
    let _s = support::alone();
    let mut clock = Clock::start("D");
    let (t, home) = fresh();
    let mut steps = Vec::new();
    for g in 0..40 {
        for v in 0..3 {
            steps.push((
                format!("filler-{g:02}"),
                format!("0.{v}.0"),
                support::step_yml("filler", None),
            ));
        }
    }
    let mut steps: Vec<(&str, &str, String)> = steps
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.clone()))
        .collect();
    steps.push((
        "reader-step",
        "1.0.0",
        support::step_yml("reader 1.0.0", None),
    ));
    let lib = steplib(
        &t.path().join("lib"),
        &[("zip", "https://example.invalid/")],
        &steps,
    );
    let uri = set_up(&home, &lib);
    clock.lap("fixtures");

    const READERS: usize = 4;
    const UPDATES: usize = 8;
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|kind| {
            let (home, uri, done) = (home.clone(), uri.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut seen = BTreeMap::<&'static str, usize>::new();
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    reads += 1;
                    match d_read(&home, &uri, kind) {
                        Ok(state) => *seen.entry(state).or_default() += 1,
                        Err(e) => failures.push(e),
                    }
                }
                (reads, seen, failures)
            })
        })
        .collect();

    let mut update_failures = Vec::new();
    for u in 0..UPDATES {
        if u % 2 == 0 {
            support::write_step(
                &lib,
                "reader-step",
                "1.1.0",
                &support::step_yml("reader 1.1.0", None),
            );
            support::write_step(
                &lib,
                "extra-step",
                "1.0.0",
                &support::step_yml("extra", None),
            );
        } else {
            fs::remove_dir_all(lib.join("steps/reader-step/1.1.0")).unwrap();
            fs::remove_dir_all(lib.join("steps/extra-step")).unwrap();
        }
        let o = run1(&home, &[], &["update", "-c", &uri]);
        if !o.status.success() {
            update_failures.push(describe(&o));
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    let mut seen = BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for r in readers {
        let (n, s, f) = r.join().unwrap();
        reads += n;
        for (k, v) in s {
            *seen.entry(k).or_default() += v;
        }
        failures.extend(f);
    }
    clock.lap("readers and updates");
    eprintln!("[D] {reads} reads during {UPDATES} updates; states seen: {seen:?}");
    assert!(
        update_failures.is_empty(),
        "updates failed: {update_failures:#?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed or were inconsistent; first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        2,
        "readers saw both the old and the new state: {seen:?}"
    );
    assert!(
        reads >= 4 * READERS,
        "too few reads to mean anything: {reads}"
    );
    assert_fsck_clean(&home);
}

// ---------------------------------------------------------------------------------------------
// E
// ---------------------------------------------------------------------------------------------

/// E: a download killed with SIGKILL mid-transfer (the server sends half the body, then
/// stalls), then ten activations with a good server.
#[test]
fn e_sigkill_mid_download_then_activate() {
    let _s = support::alone();
    let (t, home) = fresh();
    let HttpStep {
        src,
        server,
        path,
        len: zip_len,
        lib,
    } = http_steplib(
        t.path(),
        14,
        ("zip", "dl"),
        ("killed-step", "1.0.0", "killed"),
        Mode::HalfThenStall,
    );
    let path = path.as_str();
    let uri = set_up(&home, &lib);
    let a = alias(&home, &uri);
    let name = format!("{a}/killed-step/1.0.0");

    // Durability matters: the killed process was writing with fsync on.
    let sync = [("STEPMAN_NO_FSYNC", "0")];
    let dests = work_dests(t.path());
    let mut procs = start_n(&home, &sync, |i| {
        activate_to(&uri, "killed-step", "1.0.0", &dests[i])
    });
    assert!(
        server.wait_stalled(1, Duration::from_secs(20)),
        "the download never reached the middle of the body"
    );
    // The half body is on its way: wait until the downloader has written some of it into its
    // temp dir (whatever form it keeps it in).
    let tmp = home.join("store-v1/tmp");
    let partial = || Some(bytes_under(&tmp)).filter(|&n| n > 0);
    assert!(
        wait_until(Duration::from_secs(10), || partial().is_some()),
        "no partial download in the temp area: {:?}",
        support::temp_entries(&home)
    );
    for p in &mut procs {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "an activation ended before the kill"
        );
    }
    kill_group(&procs);
    let killed = finish(procs);
    assert!(killed.iter().all(|o| !o.status.success()));
    let left = partial().expect("the killed download left its partial data");
    assert!(left < zip_len, "partial: {left} of {zip_len} bytes");
    assert!(
        resolve(&home, &name).is_err(),
        "nothing is bound after the kill"
    );
    for d in &dests {
        assert!(!d.exists(), "{} exists after the kill", d.display());
    }
    assert_eq!(server.count(path), 1);

    server.set_mode(
        path,
        Mode::Full {
            delay: Duration::from_millis(500),
        },
    );
    let outs = run_n(&home, &sync, |i| {
        activate_to(&uri, "killed-step", "1.0.0", &dests[i])
    });
    assert_all_ok("activate after the kill", &outs);
    assert_trees(&src, &dests, &outs);
    assert_eq!(server.count(path), 2, "one more download after the kill");

    let gc = run1(&home, &[], &["gc"]);
    assert!(gc.status.success(), "gc: {}", describe(&gc));
    assert!(
        support::temp_entries(&home).is_empty(),
        "the dead download's temp dir was swept: {:?}",
        support::temp_entries(&home)
    );
    assert_fsck_clean(&home);
}

// ---------------------------------------------------------------------------------------------
// F
// ---------------------------------------------------------------------------------------------

/// F: a git step whose `source.commit` is not the tag's commit fails every time.
#[test]
fn f_wrong_commit_fails_every_time() {
    let _s = support::alone();
    let (t, home) = fresh();
    // The tree's size does not matter here: the clone is refused after it.
    let src = t.path().join("src");
    make_tree(&src, 15, 40);
    // The commit is a real commit of the repository, but not the one tag 1.0.0 is at.
    let (repo, lib) = git_steplib(t.path(), &src, ("pinned-step", "1.0.0", "pinned"), |r| {
        &r.earlier
    });
    let uri = set_up(&home, &lib);
    let a = alias(&home, &uri);
    let before = object_ids(&home);

    for round in 0..2 {
        let dests: Vec<PathBuf> = (0..N)
            .map(|i| t.path().join(format!("work-{round}-{i}/step")))
            .collect();
        let outs = run_n(&home, &[], |i| {
            activate_to(&uri, "pinned-step", "1.0.0", &dests[i])
        });
        eprintln!("[F] round {round} error: {}", text(&outs[0].stderr));
        assert_all_failed(
            &format!("round {round} "),
            &outs,
            &dests,
            &[
                ("the required commit", &repo.earlier),
                ("the tag's commit", &repo.tagged),
            ],
        );
        let r = resolve(&home, &format!("{a}/pinned-step/1.0.0"));
        assert!(r.is_err(), "round {round}: the step is bound: {r:?}");
    }
    assert_nothing_published(&home, &before);
}

// ---------------------------------------------------------------------------------------------
// G
// ---------------------------------------------------------------------------------------------

/// `base` joined with `rel`, `..` resolved lexically.
fn lexical(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every path under `root` whose file name is `name`.
fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    support::walk(root)
        .into_iter()
        .filter(|(p, _)| p.file_name().is_some_and(|n| n == name))
        .map(|(p, _)| root.join(p))
        .collect()
}

/// Ten activations at once of an archive holding the traversal entry `evil`; all must fail
/// naming the entry, and no file named like the entry's last component may appear anywhere.
fn traversal_rejected(kind: &str, evil: &str) {
    let (t, home) = fresh();
    let marker = format!("written through {evil}\n");
    let leaf = Path::new(evil).file_name().unwrap().to_str().unwrap();
    let lib_dir = t.path().join("a/b/c/lib");
    let (locations, body, file) = match kind {
        "zip" => (
            "zip",
            support::zip_with_entry(evil, marker.as_bytes()),
            "step.zip",
        ),
        _ => (
            "tar.gz",
            support::targz_with_entry(evil, marker.as_bytes()),
            "step.tar.gz",
        ),
    };
    // zip over HTTP; tar.gz as a file next to the StepLib (a relative `src`).
    let server = Server::start();
    let url_path = format!("/evil/slip-step/1.0.0/{file}");
    let src = if kind == "zip" {
        server.serve(
            &url_path,
            body,
            Mode::Full {
                delay: Duration::ZERO,
            },
        );
        format!("{}/evil/", server.url())
    } else {
        let p = lib_dir.join("archives/slip-step/1.0.0");
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join(file), body).unwrap();
        "archives/".to_string()
    };
    let lib = steplib(
        &lib_dir,
        &[(locations, &src)],
        &[("slip-step", "1.0.0", support::step_yml("slip", None))],
    );
    let uri = set_up(&home, &lib);
    let a = alias(&home, &uri);
    let before = object_ids(&home);

    let dests: Vec<PathBuf> = (0..N)
        .map(|i| t.path().join(format!("w/x{i}/y/z/step")))
        .collect();
    let outs = run_n(&home, &[], |i| {
        activate_to(&uri, "slip-step", "1.0.0", &dests[i])
    });
    eprintln!("[G {kind}] error: {}", text(&outs[0].stderr));
    assert_all_failed("", &outs, &dests, &[(&format!("the entry {evil:?}"), evil)]);
    if kind == "zip" {
        assert!(server.count(&url_path) >= 1);
    }
    // Where the entry would land: from the store's temp tree (tmp/<dir>/tree), from the temp
    // dir itself, and from each destination.
    let store = home.join("store-v1");
    let mut targets = vec![
        lexical(&store.join("tmp/some-temp-dir/tree"), evil),
        lexical(&store.join("tmp/some-temp-dir"), evil),
        lexical(&store.join("objects/ab/some-object"), evil),
    ];
    targets.extend(dests.iter().map(|d| lexical(d, evil)));
    for p in &targets {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let found = find_named(t.path(), leaf);
    assert!(found.is_empty(), "written outside: {found:?}");
    assert!(
        resolve(&home, &format!("{a}/slip-step/1.0.0")).is_err(),
        "nothing is bound"
    );
    assert_nothing_published(&home, &before);
}

/// G (zip): a zip entry named `../../../../x` (zip-slip).
#[test]
fn g_zip_slip_rejected() {
    let _s = support::alone();
    traversal_rejected("zip", "../../../../x");
}

/// G (tar.gz): a tar entry climbing out with `../`.
#[test]
fn g_tar_traversal_rejected() {
    let _s = support::alone();
    traversal_rejected("tar.gz", "../../../tar-escape");
}

// ---------------------------------------------------------------------------------------------
// H
// ---------------------------------------------------------------------------------------------

/// H: `update` of a `file://` StepLib keeps its cached steps: activate, ten updates at once, then
/// ten offline activations with no server.
#[test]
fn h_update_keeps_cached_steps() {
    let _s = support::alone();
    let (t, home) = fresh();
    let HttpStep {
        src,
        mut server,
        path,
        lib,
        ..
    } = http_steplib(
        t.path(),
        16,
        ("zip", "h"),
        ("kept-step", "4.0.0", "kept"),
        Mode::Full {
            delay: Duration::ZERO,
        },
    );
    let path = path.as_str();
    let uri = set_up(&home, &lib);
    let first = t.path().join("first");
    ok1(
        &home,
        &[],
        &[
            "activate",
            "-c",
            &uri,
            "-i",
            "kept-step",
            "-v",
            "4",
            "-p",
            first.to_str().unwrap(),
        ],
    );
    assert_eq!(server.count(path), 1);
    let a = alias(&home, &uri);
    let name = format!("{a}/kept-step/4.0.0");
    let before = resolve(&home, &name).expect("bound after activate");

    // The StepLib changes (a new step), then ten updates at once.
    support::write_step(&lib, "new-step", "0.1.0", &support::step_yml("new", None));
    let outs = run_n(&home, &[], |_| os(&["update", "-c", &uri]));
    assert_all_ok("update", &outs);
    assert_eq!(
        collection_meta(&home, &uri)["steps"],
        2,
        "the update took effect"
    );
    assert_eq!(
        resolve(&home, &name).as_ref(),
        Ok(&before),
        "the cached step is kept"
    );

    server.stop();
    let dests = work_dests(t.path());
    let outs = run_n(&home, &[("BITRISE_OFFLINE_MODE", "true")], |i| {
        activate_to(&uri, "kept-step", "4.0", &dests[i])
    });
    assert_all_ok("offline activate after update", &outs);
    assert_trees(&src, &dests, &outs);
    assert_eq!(server.count(path), 1);
    assert_fsck_clean(&home);
}

// ---------------------------------------------------------------------------------------------
// The real StepLib sample
// ---------------------------------------------------------------------------------------------

fn numeric(v: &str) -> Option<(u64, u64, u64)> {
    let mut p = v.split('.').map(|x| x.parse::<u64>().ok());
    let r = (p.next()??, p.next()??, p.next()??);
    p.next().is_none().then_some(r)
}

/// Every step.yml of `../shared/steplib-sample` is read (or its skipping explained), and every
/// constraint form resolves against git-clone as README "StepLibs and activation" says.
#[test]
fn sample_steplib_every_step_and_every_constraint() {
    let _s = support::alone();
    let Some(sample) = support::steplib_sample("sample_steplib_every_step_and_every_constraint")
    else {
        return;
    };
    let (_t, home) = fresh();
    let uri = file_uri(&sample);
    // Ten setups of the real StepLib at once, for good measure.
    let outs = run_n(&home, &[], |_| os(&["setup", "-c", &uri]));
    assert_all_ok("setup of the sample", &outs);

    // Count the step.yml files the way the StepLib lays them out.
    let mut files = BTreeMap::<String, Vec<String>>::new();
    for g in fs::read_dir(sample.join("steps")).unwrap() {
        let g = g.unwrap();
        if !g.file_type().unwrap().is_dir() {
            continue;
        }
        let id = g.file_name().to_string_lossy().into_owned();
        let entry = files.entry(id).or_default();
        for v in fs::read_dir(g.path()).unwrap() {
            let v = v.unwrap();
            if v.path().join("step.yml").is_file() {
                entry.push(v.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let total: usize = files.values().map(Vec::len).sum();
    let meta = collection_meta(&home, &uri);
    let skipped = meta["skipped"].as_array().cloned().unwrap_or_default();
    let mut skipped_files = 0;
    for s in &skipped {
        let p = s["path"].as_str().unwrap_or_default();
        let why = s["error"].as_str().unwrap_or_default();
        assert!(!why.is_empty(), "skipped {p} without a reason");
        let parts: Vec<&str> = p.split('/').collect();
        match parts.as_slice() {
            ["steps", id, _, "step.yml"] | ["steps", id, _] => {
                eprintln!("sample: skipped {p}: {why}");
                assert_ne!(
                    *id, "update-gitops-repository",
                    "the bare `=` scalar must parse"
                );
                skipped_files += 1;
            }
            ["steps", id] => {
                let n = files.get(*id).map_or(0, Vec::len);
                eprintln!("sample: skipped group {id} ({n} step.yml): {why}");
                assert_eq!(
                    n, 0,
                    "group {id} skipped although it has step.yml files: {why}"
                );
            }
            _ => panic!("unexplained skipped entry {s}"),
        }
    }
    let versions = meta["versions"].as_u64().unwrap() as usize;
    eprintln!(
        "sample: {total} step.yml files, {versions} versions, {} skipped entries",
        skipped.len()
    );
    assert_eq!(
        versions,
        total - skipped_files,
        "every step.yml is a version"
    );
    let groups_with_versions = files.values().filter(|v| !v.is_empty()).count();
    assert_eq!(
        meta["steps"].as_u64().unwrap() as usize,
        groups_with_versions
    );

    // Constraints against git-clone, with the expected answers computed from the directory.
    let gc: Vec<(u64, u64, u64)> = files["git-clone"]
        .iter()
        .map(|v| numeric(v).unwrap_or_else(|| panic!("git-clone version {v}")))
        .collect();
    let fmt = |v: &(u64, u64, u64)| format!("{}.{}.{}", v.0, v.1, v.2);
    let highest = |f: &dyn Fn(&(u64, u64, u64)) -> bool| {
        gc.iter().copied().filter(|v| f(v)).max().map(|v| fmt(&v))
    };
    let latest = highest(&|_| true).unwrap();
    let h8 = highest(&|v| v.0 == 8).unwrap();
    let h85 = highest(&|v| v.0 == 8 && v.1 == 5).unwrap();
    let step_info = |c: &str| {
        run1(
            &home,
            &[],
            &[
                "step-info",
                "--library",
                &uri,
                "--id",
                "git-clone",
                "--version",
                c,
                "--format",
                "json",
            ],
        )
    };
    let expect = |c: &str, want: &str| {
        let o = step_info(c);
        assert!(o.status.success(), "git-clone@{c:?}: {}", describe(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["version"], want, "git-clone@{c:?}");
        if c.is_empty() {
            // As the old tool's `omitempty`: no constraint, no `original_version`.
            assert!(v.get("original_version").is_none(), "{v}");
        } else {
            assert_eq!(v["original_version"], c);
        }
        assert_eq!(v["latest_version"], latest.as_str());
        assert_eq!(v["id"], "git-clone");
        assert!(v["step"]["title"].is_string(), "git-clone@{c:?} has a step");
        let yml = fs::read_to_string(v["definition_pth"].as_str().unwrap()).unwrap();
        let orig =
            fs::read_to_string(sample.join(format!("steps/git-clone/{want}/step.yml"))).unwrap();
        assert_eq!(
            yml, orig,
            "definition_pth of git-clone@{c:?} is its step.yml"
        );
    };
    expect("", &latest);
    expect("8", &h8);
    expect("8.x.x", &h8);
    expect("8.5", &h85);
    expect("8.5.x", &h85);
    expect("8.5.1", "8.5.1");

    // "9": no such major. The old tool answers with an empty step; we say "not found".
    assert!(!gc.iter().any(|v| v.0 == 9));
    for c in ["9", "9.x.x", "8.99", "8.5.99"] {
        let o = step_info(c);
        assert_eq!(o.status.code(), Some(1), "git-clone@{c}: {}", describe(&o));
        assert!(o.stdout.is_empty(), "git-clone@{c}: no step printed");
        assert!(
            text(&o.stderr).contains("not found"),
            "git-clone@{c}: {}",
            describe(&o)
        );
    }
    // "X.Y" where only X.Y.0 exists: the old tool answers with an empty step; it is X.Y.0.
    let mut minors = BTreeMap::<(u64, u64), Vec<u64>>::new();
    for v in &gc {
        minors.entry((v.0, v.1)).or_default().push(v.2);
    }
    let only_zero: Vec<(u64, u64)> = minors
        .iter()
        .filter(|(_, p)| p.as_slice() == [0])
        .map(|(k, _)| *k)
        .collect();
    assert!(
        !only_zero.is_empty(),
        "the sample has an X.Y with only X.Y.0"
    );
    for (x, y) in &only_zero {
        expect(&format!("{x}.{y}"), &format!("{x}.{y}.0"));
    }
    eprintln!("sample: X.Y with only X.Y.0 in git-clone: {only_zero:?}");
    assert_fsck_clean(&home);
}

/// A process waiting for another's download of the same step starts the moment the object is
/// published, not a poll interval later: traced while it waits, it makes no sleep call (the
/// wait is a blocking lock the kernel wakes; Ctrl-C is still seen, `preload.rs`).
#[test]
fn a_waiter_for_anothers_download_is_woken_by_the_lock_not_by_polling() {
    let _s = support::alone();
    if !support::strace_usable("a_waiter_for_anothers_download_is_woken_by_the_lock") {
        return;
    }
    let t = support::TestDir::new();
    let h = http_steplib(
        t.path(),
        41,
        ("zip", "steps"),
        ("slow", "1.0.0", "Slow"),
        Mode::Full {
            delay: Duration::from_millis(1500),
        },
    );
    let home = t.path().join("home");
    let uri = set_up(&home, &h.lib);
    let (a, b) = (t.path().join("a/step"), t.path().join("b/step"));
    let first = stepman(&home, activate_to(&uri, "slow", "1.0.0", &a))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while h.server.count(&h.path) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the first download never started"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let log = t.path().join("waiter.strace");
    let second = support::output(
        &mut support::Traced::new(&home, &log)
            .follow()
            .trace("nanosleep,clock_nanosleep")
            .env("RUST_LOG", "debug")
            .stepman(activate_to(&uri, "slow", "1.0.0", &b)),
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", support::describe(&first));
    assert!(second.status.success(), "{}", support::describe(&second));
    let err = support::stderr_of(&second);
    assert!(
        err.contains("waiting for another process's fill"),
        "the second activation did not wait for the first one's download: {err}"
    );
    assert_eq!(h.server.count(&h.path), 1, "one download");
    let trace = fs::read_to_string(&log).unwrap();
    let sleeps: Vec<&str> = trace.lines().filter(|l| l.contains("sleep(")).collect();
    assert!(
        sleeps.is_empty(),
        "the waiter polled ({} sleeps) instead of blocking on the lock:\n{}",
        sleeps.len(),
        sleeps
            .iter()
            .take(5)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for d in [&a, &b] {
        if let Err(e) = diff_trees(&h.src, d) {
            panic!("{}: {e}", d.display());
        }
    }
    assert_fsck_clean(&home);
}
