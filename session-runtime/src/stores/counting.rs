use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use crate::store::{
    Capabilities, ImmediateStore, Outcome, Page, Record, Store, StoreError, StoreRef, Write,
};

/// Wraps a store and counts what goes through it.
///
/// Cheap to clone; clones share the counters. Use it to check what a handler costs, in
/// tests and in production metrics alike.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use multisession::{store::Store, stores::{CountingStore, MemoryStore}};
///
/// let store = CountingStore::new(MemoryStore::new());
/// store.write("k", b"v", None).await.unwrap();
/// store.read("k").await.unwrap();
/// store.read_many(&["k", "missing"]).await.unwrap();
/// let counts = store.counts();
/// assert_eq!((counts.reads, counts.read_calls, counts.writes), (3, 2, 1));
/// # }
/// ```
#[derive(Clone)]
pub struct CountingStore {
    inner: StoreRef,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_calls: AtomicU64,
    writes: AtomicU64,
    deletes: AtomicU64,
    write_calls: AtomicU64,
    conflicts: AtomicU64,
}

/// A snapshot of a [`CountingStore`]'s counters.
///
/// Snapshots subtract, so the cost of one step is `after - before`:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, stores::{CountingStore, Counts, MemoryStore}};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     lang: String,
/// }
///
/// let store = CountingStore::new(MemoryStore::new());
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// let before = store.counts();
/// sessions.run(&ChatContext::new(1), async |s| {
///     *s.count().await? += 1; // `lang` is never touched
///     Ok::<_, multisession::Error>(())
/// }).await?;
/// let cost = store.counts() - before;
/// assert_eq!(cost, Counts { reads: 1, read_calls: 1, writes: 1, write_calls: 1, ..Counts::default() });
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys read (a batch read of three keys counts three).
    pub reads: u64,
    /// Read round trips (`read` and `read_many` calls).
    pub read_calls: u64,
    /// Values written.
    pub writes: u64,
    /// Keys deleted.
    pub deletes: u64,
    /// Write round trips (`write`, `delete` and `apply` calls).
    pub write_calls: u64,
    /// Conditional writes rejected as conflicts.
    pub conflicts: u64,
}

impl Counts {
    /// Reads, writes and deletes added up.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CountingStore, MemoryStore}};
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// store.write("k", b"v", None).await?;
    /// store.read_many(&["k", "j"]).await?;
    /// store.delete("k").await?;
    /// assert_eq!(store.counts().operations(), 4); // 1 write + 2 reads + 1 delete
    /// # Ok(()) }
    /// ```
    pub fn operations(&self) -> u64 {
        self.reads + self.writes + self.deletes
    }

    /// Round trips of any kind.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CountingStore, MemoryStore}};
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// store.write("k", b"v", None).await?;
    /// store.read_many(&["k", "j"]).await?; // two keys, one round trip
    /// assert_eq!(store.counts().round_trips(), 2);
    /// # Ok(()) }
    /// ```
    pub fn round_trips(&self) -> u64 {
        self.read_calls + self.write_calls
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, rhs: Counts) -> Counts {
        Counts {
            reads: self.reads - rhs.reads,
            read_calls: self.read_calls - rhs.read_calls,
            writes: self.writes - rhs.writes,
            deletes: self.deletes - rhs.deletes,
            write_calls: self.write_calls - rhs.write_calls,
            conflicts: self.conflicts - rhs.conflicts,
        }
    }
}

impl CountingStore {
    /// Counts the operations on `inner` (any store, or a [`StoreRef`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::{CountingStore, MemoryStore}};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// let sessions = Bot::builder().default_store(store.clone()).build();
    /// sessions.run(&ChatContext::new(1), async |s| {
    ///     let _seen = *s.count().await?; // read, not changed
    ///     Ok::<_, multisession::Error>(())
    /// }).await?;
    /// assert_eq!((store.counts().reads, store.counts().writes), (1, 0));
    /// # Ok(()) }
    /// ```
    pub fn new(inner: impl Into<StoreRef>) -> Self {
        Self {
            inner: inner.into(),
            counters: Arc::default(),
        }
    }

