//! A revision-checked cache in front of any store: reads of records this process read or
//! wrote a moment ago cost no round trip; writes stay compare-and-set on the store.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::store::{Capabilities, Outcome, Page, Record, Store, StoreError, StoreRef, Write};

/// A cached read: the record (or its absence), when it was learnt, when it expires.
struct Entry {
    record: Option<Record>,
    learnt: Instant,
    expires: Option<Instant>,
}

/// What a [`CachedStore`] served and why.
///
/// ```
/// use multisession::stores::CacheStats;
///
/// let stats = CacheStats::default();
/// assert_eq!((stats.hits, stats.misses, stats.evicted_on_conflict, stats.invalidations), (0, 0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the store (not cached, too old, or expired).
    pub misses: u64,
    /// Entries dropped because a compare-and-set on them failed: the cache was stale
    /// (another process wrote the key), and the update re-ran on the fresh value.
    pub evicted_on_conflict: u64,
    /// Invalidations received through an [`Invalidator`] (one per key, or per flush).
    pub invalidations: u64,
}

/// A bounded cache in front of a store (the tower-sessions `CachingSessionStore` idea,
/// made safe by revisions).
///
/// - Reads ([`Store::read`], [`Store::read_many`]) are answered from the cache when it
///   holds the key (a record or its absence) learnt less than
///   [`max_staleness`](CachedStore::max_staleness) ago and not expired; otherwise from the
///   store, and remembered.
/// - Writes go to the store as they are: compare-and-set on the revision the handler
///   read. A put whose new revision the store reports
///   ([`Store::apply_with_revisions`]: the memory and Redis stores) is cached with it, so
///   the next update of the same key reads nothing; anything else (no revision, a
///   conflict, an error) drops the key from the cache.
/// - **A stale entry never loses an update**: a write based on it fails its
///   compare-and-set, the entry is dropped, and the runtime re-runs the update on the
///   fresh value (rule S17). What staleness can do is let a handler that only *reads* a
///   fragment see a value another process changed, for at most `max_staleness` (1 s by
///   default). With one process per store there is no other writer and nothing is ever
///   stale: set `max_staleness(None)`.
/// - Listing, counting and [`Store::read_with_ttl`] always go to the store.
///
/// The cache is per process: other processes' writes are noticed through conflicts and
/// the staleness bound, and sooner when the store pushes invalidations through an
/// [`Invalidator`] ([`RedisStore::track_for`](crate::stores::RedisStore::track_for)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, stores::{CachedStore, CountingStore, MemoryStore}};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// // A counting store stands in for a remote one: it counts the round trips.
/// let remote = CountingStore::new(MemoryStore::new());
/// let cached = CachedStore::new(remote.clone(), 10_000);
/// let sessions = Bot::builder().default_store(cached.clone()).build();
/// for _ in 0..3 {
///     sessions.run(&ChatContext::new(1), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// }
/// // One read (the first update), three writes.
/// assert_eq!((remote.counts().reads, remote.counts().writes), (1, 3));
/// assert_eq!(cached.stats().hits, 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: StoreRef,
    name: String,
    cache: quick_cache::sync::Cache<String, Arc<Entry>>,
    max_staleness: Option<Duration>,
    hits: AtomicU64,
    misses: AtomicU64,
    evicted_on_conflict: AtomicU64,
    /// Bumped by every invalidation: a read or write under way when it changes does not
    /// fill the cache (its answer may predate the change the invalidation announced).
    epoch: AtomicU64,
    invalidations: AtomicU64,
}

/// How a store tells a [`CachedStore`] that keys changed elsewhere (another process wrote
/// them), so their entries go at once instead of after the staleness bound. Cheap to
/// clone; holds the cache weakly (a dropped cache ignores invalidations).
///
/// [`RedisStore::track_for`](crate::stores::RedisStore::track_for) feeds one from Redis'
/// client-side-caching invalidations; anything else that learns of changes can call it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::Store, stores::{CachedStore, MemoryStore}};
///
/// let shared = MemoryStore::new();
/// let cached = CachedStore::new(shared.clone(), 100).max_staleness(None);
/// let invalidator = cached.invalidator();
/// shared.write("count:1", b"1", None).await?;
/// cached.read("count:1").await?; // cached
/// shared.write("count:1", b"2", None).await?; // "another process"
/// invalidator.invalidate("count:1");
/// assert_eq!(cached.read("count:1").await?.unwrap().value, b"2");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Invalidator {
    cache: Weak<Inner>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidator")
            .field("live", &self.is_live())
            .finish()
    }
}

impl Invalidator {
    /// Drops `key` (a store key, as the cache's callers use it) from the cache.
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// cached.invalidator().invalidate("count:1"); // not cached: nothing happens
    /// ```
    pub fn invalidate(&self, key: &str) {
        if let Some(cache) = self.cache.upgrade() {
            cache.epoch.fetch_add(1, Ordering::SeqCst);
            cache.invalidations.fetch_add(1, Ordering::Relaxed);
            cache.cache.remove(key);
        }
    }

