//! Admin commands over stored sessions (rule S20): list, count and remove a fragment's
//! sessions, page by page, on any store.
//!
//! ```sh
//! cargo run --example admin
//! ```

use multisession::{ChatContext, MultiSession, keys, stores::SqliteStore};
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
struct Session {
    pizza: u32,
    #[session(key = keys::user, initial = Settings::english)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sessions = Session::builder()
        .default_store(SqliteStore::in_memory().await?)
        .build();
    for user in 1..=7 {
        let lang = if user % 2 == 0 { "de" } else { "en" };
        sessions
            .run(&ChatContext::new(-100).with_user(user), |s| async move {
                s.settings().set(Settings { lang: lang.into() }).await?;
                *s.pizza().await? += 1;
                Ok::<_, multisession::Error>(())
            })
            .await?;
    }

    // `/users`: page through the per-user settings, three at a time.
    let mut cursor = None;
    let mut page_number = 1;
    loop {
        let page = sessions.list("settings", cursor.as_deref(), 3).await?;
        for (user, bytes) in &page.entries {
            let settings: Settings = serde_json::from_slice(bytes)?;
            println!("page {page_number}: user {user} speaks {}", settings.lang);
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        page_number += 1;
    }
    println!(
        "{} users, {} chats",
        sessions.count("settings").await?,
        sessions.count("pizza").await?
    );

    // `/forget 3` and `/reset-all`.
    println!(
        "removed user 3: {}",
        sessions.remove("settings", "3").await?
    );
    println!("removed {} more", sessions.clear("settings").await?);
    println!("{} users left", sessions.count("settings").await?);
    Ok(())
}
