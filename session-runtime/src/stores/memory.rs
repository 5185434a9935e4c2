use std::{
    collections::{BTreeSet, HashMap},
    io::{self, Read, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};

use crate::store::{Capabilities, ImmediateStore, Outcome, Page, Record, Store, StoreError, Write};

/// An in-process store: a hash map behind a mutex.
///
/// Cheap to clone; clones share the data. It supports everything the runtime can use:
/// compare-and-set, atomic batches, batch reads and expiry (an expired value reads as
/// missing and is dropped when it is next touched).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use multisession::{store::Store, stores::MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write("k", b"v", None).await.unwrap();
/// assert_eq!(store.read("k").await.unwrap().unwrap().value, b"v");
/// assert_eq!(store.len(), 1);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    map: Mutex<Table>,
    revisions: AtomicU64,
    default_ttl: Option<Duration>,
    snapshot: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: save the snapshot one final time.
        if let Some(path) = &self.snapshot
            && let Err(error) = write_snapshot(path, self.map.get_mut().iter())
        {
            tracing::error!(path = %path.display(), %error, "could not save the memory store snapshot");
        }
    }
}

/// Options of a [`MemoryStore`]: default TTL, sweep interval, snapshot file.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::stores::MemoryStore;
/// use std::time::Duration;
///
/// let store = MemoryStore::options()
///     .default_ttl(Duration::from_secs(24 * 3600))
///     .sweep_every(Duration::from_secs(60))
///     .snapshot("sessions.snapshot", Duration::from_secs(30))
///     .open()?;
/// // ... run the bot ...
/// store.save_snapshot()?; // also saved every 30 s and when the last handle is dropped
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "call `.open()` to get the store"]
pub struct MemoryOptions {
    default_ttl: Option<Duration>,
    sweep_every: Option<Duration>,
    snapshot: Option<(PathBuf, Duration)>,
}

impl MemoryOptions {
    /// Values written without a TTL expire after `ttl`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let store = MemoryStore::options().default_ttl(Duration::from_millis(20)).open()?;
    /// store.write("quiz:7", b"{}", None).await?; // no TTL of its own: gets the default
    /// store.write("pizza:7", b"1", Some(Duration::from_secs(3600))).await?;
    /// tokio::time::sleep(Duration::from_millis(50)).await;
    /// assert!(store.read("quiz:7").await?.is_none());
    /// assert!(store.read("pizza:7").await?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Removes expired values every `interval` in a background task (needs a tokio
    /// runtime). Without it, expired values read as missing and are dropped when touched.
    ///
    /// ```
    /// use multisession::stores::MemoryStore;
    /// use std::time::Duration;
    ///
    /// let options = MemoryStore::options()
    ///     .default_ttl(Duration::from_secs(24 * 3600))
    ///     .sweep_every(Duration::from_secs(60));
    /// // The sweeper is a tokio task: outside a runtime, `open` says so.
    /// assert!(options.clone().open().is_err());
    ///
    /// tokio::runtime::Runtime::new().unwrap().block_on(async {
    ///     let store = options.open().unwrap(); // sweeps every minute while the store lives
    ///     assert!(store.is_empty());
    /// });
    /// ```
    pub fn sweep_every(mut self, interval: Duration) -> Self {
        self.sweep_every = Some(interval);
        self
    }

