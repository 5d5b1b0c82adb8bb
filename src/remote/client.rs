//! The object store itself, through the `object_store` crate, made blocking: the only async code
//! of the library. One multi-thread tokio runtime (two workers) per [`Client`], made when a
//! remote is configured; every call is `block_on` with the client's timeouts.
//!
//! Invariants: a create-only put is `PutMode::Create` (S3: `If-None-Match: *`), and the store's
//! "already exists" is [`Put::Exists`], never an error; a replace of a lease is
//! `PutMode::Update` on the version read (S3: `If-Match`); nothing here retries beyond the
//! crate's own bounded retry of transient failures.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as Key;
use object_store::{
    ClientConfigKey, GetOptions, MultipartUpload, ObjectStore, ObjectStoreExt, ObjectStoreScheme,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};

use super::{Put, Settings, Version};

/// A connected object store and the prefix every key is under.
pub(super) struct Client {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
}

/// An error of the object store, in words, and whether the store refused this host's
/// credentials (`403`, `401`).
pub(super) struct Failure {
    pub(super) reason: String,
    pub(super) denied: bool,
}

type R<T> = std::result::Result<T, Failure>;

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure {
        reason: one_line(&e.to_string()),
        denied: false,
    }
}

/// The longest reason kept: a store's error carries the server's whole answer (an HTML error
/// page from a proxy, an XML document), which a one-line warning cuts short.
const REASON_MAX: usize = 600;

