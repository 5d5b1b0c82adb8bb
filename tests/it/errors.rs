//! Errors a user can act on: each test runs the real binary into one mistake and checks the
//! words of the message (what the user gave, the cause, what to do), the exit status, and that
//! nothing was left behind. The tests marked so run the binary as `nobody` (root and `setpriv`
//! needed; they skip otherwise) or need `ssh` (they skip without it).
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support::{self, NOBODY, TestDir, bin, describe, nobody_stepman, output, run, stepman};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A local StepLib at `<t>/lib` with `script@1.0.0`, `scripts@1.0.0`, `git-clone@8.0.0` and
/// `cache-pull@2.0.0` (no download locations that answer): its URI.
fn steplib(t: &Path) -> String {
    let lib = t.join("lib");
    support::write_steplib_yml(&lib, &[("zip", "http://127.0.0.1:9/unused/")]);
    for (id, v) in [
        ("script", "1.0.0"),
        ("scripts", "1.0.0"),
        ("git-clone", "8.0.0"),
        ("cache-pull", "2.0.0"),
    ] {
        support::write_step(&lib, id, v, &support::step_yml(id, None));
    }
    format!("file://{}", lib.display())
}

fn stderr(o: &Output) -> String {
    support::stderr_of(o)
}

/// Asserts that `o` failed with `code` and that its stderr holds every one of `words`.
#[track_caller]
fn assert_fails_saying(o: &Output, code: i32, words: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", describe(o));
    let err = stderr(o);
    for w in words {
        assert!(err.contains(w), "stderr does not say {w:?}: {err}");
    }
}

#[test]
fn a_git_error_keeps_its_cause_and_names_the_url_once() {
    // Needs `ssh`: git runs it for an ssh:// URL.
    if Command::new("ssh").arg("-V").output().is_err() {
        eprintln!("skipping {}: ssh is not installed", module_path!());
        return;
    }
    let t = TestDir::new();
    let home = t.path().join("home");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let url = "ssh://127.0.0.1:1/foo/bar.git";
    let o = run(&home, &["setup", "-c", url]);
    assert_fails_saying(
        &o,
        1,
        &[
            // ssh's own line: the cause, which git's last line alone ("...and the repository
            // exists.") drops.
            "ssh: connect to host 127.0.0.1 port 1: Connection refused",
            "fatal: Could not read from remote repository",
        ],
    );
    let err = stderr(&o);
    assert!(
        !err.contains("Please make sure you have the correct access rights"),
        "git's advice lines are not kept: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert_eq!(
        err.matches(url).count(),
        1,
        "the URL is not named once: {err}"
    );
}

#[test]
fn an_unknown_url_scheme_is_refused_before_git_runs_listing_the_accepted_ones() {
    let t = TestDir::new();
    let home = t.path().join("home");
    let log = t.path().join("git.log");
    let wrapper = support::git_wrapper(&t.path().join("wrap"), &log);
    let url = "htps://github.com/bitrise-io/bitrise-steplib.git";
    let o = output(
        stepman(&home, ["setup", "-c", url]).env("PATH", support::path_with_first(&wrapper)),
    );
    assert_fails_saying(
        &o,
        2,
        &[
            url,
            "unknown URL scheme htps://",
            "accepted: https://, http://, ssh://, git://",
            "file:// or a path",
        ],
    );
    assert!(!stderr(&o).contains("remote helper"), "{}", stderr(&o));
    assert!(
        fs::read_to_string(&log).unwrap_or_default().is_empty(),
        "git ran"
    );
    assert!(!home.exists(), "a store was created for a URL refused");
}

/// `stepman <args>` with `HOME` and `STEPMAN_HOME` as given (`None`: unset), in `cwd`.
fn with_homes(cwd: &Path, home: Option<&str>, stepman_home: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(cwd)
        .env_remove("HOME")
        .env_remove("STEPMAN_HOME")
        .env("RUST_LOG", "warn");
    if let Some(h) = home {
        c.env("HOME", h);
    }
    if let Some(h) = stepman_home {
        c.env("STEPMAN_HOME", h);
    }
    output(&mut c)
}

