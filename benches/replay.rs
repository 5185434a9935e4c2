//! The replay benchmark: a generated bot workload through the example pizza bot, in lazy
//! mode, strict mode and a hand-written baseline, every ratio measured in the same run.
//!
//! ```sh
//! cargo bench --bench replay                   # memory and SQLite
//! cargo bench --bench replay --all-features    # and Redis, PostgreSQL (if reachable)
//! BENCH_ONLY=cache cargo bench --bench replay --all-features   # only the cache part
//! ```
//!
//! Workload (fixed seed): 100 000 updates over 1 000 chats and 5 000 users; 70% group
//! chatter the bot ignores, 20% `/pizza` (reads and changes the per-chat fragment), 10%
//! `/start` (only reads the per-user settings). The store-backed part replays a shorter
//! stream (real I/O per operation) over the same mix.
//!
//! - **Operations**: store reads, writes and deletes per update, counted by a
//!   `CountingStore`, against the minimum the workload needs (one read per fragment a
//!   handler touches, one write per fragment it changes).
//! - **Time**: per-update time of lazy and strict mode against a hand-written baseline
//!   doing the same reads and writes: a `Mutex<HashMap>` plus serde_json for memory; the
//!   same store client called by hand (read, then compare-and-set write) for real stores.
//!   Each mode runs `ROUNDS` times, interleaved, on fresh state; the median is reported.
//!
//! The memory part runs on a current-thread tokio runtime (it never waits for I/O); the
//! store part on a multi-threaded one, as `#[tokio::main]` gives a bot
//! (`BENCH_RUNTIME=current_thread` for a current-thread one).
//!
//! Environment: `MULTISESSION_REDIS_URL`, `MULTISESSION_POSTGRES_URL` (loopback defaults),
//! `BENCH_UPDATES` / `BENCH_STORE_UPDATES` / `BENCH_STORE_ROUNDS` to change the stream
//! lengths and the number of store rounds (default 9).

#[path = "../examples/common/pizza_bot.rs"]
#[allow(dead_code)]
mod pizza_bot;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use multisession::{
    ChatContext, MultiSession, SessionContext, Sessions, async_trait, keys,
    store::{Capabilities, Expect, Outcome, Record, Store, StoreError, StoreRef, Write},
    stores::{CountingStore, Counts, MemoryStore},
};
use pizza_bot::{BotSession, Input, Pizza, Settings, handle, handle_strict};

const ROUNDS: usize = 5;

// ---------------------------------------------------------------------------------------
// The workload

/// One update: who, where, and what they typed.
struct Update {
    ctx: ChatContext,
    text: &'static str,
}

/// A small deterministic generator (splitmix64), so every run replays the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CHATTER: [&str; 4] = [
    "lol",
    "who is coming tonight?",
    "see you at 8",
    "that pizza place on the corner is great",
];

fn workload(updates: usize, chats: u64, users: u64) -> Vec<Update> {
    let mut rng = Rng(0x6d75_6c74_6973_6573);
    (0..updates)
        .map(|_| {
            let chat = -1_000_000 - rng.below(chats) as i64;
            let user = 1 + rng.below(users) as i64;
            let roll = rng.below(100);
            let text = if roll < 70 {
                CHATTER[rng.below(CHATTER.len() as u64) as usize]
            } else if roll < 90 {
                "/pizza"
            } else {
                "/start"
            };
            Update {
                ctx: ChatContext::new(chat).with_user(user),
                text,
            }
        })
        .collect()
}

/// The least the workload needs: `/pizza` reads and writes one fragment, `/start` reads
/// one, chatter nothing.
fn minimum(updates: &[Update]) -> Counts {
    let pizzas = updates.iter().filter(|u| u.text == "/pizza").count() as u64;
    let starts = updates.iter().filter(|u| u.text == "/start").count() as u64;
    Counts {
        reads: pizzas + starts,
        read_calls: pizzas + starts,
        writes: pizzas,
        deletes: 0,
        write_calls: pizzas,
        conflicts: 0,
    }
}

