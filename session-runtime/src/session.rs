//! Running sessions: open a lazy handle per update, commit what changed.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    sync::Arc,
    time::Duration,
};

use futures_util::future::join_all;

use crate::{
    context::{ChatContext, ChatMigration, SessionContext},
    error::{Error, SaveError, SaveFailure},
    fragment::{ErasedCell, UpdateCtx},
    stats::{Counters, Stats},
    store::{Expect, Outcome, StoreRef, Write},
    stores::MemoryStore,
};

/// A struct whose fields are session fragments. Implemented by `#[derive(MultiSession)]`.
///
/// The derive also generates an inherent `builder()` on the struct, a builder with one
/// store setter per field, and the lazy view that [`Session`] derefs to, with one accessor
/// per field.
pub trait MultiSession: Sized + Send + 'static {
    /// The per-update lazy view: one cell per fragment, one accessor method per field.
    type Lazy: Send + Sync + 'static;
    /// The fragments as a running [`Sessions`] holds them.
    #[doc(hidden)]
    type Shared: Send + Sync + 'static;

    /// The fragment names, in field order.
    const FRAGMENTS: &'static [&'static str];

    #[doc(hidden)]
    fn __open(
        shared: &Self::Shared,
        ctx: &dyn SessionContext,
        update: &Arc<UpdateCtx>,
    ) -> Self::Lazy;
    #[doc(hidden)]
    fn __cells(lazy: &Self::Lazy) -> Vec<&dyn ErasedCell>;
    /// Whether any fragment was touched (loaded, set or deleted) in this update.
    #[doc(hidden)]
    fn __any_loaded(lazy: &Self::Lazy) -> bool;
    #[doc(hidden)]
    fn __take(lazy: &Self::Lazy) -> Self;
    #[doc(hidden)]
    fn __put(self, lazy: &Self::Lazy);
}

/// What to do when the handler returns an error (rule S13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnHandlerError {
    /// Write nothing (grammY's rule). The default.
    #[default]
    Discard,
    /// Commit the changes made before the error (Telegraf's rule).
    Commit,
}

/// What to do when stored bytes do not decode as the fragment's type (rule S15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDecodeError {
    /// Return [`Error::Decode`] from the accessor; the stored value stays as it is. The
    /// default.
    #[default]
    Fail,
    /// Log a warning (a `tracing` event), hand the handler the initial value, and replace
    /// the stored bytes with it at commit. Values stored by a newer program version
    /// ([`Error::TooNew`]) are never reset.
    Reset,
}

/// What to do when another process changed a fragment between read and write (rule S17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnConflict {
    /// Re-run the handler from a fresh read, up to `attempts` runs in all. The handler's
    /// side effects should be idempotent or happen after the commit.
    Retry {
        /// Runs in all, the first included.
        attempts: u32,
    },
    /// Return [`Error::Conflict`] at once, for handlers that cannot be re-run.
    Fail,
}

impl Default for OnConflict {
    fn default() -> Self {
        OnConflict::Retry { attempts: 8 }
    }
}

/// Runtime options of a [`Sessions`].
///
/// ```
/// use multisession::{Config, OnConflict, OnHandlerError};
/// use std::time::Duration;
///
/// let config = Config::new()
///     .on_conflict(OnConflict::Retry { attempts: 3 })
///     .on_handler_error(OnHandlerError::Commit)
///     .op_timeout(Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) on_conflict: OnConflict,
    pub(crate) on_handler_error: OnHandlerError,
    pub(crate) op_timeout: Option<Duration>,
    pub(crate) contention_attempts: u32,
    pub(crate) on_decode_error: OnDecodeError,
    pub(crate) redact_keys: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            on_conflict: OnConflict::default(),
            on_handler_error: OnHandlerError::default(),
            op_timeout: Some(Duration::from_secs(5)),
            contention_attempts: 64,
            on_decode_error: OnDecodeError::default(),
            redact_keys: false,
        }
    }
}

