//! Step lookup, download and activation (what CI runs).
//!
//! Invariants:
//! - A step's source is verified before it is published (git: the checkout is exactly
//!   `source.commit`; archives: every entry vetted and the stream checked to its end), so an
//!   object bound to a step name was verified once and is trusted from then on.
//! - Concurrent activations that miss the same step make one download (single flight on the
//!   step's name); all of them then copy the same object.
//! - Activation materialises the tree at the destination atomically and never aliases the store.
//! - A cache hit needs no write access to the store.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::hash::ObjectId;
use crate::layout::Name;
use crate::steplib::model::step;
use crate::steplib::{self, Collection, Constraint, Opened, generate};
use crate::store::{Imported, Store};
use crate::tmp;

/// Largest step archive accepted.
const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// A step version picked from a collection.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The collection.
    pub collection: Collection,
    /// The collection as read from the store.
    pub opened: Opened,
    /// Step id.
    pub id: String,
    /// The version picked.
    pub version: String,
    /// The constraint as given.
    pub original_version: String,
    /// The group's latest version.
    pub latest_version: String,
    /// The group's info (`step-info.yml`).
    pub info: Value,
    /// The step definition.
    pub step: Value,
}

impl Resolved {
    /// The store name of this step version.
    pub fn name(&self) -> Result<Name> {
        self.collection.step_name(&self.id, &self.version)
    }

    /// The original step.yml inside the collection object.
    pub fn definition_path(&self) -> PathBuf {
        self.opened.step_yml(&self.id, &self.version)
    }
}

/// What `step-info --format json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StepInfo {
    /// The collection URI.
    pub library: String,
    /// Step id.
    pub id: String,
    /// Resolved version.
    pub version: String,
    /// The constraint as given.
    pub original_version: String,
    /// Latest version of the group.
    pub latest_version: String,
    /// Group info.
    pub info: Value,
    /// Step definition.
    pub step: Value,
    /// Path of the step.yml.
    pub definition_pth: String,
}

impl From<&Resolved> for StepInfo {
    fn from(r: &Resolved) -> StepInfo {
        StepInfo {
            library: r.collection.uri.clone(),
            id: r.id.clone(),
            version: r.version.clone(),
            original_version: r.original_version.clone(),
            latest_version: r.latest_version.clone(),
            info: r.info.clone(),
            step: r.step.clone(),
            definition_pth: r.definition_path().display().to_string(),
        }
    }
}

/// Opens collection `c`, setting it up first if it is not (that needs write access).
pub fn open_or_setup(store: &Store, c: &Collection, net: &NetConfig) -> Result<Opened> {
    if let Some(o) = steplib::open(store, c)? {
        return Ok(o);
    }
    generate::setup(store, c, false, net)?;
    steplib::open(store, c)?.ok_or_else(|| Error::NotSetUp { uri: c.uri.clone() })
}

/// Picks the version of step `id` that `constraint` selects. With `update`, a miss updates the
/// collection once and looks again.
pub fn resolve(
    store: &Store,
    c: &Collection,
    id: &str,
    constraint: &str,
    update: bool,
    net: &NetConfig,
) -> Result<Resolved> {
    let mut opened = open_or_setup(store, c, net)?;
    let mut updated = false;
    loop {
        let group = opened.group(id)?;
        let picked = group.as_ref().and_then(|g| {
            Constraint::parse(constraint)
                .select(g.versions.keys().map(String::as_str))
                .map(str::to_string)
        });
        match (group, picked) {
            (Some(g), Some(v)) => {
                let step = g.versions.get(&v).cloned().unwrap_or(Value::Null);
                return Ok(Resolved {
                    collection: c.clone(),
                    opened,
                    id: id.to_string(),
                    version: v,
                    original_version: constraint.to_string(),
                    latest_version: g.latest_version_number,
                    info: g.info,
                    step,
                });
            }
            (g, _) if !update || updated => {
                return Err(Error::StepNotFound {
                    collection: c.uri.clone(),
                    id: id.to_string(),
                    constraint: constraint.to_string(),
                    available: g
                        .map(|g| g.versions.keys().cloned().collect())
                        .unwrap_or_default(),
                });
            }
            _ => {
                generate::setup(store, c, true, net)?;
                opened = steplib::open(store, c)?
                    .ok_or_else(|| Error::NotSetUp { uri: c.uri.clone() })?;
                updated = true;
            }
        }
    }
}

