//! The remote tier: one content-addressed store shared by a fleet, on an object store
//! (`STEPMAN_REMOTE=s3://bucket/prefix`, `gs://`, `az://`, or `https://` read only).
//!
//! It holds StepLib steps' sources, git refs' trees and the Go builds that link no C, each under
//! its local name, all produced through `produce_through`. Its layout is normative in
//! `store-format.md` §12 and known only here ([`keys`]):
//! `<prefix>/stepman-remote-v1/trees/<hh>/<hex>.tar.gz` (a tree's one canonical archive,
//! `archive.rs`), `names/<route>/<id>/<version>` (the tree's id, one line) and
//! `leases/<route>/<id>/<version>` (who is downloading it from the origin, until when).
//!
//! Invariants:
//! - Nothing fetched is trusted: a tree goes through the store's vetting ingest and must hash to
//!   the id its name claims, else it is refused ([`crate::error::RemoteOp::Verify`]).
//! - A tree is put before its name, each create-only, so a name exists only when its tree does,
//!   and of two hosts putting the same key one put wins and both succeed.
//! - The lease only saves origin downloads; correctness never depends on it (it expires, and a
//!   waiter takes it over; a host that ignores it only downloads once more).
//! - Failures of the remote never fail a step's download: the callers warn and use the origin.
//! - Credentials come from the object store's own chain and are never written or shown.

mod archive;
#[cfg(feature = "remote")]
mod aws_files;
#[cfg(feature = "remote")]
mod client;
#[cfg(not(feature = "remote"))]
mod client_none;
#[cfg(not(feature = "remote"))]
use client_none as client;

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, RemoteOp, Result};
use crate::hash::ObjectId;
use crate::layout::Name;
use crate::store::Store;

/// Whether this host may write to the remote (`STEPMAN_REMOTE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-through only: misses are never uploaded.
    Read,
    /// Read-through and write-through (the default where the URL's kind can be written).
    ReadWrite,
}

/// The remote's settings (environment, `--remote`); no secrets among them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The remote's URL.
    pub url: String,
    /// Read or read-write.
    pub mode: Mode,
    /// Connect timeout of each request (`STEPMAN_REMOTE_CONNECT_TIMEOUT`, default 5 s).
    pub connect_timeout: Duration,
    /// Whole-request timeout, and the longest wait for a chunk of a body
    /// (`STEPMAN_REMOTE_TIMEOUT`, default 60 s).
    pub timeout: Duration,
    /// Retries of a transient failure (5xx, connection reset), bounded by the timeout.
    pub retries: usize,
    /// How long a lease holds before another host may take it over
    /// (`STEPMAN_REMOTE_LEASE_TTL`, default 120 s).
    pub lease_ttl: Duration,
    /// The longest a host waits for another's download before it downloads itself
    /// (`STEPMAN_REMOTE_WAIT`, default 300 s).
    pub wait: Duration,
    /// The largest tree archive uploaded (`STEPMAN_REMOTE_MAX_TREE`, default 2 GiB, the largest
    /// step archive taken from an origin). Memory does not grow with it: an archive past
    /// 8 MiB is spooled to a file in the store's temp area and goes up in 8 MiB parts.
    pub max_tree: u64,
}

impl Settings {
    /// The defaults for `url` (read-write; `https://` is always read only).
    pub fn new(url: &str) -> Settings {
        Settings {
            url: url.to_string(),
            mode: Mode::ReadWrite,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            retries: 2,
            lease_ttl: Duration::from_secs(120),
            wait: Duration::from_secs(300),
            max_tree: 2 << 30,
        }
    }

    /// The endpoint the object store is reached at, as its builder reads the environment (S3:
    /// `AWS_ENDPOINT_URL`; Azure: `AZURE_STORAGE_ENDPOINT`, or the emulator's
    /// `AZURITE_BLOB_STORAGE_URL`; GCS: `GOOGLE_BASE_URL`), or `None` for the store's own public
    /// endpoint (and for `https://`, whose URL is its endpoint). Not a secret.
    pub fn endpoint(&self) -> Option<String> {
        client::endpoint(&url::Url::parse(&self.url).ok()?)
    }

