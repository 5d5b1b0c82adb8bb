//! Step lookup, download and activation (what CI runs).
//!
//! Invariants:
//! - A step's source is verified before it is published (git: the checkout is exactly
//!   `source.commit`; archives: every entry vetted and the stream checked to its end), so an
//!   object bound to a step name was verified once and is trusted from then on.
//! - Concurrent activations that miss the same step make one download (single flight on the
//!   step's name); all of them then copy the same object.
//! - Activation materialises the tree at the destination atomically and never aliases the store.
//! - A cache hit needs no write access to the store.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::hash::ObjectId;
use crate::layout::{GIT_ROUTE, Name};
use crate::steplib::model::step;
use crate::steplib::{self, Collection, Constraint, Opened, generate};
use crate::store::{Fill, Imported, Producer, Rebuild, Stage, Store, Tree};
use crate::tmp;

/// The part of an error worth repeating after the location it came from.
fn reason_of(e: &Error) -> String {
    match e {
        Error::Fetch { reason, .. } => reason.clone(),
        other => other.describe(),
    }
}

/// Largest step archive accepted.
const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// A step version picked from a collection.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The collection.
    pub collection: Collection,
    /// The collection as read from the store.
    pub opened: Opened,
    /// Step id.
    pub id: String,
    /// The version picked.
    pub version: String,
    /// The constraint as given.
    pub original_version: String,
    /// The group's latest version.
    pub latest_version: String,
    /// The group's info (`step-info.yml`).
    pub info: Value,
    /// The step definition.
    pub step: Value,
}

impl Resolved {
    /// The store name of this step version.
    pub fn name(&self) -> Result<Name> {
        self.collection.step_name(&self.id, &self.version)
    }

    /// The original step.yml inside the collection object.
    pub fn definition_path(&self) -> PathBuf {
        self.opened.step_yml(&self.id, &self.version)
    }
}

/// What `step-info --format json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StepInfo {
    /// The collection URI.
    pub library: String,
    /// Step id.
    pub id: String,
    /// Resolved version.
    pub version: String,
    /// The constraint as given.
    pub original_version: String,
    /// Latest version of the group.
    pub latest_version: String,
    /// Group info.
    pub info: Value,
    /// Step definition.
    pub step: Value,
    /// Path of the step.yml.
    pub definition_pth: String,
}

impl From<&Resolved> for StepInfo {
    fn from(r: &Resolved) -> StepInfo {
        StepInfo {
            library: r.collection.uri.clone(),
            id: r.id.clone(),
            version: r.version.clone(),
            original_version: r.original_version.clone(),
            latest_version: r.latest_version.clone(),
            info: r.info.clone(),
            step: r.step.clone(),
            definition_pth: r.definition_path().display().to_string(),
        }
    }
}

/// Opens collection `c`, setting it up first if it is not (that needs write access).
pub fn open_or_setup(store: &Store, c: &Collection, net: &NetConfig) -> Result<Opened> {
    // A concurrent `delete` may remove the collection right after we set it up: delete is safe
    // while others activate, so set it up again (a few times, then give up).
    for _ in 0..3 {
        if let Some(o) = steplib::open(store, c)? {
            return Ok(o);
        }
        generate::setup(store, c, Fill::IfMissing, net)?;
    }
    steplib::open(store, c)?.ok_or_else(|| Error::NotSetUp { uri: c.uri.clone() })
}

/// What [`resolve`] does when the collection has no version of the step that the constraint
/// selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    /// Fail with [`Error::StepNotFound`].
    Fail,
    /// Update the collection once and look again (`--update`).
    Update,
}

/// Picks the version of step `id` that `constraint` selects; a miss does what `on_miss` says.
pub fn resolve(
    store: &Store,
    c: &Collection,
    id: &str,
    constraint: &str,
    on_miss: OnMiss,
    net: &NetConfig,
) -> Result<Resolved> {
    let mut opened = open_or_setup(store, c, net)?;
    let mut updated = false;
    let mut reopened = 0;
    loop {
        let group = match opened.group(id) {
            // Lookups take no lock: an update may have re-pointed the collection and a gc removed
            // the object we opened. Read the name again.
            Err(Error::Io { source, .. }) if reopened < 8 && crate::sys::is_not_found(&source) => {
                reopened += 1;
                opened = open_or_setup(store, c, net)?;
                continue;
            }
            other => other?,
        };
        let picked = group.as_ref().and_then(|g| {
            Constraint::parse(constraint)
                .select(g.versions.keys().map(String::as_str))
                .map(str::to_string)
        });
        match (group, picked) {
            (Some(g), Some(v)) => {
                let step = g.versions.get(&v).cloned().unwrap_or(Value::Null);
                return Ok(Resolved {
                    collection: c.clone(),
                    opened,
                    id: id.to_string(),
                    version: v,
                    original_version: constraint.to_string(),
                    latest_version: g.latest_version_number,
                    info: g.info,
                    step,
                });
            }
            (g, _) if on_miss == OnMiss::Fail || updated => {
                return Err(Error::StepNotFound {
                    collection: c.uri.clone(),
                    id: id.to_string(),
                    constraint: constraint.to_string(),
                    available: g
                        .map(|g| g.versions.keys().cloned().collect())
                        .unwrap_or_default(),
                });
            }
            _ => {
                generate::setup(store, c, Fill::Again, net)?;
                opened = open_or_setup(store, c, net)?;
                updated = true;
            }
        }
    }
}

