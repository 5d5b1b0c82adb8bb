//! An S3-compatible server on loopback for the remote tier's tests: moto in server mode (PyPI
//! `moto[server]`, `moto_server -H 127.0.0.1 -p PORT`), from `$STEPMAN_TEST_MOTO`, else
//! `moto_server` on `PATH`. Without one the tests are skipped (they panic instead when
//! `STEPMAN_TEST_REQUIRE_MOTO=1`, as CI sets it).
//!
//! [`moto`] is one server shared by the whole test binary, started on first use; a test that
//! stops its server mid-run starts its own [`MotoServer`]. Either way the server is a
//! [`Daemon`], which never outlives the test binary.
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

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::daemon::{self, Daemon, Recipe, Tier, elements, encode, expect_status, unescape};

/// The `Authorization` header of unsigned requests: moto reads the region from it and nothing
/// else. `curl` in a test sends it with `-H`.
pub(crate) const AUTHORIZATION: &str = "Authorization: AWS4-HMAC-SHA256 \
     Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, \
     Signature=0000000000000000000000000000000000000000000000000000000000000000";

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
fn moto_program(test: &str) -> Option<std::path::PathBuf> {
    daemon::program(
        test,
        "STEPMAN_TEST_MOTO",
        "moto_server",
        "STEPMAN_TEST_REQUIRE_MOTO",
    )
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
    daemon: Daemon,
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
        let agent = daemon::agent();
        // Ready when moto says it bound our port (so the answer is not another program's on a
        // port taken after we picked it) and loaded the shim, and answers.
        let ready = |port: u16, said: &str| {
            said.contains(&format!("Running on http://127.0.0.1:{port}"))
                && said.contains(SHIM_LOADED)
                && answers(&agent, port)
        };
        let python_path = |dir: &Path| {
            let mut p = dir.as_os_str().to_os_string();
            if let Some(old) = std::env::var_os("PYTHONPATH").filter(|v| !v.is_empty()) {
                p.push(":");
                p.push(old);
            }
            vec![("PYTHONPATH".to_string(), p.to_string_lossy().into_owned())]
        };
        let daemon = Daemon::start(&Recipe {
            name: "moto_server",
            program,
            args: &|port, _| {
                ["-H", "127.0.0.1", "-p", &port.to_string()]
                    .map(String::from)
                    .to_vec()
            },
            files: &[("sitecustomize.py", SHIM)],
            env: &python_path,
            ready: &ready,
        })?;
        Ok(MotoServer { daemon, agent })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port())
    }

    /// The path-style URL of `key` in `bucket` (the key percent-encoded, its `/`s kept).
    pub(crate) fn url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{bucket}/{}", self.endpoint(), encode(key, true))
    }

    /// Creates a fresh bucket, named `prefix` (lowercased, any character but a letter, a digit
    /// or `-` as `-`), a counter and the pid, and returns its name.
    pub(crate) fn bucket(&self, prefix: &str) -> String {
        let name = daemon::fresh_name(prefix);
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
        if let Err(e) = self.daemon.shutdown() {
            panic!("{e}");
        }
    }
}

/// True when `GET /` on `port` gets a moto answer (the bucket list).
fn answers(agent: &ureq::Agent, port: u16) -> bool {
    match agent.get(format!("http://127.0.0.1:{port}/")).call() {
        Ok(r) if r.status() == 200 => r
            .into_body()
            .read_to_string()
            .is_ok_and(|b| b.contains("ListAllMyBucketsResult")),
        _ => false,
    }
}

/// The value of [`AUTHORIZATION`].
fn auth() -> &'static str {
    AUTHORIZATION
        .strip_prefix("Authorization: ")
        .expect("AUTHORIZATION is a header line")
}

impl Tier for MotoServer {
    fn bucket(&self, prefix: &str) -> String {
        MotoServer::bucket(self, prefix)
    }
    fn remote(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}")
    }
    fn env(&self, cmd: &mut Command) {
        MotoServer::env(self, cmd)
    }
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        MotoServer::keys(self, bucket, prefix)
    }
    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        MotoServer::get(self, bucket, key)
    }
    fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        MotoServer::put(self, bucket, key, body)
    }
}

impl Tier for Moto {
    fn bucket(&self, prefix: &str) -> String {
        self.server.bucket(prefix)
    }
    fn remote(&self, bucket: &str, prefix: &str) -> String {
        Tier::remote(&self.server, bucket, prefix)
    }
    fn env(&self, cmd: &mut Command) {
        self.server.env(cmd)
    }
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.server.keys(bucket, prefix)
    }
    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.server.get(bucket, key)
    }
    fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.server.put(bucket, key, body)
    }
}
