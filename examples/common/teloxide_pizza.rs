//! The pizza bot as a teloxide bot: two fragments (per chat, per user) used from an
//! ordinary teloxide handler, plus a teloxide `Dialogue` kept in a multisession store.
//! Shared by `examples/teloxide_bot.rs` and `tests/teloxide_e2e.rs`.

use std::sync::Arc;

use multisession::{MultiSession, Sessions, keys, teloxide::DialogueStorage};
use serde::{Deserialize, Serialize};
use teloxide::{
    dispatching::{UpdateFilterExt, UpdateHandler, dialogue::Dialogue},
    prelude::*,
};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pizza {
    pub count: u32,
}

#[derive(MultiSession)]
pub struct TgSession {
    /// Per chat: how many pizzas this chat ordered.
    pub pizza: Pizza,
    /// Per user, across chats: the language.
    #[session(key = keys::user)]
    pub lang: Option<String>,
}

/// The naming dialogue of `/name`: teloxide's own dialogue API, on our store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Naming {
    #[default]
    Idle,
    WaitingForName,
}

pub type NamingStorage = DialogueStorage<Naming>;
pub type NamingDialogue = Dialogue<Naming, NamingStorage>;
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
pub type HandlerResult = Result<(), HandlerError>;

/// The handler tree: every message goes through `on_message` with its dialogue.
pub fn schema() -> UpdateHandler<HandlerError> {
    Update::filter_message()
        .enter_dialogue::<Message, NamingStorage, Naming>()
        .endpoint(on_message)
}

/// What the bot answers to a text, given the sessions; `None`: it stays silent.
async fn answer(
    msg: &Message,
    text: &str,
    sessions: &Sessions<TgSession>,
) -> Result<Option<String>, multisession::Error> {
    let command = text.split_whitespace().next().unwrap_or_default();
    let command = command.split('@').next().unwrap_or(command);
    sessions
        .run(msg, async |s| {
            Ok(match command {
                "/pizza" => {
                    let mut pizza = s.pizza().await?;
                    pizza.count += 1;
                    Some(format!("🍕 ×{}", pizza.count))
                }
                "/hunger" => {
                    let count = s.pizza().await?.count;
                    let lang = s.lang().await?.clone().unwrap_or_else(|| "en".into());
                    Some(if lang == "de" {
                        format!("Dieser Chat hat {count} Pizzen gegessen.")
                    } else {
                        format!("This chat ate {count} pizzas.")
                    })
                }
                "/lang" => {
                    let lang = text.split_whitespace().nth(1).unwrap_or("en").to_owned();
                    s.lang().set(Some(lang.clone())).await?;
                    Some(format!("language: {lang}"))
                }
                _ => None, // chatter: no fragment touched, no store operation
            })
        })
        .await
}

async fn on_message(
    bot: Bot,
    msg: Message,
    dialogue: NamingDialogue,
    sessions: Sessions<TgSession>,
) -> HandlerResult {
    let Some(text) = msg.text() else {
        return Ok(());
    };
    let reply = match dialogue.get_or_default().await? {
        Naming::WaitingForName if !text.starts_with('/') => {
            dialogue.exit().await?;
            Some(format!("Nice to meet you, {text}!"))
        }
        _ if text.starts_with("/name") => {
            dialogue.update(Naming::WaitingForName).await?;
            Some("What is your name?".to_owned())
        }
        _ => answer(&msg, text, &sessions).await?,
    };
    // After the session work: `run` may re-run its body on a conflict, a message must
    // be sent once.
    if let Some(reply) = reply {
        bot.send_message(msg.chat.id, reply).await?;
    }
    Ok(())
}

/// The dispatcher of this bot, ready to run, and the token that stops it.
/// `concurrent`: updates of one chat run concurrently (no per-chat queue) instead of
/// teloxide's default one-at-a-time per chat.
pub fn dispatcher(
    bot: Bot,
    sessions: Sessions<TgSession>,
    dialogues: Arc<NamingStorage>,
    concurrent: bool,
) -> (
    teloxide::dispatching::ShutdownToken,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let builder = Dispatcher::builder(bot, schema())
        .dependencies(dptree::deps![sessions, dialogues])
        .default_handler(|_| async {});
    if concurrent {
        let mut dispatcher = builder
            .distribution_function(|_| None::<std::convert::Infallible>)
            .build();
        (
            dispatcher.shutdown_token(),
            Box::pin(async move { dispatcher.dispatch().await }),
        )
    } else {
        let mut dispatcher = builder.build();
        (
            dispatcher.shutdown_token(),
            Box::pin(async move { dispatcher.dispatch().await }),
        )
    }
}
