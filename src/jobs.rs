//! Thread pools for work that waits on the network or on child processes (audit's clones,
//! `remote verify`'s and `remote push`'s requests): a pool's size is how many requests or
//! clones are in flight at once, not the number of cores, so each such run gets a pool of its
//! own, apart from rayon's global pool, which the CPU-bound work (hashing, fsck, copying) uses.
//!
//! Invariant: [`in_pool`] never fails. When a pool of its own cannot start (no thread could be
//! made), the work runs on rayon's global pool instead, with a note in the log: fewer requests
//! at once, the same result.

/// Runs `work` with up to `threads` of its own threads serving its rayon parallelism (`what`
/// names the work in the log); on rayon's global pool when they cannot start.
pub(crate) fn in_pool<T: Send>(threads: usize, what: &str, work: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(work),
        Err(e) => {
            log::info!("{what}: no threads of its own ({e}); on the shared pool");
            work()
        }
    }
}
