//! `share`: the old tool's step-author workflow (`start`, `create`, `audit`, `finish`), without
//! its races.
//!
//! Invariants:
//! - The share state, `<home>/share.json` (the old tool's file: `Collection`, `StepID`,
//!   `StepTag`, plus `Sessions`), is read, changed and written under the share lock
//!   (`<home>/share.json.lock`, `lock.rs`) and replaced atomically (`atomic`): two commands at
//!   once never lose each other's change, and a reader never sees a partial file.
//! - Each `create` is a session of its own, `<id>-<tag>`, working in its own clone of the fork,
//!   `<home>/share/<id>-<tag>/`, built complete (the fork cloned, the branch `<id>-<tag>` created
//!   with `checkout -B`, the step.yml and a new step's step-info.yml written) beside its final
//!   path and renamed in: two shares at once (different steps, two terminals) never see each
//!   other's branch or files. A session that is there already is refused unless told to
//!   replace it ([`Existing::Replace`]); nothing ever prompts.
//! - `create` and `finish` of a session hold that session's lock (`<home>/share/.<id>-<tag>.lock`)
//!   while they make, commit or remove it, so two finishes of one session cannot both commit,
//!   and a `create --overwrite` never swaps a clone out under a finish.
//! - The step's repository is cloned in the store's temp area, never in the system's temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{self, Audited, Depth};
use crate::error::{Error, Result};
use crate::export::Place;
use crate::fetch::{GitTransports, NetConfig};
use crate::layout::TempKind;
use crate::store::Store;
use crate::tmp::TempDir;

/// The old tool's share state file in its home.
pub const SHARE_FILE: &str = "share.json";
/// The directory of the sessions' clones in the home.
pub const SESSIONS_DIR: &str = "share";

/// Which command a user is told to run: `--toolmode` (the bitrise CLI's calls) says `bitrise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `stepman …`.
    Stepman,
    /// `bitrise …` (`--toolmode`).
    Bitrise,
}

impl Tool {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Stepman => "stepman",
            Tool::Bitrise => "bitrise",
        }
    }
}

/// What `create` does when a session of the same step and tag is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, naming it.
    Refuse,
    /// Replace it (its clone swapped out atomically, its uncommitted step.yml dropped).
    Replace,
}

/// One share in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The fork (a StepLib repository's URL) the session pushes to.
    pub collection: String,
    /// The step's id.
    pub step_id: String,
    /// The step's version tag.
    pub step_tag: String,
    /// The session's clone of the fork.
    pub clone: PathBuf,
}

impl Session {
    /// The branch, `<id>-<tag>`, as the old tool names it.
    pub fn branch(&self) -> String {
        format!("{}-{}", self.step_id, self.step_tag)
    }

    /// The step.yml in the session's clone.
    pub fn step_yml(&self) -> PathBuf {
        self.clone
            .join("steps")
            .join(&self.step_id)
            .join(&self.step_tag)
            .join("step.yml")
    }
}

/// `share.json`: the old tool's fields (the last `start`'s fork, the last `create`'s step) and
/// every session in progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShareState {
    /// The fork of the last `start`.
    #[serde(rename = "Collection", default)]
    pub collection: String,
    /// The step of the last `create`.
    #[serde(rename = "StepID", default)]
    pub step_id: String,
    /// The tag of the last `create`.
    #[serde(rename = "StepTag", default)]
    pub step_tag: String,
    /// Every session in progress, by `<id>-<tag>`.
    #[serde(rename = "Sessions", default)]
    pub sessions: BTreeMap<String, Session>,
}

fn share_error(what: &Path, reason: String) -> Error {
    Error::Share {
        path: what.to_path_buf(),
        reason,
    }
}

/// Reads `share.json` (missing: empty).
fn read_state(home: &Path) -> Result<ShareState> {
    let path = home.join(SHARE_FILE);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            share_error(
                &path,
                format!("not the share state ({e}): remove it to start over"),
            )
        }),
        Err(e) if crate::sys::is_not_found(&e) => Ok(ShareState::default()),
        Err(e) => Err(Error::io("read", &path)(e)),
    }
}

