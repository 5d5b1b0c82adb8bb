//! The StepLib API ("v2"): a StepLib as a tree of static JSON documents that any static HTTP
//! server or bucket can serve, and how `export-spec --export-type api` publishes one.
//!
//! The documents (`store-format.md`, section 4e), under `v2/`: `meta.json`,
//! `index/step_ids.json`, `index/steps/<id>/latest.json`, `index/steps/<id>/versions.json`,
//! `steps/<id>/step-info.json`, `steps/<id>/<version>/step.json`, and `steps/<id>/assets/<file>`
//! (published from a StepLib on this machine only).
//!
//! Invariants:
//! - The same collection gives byte-identical documents: nothing comes from the clock
//!   (`updated_at` is the StepLib commit's time, else the newest `published_at` of its steps),
//!   maps keep the StepLib's order,
//!   lists are sorted.
//! - Every path segment is checked ([`valid_segment`]) before it names a file: never empty, `.`
//!   or `..`, never holding `/`, `\` or NUL.
//! - Publishing never leaves a moment where the output is missing or mixes two trees: the whole
//!   tree is built and flushed in a staging dir beside the output, renamed (no-replace) to
//!   `<parent>/.<name>.trees/<hash of its documents>`, and the output, a symlink to the tree, is
//!   replaced by a new symlink with one rename (a real directory there is exchanged with it,
//!   atomically). A reader opens a document of the old tree or of the new one, whole. The tree
//!   the swap replaced is kept (a reader resolving a path through it still finds it); older ones
//!   are removed, under the publish lock (`lock.rs`), so two publishes at once cannot remove
//!   each other's tree.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::Opened;
use crate::error::{Error, Result};
use crate::steplib::version::Version;
use crate::sys;

/// The API's root directory in a published tree and its format version.
pub const API_ROOT: &str = "v2";
/// `meta.json`'s `format_version`.
pub const API_FORMAT_VERSION: u32 = 2;

/// Whether `s` may be one path segment of a document's path (a step id, a version, an asset's
/// file name): not empty, `.` or `..`, and without `/`, `\` or NUL.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// `meta.json` of the collection `o`; `updated_at` is `updated`.
pub fn meta_doc(o: &Opened, updated: &str) -> Value {
    let s = &o.meta.steplib;
    let mut m = Map::new();
    m.insert("format_version".into(), json!(API_FORMAT_VERSION));
    m.insert("updated_at".into(), json!(updated));
    if let Some(c) = &o.meta.source_commit {
        m.insert("steplib_commit_sha".into(), json!(c));
    }
    if !s.steplib_source.is_empty() {
        m.insert("steplib_source".into(), json!(s.steplib_source));
    }
    let locations: Vec<Value> = s
        .download_locations
        .iter()
        .map(|l| json!({"type": l.kind, "src": l.src}))
        .collect();
    if !locations.is_empty() {
        m.insert("download_locations".into(), Value::Array(locations));
    }
    Value::Object(m)
}

/// `versions` newest first ([`Version`]'s order).
pub fn newest_first(versions: &[String]) -> Vec<String> {
    // Each version parsed once, not twice per comparison; a stable sort of their places.
    let parsed: Vec<Version<'_>> = versions.iter().map(|s| Version::parse(s)).collect();
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by(|&a, &b| parsed[b].cmp(&parsed[a]));
    order.into_iter().map(|i| versions[i].clone()).collect()
}

/// `index/steps/<id>/latest.json`: the latest version, and the latest of each major.
pub fn latest_doc(id: &str, newest_first: &[String]) -> Value {
    let mut by_major = std::collections::BTreeMap::<u64, &str>::new();
    for v in newest_first {
        if let Some((major, _, _)) = Version::parse(v).triple() {
            by_major.entry(major).or_insert(v);
        }
    }
    let by_major: Map<String, Value> = by_major
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "step_id": id,
        "latest": newest_first.first().cloned().unwrap_or_default(),
        "latest_by_major": by_major,
    })
}

