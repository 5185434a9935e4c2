//! Part 2: real stores. Operation counts, lazy and strict against the store's own client
//! called by hand ("direct client"), and against hand-written crate code (SQLite,
//! PostgreSQL: issue 11, item 6).

use std::time::{Duration, Instant};

use multisession::{
    SessionContext, Sessions, async_trait,
    store::{Capabilities, Expect, Outcome, Record, Store, StoreError, StoreRef, Write},
    stores::CountingStore,
};

use crate::{
    hand, ops_header, ops_row,
    pizza_bot::{BotSession, Pizza, Settings},
    report::{self, Spread, Target, env_usize, per_update},
    run_lazy, run_strict,
    workload::{Update, minimum},
};

/// Removes every key under `ns` from `store` (paged listing).
pub async fn clear(store: &dyn Store, ns: &str) {
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
pub async fn clear_bot(sessions: &Sessions<BotSession>) {
    for fragment in ["pizza", "settings", "quiz"] {
        sessions.clear(fragment).await.expect("clear a fragment");
    }
}

/// The hand-written baseline on a real store: the same client, called by hand with the
/// same operations the runtime needs for a safe update (read; compare-and-set write).
pub async fn run_direct(store: &dyn Store, ns: &str, updates: &[Update]) -> usize {
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
                Some(crate::pizza_bot::say(&settings.lang, "Hi!", "Hallo!"))
            }
            _ => None,
        };
        replies += usize::from(reply.is_some());
    }
    replies
}

// ---------------------------------------------------------------------------------------
// Strict mode without batching: the same store, minus its batch read

/// Forwards everything except `read_many`, so strict mode reads fragment by fragment.
pub struct Unbatched(pub StoreRef);

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
// Hand-written crate code

/// A hand-written baseline on the store's own database (item 6).
pub enum Hand {
    Sqlite(crate::sql::SqliteHand),
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::sql::PgHand>),
}

