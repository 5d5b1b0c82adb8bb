//! StepLibs ("collections"): their formats, the spec generated from them, and where a
//! collection's data lives in the store.
//!
//! Invariants:
//! - A collection is one store object bound to the name `<alias>/_steplib/current`; setting one
//!   up or updating it is a publish plus one atomic name swap, so readers see the old spec or the
//!   new one, never a mix and never nothing. Ten different collections set up at once are ten
//!   different names: there is no shared routing file to lose updates in.
//! - The alias is derived from the collection's URI (a readable slug plus a hash), never from
//!   the clock.
//! - A collection's steps are the names `<alias>/<step id>/<version>`; updating the collection
//!   never touches them.
//! - Looking a step up reads the group's index and one version's bytes of its group file
//!   (collection layout 2), never the whole group or the whole spec; an object written before
//!   layout 2 is read from its groups.

pub mod api;
mod api_read;
pub(crate) mod checkout;
pub mod compat;
pub mod generate;
pub mod model;
mod shape;
pub mod version;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{CollectionLayout, Name};
use crate::retry::Race;
use crate::store::Store;
use crate::sys;

pub use self::api_read::ApiTtl;
pub use self::model::{ApiSource, CollectionMeta, DownloadLocation, Group, SteplibMeta};
pub use self::version::Constraint;

pub use crate::layout::{COLLECTION_ID, COLLECTION_VERSION};

/// Where a StepLib comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A git repository, cloned with the `git` command line.
    Git(String),
    /// A StepLib checkout on the local file system.
    Dir(PathBuf),
    /// An HTTP(S) URL of a generated `spec.json`.
    SpecUrl(String),
    /// The HTTP(S) base URL of a StepLib API (its documents are `<base>/v2/…`, [`api`]).
    Api(String),
}

/// The public StepLib's git URI, which the old tool reads through [`PUBLIC_API`] unless
/// `BITRISE_STEPLIB_USE_API` is `false` or `0`.
pub const PUBLIC_GIT: &str = "https://github.com/bitrise-io/bitrise-steplib.git";
/// The public StepLib's API base.
pub const PUBLIC_API: &str = "https://steplib.bitrise.io/api";

/// Whether the public StepLib's git URI is read through its API ([`Collection::parse_mapped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublicApi {
    /// Through the API, as the old tool does by default.
    #[default]
    Use,
    /// Through git (`BITRISE_STEPLIB_USE_API=false`).
    Off,
}

impl PublicApi {
    /// Reads `BITRISE_STEPLIB_USE_API` as the old tool does: `false` and `0` turn it off,
    /// anything else (unset included) leaves it on.
    pub fn from_env_value(v: Option<&str>) -> PublicApi {
        match v.map(str::trim) {
            Some("false" | "0") => PublicApi::Off,
            _ => PublicApi::Use,
        }
    }
}

/// A collection URI as the user gave it, classified and with its alias.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The URI as the user wrote it (trimmed).
    pub uri: String,
    /// The normalised key the alias is derived from.
    pub key: String,
    /// Where the StepLib comes from.
    pub source: Source,
    /// The route of its names in the store.
    pub alias: String,
    /// Credentials that came in the URI's userinfo (memory only).
    pub credential: Option<crate::credentials::Credential>,
}

impl Collection {
    /// Classifies `uri`: `file://` and plain paths are local; `http(s)://….json` is a spec;
    /// other URLs and `git@…` are git, refused here when the one git URL classification refuses
    /// them (an unknown scheme, a remote helper).
    pub fn parse(uri: &str) -> Result<Collection> {
        // Credentials in the URI are used from memory (netrc works too); never stored or shown.
        let (clean, cred) = crate::credentials::split_userinfo(uri.trim());
        let uri = clean.as_str();
        if uri.is_empty() {
            return Err(Error::Steplib {
                what: "collection".into(),
                reason: "empty collection URI".into(),
            });
        }
        let lower = uri.to_ascii_lowercase();
        let is_http = lower.starts_with("https://") || lower.starts_with("http://");
        let source = if let Some(p) = uri.strip_prefix("file://") {
            Source::Dir(absolute(Path::new(p)))
        } else if is_http && lower.ends_with("/v2/meta.json") {
            // An API named by its meta.json: the base is what is above `v2/`.
            Source::Api(uri[..uri.len() - "/v2/meta.json".len()].to_string())
        } else if is_http && lower.ends_with(".json") {
            Source::SpecUrl(uri.to_string())
        } else if lower.contains("://") || lower.starts_with("git@") {
            Source::Git(uri.trim_end_matches('/').to_string())
        } else {
            Source::Dir(absolute(Path::new(uri)))
        };
        // A URL git would not take (an unknown scheme such as a mistyped `htps://`, a remote
        // helper) is refused here, before any store is opened or git run.
        if let Source::Git(u) = &source {
            crate::fetch::classify_git_url(u).map_err(|e| Error::Steplib {
                what: format!("collection {u}"),
                reason: e.to_string(),
            })?;
        }
        let key = match &source {
            Source::Dir(p) => format!("file://{}", p.display()),
            Source::Git(u) | Source::SpecUrl(u) => u.clone(),
            Source::Api(u) => u.trim_end_matches('/').to_string(),
        };
        let alias = alias_of(&key);
        // A relative path means something else from another directory: keep the absolute form.
        let uri = if matches!(source, Source::Dir(_)) {
            key.clone()
        } else {
            uri.to_string()
        };
        Ok(Collection {
            uri,
            key,
            source,
            alias,
            credential: cred,
        })
    }

