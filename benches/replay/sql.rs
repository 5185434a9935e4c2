//! The hand-written SQL baselines (issue 11, item 6): the pizza bot's logic on SQLite
//! through `rusqlite` and on PostgreSQL through `tokio-postgres`, doing what the store
//! does for a safe update and nothing else: a read of value and revision, then a
//! conditional write (`UPDATE … WHERE key = ? AND revision = ?` for a key read,
//! `INSERT … ON CONFLICT DO NOTHING` for a new one), each checked to have hit one row.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Serialize, de::DeserializeOwned};

use crate::hand::{Backend, Cas};

/// SQLite through `rusqlite`, set up as `SqliteStore` sets up its connections: a file in
/// WAL mode with `synchronous = NORMAL`, a `WITHOUT ROWID` table keyed by a BLOB, one
/// connection behind a mutex, statements from `prepare_cached`, every statement run right
/// in the async task (what a bot does that calls rusqlite without `spawn_blocking`: the
/// fastest hand-written form, and what the store does when no lock is held). Each statement is its own (autocommit)
/// transaction; no TTL column, no revision counter (the revision is `revision + 1`).
pub struct SqliteHand {
    conn: Arc<Mutex<Connection>>,
}

/// What `SqliteHand` and `PgHand` say about themselves in the output.
pub const SQLITE_HAND: &str = "hand-written rusqlite: a WAL file (synchronous=NORMAL), one connection behind a \
mutex called right in the async task (no spawn_blocking), prepared statements; SELECT value, revision; \
UPDATE … WHERE key = ? AND revision = ? (revision + 1) or INSERT … ON CONFLICT DO NOTHING, \
one row hit checked";

impl SqliteHand {
    /// Opens (creates) the database file `path` and its table.
    pub async fn open(path: &Path) -> Self {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(path).expect("open the baseline's SQLite file");
            conn.pragma_update(None, "journal_mode", "WAL")
                .expect("WAL");
            conn.pragma_update(None, "synchronous", "NORMAL")
                .expect("synchronous");
            conn.busy_timeout(std::time::Duration::from_secs(4))
                .expect("busy timeout");
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS hand (
                     key BLOB PRIMARY KEY NOT NULL,
                     value BLOB NOT NULL,
                     revision INTEGER NOT NULL
                 ) WITHOUT ROWID;",
            )
            .expect("create the baseline's table");
            conn
        })
        .await
        .expect("open job");
        Self {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    async fn job<R: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> R {
        job(&self.conn.lock().expect("baseline connection"))
    }

    /// Empties the table (between runs, not timed).
    pub async fn reset(&self) {
        self.job(|c| c.execute_batch("DELETE FROM hand").expect("reset"))
            .await;
    }
}

impl Backend for SqliteHand {
    type Rev = i64;