/// `index/steps/<id>/versions.json`.
pub fn versions_doc(id: &str, newest_first: &[String]) -> Value {
    json!({"step_id": id, "versions": newest_first})
}

/// `steps/<id>/step-info.json` from the group's `info`; `assets` are the asset files published
/// beside it.
pub fn step_info_doc(info: &Value, assets: &[String]) -> Value {
    let text = |k: &str| {
        info.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let deprecation = match (text("removal_date"), text("deprecate_notes")) {
        (None, None) => Value::Null,
        (r, n) => json!({"removal_date": r.unwrap_or_default(), "notes": n.unwrap_or_default()}),
    };
    let urls: Vec<String> = assets.iter().map(|a| format!("assets/{a}")).collect();
    json!({
        "maintainer": text("maintainer").unwrap_or_default(),
        "deprecation": deprecation,
        "asset_urls": urls,
    })
}

/// `steps/<id>/<version>/step.json`: the step as the old tool models it (its defaults filled
/// in, [`super::compat::fill_missing_defaults`]).
pub fn step_doc(mut step: Value) -> Value {
    super::compat::fill_missing_defaults(&mut step);
    step
}

/// `updated_at`: the time of the StepLib commit the collection was built from, when its kept
/// mirror has it; else the newest `published_at` of its steps (`newest`); else the Unix epoch.
/// RFC 3339, UTC. Never the clock.
fn updated_at(store: &crate::store::Store, o: &Opened, newest: Option<jiff::Timestamp>) -> String {
    let alias = &o.meta.alias;
    let committed = o
        .meta
        .source_commit
        .as_deref()
        .and_then(|c| crate::fetch::git_commit_time(&store.layout().mirror(alias), c))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    committed
        .or(newest)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// What [`publish`] did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The tree the output now points at.
    pub tree: PathBuf,
    /// Documents (and asset files) in it.
    pub documents: usize,
    /// Whether the output pointed at another tree before (false: the same documents again, or
    /// a first publish).
    pub replaced: bool,
}

/// The tree being written: its root, the files' flusher, a hash of every document, a count.
struct TreeOut {
    root: PathBuf,
    flusher: crate::ingest::flush::Flusher,
    hash: blake3::Hasher,
    documents: usize,
    /// The directories made below the root (flushed at the end).
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl TreeOut {
    /// Writes `bytes` as the new file `rel` (segments already checked) of the tree.
    fn put(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent()
            && !self.dirs.contains(parent)
        {
            fs::create_dir_all(parent).map_err(Error::io("create dir", parent))?;
            // Each directory once, up to the first one already made.
            let mut p = parent.to_path_buf();
            while p != self.root && self.dirs.insert(p.clone()) {
                if !p.pop() {
                    break;
                }
            }
        }
        let mut f = File::create_new(&path).map_err(Error::io("create", &path))?;
        f.write_all(bytes).map_err(Error::io("write", &path))?;
        self.flusher.submit(Some(f), path)?;
        self.hash.update(&(rel.len() as u64).to_le_bytes());
        self.hash.update(rel.as_bytes());
        self.hash.update(&(bytes.len() as u64).to_le_bytes());
        self.hash.update(bytes);
        self.documents += 1;
        Ok(())
    }

    fn put_json(&mut self, rel: &str, v: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(v).map_err(|e| Error::io("encode", rel)(e.into()))?;
        self.put(rel, &bytes)
    }
}

/// Writes the whole API tree of `o` into the new directory `root`; returns the hash of its
/// documents and their number.
fn write_tree(store: &crate::store::Store, o: &Opened, root: &Path) -> Result<(String, usize)> {
    fs::create_dir(root).map_err(Error::io("create dir", root))?;
    let mut t = TreeOut {
        root: root.to_path_buf(),
        flusher: crate::ingest::flush::Flusher::new(root)?,
        hash: blake3::Hasher::new(),
        documents: 0,
        dirs: std::collections::BTreeSet::new(),
    };
    let bad = |what: &str, s: &str| Error::Format {
        path: o.dir.clone(),
        reason: format!("{what} {s:?} cannot name a document of the StepLib API"),
    };
    let ids = o.step_ids()?;
    let local_root = o.meta.root.as_deref().map(Path::new);
    let mut newest: Option<jiff::Timestamp> = None;
    for id in &ids {
        if !valid_segment(id) {
            return Err(bad("step id", id));
        }
        let Some(entry) = o.entry(id)? else { continue };
        let versions = newest_first(&entry.versions);
        t.put_json(
            &format!("{API_ROOT}/index/steps/{id}/latest.json"),
            &latest_doc(id, &versions),
        )?;
        t.put_json(
            &format!("{API_ROOT}/index/steps/{id}/versions.json"),
            &versions_doc(id, &versions),
        )?;
        let mut assets: Vec<String> = match (local_root, entry.info.get("asset_urls")) {
            (Some(_), Some(Value::Object(m))) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        assets.sort();
        if let Some(base) = local_root {
            for a in &assets {
                if !valid_segment(a) {
                    return Err(bad("asset", a));
                }
                let src = base.join("steps").join(id).join("assets").join(a);
                let bytes = fs::read(&src).map_err(Error::io("read", &src))?;
                t.put(&format!("{API_ROOT}/steps/{id}/assets/{a}"), &bytes)?;
            }
        }
        t.put_json(
            &format!("{API_ROOT}/steps/{id}/step-info.json"),
            &step_info_doc(&entry.info, &assets),
        )?;
        for v in &versions {
            if !valid_segment(v) {
                return Err(bad("version", v));
            }
            let Some(step) = entry.step(v)? else { continue };
            if let Some(ts) = step
                .get("published_at")
                .and_then(Value::as_str)
                .and_then(|p| p.parse::<jiff::Timestamp>().ok())
            {
                newest = newest.max(Some(ts));
            }
            t.put_json(
                &format!("{API_ROOT}/steps/{id}/{v}/step.json"),
                &step_doc(step),
            )?;
        }
    }
    t.put_json(
        &format!("{API_ROOT}/index/step_ids.json"),
        &json!({"step_ids": ids}),
    )?;
    t.put_json(
        &format!("{API_ROOT}/meta.json"),
        &meta_doc(o, &updated_at(store, o, newest)),
    )?;
    for d in t.dirs.iter().chain([&t.root]) {
        t.flusher.submit(None, d.clone())?;
    }
    let TreeOut {
        flusher,
        hash,
        documents,
        ..
    } = t;
    flusher.finish()?;
    Ok((hash.finalize().to_hex().to_string(), documents))
}

/// Publishes the API tree of `o` at `out` (`export-spec --export-type api --output DIR`): see the
/// module's invariants. `out` is a symlink this made before, or nothing, or a directory (which
/// is exchanged for the symlink and kept as the previous tree).
pub fn publish(store: &crate::store::Store, o: &Opened, out: &Path) -> Result<Published> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = out
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Format {
            path: out.to_path_buf(),
            reason: "the output must name a directory".into(),
        })?;
    crate::export::create_parent(&parent)?;
    crate::export::sweep_beside(out);
    let staging = crate::export::staging(&parent, &base, out)?;
    let (hash, documents) = write_tree(store, o, &staging.path().join("tree"))?;
    let trees = parent.join(format!(".{base}.trees"));
    match fs::create_dir(&trees) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create dir", &trees)(e)),
    }
    let tree = trees.join(&hash);
    // From the rename of the tree to the pruning: a tree another publish renamed in is never
    // pruned before its link is swapped.
    let _lock = crate::lock::publish_exclusive(&parent.join(format!(".{base}.lock")))?;
    // The same documents published before: that tree is complete (it was flushed before its
    // rename), use it.
    sys::publish_dir(&staging.path().join("tree"), &tree).map_err(Error::io("rename", &tree))?;
    let target = PathBuf::from(format!(".{base}.trees")).join(&hash);
    let before = fs::read_link(out).ok();
    if before.as_deref() == Some(target.as_path()) {
        return Ok(Published {
            tree,
            documents,
            replaced: false,
        });
    }
    let link = staging.path().join("link");
    std::os::unix::fs::symlink(&target, &link).map_err(Error::io("symlink", &link))?;
    let is_dir = fs::symlink_metadata(out).is_ok_and(|m| m.is_dir());
    if is_dir {
        // A directory there (a tree published by other means): exchanged for the link in one
        // step, then kept beside the trees as the previous one.
        if !sys::exchange(&link, out).map_err(Error::io("exchange", out))? {
            return Err(Error::Format {
                path: out.to_path_buf(),
                reason: "is a directory, and this file system cannot exchange it atomically \
                         for the published tree: remove it or publish elsewhere"
                    .into(),
            });
        }
        let kept = trees.join(format!("previous-{:016x}", crate::layout::unique_token()));
        sys::replace(&link, &kept).map_err(Error::io("rename", &kept))?;
    } else {
        sys::replace(&link, out).map_err(Error::io("rename", out))?;
    }
    sys::sync_path(&parent).map_err(Error::io("fsync", &parent))?;
    let keep: Vec<PathBuf> = [Some(target), before]
        .into_iter()
        .flatten()
        .filter_map(|t| t.file_name().map(PathBuf::from))
        .collect();
    prune(&trees, &keep, is_dir);
    Ok(Published {
        tree,
        documents,
        replaced: true,
    })
}

