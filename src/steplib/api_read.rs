//! Reading a StepLib through its HTTP API (`store-format.md`, section 4f): an API collection's
//! object holds only `collection.json` and the API's `meta.json`; every other document is
//! fetched when a lookup needs it, into the store, under a name of its own.
//!
//! Invariants:
//! - Nothing is fetched up front. Setup fetches `meta.json`; a lookup of a step fetches its
//!   `versions.json`, its `step-info.json` and the one version's `step.json`, each only when the
//!   cached copy is missing or older than its time to live ([`ApiTtl`]). A `step.json` never
//!   expires: a published version's document does not change, so it is cached by content once.
//! - Every document is checked ([`super::api`]'s readers: size, JSON nesting, path segments, a
//!   `step_id` that names its own path, the step checks a step.yml gets) before it is cached. A
//!   document that fails is never cached.
//! - A `versions.json` and a `step.json` are cached with their lookup form beside them
//!   ([`Fetched::lookup_file`]), made from the checked document when it is fetched: what a
//!   lookup reads, so that a cache hit neither parses nor sorts the document again (for the
//!   biggest group as for the smallest). A document cached without one (by an older stepman) is
//!   read as served and checked again.
//! - A cached document is an object like any other, made by the store's one write recipe
//!   ([`Store::produce`]: under the document's name lock, so concurrent misses fetch it once)
//!   and bound to its name. Its age is its name's link's (every bind writes a new link).
//! - A fetch that fails (the network, an HTTP error, an invalid document) answers from the cached
//!   copy, whatever its age, with a warning (stale-if-error). Offline mode, and a reader opened
//!   without a network ([`super::open`]), answer from the cache alone.
//! - A document the API answers 404 (or 410) for does not exist: no such step or version. Its
//!   cached copy, if any, is unbound.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::api::{self, Doc, MAX_DOCUMENT_BYTES};
use super::model::{ApiSource, CollectionMeta, SteplibMeta};
use super::{Collection, DownloadLocation, Group, StepEntry, StepText, Steps, StoredStep};
use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::ingest::TreeWriter;
use crate::layout::{ApiDocNames, CollectionLayout, Name};
use crate::store::{Producer, Rebuild, Stage, Store, Tree};

/// How long cached API documents answer before they are fetched again (`STEPMAN_API_INDEX_TTL`,
/// `STEPMAN_API_INFO_TTL`). A `step.json` never expires; `meta.json` is the collection's and
/// follows `STEPMAN_STEPLIB_TTL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTtl {
    /// `index/` documents (`step_ids.json`, `versions.json`).
    pub index: Duration,
    /// `step-info.json`.
    pub step_info: Duration,
}

impl Default for ApiTtl {
    fn default() -> ApiTtl {
        ApiTtl {
            index: Duration::from_secs(60),
            step_info: Duration::from_secs(300),
        }
    }
}

impl ApiTtl {
    /// The variable of [`ApiTtl::index`].
    pub const INDEX_VAR: &'static str = "STEPMAN_API_INDEX_TTL";
    /// The variable of [`ApiTtl::step_info`].
    pub const INFO_VAR: &'static str = "STEPMAN_API_INFO_TTL";

    /// Reads the two variables through `get` (whole seconds; unset or empty: the default).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ApiTtl> {
        let read = |var: &'static str, default: Duration| {
            let v = get(var);
            Ok(
                crate::settings::whole(var, v.as_deref(), 0, u64::MAX, "whole seconds")?
                    .map_or(default, Duration::from_secs),
            )
        };
        let d = ApiTtl::default();
        Ok(ApiTtl {
            index: read(Self::INDEX_VAR, d.index)?,
            step_info: read(Self::INFO_VAR, d.step_info)?,
        })
    }
}

/// A document as cached: where its file is and its bytes.
struct Cached {
    path: PathBuf,
    bytes: Vec<u8>,
    /// When it was fetched (its name bound).
    at: SystemTime,
    /// Which of its files `bytes` are.
    form: Form,
}

/// Which of a cached document's files was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The document as the API served it: its reader checks it again.
    Served,
    /// Its lookup form ([`Fetched::lookup_file`]), written from the checked document.
    Lookup,
}

