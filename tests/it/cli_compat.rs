//! The old tool's command-line forms and output shapes (`version`, `step-info`, `step-list`,
//! `export-spec`, `collections`) and the exit status of bad usage, checked field for field
//! against what the old tool prints.

use std::fs;
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
    // As in the old tool, the version flag wins over a command given with it.
    for form in [
        &["-version"][..],
        &["-v"],
        &["--version"],
        &["version"],
        &["-v", "collections"],
        &["-version", "step-list"],
    ] {
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
        // logrus's levels, which the old tool took, include `trace`.
        (&["-l", "TRACE", "collections"], None),
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

const STEP_YML: &str = "title: Hello
summary: Says hello
website: https://example.invalid
timeout: 30
inputs:
  - greeting: hello
    opts:
      title: Greeting
      is_required: true
  - plain:
outputs:
  - OUT:
    opts:
      is_expand: false
";

/// A local StepLib with step `hello` (1.0.0 and 1.1.0), an asset, and a step-info.yml with the
/// old tool's group fields plus one it does not know.
fn steplib_with_assets(lib: &Path) {
    fs::create_dir_all(lib.join("steps/hello/assets")).unwrap();
    fs::write(lib.join("steps/hello/assets/icon.svg"), "<svg/>").unwrap();
    fs::write(
        lib.join("steps/hello/step-info.yml"),
        "maintainer: community\ndeprecate_notes: use hi\nremoval_date: \"2030-01-01\"\nowner: someone\n",
    )
    .unwrap();
    for v in ["1.0.0", "1.1.0"] {
        fs::create_dir_all(lib.join(format!("steps/hello/{v}"))).unwrap();
        fs::write(lib.join(format!("steps/hello/{v}/step.yml")), STEP_YML).unwrap();
    }
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.0.0\nsteplib_source: t\nassets_download_base_uri: https://assets.invalid\n\
         download_locations:\n  - type: zip\n    src: archives/\n",
    )
    .unwrap();
}

/// What the old tool's `ParseStepDefinition` (FillMissingDefaults, envman's defaults for each
/// input and output; `omitempty` leaves out an empty `value_options` and `meta`) makes of
/// [`STEP_YML`].
fn step_with_defaults() -> Value {
    let opts = |title: &str, required: bool, expand: bool| {
        json!({
            "title": title, "description": "", "summary": "", "category": "",
            "is_required": required, "is_expand": expand, "is_sensitive": false,
            "is_dont_change_value": false, "is_template": false, "skip_if_empty": false,
            "unset": false,
        })
    };
    json!({
        "title": "Hello", "summary": "Says hello", "description": "",
        "website": "https://example.invalid", "source_code_url": "", "support_url": "",
        "is_requires_admin_user": false, "is_always_run": false, "is_skippable": false,
        "run_if": "", "timeout": 30,
        "inputs": [
            {"greeting": "hello", "opts": opts("Greeting", true, true)},
            {"plain": "", "opts": opts("", false, true)},
        ],
        "outputs": [{"OUT": "", "opts": opts("", false, false)}],
    })
}

