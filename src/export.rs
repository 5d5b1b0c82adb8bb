//! Copying an object out of the store into a user's directory.
//!
//! Invariants:
//! - The destination appears complete or not at all: the copy is built in a hidden staging dir
//!   beside it and renamed into place with one `rename(2)`, which replaces at most an empty
//!   directory (or, for an activation, [`Claimed::activate`], swapped in with `RENAME_EXCHANGE`).
//! - The staging dir is owned like a temp dir of the store (`store-format.md`, "Temp area"):
//!   `.<dest>.stepman-<random>.lock` is created and locked first, `.<dest>.stepman-<random>/`
//!   second, and both are removed in the reverse order. Every export first sweeps the
//!   destination's parent for staging dirs of killed exports (their lock free or missing), so a
//!   SIGKILL leaves nothing behind for longer than the next export into the same directory; a
//!   live export's staging dir is never touched, and what cannot be removed is left alone, as is
//!   what is not ours (another user's entries, a FIFO planted as a lock: `lock.rs`). The sweep
//!   runs before the store lock is taken.
//! - The destination is outside the store and does not contain it ([`crate::Store::check_outside`]).
//! - The copy never aliases the store: files are copied (the kernel may share extents on
//!   reflink-capable file systems, which is copy-on-write), never hard-linked; the copy is
//!   writable by its owner (directories 0755, files 0644 or 0755, less the umask; exactly
//!   these for a legacy view, [`Modes::Fixed`]).
//! - Nothing is written into the store.
//! - The destination is resolved once, at the start: its parent made absolute and canonical, so
//!   that no later step depends on the working directory (an exchange would move a working
//!   directory inside the destination). A destination that is the working directory or contains
//!   it is refused ([`Error::DestinationHoldsCwd`]).
//! - An activation ([`Claimed::activate`]) replaces only a missing path, an empty directory, or
//!   a tree an earlier activation made, unless told to replace anything ([`Replace`]); what it
//!   refuses is left untouched ([`Error::DestinationNotEmpty`]). A tree an activation made is
//!   recognised by the marker `.<dest>.stepman.tree` beside it, which lists the [`Identity`] of
//!   the trees activations put there (device, inode, birth time), and nothing is written into
//!   the tree itself. Activations into one destination are serialised by the destination lock
//!   (`lock.rs`). The marker is replaced atomically (written in the staging dir, renamed beside
//!   the destination): before a swap it lists the tree there (when ours) and the new one, after
//!   it the new one, so that at every point a kill leaves a marker that recognises the tree at
//!   the destination.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{DestinationKind, Error, Result};
use crate::sys::{self, Identity};
use crate::tmp::{OnError, SweepMode, TempDir, sweep_in};

/// The infix of staging names: `.<dest>.stepman-<16 hex digits>[.lock]`.
const INFIX: &str = ".stepman-";

