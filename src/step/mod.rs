//! Step lookup, download and activation (what CI runs), one concern per file: `resolve.rs`
//! (picking a version from a collection: [`resolve()`]), `source.rs` (the step's source into
//! the store: [`download`]), `activation.rs` (copying it out: [`activate_with`]),
//! [`precompiled`] (verified executables) and `git_ref.rs` (steps named `git::URL@REF` or
//! `path::DIR` instead of through a StepLib: [`activate_ref`], [`fetch_git`]).
//!
//! Invariants:
//! - A step's source is verified before it is published (git: the checkout is exactly
//!   `source.commit`; archives: every entry vetted and the stream checked to its end), so an
//!   object bound to a step name was verified once and is trusted from then on.
//! - Concurrent activations that miss the same step make one download (single flight on the
//!   step's name); all of them then copy the same object.
//! - Activation materialises the tree at the destination atomically and never aliases the store.
//! - A cache hit needs no write access to the store.

mod activation;
mod git_ref;
pub mod precompiled;
mod prepare;
mod resolve;
mod source;

pub use activation::{Precompiled, activate, activate_with};
pub use git_ref::{
    ActivatedRef, DEFAULT_REFERENCE, GitRef, GitTree, StepRef, activate_ref, fetch_git,
    ref_step_info,
};
pub use prepare::{PrepareOptions, Prepared, activate_prepared, download_prepared};
pub(crate) use resolve::refresh_if_stale;
pub use resolve::{
    Lookup, OnMiss, Picked, Read, Refresh, Resolved, StepInfo, open_or_setup, resolve,
};
pub use source::{download, download_from};

use crate::error::Error;

/// The part of an error worth repeating after the location it came from.
pub(crate) fn reason_of(e: &Error) -> String {
    match e {
        Error::Fetch { reason, .. } => reason.clone(),
        other => other.describe(),
    }
}
