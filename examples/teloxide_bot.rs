//! The pizza bot on teloxide: two session fragments (per chat, per user) in an ordinary
//! teloxide handler, and a teloxide `Dialogue` (`/name`) kept in the same SQLite file.
//!
//! With a bot token it talks to the real Telegram (TLS needs the `teloxide-rustls`
//! feature); without one it replays a short conversation against a stand-in Bot API on
//! loopback and prints what the bot sent:
//!
//! ```sh
//! cargo run --example teloxide_bot --features teloxide                       # stand-in
//! TELOXIDE_TOKEN=123:abc cargo run --example teloxide_bot --features teloxide-rustls
//! ```
//!
//! Sessions and dialogues persist in `teloxide-bot.db` (`BOT_DB` picks another file).

#[path = "common/fake_bot_api.rs"]
#[allow(dead_code)]
mod fake_bot_api;
#[path = "common/teloxide_pizza.rs"]
mod teloxide_pizza;

use std::time::Duration;

use multisession::{stores::SqliteStore, teloxide::DialogueStorage};
use teloxide::Bot;
use teloxide_pizza::{TgSession, dispatcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("BOT_DB").unwrap_or_else(|_| "teloxide-bot.db".into());
    let store = SqliteStore::open(&path).await?;
    let sessions = TgSession::builder().default_store(store.clone()).build();
    let dialogues = DialogueStorage::new(store).prefix("naming:").into_arc();

    if let Ok(token) = std::env::var("TELOXIDE_TOKEN") {
        if !cfg!(feature = "teloxide-rustls") {
            return Err(
                "talking to api.telegram.org needs TLS: run with `--features teloxide-rustls`"
                    .into(),
            );
        }
        println!("running against Telegram; sessions in {path}; Ctrl-C stops");
        let (_stop, run) = dispatcher(Bot::new(token), sessions, dialogues, false);
        run.await;
        return Ok(());
    }

    // No token: a short conversation against the stand-in API.
    let (group, ada, bob) = (-1_001_234, 11, 12);
    let script = [
        (group, ada, "/pizza"),
        (group, bob, "/pizza"),
        (group, bob, "see you at 8"),
        (group, ada, "/lang de"),
        (group, ada, "/hunger"),
        (ada, ada, "/name"),
        (ada, ada, "Ada"),
        (ada, ada, "/hunger"),
    ];
    let updates = script
        .iter()
        .map(|(chat, user, text)| fake_bot_api::text_update(*chat, *user, text))
        .collect();
    let fake = fake_bot_api::FakeBotApi::start(updates).await?;
    let bot = Bot::new("42:stand-in").set_api_url(url::Url::parse(fake.url())?);
    let (stop, run) = dispatcher(bot, sessions, dialogues, false);
    let running = tokio::spawn(run);
    let done = fake.wait_until_done(7, Duration::from_secs(20)).await;
    stop.shutdown()?.await;
    running.await?;
    for (chat, user, text) in script {
        println!("chat {chat:>9} user {user}: {text}");
    }
    println!();
    for sent in fake.sent() {
        println!("bot -> chat {:>9}: {}", sent.chat, sent.text);
    }
    if !done {
        return Err("the bot did not answer everything within 20 s".into());
    }
    Ok(())
}
