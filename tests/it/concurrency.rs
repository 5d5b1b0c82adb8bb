//! Multi-process tests of the store: every test spawns the real `stepman` binary as separate
//! processes (threads in this file only start processes and check what they did).
//!
//! The tests take a file-wide lock so they run one after another: they are timing-sensitive
//! (kills at chosen moments, loops for a fixed time) and each wants both cores.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// One line describing a failed process, for the failure list of a test.
fn failure(what: &str, out: &Output) -> String {
    format!(
        "{what}: {} stdout={:?} stderr={:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What one looping actor did: how many processes it ran, and every failure.
#[derive(Debug, Default)]
struct Tally {
    ops: usize,
    /// The slowest process.
    worst: Duration,
    failures: Vec<String>,
    /// Free-form counters (gc removals, which tree an export matched, ...).
    counts: HashMap<&'static str, usize>,
}

impl Tally {
    /// Runs one process to completion, counting it and its latency.
    fn run(&mut self, cmd: &mut std::process::Command) -> Output {
        let t = Instant::now();
        let out = output(cmd);
        let took = t.elapsed();
        self.ops += 1;
        self.worst = self.worst.max(took);
        out
    }

    fn count(&mut self, what: &'static str, n: usize) {
        *self.counts.entry(what).or_default() += n;
    }
}

fn total(tallies: &[Tally], what: &str) -> usize {
    tallies.iter().filter_map(|t| t.counts.get(what)).sum()
}

fn all_failures(tallies: &[(&str, &Tally)]) -> Vec<String> {
    tallies
        .iter()
        .flat_map(|(who, t)| t.failures.iter().map(move |f| format!("[{who}] {f}")))
        .collect()
}

/// Panics listing every failure of every actor, unless there are none.
fn assert_no_failures(tallies: &[(&str, &Tally)]) {
    let failures = all_failures(tallies);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `stepman store resolve <name>` must succeed and name the directory of object `id`.
fn assert_resolves_to(home: &Path, name: &str, id: &str) {
    let dir = run_ok(&mut stepman(home, ["store", "resolve", name]));
    assert!(dir.ends_with(id), "{name} -> {dir}, expected {id}");
}

/// The tree `<w>/<label>` made by [`make_tree`] from `seed` and `files`, and its
/// `<w>/<label>.tar.gz`.
fn tree_and_tgz(w: &Path, label: &str, seed: u64, files: usize) -> (PathBuf, PathBuf) {
    let (dir, tgz) = (w.join(label), w.join(format!("{label}.tar.gz")));
    make_tree(&dir, seed, files);
    tar_gz(&dir, &tgz);
    (dir, tgz)
}

/// Spawns every command (each behind a start gate: [`gated_stepman`], [`gated_shell`]),
/// releases them together and waits for all of them.
fn run_released(cmds: impl IntoIterator<Item = std::process::Command>) -> Vec<Output> {
    let mut children: Vec<Child> = cmds.into_iter().map(|mut c| c.spawn().unwrap()).collect();
    release(&mut children);
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Panics unless every process exited 0 printing an object id, all the same one; returns it.
fn the_one_id(outs: &[Output]) -> String {
    let mut ids = BTreeSet::new();
    for (i, out) in outs.iter().enumerate() {
        assert!(
            out.status.success(),
            "{}",
            failure(&format!("process {i}"), out)
        );
        let id = stdout_of(out);
        assert!(is_object_id(&id), "process {i} printed {id:?}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "the processes printed different ids: {ids:?}");
    ids.into_iter().next().unwrap()
}

/// The swapper: drives `run`, re-importing `b` (even iterations) and `a` (odd ones), each given
/// as `(source, the id its import must print)`, under `name`. Returns its tally and the id the
/// name was bound to last (`a`'s, bound before the run, when no import succeeded).
fn swap_imports(
    run: &Run,
    home: &Path,
    name: &str,
    a: (&Path, &str),
    b: (&Path, &str),
) -> (Tally, String) {
    let mut t = Tally::default();
    let mut last = a.1.to_string();
    run.drive(|i| {
        let (src, want) = if i % 2 == 0 { b } else { a };
        let out = t.run(&mut stepman(
            home,
            [
                "store".as_ref(),
                "import".as_ref(),
                src.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
            ],
        ));
        if !out.status.success() || stdout_of(&out) != want {
            t.failures.push(failure("swap import", &out));
        } else {
            last = want.to_string();
        }
    });
    (t, last)
}

/// The churner: follows `run`, importing a new small tree each iteration `k` (seed
/// `seed_base + k`, made under `churn` and removed after), every other one (even `k`) under the
/// name `new/<prefix><k>/1` and the rest unnamed, garbage at once. Returns its tally and the
/// `(name, id)` of every named import.
fn churn_imports(
    run: &Run,
    home: &Path,
    churn: &Path,
    seed_base: u64,
    prefix: &str,
) -> (Tally, Vec<(String, String)>) {
    let mut t = Tally::default();
    let mut named = Vec::new();
    run.follow(|k| {
        let dir = churn.join(k.to_string());
        make_tree(&dir, seed_base + k as u64, 6);
        let name = format!("new/{prefix}{k}/1");
        let mut cmd = stepman(home, ["store".as_ref(), "import".as_ref(), dir.as_os_str()]);
        if k % 2 == 0 {
            cmd.args(["--name", &name]);
        }
        let out = t.run(&mut cmd);
        let id = stdout_of(&out);
        if !out.status.success() || !is_object_id(&id) {
            t.failures.push(failure("churn import", &out));
        } else if k % 2 == 0 {
            named.push((name, id));
        }
        fs::remove_dir_all(&dir).unwrap();
    });
    (t, named)
}

/// A name, the object ids it may resolve to, and the trees (label, source) an export may be.
type Expect<'a> = (&'a str, Vec<&'a str>, Vec<(&'static str, &'a Path)>);

/// `stepman gc --json` once; records what it removed.
fn gc_once(home: &Path, t: &mut Tally) {
    let out = t.run(&mut stepman(home, ["gc", "--json"]));
    if !out.status.success() {
        t.failures.push(failure("gc", &out));
        return;
    }
    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(v) => {
            let n = v["removed_objects"].as_array().map_or(0, Vec::len);
            t.count("removed", n);
            t.count(
                "reclaimed-temp",
                v["temp"]["reclaimed"].as_array().map_or(0, Vec::len),
            );
        }
        Err(e) => t
            .failures
            .push(format!("gc printed no JSON ({e}): {out:?}")),
    }
}

/// `stepman store resolve <name>`: must exit 0 and print the directory of one of `ids`.
fn resolve_check(home: &Path, name: &str, ids: &[&str], t: &mut Tally) {
    let out = t.run(&mut stepman(home, ["store", "resolve", name]));
    if !out.status.success() {
        t.failures.push(failure(&format!("resolve {name}"), &out));
        return;
    }
    let dir = PathBuf::from(stdout_of(&out));
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !ids.contains(&id.as_str()) || !dir.starts_with(store_root(home).join("objects")) {
        t.failures.push(format!(
            "resolve {name} printed {dir:?}, expected one of {ids:?}"
        ));
    }
}

/// `stepman store export <name> <dest>`: must exit 0 and produce exactly one of `trees`
/// (given as `(label, source dir)`); counts which one.
fn export_check(
    name: &str,
    home: &Path,
    dest: &Path,
    trees: &[(&'static str, &Path)],
    t: &mut Tally,
) {
    let out = t.run(&mut support::export_cmd(home, name, dest));
    if !out.status.success() {
        t.failures.push(failure(&format!("export {name}"), &out));
        // A failed export must leave no destination behind.
        if fs::symlink_metadata(dest).is_ok() {
            t.failures
                .push(format!("failed export {name} left {}", dest.display()));
        }
        let _ = fs::remove_dir_all(dest);
        return;
    }
    let mut diffs = Vec::new();
    let mut matched = None;
    for (label, src) in trees {
        match diff_trees(src, dest) {
            Ok(()) => {
                matched = Some(*label);
                break;
            }
            Err(d) => diffs.push(format!("{label}: {d}")),
        }
    }
    match matched {
        Some(label) => t.count(label, 1),
        None => t.failures.push(format!(
            "export {name} exited 0 but {} matches no source tree: {diffs:?}",
            dest.display()
        )),
    }
    fs::remove_dir_all(dest).unwrap();
}

/// When a run of concurrent actors ends: one actor, the driver, runs until at least `min_time`
/// has passed and it did `min_ops` iterations (or `cap` has passed, on a very loaded machine),
/// then tells the others to stop. Counting the driver's iterations, not only time, keeps the
/// overlap the test needs when other work slows everything down.
struct Run {
    stop: AtomicBool,
    min_time: Duration,
    min_ops: usize,
    cap: Duration,
}

/// Sets the stop flag when the driver ends, even by a panic, so no actor loops forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Run {
    fn new(min_time: Duration, min_ops: usize) -> Run {
        Run {
            stop: AtomicBool::new(false),
            min_time,
            min_ops,
            cap: min_time * 4,
        }
    }

    /// The driver: runs `f` (given the iteration number) until the run is over.
    fn drive(&self, mut f: impl FnMut(usize)) {
        let _stop = StopOnDrop(&self.stop);
        let t = Instant::now();
        let mut i = 0;
        while (t.elapsed() < self.min_time || i < self.min_ops) && t.elapsed() < self.cap {
            f(i);
            i += 1;
        }
    }

    /// Any other actor: runs `f` until the driver is done.
    fn follow(&self, mut f: impl FnMut(usize)) {
        let mut i = 0;
        while !self.stop.load(Ordering::SeqCst) {
            f(i);
            i += 1;
        }
    }
}

/// Test 1. Sixteen processes import one archive under one name at the same moment (a start gate
/// releases them together), each then exporting the name at once, as a CI job would: all exit
/// 0 with the same id, the store holds exactly one object, every export is the source tree, and
/// fsck is clean. The store does not exist beforehand, so its creation races too.
#[test]
fn sixteen_importers_of_one_archive() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let home = work.path().join("home");
    let (src, tgz) = tree_and_tgz(work.path(), "src", 1, 300);
    const N: usize = 16;
    let name = "steplib/big-step/1.0.0";
    let script =
        r#""$STEPMAN" store import "$1" --name "$2" && exec "$STEPMAN" store export "$2" "$3""#;
    let dests: Vec<PathBuf> = (0..N)
        .map(|i| work.path().join(format!("job-{i}/step")))
        .collect();
    let outs = run_released(dests.iter().map(|d| {
        gated_shell(
            &home,
            script,
            [tgz.as_os_str(), name.as_ref(), d.as_os_str()],
        )
    }));
    let id = the_one_id(&outs);
    assert_eq!(object_ids(&home), vec![id.clone()], "exactly one object");
    let partial: Vec<String> = dests
        .iter()
        .filter_map(|d| {
            diff_trees(&src, d)
                .err()
                .map(|e| format!("{}: {e}", d.display()))
        })
        .collect();
    assert!(
        partial.is_empty(),
        "{} of {N} processes exited 0 with a wrong tree:\n{}",
        partial.len(),
        partial.join("\n")
    );
    assert_resolves_to(&home, name, &id);
    assert_fsck_clean(&home);
    let left: Vec<_> = fs::read_dir(store_root(&home).join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temp area not empty afterwards: {left:?}");
    eprintln!("sixteen_importers_of_one_archive: {:?}", started.elapsed());
}

/// Test 2. Single flight: ten `store import --if-missing` of one archive and name, released at
/// once. All exit 0 with the same id, and exactly one of them ingests. Observed twice, at two
/// layers: the command logs "already present" (info) when `import_if_missing` ingested nothing,
/// nine times; and the publish step logs "already in the store" (debug) whenever a finished
/// ingest finds its object already published — every ingest that completes reaches publish, so
/// zero such lines means no second ingest ran to completion.
#[test]
fn single_flight_if_missing() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let home = work.path().join("home");
    let (_, tgz) = tree_and_tgz(work.path(), "src", 2, 300);
    let name = "steplib/single/2.0.0";
    // Create the store first, so every process reaches the name lock at the same moment.
    let tiny = work.path().join("tiny");
    make_tree(&tiny, 9, 1);
    import(&home, &tiny, Some("other/tiny/1"));
    const N: usize = 10;
    let outs = run_released((0..N).map(|_| {
        let mut c = gated_stepman(
            &home,
            [
                "store".as_ref(),
                "import".as_ref(),
                tgz.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
                "--if-missing".as_ref(),
            ],
        );
        c.env("RUST_LOG", "debug");
        c
    }));
    let id = the_one_id(&outs);
    let count = |what: &str| -> usize {
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).matches(what).count())
            .sum()
    };
    let present = count(&format!("{name} already present"));
    let duplicate_publishes = count(&format!("{id} already in the store"));
    assert!(
        present == N - 1 && duplicate_publishes == 0,
        "expected exactly one ingest: {present} of {N} processes found the name bound (want {}), \
         {duplicate_publishes} finished a second ingest and found the object published (want 0)",
        N - 1
    );
    // The second observable is live: an ingest of content already published does log it.
    let mut again = stepman(
        &home,
        ["store".as_ref(), "import".as_ref(), tgz.as_os_str()],
    );
    let again = output(again.env("RUST_LOG", "debug"));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("{id} already in the store")),
        "publish no longer logs \"<id> already in the store\": {}",
        failure("plain import", &again)
    );
    assert_eq!(object_ids(&home).len(), 2, "the tiny tree and this one");
    assert!(object_ids(&home).contains(&id));
    assert_fsck_clean(&home);
    eprintln!("single_flight_if_missing: {:?}", started.elapsed());
}

/// Test 3. Importers killed with SIGKILL at moments spread evenly from process start to 1.5
/// times an import's duration, 30 rounds, each round a different tree (one file differs) so
/// every round really publishes. Afterwards: whatever fsck finds is only dead temp dirs under
/// `tmp/` (every object present verifies, no name dangles); gc reclaims exactly those; fsck is
/// clean; a re-import gives the expected id and an exact export.
#[test]
fn sigkilled_importers_leave_only_temp_dirs() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let home = work.path().join("home");
    let scratch = work.path().join("scratch");
    let src = work.path().join("src");
    make_tree(&src, 3, 300);
    let marker = src.join("round.txt");
    // The store exists before the first kill: this test is about ingests, not store creation.
    let tiny = work.path().join("tiny");
    make_tree(&tiny, 9, 1);
    import(&home, &tiny, Some("kill/tiny/1"));

    let tmp = store_root(&home).join("tmp");
    let listing = |dir: &Path| -> BTreeSet<std::ffi::OsString> {
        match fs::read_dir(dir) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
            Err(_) => BTreeSet::new(),
        }
    };
    // Starts an import of `src` into the store under `home` and waits until the importer's own
    // temp dir appears in tmp/ (or it exits first): the moment its ingest starts, after process
    // start-up and the sweep of earlier leftovers, whose length varies.
    let start_import = |home: &Path, name: Option<&str>| -> (Child, Instant) {
        let tmp = store_root(home).join("tmp");
        let before = listing(&tmp);
        let mut cmd = stepman(home, ["store".as_ref(), "import".as_ref(), src.as_os_str()]);
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !listing(&tmp)
            .difference(&before)
            .any(|n| !n.to_string_lossy().ends_with(".lock"))
            && child.try_wait().unwrap().is_none()
        {
            thread::sleep(Duration::from_micros(200));
        }
        (child, Instant::now())
    };
    // How long an ingest of this tree takes from that moment to the importer's exit, here and
    // now: measured again every few rounds, since other work on the machine changes it. Into
    // fresh stores beside the one under test, with content that never enters it; the first
    // measurement also gives the id the final re-import must print.
    let mut calibrations = Vec::new();
    let mut calibrate = |n: u32| -> (Duration, String) {
        fs::write(&marker, "final\n").unwrap();
        let (child, t) = start_import(&scratch.join(n.to_string()), None);
        let out = child.wait_with_output().unwrap();
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            failure("calibration import", &out)
        );
        calibrations.push(took);
        (took, stdout_of(&out))
    };
    let (mut calib, expected) = calibrate(0);

    const ROUNDS: u32 = 30;
    let mut mid_ingest = 0;
    let mut completed = 0;
    // Per round: L left a temp dir of its own in tmp/, C finished before the kill, . neither.
    let mut rounds = String::new();
    for round in 0..ROUNDS {
        if round % 6 == 5 {
            calib = calibrate(round).0;
        }
        fs::write(&marker, format!("round {round}\n")).unwrap();
        let before = listing(&tmp);
        let name = format!("kill/big/{round}");
        let (mut child, ingest_started) = start_import(&home, Some(&name));
        // Every point from the start of the ingest to 1.5 times its length once, in an order
        // that ends mid-ingest, so the last kill's leftovers are there for fsck to see.
        let at = calib.mul_f64(1.5) * ((round * 7 + 15) % ROUNDS) / (ROUNDS - 1);
        thread::sleep((ingest_started + at).saturating_duration_since(Instant::now()));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        if is_object_id(&stdout_of(&out)) {
            completed += 1;
        }
        // New entries in tmp/ are this process's own temp dir (or its lock): it was killed
        // after creating it and before removing it.
        let leftovers = listing(&tmp).difference(&before).count();
        if leftovers > 0 {
            mid_ingest += 1;
        }
        rounds.push(match (leftovers > 0, is_object_id(&stdout_of(&out))) {
            (true, _) => 'L',
            (false, true) => 'C',
            (false, false) => '.',
        });
    }
    assert!(
        mid_ingest >= 5,
        "only {mid_ingest} of {ROUNDS} kills left a temp dir behind: the kills did not land \
         mid-ingest ({rounds})"
    );

    // Before any sweep: leftovers only under tmp/, every object verifies, no name dangles.
    let root = store_root(&home);
    let f = fsck_json(&home, &[]);
    assert!(
        f.code == 0 || f.code == 1,
        "fsck could not run: {}",
        f.stderr
    );
    let mut dead = 0;
    let mut root_modes = 0;
    for p in f.problems() {
        let path = PathBuf::from(p["path"].as_str().unwrap_or_default());
        match p["kind"].as_str() {
            Some("dead-temp") if path.starts_with(root.join("tmp")) => dead += 1,
            // Documented crash state (store-format.md §10): killed between the publishing rename
            // and the chmod of the object's root; the content is complete. Microseconds wide.
            Some("bad-permissions")
                if path.parent().and_then(Path::parent) == Some(&root.join("objects")) =>
            {
                root_modes += 1
            }
            _ => panic!(
                "fsck found more than dead temp dirs after the kills: {:#}",
                f.report["problems"]
            ),
        }
    }
    let mut top: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["format", "locks", "names", "objects", "tmp"]);
    assert_eq!(listing(&home), BTreeSet::from(["store-v1".into()]));

    let out = run_ok(&mut stepman(&home, ["gc", "--json"]));
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        gc["temp"]["reclaimed"].as_array().map_or(0, Vec::len),
        dead,
        "gc reclaimed other temp dirs than fsck reported: {gc:#}"
    );
    if root_modes > 0 {
        // Exit 1 with everything repaired is its "repaired" status; the clean check follows.
        let out = output(stepman(&home, ["fsck", "--repair"]).stdout(Stdio::null()));
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            failure("fsck --repair", &out)
        );
    }
    assert_fsck_clean(&home);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    // Every object left is named (gc took the ones killed between publish and bind).
    let named: BTreeSet<String> = (0..ROUNDS)
        .map(|r| format!("kill/big/{r}"))
        .chain(["kill/tiny/1".to_string()])
        .filter_map(|n| {
            let out = output(&mut stepman(&home, ["store", "resolve", &n]));
            out.status.success().then(|| {
                let dir = PathBuf::from(stdout_of(&out));
                dir.file_name().unwrap().to_string_lossy().into_owned()
            })
        })
        .collect();
    assert_eq!(
        object_ids(&home).into_iter().collect::<BTreeSet<_>>(),
        named
    );

    // A re-import works and gives the expected id.
    fs::write(&marker, "final\n").unwrap();
    let id = import(&home, &src, Some("kill/big/final"));
    assert_eq!(id, expected);
    let dest = work.path().join("out");
    run_ok(&mut support::export_cmd(&home, "kill/big/final", &dest));
    assert_same_tree(&src, &dest);
    assert_fsck_clean(&home);
    eprintln!(
        "sigkilled_importers_leave_only_temp_dirs: {:?} (uninterrupted ingests took \
         {calibrations:?}; {mid_ingest} kills mid-ingest, {completed} imports finished first, \
         {dead} dead temp dirs at the end, {root_modes} object roots left 0755; rounds {rounds})",
        started.elapsed()
    );
}

