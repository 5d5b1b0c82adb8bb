//! Shared by the archive-ingest targets: small limits, structured inputs, and the invariants
//! checked after every ingest.
//!
//! An input's first byte picks how the rest is used: even, the rest is the archive itself (raw
//! bytes, so the parsers see anything); odd, the rest is a *script* of entries that is turned
//! into a well-formed archive first (so that checksums and CRCs are right and the fuzzer spends
//! its time on names, kinds, modes and symlink targets, which is where escapes live).
//!
//! After every ingest, whatever its result: nothing was created next to the tree's root (the
//! root sits three directories deep in a fresh temp dir, so `../`, `../../` and `../../../`
//! escapes land where they are seen). After an `Ok`: the tree holds only directories, regular
//! files with one link and mode 0444/0555, and symlinks none of which resolves outside the root
//! (checked with the kernel's rules against the real files); directories are 0555; ingesting the
//! same bytes again gives the same id.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stepman::fuzzing::{self, Format};
use stepman::{Limits, ObjectId};

/// Small limits: no input can fill the disk or the memory.
pub fn limits() -> Limits {
    Limits {
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 512,
        max_path_bytes: 1024,
        max_depth: 32,
        max_ratio: 200,
        ratio_floor_bytes: 256 << 10,
        max_header_bytes: 64 << 10,
        max_index_bytes: 64 << 10,
    }
}

pub fn scratch() -> PathBuf {
    if let Some(d) = std::env::var_os("STEPMAN_FUZZ_TMP") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Ingests `data` as `format` and checks the invariants (see the module docs).
pub fn ingest_and_check(format: Format, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let archive = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match format {
            Format::Tar => build_tar(rest),
            Format::TarGz => gzip(&build_tar(rest)),
            Format::Zip | Format::ZipStream => build_zip(rest),
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("stepman-fuzz-")
        .tempdir_in(scratch())
        .expect("temp dir");
    let base = tmp.path().join("a/b/c");
    fs::create_dir_all(&base).unwrap();
    let root = base.join("root");
    let r = fuzzing::ingest_bytes(format, &archive, &root, limits());
    only_child(tmp.path(), "a");
    only_child(&tmp.path().join("a"), "b");
    only_child(&tmp.path().join("a/b"), "c");
    only_child(&base, "root");
    if let Ok(id) = r {
        assert_eq!(ObjectId::from_hex(&id.to_hex()), Some(id));
        check_tree(&root);
        let again = base.join("again");
        let id2 = fuzzing::ingest_bytes(format, &archive, &again, limits())
            .expect("the same bytes ingest twice");
        assert_eq!(id, id2, "the same bytes gave two ids");
        make_writable(&again);
    }
    make_writable(&root);
}

fn only_child(dir: &Path, name: &str) {
    let names: Vec<OsString> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.is_empty() || names == [OsString::from(name)],
        "{} holds {names:?}: written outside the tree",
        dir.display()
    );
}

fn check_tree(root: &Path) {
    let m = fs::symlink_metadata(root).unwrap();
    assert!(m.is_dir(), "root is not a directory");
    walk(root, &mut Vec::new());

    fn walk(root: &Path, rel: &mut Vec<OsString>) {
        let dir: PathBuf = rel.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            assert!(name.to_str().is_some(), "non-UTF-8 name {name:?}");
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            rel.push(name);
            if ft.is_symlink() {
                assert!(
                    !escapes(root, rel),
                    "symlink {} -> {:?} resolves outside the tree",
                    p.display(),
                    fs::read_link(&p)
                );
            } else if ft.is_dir() {
                assert_eq!(m.mode() & 0o7777, 0o555, "dir {}", p.display());
                walk(root, rel);
            } else if ft.is_file() {
                let mode = m.mode() & 0o7777;
                assert!(
                    mode == 0o444 || mode == 0o555,
                    "file {} mode {mode:o}",
                    p.display()
                );
                assert_eq!(m.nlink(), 1, "file {} has other links", p.display());
            } else {
                panic!("{} is neither dir, file nor symlink", p.display());
            }
            rel.pop();
        }
    }
}

/// Resolves `start` (a path inside `root`, whose last component may be a symlink) with the
/// kernel's rules against the real files: true when some step leaves `root`.
fn escapes(root: &Path, start: &[OsString]) -> bool {
    let mut stack: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = start.iter().rev().cloned().collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            if stack.pop().is_none() {
                return true;
            }
            continue;
        }
        stack.push(c);
        let p: PathBuf = stack.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let Ok(m) = fs::symlink_metadata(&p) else {
            // Missing: the kernel stops here (ENOENT), nothing is reached.
            return false;
        };
        if m.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return false; // ELOOP
            }
            let target = fs::read_link(&p).unwrap();
            if target.is_absolute() {
                return true;
            }
            stack.pop();
            let parts: Vec<OsString> = target
                .to_str()
                .expect("UTF-8 target")
                .split('/')
                .map(OsString::from)
                .collect();
            pending.extend(parts.into_iter().rev());
        } else if !m.is_dir() && !pending.is_empty() {
            return false; // ENOTDIR
        }
    }
    false
}

pub fn make_writable(dir: &Path) {
    let Ok(m) = fs::symlink_metadata(dir) else {
        return;
    };
    if !m.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Reads a script: `[kind, mode, name_len, name.., link_len, link.., data_len, data..]*`.
struct Script<'a>(&'a [u8]);

