//! Redis store: the conformance suite, expiry and the index sweep, bad stored data,
//! outages and recovery, and sessions on it across two connections.
//!
//! Needs a server: `MULTISESSION_REDIS_URL` (default `redis://127.0.0.1:6379`). Without
//! one the tests skip visibly, or fail under `MULTISESSION_REQUIRE_SERVICES=1`. Every test
//! uses its own key prefix and deletes what it wrote. The outage test starts a private
//! `redis-server` on a free port (skipped, or failed under the same variable, if the binary
//! is missing), so it never disturbs the shared server.
#![cfg(feature = "redis")]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use multisession::{
    ChatContext, MultiSession,
    store::{Expect, Outcome, Store, StoreError, StoreRef, Write},
    stores::{RedisConfig, RedisStore},
    testing::{service_unavailable, services_required, unique_namespace},
};

fn url() -> String {
    std::env::var("MULTISESSION_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn store_at(url: &str, prefix: &str) -> Option<RedisStore> {
    let config = RedisConfig::new()
        .key_prefix(prefix)
        .connect_timeout(Duration::from_secs(2));
    match RedisStore::connect_with(url, config).await {
        Ok(store) => Some(store),
        Err(e) => service_unavailable("redis", url, e),
    }
}

/// Removes every Redis key under `prefix` (data, counter, index).
async fn drop_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(url()) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("{}*", glob_escape(prefix));
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn raw(args: &[&[u8]]) -> redis::Value {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

fn put(key: &str, value: &[u8], ttl: Option<Duration>, expect: Expect) -> Write {
    Write::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        ttl,
        expect,
    }
}

mod conformance {
    use super::*;

    /// One fixed prefix for every run: each case works under its own unique key
    /// namespace and removes its keys, so the only thing left behind is the prefix's
    /// revision counter (one key, shared by all runs; it must never go back).
    async fn make() -> Option<StoreRef> {
        store_at(&url(), "multisession-test:")
            .await
            .map(StoreRef::new)
    }

    multisession::conformance_tests!(make);
}

/// The same suite with [`RedisConfig::combine_writes`]: every commit goes through the
/// combined call.
mod conformance_combined {
    use super::*;

    async fn make() -> Option<StoreRef> {
        let config = RedisConfig::new()
            .key_prefix("multisession-test:")
            .connect_timeout(Duration::from_secs(2))
            .combine_writes(true);
        match RedisStore::connect_with(&url(), config).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => service_unavailable("redis", &url(), e),
        }
    }

    multisession::conformance_tests!(make);
}

async fn combining_store(prefix: &str) -> Option<RedisStore> {
    let config = RedisConfig::new()
        .key_prefix(prefix)
        .connect_timeout(Duration::from_secs(2))
        .combine_writes(true);
    match RedisStore::connect_with(&url(), config).await {
        Ok(store) => Some(store),
        Err(e) => service_unavailable("redis", &url(), e),
    }
}

