//! SQLite: the embedded, persistent default store.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, InterruptHandle, OpenFlags, OptionalExtension, Transaction, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sweeper::{SweepBatches, Sweeper, sweep_all};
use crate::store::{
    Capabilities, Expect, Outcome, Page, Record, Store, StoreError, Write, prefix_end,
};

/// The default busy timeout: clearly below the runtime's default `op_timeout` (5 s).
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(4);

/// Options of a [`SqliteStore`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-config-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// use multisession::stores::{SqliteConfig, SqliteStore};
/// use std::time::Duration;
///
/// let config = SqliteConfig::new()
///     .table("pizza_sessions")
///     .busy_timeout(Duration::from_secs(2))
///     .connections(2);
/// let store = SqliteStore::open_with(dir.join("bot.db"), config).await?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    table: String,
    busy_timeout: Duration,
    connections: usize,
    inline: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            table: "multisession".to_owned(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            connections: 4,
            inline: true,
        }
    }
}

impl SqliteConfig {
    /// The defaults: table `multisession`, 4 s busy timeout, 4 connections, point
    /// operations on the calling task when they need not wait.
    ///
    /// ```
    /// use multisession::stores::SqliteConfig;
    ///
    /// // The same as `SqliteStore::open(path)`: every option at its default.
    /// let config = SqliteConfig::new();
    /// # let _ = config;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The table (letters, digits and `_`, not starting with a digit). Another table,
    /// `<table>_revision`, holds the revision counter.
    ///
    /// Two bots can share one file under different tables:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-table-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::{store::Store, stores::{SqliteConfig, SqliteStore}};
    ///
    /// let path = dir.join("bots.db");
    /// let pizza = SqliteStore::open_with(&path, SqliteConfig::new().table("pizza_bot")).await?;
    /// let quiz = SqliteStore::open_with(&path, SqliteConfig::new().table("quiz_bot")).await?;
    /// pizza.write("count:1", b"3", None).await?;
    /// assert!(quiz.read("count:1").await?.is_none());
    ///
    /// // Names are checked before anything is opened.
    /// assert!(SqliteStore::open_with(&path, SqliteConfig::new().table("pizza-bot")).await.is_err());
    /// # drop((pizza, quiz));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long a connection waits for another connection's (or process's) write lock
    /// before the operation fails. Default: 4 s.
    ///
    /// Keep it below the runtime's `op_timeout` (5 s by default): a write that gives up
    /// waiting for the lock never began its transaction, so it fails as certainly not
    /// written; one the runtime's timeout cuts off first can only be reported as an
    /// unknown outcome (see [`SqliteStore`]). If you lower `op_timeout`, lower this too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-busy-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::{Config, MultiSession, stores::{SqliteConfig, SqliteStore}};
    /// use std::time::Duration;
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// // A bot that gives up on a store call after 2 s waits at most 1.5 s for the lock.
    /// let config = SqliteConfig::new().busy_timeout(Duration::from_millis(1500));
    /// let store = SqliteStore::open_with(dir.join("bot.db"), config).await?;
    /// let sessions = Bot::builder()
    ///     .default_store(store)
    ///     .config(Config::new().op_timeout(Some(Duration::from_secs(2))))
    ///     .build();
    /// # drop(sessions);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many connections (reads run in parallel under WAL; writes take turns).
    /// At least 1.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-connections-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::{store::Store, stores::{SqliteConfig, SqliteStore}};
    ///
    /// let config = SqliteConfig::new().connections(8); // a read-heavy bot
    /// let store = SqliteStore::open_with(dir.join("bot.db"), config).await?;
    /// store.write("count:1", b"1", None).await?;
    /// // Three reads at once, on three connections.
    /// let (a, b, c) = tokio::join!(store.read("count:1"), store.read("count:1"), store.read("count:1"));
    /// assert!([a?, b?, c?].iter().all(|r| r.as_ref().unwrap().value == b"1"));
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }

    /// Whether point operations (reads, batch reads, writes of a commit) may run on the
    /// calling task. Default: on.
    ///
    /// A point operation on a local file takes a few microseconds; handing it to tokio's
    /// blocking pool and back costs more than that. So when a connection is free, the
    /// store first runs the operation right where it is called, with SQLite told not to
    /// wait for any lock: if a lock is taken (another connection or process is writing),
    /// nothing was done, and the operation goes to the blocking pool, where it waits for
    /// the lock as usual (up to the [busy timeout](Self::busy_timeout)). WAL checkpoints
    /// (the copying of the log into the database file, with its `fsync`) never run on the
    /// calling task: they are handed to the blocking pool. Listing, counting and sweeping
    /// always run on the blocking pool.
    ///
    /// Turn it off for a database on slow storage (a network file system), where even a
    /// point operation may block for long.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-inline-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::{store::Store, stores::{SqliteConfig, SqliteStore}};
    ///
    /// // Every call on the blocking pool, as for a file on a network share.
    /// let config = SqliteConfig::new().inline(false);
    /// let store = SqliteStore::open_with(dir.join("bot.db"), config).await?;
    /// store.write("count:1", b"1", None).await?;
    /// assert_eq!(store.read("count:1").await?.unwrap().value, b"1");
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }
}

