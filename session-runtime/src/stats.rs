//! Counters of what the sessions did, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a [`Sessions`](crate::Sessions) did since it was built. Cheap to read; every
/// counter only grows.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions = Bot::builder().default_store(multisession::stores::MemoryStore::new()).build();
/// let ctx = ChatContext::new(1);
/// sessions.run(&ctx, |s| async move { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// sessions.run(&ctx, |s| async move { let _ = *s.count().await?; Ok::<_, multisession::Error>(()) }).await?;
/// let stats = sessions.stats();
/// assert_eq!((stats.updates, stats.reads, stats.writes), (2, 2, 1));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Updates committed or discarded by `run`, `commit` and strict `save`.
    pub updates: u64,
    /// Fragment values read from stores.
    pub reads: u64,
    /// Fragment values written.
    pub writes: u64,
    /// Fragment values deleted.
    pub deletes: u64,
    /// Fragments taken mutably (or set, or put back by strict mode) whose value ended up
    /// equal to what was loaded: not written (rule S22).
    pub skipped_writes: u64,
    /// Writes not made because the stored value already had this update's change: the
    /// same update delivered again, or re-run after a partial commit (rule S25).
    pub repeats: u64,
    /// Handler re-runs because of a conflict or a partial or unknown commit.
    pub commit_retries: u64,
    /// Handler re-runs because the update would have closed a cycle of updates waiting
    /// for each other's keys in this process.
    pub contention_retries: u64,
    /// Conditional writes rejected because another process changed the value.
    pub conflicts: u64,
    /// Handler re-runs of any cause (`commit_retries + contention_retries`).
    pub retries: u64,
    /// Errors returned by loads and commits (store, decode, conflict, save errors).
    pub errors: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) updates: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) skipped_writes: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) repeats: AtomicU64,
    pub(crate) commit_retries: AtomicU64,
    pub(crate) contention_retries: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            updates: get(&self.updates),
            reads: get(&self.reads),
            writes: get(&self.writes),
            deletes: get(&self.deletes),
            skipped_writes: get(&self.skipped_writes),
            conflicts: get(&self.conflicts),
            repeats: get(&self.repeats),
            commit_retries: get(&self.commit_retries),
            contention_retries: get(&self.contention_retries),
            retries: get(&self.commit_retries) + get(&self.contention_retries),
            errors: get(&self.errors),
        }
    }
}
