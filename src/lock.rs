//! The only user of file locks. Every lock is a whole-file `flock(2)` on a file under `locks/`
//! or `tmp/`, released when its guard drops or its process dies (the kernel drops it).
//!
//! Modes (normative text: `store-format.md`, "Locks"):
//! - **Store lock**, `locks/gc.lock`: *shared* while a process publishes and binds a name, and
//!   while it resolves a name and copies out of the object; *exclusive* while `gc` or
//!   `fsck --repair` removes or moves objects. Fairness: a would-be exclusive holder first takes
//!   `locks/gc-intent.lock` exclusively; sharers pass through the intent lock (shared) before
//!   taking the store lock, so a waiting `gc` is not starved by a stream of readers.
//! - **Name lock**, `locks/names/<digest>.lock`, *exclusive*: single flight for filling one
//!   name. An optimisation only: every publish is correct without it.
//! - **Temp-dir lock**, `tmp/<dir>.lock`, *exclusive*, held by the owner for the temp dir's whole
//!   life. Sweep takes it without blocking; getting it proves the owner is gone.
//! - **Destination lock**, `<parent>/.<dest>.stepman.tree.lock` beside an activation's
//!   destination (outside the store), *exclusive* and blocking (interruptible, see below):
//!   activations into one destination (CI jobs sharing a directory) run one after another from
//!   looking at what is there to writing the marker beside it (`export.rs`). Taken before the
//!   store lock, never while holding it. Never removed (like name locks).
//!
//! - **Legacy-view lock**, `<old home>/.stepman.legacy-view.lock`, *exclusive* and blocking
//!   (interruptible): one `legacy-view` at a time writes an old tool's layout
//!   (`crate::legacy`). Never removed. The **share lock** `<home>/share.json.lock` and each
//!   share session's `<home>/share/.<session>.lock` (`crate::share`) are taken the same way.
//!
//! Waiting: a blocked taker gets the lock the moment its holder lets go (the kernel wakes it), so
//! ten jobs waiting for one download start copying as soon as it is published. A wait that can be
//! interrupted (Ctrl-C) blocks on a thread of its own while the caller watches its flag; a lock
//! that thread gets after the wait was given up is let go at once.
//!
//! Opening: every existing lock file is opened with `O_NOFOLLOW|O_NONBLOCK` and used only when
//! `fstat` shows a regular file owned by this user, root or its directory's owner; a FIFO planted
//! as a lock never blocks an `open` (and so never stalls a holder of the store lock).
//!
//! Fallbacks: where the file system has no `flock` (some NFS setups), the store lock and name locks
//! are skipped (a log line says so) and sweep removes nothing whose owner it cannot prove dead.
//! A read-only store, where the lock file cannot be created, is used without the store lock:
//! nobody can remove objects from it through this process.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::sys::{self, LockMode, LockOutcome, Wait};

/// A held lock (or the documented absence of one); released on drop.
#[derive(Debug)]
pub(crate) struct Guard {
    _files: Vec<File>,
}

impl Guard {
    fn none() -> Guard {
        Guard { _files: Vec::new() }
    }
}

/// The flags of every open of an existing lock file: never through a symlink (a planted one
/// could point anywhere: `ELOOP`), and never waiting (a FIFO planted as a lock file would block
/// `open` until someone writes to it: with `O_NONBLOCK` it opens at once, and is then refused).
const OPEN_FLAGS: i32 = sys::O_NOFOLLOW | sys::O_NONBLOCK;

fn open_read_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
}

/// Why the opened lock file `f` at `path` must not be used; `None` when it may. The rule
/// (`store-format.md`, "Locks"): a lock file is a regular file owned by this user, by root, or
/// by the owner of the directory that holds it (who could replace any entry there anyway).
/// Anything else (a FIFO, a device, another user's file) was planted: it is never locked.
fn foreign(f: &File, path: &Path) -> Result<Option<String>> {
    let (regular, uid) = sys::regular_and_owner(f).map_err(Error::io("stat lock", path))?;
    if !regular {
        return Ok(Some(
            "is not a regular file (a FIFO or a device, say)".into(),
        ));
    }
    untrusted_owner(uid, path)
}

