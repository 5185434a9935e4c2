//! The command against every store: sessions written by the library, inspected and edited
//! with the command, read back by the library.

mod common;

use common::{Backend, Bot, Pizza, Settings, ok, run, runtime};
use multisession::{ChatContext, Config, store::StoreRef};
use serde_json::{Value, json};

fn ctx(chat: i64, update: u64) -> ChatContext {
    ChatContext::new(chat)
        .with_user(10 + chat)
        .with_update_id(update)
}

/// What the bot stores before the command looks: chats 1..=3 (pizza, settings of user
/// 10 + chat at version 1, a quiz with a one-hour TTL), each by update 1000 + chat; and
/// chat 5 of bot 1001.
async fn write_sessions(store: StoreRef) {
    let sessions = Bot::builder().default_store(store.clone()).build();
    for chat in 1..=3i64 {
        sessions
            .run(&ctx(chat, 1000 + chat as u64), async |s| {
                *s.pizza().await? = Pizza {
                    count: chat as u32,
                    toppings: vec!["cheese".into()],
                };
                s.settings()
                    .set(Settings {
                        lang: "en".into(),
                        dark: false,
                    })
                    .await?;
                s.quiz().set(Some(chat as u32)).await?;
                Ok::<_, multisession::Error>(())
            })
            .await
            .expect("the bot's update");
    }
    let other_bot = Bot::builder()
        .default_store(store)
        .config(Config::new().bot(1001))
        .build();
    other_bot
        .run(&ctx(5, 2000), async |s| {
            s.pizza().await?.count = 50;
            Ok::<_, multisession::Error>(())
        })
        .await
        .expect("the other bot's update");
}

fn get_json(backend: &Backend, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.push("--json");
    let (stdout, _) = ok(backend.cli(&all));
    serde_json::from_str(&stdout).expect("get --json prints JSON")
}

