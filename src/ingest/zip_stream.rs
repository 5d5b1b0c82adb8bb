//! Zip ingest from a stream (an HTTP body): local entries are vetted and written as they arrive,
//! then the central directory, at the end, is checked against what was seen and decides each
//! entry's kind and mode. No temp file of the archive, one pass.
//!
//! Invariants:
//! - The same vetting as the central-directory path (`zip.rs`): names (UTF-8, no `..`, not
//!   absolute, limits), no encryption, no duplicates, sizes, CRC-32, compression ratio, and kinds
//!   and modes from the central directory's external attributes (regular file, executable or not,
//!   directory, symlink whose target stays inside the tree; devices, fifos and sockets refused).
//! - Each local entry is written as a pending file of mode 0444 ([`TreeWriter::add_pending_file`],
//!   flushed at once when durable); only the central directory settles it into a file of mode
//!   0444/0555, a symlink or a directory, inside the staging dir, before anything is published.
//! - The central directory must list exactly the local entries, in the same order, with the same
//!   names, methods, CRCs, sizes and offsets; the end records must agree with it (entry count,
//!   size, offset, one disk); nothing may follow the end record. Any mismatch refuses the archive.
//! - An entry that cannot be delimited without its sizes (stored, with a data descriptor) is not
//!   guessed at: the result is [`Streamed::Fallback`], and the caller reads the archive through
//!   its central directory instead (`zip.rs`). Deflate with a data descriptor ends by itself.
//! - Memory: one entry's name and extra field (at most 64 KiB each), the list of entries seen
//!   (bounded by the entry and index limits) and the central directory as read
//!   ([`Limits::max_index_bytes`](super::Limits)); never the archive.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

use flate2::{Decompress, FlushDecompress, Status};

use super::TreeWriter;
use crate::error::{Error, LimitKind, Result};
use crate::hash::ObjectId;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

/// Flag bits of a zip entry.
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;

/// What a streamed zip ingest came to.
#[derive(Debug)]
pub(crate) enum Streamed {
    /// The tree, finished (and flushed when durable).
    Tree(ObjectId),
    /// The archive cannot be read as a stream without guessing (the reason says why); nothing
    /// is refused: read it through its central directory instead. The tree's root is left
    /// half-written for the caller to remove.
    Fallback(String),
}

/// A reader that counts the bytes taken from it: the offset in the archive.
struct Pos<R> {
    inner: R,
    pos: Rc<Cell<u64>>,
}

impl<R: Read> Read for Pos<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Pos<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pos.set(self.pos.get() + amt as u64);
        self.inner.consume(amt)
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// The data of a ZIP64 extended information extra field (id 1), if `extra` has one; `None` when
/// it has none, an error when the extra field is malformed.
fn zip64_field(extra: &[u8]) -> std::result::Result<Option<&[u8]>, String> {
    let mut i = 0;
    let mut found = None;
    while i < extra.len() {
        if i + 4 > extra.len() {
            return Err("extra field ends inside a header".into());
        }
        let (id, len) = (u16_at(extra, i), u16_at(extra, i + 2) as usize);
        let data = extra
            .get(i + 4..i + 4 + len)
            .ok_or("extra field runs past its end")?;
        if id == 1 {
            if found.is_some() {
                return Err("two ZIP64 extra fields".into());
            }
            found = Some(data);
        }
        i += 4 + len;
    }
    Ok(found)
}

/// One local entry as seen in the stream.
struct Seen {
    name: Vec<u8>,
    path: String,
    offset: u64,
    method: u16,
    flags: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    /// Written as a pending file (else: a directory-named entry, nothing written yet).
    pending: bool,
}

/// An entry's data as it comes out: decompressed, counted, CRC'd, the ratio enforced.
struct EntryData<'a, R> {
    src: &'a mut Pos<R>,
    /// Deflate state; `None` for stored data.
    inflate: Option<Decompress>,
    /// Compressed bytes this entry may still take from the stream (`None`: until the deflate
    /// stream ends by itself).
    left: Option<u64>,
    done: bool,
    taken: u64,
    out: u64,
    crc: flate2::Crc,
    /// Uncompressed bytes of the entries before this one, and the ratio limit.
    before: u64,
    max_ratio: u64,
    ratio_floor: u64,
    ratio_exceeded: Rc<Cell<bool>>,
}