/// `None` when `uid` may own an entry at `path` that we lock or remove: this user, root, or the
/// owner of the directory holding it; otherwise why not.
fn untrusted_owner(uid: u32, path: &Path) -> Result<Option<String>> {
    if uid == sys::euid() || uid == 0 {
        return Ok(None);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if sys::owner(dir).map_err(Error::io("stat", dir))? == Some(uid) {
        return Ok(None);
    }
    Ok(Some(format!(
        "is owned by uid {uid}, neither this user, root nor the owner of its directory"
    )))
}

/// For a sweep, before it removes `path` (a temp or staging dir): why it is not ours to remove
/// (another user's, by the rule of [`foreign`]), or `None` when it is, or is gone.
pub(crate) fn foreign_entry(path: &Path) -> Result<Option<String>> {
    match sys::owner(path).map_err(Error::io("stat", path))? {
        None => Ok(None),
        Some(uid) => untrusted_owner(uid, path),
    }
}

fn refused(path: &Path, why: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: format!(
            "{why}; a lock file is a regular file owned by this user, root or the directory's \
             owner (refusing to use it as a lock)"
        ),
    }
}

fn open_lock_file(path: &Path) -> Result<Option<File>> {
    // Never through a symlink: ELOOP is an error. Never blocking, then vetted.
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(OPEN_FLAGS)
        .open(path);
    let f = match rw {
        Ok(f) => {
            // A fixed mode whatever the umask (`store-format.md`, "Owner and modes"); only the
            // owner of a file changes it.
            if let Ok(m) = f.metadata()
                && m.permissions().mode() & 0o7777 != 0o644
                && std::os::unix::fs::MetadataExt::uid(&m) == sys::euid()
                && let Err(e) = sys::set_mode_fd(&f, 0o644)
            {
                log::debug!("chmod {}: {e}", path.display());
            }
            f
        }
        Err(e) if sys::is_read_only(&e) || sys::is_not_found(&e) => {
            match open_read_nofollow(path) {
                Ok(f) => f,
                // A read-only store without the lock file: documented fallback.
                Err(e2) if sys::is_not_found(&e2) || sys::is_read_only(&e2) => return Ok(None),
                Err(e2) => return Err(Error::io("open lock", path)(e2)),
            }
        }
        Err(e) => return Err(Error::io("open lock", path)(e)),
    };
    match foreign(&f, path)? {
        None => Ok(Some(f)),
        Some(why) => Err(refused(path, why)),
    }
}

/// Takes the lock on `path` in `mode`, blocking; with `interrupt`, the wait gives up with
/// [`Error::Cancelled`] once the flag is set. `Ok(None)`: the documented absence of a lock (no
/// lock file on a read-only store, or no `flock` on this file system).
///
/// A waiter gets the lock the moment its holder lets go, never a poll interval later: the
/// blocking `flock` runs on a thread of its own while this one watches the flag, and a lock
/// that thread takes after the wait was given up is let go at once (the file is dropped).
fn take(path: &Path, mode: LockMode, interrupt: Option<&AtomicBool>) -> Result<Option<File>> {
    let Some(f) = open_lock_file(path)? else {
        return Ok(None);
    };
    let cancelled = || interrupt.is_some_and(|flag| flag.load(Ordering::Relaxed));
    if cancelled() {
        return Err(Error::Cancelled);
    }
    let wait = if interrupt.is_none() {
        Wait::Block
    } else {
        Wait::NoWait
    };
    let outcome = sys::lock(&f, mode, wait).map_err(Error::io("lock", path))?;
    let (outcome, f) = match (outcome, interrupt) {
        (LockOutcome::WouldBlock, Some(flag)) => {
            log::debug!("{}: waiting for another process's fill", path.display());
            wait_on_thread(f, path, mode, flag)?
        }
        (o, _) => (o, f),
    };
    match outcome {
        LockOutcome::Acquired => Ok(Some(f)),
        LockOutcome::Unsupported => {
            log::warn!(
                "{}: file system has no flock; continuing without this lock",
                path.display()
            );
            Ok(None)
        }
        // A blocking lock never would-blocks.
        LockOutcome::WouldBlock => Err(Error::io("lock", path)(
            std::io::ErrorKind::WouldBlock.into(),
        )),
    }
}

/// How often a waiter looks at its interrupt flag (the lock itself wakes it at once).
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);

/// The blocking `flock` of [`take`] on a thread of its own, so that the waiter wakes the
/// moment the lock is free and still notices `flag` within [`INTERRUPT_CHECK`].
fn wait_on_thread(
    f: File,
    path: &Path,
    mode: LockMode,
    flag: &AtomicBool,
) -> Result<(LockOutcome, File)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("stepman-lock-wait".into())
        .spawn(move || {
            let r = sys::lock(&f, mode, Wait::Block);
            // When the waiter gave up, the send fails and drops `f`: the lock is let go.
            let _ = tx.send((r, f));
        })
        .map_err(Error::io("spawn a lock waiter for", path))?;
    loop {
        if flag.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        match rx.recv_timeout(INTERRUPT_CHECK) {
            Ok((r, f)) => return Ok((r.map_err(Error::io("lock", path))?, f)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::io("lock", path)(std::io::Error::other(
                    "the lock waiter thread ended without an answer",
                )));
            }
        }
    }
}

