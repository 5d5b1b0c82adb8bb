//! Typed errors of the library.
//!
//! Invariant: every error that comes from the file system names the operation and the path it was
//! applied to; every error about input names the source (archive, directory) and the entry. The
//! library never prints and never exits: it returns one of these.

use std::io;
use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// StepLib metadata (steplib.yml, step.yml, step-info.yml, spec.json) is invalid or missing.
    #[error("{what}: {reason}")]
    Steplib {
        /// The collection, file or step concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// No version of a step matches the constraint (never answered with an empty step).
    #[error(
        "{} not found in {collection}{}{}{}",
        step_not_found_what(id, constraint, available),
        available_suffix(available),
        suggestions_suffix(suggestions),
        stale_suffix(*last_updated_secs)
    )]
    StepNotFound {
        /// The collection's URI.
        collection: String,
        /// The step id.
        id: String,
        /// The constraint as given.
        constraint: String,
        /// The versions that exist (empty when the step itself does not).
        available: Vec<String>,
        /// When the step does not exist: the collection's ids closest to `id`, best first (at
        /// most three; empty when none is close).
        suggestions: Box<[String]>,
        /// How long ago, in seconds, the collection was set up or last updated, when that is
        /// longer than `STEPMAN_STEPLIB_TTL` and the lookup did not update it (`-u` might find
        /// the step).
        last_updated_secs: Option<u32>,
    },
    /// A collection is not set up in this store.
    #[error("collection {uri} is not set up (run `stepman setup -c {uri}`)")]
    NotSetUp {
        /// The collection's URI.
        uri: String,
    },
    /// Fetching something over the network, from git or from a local URL failed.
    #[error("{what}: {reason}")]
    Fetch {
        /// The step or collection being fetched, and from where (URL or repository).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The operation was cancelled (Ctrl-C); nothing partial was published.
    #[error("cancelled")]
    Cancelled,

    /// No suitable Go toolchain, or one that cannot be run.
    #[error("Go toolchain: {reason}")]
    Toolchain {
        /// What was tried and why it does not do.
        reason: String,
    },

    /// `go build` of a step failed.
    #[error("go build of {what} failed ({status}){note}:\n{output}")]
    Build {
        /// The step.
        what: String,
        /// How `go build` ended.
        status: String,
        /// What was done all the same (the source activated), as `; …`, or empty.
        note: String,
        /// The first lines of its output.
        output: String,
    },

    /// A step's toolkit is one that `--prepare` does not support.
    #[error("{what}: toolkit {toolkit:?} is not supported by --prepare (go and bash are)")]
    Unsupported {
        /// The step.
        what: String,
        /// The toolkit's key in step.yml.
        toolkit: String,
    },
    /// Offline mode forbids the network and the store does not have what is needed.
    #[error(
        "{what} is not in the store and offline mode forbids the network{}",
        cached_suffix(cached)
    )]
    Offline {
        /// What was asked for.
        what: String,
        /// The versions that are cached.
        cached: Vec<String>,
    },
    /// The remote tier (`STEPMAN_REMOTE`) failed or refused what it sent; callers that can go
    /// on without it (a step's download) warn and use the origin.
    #[error("remote {url}: {op} {key}: {reason}")]
    Remote {
        /// The remote's URL, without secrets.
        url: String,
        /// What was being done.
        op: RemoteOp,
        /// The key (or name) concerned.
        key: String,
        /// Why it failed.
        reason: String,
    },
    /// A system call on `path` failed. Its `Display` names the operation, the path and the OS
    /// error's words ([`io_words`]: `create /x: Permission denied`, without `(os error 13)`).
    #[error("{op} {}: {}", path.display(), io_words(error))]
    Io {
        /// What was being done ("create", "rename", "read", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// An entry of an archive or directory was refused; nothing was published.
    #[error("{source_name}: entry {} rejected: {reason}", shown(entry))]
    Rejected {
        /// The archive or directory being ingested.
        source_name: String,
        /// The entry's path as it appears in the source.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The archive itself is damaged or not an archive we read.
    #[error("{source_name}: {reason}")]
    BadArchive {
        /// The archive being ingested.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured resource limit was exceeded while ingesting.
    #[error(
        "{source_name}: {}{what} exceeds the limit of {limit}",
        entry_prefix(entry)
    )]
    LimitExceeded {
        /// The archive or directory being ingested.
        source_name: String,
        /// The entry being read when the limit was hit; empty when no single entry is to blame.
        entry: String,
        /// Which limit.
        what: LimitKind,
        /// The limit's value.
        limit: u64,
    },
    /// A StepLib is past one of the limits on what one collection may hold (README: "What a
    /// StepLib may hold"); its message names the environment variable that raises it, if any
    /// ([`LimitKind::setting`]).
    #[error(
        "{collection}: {}{what} exceeds the StepLib limit of {limit}{}",
        entry_prefix(entry),
        setting_suffix(what.setting())
    )]
    SteplibLimit {
        /// The collection's URI.
        collection: String,
        /// The file, step group or entry being read when the limit was hit; may be empty.
        entry: String,
        /// Which limit.
        what: LimitKind,
        /// The limit's value.
        limit: u64,
    },
    /// An environment variable holds a value it does not take (README: "Environment").
    #[error("{var}={value:?}: expected {expected}")]
    BadSetting {
        /// The variable.
        var: &'static str,
        /// What it holds.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A name does not follow the grammar of `store-format.md`.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name is not bound in the store.
    #[error("name {name} not found in the store at {}", store.display())]
    NameNotFound {
        /// The name that was looked up.
        name: String,
        /// The store's directory.
        store: PathBuf,
    },
    /// The store on disk is not in a state this version can use.
    #[error("store {}: {reason}", path.display())]
    Format {
        /// The file or directory that is wrong.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A legacy view (the old tool's layout, `legacy-view`) cannot be written as asked: a file
    /// of the old tool's that cannot be read, or something there that it may not replace.
    #[error("{}: {reason}", path.display())]
    LegacyView {
        /// The file or directory of the old tool's layout.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A step share (`share start|create|audit|finish`) cannot go on: its state, a session in
    /// the way, a step that does not pass the audit.
    #[error("{}: {reason}", path.display())]
    Share {
        /// The file or directory concerned (`share.json`, a session's clone, a step.yml).
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// An export destination already holds something.
    #[error("destination {} exists and is not an empty directory", path.display())]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// The store belongs to another user: only its owner writes to it, every other process
    /// (root included) uses it read-only (README, "Sharing a store between users").
    #[error(
        "store {} is read-only for this process: it belongs to {owner} and this process runs as \
         {user}; only the store's owner writes to it: cannot {op} (run as its owner, or use a \
         store of your own)",
        path.display()
    )]
    NotOwner {
        /// The store's directory.
        path: PathBuf,
        /// What needed write access.
        op: &'static str,
        /// The store's owner, as `uid N (name)`.
        owner: String,
        /// This process's effective user, as `uid N (name)`.
        user: String,
    },
    /// An activation's destination holds something that no earlier activation made (or that is
    /// not a directory): it is left as it is unless the caller asks to replace it.
    #[error(
        "destination {} {}; it is left as it is (pass --replace to replace it with the step)",
        path.display(),
        kind.as_str()
    )]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
        /// What is there.
        kind: DestinationKind,
    },
    /// A destination is the working directory or contains it: replacing it would leave this
    /// process, and the shell that started it, in a deleted directory.
    #[error(
        "destination {} is the current directory or contains it; replacing it would leave you \
         in a deleted directory: use a subdirectory instead (for example ./step)",
        path.display()
    )]
    DestinationHoldsCwd {
        /// The destination.
        path: PathBuf,
    },
    /// A path to write (`activate -p` or `-y`, an export's destination) is built beside itself,
    /// in its parent directory, and this process cannot write there; nothing was changed.
    #[error(
        "cannot write {}: its parent directory {} cannot be written by this process: {}",
        path.display(),
        parent.display(),
        io_words(error)
    )]
    ParentNotWritable {
        /// The path as given.
        path: PathBuf,
        /// Its parent directory.
        parent: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The operation needs to write but the store is read-only for this process.
    #[error("store {} is read-only for this process: cannot {op}", path.display())]
    ReadOnly {
        /// The store's directory.
        path: PathBuf,
        /// What needed write access.
        op: &'static str,
    },
    /// A path to write (`activate -p` or `-y`, an export's destination) is inside a store or
    /// contains one: writing there would rewrite objects or replace the store. Compared by
    /// device and inode after resolving symlinks and `..`, not by spelling.
    #[error(
        "{} {} the store at {}; refusing to write there{}",
        path.display(),
        relation.as_str(),
        store.display(),
        relation.consequence()
    )]
    InStore {
        /// The path as given.
        path: PathBuf,
        /// The store's directory (`store-v1`), this store or a read-only one layered under it.
        store: PathBuf,
        /// Whether the path is inside the store or contains it.
        relation: StoreRelation,
    },
}

