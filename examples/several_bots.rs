//! Several bots on one store, kept apart by their bot ids (`Config::bot`), and a bot that
//! adopts the sessions it stored before it had one (`Sessions::adopt_into_bot`); plus a
//! Telegram Business account's state keyed by its connection (`keys::business_connection`).
//!
//! ```sh
//! cargo run --example several_bots
//! ```

use multisession::{
    ChatContext, Config, MultiSession, keys, stores::SqliteStore, telegram::Update,
};

#[derive(MultiSession)]
struct Chat {
    /// Per chat.
    pizzas: u32,
    /// Per business account the bot serves: the questions its customers asked.
    #[session(key = keys::business_connection)]
    inbox: Vec<String>,
}

type R = Result<(), multisession::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::in_memory().await?;
    let group = ChatContext::new(-100);

    // The first release had no bot ids: this bot stored its sessions without one.
    let before = Chat::builder().default_store(store.clone()).build();
    before
        .run(&group, async |s| {
            *s.pizzas().await? = 3;
            R::Ok(())
        })
        .await?;

    // Two bots on the same store, each with its id (the number before the token's `:`).
    let config = |bot| Config::new().bot(bot);
    let pizza = Chat::builder()
        .default_store(store.clone())
        .config(config(1001))
        .build();
    let quiz = Chat::builder()
        .default_store(store.clone())
        .config(config(2002))
        .build();
    println!(
        "pizza bot sees {} pizzas before adopting",
        pizza.load(&group).await?.pizzas
    );
    println!(
        "pizza bot adopted {} session(s) stored without a bot id",
        pizza.adopt_into_bot().await?
    );
    pizza
        .run(&group, async |s| {
            *s.pizzas().await? += 1;
            R::Ok(())
        })
        .await?;
    quiz.run(&group, async |s| {
        *s.pizzas().await? += 10;
        R::Ok(())
    })
    .await?;
    println!(
        "pizza bot: {} pizzas in chat -100",
        pizza.load(&group).await?.pizzas
    );
    println!(
        "quiz bot:  {} pizzas in chat -100 (its own session)",
        quiz.load(&group).await?.pizzas
    );
    for (key, _) in store_keys(&pizza).await? {
        println!("  pizza bot's `pizzas` sessions: chat {key} (stored under `1001/pizzas:{key}`)");
    }

    // A business account connected to the pizza bot: its customers' messages share one
    // session, keyed by the connection.
    for (id, text) in [
        (584_120_403, "is the shop open?"),
        (584_120_404, "do you deliver?"),
    ] {
        let update: Update = serde_json::from_str(&format!(
            r#"{{"update_id": {id}, "business_message": {{
                "business_connection_id": "BQADBAADjwIAAq8", "message_id": 12, "date": 1772789300,
                "chat": {{"id": 55501, "type": "private", "first_name": "Bruno"}},
                "from": {{"id": 55501, "is_bot": false, "first_name": "Bruno"}},
                "text": "{text}"}}}}"#
        ))?;
        pizza
            .run(&update, async |s| {
                s.inbox().await?.push(text.to_owned());
                R::Ok(())
            })
            .await?;
    }
    let page = pizza.list("inbox", None, 10).await?;
    for (connection, bytes) in page.entries {
        println!(
            "business connection {connection}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}

/// The pizza bot's stored `pizzas` keys (admin listing stays in its namespace).
async fn store_keys(
    sessions: &multisession::Sessions<Chat>,
) -> Result<Vec<(String, Vec<u8>)>, multisession::Error> {
    Ok(sessions.list("pizzas", None, 10).await?.entries)
}
