//! `--prepare`: a step activated and ready to run, with the command that runs it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::activation::{
    Precompiled, activate_with, read_definition_for, try_precompiled, write_definition_if,
};
use super::resolve::Resolved;
use super::source::download;
use crate::error::{Error, Result};
use crate::fetch::NetConfig;
use crate::hash::ObjectId;
use crate::retry::Race;
use crate::store::Store;
use crate::toolkit::build::{self, Built, Plan};
use crate::toolkit::go::{self, Toolchain};
use crate::toolkit::{BuildStatus, Toolkit, ToolkitKind};

/// How [`activate_prepared`] and [`download_prepared`] prepare a step.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Which Go toolchain builds Go steps.
    pub go: go::Choice,
    /// Whether a precompiled executable is used when the step has one (then nothing is built).
    pub precompiled: Precompiled,
}

/// What `--prepare` reports (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// Step id.
    pub id: String,
    /// Step version.
    pub version: String,
    /// The step's toolkit.
    pub toolkit: ToolkitKind,
    /// The command that runs the step (argv).
    pub run: Vec<String>,
    /// Whether it was built now, found built, or needed no build.
    pub build: BuildStatus,
    /// Where the step was activated (absolute); none for a download.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The step's source object (none when only a precompiled executable was activated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The build's object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The build's key (`store-format.md`, "Builds").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
    /// The Go toolchain that built it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<Toolchain>,
    /// True when the step's precompiled executable is what runs.
    pub precompiled: bool,
    /// The build's store name, when the hosts of a fleet may share it (its toolchain links no
    /// C): what `preload --push` uploads.
    #[serde(skip)]
    shared_build: Option<crate::layout::Name>,
}

impl Prepared {
    /// The name of its build when the hosts of a fleet may share it: a Go build whose
    /// toolchain links no C (`CGO_ENABLED=0`; store-format.md §12).
    pub fn shared_build(&self) -> Option<crate::layout::Name> {
        self.shared_build.clone()
    }

    fn new(r: &Resolved, toolkit: ToolkitKind) -> Prepared {
        Prepared {
            id: r.picked.id.clone(),
            version: r.picked.version.clone(),
            toolkit,
            run: Vec::new(),
            build: BuildStatus::None,
            path: None,
            source: None,
            binary: None,
            build_key: None,
            go: None,
            precompiled: false,
            shared_build: None,
        }
    }
}

fn what(r: &Resolved) -> String {
    format!("step {}@{}", r.picked.id, r.picked.version)
}

