//! Conventions users expect of a command line (PRODUCT §3): shell completions and man pages,
//! `-q/--quiet`, `--color` and `NO_COLOR`, `--json`, the global options' help heading.

use std::process::{Command, Output};

use super::support::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `stepman <args>` against a fresh store; must succeed; returns the output.
fn ok(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let o = run(home.path(), args);
    assert!(o.status.success(), "{args:?}: {}", describe(&o));
    o
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bash_completion_knows_the_commands_and_flags_and_is_valid_bash() {
    let o = ok(&["completions", "bash"]);
    let script = text(&o.stdout);
    assert!(script.contains("activate"), "{script}");
    assert!(script.contains("--collection"), "{script}");
    assert!(script.contains("step-info"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stepman.bash");
    std::fs::write(&f, &o.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
    assert!(o.stderr.is_empty(), "stderr: {}", text(&o.stderr));
}

#[test]
fn zsh_fish_elvish_powershell_completions_are_printed() {
    let zsh = text(&ok(&["completions", "zsh"]).stdout);
    assert!(zsh.starts_with("#compdef stepman"), "{zsh}");
    let fish = text(&ok(&["completions", "fish"]).stdout);
    assert!(fish.contains("complete -c stepman"), "{fish}");
    for shell in ["elvish", "powershell"] {
        let s = text(&ok(&["completions", shell]).stdout);
        assert!(
            s.contains("stepman") && s.contains("activate"),
            "{shell}: {s}"
        );
    }
    let home = tempfile::tempdir().unwrap();
    let o = run(home.path(), &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

#[test]
fn man_prints_the_top_level_page_as_roff() {
    let o = ok(&["man"]);
    let page = text(&o.stdout);
    assert!(
        page.lines().any(|l| l.starts_with(".TH STEPMAN 1 ")),
        "{page}"
    );
    assert!(page.contains("activate"), "{page}");
    assert!(page.contains("Example:"), "{page}");
    if !have("man") {
        eprintln!("skipping the man -l rendering: man is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stepman.1");
    std::fs::write(&f, &o.stdout).unwrap();
    let r = Command::new("man")
        .arg("-l")
        .arg(&f)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(r.status.success(), "man -l: {}", text(&r.stderr));
    let shown = text(&r.stdout);
    assert!(shown.contains("STEPMAN"), "{shown}");
    assert!(shown.contains("activate"), "{shown}");
}

#[test]
fn man_output_writes_one_page_per_command() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("man/man1");
    let o = run(home.path(), &["man", "--output", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
    for name in [
        "stepman.1",
        "stepman-activate.1",
        "stepman-store-import.1",
        "stepman-completions.1",
    ] {
        let page =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let title = name.trim_end_matches(".1").to_uppercase();
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!(".TH {title} 1 "))),
            "{name}: {page}"
        );
    }
    let activate = std::fs::read_to_string(dir.join("stepman-activate.1")).unwrap();
    assert!(activate.contains("copyyml"), "{activate}");
    assert!(
        !dir.join("stepman-help.1").exists(),
        "a page for the help subcommand"
    );
}

/// `-q/--quiet`: what a command did is not said, warnings are not logged, errors still are;
/// it wins over RUST_LOG and LOGLEVEL, and given with `--loglevel` it is bad usage.
#[test]
fn quiet_prints_only_errors() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    local_steplib(&lib, &["1.0.0"]);
    let l = lib.to_str().unwrap();
    let home = t.path().join("home");

    let loud = run(&home, &activate_args(l, "s", "1.0.0", &t.path().join("a")));
    assert!(loud.status.success(), "{}", describe(&loud));
    assert!(
        text(&loud.stderr).contains("activated s@1.0.0"),
        "{}",
        describe(&loud)
    );

    for flag in ["-q", "--quiet"] {
        let dest = t.path().join(flag);
        let mut args = vec![flag];
        args.extend(activate_args(l, "s", "1.0.0", &dest));
        let o = run(&home, &args);
        assert!(o.status.success(), "{}", describe(&o));
        assert_eq!(text(&o.stderr), "", "{flag}: {}", describe(&o));
        assert!(t.path().join(flag).join("step.sh").is_file());
    }
    // After the command, as any global option.
    let dest = t.path().join("after");
    let mut args = activate_args(l, "s", "1.0.0", &dest);
    args.push("--quiet");
    let o = run(&home, &args);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        describe(&o)
    );

    // A warning is not shown, even with RUST_LOG or LOGLEVEL asking for more.
    let warns = ["--read-only-store", "/nonexistent/store", "collections"];
    let o = run(&home, &warns);
    assert!(
        text(&o.stderr).contains("no store there"),
        "{}",
        describe(&o)
    );
    for (k, v) in [("RUST_LOG", "debug"), ("LOGLEVEL", "debug")] {
        let mut cmd = stepman(&home, ["-q"].iter().chain(&warns));
        cmd.env_remove("RUST_LOG").env(k, v);
        let o = output(&mut cmd);
        assert!(o.status.success(), "{k}={v}: {}", describe(&o));
        assert_eq!(text(&o.stderr), "", "{k}={v}: {}", describe(&o));
        assert!(
            text(&o.stdout).contains(l),
            "data still on stdout: {}",
            describe(&o)
        );
    }

    // An error is still said.
    let dest = t.path().join("missing");
    let mut args = vec!["-q"];
    args.extend(activate_args(l, "s", "9.9.9", &dest));
    let o = run(&home, &args);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("stepman: ") && err.contains("9.9.9"),
        "{err}"
    );

    // fsck: clean says nothing; damage found is said (exit 1).
    let o = run(&home, &["-q", "fsck"]);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        describe(&o)
    );
    let obj = object_dirs(&home)
        .into_iter()
        .find(|d| d.join("step.sh").is_file())
        .expect("the step's object");
    std::fs::write(obj.join("step.sh"), "echo tampered\n").unwrap();
    let o = run(&home, &["-q", "fsck"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stderr).starts_with("stepman fsck: "),
        "{}",
        describe(&o)
    );
    assert!(text(&o.stderr).contains(" left"), "{}", describe(&o));

    let o = run(&home, &["-q", "-l", "debug", "collections"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("'--quiet' cannot be used with '--loglevel"),
        "{}",
        describe(&o)
    );
}

/// `--color`, `NO_COLOR` and `CLICOLOR_FORCE` decide whether log lines and clap's errors are
/// colored: a piped stderr is plain by default, `--color always` colors it whatever NO_COLOR
/// says, NO_COLOR (not empty) wins over CLICOLOR_FORCE, `--color never` wins over both.
#[test]
fn color_follows_the_flag_and_no_color() {
    let home = tempfile::tempdir().unwrap();
    // A warning on stderr: a read-only store that is not there.
    let warn = ["--read-only-store", "/nonexistent/store", "collections"];
    let stderr_with = |flags: &[&str], env: &[(&str, &str)]| {
        let mut cmd = stepman(home.path(), flags.iter().chain(&warn));
        cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = output(&mut cmd);
        assert!(o.status.success(), "{flags:?} {env:?}: {}", describe(&o));
        let err = text(&o.stderr);
        assert!(err.contains("no store there"), "{flags:?} {env:?}: {err}");
        err
    };
    let esc = "\u{1b}[";
    for (flags, env, colored) in [
        (&[][..], &[][..], false),
        (&["--color", "always"], &[], true),
        (&["--color=always"], &[("NO_COLOR", "1")], true),
        (&[], &[("NO_COLOR", "1")], false),
        (&[], &[("CLICOLOR_FORCE", "1")], true),
        (&[], &[("CLICOLOR_FORCE", "0")], false),
        (&[], &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")], false),
        (&[], &[("NO_COLOR", ""), ("CLICOLOR_FORCE", "1")], true),
        (&["--color", "never"], &[("CLICOLOR_FORCE", "1")], false),
        (&["--color", "auto"], &[], false),
    ] {
        let err = stderr_with(flags, env);
        assert_eq!(err.contains(esc), colored, "{flags:?} {env:?}: {err:?}");
    }
    // clap's own errors too.
    let o = run(home.path(), &["--color", "always", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains(esc), "{:?}", text(&o.stderr));
    let o = run(home.path(), &["--color", "never", "--bogus"]);
    assert!(!text(&o.stderr).contains(esc), "{:?}", text(&o.stderr));
    let o = run(home.path(), &["--color", "rainbow", "collections"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// `--json` is `--format json` wherever `--format` is (`collections`, `step-list`,
/// `step-info`, `version`), is bad usage with `--format raw`, and every command's JSON is one
/// compact document on one line.
#[test]
fn json_flag_everywhere_and_one_line_each() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    local_steplib(&lib, &["1.0.0", "1.1.0"]);
    let l = lib.to_str().unwrap();
    let home = t.path().join("home");
    let dest = t.path().join("dest");
    run_ok(&mut stepman(&home, activate_args(l, "s", "1.0.0", &dest)));
    let out = |args: &[&str]| {
        let mut cmd = stepman(&home, args);
        cmd.env_remove("STEPMAN_COLLECTION")
            .env_remove("STEPMAN_LIBRARY_URI");
        let o = output(&mut cmd);
        assert!(o.status.success(), "{args:?}: {}", describe(&o));
        text(&o.stdout)
    };
    let one_line = |args: &[&str], s: &str| {
        assert!(
            s.ends_with('\n') && s.trim_end().lines().count() == 1,
            "{args:?}: not one line: {s:?}"
        );
        let v: serde_json::Value =
            serde_json::from_str(s).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {s:?}"));
        v
    };
    let pairs: &[(&[&str], &[&str])] = &[
        (&["collections", "--json"], &["collections", "-f", "json"]),
        (
            &["step-list", "-c", l, "--json"],
            &["step-list", "-c", l, "--format", "json"],
        ),
        (
            &["step-info", "--library", l, "--id", "s", "--json"],
            &["step-info", "--library", l, "--id", "s", "--format", "json"],
        ),
        (&["version", "--json"], &["version", "--format", "json"]),
        (
            &["version", "--full", "--json"],
            &["version", "--full", "--format", "json"],
        ),
    ];
    for (json, format) in pairs {
        let a = out(json);
        let b = out(format);
        assert_eq!(a, b, "{json:?} and {format:?} differ");
        one_line(json, &a);
        // `--json --format json` is no conflict.
        let both: Vec<&str> = json.iter().chain(&["--format", "json"]).copied().collect();
        assert_eq!(out(&both), a, "{both:?}");
    }
    let v = one_line(
        &["step-info"],
        &out(&["step-info", "--library", l, "--id", "s", "--json"]),
    );
    assert_eq!(v["version"], "1.1.0", "{v}");
    assert_eq!(
        out(&["version", "--json"]).trim(),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );

    // The commands whose only JSON is `--json`: one line each too.
    for args in [
        &["fsck", "--json"][..],
        &["gc", "--dry-run", "--json"],
        &["gc", "--json"],
        &["list-cached", "-c", l, "--json"],
        &["preload", "-c", l, "s@1", "--dry-run", "--json"],
        &["preload", "-c", l, "s@1.0.0", "s@1.1.0", "--json"],
    ] {
        one_line(args, &out(args));
    }

    // `--json` with `--format raw` is bad usage; nothing is created.
    for args in [
        &["collections", "--json", "-f", "raw"][..],
        &["step-list", "-c", l, "--format", "raw", "--json"],
        &[
            "step-info",
            "--library",
            l,
            "--id",
            "s",
            "--json",
            "--format",
            "raw",
        ],
        &["version", "--json", "--format", "raw"],
    ] {
        let fresh = t.path().join("fresh");
        let o = run(&fresh, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", describe(&o));
        assert!(
            text(&o.stderr).contains("--json cannot be used with --format raw"),
            "{args:?}: {}",
            describe(&o)
        );
        assert!(
            o.stdout.is_empty() && !fresh.exists(),
            "{args:?}: {}",
            describe(&o)
        );
    }
}

/// The options every command takes are under their own heading in each command's help, and
/// one set in the environment (`STEPMAN_HOME`, …) is never shown as given in a usage line.
#[test]
fn global_options_have_their_heading_and_stay_out_of_usage_lines() {
    let home = tempfile::tempdir().unwrap();
    let help = |cmd: &mut Command| {
        cmd.env_remove("STEPMAN_HOME")
            .env_remove("STEPMAN_NO_FSYNC")
            .env_remove("RUST_LOG");
        output(cmd)
    };
    for args in [
        &["activate", "--help"][..],
        &["preload", "-h"],
        &["--help"],
        &["store", "import", "--help"],
    ] {
        let o = help(&mut stepman(home.path(), args));
        assert!(o.status.success(), "{args:?}: {}", describe(&o));
        let page = text(&o.stdout);
        let (options, global) = page
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{args:?}: no Global options heading: {page}"));
        for flag in [
            "--home <DIR>",
            "--quiet",
            "--color <WHEN>",
            "--loglevel <LEVEL>",
            "--offline",
        ] {
            assert!(
                global.contains(flag),
                "{args:?}: {flag} not under Global options: {page}"
            );
            assert!(
                !options.contains(flag),
                "{args:?}: {flag} under Options: {page}"
            );
        }
        assert!(global.contains("STEPMAN_HOME"), "{args:?}: {page}");
    }
    let usage_of = |o: &Output| -> String {
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        all.lines()
            .find(|l| l.starts_with("Usage: "))
            .unwrap_or_else(|| panic!("no usage line: {}", describe(o)))
            .to_string()
    };
    for env in [
        &[][..],
        &[
            ("STEPMAN_HOME", "/tmp/somewhere"),
            ("STEPMAN_NO_FSYNC", "1"),
            ("LOGLEVEL", "info"),
            ("STEPMAN_READ_ONLY_STORES", "/tmp/a:/tmp/b"),
        ],
    ] {
        let mut cmd = stepman(home.path(), ["activate", "--help"]);
        let mut missing = stepman(home.path(), ["activate"]);
        for c in [&mut cmd, &mut missing] {
            c.env_remove("STEPMAN_HOME")
                .env_remove("STEPMAN_NO_FSYNC")
                .env_remove("STEPMAN_COLLECTION");
            for (k, v) in env {
                c.env(k, v);
            }
        }
        let usage = usage_of(&output(&mut cmd));
        assert_eq!(
            usage, "Usage: stepman activate [OPTIONS] --id <ID> --path <PATH>",
            "{env:?}"
        );
        let o = output(&mut missing);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
        let usage = usage_of(&o);
        assert_eq!(
            usage, "Usage: stepman activate --id <ID> --path <PATH>",
            "{env:?}"
        );
    }
    // A bad STEPMAN_NO_FSYNC is still bad usage, naming the variable.
    let mut cmd = stepman(home.path(), ["collections"]);
    cmd.env("STEPMAN_NO_FSYNC", "maybe");
    let o = output(&mut cmd);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("STEPMAN_NO_FSYNC"),
        "{}",
        describe(&o)
    );
}

/// STEPMAN_GO in the environment (as a runner image sets it for `--prepare`) does not make
/// `activate`, `download` or `preload` without `--prepare` bad usage: clap counted the variable
/// as `--go` given, which required `--prepare`.
#[test]
fn stepman_go_in_the_environment_needs_no_prepare() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    local_steplib(&lib, &["1.0.0"]);
    let l = lib.to_str().unwrap();
    let home = t.path().join("home");
    let dest = t.path().join("dest");
    for args in [
        activate_args(l, "s", "1.0.0", &dest),
        vec!["download", "-c", l, "--id", "s", "--version", "1.0.0"],
        vec!["preload", "-c", l, "s@1.0.0"],
    ] {
        let mut cmd = stepman(&home, &args);
        cmd.env("STEPMAN_GO", "/nonexistent/go");
        let o = output(&mut cmd);
        assert!(o.status.success(), "{args:?}: {}", describe(&o));
    }
    assert!(dest.join("step.sh").is_file());
}

/// Every command in the top-level help has its summary, and a command's own help starts with it
/// and lists its options: the arguments of each command are built only when it runs
/// (`Command::defer`), which must not lose what the help shows.
#[test]
fn top_level_help_lists_every_command_with_its_summary() {
    let help = text(&ok(&["--help"]).stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A summary wrapped onto the next line is indented further.
        .filter(|l| !l.starts_with("   "))
        .collect();
    assert!(commands.len() >= 20, "{help}");
    for line in &commands {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        assert!(words.next().is_some(), "no summary for {name}: {help}");
    }
    let info = text(&ok(&["step-info", "--help"]).stdout);
    assert!(info.starts_with("Show a step version."), "{info}");
    assert!(info.contains("--library <LIBRARY>"), "{info}");
    let zsh = text(&ok(&["completions", "zsh"]).stdout);
    assert!(zsh.contains("--copy-spec-json"), "{zsh}");
}
