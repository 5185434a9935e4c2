//! Talk to the example bot: every line you type is a message in a chat.
//!
//! ```sh
//! cargo run --example console
//! ```
//!
//! Sessions live in `console-bot.db` (SQLite; `BOT_DB` picks another file), so they
//! survive a restart. Lines starting with `:` steer the conversation:
//! `:chat -100` moves to chat -100 (negative ids are groups), `:user 7` speaks as user 7,
//! `:inline pizza` sends an inline query, `:button lang:de` presses a button, `:quit`.

#[path = "common/pizza_bot.rs"]
#[allow(dead_code)] // `handle_strict` is for the replay's comparison
mod pizza_bot;

use multisession::{ChatContext, stores::SqliteStore};
use pizza_bot::{BotSession, Input, handle};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("BOT_DB").unwrap_or_else(|_| "console-bot.db".to_owned());
    let sessions = BotSession::builder()
        .default_store(SqliteStore::open(&path).await?)
        .build();
    println!(
        "Sessions are stored in {path}. Try /start, /pizza, /hunger, /lang de, /quiz, /answer 42."
    );
    println!("Steer with :chat N, :user N, :inline TEXT, :button DATA, :quit.");

    let (mut chat, mut user) = (1i64, 1i64);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        eprint!("chat {chat} · user {user} > ");
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim();
        let (ctx, input) = match line.split_once(' ').unwrap_or((line, "")) {
            (":quit", _) => break,
            (":chat", n) => {
                chat = n.trim().parse().unwrap_or(chat);
                continue;
            }
            (":user", n) => {
                user = n.trim().parse().unwrap_or(user);
                continue;
            }
            (":inline", query) => (ChatContext::user_only(user), Input::Inline(query)),
            (":button", data) => (ChatContext::new(chat).with_user(user), Input::Button(data)),
            _ if line.is_empty() => continue,
            _ => (ChatContext::new(chat).with_user(user), Input::Text(line)),
        };
        match sessions.run(&ctx, |s| handle(s, input)).await {
            Ok(Some(reply)) => println!("bot: {reply}"),
            Ok(None) => println!("(the bot ignores that)"),
            Err(error) => println!("error: {error}"),
        }
    }
    Ok(())
}
