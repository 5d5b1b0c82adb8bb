//! Ingest: streams a tree from a directory, a tar, a tar.gz or a zip into a temp dir of the store,
//! vetting every entry and hashing while writing.
//!
//! Invariants:
//! - Nothing is written outside the given temp root: every path is split into plain components
//!   (`..`, absolute paths, backslashes, NUL and non-UTF-8 names are refused) and every parent of
//!   an entry must be a directory this writer created itself, so no entry is written through a
//!   symlink. Files are created with `O_EXCL`, so nothing pre-existing is followed or overwritten.
//! - Only directories, regular files and symlinks whose target resolves inside the tree are
//!   accepted; hardlinks, devices, fifos and sparse entries are refused; set-id and sticky bits are
//!   dropped (only "executable or not" survives).
//! - Duplicate entries are refused (a directory may be named twice).
//! - Resource limits ([`Limits`]) bound total size, entry count, file size, path length and depth,
//!   and the compression ratio.
//! - The finished tree is read-only (files 0444/0555, directories 0555 except the root, which the
//!   caller makes 0555 after publishing) and, when durability is on, flushed to disk.

mod dir;
pub(crate) mod flush;
mod tar;
mod zip;
mod zip_stream;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, LimitKind, Result};
use crate::hash::{self, Kind, ObjectId};
use crate::sys;

pub(crate) use self::dir::ingest_dir;
pub(crate) use self::tar::{Compression, ingest_tar};
pub(crate) use self::zip::ingest_zip;
pub(crate) use self::zip_stream::Streamed;

/// What runs once a tree is written, hashed and its modes set, while its flushes are still in
/// flight ([`TreeWriter::while_flushing`]), given the tree's root and id: work that reads the
/// tree (an activation's copy of it) and would otherwise wait for the flush and the publish.
/// It must not change the tree. Only a durable ingest runs it: without flushes there is nothing
/// to overlap, and the work is done after the publish as before.
pub(crate) type WhileFlushing = std::sync::Arc<dyn Fn(&Path, &ObjectId) + Send + Sync>;

/// Resource limits for one ingest. All are checked while streaming, before the data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sum of all file sizes, in bytes.
    pub max_total_bytes: u64,
    /// Size of one file, in bytes.
    pub max_file_bytes: u64,
    /// Number of entries (files, directories, symlinks).
    pub max_entries: u64,
    /// Length of one entry's path, in bytes.
    pub max_path_bytes: usize,
    /// Depth of one entry's path, in components.
    pub max_depth: usize,
    /// Uncompressed bytes per compressed byte, enforced once more than `ratio_floor_bytes` came out.
    pub max_ratio: u64,
    /// Below this many uncompressed bytes the ratio is not enforced.
    pub ratio_floor_bytes: u64,
    /// Bytes of metadata one tar entry may have: its header blocks plus any PAX extension and
    /// GNU long-name/long-link records before it (these are held in memory while parsed).
    pub max_header_bytes: u64,
    /// Bytes of an archive's index, which is held in memory while the tree is built: the sum of
    /// all entries' paths (any source), and a zip's central directory as read from the file.
    pub max_index_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_total_bytes: 2 << 30,
            max_file_bytes: 1 << 30,
            max_entries: 100_000,
            max_path_bytes: 4096,
            max_depth: 128,
            max_ratio: 200,
            ratio_floor_bytes: 64 << 20,
            max_header_bytes: 1 << 20,
            max_index_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// The defaults, overridden by `STEPMAN_MAX_TOTAL_BYTES`, `STEPMAN_MAX_FILE_BYTES`,
    /// `STEPMAN_MAX_ENTRIES`, `STEPMAN_MAX_RATIO`, `STEPMAN_MAX_HEADER_BYTES` and
    /// `STEPMAN_MAX_INDEX_BYTES` (sizes take a
    /// `K`, `M` or `G` suffix, powers of 1024). An unreadable value is an
    /// [`Error::BadSetting`] naming the variable; an empty one counts as unset.
    pub fn from_env() -> Result<Limits> {
        Limits::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`Limits::from_env`] over any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        fn parse(key: &'static str, v: &str) -> Result<u64> {
            let t = v.trim();
            let (num, mul) = match t.char_indices().last() {
                Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
                Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
                Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
                _ => (t, 1),
            };
            num.trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mul))
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::BadSetting {
                    var: key,
                    value: v.to_string(),
                    expected: "a positive number (K, M, G allowed)",
                })
        }
        let mut l = Limits::default();
        let fields: [(&'static str, &mut u64); 6] = [
            ("STEPMAN_MAX_TOTAL_BYTES", &mut l.max_total_bytes),
            ("STEPMAN_MAX_FILE_BYTES", &mut l.max_file_bytes),
            ("STEPMAN_MAX_ENTRIES", &mut l.max_entries),
            ("STEPMAN_MAX_RATIO", &mut l.max_ratio),
            ("STEPMAN_MAX_HEADER_BYTES", &mut l.max_header_bytes),
            ("STEPMAN_MAX_INDEX_BYTES", &mut l.max_index_bytes),
        ];
        for (key, field) in fields {
            if let Some(v) = get(key) {
                *field = parse(key, &v)?;
            }
        }
        Ok(l)
    }
}