/// Whether `name` is a staging dir or lock of an export (also the `-old-` dirs that versions
/// before the owner lock left behind).
fn is_staging_name(name: &str) -> bool {
    let n = name.strip_suffix(".lock").unwrap_or(name);
    let Some((head, tail)) = n.rsplit_once(INFIX) else {
        return false;
    };
    let tail = tail.strip_prefix("old-").unwrap_or(tail);
    head.starts_with('.') && tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reclaims dead staging dirs beside `dest` (in its parent), best effort: a leftover that
/// cannot be removed (another user's, a FIFO planted as a lock) is logged and left alone, never
/// an error of the export. Called before the store lock is taken, so that removing a large old
/// tree does not keep a gc waiting.
pub(crate) fn sweep_beside(dest: &Path) {
    let Ok((parent, _)) = parent_and_base(dest) else {
        return;
    };
    if let Err(e) = sweep_in(&parent, is_staging_name, SweepMode::Remove, OnError::Skip) {
        log::warn!(
            "{}; leftovers of killed exports are left alone",
            e.describe()
        );
    }
}

/// Creates a staging dir for `base` in `parent`: a temp dir of the store's protocol, outside
/// the store (removed, with its lock, when dropped). The copy is built in its `tree/`; a
/// replaced tree goes to its `old/` when the file system cannot exchange. `given` is the path
/// the user gave (`parent` joined with `base`, as spelled), which a parent that cannot be
/// written is reported with ([`Error::ParentNotWritable`]).
pub(crate) fn staging(parent: &Path, base: &str, given: &Path) -> Result<TempDir> {
    TempDir::create_in(parent, 0o755, || {
        format!(".{base}{INFIX}{:016x}", crate::layout::unique_token())
    })
    .map_err(|e| parent_not_writable(e, given, parent))
}

/// `e`, as an [`Error::ParentNotWritable`] of `given` when it is a refusal to write in `parent`
/// itself (permission denied, a read-only file system).
pub(crate) fn parent_not_writable(e: Error, given: &Path, parent: &Path) -> Error {
    match e {
        Error::Io { path, error, .. }
            if sys::is_read_only(&error) && path.parent() == Some(parent) =>
        {
            Error::ParentNotWritable {
                path: given.to_path_buf(),
                parent: parent.to_path_buf(),
                error,
            }
        }
        e => e,
    }
}

/// The suffix of the marker beside a destination an activation made, `.<dest>.stepman.tree`,
/// and, with `.lock`, of its destination lock. Not a staging name ([`is_staging_name`]).
const MARKER: &str = ".stepman.tree";

/// The first line of a marker; each further line is one [`Identity`] ([`marker_line`]).
const MARKER_HEADER: &str = "stepman activated trees v1";

/// A marker longer than this is not one of ours (and is not read further).
const MARKER_MAX: u64 = 4096;

/// What an activation may replace at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// A missing path, an empty directory, or a tree an earlier activation made (recognised by
    /// the marker beside it); anything else is refused with [`Error::DestinationNotEmpty`].
    Activated,
    /// Whatever is there (`activate --replace`), swapped out atomically and then removed.
    Anything,
}

/// A destination, resolved once.
#[derive(Debug)]
struct Dest {
    /// As the caller spelled it (for messages).
    given: PathBuf,
    /// Its parent, absolute and canonical.
    parent: PathBuf,
    /// Its last component (lossily, for the names of the staging dir, marker and lock).
    base: String,
    /// `parent` joined with its last component.
    path: PathBuf,
}

impl Dest {
    /// Creates the parent if needed and canonicalises it; refuses a destination that is the
    /// working directory or contains it.
    fn resolve(dest: &Path) -> Result<Dest> {
        // `.`, `..`, `x/..` have no last component: name the directory by its real path.
        let named = match dest.file_name() {
            Some(_) => dest.to_path_buf(),
            None => fs::canonicalize(dest).map_err(Error::io("resolve", dest))?,
        };
        let (parent, base) = parent_and_base(&named)?;
        create_parent(&parent)?;
        let parent = fs::canonicalize(&parent).map_err(Error::io("resolve", &parent))?;
        // The name itself (`base` is lossy), which `parent_and_base` found.
        let path = parent.join(named.file_name().unwrap_or_default());
        // A working directory that cannot be found (deleted) cannot lie inside the destination.
        if let Ok(cwd) = std::env::current_dir().and_then(fs::canonicalize)
            && cwd.starts_with(&path)
        {
            return Err(Error::DestinationHoldsCwd {
                path: dest.to_path_buf(),
            });
        }
        Ok(Dest {
            given: dest.to_path_buf(),
            parent,
            base,
            path,
        })
    }

    fn marker(&self) -> PathBuf {
        self.parent.join(format!(".{}{MARKER}", self.base))
    }
}