struct Rec<'a> {
    kind: u8,
    mode: u8,
    name: &'a [u8],
    link: &'a [u8],
    data: &'a [u8],
}

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = (self.byte()? as usize).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
}

impl<'a> Iterator for Script<'a> {
    type Item = Rec<'a>;
    fn next(&mut self) -> Option<Rec<'a>> {
        Some(Rec {
            kind: self.byte()?,
            mode: self.byte()?,
            name: self.bytes()?,
            link: self.bytes().unwrap_or(&[]),
            data: self.bytes().unwrap_or(&[]),
        })
    }
}

fn unix_mode(m: u8) -> u32 {
    // Bits: 0 exec, 1 setuid, 2 setgid, 3 sticky, 4 group/other write.
    let mut mode = 0o644;
    if m & 1 != 0 {
        mode |= 0o111;
    }
    if m & 2 != 0 {
        mode |= 0o4000;
    }
    if m & 4 != 0 {
        mode |= 0o2000;
    }
    if m & 8 != 0 {
        mode |= 0o1000;
    }
    if m & 16 != 0 {
        mode |= 0o022;
    }
    mode
}

fn raw_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A well-formed tar from a script. Kinds (mod 12): file, dir, symlink, hardlink, char device,
/// fifo, PAX path + file, PAX linkpath + symlink, GNU long name + file, GNU long link + symlink,
/// block device, PAX global header.
pub fn build_tar(script: &[u8]) -> Vec<u8> {
    use tar::{EntryType as T, Header};
    let mut b = tar::Builder::new(Vec::new());
    for r in Script(script) {
        let mk = |kind: T, name: &[u8], link: &[u8], size: usize, mode: u32| {
            let mut h = if r.mode & 0x80 != 0 {
                Header::new_ustar()
            } else {
                Header::new_gnu()
            };
            h.set_entry_type(kind);
            h.set_size(size as u64);
            h.set_mode(mode);
            h.set_mtime(u64::from(r.mode) * 1_000_003);
            raw_field(&mut h.as_old_mut().name, name);
            raw_field(&mut h.as_old_mut().linkname, link);
            h.set_cksum();
            h
        };
        let mode = unix_mode(r.mode);
        let mut add = |h: &Header, data: &[u8]| b.append(h, data).unwrap();
        match r.kind % 12 {
            0 => add(&mk(T::Regular, r.name, b"", r.data.len(), mode), r.data),
            1 => add(&mk(T::Directory, r.name, b"", 0, mode), b""),
            2 => add(&mk(T::Symlink, r.name, r.link, 0, 0o777), b""),
            3 => add(&mk(T::Link, r.name, r.link, 0, mode), b""),
            4 => add(&mk(T::Char, r.name, b"", 0, mode), b""),
            5 => add(&mk(T::Fifo, r.name, b"", 0, mode), b""),
            6 => {
                let rec = pax_record("path", r.name);
                add(&mk(T::XHeader, b"pax", b"", rec.len(), 0o644), &rec);
                add(&mk(T::Regular, b"short", b"", r.data.len(), mode), r.data);
            }
            7 => {
                let rec = pax_record("linkpath", r.link);
                add(&mk(T::XHeader, b"pax", b"", rec.len(), 0o644), &rec);
                add(&mk(T::Symlink, r.name, b"short", 0, 0o777), b"");
            }
            8 => {
                let mut n = r.name.to_vec();
                n.push(0);
                add(
                    &mk(T::GNULongName, b"././@LongLink", b"", n.len(), 0o644),
                    &n,
                );
                add(&mk(T::Regular, b"short", b"", r.data.len(), mode), r.data);
            }
            9 => {
                let mut l = r.link.to_vec();
                l.push(0);
                add(
                    &mk(T::GNULongLink, b"././@LongLink", b"", l.len(), 0o644),
                    &l,
                );
                add(&mk(T::Symlink, r.name, b"short", 0, 0o777), b"");
            }
            10 => add(&mk(T::Block, r.name, b"", 0, mode), b""),
            _ => {
                let rec = pax_record("path", r.name);
                add(
                    &mk(T::XGlobalHeader, b"global", b"", rec.len(), 0o644),
                    &rec,
                );
            }
        }
    }
    b.into_inner().unwrap()
}

/// A well-formed zip from a script. Kinds (mod 6): file, directory, symlink, device, fifo, file
/// without unix mode (DOS). Entries the writer refuses (a duplicate name) are left out.
pub fn build_zip(script: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for r in Script(script) {
        let method = if r.mode & 0x40 != 0 {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let base = SimpleFileOptions::default()
            .compression_method(method)
            .system(zip::System::Unix);
        let perm = unix_mode(r.mode);
        let (opts, content): (SimpleFileOptions, &[u8]) = match r.kind % 6 {
            0 => (base.external_attributes((0o100000 | perm) << 16), r.data),
            1 => (base.external_attributes((0o040000 | perm) << 16), b""),
            2 => (base.external_attributes(0o120777 << 16), r.link),
            3 => (base.external_attributes((0o020000 | perm) << 16), b""),
            4 => (base.external_attributes((0o010000 | perm) << 16), b""),
            _ => (base.system(zip::System::Dos), r.data),
        };
        if z.start_file_with_options(opts.name(r.name)).is_err() {
            continue;
        }
        if z.write_all(content).is_err() {
            return Vec::new();
        }
    }
    match z.finish() {
        Ok(c) => c.into_inner(),
        Err(_) => Vec::new(),
    }
}
