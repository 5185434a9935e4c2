//! The Redis store on a real Redis Cluster: the conformance suite, sessions spread over
//! every master, a commit split over slots, and failover (a master killed mid-run) with and
//! without waiting for replicas.
//!
//! Needs a cluster: `MULTISESSION_REDIS_CLUSTER_URLS` (comma-separated node URLs, default
//! `redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002`), as started by
//! `tests/scripts/redis_cluster.sh start DIR 7000` (`.ci/run` does). Without one the tests
//! skip visibly, or fail under `MULTISESSION_REQUIRE_SERVICES=1`. The failover tests start
//! clusters of their own (same script, ports of their own) and kill them at the end, so
//! they never disturb the shared one. Every test uses its own key prefix and deletes its
//! keys on every master.
#![cfg(feature = "redis")]

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use multisession::{
    ChatContext, Config, Error, MultiSession, OnConflict,
    store::{Expect, Store, StoreRef, Write},
    stores::{RedisConfig, RedisStore},
    testing::{service_unavailable, stores::redis_cluster_urls, unique_namespace},
};

async fn connect(urls: &[String], config: RedisConfig) -> Option<RedisStore> {
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = config.connect_timeout(Duration::from_secs(2));
    match RedisStore::connect_cluster(&nodes, config).await {
        Ok(store) => Some(store),
        Err(e) => service_unavailable("redis cluster", &urls.join(","), e),
    }
}

async fn cluster_store(prefix: &str) -> Option<RedisStore> {
    connect(&redis_cluster_urls(), RedisConfig::new().key_prefix(prefix)).await
}

/// `host:port` of every master of the cluster one of `urls` belongs to.
async fn masters(urls: &[String]) -> Vec<String> {
    for url in urls {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let Ok(nodes) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            continue;
        };
        return nodes
            .lines()
            .filter(|line| {
                let flags = line.split(' ').nth(2).unwrap_or("");
                flags.contains("master") && !flags.contains("fail")
            })
            .filter_map(|line| line.split(' ').nth(1))
            .map(|addr| addr.split('@').next().unwrap_or(addr).to_owned())
            .collect();
    }
    Vec::new()
}

/// A plain connection to one node.
async fn node(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}"))
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// The keys of a store under `prefix` on the node at `addr` (`{tag}prefix...`).
async fn keys_on(addr: &str, prefix: &str, what: &str) -> Vec<Vec<u8>> {
    let mut conn = node(addr).await;
    // Prefixes here are letters, digits, `-` and `:`: no glob characters.
    redis::cmd("KEYS")
        .arg(format!("{{*}}{prefix}{what}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

/// Deletes every key under `prefix` on every master of the cluster of `urls`.
async fn drop_prefix(urls: &[String], prefix: &str) {
    for addr in masters(urls).await {
        let keys = keys_on(&addr, prefix, "").await;
        let mut conn = node(&addr).await;
        // One `DEL` per key (keys of several slots), pipelined.
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("DEL").arg(key).ignore();
            }
            let _: Result<(), _> = pipe.query_async(&mut conn).await;
        }
    }
}

/// Removes the keys of a prefix when dropped (also when the test fails).
struct Cleanup {
    urls: Vec<String>,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (urls, prefix) = (self.urls.clone(), self.prefix.clone());
        // Outside the test's runtime (which may be gone, or be current-thread).
        let _ = std::thread::spawn(move || {
            multisession::testing::block_on(drop_prefix(&urls, &prefix));
        })
        .join();
    }
}

fn cleanup(urls: &[String], prefix: &str) -> Cleanup {
    Cleanup {
        urls: urls.to_vec(),
        prefix: prefix.to_owned(),
    }
}

mod conformance {
    use super::*;

    /// One fixed prefix for every run: each case works under its own unique key
    /// namespace and removes its keys; what stays are the buckets' revision counters.
    async fn make() -> Option<StoreRef> {
        cluster_store("multisession-cluster-test:")
            .await
            .map(StoreRef::new)
    }

