//! The one encoding of a tree in the remote tier: a canonical tar.gz (`store-format.md` §12).
//!
//! Invariants: the same tree always gives the same bytes (entries in byte order of their paths,
//! parents before children; mode 0755 for directories and executable files, 0644 for other
//! files; symlinks with their targets; owner 0, mtime 0, no extended headers but GNU long names);
//! and what it writes is read back by the store's vetting tar reader into the same tree id. The
//! reader is never this module: a fetched archive is untrusted and goes through the ingest.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes the canonical tar.gz of the tree at `root` (an object directory) into `out`, at most
/// `max` compressed bytes (beyond, an I/O error of kind `FileTooLarge`), and returns `out`.
pub(crate) fn encode<W: Write>(root: &Path, max: u64, out: W) -> Result<W> {
    let gz = flate2::write::GzEncoder::new(
        Bounded {
            out,
            written: 0,
            max,
        },
        flate2::Compression::new(6),
    );
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    append_dir(&mut tar, root, Path::new(""))?;
    let gz = tar
        .into_inner()
        .map_err(Error::io("write an archive of", root))?;
    let bounded = gz
        .finish()
        .map_err(Error::io("write an archive of", root))?;
    Ok(bounded.out)
}

/// Appends the entries under `dir` (`rel` inside the tree), in byte order, each directory
/// before what it holds.
fn append_dir<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> Result<()> {
    for (name, path, ft) in crate::scan::read_dir_names(dir)? {
        let rel = rel.join(&name);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let failed = |e: std::io::Error| Error::io("write an archive of", &path)(e);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            tar.append_data(&mut h, &rel, std::io::empty())
                .map_err(failed)?;
            append_dir(tar, &path, &rel)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(Error::io("readlink", &path))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            tar.append_link(&mut h, &rel, &target).map_err(failed)?;
        } else if ft.is_file() {
            let f = fs::File::open(&path).map_err(Error::io("open", &path))?;
            let meta = f.metadata().map_err(Error::io("stat", &path))?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o755 } else { 0o644 });
            h.set_size(meta.len());
            tar.append_data(&mut h, &rel, f).map_err(failed)?;
        } else {
            return Err(Error::io("read", &path)(
                std::io::ErrorKind::InvalidData.into(),
            ));
        }
    }
    Ok(())
}

/// A writer that refuses to take more than `max` bytes (the archive of a tree too big to upload
/// fails early instead of filling the bucket).
struct Bounded<W> {
    out: W,
    written: u64,
    max: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.written + data.len() as u64 > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("the tree's archive is larger than {} bytes", self.max),
            ));
        }
        let n = self.out.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
