//! Checks the tree-hash test vectors of `store-format.md` against the code, so the normative
//! text and the implementation cannot drift apart.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use stepman::{Durability, Store};

/// Reads the `| Vn | tree | `id` |` rows of the test-vector table.
fn vectors_from_doc() -> Vec<(String, String)> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("store-format.md"))
        .expect("store-format.md is part of the repository");
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            if cells.len() == 5 && cells[1].starts_with('V') && cells[1][1..].parse::<u32>().is_ok()
            {
                Some((cells[1].to_string(), cells[3].trim_matches('`').to_string()))
            } else {
                None
            }
        })
        .collect()
}

fn build(vector: &str, root: &Path) {
    fs::create_dir(root).unwrap();
    match vector {
        "V1" => {}
        "V2" => fs::write(root.join("hello.txt"), "hello\n").unwrap(),
        "V3" => {
            let p = root.join("run.sh");
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        "V4" => {
            fs::create_dir(root.join("a")).unwrap();
            fs::write(root.join("a/b.txt"), "b").unwrap();
            fs::create_dir(root.join("empty")).unwrap();
            std::os::unix::fs::symlink("a/b.txt", root.join("link")).unwrap();
        }
        other => {
            panic!("store-format.md has vector {other} that this test does not know how to build")
        }
    }
}

#[test]
fn store_format_vectors_match_the_code() {
    let vectors = vectors_from_doc();
    assert_eq!(
        vectors.len(),
        4,
        "expected V1..V4 in store-format.md, found {vectors:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("home"))
        .unwrap()
        .with_durability(Durability::NoSync);
    for (name, want) in vectors {
        let src = dir.path().join(&name);
        build(&name, &src);
        let got = store.import(&src, None).unwrap();
        assert_eq!(got.to_hex(), want, "vector {name}");
    }
}

#[test]
fn modes_and_timestamps_do_not_enter_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("home"))
        .unwrap()
        .with_durability(Durability::NoSync);
    let a = dir.path().join("a");
    build("V3", &a);
    let b = dir.path().join("b");
    build("V3", &b);
    // 0700 is still "executable"; setuid is dropped.
    fs::set_permissions(b.join("run.sh"), fs::Permissions::from_mode(0o4700)).unwrap();
    let ida = store.import(&a, None).unwrap();
    let idb = store.import(&b, None).unwrap();
    assert_eq!(ida, idb);
    fs::set_permissions(b.join("run.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_ne!(
        store.import(&b, None).unwrap(),
        ida,
        "the execute bit is part of the tree"
    );
}
