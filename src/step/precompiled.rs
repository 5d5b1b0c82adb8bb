//! Precompiled executables (`executables.<os>-<arch>` of a step.yml).

use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Resolved;
use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::hash::ObjectId;
use crate::layout::Name;
use crate::steplib::model::step;
use crate::store::{Fill, Producer, Rebuild, Stage, Store, Tree};

/// The old tool's default storage bases, tried in order.
pub const DEFAULT_BASES: [&str; 2] = [
    "https://steplib.bitrise.io",
    "https://storage.googleapis.com/bitrise-steplib-storage",
];
/// Largest executable accepted.
const MAX_BYTES: u64 = 1 << 30;

/// This machine's platform key: `linux-amd64`, `darwin-arm64`, …
pub fn platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}-{arch}")
}

/// Whether `BITRISE_EXPERIMENT_PRECOMPILED_STEPS` asks for precompiled executables (`true`,
/// `false`, `1`, `0`, `yes`, `no` in any case; empty or unset: no). Any other value is an
/// [`crate::Error::BadSetting`].
pub fn enabled_by_env() -> Result<bool> {
    const VAR: &str = "BITRISE_EXPERIMENT_PRECOMPILED_STEPS";
    let v = crate::settings::get(VAR)?;
    Ok(crate::settings::flag(VAR, v.as_deref())?.unwrap_or(false))
}

/// The storage bases: `BITRISE_PRECOMPILED_STEPS_STORAGE_URLS` (comma-separated) or the
/// defaults. Plain `http://` bases are refused.
pub fn bases() -> Vec<String> {
    match std::env::var("BITRISE_PRECOMPILED_STEPS_STORAGE_URLS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect(),
        _ => DEFAULT_BASES.iter().map(|b| b.to_string()).collect(),
    }
}

/// The prefix of the name id of a step's executables: `_exe.<id>`. Step ids never start with
/// `_` (a StepLib's ids and versions that do are left out), so no step version of any
/// StepLib has an executable's name.
pub use crate::layout::EXE_ID_PREFIX;

/// The store name of a step version's executable for `platform` with sha256 `hex`:
/// `<alias>/_exe.<id>/<version>+<platform>.<sha256>`. The hash is part of the name, so a
/// changed declaration never reuses an executable verified against the old one.
pub fn name(r: &Resolved, platform: &str, hex: &str) -> Result<Name> {
    r.collection.step_name(
        &format!("{EXE_ID_PREFIX}{}", r.picked.id),
        &format!("{}+{platform}.{hex}", r.picked.version),
    )
}

/// The declared executable for this platform: `(storage_uri, lowercase sha256 hex)`.
fn declared<'a>(r: &'a Resolved, platform: &str) -> Result<Option<(&'a str, String)>> {
    let Some((storage_uri, hash)) = step::executable(&r.picked.step, platform) else {
        return Ok(None);
    };
    let want = hash
        .strip_prefix("sha256-")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::Steplib {
            what: format!("step {}@{}", r.picked.id, r.picked.version),
            reason: format!("executables.{platform}.hash is not sha256-<hex>"),
        })?
        .to_ascii_lowercase();
    Ok(Some((storage_uri, want)))
}

/// Fetches the executable into the store and binds `name`, unless (under its lock) another
/// process did so first and the name passes [`check_object`]: one download among
/// concurrent callers. With [`Fill::Again`], even when `name` is bound already (it failed the
/// check).
fn fill(
    store: &Store,
    r: &Resolved,
    name: &Name,
    (storage_uri, want): (&str, &str),
    mode: Fill,
    net: &NetConfig,
) -> Result<()> {
    let check = |dir: &Path| check_object(dir, &r.picked.id, want);
    let fill = match mode {
        Fill::Again => Rebuild::UnlessValid(&check),
        Fill::IfMissing => Rebuild::Never,
    };
    store.produce(name, fill, Producer::Executable, |stage| {
        fetch(stage, r, storage_uri, want, net)
    })?;
    Ok(())
}

/// Activates the step's verified executable for this platform as `dest/<id>` (one download
/// among concurrent callers); `Ok(None)` when it has none. Every use, a cache hit too,
/// re-checks the object against the declared sha256 while it is copied out (under the store
/// lock, on the same resolution of the name), so a name that points at anything else is
/// never activated: it is fetched again once (with a warning), and then it is an error.
pub fn activate(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<Option<ObjectId>> {
    let platform = platform();
    let Some((storage_uri, want)) = declared(r, &platform)? else {
        return Ok(None);
    };
    let name = name(r, &platform, &want)?;
    let source = (storage_uri, want.as_str());
    fill(store, r, &name, source, Fill::IfMissing, net)?;
    let check = |dir: &Path| check_object(dir, &r.picked.id, &want);
    match store.export_replacing_checked(&name, dest, replace, check) {
        Err(e @ Error::Format { .. }) => {
            log::warn!("{}; fetching it again", e.describe());
            fill(store, r, &name, source, Fill::Again, net)?;
            store
                .export_replacing_checked(&name, dest, replace, check)
                .map(Some)
        }
        other => other.map(Some),
    }
}

/// Whether the executable object at `dir` is what the step declares: exactly one entry, a
/// regular file named `<id>` with an execute bit, whose sha256 is `want`.
pub(crate) fn check_object(dir: &Path, id: &str, want: &str) -> Result<()> {
    let bad = |reason: String| Error::Format {
        path: dir.to_path_buf(),
        reason: format!("the stored executable of step {id}: {reason}"),
    };
    crate::scan::one_executable(dir, id)?.map_err(bad)?;
    let file = dir.join(id);
    let digest = sha256_file(&file)?;
    if digest != want {
        return Err(bad(format!("sha256 is {digest}, the step declares {want}")));
    }
    Ok(())
}

/// Writes the executable into `stage`: the first storage base that serves the declared
/// bytes.
fn fetch(
    stage: &mut Stage<'_>,
    r: &Resolved,
    storage_uri: &str,
    want: &str,
    net: &NetConfig,
) -> Result<Tree> {
    let what = format!("step {}@{} executable", r.picked.id, r.picked.version);
    let mut failures = Vec::new();
    for base in bases() {
        // Bases may carry credentials: messages show them redacted.
        let shown = crate::credentials::redact(&base);
        if base.to_ascii_lowercase().starts_with("http://") {
            failures.push(format!("{shown}: plain http:// storage is refused"));
            continue;
        }
        let url = format!("{base}/{}", storage_uri.trim_start_matches('/'));
        let got = stage.attempt(|stage| {
            let dir = stage.dir().join("bin");
            fs::create_dir(&dir).map_err(Error::io("create dir", &dir))?;
            let file = dir.join(&r.picked.id);
            fetch::download(&url, None, &file, MAX_BYTES, &what, net)?;
            let digest = sha256_file(&file)?;
            if digest != want {
                return Err(Error::Fetch {
                    what: format!("{what}: {}", crate::credentials::redact(&url)),
                    reason: format!("sha256 is {digest}, the step declares {want}"),
                });
            }
            crate::sys::set_mode(&file, 0o755).map_err(Error::io("chmod", &file))?;
            stage.ingest(&dir)
        })?;
        match got {
            Ok(tree) => return Ok(tree),
            Err(_) if net.cancelled() => return Err(Error::Cancelled),
            Err(e) => failures.push(format!("{shown}: {}", super::reason_of(&e))),
        }
    }
    Err(Error::Fetch {
        what,
        reason: failures.join("; "),
    })
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(Error::io("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
