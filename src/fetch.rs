//! Getting bytes from elsewhere: HTTP(S) downloads, local `file://` URLs and paths, and `git`.
//!
//! Invariants:
//! - Only a `200` answer is success; the body must have exactly the announced Content-Length;
//!   a body larger than the caller's limit is refused while it streams.
//! - Every network operation has timeouts (connect, response headers, a per-read stall timeout)
//!   and a low-speed limit (fewer than `min_rate` bytes/s averaged over a `stall_timeout` window
//!   fails the attempt), so a server that stalls or drips cannot hang a CI job: one attempt
//!   lasts at most about two windows once the headers are in.
//! - Retries are bounded: `attempts` in all, for transient failures only (connection errors,
//!   timeouts, a short or slow body, `5xx`, `408`, `429`); never for another `4xx`, a refused
//!   redirect or a redirect loop. Pauses grow `250 ms << attempt`, capped at 8 s; a `Retry-After` (seconds)
//!   on `429`/`503` lengthens the pause, also capped at 8 s. Each attempt rewrites the
//!   destination from its start, so a body that changes between attempts is never mixed.
//! - Redirects are followed here, not by ureq: each target is vetted first. They stay on
//!   HTTP(S) (a redirect to `file://` or any other scheme is refused, so there is no way to reach
//!   a local file through one), never carry our `Authorization` header (to any host) nor a
//!   userinfo of their own, and at most 5 are followed per attempt (a loop fails, unretried).
//! - `git` never prompts (`GIT_TERMINAL_PROMPT=0`) and its checkout is verified against the
//!   commit the caller requires.
//! - Nothing here writes outside the destination the caller gives, which lies in the store's temp
//!   area.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io_words};
use crate::progress::Phase;

/// Network settings, from the environment (see README: "Network").
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest time without a byte from the server; also the window of the low-speed limit.
    pub stall_timeout: Duration,
    /// Low-speed limit, in bytes per second: an attempt whose body arrives slower than this on
    /// average over a whole [`NetConfig::stall_timeout`] window fails (and may be retried), like
    /// curl's `--speed-limit`/`--speed-time`. A server that drips a byte a second never trips
    /// the stall timeout; this ends it. `0` turns the limit off.
    pub min_rate: u64,
    /// Attempts in all when failures are transient (connection error, timeout, a short or too
    /// slow body, 5xx, 408, 429).
    pub attempts: u32,
    /// Forbid the network entirely.
    pub offline: bool,
    /// A credential for this call's URL when neither its userinfo nor a netrc has one (set only
    /// for the one fetch it belongs to).
    pub credential: Option<crate::credentials::Credential>,
    /// Set (by a signal handler, say) to stop: reads, retries and `git` notice it within a
    /// fraction of a second and fail with [`Error::Cancelled`]. Clones share the flag.
    pub cancel: Arc<AtomicBool>,
    /// Bytes received so far over every download made with this config (progress reports).
    pub received: Arc<AtomicU64>,
    /// Where clones, downloads, a collection's generation and `preload` report their progress
    /// (default: [`NoProgress`](crate::progress::NoProgress)). Clones share the reporter.
    pub progress: Arc<dyn crate::progress::Progress>,
    /// How long a StepLib API collection's cached documents answer before they are fetched
    /// again (`STEPMAN_API_INDEX_TTL`, `STEPMAN_API_INFO_TTL`).
    pub api_ttl: crate::steplib::ApiTtl,
    /// The fleet's remote tier (`STEPMAN_REMOTE`): step sources are looked up there before the
    /// origin, and what came from the origin is owed to it ([`crate::remote::Remote::flush`]).
    pub remote: Option<Arc<crate::remote::Remote>>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            min_rate: 1024,
            attempts: 3,
            offline: false,
            credential: None,
            cancel: Arc::default(),
            received: Arc::default(),
            progress: Arc::new(crate::progress::NoProgress),
            api_ttl: crate::steplib::ApiTtl::default(),
            remote: None,
        }
    }
}

impl NetConfig {
    /// Most attempts `STEPMAN_HTTP_ATTEMPTS` may ask for.
    pub const MAX_ATTEMPTS: u64 = 10;

    /// Reads `STEPMAN_HTTP_TIMEOUT` (whole seconds, at least 1: the stall timeout and
    /// low-speed window), `STEPMAN_HTTP_MIN_RATE` (bytes/s, the low-speed limit; `0` for none),
    /// `STEPMAN_HTTP_ATTEMPTS` (1 to [`NetConfig::MAX_ATTEMPTS`]) and
    /// `BITRISE_OFFLINE_MODE`/`STEPMAN_OFFLINE` (`true`/`false`/`1`/`0`/`yes`/`no`, any case).
    /// An empty value counts as unset; any other value a variable does not take is an
    /// [`Error::BadSetting`] naming it.
    pub fn from_env() -> Result<NetConfig> {
        let mut vars = Vec::new();
        for k in [
            "STEPMAN_HTTP_TIMEOUT",
            "STEPMAN_HTTP_MIN_RATE",
            "STEPMAN_HTTP_ATTEMPTS",
            "BITRISE_OFFLINE_MODE",
            "STEPMAN_OFFLINE",
            crate::steplib::ApiTtl::INDEX_VAR,
            crate::steplib::ApiTtl::INFO_VAR,
        ] {
            vars.push((k, crate::settings::get(k)?));
        }
        NetConfig::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.clone())
        })
    }

    /// [`NetConfig::from_env`] over any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<NetConfig> {
        use crate::settings::{flag, whole};
        let mut c = NetConfig::default();
        let timeout = get("STEPMAN_HTTP_TIMEOUT");
        if let Some(s) = whole(
            "STEPMAN_HTTP_TIMEOUT",
            timeout.as_deref(),
            1,
            u64::from(u32::MAX),
            "whole seconds, at least 1",
        )? {
            c.stall_timeout = Duration::from_secs(s);
            c.connect_timeout = c.connect_timeout.min(c.stall_timeout);
        }
        let rate = get("STEPMAN_HTTP_MIN_RATE");
        if let Some(r) = whole(
            "STEPMAN_HTTP_MIN_RATE",
            rate.as_deref(),
            0,
            u64::MAX,
            "whole bytes per second (0 for no limit)",
        )? {
            c.min_rate = r;
        }
        let attempts = get("STEPMAN_HTTP_ATTEMPTS");
        if let Some(n) = whole(
            "STEPMAN_HTTP_ATTEMPTS",
            attempts.as_deref(),
            1,
            NetConfig::MAX_ATTEMPTS,
            "a whole number of attempts from 1 to 10",
        )? {
            c.attempts = n as u32;
        }
        let bitrise = get("BITRISE_OFFLINE_MODE");
        let ours = get("STEPMAN_OFFLINE");
        c.offline = flag("BITRISE_OFFLINE_MODE", bitrise.as_deref())?.unwrap_or(false)
            | flag("STEPMAN_OFFLINE", ours.as_deref())?.unwrap_or(false);
        c.api_ttl = crate::steplib::ApiTtl::from_lookup(get)?;
        Ok(c)
    }

    /// Whether [`NetConfig::cancel`] is set.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once [`NetConfig::cancel`] is set.
    pub fn check_cancel(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Sleeps up to `d`, waking early (with `Err(Cancelled)`) when cancelled.
    fn pause(&self, d: Duration) -> Result<()> {
        let end = std::time::Instant::now() + d;
        loop {
            self.check_cancel()?;
            let now = std::time::Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Http(String),
    Local(PathBuf),
}

/// Classifies a URL: `http(s)://` is remote, `file://` and plain paths are local (relative ones
/// against `base`).
pub(crate) fn locate(url: &str, base: Option<&Path>) -> Result<Location> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Location::Http(url.to_string()));
    }
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(Location::Local(PathBuf::from(p)));
    }
    if lower.contains("://") {
        return Err(Error::Fetch {
            what: url.to_string(),
            reason: "unsupported URL scheme".into(),
        });
    }
    let p = Path::new(url);
    Ok(Location::Local(match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }))
}

fn agent(cfg: &NetConfig) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are followed by `http_once`, which vets each target; should one get through
        // anyway, it carries no credential.
        .max_redirects(0)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .timeout_connect(Some(cfg.connect_timeout))
        .timeout_recv_response(Some(cfg.stall_timeout))
        .timeout_per_read(Some(cfg.stall_timeout))
        .user_agent(concat!("stepman/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

/// Whether trying again may help after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// It may go away (a connection error, a timeout, a 5xx): try again, `attempts` in all.
    Transient,
    /// Trying again would fail the same way.
    Final,
}

impl Failure {
    fn transient_if(transient: bool) -> Failure {
        if transient {
            Failure::Transient
        } else {
            Failure::Final
        }
    }
}

/// Why one attempt failed, and whether trying again may help.
struct Attempt {
    reason: String,
    failure: Failure,
    /// The server's `Retry-After`, when it sent one in seconds.
    retry_after: Option<Duration>,
    /// The HTTP status that ended it, when one did (not 200).
    status: Option<u16>,
}

impl Attempt {
    fn new(reason: String, failure: Failure) -> Attempt {
        Attempt {
            reason,
            failure,
            retry_after: None,
            status: None,
        }
    }
}

/// Most redirects followed by one attempt.
const MAX_REDIRECTS: u32 = 5;

/// The scheme of `s` when it starts with one (`file:`, `http:`, …; RFC 3986 syntax).
fn scheme_of(s: &str) -> Option<&str> {
    let scheme = &s[..s.find(':')?];
    let mut b = scheme.bytes();
    let ok = b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    ok.then_some(scheme)
}

/// Where a redirect from `base` (an absolute `http(s)` URL) to `location` leads, as an absolute
/// URL without userinfo or fragment (RFC 3986 §5 resolution, as [`url::Url::join`] does it);
/// `Err` says why it is refused (no Location, one that cannot be resolved, or a scheme other
/// than `http(s)`).
fn redirect_target(base: &str, location: &str) -> std::result::Result<String, String> {
    let location = location.trim();
    if location.is_empty() {
        return Err("a redirect without a Location".into());
    }
    let shown = crate::credentials::redact(location);
    let base = url::Url::parse(base).map_err(|e| {
        format!(
            "cannot resolve a redirect from {}: {e}",
            crate::credentials::redact(base)
        )
    })?;
    let mut target = base
        .join(location)
        .map_err(|e| format!("a redirect to {shown} cannot be followed: {e}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!(
            "a redirect to {shown} is refused: only http(s) redirects are followed"
        ));
    }
    // A userinfo in the Location is dropped, never used; a fragment is never sent.
    let _ = target.set_username("");
    let _ = target.set_password(None);
    target.set_fragment(None);
    Ok(target.into())
}

