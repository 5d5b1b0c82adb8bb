//! The one writer of a whole file at a user's path (`activate -y`, `export-spec --output`).
//!
//! Invariants:
//! - The file at `dest` is the old one or the complete new one, never a part: the bytes go to a
//!   file in a staging dir of the export protocol beside `dest` (same file system:
//!   `.<file>.stepman-<16 hex digits>/`, owner-locked by `.<file>.stepman-<16 hex>.lock`, a
//!   name unique to this call, so concurrent writers to one path never share one), which is
//!   fsynced and renamed over `dest` with one `rename(2)`; the directory is fsynced after, so
//!   the new name survives a crash.
//! - On any failure (the writer's, a full disk, a `dest` that is a directory) the staging dir is
//!   removed and `dest` is untouched. A process killed before the rename leaves its staging dir,
//!   whose lock is then free: the next write or activation into the same directory reclaims it
//!   (`export::sweep_beside`), as it does a killed activation's.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The permission bits a file written by [`write_file_atomically`] gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// These bits, whatever the umask (`activate -y`: 0644).
    Exactly(u32),
    /// These bits less the umask, as `open(2)` creates a file (`export-spec`: 0666).
    LessUmask(u32),
}

/// Writes the file `dest` atomically (see the module invariants): `write` streams the contents
/// into a buffered temp file beside `dest`. `dest`'s directory must exist.
pub fn write_file_atomically(
    dest: &Path,
    mode: FileMode,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    PendingFile::begin(dest, mode)?.finish(write)
}

/// A file being written atomically ([`write_file_atomically`] in two steps): its temp file is
/// created (exclusively, in its staging dir beside `dest`) by [`PendingFile::begin`], so that a
/// directory that cannot be written fails before the caller does anything else; dropped
/// without [`PendingFile::finish`], the staging dir goes and `dest` is untouched.
#[derive(Debug)]
pub struct PendingFile {
    dest: PathBuf,
    parent: PathBuf,
    staging: crate::tmp::TempDir,
    tmp: PathBuf,
    file: File,
    mode: FileMode,
}

impl PendingFile {
    /// Creates the temp file for `dest` (whose directory must exist). A directory this process
    /// cannot write is an [`Error::ParentNotWritable`] naming `dest`.
    pub fn begin(dest: &Path, mode: FileMode) -> Result<PendingFile> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::export::sweep_beside(dest);
        let staging = crate::export::staging(&parent, &base, dest)?;
        let tmp = staging.path().join("file");
        let bits = match mode {
            FileMode::Exactly(b) | FileMode::LessUmask(b) => b,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(bits)
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        Ok(PendingFile {
            dest: dest.to_path_buf(),
            parent,
            staging,
            tmp,
            file,
            mode,
        })
    }

    /// The path the file is written to.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Writes the contents (`write` streams them), then renames the file over `dest`.
    pub fn finish(self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let PendingFile {
            dest,
            parent,
            staging,
            tmp,
            file,
            mode,
        } = self;
        fill(file, &tmp, mode, write)?;
        sys::replace(&tmp, &dest).map_err(Error::io("rename", &dest))?;
        // The staging dir (now empty) and its lock go when it drops.
        drop(staging);
        sys::sync_path(&parent).map_err(Error::io("fsync", &parent))
    }
}

/// Writes and flushes the temp file `f` (at `tmp`).
fn fill(
    f: File,
    tmp: &Path,
    mode: FileMode,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    if let FileMode::Exactly(bits) = mode {
        sys::set_mode_fd(&f, bits).map_err(Error::io("chmod", tmp))?;
    }
    let mut out = BufWriter::new(f);
    write(&mut out)?;
    let f = out
        .into_inner()
        .map_err(|e| Error::io("write", tmp)(e.into_error()))?;
    sys::sync_file(&f).map_err(Error::io("fsync", tmp))
}