    /// Loads the store from `path` if it exists, saves it there every `interval` (in a
    /// background task) and when the last handle is dropped. Saves are atomic: a temporary
    /// file renamed over the old one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("sessions-{}.snapshot", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let store = MemoryStore::options().snapshot(&path, Duration::from_secs(30)).open()?;
    /// store.write("pizza:42", b"3", None).await?;
    /// drop(store); // the last handle: saved
    ///
    /// // After a restart, the sessions are back.
    /// let store = MemoryStore::options().snapshot(&path, Duration::from_secs(30)).open()?;
    /// assert_eq!(store.read("pizza:42").await?.unwrap().value, b"3");
    /// # drop(store);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn snapshot(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.snapshot = Some((path.into(), interval));
        self
    }

    /// The store. Fails if the snapshot file exists but cannot be read or is corrupt:
    /// a damaged snapshot is never silently replaced by an empty store.
    ///
    /// ```
    /// use multisession::{store::StoreError, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("damaged-{}.snapshot", std::process::id()));
    /// std::fs::write(&path, b"not a snapshot").unwrap();
    /// let opened = MemoryStore::options().snapshot(&path, Duration::from_secs(30)).open();
    /// assert!(matches!(opened, Err(StoreError::Corrupt(_))));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn open(self) -> Result<MemoryStore, StoreError> {
        let (map, last_revision) = match &self.snapshot {
            Some((path, _)) => read_snapshot(path)?,
            None => (Table::default(), 0),
        };
        let store = MemoryStore {
            inner: Arc::new(Inner {
                map: Mutex::new(map),
                revisions: AtomicU64::new(last_revision),
                default_ttl: self.default_ttl,
                snapshot: self.snapshot.as_ref().map(|(path, _)| path.clone()),
            }),
        };
        if let Some(interval) = self.sweep_every {
            spawn_every(&store, interval, |store| {
                store.sweep();
            })?;
        }
        if let Some((_, interval)) = self.snapshot {
            spawn_every(&store, interval, |store| {
                if let Err(error) = store.save_snapshot() {
                    tracing::error!(%error, "could not save the memory store snapshot");
                }
            })?;
        }
        Ok(store)
    }
}

/// Runs `job` every `interval` for as long as the store has handles.
fn spawn_every(
    store: &MemoryStore,
    interval: Duration,
    job: fn(&MemoryStore),
) -> Result<(), StoreError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::backend("memory store background tasks need a tokio runtime"))?;
    let weak: Weak<Inner> = Arc::downgrade(&store.inner);
    handle.spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            job(&MemoryStore { inner });
        }
    });
    Ok(())
}

#[derive(Clone)]
struct Entry {
    value: Box<[u8]>,
    revision: u64,
    expires_at: Option<Instant>,
}

/// The values, and their keys in order: point operations hash, listing walks the order
/// (a page costs O(log n + page), not a scan of the store). Both share each key's one
/// allocation.
#[derive(Default)]
struct Table {
    entries: HashMap<Arc<str>, Entry>,
    order: BTreeSet<Arc<str>>,
    /// How many entries have an expiry: with none, counting needs no liveness checks.
    expiring: usize,
    /// Running counts of prefixes counted before, kept by every create and delete, so
    /// counting one again costs nothing.
    tallies: Vec<Tally>,
}

/// At most this many prefixes keep a running count (a bot counts a few fragments).
const TALLIES: usize = 16;

/// The running count of one prefix's keys.
struct Tally {
    prefix: Box<str>,
    /// Keys under the prefix, live or expired-but-not-yet-dropped.
    keys: u64,
    /// Of those, the ones with an expiry (while there are any, a count checks each).
    expiring: u64,
    /// While the first count walks the prefix: how far it got (`Some(None)`: not
    /// started). Creates and deletes up to there change the tally; beyond it, the walk
    /// will see them. `None` once complete.
    building: Option<Option<Arc<str>>>,
}

/// How many keys one listing or counting step walks while holding the lock: a step
/// takes well under a millisecond, so updates never wait long behind a listing.
const STEP: usize = 4096;

impl Table {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    fn insert(&mut self, key: &str, entry: Entry) {
        let expires = entry.expires_at.is_some();
        self.expiring += usize::from(expires);
        if let Some(current) = self.entries.get_mut(key) {
            let expired = current.expires_at.is_some();
            self.expiring -= usize::from(expired);
            *current = entry;
            if expires != expired {
                self.tally(key, 0, i64::from(expires) - i64::from(expired));
            }
            return;
        }
        self.tally(key, 1, i64::from(expires));
        let key: Arc<str> = Arc::from(key);
        self.order.insert(key.clone());
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.order.remove(key);
        let expires = entry.expires_at.is_some();
        self.expiring -= usize::from(expires);
        self.tally(key, -1, -i64::from(expires));
        Some(entry)
    }