/// Sessions in a SQLite file: persistent, embedded, no server. Cheap to clone.
///
/// SQLite is compiled in (no system library needed). The file is opened in WAL mode with
/// a busy timeout, and the table is created on first use. A point operation runs on the
/// calling task when it can finish without waiting for a lock, else on tokio's blocking
/// pool (see [`SqliteConfig::inline`]); nothing ever waits for a lock on the reactor.
/// Writes of one commit are one `IMMEDIATE` transaction that checks every revision, so
/// several processes can share a file without losing updates (rule S17): a
/// compare-and-set put of an existing key is one `UPDATE ... WHERE revision = ?`, which
/// sets the revision read plus one; a create or a blind write takes the next value `c` of
/// a counter table as the revision `c × 10^9`, so a key's revisions never repeat, not even
/// after a delete.
///
/// **Timeouts and failed writes.** A failed [`Store::apply`] (and `write`, `delete`) says
/// whether the batch may have landed (rule S26). An error before `COMMIT` (the write lock
/// not obtained within the busy timeout, a failed statement) rolls the transaction back:
/// not written ([`StoreError::Backend`]). An error from `COMMIT` itself is an unknown
/// outcome ([`StoreError::Unknown`]), unless the transaction is still open after it (a
/// lock not obtained): then it is rolled back, and not written.
///
/// When the runtime's `op_timeout` (or any `select!`/`timeout` of the caller) drops a
/// call, its job on the blocking pool cannot be stopped from outside: so the store
/// cancels it. The job is interrupted (`sqlite3_interrupt`), stops waiting for a lock,
/// and never starts its `COMMIT` once cancelled: it rolls back instead. A write whose
/// `COMMIT` had already started may still land; the runtime reports every such write as
/// unknown, and because each update changes each fragment at most once (rule S25: the
/// stored record remembers which updates changed it), re-running the same update is
/// safe. The busy timeout (4 s by default) stays below the default `op_timeout` (5 s),
/// so a write stuck behind another process's lock fails as "not written" first.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multisession::{MultiSession, stores::SqliteStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions = Bot::builder().default_store(SqliteStore::open("bot.db").await?).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The idle connections; a permit of `permits` guarantees one.
    pool: Mutex<Vec<Slot>>,
    permits: Arc<Semaphore>,
    table: String,
    counter: String,
    /// The statements of the point operations, made once.
    sql: Sql,
    path: PathBuf,
    /// [`SqliteConfig::inline`].
    inline: bool,
    /// Set when a commit on the calling task left a long log: a checkpoint is due, to be
    /// run on the blocking pool.
    checkpoint_due: Arc<AtomicBool>,
}

/// A pooled connection and the flags of the job running on it.
struct Slot {
    conn: Connection,
    /// Set when the caller of the job running on `conn` went away (its future was
    /// dropped): the job then stops waiting for locks and does not commit. Read by the
    /// connection's busy handler; cleared when the job is done.
    cancelled: Arc<AtomicBool>,
    /// Set while the job runs on the calling task: the busy handler then never waits (a
    /// lock held elsewhere fails the job at once, before it did anything), and the WAL
    /// hook leaves checkpoints to the blocking pool.
    no_wait: Arc<AtomicBool>,
}

/// The SQL of the point operations on one table (prepared from the connection's cache
/// after the first use; made once, not per call).
struct Sql {
    read: String,
    read_with_ttl: String,
    next_revision: String,
    put: String,
    update: String,
    delete: String,
}