/// Commits that go in one combined call keep their own answers: one applied, one
/// refused by the server (its key holds another type: not written), one conflicting,
/// one creating a key; the refusal and the conflict change nothing for the others.
#[tokio::test(flavor = "current_thread")]
async fn combined_commits_keep_their_own_answers() {
    let prefix = unique_namespace();
    let Some(store) = combining_store(&prefix).await else {
        return;
    };
    for key in ["a", "c"] {
        let applied = store.apply(&[put(key, b"0", None, Expect::Absent)]).await;
        assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    }
    let a = store.read("a").await.unwrap().unwrap().revision;
    let c = store.read("c").await.unwrap().unwrap().revision;
    raw(&[b"SET", format!("{prefix}s:b").as_bytes(), b"not a hash"]).await;
    // On one thread all four are queued before the flight task runs, so they share one
    // call (the unit tests of `redis_combine` check the combining itself; this checks the
    // answers each commit gets from the real script).
    let batches = [
        [put("a", b"1", None, Expect::Revision(a))],
        [put("b", b"1", None, Expect::Revision(1))],
        [put("c", b"1", None, Expect::Revision(c + 5))],
        [put(
            "d",
            b"1",
            Some(Duration::from_secs(60)),
            Expect::Absent,
        )],
    ];
    let (applied, refused, conflict, created) = tokio::join!(
        store.apply(&batches[0]),
        store.apply(&batches[1]),
        store.apply(&batches[2]),
        store.apply(&batches[3]),
    );
    assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    match &refused[..] {
        [Err(error)] => assert!(
            !error.outcome_unknown(),
            "refused before any write: not written, {error}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(conflict[..], [Ok(Outcome::Conflict)]),
        "{conflict:?}"
    );
    assert!(matches!(created[..], [Ok(Outcome::Applied)]), "{created:?}");
    assert_eq!(store.read("a").await.unwrap().unwrap().revision, a + 1);
    assert_eq!(store.read("c").await.unwrap().unwrap().value, b"0");
    assert_eq!(store.read("d").await.unwrap().unwrap().value, b"1");
    let pttl = raw(&[b"PTTL", format!("{prefix}s:d").as_bytes()]).await;
    assert!(matches!(pttl, redis::Value::Int(ms) if ms > 0), "{pttl:?}");
    assert_eq!(
        raw(&[b"GET", format!("{prefix}s:b").as_bytes()]).await,
        redis::Value::BulkString(b"not a hash".to_vec())
    );
    let listed = store.list("", None, 10).await.unwrap();
    let keys: Vec<&str> = listed.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "c", "d"]);
    drop_prefix(&prefix).await;
}