/// Store lock, shared: objects stay put while the guard lives.
pub(crate) fn store_shared(layout: &Layout) -> Result<Guard> {
    let intent = take(&layout.gc_intent_lock(), LockMode::Shared, None)?;
    let gc = take(&layout.gc_lock(), LockMode::Shared, None)?;
    drop(intent);
    Ok(Guard {
        _files: gc.into_iter().collect(),
    })
}

/// Store lock, exclusive: no other process publishes, binds or copies out while it lives.
pub(crate) fn store_exclusive(layout: &Layout) -> Result<Guard> {
    let intent = take(&layout.gc_intent_lock(), LockMode::Exclusive, None)?;
    let gc = take(&layout.gc_lock(), LockMode::Exclusive, None)?;
    Ok(Guard {
        _files: intent.into_iter().chain(gc).collect(),
    })
}

/// Name lock, exclusive and blocking: single flight for one name. With `interrupt`, the wait is
/// a poll that gives up with [`Error::Cancelled`] once the flag is set (the holder may be a
/// slow download in another process; Ctrl-C must not wait for it).
pub(crate) fn name_exclusive(
    layout: &Layout,
    name: &crate::layout::Name,
    interrupt: Option<&AtomicBool>,
) -> Result<Guard> {
    let path = layout.name_lock(name);
    match take(&path, LockMode::Exclusive, interrupt) {
        Ok(f) => Ok(Guard {
            _files: f.into_iter().collect(),
        }),
        Err(Error::Io { error, .. }) if sys::is_not_found(&error) => Ok(Guard::none()),
        Err(e) => Err(e),
    }
}

/// Destination lock, exclusive and blocking (see the module doc): one activation into the
/// destination whose lock file is `path` at a time. With `interrupt`, the wait gives up with
/// [`Error::Cancelled`] once the flag is set.
pub(crate) fn destination_exclusive(path: &Path, interrupt: Option<&AtomicBool>) -> Result<Guard> {
    let f = take(path, LockMode::Exclusive, interrupt)?;
    Ok(Guard {
        _files: f.into_iter().collect(),
    })
}

/// Destination lock, exclusive, without waiting: `Ok(None)` when another process holds it. For
/// an activation that takes it while it holds a name lock (it builds its copy while its
/// download is flushed, `step/activation.rs`): never waiting there keeps the destination lock
/// from being waited for behind a name lock, the reverse of the usual order.
pub(crate) fn destination_try_exclusive(path: &Path) -> Result<Option<Guard>> {
    let Some(f) = open_lock_file(path)? else {
        return Ok(Some(Guard::none()));
    };
    match sys::lock(&f, LockMode::Exclusive, Wait::NoWait).map_err(Error::io("lock", path))? {
        LockOutcome::Acquired => Ok(Some(Guard { _files: vec![f] })),
        LockOutcome::WouldBlock => Ok(None),
        LockOutcome::Unsupported => {
            log::warn!(
                "{}: file system has no flock; continuing without this lock",
                path.display()
            );
            Ok(Some(Guard::none()))
        }
    }
}

/// Lock of a file of ours in an old tool's home, exclusive and blocking: the legacy-view lock
/// (`<home>/.stepman.legacy-view.lock`: one `legacy-view` at a time writes into one home), the
/// share lock (`<home>/share.json.lock`: one reader-modifier-writer of `share.json` at a time)
/// and a share session's lock (`<home>/share/.<session>.lock`). The old tool takes none of
/// them: they order our writers only. With `interrupt`, the wait gives up with
/// [`Error::Cancelled`] once the flag is set.
pub(crate) fn home_file_exclusive(path: &Path, interrupt: Option<&AtomicBool>) -> Result<Guard> {
    let f = take(path, LockMode::Exclusive, interrupt)?;
    Ok(Guard {
        _files: f.into_iter().collect(),
    })
}

/// Lock of a published StepLib API tree's output (`<parent>/.<name>.lock` beside the output of
/// `export-spec --export-type api`), exclusive and blocking: one publish at a time renames its
/// tree in, swaps the output's link and prunes old trees, so none prunes a tree another is about
/// to point the output at. Readers (HTTP servers) take none.
pub(crate) fn publish_exclusive(path: &Path) -> Result<Guard> {
    let f = take(path, LockMode::Exclusive, None)?;
    Ok(Guard {
        _files: f.into_iter().collect(),
    })
}