impl Sql {
    fn new(table: &str, counter: &str) -> Self {
        const LIVE: &str = "(expires_at IS NULL OR expires_at > ?2)";
        Sql {
            read: format!("SELECT value, revision FROM \"{table}\" WHERE key = ?1 AND {LIVE}"),
            read_with_ttl: format!(
                "SELECT value, revision, expires_at FROM \"{table}\" WHERE key = ?1 AND {LIVE}"
            ),
            next_revision: format!(
                "UPDATE \"{counter}\" SET last = last + 1 WHERE id = 0 AND last < ?1 RETURNING last"
            ),
            put: format!(
                "INSERT INTO \"{table}\" (key, value, revision, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision, expires_at = excluded.expires_at"
            ),
            update: format!(
                "UPDATE \"{table}\" SET value = ?1, revision = revision + 1, expires_at = ?2
                 WHERE key = ?3 AND revision = ?4 AND (expires_at IS NULL OR expires_at > ?5)"
            ),
            delete: format!("DELETE FROM \"{table}\" WHERE key = ?1"),
        }
    }
}

/// How many pages the write-ahead log may hold before a commit checkpoints it (SQLite's
/// own default for its automatic checkpoints, which this replaces).
const CHECKPOINT_PAGES: i32 = 1000;

/// The highest value of the counter: revisions `c × 10^9` must fit SQLite's 64-bit
/// signed integers.
const MAX_COUNTER: i64 = i64::MAX / 1_000_000_000 - 1;

/// A job's view of its cancellation.
struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// An error if the caller went away: nothing more should be done, nothing committed.
    fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) {
            Err(StoreError::backend(
                "sqlite: cancelled, the caller went away",
            ))
        } else {
            Ok(())
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cancels the job of a call whose future is dropped before the job finished: sets its
/// connection's cancel flag and interrupts the statement it runs.
///
/// `finished` is set by the job, under the same lock, before its connection goes back to
/// the pool: so a late drop never cancels or interrupts the next job on that connection.
struct CancelOnDrop {
    finished: Arc<Mutex<bool>>,
    cancelled: Arc<AtomicBool>,
    interrupt: InterruptHandle,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let finished = lock(&self.finished);
        if !*finished {
            self.cancelled.store(true, Ordering::SeqCst);
            // Stops the running statement. An interrupt that comes between statements is
            // lost (SQLite clears it when the next one starts): the flag covers that.
            self.interrupt.interrupt();
        }
    }
}

/// A connection taken from the pool for one job, with its permit. Dropping it (the job
/// is done, panicked, or never ran) marks the job finished, rolls back a transaction the
/// job left open, and returns the connection to the pool, then the permit.
struct Lease {
    slot: Option<Slot>,
    inner: Arc<Inner>,
    /// Shared with the [`CancelOnDrop`] of a job on the blocking pool.
    finished: Option<Arc<Mutex<bool>>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if let Some(finished) = &self.finished {
                *lock(finished) = true;
            }
            slot.no_wait.store(false, Ordering::SeqCst);
            if !slot.conn.is_autocommit() {
                // Never committed; never to be joined by the next job either.
                if let Err(error) = slot.conn.execute_batch("ROLLBACK") {
                    tracing::warn!(%error, "sqlite: could not roll back a transaction left open");
                }
            }
            slot.cancelled.store(false, Ordering::SeqCst);
            lock(&self.inner.pool).push(slot);
        }
        drop(self.permit.take());
    }
}

/// The busy handler of every connection: waits for a lock up to `timeout`, like SQLite's
/// own busy timeout, but gives up as soon as the job is cancelled (SQLite's interrupt
/// does not stop a busy wait), and at once for a job on the calling task.
fn busy_handler(
    cancelled: Arc<AtomicBool>,
    no_wait: Arc<AtomicBool>,
    timeout: Duration,
) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut started = Instant::now();
    move |count| {
        if no_wait.load(Ordering::SeqCst) {
            // A job on the calling task: give up at once, the pool will wait.
            return false;
        }
        if count == 0 {
            started = Instant::now();
        }
        let waited = started.elapsed();
        if cancelled.load(Ordering::SeqCst) || waited >= timeout {
            return false;
        }
        // Short steps, growing like SQLite's, so a freed lock is taken soon and a
        // cancelled job stops soon.
        const STEPS_MS: [u64; 7] = [1, 2, 5, 10, 15, 20, 25];
        let step = Duration::from_millis(STEPS_MS[(count as usize).min(STEPS_MS.len() - 1)]);
        std::thread::sleep(step.min(timeout - waited));
        !cancelled.load(Ordering::SeqCst)
    }
}

