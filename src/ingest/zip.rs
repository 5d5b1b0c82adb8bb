//! Zip ingest: entries read through the central directory, each one vetted, its CRC checked by
//! reading it to the end.
//!
//! Memory: the `zip` crate reads the whole central directory into memory (a few hundred bytes
//! per entry beyond its bytes in the file) before the first entry can be vetted, and which end
//! record it trusts is its own choice. So the bytes it may read while opening the archive are
//! budgeted ([`Limits::max_index_bytes`](super::Limits) plus the end-record search): past the
//! budget its reads fail and the archive is refused, whatever the end record claims.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::rc::Rc;

use super::TreeWriter;
use crate::error::{Error, LimitKind, Result};
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
    let bad = w.bad_archive();
    let archive_len = file
        .seek(SeekFrom::End(0))
        .map_err(Error::io("seek", &src))?;
    let limits = *w.limits();
    let claimed = zip64_claimed_entries(&mut file, archive_len).map_err(Error::io("read", &src))?;
    if claimed > limits.max_entries {
        return Err(Error::LimitExceeded {
            source_name: src,
            entry: String::new(),
            what: LimitKind::ClaimedZipEntries,
            limit: limits.max_entries,
        });
    }
    let budget = Rc::new(Cell::new(Some(
        limits.max_index_bytes.saturating_add(END_SEARCH_BYTES),
    )));
    let reader = Budgeted {
        inner: file,
        left: budget.clone(),
    };
    let opened = zip::ZipArchive::new(reader);
    let over = budget.get() == Some(0);
    // From here on only entries' data is read: no budget.
    budget.set(None);
    let mut archive = match opened {
        Ok(a) => a,
        Err(_) if over => {
            return Err(Error::LimitExceeded {
                source_name: src,
                entry: String::new(),
                what: LimitKind::ZipIndexBytes,
                limit: limits.max_index_bytes,
            });
        }
        Err(e) => return Err(bad(format!("reading zip: {e}"))),
    };
    // The central directory is read into a map by name: a duplicate would silently win.
    if archive.has_duplicate_names() {
        return Err(bad("duplicate entry names in the central directory".into()));
    }
    if archive.len() as u64 > limits.max_entries {
        return Err(Error::LimitExceeded {
            source_name: src,
            entry: String::new(),
            what: LimitKind::Entries,
            limit: limits.max_entries,
        });
    }
    let mut uncompressed: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("reading zip entry #{i}: {e}")))?;
        let path = entry_name(&src, entry.name_raw().to_vec())?;
        let reject = |reason: &str| rejected(&src, &path, reason);
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
                what: LimitKind::CompressionRatio,
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

/// Signatures of the zip64 end of central directory record, the zip64 locator and the end of
/// central directory record, as they appear in the file.
const EOCD64_SIG: &[u8; 4] = b"PK\x06\x06";
const LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";

/// The most entries that a zip64 end record of `file`, which the `zip` crate could trust,
/// claims (as `min(entries, directory size / 46)`: the room the crate reserves up front, before
/// it reads a single entry, and so before any read budget applies). The crate accepts a zip64
/// record only when it ends exactly where a locator starts that is followed by an end record,
/// wherever in the file that is; so every such triple is checked, not only the last one. A
/// plain (zip32) end record claims at most 65,535 entries and needs no check.
/// A zip entry's name: UTF-8, else the entry is refused (one archive of `src`).
pub(super) fn entry_name(src: &str, raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw).map_err(|e| {
        rejected(
            src,
            &String::from_utf8_lossy(e.as_bytes()),
            "name is not UTF-8",
        )
    })
}

/// The error refusing the archive `src` for its entry `path`.
pub(super) fn rejected(src: &str, path: &str, reason: &str) -> Error {
    Error::Rejected {
        source_name: src.to_string(),
        entry: path.to_string(),
        reason: reason.to_string(),
    }
}

fn zip64_claimed_entries<R: Read + Seek>(file: &mut R, len: u64) -> io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    let finder = memchr::memmem::Finder::new(EOCD64_SIG);
    let mut buf = vec![0u8; CHUNK];
    let mut most = 0u64;
    let mut at = 0u64;
    while at < len {
        file.seek(SeekFrom::Start(at))?;
        let n = read_full(file, &mut buf)?;
        if n == 0 {
            break;
        }
        let hits: Vec<usize> = finder.find_iter(&buf[..n]).collect();
        for i in hits {
            let q = at + i as u64;
            let mut rec = [0u8; 56];
            if !bytes_at(file, &buf[..n], at, q, &mut rec)? {
                continue;
            }
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rec[i..i + 8]);
                u64::from_le_bytes(b)
            };
            let (record_size, entries, dir_size) = (u64_at(4), u64_at(32), u64_at(40));
            let Some(locator) = q.checked_add(12).and_then(|e| e.checked_add(record_size)) else {
                continue;
            };
            if locator.saturating_add(24) > len {
                continue;
            }
            let mut sig = [0u8; 4];
            if !bytes_at(file, &buf[..n], at, locator, &mut sig)? || &sig != LOCATOR_SIG {
                continue;
            }
            if !bytes_at(file, &buf[..n], at, locator + 20, &mut sig)? || &sig != EOCD_SIG {
                continue;
            }
            most = most.max(entries.min(dir_size / 46));
        }
        if n < CHUNK {
            break;
        }
        // Overlap by a signature's length less one, so none is split between two chunks.
        at += (n - (EOCD64_SIG.len() - 1)) as u64;
    }
    Ok(most)
}

/// Fills `out` with the file's bytes at `pos`: from `chunk` (the file's bytes at `chunk_at`)
/// when it holds them, so a file full of signatures costs no extra reads, else from the file.
/// False when the file ends before `out` is full.
fn bytes_at<R: Read + Seek>(
    file: &mut R,
    chunk: &[u8],
    chunk_at: u64,
    pos: u64,
    out: &mut [u8],
) -> io::Result<bool> {
    if let Some(start) = pos
        .checked_sub(chunk_at)
        .and_then(|s| usize::try_from(s).ok())
        && let Some(src) = chunk.get(start..start.saturating_add(out.len()))
        && src.len() == out.len()
    {
        out.copy_from_slice(src);
        return Ok(true);
    }
    file.seek(SeekFrom::Start(pos))?;
    Ok(read_full(file, out)? == out.len())
}

/// Reads until `buf` is full or the end; how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes allowed for finding the end records (the end of central directory record with the
/// longest comment, 22 + 65,535 bytes, the zip64 locator and record), on top of the index budget.
const END_SEARCH_BYTES: u64 = 256 << 10;

/// A reader that fails once it has handed out the bytes in `left` (`None`: unlimited).
struct Budgeted<R> {
    inner: R,
    left: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other("zip index larger than the limit"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(Some(left - n as u64));
        Ok(n)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}