/// Many handlers committing at once through combined calls: compare-and-set still
/// loses no increment (each conflict re-read and retried), on shared and own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_commits_lose_no_update_under_concurrency() {
    let prefix = unique_namespace();
    let Some(store) = combining_store(&prefix).await else {
        return;
    };
    let (tasks, rounds, shared) = (48, 20, 4);
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for r in 0..rounds {
                    for key in [format!("shared{}", (t + r) % shared), format!("own{t}")] {
                        loop {
                            let (count, expect) = match store.read(&key).await.unwrap() {
                                Some(record) => (
                                    std::str::from_utf8(&record.value)
                                        .unwrap()
                                        .parse::<u64>()
                                        .unwrap(),
                                    Expect::Revision(record.revision),
                                ),
                                None => (0, Expect::Absent),
                            };
                            let next = (count + 1).to_string();
                            let applied = store
                                .apply(&[put(&key, next.as_bytes(), None, expect)])
                                .await;
                            match applied[..] {
                                [Ok(Outcome::Applied)] => break,
                                [Ok(Outcome::Conflict)] => continue,
                                _ => panic!("{applied:?}"),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Duration::from_secs(60);
    for worker in workers {
        tokio::time::timeout(deadline, worker)
            .await
            .expect("no commit hangs")
            .unwrap();
    }
    let count = |key: String| {
        let store = store.clone();
        async move {
            let record = store.read(&key).await.unwrap().unwrap();
            std::str::from_utf8(&record.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    let mut total = 0;
    for k in 0..shared {
        total += count(format!("shared{k}")).await;
    }
    assert_eq!(
        total,
        (tasks * rounds) as u64,
        "every shared increment kept"
    );
    for t in 0..tasks {
        assert_eq!(count(format!("own{t}")).await, rounds as u64);
    }
    drop_prefix(&prefix).await;
}

#[tokio::test]
async fn s18_expired_values_read_as_missing_and_leave_the_index() {
    let prefix = unique_namespace();
    let Some(store) = store_at(&url(), &prefix).await else {
        return;
    };
    let ttl = Some(Duration::from_millis(150));
    store.write("short", b"v", ttl).await.unwrap();
    let applied = store
        .apply(&[put("batched", b"v", ttl, Expect::Absent)])
        .await;
    assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    store.write("forever", b"v", None).await.unwrap();
    // Redis holds the expiry itself: the data key has a PTTL.
    let pttl = raw(&[b"PTTL", format!("{prefix}s:short").as_bytes()]).await;
    assert!(
        matches!(pttl, redis::Value::Int(ms) if ms > 0 && ms <= 150),
        "{pttl:?}"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.read("short").await.unwrap(), None);
    let batch = store
        .read_many(&["short", "forever", "batched"])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, true, false]
    );
    // The two expired keys still sit in the index until swept.
    assert_eq!(store.sweep_expired().await.unwrap(), 2);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    let listed = store.list("", None, 10).await.unwrap();
    let keys: Vec<_> = listed.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["forever"]);
    drop_prefix(&prefix).await;
}

#[tokio::test]
async fn bad_stored_data_is_a_typed_error_not_a_panic() {
    let prefix = unique_namespace();
    let Some(store) = store_at(&url(), &prefix).await else {
        return;
    };
    // A hash without a revision, a revision that is not a number, a key of another type.
    let half = format!("{prefix}s:half");
    let _ = raw(&[b"HSET", half.as_bytes(), b"v", b"x"]).await;
    let bad = format!("{prefix}s:bad");
    let _ = raw(&[b"HSET", bad.as_bytes(), b"v", b"x", b"r", b"seven"]).await;
    let string = format!("{prefix}s:string");
    let _ = raw(&[b"SET", string.as_bytes(), b"x"]).await;

    for key in ["half", "bad"] {
        match store.read(key).await {
            Err(StoreError::Corrupt(what)) => eprintln!("{key}: {what}"),
            other => panic!("{key}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(
        store.read_many(&["half"]).await,
        Err(StoreError::Corrupt(_))
    ));
    match store.read("string").await {
        Err(StoreError::Backend(e)) => assert!(e.to_string().contains("redis read"), "{e}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    // A failed script (WRONGTYPE) is an error per write, never a panic or a false
    // "applied" or "conflict"; the foreign value is left alone.
    let results = store
        .apply(&[put("string", b"v", None, Expect::Absent)])
        .await;
    assert!(
        matches!(&results[..], [Err(StoreError::Backend(_))]),
        "{results:?}"
    );
    assert_eq!(
        raw(&[b"GET", string.as_bytes()]).await,
        redis::Value::BulkString(b"x".to_vec())
    );
    drop_prefix(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error_not_a_hang() {
    let config = RedisConfig::new()
        .connect_timeout(Duration::from_millis(500))
        .reconnect_attempts(1);
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect_with("redis://127.0.0.1:1", config),
    )
    .await
    .expect("connect hung past its timeout");
    match result {
        Err(StoreError::Backend(e)) => eprintln!("refused as expected: {e}"),
        Err(StoreError::Timeout(d)) => eprintln!("timed out as expected after {d:?}"),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    eprintln!("failed after {:?}", started.elapsed());
    assert!(RedisStore::connect("not a url").await.is_err());
}

/// A private `redis-server` on a free port, killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(PrivateRedis { child, port }),
            Err(e) => service_unavailable("redis-server binary", "PATH", e),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on {} did not start", self.port);
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(MultiSession)]
struct Counter {
    hits: u64,
}

#[derive(MultiSession)]
struct Mixed {
    hits: u64,
    local: u64,
}

/// The server dies mid-run: operations fail with typed errors within their timeouts (no
/// hang, no panic, no data invented), and once a server is back the same store works
/// again without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_after_the_server_restarts() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        if services_required() {
            panic!("redis-server is required for the outage test but not on PATH");
        }
        eprintln!("SKIPPED: redis-server not on PATH");
        return;
    }
    let port = free_port();
    let Some(server) = PrivateRedis::start(port) else {
        return;
    };
    server.ready().await;
    let config = RedisConfig::new()
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .reconnect_attempts(1);
    let store = RedisStore::connect_with(&server.url(), config)
        .await
        .expect("connect to the private server");
    let sessions = Counter::builder().default_store(store.clone()).build();
    let ctx = ChatContext::new(7);
    sessions
        .run(&ctx, async |s| {
            *s.hits().await? += 1;
            Ok::<_, multisession::Error>(())
        })
        .await
        .unwrap();

    server.stop();
    let started = Instant::now();
    let during = tokio::time::timeout(
        Duration::from_secs(20),
        sessions.run(&ctx, async |s| {
            *s.hits().await? += 1;
            Ok::<_, multisession::Error>(())
        }),
    )
    .await
    .expect("an operation on a dead server hung");
    let error = during.expect_err("an update succeeded on a dead server");
    let message = error.to_string();
    eprintln!("during the outage ({:?}): {message}", started.elapsed());
    assert!(
        message.contains("redis"),
        "the error names no store: {message}"
    );
    assert!(
        store.read("anything").await.is_err(),
        "a read on a dead server returned data"
    );
    // Fragments on other stores keep working meanwhile.
    let mixed = Mixed::builder()
        .hits(store.clone())
        .local(multisession::stores::MemoryStore::new())
        .build();
    let local = mixed
        .run(&ctx, async |s| {
            assert!(s.hits().await.is_err(), "the Redis fragment must fail");
            *s.local().await? += 1;
            Ok::<_, multisession::Error>(*s.local().await?)
        })
        .await
        .expect("the memory fragment works while Redis is down");
    assert_eq!(local, 1);

    // The server comes back (empty: it kept no data), on the same port.
    let server = PrivateRedis::start(port).expect("restart");
    server.ready().await;
    let mut recovered = false;
    for _ in 0..50 {
        let result = sessions
            .run(&ctx, async |s| {
                *s.hits().await? += 1;
                Ok::<_, multisession::Error>(())
            })
            .await;
        if result.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the store did not recover after the server came back"
    );
    assert_eq!(sessions.load(&ctx).await.unwrap().hits, 1);
    server.stop();
}

/// A batch is one script: one round trip, all or nothing, across keys.
#[tokio::test]
async fn batches_are_atomic_across_keys() {
    let prefix = unique_namespace();
    let Some(store) = store_at(&url(), &prefix).await else {
        return;
    };
    store.write("a", b"1", None).await.unwrap();
    let rev_a = store.read("a").await.unwrap().unwrap().revision;
    // The second write's precondition fails: the first must not be applied either.
    let results = store
        .apply(&[
            put("a", b"2", None, Expect::Revision(rev_a)),
            put("b", b"2", None, Expect::Revision(12345)),
        ])
        .await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Outcome::Conflict))),
        "{results:?}"
    );
    assert_eq!(store.read("a").await.unwrap().unwrap().value, b"1");
    assert_eq!(store.read("b").await.unwrap(), None);
    let results = store
        .apply(&[
            put("a", b"3", None, Expect::Revision(rev_a)),
            put("b", b"3", None, Expect::Absent),
        ])
        .await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
        "{results:?}"
    );
    drop_prefix(&prefix).await;
}

