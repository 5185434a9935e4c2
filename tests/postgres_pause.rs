//! Fault injection on PostgreSQL (rules S25, S26, S28): the server is paused (SIGSTOP of
//! the postmaster and every backend) in the middle of a run of updates, and resumed ~3 s
//! later.
//!
//! - With `OnConflict::Fail` and a 500 ms `op_timeout`, every `run` returns within the
//!   timeout plus slack; no error says `Stored::Nothing` for a write that then lands (the
//!   counter ends within `[ok, ok + unknown]`); redelivering the failed updates (same ids)
//!   brings the counter to exactly the number of updates: each applied once, none twice.
//! - With the default policy (`RetryFor { budget: 20 s }`), every `run` returns `Ok`
//!   (the runtime re-runs), and the counter ends at exactly the number of updates.
//!
//! The shared server on 127.0.0.1:5432 is never touched: each test starts a PRIVATE
//! instance (`tests/scripts/own_postgres.sh`: initdb into a temp dir, a free loopback
//! port) and always stops and removes it (a drop guard, also on panic). Without the
//! PostgreSQL binaries the tests skip visibly, or fail under
//! `MULTISESSION_REQUIRE_SERVICES=1`.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-pg MULTISESSION_REQUIRE_SERVICES=1 \
//!     cargo test --all-features --test postgres_pause -- --nocapture
//! ```
#![cfg(feature = "postgres")]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use multisession::{
    ChatContext, Config, Error, MultiSession, OnConflict, Sessions, Stored,
    stores::{PostgresConfig, PostgresStore},
    testing::service_unavailable,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/own_postgres.sh");
const TABLE: &str = "pause_test";
const CHAT: i64 = 1;
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the server stays paused.
const PAUSE: Duration = Duration::from_secs(3);
/// An error must come back within this (op_timeout plus slack).
const ERROR_LIMIT: Duration = Duration::from_secs(3);
/// Each `run` under `OnConflict::Fail` past this is a hang: the test fails.
const FAIL_RUN_LIMIT: Duration = Duration::from_secs(10);
/// Each `run` under the default policy (20 s budget) past this is a hang.
const RETRY_RUN_LIMIT: Duration = Duration::from_secs(25);

/// The tests take turns: each pauses a server and measures timings on a 2-core box.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(MultiSession)]
struct Counter {
    hits: u64,
}

// ---------------------------------------------------------------- the private server

/// A private PostgreSQL instance; stopped and removed on drop.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    postmaster: u32,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    PathBuf::from(format!(
        "/tmp/multisession-pg-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn script(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("bash").arg(SCRIPT).args(args).output()
}

impl PrivatePostgres {
    /// Starts an instance, or `None` (skipped visibly) if PostgreSQL cannot be started
    /// here; panics instead under `MULTISESSION_REQUIRE_SERVICES=1`.
    fn start(tag: &str) -> Option<Self> {
        let what = "postgresql (private instance)";
        let mut last = String::new();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = free_port();
            let dir = unique_dir(tag);
            let dir_s = dir.to_str().expect("utf-8 temp dir").to_owned();
            let started = Instant::now();
            let out = match script(&["start", &dir_s, &port.to_string()]) {
                Ok(out) => out,
                Err(e) => return service_unavailable(what, SCRIPT, e),
            };
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let postmaster = stdout.trim().parse().unwrap_or_else(|_| {
                    let _ = script(&["stop", &dir_s]);
                    panic!("own_postgres.sh start printed no PID: {stdout:?} {stderr}")
                });
                eprintln!(
                    "private postgres: port {port}, dir {dir_s}, postmaster {postmaster}, started in {:?}",
                    started.elapsed()
                );
                return Some(Self {
                    dir,
                    port,
                    postmaster,
                });
            }
            // Whatever was half made, undo it.
            let _ = script(&["stop", &dir_s]);
            if out.status.code() == Some(3) {
                return service_unavailable(what, "initdb/pg_ctl", stderr);
            }
            last = format!("{} ({})", stderr, out.status);
        }
        service_unavailable(what, "127.0.0.1:<free port>", last)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn dir(&self) -> String {
        self.dir.to_str().expect("utf-8 temp dir").to_owned()
    }
}

/// `kill -SIG` the postmaster of `dir` and its children; the PIDs signalled.
fn signal(dir: &str, sig: &str) -> Result<String, String> {
    let out = script(&["signal", dir, sig]).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let dir = self.dir();
        match script(&["stop", &dir]) {
            Ok(out) if out.status.success() => {
                eprintln!(
                    "private postgres: stopped (postmaster {}) and removed {dir}",
                    self.postmaster
                )
            }
            Ok(out) => eprintln!(
                "private postgres: STOP FAILED for {dir}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("private postgres: STOP FAILED for {dir}: {e}"),
        }
    }
}

