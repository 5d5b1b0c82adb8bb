//! The store: opening and creating it, ingesting and publishing objects, binding and resolving
//! names, and copying objects out.
//!
//! Invariants (normative text: `store-format.md`):
//! - Every write follows one recipe: a unique temp dir under `tmp/`, hashing while writing, fsync,
//!   a no-replace rename into `objects/`, fsync of the parent. Finding the object already there
//!   means someone published the same bytes: success.
//! - An object directory that exists is complete; it is never modified afterwards.
//! - A name is a symlink replaced with one `rename(2)`: readers see the old target or the new one.
//! - Objects are published and names bound under the shared store lock, so `gc` (exclusive) never
//!   sees an object between its publish and its name, nor removes one being copied out.
//! - Cache hits (`resolve`, `export`) write nothing into the store.
//! - Every object is made by a producer through `Store::produce` (an import without a name
//!   alone skips its name lock): a producer only writes a tree into its `Stage`; the store takes
//!   the name lock, looks at the name again, publishes, binds and cleans up, so no producer can
//!   forget a step or order them differently.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use crate::hash::ObjectId;
use crate::ingest::{self, Durability, Limits};
use crate::layout::{FORMAT_MAJOR, Layout, Name, TempKind};
use crate::lock;
use crate::retry::Race;
use crate::sys::{self, Publish};
use crate::tmp::{self, SweepReport, TempDir};

/// An opened store.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    limits: Limits,
    durability: Durability,
    /// Read-only stores layered under this one: names missing here are looked up in them, in
    /// order; nothing is ever written to them.
    lower: Vec<Store>,
    /// When set, waits for another process's fill stop early with [`Error::Cancelled`].
    interrupt: Option<Arc<AtomicBool>>,
    /// The uid that owns the store directory: the only user that writes to it.
    owner: u32,
}

/// What `Store::produce` (an import, a download, a setup) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// The object's id.
    pub id: ObjectId,
    /// False when the name was already bound (as the fill allows) and nothing was made.
    pub ingested: bool,
}

/// What an import did (the name callers of [`Store::import_if_missing`] know).
pub type Imported = Produced;

impl Produced {
    fn found(id: ObjectId) -> Produced {
        Produced {
            id,
            ingested: false,
        }
    }
}

/// Whether a fill (a setup, a download) uses what a name is already bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Use the bound object; produce one only when the name is unbound.
    IfMissing,
    /// Produce it again even when the name is bound (an update), still after waiting for a
    /// fill of the same name that is running.
    Again,
}

impl From<Fill> for Rebuild<'_> {
    fn from(f: Fill) -> Self {
        match f {
            Fill::IfMissing => Rebuild::Never,
            Fill::Again => Rebuild::Always,
        }
    }
}

/// When [`Store::produce`] makes the object of a name that is bound already.
#[derive(Clone, Copy)]
pub(crate) enum Rebuild<'a> {
    /// Never: a bound name is the result (looked up before the name lock and again under it).
    Never,
    /// Always (an import, an update, a branch that moves); a running fill is still waited for.
    Always,
    /// Unless, under the name lock, the name is bound to an object whose directory passes the
    /// check (a bound object that failed it: another process may have fetched it again).
    UnlessValid(&'a dyn Fn(&Path) -> Result<()>),
    /// Unless, under the name lock, the name was bound after this time (the bind time the caller
    /// saw): a refresh that another process finished while this one waited is the result.
    UnlessBoundSince(std::time::SystemTime),
}

/// Who produces an object: names its temp dirs (`tmp/<kind>-<random>`) and says, in a refusal,
/// what needed write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Producer {
    /// `store import`.
    Import,
    /// A step version's source (`activate`, `preload`).
    StepSource,
    /// A step version's precompiled executable.
    Executable,
    /// A git ref's tree (`git::URL@REF`: `activate`, `download`, `step-info`).
    GitStep,
    /// A collection object (`setup`, `update`).
    Collection,
    /// A Go step's build (`--prepare`).
    GoBuild,
    /// A Go toolchain's probed identity (`--prepare`).
    Toolchain,
    /// A toolkit (`toolkit install`).
    Toolkit,
    /// The record of a legacy view written for a collection (`legacy-view`).
    LegacyView,
    /// A document of a StepLib API, cached (`step-info`, `activate`, … of an API collection).
    ApiDocument,
    /// A step.yml of a collection as a file of its own (`step-info`'s `definition_pth`).
    Definition,
}

impl Producer {
    fn temp_kind(self) -> TempKind {
        match self {
            Producer::Import => TempKind::Ingest,
            Producer::StepSource => TempKind::Download,
            Producer::Executable => TempKind::Executable,
            Producer::GitStep => TempKind::Git,
            Producer::Collection => TempKind::Steplib,
            Producer::GoBuild => TempKind::Build,
            Producer::Toolchain => TempKind::Toolchain,
            Producer::Toolkit => TempKind::Toolkit,
            Producer::LegacyView => TempKind::View,
            Producer::ApiDocument => TempKind::ApiDoc,
            Producer::Definition => TempKind::Steplib,
        }
    }

    fn op(self) -> &'static str {
        match self {
            Producer::Import => "import",
            Producer::StepSource => "download a step",
            Producer::Executable => "download an executable",
            Producer::GitStep => "clone a step",
            Producer::Collection => "set up a collection",
            Producer::GoBuild => "build a step",
            Producer::Toolchain => "remember a toolchain",
            Producer::Toolkit => "install a toolkit",
            Producer::LegacyView => "record a legacy view",
            Producer::ApiDocument => "cache a StepLib API document",
            Producer::Definition => "keep a step.yml",
        }
    }
}

/// A producer's work area: one temp dir of the store, in which the producer writes one tree
/// (through [`Stage::write`] or [`Stage::ingest`]) and may keep its own files ([`Stage::dir`]).
/// The store publishes and binds the tree; the temp dir is removed when the stage ends.
pub(crate) struct Stage<'s> {
    store: &'s Store,
    tmp: TempDir,
    /// Handed to every tree writer of the stage ([`Stage::while_flushing`]).
    while_flushing: Option<ingest::WhileFlushing>,
}

