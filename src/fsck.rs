//! `fsck`: proves every object is what its name says and finds everything else that is wrong.
//!
//! Invariants:
//! - Checking writes nothing; it holds the shared store lock so gc cannot move objects under it.
//! - It keeps going past every problem and reports each with its path.
//! - `repair` re-checks each problem under the exclusive store lock before acting on it, acts only
//!   by moving damaged objects aside into `quarantine/`, dropping names that point at missing or
//!   damaged objects, fixing permission bits and reclaiming dead temp dirs; running it again finds
//!   nothing left to do.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::gc::move_out;
use crate::hash::{self, Kind, ObjectId};
use crate::layout::Layout;
use crate::lock;
use crate::scan;
use crate::store::Store;
use crate::sys;
use crate::tmp;

/// What kind of problem a [`Problem`] is; shown (and serialized) as its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// `corrupt-object`: an object whose content does not hash to its name, or that cannot be
    /// read.
    CorruptObject,
    /// `bad-permissions`: an object's file or directory without the mode it must have.
    BadPermissions,
    /// `dangling-name`: a name that points at a missing or damaged object, or at no object path.
    DanglingName,
    /// `foreign-entry`: an entry that is no part of the store's format (never touched but to be
    /// moved aside from `objects/`).
    ForeignEntry,
    /// `dead-temp`: a temp dir whose owner died.
    DeadTemp,
    /// `unsafe-permissions`: a store directory or file that group or others may write.
    UnsafePermissions,
    /// `foreign-owner`: a store entry, name or object owned by another user than the store's
    /// owner.
    ForeignOwner,
}

impl ProblemKind {
    /// The machine-readable name, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::CorruptObject => "corrupt-object",
            ProblemKind::BadPermissions => "bad-permissions",
            ProblemKind::DanglingName => "dangling-name",
            ProblemKind::ForeignEntry => "foreign-entry",
            ProblemKind::DeadTemp => "dead-temp",
            ProblemKind::UnsafePermissions => "unsafe-permissions",
            ProblemKind::ForeignOwner => "foreign-owner",
        }
    }
}

/// Whether [`fsck`] repairs what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Check only; write nothing.
    No,
    /// Fix what can be fixed (`--repair`).
    Yes,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Machine-readable kind.
    pub kind: ProblemKind,
    /// What is wrong.
    pub path: PathBuf,
    /// Details.
    pub detail: String,
    /// True when `--repair` fixed it.
    pub repaired: bool,
    /// For [`ProblemKind::BadPermissions`]: the mode the entry must have (what a repair sets).
    /// Not part of the JSON output, whose detail says it.
    #[serde(skip)]
    pub want_mode: Option<u32>,
}

/// The whole result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Objects rehashed.
    pub objects: usize,
    /// Bytes of file content rehashed.
    pub bytes: u64,
    /// Names checked.
    pub names: usize,
    /// Everything found.
    pub problems: Vec<Problem>,
    /// Why `--repair` stopped part-way (a read-only store, say); the problems it did not reach
    /// are reported unrepaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_error: Option<String>,
}

impl FsckReport {
    /// No problems at all.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    /// Problems found and left as they are.
    pub fn unrepaired(&self) -> usize {
        self.problems.iter().filter(|p| !p.repaired).count()
    }
}

/// One rehashed child of a directory: name, kind, digest.
type Child = (String, Kind, [u8; 32]);

/// Why an object failed its rehash: the detail of a [`ProblemKind::CorruptObject`].
#[derive(Debug, thiserror::Error)]
enum Corruption {
    /// Its content does not hash to its name.
    #[error("content hashes to {0}")]
    Mismatch(ObjectId),
    #[error("{}: unreadable or non-UTF-8 entry", .0.display())]
    UnreadableEntry(PathBuf),
    #[error("{}: non-UTF-8 symlink target", .0.display())]
    NonUtf8Target(PathBuf),
    #[error("{}: not a file, directory or symlink", .0.display())]
    NotFileDirOrSymlink(PathBuf),
    /// A read of the object failed.
    #[error("{op} {}: {}", path.display(), crate::error::io_words(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The object's root cannot be stat'ed.
    #[error("{}", crate::error::io_words(.0))]
    Root(std::io::Error),
    /// A directory of it cannot be listed.
    #[error("{}", .0.describe())]
    Listing(Error),
    /// Another rehashing thread panicked.
    #[error("poisoned")]
    Poisoned,
}

