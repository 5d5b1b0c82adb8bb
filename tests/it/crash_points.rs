//! Crash points ("a process can be killed at any instruction"; `store-format.md`
//! §10): the real binary is killed with SIGKILL at every chosen syscall of
//! - an ingest (`store import` of a tar.gz and of a directory, re-pointing an existing name:
//!   temp dir, writes, flushes, the publishing no-replace rename, the chmod of the object's root,
//!   the shard's fsync, the name's temp symlink, its rename over the old name and the fsync),
//! - the first import into an empty home, which creates the store (staging skeleton, format
//!   file, the no-replace rename of the skeleton into place) before its ingest,
//! - `gc` (sweep of dead temp dirs, making unnamed objects writable, moving them aside into its
//!   temp dir, pruning, deleting),
//! - `fsck --repair` (fixing modes, moving a corrupt object and a foreign entry aside into
//!   `quarantine/`, dropping the name that pointed at the corrupt object, sweeping).
//!
//! Kill points are enumerated, not guessed: each operation first runs once under
//! `strace -f` without a fault, and every call it makes of the traced syscalls (`openat` with
//! `O_CREAT`, `write`, `fsync`, `rename*`, `symlink*`, `unlink*`/`rmdir`, `mkdir*`, `*chmod*`,
//! `flock`) becomes a kill point: `strace -e inject=<syscall>:signal=SIGKILL:when=<N>` kills the
//! process on entering the N-th such call (strace counts per thread, so with the flush pool the
//! first thread to reach its N-th call dies; each `fsync` of a fixed path outside `tmp/`, the
//! object's shard and the name's directory, therefore also gets points of its own, counted on
//! that path alone with `strace -P`). Which flush thread takes which file changes from run to
//! run, so a point that only pool threads reached in the clean run (say, some thread's third
//! `fsync`) may not be reached by a killed run: such a run must exit as the clean one did and its
//! log must show that no thread made N calls; the point is then tried again on a fresh copy, up
//! to [`POOL_ATTEMPTS`] runs, and counted as "not reached" if none gets there. A point the main
//! thread reached must be killed on the first run. Where one syscall has more than [`MAX_PER_SYSCALL`] points,
//! an evenly spaced sample is taken, always with the first and the last (a line says so); with
//! the small trees used here no operation reaches that (the most is gc's 27 `unlinkat`s), so
//! every point is exercised. Every run must show `+++ killed by SIGKILL +++` in strace's log, so a test cannot
//! pass without its kill.
//!
//! Every kill starts from a fresh copy of one prepared store, and is followed by the checks:
//! `fsck --json` reports nothing but the documented crash states (dead temp dirs; an object root
//! still 0755 between a publish and its chmod, or between gc's chmod and its move); every name
//! that existed before still exports byte-identically to its source; the name being re-pointed
//! resolves to the old or the new object, complete; `gc` empties `tmp/` and leaves `fsck` clean;
//! and running the operation again succeeds with the right result. The totals per operation and
//! syscall are printed (`--nocapture`). Without `strace` the tests print why and pass.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use support::{
    TestDir, assert_fsck_clean, assert_same_tree, fsck_json, make_writable, object_ids, output,
    run_ok, stepman, store_root, tar_gz,
};

/// The syscalls traced, as an strace regex (names this architecture lacks match nothing).
const TRACED: &str = "/^(openat|creat|write|fsync|fdatasync|renameat2|renameat|rename|symlinkat|symlink|unlinkat|unlink|rmdir|mkdirat|mkdir|fchmodat|fchmod|chmod|flock)$";

/// At most this many kill points per syscall and operation (evenly spaced, first and last kept).
const MAX_PER_SYSCALL: usize = 32;

/// Runs tried for a flush-pool kill point before it counts as not reached (see [`KillPoint`]).
const POOL_ATTEMPTS: usize = 8;