/// Longest pause between two attempts, whatever the backoff or a `Retry-After` says.
const MAX_PAUSE: Duration = Duration::from_secs(8);

/// The pause before attempt `attempt` (1-based retries): `250 ms << attempt`, at least the
/// server's `Retry-After`, never more than [`MAX_PAUSE`].
fn pause_before(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = Duration::from_millis(250u64 << attempt.min(5));
    backoff.max(retry_after.unwrap_or_default()).min(MAX_PAUSE)
}

/// Whether a failure of the request itself (before any status) may go away on a retry:
/// connection and timeout trouble may; a bad URL, a redirect we refuse (another scheme) and
/// a redirect loop will not.
fn transient_error(e: &ureq::Error) -> Failure {
    Failure::transient_if(!matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::RedirectFailed
            | ureq::Error::TooManyRedirects
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::LargeResponseHeader(..)
    ))
}

/// Downloads `url` into the new file `dest`, refusing more than `max_bytes`. `what` names the
/// step or collection in errors. Returns the number of bytes.
pub(crate) fn download(
    url: &str,
    base: Option<&Path>,
    dest: &Path,
    max_bytes: u64,
    what: &str,
    cfg: &NetConfig,
) -> Result<u64> {
    let target = Target::new(url, what, cfg);
    let fail = |reason: String| target.fail(reason);
    match locate(&target.shown, base)? {
        Location::Local(p) => {
            let mut from =
                File::open(&p).map_err(|e| fail(format!("open {}: {e}", p.display())))?;
            let mut to = create(dest)?;
            let total = from.metadata().ok().map(|m| m.len());
            cfg.progress.phase(Phase::Download {
                what: what.to_string(),
                url: target.shown.clone(),
                total,
            });
            let n = copy_limited(&mut from, &mut to, max_bytes, None, total, cfg)
                .map_err(|e| cancel_or(cfg, || fail(e.to_string())))?;
            Ok(n)
        }
        Location::Http(u) => {
            let agent = agent(cfg);
            retrying(&u, what, cfg, fail, || {
                let get = target.get(&u, max_bytes);
                Ok(http_once_cancellable(&agent, get, dest.to_path_buf(), cfg))
            })
        }
    }
}

/// [`download`] of a document that may not exist: a final answer of 404 or 410 is `Ok(None)`
/// (no such document), every other failure an error as [`download`]'s.
pub(crate) fn download_optional(
    url: &str,
    dest: &Path,
    max_bytes: u64,
    what: &str,
    cfg: &NetConfig,
) -> Result<Option<u64>> {
    let target = Target::new(url, what, cfg);
    let fail = |reason: String| target.fail(reason);
    match locate(&target.shown, None)? {
        Location::Local(p) => match std::fs::metadata(&p) {
            Err(e) if crate::sys::is_not_found(&e) => Ok(None),
            _ => download(url, None, dest, max_bytes, what, cfg).map(Some),
        },
        Location::Http(u) => {
            let agent = agent(cfg);
            retrying(&u, what, cfg, fail, || {
                let get = target.get(&u, max_bytes);
                Ok(
                    match http_once_cancellable(&agent, get, dest.to_path_buf(), cfg) {
                        Err(a) if matches!(a.status, Some(404 | 410)) => Ok(None),
                        other => other.map(Some),
                    },
                )
            })
        }
    }
}

/// Runs `once` (one attempt at `url`) until it succeeds, fails for good, or `cfg.attempts` were
/// made, pausing between attempts (`pause_before`). `once`'s own error (not an [`Attempt`]) ends
/// the tries at once. Refuses at once in offline mode.
fn retrying<T>(
    url: &str,
    what: &str,
    cfg: &NetConfig,
    fail: impl Fn(String) -> Error,
    mut once: impl FnMut() -> Result<std::result::Result<T, Attempt>>,
) -> Result<T> {
    if cfg.offline {
        return Err(fail("offline mode forbids the network".into()));
    }
    let mut last = String::new();
    let mut retry_after = None;
    for attempt in 0..cfg.attempts {
        if attempt > 0 {
            cfg.pause(pause_before(attempt, retry_after))?;
            log::info!("{what}: retrying {url} ({last})");
        }
        cfg.check_cancel()?;
        match once()? {
            Ok(n) => return Ok(n),
            Err(_) if cfg.cancelled() => return Err(Error::Cancelled),
            Err(a) if a.failure == Failure::Transient => {
                last = a.reason;
                retry_after = a.retry_after;
            }
            Err(a) => return Err(fail(a.reason)),
        }
    }
    Err(fail(format!("{last} (after {} attempts)", cfg.attempts)))
}

