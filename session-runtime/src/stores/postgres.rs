//! PostgreSQL: sessions in one table, through a pool of async connections.
//!
//! Layout (created on first connect if missing, under an advisory lock so several
//! processes may start at once):
//!
//! ```sql
//! CREATE SEQUENCE "<table>_revision_seq";
//! CREATE TABLE "<table>" (
//!     key        BYTEA PRIMARY KEY,   -- BYTEA, not TEXT: keys may contain NUL
//!     value      BYTEA NOT NULL,
//!     revision   BIGINT NOT NULL,     -- nextval of the sequence: unique forever
//!     expires_at TIMESTAMPTZ NULL     -- NULL: never expires
//! );
//! CREATE INDEX "<table>_expires_idx" ON "<table>" (expires_at) WHERE expires_at IS NOT NULL;
//! ```
//!
//! A key longer than 1 kB (PostgreSQL indexes at most ≈ 2.7 kB per entry) is stored under
//! its first kilobyte, a marker and the SHA-256 of the whole key, and its row's value
//! carries the whole key: every key the other stores take (64 kB and more) works, in
//! listings too. Rows are the same table and columns, so tables from earlier releases
//! need no migration.
//!
//! Every statement is parameterized; the only text put into SQL is the table name, which
//! is checked to be a plain identifier (optionally `schema.table`) and quoted.
//! Expiry is computed and checked with the server's clock (`now()`), so processes with
//! skewed clocks agree on it.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use futures_util::future::{join, join_all};
use tokio_postgres::{
    NoTls, Row, Statement,
    error::{Severity, SqlState},
};

use super::sweeper::{SweepBatches, Sweeper, sweep_all};
use crate::store::{
    Capabilities, Expect, Outcome, Page, Record, Store, StoreError, Write, prefix_end,
};

/// TTLs are capped at this (100 years): longer ones are kept as "practically never".
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The first key of the advisory lock taken while creating the table ("mult").
const DDL_LOCK_CLASS: i32 = 0x6d75_6c74;

/// Options of a [`PostgresStore`].
///
/// ```
/// use multisession::stores::PostgresConfig;
/// use std::time::Duration;
///
/// let config = PostgresConfig::new()
///     .table("bot.sessions")
///     .pool_size(8)
///     .connect_timeout(Duration::from_secs(3))
///     .statement_timeout(Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    table: String,
    pool_size: usize,
    connect_timeout: Duration,
    statement_timeout: Duration,
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    notify_changes: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            table: "multisession_sessions".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            notify_changes: false,
        }
    }
}

impl PostgresConfig {
    /// The defaults: table `multisession_sessions`, 16 connections, 5 s connect timeout,
    /// 10 s statement timeout.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    ///
    /// // The same as `PostgresStore::connect(url)`.
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", PostgresConfig::new()).await?;
    /// assert_eq!(store.table(), "multisession_sessions");
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The table: a plain identifier (ASCII letters, digits and `_`, not starting with a
    /// digit, at most 48 characters), optionally schema-qualified (`schema.table`; the
    /// schema must exist). The name is quoted, so its case is kept. The revision sequence
    /// is `<table>_revision_seq` and the expiry index `<table>_expires_idx`, in the same
    /// schema. Anything else is rejected by [`PostgresStore::connect_with`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    ///
    /// let url = "postgres://postgres@127.0.0.1/test";
    /// // In the schema `bot` (which must exist); created on first connect.
    /// let store = PostgresStore::connect_with(url, PostgresConfig::new().table("bot.sessions")).await?;
    /// assert_eq!(store.table(), "bot.sessions");
    /// # Ok(()) }
    /// ```
    ///
    /// A name that is not a plain identifier is refused before anything is sent:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    ///
    /// let config = PostgresConfig::new().table("sessions; DROP TABLE users");
    /// let error = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await.unwrap_err();
    /// assert!(error.to_string().contains("invalid PostgreSQL table name"));
    /// # }
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The most connections the pool opens (at least 1).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    ///
    /// let config = PostgresConfig::new().pool_size(4); // a small bot on a shared server
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// assert_eq!(store.pool().status().max_size, 4);
    /// # Ok(()) }
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long to wait for a connection: the TCP/startup handshake of a new one, or a
    /// free one from a busy pool. Past it an operation fails with
    /// [`StoreError::Timeout`].
    ///
    /// An unreachable server is an error soon, not a hang:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    /// use std::time::{Duration, Instant};
    ///
    /// let config = PostgresConfig::new().connect_timeout(Duration::from_millis(200));
    /// let started = Instant::now();
    /// // Nothing listens on port 1.
    /// assert!(PostgresStore::connect_with("postgres://postgres@127.0.0.1:1/test", config).await.is_err());
    /// assert!(started.elapsed() < Duration::from_secs(5));
    /// # }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one store operation may take once it has a connection (the server is also
    /// told, as its `statement_timeout`, so it cancels what the client gave up on). Past
    /// it the operation fails with [`StoreError::Timeout`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{Config, MultiSession, stores::{PostgresConfig, PostgresStore}};
    /// use std::time::Duration;
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// // Below the runtime's `op_timeout`, so the server cancels what the bot gave up on.
    /// let config = PostgresConfig::new().statement_timeout(Duration::from_secs(3));
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// let sessions = Bot::builder()
    ///     .default_store(store)
    ///     .config(Config::new().op_timeout(Some(Duration::from_secs(4))))
    ///     .build();
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Announce every change of the table (a trigger calling `pg_notify`), so a
    /// [`CachedStore`](crate::stores::CachedStore) in front of the store can be told at
    /// once when another process writes a key it holds ([`PostgresStore::track_for`]).
    /// The trigger is created (or replaced) at connect and stays with the table: once one
    /// process created it, every writer's changes are announced. Needs PostgreSQL 14 or
    /// newer (`CREATE OR REPLACE TRIGGER`) and the right to create functions and
    /// triggers. Default: off.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{CachedStore, PostgresConfig, PostgresStore};
    ///
    /// let config = PostgresConfig::new().notify_changes(true);
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// let cached = CachedStore::new(store.clone(), 100_000);
    /// store.track_for(&cached).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn notify_changes(mut self, on: bool) -> Self {
        self.notify_changes = on;
        self
    }
}

