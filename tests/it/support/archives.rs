//! Step archives: zip and tar.gz of a tree, and ones with one hostile entry.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use super::*;

/// Packs the contents of `dir` into the tar.gz `out` with the `tar` command.
pub(crate) fn tar_gz(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -czf {} failed: {st}", out.display());
}

/// A zip holding one executable `step.sh` with `body`.
pub(crate) fn zip_of_script(body: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file(
        "step.sh",
        zip::write::SimpleFileOptions::default().unix_permissions(0o755),
    )
    .unwrap();
    z.write_all(body).unwrap();
    z.finish().unwrap().into_inner()
}

/// The tree `src` as a zip with unix modes and symlinks (deflated).
pub(crate) fn zip_tree(src: &Path) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    for (rel, kind) in walk(src) {
        let name = rel.to_str().unwrap();
        let p = src.join(&rel);
        match kind {
            Kind::Dir => z
                .add_directory(format!("{name}/"), opts.unix_permissions(0o755))
                .unwrap(),
            Kind::File => {
                z.start_file(name, opts.unix_permissions(mode_of(&p)))
                    .unwrap();
                z.write_all(&fs::read(&p).unwrap()).unwrap();
            }
            Kind::Symlink => {
                let t = fs::read_link(&p).unwrap();
                z.add_symlink(name, t.to_str().unwrap(), opts).unwrap();
            }
        }
    }
    z.finish().unwrap().into_inner()
}

/// The tree `src` as a tar.gz (`tar` + `flate2`), symlinks kept as symlinks.
pub(crate) fn targz_tree(src: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.follow_symlinks(false);
    for (rel, _) in walk(src) {
        b.append_path_with_name(src.join(&rel), &rel).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A zip of a small valid step plus one entry named `evil` (written as given, e.g. `../../x`).
pub(crate) fn zip_with_entry(evil: &str, marker: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default().system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    z.start_file("step.sh", opts.unix_permissions(0o755))
        .unwrap();
    z.write_all(b"#!/bin/sh\necho ok\n").unwrap();
    z.start_file(evil, opts.unix_permissions(0o644)).unwrap();
    z.write_all(marker).unwrap();
    z.finish().unwrap().into_inner()
}

/// A tar.gz of a small valid step plus one file entry whose raw header name is `evil` (the
/// `tar` crate's `set_path` refuses `..`, so the name is written into the header directly).
pub(crate) fn targz_with_entry(evil: &str, marker: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &[u8], data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        let f = &mut h.as_old_mut().name;
        assert!(name.len() < f.len());
        f.fill(0);
        f[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(b"step.sh", b"#!/bin/sh\necho ok\n", 0o755);
    add(evil.as_bytes(), marker, 0o644);
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// The sha256 of `data` in lowercase hex (as StepLibs and `--sha256` give it).
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
