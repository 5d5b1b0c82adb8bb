//! A step zip served over HTTP is ingested as it downloads (issue 14): no file of the archive,
//! the central directory checked against the entries seen, and every way the two can disagree
//! refused; an archive that cannot be read as a stream (stored entries with a data descriptor)
//! falls back to a file and still works.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::{self, Mode, Server, TestDir};

const ZIP_PATH: &str = "/archives/s/1.0.0/step.zip";

/// A StepLib on disk whose one step `s@1.0.0` downloads its zip from a loopback server.
struct Served {
    t: TestDir,
    home: PathBuf,
    lib: PathBuf,
    server: Server,
    /// The store's objects before the activation (the StepLib's, after `setup`).
    before: Vec<String>,
}

impl Served {
    fn new(zip: Vec<u8>) -> Served {
        Served::of_kind("zip", ZIP_PATH, zip)
    }

    /// A StepLib whose one download location has type `kind`, its archive served at `path`.
    fn of_kind(kind: &str, path: &str, archive: Vec<u8>) -> Served {
        let t = TestDir::new();
        let server = Server::start();
        let lib = t.path().join("lib");
        support::write_steplib_yml(&lib, &[(kind, &format!("{}/archives/", server.url()))]);
        support::write_step(&lib, "s", "1.0.0", &support::step_yml("S", None));
        server.serve(
            path,
            archive,
            Mode::Full {
                delay: Duration::ZERO,
            },
        );
        let home = t.path().join("home");
        support::run_ok(&mut support::stepman(
            &home,
            ["setup", "-c", lib.to_str().unwrap()],
        ));
        let before = support::object_ids(&home);
        Served {
            t,
            home,
            lib,
            server,
            before,
        }
    }

    fn dest(&self) -> PathBuf {
        self.t.path().join("dest")
    }

    fn activate(&self) -> Output {
        let dest = self.dest();
        let lib = self.lib.to_str().unwrap();
        support::output(
            support::stepman(&self.home, support::activate_args(lib, "s", "1.0.0", &dest))
                .env("STEPMAN_HTTP_ATTEMPTS", "1"),
        )
    }

    /// Activation must fail with one line saying `words`, leaving no object, nothing staged and
    /// no destination.
    fn refused(&self, words: &str) {
        let o = self.activate();
        let err = support::stderr_of(&o);
        assert!(!o.status.success(), "accepted: {err}");
        assert!(err.contains(words), "{words:?} not in: {err}");
        assert!(err.contains("step s@1.0.0"), "{err}");
        assert_eq!(
            support::object_ids(&self.home),
            self.before,
            "an object was kept"
        );
        assert!(!self.dest().exists(), "a destination was made");
        let tmp = self.home.join("store-v1/tmp");
        let left: Vec<_> = fs::read_dir(&tmp)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in tmp: {left:?}");
    }
}

/// A tree with an executable, a plain file, a nested dir and a relative symlink.
fn sample_tree(dir: &Path) {
    fs::create_dir_all(dir.join("lib/deep")).unwrap();
    fs::write(dir.join("step.sh"), "#!/bin/sh\necho streamed\n").unwrap();
    fs::set_permissions(dir.join("step.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let big: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    fs::write(dir.join("lib/deep/data.bin"), big).unwrap();
    fs::write(dir.join("lib/readme.txt"), "hello\n").unwrap();
    std::os::unix::fs::symlink("lib/readme.txt", dir.join("readme")).unwrap();
}

/// A two-file zip written by the `zip` crate to a stream (so every file entry has a data
/// descriptor), with `method`.
fn streamed_zip(method: zip::CompressionMethod) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(method)
        .system(zip::System::Unix);
    let mut out = Vec::new();
    {
        let mut z = zip::ZipWriter::new_stream(&mut out);
        z.start_file("step.sh", opts.unix_permissions(0o755))
            .unwrap();
        z.write_all(b"#!/bin/sh\necho descriptor\n").unwrap();
        z.start_file("data.txt", opts.unix_permissions(0o644))
            .unwrap();
        z.write_all(&b"some data ".repeat(500)).unwrap();
        z.finish().unwrap();
    }
    out
}

/// The parts of a zip without a comment: its local entries, its central-directory records and
/// its end record.
fn split_zip(zip: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let eocd = zip.len() - 22;
    assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06", "a zip with a comment");
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) as usize;
    let (count, start) = (u16_at(eocd + 10), u32_at(eocd + 16));
    let mut records = Vec::new();
    let mut at = start;
    for _ in 0..count {
        let len = 46 + u16_at(at + 28) + u16_at(at + 30) + u16_at(at + 32);
        records.push(zip[at..at + len].to_vec());
        at += len;
    }
    assert_eq!(at, eocd);
    (zip[..start].to_vec(), records, zip[eocd..].to_vec())
}

