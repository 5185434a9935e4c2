//! The pizza bot on teloxide: commands (`BotCommands`), an inline keyboard, two session
//! fragments (per chat, per user) taken by the endpoints as a `Session` parameter, and a
//! teloxide `Dialogue` (`/name`) kept in the same SQLite file.
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
    let name = |user| if user == ada { "Ada" } else { "Bob" };
    let script: Vec<(i64, i64, Input)> = vec![
        (group, ada, Input::Text("/pizza")),
        (group, bob, Input::Text("/pizza@pizza_bot")),
        (group, bob, Input::Text("see you at 8")),
        (group, ada, Input::Text("/lang")),
        (group, ada, Input::Button("lang:de")),
        (group, ada, Input::Text("/hunger")),
        (ada, ada, Input::Text("/name")),
        (ada, ada, Input::Text("Ada")),
        (ada, ada, Input::Text("/hunger")),
    ];
    let updates = script
        .iter()
        .map(|(chat, user, input)| match input {
            Input::Text(text) => fake_bot_api::text_update(*chat, *user, text),
            Input::Button(data) => fake_bot_api::button_update(*chat, *user, data),
        })
        .collect();
    let fake = fake_bot_api::FakeBotApi::start(updates).await?;
    let bot = Bot::new("42:stand-in").set_api_url(url::Url::parse(fake.url())?);
    let (stop, run) = dispatcher(bot, sessions, dialogues, false);
    let running = tokio::spawn(run);
    let done = fake.wait_until_done(8, Duration::from_secs(20)).await;
    stop.shutdown()?.await;
    running.await?;
    // Each input, then what the bot answered to it (replies name the message they answer,
    // so the transcript reads the same whatever order teloxide handled the chats in).
    let sent = fake.sent();
    for (i, (chat, user, input)) in script.iter().enumerate() {
        let place = if *chat < 0 { "the group" } else { "private" };
        match input {
            Input::Text(text) => println!("{} in {place}: {text}", name(*user)),
            Input::Button(data) => {
                println!("{} in {place} presses the button [{data}]", name(*user))
            }
        }
        for reply in sent.iter().filter(|s| s.answers == Some(i as i64 + 1)) {
            let buttons = if reply.buttons.is_empty() {
                String::new()
            } else {
                format!("  [{}]", reply.buttons.join("] ["))
            };
            if reply.chat == 0 {
                println!("    bot (pop-up): {}", reply.text);
            } else {
                println!("    bot: {}{buttons}", reply.text);
            }
        }
    }
    if !done {
        return Err("the bot did not answer everything within 20 s".into());
    }
    Ok(())
}

/// What a user does: send a text, or press an inline button (its callback data).
enum Input {
    Text(&'static str),
    Button(&'static str),
}
