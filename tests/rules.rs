//! The session rules S1–S17 of DESIGN §3, on the memory store, each proved by counting
//! store calls. Test names start with the rule they prove.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{FlakyStore, Rendezvous, RendezvousStore, no_hang};
use std::time::Duration;

use multisession::{
    ChatContext, Config, Error, MultiSession, OnConflict, OnHandlerError, SessionContext, keys,
    store::Store,
    stores::{CountingStore, Counts, MemoryStore},
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Pizza {
    count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    lang: String,
}

static INITIAL_CALLS: AtomicUsize = AtomicUsize::new(0);

impl Settings {
    fn english() -> Self {
        INITIAL_CALLS.fetch_add(1, Ordering::SeqCst);
        Settings { lang: "en".into() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Quiz {
    question: String,
    answer: u32,
}

fn topic_key(ctx: &dyn SessionContext) -> Option<String> {
    keys::chat_thread(ctx)
}

#[derive(MultiSession)]
struct Bot {
    pizza: Pizza,
    #[session(key = keys::user, initial = Settings::english)]
    settings: Settings,
    #[session(key = keys::user_in_chat)]
    quiz: Option<Quiz>,
    #[session(key = topic_key)]
    topic: Vec<String>,
    #[session(key = |ctx: &dyn SessionContext| ctx.chat_id().filter(|c| *c > 0), prefix = "dm/")]
    private: u64,
}

type R = Result<(), Error>;

fn counting() -> (CountingStore, multisession::Sessions<Bot>) {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = Bot::builder().default_store(store.clone()).build();
    (store, sessions)
}

fn group(chat: i64, user: i64) -> ChatContext {
    ChatContext::new(chat).with_user(user)
}

async fn raw(store: &CountingStore, key: &str) -> Option<String> {
    let record = store.inner().as_dyn().read(key).await.unwrap();
    // What the codec wrote, without the updates the runtime records beside it.
    record.map(|r| String::from_utf8(multisession::envelope::payload(&r.value).to_vec()).unwrap())
}

// ---------------------------------------------------------------- keys

#[tokio::test]
async fn s1_each_fragment_uses_its_key_function() {
    let (store, sessions) = counting();
    let ctx = group(-100, 7).with_thread(3);
    sessions
        .run(&ctx, |s| async move {
            s.pizza().await?.count = 1;
            s.settings().await?.lang = "de".into();
            s.quiz().set(Some(Quiz::default())).await?;
            s.topic().await?.push("hi".into());
            assert_eq!(s.pizza().key(), Some("-100"));
            assert_eq!(s.settings().key(), Some("7"));
            assert_eq!(s.quiz().key(), Some("-100:7"));
            assert_eq!(s.topic().key(), Some("-100:3"));
            assert_eq!(s.private().key(), None);
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        raw(&store, "pizza:-100").await.as_deref(),
        Some(r#"{"count":1}"#)
    );
    assert_eq!(
        raw(&store, "settings:7").await.as_deref(),
        Some(r#"{"lang":"de"}"#)
    );
    assert!(raw(&store, "quiz:-100:7").await.is_some());
    assert_eq!(
        raw(&store, "topic:-100:3").await.as_deref(),
        Some(r#"["hi"]"#)
    );

    // A closure key with its own prefix.
    sessions
        .run(&group(42, 42), |s| async move {
            *s.private().await? += 5;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(raw(&store, "dm/42").await.as_deref(), Some("5"));
}

#[tokio::test]
async fn s2_fragments_sharing_a_store_never_collide() {
    #[derive(MultiSession)]
    struct Same {
        a: u32,
        b: u32,
    }
    let store = CountingStore::new(MemoryStore::new());
    let sessions = Same::builder().default_store(store.clone()).build();
    sessions
        .run(&ChatContext::new(1), |s| async move {
            *s.a().await? = 10;
            *s.b().await? = 20;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(raw(&store, "a:1").await.as_deref(), Some("10"));
    assert_eq!(raw(&store, "b:1").await.as_deref(), Some("20"));
}

#[tokio::test]
async fn s2_crafted_keys_stay_in_their_namespace() {
    fn evil(ctx: &dyn SessionContext) -> Option<String> {
        Some(match ctx.chat_id()? {
            1 => "1".to_owned(),
            2 => ":1".to_owned(),
            3 => "../b:1".to_owned(),
            4 => "\u{0}b:1".to_owned(),
            _ => "*".to_owned(),
        })
    }
    #[derive(MultiSession)]
    struct Spaces {
        #[session(key = evil)]
        a: u32,
        b: u32,
    }
    let store = CountingStore::new(MemoryStore::new());
    let sessions = Spaces::builder().default_store(store.clone()).build();
    sessions
        .run(&ChatContext::new(1), |s| async move {
            *s.b().await? = 99;
            R::Ok(())
        })
        .await
        .unwrap();
    for chat in 1..=5 {
        sessions
            .run(&ChatContext::new(chat), |s| async move {
                let key = s.a().storage_key().unwrap().to_owned();
                assert!(key.starts_with("a:"), "{key}");
                // Whatever the key, fragment `a` starts from its own initial value.
                assert_eq!(*s.a().await?, 0, "key {key:?} reached another namespace");
                *s.a().await? = chat as u32;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    assert_eq!(raw(&store, "b:1").await.as_deref(), Some("99"));
}

#[tokio::test]
async fn s3_no_key_makes_the_fragment_unavailable_without_io() {
    let (store, sessions) = counting();
    // An inline query: a user, no chat.
    let ctx = ChatContext::user_only(7);
    sessions
        .run(&ctx, |s| async move {
            assert!(!s.pizza().is_available());
            let err = s.pizza().await.unwrap_err();
            assert!(matches!(err, Error::NoKey { fragment: "pizza" }), "{err}");
            assert!(err.to_string().contains("pizza"));
            assert!(matches!(
                s.pizza().set(Pizza::default()).await,
                Err(Error::NoKey { .. })
            ));
            assert!(matches!(
                s.quiz().delete().await,
                Err(Error::NoKey { fragment: "quiz" })
            ));
            // The per-user fragment still works.
            s.settings().await?.lang = "de".into();
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes, c.deletes), (1, 1, 0));
}

// ---------------------------------------------------------------- initial values

#[tokio::test]
async fn s4_missing_values_start_fresh_from_the_initial() {
    let (_store, sessions) = counting();
    let before = INITIAL_CALLS.load(Ordering::SeqCst);
    for user in [1, 2] {
        sessions
            .run(&group(user, user), |s| async move {
                assert_eq!(s.settings().await?.lang, "en");
                assert_eq!(*s.quiz().await?, None);
                assert_eq!(*s.pizza().await?, Pizza::default());
                s.settings().await?.lang.push_str("-changed");
                s.pizza().await?.count += 1;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    // One fresh initial per load: chat 2 did not see chat 1's change.
    assert!(INITIAL_CALLS.load(Ordering::SeqCst) - before >= 2);
    sessions
        .run(&group(2, 2), |s| async move {
            assert_eq!(s.settings().await?.lang, "en-changed");
            assert_eq!(s.pizza().await?.count, 1);
            R::Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn s5_an_untouched_initial_value_is_not_written() {
    let (store, sessions) = counting();
    sessions
        .run(&group(1, 2), |s| async move {
            let _ = s.settings().await?.lang.len();
            // Mutable access that ends where it started.
            let mut pizza = s.pizza().await?;
            pizza.count += 1;
            pizza.count -= 1;
            drop(pizza);
            // Assigning `None` to an absent `Option` fragment.
            *s.quiz().await? = None;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes, c.deletes, c.write_calls), (3, 0, 0, 0));
}

// ---------------------------------------------------------------- laziness

#[tokio::test]
async fn s6_an_untouched_fragment_costs_nothing() {
    let (store, sessions) = counting();
    let out = sessions
        .run(&group(1, 2), |_s| async move { R::Ok(()) })
        .await;
    out.unwrap();
    assert_eq!(store.counts(), Counts::default());
}

#[tokio::test]
async fn s7_one_read_per_fragment_per_update_however_often_touched() {
    let (store, sessions) = counting();
    sessions
        .run(&group(1, 2), |s| async move {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.pizza().await?.count += 1;
                    R::Ok(())
                }));
            }
            for _ in 0..16 {
                s.pizza().await?.count += 1;
            }
            for task in tasks {
                task.await.unwrap()?;
            }
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes), (1, 1));
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":32}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s7_one_read_when_tasks_on_several_threads_touch_a_fragment_at_once() {
    // The memory store answers at once, so loads take the path without waiting; tasks of
    // one update racing on other threads for the same fragment still read it once.
    let (store, sessions) = counting();
    let updates = 200u64;
    for _ in 0..updates {
        sessions
            .run(&group(1, 2), |s| async move {
                let start = Arc::new(tokio::sync::Barrier::new(8));
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (s, start) = (s.clone(), start.clone());
                        tokio::spawn(async move {
                            start.wait().await;
                            s.pizza().await?.count += 1;
                            R::Ok(())
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap()?;
                }
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let c = store.counts();
    assert_eq!((c.reads, c.writes), (updates, updates));
    let expected = format!(r#"{{"count":{}}}"#, updates * 8);
    assert_eq!(raw(&store, "pizza:1").await, Some(expected));
}

#[tokio::test]
async fn s8_assigning_without_reading_does_no_read() {
    let (store, sessions) = counting();
    sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().set(Pizza { count: 9 }).await?;
            // Reading after the blind write sees it, still without a read.
            assert_eq!(s.pizza().await?.count, 9);
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes), (0, 1));
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":9}"#)
    );
}

#[tokio::test]
async fn s9_deleting_does_no_read_and_one_delete() {
    let (store, sessions) = counting();
    store
        .inner()
        .as_dyn()
        .write("pizza:1", br#"{"count":3}"#, None)
        .await
        .unwrap();
    store
        .inner()
        .as_dyn()
        .write("quiz:1:2", br#"{"question":"q","answer":1}"#, None)
        .await
        .unwrap();
    sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().delete().await?;
            // After a delete the handler sees the initial value.
            assert_eq!(s.pizza().await?.count, 0);
            s.quiz().set(None).await?;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes, c.deletes, c.write_calls), (0, 0, 2, 1));
    assert_eq!(raw(&store, "pizza:1").await, None);
    assert_eq!(raw(&store, "quiz:1:2").await, None);
}

#[tokio::test]
async fn s9_setting_an_option_to_none_after_reading_deletes_it() {
    let (store, sessions) = counting();
    store
        .inner()
        .as_dyn()
        .write("quiz:1:2", br#"{"question":"q","answer":1}"#, None)
        .await
        .unwrap();
    sessions
        .run(&group(1, 2), |s| async move {
            let mut quiz = s.quiz().await?;
            assert_eq!(quiz.as_ref().map(|q| q.answer), Some(1));
            *quiz = None;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes, c.deletes), (1, 0, 1));
    assert_eq!(raw(&store, "quiz:1:2").await, None);
}

#[tokio::test]
async fn s10_touching_one_fragment_never_reads_another() {
    let (store, sessions) = counting();
    sessions
        .run(&group(1, 2), |s| async move {
            s.quiz().await?;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(store.counts().reads, 1);
}

#[tokio::test]
async fn s10_touching_two_fragments_at_once_loads_them_concurrently() {
    // Each read only completes once both have started: sequential loads would never end.
    let rendezvous = Rendezvous::new(2);
    let sessions = Bot::builder()
        .pizza(RendezvousStore::new(&rendezvous))
        .settings(RendezvousStore::new(&rendezvous))
        .default_store(MemoryStore::new())
        .build();
    no_hang(
        "concurrent lazy loads",
        sessions.run(&group(1, 2), |s| async move {
            let (pizza, settings) = tokio::join!(s.pizza().get(), s.settings().get());
            assert_eq!((pizza?.count, settings?.lang.clone()), (0, "en".to_owned()));
            R::Ok(())
        }),
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------- strict mode

#[tokio::test]
async fn s11_strict_mode_loads_everything_in_one_round_trip_per_store() {
    let shared = CountingStore::new(MemoryStore::new());
    let other = CountingStore::new(MemoryStore::new());
    let sessions = Bot::builder()
        .default_store(shared.clone())
        .quiz(other.clone())
        .build();
    let mut data = sessions.load(&group(-1, 2)).await.unwrap();
    // pizza, settings, topic and quiz have keys; `private` has none in a group.
    let (s, o) = (shared.counts(), other.counts());
    assert_eq!((s.reads, s.read_calls), (3, 1));
    assert_eq!((o.reads, o.read_calls), (1, 1));
    data.pizza.count += 1;
    data.quiz = Some(Quiz::default());
    data.save().await.unwrap();
    let (s, o) = (shared.counts(), other.counts());
    // Only the changed fragments are written (S12).
    assert_eq!((s.writes, s.write_calls, o.writes), (1, 1, 1));
    let data = sessions.load(&group(-1, 2)).await.unwrap();
    assert_eq!((data.pizza.count, data.quiz.is_some()), (1, true));
}

#[tokio::test]
async fn s11_strict_mode_loads_different_stores_concurrently() {
    let rendezvous = Rendezvous::new(2);
    let sessions = Bot::builder()
        .default_store(RendezvousStore::new(&rendezvous))
        .settings(RendezvousStore::new(&rendezvous))
        .build();
    let data = no_hang("strict loads", sessions.load(&group(1, 2)))
        .await
        .unwrap();
    assert_eq!(data.settings.lang, "en");
}

#[tokio::test]
async fn s24_strict_mode_skips_a_fragment_without_key_and_saves_the_others() {
    let (store, sessions) = counting();
    let mut data = sessions.load(&group(-1, 2)).await.unwrap();
    data.private = 5; // no key: the chat is a group
    data.pizza.count = 1;
    data.save().await.unwrap();
    let counts = store.counts();
    assert_eq!(
        counts.writes, 1,
        "the per-chat change is written: {counts:?}"
    );
    assert_eq!(
        raw(&store, "pizza:-1").await.as_deref(),
        Some(r#"{"count":1}"#)
    );
}

// ---------------------------------------------------------------- write-back

#[tokio::test]
async fn s12_only_changed_fragments_are_written_in_one_batch() {
    let (store, sessions) = counting();
    sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().await?.count = 5;
            s.settings().await?.lang = "de".into();
            s.quiz().await?;
            R::Ok(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes, c.write_calls), (3, 2, 1));
    store.reset();
    sessions
        .run(&group(1, 2), |s| async move {
            // Written back unchanged: equal bytes, no write.
            let mut pizza = s.pizza().await?;
            pizza.count = 5;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(store.counts().writes, 0);
}

#[tokio::test]
async fn s13_a_failing_handler_writes_nothing() {
    let (store, sessions) = counting();
    let out: Result<(), Error> = sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().await?.count = 5;
            Err(Error::NoKey {
                fragment: "stand-in for a handler error",
            })
        })
        .await;
    assert!(out.is_err());
    assert_eq!(store.counts().writes, 0);
    assert_eq!(raw(&store, "pizza:1").await, None);
}

#[tokio::test]
async fn s13_the_commit_policy_writes_despite_the_error() {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = Bot::builder()
        .default_store(store.clone())
        .config(Config::new().on_handler_error(OnHandlerError::Commit))
        .build();
    let out: Result<(), HandlerError> = sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().await?.count = 5;
            Err(HandlerError("handler failed"))
        })
        .await;
    assert_eq!(out, Err(HandlerError("handler failed")));
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":5}"#)
    );
}

#[derive(Debug, PartialEq)]
struct HandlerError(&'static str);

impl From<Error> for HandlerError {
    fn from(_: Error) -> Self {
        HandlerError("session error")
    }
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn s14_a_load_error_names_fragment_key_and_store() {
    let flaky = FlakyStore::new("flaky");
    flaky.fail_reads.store(true, Ordering::SeqCst);
    let sessions = Bot::builder()
        .settings(flaky.clone())
        .default_store(MemoryStore::new())
        .build();
    sessions
        .run(&group(1, 2), |s| async move {
            let err = s.settings().await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(&err, Error::Load { fragment: "settings", key, store, .. } if key == "settings:2" && store == "flaky"));
            assert!(text.contains("settings") && text.contains("settings:2") && text.contains("flaky"), "{text}");
            // Other fragments keep working.
            s.pizza().await?.count += 1;
            R::Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn s14_a_save_error_names_every_failed_fragment() {
    let flaky_a = FlakyStore::new("flaky-a");
    let flaky_b = FlakyStore::new("flaky-b");
    flaky_a.fail_writes.store(true, Ordering::SeqCst);
    flaky_b.fail_writes.store(true, Ordering::SeqCst);
    let sessions = Bot::builder()
        .pizza(flaky_a.clone())
        .settings(flaky_b.clone())
        .default_store(MemoryStore::new())
        .build();
    let err = sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().await?.count += 1;
            s.settings().await?.lang = "de".into();
            R::Ok(())
        })
        .await
        .unwrap_err();
    let Error::Save { failures, .. } = &err else {
        panic!("{err}")
    };
    let mut names: Vec<_> = failures
        .iter()
        .map(|f| (f.fragment, f.store.as_str()))
        .collect();
    names.sort();
    assert_eq!(names, [("pizza", "flaky-a"), ("settings", "flaky-b")]);
    let text = err.to_string();
    assert!(
        text.contains("pizza:1") && text.contains("settings:2"),
        "{text}"
    );
}

#[tokio::test]
async fn s15_undecodable_bytes_are_a_typed_error_and_stay_stored() {
    let (store, sessions) = counting();
    store
        .inner()
        .as_dyn()
        .write("pizza:1", b"\xff not json", None)
        .await
        .unwrap();
    let err = sessions
        .run(&group(1, 2), |s| async move {
            s.pizza().await?.count += 1;
            R::Ok(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { fragment: "pizza", key, .. } if key == "pizza:1"),
        "{err}"
    );
    assert_eq!(store.counts().writes, 0);
    let kept = store
        .inner()
        .as_dyn()
        .read("pizza:1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.value, b"\xff not json");
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_64_tasks_times_100_increments_on_one_chat_end_at_6400() {
    let (store, sessions) = counting();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                sessions
                    .run(&group(1, 2), |s| async move {
                        let mut pizza = s.pizza().await?;
                        tokio::task::yield_now().await; // widen the race window
                        pizza.count += 1;
                        R::Ok(())
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    no_hang("64 x 100 increments", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":6400}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_opposite_lock_orders_do_not_deadlock() {
    // Update X touches the chat fragment then the user fragment, update Y the other way
    // round, both on the same chat and user, many times at once.
    let (store, sessions) = counting();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                sessions
                    .run(&group(1, 2), |s| async move {
                        if i % 2 == 0 {
                            let mut pizza = s.pizza().await?;
                            tokio::task::yield_now().await;
                            s.settings().await?.lang.push('x');
                            pizza.count += 1;
                        } else {
                            let mut settings = s.settings().await?;
                            tokio::task::yield_now().await;
                            s.pizza().await?.count += 1;
                            settings.lang.push('x');
                        }
                        R::Ok(())
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    no_hang("opposite orders", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":640}"#)
    );
    let settings = raw(&store, "settings:2").await.unwrap();
    assert_eq!(settings.matches('x').count(), 640);
}

#[tokio::test]
async fn s16_the_two_step_form_reports_contention_instead_of_deadlocking() {
    let (_store, sessions) = counting();
    let x = sessions.open(&group(1, 2));
    let y = sessions.open(&group(1, 2));
    let pizza = x.pizza().await.unwrap();
    let settings = y.settings().await.unwrap();
    // `x` holds pizza and waits for settings (held by `y`, who waits for nothing)...
    let waiting = tokio::spawn({
        let x = x.clone();
        async move { x.settings().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so `y` waiting for pizza would close the cycle: refused at once.
    let err = tokio::time::timeout(Duration::from_secs(5), y.pizza())
        .await
        .expect("a cycle is refused at once")
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Contended {
                fragment: "pizza",
                ..
            }
        ),
        "{err}"
    );
    drop(settings);
    assert!(matches!(
        y.commit().await,
        Err(Error::MustRerun { fragment: "pizza" })
    ));
    // `x` got settings once `y` let go.
    waiting.await.unwrap().unwrap();
    drop(pizza);
    x.commit().await.unwrap();
}

#[tokio::test]
async fn s28_waiting_for_a_key_held_by_this_very_task_is_bounded() {
    let sessions = Bot::builder()
        .default_store(MemoryStore::new())
        .config(Config::new().lock_timeout(Some(Duration::from_millis(100))))
        .build();
    let x = sessions.open(&group(1, 2));
    let y = sessions.open(&group(1, 2));
    let _pizza = x.pizza().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), y.pizza())
        .await
        .expect("bounded by lock_timeout")
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Busy {
                fragment: "pizza",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn committing_while_a_clone_is_alive_commits_and_closes_the_clone() {
    // The `.map(|s: Sessions<_>, m: Message| s.open(&m))` shape: a framework keeps a
    // clone of the handle while the endpoint commits.
    let (store, sessions) = counting();
    let session = sessions.open(&group(1, 2));
    session.pizza().await.unwrap().count = 3;
    let clone = session.clone();
    session.commit().await.unwrap();
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":3}"#)
    );
    // The clone cannot change anything any more: an error, not a silently lost write.
    let err = clone.pizza().set(Pizza { count: 9 }).await.unwrap_err();
    assert!(
        matches!(err, Error::Committed { fragment: "pizza" }),
        "{err}"
    );
    assert!(matches!(
        clone.settings().await,
        Err(Error::Committed { .. })
    ));
    // And it holds no key: the next update of the chat runs at once.
    no_hang(
        "the next update after a commit with a clone alive",
        sessions.run(&group(1, 2), async |s| {
            s.pizza().await?.count += 1;
            R::Ok(())
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        raw(&store, "pizza:1").await.as_deref(),
        Some(r#"{"count":4}"#)
    );
    drop(clone);
}

#[tokio::test]
async fn s17_the_fail_policy_returns_a_typed_conflict() {
    let store = MemoryStore::new();
    let sessions = Bot::builder()
        .default_store(store.clone())
        .config(Config::new().on_conflict(OnConflict::Fail))
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let err = sessions
        .run(&group(1, 2), |s| {
            let (store, runs) = (store.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                s.pizza().await?.count += 1;
                // Another process writes in between.
                store
                    .write("pizza:1", br#"{"count":100}"#, None)
                    .await
                    .unwrap();
                R::Ok(())
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Conflict {
                fragment: "pizza",
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        store.read("pizza:1").await.unwrap().unwrap().value,
        br#"{"count":100}"#
    );
}

#[tokio::test]
async fn s17_a_conflict_reruns_the_handler_from_a_fresh_read() {
    let store = MemoryStore::new();
    let sessions = Bot::builder().default_store(store.clone()).build();
    let runs = Arc::new(AtomicUsize::new(0));
    sessions
        .run(&group(1, 2), |s| {
            let (store, runs) = (store.clone(), runs.clone());
            async move {
                let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
                s.pizza().await?.count += 1;
                if first {
                    store
                        .write("pizza:1", br#"{"count":100}"#, None)
                        .await
                        .unwrap();
                }
                R::Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        multisession::envelope::payload(&store.read("pizza:1").await.unwrap().unwrap().value),
        br#"{"count":101}"#
    );
}

#[tokio::test]
async fn handlers_can_be_spawned() {
    let (store, sessions) = counting();
    let task = tokio::spawn(async move {
        sessions
            .run(&group(1, 2), |s| async move {
                s.pizza().await?.count += 1;
                R::Ok(())
            })
            .await
    });
    task.await.unwrap().unwrap();
    assert_eq!(store.counts().writes, 1);
}

// ---------------------------------------------------------------- chat migration

#[tokio::test]
async fn s21_a_group_that_becomes_a_supergroup_keeps_its_per_chat_sessions() {
    let (store, sessions) = counting();
    let (group_id, supergroup_id) = (-4123456, -1009876543210);
    sessions
        .run(&group(group_id, 7), |s| async move {
            s.pizza().await?.count = 3;
            s.settings().await?.lang = "de".into();
            s.quiz().set(Some(Quiz::default())).await?;
            R::Ok(())
        })
        .await
        .unwrap();
    // Telegram's service message in the old group announces the migration.
    let announce = group(group_id, 7).with_migration(group_id, supergroup_id);
    sessions
        .run(&announce, |_s| async move { R::Ok(()) })
        .await
        .unwrap();
    assert_eq!(raw(&store, &format!("pizza:{group_id}")).await, None);
    assert_eq!(
        raw(&store, &format!("pizza:{supergroup_id}"))
            .await
            .as_deref(),
        Some(r#"{"count":3}"#)
    );
    // Per-user data is not per chat: untouched.
    assert_eq!(
        raw(&store, "settings:7").await.as_deref(),
        Some(r#"{"lang":"de"}"#)
    );
    // The second service message, in the new supergroup: idempotent.
    let again = group(supergroup_id, 7).with_migration(group_id, supergroup_id);
    sessions
        .run(&again, |s| async move {
            assert_eq!(s.pizza().await?.count, 3);
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        sessions
            .migrate_chat(multisession::ChatMigration {
                from: group_id,
                to: supergroup_id
            })
            .await
            .unwrap(),
        Vec::<&str>::new()
    );
}

#[tokio::test]
async fn s21_a_migration_never_overwrites_data_the_new_chat_has() {
    let (store, sessions) = counting();
    for (chat, count) in [(-1, 1), (-2, 2)] {
        sessions
            .run(&group(chat, 7), |s| async move {
                s.pizza().await?.count = count;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let moved = sessions
        .migrate_chat(multisession::ChatMigration { from: -1, to: -2 })
        .await
        .unwrap();
    assert!(moved.is_empty());
    assert_eq!(
        raw(&store, "pizza:-2").await.as_deref(),
        Some(r#"{"count":2}"#)
    );
    assert_eq!(
        raw(&store, "pizza:-1").await.as_deref(),
        Some(r#"{"count":1}"#),
        "the old value is kept, not lost"
    );
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn s20_a_fragments_sessions_can_be_listed_counted_and_removed() {
    let (_store, sessions) = counting();
    for user in 1..=12 {
        sessions
            .run(&group(-5, user), |s| async move {
                s.settings().await?.lang = format!("l{user}");
                s.pizza().await?.count += 1;
                R::Ok(())
            })
            .await
            .unwrap();
    }
    // `settings` and `pizza` share one store; each lists only its own namespace.
    assert_eq!(sessions.count("settings").await.unwrap(), 12);
    assert_eq!(sessions.count("pizza").await.unwrap(), 1);
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = sessions
            .list("settings", cursor.as_deref(), 5)
            .await
            .unwrap();
        assert!(page.entries.len() <= 5);
        keys.extend(page.entries.into_iter().map(|(key, bytes)| {
            assert!(String::from_utf8(bytes).unwrap().contains("\"l"));
            key
        }));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort_by_key(|k| k.parse::<i64>().unwrap());
    assert_eq!(keys, (1..=12).map(|u| u.to_string()).collect::<Vec<_>>());
    assert!(sessions.remove("settings", "3").await.unwrap());
    assert!(!sessions.remove("settings", "3").await.unwrap());
    assert_eq!(sessions.clear("settings").await.unwrap(), 11);
    assert_eq!(sessions.count("settings").await.unwrap(), 0);
    assert_eq!(sessions.count("pizza").await.unwrap(), 1);
    let err = sessions.count("nope").await.unwrap_err();
    assert!(err.to_string().contains("pizza, settings, quiz"), "{err}");
}

// ---------------------------------------------------------------- committing twice

/// An endpoint commits through a clone, then the framework commits its handle: the second
/// commit writes nothing more. If the first failed, the second says so (never `Ok` for
/// changes that were not stored).
#[tokio::test]
async fn a_second_commit_writes_nothing_and_repeats_no_success() -> R {
    let (store, sessions) = counting();
    let session = sessions.open(&group(-5, 1));
    session.pizza().await?.count += 1;
    session.clone().commit().await?;
    session.commit().await?;
    assert_eq!(store.counts().writes, 1);

    // The first commit conflicts (another "process" wrote the chat after our read).
    let other = Bot::builder().default_store(store.clone()).build();
    let session = sessions.open(&group(-5, 1));
    session.pizza().await?.count += 1;
    let theirs = other.open(&group(-5, 2));
    theirs.pizza().await?.count += 10;
    theirs.commit().await?;
    let first = session.clone().commit().await;
    assert!(matches!(first, Err(Error::Conflict { .. })), "{first:?}");
    match session.commit().await {
        Err(Error::CommitFailed { fragment }) => assert_eq!(fragment, "pizza"),
        other => panic!("expected CommitFailed, got {other:?}"),
    }
    let stored = sessions.load(&group(-5, 1)).await?;
    assert_eq!(stored.pizza.count, 11);
    Ok(())
}

// ---------------------------------------------------------------- delete-all

/// Delete-all, then a change in the same update: the change is what is stored. With a
/// guard of a fragment still held by the same task, delete-all is `Error::Held` at once
/// (never a wait for itself).
#[tokio::test]
async fn delete_all_then_set_keeps_the_set_and_never_waits_for_itself() -> R {
    let (store, sessions) = counting();
    let ctx = group(-6, 3);
    sessions
        .run(&ctx, async |s| {
            s.pizza().await?.count = 2;
            s.settings().set(Settings { lang: "de".into() }).await
        })
        .await?;
    store.reset();
    sessions
        .run(&ctx, async |s| {
            s.delete_all().await?;
            s.pizza().await?.count = 7;
            R::Ok(())
        })
        .await?;
    let c = store.counts();
    assert_eq!(
        (c.writes, c.deletes),
        (1, 1),
        "pizza rewritten, settings deleted: {c:?}"
    );
    let data = sessions.load(&ctx).await?;
    assert_eq!((data.pizza.count, data.settings.lang.as_str()), (7, "en"));
    drop(data);
    let held = no_hang(
        "delete-all while holding a guard",
        sessions.run(&ctx, async |s| {
            let _guard = s.pizza().await?;
            s.delete_all().await
        }),
    )
    .await;
    assert!(matches!(held, Err(Error::Held { .. })), "{held:?}");
    Ok(())
}
