//! Building a collection object from a StepLib checkout or a `spec.json`.
//!
//! The object holds `collection.json`, one `groups/<id>.json` per step group (the spec's
//! `steps.<id>`), its lookup index `index/<id>.json` (where each version's JSON lies in the
//! group) and every version's original step.yml as `yml/<id>/<version>.yml`. Step files are
//! parsed by up to [`WORKERS`] threads, a group each, handing finished groups to the writer one at
//! a time; a group holds its files and their JSON, never their parsed values, and is bounded by
//! [`MAX_GROUP_BYTES`], so memory stays bounded by a few groups, not by the StepLib's size. One
//! invalid step.yml (or group) is reported in `collection.json`'s `skipped` and left out; it does
//! not fail the whole StepLib.
//!
//! The StepLib limits (README, "What a StepLib may hold"): each YAML file at most
//! [`MAX_YAML_BYTES`]; each step group at most [`MAX_GROUP_BYTES`] (a spec.json group also at most
//! [`MAX_GROUP_VALUES`] values); a spec.json at most [`MAX_SPEC_BYTES`]; and the collection object
//! within the import limits ([`crate::ingest::Limits`]: entries, index, sizes), reported as
//! [`Error::SteplibLimit`] naming the variable that raises them.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

use super::checkout::{self, Checkout, EntryKind, Refusal};
use super::model::{
    CollectionMeta, Doc, MAX_YAML_BYTES, Skipped, SteplibMeta, parse_yaml_as, validate_step,
};
use super::{Collection, Source, version};
use crate::error::{Error, Result, SteplibParseError};
use crate::fetch::{self, NetConfig};
use crate::hash::ObjectId;
use crate::ingest::TreeWriter;
use crate::layout::{CollectionLayout, Name};
use crate::store::{Fill, Imported, Producer, Rebuild, Stage, Store, Tree};

/// The name of `setup`'s threads that load step groups.
pub const SETUP_THREAD: &str = "stepman-setup";

/// Most threads parsing step groups at once (each holds at most one group).
pub const WORKERS: usize = 2;
/// Largest `spec.json` accepted over HTTP (it goes to disk and is read streaming: this bounds
/// the disk, not memory).
pub const MAX_SPEC_BYTES: u64 = 512 << 20;
/// Most bytes one step group may take: in a checkout, its step.yml files plus their JSON; in a
/// spec.json, its text (and so any one string of it); also any other top-level value of a
/// spec.json. The largest real group (git-clone, 92 versions) takes 1.6 MiB.
pub const MAX_GROUP_BYTES: u64 = 8 << 20;
/// Most values (keys included) of one step group of a spec.json (git-clone: 28,000).
pub const MAX_GROUP_VALUES: usize = 150_000;

/// Sets up (or, with [`Fill::Again`], regenerates) collection `c`; concurrent callers for the
/// same collection wait for the first and share its result.
pub fn setup(store: &Store, c: &Collection, mode: Fill, net: &NetConfig) -> Result<Imported> {
    fill(store, c, mode.into(), net).map_err(|e| steplib_limit(c, e))
}

/// Updates collection `c` unless its name was bound after `since` (then another process
/// refreshed it meanwhile, and that is the result): ten lookups that find the collection stale at
/// once refresh it once.
pub fn refresh(
    store: &Store,
    c: &Collection,
    since: std::time::SystemTime,
    net: &NetConfig,
) -> Result<Imported> {
    fill(store, c, Rebuild::UnlessBoundSince(since), net).map_err(|e| steplib_limit(c, e))
}

fn fill(store: &Store, c: &Collection, mode: Rebuild<'_>, net: &NetConfig) -> Result<Imported> {
    let net = &NetConfig {
        credential: c.credential.clone(),
        ..net.clone()
    };
    store.produce(&c.name(), mode, Producer::Collection, |stage| {
        match &c.source {
            Source::Dir(dir) => {
                stage.write(&c.uri, |w| from_dir(dir, c, None, w, &*net.progress, None))
            }
            Source::Api(base) => super::api_read::write_collection(stage, c, base, None, net),
            Source::Git(url) => {
                // A collection set up as a StepLib API stays one. A first setup of an http(s)
                // URL that is not a git URL by its form (no `.git`) asks for its
                // `v2/meta.json` first: one request, and the API needs no clone.
                let bound = super::open(store, c)?;
                if let Some(a) = bound.as_ref().and_then(|o| o.meta.api.clone()) {
                    return super::api_read::write_collection(stage, c, &a.base, None, net);
                }
                let what = format!("collection {}", c.uri);
                if bound.is_none()
                    && let Some(meta) = super::api_read::probe(url, &what, net, stage.dir())
                {
                    return super::api_read::write_collection(stage, c, url, Some(meta), net);
                }
                from_git(store, c, bound, url, stage, net)
            }
            Source::SpecUrl(url) => {
                let file = stage.dir().join("spec.json");
                fetch::download(
                    url,
                    None,
                    &file,
                    MAX_SPEC_BYTES,
                    &format!("collection {}", c.uri),
                    net,
                )?;
                stage.write(&c.uri, |w| from_spec_file(&file, c, w))
            }
        }
    })
}