    /// [`Collection::parse`], reading the public StepLib's git URI through its API when
    /// `public` says so (under the API's alias: the git collection stays apart).
    pub fn parse_mapped(uri: &str, public: PublicApi) -> Result<Collection> {
        let c = Collection::parse(uri)?;
        if public == PublicApi::Use && c.key == PUBLIC_GIT {
            let mut api = Collection::api(PUBLIC_API)?;
            api.uri = c.uri;
            return Ok(api);
        }
        Ok(c)
    }

    /// The StepLib API at the HTTP(S) base URL `base` (`setup --api`): its alias is the one
    /// [`Collection::parse`] gives the same URL, so later commands may name it either way.
    pub fn api(base: &str) -> Result<Collection> {
        let (clean, cred) = crate::credentials::split_userinfo(base.trim());
        let lower = clean.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(Error::Steplib {
                what: format!("collection {clean}"),
                reason: "a StepLib API's base must be an http(s) URL".into(),
            });
        }
        let base = clean.trim_end_matches('/').to_string();
        let base = base
            .strip_suffix("/v2/meta.json")
            .unwrap_or(&base)
            .to_string();
        Ok(Collection {
            uri: base.clone(),
            key: base.clone(),
            alias: alias_of(&base),
            source: Source::Api(base),
            credential: cred,
        })
    }

    /// The collection a set-up object describes (a listing's): an API collection by its base,
    /// whatever URI named it.
    pub fn of_meta(meta: &CollectionMeta) -> Result<Collection> {
        match &meta.api {
            Some(a) => {
                let mut c = Collection::api(&a.base)?;
                c.uri = meta.uri.clone();
                c.alias = meta.alias.clone();
                Ok(c)
            }
            None => Collection::parse(&meta.uri),
        }
    }

    /// The name of the collection's object.
    pub fn name(&self) -> Name {
        Collection::name_of_alias(&self.alias)
    }

    /// The name of the object of the collection whose alias is `alias`.
    pub(crate) fn name_of_alias(alias: &str) -> Name {
        Name::new(alias, COLLECTION_ID, COLLECTION_VERSION)
            .expect("alias is a valid name component")
    }

    /// The name of a step version of this collection.
    pub fn step_name(&self, id: &str, version: &str) -> Result<Name> {
        Name::new(&self.alias, id, version)
    }
}

fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    fs::canonicalize(&abs).unwrap_or(abs)
}

/// `<slug>-<12 hex>`: readable, and unique by the hash of the normalised URI.
pub fn alias_of(key: &str) -> String {
    let slug = crate::layout::name_slug(key, 48);
    let hash = blake3::hash(key.as_bytes()).to_hex();
    if slug.is_empty() {
        format!("steplib-{}", &hash[..12])
    } else {
        format!("{slug}-{}", &hash[..12])
    }
}

/// A set-up collection as read from the store.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its object's directory.
    pub dir: PathBuf,
    /// Its `collection.json`.
    pub meta: CollectionMeta,
    /// An API collection's document reader (its groups are not in the object).
    api: Option<std::sync::Arc<api_read::ApiReader>>,
}

impl Opened {
    /// Whether this is a StepLib read through its HTTP API (its documents are fetched as
    /// lookups need them; [`Opened::online`]).
    pub fn is_api(&self) -> bool {
        self.api.is_some()
    }

    /// This collection, fetching the API documents its lookups need (when it is an API
    /// collection) through `net`. Without it, an API collection answers from the documents in
    /// the store alone.
    pub fn online(mut self, net: &crate::fetch::NetConfig) -> Opened {
        if let Some(r) = &self.api {
            self.api = Some(std::sync::Arc::new(r.online(net)));
        }
        self
    }

    /// Reads the group of step `id`; `Ok(None)` when the collection has no such step. (An API
    /// collection fetches every version's document: a listing's read, not a lookup's.)
    pub fn group(&self, id: &str) -> Result<Option<Group>> {
        if let Some(r) = &self.api {
            return r.group(id);
        }
        self.read_record(id, CollectionLayout::group(id), "group")
    }