/// Creates the directory `parent` of a path to write, and those above it, if missing. A file
/// in the way is reported as not a directory (`create dir DIR: Not a directory`), not as
/// `File exists`.
pub(crate) fn create_parent(parent: &Path) -> Result<()> {
    fs::create_dir_all(parent).map_err(|e| {
        let e = if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::from(rustix::io::Errno::NOTDIR)
        } else {
            e
        };
        Error::io("create dir", parent)(e)
    })
}

fn parent_and_base(dest: &Path) -> Result<(PathBuf, String)> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest
        .file_name()
        .ok_or_else(|| Error::DestinationExists {
            path: dest.to_path_buf(),
        })?
        .to_string_lossy()
        .into_owned();
    Ok((parent, base))
}

/// What [`place_dir`] does with a directory (or anything else) at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Only a missing path or an empty directory is filled; anything else is
    /// [`Error::DestinationExists`], left as it is.
    IfMissing,
    /// Whatever is there is swapped out atomically (`RENAME_EXCHANGE`, or renamed away first
    /// where the file system cannot exchange) and then removed.
    Replace,
}

/// The modes of a tree copied out of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Modes {
    /// Directories 0755, files 0644 or 0755 (executable), less the umask: an activation's.
    LessUmask,
    /// The same bits whatever the umask (`store::set_fixed_modes`, before the tree is renamed
    /// in): a legacy view's, which other users read.
    Fixed,
}

/// Makes the directory `dest` with `build`, which creates and fills the new directory it is
/// given inside a staging dir beside `dest` (the export protocol), then renames it into place
/// as `how` allows: `dest` is missing, or the complete new tree, never a part of one. The
/// caller swept beside `dest` first ([`sweep_beside`]).
pub(crate) fn place_dir(
    dest: &Path,
    how: Place,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let d = Dest::resolve(dest)?;
    let exists = || Error::DestinationExists {
        path: dest.to_path_buf(),
    };
    if how == Place::IfMissing && !matches!(inspect(&d.path)?, Found::Missing | Found::EmptyDir) {
        // Early, friendly refusal; the rename below is what actually guarantees it.
        return Err(exists());
    }
    let staging = staging(&d.parent, &d.base, &d.given)?;
    let tree = staging.path().join("tree");
    build(&tree)?;
    match inspect(&d.path)? {
        Found::Held(_, old) if how == Place::Replace => {
            if swap(&staging, &tree, &d, &old)? {
                // The staging dir now holds the old tree; dropping it removes it.
                Ok(())
            } else {
                Err(Error::io("replace", dest)(std::io::Error::other(
                    "the directory changed while its replacement was built",
                )))
            }
        }
        Found::Held(..) => Err(exists()),
        Found::Missing | Found::EmptyDir => match crate::sys::replace(&tree, &d.path) {
            Ok(()) => Ok(()),
            Err(e) if is_occupied(&e) => Err(exists()),
            Err(e) => Err(Error::io("rename", dest)(e)),
        },
    }
}

/// Whether a rename into place failed because something is there.
fn is_occupied(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOTEMPTY)
            | Some(rustix::io::Errno::EXIST)
            | Some(rustix::io::Errno::NOTDIR)
            | Some(rustix::io::Errno::ISDIR)
    )
}

/// A file added to an activated tree beside the object's own entries (a Go step's binary):
/// the file to copy and the name it gets at the tree's root.
pub(crate) type Extra<'a> = (&'a Path, &'a str);

/// A staging dir beside `d` with a copy of `src` in its `tree/`, and the `extra` files at its
/// root (a name the tree has already is an error).
fn build(d: &Dest, src: &Path, extra: &[Extra<'_>]) -> Result<(TempDir, PathBuf)> {
    let staging = staging(&d.parent, &d.base, &d.given)?;
    let tree = staging.path().join("tree");
    copy_tree(src, &tree)?;
    if !extra.is_empty() {
        let to = sys::DirFd::open(&tree).map_err(Error::io("open dir", &tree))?;
        let batch = sys::CopyBatch::new();
        for (file, name) in extra {
            let from = sys::Source::open(file).map_err(Error::io("open", *file))?;
            let at = tree.join(name);
            sys::copy_file_at(&from, &to, name.as_ref(), sys::CopyMode::Executable, &batch)
                .map_err(|(step, e)| match step {
                    sys::CopyStep::Create if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Error::Format {
                            path: at.clone(),
                            reason: format!(
                                "the step's source already has an entry {name:?}, where its binary goes"
                            ),
                        }
                    }
                    _ => Error::io(step.operation(), &at)(e),
                })?;
        }
    }
    Ok((staging, tree))
}

