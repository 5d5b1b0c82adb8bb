//! A step.yml as `setup` reads it (UTF-8, one YAML document into a JSON value whose string
//! fields take any scalar as its text, `validate_step`, then the typed accessors): never panics,
//! memory stays bounded however the document uses anchors and aliases (the bounded parse gives
//! what `serde_yaml_ng` gives, or refuses an expansion past its limits), the step.yml parse
//! differs from the generic one only where a scalar became its text or a null field was left
//! out, and what is accepted survives the trip through the group file (JSON) that `setup` writes
//! and `activate` reads back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stepman::steplib::model::{self, step};

fuzz_target!(|data: &[u8]| {
    // The bounded parse is serde_yaml_ng's, except that it refuses what expands too far.
    if let Ok(text) = std::str::from_utf8(data) {
        let generic = model::parse_yaml(text);
        match &generic {
            Ok(v) => assert_eq!(serde_yaml_ng::from_str::<Value>(text).ok().as_ref(), Some(v)),
            Err(e) if e.to_string().contains("expands past") => {}
            Err(e) => assert!(serde_yaml_ng::from_str::<Value>(text).is_err(), "{e}"),
        }
        // Where both parses accept a document, they agree but for scalars that became text and
        // nulls left out. The step.yml parse also accepts scalars the generic one cannot put in
        // JSON, when a string field takes them as their text: a number past JSON's range (an
        // all-digit commit, say) or a tagged scalar (`title: ! bit`).
        if let (Ok(v), Ok(g)) = (model::parse_yaml_as(text, model::Doc::Step), generic.as_ref()) {
            assert!(as_text(&v, g), "{v:?} vs {g:?}");
        }
    }
    let Ok(v) = stepman::fuzzing::parse_step_yml(data) else {
        return;
    };
    assert!(model::validate_step(&v).is_ok());
    assert!(v.get("title").is_some_and(Value::is_string));
    let _ = (step::source_git(&v), step::source_commit(&v));
    if let Some(ex) = v.get("executables").and_then(Value::as_object) {
        for platform in ex.keys() {
            let (_, hash) = step::executable(&v, platform).expect("a validated executable reads");
            assert!(hash.starts_with("sha256-"));
        }
    }
    // The group file: written with serde_json, read back with serde_json.
    let bytes = serde_json::to_vec(&v).expect("a JSON value serializes");
    let back: Value = serde_json::from_slice(&bytes).expect("what setup writes, activate reads");
    assert!(same(&back, &v), "{back:?} != {v:?}");
});

/// `shaped` is `generic` except that some scalars are strings (their text) and some null fields
/// are left out (or are `""` in a list).
fn as_text(shaped: &Value, generic: &Value) -> bool {
    match (shaped, generic) {
        (Value::Object(s), Value::Object(g)) => {
            s.iter().all(|(k, v)| g.get(k).is_some_and(|gv| as_text(v, gv)))
                && g.iter().all(|(k, v)| s.contains_key(k) || v.is_null())
        }
        (Value::Array(s), Value::Array(g)) => {
            s.len() == g.len() && s.iter().zip(g).all(|(s, g)| as_text(s, g))
        }
        (Value::String(_), g) => !g.is_object() && !g.is_array(),
        (s, g) => same(s, g),
    }
}

/// Equal, except that a float may come back off by its last digit (serde_json's float parser is
/// not exact without its `float_roundtrip` feature).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || ((x - y) / x).abs() < 1e-12,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}