/// Sessions in a PostgreSQL table, through a pool of async connections. Cheap to clone;
/// clones share the pool.
///
/// Built on `tokio-postgres` with a `deadpool-postgres` pool (plain TCP or Unix socket,
/// no TLS). It has every capability:
///
/// - reads: one statement, one round trip; [`Store::read_many`] is one `key = ANY($1)`
///   query, whatever the number of keys;
/// - [`Store::apply`] (compare-and-set, rule S17): a single write is one conditional
///   statement (`UPDATE … WHERE revision = $n`, `INSERT … ON CONFLICT DO UPDATE … WHERE
///   expired`), one round trip; a batch is one transaction whose statements are pipelined
///   (`BEGIN` and all writes in one round trip, then `COMMIT` or `ROLLBACK`), all of it
///   or none. Two processes creating the same key at once get one
///   [`Outcome::Applied`] and one [`Outcome::Conflict`], never a unique-violation error.
///   Rows are written in key order, so concurrent batches cannot deadlock each other;
/// - revisions come from a sequence: never reused, not even after a delete;
/// - expiry is native: an `expires_at` column, expired rows read as missing, and
///   [`PostgresStore::sweep_expired`] deletes them (run it on a schedule).
///
/// **Failures.** An unreachable server is a [`StoreError`] within the connect timeout,
/// never a hang or a panic. The pool hands out only connections whose socket is open; a
/// connection the server dropped (restart, `pg_terminate_backend`, network cut) is
/// discarded and a new one opened on the next use, so the store recovers by itself once
/// the server is back. A read that meets a connection dropped under it is retried once on
/// another. A write that fails that way is not retried. An operation that times out, or
/// whose future is dropped midway, closes its connection instead of returning it to the
/// pool, so no half-done transaction is ever reused.
///
/// **Timeouts and failed writes.** A failed [`Store::apply`] (and `write`, `delete`) says
/// whether the batch may have landed (rule S26):
///
/// - not written ([`StoreError::Backend`]): no connection from the pool (nothing was
///   sent); anything failing inside the batch's transaction before `COMMIT` is sent (a
///   statement error, a lost connection: the server rolls the transaction back, and
///   nothing commits without `COMMIT`); a single write (its own transaction) that the
///   server answered with an error;
/// - outcome unknown ([`StoreError::Unknown`]): `COMMIT` failed without a clear answer
///   (the connection closed or an I/O error while waiting for it, a fatal error, which
///   may follow a commit), or a single write whose connection was lost after it was
///   sent;
/// - [`StoreError::Timeout`]: the statement timeout passed (the client's, or the server
///   cancelling the statement). It counts as unknown, also where the store could tell
///   that the transaction was rolled back. Past it the client closes the connection,
///   which makes the server roll back what has not committed; but a server that is
///   paused or overloaded may still execute and commit a `COMMIT` (or a single write)
///   already sent before it notices. The same holds when the runtime's `op_timeout`
///   drops the call.
///
/// The runtime reports such a write as unknown, and because each update changes each
/// fragment at most once (rule S25: the stored record remembers which updates changed
/// it), re-running the same update is safe.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multisession::{ChatContext, MultiSession, stores::PostgresStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = PostgresStore::connect("postgres://bot@localhost/bot").await?;
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// sessions
///     .run(&ChatContext::new(42), async |s| {
///         *s.count().await? += 1;
///         Ok::<_, multisession::Error>(())
///     })
///     .await?;
/// // From a scheduled task: drop expired sessions.
/// store.sweep_expired().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    table: String,
    sql: Sql,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// With [`PostgresConfig::notify_changes`]: the channel, how to open the listening
    /// connection, and this store's own sessions (whose changes are not passed on).
    #[cfg(feature = "cache")]
    notify: Option<Notify>,
}

#[cfg(feature = "cache")]
struct Notify {
    channel: super::postgres_notify::Channel,
    config: tokio_postgres::Config,
    own: super::postgres_notify::OwnSessions,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table)
            .field("pool", &self.inner.pool.status())
            .finish()
    }
}

/// The statements, built once from the checked and quoted table name.
struct Sql {
    read: String,
    read_with_ttl: String,
    read_many: String,
    upsert: String,
    insert_absent: String,
    update_if: String,
    delete: String,
    delete_if: String,
    exists: String,
    list: String,
    count: String,
    sweep: String,
}

impl Sql {
    fn new(table: &str, sequence_literal: &str) -> Self {
        const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";
        let expires = "now() + $3::bigint * interval '1 microsecond'";
        let revision = format!("nextval({sequence_literal}::regclass)");
        let insert = format!(
            "INSERT INTO {table} AS cur (key, value, revision, expires_at) \
             VALUES ($1, $2, {revision}, {expires}) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
             revision = EXCLUDED.revision, expires_at = EXCLUDED.expires_at"
        );
        // Puts say the revision they stored (for `Store::apply_with_revisions`).
        const RETURNING: &str = " RETURNING revision";
        Sql {
            read: format!("SELECT value, revision FROM {table} WHERE key = $1 AND {LIVE}"),
            read_with_ttl: format!(
                "SELECT value, revision, \
                 (extract(epoch FROM expires_at - now()) * 1000000)::bigint \
                 FROM {table} WHERE key = $1 AND {LIVE}"
            ),
            read_many: format!(
                "SELECT key, value, revision FROM {table} WHERE key = ANY($1::bytea[]) AND {LIVE}"
            ),
            insert_absent: format!(
                "{insert} WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= now(){RETURNING}"
            ),
            upsert: format!("{insert}{RETURNING}"),
            update_if: format!(
                "UPDATE {table} SET value = $2, revision = {revision}, expires_at = {expires} \
                 WHERE key = $1 AND revision = $4 AND {LIVE}{RETURNING}"
            ),
            delete: format!("DELETE FROM {table} WHERE key = $1"),
            delete_if: format!("DELETE FROM {table} WHERE key = $1 AND revision = $2 AND {LIVE}"),
            exists: format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE key = $1 AND {LIVE})"),
            list: format!(
                "SELECT key, value, revision FROM {table} \
                 WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) \
                 AND ($3::bytea IS NULL OR key > $3) AND {LIVE} \
                 ORDER BY key LIMIT $4"
            ),
            count: format!(
                "SELECT count(*) FROM {table} \
                 WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) AND {LIVE}"
            ),
            // A batch of expired rows not locked by traffic (`SKIP LOCKED`: the sweep never
            // waits for an update, nor an update long for the sweep); expiry is checked
            // again on the locked row, so a row refreshed meanwhile stays.
            sweep: format!(
                "DELETE FROM {table} WHERE key IN (SELECT key FROM {table} \
                 WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 AND expires_at <= now()"
            ),
        }
    }
}