/// Copies the object tree at `src` to the new directory `dst` (0755), writable by its owner.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(dst)
        .map_err(Error::io("create dir", dst))?;
    let batch = sys::CopyBatch::new();
    let failure = Failure::default();
    rayon::scope(|s| copy_dir(s, src.to_path_buf(), dst.to_path_buf(), &batch, &failure));
    match failure.first.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(poisoned) => poisoned.into_inner().map_or(Ok(()), Err),
    }
}

/// The first error of a parallel copy; once there is one, the other tasks stop.
#[derive(Debug, Default)]
struct Failure {
    first: std::sync::Mutex<Option<Error>>,
    failed: std::sync::atomic::AtomicBool,
}

impl Failure {
    fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record(&self, e: Error) {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(e);
        }
    }
}

/// Files of one directory copied by one task; a directory with more is split into tasks of
/// this many, so that a big flat directory is copied on every core too.
const FILES_PER_TASK: usize = 32;

/// Copies the directory `src` into the existing empty directory `dst`: its subdirectories are
/// made here and copied by tasks of their own (each opens its two directories when it starts,
/// so descriptors stay bounded by the running tasks, not the tree's size), its files in
/// tasks of [`FILES_PER_TASK`], each relative to the directories' descriptors.
fn copy_dir<'s>(
    s: &rayon::Scope<'s>,
    src: PathBuf,
    dst: PathBuf,
    batch: &'s sys::CopyBatch,
    failure: &'s Failure,
) {
    if failure.failed() {
        return;
    }
    if let Err(e) = copy_dir_entries(s, &src, &dst, batch, failure) {
        failure.record(e);
    }
}

fn copy_dir_entries<'s>(
    s: &rayon::Scope<'s>,
    src: &Path,
    dst: &Path,
    batch: &'s sys::CopyBatch,
    failure: &'s Failure,
) -> Result<()> {
    let from = sys::DirFd::open(src).map_err(Error::io("open dir", src))?;
    let to = sys::DirFd::open(dst).map_err(Error::io("open dir", dst))?;
    let entries = from.entries().map_err(Error::io("read dir", src))?;
    let mut files = Vec::new();
    for (name, kind) in entries {
        match kind {
            sys::EntryKind::Dir => {
                to.create_dir(&name)
                    .map_err(Error::io("create dir", dst.join(&name)))?;
                let (sub_src, sub_dst) = (src.join(&name), dst.join(&name));
                s.spawn(move |s| copy_dir(s, sub_src, sub_dst, batch, failure));
            }
            sys::EntryKind::Symlink => {
                let t = from
                    .read_link(&name)
                    .map_err(Error::io("read link", src.join(&name)))?;
                to.symlink(&t, &name)
                    .map_err(Error::io("symlink", dst.join(&name)))?;
            }
            sys::EntryKind::File => files.push(name),
            sys::EntryKind::Other => {
                return Err(Error::Format {
                    path: src.join(&name),
                    reason: "unexpected file type in an object".into(),
                });
            }
        }
    }
    let dirs = std::sync::Arc::new((from, to));
    let mut chunks = files.chunks(FILES_PER_TASK).peekable();
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            // The last (often the only) chunk: copied by this task.
            return copy_files(&dirs, chunk, src, dst, batch, failure);
        }
        let (chunk, dirs) = (chunk.to_vec(), std::sync::Arc::clone(&dirs));
        let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
        s.spawn(move |_| {
            if let Err(e) = copy_files(&dirs, &chunk, &src, &dst, batch, failure) {
                failure.record(e);
            }
        });
    }
    Ok(())
}

