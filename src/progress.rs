//! Progress reports of long operations (PRODUCT §3: "progress bars only on a terminal").
//!
//! The library never draws anything: it tells a [`Progress`] what it is doing, and the front end
//! decides what to show (the `stepman` binary draws bars on a terminal and nothing otherwise).
//! The reporter travels in [`NetConfig::progress`](crate::fetch::NetConfig::progress), with the
//! other settings of the operations that take time (clones, downloads, generating a collection,
//! preloading); its default is [`NoProgress`].
//!
//! Reports may come from several threads at once (parallel downloads of `preload`, the workers
//! of a collection's generation): an implementation must be cheap and must not block.

use std::fmt;

/// What a long operation is doing now. Each starts a new stretch of [`Progress::bytes`] or
/// [`Progress::items`] reports (a retried download starts again with a new `Download`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Cloning or fetching a git repository for `what` (a collection, a step), from `url`
    /// (without credentials).
    Clone {
        /// What the repository is for (`collection URI`, `step ID@VERSION`).
        what: String,
        /// The repository's URL, without credentials.
        url: String,
    },
    /// Downloading `url` for `what`; [`Progress::bytes`] reports follow.
    Download {
        /// What the download is for (`step ID@VERSION`, `collection URI`).
        what: String,
        /// The URL, without credentials.
        url: String,
        /// Its length, when the server said it (`Content-Length`) or the file is local.
        total: Option<u64>,
    },
    /// Generating collection `uri`'s index from `steps` step groups; [`Progress::items`]
    /// reports count the groups done.
    Generate {
        /// The collection's URI.
        uri: String,
        /// Step groups to read.
        steps: u64,
    },
    /// Preloading `steps` step versions; a [`Progress::step_done`] report follows for each.
    Preload {
        /// Step versions requested.
        steps: u64,
    },
}

/// Receives progress reports. Every method has a default that ignores the report.
pub trait Progress: Send + Sync + fmt::Debug {
    /// A new phase starts.
    fn phase(&self, what: Phase) {
        let _ = what;
    }

    /// `n` more bytes arrived in the current download, whose length is `total` when known.
    /// Parallel downloads report their bytes through the same reporter.
    fn bytes(&self, n: u64, total: Option<u64>) {
        let _ = (n, total);
    }

    /// `done` of `total` items of the current phase are done (step groups of a
    /// [`Phase::Generate`]).
    fn items(&self, done: u64, total: u64) {
        let _ = (done, total);
    }

    /// One step of a [`Phase::Preload`] ended (in whatever order the workers finish):
    /// `outcome` says how; `done` of `total` have ended. The default reports it as
    /// [`Progress::items`].
    fn step_done(&self, outcome: &crate::preload::Outcome, done: usize, total: usize) {
        let _ = outcome;
        self.items(done as u64, total as u64);
    }
}

/// The reporter that ignores every report (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