/// Which limit an [`Error::LimitExceeded`] or [`Error::SteplibLimit`] is; shown as what it
/// bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// Entries of a tree ([`crate::Limits::max_entries`]).
    Entries,
    /// Entries a zip64 end record claims, before its central directory is read.
    ClaimedZipEntries,
    /// All paths of a tree together ([`crate::Limits::max_index_bytes`]).
    IndexBytes,
    /// A zip's central directory, read against the index limit.
    ZipIndexBytes,
    /// One file's size.
    FileBytes,
    /// All files' sizes together.
    TotalBytes,
    /// Uncompressed bytes per compressed byte.
    CompressionRatio,
    /// A tar's headers (long names, pax records).
    HeaderBytes,
    /// One step group (or other top-level value) of a spec.json, in bytes.
    SpecGroupBytes,
    /// One step group (or other top-level value) of a spec.json, in values.
    SpecGroupValues,
}

impl LimitKind {
    /// The environment variable that sets this limit for a collection's setup, if any.
    pub fn setting(self) -> Option<&'static str> {
        match self {
            LimitKind::Entries => Some("STEPMAN_MAX_ENTRIES"),
            LimitKind::IndexBytes => Some("STEPMAN_MAX_INDEX_BYTES"),
            LimitKind::FileBytes => Some("STEPMAN_MAX_FILE_BYTES"),
            LimitKind::TotalBytes => Some("STEPMAN_MAX_TOTAL_BYTES"),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            LimitKind::Entries => "number of entries",
            LimitKind::ClaimedZipEntries => "number of entries (claimed by a zip64 end record)",
            LimitKind::IndexBytes => "index size (all paths together)",
            LimitKind::ZipIndexBytes => "index size (the zip's central directory)",
            LimitKind::FileBytes => "file size",
            LimitKind::TotalBytes => "total size",
            LimitKind::CompressionRatio => "compression ratio",
            LimitKind::HeaderBytes => "header size",
            LimitKind::SpecGroupBytes => {
                "size in bytes of one step group (or top-level value) of spec.json"
            }
            LimitKind::SpecGroupValues => {
                "number of values of one step group (or top-level value) of spec.json"
            }
        }
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a StepLib document (a step.yml, step-info.yml or steplib.yml, a step of a spec.json) was
/// refused. It leaves the parser as [`Error::Steplib`] (its `Display` is the reason) or as the
/// error text of a skipped step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SteplibParseError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The document is longer than the YAML limit; it was not parsed.
    #[error("YAML document of {size} bytes (at most {limit})")]
    TooLarge {
        /// Its length in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not YAML, or YAML that expands past the limits (aliases).
    #[error("invalid YAML: {reason}")]
    Yaml {
        /// The line (from 1) where the parser stopped, when it says.
        line: Option<usize>,
        /// The parser's message.
        reason: String,
    },
    /// The document is not a mapping (step-info.yml).
    #[error("not a mapping")]
    NotAMapping,
    /// A value that must be a mapping is not (`step.yml` itself, `source`, `executables`).
    #[error("{0} is not a mapping")]
    FieldNotAMapping(&'static str),
    /// A value that must be a string is not (`title`, `source.git`, `source.commit`).
    #[error("{0} is not a string")]
    NotAString(&'static str),
    /// A required field is missing (`title`).
    #[error("missing required field: {0}")]
    MissingField(&'static str),
    /// A steplib.yml without `format_version` or `steplib_source`.
    #[error("missing required field: format_version and steplib_source are required")]
    MissingSteplibFields,
    /// An entry of `executables` without a `storage_uri` or a `sha256-<hex>` hash.
    #[error("executables.{platform} needs storage_uri and a sha256-<hex> hash")]
    BadExecutable {
        /// The entry's platform key.
        platform: String,
    },
    /// The fields do not have the types the format gives them (the decoder's message).
    #[error("{0}")]
    Schema(String),
}

/// What an activation found at its destination ([`Error::DestinationNotEmpty`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// A directory that is not empty and that no earlier activation made.
    NonEmptyDir,
    /// A symlink (never followed).
    Symlink,
    /// A regular file.
    File,
    /// A FIFO, a socket or a device.
    Special,
}

impl DestinationKind {
    fn as_str(self) -> &'static str {
        match self {
            DestinationKind::NonEmptyDir => {
                "is a directory that is not empty and that no earlier activation made"
            }
            DestinationKind::Symlink => "is a symlink (never followed)",
            DestinationKind::File => "is a file",
            DestinationKind::Special => "is a special file (a FIFO, a socket or a device)",
        }
    }
}

/// How a path to write relates to a store ([`Error::InStore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRelation {
    /// The path is the store's directory or lies under it.
    Inside,
    /// The path is an ancestor of the store's directory (`$STEPMAN_HOME`, say).
    Contains,
}

impl StoreRelation {
    fn as_str(self) -> &'static str {
        match self {
            StoreRelation::Inside => "is inside",
            StoreRelation::Contains => "contains",
        }
    }

