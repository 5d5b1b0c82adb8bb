//! Building a collection object from a StepLib checkout or a `spec.json`.
//!
//! The object holds `collection.json`, one `groups/<id>.json` per step group (the spec's
//! `steps.<id>`) and every version's original step.yml as `yml/<id>/<version>.yml`. Step files are parsed
//! on all cores a batch of groups at a time, so memory stays bounded by a batch, not by the
//! StepLib's size. One invalid step.yml (or group) is reported in `collection.json`'s `skipped`
//! and left out; it does not fail the whole StepLib.

use std::fs;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{Map, Value};

use super::checkout::{Checkout, EntryKind, Refusal};
use super::model::{
    CollectionMeta, Group, MAX_YAML_BYTES, Skipped, SteplibMeta, parse_yaml, validate_step,
};
use super::{Collection, Source, version};
use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::hash::ObjectId;
use crate::ingest::TreeWriter;
use crate::layout::Name;
use crate::store::{Imported, Store};

/// Groups parsed in parallel before their files are written.
const BATCH: usize = 32;
/// Largest `spec.json` accepted over HTTP.
const MAX_SPEC_BYTES: u64 = 512 << 20;

/// Sets up (or, with `force`, regenerates) collection `c`; concurrent callers for the same
/// collection wait for the first and share its result.
pub fn setup(store: &Store, c: &Collection, force: bool, net: &NetConfig) -> Result<Imported> {
    let net = &NetConfig {
        credential: c.credential.clone(),
        ..net.clone()
    };
    store.fill(&c.name(), force, || {
        let tmp = store.temp_dir("steplib", "set up a collection")?;
        let root = tmp.path().join("tree");
        let mut w = store.tree_writer(&root, &c.uri)?;
        match &c.source {
            Source::Dir(dir) => from_dir(dir, c, None, &mut w)?,
            Source::Git(url) => {
                let clone = tmp.path().join("clone");
                let head = fetch::git_clone(
                    url,
                    None,
                    None,
                    &clone,
                    &format!("collection {}", c.uri),
                    net,
                )?;
                from_dir(&clone, c, Some(head), &mut w)?;
            }
            Source::SpecUrl(url) => {
                let file = tmp.path().join("spec.json");
                fetch::download(
                    url,
                    None,
                    &file,
                    MAX_SPEC_BYTES,
                    &format!("collection {}", c.uri),
                    net,
                )?;
                from_spec_file(&file, c, &mut w)?;
            }
        }
        let (id, _) = w.finish()?;
        store.commit(&tmp, &root, &id, Some(&c.name()))?;
        Ok(id)
    })
}

fn steplib_err(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Steplib {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Why a YAML file of a checkout was not used: not there, or refused (with why).
enum YamlError {
    NotFound,
    Bad(String),
}

/// Reads and parses `rel` of the checkout, bounded by [`MAX_YAML_BYTES`] before it is read.
fn read_yaml(co: &Checkout, rel: &str) -> std::result::Result<Value, YamlError> {
    let raw = read_bounded(co, rel)?;
    let text = std::str::from_utf8(&raw).map_err(|_| YamlError::Bad("not UTF-8".into()))?;
    parse_yaml(text).map_err(YamlError::Bad)
}

/// The bytes of `rel` of the checkout: a regular file in the tree, of at most [`MAX_YAML_BYTES`].
fn read_bounded(co: &Checkout, rel: &str) -> std::result::Result<Vec<u8>, YamlError> {
    co.read(rel, MAX_YAML_BYTES as u64).map_err(|e| match e {
        Refusal::NotFound => YamlError::NotFound,
        e => YamlError::Bad(e.to_string()),
    })
}

/// A step.yml's bytes as setup reads them: UTF-8, one YAML document, [`validate_step`].
pub(crate) fn parse_step_yml(raw: &[u8]) -> std::result::Result<Value, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())?;
    let v = parse_yaml(text)?;
    validate_step(&v)?;
    Ok(v)
}

/// A parsed `step-info.yml`: a mapping (an empty file is an empty one).
pub(crate) fn step_info(v: Value) -> std::result::Result<Value, String> {
    match v {
        v @ Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err("not a mapping".into()),
    }
}

/// A parsed `steplib.yml`, with its required fields.
pub(crate) fn steplib_meta(v: Value) -> std::result::Result<SteplibMeta, String> {
    let meta: SteplibMeta = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if meta.format_version.is_empty() || meta.steplib_source.is_empty() {
        return Err(
            "missing required field: format_version and steplib_source are required".into(),
        );
    }
    Ok(meta)
}

struct GroupData {
    id: String,
    info: Value,
    versions: Vec<(String, Vec<u8>, Value)>,
    skipped: Vec<Skipped>,
}

fn valid_component(s: &str) -> bool {
    Name::new("r", s, "v").is_ok() && !s.starts_with('_')
}