impl Config {
    /// The defaults: retry conflicts up to 8 runs, discard on handler error, 5 s per
    /// store operation.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do on a cross-process conflict.
    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// What to do when the handler fails.
    pub fn on_handler_error(mut self, policy: OnHandlerError) -> Self {
        self.on_handler_error = policy;
        self
    }

    /// Leave session keys (chat and user ids) out of `tracing` events. Error values still
    /// name the key: they go to your code, not to a log.
    pub fn redact_keys(mut self, redact: bool) -> Self {
        self.redact_keys = redact;
        self
    }

    pub(crate) fn shown_key<'a>(&self, key: &'a str) -> &'a str {
        if self.redact_keys { "<redacted>" } else { key }
    }

    /// What to do when stored bytes do not decode.
    pub fn on_decode_error(mut self, policy: OnDecodeError) -> Self {
        self.on_decode_error = policy;
        self
    }

    /// The time limit of one store operation; `None` waits forever.
    pub fn op_timeout(mut self, limit: Option<Duration>) -> Self {
        self.op_timeout = limit;
        self
    }

    /// How many times [`Sessions::run`] re-runs an update that met a contended key in
    /// this process before it returns [`Error::Contended`]. Default 64.
    pub fn contention_attempts(mut self, attempts: u32) -> Self {
        self.contention_attempts = attempts.max(1);
        self
    }
}

/// What the generated builder collects before [`Sessions`] exist.
#[doc(hidden)]
pub struct BuilderCore {
    stores: Vec<Option<StoreRef>>,
    default_store: Option<StoreRef>,
    config: Config,
}

impl BuilderCore {
    pub fn new(fragments: usize) -> Self {
        Self {
            stores: vec![None; fragments],
            default_store: None,
            config: Config::default(),
        }
    }

    pub fn set_store(&mut self, index: usize, store: StoreRef) {
        if let Some(slot) = self.stores.get_mut(index) {
            *slot = Some(store);
        }
    }

    pub fn set_default_store(&mut self, store: StoreRef) {
        self.default_store = Some(store);
    }

    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The store of every fragment (the default store, or one shared memory store, where
    /// none was given) and the config.
    pub fn finish(self) -> (Vec<StoreRef>, Config) {
        let fallback = self
            .default_store
            .unwrap_or_else(|| StoreRef::new(MemoryStore::new()));
        let stores = self
            .stores
            .into_iter()
            .map(|store| store.unwrap_or_else(|| fallback.clone()))
            .collect();
        (stores, self.config)
    }
}

/// The sessions of one bot: the fragments with their stores. Cheap to clone.
pub struct Sessions<S: MultiSession> {
    inner: Arc<SessionsInner<S>>,
}

struct SessionsInner<S: MultiSession> {
    shared: S::Shared,
    config: Arc<Config>,
    counters: Arc<Counters>,
}

impl<S: MultiSession> Clone for Sessions<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: MultiSession> fmt::Debug for Sessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("fragments", &S::FRAGMENTS)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<S: MultiSession> Sessions<S> {
    #[doc(hidden)]
    pub fn __new(shared: S::Shared, config: Config) -> Self {
        Self {
            inner: Arc::new(SessionsInner {
                shared,
                config: Arc::new(config),
                counters: Arc::default(),
            }),
        }
    }

    /// The runtime options.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What these sessions did so far: reads, writes, conflicts, retries, errors.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    fn open_raw(&self, ctx: &dyn SessionContext) -> Session<S> {
        let update = Arc::new(UpdateCtx::new(
            self.inner.config.clone(),
            self.inner.counters.clone(),
            ChatContext::of(ctx),
        ));
        let lazy = S::__open(&self.inner.shared, ctx, &update);
        Session {
            inner: Arc::new(SessionInner { lazy, update }),
        }
    }

    /// Opens the lazy session of one update, for frameworks that cannot take a closure.
    /// Nothing is read until a fragment is touched. Call [`Session::commit`] after the
    /// handler succeeded; drop the session to discard its changes.
    pub fn open<C: SessionContext + ?Sized>(&self, ctx: &C) -> Session<S> {
        Counters::add(&self.inner.counters.updates, 1);
        self.open_raw(&ctx)
    }