// ---------------------------------------------------------------- pausing

/// Pauses the server once, from inside a handler, and resumes it `PAUSE` later from a
/// thread.
struct Pauser {
    dir: String,
    paused_at: Mutex<Option<Instant>>,
    resumed_at: Arc<Mutex<Option<Instant>>>,
    resumer: Mutex<Option<JoinHandle<()>>>,
}

impl Pauser {
    fn new(dir: String) -> Self {
        Self {
            dir,
            paused_at: Mutex::new(None),
            resumed_at: Arc::new(Mutex::new(None)),
            resumer: Mutex::new(None),
        }
    }

    fn paused_at(&self) -> Option<Instant> {
        *self.paused_at.lock().unwrap()
    }

    fn resumed_at(&self) -> Option<Instant> {
        *self.resumed_at.lock().unwrap()
    }

    /// SIGSTOPs the instance (if not done yet) and starts the thread that resumes it.
    fn pause_once(&self) {
        let mut paused = self.paused_at.lock().unwrap();
        if paused.is_some() {
            return;
        }
        let pids = signal(&self.dir, "STOP").unwrap_or_else(|e| panic!("pausing failed: {e}"));
        let at = Instant::now();
        *paused = Some(at);
        eprintln!("paused (SIGSTOP) pids {pids}");
        let dir = self.dir.clone();
        let resumed_at = self.resumed_at.clone();
        *self.resumer.lock().unwrap() = Some(std::thread::spawn(move || {
            std::thread::sleep(PAUSE.saturating_sub(at.elapsed()));
            match signal(&dir, "CONT") {
                Ok(pids) => {
                    *resumed_at.lock().unwrap() = Some(Instant::now());
                    eprintln!("resumed (SIGCONT) pids {pids} after {:?}", at.elapsed());
                }
                Err(e) => eprintln!("resuming failed (instance gone?): {e}"),
            }
        }));
    }

    /// Waits (bounded) for the resuming thread.
    fn join(&self) {
        let handle = self.resumer.lock().unwrap().take();
        if let Some(handle) = handle {
            let deadline = Instant::now() + PAUSE + Duration::from_secs(10);
            while !handle.is_finished() {
                assert!(Instant::now() < deadline, "the resuming thread hangs");
                std::thread::sleep(Duration::from_millis(20));
            }
            handle.join().expect("resuming thread panicked");
        }
    }
}

// ---------------------------------------------------------------- updates

#[derive(Debug)]
struct Record {
    id: u64,
    started: Instant,
    elapsed: Duration,
    /// `None`: Ok; else the error's `stored()` and text.
    error: Option<(Stored, String)>,
}

#[derive(Debug, Default)]
struct Counts {
    ok: u64,
    nothing: u64,
    partly: u64,
    unknown: u64,
}

impl Counts {
    fn of(records: &[Record]) -> Self {
        let mut counts = Counts::default();
        for r in records {
            match &r.error {
                None => counts.ok += 1,
                Some((Stored::Nothing, _)) => counts.nothing += 1,
                Some((Stored::Partly { .. }, _)) => counts.partly += 1,
                Some((Stored::Unknown { .. }, _)) => counts.unknown += 1,
                Some((other, _)) => panic!("unexpected Stored variant {other:?}"),
            }
        }
        counts
    }
}

fn ctx(id: u64) -> ChatContext {
    ChatContext::new(CHAT).with_update_id(id)
}

/// One update: `hits += 1`; the update `pause_on` pauses the server after its load (so its
/// commit meets a paused server).
async fn bump(
    sessions: &Sessions<Counter>,
    id: u64,
    pause_on: Option<(u64, &Pauser)>,
) -> Result<(), Error> {
    sessions
        .run(&ctx(id), async |s| {
            *s.hits().await? += 1;
            if let Some((on, pauser)) = pause_on
                && on == id
            {
                pauser.pause_once();
            }
            Ok::<_, Error>(())
        })
        .await
}

/// Runs updates `first..first + n` in order; the one at index `pause_index` pauses the
/// server mid-run. Fails the test if one `run` takes longer than `limit`.
async fn run_updates(
    sessions: &Sessions<Counter>,
    first: u64,
    n: u64,
    pause_index: u64,
    pauser: &Pauser,
    limit: Duration,
) -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..n {
        let id = first + i;
        let started = Instant::now();
        let result = tokio::time::timeout(limit, bump(sessions, id, Some((first + pause_index, pauser))))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "update {id} (#{}) hung: `run` did not return within {limit:?} (paused at {:?}, resumed at {:?} relative to its start)",
                    i + 1,
                    pauser.paused_at().map(|p| rel(p, started)),
                    pauser.resumed_at().map(|p| rel(p, started)),
                )
            });
        let elapsed = started.elapsed();
        records.push(Record {
            id,
            started,
            elapsed,
            error: result.err().map(|e| (e.stored(), e.to_string())),
        });
    }
    records
}

