//! Tar and tar.gz ingest: a hand-written loop over `tar::Archive::entries`, every entry vetted
//! before anything is written, the end-of-archive marker required, and the gzip stream drained to
//! its end so that its CRC and length are checked. Each entry's header blocks (its PAX and GNU
//! extension headers, within the header budget) are kept as read, so that its PAX records are
//! vetted as written rather than as the `tar` crate chose to read them, and a PAX sparse file is
//! refused like a GNU one.

use std::cell::{Cell, RefCell};
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
    /// Every byte read from this offset on is kept in `headers`: the end of the current entry's
    /// data, so that `headers` holds the next entry's header blocks (PAX and GNU extension
    /// headers and their data, then its own header), at most the header budget.
    headers_from: Rc<Cell<u64>>,
    headers: Rc<RefCell<Vec<u8>>>,
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
        let from = self.headers_from.get();
        if self.total > from {
            let start = self.total - n as u64;
            let skip = from.saturating_sub(start) as usize;
            self.headers.borrow_mut().extend_from_slice(&got[skip..]);
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
    let headers_from = Rc::new(Cell::new(0u64));
    let headers = Rc::new(RefCell::new(Vec::new()));
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
        headers_from: headers_from.clone(),
        headers: headers.clone(),
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
            // This entry's header blocks; from here on, the next entry's.
            let blocks = std::mem::take(&mut *headers.borrow_mut());
            headers_from.set(data_end);
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
            let pax = pax_records(&blocks).map_err(|why| {
                bad(format!(
                    "entry {path:?}: malformed PAX extended header: {why}"
                ))
            })?;
            if pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
                // A PAX sparse file (GNU formats 0.0, 0.1, 1.0): its data is a map and the data
                // regions, which another tool unpacks into a file with holes.
                let real = pax
                    .iter()
                    .find(|(k, _)| *k == b"GNU.sparse.name")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                return Err(Error::Rejected {
                    source_name: src.clone(),
                    entry: real.map_or_else(|| path.clone(), |r| format!("{path} ({r})")),
                    reason: "sparse files are not accepted (PAX GNU.sparse records)".into(),
                });
            }
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
    // What follows the entries (the end marker, padding) is not kept.
    headers_from.set(u64::MAX);
    headers.borrow_mut().clear();
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

/// A PAX record: its key and its value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// The records of every PAX extended header (`x`) among `blocks`, an entry's header blocks as
/// read (its extension headers with their data, then its own header), or why they are not
/// exactly a sequence of `<len> <key>=<value>\n` records whose decimal length is the record's.
///
/// The `tar` crate splits a PAX header at newlines, skips a record it cannot read and stops at an
/// empty line, so a corrupt header would pass with the entry keeping its ustar name. A value
/// holding a newline is refused too: there the crate and a length-reading tool read different
/// records.
fn pax_records(blocks: &[u8]) -> std::result::Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(block) = blocks.get(pos..pos + 512) {
        let h = tar::Header::from_byte_slice(block);
        let size = h.entry_size().map_err(|e| e.to_string())?;
        let start = pos + 512;
        let Some(data) = usize::try_from(size)
            .ok()
            .and_then(|size| blocks.get(start..start.checked_add(size)?))
        else {
            // The entry's own header: its data is not among the header blocks.
            break;
        };
        if h.entry_type() == EntryType::XHeader {
            out.extend(parse_pax(data)?);
        }
        pos = start + data.len().div_ceil(512) * 512;
    }
    Ok(out)
}

/// The records of one PAX extended header's data.
fn parse_pax(mut data: &[u8]) -> std::result::Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let show = || String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .filter(|&sp| sp > 0 && data[..sp].iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("no record length at {:?}", show()))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > sp + 1 && l <= data.len())
            .ok_or_else(|| format!("record length is not the record's at {:?}", show()))?;
        let (record, rest) = data.split_at(len);
        let Some(kv) = record.strip_suffix(b"\n") else {
            return Err(format!("record length is not the record's at {:?}", show()));
        };
        let kv = &kv[sp + 1..];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .filter(|&eq| eq > 0)
            .ok_or_else(|| format!("record without a key at {:?}", show()))?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        if value.contains(&b'\n') {
            return Err(format!(
                "a newline in the value of {:?}",
                String::from_utf8_lossy(key)
            ));
        }
        out.push((key, value));
        data = rest;
    }
    Ok(out)
}
