//! The build cache of Go steps: one store object per build key, made by `go build` in a private
//! copy of the step's source.
//!
//! The key (`store-format.md`, "Builds") is the BLAKE3 of a canonical text naming the source
//! object, the step id and package name, the build mode, the flags and the toolchain's
//! identity. The build is bound to `_build/<source object id>/go-<key>`: a cache hit is that
//! name resolved; a build whose source object is no longer named is collected by `gc`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::go::{self, Toolchain};
use crate::error::{Error, Result};
use crate::fetch::NetConfig;
use crate::hash::ObjectId;
use crate::layout::{BUILD_ROUTE, Name};
use crate::store::{Producer, Stage, Store, Tree};

/// The version of the key's text: bumped when what a key covers changes.
const KEY_VERSION: &str = "stepman-go-build 1";
/// The flags every build gets (reproducible: no temp paths, no VCS stamp).
const FLAGS: [&str; 2] = ["-trimpath", "-buildvcs=false"];
/// The `go` line of the `go.mod` written for a step without one (what the old tool writes).
const MIGRATED_GO_LINE: &str = "go 1.16";

/// How a step is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The step has a `go.mod`.
    Module,
    /// No `go.mod` ("GOPATH mode"): one is written into the build's copy,
    /// `module <package_name>` and `go 1.16`, as the old tool does.
    GopathMigrated,
}

/// What a Go step's build is: its inputs and its key.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The step's source object.
    pub source: ObjectId,
    /// The step id (the binary's file name).
    pub id: String,
    /// `toolkit.go.package_name`.
    pub package_name: String,
    /// The mode.
    pub mode: Mode,
    /// Whether the source vendors its dependencies (`vendor/`): built with `-mod=vendor`.
    pub vendored: bool,
    /// Offline: no module downloads (`GOPROXY=off`).
    pub offline: bool,
}

impl Plan {
    /// The plan for step `id` whose source object `source` is at `dir`.
    pub fn new(source: ObjectId, dir: &Path, id: &str, package_name: &str, offline: bool) -> Plan {
        let mode = if dir.join("go.mod").is_file() {
            Mode::Module
        } else {
            Mode::GopathMigrated
        };
        Plan {
            source,
            id: id.to_string(),
            package_name: package_name.to_string(),
            mode,
            vendored: dir.join("vendor").is_dir(),
            offline,
        }
    }

    /// The `go build` arguments after `build`.
    fn args(&self, out: &Path) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = FLAGS.iter().map(Into::into).collect();
        if self.vendored {
            a.push("-mod=vendor".into());
        }
        a.push("-o".into());
        a.push(out.into());
        a.push(".".into());
        a
    }

    /// The canonical text the key hashes.
    pub fn key_text(&self, tc: &Toolchain) -> String {
        let mut t = format!(
            "{KEY_VERSION}\nsource {}\nid {}\npackage {}\nmode {}\nvendor {}\nflags {}\n",
            self.source.to_hex(),
            self.id,
            self.package_name,
            match self.mode {
                Mode::Module => "module",
                Mode::GopathMigrated => "gopath-migrated",
            },
            self.vendored,
            FLAGS.join(" "),
        );
        for var in go::IDENTITY_VARS {
            let v = tc.identity.get(var).map_or("", String::as_str);
            t.push_str(&format!("{var}={v}\n"));
        }
        t
    }

    /// The build's key: BLAKE3 of [`Plan::key_text`], in hex.
    pub fn key(&self, tc: &Toolchain) -> String {
        blake3::hash(self.key_text(tc).as_bytes())
            .to_hex()
            .to_string()
    }

    /// The build's store name: `_build/<source object id>/go-<key>`.
    pub fn name(&self, tc: &Toolchain) -> Result<Name> {
        Name::new(
            BUILD_ROUTE,
            &self.source.to_hex(),
            &format!("go-{}", self.key(tc)),
        )
    }
}

/// A build found or made.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its name.
    pub name: Name,
    /// Its object (one file, named by the step id, executable).
    pub id: ObjectId,
    /// Where it came from: the build cache, the fleet's remote, or `go build` now.
    pub came: crate::remote::Came,
    /// The build's key.
    pub key: String,
}