#[test]
fn an_empty_home_counts_as_unset_and_no_store_appears_in_the_working_directory() {
    let t = TestDir::new();
    let uri = steplib(t.path());
    let cwd = t.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    for (home, stepman_home) in [(Some(""), None), (Some(""), Some("")), (None, Some(""))] {
        let o = with_homes(&cwd, home, stepman_home, &["setup", "-c", &uri]);
        assert_fails_saying(
            &o,
            2,
            &[
                "neither STEPMAN_HOME nor HOME is set",
                "empty value counts as unset",
            ],
        );
        assert_eq!(
            fs::read_dir(&cwd).unwrap().count(),
            0,
            "HOME={home:?} STEPMAN_HOME={stepman_home:?} wrote into the working directory"
        );
    }
    // An empty STEPMAN_HOME gives way to HOME.
    let user = t.path().join("user");
    fs::create_dir(&user).unwrap();
    let o = with_homes(&cwd, user.to_str(), Some(""), &["setup", "-c", &uri]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(user.join(".stepman/store-v1").is_dir());
}

#[test]
fn an_empty_home_or_netrc_never_reads_a_netrc_in_the_working_directory() {
    let t = TestDir::new();
    let server = support::Server::start();
    let spec = r#"{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"x",
        "download_locations":[],"steps":{"hello":{"info":{},"latest_version_number":"1.0.0",
        "versions":{"1.0.0":{"title":"Hello"}}}}}"#;
    server.script("/spec.json", vec![support::Answer::ok(spec.as_bytes()); 2]);
    let cwd = t.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    fs::write(
        cwd.join(".netrc"),
        "machine 127.0.0.1 login bot password NOT-FOR-YOU\n",
    )
    .unwrap();
    let url = format!("{}/spec.json", server.url());
    for (i, netrc) in [None, Some("")].into_iter().enumerate() {
        let mut c = stepman(&t.path().join(format!("home{i}")), ["setup", "-c", &url]);
        c.current_dir(&cwd).env("HOME", "").env_remove("NETRC");
        if let Some(n) = netrc {
            c.env("NETRC", n);
        }
        let o = output(&mut c);
        assert!(o.status.success(), "{}", describe(&o));
    }
    let sent: Vec<_> = server
        .requests_for("/spec.json")
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(sent, [None, None], "./.netrc was read");
}

#[test]
fn an_empty_home_is_no_tilde_for_the_working_directory() {
    let t = TestDir::new();
    let cwd = t.path().join("cwd");
    fs::create_dir_all(cwd.join("my-step")).unwrap();
    fs::write(cwd.join("my-step/step.sh"), "echo cwd\n").unwrap();
    let dest = t.path().join("dest");
    let o = output(
        stepman(
            &t.path().join("home"),
            [
                "activate",
                "-i",
                "path::~/my-step",
                "-p",
                dest.to_str().unwrap(),
            ],
        )
        .current_dir(&cwd)
        .env("HOME", ""),
    );
    assert_fails_saying(&o, 1, &["path::~/my-step", "not a directory"]);
    assert!(!dest.exists(), "./my-step was activated for ~/my-step");
}