/// `t - base` in ms, signed.
fn rel(t: Instant, base: Instant) -> i128 {
    if t >= base {
        (t - base).as_millis() as i128
    } else {
        -((base - t).as_millis() as i128)
    }
}

fn print_records(label: &str, records: &[Record], pauser: &Pauser) {
    let base = records
        .first()
        .map(|r| r.started)
        .unwrap_or_else(Instant::now);
    eprintln!(
        "[{label}] paused at +{:?} ms, resumed at +{:?} ms (from the first update)",
        pauser.paused_at().map(|p| rel(p, base)),
        pauser.resumed_at().map(|p| rel(p, base)),
    );
    let slowest_ok = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.elapsed)
        .max();
    for r in records {
        let slow = r.elapsed > Duration::from_millis(200);
        if r.error.is_some() || slow {
            eprintln!(
                "[{label}] update {} at +{} ms took {:?}: {}",
                r.id,
                rel(r.started, base),
                r.elapsed,
                match &r.error {
                    None => "Ok".to_owned(),
                    Some((stored, msg)) => format!("Err stored={stored:?}: {msg}"),
                }
            );
        }
    }
    eprintln!(
        "[{label}] {:?}; slowest Ok {slowest_ok:?}",
        Counts::of(records)
    );
}

async fn connect(pg: &PrivatePostgres) -> PostgresStore {
    let url = pg.url();
    tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::connect_with(&url, PostgresConfig::new().table(TABLE)),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {url} took over 30 s"))
    .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The stored counter, read through a fresh default-config session (bounded retries).
async fn read_counter(store: &PostgresStore) -> u64 {
    let reader = Counter::builder().default_store(store.clone()).build();
    let mut last = String::new();
    for _ in 0..10 {
        match tokio::time::timeout(
            Duration::from_secs(10),
            reader.load(&ChatContext::new(CHAT)),
        )
        .await
        {
            Ok(Ok(data)) => return data.hits,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "load took over 10 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cannot read the counter after resuming: {last}");
}

/// Redelivers every update of `records` that failed (same id) on a fresh default-config
/// `Sessions`, until `Ok` (bounded). Returns how many redeliveries were needed.
async fn redeliver_failed(store: &PostgresStore, records: &[Record]) -> u32 {
    let sessions = Counter::builder().default_store(store.clone()).build();
    let mut attempts = 0;
    for r in records.iter().filter(|r| r.error.is_some()) {
        let mut last = String::new();
        let mut done = false;
        for _ in 0..5 {
            attempts += 1;
            match tokio::time::timeout(RETRY_RUN_LIMIT, bump(&sessions, r.id, None)).await {
                Ok(Ok(())) => {
                    done = true;
                    break;
                }
                Ok(Err(e)) => last = format!("{e} (stored {:?})", e.stored()),
                Err(_) => last = format!("hung over {RETRY_RUN_LIMIT:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(done, "redelivering update {} never succeeded: {last}", r.id);
    }
    eprintln!("redelivery stats: {:?}", sessions.stats());
    attempts
}

/// The common checks after a paused run: errors are prompt, nothing lands that an error
/// called "nothing", and redelivery completes each update exactly once.
async fn check_after_resume(
    label: &str,
    store: &PostgresStore,
    records: &[Record],
    pauser: &Pauser,
) -> (Counts, u64) {
    pauser.join();
    assert!(
        pauser.resumed_at().is_some(),
        "[{label}] the server was never resumed"
    );
    print_records(label, records, pauser);

    // Let backends that the pause froze with a request in their socket finish it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = Counts::of(records);
    let after_resume = read_counter(store).await;
    let upper = counts.ok + counts.unknown + counts.partly;
    eprintln!(
        "[{label}] counter after resuming: {after_resume} (ok {}, unknown {}, partly {}, nothing {}: allowed [{}, {upper}])",
        counts.ok, counts.unknown, counts.partly, counts.nothing, counts.ok
    );
    let redelivered = redeliver_failed(store, records).await;
    let final_value = read_counter(store).await;
    eprintln!(
        "[{label}] after redelivering the {} failed updates ({redelivered} runs): counter {final_value} (expected {})",
        records.iter().filter(|r| r.error.is_some()).count(),
        records.len()
    );

    let slow: Vec<_> = records
        .iter()
        .filter(|r| r.error.is_some() && r.elapsed >= ERROR_LIMIT)
        .map(|r| (r.id, r.elapsed))
        .collect();
    assert!(
        slow.is_empty(),
        "[{label}] errors must return within {ERROR_LIMIT:?} (op_timeout {OP_TIMEOUT:?} + slack): {slow:?}"
    );
    assert!(
        after_resume >= counts.ok,
        "[{label}] a write reported Ok was lost: counter {after_resume} < ok {}",
        counts.ok
    );
    assert!(
        after_resume <= upper,
        "[{label}] an error said Stored::Nothing for a write that landed: counter {after_resume} > ok {} + unknown {} + partly {}",
        counts.ok,
        counts.unknown,
        counts.partly
    );
    assert_eq!(
        final_value,
        records.len() as u64,
        "[{label}] after redelivery every update must be applied exactly once"
    );
    (counts, final_value)
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s26_postgres_paused_mid_run_loses_nothing_and_applies_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let test_started = Instant::now();
    let Some(pg) = PrivatePostgres::start("fail") else {
        return;
    };
    let store = connect(&pg).await;
    // Remember more than the 32 default updates per value: an update whose outcome was
    // unknown is redelivered after up to ~40 later updates, and S25 promises recognition
    // only within the remembered window.
    let config = Config::new()
        .op_timeout(Some(OP_TIMEOUT))
        .on_conflict(OnConflict::Fail)
        .remember_updates(64);
    let sessions = Counter::builder()
        .default_store(store.clone())
        .config(config)
        .build();
    let pauser = Pauser::new(pg.dir());

    // 60 updates; the 21st pauses the server after its load, so its commit and the
    // updates after it meet a paused server until it is resumed ~3 s later.
    let records = run_updates(&sessions, 1000, 60, 20, &pauser, FAIL_RUN_LIMIT).await;
    eprintln!("[fail] runtime stats: {:?}", sessions.stats());
    let errors = records.iter().filter(|r| r.error.is_some()).count();
    assert!(pauser.paused_at().is_some(), "the server was never paused");
    let (counts, final_value) = check_after_resume("fail", &store, &records, &pauser).await;
    assert!(
        errors > 0,
        "no update failed while the server was paused for {PAUSE:?}: the pause did not bite"
    );
    assert!(
        matches!(records[20].error, Some((Stored::Unknown { .. }, _))),
        "the commit sent to the paused server (update 1020) must be reported Unknown: {:?}",
        records[20]
    );
    eprintln!(
        "[fail] RESULT ok {} unknown {} partly {} nothing {}; final {final_value}; test took {:?}",
        counts.ok,
        counts.unknown,
        counts.partly,
        counts.nothing,
        test_started.elapsed()
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s26_postgres_paused_default_policy_completes_every_commit_it_started() {
    let _serial = SERIAL.lock().await;
    let test_started = Instant::now();
    let Some(pg) = PrivatePostgres::start("retry") else {
        return;
    };
    let store = connect(&pg).await;
    let config = Config::new().op_timeout(Some(OP_TIMEOUT));
    let sessions = Counter::builder()
        .default_store(store.clone())
        .config(config)
        .build();
    let pauser = Pauser::new(pg.dir());

    // 30 updates; the 11th pauses the server after its load.
    let records = run_updates(&sessions, 5000, 30, 10, &pauser, RETRY_RUN_LIMIT).await;
    eprintln!("[retry] runtime stats: {:?}", sessions.stats());
    assert!(pauser.paused_at().is_some(), "the server was never paused");
    // The invariants first (they hold whatever the policy), then the policy's promise.
    let (counts, final_value) = check_after_resume("retry", &store, &records, &pauser).await;
    eprintln!(
        "[retry] RESULT ok {} unknown {} partly {} nothing {}; final {final_value}; test took {:?}",
        counts.ok,
        counts.unknown,
        counts.partly,
        counts.nothing,
        test_started.elapsed()
    );
    // The policy's promise: a commit that `run` started is completed by `run` (re-run
    // until the server is back); only updates whose load failed during the pause return,
    // and those wrote nothing.
    let incomplete: Vec<_> = records
        .iter()
        .filter_map(|r| {
            r.error.as_ref().and_then(|(stored, msg)| {
                (!matches!(stored, multisession::Stored::Nothing))
                    .then(|| format!("{} after {:?}: {stored:?}: {msg}", r.id, r.elapsed))
            })
        })
        .collect();
    assert!(
        incomplete.is_empty(),
        "with the default policy (RetryFor 20 s) no run may end with a partial or unknown commit across a {PAUSE:?} pause; {} did:\n{}",
        incomplete.len(),
        incomplete.join("\n")
    );
    // With none partial or unknown, `check_after_resume` has checked that the counter
    // equalled the Ok updates exactly before the failed ones were redelivered.
    drop(pg);
}