/// Commits `tx`, unless the job was cancelled (then it rolls back: not written).
///
/// An error from `COMMIT` leaves the outcome unknown ([`StoreError::Unknown`]) unless
/// the transaction is still open after it (SQLite keeps it open when `COMMIT` could not
/// get its lock): then it is rolled back here, and nothing was written.
fn commit(tx: Transaction<'_>, cancel: &Cancel) -> Result<(), StoreError> {
    cancel.check()?;
    match tx.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(error) if !tx.is_autocommit() => {
            drop(tx); // rolls back
            Err(backend(error))
        }
        Err(error) => Err(StoreError::Unknown(Box::new(error))),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::from_error(error)
}

/// Whether `error` is a lock held elsewhere (`SQLITE_BUSY`, `SQLITE_LOCKED`) that made
/// a job fail before it did anything: a backend error (an unknown outcome is never
/// retried).
fn is_busy(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    source.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` with the default options.
    ///
    /// The sessions survive a restart:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::{ChatContext, MultiSession, stores::SqliteStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// async fn bump(s: multisession::Session<Bot>) -> Result<u32, multisession::Error> {
    ///     *s.count().await? += 1;
    ///     Ok(*s.count().await?)
    /// }
    ///
    /// let path = dir.join("bot.db");
    /// let sessions = Bot::builder().default_store(SqliteStore::open(&path).await?).build();
    /// assert_eq!(sessions.run(&ChatContext::new(1), bump).await?, 1);
    /// drop(sessions); // the bot stops...
    ///
    /// let sessions = Bot::builder().default_store(SqliteStore::open(&path).await?).build();
    /// assert_eq!(sessions.run(&ChatContext::new(1), bump).await?, 2); // ...and goes on
    /// # drop(sessions);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteConfig::default()).await
    }

    /// Opens (or creates) the database file at `path`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-open-with-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::stores::{SqliteConfig, SqliteStore};
    ///
    /// let path = dir.join("bot.db");
    /// let store = SqliteStore::open_with(&path, SqliteConfig::new().table("sessions")).await?;
    /// assert_eq!(store.path(), path);
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        Self::connect(path, config, false).await
    }

    /// A private in-memory database (one connection), for tests: the real SQLite store's
    /// behaviour, nothing left on disk.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{ChatContext, MultiSession, stores::SqliteStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(SqliteStore::in_memory().await?).build();
    /// let ctx = ChatContext::new(1);
    /// sessions.run(&ctx, async |s| { *s.count().await? += 2; Ok::<_, multisession::Error>(()) }).await?;
    /// assert_eq!(sessions.load(&ctx).await?.count, 2);
    /// # Ok(()) }
    /// ```
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::connect(
            PathBuf::from(":memory:"),
            SqliteConfig::default().connections(1),
            true,
        )
        .await
    }

    async fn connect(
        path: PathBuf,
        config: SqliteConfig,
        memory: bool,
    ) -> Result<Self, StoreError> {
        if !valid_identifier(&config.table) {
            return Err(StoreError::backend(format!(
                "invalid SQLite table name {:?}: use letters, digits and `_`",
                config.table
            )));
        }
        let table = config.table.clone();
        let counter = format!("{table}_revision");
        let (t, c, p) = (table.clone(), counter.clone(), path.clone());
        let checkpoint_due = Arc::new(AtomicBool::new(false));
        let due = checkpoint_due.clone();
        let connections = tokio::task::spawn_blocking(move || -> Result<Vec<Slot>, StoreError> {
            let mut pool = Vec::with_capacity(config.connections);
            for i in 0..config.connections {
                let mut conn = if memory {
                    Connection::open_in_memory()
                } else {
                    Connection::open_with_flags(
                        &p,
                        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                }
                .map_err(backend)?;
                let cancelled = Arc::new(AtomicBool::new(false));
                let no_wait = Arc::new(AtomicBool::new(false));
                conn.busy_handler(Some(busy_handler(
                    cancelled.clone(),
                    no_wait.clone(),
                    config.busy_timeout,
                )))
                .map_err(backend)?;
                if !memory {
                    conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
                    conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
                    // Replaces SQLite's automatic checkpoints: on the blocking pool a
                    // commit checkpoints a long log itself; on the calling task it only
                    // says a checkpoint is due (see `SqliteStore::call`).
                    let (no_wait, due) = (no_wait.clone(), due.clone());
                    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                        if pages >= CHECKPOINT_PAGES {
                            if no_wait.load(Ordering::SeqCst) {
                                due.store(true, Ordering::SeqCst);
                            } else {
                                // Passive: never waits for readers or writers; what it
                                // could not copy is copied by the next one.
                                let _ = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE);
                            }
                        }
                        Ok(())
                    }))
                    .map_err(backend)?;
                }
                if i == 0 {
                    conn.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS \"{t}\" (
                             key BLOB PRIMARY KEY NOT NULL,
                             value BLOB NOT NULL,
                             revision INTEGER NOT NULL,
                             expires_at INTEGER
                         ) WITHOUT ROWID;
                         CREATE INDEX IF NOT EXISTS \"{t}_expires\" ON \"{t}\" (expires_at) WHERE expires_at IS NOT NULL;
                         CREATE TABLE IF NOT EXISTS \"{c}\" (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
                         INSERT OR IGNORE INTO \"{c}\" (id, last) VALUES (0, 0);"
                    ))
                    .map_err(backend)?;
                }
                pool.push(Slot {
                    conn,
                    cancelled,
                    no_wait,
                });
            }
            Ok(pool)
        })
        .await
        .map_err(StoreError::backend)??;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(connections.len())),
                pool: Mutex::new(connections),
                sql: Sql::new(&table, &counter),
                table,
                counter,
                path,
                inline: config.inline,
                checkpoint_due,
            }),
        })
    }

    /// The database file (`:memory:` for [`in_memory`](SqliteStore::in_memory)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("multisession-doc-sqlite-path-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use multisession::stores::SqliteStore;
    ///
    /// let store = SqliteStore::open(dir.join("bot.db")).await?;
    /// assert!(store.path().ends_with("bot.db"));
    /// assert_eq!(SqliteStore::in_memory().await?.path().to_str(), Some(":memory:"));
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a point operation: on the calling task if a connection is free and no lock
    /// stands in the way (see [`SqliteConfig::inline`]), else on the blocking pool.
    async fn call<R, F>(&self, writes: bool, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&mut Connection, &Inner, &Cancel) -> Result<R, StoreError> + Send + 'static,
    {
        if self.inner.inline {
            match self.try_inline(writes, &job) {
                // A lock held elsewhere: nothing was done; wait for it on the pool.
                Some(Err(error)) if is_busy(&error) => {}
                Some(result) => {
                    self.checkpoint_if_due();
                    return result;
                }
                None => {}
            }
        }
        self.with_conn(writes, job).await
    }

    /// Runs `job` here and now on a free connection, with SQLite told not to wait for
    /// locks; `None` if no connection is free.
    fn try_inline<R, F>(&self, writes: bool, job: &F) -> Option<Result<R, StoreError>>
    where
        F: Fn(&mut Connection, &Inner, &Cancel) -> Result<R, StoreError>,
    {
        let permit = self.inner.permits.clone().try_acquire_owned().ok()?;
        let slot = lock(&self.inner.pool).pop()?;
        slot.no_wait.store(true, Ordering::SeqCst);
        // Dropped at the end (also on a panic): rolls back what the job left open and
        // returns the connection.
        let mut lease = Lease {
            slot: Some(slot),
            inner: self.inner.clone(),
            finished: None,
            permit: Some(permit),
        };
        let slot = lease.slot.as_mut()?;
        let cancel = Cancel(slot.cancelled.clone());
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job(&mut slot.conn, &self.inner, &cancel)
        }));
        drop(lease);
        Some(match ran {
            Ok(result) => result,
            Err(_) if writes => Err(StoreError::unknown("sqlite: a write job panicked")),
            Err(_) => Err(StoreError::backend("sqlite: a read job panicked")),
        })
    }

    /// Hands a checkpoint that a commit on the calling task made due to the blocking
    /// pool (in the background: nobody waits for it).
    fn checkpoint_if_due(&self) {
        if !self.inner.checkpoint_due.swap(false, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            let done = store
                .with_conn(false, |conn, _, _| {
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        .map_err(backend)
                })
                .await;
            if let Err(error) = done {
                tracing::warn!(%error, "sqlite: a WAL checkpoint failed; the next one retries");
            }
        });
    }

    /// Runs `job` on a pooled connection on the blocking pool.
    ///
    /// If the returned future is dropped before the job finished (a timeout), the job is
    /// cancelled: see [`CancelOnDrop`] and [`commit`]. `writes`: the job writes, so a
    /// panic in it leaves its outcome unknown.
    async fn with_conn<R, F>(&self, writes: bool, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &Inner, &Cancel) -> Result<R, StoreError> + Send + 'static,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(StoreError::backend)?;
        let slot = lock(&self.inner.pool)
            .pop()
            .ok_or_else(|| StoreError::backend("sqlite pool empty"))?;
        let finished = Arc::new(Mutex::new(false));
        let _cancel_on_drop = CancelOnDrop {
            finished: finished.clone(),
            cancelled: slot.cancelled.clone(),
            interrupt: slot.conn.get_interrupt_handle(),
        };
        let mut lease = Lease {
            slot: Some(slot),
            inner: self.inner.clone(),
            finished: Some(finished),
            permit: Some(permit),
        };
        let handle = tokio::task::spawn_blocking(move || {
            let inner = lease.inner.clone();
            let slot = lease.slot.as_mut().expect("leased until dropped");
            let cancel = Cancel(slot.cancelled.clone());
            // The caller may have gone while the job waited for a thread.
            cancel.check()?;
            job(&mut slot.conn, &inner, &cancel)
        });
        match handle.await {
            Ok(result) => result,
            Err(error) if writes && error.is_panic() => Err(StoreError::unknown(format!(
                "sqlite: a write job panicked: {error}"
            ))),
            Err(error) => Err(StoreError::backend(error)),
        }
    }

    /// Deletes every expired row now, in batches of a few hundred (each its own short
    /// statement, so writers wait at most one batch); returns how many. Expired rows
    /// already read as missing; this reclaims their space. To do it on a schedule, see
    /// [`spawn_sweeper`](Self::spawn_sweeper).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{store::Store, stores::SqliteStore};
    /// use std::time::Duration;
    ///
    /// let store = SqliteStore::in_memory().await?;
    /// store.write("quiz:1", b"{}", Some(Duration::from_millis(10))).await?;
    /// store.write("pizza:1", b"2", None).await?;
    /// tokio::time::sleep(Duration::from_millis(30)).await;
    /// assert!(store.read("quiz:1").await?.is_none()); // already reads as missing
    /// assert_eq!(store.sweep_expired().await?, 1); // and now its row is gone
    /// # Ok(()) }
    /// ```
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        sweep_all(self).await
    }

    /// Starts a background task (on the current tokio runtime) that deletes expired rows
    /// every `interval`, as [`sweep_expired`](Self::sweep_expired) does, until the
    /// returned [`Sweeper`] is stopped or dropped. tower-sessions' `continuously_delete_expired`,
    /// in batches that never hold the table for long.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::SqliteStore;
    /// use std::time::Duration;
    ///
    /// let store = SqliteStore::open("bot.db").await?;
    /// let sweeper = store.spawn_sweeper(Duration::from_secs(600))?;
    /// // ... run the bot ...
    /// let stats = sweeper.stop().await;
    /// println!("{} expired sessions swept", stats.deleted);
    /// # std::fs::remove_file("bot.db").ok();
    /// # Ok(()) }
    /// ```
    pub fn spawn_sweeper(&self, interval: Duration) -> Result<Sweeper, StoreError> {
        Sweeper::spawn(self.clone(), interval)
    }
}