/// The lazy runtime's usual write (a compare-and-set put of an existing key) updates the
/// hash in place: the revision becomes the one read plus one, the revision counter and
/// the listing index are not touched; creates take the counter. A key's revisions still
/// never repeat (a re-created key starts above its old ones), data from earlier versions
/// (small revisions) updates in place, a stale revision is a conflict and a key of
/// another type an error that wrote nothing.
#[tokio::test]
async fn compare_and_set_puts_update_in_place_without_the_counter() {
    let prefix = unique_namespace();
    let Some(store) = store_at(&url(), &prefix).await else {
        return;
    };
    let counter = format!("{prefix}rev");
    let index = format!("{prefix}idx");
    let applied = store.apply(&[put("k", b"1", None, Expect::Absent)]).await;
    assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    let created = store.read("k").await.unwrap().unwrap().revision;
    assert_eq!(
        created % 1_000_000_000,
        0,
        "a create takes the counter: {created}"
    );
    let counter_after_create = raw(&[b"GET", counter.as_bytes()]).await;
    let index_after_create = raw(&[b"ZRANGE", index.as_bytes(), b"0", b"-1"]).await;

    let mut revision = created;
    for (i, ttl) in [None, Some(Duration::from_secs(60)), None]
        .into_iter()
        .enumerate()
    {
        let value = format!("in place {i}");
        let applied = store
            .apply_with_revisions(&[put("k", value.as_bytes(), ttl, Expect::Revision(revision))])
            .await;
        let [Ok((Outcome::Applied, Some(stored)))] = applied[..] else {
            panic!("{applied:?}");
        };
        assert_eq!(stored, revision + 1);
        let read = store.read("k").await.unwrap().unwrap();
        assert_eq!(
            (read.value.as_slice(), read.revision),
            (value.as_bytes(), stored)
        );
        let pttl = raw(&[b"PTTL", format!("{prefix}s:k").as_bytes()]).await;
        match ttl {
            Some(_) => assert!(matches!(pttl, redis::Value::Int(ms) if ms > 0), "{pttl:?}"),
            None => assert_eq!(pttl, redis::Value::Int(-1)),
        }
        revision = stored;
    }
    assert_eq!(
        raw(&[b"GET", counter.as_bytes()]).await,
        counter_after_create
    );
    assert_eq!(
        raw(&[b"ZRANGE", index.as_bytes(), b"0", b"-1"]).await,
        index_after_create
    );

    // A stale revision: a conflict, nothing written.
    let stale = store
        .apply(&[put("k", b"stale", None, Expect::Revision(created))])
        .await;
    assert!(matches!(stale[..], [Ok(Outcome::Conflict)]), "{stale:?}");
    assert_eq!(store.read("k").await.unwrap().unwrap().revision, revision);

    // Deleted and created again: above every revision the key had.
    store.delete("k").await.unwrap();
    store.write("k", b"again", None).await.unwrap();
    assert!(store.read("k").await.unwrap().unwrap().revision > revision);

    // A hash from an earlier version (revision from the old counter) updates in place.
    let old = format!("{prefix}s:old");
    let _ = raw(&[b"HSET", old.as_bytes(), b"v", b"x", b"r", b"17"]).await;
    let _ = raw(&[b"ZADD", index.as_bytes(), b"0", b"old"]).await;
    let applied = store
        .apply(&[put("old", b"y", None, Expect::Revision(17))])
        .await;
    assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    assert_eq!(store.read("old").await.unwrap().unwrap().revision, 18);

    // A batch of an update in place and a create, with the index or the counter broken
    // (so `ZADD` or `INCR` fails): an error, and no session written.
    let now = store.read("k").await.unwrap().unwrap();
    let batch = [
        put("k", b"batched", None, Expect::Revision(now.revision)),
        put("fresh", b"new", None, Expect::Absent),
    ];
    let saved_index = raw(&[b"ZRANGE", index.as_bytes(), b"0", b"-1"]).await;
    let saved_counter = raw(&[b"GET", counter.as_bytes()]).await;
    for (what, key, bad) in [
        ("index", &index, "not a sorted set"),
        ("counter", &counter, "seven"),
    ] {
        let _ = raw(&[b"DEL", key.as_bytes()]).await;
        let _ = raw(&[b"SET", key.as_bytes(), bad.as_bytes()]).await;
        let results = store.apply(&batch).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(e @ StoreError::Backend(_)) if !e.outcome_unknown())),
            "{what}: {results:?}"
        );
        assert_eq!(
            store.read("k").await.unwrap().as_ref(),
            Some(&now),
            "{what}"
        );
        assert_eq!(store.read("fresh").await.unwrap(), None, "{what}");
        let _ = raw(&[b"DEL", key.as_bytes()]).await;
    }
    let redis::Value::Array(members) = saved_index else {
        panic!("{saved_index:?}");
    };
    for member in members {
        let redis::Value::BulkString(member) = member else {
            continue;
        };
        let _ = raw(&[b"ZADD", index.as_bytes(), b"0", &member]).await;
    }
    let redis::Value::BulkString(last) = saved_counter else {
        panic!("{saved_counter:?}");
    };
    let _ = raw(&[b"SET", counter.as_bytes(), &last]).await;
    let results = store.apply(&batch).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
        "{results:?}"
    );

    // A key of another type: an error that says nothing was written.
    let string = format!("{prefix}s:string");
    let _ = raw(&[b"SET", string.as_bytes(), b"x"]).await;
    let results = store
        .apply(&[put("string", b"v", None, Expect::Revision(1))])
        .await;
    assert!(
        matches!(&results[..], [Err(e @ StoreError::Backend(_))] if !e.outcome_unknown()),
        "{results:?}"
    );
    assert_eq!(
        raw(&[b"GET", string.as_bytes()]).await,
        redis::Value::BulkString(b"x".to_vec())
    );
    drop_prefix(&prefix).await;
}

