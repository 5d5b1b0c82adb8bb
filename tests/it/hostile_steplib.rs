//! Hostile StepLibs (issue 9, items 1 and 7): a StepLib checkout is read as a tree of its own,
//! like an import. A symlink that leaves it (absolute, or `..` past its root) is never followed,
//! special files (FIFOs, devices) are refused without being opened for a blocking read, and every
//! file is bounded before it is read; a `spec.json` over HTTP is bounded per value and per step
//! group; the StepLib limits keep `setup` within the README's memory bound and say they are
//! StepLib limits.
//!
//! Git StepLibs are served on loopback by `git daemon --inetd` (see `support::GitDaemon`).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{GitDaemon, Mode, Server};
use support::{TestDir, stepman};

/// What the secret files hold: it must appear nowhere in the store or any output.
const MARKER: &str = "SECRET-MARKER-7f3c19e2";

const STEPLIB_YML: &str = "format_version: 1.0.0\nsteplib_source: https://example.invalid/lib.git\n\
     assets_download_base_uri: https://example.invalid/assets\n\
     download_locations:\n  - type: zip\n    src: https://example.invalid/zips/\n";

/// Runs `cmd`, killing it (and failing) if it is still running after `limit`.
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    support::run_within(cmd, limit, &format!("{cmd:?}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file name, symlink target and regular file's content under `root` that holds `MARKER`.
fn marker_hits(root: &Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for (p, kind) in support::walk(root) {
        if p.to_string_lossy().contains(MARKER) {
            hits.push(p.clone());
            continue;
        }
        let full = root.join(&p);
        let found = match kind {
            support::Kind::File => fs::read(&full)
                .map(|b| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()))
                .unwrap_or(false),
            support::Kind::Symlink => fs::read_link(&full)
                .map(|t| t.to_string_lossy().contains(MARKER))
                .unwrap_or(false),
            _ => false,
        };
        if found {
            hits.push(p);
        }
    }
    hits
}

/// The secret files a hostile StepLib points at, in `dir`.
fn secrets(dir: &Path) {
    fs::create_dir_all(dir.join("group/1.0.0")).unwrap();
    fs::create_dir_all(dir.join("version")).unwrap();
    fs::create_dir_all(dir.join("assets")).unwrap();
    let step = format!("title: {MARKER}\nsummary: {MARKER}\n");
    fs::write(dir.join("secret.yml"), &step).unwrap();
    fs::write(dir.join("info.yml"), format!("maintainer: {MARKER}\n")).unwrap();
    fs::write(dir.join("group/1.0.0/step.yml"), &step).unwrap();
    fs::write(dir.join("version/step.yml"), &step).unwrap();
    fs::write(dir.join(format!("assets/{MARKER}.png")), "x").unwrap();
    fs::write(
        dir.join("steplib.yml"),
        format!("format_version: 1.0.0\nsteplib_source: {MARKER}\n"),
    )
    .unwrap();
}

fn write(p: &Path, body: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

fn link(target: impl AsRef<Path>, at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap();
}

/// A StepLib with every way of pointing out of its tree, plus steps that are fine (one through
/// an in-tree relative symlink, which is followed).
fn hostile_tree(lib: &Path, secret: &Path) {
    write(&lib.join("steplib.yml"), STEPLIB_YML);
    write(&lib.join("steps/ok/1.0.0/step.yml"), "title: OK\n");
    link("../1.0.0/step.yml", &lib.join("steps/ok/1.1.0/step.yml"));
    link(secret.join("version"), &lib.join("steps/ok/2.0.0"));
    link(secret.join("assets"), &lib.join("steps/ok/assets"));
    link(
        secret.join("secret.yml"),
        &lib.join("steps/leak/1.0.0/step.yml"),
    );
    // Relative, but climbing past the checkout's root: out of the tree too.
    let climb = format!(
        "{}{}",
        "../".repeat(40),
        secret.join("secret.yml").display()
    );
    link(&climb, &lib.join("steps/leak/1.1.0/step.yml"));
    write(&lib.join("steps/leak/1.2.0/step.yml"), "title: Fine\n");
    link(
        secret.join("info.yml"),
        &lib.join("steps/info/step-info.yml"),
    );
    write(&lib.join("steps/info/1.0.0/step.yml"), "title: Info\n");
    link(secret.join("group"), &lib.join("steps/outdir"));
    link("/dev/zero", &lib.join("steps/zero/step-info.yml"));
    write(&lib.join("steps/zero/1.0.0/step.yml"), "title: Zero\n");
}

/// A hostile remote StepLib: a temp dir holding secret files ([`secrets`]) outside the StepLib,
/// the StepLib `build` writes (given its dir and the secrets' dir) served over `git://`, and a
/// store home that has not set it up yet.
struct Remote {
    /// Stopped first when dropped (fields drop in order), before the dir it serves goes.
    _daemon: GitDaemon,
    /// Holds everything; removed on drop.
    _t: TestDir,
    url: String,
    home: PathBuf,
}

impl Remote {
    fn new(build: impl FnOnce(&Path, &Path)) -> Remote {
        let t = TestDir::new();
        let secret = t.path().join("secret");
        secrets(&secret);
        let (daemon, url) = git_steplib(t.path(), |lib| build(lib, &secret));
        let home = t.path().join("home");
        Remote {
            _daemon: daemon,
            _t: t,
            url,
            home,
        }
    }

    /// `stepman setup -c <url>`, which may take a minute at most.
    fn setup(&self) -> Output {
        run_within(
            &mut stepman(&self.home, ["setup", "-c", &self.url]),
            Duration::from_secs(60),
        )
    }
}

fn git_steplib(t: &Path, build: impl FnOnce(&Path)) -> (GitDaemon, String) {
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    build(&src);
    let served = t.join("served");
    fs::create_dir_all(&served).unwrap();
    support::git_bare_of(&served, &src, "lib.git");
    let d = GitDaemon::start(&served);
    let url = d.url("lib.git");
    (d, url)
}

fn collection_json(home: &Path) -> serde_json::Value {
    for dir in support::object_dirs(home) {
        if let Ok(b) = fs::read(dir.join("collection.json")) {
            return serde_json::from_slice(&b).unwrap();
        }
    }
    panic!("no collection object in the store");
}

#[test]
fn remote_steplib_symlinks_out_of_the_checkout_are_never_read() {
    let r = Remote::new(hostile_tree);
    let (home, url) = (r.home.clone(), r.url.clone());
    let out = r.setup();
    let all = text(&out);
    assert!(out.status.success(), "setup: {all}");
    assert!(!all.contains(MARKER), "setup printed the secret: {all}");

    // The in-tree symlink is followed; everything pointing out is left out, and listed.
    let meta = collection_json(&home);
    let skipped: Vec<String> = meta["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}: {}", s["path"].as_str().unwrap(), s["error"]))
        .collect();
    for p in [
        "steps/ok/2.0.0",
        "steps/ok/assets",
        "steps/leak/1.0.0/step.yml",
        "steps/leak/1.1.0/step.yml",
        "steps/info/step-info.yml",
        "steps/outdir",
        "steps/zero/step-info.yml",
    ] {
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(&format!("{p}: ")) && s.contains("outside")),
            "{p} not skipped as pointing outside the StepLib: {skipped:#?}"
        );
    }
    let out = support::run(
        &home,
        &[
            "step-info",
            "--library",
            &url,
            "--id",
            "ok",
            "--version",
            "1.1.0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("title: OK"), "{}", text(&out));
    let out = support::run(
        &home,
        &[
            "step-info",
            "--library",
            &url,
            "--id",
            "leak",
            "--version",
            "1.2.0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    for (id, v) in [("leak", "1.0.0"), ("leak", "1.1.0"), ("info", "1.0.0")] {
        let out = support::run(
            &home,
            &["step-info", "--library", &url, "--id", id, "--version", v],
        );
        assert!(!out.status.success(), "step-info {id} {v}: {}", text(&out));
        assert!(!text(&out).contains(MARKER), "{}", text(&out));
    }
    let out = support::run(&home, &["export-spec", "--steplib", &url, "--output", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(MARKER),
        "export-spec leaked the secret"
    );
    assert_eq!(
        marker_hits(&home),
        Vec::<PathBuf>::new(),
        "the store holds the secret"
    );
    support::assert_fsck_clean(&home);
}

#[test]
fn remote_steplib_whose_steplib_yml_or_steps_leave_the_tree_fails_setup() {
    for (what, build) in [
        (
            "steplib.yml",
            Box::new(|lib: &Path, secret: &Path| {
                link(secret.join("steplib.yml"), &lib.join("steplib.yml"));
                write(&lib.join("steps/ok/1.0.0/step.yml"), "title: OK\n");
            }) as Box<dyn Fn(&Path, &Path)>,
        ),
        (
            "steps",
            Box::new(|lib: &Path, secret: &Path| {
                write(&lib.join("steplib.yml"), STEPLIB_YML);
                fs::create_dir_all(secret.join("steps")).unwrap();
                let _ = fs::remove_dir_all(secret.join("steps/leak"));
                fs::create_dir_all(secret.join("steps/leak")).unwrap();
                let _ = symlink(secret.join("group/1.0.0"), secret.join("steps/leak/1.0.0"));
                link(secret.join("steps"), &lib.join("steps"));
            }),
        ),
    ] {
        let r = Remote::new(build);
        let out = r.setup();
        let all = text(&out);
        assert!(!out.status.success(), "{what}: setup exited 0: {all}");
        assert!(
            all.contains(what) && all.contains("outside"),
            "{what}: {all}"
        );
        assert!(!all.contains(MARKER), "{what}: {all}");
        assert_eq!(marker_hits(&r.home), Vec::<PathBuf>::new(), "{what}");
    }
}

/// A local StepLib gets the same treatment: a FIFO, a device and a symlink to `/dev/zero` are
/// refused at once (no hang, no unbounded read), and an over-large file is refused before it is
/// read.
#[test]
fn special_files_in_a_steplib_are_refused_without_hanging() {
    let _alone = support::alone();
    let t = TestDir::new();
    let lib = t.path().join("lib");
    write(&lib.join("steplib.yml"), STEPLIB_YML);
    write(&lib.join("steps/ok/1.0.0/step.yml"), "title: OK\n");
    let fifo = lib.join("steps/fifo/1.0.0/step.yml");
    fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    write(&lib.join("steps/fifo/1.1.0/step.yml"), "title: Fine\n");
    link("/dev/zero", &lib.join("steps/zero/step-info.yml"));
    write(&lib.join("steps/zero/1.0.0/step.yml"), "title: Zero\n");
    // A device inside the tree (root only: mknod).
    let dev = lib.join("steps/dev/step-info.yml");
    fs::create_dir_all(dev.parent().unwrap()).unwrap();
    let have_dev = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "5"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_dev {
        eprintln!("not root: the device case is skipped");
    }
    write(&lib.join("steps/dev/1.0.0/step.yml"), "title: Dev\n");
    // Regular but far past the YAML bound.
    let big = lib.join("steps/big/1.0.0/step.yml");
    write(&big, "title: Big\n");
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();

    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();
    let rss = t.path().join("rss");
    let mut cmd = timed(&home, &["setup", "-c", lib_s], &rss)
        .unwrap_or_else(|| stepman(&home, ["setup", "-c", lib_s]));
    let out = run_within(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "setup: {}", text(&out));
    if let Ok(kb) = fs::read_to_string(&rss) {
        let kb: u64 = kb.trim().lines().last().unwrap().parse().unwrap();
        assert!(kb < 64 << 10, "setup peaked at {} MiB", kb >> 10);
    }
    let meta = collection_json(&home);
    let skipped = meta["skipped"].to_string();
    let mut expect = vec![
        ("steps/fifo/1.0.0/step.yml", "not a regular file"),
        ("steps/zero/step-info.yml", "outside"),
        ("steps/big/1.0.0/step.yml", "bytes"),
    ];
    if have_dev {
        expect.push(("steps/dev/step-info.yml", "not a regular file"));
    }
    for (p, why) in expect {
        let hit = meta["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"] == p && s["error"].as_str().is_some_and(|e| e.contains(why)));
        assert!(hit, "{p} not skipped ({why}): {skipped}");
    }
    // ok 1.0.0 and fifo 1.1.0: a group whose step-info.yml is refused is left out whole.
    assert_eq!(meta["versions"], 2, "{meta}");
}

/// `stepman args` against `home` under `/usr/bin/time`, which writes the peak RSS in KiB to
/// `rss` (None without `/usr/bin/time`).
fn timed(home: &Path, args: &[&str], rss: &Path) -> Option<Command> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let mut c = Command::new(time);
    c.arg("-f").arg("%M").arg("-o").arg(rss).arg(support::bin());
    c.args(args);
    support::store_env(&mut c, home);
    Some(c)
}

/// Peak RSS in KiB of `stepman args` (None without `/usr/bin/time`).
fn peak_kib(home: &Path, args: &[&str], limit: Duration) -> Option<(Output, u64)> {
    peak_kib_with(home, args, &[], limit)
}

/// [`peak_kib`] with `env` set for the command.
fn peak_kib_with(
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Option<(Output, u64)> {
    let rss = home.with_extension("rss");
    let Some(mut c) = timed(home, args, &rss) else {
        eprintln!("no /usr/bin/time: memory not measured");
        return None;
    };
    c.envs(env.iter().copied());
    let out = run_within(&mut c, limit);
    let kb = fs::read_to_string(&rss).unwrap();
    Some((out, kb.trim().lines().last().unwrap().parse().unwrap()))
}

#[test]
fn spec_json_with_a_huge_string_stays_within_the_memory_bound() {
    let _alone = support::alone();
    let server = Server::start();
    let huge = "A".repeat(200 << 20);
    let spec = format!(
        r#"{{"format_version":"1.0.0","steplib_source":"x","download_locations":[],
        "steps":{{"ok":{{"versions":{{"1.0.0":{{"title":"OK"}}}}}},
        "huge":{{"versions":{{"1.0.0":{{"title":"{huge}"}}}}}}}}}}"#
    );
    drop(huge);
    server.serve(
        "/spec.json",
        spec.into_bytes(),
        Mode::Full {
            delay: Duration::ZERO,
        },
    );
    let t = TestDir::new();
    let home = t.path().join("home");
    let url = format!("{}/spec.json", server.url());
    let Some((out, kb)) = peak_kib(&home, &["setup", "-c", &url], Duration::from_secs(120)) else {
        return;
    };
    let all = text(&out);
    eprintln!("setup peaked at {} MiB: {all}", kb >> 10);
    assert!(kb < 64 << 10, "setup peaked at {} MiB: {all}", kb >> 10);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("huge") && all.contains("StepLib limit"),
        "the error should name the group and say it is a StepLib limit: {all}"
    );
}

