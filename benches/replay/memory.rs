//! Part 1: the memory store against hand-written maps (issue 11, item 2).

use std::time::{Duration, Instant};

use multisession::{
    Sessions,
    stores::{CountingStore, MemoryStore},
};

use crate::{
    TimedBot, ops_header, ops_row,
    pizza_bot::BotSession,
    report::{self, Allocations, Spread, Target, count_allocations, env_usize, per_update},
    run_lazy, run_strict, run_timed,
    workload::{KINDS, Update, minimum, of_kind, workload},
};

/// The modes of the memory part, in the order of their rows.
const MODES: [&str; 4] = [
    "hand-written bot, map+json",
    "lean map+json (no routing)",
    "lazy",
    "strict",
];
const SAME: usize = 0;
const LEAN: usize = 1;
const LAZY: usize = 2;
const STRICT: usize = 3;

fn fresh() -> Sessions<BotSession> {
    BotSession::builder()
        .default_store(MemoryStore::new())
        .build()
}

/// Runs `mode` once on fresh state; returns the replies.
async fn run_mode(mode: usize, updates: &[Update]) -> usize {
    match mode {
        SAME => crate::hand::run(&crate::hand::MapBackend::default(), updates).await,
        LEAN => crate::hand::Lean::default().run(updates).await,
        LAZY => run_lazy(&fresh(), updates).await,
        _ => run_strict(&fresh(), updates).await,
    }
}

/// Times `mode` once on fresh state (building the state is outside the time).
async fn time_mode(mode: usize, updates: &[Update]) -> Duration {
    match mode {
        SAME => {
            let map = crate::hand::MapBackend::default();
            let started = Instant::now();
            crate::hand::run(&map, updates).await;
            started.elapsed()
        }
        LEAN => {
            let lean = crate::hand::Lean::default();
            let started = Instant::now();
            lean.run(updates).await;
            started.elapsed()
        }
        _ => {
            let sessions = fresh();
            let started = Instant::now();
            if mode == LAZY {
                run_lazy(&sessions, updates).await;
            } else {
                run_strict(&sessions, updates).await;
            }
            started.elapsed()
        }
    }
}

/// Each of `modes` `rounds` times on `updates`, in a rotating order within each round.
async fn time_rounds(modes: &[usize], updates: &[Update], rounds: usize) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        for step in 0..modes.len() {
            let mode = modes[(round + step) % modes.len()];
            times[mode].push(time_mode(mode, updates).await);
        }
    }
    times
}

fn ns_spread(times: &[Duration], updates: usize) -> String {
    let ns: Vec<f64> = times.iter().map(|t| per_update(*t, updates)).collect();
    let s = Spread::of(&ns);
    format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
}