    /// Keeps the running counts of the prefixes of `key` (see [`Tally::building`]).
    fn tally(&mut self, key: &str, keys: i64, expiring: i64) {
        for tally in &mut self.tallies {
            if !key.starts_with(&*tally.prefix) {
                continue;
            }
            let counted = match &tally.building {
                None => true,
                Some(None) => false,
                Some(Some(walked)) => key <= &**walked,
            };
            if counted {
                tally.keys = tally.keys.saturating_add_signed(keys);
                tally.expiring = tally.expiring.saturating_add_signed(expiring);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.entries.iter()
    }

    /// The keys after `after` (or from `from`) and before `end`, in order.
    fn keys_between<'a>(
        &'a self,
        from: &'a str,
        after: Option<&'a str>,
        end: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let start = match after {
            Some(after) if after >= from => Excluded(after),
            _ => Included(from),
        };
        let end = end.map_or(Unbounded, Excluded);
        self.order.range::<str, _>((start, end))
    }
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let store = MemoryStore::new();
    /// let sessions = Bot::builder().default_store(store.clone()).build();
    /// sessions.run(&ChatContext::new(1), async |s| {
    ///     *s.count().await? += 1;
    ///     Ok::<_, multisession::Error>(())
    /// }).await?;
    /// assert_eq!(store.len(), 1); // the clone sees what the sessions wrote
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Options: default TTL, sweep interval, snapshot file.
    ///
    /// ```
    /// # fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::MemoryStore;
    /// use std::time::Duration;
    ///
    /// let store = MemoryStore::options().default_ttl(Duration::from_secs(3600)).open()?;
    /// assert!(store.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn options() -> MemoryOptions {
        MemoryOptions::default()
    }

    /// Removes every expired value now; returns how many.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let store = MemoryStore::new();
    /// store.write("quiz:1", b"{}", Some(Duration::from_millis(10))).await?;
    /// store.write("quiz:2", b"{}", Some(Duration::from_millis(10))).await?;
    /// store.write("pizza:1", b"2", None).await?;
    /// tokio::time::sleep(Duration::from_millis(30)).await;
    /// assert_eq!(store.sweep(), 2);
    /// assert_eq!(store.sweep(), 0);
    /// # Ok(()) }
    /// ```
    pub fn sweep(&self) -> usize {
        // In steps, so updates wait at most one step behind a sweep of a large store.
        let now = Instant::now();
        let mut removed = 0;
        let mut after: Option<Arc<str>> = None;
        loop {
            let mut map = self.inner.map.lock();
            if map.expiring == 0 {
                return removed;
            }
            let mut expired = Vec::new();
            let mut last = None;
            for key in map.keys_between("", after.as_deref(), None).take(STEP) {
                if map.get(key).is_some_and(|e| !e.live(now)) {
                    expired.push(key.clone());
                }
                last = Some(key.clone());
            }
            for key in &expired {
                map.remove(key);
            }
            removed += expired.len();
            MutexGuard::unlock_fair(map);
            match last {
                Some(key) => after = Some(key),
                None => return removed,
            }
        }
    }

