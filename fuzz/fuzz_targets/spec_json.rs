//! The streaming `spec.json` reader of `setup` (an HTTP spec.json), on in-memory bytes: never
//! panics, and a collection object it builds is one the store's readers accept (every group
//! file reads as a `Group` whose versions pass `validate_step`, `collection.json` reads as
//! `CollectionMeta`, the counts agree). The same bytes also go to the readers of the store's
//! own records (`collection.json`, `groups/<id>.json`, `index/<id>.json`, the `format` file), which must not panic.

#![no_main]

mod common;

use std::fs;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stepman::steplib::model::{GroupIndex, validate_step};
use stepman::steplib::{CollectionMeta, Group};

fn format_home() -> &'static tempfile::TempDir {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("stepman-fuzz-format-")
            .tempdir_in(common::scratch())
            .expect("temp dir");
        fs::create_dir(d.path().join(stepman::layout::STORE_DIR)).expect("store dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<CollectionMeta>(data);
    let _ = serde_json::from_slice::<Group>(data);
    let _ = serde_json::from_slice::<GroupIndex>(data);
    if data.len() <= 256 {
        let home = format_home().path();
        fs::write(home.join(stepman::layout::STORE_DIR).join("format"), data).expect("write");
        if let Ok(Some(store)) = stepman::Store::open_existing(home) {
            assert_eq!(store.layout().home(), home);
            let text = String::from_utf8_lossy(data);
            assert!(
                text.starts_with("stepman-store"),
                "accepted format file {text:?}"
            );
        }
    }

    let tmp = tempfile::Builder::new()
        .prefix("stepman-fuzz-")
        .tempdir_in(common::scratch())
        .expect("temp dir");
    let root = tmp.path().join("root");
    let r = stepman::fuzzing::spec_json(data, &root, common::limits());
    if r.is_ok() {
        let meta: CollectionMeta = serde_json::from_slice(
            &fs::read(root.join("collection.json")).expect("collection.json"),
        )
        .expect("collection.json reads back");
        let mut steps = 0;
        let mut versions = 0;
        if let Ok(rd) = fs::read_dir(root.join("groups")) {
            for e in rd {
                let p = e.expect("dir entry").path();
                let bytes = fs::read(&p).expect("group file");
                let g: Group = serde_json::from_slice(&bytes).expect("a group file reads back");
                // The index (layout 2) lists the group's versions, lowest first, each span
                // holding exactly that version's step.
                let name = p.file_name().expect("file name");
                let index: GroupIndex = serde_json::from_slice(
                    &fs::read(root.join("index").join(name)).expect("index file"),
                )
                .expect("an index file reads back");
                assert_eq!(index.latest_version_number, g.latest_version_number);
                assert_eq!(index.versions.len(), g.versions.len());
                for ((v, at, len), (gv, step)) in index.versions.iter().zip(&g.versions) {
                    assert_eq!(v, gv);
                    let span = &bytes[*at as usize..(*at + *len) as usize];
                    let at_span: serde_json::Value =
                        serde_json::from_slice(span).expect("a span holds JSON");
                    assert_eq!(&at_span, step);
                }
                assert!(g.versions.contains_key(&g.latest_version_number));
                for step in g.versions.values() {
                    assert!(validate_step(step).is_ok());
                }
                steps += 1;
                versions += g.versions.len();
            }
        }
        assert_eq!((meta.steps, meta.versions), (steps, versions));
    }
    common::make_writable(&root);
});
