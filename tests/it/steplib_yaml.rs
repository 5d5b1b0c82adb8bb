//! StepLib YAML as the old tool reads it: every string field of `steplib.yml`, `step-info.yml`
//! and `step.yml` takes any scalar written in it as its text (README, "StepLib YAML").
#![allow(clippy::disallowed_methods)] // tests plant files directly (clippy.toml)

use std::fs;

use serde_json::Value;

use crate::support::{self, TestDir};

/// A step.yml whose string fields are written as numbers, booleans and a date.
const STEP_YML: &str = "title: 2048\nsummary: yes\ndescription: 1.10\n\
    published_at: 2021-01-02\n\
    source:\n  git: https://example.invalid/step.git\n  commit: 2222222222222222222222222222222222222222\n\
    host_os_tags: [1.0]\n\
    toolkit:\n  bash:\n    entry_file: step.sh\n\
    inputs:\n- version: 1.10\n  opts:\n    title: 2048\n    value_options: [1.10, 2.0]\n";

/// An unquoted all-digit `commit:`, `title: 2048`, `summary: yes`, `1.10`s and an unquoted date:
/// `setup` keeps the version (it was skipped: "source.commit is not a string"), `step-info`
/// shows every field as the text written, and `activate` installs the step.
#[test]
fn scalars_in_string_fields_are_their_text_through_setup_step_info_and_activate() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.10.0"]);
    fs::write(lib.join("steps/s/1.10.0/step.yml"), STEP_YML).unwrap();
    fs::write(lib.join("steps/s/step-info.yml"), "maintainer: 1.10\n").unwrap();
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1.10\nsteplib_source: 0123\ndownload_locations:\n  - type: zip\n    src: archives/\n",
    )
    .unwrap();
    let home = t.path().join("home");
    let uri = lib.to_str().unwrap();

    let o = support::run(&home, &["setup", "-c", uri]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("1 steps, 1 versions") && !err.contains("skipped"),
        "{err}"
    );

    let o = support::run(
        &home,
        &[
            "step-info",
            "-c",
            uri,
            "--id",
            "s",
            "--version",
            "1.10.0",
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: Value = serde_json::from_slice(&o.stdout).expect("step-info prints JSON");
    let step = &info["step"];
    assert_eq!(step["title"], "2048", "{info}");
    assert_eq!(step["summary"], "yes");
    assert_eq!(step["description"], "1.10");
    assert_eq!(step["published_at"], "2021-01-02T00:00:00Z");
    assert_eq!(
        step["source"]["commit"],
        "2222222222222222222222222222222222222222"
    );
    assert_eq!(step["host_os_tags"], serde_json::json!(["1.0"]));
    assert_eq!(step["inputs"][0]["version"], "1.10");
    assert_eq!(step["inputs"][0]["opts"]["title"], "2048");
    assert_eq!(
        step["inputs"][0]["opts"]["value_options"],
        serde_json::json!(["1.10", "2.0"])
    );
    assert_eq!(info["info"]["maintainer"], "1.10", "{info}");

    let dest = t.path().join("dest");
    let o = support::run(
        &home,
        &[
            "activate",
            "-c",
            uri,
            "-i",
            "s",
            "-v",
            "1.10.0",
            "-p",
            dest.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read_to_string(dest.join("step.sh")).unwrap(),
        "echo 1.10.0\n"
    );
    support::assert_fsck_clean(&home);
}