/// `s` on one line: every run of whitespace (the newlines of an error page too) one space, and
/// at most [`REASON_MAX`] bytes, cut at a character boundary with `…`.
fn one_line(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > REASON_MAX {
        let mut cut = REASON_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A store error as a [`Failure`], `denied` when the store refused the credentials.
fn store_failure(e: object_store::Error) -> Failure {
    let denied = matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    );
    Failure {
        reason: one_line(&e.to_string()),
        denied,
    }
}

/// Whether `url` names a store that can only be read (`https://` of a host that is not one of
/// the clouds' own).
pub(super) fn read_only(url: &url::Url) -> bool {
    matches!(
        ObjectStoreScheme::parse(url),
        Ok((ObjectStoreScheme::Http, _))
    )
}

/// For an S3 `url`, the AWS profile whose shared files give the keys: its name and the file.
pub(super) fn aws_profile(url: &url::Url) -> Option<(String, std::path::PathBuf)> {
    match ObjectStoreScheme::parse(url).ok()?.0 {
        ObjectStoreScheme::AmazonS3 => {
            let p = super::aws_files::profile()?;
            Some((p.name, p.keys_from?))
        }
        _ => None,
    }
}

/// The S3 builder from the environment, with what an AWS profile's shared files add to it
/// (`aws_files.rs`: keys when the environment has none, the region when it names none).
fn s3_builder(u: &str) -> object_store::aws::AmazonS3Builder {
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(u);
    if let Some(p) = super::aws_files::profile() {
        if let (Some(id), Some(secret)) = (p.access_key_id, p.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = p.session_token {
                b = b.with_token(t);
            }
        }
        if let Some(r) = p.region {
            b = b.with_region(r);
        }
    }
    b
}

/// The endpoint of `url`'s store as its builder reads the environment; `None`: the store's
/// own (an `https://` URL is its endpoint).
pub(super) fn endpoint(url: &url::Url) -> Option<String> {
    use object_store::{aws, azure, gcp};
    let u = url.as_str();
    match ObjectStoreScheme::parse(url).ok()?.0 {
        ObjectStoreScheme::AmazonS3 => {
            let b = aws::AmazonS3Builder::from_env().with_url(u);
            b.get_config_value(&aws::AmazonS3ConfigKey::S3Endpoint)
                .or_else(|| b.get_config_value(&aws::AmazonS3ConfigKey::Endpoint))
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let b = azure::MicrosoftAzureBuilder::from_env().with_url(u);
            if b.get_config_value(&azure::AzureConfigKey::UseEmulator)
                .is_some_and(|v| v == "true")
            {
                // The builder's own default for the emulator.
                Some(
                    std::env::var("AZURITE_BLOB_STORAGE_URL")
                        .unwrap_or_else(|_| "http://127.0.0.1:10000".to_string()),
                )
            } else {
                b.get_config_value(&azure::AzureConfigKey::Endpoint)
            }
        }
        ObjectStoreScheme::GoogleCloudStorage => gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(u)
            .get_config_value(&gcp::GoogleConfigKey::BaseUrl),
        _ => None,
    }
}

impl Client {
    /// Connects to `url` (`s3://bucket/prefix`, `gs://…`, `az://…`, `https://…`), credentials
    /// and endpoint from the store's standard environment variables and chain. Returns the
    /// client.
    pub(super) fn open(url: &url::Url, s: &Settings) -> R<Client> {
        // reqwest is built with rustls and no provider of its own: the one ureq uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (scheme, prefix) = ObjectStoreScheme::parse(url).map_err(failure)?;
        // Set key by key: the builders' own settings from the environment (AWS_ALLOW_HTTP, a
        // proxy, a CA bundle) are client options too, and a whole `ClientOptions` would drop them.
        let connect = format!("{}s", s.connect_timeout.as_secs());
        let whole = format!("{}s", s.timeout.as_secs());
        let client_keys = [
            (ClientConfigKey::ConnectTimeout, connect.as_str()),
            (ClientConfigKey::Timeout, whole.as_str()),
        ];
        let retry = RetryConfig {
            max_retries: s.retries,
            retry_timeout: s.timeout,
            ..RetryConfig::default()
        };
        let u = url.as_str();
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => Arc::new(
                client_keys
                    .iter()
                    .fold(s3_builder(u), |b, (k, v)| {
                        b.with_config(object_store::aws::AmazonS3ConfigKey::Client(*k), *v)
                    })
                    .with_retry(retry)
                    .build()
                    .map_err(failure)?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                client_keys
                    .iter()
                    .fold(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(u),
                        |b, (k, v)| {
                            b.with_config(object_store::gcp::GoogleConfigKey::Client(*k), *v)
                        },
                    )
                    .with_retry(retry)
                    .build()
                    .map_err(failure)?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                client_keys
                    .iter()
                    .fold(
                        object_store::azure::MicrosoftAzureBuilder::from_env().with_url(u),
                        |b, (k, v)| {
                            b.with_config(object_store::azure::AzureConfigKey::Client(*k), *v)
                        },
                    )
                    .with_retry(retry)
                    .build()
                    .map_err(failure)?,
            ),
            ObjectStoreScheme::Http => Arc::new(
                client_keys
                    .iter()
                    .fold(
                        object_store::http::HttpBuilder::new().with_url(u),
                        |b, (k, v)| b.with_config(*k, *v),
                    )
                    .with_retry(retry)
                    .build()
                    .map_err(failure)?,
            ),
            other => {
                return Err(failure(format!(
                    "{other:?} is not a remote tier this build supports"
                )));
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stepman-remote")
            .enable_all()
            .build()
            .map_err(failure)?;
        let prefix = match scheme {
            // The HTTP store's URL already ends in its base path.
            ObjectStoreScheme::Http => Key::default(),
            _ => prefix,
        };
        Ok(Client {
            store,
            prefix,
            rt,
            timeout: s.timeout,
        })
    }

    fn key(&self, rel: &str) -> Key {
        let mut k = self.prefix.clone();
        for part in rel.split('/') {
            k = k.join(part);
        }
        k
    }

    /// Runs `f` on the runtime, failing after the client's timeout (each request has its own
    /// too; this bounds a call of several).
    fn run<T>(&self, f: impl std::future::Future<Output = R<T>>) -> R<T> {
        let limit = self.timeout + self.timeout;
        self.rt.block_on(async move {
            match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                Err(_) => Err(failure(format!("no answer within {}s", limit.as_secs()))),
            }
        })
    }

    /// The whole object at `rel`, at most `max` bytes, and its version; `None`: no such key.
    pub(super) fn get_small(&self, rel: &str, max: u64) -> R<Option<(Vec<u8>, Version)>> {
        let key = self.key(rel);
        self.run(async {
            let got = match self.store.get_opts(&key, GetOptions::default()).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(failure(e)),
            };
            if got.meta.size > max {
                return Err(failure(format!(
                    "{} bytes, more than the {max} a document may have",
                    got.meta.size
                )));
            }
            let version = Version {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let body = got.bytes().await.map_err(failure)?;
            Ok(Some((body.to_vec(), version)))
        })
    }

    /// Whether an object is at `rel` (one `HEAD`).
    pub(super) fn exists(&self, rel: &str) -> R<bool> {
        let key = self.key(rel);
        self.run(async {
            match self.store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(failure(e)),
            }
        })
    }

    /// Streams the object at `rel` into `read` (a blocking reader of its body); `None`: no such
    /// key. `read`'s own result is the inner one.
    pub(super) fn get_stream<T>(
        &self,
        rel: &str,
        cancel: &AtomicBool,
        read: impl FnOnce(&mut dyn BufRead) -> T,
    ) -> R<Option<T>> {
        let key = self.key(rel);
        let stream = self.run(async {
            match self.store.get_opts(&key, GetOptions::default()).await {
                Ok(g) => Ok(Some(g.into_stream())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(failure(e)),
            }
        })?;
        let Some(stream) = stream else {
            return Ok(None);
        };
        let mut body = std::io::BufReader::with_capacity(
            256 << 10,
            Body {
                rt: &self.rt,
                stream,
                chunk: Bytes::new(),
                cancel,
                stall: self.timeout,
            },
        );
        Ok(Some(read(&mut body)))
    }

    /// Puts `body` at `rel` as `mode` says.
    pub(super) fn put(&self, rel: &str, body: Vec<u8>, mode: Put) -> R<Put> {
        self.put_rel(&self.key(rel), body, mode)
    }

    fn put_rel(&self, key: &Key, body: Vec<u8>, mode: Put) -> R<Put> {
        let (put_mode, asked) = match &mode {
            Put::Create => (PutMode::Create, Put::Create),
            Put::Replace(v) => (
                PutMode::Update(UpdateVersion {
                    e_tag: v.e_tag.clone(),
                    version: v.version.clone(),
                }),
                Put::Replace(v.clone()),
            ),
            Put::Overwrite => (PutMode::Overwrite, Put::Overwrite),
            Put::Done | Put::Exists | Put::Conflict => return Err(failure("not a put mode")),
        };
        let opts = PutOptions {
            mode: put_mode,
            ..PutOptions::default()
        };
        self.run(async {
            match self.store.put_opts(key, PutPayload::from(body), opts).await {
                Ok(_) => Ok(Put::Done),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Exists),
                Err(object_store::Error::Precondition { .. }) => Ok(match asked {
                    Put::Create => Put::Exists,
                    _ => Put::Conflict,
                }),
                Err(e) => Err(store_failure(e)),
            }
        })
    }

    /// A writer of the object at `rel` whose every writer puts the same bytes (a tree's canonical
    /// archive): up to [`PART`] bytes it is one put as `mode` says, when [`Upload::finish`]ed;
    /// beyond, a multipart upload of [`PART`]-sized parts, sent as they fill, that becomes visible
    /// only when it completes (S3: `CompleteMultipartUpload`). `object_store` cannot make a
    /// multipart upload create-only, so that one replaces what is there: the same bytes. An
    /// upload dropped unfinished is aborted.
    fn upload(&self, rel: &str, mode: Put) -> Upload<'_> {
        Upload {
            client: self,
            key: self.key(rel),
            mode,
            buf: Vec::new(),
            parts: None,
            failed: None,
        }
    }

    /// [`Client::upload`] of everything `src` reads.
    pub(super) fn upload_from(&self, rel: &str, mode: Put, src: &mut impl std::io::Read) -> R<Put> {
        let mut up = self.upload(rel, mode);
        if let Err(e) = std::io::copy(src, &mut up) {
            // The upload's own failure, if it was one, says more than the copy's error.
            return Err(up.failed.take().unwrap_or_else(|| failure(e)));
        }
        up.finish()
    }

    /// Deletes `rel` (a missing key is no error).
    pub(super) fn delete(&self, rel: &str) -> R<()> {
        let key = self.key(rel);
        self.run(async {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_failure(e)),
            }
        })
    }

    /// Every key under `rel/`, relative to the prefix, with its size.
    pub(super) fn list(&self, rel: &str) -> R<Vec<(String, u64)>> {
        let key = self.key(rel);
        let strip = self.prefix.as_ref().len();
        self.run(async {
            let mut out = Vec::new();
            let mut s = self.store.list(Some(&key));
            while let Some(m) = s.next().await {
                let m = m.map_err(failure)?;
                let full = m.location.as_ref();
                let rel = full.get(strip..).unwrap_or(full).trim_start_matches('/');
                out.push((rel.to_string(), m.size));
            }
            out.sort();
            Ok(out)
        })
    }
}