/// A small tree: nested directories, an empty one, an executable and a symlink. Different
/// seeds give different trees (`three.txt` is the same in all of them).
fn small_tree(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("a/b")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("empty")).unwrap();
    fs::write(dir.join("a/one.txt"), format!("one {seed}\n")).unwrap();
    fs::write(dir.join("a/b/two.txt"), format!("two {seed}\n").repeat(300)).unwrap();
    fs::write(dir.join("three.txt"), "three\n").unwrap();
    let run = dir.join("bin/run.sh");
    fs::write(&run, format!("#!/bin/sh\necho {seed}\n")).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    symlink("a/one.txt", dir.join("link")).unwrap();
}

/// `cp -a from to`.
fn copy_home(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn remove_home(home: &Path) {
    make_writable(home);
    let _ = fs::remove_dir_all(home);
}

/// Where to kill: on entering the `n`-th call of `syscall` (per thread), counting only the
/// calls on `path` when it is given (`strace -P`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct KillPoint {
    syscall: String,
    n: usize,
    path: Option<String>,
    /// The main thread made that call in the clean run, so every run reaches it. Otherwise only
    /// flush-pool threads did, and whether one of them makes `n` such calls depends on which
    /// thread takes which job.
    main: bool,
}

impl std::fmt::Display for KillPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} #{}", self.syscall, self.n)?;
        if let Some(p) = &self.path {
            write!(f, " on {p}")?;
        }
        Ok(())
    }
}

/// `stepman <args>` under `strace -f` (log in `log`), with fsync on, optionally killed at `kill`.
fn under_strace(home: &Path, log: &Path, args: &[String], kill: Option<&KillPoint>) -> Output {
    let mut t = support::Traced::new(home, log)
        .follow()
        .trace(TRACED)
        .env_remove("STEPMAN_NO_FSYNC");
    match kill {
        // Paths of descriptors, so flushes can be told apart.
        None => t = t.opt(&["-y"]),
        Some(k) => {
            if let Some(p) = &k.path {
                t = t.on(Path::new(p));
            }
            t = t.inject(&format!("{}:signal=SIGKILL:when={}", k.syscall, k.n));
        }
    }
    output(&mut t.stepman(args))
}

/// The kill points of a clean run's log (taken with `-y`): `(syscall, N)` such that some
/// thread's N-th call of it is relevant (`openat` only with `O_CREAT`), sampled down to
/// [`MAX_PER_SYSCALL`]. Flushes run on a pool of threads, whose first calls would always be
/// killed first: so each `fsync` of a fixed path outside `tmp/` (the object's shard, the name's
/// directory) also gets its own points, counted on that path alone.
fn kill_points(log: &str, home: &Path) -> Vec<KillPoint> {
    let mut per_thread: BTreeMap<(String, String), usize> = BTreeMap::new();
    // syscall -> N -> whether the main thread made its N-th call.
    let mut points: BTreeMap<String, BTreeMap<usize, bool>> = BTreeMap::new();
    let mut fixed_per_thread: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut fixed: BTreeMap<String, BTreeMap<usize, bool>> = BTreeMap::new();
    let store = store_root(home).display().to_string();
    let tmp = format!("{store}/tmp/");
    let mut main_pid: Option<String> = None;
    for (pid, name, rest) in calls(log) {
        let main = main_pid.get_or_insert_with(|| pid.to_string()) == pid;
        let name = name.to_string();
        let n = per_thread
            .entry((pid.to_string(), name.clone()))
            .and_modify(|n| *n += 1)
            .or_insert(1);
        let relevant = match name.as_str() {
            "openat" => rest.contains("O_CREAT"),
            _ => true,
        };
        if relevant {
            *points
                .entry(name.clone())
                .or_default()
                .entry(*n)
                .or_default() |= main;
        }
        if name == "fsync"
            && let Some(p) = rest
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(p, _)| p.to_string())
            && p.starts_with(&store)
            && !p.starts_with(&tmp)
        {
            let n = fixed_per_thread
                .entry((pid.to_string(), p.clone()))
                .and_modify(|n| *n += 1)
                .or_insert(1);
            *fixed.entry(p).or_default().entry(*n).or_default() |= main;
        }
    }
    let mut out = Vec::new();
    for (sc, ns) in points {
        let main_hit: BTreeSet<usize> = ns.iter().filter(|(_, m)| **m).map(|(n, _)| *n).collect();
        let ns: Vec<usize> = ns.into_keys().collect();
        let chosen: BTreeSet<usize> = if ns.len() <= MAX_PER_SYSCALL {
            ns.iter().copied().collect()
        } else {
            eprintln!(
                "crash points: {sc}: sampled {MAX_PER_SYSCALL} of {} kill points",
                ns.len()
            );
            (0..MAX_PER_SYSCALL)
                .map(|i| ns[i * (ns.len() - 1) / (MAX_PER_SYSCALL - 1)])
                .collect()
        };
        out.extend(chosen.into_iter().map(|n| KillPoint {
            syscall: sc.clone(),
            n,
            path: None,
            main: main_hit.contains(&n),
        }));
    }
    for (p, ns) in fixed {
        out.extend(ns.into_iter().map(|(n, main)| KillPoint {
            syscall: "fsync".into(),
            n,
            path: Some(p.clone()),
            main,
        }));
    }
    out
}

