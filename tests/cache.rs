//! `CachedStore`: the conformance suite through the cache (memory, Redis, a Redis Cluster,
//! PostgreSQL),
//! round trips saved, and two "processes" (two caches over one store) that never lose an
//! update and see each other's writes within the staleness bound.
//!
//! The Redis cases need a server (`MULTISESSION_REDIS_URL`) and the cluster ones a cluster
//! (`MULTISESSION_REDIS_CLUSTER_URLS`); without them they skip visibly, or fail under
//! `MULTISESSION_REQUIRE_SERVICES=1`.
#![cfg(feature = "cache")]

use std::time::Duration;

use multisession::{
    ChatContext, Error, MultiSession,
    store::{Store, StoreRef},
    stores::{CachedStore, CountingStore, MemoryStore},
};

mod memory {
    use super::*;

    async fn make() -> Option<StoreRef> {
        Some(StoreRef::new(CachedStore::new(MemoryStore::new(), 10_000)))
    }

    multisession::conformance_tests!(make);
}

mod memory_unbounded {
    use super::*;

    async fn make() -> Option<StoreRef> {
        Some(StoreRef::new(
            CachedStore::new(MemoryStore::new(), 10_000).max_staleness(None),
        ))
    }

    multisession::conformance_tests!(make);
}

