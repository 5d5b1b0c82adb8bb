//! The StepLib API (issue 16): `export-spec --export-type api` publishes a collection as the v2
//! tree of static documents, deterministically, and replaces a published tree with readers
//! reading it without any reader seeing a missing or partial document.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{self, output, run_ok, stepman};

/// Every file under `root` (following its top link), by relative path, with its bytes.
pub(crate) fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn json_at(root: &Path, rel: &str) -> Value {
    let p = root.join(rel);
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A local StepLib `lib/` in `t` with `versions` of the step `s`, set up in the store `home/`:
/// its directory, its URI and the store's home.
fn set_up_local(t: &support::TestDir, versions: &[&str]) -> (PathBuf, String, PathBuf) {
    let dir = t.path().join("lib");
    support::local_steplib(&dir, versions);
    let lib = dir.to_str().unwrap().to_string();
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &lib]));
    (dir, lib, home)
}

/// `export-spec --export-type api` of `lib` into `out`; its stderr.
pub(crate) fn publish(home: &Path, lib: &str, out: &Path) -> String {
    let o = output(&mut stepman(
        home,
        [
            "export-spec",
            "--steplib",
            lib,
            "--export-type",
            "api",
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    support::stderr_of(&o)
}

/// A published tree has every document of the format, in the old tool's shapes: step ids
/// sorted, versions newest first, the latest of each major, each version's step.json equal to
/// what `step-info --format json` gives as `step` for it; a second publish of the same
/// collection into another directory is byte-identical.
#[test]
fn a_published_tree_holds_every_document_and_is_deterministic() {
    let t = support::TestDir::new();
    let (_, lib, home) = set_up_local(&t, &["1.0.0", "1.10.0", "1.2.0", "2.0.0"]);
    let a = t.path().join("a/api");
    let b = t.path().join("b/api");
    publish(&home, &lib, &a);
    publish(&home, &lib, &b);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa, fb, "two publishes of one collection differ");
    let names: Vec<&String> = fa.keys().collect();
    assert_eq!(
        names,
        [
            "v2/index/step_ids.json",
            "v2/index/steps/s/latest.json",
            "v2/index/steps/s/versions.json",
            "v2/meta.json",
            "v2/steps/s/1.0.0/step.json",
            "v2/steps/s/1.10.0/step.json",
            "v2/steps/s/1.2.0/step.json",
            "v2/steps/s/2.0.0/step.json",
            "v2/steps/s/step-info.json",
        ]
    );
    assert!(fs::symlink_metadata(&a).unwrap().file_type().is_symlink());
    assert_eq!(
        json_at(&a, "v2/index/step_ids.json"),
        serde_json::json!({"step_ids": ["s"]})
    );
    assert_eq!(
        json_at(&a, "v2/index/steps/s/versions.json"),
        serde_json::json!({"step_id": "s", "versions": ["2.0.0", "1.10.0", "1.2.0", "1.0.0"]})
    );
    assert_eq!(
        json_at(&a, "v2/index/steps/s/latest.json"),
        serde_json::json!({"step_id": "s", "latest": "2.0.0",
            "latest_by_major": {"1": "1.10.0", "2": "2.0.0"}})
    );
    let meta = json_at(&a, "v2/meta.json");
    assert_eq!(meta["format_version"], 2, "{meta}");
    assert_eq!(meta["updated_at"], "1970-01-01T00:00:00Z", "{meta}");
    assert_eq!(
        meta["download_locations"],
        serde_json::json!([{"type": "zip", "src": "archives/"}]),
        "{meta}"
    );
    for v in ["1.0.0", "1.10.0", "1.2.0", "2.0.0"] {
        let info = run_ok(&mut stepman(
            &home,
            [
                "step-info",
                "--library",
                &lib,
                "--id",
                "s",
                "--version",
                v,
                "--format",
                "json",
            ],
        ));
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(
            json_at(&a, &format!("v2/steps/s/{v}/step.json")),
            info["step"],
            "{v}"
        );
    }
}

/// The real StepLib slice (skipped without `../shared/steplib-sample`): every group has its
/// documents, each `step_id` matches its path, the assets listed in step-info.json are there,
/// and `updated_at` is the newest `published_at`, not the clock (a second publish is the same
/// tree).
#[test]
fn the_steplib_sample_publishes_whole() {
    let Some(sample) = support::steplib_sample("the_steplib_sample_publishes_whole") else {
        return;
    };
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let lib = sample.display().to_string();
    run_ok(&mut stepman(&home, ["setup", "-c", &lib]));
    let out = t.path().join("api");
    publish(&home, &lib, &out);
    let first = fs::read_link(&out).unwrap();
    let again = publish(&home, &lib, &out);
    assert_eq!(fs::read_link(&out).unwrap(), first, "{again}");
    let ids = json_at(&out, "v2/index/step_ids.json");
    let ids: Vec<String> = serde_json::from_value(ids["step_ids"].clone()).unwrap();
    assert!(ids.len() > 30, "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let mut newest = String::new();
    for id in &ids {
        let versions = json_at(&out, &format!("v2/index/steps/{id}/versions.json"));
        assert_eq!(versions["step_id"], id.as_str());
        let latest = json_at(&out, &format!("v2/index/steps/{id}/latest.json"));
        assert_eq!(latest["latest"], versions["versions"][0], "{id}");
        for v in versions["versions"].as_array().unwrap() {
            let step = json_at(
                &out,
                &format!("v2/steps/{id}/{}/step.json", v.as_str().unwrap()),
            );
            assert!(step["title"].is_string(), "{id}@{v}");
            if let Some(p) = step["published_at"].as_str() {
                let p: jiff::Timestamp = p.parse().unwrap();
                newest = newest.max(p.to_string());
            }
        }
        let info = json_at(&out, &format!("v2/steps/{id}/step-info.json"));
        for a in info["asset_urls"].as_array().unwrap() {
            let rel = format!("v2/steps/{id}/{}", a.as_str().unwrap());
            assert!(out.join(&rel).is_file(), "{rel}");
        }
    }
    let meta = json_at(&out, "v2/meta.json");
    assert_eq!(meta["updated_at"], newest.as_str(), "{meta}");
    // What is published, a client's readers accept.
    use stepman::steplib::api;
    let read = |rel: &str| fs::read(out.join(rel)).unwrap();
    api::read_meta(&read("v2/meta.json")).unwrap();
    assert_eq!(
        api::read_step_ids(&read("v2/index/step_ids.json")).unwrap(),
        ids
    );
    for id in &ids {
        let vs = api::read_versions(&read(&format!("v2/index/steps/{id}/versions.json")), id)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        api::read_latest(&read(&format!("v2/index/steps/{id}/latest.json")), id).unwrap();
        api::read_step_info(&read(&format!("v2/steps/{id}/step-info.json"))).unwrap();
        for v in vs {
            api::read_step(&read(&format!("v2/steps/{id}/{v}/step.json")))
                .unwrap_or_else(|e| panic!("{id}@{v}: {e}"));
        }
    }
}

/// A reader process: reads `rel` under `root` `n` times, printing each document on a line of
/// its own; exits 1 at the first read that fails.
fn reader(root: &Path, rel: &str, n: u32) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(r#"i=0; while [ $i -lt "$3" ]; do cat "$1/$2" || exit 1; echo; i=$((i+1)); done"#)
        .arg("sh")
        .arg(root)
        .arg(rel)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Publishing again after the StepLib changed, while ten reader processes read documents in a
/// loop: every read finds the document, whole, from the old tree or the new one; afterwards
/// the output is the new tree, the one it replaced is kept and older ones are gone.
#[test]
fn republishing_while_readers_read_never_shows_a_missing_or_partial_document() {
    let t = support::TestDir::new();
    let (dir, lib, home) = set_up_local(&t, &["1.0.0"]);
    let out = t.path().join("pub/api");
    publish(&home, &lib, &out);
    let rel = "v2/index/steps/s/versions.json";
    let mut seen_docs = vec![fs::read_to_string(out.join(rel)).unwrap()];
    let mut trees: Vec<PathBuf> = vec![fs::read_link(&out).unwrap()];
    let readers: Vec<_> = (0..10).map(|_| reader(&out, rel, 400)).collect();
    for v in ["2.0.0", "3.0.0", "4.0.0"] {
        support::local_steplib(&dir, &[v]);
        run_ok(&mut stepman(&home, ["update", "-c", &lib]));
        publish(&home, &lib, &out);
        seen_docs.push(fs::read_to_string(out.join(rel)).unwrap());
        trees.push(fs::read_link(&out).unwrap());
    }
    let mut read = std::collections::BTreeSet::new();
    for r in readers {
        let o = r.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "a reader failed: {}",
            support::describe(&o)
        );
        let text = String::from_utf8(o.stdout).unwrap();
        assert_eq!(text.lines().count(), 400);
        for line in text.lines() {
            assert!(
                seen_docs.iter().any(|d| d == line),
                "a reader saw a document no publish wrote: {line:?}"
            );
            read.insert(line.to_string());
        }
    }
    assert!(
        read.len() > 1,
        "the readers overlapped no publish: {read:?}"
    );
    assert_eq!(
        seen_docs
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4
    );
    let parent = out.parent().unwrap();
    let mut left: Vec<String> = fs::read_dir(parent.join(".api.trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = trees[2..]
        .iter()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(
        left, want,
        "the current tree and the one before it are kept"
    );
}

/// A directory already at the output (a tree published by other means) is exchanged for the
/// link in one step and kept as the previous tree; `--output -` is refused.
#[test]
fn a_directory_at_the_output_is_exchanged_and_stdout_is_refused() {
    let t = support::TestDir::new();
    let (_, lib, home) = set_up_local(&t, &["1.0.0"]);
    let out = t.path().join("api");
    fs::create_dir_all(out.join("v2")).unwrap();
    fs::write(out.join("v2/meta.json"), "{}").unwrap();
    publish(&home, &lib, &out);
    assert!(fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
    assert_eq!(json_at(&out, "v2/meta.json")["format_version"], 2);
    let kept: Vec<String> = fs::read_dir(t.path().join(".api.trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("previous-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        fs::read_to_string(
            t.path()
                .join(".api.trees")
                .join(&kept[0])
                .join("v2/meta.json")
        )
        .unwrap(),
        "{}"
    );
    let o = output(&mut stepman(
        &home,
        [
            "export-spec",
            "--steplib",
            &lib,
            "--export-type",
            "api",
            "--output",
            "-",
        ],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", support::describe(&o));
    assert!(
        support::stderr_of(&o).contains("--output DIR"),
        "{}",
        support::describe(&o)
    );
}

/// A git StepLib's `updated_at` is the time of the commit its collection was built from (read
/// from the kept mirror), whatever the steps' `published_at` and the clock say.
#[test]
fn a_git_steplibs_updated_at_is_its_commit_time() {
    let t = support::TestDir::new();
    let src = t.path().join("steplib-src");
    support::write_steplib_yml(&src, &[("zip", "http://127.0.0.1:9/unused/")]);
    let yml = format!(
        "{}published_at: 2025-06-01T12:00:00Z\n",
        support::step_yml("s", None)
    );
    support::write_step(&src, "s", "1.0.0", &yml);
    support::git_bare_of(t.path(), &src, "lib.git");
    let daemon = support::GitDaemon::start(t.path());
    let uri = daemon.url("lib.git");
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
    let out = t.path().join("api");
    publish(&home, &uri, &out);
    let meta = json_at(&out, "v2/meta.json");
    // support::git commits with GIT_COMMITTER_DATE=2024-01-01T00:00:00Z.
    assert_eq!(meta["updated_at"], "2024-01-01T00:00:00Z", "{meta}");
    assert_eq!(
        meta["steplib_commit_sha"].as_str().map(str::len),
        Some(40),
        "{meta}"
    );
}
