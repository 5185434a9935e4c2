//! The background expiry sweeper of the SQL stores (`spawn_sweeper`): it deletes expired
//! rows (and only those) on its interval, in batches, while session traffic goes on; it
//! stops when stopped or dropped; it needs a runtime and says so.
//!
//! PostgreSQL: `MULTISESSION_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! a table of the test's own, dropped at the end; without a server the test skips
//! visibly (fails under `MULTISESSION_REQUIRE_SERVICES=1`).

use std::time::{Duration, Instant};

use multisession::{
    ChatContext, MultiSession,
    store::{Expect, StoreRef, Write},
    stores::{SqliteStore, SweepStats, Sweeper},
    testing::unique_namespace,
};

#[derive(MultiSession)]
struct Bot {
    count: u32,
}

/// Rows the test writes: `expired` with a 1 ms TTL, 10 without TTL, 10 with an hour.
async fn fill(store: &StoreRef, ns: &str, expired: usize) {
    let put = |key: String, ttl: Option<Duration>| Write::Put {
        key,
        value: b"{}".to_vec(),
        ttl,
        expect: Expect::Any,
    };
    let writes: Vec<Write> = (0..expired)
        .map(|i| put(format!("{ns}old:{i}"), Some(Duration::from_millis(1))))
        .chain((0..10).map(|i| put(format!("{ns}kept:{i}"), None)))
        .chain((0..10).map(|i| put(format!("{ns}fresh:{i}"), Some(Duration::from_secs(3600)))))
        .collect();
    for batch in writes.chunks(1000) {
        for result in store.as_dyn().apply(batch).await {
            result.expect("written");
        }
    }
}

/// Removes an SQLite file and its journal files.
fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Waits (bounded) until the sweeper deleted at least `rows`.
async fn wait_for(sweeper: &Sweeper, rows: u64) -> SweepStats {
    let started = Instant::now();
    loop {
        let stats = sweeper.stats();
        if stats.deleted >= rows {
            return stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sweeper deleted {} of {rows} expired rows in 30 s: {stats:?}",
            stats.deleted
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sweep, with session traffic on the same store going on meanwhile: every update
/// completes, the expired rows go, the others stay; after `stop` nothing more is swept.
async fn sweeps_in_the_background(
    store: StoreRef,
    sweeper: impl Fn() -> Sweeper,
    rows: impl AsyncFn() -> u64,
) {
    let ns = unique_namespace();
    let expired = 2_400; // several batches
    fill(&store, &ns, expired).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = rows().await;
    let running = sweeper();
    // Traffic while it sweeps: 200 updates of 20 chats.
    let sessions = Bot::builder().default_store(store.clone()).build();
    let traffic = (0..200).map(|i| {
        let sessions = sessions.clone();
        async move {
            let ctx = ChatContext::new(-(i % 20) - 1_000_000);
            sessions
                .run(&ctx, async |s| {
                    *s.count().await? += 1;
                    Ok::<_, multisession::Error>(())
                })
                .await
        }
    });
    for result in futures_util::future::join_all(traffic).await {
        result.expect("an update during the sweep");
    }
    let stats = wait_for(&running, expired as u64).await;
    assert_eq!(stats.errors, 0, "{stats:?}");
    let stats = running.stop().await;
    assert!(stats.sweeps >= 1, "{stats:?}");
    assert_eq!(
        rows().await,
        before - expired as u64 + 20,
        "the expired rows went; the 20 live ones and the 20 sessions stayed ({stats:?})"
    );
    for i in 0..10 {
        for name in ["kept", "fresh"] {
            let key = format!("{ns}{name}:{i}");
            assert!(store.as_dyn().read(&key).await.unwrap().is_some(), "{key}");
        }
    }
    let counts = sessions.admin_count_all().await;
    assert_eq!(counts, 200, "every increment of the traffic is stored");

    // Stopped: rows that expire now stay until swept again.
    fill(&store, &format!("{ns}after:"), 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rows().await, before - expired as u64 + 20 + 25);

    // A dropped handle stops the task too.
    let dropped = sweeper();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rows().await, before - expired as u64 + 20 + 25);
}

trait CountAll {
    async fn admin_count_all(&self) -> u32;
}

impl CountAll for multisession::Sessions<Bot> {
    /// The sum of every chat's count.
    async fn admin_count_all(&self) -> u32 {
        let mut total = 0;
        for chat in 0..20 {
            let ctx = ChatContext::new(-chat - 1_000_000);
            total += self.load(&ctx).await.unwrap().count;
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sweeps_in_the_background() {
    let path = std::env::temp_dir().join(format!("sweeper-{}.db", unique_namespace()));
    let store = SqliteStore::open(&path).await.unwrap();
    let rows = async || {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.query_row("SELECT count(*) FROM multisession", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as u64
        })
        .await
        .unwrap()
    };
    let sweeping = store.clone();
    sweeps_in_the_background(
        StoreRef::new(store),
        || sweeping.spawn_sweeper(Duration::from_millis(20)).unwrap(),
        rows,
    )
    .await;
    remove_db(&path);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sweeps_in_the_background() {
    use multisession::stores::{PostgresConfig, PostgresStore};

    let url = multisession::testing::stores::postgres_url();
    let table = format!(
        "sweep_{}",
        unique_namespace().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let store = match PostgresStore::connect_with(&url, PostgresConfig::new().table(&table)).await {
        Ok(store) => store,
        Err(e) => {
            return multisession::testing::service_unavailable("postgresql", &url, e).unwrap_or(());
        }
    };
    let pool = store.pool().clone();
    let count_sql = format!("SELECT count(*) FROM \"{table}\"");
    let rows = async || {
        let client = pool.get().await.unwrap();
        client
            .query_one(&count_sql, &[])
            .await
            .unwrap()
            .get::<_, i64>(0) as u64
    };
    let sweeping = store.clone();
    sweeps_in_the_background(
        StoreRef::new(store),
        || sweeping.spawn_sweeper(Duration::from_millis(20)).unwrap(),
        rows,
    )
    .await;
    let client = pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE \"{table}\"; DROP SEQUENCE IF EXISTS \"{table}_revision_seq\""
        ))
        .await
        .unwrap();
}

/// Outside a tokio runtime there is nothing to run the task on: a typed error naming the
/// store, not a panic.
#[test]
fn a_sweeper_needs_a_runtime() {
    let path = std::env::temp_dir().join(format!("sweeper-{}.db", unique_namespace()));
    let store = multisession::testing::block_on(SqliteStore::open(&path)).unwrap();
    let error = store.spawn_sweeper(Duration::from_secs(1)).unwrap_err();
    assert!(error.to_string().contains("tokio runtime"), "{error}");
    drop(store);
    remove_db(&path);
}
