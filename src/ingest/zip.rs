//! Zip ingest: entries read through the central directory, each one vetted, its CRC checked by
//! reading it to the end.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::TreeWriter;
use crate::error::{Error, Result};
use crate::hash::ObjectId;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Ingests a zip file.
pub(crate) fn ingest_zip<R: Read + Seek>(
    mut file: R,
    mut w: TreeWriter,
) -> Result<(ObjectId, PathBuf)> {
    let src = w.source().to_string();
    let bad = |reason: String| Error::BadArchive {
        source_name: src.clone(),
        reason,
    };
    let archive_len = file
        .seek(SeekFrom::End(0))
        .map_err(Error::io("seek", &src))?;
    let limits = *w.limits();
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(format!("reading zip: {e}")))?;
    // The central directory is read into a map by name: a duplicate would silently win.
    if archive.has_duplicate_names() {
        return Err(bad("duplicate entry names in the central directory".into()));
    }
    if archive.len() as u64 > limits.max_entries {
        return Err(Error::LimitExceeded {
            source_name: src,
            entry: String::new(),
            what: "number of entries",
            limit: limits.max_entries,
        });
    }
    let mut uncompressed: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("reading zip entry #{i}: {e}")))?;
        let raw = entry.name_raw().to_vec();
        let path = String::from_utf8(raw).map_err(|e| Error::Rejected {
            source_name: src.clone(),
            entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "name is not UTF-8".into(),
        })?;
        let reject = |reason: &str| Error::Rejected {
            source_name: src.clone(),
            entry: path.clone(),
            reason: reason.to_string(),
        };
        if entry.encrypted() {
            return Err(reject("encrypted entries are not accepted"));
        }
        uncompressed = uncompressed.saturating_add(entry.size());
        if uncompressed > limits.ratio_floor_bytes
            && uncompressed > limits.max_ratio.saturating_mul(archive_len.max(1))
        {
            return Err(Error::LimitExceeded {
                source_name: src,
                entry: path,
                what: "compression ratio",
                limit: limits.max_ratio,
            });
        }
        let mode = entry.unix_mode();
        let fmt = mode.map(|m| m & S_IFMT).filter(|&f| f != 0);
        let is_dir = entry.is_dir() || fmt == Some(S_IFDIR);
        match fmt {
            Some(S_IFLNK) => {
                let mut target = String::new();
                let declared = entry.size();
                if declared > limits.max_path_bytes as u64 {
                    return Err(reject("symlink target too long"));
                }
                entry
                    .take(limits.max_path_bytes as u64 + 1)
                    .read_to_string(&mut target)
                    .map_err(|e| bad(format!("entry {path:?}: {e}")))?;
                w.add_symlink(&path, &target)?;
            }
            Some(S_IFDIR) => w.add_dir(&path)?,
            None if is_dir => w.add_dir(&path)?,
            Some(S_IFREG) | None => {
                if path.ends_with('/') {
                    return Err(reject("file entry with a directory name"));
                }
                let exec = mode.is_some_and(|m| m & 0o111 != 0);
                let size = entry.size();
                w.add_file(&path, exec, Some(size), entry)?;
            }
            Some(_) => return Err(reject("devices, fifos and sockets are not accepted")),
        }
    }
    w.finish()
}
