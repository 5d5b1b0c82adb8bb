//! `preload`: parallel cache warming from a loopback server; every failure reported, the rest
//! cached, one download per step; the `bitrise steps preload` selection; Ctrl-C stops cleanly;
//! preload and activations of the same steps share the single-flight downloads.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Mode, Server};
use support::{assert_fsck_clean, assert_same_tree, stepman};

#[test]
fn fifty_steps_three_failing_in_different_ways() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/archives/", server.url()))]);
    let full = Mode::Full {
        delay: Duration::ZERO,
    };
    let mut wanted = Vec::new();
    for i in 0..50 {
        let id = format!("step-{i:02}");
        support::write_step(&lib, &id, "1.0.0", &support::step_yml(&id, None));
        let path = format!("/archives/{id}/1.0.0/step.zip");
        match i {
            7 => {} // never served: 404
            23 => server.serve(
                &path,
                support::zip_with_entry("../../../../escape", b"x"),
                full,
            ),
            41 => server.serve(&path, b"PK\x03\x04 this is not a zip".to_vec(), full),
            _ => {
                let src = t.path().join("src").join(&id);
                fs::create_dir_all(&src).unwrap();
                fs::write(src.join("step.sh"), format!("echo {id}\n")).unwrap();
                server.serve(&path, support::zip_tree(&src), full);
            }
        }
        wanted.push(format!("{id}@1"));
    }
    let home = t.path().join("home");
    let list = t.path().join("list.txt");
    fs::write(&list, wanted[25..].join("\n")).unwrap();
    let mut args = vec![
        "preload",
        "-c",
        lib.to_str().unwrap(),
        "--jobs",
        "8",
        "--json",
        "--from-file",
        list.to_str().unwrap(),
    ];
    args.extend(wanted[..25].iter().map(String::as_str));

    for round in 0..2 {
        let o = stepman(&home, &args)
            .env("STEPMAN_HTTP_ATTEMPTS", "1")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let steps = report["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 50);
        let failed: Vec<&str> = steps
            .iter()
            .filter(|s| s["status"] == "failed")
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(failed, ["step-07", "step-23", "step-41"], "round {round}");
        let want_status = if round == 0 { "downloaded" } else { "cached" };
        assert!(
            steps
                .iter()
                .filter(|s| s["status"] != "failed")
                .all(|s| s["status"] == want_status),
            "round {round}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("HTTP 404") && err.contains("escape") && err.contains("zip"),
            "{err}"
        );
    }
    for i in 0..50 {
        if ![7, 23, 41].contains(&i) {
            assert_eq!(
                server.count(&format!("/archives/step-{i:02}/1.0.0/step.zip")),
                1,
                "step-{i:02}"
            );
        }
    }
    let o = stepman(&home, ["list-cached", "-c", lib.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 47);
    assert_fsck_clean(&home);
}

/// A StepLib served by `server` whose steps are `(id, version)`, each a zip of a small tree
/// served with `mode`; returns the StepLib dir and each step's source tree.
fn served_steplib(
    t: &Path,
    server: &Server,
    steps: &[(&str, &str)],
    mode: Mode,
) -> (PathBuf, Vec<PathBuf>) {
    let lib = t.join("lib");
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/archives/", server.url()))]);
    let mut srcs = Vec::new();
    for (id, version) in steps {
        support::write_step(&lib, id, version, &support::step_yml(id, None));
        let src = t.join("src").join(id).join(version);
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("step.sh"), format!("echo {id} {version}\n")).unwrap();
        // Some bulk, so that a slow server spreads it over many reads.
        fs::write(
            src.join("bin/data"),
            format!("{id}@{version}\n").repeat(4000),
        )
        .unwrap();
        server.serve(
            &format!("/archives/{id}/{version}/step.zip"),
            support::zip_tree(&src),
            mode,
        );
        srcs.push(src);
    }
    (lib, srcs)
}