impl Hand {
    fn label(&self) -> &'static str {
        match self {
            Hand::Sqlite(_) => "hand-written rusqlite",
            #[cfg(feature = "postgres")]
            Hand::Postgres(_) => "hand-written tokio-postgres",
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Hand::Sqlite(_) => crate::sql::SQLITE_HAND,
            #[cfg(feature = "postgres")]
            Hand::Postgres(_) => crate::sql::PG_HAND,
        }
    }

    async fn run(&self, updates: &[Update]) -> usize {
        match self {
            Hand::Sqlite(h) => hand::run(h, updates).await,
            #[cfg(feature = "postgres")]
            Hand::Postgres(h) => hand::run(&**h, updates).await,
        }
    }

    async fn reset(&self) {
        match self {
            Hand::Sqlite(h) => h.reset().await,
            #[cfg(feature = "postgres")]
            Hand::Postgres(h) => h.reset().await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// One store

const DIRECT: usize = 0;
const LAZY: usize = 1;
const STRICT: usize = 2;
const UNBATCHED: usize = 3;
const HAND: usize = 4;
const NAMES: [&str; 4] = [
    "direct client",
    "lazy",
    "strict, batched",
    "strict, unbatched",
];

/// Times one mode on `store`, then removes what it wrote (outside the time).
async fn time_store_mode(
    mode: usize,
    store: &StoreRef,
    run_ns: &str,
    updates: &[Update],
    hand: Option<&Hand>,
) -> Duration {
    if mode == DIRECT {
        let started = Instant::now();
        run_direct(store.as_dyn(), run_ns, updates).await;
        let elapsed = started.elapsed();
        clear(store.as_dyn(), run_ns).await;
        return elapsed;
    }
    if mode == HAND {
        let hand = hand.expect("a hand-written baseline");
        let started = Instant::now();
        hand.run(updates).await;
        let elapsed = started.elapsed();
        hand.reset().await;
        return elapsed;
    }
    let sessions = if mode == UNBATCHED {
        BotSession::builder()
            .default_store(Unbatched(store.clone()))
            .build()
    } else {
        BotSession::builder().default_store(store.clone()).build()
    };
    let started = Instant::now();
    if mode == LAZY {
        run_lazy(&sessions, updates).await;
    } else {
        run_strict(&sessions, updates).await;
    }
    let elapsed = started.elapsed();
    clear_bot(&sessions).await;
    elapsed
}

/// The default number of rounds of the store part.
const STORE_ROUNDS: usize = 9;

/// Lazy, strict (batched and not), the direct client and, when given, the hand-written
/// crate code on one store.
pub async fn store_part(name: &str, store: StoreRef, updates: &[Update], hand: Option<&Hand>) {
    let n = updates.len();
    let minimum = minimum(updates);
    println!("## {name}: {n} updates, 100 chats, 500 users\n");
    let _load = report::part_load(name);
    let run_ns = format!("bench-{}-", std::process::id());

    // Leftovers of an interrupted run would change the counts.
    clear_bot(&BotSession::builder().default_store(store.clone()).build()).await;
    clear(store.as_dyn(), &run_ns).await;

    // Operations and round trips.
    let counting = CountingStore::new(store.clone());
    let lazy = BotSession::builder()
        .default_store(counting.clone())
        .build();
    let lazy_replies = run_lazy(&lazy, updates).await;
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

    if let Some(hand) = hand {
        hand.reset().await;
        let replies = hand.run(updates).await;
        hand.reset().await;
        assert_eq!(replies, lazy_replies, "lazy and {} disagree", hand.label());
    }

    ops_header();
    ops_row("minimum", minimum, n, minimum);
    ops_row("direct client", direct_counts, n, minimum);
    ops_row("lazy", lazy_counts, n, minimum);
    ops_row("strict, batched", strict_counts, n, minimum);
    ops_row("strict, unbatched", unbatched_counts, n, minimum);
    println!();
    report::check(
        &format!("{name}: lazy operations = the oracle minimum"),
        lazy_counts.reads == minimum.reads
            && lazy_counts.writes == minimum.writes
            && lazy_counts.operations() == minimum.operations()
            && lazy_counts.round_trips() == minimum.round_trips(),
        &format!(
            "{:.3} ops/update (minimum {:.3})",
            lazy_counts.operations() as f64 / n as f64,
            minimum.operations() as f64 / n as f64
        ),
    );
    report::check(
        &format!("{name}: strict batching, one read round trip per update"),
        strict_counts.read_calls == n as u64,
        &format!(
            "{:.3} read round trips/update",
            strict_counts.read_calls as f64 / n as f64
        ),
    );

    // Time: each mode on fresh keys; cleanup outside the timed part. Disk and network
    // timings drift between rounds, so each round times all modes back to back (in a
    // rotating order) and the ratios are medians of per-round ratios.
    let modes: Vec<usize> = if hand.is_some() {
        vec![DIRECT, LAZY, STRICT, UNBATCHED, HAND]
    } else {
        vec![DIRECT, LAZY, STRICT, UNBATCHED]
    };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 5];
    let rounds = env_usize("BENCH_STORE_ROUNDS", STORE_ROUNDS).max(1);
    for round in 0..rounds {
        for step in 0..modes.len() {
            let mode = modes[(round + step) % modes.len()];
            let elapsed = time_store_mode(mode, &store, &run_ns, updates, hand).await;
            times[mode].push(elapsed);
        }
    }
    println!(
        "{rounds} rounds, all modes back to back in each (rotating order); time per update \
         median (min–max); ratios are medians (min–max) of per-round ratios:\n"
    );
    let hand_col = hand.map(|h| format!(" vs {} |", h.label()));
    println!(
        "| mode | ns/update | vs direct client |{}",
        hand_col.clone().unwrap_or_default()
    );
    println!("|---|---|---|{}", if hand.is_some() { "---|" } else { "" });
    let ns = |mode: usize| {
        let ns: Vec<f64> = times[mode].iter().map(|t| per_update(*t, n)).collect();
        let s = Spread::of(&ns);
        format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
    };
    for &mode in &modes {
        let label = if mode == HAND {
            hand.map(Hand::label).unwrap_or_default()
        } else {
            NAMES[mode]
        };
        let vs_hand = if hand.is_some() {
            format!(
                " {} |",
                Spread::time_ratios(&times[mode], &times[HAND]).show()
            )
        } else {
            String::new()
        };
        println!(
            "| {label} | {} | {} |{vs_hand}",
            ns(mode),
            Spread::time_ratios(&times[mode], &times[DIRECT]).show()
        );
    }
    let batching = Spread::time_ratios(&times[UNBATCHED], &times[STRICT]);
    println!(
        "\nthroughput, lazy vs direct client: {}; strict batched vs unbatched: {} faster\n",
        Spread::throughput_ratios(&times[LAZY], &times[DIRECT]).show(),
        batching.show()
    );
    if let Some(hand) = hand {
        println!("{}: {}.\n", hand.label(), hand.describe());
        report::ratio(
            &format!("{name}: lazy throughput vs {}", hand.label()),
            Spread::throughput_ratios(&times[LAZY], &times[HAND]),
            Target::AtLeast(0.9),
        );
        println!();
    }
}
