//! Every field attribute at once, in the forms users write.
use std::time::Duration;

use multisession::{MultiSession, SessionContext, keys};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Settings {
    language: String,
}

impl Settings {
    fn english() -> Self {
        Settings {
            language: "en".into(),
        }
    }
}

fn by_thread(ctx: &dyn SessionContext) -> Option<String> {
    Some(format!("{}/{}", ctx.chat_id()?, ctx.thread_id().unwrap_or(0)))
}

fn v0_to_v1(old: Vec<String>) -> Vec<(String, u8)> {
    old.into_iter().map(|name| (name, 0)).collect()
}

#[derive(MultiSession)]
struct Session {
    count: u32,
    #[session(key = keys::user, initial = Settings::english)]
    settings: Settings,
    #[session(key = keys::user_in_chat, ttl = "1h30m")]
    quiz: Option<String>,
    #[session(key = by_thread, prefix = "topic/", ttl = Duration::from_secs(60))]
    topic: Vec<u8>,
    #[session(initial = 10, codec = multisession::codec::Json)]
    credits: u64,
    #[session(key = keys::user, migrations = [v0_to_v1, |old: Vec<(String, u8)>| old.len() as u32])]
    pets: u32,
}

fn main() {
    let sessions = Session::builder()
        .default_store(multisession::stores::MemoryStore::new())
        .build();
    let _ = sessions;
}
