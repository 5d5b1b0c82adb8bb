//! A step's source into the store: the first of its download locations that works, verified,
//! one download among concurrent callers.

use std::path::Path;

use super::reason_of;
use super::resolve::Resolved;
use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::steplib;
use crate::steplib::model::step;
use crate::store::{Imported, Producer, Stage, Store, Tree};
use crate::tmp;

/// Largest step archive accepted.
const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// Makes sure the step's source is in the store; one download among concurrent callers.
pub fn download(store: &Store, r: &Resolved, net: &NetConfig) -> Result<Imported> {
    download_from(store, r, net).map(|(got, _)| got)
}

/// [`download`], and where the source came from: the store, the fleet's remote, or the origin.
pub fn download_from(
    store: &Store,
    r: &Resolved,
    net: &NetConfig,
) -> Result<(Imported, crate::remote::Came)> {
    download_while_flushing(store, r, net, None)
}

/// [`download_from`], running `hook` with the tree this process downloads from the origin once
/// it is written, while it is flushed ([`crate::ingest::WhileFlushing`]).
pub(crate) fn download_while_flushing(
    store: &Store,
    r: &Resolved,
    net: &NetConfig,
    hook: Option<crate::ingest::WhileFlushing>,
) -> Result<(Imported, crate::remote::Came)> {
    let name = r.name()?;
    if let Some(id) = store.lookup(&name)? {
        let found = Imported {
            id,
            ingested: false,
        };
        return Ok((found, crate::remote::Came::Store));
    }
    if net.offline && !all_local(r) {
        let mut cached: Vec<String> = store
            .names_in_route(&r.collection.alias)?
            .into_iter()
            .filter(|(i, _)| i == &r.picked.id)
            .map(|(_, v)| v)
            .collect();
        cached.sort_by(|a, b| {
            steplib::version::Version::parse(a).cmp(&steplib::version::Version::parse(b))
        });
        return Err(Error::Offline {
            what: format!("step {}@{}", r.picked.id, r.picked.version),
            cached,
        });
    }
    // Read-through: the fleet's remote before the origin.
    crate::remote::produce_through(
        store,
        net.remote.as_deref(),
        &name,
        Producer::StepSource,
        &net.cancel,
        |_| Ok(()),
        |stage| {
            if let Some(h) = hook {
                stage.while_flushing(h);
            }
            fetch_source(stage, r, net)
        },
    )
}

fn all_local(r: &Resolved) -> bool {
    let base = r.opened.meta.root.as_deref().map(Path::new);
    let locs = &r.opened.meta.steplib.download_locations;
    !locs.is_empty()
        && locs.iter().all(|l| {
            l.kind != "git" && matches!(fetch::locate(&l.src, base), Ok(fetch::Location::Local(_)))
        })
}

/// The tree of the archive at the http(s) URL `url`, ingested as it downloads (no temp file of
/// it). A zip that cannot be read as a stream (an entry stored with a data descriptor) is
/// downloaded again into a file of the stage and read through its central directory.
fn fetch_streamed(stage: &mut Stage<'_>, url: &str, what: &str, net: &NetConfig) -> Result<Tree> {
    let shown = crate::credentials::redact(url);
    let streamed = fetch::stream(url, MAX_ARCHIVE_BYTES, what, net, |body| {
        stage.ingest_stream(&shown, body)
    })?;
    match streamed {
        Ok(tree) => Ok(tree),
        Err(why) => {
            log::info!("{what}: {shown}: read from a file instead of as a stream: {why}");
            let archive = stage.dir().join("archive");
            fetch::download(url, None, &archive, MAX_ARCHIVE_BYTES, what, net)?;
            stage.ingest(&archive)
        }
    }
}

/// Writes the step's source into `stage`: the first of its download locations that works.
fn fetch_source(stage: &mut Stage<'_>, r: &Resolved, net: &NetConfig) -> Result<Tree> {
    let what = format!("step {}@{}", r.picked.id, r.picked.version);
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
                let url = format!("{}{}/{}/{file}", loc.src, r.picked.id, r.picked.version);
                let archive = stage.dir().join("archive");
                let remote_lib = base.is_none();
                let failed = |e: &Error| {
                    let shown = crate::credentials::redact(&url);
                    format!("{} {shown}: {}", loc.kind, reason_of(e))
                };
                match fetch::locate(&url, base) {
                    // Only a StepLib on this machine may point at this machine's files.
                    Ok(fetch::Location::Local(_)) if remote_lib => Err(format!(
                        "{} {}: a remote StepLib may not name local files",
                        loc.kind,
                        crate::credentials::redact(&url)
                    )),
                    Ok(fetch::Location::Http(_)) => {
                        fetch_streamed(stage, &url, &what, net).map_err(|e| failed(&e))
                    }
                    _ => fetch::download(&url, base, &archive, MAX_ARCHIVE_BYTES, &what, net)
                        .and_then(|_| stage.ingest(&archive))
                        .map_err(|e| failed(&e)),
                }
            }
            "git" => {
                let git = step::source_git(&r.picked.step);
                let commit = step::source_commit(&r.picked.step);
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
                                    Some(&r.picked.version),
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