/// Copies the regular files `names` of the directory `dirs.0` (at `src`) into `dirs.1` (at
/// `dst`); an executable in the object is executable in the copy.
fn copy_files(
    dirs: &(sys::DirFd, sys::DirFd),
    names: &[std::ffi::OsString],
    src: &Path,
    dst: &Path,
    batch: &sys::CopyBatch,
    failure: &Failure,
) -> Result<()> {
    let (from, to) = dirs;
    for name in names {
        if failure.failed() {
            return Ok(());
        }
        let file = from
            .open_file(name)
            .map_err(Error::io("open", src.join(name)))?;
        let mode = if file.executable {
            sys::CopyMode::Executable
        } else {
            sys::CopyMode::Plain
        };
        sys::copy_file_at(&file, to, name, mode, batch)
            .map_err(|(step, e)| Error::io(step.operation(), dst.join(name))(e))?;
    }
    Ok(())
}

/// What is at a destination.
#[derive(Debug)]
enum Found {
    Missing,
    EmptyDir,
    /// Something that only [`Replace`] decides about.
    Held(DestinationKind, Identity),
}

fn inspect(path: &Path) -> Result<Found> {
    let Some((id, meta)) = sys::identity(path).map_err(Error::io("stat", path))? else {
        return Ok(Found::Missing);
    };
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        if fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()) {
            return Ok(Found::EmptyDir);
        }
        DestinationKind::NonEmptyDir
    } else if ft.is_symlink() {
        DestinationKind::Symlink
    } else if ft.is_file() {
        DestinationKind::File
    } else {
        DestinationKind::Special
    };
    Ok(Found::Held(kind, id))
}

/// A destination claimed for activations: resolved, and its destination lock held
/// (`lock.rs`) until this is dropped. Claimed before the store lock is taken.
#[derive(Debug)]
pub(crate) struct Claimed {
    dest: Dest,
    _lock: crate::lock::Guard,
}

