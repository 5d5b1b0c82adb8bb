//! `activate --prepare` of Go, bash and swift steps against a real Go toolchain: a Go step is
//! built once per source and toolchain into the build cache (`_build/<source>/go-<key>`) and
//! activated with its source as `PATH/<id>`; ten callers at once build once; a killed build
//! leaves nothing trusted and the next try builds; a failed build leaves the source activated
//! and nothing cached; `gc` drops builds whose source is gone.
//!
//! The toolchain: `STEPMAN_TEST_GO`, else `go` on `PATH`; without one the tests are skipped
//! (they panic instead when `STEPMAN_TEST_REQUIRE_GO=1`, as CI sets it).

use crate::support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Mode, Server};
use support::{TestDir, assert_fsck_clean, describe, object_ids, output, stepman, store_root};

/// The `go` these tests build with, or `None` (the test is skipped) when there is none.
fn go_for_tests(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("STEPMAN_TEST_GO")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("go"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var("STEPMAN_TEST_REQUIRE_GO").as_deref() == Ok("1") {
            panic!("{test}: no Go toolchain and STEPMAN_TEST_REQUIRE_GO=1 (set STEPMAN_TEST_GO)");
        }
        eprintln!("skipping {test}: no Go toolchain (set STEPMAN_TEST_GO)");
    }
    found
}

/// One `GOCACHE` for every test here: it changes no output, and a warm one keeps each build
/// of these tiny programs well under a second.
fn gocache() -> PathBuf {
    let d = std::env::temp_dir().join("stepman-test-gocache");
    fs::create_dir_all(&d).unwrap();
    d
}

/// The real `GOROOT` of `go` (which may be a wrapper).
fn real_goroot(go: &Path) -> PathBuf {
    let o = Command::new(go)
        .args(["env", "GOROOT"])
        .env_remove("GOROOT")
        .output()
        .unwrap();
    assert!(o.status.success(), "{} env GOROOT failed", go.display());
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// A `go` that counts its builds.
///
/// stepman asks the `go` it is given for its `GOROOT` once and from then on runs
/// `<GOROOT>/bin/go` itself, so a wrapper on `PATH` alone would see no build. Instead this makes
/// a GOROOT of its own: `bin/go` is a shell script, every other entry a symlink to the real
/// GOROOT's. The script runs the real `go` with `GOROOT` set to the fake root when the caller
/// set none (so `go env GOROOT` answers the fake root, and stepman's later `<GOROOT>/bin/go` is
/// the script again). For `go build` it first appends `build <pid>` to the log, and, when
/// `STEPMAN_TEST_HOLD` names a file, waits (up to a minute) until that file exists.
struct CountingGo {
    go: PathBuf,
    log: PathBuf,
}

impl CountingGo {
    fn new(dir: &Path, real_go: &Path) -> CountingGo {
        let real = real_goroot(real_go);
        let root = dir.join("goroot");
        fs::create_dir_all(root.join("bin")).unwrap();
        for e in fs::read_dir(&real).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "bin" {
                symlink(e.path(), root.join(e.file_name())).unwrap();
            }
        }
        let log = dir.join("go.log");
        let go = root.join("bin/go");
        fs::write(
            &go,
            format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = build ]; then\n\
                 \techo \"build $$\" >> '{log}'\n\
                 \tif [ -n \"$STEPMAN_TEST_HOLD\" ]; then\n\
                 \t\ti=0\n\
                 \t\twhile [ ! -e \"$STEPMAN_TEST_HOLD\" ] && [ $i -lt 1200 ]; do\n\
                 \t\t\tsleep 0.05; i=$((i+1))\n\
                 \t\tdone\n\
                 \tfi\n\
                 fi\n\
                 GOROOT=\"${{GOROOT:-{root}}}\" exec '{real}/bin/go' \"$@\"\n",
                log = log.display(),
                root = root.display(),
                real = real.display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&go, fs::Permissions::from_mode(0o755)).unwrap();
        CountingGo { go, log }
    }

    /// The pids of the builds run so far.
    fn builds(&self) -> Vec<u32> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("build ")?.parse().ok())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const GREET: &str =
    "package greet\n\nfunc Line(who string) string { return \"hello from \" + who }\n";

fn main_go(msg: &str) -> String {
    format!(
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/greet\"\n)\n\n\
         func main() {{ fmt.Println(greet.Line({msg:?})) }}\n"
    )
}