/// An RFC 3339 time `days` before now.
fn days_ago(days: i64) -> String {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days);
    t.to_string()
}

fn report(stdout: &[u8]) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_slice(stdout).expect("--json report");
    let mut out: Vec<_> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["constraint"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn selection_follows_the_bitrise_rules() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let full = Mode::Full {
        delay: Duration::ZERO,
    };
    // (id, version, published days ago)
    let versions: &[(&str, &str, i64)] = &[
        ("tool", "1.0.0", 900),
        ("tool", "1.1.0", 800),
        ("tool", "1.2.0", 45), // latest patch of 1.2, within 2 months: --minors-since
        ("tool", "2.0.0", 700),
        ("tool", "2.1.0", 20), // within 1 month, not the latest patch: --patches-since
        ("tool", "2.1.1", 10), // latest patch of the 2nd latest major: --majors/--minors
        ("tool", "3.0.0", 600), // latest major
        ("tool", "4.0.0-beta", 1), // pre-releases are never chosen
        ("theirs", "1.0.0", 1), // another maintainer
        ("gone", "1.0.0", 1),  // deprecated
    ];
    let steps: Vec<(&str, &str)> = versions.iter().map(|(i, v, _)| (*i, *v)).collect();
    let (lib, _) = served_steplib(t.path(), &server, &steps, full);
    for (id, version, days) in versions {
        let p = lib.join("steps").join(id).join(version).join("step.yml");
        let mut y = fs::read_to_string(&p).unwrap();
        y.push_str(&format!("published_at: {}\n", days_ago(*days)));
        fs::write(&p, y).unwrap();
    }
    for (id, info) in [
        ("tool", "maintainer: bitrise\n"),
        ("theirs", "maintainer: community\n"),
        ("gone", "maintainer: bitrise\ndeprecate_notes: use tool\n"),
    ] {
        fs::write(lib.join("steps").join(id).join("step-info.yml"), info).unwrap();
    }
    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["preload", "-c", lib_s, "--json"];
        args.extend_from_slice(extra);
        let o = stepman(&home, &args).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        report(&o.stdout)
            .into_iter()
            .map(|(id, c, _)| format!("{id}@{c}"))
            .collect::<Vec<_>>()
    };
    // The defaults: maintainer bitrise, 2 majors x 1 minor, minors of 2 months, patches of 1.
    assert_eq!(
        run(&[]),
        ["tool@1.2.0", "tool@2.1.0", "tool@2.1.1", "tool@3.0.0"]
    );
    // Every maintainer, the latest version only.
    assert_eq!(
        run(&[
            "--maintainer",
            "",
            "--majors",
            "1",
            "--minors-since",
            "0",
            "--patches-since",
            "0"
        ]),
        ["theirs@1.0.0", "tool@3.0.0"]
    );
    assert_eq!(
        run(&[
            "--majors",
            "3",
            "--minors",
            "2",
            "--minors-since",
            "0",
            "--patches-since",
            "0"
        ]),
        [
            "tool@1.1.0",
            "tool@1.2.0",
            "tool@2.0.0",
            "tool@2.1.1",
            "tool@3.0.0"
        ]
    );
    // Named steps alone do not add the selection; with a selection flag they do.
    assert_eq!(run(&["theirs@1"]), ["theirs@1"]);
    assert_eq!(
        run(&[
            "theirs@1",
            "--patches-since",
            "0",
            "--minors-since",
            "0",
            "--majors",
            "1"
        ]),
        ["theirs@1", "tool@3.0.0"]
    );
    let o = stepman(&home, ["list-cached", "-c", lib_s])
        .output()
        .unwrap();
    let cached = String::from_utf8_lossy(&o.stdout);
    assert!(
        !cached.contains("gone") && !cached.contains("beta"),
        "{cached}"
    );
    assert_eq!(cached.lines().count(), 7, "{cached}");
    assert_fsck_clean(&home);
}

