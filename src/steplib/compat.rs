//! The old tool's shape of a step definition and of a group's info, as its `step-info` prints
//! them: the old tool parses every step.yml into Go structs and fills in defaults
//! (`StepModel.FillMissingDefaults`, and envman's `FillMissingDefaults` for each input and
//! output), so a field a step.yml leaves out is printed with its default value.
//!
//! Two ways to the same text: [`fill_missing_defaults`] on a parsed definition, and
//! [`old_shape_json`] on the JSON text a collection stores, which parses only the maps the
//! defaults go into (the step, its inputs and outputs, their `opts`) and copies every other value
//! as written. On the text serde_json writes (what `setup` stores) both print the same bytes;
//! the tests and the `step_shape` fuzz target hold them to it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Step fields the old tool sets when missing, and their values (`no_output_timeout` is left
/// as it is there too: unset and `0` mean different things).
fn step_defaults() -> [(&'static str, Value); 11] {
    let s = || Value::String(String::new());
    [
        ("title", s()),
        ("description", s()),
        ("summary", s()),
        ("website", s()),
        ("source_code_url", s()),
        ("support_url", s()),
        ("is_requires_admin_user", Value::Bool(false)),
        ("is_always_run", Value::Bool(false)),
        ("is_skippable", Value::Bool(false)),
        ("run_if", s()),
        ("timeout", Value::from(0)),
    ]
}

/// Option fields (`opts`) of an input or output the old tool sets when missing.
fn opts_defaults() -> [(&'static str, Value); 11] {
    let s = || Value::String(String::new());
    [
        ("title", s()),
        ("description", s()),
        ("summary", s()),
        ("category", s()),
        ("is_required", Value::Bool(false)),
        ("is_expand", Value::Bool(true)),
        ("is_sensitive", Value::Bool(false)),
        ("is_dont_change_value", Value::Bool(false)),
        ("is_template", Value::Bool(false)),
        ("skip_if_empty", Value::Bool(false)),
        ("unset", Value::Bool(false)),
    ]
}

/// Sets each of `defaults` in `m` where it is missing or null. One pass over `m`'s keys finds
/// what is there (a step's or an input's map is small: comparing names is cheaper than hashing
/// each default), then the missing ones are appended, in `defaults`' order.
fn fill<const N: usize>(m: &mut Map<String, Value>, defaults: [(&'static str, Value); N]) {
    let mut present = [false; N];
    for (k, v) in m.iter_mut() {
        if let Some(i) = defaults.iter().position(|(d, _)| *d == k.as_str()) {
            present[i] = true;
            if v.is_null() {
                *v = defaults[i].1.clone();
            }
        }
    }
    let missing: Vec<(String, Value)> = defaults
        .into_iter()
        .zip(present)
        .filter(|(_, there)| !there)
        .map(|((k, v), _)| (k.to_string(), v))
        .collect();
    m.extend(missing);
}

/// Whether the old tool's `omitempty` leaves `v` out: an empty list or map.
fn omitted(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Fills in the defaults the old tool gives a step definition (a JSON object; anything else
/// is left as it is). Fields the old tool does not know are kept.
pub fn fill_missing_defaults(step: &mut Value) {
    let Some(m) = step.as_object_mut() else {
        return;
    };
    fill(m, step_defaults());
    for list in ["inputs", "outputs"] {
        let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            // The env's value: an empty one (`KEY:` in YAML) is the empty string.
            for (k, v) in item.iter_mut() {
                if k != "opts" && v.is_null() {
                    *v = Value::String(String::new());
                }
            }
            let opts = item
                .entry("opts")
                .or_insert_with(|| Value::Object(Map::new()));
            if opts.is_null() {
                *opts = Value::Object(Map::new());
            }
            if let Some(o) = opts.as_object_mut() {
                fill(o, opts_defaults());
                o.retain(|k, v| !(matches!(k.as_str(), "value_options" | "meta") && omitted(v)));
            }
        }
    }
}

/// A group's info (`step-info.yml` plus `asset_urls`) as the old tool keeps it: its four
/// fields, the empty ones left out; and, beyond the old shape, the `commit` a git step's
/// reference resolved to.
pub fn group_info(info: &Value) -> Value {
    let mut out = Map::new();
    for k in [
        "removal_date",
        "deprecate_notes",
        "asset_urls",
        "maintainer",
        "commit",
    ] {
        match info.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) if omitted(v) => {}
            Some(v) => {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The step definition stored as the JSON text `step`, in the old tool's shape
/// ([`fill_missing_defaults`]), with the group's `asset_urls` set on it as `step-info` does: the
/// same text as parsing it, filling it in and printing it, from one pass over the text that
/// builds no tree of what the defaults do not touch. Anything but an object is printed as it is.
/// Invalid JSON is an error. A number beyond an f64's range, valid JSON grammar that a
/// `serde_json::Value` refuses, is copied as written like every other value (`setup` never
/// stores one: it prints what serde_json parsed).
pub fn old_shape_json(step: &str, asset_urls: Option<&Value>) -> serde_json::Result<String> {
    serde_json::to_string(&Shaped::of(step, asset_urls)?)
}

/// [`old_shape_json`] before it is printed (as a field of a larger document, or alone).
pub(crate) struct Shaped<'a>(Out<'a>);

impl<'a> Shaped<'a> {
    pub(crate) fn of(step: &'a str, asset_urls: Option<&'a Value>) -> serde_json::Result<Self> {
        let Doc::Object(top) = serde_json::from_str::<Doc<'a>>(step)? else {
            return serde_json::from_str::<&RawValue>(step).map(|r| Shaped(Out::Raw(r)));
        };
        let mut out = filled(top, &step_defaults());
        if let Some(urls) = asset_urls {
            let urls = Out::Value(Cow::Borrowed(urls));
            match out.iter_mut().find(|(k, _)| k == "asset_urls") {
                Some((_, v)) => *v = urls,
                None => out.push((Cow::Borrowed("asset_urls"), urls)),
            }
        }
        Ok(Shaped(Out::Map(out)))
    }
}

impl Serialize for Shaped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A value of [`Shaped`]: copied as written, set, or a map or list of those.
enum Out<'a> {
    Raw(&'a RawValue),
    Value(Cow<'a, Value>),
    Map(Vec<(Cow<'a, str>, Out<'a>)>),
    List(Vec<Out<'a>>),
}

impl Out<'_> {
    /// Whether this is `null` (as written, or set).
    fn is_null(&self) -> bool {
        match self {
            Out::Raw(r) => r.get().trim() == "null",
            Out::Value(v) => v.is_null(),
            _ => false,
        }
    }

    /// [`omitted`]: an empty list or map, or null.
    fn is_omitted(&self) -> bool {
        match self {
            Out::Raw(r) => {
                let t = r.get().trim();
                let empty = |open: char, close: char| {
                    t.strip_prefix(open)
                        .and_then(|r| r.strip_suffix(close))
                        .is_some_and(|r| r.trim().is_empty())
                };
                t == "null" || empty('[', ']') || empty('{', '}')
            }
            Out::Value(v) => omitted(v),
            Out::Map(m) => m.is_empty(),
            Out::List(l) => l.is_empty(),
        }
    }
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Raw(r) => r.serialize(s),
            Out::Value(v) => v.serialize(s),
            Out::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Out::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
        }
    }
}

/// Where in a step definition a value is, which decides how much of it is parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// The definition itself: its `inputs` and `outputs` are [`At::Items`], the rest as written.
    Step,
    /// An `inputs` or `outputs` list: its maps are [`At::Item`].
    Items,
    /// An input or output: its `opts` are [`At::Opts`], the rest as written.
    Item,
    /// An input's or output's `opts`: as written.
    Opts,
}

/// A map's entries, in order; a repeated key keeps its first place and its last value, as a
/// parsed map does.
type Entries<'a> = Vec<(Cow<'a, str>, Out<'a>)>;

/// A document of [`Shaped::of`]: the step's entries, or something else (printed as written).
enum Doc<'a> {
    Object(Entries<'a>),
    Other,
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Doc<'de>, A::Error> {
                entries_of(m, At::Step).map(Doc::Object)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Doc<'de>, A::Error> {
                while s.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Doc::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Doc<'de>, E> {
                Ok(Doc::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The entries of the map `m` at `at`, each value read as [`Part`] says.
fn entries_of<'de, A: MapAccess<'de>>(mut m: A, at: At) -> Result<Entries<'de>, A::Error> {
    let mut out: Entries<'de> = Vec::new();
    while let Some(Key(k)) = m.next_key()? {
        let inner = match (at, k.as_ref()) {
            (At::Step, "inputs" | "outputs") => Some(At::Items),
            (At::Item, "opts") => Some(At::Opts),
            _ => None,
        };
        let v = match inner {
            Some(at) => m.next_value_seed(Part(at))?,
            None => Out::Raw(m.next_value()?),
        };
        match out.iter_mut().find(|(o, _)| *o == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

/// A value at `At::Items`, `At::Item` or `At::Opts`: the map or list the defaults go into,
/// parsed into entries or elements; anything else parsed as a value (rare: a definition the
/// old tool would have refused).
struct Part(At);

impl<'de> de::DeserializeSeed<'de> for Part {
    type Value = Out<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Out<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Part {
    type Value = Out<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Out<'de>, A::Error> {
        match self.0 {
            At::Item | At::Opts => entries_of(m, self.0).map(Out::Map),
            At::Step | At::Items => {
                Value::deserialize(de::value::MapAccessDeserializer::new(m)).map(owned)
            }
        }
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Out<'de>, A::Error> {
        if self.0 != At::Items {
            return Value::deserialize(de::value::SeqAccessDeserializer::new(s)).map(owned);
        }
        let mut out = Vec::new();
        while let Some(item) = s.next_element_seed(Part(At::Item))? {
            out.push(item);
        }
        Ok(Out::List(out))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Out<'de>, E> {
        Ok(owned(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Out<'de>, E> {
        Ok(owned(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Out<'de>, E> {
        Ok(owned(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Out<'de>, E> {
        Ok(owned(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Out<'de>, E> {
        Ok(owned(Value::String(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Out<'de>, E> {
        Ok(owned(Value::Null))
    }
}

fn owned<'a>(v: Value) -> Out<'a> {
    Out::Value(Cow::Owned(v))
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// [`fill`] on entries: each of `defaults` set where it is missing or null (appended in
/// `defaults`' order when missing); every other entry goes through `other`, which may drop it
/// (`None`).
fn fill_entries<'a, const N: usize>(
    m: Entries<'a>,
    defaults: &[(&'static str, Value); N],
    mut other: impl FnMut(&str, Out<'a>) -> Option<Out<'a>>,
) -> Entries<'a> {
    let mut present = [false; N];
    let mut out = Vec::with_capacity(m.len() + N);
    for (k, v) in m {
        let v = match defaults.iter().position(|(d, _)| *d == k) {
            Some(i) => {
                present[i] = true;
                if v.is_null() {
                    owned(defaults[i].1.clone())
                } else {
                    v
                }
            }
            None => match other(&k, v) {
                Some(v) => v,
                None => continue,
            },
        };
        out.push((k, v));
    }
    for ((k, v), there) in defaults.iter().zip(present) {
        if !there {
            out.push((Cow::Borrowed(*k), owned(v.clone())));
        }
    }
    out
}

/// The step's entries as [`fill_missing_defaults`] leaves them: `defaults` filled in, and its
/// `inputs` and `outputs` (any list) item by item.
fn filled<'a, const N: usize>(
    m: Entries<'a>,
    defaults: &[(&'static str, Value); N],
) -> Entries<'a> {
    fill_entries(m, defaults, |_, v| {
        Some(match v {
            Out::List(items) => Out::List(items.into_iter().map(item).collect()),
            v => v,
        })
    })
}

/// An input or output as [`fill_missing_defaults`] leaves it.
fn item(v: Out<'_>) -> Out<'_> {
    let Out::Map(m) = v else {
        return v;
    };
    let mut out: Entries<'_> = Vec::with_capacity(m.len() + 1);
    let mut has_opts = false;
    for (k, v) in m {
        let v = if k == "opts" {
            has_opts = true;
            match v {
                Out::Map(o) => opts(o),
                v if v.is_null() => opts(Vec::new()),
                v => v,
            }
        } else if v.is_null() {
            owned(Value::String(String::new()))
        } else {
            v
        };
        out.push((k, v));
    }
    if !has_opts {
        out.push((Cow::Borrowed("opts"), opts(Vec::new())));
    }
    Out::Map(out)
}

/// An input's or output's `opts` as [`fill_missing_defaults`] leaves them: the defaults filled
/// in, an empty `value_options` or `meta` left out.
fn opts(m: Entries<'_>) -> Out<'_> {
    Out::Map(fill_entries(m, &opts_defaults(), |k, v| {
        (!(matches!(k, "value_options" | "meta") && v.is_omitted())).then_some(v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The Value way: parse, fill, set `asset_urls`, print.
    fn by_value(text: &str, urls: Option<&Value>) -> String {
        let mut v: Value = serde_json::from_str(text).unwrap();
        fill_missing_defaults(&mut v);
        if let (Some(u), Some(m)) = (urls, v.as_object_mut()) {
            m.insert("asset_urls".into(), u.clone());
        }
        serde_json::to_string(&v).unwrap()
    }

    fn by_text(text: &str, urls: Option<&Value>) -> String {
        old_shape_json(text, urls).unwrap()
    }

    #[test]
    fn the_text_way_prints_what_the_value_way_prints() {
        let urls = json!({"icon.svg": "https://x/icon.svg"});
        let cases = [
            json!({"title": "T", "timeout": 5, "run_if": null, "x": 1, "asset_urls": {"a": "b"},
                "inputs": [{"A": null}, {"B": "b", "opts": {"is_expand": false, "value_options": []}},
                    {"C": "c", "opts": null}, {"D": 1, "opts": "odd"}, "not a map", 7,
                    {"E": "e", "opts": {"meta": {}, "value_options": ["x"], "title": null}},
                    {"F": "f", "opts": {"meta": {"k": 1}, "value_options": null}}],
                "outputs": [{"O": null, "opts": {"title": "o\u{1}\"\\"}}],
                "meta": {"bitrise.io": {"stack": "x"}}, "deps": {"brew": [{"name": "go"}]}}),
            json!({"inputs": {"not": "a list"}, "outputs": null, "title": null, "d\"q\\k\u{e9}": [1.5, -0.0, 1e300]}),
            json!({}),
            json!([1, 2]),
            json!(null),
            json!("a string"),
            json!({"is_skippable": true, "is_always_run": null, "summary": "s", "description": "d\n\t"}),
        ];
        for case in &cases {
            let text = serde_json::to_string(case).unwrap();
            for u in [None, Some(&urls)] {
                assert_eq!(by_text(&text, u), by_value(&text, u), "{text}");
            }
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value_as_a_parsed_map_does() {
        let text = r#"{"title":"a","inputs":[{"A":"1","opts":{"title":"x","title":null},"A":null}],"x":1,"title":null}"#;
        assert_eq!(by_text(text, None), by_value(text, None));
    }

    #[test]
    fn a_number_beyond_an_f64_is_copied_as_written() {
        let big = "76e7777777777777777777777777777775";
        assert!(serde_json::from_str::<Value>(big).is_err());
        assert_eq!(
            old_shape_json(&format!("[{big}]"), None).unwrap(),
            format!("[{big}]")
        );
        let shaped = old_shape_json(&format!(r#"{{"meta":{{"n":{big}}}}}"#), None).unwrap();
        assert!(
            shaped.starts_with(&format!(r#"{{"meta":{{"n":{big}}},"#)),
            "{shaped}"
        );
        assert!(old_shape_json("[76e]", None).is_err());
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let mut s = json!({"title": "T", "timeout": 5, "run_if": null, "x": 1,
            "inputs": [{"A": null}, {"B": "b", "opts": {"is_expand": false, "value_options": []}}]});
        fill_missing_defaults(&mut s);
        assert_eq!(s["title"], "T");
        assert_eq!(s["timeout"], 5);
        assert_eq!(s["run_if"], "");
        assert_eq!(s["x"], 1);
        assert_eq!(s["is_always_run"], false);
        assert!(s.get("no_output_timeout").is_none());
        assert_eq!(s["inputs"][0]["A"], "");
        assert_eq!(s["inputs"][0]["opts"]["is_expand"], true);
        assert_eq!(s["inputs"][1]["opts"]["is_expand"], false);
        assert!(s["inputs"][1]["opts"].get("value_options").is_none());
    }

    #[test]
    fn group_info_keeps_the_old_fields() {
        let i = json!({"maintainer": "m", "removal_date": "", "owner": "x", "asset_urls": {}});
        assert_eq!(group_info(&i), json!({"maintainer": "m"}));
    }
}