/// Downloads the http(s) URL `url` (as [`locate`] gave it) and hands its body to `consume` as
/// it arrives: no file of it is written (an archive is ingested in the same pass). The body is
/// read on a thread of its own and passed on in chunks through a short queue (at most
/// `STREAM_QUEUE` chunks of at most 256 KiB in memory), with the same limits, retries, progress
/// and cancellation as [`download`]. Each attempt calls `consume` afresh on a body that starts
/// from its first byte: when the body fails part-way (a dropped connection, a short body), what
/// `consume` made of it is dropped and, if the failure is transient, the next attempt starts
/// over; an error of `consume`'s own ends the download with it. After `consume` returns, the
/// rest of the body is read (and checked) to its end.
pub(crate) fn stream<T>(
    url: &str,
    max_bytes: u64,
    what: &str,
    cfg: &NetConfig,
    mut consume: impl FnMut(&mut dyn io::BufRead) -> Result<T>,
) -> Result<T> {
    let target = Target::new(url, what, cfg);
    let fail = |reason: String| target.fail(reason);
    let agent = agent(cfg);
    retrying(&target.shown, what, cfg, fail, || {
        use std::sync::mpsc::sync_channel;
        let get = target.get(&target.shown, max_bytes);
        let (tx, rx) = sync_channel(STREAM_QUEUE);
        let (agent, c) = (agent.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("stepman-http".into())
            .spawn(move || {
                let mut sink = ChunkSink { tx: tx.clone() };
                let end = http_body(&agent, &get, &c, &mut sink);
                let _ = tx.send(Chunk::End(end));
            })
            .map_err(|e| fail(format!("starting a download thread: {e}")))?;
        let mut body = Body {
            rx,
            chunk: Vec::new(),
            at: 0,
            ended: false,
            failed: None,
            cfg,
        };
        // Nothing to hand on before the request has succeeded.
        if let Err(e) = io::BufRead::fill_buf(&mut body) {
            return match body.failed.take() {
                Some(a) => Ok(Err(a)),
                None => Err(cancel_or(cfg, || fail(e.to_string()))),
            };
        }
        let got = consume(&mut body);
        if let Some(a) = body.failed.take() {
            return Ok(Err(a));
        }
        if cfg.cancelled() {
            return Err(Error::Cancelled);
        }
        let got = got?;
        loop {
            match io::BufRead::fill_buf(&mut body) {
                Ok([]) => return Ok(Ok(got)),
                Ok(b) => {
                    let n = b.len();
                    io::BufRead::consume(&mut body, n);
                }
                Err(e) => {
                    return match body.failed.take() {
                        Some(a) => Ok(Err(a)),
                        None => Err(cancel_or(cfg, || fail(e.to_string()))),
                    };
                }
            }
        }
    })
}

/// Chunks of a streamed body waiting for the reader: a bound on the memory a fast server and a
/// slow disk can fill.
const STREAM_QUEUE: usize = 16;

/// What the thread of a streamed download passes on: a chunk of the body, or how it ended.
enum Chunk {
    Data(Vec<u8>),
    End(std::result::Result<u64, Attempt>),
}

/// The body's bytes, as the download thread writes them, into the queue.
struct ChunkSink {
    tx: std::sync::mpsc::SyncSender<Chunk>,
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Chunk::Data(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streamed body, read from the queue. A failure of the download (not of the reader) is kept
/// in `failed`, and every read after it fails too.
struct Body<'c> {
    rx: std::sync::mpsc::Receiver<Chunk>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
    failed: Option<Attempt>,
    cfg: &'c NetConfig,
}

impl io::BufRead for Body<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        use std::sync::mpsc::RecvTimeoutError;
        while self.at == self.chunk.len() && !self.ended {
            if let Some(a) = &self.failed {
                return Err(io::Error::other(a.reason.clone()));
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Chunk::Data(d)) => {
                    self.chunk = d;
                    self.at = 0;
                }
                Ok(Chunk::End(Ok(_))) => self.ended = true,
                Ok(Chunk::End(Err(a))) => self.failed = Some(a),
                // Not `ErrorKind::Interrupted`: readers (`read_exact`, `io::copy`, decoders)
                // retry on that, and a cancelled download would never end.
                Err(RecvTimeoutError::Timeout) if self.cfg.cancelled() => {
                    return Err(io::Error::other("cancelled"));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.failed = Some(Attempt::new(
                        "the download thread died".into(),
                        Failure::Final,
                    ));
                }
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, amt: usize) {
        self.at = (self.at + amt).min(self.chunk.len());
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = io::BufRead::fill_buf(self)?;
        let n = got.len().min(buf.len());
        buf[..n].copy_from_slice(&got[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

fn create(dest: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(Error::io("create", dest))
}

/// [`http_once`] on a thread of its own, so that cancellation is noticed within 50 ms even while
/// the attempt is blocked (connecting, waiting for headers, or in a read that stalls until the
/// stall timeout). A cancelled attempt's thread is left to finish or time out on its own; it
/// only ever writes `dest`, inside the caller's temp dir, which the caller removes.
fn http_once_cancellable(
    agent: &ureq::Agent,
    get: Get,
    dest: PathBuf,
    cfg: &NetConfig,
) -> std::result::Result<u64, Attempt> {
    use std::sync::mpsc::{RecvTimeoutError, sync_channel};
    let (tx, rx) = sync_channel(1);
    let (agent, c) = (agent.clone(), cfg.clone());
    std::thread::Builder::new()
        .name("stepman-http".into())
        .spawn(move || {
            let _ = tx.send(http_once(&agent, &get, &dest, &c));
        })
        .map_err(|e| Attempt::new(format!("starting a download thread: {e}"), Failure::Final))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Timeout) if cfg.cancelled() => {
                return Err(Attempt::new("cancelled".into(), Failure::Final));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Attempt::new(
                    "the download thread died".into(),
                    Failure::Final,
                ));
            }
        }
    }
}

/// A download's URL as messages show it (its userinfo taken out), the credential that goes with
/// it (the URL's own, else the configured one), and what it is for.
struct Target {
    shown: String,
    cred: Option<crate::credentials::Credential>,
    what: String,
}

impl Target {
    fn new(url: &str, what: &str, cfg: &NetConfig) -> Target {
        let (shown, cred) = crate::credentials::for_url(url);
        Target {
            shown,
            cred: cred.or_else(|| cfg.credential.clone()),
            what: what.to_string(),
        }
    }

    /// The error of this download failing for `reason`.
    fn fail(&self, reason: String) -> Error {
        Error::Fetch {
            what: format!("{}: {}", self.what, self.shown),
            reason,
        }
    }

    /// One attempt's GET of `url` (this target as [`locate`] gave it).
    fn get(&self, url: &str, max_bytes: u64) -> Get {
        Get {
            url: url.to_string(),
            cred: self.cred.clone(),
            max_bytes,
            what: self.what.clone(),
        }
    }
}

/// One HTTP GET of a download attempt: where from, with which credential, and at most how many
/// bytes.
struct Get {
    url: String,
    cred: Option<crate::credentials::Credential>,
    max_bytes: u64,
    /// What the download is for, for progress reports.
    what: String,
}

/// [`http_body`] into the new file `dest`, flushed.
fn http_once(
    agent: &ureq::Agent,
    get: &Get,
    dest: &Path,
    cfg: &NetConfig,
) -> std::result::Result<u64, Attempt> {
    let mut to = create(dest).map_err(|e| Attempt::new(e.describe(), Failure::Final))?;
    let n = http_body(agent, get, cfg, &mut to)?;
    crate::sys::sync_file(&to).map_err(|e| {
        Attempt::new(
            format!("fsync {}: {}", dest.display(), io_words(&e)),
            Failure::Final,
        )
    })?;
    Ok(n)
}

/// One HTTP GET of an attempt: follows redirects, checks the status and the length, and copies
/// the body into `to`. Its number of bytes.
fn http_body(
    agent: &ureq::Agent,
    get: &Get,
    cfg: &NetConfig,
    to: &mut impl Write,
) -> std::result::Result<u64, Attempt> {
    let max_bytes = get.max_bytes;
    let mut url = get.url.clone();
    let mut cred = get.cred.as_ref();
    let mut hops = 0;
    let mut resp = loop {
        let mut req = agent.get(&url);
        if let Some(c) = cred {
            req = req.header("Authorization", c.basic_header());
        }
        let resp = req
            .call()
            .map_err(|e| Attempt::new(ureq_words(&e), transient_error(&e)))?;
        if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            break resp;
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(Attempt::new(
                format!("too many redirects (more than {MAX_REDIRECTS}; a loop?)"),
                Failure::Final,
            ));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Without the Location's userinfo, if it had one.
        url = redirect_target(&url, location).map_err(|r| Attempt::new(r, Failure::Final))?;
        // The credential belongs to the URL we were given: a redirect never carries it.
        cred = None;
    };
    let status = resp.status().as_u16();
    let via = if hops > 0 {
        format!(" (redirected to {url})")
    } else {
        String::new()
    };
    if status != 200 {
        // Seconds only; an HTTP-date is ignored (the backoff applies).
        let retry_after = matches!(status, 429 | 503)
            .then(|| resp.headers().get("retry-after"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(MAX_PAUSE.as_secs())));
        return Err(Attempt {
            reason: format!("HTTP {status}{via}"),
            failure: Failure::transient_if(status >= 500 || status == 429 || status == 408),
            retry_after,
            status: Some(status),
        });
    }
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > max_bytes
    {
        return Err(Attempt::new(
            format!("Content-Length {n} exceeds the limit of {max_bytes}"),
            Failure::Final,
        ));
    }
    let mut body = resp.body_mut().as_reader();
    let speed = LowSpeed::new(cfg);
    // Each attempt is a new phase: its bytes count from zero.
    cfg.progress.phase(Phase::Download {
        what: get.what.clone(),
        url: crate::credentials::redact(&url),
        total: declared,
    });
    let n = copy_limited(&mut body, to, max_bytes, speed, declared, cfg).map_err(|e| {
        Attempt::new(
            format!("reading the body: {}", io_words(&e)),
            Failure::transient_if(e.kind() != io::ErrorKind::InvalidData),
        )
    })?;
    if let Some(d) = declared
        && d != n
    {
        return Err(Attempt::new(
            format!("body has {n} bytes, Content-Length said {d}"),
            Failure::Transient,
        ));
    }
    Ok(n)
}

/// The error for a failure that happened because the operation was cancelled, else `other()`.
fn cancel_or(cfg: &NetConfig, other: impl FnOnce() -> Error) -> Error {
    if cfg.cancelled() {
        Error::Cancelled
    } else {
        other()
    }
}

/// The low-speed limit's state: bytes seen since the current window began.
struct LowSpeed {
    window: Duration,
    min_rate: u64,
    start: Instant,
    bytes: u64,
}

impl LowSpeed {
    /// The limit of `cfg`, starting now; `None` when it is off.
    fn new(cfg: &NetConfig) -> Option<LowSpeed> {
        (cfg.min_rate > 0).then(|| LowSpeed {
            window: cfg.stall_timeout,
            min_rate: cfg.min_rate,
            start: Instant::now(),
            bytes: 0,
        })
    }

    /// Counts `n` more bytes; once a whole window has passed, fails if it averaged less than
    /// the limit, else starts the next window.
    fn record(&mut self, n: u64) -> io::Result<()> {
        self.bytes += n;
        let elapsed = self.start.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64();
        if rate < self.min_rate as f64 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "too slow: {} bytes in {:.1} s, below the minimum of {} bytes/s \
                     (STEPMAN_HTTP_MIN_RATE)",
                    self.bytes,
                    elapsed.as_secs_f64(),
                    self.min_rate
                ),
            ));
        }
        self.start = Instant::now();
        self.bytes = 0;
        Ok(())
    }
}

fn copy_limited(
    from: &mut impl Read,
    to: &mut impl Write,
    max: u64,
    mut speed: Option<LowSpeed>,
    length: Option<u64>,
    cfg: &NetConfig,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        if cfg.cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(s) = speed.as_mut() {
            s.record(n as u64)?;
        }
        total += n as u64;
        cfg.received.fetch_add(n as u64, Ordering::Relaxed);
        cfg.progress.bytes(n as u64, length);
        if total > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the limit of {max} bytes"),
            ));
        }
        to.write_all(&buf[..n])?;
    }
}

/// What a ureq error says: an I/O error in words ([`io_words`], without `io:` and
/// `(os error N)`), anything else as ureq says it.
fn ureq_words(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io_words(io),
        other => other.to_string(),
    }
}

/// Runs `cmd` to its end, killing it when `cfg` is cancelled (its output goes to pipes that are
/// drained on threads, so a chatty child cannot block).
fn run_cancellable(
    mut cmd: Command,
    cfg: &NetConfig,
) -> std::result::Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running git: {}", io_words(&e)))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if cfg.cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cancelled".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for git: {}", io_words(&e))),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Which transports a `git` clone may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitTransports {
    /// The network only: `https`, `http`, `ssh` and `git`. What a remote StepLib gets.
    Network,
    /// The network and this machine's repositories (`file://` and paths): only for a StepLib
    /// on this machine, or a URL the user gave on the command line.
    NetworkAndLocal,
}

impl GitTransports {
    /// git's names of the protocols allowed (`protocol.<name>.allow`, `GIT_ALLOW_PROTOCOL`).
    fn protocols(self) -> &'static [&'static str] {
        match self {
            GitTransports::Network => &["https", "http", "ssh", "git"],
            GitTransports::NetworkAndLocal => &["https", "http", "ssh", "git", "file"],
        }
    }
}

/// Where a git URL leads, read the way git reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitUrl {
    /// Another machine: `https://`, `http://`, `ssh://`, `git://` or scp-like `[user@]host:path`.
    Network,
    /// This machine: `file://` or a path.
    Local,
}

/// Why [`classify_git_url`] refuses a git URL, whatever the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GitUrlRefusal {
    #[error("an empty git URL")]
    Empty,
    #[error("a git URL may not start with '-'")]
    LeadingDash,
    #[error("a git URL may not contain control characters")]
    ControlCharacter,
    /// A `<helper>::` prefix (the helper's name).
    #[error("git remote helpers ({0}::) are not allowed")]
    RemoteHelper(String),
    #[error("a git host or user may not start with '-'")]
    DashHost,
    /// A scheme that is no git transport we use (lowercased).
    #[error("{}", unknown_scheme(.0))]
    Scheme(String),
}

