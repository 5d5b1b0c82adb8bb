//! Every platform call the store makes, in one place.
//!
//! Invariants:
//! - `publish_dir` never replaces a non-empty directory. Where the file system refuses
//!   `RENAME_NOREPLACE` (NFS, 9p answer `EINVAL`), it falls back to a plain `rename(2)`, which also
//!   cannot replace a non-empty directory; the only directory it could replace is an empty one,
//!   and the only empty object is the empty tree, whose content is identical by definition.
//! - `sync_*` treat "this file system cannot sync this" (`EINVAL`, `ENOTSUP`) as done, and every
//!   other failure as an error.
//! - `lock` reports file systems without `flock` (`ENOLCK`, `ENOTSUP`) as [`LockOutcome::Unsupported`]
//!   so callers can pick their documented fallback.
//!
//! Linux and macOS have a counterpart for each call (`renameat2`/`renameatx_np`, `flock`).
#![allow(clippy::disallowed_methods)] // the one module that makes these calls (clippy.toml)

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, RenameFlags};
use rustix::io::Errno;

/// `O_NOFOLLOW` for `OpenOptionsExt::custom_flags`: opening a symlink fails (`ELOOP`) instead of
/// following it.
pub(crate) const O_NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// `O_NONBLOCK` for `OpenOptionsExt::custom_flags`: opening a FIFO returns at once instead of
/// waiting for a writer (or reader). Every lock file is opened with it (`lock.rs`); on a regular
/// file it changes nothing.
pub(crate) const O_NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// This host's name (`uname`'s nodename: Linux and macOS alike); empty when it is not UTF-8.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .unwrap_or_default()
        .to_string()
}

/// Of an open file: whether it is a regular file, and its owner's uid.
pub(crate) fn regular_and_owner(f: &File) -> io::Result<(bool, u32)> {
    let st = rustix::fs::fstat(f)?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    Ok((regular, st.st_uid))
}

/// The owner's uid of what `path` names, not following a symlink; `Ok(None)` when it is gone.
pub(crate) fn owner(path: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m.uid())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `e` is an `O_NOFOLLOW` open that met a symlink (`ELOOP`).
pub(crate) fn is_symlink_refused(e: &io::Error) -> bool {
    Errno::from_io_error(e) == Some(Errno::LOOP)
}

/// Opens `path` for reading without following a symlink at its last component (`ELOOP`) and
/// without blocking: a FIFO with no writer or a device opens at once, so that the caller's
/// `fstat` can refuse it instead of hanging in `open`.
pub(crate) fn open_read_nofollow_nonblock(path: &Path) -> io::Result<File> {
    open_read_flags(
        path,
        O_NOFOLLOW | rustix::fs::OFlags::NONBLOCK.bits() as i32,
    )
}

/// [`open_read_nofollow_nonblock`], following a symlink (for a path the user gave).
pub(crate) fn open_read_nonblock(path: &Path) -> io::Result<File> {
    open_read_flags(path, rustix::fs::OFlags::NONBLOCK.bits() as i32)
}

fn open_read_flags(path: &Path, flags: i32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// What a no-replace rename did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Our directory now sits at the target.
    Moved,
    /// The target already existed (someone else published it).
    Exists,
}

/// `renameat2`/`renameatx_np` with `flags`. `Ok(None)`: this platform or file system has no such
/// rename (`EINVAL`, `ENOSYS`, `ENOTSUP`: NFS and 9p answer so), and the caller falls back.
fn rename_with(from: &Path, to: &Path, flags: RenameFlags) -> io::Result<Option<()>> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios"
    ))]
    {
        match rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, flags) {
            Ok(()) => return Ok(Some(())),
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
                log::debug!("rename {flags:?} unsupported for {} ({e})", to.display());
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    #[allow(unreachable_code)]
    Ok(None)
}

/// Whether `e` says the target exists (a no-replace rename onto a file or a non-empty directory).
fn is_exists(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::EXIST) | Some(Errno::NOTEMPTY)
    )
}

/// Moves directory `from` to `to` unless `to` exists (see the module invariants).
pub(crate) fn publish_dir(from: &Path, to: &Path) -> io::Result<Publish> {
    match rename_with(from, to, RenameFlags::NOREPLACE) {
        Ok(Some(())) => return Ok(Publish::Moved),
        Ok(None) => log::debug!("publishing {}: using rename(2)", to.display()),
        Err(e) if is_exists(&e) => return Ok(Publish::Exists),
        Err(e) => return Err(e),
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(Publish::Moved),
        Err(e) if is_exists(&e) => Ok(Publish::Exists),
        Err(e) => Err(e),
    }
}

