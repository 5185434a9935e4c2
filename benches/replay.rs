//! The replay benchmark: a generated bot workload through the example pizza bot, in lazy
//! mode, strict mode and hand-written baselines, every ratio measured in the same run and
//! printed beside its target (issue 11), with the spread over rounds and the machine's
//! load.
//!
//! ```sh
//! cargo bench --bench replay --all-features    # everything (Redis, PostgreSQL if reachable)
//! cargo bench -p multisession --bench replay   # default features: memory and SQLite
//! BENCH_ONLY=cache cargo bench --bench replay --all-features   # only the cache part
//! ```
//!
//! Workload (fixed seed): 100 000 updates over 1 000 chats and 5 000 users; 70% group
//! chatter the bot ignores, 20% `/pizza` (reads and changes the per-chat fragment), 10%
//! `/start` (only reads the per-user settings). The store parts replay shorter streams
//! (real I/O per operation) of the same mix.
//!
//! Parts, in order (`BENCH_ONLY=memory,sqlite,redis,postgres,cache` picks some):
//!
//! 1. **memory** (`memory.rs`): operation counts against the oracle minimum; lazy and
//!    strict against the same bot written by hand on a `Mutex<HashMap<String, Vec<u8>>>`
//!    with serde_json (`hand.rs`), and against the lean map of earlier runs; per update
//!    kind; allocations per update (a counting global allocator).
//! 2. **stores** (`stores.rs`, `sql.rs`): on SQLite, Redis and PostgreSQL, operation
//!    counts, strict batching, lazy and strict against the store's client called by hand
//!    ("direct client"), and on SQLite and PostgreSQL against hand-written `rusqlite` and
//!    `tokio-postgres` code (item 6).
//! 3. **Redis item 1** (`redis.rs`): `redis-benchmark`, its in-bench equivalent, a
//!    hand-written `redis` crate bot sequential and with 64 and 256 workers, the server's
//!    time per write (`INFO commandstats`) and its CPU (`/proc`).
//! 4. **cache** (`cache.rs`): the revision-checked cache on Redis and PostgreSQL.
//!
//! Then a summary of every ratio beside its target.
//!
//! The store parts run in one task spawned on a multi-threaded tokio runtime (what a bot's
//! update handlers get from `#[tokio::main]`); `BENCH_STORES_TASK=main` runs them in
//! `block_on` on the main thread, `BENCH_RUNTIME=current_thread` on a current-thread
//! runtime.
//!
//! Environment: `MULTISESSION_REDIS_URL`, `MULTISESSION_POSTGRES_URL` (loopback defaults);
//! `BENCH_UPDATES` (memory stream, 100 000), `BENCH_ROUNDS` (memory rounds, 7);
//! `BENCH_STORE_UPDATES` (5 000), `BENCH_STORE_ROUNDS` (9); `BENCH_REDIS_UPDATES`
//! (sequential, 20 000), `BENCH_REDIS_CONCURRENT_UPDATES` (100 000), `BENCH_REDIS_GETSET`
//! (requests per command, 10 000), `BENCH_REDIS_ROUNDS` (5); `BENCH_CACHE_UPDATES`
//! (100 000), `BENCH_CACHE_ROUNDS` (3); `BENCH_RUNTIME=current_thread`,
//! `BENCH_STORES_TASK=main` for the store parts; `BENCH_PROFILE=...` loops one kind of
//! work for a profiler (see `main`).

#[path = "../examples/common/pizza_bot.rs"]
#[allow(dead_code)]
mod pizza_bot;

#[path = "replay/cache.rs"]
#[cfg(feature = "cache")]
mod cache;
#[path = "replay/hand.rs"]
mod hand;
#[path = "replay/memory.rs"]
mod memory;
#[cfg(feature = "redis")]
#[path = "replay/redis.rs"]
mod redis;
#[path = "replay/report.rs"]
mod report;
#[path = "replay/sql.rs"]
mod sql;
#[path = "replay/stores.rs"]
mod stores;
#[path = "replay/workload.rs"]
mod workload;

use std::time::Instant;

use multisession::{
    MultiSession, Sessions, keys,
    store::StoreRef,
    stores::{Counts, MemoryStore},
};
use pizza_bot::{BotSession, Input, Pizza, Settings, handle, handle_strict};
use workload::{Update, workload};

#[global_allocator]
static ALLOCATOR: report::CountingAlloc = report::CountingAlloc;

// ---------------------------------------------------------------------------------------
// Lazy and strict mode

async fn run_lazy(sessions: &Sessions<BotSession>, updates: &[Update]) -> usize {
    let mut replies = 0;
    for update in updates {
        let reply = sessions
            .run(&update.ctx, |s| handle(s, Input::Text(update.text)))
            .await
            .expect("lazy update");
        replies += usize::from(reply.is_some());
    }
    replies
}