    fn consequence(self) -> &'static str {
        match self {
            StoreRelation::Inside => " (it would rewrite the store's own files)",
            StoreRelation::Contains => " (replacing it would destroy the store)",
        }
    }
}

/// What an `io::Error` says, in words: an OS error's `strerror` text without std's
/// ` (os error N)` suffix (`Permission denied`), anything else as it displays. The one way the
/// typed errors show an `io::Error`.
pub fn io_words(e: &io::Error) -> String {
    let s = e.to_string();
    match e.raw_os_error() {
        Some(n) => match s.strip_suffix(&format!(" (os error {n})")) {
            Some(words) if !words.is_empty() => words.to_string(),
            _ => s,
        },
        None => s,
    }
}

/// An entry's name as shown in a message: quoted, escaped, and cut short if it is long (the
/// error keeps the whole name).
fn shown(entry: &str) -> String {
    const MAX: usize = 256;
    if entry.len() <= MAX {
        return format!("{entry:?}");
    }
    let mut cut = MAX;
    while !entry.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes)", &entry[..cut], entry.len())
}

fn setting_suffix(setting: Option<&'static str>) -> String {
    setting.map_or(String::new(), |s| format!(" (set {s} to change it)"))
}

fn entry_prefix(entry: &str) -> String {
    if entry.is_empty() {
        String::new()
    } else {
        format!("entry {}: ", shown(entry))
    }
}

