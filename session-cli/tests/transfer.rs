//! Moving sessions: export from SQLite, import into PostgreSQL, Redis and a memory
//! snapshot; the library on the target sees the same sessions. Imports are idempotent and
//! resume where an interrupted one stopped.

mod common;

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::{Backend, Bot, Pizza, Settings, multisession_cmd, ok, run, runtime};
use multisession::{
    ChatContext, Config,
    store::{Record, StoreRef},
};

const CHATS: i64 = 40;

fn ctx(chat: i64) -> ChatContext {
    ChatContext::new(chat)
        .with_user(100 + chat)
        .with_update_id(5000 + chat as u64)
}

async fn write_sessions(store: StoreRef) {
    let sessions = Bot::builder().default_store(store.clone()).build();
    for chat in 1..=CHATS {
        sessions
            .run(&ctx(chat), async |s| {
                *s.pizza().await? = Pizza {
                    count: chat as u32,
                    toppings: vec!["cheese".into(); chat as usize % 3],
                };
                s.settings()
                    .set(Settings {
                        lang: if chat % 2 == 0 { "en" } else { "de" }.into(),
                        dark: chat % 5 == 0,
                    })
                    .await?;
                if chat % 4 != 0 {
                    s.quiz().set(Some(chat as u32 * 7)).await?;
                }
                Ok::<_, multisession::Error>(())
            })
            .await
            .expect("the bot's update");
    }
    let other = Bot::builder()
        .default_store(store.clone())
        .config(Config::new().bot(77))
        .build();
    other
        .run(&ctx(1), async |s| {
            s.pizza().await?.count = 700;
            Ok::<_, multisession::Error>(())
        })
        .await
        .expect("the other bot's update");
    // Bytes no codec of the bot reads: exported and imported as they are.
    store
        .as_dyn()
        .write(
            "legacy:raw",
            b"\xff\x00not json",
            Some(Duration::from_secs(600)),
        )
        .await
        .expect("a raw value");
}

async fn every_record(store: &StoreRef) -> BTreeMap<String, Record> {
    let mut all = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .as_dyn()
            .list("", cursor.as_deref(), 500)
            .await
            .expect("list the store");
        all.extend(page.entries);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// The same keys with the same bytes (so the same versions and recorded updates) and the
/// same expiry within a second; and the library loads the same sessions.
async fn same_sessions(source: &StoreRef, target: &StoreRef, name: &str) {
    let (a, b) = (every_record(source).await, every_record(target).await);
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{name}: the keys differ"
    );
    for key in a.keys() {
        let (from, from_ttl) = source.as_dyn().read_with_ttl(key).await.unwrap().unwrap();
        let (to, to_ttl) = target.as_dyn().read_with_ttl(key).await.unwrap().unwrap();
        assert_eq!(from.value, to.value, "{name}: the bytes of `{key}` differ");
        match (from_ttl, to_ttl) {
            (None, None) => {}
            (Some(x), Some(y)) => assert!(
                x.abs_diff(y) < Duration::from_secs(1),
                "{name}: `{key}` expires in {x:?} on the source, {y:?} on the target"
            ),
            other => panic!("{name}: `{key}`: TTLs {other:?}"),
        }
    }
    let (from, to) = (
        Bot::builder().default_store(source.clone()).build(),
        Bot::builder().default_store(target.clone()).build(),
    );
    for chat in 1..=CHATS {
        let (x, y) = (
            from.load(&ctx(chat)).await.expect("load from the source"),
            to.load(&ctx(chat)).await.expect("load from the target"),
        );
        assert_eq!(
            (&x.pizza, &x.settings, x.quiz),
            (&y.pizza, &y.settings, y.quiz),
            "{name}: chat {chat}"
        );
    }
    let bot = |store: &StoreRef| {
        Bot::builder()
            .default_store(store.clone())
            .config(Config::new().bot(77))
            .build()
    };
    assert_eq!(
        bot(target).load(&ctx(1)).await.unwrap().pizza.count,
        700,
        "{name}: bot 77"
    );
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mscli-{}-{name}", std::process::id()))
}

