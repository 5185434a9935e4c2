//! Running sessions: [`Sessions`] (the fragments with their stores) opens a lazy
//! [`Session`] per update and runs handlers on it, re-running them where a commit did not
//! complete.

use std::{fmt, future::Future, ops::Deref, sync::Arc, time::Instant};

use crate::{
    affinity::Affinity,
    cell::{BoundCells, ErasedCell},
    commit::{CommitError, backoff, commit_cells, commit_now},
    config::{Config, OnHandlerError},
    context::{ChatContext, SessionContext},
    error::Error,
    lock::key_hash,
    stats::{Counter, Counters, Stats},
    update::{COMMIT_FAILED, COMMIT_NONE, CellKey, Env, KeysView, UpdateCtx, UpdateRef},
};

/// A struct whose fields are session fragments. Implemented by `#[derive(MultiSession)]`.
///
/// The derive also generates an inherent `builder()` on the struct, a builder with one
/// store setter per field, and the lazy view that [`Session`] derefs to, with one accessor
/// per field.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, Sessions, keys, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     pizzas: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// // What the derive implements:
/// assert_eq!(<Bot as MultiSession>::FRAGMENTS, ["pizzas", "lang"]);
/// // ...and adds: a builder with a store setter per field (and a default for the rest).
/// let orders = MemoryStore::new();
/// let sessions: Sessions<Bot> = Bot::builder()
///     .pizzas(orders.clone())
///     .default_store(MemoryStore::new())
///     .build();
/// // `Session<Bot>` derefs to `<Bot as MultiSession>::Lazy`, with one accessor per field.
/// sessions
///     .run(&ChatContext::new(1).with_user(7), async |s| {
///         *s.pizzas().await? += 1;
///         s.lang().set("it".into()).await
///     })
///     .await?;
/// assert_eq!(orders.len(), 1, "`pizzas` went to its own store");
/// # Ok(()) }
/// ```
pub trait MultiSession: Sized + Send + 'static {
    /// The per-update lazy view: one cell per fragment, one accessor method per field.
    type Lazy: KeysView + Send + Sync + 'static;
    /// The fragments as a running [`Sessions`] holds them.
    #[doc(hidden)]
    type Shared: Send + Sync + 'static;
    /// The cells of a lazy view with what they need (their fragment, the update), as
    /// the runtime goes through them.
    #[doc(hidden)]
    type Bound<'a>: BoundCells + Send;

    /// The fragment names, in field order.
    const FRAGMENTS: &'static [&'static str];

    /// The lazy view of one update: `core` and an untouched cell per fragment.
    #[doc(hidden)]
    fn __open(core: Core<Self>) -> Self::Lazy;
    #[doc(hidden)]
    fn __core(lazy: &Self::Lazy) -> &Core<Self>;
    #[doc(hidden)]
    fn __bind(lazy: &Self::Lazy) -> Self::Bound<'_>;
    /// Whether any fragment was touched (loaded, set or deleted) in this update.
    #[doc(hidden)]
    fn __any_loaded(lazy: &Self::Lazy) -> bool;
    #[doc(hidden)]
    fn __take(lazy: &Self::Lazy) -> Self;
    #[doc(hidden)]
    fn __put(self, lazy: &Self::Lazy);
}

/// What the cells of one update share: the sessions they belong to and the update.
/// Part of the derive's lazy view, so a session is one allocation.
#[doc(hidden)]
pub struct Core<S: MultiSession> {
    pub(crate) sessions: Arc<SessionsInner<S>>,
    pub(crate) update: UpdateCtx,
}

impl<S: MultiSession> Core<S> {
    /// The fragments with their stores.
    pub fn shared(&self) -> &S::Shared {
        &self.sessions.shared
    }

    /// The update as the cells of `view` (the lazy view holding this core) see it.
    pub fn cx<'a>(&'a self, view: &'a dyn KeysView) -> UpdateRef<'a> {
        UpdateRef {
            update: &self.update,
            env: &self.sessions.env,
            view: Some(view),
        }
    }
}