/// Reads an API collection's documents: from the store while they are fresh, else from the API.
#[derive(Debug)]
pub(crate) struct ApiReader {
    store: Store,
    alias: String,
    base: String,
    /// `None`: the cache alone answers.
    net: Option<NetConfig>,
    ttl: ApiTtl,
}

/// The file `meta.json` is kept under in an API collection's object.
const META_FILE: &str = "meta.json";

/// A document the reader fetches when a lookup needs it and caches under a name of its own.
/// (`meta.json` is the collection object's, fetched by setup and update; `latest.json` is not
/// needed: `versions.json` gives the latest version.)
#[derive(Debug, Clone)]
enum Fetched {
    /// `index/step_ids.json`.
    StepIds,
    /// `index/steps/<id>/versions.json`.
    Versions(String),
    /// `steps/<id>/step-info.json`.
    StepInfo(String),
    /// `steps/<id>/<version>/step.json`.
    Step(String, String),
}

impl Fetched {
    /// The API's document.
    fn doc(&self) -> Doc {
        match self {
            Fetched::StepIds => Doc::StepIds,
            Fetched::Versions(id) => Doc::Versions(id.clone()),
            Fetched::StepInfo(id) => Doc::StepInfo(id.clone()),
            Fetched::Step(id, v) => Doc::Step(id.clone(), v.clone()),
        }
    }

    /// The file name it is cached under, in its object.
    fn file_name(&self) -> &'static str {
        match self {
            Fetched::StepIds => "step_ids.json",
            Fetched::Versions(_) => "versions.json",
            Fetched::StepInfo(_) => "step-info.json",
            Fetched::Step(..) => "step.json",
        }
    }

    /// The file its lookup form is cached under beside it, in its object (`None`: it has
    /// none, a lookup reads it as served): `versions.lookup`, the versions a lookup can name,
    /// lowest first, each on a line of its own ([`lookup_versions`]); `step.lookup.json`, the
    /// step as `serde_json` prints the checked document (the text `step-info --format json`
    /// shapes, as it shapes a git collection's stored steps).
    fn lookup_file(&self) -> Option<&'static str> {
        match self {
            Fetched::Versions(_) => Some("versions.lookup"),
            Fetched::Step(..) => Some("step.lookup.json"),
            Fetched::StepIds | Fetched::StepInfo(_) => None,
        }
    }

    /// The name it is cached under, in the collection `alias`.
    fn name(&self, alias: &str) -> Result<Name> {
        match self {
            Fetched::StepIds => ApiDocNames::step_ids(alias),
            Fetched::Versions(id) => ApiDocNames::versions(alias, id),
            Fetched::StepInfo(id) => ApiDocNames::step_info(alias, id),
            Fetched::Step(id, v) => ApiDocNames::step(alias, id, v),
        }
    }

    /// Checks `bytes` as this document; its lookup form when it has one
    /// ([`Fetched::lookup_file`]).
    fn check(&self, bytes: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
        match self {
            Fetched::StepIds => api::read_step_ids(bytes).map(|_| None),
            Fetched::Versions(id) => api::read_versions(bytes, id).map(|vs| {
                let lines: String = lookup_versions(&vs)
                    .iter()
                    .map(|v| format!("{v}\n"))
                    .collect();
                Some(lines.into_bytes())
            }),
            Fetched::StepInfo(_) => api::read_step_info(bytes).map(|_| None),
            Fetched::Step(..) => {
                let step = api::read_step(bytes)?;
                serde_json::to_vec(&step)
                    .map(Some)
                    .map_err(|e| format!("printing the checked step: {e}"))
            }
        }
    }

    /// What it is, for messages.
    fn describe(&self) -> String {
        match self {
            Fetched::StepIds => "the StepLib API's step ids".into(),
            Fetched::Versions(id) => format!("the versions of step {id}"),
            Fetched::StepInfo(id) => format!("the step info of {id}"),
            Fetched::Step(id, v) => format!("step {id}@{v}"),
        }
    }

    /// How long its cached copy answers under `ttl` (`None`: for ever).
    fn ttl(&self, ttl: &ApiTtl) -> Option<Duration> {
        match self {
            Fetched::Step(..) => None,
            Fetched::StepInfo(_) => Some(ttl.step_info),
            Fetched::StepIds | Fetched::Versions(_) => Some(ttl.index),
        }
    }
}

