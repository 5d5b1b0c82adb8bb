//! `stepman toolkit install go`: the official Go archive, verified by its sha256 before anything
//! is published, ingested with the same vetting as any archive and named
//! `_toolkits/go/<version>` (one download among concurrent installers: single flight on the
//! name).

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::layout::{GO_TOOLKIT_ID, Name, TOOLKIT_ROUTE};
use crate::step::precompiled::{platform, sha256_file};
use crate::store::{Producer, Rebuild, Store};

/// The Go version installed when none is given (the oldest one a build accepts).
pub const DEFAULT_GO_VERSION: &str = "1.22.12";
/// Where archives are downloaded from unless `STEPMAN_GO_DOWNLOAD_BASE` says otherwise: the Go
/// project's download site (`<base>/go<version>.<os>-<arch>.tar.gz`).
pub const DEFAULT_GO_DOWNLOAD_BASE: &str = "https://go.dev/dl";
/// The sha256 of the default version's archives, as the Go project publishes them.
const PINNED: [(&str, &str); 4] = [
    (
        "linux-amd64",
        "4fa4f869b0f7fc6bb1eb2660e74657fbf04cdd290b5aef905585c86051b34d43",
    ),
    (
        "linux-arm64",
        "fd017e647ec28525e86ae8203236e0653242722a7436929b1f775744e26278e7",
    ),
    (
        "darwin-amd64",
        "e7bbe07e96f0bd3df04225090fe1e7852ed33af37c43a23e16edbbb3b90a5b7c",
    ),
    (
        "darwin-arm64",
        "416c35218edb9d20990b5d8fc87be655d8b39926f15524ea35c66ee70273050d",
    ),
];
/// Largest archive accepted.
const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// What [`install_go`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// The Go version.
    pub version: String,
    /// Its `GOROOT` (inside the store object; read-only).
    pub goroot: PathBuf,
    /// The object.
    pub object: String,
    /// False when it was installed already.
    pub downloaded: bool,
}

/// The download base: `STEPMAN_GO_DOWNLOAD_BASE`, else [`DEFAULT_GO_DOWNLOAD_BASE`].
/// An empty value counts as unset; one that is not an `http://` or `https://` URL is an
/// [`crate::Error::BadSetting`].
pub fn download_base() -> Result<String> {
    const VAR: &str = "STEPMAN_GO_DOWNLOAD_BASE";
    let Some(b) = crate::settings::get(VAR)? else {
        return Ok(DEFAULT_GO_DOWNLOAD_BASE.to_string());
    };
    let lower = b.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(crate::Error::BadSetting {
            var: VAR,
            value: b,
            expected: "an https:// or http:// URL",
        });
    }
    Ok(b.trim_end_matches('/').to_string())
}

fn valid_version(v: &str) -> bool {
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, rest) = v.split_at(digits_end);
    let parts: Vec<&str> = num.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| !p.is_empty())
        && (rest.is_empty()
            || ["rc", "beta"].iter().any(|pre| {
                rest.strip_prefix(pre)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }))
}

/// Installs Go `version` (default [`DEFAULT_GO_VERSION`]) for this platform, verified against
/// `sha256` (64 hex digits; the pinned hash when not given, which only the default version
/// has). Installing a version that is installed already downloads nothing.
pub fn install_go(
    store: &Store,
    version: Option<&str>,
    sha256: Option<&str>,
    net: &NetConfig,
) -> Result<Installed> {
    let version = version
        .map(|v| v.trim().trim_start_matches("go"))
        .unwrap_or(DEFAULT_GO_VERSION);
    let bad = |reason: String| Error::Toolchain { reason };
    if !valid_version(version) {
        return Err(bad(format!(
            "{version:?} is not a Go version (1.22.12, 1.23rc1, …)"
        )));
    }
    let platform = platform();
    let want = match sha256 {
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("--sha256 {h:?} is not 64 hex digits")));
            }
            h
        }
        None => PINNED
            .iter()
            .find(|(p, _)| version == DEFAULT_GO_VERSION && *p == platform)
            .map(|(_, h)| h.to_string())
            .ok_or_else(|| {
                bad(format!(
                    "no sha256 is pinned for go{version} on {platform}: give it with --sha256 \
                     (the Go project lists it at https://go.dev/dl/)"
                ))
            })?,
    };
    let name = Name::new(TOOLKIT_ROUTE, GO_TOOLKIT_ID, version)?;
    let file = format!("go{version}.{platform}.tar.gz");
    let url = format!("{}/{file}", download_base()?);
    let what = format!("Go toolkit go{version}");
    if store.lookup(&name)?.is_none() && net.offline {
        return Err(Error::Offline {
            what,
            cached: Vec::new(),
        });
    }
    let made = store.produce(&name, Rebuild::Never, Producer::Toolkit, |stage| {
        let archive = stage.dir().join(&file);
        fetch::download(&url, None, &archive, MAX_ARCHIVE_BYTES, &what, net)?;
        let got = sha256_file(&archive)?;
        if got != want {
            return Err(Error::Fetch {
                what: format!("{what}: {}", crate::credentials::redact(&url)),
                reason: format!("sha256 is {got}, expected {want}; nothing was installed"),
            });
        }
        let tree = stage.ingest(&archive)?;
        let go = stage.tree_dir().join("go/bin/go");
        if !go.is_file() {
            return Err(Error::Toolchain {
                reason: format!("{url}: the archive has no go/bin/go; nothing was installed"),
            });
        }
        Ok(tree)
    })?;
    Ok(Installed {
        version: version.to_string(),
        goroot: store.layout().object_dir(&made.id).join("go"),
        object: made.id.to_hex(),
        downloaded: made.ingested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1.22.12", "1.23", "1.23rc1", "1.24beta2"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "", "1", "1..2", "1.2.3.4", "1.2x", "../1.2", "1.2rc", "1.2-rc1",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
