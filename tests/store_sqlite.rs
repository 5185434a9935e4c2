//! SQLite store: the conformance suite, persistence, expiry, bad input, sessions on it.
#![cfg(feature = "sqlite")]

use std::{path::PathBuf, time::Duration};

use multisession::{
    ChatContext, Config, MultiSession, OnConflict,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s17_two_stores_on_one_file_lose_no_update() {
    let db = TempDb::new();
    let config = Config::new().on_conflict(OnConflict::Retry { attempts: 1000 });
    let a = Counter::builder()
        .default_store(SqliteStore::open(&db.0).await.unwrap())
        .config(config.clone())
        .build();
    let b = Counter::builder()
        .default_store(SqliteStore::open(&db.0).await.unwrap())
        .config(config)
        .build();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let sessions = if i % 2 == 0 { a.clone() } else { b.clone() };
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
    assert_eq!(a.load(&ChatContext::new(1)).await.unwrap().hits, 400);
    assert!(
        a.stats().conflicts + b.stats().conflicts > 0 || a.stats().writes + b.stats().writes == 400
    );
}
