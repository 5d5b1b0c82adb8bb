//! Azure Blob Storage on loopback for the remote tier's tests: Azurite's blob service (npm
//! `azurite`, `azurite-blob --blobHost 127.0.0.1 --blobPort PORT`), from
//! `$STEPMAN_TEST_AZURITE`, else `azurite-blob` on `PATH`. Without one the tests are skipped
//! (they panic instead when `STEPMAN_TEST_REQUIRE_AZURITE=1`, as CI sets it). It runs in memory
//! with its telemetry off (it would otherwise try to reach Microsoft's ingestion endpoint), as a
//! [`Daemon`].
//!
//! `stepman` reaches it as `object_store` reaches the emulator: `AZURE_STORAGE_USE_EMULATOR=true`
//! and `AZURITE_BLOB_STORAGE_URL`, with the emulator's well-known account `devstoreaccount1`. The
//! fixture's own requests carry a Shared Key signature with that account's published key, as
//! Azurite checks every signature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;

use super::daemon::{self, Daemon, Recipe, Tier, elements, encode, expect_status, unescape};

/// The emulator's well-known account and its published key (Azurite's documentation, and
/// `object_store`'s `EMULATOR_ACCOUNT_KEY`): not a secret.
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The REST API version the fixture's requests ask for.
const API_VERSION: &str = "2021-08-06";

fn azurite_program(test: &str) -> Option<PathBuf> {
    daemon::program(
        test,
        "STEPMAN_TEST_AZURITE",
        "azurite-blob",
        "STEPMAN_TEST_REQUIRE_AZURITE",
    )
}

/// The Azurite server shared by every test of this binary, started on the first call; `None`
/// (the test is skipped, and says so) when there is no Azurite. Tests keep apart by taking a
/// fresh [`container`](Azurite::container) each.
pub(crate) fn azurite(test: &str) -> Option<&'static Azurite> {
    static SHARED: OnceLock<Result<Azurite, String>> = OnceLock::new();
    let program = azurite_program(test)?;
    match SHARED.get_or_init(|| Azurite::launch(&program)) {
        Ok(a) => Some(a),
        Err(e) => panic!("{test}: the shared Azurite server did not start: {e}"),
    }
}

/// An Azurite blob service on loopback.
pub(crate) struct Azurite {
    daemon: Daemon,
    agent: ureq::Agent,
}

/// A request the fixture signs: its method, the path under the account (`/container/key`, not
/// yet encoded), the query and the headers beyond the date and version.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    headers: &'a [(&'a str, &'a str)],
}

impl Azurite {
    fn launch(program: &Path) -> Result<Azurite, String> {
        let ready = |port: u16, said: &str| {
            said.contains(&format!("successfully listens on http://127.0.0.1:{port}"))
        };
        let daemon = Daemon::start(&Recipe {
            name: "Azurite",
            program,
            args: &|port, _| {
                [
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--extentMemoryLimit",
                    "2048",
                    "--disableTelemetry",
                    "--silent",
                    "--skipApiVersionCheck",
                ]
                .map(String::from)
                .to_vec()
            },
            files: &[],
            env: &|_| Vec::new(),
            ready: &ready,
        })?;
        Ok(Azurite {
            daemon,
            agent: daemon::agent(),
        })
    }

