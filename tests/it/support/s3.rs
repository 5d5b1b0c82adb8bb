//! An S3-compatible server on loopback for the remote tier's tests: moto in server mode (PyPI
//! `moto[server]`, `moto_server -H 127.0.0.1 -p PORT`), from `$STEPMAN_TEST_MOTO`, else
//! `moto_server` on `PATH`. Without one the tests are skipped (they panic instead when
//! `STEPMAN_TEST_REQUIRE_MOTO=1`, as CI sets it).
//!
//! [`moto`] is one server shared by the whole test binary, started on first use; a test that
//! stops its server mid-run starts its own [`MotoServer`]. Either way the server runs behind a
//! wrapper shell whose stdin is a pipe this process holds: when the process exits, however it
//! exits, the pipe closes and the wrapper kills moto, so no server outlives its tests (the shared
//! one sits in a static, which is never dropped).
//!
//! moto checks a put's `If-None-Match`/`If-Match` and then stores the object with no lock
//! between the two, so two racing create-only puts of one key can both get 200 (one race in
//! about fifty on a loaded machine: moto 5.2.6). S3 itself lets exactly one win, and so must the
//! server these tests rely on: moto runs with [`SHIM`] as its `sitecustomize`, which serialises
//! the check and the store, and a server that does not say it loaded the shim is refused.
//!
//! The fixture's own requests are plain HTTP: moto does not check signatures (unless its IAM
//! emulation is switched on), but it treats a request without an `Authorization` header as
//! anonymous and refuses it (403) on any existing private object, so every request carries
//! [`AUTHORIZATION`], a well-formed header with a dummy signature.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The `Authorization` header of unsigned requests: moto reads the region from it and nothing
/// else. `curl` in a test sends it with `-H`.
pub(crate) const AUTHORIZATION: &str = "Authorization: AWS4-HMAC-SHA256 \
     Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, \
     Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// How long moto may take to answer after it is started (it takes about half a second).
const STARTUP: Duration = Duration::from_secs(30);
/// Starts tried (each on a fresh port) before giving up: another process may take the free
/// port between our picking it and moto binding it.
const ATTEMPTS: usize = 3;
/// How long a stopped server may take to exit and free its port.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// The largest object body [`MotoServer::get`] reads.
const MAX_BODY: u64 = 1 << 30;

/// Runs moto (`$0`) on 127.0.0.1:`$1` with the directory `$2` (the shim's) first on its
/// `PYTHONPATH`, its output in `$2/log`; prints its pid; kills it (and waits for it) when stdin
/// closes, and removes `$2`. A background job's stdin is `/dev/null` in a non-interactive
/// shell, so only `cat` reads the pipe.
const WRAPPER: &str = r#"PYTHONPATH="$2${PYTHONPATH:+:$PYTHONPATH}" "$0" -H 127.0.0.1 -p "$1" >"$2/log" 2>&1 </dev/null &
pid=$!
echo "$pid"
cat >/dev/null
kill "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2""#;

/// moto's `sitecustomize.py`: one lock around the handlers that check a put's condition and
/// store the object (PutObject; CompleteMultipartUpload is a POST), so that the check and the
/// store are atomic, as on S3. It fails (and moto with it) when moto's handlers are not where
/// it expects them.
const SHIM: &str = r#"# stepman's tests (tests/it/support/s3.rs): moto checks a conditional put, then stores, unlocked.
import sys
import threading

from moto.s3.responses import S3Response

_lock = threading.Lock()


def _serialised(handler):
    def locked(*args, **kwargs):
        with _lock:
            return handler(*args, **kwargs)

    return locked


for _name in ("put_object", "_key_response_post"):
    setattr(S3Response, _name, _serialised(getattr(S3Response, _name)))
print("stepman-test-shim: conditional puts serialised", file=sys.stderr, flush=True)
"#;

/// What the shim says in moto's log once it is in place.
const SHIM_LOADED: &str = "stepman-test-shim: conditional puts serialised";

/// The `moto_server` to run, or `None` (with the skip message) when there is none.
fn moto_program(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("STEPMAN_TEST_MOTO")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var("STEPMAN_TEST_REQUIRE_MOTO").as_deref() == Ok("1") {
            panic!(
                "{test}: no moto_server and STEPMAN_TEST_REQUIRE_MOTO=1 (set STEPMAN_TEST_MOTO)"
            );
        }
        eprintln!("{test}: skipped: no moto_server (set STEPMAN_TEST_MOTO)");
    }
    found
}

/// The moto server shared by every test of this binary, started on the first call; `None` (the
/// test is skipped, and says so) when there is no moto. Tests keep apart by taking a fresh
/// [`bucket`](MotoServer::bucket) each. It cannot be stopped: a test that stops its server
/// starts a [`MotoServer`] of its own.
pub(crate) fn moto(test: &str) -> Option<&'static Moto> {
    static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();
    let program = moto_program(test)?;
    match SHARED.get_or_init(|| MotoServer::launch(&program).map(|server| Moto { server })) {
        Ok(m) => Some(m),
        Err(e) => panic!("{test}: the shared moto server did not start: {e}"),
    }
}

