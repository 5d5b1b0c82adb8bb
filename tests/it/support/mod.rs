//! What the integration tests share.

pub(crate) mod archives;
pub(crate) mod azurite;
pub(crate) mod cli;
pub(crate) mod daemon;
pub(crate) mod fsck;
pub(crate) mod http;
pub(crate) mod s3;
pub(crate) mod steplib;
pub(crate) mod strace;
pub(crate) mod tree;

pub(crate) use archives::*;
pub(crate) use azurite::{Azurite, azurite};
pub(crate) use cli::*;
pub(crate) use daemon::Tier;
pub(crate) use fsck::*;
pub(crate) use http::*;
pub(crate) use s3::*;
pub(crate) use steplib::*;
pub(crate) use strace::*;
pub(crate) use tree::*;

use std::sync::{Mutex, MutexGuard};

static ALONE: Mutex<()> = Mutex::new(());

/// Taken by the tests that must not share the machine with one another: the ones that measure
/// time or peak memory, run under strace, mount a tmpfs or run many processes at once (the
/// torture, the concurrency scenarios). Every other test takes nothing. A test that panicked
/// while holding it does not stop the rest (the poison is ignored).
pub(crate) fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}
