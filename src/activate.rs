//! The step API under its earlier path: everything is in [`crate::step`].

pub use crate::step::*;
