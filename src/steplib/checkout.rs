//! Reading a StepLib checkout (a git clone, or a local StepLib directory) as a tree of its own.
//!
//! Invariants:
//! - A symlink is followed only while it stays inside the checkout, by the same rule as an import
//!   ([`crate::ingest::resolve_inside`]): an absolute target, or one that climbs past the root,
//!   is refused, whether it is the file itself, a directory on its way, or an entry of a
//!   directory being listed. What lies outside is never opened, listed or stat'ed through it.
//! - Only regular files are read. Anything else (a FIFO, a device, a socket) is refused from its
//!   `lstat`, and again from the `fstat` of a descriptor opened with `O_NOFOLLOW|O_NONBLOCK`, so
//!   neither a FIFO nor a swap after the check can make `open` or `read` block.
//! - Every read is bounded before it starts (the file's size) and while it runs (at most the
//!   bound plus one byte is ever read), so a file that grows, or lies about its size, cannot
//!   make a read grow memory past its bound.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ingest::resolve_inside;
use crate::sys;

/// Why a file or directory of a checkout was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// There is no such file.
    NotFound,
    /// A symlink on the way points outside the StepLib.
    Outside,
    /// Not a regular file (or, for a listing, not a directory).
    NotRegular,
    /// Past the bound, in bytes (`size` is a lower bound when the file grew while read).
    TooLarge {
        /// Bytes seen.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The file system refused.
    Io(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotFound => f.write_str("no such file"),
            Refusal::Outside => {
                f.write_str("a symlink points outside the StepLib (never followed)")
            }
            Refusal::NotRegular => f.write_str("not a regular file or directory (refused)"),
            Refusal::TooLarge { size, limit } => {
                write!(f, "{size} bytes, past the StepLib limit of {limit} bytes")
            }
            Refusal::Io(e) => f.write_str(e),
        }
    }
}

fn io(e: std::io::Error) -> Refusal {
    if sys::is_not_found(&e) {
        Refusal::NotFound
    } else {
        Refusal::Io(crate::error::io_words(&e))
    }
}

/// What [`read_regular`] does with a symlink at the path it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtLink {
    /// Follow it (a path the user gave).
    Follow,
    /// Refuse it (a path already resolved inside the tree).
    Refuse,
}