    /// Runs `handler` on the lazy session of the update `ctx` and commits what changed.
    ///
    /// The handler may be run more than once: when another update in this process holds a
    /// key it needs while it holds another (deadlock avoidance), and when another process
    /// changed a fragment between read and write ([`OnConflict::Retry`]). Keep side
    /// effects idempotent, or do them after `run` returns.
    ///
    /// If the handler fails, nothing is written (unless [`OnHandlerError::Commit`]) and
    /// its error is returned.
    pub async fn run<C, F, Fut, R, E>(&self, ctx: &C, mut handler: F) -> Result<R, E>
    where
        C: SessionContext + ?Sized,
        F: FnMut(Session<S>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        E: From<Error>,
    {
        Counters::add(&self.inner.counters.updates, 1);
        if let Some(migration) = ctx.chat_migration() {
            self.migrate_chat(migration).await?;
        }
        let config = self.inner.config.clone();
        let mut conflicts = 0u32;
        let mut contentions = 0u32;
        let mut wanted: Vec<usize> = Vec::new();
        loop {
            let session = self.open_raw(&ctx);
            session.hold_in_order(&wanted).await;
            let result = handler(session.clone()).await;
            let contended = session.inner.update.contended();
            if let Some(&(_, fragment)) = contended.first() {
                contentions += 1;
                Counters::add(&self.inner.counters.retries, 1);
                if contentions >= config.contention_attempts {
                    let key = session
                        .cells()
                        .into_iter()
                        .find(|cell| cell.fragment() == fragment)
                        .and_then(|cell| cell.storage_key().map(str::to_owned))
                        .unwrap_or_default();
                    return Err(Error::Contended { fragment, key }.into());
                }
                // Re-run holding, in the global order, what this attempt held or wanted.
                wanted = session
                    .cells()
                    .into_iter()
                    .filter(|cell| cell.is_loaded())
                    .map(|cell| cell.index())
                    .chain(contended.iter().map(|&(index, _)| index))
                    .collect();
                drop(session);
                continue;
            }
            let value = match result {
                Ok(value) => value,
                Err(error) => {
                    if config.on_handler_error == OnHandlerError::Commit {
                        // The handler's error is what the caller needs to see; a failed
                        // commit on top of it has nothing more to add to the stored data.
                        let _ = session.commit_attempt(conflicts + 1).await;
                    }
                    return Err(error);
                }
            };
            match session.commit_attempt(conflicts + 1).await {
                Ok(()) => return Ok(value),
                Err(CommitError::Retryable(error)) => {
                    conflicts += 1;
                    let attempts = match config.on_conflict {
                        OnConflict::Retry { attempts } => attempts,
                        OnConflict::Fail => 1,
                    };
                    if conflicts >= attempts {
                        Counters::add(&self.inner.counters.errors, 1);
                        return Err(error.into());
                    }
                    Counters::add(&self.inner.counters.retries, 1);
                    tracing::debug!(
                        attempt = conflicts + 1,
                        "session conflict: re-running the handler"
                    );
                    tokio::time::sleep(backoff(conflicts)).await;
                }
                Err(CommitError::Final(error)) => return Err(error.into()),
            }
        }
    }

    /// Strict mode (rule S11): loads every fragment that has a key for `ctx` before you
    /// touch anything, concurrently across stores and in one round trip per store. Change
    /// the returned value, then [`save`](Loaded::save) it.
    pub async fn load<C: SessionContext + ?Sized>(&self, ctx: &C) -> Result<Loaded<S>, Error> {
        Counters::add(&self.inner.counters.updates, 1);
        if let Some(migration) = ctx.chat_migration() {
            self.migrate_chat(migration).await?;
        }
        let session = self.open_raw(&ctx);
        let all: Vec<usize> = (0..S::FRAGMENTS.len()).collect();
        session.hold_in_order(&all).await;
        if let Err(error) = session.load_all().await {
            Counters::add(&self.inner.counters.errors, 1);
            return Err(error);
        }
        let value = S::__take(&session.inner.lazy);
        Ok(Loaded { value, session })
    }
}

/// One page of a fragment's stored sessions, from [`Sessions::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionPage {
    /// The session keys (without the fragment's namespace) and their stored bytes.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Pass it to the next [`Sessions::list`] call; `None` when the listing is complete.
    pub cursor: Option<String>,
}