/// Makes sure the step's source is in the store; one download among concurrent callers.
pub fn download(store: &Store, r: &Resolved, net: &NetConfig) -> Result<Imported> {
    let name = r.name()?;
    if let Some(id) = store.lookup(&name)? {
        return Ok(Imported {
            id,
            ingested: false,
        });
    }
    if net.offline && !all_local(r) {
        let mut cached: Vec<String> = store
            .names_in_route(&r.collection.alias)?
            .into_iter()
            .filter(|(i, _)| i == &r.id)
            .map(|(_, v)| v)
            .collect();
        cached.sort_by(|a, b| {
            steplib::version::Version::parse(a).cmp(&steplib::version::Version::parse(b))
        });
        return Err(Error::Offline {
            what: format!("step {}@{}", r.id, r.version),
            cached,
        });
    }
    store.produce(&name, Rebuild::Never, Producer::StepSource, |stage| {
        fetch_source(stage, r, net)
    })
}

fn all_local(r: &Resolved) -> bool {
    let base = r.opened.meta.root.as_deref().map(Path::new);
    let locs = &r.opened.meta.steplib.download_locations;
    !locs.is_empty()
        && locs.iter().all(|l| {
            l.kind != "git" && matches!(fetch::locate(&l.src, base), Ok(fetch::Location::Local(_)))
        })
}

/// Writes the step's source into `stage`: the first of its download locations that works.
fn fetch_source(stage: &mut Stage<'_>, r: &Resolved, net: &NetConfig) -> Result<Tree> {
    let what = format!("step {}@{}", r.id, r.version);
    let mut locations = r.opened.meta.steplib.download_locations.clone();
    if locations.is_empty() {
        locations.push(steplib::DownloadLocation {
            kind: "git".into(),
            src: "source/git".into(),
        });
    }
    let base = r.opened.meta.root.as_deref().map(Path::new);
    let mut failures = Vec::new();
    for loc in &locations {
        net.check_cancel()?;
        let attempt = stage.attempt(|stage| match loc.kind.as_str() {
            "zip" | "tar.gz" | "tgz" | "tar" => {
                let file = if loc.kind == "zip" {
                    "step.zip"
                } else {
                    "step.tar.gz"
                };
                let url = format!("{}{}/{}/{file}", loc.src, r.id, r.version);
                let archive = stage.dir().join("archive");
                let remote_lib = base.is_none();
                match fetch::locate(&url, base) {
                    // Only a StepLib on this machine may point at this machine's files.
                    Ok(fetch::Location::Local(_)) if remote_lib => Err(format!(
                        "{} {}: a remote StepLib may not name local files",
                        loc.kind,
                        crate::credentials::redact(&url)
                    )),
                    _ => fetch::download(&url, base, &archive, MAX_ARCHIVE_BYTES, &what, net)
                        .and_then(|_| stage.ingest(&archive))
                        .map_err(|e| {
                            format!(
                                "{} {}: {}",
                                loc.kind,
                                crate::credentials::redact(&url),
                                reason_of(&e)
                            )
                        }),
                }
            }
            "git" => {
                let git = step::source_git(&r.step);
                let commit = step::source_commit(&r.step);
                match (git, commit) {
                    (Some(url), Some(commit)) => {
                        let shown = crate::credentials::redact(url);
                        let remote_lib = base.is_none();
                        // Only a StepLib on this machine may point at this machine's
                        // repositories; git itself is held to the same list.
                        let transports = if remote_lib {
                            fetch::GitTransports::Network
                        } else {
                            fetch::GitTransports::NetworkAndLocal
                        };
                        match fetch::classify_git_url(url) {
                            Ok(fetch::GitUrl::Local) if remote_lib => Err(format!(
                                "git {shown}: a remote StepLib may not name local repositories"
                            )),
                            Err(reason) => Err(format!("git {shown}: {reason}")),
                            Ok(_) => {
                                let clone = stage.dir().join("clone");
                                fetch::git_clone(
                                    url,
                                    Some(&r.version),
                                    Some(commit),
                                    &clone,
                                    &what,
                                    transports,
                                    net,
                                )
                                .and_then(|_| tmp::remove_tree(&clone.join(".git")))
                                .and_then(|()| stage.ingest(&clone))
                                .map_err(|e| format!("git {shown}: {}", reason_of(&e)))
                            }
                        }
                    }
                    _ => Err("git: the step has no source.git and source.commit".to_string()),
                }
            }
            other => Err(format!("unknown download location type {other:?}")),
        })?;
        match attempt {
            Ok(tree) => return Ok(tree),
            // Stopped part-way: not a failure of this location; try no other.
            Err(_) if net.cancelled() => return Err(Error::Cancelled),
            Err(e) => {
                log::info!("{what}: {e}");
                failures.push(e);
            }
        }
    }
    Err(Error::Fetch {
        what,
        reason: failures.join("; "),
    })
}

