//! The old tool's layout ("legacy view"): what the `bitrise` CLI reads, written from the store.
//!
//! The `bitrise` CLI links the old tool's Go packages, which read `<home>/routing.json` and
//! `<home>/step_collections/<alias>/{collection/, spec/spec.json, spec/slim-spec.json,
//! cache/<id>/<version>/}` (`<home>` is `~/.stepman`). [`write_view`] writes that layout for
//! collections of the store.
//!
//! Invariants:
//! - Every file and directory of the view appears complete or not at all: a directory
//!   (`collection/`, `cache/<id>/<version>/`) is built in a staging dir beside its final path and
//!   renamed in (`export::place_dir`), a file (`routing.json`, the specs) is written beside and
//!   renamed over (`atomic`). A process killed at any point leaves no partial file at a final
//!   path; its staging dirs are removed by the next view (or activation, export) in the same
//!   directory.
//! - Its modes are fixed, whatever the umask of the process that writes it (a pre-bake job as
//!   root, often under `umask 077`), so that another user (the CI user) reads all of it: every
//!   directory it creates 0755 (`store::make_dir_all`), every file 0644, and a file of a cached
//!   step, or of `collection/`, that is executable 0755 (`store::set_fixed_modes`, applied to a
//!   directory in its staging dir before it is renamed in: git and copies take the umask). What
//!   was there before the view, and directories it did not create, keep their modes.
//! - The alias is the collection's own ([`crate::steplib::alias_of`]: derived from the URI,
//!   never from the clock), so two runs, or two machines, agree.
//! - What is there is kept: `routing.json` keeps every route it did not write; a
//!   `cache/<id>/<version>/` identical to its object (same tree hash) is left alone, one that
//!   differs is refused (named in [`ViewReport::refused`]) unless [`Differing::Replace`]; the
//!   specs are rewritten only when the collection object changed since the view recorded them;
//!   `collection/` is kept while it is at the collection's commit. A second run with nothing new
//!   writes nothing.
//! - Writers of views into one home take its legacy-view lock (`lock.rs`). The old tool takes no
//!   lock: an old `stepman` or `bitrise` writing into the same layout at the same time is the one
//!   race this cannot exclude (bake first, then run).
//! - The view is recorded in the store (`<alias>/_legacy_view/current`, `store-format.md` §4d),
//!   so that `collections` can name its `spec.json`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::export::{Modes, Place};
use crate::fetch::{GitTransports, NetConfig};
use crate::hash::{self, Kind, ObjectId};
use crate::layout::{LEGACY_VIEW_ID, Name};
use crate::steplib::{self, Collection, ExportType, Opened, Source};
use crate::store::{FILE_MODE, Producer, Rebuild, Store, make_dir_all};

/// The old tool's file of routes: StepLib URI → alias.
pub const ROUTING_FILE: &str = "routing.json";
/// The old tool's directory of collections.
pub const COLLECTIONS_DIR: &str = "step_collections";
/// The lock file of views written into one home (ours; the old tool ignores it).
const LOCK_FILE: &str = ".stepman.legacy-view.lock";
/// The record's one file.
const RECORD_FILE: &str = "view.json";
/// The record's format.
const RECORD_FORMAT: u32 = 1;

/// What a view does with a `cache/<id>/<version>/` that differs from the store's object, and
/// with a route of the URI to another alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differing {
    /// Leave it as it is and report it ([`ViewReport::refused`]).
    Refuse,
    /// Replace it with the store's (swapped in atomically).
    Replace,
}

/// Where and how a view is written.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// The old tool's home (`~/.stepman`): where `routing.json` and `step_collections/` go.
    pub home: PathBuf,
    /// What is done with what differs from the store.
    pub differing: Differing,
}

/// What happened to one part of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written now.
    Written,
    /// There and as it should be: left alone.
    Kept,
    /// There, different, and replaced (with [`Differing::Replace`], or a checkout at another
    /// commit).
    Replaced,
    /// Not written: the collection has nothing to write it from (a `spec.json` URL has no
    /// StepLib checkout).
    Absent,
}

