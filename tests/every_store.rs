//! The session rules that depend on a store, run through `Sessions` on every store from
//! one definition: memory, SQLite (a file), Redis and PostgreSQL.
//!
//! - S1–S3, S12: what a lazy update costs on the store (counted);
//! - S13: a failed handler writes nothing;
//! - S17: two `Sessions` objects on one store lose no increment;
//! - S15: bytes that do not decode are a typed error naming fragment, key and store, or
//!   are reset under `OnDecodeError::Reset`;
//! - S18: a TTL'd fragment not written for its TTL reads as its initial value;
//! - S19: grammY's migration scenarios (from the start, from the middle, up to date, from
//!   a newer program, with TTL);
//! - S20: listing, counting, removing and clearing a fragment;
//! - S21: a group's per-chat fragments follow it to its supergroup, idempotently and
//!   without overwriting.
//!
//! Every test works under its own key namespace (a wrapper store that prefixes keys), so
//! runs and tests never see each other's sessions on the shared servers; each test removes
//! what it wrote. Redis and PostgreSQL: see `multisession::testing::stores` for the URLs
//! and the skip rule.

#[path = "common/pets.rs"]
mod pets;

use pets::*;

use std::time::Duration;

use multisession::{
    ChatContext, Config, Error, MultiSession, OnDecodeError,
    codec::with_version,
    store::{Store, StoreRef},
    stores::CountingStore,
    testing::Namespaced,
};
use serde::{Deserialize, Serialize};

type R = Result<(), Error>;

// ---------------------------------------------------------------- the stores

/// A test's store: the backend under a fresh namespace, counted.
struct TestStore {
    counted: CountingStore,
    raw: StoreRef,
}

impl TestStore {
    fn new(backend: &StoreRef, ns: &str) -> Self {
        let raw = StoreRef::new(Namespaced::new(backend.clone(), ns));
        TestStore {
            counted: CountingStore::new(raw.clone()),
            raw,
        }
    }

    async fn raw_read(&self, key: &str) -> Option<Vec<u8>> {
        let record = self.raw.as_dyn().read(key).await.unwrap();
        record.map(|r| multisession::envelope::payload(&r.value).to_vec())
    }

    async fn raw_write(&self, key: &str, value: &[u8]) {
        self.raw.as_dyn().write(key, value, None).await.unwrap();
    }

    /// Removes every key this test wrote (the namespace is the test's own), expired ones
    /// included (listings skip them, so they are named).
    async fn cleanup_with(&self, expired: &[&str]) {
        for key in expired {
            self.raw.as_dyn().delete(key).await.unwrap();
        }
        self.cleanup().await;
    }

