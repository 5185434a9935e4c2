//! Rule S17 across OS processes: several copies of this test binary increment one chat's
//! counter through one shared store (SQLite file, Redis, PostgreSQL); the final count
//! equals the number of increments.
//!
//! The parent test re-runs this binary with `child_worker` selected and the job in the
//! environment; each child runs several concurrent tasks.
#![cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]

use std::process::Command;

use multisession::{ChatContext, Config, MultiSession, OnConflict, Sessions, store::StoreRef};

const PROCESSES: usize = 3;
const TASKS_PER_PROCESS: usize = 4;
const INCREMENTS_PER_TASK: usize = 50;

#[derive(MultiSession)]
struct Counter {
    hits: u64,
}

/// A chat id no other run uses, so runs (and tests running at once) never share a counter.
fn unique_chat() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(multisession::testing::unique_namespace().as_bytes());
    -((hasher.finish() >> 2) as i64) - 1
}

fn sessions(store: StoreRef) -> Sessions<Counter> {
    Counter::builder()
        .default_store(store)
        .config(Config::new().on_conflict(OnConflict::Retry { attempts: 10_000 }))
        .build()
}

async fn open_store(kind: &str, target: &str) -> Option<StoreRef> {
    match kind {
        #[cfg(feature = "sqlite")]
        "sqlite" => Some(StoreRef::new(
            multisession::stores::SqliteStore::open(target)
                .await
                .expect("open sqlite"),
        )),
        #[cfg(feature = "redis")]
        "redis" => match multisession::stores::RedisStore::connect(target).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => multisession::testing::service_unavailable("redis", target, e),
        },
        #[cfg(feature = "postgres")]
        "postgres" => match multisession::stores::PostgresStore::connect(target).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => multisession::testing::service_unavailable("postgresql", target, e),
        },
        other => panic!("unknown store kind {other}"),
    }
}

/// The child: selected by the parent with `--exact child_worker`; does nothing otherwise.
#[test]
fn child_worker() {
    let (Ok(kind), Ok(target), Ok(chat)) = (
        std::env::var("MS_CHILD_STORE"),
        std::env::var("MS_CHILD_TARGET"),
        std::env::var("MS_CHILD_CHAT"),
    ) else {
        return;
    };
    let chat: i64 = chat.parse().expect("MS_CHILD_CHAT");
    multisession::testing::block_on(async move {
        let store = open_store(&kind, &target).await.expect("child: store");
        let sessions = sessions(store);
        let tasks: Vec<_> = (0..TASKS_PER_PROCESS)
            .map(|_| {
                let sessions = sessions.clone();
                tokio::spawn(async move {
                    for _ in 0..INCREMENTS_PER_TASK {
                        sessions
                            .run(&ChatContext::new(chat), |s| async move {
                                *s.hits().await? += 1;
                                Ok::<_, multisession::Error>(())
                            })
                            .await
                            .expect("child: increment");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("child task");
        }
    });
}

fn hammer(kind: &str, target: &str) {
    let chat = unique_chat();
    // Check the store is reachable before spawning (skips visibly, or fails under
    // MULTISESSION_REQUIRE_SERVICES=1).
    let reachable = multisession::testing::block_on(open_store(kind, target));
    if reachable.is_none() {
        return;
    }

    let exe = std::env::current_exe().expect("test binary path");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
                .env("MS_CHILD_STORE", kind)
                .env("MS_CHILD_TARGET", target)
                .env("MS_CHILD_CHAT", chat.to_string())
                .spawn()
                .expect("spawn a child process")
        })
        .collect();
    for child in children {
        let status = child.wait_with_output().expect("wait for a child").status;
        assert!(status.success(), "a child process failed: {status}");
    }

    // A fresh store: a connection belongs to the runtime that opened it.
    let total = multisession::testing::block_on(async move {
        let store = open_store(kind, target).await.expect("reopen the store");
        let sessions = sessions(store);
        let data = sessions
            .load(&ChatContext::new(chat))
            .await
            .expect("load the counter");
        let total = data.hits;
        // A loaded session holds its keys until saved or dropped.
        drop(data);
        // Clean up: delete the counter.
        sessions
            .run(&ChatContext::new(chat), |s| async move {
                s.hits().delete().await
            })
            .await
            .expect("clean up");
        total
    });
    assert_eq!(
        total,
        (PROCESSES * TASKS_PER_PROCESS * INCREMENTS_PER_TASK) as u64,
        "increments were lost across {PROCESSES} processes on {kind}"
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn s17_sqlite_processes_lose_no_increment() {
    let path = std::env::temp_dir().join(format!(
        "multisession-cross-{}.db",
        multisession::testing::unique_namespace().trim_end_matches(':')
    ));
    let target = path.to_str().expect("utf-8 temp path").to_owned();
    hammer("sqlite", &target);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{target}{suffix}"));
    }
}

#[cfg(feature = "redis")]
#[test]
fn s17_redis_processes_lose_no_increment() {
    let url =
        std::env::var("MULTISESSION_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    hammer("redis", &url);
}

#[cfg(feature = "postgres")]
#[test]
fn s17_postgres_processes_lose_no_increment() {
    let url = std::env::var("MULTISESSION_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    hammer("postgres", &url);
}