fn inspect_and_edit(backend: Backend) {
    let rt = runtime();
    rt.block_on(async { write_sessions(backend.open().await.expect("open the store")).await });
    let name = backend.name();

    // Reading.
    let (stdout, _) = ok(backend.cli(&["count", "pizza"]));
    assert_eq!(stdout.trim(), "3", "{name}: count");
    let (stdout, _) = ok(backend.cli(&["list", "pizza"]));
    assert_eq!(stdout, "1\n2\n3\n", "{name}: list");
    let (stdout, _) = ok(backend.cli(&["list", "quiz", "--limit", "2"]));
    assert_eq!(stdout, "1:11\n2:12\n", "{name}: list --limit");

    let pizza = get_json(&backend, &["pizza", "2"]);
    assert_eq!(
        pizza["value"],
        json!({"count": 2, "toppings": ["cheese"]}),
        "{name}"
    );
    assert_eq!(pizza["version"], 0, "{name}: pizza has no migrations");
    assert_eq!(
        pizza["updates"],
        json!([1002]),
        "{name}: the update that changed it"
    );
    assert_eq!(pizza["ttl_ms"], Value::Null, "{name}: pizza never expires");
    let settings = get_json(&backend, &["settings", "12"]);
    assert_eq!(
        settings["value"],
        json!({"lang": "en", "dark": false}),
        "{name}"
    );
    assert_eq!(settings["version"], 1, "{name}: settings is at version 1");
    let quiz = get_json(&backend, &["quiz", "2:12"]);
    let ttl = quiz["ttl_ms"].as_u64().expect("the quiz has a TTL");
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "{name}: quiz TTL {ttl} ms"
    );
    let (human, _) = ok(backend.cli(&["get", "quiz", "2:12"]));
    assert!(
        human.contains("expires    in 59m") || human.contains("expires    in 1h"),
        "{human}"
    );
    assert!(human.contains("updates    1002"), "{human}");
    let other = get_json(&backend, &["--bot", "1001", "pizza", "5"]);
    assert_eq!(other["value"]["count"], 50, "{name}: --bot");

    let (_, stderr, code) = run(backend.cli(&["get", "pizzas", "1"]));
    assert_eq!(code, 1, "{name}: unknown fragment");
    assert!(
        stderr.contains("nothing is stored under fragment `pizzas`")
            && stderr.contains("fragments found: 1001/pizza, pizza, quiz, settings"),
        "{name}: {stderr}"
    );
    let (_, stderr, code) = run(backend.cli(&["get", "pizza", "4"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no value for key `4` in fragment `pizza`"),
        "{stderr}"
    );

    // Editing: compare-and-set on the revision `get` showed.
    let revision = pizza["revision"].as_u64().expect("a revision").to_string();
    ok(backend.cli(&[
        "set",
        "pizza",
        "2",
        r#"{"count": 42, "toppings": ["olive"]}"#,
        "--revision",
        &revision,
    ]));
    let (_, stderr, code) = run(backend.cli(&[
        "set",
        "pizza",
        "2",
        r#"{"count": 43}"#,
        "--revision",
        &revision,
    ]));
    assert_eq!(code, 1, "{name}: a stale revision must not write");
    assert!(stderr.contains("conflict"), "{stderr}");
    let (_, stderr, code) = run(backend.cli(&["set", "pizza", "2", "{broken"]));
    assert_eq!(code, 2, "{name}: invalid JSON");
    assert!(stderr.contains("invalid JSON"), "{stderr}");
    let edited = get_json(&backend, &["pizza", "2"]);
    assert_eq!(
        edited["value"],
        json!({"count": 42, "toppings": ["olive"]}),
        "{name}"
    );
    assert_eq!(
        edited["updates"],
        json!([1002]),
        "{name}: recorded updates kept"
    );

    ok(backend.cli(&["set", "settings", "12", r#"{"lang": "de", "dark": true}"#]));
    assert_eq!(
        get_json(&backend, &["settings", "12"])["version"],
        1,
        "{name}: version kept"
    );
    ok(backend.cli(&["set", "quiz", "2:12", "7"]));
    let ttl = get_json(&backend, &["quiz", "2:12"])["ttl_ms"]
        .as_u64()
        .expect("TTL kept");
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "{name}: TTL after set {ttl} ms"
    );
    ok(backend.cli(&["set", "quiz", "1:11", "8", "--ttl", "10m"]));
    let ttl = get_json(&backend, &["quiz", "1:11"])["ttl_ms"]
        .as_u64()
        .expect("new TTL");
    assert!(
        (590_000..=600_000).contains(&ttl),
        "{name}: --ttl 10m gave {ttl} ms"
    );

    ok(backend.cli(&["delete", "settings", "13"]));
    let (_, _, code) = run(backend.cli(&["delete", "settings", "13"]));
    assert_eq!(code, 1, "{name}: deleting a missing value");

    let (_, stderr, code) = run(backend.cli(&["clear", "quiz"]));
    assert_eq!(
        code, 2,
        "{name}: clear without --yes and without a terminal"
    );
    assert!(stderr.contains("without --yes"), "{stderr}");
    let (stdout, _) = ok(backend.cli(&["clear", "quiz", "--dry-run"]));
    assert!(stdout.contains("would delete 3 values"), "{stdout}");
    ok(backend.cli(&["clear", "pizza", "--bot", "1001", "--yes"]));
    let (_, _, code) = run(backend.cli(&["count", "quiz"]));
    assert_eq!(code, 0, "{name}: a dry run deletes nothing");

    // The library sees the edits.
    rt.block_on(async {
        let store = backend.open().await.expect("reopen the store");
        let sessions = Bot::builder().default_store(store.clone()).build();
        let loaded = sessions.load(&ctx(2, 3000)).await.expect("load chat 2");
        assert_eq!(
            (loaded.pizza.clone(), loaded.settings.clone(), loaded.quiz),
            (
                Pizza {
                    count: 42,
                    toppings: vec!["olive".into()]
                },
                Settings {
                    lang: "de".into(),
                    dark: true
                },
                Some(7)
            ),
            "{name}"
        );
        drop(loaded);
        let loaded = sessions.load(&ctx(3, 3001)).await.expect("load chat 3");
        assert_eq!(loaded.settings, Settings::default(), "{name}: deleted");
        drop(loaded);
        // The update that last changed chat 2's pizza, delivered again: the kept update
        // ids tell the runtime it was applied already.
        let count = sessions
            .run(&ctx(2, 1002), async |s| {
                s.pizza().await?.count += 1;
                Ok::<_, multisession::Error>(s.pizza().await?.count)
            })
            .await
            .expect("redelivery");
        let stored = sessions
            .load(&ctx(2, 3002))
            .await
            .expect("load")
            .pizza
            .count;
        assert_eq!(
            stored, 42,
            "{name}: a redelivered update was applied again (ran with {count})"
        );
        let other = Bot::builder()
            .default_store(store)
            .config(Config::new().bot(1001))
            .build();
        assert_eq!(
            other.load(&ctx(5, 3003)).await.expect("load").pizza.count,
            0,
            "{name}: cleared"
        );
    });
    ok(backend.cli(&["clear", "quiz", "--yes"]));
    let (_, stderr, code) = run(backend.cli(&["count", "quiz"]));
    assert_eq!(code, 1, "{name}: nothing left");
    assert!(
        stderr.contains("fragments found: pizza, settings"),
        "{stderr}"
    );
    rt.block_on(backend.cleanup());
}

#[test]
fn memory_snapshot() {
    inspect_and_edit(Backend::memory());
}

#[test]
fn sqlite() {
    inspect_and_edit(Backend::sqlite());
}

#[test]
fn redis() {
    let Some(backend) = runtime().block_on(Backend::redis()) else {
        return;
    };
    inspect_and_edit(backend);
}

#[test]
fn redis_cluster() {
    let Some(backend) = runtime().block_on(Backend::redis_cluster()) else {
        return;
    };
    inspect_and_edit(backend);
}

#[test]
fn postgres() {
    let Some(backend) = runtime().block_on(Backend::postgres()) else {
        return;
    };
    inspect_and_edit(backend);
}