    /// Saves the snapshot file now (atomically). Does nothing without a snapshot file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("saved-{}.snapshot", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let store = MemoryStore::options().snapshot(&path, Duration::from_secs(3600)).open()?;
    /// store.write("pizza:42", b"3", None).await?;
    /// store.save_snapshot()?; // before a risky operation, say; no need to wait an hour
    /// assert!(path.exists());
    ///
    /// MemoryStore::new().save_snapshot()?; // no snapshot file: nothing to do
    /// # drop(store);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn save_snapshot(&self) -> Result<(), StoreError> {
        let Some(path) = &self.inner.snapshot else {
            return Ok(());
        };
        // Copy under the lock, write without it.
        let copy: HashMap<Arc<str>, Entry> = {
            let map = self.lock()?;
            map.iter().map(|(k, e)| (k.clone(), e.clone())).collect()
        };
        write_snapshot(path, copy.iter())
            .map_err(|e| StoreError::backend(format!("snapshot {}: {e}", path.display())))
    }

    /// How many live values the store holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    ///
    /// let store = MemoryStore::new();
    /// store.write("pizza:1", b"1", None).await?;
    /// store.write("pizza:2", b"5", None).await?;
    /// store.write("pizza:1", b"2", None).await?; // overwrites
    /// assert_eq!(store.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .map_or(0, |map| map.iter().filter(|(_, e)| e.live(now)).count())
    }

    /// Whether the store holds no live value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    ///
    /// let store = MemoryStore::new();
    /// assert!(store.is_empty());
    /// store.write("pizza:1", b"1", None).await?;
    /// store.delete("pizza:1").await?;
    /// assert!(store.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Result<MutexGuard<'_, Table>, StoreError> {
        Ok(self.inner.map.lock())
    }

    /// Counts the live keys under `prefix` by walking them, in steps of `STEP` keys,
    /// letting go of the lock in between; no key is looked at unless some values expire.
    fn count_live(&self, prefix: &str, end: Option<&str>) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut total = 0u64;
        let mut after: Option<Arc<str>> = None;
        loop {
            let map = self.lock()?;
            let check = map.expiring > 0;
            let mut last = None;
            let mut walked = 0;
            for key in map.keys_between(prefix, after.as_deref(), end) {
                if walked == STEP {
                    break;
                }
                walked += 1;
                if end.is_none() && !prefix.is_empty() && !key.starts_with(prefix) {
                    return Ok(total);
                }
                if !check || map.get(key).is_some_and(|e| e.live(now)) {
                    total += 1;
                }
                last = Some(key);
            }
            let next = match last {
                Some(key) if walked == STEP => Some(key.clone()),
                _ => None,
            };
            // Hand the lock to a waiting update, if any, before the next step.
            MutexGuard::unlock_fair(map);
            match next {
                Some(key) => after = Some(key),
                None => return Ok(total),
            }
        }
    }

    fn next_revision(&self) -> u64 {
        // Revisions are unique across the whole store, so a key that is deleted and written
        // again never repeats a revision a reader may still hold.
        self.inner.revisions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn get(map: &mut Table, key: &str, now: Instant) -> Option<Record> {
        match map.get(key) {
            Some(entry) if entry.live(now) => {
                Some(Record::new(entry.value.to_vec(), entry.revision))
            }
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn current_revision(map: &Table, key: &str, now: Instant) -> Option<u64> {
        map.get(key).filter(|e| e.live(now)).map(|e| e.revision)
    }

    /// Stores `value` under `key`; the revision it got.
    fn put(
        &self,
        map: &mut Table,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        now: Instant,
    ) -> u64 {
        let revision = self.next_revision();
        let entry = Entry {
            value: value.into(),
            revision,
            expires_at: ttl.or(self.inner.default_ttl).map(|ttl| now + ttl),
        };
        map.insert(key, entry);
        revision
    }

    /// [`Store::apply`], with the revision of each put when applied.
    fn apply_inner(&self, writes: &[Write]) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        let mut map = match self.lock() {
            Ok(map) => map,
            Err(_) => {
                return writes
                    .iter()
                    .map(|_| Err(StoreError::backend("memory store mutex poisoned")))
                    .collect();
            }
        };
        // The clock only matters to values that expire, and reading it costs more than
        // the rest of a small batch: read it only if some value may.
        let expiring = map.expiring > 0
            || self.inner.default_ttl.is_some()
            || writes
                .iter()
                .any(|w| matches!(w, Write::Put { ttl: Some(_), .. }));
        static UNUSED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let now = if expiring {
            Instant::now()
        } else {
            // Compared with no deadline and added to no TTL.
            *UNUSED.get_or_init(Instant::now)
        };
        // All or nothing: check every precondition first.
        let all_met = writes.iter().all(|w| {
            w.expect()
                .is_met_by(Self::current_revision(&map, w.key(), now))
        });
        if !all_met {
            return writes
                .iter()
                .map(|_| Ok((Outcome::Conflict, None)))
                .collect();
        }
        writes
            .iter()
            .map(|write| {
                Ok(match write {
                    Write::Put {
                        key, value, ttl, ..
                    } => {
                        let revision = self.put(&mut map, key, value, *ttl, now);
                        (Outcome::Applied, Some(revision))
                    }
                    Write::Delete { key, .. } => {
                        map.remove(key);
                        (Outcome::Applied, None)
                    }
                })
            })
            .collect()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.read_now(key)
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        let mut map = self.lock()?;
        let now = Instant::now();
        let ttl = map
            .get(key)
            .and_then(|e| e.expires_at.map(|at| at.saturating_duration_since(now)));
        Ok(Self::get(&mut map, key, now).map(|record| (record, ttl)))
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        let _ = self.put(&mut map, key, value, ttl, Instant::now());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.remove(key);
        Ok(())
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let mut map = self.lock()?;
        let now = Instant::now();
        Ok(keys
            .iter()
            .map(|key| Self::get(&mut map, key, now))
            .collect())
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let map = self.lock()?;
        let now = Instant::now();
        // Keyset pagination in key order: the cursor is the last key walked. A page walks
        // at most `STEP` keys (expired ones are skipped), so it holds the lock briefly
        // however large the store.
        let limit = limit.max(1);
        let mut entries: Vec<(String, Record)> = Vec::with_capacity(limit.min(1024));
        let mut last: Option<&Arc<str>> = None;
        let mut more = false;
        for (walked, key) in map.keys_between(prefix, cursor, None).enumerate() {
            if !key.starts_with(prefix) {
                break;
            }
            if entries.len() == limit || walked == STEP {
                more = true;
                break;
            }
            last = Some(key);
            if let Some(entry) = map.get(key).filter(|e| e.live(now)) {
                entries.push((
                    key.to_string(),
                    Record::new(entry.value.to_vec(), entry.revision),
                ));
            }
        }
        let cursor = if more {
            last.map(|key| key.to_string())
        } else {
            None
        };
        MutexGuard::unlock_fair(map);
        Ok(Page { entries, cursor })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let end = prefix_end_str(prefix);
        // A prefix counted before has a running count: nothing to walk unless some of
        // its values may have expired. The first count of a prefix builds that count.
        let build = {
            let mut map = self.lock()?;
            match map.tallies.iter().find(|t| *t.prefix == *prefix) {
                Some(t) if t.building.is_none() && t.expiring == 0 => return Ok(t.keys),
                Some(_) => false,
                None if map.tallies.len() < TALLIES => {
                    map.tallies.push(Tally {
                        prefix: prefix.into(),
                        keys: 0,
                        expiring: 0,
                        building: Some(None),
                    });
                    true
                }
                None => false,
            }
        };
        if build {
            let mut after: Option<Arc<str>> = None;
            loop {
                let mut map = self.lock()?;
                let (mut keys, mut expiring, mut walked) = (0u64, 0u64, 0usize);
                let mut last = None;
                for key in map.keys_between(prefix, after.as_deref(), end.as_deref()) {
                    if walked == STEP
                        || (end.is_none() && !prefix.is_empty() && !key.starts_with(prefix))
                    {
                        break;
                    }
                    walked += 1;
                    keys += 1;
                    expiring += u64::from(map.get(key).is_some_and(|e| e.expires_at.is_some()));
                    last = Some(key.clone());
                }
                let done = walked < STEP;
                let Some(tally) = map.tallies.iter_mut().find(|t| *t.prefix == *prefix) else {
                    break;
                };
                tally.keys += keys;
                tally.expiring += expiring;
                if done {
                    tally.building = None;
                    if tally.expiring == 0 {
                        return Ok(tally.keys);
                    }
                    break;
                }
                tally.building = Some(last.clone());
                after = last;
                MutexGuard::unlock_fair(map);
            }
        }
        self.count_live(prefix, end.as_deref())
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        self.apply_now(writes)
    }

    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        // With a default TTL, a value expires on a schedule the writer does not name:
        // no revision, so no cache keeps it past its expiry.
        let known = self.inner.default_ttl.is_none();
        self.apply_inner(writes)
            .into_iter()
            .map(|result| result.map(|(outcome, revision)| (outcome, revision.filter(|_| known))))
            .collect()
    }
}