/// Whether the finished tree is flushed to stable storage before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every file and directory before publishing, and the parent after (default).
    Sync,
    /// Skip the flushes (for throwaway stores, e.g. on tmpfs or in an ephemeral VM).
    NoSync,
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { exec: bool, digest: [u8; 32] },
    Symlink { target: String },
}

/// Splits an entry path into validated components; `Ok(vec![])` is the root itself.
pub(crate) fn split_path<'a>(src: &str, raw: &'a str, limits: &Limits) -> Result<Vec<&'a str>> {
    let reject = |reason: &str| Error::Rejected {
        source_name: src.to_string(),
        entry: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.len() > limits.max_path_bytes {
        return Err(reject("path too long"));
    }
    if raw.starts_with('/') {
        return Err(reject("absolute path"));
    }
    if raw.contains('\0') {
        return Err(reject("NUL in path"));
    }
    if raw.contains('\\') {
        return Err(reject("backslash in path"));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(reject("path contains '..'")),
            c if c.len() > 255 => return Err(reject("path component longer than 255 bytes")),
            c => parts.push(c),
        }
    }
    if parts.len() > limits.max_depth {
        return Err(reject("path too deep"));
    }
    Ok(parts)
}

/// Writes one tree into `root` (which must not exist yet), hashing as it goes.
pub(crate) struct TreeWriter {
    root: PathBuf,
    source: String,
    limits: Limits,
    nodes: HashMap<String, Node>,
    /// Sum of the lengths of `nodes`' keys.
    index_bytes: u64,
    total_bytes: u64,
    buf: Vec<u8>,
    /// Durable ingests flush each finished file in the background (see `flush.rs`).
    flusher: Option<flush::Flusher>,
    /// Files written by [`TreeWriter::add_pending_file`] and not settled yet.
    pending: HashSet<String>,
    /// Run by [`TreeWriter::finish`] before it waits for the flushes.
    while_flushing: Option<WhileFlushing>,
}

