//! Throughput of `multisession import` (and of a second, idempotent run, and of `export`)
//! with 100 000 sessions on every store. Ignored by default; run it in release mode:
//!
//! ```sh
//! cargo test --release -p multisession-cli --test import_bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_SESSIONS` changes the count. Each figure times the binary as a whole process
//! (start, connect, read the dump, write), on a dump generated like the bot's values: the
//! recorded update id, a small JSON body, a TTL on every third one.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use common::{Backend, ok, runtime};

fn dump(n: usize, path: &Path) {
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 24 * 3_600_000;
    let mut out = String::with_capacity(n * 120);
    out.push_str("{\"multisession_dump\":1,\"exported_at_ms\":0,\"store\":\"bench\"}\n");
    for i in 0..n {
        let body = format!(
            r#"{{"count":{},"toppings":["cheese","olive"],"lang":"en"}}"#,
            i % 97
        );
        let stored = multisession::envelope::join(
            multisession::envelope::split(b"").0,
            584_120_332 + i as u64,
            32,
            body.as_bytes(),
        );
        let value = base64::engine::general_purpose::STANDARD.encode(stored);
        let (chat, user) = (-100_000 - (i as i64 / 5), i % 5);
        if i % 3 == 0 {
            out.push_str(&format!(
                "{{\"key\":\"quiz:{chat}:{user}\",\"value\":\"{value}\",\"expires_at_ms\":{expires}}}\n"
            ));
        } else {
            out.push_str(&format!(
                "{{\"key\":\"pizza:{chat}:{user}\",\"value\":\"{value}\"}}\n"
            ));
        }
    }
    std::fs::write(path, out).unwrap();
}

fn timed(cmd: assert_cmd::Command) -> (Duration, String) {
    let started = Instant::now();
    let (stdout, stderr) = ok(cmd);
    let took = started.elapsed();
    (
        took,
        if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        },
    )
}

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn import_100k_sessions() {
    let n: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = runtime();
    let path = std::env::temp_dir().join(format!("mscli-bench-{}.jsonl", std::process::id()));
    dump(n, &path);
    let size = std::fs::metadata(&path).unwrap().len();
    println!("dump: {n} sessions, {:.1} MB", size as f64 / 1e6);
    let mut targets = vec![Backend::memory(), Backend::sqlite()];
    targets.extend(rt.block_on(Backend::redis()));
    targets.extend(rt.block_on(Backend::postgres()));
    println!("| store | import | import again (all identical) | export |");
    println!("|---|---|---|---|");
    let rate = |took: Duration| {
        format!(
            "{:.0}/s ({:.2} s)",
            n as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        )
    };
    for target in targets {
        let (import, summary) = timed(target.cli(&["import", path.to_str().unwrap()]));
        assert!(summary.contains(&format!(": {n} written")), "{summary}");
        let (again, summary) = timed(target.cli(&["import", path.to_str().unwrap()]));
        assert!(
            summary.contains(&format!(": 0 written, {n} already there")),
            "{summary}"
        );
        let started = Instant::now();
        let (stdout, _) = ok(target.cli(&["export"]));
        let export = started.elapsed();
        assert_eq!(stdout.lines().count(), n + 1);
        println!(
            "| {} | {} | {} | {} |",
            target.name(),
            rate(import),
            rate(again),
            rate(export)
        );
        rt.block_on(target.cleanup());
    }
    std::fs::remove_file(&path).ok();
}