    /// For an S3 remote whose keys come from an AWS profile's shared files (the environment
    /// has none): the profile's name and the file, never the keys.
    pub fn aws_profile(&self) -> Option<(String, std::path::PathBuf)> {
        client::aws_profile(&url::Url::parse(&self.url).ok()?)
    }
}

/// An object's version as the store reported it (for a replace conditional on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    e_tag: Option<String>,
    version: Option<String>,
}

/// A put's mode, and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) enum Put {
    /// Create-only (`If-None-Match: *`).
    Create,
    /// Replace the version read (`If-Match`).
    Replace(Version),
    /// Replace whatever is there: only for a tree whose remote copy was found missing or
    /// damaged, with the canonical bytes of the id its key names (so any writer puts the same).
    Overwrite,
    /// It was written.
    Done,
    /// A create found the key there (another host's put won).
    Exists,
    /// A replace found another version.
    Conflict,
}

/// The keys of the remote layout (`store-format.md` §12), relative to the remote's prefix.
pub mod keys {
    use crate::hash::ObjectId;
    use crate::layout::Name;

    /// The layout's version directory: a new layout is a new directory.
    pub const ROOT: &str = "stepman-remote-v1";

    /// A tree's archive.
    pub fn tree(id: &ObjectId) -> String {
        let hex = id.to_hex();
        format!("{ROOT}/trees/{}/{hex}.tar.gz", &hex[..2])
    }

    /// A name's document.
    pub fn name(name: &Name) -> String {
        format!("{ROOT}/names/{name}")
    }

    /// A name's lease.
    pub fn lease(name: &Name) -> String {
        format!("{ROOT}/leases/{name}")
    }

    /// Where every name document is.
    pub fn names() -> String {
        format!("{ROOT}/names")
    }
}

/// The largest name or lease document read.
const MAX_DOC: u64 = 4096;

/// A connected remote tier, and the uploads this process owes it.
pub struct Remote {
    /// Connected on first use: a cache hit never pays for a runtime and a TLS setup.
    client: std::sync::OnceLock<std::result::Result<client::Client, String>>,
    url: url::Url,
    settings: Settings,
    /// Trees downloaded from the origin in this process, to upload ([`Remote::flush`]).
    pending: Mutex<Vec<Pending>>,
    /// Set when the store refused a write of this host's (its credentials allow reading only):
    /// from then on this process reads through only, as [`Mode::Read`] does.
    refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.settings.url)
            .field("mode", &self.settings.mode)
            .finish()
    }
}

/// An upload owed: the name's tree came from the origin here.
#[derive(Debug, Clone)]
struct Pending {
    name: Name,
    id: ObjectId,
    /// This process holds the name's lease (dropped once the name is up).
    leased: bool,
    /// The remote's copy of the tree was missing or damaged: put it again over what is there.
    repair: bool,
}

/// How many requests [`Remote::verify`] has in flight at once: remote verify is bound by round
/// trips, not by this host's cores.
pub const VERIFY_JOBS: usize = 8;

/// The size of each part of a multipart upload: above S3's 5 MiB minimum for all parts but the
/// last, and what an upload holds in memory (also the most of an archive spooled in memory).
const PART: usize = 8 << 20;

/// How many names [`Remote::push`] uploads at once: each holds at most 8 MiB of its archive
/// in memory (its spool, or the part being sent).
pub const PUSH_JOBS: usize = 4;

/// What [`Remote::verify`] found.
#[derive(Debug)]
pub struct Verification {
    /// Names listed.
    pub names: usize,
    /// Distinct trees they named, each fetched and hashed once.
    pub trees: usize,
    /// Names whose document or tree is damaged or missing, in the listing's order.
    pub damaged: Vec<Damaged>,
}

/// One damaged remote name.
#[derive(Debug)]
pub struct Damaged {
    /// The name.
    pub name: Name,
    /// What is wrong (shared by every name of one damaged tree).
    pub problem: std::sync::Arc<Error>,
}