impl<T> From<std::sync::PoisonError<T>> for Corruption {
    fn from(_: std::sync::PoisonError<T>) -> Corruption {
        Corruption::Poisoned
    }
}

/// A closure that wraps an `io::Error` with the operation and the path.
fn corrupt_io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Corruption {
    let path = path.to_path_buf();
    move |source| Corruption::Io { op, path, source }
}

struct Walk<'a> {
    bytes: &'a Mutex<u64>,
    perms: &'a Mutex<Vec<(PathBuf, u32)>>,
    /// The store's owner, and how many entries another user owns (the first one's path).
    owner: u32,
    foreign: &'a Mutex<(usize, Option<PathBuf>)>,
}

fn digest_dir(dir: &Path, w: &Walk) -> std::result::Result<[u8; 32], Corruption> {
    let entries = scan::read_dir_names(dir).map_err(Corruption::Listing)?;
    let children: Vec<std::result::Result<Child, Corruption>> = entries
        .par_iter()
        .map(|(name, path, _)| {
            if fs::symlink_metadata(path).is_err()
                || path.file_name().and_then(|n| n.to_str()).is_none()
            {
                return Err(Corruption::UnreadableEntry(path.clone()));
            }
            let meta = fs::symlink_metadata(path).map_err(corrupt_io("stat", path))?;
            if meta.uid() != w.owner {
                let mut f = w.foreign.lock()?;
                f.0 += 1;
                f.1.get_or_insert_with(|| path.clone());
            }
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                if mode != 0o555 {
                    w.perms.lock()?.push((path.clone(), 0o555));
                }
                Ok((name.clone(), Kind::Dir, digest_dir(path, w)?))
            } else if ft.is_file() {
                let exec = mode & 0o111 != 0;
                let want = if exec { 0o555 } else { 0o444 };
                if mode != want {
                    w.perms.lock()?.push((path.clone(), want));
                }
                let mut h = blake3::Hasher::new();
                let f = File::open(path).map_err(corrupt_io("open", path))?;
                h.update_reader(f).map_err(corrupt_io("read", path))?;
                *w.bytes.lock()? += meta.len();
                Ok((
                    name.clone(),
                    if exec { Kind::Exec } else { Kind::File },
                    *h.finalize().as_bytes(),
                ))
            } else if ft.is_symlink() {
                let t = fs::read_link(path).map_err(corrupt_io("read link", path))?;
                let t = t
                    .to_str()
                    .ok_or_else(|| Corruption::NonUtf8Target(path.clone()))?;
                Ok((name.clone(), Kind::Symlink, hash::symlink_digest(t)))
            } else {
                Err(Corruption::NotFileDirOrSymlink(path.clone()))
            }
        })
        .collect();
    let mut children = children
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(hash::dir_digest(&mut children))
}

/// What rehashing a sound object found besides: permission fixes, and how many of its entries
/// another user owns (with the first one's path).
struct Checked {
    perms: Vec<(PathBuf, u32)>,
    foreign: (usize, Option<PathBuf>),
}

/// Rehashes the object at `path`: `Ok` when its content matches `id`.
fn verify_object(
    id: &ObjectId,
    path: &Path,
    bytes: &Mutex<u64>,
    owner: u32,
) -> std::result::Result<Checked, Corruption> {
    let perms = Mutex::new(Vec::new());
    let root = fs::symlink_metadata(path).map_err(Corruption::Root)?;
    let root_mode = root.permissions().mode() & 0o7777;
    let foreign = Mutex::new(if root.uid() != owner {
        (1, Some(path.to_path_buf()))
    } else {
        (0, None)
    });
    let digest = digest_dir(
        path,
        &Walk {
            bytes,
            perms: &perms,
            owner,
            foreign: &foreign,
        },
    )?;
    if digest != *id.as_bytes() {
        return Err(Corruption::Mismatch(ObjectId::from_bytes(digest)));
    }
    let mut perms = perms.into_inner()?;
    if root_mode != 0o555 {
        perms.push((path.to_path_buf(), 0o555));
    }
    perms.sort();
    Ok(Checked {
        perms,
        foreign: foreign.into_inner()?,
    })
}