pub async fn memory_part() {
    let updates_n = env_usize("BENCH_UPDATES", 100_000);
    let rounds = env_usize("BENCH_ROUNDS", 7).max(1);
    let updates = workload(updates_n, 1_000, 5_000);
    let minimum = minimum(&updates);
    println!("## Memory store: {updates_n} updates, 1 000 chats, 5 000 users\n");
    let _load = report::part_load("the memory part");

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
    let same_replies = run_mode(SAME, &updates).await;
    let lean_replies = run_mode(LEAN, &updates).await;
    assert_eq!(
        lazy_replies, same_replies,
        "lazy and the hand-written bot disagree"
    );
    assert_eq!(lean_replies, same_replies, "the two baselines disagree");
    assert_eq!(
        strict_replies, same_replies,
        "strict and the hand-written bot disagree"
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
    let counts = lazy_store.counts();
    let lazy_exact = counts.operations() == minimum.operations()
        && counts.reads == minimum.reads
        && counts.writes == minimum.writes;
    let timed_counts = timed_store.counts();
    let timed_exact = timed_counts.operations() == minimum.operations()
        && timed_counts.reads == minimum.reads
        && timed_counts.writes == minimum.writes;
    println!(
        "lazy operations equal the minimum: {}; with TTL: {}\n",
        if lazy_exact { "yes" } else { "NO" },
        if timed_exact { "yes" } else { "NO" }
    );
    report::check(
        "memory: lazy operations = the oracle minimum",
        lazy_exact && timed_exact,
        &format!(
            "{:.3} ops/update (minimum {:.3})",
            counts.operations() as f64 / updates_n as f64,
            minimum.operations() as f64 / updates_n as f64
        ),
    );

    // Time: fresh state per run, modes in a rotating order within each round.
    let times = time_rounds(&[SAME, LEAN, LAZY, STRICT], &updates, rounds).await;
    println!(
        "Time per update, {rounds} rounds (fresh state each run, modes in rotating order); \
         median (min–max) over rounds; ratios are medians of per-round ratios:\n"
    );
    println!("| mode | ns/update | vs hand-written bot | vs lean map |");
    println!("|---|---|---|---|");
    for (mode, name) in MODES.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} |",
            ns_spread(&times[mode], updates_n),
            Spread::time_ratios(&times[mode], &times[SAME]).show(),
            Spread::time_ratios(&times[mode], &times[LEAN]).show(),
        );
    }
    println!();

    // Each kind of update alone (the same chats and users).
    println!("Each kind of update alone, {rounds} rounds:\n");
    println!(
        "| update kind | updates | hand-written bot ns | lean map ns | lazy ns | lazy vs hand-written bot |"
    );
    println!("|---|---|---|---|---|---|");
    let mut kind_ratios = Vec::new();
    for kind in KINDS {
        let only = of_kind(&updates, kind);
        let t = time_rounds(&[SAME, LEAN, LAZY], &only, rounds).await;
        let ratio = Spread::time_ratios(&t[LAZY], &t[SAME]);
        println!(
            "| {kind} | {} | {} | {} | {} | {} |",
            only.len(),
            ns_spread(&t[SAME], only.len()),
            ns_spread(&t[LEAN], only.len()),
            ns_spread(&t[LAZY], only.len()),
            ratio.show()
        );
        kind_ratios.push((kind, ratio));
    }
    println!();

    // Allocations: one counted run per mode (and per kind), fresh state, not timed.
    println!(
        "Allocations per update (one counted run each, fresh state; a reallocation counts as one):\n"
    );
    println!("| updates | mode | allocations/update | bytes allocated/update |");
    println!("|---|---|---|---|");
    let per = |a: Allocations, n: usize| (a.count as f64 / n as f64, a.bytes as f64 / n as f64);
    let mut streams: Vec<(String, Vec<Update>)> = vec![("all".to_owned(), updates.clone())];
    for kind in KINDS {
        streams.push((kind.to_owned(), of_kind(&updates, kind)));
    }
    for (label, stream) in &streams {
        for mode in [SAME, LEAN, LAZY, STRICT] {
            if mode == STRICT && label != "all" {
                continue;
            }
            let (_, allocations) = count_allocations(run_mode(mode, stream)).await;
            let (count, bytes) = per(allocations, stream.len());
            println!("| {label} | {} | {count:.2} | {bytes:.0} |", MODES[mode]);
        }
    }
    println!(
        "\n(the counted runs include building each mode's fresh state: a `Sessions` and its store, or an empty map)\n"
    );

    println!("Issue 11, item 2 (lazy against the hand-written bot on a map, per update):\n");
    let overall = Spread::time_ratios(&times[LAZY], &times[SAME]);
    report::ratio(
        "memory: lazy vs hand-written bot (map+json)",
        overall,
        Target::AtMost(1.5),
    );
    report::ratio(
        "memory: lazy vs hand-written bot, moonshot",
        overall,
        Target::AtMost(1.2),
    );
    for (kind, ratio) in kind_ratios {
        report::ratio(
            &format!("memory: lazy vs hand-written bot, {kind} only"),
            ratio,
            Target::AtMost(1.5),
        );
    }
    report::ratio(
        "memory: lazy vs lean map (no routing; earlier baseline)",
        Spread::time_ratios(&times[LAZY], &times[LEAN]),
        Target::None,
    );
    println!();
}
