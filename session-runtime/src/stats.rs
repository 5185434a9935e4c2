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

/// One of the counters of [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    Updates,
    Reads,
    Writes,
    Deletes,
    SkippedWrites,
    Conflicts,
    Repeats,
    CommitRetries,
    ContentionRetries,
    Errors,
}

const COUNTERS: usize = 10;

/// Threads with a shard of their own (each counter of every `Counters`); later threads
/// share the last shard.
const OWN_SHARDS: usize = 32;

/// One set of counters, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard([AtomicU64; COUNTERS]);

/// The counters of one [`Sessions`](crate::Sessions), by thread: every update adds to
/// several, so each of the first [`OWN_SHARDS`] threads to count anything has a shard
/// only it writes — a load and a store, where a counter shared by every thread would
/// take an atomic read-modify-write (tens of cycles, and a cache line that moves between
/// cores under load). The others share one shard and add atomically. Reading sums the
/// shards: exact once the counting threads are done.
pub(crate) struct Counters {
    shards: Box<[Shard]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            shards: (0..=OWN_SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// This thread's shard number: below [`OWN_SHARDS`], its own; [`OWN_SHARDS`], shared.
#[inline]
fn shard_of_thread() -> usize {
    use std::{cell::Cell, sync::atomic::AtomicUsize};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        let mut number = shard.get();
        if number == usize::MAX {
            // Numbers are never given twice, so no two threads ever own one shard.
            number = NEXT.fetch_add(1, Ordering::Relaxed).min(OWN_SHARDS);
            shard.set(number);
        }
        number
    })
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let shard = shard_of_thread();
        let cell = &self.shards[shard].0[counter as usize];
        if shard < OWN_SHARDS {
            // Only this thread writes this shard.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self, counter: Counter) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0[counter as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |counter| self.get(counter);
        Stats {
            updates: get(Counter::Updates),
            reads: get(Counter::Reads),
            writes: get(Counter::Writes),
            deletes: get(Counter::Deletes),
            skipped_writes: get(Counter::SkippedWrites),
            conflicts: get(Counter::Conflicts),
            repeats: get(Counter::Repeats),
            commit_retries: get(Counter::CommitRetries),
            contention_retries: get(Counter::ContentionRetries),
            retries: get(Counter::CommitRetries) + get(Counter::ContentionRetries),
            errors: get(Counter::Errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counters = std::sync::Arc::new(Counters::default());
        // More threads than own shards: some share the last one.
        let threads: Vec<_> = (0..OWN_SHARDS + 8)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.add(Counter::Updates, 1);
                        counters.add(Counter::Writes, 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stats = counters.snapshot();
        let threads = (OWN_SHARDS + 8) as u64;
        assert_eq!(
            (stats.updates, stats.writes),
            (threads * 1000, threads * 2000)
        );
        assert_eq!(stats.reads, 0);
    }
}