/// The bytes of the regular file at `p`, at most `limit` of them; a symlink at `p` is followed
/// or refused as `at_link` says.
pub(crate) fn read_regular(p: &Path, at_link: AtLink, limit: u64) -> Result<Vec<u8>, Refusal> {
    let meta = match at_link {
        AtLink::Follow => fs::metadata(p),
        AtLink::Refuse => fs::symlink_metadata(p),
    }
    .map_err(io)?;
    let check = |m: &fs::Metadata| {
        if !m.is_file() {
            Err(Refusal::NotRegular)
        } else if m.len() > limit {
            Err(Refusal::TooLarge {
                size: m.len(),
                limit,
            })
        } else {
            Ok(())
        }
    };
    check(&meta)?;
    let f = match at_link {
        AtLink::Follow => sys::open_read_nonblock(p),
        AtLink::Refuse => sys::open_read_nofollow_nonblock(p),
    }
    .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    check(&meta)?;
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(Refusal::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// What an entry of a listed directory is, once its symlink (if any) is resolved in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A directory (or an in-tree symlink to one).
    Dir,
    /// A regular file (or an in-tree symlink to one).
    File,
    /// A symlink out of the tree.
    Outside,
    /// Anything else, including a symlink to nothing.
    Other,
}

/// A StepLib to read: a directory (the user's local StepLib) or a commit of a kept git mirror,
/// read through git without a checkout.
pub(crate) enum Checkout {
    /// Rooted at a directory.
    Dir(PathBuf),
    /// A commit's tree.
    Git(Box<GitTree>),
}

impl Checkout {
    pub(crate) fn new(root: &Path) -> Checkout {
        Checkout::Dir(root.to_path_buf())
    }

    /// The path of `rel`, for messages.
    pub(crate) fn display(&self, rel: &str) -> String {
        match self {
            Checkout::Dir(root) => root.join(rel).display().to_string(),
            Checkout::Git(t) => format!("{rel} (commit {})", t.commit),
        }
    }

    /// The target of the symlink at `rel`; `None` when it is no symlink.
    fn link_at(&self, rel: &str) -> Option<String> {
        match self {
            Checkout::Dir(root) => {
                let p = root.join(rel);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => match fs::read_link(&p) {
                        Ok(t) => Some(t.to_string_lossy().into_owned()),
                        // Unreadable: resolve to "/", which is refused.
                        Err(_) => Some("/".into()),
                    },
                    _ => None,
                }
            }
            Checkout::Git(t) => t.link_at(rel),
        }
    }

    /// `rel` with every symlink on its way resolved inside the tree.
    fn resolve(&self, rel: &str) -> Result<String, Refusal> {
        resolve_inside("_", rel, |p| self.link_at(p)).ok_or(Refusal::Outside)
    }

    /// The bytes of the regular file `rel`, at most `limit` of them.
    pub(crate) fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, Refusal> {
        let r = self.resolve(rel)?;
        match self {
            Checkout::Dir(root) => read_regular(&root.join(r), AtLink::Refuse, limit),
            Checkout::Git(t) => t.read(&r, limit),
        }
    }

    /// The entries of directory `rel` (names that are not UTF-8 are left out), each with what
    /// it is once resolved in the tree.
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<(String, EntryKind)>, Refusal> {
        let r = self.resolve(rel)?;
        let kind_of_link = |at: &str| match self
            .link_at(at)
            .and_then(|t| resolve_inside(at, &t, |p| self.link_at(p)))
        {
            None => EntryKind::Outside,
            Some(p) => self.kind(&p),
        };
        let at = |name: &str| {
            if r.is_empty() {
                name.to_string()
            } else {
                format!("{r}/{name}")
            }
        };
        let root = match self {
            Checkout::Git(t) => {
                return t
                    .children(&r)?
                    .into_iter()
                    .map(|(name, mode)| {
                        let kind = match mode & 0o170000 {
                            0o040000 => EntryKind::Dir,
                            0o100000 => EntryKind::File,
                            0o120000 => kind_of_link(&at(&name)),
                            _ => EntryKind::Other,
                        };
                        Ok((name, kind))
                    })
                    .collect();
            }
            Checkout::Dir(root) => root,
        };
        let dir = root.join(&r);
        if !fs::symlink_metadata(&dir).map_err(io)?.is_dir() {
            return Err(Refusal::NotRegular);
        }
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io)? {
            let e = e.map_err(io)?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Ok(ft) = e.file_type() else { continue };
            let kind = if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else if ft.is_symlink() {
                kind_of_link(&at(&name))
            } else {
                EntryKind::Other
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// What the resolved path `p` is (a symlink's target).
    fn kind(&self, p: &str) -> EntryKind {
        match self {
            Checkout::Dir(root) => match fs::symlink_metadata(root.join(p)) {
                Ok(m) if m.is_dir() => EntryKind::Dir,
                Ok(m) if m.is_file() => EntryKind::File,
                _ => EntryKind::Other,
            },
            Checkout::Git(t) => match t.mode(p).map(|m| m & 0o170000) {
                Some(0o040000) => EntryKind::Dir,
                Some(0o100000) => EntryKind::File,
                _ => EntryKind::Other,
            },
        }
    }

    /// Why the commit could not be read, when a read failed because of the mirror (an object
    /// git could not give back): the mirror is damaged, and what was read is not the commit.
    pub(crate) fn damaged(&self) -> Option<String> {
        match self {
            Checkout::Dir(_) => None,
            Checkout::Git(t) => lock(&t.failed).clone(),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The most bytes a symlink's target in a git tree may have.
const MAX_LINK_BYTES: u64 = 4096;

/// A commit's tree in a kept mirror, listed once (`git ls-tree`) and read blob by blob from
/// one `git cat-file --batch` process: no file is written. Paths that are not UTF-8 are left
/// out, as a directory listing leaves them out.
pub(crate) struct GitTree {
    commit: String,
    /// Every path's mode, object id and (blobs) size.
    entries: std::collections::HashMap<String, (u32, String, Option<u64>)>,
    /// Each directory's entries ("" is the root), with their modes.
    dirs: std::collections::HashMap<String, Vec<(String, u32)>>,
    blobs: std::sync::Mutex<crate::fetch::BlobReader>,
    /// The first failure to read an object back.
    failed: std::sync::Mutex<Option<String>>,
}

impl GitTree {
    /// Lists `commit` of `mirror` and starts the reader; an error says the mirror cannot give
    /// the commit's tree.
    pub(crate) fn open(mirror: &Path, commit: &str) -> Result<GitTree, String> {
        let listed = crate::fetch::git_mirror_tree_sized(mirror, commit)?;
        let mut entries = std::collections::HashMap::with_capacity(listed.len());
        let mut dirs: std::collections::HashMap<String, Vec<(String, u32)>> =
            std::collections::HashMap::new();
        dirs.insert(String::new(), Vec::new());
        for e in listed {
            let Ok(path) = String::from_utf8(e.path) else {
                continue;
            };
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if e.mode & 0o170000 == 0o040000 {
                dirs.entry(path.clone()).or_default();
            }
            dirs.entry(parent).or_default().push((name, e.mode));
            entries.insert(path, (e.mode, e.oid, e.size));
        }
        Ok(GitTree {
            commit: commit.to_string(),
            entries,
            dirs,
            blobs: std::sync::Mutex::new(crate::fetch::BlobReader::open(mirror)?),
            failed: std::sync::Mutex::new(None),
        })
    }

    fn mode(&self, p: &str) -> Option<u32> {
        if p.is_empty() {
            return Some(0o040000);
        }
        self.entries.get(p).map(|e| e.0)
    }

    fn blob(&self, oid: &str, limit: u64) -> Result<Vec<u8>, Refusal> {
        lock(&self.blobs).read(oid, limit).map_err(|why| {
            let mut f = lock(&self.failed);
            if f.is_none() {
                *f = Some(why.clone());
            }
            Refusal::Io(why)
        })
    }

    fn link_at(&self, rel: &str) -> Option<String> {
        match self.entries.get(rel) {
            Some((mode, oid, _)) if mode & 0o170000 == 0o120000 => {
                match self.blob(oid, MAX_LINK_BYTES) {
                    Ok(t) => Some(String::from_utf8_lossy(&t).into_owned()),
                    Err(_) => Some("/".into()),
                }
            }
            _ => None,
        }
    }

    fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, Refusal> {
        match self.entries.get(rel) {
            None => Err(Refusal::NotFound),
            Some((mode, oid, size)) if mode & 0o170000 == 0o100000 => {
                let size = size.unwrap_or(0);
                if size > limit {
                    return Err(Refusal::TooLarge { size, limit });
                }
                self.blob(oid, limit)
            }
            Some(_) => Err(Refusal::NotRegular),
        }
    }

    fn children(&self, rel: &str) -> Result<Vec<(String, u32)>, Refusal> {
        match self.dirs.get(rel) {
            Some(c) => Ok(c.clone()),
            None if self.entries.contains_key(rel) => Err(Refusal::NotRegular),
            None => Err(Refusal::NotFound),
        }
    }
}