/// A finished tree of a [`Stage`]: only the stage makes one, so a producer that returns one has
/// written its tree there (and hashed it).
#[must_use]
pub(crate) struct Tree {
    id: ObjectId,
    /// The name's object as it is ([`Stage::keep`]): nothing to publish, the name is bound again.
    kept: bool,
}

impl Tree {
    /// The tree's id (what it hashed to).
    pub(crate) fn id(&self) -> ObjectId {
        self.id
    }
}

impl Stage<'_> {
    /// The stage's temp dir, for the producer's own files (a download, a clone): any name but
    /// the tree's ([`crate::layout::TEMP_TREE`]).
    pub(crate) fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the tree is written (to look at what [`Stage::ingest`] made before returning it).
    pub(crate) fn tree_dir(&self) -> PathBuf {
        Stage::tree_root(&self.tmp)
    }

    fn tree_root(tmp: &TempDir) -> PathBuf {
        tmp.path().join(crate::layout::TEMP_TREE)
    }

    /// Runs `hook` with each tree the stage's writers finish, before they wait for its flushes
    /// ([`ingest::WhileFlushing`]).
    pub(crate) fn while_flushing(&mut self, hook: ingest::WhileFlushing) {
        self.while_flushing = Some(hook);
    }

    /// Writes the tree with `fill`, through a writer with the store's limits (`source` names it
    /// in errors), and finishes it.
    pub(crate) fn write(
        &mut self,
        source: &str,
        fill: impl FnOnce(&mut ingest::TreeWriter) -> Result<()>,
    ) -> Result<Tree> {
        let root = Stage::tree_root(&self.tmp);
        let mut w =
            ingest::TreeWriter::new(&root, source, self.store.limits, self.store.durability)?;
        w.while_flushing(self.while_flushing.clone());
        fill(&mut w)?;
        let (id, _) = w.finish()?;
        Ok(Tree { id, kept: false })
    }

    /// The tree is object `id` as it is (a producer that found its source unchanged since it
    /// made `id`): nothing is published, and the name is bound to `id` again, so its age is now.
    pub(crate) fn keep(&self, id: ObjectId) -> Tree {
        Tree { id, kept: true }
    }

    /// Makes the tree from `src` (a directory, tar, tar.gz or zip).
    pub(crate) fn ingest(&mut self, src: &Path) -> Result<Tree> {
        let root = Stage::tree_root(&self.tmp);
        let (id, _) = ingest::ingest_path(
            src,
            &root,
            self.store.limits,
            self.store.durability,
            self.while_flushing.clone(),
        )?;
        Ok(Tree { id, kept: false })
    }

    /// Makes the tree from an archive read from `input` as it arrives
    /// ([`ingest::ingest_stream`]: a zip, tar.gz or tar; `source` names it in errors), replacing
    /// any tree an earlier try left. `Ok(Err(reason))`: the archive cannot be read as a stream
    /// (a zip whose entries cannot be delimited without its central directory); the tree is
    /// removed, and the caller reads the archive from a file with [`Stage::ingest`].
    pub(crate) fn ingest_stream(
        &mut self,
        source: &str,
        input: impl std::io::BufRead,
    ) -> Result<std::result::Result<Tree, String>> {
        let root = Stage::tree_root(&self.tmp);
        tmp::remove_tree(&root)?;
        let mut w =
            ingest::TreeWriter::new(&root, source, self.store.limits, self.store.durability)?;
        w.while_flushing(self.while_flushing.clone());
        match ingest::ingest_stream(input, w)? {
            ingest::Streamed::Tree(id) => Ok(Ok(Tree { id, kept: false })),
            ingest::Streamed::Fallback(why) => {
                tmp::remove_tree(&root)?;
                Ok(Err(why))
            }
        }
    }

    /// Runs one of several attempts (download locations tried in order): when it fails, the
    /// stage is emptied (its tree and the producer's files), so the next attempt starts afresh.
    /// The outer error is the emptying's.
    pub(crate) fn attempt<T, E>(
        &mut self,
        f: impl FnOnce(&mut Stage<'_>) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<T, E>> {
        let got = f(self);
        if got.is_err() {
            for (_, p, _) in crate::scan::read_dir_names(self.tmp.path())? {
                tmp::remove_tree(&p)?;
            }
        }
        Ok(got)
    }
}

/// The mode of every directory of the store outside objects and temp dirs, whatever the umask
/// (`store-format.md`, "Owner and modes"): only the owner writes.
pub(crate) const DIR_MODE: u32 = 0o755;
/// The mode of the store's own files (`format`, the store lock files).
pub(crate) const FILE_MODE: u32 = 0o644;
/// The mode of an executable file written with fixed modes (a legacy view's copy of a step's
/// executable): [`FILE_MODE`] plus every execute bit.
pub(crate) const EXEC_FILE_MODE: u32 = 0o755;

/// Creates the store directory `p` with [`DIR_MODE`], set explicitly since `mkdir` applies the
/// umask (and a setgid parent adds its bit). `Ok(false)`: it already existed (left as it is).
pub(crate) fn make_dir(p: &Path) -> Result<bool> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(p) {
        Ok(()) => {
            sys::set_mode(p, DIR_MODE).map_err(Error::io("chmod", p))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("create dir", p)(e)),
    }
}

/// Creates the directory `p` and those above it that are missing, each made by [`make_dir`]
/// ([`DIR_MODE`] whatever the umask); what is there already is left as it is. Creating one
/// that another process created meanwhile is fine. A file in the way is reported as not a
/// directory.
pub(crate) fn make_dir_all(p: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = p;
    while !at.as_os_str().is_empty() && fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(up) => at = up,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        make_dir(d)?;
    }
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::io("create dir", p)(io::Error::from(
            rustix::io::Errno::NOTDIR,
        ))),
        Err(e) => Err(Error::io("create dir", p)(e)),
    }
}