async fn run_strict(sessions: &Sessions<BotSession>, updates: &[Update]) -> usize {
    let mut replies = 0;
    for update in updates {
        let mut data = sessions.load(&update.ctx).await.expect("strict load");
        let reply = handle_strict(&mut data, Input::Text(update.text));
        data.save().await.expect("strict save");
        replies += usize::from(reply.is_some());
    }
    replies
}

// ---------------------------------------------------------------------------------------
// TTL costs no operation

#[derive(MultiSession)]
struct TimedBot {
    #[session(ttl = "1h")]
    pizza: Pizza,
    #[session(key = keys::user, initial = Settings::english, ttl = "1h")]
    settings: Settings,
}

async fn run_timed(sessions: &Sessions<TimedBot>, updates: &[Update]) {
    for update in updates {
        sessions
            .run(&update.ctx, async |s| {
                match update.text {
                    "/pizza" => s.pizza().await?.count += 1,
                    "/start" => drop(s.settings().await?),
                    _ => {}
                }
                Ok::<_, multisession::Error>(())
            })
            .await
            .expect("ttl update");
    }
}

// ---------------------------------------------------------------------------------------
// Operation tables

fn ops_row(mode: &str, c: Counts, updates: usize, minimum: Counts) {
    let per = |n: u64| n as f64 / updates as f64;
    println!(
        "| {mode:<22} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>11.3} | {:>7.2}× |",
        per(c.reads),
        per(c.writes),
        per(c.deletes),
        per(c.operations()),
        per(c.round_trips()),
        c.operations() as f64 / minimum.operations() as f64,
    );
}

fn ops_header() {
    println!(
        "| mode                   | reads/u  | writes/u | deletes/u| ops/u    | round trips/u | vs minimum |"
    );
    println!(
        "|------------------------|----------|----------|----------|----------|-------------|-----------|"
    );
}

// ---------------------------------------------------------------------------------------
// Parts

/// Whether `part` runs: all do unless `BENCH_ONLY` lists some.
fn runs(part: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) => only.split(',').any(|p| p.trim() == part),
        Err(_) => true,
    }
}

