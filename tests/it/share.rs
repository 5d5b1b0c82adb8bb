//! `share`: the step-author workflow against a local bare "fork" (`file://`) and step
//! repositories with a tag served by `git http-backend` on loopback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, output};

struct Fixture {
    _t: support::TestDir,
    home: PathBuf,
    fork: PathBuf,
    _server: support::Server,
    base: String,
    tagged: std::collections::BTreeMap<String, String>,
}

impl Fixture {
    /// A fork with the step `existing`, and a repository `steps-<id>.git` per `(id, tag)`.
    fn new(steps: &[(&str, &str)]) -> Fixture {
        let t = support::TestDir::new();
        let lib = t.path().join("fork-src");
        support::write_steplib_yml(&lib, &[("git", "unused")]);
        support::write_step(&lib, "existing", "1.0.0", &support::step_yml("E", None));
        let fork = support::git_bare_of(t.path(), &lib, "fork.git");
        let repos = t.path().join("repos");
        let mut tagged = std::collections::BTreeMap::new();
        for (id, tag) in steps {
            let src = t.path().join(format!("src-{id}"));
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join("step.yml"), support::step_yml(id, None)).unwrap();
            fs::write(src.join("step.sh"), format!("echo {id}\n")).unwrap();
            let work = repos.join(id);
            let r = support::git_repo(&work, &src, tag);
            fs::rename(work.join("repo.git"), repos.join(format!("steps-{id}.git"))).unwrap();
            tagged.insert(id.to_string(), r.tagged);
        }
        let server = support::Server::start();
        server.mount_git_backend("/git", &repos);
        let base = format!("{}/git", server.url());
        Fixture {
            home: t.path().join("home"),
            fork,
            _server: server,
            base,
            tagged,
            _t: t,
        }
    }

    fn fork_url(&self) -> String {
        format!("file://{}", self.fork.display())
    }

    fn git_url(&self, id: &str) -> String {
        format!("{}/steps-{id}.git", self.base)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::stepman(&self.home, args);
        c.env("GIT_AUTHOR_NAME", "author")
            .env("GIT_AUTHOR_EMAIL", "author@example.invalid")
            .env("GIT_COMMITTER_NAME", "author")
            .env("GIT_COMMITTER_EMAIL", "author@example.invalid");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", support::describe(&o));
        o
    }

    fn create(&self, id: &str, tag: &str) -> Command {
        let git = self.git_url(id);
        self.cmd(&[
            "share",
            "create",
            "--tag",
            tag,
            "--git",
            &git,
            "--stepid",
            id,
            "--toolmode",
        ])
    }

    /// A file of the fork's branch.
    fn show(&self, branch: &str, path: &str) -> String {
        support::git(&self.fork, &["show", &format!("{branch}:{path}")])
    }

    fn sessions(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.home.join("share.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["Sessions"].clone()
    }

    /// Checks that the fork's branch `<id>-<tag>` holds the step as shared, and nothing of
    /// another share.
    fn assert_landed(&self, id: &str, tag: &str, others: &[&str]) {
        let branch = format!("{id}-{tag}");
        let yml: serde_json::Value =
            serde_yaml_ng::from_str(&self.show(&branch, &format!("steps/{id}/{tag}/step.yml")))
                .unwrap();
        assert_eq!(yml["title"], *id, "{yml}");
        assert_eq!(yml["source"]["git"], self.git_url(id), "{yml}");
        assert_eq!(yml["source"]["commit"], self.tagged[id].as_str(), "{yml}");
        assert!(
            yml["published_at"]
                .as_str()
                .is_some_and(|p| p.starts_with("20")),
            "{yml}"
        );
        assert_eq!(
            self.show(&branch, &format!("steps/{id}/step-info.yml")),
            "maintainer: community"
        );
        assert_eq!(
            support::git(&self.fork, &["log", "-1", "--format=%s", &branch]),
            format!("{id} {tag}")
        );
        let files = support::git(&self.fork, &["ls-tree", "-r", "--name-only", &branch]);
        for o in others {
            assert!(
                !files.contains(&format!("steps/{o}/")),
                "{branch} holds {o}: {files}"
            );
        }
        assert!(files.contains("steps/existing/1.0.0/step.yml"), "{files}");
    }
}

