//! The edge rules S22–S29 (DESIGN.md §7) on every store: memory, SQLite, Redis and
//! PostgreSQL, through the one runner (`multisession::store_cases!`).
//!
//! - S22: a value equal to what was loaded is never written, whatever the serialization
//!   order of its `HashMap`s and `HashSet`s, taken mutably or not, lazy or strict;
//! - S23: `initial()` runs only for missing values; an untouched initial that differs per
//!   call is never written;
//! - S24: strict mode skips a fragment without a key and saves the others;
//! - S25: the same update (same id) changes each fragment once: delivered twice, out of
//!   order across chats, in strict mode;
//! - S26/S27: a commit over two stores that fails on one says what was written, and a
//!   re-run of the same update completes it without applying the written part twice; a
//!   write that times out and lands later is reported unknown, never "not written";
//! - S28: re-touching a held fragment is an error at once; cancelled accesses and
//!   cancelled `run`s release their keys;
//! - S29: updates taking two keys in opposite orders do not deadlock and are rarely
//!   re-run.
//!
//! Cross-process cases (several OS processes on one store) are in `cross_process.rs`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::IntoFuture,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use multisession::{
    ChatContext, Config, Error, MultiSession, OnConflict, Stored, async_trait,
    store::{Capabilities, Outcome, Record, Store, StoreError, StoreRef, Write},
    stores::{CountingStore, MemoryStore},
    testing::Namespaced,
};
use serde::{Deserialize, Serialize};

type R = Result<(), Error>;

/// The store of a case: the backend under the case's namespace, counted.
fn counted(store: &StoreRef, ns: &str) -> (CountingStore, Arc<Namespaced>) {
    let namespaced = Arc::new(Namespaced::new(store.clone(), ns));
    (CountingStore::new(namespaced.clone()), namespaced)
}

// ---------------------------------------------------------------- S22

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Inventory {
    items: HashMap<String, u32>,
    tags: HashSet<String>,
    nested: BTreeMap<String, HashMap<String, Vec<u8>>>,
}

/// No `PartialEq`: compared by content, maps in any order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Loose {
    scores: HashMap<u64, HashMap<String, i64>>,
}

#[derive(MultiSession)]
struct Maps {
    inv: Inventory,
    loose: Loose,
    #[session(key = multisession::keys::user)]
    set: HashSet<u64>,
}

fn big_inventory() -> Inventory {
    let mut inv = Inventory::default();
    for i in 0..40 {
        inv.items.insert(format!("item-{i}"), i);
        inv.tags.insert(format!("tag-{i}"));
    }
    let inner: HashMap<String, Vec<u8>> = (0..20).map(|i| (format!("k{i}"), vec![i])).collect();
    inv.nested.insert("a".into(), inner.clone());
    inv.nested.insert("b".into(), inner);
    inv
}