/// The message of [`GitUrlRefusal::Scheme`]: the scheme, and the ones accepted.
fn unknown_scheme(scheme: &str) -> String {
    format!(
        "unknown URL scheme {scheme}:// (accepted: {}://, file:// or a path, or git's \
         [user@]host:path)",
        GIT_NETWORK_SCHEMES.join("://, ")
    )
}

/// The URL schemes of the git transports over the network that [`classify_git_url`] accepts
/// (with `file://`, the local one).
pub(crate) const GIT_NETWORK_SCHEMES: &[&str] =
    &["https", "http", "ssh", "git", "git+ssh", "ssh+git"];

/// Classifies a git URL as git would (a `<helper>::` prefix first, then `<scheme>://`, then the
/// scp-like `host:path` when a `:` comes before any `/`, else a path). `Err` says why it is
/// refused whatever the caller: remote helpers (`ext::`, `fd::`, …) run commands or use
/// descriptors, other schemes are not git transports we use, and a URL or host starting with
/// `-` could be read as an option by git or ssh.
pub(crate) fn classify_git_url(url: &str) -> std::result::Result<GitUrl, GitUrlRefusal> {
    if url.is_empty() {
        return Err(GitUrlRefusal::Empty);
    }
    if url.starts_with('-') {
        return Err(GitUrlRefusal::LeadingDash);
    }
    if url.chars().any(char::is_control) {
        return Err(GitUrlRefusal::ControlCharacter);
    }
    let helper_end = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(url.len());
    if helper_end > 0 && url[helper_end..].starts_with("::") {
        return Err(GitUrlRefusal::RemoteHelper(url[..helper_end].to_string()));
    }
    let host_ok = |authority: &str| {
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if authority.starts_with('-') || host.starts_with('-') {
            Err(GitUrlRefusal::DashHost)
        } else {
            Ok(GitUrl::Network)
        }
    };
    if let Some((scheme, rest)) = url.split_once("://")
        && scheme_of(url).is_some_and(|s| s.len() == scheme.len())
    {
        return match scheme.to_ascii_lowercase().as_str() {
            s if GIT_NETWORK_SCHEMES.contains(&s) => {
                host_ok(rest.split('/').next().unwrap_or_default())
            }
            "file" => Ok(GitUrl::Local),
            other => Err(GitUrlRefusal::Scheme(other.to_string())),
        };
    }
    match (url.find(':'), url.find('/')) {
        // git's scp-like syntax: `[user@]host:path` (a `/` before the `:` makes it a path).
        (Some(colon), slash) if slash.is_none_or(|s| colon < s) => host_ok(&url[..colon]),
        _ => Ok(GitUrl::Local),
    }
}

/// How much history a clone fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloneDepth {
    /// The tip only (`--depth 1`): what every clone tries first.
    Shallow,
    /// All of it: for a server that cannot serve a shallow clone (git's dumb HTTP protocol,
    /// static files), or a commit that is not at the tip of any branch or tag.
    Full,
}

/// The `git` command for `url`-facing work: no prompt, and the protocol allow-list of
/// `transports` set three ways so that no configuration or environment of the user's widens it
/// (`-c protocol.*` on the command line, which beats every config file and `GIT_CONFIG_COUNT`;
/// `GIT_ALLOW_PROTOCOL`, which git checks over any config; and `GIT_PROTOCOL_FROM_USER=0`).
/// `inherited_config` is the environment's `GIT_CONFIG_COUNT` ([`inherited_git_config`]); a
/// credential is added after those entries, as an `http.extraHeader`.
fn git_command(
    cred: Option<&crate::credentials::Credential>,
    transports: GitTransports,
    inherited_config: usize,
) -> Command {
    let allowed = transports.protocols();
    let mut cmd = Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_ALLOW_PROTOCOL", allowed.join(":"))
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .args(["-c", "advice.detachedHead=false"])
        .args(["-c", "protocol.allow=never"]);
    for p in allowed {
        cmd.arg("-c").arg(format!("protocol.{p}.allow=always"));
    }
    cmd.args(["-c", "submodule.recurse=false"]);
    // A credential goes through the environment: never into .git/config, argv or the remote
    // URL on disk. After the `GIT_CONFIG_*` entries the environment already has (the user's),
    // which stay: they cannot widen the protocols, `-c` and `GIT_ALLOW_PROTOCOL` win over them.
    if let Some(c) = cred {
        let i = inherited_config;
        cmd.env("GIT_CONFIG_COUNT", (i + 1).to_string())
            .env(format!("GIT_CONFIG_KEY_{i}"), "http.extraHeader")
            .env(
                format!("GIT_CONFIG_VALUE_{i}"),
                format!("Authorization: {}", c.basic_header()),
            );
    }
    cmd
}

/// The `git clone` command for `url` (already vetted) into `dest` ([`git_command`]), `depth`
/// deep. Submodules are never cloned (no `--recurse-submodules`, and `submodule.recurse` does
/// not apply to clone); the allow-list would cover them too.
fn clone_command(
    url: &str,
    tag: Option<&str>,
    cred: Option<&crate::credentials::Credential>,
    dest: &Path,
    transports: GitTransports,
    inherited_config: usize,
    how: CloneOpts,
) -> Command {
    let CloneOpts { depth, shape } = how;
    let mut cmd = git_command(cred, transports, inherited_config);
    cmd.args(["clone", "--quiet"]);
    if shape == CloneShape::Mirror {
        // A kept mirror: no work tree, and nothing in it writable by group or others whatever
        // the umask (the store's rule, `store-format.md` section 1).
        cmd.args(["--bare", "--config", "core.sharedRepository=0644"]);
    }
    // A full clone keeps its tags: over git's dumb HTTP protocol, `--no-tags` hides the tag
    // `--branch` names ("Remote branch … not found").
    if depth == CloneDepth::Shallow {
        cmd.args(["--depth", "1", "--no-tags"]);
    }
    if let Some(t) = tag {
        cmd.args(["--branch", t]);
    }
    cmd.arg("--").arg(url).arg(dest);
    cmd
}

/// How a clone is made: how deep, and what it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CloneOpts {
    depth: CloneDepth,
    shape: CloneShape,
}

/// What a clone makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloneShape {
    /// A work tree with its `.git`.
    Checkout,
    /// A bare repository (a collection's kept mirror).
    Mirror,
}

/// How many `GIT_CONFIG_KEY_<n>` entries the environment gives git (`GIT_CONFIG_COUNT`; 0 when
/// unset or not a number, and then ours replace it).
fn inherited_git_config() -> usize {
    std::env::var("GIT_CONFIG_COUNT")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// What an HTTP(S) git server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpGit {
    /// git's smart protocol (`git http-backend` and every hosting service): shallow clones work.
    Smart,
    /// git's dumb protocol: a bare repository served as static files (after
    /// `git update-server-info`). It cannot clone shallow.
    Dumb,
    /// Neither could be told (no answer, not `200`, not HTTP).
    Unknown,
}

/// The HTTP(S) URLs found to be dumb servers in this process ([`HttpGit::Dumb`]): each is
/// detected once, and later clones of it go straight to a full clone.
static DUMB_HTTP: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn known_dumb(url: &str) -> bool {
    DUMB_HTTP
        .lock()
        .map(|v| v.iter().any(|u| u == url))
        .unwrap_or(false)
}

fn remember_dumb(url: &str) {
    if let Ok(mut v) = DUMB_HTTP.lock()
        && !v.iter().any(|u| u == url)
    {
        v.push(url.to_string());
    }
}

fn is_http(url: &str) -> bool {
    scheme_of(url)
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
}

/// Asks the server of `url` what it speaks, as git does first: `GET
/// <url>/info/refs?service=git-upload-pack` answered with the content type
/// `application/x-git-upload-pack-advertisement` is a smart server; a `200` with anything else
/// (the plain `info/refs` file) a dumb one.
pub(crate) fn probe_http_git(
    url: &str,
    cred: Option<&crate::credentials::Credential>,
    cfg: &NetConfig,
) -> HttpGit {
    if !is_http(url) || cfg.offline {
        return HttpGit::Unknown;
    }
    let probe = format!(
        "{}/info/refs?service=git-upload-pack",
        url.trim_end_matches('/')
    );
    let mut req = agent(cfg).get(&probe);
    if let Some(c) = cred {
        req = req.header("Authorization", c.basic_header());
    }
    match req.call() {
        Ok(resp) if resp.status().as_u16() == 200 => {
            let smart = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| {
                    t.trim()
                        .to_ascii_lowercase()
                        .starts_with("application/x-git-upload-pack-advertisement")
                });
            if smart { HttpGit::Smart } else { HttpGit::Dumb }
        }
        _ => HttpGit::Unknown,
    }
}

/// Most lines of git's stderr kept in an error ([`git_stderr_summary`]).
const GIT_STDERR_LINES: usize = 4;
/// Most characters of one such line.
const GIT_STDERR_LINE_CHARS: usize = 240;

/// What a failed git said, for an error: its `fatal:`, `error:`, `remote:` and `ssh:` lines (the
/// cause, such as ssh's `connect to host … Connection refused`, comes before git's last line),
/// at most [`GIT_STDERR_LINES`] of them, each cut to [`GIT_STDERR_LINE_CHARS`] characters,
/// joined by `; `. Without any such line, the last non-empty line; without that, `default`.
/// The one place git's stderr is summarised.
fn git_stderr_summary(stderr: &[u8], default: &str) -> String {
    let err = String::from_utf8_lossy(stderr);
    let cut = |l: &str| -> String {
        let l = l.trim();
        match l.char_indices().nth(GIT_STDERR_LINE_CHARS) {
            Some((i, _)) => format!("{}…", &l[..i]),
            None => l.to_string(),
        }
    };
    let mut kept: Vec<String> = Vec::new();
    for l in err.lines().map(str::trim) {
        let lower = l.to_ascii_lowercase();
        let wanted = ["fatal:", "error:", "remote:", "ssh:"]
            .iter()
            .any(|p| lower.starts_with(p))
            && l.len() > l.find(':').map_or(0, |i| i + 1);
        let l = cut(l);
        if wanted && !kept.contains(&l) {
            kept.push(l);
        }
    }
    if kept.len() > GIT_STDERR_LINES {
        // The first lines name the cause, the last one what git concluded.
        let last = kept.pop().unwrap_or_default();
        kept.truncate(GIT_STDERR_LINES - 1);
        kept.push(last);
    }
    if kept.is_empty() {
        return err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or_else(|| default.to_string(), cut);
    }
    kept.join("; ")
}