/// Removes the trees in `trees` other than `keep` (and a directory just exchanged out, when
/// `kept_previous`: the newest `previous-*` stays), best effort: a tree that cannot be removed
/// is logged and left for the next publish.
fn prune(trees: &Path, keep: &[PathBuf], kept_previous: bool) {
    let Ok(rd) = fs::read_dir(trees) else { return };
    let mut names: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some((t, PathBuf::from(e.file_name())))
        })
        .collect();
    names.sort();
    let newest_previous = names
        .iter()
        .rev()
        .find(|(_, n)| n.to_string_lossy().starts_with("previous-"))
        .map(|(_, n)| n.clone());
    for (_, name) in names {
        if keep.contains(&name) || (kept_previous && Some(&name) == newest_previous.as_ref()) {
            continue;
        }
        let path = trees.join(&name);
        if let Err(e) = crate::tmp::remove_tree(&path) {
            log::warn!("{}; left for the next publish", e.describe());
        }
    }
}

/// Largest API document read (a `versions.json` of thousands of versions is ~100 KiB; the
/// biggest real step.json ~60 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// A document of the API, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    /// `meta.json`.
    Meta,
    /// `index/step_ids.json`.
    StepIds,
    /// `index/steps/<id>/latest.json`.
    Latest(String),
    /// `index/steps/<id>/versions.json`.
    Versions(String),
    /// `steps/<id>/step-info.json`.
    StepInfo(String),
    /// `steps/<id>/<version>/step.json`.
    Step(String, String),
}

