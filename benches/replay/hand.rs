//! The hand-written bots: the example pizza bot's logic (`pizza_bot::handle`: the same
//! command parsing, replies and keys) on a store accessed directly, with no session
//! runtime. One routing, generic over the backend: a map, SQLite through `rusqlite`,
//! PostgreSQL through `tokio-postgres`, Redis through the `redis` crate.

use std::{collections::HashMap, sync::Mutex};

use multisession::{ChatContext, SessionContext};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    pizza_bot::{Input, Pizza, Quiz, Settings, pizzas, pizzen, say},
    workload::Update,
};

/// What a write expects to find (what makes a read-modify-write safe).
#[derive(Clone, Copy, Debug)]
pub enum Cas<R> {
    /// Nothing: insert if absent.
    Absent,
    /// The revision read.
    Rev(R),
    /// Anything (a blind write).
    Any,
}

/// A store as a hand-written bot uses it. Safety under concurrency is the backend's
/// business: the SQL ones check `Cas`, the map and plain Redis `SET` ignore it.
pub trait Backend: Sync {
    /// What a read returns beside the value, for a conditional write.
    type Rev: Copy + Send + Sync;

    fn get<T: DeserializeOwned + Send>(
        &self,
        key: &str,
    ) -> impl Future<Output = Option<(T, Self::Rev)>> + Send;

    fn put<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        cas: Cas<Self::Rev>,
    ) -> impl Future<Output = ()> + Send;

    fn delete(&self, key: &str) -> impl Future<Output = ()> + Send;
}

fn cas<R>(read: Option<R>) -> Cas<R> {
    read.map_or(Cas::Absent, Cas::Rev)
}

/// `pizza_bot::handle`, written by hand on `backend`: the same parsing, replies and keys
/// (`pizza:{chat}`, `settings:{user}`, `quiz:{chat}:{user}`), serde_json values, reads
/// only what a command needs, writes only what it changes.
pub async fn handle<B: Backend>(
    backend: &B,
    ctx: &ChatContext,
    input: Input<'_>,
) -> Option<String> {
    let settings_key = |user: i64| format!("settings:{user}");
    let text = match input {
        Input::Text(text) => text,
        Input::Button(data) => {
            let lang = data.strip_prefix("lang:")?;
            let settings = Settings {
                lang: lang.to_owned(),
            };
            backend
                .put(&settings_key(ctx.user_id()?), &settings, Cas::Any)
                .await;
            return Some(say(lang, "Language set.", "Sprache gesetzt."));
        }
        Input::Inline(query) => {
            let lang = match backend.get::<Settings>(&settings_key(ctx.user_id()?)).await {
                Some((settings, _)) => settings.lang,
                None => Settings::english().lang,
            };
            let chat = match ctx.chat_id() {
                Some(chat) => {
                    let pizza = backend.get::<Pizza>(&format!("pizza:{chat}")).await;
                    pizzas(pizza.map_or(0, |(p, _)| p.count))
                }
                None => "no chat".to_owned(),
            };
            return Some(format!("[{lang}] inline `{query}` ({chat})"));
        }
    };
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or_default();
    let command = command.split('@').next().unwrap_or(command);
    let reply = match command {
        "/start" => {
            let settings = match backend.get::<Settings>(&settings_key(ctx.user_id()?)).await {
                Some((settings, _)) => settings,
                None => Settings::english(),
            };
            say(
                &settings.lang,
                "Hi! /pizza orders one, /hunger counts them, /lang de switches language, /quiz asks you something.",
                "Hallo! /pizza bestellt eine, /hunger zählt sie, /lang en wechselt die Sprache, /quiz fragt dich etwas.",
            )
        }
        "/pizza" => {
            let key = format!("pizza:{}", ctx.chat_id()?);
            let (mut pizza, rev) = match backend.get::<Pizza>(&key).await {
                Some((pizza, rev)) => (pizza, Some(rev)),
                None => (Pizza::default(), None),
            };
            pizza.count += 1;
            let reply = format!("🍕 ×{}", pizza.count);
            backend.put(&key, &pizza, cas(rev)).await;
            reply
        }
        "/hunger" => {
            let pizza = backend
                .get::<Pizza>(&format!("pizza:{}", ctx.chat_id()?))
                .await;
            let count = pizza.map_or(0, |(p, _)| p.count);
            let lang = match backend.get::<Settings>(&settings_key(ctx.user_id()?)).await {
                Some((settings, _)) => settings.lang,
                None => Settings::english().lang,
            };
            say(
                &lang,
                &format!("This chat ate {}.", pizzas(count)),
                &format!("Dieser Chat hat {} gegessen.", pizzen(count)),
            )
        }
        "/lang" => {
            let lang = words.next().unwrap_or("en").to_owned();
            let reply = say(&lang, "Language set.", "Sprache gesetzt.");
            backend
                .put(&settings_key(ctx.user_id()?), &Settings { lang }, Cas::Any)
                .await;
            reply
        }
        "/forget" => {
            backend.delete(&settings_key(ctx.user_id()?)).await;
            "Forgot your settings.".to_owned()
        }
        "/reset" => {
            let (chat, user) = (ctx.chat_id()?, ctx.user_id()?);
            backend.delete(&format!("pizza:{chat}")).await;
            backend.delete(&settings_key(user)).await;
            backend.delete(&format!("quiz:{chat}:{user}")).await;
            "Reset: this chat's pizzas, your settings and your quiz are gone.".to_owned()
        }
        "/quiz" => {
            let quiz = Quiz {
                question: "6 × 7 = ?".into(),
                answer: 42,
            };
            let key = format!("quiz:{}:{}", ctx.chat_id()?, ctx.user_id()?);
            backend.put(&key, &quiz, Cas::Any).await;
            "Quiz: 6 × 7 = ? Reply with /answer N".to_owned()
        }
        "/answer" => {
            let guess: Option<i64> = words.next().and_then(|w| w.parse().ok());
            let key = format!("quiz:{}:{}", ctx.chat_id()?, ctx.user_id()?);
            match (backend.get::<Quiz>(&key).await, guess) {
                (None, _) => "No quiz running: /quiz starts one.".to_owned(),
                (Some((q, _)), Some(guess)) if guess == q.answer => {
                    backend.delete(&key).await;
                    "Correct!".to_owned()
                }
                (Some((q, _)), _) => format!("Not quite. {}", q.question),
            }
        }
        _ => return None,
    };
    Some(reply)
}