    /// Reads and parses the per-step file `rel` of step `id` (its group or its index);
    /// `Ok(None)` when the collection has no such step.
    fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        rel: String,
        what: &str,
    ) -> Result<Option<T>> {
        if Name::new("r", id, "v").is_err() || id.starts_with('_') {
            return Ok(None);
        }
        let p = self.dir.join(rel);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            // No such step, unless the whole object went away (gc after a re-point): then the
            // caller reads the name again.
            Err(e) if sys::is_not_found(&e) && self.dir.join(CollectionLayout::META).exists() => {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("read", &p)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Format {
                path: p,
                reason: format!("invalid {what} file: {e}"),
            })
    }

    /// What a lookup of step `id` needs (its versions, `info`, latest version), reading only its
    /// index in a layout-2 object (a few bytes per version, never the group); an older object's
    /// whole group otherwise. `Ok(None)` when the collection has no such step.
    pub fn entry(&self, id: &str) -> Result<Option<StepEntry>> {
        if let Some(r) = &self.api {
            return r.entry(id);
        }
        if self.meta.layout < 2 {
            return Ok(self.group(id)?.map(|g| StepEntry {
                info: g.info,
                latest_version_number: g.latest_version_number,
                versions: g.versions.keys().cloned().collect(),
                steps: Steps::Group(g.versions),
                definitions: None,
            }));
        }
        let Some(index) =
            self.read_record::<model::GroupIndex>(id, CollectionLayout::index(id), "index")?
        else {
            return Ok(None);
        };
        let (versions, spans): (Vec<String>, Vec<(u64, u64)>) = index
            .versions
            .into_iter()
            .map(|(v, at, len)| (v, (at, len)))
            .unzip();
        let definitions = (self.meta.layout >= 3).then(|| Definitions {
            file: self.dir.join(CollectionLayout::definitions(id)),
            spans: index.yml,
        });
        Ok(Some(StepEntry {
            info: index.info,
            latest_version_number: index.latest_version_number,
            versions,
            steps: Steps::Spans {
                group: self.dir.join(CollectionLayout::group(id)),
                spans,
            },
            definitions,
        }))
    }

    /// The ids of every step in the collection, sorted.
    pub fn step_ids(&self) -> Result<Vec<String>> {
        if let Some(r) = &self.api {
            return r.step_ids();
        }
        let dir = self.dir.join(CollectionLayout::GROUPS);
        let entries = crate::scan::read_dir_names(&dir)?;
        if entries.is_empty() && !self.dir.join(CollectionLayout::META).exists() {
            // Not an empty collection: the object went away (gc after a re-point). Say so, and
            // the caller reads the name again (an empty list would be a wrong answer).
            return Err(Error::io("read dir", &dir)(
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let mut ids: Vec<String> = entries
            .into_iter()
            .filter_map(|(n, _, _)| CollectionLayout::group_id(&n).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Path of the collection's `collection.json`.
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(CollectionLayout::META)
    }

    /// Where the original step.yml of `id@version` is: a span of `definitions/<id>.yml` in a
    /// layout-3 object, else a file of its own ([`Opened::step_yml`]).
    pub fn definition(&self, id: &str, version: &str) -> Result<Definition> {
        if self.api.is_some() || self.meta.layout < 3 {
            return Ok(Definition::File(self.step_yml(id, version)));
        }
        self.entry(id)?
            .map(|e| e.definition(version))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::Format {
                path: self.dir.join(CollectionLayout::definitions(id)),
                reason: format!("the collection has no step.yml of {id}@{version}"),
            })
    }

    /// Path of the original `step.yml` of a step version inside a layout-1 or -2 collection
    /// object (or an API collection's cached `step.json`); a layout-3 object has none
    /// ([`Opened::definition`]).
    pub fn step_yml(&self, id: &str, version: &str) -> PathBuf {
        if let Some(r) = &self.api {
            return r.step_path(id, version);
        }
        self.dir.join(CollectionLayout::step_yml(id, version))
    }
}

/// A step definition as JSON text ([`StepEntry::step_stored`]) and the file it was read from,
/// which an error about the text names (empty for a definition printed from a parsed one).
#[derive(Debug, Clone)]
pub struct StepText {
    /// The JSON text, not parsed.
    pub text: String,
    /// The collection's file holding it.
    pub file: PathBuf,
}

/// A step definition as [`StepEntry::step_stored`] reads it.
#[derive(Debug, Clone)]
pub enum StoredStep {
    /// Parsed.
    Parsed(Value),
    /// Its JSON text, not parsed.
    Text(StepText),
}

/// One step group as a lookup sees it ([`Opened::entry`]).
#[derive(Debug, Clone)]
pub struct StepEntry {
    /// `step-info.yml` plus `asset_urls`.
    pub info: Value,
    /// The highest version.
    pub latest_version_number: String,
    /// Every version (lowest first in a layout-2 object).
    pub versions: Vec<String>,
    steps: Steps,
    /// (Layout 3) where the original step.yml files are.
    definitions: Option<Definitions>,
}

/// A layout-3 group's `definitions/<id>.yml` and each version's span in it.
#[derive(Debug, Clone)]
struct Definitions {
    file: PathBuf,
    spans: Vec<(u64, u64)>,
}

/// Where the original step.yml of a step version is (what [`StepEntry::definition`] gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Definition {
    /// A file of its own: a layout-1 or -2 collection's `yml/<id>/<version>.yml`, or an API
    /// collection's cached `step.json`.
    File(PathBuf),
    /// A span of a layout-3 collection's `definitions/<id>.yml`.
    Span {
        /// The file.
        file: PathBuf,
        /// Its first byte.
        at: u64,
        /// Its length.
        len: u64,
    },
}

impl Definition {
    /// The step.yml's bytes (at most [`model::MAX_YAML_BYTES`]).
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Definition::File(p) => fs::read(p).map_err(Error::io("read", p)),
            Definition::Span { file, at, len } => {
                let bad = |reason: String| Error::Format {
                    path: file.clone(),
                    reason,
                };
                if *len > model::MAX_YAML_BYTES as u64 {
                    return Err(bad(format!("index gives a step.yml of {len} bytes")));
                }
                read_span(file, *at, *len)?
                    .ok_or_else(|| bad("the index's span ends past the end of the file".into()))
            }
        }
    }
}

