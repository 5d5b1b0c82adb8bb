//! The Go toolchain a build uses: which `go`, its identity, and the environment its child
//! processes get.
//!
//! Invariants:
//! - The toolchain is chosen in a documented order: `--go PATH` / `STEPMAN_GO` (then it must
//!   be suitable, or it is an error), else `go` on `PATH` when it is at least
//!   [`MIN_VERSION`], else the newest Go toolkit in the store (`_toolkits/go/<version>`).
//! - The `go` that runs is `<GOROOT>/bin/go` of the chosen toolchain, with `GOROOT` set to it:
//!   a wrapper script on `PATH` is asked once for its `GOROOT` and then not used again.
//! - A toolchain's identity is probed once per `go` file and caller identity variables, and
//!   kept in the store (`_toolchains/go/<key>`, `store-format.md`, "Builds").
//! - Every child gets the environment `apply_env` sets: the caller's, less every `GO*`
//!   and `CGO_*` variable but the documented pass-through ones, plus `GOROOT`,
//!   `GO111MODULE=on`, `GOTOOLCHAIN=local`, `GOWORK=off`. The identity is probed with that
//!   same environment, so what the key says is what the build sees.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::{GO_TOOLKIT_ID, Name, TOOLCHAIN_ROUTE, TOOLKIT_ROUTE};
use crate::steplib::version::Version;
use crate::store::{Producer, Rebuild, Store};

/// The oldest Go a build accepts (the old tool's minimum).
pub const MIN_VERSION: (u64, u64, u64) = (1, 22, 12);

/// Caller variables a build passes on: where caches live and how modules are fetched (none of
/// them changes the binary), and the ones that do change it but are part of the identity
/// ([`IDENTITY_VARS`]).
const PASS_THROUGH: [&str; 10] = [
    "GOCACHE",
    "GOMODCACHE",
    "GOPATH",
    "GOPROXY",
    "GOPRIVATE",
    "GONOPROXY",
    "GONOSUMDB",
    "GOINSECURE",
    "GOTMPDIR",
    "GOENV",
];

/// What `go env` reports that changes a build's output: part of the build key.
pub const IDENTITY_VARS: [&str; 14] = [
    "GOVERSION",
    "GOOS",
    "GOARCH",
    "CGO_ENABLED",
    "GOAMD64",
    "GOARM",
    "GOARM64",
    "GO386",
    "GOMIPS",
    "GOMIPS64",
    "GOPPC64",
    "GORISCV64",
    "GOWASM",
    "GOEXPERIMENT",
];

/// Identity variables a caller may set for a build: all of [`IDENTITY_VARS`] but `GOVERSION`,
/// `GOOS` and `GOARCH`, which come from the toolchain (a build is for the host).
const IDENTITY_PASS_THROUGH: &[&str] = IDENTITY_VARS.split_at(3).1;

/// Where a toolchain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `--go` or `STEPMAN_GO`.
    Explicit,
    /// `go` on `PATH`.
    Path,
    /// A Go toolkit in the store.
    Store,
}

/// A chosen Go toolchain.
#[derive(Debug, Clone, Serialize)]
pub struct Toolchain {
    /// Its `GOROOT`.
    pub goroot: PathBuf,
    /// `GOVERSION` (`go1.22.12`).
    pub version: String,
    /// Where it came from.
    pub origin: Origin,
    /// The [`IDENTITY_VARS`] values `go env` reports, in that order.
    #[serde(skip)]
    pub identity: BTreeMap<String, String>,
}

impl Toolchain {
    /// Whether its builds link no C (`CGO_ENABLED=0` in its identity): such a binary needs
    /// nothing of the host beyond its OS and CPU (`GOOS`, `GOARCH` and the rest of the key), so
    /// a fleet's hosts may share it.
    pub fn links_no_c(&self) -> bool {
        self.identity.get("CGO_ENABLED").map(String::as_str) == Some("0")
    }
}

/// How to choose the toolchain.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// `--go PATH` or `STEPMAN_GO`: this `go` and no other.
    pub explicit: Option<PathBuf>,
}

