//! Tar and tar.gz ingest: a hand-written loop over `tar::Archive::entries`, every entry vetted
//! before anything is written, the end-of-archive marker required, and the gzip stream drained to
//! its end so that its CRC and length are checked.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;

use tar::EntryType;

use super::TreeWriter;
use crate::error::{Error, LimitKind, Result};
use crate::hash::ObjectId;

/// Counts bytes through a reader.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.count.set(self.count.get() + amt as u64);
        self.inner.consume(amt)
    }
}

/// The decompressed stream: counts bytes, remembers the last 512 of them, enforces the ratio and
/// the header size.
struct Tracked<R> {
    inner: R,
    total: u64,
    last: [u8; 512],
    compressed: Option<Rc<Cell<u64>>>,
    max_ratio: u64,
    ratio_floor: u64,
    ratio_exceeded: Rc<Cell<bool>>,
    /// Reading past this offset is refused: the end of the current entry's data plus the header
    /// budget of the next one, so that the `tar` crate never buffers a huge PAX or GNU long-name
    /// record in memory.
    header_end: Rc<Cell<u64>>,
    header_exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        let got = &buf[..n];
        if n >= 512 {
            self.last.copy_from_slice(&got[n - 512..]);
        } else {
            self.last.copy_within(n.., 0);
            self.last[512 - n..].copy_from_slice(got);
        }
        if self.total > self.header_end.get() {
            self.header_exceeded.set(true);
            return Err(io::Error::other("tar header size limit exceeded"));
        }
        if let Some(c) = &self.compressed
            && self.total > self.ratio_floor
            && self.total > self.max_ratio.saturating_mul(c.get().max(1))
        {
            self.ratio_exceeded.set(true);
            return Err(io::Error::other("compression ratio limit exceeded"));
        }
        Ok(n)
    }
}

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A gzip-compressed tar (`.tar.gz`, `.tgz`).
    Gzip,
    /// A plain tar.
    None,
}

/// Ingests a tar stream, compressed as `compression` says.
pub(crate) fn ingest_tar<R: Read>(
    input: R,
    compression: Compression,
    mut w: TreeWriter,
) -> Result<(ObjectId, PathBuf)> {
    let src = w.source().to_string();
    let bad = w.bad_archive();
    let limits = *w.limits();
    let compressed = Rc::new(Cell::new(0u64));
    let ratio_exceeded = Rc::new(Cell::new(false));
    let header_end = Rc::new(Cell::new(limits.max_header_bytes));
    let header_exceeded = Rc::new(Cell::new(false));
    let raw = Counted {
        inner: BufReader::with_capacity(256 * 1024, input),
        count: compressed.clone(),
    };
    let gz = compression == Compression::Gzip;
    let stream: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::None => Box::new(raw),
    };
    let tracked = Tracked {
        inner: stream,
        total: 0,
        last: [0xff; 512],
        compressed: gz.then(|| compressed.clone()),
        max_ratio: limits.max_ratio,
        ratio_floor: limits.ratio_floor_bytes,
        ratio_exceeded: ratio_exceeded.clone(),
        header_end: header_end.clone(),
        header_exceeded: header_exceeded.clone(),
    };
    let mut archive = tar::Archive::new(tracked);
    // `entry`: the entry being read, "" between entries.
    let limit_or = |e: Error, entry: &str| -> Error {
        if ratio_exceeded.get() {
            Error::LimitExceeded {
                source_name: src.clone(),
                entry: entry.to_string(),
                what: LimitKind::CompressionRatio,
                limit: limits.max_ratio,
            }
        } else if header_exceeded.get() {
            Error::LimitExceeded {
                source_name: src.clone(),
                entry: String::new(),
                what: LimitKind::HeaderBytes,
                limit: limits.max_header_bytes,
            }
        } else {
            e
        }
    };
    let mut data_end: u64 = 0;
    {
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("reading tar: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| limit_or(bad(format!("reading tar header: {e}")), ""))?;
            let size = entry.size();
            data_end = entry.raw_file_position() + size.div_ceil(512) * 512;
            header_end.set(data_end.saturating_add(limits.max_header_bytes));
            let path_bytes = entry.path_bytes();
            let path = std::str::from_utf8(&path_bytes)
                .map_err(|_| Error::Rejected {
                    source_name: src.clone(),
                    entry: String::from_utf8_lossy(&path_bytes).into_owned(),
                    reason: "name is not UTF-8".into(),
                })?
                .to_string();
            let reject = |reason: &str| Error::Rejected {
                source_name: src.clone(),
                entry: path.clone(),
                reason: reason.to_string(),
            };
            let kind = entry.header().entry_type();
            let mode = entry
                .header()
                .mode()
                .map_err(|e| bad(format!("entry {path:?}: bad mode: {e}")))?;
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    w.add_file(&path, mode & 0o111 != 0, Some(size), entry)
                        .map_err(|e| limit_or(e, &path))?;
                }
                EntryType::Directory => w.add_dir(&path)?,
                EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| reject("symlink without a target"))?;
                    let target = std::str::from_utf8(&target)
                        .map_err(|_| reject("symlink target is not UTF-8"))?;
                    w.add_symlink(&path, target)?;
                }
                EntryType::XGlobalHeader => {}
                EntryType::Link => return Err(reject("hardlinks are not accepted")),
                EntryType::Char | EntryType::Block => {
                    return Err(reject("device files are not accepted"));
                }
                EntryType::Fifo => return Err(reject("fifos are not accepted")),
                EntryType::GNUSparse => return Err(reject("sparse files are not accepted")),
                other => {
                    return Err(reject(&format!(
                        "unsupported entry type {:?}",
                        other.as_byte() as char
                    )));
                }
            }
        }
    }
    let mut tracked = archive.into_inner();
    header_end.set(u64::MAX);
    // The entries iterator stops at the first zero block *or* at a clean EOF: only the first
    // proves the archive is complete.
    if tracked.total != data_end.saturating_add(512) || tracked.last.iter().any(|&b| b != 0) {
        return Err(limit_or(
            bad("truncated tar: no end-of-archive marker".into()),
            "",
        ));
    }
    // Drain: the rest must be zero padding, and draining makes the gzip decoder check its trailer.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tracked.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(limit_or(bad(format!("corrupt compressed stream: {e}")), ""));
            }
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(bad("data after the end-of-archive marker".into()));
        }
        if tracked.total > data_end.saturating_add(16 << 20) {
            return Err(bad(
                "more than 16 MiB of padding after the end-of-archive marker".into(),
            ));
        }
    }
    w.finish()
}