/// What fsck reported, as `(kind, path relative to the home)`.
fn problems(home: &Path) -> BTreeSet<(String, String)> {
    let f = fsck_json(home, &[]);
    assert!(
        f.code == 0 || f.code == 1,
        "fsck could not run (exit {}): {}",
        f.code,
        f.stderr
    );
    f.problems()
        .iter()
        .map(|p| {
            let path = p["path"].as_str().unwrap_or_default();
            let rel = Path::new(path)
                .strip_prefix(home)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| path.to_string());
            (p["kind"].as_str().unwrap_or_default().to_string(), rel)
        })
        .collect()
}

/// True for `store-v1/objects/<hh>/<id>` (an object's root directory).
fn is_object_root(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() == 4
        && parts[..2] == ["store-v1", "objects"]
        && support::is_object_id(parts[3])
        && parts[3].starts_with(parts[2])
}

/// Panics unless every problem is a documented crash state: a dead temp dir, or (when
/// `root_modes`) an object root whose mode is not yet (or no longer) 0555. Returns how many of
/// each were seen.
fn only_crash_states(home: &Path, root_modes: bool, what: &str) -> (usize, usize) {
    let (mut dead, mut modes) = (0, 0);
    for (kind, rel) in problems(home) {
        match kind.as_str() {
            "dead-temp" if rel.starts_with("store-v1/tmp/") => dead += 1,
            "bad-permissions" if root_modes && is_object_root(&rel) => modes += 1,
            _ => panic!("{what}: fsck found {kind} {rel}, not a documented crash state"),
        }
    }
    (dead, modes)
}

