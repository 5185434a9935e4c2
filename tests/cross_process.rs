//! The session rules across real OS processes (DESIGN.md §3 S17, §7 S25–S29).
//!
//! Every multi-process test here re-runs this very test binary as child processes with
//! `--exact child_worker` and the job in `MSXP_*` environment variables; the child reports
//! what it did as `MSXP <kind> key=value …` lines on stdout, which the parent parses. The
//! parent bounds its wait on every child ([`CHILD_TIMEOUT`]): a child still running then
//! is killed and the test fails. A child left over by a failing parent is killed when its
//! [`Worker`] is dropped.
//!
//! - S17/S29: 4 processes × 500 increments of one key, default `Config`: no increment
//!   lost, no error (no `Conflict`), on SQLite, Redis, a Redis Cluster and PostgreSQL.
//! - S27: two fragments on two stores, incremented together by 4 processes: never half
//!   applied.
//! - S25: the same updates (explicit update ids) delivered to two processes at once change
//!   each fragment once, also for a per-user fragment fed from several chats.
//! - S26: a process killed between its writes to two stores leaves one written and one
//!   not; redelivering the update completes it without applying the written one twice.
//! - S26/S28: a SQLite write lock held (by the `sqlite3` CLI, another process) past a short
//!   `op_timeout`: the update succeeds, or fails saying `Unknown`, never `Nothing` with a
//!   write landing afterwards.
//!
//! Every test uses its own chat ids, SQLite file, Redis key prefix and PostgreSQL table,
//! and removes them at the end (also when it fails). Servers come from
//! `MULTISESSION_REDIS_URL` / `MULTISESSION_POSTGRES_URL` (loopback defaults); a missing
//! server skips the test visibly, or fails it under `MULTISESSION_REQUIRE_SERVICES=1`.
//!
//! Run: `cargo test --all-features --test cross_process -- --nocapture` (add
//! `--test-threads=1` for wall times that are not shared with the other tests).
#![cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
#![cfg_attr(
    not(all(feature = "sqlite", feature = "redis", feature = "postgres")),
    allow(dead_code, unused_imports)
)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write as _},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use multisession::{
    ChatContext, Config, Error, MultiSession, Sessions, Stats, Stored, envelope,
    store::{Capabilities, Outcome, Page, Record, Store, StoreError, StoreRef, Write},
    testing::{block_on, service_unavailable, unique_namespace},
};

/// The longest a parent waits for its children (per phase) before killing them.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// S29: processes hammering one key.
const HAMMER_PROCESSES: usize = 4;
const HAMMER_TASKS: usize = 4;
const HAMMER_PER_TASK: usize = 125; // 4 tasks × 125 = 500 increments per process

/// S27: processes updating two stores at once.
const PAIR_PROCESSES: usize = 4;
const PAIR_TASKS: usize = 3;
const PAIR_PER_TASK: usize = 100; // 3 × 100 = 300 updates per process

/// S25: updates delivered to two processes.
const TWIN_UPDATES: u64 = 200;
/// Both processes finish a batch before either starts the next, so an update reaches the
/// second process while fewer than `Config::remember_updates` (32) other updates changed
/// the same value: the window within which S25 promises to recognise it.
const TWIN_BATCH: u64 = 16;
const TWIN_CHATS: usize = 4;

#[derive(MultiSession)]
struct Counter {
    hits: u64,
}

#[derive(MultiSession)]
struct Pair {
    a: u64,
    b: u64,
}

#[derive(MultiSession)]
struct Twin {
    hits: u64,
    #[session(key = multisession::keys::user)]
    other: u64,
}

// ---------------------------------------------------------------------------------------
// Stores and their clean-up
// ---------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("MULTISESSION_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_cluster_urls() -> Vec<String> {
    multisession::testing::stores::redis_cluster_urls()
}