impl Doc {
    /// The document's URL path under the API's base (`v2/…`), each segment checked
    /// ([`valid_segment`]) and percent-encoded; `None` for a segment that cannot name one.
    pub fn url_path(&self) -> Option<String> {
        use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
        // A path segment's reserved and unsafe characters (RFC 3986): encoded.
        const SEGMENT: &AsciiSet = &CONTROLS
            .add(b' ')
            .add(b'"')
            .add(b'#')
            .add(b'%')
            .add(b'/')
            .add(b'<')
            .add(b'>')
            .add(b'?')
            .add(b'[')
            .add(b'\\')
            .add(b']')
            .add(b'^')
            .add(b'`')
            .add(b'{')
            .add(b'|')
            .add(b'}');
        let seg = |s: &str| valid_segment(s).then(|| utf8_percent_encode(s, SEGMENT).to_string());
        Some(match self {
            Doc::Meta => format!("{API_ROOT}/meta.json"),
            Doc::StepIds => format!("{API_ROOT}/index/step_ids.json"),
            Doc::Latest(id) => format!("{API_ROOT}/index/steps/{}/latest.json", seg(id)?),
            Doc::Versions(id) => format!("{API_ROOT}/index/steps/{}/versions.json", seg(id)?),
            Doc::StepInfo(id) => format!("{API_ROOT}/steps/{}/step-info.json", seg(id)?),
            Doc::Step(id, v) => format!("{API_ROOT}/steps/{}/{}/step.json", seg(id)?, seg(v)?),
        })
    }
}