    multisession::conformance_tests!(make);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_sessions_spread_over_every_master_and_list_in_order() {
    let urls = redis_cluster_urls();
    let prefix = format!("ms-cl:{}:", unique_namespace());
    let Some(store) = cluster_store(&prefix).await else {
        return;
    };
    let _cleanup = cleanup(&urls, &prefix);
    assert!(
        !store.capabilities().atomic_batch,
        "a cluster store splits batches per bucket: it must not claim atomic batches"
    );
    const SESSIONS: usize = 100_000;
    let writing = Instant::now();
    for chunk in 0..SESSIONS / 1000 {
        let batch: Vec<Write> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| Write::Put {
                key: format!("count:{i:06}"),
                value: i.to_string().into_bytes(),
                ttl: None,
                expect: Expect::Absent,
            })
            .collect();
        for result in store.apply(&batch).await {
            result.expect("a batch write on the cluster");
        }
    }
    println!(
        "{SESSIONS} sessions written in batches of 1000: {:?}",
        writing.elapsed()
    );
    let masters = masters(&urls).await;
    assert_eq!(
        masters.len(),
        3,
        "the test cluster has 3 masters: {masters:?}"
    );
    let mut per_master = Vec::new();
    for addr in &masters {
        per_master.push(keys_on(addr, &prefix, "s:").await.len());
    }
    println!("{SESSIONS} sessions per master: {per_master:?}");
    assert_eq!(per_master.iter().sum::<usize>(), SESSIONS);
    for (addr, n) in masters.iter().zip(&per_master) {
        // An even share is 33.3 %; the 256 buckets are spread evenly over the slots.
        assert!(
            *n > SESSIONS / 4,
            "master {addr} holds only {n} of {SESSIONS} sessions: {per_master:?}"
        );
    }
    // Listing merges every bucket: in key order, each key once.
    let mut cursor: Option<String> = None;
    let mut seen = 0usize;
    let mut last: Option<String> = None;
    let listing = Instant::now();
    loop {
        let page = store
            .list("count:", cursor.as_deref(), 1000)
            .await
            .expect("list");
        for (key, record) in &page.entries {
            assert_eq!(key, &format!("count:{seen:06}"), "listing out of order");
            assert_eq!(record.value, seen.to_string().into_bytes());
            assert!(last.as_ref().is_none_or(|l| l < key));
            last = Some(key.clone());
            seen += 1;
        }
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, SESSIONS);
    let listed = listing.elapsed();
    let counting = Instant::now();
    assert_eq!(store.count("count:").await.expect("count"), SESSIONS as u64);
    println!(
        "listing {SESSIONS} in pages of 1000: {listed:?}; count(): {:?}",
        counting.elapsed()
    );
    // A page of 100 from the middle.
    let page = store
        .list("count:", Some("count:049999"), 100)
        .await
        .expect("list");
    let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<String> = (50_000..50_100).map(|i| format!("count:{i:06}")).collect();
    assert_eq!(keys, expected);
}

#[derive(MultiSession)]
struct Pair {
    a: u64,
    b: u64,
}

/// A commit of two fragments in two buckets (two slots, here on different masters) is
/// split; concurrent updates re-run on conflicts, and the two never drift apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_split_over_slots_lands_whole_under_contention() {
    let urls = redis_cluster_urls();
    let prefix = format!("ms-cl:{}:", unique_namespace());
    let Some(store) = cluster_store(&prefix).await else {
        return;
    };
    let _cleanup = cleanup(&urls, &prefix);
    let sessions = Pair::builder().default_store(store.clone()).build();
    let chat = 4242;
    const TASKS: u64 = 4;
    const PER_TASK: u64 = 100;
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    sessions
                        .run(&ChatContext::new(chat), async |s| {
                            *s.a().await? += 1;
                            *s.b().await? += 1;
                            Ok::<_, Error>(())
                        })
                        .await
                        .expect("an update on the cluster");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    let (a, b) = sessions
        .run(&ChatContext::new(chat), async |s| {
            Ok::<_, Error>((*s.a().await?, *s.b().await?))
        })
        .await
        .expect("read back");
    assert_eq!((a, b), (TASKS * PER_TASK, TASKS * PER_TASK));
    // The two fragments' keys really are in different slots.
    let masters = masters(&urls).await;
    let mut found = Vec::new();
    for addr in &masters {
        for key in keys_on(addr, &prefix, "s:").await {
            found.push((addr.clone(), String::from_utf8_lossy(&key).into_owned()));
        }
    }
    assert_eq!(found.len(), 2, "{found:?}");
    let tag = |key: &str| key[..key.find('}').expect("a tag") + 1].to_owned();
    assert_ne!(tag(&found[0].1), tag(&found[1].1), "{found:?}");
}

