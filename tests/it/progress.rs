//! Progress (PRODUCT §3: "progress bars only on a terminal"): an `activate` that downloads a
//! step of a few MB from a loopback server shows the download's bytes and rate when stderr is a
//! terminal (run under `script`, skipped without it), and nothing but its one result line when
//! stderr is a pipe or `--quiet` is given; `setup` shows its generation and `preload` one bar
//! of steps on a terminal, and `preload` a line per step on a pipe.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::support::*;

/// Size of the step's payload: big enough that its download is seen.
const PAYLOAD: usize = 3 << 20;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A zip of a step with `step.sh` and a random (incompressible, stored) payload.
fn big_step_zip() -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("step.sh", opts.unix_permissions(0o755))
        .unwrap();
    z.write_all(b"#!/bin/sh\necho big\n").unwrap();
    let mut pad = vec![0u8; PAYLOAD];
    Rng::with_seed(13).fill(&mut pad);
    z.start_file("data.bin", opts.unix_permissions(0o644))
        .unwrap();
    z.write_all(&pad).unwrap();
    z.finish().unwrap().into_inner()
}

/// A loopback server with a `spec.json` whose step `big@1.0.0` is a zip of a few MB there,
/// sent over about a second; and a temp dir for the store and the destinations.
struct World {
    dir: tempfile::TempDir,
    server: Server,
}

impl World {
    fn new() -> World {
        let server = Server::start();
        let spec = format!(
            r#"{{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"progress",
            "download_locations":[{{"type":"zip","src":"{}/archives/"}}],
            "steps":{{"big":{{"info":{{}},"latest_version_number":"1.0.0","versions":{{"1.0.0":{{"title":"big"}}}}}}}}}}"#,
            server.url()
        );
        server.script("/spec.json", vec![Answer::ok(spec.as_bytes())]);
        server.serve(
            "/archives/big/1.0.0/step.zip",
            big_step_zip(),
            Mode::Full {
                delay: Duration::from_secs(1),
            },
        );
        World {
            dir: tempfile::tempdir().unwrap(),
            server,
        }
    }

    fn spec(&self) -> String {
        format!("{}/spec.json", self.server.url())
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `stepman [flags] activate -c <spec> -i big -v 1.0.0 -p <dest>`, as words.
    fn activate_words(&self, flags: &[&str], dest: &Path) -> Vec<String> {
        let spec = self.spec();
        let mut words: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        words.extend(
            activate_args(&spec, "big", "1.0.0", dest)
                .into_iter()
                .map(String::from),
        );
        words
    }
}

/// Runs `stepman <words>` under `script`, so that its stdout and stderr are a terminal;
/// returns everything it wrote there. `None` (the test is skipped) without `script`.
fn on_a_terminal(home: &Path, words: &[String]) -> Option<Output> {
    let have = Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("skipping: `script` (util-linux) is not installed");
        return None;
    }
    let mut line = bin().display().to_string();
    for w in words {
        assert!(
            w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b)),
            "{w:?} needs quoting"
        );
        line.push(' ');
        line.push_str(w);
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    store_env(&mut cmd, home);
    cmd.env_remove("NO_COLOR")
        .env_remove("STEPMAN_HTTP_MIN_RATE")
        .env("TERM", "xterm");
    Some(run_within(
        &mut cmd,
        Duration::from_secs(60),
        "stepman under script",
    ))
}

