//! Part 3: Redis against the round-trip limit (issue 11, item 1).
//!
//! In the same run, interleaved by round (rotating order): `redis-benchmark -t get,set -c 1`
//! (when on PATH), its in-bench equivalents (one `redis` crate connection doing SET then
//! GET, one at a time: a blocking connection, and the multiplexed async connection the
//! store also uses), lazy mode and a hand-written bot on the `redis` crate (plain GET +
//! SET, serde_json, the same routing: `hand::handle`), sequentially and with 64 and 256
//! workers (the stream split by chat, each worker's share in order). Around every phase:
//! the server's `INFO commandstats` (differences of two snapshots, so other users of a
//! shared server keep their counters) and the server process's CPU time from `/proc`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use multisession::{
    SessionContext, Sessions,
    stores::{CountingStore, RedisStore},
};
use redis::aio::MultiplexedConnection;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    hand::{self, Backend, Cas},
    pizza_bot::BotSession,
    report::{self, Spread, Target, env_usize},
    run_lazy,
    stores::clear_bot,
    workload::{Update, minimum, of_kind, partition, workload},
};

// ---------------------------------------------------------------------------------------
// The hand-written bot's backend

/// Plain `GET` and `SET` of JSON values under the bot's keys (behind a prefix of this
/// run), on one multiplexed connection shared by every worker. No compare-and-set: what
/// the "hand-written client doing GET + SET" is.
#[derive(Clone)]
struct RedisHand {
    conn: MultiplexedConnection,
    prefix: String,
}

impl Backend for RedisHand {
    type Rev = ();