fn has_path(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// The whole flow as the bitrise CLI calls it (`--toolmode`): start, create, audit, finish end
/// with the fork's branch `<id>-<tag>` holding the step.yml with `source.git`, `source.commit`
/// (the tag's commit) and `published_at`, a new step's step-info.yml, committed as `<id> <tag>`;
/// the session's clone is gone after. A second create of a share in progress is refused unless
/// `--overwrite`; a create before any start names the command to run, as `bitrise`.
#[test]
fn a_share_flow_lands_the_step_yml_on_the_forks_branch() {
    let f = Fixture::new(&[("alpha", "1.0.0")]);
    let o = output(&mut f.create("alpha", "1.0.0"));
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    assert!(
        support::stderr_of(&o).contains("run `bitrise share start -c FORK` first"),
        "{}",
        support::describe(&o)
    );
    let fork = f.fork_url();
    f.ok(&["share", "start", "-c", &fork, "--toolmode"]);
    let o = output(&mut f.create("alpha", "1.0.0"));
    assert!(o.status.success(), "{}", support::describe(&o));
    let clone = f.home.join("share/alpha-1.0.0");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        clone
            .join("steps/alpha/1.0.0/step.yml")
            .display()
            .to_string()
    );
    assert_eq!(
        support::git(&clone, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "alpha-1.0.0"
    );

    let again = output(&mut f.create("alpha", "1.0.0"));
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        support::describe(&again)
    );
    assert!(
        support::stderr_of(&again).contains("a share of alpha@1.0.0 is in progress")
            && support::stderr_of(&again).contains("--overwrite"),
        "{}",
        support::describe(&again)
    );
    let mut over = f.create("alpha", "1.0.0");
    over.arg("--overwrite");
    let o = output(&mut over);
    assert!(o.status.success(), "{}", support::describe(&o));

    let o = f.ok(&["share", "audit", "--toolmode"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("[OK] "),
        "{}",
        support::describe(&o)
    );
    let o = f.ok(&["share", "finish", "--toolmode"]);
    assert!(
        support::stderr_of(&o).contains("pushed branch alpha-1.0.0"),
        "{}",
        support::describe(&o)
    );
    f.assert_landed("alpha", "1.0.0", &[]);
    assert!(!has_path(&clone), "the session's clone is removed");
    assert_eq!(f.sessions(), serde_json::json!({}));
    assert_eq!(support::temp_entries(&f.home), Vec::<String>::new());
}

/// Two share flows of different steps at once (create and finish each, started together) both
/// land intact: each branch holds its own step and nothing of the other's, and `share.json`
/// loses neither session.
#[test]
fn two_concurrent_share_flows_of_different_steps_both_land() {
    let f = Fixture::new(&[("alpha", "1.0.0"), ("beta", "2.0.0")]);
    let fork = f.fork_url();
    f.ok(&["share", "start", "-c", &fork]);
    for round in 0..2 {
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for (id, tag) in [("alpha", "1.0.0"), ("beta", "2.0.0")] {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut c = f.create(id, tag);
                    if round > 0 {
                        c.arg("--overwrite");
                    }
                    let o = output(&mut c);
                    assert!(o.status.success(), "create {id}: {}", support::describe(&o));
                    let o = f.run(&["share", "finish", "--stepid", id]);
                    assert!(o.status.success(), "finish {id}: {}", support::describe(&o));
                });
            }
        });
        f.assert_landed("alpha", "1.0.0", &["beta"]);
        f.assert_landed("beta", "2.0.0", &["alpha"]);
        assert_eq!(f.sessions(), serde_json::json!({}));
        // The next round shares the same versions again: a new commit on each branch.
        support::git(&f.fork, &["branch", "-D", "alpha-1.0.0", "beta-2.0.0"]);
    }
}