impl ImmediateStore for MemoryStore {
    fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let mut map = self.lock()?;
        // The clock is read only for a value that can expire.
        match map.get(key) {
            Some(entry) if entry.expires_at.is_none() => {
                Ok(Some(Record::new(entry.value.to_vec(), entry.revision)))
            }
            Some(_) => Ok(Self::get(&mut map, key, Instant::now())),
            None => Ok(None),
        }
    }

    fn apply_now(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        crate::store::without_revisions(self.apply_inner(writes))
    }
}

/// The least string above every string that starts with `prefix` (the prefix with its
/// last character raised by one), if there is one that is valid text.
fn prefix_end_str(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

// Snapshot format: "MSSNAP1\n", the last revision (u64), the entry count (u64), then per
// entry: key length (u32), key, value length (u32), value, revision (u64), expiry in unix
// milliseconds (i64, -1 for none); last, an FNV-1a 64 checksum of everything before it.
// All numbers little-endian.
const MAGIC: &[u8] = b"MSSNAP1\n";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write_snapshot<'a>(
    path: &Path,
    entries: impl IntoIterator<Item = (&'a Arc<str>, &'a Entry)>,
) -> io::Result<()> {
    let now_instant = Instant::now();
    let now_wall = SystemTime::now();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let all: Vec<(&Arc<str>, &Entry)> = entries.into_iter().collect();
    let last_revision = all.iter().map(|(_, e)| e.revision).max().unwrap_or(0);
    out.extend_from_slice(&last_revision.to_le_bytes());
    let live: Vec<(&Arc<str>, &Entry)> = all
        .into_iter()
        .filter(|(_, e)| e.live(now_instant))
        .collect();
    out.extend_from_slice(&(live.len() as u64).to_le_bytes());
    for (key, entry) in live {
        let len =
            |n: usize| u32::try_from(n).map_err(|_| io::Error::other("entry larger than 4 GiB"));
        out.extend_from_slice(&len(key.len())?.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&len(entry.value.len())?.to_le_bytes());
        out.extend_from_slice(&entry.value);
        out.extend_from_slice(&entry.revision.to_le_bytes());
        let expires = entry.expires_at.map_or(-1i64, |at| {
            let wall = now_wall + at.saturating_duration_since(now_instant);
            wall.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        out.extend_from_slice(&expires.to_le_bytes());
    }
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&out)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn read_snapshot(path: &Path) -> Result<(Table, u64), StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!("memory store snapshot {}: {what}", path.display()))
    };
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::backend(format!("snapshot {}: {e}", path.display())))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Table::default(), 0)),
        Err(e) => {
            return Err(StoreError::backend(format!(
                "snapshot {}: {e}",
                path.display()
            )));
        }
    };
    if bytes.len() < MAGIC.len() + 24 || !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a multisession snapshot (bad header)"));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body) != u64::from_le_bytes(checksum.try_into().map_err(|_| corrupt("truncated"))?) {
        return Err(corrupt("checksum mismatch (truncated or damaged)"));
    }
    let mut rest = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        if rest.len() < n {
            return Err(corrupt("truncated entry"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u64_of = |b: &[u8]| {
        b.try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt("bad number"))
    };
    let last_revision = u64_of(take(8)?)?;
    let count = u64_of(take(8)?)?;
    let now_instant = Instant::now();
    let now_wall = SystemTime::now();
    let mut map = Table::default();
    for _ in 0..count {
        let key_len =
            u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?) as usize;
        let key =
            String::from_utf8(take(key_len)?.to_vec()).map_err(|_| corrupt("key is not UTF-8"))?;
        let value_len =
            u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?) as usize;
        let value: Box<[u8]> = take(value_len)?.into();
        let revision = u64_of(take(8)?)?;
        let expires = i64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt("bad expiry"))?);
        let expires_at = if expires < 0 {
            None
        } else {
            let wall = UNIX_EPOCH + Duration::from_millis(expires as u64);
            match wall.duration_since(now_wall) {
                Ok(left) => Some(now_instant + left),
                Err(_) => continue, // expired while the bot was down
            }
        };
        map.insert(
            &key,
            Entry {
                value,
                revision,
                expires_at,
            },
        );
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((map, last_revision))
}