fn json_out(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = stepman(home, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = output(&mut cmd);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

/// `step-info` of a StepLib step, by `--library`, by the deprecated `-c` and by
/// `STEPMAN_COLLECTION`: the old tool's fields, field for field.
#[test]
fn step_info_of_a_steplib_step_has_the_old_fields() {
    let t = tempfile::tempdir().unwrap();
    let (home, lib) = (t.path().join("home"), t.path().join("lib"));
    steplib_with_assets(&lib);
    let uri = lib.to_str().unwrap();
    // A local path is shown as its `file://` URI.
    let file_uri = format!("file://{uri}");
    let assets = json!({"icon.svg": "https://assets.invalid/hello/assets/icon.svg"});
    let mut step = step_with_defaults();
    step["asset_urls"] = assets.clone();
    let info = json!({
        "maintainer": "community", "deprecate_notes": "use hi", "removal_date": "2030-01-01",
        "asset_urls": assets,
    });
    for (args, env) in [
        (vec!["--library", uri], vec![]),
        (vec!["-c", uri], vec![]),
        (vec!["--collection", uri], vec![]),
        (vec![], vec![("STEPMAN_COLLECTION", uri)]),
    ] {
        let mut a = vec!["step-info"];
        a.extend(&args);
        a.extend(["--id", "hello", "--format", "json"]);
        let got = json_out(&home, &a, &env);
        let defpth = got["definition_pth"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(defpth.ends_with(".yml"), "{got}");
        assert_eq!(
            got,
            json!({
                "library": file_uri, "id": "hello", "version": "1.1.0", "latest_version": "1.1.0",
                "info": info, "step": step, "definition_pth": defpth,
            }),
            "{a:?}: no original_version when none was asked for"
        );
    }
    let got = json_out(
        &home,
        &[
            "step-info",
            "--library",
            uri,
            "--id",
            "hello",
            "--version",
            "1.0",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(got["version"], "1.0.0");
    assert_eq!(got["original_version"], "1.0");

    // Raw: the old tool's header lines, then the step.yml as it is written.
    let o = out(
        &home,
        &[
            "step-info",
            "--library",
            uri,
            "--id",
            "hello",
            "--version",
            "1.0.0",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let def = got["definition_pth"].as_str().unwrap();
    assert_eq!(
        stdout(&o),
        format!(
            "This step is deprecated!\nNote: use hi\nRemoval date: 2030-01-01\n\
             Maintainer: community\nLibrary: {file_uri}\nID: hello\nVersion: 1.0.0\n\
             LatestVersion: 1.1.0\nDefinition:\n\n{STEP_YML}\n"
        )
    );
    // --short: where the definition is, not what it says.
    let o = out(
        &home,
        &[
            "step-info",
            "--library",
            uri,
            "--id",
            "hello",
            "--version",
            "1.0",
            "--short",
        ],
    );
    assert!(
        stdout(&o).ends_with(&format!("LatestVersion: 1.1.0\nDefinition: {def}\n")),
        "{}",
        stdout(&o)
    );
}

/// `step-info --library path --id DIR` and `--step-yml DIR|FILE`: the local step, with the old
/// tool's defaults and without the fields a local step has not got.
#[test]
fn step_info_of_a_local_step_in_the_old_forms() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let dir = t.path().join("my-step");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("step.yml"), STEP_YML).unwrap();
    let d = dir.to_str().unwrap();
    let yml = dir.join("step.yml");
    let y = yml.to_str().unwrap();
    for (args, id) in [
        (vec!["--library", "path", "--id", d], d),
        (vec!["--step-yml", d], d),
        (vec!["--step-yml", y], y),
    ] {
        let mut a = vec!["step-info"];
        a.extend(&args);
        a.extend(["--format", "json"]);
        // A collection in the environment does not turn a local step into a StepLib lookup.
        let got = json_out(
            &home,
            &a,
            &[("STEPMAN_COLLECTION", "https://example.invalid/x.git")],
        );
        assert_eq!(
            got,
            json!({
                "library": "path", "id": id, "info": {}, "step": step_with_defaults(),
                "definition_pth": y,
            }),
            "{a:?}"
        );
    }
    let o = out(&home, &["step-info", "--library", "path", "--id", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("Library: path\nID: {d}\nVersion: \nLatestVersion: \nDefinition:\n\n{STEP_YML}\n")
    );
}

/// `step-info --library git --id URL --version REF`: the step.yml of the repository at `REF`.
#[test]
fn step_info_of_a_git_step_in_the_old_form() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("step.yml"), STEP_YML).unwrap();
    let repo = git_repo(t.path(), &src, "2.0.0");
    let got = json_out(
        &home,
        &[
            "step-info",
            "--library",
            "git",
            "--id",
            &repo.url,
            "--version",
            "2.0.0",
            "--format",
            "json",
        ],
        &[],
    );
    let def = got["definition_pth"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(def.ends_with("step.yml"), "{got}");
    assert_eq!(
        got,
        json!({
            // `info.commit` is ours: the commit the reference resolved to.
            "library": "git", "id": repo.url, "version": "2.0.0", "info": {"commit": repo.tagged},
            "step": step_with_defaults(), "definition_pth": def,
        })
    );
    assert_fsck_clean(&home);
}

/// `step-list`: `-c` sets the collection up when it is not; without `-c` every collection is
/// listed; raw output is the old tool's (title, id, latest version, summary wrapped at 130).
#[test]
fn step_list_sets_up_lists_every_collection_and_prints_the_old_raw_form() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    steplib_with_assets(&a);
    local_steplib(&b, &["2.0.0"]);
    let long = "x".repeat(140);
    fs::write(
        b.join("steps/s/2.0.0/step.yml"),
        format!("title: S\nsummary: |\n  first line\n  {long}\n"),
    )
    .unwrap();
    let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (fa, fb) = (format!("file://{ua}"), format!("file://{ub}"));

    // Not set up: -c sets it up.
    let o = out(&home, &["step-list", "-c", ua]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "Steps in StepLib ({fa}):\n\n * Hello\n   ID: hello\n   Latest Version: 1.1.0\n   \
             Summary: Says hello\n\n\n"
        )
    );
    let o = out(&home, &["step-list", "-c", ub]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let indent = " ".repeat(12);
    assert_eq!(
        stdout(&o),
        format!(
            "Steps in StepLib ({fb}):\n\n * S\n   ID: s\n   Latest Version: 2.0.0\n   \
             Summary: first line\n{indent}{}\n{indent}{}\n\n\n",
            &long[..130],
            &long[130..]
        )
    );

    // No -c (nor an empty one): every collection, one JSON line each.
    for args in [
        &["step-list", "-f", "json"][..],
        &["step-list", "-c", "", "-f", "json"],
    ] {
        let mut cmd = stepman(&home, args);
        cmd.env_remove("STEPMAN_COLLECTION");
        let o = output(&mut cmd);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut got: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        got.sort_by_key(|v| v["steplib"].as_str().unwrap_or_default().to_string());
        let mut want = vec![
            json!({"steplib": fa, "steps": ["hello"]}),
            json!({"steplib": fb, "steps": ["s"]}),
        ];
        want.sort_by_key(|v| v["steplib"].as_str().unwrap_or_default().to_string());
        assert_eq!(got, want, "{args:?}");
    }
    // No store at all: nothing to list.
    let o = out(&t.path().join("empty"), &["step-list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

/// `export-spec` sets the collection up when it is not, creates the output's directory, and
/// `--export-type minimal` / `latest` have the old tool's shapes.
#[test]
fn export_spec_sets_up_creates_the_directory_and_has_the_old_shapes() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let lib = t.path().join("lib");
    steplib_with_assets(&lib);
    let uri = lib.to_str().unwrap();
    let read = |p: &Path| -> Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };

    let minimal = t.path().join("new/dir/minimal.json");
    let o = out(
        &home,
        &[
            "export-spec",
            "--steplib",
            uri,
            "--output",
            minimal.to_str().unwrap(),
            "--export-type",
            "minimal",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = read(&minimal);
    // The old tool's minimal spec: each step an empty group (whose `info` Go always prints).
    assert_eq!(v["steps"], json!({"hello": {"info": {}}}), "{v}");
    assert_eq!(v["assets_download_base_uri"], "https://assets.invalid");
    for k in [
        "format_version",
        "generated_at_timestamp",
        "steplib_source",
        "download_locations",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }

    let latest = t.path().join("other/latest.json");
    let o = out(
        &home,
        &[
            "export-spec",
            "--steplib",
            uri,
            "--output",
            latest.to_str().unwrap(),
            "--export-type",
            "latest",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = read(&latest);
    let g = &v["steps"]["hello"];
    assert_eq!(
        g.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["info", "versions"],
        "the old latest spec has no latest_version_number: {g}"
    );
    assert_eq!(
        g["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["1.1.0"]
    );

    // A StepLib without assets: the old spec still has the field, empty.
    let plain = t.path().join("plain");
    local_steplib(&plain, &["1.0.0"]);
    let o = out(
        &home,
        &[
            "export-spec",
            "--steplib",
            plain.to_str().unwrap(),
            "--output",
            "-",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["assets_download_base_uri"], "", "{v}");
}

/// `collections --format json` with none set up prints `{"data":null}`, as the old tool.
#[test]
fn collections_json_with_none_is_data_null() {
    let t = tempfile::tempdir().unwrap();
    for home in [t.path().join("no-store"), t.path().join("empty-store")] {
        if home.ends_with("empty-store") {
            // A store exists, without collections.
            let src = t.path().join("src");
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join("f"), "x").unwrap();
            import(&home, &src, None);
        }
        let o = out(&home, &["collections", "--format", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "{\"data\":null}\n");
    }
}

/// Every subcommand's bad usage (a missing or empty required value, a value no flag takes, an
/// unknown flag) exits 2, says why on stderr, prints nothing on stdout and creates no store.
#[test]
fn bad_usage_of_every_subcommand_exits_2() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    local_steplib(&lib, &["1.0.0"]);
    let l = lib.to_str().unwrap();
    let dest = t.path().join("dest");
    let d = dest.to_str().unwrap();
    let forms: &[&[&str]] = &[
        &[],
        &["no-such-command"],
        &["--bogus", "collections"],
        &["-l", "loud", "collections"],
        &["version", "--format", "yml"],
        &["version", "--bogus"],
        &["setup"],
        &["setup", "-c", ""],
        &["update", "--bogus"],
        &["collections", "--format", "yml"],
        &["delete"],
        &["delete", "-c", ""],
        &["step-list", "-f", "yml"],
        &["step-info"],
        &["step-info", "-c", l],
        &["step-info", "--library", l],
        &["step-info", "-c", ""],
        &["step-info", "--library", "path"],
        &["step-info", "--library", "git"],
        &["step-info", "--library", l, "--id", "s", "--format", "yml"],
        &["download", "-i", "s"],
        &["download", "-c", l],
        &["download", "-c", "", "-i", "s"],
        &["download", "-c", l, "-i", ""],
        &["activate", "-c", l, "-i", "", "-p", d],
        &["activate", "-c", l, "-i", "s"],
        &["activate", "-c", "", "-i", "s", "-p", d],
        &["export-spec", "--steplib", l],
        &["export-spec", "--output", "-"],
        &["export-spec", "--steplib", "", "--output", "-"],
        &[
            "export-spec",
            "--steplib",
            l,
            "--output",
            "-",
            "--export-type",
            "tiny",
        ],
        &["preload"],
        &["preload", "-c", ""],
        &["preload", "-c", l, "--majors", "many"],
        &["list-cached"],
        &["list-cached", "-c", ""],
        &["store"],
        &["store", "import"],
        &["store", "resolve", "not a name"],
        &["store", "export", "a/b/c"],
        &["fsck", "--bogus"],
        &["gc", "--bogus"],
        &["toolkit"],
        &["toolkit", "install", "cobol"],
        &["completions"],
        &["completions", "tcsh"],
        &["man", "--bogus"],
    ];
    let mut wrong = Vec::new();
    for (i, args) in forms.iter().enumerate() {
        let home = t.path().join(format!("home-{i}"));
        let mut cmd = stepman(&home, *args);
        cmd.env_remove("STEPMAN_COLLECTION")
            .env_remove("STEPMAN_LIBRARY_URI")
            .env_remove("LOGLEVEL");
        let o = output(&mut cmd);
        if o.status.code() != Some(2)
            || stderr(&o).trim().is_empty()
            || !stdout(&o).is_empty()
            || home.exists()
        {
            wrong.push(format!(
                "{args:?}: {}, store created: {}, stdout {:?}, stderr {:?}",
                o.status,
                home.exists(),
                stdout(&o),
                stderr(&o)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Raw `collections`: each URI and its `spec_path`, a blank line between them and one at the
/// end, as the old tool prints them (and only that blank line when there is none).
#[test]
fn collections_raw_has_the_old_layout() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let o = out(&home, &["collections"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\n");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    local_steplib(&a, &["1.0.0"]);
    local_steplib(&b, &["1.0.0"]);
    for lib in [&a, &b] {
        let o = out(&home, &["setup", "-c", lib.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let v: Value =
        serde_json::from_str(&stdout(&out(&home, &["collections", "--format", "json"]))).unwrap();
    let want: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}\n  spec_path: {}\n",
                c["uri"].as_str().unwrap(),
                c["spec_path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(want.len(), 2);
    let o = out(&home, &["collections"]);
    assert_eq!(stdout(&o), format!("{}\n", want.join("\n")));
}