#[test]
fn a_home_that_is_a_file_is_named_with_where_it_came_from() {
    let t = TestDir::new();
    let uri = steplib(t.path());
    let file = t.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let f = file.to_str().unwrap();
    let o = output(Command::new(bin()).args(["--home", f, "setup", "-c", &uri]));
    assert_fails_saying(&o, 2, &[&format!("--home {f}: not a directory")]);
    let o = run(&file, &["setup", "-c", &uri]);
    assert_fails_saying(&o, 2, &[&format!("STEPMAN_HOME={f}: not a directory")]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn every_setting_that_cannot_be_read_is_a_usage_error_naming_it() {
    let t = TestDir::new();
    let uri = steplib(t.path());
    let dest = t.path().join("dest");
    let activate = [
        "activate",
        "-c",
        &uri,
        "-i",
        "script",
        "-p",
        dest.to_str().unwrap(),
    ];
    let setup = ["setup", "-c", &uri];
    let step_info = ["step-info", "--library", &uri, "--id", "script"];
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "STEPMAN_HTTP_TIMEOUT",
            "10s",
            &setup,
            "whole seconds, at least 1",
        ),
        (
            "STEPMAN_HTTP_TIMEOUT",
            "0",
            &setup,
            "whole seconds, at least 1",
        ),
        (
            "STEPMAN_HTTP_MIN_RATE",
            "fast",
            &setup,
            "whole bytes per second",
        ),
        ("STEPMAN_HTTP_ATTEMPTS", "0", &setup, "from 1 to 10"),
        ("STEPMAN_HTTP_ATTEMPTS", "11", &setup, "from 1 to 10"),
        (
            "BITRISE_OFFLINE_MODE",
            "maybe",
            &setup,
            "true, false, 1, 0, yes or no",
        ),
        (
            "STEPMAN_OFFLINE",
            "on",
            &setup,
            "true, false, 1, 0, yes or no",
        ),
        (
            "STEPMAN_NO_FSYNC",
            "sometimes",
            &setup,
            "true, false, 1, 0, yes or no",
        ),
        (
            "STEPMAN_STEPLIB_TTL",
            "soon",
            &activate,
            "whole seconds or `off`",
        ),
        ("STEPMAN_HTTP_ATTEMPTS", "many", &step_info, "from 1 to 10"),
        (
            "BITRISE_EXPERIMENT_PRECOMPILED_STEPS",
            "sure",
            &activate,
            "true, false, 1, 0, yes or no",
        ),
        (
            "STEPMAN_GO_DOWNLOAD_BASE",
            "ftp://example.invalid/dl",
            &["toolkit", "install", "go"],
            "an https:// or http:// URL",
        ),
    ];
    for (i, (var, value, args, expected)) in cases.iter().enumerate() {
        let home = t.path().join(format!("home{i}"));
        let o = output(stepman(&home, *args).env(var, value));
        assert_fails_saying(&o, 2, &[&format!("{var}={value:?}: expected"), expected]);
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{var}: {}",
            stderr(&o)
        );
        if *var != "STEPMAN_GO_DOWNLOAD_BASE" {
            assert!(!home.exists(), "{var}={value}: a store was created");
        }
        assert!(!dest.exists());
    }
    // What each takes, in any case; empty counts as unset.
    let home = t.path().join("home-ok");
    let o = output(
        stepman(&home, setup)
            .env("BITRISE_OFFLINE_MODE", "YES")
            .env("STEPMAN_OFFLINE", "")
            .env("STEPMAN_NO_FSYNC", "True")
            .env("STEPMAN_HTTP_ATTEMPTS", "10")
            .env("STEPMAN_HTTP_TIMEOUT", " 5 ")
            .env("STEPMAN_HTTP_MIN_RATE", "0")
            .env("STEPMAN_READ_ONLY_STORES", "")
            .env("STEPMAN_MAX_ENTRIES", ""),
    );
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn a_mistyped_step_id_suggests_the_closest_ids() {
    let t = TestDir::new();
    let uri = steplib(t.path());
    let home = t.path().join("home");
    let dest = t.path().join("dest");
    let d = dest.to_str().unwrap();
    let want =
        format!("step scirpt not found in {uri} (no such step); did you mean script or scripts?");
    for args in [
        vec!["activate", "-c", &uri, "-i", "scirpt", "-p", d],
        vec!["download", "-c", &uri, "--id", "scirpt"],
        vec!["step-info", "--library", &uri, "--id", "scirpt"],
    ] {
        let o = run(&home, &args);
        assert_fails_saying(&o, 1, &[&want]);
    }
    let o = run(&home, &["preload", "-c", &uri, "git-clon@8"]);
    assert_fails_saying(&o, 1, &["git-clon@8", "did you mean git-clone?"]);
    // Nothing close: no guess.
    let o = run(
        &home,
        &["activate", "-c", &uri, "-i", "xcode-archive", "-p", d],
    );
    assert_fails_saying(&o, 1, &["step xcode-archive not found"]);
    assert!(!stderr(&o).contains("did you mean"), "{}", stderr(&o));
    assert!(!dest.exists());
}

