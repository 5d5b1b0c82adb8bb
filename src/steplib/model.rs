//! The StepLib formats we read (README "StepLibs and activation") and the files of a collection object.
//!
//! Step definitions are kept as JSON values so that unknown fields survive unchanged; only the
//! fields stepman acts on are read through typed accessors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SteplibParseError;

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
    /// The collection object's layout (`store-format.md`, section 4a): `2` has an
    /// `index/<id>.json` beside each group; objects written before it have none (`1`).
    #[serde(default = "layout_1")]
    pub layout: u32,
    /// Number of step groups.
    pub steps: usize,
    /// Number of step versions.
    pub versions: usize,
    /// What was left out.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// For a StepLib read through its HTTP API: where, and its `meta.json` (its step groups
    /// are not in the object: their documents are fetched when a lookup needs them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSource>,
}

/// Where an API collection's documents come from (`store-format.md`, section 4f).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSource {
    /// The API's base URL: its documents are `<base>/v2/…`.
    pub base: String,
    /// `meta.json`'s `updated_at`.
    pub updated_at: String,
}

/// The layout of collection objects this version writes (`store-format.md` 4a): 3 keeps a
/// group's original step.yml files in one file, `definitions/<id>.yml`, where 2 had one file
/// per version.
pub const COLLECTION_LAYOUT: u32 = 3;

fn layout_1() -> u32 {
    1
}

/// A step group's lookup index, `index/<id>.json` (collection layout 2): what a lookup needs
/// without reading the group, and where each version's JSON lies in `groups/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupIndex {
    /// `step-info.yml` plus `asset_urls` (as in the group).
    #[serde(default)]
    pub info: Value,
    /// The highest version.
    pub latest_version_number: String,
    /// Every version, lowest first, with the byte offset and length of its step's JSON in the
    /// group file: `[version, offset, length]`.
    pub versions: Vec<(String, u64, u64)>,
    /// (Layout 3) where each version's original step.yml lies in `definitions/<id>.yml`, in
    /// the order of `versions`: `[offset, length]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yml: Vec<(u64, u64)>,
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

/// Largest YAML document (step.yml, step-info.yml, steplib.yml) read; real ones are a few KiB.
pub const MAX_YAML_BYTES: usize = 4 << 20;
/// Most values (scalars, sequences, mappings) one YAML document may expand to, aliases included.
pub const MAX_YAML_VALUES: usize = 100_000;
/// Most scalar bytes one YAML document may expand to, aliases included.
pub const MAX_YAML_SCALAR_BYTES: usize = 16 << 20;

/// Documents longer than this are walked for [`MAX_YAML_VALUES`] even without aliases (real
/// step.yml files are under 16 KiB).
const COUNT_ABOVE_BYTES: usize = 256 << 10;

/// Parses one YAML document into a JSON value, with bounded memory.
///
/// `serde_yaml_ng` caps alias *jumps* at 100 times the document's events, which still lets a
/// few KiB of anchors and aliases (an "alias bomb") expand to hundreds of millions of values.
/// A document that uses aliases is therefore first walked without building anything, counting
/// what it expands to, and refused past [`MAX_YAML_VALUES`] values or [`MAX_YAML_SCALAR_BYTES`]
/// scalar bytes; only then is it built.
pub fn parse_yaml(text: &str) -> Result<Value, SteplibParseError> {
    check_expansion(text)?;
    serde_yaml_ng::from_str::<Value>(text).map_err(yaml_error)
}

/// Refuses a document past [`MAX_YAML_BYTES`] or one that expands past the value limits.
fn check_expansion(text: &str) -> Result<(), SteplibParseError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(SteplibParseError::TooLarge {
            size: text.len(),
            limit: MAX_YAML_BYTES,
        });
    }
    // Only an alias (`*a`, `<<: *a`) of an anchor (`&a`) makes a document expand past its text:
    // without both characters, the values are bounded by the text and one pass is enough. (Most
    // real step.yml files have a `*` in their Markdown, few an `&`.) But a large text can hold
    // many values on its own (a flow sequence of `0,` is 2 bytes per value, ~100 in memory), so
    // one past [`COUNT_ABOVE_BYTES`] is counted too.
    if (text.contains('*') && text.contains('&')) || text.len() > COUNT_ABOVE_BYTES {
        let mut budget = yaml_budget::Budget::default();
        serde::de::DeserializeSeed::deserialize(
            yaml_budget::Count(&mut budget),
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(yaml_error)?;
    }
    Ok(())
}