impl SweepBatches for SqliteStore {
    fn sweep_batch(&self, limit: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.with_conn(false, move |conn, inner, _| {
            // The partial index on `expires_at` finds the batch; the primary key deletes it.
            let sql = format!(
                "DELETE FROM \"{t}\" WHERE key IN (SELECT key FROM \"{t}\" \
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
                t = inner.table
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            stmt.execute(params![now_ms(), limit as i64])
                .map(|n| n as u64)
                .map_err(backend)
        }))
    }

    fn store_name(&self) -> String {
        Store::name(self).to_owned()
    }
}

fn read_one(
    conn: &Connection,
    sql: &Sql,
    key: &str,
    now: i64,
) -> Result<Option<Record>, StoreError> {
    let mut stmt = conn.prepare_cached(&sql.read).map_err(backend)?;
    stmt.query_row(params![key.as_bytes(), now], |row| {
        Ok(Record::new(
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, i64>(1)? as u64,
        ))
    })
    .optional()
    .map_err(backend)
}

/// The revision of a create or blind write: the counter's next value `c`, as `c × 10^9`,
/// above every revision any key had (updates in place add one to the revision read).
fn next_revision(conn: &Connection, inner: &Inner) -> Result<u64, StoreError> {
    let mut stmt = conn
        .prepare_cached(&inner.sql.next_revision)
        .map_err(backend)?;
    let last = stmt
        .query_row([MAX_COUNTER], |row| row.get::<_, i64>(0))
        .optional()
        .map_err(backend)?
        .ok_or_else(|| {
            StoreError::backend(format!(
                "sqlite: the revision counter {:?} is exhausted (or missing)",
                inner.counter
            ))
        })?;
    Ok(u64::try_from(last).unwrap_or(0) * 1_000_000_000)
}