/// What the Go steps print for `msg`.
fn line(msg: &str) -> String {
    format!("hello from {msg}\n")
}

/// A GOPATH-mode Go step (no go.mod) vendoring `example.com/greet`.
fn gopath_tree(dir: &Path, msg: &str) {
    fs::create_dir_all(dir.join("vendor/example.com/greet")).unwrap();
    fs::write(dir.join("vendor/example.com/greet/greet.go"), GREET).unwrap();
    fs::write(dir.join("main.go"), main_go(msg)).unwrap();
}

/// A module-mode Go step requiring `example.com/greet v1.0.0`, vendored.
fn module_tree(dir: &Path, msg: &str) {
    gopath_tree(dir, msg);
    fs::write(
        dir.join("go.mod"),
        "module example.com/modstep\n\ngo 1.22\n\nrequire example.com/greet v1.0.0\n",
    )
    .unwrap();
    fs::write(
        dir.join("vendor/modules.txt"),
        "# example.com/greet v1.0.0\n## explicit\nexample.com/greet\n",
    )
    .unwrap();
}

fn go_yml(package: &str) -> String {
    format!("title: Go step\ntoolkit:\n  go:\n    package_name: {package}\n")
}

/// A local StepLib whose steps' zips are under `archives/` (relative) or, with `http`, served
/// from a loopback server.
struct Lib {
    dir: PathBuf,
    trees: PathBuf,
    server: Option<Server>,
}

impl Lib {
    fn new(root: &Path, http: bool) -> Lib {
        let dir = root.join("steplib");
        let server = http.then(Server::start);
        let src = match &server {
            Some(s) => format!("{}/archives/", s.url()),
            None => "archives/".into(),
        };
        support::write_steplib_yml(&dir, &[("zip", &src)]);
        Lib {
            dir,
            trees: root.join("trees"),
            server,
        }
    }