/// What [`Remote::flush`] and [`Remote::push`] did for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The name.
    pub name: Name,
    /// Its tree.
    pub id: ObjectId,
    /// What happened.
    pub outcome: UploadOutcome,
}

/// The outcome of one name's upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The tree and the name were put (or the tree was there: another host's).
    Uploaded,
    /// The name was there already, naming this tree.
    AlreadyThere,
    /// The remote name names another tree (left as it is).
    Differs(ObjectId),
    /// It failed (the remote is left without the name).
    Failed(String),
}

/// Produces `name` in `store` as [`Store::produce`] does, reading through `remote` first: the
/// remote's tree when it has one that hashes to its name's id, else `origin`'s (another host's
/// download waited for under the lease), which is then owed to the remote
/// ([`Remote::flush`] uploads it). Without a remote, `origin` alone. Whatever the remote does
/// wrong is a warning, and `origin` is used; a name whose remote tree is missing or damaged gets
/// the origin's tree put back over it. `shape` checks a remote tree (written at the path it is
/// given) beyond its hash, as the origin's would be checked: a tree it refuses is not used.
pub(crate) fn produce_through(
    store: &Store,
    remote: Option<&Remote>,
    name: &Name,
    producer: crate::store::Producer,
    cancel: &AtomicBool,
    shape: impl Fn(&std::path::Path) -> std::result::Result<(), String>,
    origin: impl FnOnce(&mut crate::store::Stage<'_>) -> Result<crate::store::Tree>,
) -> Result<(crate::store::Produced, Came)> {
    use crate::store::Rebuild;
    let came = |p: crate::store::Produced, from_origin: bool| {
        let c = match (p.ingested, from_origin) {
            (false, _) => Came::Store,
            (true, false) => Came::Remote,
            (true, true) => Came::Origin,
        };
        (p, c)
    };
    let Some(remote) = remote else {
        return store
            .produce(name, Rebuild::Never, producer, origin)
            .map(|p| came(p, true));
    };
    let mut leased = false;
    let mut from_origin = false;
    let mut repair = false;
    let got = store.produce(name, Rebuild::Never, producer, |stage| {
        let found = stage.attempt(|stage| match remote.find(stage, name, cancel)? {
            Found::Tree(tree) => match shape(&stage.tree_dir()) {
                Ok(()) => Ok(Found::Tree(tree)),
                Err(why) => Err(remote.err(
                    RemoteOp::Verify,
                    &keys::tree(&tree.id()),
                    format!("not the tree a {name} must be: {why}"),
                )),
            },
            miss => Ok(miss),
        })?;
        match found {
            Ok(Found::Tree(tree)) => return Ok(tree),
            Ok(Found::Miss { leased: l }) => leased = l,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                repair = matches!(
                    e,
                    Error::Remote {
                        op: RemoteOp::Verify,
                        ..
                    }
                );
                log::warn!("{}; using the origin", e.describe())
            }
        }
        from_origin = true;
        origin(stage)
    });
    match &got {
        Ok(p) if p.ingested && from_origin => remote.owe(name, p.id, leased, repair),
        _ if leased => remote.release(name),
        _ => {}
    }
    got.map(|p| came(p, from_origin))
}

/// Where a name's tree came from when it was produced reading through the fleet's remote (a
/// step's source, a git ref's tree, a Go build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Came {
    /// The local store had it: nothing was fetched.
    Store,
    /// The fleet's remote tier.
    Remote,
    /// The origin (a download, a clone, a build) in this process.
    Origin,
}

/// What a lookup of a name in the remote found.
pub(crate) enum Found {
    /// The tree is there: the producer ingested it as this id.
    Tree(crate::store::Tree),
    /// Not there; this process holds the lease (or there is no lease: a read-only remote).
    Miss { leased: bool },
}