impl Choice {
    /// `STEPMAN_GO`, when set and not empty.
    pub fn from_env() -> Choice {
        Choice {
            explicit: std::env::var_os("STEPMAN_GO")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Chooses the toolchain (module doc); when there is none, installs the default Go toolkit into
/// the store (`install::install_go`, the pinned version and hash) unless `net` is offline. An
/// error says what was tried.
pub fn find(store: &Store, choice: &Choice, net: &crate::fetch::NetConfig) -> Result<Toolchain> {
    if let Some(go) = &choice.explicit {
        let tc = probe(store, go, Origin::Explicit)?;
        check_version(&tc, go)?;
        return Ok(tc);
    }
    let mut tried = Vec::new();
    let path_go = which("go");
    let path_go_found = path_go.is_some();
    match path_go {
        Some(go) => match probe(store, &go, Origin::Path) {
            Ok(tc) => match check_version(&tc, &go) {
                Ok(()) => return Ok(tc),
                Err(e) => tried.push(e.describe()),
            },
            Err(e) => tried.push(e.describe()),
        },
        None => tried.push("no `go` on PATH".into()),
    }
    match installed(store)? {
        Some(goroot) => {
            let tc = probe(store, &goroot.join("bin").join("go"), Origin::Store)?;
            // An unsuitable `go` on PATH is worth a warning; no `go` there is the normal case.
            if path_go_found {
                log::warn!(
                    "{}; using the store's Go toolkit {}",
                    tried.join("; "),
                    tc.version
                );
            }
            Ok(tc)
        }
        None if !net.offline => {
            log::warn!(
                "{}; installing the Go toolkit go{} into the store",
                tried.join("; "),
                super::install::DEFAULT_GO_VERSION
            );
            let got = super::install::install_go(store, None, None, net).map_err(|e| {
                Error::Toolchain {
                    reason: format!(
                        "{}; and installing go{} failed: {}",
                        tried.join("; "),
                        super::install::DEFAULT_GO_VERSION,
                        e.describe()
                    ),
                }
            })?;
            probe(store, &got.goroot.join("bin").join("go"), Origin::Store)
        }
        None => Err(Error::Toolchain {
            reason: format!(
                "{}; and no Go toolkit is installed in the store (offline: run `stepman \
                 toolkit install go` first, or give one with --go PATH or STEPMAN_GO)",
                tried.join("; ")
            ),
        }),
    }
}

/// The `GOROOT` of the newest Go toolkit in the store at least [`MIN_VERSION`], if any.
pub fn installed(store: &Store) -> Result<Option<PathBuf>> {
    let mut versions: Vec<String> = store
        .names_in_route(TOOLKIT_ROUTE)?
        .into_iter()
        .filter(|(id, _)| id == GO_TOOLKIT_ID)
        .map(|(_, v)| v)
        .filter(|v| parse_version(&format!("go{v}")).is_some_and(|n| n >= MIN_VERSION))
        .collect();
    versions.sort_by(|a, b| Version::parse(a).cmp(&Version::parse(b)));
    let Some(v) = versions.pop() else {
        return Ok(None);
    };
    let (_, dir) = store.resolve(&Name::new(TOOLKIT_ROUTE, GO_TOOLKIT_ID, &v)?)?;
    Ok(Some(dir.join("go")))
}

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(exe))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn check_version(tc: &Toolchain, go: &Path) -> Result<()> {
    match parse_version(&tc.version) {
        Some(v) if v >= MIN_VERSION => Ok(()),
        _ => Err(Error::Toolchain {
            reason: format!(
                "{} is {}; a build needs Go {}.{}.{} or newer",
                go.display(),
                tc.version,
                MIN_VERSION.0,
                MIN_VERSION.1,
                MIN_VERSION.2
            ),
        }),
    }
}

/// `go1.22.12` → `(1, 22, 12)`; `go1.23rc1` → `(1, 23, 0)`; `None` for a devel build or
/// anything else.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("go")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

/// What a probe found, as the identity cache keeps it.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Probed {
    goroot: PathBuf,
    identity: BTreeMap<String, String>,
    /// [`file_stamp`] of `<goroot>/bin/go` when it was probed.
    real_stamp: String,
}

/// The file at `path` as far as a probe's result depends on it: canonical path, device, inode,
/// size, modification and change times. Replacing or rewriting the file changes it.
fn file_stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let canon = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&canon).ok()?;
    Some(format!(
        "{} {} {} {} {}.{} {}.{}",
        canon.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The identity cache's name for `go` with this environment: `_toolchains/go/<key>`, the key
/// the BLAKE3 of `go`'s [`file_stamp`] and the caller's identity variables.
fn cache_name(go: &Path) -> Option<Name> {
    let mut text = format!("stepman-go-identity 1\n{}\n", file_stamp(go)?);
    for var in IDENTITY_PASS_THROUGH {
        let v = std::env::var(var).unwrap_or_default();
        text.push_str(&format!("{var}={v}\n"));
    }
    let key = blake3::hash(text.as_bytes()).to_hex();
    Name::new(TOOLCHAIN_ROUTE, GO_TOOLKIT_ID, &key).ok()
}

const PROBED_FILE: &str = "toolchain.json";

/// [`probe_uncached`], remembered in the store: a toolchain whose `go` and real `go` are the
/// same files as when it was probed (and the caller's identity variables the same) is not run
/// again. A store that cannot be written only loses the cache.
fn probe(store: &Store, go: &Path, origin: Origin) -> Result<Toolchain> {
    let name = cache_name(go);
    if let Some(name) = &name
        && let Ok((_, dir)) = store.resolve(name)
        && let Ok(bytes) = std::fs::read(dir.join(PROBED_FILE))
        && let Ok(p) = serde_json::from_slice::<Probed>(&bytes)
        && file_stamp(&p.goroot.join("bin").join("go")).as_deref() == Some(p.real_stamp.as_str())
    {
        return Ok(Toolchain {
            version: p.identity.get("GOVERSION").cloned().unwrap_or_default(),
            goroot: p.goroot,
            origin,
            identity: p.identity,
        });
    }
    let tc = probe_uncached(go, origin)?;
    if let Some(name) = &name
        && let Some(real_stamp) = file_stamp(&tc.goroot.join("bin").join("go"))
    {
        let p = Probed {
            goroot: tc.goroot.clone(),
            identity: tc.identity.clone(),
            real_stamp,
        };
        let bytes = serde_json::to_vec_pretty(&p).unwrap_or_default();
        let made = store.produce(name, Rebuild::Always, Producer::Toolchain, |stage| {
            stage.write("go toolchain identity", |w| {
                w.add_file(PROBED_FILE, false, Some(bytes.len() as u64), &bytes[..])
            })
        });
        if let Err(e) = made {
            log::debug!(
                "not caching the identity of {}: {}",
                go.display(),
                e.describe()
            );
        }
    }
    Ok(tc)
}

/// Asks `go` (any `go`: a wrapper too) for its `GOROOT` and the identity, then the real
/// `<GOROOT>/bin/go` again with the build environment, so the identity is what a build sees.
fn probe_uncached(go: &Path, origin: Origin) -> Result<Toolchain> {
    let first = go_env(go, None, &["GOROOT"])?;
    let goroot = PathBuf::from(first.get("GOROOT").cloned().unwrap_or_default());
    if goroot.as_os_str().is_empty() || !goroot.is_absolute() {
        return Err(Error::Toolchain {
            reason: format!("{} reports no absolute GOROOT", go.display()),
        });
    }
    let real = goroot.join("bin").join("go");
    let identity = go_env(&real, Some(&goroot), &IDENTITY_VARS)?;
    let version = identity.get("GOVERSION").cloned().unwrap_or_default();
    if version.is_empty() {
        return Err(Error::Toolchain {
            reason: format!("{} reports no GOVERSION", real.display()),
        });
    }
    Ok(Toolchain {
        goroot,
        version,
        origin,
        identity,
    })
}

/// `go env -json VARS`, run with the build environment (`GOROOT` set when given).
fn go_env(go: &Path, goroot: Option<&Path>, vars: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut cmd = Command::new(go);
    apply_env(&mut cmd, goroot);
    cmd.arg("env").arg("-json").args(vars);
    cmd.stdin(Stdio::null());
    let out = cmd.output().map_err(|e| Error::Toolchain {
        reason: format!("cannot run {}: {e}", go.display()),
    })?;
    if !out.status.success() {
        return Err(Error::Toolchain {
            reason: format!(
                "{} env failed ({}): {}",
                go.display(),
                out.status,
                first_lines(&String::from_utf8_lossy(&out.stderr), 5)
            ),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Toolchain {
        reason: format!("{} env -json printed no JSON object: {e}", go.display()),
    })
}

/// Sets the build environment on `cmd` (module doc).
pub(crate) fn apply_env(cmd: &mut Command, goroot: Option<&Path>) {
    for (k, _) in std::env::vars_os() {
        if is_stripped(&k) {
            cmd.env_remove(&k);
        }
    }
    if let Some(root) = goroot {
        cmd.env("GOROOT", root);
        // The toolchain's own bin first, so `go` in a build's children is this one.
        let mut path = vec![root.join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&p));
        }
        if let Ok(joined) = std::env::join_paths(path) {
            cmd.env("PATH", joined);
        }
    }
    cmd.env("GO111MODULE", "on")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GOSUMDB", "off")
        .env("GOTELEMETRY", "off");
}

fn is_stripped(k: &OsString) -> bool {
    let Some(k) = k.to_str() else {
        return false;
    };
    (k.starts_with("GO") || k.starts_with("CGO_"))
        && !PASS_THROUGH.contains(&k)
        && !IDENTITY_PASS_THROUGH.contains(&k)
}

/// The first `n` non-empty lines of `text`.
pub(crate) fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("go1.22.12"), Some((1, 22, 12)));
        assert_eq!(parse_version("go1.23rc1"), Some((1, 23, 0)));
        assert_eq!(parse_version("go1.22"), Some((1, 22, 0)));
        assert_eq!(parse_version("devel go1.24-abc"), None);
        assert!(parse_version("go1.22.11").unwrap() < MIN_VERSION);
        assert!(parse_version("go1.27.3").unwrap() >= MIN_VERSION);
    }

    #[test]
    fn stripped_variables() {
        for k in [
            "GOROOT",
            "GOFLAGS",
            "GOOS",
            "GOARCH",
            "GOTOOLCHAIN",
            "CGO_CFLAGS",
        ] {
            assert!(is_stripped(&k.into()), "{k}");
        }
        for k in [
            "GOCACHE",
            "GOPROXY",
            "CGO_ENABLED",
            "GOAMD64",
            "HOME",
            "PATH",
        ] {
            assert!(!is_stripped(&k.into()), "{k}");
        }
    }
}
