//! The old tool's command-line forms and output shapes (`version`, `step-info`, `step-list`,
//! `export-spec`, `collections`) and the exit status of bad usage, checked field for field
//! against what the old tool prints.

use std::path::Path;

use serde_json::{Value, json};

use super::support::*;

fn out(home: &Path, args: &[&str]) -> std::process::Output {
    output(&mut stepman(home, args))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `stepman -version`, `-v`, `--version` and `version` print a bare semver line (the bitrise CLI
/// runs `stepman -version` and needs at least 0.18.7); `--format json` and `--full` have the old
/// tool's shapes.
#[test]
fn version_forms_print_a_bare_semver_the_bitrise_cli_accepts() {
    let home = tempfile::tempdir().unwrap();
    let want = env!("CARGO_PKG_VERSION");
    for form in [&["-version"][..], &["-v"], &["--version"], &["version"]] {
        let o = out(home.path(), form);
        assert_eq!(o.status.code(), Some(0), "{form:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{want}\n"), "{form:?}");
    }
    let (major, minor, patch) = {
        let p: Vec<u64> = want.split('.').map(|x| x.parse().unwrap()).collect();
        (p[0], p[1], p[2])
    };
    assert!(
        (major, minor, patch) >= (0, 18, 7),
        "the bitrise CLI refuses a stepman older than 0.18.7, we are {want}"
    );

    // The old tool's JSON of the short form is the version as a JSON string.
    let o = out(home.path(), &["version", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, json!(want));

    // --full: the old tool's fields (empty ones left out of the JSON).
    let o = out(home.path(), &["version", "--format", "json", "--full"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["version"], json!(want));
    assert!(v["os"].as_str().is_some_and(|s| s.contains(" (")), "{v}");
    for k in v.as_object().unwrap().keys() {
        assert!(
            ["version", "os", "go", "build_number", "commit"].contains(&k.as_str()),
            "unknown field {k} in {v}"
        );
    }
    let o = out(home.path(), &["version", "--full"]);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("version: {want}"), "{text}");
    assert!(lines[1].starts_with("os: "), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("build_number:")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.starts_with("commit:")), "{text}");

    let o = out(home.path(), &["version", "--format", "yml"]);
    assert_eq!(o.status.code(), Some(2), "a bad --format is bad usage");
}

/// `-l/--loglevel` and `LOGLEVEL` set the verbosity; a bad value is bad usage that names the
/// flag or the variable.
#[test]
fn loglevel_flag_and_variable_set_verbosity() {
    let home = tempfile::tempdir().unwrap();
    // `collections` with no store logs nothing at warn; at debug the store lookup says more.
    let quiet = out(home.path(), &["collections"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    for (args, env) in [
        (&["-l", "debug", "collections"][..], None),
        (&["--loglevel", "debug", "collections"], None),
        (&["collections", "--loglevel=debug"], None),
        (&["collections"], Some("debug")),
    ] {
        let mut cmd = stepman(home.path(), args);
        cmd.env_remove("RUST_LOG");
        if let Some(l) = env {
            cmd.env("LOGLEVEL", l);
        }
        let o = output(&mut cmd);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("DEBUG"),
            "{args:?} LOGLEVEL={env:?}: no debug line in {:?}",
            stderr(&o)
        );
    }
    // error: even warnings are silenced.
    let mut cmd = stepman(home.path(), ["-l", "error", "collections"]);
    cmd.env("RUST_LOG", "debug");
    let o = output(&mut cmd);
    assert!(!stderr(&o).contains("DEBUG"), "{}", stderr(&o));

    let o = out(home.path(), &["-l", "loud", "collections"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--loglevel"), "{}", stderr(&o));
    let mut cmd = stepman(home.path(), ["collections"]);
    cmd.env("LOGLEVEL", "loud");
    let o = output(&mut cmd);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("LOGLEVEL"), "{}", stderr(&o));
}