/// Whether `redis-server` can be started here; a visible skip (or a failure under
/// `MULTISESSION_REQUIRE_SERVICES=1`) when not.
fn redis_server_available() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    if services_required() {
        panic!("redis-server is required for this test but not on PATH");
    }
    eprintln!("SKIPPED: redis-server not on PATH");
    false
}

/// Sends `signal` (`-STOP`, `-CONT`) to the private server.
fn signal(server: &PrivateRedis, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}

/// The private server's store in the lost-answer tests: a namespace of its own, a quick
/// connect timeout, a response timeout longer than the tests' pauses, one reconnect.
fn lost_answer_config() -> RedisConfig {
    RedisConfig::new()
        .key_prefix(unique_namespace())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(10))
        .reconnect_attempts(1)
}

/// Rule S26 on Redis: a write whose request reached the server but whose answer was
/// lost (the server is paused with the script in its input buffer, then killed) is an
/// unknown outcome, never "not written"; a write that cannot be sent at all (the
/// connection is refused) is "not written". A script the server forgot (`SCRIPT
/// FLUSH`) is loaded and run again, transparently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s26_a_lost_answer_is_unknown_a_refused_connection_is_not_written() {
    if !redis_server_available() {
        return;
    }
    let port = free_port();
    let Some(server) = PrivateRedis::start(port) else {
        return;
    };
    server.ready().await;
    let store = RedisStore::connect_with(&server.url(), lost_answer_config())
        .await
        .expect("connect to the private server");
    let results = store.apply(&[put("k", b"1", None, Expect::Absent)]).await;
    assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");

    // The server forgets the script: NOSCRIPT, loaded again, applied once.
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw_conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw_conn)
        .await
        .unwrap();
    let rev = store.read("k").await.unwrap().unwrap().revision;
    let results = store
        .apply(&[put("k", b"2", None, Expect::Revision(rev))])
        .await;
    assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
    assert_eq!(store.read("k").await.unwrap().unwrap().value, b"2");
    drop(raw_conn);

    // Paused: the request is sent and sits unanswered; then the server dies.
    signal(&server, "-STOP");
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.apply(&[put("k", b"3", None, Expect::Any)]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "a paused server answered");
    server.stop();
    let results = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("a write to a killed server hung")
        .unwrap();
    eprintln!("answer lost: {results:?}");
    assert!(
        matches!(&results[..], [Err(StoreError::Unknown(_))]),
        "a write whose answer was lost must be unknown: {results:?}"
    );

    // Nothing listens any more: the write cannot be sent, so it did not land.
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        store.apply(&[put("k", b"4", None, Expect::Any)]),
    )
    .await
    .expect("a write to a dead server hung");
    eprintln!("refused: {results:?}");
    assert!(
        matches!(&results[..], [Err(e @ StoreError::Backend(_))] if !e.outcome_unknown()),
        "a write that could not be sent must be 'not written': {results:?}"
    );
}

