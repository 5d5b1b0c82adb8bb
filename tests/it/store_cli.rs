//! The plumbing commands' contracts: output, exit codes, destinations, format versions, and
//! coexistence with the old tool's files.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::support;

fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/a.txt"), "a").unwrap();
    fs::write(dir.join("b.txt"), "b").unwrap();
}

#[test]
fn import_resolve_export_contracts() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let src = t.path().join("src");
    tree(&src);
    let o = support::run(
        &home,
        &["store", "import", src.to_str().unwrap(), "--name", "r/s/1"],
    );
    assert!(o.status.success());
    let id = String::from_utf8(o.stdout).unwrap();
    assert_eq!(id.trim().len(), 64, "stdout is the object id alone: {id:?}");
    assert_eq!(id.lines().count(), 1);

    let o = support::run(&home, &["store", "resolve", "r/s/1"]);
    let dir = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success() && dir.trim().ends_with(id.trim()),
        "{dir}"
    );
    assert!(Path::new(dir.trim()).join("sub/a.txt").is_file());

    let o = support::run(&home, &["store", "resolve", "r/s/2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("r/s/2"),
        "the message names the name"
    );

    let o = support::run(&home, &["store", "resolve", "../etc/passwd"]);
    assert_eq!(o.status.code(), Some(2), "an invalid name is a usage error");

    // Export: absent and empty destinations work; a non-empty one is an error and is untouched.
    let absent = t.path().join("out/absent");
    assert!(
        support::run(
            &home,
            &["store", "export", "r/s/1", absent.to_str().unwrap()]
        )
        .status
        .success()
    );
    assert_eq!(fs::read(absent.join("sub/a.txt")).unwrap(), b"a");
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(
        support::run(
            &home,
            &["store", "export", "r/s/1", empty.to_str().unwrap()]
        )
        .status
        .success()
    );
    assert_eq!(fs::read(empty.join("b.txt")).unwrap(), b"b");
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("mine"), "keep").unwrap();
    let o = support::run(&home, &["store", "export", "r/s/1", full.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
    assert_eq!(fs::read(full.join("mine")).unwrap(), b"keep");
    // No staging directory is left beside any destination.
    for d in [t.path(), &t.path().join("out")] {
        assert_eq!(
            support::staging_entries(d),
            Vec::<String>::new(),
            "leftovers"
        );
    }
    // The copy is the user's: writable, and not the store's inode.
    let obj_file = Path::new(dir.trim()).join("b.txt");
    assert_ne!(
        fs::metadata(absent.join("b.txt")).unwrap().ino(),
        fs::metadata(&obj_file).unwrap().ino()
    );
    fs::write(absent.join("b.txt"), "changed").unwrap();
    assert_eq!(fs::read(&obj_file).unwrap(), b"b");
    assert!(support::run(&home, &["fsck"]).status.success());
}

#[test]
fn a_newer_store_format_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let src = t.path().join("src");
    tree(&src);
    assert!(
        support::run(
            &home,
            &["store", "import", src.to_str().unwrap(), "--name", "r/s/1"]
        )
        .status
        .success()
    );

    fs::create_dir(home.join("store-v2")).unwrap();
    let o = support::run(&home, &["store", "resolve", "r/s/1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("newer stepman"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::remove_dir(home.join("store-v2")).unwrap();

    let format = home.join("store-v1/format");
    fs::write(&format, "stepman-store 2.0\n").unwrap();
    let o = support::run(&home, &["store", "import", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("format 2.0"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        support::run(&home, &["fsck"]).status.code(),
        Some(2),
        "fsck could not run"
    );

    fs::write(&format, "stepman-store 1.7\n").unwrap();
    assert!(
        support::run(&home, &["store", "resolve", "r/s/1"])
            .status
            .success(),
        "a newer minor is compatible"
    );
}

#[test]
fn the_old_tools_files_are_never_read_or_touched() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    fs::create_dir_all(home.join("step_collections/1234/collection")).unwrap();
    fs::write(
        home.join("routing.json"),
        r#"{"https://example.invalid/lib.git":"1234"}"#,
    )
    .unwrap();
    fs::write(
        home.join("step_collections/1234/collection/spec.json"),
        "not json at all",
    )
    .unwrap();
    let snapshot = |home: &Path| -> Vec<(String, u64, i64, i64)> {
        let mut v = Vec::new();
        for p in [
            "routing.json",
            "step_collections",
            "step_collections/1234/collection/spec.json",
        ] {
            let m = fs::metadata(home.join(p)).unwrap();
            v.push((p.to_string(), m.len(), m.mtime(), m.mtime_nsec()));
        }
        v
    };
    let before = snapshot(&home);
    let src = t.path().join("src");
    tree(&src);
    assert!(
        support::run(&home, &["store", "import", src.to_str().unwrap()])
            .status
            .success()
    );
    assert!(support::run(&home, &["gc"]).status.success());
    assert!(support::run(&home, &["fsck", "--repair"]).status.success());
    assert!(support::run(&home, &["collections"]).status.success());
    assert_eq!(snapshot(&home), before);
    assert_eq!(
        fs::read_to_string(home.join("routing.json")).unwrap(),
        r#"{"https://example.invalid/lib.git":"1234"}"#
    );
}

/// An export killed half-way leaves its staging dir beside the destination; the next export into
/// the same directory reclaims it (its owner's lock is free), while a live export's staging dir,
/// whose lock is held, is left alone. (`store-format.md` §10, "export".)
#[test]
fn a_killed_export_is_reclaimed_by_the_next_export_into_the_same_directory() {
    if !support::strace_usable(
        "a_killed_export_is_reclaimed_by_the_next_export_into_the_same_directory",
    ) {
        return;
    }
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let src = t.path().join("src");
    support::make_tree(&src, 7, 60);
    support::import(&home, &src, Some("r/s/1"));
    let parent = t.path().join("work");
    fs::create_dir(&parent).unwrap();
    let traced = |dest: &Path, kill: Option<usize>| -> Output {
        let mut t = support::Traced::new(&home, Path::new("/dev/null"))
            .follow()
            .trace("mkdirat");
        if let Some(n) = kill {
            t = t.inject(&format!("mkdirat:signal=SIGKILL:when={n}"));
        }
        let args = [
            OsStr::new("store"),
            OsStr::new("export"),
            OsStr::new("r/s/1"),
        ];
        support::output(&mut t.stepman(args.into_iter().chain([dest.as_os_str()])))
    };
    // The copy makes its directories with `mkdirat` (relative to their parent's descriptor), and
    // the last one of a clean export is a directory inside the copy: count them.
    let probe = t.path().join("probe");
    fs::create_dir(&probe).unwrap();
    let summary_log = t.path().join("summary.log");
    let dest = probe.join("dest");
    let args = [
        OsStr::new("store"),
        OsStr::new("export"),
        OsStr::new("r/s/1"),
    ];
    let mut c = support::Traced::new(&home, &summary_log)
        .follow()
        .opt(&["-c", "-U", "name,calls"])
        .trace("mkdirat")
        .stepman(args.into_iter().chain([dest.as_os_str()]));
    let o = support::output(&mut c);
    assert!(o.status.success(), "{}", err_text(&o));
    let summary = fs::read_to_string(&summary_log).unwrap();
    let mkdirs: usize = summary
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("mkdirat")).then(|| w.next().and_then(|n| n.parse().ok()))?
        })
        .unwrap_or_else(|| panic!("no mkdirat count in {summary}"));
    assert!(mkdirs >= 4, "{summary}");

    // Killed inside the copy (strace counts each thread's calls, and the copy makes its
    // directories on several threads: the second `mkdirat` of one of them): a staging dir (and
    // its lock file) stays behind.
    let killed = traced(&parent.join("dest1"), Some(2));
    assert!(!killed.status.success(), "the kill happened");
    assert!(!parent.join("dest1").exists());
    let left = support::staging_entries(&parent);
    assert_eq!(left.len(), 2, "a staging dir and its lock: {left:?}");
    assert!(
        left.iter().all(|n| n.starts_with(".dest1.stepman-")),
        "{left:?}"
    );

    // A live export's staging dir (its lock held by another process) beside it.
    let live = parent.join(".other.stepman-00000000000000aa");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("partial"), "in progress").unwrap();
    let live_lock = parent.join(".other.stepman-00000000000000aa.lock");
    // The shell takes the lock on its descriptor 9 and becomes `sleep`, which keeps it: killing
    // it releases the lock.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 9>>\"$1\" && flock 9 && exec sleep 600")
        .arg("sh")
        .arg(&live_lock)
        .spawn()
        .unwrap();
    // Wait until the holder has the lock: `flock -n` then fails (the holder waits for the lock,
    // so these probes only delay it).
    while Command::new("flock")
        .arg("-n")
        .arg(&live_lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(holder.try_wait().unwrap().is_none(), "flock holder exited");
        std::thread::yield_now();
    }

    let o = traced(&parent.join("dest2"), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    support::assert_same_tree(&src, &parent.join("dest2"));
    assert_eq!(
        support::staging_entries(&parent),
        vec![
            ".other.stepman-00000000000000aa".to_string(),
            ".other.stepman-00000000000000aa.lock".to_string()
        ],
        "the dead staging dir is gone, the live one kept"
    );
    assert_eq!(fs::read(live.join("partial")).unwrap(), b"in progress");

    // Once its owner is gone, the next export reclaims it too.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = support::output(&mut support::export_cmd(
        &home,
        "r/s/1",
        &parent.join("dest3"),
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(support::staging_entries(&parent), Vec::<String>::new());
    support::assert_fsck_clean(&home);
}

