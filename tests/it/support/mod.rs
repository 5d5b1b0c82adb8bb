//! What the integration tests share.

pub(crate) mod common;
pub(crate) mod fixtures;
pub(crate) mod hostile_server;
