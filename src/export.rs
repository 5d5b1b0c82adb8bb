//! Copying an object out of the store into a user's directory.
//!
//! Invariants:
//! - The destination appears complete or not at all: the copy is built in a hidden staging dir
//!   beside it and renamed into place with one `rename(2)`, which replaces at most an empty
//!   directory (or, for [`replace_tree`], swapped in with `RENAME_EXCHANGE`).
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
//!   writable by its owner (directories 0755, files 0644 or 0755, less the umask).
//! - Nothing is written into the store.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tmp::{TempDir, sweep_in};

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
    if let Err(e) = sweep_in(&parent, is_staging_name, false, true) {
        log::warn!(
            "{}; leftovers of killed exports are left alone",
            e.describe()
        );
    }
}

/// Creates a staging dir for `base` in `parent`: a temp dir of the store's protocol, outside
/// the store (removed, with its lock, when dropped). The copy is built in its `tree/`; a
/// replaced tree goes to its `old/` when the file system cannot exchange.
fn staging(parent: &Path, base: &str) -> Result<TempDir> {
    TempDir::create_in(parent, 0o755, || {
        format!(".{base}{INFIX}{:016x}", fastrand::u64(..))
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

/// Copies the tree at `src` to `dest` (the caller swept beside it first: [`sweep_beside`]).
pub(crate) fn export_tree(src: &Path, dest: &Path) -> Result<()> {
    let (parent, base) = parent_and_base(dest)?;
    fs::create_dir_all(&parent).map_err(Error::io("create dir", &parent))?;
    if let Ok(m) = fs::symlink_metadata(dest)
        && !(m.is_dir() && fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none()))
    {
        // Early, friendly refusal; the rename below is what actually guarantees it.
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let staging = staging(&parent, &base)?;
    let tree = staging.path().join("tree");
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tree)
        .map_err(Error::io("create dir", &tree))?;
    copy_into(src, &tree)?;
    match fs::rename(&tree, dest) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(rustix::io::Errno::NOTEMPTY)
                    | Some(rustix::io::Errno::EXIST)
                    | Some(rustix::io::Errno::NOTDIR)
                    | Some(rustix::io::Errno::ISDIR)
            ) =>
        {
            Err(Error::DestinationExists {
                path: dest.to_path_buf(),
            })
        }
        Err(e) => Err(Error::io("rename", dest)(e)),
    }
}

/// A file to copy: source, destination, executable, size.
type FileJob = (PathBuf, PathBuf, bool, u64);

fn copy_into(src: &Path, dst: &Path) -> Result<()> {
    let mut files: Vec<FileJob> = Vec::new();
    walk(src, dst, &mut files)?;
    let in_kernel = AtomicBool::new(true);
    files
        .par_iter()
        .try_for_each(|(s, d, exec, len)| copy_file(s, d, *exec, *len, &in_kernel))
}

fn walk(src: &Path, dst: &Path, files: &mut Vec<FileJob>) -> Result<()> {
    for entry in fs::read_dir(src).map_err(Error::io("read dir", src))? {
        let entry = entry.map_err(Error::io("read dir", src))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&s).map_err(Error::io("stat", &s))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&d)
                .map_err(Error::io("create dir", &d))?;
            walk(&s, &d, files)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&s).map_err(Error::io("read link", &s))?;
            std::os::unix::fs::symlink(&t, &d).map_err(Error::io("symlink", &d))?;
        } else if ft.is_file() {
            files.push((s, d, meta.permissions().mode() & 0o111 != 0, meta.len()));
        } else {
            return Err(Error::Format {
                path: s,
                reason: "unexpected file type in an object".into(),
            });
        }
    }
    Ok(())
}

fn copy_file(src: &Path, dst: &Path, exec: bool, len: u64, in_kernel: &AtomicBool) -> Result<()> {
    let from = File::open(src).map_err(Error::io("open", src))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(dst)
        .map_err(Error::io("create", dst))?;
    crate::sys::copy_contents(&from, &to, len, in_kernel).map_err(Error::io("copy", dst))
}

/// Copies the tree at `src` to `dest`, replacing whatever `dest` holds: the new tree is built
/// beside it and swapped in with `RENAME_EXCHANGE` (or, where the file system cannot, the old tree
/// is renamed away first); the old tree is removed afterwards, never before the new one is there.
pub(crate) fn replace_tree(src: &Path, dest: &Path) -> Result<()> {
    match export_tree(src, dest) {
        Err(Error::DestinationExists { .. }) => {}
        other => return other,
    }
    let meta = fs::symlink_metadata(dest).map_err(Error::io("stat", dest))?;
    if !meta.is_dir() {
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let (parent, base) = parent_and_base(dest)?;
    let staging = staging(&parent, &base)?;
    let tree = staging.path().join("tree");
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tree)
        .map_err(Error::io("create dir", &tree))?;
    copy_into(src, &tree)?;
    let swapped = crate::sys::exchange(&tree, dest).map_err(Error::io("exchange", dest))?;
    if !swapped {
        let old = staging.path().join("old");
        fs::rename(dest, &old).map_err(Error::io("rename", dest))?;
        if let Err(e) = fs::rename(&tree, dest) {
            // Put the old tree back rather than leave the destination missing.
            let _ = fs::rename(&old, dest);
            return Err(Error::io("rename", &tree)(e));
        }
    }
    // The staging dir now holds the old tree; dropping it removes it.
    drop(staging);
    Ok(())
}