/// Renames `from` over `to`, replacing a file, a symlink or an empty directory atomically.
pub(crate) fn replace(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

fn tolerate_unsupported(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOTSUP || e == Errno::ROFS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Flushes an open file's data and metadata to stable storage.
pub(crate) fn sync_file(f: &File) -> io::Result<()> {
    tolerate_unsupported(rustix::fs::fsync(f))
}

/// Flushes a file or directory, given by path, to stable storage.
pub(crate) fn sync_path(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    sync_file(&f)
}

/// What a batch of copies between the same two file systems has learnt they allow: each way
/// starts allowed, and the first refusal turns it off for the rest of the batch.
#[derive(Debug)]
pub(crate) struct CopyBatch {
    /// Clone (reflink) whole files: `FICLONE` on Linux (btrfs, XFS, bcachefs, …), `clonefile`
    /// on macOS (APFS).
    clone: std::sync::atomic::AtomicBool,
    /// Copy in the kernel: `copy_file_range(2)` on Linux.
    in_kernel: std::sync::atomic::AtomicBool,
    /// The permission bits the umask leaves of `0o755`, learnt from the first directory a
    /// clone lands in (`clonefile` takes the source's mode, not one less the umask).
    #[cfg(target_vendor = "apple")]
    kept: std::sync::OnceLock<rustix::fs::Mode>,
}

impl CopyBatch {
    /// A batch that has not been refused anything yet.
    pub(crate) fn new() -> CopyBatch {
        CopyBatch {
            clone: true.into(),
            in_kernel: true.into(),
            #[cfg(target_vendor = "apple")]
            kept: std::sync::OnceLock::new(),
        }
    }

    fn allows(flag: &std::sync::atomic::AtomicBool) -> bool {
        flag.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn refused(flag: &std::sync::atomic::AtomicBool) {
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Errors that mean "not this way between these file systems", not a failed copy.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn not_supported_here(e: Errno) -> bool {
    e == Errno::XDEV
        || e == Errno::NOSYS
        || e == Errno::INVAL
        || e == Errno::OPNOTSUPP
        || e == Errno::NOTTY
        || e == Errno::PERM
}

/// The mode a copied file gets (less the umask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// `0o644`.
    Plain,
    /// `0o755`.
    Executable,
}

impl CopyMode {
    fn mode(self) -> rustix::fs::Mode {
        use rustix::fs::Mode;
        match self {
            CopyMode::Plain => Mode::RUSR | Mode::WUSR | Mode::RGRP | Mode::ROTH,
            CopyMode::Executable => Mode::RWXU | Mode::RGRP | Mode::XGRP | Mode::ROTH | Mode::XOTH,
        }
    }
}

/// What a directory entry is, as its directory listing (or, where that does not say, an
/// `lstat`) tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl Source {
    /// Opens the regular file `path` like [`DirFd::open_file`].
    pub(crate) fn open(path: &Path) -> io::Result<Source> {
        Source::open_at(rustix::fs::CWD, path)
    }

    fn open_at<P: rustix::path::Arg>(dir: impl std::os::fd::AsFd, name: P) -> io::Result<Source> {
        use rustix::fs::{FileType, Mode, OFlags};
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        let executable =
            Mode::from_raw_mode(st.st_mode).intersects(Mode::XUSR | Mode::XGRP | Mode::XOTH);
        Ok(Source {
            file: File::from(fd),
            len: u64::try_from(st.st_size).unwrap_or(0),
            executable,
        })
    }
}

/// An open directory: entries are made, opened and listed relative to it, with no path walk
/// per entry (`openat`, `mkdirat`, `symlinkat`, `readlinkat`, `getdents`).
#[derive(Debug)]
pub(crate) struct DirFd(std::os::fd::OwnedFd);

/// A regular file opened for copying, with what its `fstat` said.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) file: File,
    pub(crate) len: u64,
    /// Whether any execute bit is set.
    pub(crate) executable: bool,
}

const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

impl DirFd {
    /// Opens the directory `path` (a symlink at its last component is refused).
    pub(crate) fn open(path: &Path) -> io::Result<DirFd> {
        let fd = rustix::fs::openat(rustix::fs::CWD, path, DIR_FLAGS, rustix::fs::Mode::empty())?;
        Ok(DirFd(fd))
    }

    /// Creates the directory `name` in this one with mode `0o755` less the umask.
    pub(crate) fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::mkdirat(&self.0, name, CopyMode::Executable.mode())?;
        Ok(())
    }

    /// The entries of this directory (not `.` and `..`), in the order the file system lists
    /// them. An entry whose type the listing does not give is asked with an `lstat`.
    pub(crate) fn entries(&self) -> io::Result<Vec<(OsString, EntryKind)>> {
        use rustix::fs::FileType;
        use std::os::unix::ffi::OsStrExt;
        // Its own descriptor: the listing's position is not shared with `self`.
        let listed = rustix::fs::openat(&self.0, c".", DIR_FLAGS, rustix::fs::Mode::empty())?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::new(listed)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name).to_os_string();
            let ft = match entry.file_type() {
                FileType::Unknown => FileType::from_raw_mode(
                    rustix::fs::statat(&self.0, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?
                        .st_mode,
                ),
                ft => ft,
            };
            let kind = match ft {
                FileType::Directory => EntryKind::Dir,
                FileType::RegularFile => EntryKind::File,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Opens the regular file `name` for reading, never through a symlink and never waiting
    /// on a FIFO; anything but a regular file is refused.
    pub(crate) fn open_file(&self, name: &OsStr) -> io::Result<Source> {
        Source::open_at(&self.0, name)
    }

    /// The target of the symlink `name`.
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<std::path::PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let t = rustix::fs::readlinkat(&self.0, name, Vec::new())?;
        Ok(OsString::from_vec(t.into_bytes()).into())
    }

    /// Creates the symlink `name` to `target`.
    pub(crate) fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
        rustix::fs::symlinkat(target, &self.0, name)?;
        Ok(())
    }

    /// Creates the new file `name` (never through a symlink) with `mode` less the umask.
    fn create_file(&self, name: &OsStr, mode: CopyMode) -> io::Result<File> {
        use rustix::fs::OFlags;
        let fd = rustix::fs::openat(
            &self.0,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode.mode(),
        )?;
        Ok(File::from(fd))
    }
}

/// Copies `from` into the new file `name` in `dir` with `mode` less the umask. On macOS the
/// file is cloned where the file system can (`fclonefileat`: APFS shares the blocks until
/// either file is written, so the copy costs no bytes and stays independent), else created and
/// filled by [`copy_contents`]. `dir` is a directory this copy made with mode `0o755` less the
/// umask (on macOS the first clone reads the umask off it). Fails when `from` held fewer or more
/// bytes than `from.len`.
pub(crate) fn copy_file_at(
    from: &Source,
    dir: &DirFd,
    name: &OsStr,
    mode: CopyMode,
    batch: &CopyBatch,
) -> Result<(), (CopyStep, io::Error)> {
    #[cfg(target_vendor = "apple")]
    if from.len > 0 && CopyBatch::allows(&batch.clone) {
        match clone_at(from, dir, name, mode, batch) {
            Ok(()) => return Ok(()),
            Err((_, e)) if not_cloneable(&e) => CopyBatch::refused(&batch.clone),
            Err(e) => return Err(e),
        }
    }
    let to = dir
        .create_file(name, mode)
        .map_err(|e| (CopyStep::Create, e))?;
    copy_contents(&from.file, &to, from.len, batch).map_err(|e| (CopyStep::Copy, e))
}

/// Which step of [`copy_file_at`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyStep {
    /// Creating the new file (it exists, no space or inodes left, …).
    Create,
    /// Filling it.
    Copy,
}