/// Changes `share.json` with `change` under the share lock, and writes it atomically.
fn update_state<T>(home: &Path, change: impl FnOnce(&mut ShareState) -> Result<T>) -> Result<T> {
    crate::export::create_parent(home)?;
    let _lock = crate::lock::home_file_exclusive(&home.join("share.json.lock"), None)?;
    let mut state = read_state(home)?;
    let out = change(&mut state)?;
    let path = home.join(SHARE_FILE);
    let mut bytes = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, fmt);
    state
        .serialize(&mut ser)
        .map_err(|e| share_error(&path, e.to_string()))?;
    let mode = crate::atomic::FileMode::LessUmask(0o666);
    crate::atomic::write_file_atomically(&path, mode, |w| {
        w.write_all(&bytes).map_err(Error::io("write", &path))
    })?;
    Ok(out)
}

/// `share start -c FORK`: checks that the fork answers (one `git ls-remote`) and records it as
/// the fork of the next `create`s. Sessions in progress are kept (each has its own fork).
pub fn start(home: &Path, fork: &str, net: &NetConfig) -> Result<()> {
    crate::fetch::git_ls_remote(fork, "HEAD", "fork", GitTransports::NetworkAndLocal, net)?;
    update_state(home, |s| {
        s.collection = fork.to_string();
        Ok(())
    })
}

/// What `share create` shares.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The version tag (`X.Y.Z`).
    pub tag: String,
    /// The step's repository.
    pub git: String,
    /// The step's id (default: the repository's name).
    pub step_id: Option<String>,
    /// A step.yml to share instead of the repository's.
    pub stepyml_override: Option<PathBuf>,
    /// What is done with a session of the same step and tag.
    pub existing: Existing,
    /// The command named in messages.
    pub tool: Tool,
}

/// The step id the old tool derives from a repository URL: its last path component before the
/// first `.` (`…/steps-my-step.git` → `steps-my-step`).
fn id_from_git(git: &str) -> String {
    let last = git.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    last.split('.').next().unwrap_or("").to_string()
}

fn valid_tag(tag: &str) -> bool {
    let parts: Vec<&str> = tag.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `share create`: clones the tag of the step's repository (in the store's temp area), sets
/// `source.git`, `source.commit` (the tag's commit) and `published_at`, audits it (every
/// failure listed), and makes the session `<id>-<tag>`: its own clone of the fork on the branch
/// `<id>-<tag>`, with `steps/<id>/<tag>/step.yml` (and `steps/<id>/step-info.yml` with
/// `maintainer: community` for a step the fork does not have).
pub fn create(store: &Store, home: &Path, o: &CreateOptions, net: &NetConfig) -> Result<Session> {
    let tool = o.tool.name();
    let state_path = home.join(SHARE_FILE);
    let fork = read_state(home)?.collection;
    if fork.is_empty() {
        return Err(share_error(
            &state_path,
            format!("no share started: run `{tool} share start -c FORK` first"),
        ));
    }
    if !valid_tag(&o.tag) {
        return Err(share_error(
            &state_path,
            format!("tag {:?} is not a version X.Y.Z", o.tag),
        ));
    }
    let id = o.step_id.clone().unwrap_or_else(|| id_from_git(&o.git));
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        return Err(share_error(
            &state_path,
            format!("step id {id:?} does not conform to [a-z0-9-]+ (pass --stepid)"),
        ));
    }
    // The step at its tag.
    store.check_owner("share a step")?;
    let tmp = TempDir::create(store.layout(), TempKind::Audit)
        .map_err(|e| store.read_only_or(e, "share a step"))?;
    let step_clone = tmp.path().join("step");
    let what = format!("step {id}@{}", o.tag);
    let commit = crate::fetch::git_clone(
        &o.git,
        Some(&o.tag),
        None,
        &step_clone,
        &what,
        GitTransports::NetworkAndLocal,
        net,
    )?;
    let yml = match &o.stepyml_override {
        Some(p) => p.clone(),
        None => step_clone.join("step.yml"),
    };
    let mut step = crate::steplib::read_step_yml(&yml)?;
    let Value::Object(m) = &mut step else {
        return Err(share_error(&yml, "not a mapping".into()));
    };
    m.insert(
        "source".into(),
        serde_json::json!({"git": o.git, "commit": commit}),
    );
    m.insert(
        "published_at".into(),
        Value::String(jiff::Timestamp::now().to_string()),
    );
    let mut failures = audit::check_fields(&step);
    failures.extend(audit::check_pr_fields(&step));
    if !failures.is_empty() {
        return Err(share_error(
            &yml,
            format!("the step does not pass the audit: {}", failures.join("; ")),
        ));
    }
    let text = serde_yaml_ng::to_string(&step).map_err(|e| share_error(&yml, e.to_string()))?;

    // The session: its own clone of the fork, complete or absent.
    let key = format!("{id}-{}", o.tag);
    let dir = home.join(SESSIONS_DIR).join(&key);
    let session = Session {
        collection: fork.clone(),
        step_id: id.clone(),
        step_tag: o.tag.clone(),
        clone: dir.clone(),
    };
    crate::export::create_parent(&home.join(SESSIONS_DIR))?;
    // A finish (or another create) of this session waits, and so does this for them.
    let _session_lock = crate::lock::home_file_exclusive(&session_lock(home, &key), None)?;
    let there = fs::symlink_metadata(&dir).is_ok();
    if there && o.existing == Existing::Refuse {
        return Err(share_error(
            &dir,
            format!(
                "a share of {id}@{} is in progress here: finish it (`{tool} share finish \
                 --stepid {id}`) or pass --overwrite to start it again",
                o.tag
            ),
        ));
    }
    crate::export::sweep_beside(&dir);
    let how = if there {
        Place::Replace
    } else {
        Place::IfMissing
    };
    let branch = session.branch();
    crate::export::place_dir(&dir, how, |tree| {
        let what = format!("fork {fork}");
        crate::fetch::git_clone(
            &fork,
            None,
            None,
            tree,
            &what,
            GitTransports::NetworkAndLocal,
            net,
        )?;
        crate::fetch::git_in(
            &fork,
            tree,
            &["checkout", "--quiet", "-B", &branch],
            &what,
            GitTransports::NetworkAndLocal,
            net,
        )?;
        let group = tree.join("steps").join(&id);
        let new_step = !group.exists();
        let vdir = group.join(&o.tag);
        crate::export::create_parent(&vdir)?;
        let p = vdir.join("step.yml");
        fs::write(&p, &text).map_err(Error::io("write", &p))?;
        if new_step {
            let info = group.join("step-info.yml");
            fs::write(&info, "maintainer: community\n").map_err(Error::io("write", &info))?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        Error::DestinationExists { path } => share_error(
            &path,
            format!("another share of {id}@{} made it meanwhile", o.tag),
        ),
        e => e,
    })?;
    update_state(home, |s| {
        s.step_id = id.clone();
        s.step_tag = o.tag.clone();
        s.sessions.insert(key, session.clone());
        Ok(())
    })?;
    Ok(session)
}