impl<R: BufRead> EntryData<'_, R> {
    fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let Some(d) = self.inflate.as_mut() else {
            let left = self.left.unwrap_or(0);
            if left == 0 {
                self.done = true;
                return Ok(0);
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.src.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated: the stream ends inside the entry's data",
                ));
            }
            self.left = Some(left - n as u64);
            self.taken += n as u64;
            return Ok(n);
        };
        loop {
            let input = self.src.fill_buf()?;
            if input.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated: the stream ends inside the entry's data",
                ));
            }
            let input = match self.left {
                Some(l) => &input[..input.len().min(usize::try_from(l).unwrap_or(usize::MAX))],
                None => input,
            };
            if input.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "its compressed size ends before its deflate stream",
                ));
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress(input, buf, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            self.src.consume(used);
            self.taken += used as u64;
            if let Some(l) = self.left.as_mut() {
                *l -= used as u64;
            }
            if status == Status::StreamEnd {
                self.done = true;
            }
            if made > 0 || self.done {
                return Ok(made);
            }
            if used == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "deflate data makes no progress",
                ));
            }
        }
    }
}

impl<R: BufRead> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.next_chunk(buf)?;
        self.crc.update(&buf[..n]);
        self.out += n as u64;
        let total = self.before.saturating_add(self.out);
        if total > self.ratio_floor
            && total > self.max_ratio.saturating_mul(self.src.pos.get().max(1))
        {
            self.ratio_exceeded.set(true);
            return Err(io::Error::other("compression ratio limit exceeded"));
        }
        Ok(n)
    }
}