impl TreeWriter {
    pub(crate) fn new(
        root: &Path,
        source: &str,
        limits: Limits,
        durability: Durability,
    ) -> Result<TreeWriter> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(root)
            .map_err(Error::io("create dir", root))?;
        let flusher = match durability {
            Durability::Sync => Some(flush::Flusher::new(root)?),
            Durability::NoSync => None,
        };
        Ok(TreeWriter {
            root: root.to_path_buf(),
            source: source.to_string(),
            limits,
            nodes: HashMap::new(),
            index_bytes: 0,
            total_bytes: 0,
            buf: vec![0u8; 256 * 1024],
            flusher,
            pending: HashSet::new(),
            while_flushing: None,
        })
    }

    /// Has [`TreeWriter::finish`] run `hook` with the finished tree before it waits for the
    /// tree's flushes (a tree that fails before it is finished, or that is not flushed, never
    /// runs it).
    pub(crate) fn while_flushing(&mut self, hook: Option<WhileFlushing>) {
        self.while_flushing = hook;
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The error for a malformed archive of this writer's source, from its reason.
    pub(crate) fn bad_archive(&self) -> impl Fn(String) -> Error + use<> {
        let source_name = self.source.clone();
        move |reason| Error::BadArchive {
            source_name: source_name.clone(),
            reason,
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn reject(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::Rejected {
            source_name: self.source.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn limit(&self, entry: &str, what: LimitKind, limit: u64) -> Error {
        Error::LimitExceeded {
            source_name: self.source.clone(),
            entry: entry.to_string(),
            what,
            limit,
        }
    }

    /// Ensures every parent of `parts` is a directory we made; creates missing ones.
    fn prepare_parents(&mut self, raw: &str, parts: &[&str]) -> Result<()> {
        let mut key = String::new();
        for (i, part) in parts[..parts.len().saturating_sub(1)].iter().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(part);
            match self.nodes.get(&key) {
                Some(Node::Dir) => {}
                Some(Node::Symlink { .. }) => {
                    return Err(self.reject(raw, "entry written through a symlink"));
                }
                Some(Node::File { .. }) => {
                    return Err(self.reject(raw, "a parent of this entry is a file"));
                }
                None => self.make_dir(raw, key.clone())?,
            }
        }
        Ok(())
    }

    /// Counts a new entry whose path (the node's key) is `key_len` bytes.
    fn count_entry(&mut self, raw: &str, key_len: usize) -> Result<()> {
        if self.nodes.len() as u64 >= self.limits.max_entries {
            return Err(self.limit(raw, LimitKind::Entries, self.limits.max_entries));
        }
        self.index_bytes = self.index_bytes.saturating_add(key_len as u64);
        if self.index_bytes > self.limits.max_index_bytes {
            return Err(self.limit(raw, LimitKind::IndexBytes, self.limits.max_index_bytes));
        }
        Ok(())
    }

    fn make_dir(&mut self, raw: &str, key: String) -> Result<()> {
        self.count_entry(raw, key.len())?;
        let path = self.root.join(&key);
        self.new_dir(key, &path)
    }

    /// Creates the directory `path` of the tree's entry `key` and records it.
    fn new_dir(&mut self, key: String, path: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(Error::io("create dir", path))?;
        self.nodes.insert(key, Node::Dir);
        Ok(())
    }

    fn claim(&mut self, raw: &str, parts: &[&str]) -> Result<Option<String>> {
        if parts.is_empty() {
            return Err(self.reject(raw, "entry names the tree's root"));
        }
        self.prepare_parents(raw, parts)?;
        let key = parts.join("/");
        if self.nodes.contains_key(&key) {
            return Err(self.reject(raw, "duplicate entry"));
        }
        self.count_entry(raw, key.len())?;
        Ok(Some(key))
    }

    /// A directory entry.
    pub(crate) fn add_dir(&mut self, raw: &str) -> Result<()> {
        let parts = split_path(&self.source, raw, &self.limits)?;
        if parts.is_empty() {
            return Ok(());
        }
        let key = parts.join("/");
        match self.nodes.get(&key) {
            Some(Node::Dir) => return Ok(()),
            Some(_) => return Err(self.reject(raw, "duplicate entry")),
            None => {}
        }
        self.prepare_parents(raw, &parts)?;
        self.make_dir(raw, key)
    }

    /// A regular file entry; `declared` is the size the source announced, if any.
    pub(crate) fn add_file(
        &mut self,
        raw: &str,
        exec: bool,
        declared: Option<u64>,
        data: impl Read,
    ) -> Result<()> {
        let (key, path, file, digest) = self.write_file(raw, declared, data)?;
        sys::set_mode_fd(&file, if exec { 0o555 } else { 0o444 })
            .map_err(Error::io("chmod", &path))?;
        if let Some(f) = &self.flusher {
            f.submit(Some(file), path)?;
        }
        self.nodes.insert(key, Node::File { exec, digest });
        Ok(())
    }

    /// A regular, non-executable file entry with the content of `from`, a file of an object
    /// already published in this store (which is never written again): a hard link to it when
    /// the file system allows one, so that nothing is copied; else a copy. The link is hashed
    /// through the tree's own name after it is made, so the digest is of what the tree holds;
    /// one that is not a regular file of mode 0444 (the object was tampered with) is replaced by
    /// a copy of its bytes as read. When durable it is flushed like a written file (its link
    /// count changed).
    pub(crate) fn add_linked_file(&mut self, raw: &str, from: &Path) -> Result<()> {
        let parts = split_path(&self.source, raw, &self.limits)?;
        let Some(key) = self.claim(raw, &parts)? else {
            return Err(self.reject(raw, "entry names the tree's root"));
        };
        let path = self.root.join(&key);
        // The link, read back when it is a read-only regular file (else removed, and copied).
        let reread = match fs::hard_link(from, &path) {
            Ok(()) => {
                let file =
                    sys::open_read_nofollow_nonblock(&path).map_err(Error::io("open", &path))?;
                let meta = file.metadata().map_err(Error::io("stat", &path))?;
                if meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
                        == 0o444
                {
                    Some(file)
                } else {
                    drop(file);
                    fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                    None
                }
            }
            // No link here (another file system, too many links, a store whose files this user
            // does not own under `fs.protected_hardlinks`, no hard links at all): copy.
            Err(e) => {
                log::debug!("{}: copying {}: {e}", self.source, from.display());
                None
            }
        };
        let (file, digest) = match reread {
            Some(file) => {
                let digest =
                    self.hash_through(raw, &path, &file, None, Error::io("read", &path))?;
                (file, digest)
            }
            None => {
                let src =
                    sys::open_read_nofollow_nonblock(from).map_err(Error::io("open", from))?;
                let (file, digest) = self.write_claimed(raw, &path, src)?;
                sys::set_mode_fd(&file, 0o444).map_err(Error::io("chmod", &path))?;
                (file, digest)
            }
        };
        if let Some(f) = &self.flusher {
            f.submit(Some(file), path)?;
        }
        self.nodes.insert(
            key,
            Node::File {
                exec: false,
                digest,
            },
        );
        Ok(())
    }

    /// A file entry whose kind and mode are not known yet (a zip read as a stream: they are in
    /// its central directory, at the end): written as a regular file of the likeliest mode,
    /// 0444, and flushed at once like any finished file, so that a durable ingest's fsyncs
    /// overlap the download instead of following it. [`TreeWriter::settle_file`],
    /// [`TreeWriter::settle_symlink`] or [`TreeWriter::settle_dir`] settle it later: only an
    /// entry the central directory makes something else (an executable, a symlink, a directory)
    /// is changed then, and an executable is flushed again after its chmod.
    /// [`TreeWriter::finish`] refuses a tree with an entry left unsettled.
    pub(crate) fn add_pending_file(
        &mut self,
        raw: &str,
        declared: Option<u64>,
        data: impl Read,
    ) -> Result<()> {
        let (key, path, file, digest) = self.write_file(raw, declared, data)?;
        sys::set_mode_fd(&file, 0o444).map_err(Error::io("chmod", &path))?;
        if let Some(f) = &self.flusher {
            f.submit(Some(file), path)?;
        }
        self.nodes.insert(
            key.clone(),
            Node::File {
                exec: false,
                digest,
            },
        );
        self.pending.insert(key);
        Ok(())
    }

    /// The pending entry `raw` of [`TreeWriter::add_pending_file`]: its key and path.
    fn take_pending(&mut self, raw: &str) -> Result<(String, PathBuf)> {
        let key = split_path(&self.source, raw, &self.limits)?.join("/");
        if !self.pending.remove(&key) {
            return Err(self.reject(raw, "settled twice, or never written"));
        }
        let path = self.root.join(&key);
        Ok((key, path))
    }

    /// Settles a pending entry as a regular file, executable or not.
    pub(crate) fn settle_file(&mut self, raw: &str, exec: bool) -> Result<()> {
        let (key, path) = self.take_pending(raw)?;
        if !exec {
            // Written with this mode and already flushed (or queued).
            return Ok(());
        }
        sys::set_mode(&path, 0o555).map_err(Error::io("chmod", &path))?;
        // The new mode must be as durable as the data: flushed again.
        if let Some(f) = &self.flusher {
            f.submit(None, path)?;
        }
        if let Some(Node::File { exec: e, .. }) = self.nodes.get_mut(&key) {
            *e = true;
        }
        Ok(())
    }

    /// Settles a pending entry as a symlink: the file's bytes are its target.
    pub(crate) fn settle_symlink(&mut self, raw: &str) -> Result<()> {
        let (key, path) = self.take_pending(raw)?;
        let mut target = Vec::new();
        File::open(&path)
            .and_then(|f| {
                f.take(self.limits.max_path_bytes as u64 + 1)
                    .read_to_end(&mut target)
            })
            .map_err(Error::io("read", &path))?;
        if target.len() > self.limits.max_path_bytes {
            return Err(self.reject(raw, "symlink target too long"));
        }
        let target =
            String::from_utf8(target).map_err(|_| self.reject(raw, "invalid symlink target"))?;
        self.vet_symlink_target(raw, &target)?;
        fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        std::os::unix::fs::symlink(&target, &path).map_err(Error::io("symlink", &path))?;
        self.nodes.insert(key, Node::Symlink { target });
        Ok(())
    }

    /// Settles a pending entry as a directory (its bytes, if any, are dropped, as the
    /// central-directory path drops a directory entry's data).
    pub(crate) fn settle_dir(&mut self, raw: &str) -> Result<()> {
        let (key, path) = self.take_pending(raw)?;
        fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        self.new_dir(key, &path)
    }

    /// Writes a new file at `raw` from `data`, hashing it: its key, path, open file and digest.
    fn write_file(
        &mut self,
        raw: &str,
        declared: Option<u64>,
        data: impl Read,
    ) -> Result<(String, PathBuf, File, [u8; 32])> {
        let parts = split_path(&self.source, raw, &self.limits)?;
        if let Some(n) = declared {
            self.check_size(raw, n)?;
        }
        let Some(key) = self.claim(raw, &parts)? else {
            return Err(self.reject(raw, "entry names the tree's root"));
        };
        let path = self.root.join(&key);
        let (file, digest) = self.write_claimed(raw, &path, data)?;
        Ok((key, path, file, digest))
    }

    /// Creates the claimed entry `raw` at `path` and writes `data` to it, hashing it: the open
    /// file and its digest.
    fn write_claimed(
        &mut self,
        raw: &str,
        path: &Path,
        data: impl Read,
    ) -> Result<(File, [u8; 32])> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(Error::io("create", path))?;
        let source_name = self.source.clone();
        let digest =
            self.hash_through(raw, path, data, Some(&mut file), |e| Error::BadArchive {
                source_name: source_name.clone(),
                reason: format!("reading entry {raw:?}: {e}"),
            })?;
        Ok((file, digest))
    }

    /// Reads `data` (entry `raw`, at `path`) to its end, hashing it, checking the file and total
    /// size limits as it goes, and writing it to `out` when given; counts it in the tree's total.
    /// A read error is reported through `read_error`.
    fn hash_through(
        &mut self,
        raw: &str,
        path: &Path,
        mut data: impl Read,
        mut out: Option<&mut File>,
        read_error: impl FnOnce(io::Error) -> Error,
    ) -> Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        let mut size: u64 = 0;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            size += n as u64;
            self.check_size(raw, size)?;
            hasher.update(&self.buf[..n]);
            if let Some(f) = out.as_mut() {
                f.write_all(&self.buf[..n])
                    .map_err(Error::io("write", path))?;
            }
        }
        self.total_bytes += size;
        if self.total_bytes > self.limits.max_total_bytes {
            return Err(self.limit(raw, LimitKind::TotalBytes, self.limits.max_total_bytes));
        }
        Ok(*hasher.finalize().as_bytes())
    }

    fn check_size(&self, raw: &str, n: u64) -> Result<()> {
        if n > self.limits.max_file_bytes {
            return Err(self.limit(raw, LimitKind::FileBytes, self.limits.max_file_bytes));
        }
        if self.total_bytes.saturating_add(n) > self.limits.max_total_bytes {
            return Err(self.limit(raw, LimitKind::TotalBytes, self.limits.max_total_bytes));
        }
        Ok(())
    }

    /// A symlink entry. Its target is vetted when the tree is finished (it may point at entries
    /// that come later in the archive).
    pub(crate) fn add_symlink(&mut self, raw: &str, target: &str) -> Result<()> {
        let parts = split_path(&self.source, raw, &self.limits)?;
        self.vet_symlink_target(raw, target)?;
        let Some(key) = self.claim(raw, &parts)? else {
            return Ok(());
        };
        let path = self.root.join(&key);
        std::os::unix::fs::symlink(target, &path).map_err(Error::io("symlink", &path))?;
        self.nodes.insert(
            key,
            Node::Symlink {
                target: target.to_string(),
            },
        );
        Ok(())
    }

    /// The checks on a symlink's target that need no other entry.
    fn vet_symlink_target(&self, raw: &str, target: &str) -> Result<()> {
        if target.is_empty() {
            return Err(self.reject(raw, "empty symlink target"));
        }
        if target.starts_with('/') {
            return Err(self.reject(raw, "symlink target is absolute"));
        }
        if target.contains('\0') || target.len() > self.limits.max_path_bytes {
            return Err(self.reject(raw, "invalid symlink target"));
        }
        Ok(())
    }

    /// Resolves `target` of the symlink at `key` inside the tree; false when it escapes.
    fn symlink_stays_inside(&self, key: &str, target: &str) -> bool {
        resolve_inside(key, target, |p| match self.nodes.get(p) {
            Some(Node::Symlink { target }) => Some(target.clone()),
            _ => None,
        })
        .is_some()
    }

    /// Vets symlinks, computes the tree id, makes the tree read-only and flushes it.
    pub(crate) fn finish(mut self) -> Result<(ObjectId, PathBuf)> {
        if let Some(key) = self.pending.iter().next() {
            return Err(self.reject(key, "entry left unsettled (its kind was never decided)"));
        }
        for (key, node) in &self.nodes {
            if let Node::Symlink { target } = node
                && !self.symlink_stays_inside(key, target)
            {
                return Err(self.reject(
                    key,
                    format!("symlink target {target:?} points outside the tree"),
                ));
            }
        }
        // Children of every directory, keyed by the directory ("" is the root).
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut dirs: Vec<&str> = vec![""];
        for (key, node) in &self.nodes {
            let parent = key.rsplit_once('/').map_or("", |(p, _)| p);
            children.entry(parent).or_default().push(key);
            if matches!(node, Node::Dir) {
                dirs.push(key);
            }
        }
        // Deepest first, so every child's digest is known before its parent's.
        dirs.sort_by_key(|d| {
            std::cmp::Reverse(if d.is_empty() {
                0
            } else {
                d.matches('/').count() + 1
            })
        });
        let mut dir_digests: HashMap<&str, [u8; 32]> = HashMap::new();
        for d in &dirs {
            let mut entries: Vec<(String, Kind, [u8; 32])> = Vec::new();
            for child in children.get(d).map(Vec::as_slice).unwrap_or(&[]) {
                let name = child
                    .rsplit_once('/')
                    .map_or(*child, |(_, n)| n)
                    .to_string();
                let (kind, digest) = match &self.nodes[*child] {
                    Node::Dir => (Kind::Dir, dir_digests[child]),
                    Node::File { exec, digest } => {
                        (if *exec { Kind::Exec } else { Kind::File }, *digest)
                    }
                    Node::Symlink { target } => (Kind::Symlink, hash::symlink_digest(target)),
                };
                entries.push((name, kind, digest));
            }
            dir_digests.insert(d, hash::dir_digest(&mut entries));
        }
        let id = ObjectId::from_bytes(dir_digests[""]);

        // Files were queued for flushing as they were finished; directories follow, each made
        // read-only before it is flushed so that its mode is durable too.
        for d in &dirs {
            let p = if d.is_empty() {
                self.root.clone()
            } else {
                self.root.join(d)
            };
            if !d.is_empty() {
                sys::set_mode(&p, 0o555).map_err(Error::io("chmod", &p))?;
            }
            if let Some(f) = &self.flusher {
                f.submit(None, p)?;
            }
        }
        if let Some(hook) = self.while_flushing.take()
            && self.flusher.is_some()
        {
            hook(&self.root, &id);
        }
        if let Some(f) = self.flusher.take() {
            f.finish()?;
        }
        Ok((id, self.root))
    }
}

