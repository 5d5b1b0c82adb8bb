//! JSON `step-info`'s one-pass shaping of a stored step definition
//! (`steplib::compat::old_shape_json`) against the parsed way (`fill_missing_defaults` on a
//! `serde_json::Value`, the group's `asset_urls` set on it): on any JSON document serde_json
//! prints (what `setup` stores), the two give the same bytes; on any input at all, the shaping
//! never panics and accepts only JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stepman::steplib::compat::{fill_missing_defaults, old_shape_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shaped = old_shape_json(text, None);
    let mut value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        // A value nested deeper than serde_json's limit for a tree, or a number beyond an
        // f64's range (valid JSON grammar: RFC 8259 leaves the range to implementations), may
        // still be copied as written; anything else that is not JSON is refused.
        Err(e) => {
            let m = e.to_string();
            assert!(
                shaped.is_err()
                    || m.contains("recursion limit")
                    || m.contains("number out of range"),
                "shaping accepted what is not JSON ({e}): {text:?}"
            );
            return;
        }
    };
    // The stored form: what serde_json prints of the document.
    let stored = serde_json::to_string(&value).expect("a parsed value prints");
    let urls = serde_json::json!({"icon.svg": "https://example.invalid/icon.svg"});
    let by_text = old_shape_json(&stored, Some(&urls)).expect("shaping takes stored JSON");
    fill_missing_defaults(&mut value);
    if let Some(m) = value.as_object_mut() {
        m.insert("asset_urls".into(), urls);
    }
    let by_value = serde_json::to_string(&value).expect("a filled value prints");
    assert_eq!(by_text, by_value, "the two ways differ on {stored}");
});
