//! teloxide end to end: a real teloxide dispatcher and `Bot` client run the pizza bot
//! (`examples/common/teloxide_pizza.rs`: `BotCommands`, an inline keyboard, the session as
//! an endpoint parameter) against a stand-in Bot API on loopback that serves
//! recorded-shape updates and records every `sendMessage` and `answerCallbackQuery`; then
//! the replies and the stored sessions are checked. The session piece
//! (`SessionHandlerExt::with_session`) is also driven directly: a conflict re-runs the
//! endpoint, an endpoint may commit first, unhandled updates pass on. Also: `DialogueStorage` passes the get/update/remove cases
//! of teloxide's own storage tests on memory, SQLite, Redis and PostgreSQL.

#[path = "../examples/common/fake_bot_api.rs"]
#[allow(dead_code)]
mod fake_bot_api;
#[path = "../examples/common/teloxide_pizza.rs"]
mod teloxide_pizza;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use fake_bot_api::{FakeBotApi, Sent, button_update, text_update};
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

/// What the bot sent to `chat`, in order (button answers pop up for the user: chat 0).
fn to(sent: &[Sent], chat: i64) -> Vec<&str> {
    sent.iter()
        .filter(|s| s.chat == chat)
        .map(|s| s.text.as_str())
        .collect()
}

/// What the bot answered to the `n`-th update (from 1).
fn answers(sent: &[Sent], n: i64) -> Vec<&str> {
    sent.iter()
        .filter(|s| s.answers == Some(n))
        .map(|s| s.text.as_str())
        .collect()
}

/// A conversation through teloxide's default dispatch (one update at a time per chat, chats
/// in parallel), with commands parsed by `BotCommands`, an inline keyboard and its button
/// press (a callback query), a per-chat and a per-user fragment taken by the endpoints as
/// a `Session` parameter: the replies, and what is stored afterwards. The bot is
/// restarted between the group part and the private part (a new dispatcher and client on
/// the same store), so the private chat sees what the group stored, whatever teloxide's
/// order across chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teloxide_bot_keeps_sessions_and_dialogues() {
    let (group, ada, bob) = (-1_001_234, 11, 12);
    let store = CountingStore::new(SqliteStore::in_memory().await.unwrap());
    let group_part = vec![
        text_update(group, ada, "/pizza"),
        text_update(group, bob, "/pizza@pizza_bot"),
        text_update(group, bob, "see you at 8"),
        text_update(group, ada, "/lang"),
        button_update(group, ada, "lang:de"),
        text_update(group, ada, "/hunger"),
        text_update(group, bob, "/hunger"),
    ];
    let (fake, sessions, _) = run_bot(group_part, 6, StoreRef::new(store.clone()), false).await;
    let sent = fake.sent();
    assert_eq!(
        to(&sent, group),
        [
            "🍕 ×1",
            "🍕 ×2",
            "Pick a language:",
            "Dieser Chat hat 2 Pizzen gegessen.",
            "This chat ate 2 pizzas.",
        ]
    );
    // Each reply answers its message; the keyboard carries the buttons; the press is
    // answered with a pop-up.
    assert_eq!(
        answers(&sent, 3),
        Vec::<&str>::new(),
        "chatter gets no reply"
    );
    let keyboard = sent.iter().find(|s| s.answers == Some(4)).unwrap();
    assert_eq!(keyboard.buttons, ["lang:en", "lang:de"]);
    assert_eq!(answers(&sent, 5), ["Sprache: Deutsch"]);
    assert_eq!(answers(&sent, 6), ["Dieser Chat hat 2 Pizzen gegessen."]);
    // Every update went through the session piece; reads are the fragments endpoints
    // touched, writes what changed: 2 `/pizza` (read + write), the button (write without
    // read), 2 `/hunger` (pizza + lang); chatter and `/lang` nothing.
    let stats = sessions.stats();
    assert_eq!(
        (stats.updates, stats.reads, stats.writes, stats.errors),
        (7, 2 + 4, 3, 0),
        "{stats:?}"
    );

    let private_part = vec![
        text_update(ada, ada, "/name"),
        text_update(ada, ada, "Ada"),
        text_update(ada, ada, "/hunger"),
    ];
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
        (3, 2, 0),
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
/// end at 48, and every reply number appears once: the endpoint holds the chat's key from
/// its first touch until its commit, so concurrent updates of the chat take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dispatch_of_one_chat_loses_no_update() {
    let group = -1_009_999;
    let updates = (0..48)
        .map(|i| text_update(group, 100 + i % 8, "/pizza"))
        .collect();
    let (fake, sessions, _) = run_bot(updates, 48, StoreRef::new(MemoryStore::new()), true).await;
    let sent = fake.sent();
    let numbers: BTreeSet<String> = sent.iter().map(|s| s.text.clone()).collect();
    let expected: BTreeSet<String> = (1..=48).map(|n| format!("🍕 ×{n}")).collect();
    assert_eq!(numbers, expected);
    assert_eq!(sent.len(), 48, "one reply per update");
    let count = sessions
        .load(&ChatContext::new(group))
        .await
        .unwrap()
        .pizza
        .count;
    assert_eq!(count, 48);
}