#[test]
fn a_101000_version_steplib_is_set_up_within_memory_and_past_the_entry_limit_fails_naming_it() {
    let _alone = support::alone();
    let t = TestDir::new();
    let lib = t.path().join("lib");
    write(&lib.join("steplib.yml"), STEPLIB_YML);
    // 1,010 groups of 100 versions: 101,000 versions. A collection object holds three files
    // per group (collection layout 3), so this one has 3,032 entries: it is set up, within
    // memory; with the entry limit below that, the same StepLib fails, naming the limit.
    for g in 0..1010 {
        for v in 0..100 {
            write(
                &lib.join(format!("steps/s{g}/1.0.{v}/step.yml")),
                "title: S\nsummary: a step of a very large StepLib\n",
            );
        }
    }
    let lib_s = lib.to_str().unwrap();
    let home = t.path().join("whole");
    let Some((out, kb)) = peak_kib(&home, &["setup", "-c", lib_s], Duration::from_secs(300)) else {
        return;
    };
    let all = text(&out);
    eprintln!("setup peaked at {} MiB: {all}", kb >> 10);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("1010 steps, 101000 versions"), "{all}");
    assert!(kb < 64 << 10, "setup peaked at {} MiB: {all}", kb >> 10);
    let home = t.path().join("home");
    let Some((out, kb)) = peak_kib_with(
        &home,
        &["setup", "-c", lib_s],
        &[("STEPMAN_MAX_ENTRIES", "3000")],
        Duration::from_secs(300),
    ) else {
        return;
    };
    let all = text(&out);
    eprintln!("setup peaked at {} MiB: {all}", kb >> 10);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("StepLib limit") && all.contains("STEPMAN_MAX_ENTRIES"),
        "the error should say it is a StepLib limit and how to raise it: {all}"
    );
    assert!(kb < 64 << 10, "setup peaked at {} MiB: {all}", kb >> 10);
}

/// `step-info --step-yml` and `--library path::DIR` read a user's path: a symlink is followed,
/// but a FIFO or a device is refused at once and nothing is read past the YAML bound.
#[test]
fn step_info_of_a_fifo_or_a_device_is_refused_at_once() {
    let t = TestDir::new();
    let fifo = t.path().join("fifo.yml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = t.path().join("step");
    link("/dev/zero", &dir.join("step.yml"));
    let home = t.path().join("home");
    let lib = format!("path::{}", dir.display());
    for args in [
        vec!["step-info", "--step-yml", fifo.to_str().unwrap()],
        vec!["step-info", "--library", &lib],
    ] {
        let out = run_within(&mut stepman(&home, &args), Duration::from_secs(20));
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("not a regular file"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let ok = t.path().join("ok.yml");
    write(&ok, "title: Fine\n");
    let linked = t.path().join("linked.yml");
    link(&ok, &linked);
    let out = support::run(
        &home,
        &["step-info", "--step-yml", linked.to_str().unwrap()],
    );
    assert!(text(&out).contains("title: Fine"), "{}", text(&out));
}
