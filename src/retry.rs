//! The one retry policy for the lock-free lookup race.
//!
//! Lookups take no lock (a cache hit must need no write access), so between reading a name and
//! using the object it points at, an `update` may re-point the name (or a `delete` unbind it)
//! and a gc collect the object. The reader then sees the object gone, and looks again: the
//! name's new target (or, after a delete, the work redone: a setup, a download) is as good an
//! answer as the first one would have been, so retrying is correct.
//!
//! It is bounded: every site retries only after it observed the change (the name reads
//! differently, the object it resolved is gone, the name is unbound), never on a failure of its
//! own; so it cannot loop unless the name keeps changing under it, and [`Race`] stops it after a
//! fixed number of retries even then, with the error the last attempt met. The limits:
//!
//! - [`Race::LOOKUP`] (16) where a retry is one more read of a symlink or a file
//!   (`Store::resolve`, opening a collection): cheap, so generous.
//! - [`Race::REOPEN`] (8) where a retry reopens a collection in the middle of a resolution,
//!   itself a [`Race::LOOKUP`] loop.
//! - [`Race::REDO`] (3) where a retry redoes costly work after a concurrent `delete` (a
//!   collection setup, a step download, a whole listing of a collection by `preload`, whose
//!   first pass counts too, so three passes in all): a user who deletes in a loop while
//!   others work gets an error soon rather than an endless series of downloads.

/// Counts the retries of one operation against its limit (see the module doc).
#[derive(Debug)]
pub(crate) struct Race {
    left: u32,
}

impl Race {
    /// A retry reads a name or a file again.
    pub(crate) const LOOKUP: u32 = 16;
    /// A retry reopens a collection.
    pub(crate) const REOPEN: u32 = 8;
    /// A retry redoes a setup, a download or a listing.
    pub(crate) const REDO: u32 = 3;

    /// At most `max` retries: one of [`Race::LOOKUP`], [`Race::REOPEN`], [`Race::REDO`].
    pub(crate) const fn new(max: u32) -> Race {
        Race { left: max }
    }

    /// Counts one retry: false when the limit is spent (the caller then returns the error it
    /// met). A site retries only when this is true and it observed the change.
    pub(crate) fn again(&mut self) -> bool {
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Race;

    #[test]
    fn a_race_allows_exactly_its_limit_of_retries() {
        let mut race = Race::new(Race::REDO);
        let allowed = std::iter::from_fn(|| Some(race.again()))
            .take(10)
            .filter(|&a| a)
            .count();
        assert_eq!(allowed, 3);
        assert!(!race.again());
    }
}
