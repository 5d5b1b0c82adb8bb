//! What the integration tests share.

pub(crate) mod common;
pub(crate) mod fixtures;
pub(crate) mod hostile_server;

use std::sync::{Mutex, MutexGuard};

static ALONE: Mutex<()> = Mutex::new(());

/// Taken by the tests that must not share the machine with one another: the ones that measure
/// time or peak memory, run under strace, mount a tmpfs or run many processes at once (the
/// torture, the concurrency scenarios). Every other test takes nothing. A test that panicked
/// while holding it does not stop the rest (the poison is ignored).
pub(crate) fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}