/// A git URL as one clone sees it: without its userinfo, with the credential that goes with
/// it, vetted against `transports` and offline mode.
struct Remote<'a> {
    url: String,
    cred: Option<crate::credentials::Credential>,
    what: &'a str,
    transports: GitTransports,
    cfg: &'a NetConfig,
}

impl<'a> Remote<'a> {
    fn new(
        url: &str,
        what: &'a str,
        transports: GitTransports,
        cfg: &'a NetConfig,
    ) -> Result<Remote<'a>> {
        let (url, cred) = crate::credentials::for_url(url);
        let cred = cred.or_else(|| cfg.credential.clone());
        let r = Remote {
            url,
            cred,
            what,
            transports,
            cfg,
        };
        let kind = classify_git_url(&r.url).map_err(|e| r.fail(e.to_string()))?;
        if kind == GitUrl::Local && transports == GitTransports::Network {
            return Err(r.fail(
                "a local repository is not allowed here (only https, http, ssh and git)".into(),
            ));
        }
        if cfg.offline && kind != GitUrl::Local {
            return Err(r.fail("offline mode forbids the network".into()));
        }
        Ok(r)
    }

    /// An error about this remote: `what` (the step or collection), and the URL unless `what`
    /// names it already (a collection is named by its URL: once is enough).
    fn fail(&self, reason: String) -> Error {
        let what = if self.what.contains(&self.url) {
            self.what.to_string()
        } else {
            format!("{}: git {}", self.what, self.url)
        };
        Error::Fetch { what, reason }
    }

    fn command(&self) -> Command {
        git_command(self.cred.as_ref(), self.transports, inherited_git_config())
    }

    /// Runs `cmd`: `Ok(Err(what git said))` when git failed ([`git_stderr_summary`]).
    fn run(&self, cmd: Command) -> Result<std::result::Result<Vec<u8>, String>> {
        let out =
            run_cancellable(cmd, self.cfg).map_err(|e| cancel_or(self.cfg, || self.fail(e)))?;
        Ok(if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(git_stderr_summary(&out.stderr, "git failed"))
        })
    }

    /// Whether a failed shallow fetch (its stderr line `line`) means that the server cannot
    /// do shallow: git says so for its dumb HTTP protocol, in English; otherwise the server is
    /// asked ([`probe_http_git`]). Remembered for the URL.
    fn cannot_do_shallow(&self, line: &str) -> bool {
        let dumb = is_http(&self.url)
            && (line.contains("does not support shallow")
                || probe_http_git(&self.url, self.cred.as_ref(), self.cfg) == HttpGit::Dumb);
        if dumb {
            remember_dumb(&self.url);
        }
        dumb
    }

    /// The depth to try first: shallow, unless the URL is known to be a dumb server.
    fn first_depth(&self) -> CloneDepth {
        if is_http(&self.url) && known_dumb(&self.url) {
            CloneDepth::Full
        } else {
            CloneDepth::Shallow
        }
    }

    /// Says in the log how the clone was made.
    fn log_depth(&self, depth: CloneDepth) {
        match depth {
            CloneDepth::Shallow => {
                log::info!("{}: git {}: shallow clone (depth 1)", self.what, self.url);
            }
            CloneDepth::Full => log::warn!(
                "{}: git {}: full clone (the server speaks git's dumb HTTP protocol, which \
                 cannot clone shallow)",
                self.what,
                self.url
            ),
        }
    }

    /// Clones into `dest` (at `tag`), shallow where the server can, else in full; says which.
    fn clone(&self, tag: Option<&str>, dest: &Path) -> Result<CloneDepth> {
        self.clone_as(tag, dest, CloneShape::Checkout)
    }

    /// [`Remote::clone`], making `shape`.
    fn clone_as(&self, tag: Option<&str>, dest: &Path, shape: CloneShape) -> Result<CloneDepth> {
        let attempt = |depth| {
            let cmd = clone_command(
                &self.url,
                tag,
                self.cred.as_ref(),
                dest,
                self.transports,
                inherited_git_config(),
                CloneOpts { depth, shape },
            );
            self.run(cmd)
        };
        let depth = self.first_depth();
        match attempt(depth)? {
            Ok(_) => {
                self.log_depth(depth);
                Ok(depth)
            }
            Err(line) if depth == CloneDepth::Shallow && self.cannot_do_shallow(&line) => {
                crate::tmp::remove_tree(dest)?;
                attempt(CloneDepth::Full)?.map_err(|l| self.fail(l))?;
                self.log_depth(CloneDepth::Full);
                Ok(CloneDepth::Full)
            }
            Err(line) => Err(self.fail(line)),
        }
    }

    /// The commit `dest`'s HEAD is at.
    fn head(&self, dest: &Path) -> Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dest)
            .args(["rev-parse", "HEAD"])
            .output()
            .map_err(|e| self.fail(format!("running git: {}", io_words(&e))))?;
        let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || head.is_empty() {
            return Err(self.fail("cannot read the cloned commit".into()));
        }
        Ok(head)
    }

    /// Fetches `HEAD` of the remote into the bare repository `mirror` (shallow, or in full
    /// from a dumb HTTP server) and keeps it at [`MIRROR_REF`]: `Ok(Err(why))` when git could
    /// not (the caller starts a fresh mirror), the commit otherwise.
    fn fetch_head(&self, mirror: &Path) -> Result<std::result::Result<String, String>> {
        let fetch = |depth: CloneDepth| {
            let mut args = vec!["-c", "gc.auto=0", "fetch", "--quiet", "--no-tags"];
            if depth == CloneDepth::Shallow {
                args.extend(["--depth", "1"]);
            }
            args.extend(["--", &self.url, "HEAD"]);
            self.in_repo(mirror, &args)
        };
        let first = self.first_depth();
        let (depth, fetched) = match fetch(first)? {
            Err(line) if first == CloneDepth::Shallow && self.cannot_do_shallow(&line) => {
                (CloneDepth::Full, fetch(CloneDepth::Full)?)
            }
            r => (first, r),
        };
        if let Err(line) = fetched {
            return Ok(Err(line));
        }
        match depth {
            CloneDepth::Shallow => log::info!(
                "{}: git {}: shallow fetch (depth 1) into the kept mirror",
                self.what,
                self.url
            ),
            CloneDepth::Full => log::warn!(
                "{}: git {}: full fetch (the server speaks git's dumb HTTP protocol, which \
                 cannot fetch shallow) into the kept mirror",
                self.what,
                self.url
            ),
        }
        let commit = match output_of({
            let mut c = local_git(mirror);
            c.args(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"]);
            c
        }) {
            Ok(out) => String::from_utf8_lossy(&out).trim().to_ascii_lowercase(),
            Err(line) => return Ok(Err(line)),
        };
        if !is_full_commit(&commit) {
            return Ok(Err(format!("FETCH_HEAD is {commit:?}, not a commit")));
        }
        Ok(self
            .in_repo(mirror, &["update-ref", MIRROR_REF, &commit])?
            .map(|_| commit))
    }

    /// `git <args>` in `dest`.
    fn in_repo(&self, dest: &Path, args: &[&str]) -> Result<std::result::Result<Vec<u8>, String>> {
        let mut cmd = self.command();
        cmd.arg("-C").arg(dest).args(args);
        self.run(cmd)
    }
}