/// `preload --dry-run --json` of `lib` with `extra` flags: the chosen `id@version`s, sorted.
fn dry_run(home: &Path, lib: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["preload", "-c", lib, "--dry-run", "--json"];
    args.extend_from_slice(extra);
    let out = support::run_ok(&mut stepman(home, &args));
    let v: Value = serde_json::from_str(&out).expect("--dry-run --json");
    let mut chosen: Vec<String> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                s["id"].as_str().unwrap(),
                s["version"].as_str().unwrap()
            )
        })
        .collect();
    chosen.sort();
    chosen
}

/// The old tool's selection, from its source: only groups without `deprecate_notes` (a
/// `removal_date` alone does not exclude), each group's latest version always (even with every
/// rule off), `project-scanner` only its latest, months of 31 days, and the example it was run
/// with (versions 400, 300, 200, 90, 10 and 5 days old and `--patches-since 1` choose the 10-
/// and 5-day-old ones; the README used to say the old tool picks the old ones). `--as-of` fixes
/// "now"; `--dry-run` downloads nothing.
#[test]
fn selection_matches_the_old_tool() {
    let t = support::TestDir::new();
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("zip", "http://127.0.0.1:9/unused/")]);
    let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let ago = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    let write = |id: &str, version: &str, days: i64, info: &str| {
        let yml = support::step_yml(id, None) + &format!("published_at: {}\n", ago(days));
        support::write_step(&lib, id, version, &yml);
        fs::write(lib.join("steps").join(id).join("step-info.yml"), info).unwrap();
    };
    let bitrise = "maintainer: bitrise\n";
    for (v, d) in [
        ("1.0.0", 400),
        ("1.1.0", 300),
        ("1.2.0", 200),
        ("1.3.0", 90),
    ] {
        write("tool", v, d, bitrise);
    }
    write("tool", "1.4.0", 10, bitrise);
    write("tool", "1.5.0", 5, bitrise);
    write(
        "retiring",
        "1.0.0",
        400,
        "maintainer: bitrise\nremoval_date: 2027-01-01\n",
    );
    write(
        "gone",
        "1.0.0",
        5,
        "maintainer: bitrise\ndeprecate_notes: use tool\n",
    );
    for (v, d) in [("1.0.0", 20), ("2.0.0", 10), ("3.0.0", 5)] {
        write("project-scanner", v, d, bitrise);
    }
    write("old", "1.0.0", 900, bitrise);
    write("old", "2.0.0", 800, bitrise);
    // 31 days before 2026-12-01 is 2026-10-31; a calendar month would be 2026-11-01.
    write("monthly", "1.0.0", 30, bitrise);
    write("monthly", "1.0.1", 31, bitrise);
    write("monthly", "2.0.0", 700, bitrise);
    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();
    let as_of = now.to_string();
    let only_patches = [
        "--as-of",
        &as_of,
        "--majors",
        "0",
        "--minors-since",
        "0",
        "--patches-since",
        "1",
    ];
    assert_eq!(
        dry_run(&home, lib_s, &only_patches),
        [
            "monthly@1.0.0",
            "monthly@2.0.0",
            "old@2.0.0",
            "project-scanner@3.0.0",
            "retiring@1.0.0",
            "tool@1.4.0",
            "tool@1.5.0",
        ]
    );
    // Nothing was downloaded.
    let cached = support::run_ok(&mut stepman(&home, ["list-cached", "-c", lib_s]));
    assert!(cached.trim().is_empty(), "{cached}");
}

