//! Directory ingest: walks a local tree without following symlinks.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::TreeWriter;
use crate::error::{Error, Result};
use crate::hash::ObjectId;

/// Ingests the tree under `src` (the directory itself becomes the root).
pub(crate) fn ingest_dir(src: &Path, mut w: TreeWriter) -> Result<(ObjectId, PathBuf)> {
    walk(src, src, &mut w)?;
    w.finish()
}

fn walk(top: &Path, dir: &Path, w: &mut TreeWriter) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io("read dir", dir))?
        .collect::<Result<_, _>>()
        .map_err(Error::io("read dir", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(top).unwrap_or(&path);
        let Some(rel_str) = rel.to_str() else {
            return Err(Error::Rejected {
                source_name: w.source().to_string(),
                entry: rel.to_string_lossy().into_owned(),
                reason: "name is not UTF-8".into(),
            });
        };
        let rel_str = rel_str.to_string();
        let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            w.add_dir(&rel_str)?;
            walk(top, &path, w)?;
        } else if ft.is_file() {
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(Error::io("open", &path))?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            w.add_file(&rel_str, exec, Some(meta.len()), f)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(Error::io("read link", &path))?;
            let Some(t) = target.to_str() else {
                return Err(Error::Rejected {
                    source_name: w.source().to_string(),
                    entry: rel_str,
                    reason: "symlink target is not UTF-8".into(),
                });
            };
            w.add_symlink(&rel_str, t)?;
        } else {
            return Err(Error::Rejected {
                source_name: w.source().to_string(),
                entry: rel_str,
                reason: "only directories, regular files and symlinks are accepted".into(),
            });
        }
    }
    Ok(())
}