/// Test 4. gc loops while importers bind names (new names, unnamed imports that are garbage at
/// once, and one name re-pointed back and forth between trees A and B, so the tree it leaves is
/// garbage each time), resolvers and exporters run. Every resolve and export of a name bound
/// before the run succeeds, and every export is exactly one of the trees that name was bound
/// to; gc really removed objects; fsck is clean; afterwards every name points where it should
/// and gc leaves exactly the named objects.
#[test]
fn gc_during_imports_resolves_and_exports() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let w = work.path();
    let home = w.join("home");
    let (a, a_tgz) = tree_and_tgz(w, "A", 41, 150);
    let (b, b_tgz) = tree_and_tgz(w, "B", 42, 150);
    let (c, d) = (w.join("C"), w.join("D"));
    make_tree(&c, 43, 100);
    make_tree(&d, 44, 100);
    let swap = "swap/r/1";
    let id_b = import(&home, &b_tgz, Some(swap));
    let id_a = import(&home, &a_tgz, Some(swap));
    let id_c = import(&home, &c, Some("pin/c/1"));
    assert_eq!(import(&home, &c, Some("pin/c/2")), id_c);
    let id_d = import(&home, &d, Some("pin/d/1"));
    // (name, ids it may point at, trees an export of it may be)
    let names: [Expect; 4] = [
        ("pin/c/1", vec![id_c.as_str()], vec![("C", &c)]),
        (
            swap,
            vec![id_a.as_str(), id_b.as_str()],
            vec![("A", &a), ("B", &b)],
        ),
        ("pin/d/1", vec![id_d.as_str()], vec![("D", &d)]),
        (
            swap,
            vec![id_a.as_str(), id_b.as_str()],
            vec![("A", &a), ("B", &b)],
        ),
    ];
    let exports = w.join("exports");
    fs::create_dir(&exports).unwrap();
    let churn = w.join("churn");
    fs::create_dir(&churn).unwrap();

    let run = Run::new(Duration::from_secs(3), 6);
    let (gc, swapper, churner, resolvers, exporters) = thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut t = Tally::default();
            run.follow(|_| gc_once(&home, &mut t));
            t
        });
        let swapper = s.spawn(|| swap_imports(&run, &home, swap, (&a_tgz, &id_a), (&b_tgz, &id_b)));
        let churner = s.spawn(|| churn_imports(&run, &home, &churn, 1000, "n"));
        // One resolver: resolving is a cheap process, and more of them in a tight loop starve
        // everything else on two cores.
        let resolvers: Vec<_> = (0..1)
            .map(|r| {
                let (names, home, run) = (&names, &home, &run);
                s.spawn(move || {
                    let mut t = Tally::default();
                    run.follow(|i| {
                        let (name, ids, _) = &names[(i + r) % names.len()];
                        resolve_check(home, name, ids, &mut t);
                    });
                    t
                })
            })
            .collect();
        let exporters: Vec<_> = (0..2)
            .map(|x| {
                let (names, home, exports, run) = (&names, &home, &exports, &run);
                s.spawn(move || {
                    let mut t = Tally::default();
                    run.follow(|i| {
                        let (name, _, trees) = &names[(i + x) % names.len()];
                        let dest = exports.join(format!("{x}-{i}"));
                        export_check(name, home, &dest, trees, &mut t);
                    });
                    t
                })
            })
            .collect();
        (
            gc.join().unwrap(),
            swapper.join().unwrap(),
            churner.join().unwrap(),
            resolvers
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
            exporters
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    let (swapper, current) = swapper;
    let (churner, named) = churner;
    let mut who: Vec<(&str, &Tally)> =
        vec![("gc", &gc), ("swapper", &swapper), ("churn", &churner)];
    who.extend(resolvers.iter().map(|t| ("resolver", t)));
    who.extend(exporters.iter().map(|t| ("exporter", t)));
    assert_no_failures(&who);

    let removed = gc.counts.get("removed").copied().unwrap_or(0);
    assert!(
        removed > 0,
        "gc ran {} times and never removed anything",
        gc.ops
    );
    assert!(swapper.ops >= 4, "only {} swaps", swapper.ops);
    let swap_exports = total(&exporters, "A") + total(&exporters, "B");
    assert!(swap_exports > 0, "no export of the re-pointed name");

    // Afterwards: every name points where it should, fsck is clean, and one more gc leaves
    // exactly the named objects.
    for (name, id) in &named {
        assert_resolves_to(&home, name, id);
    }
    for (name, id) in [
        ("pin/c/1", &id_c),
        ("pin/c/2", &id_c),
        ("pin/d/1", &id_d),
        (swap, &current),
    ] {
        assert_resolves_to(&home, name, id);
    }
    assert_fsck_clean(&home);
    run_ok(&mut stepman(&home, ["gc"]));
    let want: BTreeSet<String> = named
        .iter()
        .map(|(_, id)| id.clone())
        .chain([id_c.clone(), id_d.clone(), current.clone()])
        .collect();
    let have: BTreeSet<String> = object_ids(&home).into_iter().collect();
    assert_eq!(
        have, want,
        "after a final gc the store holds exactly the named objects"
    );
    assert_fsck_clean(&home);
    eprintln!(
        "gc_during_imports_resolves_and_exports: {:?}; gc runs {} (removed {removed} objects), \
         swaps {}, churn imports {}, resolves {}, exports {} ({} of the re-pointed name: {} A, \
         {} B); slowest gc {:?}, swap {:?}, churn {:?}, resolve {:?}, export {:?}",
        started.elapsed(),
        gc.ops,
        swapper.ops,
        churner.ops,
        resolvers.iter().map(|t| t.ops).sum::<usize>(),
        exporters.iter().map(|t| t.ops).sum::<usize>(),
        swap_exports,
        total(&exporters, "A"),
        total(&exporters, "B"),
        gc.worst,
        swapper.worst,
        churner.worst,
        resolvers.iter().map(|t| t.worst).max().unwrap_or_default(),
        exporters.iter().map(|t| t.worst).max().unwrap_or_default(),
    );
}