/// A handler error drops the endpoint's session changes: Telegram refuses the reply in a
/// chat that blocked the bot (403), `pizza` returns the error, the order is not counted
/// there; the other chat's order is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_stores_nothing() {
    let (blocked, open) = (301, 302);
    let updates = vec![
        text_update(blocked, blocked, "/pizza"),
        text_update(open, open, "/pizza"),
        text_update(blocked, blocked, "/pizza"),
    ];
    let fake = FakeBotApi::start(updates)
        .await
        .expect("start the stand-in");
    fake.block(blocked);
    let store = CountingStore::new(MemoryStore::new());
    let sessions = TgSession::builder().default_store(store.clone()).build();
    let dialogues = DialogueStorage::new(MemoryStore::new()).into_arc();
    let bot = Bot::new("42:test").set_api_url(url::Url::parse(fake.url()).unwrap());
    let (stop, run) = dispatcher(bot, sessions.clone(), dialogues, false);
    let running = tokio::spawn(run);
    let done = fake.wait_until_done(1, Duration::from_secs(30)).await;
    stop.shutdown().expect("the dispatcher is running").await;
    running.await.expect("the dispatcher task");
    assert!(done, "calls: {:?}", fake.calls());
    assert_eq!(to(&fake.sent(), open), ["🍕 ×1"]);
    let sends = fake.calls().iter().filter(|c| *c == "sendmessage").count();
    assert_eq!(sends, 3, "two refused, one sent");
    let count = |chat| {
        let sessions = sessions.clone();
        async move {
            sessions
                .load(&ChatContext::new(chat))
                .await
                .unwrap()
                .pizza
                .count
        }
    };
    assert_eq!(count(blocked).await, 0, "the refused orders are not stored");
    assert_eq!(count(open).await, 1);
    assert_eq!(store.counts().writes, 1);
}

fn update_of(value: serde_json::Value, id: u64) -> teloxide::types::Update {
    let mut value = value;
    value["update_id"] = serde_json::json!(id);
    // From text, as teloxide reads updates (its `Update` does not read from a `Value`).
    let update: teloxide::types::Update =
        serde_json::from_str(&value.to_string()).expect("an update");
    assert!(
        matches!(update.kind, teloxide::types::UpdateKind::Message(_)),
        "{:?}",
        update.kind
    );
    update
}

type Tree = teloxide::dptree::Handler<
    'static,
    Result<(), multisession::Error>,
    teloxide::dispatching::DpHandlerDescription,
>;