/// Fragment `index`'s key in the update of `lazy` (what the derive's `KeysView` returns).
#[doc(hidden)]
pub fn key_of<S: MultiSession>(lazy: &S::Lazy, index: usize) -> Option<CellKey> {
    let bound = S::__bind(lazy);
    let cells = bound.cells();
    let cell = cells.get(index)?;
    Some((
        cell.key_locks().clone(),
        cell.storage_key()?.to_owned(),
        cell.fragment(),
    ))
}

/// The sessions of one bot: the fragments with their stores. Cheap to clone.
///
/// Build it once with the derived `builder()` and share it between handlers (clones share the
/// stores, the [`Config`] and the [`stats`](Sessions::stats)). Each update then uses one of:
/// [`run`](Sessions::run) (a handler, re-run where needed), [`open`](Sessions::open) and
/// [`Session::commit`] (two steps), or [`load`](Sessions::load) and
/// [`Loaded::save`](crate::Loaded::save) (strict mode: everything read up front).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, Sessions, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions: Sessions<Bot> = Bot::builder().default_store(MemoryStore::new()).build();
/// let ctx = ChatContext::new(1);
///
/// // A handler: committed when it returns `Ok`.
/// sessions.run(&ctx, async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
///
/// // Two steps, for frameworks that cannot take a closure.
/// let session = sessions.open(&ctx);
/// *session.count().await? += 1;
/// session.commit().await?;
///
/// // Strict mode, from a clone (in a spawned task, say).
/// let clone = sessions.clone();
/// let mut loaded = tokio::spawn(async move { clone.load(&ChatContext::new(1)).await }).await.unwrap()?;
/// loaded.count += 1;
/// loaded.save().await?;
///
/// assert_eq!(sessions.load(&ctx).await?.count, 3);
/// assert_eq!(sessions.stats().updates, 4);
/// # Ok(()) }
/// ```
pub struct Sessions<S: MultiSession> {
    pub(crate) inner: Arc<SessionsInner<S>>,
}

pub(crate) struct SessionsInner<S: MultiSession> {
    shared: S::Shared,
    pub(crate) env: Env,
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
            .field("config", &self.inner.env.config)
            .finish()
    }
}

impl<S: MultiSession> Sessions<S> {
    #[doc(hidden)]
    pub fn __new(shared: S::Shared, config: Config) -> Self {
        Self {
            inner: Arc::new(SessionsInner {
                shared,
                env: Env {
                    config,
                    counters: Counters::default(),
                    affinity: Affinity::new(S::FRAGMENTS.len()),
                },
            }),
        }
    }

