//! Garbage collection: removes objects no name points at, and dead temp dirs.
//!
//! Invariants:
//! - Objects are chosen and moved out under the exclusive store lock, so no process is between a
//!   publish and its name binding, nor copying out of an object, while gc decides. The lock is
//!   held only for the listing and the renames; the deleting happens afterwards, in gc's own temp
//!   dir, which a sweep reclaims if gc is killed.
//! - A name never dangles because of gc: only objects that no name points at are moved. The
//!   one kind of name gc removes is a build's (`_build/<source id>/…`) whose source object no
//!   other name points at: the build goes with its source.
//! - Running gc twice, or two gcs at once, is fine: the second finds nothing to do.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::ObjectId;
use crate::layout::BUILD_ROUTE;
use crate::lock;
use crate::scan;
use crate::store::Store;
use crate::sys;
use crate::tmp::{self, SweepReport, TempDir};

/// What gc did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// Objects removed.
    pub removed_objects: Vec<String>,
    /// Bytes of file content their removal frees (a file that another object shares, through
    /// a hard link, is not counted).
    pub removed_bytes: u64,
    /// Objects kept because a name points at them.
    pub kept_objects: usize,
    /// Names removed: builds whose source object no name points at any more.
    pub removed_names: Vec<String>,
    /// Dead temp dirs reclaimed.
    pub temp: SweepReport,
}

/// Whether [`gc`] removes what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    /// Report what would be removed; write nothing (`--dry-run`).
    DryRun,
    /// Remove it.
    Collect,
}

/// Runs gc on `store`.
pub fn gc(store: &Store, mode: GcMode) -> Result<GcReport> {
    let dry_run = mode == GcMode::DryRun;
    let layout = store.layout();
    if !dry_run {
        store.check_owner("collect garbage")?;
    }
    let temp = tmp::sweep(
        layout,
        match mode {
            GcMode::DryRun => tmp::SweepMode::DryRun,
            GcMode::Collect => tmp::SweepMode::Remove,
        },
    )?;
    let trash = if dry_run {
        None
    } else {
        Some(
            TempDir::create(layout, crate::layout::TempKind::Gc)
                .map_err(|e| store.read_only_or(e, "collect garbage"))?,
        )
    };
    let guard = if dry_run {
        lock::store_shared(layout)?
    } else {
        lock::store_exclusive(layout).map_err(|e| store.read_only_or(e, "collect garbage"))?
    };
    let (names, _) = scan::names(layout)?;
    // A build is kept while its source object is named (`_build/<source id>/…`); the names of
    // the others go first, so that their objects are collected below.
    let sources: HashSet<_> = names
        .iter()
        .filter(|n| n.name.route() != BUILD_ROUTE)
        .filter_map(|n| n.target)
        .collect();
    let mut referenced = HashSet::new();
    let mut removed_names = Vec::new();
    for n in &names {
        let orphan = n.name.route() == BUILD_ROUTE
            && ObjectId::from_hex(n.name.id()).is_none_or(|src| !sources.contains(&src));
        if orphan {
            removed_names.push(n.name.to_string());
            if !dry_run {
                match std::fs::remove_file(&n.path) {
                    Ok(()) => {}
                    Err(e) if sys::is_not_found(&e) => {}
                    Err(e) => return Err(Error::io("remove", &n.path)(e)),
                }
            }
        } else if let Some(t) = n.target {
            referenced.insert(t);
        }
    }
    let (objects, _) = scan::objects(layout)?;
    let mut report = GcReport {
        dry_run,
        removed_objects: Vec::new(),
        removed_bytes: 0,
        kept_objects: 0,
        removed_names,
        temp,
    };
    for (id, path) in objects {
        if referenced.contains(&id) {
            report.kept_objects += 1;
            // A publisher killed between its rename and its chmod leaves a complete object whose
            // root is still writable: finish its job.
            if !dry_run
                && let Ok(m) = std::fs::symlink_metadata(&path)
                && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777 != 0o555
            {
                sys::set_mode(&path, 0o555).map_err(Error::io("chmod", &path))?;
            }
            continue;
        }
        report.removed_bytes += scan::freed_bytes(&path);
        report.removed_objects.push(id.to_hex());
        if let Some(trash) = &trash {
            move_out(&path, &trash.path().join(id.to_hex()))?;
        }
    }
    if !dry_run {
        scan::prune_empty_dirs(layout)?;
    }
    drop(guard);
    drop(trash);
    Ok(report)
}

/// Moves an object out of `objects/` (or, where it cannot be renamed, removes it in place).
/// Caller holds the exclusive store lock.
pub(crate) fn move_out(path: &std::path::Path, to: &std::path::Path) -> Result<PathBuf> {
    // A non-root owner cannot move a read-only directory to another parent.
    sys::set_mode(path, 0o755).map_err(Error::io("chmod", path))?;
    match sys::replace(path, to) {
        Ok(()) => Ok(to.to_path_buf()),
        Err(e) if sys::is_exdev(&e) => {
            log::debug!(
                "{}: cannot be renamed (EXDEV); removing in place",
                path.display()
            );
            tmp::remove_tree(path)?;
            Ok(path.to_path_buf())
        }
        Err(e) => Err(Error::io("rename", path)(e)),
    }
}