/// The shared server ([`moto`]): every [`MotoServer`] method but [`stop`](MotoServer::stop).
pub(crate) struct Moto {
    server: MotoServer,
}

impl std::ops::Deref for Moto {
    type Target = MotoServer;
    fn deref(&self) -> &MotoServer {
        &self.server
    }
}

/// A moto server of one test's own, on its own port; dropping it stops it.
pub(crate) struct MotoServer {
    port: u16,
    /// moto's own pid (the wrapper's child).
    pid: u32,
    wrapper: Child,
    /// The wrapper's stdin: closing it stops the server. `None` once stopped.
    gate: Option<ChildStdin>,
    log: PathBuf,
    agent: ureq::Agent,
}

impl MotoServer {
    /// Starts a server of this test's own; `None` (the test is skipped, and says so) when there
    /// is no moto. Panics when moto is there but does not start.
    pub(crate) fn start(test: &str) -> Option<MotoServer> {
        let program = moto_program(test)?;
        Some(MotoServer::launch(&program).unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    fn launch(program: &Path) -> Result<MotoServer, String> {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match MotoServer::launch_once(program) {
                Ok(s) => return Ok(s),
                Err(e) => failures.push(e),
            }
        }
        Err(format!(
            "{} did not start in {ATTEMPTS} attempts:\n{}",
            program.display(),
            failures.join("\n")
        ))
    }

    fn launch_once(program: &Path) -> Result<MotoServer, String> {
        let started = Instant::now();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("stepman-test-moto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("sitecustomize.py"), SHIM))
            .map_err(|e| format!("cannot write moto's shim in {}: {e}", dir.display()))?;
        let log = dir.join("log");
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(program)
            .arg(port.to_string())
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh for {}: {e}", program.display()))?;
        let gate = wrapper.stdin.take();
        let mut line = String::new();
        let read = BufReader::new(
            wrapper
                .stdout
                .take()
                .expect("the wrapper's stdout is piped"),
        )
        .read_line(&mut line);
        let pid = line.trim().parse::<u32>();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut server = MotoServer {
            port,
            pid: *pid.as_ref().unwrap_or(&0),
            wrapper,
            gate,
            log,
            agent,
        };
        if read.is_err() || pid.is_err() {
            let _ = server.shutdown();
            return Err(format!(
                "the wrapper printed {line:?}, not moto's pid ({read:?})"
            ));
        }
        // Ready when moto says it bound our port (so the answer is not another program's on a
        // port taken after we picked it) and loaded the shim, and answers.
        let bound = format!("Running on http://127.0.0.1:{port}");
        loop {
            let said = std::fs::read_to_string(&server.log).unwrap_or_default();
            if said.contains(&bound) && said.contains(SHIM_LOADED) && server.answers() {
                eprintln!(
                    "moto_server on 127.0.0.1:{port} answered after {:.2}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(server);
            }
            let why = if !alive(server.pid) {
                "exited"
            } else if started.elapsed() > STARTUP {
                "did not answer in time"
            } else {
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            let e = format!(
                "moto_server on 127.0.0.1:{port} {why} after {:.1}s; it said:\n{}",
                started.elapsed().as_secs_f64(),
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            let _ = server.shutdown();
            return Err(e);
        }
    }

    /// True when `GET /` gets a moto answer (the bucket list).
    fn answers(&self) -> bool {
        match self.agent.get(format!("{}/", self.endpoint())).call() {
            Ok(r) if r.status() == 200 => r
                .into_body()
                .read_to_string()
                .is_ok_and(|b| b.contains("ListAllMyBucketsResult")),
            _ => false,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The path-style URL of `key` in `bucket` (the key percent-encoded, its `/`s kept).
    pub(crate) fn url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{bucket}/{}", self.endpoint(), encode(key, true))
    }

    /// Creates a fresh bucket, named `prefix` (lowercased, any character but a letter, a digit
    /// or `-` as `-`), a counter and the pid, and returns its name.
    pub(crate) fn bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let suffix = format!(
            "-{}-{}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let mut name: String = prefix
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-') => c,
                _ => '-',
            })
            .take(62 - suffix.len())
            .collect();
        // A name starts with a letter or digit (and the suffix makes it long enough).
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name.insert(0, 'b');
        }
        name.push_str(&suffix);
        let r = self
            .agent
            .put(format!("{}/{name}", self.endpoint()))
            .header("Authorization", auth())
            .send_empty();
        expect_status(r, &[200], &format!("create bucket {name}"));
        name
    }

    /// Points `cmd` at this server with test credentials (and no profile or session token
    /// from the environment).
    pub(crate) fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// Every key in `bucket` that starts with `prefix`, in the server's (lexicographic) order.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.keys_in_pages(bucket, prefix, 1000)
    }

    /// [`keys`](Self::keys), listed `page` keys a request.
    pub(crate) fn keys_in_pages(&self, bucket: &str, prefix: &str, page: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{bucket}?list-type=2&max-keys={page}&prefix={}",
                self.endpoint(),
                encode(prefix, false)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", encode(t, false)));
            }
            let what = format!("list {bucket}/{prefix}*");
            let r = self.agent.get(&url).header("Authorization", auth()).call();
            let xml = expect_status(r, &[200], &what);
            let xml = String::from_utf8(xml).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
            for contents in elements(&xml, "Contents") {
                let key = elements(contents, "Key");
                assert_eq!(
                    key.len(),
                    1,
                    "{what}: a <Contents> without one <Key>: {xml}"
                );
                keys.push(unescape(key[0]).unwrap_or_else(|e| panic!("{what}: {e}: {xml}")));
            }
            match elements(&xml, "IsTruncated").first().copied() {
                Some("true") => {
                    let next = elements(&xml, "NextContinuationToken");
                    assert_eq!(next.len(), 1, "{what}: truncated, but no next token: {xml}");
                    let next = unescape(next[0]).unwrap_or_else(|e| panic!("{what}: {e}: {xml}"));
                    assert_ne!(token.as_ref(), Some(&next), "{what}: the same token twice");
                    token = Some(next);
                }
                Some("false") => return keys,
                other => panic!("{what}: IsTruncated is {other:?}: {xml}"),
            }
        }
    }