/// Runs the stream through the hand-written bot on `backend`; returns the replies.
pub async fn run<B: Backend>(backend: &B, updates: &[Update]) -> usize {
    let mut replies = 0;
    for update in updates {
        let reply = handle(backend, &update.ctx, Input::Text(update.text)).await;
        replies += usize::from(reply.is_some());
    }
    replies
}

// ---------------------------------------------------------------------------------------
// Memory

/// The memory backend: encoded values in a `Mutex<HashMap<String, Vec<u8>>>` (what a bot
/// shared across tasks needs), decoded under the lock (no copy), replaced in place.
#[derive(Default)]
pub struct MapBackend {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl Backend for MapBackend {
    type Rev = ();

    async fn get<T: DeserializeOwned + Send>(&self, key: &str) -> Option<(T, ())> {
        let map = self.map.lock().expect("baseline map");
        map.get(key)
            .map(|bytes| (serde_json::from_slice(bytes).expect("decode"), ()))
    }

    async fn put<T: Serialize + Sync>(&self, key: &str, value: &T, _: Cas<()>) {
        let bytes = serde_json::to_vec(value).expect("encode");
        let mut map = self.map.lock().expect("baseline map");
        match map.get_mut(key) {
            Some(slot) => *slot = bytes,
            None => {
                map.insert(key.to_owned(), bytes);
            }
        }
    }

    async fn delete(&self, key: &str) {
        self.map.lock().expect("baseline map").remove(key);
    }
}

/// The lean baseline of earlier runs (kept for comparison): the map and serde_json doing
/// the workload's reads and writes, but none of the bot's routing (an exact match on the
/// whole text, so chatter costs one comparison) and a short `/start` reply.
#[derive(Default)]
pub struct Lean {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl Lean {
    async fn handle(&self, ctx: &ChatContext, text: &str) -> Option<String> {
        match text {
            "/pizza" => {
                let key = format!("pizza:{}", ctx.chat_id()?);
                let mut map = self.map.lock().expect("baseline map");
                let mut pizza: Pizza = match map.get(&key) {
                    Some(bytes) => serde_json::from_slice(bytes).expect("decode"),
                    None => Pizza::default(),
                };
                pizza.count += 1;
                map.insert(key, serde_json::to_vec(&pizza).expect("encode"));
                Some(format!("🍕 ×{}", pizza.count))
            }
            "/start" => {
                let key = format!("settings:{}", ctx.user_id()?);
                let settings: Settings = match self.map.lock().expect("baseline map").get(&key) {
                    Some(bytes) => serde_json::from_slice(bytes).expect("decode"),
                    None => Settings::english(),
                };
                Some(say(
                    &settings.lang,
                    "Hi! /pizza orders one, /hunger counts them, /lang de switches language, /quiz asks you something.",
                    "Hallo! /pizza bestellt eine, /hunger zählt sie, /lang en wechselt die Sprache, /quiz fragt dich etwas.",
                ))
            }
            _ => None,
        }
    }

    /// Runs the stream; returns the replies.
    pub async fn run(&self, updates: &[Update]) -> usize {
        let mut replies = 0;
        for update in updates {
            let reply = self.handle(&update.ctx, update.text).await;
            replies += usize::from(reply.is_some());
        }
        replies
    }
}
