//! Ingest of arbitrary (or scripted, see `common`) tar input: never panics, never writes
//! outside the tree, and an accepted tree holds only what the store allows.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::ingest_and_check(stepman::fuzzing::Format::Tar, data);
});
