//! Reading a StepLib through its API (issue 16): a published v2 tree served on loopback, set up
//! as a collection, answers every lookup as the StepLib it was published from does, fetching
//! only the documents a lookup needs, once, and answering from the store within their time to
//! live, after a network failure (with a warning) and offline.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};

use serde_json::Value;

use crate::steplib_api::{files, publish};
use crate::support::http::{Answer, Server};
use crate::support::{self, output, run_ok, stepman};

/// A local StepLib with step `s` in `versions`, set up in `home/` and published as an API tree,
/// served at `<server>/lib/v2` with the StepLib's `archives/` beside it at `<server>/lib/archives`
/// (the tree's relative download `src` is relative to the API's base). Returns the local
/// StepLib's URI, the API's base URL and the server.
struct Published {
    local: String,
    base: String,
    server: Server,
    home: PathBuf,
}

fn publish_local(t: &support::TestDir, versions: &[&str]) -> Published {
    let dir = t.path().join("lib");
    support::local_steplib(&dir, versions);
    let local = dir.to_str().unwrap().to_string();
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", &local]));
    let out = t.path().join("published/api");
    publish(&home, &local, &out);
    let server = Server::start();
    server.mount_static("/lib/v2", &out.join("v2"));
    server.mount_static("/lib/archives", &dir.join("archives"));
    let base = format!("{}/lib", server.url());
    Published {
        local,
        base,
        server,
        home,
    }
}