/// Sets up or updates a git StepLib from its kept mirror (`store-format.md` section 4a,
/// "Mirrors"). We hold the name lock of the collection: nobody re-points it meanwhile.
/// `bound` is the collection object its name points at (read once, by the caller).
fn from_git(
    store: &Store,
    c: &Collection,
    bound: Option<super::Opened>,
    url: &str,
    stage: &mut Stage<'_>,
    net: &NetConfig,
) -> Result<Tree> {
    let what = format!("collection {}", c.uri);
    // The bound object, when this layout wrote it: an update reuses its unchanged groups.
    let current = bound.filter(|o| {
        o.meta.layout == super::model::COLLECTION_LAYOUT && o.meta.source_commit.is_some()
    });
    // An update of an unchanged StepLib costs one round trip: when its HEAD is the commit the
    // bound object was generated from, that object stays, bound again (its age is now).
    if let (Some(o), Some(id)) = (&current, store.lookup(&c.name())?)
        && let Some(built_from) = o.meta.source_commit.as_deref()
    {
        let head = fetch::git_ls_remote(url, "HEAD", &what, fetch::GitTransports::Network, net)?;
        if head.eq_ignore_ascii_case(built_from) {
            log::debug!("{what}: HEAD is still {head}: nothing new");
            return Ok(stage.keep(id));
        }
        log::debug!("{what}: HEAD moved from {built_from} to {head}");
    }
    let layout = store.layout();
    crate::store::make_dir_via(&layout.mirrors(), stage.dir())?;
    let _mirror_lock = crate::lock::name_exclusive(layout, &mirror_lock(c)?, store.interrupt())?;
    let mirror = layout.mirror(&c.alias);
    let scratch = stage.dir().join("git");
    fs::create_dir(&scratch).map_err(Error::io("create dir", &scratch))?;
    // A git StepLib's URL is never local (a path or `file://` is a local dir).
    let transports = fetch::GitTransports::Network;
    let mut head = fetch::git_mirror_fetch(url, &mirror, &scratch, &what, transports, net)?;
    let mut reuse = current.as_ref().and_then(|o| reuse_plan(&mirror, o, &head));
    if let Some(r) = &reuse {
        log::debug!(
            "{what}: regenerating {} of {} step groups changed since {}",
            r.ids.len() - r.keep.len(),
            r.ids.len(),
            r.old_commit
        );
    }
    // The commit is read from the mirror through git, with no checkout. A mirror from which git
    // cannot read it back (damaged objects) is only a cache: start afresh, once.
    let mut fresh = false;
    loop {
        let why = match checkout::GitTree::open(&mirror, &head) {
            Err(why) => why,
            Ok(tree) => {
                let co = Checkout::Git(Box::new(tree));
                let written = stage.attempt(|stage| {
                    let t = stage.write(&c.uri, |w| {
                        from_checkout(
                            &co,
                            None,
                            c,
                            Some(head.clone()),
                            w,
                            &*net.progress,
                            reuse.as_ref(),
                        )
                    });
                    match co.damaged() {
                        Some(why) => Err(Err(why)),
                        None => t.map_err(Ok),
                    }
                })?;
                match written {
                    Ok(tree) => return Ok(tree),
                    Err(Ok(e)) => return Err(e),
                    Err(Err(why)) => why,
                }
            }
        };
        if fresh {
            return Err(Error::Fetch {
                what: what.clone(),
                reason: format!("reading {head} from a fresh mirror: {why}"),
            });
        }
        log::warn!(
            "{what}: the kept mirror {} is damaged ({why}); cloning afresh",
            mirror.display()
        );
        fetch::git_mirror_discard(&mirror, &scratch)?;
        head = fetch::git_mirror_fetch(url, &mirror, &scratch, &what, transports, net)?;
        reuse = None;
        fresh = true;
    }
}

/// The lock a git StepLib's mirror is fetched under (a name lock; no such name is bound).
fn mirror_lock(c: &Collection) -> Result<Name> {
    Name::new(&c.alias, MIRROR_LOCK_ID, "git")
}

/// The id part of [`mirror_lock`]'s name.
const MIRROR_LOCK_ID: &str = "_mirror";

/// Removes the kept mirror of collection `c`, if it has one, under its lock.
pub(crate) fn remove_mirror(store: &Store, c: &Collection) -> Result<()> {
    let layout = store.layout();
    let mirror = layout.mirror(&c.alias);
    if !crate::store::real_dir(&layout.mirrors())? || fs::symlink_metadata(&mirror).is_err() {
        return Ok(());
    }
    let _lock = crate::lock::name_exclusive(layout, &mirror_lock(c)?, store.interrupt())?;
    if fs::symlink_metadata(&mirror).is_err() {
        return Ok(());
    }
    crate::tmp::remove_tree(&mirror)
}

