//! Fragments on real stores, chosen by URL, with one fragment kept elsewhere: the pizza
//! counters and settings go to the store you name, the short-lived quiz stays in memory.
//! Run it twice (or in two terminals at once): the counters go on, and no increment is
//! lost between the processes.
//!
//! ```sh
//! cargo run --example stores                                          # SQLite: stores-bot.db
//! cargo run --example stores -- sqlite:my-bot.db
//! cargo run --example stores --features redis -- redis://127.0.0.1:6379
//! cargo run --example stores --features postgres -- postgres://postgres@127.0.0.1/test
//! ```

use multisession::{
    ChatContext, MultiSession, keys,
    store::StoreRef,
    stores::{MemoryStore, SqliteStore},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    lang: String,
}

impl Settings {
    fn english() -> Self {
        Settings { lang: "en".into() }
    }
}

#[derive(MultiSession)]
struct Bot {
    pizza: u32,
    #[session(key = keys::user, initial = Settings::english)]
    settings: Settings,
    #[session(key = keys::user_in_chat, ttl = "10m")]
    quiz: Option<String>,
}

/// The store a URL names.
async fn open(url: &str) -> Result<StoreRef, Box<dyn std::error::Error>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(StoreRef::new(SqliteStore::open(path).await?));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(StoreRef::new(
            multisession::stores::RedisStore::connect_with(
                url,
                multisession::stores::RedisConfig::new().key_prefix("stores-example:"),
            )
            .await?,
        ));
        #[cfg(not(feature = "redis"))]
        return Err("this build has no Redis store: add `--features redis`".into());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(StoreRef::new(
            multisession::stores::PostgresStore::connect(url).await?,
        ));
        #[cfg(not(feature = "postgres"))]
        return Err("this build has no PostgreSQL store: add `--features postgres`".into());
    }
    Err(format!("unknown store URL {url:?}: use sqlite:<file>, redis://… or postgres://…").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite:stores-bot.db".to_owned());
    let store = open(&url).await?;
    let name = store.as_dyn().name().to_owned();
    let sessions = Bot::builder()
        .default_store(store) // pizza and settings
        .quiz(MemoryStore::new()) // the quiz never leaves this process
        .build();

    // A busy group: 8 members order 25 pizzas each, concurrently.
    let chat = -4242;
    let tasks: Vec<_> = (1..=8)
        .map(|user| {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    sessions
                        .run(&ChatContext::new(chat).with_user(user), async |s| {
                            *s.pizza().await? += 1;
                            Ok::<_, multisession::Error>(())
                        })
                        .await?;
                }
                Ok::<_, multisession::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let total = sessions.load(&ChatContext::new(chat)).await?.pizza;
    let stats = sessions.stats();
    println!("store: {name} ({url})");
    println!("pizzas in chat {chat}: {total} (200 more than before this run)");
    println!(
        "reads {}, writes {}, conflicts re-run {}",
        stats.reads, stats.writes, stats.conflicts
    );
    Ok(())
}