/// The original step.yml `bytes` of a step version as a file of its own (what `step-info` shows as
/// `definition_pth`). A layout-3 collection keeps a group's step.yml files in one file, so the
/// first time a version's is asked for it becomes an object holding `step.yml`, bound to
/// `<alias>/_def/<the first 32 hex digits of its BLAKE3>`: named by its content, it never goes
/// stale, and concurrent askers make it once (`Store::produce`). A store this process cannot
/// write gives an error; `delete` of the collection removes these names with the others.
pub fn definition_file(store: &Store, alias: &str, bytes: &[u8]) -> Result<PathBuf> {
    let name = crate::layout::definition_name(alias, bytes)?;
    // A `delete` of the collection may unbind the name right after it was made: make it again
    // (a few times, then give up: `crate::retry`).
    let mut race = Race::new(Race::REDO);
    loop {
        match store.resolve(&name) {
            Ok((_, dir)) => return Ok(dir.join(STEP_YML)),
            Err(Error::NameNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if !race.again() {
            return Err(Error::NameNotFound {
                name: name.to_string(),
                store: store.layout().root().to_path_buf(),
            });
        }
        store.produce(
            &name,
            crate::store::Rebuild::Never,
            crate::store::Producer::Definition,
            |stage| {
                stage.write(&name.to_string(), |w| {
                    w.add_file(STEP_YML, false, Some(bytes.len() as u64), bytes)
                })
            },
        )?;
    }
}

/// The file name of a definition object's one file.
const STEP_YML: &str = "step.yml";

/// The `len` bytes of `file` from `at`; `None` when the file ends first.
fn read_span(file: &Path, at: u64, len: u64) -> Result<Option<Vec<u8>>> {
    let mut f = fs::File::open(file).map_err(Error::io("open", file))?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).map_err(Error::io("seek", file))?;
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, len), &mut bytes)
        .map_err(Error::io("read", file))?;
    Ok((bytes.len() as u64 == len).then_some(bytes))
}

#[derive(Debug, Clone)]
enum Steps {
    /// An older object's group, read whole.
    Group(serde_json::Map<String, Value>),
    /// Where each version's JSON lies in the group file (in the order of `versions`).
    Spans {
        group: PathBuf,
        spans: Vec<(u64, u64)>,
    },
    /// An API collection's: each version's `step.json`, fetched when it is asked for.
    Api {
        reader: std::sync::Arc<api_read::ApiReader>,
        id: String,
    },
}

impl StepEntry {
    /// Where the original step.yml of `version` lies in a layout-3 object (`None`: an older
    /// layout or an API collection, whose definitions are files of their own, or no such
    /// version). A layout-3 index without a span for it is a format error.
    pub fn definition(&self, version: &str) -> Result<Option<Definition>> {
        let (Some(d), Some(i)) = (
            &self.definitions,
            self.versions.iter().position(|v| v == version),
        ) else {
            return Ok(None);
        };
        let &(at, len) = d.spans.get(i).ok_or_else(|| Error::Format {
            path: d.file.clone(),
            reason: format!("the index gives no step.yml span for {version}"),
        })?;
        Ok(Some(Definition::Span {
            file: d.file.clone(),
            at,
            len,
        }))
    }

