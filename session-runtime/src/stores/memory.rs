//! The in-process store.
//!
//! A hash table of entries (one allocation each: key, value, revision, expiry) behind
//! one lock, for point operations; and an ordered index of the same entries that
//! listings, counts and sweeps walk without that lock (`index`), reading each entry
//! through a seqlock (`entry`).

mod entry;
mod index;
mod snapshot;

use std::{
    cell::Cell,
    hash::BuildHasher,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use self::{
    entry::{Entry, EntryPtr, MAX_LEN, NEVER},
    index::Index,
};
use crate::store::{Capabilities, ImmediateStore, Outcome, Page, Record, Store, StoreError, Write};

/// An in-process store: a hash table behind a lock for reads and writes, and an ordered
/// index that listings walk without that lock.
///
/// Cheap to clone; clones share the data. It supports everything the runtime can use:
/// compare-and-set, atomic batches, batch reads and expiry (an expired value reads as
/// missing and is dropped when it is next touched, or by [`sweep`](Self::sweep)).
///
/// Listing, counting and sweeping never hold the lock that reads and writes take while
/// they walk, so no read or write waits behind them: a page of `list` costs
/// O(log n + page); `count` visits the index's chunks under the prefix (one per 512 keys
/// or fewer), looking at values only in chunks where some expire. Each stored value takes
/// one allocation (key, value, revision and expiry together), one slot of the hash table
/// and one pointer in the index.
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

struct Inner {
    /// Reads and writes: the hash table. Writers also change the index under it.
    map: Mutex<Table>,
    /// The keys in order; read without any lock.
    index: Index,
    revisions: AtomicU64,
    /// Expiries are nanoseconds since this instant.
    clock: Instant,
    default_ttl: Option<Duration>,
    snapshot: Option<PathBuf>,
    /// Called at every step of a walk that must not hold the lock (tests only).
    #[cfg(test)]
    hook: Mutex<Option<Hook>>,
}

#[cfg(test)]
type Hook = Arc<dyn Fn(&MemoryStore) + Send + Sync>;

impl Default for Inner {
    fn default() -> Self {
        Inner {
            map: Mutex::default(),
            index: Index::default(),
            revisions: AtomicU64::new(0),
            clock: Instant::now(),
            default_ttl: None,
            snapshot: None,
            #[cfg(test)]
            hook: Mutex::new(None),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: save the snapshot one final time.
        if let Some(path) = &self.snapshot {
            let now = nanos_since(self.clock);
            let last_revision = *self.revisions.get_mut();
            let bytes = snapshot::encode(
                self.map.get_mut().entries(),
                last_revision,
                now,
                SystemTime::now(),
            );
            if let Err(error) = snapshot::save(path, &bytes) {
                tracing::error!(path = %path.display(), %error, "could not save the memory store snapshot");
            }
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
        let clock = Instant::now();
        let (table, index, last_revision) = match &self.snapshot {
            Some((path, _)) => Table::load(path, clock)?,
            None => (Table::default(), Index::default(), 0),
        };
        let store = MemoryStore {
            inner: Arc::new(Inner {
                map: Mutex::new(table),
                index,
                revisions: AtomicU64::new(last_revision),
                clock,
                default_ttl: self.default_ttl,
                snapshot: self.snapshot.as_ref().map(|(path, _)| path.clone()),
                #[cfg(test)]
                hook: Mutex::new(None),
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

/// The entries by key. Owns them: an entry leaves the table, then the index, then is
/// retired (freed once no listing can hold it).
#[derive(Default)]
struct Table {
    entries: HashTable<EntryPtr>,
    hasher: foldhash::fast::RandomState,
}

impl Drop for Table {
    fn drop(&mut self) {
        for entry in self.entries.drain() {
            // SAFETY: the table is dropped with the store's last handle, so no listing
            // holds any entry; each is in the table once.
            unsafe { entry.free() };
        }
    }
}

/// An entry of `table`, alive while the table is borrowed.
fn entry_of(_table: &Table, entry: EntryPtr) -> Entry<'_> {
    // SAFETY: entries in the table are alive; they are taken out (and retired) only
    // through `&mut Table`, which the borrow excludes.
    unsafe { entry.entry() }
}

/// Whether `entry` (of a table being searched, so alive) has `key`.
fn has_key(entry: &EntryPtr, key: &str) -> bool {
    // SAFETY: only called on entries of a table that the caller borrows.
    unsafe { entry.entry() }.key() == key
}

impl Table {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key.as_bytes())
    }

    fn find(&self, key: &str) -> Option<EntryPtr> {
        self.entries
            .find(self.hash(key), |e| has_key(e, key))
            .copied()
    }

    /// Adds `entry`, whose key is not in the table.
    fn insert_new(&mut self, hash: u64, entry: EntryPtr) {
        let Table { entries, hasher } = self;
        entries.insert_unique(hash, entry, |e| {
            hasher.hash_one(entry_of_ref(e).key().as_bytes())
        });
    }

    /// Every entry (alive while the table is borrowed).
    fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.entries.iter().map(move |e| entry_of(self, *e))
    }

    /// The table and index of a snapshot file (empty if there is none), and its last
    /// revision.
    fn load(path: &Path, clock: Instant) -> Result<(Table, Index, u64), StoreError> {
        let mut table = Table::default();
        let last_revision = snapshot::load(
            path,
            nanos_since(clock),
            SystemTime::now(),
            |key, value, revision, expires| {
                let entry = EntryPtr::new(key, value, revision, expires);
                let hash = table.hash(key);
                match table.entries.find_mut(hash, |e| has_key(e, key)) {
                    Some(slot) => {
                        // A key twice in one file: the later entry wins.
                        let old = std::mem::replace(slot, entry);
                        // SAFETY: just taken out of the table; nothing else has it.
                        unsafe { old.free() };
                    }
                    None => table.insert_new(hash, entry),
                }
            },
        )?;
        let mut sorted: Vec<(&str, EntryPtr)> = table
            .entries
            .iter()
            .map(|e| (entry_of(&table, *e).key(), *e))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let index = Index::from_sorted(sorted.into_iter().map(|(_, e)| e).collect());
        Ok((table, index, last_revision))
    }
}

/// An entry the hash table hands to its hasher (alive: the table is borrowed).
fn entry_of_ref(entry: &EntryPtr) -> Entry<'_> {
    // SAFETY: the hash table only hands out entries it holds, while it is borrowed.
    unsafe { entry.entry() }
}

fn nanos_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(NEVER - 1)
}

/// The store's lock held: the table, the index that writers keep beside it, and the
/// clock, read once per operation and only if a value that expires is involved.
struct Locked<'a> {
    table: MutexGuard<'a, Table>,
    index: &'a Index,
    clock: Instant,
    now: Cell<Option<u64>>,
    default_ttl: Option<Duration>,
}

impl Locked<'_> {
    /// Now on the store's clock (nanoseconds), the same for the whole operation.
    fn now(&self) -> u64 {
        *self
            .now
            .get()
            .get_or_insert_with(|| nanos_since(self.clock))
    }

    fn live(&self, entry: Entry<'_>) -> bool {
        let expires = entry.expires();
        expires == NEVER || expires > self.now()
    }

    /// When a value written now with `ttl` (or else the default TTL) expires.
    fn expiry(&self, ttl: Option<Duration>) -> u64 {
        ttl.or(self.default_ttl).map_or(NEVER, |ttl| {
            self.now()
                .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
                .min(NEVER - 1)
        })
    }

    fn entry(&self, key: &str) -> Option<Entry<'_>> {
        self.table.find(key).map(|e| entry_of(&self.table, e))
    }

    /// The record of `key` if live; an expired one is dropped.
    fn get(&mut self, key: &str) -> Option<Record> {
        match self.entry(key) {
            Some(entry) if self.live(entry) => Some(entry.record()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn current_revision(&self, key: &str) -> Option<u64> {
        self.entry(key)
            .filter(|e| self.live(*e))
            .map(|e| e.revision())
    }

    /// Stores `value` under `key` at `revision`, expiring after `ttl` (or else the
    /// default TTL). In place when it fits (the common case: no allocation); otherwise a
    /// new entry takes the old one's place in the table and the index.
    fn put(&mut self, key: &str, value: &[u8], revision: u64, ttl: Option<Duration>) {
        let expires = self.expiry(ttl);
        let hash = self.table.hash(key);
        let Some(slot) = self.table.entries.find_mut(hash, |e| has_key(e, key)) else {
            let new = EntryPtr::new(key, value, revision, expires);
            self.table.insert_new(hash, new);
            self.index.insert(new);
            return;
        };
        let old = *slot;
        let entry = entry_of_ref(slot);
        let had_expiry = entry.expires() != NEVER;
        if entry.fits(value, expires) {
            entry.overwrite(value, revision, expires);
            if had_expiry != (expires != NEVER) {
                self.index.expiry_changed(old, expires != NEVER);
            }
        } else {
            // SAFETY: alive, and the lock is held.
            let new = unsafe { old.grown(value, revision, expires) };
            *slot = new;
            self.index.replace(old, new);
            // SAFETY: out of the table and the index now.
            unsafe { self.index.retire_entry(old) };
        }
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &str) -> bool {
        let hash = self.table.hash(key);
        let Ok(found) = self.table.entries.find_entry(hash, |e| has_key(e, key)) else {
            return false;
        };
        let (entry, _) = found.remove();
        self.index.remove(entry);
        // SAFETY: out of the table and the index now.
        unsafe { self.index.retire_entry(entry) };
        true
    }
}

/// How many keys one page walks at most (expired ones included), so a page's time is
/// bounded however many expired values it skips.
const STEP: usize = 4096;

/// How many expired entries a sweep removes per hold of the lock.
const SWEEP_BATCH: usize = 16;

/// [`too_large`] of a put's key and value; deletes are never refused.
fn write_too_large(write: &Write) -> Option<StoreError> {
    match write {
        Write::Put { key, value, .. } => too_large(key, value),
        Write::Delete { .. } => None,
    }
}

/// The error for a key or value longer than an entry holds (checked before anything is
/// written).
fn too_large(key: &str, value: &[u8]) -> Option<StoreError> {
    (key.len() > MAX_LEN || value.len() > MAX_LEN).then(|| {
        StoreError::backend(format!(
            "the memory store holds keys and values of up to {MAX_LEN} bytes (a key of {} and a value of {} bytes)",
            key.len(),
            value.len()
        ))
    })
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
        // Expired entries are found without the lock (visiting only the index's chunks
        // that have expiring entries), then removed a few per hold of the lock, each
        // checked again under it.
        let now = self.now();
        let reader = self.inner.index.reader();
        let mut removed = 0;
        let mut batch = Vec::with_capacity(SWEEP_BATCH);
        for (ptr, entry) in self.inner.index.expiring(&reader) {
            self.walking();
            if entry.expires() <= now {
                batch.push((ptr, entry.key()));
                if batch.len() == SWEEP_BATCH {
                    removed += self.remove_expired(&batch, now);
                    batch.clear();
                }
            }
        }
        removed + self.remove_expired(&batch, now)
    }

    /// Removes the entries of `batch` that are still their key's entry and expired.
    fn remove_expired(&self, batch: &[(EntryPtr, &str)], now: u64) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let Ok(mut map) = self.lock() else { return 0 };
        let mut removed = 0;
        for (ptr, key) in batch {
            if map.table.find(key) == Some(*ptr) && map.entry(key).is_some_and(|e| !e.live(now)) {
                map.remove(key);
                removed += 1;
            }
        }
        MutexGuard::unlock_fair(map.table);
        removed
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
        // Encode under the lock (the store at one moment), write the file without it.
        let bytes = {
            let map = self.lock()?;
            snapshot::encode(
                map.table.entries(),
                self.inner.revisions.load(Ordering::Relaxed),
                self.now(),
                SystemTime::now(),
            )
        };
        snapshot::save(path, &bytes)
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
        let reader = self.inner.index.reader();
        self.inner.index.count(&reader, "", self.now(), || ()) as usize
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

    fn lock(&self) -> Result<Locked<'_>, StoreError> {
        Ok(Locked {
            table: self.inner.map.lock(),
            index: &self.inner.index,
            clock: self.inner.clock,
            now: Cell::new(None),
            default_ttl: self.inner.default_ttl,
        })
    }

    /// Now on the store's clock (nanoseconds).
    fn now(&self) -> u64 {
        nanos_since(self.inner.clock)
    }

    fn next_revision(&self) -> u64 {
        // Revisions are unique across the whole store, so a key that is deleted and written
        // again never repeats a revision a reader may still hold.
        self.inner.revisions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A step of a walk that holds no lock: a test can pause it there.
    fn walking(&self) {
        #[cfg(test)]
        {
            let hook = self.inner.hook.lock().clone();
            if let Some(hook) = hook {
                hook(self);
            }
        }
    }

    /// [`Store::apply`]: each write's outcome as `report` makes it from the outcome and
    /// the revision of a put when applied (built in place: no second vector per call).
    fn apply_inner<R>(
        &self,
        writes: &[Write],
        report: impl Fn(Outcome, Option<u64>) -> R,
    ) -> Vec<Result<R, StoreError>> {
        if let Some(error) = writes.iter().find_map(write_too_large) {
            let message = error.to_string();
            return writes
                .iter()
                .map(|_| Err(StoreError::backend(&message)))
                .collect();
        }
        let mut map = match self.lock() {
            Ok(map) => map,
            Err(_) => {
                return writes
                    .iter()
                    .map(|_| Err(StoreError::backend("memory store mutex poisoned")))
                    .collect();
            }
        };
        // All or nothing: check every precondition first.
        let all_met = writes
            .iter()
            .all(|w| w.expect().is_met_by(map.current_revision(w.key())));
        if !all_met {
            return writes
                .iter()
                .map(|_| Ok(report(Outcome::Conflict, None)))
                .collect();
        }
        writes
            .iter()
            .map(|write| Ok(report(Outcome::Applied, self.apply_met(&mut map, write))))
            .collect()
    }

    /// Makes `write`, whose precondition `map` meets: the new revision of a put.
    fn apply_met(&self, map: &mut Locked<'_>, write: &Write) -> Option<u64> {
        match write {
            Write::Put {
                key, value, ttl, ..
            } => {
                let revision = self.next_revision();
                map.put(key, value, revision, *ttl);
                Some(revision)
            }
            Write::Delete { key, .. } => {
                map.remove(key);
                None
            }
        }
    }

    /// One page of [`Store::list`], walked without the lock.
    fn page(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Page {
        let now = self.now();
        // Keyset pagination in key order: the cursor is the last key walked. A page walks
        // at most `STEP` keys (expired ones are skipped), so its time is bounded.
        let limit = limit.max(1);
        let (from, after) = match cursor {
            Some(cursor) if cursor >= prefix => (cursor, true),
            _ => (prefix, false),
        };
        let reader = self.inner.index.reader();
        let mut entries: Vec<(String, Record)> = Vec::with_capacity(limit.min(1024));
        let mut last: Option<&str> = None;
        let mut more = false;
        // Keys come in strictly increasing order from the cursor, however writers change
        // the index meanwhile (see `index`).
        for (walked, (_, entry)) in self.inner.index.walk(&reader, from, after).enumerate() {
            let key = entry.key();
            if !key.starts_with(prefix) {
                break;
            }
            if entries.len() == limit || walked == STEP {
                more = true;
                break;
            }
            self.walking();
            last = Some(key);
            if let Some(record) = entry.read(now) {
                entries.push((key.to_owned(), record));
            }
        }
        let cursor = if more { last.map(str::to_owned) } else { None };
        Page { entries, cursor }
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
        let ttl = map.entry(key).and_then(|e| match e.expires() {
            NEVER => None,
            at => Some(Duration::from_nanos(at.saturating_sub(map.now()))),
        });
        Ok(map.get(key).map(|record| (record, ttl)))
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        if let Some(error) = too_large(key, value) {
            return Err(error);
        }
        let mut map = self.lock()?;
        map.put(key, value, self.next_revision(), ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.remove(key);
        Ok(())
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let mut map = self.lock()?;
        Ok(keys.iter().map(|key| map.get(key)).collect())
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        Ok(self.page(prefix, cursor, limit))
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let reader = self.inner.index.reader();
        let now = self.now();
        Ok(self
            .inner
            .index
            .count(&reader, prefix, now, || self.walking()))
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
        self.apply_inner(writes, |outcome, revision| {
            (outcome, revision.filter(|_| known))
        })
    }
}

impl ImmediateStore for MemoryStore {
    fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let mut map = self.lock()?;
        Ok(map.get(key))
    }

    fn apply_now(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        self.apply_inner(writes, |outcome, _| outcome)
    }

    fn apply_one_now(&self, write: &Write) -> Result<Outcome, StoreError> {
        if let Some(error) = write_too_large(write) {
            return Err(error);
        }
        let mut map = self.lock()?;
        if !write.expect().is_met_by(map.current_revision(write.key())) {
            return Ok(Outcome::Conflict);
        }
        self.apply_met(&mut map, write);
        Ok(Outcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize},
        mpsc,
    };

    use super::*;
    use crate::store::Expect;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    fn filled(n: usize) -> MemoryStore {
        let store = MemoryStore::new();
        block_on(async {
            for i in 0..n {
                store.write(&format!("k:{i:04}"), b"v", None).await.unwrap();
            }
        });
        store
    }

    /// Runs `walk` on another thread and pauses it at its `at`-th step (the test hook
    /// `walking`). While it is paused there, in the middle of its walk: the store's lock
    /// must be free, and a whole update on the same store (read, compare-and-set write,
    /// create, delete) runs to its end. Then the walk goes on; what it returns.
    fn paused_walk<T: Send + 'static>(
        store: &MemoryStore,
        at: usize,
        walk: impl FnOnce(&MemoryStore) -> T + Send + 'static,
    ) -> T {
        let (paused_tx, paused_rx) = mpsc::channel::<bool>();
        let (resume_tx, resume_rx) = mpsc::channel::<()>();
        let steps = AtomicUsize::new(0);
        let pause = Mutex::new(Some((paused_tx, resume_rx)));
        *store.inner.hook.lock() = Some(Arc::new(move |store: &MemoryStore| {
            if steps.fetch_add(1, Ordering::Relaxed) + 1 != at {
                return;
            }
            if let Some((paused, resume)) = pause.lock().take() {
                let lock_is_free = store.inner.map.try_lock().is_some();
                let _ = paused.send(lock_is_free);
                // Until the test lets go (or fails, dropping the sender).
                let _ = resume.recv();
            }
        }));
        let walker = {
            let store = store.clone();
            std::thread::spawn(move || {
                let out = walk(&store);
                // A walk too short to reach the pause: the test learns it from a closed
                // channel.
                *store.inner.hook.lock() = None;
                out
            })
        };
        let lock_is_free = paused_rx.recv().expect("the walk never reached the pause");
        assert!(
            lock_is_free,
            "the walk holds the store's lock in the middle of its walk"
        );
        block_on(async {
            let record = store.read("k:0001").await.unwrap().expect("stored");
            let cas = store
                .apply(&[Write::Put {
                    key: "k:0001".into(),
                    value: b"changed".to_vec(),
                    ttl: None,
                    expect: Expect::Revision(record.revision),
                }])
                .await;
            assert!(matches!(cas.as_slice(), [Ok(Outcome::Applied)]), "{cas:?}");
            store.write("z:created", b"v", None).await.unwrap();
            store.delete("z:created").await.unwrap();
        });
        resume_tx.send(()).unwrap();
        walker.join().expect("the walk")
    }

    #[test]
    fn listing_holds_no_lock_while_it_walks() {
        let store = filled(2_000);
        let page = paused_walk(&store, 1_000, |store| {
            block_on(store.list("k:", None, 3_000)).unwrap()
        });
        assert_eq!(page.entries.len(), 2_000);
        assert_eq!(page.cursor, None);
        let page = block_on(store.list("k:", None, 3)).unwrap();
        assert_eq!(page.entries[1].1.value, b"changed");
    }

    #[test]
    fn counting_holds_no_lock_while_it_walks() {
        let store = filled(2_000);
        // 2 000 keys are 4 chunks of the index: the pause is at the second.
        let counted = paused_walk(&store, 2, |store| block_on(store.count("k:")).unwrap());
        assert_eq!(counted, 2_000);
    }

    #[test]
    fn sweeping_holds_no_lock_while_it_walks() {
        let store = filled(2_000);
        block_on(async {
            for i in 0..1_000 {
                let key = format!("e:{i:04}");
                store.write(&key, b"v", Some(Duration::ZERO)).await.unwrap();
            }
        });
        let swept = paused_walk(&store, 500, MemoryStore::sweep);
        assert_eq!(swept, 1_000);
        assert_eq!(store.len(), 2_000);
        assert_eq!(store.sweep(), 0);
    }

    /// The bytes `key` holds when written with a value of `len` bytes: a reader that
    /// mixed two writes (the length of one, bytes of another) would not find these.
    fn value_for(key: &str, len: usize) -> Vec<u8> {
        key.bytes()
            .cycle()
            .take(len)
            .map(|b| b ^ len as u8)
            .collect()
    }

    /// Listings beside writers that overwrite values (growing them out of their room
    /// too), create and delete keys among the listed ones (splitting and merging chunks
    /// of the index): every listing is in strictly increasing key order, holds every key
    /// that stayed all along exactly once, and every value whole, as one write left it.
    /// Once the writers stop, counts and listings agree.
    #[test]
    fn listings_beside_writers_see_whole_values_in_order() {
        let store = MemoryStore::new();
        let stable: Vec<String> = (0..3_000).map(|i| format!("s:{i:04}")).collect();
        block_on(async {
            for key in &stable {
                store.write(key, &value_for(key, 5), None).await.unwrap();
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    block_on(async {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
                        let mut ops = 0u64;
                        while !stop.load(Ordering::Relaxed) || ops < 20_000 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let i = x % 3_000;
                            let len = (x >> 20) as usize % 120;
                            if x.is_multiple_of(3) {
                                let key = format!("s:{i:04}");
                                store
                                    .write(&key, &value_for(&key, len), None)
                                    .await
                                    .unwrap();
                            } else {
                                // Churn between the stable keys.
                                let key = format!("s:{i:04}~{}", (x >> 40) % 4);
                                if x.is_multiple_of(2) {
                                    store
                                        .write(&key, &value_for(&key, len), None)
                                        .await
                                        .unwrap();
                                } else {
                                    store.delete(&key).await.unwrap();
                                }
                            }
                            ops += 1;
                            if ops >= 400_000 {
                                break;
                            }
                        }
                    })
                })
            })
            .collect();
        let listers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    block_on(async {
                        for _ in 0..15 {
                            let mut seen = Vec::new();
                            let mut cursor: Option<String> = None;
                            loop {
                                let page = store.list("s:", cursor.as_deref(), 97).await.unwrap();
                                for (key, record) in page.entries {
                                    assert_eq!(
                                        record.value,
                                        value_for(&key, record.value.len()),
                                        "a torn value of {key}"
                                    );
                                    if let Some(last) = seen.last() {
                                        assert!(key > *last, "{key} after {last}");
                                    }
                                    seen.push(key);
                                }
                                match page.cursor {
                                    Some(next) => cursor = Some(next),
                                    None => break,
                                }
                            }
                            let stable_seen: Vec<&String> =
                                seen.iter().filter(|k| !k.contains('~')).collect();
                            assert_eq!(stable_seen.len(), 3_000, "stable keys missed or doubled");
                            let counted = store.count("s:").await.unwrap();
                            assert!(counted >= 3_000, "{counted}");
                        }
                    })
                })
            })
            .collect();
        for lister in listers {
            lister.join().expect("a lister");
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("a writer");
        }
        let (mut listed, mut cursor) = (0u64, None::<String>);
        loop {
            let page = block_on(store.list("s:", cursor.as_deref(), 1_000)).unwrap();
            listed += page.entries.len() as u64;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(block_on(store.count("s:")).unwrap(), listed);
        assert_eq!(store.len() as u64, listed);
    }

    /// A snapshot is written in the format of the first release: a file that release
    /// wrote (built here byte by byte) loads, and what this one writes reads back.
    #[test]
    fn snapshots_keep_their_format() {
        let path = std::env::temp_dir().join(format!(
            "memory-format-{}-{:?}.snapshot",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut file = b"MSSNAP1\n".to_vec();
        file.extend_from_slice(&41u64.to_le_bytes());
        file.extend_from_slice(&2u64.to_le_bytes());
        let in_an_hour = (SystemTime::now() + Duration::from_secs(3600))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for (key, value, revision, expires) in [
            ("pizza:1", &b"3"[..], 7u64, -1i64),
            ("quiz:2", b"{}", 9, in_an_hour),
        ] {
            file.extend_from_slice(&(key.len() as u32).to_le_bytes());
            file.extend_from_slice(key.as_bytes());
            file.extend_from_slice(&(value.len() as u32).to_le_bytes());
            file.extend_from_slice(value);
            file.extend_from_slice(&revision.to_le_bytes());
            file.extend_from_slice(&expires.to_le_bytes());
        }
        let checksum = file.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
        file.extend_from_slice(&checksum.to_le_bytes());
        std::fs::write(&path, &file).unwrap();
        let open = || {
            MemoryStore::options()
                .snapshot(&path, Duration::from_secs(3600))
                .open()
                .unwrap()
        };
        let store = block_on(async { open() });
        let pizza = block_on(store.read("pizza:1")).unwrap().unwrap();
        assert_eq!((pizza.value, pizza.revision), (b"3".to_vec(), 7));
        let (quiz, ttl) = block_on(store.read_with_ttl("quiz:2")).unwrap().unwrap();
        assert_eq!((quiz.value, quiz.revision), (b"{}".to_vec(), 9));
        assert!(ttl.is_some());
        assert_eq!(block_on(store.count("")).unwrap(), 2);
        block_on(store.write("new", b"x", None)).unwrap();
        assert!(block_on(store.read("new")).unwrap().unwrap().revision > 41);
        drop(store); // saves
        let store = block_on(async { open() });
        assert_eq!(store.len(), 3);
        drop(store);
        std::fs::remove_file(&path).unwrap();
    }
}
