//! SQLite store: the conformance suite, persistence, expiry, bad input, sessions on it.
#![cfg(feature = "sqlite")]

use std::{path::PathBuf, time::Duration};

use multisession::{
    ChatContext, MultiSession,
    store::{Store, StoreRef},
    stores::{SqliteConfig, SqliteStore},
};

/// A database file under the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let name = multisession::testing::unique_namespace().replace(':', "");
        TempDb(std::env::temp_dir().join(format!("{name}.db")))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

mod conformance {
    use super::*;

    async fn make() -> Option<StoreRef> {
        // The file outlives the case's store handle only until the process ends; the
        // suite removes its keys, and the OS temp dir the rest.
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).await.expect("open sqlite");
        std::mem::forget(db);
        Some(StoreRef::new(store))
    }

    multisession::conformance_tests!(make);

    async fn make_memory() -> Option<StoreRef> {
        Some(StoreRef::new(
            SqliteStore::in_memory().await.expect("in-memory sqlite"),
        ))
    }

    mod in_memory {
        multisession::conformance_tests!(super::make_memory);
    }
}

#[tokio::test]
async fn values_survive_reopening_the_file() {
    let db = TempDb::new();
    {
        let store = SqliteStore::open(&db.0).await.unwrap();
        store.write("k", b"persistent", None).await.unwrap();
    }
    let store = SqliteStore::open(&db.0).await.unwrap();
    assert_eq!(store.read("k").await.unwrap().unwrap().value, b"persistent");
}