// ---------------------------------------------------------------------------------------
// Failover: a private cluster, one master killed mid-run
// ---------------------------------------------------------------------------------------

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/redis_cluster.sh")
}

/// A cluster of this test's own, stopped (every node SIGKILLed, files removed) on drop.
struct PrivateCluster {
    dir: PathBuf,
    base: u16,
}

impl PrivateCluster {
    /// `None` (after a skip message, or a panic under `MULTISESSION_REQUIRE_SERVICES=1`)
    /// when `redis-server` or `redis-cli` is missing.
    fn start() -> Option<PrivateCluster> {
        static STARTED: AtomicU16 = AtomicU16::new(0);
        for _ in 0..5 {
            // Ports of our own: 6 in a row in 21000..29000, away from 6379 and the shared
            // 7000..7005; a different range for each cluster this process starts.
            let n = STARTED.fetch_add(1, Ordering::SeqCst);
            let slot = (std::process::id() % 800) as u16;
            let base = 21_000 + (slot + n * 137) % 800 * 10;
            let dir = std::env::temp_dir().join(format!("ms-cluster-{}", unique_namespace()));
            let output = Command::new("bash")
                .arg(script())
                .arg("start")
                .arg(&dir)
                .arg(base.to_string())
                .output()
                .expect("run the cluster script");
            match output.status.code() {
                Some(0) => return Some(PrivateCluster { dir, base }),
                Some(3) => {
                    let why = String::from_utf8_lossy(&output.stderr).into_owned();
                    return service_unavailable("redis cluster (private)", "redis-server", why);
                }
                _ => {
                    let _ = Command::new("bash")
                        .arg(script())
                        .arg("stop")
                        .arg(&dir)
                        .status();
                    eprintln!(
                        "cluster on {base} did not start: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        panic!("a private cluster did not start after 5 attempts");
    }

    fn urls(&self) -> Vec<String> {
        (0..3)
            .map(|i| format!("redis://127.0.0.1:{}", self.base + i))
            .collect()
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("run the cluster script");
        assert!(
            output.status.success(),
            "redis_cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[derive(MultiSession)]
struct Hits {
    hits: u64,
}

/// What a failover run measured.
struct FailoverReport {
    acknowledged: u64,
    lost: u64,
    errors: u64,
    slowest_error: Duration,
    recovered_after: Duration,
}

/// Increments 60 chats round-robin, kills the master at `base`, keeps going until 200
/// updates after the failover succeeded, then compares what was acknowledged with what
/// is stored.
async fn failover_run(wait: bool) -> Option<FailoverReport> {
    let cluster = PrivateCluster::start()?;
    let urls = cluster.urls();
    let mut config = RedisConfig::new()
        .key_prefix("failover:")
        .response_timeout(Duration::from_millis(500));
    if wait {
        config = config.wait_for_replicas(1, Duration::from_millis(500));
    }
    let store = connect(&urls, config).await.expect("the private cluster");
    let runtime = Config::new()
        .op_timeout(Some(Duration::from_secs(1)))
        .on_conflict(OnConflict::RetryFor {
            budget: Duration::from_secs(2),
        });
    let sessions = Hits::builder().default_store(store).config(runtime).build();
    const CHATS: i64 = 60;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..CHATS).map(|_| AtomicU64::new(0)).collect());
    let mut errors = 0u64;
    let mut slowest_error = Duration::ZERO;
    let mut killed_at: Option<Instant> = None;
    let mut recovered: Option<Duration> = None;
    let mut after_recovery = 0u64;
    let mut failed = std::collections::HashSet::new();
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n: i64 = 0;
    while after_recovery < 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery within 60 s of the kill ({errors} errors)"
        );
        if n == 300 {
            cluster.run(&["kill", &cluster.base.to_string()]);
            killed_at = Some(Instant::now());
        }
        let chat = n % CHATS;
        n += 1;
        let started = Instant::now();
        let result = sessions
            .run(&ChatContext::new(chat + 1), async |s| {
                *s.hits().await? += 1;
                Ok::<_, Error>(())
            })
            .await;
        match result {
            Ok(()) => {
                acked[chat as usize].fetch_add(1, Ordering::SeqCst);
                if let Some(at) = killed_at {
                    // Recovered: a chat of the dead master's slots works again.
                    if recovered.is_none() && failed.contains(&chat) {
                        recovered = Some(at.elapsed());
                    }
                    if recovered.is_some() {
                        after_recovery += 1;
                    }
                }
            }
            Err(error) => {
                assert!(
                    killed_at.is_some(),
                    "an update failed before the kill: {error}"
                );
                assert!(
                    recovered.is_none(),
                    "an update failed after the failover was over: {error}"
                );
                failed.insert(chat);
                errors += 1;
                slowest_error = slowest_error.max(started.elapsed());
                // A typed error within the bounds (op timeout, re-run budget).
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "an update took {:?} to fail: {error}",
                    started.elapsed()
                );
                if wait && !restarted {
                    // A promoted replica has no replica of its own: WAIT can only
                    // succeed once the dead node is back, as its replica. Restarted only
                    // once the replica took over (before, it would come back as the
                    // master and no failover would happen).
                    let masters = cluster.run(&["masters"]);
                    let ports: Vec<&str> = masters.split_whitespace().collect();
                    let base = cluster.base.to_string();
                    if ports.len() == 3 && !ports.contains(&base.as_str()) {
                        cluster.run(&["restart", &base]);
                        restarted = true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if killed_at.is_some() && errors == 0 && n > 2000 {
            // No update ever touched the dead master's slots: impossible with 60 chats.
            panic!("2000 updates after the kill and no error");
        }
    }
    // What is stored now, against what was acknowledged.
    let mut lost = 0;
    let mut acknowledged = 0;
    for chat in 0..CHATS {
        let stored = sessions
            .run(&ChatContext::new(chat + 1), async |s| {
                Ok::<_, Error>(*s.hits().await?)
            })
            .await
            .expect("read back after the failover");
        let acked = acked[chat as usize].load(Ordering::SeqCst);
        acknowledged += acked;
        // More than acknowledged is allowed (an update reported unknown that landed).
        lost += acked.saturating_sub(stored);
    }
    Some(FailoverReport {
        acknowledged,
        lost,
        errors,
        slowest_error,
        recovered_after: recovered.expect("recovered"),
    })
}

fn print(what: &str, r: &FailoverReport) {
    println!(
        "failover {what}: acknowledged={} lost={} errors_during_gap={} slowest_error={:?} recovered_after={:?}",
        r.acknowledged, r.lost, r.errors, r.slowest_error, r.recovered_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_waiting_recovers_and_counts_what_it_lost() {
    let Some(report) = failover_run(false).await else {
        return;
    };
    print("without wait_for_replicas", &report);
    assert!(report.errors > 0, "the kill was not noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_waiting_for_a_replica_loses_no_acknowledged_update() {
    let Some(report) = failover_run(true).await else {
        return;
    };
    print("with wait_for_replicas(1)", &report);
    assert!(report.errors > 0, "the kill was not noticed");
    assert_eq!(
        report.lost, 0,
        "acknowledged updates were lost although each waited for a replica"
    );
}

#[test]
fn the_cluster_script_refuses_bad_arguments() {
    let status = |args: &[&str]| {
        Command::new("bash")
            .arg(script())
            .args(args)
            .output()
            .expect("run the script")
            .status
            .code()
    };
    assert_eq!(status(&[]), Some(2));
    assert_eq!(status(&["start", "relative/dir", "7000"]), Some(2));
    assert_eq!(status(&["start", "/tmp/x", "80"]), Some(2));
    assert_eq!(status(&["kill", "/", "7000"]), Some(2));
}