/// A lease document: who downloads a name from the origin, until when (seconds since the epoch).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    expires_at: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Remote {
    /// Connects to the remote `settings` names. Nothing is requested yet.
    pub fn open(mut settings: Settings) -> Result<Remote> {
        let url = url::Url::parse(&settings.url).map_err(|_| Error::BadSetting {
            var: "STEPMAN_REMOTE",
            value: settings.url.clone(),
            expected: "a URL: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or https://host/path",
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::BadSetting {
                var: "STEPMAN_REMOTE",
                value: crate::credentials::redact(&settings.url),
                expected: "a URL without credentials (they come from the object store's own settings)",
            });
        }
        if url.scheme() == "http" {
            return Err(Error::BadSetting {
                var: "STEPMAN_REMOTE",
                value: settings.url.clone(),
                expected: "https:// (a plain http:// remote could hand out any name)",
            });
        }
        if client::read_only(&url) {
            settings.mode = Mode::Read;
        }
        Ok(Remote {
            client: std::sync::OnceLock::new(),
            url,
            settings,
            pending: Mutex::new(Vec::new()),
            refused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether this process may write to the remote: read-write, and no write refused yet.
    fn writes(&self) -> bool {
        self.settings.mode == Mode::ReadWrite
            && !self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes a write the store refused for this host's credentials (`403`, `401`): the first
    /// time, one warning, and from then on no lease, no upload (read-through only).
    fn note_denied(&self, f: &client::Failure) {
        if f.denied
            && !self
                .refused
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn!(
                "remote {}: it refuses this host's writes ({}); reading through only from now on \
                 (STEPMAN_REMOTE_MODE=read says so up front)",
                self.settings.url,
                f.reason
            );
        }
    }

    /// The client, connected on first use (a failure to connect is kept: one try per process).
    fn client(&self) -> Result<&client::Client> {
        let got = self
            .client
            .get_or_init(|| client::Client::open(&self.url, &self.settings).map_err(|f| f.reason));
        got.as_ref()
            .map_err(|reason| self.err(RemoteOp::Open, "", reason.clone()))
    }

    /// Its settings (no secrets among them).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn err(&self, op: RemoteOp, key: &str, reason: impl Into<String>) -> Error {
        Error::Remote {
            url: self.settings.url.clone(),
            op,
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// The tree id the remote name `name` claims; `None`: no such name.
    pub fn name_of(&self, name: &Name) -> Result<Option<ObjectId>> {
        let key = keys::name(name);
        let Some((body, _)) = self
            .client()?
            .get_small(&key, MAX_DOC)
            .map_err(|f| self.err(RemoteOp::GetName, &key, f.reason))?
        else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&body).unwrap_or("");
        match ObjectId::from_hex(text.trim_end_matches('\n')) {
            Some(id) => Ok(Some(id)),
            None => Err(self.err(
                RemoteOp::GetName,
                &key,
                "not a name document (one line: the tree's 64 hex digits)",
            )),
        }
    }

    /// Writes the tree `id` from the remote into `stage`: ingested as every archive is (vetted,
    /// hashed), and refused unless it hashes to `id`. `None`: the remote has no such tree.
    pub(crate) fn fetch_tree(
        &self,
        stage: &mut crate::store::Stage<'_>,
        id: &ObjectId,
        cancel: &AtomicBool,
    ) -> Result<Option<crate::store::Tree>> {
        let key = keys::tree(id);
        let shown = format!("{}/{key}", self.settings.url.trim_end_matches('/'));
        let got = self
            .client()?
            .get_stream(&key, cancel, |body| stage.ingest_stream(&shown, body))
            .map_err(|f| self.err(RemoteOp::GetTree, &key, f.reason))?;
        let tree = match got {
            None => return Ok(None),
            Some(Ok(Ok(tree))) => tree,
            Some(Ok(Err(why))) => return Err(self.err(RemoteOp::Verify, &key, why)),
            Some(Err(e)) => return Err(self.err(RemoteOp::Verify, &key, e.describe())),
        };
        if tree.id() != *id {
            return Err(self.err(
                RemoteOp::Verify,
                &key,
                format!("the tree hashes to {}, not to its name's id", tree.id()),
            ));
        }
        Ok(Some(tree))
    }

    /// Looks `name` up in the remote for a producer: its tree ingested into `stage` when the
    /// remote has it; else, on a writable remote, the lease taken (waiting, bounded, while
    /// another host holds it, for its name to appear). Errors are the remote's: the caller
    /// warns and uses the origin.
    pub(crate) fn find(
        &self,
        stage: &mut crate::store::Stage<'_>,
        name: &Name,
        cancel: &AtomicBool,
    ) -> Result<Found> {
        if let Some(id) = self.name_of(name)? {
            if let Some(tree) = self.fetch_tree(stage, &id, cancel)? {
                return Ok(Found::Tree(tree));
            }
            return Err(self.err(
                RemoteOp::Verify,
                &keys::tree(&id),
                format!("the name {name} names a tree the remote does not have"),
            ));
        }
        if !self.writes() {
            return Ok(Found::Miss { leased: false });
        }
        let deadline = std::time::Instant::now() + self.settings.wait;
        let mut pause = Duration::from_millis(50);
        loop {
            let lease = match self.take_lease(name) {
                // Refused for this host's credentials: read-through only, without a lease.
                Err(_) if !self.writes() => return Ok(Found::Miss { leased: false }),
                lease => lease?,
            };
            let expires = match lease {
                None => {
                    // Held now. A holder drops its lease only after its name is up, so the
                    // name may have appeared between the lookup above and this lease: look
                    // again, or a finished upload would be downloaded once more.
                    let id = match self.name_of(name) {
                        Ok(Some(id)) => id,
                        Ok(None) => return Ok(Found::Miss { leased: true }),
                        // Still the holder: it downloads, and drops the lease after.
                        Err(e) => {
                            log::warn!("{}; using the origin", e.describe());
                            return Ok(Found::Miss { leased: true });
                        }
                    };
                    self.release(name);
                    return match self.fetch_tree(stage, &id, cancel)? {
                        Some(tree) => Ok(Found::Tree(tree)),
                        None => Err(self.err(
                            RemoteOp::Verify,
                            &keys::tree(&id),
                            format!("the name {name} names a tree the remote does not have"),
                        )),
                    };
                }
                Some(expires) => expires,
            };
            // Another host downloads it: wait for its name, until its lease expires (then try
            // to take it over) or this host's patience ends (then download anyway).
            loop {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                if let Some(id) = self.name_of(name)?
                    && let Some(tree) = self.fetch_tree(stage, &id, cancel)?
                {
                    return Ok(Found::Tree(tree));
                }
                if std::time::Instant::now() >= deadline {
                    log::warn!(
                        "{name}: another host's download from the origin did not reach the remote within {}s; downloading here",
                        self.settings.wait.as_secs()
                    );
                    return Ok(Found::Miss { leased: false });
                }
                if now_secs() > expires {
                    break;
                }
            }
        }
    }

    /// Tries to take `name`'s lease: `None` when this process holds it now, `Some(expiry)` when
    /// another holds it until then. An expired lease is replaced conditionally on the version
    /// read, so of several hosts taking it over one does.
    fn take_lease(&self, name: &Name) -> Result<Option<u64>> {
        let key = keys::lease(name);
        let lease_err = |f: client::Failure| {
            self.note_denied(&f);
            self.err(RemoteOp::Lease, &key, f.reason)
        };
        let doc = || {
            serde_json::to_vec(&Lease {
                holder: holder(),
                expires_at: now_secs() + self.settings.lease_ttl.as_secs(),
            })
            .unwrap_or_default()
        };
        for _ in 0..3 {
            if self
                .client()?
                .put(&key, doc(), Put::Create)
                .map_err(lease_err)?
                == Put::Done
            {
                return Ok(None);
            }
            let Some((body, version)) =
                self.client()?.get_small(&key, MAX_DOC).map_err(lease_err)?
            else {
                continue; // dropped meanwhile: try to create it again
            };
            let expires = serde_json::from_slice::<Lease>(&body)
                .map(|l| l.expires_at)
                .unwrap_or(0);
            if now_secs() <= expires {
                return Ok(Some(expires));
            }
            match self.client()?.put(&key, doc(), Put::Replace(version)) {
                Ok(Put::Done) => return Ok(None),
                Ok(_) => continue,
                // A store without conditional replace: drop it and race for the create.
                Err(_) => self.client()?.delete(&key).map_err(lease_err)?,
            }
        }
        Ok(Some(now_secs() + 1))
    }

    /// Records that `name`'s tree `id` came from the origin here: [`Remote::flush`] uploads it.
    pub(crate) fn owe(&self, name: &Name, id: ObjectId, leased: bool, repair: bool) {
        if !self.writes() {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            p.push(Pending {
                name: name.clone(),
                id,
                leased,
                repair,
            });
        }
    }

    /// Drops `name`'s lease when this process holds it and will not upload (its download
    /// failed), so other hosts stop waiting.
    pub(crate) fn release(&self, name: &Name) {
        let key = keys::lease(name);
        match self.client().map(|c| c.delete(&key)) {
            Ok(Ok(())) => {}
            Ok(Err(f)) => log::warn!("{}", self.err(RemoteOp::Lease, &key, f.reason)),
            Err(e) => log::warn!("{}", e.describe()),
        }
    }

    /// Uploads what this process downloaded from the origin (trees first, then names, each
    /// create-only) and drops its leases. Run after the activation is complete; bounded by the
    /// remote's timeouts. Failures are in the outcomes, never an error.
    pub fn flush(&self, store: &Store) -> Vec<Uploaded> {
        let owed = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        owed.into_iter()
            .map(|p| {
                let outcome = self.upload(store, &p.name, &p.id, p.repair);
                if p.leased {
                    self.release(&p.name);
                }
                Uploaded {
                    name: p.name,
                    id: p.id,
                    outcome,
                }
            })
            .collect()
    }

    /// Puts `name` → `id` (and the tree first) unless the remote has the name; with `repair`
    /// (its tree was found missing or damaged), the tree is put again over what is there.
    fn upload(&self, store: &Store, name: &Name, id: &ObjectId, repair: bool) -> UploadOutcome {
        if self.settings.mode == Mode::Read {
            return UploadOutcome::Failed("the remote is read only".into());
        }
        if !self.writes() {
            return UploadOutcome::Failed("the remote refuses this host's writes".into());
        }
        match self.name_of(name) {
            Ok(Some(there)) if there == *id && !repair => return UploadOutcome::AlreadyThere,
            Ok(Some(there)) if there != *id => return UploadOutcome::Differs(there),
            Ok(_) => {}
            Err(e) => return UploadOutcome::Failed(e.describe()),
        }
        let tkey = keys::tree(id);
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return UploadOutcome::Failed(e.describe()),
        };
        // Another host may have put this tree already (two hosts racing for one step): then
        // only the name is left to put, and the archive is not built. A tree key holds the one
        // canonical archive of its id, so what is there is what we would put (a damaged one is
        // what `repair` is for). A failed check only costs the encoding.
        let tree_there = !repair && matches!(client.exists(&tkey), Ok(true));
        if !tree_there && let Err(f) = self.put_tree(store, client, &tkey, id, repair) {
            return f;
        }
        let nkey = keys::name(name);
        match client.put(
            &nkey,
            format!("{}\n", id.to_hex()).into_bytes(),
            Put::Create,
        ) {
            Ok(Put::Done) => UploadOutcome::Uploaded,
            Ok(_) => match self.name_of(name) {
                Ok(Some(there)) if there == *id => UploadOutcome::AlreadyThere,
                Ok(Some(there)) => UploadOutcome::Differs(there),
                Ok(None) => UploadOutcome::Failed("the name vanished after a put lost".into()),
                Err(e) => UploadOutcome::Failed(e.describe()),
            },
            Err(f) => {
                self.note_denied(&f);
                UploadOutcome::Failed(self.err(RemoteOp::PutName, &nkey, f.reason).describe())
            }
        }
    }

    /// Encodes object `id` and puts it at `tkey` (create-only, or over what is there when
    /// `repair`).
    ///
    /// The store lock (shared) is held only while the object is read: the archive is encoded
    /// into a spool (in memory up to one part, past that a file in a temp dir of the store's
    /// own, which sweep reclaims if this process dies), and the network upload runs after the
    /// lock is let go. A `gc` waiting for the lock (and every activation queued behind its
    /// intent) never waits for the network.
    fn put_tree(
        &self,
        store: &Store,
        client: &client::Client,
        tkey: &str,
        id: &ObjectId,
        repair: bool,
    ) -> std::result::Result<(), UploadOutcome> {
        let mode = if repair { Put::Overwrite } else { Put::Create };
        // A store this process cannot write to (a baked image) has no temp dir to give: the
        // spool then spills into the system's temp dir.
        let spill = store.temp_dir(crate::layout::TempKind::Upload).ok();
        let spool = store
            .read_locked(|| {
                let dir = store.layout().object_dir(id);
                let spool = match &spill {
                    Some(t) => tempfile::spooled_tempfile_in(PART, t.path()),
                    None => tempfile::spooled_tempfile(PART),
                };
                archive::encode(&dir, self.settings.max_tree, spool)
            })
            .map_err(|e| UploadOutcome::Failed(e.describe()))?;
        let put_failed = |reason: String| {
            UploadOutcome::Failed(self.err(RemoteOp::PutTree, tkey, reason).describe())
        };
        let put = match spool.into_inner() {
            tempfile::SpooledData::InMemory(bytes) => client.put(tkey, bytes.into_inner(), mode),
            tempfile::SpooledData::OnDisk(mut file) => std::io::Seek::rewind(&mut file)
                .map_err(|e| client::Failure {
                    reason: format!("rewind the spooled archive: {e}"),
                    denied: false,
                })
                .and_then(|()| client.upload_from(tkey, mode, &mut file)),
        };
        put.map(|_| ()).map_err(|f| {
            self.note_denied(&f);
            put_failed(f.reason)
        })
    }

    /// The names of `routes` in the local store that `remote push` uploads: every step
    /// version's source, and under `_git` every git ref's tree. The other names whose route or
    /// id starts with `_` are the store's own (collections, API documents, executables) or
    /// builds, which only the host that built one uploads (store-format.md §12).
    pub fn pushable(store: &Store, routes: &[String]) -> Result<Vec<Name>> {
        let mut names = Vec::new();
        // StepLib steps and git refs' trees; not builds (whether one links C is not in its
        // name: only the host that built it knows, and uploads it then), nor the store's own.
        let shared = |r: &&String| !r.starts_with('_') || r.as_str() == crate::layout::GIT_ROUTE;
        for route in routes.iter().filter(shared) {
            for (id, version) in store.names_in_route(route)? {
                if !id.starts_with('_') {
                    names.push(Name::new(route, &id, &version)?);
                }
            }
        }
        Ok(names)
    }

    /// Uploads the given names of the local store (`remote push`), [`PUSH_JOBS`] at a time; the
    /// outcomes come back in the order of `names`.
    pub fn push(&self, store: &Store, names: &[Name]) -> Vec<Uploaded> {
        use rayon::prelude::*;
        let one = |n: &Name| {
            let id = store.lookup(n).ok().flatten()?;
            Some(Uploaded {
                name: n.clone(),
                id,
                outcome: self.upload(store, n, &id, false),
            })
        };
        crate::jobs::in_pool(PUSH_JOBS, "remote push", || {
            names.par_iter().filter_map(one).collect()
        })
    }

    /// Checks every remote name (`remote verify`): its document reads and names an id, and that
    /// id's tree downloads, vets and hashes to it. Up to [`VERIFY_JOBS`] requests at once; a tree
    /// that several names share is fetched once. The names come back in the listing's order.
    pub fn verify(&self, store: &Store) -> Result<Verification> {
        use rayon::prelude::*;
        let prefix = keys::names();
        let listed = self
            .client()?
            .list(&prefix)
            .map_err(|f| self.err(RemoteOp::List, &prefix, f.reason))?;
        let names: Vec<(Name, String)> = listed
            .into_iter()
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix(&format!("{prefix}/"))?;
                match Name::parse(rest) {
                    Ok(name) => Some((name, key)),
                    Err(e) => {
                        log::warn!("{}", self.err(RemoteOp::List, &key, e.to_string()));
                        None
                    }
                }
            })
            .collect();
        // Every name's document, then each tree they name once.
        let (ids, checked) = crate::jobs::in_pool(VERIFY_JOBS, "remote verify", || {
            let ids: Vec<Result<ObjectId>> = names
                .par_iter()
                .map(|(name, key)| {
                    self.name_of(name)
                        .and_then(|o| o.ok_or_else(|| self.err(RemoteOp::GetName, key, "gone")))
                })
                .collect();
            let mut trees: Vec<ObjectId> = ids
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            trees.sort_unstable();
            trees.dedup();
            let checked: Vec<(ObjectId, Result<()>)> = trees
                .par_iter()
                .map(|id| (*id, self.verify_tree(store, id)))
                .collect();
            (ids, checked)
        });
        let checked_count = checked.len();
        let checked: std::collections::HashMap<ObjectId, std::sync::Arc<Error>> = checked
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, std::sync::Arc::new(e))))
            .collect();
        let mut damaged = Vec::new();
        for ((name, _), id) in names.iter().zip(ids) {
            let problem = match id {
                Err(e) => std::sync::Arc::new(e),
                Ok(id) => match checked.get(&id) {
                    Some(e) => e.clone(),
                    None => continue,
                },
            };
            damaged.push(Damaged {
                name: name.clone(),
                problem,
            });
        }
        Ok(Verification {
            names: names.len(),
            trees: checked_count,
            damaged,
        })
    }

    /// Checks the tree `id`: fetched and ingested into a temp dir of `store` (without flushing),
    /// it must hash to `id`.
    pub fn verify_tree(&self, store: &Store, id: &ObjectId) -> Result<()> {
        let cancel = AtomicBool::new(false);
        let got = store.scratch(|stage| self.fetch_tree(stage, id, &cancel))?;
        match got {
            Some(_) => Ok(()),
            None => Err(self.err(RemoteOp::GetTree, &keys::tree(id), "missing")),
        }
    }
}