#[tokio::test]
async fn s18_expired_values_read_as_missing_and_are_swept() {
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.unwrap();
    store
        .write("short", b"v", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    store
        .write("long", b"v", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    store.write("forever", b"v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.read("short").await.unwrap(), None);
    assert!(store.read("long").await.unwrap().is_some());
    assert_eq!(store.sweep_expired().await.unwrap(), 1);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    // A write without TTL clears an earlier expiry.
    store.write("long", b"v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(store.read("long").await.unwrap().is_some());
}

#[tokio::test]
async fn a_table_name_is_never_injected() {
    let db = TempDb::new();
    for bad in ["x\"; DROP TABLE y; --", "1abc", "", "a b", "ünï"] {
        let err = SqliteStore::open_with(&db.0, SqliteConfig::new().table(bad))
            .await
            .err();
        assert!(err.is_some(), "table name {bad:?} was accepted");
    }
    let ok = SqliteStore::open_with(&db.0, SqliteConfig::new().table("bot_sessions_2")).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_typed_error() {
    let db = TempDb::new();
    std::fs::write(&db.0, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(&db.0)
        .await
        .err()
        .expect("garbage file accepted");
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[derive(MultiSession)]
struct Counter {
    hits: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_sessions_on_sqlite_lose_no_update() {
    let db = TempDb::new();
    let sessions = Counter::builder()
        .default_store(SqliteStore::open(&db.0).await.unwrap())
        .build();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    sessions
                        .run(&ChatContext::new(1), |s| async move {
                            *s.hits().await? += 1;
                            Ok::<_, multisession::Error>(())
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(sessions.load(&ChatContext::new(1)).await.unwrap().hits, 400);
}

/// Rule S26 on SQLite: a write the runtime gave up on is cancelled, not committed behind
/// its back later; a write stuck behind another connection's lock fails as "not
/// written" before the runtime's default `op_timeout`.
mod s26 {
    use std::time::Instant;

    use multisession::{
        Stored,
        store::{Expect, Outcome, StoreError, Write},
    };

    use super::*;

    fn put(key: &str, value: &[u8]) -> Write {
        Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl: None,
            expect: Expect::Any,
        }
    }

    /// A second connection to the file holding its write lock until dropped or released.
    fn hold_write_lock(db: &TempDb) -> rusqlite::Connection {
        let blocker = rusqlite::Connection::open(&db.0).expect("open a second connection");
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        blocker
    }

    /// The runtime's timeout drops `apply` while it waits for the lock (here with a busy
    /// timeout far longer than that). The job on the blocking pool is cancelled: it stops
    /// waiting, gives its connection back, and once the lock is free it does not commit
    /// the write the caller was told had timed out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_write_is_cancelled_not_committed_later() {
        let db = TempDb::new();
        let config = SqliteConfig::new()
            .busy_timeout(Duration::from_secs(20))
            .connections(1);
        let store = SqliteStore::open_with(&db.0, config).await.unwrap();
        store.write("before", b"v", None).await.unwrap();
        let blocker = hold_write_lock(&db);

        let timed_out = tokio::time::timeout(
            Duration::from_millis(300),
            store.apply(&[put("k", b"late")]),
        )
        .await;
        assert!(timed_out.is_err(), "the write did not wait: {timed_out:?}");

        // The store's only connection is free again soon: the cancelled job stopped
        // waiting for the lock (the blocker still holds it).
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(2), store.read("k"))
            .await
            .expect("the cancelled job kept the connection");
        assert_eq!(read.unwrap(), None);
        eprintln!("connection back after {:?}", started.elapsed());

        // The lock is freed; the cancelled write must not land afterwards.
        blocker.execute_batch("COMMIT").unwrap();
        drop(blocker);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            store.read("k").await.unwrap(),
            None,
            "a write that timed out was committed later"
        );

        // The store works normally afterwards, on the same connection.
        let results = store.apply(&[put("k", b"now")]).await;
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
        assert_eq!(store.read("k").await.unwrap().unwrap().value, b"now");
        assert_eq!(store.read("before").await.unwrap().unwrap().value, b"v");
    }

    /// A write that cannot get the lock within the busy timeout never began its
    /// transaction: "not written", never an unknown outcome.
    #[tokio::test]
    async fn a_write_that_cannot_get_the_lock_is_not_written() {
        let db = TempDb::new();
        let config = SqliteConfig::new().busy_timeout(Duration::from_millis(200));
        let store = SqliteStore::open_with(&db.0, config).await.unwrap();
        let blocker = hold_write_lock(&db);
        let started = Instant::now();
        let results = tokio::time::timeout(
            Duration::from_secs(10),
            store.apply(&[put("a", b"1"), put("b", b"1")]),
        )
        .await
        .expect("the busy timeout did not bound the wait");
        eprintln!("after {:?}: {results:?}", started.elapsed());
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(e @ StoreError::Backend(_)) if !e.outcome_unknown())),
            "{results:?}"
        );
        for result in [store.write("a", b"1", None).await, store.delete("a").await] {
            assert!(
                matches!(&result, Err(e @ StoreError::Backend(_)) if !e.outcome_unknown()),
                "{result:?}"
            );
        }
        drop(blocker);
        assert_eq!(store.read("a").await.unwrap(), None);
        assert_eq!(store.read("b").await.unwrap(), None);
    }

    /// With the default options on both sides, SQLite's busy timeout (4 s) gives up before
    /// the runtime's `op_timeout` (5 s): an update blocked by another process's lock is
    /// reported as "nothing written", not as an unknown outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn by_default_a_locked_file_is_reported_as_nothing_written() {
        let db = TempDb::new();
        let sessions = Counter::builder()
            .default_store(SqliteStore::open(&db.0).await.unwrap())
            .build();
        let ctx = ChatContext::new(3);
        let blocker = hold_write_lock(&db);
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            sessions.run(&ctx, async |s| {
                *s.hits().await? += 1;
                Ok::<_, multisession::Error>(())
            }),
        )
        .await
        .expect("the update hung");
        let waited = started.elapsed();
        let error = result.expect_err("an update succeeded behind another process's lock");
        eprintln!("after {waited:?}: {error}");
        assert_eq!(error.stored(), Stored::Nothing, "{error}");
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
            "the busy timeout is not 4 s: {waited:?}"
        );
        drop(blocker);
        assert_eq!(sessions.load(&ctx).await.unwrap().hits, 0);
    }
}

/// Point operations on the calling task (`SqliteConfig::inline`, the default).
mod inline {
    use multisession::store::{Expect, Outcome, Write};

    use super::*;