// ---------------------------------------------------------------------------------------
// The three ways to run it

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

fn say(lang: &str, en: &str, de: &str) -> String {
    if lang == "de" {
        de.to_owned()
    } else {
        en.to_owned()
    }
}

/// The hand-written baseline on memory: a map of encoded values behind a mutex (what a
/// bot shared across tasks needs), serde_json, the same keys and the same replies.
#[derive(Default)]
struct HandWritten {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl HandWritten {
    async fn handle(&self, ctx: &ChatContext, text: &str) -> Option<String> {
        match text {
            "/pizza" => {
                let key = format!("pizza:{}", ctx.chat_id()?);
                let mut map = self.map.lock().expect("baseline map");
                let mut pizza: Pizza = match map.get(&key) {
                    Some(bytes) => serde_json::from_slice(bytes).expect("decode"),
                    None => Pizza::default(),
                };
                pizza.count += 1;
                map.insert(key, serde_json::to_vec(&pizza).expect("encode"));
                Some(format!("🍕 ×{}", pizza.count))
            }
            "/start" => {
                let key = format!("settings:{}", ctx.user_id()?);
                let settings: Settings = match self.map.lock().expect("baseline map").get(&key) {
                    Some(bytes) => serde_json::from_slice(bytes).expect("decode"),
                    None => Settings::english(),
                };
                Some(say(
                    &settings.lang,
                    "Hi! /pizza orders one, /hunger counts them, /lang de switches language, /quiz asks you something.",
                    "Hallo! /pizza bestellt eine, /hunger zählt sie, /lang en wechselt die Sprache, /quiz fragt dich etwas.",
                ))
            }
            _ => None,
        }
    }
}

async fn run_baseline(baseline: &HandWritten, updates: &[Update]) -> usize {
    let mut replies = 0;
    for update in updates {
        let reply = baseline.handle(&update.ctx, update.text).await;
        replies += usize::from(reply.is_some());
    }
    replies
}

/// The hand-written baseline on a real store: the same client, called by hand with the
/// same operations the runtime needs for a safe update (read; compare-and-set write).
async fn run_direct(store: &dyn Store, ns: &str, updates: &[Update]) -> usize {
    let mut replies = 0;
    for update in updates {
        let reply = match update.text {
            "/pizza" => {
                let key = format!("{ns}pizza:{}", update.ctx.chat_id().expect("chat"));
                let current = store.read(&key).await.expect("direct read");
                let (mut pizza, expect): (Pizza, Expect) = match &current {
                    Some(record) => (
                        serde_json::from_slice(&record.value).expect("decode"),
                        Expect::Revision(record.revision),
                    ),
                    None => (Pizza::default(), Expect::Absent),
                };
                pizza.count += 1;
                let write = Write::Put {
                    key,
                    value: serde_json::to_vec(&pizza).expect("encode"),
                    ttl: None,
                    expect,
                };
                let outcome = store.apply(&[write]).await.remove(0).expect("direct write");
                assert_eq!(outcome, Outcome::Applied, "no concurrency here");
                Some(format!("🍕 ×{}", pizza.count))
            }
            "/start" => {
                let key = format!("{ns}settings:{}", update.ctx.user_id().expect("user"));
                let settings: Settings = match store.read(&key).await.expect("direct read") {
                    Some(record) => serde_json::from_slice(&record.value).expect("decode"),
                    None => Settings::english(),
                };
                Some(say(&settings.lang, "Hi!", "Hallo!"))
            }
            _ => None,
        };
        replies += usize::from(reply.is_some());
    }
    replies
}

// ---------------------------------------------------------------------------------------
// Measuring

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_update(total: Duration, updates: usize) -> f64 {
    total.as_secs_f64() * 1e9 / updates as f64
}

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

fn time_row(mode: &str, time: Duration, updates: usize, baseline: Duration) {
    println!(
        "| {mode:<22} | {:>12.0} | {:>9.2}× |",
        per_update(time, updates),
        time.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn time_header(baseline_name: &str) {
    println!("| mode                   | ns/update    | vs {baseline_name:<6} |");
    println!("|------------------------|--------------|-----------|");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
// Strict mode without batching: the same store, minus its batch read

/// Forwards everything except `read_many`, so strict mode reads fragment by fragment.
struct Unbatched(StoreRef);

#[async_trait]
impl Store for Unbatched {
    fn name(&self) -> &str {
        self.0.as_dyn().name()
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.as_dyn().capabilities();
        caps.batch_read = false;
        caps
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.0.as_dyn().read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.0.as_dyn().write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.as_dyn().delete(key).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        self.0.as_dyn().apply(writes).await
    }
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<multisession::store::Page, StoreError> {
        self.0.as_dyn().list(prefix, cursor, limit).await
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: memory

async fn memory_part() {
    let updates_n = env_usize("BENCH_UPDATES", 100_000);
    let updates = workload(updates_n, 1_000, 5_000);
    let minimum = minimum(&updates);
    println!("## Memory store: {updates_n} updates, 1 000 chats, 5 000 users\n");

    // Operations (one pass each, counted).
    let lazy_store = CountingStore::new(MemoryStore::new());
    let lazy = BotSession::builder()
        .default_store(lazy_store.clone())
        .build();
    let lazy_replies = run_lazy(&lazy, &updates).await;
    let strict_store = CountingStore::new(MemoryStore::new());
    let strict = BotSession::builder()
        .default_store(strict_store.clone())
        .build();
    let strict_replies = run_strict(&strict, &updates).await;
    let timed_store = CountingStore::new(MemoryStore::new());
    let timed = TimedBot::builder()
        .default_store(timed_store.clone())
        .build();
    run_timed(&timed, &updates).await;
    let baseline_replies = run_baseline(&HandWritten::default(), &updates).await;
    assert_eq!(lazy_replies, baseline_replies, "lazy and baseline disagree");
    assert_eq!(
        strict_replies, baseline_replies,
        "strict and baseline disagree"
    );

    ops_header();
    ops_row("minimum", minimum, updates_n, minimum);
    ops_row("lazy", lazy_store.counts(), updates_n, minimum);
    ops_row(
        "lazy, TTL on both",
        timed_store.counts(),
        updates_n,
        minimum,
    );
    ops_row("strict", strict_store.counts(), updates_n, minimum);
    println!();
    let lazy_exact = lazy_store.counts().operations() == minimum.operations()
        && lazy_store.counts().reads == minimum.reads
        && lazy_store.counts().writes == minimum.writes;
    println!(
        "lazy operations equal the minimum: {}\n",
        if lazy_exact { "yes" } else { "NO" }
    );

    // Time: fresh state per round, modes interleaved.
    let (mut base_t, mut lazy_t, mut strict_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let baseline = HandWritten::default();
        let started = Instant::now();
        run_baseline(&baseline, &updates).await;
        base_t.push(started.elapsed());

        let sessions = BotSession::builder()
            .default_store(MemoryStore::new())
            .build();
        let started = Instant::now();
        run_lazy(&sessions, &updates).await;
        lazy_t.push(started.elapsed());

        let sessions = BotSession::builder()
            .default_store(MemoryStore::new())
            .build();
        let started = Instant::now();
        run_strict(&sessions, &updates).await;
        strict_t.push(started.elapsed());
    }
    let base = median(base_t);
    time_header("map");
    time_row("hand-written map+json", base, updates_n, base);
    time_row("lazy", median(lazy_t), updates_n, base);
    time_row("strict", median(strict_t), updates_n, base);
    println!();

    // Where the time goes: each kind of update alone (same chats and users).
    println!("| update kind  | baseline ns | lazy ns | lazy vs baseline |");
    println!("|--------------|-------------|---------|------------------|");
    for kind in ["chatter", "/pizza", "/start"] {
        let only: Vec<Update> = updates
            .iter()
            .filter(|u| (kind == "chatter" && !u.text.starts_with('/')) || u.text == kind)
            .map(|u| Update {
                ctx: u.ctx,
                text: u.text,
            })
            .collect();
        let (mut b, mut l) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let baseline = HandWritten::default();
            let started = Instant::now();
            run_baseline(&baseline, &only).await;
            b.push(started.elapsed());
            let sessions = BotSession::builder()
                .default_store(MemoryStore::new())
                .build();
            let started = Instant::now();
            run_lazy(&sessions, &only).await;
            l.push(started.elapsed());
        }
        let (b, l) = (median(b), median(l));
        println!(
            "| {kind:<12} | {:>11.0} | {:>7.0} | {:>15.2}× |",
            per_update(b, only.len()),
            per_update(l, only.len()),
            l.as_secs_f64() / b.as_secs_f64()
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Part 2: real stores

/// Removes every key under `ns` from `store` (paged listing).
async fn clear(store: &dyn Store, ns: &str) {
    loop {
        let page = store.list(ns, None, 500).await.expect("list for cleanup");
        if page.entries.is_empty() {
            return;
        }
        for (key, _) in page.entries {
            store.delete(&key).await.expect("cleanup delete");
        }
    }
}

/// Removes every session of the bot (all three fragments).
async fn clear_bot(sessions: &Sessions<BotSession>) {
    for fragment in ["pizza", "settings", "quiz"] {
        sessions.clear(fragment).await.expect("clear a fragment");
    }
}

/// Lazy, strict (batched and not) and the direct baseline on one store.
async fn store_part(name: &str, store: StoreRef, updates: &[Update]) {
    let n = updates.len();
    let minimum = minimum(updates);
    println!("## {name}: {n} updates, 100 chats, 500 users\n");
    let run_ns = format!("bench-{}-", std::process::id());

    // Leftovers of an interrupted run would change the counts.
    clear_bot(&BotSession::builder().default_store(store.clone()).build()).await;
    clear(store.as_dyn(), &run_ns).await;

    // Operations and round trips.
    let counting = CountingStore::new(store.clone());
    let lazy = BotSession::builder()
        .default_store(counting.clone())
        .build();
    run_lazy(&lazy, updates).await;
    let lazy_counts = counting.counts();
    clear_bot(&lazy).await;

    let counting = CountingStore::new(store.clone());
    let strict = BotSession::builder()
        .default_store(counting.clone())
        .build();
    run_strict(&strict, updates).await;
    let strict_counts = counting.counts();
    clear_bot(&strict).await;

    let counting = CountingStore::new(store.clone());
    let unbatched = BotSession::builder()
        .default_store(Unbatched(StoreRef::new(counting.clone())))
        .build();
    run_strict(&unbatched, updates).await;
    let unbatched_counts = counting.counts();
    clear_bot(&unbatched).await;

    let counting = CountingStore::new(store.clone());
    run_direct(&counting, &run_ns, updates).await;
    let direct_counts = counting.counts();
    clear(store.as_dyn(), &run_ns).await;

    ops_header();
    ops_row("minimum", minimum, n, minimum);
    ops_row("direct client", direct_counts, n, minimum);
    ops_row("lazy", lazy_counts, n, minimum);
    ops_row("strict, batched", strict_counts, n, minimum);
    ops_row("strict, unbatched", unbatched_counts, n, minimum);
    println!();

    // Time: each mode on fresh keys; cleanup outside the timed part. Disk and network
    // timings drift between rounds, so each round times all modes back to back (in a
    // rotating order) and the ratios are medians of per-round ratios.
    let mut times: [Vec<Duration>; 4] = Default::default();
    for round in 0..env_usize("BENCH_STORE_ROUNDS", STORE_ROUNDS) {
        for step in 0..4 {
            let mode = (round + step) % 4;
            let elapsed = time_store_mode(mode, &store, &run_ns, updates).await;
            times[mode].push(elapsed);
        }
    }
    let ratio = |mode: usize| {
        let mut ratios: Vec<f64> = times[mode]
            .iter()
            .zip(&times[0])
            .map(|(t, direct)| t.as_secs_f64() / direct.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let per = |mode: usize| per_update(median(times[mode].clone()), n);
    println!("| mode                   | ns/update (median) | vs direct (median of rounds) |");
    println!("|------------------------|--------------------|------------------------------|");
    for (mode, name) in [
        "direct client",
        "lazy",
        "strict, batched",
        "strict, unbatched",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {name:<22} | {:>18.0} | {:>27.2}× |",
            per(mode),
            ratio(mode)
        );
    }
    let mut batching: Vec<f64> = times[3]
        .iter()
        .zip(&times[2])
        .map(|(unbatched, batched)| unbatched.as_secs_f64() / batched.as_secs_f64())
        .collect();
    batching.sort_by(f64::total_cmp);
    println!(
        "\nthroughput, lazy vs direct client: {:.2}×; strict batched vs unbatched: {:.2}× faster\n",
        1.0 / ratio(1),
        batching[batching.len() / 2]
    );
}

const STORE_ROUNDS: usize = 9;

/// Times one mode on `store` (0 direct, 1 lazy, 2 strict batched, 3 strict unbatched),
/// then removes what it wrote.
async fn time_store_mode(
    mode: usize,
    store: &StoreRef,
    run_ns: &str,
    updates: &[Update],
) -> Duration {
    if mode == 0 {
        let started = Instant::now();
        run_direct(store.as_dyn(), run_ns, updates).await;
        let elapsed = started.elapsed();
        clear(store.as_dyn(), run_ns).await;
        return elapsed;
    }
    let sessions = if mode == 3 {
        BotSession::builder()
            .default_store(Unbatched(store.clone()))
            .build()
    } else {
        BotSession::builder().default_store(store.clone()).build()
    };
    let started = Instant::now();
    if mode == 1 {
        run_lazy(&sessions, updates).await;
    } else {
        run_strict(&sessions, updates).await;
    }
    let elapsed = started.elapsed();
    clear_bot(&sessions).await;
    elapsed
}

// ---------------------------------------------------------------------------------------
// The revision-checked cache (issue 12): round trips per update, one process and two

/// Every stored value of the bot under `prefixes`, update lists stripped (runs differ in
/// their update ids, not in their state).
#[cfg(feature = "cache")]
async fn bot_state(store: &dyn Store) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut state = std::collections::BTreeMap::new();
    for prefix in ["pizza:", "settings:", "quiz:"] {
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .list(prefix, cursor.as_deref(), 1000)
                .await
                .expect("list the state");
            for (key, record) in page.entries {
                state.insert(key, multisession::envelope::payload(&record.value).to_vec());
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    state
}

/// One run of the stream: `processes` bots (each its own `Sessions`, and with `cache` its
/// own `CachedStore` with that staleness bound, like separate processes) splitting the
/// stream by chat, concurrently.
/// Returns the wall time, the round trips, the stale entries the caches met, and the state.
#[cfg(feature = "cache")]
async fn cached_run(
    store: &StoreRef,
    updates: &[Update],
    processes: usize,
    cache: Option<Option<Duration>>,
) -> (
    Duration,
    Counts,
    u64,
    std::collections::BTreeMap<String, Vec<u8>>,
) {
    use multisession::stores::CachedStore;
    let counting = CountingStore::new(store.clone());
    let caches: Vec<Option<CachedStore>> = (0..processes)
        .map(|_| {
            cache.map(|bound| CachedStore::new(counting.clone(), 100_000).max_staleness(bound))
        })
        .collect();
    let bots: Vec<Sessions<BotSession>> = caches
        .iter()
        .map(|cache| match cache {
            Some(cache) => BotSession::builder().default_store(cache.clone()).build(),
            None => BotSession::builder()
                .default_store(counting.clone())
                .build(),
        })
        .collect();
    let shares: Vec<Vec<&Update>> = (0..processes)
        .map(|p| {
            updates
                .iter()
                .filter(|u| u.ctx.chat_id().unwrap_or(0).unsigned_abs() as usize % processes == p)
                .collect()
        })
        .collect();
    let started = Instant::now();
    let runs = bots.iter().zip(&shares).map(|(bot, share)| async move {
        for update in share {
            bot.run(&update.ctx, |s| handle(s, Input::Text(update.text)))
                .await
                .expect("update");
        }
    });
    futures_util::future::join_all(runs).await;
    let elapsed = started.elapsed();
    let counts = counting.counts();
    let stale = caches
        .iter()
        .flatten()
        .map(|c| c.stats().evicted_on_conflict)
        .sum();
    let state = bot_state(store.as_dyn()).await;
    clear_bot(&bots[0]).await;
    (elapsed, counts, stale, state)
}

/// Round trips per update and throughput with and without the cache, one process and
/// two, on the 100k stream (1 000 groups, 5 000 users) unless `BENCH_CACHE_UPDATES`.
#[cfg(feature = "cache")]
async fn cache_part(name: &str, store: StoreRef) {
    let n = env_usize("BENCH_CACHE_UPDATES", 100_000);
    let updates = workload(n, 1_000, 5_000);
    let rounds = env_usize("BENCH_CACHE_ROUNDS", 3);
    println!("## {name}: the revision-checked cache, {n} updates, 1 000 chats, 5 000 users\n");
    let second = Some(Some(Duration::from_secs(1)));
    // (processes, cache and its staleness bound); the default bound is 1 s.
    let variants: [(usize, Option<Option<Duration>>); 5] = [
        (1, None),
        (1, second),
        (1, Some(None)),
        (2, None),
        (2, second),
    ];
    let mut times: [Vec<Duration>; 5] = Default::default();
    let mut seen: [Option<(Counts, u64)>; 5] = Default::default();
    let mut expected = None;
    for round in 0..rounds {
        for step in 0..variants.len() {
            let v = (round + step) % variants.len();
            let (processes, cache) = variants[v];
            let (elapsed, counts, stale, state) =
                cached_run(&store, &updates, processes, cache).await;
            times[v].push(elapsed);
            seen[v] = Some((counts, stale));
            match &expected {
                None => expected = Some(state),
                Some(expected) => assert_eq!(
                    expected, &state,
                    "{processes} process(es), cache {cache:?}: the final state differs"
                ),
            }
        }
    }
    let baseline = median(times[0].clone());
    println!(
        "| processes | cache (staleness bound) | round trips/update | reads | writes | stale entries met | updates/s (median) | vs no cache, 1 process |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (v, (processes, cache)) in variants.iter().enumerate() {
        let (counts, stale) = seen[v].expect("ran");
        let trips = (counts.read_calls + counts.write_calls) as f64 / n as f64;
        let time = median(times[v].clone());
        let cache = match cache {
            None => "no".to_owned(),
            Some(Some(bound)) => format!("yes ({bound:?})"),
            Some(None) => "yes (none)".to_owned(),
        };
        println!(
            "| {processes} | {cache} | {trips:.3} | {} | {} | {stale} | {:.0} | {:.2}× |",
            counts.reads,
            counts.writes,
            n as f64 / time.as_secs_f64(),
            baseline.as_secs_f64() / time.as_secs_f64(),
        );
    }
    println!("\nfinal state equal in every run (update lists aside)\n");
}

#[allow(unused_variables, unused_mut)]
async fn stores_part() {
    let n = env_usize("BENCH_STORE_UPDATES", 5_000);
    let updates = workload(n, 100, 500);

    if std::env::var("BENCH_ONLY").as_deref() != Ok("cache") {
        let dir = std::env::temp_dir().join(format!("multisession-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = multisession::stores::SqliteStore::open(dir.join("bench.db"))
            .await
            .expect("open sqlite");
        store_part("SQLite (file, WAL)", StoreRef::new(store), &updates).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "redis")]
    {
        let url = std::env::var("MULTISESSION_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let config = multisession::stores::RedisConfig::new().key_prefix("multisession-bench:");
        match multisession::stores::RedisStore::connect_with(&url, config).await {
            Ok(store) => {
                if std::env::var("BENCH_ONLY").as_deref() != Ok("cache") {
                    store_part("Redis (loopback)", StoreRef::new(store.clone()), &updates).await;
                }
                #[cfg(feature = "cache")]
                cache_part("Redis (loopback)", StoreRef::new(store)).await;
            }
            Err(e) => println!("## Redis: SKIPPED, {url} unreachable: {e}\n"),
        }
    }

    #[cfg(feature = "postgres")]
    {
        let url = std::env::var("MULTISESSION_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let config = multisession::stores::PostgresConfig::new().table("multisession_bench");
        match multisession::stores::PostgresStore::connect_with(&url, config).await {
            Ok(store) => {
                if std::env::var("BENCH_ONLY").as_deref() != Ok("cache") {
                    store_part(
                        "PostgreSQL (loopback)",
                        StoreRef::new(store.clone()),
                        &updates,
                    )
                    .await;
                }
                #[cfg(feature = "cache")]
                cache_part("PostgreSQL (loopback)", StoreRef::new(store)).await;
            }
            Err(e) => println!("## PostgreSQL: SKIPPED, {url} unreachable: {e}\n"),
        }
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench`-less args; stay quick then.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let profiled = runtime.block_on(async {
        // `BENCH_PROFILE=chatter|/pizza|/start`: only lazy mode on that kind, in a loop,
        // for a profiler (`perf record`).
        // `BENCH_PROFILE=sqlite-lazy|sqlite-direct`: one mode on a SQLite file, in a loop.
        if let Ok(mode @ ("sqlite-lazy" | "sqlite-direct")) =
            std::env::var("BENCH_PROFILE").as_deref()
        {
            let updates = workload(5_000, 100, 500);
            let path = std::env::temp_dir().join(format!("ms-profile-{}.db", std::process::id()));
            let store = StoreRef::new(
                multisession::stores::SqliteStore::open(&path)
                    .await
                    .expect("open sqlite"),
            );
            for _ in 0..4 {
                let mode = if mode == "sqlite-lazy" { 1 } else { 0 };
                let elapsed = time_store_mode(mode, &store, "profile-", &updates).await;
                println!("{:.0} ns/update", per_update(elapsed, updates.len()));
            }
            let _ = std::fs::remove_file(&path);
            return true;
        }
        if let Ok(kind) = std::env::var("BENCH_PROFILE") {
            let updates: Vec<Update> = workload(100_000, 1_000, 5_000)
                .into_iter()
                .filter(|u| (kind == "chatter" && !u.text.starts_with('/')) || u.text == kind)
                .collect();
            let sessions = BotSession::builder()
                .default_store(MemoryStore::new())
                .build();
            for _ in 0..30 {
                run_lazy(&sessions, &updates).await;
            }
            return true;
        }
        println!("# multisession replay benchmark\n");
        // `BENCH_ONLY=cache`: only the cache part (Redis and PostgreSQL).
        if std::env::var("BENCH_ONLY").as_deref() != Ok("cache") {
            memory_part().await;
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
    println!(
        "Stores on a {} tokio runtime.\n",
        if current {
            "current-thread"
        } else {
            "multi-threaded"
        }
    );
    runtime.block_on(stores_part());
}