/// Clones `url` into `dest` (which must not exist), with only the transports `transports`
/// allows: shallow (`--depth 1`), or in full when the server speaks git's dumb HTTP protocol
/// (detected once per URL, from git's error or the server's answer to `info/refs`; the log says
/// which was made). With `tag`, checks out that tag; with `commit`, requires HEAD to be exactly
/// that commit. Returns HEAD's commit.
pub(crate) fn git_clone(
    url: &str,
    tag: Option<&str>,
    commit: Option<&str>,
    dest: &Path,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<String> {
    let remote = Remote::new(url, what, transports, cfg)?;
    if tag.is_some_and(|t| t.starts_with('-')) {
        return Err(remote.fail("a tag may not start with '-'".into()));
    }
    cfg.progress.phase(Phase::Clone {
        what: what.to_string(),
        url: crate::credentials::redact(url),
    });
    remote.clone(tag, dest)?;
    let head = remote.head(dest)?;
    if let Some(c) = commit
        && !head.eq_ignore_ascii_case(c.trim())
    {
        return Err(remote.fail(format!(
            "tag {} is at commit {head}, but the step requires commit {c}",
            tag.unwrap_or("HEAD")
        )));
    }
    Ok(head)
}

/// Brings `mirror`, the kept bare mirror of `url` (`store-format.md` section 4a, "Mirrors";
/// the caller holds its lock), to the `HEAD` of `url` and returns that commit: one shallow
/// `git fetch` of `HEAD` into it (in full from a dumb HTTP server). A mirror that is missing, or
/// that git cannot fetch into (damaged, half-made by a killed clone), is replaced by a fresh
/// bare clone made in `scratch` (a path in the caller's temp dir, on the store's file system)
/// and renamed into place: the mirror is a cache of git objects, never the source of truth.
pub(crate) fn git_mirror_fetch(
    url: &str,
    mirror: &Path,
    scratch: &Path,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<String> {
    let remote = Remote::new(url, what, transports, cfg)?;
    cfg.progress.phase(Phase::Clone {
        what: what.to_string(),
        url: crate::credentials::redact(url),
    });
    if mirror.join("HEAD").is_file() {
        match remote.fetch_head(mirror)? {
            Ok(commit) => return Ok(commit),
            // Whose fault? When the StepLib cannot be reached now, not the mirror's: keep it
            // (a fresh clone could not work either) and fail with the cause.
            Err(why) if git_ls_remote(url, "HEAD", what, transports, cfg).is_err() => {
                return Err(remote.fail(why));
            }
            Err(why) => {
                log::warn!(
                    "{what}: the kept mirror {} is unusable ({why}); cloning afresh",
                    mirror.display()
                );
                git_mirror_discard(mirror, scratch)?;
            }
        }
    } else if std::fs::symlink_metadata(mirror).is_ok() {
        // Not a repository (a clone killed before it was renamed in never leaves one here).
        log::warn!(
            "{what}: the kept mirror {} is not a git repository; cloning afresh",
            mirror.display()
        );
        git_mirror_discard(mirror, scratch)?;
    }
    let fresh = scratch.join(format!("mirror-{:016x}", crate::layout::unique_token()));
    remote.clone_as(None, &fresh, CloneShape::Mirror)?;
    let commit = remote.head(&fresh)?;
    remote
        .in_repo(&fresh, &["update-ref", MIRROR_REF, &commit])?
        .map_err(|l| remote.fail(l))?;
    match crate::sys::publish_dir(&fresh, mirror) {
        Ok(crate::sys::Publish::Moved) => {}
        Ok(crate::sys::Publish::Exists) => {
            return Err(remote.fail(format!(
                "{} appeared while its lock was held",
                mirror.display()
            )));
        }
        Err(e) => return Err(Error::io("rename into", mirror)(e)),
    }
    Ok(commit)
}

/// The ref a mirror keeps at the commit last fetched (so that it is not collected).
const MIRROR_REF: &str = "refs/stepman/fetched";

/// Moves the mirror out of the way into `scratch` (removed with the caller's temp dir).
pub(crate) fn git_mirror_discard(mirror: &Path, scratch: &Path) -> Result<()> {
    let aside = scratch.join(format!(
        "mirror-discarded-{:016x}",
        crate::layout::unique_token()
    ));
    match crate::sys::publish_dir(mirror, &aside) {
        Ok(_) => Ok(()),
        Err(e) if crate::sys::is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::io("move aside", mirror)(e)),
    }
}

/// One entry of a commit's tree (`git ls-tree`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// Its mode as git writes it (`040000` a tree, `100644` a file, `120000` a symlink, …).
    pub mode: String,
    /// Its object id.
    pub oid: String,
    /// Its path from the root.
    pub path: String,
}

/// The entries of `commit`'s tree in `mirror`, recursively with the trees themselves
/// ([`Recursion::All`]) or only at `paths` (their entries when a path ends in `/`).
pub(crate) fn git_mirror_tree(
    mirror: &Path,
    commit: &str,
    recursion: Recursion,
    paths: &[&str],
) -> std::result::Result<Vec<TreeEntry>, String> {
    let mut cmd = local_git(mirror);
    cmd.args(["ls-tree", "-z", "--full-tree"]);
    if recursion == Recursion::All {
        cmd.args(["-r", "-t"]);
    }
    cmd.arg(commit).arg("--").args(paths);
    let out = output_of(cmd)?;
    let mut entries = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8_lossy(rec);
        let parsed = rec.split_once('\t').and_then(|(head, path)| {
            let mut f = head.split(' ');
            let (mode, _kind, oid) = (f.next()?, f.next()?, f.next()?);
            Some(TreeEntry {
                mode: mode.to_string(),
                oid: oid.to_string(),
                path: path.to_string(),
            })
        });
        entries.push(parsed.ok_or_else(|| format!("unreadable ls-tree line {rec:?}"))?);
    }
    Ok(entries)
}

/// One entry of a commit's whole tree with its size, its path as git stores it (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizedEntry {
    /// Its mode (`0o40000` a tree, `0o100644` a file, `0o120000` a symlink, `0o160000` a
    /// submodule).
    pub mode: u32,
    /// Its object id.
    pub oid: String,
    /// A blob's size in bytes (`None` for trees and submodules).
    pub size: Option<u64>,
    /// Its path from the root.
    pub path: Vec<u8>,
}

/// Every entry of `commit`'s tree in `mirror`, trees included, with the blobs' sizes
/// (`git ls-tree -r -t -l -z`): what reading the commit without a checkout needs.
pub(crate) fn git_mirror_tree_sized(
    mirror: &Path,
    commit: &str,
) -> std::result::Result<Vec<SizedEntry>, String> {
    let mut cmd = local_git(mirror);
    cmd.args(["ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit]);
    let out = output_of(cmd)?;
    let mut entries = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let bad = || format!("unreadable ls-tree line {:?}", String::from_utf8_lossy(rec));
        let tab = rec.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
        let head = std::str::from_utf8(&rec[..tab]).map_err(|_| bad())?;
        let mut f = head.split_ascii_whitespace();
        let (Some(mode), Some(_kind), Some(oid), Some(size)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        entries.push(SizedEntry {
            mode: u32::from_str_radix(mode, 8).map_err(|_| bad())?,
            oid: oid.to_string(),
            size: size.parse().ok(),
            path: rec[tab + 1..].to_vec(),
        });
    }
    Ok(entries)
}

/// A `git cat-file --batch` process on a mirror of ours: blobs read by id, one at a time, with
/// no checkout. Dropping it ends the process.
pub(crate) struct BlobReader {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl BlobReader {
    /// Starts the process.
    pub(crate) fn open(mirror: &Path) -> std::result::Result<BlobReader, String> {
        let mut cmd = local_git(mirror);
        cmd.args(["cat-file", "--batch"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running git: {}", io_words(&e)))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("git cat-file: no pipes".into());
        };
        Ok(BlobReader {
            child,
            stdin,
            stdout: std::io::BufReader::with_capacity(256 << 10, stdout),
        })
    }

    /// The blob `oid`, which must be at most `limit` bytes: anything else git answers (a
    /// missing object, another type, another size, an early end) is an error.
    pub(crate) fn read(&mut self, oid: &str, limit: u64) -> std::result::Result<Vec<u8>, String> {
        use std::io::{BufRead, Read, Write};
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("not an object id: {oid:?}"));
        }
        // One write per request (the pipe is unbuffered).
        self.stdin
            .write_all(format!("{oid}\n").as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("git cat-file: {}", io_words(&e)))?;
        let mut head = Vec::new();
        (&mut self.stdout)
            .take(256)
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("git cat-file: {}", io_words(&e)))?;
        let head = String::from_utf8_lossy(&head);
        let mut f = head.split_ascii_whitespace();
        let size = match (f.next(), f.next(), f.next()) {
            (Some(o), Some("blob"), Some(n)) if o.eq_ignore_ascii_case(oid) => n
                .parse::<u64>()
                .map_err(|_| format!("git cat-file said {head:?}"))?,
            _ => return Err(format!("git cat-file said {:?} for {oid}", head.trim_end())),
        };
        if size > limit {
            return Err(format!("{size} bytes, past the limit of {limit}"));
        }
        let mut body = Vec::with_capacity(size as usize + 1);
        (&mut self.stdout)
            .take(size + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("git cat-file: {}", io_words(&e)))?;
        if body.pop() != Some(b'\n') || body.len() as u64 != size {
            return Err(format!("git cat-file ended early reading {oid}"));
        }
        Ok(body)
    }
}

impl Drop for BlobReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How far [`git_mirror_tree`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recursion {
    /// Only the given paths.
    Paths,
    /// Every entry, trees included.
    All,
}

/// `git` on a repository of ours (a mirror): no network, no prompt, no hooks, no automatic gc
/// (it could drop the commit a collection was built from before it is compared).
fn local_git(repo: &Path) -> Command {
    let mut cmd = git_command(None, GitTransports::NetworkAndLocal, inherited_git_config());
    cmd.env("GIT_ALLOW_PROTOCOL", "")
        .args(["-c", "gc.auto=0", "-c", "core.hooksPath=/dev/null"])
        .arg("--git-dir")
        .arg(repo);
    cmd
}

/// The committer time of `commit` in the bare repository `repo` (a StepLib's kept mirror), as
/// git writes it in strict ISO 8601; `None` when the repository lacks the commit.
pub(crate) fn git_commit_time(repo: &Path, commit: &str) -> Option<String> {
    if !is_full_commit(commit) {
        return None;
    }
    let mut c = local_git(repo);
    c.args(["show", "-s", "--format=%cI", commit, "--"]);
    let out = output_of(c).ok()?;
    let t = String::from_utf8_lossy(&out).trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// The standard output of `cmd`, or what git said when it failed.
fn output_of(mut cmd: Command) -> std::result::Result<Vec<u8>, String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running git: {}", io_words(&e)))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(git_stderr_summary(&out.stderr, "git failed"))
    }
}

/// Whether `s` is a full commit id (40 hex digits, or 64 for SHA-256 repositories).
pub(crate) fn is_full_commit(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why a git reference (a branch, a tag, `HEAD`, `refs/…`) is refused before git sees it.
pub(crate) fn check_reference(r: &str) -> std::result::Result<(), &'static str> {
    if r.is_empty() {
        Err("an empty git reference")
    } else if r.starts_with('-') {
        Err("a git reference may not start with '-'")
    } else if r.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) || r.contains("..")
        || r.contains("@{")
    {
        Err("not a valid git branch or tag name")
    } else {
        Ok(())
    }
}