/// Who holds a lease: host and process, for a person reading the document.
fn holder() -> String {
    format!("{}:{}", crate::sys::host_name(), std::process::id())
}

/// The remote configured by the environment (`STEPMAN_REMOTE`, `STEPMAN_REMOTE_MODE`, …) or by
/// `url` (`--remote`, which wins); `None` when neither names one.
pub fn from_env(url: Option<&str>) -> Result<Option<Settings>> {
    let url = match url {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => match std::env::var("STEPMAN_REMOTE") {
            Ok(u) if !u.is_empty() => u,
            _ => return Ok(None),
        },
    };
    let mut s = Settings::new(&url);
    if let Ok(m) = std::env::var("STEPMAN_REMOTE_MODE") {
        s.mode = match m.as_str() {
            "" | "read-write" => Mode::ReadWrite,
            "read" => Mode::Read,
            _ => {
                return Err(Error::BadSetting {
                    var: "STEPMAN_REMOTE_MODE",
                    value: m,
                    expected: "read or read-write",
                });
            }
        };
    }
    let secs = |var: &'static str, default: Duration| -> Result<Duration> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => {
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| Error::BadSetting {
                        var,
                        value: v,
                        expected: "a whole number of seconds",
                    })
            }
            _ => Ok(default),
        }
    };
    s.connect_timeout = secs("STEPMAN_REMOTE_CONNECT_TIMEOUT", s.connect_timeout)?;
    s.timeout = secs("STEPMAN_REMOTE_TIMEOUT", s.timeout)?;
    s.lease_ttl = secs("STEPMAN_REMOTE_LEASE_TTL", s.lease_ttl)?;
    s.wait = secs("STEPMAN_REMOTE_WAIT", s.wait)?;
    if let Ok(v) = std::env::var("STEPMAN_REMOTE_MAX_TREE")
        && !v.is_empty()
    {
        s.max_tree = v.parse().map_err(|_| Error::BadSetting {
            var: "STEPMAN_REMOTE_MAX_TREE",
            value: v,
            expected: "a number of bytes",
        })?;
    }
    Ok(Some(s))
}