    fn cas(key: &str, value: &[u8], revision: u64) -> Write {
        Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl: None,
            expect: Expect::Revision(revision),
        }
    }

    /// Reads and writes go on while tokio's blocking pool is busy with something else
    /// (its only thread taken): they run where they are called. With every call on the
    /// blocking pool (`inline(false)`) the same read waits for that thread.
    #[test]
    fn point_operations_need_no_blocking_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let db = TempDb::new();
            let inline = SqliteStore::open(&db.0).await.unwrap();
            let pooled = SqliteStore::open_with(&db.0, SqliteConfig::new().inline(false))
                .await
                .unwrap();
            inline.write("k", b"1", None).await.unwrap();
            // The one blocking thread is taken until `release` is sent.
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let occupied = tokio::task::spawn_blocking(move || wait.recv());
            tokio::task::yield_now().await;

            let record = tokio::time::timeout(Duration::from_secs(10), inline.read("k"))
                .await
                .expect("a read waited for the blocking pool")
                .unwrap()
                .unwrap();
            let applied = tokio::time::timeout(
                Duration::from_secs(10),
                inline.apply(&[cas("k", b"2", record.revision)]),
            )
            .await
            .expect("a write waited for the blocking pool");
            assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");

            // The pooled store's read needs the occupied thread: it waits.
            let read = pooled.read("k");
            tokio::pin!(read);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), &mut read)
                    .await
                    .is_err(),
                "a read with inline(false) ran without a blocking thread"
            );
            release.send(()).unwrap();
            occupied.await.unwrap().unwrap();
            let read = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("the pooled read after the thread was free")
                .unwrap();
            assert_eq!(read.unwrap().value, b"2");
        });
    }

    /// A lock held by another connection: the inline attempt gives up at once without
    /// doing anything, the write waits for the lock on the blocking pool and lands once,
    /// and reads are not held up meanwhile (WAL).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_file_falls_back_to_waiting_on_the_pool() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).await.unwrap();
        store.write("k", b"1", None).await.unwrap();
        let revision = store.read("k").await.unwrap().unwrap().revision;
        let blocker = rusqlite::Connection::open(&db.0).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.apply(&[cas("k", b"2", revision)]).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "the write did not wait for the lock");
        let read = tokio::time::timeout(Duration::from_secs(5), store.read("k"))
            .await
            .expect("a read waited behind the write lock");
        assert_eq!(read.unwrap().unwrap().value, b"1");

        blocker.execute_batch("COMMIT").unwrap();
        let applied = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the write never got the lock")
            .unwrap();
        assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
        let record = store.read("k").await.unwrap().unwrap();
        assert_eq!(
            (record.value.as_slice(), record.revision),
            (&b"2"[..], revision + 1)
        );
    }

    /// Writes on the calling task leave checkpoints to the blocking pool, which keeps the
    /// write-ahead log short: 40 MB written, the log stays a few MB.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_checkpointed_off_the_calling_task() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).await.unwrap();
        let value = vec![7u8; 8 * 1024];
        let mut largest = 0;
        for i in 0..5_000u32 {
            store
                .write(&format!("k{}", i % 50), &value, None)
                .await
                .unwrap();
            if i % 100 == 99 {
                // Give the background checkpoint a moment, as a bot's I/O would.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let wal =
                    std::fs::metadata(format!("{}-wal", db.0.display())).map_or(0, |m| m.len());
                largest = largest.max(wal);
            }
        }
        eprintln!("largest write-ahead log: {} kB", largest / 1024);
        // Unchecked, the log would hold every page written: over 40 MB.
        assert!(largest < 16 * 1024 * 1024, "{} kB", largest / 1024);
    }

    /// Revisions: a compare-and-set put adds one to the revision read; a create takes the
    /// counter (`c × 10^9`); a re-created key starts above its old revisions; rows of
    /// earlier versions (small revisions) update in place.
    #[tokio::test]
    async fn revisions_of_updates_in_place_and_creates() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).await.unwrap();
        store.write("k", b"1", None).await.unwrap();
        let created = store.read("k").await.unwrap().unwrap().revision;
        assert_eq!(created % 1_000_000_000, 0, "{created}");
        let applied = store.apply_with_revisions(&[cas("k", b"2", created)]).await;
        assert!(
            matches!(applied[..], [Ok((Outcome::Applied, _))]),
            "{applied:?}"
        );
        assert_eq!(
            store.read("k").await.unwrap().unwrap().revision,
            created + 1
        );
        let stale = store.apply(&[cas("k", b"3", created)]).await;
        assert!(matches!(stale[..], [Ok(Outcome::Conflict)]), "{stale:?}");
        store.delete("k").await.unwrap();
        store.write("k", b"again", None).await.unwrap();
        assert!(store.read("k").await.unwrap().unwrap().revision > created + 1);

        let raw = rusqlite::Connection::open(&db.0).unwrap();
        raw.execute(
            "INSERT INTO multisession (key, value, revision) VALUES (?1, ?2, 17)",
            rusqlite::params![b"old".as_slice(), b"x".as_slice()],
        )
        .unwrap();
        let applied = store.apply(&[cas("old", b"y", 17)]).await;
        assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
        assert_eq!(store.read("old").await.unwrap().unwrap().revision, 18);
    }
}
