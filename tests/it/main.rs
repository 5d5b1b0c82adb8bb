//! The integration tests: one binary, one module per area, one support tree (`support/`).
//! Filter by module: `cargo test --test it torture::`.

#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

mod support;

mod audit;
mod cli_compat;
mod cli_conventions;
mod concurrency;
mod crash_points;
mod credentials;
mod errors;
mod fallbacks;
mod format_vectors;
mod freshness;
mod full_disk;
mod fuzz_regressions;
mod git_refs;
mod git_transports;
mod go_steps;
mod go_toolkit;
mod hostile_archives;
mod hostile_servers;
mod hostile_steplib;
mod hostile_steplib_git;
mod legacy_view;
mod lookup_cost;
mod offline;
mod planted;
mod precompiled;
mod preload;
mod progress;
mod read_only_mount;
mod reflink;
mod remote;
mod remote_azure;
mod replays;
mod scenarios;
mod share;
mod steplib_api;
mod steplib_api_read;
mod steplib_mirror;
mod steplib_yaml;
mod store_cli;
mod torture;
mod unprivileged;
mod zip_stream;