/// Gives every entry of the tree at `root` (a tree this process just made, not yet where
/// others see it) the fixed modes, whatever the umask it was made with: directories
/// [`DIR_MODE`], files [`FILE_MODE`], or [`EXEC_FILE_MODE`] when any execute bit is set;
/// symlinks are left as they are (never followed). Setuid, setgid and sticky bits are dropped.
pub(crate) fn set_fixed_modes(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(root).map_err(Error::io("stat", root))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        // The directory first, so that it can be read whatever mode it was made with.
        sys::set_mode(root, DIR_MODE).map_err(Error::io("chmod", root))?;
        for entry in fs::read_dir(root).map_err(Error::io("read dir", root))? {
            let entry = entry.map_err(Error::io("read dir", root))?;
            set_fixed_modes(&entry.path())?;
        }
    } else if ft.is_file() {
        let want = if meta.permissions().mode() & 0o111 != 0 {
            EXEC_FILE_MODE
        } else {
            FILE_MODE
        };
        sys::set_mode(root, want).map_err(Error::io("chmod", root))?;
    }
    Ok(())
}

/// Makes sure the store directory `p` exists, creating it in `staging` (a temp dir of ours on the
/// same file system) with [`DIR_MODE`] and moving it into place with a no-replace rename: nobody,
/// not even a crash, ever sees it with the mode the umask would give. Losing the race to another
/// creator is fine (its directory has the same mode).
pub(crate) fn make_dir_via(p: &Path, staging: &Path) -> Result<()> {
    if fs::symlink_metadata(p).is_ok() {
        return Ok(());
    }
    let d = staging.join(format!("dir-{:016x}", crate::layout::unique_token()));
    if !make_dir(&d)? {
        return Err(Error::io("create dir", &d)(
            io::ErrorKind::AlreadyExists.into(),
        ));
    }
    match sys::publish_dir(&d, p).map_err(Error::io("create dir", p))? {
        Publish::Moved => Ok(()),
        Publish::Exists => fs::remove_dir(&d).map_err(Error::io("remove", &d)),
    }
}

/// `Ok(true)`: `p` is a real directory; `Ok(false)`: it does not exist; an error when it is a
/// symlink (planted, e.g. to make us write or delete elsewhere) or not a directory.
pub(crate) fn real_dir(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(m) => Err(Error::Format {
            path: p.to_path_buf(),
            reason: if m.file_type().is_symlink() {
                "is a symlink, not a directory; a store's own directories are never symlinks \
                 (refusing to follow it)"
                    .into()
            } else {
                "not a directory".into()
            },
        }),
        Err(e) if sys::is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::io("stat", p)(e)),
    }
}

impl Store {
    /// Opens the store under `home` (`$STEPMAN_HOME`), creating it if it does not exist.
    pub fn open(home: &Path) -> Result<Store> {
        let layout = Layout::new(home);
        check_no_newer(home)?;
        match fs::symlink_metadata(layout.root()) {
            Ok(_) => {}
            Err(e) if sys::is_not_found(&e) => create(&layout)?,
            Err(e) => return Err(Error::io("stat", layout.root())(e)),
        }
        Store::from_layout(layout)
    }