impl ApiReader {
    /// A reader of the API collection `meta` (its `api` is `Some`) in `store`, answering from
    /// the cache alone until [`ApiReader::online`].
    pub(crate) fn new(store: &Store, meta: &CollectionMeta, api: &ApiSource) -> ApiReader {
        ApiReader {
            store: store.clone(),
            alias: meta.alias.clone(),
            base: api.base.trim_end_matches('/').to_string(),
            net: None,
            ttl: ApiTtl::default(),
        }
    }

    /// This reader, fetching what is missing or stale through `net` (and keeping its
    /// documents as long as `net.api_ttl` says).
    pub(crate) fn online(&self, net: &NetConfig) -> ApiReader {
        ApiReader {
            store: self.store.clone(),
            alias: self.alias.clone(),
            base: self.base.clone(),
            net: Some(net.clone()),
            ttl: net.api_ttl,
        }
    }

    fn url(&self, doc: &Fetched) -> Result<String> {
        let path = doc.doc().url_path().ok_or_else(|| Error::Steplib {
            what: doc.describe(),
            reason: "a step id or version that cannot name an API document".into(),
        })?;
        Ok(format!("{}/{path}", self.base))
    }

    /// The cached copy of `doc` under `name`, read back: its lookup form where it has one
    /// (trusted: written from the checked document), else the document as served (the caller
    /// parses it with the reader of its kind, which checks it again); `None` when there is none.
    fn cached(&self, doc: &Fetched, name: &Name) -> Result<Option<Cached>> {
        use super::checkout::{AtLink, Refusal, read_regular};
        let Some(at) = self.store.bound_at(name) else {
            return Ok(None);
        };
        let dir = match self.store.resolve(name) {
            Ok((_, dir)) => dir,
            Err(Error::NameNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let read = |path: &Path| read_regular(path, AtLink::Refuse, MAX_DOCUMENT_BYTES as u64);
        let bad = |path: PathBuf, e: Refusal| Error::Format {
            path,
            reason: e.to_string(),
        };
        if let Some(file) = doc.lookup_file() {
            let path = dir.join(file);
            match read(&path) {
                Ok(bytes) => {
                    return Ok(Some(Cached {
                        path,
                        bytes,
                        at,
                        form: Form::Lookup,
                    }));
                }
                // Cached by an older stepman, without its lookup form.
                Err(Refusal::NotFound) => {}
                Err(e) => return Err(bad(path, e)),
            }
        }
        let path = dir.join(doc.file_name());
        let bytes = read(&path).map_err(|e| bad(path.clone(), e))?;
        Ok(Some(Cached {
            path,
            bytes,
            at,
            form: Form::Served,
        }))
    }

    /// `doc`: the cached copy while it is fresh, else fetched (and cached); the cached copy,
    /// with a warning, when the fetch fails. `Ok(None)`: the API has no such document.
    fn get(&self, doc: &Fetched) -> Result<Option<Cached>> {
        let name = doc.name(&self.alias)?;
        let cached = self.cached(doc, &name)?;
        let age = |c: &Cached| {
            SystemTime::now()
                .duration_since(c.at)
                .unwrap_or(Duration::ZERO)
        };
        if let Some(c) = &cached
            && doc.ttl(&self.ttl).is_none_or(|ttl| age(c) < ttl)
        {
            return Ok(cached);
        }
        let what = doc.describe();
        let net = match &self.net {
            Some(n) if !n.offline => n,
            Some(_) => {
                return match cached {
                    Some(c) => Ok(Some(c)),
                    None => Err(Error::Offline {
                        what,
                        cached: Vec::new(),
                    }),
                };
            }
            None => {
                return match cached {
                    Some(c) => Ok(Some(c)),
                    None => Err(Error::Steplib {
                        what,
                        reason: "not cached (this command reads an API collection's cached \
                                 documents only)"
                            .into(),
                    }),
                };
            }
        };
        let url = self.url(doc)?;
        let mut missing = false;
        let fill = match &cached {
            Some(c) => Rebuild::UnlessBoundSince(c.at),
            None => Rebuild::Never,
        };
        let fetched = self
            .store
            .produce(&name, fill, Producer::ApiDocument, |stage| {
                match fetch_document(stage, doc, &url, &what, net)? {
                    Some(tree) => Ok(tree),
                    None => {
                        // Fails the stage, so nothing is bound; never shown (`missing`).
                        missing = true;
                        Err(Error::NameNotFound {
                            name: name.to_string(),
                            store: self.store.layout().root().to_path_buf(),
                        })
                    }
                }
            });
        match fetched {
            Ok(_) => self
                .cached(doc, &name)?
                .map(Some)
                .ok_or_else(|| Error::Steplib {
                    what,
                    reason: "its cached copy went away while it was read (a delete?)".into(),
                }),
            Err(_) if missing => {
                if cached.is_some() {
                    let _ = self.store.unbind(&name);
                }
                Ok(None)
            }
            Err(Error::Cancelled) => Err(Error::Cancelled),
            Err(e) => match cached {
                Some(c) => {
                    log::warn!(
                        "{what}: {} (using the copy cached {}s ago)",
                        e.describe(),
                        age(&c).as_secs()
                    );
                    Ok(Some(c))
                }
                None => Err(e),
            },
        }
    }

    /// The step ids, sorted.
    pub(crate) fn step_ids(&self) -> Result<Vec<String>> {
        let Some(c) = self.get(&Fetched::StepIds)? else {
            return Ok(Vec::new());
        };
        let mut ids = api::read_step_ids(&c.bytes).map_err(|reason| Error::Format {
            path: c.path,
            reason,
        })?;
        ids.retain(|id| super::generate::valid_component(id));
        ids.sort();
        Ok(ids)
    }

    /// What a lookup of step `id` needs: its versions (lowest first), its info and its latest
    /// version. `Ok(None)`: the API has no such step.
    pub(crate) fn entry(self: &Arc<Self>, id: &str) -> Result<Option<StepEntry>> {
        if !super::generate::valid_component(id) {
            return Ok(None);
        }
        let Some(vs) = self.get(&Fetched::Versions(id.to_string()))? else {
            return Ok(None);
        };
        let versions = match vs.form {
            Form::Lookup => read_lookup_versions(&vs.bytes),
            Form::Served => api::read_versions(&vs.bytes, id).map(|d| lookup_versions(&d)),
        }
        .map_err(|reason| Error::Format {
            path: vs.path,
            reason,
        })?;
        let latest = versions.last().cloned().unwrap_or_default();
        let info = match self.get(&Fetched::StepInfo(id.to_string()))? {
            None => json!({}),
            Some(c) => {
                let mut info = api::read_step_info(&c.bytes).map_err(|reason| Error::Format {
                    path: c.path,
                    reason,
                })?;
                self.absolute_asset_urls(id, &mut info);
                info
            }
        };
        Ok(Some(StepEntry {
            info,
            latest_version_number: latest,
            versions,
            steps: Steps::Api {
                reader: Arc::clone(self),
                id: id.to_string(),
            },
            definitions: None,
        }))
    }

    /// `asset_urls` as the API gives them (`assets/<file>`, relative to the step's directory)
    /// made absolute URLs.
    fn absolute_asset_urls(&self, id: &str, info: &mut Value) {
        let Some(Value::Object(urls)) = info.get_mut("asset_urls") else {
            return;
        };
        let Some(step_dir) = Doc::StepInfo(id.to_string()).url_path() else {
            return;
        };
        let step_dir = step_dir.trim_end_matches("step-info.json");
        for v in urls.values_mut() {
            if let Some(rel) = v.as_str()
                && !rel.contains("://")
            {
                *v = json!(format!("{}/{step_dir}{rel}", self.base));
            }
        }
    }

    /// The step definition of `id@version`; `Ok(None)`: the API has no such version.
    pub(crate) fn step(&self, id: &str, version: &str) -> Result<Option<Value>> {
        match self.step_stored(id, version)? {
            None => Ok(None),
            Some(StoredStep::Parsed(v)) => Ok(Some(v)),
            Some(StoredStep::Text(t)) => {
                serde_json::from_str(&t.text)
                    .map(Some)
                    .map_err(|e| Error::Format {
                        path: t.file,
                        reason: format!("invalid JSON: {e}"),
                    })
            }
        }
    }

    /// The step definition of `id@version` as its lookup form's text, or parsed from a
    /// document cached without one; `Ok(None)`: the API has no such version.
    pub(crate) fn step_stored(&self, id: &str, version: &str) -> Result<Option<StoredStep>> {
        let doc = Fetched::Step(id.to_string(), version.to_string());
        let Some(c) = self.get(&doc)? else {
            return Ok(None);
        };
        let stored = match c.form {
            Form::Lookup => String::from_utf8(c.bytes)
                .map(|text| {
                    StoredStep::Text(StepText {
                        text,
                        file: c.path.clone(),
                    })
                })
                .map_err(|e| format!("not UTF-8: {e}")),
            Form::Served => api::read_step(&c.bytes).map(StoredStep::Parsed),
        };
        stored.map(Some).map_err(|reason| Error::Format {
            path: c.path,
            reason,
        })
    }

    /// Where the cached `step.json` of `id@version` is (what `step-info` shows as its
    /// definition and `activate -y` copies: JSON is YAML).
    pub(crate) fn step_path(&self, id: &str, version: &str) -> PathBuf {
        let doc = Fetched::Step(id.to_string(), version.to_string());
        match doc.name(&self.alias) {
            Ok(name) => match self.store.resolve(&name) {
                Ok((_, dir)) => dir.join(doc.file_name()),
                Err(_) => self.store.layout().name_path(&name).join(doc.file_name()),
            },
            Err(_) => PathBuf::from(self.url(&doc).unwrap_or_default()),
        }
    }

    /// The whole group of step `id` (every version's step.json: a listing's, not a lookup's).
    pub(crate) fn group(self: &Arc<Self>, id: &str) -> Result<Option<Group>> {
        let Some(e) = self.entry(id)? else {
            return Ok(None);
        };
        let mut versions = serde_json::Map::new();
        for v in &e.versions {
            if let Some(step) = self.step(id, v)? {
                versions.insert(v.clone(), step);
            }
        }
        Ok(Some(Group {
            info: e.info,
            latest_version_number: e.latest_version_number,
            versions,
        }))
    }
}

/// Fetches `doc` from `url` into the stage and writes it as the stage's tree (one file), after
/// checking it. `Ok(None)`: the API has no such document (404 or 410).
fn fetch_document(
    stage: &mut Stage<'_>,
    doc: &Fetched,
    url: &str,
    what: &str,
    net: &NetConfig,
) -> Result<Option<Tree>> {
    let file = stage.dir().join("document");
    if fetch::download_optional(url, &file, MAX_DOCUMENT_BYTES as u64, what, net)?.is_none() {
        return Ok(None);
    }
    let bytes = fs::read(&file).map_err(Error::io("read", &file))?;
    let lookup = doc.check(&bytes).map_err(|reason| Error::Steplib {
        what: format!("{what}: {}", crate::credentials::redact(url)),
        reason,
    })?;
    stage
        .write(url, |w| {
            w.add_file(
                doc.file_name(),
                false,
                Some(bytes.len() as u64),
                bytes.as_slice(),
            )?;
            match (doc.lookup_file(), &lookup) {
                (Some(name), Some(l)) => {
                    w.add_file(name, false, Some(l.len() as u64), l.as_slice())
                }
                _ => Ok(()),
            }
        })
        .map(Some)
}

/// The versions of a `versions.json` (newest first) that a lookup can name, lowest first:
/// those that can be a name's component, without the `+exe.` builds of precompiled
/// executables.
fn lookup_versions(newest_first: &[String]) -> Vec<String> {
    let mut versions = api::newest_first(newest_first);
    versions.retain(|v| crate::layout::valid_component(v) && !v.contains("+exe."));
    versions.reverse();
    versions
}

/// Reads a `versions.lookup` ([`Fetched::lookup_file`]).
fn read_lookup_versions(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    text.lines()
        .map(|v| {
            crate::layout::valid_component(v)
                .then(|| v.to_string())
                .ok_or_else(|| format!("{v:?} cannot be a version"))
        })
        .collect()
}

/// Writes an API collection's object: its `collection.json` (the API's `meta.json` as a
/// collection's metadata) and the `meta.json` itself. `meta` is the document when the caller
/// has it already (a setup that probed for it); else it is fetched.
pub(crate) fn write_collection(
    stage: &mut Stage<'_>,
    c: &Collection,
    base: &str,
    meta: Option<Vec<u8>>,
    net: &NetConfig,
) -> Result<Tree> {
    let base = base.trim_end_matches('/');
    let what = format!("collection {}", c.uri);
    let bytes = match meta {
        Some(b) => b,
        None => fetch_meta(base, &what, net, stage.dir())?.ok_or_else(|| Error::Steplib {
            what: what.clone(),
            reason: format!("{base} has no {}", api_meta_path()),
        })?,
    };
    let m = api::read_meta(&bytes).map_err(|reason| Error::Steplib {
        what: format!("{what}: {base}/{}", api_meta_path()),
        reason,
    })?;
    // A relative download `src` is relative to the API's base (a bucket serving the documents
    // and the archives side by side).
    let download_locations = m
        .download_locations
        .iter()
        .map(|l| DownloadLocation {
            kind: l.kind.clone(),
            src: absolute_src(base, &l.src),
        })
        .collect();
    let meta = CollectionMeta {
        uri: c.uri.clone(),
        alias: c.alias.clone(),
        steplib: SteplibMeta {
            format_version: api::API_FORMAT_VERSION.to_string(),
            steplib_source: m.steplib_source.clone().unwrap_or_else(|| base.to_string()),
            assets_download_base_uri: None,
            download_locations,
            extra: serde_json::Map::new(),
        },
        root: None,
        source_commit: m.steplib_commit_sha.clone(),
        layout: super::model::COLLECTION_LAYOUT,
        steps: 0,
        versions: 0,
        skipped: Vec::new(),
        api: Some(ApiSource {
            base: base.to_string(),
            updated_at: m.updated_at.clone(),
        }),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Steplib {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    stage.write(&c.uri, |w: &mut TreeWriter| {
        w.add_file(
            CollectionLayout::META,
            false,
            Some(json.len() as u64),
            json.as_slice(),
        )?;
        w.add_file(META_FILE, false, Some(bytes.len() as u64), bytes.as_slice())
    })
}

/// `v2/meta.json`.
fn api_meta_path() -> String {
    Doc::Meta.url_path().unwrap_or_default()
}

/// `src` resolved against `<base>/` when it is relative (has no scheme).
fn absolute_src(base: &str, src: &str) -> String {
    if src.contains("://") {
        return src.to_string();
    }
    match url::Url::parse(&format!("{base}/")).and_then(|b| b.join(src)) {
        Ok(u) => u.to_string(),
        Err(_) => src.to_string(),
    }
}

/// Fetches `<base>/v2/meta.json` into `dir`; `Ok(None)` when there is none (404).
fn fetch_meta(base: &str, what: &str, net: &NetConfig, dir: &Path) -> Result<Option<Vec<u8>>> {
    let file = dir.join("meta.json");
    let url = format!("{base}/{}", api_meta_path());
    match fetch::download_optional(&url, &file, MAX_DOCUMENT_BYTES as u64, what, net)? {
        None => Ok(None),
        Some(_) => fs::read(&file).map(Some).map_err(Error::io("read", &file)),
    }
}

/// Whether the http(s) URL `url` (a `setup -c` that is not a git URL by its form) is a StepLib
/// API: its `v2/meta.json` is a valid one. Its bytes when it is. Any failure says "not an API"
/// (the git clone that follows reports its own).
pub(crate) fn probe(url: &str, what: &str, net: &NetConfig, dir: &Path) -> Option<Vec<u8>> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) || lower.ends_with(".git") {
        return None;
    }
    let quiet = NetConfig {
        attempts: 1,
        ..net.clone()
    };
    match fetch_meta(url.trim_end_matches('/'), what, &quiet, dir) {
        Ok(Some(b)) if api::read_meta(&b).is_ok() => Some(b),
        Ok(_) => None,
        Err(e) => {
            log::debug!("{what}: not a StepLib API ({})", e.describe());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Durability;

    /// A reader of collection `a` in a new store, answering from the cache alone.
    fn reader() -> (tempfile::TempDir, Arc<ApiReader>) {
        let home = tempfile::tempdir().expect("temp home");
        let store = Store::open(home.path())
            .expect("open store")
            .with_durability(Durability::NoSync);
        let r = ApiReader {
            store,
            alias: "a".into(),
            base: "http://127.0.0.1:1/api".into(),
            net: None,
            ttl: ApiTtl::default(),
        };
        (home, Arc::new(r))
    }

    /// Caches `doc` as `bytes`, with its lookup form when `lookup` (as this version does), or
    /// alone (as an older stepman did).
    fn cache(r: &ApiReader, doc: &Fetched, bytes: &[u8], lookup: bool) {
        let name = doc.name(&r.alias).expect("name");
        let form = doc.check(bytes).expect("a valid document");
        r.store
            .produce(&name, Rebuild::Always, Producer::ApiDocument, |stage| {
                stage.write("test", |w| {
                    w.add_file(doc.file_name(), false, None, bytes)?;
                    match (lookup, doc.lookup_file(), &form) {
                        (true, Some(f), Some(l)) => w.add_file(f, false, None, l.as_slice()),
                        _ => Ok(()),
                    }
                })
            })
            .expect("cache");
    }

    /// A lookup reads a document's lookup form where it was cached with one, and the served
    /// document, checked again, where it was not: the same answer either way (the versions a
    /// lookup can name, lowest first; the step, as text or parsed).
    #[test]
    fn a_document_cached_without_its_lookup_form_answers_the_same() {
        // Newest first, not in order of their text; a `+exe.` build and a version no name can
        // hold are left out.
        let versions =
            br#"{"step_id":"s","versions":["1.10.0","1.9.0","2.0.0+exe.1","1.2.0","-x"]}"#;
        let step = br#"{ "title" : "T", "summary": "\u0041", "inputs": [{"a": "1", "opts": {"title": "A"}}] }"#;
        let mut answers = Vec::new();
        for lookup in [true, false] {
            let (_home, r) = reader();
            cache(&r, &Fetched::Versions("s".into()), versions, lookup);
            cache(
                &r,
                &Fetched::StepInfo("s".into()),
                br#"{"maintainer":"m"}"#,
                lookup,
            );
            cache(
                &r,
                &Fetched::Step("s".into(), "1.10.0".into()),
                step,
                lookup,
            );
            let e = r.entry("s").expect("entry").expect("a group");
            assert_eq!(e.versions, ["1.2.0", "1.9.0", "1.10.0"]);
            assert_eq!(e.latest_version_number, "1.10.0");
            let stored = r.step_stored("s", "1.10.0").expect("read").expect("a step");
            let parsed = match (&stored, lookup) {
                (StoredStep::Text(t), true) => {
                    // serde_json's printing of the checked document, not the served bytes.
                    assert_eq!(
                        t.text,
                        r#"{"title":"T","summary":"A","inputs":[{"a":"1","opts":{"title":"A"}}]}"#
                    );
                    serde_json::from_str::<Value>(&t.text).expect("JSON")
                }
                (StoredStep::Parsed(v), false) => v.clone(),
                (other, _) => panic!("lookup form {lookup}: read as {other:?}"),
            };
            assert_eq!(r.step("s", "1.10.0").expect("step"), Some(parsed.clone()));
            answers.push(parsed);
        }
        assert_eq!(answers[0], answers[1]);
    }

    /// A lookup form that is not what this version writes fails naming its file.
    #[test]
    fn a_damaged_lookup_form_fails_naming_its_file() {
        let (_home, r) = reader();
        let doc = Fetched::Versions("s".into());
        let name = doc.name(&r.alias).expect("name");
        r.store
            .produce(&name, Rebuild::Always, Producer::ApiDocument, |stage| {
                stage.write("test", |w| {
                    w.add_file(
                        "versions.json",
                        false,
                        None,
                        &br#"{"step_id":"s","versions":[]}"#[..],
                    )?;
                    w.add_file("versions.lookup", false, None, &b"1.0.0\n../x\n"[..])
                })
            })
            .expect("cache");
        match r.entry("s") {
            Err(Error::Format { path, reason }) => {
                assert!(path.ends_with("versions.lookup"), "{path:?}");
                assert!(reason.contains("../x"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