/// What [`OwnerLock::try_claim`] found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The owner is alive, or cannot be proven dead (no `flock`), or the lock file is gone:
    /// keep its files.
    Live,
    /// We hold the lock: the owner is gone.
    Dead(OwnerLock),
    /// Not a lock file of the protocol (a FIFO, another user's file; the reason says which):
    /// never locked, and nothing of it is removed.
    Foreign(String),
}

/// A temp-dir liveness lock held by its owner.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    /// `None` for a claim on a symlink planted where a lock file belongs: no owner ever had it
    /// (owners create regular files with `O_EXCL`), and it is never opened through.
    file: Option<File>,
    path: PathBuf,
}

impl OwnerLock {
    /// Creates `path` exclusively and locks it. `Ok(None)` means the name was taken or the lock
    /// was lost to a sweeper before we held it: pick another name.
    pub(crate) fn create(path: &Path) -> Result<Option<OwnerLock>> {
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(Error::io("create lock", path)(e)),
        };
        match sys::lock(&f, LockMode::Exclusive, Wait::NoWait).map_err(Error::io("lock", path))? {
            LockOutcome::Acquired | LockOutcome::Unsupported => {}
            LockOutcome::WouldBlock => return Ok(None),
        }
        // A sweeper may have locked and unlinked the fresh file between create and lock.
        if !sys::is_linked(&f).map_err(Error::io("stat lock", path))? {
            return Ok(None);
        }
        Ok(Some(OwnerLock {
            file: Some(f),
            path: path.to_path_buf(),
        }))
    }

    /// Tries to take over the lock of a possibly dead owner. [`Claim::Dead`] proves the owner
    /// is gone.
    pub(crate) fn try_claim(path: &Path) -> Result<Claim> {
        let planted_link = || {
            Claim::Dead(OwnerLock {
                file: None,
                path: path.to_path_buf(),
            })
        };
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OPEN_FLAGS)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if sys::is_not_found(&e) => return Ok(Claim::Live),
            Err(e) if sys::is_symlink_refused(&e) => return Ok(planted_link()),
            // Another user's or a read-only store: a read-only descriptor locks just as well.
            Err(e) if sys::is_read_only(&e) => match open_read_nofollow(path) {
                Ok(f) => f,
                Err(e) if sys::is_not_found(&e) => return Ok(Claim::Live),
                Err(e) if sys::is_symlink_refused(&e) => return Ok(planted_link()),
                Err(e) => return Err(Error::io("open lock", path)(e)),
            },
            Err(e) => return Err(Error::io("open lock", path)(e)),
        };
        if let Some(why) = foreign(&f, path)? {
            return Ok(Claim::Foreign(why));
        }
        match sys::lock(&f, LockMode::Exclusive, Wait::NoWait).map_err(Error::io("lock", path))? {
            LockOutcome::Acquired => {}
            // Without flock we cannot prove the owner dead: keep its files.
            LockOutcome::WouldBlock | LockOutcome::Unsupported => return Ok(Claim::Live),
        }
        if !sys::is_linked(&f).map_err(Error::io("stat lock", path))? {
            return Ok(Claim::Live);
        }
        Ok(Claim::Dead(OwnerLock {
            file: Some(f),
            path: path.to_path_buf(),
        }))
    }

    /// Blocks until whoever holds the temp-dir lock at `path` lets it go: a sweeper removing a
    /// dead owner's dir (the owner itself never takes a dead dir's lock again). Returns at once
    /// when there is no such file, or something other than a regular file is there (never opened
    /// through a symlink, never blocking in `open` on a FIFO).
    pub(crate) fn wait_released(path: &Path) -> Result<()> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(sys::O_NOFOLLOW | sys::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if sys::is_not_found(&e) || sys::is_symlink_refused(&e) => return Ok(()),
            Err(e) => return Err(Error::io("open lock", path)(e)),
        };
        if !f
            .metadata()
            .map_err(Error::io("stat lock", path))?
            .is_file()
        {
            return Ok(());
        }
        sys::lock(&f, LockMode::Shared, Wait::Block).map_err(Error::io("lock", path))?;
        Ok(())
    }

    /// Unlinks the lock file while still holding the lock, then releases it.
    pub(crate) fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if sys::is_not_found(&e) => {}
            Err(e) => return Err(Error::io("remove lock", &self.path)(e)),
        }
        drop(self.file);
        Ok(())
    }
}
