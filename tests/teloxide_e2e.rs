//! teloxide end to end: a real teloxide dispatcher and `Bot` client run the pizza bot
//! (`examples/common/teloxide_pizza.rs`) against a stand-in Bot API on loopback that
//! serves recorded-shape updates and records every `sendMessage`; then the replies and the
//! stored sessions are checked. Also: `DialogueStorage` passes the get/update/remove cases
//! of teloxide's own storage tests on memory, SQLite, Redis and PostgreSQL.

#[path = "../examples/common/fake_bot_api.rs"]
#[allow(dead_code)]
mod fake_bot_api;
#[path = "../examples/common/teloxide_pizza.rs"]
mod teloxide_pizza;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use fake_bot_api::{FakeBotApi, Sent, text_update};
use multisession::{
    ChatContext,
    store::StoreRef,
    stores::{CountingStore, MemoryStore, SqliteStore},
    teloxide::{DialogueError, DialogueStorage},
    testing::unique_namespace,
};
use teloxide::{Bot, dispatching::dialogue::Storage, types::ChatId};
use teloxide_pizza::{Naming, TgSession, dispatcher};

async fn run_bot(
    updates: Vec<serde_json::Value>,
    replies: usize,
    store: StoreRef,
    concurrent: bool,
) -> (
    FakeBotApi,
    multisession::Sessions<TgSession>,
    Arc<DialogueStorage<Naming>>,
) {
    let fake = FakeBotApi::start(updates)
        .await
        .expect("start the stand-in");
    let sessions = TgSession::builder().default_store(store.clone()).build();
    let dialogues = DialogueStorage::new(store).prefix("naming:").into_arc();
    let bot = Bot::new("42:test").set_api_url(url::Url::parse(fake.url()).unwrap());
    let (stop, run) = dispatcher(bot, sessions.clone(), dialogues.clone(), concurrent);
    let running = tokio::spawn(run);
    let done = fake.wait_until_done(replies, Duration::from_secs(30)).await;
    stop.shutdown().expect("the dispatcher is running").await;
    running.await.expect("the dispatcher task");
    assert!(
        done,
        "the bot did not handle every update within 30 s; sent so far: {:?}; calls: {:?}",
        fake.sent(),
        fake.calls()
    );
    (fake, sessions, dialogues)
}

fn to(sent: &[Sent], chat: i64) -> Vec<&str> {
    sent.iter()
        .filter(|s| s.chat == chat)
        .map(|s| s.text.as_str())
        .collect()
}