    fn uri(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Adds step `id` `version` with definition `yml` and the tree `fill` writes; returns that
    /// tree (what an activation must hold besides the binary).
    fn add(&self, id: &str, version: &str, yml: &str, fill: impl FnOnce(&Path)) -> PathBuf {
        let tree = self.trees.join(id).join(version);
        fs::create_dir_all(&tree).unwrap();
        fill(&tree);
        support::write_step(&self.dir, id, version, yml);
        let zip = support::zip_tree(&tree);
        match &self.server {
            Some(s) => s.serve(
                &format!("/archives/{id}/{version}/step.zip"),
                zip,
                Mode::Full {
                    delay: Duration::ZERO,
                },
            ),
            None => {
                let d = self.dir.join(format!("archives/{id}/{version}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("step.zip"), zip).unwrap();
            }
        }
        tree
    }

    fn gopath_step(&self, msg: &str) -> PathBuf {
        self.add("gp-step", "1.0.0", &go_yml("example.com/gpstep"), |d| {
            gopath_tree(d, msg)
        })
    }

    fn module_step(&self, version: &str, msg: &str) -> PathBuf {
        self.add("mod-step", version, &go_yml("example.com/modstep"), |d| {
            module_tree(d, msg)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running stepman
// ---------------------------------------------------------------------------------------------

/// `stepman activate -c <lib> -i <id> -v <version> -p <dest> --prepare --json --go <go>`.
fn prepare_cmd(home: &Path, lib: &Lib, id: &str, version: &str, dest: &Path, go: &Path) -> Command {
    let mut c = stepman(home, ["activate", "-c", lib.uri(), "-i", id, "-v", version]);
    c.arg("-p")
        .arg(dest)
        .args(["--prepare", "--json", "--go"])
        .arg(go)
        .env("GOCACHE", gocache());
    c
}

/// Runs `cmd`, which must succeed and print the JSON report.
fn prepared(cmd: &mut Command) -> Value {
    let o = output(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&o)))
}

/// Runs the step's `run` command; returns its stdout.
fn run_step(report: &Value) -> String {
    let argv: Vec<&str> = report["run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let o = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(o.status.success(), "{argv:?}: {}", describe(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Checks a Go step's report: `build` as expected, `run` is `dest/<id>` and prints `want`, and
/// `dest` holds the fixture `tree` byte for byte plus exactly the binary.
fn check_go_activation(
    report: &Value,
    id: &str,
    dest: &Path,
    tree: &Path,
    build: &str,
    want: &str,
) {
    let dest = fs::canonicalize(dest).unwrap();
    assert_eq!(report["toolkit"], "go", "{report:#}");
    assert_eq!(report["build"], build, "{report:#}");
    assert_eq!(report["precompiled"], false, "{report:#}");
    assert_eq!(report["path"].as_str().unwrap(), dest.to_str().unwrap());
    let bin = dest.join(id);
    assert_eq!(
        report["run"],
        serde_json::json!([bin.to_str().unwrap()]),
        "{report:#}"
    );
    assert!(support::is_object_id(report["binary"].as_str().unwrap()));
    assert!(support::is_object_id(report["source"].as_str().unwrap()));
    assert_eq!(report["build_key"].as_str().unwrap().len(), 64);
    assert_eq!(run_step(report), want);
    // The activation is the source plus the binary: compare with the fixture plus that file.
    let expected = dest.parent().unwrap().join(format!("{id}-expected"));
    copy_dir(tree, &expected);
    fs::copy(&bin, expected.join(id)).unwrap();
    support::assert_same_tree(&expected, &dest);
    fs::remove_dir_all(&expected).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// The names under `_build/` (`<source>/<go-key>`), sorted.
fn build_names(home: &Path) -> BTreeSet<String> {
    let root = store_root(home).join("names/_build");
    let mut out = BTreeSet::new();
    let Ok(sources) = fs::read_dir(&root) else {
        return out;
    };
    for s in sources.flatten() {
        for k in fs::read_dir(s.path()).unwrap().flatten() {
            out.insert(format!(
                "{}/{}",
                s.file_name().to_string_lossy(),
                k.file_name().to_string_lossy()
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A GOPATH-mode and a module-mode step: built on the first activation, found built on the
/// second (into another directory); each activation is the source plus the binary, which runs.
#[test]
fn gopath_and_module_steps_build_then_cached() {
    let Some(go) = go_for_tests("gopath_and_module_steps_build_then_cached") else {
        return;
    };
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    let gp = lib.gopath_step("gopath");
    let md = lib.module_step("1.0.0", "module");
    for (id, tree, want) in [
        ("gp-step", &gp, line("gopath")),
        ("mod-step", &md, line("module")),
    ] {
        let a = t.path().join(format!("{id}-a"));
        let r = prepared(&mut prepare_cmd(&home, &lib, id, "1.0.0", &a, &go));
        check_go_activation(&r, id, &a, tree, "built", &want);
        assert_eq!(r["go"]["origin"], "explicit", "{r:#}");
        let b = t.path().join(format!("{id}-b"));
        let r2 = prepared(&mut prepare_cmd(&home, &lib, id, "1.0.0", &b, &go));
        check_go_activation(&r2, id, &b, tree, "cached", &want);
        assert_eq!(r2["binary"], r["binary"]);
        assert_eq!(r2["build_key"], r["build_key"]);
        assert!(
            build_names(&home).contains(&format!(
                "{}/go-{}",
                r["source"].as_str().unwrap(),
                r["build_key"].as_str().unwrap()
            )),
            "{:?}",
            build_names(&home)
        );
    }
    assert_eq!(build_names(&home).len(), 2);
    assert_fsck_clean(&home);
}

/// The `locks/names/` files `pid` has open.
fn open_name_locks(pid: u32, locks: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter(|p| p.starts_with(locks))
                .collect()
        })
        .unwrap_or_default()
}

/// Ten activations at once of one unbuilt Go step (its zip served over loopback HTTP), each into
/// a directory of its own: one `go build`, all ten succeed with the same binary, which runs.
/// The build is held until all ten processes have the same name lock open (the build's: the
/// builder holds it, the nine others wait on it), so they really overlap.
#[test]
fn ten_concurrent_activations_build_once() {
    let Some(go) = go_for_tests("ten_concurrent_activations_build_once") else {
        return;
    };
    const N: usize = 10;
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), true);
    let tree = lib.module_step("1.0.0", "concurrent");
    let counting = CountingGo::new(t.path(), &go);
    let hold = t.path().join("release-build");
    let dests: Vec<PathBuf> = (0..N)
        .map(|i| t.path().join(format!("d{i}/step")))
        .collect();
    let mut children: Vec<Child> = dests
        .iter()
        .map(|d| {
            prepare_cmd(&home, &lib, "mod-step", "1.0.0", d, &counting.go)
                .env("STEPMAN_TEST_HOLD", &hold)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let locks = store_root(&home).join("locks/names");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sets: Vec<BTreeSet<PathBuf>> = children
            .iter()
            .map(|c| open_name_locks(c.id(), &locks))
            .collect();
        let common_lock = sets.iter().skip(1).fold(sets[0].clone(), |acc, s| {
            acc.intersection(s).cloned().collect()
        });
        if !common_lock.is_empty() && counting.builds().len() == 1 {
            break;
        }
        assert!(
            children.iter_mut().all(|c| c.try_wait().unwrap().is_none()),
            "a process ended before the build was released"
        );
        assert!(
            Instant::now() < deadline,
            "the ten never waited on one lock: builds {:?}, locks {sets:?}",
            counting.builds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(&hold, "").unwrap();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut binaries = BTreeSet::new();
    let mut built = 0;
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "#{i}: {}", describe(o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        if r["build"] == "built" {
            built += 1;
        }
        check_go_activation(
            &r,
            "mod-step",
            &dests[i],
            &tree,
            r["build"].as_str().unwrap(),
            &line("concurrent"),
        );
        binaries.insert(fs::read(dests[i].join("mod-step")).unwrap());
    }
    assert_eq!(counting.builds().len(), 1, "go build ran more than once");
    assert_eq!(built, 1, "exactly one caller reports built");
    assert_eq!(binaries.len(), 1, "the ten binaries differ");
    assert_eq!(
        lib.server
            .as_ref()
            .unwrap()
            .count("/archives/mod-step/1.0.0/step.zip"),
        1
    );
    assert_fsck_clean(&home);
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Starts a prepare of the GOPATH step (stepman in a process group of its own) held in its
/// `go build`, waits until the build has started (the wrapper's log, not a sleep), SIGKILLs
/// stepman's process group and returns the build's pid.
fn kill_during_build(
    home: &Path,
    lib: &Lib,
    counting: &CountingGo,
    hold: &Path,
    dest: &Path,
) -> u32 {
    let mut child = prepare_cmd(home, lib, "gp-step", "1.0.0", dest, &counting.go)
        .env("STEPMAN_TEST_HOLD", hold)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while counting.builds().is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "stepman ended before building"
        );
        assert!(Instant::now() < deadline, "no build started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pgid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    child.wait().unwrap();
    counting.builds()[0]
}

/// Waits up to 5 s for `pid` to end; true when it did.
fn ends(pid: u32) -> bool {
    let by = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn kill_group_of(pid: u32) {
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

/// stepman killed (SIGKILL to its process group, as a CI runner ends a job) while `go build`
/// runs: the build dies with it (it runs in stepman's group), nothing is cached or activated,
/// and the next try builds and succeeds; `gc` then leaves the store clean.
#[test]
fn killed_build_then_retry() {
    let Some(go) = go_for_tests("killed_build_then_retry") else {
        return;
    };
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    let tree = lib.gopath_step("after a kill");
    let counting = CountingGo::new(t.path(), &go);
    let hold = t.path().join("release-build");
    let dest = t.path().join("step");
    let builder = kill_during_build(&home, &lib, &counting, &hold, &dest);
    let ended = ends(builder);
    if !ended {
        // Do not leave it running, whatever the verdict.
        kill_group_of(builder);
    }
    assert!(
        ended,
        "the build (pid {builder}) outlived the SIGKILL of stepman's process group"
    );
    assert!(build_names(&home).is_empty(), "{:?}", build_names(&home));
    assert!(
        !dest.exists(),
        "a killed activation left {}",
        dest.display()
    );

    fs::write(&hold, "").unwrap();
    let r = prepared(&mut prepare_cmd(
        &home,
        &lib,
        "gp-step",
        "1.0.0",
        &dest,
        &counting.go,
    ));
    check_go_activation(&r, "gp-step", &dest, &tree, "built", &line("after a kill"));
    assert_eq!(counting.builds().len(), 2);
    let o = output(&mut stepman(&home, ["gc"]));
    assert!(o.status.success(), "gc: {}", describe(&o));
    assert_fsck_clean(&home);
}

/// A new version of the step builds anew; the old version is still cached with its message.
#[test]
fn version_bump_builds_anew() {
    let Some(go) = go_for_tests("version_bump_builds_anew") else {
        return;
    };
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    let old = lib.module_step("1.0.0", "one");
    let r1 = prepared(&mut prepare_cmd(
        &home,
        &lib,
        "mod-step",
        "1.0.0",
        &t.path().join("a"),
        &go,
    ));
    check_go_activation(
        &r1,
        "mod-step",
        &t.path().join("a"),
        &old,
        "built",
        &line("one"),
    );

    // The StepLib gets 1.1.0; `-u` updates the store's copy of the collection.
    let new = lib.module_step("1.1.0", "one point one");
    let r2 =
        prepared(prepare_cmd(&home, &lib, "mod-step", "1.1.0", &t.path().join("b"), &go).arg("-u"));
    check_go_activation(
        &r2,
        "mod-step",
        &t.path().join("b"),
        &new,
        "built",
        &line("one point one"),
    );
    assert_eq!(r2["version"], "1.1.0");
    assert_ne!(r2["build_key"], r1["build_key"]);
    assert_ne!(r2["binary"], r1["binary"]);

    let r3 = prepared(&mut prepare_cmd(
        &home,
        &lib,
        "mod-step",
        "1.0.0",
        &t.path().join("c"),
        &go,
    ));
    check_go_activation(
        &r3,
        "mod-step",
        &t.path().join("c"),
        &old,
        "cached",
        &line("one"),
    );
    assert_eq!(r3["binary"], r1["binary"]);
    assert_eq!(build_names(&home).len(), 2);
    assert_fsck_clean(&home);
}

/// Go variables of the caller that would break or change the build are not passed on: the same
/// key, a build that works, and then a hit.
#[test]
fn bogus_caller_environment_does_not_reach_the_build() {
    let Some(go) = go_for_tests("bogus_caller_environment_does_not_reach_the_build") else {
        return;
    };
    let t = TestDir::new();
    let lib = Lib::new(t.path(), false);
    let tree = lib.gopath_step("clean env");
    let bogus = |c: &mut Command| {
        c.env("GOROOT", "/nonexistent")
            .env("GOFLAGS", "-mod=mod")
            .env("GOOS", "plan9")
            .env("GOTOOLCHAIN", "go1.99");
    };
    // A store built with a clean environment: its key.
    let clean_home = t.path().join("clean");
    let clean = prepared(&mut prepare_cmd(
        &clean_home,
        &lib,
        "gp-step",
        "1.0.0",
        &t.path().join("c"),
        &go,
    ));
    // Another store, built with the bogus environment: the same key, and a working binary.
    let home = t.path().join("home");
    let mut c = prepare_cmd(&home, &lib, "gp-step", "1.0.0", &t.path().join("a"), &go);
    bogus(&mut c);
    let r = prepared(&mut c);
    check_go_activation(
        &r,
        "gp-step",
        &t.path().join("a"),
        &tree,
        "built",
        &line("clean env"),
    );
    assert_eq!(r["build_key"], clean["build_key"]);
    let mut c = prepare_cmd(&home, &lib, "gp-step", "1.0.0", &t.path().join("b"), &go);
    bogus(&mut c);
    let r2 = prepared(&mut c);
    check_go_activation(
        &r2,
        "gp-step",
        &t.path().join("b"),
        &tree,
        "cached",
        &line("clean env"),
    );
    assert_eq!(r2["build_key"], clean["build_key"]);
    assert_fsck_clean(&home);
}

/// A step that does not compile: exit 1, the error names the step, quotes the compiler and says
/// the source is activated; the source is there, nothing is cached, and the next try builds
/// again.
#[test]
fn build_failure_activates_the_source_and_caches_nothing() {
    let Some(go) = go_for_tests("build_failure_activates_the_source_and_caches_nothing") else {
        return;
    };
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    let tree = lib.add("bad-step", "1.0.0", &go_yml("example.com/bad"), |d| {
        fs::write(
            d.join("main.go"),
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"x\" }\n",
        )
        .unwrap();
    });
    let counting = CountingGo::new(t.path(), &go);
    let dest = t.path().join("step");
    for attempt in 1..=2 {
        let o = output(&mut prepare_cmd(
            &home,
            &lib,
            "bad-step",
            "1.0.0",
            &dest,
            &counting.go,
        ));
        assert_eq!(
            o.status.code(),
            Some(1),
            "attempt {attempt}: {}",
            describe(&o)
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("bad-step"), "the error names the step: {e}");
        assert!(e.contains("main.go:5"), "the compiler's error line: {e}");
        assert!(
            e.contains("source is activated"),
            "says the source is there: {e}"
        );
        support::assert_same_tree(&tree, &dest);
        assert!(build_names(&home).is_empty(), "{:?}", build_names(&home));
        assert_eq!(counting.builds().len(), attempt, "attempt {attempt} built");
    }
    assert_fsck_clean(&home);
}

/// A bash step runs as `bash <PATH>/<entry_file>` with nothing built; a swift step is refused
/// before anything is activated.
#[test]
fn bash_runs_its_entry_file_and_swift_is_refused() {
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    let tree = lib.add(
        "sh-step",
        "1.0.0",
        "title: Bash\ntoolkit:\n  bash:\n    entry_file: run.sh\n",
        |d| fs::write(d.join("run.sh"), "echo bash step ran\n").unwrap(),
    );
    lib.add(
        "swift-step",
        "1.0.0",
        "title: Swift\ntoolkit:\n  swift:\n    executable_name: s\n",
        |d| fs::write(d.join("main.swift"), "print(1)\n").unwrap(),
    );
    // No Go toolchain is needed for either (a missing `--go` file would fail a Go step).
    let no_go = t.path().join("no-such-go");
    let dest = t.path().join("bash");
    let r = prepared(&mut prepare_cmd(
        &home, &lib, "sh-step", "1.0.0", &dest, &no_go,
    ));
    let at = fs::canonicalize(&dest).unwrap();
    assert_eq!(r["toolkit"], "bash");
    assert_eq!(r["build"], "none");
    assert_eq!(
        r["run"],
        serde_json::json!(["bash", at.join("run.sh").to_str().unwrap()])
    );
    assert_eq!(run_step(&r), "bash step ran\n");
    support::assert_same_tree(&tree, &dest);

    let sdest = t.path().join("swift");
    let o = output(&mut prepare_cmd(
        &home,
        &lib,
        "swift-step",
        "1.0.0",
        &sdest,
        &no_go,
    ));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not supported"), "{e}");
    assert!(!sdest.exists(), "a refused step was activated");
    assert_fsck_clean(&home);
}

/// `gc` keeps the builds of named sources; after `delete -c`, `gc` drops them and their names.
#[test]
fn gc_drops_builds_with_their_source() {
    let Some(go) = go_for_tests("gc_drops_builds_with_their_source") else {
        return;
    };
    let t = TestDir::new();
    let home = t.path().join("home");
    let lib = Lib::new(t.path(), false);
    lib.gopath_step("gc");
    let r = prepared(&mut prepare_cmd(
        &home,
        &lib,
        "gp-step",
        "1.0.0",
        &t.path().join("a"),
        &go,
    ));
    let binary = r["binary"].as_str().unwrap().to_string();
    let source = r["source"].as_str().unwrap().to_string();
    let o = output(&mut stepman(&home, ["gc"]));
    assert!(o.status.success(), "gc: {}", describe(&o));
    assert!(
        object_ids(&home).contains(&binary),
        "gc dropped a live build"
    );
    assert_eq!(build_names(&home).len(), 1);
    let r2 = prepared(&mut prepare_cmd(
        &home,
        &lib,
        "gp-step",
        "1.0.0",
        &t.path().join("b"),
        &go,
    ));
    assert_eq!(r2["build"], "cached");

    let o = output(&mut stepman(&home, ["delete", "-c", lib.uri()]));
    assert!(o.status.success(), "delete: {}", describe(&o));
    let o = output(&mut stepman(&home, ["gc"]));
    assert!(o.status.success(), "gc: {}", describe(&o));
    let ids = object_ids(&home);
    assert!(
        !ids.contains(&binary),
        "the build survived its source's deletion"
    );
    assert!(!ids.contains(&source), "the source survived");
    assert!(build_names(&home).is_empty(), "{:?}", build_names(&home));
    assert_fsck_clean(&home);
}

/// Hosts (homes under one test dir) preparing `mod-step@1.0.0`, a module step printing `msg`,
/// with a counting `go` and a remote tier on a fresh bucket of the shared moto server.
struct GoFleet {
    moto: &'static support::Moto,
    t: TestDir,
    lib: Lib,
    tree: PathBuf,
    msg: &'static str,
    counting: CountingGo,
    bucket: String,
    remote: String,
}

impl GoFleet {
    /// `None` (the test is skipped, and says so) without a Go toolchain or moto; `http`: the
    /// step's zip from a loopback server that counts its downloads.
    fn new(test: &str, http: bool, msg: &'static str) -> Option<GoFleet> {
        let go = go_for_tests(test)?;
        let moto = support::moto(test)?;
        let t = TestDir::new();
        let lib = Lib::new(t.path(), http);
        let tree = lib.module_step("1.0.0", msg);
        let counting = CountingGo::new(t.path(), &go);
        let bucket = moto.bucket("go-fleet");
        let remote = format!("s3://{bucket}/fleet");
        Some(GoFleet {
            moto,
            t,
            lib,
            tree,
            msg,
            counting,
            bucket,
            remote,
        })
    }

    fn home(&self, host: &str) -> PathBuf {
        self.t.path().join(host)
    }

    fn dest(&self, host: &str) -> PathBuf {
        self.t.path().join(format!("{host}-step"))
    }

    /// `activate --prepare` of the step on `host`, with the remote and `CGO_ENABLED=cgo`.
    fn prepare(&self, host: &str, cgo: &str) -> Command {
        let mut cmd = prepare_cmd(
            &self.home(host),
            &self.lib,
            "mod-step",
            "1.0.0",
            &self.dest(host),
            &self.counting.go,
        );
        self.moto.env(&mut cmd);
        cmd.env("STEPMAN_REMOTE", &self.remote)
            .env("CGO_ENABLED", cgo);
        cmd
    }

    /// Checks `host`'s activation (its report `r`, whatever its `build`) and its store.
    fn check(&self, host: &str, r: &Value) {
        let build = r["build"].as_str().unwrap();
        check_go_activation(
            r,
            "mod-step",
            &self.dest(host),
            &self.tree,
            build,
            &line(self.msg),
        );
        assert_fsck_clean(&self.home(host));
    }

    /// The remote keys under `names/<under>`.
    fn names(&self, under: &str) -> Vec<String> {
        self.moto.keys(
            &self.bucket,
            &format!("fleet/stepman-remote-v1/names/{under}"),
        )
    }
}

/// With the fleet's remote tier, a build that links no C (`CGO_ENABLED=0`) is shared: the first
/// host builds and uploads it, a second host takes it from the remote (no `go build` runs) and
/// gets the same binary, which runs. A cgo build (`CGO_ENABLED=1`: it links the building host's
/// C library) is never put there, so each host builds its own.
#[test]
fn go_builds_linking_no_c_are_shared_through_the_remote() {
    let test = "go_builds_linking_no_c_are_shared_through_the_remote";
    let Some(f) = GoFleet::new(test, false, "fleet") else {
        return;
    };
    let host = |name: &str, cgo: &str, expect: &str| -> Value {
        let r = prepared(&mut f.prepare(name, cgo));
        assert_eq!(r["build"], expect, "{name}: {r:#}");
        f.check(name, &r);
        r
    };
    let build_keys = || f.names("_build/");

    let a = host("a", "0", "built");
    assert_eq!(f.counting.builds().len(), 1);
    assert_eq!(
        build_keys().len(),
        1,
        "the build is shared: {:?}",
        build_keys()
    );
    let b = host("b", "0", "remote");
    assert_eq!(f.counting.builds().len(), 1, "the second host ran no build");
    assert_eq!(b["binary"], a["binary"]);
    assert_eq!(b["build_key"], a["build_key"]);

    let mut verify = stepman(&f.home("b"), ["remote", "verify", "--json"]);
    f.moto.env(&mut verify);
    verify.env("STEPMAN_REMOTE", &f.remote);
    let o = output(&mut verify);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["names"], 2, "the source and its build: {report}");

    let c = host("c", "1", "built");
    assert_ne!(c["build_key"], a["build_key"], "CGO_ENABLED is in the key");
    host("d", "1", "built");
    assert_eq!(f.counting.builds().len(), 3, "each cgo host built its own");
    assert_eq!(
        build_keys().len(),
        1,
        "no cgo build was put: {:?}",
        build_keys()
    );
}

/// Ten hosts (homes) preparing one uncached Go step at once, sharing a remote tier: the
/// fleet downloads its source once and runs one `go build` in all (the others wait for the
/// lease holder's upload), and every host gets the same binary, which runs.
#[test]
fn ten_hosts_preparing_at_once_run_one_go_build_in_all() {
    let test = "ten_hosts_preparing_at_once_run_one_go_build_in_all";
    let Some(f) = GoFleet::new(test, true, "fleet-wide") else {
        return;
    };
    let _alone = support::alone();
    const N: usize = 10;
    let hosts: Vec<String> = (0..N).map(|i| format!("h{i}")).collect();
    let children: Vec<Child> = hosts
        .iter()
        .map(|h| {
            f.prepare(h, "0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut binaries = BTreeSet::new();
    let mut reports = Vec::new();
    for (c, h) in children.into_iter().zip(&hosts) {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{h}: {}", describe(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        f.check(h, &r);
        binaries.insert(fs::read(f.dest(h).join("mod-step")).unwrap());
        reports.push(r["build"].as_str().unwrap().to_string());
    }
    reports.sort();
    let mut want = vec!["remote".to_string(); N - 1];
    want.insert(0, "built".to_string());
    assert_eq!(reports, want, "one host built, the others took its build");
    assert_eq!(f.counting.builds().len(), 1, "go build ran more than once");
    assert_eq!(binaries.len(), 1, "the binaries differ");
    let origin = f.lib.server.as_ref().unwrap();
    assert_eq!(origin.count("/archives/mod-step/1.0.0/step.zip"), 1);
    let leases = f.moto.keys(&f.bucket, "fleet/stepman-remote-v1/leases/");
    assert!(leases.is_empty(), "leases left: {leases:?}");
}

/// A pre-bake job warms the fleet's builds: `preload --prepare --push` of a step whose build
/// is already in its store (built there earlier, without a remote) uploads the source and the
/// build, and a fresh host then prepares the step with no `go build`.
#[test]
fn preload_prepare_push_warms_the_fleets_builds() {
    let test = "preload_prepare_push_warms_the_fleets_builds";
    let Some(f) = GoFleet::new(test, false, "baked") else {
        return;
    };
    let preload = |extra: &[&str]| {
        let mut c = stepman(
            &f.home("bake"),
            ["preload", "-c", f.lib.uri(), "mod-step@1.0.0", "--prepare"],
        );
        c.arg("--go")
            .arg(&f.counting.go)
            .args(extra)
            .env("GOCACHE", gocache())
            .env("CGO_ENABLED", "0");
        f.moto.env(&mut c);
        let o = output(&mut c);
        assert!(o.status.success(), "preload {extra:?}: {}", describe(&o));
    };
    preload(&[]);
    assert_eq!(f.counting.builds().len(), 1);
    preload(&["--push", "--remote", &f.remote]);
    assert_eq!(f.counting.builds().len(), 1, "the push built nothing");
    let names = f.names("");
    assert_eq!(names.len(), 2, "the source and its build: {names:?}");
    assert!(
        names.iter().any(|n| n.contains("/names/_build/")),
        "{names:?}"
    );

    let r = prepared(&mut f.prepare("fresh", "0"));
    assert_eq!(r["build"], "remote", "{r:#}");
    f.check("fresh", &r);
    assert_eq!(f.counting.builds().len(), 1, "the fresh host ran no build");
}

/// A remote build name that names a tree which is not a build (here: the step's source tree,
/// which is in the remote and hashes to the id the name claims) is refused with a warning, and
/// the host builds the step itself.
#[test]
fn a_remote_build_name_that_names_no_build_is_refused_and_the_host_builds() {
    let test = "a_remote_build_name_that_names_no_build_is_refused_and_the_host_builds";
    let Some(f) = GoFleet::new(test, false, "shaped") else {
        return;
    };
    let host = |name: &str| {
        let o = output(&mut f.prepare(name, "0"));
        assert!(o.status.success(), "{name}: {}", describe(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        f.check(name, &r);
        (r, support::stderr_of(&o))
    };
    let (a, _) = host("a");
    assert_eq!(a["build"], "built");
    let build_names = f.names("_build/");
    assert_eq!(build_names.len(), 1, "{build_names:?}");
    // The build's name now claims the source tree.
    let source = a["source"].as_str().unwrap();
    f.moto
        .put(&f.bucket, &build_names[0], format!("{source}\n").as_bytes());

    let (b, err) = host("b");
    assert_eq!(b["build"], "built", "the host built it itself: {err}");
    assert_eq!(b["binary"], a["binary"]);
    assert!(err.contains("not the tree a"), "{err}");
    assert_eq!(f.counting.builds().len(), 2);
}
