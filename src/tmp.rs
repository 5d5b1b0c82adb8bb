//! The store's temp area: unique, owner-locked work directories, and the sweep that reclaims
//! the ones whose owner died.
//!
//! Invariants (normative text: `store-format.md`, "Temp area"):
//! - A temp dir `tmp/<kind>-<random>` exists only while `tmp/<kind>-<random>.lock` exists: the
//!   owner creates and locks the lock file first and creates the directory second; sweep removes
//!   the directory first and unlinks the lock file last, while holding the lock.
//! - Liveness is proven by the lock, never guessed from an age: sweep removes a temp dir only when
//!   it can take the owner's lock itself.
//! - Removing a tree restores write permission on its directories first, since objects are read-only.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{Layout, TempKind};
use crate::lock::{Claim, OwnerLock};
use crate::sys;

/// A work directory inside the store's temp area, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    lock: Option<OwnerLock>,
}

impl TempDir {
    /// Creates a fresh temp dir whose name starts with `kind`.
    pub(crate) fn create(layout: &Layout, kind: TempKind) -> Result<TempDir> {
        Self::create_in(&layout.tmp(), 0o700, || kind.fresh_name())
    }

    /// Creates a fresh owner-locked dir in `dir` (mode `mode`), named by `stem()`, by the same
    /// protocol: `<stem>.lock` created and locked first, the directory second; both are removed
    /// on drop, the directory first. [`sweep_in`] reclaims it once its owner is dead.
    pub(crate) fn create_in(dir: &Path, mode: u32, stem: impl Fn() -> String) -> Result<TempDir> {
        for _ in 0..64 {
            let stem = stem();
            let lock_path = dir.join(format!("{stem}.lock"));
            let Some(lock) = OwnerLock::create(&lock_path)? else {
                continue;
            };
            let path = dir.join(&stem);
            match fs::DirBuilder::new().mode(mode).create(&path) {
                Ok(()) => {
                    return Ok(TempDir {
                        path,
                        lock: Some(lock),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    lock.remove()?;
                    continue;
                }
                Err(e) => {
                    let _ = lock.remove();
                    return Err(Error::io("create temp dir", &path)(e));
                }
            }
        }
        Err(Error::io("create temp dir", dir)(io::Error::other(
            "no unique name after 64 tries",
        )))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            log::warn!("{}; the next sweep reclaims it", e.describe());
            return;
        }
        if let Some(lock) = self.lock.take()
            && let Err(e) = lock.remove()
        {
            log::warn!("{}", e.describe());
        }
    }
}

/// Removes a file or a whole tree, making read-only directories writable first. Missing is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if sys::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::io("stat", path)(e)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if sys::is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::io("remove", path)(e)),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if sys::is_not_found(&e) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => {
            return Err(Error::io("remove", path)(e));
        }
        Err(_) => {}
    }
    make_writable(path)?;
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if sys::is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

fn make_writable(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if sys::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::io("stat", dir)(e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        sys::set_mode(dir, (mode | 0o700) & 0o7777).map_err(Error::io("chmod", dir))?;
    }
    let entries = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if sys::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(Error::io("read dir", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("read dir", dir))?;
        if entry
            .file_type()
            .map_err(Error::io("stat", entry.path()))?
            .is_dir()
        {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// What a sweep found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SweepReport {
    /// Temp dirs whose owner is alive (left alone).
    pub live: usize,
    /// Dead temp dirs reclaimed (or, in a dry run, that would be).
    pub reclaimed: Vec<PathBuf>,
    /// Entries that are no temp dir or lock of the protocol (a FIFO as a lock file, another
    /// user's file): left alone.
    pub foreign: Vec<PathBuf>,
}

/// Whether a sweep removes the dead entries it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SweepMode {
    /// Only list them; write nothing.
    DryRun,
    /// Remove them.
    Remove,
}

/// What a sweep does with an entry it cannot claim or remove (another user's, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Return the first such failure.
    Fail,
    /// Log it and go on with the next entry (best effort).
    Skip,
}

/// Lists the dead entries of the temp area; removes them with [`SweepMode::Remove`].
pub(crate) fn sweep(layout: &Layout, mode: SweepMode) -> Result<SweepReport> {
    sweep_in(&layout.tmp(), |_| true, mode, OnError::Fail)
}

