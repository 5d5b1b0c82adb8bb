//! Steps named by where they are rather than through a StepLib, as CI configs spell them:
//! `git::URL@REF` (a repository at a branch, a tag or a commit) and `path::DIR` (a directory on
//! this machine); also the old tool's `--library git --id URL --version REF` and
//! `--library path --id DIR`.
//!
//! A git ref is resolved to a commit with one `git ls-remote` (a full commit id is used as it
//! is); the tree at that commit, without `.git`, is the store object named
//! `_git/<URL id>/<commit>` ([`crate::layout::git_url_id`]). A commit's tree never changes, so
//! a second activation of the same commit clones nothing, while a branch that moves resolves
//! again each time. A path is copied as it is, never stored.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::resolve::{Picked, StepInfo};
use crate::error::{Error, Result};
use crate::fetch::{self, GitTransports, GitUrl, NetConfig};
use crate::hash::ObjectId;
use crate::layout::{GIT_ROUTE, Name};
use crate::retry::Race;
use crate::steplib;
use crate::store::{Producer, Store};
use crate::tmp;

/// A step named by where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRef {
    /// `git::URL@REF`.
    Git(GitRef),
    /// `path::DIR` (`~` and `~/…` are the home directory).
    Path(PathBuf),
}

/// A git repository at a branch, a tag or a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The URL as given (a userinfo credential included; it is never stored or shown).
    pub url: String,
    /// The branch, tag or full commit id; `HEAD` (the repository's default branch) when none
    /// was given.
    pub reference: String,
}

/// The reference used when a `git::URL` names none: the remote's default branch.
pub const DEFAULT_REFERENCE: &str = "HEAD";

impl StepRef {
    /// `git::URL[@REF]` or `path::DIR`; `None` for anything else (a StepLib's step id).
    pub fn parse_prefixed(s: &str) -> Option<StepRef> {
        if let Some(spec) = s.strip_prefix("git::") {
            let (url, reference) = split_git_ref(spec);
            return Some(StepRef::Git(GitRef {
                url: url.to_string(),
                reference: reference.unwrap_or(DEFAULT_REFERENCE).to_string(),
            }));
        }
        s.strip_prefix("path::")
            .map(|p| StepRef::Path(expand_home(p)))
    }

    /// The old tool's other spelling: library (collection) `git` with the URL as the id and the
    /// reference as the version, or `path` with the directory as the id; also an id that is
    /// itself `git::…` or `path::…` (then the library is not looked at, and an empty `version`
    /// leaves the id's own reference). `None`: a StepLib step.
    pub fn from_parts(library: Option<&str>, id: &str, version: &str) -> Option<StepRef> {
        if let Some(r) = StepRef::parse_prefixed(id) {
            return Some(match r {
                StepRef::Git(mut g)
                    if !version.is_empty() && split_git_ref(&id[5..]).1.is_none() =>
                {
                    g.reference = version.to_string();
                    StepRef::Git(g)
                }
                other => other,
            });
        }
        match library {
            Some("git") => Some(StepRef::Git(GitRef {
                url: id.to_string(),
                reference: if version.is_empty() {
                    DEFAULT_REFERENCE.to_string()
                } else {
                    version.to_string()
                },
            })),
            Some("path") => Some(StepRef::Path(expand_home(id))),
            _ => None,
        }
    }

    /// How it is shown: `git::URL@REF` (without a credential) or `path::DIR`.
    pub fn shown(&self) -> String {
        match self {
            StepRef::Git(g) => format!(
                "git::{}@{}",
                crate::credentials::redact(&g.url),
                g.reference
            ),
            StepRef::Path(p) => format!("path::{}", p.display()),
        }
    }
}