    /// The step definition of `version` (`Ok(None)`: no such version): in a layout-2 object,
    /// only that version's bytes of the group file are read.
    pub fn step(&self, version: &str) -> Result<Option<Value>> {
        match &self.steps {
            Steps::Group(m) => Ok(m.get(version).cloned()),
            Steps::Api { reader, id } => reader.step(id, version),
            Steps::Spans { .. } => self.stored(version, |group, bytes| {
                serde_json::from_slice(&bytes).map_err(|e| Error::Format {
                    path: group.to_path_buf(),
                    reason: format!("invalid step {version} at the index's span: {e}"),
                })
            }),
        }
    }

    /// [`StepEntry::step`] as it is stored: the JSON text where the collection keeps one (a
    /// git or local StepLib's group file spans, an API document's lookup form), read without
    /// parsing; parsed otherwise (an object older than layout 2, an API document cached without
    /// its lookup form). `Ok(None)`: no such version.
    pub fn step_stored(&self, version: &str) -> Result<Option<StoredStep>> {
        match &self.steps {
            Steps::Spans { .. } => self.step_text(version).map(|t| t.map(StoredStep::Text)),
            Steps::Api { reader, id } => reader.step_stored(id, version),
            Steps::Group(_) => self.step(version).map(|s| s.map(StoredStep::Parsed)),
        }
    }

    /// Whether each version's definition is a document fetched when it is first asked for (an
    /// API collection's `step.json`), so that reading the definition file needs
    /// [`StepEntry::step`] first.
    pub fn fetches_definitions(&self) -> bool {
        matches!(self.steps, Steps::Api { .. })
    }

    /// [`StepEntry::step`] as the JSON text `setup` stored (its group file's span), not parsed:
    /// checked to be UTF-8 only. `Ok(None)`: no such version, or a collection without spans.
    fn step_text(&self, version: &str) -> Result<Option<StepText>> {
        self.stored(version, |group, bytes| match String::from_utf8(bytes) {
            Ok(text) => Ok(StepText {
                text,
                file: group.to_path_buf(),
            }),
            Err(e) => Err(Error::Format {
                path: group.to_path_buf(),
                reason: format!("the step {version} at the index's span is not UTF-8: {e}"),
            }),
        })
    }

    /// The bytes of `version`'s span of the group file, through `read` with the file's path
    /// (`None` when the collection keeps no spans or has no such version).
    fn stored<T>(
        &self,
        version: &str,
        read: impl FnOnce(&Path, Vec<u8>) -> Result<T>,
    ) -> Result<Option<T>> {
        let Steps::Spans { group, spans } = &self.steps else {
            return Ok(None);
        };
        let Some((at, len)) = self
            .versions
            .iter()
            .position(|v| v == version)
            .and_then(|i| spans.get(i).copied())
        else {
            return Ok(None);
        };
        let bad = |reason: String| Error::Format {
            path: group.clone(),
            reason,
        };
        if len > generate::MAX_GROUP_BYTES {
            return Err(bad(format!("index gives a step of {len} bytes")));
        }
        let bytes = read_span(group, at, len)?.ok_or_else(|| {
            bad(format!(
                "the index's span of {version} ends past the end of the file"
            ))
        })?;
        read(group, bytes).map(Some)
    }
}

/// Reads and parses the step.yml at `path` (a path the user gave: a symlink is followed), as
/// setup reads one: a regular file (a FIFO or a device is refused, never blocked on) of at most
/// [`model::MAX_YAML_BYTES`], checked before it is read.
pub fn read_step_yml(path: &Path) -> Result<Value> {
    parse_yml_bytes(
        path,
        checkout::read_regular(path, checkout::AtLink::Follow, model::MAX_YAML_BYTES as u64),
    )
}

/// [`read_step_yml`], also returning the file's text (what `step-info` prints as the step's
/// definition): the file is read once.
pub fn read_step_yml_text(path: &Path) -> Result<(String, Value)> {
    let raw = checkout::read_regular(path, checkout::AtLink::Follow, model::MAX_YAML_BYTES as u64);
    let text = match &raw {
        Ok(b) => String::from_utf8_lossy(b).into_owned(),
        Err(_) => String::new(),
    };
    Ok((text, parse_yml_bytes(path, raw)?))
}