/// What an update reuses of the bound object: the step groups whose `steps/<id>` tree is the
/// same in the new commit as in the one the object was built from.
pub(crate) struct Reuse {
    /// The bound object.
    old_dir: std::path::PathBuf,
    /// Its `skipped` (a reused group's entries are taken over).
    old_skipped: Vec<Skipped>,
    /// The commit it was built from.
    old_commit: String,
    /// Every directory of `steps/` in the new commit (what a listing of its checkout gives).
    ids: Vec<String>,
    /// Those whose tree did not change.
    keep: std::collections::BTreeSet<String>,
}

/// Which groups of the object `old` the commit `new` leaves unchanged, compared by their tree
/// ids in the mirror; `None` (regenerate everything from a full checkout) when the old commit
/// is not in the mirror, `steplib.yml` changed, or the new tree holds anything a partial
/// checkout could read differently from a full one: a symlink, a submodule, a name that is not
/// UTF-8, no `steps` directory.
fn reuse_plan(mirror: &Path, old: &super::Opened, new: &str) -> Option<Reuse> {
    let old_commit = old.meta.source_commit.clone()?;
    let why_not = |why: &str| {
        log::debug!("regenerating every step group: {why}");
        None
    };
    let all = match fetch::git_mirror_tree(mirror, new, fetch::Recursion::All, &[]) {
        Ok(t) => t,
        Err(e) => return why_not(&e),
    };
    if all.iter().any(|e| e.mode == "120000" || e.mode == "160000") {
        return why_not("the StepLib holds a symlink or a submodule");
    }
    if !all.iter().any(|e| e.path == "steps" && e.mode == "040000") {
        return why_not("no steps directory");
    }
    let before = match fetch::git_mirror_tree(
        mirror,
        &old_commit,
        fetch::Recursion::Paths,
        &["steplib.yml", "steps/"],
    ) {
        Ok(t) => t,
        Err(e) => return why_not(&format!("{old_commit} is not in the mirror ({e})")),
    };
    let oid = |entries: &[fetch::TreeEntry], path: &str| {
        entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| (e.mode.clone(), e.oid.clone()))
    };
    match (oid(&all, "steplib.yml"), oid(&before, "steplib.yml")) {
        (Some(a), Some(b)) if a == b => {}
        _ => return why_not("steplib.yml changed"),
    }
    let mut ids = Vec::new();
    let mut keep = std::collections::BTreeSet::new();
    for e in &all {
        let Some(id) = e.path.strip_prefix("steps/") else {
            continue;
        };
        if id.contains('/') || e.mode != "040000" {
            continue;
        }
        if oid(&before, &e.path) == Some((e.mode.clone(), e.oid.clone())) {
            keep.insert(id.to_string());
        }
        ids.push(id.to_string());
    }
    Some(Reuse {
        old_dir: old.dir.clone(),
        old_skipped: old.meta.skipped.clone(),
        old_commit,
        ids,
        keep,
    })
}

/// Writes group `id` as the bound object has it (its files, unparsed, and its `skipped`
/// entries): what generating it again from the same tree would write.
fn copy_group(w: &mut TreeWriter, r: &Reuse, id: &str, meta: &mut CollectionMeta) -> Result<()> {
    let at = format!("steps/{id}");
    let under = format!("{at}/");
    meta.skipped.extend(
        r.old_skipped
            .iter()
            .filter(|s| s.path == at || s.path.starts_with(&under))
            .cloned(),
    );
    let index_rel = CollectionLayout::index(id);
    let index = match fs::read(r.old_dir.join(&index_rel)) {
        Ok(b) => b,
        // The group had no valid version (or was left out): only its `skipped` entries.
        Err(e) if crate::sys::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::io("read", r.old_dir.join(&index_rel))(e)),
    };
    let parsed: super::model::GroupIndex =
        serde_json::from_slice(&index).map_err(|e| Error::Format {
            path: r.old_dir.join(&index_rel),
            reason: format!("invalid index file: {e}"),
        })?;
    // The bound object's files themselves (hard links where the file system has them):
    // nothing of an unchanged group is copied.
    for rel in [
        CollectionLayout::definitions(id),
        CollectionLayout::group(id),
        index_rel,
    ] {
        w.add_linked_file(&rel, &r.old_dir.join(&rel))?;
    }
    meta.steps += 1;
    meta.versions += parsed.versions.len();
    Ok(())
}