fn postgres_url() -> String {
    std::env::var("MULTISESSION_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A chat id no other run uses, so runs (and tests running at once) never share a counter.
fn unique_chat() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(unique_namespace().as_bytes());
    -((hasher.finish() >> 2) as i64) - 1
}

/// A name made of the unique namespace: letters, digits and `_` only.
fn unique_word() -> String {
    unique_namespace()
        .trim_end_matches(':')
        .trim_start_matches("ms-test-")
        .replace('-', "_")
}

/// One store a test uses, as the parent and its children open it.
#[derive(Clone, Debug)]
enum Spec {
    /// A SQLite file (path).
    Sqlite(String),
    /// Redis under a key prefix of its own.
    Redis(String),
    /// A Redis Cluster (`RedisStore::connect_cluster`) under a key prefix of its own.
    RedisCluster(String),
    /// A PostgreSQL table of its own.
    Postgres(String),
}

impl Spec {
    fn sqlite() -> Spec {
        let path = std::env::temp_dir().join(format!("multisession-xp-{}.db", unique_word()));
        Spec::Sqlite(path.to_str().expect("utf-8 temp path").to_owned())
    }

    fn redis() -> Spec {
        Spec::Redis(format!("ms-xp:{}", unique_namespace()))
    }

    fn redis_cluster() -> Spec {
        Spec::RedisCluster(format!("ms-xp:{}", unique_namespace()))
    }

    fn postgres() -> Spec {
        // At most 48 characters: `ms_xp_` + pid + nanos + n.
        let word = unique_word();
        let table: String = format!("ms_xp_{word}").chars().take(48).collect();
        Spec::Postgres(table)
    }

    fn kind(&self) -> &'static str {
        match self {
            Spec::Sqlite(_) => "sqlite",
            Spec::Redis(_) => "redis",
            Spec::RedisCluster(_) => "redis-cluster",
            Spec::Postgres(_) => "postgres",
        }
    }

    fn encode(&self) -> String {
        match self {
            Spec::Sqlite(v) | Spec::Redis(v) | Spec::RedisCluster(v) | Spec::Postgres(v) => {
                format!("{}={v}", self.kind())
            }
        }
    }

    fn decode(text: &str) -> Spec {
        let (kind, value) = text.split_once('=').expect("a store spec kind=value");
        let value = value.to_owned();
        match kind {
            "sqlite" => Spec::Sqlite(value),
            "redis" => Spec::Redis(value),
            "redis-cluster" => Spec::RedisCluster(value),
            "postgres" => Spec::Postgres(value),
            other => panic!("unknown store kind {other}"),
        }
    }

    /// Opens the store; `None` (after a visible skip message) if its server is down,
    /// a panic instead under `MULTISESSION_REQUIRE_SERVICES=1`.
    async fn open(&self) -> Option<StoreRef> {
        match self {
            #[cfg(feature = "sqlite")]
            Spec::Sqlite(path) => Some(StoreRef::new(
                multisession::stores::SqliteStore::open(path)
                    .await
                    .unwrap_or_else(|e| panic!("open sqlite {path}: {e}")),
            )),
            #[cfg(feature = "redis")]
            Spec::Redis(prefix) => {
                let url = redis_url();
                let config = multisession::stores::RedisConfig::new().key_prefix(prefix.clone());
                match multisession::stores::RedisStore::connect_with(&url, config).await {
                    Ok(store) => Some(StoreRef::new(store)),
                    Err(e) => service_unavailable("redis", &url, e),
                }
            }
            #[cfg(feature = "redis")]
            Spec::RedisCluster(prefix) => {
                let urls = redis_cluster_urls();
                let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
                let config = multisession::stores::RedisConfig::new().key_prefix(prefix.clone());
                match multisession::stores::RedisStore::connect_cluster(&nodes, config).await {
                    Ok(store) => Some(StoreRef::new(store)),
                    Err(e) => service_unavailable("redis cluster", &urls.join(","), e),
                }
            }
            #[cfg(feature = "postgres")]
            Spec::Postgres(table) => {
                let url = postgres_url();
                let config = multisession::stores::PostgresConfig::new().table(table.clone());
                match multisession::stores::PostgresStore::connect_with(&url, config).await {
                    Ok(store) => Some(StoreRef::new(store)),
                    Err(e) => service_unavailable("postgresql", &url, e),
                }
            }
            #[allow(unreachable_patterns)]
            other => panic!("store {} is not compiled in", other.kind()),
        }
    }

    /// Removes what the test stored: the SQLite file, the Redis keys under the prefix,
    /// the PostgreSQL table. Runs outside any runtime (from `Drop`).
    fn cleanup(&self) {
        match self {
            Spec::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            Spec::Redis(prefix) => block_on(async {
                let Ok(client) = redis::Client::open(redis_url()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                // The prefix is made of letters, digits, `-` and `:`: no glob characters.
                let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for key in keys {
                    let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
                }
            }),
            // Every node named (masters and replicas alike: a replica refuses the
            // deletes, its master's copy goes).
            Spec::RedisCluster(prefix) => block_on(async {
                for url in redis_cluster_urls() {
                    let Ok(client) = redis::Client::open(url) else {
                        continue;
                    };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        continue;
                    };
                    // `{tag}prefix...`; the prefix has no glob characters.
                    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                        .arg(format!("{{*}}{prefix}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    for key in keys {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(key).query_async(&mut conn).await;
                    }
                }
            }),
            #[cfg(feature = "postgres")]
            Spec::Postgres(table) => block_on(async {
                let config = multisession::stores::PostgresConfig::new().table(table.clone());
                let Ok(store) =
                    multisession::stores::PostgresStore::connect_with(&postgres_url(), config)
                        .await
                else {
                    return;
                };
                let Ok(client) = store.pool().get().await else {
                    return;
                };
                let _ = client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS \"{table}\"; DROP SEQUENCE IF EXISTS \"{table}_revision_seq\";"
                    ))
                    .await;
            }),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

/// The stores of one test: opened once by the parent before any child starts (which
/// creates tables and checks servers), removed when dropped.
struct Fixture {
    specs: Vec<Spec>,
}

impl Fixture {
    /// `None` if a store's server is unavailable (the test then skips).
    fn new(specs: Vec<Spec>) -> Option<Fixture> {
        let fixture = Fixture { specs };
        let specs = fixture.specs.clone();
        let ready = block_on(async move {
            for spec in &specs {
                if spec.open().await.is_none() {
                    return false;
                }
            }
            true
        });
        ready.then_some(fixture)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for spec in &self.specs {
            spec.cleanup();
        }
    }
}

/// The counter a raw stored value holds (update list stripped).
fn decode_count(bytes: &[u8]) -> u64 {
    serde_json::from_slice(envelope::payload(bytes))
        .unwrap_or_else(|e| panic!("stored counter {bytes:?} does not decode: {e}"))
}

/// The raw record of `key` (fragment prefix included, e.g. `hits:-42`).
async fn raw(store: &StoreRef, key: &str) -> Option<Vec<u8>> {
    store
        .as_dyn()
        .read(key)
        .await
        .unwrap_or_else(|e| panic!("raw read of {key}: {e}"))
        .map(|record| record.value)
}

/// The counter stored under `key` (0 if missing) and whether its record lists `id`.
async fn count_of(store: &StoreRef, key: &str, id: Option<u64>) -> (Option<u64>, bool) {
    match raw(store, key).await {
        None => (None, false),
        Some(bytes) => {
            let listed = id.is_some_and(|id| envelope::split(&bytes).0.contains(id));
            (Some(decode_count(&bytes)), listed)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Children: the parent side
// ---------------------------------------------------------------------------------------

/// One `MSXP <kind> key=value …` line of a child.
#[derive(Clone, Debug)]
struct Report {
    kind: String,
    fields: HashMap<String, String>,
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        // libtest may have printed `test child_worker ... ` on the same line.
        let mut words = line[line.find("MSXP ")?..].split_whitespace();
        if words.next()? != "MSXP" {
            return None;
        }
        let kind = words.next()?.to_owned();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Report { kind, fields })
    }

    fn num(&self, field: &str) -> u64 {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("report {self:?} has no `{field}`"))
            .parse()
            .unwrap_or_else(|e| panic!("report {self:?}: `{field}`: {e}"))
    }
}

/// A child process running `child_worker` with a job; killed when dropped unfinished.
struct Worker {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Worker {
    fn spawn(name: impl Into<String>, job: &[(&str, String)], lockstep: bool) -> Worker {
        let name = name.into();
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = Command::new(exe);
        command
            .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
            .stdin(if lockstep {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in job {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn a child process");
        let stdout = child.stdout.take().expect("child stdout");
        let stdin = child.stdin.take();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            name,
            child: Some(child),
            stdin,
            lines,
            output: Vec::new(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn fail(&mut self, why: String) -> ! {
        self.kill();
        while let Ok(line) = self.lines.try_recv() {
            self.output.push(line);
        }
        panic!(
            "child {}: {why}\n--- its stdout ---\n{}",
            self.name,
            self.output.join("\n")
        );
    }

    /// Sends a line to the child's stdin (lockstep children).
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("a lockstep child");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            self.fail(format!("could not write to its stdin: {e}"));
        }
    }

    /// The child's next report of `kind`, waiting until `deadline`.
    fn expect(&mut self, kind: &str, deadline: Instant) -> Report {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let report = Report::parse(&line);
                    self.output.push(line);
                    if let Some(report) = report
                        && report.kind == kind
                    {
                        return report;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail(format!(
                    "no `{kind}` report within {CHILD_TIMEOUT:?}; killed"
                )),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.fail(format!("exited ({status:?}) before its `{kind}` report"))
                }
            }
        }
    }

    /// Waits for the child to exit (killing it at `deadline`); its status and reports.
    fn finish(mut self, deadline: Instant) -> (ExitStatus, Vec<Report>) {
        drop(self.stdin.take());
        let status = loop {
            let child = self.child.as_mut().expect("a running child");
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => self.fail(format!("still running after {CHILD_TIMEOUT:?}; killed")),
                Err(e) => self.fail(format!("could not wait for it: {e}")),
            }
        };
        self.child = None;
        // The reader thread ends at EOF, shortly after the exit.
        let drain_until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = drain_until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.output.push(line),
                Err(_) => break,
            }
        }
        for line in &self.output {
            if let Some(at) = line.find("MSXP ") {
                println!("[{}] {}", self.name, &line[at..]);
            }
        }
        let reports = self
            .output
            .iter()
            .filter_map(|l| Report::parse(l))
            .collect();
        (status, reports)
    }

    /// [`Worker::finish`], failing the test unless the child succeeded.
    fn finish_ok(self, deadline: Instant) -> Vec<Report> {
        let name = self.name.clone();
        let (status, reports) = self.finish(deadline);
        assert!(
            status.success(),
            "child {name} failed ({status}); its reports: {reports:#?}"
        );
        reports
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn stats_of(reports: &[Report]) -> &Report {
    reports
        .iter()
        .find(|r| r.kind == "stats")
        .unwrap_or_else(|| panic!("no stats report among {reports:#?}"))
}

/// Sums `field` over the stats reports of all children.
fn total(all: &[Vec<Report>], field: &str) -> u64 {
    all.iter().map(|r| stats_of(r).num(field)).sum()
}

// ---------------------------------------------------------------------------------------
// Children: the child side
// ---------------------------------------------------------------------------------------

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child: {name} is not set"))
}

fn num_var<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    var(name)
        .parse()
        .unwrap_or_else(|e| panic!("child: {name}: {e:?}"))
}

async fn child_store(var_name: &str) -> StoreRef {
    Spec::decode(&var(var_name))
        .open()
        .await
        .unwrap_or_else(|| panic!("child: store {var_name} unavailable"))
}

fn report_stats(ok: u64, errors: u64, stats: Stats) {
    println!(
        "MSXP stats ok={ok} errors={errors} conflicts={} commit_retries={} contention_retries={} retries={} repeats={} writes={} updates={} reads={}",
        stats.conflicts,
        stats.commit_retries,
        stats.contention_retries,
        stats.retries,
        stats.repeats,
        stats.writes,
        stats.updates,
        stats.reads,
    );
}

/// Prints an error of a child (the first few in full).
fn report_error(errors: &std::sync::atomic::AtomicU64, what: &str, error: &Error) {
    let n = errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if n < 10 {
        println!(
            "MSXP error n={n} what={what} stored={:?} update_id={:?} msg={}",
            error.stored(),
            error.update_id(),
            error.to_string().replace(char::is_whitespace, "_")
        );
    }
}

/// The child: selected by the parent with `--exact child_worker`; does nothing otherwise.
#[test]
fn child_worker() {
    let Ok(mode) = std::env::var("MSXP_MODE") else {
        return;
    };
    block_on(async move {
        match mode.as_str() {
            "hammer" => child_hammer().await,
            "pair" => child_pair().await,
            "twin" => child_twin().await,
            "kill" => child_kill().await,
            "redeliver" => child_redeliver().await,
            "show" => child_show().await,
            other => panic!("child: unknown mode {other}"),
        }
    });
}

/// Runs `tasks` tasks of `per_task` updates each (`update(sessions, task, n)`), reports
/// the counts and the stats on stdout, and fails if any update failed.
async fn run_counted<S, F, Fut>(
    sessions: Sessions<S>,
    tasks: u64,
    per_task: u64,
    what: &'static str,
    update: F,
) where
    S: multisession::MultiSession,
    F: Fn(Sessions<S>, u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (sessions, ok, errors, update) =
                (sessions.clone(), ok.clone(), errors.clone(), update.clone());
            tokio::spawn(async move {
                for n in 0..per_task {
                    match update(sessions.clone(), task, n).await {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => report_error(&errors, what, &e),
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("child task");
    }
    let errors = errors.load(Ordering::SeqCst);
    report_stats(ok.load(Ordering::SeqCst), errors, sessions.stats());
    assert_eq!(errors, 0, "child: {errors} of the {what} updates failed");
}

/// S29: `MSXP_TASKS` tasks × `MSXP_PER_TASK` increments of `hits` in chat `MSXP_CHAT`,
/// default config.
async fn child_hammer() {
    let store = child_store("MSXP_A").await;
    let chat: i64 = num_var("MSXP_CHAT");
    let (tasks, per_task): (u64, u64) = (num_var("MSXP_TASKS"), num_var("MSXP_PER_TASK"));
    let sessions: Sessions<Counter> = Counter::builder().default_store(store).build();
    run_counted(
        sessions,
        tasks,
        per_task,
        "increment",
        move |sessions, _, _| async move {
            sessions
                .run(&ChatContext::new(chat), |s| async move {
                    *s.hits().await? += 1;
                    Ok::<_, Error>(())
                })
                .await
        },
    )
    .await;
}

/// S27: `a` on `MSXP_A`, `b` on `MSXP_B`, both per chat; each update increments both.
async fn child_pair() {
    let (store_a, store_b) = (child_store("MSXP_A").await, child_store("MSXP_B").await);
    let chat: i64 = num_var("MSXP_CHAT");
    let (tasks, per_task): (u64, u64) = (num_var("MSXP_TASKS"), num_var("MSXP_PER_TASK"));
    // Explicit update ids (`MSXP_ID_BASE` + task * 100 000 + n) if given, else generated.
    let base: Option<u64> = std::env::var("MSXP_ID_BASE")
        .ok()
        .map(|b| b.parse().unwrap());
    // For diagnosis (tests/scripts/s27_pair_repro.sh): `MSXP_REMEMBER` sets
    // `Config::remember_updates`; the tests use the default config.
    let config = match std::env::var("MSXP_REMEMBER") {
        Ok(n) => Config::new().remember_updates(n.parse().unwrap()),
        Err(_) => Config::new(),
    };
    let sessions: Sessions<Pair> = Pair::builder().a(store_a).b(store_b).config(config).build();
    run_counted(
        sessions,
        tasks,
        per_task,
        "pair",
        move |sessions, task, n| async move {
            let ctx = match base {
                Some(base) => ChatContext::new(chat).with_update_id(base + task * 100_000 + n),
                None => ChatContext::new(chat),
            };
            sessions
                .run(&ctx, |s| async move {
                    *s.a().await? += 1;
                    *s.b().await? += 1;
                    Ok::<_, Error>(())
                })
                .await
        },
    )
    .await;
}

/// S25: updates `1..=MSXP_UPDATES` (plus `MSXP_ID_BASE`), update `i` from chat
/// `chats[i % n]` and user `MSXP_USER`, in batches of `MSXP_BATCH`: each batch starts when
/// the parent says `go`, its updates run at once (one task each, spawned in `MSXP_ORDER`),
/// and `MSXP done` reports its end.
async fn child_twin() {
    use std::sync::{Arc, atomic::AtomicU64};
    let store = child_store("MSXP_A").await;
    let chats: Vec<i64> = var("MSXP_CHATS")
        .split(',')
        .map(|c| c.parse().expect("MSXP_CHATS"))
        .collect();
    let user: i64 = num_var("MSXP_USER");
    let (updates, batch, base): (u64, u64, u64) = (
        num_var("MSXP_UPDATES"),
        num_var("MSXP_BATCH"),
        num_var("MSXP_ID_BASE"),
    );
    let descending = var("MSXP_ORDER") == "desc";
    let sessions: Sessions<Twin> = Twin::builder().default_store(store).build();
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut first = 1;
    let mut number = 0;
    while first <= updates {
        let last = (first + batch - 1).min(updates);
        let mut go = String::new();
        let read = tokio::io::AsyncBufReadExt::read_line(&mut stdin, &mut go)
            .await
            .expect("child: read stdin");
        assert!(
            read > 0 && go.trim() == "go",
            "child: expected `go`, got {go:?}"
        );
        let mut ids: Vec<u64> = (first..=last).collect();
        if descending {
            ids.reverse();
        }
        let handles: Vec<_> = ids
            .into_iter()
            .map(|i| {
                let (sessions, ok, errors) = (sessions.clone(), ok.clone(), errors.clone());
                let ctx = ChatContext::new(chats[i as usize % chats.len()])
                    .with_user(user)
                    .with_update_id(base + i);
                tokio::spawn(async move {
                    let result = sessions
                        .run(&ctx, |s| async move {
                            *s.hits().await? += 1;
                            *s.other().await? += 1;
                            Ok::<_, Error>(())
                        })
                        .await;
                    match result {
                        Ok(()) => {
                            ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(e) => report_error(&errors, "twin", &e),
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("child task");
        }
        println!("MSXP done batch={number} last={last}");
        number += 1;
        first = last + 1;
    }
    let errors = errors.load(std::sync::atomic::Ordering::SeqCst);
    report_stats(
        ok.load(std::sync::atomic::Ordering::SeqCst),
        errors,
        sessions.stats(),
    );
    assert_eq!(errors, 0, "child: {errors} updates failed");
}

/// Exit code of a child killed on purpose between its two stores' writes.
const KILLED: i32 = 3;
/// Exit code of a kill child whose first store never listed the update.
const NEVER_LANDED: i32 = 4;
/// Exit code of a kill child whose update returned although it should have died.
const SURVIVED: i32 = 5;

/// A store whose `apply` waits until another store's record `watch_key` lists update
/// `id`, then ends the process before writing anything: a crash between the writes of
/// one update to two stores.
struct DieBeforeApply {
    inner: StoreRef,
    watch: StoreRef,
    watch_key: String,
    id: u64,
}

#[multisession::async_trait]
impl Store for DieBeforeApply {
    fn name(&self) -> &str {
        self.inner.as_dyn().name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.as_dyn().capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.as_dyn().read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.as_dyn().write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.as_dyn().delete(key).await
    }
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        self.inner.as_dyn().read_many(keys).await
    }
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.as_dyn().list(prefix, cursor, limit).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        // Bounded below the default 5 s `op_timeout` that bounds this call.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if let Ok(Some(record)) = self.watch.as_dyn().read(&self.watch_key).await
                && envelope::split(&record.value).0.contains(self.id)
            {
                println!(
                    "MSXP dying id={} writes={} (first store lists the update)",
                    self.id,
                    writes.len()
                );
                std::process::exit(KILLED);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("MSXP never_landed id={}", self.id);
        std::process::exit(NEVER_LANDED);
    }
}

/// S26: one update (`MSXP_ID`) incrementing `a` (on `MSXP_A`) and `b` (on `MSXP_B`,
/// wrapped so the process dies once `a` is written and before `b` is).
async fn child_kill() {
    let (store_a, store_b) = (child_store("MSXP_A").await, child_store("MSXP_B").await);
    let chat: i64 = num_var("MSXP_CHAT");
    let id: u64 = num_var("MSXP_ID");
    let dying = DieBeforeApply {
        inner: store_b,
        watch: store_a.clone(),
        watch_key: format!("a:{chat}"),
        id,
    };
    let sessions: Sessions<Pair> = Pair::builder().a(store_a).b(StoreRef::new(dying)).build();
    let result = sessions
        .run(&ChatContext::new(chat).with_update_id(id), |s| async move {
            *s.a().await? += 1;
            *s.b().await? += 1;
            Ok::<_, Error>(())
        })
        .await;
    println!("MSXP survived result={result:?}");
    std::process::exit(SURVIVED);
}

/// S26: the same update (`MSXP_ID`) delivered again, `MSXP_TIMES` times, plain stores.
async fn child_redeliver() {
    let (store_a, store_b) = (child_store("MSXP_A").await, child_store("MSXP_B").await);
    let chat: i64 = num_var("MSXP_CHAT");
    let id: u64 = num_var("MSXP_ID");
    let times: u32 = num_var("MSXP_TIMES");
    let sessions: Sessions<Pair> = Pair::builder().a(store_a).b(store_b).build();
    let errors = std::sync::atomic::AtomicU64::new(0);
    let mut ok = 0;
    for _ in 0..times {
        let result = sessions
            .run(&ChatContext::new(chat).with_update_id(id), |s| async move {
                *s.a().await? += 1;
                *s.b().await? += 1;
                Ok::<_, Error>(())
            })
            .await;
        match result {
            Ok(()) => ok += 1,
            Err(e) => report_error(&errors, "redeliver", &e),
        }
    }
    let errors = errors.into_inner();
    report_stats(ok, errors, sessions.stats());
    assert_eq!(errors, 0, "child: {errors} redeliveries failed");
}

/// Prints the counters `a` and `b` of chat `MSXP_CHAT` (for `tests/scripts/`).
async fn child_show() {
    let (store_a, store_b) = (child_store("MSXP_A").await, child_store("MSXP_B").await);
    let chat: i64 = num_var("MSXP_CHAT");
    let a = count_of(&store_a, &format!("a:{chat}"), None).await.0;
    let b = count_of(&store_b, &format!("b:{chat}"), None).await.0;
    println!("MSXP show a={} b={}", a.unwrap_or(0), b.unwrap_or(0));
}

// ---------------------------------------------------------------------------------------
// S17 / S29: 4 processes × 500 increments of one key, default config
// ---------------------------------------------------------------------------------------

fn s29_hammer(spec: Spec) {
    let kind = spec.kind();
    let Some(_fixture) = Fixture::new(vec![spec.clone()]) else {
        return;
    };
    let chat = unique_chat();
    let started = Instant::now();
    let deadline = started + CHILD_TIMEOUT;
    let workers: Vec<Worker> = (0..HAMMER_PROCESSES)
        .map(|i| {
            Worker::spawn(
                format!("{kind}-p{i}"),
                &[
                    ("MSXP_MODE", "hammer".into()),
                    ("MSXP_A", spec.encode()),
                    ("MSXP_CHAT", chat.to_string()),
                    ("MSXP_TASKS", HAMMER_TASKS.to_string()),
                    ("MSXP_PER_TASK", HAMMER_PER_TASK.to_string()),
                ],
                false,
            )
        })
        .collect();
    let all: Vec<Vec<Report>> = workers.into_iter().map(|w| w.finish_ok(deadline)).collect();
    let wall = started.elapsed();

    let expected = (HAMMER_PROCESSES * HAMMER_TASKS * HAMMER_PER_TASK) as u64;
    let count = block_on(async {
        let store = spec.open().await.expect("reopen the store");
        count_of(&store, &format!("hits:{chat}"), None).await.0
    });
    println!(
        "S29 {kind}: {HAMMER_PROCESSES} processes x {} increments (default Config): count={count:?} ok={} errors={} conflicts={} commit_retries={} contention_retries={} wall={:.2}s",
        HAMMER_TASKS * HAMMER_PER_TASK,
        total(&all, "ok"),
        total(&all, "errors"),
        total(&all, "conflicts"),
        total(&all, "commit_retries"),
        total(&all, "contention_retries"),
        wall.as_secs_f64(),
    );
    assert_eq!(total(&all, "errors"), 0, "some increments failed on {kind}");
    assert_eq!(
        total(&all, "ok"),
        expected,
        "not every run returned Ok on {kind}"
    );
    assert_eq!(
        count,
        Some(expected),
        "increments were lost (or doubled) across {HAMMER_PROCESSES} processes on {kind}"
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn s29_four_processes_500_increments_no_conflict_sqlite() {
    s29_hammer(Spec::sqlite());
}

#[cfg(feature = "redis")]
#[test]
fn s29_four_processes_500_increments_no_conflict_redis() {
    s29_hammer(Spec::redis());
}

#[cfg(feature = "redis")]
#[test]
fn s29_four_processes_500_increments_no_conflict_redis_cluster() {
    s29_hammer(Spec::redis_cluster());
}

#[cfg(feature = "postgres")]
#[test]
fn s29_four_processes_500_increments_no_conflict_postgres() {
    s29_hammer(Spec::postgres());
}

// ---------------------------------------------------------------------------------------
// S27: two stores, never half applied
// ---------------------------------------------------------------------------------------

fn s27_two_stores(spec_a: Spec, spec_b: Spec) {
    let label = format!("{}+{}", spec_a.kind(), spec_b.kind());
    let Some(_fixture) = Fixture::new(vec![spec_a.clone(), spec_b.clone()]) else {
        return;
    };
    let chat = unique_chat();
    let started = Instant::now();
    let deadline = started + CHILD_TIMEOUT;
    let workers: Vec<Worker> = (0..PAIR_PROCESSES)
        .map(|i| {
            Worker::spawn(
                format!("{label}-p{i}"),
                &[
                    ("MSXP_MODE", "pair".into()),
                    ("MSXP_A", spec_a.encode()),
                    ("MSXP_B", spec_b.encode()),
                    ("MSXP_CHAT", chat.to_string()),
                    ("MSXP_TASKS", PAIR_TASKS.to_string()),
                    ("MSXP_PER_TASK", PAIR_PER_TASK.to_string()),
                ],
                false,
            )
        })
        .collect();
    let all: Vec<Vec<Report>> = workers.into_iter().map(|w| w.finish_ok(deadline)).collect();
    let wall = started.elapsed();

    let (a, b) = block_on(async {
        let (store_a, store_b) = (spec_a.open().await.unwrap(), spec_b.open().await.unwrap());
        (
            count_of(&store_a, &format!("a:{chat}"), None).await.0,
            count_of(&store_b, &format!("b:{chat}"), None).await.0,
        )
    });
    let ok = total(&all, "ok");
    println!(
        "S27 {label}: {PAIR_PROCESSES} processes x {} updates of a and b: a={a:?} b={b:?} ok={ok} errors={} conflicts={} commit_retries={} wall={:.2}s",
        PAIR_TASKS * PAIR_PER_TASK,
        total(&all, "errors"),
        total(&all, "conflicts"),
        total(&all, "commit_retries"),
        wall.as_secs_f64(),
    );
    assert_eq!(total(&all, "errors"), 0, "some updates failed on {label}");
    assert_eq!(ok, (PAIR_PROCESSES * PAIR_TASKS * PAIR_PER_TASK) as u64);
    assert_eq!(
        a,
        Some(ok),
        "fragment a (on {}) != Ok updates",
        spec_a.kind()
    );
    assert_eq!(
        b,
        Some(ok),
        "fragment b (on {}) != Ok updates",
        spec_b.kind()
    );
}

#[cfg(all(feature = "sqlite", feature = "redis"))]
#[test]
fn s27_two_stores_never_half_applied_sqlite_redis() {
    s27_two_stores(Spec::sqlite(), Spec::redis());
}

#[cfg(all(feature = "sqlite", feature = "redis"))]
#[test]
fn s27_two_stores_never_half_applied_sqlite_redis_cluster() {
    s27_two_stores(Spec::sqlite(), Spec::redis_cluster());
}

#[cfg(all(feature = "sqlite", feature = "postgres"))]
#[test]
fn s27_two_stores_never_half_applied_sqlite_postgres() {
    s27_two_stores(Spec::sqlite(), Spec::postgres());
}

// ---------------------------------------------------------------------------------------
// S25: the same updates delivered to two processes at once
// ---------------------------------------------------------------------------------------

/// Both processes get updates `1..=TWIN_UPDATES` from `chats` (update `i` from
/// `chats[i % n]`) and one user, at once, in lockstep batches; returns nothing, asserts.
fn s25_deliver_twice(spec: &Spec, chats: &[i64], label: &str) {
    let kind = spec.kind();
    let user = unique_chat().unsigned_abs() as i64;
    // Ids far from those of other runs; no generated-id bit.
    let base = 1_000_000 + (user as u64 % 1_000_000) * 1_000;
    let chat_list = chats
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let started = Instant::now();
    let deadline = started + CHILD_TIMEOUT;
    let mut workers: Vec<Worker> = ["asc", "desc"]
        .into_iter()
        .enumerate()
        .map(|(i, order)| {
            Worker::spawn(
                format!("{kind}-{label}-p{i}"),
                &[
                    ("MSXP_MODE", "twin".into()),
                    ("MSXP_A", spec.encode()),
                    ("MSXP_CHATS", chat_list.clone()),
                    ("MSXP_USER", user.to_string()),
                    ("MSXP_UPDATES", TWIN_UPDATES.to_string()),
                    ("MSXP_BATCH", TWIN_BATCH.to_string()),
                    ("MSXP_ID_BASE", base.to_string()),
                    ("MSXP_ORDER", order.into()),
                ],
                true,
            )
        })
        .collect();
    let batches = TWIN_UPDATES.div_ceil(TWIN_BATCH);
    for _ in 0..batches {
        for worker in &mut workers {
            worker.send("go");
        }
        for worker in &mut workers {
            worker.expect("done", deadline);
        }
    }
    let all: Vec<Vec<Report>> = workers.into_iter().map(|w| w.finish_ok(deadline)).collect();
    let wall = started.elapsed();

    let (per_chat, other) = block_on(async {
        let store = spec.open().await.unwrap();
        let mut per_chat = Vec::new();
        for chat in chats {
            per_chat.push(count_of(&store, &format!("hits:{chat}"), None).await.0);
        }
        let other = count_of(&store, &format!("other:{user}"), None).await.0;
        (per_chat, other)
    });
    println!(
        "S25 {kind} {label}: {TWIN_UPDATES} updates to 2 processes: hits per chat={per_chat:?} other={other:?} ok={} errors={} writes={} repeats={} conflicts={} commit_retries={} contention_retries={} wall={:.2}s",
        total(&all, "ok"),
        total(&all, "errors"),
        total(&all, "writes"),
        total(&all, "repeats"),
        total(&all, "conflicts"),
        total(&all, "commit_retries"),
        total(&all, "contention_retries"),
        wall.as_secs_f64(),
    );
    assert_eq!(total(&all, "errors"), 0, "some updates failed on {kind}");
    assert_eq!(total(&all, "ok"), 2 * TWIN_UPDATES);
    for (i, (chat, count)) in chats.iter().zip(&per_chat).enumerate() {
        let expected = (1..=TWIN_UPDATES)
            .filter(|u| *u as usize % chats.len() == i)
            .count() as u64;
        assert_eq!(
            *count,
            Some(expected),
            "chat {chat}: updates applied {count:?} times, expected {expected} (each once) on {kind}"
        );
    }
    assert_eq!(
        other,
        Some(TWIN_UPDATES),
        "per-user fragment: {other:?}, expected {TWIN_UPDATES} (each update once) on {kind}"
    );
    // Each update changed two fragments, each exactly once in all processes together.
    assert_eq!(
        total(&all, "writes"),
        2 * TWIN_UPDATES,
        "fragment writes in all (exactly-once means 2 per update) on {kind}"
    );
}

fn s25_same_update_to_two_processes(spec: Spec) {
    let Some(_fixture) = Fixture::new(vec![spec.clone()]) else {
        return;
    };
    // One chat: the per-chat and per-user fragments see the same updates.
    s25_deliver_twice(&spec, &[unique_chat()], "one-chat");
    // Several chats: the per-user fragment gets concurrent updates from different chats.
    let chats: Vec<i64> = (0..TWIN_CHATS).map(|_| unique_chat()).collect();
    s25_deliver_twice(&spec, &chats, "four-chats");
}

#[cfg(feature = "sqlite")]
#[test]
fn s25_same_update_to_two_processes_changes_once_sqlite() {
    s25_same_update_to_two_processes(Spec::sqlite());
}

#[cfg(feature = "redis")]
#[test]
fn s25_same_update_to_two_processes_changes_once_redis() {
    s25_same_update_to_two_processes(Spec::redis());
}

#[cfg(feature = "postgres")]
#[test]
fn s25_same_update_to_two_processes_changes_once_postgres() {
    s25_same_update_to_two_processes(Spec::postgres());
}

// ---------------------------------------------------------------------------------------
// S26: killed between two stores, then redelivered
// ---------------------------------------------------------------------------------------

fn s26_killed_between(spec_a: Spec, spec_b: Spec) {
    let label = format!("{}+{}", spec_a.kind(), spec_b.kind());
    let Some(_fixture) = Fixture::new(vec![spec_a.clone(), spec_b.clone()]) else {
        return;
    };
    let chat = unique_chat();
    let id = 900_000_000 + chat.unsigned_abs() % 1_000_000;
    let (key_a, key_b) = (format!("a:{chat}"), format!("b:{chat}"));
    let job = |mode: &str| {
        vec![
            ("MSXP_MODE", mode.to_owned()),
            ("MSXP_A", spec_a.encode()),
            ("MSXP_B", spec_b.encode()),
            ("MSXP_CHAT", chat.to_string()),
            ("MSXP_ID", id.to_string()),
            ("MSXP_TIMES", "2".to_owned()),
        ]
    };
    let deadline = Instant::now() + CHILD_TIMEOUT;

    // 1. The update dies after `a` landed and before `b` was sent.
    let (status, reports) =
        Worker::spawn(format!("{label}-killed"), &job("kill"), false).finish(deadline);
    assert_eq!(
        status.code(),
        Some(KILLED),
        "the kill child should have died between the stores ({status}); reports: {reports:#?}"
    );
    let ((a, a_lists), (b, _)) = block_on(async {
        let (store_a, store_b) = (spec_a.open().await.unwrap(), spec_b.open().await.unwrap());
        (
            count_of(&store_a, &key_a, Some(id)).await,
            count_of(&store_b, &key_b, Some(id)).await,
        )
    });
    println!("S26 {label}: after the kill: a={a:?} (lists the update: {a_lists}) b={b:?}");
    assert_eq!(
        a,
        Some(1),
        "fragment a should have been written before the kill"
    );
    assert!(a_lists, "fragment a's record should list update {id}");
    assert_eq!(b, None, "fragment b must not have been written");

    // 2. The same update, delivered again to a fresh process (twice): completes it.
    let reports =
        Worker::spawn(format!("{label}-redelivered"), &job("redeliver"), false).finish_ok(deadline);
    let stats = stats_of(&reports);
    let ((a, a_lists), (b, b_lists)) = block_on(async {
        let (store_a, store_b) = (spec_a.open().await.unwrap(), spec_b.open().await.unwrap());
        (
            count_of(&store_a, &key_a, Some(id)).await,
            count_of(&store_b, &key_b, Some(id)).await,
        )
    });
    println!(
        "S26 {label}: after redelivering twice: a={a:?} b={b:?} writes={} repeats={} commit_retries={}",
        stats.num("writes"),
        stats.num("repeats"),
        stats.num("commit_retries"),
    );
    assert_eq!(
        a,
        Some(1),
        "fragment a applied twice (or lost) on redelivery"
    );
    assert_eq!(b, Some(1), "fragment b not completed by the redelivery");
    assert!(a_lists && b_lists, "both records list update {id}");
    assert_eq!(stats.num("ok"), 2);
    assert_eq!(
        stats.num("writes"),
        1,
        "the redeliveries should have written b only"
    );
    assert!(
        stats.num("repeats") >= 1,
        "the redelivery should have recognised a as done"
    );
}

#[cfg(all(feature = "sqlite", feature = "redis"))]
#[test]
fn s26_killed_between_two_stores_then_redelivered() {
    // a on SQLite lands; the process dies before b's write to Redis.
    s26_killed_between(Spec::sqlite(), Spec::redis());
}

#[cfg(all(feature = "sqlite", feature = "redis"))]
#[test]
fn s26_killed_between_two_stores_then_redelivered_swapped() {
    // a on Redis lands; the process dies before b's write to SQLite.
    s26_killed_between(Spec::redis(), Spec::sqlite());
}

#[cfg(all(feature = "sqlite", feature = "postgres"))]
#[test]
fn s26_killed_between_two_stores_then_redelivered_postgres() {
    // a on PostgreSQL lands; the process dies before b's write to SQLite.
    s26_killed_between(Spec::postgres(), Spec::sqlite());
}

// ---------------------------------------------------------------------------------------
// S26 / S28: a SQLite write lock held by another process past `op_timeout`
// ---------------------------------------------------------------------------------------

/// The `sqlite3` CLI holding `BEGIN IMMEDIATE` (the write lock) on a database file.
#[cfg(feature = "sqlite")]
struct SqliteLock {
    release: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "sqlite")]
impl SqliteLock {
    /// Takes the lock and returns once it is held (checked through `probe`, a store with
    /// no busy timeout); released `hold` after it was taken.
    async fn hold(path: &str, hold: Duration, probe: &StoreRef) -> SqliteLock {
        let mut cli = Command::new("sqlite3")
            .args(["-batch", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sqlite3");
        let mut stdin = cli.stdin.take().expect("sqlite3 stdin");
        writeln!(stdin, ".timeout 5000\nBEGIN IMMEDIATE;").expect("write to sqlite3");
        stdin.flush().expect("flush sqlite3");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if probe
                .as_dyn()
                .write("probe:lock", b"1", None)
                .await
                .is_err()
            {
                break; // Locked: the write could not start.
            }
            if Instant::now() > until {
                let _ = cli.kill();
                let _ = cli.wait();
                panic!("sqlite3 did not take the write lock within 5 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let locked_at = Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(hold.saturating_sub(locked_at.elapsed()));
            let _ = writeln!(stdin, "COMMIT;\n.quit");
            let _ = stdin.flush();
            drop(stdin);
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                match cli.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = cli.kill();
                        let _ = cli.wait();
                        return;
                    }
                }
            }
        });
        SqliteLock {
            release: Some(release),
        }
    }

    /// Waits until the lock was released and the CLI has exited.
    async fn released(mut self) {
        let release = self.release.take().expect("released once");
        tokio::task::spawn_blocking(move || release.join().expect("the release thread"))
            .await
            .expect("join the release thread");
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn s26_sqlite_lock_held_past_op_timeout_is_unknown_not_silent() {
    use multisession::{
        OnConflict,
        stores::{SqliteConfig, SqliteStore},
    };
    if let Err(e) = Command::new("sqlite3").arg("-version").output() {
        let _: Option<()> = service_unavailable("sqlite3 CLI", "$PATH", e);
        return;
    }
    let spec = Spec::sqlite();
    let Some(_fixture) = Fixture::new(vec![spec.clone()]) else {
        return;
    };
    let Spec::Sqlite(path) = spec.clone() else {
        unreachable!()
    };
    let op_timeout = Duration::from_millis(300);
    block_on(async move {
        let store = spec.open().await.unwrap();
        let probe = StoreRef::new(
            SqliteStore::open_with(
                &path,
                SqliteConfig::new()
                    .busy_timeout(Duration::ZERO)
                    .connections(1),
            )
            .await
            .expect("open the probe"),
        );
        // (case, policy, how long the other process holds the lock). SQLite's busy
        // timeout is 5 s: a write blocked by a lock held for 1.5 s lands when it is
        // released (after `run` gave up on it); one held for 6.5 s never lands.
        let cases = [
            (
                "default-1.5s",
                OnConflict::default(),
                Duration::from_millis(1500),
            ),
            ("fail-1.5s", OnConflict::Fail, Duration::from_millis(1500)),
            ("fail-6.5s", OnConflict::Fail, Duration::from_millis(6500)),
        ];
        for (n, (case, policy, hold)) in cases.into_iter().enumerate() {
            let chat = unique_chat();
            let id = 500_000 + n as u64;
            let key = format!("hits:{chat}");
            let ctx = ChatContext::new(chat).with_update_id(id);
            let sessions: Sessions<Counter> = Counter::builder()
                .default_store(store.clone())
                .config(
                    Config::new()
                        .on_conflict(policy)
                        .op_timeout(Some(op_timeout)),
                )
                .build();

            let lock = SqliteLock::hold(&path, hold, &probe).await;
            let started = Instant::now();
            let result = sessions
                .run(&ctx, |s| async move {
                    *s.hits().await? += 1;
                    Ok::<_, Error>(())
                })
                .await;
            let took = started.elapsed();
            // Through the probe's own connection: the store's connections may all be
            // busy in writes that `run` stopped waiting for.
            let seen_before_release = count_of(&probe, &key, Some(id)).await;
            lock.released().await;
            // Let a write blocked on the lock finish (it is waiting in SQLite's busy
            // handler on the blocking pool).
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let (settled, listed) = count_of(&store, &key, Some(id)).await;
            let said = result.as_ref().err().map(Error::stored);
            println!(
                "S26 sqlite lock {case}: run took {:.2}s -> {}; stored said {said:?}; value before release {:?}, after {settled:?} (lists the update: {listed}); stats {:?}",
                took.as_secs_f64(),
                match &result {
                    Ok(()) => "Ok".to_owned(),
                    Err(e) => format!("Err({e})"),
                },
                seen_before_release.0,
                sessions.stats(),
            );
            match &result {
                Ok(()) => assert_eq!(settled, Some(1), "{case}: Ok, so the update is stored once"),
                Err(error) => match error.stored() {
                    Stored::Nothing => assert_eq!(
                        settled, None,
                        "{case}: the error said nothing was written ({error}), yet a write landed"
                    ),
                    Stored::Unknown { written, unknown } => {
                        assert!(written.is_empty(), "{case}: one fragment: {written:?}");
                        assert_eq!(unknown, ["hits"], "{case}");
                        assert!(
                            matches!(settled, None | Some(1)),
                            "{case}: an unknown outcome is 0 or 1 increments, found {settled:?}"
                        );
                    }
                    other => panic!("{case}: a one-fragment update cannot be {other:?}: {error}"),
                },
            }
            if hold > Duration::from_secs(5) && policy == OnConflict::Fail {
                // The blocked write gave up in SQLite's busy handler: it must not land.
                assert_eq!(
                    settled, None,
                    "{case}: a write past the busy timeout landed"
                );
            }

            // The same update delivered again, default config: exactly one increment.
            let fresh: Sessions<Counter> = Counter::builder().default_store(store.clone()).build();
            fresh
                .run(&ctx, |s| async move {
                    *s.hits().await? += 1;
                    Ok::<_, Error>(())
                })
                .await
                .unwrap_or_else(|e| panic!("{case}: redelivery failed: {e}"));
            let (after, listed) = count_of(&store, &key, Some(id)).await;
            println!(
                "S26 sqlite lock {case}: after redelivery {after:?} (lists the update: {listed}); redelivery stats {:?}",
                fresh.stats()
            );
            assert_eq!(
                after,
                Some(1),
                "{case}: the update must be stored exactly once"
            );
            assert!(listed);
            if settled == Some(1) {
                assert_eq!(
                    fresh.stats().writes,
                    0,
                    "{case}: redelivery re-applied the update"
                );
            }
        }
    });
}