#[test]
fn export_from_sqlite_import_anywhere() {
    let rt = runtime();
    let source = Backend::sqlite();
    rt.block_on(async { write_sessions(source.open().await.unwrap()).await });
    let (dump, stderr) = ok(source.cli(&["export"]));
    // 40 pizzas, 40 settings, 30 quizzes, bot 77's pizza, the raw value; and the header.
    assert_eq!(dump.lines().count(), 1 + 40 + 40 + 30 + 2, "{stderr}");
    assert!(
        stderr.contains("exported 112 values (31 with a TTL)"),
        "{stderr}"
    );
    let path = temp_file("export.jsonl");
    std::fs::write(&path, &dump).unwrap();
    let (partial, _) = ok(source.cli(&["export", "settings", "legacy"]));
    assert_eq!(partial.lines().count(), 1 + 40 + 1);

    let mut targets = vec![Backend::memory()];
    targets.extend(rt.block_on(Backend::postgres()));
    targets.extend(rt.block_on(Backend::redis()));
    for target in targets {
        let name = target.name();
        let (_, stderr) = ok(target.cli(&["import", path.to_str().unwrap()]));
        assert!(
            stderr.contains("imported 112 entries")
                && stderr.contains(": 112 written, 0 already there"),
            "{name}: {stderr}"
        );
        let before = rt.block_on(async {
            let (from, to) = (source.open().await.unwrap(), target.open().await.unwrap());
            same_sessions(&from, &to, name).await;
            every_record(&to).await
        });
        // Twice: nothing written, nothing changed (same revisions).
        let mut again = target.cli(&["import"]);
        again.pipe_stdin(&path).unwrap();
        let (_, stderr) = ok(again);
        assert!(
            stderr.contains(": 0 written, 112 already there (identical)"),
            "{name}: {stderr}"
        );
        let after = rt.block_on(async { every_record(&target.open().await.unwrap()).await });
        assert_eq!(before, after, "{name}: a second import changed something");
        rt.block_on(target.cleanup());
    }
    std::fs::remove_file(&path).ok();
    rt.block_on(source.cleanup());
}

