//! What the command says when something is wrong, and its exit status.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, multisession_cmd, ok, run, runtime};

#[test]
fn bad_urls_and_missing_stores() {
    for (url, expected, status) in [
        ("bot.db", "bad store URL `bot.db`: no scheme", 2),
        ("mysql://localhost/bot", "unknown scheme `mysql`", 2),
        ("sqlite://", "no file path", 2),
        (
            "sqlite:///nonexistent/dir/bot.db",
            "no SQLite database at /nonexistent/dir/bot.db",
            1,
        ),
        (
            "memory:/nonexistent/s.snapshot",
            "no memory-store snapshot",
            1,
        ),
    ] {
        let mut cmd = multisession_cmd();
        cmd.args(["--store", url, "count", "pizza"]);
        let (_, stderr, code) = run(cmd);
        assert_eq!(code, status, "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
    }
    let mut cmd = multisession_cmd();
    cmd.args(["count", "pizza"]);
    let (_, stderr, code) = run(cmd);
    assert_eq!(code, 2);
    assert!(stderr.contains("pass --store URL"), "{stderr}");
    let mut cmd = multisession_cmd();
    cmd.args([
        "--store",
        "redis://127.0.0.1:6379",
        "--table",
        "t",
        "count",
        "pizza",
    ]);
    let (_, stderr, code) = run(cmd);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--table applies to sqlite:// and postgres://"),
        "{stderr}"
    );
}

#[test]
fn unreachable_servers_fail_within_the_timeout() {
    // Nothing listens on port 1.
    for url in [
        "redis://127.0.0.1:1",
        "postgres://postgres@127.0.0.1:1/test",
    ] {
        let started = Instant::now();
        let mut cmd = multisession_cmd();
        cmd.args(["--store", url, "--connect-timeout", "2", "list", "pizza"]);
        let (_, stderr, code) = run(cmd);
        assert_eq!(code, 1, "{url}: {stderr}");
        assert!(
            stderr.contains("cannot open") && stderr.contains(url),
            "{url}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{url}: took {:?}",
            started.elapsed()
        );
    }
}

/// A fresh SQLite store holding `value` under `key` (written with the store API, as
/// another program or an older codec might have).
fn sqlite_holding(
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) -> (tokio::runtime::Runtime, Backend) {
    let rt = runtime();
    let backend = Backend::sqlite();
    rt.block_on(async {
        let store = backend.open().await.unwrap();
        store.as_dyn().write(key, value, ttl).await.unwrap();
    });
    (rt, backend)
}

#[test]
fn undecodable_values_are_shown_raw_and_never_rewritten() {
    let raw = b"\x93\x01\xa4pizza".to_vec(); // MessagePack, say: not JSON
    let (rt, backend) = sqlite_holding("pizza:7", &raw, None);
    let (stdout, _) = ok(backend.cli(&["get", "pizza", "7"]));
    assert!(stdout.contains("value (not JSON"), "{stdout}");
    assert!(stdout.contains("kwGkcGl6emE="), "{stdout}");
    let (stdout, _) = ok(backend.cli(&["get", "pizza", "7", "--json"]));
    assert!(
        stdout.contains(r#""value":null"#) && stdout.contains(r#""value_base64":"kwGkcGl6emE=""#),
        "{stdout}"
    );
    let (_, stderr, code) = run(backend.cli(&["set", "pizza", "7", "{}"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("does not hold JSON"), "{stderr}");
    let (stdout, _) = ok(backend.cli(&["list", "pizza", "--long"]));
    assert!(stdout.contains("not json"), "{stdout}");
    rt.block_on(async {
        let store = backend.open().await.unwrap();
        assert_eq!(
            store.as_dyn().read("pizza:7").await.unwrap().unwrap().value,
            raw,
            "rewritten"
        );
    });
    // Exported and imported as the bytes they are.
    let (dump, _) = ok(backend.cli(&["export", "pizza"]));
    assert!(
        dump.contains(r#""key":"pizza:7","value":"kwGkcGl6emE=""#),
        "{dump}"
    );
    rt.block_on(backend.cleanup());
}

#[test]
fn set_refuses_what_it_cannot_know() {
    let (rt, backend) = sqlite_holding("pizza:1", b"{\"count\":1}", None);
    // A fragment with nothing stored is most likely a typo.
    let (_, stderr, code) = run(backend.cli(&["set", "piza", "1", "{}"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("fragments found: pizza") && stderr.contains("--force"),
        "{stderr}"
    );
    ok(backend.cli(&["set", "piza", "1", "{}", "--force"]));
    // A new key of a known fragment is fine, from standard input too.
    let mut cmd = backend.cli(&["set", "pizza", "2", "-", "--version", "3"]);
    cmd.write_stdin("{\"count\": 2}");
    let (_, stderr) = ok(cmd);
    assert!(stderr.contains("set `pizza:2`"), "{stderr}");
    let (stdout, _) = ok(backend.cli(&["get", "pizza", "2", "--json"]));
    assert!(
        stdout.contains(r#""version":3"#) && stdout.contains(r#""value":{"count":2}"#),
        "{stdout}"
    );
    let (_, _, code) = run(backend.cli(&["set", "pizza", "2", "{}", "--revision", "1", "--force"]));
    assert_eq!(code, 2, "--revision and --force together");
    rt.block_on(backend.cleanup());
}

#[test]
fn sweep_says_what_it_did() {
    let (rt, backend) = sqlite_holding("quiz:1", b"1", Some(Duration::from_millis(10)));
    std::thread::sleep(Duration::from_millis(50));
    let (stdout, _) = ok(backend.cli(&["sweep"]));
    assert_eq!(stdout.trim(), "removed 1 expired values");
    if let Some(redis) = rt.block_on(Backend::redis()) {
        let (stdout, _) = ok(redis.cli(&["sweep"]));
        assert!(
            stdout.contains("nothing to do: Redis removes expired values by itself"),
            "{stdout}"
        );
        rt.block_on(redis.cleanup());
    }
    rt.block_on(backend.cleanup());
}

#[test]
fn every_subcommand_explains_itself_with_an_example() {
    for sub in [
        "list", "count", "get", "set", "delete", "clear", "sweep", "export", "import",
    ] {
        let mut cmd = multisession_cmd();
        cmd.args([sub, "--help"]);
        let (stdout, _) = ok(cmd);
        assert!(
            stdout.contains("Example") && stdout.contains("multisession --store"),
            "{sub}: {stdout}"
        );
    }
}
