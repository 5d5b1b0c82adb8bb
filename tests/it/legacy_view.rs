//! `legacy-view`: the old tool's layout written from the store, checked against the format the
//! old tool's Go code reads (`routing.json`, `step_collections/<alias>/{collection/,
//! spec/spec.json, spec/slim-spec.json, cache/<id>/<version>/}`; PRODUCT §9). The old tool is not
//! run: its activation is an rsync of `cache/<id>/<version>/` whose existence is the hit, so
//! every cached dir must be the whole object.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::{self, output, run_ok, stepman};

/// A store with a local StepLib (`s` 1.0.0 and 2.0.0 as zips) set up, and an old tool's home.
struct Fixture {
    _t: support::TestDir,
    root: PathBuf,
    home: PathBuf,
    lib: String,
    legacy: PathBuf,
}

impl Fixture {
    /// The fixture with the given versions of `s` downloaded into the store.
    fn new(downloaded: &[&str]) -> Fixture {
        Fixture::make(downloaded, false)
    }

    /// [`Fixture::new`], with the StepLib a git repository (its `collection/` is then a clone:
    /// files git writes, with git's modes).
    fn new_git(downloaded: &[&str]) -> Fixture {
        Fixture::make(downloaded, true)
    }

    fn make(downloaded: &[&str], git: bool) -> Fixture {
        let t = support::TestDir::new();
        let root = t.path().to_path_buf();
        let lib = root.join("lib");
        support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
        if git {
            support::git(&lib, &["init", "-q"]);
            support::git(&lib, &["add", "-A"]);
            support::git(&lib, &["commit", "-q", "-m", "steplib"]);
        }
        let lib = lib.to_str().unwrap().to_string();
        let home = root.join("store");
        let f = Fixture {
            _t: t,
            home,
            lib,
            legacy: root.join("legacy-home/.stepman"),
            root,
        };
        run_ok(&mut stepman(&f.home, ["setup", "-c", &f.lib]));
        for v in downloaded {
            f.download(v);
        }
        f
    }

    fn download(&self, v: &str) {
        run_ok(&mut stepman(
            &self.home,
            ["download", "-c", &self.lib, "-i", "s", "-v", v],
        ));
    }

    fn view(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "legacy-view",
            "-c",
            &self.lib,
            "--legacy-home",
            self.legacy.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        output(&mut stepman(&self.home, args))
    }

    fn view_ok(&self) {
        let o = self.view(&[]);
        assert!(o.status.success(), "{}", support::describe(&o));
    }