/// Removes the temp dir at `path`, found dead earlier, by the sweep protocol. When another
/// sweeper holds its lock (it is removing it), waits for that sweeper and looks again.
/// `Ok(true)`: it is gone, whoever removed it.
pub(crate) fn reclaim_dead(path: &Path) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(false);
    };
    let lock_name = format!("{name}.lock");
    let gone = || matches!(fs::symlink_metadata(path), Err(e) if sys::is_not_found(&e));
    for _ in 0..8 {
        sweep_in(
            dir,
            |n| n == name || n == lock_name,
            SweepMode::Remove,
            OnError::Fail,
        )?;
        if gone() {
            return Ok(true);
        }
        OwnerLock::wait_released(&dir.join(&lock_name))?;
    }
    Ok(gone())
}

/// The sweep of `dir`, by the protocol of the temp area (an entry `X` is dead when `X.lock` is
/// missing or can be claimed), over the entries whose names `ours` accepts; `on_error` says what
/// to do with an entry that cannot be claimed or removed.
pub(crate) fn sweep_in(
    dir: &Path,
    ours: impl Fn(&str) -> bool,
    mode: SweepMode,
    on_error: OnError,
) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    let entries = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if sys::is_not_found(&e) => return Ok(report),
        Err(e) => return Err(Error::io("read dir", dir)(e)),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read dir", dir))?;
        match entry.file_name().into_string() {
            Ok(n) if ours(&n) => names.push(n),
            Ok(_) => {}
            Err(n) => {
                // Nothing of ours has a non-UTF-8 name: foreign, reported by fsck, never touched.
                log::debug!("sweep: skipping foreign entry {n:?}");
            }
        }
    }
    names.sort();
    for n in &names {
        match sweep_one(dir, n, &names, mode, &mut report) {
            Ok(()) => {}
            Err(e) if on_error == OnError::Skip => {
                log::warn!("sweep: {}; left alone", e.describe())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

fn sweep_one(
    dir: &Path,
    n: &str,
    names: &[String],
    mode: SweepMode,
    report: &mut SweepReport,
) -> Result<()> {
    if let Some(stem) = n.strip_suffix(".lock") {
        let lock_path = dir.join(n);
        let claim = match OwnerLock::try_claim(&lock_path)? {
            Claim::Dead(claim) => claim,
            Claim::Live => {
                report.live += 1;
                return Ok(());
            }
            Claim::Foreign(why) => {
                log::warn!("sweep: {} {why}; left alone", lock_path.display());
                report.foreign.push(lock_path);
                return Ok(());
            }
        };
        let entry = dir.join(stem);
        if let Some(why) = crate::lock::foreign_entry(&entry)? {
            log::warn!("sweep: {} {why}; left alone", entry.display());
            report.foreign.push(entry);
            return Ok(());
        }
        // A lock file without its directory may be a live owner between creating the file
        // and locking it (in which case our claim makes it start over): it is removed, but
        // only directories, whose owner locked first, are reported, here and in a dry run.
        if fs::symlink_metadata(&entry).is_ok() {
            report.reclaimed.push(entry.clone());
        }
        if mode == SweepMode::DryRun {
            return Ok(());
        }
        remove_tree(&entry)?;
        claim.remove()
    } else if names.binary_search(&format!("{n}.lock")).is_err() {
        // A directory without its lock file: by the creation order no live owner exists,
        // unless it appeared after our listing; claim its lock name to be sure.
        let lock_path = dir.join(format!("{n}.lock"));
        if let Some(why) = crate::lock::foreign_entry(&dir.join(n))? {
            log::warn!("sweep: {} {why}; left alone", dir.join(n).display());
            report.foreign.push(dir.join(n));
            return Ok(());
        }
        if mode == SweepMode::DryRun {
            // Writes nothing: report it unless its lock file appeared after our listing, or
            // it is gone (a live owner removes its directory, then its lock file: the listing
            // may hold the one and not the other).
            if fs::symlink_metadata(&lock_path).is_err()
                && fs::symlink_metadata(dir.join(n)).is_ok()
            {
                report.reclaimed.push(dir.join(n));
            }
            return Ok(());
        }
        let Some(claim) = OwnerLock::create(&lock_path)? else {
            return Ok(());
        };
        report.reclaimed.push(dir.join(n));
        if let Err(e) = remove_tree(&dir.join(n)) {
            // The lock file is ours, made just now: never leave it behind.
            let _ = claim.remove();
            return Err(e);
        }
        claim.remove()
    } else {
        Ok(())
    }
}