/// `step-info --format json` of `id@version` in `library`, with `env`.
fn step_info_cmd(
    home: &Path,
    library: &str,
    id: &str,
    version: &str,
    env: &[(&str, &str)],
) -> std::process::Command {
    let mut cmd = stepman(
        home,
        [
            "step-info",
            "--library",
            library,
            "--id",
            id,
            "--version",
            version,
            "--format",
            "json",
        ],
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// [`step_info_cmd`]'s answer, without what names where it was found (`library`,
/// `definition_pth`).
fn step_info(home: &Path, library: &str, id: &str, version: &str, env: &[(&str, &str)]) -> Value {
    let o = output(&mut step_info_cmd(home, library, id, version, env));
    assert!(
        o.status.success(),
        "{id}@{version}: {}",
        support::describe(&o)
    );
    let mut v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v.as_object_mut().unwrap();
    m.remove("library");
    m.remove("definition_pth");
    v
}

/// The requests of the server whose path is under `/lib/` (documents and archives), by path.
fn requests(s: &Server) -> BTreeMap<String, usize> {
    s.counts()
        .into_iter()
        .filter(|(p, _)| p.starts_with("/lib/"))
        .collect()
}

/// Set up by its URL alone (recognised by its `v2/meta.json`), the API collection gives every
/// lookup the answer of the StepLib it was published from, and the same activated tree. A cold
/// activation fetches four documents (meta, versions, step-info, the one step.json) and the
/// archive, each once; a lookup within the time to live (exact or latest) fetches nothing.
#[test]
fn an_api_collection_answers_as_the_steplib_it_was_published_from() {
    let t = support::TestDir::new();
    let p = publish_local(&t, &["1.0.0", "1.1.0", "2.0.0"]);
    let home = t.path().join("api-home");
    let dest = t.path().join("step-api");
    run_ok(&mut stepman(
        &home,
        [
            "activate",
            "-c",
            &p.base,
            "-i",
            "s",
            "-v",
            "2.0.0",
            "-p",
            dest.to_str().unwrap(),
        ],
    ));
    let cold = requests(&p.server);
    let want: BTreeMap<String, usize> = [
        "/lib/v2/meta.json",
        "/lib/v2/index/steps/s/versions.json",
        "/lib/v2/steps/s/step-info.json",
        "/lib/v2/steps/s/2.0.0/step.json",
        "/lib/archives/s/2.0.0/step.zip",
    ]
    .iter()
    .map(|p| (p.to_string(), 1))
    .collect();
    assert_eq!(cold, want, "a cold activation's requests");
    let local_dest = t.path().join("step-local");
    run_ok(&mut stepman(
        &p.home,
        [
            "activate",
            "-c",
            &p.local,
            "-i",
            "s",
            "-v",
            "2.0.0",
            "-p",
            local_dest.to_str().unwrap(),
        ],
    ));
    assert_eq!(files(&dest), files(&local_dest));
    // Within the time to live, lookups cost no request: the versions this activation fetched,
    // the latest, a major.
    for v in ["2.0.0", "", "2"] {
        let api = step_info(&home, &p.base, "s", v, &[]);
        assert_eq!(api, step_info(&p.home, &p.local, "s", v, &[]), "s@{v}");
    }
    assert_eq!(
        requests(&p.server),
        cold,
        "lookups within the TTL asked the API"
    );
    // The other versions: one step.json each, then answered from the store.
    for v in ["1.0.0", "1.1.0", "1"] {
        let api = step_info(&home, &p.base, "s", v, &[]);
        assert_eq!(api, step_info(&p.home, &p.local, "s", v, &[]), "s@{v}");
    }
    let after = requests(&p.server);
    assert_eq!(after.get("/lib/v2/steps/s/1.0.0/step.json"), Some(&1));
    assert_eq!(after.get("/lib/v2/steps/s/1.1.0/step.json"), Some(&1));
    assert_eq!(after.get("/lib/v2/index/steps/s/versions.json"), Some(&1));
    // The listing commands.
    let list = run_ok(&mut stepman(
        &home,
        ["step-list", "-c", &p.base, "--format", "json"],
    ));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["steps"], serde_json::json!(["s"]), "{list}");
    let cached = run_ok(&mut stepman(&home, ["list-cached", "-c", &p.base]));
    assert_eq!(cached.trim(), "s@2.0.0", "{cached}");
    let fsck = output(&mut stepman(&home, ["fsck"]));
    assert!(fsck.status.success(), "{}", support::describe(&fsck));
}

/// Raw `step-info` (the default format) of a version no lookup fetched yet prints its definition:
/// the lookup fetches that version's `step.json`, and `--short` names a file that exists.
#[test]
fn a_cold_raw_step_info_fetches_the_definition_it_prints() {
    let t = support::TestDir::new();
    let p = publish_local(&t, &["1.0.0", "2.0.0"]);
    let home = t.path().join("api-home");
    run_ok(&mut stepman(&home, ["setup", "-c", &p.base]));
    let raw = |home: &Path, library: &str, v: &str, short: bool| {
        let mut args = vec![
            "step-info",
            "--library",
            library,
            "--id",
            "s",
            "--version",
            v,
        ];
        if short {
            args.push("--short");
        }
        run_ok(&mut stepman(home, args))
    };
    let cold = raw(&home, &p.base, "1.0.0", false);
    let step: Value = serde_json::from_str(
        cold.split_once("Definition:\n\n")
            .unwrap_or_else(|| panic!("no definition printed: {cold}"))
            .1,
    )
    .unwrap_or_else(|e| panic!("the definition printed is not the step.json ({e}): {cold}"));
    let local = step_info(&p.home, &p.local, "s", "1.0.0", &[]);
    assert_eq!(step, local["step"], "{cold}");
    assert!(cold.contains("Version: 1.0.0\n"), "{cold}");
    let short = raw(&home, &p.base, "2.0.0", true);
    let path = short
        .lines()
        .find_map(|l| l.strip_prefix("Definition: "))
        .unwrap_or_else(|| panic!("no definition path: {short}"));
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let step: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        step,
        step_info(&p.home, &p.local, "s", "2.0.0", &[])["step"]
    );
    let after = requests(&p.server);
    assert_eq!(after.get("/lib/v2/steps/s/1.0.0/step.json"), Some(&1));
    assert_eq!(after.get("/lib/v2/steps/s/2.0.0/step.json"), Some(&1));
}