/// Ingests a zip read from `input` in one pass (see the module docs).
pub(crate) fn ingest_zip_stream<R: BufRead>(input: R, mut w: TreeWriter) -> Result<Streamed> {
    let src = w.source().to_string();
    let bad = w.bad_archive();
    let limits = *w.limits();
    let pos = Rc::new(Cell::new(0u64));
    let mut r = Pos {
        inner: input,
        pos: pos.clone(),
    };
    let ratio_exceeded = Rc::new(Cell::new(false));
    let read_err = |what: &str, e: io::Error| -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("truncated: the stream ends inside {what}"))
        } else {
            bad(format!("reading {what}: {e}"))
        }
    };
    let mut seen: Vec<Seen> = Vec::new();
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    let mut uncompressed: u64 = 0;
    let mut sig = read_u32(&mut r).map_err(|e| read_err("the first header", e))?;
    while sig == LOCAL_SIG {
        let offset = pos.get() - 4;
        let mut h = [0u8; 26];
        r.read_exact(&mut h)
            .map_err(|e| read_err("a local header", e))?;
        let (flags, method) = (u16_at(&h, 2), u16_at(&h, 4));
        let (mut crc, mut compressed, mut size) =
            (u32_at(&h, 10), u32_at(&h, 14) as u64, u32_at(&h, 18) as u64);
        let mut name = vec![0u8; u16_at(&h, 22) as usize];
        let mut extra = vec![0u8; u16_at(&h, 24) as usize];
        r.read_exact(&mut name)
            .and_then(|()| r.read_exact(&mut extra))
            .map_err(|e| read_err("a local header", e))?;
        let path = super::zip::entry_name(&src, name.clone())?;
        let reject = |reason: &str| super::zip::rejected(&src, &path, reason);
        if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 {
            return Err(reject("encrypted entries are not accepted"));
        }
        if !names.insert(name.clone()) {
            return Err(bad("duplicate entry names in the archive".into()));
        }
        if seen.len() as u64 >= limits.max_entries {
            return Err(Error::LimitExceeded {
                source_name: src,
                entry: path,
                what: LimitKind::Entries,
                limit: limits.max_entries,
            });
        }
        let zip64 = zip64_field(&extra).map_err(|e| bad(format!("entry {path:?}: {e}")))?;
        if let Some(z) = zip64 {
            // A local header's ZIP64 field holds both sizes (APPNOTE 4.5.3), when it is not
            // merely reserving room for sizes that a data descriptor gives.
            if z.len() >= 16 && flags & FLAG_DESCRIPTOR == 0 {
                size = u64_at(z, 0);
                compressed = u64_at(z, 8);
            } else if flags & FLAG_DESCRIPTOR == 0 {
                return Err(bad(format!("entry {path:?}: short ZIP64 extra field")));
            }
        }
        let descriptor = flags & FLAG_DESCRIPTOR != 0;
        match method {
            METHOD_DEFLATE => {}
            METHOD_STORED if descriptor => {
                return Ok(Streamed::Fallback(format!(
                    "entry {path:?} is stored with a data descriptor: its end cannot be found \
                     without the central directory"
                )));
            }
            METHOD_STORED => {}
            m => {
                return Err(bad(format!(
                    "entry {path:?}: compression method {m} is not supported"
                )));
            }
        }
        if !descriptor && (method == METHOD_STORED && compressed != size) {
            return Err(bad(format!(
                "entry {path:?}: stored with a compressed size unlike its size"
            )));
        }
        let declared = (!descriptor).then_some(size);
        let mut data = EntryData {
            src: &mut r,
            inflate: (method == METHOD_DEFLATE).then(|| Decompress::new(false)),
            left: (!descriptor).then_some(compressed),
            done: false,
            taken: 0,
            out: 0,
            crc: flate2::Crc::new(),
            before: uncompressed,
            max_ratio: limits.max_ratio,
            ratio_floor: limits.ratio_floor_bytes,
            ratio_exceeded: ratio_exceeded.clone(),
        };
        let dir_named = path.ends_with('/');
        let wrote = if dir_named {
            io::copy(&mut data, &mut io::sink()).map(|_| ())
        } else {
            Ok(())
        };
        let wrote = match wrote {
            Ok(()) if dir_named => Ok(()),
            Ok(()) => w.add_pending_file(&path, declared, &mut data),
            Err(e) => Err(bad(format!("reading entry {path:?}: {e}"))),
        };
        if let Err(e) = wrote {
            if ratio_exceeded.get() {
                return Err(Error::LimitExceeded {
                    source_name: src,
                    entry: path,
                    what: LimitKind::CompressionRatio,
                    limit: limits.max_ratio,
                });
            }
            return Err(e);
        }
        let (taken, out, actual_crc, left) = (data.taken, data.out, data.crc.sum(), data.left);
        uncompressed = uncompressed.saturating_add(out);
        if descriptor {
            let (d_crc, d_compressed, d_size) = read_descriptor(&mut r, zip64.is_some())
                .map_err(|e| read_err(&format!("the data descriptor of {path:?}"), e))?;
            (crc, compressed, size) = (d_crc, d_compressed, d_size);
        } else if left != Some(0) {
            return Err(bad(format!(
                "entry {path:?}: its deflate data ends before its compressed size"
            )));
        }
        if actual_crc != crc {
            return Err(bad(format!("entry {path:?}: CRC-32 mismatch")));
        }
        if taken != compressed || out != size {
            return Err(bad(format!(
                "entry {path:?}: sizes unlike its header's ({compressed} compressed, {size} in \
                 all; read {taken} and {out})"
            )));
        }
        seen.push(Seen {
            name,
            path,
            offset,
            method,
            flags,
            crc,
            compressed,
            size,
            pending: !dir_named,
        });
        sig = read_u32(&mut r).map_err(|e| read_err("the archive after an entry", e))?;
    }

    // The central directory: every entry seen, in order, nothing else.
    let cd_start = pos.get() - 4;
    let mut listed = 0usize;
    while sig == CENTRAL_SIG {
        let mut h = [0u8; 42];
        r.read_exact(&mut h)
            .map_err(|e| read_err("the central directory", e))?;
        let (name_len, extra_len, comment_len) = (
            u16_at(&h, 24) as usize,
            u16_at(&h, 26) as usize,
            u16_at(&h, 28) as usize,
        );
        let index = pos.get() - cd_start + (name_len + extra_len + comment_len) as u64;
        if index > limits.max_index_bytes {
            return Err(Error::LimitExceeded {
                source_name: src,
                entry: String::new(),
                what: LimitKind::ZipIndexBytes,
                limit: limits.max_index_bytes,
            });
        }
        let mut name = vec![0u8; name_len];
        let mut extra = vec![0u8; extra_len];
        let mut comment = vec![0u8; comment_len];
        r.read_exact(&mut name)
            .and_then(|()| r.read_exact(&mut extra))
            .and_then(|()| r.read_exact(&mut comment))
            .map_err(|e| read_err("the central directory", e))?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        let Some(s) = seen.get(listed) else {
            return Err(bad(format!(
                "the central directory lists {shown:?}, which is not among the archive's entries"
            )));
        };
        listed += 1;
        let (made_by, flags, method, crc) =
            (u16_at(&h, 0), u16_at(&h, 4), u16_at(&h, 6), u32_at(&h, 12));
        let (mut compressed, mut size) = (u32_at(&h, 16) as u64, u32_at(&h, 20) as u64);
        let mut disk = u16_at(&h, 30) as u32;
        let external = u32_at(&h, 34);
        let mut offset = u32_at(&h, 38) as u64;
        if let Some(z) = zip64_field(&extra).map_err(|e| bad(format!("entry {shown:?}: {e}")))? {
            // Only the fields whose 32-bit value is saturated are there, in this order.
            let mut z = z;
            let mut take = |v: &mut u64, saturated: bool| -> std::result::Result<(), Error> {
                if saturated {
                    if z.len() < 8 {
                        return Err(bad(format!("entry {shown:?}: short ZIP64 extra field")));
                    }
                    *v = u64_at(z, 0);
                    z = &z[8..];
                }
                Ok(())
            };
            let saturated = (
                size == 0xFFFF_FFFF,
                compressed == 0xFFFF_FFFF,
                offset == 0xFFFF_FFFF,
            );
            take(&mut size, saturated.0)?;
            take(&mut compressed, saturated.1)?;
            take(&mut offset, saturated.2)?;
            if disk == 0xFFFF && z.len() >= 4 {
                disk = u32_at(z, 0);
            }
        }
        let same = name == s.name
            && method == s.method
            && (flags & FLAG_ENCRYPTED) == (s.flags & FLAG_ENCRYPTED)
            && crc == s.crc
            && compressed == s.compressed
            && size == s.size
            && offset == s.offset
            && disk == 0;
        if !same {
            return Err(bad(format!(
                "the central directory's record of {shown:?} (entry #{n}) does not match the \
                 entry in the archive (name, method, CRC, sizes or offset)",
                n = listed - 1
            )));
        }
        settle(&mut w, s, made_by, external)?;
        sig = read_u32(&mut r).map_err(|e| read_err("the central directory", e))?;
    }
    if let Some(s) = seen.get(listed) {
        return Err(bad(format!(
            "entry {:?} is not in the central directory",
            s.path
        )));
    }
    let cd_size = pos.get() - 4 - cd_start;

    // The end records: an optional ZIP64 end record and its locator, then the end record.
    let mut end64 = None;
    if sig == EOCD64_SIG {
        let at = pos.get() - 4;
        let mut h = [0u8; 52];
        r.read_exact(&mut h)
            .map_err(|e| read_err("the ZIP64 end record", e))?;
        let record = u64_at(&h, 0);
        let rest = record
            .checked_sub(44)
            .filter(|n| *n <= 64 << 10)
            .ok_or_else(|| bad("a ZIP64 end record of an impossible size".into()))?;
        skip_exact(&mut r, rest).map_err(|e| read_err("the ZIP64 end record", e))?;
        let (disk, cd_disk) = (u32_at(&h, 12), u32_at(&h, 16));
        let (on_disk, entries, size, offset) = (
            u64_at(&h, 20),
            u64_at(&h, 28),
            u64_at(&h, 36),
            u64_at(&h, 44),
        );
        if disk != 0 || cd_disk != 0 || on_disk != entries {
            return Err(bad("a multi-disk zip is not accepted".into()));
        }
        if read_u32(&mut r).map_err(|e| read_err("the ZIP64 locator", e))? != LOCATOR_SIG {
            return Err(bad("a ZIP64 end record without its locator".into()));
        }
        let mut l = [0u8; 16];
        r.read_exact(&mut l)
            .map_err(|e| read_err("the ZIP64 locator", e))?;
        if u32_at(&l, 0) != 0 || u64_at(&l, 4) != at || u32_at(&l, 12) > 1 {
            return Err(bad("a ZIP64 locator that points elsewhere".into()));
        }
        end64 = Some((entries, size, offset));
        sig = read_u32(&mut r).map_err(|e| read_err("the end record", e))?;
    }
    if sig != EOCD_SIG {
        return Err(bad(format!(
            "unexpected data at offset {} where an entry, the central directory or its end \
             record should be",
            pos.get() - 4
        )));
    }
    let mut e = [0u8; 18];
    r.read_exact(&mut e)
        .map_err(|e| read_err("the end record", e))?;
    skip_exact(&mut r, u16_at(&e, 16) as u64)
        .map_err(|e| read_err("the end record's comment", e))?;
    let (disk, cd_disk) = (u16_at(&e, 0), u16_at(&e, 2));
    let (mut on_disk, mut entries) = (u16_at(&e, 4) as u64, u16_at(&e, 6) as u64);
    let (mut size, mut offset) = (u32_at(&e, 8) as u64, u32_at(&e, 12) as u64);
    if let Some((n, s, o)) = end64 {
        if on_disk == 0xFFFF {
            on_disk = n;
        }
        if entries == 0xFFFF {
            entries = n;
        }
        if size == 0xFFFF_FFFF {
            size = s;
        }
        if offset == 0xFFFF_FFFF {
            offset = o;
        }
        if (n, s, o) != (entries, size, offset) {
            return Err(bad(
                "the ZIP64 end record and the end record disagree".into()
            ));
        }
    }
    if disk != 0 || cd_disk != 0 || on_disk != entries {
        return Err(bad("a multi-disk zip is not accepted".into()));
    }
    if entries != listed as u64 || size != cd_size || offset != cd_start {
        return Err(bad(format!(
            "the end record does not describe the central directory ({entries} entries, {size} \
             bytes at {offset}; it has {listed} entries, {cd_size} bytes at {cd_start})"
        )));
    }
    match r.fill_buf() {
        Ok([]) => {}
        Ok(_) => {
            return Err(bad(
                "trailing data after the end of the central directory".into()
            ));
        }
        Err(e) => return Err(read_err("the end of the archive", e)),
    }
    let (id, _) = w.finish()?;
    Ok(Streamed::Tree(id))
}