    /// The counters now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CountingStore, MemoryStore}};
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// store.write("k", b"v", None).await?;
    /// let counts = store.counts();
    /// assert_eq!((counts.writes, counts.write_calls, counts.reads), (1, 1, 0));
    /// # Ok(()) }
    /// ```
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            reads: c.reads.load(Ordering::Relaxed),
            read_calls: c.read_calls.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            write_calls: c.write_calls.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter back to zero.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CountingStore, Counts, MemoryStore}};
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// store.write("k", b"v", None).await?; // setup, not to be counted
    /// store.reset();
    /// assert_eq!(store.counts(), Counts::default());
    /// store.read("k").await?;
    /// assert_eq!(store.counts().reads, 1);
    /// # Ok(()) }
    /// ```
    pub fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.reads,
            &c.read_calls,
            &c.writes,
            &c.deletes,
            &c.write_calls,
            &c.conflicts,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// The wrapped store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CountingStore, MemoryStore}};
    ///
    /// let store = CountingStore::new(MemoryStore::new());
    /// assert_eq!(store.inner().as_dyn().name(), "memory");
    /// // Going around the counter: not counted.
    /// store.inner().as_dyn().write("k", b"v", None).await?;
    /// assert_eq!(store.counts().writes, 0);
    /// assert!(store.read("k").await?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn inner(&self) -> &StoreRef {
        &self.inner
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a batch of writes before it goes out.
    fn count_writes(&self, writes: &[Write]) {
        let deletes = writes
            .iter()
            .filter(|w| matches!(w, Write::Delete { .. }))
            .count();
        Self::add(&self.counters.writes, writes.len() - deletes);
        Self::add(&self.counters.deletes, deletes);
        Self::add(&self.counters.write_calls, 1);
    }
}

/// Counts as the async methods do, for an inner store that answers at once.
impl ImmediateStore for CountingStore {
    fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let Some(inner) = self.inner.as_dyn().immediate() else {
            return Err(StoreError::Unsupported("read_now"));
        };
        Self::add(&self.counters.reads, 1);
        Self::add(&self.counters.read_calls, 1);
        inner.read_now(key)
    }

    fn apply_now(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        let Some(inner) = self.inner.as_dyn().immediate() else {
            return writes
                .iter()
                .map(|_| Err(StoreError::Unsupported("apply_now")))
                .collect();
        };
        self.count_writes(writes);
        let results = inner.apply_now(writes);
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Ok(Outcome::Conflict)))
            .count();
        Self::add(&self.counters.conflicts, conflicts);
        results
    }
}

#[async_trait]
impl Store for CountingStore {
    fn name(&self) -> &str {
        self.inner.as_dyn().name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.as_dyn().capabilities()
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.counters) as usize
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        self.inner
            .as_dyn()
            .immediate()
            .map(|_| self as &dyn ImmediateStore)
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Self::add(&self.counters.reads, 1);
        Self::add(&self.counters.read_calls, 1);
        self.inner.as_dyn().read(key).await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        Self::add(&self.counters.writes, 1);
        Self::add(&self.counters.write_calls, 1);
        self.inner.as_dyn().write(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Self::add(&self.counters.deletes, 1);
        Self::add(&self.counters.write_calls, 1);
        self.inner.as_dyn().delete(key).await
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        Self::add(&self.counters.reads, keys.len());
        Self::add(&self.counters.read_calls, 1);
        self.inner.as_dyn().read_many(keys).await
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        Self::add(&self.counters.reads, 1);
        Self::add(&self.counters.read_calls, 1);
        self.inner.as_dyn().read_with_ttl(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        Self::add(&self.counters.read_calls, 1);
        let page = self.inner.as_dyn().list(prefix, cursor, limit).await?;
        Self::add(&self.counters.reads, page.entries.len());
        Ok(page)
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        Self::add(&self.counters.read_calls, 1);
        self.inner.as_dyn().count(prefix).await
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        crate::store::without_revisions(self.apply_with_revisions(writes).await)
    }

    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        self.count_writes(writes);
        let results = self.inner.as_dyn().apply_with_revisions(writes).await;
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Ok((Outcome::Conflict, _))))
            .count();
        Self::add(&self.counters.conflicts, conflicts);
        results
    }
}
