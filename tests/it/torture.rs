//! Torture: [`WORKERS`] threads each run `stepman` processes one after another, for a fixed time,
//! against one store and one StepLib whose zip downloads come from a loopback HTTP server:
//! random `activate` (two thirds into a fresh directory, one third into a destination shared by
//! every activation of that step version; half of them with `-y`), `download`, `preload` (of
//! named steps or of the selection), `update`, `gc`, `fsck`, `fsck --repair`, `step-info`,
//! `step-list`, `export-spec`, `collections`, and rarely `delete` and `setup` of the collection
//! (`delete` is safe while others activate), while a
//! mutator keeps changing the StepLib's step-info files (so every `update` publishes a new
//! collection object and `gc` removes the old ones under the readers) and a share of the
//! processes is killed with SIGKILL (their whole process group) at a random moment.
//! The races of this kind found so far are replayed deterministically in `replays.rs`.
//!
//! What must hold:
//! - every process that was not killed exits 0 (the one exception is `fsck` finding a dead temp
//!   dir, or an object root not yet read-only, after some process was killed: both are
//!   documented crash states, `store-format.md` §10); any other exit is a failure, printed with
//!   its stderr;
//! - every activation that exited 0 left a tree byte-identical to the step's source (into a
//!   shared destination: checked once no other activation into it is running, since each one
//!   replaces the tree);
//! - every `preload` that exited 0 has each step downloaded or cached; every `fsck --repair`
//!   that found something found only those crash states and repaired every one;
//! - afterwards `fsck` finds only those crash states, `gc` empties `tmp/`, then `fsck` is clean
//!   and every step name still in the store exports its source tree.
//!
//! `STEPMAN_TORTURE_SECS` sets the duration (default 15 s), `STEPMAN_TORTURE_SEED` the seed of
//! the operation sequence (default: from the clock; it is printed). Timing is not replayed, only
//! the choices. A long run:
//! `STEPMAN_TORTURE_SECS=600 cargo test --release --test it -- torture:: --nocapture`.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Mode, Server};
use support::{Rng, TestDir, diff_trees, fsck_json, make_tree, run_ok, stepman, store_env};

/// Processes running at once.
const WORKERS: usize = 12;
/// Step ids and versions of the StepLib.
const STEPS: [&str; 3] = ["alpha", "beta", "gamma"];
const VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// Longest any one process may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Activate,
    Download,
    Update,
    Gc,
    Fsck,
    StepInfo,
    StepList,
    ExportSpec,
    Delete,
    Setup,
    Collections,
    Preload,
    FsckRepair,
}