/// Decides the kind and mode of a seen entry from its central-directory record, as `zip.rs`
/// does from the same fields.
fn settle(w: &mut TreeWriter, s: &Seen, made_by: u16, external: u32) -> Result<()> {
    let reject = |reason: &str| Error::Rejected {
        source_name: w.source().to_string(),
        entry: s.path.clone(),
        reason: reason.to_string(),
    };
    let mode = unix_mode(made_by, external);
    let fmt = mode.map(|m| m & S_IFMT).filter(|&f| f != 0);
    let dir_named = s.path.ends_with('/');
    match fmt {
        Some(S_IFLNK) if s.pending => {
            if s.size > w.limits().max_path_bytes as u64 {
                return Err(reject("symlink target too long"));
            }
            w.settle_symlink(&s.path)
        }
        Some(S_IFLNK) => Err(reject("a symlink with a directory name")),
        Some(S_IFDIR) if s.pending => w.settle_dir(&s.path),
        Some(S_IFDIR) => w.add_dir(&s.path),
        None if dir_named => w.add_dir(&s.path),
        Some(S_IFREG) | None => {
            if dir_named {
                return Err(reject("file entry with a directory name"));
            }
            w.settle_file(&s.path, mode.is_some_and(|m| m & 0o111 != 0))
        }
        Some(_) => Err(reject("devices, fifos and sockets are not accepted")),
    }
}

