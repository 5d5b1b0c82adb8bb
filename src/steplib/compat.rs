//! The old tool's shape of a step definition and of a group's info, as its `step-info` prints
//! them: the old tool parses every step.yml into Go structs and fills in defaults
//! (`StepModel.FillMissingDefaults`, and envman's `FillMissingDefaults` for each input and
//! output), so a field a step.yml leaves out is printed with its default value.

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