impl CopyStep {
    /// The operation an error of this step is reported with.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            CopyStep::Create => "create",
            CopyStep::Copy => "copy",
        }
    }
}

/// `clonefile` errors that mean "not between these file systems" (not APFS, another volume).
#[cfg(target_vendor = "apple")]
fn not_cloneable(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::NOTSUP)
            | Some(Errno::OPNOTSUPP)
            | Some(Errno::XDEV)
            | Some(Errno::NOSYS)
            | Some(Errno::INVAL)
    )
}

/// Clones `from` to the new file `name` in `dir` (`fclonefileat`, which creates it and never
/// follows a symlink there), gives it `mode` less the umask and checks its size.
#[cfg(target_vendor = "apple")]
fn clone_at(
    from: &Source,
    dir: &DirFd,
    name: &OsStr,
    mode: CopyMode,
    batch: &CopyBatch,
) -> Result<(), (CopyStep, io::Error)> {
    use rustix::fs::{AtFlags, CloneFlags, Mode};
    let copy = |e: Errno| (CopyStep::Copy, io::Error::from(e));
    let kept = match batch.kept.get() {
        Some(m) => *m,
        None => {
            let m =
                Mode::from_raw_mode(rustix::fs::fstat(&dir.0).map_err(copy)?.st_mode) & Mode::all();
            *batch.kept.get_or_init(|| m)
        }
    };
    rustix::fs::fclonefileat(&from.file, &dir.0, name, CloneFlags::NOOWNERCOPY)
        .map_err(|e| (CopyStep::Create, io::Error::from(e)))?;
    rustix::fs::chmodat(&dir.0, name, mode.mode() & kept, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(copy)?;
    let st = rustix::fs::statat(&dir.0, name, AtFlags::SYMLINK_NOFOLLOW).map_err(copy)?;
    let got = u64::try_from(st.st_size).unwrap_or(0);
    if got != from.len {
        return Err((CopyStep::Copy, size_changed(got, from.len)));
    }
    Ok(())
}

/// Copies the whole of `from`, which should hold `len` bytes, into the new empty file `to`:
/// where the file system can, the file is cloned (`FICLONE`: it shares `from`'s blocks until
/// either is written, so the copy costs no bytes and stays independent); else in the kernel with
/// `copy_file_range(2)` (no user-space buffer, and no `fstat` since `len` is known); else with
/// `std::io::copy`. `batch` remembers refusals across a batch of copies between the same two
/// file systems, so the rest of the batch does not ask again. Fails when `from` held fewer or
/// more bytes than `len`.
pub(crate) fn copy_contents(from: &File, to: &File, len: u64, batch: &CopyBatch) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if len > 0 && CopyBatch::allows(&batch.clone) {
            match rustix::fs::ioctl_ficlone(to, from) {
                Ok(()) => {
                    let got = to.metadata()?.len();
                    if got != len {
                        return Err(size_changed(got, len));
                    }
                    return Ok(());
                }
                Err(e) if not_supported_here(e) => CopyBatch::refused(&batch.clone),
                Err(e) => return Err(e.into()),
            }
        }
        if CopyBatch::allows(&batch.in_kernel) {
            return copy_in_kernel(from, to, len, batch);
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = batch;
    copy_through_user_space(from, to, len)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_in_kernel(from: &File, to: &File, len: u64, batch: &CopyBatch) -> io::Result<()> {
    let mut done = 0u64;
    loop {
        // One byte more than what is left, so the end shows as a short copy.
        let want = usize::try_from((len - done).saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, None, to, None, want) {
            Ok(0) => break,
            Ok(n) => {
                done += n as u64;
                if done > len {
                    return Err(size_changed(done, len));
                }
                if done == len && n < want {
                    break;
                }
            }
            // Not between these file systems (older kernels across file systems, some
            // network and FUSE file systems): copy through user space, once, from the start.
            Err(e) if done == 0 && not_supported_here(e) => {
                CopyBatch::refused(&batch.in_kernel);
                return copy_through_user_space(from, to, len);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if done != len {
        return Err(size_changed(done, len));
    }
    Ok(())
}

fn copy_through_user_space(mut from: &File, mut to: &File, len: u64) -> io::Result<()> {
    let got = io::copy(&mut from, &mut to)?;
    if got != len {
        return Err(size_changed(got, len));
    }
    Ok(())
}

fn size_changed(got: u64, len: u64) -> io::Error {
    io::Error::other(format!(
        "the file held {got} bytes, not the {len} it had when listed"
    ))
}

/// What trying to take a lock gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockOutcome {
    /// The lock is held.
    Acquired,
    /// Another open file description holds it (non-blocking attempts only).
    WouldBlock,
    /// This file system has no `flock`.
    Unsupported,
}

/// Lock modes (see `lock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

/// Whether [`lock`] waits for a lock another holder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Block until it is granted.
    Block,
    /// Answer [`LockOutcome::WouldBlock`] at once.
    NoWait,
}

/// `flock(2)` on `f`.
pub(crate) fn lock(f: &File, mode: LockMode, wait: Wait) -> io::Result<LockOutcome> {
    let op = match (mode, wait) {
        (LockMode::Shared, Wait::Block) => FlockOperation::LockShared,
        (LockMode::Shared, Wait::NoWait) => FlockOperation::NonBlockingLockShared,
        (LockMode::Exclusive, Wait::Block) => FlockOperation::LockExclusive,
        (LockMode::Exclusive, Wait::NoWait) => FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match rustix::fs::flock(f, op) {
            Ok(()) => return Ok(LockOutcome::Acquired),
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return Ok(LockOutcome::WouldBlock),
            Err(e) if e == Errno::NOLCK || e == Errno::NOTSUP || e == Errno::NOSYS => {
                return Ok(LockOutcome::Unsupported);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The identity of what `path` names, following symlinks: `(device, inode)`. `Ok(None)` when
/// nothing is there (or a component of the path is not a directory).
pub(crate) fn file_id(path: &Path) -> io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if is_not_found(&e) || Errno::from_io_error(&e) == Some(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What an activation's marker records of a tree it put in place (`export.rs`): device,
/// inode and, where the platform and file system keep one, the birth time (Linux `statx`
/// `STATX_BTIME`, macOS `st_birthtime`), so that a directory made later that reuses the inode
/// number is told apart. Never the mtime or ctime, which change when a step writes into its
/// own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Seconds and nanoseconds since the epoch; `None` where there is no birth time.
    pub(crate) birth: Option<(u64, u32)>,
}

/// The [`Identity`] of what `path` names, not following a symlink, and its metadata;
/// `Ok(None)` when nothing is there.
pub(crate) fn identity(path: &Path) -> io::Result<Option<(Identity, std::fs::Metadata)>> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    // std asks `statx` for the birth time on Linux and reads `st_birthtime` on macOS; where
    // the file system keeps none, `created()` is an error.
    let birth = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| (d.as_secs(), d.subsec_nanos()));
    let id = Identity {
        dev: m.dev(),
        ino: m.ino(),
        birth,
    };
    Ok(Some((id, m)))
}

/// True when the open file still has a name (it was not unlinked after we opened it).
pub(crate) fn is_linked(f: &File) -> io::Result<bool> {
    Ok(rustix::fs::fstat(f)?.st_nlink > 0)
}

/// Sets the permission bits of an open file.
pub(crate) fn set_mode_fd(f: &File, mode: u32) -> io::Result<()> {
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Sets the permission bits of a path (follows no symlink: callers pass directories and files).
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The errno of an `io::Error`, if any.
pub(crate) fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// `EXDEV`: the rename crosses file systems (or overlayfs layers).
pub(crate) fn is_exdev(e: &io::Error) -> bool {
    errno(e) == Some(Errno::XDEV.raw_os_error())
}

/// `EROFS` or `EACCES`/`EPERM`: this process cannot write here.
pub(crate) fn is_read_only(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::ROFS) | Some(Errno::ACCESS) | Some(Errno::PERM)
    )
}

/// Is `e` "not found"?
pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Atomically swaps two paths (`RENAME_EXCHANGE`). `Ok(false)`: this file system cannot.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    rename_with(a, b, RenameFlags::EXCHANGE).map(|r| r.is_some())
}

/// Gives `path` itself (a symlink is not followed) to user `uid`; only root may.
pub(crate) fn chown_nofollow(path: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), None)
}

/// Sets the permission bits of the directory or regular file at `path`, never through a
/// symlink and never opening anything else (a FIFO, say) planted there.
pub(crate) fn set_mode_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)?;
    let ft = f.metadata()?.file_type();
    if !(ft.is_dir() || ft.is_file()) {
        return Err(io::Error::other("not a directory or a regular file"));
    }
    set_mode_fd(&f, mode)
}