/// Resolves `dest` and takes its destination lock, `.<dest>.stepman.tree.lock` beside it
/// (waiting for another activation into it; `interrupt` ends the wait). What `replace` does
/// not allow is refused first, before anything is written beside `dest` (and again, under the
/// lock, by [`Claimed::activate`]).
pub(crate) fn claim(
    dest: &Path,
    replace: Replace,
    interrupt: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Claimed> {
    let (dest, lock_path) = to_claim(dest, replace)?;
    let lock = crate::lock::destination_exclusive(&lock_path, interrupt)
        .map_err(|e| parent_not_writable(e, &dest.given, &dest.parent))?;
    Ok(Claimed { dest, _lock: lock })
}

/// [`claim`], but without waiting for the destination lock: `Ok(None)` when another
/// activation holds it ([`crate::lock::destination_try_exclusive`]).
pub(crate) fn try_claim(dest: &Path, replace: Replace) -> Result<Option<Claimed>> {
    let (dest, lock_path) = to_claim(dest, replace)?;
    let lock = crate::lock::destination_try_exclusive(&lock_path)
        .map_err(|e| parent_not_writable(e, &dest.given, &dest.parent))?;
    Ok(lock.map(|lock| Claimed { dest, _lock: lock }))
}

/// What [`claim`] and [`try_claim`] do before the lock: `dest` resolved, what `replace` does
/// not allow there refused, and the path of its destination lock.
fn to_claim(dest: &Path, replace: Replace) -> Result<(Dest, PathBuf)> {
    let dest = Dest::resolve(dest)?;
    if let Found::Held(kind, old) = inspect(&dest.path)? {
        allowed(&dest, kind, &old, replace)?;
    }
    let lock_path = dest.parent.join(format!(".{}{MARKER}.lock", dest.base));
    Ok((dest, lock_path))
}

/// Whether what is at `d` (`kind`, `id`) may be replaced: `Ok(true)` when an earlier
/// activation made it, `Ok(false)` when only [`Replace::Anything`] allows it.
fn allowed(d: &Dest, kind: DestinationKind, id: &Identity, replace: Replace) -> Result<bool> {
    let ours = kind == DestinationKind::NonEmptyDir && marker_lists(d, id);
    if ours || replace == Replace::Anything {
        return Ok(ours);
    }
    Err(Error::DestinationNotEmpty {
        path: d.given.clone(),
        kind,
    })
}

/// A copy of a tree in a staging dir beside a claimed destination ([`Claimed::build`]).
pub(crate) struct Built {
    staging: TempDir,
    tree: PathBuf,
}

impl Claimed {
    /// Copies the tree at `src` to the destination, replacing what is there as `replace`
    /// allows: the new tree is built beside it and renamed into place (missing, or an empty
    /// directory) or swapped in with `RENAME_EXCHANGE` (where the file system cannot, the old
    /// one is renamed away first); the old one is removed afterwards, never before the new one
    /// is there. Refused: [`Error::DestinationNotEmpty`], with nothing changed.
    pub(crate) fn activate(&self, src: &Path, replace: Replace) -> Result<()> {
        self.activate_with(src, &[], replace)
    }

    /// [`Claimed::activate`], with `extra` files added at the tree's root in the same swap.
    pub(crate) fn activate_with(
        &self,
        src: &Path,
        extra: &[Extra<'_>],
        replace: Replace,
    ) -> Result<()> {
        let (staging, tree) = build(&self.dest, src, extra)?;
        self.place(Built { staging, tree }, replace)
    }

    /// A copy of the tree at `src` built beside the destination, to be put in place later
    /// ([`Claimed::place`]); dropped unplaced, it is removed.
    pub(crate) fn build(&self, src: &Path) -> Result<Built> {
        let (staging, tree) = build(&self.dest, src, &[])?;
        Ok(Built { staging, tree })
    }

    /// Puts `built` in place as [`Claimed::activate`] does.
    pub(crate) fn place(&self, built: Built, replace: Replace) -> Result<()> {
        let Built { staging, tree } = built;
        let d = &self.dest;
        let (new, _) = sys::identity(&tree)
            .map_err(Error::io("stat", &tree))?
            .ok_or_else(|| Error::io("stat", &tree)(std::io::ErrorKind::NotFound.into()))?;
        settle(&new);
        // Something else may change the destination meanwhile (a user, not us: we hold the
        // destination lock); look again a few times.
        for _ in 0..4 {
            match inspect(&d.path)? {
                Found::Missing | Found::EmptyDir => {
                    write_marker(&staging, d, &[&new])?;
                    match crate::sys::replace(&tree, &d.path) {
                        Ok(()) => return Ok(()),
                        Err(e) if is_occupied(&e) => continue,
                        Err(e) => return Err(Error::io("rename", &d.given)(e)),
                    }
                }
                Found::Held(kind, old) => {
                    let ours = allowed(d, kind, &old, replace)?;
                    let listed: &[&Identity] = if ours { &[&old, &new] } else { &[&new] };
                    write_marker(&staging, d, listed)?;
                    if !swap(&staging, &tree, d, &old)? {
                        continue;
                    }
                    write_marker(&staging, d, &[&new])?;
                    // The staging dir now holds the old tree; dropping it removes it.
                    drop(staging);
                    return Ok(());
                }
            }
        }
        Err(Error::io("activate into", &d.given)(std::io::Error::other(
            "the destination kept changing while the step was put in place",
        )))
    }
}

/// Swaps `tree` into `d`'s place; `Ok(false)` (with everything put back) when what was swapped
/// out is not `old`, what the caller looked at.
fn swap(staging: &TempDir, tree: &Path, d: &Dest, old: &Identity) -> Result<bool> {
    let is_old = |p: &Path| -> Result<bool> {
        let id = sys::identity(p).map_err(Error::io("stat", p))?;
        Ok(id.is_some_and(|(id, _)| id == *old))
    };
    if sys::exchange(tree, &d.path).map_err(Error::io("exchange", &d.given))? {
        if is_old(tree)? {
            return Ok(true);
        }
        sys::exchange(tree, &d.path).map_err(Error::io("exchange", &d.given))?;
        return Ok(false);
    }
    let away = staging.path().join("old");
    crate::sys::replace(&d.path, &away).map_err(Error::io("rename", &d.given))?;
    if !is_old(&away)? {
        crate::sys::replace(&away, &d.path).map_err(Error::io("rename", &d.given))?;
        return Ok(false);
    }
    if let Err(e) = crate::sys::replace(tree, &d.path) {
        // Put the old tree back rather than leave the destination missing.
        let _ = crate::sys::replace(&away, &d.path);
        return Err(Error::io("rename", tree)(e));
    }
    Ok(true)
}

/// One line of a marker: `<dev> <ino> <birth secs>.<nanos>`, or `-` for no birth time.
fn marker_line(id: &Identity) -> String {
    match id.birth {
        Some((s, n)) => format!("{} {} {s}.{n:09}", id.dev, id.ino),
        None => format!("{} {} -", id.dev, id.ino),
    }
}

/// Whether the marker beside `d` lists `id`. A marker that is missing, unreadable, not a
/// regular file or too long lists nothing (the tree is then not taken for an activation's).
fn marker_lists(d: &Dest, id: &Identity) -> bool {
    use std::io::Read;
    let path = d.marker();
    let text = OpenOptions::new()
        .read(true)
        .custom_flags(sys::O_NOFOLLOW | sys::O_NONBLOCK)
        .open(&path)
        .and_then(|f| {
            if !sys::regular_and_owner(&f)?.0 {
                return Err(std::io::Error::other("not a regular file"));
            }
            let mut text = String::new();
            f.take(MARKER_MAX).read_to_string(&mut text)?;
            Ok(text)
        });
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            if !sys::is_not_found(&e) {
                log::debug!("marker {} not used: {e}", path.display());
            }
            return false;
        }
    };
    let mut lines = text.lines();
    let want = marker_line(id);
    lines.next() == Some(MARKER_HEADER) && lines.any(|l| l == want)
}