/// The selection over the real StepLib slice in `../shared/steplib-sample` (skipped without
/// it), as of a fixed time, worked out by hand from its `published_at` dates: with the defaults
/// as of 2026-03-15, `git-clone` (maintainer bitrise, 90 versions) gets 8.5.1 (its latest, and
/// the latest patch of the latest minor of major 8), 7.0.3 (of major 7), 8.4.1, 8.4.2 and 8.5.0
/// (published 2026-02-24, 2026-02-24 and 2026-03-10: within 31 days, or published after "now"
/// as 8.5.1 was), and 8.4.2 is also the latest patch of 8.4, published within 62 days.
/// `activate-build-cache-for-tuist` has `deprecate_notes`; community steps are not `bitrise`'s.
#[test]
fn selection_over_the_steplib_sample() {
    let Some(sample) = support::steplib_sample("selection_over_the_steplib_sample") else {
        return;
    };
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let uri = format!("file://{}", sample.display());
    let chosen = dry_run(&home, &uri, &["--as-of", "2026-03-15T00:00:00Z"]);
    let of = |id: &str| -> Vec<&str> {
        chosen
            .iter()
            .filter_map(|c| c.strip_prefix(&format!("{id}@")))
            .collect()
    };
    let mut git_clone = of("git-clone");
    git_clone.sort();
    assert_eq!(git_clone, ["7.0.3", "8.4.1", "8.4.2", "8.5.0", "8.5.1"]);
    assert!(
        of("activate-build-cache-for-tuist").is_empty(),
        "{chosen:?}"
    );
    assert!(of("sofy-upload-bitrise-step").is_empty(), "{chosen:?}");
    // Every bitrise group that is not deprecated gets its latest version.
    let spec = support::run_ok(&mut stepman(
        &home,
        ["export-spec", "--steplib", &uri, "--output", "-"],
    ));
    let spec: Value = serde_json::from_str(&spec).unwrap();
    for (id, g) in spec["steps"].as_object().unwrap() {
        let notes = g["info"]["deprecate_notes"].as_str().unwrap_or("");
        if g["info"]["maintainer"] == "bitrise" && notes.is_empty() {
            let latest = g["latest_version_number"].as_str().unwrap();
            assert!(
                of(id).contains(&latest),
                "{id}@{latest} not chosen: {chosen:?}"
            );
        } else {
            assert!(of(id).is_empty(), "{id} chosen: {chosen:?}");
        }
    }
}