    /// Opens an existing store without creating or writing anything. `Ok(None)`: no store there.
    pub fn open_existing(home: &Path) -> Result<Option<Store>> {
        let layout = Layout::new(home);
        check_no_newer(home)?;
        match fs::symlink_metadata(layout.root()) {
            Ok(_) => Store::from_layout(layout).map(Some),
            Err(e) if sys::is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::io("stat", layout.root())(e)),
        }
    }

    fn from_layout(layout: Layout) -> Result<Store> {
        let owner = sys::owner(layout.root())
            .map_err(Error::io("stat", layout.root()))?
            .ok_or_else(|| Error::io("stat", layout.root())(std::io::ErrorKind::NotFound.into()))?;
        for d in layout.own_dirs() {
            real_dir(&d)?;
        }
        // The lock module never opens a lock file through a symlink (O_NOFOLLOW); these two are
        // refused here already, with a message that says why, by every command.
        for l in layout.store_locks() {
            if fs::symlink_metadata(&l).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Error::Format {
                    path: l,
                    reason: "is a symlink; a store's lock files are never symlinks (refusing to \
                             follow it)"
                        .into(),
                });
            }
        }
        let f = layout.format_file();
        let text = read_format_file(&f)?;
        match crate::layout::parse_format_line(&text) {
            Some((FORMAT_MAJOR, _)) => {}
            Some((major, minor)) => {
                return Err(Error::Format {
                    path: f,
                    reason: format!(
                        "format {major}.{minor}; this stepman reads format {FORMAT_MAJOR}.x"
                    ),
                });
            }
            None => {
                return Err(Error::Format {
                    path: f,
                    reason: "unreadable format file".into(),
                });
            }
        }
        Ok(Store {
            layout,
            limits: Limits::default(),
            durability: Durability::Sync,
            lower: Vec::new(),
            interrupt: None,
            owner,
        })
    }

    /// Layers read-only stores under this one (see [`Store::resolve`]).
    pub fn with_lower(mut self, lower: Vec<Store>) -> Store {
        self.lower = lower;
        self
    }

    /// The flag that stops waits ([`Store::with_interrupt`]), if any.
    pub(crate) fn interrupt(&self) -> Option<&AtomicBool> {
        self.interrupt.as_deref()
    }

    /// Makes waits for another process's fill of the same name (single flight) stop with
    /// [`Error::Cancelled`] once `flag` is set, e.g. by a Ctrl-C handler.
    pub fn with_interrupt(mut self, flag: Arc<AtomicBool>) -> Store {
        self.interrupt = Some(flag);
        self
    }

    /// This store, then the read-only stores under it.
    fn layers(&self) -> impl Iterator<Item = &Store> {
        std::iter::once(self).chain(self.lower.iter())
    }

    /// Sets the ingest limits.
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.limits = limits;
        self
    }

    /// Sets whether ingests are flushed to disk before they are published.
    pub fn with_durability(mut self, durability: Durability) -> Store {
        self.durability = durability;
        self
    }

    /// The store's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The uid that owns the store (README, "Sharing a store between users").
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Refuses to `op` unless this process runs as the store's owner: another user, root
    /// included, only reads the store, so that nothing in it is ever owned by anyone else (the
    /// owner could not remove or replace it afterwards).
    pub(crate) fn check_owner(&self, op: &'static str) -> Result<()> {
        let euid = sys::euid();
        if euid == self.owner {
            return Ok(());
        }
        Err(Error::NotOwner {
            path: self.layout.root().to_path_buf(),
            op,
            owner: sys::describe_user(self.owner),
            user: sys::describe_user(euid),
        })
    }

    /// Reclaims temp dirs whose owner died.
    pub fn sweep(&self) -> Result<SweepReport> {
        self.check_owner("sweep its temp area")?;
        tmp::sweep(&self.layout, tmp::SweepMode::Remove)
    }

    fn sweep_quietly(&self) {
        if let Err(e) = self.sweep() {
            log::debug!("sweep: {}", e.describe());
        }
    }

    /// Ingests `src` (a directory, tar, tar.gz or zip), publishes it, and binds `name` to it
    /// (replacing what it pointed at; waiting for a running fill of `name` first).
    pub fn import(&self, src: &Path, name: Option<&Name>) -> Result<ObjectId> {
        let ingest = |stage: &mut Stage<'_>| stage.ingest(src);
        match name {
            Some(name) => Ok(self
                .produce(name, Rebuild::Always, Producer::Import, ingest)?
                .id),
            None => self.stage(None, Producer::Import, ingest),
        }
    }

    /// Single flight: if `name` is bound, returns its object; otherwise the first of concurrent
    /// callers ingests `src` while the others wait for it and then use its result.
    pub fn import_if_missing(&self, src: &Path, name: &Name) -> Result<Produced> {
        self.produce(name, Rebuild::Never, Producer::Import, |stage| {
            stage.ingest(src)
        })
    }

    /// `e` as [`Error::ReadOnly`] (`cannot {op}`) when it says that the store cannot be
    /// written: the one message of every command that needs to write a store it cannot.
    pub(crate) fn read_only_or(&self, e: Error, op: &'static str) -> Error {
        match &e {
            Error::Io { error, .. } if sys::is_read_only(error) => Error::ReadOnly {
                path: self.layout.root().to_path_buf(),
                op,
            },
            _ => e,
        }
    }

    /// Moves a finished tree to its object path. Caller holds the shared store lock.
    pub(crate) fn publish(&self, root: &Path, id: &ObjectId) -> Result<()> {
        let shard = self.layout.object_shard(id);
        make_dir(&shard)?;
        real_dir(&shard)?;
        let dest = self.layout.object_dir(id);
        match sys::publish_dir(root, &dest).map_err(Error::io("publish", &dest))? {
            Publish::Moved => {
                // Read-only first: if the flush below fails, the (complete) object is already
                // in place and must not be left writable.
                sys::set_mode(&dest, 0o555).map_err(Error::io("chmod", &dest))?;
                if self.durability == Durability::Sync {
                    sys::sync_path(&shard).map_err(Error::io("fsync", &shard))?;
                }
            }
            Publish::Exists => log::debug!("{id} already in the store"),
        }
        Ok(())
    }

    /// Points `name` at object `id` (which must be in the store), replacing any old binding.
    pub fn bind(&self, name: &Name, id: &ObjectId) -> Result<()> {
        self.check_owner("bind a name")?;
        let tmp = TempDir::create(&self.layout, TempKind::Bind)
            .map_err(|e| self.read_only_or(e, "bind a name"))?;
        let _guard = lock::store_shared(&self.layout)?;
        let dir = self.layout.object_dir(id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(Error::Format {
                path: dir,
                reason: "no such object".into(),
            });
        }
        self.bind_locked(name, id, &tmp)
    }

    fn bind_locked(&self, name: &Name, id: &ObjectId, tmp: &TempDir) -> Result<()> {
        let link = tmp.path().join(crate::layout::TEMP_NAME_LINK);
        std::os::unix::fs::symlink(Layout::name_target(id), &link)
            .map_err(Error::io("symlink", &link))?;
        let path = self.layout.name_path(name);
        let parent = path.parent().unwrap_or(self.layout.root());
        // Before creating anything (`mkdir` of the id dir follows a planted route link), and
        // after.
        self.check_name_dirs(name)?;
        make_dir_via(&self.layout.names().join(name.route()), tmp.path())?;
        make_dir_via(parent, tmp.path())?;
        self.check_name_dirs(name)?;
        sys::replace(&link, &path).map_err(Error::io("rename", &path))?;
        if self.durability == Durability::Sync {
            sys::sync_path(parent).map_err(Error::io("fsync", parent))?;
        }
        Ok(())
    }

    /// Refuses a name whose route or id directory is a symlink (writing or removing the name
    /// would happen outside the store).
    fn check_name_dirs(&self, name: &Name) -> Result<()> {
        let route = self.layout.names().join(name.route());
        if real_dir(&route)? {
            real_dir(&route.join(name.id()))?;
        }
        Ok(())
    }

    /// The object a name points at, or `None` when the name is not bound (or dangles).
    pub fn lookup(&self, name: &Name) -> Result<Option<ObjectId>> {
        match self.resolve(name) {
            Ok((id, _)) => Ok(Some(id)),
            Err(Error::NameNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The object a name points at and its directory: in this store, else in the first
    /// read-only store under it that has the name. Writes nothing.
    pub fn resolve(&self, name: &Name) -> Result<(ObjectId, PathBuf)> {
        for layer in self.layers() {
            match layer.resolve_here(name) {
                Err(Error::NameNotFound { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::NameNotFound {
            name: name.to_string(),
            store: self.layout.root().to_path_buf(),
        })
    }

    /// When `name` was last bound (its link's own modification time: every bind, even to the
    /// object it already named, writes a new link), in the first layer that has it; `None` when
    /// it is not bound. Writes nothing.
    pub(crate) fn bound_at(&self, name: &Name) -> Option<std::time::SystemTime> {
        self.layers().find_map(|layer| {
            fs::symlink_metadata(layer.layout.name_path(name))
                .ok()
                .filter(|m| m.file_type().is_symlink())
                .and_then(|m| m.modified().ok())
        })
    }

    /// [`Store::resolve`] in this store alone.
    fn resolve_here(&self, name: &Name) -> Result<(ObjectId, PathBuf)> {
        let path = self.layout.name_path(name);
        // Lock-free, so the name may be re-pointed after we read it and gc may then remove the
        // object it used to point at: when the object is missing but the link changed, read again
        // (`crate::retry`).
        let mut race = Race::new(Race::LOOKUP);
        loop {
            let (target, id, dir) = self.read_name(name, &path)?;
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => return Ok((id, dir)),
                _ if race.again() && fs::read_link(&path).ok().as_ref() != Some(&target) => {}
                _ => {
                    return Err(Error::Format {
                        path,
                        reason: format!(
                            "name points at missing object {id}; run `stepman fsck --repair`"
                        ),
                    });
                }
            }
        }
    }

    /// Reads a name's link: its target, the object id and the object's directory.
    fn read_name(&self, name: &Name, path: &Path) -> Result<(PathBuf, ObjectId, PathBuf)> {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e)
                if sys::is_not_found(&e)
                    || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
            {
                return Err(Error::NameNotFound {
                    name: name.to_string(),
                    store: self.layout.root().to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io("read link", path)(e)),
        };
        let id = Layout::parse_name_target(&target).ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            reason: format!("name points at {}, not at an object", target.display()),
        })?;
        let dir = self.layout.object_dir(&id);
        Ok((target, id, dir))
    }

    /// Copies the object `name` points at to `dest`, which appears complete or not at all.
    /// `dest` may be missing or an empty directory. Writes nothing into the store.
    pub fn export(&self, name: &Name, dest: &Path) -> Result<ObjectId> {
        self.export_placed(
            name,
            dest,
            crate::export::Place::IfMissing,
            crate::export::Modes::LessUmask,
        )
    }

    /// [`Store::export`], but what is at `dest` is replaced as `how` allows (the new tree is
    /// built beside it and swapped in), and the copy's modes are `modes`.
    pub(crate) fn export_placed(
        &self,
        name: &Name,
        dest: &Path,
        how: crate::export::Place,
        modes: crate::export::Modes,
    ) -> Result<ObjectId> {
        self.check_outside(dest)?;
        crate::export::sweep_beside(dest);
        self.copy_out(name, |dir| {
            crate::export::place_dir(dest, how, |tree| {
                crate::export::copy_tree(dir, tree)?;
                match modes {
                    crate::export::Modes::LessUmask => Ok(()),
                    crate::export::Modes::Fixed => set_fixed_modes(tree),
                }
            })
        })
    }

    /// Refuses ([`Error::InStore`]) a path to write that is inside this store or a read-only
    /// one under it, or that contains one of them (replacing it would destroy the store). The
    /// path need not exist: symlinks and `..` are resolved on its existing part, and the store
    /// directory and the resolved path's ancestors are compared by device and inode.
    pub fn check_outside(&self, path: &Path) -> Result<()> {
        let resolved = resolve_path(path, 0)?;
        let stat = |p: &Path| sys::file_id(p).map_err(Error::io("stat", p));
        for layer in self.layers() {
            let root = layer.layout.root();
            let Some(root_id) = stat(root)? else {
                continue;
            };
            let refuse = |relation| Error::InStore {
                path: path.to_path_buf(),
                store: root.to_path_buf(),
                relation,
            };
            for a in resolved.ancestors() {
                if stat(a)? == Some(root_id) {
                    return Err(refuse(crate::error::StoreRelation::Inside));
                }
            }
            let Some(dest_id) = stat(&resolved)? else {
                continue;
            };
            for a in resolve_path(root, 0)?.ancestors() {
                if stat(a)? == Some(dest_id) {
                    return Err(refuse(crate::error::StoreRelation::Contains));
                }
            }
        }
        Ok(())
    }

    /// Resolves `name` layer by layer, holding that layer's store lock (shared) while `copy`
    /// reads the object.
    fn copy_out(&self, name: &Name, copy: impl Fn(&Path) -> Result<()>) -> Result<ObjectId> {
        for layer in self.layers() {
            let _guard = lock::store_shared(&layer.layout)?;
            match layer.resolve_here(name) {
                Ok((id, dir)) => {
                    copy(&dir)?;
                    return Ok(id);
                }
                Err(Error::NameNotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NameNotFound {
            name: name.to_string(),
            store: self.layout.root().to_path_buf(),
        })
    }
}

/// The one way objects are made (`import`, step sources, executables, git step-info,
/// collections): `Store::produce`.
impl Store {
    /// Makes the object of `name` with `write` and binds `name` to it, once among concurrent
    /// callers (single flight: the others wait on the name lock, interruptibly, and then find the
    /// name bound, as `fill` allows). The store does everything but write the tree: the name
    /// lock, the look at the name again under it, the temp dir, the publish under the shared
    /// store lock with a no-replace rename, the bind, and the removal of the temp dir whatever
    /// happens; `write` only fills the [`Stage`] and returns its [`Tree`]. A new producer is a
    /// [`Producer`] variant and a function that writes a tree:
    ///
    /// ```text
    /// store.produce(&name, Rebuild::Never, Producer::StepSource, |stage| {
    ///     let archive = stage.dir().join("archive");
    ///     fetch::download(&url, None, &archive, MAX, &what, net)?;
    ///     stage.ingest(&archive)
    /// })
    /// ```
    ///
    /// A producer with several sources wraps each try in [`Stage::attempt`].
    pub(crate) fn produce(
        &self,
        name: &Name,
        fill: Rebuild<'_>,
        what: Producer,
        write: impl FnOnce(&mut Stage<'_>) -> Result<Tree>,
    ) -> Result<Produced> {
        if let Rebuild::Never = fill
            && let Some(id) = self.lookup(name)?
        {
            return Ok(Produced::found(id));
        }
        self.check_owner(what.op())?;
        let _single = lock::name_exclusive(&self.layout, name, self.interrupt.as_deref())
            .map_err(|e| self.read_only_or(e, what.op()))?;
        match fill {
            Rebuild::Never => {
                if let Some(id) = self.lookup(name)? {
                    return Ok(Produced::found(id));
                }
            }
            Rebuild::UnlessValid(check) => {
                if let Ok((id, dir)) = self.resolve(name)
                    && check(&dir).is_ok()
                {
                    return Ok(Produced::found(id));
                }
            }
            Rebuild::UnlessBoundSince(since) => {
                if self.bound_at(name).is_some_and(|t| t > since)
                    && let Some(id) = self.lookup(name)?
                {
                    return Ok(Produced::found(id));
                }
            }
            Rebuild::Always => {}
        }
        let (id, kept) = self.stage_kept(Some(name), what, write)?;
        Ok(Produced {
            id,
            ingested: !kept,
        })
    }

    /// The part of [`Store::produce`] after the name lock (and all of an import without a
    /// name): a temp dir, `write`, publish and bind.
    fn stage(
        &self,
        name: Option<&Name>,
        what: Producer,
        write: impl FnOnce(&mut Stage<'_>) -> Result<Tree>,
    ) -> Result<ObjectId> {
        Ok(self.stage_kept(name, what, write)?.0)
    }

    /// Runs `look` on a stage that is never published (a remote tree checked without keeping
    /// it: `remote verify`); its temp dir is removed whatever happens. Trees written there are
    /// not flushed.
    pub(crate) fn scratch<T>(&self, look: impl FnOnce(&mut Stage<'_>) -> Result<T>) -> Result<T> {
        let tmp = TempDir::create(&self.layout, TempKind::Ingest)
            .map_err(|e| self.read_only_or(e, "check a remote tree"))?;
        let fast = Store {
            layout: self.layout.clone(),
            limits: self.limits,
            durability: Durability::NoSync,
            lower: Vec::new(),
            interrupt: self.interrupt.clone(),
            owner: self.owner,
        };
        let mut stage = Stage {
            store: &fast,
            tmp,
            while_flushing: None,
        };
        look(&mut stage)
    }

    /// A temp dir of `kind` for work that publishes nothing (a spooled upload), removed when
    /// dropped; sweep reclaims it if this process dies first.
    pub(crate) fn temp_dir(&self, kind: TempKind) -> Result<TempDir> {
        TempDir::create(&self.layout, kind)
    }

    /// [`Store::stage`], also saying whether the producer kept the object it had ([`Stage::keep`]).
    fn stage_kept(
        &self,
        name: Option<&Name>,
        what: Producer,
        write: impl FnOnce(&mut Stage<'_>) -> Result<Tree>,
    ) -> Result<(ObjectId, bool)> {
        self.check_owner(what.op())?;
        self.sweep_quietly();
        let tmp = TempDir::create(&self.layout, what.temp_kind())
            .map_err(|e| self.read_only_or(e, what.op()))?;
        let mut stage = Stage {
            store: self,
            tmp,
            while_flushing: None,
        };
        let Tree { id, kept } = write(&mut stage)?;
        let tmp = &stage.tmp;
        let _guard = lock::store_shared(&self.layout)?;
        if kept {
            // Under the store lock no gc runs: the object is there now or it is gone for good
            // (a `delete` and a gc since the producer looked), and then nothing is bound.
            let dir = self.layout.object_dir(&id);
            if !real_dir(&dir)? {
                return Err(Error::io("keep", &dir)(std::io::ErrorKind::NotFound.into()));
            }
        } else {
            self.publish(&Stage::tree_root(tmp), &id)?;
        }
        if let Some(name) = name {
            self.bind_locked(name, &id, tmp)?;
        }
        Ok((id, kept))
    }

    /// Like [`Store::export`], but replaces what `dest` holds as `replace` allows (what
    /// `activate` does), one activation into `dest` at a time.
    pub fn export_replacing(
        &self,
        name: &Name,
        dest: &Path,
        replace: crate::Replace,
    ) -> Result<ObjectId> {
        self.export_replacing_checked(name, dest, replace, |_| Ok(()))
    }

    /// [`Store::export_replacing`], but `check` first vets the object's directory (under the
    /// same lock and the same resolution of `name`): an `Err` of `check` copies nothing.
    pub(crate) fn export_replacing_checked(
        &self,
        name: &Name,
        dest: &Path,
        replace: crate::Replace,
        check: impl Fn(&Path) -> Result<()>,
    ) -> Result<ObjectId> {
        self.check_outside(dest)?;
        // Nothing is written beside `dest` (not even its lock file) for a name to download.
        self.resolve(name)?;
        crate::export::sweep_beside(dest);
        // The destination lock before the store lock (`lock.rs`).
        let dest = crate::export::claim(dest, replace, self.interrupt.as_deref())?;
        self.copy_out(name, |dir| {
            check(dir)?;
            dest.activate(dir, replace)
        })
    }

    /// Claims `dest` for an activation as [`Store::export_replacing`] does (its staging
    /// leftovers swept, its destination lock taken, what `replace` does not allow refused),
    /// for a caller that builds the copy itself ([`crate::export::Claimed::build`]), without
    /// waiting for the destination lock: `Ok(None)` when another activation holds it.
    pub(crate) fn try_claim_destination(
        &self,
        dest: &Path,
        replace: crate::Replace,
    ) -> Result<Option<crate::export::Claimed>> {
        self.check_outside(dest)?;
        crate::export::sweep_beside(dest);
        crate::export::try_claim(dest, replace)
    }

    /// [`Store::export_replacing`] of `name` with one file of the object `extra` names added
    /// at the tree's root: `file` (a Go step's binary, `<id>`), both copied in one activation
    /// under one store lock.
    pub(crate) fn export_replacing_with_file(
        &self,
        name: &Name,
        dest: &Path,
        replace: crate::Replace,
        (extra, file): (&Name, &str),
    ) -> Result<ObjectId> {
        self.check_outside(dest)?;
        self.resolve(name)?;
        self.resolve(extra)?;
        crate::export::sweep_beside(dest);
        let dest = crate::export::claim(dest, replace, self.interrupt.as_deref())?;
        self.copy_out(name, |dir| {
            let (_, extra_dir) = self.resolve(extra)?;
            let path = extra_dir.join(file);
            dest.activate_with(dir, &[(&path, file)], replace)
        })
    }

    /// Runs `read` holding the store lock (shared), as every copy-out does: no gc removes an
    /// object while `read` resolves names and reads the objects they point at.
    pub fn read_locked<T, E: From<Error>>(
        &self,
        read: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let _guard = lock::store_shared(&self.layout)?;
        read()
    }

    /// Removes the name `name`; true when it existed.
    pub fn unbind(&self, name: &Name) -> Result<bool> {
        self.check_owner("remove a name")?;
        let path = self.layout.name_path(name);
        let _guard = lock::store_shared(&self.layout)?;
        self.check_name_dirs(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if sys::is_not_found(&e) => Ok(false),
            Err(e) => Err(self.read_only_or(Error::io("remove", &path)(e), "remove a name")),
        }
    }

    /// The names bound under `route`, as `(id, version)` pairs, sorted.
    pub fn names_in_route(&self, route: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for layer in self.layers() {
            out.extend(layer.names_in_route_here(route)?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn names_in_route_here(&self, route: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let dir = self.layout.names().join(route);
        if !real_dir(&dir)? {
            return Ok(out);
        }
        for (id, ipath, ft) in crate::scan::read_dir_names(&dir)? {
            if !ft.is_dir() {
                continue;
            }
            for (version, _, ft) in crate::scan::read_dir_names(&ipath)? {
                if ft.is_symlink() {
                    out.push((id.clone(), version));
                }
            }
        }
        Ok(out)
    }

    /// The routes that have names.
    pub fn routes(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for layer in self.layers() {
            out.extend(
                crate::scan::read_dir_names(&layer.layout.names())?
                    .into_iter()
                    .filter(|(_, _, ft)| ft.is_dir())
                    .map(|(n, _, _)| n),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `path` made absolute with every symlink of its existing part followed and every `..`
/// applied to what it really names; the part that does not exist is kept as spelled.
fn resolve_path(path: &Path, depth: u32) -> Result<PathBuf> {
    use std::path::Component;
    // Linux's limit on symlinks followed in one lookup.
    if depth > 40 {
        return Err(Error::io("resolve", path)(io::Error::from_raw_os_error(
            rustix::io::Errno::LOOP.raw_os_error(),
        )));
    }
    let mut cur = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        std::env::current_dir().map_err(Error::io("resolve", path))?
    };
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => cur = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                let next = cur.join(n);
                match fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let target = fs::read_link(&next).map_err(Error::io("read link", &next))?;
                        // Relative targets are relative to the link's directory, `cur`.
                        cur = resolve_path(&cur.join(target), depth + 1)?;
                    }
                    Ok(_) => cur = next,
                    Err(e)
                        if sys::is_not_found(&e)
                            || e.raw_os_error()
                                == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
                    {
                        cur = next
                    }
                    Err(e) => return Err(Error::io("stat", &next)(e)),
                }
            }
        }
    }
    Ok(cur)
}

/// The `format` file's text: opened without following a symlink and without waiting (a FIFO
/// planted there would block the open of every command), refused unless a regular file, and
/// read only up to 4 KiB (its one line is far shorter).
fn read_format_file(f: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(sys::O_NOFOLLOW | sys::O_NONBLOCK)
        .open(f)
        .map_err(Error::io("read", f))?;
    let (regular, _) = sys::regular_and_owner(&file).map_err(Error::io("stat", f))?;
    if !regular {
        return Err(Error::Format {
            path: f.to_path_buf(),
            reason: "is not a regular file (refusing to read it)".into(),
        });
    }
    let mut bytes = Vec::new();
    file.take(4096)
        .read_to_end(&mut bytes)
        .map_err(Error::io("read", f))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Refuses a home that holds a store of a newer major format.
fn check_no_newer(home: &Path) -> Result<()> {
    let entries = match fs::read_dir(home) {
        Ok(r) => r,
        Err(e) if sys::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::io("read dir", home)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(major) = name.to_str().and_then(crate::layout::store_dir_major)
            && major > FORMAT_MAJOR
        {
            return Err(Error::Format {
                path: entry.path(),
                reason: format!(
                    "written by a newer stepman (format {major}); this stepman reads format {FORMAT_MAJOR}"
                ),
            });
        }
    }
    Ok(())
}

/// Creates the store skeleton in a temp dir beside it and publishes it with one no-replace
/// rename, so a store directory that exists is always complete.
fn create(layout: &Layout) -> Result<()> {
    let home = layout.home();
    fs::create_dir_all(home).map_err(Error::io("create dir", home))?;
    let skeleton = Layout::staging(home);
    let staging = skeleton.root().to_path_buf();
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(&staging)
        .map_err(Error::io("create dir", &staging))?;
    let result = (|| {
        sys::set_mode(&staging, DIR_MODE).map_err(Error::io("chmod", &staging))?;
        for p in skeleton.skeleton_dirs() {
            if !make_dir(&p)? {
                return Err(Error::io("create dir", &p)(
                    io::ErrorKind::AlreadyExists.into(),
                ));
            }
        }
        for p in skeleton.store_locks() {
            fs::File::create(&p).map_err(Error::io("create", &p))?;
            sys::set_mode(&p, FILE_MODE).map_err(Error::io("chmod", &p))?;
        }
        let f = skeleton.format_file();
        fs::write(&f, crate::layout::format_line()).map_err(Error::io("write", &f))?;
        sys::set_mode(&f, FILE_MODE).map_err(Error::io("chmod", &f))?;
        sys::sync_path(&f).map_err(Error::io("fsync", &f))?;
        sys::sync_path(&staging).map_err(Error::io("fsync", &staging))?;
        sys::publish_dir(&staging, layout.root()).map_err(Error::io("publish", layout.root()))
    })();
    match result {
        Ok(Publish::Moved) => sys::sync_path(home).map_err(Error::io("fsync", home)),
        Ok(Publish::Exists) => tmp::remove_tree(&staging),
        Err(e) => {
            let _ = tmp::remove_tree(&staging);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store() -> (tempfile::TempDir, Store) {
        let home = tempfile::tempdir().expect("temp home");
        let store = Store::open(home.path())
            .expect("open store")
            .with_durability(Durability::NoSync);
        (home, store)
    }

    fn entries(dir: &Path) -> Vec<String> {
        crate::scan::read_dir_names(dir)
            .expect("list")
            .into_iter()
            .map(|(n, _, _)| n)
            .collect()
    }

    fn one_file(stage: &mut Stage<'_>, name: &str, body: &str) -> Result<Tree> {
        stage.write("test", |w| w.add_file(name, false, None, body.as_bytes()))
    }

    /// Whatever a producer got to write before its error (its own files, a finished tree), the
    /// store publishes nothing, binds nothing and leaves nothing in `tmp/`.
    #[test]
    fn a_failing_producer_leaves_nothing_and_binds_nothing() {
        let (_home, store) = new_store();
        let name = Name::parse("r/x/1").expect("name");
        for finish_tree in [false, true] {
            let got = store.produce(&name, Rebuild::Always, Producer::Import, |stage| {
                fs::write(stage.dir().join("download"), b"partial").expect("write");
                if finish_tree {
                    let _ = one_file(stage, "a", "a")?;
                } else {
                    let _ = stage.write("test", |w| {
                        w.add_file("a", false, None, &b"a"[..])?;
                        Err(Error::Cancelled)
                    })?;
                }
                Err(Error::Cancelled)
            });
            assert!(matches!(got, Err(Error::Cancelled)), "{got:?}");
            assert_eq!(entries(&store.layout.tmp()), Vec::<String>::new());
            assert_eq!(store.lookup(&name).expect("lookup"), None);
            assert_eq!(entries(&store.layout.objects()), Vec::<String>::new());
        }
    }

    /// A failed attempt's files and tree are gone when the next attempt starts: the object is
    /// the last attempt's tree alone.
    #[test]
    fn each_attempt_starts_with_an_empty_stage() {
        let (_home, store) = new_store();
        let name = Name::parse("r/x/1").expect("name");
        let (_h, reference) = new_store();
        let want = reference
            .stage(None, Producer::Import, |s| one_file(s, "b", "second"))
            .expect("reference");
        let got = store
            .produce(&name, Rebuild::Never, Producer::StepSource, |stage| {
                let first = stage.attempt(|s| {
                    fs::write(s.dir().join("archive"), b"first").expect("write");
                    let _ = one_file(s, "a", "first")?;
                    Err::<Tree, Error>(Error::Cancelled)
                })?;
                assert!(first.is_err());
                assert_eq!(entries(stage.dir()), Vec::<String>::new());
                stage.attempt(|s| one_file(s, "b", "second"))?
            })
            .expect("produce");
        assert_eq!((got.id, got.ingested), (want, true));
        assert_eq!(store.lookup(&name).expect("lookup"), Some(want));
        assert_eq!(entries(&store.layout.tmp()), Vec::<String>::new());
    }

    /// `IfMissing` never runs the producer for a bound name; `UnlessValid` runs it only when
    /// the bound object fails the check; `Force` always.
    #[test]
    fn fill_decides_whether_the_producer_runs() {
        let (_home, store) = new_store();
        let name = Name::parse("r/x/1").expect("name");
        let first = store
            .produce(&name, Rebuild::Never, Producer::Import, |s| {
                one_file(s, "a", "1")
            })
            .expect("first");
        assert!(first.ingested);
        let never = |_: &mut Stage<'_>| -> Result<Tree> { panic!("the producer ran") };
        let again = store
            .produce(&name, Rebuild::Never, Producer::Import, never)
            .expect("bound");
        assert_eq!((again.id, again.ingested), (first.id, false));
        let valid = |_: &Path| Ok(());
        let kept = store
            .produce(&name, Rebuild::UnlessValid(&valid), Producer::Import, never)
            .expect("valid");
        assert_eq!((kept.id, kept.ingested), (first.id, false));
        let invalid = |_: &Path| Err(Error::Cancelled);
        let fetched = store
            .produce(
                &name,
                Rebuild::UnlessValid(&invalid),
                Producer::Import,
                |s| one_file(s, "a", "2"),
            )
            .expect("invalid");
        assert!(fetched.ingested && fetched.id != first.id);
        let forced = store
            .produce(&name, Rebuild::Always, Producer::Import, |s| {
                one_file(s, "a", "1")
            })
            .expect("force");
        assert_eq!((forced.id, forced.ingested), (first.id, true));
        assert_eq!(store.lookup(&name).expect("lookup"), Some(first.id));
    }
}