    /// The runtime options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// assert_eq!(format!("{:?}", sessions.config()), format!("{:?}", multisession::Config::new()));
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.env.config
    }

    /// What these sessions did so far: reads, writes, conflicts, retries, errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// sessions
    ///     .run(&ChatContext::new(1), async |s| {
    ///         *s.count().await? += 1;
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// let stats = sessions.stats();
    /// assert_eq!((stats.reads, stats.writes, stats.retries), (1, 1, 0));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.env.counters.snapshot()
    }

    /// A session of `ctx` as update `update_id` (`None`: generated on first need), whose
    /// earlier runs wrote `written`.
    fn open_again(
        &self,
        ctx: &dyn SessionContext,
        update_id: Option<u64>,
        written: Vec<&'static str>,
    ) -> Session<S> {
        let mut update = UpdateCtx::new(ChatContext::of(ctx), update_id);
        update.written_before = written;
        update.bot = self.inner.env.config.bot_of(ctx.bot_id());
        if let Some(business) = ctx.business_connection_id() {
            update.ctx.business = Some(business.into());
        }
        let core = Core {
            sessions: self.inner.clone(),
            update,
        };
        Session {
            inner: Arc::new(S::__open(core)),
        }
    }

    /// A session of `ctx` as its own update (or a generated one).
    pub(crate) fn open_raw(&self, ctx: &dyn SessionContext) -> Session<S> {
        self.open_again(ctx, ctx.update_id(), Vec::new())
    }

    /// Opens the lazy session of one update, for frameworks that cannot take a closure.
    /// Nothing is read until a fragment is touched. Call [`Session::commit`] after the
    /// handler succeeded; drop the session to discard its changes.
    ///
    /// Unlike [`run`](Sessions::run), nothing is re-run for you: a failed commit returns
    /// its error, which says what was stored ([`Error::stored`]). To complete a partial
    /// commit, handle the update again under the same id (the context's
    /// [`update_id`](SessionContext::update_id), or [`Error::update_id`] with
    /// [`ChatContext::with_update_id`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(1).with_user(7));
    /// *session.count().await? += 1;
    /// session.commit().await?; // or drop it to discard
    /// # Ok(()) }
    /// ```
    pub fn open<C: SessionContext + ?Sized>(&self, ctx: &C) -> Session<S> {
        self.inner.env.counters.add(Counter::Updates, 1);
        self.open_raw(&ctx)
    }

    /// Runs `handler` on the lazy session of the update `ctx` and commits what changed.
    ///
    /// The handler may be run more than once, each time on fresh reads, under the same
    /// update id:
    /// - when another process changed a fragment between read and write, or a store
    ///   failed or timed out after other fragments were written, per
    ///   [`OnConflict`](crate::OnConflict) (by default, for up to 20 s). Fragments the
    ///   update already changed are not written again (rule S25), so a re-run completes
    ///   the commit without applying anything twice;
    /// - when updates in this process would otherwise wait for each other's keys in a
    ///   cycle (rare: only updates that overlap in time and take the same keys in opposite
    ///   orders).
    ///
    /// The handler's other side effects (messages sent, counters elsewhere) are repeated
    /// by a re-run: keep them idempotent, or do them after `run` returns.
    ///
    /// If the handler fails, nothing is written (unless [`OnHandlerError::Commit`]) and
    /// its error is returned. If the commit does not complete, the error says what was
    /// stored ([`Error::stored`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let ctx = ChatContext::new(1).with_user(7).with_update_id(584_120_332);
    /// let greeting = String::from("hello");
    /// let reply = sessions
    ///     .run(&ctx, async |s| {
    ///         *s.count().await? += 1;
    ///         let lang = s.lang().await?.clone();
    ///         // An async closure may use the caller's values (`greeting`), even if it runs twice.
    ///         Ok::<_, multisession::Error>(format!("{greeting} [{lang}]"))
    ///     })
    ///     .await?;
    /// assert_eq!(reply, "hello []");
    /// // Side effects (sending `reply`) go here, after the commit.
    /// # Ok(()) }
    /// ```
    pub async fn run<C, F, Fut, R, E>(&self, ctx: &C, mut handler: F) -> Result<R, E>
    where
        C: SessionContext + ?Sized,
        F: FnMut(Session<S>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        E: From<Error>,
    {
        let env = &self.inner.env;
        env.counters.add(Counter::Updates, 1);
        if let Some(migration) = ctx.chat_migration() {
            self.migrate_chat_of(ctx.bot_id(), migration).await?;
        }
        let config = &env.config;
        let counters = &env.counters;
        // The update's identity: its context's, or one its first run generates when it
        // needs one (re-runs keep it).
        let mut update_id = ctx.update_id();
        // The re-run budget counts from the first run that did not complete: reading the
        // clock costs more than an update that touches nothing, so it is read only then.
        let mut started: Option<Instant> = None;
        let mut runs = 0u32;
        let mut contentions = 0u32;
        let mut wanted: Vec<usize> = Vec::new();
        // The error of an earlier commit that left data written in part or unknown: what
        // the caller must hear if a re-run fails for another reason.
        let mut incomplete: Option<Error> = None;
        // Fragments that earlier runs wrote: a re-run does not write them again, even if
        // their stored value no longer lists this update (rule S25).
        let mut written: Vec<&'static str> = Vec::new();
        loop {
            let session = self.open_again(&ctx, update_id, written.clone());
            if !wanted.is_empty() {
                match session.hold_in_order(&wanted).await {
                    Ok(()) => {}
                    Err(Error::Contended { .. })
                        if contentions + 1 < config.contention_attempts =>
                    {
                        contentions += 1;
                        counters.add(Counter::ContentionRetries, 1);
                        update_id = update_id.or(session.update().known_update_id());
                        continue;
                    }
                    Err(error) => return Err(incomplete.unwrap_or(error).into()),
                }
            }
            let result = handler(session.clone()).await;
            // Re-runs are the same update.
            update_id = update_id.or(session.update().known_update_id());
            if session.update().is_contended() {
                let contended = session.update().contended();
                let Some(&(_, fragment)) = contended.first() else {
                    continue;
                };
                contentions += 1;
                if contentions >= config.contention_attempts {
                    let key = session
                        .bound()
                        .cells()
                        .into_iter()
                        .find(|cell| cell.fragment() == fragment)
                        .and_then(|cell| cell.storage_key().map(str::to_owned))
                        .unwrap_or_default();
                    counters.add(Counter::Errors, 1);
                    return Err(incomplete
                        .unwrap_or(Error::Contended { fragment, key })
                        .into());
                }
                counters.add(Counter::ContentionRetries, 1);
                // Re-run holding, in the global order, what this attempt held or wanted.
                wanted = session
                    .bound()
                    .cells()
                    .into_iter()
                    .filter(|cell| cell.is_loaded())
                    .map(|cell| cell.index())
                    .chain(contended.iter().map(|&(index, _)| index))
                    .collect();
                // Updates like this one take these keys together from now on.
                let touched: Vec<bool> = (0..S::FRAGMENTS.len())
                    .map(|i| wanted.contains(&i))
                    .collect();
                env.affinity.record(&touched);
                drop(session);
                continue;
            }
            runs += 1;
            let value = match result {
                Ok(value) => value,
                Err(error) => {
                    if let Some(earlier) = incomplete.take() {
                        // A re-run failed (a store still down, say) after an earlier run
                        // stored part of the update: keep trying within the budget, then
                        // report what the earlier run stored.
                        let started = *started.get_or_insert_with(Instant::now);
                        if config.on_conflict.allows(runs, started.elapsed()) {
                            counters.add(Counter::CommitRetries, 1);
                            incomplete = Some(earlier);
                            tokio::time::sleep(backoff(runs)).await;
                            continue;
                        }
                        tracing::warn!(error = %earlier, "session re-run failed; the update is stored in part");
                        counters.add(Counter::Errors, 1);
                        return Err(earlier.into());
                    }
                    if config.on_handler_error == OnHandlerError::Commit {
                        // The handler's error is what the caller needs to see; a failed
                        // commit on top of it has nothing more to add to the stored data.
                        let _ = session.commit_attempt(runs).await;
                    }
                    return Err(error);
                }
            };
            if session.untouched_and_alone() {
                // The common case (chatter): no fragment touched, no other handle left,
                // so nothing to commit; decided without the commit's future.
                return Ok(value);
            }
            match session.commit_attempt(runs).await {
                Ok(()) => return Ok(value),
                Err(CommitError::Retry(error)) => {
                    update_id = update_id.or(error.update_id());
                    let error = error.with_written(&written);
                    if let Error::Save { written: now, .. } | Error::Conflict { written: now, .. } =
                        &error
                    {
                        written.clone_from(now);
                    }
                    let started = *started.get_or_insert_with(Instant::now);
                    if !config.on_conflict.allows(runs, started.elapsed()) {
                        counters.add(Counter::Errors, 1);
                        return Err(error.into());
                    }
                    counters.add(Counter::CommitRetries, 1);
                    tracing::debug!(attempt = runs + 1, %error, "session commit incomplete: re-running the handler");
                    if !matches!(error.stored(), crate::error::Stored::Nothing) {
                        incomplete = Some(error);
                    }
                    tokio::time::sleep(backoff(runs)).await;
                }
                Err(CommitError::Final(error)) => {
                    return Err(incomplete.unwrap_or(error).into());
                }
            }
        }
    }
}

