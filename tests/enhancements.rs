//! TTL (S18) and migrations (S19) declared on fragments, on the memory store; the SQLite
//! file runs the same scenarios where it applies.

#[path = "common/pets.rs"]
mod pets;
use pets::*;

use std::time::Duration;

use multisession::{
    ChatContext, Error, MultiSession,
    store::StoreRef,
    stores::{CountingStore, MemoryStore},
};

type R = Result<(), Error>;

// ---------------------------------------------------------------- TTL

#[derive(MultiSession)]
struct Timed {
    #[session(ttl = "300ms")]
    quiz: Option<String>,
    #[session(ttl = Duration::from_secs(3600))]
    long: u32,
    forever: u32,
}

#[tokio::test]
async fn s18_a_value_not_written_for_its_ttl_reads_as_the_initial_value() {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = Timed::builder().default_store(store.clone()).build();
    let ctx = ChatContext::new(1);
    sessions
        .run(&ctx, |s| async move {
            *s.quiz().await? = Some("6 × 7?".into());
            *s.long().await? = 1;
            *s.forever().await? = 1;
            R::Ok(())
        })
        .await
        .unwrap();
    // Reading does not slide the TTL; writing does.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sessions
            .run(&ctx, |s| async move {
                let mut quiz = s.quiz().await?;
                assert!(
                    quiz.is_some(),
                    "expired although written less than its TTL ago"
                );
                quiz.as_mut().unwrap().push('!');
                R::Ok(())
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    sessions
        .run(&ctx, |s| async move {
            assert_eq!(*s.quiz().await?, None, "not expired after its TTL");
            assert_eq!(*s.long().await?, 1);
            assert_eq!(*s.forever().await?, 1);
            R::Ok(())
        })
        .await
        .unwrap();
    // Expired values are gone from the store too (the memory store drops them on touch).
    assert_eq!(store.inner().as_dyn().read("quiz:1").await.unwrap(), None);
}

// ---------------------------------------------------------------- migrations (grammY's pets)

#[derive(MultiSession)]
struct Owner {
    #[session(key = multisession::keys::user, migrations = [add_birthdays, pick_favorite])]
    pets: Pets,
    #[session(migrations = [|old: u32| old.to_string(), |old: String| format!("#{old}")], ttl = "1h")]
    badge: Option<String>,
}

fn owner(store: &CountingStore) -> multisession::Sessions<Owner> {
    Owner::builder().default_store(store.clone()).build()
}

/// What the codec wrote under `key`, without the updates the runtime records beside it.
async fn stored(store: &CountingStore, key: &str) -> Vec<u8> {
    let record = store.inner().as_dyn().read(key).await.unwrap().unwrap();
    multisession::envelope::payload(&record.value).to_vec()
}

fn fido() -> Pets {
    Pets {
        pets: vec![
            Pet {
                name: "Fido".into(),
                birthday: None,
            },
            Pet {
                name: "Rex".into(),
                birthday: None,
            },
        ],
        favorite: Some("Fido".into()),
    }
}

async fn read_pets(store: &CountingStore) -> Result<Pets, Error> {
    owner(store)
        .run(&ChatContext::new(5).with_user(7), |s| async move {
            let pets = s.pets().await?;
            Ok(Pets {
                pets: pets.pets.clone(),
                favorite: pets.favorite.clone(),
            })
        })
        .await
}

#[tokio::test]
async fn s19_data_from_before_the_first_migration_is_migrated_and_written_back() {
    let store = CountingStore::new(MemoryStore::new());
    // No version header: stored before the bot had migrations.
    store
        .inner()
        .as_dyn()
        .write("pets:7", br#"{"pet_names":["Fido","Rex"]}"#, None)
        .await
        .unwrap();
    assert_eq!(read_pets(&store).await.unwrap(), fido());
    assert_eq!(store.counts().writes, 1, "a migrated value is written back");
    let bytes = stored(&store, "pets:7").await;
    assert!(
        bytes.starts_with(b"\0MSv\0\0\0\x02"),
        "stored with version 2: {bytes:?}"
    );
    // Read again: already current, nothing to write.
    store.reset();
    assert_eq!(read_pets(&store).await.unwrap(), fido());
    assert_eq!(store.counts().writes, 0);
}

#[tokio::test]
async fn s19_data_from_the_middle_runs_only_the_remaining_steps() {
    let store = CountingStore::new(MemoryStore::new());
    let v1 = multisession::codec::with_version(
        1,
        br#"{"pets":[{"name":"Fido","birthday":null},{"name":"Rex","birthday":null}]}"#,
    );
    store
        .inner()
        .as_dyn()
        .write("pets:7", &v1, None)
        .await
        .unwrap();
    assert_eq!(read_pets(&store).await.unwrap(), fido());
    assert_eq!(store.counts().writes, 1);
}

#[tokio::test]
async fn s19_up_to_date_data_is_read_as_it_is() {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = owner(&store);
    let ctx = ChatContext::new(5).with_user(7);
    sessions
        .run(&ctx, |s| async move {
            s.pets().set(fido()).await?;
            R::Ok(())
        })
        .await
        .unwrap();
    store.reset();
    assert_eq!(read_pets(&store).await.unwrap(), fido());
    assert_eq!((store.counts().reads, store.counts().writes), (1, 0));
}

#[tokio::test]
async fn s19_data_from_a_newer_program_is_an_error_and_kept() {
    let store = CountingStore::new(MemoryStore::new());
    let v5 = multisession::codec::with_version(5, br#"{"whatever":"the future holds"}"#);
    store
        .inner()
        .as_dyn()
        .write("pets:7", &v5, None)
        .await
        .unwrap();
    let err = read_pets(&store).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::TooNew {
                fragment: "pets",
                found: 5,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        stored(&store, "pets:7").await,
        v5,
        "newer data must never be overwritten"
    );
    // Even the reset policy keeps it.
    let reset = Owner::builder()
        .default_store(store.clone())
        .config(multisession::Config::new().on_decode_error(multisession::OnDecodeError::Reset))
        .build();
    let err = reset
        .run(&ChatContext::new(5).with_user(7), |s| async move {
            s.pets().await?.pets.clear();
            R::Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooNew { .. }), "{err}");
    assert_eq!(stored(&store, "pets:7").await, v5);
}

#[tokio::test]
async fn s19_migrations_combine_with_option_fields_and_ttl() {
    let store = CountingStore::new(MemoryStore::new());
    store
        .inner()
        .as_dyn()
        .write("badge:5", b"42", None)
        .await
        .unwrap();
    let sessions = owner(&store);
    sessions
        .run(&ChatContext::new(5).with_user(7), |s| async move {
            assert_eq!(s.badge().await?.as_deref(), Some("#42"));
            R::Ok(())
        })
        .await
        .unwrap();
    // Written back at version 2, with the fragment's TTL.
    let bytes = stored(&store, "badge:5").await;
    assert_eq!(&bytes[..8], b"\0MSv\0\0\0\x02");
    assert_eq!(&bytes[8..], br##""#42""##);
}

#[tokio::test]
async fn s15_the_reset_policy_replaces_undecodable_bytes_with_the_initial_value() {
    #[derive(MultiSession)]
    struct Plain {
        count: u32,
    }
    let store = CountingStore::new(MemoryStore::new());
    store
        .inner()
        .as_dyn()
        .write("count:1", b"not a number", None)
        .await
        .unwrap();
    let sessions = Plain::builder()
        .default_store(store.clone())
        .config(multisession::Config::new().on_decode_error(multisession::OnDecodeError::Reset))
        .build();
    sessions
        .run(&ChatContext::new(1), |s| async move {
            assert_eq!(*s.count().await?, 0);
            R::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(stored(&store, "count:1").await, b"0");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn s18_s19_on_sqlite() {
    let store = CountingStore::new(StoreRef::new(
        multisession::stores::SqliteStore::in_memory()
            .await
            .unwrap(),
    ));
    store
        .inner()
        .as_dyn()
        .write("pets:7", br#"{"pet_names":["Fido","Rex"]}"#, None)
        .await
        .unwrap();
    assert_eq!(read_pets(&store).await.unwrap(), fido());
    let sessions = Timed::builder().default_store(store.clone()).build();
    sessions
        .run(&ChatContext::new(1), |s| async move {
            *s.quiz().await? = Some("q".into());
            R::Ok(())
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    sessions
        .run(&ChatContext::new(1), |s| async move {
            assert_eq!(*s.quiz().await?, None);
            R::Ok(())
        })
        .await
        .unwrap();
}