/// With the API gone, a lookup whose documents are past their time to live answers from the
/// cached copies and says so (stale-if-error); offline mode answers from the cache and names what
/// is not there; a step activated before activates again.
#[test]
fn a_network_failure_answers_from_the_cache_and_offline_mode_reads_it() {
    let t = support::TestDir::new();
    let mut p = publish_local(&t, &["1.0.0", "2.0.0"]);
    let home = t.path().join("api-home");
    let dest = t.path().join("step");
    let activate = |home: &Path, env: &[(&str, &str)]| {
        let mut cmd = stepman(
            home,
            [
                "activate",
                "-c",
                &p.base,
                "-i",
                "s",
                "-v",
                "2",
                "-p",
                dest.to_str().unwrap(),
            ],
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd)
    };
    let o = activate(&home, &[]);
    assert!(o.status.success(), "{}", support::describe(&o));
    p.server.stop();
    // Every document is stale at once; the collection itself too (STEPMAN_STEPLIB_TTL=0).
    let stale = [
        ("STEPMAN_API_INDEX_TTL", "0"),
        ("STEPMAN_API_INFO_TTL", "0"),
        ("STEPMAN_STEPLIB_TTL", "0"),
        ("STEPMAN_HTTP_ATTEMPTS", "1"),
    ];
    let o = activate(&home, &stale);
    assert!(o.status.success(), "{}", support::describe(&o));
    let err = support::stderr_of(&o);
    assert!(err.contains("using the copy cached"), "{err}");
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        "echo 2.0.0\n"
    );
    let offline = [("BITRISE_OFFLINE_MODE", "true")];
    let o = activate(&home, &offline);
    assert!(o.status.success(), "{}", support::describe(&o));
    let info = step_info(&home, &p.base, "s", "2.0.0", &offline);
    assert_eq!(info["version"], "2.0.0");
    // A version whose step.json was never fetched is not there offline: said so.
    let o = output(&mut step_info_cmd(&home, &p.base, "s", "1.0.0", &offline));
    assert!(!o.status.success(), "{}", support::describe(&o));
    let err = support::stderr_of(&o);
    assert!(err.contains("offline") && err.contains("s@1.0.0"), "{err}");
    let fsck = output(&mut stepman(&home, ["fsck"]));
    assert!(fsck.status.success(), "{}", support::describe(&fsck));
}

fn scripted_api() -> (Server, String) {
    let s = Server::start();
    s.script(
        "/api/v2/meta.json",
        vec![Answer::ok(
            br#"{"format_version":2,"updated_at":"2026-01-01T00:00:00Z"}"#,
        )],
    );
    let base = format!("{}/api", s.url());
    (s, base)
}

