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

/// A checkout rooted at a directory of ours (a clone) or the user's (a local StepLib).
#[derive(Debug, Clone)]
pub(crate) struct Checkout {
    root: PathBuf,
}

impl Checkout {
    pub(crate) fn new(root: &Path) -> Checkout {
        Checkout {
            root: root.to_path_buf(),
        }
    }

    /// The path on disk of `rel`, for messages.
    pub(crate) fn display(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// The target of the symlink at `rel`; `None` when it is no symlink.
    fn link_at(&self, rel: &str) -> Option<String> {
        let p = self.root.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&p) {
                Ok(t) => Some(t.to_string_lossy().into_owned()),
                // Unreadable: resolve to "/", which is refused.
                Err(_) => Some("/".into()),
            },
            _ => None,
        }
    }

    /// `rel` with every symlink on its way resolved inside the tree.
    fn resolve(&self, rel: &str) -> Result<String, Refusal> {
        resolve_inside("_", rel, |p| self.link_at(p)).ok_or(Refusal::Outside)
    }

    /// The bytes of the regular file `rel`, at most `limit` of them.
    pub(crate) fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, Refusal> {
        read_regular(&self.root.join(self.resolve(rel)?), AtLink::Refuse, limit)
    }

    /// The entries of directory `rel` (names that are not UTF-8 are left out), each with what
    /// it is once resolved in the tree.
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<(String, EntryKind)>, Refusal> {
        let r = self.resolve(rel)?;
        let dir = self.root.join(&r);
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
                let at = if r.is_empty() {
                    name.clone()
                } else {
                    format!("{r}/{name}")
                };
                match self
                    .link_at(&at)
                    .and_then(|t| resolve_inside(&at, &t, |p| self.link_at(p)))
                {
                    None => EntryKind::Outside,
                    Some(p) => match fs::symlink_metadata(self.root.join(p)) {
                        Ok(m) if m.is_dir() => EntryKind::Dir,
                        Ok(m) if m.is_file() => EntryKind::File,
                        _ => EntryKind::Other,
                    },
                }
            } else {
                EntryKind::Other
            };
            out.push((name, kind));
        }
        Ok(out)
    }
}