/// Activates the step into `dest` (as [`activate_with`]) ready to run: a Go step's binary is
/// built (or found in the build cache) and activated with the source as `dest/<id>`, in the same
/// swap; a bash step runs as `bash dest/<entry file>`. A toolkit that is not supported is
/// refused before anything is done. When the build fails, the source is activated all the same
/// and the error says so.
pub fn activate_prepared(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    opts: &PrepareOptions,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<Prepared> {
    let toolkit = Toolkit::of(&r.picked.step, &what(r))?;
    let mut out = Prepared::new(r, toolkit.kind());
    store.check_outside(dest)?;
    if let Some(yml) = copy_yml {
        store.check_outside(yml)?;
    }
    if opts.precompiled == Precompiled::Use {
        let definition = read_definition_for(store, r, copy_yml)?;
        if try_precompiled(store, r, dest, replace, net)?.is_some() {
            write_definition_if(definition)?;
            let at = absolute(dest)?;
            out.run = vec![at.join(&r.picked.id).display().to_string()];
            out.path = Some(at);
            out.precompiled = true;
            return Ok(out);
        }
    }
    match toolkit {
        Toolkit::Bash { entry_file } => {
            let id = activate_with(store, r, dest, copy_yml, Precompiled::Skip, replace, net)?;
            let at = absolute(dest)?;
            out.run = vec!["bash".into(), at.join(&entry_file).display().to_string()];
            out.source = Some(id.to_hex());
            out.path = Some(at);
            Ok(out)
        }
        Toolkit::Go { package_name } => {
            let definition = read_definition_for(store, r, copy_yml)?;
            let tc = go::find(store, &opts.go, net)?;
            let name = r.name()?;
            let mut race = Race::new(Race::REDO);
            let (id, built) = loop {
                let (_, built) = match build_go(store, r, &package_name, &tc, net) {
                    Ok(b) => b,
                    Err(Error::Build {
                        what,
                        status,
                        output,
                        ..
                    }) => {
                        let note = activate_source_anyway(store, r, dest, copy_yml, replace, net);
                        return Err(Error::Build {
                            what,
                            status,
                            note,
                            output,
                        });
                    }
                    Err(e) => return Err(e),
                };
                match store.export_replacing_with_file(
                    &name,
                    dest,
                    replace,
                    (&built.name, &r.picked.id),
                ) {
                    Ok(id) => break (id, built),
                    // The step was deleted and collected (its build with it) since: download
                    // and build again (`crate::retry`).
                    Err(Error::NameNotFound { .. }) if race.again() => {}
                    Err(e) => return Err(e),
                }
            };
            write_definition_if(definition)?;
            let at = absolute(dest)?;
            out.run = vec![at.join(&r.picked.id).display().to_string()];
            out.path = Some(at);
            fill_build(&mut out, &id, built, tc);
            Ok(out)
        }
    }
}

/// After a failed build, the source is activated all the same (what a user debugs the build
/// in); the note the error gets.
fn activate_source_anyway(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    replace: crate::Replace,
    net: &NetConfig,
) -> String {
    match activate_with(store, r, dest, copy_yml, Precompiled::Skip, replace, net) {
        Ok(_) => format!(
            "; the step's source is activated in {} (without its binary)",
            dest.display()
        ),
        Err(e) => format!("; activating its source failed too: {}", e.describe()),
    }
}

/// The step's source (and, for a Go step, its build) into the store, ready to run: `run` is the
/// binary inside the store (read-only) or, for a bash step, nothing to run without activating.
pub fn download_prepared(
    store: &Store,
    r: &Resolved,
    opts: &PrepareOptions,
    net: &NetConfig,
) -> Result<Prepared> {
    let toolkit = Toolkit::of(&r.picked.step, &what(r))?;
    let mut out = Prepared::new(r, toolkit.kind());
    match toolkit {
        Toolkit::Bash { .. } => {
            out.source = Some(download(store, r, net)?.id.to_hex());
            Ok(out)
        }
        Toolkit::Go { package_name } => {
            let tc = go::find(store, &opts.go, net)?;
            let (source, built) = build_go(store, r, &package_name, &tc, net)?;
            out.run = vec![
                store
                    .layout()
                    .object_dir(&built.id)
                    .join(&r.picked.id)
                    .display()
                    .to_string(),
            ];
            fill_build(&mut out, &source, built, tc);
            Ok(out)
        }
    }
}

/// Downloads the source and builds it (or finds the build): `(source object, build)`.
fn build_go(
    store: &Store,
    r: &Resolved,
    package_name: &str,
    tc: &Toolchain,
    net: &NetConfig,
) -> Result<(ObjectId, Built)> {
    let source = download(store, r, net)?.id;
    let dir = store.layout().object_dir(&source);
    let plan = Plan::new(source, &dir, &r.picked.id, package_name, net.offline);
    let built = build::build(store, &plan, tc, net).map_err(|e| match e {
        Error::Build {
            status,
            note,
            output,
            ..
        } => Error::Build {
            what: what(r),
            status,
            note,
            output,
        },
        e => e,
    })?;
    Ok((source, built))
}

fn fill_build(out: &mut Prepared, source: &ObjectId, built: Built, tc: Toolchain) {
    out.build = match built.came {
        crate::remote::Came::Store => BuildStatus::Cached,
        crate::remote::Came::Remote => BuildStatus::Remote,
        crate::remote::Came::Origin => BuildStatus::Built,
    };
    out.source = Some(source.to_hex());
    out.binary = Some(built.id.to_hex());
    out.build_key = Some(built.key);
    out.shared_build = tc.links_no_c().then_some(built.name);
    out.go = Some(tc);
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).map_err(Error::io("resolve", p))
}
