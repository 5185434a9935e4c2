//! SQLite: the embedded, persistent default store.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::Semaphore;

use crate::store::{
    Capabilities, Expect, Outcome, Page, Record, Store, StoreError, Write, prefix_end,
};

/// Options of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    table: String,
    busy_timeout: Duration,
    connections: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            table: "multisession".to_owned(),
            busy_timeout: Duration::from_secs(5),
            connections: 4,
        }
    }
}

impl SqliteConfig {
    /// The defaults: table `multisession`, 5 s busy timeout, 4 connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table (letters, digits and `_`, not starting with a digit). Another table,
    /// `<table>_revision`, holds the revision counter.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long a connection waits for another process's write lock.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many connections (reads run in parallel under WAL; writes take turns).
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }
}

/// Sessions in a SQLite file: persistent, embedded, no server. Cheap to clone.
///
/// SQLite is compiled in (no system library needed). The file is opened in WAL mode with
/// a busy timeout, and the table is created on first use. Every call runs on tokio's
/// blocking pool, never on the reactor. Writes of one commit are one `IMMEDIATE`
/// transaction that checks every revision first, so several processes can share a file
/// without losing updates (rule S17).
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
    pool: Mutex<Vec<Connection>>,
    permits: Semaphore,
    table: String,
    counter: String,
    path: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::from_error(error)
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteConfig::default()).await
    }

    /// Opens (or creates) the database file at `path`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        Self::connect(path, config, false).await
    }

    /// A private in-memory database (one connection), for tests.
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
        let connections = tokio::task::spawn_blocking(move || -> Result<Vec<Connection>, StoreError> {
            let mut pool = Vec::with_capacity(config.connections);
            for i in 0..config.connections {
                let conn = if memory {
                    Connection::open_in_memory()
                } else {
                    Connection::open_with_flags(
                        &p,
                        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                }
                .map_err(backend)?;
                conn.busy_timeout(config.busy_timeout).map_err(backend)?;
                if !memory {
                    conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
                    conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
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
                pool.push(conn);
            }
            Ok(pool)
        })
        .await
        .map_err(StoreError::backend)??;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(connections.len()),
                pool: Mutex::new(connections),
                table,
                counter,
                path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `job` on a pooled connection on the blocking pool.
    async fn with_conn<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(StoreError::backend)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .pool
                .lock()
                .map_err(|_| StoreError::backend("sqlite pool poisoned"))?
                .pop()
                .ok_or_else(|| StoreError::backend("sqlite pool empty"))?;
            let mut conn = conn;
            let result = job(&mut conn, &inner);
            if let Ok(mut pool) = inner.pool.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Deletes every expired row now; returns how many. Expired rows already read as
    /// missing; this reclaims their space (run it on a schedule, or let writes replace them).
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn, inner| {
            let sql = format!(
                "DELETE FROM \"{}\" WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                inner.table
            );
            conn.execute(&sql, params![now_ms()])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }
}

fn read_one(
    conn: &Connection,
    table: &str,
    key: &str,
    now: i64,
) -> Result<Option<Record>, StoreError> {
    let sql = format!(
        "SELECT value, revision FROM \"{table}\" WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    stmt.query_row(params![key.as_bytes(), now], |row| {
        Ok(Record::new(
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, i64>(1)? as u64,
        ))
    })
    .optional()
    .map_err(backend)
}

fn next_revision(conn: &Connection, counter: &str) -> Result<u64, StoreError> {
    let sql = format!("UPDATE \"{counter}\" SET last = last + 1 WHERE id = 0 RETURNING last");
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    stmt.query_row([], |row| row.get::<_, i64>(0))
        .map(|r| r as u64)
        .map_err(backend)
}

fn put(
    conn: &Connection,
    inner: &Inner,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
    now: i64,
) -> Result<(), StoreError> {
    let revision = next_revision(conn, &inner.counter)?;
    let expires = ttl.map(|ttl| now.saturating_add(ttl.as_millis() as i64));
    let sql = format!(
        "INSERT INTO \"{}\" (key, value, revision, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision, expires_at = excluded.expires_at",
        inner.table
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    stmt.execute(params![key.as_bytes(), value, revision as i64, expires])
        .map_err(backend)?;
    Ok(())
}

fn delete(conn: &Connection, table: &str, key: &str) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("DELETE FROM \"{table}\" WHERE key = ?1"))
        .map_err(backend)?;
    stmt.execute(params![key.as_bytes()]).map_err(backend)?;
    Ok(())
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
        self.with_conn(move |conn, inner| read_one(conn, &inner.table, &key, now_ms()))
            .await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.with_conn(move |conn, inner| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            put(&tx, inner, &key, &value, ttl, now_ms())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with_conn(move |conn, inner| delete(conn, &inner.table, &key))
            .await
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.with_conn(move |conn, inner| {
            // One trip to the blocking pool, one read transaction: a consistent snapshot.
            let tx = conn.transaction().map_err(backend)?;
            let now = now_ms();
            let records = keys
                .iter()
                .map(|key| read_one(&tx, &inner.table, key, now))
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
        self.with_conn(move |conn, inner| {
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

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        let owned = writes.to_vec();
        let count = writes.len();
        let result = self
            .with_conn(move |conn, inner| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let now = now_ms();
                for write in &owned {
                    if write.expect() == Expect::Any {
                        continue;
                    }
                    let current =
                        read_one(&tx, &inner.table, write.key(), now)?.map(|r| r.revision);
                    if !write.expect().is_met_by(current) {
                        // Dropping the transaction rolls it back: nothing is applied.
                        return Ok(Outcome::Conflict);
                    }
                }
                for write in &owned {
                    match write {
                        Write::Put {
                            key, value, ttl, ..
                        } => put(&tx, inner, key, value, *ttl, now)?,
                        Write::Delete { key, .. } => delete(&tx, &inner.table, key)?,
                    }
                }
                tx.commit().map_err(backend)?;
                Ok(Outcome::Applied)
            })
            .await;
        match result {
            Ok(outcome) => (0..count).map(|_| Ok(outcome)).collect(),
            Err(error) => {
                let message = error.to_string();
                (0..count)
                    .map(|_| Err(StoreError::backend(&message)))
                    .collect()
            }
        }
    }
}