/// The store's own directories and files, names included, that another user owns or that group
/// or others may write (anyone who can write a names directory can re-point its names). Objects
/// are checked as they are rehashed. Listed parents first, so a repair fixes a directory before
/// what is in it.
fn check_access(layout: &Layout, owner: u32, names: &[scan::NameEntry]) -> Result<Vec<Problem>> {
    let dirs_in = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(scan::read_dir_names(dir)?
            .into_iter()
            .filter(|(_, _, ft)| ft.is_dir())
            .map(|(_, p, _)| p)
            .collect())
    };
    let mut paths = vec![
        layout.root().to_path_buf(),
        layout.format_file(),
        layout.objects(),
    ];
    paths.extend(dirs_in(&layout.objects())?);
    paths.push(layout.names());
    for route in dirs_in(&layout.names())? {
        let ids = dirs_in(&route)?;
        paths.push(route);
        paths.extend(ids);
    }
    paths.extend(names.iter().map(|n| n.path.clone()));
    let locks = layout.locks();
    paths.push(layout.tmp());
    // Another user's temp dir or lock there stops the owner's sweeps (its lock cannot be opened).
    paths.extend(
        scan::read_dir_names(&layout.tmp())?
            .into_iter()
            .map(|(_, p, _)| p),
    );
    paths.extend([
        layout.gc_lock(),
        layout.gc_intent_lock(),
        layout.name_locks(),
        locks,
        layout.quarantine(),
        layout.mirrors(),
    ]);
    let mut out = Vec::new();
    for p in paths {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Removed since the listing (a name unbound, an empty dir pruned), or never made.
            Err(e) if sys::is_not_found(&e) => continue,
            Err(e) => return Err(Error::io("stat", &p)(e)),
        };
        if meta.uid() != owner {
            out.push(problem(
                ProblemKind::ForeignOwner,
                p.clone(),
                format!(
                    "owned by {}, not by the store's owner {}",
                    sys::describe_user(meta.uid()),
                    sys::describe_user(owner)
                ),
            ));
        }
        let mode = meta.mode() & 0o7777;
        if !meta.file_type().is_symlink() && mode & 0o022 != 0 {
            out.push(problem(
                ProblemKind::UnsafePermissions,
                p,
                format!(
                    "mode {mode:o} lets group or others write; should be {:o}",
                    mode & !0o022
                ),
            ));
        }
    }
    Ok(out)
}

fn problem(kind: ProblemKind, path: PathBuf, detail: impl Into<String>) -> Problem {
    Problem {
        kind,
        path,
        detail: detail.into(),
        repaired: false,
        want_mode: None,
    }
}