/// A conversation through teloxide's default dispatch (one update at a time per chat, chats
/// in parallel): the replies per chat, in order, and what is stored afterwards. The bot is
/// restarted between the group part and the private part (a new dispatcher and client on
/// the same store), so the private chat sees what the group stored, whatever teloxide's
/// order across chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teloxide_bot_keeps_sessions_and_dialogues() {
    let (group, ada, bob) = (-1_001_234, 11, 12);
    let updates = |script: &[(i64, i64, &str)]| -> Vec<serde_json::Value> {
        script
            .iter()
            .map(|(chat, user, text)| text_update(*chat, *user, text))
            .collect()
    };
    let store = CountingStore::new(SqliteStore::in_memory().await.unwrap());
    let group_part = updates(&[
        (group, ada, "/pizza"),
        (group, bob, "/pizza@pizza_bot"),
        (group, bob, "see you at 8"),
        (group, ada, "/lang de"),
        (group, ada, "/hunger"),
        (group, bob, "/hunger"),
    ]);
    let (fake, sessions, _) = run_bot(group_part, 5, StoreRef::new(store.clone()), false).await;
    assert_eq!(
        to(&fake.sent(), group),
        [
            "🍕 ×1",
            "🍕 ×2",
            "language: de",
            "Dieser Chat hat 2 Pizzen gegessen.",
            "This chat ate 2 pizzas.",
        ]
    );
    // Reads are the fragments handlers touched, writes what changed: 2 `/pizza` (read +
    // write), `/lang` (write without read), 2 `/hunger` (pizza + lang), chatter nothing.
    let stats = sessions.stats();
    assert_eq!(
        (stats.updates, stats.reads, stats.writes),
        (6, 2 + 4, 3),
        "{stats:?}"
    );

    let private_part = updates(&[
        (ada, ada, "/name"),
        (ada, ada, "Ada"),
        (ada, ada, "/hunger"),
    ]);
    let (fake, sessions, dialogues) =
        run_bot(private_part, 3, StoreRef::new(store.clone()), false).await;
    assert_eq!(
        to(&fake.sent(), ada),
        [
            "What is your name?",
            "Nice to meet you, Ada!",
            "Dieser Chat hat 0 Pizzen gegessen."
        ],
        "Ada's language follows her from the group; the private chat has no pizzas"
    );
    let stats = sessions.stats();
    assert_eq!(
        (stats.updates, stats.reads, stats.writes),
        (1, 2, 0),
        "{stats:?}"
    );

    // What is stored: the group's counter, Ada's language, no pizza for the private chat.
    let stored = sessions
        .load(&ChatContext::new(group).with_user(ada))
        .await
        .unwrap();
    assert_eq!(stored.pizza.count, 2);
    assert_eq!(stored.lang.as_deref(), Some("de"));
    drop(stored);
    assert_eq!(sessions.count("pizza").await.unwrap(), 1);
    assert_eq!(sessions.count("lang").await.unwrap(), 1);
    // teloxide's `get_or_default` stores the default state when there is none, so the
    // last `/hunger` after `exit` re-entered the dialogue at `Idle`.
    assert_eq!(
        dialogues.clone().get_dialogue(ChatId(ada)).await.unwrap(),
        Some(Naming::Idle)
    );
}

/// Updates of one chat handled concurrently (no per-chat queue): 48 `/pizza` from 8 users
/// end at 48, and every reply number appears once (the message is sent after the
/// session work, so a re-run never sends twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dispatch_of_one_chat_loses_no_update() {
    let group = -1_009_999;
    let updates = (0..48)
        .map(|i| text_update(group, 100 + i % 8, "/pizza"))
        .collect();
    let (fake, sessions, _) = run_bot(updates, 48, StoreRef::new(MemoryStore::new()), true).await;
    let numbers: BTreeSet<String> = fake.sent().into_iter().map(|s| s.text).collect();
    let expected: BTreeSet<String> = (1..=48).map(|n| format!("🍕 ×{n}")).collect();
    assert_eq!(numbers, expected);
    let count = sessions
        .load(&ChatContext::new(group))
        .await
        .unwrap()
        .pizza
        .count;
    assert_eq!(count, 48);
}

// ------------------------------------------------ DialogueStorage: teloxide's storage cases

/// teloxide's storage test (`tests/redis.rs` and friends in teloxide), on our storage.
async fn teloxide_storage_cases(store: &StoreRef, _ns: &str) {
    let store = store.clone();
    let storage = DialogueStorage::<String>::new(store)
        .prefix(unique_namespace())
        .into_arc();
    let get = |chat| {
        let storage = storage.clone();
        async move { storage.get_dialogue(ChatId(chat)).await.unwrap() }
    };
    for chat in [1, 11, 256] {
        assert_eq!(get(chat).await, None);
    }
    for (chat, value) in [(1, "ABC"), (11, "DEF"), (256, "GHI")] {
        storage
            .clone()
            .update_dialogue(ChatId(chat), value.to_owned())
            .await
            .unwrap();
    }
    assert_eq!(get(1).await.as_deref(), Some("ABC"));
    assert_eq!(get(11).await.as_deref(), Some("DEF"));
    assert_eq!(get(256).await.as_deref(), Some("GHI"));
    // Updating replaces.
    storage
        .clone()
        .update_dialogue(ChatId(11), "XYZ".to_owned())
        .await
        .unwrap();
    assert_eq!(get(11).await.as_deref(), Some("XYZ"));
    for chat in [1, 11, 256] {
        storage.clone().remove_dialogue(ChatId(chat)).await.unwrap();
    }
    for chat in [1, 11, 256] {
        assert_eq!(get(chat).await, None);
    }
    // Removing a dialogue that is not there is an error, as in teloxide's storages.
    match storage.clone().remove_dialogue(ChatId(1)).await {
        Err(DialogueError::DialogueNotFound { chat, key }) => {
            assert_eq!(chat, 1);
            assert!(key.ends_with('1'), "{key}");
        }
        other => panic!("expected DialogueNotFound, got {other:?}"),
    }
}