/// The text of the step.yml at `path` as it is written, read as [`read_step_yml`] reads it but
/// not parsed: for a definition inside an object (a collection's `yml/`, a git ref's tree),
/// which was parsed when it was published, so printing it costs no YAML parse.
pub fn read_step_yml_definition(path: &Path) -> Result<String> {
    checkout::read_regular(path, checkout::AtLink::Follow, model::MAX_YAML_BYTES as u64)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Error::Steplib {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// [`read_step_yml`] of `rel` inside the tree `dir` (a step's object): a symlink is followed
/// only while it stays inside the tree.
pub(crate) fn read_step_yml_in(dir: &Path, rel: &str) -> Result<Value> {
    let co = checkout::Checkout::new(dir);
    parse_yml_bytes(&dir.join(rel), co.read(rel, model::MAX_YAML_BYTES as u64))
}

fn parse_yml_bytes(
    path: &Path,
    raw: std::result::Result<Vec<u8>, checkout::Refusal>,
) -> Result<Value> {
    let bad = |reason: String| Error::Steplib {
        what: path.display().to_string(),
        reason,
    };
    let raw = raw.map_err(|e| bad(e.to_string()))?;
    let text = std::str::from_utf8(&raw)
        .map_err(|_| bad(crate::error::SteplibParseError::NotUtf8.to_string()))?;
    model::parse_yaml_as(text, model::Doc::Step).map_err(|e| bad(format!("invalid step.yml: {e}")))
}

/// Reads the collection `c` from the store; `Ok(None)` when it is not set up.
pub fn open(store: &Store, c: &Collection) -> Result<Option<Opened>> {
    open_name(store, &c.name())
}

/// Reads the collection object the name `name` points at; `Ok(None)` when it is not bound.
fn open_name(store: &Store, name: &Name) -> Result<Option<Opened>> {
    // Lock-free: between resolving the name and reading the file, an update may re-point the
    // name and a gc remove the object we resolved. Then the object is gone: resolve again
    // (`crate::retry`).
    let mut race = Race::new(Race::LOOKUP);
    let (dir, bytes) = loop {
        let (_, dir) = match store.resolve(name) {
            Ok(r) => r,
            Err(Error::NameNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let p = dir.join(CollectionLayout::META);
        match fs::read(&p) {
            Ok(b) => break (dir, b),
            Err(e) if sys::is_not_found(&e) && race.again() && !dir.exists() => {}
            Err(e) => return Err(Error::io("read", &p)(e)),
        }
    };
    let p = dir.join(CollectionLayout::META);
    let meta = serde_json::from_slice(&bytes).map_err(|e| Error::Format {
        path: p,
        reason: format!("invalid collection.json: {e}"),
    })?;
    let meta: CollectionMeta = meta;
    let api = meta
        .api
        .as_ref()
        .map(|a| std::sync::Arc::new(api_read::ApiReader::new(store, &meta, a)));
    Ok(Some(Opened { dir, meta, api }))
}

/// Every set-up collection.
pub fn list(store: &Store) -> Result<Vec<(String, Opened)>> {
    let mut out = Vec::new();
    for route in store.routes()? {
        let Ok(name) = Name::new(&route, COLLECTION_ID, COLLECTION_VERSION) else {
            continue;
        };
        // Unreadable ones are left out; one re-pointed and collected meanwhile is read again.
        let Ok(Some(opened)) = open_name(store, &name) else {
            continue;
        };
        out.push((route, opened));
    }
    Ok(out)
}

/// Removes the collection, the names of its cached steps (objects go at the next gc) and its
/// kept mirror (a git StepLib's). Activations running from it finish: they hold the store lock
/// while they copy.
pub fn delete(store: &Store, c: &Collection) -> Result<usize> {
    generate::remove_mirror(store, c)?;
    let mut removed = 0;
    for (id, version) in store.names_in_route(&c.alias)? {
        let name = Name::new(&c.alias, &id, &version)?;
        if store.unbind(&name)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// What `export-spec` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportType {
    /// Every version of every step.
    Full,
    /// Each step's info and its latest version only (as the old tool: no version number).
    Latest,
    /// Each step's id only, as the old tool writes it (`{"<id>": {"info": {}}}`).
    Minimal,
}

/// Writes the collection as a `spec.json`, one group at a time (memory stays bounded by the
/// largest group).
pub fn write_spec(o: &Opened, kind: ExportType, out: &mut impl std::io::Write) -> Result<()> {
    if o.is_api() {
        return Err(Error::Steplib {
            what: format!("collection {}", o.meta.uri),
            reason: "a StepLib read through its API has no spec.json (its documents are fetched \
                     one lookup at a time); export the spec from the StepLib's git repository"
                .into(),
        });
    }
    let io_err = |e: std::io::Error| Error::io("write", "spec")(e);
    let s = &o.meta.steplib;
    let generated = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut head = serde_json::Map::new();
    head.insert(
        "format_version".into(),
        Value::String(s.format_version.clone()),
    );
    head.insert("generated_at_timestamp".into(), Value::from(generated));
    head.insert(
        "steplib_source".into(),
        Value::String(s.steplib_source.clone()),
    );
    head.insert(
        "download_locations".into(),
        serde_json::to_value(&s.download_locations).unwrap_or(Value::Array(Vec::new())),
    );
    // Always there, as in the old tool's spec (empty when the StepLib has none).
    head.insert(
        "assets_download_base_uri".into(),
        Value::String(s.assets_download_base_uri.clone().unwrap_or_default()),
    );
    for (k, v) in &s.extra {
        head.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let head = json(&Value::Object(head))?;
    // Splice the steps mapping in before the closing brace of the head object.
    out.write_all(&head[..head.len() - 1]).map_err(io_err)?;
    out.write_all(if head.len() > 2 {
        b",\"steps\":{"
    } else {
        b"\"steps\":{"
    })
    .map_err(io_err)?;
    for (i, id) in o.step_ids()?.iter().enumerate() {
        let path = o.dir.join(CollectionLayout::group(id));
        let body = match kind {
            ExportType::Full => fs::read(&path).map_err(Error::io("read", &path))?,
            // The old tool's minimal spec: an empty group, whose `info` it always prints.
            ExportType::Minimal => b"{\"info\":{}}".to_vec(),
            // The old tool's latest spec: the info and the latest version, no version number.
            ExportType::Latest => {
                let Some(g) = o.group(id)? else { continue };
                let mut m = serde_json::Map::new();
                m.insert("info".into(), g.info.clone());
                let mut vs = serde_json::Map::new();
                if let Some(step) = g.versions.get(&g.latest_version_number) {
                    vs.insert(g.latest_version_number.clone(), step.clone());
                }
                m.insert("versions".into(), Value::Object(vs));
                json(&Value::Object(m))?
            }
        };
        if i > 0 {
            out.write_all(b",").map_err(io_err)?;
        }
        out.write_all(&json(&Value::String(id.clone()))?)
            .map_err(io_err)?;
        out.write_all(b":").map_err(io_err)?;
        out.write_all(&body).map_err(io_err)?;
    }
    out.write_all(b"}}\n").map_err(io_err)?;
    Ok(())
}

fn json(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Steplib {
        what: "spec".into(),
        reason: e.to_string(),
    })
}

use serde_json::Value;

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(dir: &Path, meta: &str) -> Opened {
        fs::write(dir.join(CollectionLayout::META), meta).unwrap();
        Opened {
            dir: dir.to_path_buf(),
            meta: serde_json::from_str(meta).unwrap(),
            api: None,
        }
    }

    const GROUP: &str = r#"{"info":{"maintainer":"m"},"latest_version_number":"2.0.0","versions":{"1.0.0":{"title":"one"},"2.0.0":{"title":"two"}}}"#;

    #[test]
    fn the_public_steplibs_git_uri_is_read_through_its_api_unless_turned_off() {
        let api = Collection::parse_mapped(PUBLIC_GIT, PublicApi::Use).unwrap();
        assert_eq!(api.source, Source::Api(PUBLIC_API.into()));
        assert_eq!(api.uri, PUBLIC_GIT);
        assert_eq!(api.alias, Collection::api(PUBLIC_API).unwrap().alias);
        let git = Collection::parse_mapped(PUBLIC_GIT, PublicApi::Off).unwrap();
        assert_eq!(git.source, Source::Git(PUBLIC_GIT.into()));
        assert_ne!(git.alias, api.alias);
        // Another StepLib is never mapped.
        let other =
            Collection::parse_mapped("https://example.com/lib.git", PublicApi::Use).unwrap();
        assert!(matches!(other.source, Source::Git(_)));
        for (v, want) in [
            (None, PublicApi::Use),
            (Some("true"), PublicApi::Use),
            (Some("maybe"), PublicApi::Use),
            (Some("false"), PublicApi::Off),
            (Some("0"), PublicApi::Off),
        ] {
            assert_eq!(PublicApi::from_env_value(v), want, "{v:?}");
        }
        // An API named by its meta.json, or with a trailing slash, is the same collection.
        let by_meta = Collection::parse("https://h.example/api/v2/meta.json").unwrap();
        assert_eq!(by_meta.source, Source::Api("https://h.example/api".into()));
        assert_eq!(
            by_meta.alias,
            Collection::api("https://h.example/api/").unwrap().alias
        );
        assert_eq!(
            by_meta.alias,
            Collection::parse("https://h.example/api").unwrap().alias
        );
        assert!(Collection::api("/srv/api").is_err());
    }

    #[test]
    fn an_object_written_before_layout_2_is_read_from_its_groups() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("groups")).unwrap();
        fs::write(d.path().join("groups/s.json"), GROUP).unwrap();
        // collection.json as stepman wrote it before layout 2: no `layout` field.
        let o = opened(
            d.path(),
            r#"{"uri":"u","alias":"a","steplib":{"format_version":"1"},"steps":1,"versions":2}"#,
        );
        assert_eq!(o.meta.layout, 1);
        let e = o.entry("s").unwrap().unwrap();
        assert_eq!(e.versions, ["1.0.0", "2.0.0"]);
        assert_eq!(e.latest_version_number, "2.0.0");
        assert_eq!(e.step("2.0.0").unwrap().unwrap()["title"], "two");
        assert!(e.step("3.0.0").unwrap().is_none());
        assert!(o.entry("t").unwrap().is_none());
    }

    #[test]
    fn a_layout_2_index_whose_span_is_wrong_is_an_error_not_a_wrong_step() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("groups")).unwrap();
        fs::create_dir_all(d.path().join("index")).unwrap();
        fs::write(d.path().join("groups/s.json"), GROUP).unwrap();
        let at = GROUP.find(r#"{"title":"two"}"#).unwrap();
        fs::write(
            d.path().join("index/s.json"),
            format!(
                r#"{{"info":{{}},"latest_version_number":"2.0.0","versions":[["1.0.0",{},15],["2.0.0",{at},15],["3.0.0",{},99]]}}"#,
                at - 3,
                GROUP.len() - 10
            ),
        )
        .unwrap();
        let o = opened(
            d.path(),
            r#"{"uri":"u","alias":"a","layout":2,"steplib":{"format_version":"1"},"steps":1,"versions":2}"#,
        );
        let e = o.entry("s").unwrap().unwrap();
        assert_eq!(e.step("2.0.0").unwrap().unwrap()["title"], "two");
        assert!(matches!(e.step("1.0.0"), Err(Error::Format { .. })));
        assert!(matches!(e.step("3.0.0"), Err(Error::Format { .. })));
        assert!(o.entry("t").unwrap().is_none());
    }

    #[test]
    fn a_layout_2_object_keeps_its_step_yml_files_a_layout_3_object_its_spans() {
        let d = tempfile::tempdir().unwrap();
        for dir in ["groups", "index", "yml/s", "definitions"] {
            fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        fs::write(d.path().join("groups/s.json"), GROUP).unwrap();
        let one = GROUP.find(r#"{"title":"one"}"#).unwrap();
        let two = GROUP.find(r#"{"title":"two"}"#).unwrap();
        let versions = format!(r#"[["1.0.0",{one},15],["2.0.0",{two},15]]"#);
        // Layout 2: a file per version, and no `yml` spans in the index.
        fs::write(
            d.path().join("index/s.json"),
            format!(r#"{{"info":{{}},"latest_version_number":"2.0.0","versions":{versions}}}"#),
        )
        .unwrap();
        fs::write(d.path().join("yml/s/2.0.0.yml"), "title: two\n").unwrap();
        let meta = |layout: u32| {
            format!(
                r#"{{"uri":"u","alias":"a","layout":{layout},"steplib":{{"format_version":"1"}},"steps":1,"versions":2}}"#
            )
        };
        let o = opened(d.path(), &meta(2));
        assert!(
            o.entry("s")
                .unwrap()
                .unwrap()
                .definition("2.0.0")
                .unwrap()
                .is_none()
        );
        let def = o.definition("s", "2.0.0").unwrap();
        assert_eq!(def, Definition::File(d.path().join("yml/s/2.0.0.yml")));
        assert_eq!(def.read().unwrap(), b"title: two\n");
        // Layout 3: one file for the group, read at the index's spans; a span past its end is
        // an error, never another step's bytes.
        fs::write(
            d.path().join("definitions/s.yml"),
            "title: one\ntitle: two\n",
        )
        .unwrap();
        fs::write(
            d.path().join("index/s.json"),
            format!(
                r#"{{"info":{{}},"latest_version_number":"2.0.0","versions":{versions},"yml":[[0,11],[11,11]]}}"#
            ),
        )
        .unwrap();
        let o = opened(d.path(), &meta(3));
        assert_eq!(
            o.definition("s", "1.0.0").unwrap().read().unwrap(),
            b"title: one\n"
        );
        assert_eq!(
            o.definition("s", "2.0.0").unwrap().read().unwrap(),
            b"title: two\n"
        );
        assert!(matches!(
            o.definition("s", "3.0.0"),
            Err(Error::Format { .. })
        ));
        fs::write(
            d.path().join("index/s.json"),
            format!(
                r#"{{"info":{{}},"latest_version_number":"2.0.0","versions":{versions},"yml":[[0,11],[11,99]]}}"#
            ),
        )
        .unwrap();
        assert!(matches!(
            o.definition("s", "2.0.0").unwrap().read(),
            Err(Error::Format { .. })
        ));
        // An index with fewer spans than versions is a format error too.
        fs::write(
            d.path().join("index/s.json"),
            format!(
                r#"{{"info":{{}},"latest_version_number":"2.0.0","versions":{versions},"yml":[[0,11]]}}"#
            ),
        )
        .unwrap();
        assert!(matches!(
            o.definition("s", "2.0.0"),
            Err(Error::Format { .. })
        ));
    }
}