async fn s22_equal_values_are_never_written(store: &StoreRef, ns: &str) {
    let (counting, namespaced) = counted(store, ns);
    let sessions = Maps::builder().default_store(counting.clone()).build();
    let ctx = ChatContext::new(1).with_user(2);
    sessions
        .run(&ctx, async |s| {
            *s.inv().await? = big_inventory();
            let mut loose = s.loose().await?;
            for i in 0..30u64 {
                loose
                    .scores
                    .insert(i, (0..5).map(|j| (format!("p{j}"), j)).collect());
            }
            drop(loose);
            s.set().set((0..50).collect()).await?;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counting.counts().writes, 3);
    counting.reset();

    for _ in 0..10 {
        sessions
            .run(&ctx, async |s| {
                // Taken mutably, values rewritten with what they hold: not a change.
                let mut inv = s.inv().await?;
                let _ = &mut *inv;
                inv.items.insert("item-3".into(), 3);
                inv.tags.insert("tag-7".into());
                drop(inv);
                let _ = &mut *s.loose().await?;
                let mut set = s.set().await?;
                set.insert(7);
                R::Ok(())
            })
            .await
            .unwrap();
    }
    let counts = counting.counts();
    assert_eq!(counts.writes, 0, "lazy: unchanged maps written: {counts:?}");
    assert_eq!(counts.reads, 30);

    for _ in 0..10 {
        let data = sessions.load(&ctx).await.unwrap();
        data.save().await.unwrap();
    }
    let counts = counting.counts();
    assert_eq!(
        counts.writes, 0,
        "strict: unchanged maps written: {counts:?}"
    );

    // A real change is written; so is a reordered `Vec` (order is a change there).
    sessions
        .run(&ctx, async |s| {
            s.inv().await?.items.insert("item-3".into(), 4);
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counting.counts().writes, 1);
    sessions
        .run(&ctx, async |s| {
            let mut inv = s.inv().await?;
            if let Some(bytes) = inv.nested.get_mut("a").and_then(|m| m.get_mut("k1")) {
                bytes.push(9);
                bytes.reverse();
            }
            R::Ok(())
        })
        .await
        .unwrap();
    let mut data = sessions.load(&ctx).await.unwrap();
    assert_eq!(data.inv.nested["a"]["k1"], vec![9, 1]);
    data.inv
        .nested
        .get_mut("a")
        .unwrap()
        .get_mut("k1")
        .unwrap()
        .reverse();
    data.save().await.unwrap();
    assert_eq!(counting.counts().writes, 3, "a reordered Vec is a change");
    let data = sessions.load(&ctx).await.unwrap();
    assert_eq!(data.inv.nested["a"]["k1"], vec![1, 9]);
    drop(data);
    namespaced.clear(&[]).await;
}

// ---------------------------------------------------------------- S23, S24

/// An initial value that differs per call (a timestamp, a random id, a non-empty map).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    id: u64,
    seen: HashMap<String, u32>,
}

static STAMPS: AtomicUsize = AtomicUsize::new(0);

fn stamp() -> Stamp {
    let n = STAMPS.fetch_add(1, Ordering::SeqCst) as u64;
    Stamp {
        id: n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        seen: (0..10).map(|i| (format!("k{i}"), i)).collect(),
    }
}

#[derive(MultiSession)]
struct Stamps {
    #[session(initial = stamp)]
    chat: Stamp,
    #[session(key = multisession::keys::user, initial = stamp)]
    user: Stamp,
    #[session(key = multisession::keys::user)]
    hits: u32,
}

/// `STAMPS` is shared by every store's copy of the S23 cases: they take turns.
static STAMP_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stamps_made() -> usize {
    STAMPS.load(Ordering::SeqCst)
}

async fn s23_initial_runs_only_for_missing_values(store: &StoreRef, ns: &str) {
    let _turn = STAMP_TURN.lock().await;
    let (counting, namespaced) = counted(store, ns);
    let sessions = Stamps::builder().default_store(counting.clone()).build();
    let ctx = ChatContext::new(1).with_user(2);
    let calls = |before: usize| stamps_made() - before;

    // Missing: one call, however often it is touched.
    let before = stamps_made();
    sessions
        .run(&ctx, async |s| {
            let first = s.chat().await?.id;
            assert_eq!(s.chat().await?.id, first);
            s.chat().await?.seen.insert("new".into(), 1);
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(calls(before), 1);

    // Found: no call, lazy or strict (for the missing per-user ones: one each).
    let before = stamps_made();
    sessions
        .run(&ctx, async |s| {
            let _ = s.chat().await?.id;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(calls(before), 0, "lazy read of a found value");
    let before = stamps_made();
    let data = sessions.load(&ctx).await.unwrap();
    assert_eq!(
        calls(before),
        1,
        "strict: only the missing `user` needs one"
    );
    data.save().await.unwrap();

    // Set and delete do not read, and call nothing; a read after a delete is missing.
    let before = stamps_made();
    sessions
        .run(&ctx, async |s| {
            s.user()
                .set(Stamp {
                    id: 1,
                    seen: HashMap::new(),
                })
                .await?;
            s.chat().delete().await?;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(calls(before), 0, "set and delete make no initial value");
    let before = stamps_made();
    sessions
        .run(&ctx, async |s| {
            s.chat().delete().await?;
            let _ = s.chat().await?.id;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(calls(before), 1, "a read after a delete makes one");
    namespaced.clear(&[]).await;
}

async fn s23_an_untouched_initial_that_differs_per_call_is_not_written(store: &StoreRef, ns: &str) {
    let _turn = STAMP_TURN.lock().await;
    let (counting, namespaced) = counted(store, ns);
    let sessions = Stamps::builder().default_store(counting.clone()).build();
    let ctx = ChatContext::new(1).with_user(2);
    sessions
        .run(&ctx, async |s| {
            let _ = s.chat().await?.id;
            let _ = &mut *s.user().await?; // taken mutably, left alone
            R::Ok(())
        })
        .await
        .unwrap();
    let data = sessions.load(&ctx).await.unwrap();
    data.save().await.unwrap();
    let mut data = sessions.load(&ctx).await.unwrap();
    data.hits += 1;
    data.save().await.unwrap();
    let counts = counting.counts();
    assert_eq!(counts.writes, 1, "only the changed `hits`: {counts:?}");
    namespaced.clear(&[]).await;
}

async fn s24_strict_mode_skips_a_fragment_without_key(store: &StoreRef, ns: &str) {
    let _turn = STAMP_TURN.lock().await;
    let (counting, namespaced) = counted(store, ns);
    let sessions = Stamps::builder().default_store(counting.clone()).build();
    // An inline query: a user, no chat.
    let inline = ChatContext::user_only(7);
    let before = counting.counts();
    let mut data = sessions.load(&inline).await.unwrap();
    assert_eq!(
        (counting.counts() - before).reads,
        2,
        "the per-chat fragment is not read"
    );
    data.hits += 1;
    data.user.seen.insert("inline".into(), 1);
    data.chat.seen.insert("lost?".into(), 1); // no key: skipped, not an error
    data.save().await.unwrap();
    assert_eq!(counting.counts().writes, 2);
    let data = sessions.load(&inline).await.unwrap();
    assert_eq!(data.hits, 1);
    assert_eq!(data.user.seen.get("inline"), Some(&1));
    drop(data);
    // Lazily, the same update touches no per-chat fragment and commits the rest.
    sessions
        .run(&inline, async |s| {
            assert!(matches!(
                s.chat().await,
                Err(Error::NoKey { fragment: "chat" })
            ));
            *s.hits().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(sessions.load(&inline).await.unwrap().hits, 2);
    namespaced.clear(&[]).await;
}

// ---------------------------------------------------------------- S25

#[derive(MultiSession)]
struct Counters {
    chat: u64,
    #[session(key = multisession::keys::user)]
    user: u64,
}

async fn counts(sessions: &multisession::Sessions<Counters>, ctx: &ChatContext) -> (u64, u64) {
    let data = sessions.load(ctx).await.unwrap();
    (data.chat, data.user)
}

async fn bump(sessions: &multisession::Sessions<Counters>, ctx: &ChatContext) -> R {
    sessions
        .run(ctx, async |s| {
            *s.chat().await? += 1;
            *s.user().await? += 1;
            R::Ok(())
        })
        .await
}

async fn s25_the_same_update_changes_each_fragment_once(store: &StoreRef, ns: &str) {
    let (counting, namespaced) = counted(store, ns);
    let sessions = Counters::builder().default_store(counting.clone()).build();
    let update = ChatContext::new(1).with_user(9).with_update_id(584_120_332);
    for _ in 0..3 {
        bump(&sessions, &update).await.unwrap();
    }
    assert_eq!(counts(&sessions, &update).await, (1, 1));
    assert!(sessions.stats().repeats >= 4, "{:?}", sessions.stats());
    bump(&sessions, &update.with_update_id(584_120_333))
        .await
        .unwrap();
    assert_eq!(counts(&sessions, &update).await, (2, 2));

    // Per user, updates from different chats commit out of order: each counts once,
    // and each redelivery is recognised.
    let chats = [(2, 700_003), (3, 700_001), (4, 700_002)];
    for (chat, id) in chats {
        bump(
            &sessions,
            &ChatContext::new(chat).with_user(9).with_update_id(id),
        )
        .await
        .unwrap();
    }
    for (chat, id) in chats.iter().rev() {
        bump(
            &sessions,
            &ChatContext::new(*chat).with_user(9).with_update_id(*id),
        )
        .await
        .unwrap();
    }
    assert_eq!(counts(&sessions, &update).await.1, 5);

    // A redelivery after 31 other changes of the value is still recognised.
    let chat = ChatContext::new(5).with_user(10);
    for id in 900_000..900_032 {
        bump(&sessions, &chat.with_update_id(id)).await.unwrap();
    }
    bump(&sessions, &chat.with_update_id(900_000))
        .await
        .unwrap();
    assert_eq!(counts(&sessions, &chat).await, (32, 32));

    // Strict mode too.
    for _ in 0..2 {
        let mut data = sessions.load(&chat.with_update_id(900_100)).await.unwrap();
        data.chat += 10;
        data.save().await.unwrap();
    }
    assert_eq!(counts(&sessions, &chat).await.0, 42);
    namespaced.clear(&[]).await;
}

// ---------------------------------------------------------------- S26, S27

/// A memory store whose batches fail (nothing written) `fail` more times, or land only
/// after `delay` (so a short `op_timeout` gives up on a write that still lands).
#[derive(Clone, Default)]
struct Faulty {
    inner: MemoryStore,
    fail: Arc<AtomicU32>,
    late: Arc<AtomicU32>,
}

const LATE: Duration = Duration::from_millis(300);

#[async_trait]
impl Store for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        let take = |n: &AtomicU32| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        };
        if take(&self.fail) {
            return writes
                .iter()
                .map(|_| Err(StoreError::backend("refused (test)")))
                .collect();
        }
        if take(&self.late) {
            // Lands after the caller stopped waiting, as a paused server would.
            let (inner, owned) = (self.inner.clone(), writes.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(LATE).await;
                inner.apply(&owned).await
            });
            std::future::pending::<()>().await;
        }
        self.inner.apply(writes).await
    }
}

fn two_stores(
    store: &StoreRef,
    ns: &str,
    config: Config,
) -> (multisession::Sessions<Counters>, Faulty, Arc<Namespaced>) {
    let (counting, namespaced) = counted(store, ns);
    let faulty = Faulty::default();
    let sessions = Counters::builder()
        .chat(counting)
        .user(faulty.clone())
        .config(config)
        .build();
    (sessions, faulty, namespaced)
}

async fn s26_a_partial_commit_says_what_was_written_and_a_rerun_completes_it(
    store: &StoreRef,
    ns: &str,
) {
    let (sessions, faulty, namespaced) =
        two_stores(store, ns, Config::new().on_conflict(OnConflict::Fail));
    let update = ChatContext::new(1).with_user(9).with_update_id(42);
    faulty.fail.store(1, Ordering::SeqCst);
    let err = bump(&sessions, &update).await.unwrap_err();
    assert_eq!(
        err.stored(),
        Stored::Partly {
            written: vec!["chat"],
            not_written: vec!["user"]
        },
        "{err}"
    );
    assert_eq!(err.update_id(), Some(42));
    assert!(err.to_string().contains("written: chat"), "{err}");
    assert_eq!(counts(&sessions, &update).await, (1, 0));
    // The same update again completes it: `chat` is not applied twice.
    bump(&sessions, &update).await.unwrap();
    assert_eq!(counts(&sessions, &update).await, (1, 1));

    // Without an update id of its own, the id the error names completes it.
    let plain = ChatContext::new(2).with_user(8);
    faulty.fail.store(1, Ordering::SeqCst);
    let err = bump(&sessions, &plain).await.unwrap_err();
    let id = err.update_id().expect("the update's id");
    bump(&sessions, &plain.with_update_id(id)).await.unwrap();
    assert_eq!(counts(&sessions, &plain).await, (1, 1));
    namespaced.clear(&[]).await;
}

async fn s26_run_completes_a_partial_commit_by_itself(store: &StoreRef, ns: &str) {
    let (sessions, faulty, namespaced) = two_stores(store, ns, Config::new());
    let ctx = ChatContext::new(1).with_user(9);
    faulty.fail.store(2, Ordering::SeqCst);
    bump(&sessions, &ctx).await.unwrap();
    assert_eq!(counts(&sessions, &ctx).await, (1, 1));
    let stats = sessions.stats();
    assert_eq!(stats.commit_retries, 2, "{stats:?}");
    assert_eq!(stats.repeats, 2, "`chat` was not written again: {stats:?}");
    // A store that refuses a commit of which nothing landed: the error at once.
    let (sessions, faulty, _) = two_stores(store, &format!("{ns}x:"), Config::new());
    faulty.fail.store(1, Ordering::SeqCst);
    let err = sessions
        .run(&ctx, async |s| {
            *s.user().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.stored(), Stored::Nothing, "{err}");
    namespaced.clear(&[]).await;
}

async fn s26_a_timed_out_write_that_lands_is_unknown_never_nothing(store: &StoreRef, ns: &str) {
    let config = Config::new()
        .op_timeout(Some(Duration::from_millis(100)))
        .on_conflict(OnConflict::Fail);
    let (sessions, faulty, namespaced) = two_stores(store, ns, config);
    let update = ChatContext::new(1).with_user(9).with_update_id(7);
    faulty.late.store(1, Ordering::SeqCst);
    let err = bump(&sessions, &update).await.unwrap_err();
    assert_eq!(
        err.stored(),
        Stored::Unknown {
            written: vec!["chat"],
            unknown: vec!["user"]
        },
        "{err}"
    );
    tokio::time::sleep(LATE * 2).await;
    assert_eq!(
        counts(&sessions, &update).await,
        (1, 1),
        "the late write landed"
    );
    // Re-running the same update is safe: nothing is applied twice.
    bump(&sessions, &update).await.unwrap();
    assert_eq!(counts(&sessions, &update).await, (1, 1));

    // With the default policy, `run` re-runs until it knows: done once.
    let config = Config::new().op_timeout(Some(Duration::from_millis(100)));
    let (sessions, faulty, _) = two_stores(store, &format!("{ns}x:"), config);
    faulty.late.store(1, Ordering::SeqCst);
    let ctx = ChatContext::new(2).with_user(9);
    bump(&sessions, &ctx).await.unwrap();
    tokio::time::sleep(LATE * 2).await;
    assert_eq!(counts(&sessions, &ctx).await, (1, 1));
    namespaced.clear(&[]).await;
}

// ---------------------------------------------------------------- S28

const AT_ONCE: Duration = Duration::from_secs(2);

async fn s28_touching_a_held_fragment_again_is_an_error_at_once(store: &StoreRef, ns: &str) {
    let (counting, namespaced) = counted(store, ns);
    let sessions = Counters::builder().default_store(counting).build();
    let ctx = ChatContext::new(1).with_user(9);
    sessions
        .run(&ctx, async |s| {
            let mut held = s.chat().await?;
            *held += 1;
            let again = tokio::time::timeout(AT_ONCE, s.chat().into_future())
                .await
                .expect("at once, not a hang");
            assert!(matches!(again, Err(Error::Held { fragment: "chat" })));
            let set = tokio::time::timeout(AT_ONCE, s.chat().set(5))
                .await
                .expect("at once");
            assert!(matches!(set, Err(Error::Held { .. })));
            let delete = tokio::time::timeout(AT_ONCE, s.chat().delete())
                .await
                .expect("at once");
            assert!(matches!(delete, Err(Error::Held { .. })));
            drop(held);
            *s.chat().await? += 1;
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counts(&sessions, &ctx).await.0, 2);
    namespaced.clear(&[]).await;
}

async fn s28_cancelled_accesses_and_runs_release_their_keys(store: &StoreRef, ns: &str) {
    let (counting, namespaced) = counted(store, ns);
    let sessions = Counters::builder().default_store(counting).build();
    let ctx = ChatContext::new(1).with_user(9);
    let holder = sessions.open(&ctx);
    let held = holder.chat().await.unwrap();
    // Another update waits for the key; its access is cancelled by `timeout` and by
    // `select!`.
    let waiter = sessions.open(&ctx);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), waiter.chat().into_future())
            .await
            .is_err()
    );
    tokio::select! {
        _ = waiter.user().into_future() => {}
        _ = tokio::time::sleep(Duration::from_millis(1)) => {}
    }
    tokio::select! {
        _ = waiter.chat().into_future() => panic!("the key is held"),
        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    drop(held);
    drop(holder);
    // Nothing leaked: the waiter gets the key now, at once.
    let got = tokio::time::timeout(AT_ONCE, waiter.chat().into_future())
        .await
        .expect("the cancelled waits left nothing behind");
    *got.unwrap() += 1;
    waiter.commit().await.unwrap();

    // A `run` cancelled in the middle of its handler releases its keys.
    let stuck = tokio::time::timeout(
        Duration::from_millis(100),
        sessions.run(&ctx, async |s| {
            *s.chat().await? += 100;
            std::future::pending::<()>().await;
            R::Ok(())
        }),
    )
    .await;
    assert!(stuck.is_err());
    tokio::time::timeout(AT_ONCE, bump(&sessions, &ctx))
        .await
        .expect("the cancelled run released its keys")
        .unwrap();
    assert_eq!(counts(&sessions, &ctx).await, (2, 1));
    namespaced.clear(&[]).await;
}

// ---------------------------------------------------------------- S29

async fn s29_opposite_orders_neither_deadlock_nor_rerun_often(store: &StoreRef, ns: &str) {
    let (counting, namespaced) = counted(store, ns);
    let sessions = Counters::builder().default_store(counting).build();
    let ctx = ChatContext::new(1).with_user(9);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                sessions
                    .run(&ctx, async |s| {
                        if i % 2 == 0 {
                            *s.chat().await? += 1;
                            tokio::task::yield_now().await;
                            *s.user().await? += 1;
                        } else {
                            *s.user().await? += 1;
                            tokio::task::yield_now().await;
                            *s.chat().await? += 1;
                        }
                        R::Ok(())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("no deadlock")
            .unwrap()
            .unwrap();
    }
    assert_eq!(counts(&sessions, &ctx).await, (100, 100));
    let stats = sessions.stats();
    eprintln!(
        "S29 opposite orders on {}: {} re-runs of 100 updates",
        store.as_dyn().name(),
        stats.contention_retries
    );
    assert!(stats.contention_retries <= 25, "{stats:?}");
    namespaced.clear(&[]).await;
}

multisession::store_cases!(every store => crate:
    s22_equal_values_are_never_written,
    s23_initial_runs_only_for_missing_values,
    s23_an_untouched_initial_that_differs_per_call_is_not_written,
    s24_strict_mode_skips_a_fragment_without_key,
    s25_the_same_update_changes_each_fragment_once,
    s26_a_partial_commit_says_what_was_written_and_a_rerun_completes_it,
    s26_run_completes_a_partial_commit_by_itself,
    s26_a_timed_out_write_that_lands_is_unknown_never_nothing,
    s28_touching_a_held_fragment_again_is_an_error_at_once,
    s28_cancelled_accesses_and_runs_release_their_keys,
    s29_opposite_orders_neither_deadlock_nor_rerun_often,
);
