//! The StepLib checkout reader of `setup` (a git clone or a local StepLib), on trees built from
//! a script: it never panics or blocks, and nothing outside the checkout ever reaches the
//! collection object, whatever symlinks, FIFOs and files the tree holds.
//!
//! The input is lines of `<kind><path> <rest>`: kind `d` a directory, `f` a file holding
//! `<rest>`, `l` a symlink to `<rest>`, `p` a FIFO. In a path, `%` stands for `steps/`; in a
//! symlink target, `@` stands for the absolute path of a directory beside the checkout whose
//! files (`secret.yml`, `info.yml`, `steplib.yml`, `g/1.0.0/step.yml`) hold a marker. Paths are
//! kept to plain relative components; targets are free (`..` included).

#![no_main]

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use libfuzzer_sys::fuzz_target;

const MARKER: &[u8] = b"FUZZ-SECRET-MARKER";

fn plain(path: &str) -> Option<String> {
    let path = path.replace('%', "steps/");
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let ok = !parts.is_empty()
        && parts.len() <= 6
        && parts.iter().all(|c| {
            *c != "." && *c != ".." && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    ok.then(|| parts.join("/"))
}

fn holds_marker(root: &Path) -> Option<String> {
    for e in fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if e.file_name().as_encoded_bytes().windows(MARKER.len()).any(|w| w == MARKER) {
            return Some(p.display().to_string());
        }
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(hit) = holds_marker(&p) {
                return Some(hit);
            }
        } else if ft.is_file()
            && fs::read(&p).is_ok_and(|b| b.windows(MARKER.len()).any(|w| w == MARKER))
        {
            return Some(p.display().to_string());
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("stepman-fuzz-")
        .tempdir_in(common::scratch())
        .expect("temp dir");
    let outside = tmp.path().join("outside");
    let m = String::from_utf8_lossy(MARKER);
    fs::create_dir_all(outside.join("g/1.0.0")).expect("outside");
    for (f, body) in [
        ("secret.yml", format!("title: {m}\n")),
        ("info.yml", format!("maintainer: {m}\n")),
        ("g/1.0.0/step.yml", format!("title: {m}\n")),
        (
            "steplib.yml",
            format!("format_version: 1\nsteplib_source: {m}\n"),
        ),
        (&format!("{m}.png"), String::new()),
    ] {
        fs::write(outside.join(f), body).expect("write");
    }
    let lib = tmp.path().join("a/b/lib");
    fs::create_dir_all(lib.join("steps")).expect("lib");
    fs::write(
        lib.join("steplib.yml"),
        "format_version: 1\nsteplib_source: x\nassets_download_base_uri: https://x.invalid/\n",
    )
    .expect("steplib.yml");
    for line in script.lines().take(48) {
        // The marker may only come from outside.
        if line.contains(&*m) {
            continue;
        }
        // The kind is the first character, whatever its width.
        let kind_len = line.chars().next().map_or(0, char::len_utf8);
        let (kind, rest) = line.split_at(kind_len);
        let (path, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(path) = plain(path) else { continue };
        let at = lib.join(&path);
        if let Some(parent) = at.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = match kind {
            "d" => fs::create_dir_all(&at),
            // Never written through what an earlier line made there (a FIFO would block the
            // open, a symlink lead anywhere): only a new path or a regular file.
            "f" if fs::symlink_metadata(&at).is_ok_and(|m| !m.is_file()) => Ok(()),
            "f" => fs::write(&at, arg.replace("\\n", "\n")),
            "l" => symlink(arg.replace('@', &outside.display().to_string()), &at),
            "p" => Command::new("mkfifo").arg(&at).status().map(|_| ()),
            _ => Ok(()),
        };
    }
    let root = tmp.path().join("root");
    let _ = stepman::fuzzing::steplib_dir(&lib, &root, common::limits());
    if let Some(hit) = holds_marker(&root) {
        panic!("{hit} holds what lies outside the checkout");
    }
    common::make_writable(&root);
});
