//! A remote StepLib (a git repository served over loopback `git://`, or a `spec.json` over
//! loopback HTTP) naming a repository on this machine as a step's `source.git`: `activate` must
//! refuse it, naming the step and the URL, and leave the destination alone, whatever the user's
//! git configuration allows (nor may it run `ext::` commands). A StepLib on this machine still
//! may (the scenario tests clone `file://` repositories that way), and a remote one's network
//! sources (`git://`, `ssh://`, scp-like `host:path`) still clone, without their submodules.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::stepman;
use support::{GitDaemon, Mode, Server, git};

/// The private repository: a bare `private/repo.git` with tag `1.0.0` holding `SECRET.txt`.
fn private_repo(t: &Path) -> support::GitRepo {
    let src = t.join("private-src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("SECRET.txt"), "the private repository's content\n").unwrap();
    support::git_repo(&t.join("private"), &src, "1.0.0")
}

/// The StepLib's steps: `abs` names the private repository by its path, `url` as `file://`.
fn steps(repo: &support::GitRepo) -> Vec<(&'static str, String)> {
    let path = repo.url.strip_prefix("file://").unwrap().to_string();
    vec![("abs", path), ("url", repo.url.clone())]
}

/// Activates `id@1.0.0` of `uri` into a fresh destination (with `envs`): it must fail, saying
/// which step, which URL and `why`, and the destination must not exist.
fn assert_refused_with(
    home: &Path,
    t: &Path,
    (uri, id, url): (&str, &str, &str),
    why: &str,
    envs: &[(&str, &str)],
) {
    let dest = t.join(format!("dest-{id}"));
    let o: Output = stepman(home, ["activate", "-c", uri, "-i", id, "-v", "1.0.0", "-p"])
        .arg(&dest)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "activate of {id} from a remote StepLib cloned {url}: {err}"
    );
    assert!(
        err.contains(&format!("{id}@1.0.0")) && err.contains(url),
        "the error names the step and the URL: {err}"
    );
    assert!(err.contains(why), "the error says {why:?}: {err}");
    assert!(
        !dest.exists(),
        "destination {} exists: {:?}",
        dest.display(),
        fs::read_dir(&dest).map(|d| d.count())
    );
}

fn assert_refused(home: &Path, t: &Path, uri: &str, id: &str, url: &str) {
    assert_refused_with(home, t, (uri, id, url), "remote StepLib", &[]);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stepman-hostile-git-")
        .tempdir()
        .unwrap()
}

/// Writes the StepLib working tree with the given steps (all with one git download location).
fn write_steplib(dir: &Path, steps: &[(&str, String)], commit: &str) {
    support::write_steplib_yml(dir, &[("git", "source/git")]);
    for (id, git) in steps {
        support::write_step(
            dir,
            id,
            "1.0.0",
            &support::step_yml(id, Some((git, commit))),
        );
    }
}

/// Commits `wt` (a new repository) and publishes it as `served/<name>` (bare).
fn publish(wt: &Path, served: &Path, name: &str, tag: Option<&str>) -> String {
    git(wt, &["init", "-q"]);
    git(wt, &["add", "-A"]);
    git(wt, &["commit", "-q", "-m", name]);
    if let Some(tag) = tag {
        git(wt, &["tag", tag]);
    }
    fs::create_dir_all(served).unwrap();
    git(
        served,
        &["clone", "-q", "--bare", wt.to_str().unwrap(), name],
    );
    git(wt, &["rev-parse", "HEAD"])
}

