//! The pizza bot as a teloxide bot, written the way teloxide bots are written: commands
//! parsed by `BotCommands`, an inline keyboard answered by callback queries, a teloxide
//! `Dialogue` (`/name`, kept in a multisession store) — and the session as a handler
//! parameter (`Session<TgSession>`), committed when the endpoint returns. Shared by
//! `examples/teloxide_bot.rs` and `tests/teloxide_e2e.rs`.

use std::sync::Arc;

use multisession::{
    MultiSession, Session, keys,
    teloxide::{DialogueStorage, SessionHandlerExt},
};
use serde::{Deserialize, Serialize};
use teloxide::{
    dispatching::{UpdateFilterExt, UpdateHandler, dialogue::Dialogue},
    prelude::*,
    types::{InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters},
    utils::command::BotCommands,
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

/// The bot's commands (`/pizza`, `/pizza@pizza_bot`, ...).
#[derive(BotCommands, Clone, Debug)]
#[command(rename_rule = "lowercase", description = "The pizza bot:")]
pub enum Command {
    #[command(description = "order a pizza for this chat")]
    Pizza,
    #[command(description = "how many pizzas this chat ate")]
    Hunger,
    #[command(description = "pick your language")]
    Lang,
    #[command(description = "tell me your name")]
    Name,
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

/// The handler tree. Every endpoint may take the update's `Session<TgSession>`; what it
/// changed is committed when it returns `Ok`, and dropped when it returns an error (a
/// reply Telegram refused, say: the order was not confirmed, so it is not counted).
pub fn schema() -> UpdateHandler<HandlerError> {
    let commands = dptree::entry()
        .filter_command::<Command>()
        .branch(dptree::case![Command::Pizza].endpoint(pizza))
        .branch(dptree::case![Command::Hunger].endpoint(hunger))
        .branch(dptree::case![Command::Lang].endpoint(pick_language))
        .branch(dptree::case![Command::Name].endpoint(ask_name));
    let messages = Update::filter_message()
        .enter_dialogue::<Message, NamingStorage, Naming>()
        .branch(
            dptree::case![Naming::WaitingForName]
                .filter(|msg: Message| msg.text().is_some_and(|t| !t.starts_with('/')))
                .endpoint(got_name),
        )
        .branch(commands);
    let buttons = Update::filter_callback_query().endpoint(language_chosen);
    dptree::entry()
        .branch(messages)
        .branch(buttons)
        .with_session::<TgSession>()
}

async fn reply(bot: &Bot, msg: &Message, text: String) -> HandlerResult {
    bot.send_message(msg.chat.id, text)
        .reply_parameters(ReplyParameters::new(msg.id))
        .await?;
    Ok(())
}

fn pizzas(count: u32, lang: &str) -> String {
    match (lang, count) {
        ("de", 1) => "Dieser Chat hat 1 Pizza gegessen.".to_owned(),
        ("de", n) => format!("Dieser Chat hat {n} Pizzen gegessen."),
        (_, 1) => "This chat ate 1 pizza.".to_owned(),
        (_, n) => format!("This chat ate {n} pizzas."),
    }
}

/// `/pizza`: one more for this chat. The reply is sent before the endpoint returns: if
/// Telegram refuses it, the error drops the change.
async fn pizza(bot: Bot, msg: Message, s: Session<TgSession>) -> HandlerResult {
    let count = {
        let mut pizza = s.pizza().await?;
        pizza.count += 1;
        pizza.count
    };
    reply(&bot, &msg, format!("🍕 ×{count}")).await
}

/// `/hunger`: reads the chat's count and the user's language (no write).
async fn hunger(bot: Bot, msg: Message, s: Session<TgSession>) -> HandlerResult {
    let count = s.pizza().await?.count;
    let lang = s.lang().await?.clone().unwrap_or_else(|| "en".into());
    reply(&bot, &msg, pizzas(count, &lang)).await
}

/// `/lang`: an inline keyboard; the press comes back as a callback query.
async fn pick_language(bot: Bot, msg: Message) -> HandlerResult {
    let keyboard = InlineKeyboardMarkup::new([[
        InlineKeyboardButton::callback("English", "lang:en"),
        InlineKeyboardButton::callback("Deutsch", "lang:de"),
    ]]);
    bot.send_message(msg.chat.id, "Pick a language:")
        .reply_parameters(ReplyParameters::new(msg.id))
        .reply_markup(keyboard)
        .await?;
    Ok(())
}

/// A language button: stored per user (it follows them into every chat).
async fn language_chosen(bot: Bot, q: CallbackQuery, s: Session<TgSession>) -> HandlerResult {
    let Some(lang) = q.data.as_deref().and_then(|d| d.strip_prefix("lang:")) else {
        bot.answer_callback_query(q.id).await?;
        return Ok(());
    };
    s.lang().set(Some(lang.to_owned())).await?;
    let text = if lang == "de" {
        "Sprache: Deutsch"
    } else {
        "Language: English"
    };
    bot.answer_callback_query(q.id).text(text).await?;
    Ok(())
}

async fn ask_name(bot: Bot, msg: Message, dialogue: NamingDialogue) -> HandlerResult {
    dialogue.update(Naming::WaitingForName).await?;
    reply(&bot, &msg, "What is your name?".to_owned()).await
}

async fn got_name(bot: Bot, msg: Message, dialogue: NamingDialogue) -> HandlerResult {
    dialogue.exit().await?;
    let name = msg.text().unwrap_or_default().to_owned();
    reply(&bot, &msg, format!("Nice to meet you, {name}!")).await
}

/// The dispatcher of this bot, ready to run, and the token that stops it.
/// `concurrent`: updates of one chat run concurrently (no per-chat queue) instead of
/// teloxide's default one-at-a-time per chat.
pub fn dispatcher(
    bot: Bot,
    sessions: multisession::Sessions<TgSession>,
    dialogues: Arc<NamingStorage>,
    concurrent: bool,
) -> (
    teloxide::dispatching::ShutdownToken,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let builder = Dispatcher::builder(bot, schema())
        .dependencies(dptree::deps![sessions, dialogues])
        .default_handler(|_| async {})
        // Handler errors (a refused reply) are logged; the session change was dropped.
        .error_handler(
            teloxide::error_handlers::LoggingErrorHandler::with_custom_text(
                "handler failed; its session changes were not stored",
            ),
        );
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