/// Which StepLib document a text is, for [`parse_yaml_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// A `step.yml`.
    Step,
    /// A `step-info.yml`.
    StepInfo,
    /// A `steplib.yml`.
    Steplib,
}

/// [`parse_yaml`], except that every string field of the document (README, "StepLib YAML")
/// takes any scalar written in it as its text: `title: 2048` is `"2048"`, `version: 1.10` is
/// `"1.10"`, a null leaves the field out; the other values are what [`parse_yaml`] gives (see
/// `shape.rs`). A sequence or mapping in a string field is [`SteplibParseError::NotAString`].
pub fn parse_yaml_as(text: &str, doc: Doc) -> Result<Value, SteplibParseError> {
    let shape = match doc {
        Doc::Step => &super::shape::STEP,
        Doc::StepInfo => &super::shape::STEP_INFO,
        Doc::Steplib => &super::shape::STEPLIB,
    };
    check_expansion(text)?;
    let failed = std::cell::Cell::new(None);
    let built = serde::de::DeserializeSeed::deserialize(
        super::shape::Build {
            shape,
            failed: &failed,
        },
        serde_yaml_ng::Deserializer::from_str(text),
    );
    match (built, failed.get()) {
        (Ok(v), _) => Ok(v.unwrap_or(Value::Null)),
        (Err(_), Some(field)) => Err(SteplibParseError::NotAString(field)),
        (Err(e), None) => Err(yaml_error(e)),
    }
}

fn yaml_error(e: serde_yaml_ng::Error) -> SteplibParseError {
    SteplibParseError::Yaml {
        line: e.location().map(|l| l.line()),
        reason: e.to_string(),
    }
}

/// A visitor that walks a document as `serde_json::Value` would, building nothing, and fails
/// once the document expands past the limits.
mod yaml_budget {
    use std::fmt;

    use serde::de::{
        self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
    };

    use super::{MAX_YAML_SCALAR_BYTES, MAX_YAML_VALUES};

    #[derive(Default)]
    pub(super) struct Budget {
        values: usize,
        bytes: usize,
    }

    pub(super) struct Count<'a>(pub &'a mut Budget);

    impl Count<'_> {
        fn spend<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
            self.0.values += 1;
            self.0.bytes = self.0.bytes.saturating_add(bytes);
            if self.0.values > MAX_YAML_VALUES || self.0.bytes > MAX_YAML_SCALAR_BYTES {
                return Err(E::custom(format!(
                    "document expands past {MAX_YAML_VALUES} values or {MAX_YAML_SCALAR_BYTES} \
                     scalar bytes (aliases)"
                )));
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_i128<E: de::Error>(mut self, _: i128) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_u128<E: de::Error>(mut self, _: u128) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
            self.spend(s.len())
        }
        fn visit_bytes<E: de::Error>(mut self, b: &[u8]) -> Result<(), E> {
            self.spend(b.len())
        }
        fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
            self.spend(0)
        }
        fn visit_some<D: de::Deserializer<'de>>(mut self, d: D) -> Result<(), D::Error> {
            self.spend(0)?;
            Count(self.0).deserialize(d)
        }
        fn visit_newtype_struct<D: de::Deserializer<'de>>(mut self, d: D) -> Result<(), D::Error> {
            self.spend(0)?;
            Count(self.0).deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            self.spend(0)?;
            while seq.next_element_seed(Count(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            self.spend(0)?;
            while map.next_key_seed(Count(&mut *self.0))?.is_some() {
                map.next_value_seed(Count(&mut *self.0))?;
            }
            Ok(())
        }
        fn visit_enum<A: EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
            self.spend(0)?;
            let ((), variant) = data.variant_seed(Count(&mut *self.0))?;
            variant.newtype_variant_seed(Count(self.0))
        }
    }
}