/// Starts `stepman preload` with stderr piped.
fn spawn_preload(home: &Path, lib: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["preload", "-c", lib.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    stepman(home, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for `child`, killing it after `limit` (then its status shows SIGKILL, not an exit code).
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Entries left in the store's temp area (lock files included).
fn tmp_entries(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(support::store_root(home).join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn ctrl_c_stops_cleanly_and_a_second_one_is_harmless() {
    let _alone = support::alone();
    for signals in [1, 2] {
        let t = tempfile::tempdir().unwrap();
        let server = Server::start();
        let steps: Vec<(String, String)> = (0..12)
            .map(|i| (format!("slow-{i:02}"), "1.0.0".to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = steps
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // Each body takes 4 s in 20 chunks: the preload is always mid-download when stopped,
        // and stopping well within those 4 s shows that running downloads are cut short.
        let slow = Mode::Full {
            delay: Duration::from_secs(4),
        };
        let (lib, _) = served_steplib(t.path(), &server, &refs, slow);
        let home = t.path().join("home");
        let names: Vec<String> = steps.iter().map(|(id, _)| id.clone()).collect();
        let mut args: Vec<&str> = vec!["--jobs", "3"];
        args.extend(names.iter().map(String::as_str));
        let mut child = spawn_preload(&home, &lib, &args);
        // Stop once the first steps are done (one line per step on a non-terminal stderr).
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let mut done = 0;
        while done < 2 {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "early EOF: {seen}");
            done += usize::from(line.contains(": downloaded"));
            seen.push_str(&line);
        }
        let stopped = Instant::now();
        for _ in 0..signals {
            signal(&child, "-INT");
        }
        let status = wait_at_most(&mut child, Duration::from_secs(15));
        let took = stopped.elapsed();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(status.code(), Some(130), "{seen}{rest}");
        assert!(
            took < Duration::from_secs(2),
            "stopping took {took:?}: {rest}"
        );
        assert!(rest.contains("stopped by a signal"), "{rest}");
        let r = report(out.as_bytes());
        assert_eq!(r.len(), 12, "every step has a result");
        let downloaded: Vec<&str> = r
            .iter()
            .filter(|(_, _, s)| s == "downloaded")
            .map(|(id, _, _)| id.as_str())
            .collect();
        let cancelled = r.iter().filter(|(_, _, s)| s == "cancelled").count();
        assert!(downloaded.len() >= 2 && cancelled >= 1, "{r:?}");
        assert!(
            r.iter()
                .all(|(_, _, s)| s == "downloaded" || s == "cancelled"),
            "{r:?}"
        );
        // Nothing partial: the temp area is empty, fsck is clean, exactly the finished steps
        // are bound.
        assert_eq!(
            tmp_entries(&home),
            Vec::<String>::new(),
            "signals: {signals}"
        );
        assert_fsck_clean(&home);
        let o = stepman(&home, ["list-cached", "-c", lib.to_str().unwrap()])
            .output()
            .unwrap();
        let cached: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            cached.len(),
            downloaded.len(),
            "{cached:?} vs {downloaded:?}"
        );

        // Running it again finishes the job and downloads each finished step no more.
        server.serve_all_mode(Mode::Full {
            delay: Duration::ZERO,
        });
        let o = stepman(&home, ["preload", "-c", lib.to_str().unwrap(), "--json"])
            .args(&names)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let again = report(&o.stdout);
        for (id, _, status) in &again {
            let want = if downloaded.contains(&id.as_str()) {
                "cached"
            } else {
                "downloaded"
            };
            assert_eq!(status, want, "{id}");
        }
        for id in &downloaded {
            assert_eq!(server.count(&format!("/archives/{id}/1.0.0/step.zip")), 1);
        }
        assert_fsck_clean(&home);
    }
}

#[test]
fn ctrl_c_does_not_wait_for_another_processs_download() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (lib, _) = served_steplib(t.path(), &server, &[("held", "1.0.0")], Mode::HalfThenStall);
    let home = t.path().join("home");
    // An activation holds the step's single-flight lock on a stalled download...
    let mut act = stepman(
        &home,
        [
            "activate",
            "-c",
            lib.to_str().unwrap(),
            "-i",
            "held",
            "-p",
            t.path().join("work").to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    assert!(server.wait_stalled(1, Duration::from_secs(20)));
    // ...so preload of the same step waits for it (its debug log says so); Ctrl-C ends that
    // wait at once.
    let mut child = stepman(&home, ["preload", "-c", lib.to_str().unwrap(), "held"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("waiting for another process's fill") {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "early EOF: {seen}");
        seen.push_str(&line);
    }
    let stopped = Instant::now();
    signal(&child, "-INT");
    let status = wait_at_most(&mut child, Duration::from_secs(15));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(stopped.elapsed() < Duration::from_secs(3), "{rest}");
    assert!(rest.contains("cancelled"), "{rest}");
    assert_eq!(
        server.count("/archives/held/1.0.0/step.zip"),
        1,
        "preload never downloaded while the activation held the step"
    );
    act.kill().unwrap();
    act.wait().unwrap();
}

#[test]
fn preload_and_ten_activations_of_the_same_steps_download_each_once() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let steps: Vec<(String, String)> = (0..10)
        .map(|i| (format!("shared-{i}"), "2.0.0".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (lib, srcs) = served_steplib(
        t.path(),
        &server,
        &refs,
        Mode::Full {
            delay: Duration::from_millis(400),
        },
    );
    let home = t.path().join("home");
    // Set up once, so that every process starts from the same collection.
    let o = stepman(&home, ["setup", "-c", lib.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<&str> = steps.iter().map(|(id, _)| id.as_str()).collect();
    let mut args = vec!["--jobs", "4"];
    args.extend(names.iter().copied());
    let preload = spawn_preload(&home, &lib, &args);
    // Ten activations, each of a step the preload also wants, in the opposite order.
    let acts: Vec<(usize, PathBuf, Child)> = (0..10)
        .map(|i| {
            let k = 9 - i;
            let dest = t.path().join("work").join(format!("a{i}"));
            let c = stepman(
                &home,
                [
                    "activate",
                    "-c",
                    lib.to_str().unwrap(),
                    "-i",
                    names[k],
                    "-v",
                    "2.0",
                    "-p",
                    dest.to_str().unwrap(),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (k, dest, c)
        })
        .collect();
    let out = preload.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out.stdout);
    assert!(
        r.iter().all(|(_, _, s)| s == "downloaded" || s == "cached"),
        "{r:?}"
    );
    for (k, dest, c) in acts {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_same_tree(&srcs[k], &dest);
    }
    for id in &names {
        assert_eq!(
            server.count(&format!("/archives/{id}/2.0.0/step.zip")),
            1,
            "{id} downloaded once"
        );
    }
    assert_fsck_clean(&home);
}

#[test]
fn ctrl_c_does_not_wait_for_a_stalled_server() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (lib, _) = served_steplib(
        t.path(),
        &server,
        &[("stalled", "1.0.0"), ("other", "1.0.0")],
        Mode::HalfThenStall,
    );
    let home = t.path().join("home");
    // With the default 60 s stall timeout, only cancellation can end these downloads soon.
    let mut child = stepman(
        &home,
        ["preload", "-c", lib.to_str().unwrap(), "stalled", "other"],
    )
    .env_remove("STEPMAN_HTTP_TIMEOUT")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(server.wait_stalled(2, Duration::from_secs(20)));
    let stopped = Instant::now();
    signal(&child, "-TERM");
    let status = wait_at_most(&mut child, Duration::from_secs(15));
    let took = stopped.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        took < Duration::from_secs(2),
        "stopping took {took:?}: {err}"
    );
    assert!(err.contains("2 cancelled"), "{err}");
    assert_eq!(tmp_entries(&home), Vec::<String>::new());
    assert_fsck_clean(&home);
}

#[test]
fn activate_and_download_stop_cleanly_on_a_signal_too() {
    let _alone = support::alone();
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (lib, _) = served_steplib(
        t.path(),
        &server,
        &[("stalled", "1.0.0")],
        Mode::HalfThenStall,
    );
    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();
    let o = stepman(&home, ["setup", "-c", lib_s]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dest = t.path().join("work").join("step");
    let commands: [Vec<&str>; 2] = [
        vec![
            "activate",
            "-c",
            lib_s,
            "-i",
            "stalled",
            "-p",
            dest.to_str().unwrap(),
        ],
        vec!["download", "-c", lib_s, "--id", "stalled"],
    ];
    for (i, args) in commands.iter().enumerate() {
        let mut child = stepman(&home, args)
            .env_remove("STEPMAN_HTTP_TIMEOUT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(server.wait_stalled(i + 1, Duration::from_secs(20)));
        let stopped = Instant::now();
        signal(&child, "-INT");
        let status = wait_at_most(&mut child, Duration::from_secs(15));
        let took = stopped.elapsed();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "{args:?}: {err}");
        assert!(took < Duration::from_secs(2), "{args:?}: took {took:?}");
        assert!(err.contains("cancelled"), "{args:?}: {err}");
        assert_eq!(tmp_entries(&home), Vec::<String>::new(), "{args:?}");
    }
    // Nothing was bound and nothing appeared beside the destination.
    assert!(!dest.exists());
    let leftovers = fs::read_dir(t.path().join("work"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
    let o = stepman(&home, ["list-cached", "-c", lib_s])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "");
    assert_fsck_clean(&home);
}

/// `--dry-run` without `--json`: the chosen `id@constraint` lines on stdout, a count on stderr,
/// and nothing fetched from the download location (the server sees no request) or stored.
#[test]
fn dry_run_lists_without_downloading() {
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/archives/", server.url()))]);
    for v in ["1.0.0", "1.1.0"] {
        support::write_step(&lib, "s", v, &support::step_yml("S", None));
        server.serve(
            &format!("/archives/s/{v}/step.zip"),
            support::zip_of_script(b"echo s\n"),
            Mode::Full {
                delay: Duration::ZERO,
            },
        );
    }
    let home = t.path().join("home");
    let l = lib.to_str().unwrap();
    let o = support::output(&mut stepman(
        &home,
        ["preload", "-c", l, "s@1.0.0", "s@1", "s@1.0.0", "--dry-run"],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "s@1.0.0\ns@1\n");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "preload: 2 step versions chosen (dry run)\n"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let cached = support::run_ok(&mut stepman(&home, ["list-cached", "-c", l]));
    assert_eq!(cached, "");
    // Without --dry-run the same list downloads (the server is really there).
    let o = support::output(&mut stepman(&home, ["preload", "-c", l, "s@1.0.0", "s@1"]));
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(server.count("/archives/s/1.0.0/step.zip"), 1);
    assert_eq!(server.count("/archives/s/1.1.0/step.zip"), 1);
}

/// A Ctrl-C that lands after a step is bound, while its step.yml is being kept as a file of its
/// own, leaves that step reported as downloaded (it is cached), not cancelled. The signal is put
/// exactly there by strace: on the open of the collection's `definitions/<id>.yml`, which only
/// that last part of a step's preload reads. (Seen first as a flake of the test above.)
#[test]
fn a_stop_while_the_step_yml_is_kept_reports_the_bound_step_downloaded() {
    let test = "a_stop_while_the_step_yml_is_kept_reports_the_bound_step_downloaded";
    if !support::strace_usable(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (lib, _) = served_steplib(
        t.path(),
        &server,
        &[("kept", "1.0.0")],
        Mode::Full {
            delay: Duration::ZERO,
        },
    );
    let home = t.path().join("home");
    let uri = lib.to_str().unwrap();
    support::run_ok(&mut stepman(&home, ["setup", "-c", uri]));
    let routes = home.join("store-v1/names");
    let alias = fs::read_dir(&routes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("_steplib/current").exists())
        .expect("the collection's route");
    let collection = fs::canonicalize(alias.join("_steplib/current")).unwrap();
    let defs = collection.join("definitions/kept.yml");
    assert!(defs.is_file(), "{}", defs.display());

    let log = t.path().join("preload.strace");
    let mut cmd = support::strace::Traced::new(&home, &log)
        .follow()
        .on(&defs)
        .inject("openat:signal=SIGINT:when=1")
        .stepman(["preload", "-c", uri, "--json", "kept"]);
    let o = support::output(&mut cmd);
    let r = report(&o.stdout);
    assert_eq!(
        r,
        vec![("kept".to_string(), String::new(), "downloaded".to_string())],
        "{}",
        support::describe(&o)
    );
    assert!(
        support::stderr_of(&o).contains("stopped by a signal"),
        "the signal landed: {}",
        support::describe(&o)
    );
    let o = stepman(&home, ["list-cached", "-c", uri]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("kept@1.0.0"));
    assert_fsck_clean(&home);

    // The next run keeps the step.yml file and finds the step cached.
    let o = support::output(&mut stepman(
        &home,
        ["preload", "-c", uri, "--json", "kept"],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(report(&o.stdout)[0].2, "cached");
    let o = support::output(&mut stepman(
        &home,
        [
            "step-info",
            "--library",
            uri,
            "--id",
            "kept",
            "--format",
            "json",
        ],
    ));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pth = info["definition_pth"].as_str().expect("definition_pth");
    assert!(Path::new(pth).is_file(), "{pth}");
}