/// Serves `served/` over `git://` and sets up its `steplib.git` holding `steps` in `home`.
fn git_steplib(
    t: &Path,
    home: &Path,
    steps: &[(&str, String)],
    commit: &str,
    daemon: &GitDaemon,
) -> String {
    let wt = t.join("steplib-wt");
    fs::create_dir_all(&wt).unwrap();
    write_steplib(&wt, steps, commit);
    publish(&wt, &t.join("served"), "steplib.git", None);
    let uri = daemon.url("steplib.git");
    let o = stepman(home, ["setup", "-c", &uri]).output().unwrap();
    assert!(
        o.status.success(),
        "setup of {uri}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    uri
}

#[test]
fn a_git_steplib_over_loopback_cannot_name_a_local_repository() {
    let t = tempdir();
    let repo = private_repo(t.path());
    let steps = steps(&repo);
    let home = t.path().join("home");
    let daemon = GitDaemon::start(&t.path().join("served"));
    let uri = git_steplib(t.path(), &home, &steps, &repo.tagged, &daemon);
    for (id, url) in &steps {
        assert_refused(&home, t.path(), &uri, id, url);
    }
    drop(daemon);
    support::make_writable(t.path());
}

/// A guard: a remote StepLib's network source (`git://` here) is cloned, and a submodule of it
/// that names this machine's private repository is not (clones never recurse; were one to,
/// `file` is not on a remote StepLib's protocol list).
#[test]
fn a_remote_steplib_clones_network_sources_without_their_submodules() {
    let t = tempdir();
    let repo = private_repo(t.path());
    let served = t.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let daemon = GitDaemon::start(&served);
    let step_wt = t.path().join("step-wt");
    fs::create_dir_all(&step_wt).unwrap();
    fs::write(step_wt.join("step.sh"), "echo from the network\n").unwrap();
    git(&step_wt, &["init", "-q"]);
    let private = repo.url.strip_prefix("file://").unwrap();
    git(
        &step_wt,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            private,
            "sub",
        ],
    );
    let commit = publish(&step_wt, &served, "step.git", Some("1.0.0"));
    let steps = vec![("net", daemon.url("step.git"))];
    let home = t.path().join("home");
    let uri = git_steplib(t.path(), &home, &steps, &commit, &daemon);
    let dest = t.path().join("dest-net");
    let o = stepman(
        &home,
        ["activate", "-c", &uri, "-i", "net", "-v", "1.0.0", "-p"],
    )
    .arg(&dest)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dest.join("step.sh").is_file());
    let sub: Vec<_> = fs::read_dir(dest.join("sub"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(sub.is_empty(), "the submodule was cloned: {sub:?}");
    drop(daemon);
    support::make_writable(t.path());
}

/// Serves a `spec.json` holding `steps` (each `id@1.0.0` with `source.git`, `commit`) and sets
/// it up in `home`; returns the server and the collection URI.
fn spec_steplib(home: &Path, steps: &[(&str, String)], commit: &str) -> (Server, String) {
    let groups: serde_json::Map<String, serde_json::Value> = steps
        .iter()
        .map(|(id, git)| {
            (
                id.to_string(),
                serde_json::json!({
                    "info": {},
                    "latest_version_number": "1.0.0",
                    "versions": {"1.0.0": {
                        "title": id,
                        "source": {"git": git, "commit": commit},
                    }},
                }),
            )
        })
        .collect();
    let spec = serde_json::json!({
        "format_version": "1.0.0",
        "generated_at_timestamp": 0,
        "steplib_source": "hostile",
        "download_locations": [{"type": "git", "src": "source/git"}],
        "steps": groups,
    });
    let server = Server::start();
    server.serve(
        "/spec.json",
        serde_json::to_vec(&spec).unwrap(),
        Mode::Full {
            delay: std::time::Duration::ZERO,
        },
    );
    let uri = format!("{}/spec.json", server.url());
    let o = stepman(home, ["setup", "-c", &uri]).output().unwrap();
    assert!(
        o.status.success(),
        "setup of {uri}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (server, uri)
}

/// A guard: ssh stays on a remote StepLib's list, in git's scp-like `host:path` form too (`ssh`
/// here is a stand-in that runs the remote command on this machine).
#[test]
fn a_remote_steplib_may_name_an_ssh_source() {
    let t = tempdir();
    let served = t.path().join("served");
    let daemon = GitDaemon::start(&served);
    let step_wt = t.path().join("step-wt");
    fs::create_dir_all(&step_wt).unwrap();
    fs::write(step_wt.join("step.sh"), "echo over ssh\n").unwrap();
    let commit = publish(&step_wt, &served, "step.git", Some("1.0.0"));
    let ssh = t.path().join("fake-ssh");
    fs::write(
        &ssh,
        "#!/bin/sh\nfor last; do :; done\nexec sh -c \"$last\"\n",
    )
    .unwrap();
    fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let repo = served.join("step.git");
    let steps = vec![
        ("scp", format!("builder@example.invalid:{}", repo.display())),
        ("ssh", format!("ssh://example.invalid{}", repo.display())),
    ];
    let home = t.path().join("home");
    let uri = git_steplib(t.path(), &home, &steps, &commit, &daemon);
    for (id, _) in &steps {
        let dest = t.path().join(format!("dest-{id}"));
        let o = stepman(
            &home,
            ["activate", "-c", &uri, "-i", id, "-v", "1.0.0", "-p"],
        )
        .arg(&dest)
        .env("GIT_SSH_COMMAND", &ssh)
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(dest.join("step.sh").is_file(), "{id}");
    }
    drop(daemon);
    support::make_writable(t.path());
}

#[test]
fn a_spec_json_over_http_cannot_name_a_local_repository() {
    let t = tempdir();
    let repo = private_repo(t.path());
    let steps = steps(&repo);
    let home = t.path().join("home");
    let (_server, uri) = spec_steplib(&home, &steps, &repo.tagged);
    for (id, url) in &steps {
        assert_refused(&home, t.path(), &uri, id, url);
    }
    support::make_writable(t.path());
}

/// Whatever the user's git configuration or environment allows (`protocol.ext.allow`, a
/// `GIT_ALLOW_PROTOCOL` with `ext` and `file`), a remote StepLib's `ext::` source runs no
/// command and its local source is not cloned.
#[test]
fn a_users_git_config_does_not_widen_what_a_remote_steplib_may_clone() {
    let t = tempdir();
    let repo = private_repo(t.path());
    let marker = t.path().join("ext-ran");
    let ext = format!("ext::sh -c touch% {}", marker.display());
    let mut steps = steps(&repo);
    steps.insert(0, ("ext", ext));
    let home = t.path().join("home");
    let (_server, uri) = spec_steplib(&home, &steps, &repo.tagged);
    let widen: [&[(&str, &str)]; 2] = [
        &[(
            "GIT_CONFIG_PARAMETERS",
            "'protocol.allow'='always' 'protocol.ext.allow'='always' \
             'protocol.file.allow'='always'",
        )],
        &[("GIT_ALLOW_PROTOCOL", "ext:file:https:http:ssh:git")],
    ];
    for envs in widen {
        for (id, url) in &steps {
            let why = if *id == "ext" {
                "ext::"
            } else {
                "remote StepLib"
            };
            assert_refused_with(&home, t.path(), (&uri, id, url), why, envs);
            assert!(!marker.exists(), "the ext:: command ran with {envs:?}");
        }
    }
    support::make_writable(t.path());
}

/// The same steps in a StepLib on this machine: its git sources may be local.
#[test]
fn a_local_steplib_may_still_name_a_local_repository() {
    let t = tempdir();
    let repo = private_repo(t.path());
    let steps = steps(&repo);
    let lib = t.path().join("lib");
    write_steplib(&lib, &steps, &repo.tagged);
    let home = t.path().join("home");
    let uri = lib.display().to_string();
    for (id, _) in &steps {
        let dest: PathBuf = t.path().join(format!("dest-{id}"));
        let o = stepman(
            &home,
            ["activate", "-c", &uri, "-i", id, "-v", "1.0.0", "-p"],
        )
        .arg(&dest)
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(dest.join("SECRET.txt").is_file(), "{id}");
    }
    support::make_writable(t.path());
}