/// A zip from its parts, the end record's count, size and offset made to fit them.
fn join_zip(locals: &[u8], records: &[Vec<u8>], end: &[u8]) -> Vec<u8> {
    let mut out = locals.to_vec();
    let size: usize = records.iter().map(Vec::len).sum();
    for r in records {
        out.extend_from_slice(r);
    }
    let mut end = end.to_vec();
    let n = (records.len() as u16).to_le_bytes();
    end[8..10].copy_from_slice(&n);
    end[10..12].copy_from_slice(&n);
    end[12..16].copy_from_slice(&(size as u32).to_le_bytes());
    end[16..20].copy_from_slice(&(locals.len() as u32).to_le_bytes());
    out.extend_from_slice(&end);
    out
}

/// The name in a central-directory record.
fn record_name(r: &[u8]) -> &[u8] {
    let n = u16::from_le_bytes([r[28], r[29]]) as usize;
    &r[46..46 + n]
}

fn two_entry_zip() -> Vec<u8> {
    let t = TestDir::new();
    fs::write(t.path().join("step.sh"), "#!/bin/sh\necho ok\n").unwrap();
    fs::set_permissions(t.path().join("step.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(t.path().join("zz-hidden.sh"), "#!/bin/sh\necho hidden\n").unwrap();
    support::zip_tree(t.path())
}

/// Activates `s` under strace: it must work, make `src`'s tree, download once and create no
/// file of the archive.
fn streams_without_an_archive_file(test: &str, s: &Served, path: &str, src: &Path) {
    if !support::strace_usable(test) {
        return;
    }
    let log = s.t.path().join("strace.log");
    let dest = s.dest();
    let lib = s.lib.to_str().unwrap().to_string();
    let o = support::output(
        &mut support::Traced::new(&s.home, &log)
            .follow()
            .trace("openat,creat")
            .stepman(support::activate_args(&lib, "s", "1.0.0", &dest)),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    let trace = fs::read_to_string(&log).unwrap();
    let archive: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("O_CREAT") && l.contains("/archive\""))
        .collect();
    assert!(archive.is_empty(), "a file of the archive: {archive:?}");
    support::assert_same_tree(src, &dest);
    assert_eq!(s.server.count(path), 1);
    support::assert_fsck_clean(&s.home);
}

#[test]
fn an_http_zip_is_written_in_one_pass_without_a_file_of_the_archive() {
    let src = TestDir::new();
    sample_tree(src.path());
    let s = Served::new(support::zip_tree(src.path()));
    streams_without_an_archive_file(
        "an_http_zip_is_written_in_one_pass_without_a_file_of_the_archive",
        &s,
        ZIP_PATH,
        src.path(),
    );
}

#[test]
fn an_http_tar_gz_is_written_in_one_pass_without_a_file_of_the_archive() {
    let src = TestDir::new();
    sample_tree(src.path());
    let path = "/archives/s/1.0.0/step.tar.gz";
    let s = Served::of_kind("tar.gz", path, support::targz_tree(src.path()));
    streams_without_an_archive_file(
        "an_http_tar_gz_is_written_in_one_pass_without_a_file_of_the_archive",
        &s,
        path,
        src.path(),
    );
}

#[test]
fn modes_and_symlinks_come_from_the_central_directory() {
    let src = TestDir::new();
    sample_tree(src.path());
    let s = Served::new(support::zip_tree(src.path()));
    let o = s.activate();
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(src.path(), &s.dest());
    let obj: Vec<PathBuf> = support::object_dirs(&s.home)
        .into_iter()
        .filter(|d| d.join("step.sh").exists())
        .collect();
    assert_eq!(obj.len(), 1);
    let mode = |p: &str| {
        fs::symlink_metadata(obj[0].join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("step.sh"), 0o555);
    assert_eq!(mode("lib/readme.txt"), 0o444);
    assert_eq!(
        fs::read_link(obj[0].join("readme")).unwrap(),
        Path::new("lib/readme.txt")
    );
    support::assert_fsck_clean(&s.home);
}

#[test]
fn deflate_entries_with_a_data_descriptor_stream_in_one_download() {
    let s = Served::new(streamed_zip(zip::CompressionMethod::Deflated));
    let o = s.activate();
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(
        fs::read_to_string(s.dest().join("step.sh")).unwrap(),
        "#!/bin/sh\necho descriptor\n"
    );
    assert_eq!(
        fs::read(s.dest().join("data.txt")).unwrap(),
        b"some data ".repeat(500)
    );
    assert_eq!(s.server.count(ZIP_PATH), 1, "not streamed in one download");
}

#[test]
fn stored_entries_with_a_data_descriptor_fall_back_to_a_file_and_still_work() {
    let s = Served::new(streamed_zip(zip::CompressionMethod::Stored));
    let o = support::output(
        support::stepman(
            &s.home,
            support::activate_args(s.lib.to_str().unwrap(), "s", "1.0.0", &s.dest()),
        )
        .env("RUST_LOG", "info")
        .env("STEPMAN_HTTP_ATTEMPTS", "1"),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    assert_eq!(
        fs::read_to_string(s.dest().join("step.sh")).unwrap(),
        "#!/bin/sh\necho descriptor\n"
    );
    assert_eq!(
        fs::metadata(s.dest().join("step.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111
    );
    // Once as a stream (given up at the first stored entry), once into a file.
    assert_eq!(s.server.count(ZIP_PATH), 2);
    support::assert_fsck_clean(&s.home);
}

#[test]
fn an_entry_the_central_directory_does_not_list_is_refused() {
    let (locals, mut records, end) = split_zip(&two_entry_zip());
    records.retain(|r| record_name(r) != b"zz-hidden.sh");
    assert_eq!(records.len(), 1);
    let s = Served::new(join_zip(&locals, &records, &end));
    s.refused("entry \"zz-hidden.sh\" is not in the central directory");
}

#[test]
fn a_central_directory_that_names_another_entry_is_refused() {
    let (locals, mut records, end) = split_zip(&two_entry_zip());
    for r in &mut records {
        if record_name(r) == b"zz-hidden.sh" {
            r[46..46 + 12].copy_from_slice(b"zz-hidden.so");
        }
    }
    let s = Served::new(join_zip(&locals, &records, &end));
    s.refused("the central directory's record of \"zz-hidden.so\"");
}

#[test]
fn central_directory_records_in_another_order_are_refused() {
    let (locals, mut records, end) = split_zip(&two_entry_zip());
    records.reverse();
    let s = Served::new(join_zip(&locals, &records, &end));
    s.refused("does not match the entry in the archive");
}

#[test]
fn trailing_data_after_the_end_record_is_refused() {
    let mut zip = two_entry_zip();
    zip.extend_from_slice(b"trailing junk");
    let s = Served::new(zip);
    s.refused("trailing data after the end of the central directory");
}

#[test]
fn a_body_cut_short_is_refused_and_nothing_is_kept() {
    let src = TestDir::new();
    sample_tree(src.path());
    let zip = support::zip_tree(src.path());
    let s = Served::new(Vec::new());
    let cut = zip.len() / 2;
    s.server
        .script(ZIP_PATH, vec![support::Answer::truncated(&zip, cut)]);
    s.refused(ZIP_PATH);
    // A body that ends cleanly (no Content-Length to betray it) in the middle of an entry.
    let s = Served::new(zip[..cut].to_vec());
    s.refused("truncated");
}

/// The line of a strace log where the staged tree is published (renamed into `objects/`).
fn publish_line(lines: &[&str], trace: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains("renameat2(") && l.contains("/tree\"") && l.contains("/objects/"))
        .unwrap_or_else(|| panic!("no publish in:\n{trace}"))
}

/// A durable streamed zip: every file is flushed after the last change of its mode (a pending
/// file is written as 0444 and flushed at once; one the central directory makes executable is
/// chmodded then, and must be flushed again), and every flush returns before the tree is
/// published.
#[test]
fn each_file_is_flushed_after_its_last_mode_change_and_before_the_publish() {
    let test = "each_file_is_flushed_after_its_last_mode_change_and_before_the_publish";
    if !support::strace_usable(test) {
        return;
    }
    let src = TestDir::new();
    sample_tree(src.path());
    let s = Served::new(support::zip_tree(src.path()));
    let log = s.t.path().join("strace.log");
    let lib = s.lib.to_str().unwrap().to_string();
    let o = support::output(
        &mut support::Traced::new(&s.home, &log)
            .follow()
            .opt(&["-y"])
            .env_remove("STEPMAN_NO_FSYNC")
            .trace("fsync,fchmod,chmod,fchmodat,renameat2")
            .stepman(support::activate_args(&lib, "s", "1.0.0", &s.dest())),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(src.path(), &s.dest());
    let trace = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    // The publish: the staged tree renamed into objects/.
    let publish = publish_line(&lines, &trace);
    for file in ["step.sh", "lib/deep/data.bin", "lib/readme.txt"] {
        let staged = format!("/tree/{file}");
        let names =
            |l: &str| l.contains(&format!("{staged}>")) || l.contains(&format!("{staged}\""));
        let last_chmod = lines
            .iter()
            .rposition(|l| l.contains("chmod") && names(l))
            .unwrap_or_else(|| panic!("{file}: no chmod in:\n{trace}"));
        // An fsync of it begun after that chmod and before the publish (that it has returned
        // by then is checked below, for every fsync).
        let flushed = lines[last_chmod..publish]
            .iter()
            .any(|l| l.contains("fsync(") && names(l));
        assert!(
            flushed,
            "{file}: not flushed after its last chmod (line {last_chmod}) and before the \
             publish (line {publish}):\n{trace}"
        );
    }
    // Nothing of the staged tree is still being flushed when it is published: every fsync
    // begun before the publish has returned before it.
    let begun = lines[..publish]
        .iter()
        .filter(|l| l.contains("fsync(") && l.contains("<unfinished"))
        .count();
    let resumed = lines[..publish]
        .iter()
        .filter(|l| l.contains("<... fsync resumed>"))
        .count();
    assert_eq!(
        begun, resumed,
        "an fsync still running at the publish:\n{trace}"
    );
    support::assert_fsck_clean(&s.home);
}

/// A durable cold activation copies the step into the destination while its tree is still
/// being flushed: every file of the destination's copy is created before the object is
/// published, none is read out of the published object afterwards, and the copy is renamed into
/// place only after the publish. What lands is the source's tree, nothing is left beside it, and
/// the store is clean.
#[test]
fn a_durable_cold_activation_copies_the_tree_while_it_is_flushed() {
    let test = "a_durable_cold_activation_copies_the_tree_while_it_is_flushed";
    if !support::strace_usable(test) {
        return;
    }
    let src = TestDir::new();
    sample_tree(src.path());
    let s = Served::new(support::zip_tree(src.path()));
    let log = s.t.path().join("strace.log");
    let lib = s.lib.to_str().unwrap().to_string();
    let dest = s.dest();
    let o = support::output(
        &mut support::Traced::new(&s.home, &log)
            .follow()
            .opt(&["-y"])
            .env_remove("STEPMAN_NO_FSYNC")
            .trace("openat,renameat2,rename")
            .stepman(support::activate_args(&lib, "s", "1.0.0", &dest)),
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(src.path(), &dest);
    let trace = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let publish = publish_line(&lines, &trace);
    let base = dest.file_name().unwrap().to_str().unwrap();
    let staging = format!("/.{base}.stepman-");
    let placed = lines
        .iter()
        .position(|l| l.contains("rename(") && l.contains(&staging) && l.contains("/tree\""))
        .unwrap_or_else(|| panic!("no rename of the destination's copy in:\n{trace}"));
    assert!(
        placed > publish,
        "the copy was put in place before the publish:\n{trace}"
    );
    // `path` in `tree` (under `within`) as an openat names it: whole, or relative to its
    // directory's descriptor (shown by `-y`).
    let opens = |l: &str, within: &str, tree: &str, path: &str| {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let dir = if dir.is_empty() {
            tree.to_string()
        } else {
            format!("{tree}/{dir}")
        };
        l.contains("openat(")
            && l.contains(within)
            && (l.contains(&format!("{tree}/{path}\""))
                || l.contains(&format!("{dir}>, \"{name}\"")))
    };
    for file in ["step.sh", "lib/deep/data.bin", "lib/readme.txt"] {
        let created = lines
            .iter()
            .position(|l| l.contains("O_CREAT") && opens(l, &staging, "/tree", file));
        let created = created.unwrap_or_else(|| panic!("{file}: not created in:\n{trace}"));
        assert!(
            created < publish,
            "{file}: copied after the publish (line {created}, publish at {publish}):\n{trace}"
        );
        let read_from_object = lines[publish..].iter().any(|l| {
            let object = l
                .split("/objects/")
                .nth(1)
                .and_then(|rest| rest.split('/').nth(1))
                .map(|id| format!("/{id}"));
            object.is_some_and(|id| opens(l, "/objects/", &id, file))
        });
        assert!(
            !read_from_object,
            "{file}: copied out of the object again:\n{trace}"
        );
    }
    let left = support::staging_entries(dest.parent().unwrap());
    assert!(
        left.is_empty(),
        "staging left beside the destination: {left:?}"
    );
    support::assert_fsck_clean(&s.home);
}

/// A durable cold activation into a directory that another tool filled fails as an activation
/// into it always did, naming it, with nothing written beside it and the step in the store.
#[test]
fn a_durable_cold_activation_into_a_foreign_directory_fails_and_keeps_the_download() {
    let src = TestDir::new();
    sample_tree(src.path());
    let s = Served::new(support::zip_tree(src.path()));
    let lib = s.lib.to_str().unwrap().to_string();
    let dest = s.dest();
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("mine.txt"), "not a step").unwrap();
    let o = support::output(
        support::stepman(&s.home, support::activate_args(&lib, "s", "1.0.0", &dest))
            .env_remove("STEPMAN_NO_FSYNC"),
    );
    assert!(!o.status.success(), "{}", support::describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(dest.to_str().unwrap()), "{err}");
    assert_eq!(
        fs::read_to_string(dest.join("mine.txt")).unwrap(),
        "not a step"
    );
    let cached = support::run_ok(&mut support::stepman(&s.home, ["list-cached", "-c", &lib]));
    assert_eq!(cached.trim(), "s@1.0.0", "{cached}");
    let left = support::staging_entries(dest.parent().unwrap());
    assert!(
        left.is_empty(),
        "staging left beside the destination: {left:?}"
    );
    support::assert_fsck_clean(&s.home);
}
