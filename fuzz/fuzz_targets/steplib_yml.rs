//! `steplib.yml` into `SteplibMeta` and `step-info.yml` into a mapping, as `setup` reads them:
//! never panic, bounded memory, and an accepted `steplib.yml` survives the trip through
//! `collection.json` (JSON) unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::steplib::SteplibMeta;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(info) = stepman::fuzzing::parse_step_info(text) {
        assert!(info.is_object(), "step-info.yml is a mapping");
    }
    let Ok(meta) = stepman::fuzzing::parse_steplib_yml(text) else {
        return;
    };
    assert!(!meta.format_version.is_empty() && !meta.steplib_source.is_empty());
    let json = serde_json::to_vec(&meta).expect("SteplibMeta serializes");
    let back: SteplibMeta = serde_json::from_slice(&json).expect("collection.json reads back");
    assert_eq!(
        serde_json::to_value(&back).expect("serializes"),
        serde_json::to_value(&meta).expect("serializes"),
    );
});