/// Finds the build of `plan` with `tc`, or runs it: once among concurrent callers (the others
/// wait for it on the name lock, and stop on the store's interrupt).
pub fn build(store: &Store, plan: &Plan, tc: &Toolchain, net: &NetConfig) -> Result<Built> {
    let name = plan.name(tc)?;
    // Shared through the fleet's remote only when the binary cannot depend on this host's C
    // library: a cgo build links the libc it was built against, which another host may lack.
    let remote = net.remote.as_deref().filter(|_| tc.links_no_c());
    let (made, came) = crate::remote::produce_through(
        store,
        remote,
        &name,
        Producer::GoBuild,
        &net.cancel,
        |dir| build_shape(dir, &plan.id),
        |stage| run_build(store, stage, plan, tc, net),
    )?;
    Ok(Built {
        name,
        id: made.id,
        came,
        key: plan.key(tc),
    })
}

/// Whether `dir` is what a build of step `id` makes: one regular file named `id`, executable.
/// A tree from the fleet's remote is checked so before it is used (its hash says only that it
/// is the tree its name claims).
fn build_shape(dir: &Path, id: &str) -> std::result::Result<(), String> {
    crate::scan::one_executable(dir, id).unwrap_or_else(|e| Err(e.describe()))
}

/// Copies the source into the stage, runs `go build` there and makes the tree of the binary.
fn run_build(
    store: &Store,
    stage: &mut Stage<'_>,
    plan: &Plan,
    tc: &Toolchain,
    net: &NetConfig,
) -> Result<Tree> {
    let what = format!("step {}", plan.id);
    let src = stage.dir().join("src");
    let source_dir = store.layout().object_dir(&plan.source);
    // Under the store lock: no gc removes the source object while it is copied.
    store.read_locked(|| crate::export::copy_tree(&source_dir, &src))?;
    if plan.mode == Mode::GopathMigrated {
        let gomod = src.join("go.mod");
        fs::write(
            &gomod,
            format!("module {}\n\n{MIGRATED_GO_LINE}\n", plan.package_name),
        )
        .map_err(Error::io("write", &gomod))?;
    }
    let out_dir = stage.dir().join("out");
    fs::create_dir(&out_dir).map_err(Error::io("create dir", &out_dir))?;
    let bin = out_dir.join(&plan.id);
    let log = stage.dir().join("build.log");
    let log_file = fs::File::create(&log).map_err(Error::io("create", &log))?;
    let log_err = log_file.try_clone().map_err(Error::io("open", &log))?;

    let go = tc.goroot.join("bin").join("go");
    let mut cmd = Command::new(&go);
    go::apply_env(&mut cmd, Some(&tc.goroot));
    if plan.offline || plan.vendored {
        cmd.env("GOPROXY", "off");
    }
    let unset = |v: &str| std::env::var_os(v).is_none_or(|x| x.is_empty());
    if unset("GOCACHE") && unset("XDG_CACHE_HOME") && unset("HOME") {
        cmd.env("GOCACHE", stage.dir().join("gocache"));
    }
    if unset("GOPATH") && unset("HOME") {
        cmd.env("GOPATH", stage.dir().join("gopath"));
    }
    cmd.arg("build")
        .args(plan.args(&bin))
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    log::info!(
        "building {what} with {} ({} mode{})",
        tc.version,
        match plan.mode {
            Mode::Module => "module",
            Mode::GopathMigrated => "GOPATH-migrated",
        },
        if plan.vendored { ", vendored" } else { "" }
    );
    let status = crate::sys::run_cancellable(&mut cmd, &net.cancel, Duration::from_millis(50))
        .map_err(|e| match e {
            crate::sys::RunError::Cancelled => Error::Cancelled,
            crate::sys::RunError::Io(e) => Error::Toolchain {
                reason: format!("cannot run {}: {e}", go.display()),
            },
        })?;
    if !status.success() {
        let output = fs::read(&log).unwrap_or_default();
        return Err(Error::Build {
            what,
            status: status.to_string(),
            note: String::new(),
            output: go::first_lines(&String::from_utf8_lossy(&output), 20),
        });
    }
    crate::sys::set_mode(&bin, 0o755).map_err(Error::io("chmod", &bin))?;
    stage.ingest(&out_dir)
}