/// Admin tools: list, count and remove a fragment's stored sessions (rule S20).
impl<S: MultiSession> Sessions<S> {
    fn admin_cell<'a>(
        &self,
        session: &'a Session<S>,
        fragment: &str,
    ) -> Result<&'a dyn ErasedCell, Error> {
        session
            .cells()
            .into_iter()
            .find(|cell| cell.fragment() == fragment)
            .ok_or_else(|| Error::UnknownFragment {
                fragment: fragment.to_owned(),
                known: S::FRAGMENTS,
            })
    }

    fn list_error(cell: &dyn ErasedCell, source: crate::store::StoreError) -> Error {
        Error::Load {
            fragment: cell.fragment(),
            key: format!("{}*", cell.prefix()),
            store: cell.store().as_dyn().name().to_owned(),
            source,
        }
    }

    /// A page of about `limit` stored sessions of `fragment` (a field name), in no
    /// particular order; pass the returned cursor to get the next page.
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
    /// let sessions = Bot::builder().build();
    /// for chat in 1..=3 {
    ///     sessions.run(&ChatContext::new(chat), |s| async move { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// }
    /// let mut keys = Vec::new();
    /// let mut cursor = None;
    /// loop {
    ///     let page = sessions.list("count", cursor.as_deref(), 2).await?;
    ///     keys.extend(page.entries.into_iter().map(|(key, _bytes)| key));
    ///     match page.cursor { Some(next) => cursor = Some(next), None => break }
    /// }
    /// keys.sort();
    /// assert_eq!(keys, ["1", "2", "3"]);
    /// assert_eq!(sessions.count("count").await?, 3);
    /// assert!(sessions.remove("count", "2").await?);
    /// assert_eq!(sessions.clear("count").await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn list(
        &self,
        fragment: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, Error> {
        let session = self.open_raw(&ChatContext::default());
        let cell = self.admin_cell(&session, fragment)?;
        let prefix = cell.prefix();
        let page = session
            .inner
            .update
            .timed(cell.store().as_dyn().list(prefix, cursor, limit))
            .await
            .map_err(|e| Self::list_error(cell, e))?;
        let entries = page
            .entries
            .into_iter()
            .filter_map(|(key, record)| {
                key.strip_prefix(prefix)
                    .map(|k| (k.to_owned(), record.value))
            })
            .collect();
        Ok(SessionPage {
            entries,
            cursor: page.cursor,
        })
    }

    /// How many sessions of `fragment` are stored (pages through them all).
    pub async fn count(&self, fragment: &str) -> Result<u64, Error> {
        let mut total = 0u64;
        let mut cursor = None;
        loop {
            let page = self.list(fragment, cursor.as_deref(), 500).await?;
            total += page.entries.len() as u64;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(total),
            }
        }
    }

    /// Removes the stored session `session_key` (without namespace) of `fragment`;
    /// `false` if there was none. Waits for updates of that key in this process.
    pub async fn remove(&self, fragment: &str, session_key: &str) -> Result<bool, Error> {
        let session = self.open_raw(&ChatContext::default());
        let cell = self.admin_cell(&session, fragment)?;
        let key = format!("{}{session_key}", cell.prefix());
        let update = &session.inner.update;
        let _held = update.locks.acquire_in_order(cell.key_locks(), &key).await;
        let store = cell.store().as_dyn();
        let existed = update
            .timed(store.read(&key))
            .await
            .map_err(|source| Error::Load {
                fragment: cell.fragment(),
                key: key.clone(),
                store: store.name().to_owned(),
                source,
            })?
            .is_some();
        if existed {
            update
                .timed(store.delete(&key))
                .await
                .map_err(|error| Error::Save {
                    failures: vec![SaveFailure {
                        fragment: cell.fragment(),
                        key: key.clone(),
                        store: store.name().to_owned(),
                        error: SaveError::Store(error),
                    }],
                })?;
        }
        Ok(existed)
    }

    /// Removes every stored session of `fragment`; returns how many.
    pub async fn clear(&self, fragment: &str) -> Result<u64, Error> {
        let mut removed = 0u64;
        loop {
            // Removing while listing could skip keys; list from the start each round.
            let page = self.list(fragment, None, 500).await?;
            if page.entries.is_empty() {
                return Ok(removed);
            }
            for (key, _) in page.entries {
                if self.remove(fragment, &key).await? {
                    removed += 1;
                }
            }
        }
    }
}