/// An import limit hit while writing a collection object is a StepLib limit: say so, and name
/// the variable that raises it.
fn steplib_limit(c: &Collection, e: Error) -> Error {
    match e {
        Error::LimitExceeded {
            entry, what, limit, ..
        } => Error::SteplibLimit {
            collection: format!("collection {}", c.uri),
            entry,
            what,
            limit,
        },
        e => e,
    }
}

fn steplib_err(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Steplib {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Why a YAML file of a checkout was not used: not there, not read (with why), or not valid.
#[derive(Debug, thiserror::Error)]
enum YamlError {
    #[error("{}", Refusal::NotFound)]
    NotFound,
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Parse(#[from] SteplibParseError),
}

/// Reads and parses `rel` of the checkout, bounded by [`MAX_YAML_BYTES`] before it is read.
fn read_yaml(co: &Checkout, rel: &str, doc: Doc) -> std::result::Result<Value, YamlError> {
    let raw = read_bounded(co, rel)?;
    let text = std::str::from_utf8(&raw).map_err(|_| SteplibParseError::NotUtf8)?;
    Ok(parse_yaml_as(text, doc)?)
}

/// The bytes of `rel` of the checkout: a regular file in the tree, of at most [`MAX_YAML_BYTES`].
fn read_bounded(co: &Checkout, rel: &str) -> std::result::Result<Vec<u8>, YamlError> {
    co.read(rel, MAX_YAML_BYTES as u64).map_err(|e| match e {
        Refusal::NotFound => YamlError::NotFound,
        e => YamlError::Refused(e),
    })
}

/// A step.yml's bytes as setup reads them: UTF-8, one YAML document, [`validate_step`].
pub(crate) fn parse_step_yml(raw: &[u8]) -> std::result::Result<Value, SteplibParseError> {
    let text = std::str::from_utf8(raw).map_err(|_| SteplibParseError::NotUtf8)?;
    let v = parse_yaml_as(text, Doc::Step)?;
    validate_step(&v)?;
    Ok(v)
}

/// A `step-info.yml`'s text as setup reads it.
pub(crate) fn parse_step_info(text: &str) -> std::result::Result<Value, SteplibParseError> {
    parse_yaml_as(text, Doc::StepInfo).and_then(step_info)
}

/// A `steplib.yml`'s text as setup reads it.
pub(crate) fn parse_steplib_yml(text: &str) -> std::result::Result<SteplibMeta, SteplibParseError> {
    parse_yaml_as(text, Doc::Steplib).and_then(steplib_meta)
}

/// A parsed `step-info.yml`: a mapping (an empty file is an empty one).
pub(crate) fn step_info(v: Value) -> std::result::Result<Value, SteplibParseError> {
    match v {
        v @ Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(SteplibParseError::NotAMapping),
    }
}

/// A parsed `steplib.yml`, with its required fields.
pub(crate) fn steplib_meta(v: Value) -> std::result::Result<SteplibMeta, SteplibParseError> {
    let meta: SteplibMeta =
        serde_json::from_value(v).map_err(|e| SteplibParseError::Schema(e.to_string()))?;
    if meta.format_version.is_empty() || meta.steplib_source.is_empty() {
        return Err(SteplibParseError::MissingSteplibFields);
    }
    Ok(meta)
}

/// A step group ready to be written: each version's original file and its JSON.
struct GroupData {
    id: String,
    info: Value,
    /// `(version, original bytes, JSON of the parsed step)`.
    versions: Vec<(String, Vec<u8>, Vec<u8>)>,
    skipped: Vec<Skipped>,
}

fn json_of(v: &Value) -> Vec<u8> {
    // Serializing a Value to memory cannot fail (its keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

fn group_too_large(id: &str) -> Skipped {
    Skipped {
        path: format!("steps/{id}"),
        error: format!(
            "step group past the StepLib limit of {MAX_GROUP_BYTES} bytes (its step.yml files \
             and their JSON)"
        ),
    }
}

pub(crate) fn valid_component(s: &str) -> bool {
    Name::new("r", s, "v").is_ok() && !s.starts_with('_')
}

/// Why a StepLib version name is refused, if it is: not a name component, or spelled like the
/// names older stores gave precompiled executables (`<version>+exe.<platform>.<sha256>`), which
/// such a store may still hold under the collection's route (`store-format.md`, "Names").
fn invalid_version(v: &str) -> Option<&'static str> {
    if !valid_component(v) {
        Some("invalid version name")
    } else if v.contains("+exe.") {
        Some("reserved version name: `+exe.` is how older stores named precompiled executables")
    } else {
        None
    }
}

fn load_group(
    co: &Checkout,
    id: &str,
    assets_base: Option<&str>,
) -> std::result::Result<GroupData, Skipped> {
    let rel = |p: &str| format!("steps/{id}/{p}");
    let mut skipped = Vec::new();
    let mut info = match read_yaml(co, &rel("step-info.yml"), Doc::StepInfo)
        .and_then(|v| step_info(v).map_err(YamlError::Parse))
    {
        Ok(v) => v,
        Err(YamlError::NotFound) => Value::Object(Map::new()),
        Err(e) => {
            return Err(Skipped {
                path: rel("step-info.yml"),
                error: e.to_string(),
            });
        }
    };
    let entries = co.list(&rel("")).map_err(|e| Skipped {
        path: format!("steps/{id}"),
        error: e.to_string(),
    })?;
    let mut versions = Vec::new();
    let mut assets = Vec::new();
    let mut held: u64 = 0;
    for (name, kind) in entries {
        match kind {
            EntryKind::Dir => {}
            EntryKind::Outside => {
                skipped.push(Skipped {
                    path: rel(&name),
                    error: Refusal::Outside.to_string(),
                });
                continue;
            }
            EntryKind::File | EntryKind::Other => continue,
        }
        if name == "assets" {
            // Only the names are read: each becomes a URL under `assets_download_base_uri`.
            if let Ok(list) = co.list(&rel(&name)) {
                assets.extend(list.into_iter().map(|(a, _)| a));
            }
            continue;
        }
        let yml = format!("{name}/step.yml");
        let raw = match read_bounded(co, &rel(&yml)) {
            Ok(r) => r,
            Err(YamlError::NotFound) => continue,
            Err(e) => {
                skipped.push(Skipped {
                    path: rel(&yml),
                    error: e.to_string(),
                });
                continue;
            }
        };
        if let Some(why) = invalid_version(&name) {
            skipped.push(Skipped {
                path: rel(&name),
                error: why.into(),
            });
            continue;
        }
        match parse_step_yml(&raw) {
            Ok(v) => {
                let json = json_of(&v);
                drop(v);
                held += (raw.len() + json.len()) as u64;
                if held > MAX_GROUP_BYTES {
                    return Err(group_too_large(id));
                }
                versions.push((name, raw, json));
            }
            Err(err) => skipped.push(Skipped {
                path: rel(&format!("{name}/step.yml")),
                error: err.to_string(),
            }),
        }
    }
    if let (Some(base), false) = (assets_base, assets.is_empty()) {
        assets.sort();
        let urls: Map<String, Value> = assets
            .into_iter()
            .map(|a| {
                let url = format!("{}/{id}/assets/{a}", base.trim_end_matches('/'));
                (a, Value::String(url))
            })
            .collect();
        if let Some(obj) = info.as_object_mut() {
            obj.insert("asset_urls".into(), Value::Object(urls));
        }
    }
    versions.sort_by(|a, b| version::Version::parse(&a.0).cmp(&version::Version::parse(&b.0)));
    Ok(GroupData {
        id: id.to_string(),
        info,
        versions,
        skipped,
    })
}

fn write_group(w: &mut TreeWriter, g: GroupData, meta: &mut CollectionMeta) -> Result<()> {
    meta.skipped.extend(g.skipped);
    if g.versions.is_empty() {
        meta.skipped.push(Skipped {
            path: format!("steps/{}", g.id),
            error: "no valid version".into(),
        });
        return Ok(());
    }
    let latest = version::latest(g.versions.iter().map(|v| v.0.as_str()))
        .unwrap_or_default()
        .to_string();
    // The bytes `serde_json::to_vec(&Group)` would give, spliced from each version's JSON so
    // that no parsed value is held: `{"info":…,"latest_version_number":…,"versions":{…}}`; the
    // index records where each version's JSON lies in them.
    let info = json_of(&g.info);
    let latest = json_of(&Value::String(latest));
    let mut bytes = b"{\"info\":".to_vec();
    bytes.extend(&info);
    bytes.extend(b",\"latest_version_number\":");
    bytes.extend(&latest);
    bytes.extend(b",\"versions\":{");
    let mut index = b"{\"info\":".to_vec();
    index.extend(&info);
    index.extend(b",\"latest_version_number\":");
    index.extend(&latest);
    index.extend(b",\"versions\":[");
    let n = g.versions.len();
    // The step.yml files, one after the other: one file per group, not per version (creating
    // and flushing thousands of small files was most of what a setup cost).
    let mut definitions = Vec::with_capacity(g.versions.iter().map(|v| v.1.len()).sum());
    let mut yml_spans = b"],\"yml\":[".to_vec();
    for (i, (ver, raw, json)) in g.versions.into_iter().enumerate() {
        if i > 0 {
            yml_spans.push(b',');
        }
        yml_spans.extend(format!("[{},{}]", definitions.len(), raw.len()).as_bytes());
        definitions.extend(raw);
        if i > 0 {
            bytes.push(b',');
            index.push(b',');
        }
        let ver = json_of(&Value::String(ver));
        bytes.extend(&ver);
        bytes.push(b':');
        index.push(b'[');
        index.extend(&ver);
        index.extend(format!(",{},{}]", bytes.len(), json.len()).as_bytes());
        bytes.extend(json);
    }
    bytes.extend(b"}}");
    index.extend(yml_spans);
    index.extend(b"]}");
    w.add_file(
        &CollectionLayout::definitions(&g.id),
        false,
        Some(definitions.len() as u64),
        definitions.as_slice(),
    )?;
    drop(definitions);
    meta.steps += 1;
    meta.versions += n;
    w.add_file(
        &CollectionLayout::group(&g.id),
        false,
        Some(bytes.len() as u64),
        bytes.as_slice(),
    )?;
    w.add_file(
        &CollectionLayout::index(&g.id),
        false,
        Some(index.len() as u64),
        index.as_slice(),
    )
}

fn finish_meta(w: &mut TreeWriter, mut meta: CollectionMeta) -> Result<()> {
    meta.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes =
        serde_json::to_vec_pretty(&meta).map_err(|e| steplib_err(&meta.uri, e.to_string()))?;
    w.add_file(
        CollectionLayout::META,
        false,
        Some(bytes.len() as u64),
        bytes.as_slice(),
    )
}

/// Generates from a StepLib checkout (`steplib.yml`, `steps/<id>/<version>/step.yml`, …),
/// reporting the step groups done to `progress`.
pub(crate) fn from_dir(
    dir: &Path,
    c: &Collection,
    commit: Option<String>,
    w: &mut TreeWriter,
    progress: &dyn crate::progress::Progress,
    reuse: Option<&Reuse>,
) -> Result<()> {
    let root = matches!(c.source, Source::Dir(_)).then_some(dir);
    from_checkout(&Checkout::new(dir), root, c, commit, w, progress, reuse)
}

/// Generates the collection object from the StepLib `co` (`root`: a local StepLib's
/// directory, which relative download locations resolve against).
fn from_checkout(
    co: &Checkout,
    root: Option<&Path>,
    c: &Collection,
    commit: Option<String>,
    w: &mut TreeWriter,
    progress: &dyn crate::progress::Progress,
    reuse: Option<&Reuse>,
) -> Result<()> {
    let steplib: SteplibMeta = match read_yaml(co, "steplib.yml", Doc::Steplib) {
        Ok(v) => {
            steplib_meta(v).map_err(|e| steplib_err(co.display("steplib.yml"), e.to_string()))?
        }
        Err(e) => {
            return Err(steplib_err(
                format!("collection {}", c.uri),
                format!("{}: {e}", co.display("steplib.yml")),
            ));
        }
    };
    // A partial checkout (an update that reuses groups) lists `steps/` from the commit's tree.
    let entries = match reuse {
        Some(r) => r
            .ids
            .iter()
            .map(|id| (id.clone(), EntryKind::Dir))
            .collect(),
        None => co.list("steps").map_err(|e| {
            steplib_err(
                format!("collection {}", c.uri),
                format!("{}: {e}", co.display("steps")),
            )
        })?,
    };
    let mut skipped = Vec::new();
    let mut ids = Vec::new();
    for (id, kind) in entries {
        match kind {
            EntryKind::Dir => ids.push(id),
            EntryKind::Outside => skipped.push(Skipped {
                path: format!("steps/{id}"),
                error: Refusal::Outside.to_string(),
            }),
            EntryKind::File | EntryKind::Other => {}
        }
    }
    ids.sort();
    let mut meta = CollectionMeta {
        layout: super::model::COLLECTION_LAYOUT,
        uri: c.uri.clone(),
        alias: c.alias.clone(),
        root: root.map(|d| d.display().to_string()),
        source_commit: commit,
        steplib,
        steps: 0,
        versions: 0,
        skipped,
        api: None,
    };
    let (ids, bad): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|id| valid_component(id));
    for id in bad {
        meta.skipped.push(Skipped {
            path: format!("steps/{id}"),
            error: "invalid step id".into(),
        });
    }
    let assets_base = meta.steplib.assets_download_base_uri.clone();
    let total = ids.len() as u64;
    let mut done = 0;
    let ids: Vec<String> = match reuse {
        Some(r) => {
            let (kept, changed): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|id| r.keep.contains(id));
            for id in &kept {
                copy_group(w, r, id, &mut meta)?;
                done += 1;
            }
            changed
        }
        None => ids,
    };
    progress.phase(crate::progress::Phase::Generate {
        uri: c.uri.clone(),
        steps: total,
    });
    // Workers load groups and hand each to this thread through a channel of one: at most
    // WORKERS groups being loaded, one waiting and one being written are in memory.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, WORKERS);
    let next = AtomicUsize::new(0);
    let written = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut threads = Vec::with_capacity(workers);
        let mut result = Ok(());
        for _ in 0..workers {
            let tx = tx.clone();
            let (ids, next, base) = (&ids, &next, assets_base.as_deref());
            let worker = std::thread::Builder::new().name(SETUP_THREAD.into());
            let spawned = worker.spawn_scoped(s, move || {
                while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // A closed channel: the writer failed, stop.
                    if tx.send(load_group(co, id, base)).is_err() {
                        break;
                    }
                }
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    result = Err(Error::io("start a setup thread for", co.display("steps"))(
                        e,
                    ));
                    break;
                }
            }
        }
        drop(tx);
        if result.is_ok() {
            for g in &rx {
                match g {
                    Ok(g) => {
                        if let Err(e) = write_group(w, g, &mut meta) {
                            result = Err(e);
                            break;
                        }
                    }
                    Err(s) => meta.skipped.push(s),
                }
                done += 1;
                progress.items(done, total);
            }
        }
        // The workers stop at a closed channel. Each is joined here, not only by the scope: a
        // scope waits for the threads' closures, `join` for the threads themselves (their
        // thread-locals freed), so none of them outlives the setup.
        drop(rx);
        for t in threads {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        result
    });
    written?;
    finish_meta(w, meta)
}