/// `uid` as shown in messages: `uid 1000 (ci)`, with the user's name when `/etc/passwd` has it.
pub(crate) fn describe_user(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id = f.nth(1)?.parse::<u32>().ok()?;
                (id == uid && !name.is_empty()).then(|| name.to_string())
            })
        });
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

/// Why [`run_cancellable`] returned no exit status.
#[derive(Debug)]
pub(crate) enum RunError {
    /// `cancel` was set: the child's process group was killed and reaped.
    Cancelled,
    /// The child could not be started or waited for.
    Io(io::Error),
}

/// Runs `cmd` and waits for it, checking `cancel` every `poll`. The child stays in this
/// process's group, so a signal to the group (Ctrl-C on a terminal, a CI runner killing the job)
/// reaches it too. When `cancel` is set, the child gets SIGINT (on which `go` stops the
/// compilers it started), then SIGKILL if it has not ended within two seconds, and is reaped.
pub(crate) fn run_cancellable(
    cmd: &mut std::process::Command,
    cancel: &std::sync::atomic::AtomicBool,
    poll: std::time::Duration,
) -> Result<std::process::ExitStatus, RunError> {
    use std::sync::atomic::Ordering;
    let mut child = cmd.spawn().map_err(RunError::Io)?;
    loop {
        if let Some(status) = child.try_wait().map_err(RunError::Io)? {
            return Ok(status);
        }
        if cancel.load(Ordering::Relaxed) {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if child.try_wait().map_err(RunError::Io)?.is_some() {
                    return Err(RunError::Cancelled);
                }
                std::thread::sleep(poll);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Cancelled);
        }
        std::thread::sleep(poll);
    }
}
