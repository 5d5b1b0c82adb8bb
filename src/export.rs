//! Copying an object out of the store into a user's directory.
//!
//! Invariants:
//! - The destination appears complete or not at all: the copy is built in a hidden temp dir beside
//!   it and renamed into place with one `rename(2)`, which replaces at most an empty directory.
//! - The copy never aliases the store: files are copied (the kernel may share extents on
//!   reflink-capable file systems, which is copy-on-write), never hard-linked; the copy is
//!   writable by its owner (directories 0755, files 0644 or 0755, less the umask).
//! - Nothing is written into the store.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tmp::remove_tree;

/// Copies the tree at `src` to `dest`.
pub(crate) fn export_tree(src: &Path, dest: &Path) -> Result<()> {
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
    fs::create_dir_all(&parent).map_err(Error::io("create dir", &parent))?;
    if let Ok(m) = fs::symlink_metadata(dest)
        && !(m.is_dir() && fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none()))
    {
        // Early, friendly refusal; the rename below is what actually guarantees it.
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let staging = loop {
        let p = parent.join(format!(".{base}.stepman-{:016x}", fastrand::u64(..)));
        match fs::DirBuilder::new().mode(0o755).create(&p) {
            Ok(()) => break p,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create dir", &p)(e)),
        }
    };
    let result = copy_into(src, &staging).and_then(|()| match fs::rename(&staging, dest) {
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
    });
    if result.is_err() {
        let _ = remove_tree(&staging);
    }
    result
}

fn copy_into(src: &Path, dst: &Path) -> Result<()> {
    let mut files: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    walk(src, dst, &mut files)?;
    files
        .par_iter()
        .try_for_each(|(s, d, exec)| copy_file(s, d, *exec))
}

fn walk(src: &Path, dst: &Path, files: &mut Vec<(PathBuf, PathBuf, bool)>) -> Result<()> {
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
            files.push((s, d, meta.permissions().mode() & 0o111 != 0));
        } else {
            return Err(Error::Format {
                path: s,
                reason: "unexpected file type in an object".into(),
            });
        }
    }
    Ok(())
}

fn copy_file(src: &Path, dst: &Path, exec: bool) -> Result<()> {
    let mut from = File::open(src).map_err(Error::io("open", src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(dst)
        .map_err(Error::io("create", dst))?;
    io::copy(&mut from, &mut to).map_err(Error::io("copy", dst))?;
    Ok(())
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
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{base}.stepman-{:016x}", fastrand::u64(..)));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&staging)
        .map_err(Error::io("create dir", &staging))?;
    if let Err(e) = copy_into(src, &staging) {
        let _ = remove_tree(&staging);
        return Err(e);
    }
    let swapped = crate::sys::exchange(&staging, dest).map_err(Error::io("exchange", dest))?;
    if !swapped {
        let old = parent.join(format!(".{base}.stepman-old-{:016x}", fastrand::u64(..)));
        fs::rename(dest, &old).map_err(Error::io("rename", dest))?;
        fs::rename(&staging, dest).map_err(Error::io("rename", &staging))?;
        return remove_tree(&old);
    }
    // `staging` now holds the old tree.
    remove_tree(&staging)
}