/// Activates the step: downloads it if needed, then copies it to `dest` (complete or not at
/// all, replacing only what an earlier activation put there: [`crate::Replace::Activated`])
/// and, with `copy_yml`, writes its step.yml there.
pub fn activate(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    net: &NetConfig,
) -> Result<ObjectId> {
    activate_with(
        store,
        r,
        dest,
        copy_yml,
        Precompiled::Skip,
        crate::Replace::Activated,
        net,
    )
}

/// Whether [`activate_with`] installs a step's precompiled executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precompiled {
    /// The step's verified executable for this platform, when it has one (`--precompiled`).
    Use,
    /// The step's source only.
    Skip,
}

/// [`activate`], and with [`Precompiled::Use`], the step's verified executable for this
/// platform as `dest/<id>` (mode 0755) when it has one; on any failure of that, the source as
/// usual. `replace` says what may be replaced at `dest` ([`crate::Replace`]).
pub fn activate_with(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    precompiled: Precompiled,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<ObjectId> {
    // Before anything is downloaded: a destination in or around the store is a mistake.
    store.check_outside(dest)?;
    if let Some(yml) = copy_yml {
        store.check_outside(yml)?;
    }
    // The step.yml is read now, not after the download: by then an update or a delete, and a
    // gc, may have taken the collection object it comes from away.
    let definition = match copy_yml {
        Some(yml) => Some((yml, read_definition(store, r)?)),
        None => None,
    };
    if precompiled == Precompiled::Use {
        let exe = precompiled::activate(store, r, dest, replace, net);
        match exe {
            Ok(Some(id)) => {
                if let Some((yml, bytes)) = &definition {
                    write_definition(bytes, yml)?;
                }
                return Ok(id);
            }
            Ok(None) => log::debug!(
                "step {}@{} has no executable for {}",
                r.id,
                r.version,
                precompiled::platform()
            ),
            // The source would meet the same destination.
            Err(e @ (Error::DestinationNotEmpty { .. } | Error::DestinationHoldsCwd { .. })) => {
                return Err(e);
            }
            Err(e) => log::warn!(
                "precompiled executable unavailable, using the source: {}",
                e.describe()
            ),
        }
    }
    let name = r.name()?;
    let mut downloads = 0;
    let id = loop {
        match store.export_replacing(&name, dest, replace) {
            Ok(id) => break id,
            // Not in the store; or gone again before we could copy it out (a `delete` unbound
            // it, a gc collected it): delete is safe while others activate, so download again.
            Err(Error::NameNotFound { .. }) if downloads < 3 => {
                download(store, r, net)?;
                downloads += 1;
            }
            Err(e) => return Err(e),
        }
    };
    if let Some((yml, bytes)) = &definition {
        write_definition(bytes, yml)?;
    }
    Ok(id)
}

/// The step's step.yml, from the collection object it was resolved in. That object may have
/// gone since (an update re-pointed the collection, a gc removed the old object): then from the
/// current collection, under the store lock so that it stays while it is read.
fn read_definition(store: &Store, r: &Resolved) -> Result<Vec<u8>> {
    let p = r.definition_path();
    match fs::read(&p) {
        Ok(b) => Ok(b),
        Err(e) if crate::sys::is_not_found(&e) && !r.opened.dir.exists() => {
            store.read_locked(|| {
                let o = steplib::open(store, &r.collection)?.ok_or_else(|| Error::NotSetUp {
                    uri: r.collection.uri.clone(),
                })?;
                let p = o.step_yml(&r.id, &r.version);
                fs::read(&p).map_err(Error::io("read", &p))
            })
        }
        Err(e) => Err(Error::io("read", &p)(e)),
    }
}

/// Writes the step.yml `bytes` to `dest` (mode 0644), creating its directory first.
fn write_definition(bytes: &[u8], dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(Error::io("create dir", parent))?;
    }
    crate::atomic::write_file_atomically(dest, crate::atomic::FileMode::Exactly(0o644), |w| {
        w.write_all(bytes).map_err(Error::io("write", dest))
    })
}