/// `meta.json` as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiMeta {
    /// `updated_at`.
    pub updated_at: String,
    /// `steplib_commit_sha`, when given.
    pub steplib_commit_sha: Option<String>,
    /// `steplib_source`, when given.
    pub steplib_source: Option<String>,
    /// `download_locations` (none given: empty).
    pub download_locations: Vec<super::DownloadLocation>,
}

/// `latest.json` as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// `latest`.
    pub latest: String,
    /// `latest_by_major`: major → version.
    pub by_major: Vec<(String, String)>,
}

/// The JSON object of an untrusted document: at most [`MAX_DOCUMENT_BYTES`], nested at most
/// as deep as `serde_json` recurses (128), an object at the top.
fn object(bytes: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "document of {} bytes is larger than the limit of {MAX_DOCUMENT_BYTES}",
            bytes.len()
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn text_field(m: &Map<String, Value>, k: &str) -> std::result::Result<Option<String>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("'{k}' is not a string")),
    }
}

fn required_text(m: &Map<String, Value>, k: &str) -> std::result::Result<String, String> {
    text_field(m, k)?.ok_or_else(|| format!("missing '{k}'"))
}

/// A `step_id` that must name the document's own step.
fn check_step_id(m: &Map<String, Value>, id: &str) -> std::result::Result<(), String> {
    let got = required_text(m, "step_id")?;
    if got != id {
        return Err(format!("step_id {got:?} does not match its path ({id:?})"));
    }
    Ok(())
}

/// A list of path segments (`step_ids`, `versions`): strings, each a [`valid_segment`], no
/// duplicates.
fn segments(m: &Map<String, Value>, k: &str) -> std::result::Result<Vec<String>, String> {
    let Some(Value::Array(items)) = m.get(k) else {
        return Err(format!("missing or not a list: '{k}'"));
    };
    let mut out = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let Value::String(s) = item else {
            return Err(format!("'{k}' holds a non-string"));
        };
        if !valid_segment(s) {
            return Err(format!(
                "'{k}' holds {s:?}, which cannot name a path segment"
            ));
        }
        if !seen.insert(s.as_str()) {
            return Err(format!("'{k}' holds {s:?} twice"));
        }
        out.push(s.clone());
    }
    Ok(out)
}

/// Reads `meta.json`: `format_version` must be 2.
pub fn read_meta(bytes: &[u8]) -> std::result::Result<ApiMeta, String> {
    let m = object(bytes)?;
    match m.get("format_version").and_then(Value::as_u64) {
        Some(2) => {}
        Some(v) => return Err(format!("format_version {v} is not the supported 2")),
        None => return Err("missing or non-numeric 'format_version'".into()),
    }
    let mut download_locations = Vec::new();
    match m.get("download_locations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for l in items {
                let l = l
                    .as_object()
                    .ok_or("a download location is not an object")?;
                download_locations.push(super::DownloadLocation {
                    kind: required_text(l, "type")?,
                    src: required_text(l, "src")?,
                });
            }
        }
        Some(_) => return Err("'download_locations' is not a list".into()),
    }
    Ok(ApiMeta {
        updated_at: required_text(&m, "updated_at")?,
        steplib_commit_sha: text_field(&m, "steplib_commit_sha")?,
        steplib_source: text_field(&m, "steplib_source")?,
        download_locations,
    })
}

/// Reads `index/step_ids.json`.
pub fn read_step_ids(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    segments(&object(bytes)?, "step_ids")
}