#[allow(unused_variables)]
async fn stores_part() {
    let n = report::env_usize("BENCH_STORE_UPDATES", 5_000);
    let updates = workload(n, 100, 500);

    if runs("sqlite") {
        let dir = std::env::temp_dir().join(format!("multisession-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = multisession::stores::SqliteStore::open(dir.join("bench.db"))
            .await
            .expect("open sqlite");
        let hand = stores::Hand::Sqlite(sql::SqliteHand::open(&dir.join("hand.db")).await);
        stores::store_part(
            "SQLite (file, WAL)",
            StoreRef::new(store),
            &updates,
            Some(&hand),
        )
        .await;
        drop(hand);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "redis")]
    if runs("redis") || runs("cache") {
        let url = std::env::var("MULTISESSION_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let config = multisession::stores::RedisConfig::new().key_prefix("multisession-bench:");
        match multisession::stores::RedisStore::connect_with(&url, config).await {
            Ok(store) => {
                if runs("redis") {
                    stores::store_part(
                        "Redis (loopback)",
                        StoreRef::new(store.clone()),
                        &updates,
                        None,
                    )
                    .await;
                    redis::redis_part(&url, store.clone()).await;
                }
                #[cfg(feature = "cache")]
                if runs("cache") {
                    cache::cache_part("Redis (loopback)", StoreRef::new(store)).await;
                }
                #[cfg(not(feature = "cache"))]
                if runs("cache") {
                    println!("## Redis cache part: SKIPPED, built without the `cache` feature\n");
                }
            }
            Err(e) => {
                println!("## Redis: SKIPPED, {url} unreachable: {e}\n");
                report::skipped("Redis (every Redis ratio)", &format!("{url} unreachable"));
            }
        }
    }
    #[cfg(not(feature = "redis"))]
    report::skipped(
        "Redis (every Redis ratio)",
        "built without the `redis` feature",
    );

    #[cfg(feature = "postgres")]
    if runs("postgres") || runs("cache") {
        let url = std::env::var("MULTISESSION_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let config = multisession::stores::PostgresConfig::new().table("multisession_bench");
        match multisession::stores::PostgresStore::connect_with(&url, config).await {
            Ok(store) => {
                if runs("postgres") {
                    match sql::PgHand::connect(&url).await {
                        Ok(hand) => {
                            let hand = stores::Hand::Postgres(Box::new(hand));
                            stores::store_part(
                                "PostgreSQL (loopback)",
                                StoreRef::new(store.clone()),
                                &updates,
                                Some(&hand),
                            )
                            .await;
                            if let stores::Hand::Postgres(hand) = &hand {
                                hand.drop_table().await;
                            }
                        }
                        Err(e) => {
                            println!("PostgreSQL baseline: SKIPPED, cannot connect: {e}\n");
                            report::skipped(
                                "PostgreSQL: lazy vs hand-written tokio-postgres",
                                &e.to_string(),
                            );
                            stores::store_part(
                                "PostgreSQL (loopback)",
                                StoreRef::new(store.clone()),
                                &updates,
                                None,
                            )
                            .await;
                        }
                    }
                }
                #[cfg(feature = "cache")]
                if runs("cache") {
                    cache::cache_part("PostgreSQL (loopback)", StoreRef::new(store)).await;
                }
                #[cfg(not(feature = "cache"))]
                if runs("cache") {
                    println!(
                        "## PostgreSQL cache part: SKIPPED, built without the `cache` feature\n"
                    );
                }
            }
            Err(e) => {
                println!("## PostgreSQL: SKIPPED, {url} unreachable: {e}\n");
                report::skipped(
                    "PostgreSQL (every PostgreSQL ratio)",
                    &format!("{url} unreachable"),
                );
            }
        }
    }
    #[cfg(not(feature = "postgres"))]
    report::skipped(
        "PostgreSQL (every PostgreSQL ratio)",
        "built without the `postgres` feature",
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench`-less args; stay quick then.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let profiled = runtime.block_on(async {
        // `BENCH_PROFILE=chatter|/pizza|/start`: only lazy mode on that kind, in a loop,
        // for a profiler (`perf record`).
        // `BENCH_PROFILE=sqlite-lazy|sqlite-direct|sqlite-hand`: one mode on a SQLite file,
        // in a loop (`sqlite-hand`: the hand-written rusqlite bot, item 6's baseline).
        if let Ok(mode @ ("sqlite-lazy" | "sqlite-direct" | "sqlite-hand")) =
            std::env::var("BENCH_PROFILE").as_deref()
        {
            let updates = workload(5_000, 100, 500);
            let path = std::env::temp_dir().join(format!("ms-profile-{}.db", std::process::id()));
            let store = StoreRef::new(
                multisession::stores::SqliteStore::open(&path)
                    .await
                    .expect("open sqlite"),
            );
            let hand = if mode == "sqlite-hand" {
                let hand_path = path.with_extension("hand.db");
                Some((sql::SqliteHand::open(&hand_path).await, hand_path))
            } else {
                None
            };
            for _ in 0..4 {
                let elapsed = if let Some((hand, _)) = &hand {
                    let started = Instant::now();
                    hand::run(hand, &updates).await;
                    let elapsed = started.elapsed();
                    hand.reset().await;
                    elapsed
                } else if mode == "sqlite-lazy" {
                    let sessions = BotSession::builder().default_store(store.clone()).build();
                    let started = Instant::now();
                    run_lazy(&sessions, &updates).await;
                    let elapsed = started.elapsed();
                    stores::clear_bot(&sessions).await;
                    elapsed
                } else {
                    let started = Instant::now();
                    stores::run_direct(store.as_dyn(), "profile-", &updates).await;
                    let elapsed = started.elapsed();
                    stores::clear(store.as_dyn(), "profile-").await;
                    elapsed
                };
                println!(
                    "{:.0} ns/update",
                    report::per_update(elapsed, updates.len())
                );
            }
            let _ = std::fs::remove_file(&path);
            if let Some((hand, hand_path)) = hand {
                drop(hand);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", hand_path.display()));
                }
            }
            return true;
        }
        if let Ok(kind) = std::env::var("BENCH_PROFILE") {
            let updates = workload::of_kind(&workload(100_000, 1_000, 5_000), &kind);
            let sessions = BotSession::builder()
                .default_store(MemoryStore::new())
                .build();
            for _ in 0..30 {
                run_lazy(&sessions, &updates).await;
            }
            return true;
        }
        println!("# multisession replay benchmark\n");
        println!(
            "{} CPUs; load average (1 / 5 / 15 min) at the start: {}\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            report::load_average()
        );
        if runs("memory") {
            memory::memory_part().await;
        }
        false
    });
    drop(runtime);
    if profiled {
        return;
    }
    // Real stores on the runtime bots use: `#[tokio::main]`'s multi-threaded one (one
    // worker per core), unless `BENCH_RUNTIME=current_thread`.
    let current = std::env::var("BENCH_RUNTIME").is_ok_and(|r| r == "current_thread");
    let runtime = if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let on_main = std::env::var("BENCH_STORES_TASK").is_ok_and(|t| t == "main");
    println!(
        "Stores on a {} tokio runtime, {}.\n",
        if current {
            "current-thread"
        } else {
            "multi-threaded"
        },
        if on_main {
            "run in `block_on` on the main thread"
        } else {
            "run in a spawned task"
        }
    );
    // In a spawned task, as a bot's update handlers run; `BENCH_STORES_TASK=main` runs
    // them in `block_on` on the main thread instead, where every reply of a connection
    // driven by a runtime task (Redis' multiplexed connection, tokio-postgres) has to wake
    // the main thread from a worker: on this machine that halved the sequential Redis
    // throughput of every async client, the hand-written ones included.
    if on_main {
        runtime.block_on(stores_part());
    } else {
        runtime.block_on(async { tokio::spawn(stores_part()).await.expect("stores part") });
    }
    report::print_summary();
    println!(
        "Whole run: {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
}