/// Generates from a downloaded `spec.json`, streaming: one step group is in memory at a time.
fn from_spec_file(file: &Path, c: &Collection, w: &mut TreeWriter) -> Result<()> {
    let f = fs::File::open(file).map_err(Error::io("open", file))?;
    from_spec_reader(std::io::BufReader::with_capacity(1 << 20, f), c, w)
}

/// [`from_spec_file`] on any reader (the fuzz target feeds it bytes).
pub(crate) fn from_spec_reader(r: impl Read, c: &Collection, w: &mut TreeWriter) -> Result<()> {
    let mut meta = CollectionMeta {
        layout: super::model::COLLECTION_LAYOUT,
        uri: c.uri.clone(),
        alias: c.alias.clone(),
        root: None,
        source_commit: None,
        steplib: SteplibMeta::default(),
        steps: 0,
        versions: 0,
        skipped: Vec::new(),
        api: None,
    };
    let mut failure: Option<Error> = None;
    let mut head = Map::new();
    let mut saw_steps = false;
    let bounds = spec_stream::Bounds::default();
    let visitor = spec_stream::SpecVisitor {
        bounds: &bounds,
        on_head: &mut |k: String, v: Value| {
            head.insert(k, v);
        },
        on_group: &mut |id: String, group: Value| -> std::result::Result<(), String> {
            saw_steps = true;
            spec_group(w, &mut meta, id, group).map_err(|e| {
                let msg = e.describe();
                failure = Some(e);
                msg
            })
        },
    };
    let parsed = {
        use serde::Deserializer;
        let mut de = serde_json::Deserializer::from_reader(spec_stream::Metered {
            inner: r,
            bounds: &bounds,
        });
        de.deserialize_map(visitor).and_then(|()| de.end())
    };
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some((what, limit)) = bounds.hit.get() {
        return Err(Error::SteplibLimit {
            collection: format!("collection {}", c.uri),
            entry: bounds.at.take(),
            what,
            limit,
        });
    }
    let bad = |reason: String| steplib_err(format!("collection {}", c.uri), reason);
    parsed.map_err(|e| bad(format!("invalid spec.json: {e}")))?;
    if !saw_steps {
        return Err(bad("spec.json has no steps".into()));
    }
    head.remove("generated_at_timestamp");
    meta.steplib = serde_json::from_value(Value::Object(head))
        .map_err(|e| bad(format!("invalid spec.json: {e}")))?;
    finish_meta(w, meta)
}