/// Resolves `target`, the target of the symlink at `key` (a `/`-separated path inside a tree),
/// following the symlinks it meets through `link_at` (the target of the symlink at a path of the
/// tree, `None` when that path is no symlink). The resolved path inside the tree ("" is the root),
/// or `None` when the target leaves the tree: absolute (itself or a symlink met on the way), `..`
/// past the root, or more than 40 hops. The one rule for imports and StepLib checkouts alike.
pub(crate) fn resolve_inside(
    key: &str,
    target: &str,
    mut link_at: impl FnMut(&str) -> Option<String>,
) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut stack: Vec<String> = key.split('/').map(str::to_string).collect();
    stack.pop();
    let mut pending: Vec<String> = target.split('/').rev().map(str::to_string).collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            _ => {
                stack.push(c);
                if let Some(t) = link_at(&stack.join("/")) {
                    hops += 1;
                    if hops > 40 || t.starts_with('/') {
                        return None;
                    }
                    stack.pop();
                    pending.extend(t.split('/').rev().map(str::to_string));
                }
            }
        }
    }
    Some(stack.join("/"))
}

/// What kind of source a path holds, by looking at it (never by its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    Dir,
    TarGz,
    Tar,
    Zip,
}

/// Sniffs the kind of `path`.
pub(crate) fn sniff(path: &Path) -> Result<SourceKind> {
    let meta = fs::metadata(path).map_err(Error::io("stat", path))?;
    if meta.is_dir() {
        return Ok(SourceKind::Dir);
    }
    let mut head = [0u8; 512];
    let mut f = File::open(path).map_err(Error::io("open", path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path)(e)),
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(SourceKind::TarGz)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(SourceKind::Zip)
    } else if n == 512 && &head[257..262] == b"ustar" {
        Ok(SourceKind::Tar)
    } else {
        Err(Error::BadArchive {
            source_name: path.display().to_string(),
            reason: "not a directory, tar, tar.gz or zip".into(),
        })
    }
}