impl Op {
    fn pick(rng: &mut Rng) -> Op {
        match rng.u64(..100) {
            0..30 => Op::Activate,
            30..40 => Op::Download,
            40..47 => Op::Preload,
            47..55 => Op::Update,
            55..63 => Op::Gc,
            63..69 => Op::Fsck,
            69..73 => Op::FsckRepair,
            73..85 => Op::StepInfo,
            85..89 => Op::StepList,
            89..92 => Op::ExportSpec,
            92..95 => Op::Collections,
            95..98 => Op::Delete,
            _ => Op::Setup,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: usize,
    killed: usize,
    failed: usize,
    /// Dead temp dirs of killed processes that `fsck` reported.
    dead_temps: usize,
    /// Object roots not yet 0555 that `fsck` reported.
    open_roots: usize,
}

struct Shared {
    home: PathBuf,
    lib: PathBuf,
    work: PathBuf,
    uri: String,
    /// Source tree of each `(step, version)`.
    sources: BTreeMap<(String, String), PathBuf>,
    kills_sent: AtomicUsize,
    /// `delete`s started so far: after one, readers that do not set up may find no collection.
    deletes: AtomicUsize,
    /// Pids of the processes a kill was sent to (before it was sent).
    killed: Mutex<HashSet<u32>>,
    /// Every process started: pid -> its number and command line (for failure messages).
    started: Mutex<BTreeMap<u32, String>>,
    seq: AtomicUsize,
    counts: Mutex<BTreeMap<Op, Counts>>,
    failures: Mutex<Vec<String>>,
    /// Directories of killed activations that left a staging dir beside their destination,
    /// kept for the check at the end (at most [`KEPT_STAGING`]).
    killed_staging: Mutex<Vec<PathBuf>>,
    /// One per `(step, version)`: activations into its shared destination hold it shared while
    /// they run; the check of one that exited 0 holds it exclusively, so that no other
    /// activation replaces the tree while it is compared.
    shared_dests: BTreeMap<(String, String), RwLock<()>>,
}

/// At most this many directories of killed activations are kept for the staging check.
const KEPT_STAGING: usize = 64;

fn status_text(s: &ExitStatus) -> String {
    match s.signal() {
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("exit {}", s.code().unwrap_or(-1)),
    }
}

/// Checks that every problem of a `fsck --json` report is a documented crash state of a
/// process this test killed: a dead temp dir whose owner (its name ends with the owner's pid in
/// hex) is one of `killed`, or an object root not yet 0555 (a publisher killed between its
/// rename and its chmod; the pid is not recorded there). Returns how many of each.
fn only_crash_states(
    report: &serde_json::Value,
    killed: &HashSet<u32>,
) -> Result<(usize, usize), String> {
    let (mut dead, mut roots) = (0, 0);
    for p in report["problems"].as_array().into_iter().flatten() {
        let path = p["path"].as_str().unwrap_or_default();
        match p["kind"].as_str() {
            Some("dead-temp") if path.contains("/store-v1/tmp/") => {
                let owner = path
                    .len()
                    .checked_sub(8)
                    .and_then(|i| path.get(i..))
                    .and_then(|h| u32::from_str_radix(h, 16).ok());
                match owner {
                    Some(pid) if killed.contains(&pid) => dead += 1,
                    _ => {
                        return Err(format!(
                            "{path} is not the temp dir of a killed process (owner pid {owner:?})"
                        ));
                    }
                }
            }
            Some("bad-permissions") if is_object_root(path) => roots += 1,
            _ => return Err(format!("not a crash state: {p}")),
        }
    }
    Ok((dead, roots))
}

/// `…/store-v1/objects/<hh>/<id>`.
fn is_object_root(path: &str) -> bool {
    let parts: Vec<&str> = path.rsplitn(4, '/').collect();
    parts.len() == 4
        && parts[2] == "objects"
        && support::is_object_id(parts[0])
        && parts[0].starts_with(parts[1])
}

/// One operation: spawn, maybe kill, judge.
fn one_op(sh: &Shared, rng: &mut Rng) {
    let op = Op::pick(rng);
    let step = STEPS[rng.usize(..STEPS.len())];
    let (constraint, version) = match rng.u64(..3) {
        0 => ("1", VERSIONS[1]),
        n => (VERSIONS[n as usize - 1], VERSIONS[n as usize - 1]),
    };
    let seq = sh.seq.fetch_add(1, Ordering::SeqCst);
    // A third of the activations go into the destination shared by that step version's.
    let shared = op == Op::Activate && rng.u64(..3) == 0;
    let parent = if shared {
        sh.work.join(format!("shared/{step}-{version}"))
    } else {
        sh.work.join(format!("act/{seq}"))
    };
    let dest = parent.join("step");
    // Half the activations also copy the step.yml out (`-y`).
    let yml = (rng.u64(..2) == 0).then(|| parent.join("step.yml"));
    let uri = sh.uri.as_str();
    let args: Vec<String> = match op {
        Op::Activate => {
            let mut a: Vec<String> = ["activate", "-c", uri, "-i", step, "-v", constraint, "-p"]
                .map(String::from)
                .to_vec();
            a.push(dest.display().to_string());
            if let Some(y) = &yml {
                a.push("-y".into());
                a.push(y.display().to_string());
            }
            a
        }
        Op::Download => ["download", "-c", uri, "-i", step, "-v", constraint]
            .map(String::from)
            .to_vec(),
        Op::Update => ["update", "-c", uri].map(String::from).to_vec(),
        Op::Gc => vec!["gc".into()],
        Op::Fsck => ["fsck", "--json"].map(String::from).to_vec(),
        Op::FsckRepair => ["fsck", "--repair", "--json"].map(String::from).to_vec(),
        Op::Preload => {
            let mut a: Vec<String> = ["preload", "-c", uri, "--jobs", "2", "--json"]
                .map(String::from)
                .to_vec();
            if rng.u64(..2) == 0 {
                // The `bitrise steps preload` selection: every step's 1.1.0.
                a.extend(["--maintainer".into(), String::new()]);
            } else {
                a.push(format!("{step}@{constraint}"));
                a.push(format!("{}@1.0.0", STEPS[seq % STEPS.len()]));
            }
            a
        }
        Op::StepInfo => [
            "step-info",
            "--library",
            uri,
            "--id",
            step,
            "--version",
            constraint,
            "--format",
            "json",
        ]
        .map(String::from)
        .to_vec(),
        Op::StepList => ["step-list", "-c", uri, "-f", "json"]
            .map(String::from)
            .to_vec(),
        Op::ExportSpec => ["export-spec", "--steplib", uri, "--output", "-"]
            .map(String::from)
            .to_vec(),
        Op::Delete => ["delete", "-c", uri].map(String::from).to_vec(),
        Op::Setup => ["setup", "-c", uri].map(String::from).to_vec(),
        Op::Collections => ["collections", "--format", "json"]
            .map(String::from)
            .to_vec(),
    };
    // A fifth of the processes is killed, at a moment anywhere in their first 400 ms.
    let kill_after = (rng.u64(..5) == 0).then(|| Duration::from_millis(rng.u64(..400)));
    let durable = rng.u64(..4) == 0;
    let logs = sh.work.join("logs");
    let (out_path, err_path) = (
        logs.join(format!("{seq}.out")),
        logs.join(format!("{seq}.err")),
    );
    let mut cmd = Command::new(support::bin());
    cmd.args(&args);
    store_env(&mut cmd, &sh.home);
    if durable {
        cmd.env_remove("STEPMAN_NO_FSYNC");
    }
    cmd.stdout(Stdio::from(fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(fs::File::create(&err_path).unwrap()))
        .process_group(0);
    let shared_lock = shared.then(|| &sh.shared_dests[&(step.to_string(), version.to_string())]);
    let running_shared = shared_lock.map(|l| l.read().unwrap());
    let start = Instant::now();
    if op == Op::Delete {
        sh.deletes.fetch_add(1, Ordering::SeqCst);
    }
    let mut child = cmd.spawn().expect("spawn stepman");
    sh.started
        .lock()
        .unwrap()
        .insert(child.id(), format!("#{seq} {}", args.join(" ")));
    let mut sent_kill = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for stepman") {
            break st;
        }
        let elapsed = start.elapsed();
        if !sent_kill && kill_after.is_some_and(|k| elapsed >= k) {
            // The group is the child's pid; the child is not reaped yet, so the id is still ours.
            sh.killed.lock().unwrap().insert(child.id());
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            sh.kills_sent.fetch_add(1, Ordering::SeqCst);
            sent_kill = true;
        }
        if elapsed > HANG {
            let _ = child.kill();
            let _ = child.wait();
            sh.failures.lock().unwrap().push(format!(
                "#{seq} stepman {args:?} hung for {HANG:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            ));
            return;
        }
        thread::sleep(Duration::from_millis(2));
    };
    drop(running_shared);
    // A delete that started before this process ended may have come first: sampled now, not at
    // the start (a reader that starts before a delete and reads after it sees no collection).
    let deleted_before = sh.deletes.load(Ordering::SeqCst) > 0;
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let fail = |why: String| {
        sh.failures.lock().unwrap().push(format!(
            "#{seq} stepman {} ({}{}): {why}\nstderr:\n{stderr}",
            args.join(" "),
            status_text(&status),
            if durable { ", fsync on" } else { "" }
        ));
    };
    let mut counts = sh.counts.lock().unwrap();
    let c = counts.entry(op).or_default();
    // What a process left is removed once judged (failures keep theirs): a long run would
    // otherwise pile up thousands of trees.
    let cleanup = || {
        let _ = fs::remove_dir_all(sh.work.join(format!("act/{seq}")));
        let _ = fs::remove_file(&out_path);
        let _ = fs::remove_file(&err_path);
    };
    if status.signal() == Some(9) && sent_kill {
        c.killed += 1;
        // What a killed activation leaves in a shared destination's directory is reclaimed by
        // the next one into it, and checked at the end.
        if op == Op::Activate && !shared && !support::staging_entries(&parent).is_empty() {
            let mut kept = sh.killed_staging.lock().unwrap();
            if kept.len() < KEPT_STAGING {
                kept.push(parent);
                let _ = fs::remove_file(&out_path);
                let _ = fs::remove_file(&err_path);
                return;
            }
        }
        cleanup();
        return;
    }
    let verdict: Result<(usize, usize), String> = if status.success() {
        match op {
            Op::Activate => {
                // No other activation into a shared destination runs while this guard lives.
                let _quiet = shared_lock.map(|l| l.write().unwrap());
                let src = &sh.sources[&(step.to_string(), version.to_string())];
                let want_yml = sh.lib.join(format!("steps/{step}/{version}/step.yml"));
                diff_trees(src, &dest)
                    .map_err(|e| format!("activated tree differs from {step}@{version}: {e}"))
                    .and_then(|()| match &yml {
                        Some(y) if fs::read(y).ok() != fs::read(&want_yml).ok() => Err(format!(
                            "{} is not the step.yml of {step}@{version}",
                            y.display()
                        )),
                        _ => Ok((0, 0)),
                    })
            }
            Op::StepInfo => match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) if v["id"] == step && v["version"] == version => Ok((0, 0)),
                Ok(v) => Err(format!("step-info answered {} {}", v["id"], v["version"])),
                Err(e) => Err(format!("step-info printed no JSON ({e}): {stdout}")),
            },
            Op::StepList => match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) if v["steps"] == serde_json::json!(STEPS) => Ok((0, 0)),
                Ok(v) => Err(format!("step-list answered {}", v["steps"])),
                Err(e) => Err(format!("step-list printed no JSON ({e}): {stdout}")),
            },
            Op::Collections => match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) if v["data"][0]["uri"] == uri => Ok((0, 0)),
                // None left: `{"data":null}`, as the old tool prints it.
                Ok(v) if deleted_before && v["data"].is_null() => Ok((0, 0)),
                Ok(v) => Err(format!("collections answered {v}")),
                Err(e) => Err(format!("collections printed no JSON ({e}): {stdout}")),
            },
            Op::ExportSpec => match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v)
                    if STEPS.iter().all(|id| {
                        VERSIONS
                            .iter()
                            .all(|ver| v["steps"][id]["versions"][ver].is_object())
                    }) =>
                {
                    Ok((0, 0))
                }
                Ok(v) => Err(format!("export-spec answered steps {}", v["steps"])),
                Err(e) => Err(format!("export-spec printed no JSON ({e})")),
            },
            Op::Preload => match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) => {
                    let steps = v["steps"].as_array().cloned().unwrap_or_default();
                    let fine = |s: &serde_json::Value| {
                        matches!(s["status"].as_str(), Some("downloaded" | "cached"))
                    };
                    if !steps.is_empty() && steps.iter().all(fine) {
                        Ok((0, 0))
                    } else {
                        Err(format!("preload answered {}", v["steps"]))
                    }
                }
                Err(e) => Err(format!("preload printed no JSON ({e}): {stdout}")),
            },
            _ => Ok((0, 0)),
        }
    } else if matches!(op, Op::StepList | Op::ExportSpec)
        && deleted_before
        && stderr.contains("is not set up")
    {
        // A delete removed the collection these found (or set up) before they read it.
        Ok((0, 0))
    } else if matches!(op, Op::Fsck | Op::FsckRepair) && status.code() == Some(1) {
        match serde_json::from_str::<serde_json::Value>(&stdout) {
            Ok(v) => only_crash_states(&v, &sh.killed.lock().unwrap())
                .and_then(|found| {
                    let left: Vec<_> = v["problems"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["repaired"] != true)
                        .collect();
                    if op == Op::FsckRepair && !left.is_empty() {
                        Err(format!("fsck --repair left {left:?}"))
                    } else {
                        Ok(found)
                    }
                })
                .map_err(|e| {
                    format!(
                        "{e}; fsck found: {:#}; processes: {:?}",
                        v["problems"],
                        sh.started.lock().unwrap()
                    )
                }),
            Err(e) => Err(format!("fsck printed no JSON ({e})")),
        }
    } else {
        Err("a process that was not killed failed".into())
    };
    match verdict {
        Ok((dead, roots)) => {
            c.ok += 1;
            c.dead_temps += dead;
            c.open_roots += roots;
            cleanup();
        }
        Err(why) => {
            c.failed += 1;
            drop(counts);
            fail(why);
        }
    }
}