/// The view of one collection.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionView {
    /// The collection's URI (its key in `routing.json`).
    pub uri: String,
    /// Its alias: `step_collections/<alias>/`.
    pub alias: String,
    /// Its `spec/spec.json`.
    pub spec_path: PathBuf,
    /// What happened to the specs.
    pub spec: Outcome,
    /// What happened to `collection/`.
    pub checkout: Outcome,
    /// Each cached step version (`id`, `version`) and what happened to its `cache/` dir.
    pub steps: Vec<(String, String, Outcome)>,
}

/// What [`write_view`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ViewReport {
    /// The old tool's home.
    pub home: PathBuf,
    /// Whether `routing.json` was written (`false`: it had every route already).
    pub routing_written: bool,
    /// Each collection's view.
    pub collections: Vec<CollectionView>,
    /// What was left as it is although it differs from the store ([`Differing::Refuse`]): each
    /// path and why. Empty when the view is complete.
    pub refused: Vec<(PathBuf, String)>,
}

/// The record of a collection's view in the store (`view.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRecord {
    /// The record's format (1).
    pub format: u32,
    /// The old tool's home the view was written into.
    pub home: PathBuf,
    /// The view's `spec/spec.json`.
    pub spec_path: PathBuf,
    /// The collection object the specs were written from.
    pub collection: String,
}

/// The record's name: `<alias>/_legacy_view/current`.
fn record_name(c: &Collection) -> Result<Name> {
    Name::new(&c.alias, LEGACY_VIEW_ID, steplib::COLLECTION_VERSION)
}