/// The lock file of the session `key`: `<home>/share/.<key>.lock`.
fn session_lock(home: &Path, key: &str) -> PathBuf {
    home.join(SESSIONS_DIR).join(format!(".{key}.lock"))
}

/// Which session `audit` and `finish` work on: the only one, or the one of this step (and
/// tag).
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// The step's id.
    pub step_id: Option<String>,
    /// The tag.
    pub tag: Option<String>,
}

fn select(home: &Path, sel: &Select, tool: Tool) -> Result<Session> {
    let state = read_state(home)?;
    let path = home.join(SHARE_FILE);
    let matching: Vec<&Session> = state
        .sessions
        .values()
        .filter(|s| sel.step_id.as_ref().is_none_or(|i| *i == s.step_id))
        .filter(|s| sel.tag.as_ref().is_none_or(|t| *t == s.step_tag))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(share_error(
            &path,
            format!(
                "no share in progress{}: run `{} share create --tag X.Y.Z --git URL` first",
                sel.step_id
                    .as_ref()
                    .map_or(String::new(), |i| format!(" of {i}")),
                tool.name()
            ),
        )),
        many => Err(share_error(
            &path,
            format!(
                "{} shares are in progress ({}): name one with --stepid (and --tag)",
                many.len(),
                many.iter()
                    .map(|s| format!("{}@{}", s.step_id, s.step_tag))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `share audit`: the session's step.yml, with every check of a StepLib pull request (its tag
/// cloned: it must be at `source.commit`), first; then every other step of the fork that fails
/// the field checks of a pull request ([`audit::check_fields`], [`audit::check_pr_fields`]).
pub fn audit(
    store: &Store,
    home: &Path,
    sel: &Select,
    tool: Tool,
    net: &NetConfig,
) -> Result<Vec<Audited>> {
    let s = select(home, sel, tool)?;
    let mine = s.step_yml();
    let shared = audit::audit_step_yml(store, &mine, Depth::BeforePr, net)?;
    let mut out = vec![shared];
    out.extend(audit_fork(&s.clone, &mine)?);
    Ok(out)
}

/// The field checks of a StepLib pull request ([`audit::check_fields`],
/// [`audit::check_pr_fields`]) of every other `steps/<id>/<version>/step.yml` in the fork's
/// clone `clone`, in parallel; only those that fail, in path order. Their tags are not cloned
/// again: each was checked so when it was shared, and the fork's history is not ours to redo.
fn audit_fork(clone: &Path, mine: &Path) -> Result<Vec<Audited>> {
    use rayon::prelude::*;
    let steps = clone.join("steps");
    let mut files = Vec::new();
    for (_, group, _) in crate::scan::read_dir_names(&steps)? {
        if !group.is_dir() {
            continue;
        }
        for (_, version, _) in crate::scan::read_dir_names(&group)? {
            let yml = version.join("step.yml");
            if yml != mine && yml.is_file() {
                files.push(yml);
            }
        }
    }
    let audited: Vec<Audited> = files
        .par_iter()
        .map(|yml| {
            let subject = yml.strip_prefix(clone).unwrap_or(yml).display().to_string();
            let failures = match crate::steplib::read_step_yml(yml) {
                Ok(step) => {
                    let mut f = audit::check_fields(&step);
                    f.extend(audit::check_pr_fields(&step));
                    f
                }
                Err(e) => vec![e.to_string()],
            };
            Audited { subject, failures }
        })
        .filter(|a| !a.passed())
        .collect();
    Ok(audited)
}

/// `share finish`: commits the session's step.yml (and a new step-info.yml) as `<id> <tag>` on
/// its branch, pushes the branch to the fork, and ends the session (its clone removed). A
/// finish whose commit is made already (its push failed) pushes again.
pub fn finish(home: &Path, sel: &Select, tool: Tool, net: &NetConfig) -> Result<Session> {
    let s = select(home, sel, tool)?;
    let key = s.branch();
    let _session = crate::lock::home_file_exclusive(&session_lock(home, &key), None)?;
    // Under the session's lock: still there?
    let s = select(
        home,
        &Select {
            step_id: Some(s.step_id.clone()),
            tag: Some(s.step_tag.clone()),
        },
        tool,
    )?;
    let what = format!("fork {}", s.collection);
    let git = |args: &[&str]| {
        crate::fetch::git_in(
            &s.collection,
            &s.clone,
            args,
            &what,
            GitTransports::NetworkAndLocal,
            net,
        )
    };
    let group = format!("steps/{}", s.step_id);
    git(&["add", "--", &group])?;
    let staged = git(&["diff", "--cached", "--name-only"])?;
    if !staged.is_empty() {
        let msg = format!("{} {}", s.step_id, s.step_tag);
        git(&["commit", "--quiet", "-m", &msg])?;
    }
    let refspec = format!("refs/heads/{key}:refs/heads/{key}");
    git(&["push", "--quiet", "origin", &refspec])?;
    update_state(home, |st| {
        st.sessions.remove(&key);
        Ok(())
    })?;
    crate::tmp::remove_tree(&s.clone)?;
    Ok(s)
}

/// The guide `share` prints: the steps of the workflow, naming `tool`.
pub fn guide(tool: Tool) -> String {
    let n = tool.name();
    format!(
        "Do you want to share your own Step with the world? Awesome!\n\n\
         Just follow these steps:\n\n\
         0. First, you need to ensure that your step is stored in a public git repository\n\
         and it follows our step development guideline: \
         https://github.com/bitrise-io/bitrise/blob/master/_docs/step-development-guideline.md.\n\n\
         To audit your step on your local machine call $ {n} audit --step-yml path/to/your/step.yml\n\n\
         1. Fork the StepLib repository you want to share your Step in.\n\
         You can find the main (\"official\") StepLib repository at \
         https://github.com/bitrise-io/bitrise-steplib\n\n\
         2. Call $ {n} share start -c https://github.com/[your-username]/bitrise-steplib.git, \
         with the git clone URL of your forked StepLib repository.\n\
         This will prepare your forked StepLib locally for sharing.\n\n\
         3. Next, call $ {n} share create --tag [step-version-tag] --git [step-git-uri].git \
         --stepid [step-id],\nto add your Step to your forked StepLib repository (locally).\n\n\
         Important: you have to add the (version) tag to your Step's repository.\n\n\
         4. You can call $ {n} share audit\n\
         to perform a health-check on your Step before submitting your Pull Request.\n\n\
         5. Almost done! You should review your Step's step.yml file (the one added to the local \
         StepLib),\nand once you're happy with it call $ {n} share finish\n\n\
         This will commit & push the step.yml into your forked StepLib repository.\n\n\
         6. The only remaining thing is to create a Pull Request in the original StepLib \
         repository. And you are done!\n"
    )
}