#[test]
fn activate_on_a_terminal_shows_the_download_with_bytes_and_rate() {
    let w = World::new();
    let dest = w.dest("tty");
    let Some(o) = on_a_terminal(&w.home(), &w.activate_words(&[], &dest)) else {
        return;
    };
    let shown = text(&o.stdout);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(dest.join("data.bin").is_file(), "{shown}");
    assert!(
        shown.contains("downloading step big@1.0.0"),
        "no download progress: {shown:?}"
    );
    // The bytes so far of the total, and the rate.
    assert!(shown.contains("/3.00 MiB"), "no total: {shown:?}");
    assert!(
        shown.contains("MiB/s") || shown.contains("KiB/s"),
        "no rate: {shown:?}"
    );
    assert!(shown.contains("activated big@1.0.0"), "{shown:?}");
    assert_eq!(w.server.count("/archives/big/1.0.0/step.zip"), 1);

    // --quiet: nothing at all, even on a terminal.
    let dest = w.dest("quiet");
    fs::remove_dir_all(w.home()).unwrap();
    let o = on_a_terminal(&w.home(), &w.activate_words(&["-q"], &dest)).unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    assert!(dest.join("data.bin").is_file());
    assert_eq!(text(&o.stdout), "", "--quiet on a terminal");
    assert_eq!(w.server.count("/archives/big/1.0.0/step.zip"), 2);
}

#[test]
fn activate_with_stderr_a_pipe_prints_only_its_result() {
    let w = World::new();
    let dest = w.dest("piped");
    let mut cmd = stepman(&w.home(), w.activate_words(&[], &dest));
    let o = run_within(&mut cmd, Duration::from_secs(60), "activate");
    assert!(o.status.success(), "{}", describe(&o));
    assert!(dest.join("data.bin").is_file());
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("activated big@1.0.0 (")
            && err.ends_with(&format!(") into {}\n", dest.display())),
        "{err:?}"
    );
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    assert!(o.stdout.is_empty(), "{}", describe(&o));
}

#[test]
fn setup_and_preload_on_a_terminal_show_their_progress() {
    let w = World::new();
    // A local StepLib of three steps: setup generates it, group by group.
    let lib = w.dir.path().join("lib");
    local_steplib(&lib, &["1.0.0"]);
    for id in ["t", "u"] {
        write_step(&lib, id, "1.0.0", &step_yml(id, None));
    }
    let words = vec!["setup".to_string(), "-c".into(), lib.display().to_string()];
    let Some(o) = on_a_terminal(&w.home(), &words) else {
        return;
    };
    let shown = text(&o.stdout);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        shown.contains("generating "),
        "no generation progress: {shown:?}"
    );
    assert!(shown.contains(" of 3 steps"), "{shown:?}");
    assert!(shown.contains("set up "), "{shown:?}");

    // preload: one bar of the steps done, bytes and rate.
    let spec = w.spec();
    let words: Vec<String> = ["preload", "-c", &spec, "big@1.0.0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = on_a_terminal(&w.home(), &words).unwrap();
    let shown = text(&o.stdout);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(shown.contains("/1 steps, "), "no preload bar: {shown:?}");
    assert!(shown.contains("/s"), "no rate: {shown:?}");
    // On a terminal the bar replaces the line per step.
    assert!(!shown.contains("[1/1] big@1.0.0"), "{shown:?}");
    assert!(
        shown.contains("preload: 1 steps: 1 downloaded"),
        "{shown:?}"
    );
}

/// Off a terminal `preload` reports one line per step (the bar's replacement), then its
/// summary; with `--quiet`, nothing.
#[test]
fn preload_with_stderr_a_pipe_prints_a_line_per_step() {
    let w = World::new();
    let spec = w.spec();
    let o = run_within(
        &mut stepman(&w.home(), ["preload", "-c", &spec, "big@1.0.0"]),
        Duration::from_secs(60),
        "preload",
    );
    assert!(o.status.success(), "{}", describe(&o));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err:?}");
    assert!(
        lines[0].starts_with("[1/1] big@1.0.0: downloaded ("),
        "{err:?}"
    );
    assert!(
        lines[1].starts_with("preload: 1 steps: 1 downloaded, 0 already cached, 0 failed"),
        "{err:?}"
    );
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");

    let o = run_within(
        &mut stepman(&w.home(), ["-q", "preload", "-c", &spec, "big@1.0.0"]),
        Duration::from_secs(60),
        "preload -q",
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(text(&o.stderr), "", "{}", describe(&o));
}