/// The Unix mode of a central-directory record, as the `zip` crate (9.x) reads it: the high
/// half of the external attributes when made on Unix, a mode derived from the DOS attributes
/// when made on DOS, and for any other system the high half when it is not zero (how archives
/// made on Windows by some tools carry symlinks and executables), else none; setuid, setgid and
/// sticky bits cleared.
fn unix_mode(made_by: u16, external: u32) -> Option<u32> {
    if external == 0 {
        return None;
    }
    let high = (external >> 16) & !0o7000;
    match made_by >> 8 {
        3 => Some(high),
        0 => {
            let dos = external & 0xFF;
            let mut mode = if dos & 0x10 != 0 {
                S_IFDIR | 0o775
            } else {
                S_IFREG | 0o664
            };
            if dos & 0x01 != 0 {
                mode &= !0o222;
            }
            Some(mode)
        }
        _ if external >> 16 != 0 => Some(high),
        _ => None,
    }
}

/// A data descriptor after an entry's data: its CRC and sizes (8 bytes each when the entry has a
/// ZIP64 field), its signature optional.
fn read_descriptor<R: Read>(r: &mut R, zip64: bool) -> io::Result<(u32, u64, u64)> {
    let mut first = read_u32(r)?;
    if first == DESCRIPTOR_SIG {
        first = read_u32(r)?;
    }
    if zip64 {
        let mut b = [0u8; 16];
        r.read_exact(&mut b)?;
        Ok((first, u64_at(&b, 0), u64_at(&b, 8)))
    } else {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok((first, u32_at(&b, 0) as u64, u32_at(&b, 4) as u64))
    }
}

/// Reads and drops exactly `n` bytes: a stream that ends sooner is `UnexpectedEof`, as
/// `read_exact` reports it (a declared comment or record that is not all there is a truncated
/// archive, which the central-directory reader refuses too).
fn skip_exact<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink())?;
    if skipped < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
