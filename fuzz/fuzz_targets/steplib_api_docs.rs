//! The StepLib API's document readers (`stepman::steplib::api`), on arbitrary bytes: none panics;
//! what they accept holds only valid path segments (so no document can make a client build a
//! path or URL outside the API): every accepted list builds a URL path of the expected depth for
//! each of its entries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::steplib::api::{self, Doc};

fuzz_target!(|data: &[u8]| {
    let _ = api::read_meta(data);
    let _ = api::read_step_info(data);
    let _ = api::read_step(data);
    if let Ok(ids) = api::read_step_ids(data) {
        for id in &ids {
            assert!(api::valid_segment(id), "{id:?}");
            let p = Doc::Versions(id.clone()).url_path().expect("a URL path");
            assert!(!p.contains("/../") && p.matches('/').count() == 4, "{p}");
        }
    }
    for id in ["s", "git-clone"] {
        if let Ok(vs) = api::read_versions(data, id) {
            for v in &vs {
                let p = Doc::Step(id.into(), v.clone()).url_path().expect("a URL path");
                assert_eq!(p.matches('/').count(), 4, "{p}");
            }
        }
        let _ = api::read_latest(data, id);
    }
});
