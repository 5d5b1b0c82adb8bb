//! Which fields of the StepLib's YAML documents are strings, and a parse that gives every scalar
//! written in one of them its text.
//!
//! The old tool decodes `step.yml`, `step-info.yml` and `steplib.yml` into typed models, and its
//! YAML decoder sets a string field to the scalar *as written*: `title: 2048` is `"2048"`,
//! `version: 1.10` is `"1.10"` (not `1.1`), an unquoted all-digit `commit:` is its 40 digits. A
//! generic parse into JSON would have made those numbers (and lost `1.10`'s zero), so these
//! documents are parsed against a [`Shape`]: at a string field the scalar is read as a string
//! (the YAML parser hands over its text, never a re-formatted number); everywhere else (booleans,
//! numbers, `meta`, unknown fields) the value is what a generic parse gives. A null (`~`, `null`,
//! an empty value) in a string field leaves it absent, as the old tool leaves it empty and omits
//! it; in a list of strings or a map of strings it is `""`. A sequence or mapping where a string
//! is expected is [`SteplibParseError::NotAString`] naming the field.

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What a value of a document is.
#[derive(Debug)]
pub(crate) enum Shape {
    /// Anything, as a generic parse gives it.
    Any,
    /// A string: any scalar as its text. The name is the field's, for the error.
    Str(&'static str),
    /// A string that is a time (`published_at`): as [`Shape::Str`], and an unquoted YAML date
    /// (`2021-01-02`, `2021-01-02 10:20:30`) is written as the RFC 3339 time the old tool reads
    /// it as (midnight UTC for a date).
    Time(&'static str),
    /// A sequence of these.
    Seq(&'static Shape),
    /// A mapping with these fields; other fields are [`Shape::Any`].
    Fields(&'static [(&'static str, Shape)]),
    /// A mapping whose every value is this.
    Values(&'static Shape),
    /// An input or output: `KEY: value` (a string, a null kept as null) and `opts`.
    Env,
}

use Shape::{Any, Env, Fields, Seq, Str, Time, Values};

const TAGS: Shape = Seq(&Str("tags"));

/// The `KEY: value` of an input or output.
static ENV_VALUE: Shape = Str("the value of an input or output");

/// `opts` of an input or output (envman's options model).
static OPTS: Shape = Fields(&[
    ("title", Str("opts.title")),
    ("summary", Str("opts.summary")),
    ("description", Str("opts.description")),
    ("category", Str("opts.category")),
    ("value_options", Seq(&Str("opts.value_options"))),
]);

/// `step.yml` (the old tool's step model).
pub(crate) static STEP: Shape = Fields(&[
    ("title", Str("title")),
    ("summary", Str("summary")),
    ("description", Str("description")),
    ("website", Str("website")),
    ("source_code_url", Str("source_code_url")),
    ("support_url", Str("support_url")),
    ("published_at", Time("published_at")),
    (
        "source",
        Fields(&[("git", Str("source.git")), ("commit", Str("source.commit"))]),
    ),
    (
        "executables",
        Values(&Fields(&[
            ("storage_uri", Str("executables.storage_uri")),
            ("url", Str("executables.url")),
            ("hash", Str("executables.hash")),
        ])),
    ),
    ("asset_urls", Values(&Str("asset_urls"))),
    ("host_os_tags", TAGS),
    ("project_type_tags", TAGS),
    ("type_tags", TAGS),
    (
        "dependencies",
        Seq(&Fields(&[
            ("manager", Str("dependencies.manager")),
            ("name", Str("dependencies.name")),
        ])),
    ),
    (
        "toolkit",
        Fields(&[
            (
                "bash",
                Fields(&[("entry_file", Str("toolkit.bash.entry_file"))]),
            ),
            (
                "go",
                Fields(&[("package_name", Str("toolkit.go.package_name"))]),
            ),
            (
                "swift",
                Fields(&[
                    ("binary_location", Str("toolkit.swift.binary_location")),
                    ("executable_name", Str("toolkit.swift.executable_name")),
                ]),
            ),
        ]),
    ),
    (
        "deps",
        Fields(&[
            (
                "brew",
                Seq(&Fields(&[
                    ("name", Str("deps.brew.name")),
                    ("bin_name", Str("deps.brew.bin_name")),
                ])),
            ),
            (
                "apt_get",
                Seq(&Fields(&[
                    ("name", Str("deps.apt_get.name")),
                    ("bin_name", Str("deps.apt_get.bin_name")),
                ])),
            ),
            (
                "check_only",
                Seq(&Fields(&[("name", Str("deps.check_only.name"))])),
            ),
        ]),
    ),
    ("run_if", Str("run_if")),
    ("inputs", Seq(&Env)),
    ("outputs", Seq(&Env)),
]);

/// `step-info.yml` (the old tool's step group info model).
pub(crate) static STEP_INFO: Shape = Fields(&[
    ("maintainer", Str("maintainer")),
    ("removal_date", Str("removal_date")),
    ("deprecate_notes", Str("deprecate_notes")),
    ("asset_urls", Values(&Str("asset_urls"))),
]);

/// `steplib.yml` (the old tool's collection model).
pub(crate) static STEPLIB: Shape = Fields(&[
    ("format_version", Str("format_version")),
    ("steplib_source", Str("steplib_source")),
    ("assets_download_base_uri", Str("assets_download_base_uri")),
    (
        "download_locations",
        Seq(&Fields(&[
            ("type", Str("download_locations.type")),
            ("src", Str("download_locations.src")),
        ])),
    ),
]);

/// The seed that builds a value of `shape`; `failed` is set to the string field whose value was
/// a sequence or a mapping (the YAML error it causes is then reported as that).
pub(crate) struct Build<'a> {
    pub(crate) shape: &'static Shape,
    pub(crate) failed: &'a Cell<Option<&'static str>>,
}

impl<'de> DeserializeSeed<'de> for Build<'_> {
    /// `None`: a null in a string field (absent).
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        match self.shape {
            Any => Value::deserialize(d).map(Some),
            Str(field) | Time(field) => {
                let text = d.deserialize_option(OptText {
                    field,
                    failed: self.failed,
                })?;
                Ok(text.map(|t| match self.shape {
                    Time(_) => Value::String(yaml_time(&t).unwrap_or(t)),
                    _ => Value::String(t),
                }))
            }
            Seq(_) | Fields(_) | Values(_) | Env => d.deserialize_any(self).map(Some),
        }
    }
}