/// Reads `index/steps/<id>/versions.json` of the step `id`.
pub fn read_versions(bytes: &[u8], id: &str) -> std::result::Result<Vec<String>, String> {
    let m = object(bytes)?;
    check_step_id(&m, id)?;
    segments(&m, "versions")
}

/// Reads `index/steps/<id>/latest.json` of the step `id`.
pub fn read_latest(bytes: &[u8], id: &str) -> std::result::Result<Latest, String> {
    let m = object(bytes)?;
    check_step_id(&m, id)?;
    let latest = required_text(&m, "latest")?;
    let mut by_major = Vec::new();
    match m.get("latest_by_major") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("latest_by_major {k:?} is not a string"))?;
                by_major.push((k.clone(), v.to_string()));
            }
        }
        Some(_) => return Err("'latest_by_major' is not an object".into()),
    }
    Ok(Latest { latest, by_major })
}

/// Reads `steps/<id>/step-info.json` into the group info a collection keeps (`maintainer`,
/// `removal_date`, `deprecate_notes`, `asset_urls` as a map of file name to `assets/<file>`).
pub fn read_step_info(bytes: &[u8]) -> std::result::Result<Value, String> {
    let m = object(bytes)?;
    let mut info = Map::new();
    if let Some(v) = text_field(&m, "maintainer")? {
        info.insert("maintainer".into(), json!(v));
    }
    match m.get("deprecation") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) => {
            if let Some(r) = text_field(d, "removal_date")? {
                info.insert("removal_date".into(), json!(r));
            }
            if let Some(n) = text_field(d, "notes")? {
                info.insert("deprecate_notes".into(), json!(n));
            }
        }
        Some(_) => return Err("'deprecation' is not an object".into()),
    }
    match m.get("asset_urls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut urls = Map::new();
            for a in items {
                let a = a.as_str().ok_or("'asset_urls' holds a non-string")?;
                let name = a.strip_prefix("assets/").unwrap_or(a);
                if !valid_segment(name) {
                    return Err(format!("asset {a:?} cannot name a file"));
                }
                urls.insert(name.to_string(), json!(a));
            }
            // As a collection's info: no `asset_urls` when the step has no assets.
            if !urls.is_empty() {
                info.insert("asset_urls".into(), Value::Object(urls));
            }
        }
        Some(_) => return Err("'asset_urls' is not a list".into()),
    }
    Ok(Value::Object(info))
}