fn spec_group(
    w: &mut TreeWriter,
    meta: &mut CollectionMeta,
    id: String,
    group: Value,
) -> Result<()> {
    if !valid_component(&id) {
        meta.skipped.push(Skipped {
            path: format!("steps/{id}"),
            error: "invalid step id".into(),
        });
        return Ok(());
    }
    let Value::Object(mut group) = group else {
        meta.skipped.push(Skipped {
            path: format!("steps/{id}"),
            error: "not a mapping".into(),
        });
        return Ok(());
    };
    let info = group
        .remove("info")
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut g = GroupData {
        id: id.clone(),
        info,
        versions: Vec::new(),
        skipped: Vec::new(),
    };
    if let Some(Value::Object(vs)) = group.remove("versions") {
        for (ver, step) in vs {
            if let Some(why) = invalid_version(&ver) {
                g.skipped.push(Skipped {
                    path: format!("steps/{id}/{ver}"),
                    error: why.into(),
                });
                continue;
            }
            if let Err(e) = validate_step(&step) {
                g.skipped.push(Skipped {
                    path: format!("steps/{id}/{ver}"),
                    error: e.to_string(),
                });
                continue;
            }
            let raw =
                serde_json::to_vec_pretty(&step).map_err(|e| steplib_err(&id, e.to_string()))?;
            let json = json_of(&step);
            g.versions.push((ver, raw, json));
        }
    }
    g.versions
        .sort_by(|a, b| version::Version::parse(&a.0).cmp(&version::Version::parse(&b.0)));
    write_group(w, g, meta)
}

