//! `stepman`: a step manager for CI runners, built on a content-addressed store with immutable
//! entries.
//!
//! The library owns all behaviour; the `stepman` binary parses arguments and prints. The library
//! never prints, never exits and never panics on bad input or on a race: it returns [`Error`]s
//! that name the path and the operation.
//!
//! The store's on-disk format is specified in `store-format.md`; [`layout`] is the one module that
//! knows it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
mod export;
pub mod fsck;
pub mod gc;
pub mod hash;
mod ingest;
pub mod layout;
mod lock;
mod scan;
pub mod store;
mod sys;
mod tmp;

pub use error::{Error, Result};
pub use hash::ObjectId;
pub use ingest::{Durability, Limits};
pub use layout::{Layout, Name};
pub use store::{Imported, Store};
pub use tmp::SweepReport;
