//! Offline mode (`--offline`, `BITRISE_OFFLINE_MODE=true`): never touches the network; a miss
//! fails and lists the versions that are cached.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Output;

fn stepman(home: &Path, args: &[&str], offline_env: bool) -> Output {
    let mut c = support::stepman(home, args);
    if offline_env {
        c.env("BITRISE_OFFLINE_MODE", "true");
    }
    support::output(&mut c)
}

fn zip_bytes() -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("step.sh", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"echo hi\n").unwrap();
    z.finish().unwrap().into_inner()
}

#[test]
fn offline_misses_list_cached_versions_and_never_connect() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    for v in ["1.0.0", "2.0.0"] {
        fs::create_dir_all(lib.join(format!("steps/s/{v}"))).unwrap();
        fs::write(lib.join(format!("steps/s/{v}/step.yml")), "title: S\n").unwrap();
        fs::create_dir_all(lib.join(format!("archives/s/{v}"))).unwrap();
        fs::write(lib.join(format!("archives/s/{v}/step.zip")), zip_bytes()).unwrap();
    }
    let steplib = |src: &str| {
        fs::write(
            lib.join("steplib.yml"),
            format!("format_version: 1.0.0\nsteplib_source: t\ndownload_locations:\n  - type: zip\n    src: {src}\n"),
        )
        .unwrap()
    };
    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();

    // Local archives are not the network: offline activation of 1.0.0 works and caches it.
    steplib("archives/");
    let dest = t.path().join("one");
    let o = stepman(
        &home,
        &[
            "activate",
            "-c",
            lib_s,
            "-i",
            "s",
            "-v",
            "1.0.0",
            "-p",
            dest.to_str().unwrap(),
        ],
        true,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Now the archives are on a server that counts connections.
    let server = support::Server::start();
    steplib(&format!("{}/", server.url()));
    assert!(
        stepman(&home, &["update", "-c", lib_s], false)
            .status
            .success()
    );

    for (flag, env) in [(true, false), (false, true)] {
        let dest = t.path().join(format!("two-{flag}"));
        let mut args = vec![
            "activate",
            "-c",
            lib_s,
            "-i",
            "s",
            "-v",
            "2.0.0",
            "-p",
            dest.to_str().unwrap(),
        ];
        if flag {
            args.push("--offline");
        }
        let o = stepman(&home, &args, env);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("offline") && err.contains("cached versions: 1.0.0"),
            "{err}"
        );
        assert!(!dest.exists());
        // The cached version still activates offline.
        let d1 = t.path().join(format!("one-again-{flag}"));
        let mut args = vec![
            "activate",
            "-c",
            lib_s,
            "-i",
            "s",
            "-v",
            "1",
            "-p",
            d1.to_str().unwrap(),
        ];
        if flag {
            args.push("--offline");
        }
        assert!(stepman(&home, &args, env).status.success());
    }
    assert_eq!(
        server.connections(),
        0,
        "offline mode connected to the server"
    );
}