fn load_group(
    co: &Checkout,
    id: &str,
    assets_base: Option<&str>,
) -> std::result::Result<GroupData, Skipped> {
    let rel = |p: &str| format!("steps/{id}/{p}");
    let mut skipped = Vec::new();
    let mut info = match read_yaml(co, &rel("step-info.yml"))
        .and_then(|v| step_info(v).map_err(YamlError::Bad))
    {
        Ok(v) => v,
        Err(YamlError::NotFound) => Value::Object(Map::new()),
        Err(YamlError::Bad(e)) => {
            return Err(Skipped {
                path: rel("step-info.yml"),
                error: e,
            });
        }
    };
    let entries = co.list(&rel("")).map_err(|e| Skipped {
        path: format!("steps/{id}"),
        error: e.to_string(),
    })?;
    let mut versions = Vec::new();
    let mut assets = Vec::new();
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
            Err(YamlError::Bad(error)) => {
                skipped.push(Skipped {
                    path: rel(&yml),
                    error,
                });
                continue;
            }
        };
        if !valid_component(&name) {
            skipped.push(Skipped {
                path: rel(&name),
                error: "invalid version name".into(),
            });
            continue;
        }
        match parse_step_yml(&raw) {
            Ok(v) => versions.push((name, raw, v)),
            Err(err) => skipped.push(Skipped {
                path: rel(&format!("{name}/step.yml")),
                error: err,
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
    let mut versions = Map::new();
    for (ver, raw, value) in g.versions {
        w.add_file(
            &format!("yml/{}/{ver}.yml", g.id),
            false,
            Some(raw.len() as u64),
            raw.as_slice(),
        )?;
        versions.insert(ver, value);
    }
    meta.steps += 1;
    meta.versions += versions.len();
    let group = Group {
        info: g.info,
        latest_version_number: latest,
        versions,
    };
    let bytes = serde_json::to_vec(&group).map_err(|e| steplib_err(&g.id, e.to_string()))?;
    w.add_file(
        &format!("groups/{}.json", g.id),
        false,
        Some(bytes.len() as u64),
        bytes.as_slice(),
    )
}

fn finish_meta(w: &mut TreeWriter, mut meta: CollectionMeta) -> Result<()> {
    meta.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes =
        serde_json::to_vec_pretty(&meta).map_err(|e| steplib_err(&meta.uri, e.to_string()))?;
    w.add_file(
        "collection.json",
        false,
        Some(bytes.len() as u64),
        bytes.as_slice(),
    )
}

/// Generates from a StepLib checkout (`steplib.yml`, `steps/<id>/<version>/step.yml`, …).
pub(crate) fn from_dir(
    dir: &Path,
    c: &Collection,
    commit: Option<String>,
    w: &mut TreeWriter,
) -> Result<()> {
    let co = Checkout::new(dir);
    let steplib: SteplibMeta = match read_yaml(&co, "steplib.yml") {
        Ok(v) => steplib_meta(v).map_err(|e| steplib_err(co.display("steplib.yml"), e))?,
        Err(e) => {
            let e = match e {
                YamlError::NotFound => Refusal::NotFound.to_string(),
                YamlError::Bad(e) => e,
            };
            return Err(steplib_err(
                format!("collection {}", c.uri),
                format!("{}: {e}", co.display("steplib.yml")),
            ));
        }
    };
    let entries = co.list("steps").map_err(|e| {
        steplib_err(
            format!("collection {}", c.uri),
            format!("{}: {e}", co.display("steps")),
        )
    })?;
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
        uri: c.uri.clone(),
        alias: c.alias.clone(),
        root: matches!(c.source, Source::Dir(_)).then(|| dir.display().to_string()),
        source_commit: commit,
        steplib,
        steps: 0,
        versions: 0,
        skipped,
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
    for chunk in ids.chunks(BATCH) {
        let groups: Vec<_> = chunk
            .par_iter()
            .map(|id| load_group(&co, id, assets_base.as_deref()))
            .collect();
        for g in groups {
            match g {
                Ok(g) => write_group(w, g, &mut meta)?,
                Err(s) => meta.skipped.push(s),
            }
        }
    }
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
        uri: c.uri.clone(),
        alias: c.alias.clone(),
        root: None,
        source_commit: None,
        steplib: SteplibMeta::default(),
        steps: 0,
        versions: 0,
        skipped: Vec::new(),
    };
    let mut failure: Option<Error> = None;
    let mut head = Map::new();
    let mut saw_steps = false;
    let visitor = spec_stream::SpecVisitor {
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
        let mut de = serde_json::Deserializer::from_reader(r);
        de.deserialize_map(visitor).and_then(|()| de.end())
    };
    if let Some(e) = failure {
        return Err(e);
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
            if !valid_component(&ver) {
                g.skipped.push(Skipped {
                    path: format!("steps/{id}/{ver}"),
                    error: "invalid version name".into(),
                });
                continue;
            }
            if let Err(e) = validate_step(&step) {
                g.skipped.push(Skipped {
                    path: format!("steps/{id}/{ver}"),
                    error: e,
                });
                continue;
            }
            let raw =
                serde_json::to_vec_pretty(&step).map_err(|e| steplib_err(&id, e.to_string()))?;
            g.versions.push((ver, raw, step));
        }
    }
    g.versions
        .sort_by(|a, b| version::Version::parse(&a.0).cmp(&version::Version::parse(&b.0)));
    write_group(w, g, meta)
}

/// A serde visitor over the top level of a spec.json that hands each `steps` entry to a callback
/// as soon as it is parsed.
mod spec_stream {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
    use serde_json::Value;

    pub(super) struct SpecVisitor<'a> {
        pub on_head: &'a mut dyn FnMut(String, Value),
        pub on_group: &'a mut dyn FnMut(String, Value) -> Result<(), String>,
    }

    impl<'de> Visitor<'de> for SpecVisitor<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a spec.json object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "steps" {
                    map.next_value_seed(Steps {
                        on_group: &mut *self.on_group,
                    })?;
                } else {
                    let v: Value = map.next_value()?;
                    (self.on_head)(key, v);
                }
            }
            Ok(())
        }
    }

    struct Steps<'a> {
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
            while let Some(id) = map.next_key::<String>()? {
                let group: Value = map.next_value()?;
                (self.on_group)(id, group).map_err(de::Error::custom)?;
            }
            Ok(())
        }
    }
}

/// The object id of a collection (for tests and tools).
pub fn current(store: &Store, c: &Collection) -> Result<Option<ObjectId>> {
    store.lookup(&c.name())
}