use super::PART;

/// An object being written ([`Client::upload`]).
struct Upload<'a> {
    client: &'a Client,
    key: Key,
    mode: Put,
    buf: Vec<u8>,
    parts: Option<Box<dyn MultipartUpload>>,
    /// The store's own failure, kept for [`Upload::finish`] (the writer's caller sees an I/O
    /// error that only says the upload failed).
    failed: Option<Failure>,
}

impl Upload<'_> {
    /// Sends the buffer as the next part, starting the multipart upload first.
    fn send_part(&mut self) -> R<()> {
        let client = self.client;
        if self.parts.is_none() {
            let key = self.key.clone();
            let up = client.run(async move {
                client
                    .store
                    .put_multipart_opts(&key, PutMultipartOptions::default())
                    .await
                    .map_err(store_failure)
            })?;
            self.parts = Some(up);
        }
        let body = PutPayload::from(std::mem::take(&mut self.buf));
        let Some(up) = self.parts.as_mut() else {
            return Err(failure("no multipart upload"));
        };
        let part = up.put_part(body);
        client.run(async move { part.await.map_err(store_failure) })
    }

    /// Completes the upload: the single put, or the last part and the completion. What the put's
    /// mode gave ([`Put::Done`], or [`Put::Exists`] for a create that found the key taken).
    pub(super) fn finish(mut self) -> R<Put> {
        if let Some(f) = self.failed.take() {
            return Err(f);
        }
        if self.parts.is_none() {
            let body = std::mem::take(&mut self.buf);
            let mode = std::mem::replace(&mut self.mode, Put::Overwrite);
            return self.client.put_rel(&self.key, body, mode);
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let client = self.client;
        let Some(mut up) = self.parts.take() else {
            return Err(failure("no multipart upload"));
        };
        client.run(async move {
            match up.complete().await {
                Ok(_) => Ok(Put::Done),
                Err(e) => {
                    // Best effort: a bucket rule aborts what this leaves (README).
                    let _ = up.abort().await;
                    Err(store_failure(e))
                }
            }
        })
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.failed.is_some() {
            return Err(std::io::Error::other("the upload failed"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PART
            && let Err(f) = self.send_part()
        {
            let why = std::io::Error::other(format!("the upload failed: {}", f.reason));
            self.failed = Some(f);
            return Err(why);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Some(mut up) = self.parts.take() {
            let _ = self
                .client
                .run(async move { up.abort().await.map_err(failure) });
        }
    }
}

/// An object's body as a blocking reader: each chunk waited for on the runtime, at most the
/// stall time each, and the cancel flag looked at between chunks.
struct Body<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    cancel: &'a AtomicBool,
    stall: Duration,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("cancelled"));
            }
            let stall = self.stall;
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(stall, self.stream.next()).await });
            match next {
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}s", stall.as_secs()),
                    ));
                }
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e.to_string())),
                Ok(Some(Ok(b))) => self.chunk = b,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_reason_is_one_bounded_line() {
        let page =
            "Error performing GET http://h/k: 503:\n<html>\r\n  <body>\n\tbusy</body>\n</html>\n";
        assert_eq!(
            one_line(page),
            "Error performing GET http://h/k: 503: <html> <body> busy</body> </html>"
        );
        let long = "é".repeat(1000);
        let cut = one_line(&long);
        assert!(
            cut.len() <= super::REASON_MAX + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…'));
    }
}