/// The same with combined writes: the server forgets the script (`NOSCRIPT`, sent again
/// with its source, applied once), then is paused with one combined call in the air and
/// more commits queued behind it, then killed. The call in the air is unknown; nothing is
/// reported applied; nothing hangs; once nothing listens a commit is "not written".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s26_combined_writes_lost_answers_are_unknown() {
    if !redis_server_available() {
        return;
    }
    let port = free_port();
    let Some(server) = PrivateRedis::start(port) else {
        return;
    };
    server.ready().await;
    let store = RedisStore::connect_with(&server.url(), lost_answer_config().combine_writes(true))
        .await
        .expect("connect to the private server");
    for key in ["a", "b", "c"] {
        let results = store.apply(&[put(key, b"1", None, Expect::Absent)]).await;
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw_conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw_conn)
        .await
        .unwrap();
    drop(raw_conn);
    let rev = store.read("a").await.unwrap().unwrap().revision;
    let results = store
        .apply(&[put("a", b"2", None, Expect::Revision(rev))])
        .await;
    assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
    assert_eq!(store.read("a").await.unwrap().unwrap().revision, rev + 1);

    signal(&server, "-STOP");
    let commit = |key: &'static str, revision: u64| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .apply(&[put(key, b"3", None, Expect::Revision(revision))])
                .await
        })
    };
    let in_the_air = commit("a", rev + 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = [commit("b", 1), commit("c", 1)];
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!in_the_air.is_finished(), "a paused server answered");
    server.stop();
    let bound = Duration::from_secs(15);
    let results = tokio::time::timeout(bound, in_the_air)
        .await
        .expect("a combined write to a killed server hung")
        .unwrap();
    assert!(
        matches!(&results[..], [Err(StoreError::Unknown(_))]),
        "the call in the air lost its answer: unknown, {results:?}"
    );
    for task in queued {
        let results = tokio::time::timeout(bound, task)
            .await
            .expect("a queued combined write hung")
            .unwrap();
        assert!(
            matches!(&results[..], [Err(_)]),
            "nothing can have been applied: {results:?}"
        );
    }
    let results = tokio::time::timeout(
        bound,
        store.apply(&[put("c", b"4", None, Expect::Revision(1))]),
    )
    .await
    .expect("a combined write to a dead server hung");
    assert!(
        matches!(&results[..], [Err(e @ StoreError::Backend(_))] if !e.outcome_unknown()),
        "a write that could not be sent must be 'not written': {results:?}"
    );
}