/// Documents are untrusted: a `step_id` that is not its path's, a document past the size limit,
/// nesting deeper than the parser's limit and an id that would traverse paths each fail with an
/// error naming the document, and none is cached (the next lookup asks again).
#[test]
fn hostile_documents_fail_clearly_and_are_never_cached() {
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let (s, base) = scripted_api();
    run_ok(&mut stepman(&home, ["setup", "--api", "-c", &base]));
    s.script(
        "/api/v2/index/steps/a/versions.json",
        vec![Answer::ok(br#"{"step_id":"b","versions":["1.0.0"]}"#)],
    );
    let mut big = br#"{"step_id":"big","versions":["1.0.0"],"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 5 << 20));
    big.extend(br#""}"#);
    s.script(
        "/api/v2/index/steps/big/versions.json",
        vec![Answer::ok(&big)],
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    s.script(
        "/api/v2/index/steps/deep/versions.json",
        vec![Answer::ok(deep.as_bytes())],
    );
    s.script(
        "/api/v2/index/step_ids.json",
        vec![Answer::ok(br#"{"step_ids":["a","../../x"]}"#)],
    );
    let fails = |args: &[&str], want: &str| {
        let o: Output = output(&mut stepman(&home, args));
        assert!(!o.status.success(), "{args:?}: {}", support::describe(&o));
        let err = support::stderr_of(&o);
        assert!(err.contains(want), "{args:?}: {err}");
    };
    for _ in 0..2 {
        fails(
            &["step-info", "--library", &base, "--id", "a"],
            "does not match its path",
        );
        fails(
            &["step-info", "--library", &base, "--id", "big"],
            "exceeds the limit",
        );
        fails(
            &["step-info", "--library", &base, "--id", "deep"],
            "invalid JSON",
        );
        fails(&["step-list", "-c", &base], "cannot name a path segment");
    }
    // Asked twice each: nothing was cached.
    assert_eq!(s.count("/api/v2/index/steps/a/versions.json"), 2);
    assert_eq!(s.count("/api/v2/index/steps/deep/versions.json"), 2);
    assert_eq!(s.count("/api/v2/index/step_ids.json"), 2);
    let fsck = output(&mut stepman(&home, ["fsck"]));
    assert!(fsck.status.success(), "{}", support::describe(&fsck));
}

/// Ten processes looking up one uncached step at once fetch each document once (each is made
/// under its name's lock, like any object) and all answer the same.
#[test]
fn ten_concurrent_cold_lookups_fetch_each_document_once() {
    let t = support::TestDir::new();
    let p = publish_local(&t, &["1.0.0", "2.0.0"]);
    let home = t.path().join("api-home");
    run_ok(&mut stepman(&home, ["setup", "-c", &p.base]));
    let mut children: Vec<Child> = (0..10)
        .map(|_| {
            support::gated_stepman(
                &home,
                [
                    "step-info",
                    "--library",
                    &p.base,
                    "--id",
                    "s",
                    "--format",
                    "json",
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    support::release(&mut children);
    let mut answers = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", support::describe(&o));
        answers.push(o.stdout);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    let r = requests(&p.server);
    for doc in [
        "/lib/v2/meta.json",
        "/lib/v2/index/steps/s/versions.json",
        "/lib/v2/steps/s/step-info.json",
        "/lib/v2/steps/s/2.0.0/step.json",
    ] {
        assert_eq!(r.get(doc), Some(&1), "{doc}: {r:?}");
    }
}

/// The real StepLib slice (skipped without `../shared/steplib-sample`) published and read back
/// through its API: `step-info` of every version is the local collection's answer, apart from the
/// asset URLs, which point into the API's tree (the same files).
#[test]
fn the_steplib_sample_reads_the_same_through_its_api() {
    let Some(sample) = support::steplib_sample("the_steplib_sample_reads_the_same_through_its_api")
    else {
        return;
    };
    let t = support::TestDir::new();
    let home = t.path().join("home");
    let lib = sample.display().to_string();
    run_ok(&mut stepman(&home, ["setup", "-c", &lib]));
    let out = t.path().join("api");
    publish(&home, &lib, &out);
    let server = Server::start();
    server.mount_static("/api/v2", &out.join("v2"));
    let base = format!("{}/api", server.url());
    let api_home = t.path().join("api-home");
    run_ok(&mut stepman(&api_home, ["setup", "-c", &base]));
    let ids: Value = serde_json::from_str(&run_ok(&mut stepman(
        &api_home,
        ["step-list", "-c", &base, "--format", "json"],
    )))
    .unwrap();
    let local_ids: Value = serde_json::from_str(&run_ok(&mut stepman(
        &home,
        ["step-list", "-c", &lib, "--format", "json"],
    )))
    .unwrap();
    assert_eq!(ids["steps"], local_ids["steps"]);
    // An asset's URL differs (the StepLib's asset base against the API's tree); its file name
    // does not.
    let strip_assets = |mut v: Value| {
        for k in ["info", "step"] {
            if let Some(Value::Object(urls)) = v[k].get_mut("asset_urls") {
                for (name, url) in urls.iter_mut() {
                    let u = url.as_str().unwrap_or_default();
                    assert!(u.ends_with(&format!("/{name}")), "{name}: {u}");
                    *url = Value::Null;
                }
            }
        }
        v
    };
    let mut n = 0;
    for id in ids["steps"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        let versions: Value = serde_json::from_slice(
            &fs::read(out.join(format!("v2/index/steps/{id}/versions.json"))).unwrap(),
        )
        .unwrap();
        for v in versions["versions"].as_array().unwrap() {
            let v = v.as_str().unwrap();
            let api = strip_assets(step_info(&api_home, &base, id, v, &[]));
            let local = strip_assets(step_info(&home, &lib, id, v, &[]));
            assert_eq!(api, local, "{id}@{v}");
            n += 1;
        }
    }
    assert!(n > 200, "{n} versions compared");
}