    async fn get<T: DeserializeOwned + Send>(&self, key: &str) -> Option<(T, ())> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("GET");
        bytes.map(|bytes| (serde_json::from_slice(&bytes).expect("decode"), ()))
    }

    async fn put<T: Serialize + Sync>(&self, key: &str, value: &T, _: Cas<()>) {
        let mut conn = self.conn.clone();
        let value = serde_json::to_vec(value).expect("encode");
        let () = redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(value)
            .query_async(&mut conn)
            .await
            .expect("SET");
    }

    async fn delete(&self, key: &str) {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

impl RedisHand {
    /// Deletes every key the bot may have written for `updates` (not timed).
    async fn reset(&self, updates: &[Update]) {
        let mut keys = BTreeSet::new();
        for update in updates {
            if let Some(chat) = update.ctx.chat_id() {
                keys.insert(format!("{}pizza:{chat}", self.prefix));
            }
            if let Some(user) = update.ctx.user_id() {
                keys.insert(format!("{}settings:{user}", self.prefix));
            }
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the server says and spends

/// Per command: calls and microseconds, from `INFO commandstats`.
type CommandStats = BTreeMap<String, (u64, u64)>;

fn parse_commandstats(info: &str) -> CommandStats {
    let mut stats = CommandStats::new();
    for line in info.lines() {
        let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let field = |wanted: &str| {
            fields.split(',').find_map(|f| {
                let (k, v) = f.split_once('=')?;
                (k == wanted).then(|| v.parse::<u64>().ok()).flatten()
            })
        };
        if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
            stats.insert(name.to_owned(), (calls, usec));
        }
    }
    stats
}

/// `after - before` per command, or `None` if a counter went down (someone reset the
/// statistics meanwhile).
fn stats_delta(before: &CommandStats, after: &CommandStats) -> Option<CommandStats> {
    let mut delta = CommandStats::new();
    for (name, &(calls, usec)) in after {
        let (c0, u0) = before.get(name).copied().unwrap_or((0, 0));
        if calls < c0 || usec < u0 {
            return None;
        }
        if calls > c0 {
            delta.insert(name.clone(), (calls - c0, usec - u0));
        }
    }
    Some(delta)
}

/// The server: its statistics over our connection, its process's CPU time when it runs
/// on this machine.
struct Server {
    conn: MultiplexedConnection,
    /// The server's process id, when `/proc` has it.
    pid: Option<u32>,
    /// Where its CPU time comes from.
    cpu_source: &'static str,
}

impl Server {
    async fn connect(url: &str, conn: MultiplexedConnection) -> Server {
        let mut server = Server {
            conn,
            pid: None,
            cpu_source: "",
        };
        let info = server.info("server").await;
        let pid = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let local = matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]");
        let comm = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok());
        match (pid, local, comm) {
            (Some(pid), true, Some(comm)) if comm.trim().starts_with("redis-server") => {
                server.pid = Some(pid);
                server.cpu_source = if cpu_schedstat(pid).is_some() {
                    "/proc/<pid>/task/*/schedstat (ns on CPU, all threads)"
                } else if cpu_stat(pid).is_some() {
                    "/proc/<pid>/stat (utime + stime, 10 ms ticks)"
                } else {
                    server.pid = None;
                    ""
                };
                if server.pid.is_none() {
                    println!("Redis server CPU: SKIPPED, /proc/{pid} is not readable\n");
                } else {
                    println!(
                        "Redis server CPU: process {pid}, from {}\n",
                        server.cpu_source
                    );
                }
            }
            (pid, local, _) => println!(
                "Redis server CPU: SKIPPED, the server process is not visible here \
                 (process_id {pid:?}, host {host:?}{})\n",
                if local { "" } else { ", not loopback" }
            ),
        }
        server
    }

    async fn info(&mut self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await
            .expect("INFO")
    }

    async fn commandstats(&mut self) -> CommandStats {
        parse_commandstats(&self.info("commandstats").await)
    }

    /// The server process's CPU time so far, in nanoseconds.
    fn cpu_ns(&self) -> Option<u64> {
        let pid = self.pid?;
        cpu_schedstat(pid).or_else(|| cpu_stat(pid))
    }

    /// Runs `phase`, returning what it timed itself, the server CPU it cost and the
    /// command statistics of its span.
    async fn measure<F: Future<Output = Duration>>(&mut self, phase: F) -> Measured {
        let before = self.commandstats().await;
        let cpu_before = self.cpu_ns();
        let elapsed = phase.await;
        let cpu_after = self.cpu_ns();
        let after = self.commandstats().await;
        Measured {
            elapsed,
            cpu_ns: cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
            stats: stats_delta(&before, &after),
        }
    }
}

/// Sum of every thread's time on CPU (`schedstat`'s first field, ns).
fn cpu_schedstat(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// `utime + stime` of `/proc/<pid>/stat`, in ns (at 100 ticks a second).
fn cpu_stat(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

struct Measured {
    elapsed: Duration,
    cpu_ns: Option<u64>,
    stats: Option<CommandStats>,
}

// ---------------------------------------------------------------------------------------
// redis-benchmark

/// `redis-benchmark -h H -p P -t get,set -c 1 -n N -q`: SET and GET requests per second,
/// or why not.
fn redis_benchmark(url: &str, n: usize) -> Result<(f64, f64), String> {
    let url = url::Url::parse(url).map_err(|e| format!("cannot parse the URL: {e}"))?;
    if url.scheme() != "redis" {
        return Err(format!("scheme {} (only redis://)", url.scheme()));
    }
    let mut command = Command::new("redis-benchmark");
    command
        .arg("-h")
        .arg(url.host_str().unwrap_or("127.0.0.1"))
        .arg("-p")
        .arg(url.port().unwrap_or(6379).to_string());
    if let Some(password) = url.password() {
        command.arg("-a").arg(password);
        if !url.username().is_empty() {
            command.arg("--user").arg(url.username());
        }
    }
    if let Some(db) = url.path().strip_prefix('/').filter(|db| !db.is_empty()) {
        command.arg("--dbnum").arg(db);
    }
    command.args(["-t", "get,set", "-c", "1", "-n", &n.to_string(), "-q"]);
    let output = command
        .output()
        .map_err(|e| format!("redis-benchmark not runnable: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = |test: &str| {
        text.split(['\r', '\n'])
            .map(str::trim)
            .filter(|line| line.contains("requests per second"))
            .find_map(|line| {
                line.strip_prefix(test)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
    };
    match (rps("SET:"), rps("GET:")) {
        (Some(set), Some(get)) => Ok((set, get)),
        _ => Err(format!("unexpected output of redis-benchmark: {text:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// The phases

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    RedisBenchmark,
    GetSetSync,
    GetSet,
    LazySeq,
    HandSeq,
    Lazy(usize),
    /// Lazy on a store with `RedisConfig::combine_writes`, sequential and with workers.
    CombinedSeq,
    Combined(usize),
    Hand(usize),
}

impl Phase {
    fn label(self) -> String {
        match self {
            Phase::RedisBenchmark => "redis-benchmark -t get,set -c 1".to_owned(),
            Phase::GetSetSync => "in-bench GET/SET, redis crate, blocking connection".to_owned(),
            Phase::GetSet => {
                "in-bench GET/SET, redis crate, multiplexed async connection".to_owned()
            }
            Phase::LazySeq => "lazy, sequential".to_owned(),
            Phase::HandSeq => "hand-written redis bot, sequential".to_owned(),
            Phase::Lazy(w) => format!("lazy, {w} workers"),
            Phase::CombinedSeq => "lazy, combined writes, sequential".to_owned(),
            Phase::Combined(w) => format!("lazy, combined writes, {w} workers"),
            Phase::Hand(w) => format!("hand-written redis bot, {w} workers"),
        }
    }
}

/// One phase's numbers in one round.
#[derive(Clone, Debug)]
struct Sample {
    /// Operations (store operations, or GET/SET requests) per second.
    ops_per_s: f64,
    /// Updates per second (the bots).
    updates_per_s: Option<f64>,
    /// Server CPU per operation and per update, µs.
    cpu_per_op_us: Option<f64>,
    cpu_per_update_us: Option<f64>,
    stats: Option<CommandStats>,
    /// Operations the phase sent (for checking the statistics).
    ops: u64,
}

struct Setup {
    url: String,
    store: RedisStore,
    hand: RedisHand,
    seq: Vec<Update>,
    conc: Vec<Update>,
    getset_n: usize,
    workers: Vec<usize>,
}

/// Times `run` (what a phase measures; setup and cleanup stay outside).
async fn timed<F: Future>(run: F) -> Duration {
    let started = Instant::now();
    run.await;
    started.elapsed()
}

fn fresh(store: &RedisStore) -> Sessions<BotSession> {
    BotSession::builder().default_store(store.clone()).build()
}

/// Every worker's share on its own task, all at once; waits for all.
async fn lazy_workers(sessions: &Sessions<BotSession>, shares: Vec<Vec<Update>>) {
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let sessions = sessions.clone();
            tokio::spawn(async move { run_lazy(&sessions, &share).await })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a lazy worker");
    }
}

/// The same with the hand-written bot (one multiplexed connection shared by all).
async fn hand_workers(bot: &RedisHand, shares: Vec<Vec<Update>>) {
    let bot = Arc::new(bot.clone());
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let bot = bot.clone();
            tokio::spawn(async move { hand::run(&*bot, &share).await })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a hand-written worker");
    }
}

/// `n` SETs then `n` GETs of one key, one at a time on one connection (what
/// `redis-benchmark -c 1` does, with the client the store uses).
async fn get_set(conn: &MultiplexedConnection, key: &str, n: usize) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for _ in 0..n {
        let () = redis::cmd("SET")
            .arg(key)
            .arg("xxx")
            .query_async(&mut conn)
            .await
            .expect("SET");
    }
    for _ in 0..n {
        let _: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET");
    }
    started.elapsed()
}

/// The same on a blocking connection of the `redis` crate: no async runtime between the
/// loop and the socket (the closest to `redis-benchmark`'s C event loop).
fn get_set_blocking(conn: &mut redis::Connection, key: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let () = redis::cmd("SET")
            .arg(key)
            .arg("xxx")
            .query(conn)
            .expect("SET");
    }
    for _ in 0..n {
        let _: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(conn).expect("GET");
    }
    started.elapsed()
}

fn per_s(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// The part

pub async fn redis_part(url: &str, store: RedisStore) {
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(e) => {
            println!("## Redis, issue 11 item 1: SKIPPED, {url}: {e}\n");
            report::skipped("Redis, issue 11 item 1", &e.to_string());
            return;
        }
    };
    let conn = match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) => {
            println!("## Redis, issue 11 item 1: SKIPPED, {url} unreachable: {e}\n");
            report::skipped("Redis, issue 11 item 1", &format!("{url} unreachable"));
            return;
        }
    };
    let seq_n = env_usize("BENCH_REDIS_UPDATES", 20_000);
    let conc_n = env_usize("BENCH_REDIS_CONCURRENT_UPDATES", 100_000);
    let getset_n = env_usize("BENCH_REDIS_GETSET", 10_000).max(1);
    let rounds = env_usize("BENCH_REDIS_ROUNDS", 5).max(1);
    println!(
        "## Redis (loopback), issue 11 item 1: {seq_n} updates sequential, {conc_n} concurrent, \
         1 000 chats, 5 000 users; {getset_n} GET + {getset_n} SET; {rounds} rounds\n"
    );
    let _load = report::part_load("the Redis item-1 part");
    let mut server = Server::connect(url, conn.clone()).await;
    let setup = Setup {
        url: url.to_owned(),
        store,
        hand: RedisHand {
            conn: conn.clone(),
            prefix: format!("multisession-bench-hand:{}:", std::process::id()),
        },
        seq: workload(seq_n, 1_000, 5_000),
        conc: workload(conc_n, 1_000, 5_000),
        getset_n,
        workers: vec![64, 256],
    };
    let getset_key = format!("multisession-bench-getset:{}", std::process::id());
    // The same bot on a store that combines concurrent commits into one script call.
    let combined = {
        let config = multisession::stores::RedisConfig::new()
            .key_prefix("multisession-bench-combined:")
            .combine_writes(true);
        match RedisStore::connect_with(url, config).await {
            Ok(store) => Some(store),
            Err(e) => {
                println!("lazy with combined writes: SKIPPED, {e}\n");
                None
            }
        }
    };

    // Leftovers of an interrupted run.
    clear_bot(
        &BotSession::builder()
            .default_store(setup.store.clone())
            .build(),
    )
    .await;
    if let Some(combined) = &combined {
        clear_bot(&fresh(combined)).await;
    }
    setup.hand.reset(&setup.conc).await;
    setup.hand.reset(&setup.seq).await;

    // Same replies from both bots, and lazy mode's operations on this stream (the
    // operations per second below count the minimum).
    let counting = CountingStore::new(setup.store.clone());
    let sessions = BotSession::builder()
        .default_store(counting.clone())
        .build();
    let lazy_replies = run_lazy(&sessions, &setup.seq).await;
    let (counted, least) = (counting.counts(), minimum(&setup.seq));
    clear_bot(&sessions).await;
    let exact = counted.reads == least.reads
        && counted.writes == least.writes
        && counted.operations() == least.operations()
        && counted.round_trips() == least.round_trips();
    println!(
        "Lazy store operations on the sequential stream: {} reads, {} writes (the minimum: {}, {}){}\n",
        counted.reads,
        counted.writes,
        least.reads,
        least.writes,
        if exact { "" } else { ": NOT the minimum" }
    );
    report::check(
        "Redis (item-1 stream, 1 000 chats): lazy operations = the oracle minimum",
        exact,
        &format!(
            "{:.3} ops/update (minimum {:.3})",
            counted.operations() as f64 / setup.seq.len() as f64,
            least.operations() as f64 / setup.seq.len() as f64
        ),
    );
    let hand_replies = hand::run(&setup.hand, &setup.seq).await;
    setup.hand.reset(&setup.seq).await;
    assert_eq!(
        lazy_replies, hand_replies,
        "lazy and the hand-written redis bot disagree"
    );

    // Which commands the store reads with: a read-only stream (`/start`: the settings
    // are never written), so what else a phase sends is the write path.
    let starts = of_kind(&setup.seq, "/start");
    let sessions = fresh(&setup.store);
    let reads = server
        .measure(timed(run_lazy(&sessions, &starts)))
        .await
        .stats;
    clear_bot(&sessions).await;
    let read_commands: BTreeSet<String> = reads
        .iter()
        .flatten()
        .map(|(name, _)| name.clone())
        .filter(|name| name != "info")
        .collect();
    println!(
        "Commands of the store's reads (a lazy run of the {} `/start` updates alone): {}\n",
        starts.len(),
        if read_commands.is_empty() {
            "not known (statistics reset meanwhile)".to_owned()
        } else {
            read_commands.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    );

    let benchmark = Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok();
    if !benchmark {
        println!("redis-benchmark: SKIPPED, not on PATH (the in-bench equivalent runs)\n");
    }
    let mut phases = vec![Phase::GetSet, Phase::LazySeq, Phase::HandSeq];
    if combined.is_some() {
        phases.push(Phase::CombinedSeq);
    }
    let mut blocking = match client.get_connection() {
        Ok(blocking) => {
            phases.insert(0, Phase::GetSetSync);
            Some(blocking)
        }
        Err(e) => {
            println!("in-bench GET/SET on a blocking connection: SKIPPED, {e}\n");
            None
        }
    };
    if benchmark {
        phases.insert(0, Phase::RedisBenchmark);
    }
    for &w in &setup.workers {
        phases.push(Phase::Lazy(w));
        if combined.is_some() {
            phases.push(Phase::Combined(w));
        }
        phases.push(Phase::Hand(w));
    }
    let shares: HashMap<usize, Vec<Vec<Update>>> = setup
        .workers
        .iter()
        .map(|&w| (w, partition(&setup.conc, w)))
        .collect();
    let seq_min = minimum(&setup.seq);
    let seq_ops = seq_min.operations();
    let lazy_writes = seq_min.write_calls;
    let conc_ops = minimum(&setup.conc).operations();

    let mut samples: BTreeMap<Phase, Vec<Option<Sample>>> = BTreeMap::new();
    let mut benchmark_error = None;
    for round in 0..rounds {
        for step in 0..phases.len() {
            let phase = phases[(round + step) % phases.len()];
            let sample = match phase {
                Phase::RedisBenchmark => {
                    let mut result = None;
                    let url = setup.url.clone();
                    let m = server
                        .measure(async {
                            let started = Instant::now();
                            result = Some(redis_benchmark(&url, setup.getset_n));
                            started.elapsed()
                        })
                        .await;
                    match result.expect("ran") {
                        Ok((set, get)) => {
                            let ops = 2 * setup.getset_n as u64;
                            Sample {
                                // Both tests' requests over both tests' time.
                                ops_per_s: 2.0 / (1.0 / set + 1.0 / get),
                                updates_per_s: None,
                                cpu_per_op_us: m.cpu_ns.map(|c| c as f64 / 1e3 / ops as f64),
                                cpu_per_update_us: None,
                                stats: m.stats,
                                ops,
                            }
                        }
                        Err(error) => {
                            benchmark_error = Some(error);
                            samples.entry(phase).or_default().push(None);
                            continue;
                        }
                    }
                }
                Phase::GetSet | Phase::GetSetSync => {
                    let m = if phase == Phase::GetSet {
                        server
                            .measure(get_set(&conn, &getset_key, setup.getset_n))
                            .await
                    } else {
                        let blocking = blocking.as_mut().expect("connected");
                        let (key, n) = (&getset_key, setup.getset_n);
                        server
                            .measure(async move { get_set_blocking(blocking, key, n) })
                            .await
                    };
                    let ops = 2 * setup.getset_n as u64;
                    Sample {
                        ops_per_s: per_s(ops, m.elapsed),
                        updates_per_s: None,
                        cpu_per_op_us: m.cpu_ns.map(|c| c as f64 / 1e3 / ops as f64),
                        cpu_per_update_us: None,
                        stats: m.stats,
                        ops,
                    }
                }
                Phase::LazySeq => {
                    let sessions = fresh(&setup.store);
                    let m = server.measure(timed(run_lazy(&sessions, &setup.seq))).await;
                    clear_bot(&sessions).await;
                    bot_sample(m, seq_ops, setup.seq.len())
                }
                Phase::HandSeq => {
                    let m = server
                        .measure(timed(hand::run(&setup.hand, &setup.seq)))
                        .await;
                    setup.hand.reset(&setup.seq).await;
                    bot_sample(m, seq_ops, setup.seq.len())
                }
                Phase::Lazy(w) => {
                    let sessions = fresh(&setup.store);
                    let shares = shares[&w].clone();
                    let m = server.measure(timed(lazy_workers(&sessions, shares))).await;
                    clear_bot(&sessions).await;
                    bot_sample(m, conc_ops, setup.conc.len())
                }
                Phase::CombinedSeq => {
                    let sessions = fresh(combined.as_ref().expect("connected"));
                    let m = server.measure(timed(run_lazy(&sessions, &setup.seq))).await;
                    clear_bot(&sessions).await;
                    bot_sample(m, seq_ops, setup.seq.len())
                }
                Phase::Combined(w) => {
                    let sessions = fresh(combined.as_ref().expect("connected"));
                    let shares = shares[&w].clone();
                    let m = server.measure(timed(lazy_workers(&sessions, shares))).await;
                    clear_bot(&sessions).await;
                    bot_sample(m, conc_ops, setup.conc.len())
                }
                Phase::Hand(w) => {
                    let shares = shares[&w].clone();
                    let m = server
                        .measure(timed(hand_workers(&setup.hand, shares)))
                        .await;
                    setup.hand.reset(&setup.conc).await;
                    bot_sample(m, conc_ops, setup.conc.len())
                }
            };
            samples.entry(phase).or_default().push(Some(sample));
        }
    }
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg(&getset_key)
        .arg("key:__rand_int__")
        .query_async(&mut conn.clone())
        .await;
    if let Some(error) = &benchmark_error {
        println!("redis-benchmark: FAILED in some rounds: {error}\n");
    }

    // The table of phases.
    println!(
        "Each phase {rounds} times, all phases back to back in each round (rotating order); \
         median (min–max) over rounds. Server CPU: the redis-server process's CPU time over \
         the phase, per operation and per update.\n"
    );
    println!(
        "| phase | store ops/s (GET/SET requests/s) | updates/s | server CPU µs/op | server CPU µs/update |"
    );
    println!("|---|---|---|---|---|");
    let show = |values: Vec<f64>, digits: usize| -> String {
        if values.is_empty() {
            return "—".to_owned();
        }
        let s = Spread::of(&values);
        format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        )
    };
    for (phase, list) in &samples {
        let list: Vec<&Sample> = list.iter().flatten().collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            phase.label(),
            show(list.iter().map(|s| s.ops_per_s).collect(), 0),
            show(list.iter().filter_map(|s| s.updates_per_s).collect(), 0),
            show(list.iter().filter_map(|s| s.cpu_per_op_us).collect(), 2),
            show(list.iter().filter_map(|s| s.cpu_per_update_us).collect(), 2),
        );
    }
    println!();

    // Paired per-round ratios (a phase missing in a round drops that round's pair).
    let paired = |a: Phase, b: Phase, f: &dyn Fn(&Sample) -> Option<f64>| -> Option<Spread> {
        let (a, b) = (samples.get(&a)?, samples.get(&b)?);
        let pairs: Vec<f64> = a
            .iter()
            .zip(b)
            .filter_map(|(a, b)| Some(f(a.as_ref()?)? / f(b.as_ref()?)?))
            .collect();
        (!pairs.is_empty()).then(|| Spread::of(&pairs))
    };
    let ops = |s: &Sample| Some(s.ops_per_s);
    let updates = |s: &Sample| s.updates_per_s;
    // Reports `a` against `b` by `f` when both phases ran.
    let report_pair =
        |a: Phase, b: Phase, f: &dyn Fn(&Sample) -> Option<f64>, what: &str, target: Target| {
            if let Some(spread) = paired(a, b, f) {
                report::ratio(what, spread, target);
            }
        };

    println!("Issue 11, item 1:\n");
    match paired(Phase::LazySeq, Phase::RedisBenchmark, &ops) {
        Some(spread) => report::ratio(
            "Redis: lazy sequential store ops/s vs redis-benchmark -t get,set -c 1",
            spread,
            Target::AtLeast(0.9),
        ),
        None => report::skipped(
            "Redis: lazy sequential store ops/s vs redis-benchmark",
            benchmark_error
                .as_deref()
                .unwrap_or("redis-benchmark not on PATH"),
        ),
    }
    report_pair(
        Phase::LazySeq,
        Phase::GetSetSync,
        &ops,
        "Redis: lazy sequential store ops/s vs in-bench GET/SET (redis crate, blocking connection)",
        Target::AtLeast(0.9),
    );
    report_pair(
        Phase::LazySeq,
        Phase::GetSet,
        &ops,
        "Redis: lazy sequential store ops/s vs in-bench GET/SET (redis crate, multiplexed async connection, as the store)",
        Target::AtLeast(0.9),
    );
    report_pair(
        Phase::LazySeq,
        Phase::HandSeq,
        &updates,
        "Redis: lazy vs hand-written redis bot, sequential (updates/s)",
        Target::None,
    );
    report_pair(
        Phase::CombinedSeq,
        Phase::LazySeq,
        &updates,
        "Redis: lazy with combined writes vs without, sequential (updates/s)",
        Target::None,
    );
    for &w in &setup.workers {
        report_pair(
            Phase::Lazy(w),
            Phase::Hand(w),
            &updates,
            &format!("Redis: lazy vs hand-written redis bot, {w} workers (updates/s)"),
            Target::AtLeast(0.8),
        );
        report_pair(
            Phase::Combined(w),
            Phase::Hand(w),
            &updates,
            &format!(
                "Redis: lazy with combined writes vs hand-written redis bot, {w} workers (updates/s)"
            ),
            Target::AtLeast(0.8),
        );
    }

    // Server time per write: the write command found in the lazy phases' statistics.
    write_cost(&samples, &read_commands, lazy_writes);

    // Server CPU from /proc.
    let cpu_op = |s: &Sample| s.cpu_per_op_us;
    let cpu_update = |s: &Sample| s.cpu_per_update_us;
    if server.pid.is_some() {
        report_pair(
            Phase::LazySeq,
            Phase::GetSet,
            &cpu_op,
            "Redis: server CPU per store op (/proc), lazy sequential vs in-bench GET/SET",
            Target::AtMost(1.3),
        );
        report_pair(
            Phase::LazySeq,
            Phase::RedisBenchmark,
            &cpu_op,
            "Redis: server CPU per store op (/proc), lazy sequential vs redis-benchmark",
            Target::AtMost(1.3),
        );
        report_pair(
            Phase::LazySeq,
            Phase::HandSeq,
            &cpu_update,
            "Redis: server CPU per update (/proc), lazy vs hand-written bot, sequential",
            Target::None,
        );
        for &w in &setup.workers {
            report_pair(
                Phase::Lazy(w),
                Phase::Hand(w),
                &cpu_update,
                &format!(
                    "Redis: server CPU per update (/proc), lazy vs hand-written bot, {w} workers"
                ),
                Target::None,
            );
            report_pair(
                Phase::Combined(w),
                Phase::Hand(w),
                &cpu_update,
                &format!(
                    "Redis: server CPU per update (/proc), lazy with combined writes vs hand-written bot, {w} workers"
                ),
                Target::None,
            );
        }
    } else {
        report::skipped(
            "Redis: server CPU per store op (/proc)",
            "the server process is not readable here",
        );
    }
    println!();
}

fn bot_sample(m: Measured, ops: u64, updates: usize) -> Sample {
    Sample {
        ops_per_s: per_s(ops, m.elapsed),
        updates_per_s: Some(per_s(updates as u64, m.elapsed)),
        cpu_per_op_us: m.cpu_ns.map(|c| c as f64 / 1e3 / ops as f64),
        cpu_per_update_us: m.cpu_ns.map(|c| c as f64 / 1e3 / updates as f64),
        stats: m.stats,
        ops,
    }
}

/// The write command (the non-read command with the most server time in the lazy
/// sequential phases: a script or `EXEC` includes the commands it runs) against `set`
/// of the GET/SET phases, round by round; and the lazy phases' command table.
fn write_cost(
    samples: &BTreeMap<Phase, Vec<Option<Sample>>>,
    read_commands: &BTreeSet<String>,
    lazy_writes: u64,
) {
    let (Some(lazy), Some(getset)) = (samples.get(&Phase::LazySeq), samples.get(&Phase::GetSet))
    else {
        return;
    };
    // All lazy rounds together, to find the command and show the table.
    let mut total = CommandStats::new();
    let mut rounds_with_stats = 0u64;
    for stats in lazy.iter().flatten().filter_map(|s| s.stats.as_ref()) {
        rounds_with_stats += 1;
        for (name, &(calls, usec)) in stats {
            let entry = total.entry(name.clone()).or_default();
            entry.0 += calls;
            entry.1 += usec;
        }
    }
    let candidates = || {
        total
            .iter()
            .filter(|(name, _)| !read_commands.contains(*name) && name.as_str() != "info")
    };
    let Some((write, _)) = candidates()
        .max_by_key(|(_, (_, usec))| *usec)
        .map(|(n, v)| (n.clone(), *v))
    else {
        println!("Redis write command: not found (no statistics of the lazy phases)\n");
        report::skipped(
            "Redis: server µs per lazy write vs SET",
            "no command statistics",
        );
        return;
    };
    let writes = lazy_writes * rounds_with_stats;
    println!(
        "\nServer time by command over the {rounds_with_stats} lazy sequential phases \
         (`INFO commandstats` differences; {writes} lazy writes, {} store reads; commands a \
         script runs are counted both on their own line and in the script's time):\n",
        lazy.iter().flatten().next().map_or(0, |s| s.ops) * rounds_with_stats - writes
    );
    println!("| command | calls | calls per lazy write | µs per call | µs per lazy write |");
    println!("|---|---|---|---|---|");
    for (name, &(calls, usec)) in &total {
        if name == "info" {
            continue;
        }
        println!(
            "| {name}{} | {calls} | {:.2} | {:.2} | {:.2} |",
            if *name == write {
                " (the write command)"
            } else if read_commands.contains(name) {
                " (read)"
            } else {
                ""
            },
            calls as f64 / writes as f64,
            usec as f64 / calls as f64,
            usec as f64 / writes as f64,
        );
    }
    let mut ratios = Vec::new();
    let mut foreign = Vec::new();
    for (l, g) in lazy.iter().zip(getset) {
        let (Some(l), Some(g)) = (l, g) else { continue };
        let (Some(ls), Some(gs)) = (&l.stats, &g.stats) else {
            continue;
        };
        let (Some(&(wc, wu)), Some(&(sc, su))) = (ls.get(&write), gs.get("set")) else {
            continue;
        };
        if wc != lazy_writes {
            foreign.push(format!("{write}: {wc} calls for our {lazy_writes} writes"));
        }
        if sc != g.ops / 2 {
            foreign.push(format!("set: {sc} calls for our {}", g.ops / 2));
        }
        ratios.push((wu as f64 / wc as f64) / (su as f64 / sc as f64));
    }
    // `set`'s µs per call in the rounds of one phase, printed after `label`.
    let show_set = |label: &str, rounds: &[Option<Sample>]| {
        let us: Vec<f64> = rounds
            .iter()
            .flatten()
            .filter_map(|g| {
                g.stats
                    .as_ref()?
                    .get("set")
                    .map(|&(c, u)| u as f64 / c as f64)
            })
            .collect();
        if !us.is_empty() {
            let s = Spread::of(&us);
            println!(
                "{label}: {:.2} µs per call ({:.2}–{:.2})",
                s.median, s.min, s.max
            );
        }
    };
    println!();
    show_set(
        "`set` in the in-bench GET/SET phases (multiplexed connection)",
        getset,
    );
    if let Some(bench) = samples.get(&Phase::RedisBenchmark) {
        show_set("`set` in the redis-benchmark phases", bench);
    }
    foreign.dedup();
    if !foreign.is_empty() {
        println!(
            "\nNOTE: other clients used the server during these phases, the statistics include \
             their commands: {}",
            foreign.join("; ")
        );
    }
    println!();
    if ratios.is_empty() {
        report::skipped(
            "Redis: server µs per lazy write vs SET",
            "no paired statistics",
        );
    } else {
        report::ratio(
            &format!("Redis: server µs per lazy write (`{write}` usec_per_call) vs SET"),
            Spread::of(&ratios),
            Target::AtMost(1.3),
        );
    }
}