/// Splits `URL@REF` at the last `@` after the URL's host (`https://user@host/r.git@main`,
/// `git@github.com:o/r.git@v1`), so that a userinfo's `@` is never taken for the reference's.
/// An empty reference is none.
pub(crate) fn split_git_ref(spec: &str) -> (&str, Option<&str>) {
    let path_start = if let Some(i) = spec.find("://") {
        let after = i + 3;
        after + spec[after..].find('/').unwrap_or(spec.len() - after)
    } else {
        match (spec.find(':'), spec.find('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon < s) => colon + 1,
            _ => 0,
        }
    };
    match spec[path_start..].rfind('@') {
        Some(i) => {
            let at = path_start + i;
            let r = &spec[at + 1..];
            (&spec[..at], (!r.is_empty()).then_some(r))
        }
        None => (spec, None),
    }
}

/// `~` and `~/…` as the home directory (`$HOME`; empty counts as unset, and then `~` stays as
/// it is); anything else as it is.
fn expand_home(p: &str) -> PathBuf {
    match (
        p.strip_prefix('~'),
        std::env::var_os("HOME").filter(|h| !h.is_empty()),
    ) {
        (Some(""), Some(h)) => PathBuf::from(h),
        (Some(rest), Some(h)) if rest.starts_with('/') => {
            PathBuf::from(h).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    }
}

/// A git ref's tree in the store.
#[derive(Debug, Clone)]
pub struct GitTree {
    /// The URL as shown (no credential).
    pub url: String,
    /// The reference asked for.
    pub reference: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The tree's object.
    pub id: ObjectId,
    /// Where its tree came from: the store, the fleet's remote, or a clone now.
    pub came: crate::remote::Came,
    name: Name,
}

/// The URL a git ref's name is made from, and clones use: a local path made absolute and
/// canonical (`file://<path>`), so that the same repository has one name whatever the working
/// directory; a network URL without its userinfo.
fn key_url(g: &GitRef, what: &str) -> Result<(String, GitUrl)> {
    let shown = crate::credentials::redact(&g.url);
    let kind = fetch::classify_git_url(&shown).map_err(|e| Error::Fetch {
        what: format!("{what}: git {shown}"),
        reason: e.to_string(),
    })?;
    if kind == GitUrl::Network || shown.to_ascii_lowercase().starts_with("file://") {
        return Ok((shown, kind));
    }
    let path = Path::new(&shown);
    let canon = std::fs::canonicalize(path).map_err(|e| Error::Fetch {
        what: format!("{what}: git {shown}"),
        reason: format!("no repository there: {}", crate::error::io_words(&e)),
    })?;
    Ok((format!("file://{}", canon.display()), kind))
}

/// Makes sure the tree of `g` is in the store: resolves the reference (one `git ls-remote`; a
/// full commit id as it is), then clones that commit unless its tree is stored already (one
/// clone among concurrent callers). Offline, only a full commit id whose tree is stored works.
pub fn fetch_git(store: &Store, g: &GitRef, net: &NetConfig) -> Result<GitTree> {
    let shown = crate::credentials::redact(&g.url);
    let what = format!("step git::{shown}@{}", g.reference);
    let (key, kind) = key_url(g, &what)?;
    // The user's own URL, given on the command line: it may name a repository on this machine.
    let transports = GitTransports::NetworkAndLocal;
    // Clones use the credential of the URL as given (or the netrc), on the key's spelling.
    let clone_url = if kind == GitUrl::Network {
        g.url.clone()
    } else {
        key.clone()
    };
    let full = fetch::is_full_commit(&g.reference);
    let commit = if full {
        g.reference.to_ascii_lowercase()
    } else if net.offline && kind == GitUrl::Network {
        return Err(Error::Fetch {
            what,
            reason: format!(
                "offline mode cannot resolve {} (a branch or tag) without the network; give a \
                 full commit id",
                g.reference
            ),
        });
    } else {
        let c = fetch::git_ls_remote(&clone_url, &g.reference, &what, transports, net)?;
        log::info!("{what}: {} is commit {c}", g.reference);
        c
    };
    let name = Name::new(GIT_ROUTE, &crate::layout::git_url_id(&key), &commit)?;
    if net.offline
        && kind == GitUrl::Network
        && let None = store.lookup(&name)?
    {
        return Err(Error::Offline {
            what: format!("{what} (commit {commit})"),
            cached: Vec::new(),
        });
    }
    let reference = (!full).then_some(g.reference.as_str());
    // A commit's tree is the same on every host: the fleet's remote before the clone.
    let (got, came) = crate::remote::produce_through(
        store,
        net.remote.as_deref(),
        &name,
        Producer::GitStep,
        &net.cancel,
        |_| Ok(()),
        |stage| {
            let clone = stage.dir().join("clone");
            fetch::git_checkout_commit(
                &clone_url, reference, &commit, &clone, &what, transports, net,
            )?;
            tmp::remove_tree(&clone.join(".git"))?;
            stage.ingest(&clone)
        },
    )?;
    match came {
        crate::remote::Came::Store => {
            log::info!("{what}: commit {commit} is in the store; nothing cloned")
        }
        crate::remote::Came::Remote => {
            log::info!("{what}: commit {commit} came from the fleet's remote; nothing cloned")
        }
        crate::remote::Came::Origin => {}
    }
    Ok(GitTree {
        url: shown,
        reference: g.reference.clone(),
        commit,
        id: got.id,
        came,
        name,
    })
}

/// What [`activate_ref`] activated.
#[derive(Debug, Clone)]
pub enum ActivatedRef {
    /// A git ref's tree, from the store.
    Git(GitTree),
    /// A directory, copied as it is.
    Path(PathBuf),
}

/// Activates `r` into `dest` (as [`super::activate_with`] does a StepLib step: complete or not
/// at all, replacing only what `replace` allows) and, with `copy_yml`, writes its `step.yml`
/// there (a repository or directory without one fails before anything is activated).
pub fn activate_ref(
    store: &Store,
    r: &StepRef,
    dest: &Path,
    copy_yml: Option<&Path>,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<ActivatedRef> {
    store.check_outside(dest)?;
    if let Some(yml) = copy_yml {
        store.check_outside(yml)?;
    }
    match r {
        StepRef::Git(g) => {
            let mut race = Race::new(Race::REDO);
            loop {
                let tree = fetch_git(store, g, net)?;
                let definition = match copy_yml {
                    Some(yml) => Some(super::activation::pending_definition(
                        yml,
                        git_definition(store, &tree)?,
                    )?),
                    None => None,
                };
                match store.export_replacing(&tree.name, dest, replace) {
                    Ok(_) => {
                        super::activation::write_definition_if(definition)?;
                        return Ok(ActivatedRef::Git(tree));
                    }
                    // Collected between the fetch and the copy (`fsck --repair`): again.
                    Err(Error::NameNotFound { .. }) if race.again() => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        StepRef::Path(dir) => {
            activate_path(store, dir, dest, copy_yml, replace)?;
            Ok(ActivatedRef::Path(dir.clone()))
        }
    }
}

/// The `step.yml` of a git ref's tree, read under the store lock.
fn git_definition(store: &Store, tree: &GitTree) -> Result<Vec<u8>> {
    store.read_locked(|| {
        let (_, dir) = store.resolve(&tree.name)?;
        read_definition(&dir, &format!("git::{}@{}", tree.url, tree.reference))
    })
}

/// `dir/step.yml`'s bytes: a regular file in the tree (a symlink only while it stays inside),
/// within the YAML bound.
fn read_definition(dir: &Path, shown: &str) -> Result<Vec<u8>> {
    steplib::checkout::Checkout::new(dir)
        .read("step.yml", steplib::model::MAX_YAML_BYTES as u64)
        .map_err(|e| Error::Steplib {
            what: format!("step {shown}"),
            reason: format!("step.yml: {e}"),
        })
}

/// Copies the directory `dir` as it is into `dest`.
fn activate_path(
    store: &Store,
    dir: &Path,
    dest: &Path,
    copy_yml: Option<&Path>,
    replace: crate::Replace,
) -> Result<()> {
    let shown = format!("path::{}", dir.display());
    let not_dir = |reason: String| Error::Fetch {
        what: format!("step {shown}"),
        reason,
    };
    let src = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => std::fs::canonicalize(dir).map_err(Error::io("resolve", dir))?,
        Ok(_) => return Err(not_dir("not a directory".into())),
        Err(e) => {
            return Err(not_dir(format!(
                "not a directory: {}",
                crate::error::io_words(&e)
            )));
        }
    };
    // The copy is built beside `dest`: inside the directory being copied, it would copy itself.
    let mut existing = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(Error::io("read the working directory", dest))?
            .join(dest)
    };
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    if let Ok(canon) = std::fs::canonicalize(&existing)
        && canon.starts_with(&src)
    {
        return Err(not_dir(format!(
            "the destination {} is inside the step's directory",
            dest.display()
        )));
    }
    let definition = match copy_yml {
        Some(yml) => Some(super::activation::pending_definition(
            yml,
            read_definition(&src, &shown)?,
        )?),
        None => None,
    };
    let claimed = crate::export::claim(dest, replace, store.interrupt())?;
    claimed.activate(&src, replace)?;
    super::activation::write_definition_if(definition)
}

/// `step-info` of a git ref or a path: the step.yml of the tree (git: stored as
/// [`fetch_git`] does) or of the directory.
pub fn ref_step_info(store: Option<&Store>, r: &StepRef, net: &NetConfig) -> Result<StepInfo> {
    match r {
        StepRef::Git(g) => {
            let store = store.ok_or_else(|| Error::Fetch {
                what: format!("step {}", r.shown()),
                reason: "no store".into(),
            })?;
            let tree = fetch_git(store, g, net)?;
            let what = format!("step git::{}@{}", tree.url, tree.reference);
            let dir = store.layout().object_dir(&tree.id);
            let step = steplib::read_step_yml_in(&dir, "step.yml").map_err(|e| match e {
                Error::Steplib { reason, .. } => Error::Steplib {
                    what: what.clone(),
                    reason: format!("step.yml: {reason}"),
                },
                e => e,
            })?;
            Ok(StepInfo {
                library: format!("git::{}", tree.url),
                picked: Picked {
                    id: tree.url.clone(),
                    version: tree.reference.clone(),
                    original_version: tree.reference.clone(),
                    latest_version: String::new(),
                    info: serde_json::json!({ "commit": tree.commit }),
                    step,
                    step_json: None,
                },
                definition_pth: dir.join("step.yml").display().to_string(),
            })
        }
        StepRef::Path(dir) => {
            let yml = dir.join("step.yml");
            let step = steplib::read_step_yml(&yml)?;
            Ok(StepInfo {
                library: "path".into(),
                picked: Picked {
                    id: dir.display().to_string(),
                    version: String::new(),
                    original_version: String::new(),
                    latest_version: String::new(),
                    info: Value::Object(serde_json::Map::new()),
                    step,
                    step_json: None,
                },
                definition_pth: yml.display().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_split_after_the_host() {
        for (spec, url, r) in [
            (
                "https://github.com/bitrise-steplib/steps-script.git@master",
                "https://github.com/bitrise-steplib/steps-script.git",
                Some("master"),
            ),
            ("https://h/r.git", "https://h/r.git", None),
            ("https://u:p@h/r.git", "https://u:p@h/r.git", None),
            (
                "https://u:p@h/r.git@v1.2.3",
                "https://u:p@h/r.git",
                Some("v1.2.3"),
            ),
            (
                "git@github.com:o/r.git@feature/x",
                "git@github.com:o/r.git",
                Some("feature/x"),
            ),
            ("git@github.com:o/r.git", "git@github.com:o/r.git", None),
            ("/srv/r.git@main", "/srv/r.git", Some("main")),
            ("file:///srv/r.git@main", "file:///srv/r.git", Some("main")),
            ("https://h/r.git@", "https://h/r.git", None),
        ] {
            assert_eq!(split_git_ref(spec), (url, r), "{spec}");
        }
    }

    #[test]
    fn the_old_tools_spellings_map_to_the_same_ref() {
        let g = |url: &str, r: &str| {
            Some(StepRef::Git(GitRef {
                url: url.into(),
                reference: r.into(),
            }))
        };
        assert_eq!(
            StepRef::from_parts(None, "git::https://h/r.git@main", ""),
            g("https://h/r.git", "main")
        );
        assert_eq!(
            StepRef::from_parts(Some("git"), "https://h/r.git", "main"),
            g("https://h/r.git", "main")
        );
        assert_eq!(
            StepRef::from_parts(Some("git"), "https://h/r.git", ""),
            g("https://h/r.git", "HEAD")
        );
        assert_eq!(
            StepRef::from_parts(Some("https://lib"), "git::https://h/r.git", "1.0"),
            g("https://h/r.git", "1.0")
        );
        assert_eq!(
            StepRef::from_parts(Some("path"), "./steps/x", ""),
            Some(StepRef::Path("./steps/x".into()))
        );
        assert_eq!(
            StepRef::from_parts(None, "git::https://u@h/r.git", "v2"),
            g("https://u@h/r.git", "v2")
        );
        assert_eq!(
            StepRef::from_parts(None, "git::https://h/r.git@v1", "v2"),
            g("https://h/r.git", "v1")
        );
        assert_eq!(
            StepRef::from_parts(Some("https://lib"), "script", "1"),
            None
        );
    }
}