/// An export onto another file system (where `copy_file_range` is refused and the copy goes
/// through user space) gives the same tree as one onto the store's own file system.
#[test]
fn export_onto_another_file_system_gives_the_same_tree() {
    use std::os::unix::fs::MetadataExt;
    let t = support::TestDir::new();
    let shm = Path::new("/dev/shm");
    let other = match fs::metadata(shm) {
        Ok(m) if m.dev() != fs::metadata(t.path()).unwrap().dev() => {
            tempfile::tempdir_in(shm).unwrap()
        }
        _ => {
            eprintln!(
                "skipping: no /dev/shm on another file system than {}",
                t.path().display()
            );
            return;
        }
    };
    let home = t.path().join("home");
    let src = t.path().join("src");
    support::make_tree(&src, 11, 120);
    support::import(&home, &src, Some("r/s/1"));
    for dest in [t.path().join("same-fs"), other.path().join("other-fs")] {
        support::run_ok(&mut support::export_cmd(&home, "r/s/1", &dest));
        support::assert_same_tree(&src, &dest);
    }
}

/// The subcommands listed by `help` (and, under `store`, its own), as argument lists.
fn subcommands(prefix: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("--help");
    let o = Command::new(support::bin()).args(&args).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let list = text
        .split("Commands:\n")
        .nth(1)
        .map(|r| r.split("\n\n").next().unwrap_or_default().to_string())
        .unwrap_or_default();
    list.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(|c| {
            let mut v: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
            v.push(c.to_string());
            v
        })
        .collect()
}