/// A serde visitor over the top level of a spec.json that hands each `steps` entry to a callback
/// as soon as it is parsed, each top-level value and each step group bounded in bytes (by the
/// reader, before a string of it is held) and in values.
mod spec_stream {
    use std::cell::{Cell, RefCell};
    use std::fmt;
    use std::io::{self, Read};

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use super::{MAX_GROUP_BYTES, MAX_GROUP_VALUES};
    use crate::error::LimitKind;

    /// The budget of the value being read, shared by the reader and the visitors.
    pub(super) struct Bounds {
        /// Bytes read since the current top-level key or step id began.
        bytes: Cell<u64>,
        /// Values the current one may still have.
        values: Cell<usize>,
        /// The key (`steps/<id>` for a group) being read, for the error.
        pub at: RefCell<String>,
        /// Which limit was hit, and its value.
        pub hit: Cell<Option<(LimitKind, u64)>>,
    }

    impl Default for Bounds {
        fn default() -> Bounds {
            Bounds {
                bytes: Cell::new(0),
                values: Cell::new(MAX_GROUP_VALUES),
                at: RefCell::new(String::new()),
                hit: Cell::new(None),
            }
        }
    }

    impl Bounds {
        /// A new value begins (its key is counted with it).
        fn reset(&self) {
            self.bytes.set(0);
            self.values.set(MAX_GROUP_VALUES);
        }
    }