/// Precompiled executables (`executables.<os>-<arch>` of a step.yml).
pub mod precompiled {
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

    /// Whether `BITRISE_EXPERIMENT_PRECOMPILED_STEPS` asks for precompiled executables.
    pub fn enabled_by_env() -> bool {
        std::env::var("BITRISE_EXPERIMENT_PRECOMPILED_STEPS")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
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
            &format!("{EXE_ID_PREFIX}{}", r.id),
            &format!("{}+{platform}.{hex}", r.version),
        )
    }

    /// The declared executable for this platform: `(storage_uri, lowercase sha256 hex)`.
    fn declared<'a>(r: &'a Resolved, platform: &str) -> Result<Option<(&'a str, String)>> {
        let Some((storage_uri, hash)) = step::executable(&r.step, platform) else {
            return Ok(None);
        };
        let want = hash
            .strip_prefix("sha256-")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Error::Steplib {
                what: format!("step {}@{}", r.id, r.version),
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
        let check = |dir: &Path| check_object(dir, &r.id, want);
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
        let check = |dir: &Path| check_object(dir, &r.id, &want);
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
        let names: Vec<String> = crate::scan::read_dir_names(dir)?
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        if names != [id] {
            return Err(bad(format!("holds {names:?}, not exactly {id:?}")));
        }
        let file = dir.join(id);
        let meta = fs::symlink_metadata(&file).map_err(Error::io("stat", &file))?;
        use std::os::unix::fs::PermissionsExt;
        if !meta.file_type().is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad("not an executable regular file".into()));
        }
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
        let what = format!("step {}@{} executable", r.id, r.version);
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
                let file = dir.join(&r.id);
                fetch::download(&url, None, &file, MAX_BYTES, &what, net)?;
                let digest = sha256_file(&file)?;
                if digest != want {
                    return Err(Error::Fetch {
                        what: format!("{what}: {}", crate::credentials::redact(&url)),
                        reason: format!("sha256 is {digest}, the step declares {want}"),
                    });
                }
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o755))
                    .map_err(Error::io("chmod", &file))?;
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

    fn sha256_file(path: &Path) -> Result<String> {
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
}

/// `step-info --library git::URL@REF`: clones the step's repository at `REF` into the store
/// (under `_git/<alias of URL>/<ref digest>`, re-fetched on every call since a branch moves) and
/// describes its step.yml.
pub fn git_step_info(store: &Store, spec: &str, net: &NetConfig) -> Result<StepInfo> {
    let (url, reference) = match spec.rsplit_once('@') {
        Some((u, r)) if !r.contains(['/', ':']) || !u.contains(['/', ':']) => (u, Some(r)),
        _ => (spec, None),
    };
    let (url, reference) = if url.is_empty() {
        (spec, None)
    } else {
        (url, reference)
    };
    let shown = crate::credentials::redact(url);
    let version = crate::layout::git_ref_version(reference.unwrap_or("HEAD"));
    let name = Name::new(GIT_ROUTE, &steplib::alias_of(&shown), &version)?;
    let what = format!("step {shown}@{}", reference.unwrap_or("HEAD"));
    let got = store.produce(&name, Rebuild::Always, Producer::GitStep, |stage| {
        let clone = stage.dir().join("clone");
        // The user's own URL: it may name a repository on this machine.
        fetch::git_clone(
            url,
            reference,
            None,
            &clone,
            &what,
            fetch::GitTransports::NetworkAndLocal,
            net,
        )?;
        tmp::remove_tree(&clone.join(".git"))?;
        stage.ingest(&clone)
    })?;
    let dir = store.layout().object_dir(&got.id);
    let yml = dir.join("step.yml");
    let step = steplib::read_step_yml_in(&dir, "step.yml").map_err(|e| match e {
        Error::Steplib { reason, .. } => Error::Steplib {
            what: what.clone(),
            reason: format!("step.yml: {reason}"),
        },
        e => e,
    })?;
    Ok(StepInfo {
        library: format!("git::{shown}"),
        id: shown,
        version: reference.unwrap_or_default().to_string(),
        original_version: reference.unwrap_or_default().to_string(),
        latest_version: String::new(),
        info: Value::Object(serde_json::Map::new()),
        step,
        definition_pth: yml.display().to_string(),
    })
}