#[test]
fn a_missing_version_of_an_old_collection_hints_at_update() {
    let t = TestDir::new();
    let uri = steplib(t.path());
    let home = t.path().join("home");
    support::run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
    let dest = t.path().join("dest");
    let args = support::activate_args(&uri, "git-clone", "9.9.9", &dest);
    // Fresh: only what is there.
    let o = run(&home, &args);
    let fresh = format!("version 9.9.9 of git-clone not found in {uri} (versions: 8.0.0)");
    assert_fails_saying(&o, 1, &[&fresh]);
    assert!(!stderr(&o).contains("-u"), "{}", stderr(&o));
    // Set up three days ago, past STEPMAN_STEPLIB_TTL: say so, and what to do.
    let names = support::store_root(&home).join("names");
    let link = fs::read_dir(&names)
        .unwrap()
        .flatten()
        .map(|r| r.path().join("_steplib/current"))
        .find(|l| l.is_symlink())
        .expect("the collection's name");
    let st = Command::new("touch")
        .args(["-h", "-d", "3 days ago"])
        .arg(&link)
        .status()
        .unwrap();
    assert!(st.success());
    let o = run(&home, &args);
    assert_fails_saying(
        &o,
        1,
        &[&format!(
            "{fresh}; the collection was last updated 3 days ago: run with -u to update it"
        )],
    );
    assert!(!dest.exists());
}

#[test]
fn an_io_error_is_shown_in_words_without_its_number() {
    let t = TestDir::new();
    let home = t.path().join("home");
    let missing = t.path().join("missing");
    let o = run(&home, &["store", "import", missing.to_str().unwrap()]);
    assert_fails_saying(
        &o,
        1,
        &[missing.to_str().unwrap(), "No such file or directory"],
    );
    assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
    // Over the network too: nothing listens on port 9 of loopback.
    let uri = steplib(t.path());
    let o = output(
        stepman(&home, ["download", "-c", &uri, "--id", "script"])
            .env("STEPMAN_HTTP_ATTEMPTS", "1"),
    );
    assert_fails_saying(
        &o,
        1,
        &["http://127.0.0.1:9/unused/script/1.0.0/step.zip: Connection refused"],
    );
    assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
}

/// A scratch dir for `nobody`: the temp dir (0755), `work/` owned by `nobody` with a local
/// StepLib whose `script@1.0.0` is a zip, set up and downloaded into `work/home` as `nobody`,
/// and `work/ro/`, owned by `nobody` but 0555. `None` (the test skips) without root and setpriv.
fn nobody_scratch(test: &str) -> Option<(TestDir, PathBuf, String)> {
    if !support::root_with_setpriv(test) {
        return None;
    }
    let t = TestDir::new();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY)).unwrap();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0"]);
    let uri = lib.to_str().unwrap().to_string();
    let home = work.join("home");
    let o = output(&mut nobody_stepman(
        &home,
        ["download", "-c", &uri, "--id", "s"],
    ));
    assert!(o.status.success(), "{}", describe(&o));
    let ro = work.join("ro");
    fs::create_dir(&ro).unwrap();
    std::os::unix::fs::chown(&ro, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    Some((t, work, uri))
}