    /// The body of `bucket/key`, or `None` when there is no such object.
    pub(crate) fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self
            .agent
            .get(self.url(bucket, key))
            .header("Authorization", auth())
            .call();
        let what = format!("get {bucket}/{key}");
        match r {
            Ok(r) if r.status() == 404 => None,
            r => Some(expect_status(r, &[200], &what)),
        }
    }

    /// Stores `body` as `bucket/key`, over whatever is there (a test corrupting a remote object).
    pub(crate) fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let r = self
            .agent
            .put(self.url(bucket, key))
            .header("Authorization", auth())
            .header("Content-Type", "application/octet-stream")
            .send(body);
        expect_status(r, &[200], &format!("put {bucket}/{key}"));
    }

    /// Deletes `bucket/key` (nothing to do when it is not there).
    pub(crate) fn delete(&self, bucket: &str, key: &str) {
        let r = self
            .agent
            .delete(self.url(bucket, key))
            .header("Authorization", auth())
            .call();
        expect_status(r, &[200, 204], &format!("delete {bucket}/{key}"));
    }

    /// Stops the server: it is killed, and gone when this returns (its port refuses
    /// connections). Stopping it again does nothing.
    pub(crate) fn stop(&mut self) {
        if let Err(e) = self.shutdown() {
            panic!("{e}");
        }
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let Some(gate) = self.gate.take() else {
            return Ok(());
        };
        drop(gate); // the wrapper kills moto, waits for it and exits
        let deadline = Instant::now() + SHUTDOWN;
        let mut killed = false;
        loop {
            match self.wrapper.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    // It did not stop in time: kill moto and its wrapper outright.
                    if self.pid != 0 {
                        let _ = Command::new("kill")
                            .args(["-KILL", &self.pid.to_string()])
                            .status();
                    }
                    let _ = self.wrapper.kill();
                    let _ = self.wrapper.wait();
                    if let Some(dir) = self.log.parent() {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    killed = true;
                    break;
                }
            }
        }
        let deadline = Instant::now() + SHUTDOWN;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server on 127.0.0.1:{} was stopped but its port still accepts \
                     connections after {SHUTDOWN:?}",
                    self.port
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        if killed {
            return Err(format!(
                "moto_server on 127.0.0.1:{} did not exit in {SHUTDOWN:?} after its wrapper's \
                 stdin closed (killed)",
                self.port
            ));
        }
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            if thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// The value of [`AUTHORIZATION`].
fn auth() -> &'static str {
    AUTHORIZATION
        .strip_prefix("Authorization: ")
        .expect("AUTHORIZATION is a header line")
}

/// A port nothing listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to pick a free port")
        .port()
}

/// True while process `pid` runs (not gone, not a zombie waiting for its wrapper).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)` (comm may hold anything).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The body of a response whose status is one of `ok`; panics naming `what` otherwise.
fn expect_status(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ok: &[u16],
    what: &str,
) -> Vec<u8> {
    let r = r.unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    let status = r.status().as_u16();
    let body = r
        .into_body()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{what}: reading the {status} answer's body: {e}"));
    assert!(
        ok.contains(&status),
        "{what}: status {status}, not {ok:?}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// `s` percent-encoded: every byte but the unreserved ones (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The contents of every `<name>…</name>` element of `xml`, outermost first (the S3 listing
/// documents have no attributes on these, nor nested elements of the same name).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            panic!("<{name}> is not closed in {xml}");
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// XML character data with its entity and character references replaced.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| format!("an unterminated reference in {text:?}"))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("an unknown reference &{entity}; in {text:?}"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