impl<S: MultiSession> Sessions<S> {
    /// Moves the per-chat fragments of a group that Telegram turned into a supergroup from
    /// the old chat id to the new one (rule S21). [`run`](Sessions::run) and
    /// [`load`](Sessions::load) call it by themselves for an update whose context reports
    /// a [`ChatMigration`]; with [`open`](Sessions::open), call it yourself.
    ///
    /// A fragment is per chat when its key function gives a key from the chat id alone
    /// that changes with the chat (like `keys::chat` and `keys::chat_thread`); per-user
    /// and per-user-in-chat fragments are left alone. For each such fragment:
    /// - nothing stored under the old chat: nothing to do (so it is idempotent: Telegram
    ///   sends the migration twice, once in each chat);
    /// - something stored under the new chat already: it is kept, and the old value is
    ///   left where it is, so nothing is overwritten or lost;
    /// - otherwise the value moves, in one batch: written under the new chat only if that
    ///   is still empty, and removed from the old chat only if unchanged since read.
    ///
    /// Returns the fragments that moved.
    pub async fn migrate_chat(&self, migration: ChatMigration) -> Result<Vec<&'static str>, Error> {
        let old = self.open_raw(&ChatContext::new(migration.from));
        let new = self.open_raw(&ChatContext::new(migration.to));
        let mut moved = Vec::new();
        for (from, to) in old.cells().into_iter().zip(new.cells()) {
            let (Some(from_key), Some(to_key)) = (from.storage_key(), to.storage_key()) else {
                continue;
            };
            if from_key == to_key {
                continue;
            }
            if self.move_value(from, from_key, to_key).await? {
                moved.push(from.fragment());
            }
        }
        Ok(moved)
    }

    async fn move_value(
        &self,
        cell: &dyn ErasedCell,
        from_key: &str,
        to_key: &str,
    ) -> Result<bool, Error> {
        let store = cell.store().as_dyn();
        let update = Arc::new(UpdateCtx::new(
            self.inner.config.clone(),
            self.inner.counters.clone(),
            ChatContext::default(),
        ));
        let load_error = |key: &str, source| Error::Load {
            fragment: cell.fragment(),
            key: key.to_owned(),
            store: store.name().to_owned(),
            source,
        };
        // Both keys of this fragment, in the global order, so no update races the move.
        let (first, second) = if from_key < to_key {
            (from_key, to_key)
        } else {
            (to_key, from_key)
        };
        let _first = update.locks.acquire_in_order(cell.key_locks(), first).await;
        let _second = update
            .locks
            .acquire_in_order(cell.key_locks(), second)
            .await;
        let records = update
            .timed(store.read_many(&[from_key, to_key]))
            .await
            .map_err(|source| load_error(from_key, source))?;
        let (Some(Some(source)), Some(None)) = (records.first(), records.get(1)) else {
            return Ok(false);
        };
        let writes = [
            Write::Put {
                key: to_key.to_owned(),
                value: source.value.clone(),
                ttl: cell.ttl(),
                expect: Expect::Absent,
            },
            Write::Delete {
                key: from_key.to_owned(),
                expect: Expect::Revision(source.revision),
            },
        ];
        let results = match update.timed(async { Ok(store.apply(&writes).await) }).await {
            Ok(results) => results,
            Err(error) => writes.iter().map(|_| Err(error.replicate())).collect(),
        };
        let applied = results.iter().all(|r| matches!(r, Ok(Outcome::Applied)));
        let counters = &self.inner.counters;
        Counters::add(&counters.reads, 2);
        if applied {
            Counters::add(&counters.writes, 1);
            Counters::add(&counters.deletes, 1);
        }
        let failures: Vec<SaveFailure> = results
            .into_iter()
            .zip(&writes)
            .filter_map(|(result, write)| match result {
                Err(error) => Some(SaveFailure {
                    fragment: cell.fragment(),
                    key: write.key().to_owned(),
                    store: store.name().to_owned(),
                    error: SaveError::Store(error),
                }),
                Ok(_) => None,
            })
            .collect();
        if !failures.is_empty() {
            return Err(Error::Save { failures });
        }
        // A conflict means another process got there first: nothing of the batch applied.
        Ok(applied)
    }
}

