//! Copying a step out of the store to a user's directory (and its step.yml, `-y`).

use std::path::Path;

use super::precompiled;
use super::resolve::Resolved;
use crate::error::{Error, Result};
use crate::fetch::NetConfig;
use crate::hash::ObjectId;
use crate::retry::Race;
use crate::steplib;
use crate::store::Store;

/// Activates the step: downloads it if needed, then copies it to `dest` (complete or not at
/// all, replacing only what an earlier activation put there: [`crate::Replace::Activated`])
/// and, with `copy_yml`, writes its step.yml there.
pub fn activate(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    net: &NetConfig,
) -> Result<ObjectId> {
    activate_with(
        store,
        r,
        dest,
        copy_yml,
        Precompiled::Skip,
        crate::Replace::Activated,
        net,
    )
}

/// Whether [`activate_with`] installs a step's precompiled executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precompiled {
    /// The step's verified executable for this platform, when it has one (`--precompiled`).
    Use,
    /// The step's source only.
    Skip,
}

/// [`activate`], and with [`Precompiled::Use`], the step's verified executable for this
/// platform as `dest/<id>` (mode 0755) when it has one; on any failure of that, the source as
/// usual. `replace` says what may be replaced at `dest` ([`crate::Replace`]).
pub fn activate_with(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    copy_yml: Option<&Path>,
    precompiled: Precompiled,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<ObjectId> {
    // Before anything is downloaded: a destination in or around the store is a mistake.
    store.check_outside(dest)?;
    if let Some(yml) = copy_yml {
        store.check_outside(yml)?;
    }
    let definition = read_definition_for(store, r, copy_yml)?;
    if precompiled == Precompiled::Use
        && let Some(id) = try_precompiled(store, r, dest, replace, net)?
    {
        write_definition_if(definition)?;
        return Ok(id);
    }
    let name = r.name()?;
    let mut race = Race::new(Race::REDO);
    let id = loop {
        match store.export_replacing(&name, dest, replace) {
            Ok(id) => break id,
            // Not in the store; or gone again before we could copy it out (a `delete` unbound
            // it, a gc collected it): delete is safe while others activate, so download again
            // (`crate::retry`).
            Err(Error::NameNotFound { .. }) if race.again() => {
                if let Some(id) = download_and_place(store, r, dest, replace, net)? {
                    break id;
                }
            }
            Err(e) => return Err(e),
        }
    };
    write_definition_if(definition)?;
    Ok(id)
}

/// Downloads the step ([`super::download`]) and, when this process writes its tree, builds the
/// destination's copy from it while its flushes are in flight (a durable ingest's last
/// fsyncs), then puts the copy in place once the object is published: `Ok(Some(id))`, the
/// activation done. `Ok(None)`: another process made the object, or the destination could not
/// be claimed at once or the copy not built (logged); the caller copies the object out as
/// usual, which reports what is wrong.
///
/// The copy is of the tree that is published as object `id` (it is only used when the download
/// gives that id): the same bytes the object holds, read from the temp dir they were written
/// to, before the rename that publishes them. Nothing is written beside the destination before
/// the tree is (a download that fails or is cancelled leaves nothing there). The destination
/// is claimed inside the download, under its name lock, so without waiting
/// ([`crate::lock::destination_try_exclusive`]): an activation into it that holds its lock
/// makes this one copy the object out afterwards, as before.
fn download_and_place(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<Option<ObjectId>> {
    type Slot = std::sync::Mutex<Option<(ObjectId, crate::export::Claimed, crate::export::Built)>>;
    let slot: std::sync::Arc<Slot> = std::sync::Arc::default();
    let hook: crate::ingest::WhileFlushing = {
        let (store, dest, slot) = (store.clone(), dest.to_path_buf(), slot.clone());
        std::sync::Arc::new(move |root: &Path, id: &ObjectId| {
            let claimed = match store.try_claim_destination(&dest, replace) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    log::debug!("{}: another activation holds it", dest.display());
                    return;
                }
                Err(e) => {
                    log::debug!("{}: {}", dest.display(), e.describe());
                    return;
                }
            };
            match claimed.build(root) {
                Ok(built) => {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((*id, claimed, built));
                }
                Err(e) => log::debug!("copying {id} while it is flushed: {}", e.describe()),
            }
        })
    };
    let got = super::source::download_while_flushing(store, r, net, Some(hook));
    let built = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (got, _) = got?;
    match built {
        Some((id, claimed, built)) if id == got.id => {
            claimed.place(built, replace)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

/// The step.yml that `-y` writes, with its temp file beside where it goes already created
/// ([`crate::atomic::PendingFile`]): read, and the directory checked by a real create, before
/// anything is downloaded or activated. By then an update or a delete, and a gc, may have taken
/// the collection object it comes from; and a directory that cannot be written fails before
/// the destination is touched. Dropped unwritten, it leaves nothing.
pub(super) type Definition = Option<(crate::atomic::PendingFile, Vec<u8>)>;

/// Reads the step.yml for `copy_yml` (nothing without it): [`Definition`].
pub(super) fn read_definition_for(
    store: &Store,
    r: &Resolved,
    copy_yml: Option<&Path>,
) -> Result<Definition> {
    copy_yml
        .map(|yml| pending_definition(yml, read_definition(store, r)?))
        .transpose()
}

/// The [`Definition`] `bytes` for `yml`: its directory created if needed, its temp file
/// created beside it.
pub(super) fn pending_definition(
    yml: &Path,
    bytes: Vec<u8>,
) -> Result<(crate::atomic::PendingFile, Vec<u8>)> {
    if let Some(parent) = yml.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::export::create_parent(parent)?;
    }
    let file = crate::atomic::PendingFile::begin(yml, crate::atomic::FileMode::Exactly(0o644))?;
    Ok((file, bytes))
}

/// Writes a [`Definition`] where it goes (nothing for none).
pub(super) fn write_definition_if(definition: Definition) -> Result<()> {
    match definition {
        Some((file, bytes)) => {
            let dest = file.dest().to_path_buf();
            file.finish(|w| w.write_all(&bytes).map_err(Error::io("write", dest)))
        }
        None => Ok(()),
    }
}

/// Activates the step's verified executable for this platform as `dest/<id>` when it has one:
/// `Ok(Some(id))`. `Ok(None)` when it has none or it cannot be had (logged: the caller uses the
/// source); a destination the source would meet too is an error.
pub(super) fn try_precompiled(
    store: &Store,
    r: &Resolved,
    dest: &Path,
    replace: crate::Replace,
    net: &NetConfig,
) -> Result<Option<ObjectId>> {
    match precompiled::activate(store, r, dest, replace, net) {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => {
            log::debug!(
                "step {}@{} has no executable for {}",
                r.picked.id,
                r.picked.version,
                precompiled::platform()
            );
            Ok(None)
        }
        // The source would meet the same destination.
        Err(e @ (Error::DestinationNotEmpty { .. } | Error::DestinationHoldsCwd { .. })) => Err(e),
        Err(e) => {
            log::warn!(
                "precompiled executable unavailable, using the source: {}",
                e.describe()
            );
            Ok(None)
        }
    }
}

/// The step's step.yml, from the collection object it was resolved in. That object may have
/// gone since (an update re-pointed the collection, a gc removed the old object): then from the
/// current collection, under the store lock so that it stays while it is read.
pub(crate) fn read_definition(store: &Store, r: &Resolved) -> Result<Vec<u8>> {
    match r.definition.read() {
        Err(Error::Io { error, .. })
            if crate::sys::is_not_found(&error) && !r.opened.dir.exists() =>
        {
            store.read_locked(|| {
                let o = steplib::open(store, &r.collection)?.ok_or_else(|| Error::NotSetUp {
                    uri: r.collection.uri.clone(),
                })?;
                o.definition(&r.picked.id, &r.picked.version)?.read()
            })
        }
        other => other,
    }
}