    /// Removes every live key this test wrote (the namespace is the test's own).
    async fn cleanup(&self) {
        loop {
            let page = self.raw.as_dyn().list("", None, 500).await.unwrap();
            if page.entries.is_empty() {
                return;
            }
            for (key, _) in page.entries {
                self.raw.as_dyn().delete(&key).await.unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------- the session shapes

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Settings {
    lang: String,
}

#[derive(MultiSession)]
struct Bot {
    count: u32,
    #[session(key = multisession::keys::user)]
    settings: Settings,
    #[session(key = multisession::keys::user_in_chat)]
    quiz: Option<String>,
}

#[derive(MultiSession)]
struct Timed {
    #[session(ttl = "300ms")]
    quiz: Option<String>,
    forever: u32,
}

#[derive(MultiSession)]
struct Owner {
    #[session(key = multisession::keys::user, migrations = [add_birthdays, pick_favorite])]
    pets: Pets,
    #[session(migrations = [|old: u32| old.to_string()], ttl = "400ms")]
    badge: Option<String>,
}

fn pet(name: &str) -> Pet {
    Pet {
        name: name.into(),
        birthday: None,
    }
}

// ---------------------------------------------------------------- the cases

/// S1–S3, S12: untouched costs nothing, read-only costs one read, a change one read and
/// one write, on this store as on memory.
async fn s1_s3_s12_lazy_costs(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let ctx = ChatContext::new(-10).with_user(7);
    sessions.run(&ctx, async |_s| R::Ok(())).await.unwrap();
    assert_eq!(store.counted.counts().operations(), 0, "S1: untouched");
    sessions
        .run(&ctx, async |s| {
            let _ = s.settings().await?.lang.len();
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!((c.reads, c.writes), (1, 0), "S2: read only");
    store.counted.reset();
    sessions
        .run(&ctx, async |s| {
            *s.count().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!((c.reads, c.writes, c.deletes), (1, 1, 0), "S3: one change");
    store.counted.reset();
    // S12: setting a fragment to its stored value writes nothing.
    sessions
        .run(&ctx, async |s| {
            *s.count().await? = 1;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!((c.reads, c.writes), (1, 0), "S12: unchanged value");
    store.cleanup().await;
}

/// S13: a handler that fails after changing fragments writes nothing.
async fn s13_a_failed_handler_writes_nothing(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let ctx = ChatContext::new(-11).with_user(8);
    let result = sessions
        .run(&ctx, async |s| {
            *s.count().await? += 5;
            s.settings().set(Settings { lang: "de".into() }).await?;
            Err::<(), _>(Error::NoKey { fragment: "test" })
        })
        .await;
    assert!(result.is_err());
    assert_eq!(store.counted.counts().writes, 0);
    assert_eq!(store.raw_read("count:-11").await, None);
    store.cleanup().await;
}

/// S15: undecodable bytes are a typed error naming fragment, key and store, and are kept;
/// under `OnDecodeError::Reset` they are replaced by the initial value.
async fn s15_undecodable_bytes(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    store.raw_write("count:-12", b"\xff not json").await;
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let ctx = ChatContext::new(-12);
    let error = sessions
        .run(&ctx, async |s| {
            *s.count().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap_err();
    match &error {
        Error::Decode {
            fragment,
            key,
            store: name,
            ..
        } => {
            assert_eq!((*fragment, key.as_str()), ("count", "count:-12"));
            assert_eq!(name, store.counted.name());
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("count:-12"), "{message}");
    assert_eq!(
        store.raw_read("count:-12").await.as_deref(),
        Some(&b"\xff not json"[..]),
        "the bad bytes must be kept"
    );

    let resetting = Bot::builder()
        .default_store(store.counted.clone())
        .config(Config::new().on_decode_error(OnDecodeError::Reset))
        .build();
    resetting
        .run(&ctx, async |s| {
            assert_eq!(*s.count().await?, 0, "reset to the initial value");
            *s.count().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        store.raw_read("count:-12").await.as_deref(),
        Some(&b"1"[..])
    );
    store.cleanup().await;
}

/// S18: a TTL'd fragment not written for its TTL reads as its initial value; others stay.
async fn s18_ttl(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Timed::builder()
        .default_store(store.counted.clone())
        .build();
    let ctx = ChatContext::new(-13);
    sessions
        .run(&ctx, async |s| {
            *s.quiz().await? = Some("6 × 7?".into());
            *s.forever().await? = 1;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!(c.writes, 2, "a TTL costs no extra operation");
    tokio::time::sleep(Duration::from_millis(900)).await;
    sessions
        .run(&ctx, async |s| {
            assert_eq!(*s.quiz().await?, None, "not expired after its TTL");
            assert_eq!(*s.forever().await?, 1);
            R::Ok(())
        })
        .await
        .unwrap();
    store.cleanup_with(&["quiz:-13"]).await;
}

/// S19: grammY's migration scenarios on this store.
async fn s19_migrations(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Owner::builder()
        .default_store(store.counted.clone())
        .build();
    // From the start: bytes stored before there were migrations (no version).
    store
        .raw_write("pets:1", br#"{"pet_names":["Fido","Rex"]}"#)
        .await;
    // From the middle: version 1.
    let v1 = serde_json::to_vec(&PetsV1 {
        pets: vec![pet("Tom")],
    })
    .unwrap();
    store.raw_write("pets:2", &with_version(1, &v1)).await;
    // Up to date: version 2.
    let v2 = serde_json::to_vec(&Pets {
        pets: vec![pet("Kit")],
        favorite: Some("Kit".into()),
    })
    .unwrap();
    store.raw_write("pets:3", &with_version(2, &v2)).await;
    // From a newer program: version 9.
    let v9 = with_version(9, b"{}");
    store.raw_write("pets:4", &v9).await;

    let read = |user: i64| {
        let sessions = &sessions;
        async move {
            sessions
                .run(&ChatContext::user_only(user), async |s| {
                    Ok::<_, Error>(std::mem::take(&mut *s.pets().await?))
                })
                .await
        }
    };
    store.counted.reset();
    let from_start = read(1).await.unwrap();
    assert_eq!(from_start.pets, vec![pet("Fido"), pet("Rex")]);
    assert_eq!(from_start.favorite.as_deref(), Some("Fido"));
    assert_eq!(
        store.counted.counts().writes,
        1,
        "a migrated value is written back"
    );
    assert!(
        store
            .raw_read("pets:1")
            .await
            .unwrap()
            .starts_with(&with_version(2, b"")),
        "written back at the current version"
    );
    store.counted.reset();
    let again = read(1).await.unwrap();
    assert_eq!(again, Pets::default(), "the handler took the value out");
    let middle = read(2).await.unwrap();
    assert_eq!(middle.favorite.as_deref(), Some("Tom"));
    store.counted.reset();
    let current = read(3).await.unwrap();
    assert_eq!(current.favorite.as_deref(), Some("Kit"));
    match read(4).await {
        Err(Error::TooNew {
            found, supported, ..
        }) => assert_eq!((found, supported), (9, 2)),
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert_eq!(
        store.raw_read("pets:4").await.as_deref(),
        Some(&v9[..]),
        "newer data is kept"
    );

    // Migrations with TTL on an Option field: migrated, then expires.
    store.raw_write("badge:-14", &with_version(0, b"7")).await;
    let ctx = ChatContext::new(-14);
    let badge = sessions
        .run(&ctx, async |s| Ok::<_, Error>(s.badge().await?.clone()))
        .await
        .unwrap();
    assert_eq!(badge.as_deref(), Some("7"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let badge = sessions
        .run(&ctx, async |s| Ok::<_, Error>(s.badge().await?.clone()))
        .await
        .unwrap();
    assert_eq!(badge, None, "the migrated value expired with its TTL");
    store.cleanup_with(&["badge:-14"]).await;
}

/// S20: list, count, remove and clear one fragment, leaving the others alone.
async fn s20_listing(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    for chat in 1..=5 {
        sessions
            .run(&ChatContext::new(-chat).with_user(chat), async |s| {
                *s.count().await? = chat as u32;
                s.settings().set(Settings { lang: "en".into() }).await?;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = sessions.list("count", cursor.as_deref(), 2).await.unwrap();
        keys.extend(page.entries.into_iter().map(|(key, _)| key));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    assert_eq!(keys, ["-1", "-2", "-3", "-4", "-5"]);
    assert_eq!(sessions.count("count").await.unwrap(), 5);
    assert!(sessions.remove("count", "-3").await.unwrap());
    assert!(!sessions.remove("count", "-3").await.unwrap());
    assert_eq!(sessions.clear("count").await.unwrap(), 4);
    assert_eq!(sessions.count("count").await.unwrap(), 0);
    assert_eq!(
        sessions.count("settings").await.unwrap(),
        5,
        "other fragments stay"
    );
    assert!(matches!(
        sessions.count("nope").await,
        Err(Error::UnknownFragment { .. })
    ));
    store.cleanup().await;
}

/// S21: a group's per-chat fragments follow it to its supergroup; per-user ones stay; a
/// second migration update changes nothing; data the new chat has is never overwritten.
async fn s21_chat_migration(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let (old, new) = (-100, -1_000_100);
    sessions
        .run(&ChatContext::new(old).with_user(5), async |s| {
            *s.count().await? = 3;
            s.settings().set(Settings { lang: "de".into() }).await?;
            R::Ok(())
        })
        .await
        .unwrap();
    let migration = ChatContext::new(new).with_user(5).with_migration(old, new);
    let count = sessions
        .run(&migration, async |s| Ok::<_, Error>(*s.count().await?))
        .await
        .unwrap();
    assert_eq!(count, 3, "the counter moved to the supergroup");
    assert_eq!(store.raw_read(&format!("count:{old}")).await, None);
    // Telegram sends the migration twice (once in each chat): the second is a no-op.
    let count = sessions
        .run(&ChatContext::new(old).with_migration(old, new), async |s| {
            Ok::<_, Error>(*s.count().await?)
        })
        .await
        .unwrap();
    assert_eq!(count, 0, "the old chat is empty now");
    assert_eq!(
        store.raw_read(&format!("count:{new}")).await.as_deref(),
        Some(&b"3"[..])
    );
    // Data already under the new chat is kept; the old value stays where it was.
    let (old2, new2) = (-200, -1_000_200);
    for (chat, n) in [(old2, 1u32), (new2, 2)] {
        sessions
            .run(&ChatContext::new(chat), async |s| {
                *s.count().await? = n;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let moved = sessions
        .migrate_chat(multisession::ChatMigration {
            from: old2,
            to: new2,
        })
        .await
        .unwrap();
    assert!(moved.is_empty(), "{moved:?}");
    assert_eq!(
        store.raw_read(&format!("count:{new2}")).await.as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(
        store.raw_read(&format!("count:{old2}")).await.as_deref(),
        Some(&b"1"[..])
    );
    store.cleanup().await;
}

/// S17: two `Sessions` over one store have separate in-process locks, like two processes:
/// only compare-and-set keeps them from losing increments (16 tasks × 25 on one chat).
/// Several OS processes: `cross_process.rs`.
async fn s17_two_sessions_on_one_store_lose_no_update(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let a = Bot::builder().default_store(store.raw.clone()).build();
    let b = Bot::builder().default_store(store.raw.clone()).build();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let sessions = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..25 {
                    sessions
                        .run(&ChatContext::new(1), async |s| {
                            let mut count = s.count().await?;
                            tokio::task::yield_now().await;
                            *count += 1;
                            R::Ok(())
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = a.load(&ChatContext::new(1)).await.unwrap().count;
    let (sa, sb) = (a.stats(), b.stats());
    eprintln!(
        "S17 on {}: {} conflicts, {} re-runs",
        backend.as_dyn().name(),
        sa.conflicts + sb.conflicts,
        sa.commit_retries + sb.commit_retries
    );
    assert_eq!(total, 400, "updates were lost across two Sessions");
    store.cleanup().await;
}

// ---------------------------------------------------------------- one definition, four stores

/// Delete-all (grammY's `ctx.session = undefined`), lazy and strict: one delete per
/// stored fragment, none for a fragment with nothing stored or no key; later reads in the
/// update see initial values; other sessions keep theirs.
async fn delete_all_deletes_what_is_stored(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let ctx = ChatContext::new(-40).with_user(9);
    let neighbour = ChatContext::new(-41).with_user(10);
    for ctx in [&ctx, &neighbour] {
        sessions
            .run(ctx, async |s| {
                *s.count().await? = 4;
                s.settings().set(Settings { lang: "de".into() }).await // quiz: not stored
            })
            .await
            .unwrap();
    }
    store.counted.reset();
    // Lazy, with one fragment already read and changed in the update.
    sessions
        .run(&ctx, async |s| {
            *s.count().await? += 1;
            s.delete_all().await?;
            assert_eq!(*s.count().await?, 0, "later reads see the initial value");
            assert_eq!(*s.quiz().await?, None);
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!(
        (c.reads, c.writes, c.deletes),
        (3, 0, 2),
        "read each fragment once, delete the two stored"
    );
    assert_eq!(store.raw_read("count:-40").await, None);
    assert_eq!(store.raw_read("settings:9").await, None);
    // Nothing left: a second delete-all deletes nothing.
    store.counted.reset();
    sessions
        .run(&ctx, async |s| s.delete_all().await)
        .await
        .unwrap();
    assert_eq!(store.counted.counts().deletes, 0);
    // An update without a chat: only the per-user fragment has a key.
    store.counted.reset();
    sessions
        .run(&ChatContext::user_only(10), async |s| s.delete_all().await)
        .await
        .unwrap();
    let c = store.counted.counts();
    assert_eq!(
        (c.reads, c.deletes),
        (1, 1),
        "no key, no I/O for count and quiz"
    );
    assert_eq!(
        store.raw_read("count:-41").await.as_deref(),
        Some(&b"4"[..])
    );
    // Strict mode.
    store.counted.reset();
    let mut data = sessions.load(&neighbour).await.unwrap();
    data.count += 1; // changed, then deleted anyway
    data.delete_all().await.unwrap();
    let c = store.counted.counts();
    assert_eq!((c.writes, c.deletes), (0, 1), "only count was still stored");
    let data = sessions.load(&neighbour).await.unwrap();
    assert_eq!((data.count, data.settings.lang.as_str()), (0, ""));
    drop(data);
    store.cleanup().await;
}

/// S21 for per-user-in-chat fragments: every user's value of the old chat moves, a value
/// the new chat already has is kept (the old one stays), other chats are not touched, and
/// a second migration changes nothing.
async fn s21_chat_migration_moves_users_in_the_chat(backend: &StoreRef, ns: &str) {
    let store = TestStore::new(backend, ns);
    let sessions = Bot::builder().default_store(store.counted.clone()).build();
    let (old, new, other) = (-300, -1_000_300, -301);
    let quiz = |chat: i64, user: i64, text: &'static str| {
        let sessions = sessions.clone();
        async move {
            sessions
                .run(&ChatContext::new(chat).with_user(user), async |s| {
                    s.quiz().set(Some(text.to_owned())).await
                })
                .await
                .unwrap()
        }
    };
    quiz(old, 5, "five").await;
    quiz(old, 6, "six (old)").await;
    quiz(new, 6, "six (new)").await;
    quiz(other, 5, "elsewhere").await;
    quiz(old, 55, "fifty-five").await; // a user id that starts like another
    let migration = multisession::ChatMigration { from: old, to: new };
    let moved = sessions.migrate_chat(migration).await.unwrap();
    assert_eq!(moved, ["quiz"]);
    let raw = async |chat: i64, user: i64| {
        store
            .raw_read(&format!("quiz:{chat}:{user}"))
            .await
            .map(|b| String::from_utf8(b).unwrap())
    };
    assert_eq!(raw(new, 5).await.as_deref(), Some("\"five\""));
    assert_eq!(raw(old, 5).await, None);
    assert_eq!(raw(new, 55).await.as_deref(), Some("\"fifty-five\""));
    assert_eq!(raw(new, 6).await.as_deref(), Some("\"six (new)\""), "kept");
    assert_eq!(
        raw(old, 6).await.as_deref(),
        Some("\"six (old)\""),
        "not lost"
    );
    assert_eq!(raw(other, 5).await.as_deref(), Some("\"elsewhere\""));
    // Telegram announces it in both chats: the second time nothing moves.
    let moved = sessions.migrate_chat(migration).await.unwrap();
    assert!(moved.is_empty(), "{moved:?}");
    // Through an update that announces the migration, as handlers see it.
    let seen = sessions
        .run(
            &ChatContext::new(new).with_user(5).with_migration(old, new),
            async |s| Ok::<_, Error>(s.quiz().await?.clone()),
        )
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("five"));
    store.cleanup().await;
}

/// Two bots on one store (`Config::bot`, or the context's bot id) never see each other's
/// sessions; `share_between_bots` opts out; `adopt_into_bot` moves what was stored
/// without a bot id into a bot's namespace, once.
async fn bots_on_one_store_are_kept_apart(backend: &StoreRef, ns: &str) {
    use multisession::Config;

    let store = TestStore::new(backend, ns);
    let bot = |config: Config| {
        Bot::builder()
            .default_store(store.counted.clone())
            .config(config)
            .build()
    };
    let (pizza, quiz) = (bot(Config::new().bot(1001)), bot(Config::new().bot(2002)));
    let legacy = bot(Config::new());
    let set = async |sessions: &multisession::Sessions<Bot>, ctx: &ChatContext, n: u32| {
        sessions
            .run(ctx, async |s| {
                *s.count().await? = n;
                R::Ok(())
            })
            .await
            .unwrap()
    };
    let get = async |sessions: &multisession::Sessions<Bot>, ctx: &ChatContext| {
        sessions.load(ctx).await.unwrap().count
    };
    let chat = ChatContext::new(-7);
    set(&pizza, &chat, 1).await;
    set(&quiz, &chat, 2).await;
    assert_eq!((get(&pizza, &chat).await, get(&quiz, &chat).await), (1, 2));
    assert_eq!(get(&legacy, &chat).await, 0);
    assert_eq!(
        store.raw_read("1001/count:-7").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        store.raw_read("2002/count:-7").await.as_deref(),
        Some(&b"2"[..])
    );
    // Admin calls stay in the bot's namespace.
    assert_eq!(pizza.count("count").await.unwrap(), 1);
    assert_eq!(legacy.count("count").await.unwrap(), 0);
    assert!(pizza.remove("count", "-7").await.unwrap());
    assert_eq!(get(&quiz, &chat).await, 2, "the other bot's session stays");
    // The context may name the bot (one `Sessions` serving several bots).
    set(&legacy, &chat.with_bot(2002), 3).await;
    assert_eq!(get(&quiz, &chat).await, 3);
    // Sharing: no bot namespace, whatever the ids.
    let shared = bot(Config::new().bot(1001).share_between_bots(true));
    set(&shared, &chat.with_bot(2002), 4).await;
    assert_eq!(get(&legacy, &chat).await, 4);

    // The first release's sessions (no bot id) move into the bot's namespace, once.
    set(&legacy, &ChatContext::new(-8), 8).await;
    assert_eq!(get(&pizza, &ChatContext::new(-8)).await, 0);
    let moved = pizza.adopt_into_bot().await.unwrap();
    assert_eq!(moved, 2, "chats -7 and -8");
    assert_eq!(get(&pizza, &ChatContext::new(-8)).await, 8);
    assert_eq!(get(&pizza, &chat).await, 4);
    assert_eq!(
        get(&legacy, &ChatContext::new(-8)).await,
        0,
        "moved, not copied"
    );
    assert_eq!(
        get(&quiz, &chat).await,
        3,
        "another bot's sessions are not touched"
    );
    assert_eq!(pizza.adopt_into_bot().await.unwrap(), 0, "idempotent");
    store.cleanup().await;
}

/// `keys::business_connection`: a business account's state, keyed by its connection, from
/// real Bot API business updates: the connection, a message, an edit, deletions.
async fn business_connection_keys(backend: &StoreRef, ns: &str) {
    use multisession::{keys, telegram::Update};

    #[derive(MultiSession)]
    struct Shop {
        #[session(key = keys::business_connection)]
        inbox: Vec<String>,
    }

    let store = TestStore::new(backend, ns);
    let sessions = Shop::builder().default_store(store.counted.clone()).build();
    let ada = r#"{"id":318274650,"is_bot":false,"first_name":"Ada","language_code":"en"}"#;
    let private = r#"{"id":318274650,"first_name":"Ada","type":"private"}"#;
    let customer = r#"{"id":55501,"first_name":"Bruno","type":"private"}"#;
    let bruno = r#"{"id":55501,"is_bot":false,"first_name":"Bruno"}"#;
    let updates = [
        format!(
            r#"{{"update_id":584120402,"business_connection":{{"id":"BQADBAADjwIAAq8","user":{ada},"user_chat_id":318274650,"date":1772789200,"rights":{{"can_reply":true}},"is_enabled":true}}}}"#
        ),
        format!(
            r#"{{"update_id":584120403,"business_message":{{"business_connection_id":"BQADBAADjwIAAq8","message_id":12,"from":{bruno},"chat":{customer},"date":1772789300,"text":"is the shop open?"}}}}"#
        ),
        format!(
            r#"{{"update_id":584120404,"edited_business_message":{{"business_connection_id":"BQADBAADjwIAAq8","message_id":12,"from":{bruno},"chat":{customer},"date":1772789300,"edit_date":1772789310,"text":"is the shop open today?"}}}}"#
        ),
        format!(
            r#"{{"update_id":584120405,"deleted_business_messages":{{"business_connection_id":"BQADBAADjwIAAq8","chat":{customer},"message_ids":[12]}}}}"#
        ),
    ];
    for json in &updates {
        let update: Update = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        sessions
            .run(&update, async |s| {
                s.inbox().await?.push(update.kind.name().to_owned());
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let stored = store.raw_read("inbox:BQADBAADjwIAAq8").await.unwrap();
    let inbox: Vec<String> = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        inbox,
        [
            "business_connection",
            "business_message",
            "edited_business_message",
            "deleted_business_messages"
        ]
    );
    // An ordinary message has no business connection: the fragment is unavailable.
    let plain: Update = serde_json::from_str(&format!(
        r#"{{"update_id":584120406,"message":{{"message_id":3,"from":{ada},"chat":{private},"date":1772789400,"text":"hi"}}}}"#
    ))
    .unwrap();
    let available = sessions
        .run(&plain, async |s| Ok::<_, Error>(s.inbox().is_available()))
        .await
        .unwrap();
    assert!(!available);
    store.cleanup().await;
}

multisession::store_cases!(every store => crate:
    delete_all_deletes_what_is_stored,
    s21_chat_migration_moves_users_in_the_chat,
    bots_on_one_store_are_kept_apart,
    business_connection_keys,
    s1_s3_s12_lazy_costs,
    s13_a_failed_handler_writes_nothing,
    s15_undecodable_bytes,
    s17_two_sessions_on_one_store_lose_no_update,
    s18_ttl,
    s19_migrations,
    s20_listing,
    s21_chat_migration,
);