/// The lazy session of one update. Derefs to the generated view with one accessor per
/// field. Cheap to clone (for spawned tasks); commit only after every clone is gone.
///
/// From the first touch of a fragment until the session is committed or dropped, it holds
/// that fragment's key in this process, so concurrent updates of the same key take turns
/// (rule S16). Do not open a second session of the same chat or user from the task that
/// holds one: it would wait for itself.
pub struct Session<S: MultiSession> {
    inner: Arc<SessionInner<S>>,
}

struct SessionInner<S: MultiSession> {
    lazy: S::Lazy,
    update: Arc<UpdateCtx>,
}

impl<S: MultiSession> Clone for Session<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: MultiSession> Deref for Session<S> {
    type Target = S::Lazy;
    fn deref(&self) -> &S::Lazy {
        &self.inner.lazy
    }
}

impl<S: MultiSession> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for cell in self.cells() {
            map.entry(&cell.fragment(), &cell.storage_key());
        }
        map.finish()
    }
}

enum CommitError {
    /// A conflict seen before anything was written: the update can be re-run.
    Retryable(Error),
    Final(Error),
}

impl<S: MultiSession> Session<S> {
    fn cells(&self) -> Vec<&dyn ErasedCell> {
        S::__cells(&self.inner.lazy)
    }

    /// Takes the keys of the fragments `indices`, waiting, in the global lock order.
    async fn hold_in_order(&self, indices: &[usize]) {
        if indices.is_empty() {
            return;
        }
        let mut cells: Vec<&dyn ErasedCell> = self
            .cells()
            .into_iter()
            .filter(|cell| indices.contains(&cell.index()) && cell.storage_key().is_some())
            .collect();
        cells.sort_by(|a, b| {
            (a.key_locks().order_id(), a.storage_key())
                .cmp(&(b.key_locks().order_id(), b.storage_key()))
        });
        let update = &self.inner.update;
        for cell in cells {
            if let Some(key) = cell.storage_key() {
                let held = update.locks.acquire_in_order(cell.key_locks(), key).await;
                update.put_preheld(cell.index(), held);
            }
        }
    }

    /// Strict mode: reads every fragment with a key, one batch per store, all stores at once.
    async fn load_all(&self) -> Result<(), Error> {
        let mut groups: HashMap<usize, Vec<&dyn ErasedCell>> = HashMap::new();
        for cell in self.cells() {
            if cell.storage_key().is_some() {
                groups
                    .entry(cell.store().as_dyn().instance())
                    .or_default()
                    .push(cell);
            }
        }
        let update = &self.inner.update;
        let reads = groups.into_values().map(|cells| async move {
            let keys: Vec<&str> = cells.iter().filter_map(|c| c.storage_key()).collect();
            Counters::add(&update.counters.reads, keys.len() as u64);
            let store = cells[0].store().clone();
            let records = update.timed(store.as_dyn().read_many(&keys)).await;
            (cells, records)
        });
        for (cells, records) in join_all(reads).await {
            let records = match records {
                Ok(records) if records.len() == cells.len() => records,
                Ok(records) => {
                    let cell = cells[0];
                    return Err(Error::Load {
                        fragment: cell.fragment(),
                        key: cell.storage_key().unwrap_or_default().to_owned(),
                        store: cell.store().as_dyn().name().to_owned(),
                        source: crate::store::StoreError::Corrupt(format!(
                            "read_many returned {} records for {} keys",
                            records.len(),
                            cells.len()
                        )),
                    });
                }
                Err(source) => {
                    let cell = cells[0];
                    return Err(Error::Load {
                        fragment: cell.fragment(),
                        key: cells
                            .iter()
                            .filter_map(|c| c.storage_key())
                            .collect::<Vec<_>>()
                            .join(", "),
                        store: cell.store().as_dyn().name().to_owned(),
                        source,
                    });
                }
            };
            for (cell, record) in cells.into_iter().zip(records) {
                cell.fill(record)?;
            }
        }
        Ok(())
    }