    fn routes(&self) -> BTreeMap<String, String> {
        let text = fs::read_to_string(self.legacy.join("routing.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `step_collections/<alias>/` of the StepLib, as `routing.json` routes it.
    fn collection_dir(&self) -> PathBuf {
        let uri = format!("file://{}", fs::canonicalize(&self.lib).unwrap().display());
        let alias =
            self.routes().get(&uri).cloned().unwrap_or_else(|| {
                panic!("routing.json has no route of {uri}: {:?}", self.routes())
            });
        self.legacy.join("step_collections").join(alias)
    }

    /// The object directory the store's name of `s@v` points at.
    fn object_of(&self, v: &str) -> PathBuf {
        let names = support::store_root(&self.home).join("names");
        let routes: Vec<String> = fs::read_dir(&names)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('_'))
            .collect();
        assert_eq!(routes.len(), 1, "{routes:?}");
        PathBuf::from(
            run_ok(&mut stepman(
                &self.home,
                ["store", "resolve", &format!("{}/s/{v}", routes[0])],
            ))
            .trim(),
        )
    }
}

/// Every entry under `root` (hidden ones included) with its inode, size and mtime.
fn snapshot(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = support::paths_under(root)
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            format!(
                "{} ino={} len={} mtime={}.{}",
                p.display(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .collect();
    v.sort();
    v
}

fn json_file(p: &Path) -> Value {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// The view's `spec.json` reads back into the collection's versions and fields (what
/// `export-spec` writes of it), `slim-spec.json` into each step's latest version; each
/// `cache/<id>/<version>/` is byte for byte the store's object; `routing.json` keeps a route it
/// did not write; `collections --json` names the view's `spec.json`.
#[test]
fn a_view_reads_back_as_the_collection_and_its_caches_are_the_objects() {
    let f = Fixture::new(&["1.0.0", "2.0.0"]);
    fs::create_dir_all(&f.legacy).unwrap();
    fs::write(
        f.legacy.join("routing.json"),
        "{\n\t\"https://github.com/o/other-steplib.git\": \"1700000000\"\n}",
    )
    .unwrap();
    f.view_ok();
    let routes = f.routes();
    assert_eq!(
        routes.get("https://github.com/o/other-steplib.git"),
        Some(&"1700000000".to_string()),
        "a route the view did not write is kept: {routes:?}"
    );
    assert_eq!(routes.len(), 2, "{routes:?}");
    let dir = f.collection_dir();

    let spec = json_file(&dir.join("spec/spec.json"));
    let exported: Value = serde_json::from_str(&run_ok(&mut stepman(
        &f.home,
        ["export-spec", "--steplib", &f.lib, "--output", "-"],
    )))
    .unwrap();
    for field in [
        "format_version",
        "steplib_source",
        "download_locations",
        "assets_download_base_uri",
        "steps",
    ] {
        assert_eq!(spec[field], exported[field], "spec.json's {field}");
    }
    assert!(spec["generated_at_timestamp"].as_u64().is_some(), "{spec}");
    let versions: Vec<&String> = spec["steps"]["s"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0"]);
    assert_eq!(spec["steps"]["s"]["latest_version_number"], "2.0.0");
    assert_eq!(spec["steps"]["s"]["versions"]["1.0.0"]["title"], "S");

    let slim = json_file(&dir.join("spec/slim-spec.json"));
    let slim_versions: Vec<&String> = slim["steps"]["s"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(slim_versions, ["2.0.0"], "{slim}");
    assert_eq!(slim["steps"]["s"]["info"], spec["steps"]["s"]["info"]);

    for v in ["1.0.0", "2.0.0"] {
        let cache = dir.join("cache/s").join(v);
        support::assert_same_tree(&cache, &f.object_of(v));
        assert_eq!(
            fs::read_to_string(cache.join("step.sh")).unwrap(),
            format!("echo {v}\n")
        );
    }
    assert!(
        dir.join("collection/steplib.yml").is_file(),
        "collection/ is a copy of the local StepLib"
    );
    assert!(dir.join("collection/steps/s/2.0.0/step.yml").is_file());

    let listed: Value = serde_json::from_str(&run_ok(&mut stepman(
        &f.home,
        ["collections", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(
        listed["data"][0]["spec_path"].as_str().map(PathBuf::from),
        Some(dir.join("spec/spec.json")),
        "{listed}"
    );
    for d in [&f.legacy, &dir, &dir.join("spec"), &dir.join("cache/s")] {
        assert_eq!(support::staging_entries(d), Vec::<String>::new());
    }
}

/// A second view with nothing new changes nothing (every entry keeps its inode and mtime); one
/// after another download adds that version and rewrites nothing else but the specs' record.
#[test]
fn a_second_view_changes_nothing_and_a_later_one_only_adds() {
    let f = Fixture::new(&["1.0.0"]);
    f.view_ok();
    let before = snapshot(&f.legacy);
    f.view_ok();
    assert_eq!(
        snapshot(&f.legacy),
        before,
        "a second view changed the layout"
    );

    f.download("2.0.0");
    let dir = f.collection_dir();
    let kept = snapshot(&dir.join("cache/s/1.0.0"));
    let routing = snapshot(&f.legacy.join("routing.json"));
    let o = f.view(&["--json"]);
    assert!(o.status.success(), "{}", support::describe(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["collections"][0]["steps"],
        serde_json::json!([["s", "1.0.0", "kept"], ["s", "2.0.0", "written"]]),
        "{report}"
    );
    assert_eq!(report["routing_written"], false, "{report}");
    assert_eq!(snapshot(&dir.join("cache/s/1.0.0")), kept);
    assert_eq!(snapshot(&f.legacy.join("routing.json")), routing);
    support::assert_same_tree(&dir.join("cache/s/2.0.0"), &f.object_of("2.0.0"));
}

/// A `cache/<id>/<version>/` that differs from the store's object is left as it is and named,
/// with exit 1 (the rest of the view written); `--replace-differing` replaces it.
#[test]
fn a_differing_cache_dir_is_refused_and_named_unless_replace_differing() {
    let f = Fixture::new(&["1.0.0", "2.0.0"]);
    f.view_ok();
    let dir = f.collection_dir();
    let changed = dir.join("cache/s/1.0.0/step.sh");
    fs::write(&changed, "echo tampered\n").unwrap();
    let o = f.view(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    let err = support::stderr_of(&o);
    let named = dir.join("cache/s/1.0.0");
    assert!(
        err.contains(&format!("{}: differs from the store's", named.display()))
            && err.contains("--replace-differing"),
        "{err}"
    );
    assert!(!err.contains("cache/s/2.0.0"), "{err}");
    assert_eq!(fs::read_to_string(&changed).unwrap(), "echo tampered\n");

    let o = f.view(&["--replace-differing"]);
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&named, &f.object_of("1.0.0"));
    assert_eq!(
        support::staging_entries(&dir.join("cache/s")),
        Vec::<String>::new()
    );
}

/// A git StepLib's `collection/` is a work tree at the collection's commit whose `origin` is the
/// StepLib's URI, on a branch that tracks it: the old `update` (`git pull`) takes what is new.
#[test]
fn a_git_steplibs_checkout_is_a_work_tree_at_its_commit_that_pulls() {
    let t = support::TestDir::new();
    let src = t.path().join("steplib-src");
    support::write_steplib_yml(&src, &[("zip", "http://127.0.0.1:9/unused/")]);
    support::write_step(&src, "s", "1.0.0", &support::step_yml("s", None));
    let bare = support::git_bare_of(t.path(), &src, "lib.git");
    let daemon = support::GitDaemon::start(t.path());
    let uri = daemon.url("lib.git");
    let home = t.path().join("store");
    run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
    let legacy = t.path().join("legacy");
    let o = output(&mut stepman(
        &home,
        [
            "legacy-view",
            "--all",
            "--legacy-home",
            legacy.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    let co = checkout_at_its_commit(&home, &legacy, &uri);

    support::write_step(&src, "s", "2.0.0", &support::step_yml("s", None));
    support::git(&src, &["add", "-A"]);
    support::git(&src, &["commit", "-q", "-m", "release"]);
    support::git(&src, &["push", "-q", bare.to_str().unwrap(), "HEAD"]);
    support::git(&co, &["pull", "-q", "--ff-only"]);
    assert!(
        co.join("steps/s/2.0.0/step.yml").is_file(),
        "the pull took the new version"
    );
}

/// A view killed (SIGKILL) at any of its renames, writes or copies leaves no partial file at a final path: each
/// JSON file there parses whole, each cached dir there is the whole object, and what
/// `routing.json` routes to is complete. The next view completes it and leaves no staging dir.
#[test]
fn a_view_killed_at_any_rename_or_write_leaves_no_partial_file() {
    if !support::strace_usable("a_view_killed_at_any_rename_or_write_leaves_no_partial_file") {
        return;
    }
    let f = Fixture::new(&["1.0.0", "2.0.0"]);
    let traced = |legacy: &Path, kill: Option<(&str, usize)>, log: &Path| -> Output {
        let mut t = support::Traced::new(&f.home, log)
            .follow()
            .trace("rename,renameat,renameat2,write,copy_file_range");
        if let Some((syscall, n)) = kill {
            t = t.inject(&format!("{syscall}:signal=SIGKILL:when={n}"));
        }
        output(&mut t.stepman([
            "legacy-view",
            "-c",
            &f.lib,
            "--legacy-home",
            legacy.to_str().unwrap(),
        ]))
    };
    let log = f.root.join("strace.log");
    // The first view of the store also makes the record's name directory (a rename of its
    // own): count the renames of a second one, into a home of its own, as each killed one is.
    for clean in ["clean-1", "clean-2"] {
        let o = traced(&f.root.join(clean).join(".stepman"), None, &log);
        assert!(o.status.success(), "{}", support::describe(&o));
    }
    let text = fs::read_to_string(&log).unwrap();
    let count = |s: &str| {
        text.lines()
            .filter(|l| l.contains(&format!(" {s}(")))
            .count()
    };
    // Every rename (where a final path appears) and every write and copy (where a file's bytes
    // go: never into a final path).
    let calls = [
        "rename",
        "renameat",
        "renameat2",
        "write",
        "copy_file_range",
    ];
    let points: Vec<(&str, usize)> = calls
        .into_iter()
        .flat_map(|s| (1..=count(s)).map(move |n| (s, n)))
        .collect();
    let renames = points.iter().filter(|p| p.0.starts_with("rename")).count();
    // routing.json, two specs, two cached dirs, collection/, the record's publish and bind.
    assert!(renames >= 8, "{points:?}\n{text}");
    for (i, (syscall, n)) in points.iter().enumerate() {
        let legacy = f.root.join(format!("killed-{i}/.stepman"));
        let killed = traced(&legacy, Some((syscall, *n)), &log);
        // Copies run on several threads, so their count may differ by one or two from run to
        // run; the renames are the same every time.
        assert!(
            !killed.status.success() || !syscall.starts_with("rename"),
            "killed at {syscall} #{n}"
        );
        check_complete_or_absent(&f, &legacy, &format!("killed at {syscall} #{n}"));
        let o = f.view_with_home(&legacy);
        assert!(
            o.status.success(),
            "after a kill at {syscall} #{n}: {}",
            support::describe(&o)
        );
        let dir = legacy.join("step_collections");
        for d in support::paths_under(&legacy)
            .into_iter()
            .filter(|p| p.is_dir() && !p.starts_with(dir.join("x")))
        {
            assert_eq!(
                support::staging_entries(&d),
                Vec::<String>::new(),
                "after a kill at {syscall} #{n}, in {}",
                d.display()
            );
        }
        check_complete_or_absent(&f, &legacy, "after the next view");
        assert!(legacy.join("routing.json").is_file());
    }
}

impl Fixture {
    fn view_with_home(&self, legacy: &Path) -> Output {
        output(&mut stepman(
            &self.home,
            [
                "legacy-view",
                "-c",
                &self.lib,
                "--legacy-home",
                legacy.to_str().unwrap(),
            ],
        ))
    }
}

/// Every final path of the view under `legacy` is complete or absent (see the kill test).
fn check_complete_or_absent(f: &Fixture, legacy: &Path, when: &str) {
    let routing = legacy.join("routing.json");
    let routed = routing.exists();
    if routed {
        json_file(&routing);
    }
    let Ok(aliases) = fs::read_dir(legacy.join("step_collections")) else {
        assert!(
            !routed,
            "{when}: routing.json routes to a missing step_collections/"
        );
        return;
    };
    for a in aliases
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
    {
        let dir = a.path();
        for spec in ["spec/spec.json", "spec/slim-spec.json"] {
            let p = dir.join(spec);
            if p.exists() {
                json_file(&p);
            } else {
                assert!(!routed, "{when}: routed, but {} is missing", p.display());
            }
        }
        for v in ["1.0.0", "2.0.0"] {
            let cache = dir.join("cache/s").join(v);
            if cache.exists() {
                if let Err(e) = support::diff_trees(&cache, &f.object_of(v)) {
                    panic!("{when}: {} is partial: {e}", cache.display());
                }
            } else {
                assert!(
                    !routed,
                    "{when}: routed, but {} is missing",
                    cache.display()
                );
            }
        }
        let co = dir.join("collection");
        if co.exists() {
            support::assert_same_tree(&co, Path::new(&f.lib));
        } else {
            assert!(!routed, "{when}: routed, but collection/ is missing");
        }
    }
}

/// A view root baked (umask 022) is read by another user, as a CI user reads a runner image's
/// `~/.stepman`: `routing.json`, the specs, every file of a cached step and of `collection/`.
#[test]
fn a_view_baked_by_root_is_read_by_another_user() {
    if !support::root_with_setpriv("a_view_baked_by_root_is_read_by_another_user") {
        return;
    }
    let f = Fixture::new(&["1.0.0"]);
    open_to_others(&f.root);
    f.view_ok();
    let dir = f.collection_dir();
    for file in [
        f.legacy.join("routing.json"),
        dir.join("spec/spec.json"),
        dir.join("spec/slim-spec.json"),
        dir.join("cache/s/1.0.0/step.sh"),
        dir.join("collection/steplib.yml"),
        dir.join("collection/steps/s/1.0.0/step.yml"),
    ] {
        let o = output(support::nobody().arg("cat").arg(&file));
        assert!(
            o.status.success(),
            "nobody cannot read {}: {}",
            file.display(),
            support::describe(&o)
        );
        assert_eq!(o.stdout, fs::read(&file).unwrap());
    }
    let o = output(support::nobody().arg("ls").arg(dir.join("cache/s")));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "1.0.0\n",
        "{}",
        support::describe(&o)
    );
}

/// Makes `dir` and each directory above it searchable and readable by others, as the
/// directories above a runner image's `~/.stepman` are.
fn open_to_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = dir.to_path_buf();
    while p.parent().is_some() {
        let mode = fs::metadata(&p).unwrap().mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777 | 0o005)).unwrap();
        }
        p.pop();
    }
}

/// A view baked under `umask 077` (a pre-bake job's strict umask) has fixed modes whatever the
/// umask: every directory 0755, every file 0644, or 0755 where the step's object has it
/// executable. So another user (the CI user) reads every file of it, `collection/`'s git work
/// tree and `.git/` included, and activates a cached step as the old tool does, by copying
/// `cache/<id>/<version>/` whole: the copy is the object, executable bit and all.
#[test]
fn a_view_baked_under_umask_077_is_read_by_another_user() {
    if !support::root_with_setpriv("a_view_baked_under_umask_077_is_read_by_another_user") {
        return;
    }
    let f = Fixture::new_git(&["1.0.0", "2.0.0"]);
    open_to_others(&f.root);
    let mut bake = std::process::Command::new("sh");
    bake.args(["-c", "umask 077; exec \"$@\"", "sh"])
        .arg(support::bin())
        .args(["legacy-view", "-c", &f.lib, "--legacy-home"])
        .arg(&f.legacy);
    support::store_env(&mut bake, &f.home);
    let o = output(&mut bake);
    assert!(o.status.success(), "{}", support::describe(&o));
    let dir = f.collection_dir();
    assert!(
        dir.join("collection/.git").is_dir(),
        "collection/ is a clone"
    );

    // Every file, read as the CI user (find fails on a directory it cannot read, and when a
    // `cat` fails).
    let o = output(
        support::nobody()
            .args([
                "sh",
                "-c",
                "find \"$1\" -type f -exec cat {} + >/dev/null",
                "sh",
            ])
            .arg(&f.legacy),
    );
    assert!(
        o.status.success(),
        "nobody cannot read every file of the view: {}",
        support::describe(&o)
    );
    let act = f.root.join("activations");
    fs::create_dir(&act).unwrap();
    std::os::unix::fs::chown(&act, Some(support::NOBODY), Some(support::NOBODY)).unwrap();
    for v in ["1.0.0", "2.0.0"] {
        let to = act.join(v);
        let o = output(
            support::nobody()
                .args(["cp", "-R", "-p"])
                .arg(dir.join("cache/s").join(v))
                .arg(&to),
        );
        assert!(
            o.status.success(),
            "nobody cannot copy s@{v}: {}",
            support::describe(&o)
        );
        if let Err(e) = support::diff_trees(&to, &f.object_of(v)) {
            panic!("s@{v} copied by nobody is not its object: {e}");
        }
    }
    let mut wrong = Vec::new();
    for p in support::paths_under(f.legacy.parent().unwrap()) {
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.mode() & 0o7777;
        let ok = if m.is_dir() {
            mode == 0o755
        } else if m.is_file() {
            mode == 0o644 || mode == 0o755
        } else {
            true
        };
        if !ok {
            wrong.push(format!("{} {mode:o}", p.display()));
        }
    }
    assert_eq!(wrong, Vec::<String>::new(), "modes other than 0755/0644");
    assert_eq!(
        fs::metadata(dir.join("cache/s/1.0.0/step.sh"))
            .unwrap()
            .mode()
            & 0o7777,
        0o755,
        "the step's executable stays executable"
    );
}

/// Views into one home at once (image builds sharing a home) wait for each other on the
/// legacy-view lock: all succeed, and the view is whole, with no staging dir left.
#[test]
fn concurrent_views_into_one_home_all_succeed() {
    let f = Fixture::new(&["1.0.0", "2.0.0"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| f.view(&[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(o.status.success(), "{}", support::describe(o));
    }
    let dir = f.collection_dir();
    check_complete_or_absent(&f, &f.legacy, "after concurrent views");
    for v in ["1.0.0", "2.0.0"] {
        assert!(dir.join("cache/s").join(v).is_dir());
    }
    for d in [&f.legacy, &dir, &dir.join("spec"), &dir.join("cache/s")] {
        assert_eq!(support::staging_entries(d), Vec::<String>::new());
    }
}

/// The view's `collection/` of the one git StepLib `uri` in `home`: checks that it is a clean
/// work tree at the collection's commit, with `origin` at `uri` and the step.yml of `s@1.0.0`.
fn checkout_at_its_commit(home: &Path, legacy: &Path, uri: &str) -> PathBuf {
    let routes: BTreeMap<String, String> =
        serde_json::from_str(&fs::read_to_string(legacy.join("routing.json")).unwrap()).unwrap();
    let co = legacy
        .join("step_collections")
        .join(&routes[uri])
        .join("collection");
    let listed: Value = serde_json::from_str(&run_ok(&mut stepman(
        home,
        ["collections", "--format", "json"],
    )))
    .unwrap();
    let commit = listed["data"][0]["steplib_commit"].as_str().unwrap();
    assert_eq!(support::git(&co, &["rev-parse", "HEAD"]), commit);
    assert_eq!(support::git(&co, &["remote", "get-url", "origin"]), uri);
    assert_eq!(support::git(&co, &["status", "--porcelain"]), "");
    assert!(co.join("steps/s/1.0.0/step.yml").is_file());
    co
}

/// The first view of a git StepLib needs no network: its `collection/` is checked out from the
/// StepLib's kept mirror in the store, at the collection's commit, with `origin` the StepLib's
/// URI (the server is gone and the view runs `--offline`).
#[test]
fn a_git_steplibs_first_view_is_made_offline_from_the_kept_mirror() {
    let t = support::TestDir::new();
    let src = t.path().join("steplib-src");
    support::write_steplib_yml(&src, &[("zip", "http://127.0.0.1:9/unused/")]);
    support::write_step(&src, "s", "1.0.0", &support::step_yml("s", None));
    support::git_bare_of(t.path(), &src, "lib.git");
    let daemon = support::GitDaemon::start(t.path());
    let uri = daemon.url("lib.git");
    let home = t.path().join("store");
    run_ok(&mut stepman(&home, ["setup", "-c", &uri]));
    drop(daemon);
    let legacy = t.path().join("legacy");
    let o = output(&mut stepman(
        &home,
        [
            "--offline",
            "legacy-view",
            "-c",
            &uri,
            "--legacy-home",
            legacy.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", support::describe(&o));
    let co = checkout_at_its_commit(&home, &legacy, &uri);
    let branch = support::git(&co, &["rev-parse", "--abbrev-ref", "HEAD"]);
    assert_eq!(
        support::git(&co, &["config", &format!("branch.{branch}.remote")]),
        "origin"
    );
}
