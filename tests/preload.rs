//! `preload`: parallel cache warming from a loopback server; every failure reported, the rest
//! cached, one download per step.

mod common;
mod support;

use std::fs;
use std::time::Duration;

use common::{assert_fsck_clean, stepman};
use serde_json::Value;
use support::{Mode, Server};

#[test]
fn fifty_steps_three_failing_in_different_ways() {
    let t = tempfile::tempdir().unwrap();
    let server = Server::start();
    let lib = t.path().join("lib");
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/archives/", server.url()))]);
    let full = Mode::Full {
        delay: Duration::ZERO,
    };
    let mut wanted = Vec::new();
    for i in 0..50 {
        let id = format!("step-{i:02}");
        support::write_step(&lib, &id, "1.0.0", &support::step_yml(&id, None));
        let path = format!("/archives/{id}/1.0.0/step.zip");
        match i {
            7 => {} // never served: 404
            23 => server.serve(
                &path,
                support::zip_with_entry("../../../../escape", b"x"),
                full,
            ),
            41 => server.serve(&path, b"PK\x03\x04 this is not a zip".to_vec(), full),
            _ => {
                let src = t.path().join("src").join(&id);
                fs::create_dir_all(&src).unwrap();
                fs::write(src.join("step.sh"), format!("echo {id}\n")).unwrap();
                server.serve(&path, support::zip_tree(&src), full);
            }
        }
        wanted.push(format!("{id}@1"));
    }
    let home = t.path().join("home");
    let list = t.path().join("list.txt");
    fs::write(&list, wanted[25..].join("\n")).unwrap();
    let mut args = vec![
        "preload",
        "-c",
        lib.to_str().unwrap(),
        "--jobs",
        "8",
        "--json",
        "--from-file",
        list.to_str().unwrap(),
    ];
    args.extend(wanted[..25].iter().map(String::as_str));

    for round in 0..2 {
        let o = stepman(&home, &args)
            .env("STEPMAN_HTTP_ATTEMPTS", "1")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let steps = report["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 50);
        let failed: Vec<&str> = steps
            .iter()
            .filter(|s| s["status"] == "failed")
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(failed, ["step-07", "step-23", "step-41"], "round {round}");
        let want_status = if round == 0 { "downloaded" } else { "cached" };
        assert!(
            steps
                .iter()
                .filter(|s| s["status"] != "failed")
                .all(|s| s["status"] == want_status),
            "round {round}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("HTTP 404") && err.contains("escape") && err.contains("zip"),
            "{err}"
        );
    }
    for i in 0..50 {
        if ![7, 23, 41].contains(&i) {
            assert_eq!(
                server.count(&format!("/archives/step-{i:02}/1.0.0/step.zip")),
                1,
                "step-{i:02}"
            );
        }
    }
    let o = stepman(&home, ["list-cached", "-c", lib.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 47);
    assert_fsck_clean(&home);
}