/// Every `--help` (of the program, of each subcommand, and of each `store` subcommand) ends
/// with an example of its own command (issue 10: the subcommands' examples were hidden).
#[test]
fn every_help_ends_with_an_example() {
    let mut commands = vec![Vec::new()];
    let top = subcommands(&[]);
    assert!(top.len() >= 14, "too few subcommands listed: {top:?}");
    commands.extend(top);
    commands.extend(subcommands(&["store"]));
    for cmd in &commands {
        for flag in ["--help", "-h"] {
            let o = Command::new(support::bin())
                .args(cmd)
                .arg(flag)
                .output()
                .unwrap();
            assert!(o.status.success(), "{cmd:?} {flag}");
            let text = String::from_utf8(o.stdout).unwrap();
            let tail = text
                .rsplit_once("Example")
                .map(|(_, t)| t)
                .unwrap_or_else(|| panic!("{cmd:?} {flag} shows no example:\n{text}"));
            let want = std::iter::once("stepman".to_string())
                .chain(cmd.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            let first = tail.lines().nth(1).unwrap_or_default().trim();
            assert!(
                first.starts_with(&want),
                "{cmd:?} {flag}: the example {first:?} is not of `{want}`"
            );
            assert!(
                !tail.contains("Options:") && !tail.contains("Usage:"),
                "{cmd:?} {flag}: the example is not at the end:\n{text}"
            );
        }
    }
}

/// A reader that closes its end of stdout early (`stepman … | head -0`) ends the command
/// quietly: no panic ("failed printing to stdout"), no message, and the command's own exit
/// status (issue 10).
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/steplib");
    let lib = lib.to_str().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let o = support::run(&home, &["setup", "-c", lib]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = support::run(&home, &["store", "import", src.to_str().unwrap()]);
    assert!(o.status.success());
    for args in [
        &["gc", "--dry-run"][..],
        &["gc", "--dry-run", "--json"],
        &["collections", "--format", "json"],
        &["step-list", "-c", lib],
        &["export-spec", "--steplib", lib, "--output", "-"],
        &["fsck", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(support::bin())
            .args(args)
            .env("STEPMAN_HOME", &home)
            .env("STEPMAN_NO_FSYNC", "1")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}: {err}", o.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

/// A local StepLib (`support::local_steplib`, step `s` in 1.0.0 and 2.0.0) and a home for the
/// activation-destination tests.
fn dest_fixture(t: &Path) -> (std::path::PathBuf, String) {
    let lib = t.join("lib");
    support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
    (t.join("home"), lib.to_str().unwrap().to_string())
}

/// `stepman activate -c LIB -i s -v VERSION -p DEST EXTRA...`, run in `cwd` when given.
fn activate_into(
    home: &Path,
    lib: &str,
    version: &str,
    dest: &str,
    extra: &[&str],
    cwd: Option<&Path>,
) -> Output {
    let mut args = vec!["activate", "-c", lib, "-i", "s", "-v", version, "-p", dest];
    args.extend_from_slice(extra);
    let mut c = support::stepman(home, args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    support::output(&mut c)
}

fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Panics unless `dest` holds exactly step `s` at `version` (one `step.sh`).
fn assert_step(dest: &Path, version: &str) {
    assert_eq!(
        entries(dest),
        vec!["step.sh".to_string()],
        "{}",
        dest.display()
    );
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        format!("echo {version}\n")
    );
}

/// Runs eight `stepman <args(i)>` at once (behind a start gate) and panics unless all succeed.
fn all_succeed_together<'a>(home: &Path, round: usize, args: impl Fn(usize) -> Vec<&'a str>) {
    let mut children: Vec<_> = (0..8)
        .map(|i| support::gated_stepman(home, args(i)).spawn().unwrap())
        .collect();
    support::release(&mut children);
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "round {round}: {}", err_text(&o));
    }
}