/// The commit that `reference` (a branch, a tag, `HEAD` or a full `refs/…` name) of `url`
/// points at, by one `git ls-remote`: an annotated tag's commit, not the tag object; a branch
/// before a tag of the same name.
pub(crate) fn git_ls_remote(
    url: &str,
    reference: &str,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<String> {
    let remote = Remote::new(url, what, transports, cfg)?;
    check_reference(reference).map_err(|e| remote.fail(format!("{reference:?}: {e}")))?;
    let mut cmd = remote.command();
    cmd.args(["ls-remote", "--"])
        .arg(&remote.url)
        .arg(reference)
        .arg(format!("{reference}^{{}}"));
    let out = remote.run(cmd)?.map_err(|l| remote.fail(l))?;
    let text = String::from_utf8_lossy(&out);
    let refs: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, name)| (id.trim(), name.trim()))
        .collect();
    let wanted: Vec<String> = if reference == "HEAD" {
        vec!["HEAD".into()]
    } else if reference.starts_with("refs/") {
        vec![format!("{reference}^{{}}"), reference.to_string()]
    } else {
        vec![
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}^{{}}"),
            format!("refs/tags/{reference}"),
        ]
    };
    wanted
        .iter()
        .find_map(|w| refs.iter().find(|(_, n)| n == w).map(|(id, _)| *id))
        .filter(|id| is_full_commit(id))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| remote.fail(format!("no branch or tag {reference}")))
}

