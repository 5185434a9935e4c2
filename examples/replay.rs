//! Replays a file of Telegram updates (Bot API JSON, one per line) through the example
//! pizza bot on the embedded SQLite store, prints the bot's replies, and ends with what
//! the store did in lazy and strict mode.
//!
//! ```sh
//! cargo run --example replay                      # examples/data/updates.jsonl
//! cargo run --example replay -- my-updates.jsonl  # your own capture
//! ```
//!
//! Sessions persist in `replay-bot.db` (`BOT_DB` picks another file): run it twice and
//! the pizza counters go on from where they were.

#[path = "common/pizza_bot.rs"]
mod pizza_bot;

use multisession::{
    SessionContext, Sessions,
    stores::{CountingStore, Counts, SqliteStore},
    telegram::{Update, UpdateKind},
};
use pizza_bot::{BotSession, Input, handle, handle_strict};

/// What the bot reacts to in an update, if anything.
fn input(update: &Update) -> Option<Input<'_>> {
    match &update.kind {
        UpdateKind::CallbackQuery(query) => query.data.as_deref().map(Input::Button),
        UpdateKind::InlineQuery(query) => Some(Input::Inline(&query.query)),
        UpdateKind::Message(message) => message.text.as_deref().map(Input::Text),
        _ => None,
    }
}

fn who(update: &Update) -> String {
    let user = update
        .from()
        .map_or("-".to_owned(), |u| u.first_name.clone());
    match update.chat() {
        Some(chat) => format!("{user} in {}", chat.title.as_deref().unwrap_or("private")),
        None => format!("{user} (no chat)"),
    }
}

fn read_updates(path: &str) -> Result<Vec<Update>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut updates = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Update>(line) {
            Ok(update) => updates.push(update),
            Err(error) => eprintln!("{path}:{}: skipped, not an update: {error}", number + 1),
        }
    }
    Ok(updates)
}

/// Lazy mode: each fragment is read when the handler first touches it.
async fn replay_lazy(sessions: &Sessions<BotSession>, updates: &[Update], print: bool) {
    for update in updates {
        let input = input(update);
        let result = sessions
            .run(update, |s| async move {
                match input {
                    Some(input) => handle(s, input).await,
                    None => Ok(None),
                }
            })
            .await;
        if !print {
            continue;
        }
        // What the user did, shown as what it is: a message, a button, an inline query.
        let text = match input {
            Some(Input::Text(text)) => text.to_owned(),
            Some(Input::Button(data)) => format!("[pressed button `{data}`]"),
            Some(Input::Inline(query)) => format!("[inline query `{query}`]"),
            None => update.text().unwrap_or("").to_owned(),
        };
        match (&update.kind, result) {
            (_, Ok(Some(reply))) => println!(
                "#{} {}: {text}\n    → {reply}",
                update.update_id,
                who(update)
            ),
            (_, Err(error)) => println!(
                "#{} {}: {text}\n    ! {error}",
                update.update_id,
                who(update)
            ),
            (UpdateKind::Message(m), Ok(None)) if m.migrate_to_chat_id.is_some() => {
                println!(
                    "#{} the group became a supergroup: its sessions moved along",
                    update.update_id
                )
            }
            (_, Ok(None)) => {}
        }
    }
}

/// Strict mode: every fragment with a key is loaded before the handler, saved after.
async fn replay_strict(
    sessions: &Sessions<BotSession>,
    updates: &[Update],
) -> Result<(), multisession::Error> {
    for update in updates {
        let mut data = sessions.load(update).await?;
        if let Some(input) = input(update) {
            handle_strict(&mut data, input);
        }
        data.save().await?;
    }
    Ok(())
}

fn row(mode: &str, c: Counts, updates: usize) {
    let per = |n: u64| n as f64 / updates as f64;
    println!(
        "| {mode:<6} | {:>5} | {:>6} | {:>7} | {:>11} | {:>10.2} |",
        c.reads,
        c.writes,
        c.deletes,
        c.round_trips(),
        per(c.operations())
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/data/updates.jsonl".to_owned());
    let db = std::env::var("BOT_DB").unwrap_or_else(|_| "replay-bot.db".to_owned());
    let updates = read_updates(&path)?;
    println!(
        "Replaying {} updates from {path}; sessions persist in {db}.\n",
        updates.len()
    );

    let sessions = BotSession::builder()
        .default_store(SqliteStore::open(&db).await?)
        .build();
    replay_lazy(&sessions, &updates, true).await;
    let stats = sessions.stats();
    println!(
        "\nsessions: {} updates, {} reads, {} writes, {} deletes, {} unchanged writes skipped, {} conflicts, {} errors",
        stats.updates,
        stats.reads,
        stats.writes,
        stats.deletes,
        stats.skipped_writes,
        stats.conflicts,
        stats.errors
    );

    // The same updates again, on fresh in-memory databases, to compare the two modes.
    let lazy_store = CountingStore::new(SqliteStore::in_memory().await?);
    let lazy = BotSession::builder()
        .default_store(lazy_store.clone())
        .build();
    replay_lazy(&lazy, &updates, false).await;
    let strict_store = CountingStore::new(SqliteStore::in_memory().await?);
    let strict = BotSession::builder()
        .default_store(strict_store.clone())
        .build();
    replay_strict(&strict, &updates).await?;

    let with_chat = updates.iter().filter(|u| u.chat_id().is_some()).count();
    println!(
        "\nStore operations for {} updates ({with_chat} with a chat; most are chatter the bot ignores):\n",
        updates.len()
    );
    println!("| mode   | reads | writes | deletes | round trips | ops/update |");
    println!("|--------|-------|--------|---------|-------------|------------|");
    row("lazy", lazy_store.counts(), updates.len());
    row("strict", strict_store.counts(), updates.len());
    println!("\nLazy mode reads only what a handler touches and writes only what changed;");
    println!("strict mode reads every fragment that has a key for the update, in one batch.");
    Ok(())
}