/// A string field's value: `None` for a null, else the scalar's text.
struct OptText<'a> {
    field: &'static str,
    failed: &'a Cell<Option<&'static str>>,
}

impl<'de> Visitor<'de> for OptText<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        String::deserialize(d).map(Some).inspect_err(|_| {
            // The YAML parser gives a string field every scalar's text: only a sequence or a
            // mapping fails here.
            self.failed.set(Some(self.field));
        })
    }
}

impl<'de> Visitor<'de> for Build<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    // A scalar where a mapping or sequence is expected is kept as it is (the checks after the
    // parse name the field).
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Seq(item) = self.shape else {
            return Value::deserialize(SeqAccessDeserializer::new(seq));
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Build {
            shape: item,
            failed: self.failed,
        })? {
            // A null in a list of strings is an empty string.
            out.push(v.unwrap_or_else(|| Value::String(String::new())));
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        match self.shape {
            Fields(fields) => {
                while let Some(k) = map.next_key::<String>()? {
                    let shape = fields
                        .iter()
                        .find(|(name, _)| *name == k)
                        .map_or(&Any, |(_, s)| s);
                    let v = map.next_value_seed(Build {
                        shape,
                        failed: self.failed,
                    })?;
                    match v {
                        Some(v) => out.insert(k, v),
                        // A null string field is absent (an earlier value of the key too).
                        None => out.remove(&k),
                    };
                }
            }
            Values(item) => {
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value_seed(Build {
                        shape: item,
                        failed: self.failed,
                    })?;
                    out.insert(k, v.unwrap_or_else(|| Value::String(String::new())));
                }
            }
            Env => {
                while let Some(k) = map.next_key::<String>()? {
                    let shape = if k == "opts" { &OPTS } else { &ENV_VALUE };
                    let v = map.next_value_seed(Build {
                        shape,
                        failed: self.failed,
                    })?;
                    // The value of `KEY: ~` is kept as null (the old tool reads it as "").
                    out.insert(k, v.unwrap_or(Value::Null));
                }
            }
            _ => return Value::deserialize(MapAccessDeserializer::new(map)),
        }
        Ok(Value::Object(out))
    }
}

/// An unquoted YAML date or time without a zone, as the old tool's decoder reads it into a
/// time: `YYYY-M-D` is midnight UTC, `YYYY-M-D HH:MM:SS[.frac]` that time in UTC; written as
/// RFC 3339. `None` for anything else (an RFC 3339 time is kept as written).
fn yaml_time(s: &str) -> Option<String> {
    let (date, time) = match s.split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !(digits(y, 4, 4) && digits(m, 1, 2) && digits(d, 1, 2)) {
        return None;
    }
    let date = jiff::civil::Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()?;
    let Some(time) = time else {
        return Some(format!("{date}T00:00:00Z"));
    };
    let t: jiff::civil::Time = time.trim().parse().ok()?;
    // RFC 3339 with the fraction's trailing zeros dropped, as the old tool writes a time.
    let frac = match t.subsec_nanosecond() {
        0 => String::new(),
        n => format!(".{n:09}").trim_end_matches('0').to_string(),
    };
    Some(format!(
        "{date}T{:02}:{:02}:{:02}{frac}Z",
        t.hour(),
        t.minute(),
        t.second()
    ))
}
