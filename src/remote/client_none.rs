//! A build without the `remote` feature: no remote can be opened, so no [`Client`] exists.

use std::io::BufRead;
use std::sync::atomic::AtomicBool;

use super::{Put, Settings, Version};

/// No client: this build cannot reach an object store.
pub(super) enum Client {}

/// Why a call failed, in words.
pub(super) struct Failure {
    pub(super) reason: String,
    pub(super) denied: bool,
}

type R<T> = std::result::Result<T, Failure>;

/// Nothing can be written without a client.
pub(super) fn read_only(_: &url::Url) -> bool {
    true
}

/// No store, so no profile.
pub(super) fn aws_profile(_: &url::Url) -> Option<(String, std::path::PathBuf)> {
    None
}

/// No store, so no endpoint.
pub(super) fn endpoint(_: &url::Url) -> Option<String> {
    None
}

impl Client {
    pub(super) fn open(_: &url::Url, _: &Settings) -> R<Client> {
        Err(Failure {
            reason: "this stepman was built without the `remote` feature".into(),
            denied: false,
        })
    }
    pub(super) fn get_small(&self, _: &str, _: u64) -> R<Option<(Vec<u8>, Version)>> {
        match *self {}
    }
    pub(super) fn exists(&self, _: &str) -> R<bool> {
        match *self {}
    }
    pub(super) fn get_stream<T>(
        &self,
        _: &str,
        _: &AtomicBool,
        _: impl FnOnce(&mut dyn BufRead) -> T,
    ) -> R<Option<T>> {
        match *self {}
    }
    pub(super) fn put(&self, _: &str, _: Vec<u8>, _: Put) -> R<Put> {
        match *self {}
    }
    pub(super) fn upload_from(&self, _: &str, _: Put, _: &mut impl std::io::Read) -> R<Put> {
        match *self {}
    }
    pub(super) fn delete(&self, _: &str) -> R<()> {
        match *self {}
    }
    pub(super) fn list(&self, _: &str) -> R<Vec<(String, u64)>> {
        match *self {}
    }
}