/// Another process changes the chat's fragment between the endpoint's read and its
/// commit: the commit conflicts, the piece runs the endpoint again on a fresh read, and
/// both increments are kept.
#[tokio::test]
async fn a_conflict_reruns_the_endpoint() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use multisession::{Session, Sessions, teloxide::SessionHandlerExt};

    /// The other process's `Sessions`, under a type of its own in the dependencies.
    #[derive(Clone)]
    struct Other(Sessions<TgSession>);

    let store = MemoryStore::new();
    let sessions = TgSession::builder().default_store(store.clone()).build();
    // A second `Sessions` on the same store: another process, as far as locks go.
    let other = TgSession::builder().default_store(store.clone()).build();
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    let tree: Tree = teloxide::dptree::entry()
        .endpoint(move |s: Session<TgSession>, Other(other): Other| {
            let runs = seen.clone();
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                s.pizza().await?.count += 1;
                if run == 0 {
                    // The other process orders too, after this run's read.
                    let ctx = ChatContext::new(-7).with_update_id(99);
                    other
                        .run(&ctx, async |o| {
                            o.pizza().await?.count += 10;
                            Ok::<_, multisession::Error>(())
                        })
                        .await?;
                }
                Ok(())
            }
        })
        .with_session::<TgSession>();
    let update = update_of(text_update(-7, 5, "/pizza"), 41);
    let outcome = tree
        .dispatch(teloxide::dptree::deps![
            sessions.clone(),
            update,
            Other(other)
        ])
        .await;
    match outcome {
        std::ops::ControlFlow::Break(result) => result.expect("committed after a re-run"),
        std::ops::ControlFlow::Continue(_) => panic!("the endpoint did not run"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "run again after the conflict"
    );
    let count = sessions
        .load(&ChatContext::new(-7))
        .await
        .unwrap()
        .pizza
        .count;
    assert_eq!(count, 11, "both orders kept");
    assert_eq!(sessions.stats().commit_retries, 1);
}

/// The endpoint commits itself (to send a message only once the change is stored): the
/// piece's commit after it writes nothing more. An update no endpoint handles passes on
/// to the next branch, and the same update delivered twice counts once.
#[tokio::test]
async fn an_endpoint_may_commit_first_and_unhandled_updates_pass_on() {
    use multisession::{Session, teloxide::SessionHandlerExt};

    let store = CountingStore::new(MemoryStore::new());
    let sessions = TgSession::builder().default_store(store.clone()).build();
    let tree: Tree = teloxide::dptree::entry()
        .branch(
            teloxide::dptree::filter(|u: teloxide::types::Update| {
                u.chat().is_some_and(|c| c.id.0 == -8)
            })
            .endpoint(|s: Session<TgSession>| async move {
                s.pizza().await?.count += 1;
                s.clone().commit().await?;
                // (send the confirmation here)
                Ok(())
            }),
        )
        .with_session::<TgSession>();
    let fallback: Tree = teloxide::dptree::entry()
        .branch(tree)
        .branch(teloxide::dptree::endpoint(|| async {
            Err(multisession::Error::UnknownFragment {
                fragment: "fallback".into(),
                known: &[],
            })
        }));
    let handled = update_of(text_update(-8, 5, "/pizza"), 51);
    for _ in 0..2 {
        match fallback
            .dispatch(teloxide::dptree::deps![sessions.clone(), handled.clone()])
            .await
        {
            std::ops::ControlFlow::Break(result) => result.expect("committed once"),
            std::ops::ControlFlow::Continue(_) => panic!("not handled"),
        }
    }
    assert_eq!(store.counts().writes, 1, "one write: the endpoint's commit");
    let count = sessions
        .load(&ChatContext::new(-8))
        .await
        .unwrap()
        .pizza
        .count;
    assert_eq!(count, 1, "delivered twice, counted once");
    // Another chat: no endpoint of the tree matches, so the next branch runs.
    let other = update_of(text_update(-9, 5, "/pizza"), 52);
    match fallback
        .dispatch(teloxide::dptree::deps![sessions.clone(), other])
        .await
    {
        std::ops::ControlFlow::Break(Err(multisession::Error::UnknownFragment {
            fragment,
            ..
        })) => {
            assert_eq!(fragment, "fallback")
        }
        other => panic!("expected the fallback branch, got {other:?}"),
    }
    assert_eq!(store.counts().writes, 1);
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