/// The quoted names derived from a checked table name.
struct Names {
    /// `"schema"."table"` or `"table"`.
    table: String,
    /// `"schema"."table_revision_seq"`.
    sequence: String,
    /// `"table_expires_idx"` (an index lives in its table's schema).
    index: String,
    /// `"schema"."table_notify"`: the change-notification trigger function.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    notify_function: String,
    /// `"table_notify"`: its trigger.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    notify_trigger: String,
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

/// Checks `name` (`table` or `schema.table`) and quotes it; `None` if it is not plain.
fn table_names(name: &str) -> Option<Names> {
    let parts: Vec<&str> = name.split('.').collect();
    let (schema, table) = match parts.as_slice() {
        [table] => (None, *table),
        [schema, table] => (Some(*schema), *table),
        _ => return None,
    };
    if !valid_identifier(table) || !schema.is_none_or(valid_identifier) {
        return None;
    }
    let qualify = |object: &str| match schema {
        Some(schema) => format!("\"{schema}\".\"{object}\""),
        None => format!("\"{object}\""),
    };
    Some(Names {
        table: qualify(table),
        sequence: qualify(&format!("{table}_revision_seq")),
        index: format!("\"{table}_expires_idx\""),
        notify_function: qualify(&format!("{table}_notify")),
        notify_trigger: format!("\"{table}_notify\""),
    })
}

/// A PostgreSQL error with its whole cause chain in the message (tokio-postgres' own
/// `Display` says only "db error").
#[derive(Debug)]
struct PgError {
    context: &'static str,
    source: tokio_postgres::Error,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres {}: {}", self.context, self.source)?;
        let mut cause = std::error::Error::source(&self.source);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether a failed batch left the data untouched for a reason a retry can fix: the
/// runtime then re-reads and retries, as for any conflict.
fn is_conflict(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `error` means the connection is gone (dropped by the server, a restart, a
/// network failure), as opposed to a failed statement on a healthy connection.
fn connection_lost(error: &StoreError) -> bool {
    let (StoreError::Backend(error) | StoreError::Unknown(error)) = error else {
        return false;
    };
    let Some(PgError { source: error, .. }) = error.downcast_ref::<PgError>() else {
        return false;
    };
    pg_connection_lost(error)
}

/// Whether `error` means the connection is gone (see [`connection_lost`]).
fn pg_connection_lost(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
        || error.as_db_error().is_some_and(|db| {
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            ) || db.code().code().starts_with("08")
                || db.code().code().starts_with("57P")
        })
}

/// Whether the server answered a statement with an error of its own, on a connection
/// that lives on: the statement failed, and so did the transaction it ran in (its own,
/// for a statement outside `BEGIN`). Anything else (the connection closed, an I/O
/// error, a fatal error ending the session, which may come after a commit) leaves open
/// whether the statement took effect.
fn refused(error: &tokio_postgres::Error) -> bool {
    !pg_connection_lost(error)
        && error
            .as_db_error()
            .is_some_and(|db| matches!(db.parsed_severity(), Some(Severity::Error)))
}

fn corrupt(what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("postgres: {what}"))
}

fn ttl_micros(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| ttl.min(MAX_TTL).as_micros() as i64)
}

fn record(row: &Row, value: usize, revision: usize) -> Result<Record, StoreError> {
    let bytes: Vec<u8> = row.try_get(value).map_err(corrupt)?;
    let revision: i64 = row.try_get(revision).map_err(corrupt)?;
    let revision =
        u64::try_from(revision).map_err(|_| corrupt(format!("negative revision {revision}")))?;
    Ok(Record::new(bytes, revision))
}

fn key_of(row: &Row) -> Result<String, StoreError> {
    let bytes: Vec<u8> = row.try_get(0).map_err(corrupt)?;
    String::from_utf8(bytes).map_err(|_| corrupt("a stored key is not UTF-8"))
}

// Long keys. A btree index entry of PostgreSQL holds at most ≈ 2.7 kB, so a key longer
// than `LONG_KEY` bytes is stored under its first ≈ 1 kB, a marker and the hex SHA-256
// of the whole key (≈ 1.1 kB, always longer than `LONG_KEY`: no short key looks like
// one), and its row's value carries the whole key in front (length, key, value). Prefix
// listings, ranges and key order work on the stored form as on the key for any prefix of
// up to ≈ 1 kB; longer prefixes are filtered after the range query.
const LONG_KEY: usize = 1024;
const LONG_MARK: &str = "\0#multisession-long-key#";

/// The key as stored: itself, or the long-key form.
fn stored_key(key: &str) -> std::borrow::Cow<'_, str> {
    use sha2::Digest as _;
    if key.len() <= LONG_KEY {
        return key.into();
    }
    let head = key.floor_char_boundary(LONG_KEY - LONG_MARK.len());
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut stored = String::with_capacity(head + LONG_MARK.len() + 64);
    stored.push_str(&key[..head]);
    stored.push_str(LONG_MARK);
    for byte in digest {
        use std::fmt::Write as _;
        let _ = write!(stored, "{byte:02x}");
    }
    stored.into()
}

fn is_long_form(stored: &[u8]) -> bool {
    stored.len() > LONG_KEY
}

/// A long key's row value: the key's length (4 bytes, little-endian), the key, the value.
fn wrap_long(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + value.len());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

/// The whole key and the value of a long key's row.
fn unwrap_long(row_value: &[u8]) -> Result<(String, Vec<u8>), StoreError> {
    let bad = || corrupt("a long key's row does not carry its key");
    let len = row_value.get(..4).ok_or_else(bad)?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
    let key = row_value.get(4..4 + len).ok_or_else(bad)?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok((key, row_value[4 + len..].to_vec()))
}

/// A row's key and record, long keys resolved.
fn entry_of(row: &Row) -> Result<(String, Record), StoreError> {
    let stored = key_of(row)?;
    let record = record(row, 1, 2)?;
    if !is_long_form(stored.as_bytes()) {
        return Ok((stored, record));
    }
    let (key, value) = unwrap_long(&record.value)?;
    Ok((key, Record::new(value, record.revision)))
}

/// The record read for `key` from its stored row, long keys resolved and checked.
fn record_for(key: &str, record: Record) -> Result<Record, StoreError> {
    if key.len() <= LONG_KEY {
        return Ok(record);
    }
    let (stored_key, value) = unwrap_long(&record.value)?;
    if stored_key != key {
        return Err(corrupt(
            "two long keys share a SHA-256 (or the row was damaged)",
        ));
    }
    Ok(Record::new(value, record.revision))
}