/// Test 5. One process after another re-imports trees A and B alternately under one name while
/// three readers loop `store resolve` + `store export` of that name and a fourth loops `store
/// resolve` alone: no reader ever fails, every resolve names A's or B's object, every export is
/// exactly A or B, and the exports saw both.
#[test]
fn readers_never_fail_during_name_swaps() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let w = work.path();
    let home = w.join("home");
    let (a, a_tgz) = tree_and_tgz(w, "A", 51, 120);
    let (b, b_tgz) = tree_and_tgz(w, "B", 52, 120);
    let name = "swap/s/1";
    let id_b = import(&home, &b_tgz, Some(name));
    let id_a = import(&home, &a_tgz, Some(name));
    let exports = w.join("exports");
    fs::create_dir(&exports).unwrap();

    let run = Run::new(Duration::from_millis(2500), 12);
    let (swapper, readers) = thread::scope(|s| {
        let swapper =
            s.spawn(|| swap_imports(&run, &home, name, (&a_tgz, &id_a), (&b_tgz, &id_b)).0);
        // Readers 0-2 resolve and export; reader 3 only resolves, in a tight loop.
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let (home, exports, a, b, id_a, id_b, run) =
                    (&home, &exports, &a, &b, &id_a, &id_b, &run);
                s.spawn(move || {
                    let mut t = Tally::default();
                    run.follow(|i| {
                        resolve_check(home, name, &[id_a, id_b], &mut t);
                        if r < 3 {
                            let dest = exports.join(format!("{r}-{i}"));
                            export_check(name, home, &dest, &[("A", a), ("B", b)], &mut t);
                        }
                    });
                    t
                })
            })
            .collect();
        (
            swapper.join().unwrap(),
            readers
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    let mut who: Vec<(&str, &Tally)> = vec![("swapper", &swapper)];
    who.extend(readers.iter().map(|t| ("reader", t)));
    assert_no_failures(&who);
    assert!(swapper.ops >= 4, "only {} swaps", swapper.ops);
    let (seen_a, seen_b) = (total(&readers, "A"), total(&readers, "B"));
    assert!(
        seen_a > 0 && seen_b > 0,
        "the readers did not overlap the swaps: exports saw A {seen_a} times, B {seen_b} times"
    );
    assert_fsck_clean(&home);
    eprintln!(
        "readers_never_fail_during_name_swaps: {:?}; swaps {}, reader processes {} \
         (exports: {seen_a} A, {seen_b} B)",
        started.elapsed(),
        swapper.ops,
        readers.iter().map(|t| t.ops).sum::<usize>()
    );
}