/// Bytes that are not a dialogue: a typed error naming key and store, not a panic.
async fn undecodable_dialogue_is_an_error(store: &StoreRef, _ns: &str) {
    let store = store.clone();
    let prefix = unique_namespace();
    let key = format!("{prefix}5");
    store.as_dyn().write(&key, b"\xff", None).await.unwrap();
    let storage = DialogueStorage::<String>::new(store.clone())
        .prefix(prefix)
        .into_arc();
    match storage.get_dialogue(ChatId(5)).await {
        Err(DialogueError::Codec {
            key: k,
            store: name,
            ..
        }) => {
            assert_eq!(k, key);
            assert_eq!(name, store.as_dyn().name());
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    store.as_dyn().delete(&key).await.unwrap();
}

/// A TTL'd dialogue is forgotten after its TTL.
async fn dialogues_expire(store: &StoreRef, _ns: &str) {
    let store = store.clone();
    let prefix = unique_namespace();
    let storage = DialogueStorage::<String>::new(store.clone())
        .prefix(prefix.clone())
        .ttl(Duration::from_millis(200))
        .into_arc();
    storage
        .clone()
        .update_dialogue(ChatId(7), "step 2".into())
        .await
        .unwrap();
    assert!(
        storage
            .clone()
            .get_dialogue(ChatId(7))
            .await
            .unwrap()
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(storage.clone().get_dialogue(ChatId(7)).await.unwrap(), None);
    // Expired rows and index entries are the store's to sweep; remove ours now.
    store.as_dyn().delete(&format!("{prefix}7")).await.unwrap();
}

multisession::store_cases!(every store => crate:
    teloxide_storage_cases,
    undecodable_dialogue_is_an_error,
    dialogues_expire,
);

/// The natural dptree injection, `.map(|s: Sessions<_>, u: Update| s.open(&u))`: dptree
/// keeps a clone of the session in its dependency map while the endpoint commits. The
/// commit goes ahead (nothing lost), the update id makes it exactly once, and the copy
/// left behind can change nothing.
#[tokio::test]
async fn the_map_open_injection_commits_and_counts_each_update_once() {
    use multisession::Session;
    use teloxide::types::Update;

    let store = CountingStore::new(MemoryStore::new());
    let sessions = TgSession::builder().default_store(store.clone()).build();
    let handler: teloxide::dptree::Handler<
        '_,
        Result<(), multisession::Error>,
        teloxide::dispatching::DpHandlerDescription,
    > = teloxide::dptree::entry()
        .map(|sessions: multisession::Sessions<TgSession>, update: Update| sessions.open(&update))
        .endpoint(|session: Session<TgSession>| async move {
            session.pizza().await?.count += 1;
            session.commit().await
        });
    let mut update = text_update(-100, 7, "/pizza");
    update["update_id"] = serde_json::json!(584_120_332);
    let update: Update = serde_json::from_str(&update.to_string()).expect("an update");
    assert!(
        matches!(update.kind, teloxide::types::UpdateKind::Message(_)),
        "{:?}",
        update.kind
    );
    for _ in 0..2 {
        // Delivered twice (a webhook retry): counted once.
        let result = handler
            .dispatch(teloxide::dptree::deps![sessions.clone(), update.clone()])
            .await;
        match result {
            std::ops::ControlFlow::Break(outcome) => outcome.expect("committed"),
            std::ops::ControlFlow::Continue(_) => panic!("the endpoint did not run"),
        }
    }
    let data = sessions.load(&ChatContext::new(-100)).await.unwrap();
    assert_eq!(data.pizza.count, 1);
    assert_eq!(store.counts().writes, 1);
}
