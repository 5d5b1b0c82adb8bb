//! A store's objects and its `fsck` report.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// The store directory under `home`.
pub(crate) fn store_root(home: &Path) -> PathBuf {
    home.join("store-v1")
}

/// Every directory under `store-v1/objects/*/`, sorted.
pub(crate) fn object_dirs(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(store_root(home).join("objects")) else {
        return out;
    };
    for shard in shards {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for o in fs::read_dir(&shard).unwrap() {
            let o = o.unwrap();
            if o.file_type().unwrap().is_dir() {
                out.push(o.path());
            }
        }
    }
    out.sort();
    out
}

/// The ids (directory names) of [`object_dirs`].
pub(crate) fn object_ids(home: &Path) -> Vec<String> {
    object_dirs(home)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// What `stepman fsck --json` said.
#[derive(Debug)]
pub(crate) struct Fsck {
    /// Its exit code: 0 clean, 1 damage, 2 could not run.
    pub code: i32,
    /// The parsed report.
    pub report: serde_json::Value,
    /// Its stderr.
    pub stderr: String,
}

impl Fsck {
    /// The reported problems.
    pub(crate) fn problems(&self) -> &[serde_json::Value] {
        self.report["problems"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }
}

/// Runs `stepman fsck --json` (plus `extra` arguments) and parses its report.
pub(crate) fn fsck_json(home: &Path, extra: &[&str]) -> Fsck {
    let mut args = vec!["fsck", "--json"];
    args.extend_from_slice(extra);
    let out = output(&mut stepman(home, args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck --json (exit {code}) printed no JSON report ({e})\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Fsck {
        code,
        report,
        stderr,
    }
}

/// Panics unless `stepman fsck --json` exits 0 and reports no problem.
pub(crate) fn assert_fsck_clean(home: &Path) -> Fsck {
    let f = fsck_json(home, &[]);
    assert!(
        f.code == 0 && f.problems().is_empty(),
        "fsck is not clean (exit {}): {:#}\nstderr: {}",
        f.code,
        f.report["problems"],
        f.stderr
    );
    f
}

/// The names of the entries in the store's temp area (`store-v1/tmp/`), none when it cannot be
/// read.
pub(crate) fn temp_entries(home: &Path) -> Vec<String> {
    match fs::read_dir(store_root(home).join("tmp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