fn expiry(ttl: Option<Duration>, now: i64) -> Option<i64> {
    ttl.map(|ttl| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

fn put(
    conn: &Connection,
    inner: &Inner,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
    now: i64,
) -> Result<(), StoreError> {
    let revision = next_revision(conn, inner)?;
    let mut stmt = conn.prepare_cached(&inner.sql.put).map_err(backend)?;
    stmt.execute(params![
        key.as_bytes(),
        value,
        revision as i64,
        expiry(ttl, now)
    ])
    .map_err(backend)?;
    Ok(())
}

/// A compare-and-set put of a live key in one statement: the value, the revision read
/// plus one, the new expiry. Whether it applied (the key held `expected`).
fn update_in_place(
    conn: &Connection,
    sql: &Sql,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
    expected: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(&sql.update).map_err(backend)?;
    let changed = stmt
        .execute(params![
            value,
            expiry(ttl, now),
            key.as_bytes(),
            expected,
            now
        ])
        .map_err(backend)?;
    Ok(changed == 1)
}

fn delete(conn: &Connection, sql: &Sql, key: &str) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&sql.delete).map_err(backend)?;
    stmt.execute(params![key.as_bytes()]).map_err(backend)?;
    Ok(())
}

/// The outcome of a write statement run on its own (autocommit): a lock held elsewhere
/// or a refused statement failed before anything was written; any other failure (an
/// I/O error while committing, say) may have come after the commit began: unknown.
fn autocommitted(error: rusqlite::Error) -> StoreError {
    let refused = matches!(
        error.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::ConstraintViolation
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::OperationInterrupted
                | rusqlite::ErrorCode::ApiMisuse
        )
    ) || matches!(error, rusqlite::Error::SqlInputError { .. });
    if refused {
        backend(error)
    } else {
        StoreError::Unknown(Box::new(error))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let key = key.to_owned();
        self.call(false, move |conn, inner, _| {
            read_one(conn, &inner.sql, &key, now_ms())
        })
        .await
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        let key = key.to_owned();
        self.call(false, move |conn, inner, _| {
            let now = now_ms();
            let mut stmt = conn
                .prepare_cached(&inner.sql.read_with_ttl)
                .map_err(backend)?;
            stmt.query_row(params![key.as_bytes(), now], |row| {
                let record = Record::new(row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)? as u64);
                let ttl = row.get::<_, Option<i64>>(2)?.map(|at| {
                    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
                });
                Ok((record, ttl))
            })
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(true, move |conn, inner, cancel| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            put(&tx, inner, &key, &value, ttl, now_ms())?;
            commit(tx, cancel)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.call(true, move |conn, inner, cancel| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            delete(&tx, &inner.sql, &key)?;
            commit(tx, cancel)
        })
        .await
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.call(false, move |conn, inner, _| {
            // One trip to the blocking pool, one read transaction: a consistent snapshot.
            let tx = conn.transaction().map_err(backend)?;
            let now = now_ms();
            let records = keys
                .iter()
                .map(|key| read_one(&tx, &inner.sql, key, now))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().map_err(backend)?;
            Ok(records)
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let (prefix, cursor) = (
            prefix.as_bytes().to_vec(),
            cursor.map(|c| c.as_bytes().to_vec()),
        );
        let limit = limit.max(1);
        self.with_conn(false, move |conn, inner, _| {
            let start = match &cursor {
                Some(after) if after.as_slice() >= prefix.as_slice() => after.clone(),
                _ => prefix.clone(),
            };
            let start_op = if cursor.is_some() { ">" } else { ">=" };
            let end = prefix_end(&prefix);
            let sql = format!(
                "SELECT key, value, revision FROM \"{}\" WHERE key {start_op} ?1 AND (?2 IS NULL OR key < ?2)
                 AND (expires_at IS NULL OR expires_at > ?3) ORDER BY key LIMIT ?4",
                inner.table
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params![start, end, now_ms(), (limit + 1) as i64], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, i64>(2)?))
                })
                .map_err(backend)?;
            let mut entries = Vec::new();
            for row in rows {
                let (key, value, revision) = row.map_err(backend)?;
                if !key.starts_with(&prefix) {
                    continue;
                }
                let key = String::from_utf8(key).map_err(|_| StoreError::Corrupt("a key is not UTF-8".into()))?;
                entries.push((key, Record::new(value, revision as u64)));
            }
            let more = entries.len() > limit;
            entries.truncate(limit);
            let cursor = if more { entries.last().map(|(key, _)| key.clone()) } else { None };
            Ok(Page { entries, cursor })
        })
        .await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = prefix.as_bytes().to_vec();
        self.with_conn(false, move |conn, inner, _| {
            let end = prefix_end(&prefix);
            let sql = format!(
                "SELECT count(*) FROM \"{}\" WHERE key >= ?1 AND (?2 IS NULL OR key < ?2)
                 AND (expires_at IS NULL OR expires_at > ?3)",
                inner.table
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            stmt.query_row(params![prefix, end, now_ms()], |row| row.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(backend)
        })
        .await
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        let owned = writes.to_vec();
        let count = writes.len();
        let result = self
            .call(true, move |conn, inner, cancel| {
                // A lone compare-and-set put of a key (the lazy runtime's usual write) is
                // one statement, a transaction of its own: checked and written at once.
                if let [
                    Write::Put {
                        key,
                        value,
                        ttl,
                        expect: Expect::Revision(expected),
                    },
                ] = owned.as_slice()
                    && let Ok(expected) = i64::try_from(*expected)
                    && expected < i64::MAX
                {
                    cancel.check()?;
                    let now = now_ms();
                    let mut stmt = conn.prepare_cached(&inner.sql.update).map_err(backend)?;
                    let changed = stmt
                        .execute(params![
                            value,
                            expiry(*ttl, now),
                            key.as_bytes(),
                            expected,
                            now
                        ])
                        .map_err(autocommitted)?;
                    return Ok(if changed == 1 {
                        Outcome::Applied
                    } else {
                        Outcome::Conflict
                    });
                }
                // Until `commit`, any error (the write lock not obtained within the busy
                // timeout, a failed statement, a cancellation) drops the transaction,
                // which rolls it back: nothing is applied.
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let now = now_ms();
                // A compare-and-set put of a key the batch writes once (the lazy
                // runtime's usual write) checks and writes in one statement; the other
                // writes check first and write after.
                let in_place = |write: &Write| match write {
                    Write::Put {
                        expect: Expect::Revision(expected),
                        ..
                    } => {
                        i64::try_from(*expected).is_ok_and(|e| e < i64::MAX)
                            && owned.iter().filter(|w| w.key() == write.key()).count() == 1
                    }
                    _ => false,
                };
                for write in owned.iter().filter(|w| !in_place(w)) {
                    if write.expect() == Expect::Any {
                        continue;
                    }
                    let current = read_one(&tx, &inner.sql, write.key(), now)?.map(|r| r.revision);
                    if !write.expect().is_met_by(current) {
                        return Ok(Outcome::Conflict);
                    }
                }
                for write in &owned {
                    match write {
                        Write::Put {
                            key,
                            value,
                            ttl,
                            expect: Expect::Revision(expected),
                        } if in_place(write) => {
                            let expected = i64::try_from(*expected).unwrap_or(i64::MAX);
                            if !update_in_place(&tx, &inner.sql, key, value, *ttl, expected, now)? {
                                // Dropping `tx` rolls back what came before.
                                return Ok(Outcome::Conflict);
                            }
                        }
                        Write::Put {
                            key, value, ttl, ..
                        } => put(&tx, inner, key, value, *ttl, now)?,
                        Write::Delete { key, .. } => delete(&tx, &inner.sql, key)?,
                    }
                }
                commit(tx, cancel)?;
                Ok(Outcome::Applied)
            })
            .await;
        match result {
            Ok(outcome) => (0..count).map(|_| Ok(outcome)).collect(),
            // `replicate` keeps an unknown outcome unknown.
            Err(error) => (0..count).map(|_| Err(error.replicate())).collect(),
        }
    }
}