/// A cache over the shared test Redis, told of other clients' writes if `tracked`.
#[cfg(feature = "redis")]
async fn redis_cached(tracked: bool) -> Option<StoreRef> {
    use multisession::stores::{RedisConfig, RedisStore};
    let url = multisession::testing::stores::redis_url();
    let config = RedisConfig::new()
        .key_prefix("multisession-test:")
        .client_tracking(tracked);
    match RedisStore::connect_with(&url, config).await {
        Ok(store) => {
            let cached = CachedStore::new(store.clone(), 10_000);
            if tracked {
                store.track_for(&cached).await.expect("client tracking");
            }
            Some(StoreRef::new(cached))
        }
        Err(e) => multisession::testing::service_unavailable("redis", &url, e),
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;

    async fn make() -> Option<StoreRef> {
        redis_cached(false).await
    }

    multisession::conformance_tests!(make);
}

/// The same through a cache that Redis invalidates (client tracking).
#[cfg(feature = "redis")]
mod redis_tracked {
    use super::*;

    async fn make() -> Option<StoreRef> {
        redis_cached(true).await
    }

    multisession::conformance_tests!(make);
}

#[cfg(feature = "redis")]
mod redis_cluster {
    use super::*;
    use multisession::stores::{RedisConfig, RedisStore};

    async fn make() -> Option<StoreRef> {
        let urls: Vec<String> = multisession::testing::stores::redis_cluster_urls();
        let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
        let config = RedisConfig::new().key_prefix("multisession-cluster-test:");
        match RedisStore::connect_cluster(&nodes, config).await {
            Ok(store) => Some(StoreRef::new(CachedStore::new(store, 10_000))),
            Err(e) => {
                multisession::testing::service_unavailable("redis cluster", &urls.join(","), e)
            }
        }
    }

    multisession::conformance_tests!(make);
}

/// A cache over a PostgreSQL table of its own for every run (each case uses its own keys
/// and removes them), notified of other sessions' changes if `tracked`.
#[cfg(feature = "postgres")]
async fn postgres_cached(tracked: bool) -> Option<StoreRef> {
    use multisession::stores::{PostgresConfig, PostgresStore};
    let url = multisession::testing::stores::postgres_url();
    let config = if tracked {
        PostgresConfig::new()
            .table("multisession_cache_notify_conformance")
            .notify_changes(true)
    } else {
        PostgresConfig::new().table("multisession_cache_conformance")
    };
    match PostgresStore::connect_with(&url, config).await {
        Ok(store) => {
            let cached = CachedStore::new(store.clone(), 10_000);
            if tracked {
                store.track_for(&cached).await.expect("listen");
            }
            Some(StoreRef::new(cached))
        }
        Err(e) => multisession::testing::service_unavailable("postgresql", &url, e),
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    async fn make() -> Option<StoreRef> {
        postgres_cached(false).await
    }

    multisession::conformance_tests!(make);
}

/// The same through a cache that PostgreSQL notifies (`LISTEN/NOTIFY`).
#[cfg(feature = "postgres")]
mod postgres_tracked {
    use super::*;

    async fn make() -> Option<StoreRef> {
        postgres_cached(true).await
    }

    multisession::conformance_tests!(make);
}

#[derive(MultiSession)]
struct Bot {
    count: u64,
    #[session(key = multisession::keys::user)]
    seen: u64,
}

async fn bump(sessions: &multisession::Sessions<Bot>, chat: i64, user: i64) -> Result<(), Error> {
    sessions
        .run(&ChatContext::new(chat).with_user(user), async |s| {
            *s.count().await? += 1;
            *s.seen().await? += 1;
            Ok::<_, Error>(())
        })
        .await
}

#[tokio::test]
async fn repeated_updates_of_a_key_read_it_once() {
    let remote = CountingStore::new(MemoryStore::new());
    let cached = CachedStore::new(remote.clone(), 1000).max_staleness(None);
    let sessions = Bot::builder().default_store(cached.clone()).build();
    for _ in 0..10 {
        bump(&sessions, 1, 7).await.expect("update");
    }
    let counts = remote.counts();
    // Two fragments: each read once (the first update), written every time.
    assert_eq!(counts.reads, 2, "{counts:?}");
    assert_eq!(counts.writes, 20, "{counts:?}");
    assert_eq!(cached.stats().hits, 18);
    let state = sessions
        .load(&ChatContext::new(1).with_user(7))
        .await
        .expect("load");
    assert_eq!((state.count, state.seen), (10, 10));
}

/// Two processes, each with its own cache over one store, share the per-user fragment:
/// every stale entry costs a conflict and a re-run, never an increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_over_one_store_lose_no_update() {
    let shared = MemoryStore::new();
    let a = CachedStore::new(shared.clone(), 1000).max_staleness(None);
    let b = CachedStore::new(shared.clone(), 1000).max_staleness(None);
    let process_a = Bot::builder().default_store(a.clone()).build();
    let process_b = Bot::builder().default_store(b.clone()).build();
    const N: u64 = 300;
    let run = |sessions: multisession::Sessions<Bot>, chat: i64| async move {
        for _ in 0..N {
            // The same user writes from chats handled by both processes.
            bump(&sessions, chat, 99).await.expect("update");
        }
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(run(process_a.clone(), 1)),
        tokio::spawn(run(process_b.clone(), 2))
    );
    ra.expect("a");
    rb.expect("b");
    let direct = Bot::builder().default_store(shared).build();
    // A loaded session holds its keys until dropped: one at a time.
    let (one, seen) = {
        let one = direct
            .load(&ChatContext::new(1).with_user(99))
            .await
            .unwrap();
        (one.count, one.seen)
    };
    let two = direct
        .load(&ChatContext::new(2).with_user(99))
        .await
        .unwrap()
        .count;
    assert_eq!((one, two), (N, N));
    assert_eq!(
        seen,
        2 * N,
        "per-user increments were lost between the two caches"
    );
    let stale = a.stats().evicted_on_conflict + b.stats().evicted_on_conflict;
    println!(
        "two caches, {N} updates each on a shared user: stale entries met {stale}, hits a={} b={}",
        a.stats().hits,
        b.stats().hits
    );
    assert!(stale > 0, "the caches never met each other's writes");
}

/// A read-only access sees another process's write once the staleness bound has passed.
#[tokio::test]
async fn read_only_staleness_is_bounded() {
    let shared = MemoryStore::new();
    let bound = Duration::from_millis(100);
    let reader = CachedStore::new(shared.clone(), 100).max_staleness(Some(bound));
    shared.write("count:1", b"1", None).await.unwrap();
    assert_eq!(reader.read("count:1").await.unwrap().unwrap().value, b"1");
    shared.write("count:1", b"2", None).await.unwrap();
    // Within the bound the cache may answer with the old value...
    let early = reader.read("count:1").await.unwrap().unwrap().value;
    assert!(early == b"1" || early == b"2");
    tokio::time::sleep(bound + Duration::from_millis(20)).await;
    // ...past it, never.
    assert_eq!(reader.read("count:1").await.unwrap().unwrap().value, b"2");
    // Without a bound the old value stays until a write through this cache.
    let unbounded = CachedStore::new(shared.clone(), 100).max_staleness(None);
    assert_eq!(
        unbounded.read("count:1").await.unwrap().unwrap().value,
        b"2"
    );
    shared.write("count:1", b"3", None).await.unwrap();
    assert_eq!(
        unbounded.read("count:1").await.unwrap().unwrap().value,
        b"2"
    );
}

#[tokio::test]
async fn expired_values_are_never_served_from_the_cache() {
    let store = MemoryStore::new();
    let cached = CachedStore::new(store.clone(), 100).max_staleness(None);
    let put = multisession::store::Write::Put {
        key: "quiz:1".into(),
        value: b"q".to_vec(),
        ttl: Some(Duration::from_millis(50)),
        expect: multisession::store::Expect::Absent,
    };
    cached
        .apply(&[put])
        .await
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert!(cached.read("quiz:1").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(cached.read("quiz:1").await.unwrap().is_none());
    // Learnt by a read, with its TTL.
    store
        .write("quiz:2", b"q", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(cached.read("quiz:2").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(cached.read("quiz:2").await.unwrap().is_none());
}

/// Redis client-side caching: another client's write reaches the cache as an
/// invalidation (measured), this store's own writes stay cached.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_invalidations_reach_the_cache_and_own_writes_stay_cached() {
    use multisession::store::{Expect, Write};
    use multisession::stores::{RedisConfig, RedisStore};
    let url = multisession::testing::stores::redis_url();
    let prefix = format!("ms-track:{}:", multisession::testing::unique_namespace());
    let config = || {
        RedisConfig::new()
            .key_prefix(prefix.clone())
            .client_tracking(true)
    };
    let (mine, other) = match (
        RedisStore::connect_with(&url, config()).await,
        RedisStore::connect_with(&url, config()).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return multisession::testing::service_unavailable("redis", &url, e).unwrap_or(());
        }
    };
    let _cleanup = RedisKeys(url.clone(), prefix.clone());
    let cached = CachedStore::new(mine.clone(), 100).max_staleness(None);
    mine.track_for(&cached).await.expect("track");
    let key = "count:1";
    other.write(key, b"1", None).await.unwrap();
    assert_eq!(cached.read(key).await.unwrap().unwrap().value, b"1");
    // Another process writes: the cache (no staleness bound) learns it by invalidation.
    other.write(key, b"2", None).await.unwrap();
    let written = std::time::Instant::now();
    let delay = loop {
        if cached.read(key).await.unwrap().unwrap().value == b"2" {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "no invalidation within 5 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    println!("redis invalidation reached the cache after {delay:?}");
    assert!(cached.stats().invalidations >= 1);
    // Our own write is not announced back (NOLOOP): it stays cached.
    let revision = cached.read(key).await.unwrap().unwrap().revision;
    let put = Write::Put {
        key: key.into(),
        value: b"3".to_vec(),
        ttl: None,
        expect: Expect::Revision(revision),
    };
    let before = cached.stats();
    cached
        .apply(&[put])
        .await
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("before own write {before:?}, after {:?}", cached.stats());
    let misses = cached.stats().misses;
    assert_eq!(cached.read(key).await.unwrap().unwrap().value, b"3");
    assert_eq!(
        cached.stats().misses,
        misses,
        "our own write was invalidated"
    );
    // A cache on a store without tracking is refused, not silently untracked.
    let plain = RedisStore::connect_with(&url, RedisConfig::new().key_prefix(prefix.clone()))
        .await
        .unwrap();
    assert!(
        plain
            .track_for(&CachedStore::new(plain.clone(), 10))
            .await
            .is_err()
    );
}

/// Removes a test's Redis keys (`{prefix}s:count:1`, the counter and the index) when
/// dropped, also when the test fails.
#[cfg(feature = "redis")]
struct RedisKeys(String, String);

#[cfg(feature = "redis")]
impl Drop for RedisKeys {
    fn drop(&mut self) {
        let (url, prefix) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            multisession::testing::block_on(async move {
                let Ok(client) = ::redis::Client::open(url.as_str()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let _: Result<(), _> = ::redis::cmd("DEL")
                    .arg(format!("{prefix}s:count:1"))
                    .arg(format!("{prefix}rev"))
                    .arg(format!("{prefix}idx"))
                    .query_async(&mut conn)
                    .await;
            })
        })
        .join();
    }
}

/// PostgreSQL `LISTEN/NOTIFY`: another session's change reaches the cache (measured),
/// this store's own writes stay cached.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifications_reach_the_cache_and_own_writes_stay_cached() {
    use multisession::store::{Expect, Write};
    use multisession::stores::{PostgresConfig, PostgresStore};
    let url = multisession::testing::stores::postgres_url();
    let table: String = format!(
        "ms_notify_{}",
        multisession::testing::unique_namespace()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
    .chars()
    .take(40)
    .collect();
    let mine = match PostgresStore::connect_with(
        &url,
        PostgresConfig::new().table(&table).notify_changes(true),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => {
            return multisession::testing::service_unavailable("postgresql", &url, e).unwrap_or(());
        }
    };
    // The other process does not ask for notifications: the trigger announces its writes.
    let other = PostgresStore::connect_with(&url, PostgresConfig::new().table(&table))
        .await
        .expect("second connection");
    let _cleanup = PgTable(mine.clone(), table.clone());
    let cached = CachedStore::new(mine.clone(), 100).max_staleness(None);
    mine.track_for(&cached).await.expect("listen");
    let key = "count:1";
    other.write(key, b"1", None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // The first write's notification may come after the first read: wait until stable.
    loop {
        if cached
            .read(key)
            .await
            .unwrap()
            .is_some_and(|r| r.value == b"1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first value never showed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    other.write(key, b"2", None).await.unwrap();
    let written = std::time::Instant::now();
    let delay = loop {
        if cached.read(key).await.unwrap().unwrap().value == b"2" {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "no notification within 5 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    println!("postgres notification reached the cache after {delay:?}");
    // Own writes are not announced back to the cache.
    let revision = cached.read(key).await.unwrap().unwrap().revision;
    let put = Write::Put {
        key: key.into(),
        value: b"3".to_vec(),
        ttl: None,
        expect: Expect::Revision(revision),
    };
    cached
        .apply(&[put])
        .await
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let misses = cached.stats().misses;
    assert_eq!(cached.read(key).await.unwrap().unwrap().value, b"3");
    assert_eq!(
        cached.stats().misses,
        misses,
        "our own write was invalidated"
    );
    assert!(
        other
            .track_for(&CachedStore::new(other.clone(), 10))
            .await
            .is_err()
    );
    drop(cached);
}

/// Drops a test's table, sequence and notify function when dropped (also on failure).
#[cfg(feature = "postgres")]
struct PgTable(multisession::stores::PostgresStore, String);

#[cfg(feature = "postgres")]
impl Drop for PgTable {
    fn drop(&mut self) {
        let (store, table) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            multisession::testing::block_on(async move {
                let Ok(client) = store.pool().get().await else {
                    return;
                };
                let _ = client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS \"{table}\"; \
                         DROP SEQUENCE IF EXISTS \"{table}_revision_seq\"; \
                         DROP FUNCTION IF EXISTS \"{table}_notify\"();"
                    ))
                    .await;
            })
        })
        .join();
    }
}