    /// The spec.json reader: fails once the current value is past [`MAX_GROUP_BYTES`].
    /// serde_json reads it a byte at a time (put a buffered reader inside).
    pub(super) struct Metered<'a, R> {
        pub inner: R,
        pub bounds: &'a Bounds,
    }

    impl<R: Read> Read for Metered<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            let b = &self.bounds.bytes;
            b.set(b.get() + n as u64);
            if b.get() > MAX_GROUP_BYTES {
                self.bounds
                    .hit
                    .set(Some((LimitKind::SpecGroupBytes, MAX_GROUP_BYTES)));
                return Err(io::Error::other("past the StepLib limit"));
            }
            Ok(n)
        }
    }

    pub(super) struct SpecVisitor<'a> {
        pub bounds: &'a Bounds,
        pub on_head: &'a mut dyn FnMut(String, Value),
        pub on_group: &'a mut dyn FnMut(String, Value) -> Result<(), String>,
    }

    impl<'de> Visitor<'de> for SpecVisitor<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a spec.json object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            loop {
                self.bounds.reset();
                let Some(key) = map.next_key::<String>()? else {
                    break;
                };
                if key == "steps" {
                    map.next_value_seed(Steps {
                        bounds: self.bounds,
                        on_group: &mut *self.on_group,
                    })?;
                } else {
                    *self.bounds.at.borrow_mut() = key.clone();
                    let v = map.next_value_seed(Build(self.bounds))?;
                    (self.on_head)(key, v);
                }
            }
            Ok(())
        }
    }

    struct Steps<'a> {
        bounds: &'a Bounds,
        on_group: &'a mut dyn FnMut(String, Value) -> Result<(), String>,
    }

    impl<'de> DeserializeSeed<'de> for Steps<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Steps<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of step ids to step groups")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            loop {
                self.bounds.reset();
                let Some(id) = map.next_key::<String>()? else {
                    break;
                };
                *self.bounds.at.borrow_mut() = format!("steps/{id}");
                let group = map.next_value_seed(Build(self.bounds))?;
                (self.on_group)(id, group).map_err(de::Error::custom)?;
            }
            Ok(())
        }
    }

    /// Builds a JSON value as `serde_json::Value`'s own deserializer does, failing once the
    /// value being read has more than [`MAX_GROUP_VALUES`] values.
    struct Build<'a>(&'a Bounds);

    impl Build<'_> {
        fn spend<E: de::Error>(&self) -> Result<(), E> {
            let left = self.0.values.get();
            if left == 0 {
                self.0
                    .hit
                    .set(Some((LimitKind::SpecGroupValues, MAX_GROUP_VALUES as u64)));
                return Err(E::custom("past the StepLib limit"));
            }
            self.0.values.set(left - 1);
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Build<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Build<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.spend()?;
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.spend()?;
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            self.deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.spend()?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Build(self.0))? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.spend()?;
            let mut out = Map::new();
            while let Some(k) = map.next_key::<String>()? {
                self.spend()?;
                let v = map.next_value_seed(Build(self.0))?;
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
    }
}

/// The object id of a collection (for tests and tools).
pub fn current(store: &Store, c: &Collection) -> Result<Option<ObjectId>> {
    store.lookup(&c.name())
}