    /// `http://127.0.0.1:PORT`, the account's blob endpoint without the account.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port())
    }

    /// The URL of `req` and the headers to send with it, the Shared Key `Authorization` among
    /// them (the string to sign of
    /// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>, for a
    /// path-style emulator URL: the canonical resource names the account twice).
    fn signed(&self, req: &Req<'_>, body_len: usize) -> (String, Vec<(String, String)>) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("x-ms-date".into(), date));
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        if body_len > 0 {
            headers.push(("Content-Type".into(), "application/octet-stream".into()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        };
        let length = if body_len > 0 {
            body_len.to_string()
        } else {
            String::new()
        };
        let mut ms: Vec<(String, &str)> = headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        ms.sort();
        let path = encode(req.path, true);
        let mut query: Vec<(String, &str)> = req
            .query
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        query.sort();
        let mut to_sign = [
            req.method,
            header("Content-Encoding"),
            header("Content-Language"),
            &length,
            header("Content-MD5"),
            header("Content-Type"),
            "", // Date: x-ms-date is sent instead
            header("If-Modified-Since"),
            header("If-Match"),
            header("If-None-Match"),
            header("If-Unmodified-Since"),
            header("Range"),
        ]
        .join("\n");
        to_sign.push('\n');
        for (k, v) in &ms {
            to_sign.push_str(&format!("{k}:{v}\n"));
        }
        to_sign.push_str(&format!("/{ACCOUNT}/{ACCOUNT}{path}"));
        for (k, v) in &query {
            to_sign.push_str(&format!("\n{k}:{v}"));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .expect("the emulator's key is base64");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        headers.push((
            "Authorization".into(),
            format!("SharedKey {ACCOUNT}:{signature}"),
        ));
        let mut url = format!("{}/{ACCOUNT}{path}", self.endpoint());
        for (i, (k, v)) in req.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{k}={}", encode(v, false)));
        }
        (url, headers)
    }

    /// Sends `req` with `body` (a `PUT`'s) and returns the answer.
    fn send(
        &self,
        req: &Req<'_>,
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let (url, headers) = self.signed(req, body.map_or(0, <[u8]>::len));
        match req.method {
            "PUT" => {
                let mut r = self.agent.put(&url);
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                match body {
                    Some(b) if !b.is_empty() => r.send(b),
                    _ => r.send_empty(),
                }
            }
            method => {
                let mut r = match method {
                    "GET" => self.agent.get(&url),
                    "HEAD" => self.agent.head(&url),
                    "DELETE" => self.agent.delete(&url),
                    other => panic!("the fixture sends no {other}"),
                };
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                r.call()
            }
        }
    }

    /// Creates a fresh container (see [`daemon::fresh_name`]) and returns its name.
    pub(crate) fn container(&self, prefix: &str) -> String {
        let name = daemon::fresh_name(prefix);
        let path = format!("/{name}");
        let req = Req {
            method: "PUT",
            path: &path,
            query: &[("restype", "container")],
            headers: &[],
        };
        expect_status(
            self.send(&req, None),
            &[201],
            &format!("create container {name}"),
        );
        name
    }

    /// A block blob put of `body` at `container/key` with `conditions` (`If-None-Match`,
    /// `If-Match`): its status and the new `ETag`.
    pub(crate) fn put_if(
        &self,
        container: &str,
        key: &str,
        body: &[u8],
        conditions: &[(&str, &str)],
    ) -> (u16, Option<String>) {
        let path = format!("/{container}/{key}");
        let mut headers = vec![("x-ms-blob-type", "BlockBlob")];
        headers.extend_from_slice(conditions);
        let req = Req {
            method: "PUT",
            path: &path,
            query: &[],
            headers: &headers,
        };
        let r = self
            .send(&req, Some(body))
            .unwrap_or_else(|e| panic!("put {path}: {e}"));
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), etag)
    }
}

impl Tier for Azurite {
    fn bucket(&self, prefix: &str) -> String {
        self.container(prefix)
    }

    fn remote(&self, bucket: &str, prefix: &str) -> String {
        format!("az://{bucket}/{prefix}")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", self.endpoint())
            .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
            .env_remove("AZURE_STORAGE_ACCOUNT_KEY")
            .env_remove("AZURE_STORAGE_SAS_KEY")
            .env_remove("AZURE_CLIENT_ID");
    }

    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let path = format!("/{bucket}");
        let what = format!("list {bucket}/{prefix}*");
        let mut keys = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
            ];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let req = Req {
                method: "GET",
                path: &path,
                query: &query,
                headers: &[],
            };
            let xml = expect_status(self.send(&req, None), &[200], &what);
            let xml = String::from_utf8(xml).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
            for blob in elements(&xml, "Blob") {
                let name = elements(blob, "Name");
                assert_eq!(name.len(), 1, "{what}: a <Blob> without one <Name>: {xml}");
                keys.push(unescape(name[0]).unwrap_or_else(|e| panic!("{what}: {e}: {xml}")));
            }
            let next = elements(&xml, "NextMarker")
                .first()
                .map(|m| unescape(m).unwrap_or_else(|e| panic!("{what}: {e}: {xml}")))
                .unwrap_or_default();
            if next.is_empty() {
                keys.sort();
                return keys;
            }
            assert_ne!(next, marker, "{what}: the same marker twice");
            marker = next;
        }
    }

    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let path = format!("/{bucket}/{key}");
        let req = Req {
            method: "GET",
            path: &path,
            query: &[],
            headers: &[],
        };
        match self.send(&req, None) {
            Ok(r) if r.status() == 404 => None,
            r => Some(expect_status(r, &[200], &format!("get {path}"))),
        }
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, _) = self.put_if(bucket, key, body, &[]);
        assert_eq!(status, 201, "put {bucket}/{key}");
    }
}
