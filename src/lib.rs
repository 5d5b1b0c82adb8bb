//! `stepman`: a step manager for CI runners, built on a content-addressed store with immutable
//! entries.
//!
//! The library owns all behaviour; the `stepman` binary parses arguments and prints. The library
//! never prints, never exits and never panics on bad input or on a race: it returns [`Error`]s
//! that name the path and the operation.
//!
//! The store's on-disk format is specified in `store-format.md`; [`layout`] is the one module that
//! knows it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activate;
pub mod atomic;
pub mod audit;
pub mod credentials;
pub mod error;
mod export;
pub mod fetch;
pub mod fsck;
pub mod gc;
pub mod hash;
mod ingest;
mod jobs;
pub mod layout;
pub mod legacy;
mod lock;
pub mod preload;
pub mod progress;
pub mod remote;
mod retry;
mod scan;
pub mod settings;
pub mod share;
pub mod step;
pub mod steplib;
pub mod store;
mod sys;
mod tmp;
pub mod toolkit;

pub use error::{Error, Result};
pub use export::Replace;
pub use hash::ObjectId;
pub use ingest::{Durability, Limits};
pub use layout::{Layout, Name};
pub use store::{Fill, Imported, Store};
pub use tmp::SweepReport;

/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use std::io::Cursor;
    use std::path::Path;

    use crate::ingest::{self, TreeWriter};
    use crate::{Durability, Limits, ObjectId, Result};

    /// Which archive format to feed [`ingest_bytes`].
    #[derive(Debug, Clone, Copy)]
    pub enum Format {
        /// A plain tar.
        Tar,
        /// A gzip-compressed tar.
        TarGz,
        /// A zip, through its central directory.
        Zip,
        /// A zip read as a stream, in one pass (an HTTP body); an archive it cannot read that
        /// way is [`crate::Error::BadArchive`] with the reason.
        ZipStream,
    }

    /// Ingests `data` into a new tree at `root` (which must not exist), without fsync.
    pub fn ingest_bytes(
        format: Format,
        data: &[u8],
        root: &Path,
        limits: Limits,
    ) -> Result<ObjectId> {
        let w = TreeWriter::new(root, "fuzz-input", limits, Durability::NoSync)?;
        let r = match format {
            Format::Tar => ingest::ingest_tar(data, ingest::Compression::None, w),
            Format::TarGz => ingest::ingest_tar(data, ingest::Compression::Gzip, w),
            Format::Zip => ingest::ingest_zip(Cursor::new(data), w),
            Format::ZipStream => {
                return match ingest::ingest_stream(data, w)? {
                    ingest::Streamed::Tree(id) => Ok(id),
                    ingest::Streamed::Fallback(reason) => Err(crate::Error::BadArchive {
                        source_name: "fuzz-input".into(),
                        reason: format!("fallback: {reason}"),
                    }),
                };
            }
        };
        r.map(|(id, _)| id)
    }

    /// Parses a name's symlink target as the store does.
    pub fn parse_name_target(target: &str) -> Option<ObjectId> {
        crate::layout::Layout::parse_name_target(Path::new(target))
    }

    /// A step.yml's bytes as `setup` reads them (UTF-8, bounded YAML, `validate_step`).
    pub fn parse_step_yml(raw: &[u8]) -> std::result::Result<serde_json::Value, String> {
        crate::steplib::generate::parse_step_yml(raw).map_err(|e| e.to_string())
    }

    /// A `step-info.yml`'s text as `setup` reads it.
    pub fn parse_step_info(text: &str) -> std::result::Result<serde_json::Value, String> {
        crate::steplib::generate::parse_step_info(text).map_err(|e| e.to_string())
    }

    /// A `steplib.yml`'s text as `setup` reads it.
    pub fn parse_steplib_yml(
        text: &str,
    ) -> std::result::Result<crate::steplib::SteplibMeta, String> {
        crate::steplib::generate::parse_steplib_yml(text).map_err(|e| e.to_string())
    }

    /// Classifies a step's `source.git` as `activate` does before any clone: `Ok(true)` for a
    /// repository on this machine (`file://`, a path), `Ok(false)` for the network, `Err` when
    /// it is refused whatever the StepLib (remote helpers, a leading `-`, another scheme).
    pub fn classify_git_url(url: &str) -> std::result::Result<bool, String> {
        crate::fetch::classify_git_url(url)
            .map(|k| k == crate::fetch::GitUrl::Local)
            .map_err(|e| e.to_string())
    }

    /// Looks `host` up in netrc text as downloads do: `(login, password)` of its entry (or the
    /// default), `Err` naming the line of a syntax error.
    pub fn netrc_lookup(
        text: &str,
        host: &str,
    ) -> std::result::Result<Option<(String, String)>, String> {
        crate::credentials::netrc_pair(text, host)
    }

    /// Generates a collection object at `root` (which must not exist) from the StepLib checkout
    /// `dir`, with the checkout reader `setup` uses (symlinks resolved inside the tree, special
    /// files refused, reads bounded); without fsync.
    pub fn steplib_dir(dir: &Path, root: &Path, limits: Limits) -> Result<ObjectId> {
        let c = crate::steplib::Collection::parse(&dir.display().to_string())?;
        let mut w = TreeWriter::new(root, "fuzz-steplib", limits, Durability::NoSync)?;
        crate::steplib::generate::from_dir(
            dir,
            &c,
            None,
            &mut w,
            &crate::progress::NoProgress,
            None,
        )?;
        w.finish().map(|(id, _)| id)
    }

    /// Generates a collection object at `root` (which must not exist) from `spec.json` bytes,
    /// with the streaming reader `setup` uses for an HTTP spec.json; without fsync.
    pub fn spec_json(data: &[u8], root: &Path, limits: Limits) -> Result<ObjectId> {
        let c = crate::steplib::Collection::parse("https://fuzz.invalid/spec.json")?;
        let mut w = TreeWriter::new(root, "fuzz-spec", limits, Durability::NoSync)?;
        crate::steplib::generate::from_spec_reader(data, &c, &mut w)?;
        w.finish().map(|(id, _)| id)
    }
}