/// Rewrites the step-info files of the StepLib now and then (atomically: a rename), so that
/// updates publish new collection objects and gc collects the old ones.
fn mutator(lib: PathBuf, scratch: PathBuf, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        for id in STEPS {
            let tmp = scratch.join("step-info.yml.tmp");
            fs::write(&tmp, format!("maintainer: torture-{n}\n")).unwrap();
            fs::rename(&tmp, lib.join("steps").join(id).join("step-info.yml")).unwrap();
        }
        n += 1;
        thread::sleep(Duration::from_millis(250));
    }
    n
}

#[test]
fn torture() {
    let _alone = support::alone();
    let secs: u64 = std::env::var("STEPMAN_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("STEPMAN_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!(
        "torture: STEPMAN_TORTURE_SEED={seed} STEPMAN_TORTURE_SECS={secs}, {WORKERS} workers"
    );

    let t = TestDir::new();
    let work = t.path().to_path_buf();
    let home = work.join("home");
    fs::create_dir_all(work.join("logs")).unwrap();
    let server = Server::start();
    let lib = work.join("lib");
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/steps/", server.url()))]);
    let mut sources = BTreeMap::new();
    for (i, id) in STEPS.iter().enumerate() {
        for (j, v) in VERSIONS.iter().enumerate() {
            let src = work.join(format!("src/{id}-{v}"));
            make_tree(&src, 1000 + (i * 10 + j) as u64, 40);
            server.serve(
                &format!("/steps/{id}/{v}/step.zip"),
                support::zip_tree(&src),
                Mode::Full {
                    delay: Duration::from_millis(100),
                },
            );
            support::write_step(&lib, id, v, &support::step_yml(&format!("{id} {v}"), None));
            sources.insert((id.to_string(), v.to_string()), src);
        }
    }
    let uri = format!("file://{}", fs::canonicalize(&lib).unwrap().display());
    let sources_keys: Vec<(String, String)> = sources.keys().cloned().collect();
    run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
    // The route of the collection's names (a delete during the run may leave none at the end).
    let alias = {
        let out = run_ok(&mut stepman(&home, ["collections", "--format", "json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let spec = v["data"][0]["spec_path"].as_str().unwrap().to_string();
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(spec).unwrap()).unwrap();
        meta["alias"].as_str().unwrap().to_string()
    };

    let sh = Arc::new(Shared {
        home: home.clone(),
        lib: lib.clone(),
        work: work.clone(),
        uri,
        sources,
        kills_sent: AtomicUsize::new(0),
        deletes: AtomicUsize::new(0),
        killed: Mutex::new(HashSet::new()),
        started: Mutex::new(BTreeMap::new()),
        seq: AtomicUsize::new(0),
        counts: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(Vec::new()),
        killed_staging: Mutex::new(Vec::new()),
        shared_dests: sources_keys
            .into_iter()
            .map(|k| (k, RwLock::new(())))
            .collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let scratch = work.join("mutator");
    fs::create_dir_all(&scratch).unwrap();
    let m = {
        let (lib, stop) = (lib.clone(), Arc::clone(&stop));
        thread::spawn(move || mutator(lib, scratch, stop))
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let sh = Arc::clone(&sh);
            thread::spawn(move || {
                let mut rng =
                    Rng::with_seed(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while Instant::now() < deadline {
                    one_op(&sh, &mut rng);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    stop.store(true, Ordering::SeqCst);
    let mutations = m.join().expect("the mutator panicked");
    let ran = started.elapsed();

    let counts = sh.counts.lock().unwrap().clone();
    let failures = sh.failures.lock().unwrap().clone();
    let total: usize = counts.values().map(|c| c.ok + c.killed + c.failed).sum();
    eprintln!(
        "torture: {total} operations in {ran:.1?}, {} kills sent, {mutations} StepLib \
         mutations, {} failures (seed {seed})",
        sh.kills_sent.load(Ordering::SeqCst),
        failures.len()
    );
    for (op, c) in &counts {
        eprintln!(
            "torture:   {op:?}: {} ok, {} killed, {} failed{}",
            c.ok,
            c.killed,
            c.failed,
            if matches!(op, Op::Fsck | Op::FsckRepair) {
                format!(
                    " (reported {} dead temp dirs of killed processes, {} object roots not yet \
                     0555)",
                    c.dead_temps, c.open_roots
                )
            } else {
                String::new()
            }
        );
    }
    for f in &failures {
        eprintln!("torture: FAILURE {f}");
    }
    assert!(
        failures.is_empty(),
        "{} failures (seed {seed}); the first: {}",
        failures.len(),
        failures[0]
    );
    let activated = counts.get(&Op::Activate).map_or(0, |c| c.ok);
    assert!(activated > 0, "no activation succeeded: {counts:?}");

    // Afterwards: only crash states, then gc cleans them up.
    let f = fsck_json(&home, &[]);
    let left = only_crash_states(&f.report, &sh.killed.lock().unwrap());
    assert!(
        (f.code == 0 || f.code == 1) && left.is_ok(),
        "fsck after the torture (exit {}): {left:?}: {:#}\n{}",
        f.code,
        f.report["problems"],
        f.stderr
    );
    eprintln!("torture: fsck afterwards: (dead temp dirs, open object roots) = {left:?}");
    run_ok(&mut stepman(&home, ["gc"]));
    let tmp: Vec<_> = fs::read_dir(home.join("store-v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "tmp/ after gc: {tmp:?}");
    support::assert_fsck_clean(&home);
    // Every step name left exports its source.
    let mut exported = 0;
    let mut last_name: Option<String> = None;
    for ((id, v), src) in &sh.sources {
        let name = format!("{alias}/{id}/{v}");
        let r = support::output(&mut stepman(&home, ["store", "resolve", &name]));
        if r.status.code() == Some(1) {
            continue; // never downloaded (or only by killed processes)
        }
        let dest = work.join(format!("final/{id}-{v}"));
        let o = support::output(&mut support::export_cmd(&home, &name, &dest));
        assert!(
            o.status.success(),
            "export {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        support::assert_same_tree(src, &dest);
        exported += 1;
        last_name = Some(name);
    }
    eprintln!("torture: {exported} step names exported their source after gc");
    // Killed activations left their staging dirs (and lock files) beside their destinations;
    // the next export into the same directory reclaims every one of them.
    let mut kept = std::mem::take(&mut *sh.killed_staging.lock().unwrap());
    kept.extend(
        sh.shared_dests
            .keys()
            .map(|(id, v)| work.join(format!("shared/{id}-{v}")))
            .filter(|p| p.is_dir()),
    );
    let mut stale = 0;
    if let Some(name) = &last_name {
        for parent in &kept {
            let left = support::staging_entries(parent);
            stale += left.len();
            let again = parent.join("again");
            run_ok(&mut support::export_cmd(&home, name, &again));
            assert_eq!(
                support::staging_entries(parent),
                Vec::<String>::new(),
                "{}: was {left:?}",
                parent.display()
            );
        }
    }
    eprintln!(
        "torture: {stale} staging entries left by {} killed activations, all reclaimed by the \
         next export into the same directory",
        kept.len()
    );
    drop(server);
}
