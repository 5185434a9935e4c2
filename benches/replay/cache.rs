//! The revision-checked cache (issue 12): round trips per update, one process and two.

use std::time::{Duration, Instant};

use multisession::{
    SessionContext, Sessions,
    store::{Store, StoreRef},
    stores::{CountingStore, Counts},
};

use crate::{
    pizza_bot::{BotSession, Input, handle},
    report::{self, env_usize},
    stores::clear_bot,
    workload::{Update, workload},
};

/// The median of durations.
fn median(samples: &[Duration]) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort();
    samples[samples.len() / 2]
}

/// Every stored value of the bot under `prefixes`, update lists stripped (runs differ in
/// their update ids, not in their state).
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
pub async fn cache_part(name: &str, store: StoreRef) {
    let n = env_usize("BENCH_CACHE_UPDATES", 100_000);
    let updates = workload(n, 1_000, 5_000);
    let rounds = env_usize("BENCH_CACHE_ROUNDS", 3);
    println!("## {name}: the revision-checked cache, {n} updates, 1 000 chats, 5 000 users\n");
    let _load = report::part_load(&format!("the {name} cache part"));
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
    let baseline = median(&times[0]);
    println!(
        "| processes | cache (staleness bound) | round trips/update | reads | writes | stale entries met | updates/s (median) | vs no cache, 1 process |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (v, (processes, cache)) in variants.iter().enumerate() {
        let (counts, stale) = seen[v].expect("ran");
        let trips = (counts.read_calls + counts.write_calls) as f64 / n as f64;
        let time = median(&times[v]);
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