#[test]
fn activating_into_a_directory_that_cannot_be_written_names_it() {
    // As `nobody` (root writes anywhere).
    let Some((_t, work, uri)) = nobody_scratch(module_path!()) else {
        return;
    };
    let ro = work.join("ro");
    let dest = ro.join("step");
    let o = output(&mut nobody_stepman(
        &work.join("home"),
        support::activate_args(&uri, "s", "1.0.0", &dest),
    ));
    assert_fails_saying(
        &o,
        1,
        &[&format!(
            "cannot write {}: its parent directory {} cannot be written by this process: \
             Permission denied",
            dest.display(),
            ro.display()
        )],
    );
    assert!(!stderr(&o).contains(".lock"), "{}", stderr(&o));
    let dest = dest.to_str().unwrap();
    assert_eq!(stderr(&o).matches(dest).count(), 1, "{}", stderr(&o));
    assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
}

#[test]
fn a_step_yml_under_a_file_is_refused_before_the_step_is_activated() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0"]);
    let home = t.path().join("home");
    let file = t.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let dest = t.path().join("dest");
    let yml = file.join("step.yml");
    let mut args = support::activate_args(lib.to_str().unwrap(), "s", "1.0.0", &dest);
    args.extend(["-y", yml.to_str().unwrap()]);
    let o = run(&home, &args);
    assert_fails_saying(
        &o,
        1,
        &[&format!("create dir {}: Not a directory", file.display())],
    );
    assert!(!dest.exists(), "the step was activated all the same");
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn a_step_yml_that_cannot_be_written_fails_before_the_step_is_activated() {
    // As `nobody` (root writes anywhere).
    let Some((_t, work, uri)) = nobody_scratch(module_path!()) else {
        return;
    };
    let ro = work.join("ro");
    let yml = ro.join("step.yml");
    for before in ["missing", "activated"] {
        let dest = work.join(format!("dest-{before}"));
        let home = work.join("home");
        if before == "activated" {
            let o = output(&mut nobody_stepman(
                &home,
                support::activate_args(&uri, "s", "1.0.0", &dest),
            ));
            assert!(o.status.success(), "{}", describe(&o));
            fs::write(dest.join("mine"), "kept").unwrap();
        }
        let listing = |d: &Path| {
            d.exists().then(|| {
                let mut v: Vec<_> = support::paths_under(d)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                v.sort();
                v
            })
        };
        let was = listing(&dest);
        let mut args = support::activate_args(&uri, "s", "1.0.0", &dest);
        args.extend(["-y", yml.to_str().unwrap()]);
        let o = output(&mut nobody_stepman(&home, args));
        assert_fails_saying(
            &o,
            1,
            &[&format!(
                "cannot write {}: its parent directory {} cannot be written by this process: \
                 Permission denied",
                yml.display(),
                ro.display()
            )],
        );
        assert_eq!(listing(&dest), was, "{before}: the destination changed");
        assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
    }
}

#[test]
fn gc_of_a_store_that_cannot_be_written_says_so_like_the_other_commands() {
    // As `nobody`, on its own store made read-only (an owner's `chmod -R a-w`).
    let Some((_t, work, uri)) = nobody_scratch(module_path!()) else {
        return;
    };
    let home = work.join("home");
    let store = support::store_root(&home);
    let chmod = |mode: &str| {
        let st = Command::new("chmod")
            .args(["-R", mode])
            .arg(&store)
            .status()
            .unwrap();
        assert!(st.success());
    };
    chmod("a-w");
    let gc = output(&mut nobody_stepman(&home, ["gc"]));
    let delete = output(&mut nobody_stepman(&home, ["delete", "-c", &uri]));
    chmod("u+w");
    let said = format!(
        "store {} is read-only for this process: cannot",
        store.display()
    );
    assert_fails_saying(&delete, 1, &[&said, "cannot remove a name"]);
    assert_fails_saying(&gc, 1, &[&said, "cannot collect garbage"]);
    assert!(!stderr(&gc).contains("lock"), "{}", stderr(&gc));
}