    /// Writes what changed, one batch per store, all stores at once (rule S12).
    ///
    /// Fails with [`Error::StillShared`] if a clone of this handle is still alive, with
    /// [`Error::MustRerun`] if the update met a contended key, with [`Error::Conflict`]
    /// if another process changed a fragment since it was read, and with [`Error::Save`]
    /// naming every fragment whose write failed.
    pub async fn commit(self) -> Result<(), Error> {
        self.commit_attempt(1).await.map_err(|e| match e {
            CommitError::Retryable(e) | CommitError::Final(e) => e,
        })
    }

    /// The commit of an update that touched nothing, or that must not commit: decided
    /// without building the commit's (large) future.
    fn quick_commit(&self) -> Option<Result<(), CommitError>> {
        let clones = Arc::strong_count(&self.inner) - 1;
        if clones > 0 {
            return Some(Err(CommitError::Final(Error::StillShared { clones })));
        }
        if let Some(&(_, fragment)) = self.inner.update.contended().first() {
            return Some(Err(CommitError::Final(Error::MustRerun { fragment })));
        }
        if !S::__any_loaded(&self.inner.lazy) {
            // Nothing touched (the common case: chatter): nothing to write.
            return Some(Ok(()));
        }
        None
    }

    async fn commit_attempt(self, attempt: u32) -> Result<(), CommitError> {
        match self.quick_commit() {
            Some(done) => done,
            None => Box::pin(self.commit_writes(attempt)).await,
        }
    }

    async fn commit_writes(self, attempt: u32) -> Result<(), CommitError> {
        let counters = self.inner.update.counters.clone();
        let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
        let span = tracing::debug_span!("multisession.commit", attempt);
        let result = tracing::Instrument::instrument(self.commit_inner(attempt), span).await;
        match &result {
            Ok(()) => tracing::debug!(
                elapsed_us = started.map_or(0, |s| s.elapsed().as_micros() as u64),
                "session committed"
            ),
            Err(CommitError::Retryable(error)) => {
                tracing::debug!(%error, "session commit conflicted")
            }
            Err(CommitError::Final(error)) => {
                Counters::add(&counters.errors, 1);
                tracing::warn!(%error, "session commit failed");
            }
        }
        result
    }