/// Ingests `src` into a new tree at `root`.
pub(crate) fn ingest_path(
    src: &Path,
    root: &Path,
    limits: Limits,
    durability: Durability,
    hook: Option<WhileFlushing>,
) -> Result<(ObjectId, PathBuf)> {
    let name = src.display().to_string();
    let mut w = TreeWriter::new(root, &name, limits, durability)?;
    w.while_flushing(hook);
    match sniff(src)? {
        SourceKind::Dir => ingest_dir(src, w),
        SourceKind::TarGz => {
            let f = File::open(src).map_err(Error::io("open", src))?;
            ingest_tar(f, Compression::Gzip, w)
        }
        SourceKind::Tar => {
            let f = File::open(src).map_err(Error::io("open", src))?;
            ingest_tar(f, Compression::None, w)
        }
        SourceKind::Zip => {
            let f = File::open(src).map_err(Error::io("open", src))?;
            ingest_zip(f, w)
        }
    }
}

/// Ingests an archive read from `input` as it arrives (an HTTP body: no temp file of it), into
/// the tree of `w`: a zip (in one pass, `zip_stream.rs`), a tar.gz or a tar, by its first bytes
/// (never by a name). A zip that cannot be read as a stream is [`Streamed::Fallback`].
pub(crate) fn ingest_stream<R: BufRead>(mut input: R, w: TreeWriter) -> Result<Streamed> {
    let mut head = Vec::with_capacity(512);
    (&mut input)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| Error::BadArchive {
            source_name: w.source().to_string(),
            reason: format!("reading the archive: {e}"),
        })?;
    let tree = |(id, _): (ObjectId, PathBuf)| Streamed::Tree(id);
    let input = io::Cursor::new(head).chain(input);
    let head = input.get_ref().0.get_ref();
    if head.starts_with(&[0x1f, 0x8b]) {
        ingest_tar(input, Compression::Gzip, w).map(tree)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        zip_stream::ingest_zip_stream(input, w)
    } else if head.len() == 512 && &head[257..262] == b"ustar" {
        ingest_tar(input, Compression::None, w).map(tree)
    } else {
        Err(Error::BadArchive {
            source_name: w.source().to_string(),
            reason: "not a tar, tar.gz or zip".into(),
        })
    }
}