/// The record of `c`'s last view, if there is one (`None` too when it cannot be read: it is a
/// hint for `collections`, never needed for correctness).
pub fn view_record(store: &Store, c: &Collection) -> Option<ViewRecord> {
    let (_, dir) = store.resolve(&record_name(c).ok()?).ok()?;
    let bytes = fs::read(dir.join(RECORD_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `spec.json` that `collections` names for `c`: its view's, when one was recorded and
/// its file is there.
pub fn view_spec_path(store: &Store, c: &Collection) -> Option<PathBuf> {
    view_record(store, c)
        .map(|r| r.spec_path)
        .filter(|p| p.is_file())
}

/// Writes the old tool's layout for the collections `cs` (each set up in the store) into
/// `opts.home` (see the module invariants). `net` is for cloning a git StepLib's checkout.
pub fn write_view(
    store: &Store,
    cs: &[Collection],
    opts: &ViewOptions,
    net: &NetConfig,
) -> Result<ViewReport> {
    let home = &opts.home;
    let routing_path = home.join(ROUTING_FILE);
    let collections_dir = home.join(COLLECTIONS_DIR);
    store.check_outside(&collections_dir)?;
    store.check_outside(&routing_path)?;
    make_dir_all(&collections_dir)?;
    let _lock = crate::lock::home_file_exclusive(&home.join(LOCK_FILE), store.interrupt())?;
    let old_routes = read_routes(&routing_path)?;
    let mut routes = old_routes.clone();
    let mut report = ViewReport {
        home: home.clone(),
        routing_written: false,
        collections: Vec::new(),
        refused: Vec::new(),
    };
    for c in cs {
        net.check_cancel()?;
        let o = steplib::open(store, c)?.ok_or_else(|| Error::NotSetUp { uri: c.uri.clone() })?;
        let uri = o.meta.uri.clone();
        if let Some(a) = old_routes.get(&uri).filter(|a| **a != c.alias)
            && opts.differing == Differing::Refuse
        {
            report.refused.push((
                routing_path.clone(),
                format!(
                    "routes {uri} to {a}, not to this view's {}: left as it is (pass \
                     --replace-differing to re-point it; {a}'s directory is kept)",
                    c.alias
                ),
            ));
            continue;
        }
        let view = write_collection(store, c, &o, opts, net, &mut report.refused)?;
        routes.insert(uri, c.alias.clone());
        report.collections.push(view);
    }
    // Last: the old code sees a route only once everything it leads to is there.
    if routes != old_routes {
        write_routes(&routing_path, &routes)?;
        report.routing_written = true;
    }
    Ok(report)
}

/// Writes `step_collections/<alias>/` of one collection.
fn write_collection(
    store: &Store,
    c: &Collection,
    o: &Opened,
    opts: &ViewOptions,
    net: &NetConfig,
    refused: &mut Vec<(PathBuf, String)>,
) -> Result<CollectionView> {
    let dir = opts.home.join(COLLECTIONS_DIR).join(&c.alias);
    make_dir_all(&dir)?;
    let mut steps = Vec::new();
    for (id, version) in crate::preload::list_cached(store, c)? {
        net.check_cancel()?;
        let name = c.step_name(&id, &version)?;
        let dest = dir.join("cache").join(&id).join(&version);
        if let Some(outcome) = write_cached(store, &name, &dest, opts.differing, refused)? {
            steps.push((id, version, outcome));
        }
    }
    let checkout = write_checkout(store, c, o, &dir.join("collection"), net)?;
    let spec_path = dir.join("spec").join("spec.json");
    let spec = write_specs(store, c, opts, &spec_path)?;
    Ok(CollectionView {
        uri: o.meta.uri.clone(),
        alias: c.alias.clone(),
        spec_path,
        spec,
        checkout,
        steps,
    })
}

/// Copies the object of `name` to `dest` unless an identical tree is there. `Ok(None)`: the
/// name went away meanwhile (a `delete`).
fn write_cached(
    store: &Store,
    name: &Name,
    dest: &Path,
    differing: Differing,
    refused: &mut Vec<(PathBuf, String)>,
) -> Result<Option<Outcome>> {
    let Some(want) = store.lookup(name)? else {
        return Ok(None);
    };
    let there = fs::symlink_metadata(dest).is_ok();
    if there {
        if tree_digest(dest)? == Some(want) {
            return Ok(Some(Outcome::Kept));
        }
        if differing == Differing::Refuse {
            refused.push((
                dest.to_path_buf(),
                format!(
                    "differs from the store's {name} (object {}): left as it is (pass \
                     --replace-differing to replace it)",
                    want.to_hex()
                ),
            ));
            return Ok(Some(Outcome::Kept));
        }
    }
    if let Some(parent) = dest.parent() {
        make_dir_all(parent)?;
    }
    let how = if there {
        Place::Replace
    } else {
        Place::IfMissing
    };
    match store.export_placed(name, dest, how, Modes::Fixed) {
        Ok(_) => Ok(Some(if there {
            Outcome::Replaced
        } else {
            Outcome::Written
        })),
        Err(Error::NameNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes `collection/`, the StepLib checkout the old `update` pulls in: a git work tree at
/// the collection's commit with `origin` at its URI (a git StepLib), a clone of a local git
/// StepLib, or a copy of a local StepLib directory. Kept when it is there (a git StepLib's: at
/// the collection's commit; else replaced).
fn write_checkout(
    store: &Store,
    c: &Collection,
    o: &Opened,
    dest: &Path,
    net: &NetConfig,
) -> Result<Outcome> {
    let what = format!("collection {}", o.meta.uri);
    let there = fs::symlink_metadata(dest).is_ok();
    if o.is_api() {
        return Ok(Outcome::Absent);
    }
    match &c.source {
        Source::SpecUrl(_) | Source::Api(_) => Ok(Outcome::Absent),
        Source::Git(url) => {
            let Some(commit) = o.meta.source_commit.as_deref() else {
                return Ok(Outcome::Absent);
            };
            if there && crate::fetch::git_head(dest).is_some_and(|h| h.eq_ignore_ascii_case(commit))
            {
                return Ok(Outcome::Kept);
            }
            crate::export::sweep_beside(dest);
            let how = if there {
                Place::Replace
            } else {
                Place::IfMissing
            };
            // The commit from the StepLib's kept mirror when it has it (no network: a first
            // view works offline), else from the StepLib.
            let mirror = store.layout().mirror(&c.alias);
            crate::export::place_dir(dest, how, |tree| {
                fixed_modes_after(tree, |tree| {
                    if mirror.join("HEAD").is_file() {
                        match crate::fetch::git_work_tree_via(
                            url,
                            Some(&mirror),
                            Some(commit),
                            tree,
                            &what,
                            GitTransports::Network,
                            net,
                        ) {
                            Ok(()) => return Ok(()),
                            Err(Error::Cancelled) => return Err(Error::Cancelled),
                            Err(e) => {
                                log::info!("{what}: not from the kept mirror ({})", e.describe());
                                if fs::symlink_metadata(tree).is_ok() {
                                    crate::tmp::remove_tree(tree)?;
                                }
                            }
                        }
                    }
                    crate::fetch::git_work_tree(
                        url,
                        Some(commit),
                        tree,
                        &what,
                        GitTransports::Network,
                        net,
                    )
                })
            })?;
            Ok(if there {
                Outcome::Replaced
            } else {
                Outcome::Written
            })
        }
        Source::Dir(src) => {
            if there {
                return Ok(Outcome::Kept);
            }
            crate::export::sweep_beside(dest);
            crate::export::place_dir(dest, Place::IfMissing, |tree| {
                fixed_modes_after(tree, |tree| {
                    if src.join(".git").exists() {
                        let url = src.to_string_lossy();
                        crate::fetch::git_work_tree(
                            &url,
                            None,
                            tree,
                            &what,
                            GitTransports::NetworkAndLocal,
                            net,
                        )
                    } else {
                        crate::export::copy_tree(src, tree)
                    }
                })
            })?;
            Ok(Outcome::Written)
        }
    }
}

/// Runs `build` (which makes the directory `tree` in a staging dir, not yet renamed in), then
/// gives what it made the view's fixed modes (`store::set_fixed_modes`): git and copies take the
/// umask, and a view baked under `umask 077` must still be read by the CI user.
fn fixed_modes_after(tree: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    build(tree)?;
    crate::store::set_fixed_modes(tree)
}

/// Writes `spec/spec.json` (every version) and `spec/slim-spec.json` (each step's info and
/// latest version), as the old tool does, unless the record says they were written into this
/// home from this collection object and both are there. Then records the view.
fn write_specs(store: &Store, c: &Collection, opts: &ViewOptions, spec: &Path) -> Result<Outcome> {
    let slim = spec.with_file_name("slim-spec.json");
    let spec_dir = spec.parent().unwrap_or(Path::new("."));
    make_dir_all(spec_dir)?;
    let mode = crate::atomic::FileMode::Exactly(FILE_MODE);
    // The spec is read from many files of the collection object: under the store lock, so that
    // a gc after a concurrent update cannot remove it half-way.
    let (object, outcome) = store.read_locked(|| -> Result<(String, Outcome)> {
        let o = steplib::open(store, c)?.ok_or_else(|| Error::NotSetUp { uri: c.uri.clone() })?;
        let object = o
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let current = view_record(store, c)
            .is_some_and(|r| r.home == opts.home && r.collection == object && r.spec_path == spec);
        if current && spec.is_file() && slim.is_file() {
            return Ok((object, Outcome::Kept));
        }
        let there = spec.exists();
        crate::atomic::write_file_atomically(&slim, mode, |mut w| {
            steplib::write_spec(&o, ExportType::Latest, &mut w)
        })?;
        crate::atomic::write_file_atomically(spec, mode, |mut w| {
            steplib::write_spec(&o, ExportType::Full, &mut w)
        })?;
        Ok((
            object,
            if there {
                Outcome::Replaced
            } else {
                Outcome::Written
            },
        ))
    })?;
    if outcome != Outcome::Kept {
        match record(store, c, opts, spec, &object) {
            Ok(()) => {}
            // A store this user may only read (another user's, a baked one) still gives its
            // view; `collections` then does not know of it, and the next view writes the specs
            // again.
            Err(e @ (Error::NotOwner { .. } | Error::ReadOnly { .. })) => {
                log::warn!("{}; the view is not recorded in the store", e.describe());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcome)
}

/// Binds `<alias>/_legacy_view/current` to a record of this view.
fn record(
    store: &Store,
    c: &Collection,
    opts: &ViewOptions,
    spec: &Path,
    object: &str,
) -> Result<()> {
    let r = ViewRecord {
        format: RECORD_FORMAT,
        home: opts.home.clone(),
        spec_path: spec.to_path_buf(),
        collection: object.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(&r).map_err(|e| Error::Format {
        path: PathBuf::from(RECORD_FILE),
        reason: e.to_string(),
    })?;
    store.produce(
        &record_name(c)?,
        Rebuild::Always,
        Producer::LegacyView,
        |stage| {
            stage.write("legacy view record", |w| {
                w.add_file(RECORD_FILE, false, Some(bytes.len() as u64), &bytes[..])
            })
        },
    )?;
    Ok(())
}

/// Reads `routing.json` (missing: no routes). One that is not a JSON object of strings is an
/// error: the old tool could not read it either, and rewriting it would lose its routes.
fn read_routes(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if crate::sys::is_not_found(&e) => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("read", path)(e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::LegacyView {
        path: path.to_path_buf(),
        reason: format!(
            "not a JSON object of StepLib URIs to aliases ({e}): fix or remove it; it is left as \
             it is"
        ),
    })
}

/// Writes `routing.json` atomically, as the old tool formats it (keys sorted, tab-indented).
fn write_routes(path: &Path, routes: &BTreeMap<String, String>) -> Result<()> {
    use serde::Serialize as _;
    let mut bytes = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, fmt);
    routes.serialize(&mut ser).map_err(|e| Error::LegacyView {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mode = crate::atomic::FileMode::Exactly(FILE_MODE);
    crate::atomic::write_file_atomically(path, mode, |w| {
        w.write_all(&bytes).map_err(Error::io("write", path))
    })
}

/// The tree hash of the directory at `path` as `store-format.md` §3 defines it (names, kinds,
/// the executable bit, contents, symlink targets); `None` when it holds something no object
/// can (a FIFO, a name that is not UTF-8), or is not a directory.
fn tree_digest(path: &Path) -> Result<Option<ObjectId>> {
    Ok(dir_digest(path)?.map(ObjectId::from_bytes))
}

fn dir_digest(dir: &Path) -> Result<Option<[u8; 32]>> {
    let meta = fs::symlink_metadata(dir).map_err(Error::io("stat", dir))?;
    if !meta.is_dir() {
        return Ok(None);
    }
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("read dir", dir))? {
        let entry = entry.map_err(Error::io("read dir", dir))?;
        let p = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Ok(None);
        };
        let meta = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
        let ft = meta.file_type();
        let child = if ft.is_dir() {
            match dir_digest(&p)? {
                Some(d) => (name, Kind::Dir, d),
                None => return Ok(None),
            }
        } else if ft.is_file() {
            let mut h = blake3::Hasher::new();
            let f = fs::File::open(&p).map_err(Error::io("open", &p))?;
            h.update_reader(f).map_err(Error::io("read", &p))?;
            let kind = if meta.permissions().mode() & 0o111 != 0 {
                Kind::Exec
            } else {
                Kind::File
            };
            (name, kind, *h.finalize().as_bytes())
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).map_err(Error::io("read link", &p))?;
            let Some(t) = t.to_str() else {
                return Ok(None);
            };
            (name, Kind::Symlink, hash::symlink_digest(t))
        } else {
            return Ok(None);
        };
        children.push(child);
    }
    Ok(Some(hash::dir_digest(&mut children)))
}