/// Makes sure the step's source is in the store; one download among concurrent callers.
pub fn download(store: &Store, r: &Resolved, net: &NetConfig) -> Result<Imported> {
    let name = r.name()?;
    if let Some(id) = store.lookup(&name)? {
        return Ok(Imported {
            id,
            ingested: false,
        });
    }
    if net.offline && !all_local(r) {
        let mut cached: Vec<String> = store
            .names_in_route(&r.collection.alias)?
            .into_iter()
            .filter(|(i, _)| i == &r.id)
            .map(|(_, v)| v)
            .collect();
        cached.sort_by(|a, b| {
            steplib::version::Version::parse(a).cmp(&steplib::version::Version::parse(b))
        });
        return Err(Error::Offline {
            what: format!("step {}@{}", r.id, r.version),
            cached,
        });
    }
    store.fill(&name, false, || fetch_source(store, r, &name, net))
}

fn all_local(r: &Resolved) -> bool {
    let base = r.opened.meta.root.as_deref().map(Path::new);
    let locs = &r.opened.meta.steplib.download_locations;
    !locs.is_empty()
        && locs.iter().all(|l| {
            l.kind != "git" && matches!(fetch::locate(&l.src, base), Ok(fetch::Location::Local(_)))
        })
}

fn fetch_source(store: &Store, r: &Resolved, name: &Name, net: &NetConfig) -> Result<ObjectId> {
    let what = format!("step {}@{}", r.id, r.version);
    let mut locations = r.opened.meta.steplib.download_locations.clone();
    if locations.is_empty() {
        locations.push(steplib::DownloadLocation {
            kind: "git".into(),
            src: "source/git".into(),
        });
    }
    let base = r.opened.meta.root.as_deref().map(Path::new);
    let mut failures = Vec::new();
    for loc in &locations {
        let tmp = store.temp_dir("download", "download a step")?;
        let root = tmp.path().join("tree");
        let attempt = match loc.kind.as_str() {
            "zip" | "tar.gz" | "tgz" | "tar" => {
                let file = if loc.kind == "zip" {
                    "step.zip"
                } else {
                    "step.tar.gz"
                };
                let url = format!("{}{}/{}/{file}", loc.src, r.id, r.version);
                let archive = tmp.path().join("archive");
                fetch::download(&url, base, &archive, MAX_ARCHIVE_BYTES, &what, net)
                    .and_then(|_| store.ingest_into(&archive, &root))
                    .map_err(|e| format!("{} {url}: {}", loc.kind, e.describe()))
            }
            "git" => {
                let git = step::source_git(&r.step);
                let commit = step::source_commit(&r.step);
                match (git, commit) {
                    (Some(url), Some(commit)) => {
                        let clone = tmp.path().join("clone");
                        fetch::git_clone(url, Some(&r.version), Some(commit), &clone, &what, net)
                            .and_then(|_| tmp::remove_tree(&clone.join(".git")))
                            .and_then(|()| store.ingest_into(&clone, &root))
                            .map_err(|e| format!("git {url}: {}", e.describe()))
                    }
                    _ => Err("git: the step has no source.git and source.commit".to_string()),
                }
            }
            other => Err(format!("unknown download location type {other:?}")),
        };
        match attempt {
            Ok(id) => {
                store.commit(&tmp, &root, &id, Some(name))?;
                return Ok(id);
            }
            Err(e) => {
                log::info!("{what}: {e}");
                failures.push(e);
            }
        }
    }
    Err(Error::Fetch {
        what,
        reason: failures.join("; "),
    })
}

/// Activates the step: downloads it if needed, then copies it to `dest` (complete or not at
/// all, replacing what was there) and, with `copy_yml`, writes its step.yml there.
pub fn activate(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    net: &NetConfig,
) -> Result<ObjectId> {
    let name = r.name()?;
    let id = match store.export_replacing(&name, dest) {
        Ok(id) => id,
        Err(Error::NameNotFound { .. }) => {
            download(store, r, net)?;
            store.export_replacing(&name, dest)?
        }
        Err(e) => return Err(e),
    };
    if let Some(yml) = copy_yml {
        write_atomically(&r.definition_path(), yml)?;
    }
    Ok(id)
}

/// Copies `src` to `dest` through a temp file beside `dest` and one rename.
pub(crate) fn write_atomically(src: &Path, dest: &Path) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(Error::io("create dir", &parent))?;
    let tmp = parent.join(format!(".stepman-{:016x}.tmp", fastrand::u64(..)));
    let r = fs::copy(src, &tmp)
        .map_err(Error::io("copy", &tmp))
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
                .map_err(Error::io("chmod", &tmp))
        })
        .and_then(|()| fs::rename(&tmp, dest).map_err(Error::io("rename", dest)));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}
