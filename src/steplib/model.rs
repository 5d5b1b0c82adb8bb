//! The StepLib formats we read (PRODUCT §4) and the files of a collection object.
//!
//! Step definitions are kept as JSON values so that unknown fields survive unchanged; only the
//! fields stepman acts on are read through typed accessors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of `download_locations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadLocation {
    /// `zip`, `git` or `tar.gz`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `zip`/`tar.gz`: the URL prefix (`src + id + "/" + version + "/step.zip"`); for
    /// `git`: `source/git` (the step's own `source.git`).
    pub src: String,
}

/// `steplib.yml` (and the top of `spec.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteplibMeta {
    /// `format_version` (a YAML number is read as its text).
    #[serde(default, deserialize_with = "scalar_string")]
    pub format_version: String,
    /// `steplib_source`.
    #[serde(default, deserialize_with = "scalar_string")]
    pub steplib_source: String,
    /// `assets_download_base_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets_download_base_uri: Option<String>,
    /// `download_locations`, tried in order.
    #[serde(default)]
    pub download_locations: Vec<DownloadLocation>,
    /// Every other field, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads a string, a number or a boolean as text (YAML users write `format_version: 1`).
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, found {other}"
        ))),
    }
}

/// A step.yml or step group that was left out of a collection, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// The file (relative to the StepLib) or step.
    pub path: String,
    /// Why.
    pub error: String,
}

/// `collection.json`, the root file of a collection object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The collection's URI as given to `setup`.
    pub uri: String,
    /// Its alias (the route of its names).
    pub alias: String,
    /// Its `steplib.yml`.
    pub steplib: SteplibMeta,
    /// For a local StepLib: its absolute root, against which relative download `src`s resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// For a git StepLib: the commit it was generated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// Number of step groups.
    pub steps: usize,
    /// Number of step versions.
    pub versions: usize,
    /// What was left out.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

/// A step group: `steps/<id>` of the spec, stored as `groups/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// `step-info.yml` plus `asset_urls`.
    #[serde(default)]
    pub info: Value,
    /// The highest version.
    pub latest_version_number: String,
    /// Every version's step definition.
    pub versions: Map<String, Value>,
}

/// Typed reads of a step definition.
pub mod step {
    use serde_json::Value;

    fn str_at<'a>(step: &'a Value, path: &[&str]) -> Option<&'a str> {
        let mut v = step;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    }

    /// `source.git`.
    pub fn source_git(step: &Value) -> Option<&str> {
        str_at(step, &["source", "git"])
    }

    /// `source.commit`.
    pub fn source_commit(step: &Value) -> Option<&str> {
        str_at(step, &["source", "commit"])
    }

    /// `executables.<platform>`: `(storage_uri, hash)`.
    pub fn executable<'a>(step: &'a Value, platform: &str) -> Option<(&'a str, &'a str)> {
        let e = step.get("executables")?.get(platform)?;
        Some((e.get("storage_uri")?.as_str()?, e.get("hash")?.as_str()?))
    }
}

/// Checks what stepman needs of a step.yml; the rest is kept as it is.
pub fn validate_step(step: &Value) -> Result<(), String> {
    let Some(map) = step.as_object() else {
        return Err("step.yml is not a mapping".into());
    };
    match map.get("title") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("title is not a string".into()),
        None => return Err("missing required field: title".into()),
    }
    if let Some(src) = map.get("source") {
        let Some(src) = src.as_object() else {
            return Err("source is not a mapping".into());
        };
        for k in ["git", "commit"] {
            if src.get(k).is_some_and(|v| !v.is_string()) {
                return Err(format!("source.{k} is not a string"));
            }
        }
    }
    if let Some(ex) = map.get("executables") {
        let Some(ex) = ex.as_object() else {
            return Err("executables is not a mapping".into());
        };
        for (platform, e) in ex {
            let ok = e.get("storage_uri").is_some_and(Value::is_string)
                && e.get("hash")
                    .and_then(Value::as_str)
                    .is_some_and(|h| h.starts_with("sha256-"));
            if !ok {
                return Err(format!(
                    "executables.{platform} needs storage_uri and a sha256-<hex> hash"
                ));
            }
        }
    }
    Ok(())
}