    /// Drops everything (the store lost track: a reconnect, a flush).
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// cached.invalidator().invalidate_all();
    /// ```
    pub fn invalidate_all(&self) {
        if let Some(cache) = self.cache.upgrade() {
            cache.epoch.fetch_add(1, Ordering::SeqCst);
            cache.invalidations.fetch_add(1, Ordering::Relaxed);
            cache.cache.clear();
        }
    }

    /// Whether the cache still exists.
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// let invalidator = cached.invalidator();
    /// assert!(invalidator.is_live());
    /// drop(cached);
    /// assert!(!invalidator.is_live());
    /// ```
    pub fn is_live(&self) -> bool {
        self.cache.strong_count() > 0
    }
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("store", &self.inner.name)
            .field("entries", &self.inner.cache.len())
            .field("capacity", &self.inner.cache.capacity())
            .field("max_staleness", &self.inner.max_staleness)
            .finish()
    }
}

impl CachedStore {
    /// `store` behind a cache of at most `capacity` keys (a count of keys, not bytes;
    /// beyond it `quick_cache` evicts by its own policy), with the default staleness
    /// bound of 1 s.
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 100_000);
    /// assert!(format!("{cached:?}").contains("capacity: 100000"));
    /// ```
    pub fn new(store: impl Into<StoreRef>, capacity: usize) -> Self {
        Self::build(store.into(), capacity, Some(Duration::from_secs(1)))
    }

    fn build(store: StoreRef, capacity: usize, max_staleness: Option<Duration>) -> Self {
        let name = format!("cached {}", store.as_dyn().name());
        CachedStore {
            inner: Arc::new(Inner {
                store,
                name,
                cache: quick_cache::sync::Cache::new(capacity.max(1)),
                max_staleness,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evicted_on_conflict: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                invalidations: AtomicU64::new(0),
            }),
        }
    }

    /// How old a cached entry may be and still answer a read (`None`: no bound, for a
    /// store no other process writes). Bounds how long a read-only access can see a
    /// value another process changed; writes are never affected (compare-and-set).
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    /// use std::time::Duration;
    ///
    /// // Several processes share the store: read-only accesses lag at most 200 ms.
    /// let cached = CachedStore::new(MemoryStore::new(), 10_000).max_staleness(Some(Duration::from_millis(200)));
    /// # let _ = cached;
    /// ```
    pub fn max_staleness(mut self, bound: Option<Duration>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.max_staleness = bound;
                self
            }
            // Shared already (a clone, an invalidator): a new cache with the new bound.
            None => {
                let capacity = usize::try_from(self.inner.cache.capacity()).unwrap_or(usize::MAX);
                Self::build(self.inner.store.clone(), capacity, bound)
            }
        }
    }

    /// A handle through which a store (or anything that learns of changes) drops
    /// entries another process made stale. See [`Invalidator`].
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// let invalidator = cached.invalidator();
    /// invalidator.invalidate("count:1");
    /// assert_eq!(cached.stats().invalidations, 1);
    /// ```
    pub fn invalidator(&self) -> Invalidator {
        Invalidator {
            cache: Arc::downgrade(&self.inner),
        }
    }

    /// What the cache served so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{CachedStore, MemoryStore}};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// cached.read("count:1").await?; // a miss: absence is cached too
    /// cached.read("count:1").await?; // a hit
    /// assert_eq!((cached.stats().hits, cached.stats().misses), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            evicted_on_conflict: self.inner.evicted_on_conflict.load(Ordering::Relaxed),
            invalidations: self.inner.invalidations.load(Ordering::Relaxed),
        }
    }

    /// Forgets everything cached (the next reads go to the store).
    ///
    /// ```
    /// use multisession::stores::{CachedStore, MemoryStore};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// cached.clear();
    /// ```
    pub fn clear(&self) {
        self.inner.cache.clear();
    }

    /// The store behind the cache.
    ///
    /// ```
    /// use multisession::{store::Store, stores::{CachedStore, MemoryStore}};
    ///
    /// let cached = CachedStore::new(MemoryStore::new(), 10);
    /// assert_eq!(cached.store().as_dyn().name(), "memory");
    /// ```
    pub fn store(&self) -> &StoreRef {
        &self.inner.store
    }

    /// The cached answer for `key`, if fresh enough.
    fn cached(&self, key: &str, now: Instant) -> Option<Option<Record>> {
        let entry = self.inner.cache.get(key)?;
        let fresh = self
            .inner
            .max_staleness
            .is_none_or(|bound| now.saturating_duration_since(entry.learnt) <= bound);
        let live = entry.expires.is_none_or(|at| now < at);
        (fresh && live).then(|| entry.record.clone())
    }

    /// Remembers what a read found, unless the cache already holds a newer revision
    /// (a write of this process that landed while the read was under way).
    fn learn(
        &self,
        key: &str,
        record: Option<Record>,
        learnt: Instant,
        expires: Option<Instant>,
        epoch: u64,
    ) {
        if self.inner.epoch.load(Ordering::SeqCst) != epoch {
            // An invalidation came while the read was under way: it may predate it.
            return;
        }
        let newer_held = record.as_ref().is_some_and(|found| {
            self.inner.cache.peek(key).is_some_and(|held| {
                held.record
                    .as_ref()
                    .is_some_and(|h| h.revision > found.revision)
            })
        });
        if newer_held {
            return;
        }
        self.inner.cache.insert(
            key.to_owned(),
            Arc::new(Entry {
                record,
                learnt,
                expires,
            }),
        );
    }

    fn count_hits(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.inner.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.inner.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Store for CachedStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.store.as_dyn().capabilities()
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let now = Instant::now();
        if let Some(record) = self.cached(key, now) {
            self.count_hits(1, 0);
            return Ok(record);
        }
        self.count_hits(0, 1);
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let store = self.inner.store.as_dyn();
        // With expiry in the store, learn when the value expires, so the cache never
        // answers with an expired one.
        if store.capabilities().native_ttl {
            match store.read_with_ttl(key).await {
                Ok(found) => {
                    let (record, ttl) = found.map_or((None, None), |(r, ttl)| (Some(r), ttl));
                    self.learn(key, record.clone(), now, ttl.map(|ttl| now + ttl), epoch);
                    return Ok(record);
                }
                Err(StoreError::Unsupported(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let record = store.read(key).await?;
        self.learn(key, record.clone(), now, None, epoch);
        Ok(record)
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let now = Instant::now();
        let mut out: Vec<Option<Option<Record>>> =
            keys.iter().map(|key| self.cached(key, now)).collect();
        let missing: Vec<&str> = keys
            .iter()
            .zip(&out)
            .filter(|(_, hit)| hit.is_none())
            .map(|(key, _)| *key)
            .collect();
        self.count_hits((keys.len() - missing.len()) as u64, missing.len() as u64);
        if !missing.is_empty() {
            let native_ttl = self.inner.store.as_dyn().capabilities().native_ttl;
            let epoch = self.inner.epoch.load(Ordering::SeqCst);
            let fetched = self.inner.store.as_dyn().read_many(&missing).await?;
            let mut fetched = missing.iter().zip(fetched);
            for slot in out.iter_mut().filter(|slot| slot.is_none()) {
                let (key, record) = fetched
                    .next()
                    .ok_or_else(|| StoreError::Corrupt("read_many returned too few".into()))?;
                // Expiry is unknown from a batch read: with a store that expires values,
                // only absence is remembered (a cached value must never outlive its
                // expiry); what this process writes is cached with its TTL either way.
                if !native_ttl || record.is_none() {
                    self.learn(key, record.clone(), now, None, epoch);
                }
                *slot = Some(record);
            }
        }
        Ok(out.into_iter().map(|slot| slot.flatten()).collect())
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        self.inner.store.as_dyn().read_with_ttl(key).await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.cache.remove(key);
        let result = self.inner.store.as_dyn().write(key, value, ttl).await;
        self.inner.cache.remove(key);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.cache.remove(key);
        let result = self.inner.store.as_dyn().delete(key).await;
        self.inner.cache.remove(key);
        result
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        crate::store::without_revisions(self.apply_with_revisions(writes).await)
    }

    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let results = self.inner.store.as_dyn().apply_with_revisions(writes).await;
        let now = Instant::now();
        // An invalidation during the write: another process may have written one of
        // these keys after it; keep none of them.
        let unchanged = self.inner.epoch.load(Ordering::SeqCst) == epoch;
        for (write, result) in writes.iter().zip(&results) {
            let key = write.key();
            match (write, result) {
                (Write::Put { value, ttl, .. }, Ok((Outcome::Applied, Some(revision))))
                    if unchanged =>
                {
                    self.inner.cache.insert(
                        key.to_owned(),
                        Arc::new(Entry {
                            record: Some(Record::new(value.clone(), *revision)),
                            learnt: now,
                            expires: ttl.map(|ttl| now + ttl),
                        }),
                    )
                }
                // A delete that landed: the key is absent now.
                (Write::Delete { .. }, Ok((Outcome::Applied, _))) if unchanged => {
                    self.inner.cache.insert(
                        key.to_owned(),
                        Arc::new(Entry {
                            record: None,
                            learnt: now,
                            expires: None,
                        }),
                    )
                }
                (_, Ok((Outcome::Conflict, _))) => {
                    self.inner
                        .evicted_on_conflict
                        .fetch_add(1, Ordering::Relaxed);
                    self.inner.cache.remove(key);
                }
                _ => {
                    self.inner.cache.remove(key);
                }
            }
        }
        results
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.store.as_dyn().list(prefix, cursor, limit).await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.store.as_dyn().count(prefix).await
    }
}