/// Test 6. Two gcs at once. First released together over a known set of garbage: both exit 0,
/// each garbage object is removed by exactly one of them, and nothing named is touched. Then
/// two gc loops run side by side with importers that keep making garbage: every process exits
/// 0, fsck is clean, every name points where it should.
#[test]
fn two_gcs_at_once_with_importers() {
    let _s = support::alone();
    let started = Instant::now();
    let work = TestDir::new();
    let w = work.path();
    let home = w.join("home");
    let (a, b) = (w.join("A"), w.join("B"));
    make_tree(&a, 61, 80);
    make_tree(&b, 62, 80);
    let swap = "swap/g/1";
    let id_b = import(&home, &b, Some(swap));
    let id_a = import(&home, &a, Some(swap));
    let mut garbage = BTreeSet::from([id_b.clone()]);
    for k in 0..12u64 {
        let dir = w.join(format!("g{k}"));
        make_tree(&dir, 600 + k, 8);
        garbage.insert(import(&home, &dir, None));
    }

    let mut removed: Vec<BTreeSet<String>> = Vec::new();
    for out in run_released((0..2).map(|_| gated_stepman(&home, ["gc", "--json"]))) {
        assert!(out.status.success(), "{}", failure("gc", &out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        removed.push(
            v["removed_objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        );
    }
    assert!(
        removed[0].is_disjoint(&removed[1]),
        "both gcs removed {:?}",
        removed[0].intersection(&removed[1]).collect::<Vec<_>>()
    );
    let union: BTreeSet<String> = removed[0].union(&removed[1]).cloned().collect();
    assert_eq!(
        union, garbage,
        "the two gcs together removed exactly the garbage"
    );
    assert_eq!(object_ids(&home), vec![id_a.clone()]);
    assert_fsck_clean(&home);

    let churn = w.join("churn");
    fs::create_dir(&churn).unwrap();
    let run = Run::new(Duration::from_secs(2), 8);
    let (gcs, swapper, churner) = thread::scope(|s| {
        let gcs: Vec<_> = (0..2)
            .map(|_| {
                let (home, run) = (&home, &run);
                s.spawn(move || {
                    let mut t = Tally::default();
                    run.follow(|_| gc_once(home, &mut t));
                    t
                })
            })
            .collect();
        let swapper = s.spawn(|| swap_imports(&run, &home, swap, (&a, &id_a), (&b, &id_b)));
        let churner = s.spawn(|| churn_imports(&run, &home, &churn, 2000, "g"));
        (
            gcs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
            swapper.join().unwrap(),
            churner.join().unwrap(),
        )
    });
    let ((swapper, current), (churner, named)) = (swapper, churner);
    let mut who: Vec<(&str, &Tally)> = gcs.iter().map(|t| ("gc", t)).collect();
    who.push(("swapper", &swapper));
    who.push(("churn", &churner));
    assert_no_failures(&who);
    assert!(gcs.iter().all(|t| t.ops >= 2), "the gc loops hardly ran");
    for (name, id) in named.iter().chain([&(swap.to_string(), current.clone())]) {
        assert_resolves_to(&home, name, id);
    }
    assert_fsck_clean(&home);
    eprintln!(
        "two_gcs_at_once_with_importers: {:?}; gc runs {} + {} (removed {} objects), swaps {}, \
         churn imports {}",
        started.elapsed(),
        gcs[0].ops,
        gcs[1].ops,
        total(&gcs, "removed"),
        swapper.ops,
        churner.ops
    );
}

/// Regression test for a race in `store resolve`, which takes no lock: it reads the name's link,
/// then the name is re-pointed and gc removes the old object, then it looks at the old object.
/// It used to fail ("name points at missing object; run `stepman fsck --repair`") for a healthy
/// name; the loops above can hit that window only by luck, so strace holds the resolver for 6 s
/// on leaving its first read of the name's link (strace has written the link's target to its log
/// by then) while the test re-points the name and runs gc. The log proves the window was hit (the
/// held read returned the old object). Skipped, with a note, where strace cannot trace.
#[test]
fn resolve_survives_repoint_and_gc_between_its_reads() {
    let test = "resolve_survives_repoint_and_gc_between_its_reads";
    if !strace_usable(test) {
        return;
    }
    let work = TestDir::new();
    let w = work.path();
    let home = w.join("home");
    let (x, y) = (w.join("X"), w.join("Y"));
    make_tree(&x, 71, 3);
    make_tree(&y, 72, 3);
    let name = "race/r/1";
    let id_y = import(&home, &y, Some("race/keep-y/1"));
    let id_x = import(&home, &x, Some(name));
    let link = store_root(&home).join("names").join(name);
    let log = w.join("strace.log");
    let cmd = Traced::new(&home, &log)
        .follow()
        .opt(&["-s", "256"])
        .on(&link)
        .trace("readlink,readlinkat")
        .inject("readlink,readlinkat:delay_exit=6000000:when=1")
        .stepman(["store", "resolve", name]);
    let resolver = Held::spawn(cmd, &log);
    resolver.wait_until("read the name", |l| l.contains("(DELAYED)"));
    assert_eq!(import(&home, &y, Some(name)), id_y);
    let gc = run_ok(&mut stepman(&home, ["gc", "--json"]));
    assert!(gc.contains(&id_x), "gc did not remove the old object: {gc}");
    let (out, log) = resolver.finish();
    let held = log.lines().find(|l| l.contains("(DELAYED)")).unwrap_or("");
    assert!(
        held.contains(&id_x),
        "the held read found the old object: {log}"
    );
    assert!(
        out.status.success(),
        "{}",
        failure("resolve across a re-point and gc", &out)
    );
    assert!(stdout_of(&out).ends_with(&id_y), "{out:?}");
    assert_fsck_clean(&home);
}

/// True when `/proc/locks` shows process `pid` waiting for a lock (a `->` line). `None`: this
/// kernel shows no `/proc/locks`.
fn waits_for_a_lock(pid: u32) -> Option<bool> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    let pid = pid.to_string();
    Some(
        text.lines()
            .any(|l| l.contains("->") && l.split_whitespace().any(|t| t == pid)),
    )
}

/// `flock -x <file>` held by a shell until a line arrives on its stdin, then `then` runs (still
/// holding the lock). Returns once the lock is held.
fn hold_lock(file: &Path, then: &str) -> Child {
    let mut c = std::process::Command::new("flock")
        .arg("-x")
        .arg(file)
        .args(["-c", &format!("echo held; read _; {then}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn flock");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held", "flock {}", file.display());
    c
}

fn let_go(mut holder: Child) {
    std::io::Write::write_all(holder.stdin.as_mut().unwrap(), b"go\n").unwrap();
    assert!(holder.wait().unwrap().success());
}

/// Polls until `pid` waits for a lock or `child` exits (states, not timing: both are observed).
fn until_waiting_or_exited(child: &mut Child) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && waits_for_a_lock(child.id()) != Some(true) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "fsck never got there"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// A dead temp dir that another sweeper is removing while `fsck --repair` repairs it (issue 9,
/// item 9): the problem vanished, which is not a failure. Deterministic: the test holds the
/// store lock so fsck stops between its report and its repair, claims the dead dir's lock as a
/// sweeper would, and removes the dir only once fsck has come to it.
#[test]
fn fsck_repair_of_a_temp_dir_another_sweeper_removes_first() {
    let _s = support::alone();
    if waits_for_a_lock(std::process::id()).is_none() {
        eprintln!("skipping: no /proc/locks");
        return;
    }
    let t = TestDir::new();
    let home = t.path().join("home");
    let src = t.path().join("src");
    make_tree(&src, 9, 3);
    import(&home, &src, Some("r/a/1"));
    let root = store_root(&home);
    let dead = root.join("tmp/ingest-dead");
    fs::create_dir_all(dead.join("tree")).unwrap();
    fs::write(dead.join("tree/f"), "x").unwrap();
    let dead_lock = root.join("tmp/ingest-dead.lock");
    fs::write(&dead_lock, "").unwrap();

    let store_lock = hold_lock(&root.join("locks/gc.lock"), "true");
    let mut fsck = stepman(&home, ["fsck", "--repair", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // fsck has reported the dead dir (its dry-run sweep comes first) and waits for the lock.
    until_waiting_or_exited(&mut fsck);
    assert!(
        fsck.try_wait().unwrap().is_none(),
        "fsck did not wait for the store lock"
    );
    // Another sweeper claims the dead dir; fsck goes on to its repair.
    let sweeper = hold_lock(
        &dead_lock,
        &format!(
            "rm -rf '{}' && rm '{}'",
            dead.display(),
            dead_lock.display()
        ),
    );
    let_go(store_lock);
    until_waiting_or_exited(&mut fsck);
    let_go(sweeper);
    let out = fsck.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    assert_eq!(problems[0]["kind"], "dead-temp");
    assert_eq!(
        problems[0]["repaired"], true,
        "a problem that vanished while it was repaired is left: {report:#}\n{stderr}"
    );
    assert!(stderr.contains("1 repaired, 0 left"), "{stderr}");
    assert!(!dead.exists() && !dead_lock.exists());
    assert_fsck_clean(&home);
}

/// Eight processes activating one `git::URL@branch` at once: each resolves the branch, one
/// clones (single flight on the commit's name), and all get identical trees.
#[test]
fn concurrent_activations_of_one_git_ref_clone_once() {
    use crate::git_transports::{Served, Transport, commit_all};
    let _s = support::alone();
    let work = TestDir::new();
    let served = Served::start(&work.path().join("served"));
    let wt = work.path().join("wt");
    make_tree(&wt, 7, 200);
    fs::write(wt.join("step.yml"), step_yml("concurrent", None)).unwrap();
    commit_all(&wt, "step");
    served.publish(&wt, "ref.git");
    let spec = format!("git::{}@main", served.url(Transport::Smart, "ref.git"));
    let home = work.path().join("home");
    // Create the store first, so every process reaches the name lock at the same moment.
    let tiny = work.path().join("tiny");
    make_tree(&tiny, 9, 1);
    import(&home, &tiny, Some("other/tiny/1"));
    const N: usize = 8;
    let dests: Vec<PathBuf> = (0..N).map(|i| work.path().join(format!("d{i}"))).collect();
    let mut children: Vec<Child> = dests
        .iter()
        .map(|d| {
            gated_stepman(
                &home,
                [
                    "activate".as_ref(),
                    "-i".as_ref(),
                    spec.as_ref(),
                    "-p".as_ref(),
                    d.as_os_str(),
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    release(&mut children);
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            failure(&format!("activation {i}"), &out)
        );
    }
    assert_eq!(
        served.fetches(Transport::Smart).len(),
        1,
        "{N} concurrent activations of one commit cloned more than once"
    );
    // The work tree less its `.git`: what every activation must hold.
    fs::remove_dir_all(wt.join(".git")).unwrap();
    for d in &dests {
        assert_same_tree(&wt, d);
    }
    assert_fsck_clean(&home);
}