/// Checks what stepman needs of a step.yml; the rest is kept as it is.
pub fn validate_step(step: &Value) -> Result<(), SteplibParseError> {
    use SteplibParseError as E;
    let Some(map) = step.as_object() else {
        return Err(E::FieldNotAMapping("step.yml"));
    };
    match map.get("title") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(E::NotAString("title")),
        None => return Err(E::MissingField("title")),
    }
    if let Some(src) = map.get("source") {
        let Some(src) = src.as_object() else {
            return Err(E::FieldNotAMapping("source"));
        };
        for (k, field) in [("git", "source.git"), ("commit", "source.commit")] {
            if src.get(k).is_some_and(|v| !v.is_string()) {
                return Err(E::NotAString(field));
            }
        }
    }
    if let Some(ex) = map.get("executables") {
        let Some(ex) = ex.as_object() else {
            return Err(E::FieldNotAMapping("executables"));
        };
        for (platform, e) in ex {
            let ok = e.get("storage_uri").is_some_and(Value::is_string)
                && e.get("hash")
                    .and_then(Value::as_str)
                    .is_some_and(|h| h.starts_with("sha256-"));
            if !ok {
                return Err(E::BadExecutable {
                    platform: platform.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::generate;
    use crate::error::SteplibParseError;

    fn step(yml: &str) -> Result<Value, SteplibParseError> {
        generate::parse_step_yml(yml.as_bytes())
    }

    fn info(yml: &str) -> Value {
        generate::parse_step_info(yml).expect("step-info.yml parses")
    }

    fn steplib(yml: &str) -> super::SteplibMeta {
        generate::parse_steplib_yml(yml).expect("steplib.yml parses")
    }

    #[test]
    fn every_string_field_of_a_step_takes_any_scalar_as_its_text() {
        let v = step(
            "title: 2048\nsummary: yes\ndescription: 1.10\nwebsite: 0x1F\nsource_code_url: .inf\n\
             support_url: 1_000\nrun_if: true\n\
             source:\n  git: 0123\n  commit: 2222222222222222222222222222222222222222\n\
             host_os_tags: [1.0, no, 007]\nproject_type_tags: [1e3]\ntype_tags: [-0]\n\
             asset_urls: {icon.svg: 12}\n\
             toolkit: {bash: {entry_file: 1.50}, go: {package_name: 10}}\n\
             deps: {brew: [{name: 1.0, bin_name: 2}], apt_get: [{name: on, bin_name: 0.0}]}\n\
             dependencies: [{manager: 1, name: 1.10}]\n\
             executables: {linux-amd64: {storage_uri: 2.50, hash: sha256-00}}\n",
        )
        .expect("a step.yml of scalars parses");
        let want = json!({
            "title": "2048", "summary": "yes", "description": "1.10", "website": "0x1F",
            "source_code_url": ".inf", "support_url": "1_000", "run_if": "true",
            "source": {"git": "0123", "commit": "2222222222222222222222222222222222222222"},
            "host_os_tags": ["1.0", "no", "007"], "project_type_tags": ["1e3"], "type_tags": ["-0"],
            "asset_urls": {"icon.svg": "12"},
            "toolkit": {"bash": {"entry_file": "1.50"}, "go": {"package_name": "10"}},
            "deps": {"brew": [{"name": "1.0", "bin_name": "2"}],
                     "apt_get": [{"name": "on", "bin_name": "0.0"}]},
            "dependencies": [{"manager": "1", "name": "1.10"}],
            "executables": {"linux-amd64": {"storage_uri": "2.50", "hash": "sha256-00"}},
        });
        assert_eq!(v, want);
    }

    #[test]
    fn an_all_digit_commit_is_its_text() {
        let v =
            step("title: t\nsource:\n  git: https://x/y.git\n  commit: 0123\n").expect("parses");
        assert_eq!(super::step::source_commit(&v), Some("0123"));
        let v = step("title: t\nsource:\n  commit: 2222222222222222222222222222222222222222\n")
            .expect("parses");
        assert_eq!(
            super::step::source_commit(&v),
            Some("2222222222222222222222222222222222222222")
        );
    }

    #[test]
    fn input_values_and_opts_string_fields_take_their_text() {
        let v = step(
            "title: t\ninputs:\n- version: 1.10\n  opts:\n    title: 2048\n    summary: 1.0\n    \
             description: 3\n    category: 4.5\n    value_options: [1.10, 2.0, yes]\n    \
             is_required: true\n- flag: true\n- none: ~\n- octal: 0123\n\
             outputs:\n- OUT: 1e3\n  opts: {title: 10}\n",
        )
        .expect("parses");
        assert_eq!(
            v["inputs"],
            json!([
                {"version": "1.10", "opts": {"title": "2048", "summary": "1.0", "description": "3",
                 "category": "4.5", "value_options": ["1.10", "2.0", "yes"], "is_required": true}},
                {"flag": "true"},
                {"none": null},
                {"octal": "0123"},
            ])
        );
        assert_eq!(
            v["outputs"],
            json!([{"OUT": "1e3", "opts": {"title": "10"}}])
        );
    }

    #[test]
    fn fields_that_are_not_strings_keep_their_yaml_type() {
        let v = step(
            "title: t\nis_always_run: true\nis_skippable: false\ntimeout: 10\nno_output_timeout: 5\n\
             meta: {a: 1.10, b: yes}\nunknown: 1.10\n",
        )
        .expect("parses");
        assert_eq!(v["is_always_run"], json!(true));
        assert_eq!(v["timeout"], json!(10));
        assert_eq!(v["meta"], json!({"a": 1.1, "b": "yes"}));
        assert_eq!(v["unknown"], json!(1.1));
    }

    #[test]
    fn a_null_string_field_is_absent_and_a_null_list_entry_empty() {
        let v = step(
            "title: t\nsummary: ~\ndescription:\nwebsite: null\nsource:\n  git: ~\n  commit:\n\
             host_os_tags: [~, a]\nasset_urls: {x: ~}\n",
        )
        .expect("parses");
        let m = v.as_object().expect("a mapping");
        for k in ["summary", "description", "website"] {
            assert!(!m.contains_key(k), "{k} in {v}");
        }
        assert_eq!(v["source"], json!({}));
        assert_eq!(super::step::source_commit(&v), None);
        assert_eq!(v["host_os_tags"], json!(["", "a"]));
        assert_eq!(v["asset_urls"], json!({"x": ""}));
        // A quoted empty string stays one; a null title is a missing title.
        assert_eq!(step("title: ''\n").expect("parses")["title"], json!(""));
        assert_eq!(
            step("title: ~\n"),
            Err(SteplibParseError::MissingField("title"))
        );
    }

    #[test]
    fn an_unquoted_date_in_published_at_is_midnight_utc() {
        let at = |s: &str| {
            step(&format!("title: t\npublished_at: {s}\n")).expect("parses")["published_at"].clone()
        };
        assert_eq!(at("2021-01-02"), json!("2021-01-02T00:00:00Z"));
        assert_eq!(at("2021-1-2"), json!("2021-01-02T00:00:00Z"));
        assert_eq!(at("2021-01-02 10:20:30.5"), json!("2021-01-02T10:20:30.5Z"));
        assert_eq!(
            at("2016-04-07T12:05:12.148364232+02:00"),
            json!("2016-04-07T12:05:12.148364232+02:00")
        );
        assert_eq!(at("'not a time'"), json!("not a time"));
        assert!(
            !step("title: t\npublished_at: ~\n")
                .expect("parses")
                .as_object()
                .expect("map")
                .contains_key("published_at")
        );
    }

    #[test]
    fn a_mapping_where_a_string_is_expected_is_the_same_clear_error() {
        for (yml, field) in [
            ("title: {a: 1}\n", "title"),
            ("title: [a]\n", "title"),
            ("title: t\nsource: {commit: {a: 1}}\n", "source.commit"),
            ("title: t\nsource: {git: [x]}\n", "source.git"),
            ("title: t\nsummary: {a: 1}\n", "summary"),
            (
                "title: t\ninputs: [{opts: {title: [x]}, K: v}]\n",
                "opts.title",
            ),
        ] {
            assert_eq!(
                step(yml),
                Err(SteplibParseError::NotAString(field)),
                "{yml}"
            );
        }
        // A field that must be a mapping still says so.
        assert_eq!(
            step("title: t\nsource: 5\n"),
            Err(SteplibParseError::FieldNotAMapping("source"))
        );
    }

    #[test]
    fn step_info_and_steplib_fields_take_any_scalar_as_text() {
        assert_eq!(
            info("maintainer: 1.10\nremoval_date: 2024-01-02\ndeprecate_notes: no\nother: 1.10\n"),
            json!({"maintainer": "1.10", "removal_date": "2024-01-02", "deprecate_notes": "no",
                   "other": 1.1})
        );
        let m = steplib(
            "format_version: 1.10\nsteplib_source: 0123\nassets_download_base_uri: 5\n\
             download_locations:\n- type: zip\n  src: 1.0\n",
        );
        assert_eq!(m.format_version, "1.10");
        assert_eq!(m.steplib_source, "0123");
        assert_eq!(m.assets_download_base_uri.as_deref(), Some("5"));
        assert_eq!(m.download_locations[0].src, "1.0");
    }

    #[test]
    fn anchors_and_aliases_still_work_in_string_fields() {
        let v = step("title: &t 1.10\nsummary: *t\n").expect("parses");
        assert_eq!(v["summary"], json!("1.10"));
    }
}