/// The lazy session of one update. Derefs to the generated view with one accessor per
/// field. Cheap to clone (for spawned tasks); commit only after every clone is gone.
///
/// From the first touch of a fragment until the session is committed or dropped, it holds
/// that fragment's key in this process, so concurrent updates of the same key take turns
/// (rule S16). Do not open a second session of the same chat or user from the task that
/// holds one: it would wait for itself (up to
/// [`Config::lock_timeout`](crate::Config::lock_timeout), then [`Error::Busy`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, Session, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     log: Vec<String>,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// let session: Session<Bot> = sessions.open(&ChatContext::new(1));
/// *session.count().await? += 1; // through `Deref`: `session.count()` is the lazy accessor
///
/// // A clone for a task of the same update.
/// let task = {
///     let session = session.clone();
///     tokio::spawn(async move { session.log().await.map(|mut log| log.push("counted".into())) })
/// };
/// task.await.unwrap()?; // every clone is gone...
/// session.commit().await?; // ...before the commit
///
/// let data = sessions.load(&ChatContext::new(1)).await?;
/// assert_eq!((data.count, data.log.len()), (1, 1));
/// # Ok(()) }
/// ```
pub struct Session<S: MultiSession> {
    /// The lazy view: the update and its cells, in one allocation.
    pub(crate) inner: Arc<S::Lazy>,
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
        &self.inner
    }
}