    async fn get<T: DeserializeOwned + Send>(&self, key: &str) -> Option<(T, i64)> {
        let key = key.to_owned();
        let row = self
            .job(move |c| {
                c.prepare_cached("SELECT value, revision FROM hand WHERE key = ?1")
                    .expect("prepare")
                    .query_row(params![key.as_bytes()], |row| {
                        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()
                    .expect("read")
            })
            .await;
        row.map(|(bytes, rev)| (serde_json::from_slice(&bytes).expect("decode"), rev))
    }

    async fn put<T: Serialize + Sync>(&self, key: &str, value: &T, cas: Cas<i64>) {
        let key = key.to_owned();
        let value = serde_json::to_vec(value).expect("encode");
        let hit = self
            .job(move |c| {
                let (sql, rev) = match cas {
                    Cas::Rev(rev) => (
                        "UPDATE hand SET value = ?2, revision = revision + 1 \
                         WHERE key = ?1 AND revision = ?3",
                        rev,
                    ),
                    Cas::Absent => (
                        "INSERT INTO hand (key, value, revision) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO NOTHING",
                        1,
                    ),
                    Cas::Any => (
                        "INSERT INTO hand (key, value, revision) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                         revision = hand.revision + 1",
                        1,
                    ),
                };
                c.prepare_cached(sql)
                    .expect("prepare")
                    .execute(params![key.as_bytes(), value, rev])
                    .expect("write")
            })
            .await;
        assert_eq!(hit, 1, "a conditional write of the baseline missed");
    }

    async fn delete(&self, key: &str) {
        let key = key.to_owned();
        self.job(move |c| {
            c.prepare_cached("DELETE FROM hand WHERE key = ?1")
                .expect("prepare")
                .execute(params![key.as_bytes()])
                .expect("delete")
        })
        .await;
    }
}

/// PostgreSQL through `tokio-postgres`: one connection (its driver task spawned, as the
/// crate documents), statements prepared once on it, the table shaped like the store's
/// (BYTEA key as primary key, BYTEA value, BIGINT revision, a nullable `expires_at` that
/// stays unused); each statement its own transaction. The store instead keeps a pool
/// (`deadpool-postgres`), takes revisions from a sequence and checks expiry in each
/// statement.
#[cfg(feature = "postgres")]
pub struct PgHand {
    client: tokio_postgres::Client,
    table: String,
    read: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    upsert: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
}

#[cfg(feature = "postgres")]
pub const PG_HAND: &str = "hand-written tokio-postgres: one connection, prepared statements; SELECT value, \
revision; UPDATE … WHERE key = $1 AND revision = $3 (revision + 1) or INSERT … ON CONFLICT \
DO NOTHING, one row hit checked";

#[cfg(feature = "postgres")]
impl PgHand {
    /// Connects to `url` and creates the baseline's own table (dropped by [`PgHand::drop_table`]).
    pub async fn connect(url: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("baseline PostgreSQL connection: {error}");
            }
        });
        let table = format!("multisession_bench_hand_{}", std::process::id());
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     key BYTEA PRIMARY KEY,
                     value BYTEA NOT NULL,
                     revision BIGINT NOT NULL,
                     expires_at TIMESTAMPTZ NULL
                 )"
            ))
            .await?;
        let read = client
            .prepare(&format!(
                "SELECT value, revision FROM {table} WHERE key = $1"
            ))
            .await?;
        let update = client
            .prepare(&format!(
                "UPDATE {table} SET value = $2, revision = revision + 1 \
                 WHERE key = $1 AND revision = $3"
            ))
            .await?;
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} (key, value, revision) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO NOTHING"
            ))
            .await?;
        let upsert = client
            .prepare(&format!(
                "INSERT INTO {table} AS cur (key, value, revision) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
                 revision = cur.revision + 1"
            ))
            .await?;
        let delete = client
            .prepare(&format!("DELETE FROM {table} WHERE key = $1"))
            .await?;
        Ok(Self {
            client,
            table,
            read,
            update,
            insert,
            upsert,
            delete,
        })
    }

    /// Empties the table (between runs, not timed).
    pub async fn reset(&self) {
        self.client
            .batch_execute(&format!("TRUNCATE {}", self.table))
            .await
            .expect("reset the baseline's table");
    }

    /// Drops the baseline's table.
    pub async fn drop_table(&self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table))
            .await;
    }
}

#[cfg(feature = "postgres")]
impl Backend for PgHand {
    type Rev = i64;

    async fn get<T: DeserializeOwned + Send>(&self, key: &str) -> Option<(T, i64)> {
        let row = self
            .client
            .query_opt(&self.read, &[&key.as_bytes()])
            .await
            .expect("read");
        row.map(|row| {
            let bytes: &[u8] = row.get(0);
            (
                serde_json::from_slice(bytes).expect("decode"),
                row.get::<_, i64>(1),
            )
        })
    }

    async fn put<T: Serialize + Sync>(&self, key: &str, value: &T, cas: Cas<i64>) {
        let value = serde_json::to_vec(value).expect("encode");
        let key = key.as_bytes();
        let hit = match cas {
            Cas::Rev(rev) => {
                self.client
                    .execute(&self.update, &[&key, &value, &rev])
                    .await
            }
            Cas::Absent => self.client.execute(&self.insert, &[&key, &value]).await,
            Cas::Any => self.client.execute(&self.upsert, &[&key, &value]).await,
        }
        .expect("write");
        assert_eq!(hit, 1, "a conditional write of the baseline missed");
    }

    async fn delete(&self, key: &str) {
        self.client
            .execute(&self.delete, &[&key.as_bytes()])
            .await
            .expect("delete");
    }
}