    /// The writes of a commit that `quick_commit` let through.
    async fn commit_inner(self, attempt: u32) -> Result<(), CommitError> {
        let cells = self.cells();
        let mut failures = Vec::new();
        type Planned<'a> = (StoreRef, Vec<(&'a dyn ErasedCell, Write)>);
        let mut groups: HashMap<usize, Planned<'_>> = HashMap::new();
        for cell in cells {
            match cell.plan() {
                Ok(Some(write)) => {
                    let store = cell.store();
                    groups
                        .entry(store.as_dyn().instance())
                        .or_insert_with(|| (store.clone(), Vec::new()))
                        .1
                        .push((cell, write));
                }
                Ok(None) => {}
                Err(failure) => failures.push(failure),
            }
        }
        if !failures.is_empty() {
            return Err(CommitError::Final(Error::Save { failures }));
        }
        let update = &self.inner.update;
        let batches = groups.into_values().map(|(store, planned)| async move {
            let writes: Vec<Write> = planned.iter().map(|(_, w)| w.clone()).collect();
            let results = match update
                .timed(async { Ok(store.as_dyn().apply(&writes).await) })
                .await
            {
                Ok(results) => results,
                Err(timeout) => writes.iter().map(|_| Err(timeout.replicate())).collect(),
            };
            (store, planned, results)
        });
        let mut applied = Vec::new();
        let mut conflicts = Vec::new();
        for (store, planned, results) in join_all(batches).await {
            let mut results = results.into_iter();
            for (cell, write) in planned {
                let outcome = results.as_slice().first();
                tracing::debug!(
                    fragment = cell.fragment(),
                    key = %update.config.shown_key(write.key()),
                    store = store.as_dyn().name(),
                    op = if matches!(write, Write::Put { .. }) { "put" } else { "delete" },
                    outcome = match outcome {
                        Some(Ok(Outcome::Applied)) => "applied",
                        Some(Ok(Outcome::Conflict)) => "conflict",
                        _ => "error",
                    },
                    "session fragment saved"
                );
                let failure = |error| SaveFailure {
                    fragment: cell.fragment(),
                    key: write.key().to_owned(),
                    store: store.as_dyn().name().to_owned(),
                    error,
                };
                match results.next() {
                    Some(Ok(Outcome::Applied)) => {
                        let counter = match &write {
                            Write::Put { .. } => &update.counters.writes,
                            Write::Delete { .. } => &update.counters.deletes,
                        };
                        Counters::add(counter, 1);
                        applied.push(cell.fragment());
                    }
                    Some(Ok(Outcome::Conflict)) => {
                        Counters::add(&update.counters.conflicts, 1);
                        conflicts.push((cell, write.key().to_owned(), store.clone()));
                    }
                    Some(Err(error)) => failures.push(failure(SaveError::Store(error))),
                    None => failures.push(failure(SaveError::Store(
                        crate::store::StoreError::Corrupt(
                            "apply returned fewer results than writes".into(),
                        ),
                    ))),
                }
            }
        }
        if !failures.is_empty() {
            return Err(CommitError::Final(Error::Save { failures }));
        }
        if let Some((cell, key, store)) = conflicts.into_iter().next() {
            let error = Error::Conflict {
                fragment: cell.fragment(),
                key,
                store: store.as_dyn().name().to_owned(),
                attempts: attempt,
                partially_committed: applied.clone(),
            };
            return Err(if applied.is_empty() {
                CommitError::Retryable(error)
            } else {
                CommitError::Final(error)
            });
        }
        Ok(())
    }
}

/// A random wait before re-running after the `n`th conflict: up to 1 ms, doubling to
/// 64 ms, so two processes racing on one key stop colliding.
fn backoff(n: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let cap_us = 1000u64 << n.saturating_sub(1).min(6);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(random % cap_us)
}

/// A session loaded in strict mode: every fragment's value, ready to change. Derefs to
/// the struct. [`save`](Loaded::save) writes what changed; dropping it discards.
///
/// Like a lazy [`Session`], it holds its keys (in this process) until it is saved or
/// dropped: an update of the same chat or user waits meanwhile, so do not run one from
/// the task that holds it.
pub struct Loaded<S: MultiSession> {
    value: S,
    session: Session<S>,
}

impl<S: MultiSession> Loaded<S> {
    /// Writes the fragments whose values changed (rule S12).
    pub async fn save(self) -> Result<(), Error> {
        let Loaded { value, session } = self;
        value.__put(&session.inner.lazy);
        session.commit().await
    }

    /// The loaded values, leaving the session behind (nothing will be saved).
    pub fn into_inner(self) -> S {
        self.value
    }
}

impl<S: MultiSession> Deref for Loaded<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.value
    }
}

impl<S: MultiSession> DerefMut for Loaded<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.value
    }
}

impl<S: MultiSession + fmt::Debug> fmt::Debug for Loaded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}