/// Gets exactly `commit` of `url` into `dest` (which must not exist), checked out, `.git`
/// included. `reference` is a branch or tag that pointed at it a moment ago: it is cloned
/// shallow (or in full from a dumb HTTP server, [`git_clone`]). When it has moved since, or
/// without one, the commit is fetched by its id, shallow where the server allows it, else the
/// whole history is cloned and the commit checked out (a dumb HTTP server, or one that refuses
/// commits it does not advertise). HEAD is verified to be `commit`.
pub(crate) fn git_checkout_commit(
    url: &str,
    reference: Option<&str>,
    commit: &str,
    dest: &Path,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<()> {
    let remote = Remote::new(url, what, transports, cfg)?;
    if !is_full_commit(commit) {
        return Err(remote.fail(format!("{commit:?} is not a full commit id")));
    }
    let commit = commit.to_ascii_lowercase();
    if let Some(r) = reference {
        check_reference(r).map_err(|e| remote.fail(format!("{r:?}: {e}")))?;
        let tag = (r != "HEAD").then_some(r);
        match remote.clone(tag, dest) {
            Ok(depth) => {
                if remote.head(dest)? == commit {
                    return Ok(());
                }
                log::info!(
                    "{what}: git {}: {r} moved past {commit} meanwhile; fetching the commit itself",
                    remote.url
                );
                // A full clone may hold the commit already.
                if depth == CloneDepth::Full
                    && remote
                        .in_repo(dest, &["checkout", "--quiet", "--detach", &commit])?
                        .is_ok()
                    && remote.head(dest)? == commit
                {
                    return Ok(());
                }
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            // A `refs/…` name `--branch` does not take, a branch deleted since it was resolved:
            // the commit itself may still be had.
            Err(Error::Fetch { reason, .. }) => log::info!(
                "{what}: git {}: {reason}; fetching commit {commit} itself",
                remote.url
            ),
            Err(e) => return Err(e),
        }
        crate::tmp::remove_tree(dest)?;
    }
    let mut shallow_failed = None;
    if remote.first_depth() == CloneDepth::Shallow {
        fs_create_dir(dest).map_err(|e| remote.fail(e))?;
        remote
            .in_repo(dest, &["init", "--quiet"])?
            .map_err(|l| remote.fail(l))?;
        let fetched = remote.in_repo(
            dest,
            &[
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--",
                &remote.url,
                &commit,
            ],
        )?;
        match fetched {
            Ok(_) => {
                remote
                    .in_repo(dest, &["checkout", "--quiet", "--detach", "FETCH_HEAD"])?
                    .map_err(|l| remote.fail(l))?;
                remote.log_depth(CloneDepth::Shallow);
            }
            Err(line) => {
                if !remote.cannot_do_shallow(&line) {
                    shallow_failed = Some(line);
                }
                crate::tmp::remove_tree(dest)?;
            }
        }
    }
    if !dest.exists() {
        // The whole history, every branch and tag: the commit may be on any of them.
        let mut cmd = remote.command();
        cmd.args(["clone", "--quiet", "--no-checkout", "--"])
            .arg(&remote.url)
            .arg(dest);
        remote.run(cmd)?.map_err(|l| remote.fail(l))?;
        let checkout = remote.in_repo(dest, &["checkout", "--quiet", "--detach", &commit])?;
        if checkout.is_err() {
            return Err(remote.fail(format!(
                "commit {commit} is not in the repository{}",
                shallow_failed.map_or(String::new(), |l| format!(" ({l})"))
            )));
        }
        match shallow_failed {
            Some(_) => log::info!(
                "{what}: git {}: full clone (the server would not serve commit {commit} alone)",
                remote.url
            ),
            None => remote.log_depth(CloneDepth::Full),
        }
    }
    let head = remote.head(dest)?;
    if head != commit {
        return Err(remote.fail(format!(
            "checked out commit {head}, but {commit} was asked for"
        )));
    }
    Ok(())
}

/// Runs `git <args>` in the work tree `dir`, whose remote is `url` (vetted against
/// `transports` and offline mode; its credential, if any, is passed as for a clone): git's
/// stdout, or an error with what git said.
pub(crate) fn git_in(
    url: &str,
    dir: &Path,
    args: &[&str],
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<Vec<u8>> {
    let remote = Remote::new(url, what, transports, cfg)?;
    remote.in_repo(dir, args)?.map_err(|l| remote.fail(l))
}

/// The commit the work tree `dir`'s HEAD is at (lowercase hex); `None` when it is no git work
/// tree or git cannot say.
pub(crate) fn git_head(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .output()
        .ok()?;
    let head = String::from_utf8_lossy(&out.stdout)
        .trim()
        .to_ascii_lowercase();
    (out.status.success() && is_full_commit(&head)).then_some(head)
}

/// Makes `dest` (which must not exist) a git work tree of `url` that the old tool's `update`
/// can pull in: at exactly `commit` ([`git_checkout_commit`]), or at the repository's `HEAD`
/// without one (a StepLib on this machine), on a branch (the repository's default one where
/// the clone knows it, else `master`, the old tool's) that tracks that branch of `origin`,
/// whose URL is `url` (without any userinfo: credentials never go to disk).
pub(crate) fn git_work_tree(
    url: &str,
    commit: Option<&str>,
    dest: &Path,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<()> {
    git_work_tree_via(url, None, commit, dest, what, transports, cfg)
}

/// [`git_work_tree`], the commit taken from the local repository `via` (a StepLib's kept
/// mirror) instead of `url`: no network. `origin` is `url` all the same.
pub(crate) fn git_work_tree_via(
    url: &str,
    via: Option<&Path>,
    commit: Option<&str>,
    dest: &Path,
    what: &str,
    transports: GitTransports,
    cfg: &NetConfig,
) -> Result<()> {
    let local = via.map(|p| p.to_string_lossy().into_owned());
    // With `via`, git talks to the local repository only (so offline works), and `origin` is
    // set to `url` as given.
    let (remote, origin) = match &local {
        Some(l) => (
            Remote::new(l, what, GitTransports::NetworkAndLocal, cfg)?,
            url.to_string(),
        ),
        None => {
            let r = Remote::new(url, what, transports, cfg)?;
            let origin = r.url.clone();
            (r, origin)
        }
    };
    match (commit, &local) {
        (Some(c), Some(l)) => {
            git_checkout_commit(l, None, c, dest, what, GitTransports::NetworkAndLocal, cfg)?
        }
        (Some(c), None) => git_checkout_commit(url, Some("HEAD"), c, dest, what, transports, cfg)?,
        (None, _) => {
            remote.clone(None, dest)?;
        }
    }
    // The StepLib's default branch: what `origin/HEAD` names in a clone; a mirror's own HEAD
    // (its clone's default branch).
    let (repo, head_ref, prefix) = match &local {
        Some(l) => (PathBuf::from(l), "HEAD", ""),
        None => (dest.to_path_buf(), "refs/remotes/origin/HEAD", "origin/"),
    };
    let branch = remote
        .in_repo(&repo, &["symbolic-ref", "--quiet", "--short", head_ref])?
        .ok()
        .map(|out| String::from_utf8_lossy(&out).trim().to_string())
        .and_then(|b| b.strip_prefix(prefix).map(str::to_string))
        .filter(|b| check_reference(b).is_ok())
        .unwrap_or_else(|| "master".to_string());
    // A clone has `origin` already (pointing where it cloned from); a fetch of one commit not.
    let _ = remote.in_repo(dest, &["remote", "remove", "origin"])?;
    let steps: [&[&str]; 4] = [
        &["remote", "add", "--", "origin", &origin],
        &["checkout", "--quiet", "-B", &branch],
        &["config", &format!("branch.{branch}.remote"), "origin"],
        &[
            "config",
            &format!("branch.{branch}.merge"),
            &format!("refs/heads/{branch}"),
        ],
    ];
    for args in steps {
        remote.in_repo(dest, args)?.map_err(|l| remote.fail(l))?;
    }
    Ok(())
}

/// Creates the directory `dest` (0755).
fn fs_create_dir(dest: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir(dest)
        .map_err(|e| format!("create dir {}: {}", dest.display(), io_words(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        let base = "http://h:8/a/b/c.zip?x=1";
        let t = |l: &str| redirect_target(base, l);
        assert_eq!(t("https://o/p").unwrap(), "https://o/p");
        assert_eq!(t("HTTP://o/p#frag").unwrap(), "http://o/p");
        assert_eq!(t("//o/p").unwrap(), "http://o/p");
        assert_eq!(t("/p/q?y").unwrap(), "http://h:8/p/q?y");
        assert_eq!(t("d.zip").unwrap(), "http://h:8/a/b/d.zip");
        assert_eq!(t("../d.zip").unwrap(), "http://h:8/a/d.zip");
        assert_eq!(t("./../../../../d").unwrap(), "http://h:8/d");
        assert_eq!(t("..").unwrap(), "http://h:8/a/");
        assert!(t("a:b").unwrap_err().contains("refused"));
        for bad in [
            "file:///etc/passwd",
            "FILE:/etc/passwd",
            "ftp://h/x",
            "data:,x",
            "",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert!(t("file://u:secret@h/x").unwrap_err().contains("file://h/x"));
        assert_eq!(t("http://u:secret@o/p").unwrap(), "http://o/p");
    }

    /// References the hand-written resolution got wrong (RFC 3986 §5.4).
    #[test]
    fn redirect_targets_of_the_rfc_examples() {
        let base = "http://h:8/a/b/c.zip?x=1#top";
        let t = |l: &str| redirect_target(base, l).unwrap();
        // A query only keeps the path (it was resolved against the directory: `/a/b/?y`).
        assert_eq!(t("?y"), "http://h:8/a/b/c.zip?y");
        // A fragment only is the same resource (it was "a redirect without a Location").
        assert_eq!(t("#f"), "http://h:8/a/b/c.zip?x=1");
        // A relative reference with the base's scheme (it was left as `http:d.zip`).
        assert_eq!(t("http:d.zip"), "http://h:8/a/b/d.zip");
        // Dot segments inside a scheme-relative or absolute reference are removed too.
        assert_eq!(t("//o/a/./b/../c"), "http://o/a/c");
        assert_eq!(t("https://o/a/../../c"), "https://o/c");
        // A space is sent percent-encoded, a backslash is a slash (as browsers do).
        assert_eq!(t("/a b"), "http://h:8/a%20b");
        assert_eq!(t("\\\\o\\p"), "http://o/p");
    }

    #[test]
    fn git_stderr_keeps_the_cause_bounded() {
        let ssh = b"ssh: connect to host 127.0.0.1 port 22: Connection refused\r\n\
fatal: Could not read from remote repository.\n\nPlease make sure you have the correct access \
rights\nand the repository exists.\n";
        assert_eq!(
            git_stderr_summary(ssh, "git failed"),
            "ssh: connect to host 127.0.0.1 port 22: Connection refused; fatal: Could not read \
             from remote repository."
        );
        // No line of the kinds kept: the last one; nothing at all: the default.
        assert_eq!(git_stderr_summary(b"one\ntwo\n\n", "x"), "two");
        assert_eq!(git_stderr_summary(b"", "git failed"), "git failed");
        // Many lines: the first three and the last; each cut short; repeats once.
        let mut many = String::new();
        for i in 0..20 {
            many.push_str(&format!("remote: line {i}\nremote: line {i}\n"));
        }
        many.push_str(&format!("fatal: {}\n", "é".repeat(1000)));
        let s = git_stderr_summary(many.as_bytes(), "x");
        let parts: Vec<&str> = s.split("; ").collect();
        assert_eq!(parts.len(), GIT_STDERR_LINES, "{s}");
        assert_eq!(
            &parts[..3],
            ["remote: line 0", "remote: line 1", "remote: line 2"]
        );
        assert!(
            parts[3].starts_with("fatal: é") && parts[3].ends_with('…'),
            "{s}"
        );
        assert_eq!(parts[3].chars().count(), GIT_STDERR_LINE_CHARS + 1);
    }

    #[test]
    fn git_urls_are_read_as_git_reads_them() {
        use GitUrl::{Local, Network};
        for (url, want) in [
            ("https://h/r.git", Network),
            ("HTTP://h/r.git", Network),
            ("git://127.0.0.1:9418/r.git", Network),
            ("ssh://git@h:22/r.git", Network),
            ("git+ssh://h/r", Network),
            ("git@github.com:o/r.git", Network),
            ("h:r.git", Network),
            ("[::1]:r.git", Network),
            ("file:///srv/r.git", Local),
            ("FILE:///srv/r.git", Local),
            ("/srv/private/r.git", Local),
            ("./r.git", Local),
            ("r.git", Local),
            ("dir/with:colon", Local),
        ] {
            assert_eq!(classify_git_url(url), Ok(want), "{url}");
        }
        for bad in [
            "",
            "-uhello",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/x",
            "fd::3",
            "persistent-https::https://h/r",
            "ssh://-oProxyCommand=x/r",
            "ssh://u@-oProxyCommand=x/r",
            "ssh://-oProxyCommand=x@h/r",
            "-oProxyCommand=x:r",
            "git@-oProxyCommand=x:r",
            "ftp://h/r",
            "https://h/r\nx",
        ] {
            assert!(classify_git_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn args_and_envs(cmd: &Command) -> (Vec<String>, Vec<(String, String)>) {
        let args = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let envs = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        (args, envs)
    }

    #[test]
    fn clones_run_with_an_explicit_protocol_allow_list() {
        let dest = Path::new("/nonexistent/dest");
        let (args, envs) = args_and_envs(&clone_command(
            "https://h/r",
            Some("1.0.0"),
            None,
            dest,
            GitTransports::Network,
            0,
            CloneOpts {
                depth: CloneDepth::Shallow,
                shape: CloneShape::Checkout,
            },
        ));
        let env = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let configs: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-c")
            .map(|w| w[1].as_str())
            .collect();
        let clone_at = args.iter().position(|a| a == "clone").unwrap();
        assert!(
            args[..clone_at].iter().all(|a| a != "--"),
            "every -c comes before the subcommand: {args:?}"
        );
        assert_eq!(
            configs
                .iter()
                .filter(|c| c.starts_with("protocol."))
                .copied()
                .collect::<Vec<_>>(),
            [
                "protocol.allow=never",
                "protocol.https.allow=always",
                "protocol.http.allow=always",
                "protocol.ssh.allow=always",
                "protocol.git.allow=always",
            ]
        );
        assert_eq!(env("GIT_ALLOW_PROTOCOL"), Some("https:http:ssh:git"));
        assert_eq!(env("GIT_PROTOCOL_FROM_USER"), Some("0"));
        assert_eq!(env("GIT_TERMINAL_PROMPT"), Some("0"));
        assert_eq!(
            env("GIT_CONFIG_COUNT"),
            None,
            "no credential: nothing added"
        );
        let n = args.len();
        assert_eq!(args[n - 3..], ["--", "https://h/r", "/nonexistent/dest"]);
        assert!(!args.iter().any(|a| a.contains("recurse-submodules")));

        let (args, envs) = args_and_envs(&clone_command(
            "/srv/r.git",
            None,
            None,
            dest,
            GitTransports::NetworkAndLocal,
            0,
            CloneOpts {
                depth: CloneDepth::Shallow,
                shape: CloneShape::Checkout,
            },
        ));
        let env = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(args.iter().any(|a| a == "protocol.file.allow=always"));
        assert_eq!(env("GIT_ALLOW_PROTOCOL"), Some("https:http:ssh:git:file"));
    }

    #[test]
    fn a_credential_header_follows_the_environments_git_config_entries() {
        let (_, cred) = crate::credentials::split_userinfo("https://u:p@h/r");
        let cred = cred.expect("a credential in the userinfo");
        let (_, envs) = args_and_envs(&clone_command(
            "https://h/r",
            None,
            Some(&cred),
            Path::new("d"),
            GitTransports::Network,
            2,
            CloneOpts {
                depth: CloneDepth::Shallow,
                shape: CloneShape::Checkout,
            },
        ));
        let env = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(env("GIT_CONFIG_COUNT"), Some("3"));
        assert_eq!(env("GIT_CONFIG_KEY_2"), Some("http.extraHeader"));
        assert_eq!(
            env("GIT_CONFIG_VALUE_2"),
            Some(format!("Authorization: {}", cred.basic_header()).as_str())
        );
        assert_eq!(env("GIT_CONFIG_KEY_0"), None, "the user's entries stay");
    }

    /// git itself refuses a local repository under the network-only list, even when the caller's
    /// own check is bypassed, and even when the environment asks git to allow `file`.
    #[test]
    fn git_refuses_local_repositories_under_the_network_list() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let init = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .status();
        if !init.is_ok_and(|s| s.success()) {
            eprintln!("skipped: git is not usable");
            return;
        }
        for url in [
            repo.display().to_string(),
            format!("file://{}", repo.display()),
        ] {
            let mut cmd = clone_command(
                &url,
                None,
                None,
                &t.path().join("clone"),
                GitTransports::Network,
                1,
                CloneOpts {
                    depth: CloneDepth::Shallow,
                    shape: CloneShape::Checkout,
                },
            );
            cmd.env("GIT_CONFIG_KEY_0", "protocol.file.allow")
                .env("GIT_CONFIG_VALUE_0", "always")
                .env("GIT_CONFIG_PARAMETERS", "'protocol.allow'='always'");
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{url}: cloned");
            assert!(err.contains("transport 'file' not allowed"), "{url}: {err}");
            assert!(!t.path().join("clone").exists());
        }
    }

    #[test]
    fn pauses_grow_and_are_capped() {
        let ms = |a, r: Option<u64>| pause_before(a, r.map(Duration::from_secs)).as_millis();
        assert_eq!(ms(1, None), 500);
        assert_eq!(ms(2, None), 1000);
        assert_eq!(ms(5, None), 8000);
        assert_eq!(ms(9, None), 8000);
        assert_eq!(ms(1, Some(2)), 2000);
        assert_eq!(ms(3, Some(1)), 2000);
        assert_eq!(ms(1, Some(3600)), 8000);
    }

    #[test]
    fn the_low_speed_limit_trips_only_after_a_slow_window() {
        let cfg = NetConfig {
            stall_timeout: Duration::from_millis(50),
            min_rate: 1000,
            ..NetConfig::default()
        };
        let mut s = LowSpeed::new(&cfg).unwrap();
        s.record(10).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let e = s.record(10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("too slow"), "{e}");
        // Fast enough (1 MB in a window of some ms): the next window starts over.
        let mut s = LowSpeed::new(&cfg).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        s.record(1 << 20).unwrap();
        assert_eq!(s.bytes, 0);
        let off = NetConfig { min_rate: 0, ..cfg };
        assert!(LowSpeed::new(&off).is_none());
    }
}