/// Checks the store; with [`Repair::Yes`], fixes what it can.
pub fn fsck(store: &Store, repair: Repair) -> Result<FsckReport> {
    let layout = store.layout();
    let mut report = FsckReport::default();
    let dead = tmp::sweep(layout, tmp::SweepMode::DryRun)?;
    for d in &dead.reclaimed {
        report.problems.push(problem(
            ProblemKind::DeadTemp,
            d.clone(),
            "temp dir whose owner died",
        ));
    }
    for f in &dead.foreign {
        report.problems.push(problem(
            ProblemKind::ForeignEntry,
            f.clone(),
            "not a lock file of the temp area (not a regular file, or another user's): never \
             locked or removed",
        ));
    }
    let guard = lock::store_shared(layout)?;
    // Names first: importers publish and bind under the shared lock too, so an object listed
    // before the names could miss one published and bound in between (a false "missing object").
    // A name's object is published before the name is bound, and nothing removes objects while
    // we hold the lock: every name listed here finds its object in the listing that follows.
    let (names, foreign_names) = scan::names(layout)?;
    let (objects, foreign_objs) = scan::objects(layout)?;
    for f in foreign_objs.iter().chain(&foreign_names) {
        report
            .problems
            .push(problem(ProblemKind::ForeignEntry, f.path.clone(), f.why));
    }
    let owner = store.owner();
    // One finding per path: what the sweep already called foreign (a FIFO, another user's lock)
    // is left alone, not also given back to the owner.
    let foreign: HashSet<PathBuf> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::ForeignEntry)
        .map(|p| p.path.clone())
        .collect();
    report.problems.extend(
        check_access(layout, owner, &names)?
            .into_iter()
            .filter(|p| !foreign.contains(&p.path)),
    );
    let bytes = Mutex::new(0u64);
    let results: Vec<_> = objects
        .par_iter()
        .map(|(id, path)| (id, path, verify_object(id, path, &bytes, owner)))
        .collect();
    report.objects = objects.len();
    report.bytes = bytes.into_inner().unwrap_or(0);
    let mut bad: HashSet<ObjectId> = HashSet::new();
    for (id, path, r) in &results {
        match r {
            Ok(Checked { perms, foreign }) => {
                if let (n, Some(first)) = foreign {
                    report.problems.push(problem(
                        ProblemKind::ForeignOwner,
                        path.to_path_buf(),
                        format!(
                            "{n} of its entries owned by another user than the store's owner {} \
                             (the first: {})",
                            sys::describe_user(owner),
                            first.display()
                        ),
                    ));
                }
                for (p, want) in perms {
                    report.problems.push(Problem {
                        want_mode: Some(*want),
                        ..problem(
                            ProblemKind::BadPermissions,
                            p.clone(),
                            format!("mode should be {want:o}"),
                        )
                    });
                }
            }
            Err(why) => {
                bad.insert(**id);
                report.problems.push(problem(
                    ProblemKind::CorruptObject,
                    path.to_path_buf(),
                    why.to_string(),
                ));
            }
        }
    }
    let present: HashSet<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    report.names = names.len();
    for n in &names {
        match n.target {
            None => report.problems.push(problem(
                ProblemKind::DanglingName,
                n.path.clone(),
                format!("{}: target is not an object path", n.name),
            )),
            Some(id) if bad.contains(&id) => report.problems.push(problem(
                ProblemKind::DanglingName,
                n.path.clone(),
                format!("{} points at damaged object {id}", n.name),
            )),
            Some(id) if !present.contains(&id) => report.problems.push(problem(
                ProblemKind::DanglingName,
                n.path.clone(),
                format!("{} points at missing object {id}", n.name),
            )),
            Some(_) => {}
        }
    }
    drop(guard);
    // An object root not yet 0555 is a publisher killed between its rename and its chmod (a
    // crash state), or a live one about to chmod: that one holds the store lock (shared) until
    // it has. Wait for the lock exclusively and look again; report only what is still wrong.
    let roots: HashSet<&Path> = objects.iter().map(|(_, p)| p.as_path()).collect();
    let open_root =
        |p: &Problem| p.kind == ProblemKind::BadPermissions && roots.contains(p.path.as_path());
    if report.problems.iter().any(open_root) {
        let _settled = lock::store_exclusive(layout)?;
        report.problems.retain(|p| {
            !open_root(p)
                || fs::symlink_metadata(&p.path)
                    .is_ok_and(|m| m.permissions().mode() & 0o7777 != 0o555)
        });
    }
    if repair == Repair::Yes
        && !report.problems.is_empty()
        && let Err(e) = repair_all(store, &mut report)
    {
        report.repair_error = Some(e.describe());
    }
    Ok(report)
}

fn repair_all(store: &Store, report: &mut FsckReport) -> Result<()> {
    let layout = store.layout();
    store.check_owner("repair")?;
    tmp::sweep(layout, tmp::SweepMode::Remove)?;
    let _guard = lock::store_exclusive(layout)?;
    for p in report.problems.iter_mut() {
        p.repaired = match repair_one(store, p) {
            Ok(done) => done,
            // Gone while we repaired it (another process's sweep, gc or delete): nothing is left
            // to repair.
            Err(_) if gone(&p.path) => true,
            Err(e) => return Err(e),
        };
    }
    Ok(())
}

fn gone(p: &Path) -> bool {
    matches!(fs::symlink_metadata(p), Err(e) if sys::is_not_found(&e))
}