fn step_not_found_what(id: &str, constraint: &str, available: &[String]) -> String {
    if constraint.trim().is_empty() {
        format!("step {id}")
    } else if available.is_empty() {
        format!("step {id}@{constraint}")
    } else {
        format!("version {constraint} of {id}")
    }
}

fn suggestions_suffix(s: &[String]) -> String {
    match s {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        [init @ .., last] => format!("; did you mean {} or {last}?", init.join(", ")),
    }
}

fn stale_suffix(age_secs: Option<u32>) -> String {
    age_secs.map_or(String::new(), |a| {
        format!(
            "; the collection was last updated {} ago: run with -u to update it",
            ago(u64::from(a))
        )
    })
}

/// `s` seconds as a person says them: `3 days`, `1 hour`, `12 minutes`, `40 seconds` (rounded
/// down to the largest unit).
fn ago(s: u64) -> String {
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86400 => (s / 3600, "hour"),
        _ => (s / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn available_suffix(v: &[String]) -> String {
    if v.is_empty() {
        " (no such step)".into()
    } else if v.len() > 12 {
        format!(
            " (versions: {} … {}, {} in all)",
            v[..6].join(", "),
            v[v.len() - 3..].join(", "),
            v.len()
        )
    } else {
        format!(" (versions: {})", v.join(", "))
    }
}

fn cached_suffix(v: &[String]) -> String {
    if v.is_empty() {
        "; no version of it is cached".into()
    } else {
        format!("; cached versions: {}", v.join(", "))
    }
}

/// What the remote tier was doing when it failed ([`Error::Remote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOp {
    /// Opening it from its URL and settings.
    Open,
    /// Reading a name document.
    GetName,
    /// Reading a tree.
    GetTree,
    /// A fetched tree is not the one its name claims.
    Verify,
    /// Uploading a tree.
    PutTree,
    /// Uploading a name document.
    PutName,
    /// Taking, reading or dropping a lease.
    Lease,
    /// Listing keys.
    List,
}

impl std::fmt::Display for RemoteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoteOp::Open => "open",
            RemoteOp::GetName => "get name",
            RemoteOp::GetTree => "get tree",
            RemoteOp::Verify => "verify tree",
            RemoteOp::PutTree => "put tree",
            RemoteOp::PutName => "put name",
            RemoteOp::Lease => "lease",
            RemoteOp::List => "list",
        })
    }
}

impl Error {
    /// A closure that wraps an `io::Error` with the operation and the path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |error| Error::Io { op, path, error }
    }

    /// The message followed by every cause, on one line.
    pub fn describe(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }

    /// The OS error number, when this is an I/O error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }
}