/// `activate -p DIR` into a directory that holds the user's files refuses, says the directory
/// is not empty and names `--replace`, and keeps every file (it deleted them before, issue 10);
/// with `--replace` the step replaces it, complete, and nothing is left beside it.
#[test]
fn activate_into_a_users_non_empty_dir_is_refused_unless_replace() {
    let t = support::TestDir::new();
    let (home, lib) = dest_fixture(t.path());
    let proj = t.path().join("proj");
    fs::create_dir_all(proj.join("sub")).unwrap();
    fs::write(proj.join("sub/f"), "important").unwrap();
    let o = activate_into(&home, &lib, "1.0.0", proj.to_str().unwrap(), &[], None);
    let err = err_text(&o);
    assert!(
        !o.status.success(),
        "a user's non-empty dir was replaced: {err}"
    );
    assert!(
        err.contains("not empty") && err.contains("--replace"),
        "the error says why and names --replace: {err}"
    );
    assert_eq!(fs::read_to_string(proj.join("sub/f")).unwrap(), "important");
    assert_eq!(support::staging_entries(t.path()), Vec::<String>::new());
    // A regular file as PATH: refused the same way, kept.
    let file = t.path().join("file");
    fs::write(&file, "mine").unwrap();
    let o = activate_into(&home, &lib, "1.0.0", file.to_str().unwrap(), &[], None);
    let err = err_text(&o);
    assert!(!o.status.success() && err.contains("--replace"), "{err}");
    assert!(
        err.contains("a file"),
        "the error says what is there: {err}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "mine");

    for p in [&proj, &file] {
        let o = activate_into(
            &home,
            &lib,
            "1.0.0",
            p.to_str().unwrap(),
            &["--replace"],
            None,
        );
        assert!(o.status.success(), "--replace: {}", err_text(&o));
        assert_step(p, "1.0.0");
    }
    assert_eq!(support::staging_entries(t.path()), Vec::<String>::new());
    support::assert_fsck_clean(&home);
}

/// A directory an earlier activation made is recognised and replaced without `--replace`,
/// also after the step wrote into it, with nothing written into the step's tree; a directory
/// the user made at the same path after deleting that one is not, even when it reuses the
/// inode number (ext4 and tmpfs reuse a freed one at once): the birth time tells them apart.
#[test]
fn reactivation_is_recognised_and_a_recreated_dir_is_not() {
    use std::os::unix::fs::MetadataExt;
    let t = support::TestDir::new();
    let (home, lib) = dest_fixture(t.path());
    let proj = t.path().join("proj");
    let p = proj.to_str().unwrap();
    let o = activate_into(&home, &lib, "1.0.0", p, &[], None);
    assert!(o.status.success(), "{}", err_text(&o));
    assert_step(&proj, "1.0.0");
    // The step writes into its own directory (its mtime and ctime change).
    fs::write(proj.join("output.log"), "written by the step").unwrap();
    let o = activate_into(&home, &lib, "2.0.0", p, &[], None);
    assert!(o.status.success(), "re-activation: {}", err_text(&o));
    assert_step(&proj, "2.0.0");
    let o = activate_into(&home, &lib, "1.0.0", p, &[], None);
    assert!(o.status.success(), "re-activation: {}", err_text(&o));
    assert_step(&proj, "1.0.0");

    // The user deletes it and makes their own directory there at once. ext4 hands out the
    // lowest free inode number: making a few directories soon gets the freed one, which then
    // becomes the user's `proj`.
    let ino = fs::metadata(&proj).unwrap().ino();
    fs::remove_dir_all(&proj).unwrap();
    let mut reused = false;
    for i in 0..64 {
        let cand = t.path().join(format!("cand-{i}"));
        fs::create_dir(&cand).unwrap();
        if fs::metadata(&cand).unwrap().ino() == ino {
            fs::rename(&cand, &proj).unwrap();
            reused = true;
            break;
        }
    }
    if !reused {
        fs::create_dir(&proj).unwrap();
    }
    for i in 0..64 {
        let _ = fs::remove_dir(t.path().join(format!("cand-{i}")));
    }
    fs::write(proj.join("mine"), "the user's").unwrap();
    eprintln!("inode number reused: {reused}");
    let o = activate_into(&home, &lib, "2.0.0", p, &[], None);
    let err = err_text(&o);
    assert!(
        !o.status.success(),
        "a dir the user made (inode reused: {reused}) was taken for an activation's: {err}"
    );
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(entries(&proj), vec!["mine".to_string()]);
    assert_eq!(support::staging_entries(t.path()), Vec::<String>::new());
}

/// `-p .`, or a PATH that contains the working directory (`cd proj && activate -p ../proj`),
/// is refused, empty or not, with an error that says why and suggests a subdirectory:
/// replacing it would leave the caller in a deleted directory (and it left
/// `.proj.stepman-<hex>/` beside it, issue 10). A symlink PATH is refused with an error that
/// says it is a symlink and names `--replace`; with it, the link (not its target) is replaced.
#[test]
fn the_working_directory_and_a_symlink_as_path_are_refused_clearly() {
    let t = support::TestDir::new();
    let (home, lib) = dest_fixture(t.path());
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    let empty = work.join("empty");
    fs::create_dir(&empty).unwrap();
    let full = work.join("full");
    fs::create_dir_all(full.join("sub")).unwrap();
    fs::write(full.join("sub/f"), "important").unwrap();
    for (cwd, dest, extra) in [
        (&empty, ".", &[][..]),
        (&full, ".", &[][..]),
        (&full, ".", &["--replace"][..]),
        (&empty, "../empty", &["--replace"][..]),
        (&full, "../full", &[][..]),
        (&full.join("sub"), "..", &[][..]),
        (
            &full.join("sub"),
            &*work.to_string_lossy(),
            &["--replace"][..],
        ),
    ] {
        let o = activate_into(&home, &lib, "1.0.0", dest, extra, Some(cwd));
        let err = err_text(&o);
        let what = format!("in {}: -p {dest} {extra:?}", cwd.display());
        assert!(!o.status.success(), "{what} was accepted: {err}");
        assert!(
            err.contains("current directory") && err.contains("subdirectory"),
            "{what}: the error says why: {err}"
        );
        assert_eq!(
            support::staging_entries(&work),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(entries(&empty), Vec::<String>::new(), "{what}");
        assert_eq!(fs::read_to_string(full.join("sub/f")).unwrap(), "important");
    }

    let target = work.join("target");
    fs::create_dir(&target).unwrap();
    let link = work.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = activate_into(&home, &lib, "1.0.0", link.to_str().unwrap(), &[], None);
    let err = err_text(&o);
    assert!(
        !o.status.success(),
        "a symlink PATH was followed or replaced: {err}"
    );
    assert!(
        err.contains("symlink") && err.contains("--replace"),
        "{err}"
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let o = activate_into(
        &home,
        &lib,
        "1.0.0",
        link.to_str().unwrap(),
        &["--replace"],
        None,
    );
    assert!(o.status.success(), "{}", err_text(&o));
    assert!(
        fs::symlink_metadata(&link).unwrap().is_dir(),
        "the link is replaced"
    );
    assert_step(&link, "1.0.0");
    assert_eq!(
        entries(&target),
        Vec::<String>::new(),
        "the link's target is untouched"
    );
    assert_eq!(support::staging_entries(&work), Vec::<String>::new());
}

/// A re-activation killed (SIGKILL) at any of its renames (the marker's, before and after the
/// swap, and the `RENAME_EXCHANGE` itself) leaves one complete tree at the destination, which
/// the next activation recognises as an activation's and replaces without `--replace`; nothing
/// is left beside it after that.
#[test]
fn a_reactivation_killed_at_any_rename_leaves_a_recognised_destination() {
    if !support::strace_usable(
        "a_reactivation_killed_at_any_rename_leaves_a_recognised_destination",
    ) {
        return;
    }
    let t = support::TestDir::new();
    let (home, lib) = dest_fixture(t.path());
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    let proj = work.join("proj");
    let p = proj.to_str().unwrap();
    for v in ["2.0.0", "1.0.0"] {
        let o = activate_into(&home, &lib, v, p, &[], None);
        assert!(o.status.success(), "{}", err_text(&o));
    }
    let traced = |version: &str, kill: Option<(&str, usize)>, log: &Path| -> Output {
        let mut t = support::Traced::new(&home, log)
            .follow()
            .trace("rename,renameat,renameat2");
        if let Some((syscall, n)) = kill {
            t = t.inject(&format!("{syscall}:signal=SIGKILL:when={n}"));
        }
        support::output(&mut t.stepman(["activate", "-c", &lib, "-i", "s", "-v", version, "-p", p]))
    };
    // The renames of a clean re-activation (both versions are in the store: nothing else
    // renames).
    let log = t.path().join("strace.log");
    let o = traced("2.0.0", None, &log);
    assert!(o.status.success(), "{}", err_text(&o));
    assert_step(&proj, "2.0.0");
    let text = fs::read_to_string(&log).unwrap();
    let count = |s: &str| {
        text.lines()
            .filter(|l| l.contains(&format!(" {s}(")))
            .count()
    };
    assert!(text.contains("RENAME_EXCHANGE"), "{text}");
    let points: Vec<(&str, usize)> = ["rename", "renameat", "renameat2"]
        .into_iter()
        .flat_map(|s| (1..=count(s)).map(move |n| (s, n)))
        .collect();
    assert!(points.len() >= 3, "{text}");
    let current = "2.0.0";
    for (syscall, n) in points {
        let other = if current == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let killed = traced(other, Some((syscall, n)), &log);
        assert!(!killed.status.success(), "killed at {syscall} #{n}");
        let held = fs::read_to_string(proj.join("step.sh")).unwrap();
        let held = if held == format!("echo {other}\n") {
            other
        } else {
            current
        };
        assert_step(&proj, held);
        let o = activate_into(&home, &lib, current, p, &[], None);
        assert!(
            o.status.success(),
            "after a kill at {syscall} #{n} (holding {held}), the destination is not \
             recognised: {}",
            err_text(&o)
        );
        assert_step(&proj, current);
        assert_eq!(support::staging_entries(&work), Vec::<String>::new());
    }
    support::assert_fsck_clean(&home);
}

/// Activations into one destination at once (CI jobs sharing a directory) all succeed, one
/// after another behind the destination lock, and leave a tree the next activation
/// recognises; each round starts them together.
#[test]
fn concurrent_activations_into_one_destination_all_succeed() {
    let t = support::TestDir::new();
    let (home, lib) = dest_fixture(t.path());
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    let proj = work.join("proj");
    let p = proj.to_str().unwrap();
    for v in ["1.0.0", "2.0.0"] {
        let o = activate_into(&home, &lib, v, p, &[], None);
        assert!(o.status.success(), "{}", err_text(&o));
    }
    for round in 0..5 {
        all_succeed_together(&home, round, |i| {
            let v = if i % 2 == 0 { "1.0.0" } else { "2.0.0" };
            vec!["activate", "-c", &lib, "-i", "s", "-v", v, "-p", p]
        });
        let held = fs::read_to_string(proj.join("step.sh")).unwrap();
        assert!(held == "echo 1.0.0\n" || held == "echo 2.0.0\n", "{held}");
        assert_eq!(entries(&proj), vec!["step.sh".to_string()]);
        let o = activate_into(&home, &lib, "1.0.0", p, &[], None);
        assert!(o.status.success(), "round {round}: {}", err_text(&o));
    }
    assert_eq!(support::staging_entries(&work), Vec::<String>::new());
}

/// A local StepLib with many step versions (a spec.json of a few hundred KiB, so that writing it
/// takes long enough for concurrent writers to overlap), set up in `home`.
fn big_spec_fixture(t: &Path) -> (std::path::PathBuf, String) {
    let lib = t.join("lib");
    let versions: Vec<String> = (0..300).map(|i| format!("1.0.{i}")).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    support::local_steplib(&lib, &versions);
    let home = t.join("home");
    let lib = lib.to_str().unwrap().to_string();
    support::run_ok(&mut support::stepman(&home, ["setup", "-c", &lib]));
    (home, lib)
}

/// A spec.json's text parsed, without its `generated_at_timestamp`.
fn spec_without_timestamp(text: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(text).expect("a complete spec.json");
    v.as_object_mut().unwrap().remove("generated_at_timestamp");
    v
}

/// Concurrent `export-spec --output` to one path all succeed and leave the complete spec and
/// nothing else (they shared one fixed temp name before, issue 10: one truncated or renamed away
/// the other's temp file). An export-spec whose temp name another one holds (here: a directory
/// planted at the old fixed name) is not disturbed either.
#[test]
fn concurrent_export_specs_to_one_path_all_succeed() {
    let t = support::TestDir::new();
    let (home, lib) = big_spec_fixture(t.path());
    let want = spec_without_timestamp(&support::run_ok(&mut support::stepman(
        &home,
        ["export-spec", "--steplib", &lib, "--output", "-"],
    )));
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let spec = out.join("spec.json");
    let s = spec.to_str().unwrap();
    for round in 0..5 {
        all_succeed_together(&home, round, |_| {
            vec!["export-spec", "--steplib", &lib, "--output", s]
        });
        assert_eq!(
            spec_without_timestamp(&fs::read_to_string(&spec).unwrap()),
            want,
            "round {round}"
        );
        assert_eq!(
            entries(&out),
            vec!["spec.json".to_string()],
            "round {round}"
        );
    }
    // Another writer's temp file at the name the old code always used.
    fs::create_dir(out.join(".spec.json.stepman-tmp")).unwrap();
    let o = support::output(&mut support::stepman(
        &home,
        ["export-spec", "--steplib", &lib, "--output", s],
    ));
    assert!(o.status.success(), "{}", err_text(&o));
    assert_eq!(
        spec_without_timestamp(&fs::read_to_string(&spec).unwrap()),
        want
    );
}

/// An export-spec that fails after its temp file was made (the destination is a directory, so
/// the final rename fails) leaves no temp file behind.
#[test]
fn a_failed_export_spec_leaves_no_temp_file() {
    let t = support::TestDir::new();
    let (home, lib) = big_spec_fixture(t.path());
    let out = t.path().join("out");
    fs::create_dir_all(out.join("spec.json/inside")).unwrap();
    let o = support::output(&mut support::stepman(
        &home,
        [
            "export-spec",
            "--steplib",
            &lib,
            "--output",
            out.join("spec.json").to_str().unwrap(),
        ],
    ));
    assert!(!o.status.success(), "exporting onto a directory succeeded");
    assert_eq!(entries(&out), vec!["spec.json".to_string()]);
    assert_eq!(entries(&out.join("spec.json")), vec!["inside".to_string()]);
}