/// Entries of `tmp/`.
fn temp_entries(home: &Path) -> Vec<String> {
    fs::read_dir(store_root(home).join("tmp"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `gc`, then: `tmp/` empty and fsck clean.
fn gc_and_clean(home: &Path, what: &str) -> String {
    let out = run_ok(&mut stepman(home, ["gc"]));
    assert!(
        temp_entries(home).is_empty(),
        "{what}: tmp/ after gc: {:?}",
        temp_entries(home)
    );
    assert_fsck_clean(home);
    out
}

/// Resolves `name`, exports it, and checks the copy against the source of the object it points
/// at, which must be one of `choices` (`(id, source tree)`). Returns the index of that choice.
fn check_name(
    home: &Path,
    scratch: &Path,
    name: &str,
    choices: &[(&String, &PathBuf)],
    what: &str,
) -> usize {
    let o = output(&mut stepman(home, ["store", "resolve", name]));
    assert!(
        o.status.success(),
        "{what}: {name} does not resolve: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let id = Path::new(&dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(i) = choices.iter().position(|(c, _)| **c == id) else {
        panic!("{what}: {name} points at {id}, none of {choices:?}");
    };
    let dest = scratch.join("export");
    let _ = fs::remove_dir_all(&dest);
    let o = output(&mut support::export_cmd(home, name, &dest));
    assert!(
        o.status.success(),
        "{what}: export {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_tree(choices[i].1, &dest);
    fs::remove_dir_all(&dest).unwrap();
    i
}

fn assert_unbound(home: &Path, name: &str, what: &str) {
    let o = output(&mut stepman(home, ["store", "resolve", name]));
    assert_eq!(o.status.code(), Some(1), "{what}: {name} is still bound");
}

/// Kill points exercised, per syscall, and flush-pool points no run reached.
#[derive(Debug, Default)]
struct Tally(BTreeMap<String, usize>);

/// The tally's key for flush-pool points that no run reached.
const NOT_REACHED: &str = "not reached (flush pool)";

impl Tally {
    /// Kill points exercised (a kill happened and was checked).
    fn total(&self) -> usize {
        self.0
            .iter()
            .filter(|(k, _)| *k != NOT_REACHED)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Traces `args` once on a copy of `template`, then kills a fresh copy at every kill point and
/// hands the killed home to `check` (with a scratch dir, and a label for messages).
fn each_kill_point(
    op: &str,
    work: &Path,
    template: &Path,
    args: &[String],
    clean_codes: &[i32],
    mut check: impl FnMut(&Path, &Path, &str),
) -> Tally {
    let start = Instant::now();
    let clean = work.join("clean-home");
    copy_home(template, &clean);
    let log = work.join("clean.log");
    let o = under_strace(&clean, &log, args, None);
    assert!(
        o.status.code().is_some_and(|c| clean_codes.contains(&c)),
        "{op}: the run without a fault failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let points = kill_points(&fs::read_to_string(&log).unwrap(), &clean);
    remove_home(&clean);
    assert!(points.len() > 5, "{op}: only {points:?}");
    let scratch = work.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let mut tally = Tally::default();
    'points: for k in &points {
        let what = format!("{op}, killed at {k}");
        let home = work.join("killed-home");
        let log = work.join("kill.log");
        // The fixed paths were the clean run's: the same in every copy of the template.
        let k = KillPoint {
            path: k
                .path
                .as_ref()
                .map(|p| p.replacen(&clean.display().to_string(), &home.display().to_string(), 1)),
            ..k.clone()
        };
        let mut attempt = 1;
        loop {
            copy_home(template, &home);
            let o = under_strace(&home, &log, args, Some(&k));
            let l = fs::read_to_string(&log).unwrap();
            if l.contains("+++ killed by SIGKILL +++") && !o.status.success() {
                break;
            }
            // Not killed: that is only allowed when the point belongs to the flush pool and
            // this run's log proves that no thread made `n` such calls (the jobs were spread
            // differently); then the point is tried again on a fresh copy.
            let most = most_calls_per_thread(&l, &k.syscall);
            assert!(
                !k.main && most < k.n && o.status.code().is_some_and(|c| clean_codes.contains(&c)),
                "{what}: the kill never happened ({}, most calls by one thread: {most}); \
                 strace log:\n{l}",
                o.status
            );
            remove_home(&home);
            if attempt == POOL_ATTEMPTS {
                eprintln!(
                    "crash points: {what}: no flush thread made {} calls in {POOL_ATTEMPTS} runs",
                    k.n
                );
                *tally.0.entry(NOT_REACHED.into()).or_default() += 1;
                continue 'points;
            }
            attempt += 1;
        }
        check(&home, &scratch, &what);
        remove_home(&home);
        let key = if k.path.is_some() {
            format!("{} (path)", k.syscall)
        } else {
            k.syscall.clone()
        };
        *tally.0.entry(key).or_default() += 1;
    }
    eprintln!(
        "crash points: {op}: {} kill points in {:.1?}: {:?}",
        tally.total(),
        start.elapsed(),
        tally.0
    );
    tally
}

/// The most calls of `syscall` made by one thread in an strace log.
fn most_calls_per_thread(log: &str, syscall: &str) -> usize {
    let mut per_thread: BTreeMap<&str, usize> = BTreeMap::new();
    for (pid, _, _) in calls(log).filter(|(_, name, _)| *name == syscall) {
        *per_thread.entry(pid).or_default() += 1;
    }
    per_thread.into_values().max().unwrap_or(0)
}

/// The syscall entries of an `strace -f` log, as `(pid, syscall, the line from the syscall's
/// name on)`; other lines ("<... resumed>", "+++ exited", "--- SIG...") are skipped.
fn calls(log: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    log.lines().filter_map(|line| {
        let (pid, rest) = line.split_once(char::is_whitespace)?;
        let rest = rest.trim_start();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (len > 0 && rest[len..].starts_with('(')).then(|| (pid, &rest[..len], rest))
    })
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// An import re-pointing `steps/tree/1` from an old object to a new one, killed everywhere.
fn import_crash_points(test: &str, archive: bool) {
    if !support::strace_usable(test) {
        return;
    }
    let t = TestDir::new();
    let w = t.path();
    let (seed_src, old_src, new_src) = (w.join("seed-src"), w.join("old-src"), w.join("new-src"));
    small_tree(&seed_src, 1);
    small_tree(&old_src, 2);
    small_tree(&new_src, 3);
    let template = w.join("template");
    let seed_id = support::import(&template, &seed_src, Some("seed/tree/1"));
    let old_id = support::import(&template, &old_src, Some("steps/tree/1"));
    let new_id = support::import(&w.join("ref-home"), &new_src, None);
    let input = if archive {
        let p = w.join("new.tar.gz");
        tar_gz(&new_src, &p);
        p
    } else {
        new_src.clone()
    };
    let args: Vec<String> = vec![
        "store".into(),
        "import".into(),
        s(&input),
        "--name".into(),
        "steps/tree/1".into(),
    ];
    let mut before: Vec<String> = vec![seed_id.clone(), old_id.clone()];
    before.sort();
    let (mut old_seen, mut new_seen, mut dead_seen, mut modes_seen) = (0, 0, 0, 0);
    let tally = each_kill_point(test, w, &template, &args, &[0], |home, scratch, what| {
        let (dead, modes) = only_crash_states(home, true, what);
        dead_seen += usize::from(dead > 0);
        modes_seen += usize::from(modes > 0);
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &seed_src)], what);
        let which = check_name(
            home,
            scratch,
            "steps/tree/1",
            &[(&old_id, &old_src), (&new_id, &new_src)],
            what,
        );
        if which == 0 {
            old_seen += 1;
        } else {
            new_seen += 1;
        }
        for id in object_ids(home) {
            assert!(
                before.contains(&id) || id == new_id,
                "{what}: unexpected object {id}"
            );
        }
        // gc sweeps the dead ingest, and takes the new object if it never got its name.
        gc_and_clean(home, what);
        let mut want = before.clone();
        if which == 1 {
            want = vec![seed_id.clone(), new_id.clone()];
            want.sort();
        }
        // The old object stays until gc: it lost its name only if the name moved on.
        if which == 1 {
            assert!(
                !object_ids(home).contains(&old_id),
                "{what}: gc kept {old_id}"
            );
        }
        assert_eq!(object_ids(home), want, "{what}: objects after gc");
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &seed_src)], what);
        // The same import again: the new object, named.
        let id = run_ok(&mut stepman(home, &args));
        assert_eq!(id, new_id, "{what}: the re-run imported something else");
        check_name(home, scratch, "steps/tree/1", &[(&new_id, &new_src)], what);
        assert!(
            temp_entries(home).is_empty(),
            "{what}: {:?}",
            temp_entries(home)
        );
        assert_fsck_clean(home);
    });
    eprintln!(
        "crash points: {test}: after the kill the name held the old object {old_seen} times, \
         the new one {new_seen} times; {dead_seen} kills left a dead temp dir, {modes_seen} an \
         object root not yet 0555; {} kill points",
        tally.total()
    );
    assert!(
        old_seen > 0 && new_seen > 0,
        "kills before and after the name swap"
    );
    for sc in [
        "renameat2",
        "rename",
        "symlink",
        "fsync",
        "chmod",
        "mkdir",
        "flock",
    ] {
        assert!(
            tally.0.contains_key(sc),
            "{test}: no kill at {sc}: {:?}",
            tally.0
        );
    }
}

#[test]
fn import_of_a_tar_gz_killed_at_every_step() {
    import_crash_points("import_of_a_tar_gz_killed_at_every_step", true);
}

#[test]
fn import_of_a_directory_killed_at_every_step() {
    import_crash_points("import_of_a_directory_killed_at_every_step", false);
}

/// A dead temp dir without its lock file, and one with a lock file nobody holds.
fn plant_dead_temps(home: &Path) {
    let tmp = store_root(home).join("tmp");
    let a = tmp.join("ingest-00000000deadbeef00000001");
    fs::create_dir_all(a.join("tree/sub")).unwrap();
    fs::write(a.join("tree/sub/f"), "partial").unwrap();
    let b = tmp.join("bind-00000000deadbeef00000002");
    fs::create_dir_all(&b).unwrap();
    symlink("../../../objects/00/00", b.join("name")).unwrap();
    fs::write(tmp.join("bind-00000000deadbeef00000002.lock"), "").unwrap();
}

#[test]
fn gc_killed_at_every_step() {
    let test = "gc_killed_at_every_step";
    if !support::strace_usable(test) {
        return;
    }
    let t = TestDir::new();
    let w = t.path();
    let srcs: Vec<PathBuf> = (1..=4).map(|i| w.join(format!("src-{i}"))).collect();
    for (i, src) in srcs.iter().enumerate() {
        small_tree(src, 10 + i as u64);
    }
    let template = w.join("template");
    let seed_id = support::import(&template, &srcs[0], Some("seed/tree/1"));
    let kept_id = support::import(&template, &srcs[1], Some("steps/tree/1"));
    let g1 = support::import(&template, &srcs[2], None);
    let g2 = support::import(&template, &srcs[3], None);
    plant_dead_temps(&template);
    let mut named = vec![seed_id.clone(), kept_id.clone()];
    named.sort();
    let all: BTreeSet<String> = [&seed_id, &kept_id, &g1, &g2]
        .into_iter()
        .cloned()
        .collect();
    let args: Vec<String> = vec!["gc".into()];
    let mut removed_by_rerun = BTreeMap::<usize, usize>::new();
    let mut modes_seen = 0;
    let tally = each_kill_point(test, w, &template, &args, &[0], |home, scratch, what| {
        // An object root left 0755: killed between gc's chmod and its move (store-format §10).
        let (_, modes) = only_crash_states(home, true, what);
        modes_seen += usize::from(modes > 0);
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &srcs[0])], what);
        check_name(home, scratch, "steps/tree/1", &[(&kept_id, &srcs[1])], what);
        let present = object_ids(home);
        for id in &present {
            assert!(all.contains(id), "{what}: unexpected object {id}");
        }
        for id in &named {
            assert!(present.contains(id), "{what}: named object {id} gone");
        }
        // gc again: removes whatever garbage is left, and empties tmp/.
        let out = gc_and_clean(home, what);
        let removed: Vec<&str> = out.lines().collect();
        for r in &removed {
            assert!(*r == g1 || *r == g2, "{what}: gc removed {r}");
        }
        *removed_by_rerun.entry(removed.len()).or_default() += 1;
        assert_eq!(object_ids(home), named, "{what}: objects after gc");
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &srcs[0])], what);
        check_name(home, scratch, "steps/tree/1", &[(&kept_id, &srcs[1])], what);
    });
    eprintln!(
        "crash points: {test}: garbage objects left for the re-run (count -> kills): \
         {removed_by_rerun:?}; {modes_seen} kills left an unnamed object root writable; {} kill \
         points",
        tally.total()
    );
    for sc in ["rename", "chmod", "unlinkat", "flock"] {
        assert!(
            tally.0.contains_key(sc),
            "{test}: no kill at {sc}: {:?}",
            tally.0
        );
    }
}