/// The apply script checks everything a write can fail on before its first write
/// (Redis does not roll a failed script back): a batch that fails on the index's or the
/// counter's type writes nothing at all, and is reported as not written. A TTL too long
/// for `PEXPIRE` is capped instead of failing halfway.
#[tokio::test]
async fn s26_a_failing_script_writes_nothing() {
    let prefix = unique_namespace();
    let Some(store) = store_at(&url(), &prefix).await else {
        return;
    };
    store.write("a", b"1", None).await.unwrap();
    let before = store.read("a").await.unwrap().unwrap();
    let counter = format!("{prefix}rev");
    let index = format!("{prefix}idx");
    let counter_before = raw(&[b"GET", counter.as_bytes()]).await;
    let batch = [
        put("b", b"2", None, Expect::Absent),
        put("a", b"2", None, Expect::Any),
        Write::Delete {
            key: "a".into(),
            expect: Expect::Any,
        },
    ];
    let check_nothing_written = async |what: &str| {
        let results = store.apply(&batch).await;
        eprintln!("{what}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(e @ StoreError::Backend(_)) if !e.outcome_unknown())),
            "{what}: {results:?}"
        );
        let b_key = format!("{prefix}s:b");
        assert_eq!(
            raw(&[b"EXISTS", b_key.as_bytes()]).await,
            redis::Value::Int(0),
            "{what}: a write of the failed batch landed"
        );
        assert_eq!(
            store.read("a").await.unwrap().as_ref(),
            Some(&before),
            "{what}"
        );
    };

    // The listing index is not a sorted set (ZADD would fail after the first writes).
    let _ = raw(&[b"DEL", index.as_bytes()]).await;
    let _ = raw(&[b"SET", index.as_bytes(), b"not a sorted set"]).await;
    check_nothing_written("index of another type").await;
    assert_eq!(raw(&[b"GET", counter.as_bytes()]).await, counter_before);
    let _ = raw(&[b"DEL", index.as_bytes()]).await;
    let _ = raw(&[b"ZADD", index.as_bytes(), b"0", b"a"]).await;

    // The counter is not a number, or not a string (INCR would fail after the first
    // writes).
    let _ = raw(&[b"SET", counter.as_bytes(), b"seven"]).await;
    check_nothing_written("counter not a number").await;
    let _ = raw(&[b"DEL", counter.as_bytes()]).await;
    let _ = raw(&[b"HSET", counter.as_bytes(), b"x", b"1"]).await;
    check_nothing_written("counter of another type").await;
    let _ = raw(&[b"DEL", counter.as_bytes()]).await;
    let redis::Value::BulkString(last) = &counter_before else {
        panic!("no revision counter after a write: {counter_before:?}");
    };
    let _ = raw(&[b"SET", counter.as_bytes(), last]).await;

    // Everything back in place: the same batch applies (its precondition holds).
    let results = store.apply(&batch).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
        "{results:?}"
    );
    // A TTL past what PEXPIRE takes is capped, not an error after the first writes.
    let results = store
        .apply(&[
            put("long", b"v", Some(Duration::MAX), Expect::Any),
            put(
                "longer",
                b"v",
                Some(Duration::from_secs(u64::MAX / 1000)),
                Expect::Any,
            ),
        ])
        .await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
        "{results:?}"
    );
    let pttl = raw(&[b"PTTL", format!("{prefix}s:long").as_bytes()]).await;
    assert!(matches!(pttl, redis::Value::Int(ms) if ms > 0), "{pttl:?}");
    drop_prefix(&prefix).await;
}