impl<S: MultiSession> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        let bound = self.bound();
        for cell in bound.cells() {
            map.entry(&cell.fragment(), &cell.storage_key());
        }
        map.finish()
    }
}

impl<S: MultiSession> Session<S> {
    /// The update.
    pub(crate) fn update(&self) -> &UpdateCtx {
        &S::__core(&self.inner).update
    }

    /// The update as its cells see it.
    pub(crate) fn cx(&self) -> UpdateRef<'_> {
        S::__core(&self.inner).cx(&*self.inner)
    }

    /// The cells, for going through them.
    pub(crate) fn bound(&self) -> S::Bound<'_> {
        S::__bind(&self.inner)
    }

    /// The identity of this session's update (its context's
    /// [`update_id`](SessionContext::update_id), or a generated one).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(1).with_update_id(584_120_332));
    /// assert_eq!(session.update_id(), 584_120_332);
    /// # Ok(()) }
    /// ```
    pub fn update_id(&self) -> u64 {
        self.update().update_id()
    }

    /// Deletes every fragment of this update's session, as grammY's
    /// `ctx.session = undefined` (rule S9 for each fragment): at the commit, one delete
    /// per fragment that has a stored value; none for a fragment with no key for this
    /// update or nothing stored. Each fragment not read yet is read first (to know), so
    /// the deletes are compare-and-set like any write: a value another process changes
    /// meanwhile is a conflict and a re-run, never a lost update. Later reads in this
    /// update see initial values.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    ///     #[session(key = multisession::keys::user_in_chat)]
    ///     quiz: Option<u32>,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let ctx = ChatContext::new(1).with_user(7);
    /// sessions
    ///     .run(&ctx, async |s| {
    ///         *s.count().await? += 1;
    ///         s.lang().set("de".into()).await // `quiz` stays unstored
    ///     })
    ///     .await?;
    /// sessions.run(&ctx, async |s| s.delete_all().await).await?; // "/reset"
    /// assert_eq!(sessions.stats().deletes, 2, "count and lang; nothing stored for quiz");
    /// assert_eq!(sessions.load(&ctx).await?.lang, "");
    /// # Ok(()) }
    /// ```
    pub async fn delete_all(&self) -> Result<(), Error> {
        let bound = self.bound();
        for cell in bound.cells() {
            cell.delete_stored().await?;
        }
        Ok(())
    }

    /// Takes the keys of the fragments `indices`, waiting, in the global lock order.
    pub(crate) async fn hold_in_order(&self, indices: &[usize]) -> Result<(), Error> {
        if indices.is_empty() {
            return Ok(());
        }
        let bound = self.bound();
        let mut cells: Vec<&dyn ErasedCell> = bound
            .cells()
            .into_iter()
            .filter(|cell| indices.contains(&cell.index()) && cell.storage_key().is_some())
            .collect();
        // The global order: by fragment, then by the key's lock (its hash).
        cells.sort_by_key(|cell| {
            (
                cell.key_locks().order_id(),
                cell.storage_key().map(key_hash),
            )
        });
        let update = self.cx();
        for cell in cells {
            if let Some(key) = cell.storage_key() {
                let held = update.hold(cell.key_locks(), cell.fragment(), key).await?;
                update.put_preheld(cell.index(), held);
            }
        }
        Ok(())
    }
}