#[test]
fn fsck_repair_killed_at_every_step() {
    let test = "fsck_repair_killed_at_every_step";
    if !support::strace_usable(test) {
        return;
    }
    let t = TestDir::new();
    let w = t.path();
    let srcs: Vec<PathBuf> = (1..=3).map(|i| w.join(format!("src-{i}"))).collect();
    for (i, src) in srcs.iter().enumerate() {
        small_tree(src, 20 + i as u64);
    }
    let template = w.join("template");
    let seed_id = support::import(&template, &srcs[0], Some("seed/tree/1"));
    let perm_id = support::import(&template, &srcs[1], Some("steps/tree/1"));
    let bad_id = support::import(&template, &srcs[2], Some("bad/tree/1"));
    let objects = store_root(&template).join("objects");
    // Damage: a file of one object loses its read-only mode (content intact), a file of another
    // one changes content; a stray file sits in a shard; a dead temp dir is left.
    let loose = objects.join(&perm_id[..2]).join(&perm_id).join("three.txt");
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let bad_dir = objects.join(&bad_id[..2]).join(&bad_id);
    let bad_file = bad_dir.join("a/one.txt");
    fs::set_permissions(&bad_file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&bad_file, "tampered\n").unwrap();
    fs::set_permissions(&bad_file, fs::Permissions::from_mode(0o444)).unwrap();
    fs::write(objects.join(&seed_id[..2]).join("stray-file"), "stray").unwrap();
    plant_dead_temps(&template);
    let original = problems(&template);
    let kinds: BTreeSet<&str> = original.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "bad-permissions",
            "corrupt-object",
            "dangling-name",
            "dead-temp",
            "foreign-entry"
        ]
        .into_iter()
        .collect(),
        "the prepared damage: {original:?}"
    );
    let args: Vec<String> = vec!["fsck".into(), "--repair".into()];
    let mut left_for_rerun = BTreeMap::<usize, usize>::new();
    // Exit 1: problems were found (and repaired, which the clean run's checks below prove).
    let tally = each_kill_point(test, w, &template, &args, &[1], |home, scratch, what| {
        // Only what was wrong before may still be wrong; nothing new.
        let now = problems(home);
        assert!(
            now.is_subset(&original),
            "{what}: new problems: {:?}",
            now.difference(&original).collect::<Vec<_>>()
        );
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &srcs[0])], what);
        check_name(home, scratch, "steps/tree/1", &[(&perm_id, &srcs[1])], what);
        // Repair again: everything it finds it repairs, and then fsck is clean.
        let f = fsck_json(home, &["--repair"]);
        assert!(f.code == 0 || f.code == 1, "{what}: repair: {}", f.stderr);
        assert!(
            f.problems().iter().all(|p| p["repaired"] == true),
            "{what}: left unrepaired: {:#?}",
            f.problems()
        );
        *left_for_rerun.entry(f.problems().len()).or_default() += 1;
        assert_fsck_clean(home);
        let q: Vec<String> = fs::read_dir(store_root(home).join("quarantine"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            q.iter().filter(|n| n.starts_with(&bad_id)).count(),
            1,
            "{what}: quarantine: {q:?}"
        );
        assert_eq!(
            q.iter().filter(|n| n.starts_with("stray-file")).count(),
            1,
            "{what}: quarantine: {q:?}"
        );
        assert_eq!(q.len(), 2, "{what}: quarantine: {q:?}");
        assert_unbound(home, "bad/tree/1", what);
        gc_and_clean(home, what);
        let mut want = vec![seed_id.clone(), perm_id.clone()];
        want.sort();
        assert_eq!(object_ids(home), want, "{what}: objects");
        check_name(home, scratch, "seed/tree/1", &[(&seed_id, &srcs[0])], what);
        check_name(home, scratch, "steps/tree/1", &[(&perm_id, &srcs[1])], what);
    });
    eprintln!(
        "crash points: {test}: problems left for the second repair (count -> kills): \
         {left_for_rerun:?}; {} kill points",
        tally.total()
    );
    for sc in ["rename", "chmod", "unlink", "flock"] {
        assert!(
            tally.0.contains_key(sc),
            "{test}: no kill at {sc}: {:?}",
            tally.0
        );
    }
}