/// Reads `steps/<id>/<version>/step.json`: a step definition that passes the checks a
/// step.yml in a StepLib does.
pub fn read_step(bytes: &[u8]) -> std::result::Result<Value, String> {
    let step = Value::Object(object(bytes)?);
    super::model::validate_step(&step).map_err(|e| e.to_string())?;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_orders_by_version_not_by_text() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newest_first(&v(&["1.0.0", "2.0.0", "1.10.0", "1.2.0", "0.9"])),
            v(&["2.0.0", "1.10.0", "1.2.0", "1.0.0", "0.9"])
        );
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn documents_read_back_as_written() {
        let vs = newest_first(&["1.0.0".into(), "1.10.0".into(), "2.0.0".into()]);
        assert_eq!(vs, ["2.0.0", "1.10.0", "1.0.0"]);
        assert_eq!(
            read_versions(&bytes(&versions_doc("s", &vs)), "s").unwrap(),
            vs
        );
        let l = read_latest(&bytes(&latest_doc("s", &vs)), "s").unwrap();
        assert_eq!(l.latest, "2.0.0");
        assert_eq!(
            l.by_major,
            [("1".into(), "1.10.0".into()), ("2".into(), "2.0.0".into())]
        );
        let info = json!({"maintainer": "m", "removal_date": "2027-01-01",
            "deprecate_notes": "use t", "asset_urls": {"icon.svg": "https://x/s/assets/icon.svg"}});
        let doc = step_info_doc(&info, &["icon.svg".into()]);
        assert_eq!(
            doc,
            json!({"maintainer": "m", "deprecation": {"removal_date": "2027-01-01",
                "notes": "use t"}, "asset_urls": ["assets/icon.svg"]})
        );
        assert_eq!(
            read_step_info(&bytes(&doc)).unwrap(),
            json!({"maintainer": "m", "removal_date": "2027-01-01", "deprecate_notes": "use t",
                "asset_urls": {"icon.svg": "assets/icon.svg"}})
        );
        let meta = br#"{"format_version":2,"updated_at":"2026-01-01T00:00:00Z","download_locations":[{"type":"zip","src":"https://x/"}]}"#;
        let m = read_meta(meta).unwrap();
        assert_eq!(m.download_locations[0].src, "https://x/");
        assert_eq!(m.steplib_commit_sha, None);
        let step = read_step(br#"{"title":"T","summary":"s"}"#).unwrap();
        assert_eq!(step["title"], "T");
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        for (ids, why) in [
            (r#"{"step_ids":["../etc"]}"#, "cannot name a path segment"),
            (r#"{"step_ids":["a/b"]}"#, "cannot name a path segment"),
            (r#"{"step_ids":["a\\b"]}"#, "cannot name a path segment"),
            (r#"{"step_ids":[".."]}"#, "cannot name a path segment"),
            (r#"{"step_ids":[""]}"#, "cannot name a path segment"),
            (r#"{"step_ids":["a\u0000"]}"#, "cannot name a path segment"),
            (r#"{"step_ids":["a","a"]}"#, "twice"),
            (r#"{"step_ids":[1]}"#, "non-string"),
            (r#"{"step_ids":"a"}"#, "not a list"),
            (r#"[]"#, "not a JSON object"),
            (r#"{"step_ids":["#, "invalid JSON"),
        ] {
            let e = read_step_ids(ids.as_bytes()).expect_err(ids);
            assert!(e.contains(why), "{ids}: {e}");
        }
        let e = read_versions(br#"{"step_id":"other","versions":["1.0.0"]}"#, "s").unwrap_err();
        assert!(e.contains("does not match its path"), "{e}");
        let e = read_latest(br#"{"step_id":"other","latest":"1.0.0"}"#, "s").unwrap_err();
        assert!(e.contains("does not match its path"), "{e}");
        let e = read_meta(br#"{"format_version":3,"updated_at":"x"}"#).unwrap_err();
        assert!(e.contains("format_version 3"), "{e}");
        let huge = format!(
            r#"{{"step_id":"s","versions":[{}]}}"#,
            vec![r#""1.0.0""#; (50 << 20) / 8].join(",")
        );
        assert!(huge.len() > 50 << 20);
        let e = read_versions(huge.as_bytes(), "s").unwrap_err();
        assert!(e.contains("larger than the limit"), "{e}");
        let deep = format!(
            r#"{{"step_ids":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = read_step_ids(deep.as_bytes()).unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
        let e = read_step(br#"{"summary":"no title"}"#).unwrap_err();
        assert!(e.contains("title"), "{e}");
        let e = read_step(br#"{"title":"T","source":{"commit":7}}"#).unwrap_err();
        assert!(e.contains("source.commit"), "{e}");
        let e = read_step_info(br#"{"asset_urls":["assets/../x"]}"#).unwrap_err();
        assert!(e.contains("cannot name a file"), "{e}");
    }

    #[test]
    fn url_paths_check_and_escape_their_segments() {
        assert_eq!(
            Doc::Step("git-clone".into(), "8.5.1".into())
                .url_path()
                .unwrap(),
            "v2/steps/git-clone/8.5.1/step.json"
        );
        assert_eq!(
            Doc::Versions("a b#c?d%e".into()).url_path().unwrap(),
            "v2/index/steps/a%20b%23c%3Fd%25e/versions.json"
        );
        for bad in ["..", ".", "", "a/b", "a\\b", "a\0"] {
            assert_eq!(Doc::Latest(bad.into()).url_path(), None, "{bad:?}");
        }
        assert_eq!(Doc::Meta.url_path().unwrap(), "v2/meta.json");
    }
}
