//! The example bot shared by `replay` and `console`: grammY's pizza bot, grown three
//! fragments.
//!
//! - `pizza`: per chat — how many pizzas this chat ordered (`/pizza`, `/hunger`);
//! - `settings`: per user, across chats — the user's language (`/lang de`, buttons);
//! - `quiz`: per user in a chat — a running quiz (`/quiz`, `/answer 42`), `None` when
//!   there is none, so finishing it deletes it.
//!
//! Plain chatter touches nothing, so it costs no store operation at all.

use multisession::{Error, MultiSession, Session, keys};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pizza {
    pub count: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Settings {
    pub lang: String,
}

impl Settings {
    pub fn english() -> Self {
        Settings { lang: "en".into() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Quiz {
    pub question: String,
    pub answer: i64,
}

#[derive(MultiSession)]
pub struct BotSession {
    pub pizza: Pizza,
    #[session(key = keys::user, initial = Settings::english)]
    pub settings: Settings,
    #[session(key = keys::user_in_chat)]
    pub quiz: Option<Quiz>,
}

/// What the bot reacts to.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A message's text (commands start with `/`).
    Text(&'a str),
    /// A button press with its callback data.
    Button(&'a str),
    /// An inline query (no chat: the per-chat fragments are unavailable).
    Inline(&'a str),
}

/// "1 pizza", "2 pizzas".
pub fn pizzas(count: u32) -> String {
    if count == 1 {
        "1 pizza".to_owned()
    } else {
        format!("{count} pizzas")
    }
}

/// "1 Pizza", "2 Pizzen".
pub fn pizzen(count: u32) -> String {
    if count == 1 {
        "1 Pizza".to_owned()
    } else {
        format!("{count} Pizzen")
    }
}

/// `en` or, for the language `de`, `de`.
pub fn say(lang: &str, en: &str, de: &str) -> String {
    if lang == "de" {
        de.to_owned()
    } else {
        en.to_owned()
    }
}

/// The lazy handler: touches only the fragments each command needs.
pub async fn handle(s: Session<BotSession>, input: Input<'_>) -> Result<Option<String>, Error> {
    let text = match input {
        Input::Text(text) => text,
        Input::Button(data) => {
            let Some(lang) = data.strip_prefix("lang:") else {
                return Ok(None);
            };
            // Assigning without reading: no read, one write (rule S8).
            s.settings()
                .set(Settings {
                    lang: lang.to_owned(),
                })
                .await?;
            return Ok(Some(say(lang, "Language set.", "Sprache gesetzt.")));
        }
        Input::Inline(query) => {
            let lang = s.settings().await?.lang.clone();
            // No chat here: `pizza` is unavailable, and saying so is a typed error.
            let chat = match s.pizza().await {
                Ok(pizza) => pizzas(pizza.count),
                Err(Error::NoKey { .. }) => "no chat".to_owned(),
                Err(other) => return Err(other),
            };
            return Ok(Some(format!("[{lang}] inline `{query}` ({chat})")));
        }
    };
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or_default();
    let command = command.split('@').next().unwrap_or(command);
    let reply = match command {
        "/start" => {
            let lang = &s.settings().await?.lang;
            say(
                lang,
                "Hi! /pizza orders one, /hunger counts them, /lang de switches language, /quiz asks you something.",
                "Hallo! /pizza bestellt eine, /hunger zählt sie, /lang en wechselt die Sprache, /quiz fragt dich etwas.",
            )
        }
        "/pizza" => {
            let mut pizza = s.pizza().await?;
            pizza.count += 1;
            format!("🍕 ×{}", pizza.count)
        }
        "/hunger" => {
            let count = s.pizza().await?.count;
            let lang = &s.settings().await?.lang;
            say(
                lang,
                &format!("This chat ate {}.", pizzas(count)),
                &format!("Dieser Chat hat {} gegessen.", pizzen(count)),
            )
        }
        "/lang" => {
            let lang = words.next().unwrap_or("en").to_owned();
            let reply = say(&lang, "Language set.", "Sprache gesetzt.");
            s.settings().set(Settings { lang }).await?;
            reply
        }
        "/forget" => {
            // Deleting without reading: one delete, no read (rule S9).
            s.settings().delete().await?;
            "Forgot your settings.".to_owned()
        }
        "/reset" => {
            // grammY's `ctx.session = undefined`: every fragment of this update that is
            // stored is deleted (one delete each; nothing for what was never stored).
            s.delete_all().await?;
            "Reset: this chat's pizzas, your settings and your quiz are gone.".to_owned()
        }
        "/quiz" => {
            s.quiz()
                .set(Some(Quiz {
                    question: "6 × 7 = ?".into(),
                    answer: 42,
                }))
                .await?;
            "Quiz: 6 × 7 = ? Reply with /answer N".to_owned()
        }
        "/answer" => {
            let guess: Option<i64> = words.next().and_then(|w| w.parse().ok());
            let mut quiz = s.quiz().await?;
            match (quiz.as_ref(), guess) {
                (None, _) => "No quiz running: /quiz starts one.".to_owned(),
                (Some(q), Some(guess)) if guess == q.answer => {
                    // `None` deletes the fragment at commit.
                    *quiz = None;
                    "Correct!".to_owned()
                }
                (Some(q), _) => format!("Not quite. {}", q.question),
            }
        }
        _ => return Ok(None), // chatter: nothing touched, nothing read or written
    };
    Ok(Some(reply))
}

/// The same bot in strict mode: everything is loaded before, saved after. Only here to
/// compare what the two modes cost.
pub fn handle_strict(data: &mut BotSession, input: Input<'_>) -> Option<String> {
    match input {
        Input::Button(data_) => {
            let lang = data_.strip_prefix("lang:")?;
            data.settings.lang = lang.to_owned();
            Some("Language set.".to_owned())
        }
        Input::Inline(query) => Some(format!("[{}] inline `{query}`", data.settings.lang)),
        Input::Text(text) => {
            let mut words = text.split_whitespace();
            let command = words.next().unwrap_or_default();
            match command.split('@').next().unwrap_or(command) {
                "/start" => Some("Hi!".to_owned()),
                "/pizza" => {
                    data.pizza.count += 1;
                    Some(format!("🍕 ×{}", data.pizza.count))
                }
                "/hunger" => Some(format!("This chat ate {}.", pizzas(data.pizza.count))),
                "/lang" => {
                    data.settings.lang = words.next().unwrap_or("en").to_owned();
                    Some("Language set.".to_owned())
                }
                "/forget" => {
                    data.settings = Settings::english();
                    Some("Forgot your settings.".to_owned())
                }
                "/quiz" => {
                    data.quiz = Some(Quiz {
                        question: "6 × 7 = ?".into(),
                        answer: 42,
                    });
                    Some("Quiz started.".to_owned())
                }
                "/answer" => {
                    let guess: Option<i64> = words.next().and_then(|w| w.parse().ok());
                    match (&data.quiz, guess) {
                        (Some(q), Some(g)) if g == q.answer => {
                            data.quiz = None;
                            Some("Correct!".to_owned())
                        }
                        _ => Some("Not quite.".to_owned()),
                    }
                }
                _ => None,
            }
        }
    }
}