/// Replaces the marker beside `d` with one listing `ids`: written and flushed in the staging
/// dir (same directory tree, same file system), then renamed beside the destination.
fn write_marker(staging: &TempDir, d: &Dest, ids: &[&Identity]) -> Result<()> {
    use std::io::Write;
    let tmp = staging.path().join("marker");
    let mut text = format!("{MARKER_HEADER}\n");
    for id in ids {
        text.push_str(&marker_line(id));
        text.push('\n');
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    f.write_all(text.as_bytes())
        .map_err(Error::io("write", &tmp))?;
    sys::sync_file(&f).map_err(Error::io("fsync", &tmp))?;
    drop(f);
    let marker = d.marker();
    crate::sys::replace(&tmp, &marker).map_err(Error::io("rename", &marker))
}

/// Waits, at most a few milliseconds, until the clock has passed the birth time of the tree
/// about to be put in place by more than the coarsest timestamp granularity of Linux file
/// systems (one jiffy, 10 ms at `HZ=100`): a directory made after the tree is out of our hands
/// then has a later birth time, even one that reuses its inode number.
fn settle(new: &Identity) {
    const GRANULARITY: std::time::Duration = std::time::Duration::from_millis(10);
    let Some((s, n)) = new.birth else {
        return;
    };
    let born = std::time::UNIX_EPOCH + std::time::Duration::new(s, n);
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        && let Ok(born) = born.duration_since(std::time::UNIX_EPOCH)
        && let Some(left) = (born + GRANULARITY).checked_sub(now)
    {
        std::thread::sleep(left.min(GRANULARITY));
    }
}