/// A dump of `n` values, generated: keys `pizza:{i}`, each with a recorded update and a
/// TTL for every third one.
fn generated_dump(n: usize, path: &Path) -> Vec<String> {
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    let mut lines = vec![r#"{"multisession_dump":1,"exported_at_ms":0,"store":"test"}"#.to_owned()];
    for i in 0..n {
        let payload = format!(r#"{{"count":{i},"toppings":[]}}"#);
        let stored = multisession::envelope::join(
            multisession::envelope::split(b"").0,
            9_000 + i as u64,
            32,
            payload.as_bytes(),
        );
        let value = base64_encode(&stored);
        lines.push(if i % 3 == 0 {
            format!(r#"{{"key":"pizza:{i:05}","value":"{value}","expires_at_ms":{expires}}}"#)
        } else {
            format!(r#"{{"key":"pizza:{i:05}","value":"{value}"}}"#)
        });
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    lines
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn count(store: &StoreRef) -> usize {
    every_record(store).await.len()
}

/// An import killed half-way, and one stopped by a bad line, both resume when run again:
/// what is already there is recognised and kept (same revisions), the rest is written.
fn interrupted_import_resumes(target: Backend) {
    let rt = runtime();
    let name = target.name();
    let path = temp_file(&format!("{name}-resume.jsonl"));
    let lines = generated_dump(3000, &path);
    let store = rt.block_on(target.open()).unwrap();

    // Killed while it waits for more input: three batches of 500 are in, the fourth not.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_multisession"))
        .args(target.args())
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all((lines[..1700].join("\n") + "\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while rt.block_on(count(&store)) < 1500 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: the import made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let before = rt.block_on(every_record(&store));
    assert_eq!(before.len(), 1500, "{name}: what the killed import wrote");

    let (_, stderr) = ok(target.cli(&["import", path.to_str().unwrap()]));
    assert!(
        stderr.contains("3000 entries") && stderr.contains(": 1500 written, 1500 already there"),
        "{name}: {stderr}"
    );
    let after = rt.block_on(every_record(&store));
    assert_eq!(after.len(), 3000, "{name}");
    for (key, record) in &before {
        assert_eq!(
            after.get(key),
            Some(record),
            "{name}: `{key}` was written again"
        );
    }
    for (i, line) in lines[1..].iter().enumerate() {
        let key = format!("pizza:{i:05}");
        let value = line
            .split(r#""value":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(base64_encode(&after[&key].value), value, "{name}: `{key}`");
    }

    // Stopped by a bad line: what came before it is in; fixed, it completes.
    ok(target.cli(&["clear", "pizza", "--yes"]));
    let mut broken = lines.clone();
    broken.insert(1201, "{not a dump line".into());
    std::fs::write(&path, broken.join("\n")).unwrap();
    let (_, stderr, code) = run(target.cli(&["import", path.to_str().unwrap()]));
    assert_eq!(code, 1, "{name}: {stderr}");
    assert!(
        stderr.contains("line 1202 is not a dump entry"),
        "{name}: {stderr}"
    );
    assert_eq!(
        rt.block_on(count(&store)),
        1200,
        "{name}: the entries before the bad line"
    );
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (_, stderr) = ok(target.cli(&["import", path.to_str().unwrap()]));
    assert!(
        stderr.contains(": 1800 written, 1200 already there"),
        "{name}: {stderr}"
    );

    drop(store);
    std::fs::remove_file(&path).ok();
    rt.block_on(target.cleanup());
}

#[test]
fn interrupted_import_resumes_on_sqlite() {
    interrupted_import_resumes(Backend::sqlite());
}

#[test]
fn interrupted_import_resumes_on_postgres() {
    if let Some(target) = runtime().block_on(Backend::postgres()) {
        interrupted_import_resumes(target);
    }
}

#[test]
fn interrupted_import_resumes_on_redis() {
    if let Some(target) = runtime().block_on(Backend::redis()) {
        interrupted_import_resumes(target);
    }
}

#[test]
fn a_dump_is_checked_before_it_is_written() {
    let rt = runtime();
    let target = Backend::sqlite();
    let path = temp_file("dry.jsonl");
    generated_dump(10, &path);
    let (_, stderr) = ok(target.cli(&["import", "--dry-run", path.to_str().unwrap()]));
    assert!(
        stderr.contains("dry run: 10 entries") && stderr.contains("10 would be written"),
        "{stderr}"
    );
    let store = rt.block_on(target.open()).unwrap();
    assert_eq!(rt.block_on(count(&store)), 0, "a dry run wrote");
    ok(target.cli(&["import", path.to_str().unwrap()]));

    // Another value under one key: reported, left as it is, exit status 3.
    ok(target.cli(&["set", "pizza", "00004", r#"{"count": 99}"#]));
    let (_, stderr, code) = run(target.cli(&["import", path.to_str().unwrap()]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("differs: `pizza:00004`")
            && stderr.contains("0 written, 9 already there (identical), 1 differ"),
        "{stderr}"
    );
    let (stdout, _) = ok(target.cli(&["get", "pizza", "00004", "--json"]));
    assert!(stdout.contains(r#""value":{"count":99}"#), "{stdout}");
    let (_, stderr) = ok(target.cli(&["import", "--overwrite", path.to_str().unwrap()]));
    assert!(stderr.contains("1 written, 9 already there"), "{stderr}");
    let (stdout, _) = ok(target.cli(&["get", "pizza", "00004", "--json"]));
    assert!(stdout.contains(r#""count":4"#), "{stdout}");

    // A value expired since the export is not brought back.
    std::fs::write(
        &path,
        r#"{"key":"pizza:old","value":"e30=","expires_at_ms":1000}"#.to_owned() + "\n",
    )
    .unwrap();
    let (_, stderr) = ok(target.cli(&["import", path.to_str().unwrap()]));
    assert!(
        stderr.contains("0 written") && stderr.contains("1 expired (skipped)"),
        "{stderr}"
    );

    drop(store);
    std::fs::remove_file(&path).ok();
    rt.block_on(target.cleanup());
}

#[test]
fn imports_accept_only_dumps() {
    let target = Backend::sqlite();
    let path = temp_file("newer.jsonl");
    std::fs::write(&path, "{\"multisession_dump\":2}\n").unwrap();
    let (_, stderr, code) = run(target.cli(&["import", path.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(stderr.contains("newer than this command knows"), "{stderr}");
    let mut cmd = multisession_cmd();
    cmd.args(target.args())
        .arg("import")
        .write_stdin("{\"key\":\"a:1\",\"value\":\"%%\"}\n");
    let (_, stderr, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1 is not a dump entry (`value` is not base64"),
        "{stderr}"
    );
    std::fs::remove_file(&path).ok();
    runtime().block_on(target.cleanup());
}