impl<S: MultiSession> Session<S> {
    /// Writes what changed, one batch per store, all stores at once (rule S12).
    ///
    /// On failure the error says what was stored ([`Error::stored`]): nothing; these
    /// fragments and not those; or, after a timeout or a lost connection, unknown for
    /// some. Re-running the same update (same update id: [`Session::update_id`]) is safe
    /// in every case (rule S25). Clones of the handle that are still alive (a framework
    /// keeps one, a spawned task) do not stop the commit: their later accesses fail with
    /// [`Error::Committed`], and a guard one of them still holds fails its fragment's
    /// save (nothing written for it). Committing again through a clone writes nothing: it
    /// returns `Ok` if the first commit succeeded (or is under way; its caller hears how
    /// it ends) and [`Error::CommitFailed`] if it failed. Fails with [`Error::MustRerun`] if the update met a contended
    /// key (nothing written in both cases), with [`Error::Conflict`] if another process
    /// changed a fragment since it was read, and with [`Error::Save`] naming every
    /// fragment whose write failed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(1).with_user(7));
    /// *session.count().await? += 1;
    /// match session.commit().await {
    ///     Ok(()) => {}
    ///     Err(error) => println!("{error}: stored {:?}", error.stored()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn commit(self) -> Result<(), Error> {
        self.commit_attempt(1).await.map_err(|e| match e {
            CommitError::Retry(e) | CommitError::Final(e) => e,
        })
    }

    /// The commit of an update that touched nothing, or that must not commit: decided
    /// without building the commit's (large) future.
    fn quick_commit(&self) -> Option<Result<(), CommitError>> {
        if self.update().is_contended()
            && let Some(&(_, fragment)) = self.update().contended().first()
        {
            return Some(Err(CommitError::Final(Error::MustRerun { fragment })));
        }
        if !S::__any_loaded(&self.inner) {
            // Nothing touched (the common case: chatter): nothing to write.
            return Some(Ok(()));
        }
        None
    }

    /// Whether this is the last handle of an update whose commit would do nothing
    /// ([`quick_commit`](Self::quick_commit)'s `Ok`: nothing touched, not contended),
    /// so it can be skipped.
    fn untouched_and_alone(&self) -> bool {
        if Arc::strong_count(&self.inner) > 1 {
            return false;
        }
        // The other handles are gone: see what they did before they went.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        matches!(self.quick_commit(), Some(Ok(())))
    }

    pub(crate) async fn commit_attempt(self, attempt: u32) -> Result<(), CommitError> {
        // Clones of the handle (a framework's copy, a spawned task) may outlive the
        // commit: from now on their accesses are `Error::Committed`, never a change that
        // is silently dropped, and the keys are let go when the commit is done.
        let shared = Arc::strong_count(&self.inner) > 1;
        let update = self.update();
        if shared {
            update.close();
        } else {
            // The other handles are gone: see what they did before they went.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        }
        // A second commit through a clone (the endpoint committed, then the framework):
        // what the update changed was written, or reported as failed, by the first.
        match update.begin_commit(!shared) {
            COMMIT_NONE => {}
            COMMIT_FAILED => {
                let fragment = self
                    .bound()
                    .cells()
                    .into_iter()
                    .find(|cell| cell.is_loaded())
                    .map_or(S::FRAGMENTS.first().copied().unwrap_or_default(), |cell| {
                        cell.fragment()
                    });
                return Err(CommitError::Retry(Error::CommitFailed { fragment }));
            }
            _ => return Ok(()),
        }
        let result = match self.quick_commit() {
            Some(done) => done,
            None => {
                let bound = self.bound();
                let cx = self.cx();
                {
                    let touched = |i| bound.cell(i).is_some_and(|cell| cell.is_loaded());
                    match S::FRAGMENTS.len() {
                        // Which fragments were touched, asked once each.
                        n @ ..=64 => {
                            let mask =
                                (0..n).fold(0u64, |mask, i| mask | u64::from(touched(i)) << i);
                            cx.env.affinity.record_by(|i| mask >> i & 1 == 1);
                        }
                        _ => cx.env.affinity.record_by(touched),
                    }
                }
                match commit_now(&bound, cx, attempt) {
                    Some(done) => done,
                    None => Box::pin(commit_cells(&bound.cells(), cx, attempt)).await,
                }
            }
        };
        if shared {
            for cell in self.bound().cells() {
                cell.release();
            }
            update.release_preheld();
        }
        if result.is_err() {
            update.commit_failed();
        }
        result
    }
}