/// Re-checks `p` under the exclusive store lock and repairs it: `Ok(true)` when nothing is left
/// wrong (including when someone else fixed or removed it first), `Ok(false)` when it cannot be
/// repaired (the detail then says why).
fn repair_one(store: &Store, p: &mut Problem) -> Result<bool> {
    let layout = store.layout();
    let owner = store.owner();
    if gone(&p.path) {
        return Ok(true);
    }
    Ok(match p.kind {
        // Another sweeper may be removing it right now: `reclaim_dead` waits for it.
        ProblemKind::DeadTemp => tmp::reclaim_dead(&p.path)?,
        ProblemKind::BadPermissions => match p.want_mode {
            Some(want) => {
                sys::set_mode(&p.path, want).map_err(Error::io("chmod", &p.path))?;
                true
            }
            None => false,
        },
        ProblemKind::CorruptObject | ProblemKind::ForeignEntry
            if p.path.starts_with(layout.objects()) =>
        {
            let still_bad = match p
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(ObjectId::from_hex)
            {
                Some(id) if p.kind == ProblemKind::CorruptObject => {
                    verify_object(&id, &p.path, &Mutex::new(0), owner).is_err()
                }
                _ => true,
            };
            if still_bad {
                let quarantine = layout.quarantine();
                crate::store::make_dir(&quarantine)?;
                let base = p
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let to = quarantine.join(format!("{base}.{:016x}", crate::layout::unique_token()));
                let meta = fs::symlink_metadata(&p.path).map_err(Error::io("stat", &p.path))?;
                if meta.is_dir() {
                    move_out(&p.path, &to)?;
                } else {
                    sys::replace(&p.path, &to).map_err(Error::io("rename", &p.path))?;
                }
            }
            true
        }
        ProblemKind::DanglingName => {
            let still = match fs::read_link(&p.path) {
                Ok(t) => match Layout::parse_name_target(&t) {
                    None => true,
                    Some(id) => {
                        let dir = layout.object_dir(&id);
                        !dir.is_dir() || verify_object(&id, &dir, &Mutex::new(0), owner).is_err()
                    }
                },
                Err(_) => false,
            };
            if still {
                fs::remove_file(&p.path).map_err(Error::io("remove", &p.path))?;
            }
            true
        }
        ProblemKind::UnsafePermissions => {
            let meta = fs::symlink_metadata(&p.path).map_err(Error::io("stat", &p.path))?;
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() || mode & 0o022 == 0 {
                return Ok(true);
            }
            match sys::set_mode_nofollow(&p.path, mode & !0o022) {
                Ok(()) => true,
                Err(e) if sys::is_read_only(&e) => {
                    p.detail.push_str(&format!(
                        "; cannot chmod it as {}, owned by {}: {e}",
                        sys::describe_user(sys::euid()),
                        sys::describe_user(meta.uid())
                    ));
                    false
                }
                Err(e) => return Err(Error::io("chmod", &p.path)(e)),
            }
        }
        ProblemKind::ForeignOwner => match give_back(layout, owner, &p.path) {
            Ok(()) => true,
            Err(Error::Io { error, path, .. }) if sys::is_read_only(&error) => {
                p.detail.push_str(&format!(
                    "; {} cannot take it back ({} on {}): as root, run `chown -hR {owner} {}`",
                    sys::describe_user(sys::euid()),
                    crate::error::io_words(&error),
                    path.display(),
                    p.path.display()
                ));
                false
            }
            Err(e) => return Err(e),
        },
        // Outside `objects/` (a foreign entry of `names/`, say): never touched.
        ProblemKind::CorruptObject | ProblemKind::ForeignEntry => false,
    })
}

/// Ends another user's ownership of `path`: a name they bound is dropped (its target cannot be
/// trusted; the next activation fetches it again), anything else is given to the store's owner
/// (which only root may do), every entry of an object included.
fn give_back(layout: &Layout, owner: u32, path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(Error::io("stat", path))?;
    let is_name = meta.file_type().is_symlink()
        && path
            .strip_prefix(layout.names())
            .is_ok_and(|r| r.components().count() == 3);
    if is_name {
        if meta.uid() != owner {
            fs::remove_file(path).map_err(Error::io("remove", path))?;
        }
        return Ok(());
    }
    if meta.uid() != owner {
        sys::chown_nofollow(path, owner).map_err(Error::io("chown", path))?;
    }
    let is_object = meta.is_dir()
        && path
            .strip_prefix(layout.objects())
            .is_ok_and(|r| r.components().count() == 2);
    if is_object {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for (_, p, ft) in scan::read_dir_names(&dir)? {
                let m = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
                if m.uid() != owner {
                    sys::chown_nofollow(&p, owner).map_err(Error::io("chown", &p))?;
                }
                if ft.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    Ok(())
}