/// The one failure the script cannot check before writing: an ACL that allows some of
/// its write commands but not `PEXPIRE`. The batch is then applied in part, and the
/// error says the outcome is unknown, never "not written".
#[tokio::test]
async fn s26_a_write_failing_halfway_is_unknown() {
    if !redis_server_available() {
        return;
    }
    let port = free_port();
    let Some(server) = PrivateRedis::start(port) else {
        return;
    };
    server.ready().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "halfway", "on", ">pw", "~*", "&*", "+@all", "-pexpire",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://halfway:pw@127.0.0.1:{port}");
    let store = RedisStore::connect_with(&url, RedisConfig::new().key_prefix("t:"))
        .await
        .expect("connect as the restricted user");
    let results = store
        .apply(&[put("k", b"v", Some(Duration::from_secs(60)), Expect::Any)])
        .await;
    eprintln!("{results:?}");
    assert!(
        matches!(&results[..], [Err(StoreError::Unknown(_))]),
        "{results:?}"
    );
    // It did land in part (without its expiry): "not written" would have been a lie.
    assert!(store.read("k").await.unwrap().is_some());
    // Without a TTL the batch needs no PEXPIRE: applied.
    let results = store.apply(&[put("j", b"v", None, Expect::Any)]).await;
    assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
    server.stop();
}