/// Writes with keys as stored (long keys: hashed, their values carrying the key).
fn stored_writes(writes: &[Write]) -> std::borrow::Cow<'_, [Write]> {
    if writes.iter().all(|w| w.key().len() <= LONG_KEY) {
        return writes.into();
    }
    writes
        .iter()
        .map(|write| match write {
            Write::Put {
                key,
                value,
                ttl,
                expect,
            } if key.len() > LONG_KEY => Write::Put {
                key: stored_key(key).into_owned(),
                value: wrap_long(key, value),
                ttl: *ttl,
                expect: *expect,
            },
            Write::Delete { key, expect } if key.len() > LONG_KEY => Write::Delete {
                key: stored_key(key).into_owned(),
                expect: *expect,
            },
            other => other.clone(),
        })
        .collect::<Vec<_>>()
        .into()
}

/// A pooled connection for one operation. Unless the operation marks it reusable (it
/// finished, outside any transaction), dropping it closes the connection instead of
/// returning it to the pool: a timed-out or cancelled operation never leaves a
/// half-done transaction or a running statement on a pooled connection.
struct Conn {
    object: Option<Object>,
    reusable: bool,
}

impl Conn {
    fn client(&self) -> &deadpool_postgres::Client {
        // Only `Drop` takes the object out.
        self.object.as_ref().expect("connection present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.reusable
            && let Some(object) = self.object.take()
        {
            // Detached from the pool and dropped: the socket closes, and the server
            // rolls back whatever was open.
            drop(Object::take(object));
        }
    }
}

/// How one planned write is checked and done.
enum Step<'a> {
    Upsert(&'a [u8], Option<i64>),
    InsertAbsent(&'a [u8], Option<i64>),
    UpdateIf(&'a [u8], Option<i64>, i64),
    Delete,
    DeleteIf(i64),
    CheckAbsent,
}

impl Step<'_> {
    fn sql<'s>(&self, sql: &'s Sql) -> &'s str {
        match self {
            Step::Upsert(..) => &sql.upsert,
            Step::InsertAbsent(..) => &sql.insert_absent,
            Step::UpdateIf(..) => &sql.update_if,
            Step::Delete => &sql.delete,
            Step::DeleteIf(_) => &sql.delete_if,
            Step::CheckAbsent => &sql.exists,
        }
    }

    /// Runs the statement; `Ok(None)` if its precondition failed, else the revision a
    /// put stored (`Some(None)` for deletes and checks).
    async fn run(
        &self,
        client: &tokio_postgres::Client,
        statement: &Statement,
        key: &[u8],
    ) -> Result<Option<Option<i64>>, tokio_postgres::Error> {
        let stored = |row: Option<tokio_postgres::Row>| match row {
            Some(row) => row.try_get::<_, i64>(0).map(|r| Some(Some(r))),
            None => Ok(None),
        };
        let met = |held: bool| if held { Some(None) } else { None };
        match self {
            Step::Upsert(value, ttl) => client
                .query_opt(statement, &[&key, value, ttl])
                .await
                .and_then(stored),
            Step::InsertAbsent(value, ttl) => client
                .query_opt(statement, &[&key, value, ttl])
                .await
                .and_then(stored),
            Step::UpdateIf(value, ttl, revision) => client
                .query_opt(statement, &[&key, value, ttl, revision])
                .await
                .and_then(stored),
            Step::Delete => client.execute(statement, &[&key]).await.map(|_| Some(None)),
            Step::DeleteIf(revision) => client
                .execute(statement, &[&key, revision])
                .await
                .map(|n| met(n == 1)),
            Step::CheckAbsent => client
                .query_one(statement, &[&key])
                .await
                .and_then(|row| row.try_get::<_, bool>(0))
                .map(|exists| met(!exists)),
        }
    }
}

/// The plan of a batch: one step per distinct key, in key order (so concurrent batches
/// lock rows in one order and cannot deadlock). `None`: the batch cannot succeed.
fn plan(writes: &[Write]) -> Option<Vec<(&str, Step<'_>)>> {
    // Like the memory store: every precondition is checked against the state before the
    // batch, then the writes are applied in order. For a key written twice, that means
    // every expectation must hold at once, and the last write wins.
    let mut by_key: BTreeMap<&str, (Expect, &Write)> = BTreeMap::new();
    for write in writes {
        let entry = by_key.entry(write.key()).or_insert((Expect::Any, write));
        entry.0 = match (entry.0, write.expect()) {
            (Expect::Any, e) | (e, Expect::Any) => e,
            (a, b) if a == b => a,
            _ => return None,
        };
        entry.1 = write;
    }
    let revision = |r: u64| i64::try_from(r).ok();
    by_key
        .into_iter()
        .map(|(key, (expect, write))| {
            let step = match (write, expect) {
                (Write::Put { value, ttl, .. }, Expect::Any) => {
                    Step::Upsert(value, ttl_micros(*ttl))
                }
                (Write::Put { value, ttl, .. }, Expect::Absent) => {
                    Step::InsertAbsent(value, ttl_micros(*ttl))
                }
                (Write::Put { value, ttl, .. }, Expect::Revision(r)) => {
                    Step::UpdateIf(value, ttl_micros(*ttl), revision(r)?)
                }
                (Write::Delete { .. }, Expect::Any) => Step::Delete,
                (Write::Delete { .. }, Expect::Revision(r)) => Step::DeleteIf(revision(r)?),
                // Nothing to delete if the precondition holds: only check it.
                (Write::Delete { .. }, Expect::Absent) => Step::CheckAbsent,
            };
            Some((key, step))
        })
        .collect()
}

