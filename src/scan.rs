//! Read-only listings of the store's objects and names, shared by `gc` and `fsck`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::ObjectId;
use crate::layout::{Layout, Name};
use crate::sys;

/// Something under `objects/` or `names/` that does not belong there.
#[derive(Debug, Clone)]
pub(crate) struct Foreign {
    pub path: PathBuf,
    pub why: &'static str,
}

/// A bound name and what its symlink says.
#[derive(Debug, Clone)]
pub(crate) struct NameEntry {
    pub name: Name,
    pub path: PathBuf,
    /// `None` when the target is not of the form `../../../objects/<hh>/<hash>`.
    pub target: Option<ObjectId>,
}

/// Whether the tree at `dir` is one executable: exactly one entry, a regular file named `name`
/// with an execute bit (a precompiled executable's object, a Go build's). `Err` says what it
/// is instead; the outer error is a failure to read it.
pub(crate) fn one_executable(dir: &Path, name: &str) -> Result<std::result::Result<(), String>> {
    let names: Vec<String> = read_dir_names(dir)?
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    if names != [name] {
        return Ok(Err(format!("holds {names:?}, not exactly {name:?}")));
    }
    let file = dir.join(name);
    let meta = fs::symlink_metadata(&file).map_err(Error::io("stat", &file))?;
    use std::os::unix::fs::PermissionsExt;
    if !meta.file_type().is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Ok(Err(format!("{name} is not an executable regular file")));
    }
    Ok(Ok(()))
}

pub(crate) fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf, fs::FileType)>> {
    let rd = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if sys::is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read dir", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(Error::io("read dir", dir))?;
        let ft = entry.file_type().map_err(Error::io("stat", entry.path()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path(), ft));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every object directory, plus whatever else sits under `objects/`.
/// Object ids with their directories.
pub(crate) type Objects = Vec<(ObjectId, PathBuf)>;

pub(crate) fn objects(layout: &Layout) -> Result<(Objects, Vec<Foreign>)> {
    let mut objs = Vec::new();
    let mut foreign = Vec::new();
    for (shard, spath, ft) in read_dir_names(&layout.objects())? {
        let hex_shard = shard.len() == 2
            && shard
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ft.is_dir() || !hex_shard {
            foreign.push(Foreign {
                path: spath,
                why: "not an object shard directory",
            });
            continue;
        }
        for (name, path, ft) in read_dir_names(&spath)? {
            match ObjectId::from_hex(&name) {
                Some(id) if ft.is_dir() && name.starts_with(&shard) => objs.push((id, path)),
                Some(_) if ft.is_dir() => foreign.push(Foreign {
                    path,
                    why: "object in the wrong shard",
                }),
                _ => foreign.push(Foreign {
                    path,
                    why: "not an object directory",
                }),
            }
        }
    }
    Ok((objs, foreign))
}

/// Every name, plus whatever else sits under `names/`.
pub(crate) fn names(layout: &Layout) -> Result<(Vec<NameEntry>, Vec<Foreign>)> {
    let mut out = Vec::new();
    let mut foreign = Vec::new();
    for (route, rpath, ft) in read_dir_names(&layout.names())? {
        if !ft.is_dir() {
            foreign.push(Foreign {
                path: rpath,
                why: "not a route directory",
            });
            continue;
        }
        for (id, ipath, ft) in read_dir_names(&rpath)? {
            if !ft.is_dir() {
                foreign.push(Foreign {
                    path: ipath,
                    why: "not an id directory",
                });
                continue;
            }
            for (version, vpath, ft) in read_dir_names(&ipath)? {
                let Ok(name) = Name::new(&route, &id, &version) else {
                    foreign.push(Foreign {
                        path: vpath,
                        why: "not a valid name",
                    });
                    continue;
                };
                if !ft.is_symlink() {
                    foreign.push(Foreign {
                        path: vpath,
                        why: "a name that is not a symlink",
                    });
                    continue;
                }
                let t = match fs::read_link(&vpath) {
                    Ok(t) => t,
                    // Unbound since the listing (a `delete` runs beside fsck, both sharing the
                    // store lock): not a name any more.
                    Err(e) if sys::is_not_found(&e) => continue,
                    Err(e) => return Err(Error::io("read link", &vpath)(e)),
                };
                out.push(NameEntry {
                    name,
                    path: vpath,
                    target: Layout::parse_name_target(&t),
                });
            }
        }
    }
    Ok((out, foreign))
}

/// Removes the empty directories under `names/` and `objects/`. Caller holds the exclusive lock.
pub(crate) fn prune_empty_dirs(layout: &Layout) -> Result<usize> {
    let mut n = 0;
    for (_, rpath, ft) in read_dir_names(&layout.names())? {
        if !ft.is_dir() {
            continue;
        }
        for (_, ipath, ft) in read_dir_names(&rpath)? {
            if ft.is_dir() && fs::remove_dir(&ipath).is_ok() {
                n += 1;
            }
        }
        if fs::remove_dir(&rpath).is_ok() {
            n += 1;
        }
    }
    for (_, spath, ft) in read_dir_names(&layout.objects())? {
        if ft.is_dir() && fs::remove_dir(&spath).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Bytes used by the files under `path` (apparent sizes).
pub(crate) fn tree_bytes(path: &Path) -> u64 {
    bytes_under(path, |_| true)
}

/// Bytes that removing the tree at `path` frees: the files that have no other link (a
/// collection object shares its unchanged groups' files with the one it replaced).
pub(crate) fn freed_bytes(path: &Path) -> u64 {
    bytes_under(path, |m| std::os::unix::fs::MetadataExt::nlink(m) <= 1)
}

fn bytes_under(path: &Path, counted: impl Fn(&fs::Metadata) -> bool) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = fs::read_dir(&p) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if counted(&m) => total += m.len(),
                Ok(_) | Err(_) => {}
            }
        }
    }
    total
}