#[test]
fn first_import_creating_the_store_killed_at_every_step() {
    let test = "first_import_creating_the_store_killed_at_every_step";
    if !support::strace_usable(test) {
        return;
    }
    let t = TestDir::new();
    let w = t.path();
    let src = w.join("src");
    small_tree(&src, 7);
    let want = support::import(&w.join("ref-home"), &src, None);
    // An empty home: the import creates the store first (store-format §2), then ingests.
    let template = w.join("template");
    fs::create_dir(&template).unwrap();
    let args: Vec<String> = vec![
        "store".into(),
        "import".into(),
        s(&src),
        "--name".into(),
        "steps/tree/1".into(),
    ];
    let (mut no_store, mut bound) = (0, 0);
    let tally = each_kill_point(test, w, &template, &args, &[0], |home, scratch, what| {
        let root = store_root(home);
        if root.exists() {
            // A store that exists is complete.
            for d in ["objects", "names", "tmp", "locks", "locks/names"] {
                assert!(root.join(d).is_dir(), "{what}: store without {d}/");
            }
            for f in ["locks/gc.lock", "locks/gc-intent.lock"] {
                assert!(root.join(f).is_file(), "{what}: store without {f}");
            }
            let format = fs::read_to_string(root.join("format")).unwrap_or_default();
            assert!(
                format.starts_with("stepman-store 1.") && format.ends_with('\n'),
                "{what}: format file {format:?}"
            );
            only_crash_states(home, true, what);
            let o = output(&mut stepman(home, ["store", "resolve", "steps/tree/1"]));
            if o.status.success() {
                check_name(home, scratch, "steps/tree/1", &[(&want, &src)], what);
                bound += 1;
            } else {
                assert_eq!(o.status.code(), Some(1), "{what}: resolve failed");
            }
        } else {
            no_store += 1;
        }
        // Nothing else in the home: the store, or the staging dirs of killed creations.
        for e in fs::read_dir(home).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                n == "store-v1" || n.starts_with(".store-v1-init-"),
                "{what}: {n} in the home"
            );
        }
        let id = run_ok(&mut stepman(home, &args));
        assert_eq!(id, want, "{what}: the re-run imported something else");
        check_name(home, scratch, "steps/tree/1", &[(&want, &src)], what);
        gc_and_clean(home, what);
    });
    eprintln!(
        "crash points: {test}: {no_store} kills left no store, {bound} a store with the name \
         bound; {} kill points",
        tally.total()
    );
    assert!(
        no_store > 0 && bound > 0,
        "kills before the store and after the bind"
    );
}