/// Runs a read-only `$body` (an expression that may use `.await` and `?`) with
/// `$client` bound to a pooled connection, within the statement timeout; retried once on
/// another connection if the first turns out to be closed (the server dropped it while it
/// sat idle). A macro rather than a function taking an async closure, so the futures of
/// the `Store` methods stay provably `Send`.
macro_rules! read_op {
    ($store:expr, |$client:ident| $body:expr) => {{
        let store = $store;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut conn = store.conn().await?;
            let result = store
                .bounded(async {
                    let $client = conn.client();
                    $body
                })
                .await;
            let lost = store.release(&mut conn, &result, false);
            match result {
                Err(_) if lost && tries < 2 => continue,
                result => break result,
            }
        }
    }};
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or any form
    /// `tokio-postgres` accepts) with the default options, and creates the table if
    /// it is missing.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{store::Store, stores::PostgresStore};
    ///
    /// let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into());
    /// let store = PostgresStore::connect(&url).await?;
    /// store.write("count:1", b"1", None).await?;
    /// assert_eq!(store.read("count:1").await?.unwrap().value, b"1");
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresConfig::default()).await
    }

    /// Connects to `url` with `config`, and creates the table if it is missing. Fails if
    /// the table name is not a plain identifier, if the URL does not parse, or if the
    /// server cannot be reached within the connect timeout.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{MultiSession, stores::{MemoryStore, PostgresConfig, PostgresStore}};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     pizzas: u32,
    ///     quiz: Option<String>,
    /// }
    ///
    /// let config = PostgresConfig::new().table("pizza_bot").pool_size(8);
    /// let postgres = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// // Orders are kept; a quiz in progress may be lost on a restart.
    /// let sessions = Bot::builder().pizzas(postgres).quiz(MemoryStore::new()).build();
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, config: PostgresConfig) -> Result<Self, StoreError> {
        let names = table_names(&config.table).ok_or_else(|| {
            StoreError::backend(format!(
                "invalid PostgreSQL table name {:?}: use letters, digits and `_` \
                 (at most 48, not starting with a digit), optionally as `schema.table`",
                config.table
            ))
        })?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::from_error(PgError {
                context: "connection URL",
                source: e,
            })
        })?;
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("multisession");
        }
        // The server cancels statements the client has given up on.
        let millis = config
            .statement_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128);
        let options = match pg.get_options() {
            Some(options) => format!("{options} -c statement_timeout={millis}"),
            None => format!("-c statement_timeout={millis}"),
        };
        pg.options(&options);
        #[cfg(feature = "cache")]
        let listen_config = pg.clone();
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let builder = Pool::builder(manager).max_size(config.pool_size);
        #[cfg(feature = "cache")]
        let own: super::postgres_notify::OwnSessions = Arc::default();
        #[cfg(feature = "cache")]
        let builder = if config.notify_changes {
            // Remember each pooled session's backend id: its changes are this store's own.
            let own = own.clone();
            builder.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let own = own.clone();
                Box::pin(async move {
                    let row = client
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)?;
                    let pid: i32 = row
                        .try_get(0)
                        .map_err(deadpool_postgres::HookError::Backend)?;
                    if let Ok(mut own) = own.lock() {
                        own.insert(pid);
                    }
                    Ok(())
                })
            }))
        } else {
            builder
        };
        let pool = builder.build().map_err(StoreError::backend)?;
        let sequence_literal = format!("'{}'", names.sequence);
        let store = PostgresStore {
            inner: Arc::new(Inner {
                pool,
                table: config.table.clone(),
                sql: Sql::new(&names.table, &sequence_literal),
                connect_timeout: config.connect_timeout,
                statement_timeout: config.statement_timeout,
                #[cfg(feature = "cache")]
                notify: config.notify_changes.then(|| Notify {
                    channel: super::postgres_notify::Channel::new(
                        &names.table,
                        names.notify_function.clone(),
                        names.notify_trigger.clone(),
                    ),
                    config: listen_config,
                    own,
                }),
            }),
        };
        store.create_table(&names).await?;
        #[cfg(feature = "cache")]
        if let Some(notify) = &store.inner.notify {
            store.create_trigger(&names.table, notify).await?;
        }
        Ok(store)
    }

    /// The table name, as configured.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::{PostgresConfig, PostgresStore};
    ///
    /// let config = PostgresConfig::new().table("Bot_Sessions");
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// assert_eq!(store.table(), "Bot_Sessions"); // quoted in SQL: the case is kept
    /// # Ok(()) }
    /// ```
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The connection pool, to run your own SQL on the same connections (or to read its
    /// [`status`](deadpool_postgres::Pool::status)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::stores::PostgresStore;
    ///
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/test").await?;
    /// let client = store.pool().get().await?;
    /// let sql = format!("SELECT count(*) FROM \"{}\"", store.table());
    /// let stored: i64 = client.query_one(&sql, &[]).await?.get(0);
    /// println!("{stored} values stored; pool: {:?}", store.pool().status());
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Deletes every expired row now, in batches of a few hundred rows not locked by
    /// traffic (each batch its own short statement); returns how many. Expired rows
    /// already read as missing; this reclaims their space. Uses the index on
    /// `expires_at`. To do it on a schedule, see [`spawn_sweeper`](Self::spawn_sweeper).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), multisession::store::StoreError> {
    /// let store = multisession::stores::PostgresStore::connect("postgres://localhost/bot").await?;
    /// let swept = store.sweep_expired().await?;
    /// # Ok(()) }
    /// ```
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        sweep_all(self).await
    }

    /// Starts a background task (on the current tokio runtime) that deletes expired rows
    /// every `interval`, as [`sweep_expired`](Self::sweep_expired) does, until the
    /// returned [`Sweeper`] is stopped or dropped. Each batch skips rows that updates
    /// hold locked, so the sweep never makes an update wait.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), multisession::store::StoreError> {
    /// use std::time::Duration;
    ///
    /// let store = multisession::stores::PostgresStore::connect("postgres://localhost/bot").await?;
    /// let sweeper = store.spawn_sweeper(Duration::from_secs(600))?;
    /// // ... run the bot ...
    /// let stats = sweeper.stop().await;
    /// println!("{} expired sessions swept in {} sweeps", stats.deleted, stats.sweeps);
    /// # Ok(()) }
    /// ```
    pub fn spawn_sweeper(&self, interval: Duration) -> Result<Sweeper, StoreError> {
        Sweeper::spawn(self.clone(), interval)
    }

    async fn sweep_batch_now(&self, limit: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = self
            .bounded(async {
                let client = conn.client();
                let statement = self.prepare(client, &self.inner.sql.sweep).await?;
                client
                    .execute(&statement, &[&limit])
                    .await
                    .map_err(|e| self.pg("sweep", e))
            })
            .await;
        self.release(&mut conn, &result, false);
        result
    }

    /// Creates (or replaces) the change-notification trigger, on a connection of its own.
    #[cfg(feature = "cache")]
    async fn create_trigger(&self, table: &str, notify: &Notify) -> Result<(), StoreError> {
        let connect =
            tokio::time::timeout(self.inner.connect_timeout, notify.config.connect(NoTls));
        let (client, connection) = connect
            .await
            .map_err(|_| StoreError::Timeout(self.inner.connect_timeout))?
            .map_err(|e| self.pg("connecting to create the notify trigger", e))?;
        let driver = tokio::spawn(connection);
        let result = client
            .batch_execute(&notify.channel.ddl(table, DDL_LOCK_CLASS))
            .await
            .map_err(|e| self.pg("creating the notify trigger", e));
        drop(client);
        let _ = driver.await;
        result
    }

    /// Tells `cache` (a [`CachedStore`](crate::stores::CachedStore) in front of this
    /// store) about every key another session changes, as PostgreSQL announces it
    /// (`LISTEN` on the table's channel, fed by the trigger of
    /// [`PostgresConfig::notify_changes`]). This store's own changes are not passed on
    /// (the cache has them). Returns once listening; a lost listening connection empties
    /// the cache and reconnects. Notifications arrive when the writing transaction
    /// commits.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{CachedStore, PostgresConfig, PostgresStore};
    ///
    /// let config = PostgresConfig::new().notify_changes(true);
    /// let store = PostgresStore::connect_with("postgres://postgres@127.0.0.1/test", config).await?;
    /// let cached = CachedStore::new(store.clone(), 100_000).max_staleness(None);
    /// store.track_for(&cached).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub async fn track_for(&self, cache: &crate::stores::CachedStore) -> Result<(), StoreError> {
        let Some(notify) = &self.inner.notify else {
            return Err(StoreError::backend(
                "postgres: track_for needs PostgresConfig::notify_changes(true)",
            ));
        };
        let (ready, listening) = tokio::sync::oneshot::channel();
        tokio::spawn(super::postgres_notify::listen(
            notify.config.clone(),
            notify.channel.name.clone(),
            notify.own.clone(),
            cache.invalidator(),
            ready,
            LONG_MARK,
        ));
        match tokio::time::timeout(self.inner.connect_timeout.saturating_mul(2), listening).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(StoreError::backend(why)),
            Ok(Err(_)) => Err(StoreError::backend("postgres: the listener stopped")),
            Err(_) => Err(StoreError::Timeout(
                self.inner.connect_timeout.saturating_mul(2),
            )),
        }
    }

    async fn create_table(&self, names: &Names) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx_open = AtomicBool::new(false);
        let result = self
            .bounded(async {
                let client = conn.client();
                let exists = client
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                        &[&names.table, &names.sequence],
                    )
                    .await
                    .and_then(|row| row.try_get::<_, bool>(0))
                    .map_err(|e| self.pg("checking the table", e))?;
                if exists {
                    return Ok(());
                }
                // One creator at a time (CREATE ... IF NOT EXISTS alone races on the
                // catalog). The lock ends with the transaction.
                let (table, sequence, index) = (&names.table, &names.sequence, &names.index);
                let ddl = format!(
                    "CREATE SEQUENCE IF NOT EXISTS {sequence};
                     CREATE TABLE IF NOT EXISTS {table} (
                         key BYTEA PRIMARY KEY,
                         value BYTEA NOT NULL,
                         revision BIGINT NOT NULL,
                         expires_at TIMESTAMPTZ NULL
                     );
                     CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)
                         WHERE expires_at IS NOT NULL;"
                );
                let run = async {
                    tx_open.store(true, Ordering::Relaxed);
                    client.batch_execute("BEGIN").await?;
                    client
                        .execute(
                            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                            &[&DDL_LOCK_CLASS, &names.table],
                        )
                        .await?;
                    client.batch_execute(&ddl).await?;
                    client.batch_execute("COMMIT").await
                };
                let outcome = run.await;
                match outcome {
                    Ok(()) => {
                        tx_open.store(false, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        // Leave no open transaction behind (if this fails too, the
                        // connection is not reused: see `Conn`).
                        client
                            .batch_execute("ROLLBACK")
                            .await
                            .map_err(|e| self.pg("rolling back the table creation", e))?;
                        tx_open.store(false, Ordering::Relaxed);
                        Err(self.pg("creating the table", e))
                    }
                }
            })
            .await;
        self.release(&mut conn, &result, tx_open.load(Ordering::Relaxed));
        result
    }

    /// Decides whether `conn` goes back to the pool after an operation that ended with
    /// `result`, leaving a transaction open or not; returns whether the connection was
    /// lost. A lost connection usually means the server dropped them all (a restart), so
    /// the idle ones are evicted too rather than failing one operation each.
    fn release<T>(&self, conn: &mut Conn, result: &Result<T, StoreError>, tx_open: bool) -> bool {
        let lost = conn.client().is_closed() || result.as_ref().err().is_some_and(connection_lost);
        if lost {
            self.inner.pool.retain(|_, _| false);
        }
        conn.reusable = !lost && !tx_open && !matches!(result, Err(StoreError::Timeout(_)));
        lost
    }

    /// A connection from the pool, within the connect timeout.
    async fn conn(&self) -> Result<Conn, StoreError> {
        let timeout = self.inner.connect_timeout;
        match tokio::time::timeout(timeout, self.inner.pool.get()).await {
            Err(_) => Err(StoreError::Timeout(timeout)),
            Ok(Ok(object)) => Ok(Conn {
                object: Some(object),
                reusable: false,
            }),
            Ok(Err(PoolError::Backend(e))) => Err(StoreError::from_error(PgError {
                context: "connect",
                source: e,
            })),
            Ok(Err(PoolError::Timeout(_))) => Err(StoreError::Timeout(timeout)),
            Ok(Err(e)) => Err(StoreError::backend(format!("postgres pool: {e}"))),
        }
    }

    /// Runs `op` within the statement timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.statement_timeout;
        tokio::time::timeout(timeout, op)
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout)))
    }

    fn pg(&self, context: &'static str, error: tokio_postgres::Error) -> StoreError {
        if error.code() == Some(&SqlState::QUERY_CANCELED) {
            return StoreError::Timeout(self.inner.statement_timeout);
        }
        StoreError::from_error(PgError {
            context,
            source: error,
        })
    }

    /// A failed request that may have committed (a statement outside a transaction, or
    /// `COMMIT`): not written only if the server refused it ([`refused`]); a cancelled
    /// statement is a [`StoreError::Timeout`]; anything else is [`StoreError::Unknown`].
    fn maybe_committed(&self, context: &'static str, error: tokio_postgres::Error) -> StoreError {
        if error.code() == Some(&SqlState::QUERY_CANCELED) {
            StoreError::Timeout(self.inner.statement_timeout)
        } else if refused(&error) {
            self.pg(context, error)
        } else {
            StoreError::Unknown(Box::new(PgError {
                context,
                source: error,
            }))
        }
    }

    /// A prepared statement, from the connection's cache after its first use there.
    async fn prepare(
        &self,
        client: &deadpool_postgres::Client,
        sql: &str,
    ) -> Result<Statement, StoreError> {
        client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.pg("prepare", e))
    }

    async fn apply_batch(&self, writes: &[Write]) -> Result<Outcome, StoreError> {
        self.apply_batch_revised(writes)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// The batch's outcome and, when applied, the revision each put stored (`None` for
    /// deletes, and for a put a later write of the same key replaced).
    async fn apply_batch_revised(
        &self,
        writes: &[Write],
    ) -> Result<(Outcome, Vec<Option<u64>>), StoreError> {
        let stored = stored_writes(writes);
        let Some(steps) = plan(&stored) else {
            return Ok((Outcome::Conflict, vec![None; writes.len()]));
        };
        let revisions_of = |by_step: &[Option<i64>]| -> Vec<Option<u64>> {
            let by_key: std::collections::HashMap<&str, Option<i64>> = steps
                .iter()
                .map(|(key, _)| *key)
                .zip(by_step.iter().copied())
                .collect();
            stored
                .iter()
                .enumerate()
                .map(|(i, write)| {
                    let last = !stored[i + 1..].iter().any(|w| w.key() == write.key());
                    match write {
                        Write::Put { .. } if last => by_key
                            .get(write.key())
                            .copied()
                            .flatten()
                            .and_then(|r| u64::try_from(r).ok()),
                        _ => None,
                    }
                })
                .collect()
        };
        // Without a connection nothing was sent.
        let mut conn = self.conn().await.map_err(|error| match error {
            StoreError::Timeout(waited) => StoreError::backend(format!(
                "postgres: no connection within {waited:?}; nothing was sent"
            )),
            other => other,
        })?;
        let transaction = steps.len() > 1;
        // Open: `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` answered.
        let tx_open = AtomicBool::new(false);
        // Still preparing the statements: no write sent yet.
        let preparing = AtomicBool::new(true);
        let result = self
            .bounded(async {
                let client = conn.client();
                // Prepared once per connection; after that, from the cache (no round trip).
                let statements = join_all(
                    steps
                        .iter()
                        .map(|(_, step)| self.prepare(client, step.sql(&self.inner.sql))),
                )
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
                preparing.store(false, Ordering::Relaxed);
                let run_all = join_all(
                    steps
                        .iter()
                        .zip(&statements)
                        .map(|((key, step), statement)| {
                            step.run(client, statement, key.as_bytes())
                        }),
                );
                if !transaction {
                    // One statement, its own transaction: it commits as it runs (a bare
                    // check of absence writes nothing).
                    let writes = !matches!(steps.as_slice(), [(_, Step::CheckAbsent)]);
                    let met = run_all.await.pop().unwrap_or(Ok(None));
                    return match met {
                        Ok(Some(revision)) => Ok((Outcome::Applied, vec![revision])),
                        Ok(None) => Ok((Outcome::Conflict, Vec::new())),
                        Err(e) if is_conflict(&e) => Ok((Outcome::Conflict, Vec::new())),
                        Err(e) if writes => Err(self.maybe_committed("apply", e)),
                        Err(e) => Err(self.pg("apply", e)),
                    };
                }
                // Pipelined: BEGIN and every statement go out before the first answer
                // comes back (requests are sent in the order their futures are first
                // polled, and `join` polls BEGIN first).
                tx_open.store(true, Ordering::Relaxed);
                let (begun, results) = join(client.batch_execute("BEGIN"), run_all).await;
                if let Err(begin) = begun {
                    // Without a transaction each statement ran on its own and committed,
                    // unless the server refused it.
                    let none_ran = results.iter().all(|r| r.as_ref().is_err_and(refused));
                    if client.batch_execute("ROLLBACK").await.is_ok() {
                        tx_open.store(false, Ordering::Relaxed);
                    }
                    let error = PgError {
                        context: "begin",
                        source: begin,
                    };
                    return Err(if none_ran {
                        StoreError::from_error(error)
                    } else {
                        StoreError::Unknown(Box::new(error))
                    });
                }
                let mut all_met = true;
                let mut errors: Vec<tokio_postgres::Error> = Vec::new();
                let mut revisions = Vec::with_capacity(results.len());
                for result in results {
                    match result {
                        Ok(Some(revision)) => revisions.push(revision),
                        Ok(None) => all_met = false,
                        Err(e) => errors.push(e),
                    }
                }
                // After a failed statement the rest only say "transaction aborted".
                let failure = errors
                    .iter()
                    .position(|e| e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
                    .or(if errors.is_empty() { None } else { Some(0) })
                    .map(|i| errors.swap_remove(i));
                if failure.is_some() || !all_met {
                    // Nothing commits before COMMIT: whatever fails from here on, the
                    // batch was not written (a lost connection rolls it back too).
                    let rolled_back = client.batch_execute("ROLLBACK").await;
                    if rolled_back.is_ok() {
                        tx_open.store(false, Ordering::Relaxed);
                    }
                    return match (failure, rolled_back) {
                        (Some(e), _) if is_conflict(&e) => Ok((Outcome::Conflict, Vec::new())),
                        (Some(e), _) => Err(self.pg("apply", e)),
                        (None, Ok(())) => Ok((Outcome::Conflict, Vec::new())),
                        (None, Err(e)) => Err(StoreError::from_error(PgError {
                            context: "rollback",
                            source: e,
                        })),
                    };
                }
                let committed = client.batch_execute("COMMIT").await;
                // An error answer to COMMIT ends the transaction too.
                tx_open.store(false, Ordering::Relaxed);
                match committed {
                    Ok(()) => Ok((Outcome::Applied, revisions)),
                    // Raised before the commit record: rolled back, retried as a conflict.
                    Err(e) if is_conflict(&e) => Ok((Outcome::Conflict, Vec::new())),
                    Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => {
                        Err(StoreError::Timeout(self.inner.statement_timeout))
                    }
                    // Whether COMMIT took effect is unknown: the connection may have died
                    // after it, or a fatal error may follow the commit.
                    Err(e) => Err(StoreError::Unknown(Box::new(PgError {
                        context: "commit",
                        source: e,
                    }))),
                }
            })
            .await;
        // Reusable only if the transaction (if any) was closed: a ROLLBACK or COMMIT
        // answered. A timeout or a failed ROLLBACK leaves it unknown, so the connection
        // is closed instead (and the server rolls back).
        self.release(&mut conn, &result, tx_open.load(Ordering::Relaxed));
        match result {
            // Timed out while preparing: no write was sent.
            Err(StoreError::Timeout(limit)) if preparing.load(Ordering::Relaxed) => {
                Err(StoreError::backend(format!(
                    "postgres: timed out after {limit:?} preparing the statements; \
                     nothing was sent"
                )))
            }
            Ok((Outcome::Applied, by_step)) => Ok((Outcome::Applied, revisions_of(&by_step))),
            Ok((outcome, _)) => Ok((outcome, vec![None; writes.len()])),
            Err(error) => Err(error),
        }
    }
}

impl SweepBatches for PostgresStore {
    fn sweep_batch(
        &self,
        limit: u64,
    ) -> futures_util::future::BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.sweep_batch_now(limit))
    }

    fn store_name(&self) -> String {
        Store::name(self).to_owned()
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        read_op!(self, |client| {
            let statement = self.prepare(client, &self.inner.sql.read).await?;
            let stored = stored_key(key);
            let row = client
                .query_opt(&statement, &[&stored.as_bytes()])
                .await
                .map_err(|e| self.pg("read", e))?;
            row.map(|row| record(&row, 0, 1).and_then(|r| record_for(key, r)))
                .transpose()
        })
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        read_op!(self, |client| {
            let statement = self.prepare(client, &self.inner.sql.read_with_ttl).await?;
            let stored = stored_key(key);
            let row = client
                .query_opt(&statement, &[&stored.as_bytes()])
                .await
                .map_err(|e| self.pg("read", e))?;
            row.map(|row| {
                let micros: Option<i64> = row.try_get(2).map_err(corrupt)?;
                let ttl = micros.map(|m| Duration::from_micros(u64::try_from(m).unwrap_or(0)));
                Ok((record_for(key, record(&row, 0, 1)?)?, ttl))
            })
            .transpose()
        })
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let write = Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl,
            expect: Expect::Any,
        };
        self.apply_batch(std::slice::from_ref(&write))
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let write = Write::Delete {
            key: key.to_owned(),
            expect: Expect::Any,
        };
        self.apply_batch(std::slice::from_ref(&write))
            .await
            .map(|_| ())
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = read_op!(self, |client| {
            let statement = self.prepare(client, &self.inner.sql.read_many).await?;
            let stored: Vec<std::borrow::Cow<'_, str>> =
                keys.iter().map(|k| stored_key(k)).collect();
            let wanted: Vec<&[u8]> = stored.iter().map(|k| k.as_bytes()).collect();
            let rows = client
                .query(&statement, &[&wanted])
                .await
                .map_err(|e| self.pg("read_many", e))?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in &rows {
                let key: Vec<u8> = row.try_get(0).map_err(corrupt)?;
                found.insert(key, record(row, 1, 2)?);
            }
            Ok(found)
        })?;
        keys.iter()
            .map(|key| {
                found
                    .get(stored_key(key).as_bytes())
                    .cloned()
                    .map(|r| record_for(key, r))
                    .transpose()
            })
            .collect()
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        // A prefix longer than the stored form keeps of long keys: the range of its
        // first part, then filtered.
        let range = &prefix[..prefix.floor_char_boundary(LONG_KEY - LONG_MARK.len())];
        let after = cursor.map(stored_key);
        let rows = read_op!(self, |client| {
            let statement = self.prepare(client, &self.inner.sql.list).await?;
            // A byte range, never a pattern: `%`, `_` and the like are plain bytes.
            let end = prefix_end(range.as_bytes());
            let after = after.as_deref().map(str::as_bytes);
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            client
                .query(&statement, &[&range.as_bytes(), &end, &after, &fetch])
                .await
                .map_err(|e| self.pg("list", e))
        })?;
        let more = rows.len() > limit;
        let mut entries = Vec::with_capacity(rows.len().min(limit));
        let mut last = None;
        for row in rows.iter().take(limit) {
            let (key, record) = entry_of(row)?;
            if key.starts_with(prefix) {
                entries.push((key.clone(), record));
            }
            last = Some(key);
        }
        let cursor = if more { last } else { None };
        Ok(Page { entries, cursor })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        if prefix.len() > LONG_KEY - LONG_MARK.len() {
            // Beyond what the stored form of long keys keeps: count what a listing finds.
            return crate::store::count_by_listing(self, prefix).await;
        }
        let row = read_op!(self, |client| {
            let statement = self.prepare(client, &self.inner.sql.count).await?;
            let end = prefix_end(prefix.as_bytes());
            client
                .query_one(&statement, &[&prefix.as_bytes(), &end])
                .await
                .map_err(|e| self.pg("count", e))
        })?;
        row.try_get::<_, i64>(0)
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.pg("count", e))
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        crate::store::without_revisions(self.apply_with_revisions(writes).await)
    }

    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        if writes.is_empty() {
            return Vec::new();
        }
        match self.apply_batch_revised(writes).await {
            Ok((outcome, revisions)) => revisions
                .into_iter()
                .chain(std::iter::repeat(None))
                .take(writes.len())
                .map(|revision| Ok((outcome, revision)))
                .collect(),
            Err(error) => {
                let mut out: Vec<_> = writes[1..].iter().map(|_| Err(error.replicate())).collect();
                out.insert(0, Err(error));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        let names = table_names("multisession_sessions").unwrap();
        assert_eq!(names.table, "\"multisession_sessions\"");
        assert_eq!(names.sequence, "\"multisession_sessions_revision_seq\"");
        let names = table_names("bot.Sessions2").unwrap();
        assert_eq!(names.table, "\"bot\".\"Sessions2\"");
        assert_eq!(names.sequence, "\"bot\".\"Sessions2_revision_seq\"");
        assert_eq!(names.index, "\"Sessions2_expires_idx\"");
        for bad in [
            "",
            "1abc",
            "a b",
            "a.b.c",
            ".a",
            "a.",
            "x\"; DROP TABLE y; --",
            "a'b",
            "ünï",
            &"x".repeat(49),
        ] {
            assert!(table_names(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn batches_merge_writes_to_one_key() {
        let put = |key: &str, expect| Write::Put {
            key: key.into(),
            value: b"v".to_vec(),
            ttl: None,
            expect,
        };
        assert!(plan(&[put("a", Expect::Absent), put("a", Expect::Revision(1))]).is_none());
        assert!(plan(&[put("a", Expect::Revision(u64::MAX))]).is_none());
        let batch = [put("b", Expect::Any), put("a", Expect::Revision(3))];
        let steps = plan(&batch).unwrap();
        let keys: Vec<&str> = steps.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "b"], "steps run in key order");
        let batch = [
            put("a", Expect::Absent),
            Write::Delete {
                key: "a".into(),
                expect: Expect::Any,
            },
        ];
        let steps = plan(&batch).unwrap();
        assert!(matches!(steps.as_slice(), [("a", Step::CheckAbsent)]));
    }
}
