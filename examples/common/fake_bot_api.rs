//! A stand-in for the Telegram Bot API on loopback, for running a real teloxide bot
//! without Telegram: it answers `getUpdates` from a list of recorded updates, records
//! every `sendMessage` and `answerCallbackQuery` (failing `sendMessage` to blocked
//! chats with Telegram's 403), and answers the few calls a teloxide dispatcher makes at start
//! (`getMe`, `getWebhookInfo`, `deleteWebhook`). Plain HTTP/1.1 over tokio, with
//! keep-alive; point a bot at it with `Bot::new(token).set_api_url(fake.url())`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A message the bot sent, or its answer to a button press (`answerCallbackQuery`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The chat (0 for an answer to a button press: it pops up for the user).
    pub chat: i64,
    pub text: String,
    /// The update this answers: the message it replies to, or the button press.
    pub answers: Option<i64>,
    /// The inline keyboard's buttons (callback data), if the message has one.
    pub buttons: Vec<String>,
}

struct State {
    /// Updates in order; each gets `update_id` = index + 1.
    updates: Vec<Value>,
    /// The highest `update_id` the bot confirmed (by asking for `offset` past it).
    confirmed: AtomicI64,
    sent: Mutex<Vec<Sent>>,
    calls: Mutex<Vec<String>>,
    /// Chats whose `sendMessage` fails (the user blocked the bot).
    blocked: Mutex<Vec<i64>>,
}

/// The running stand-in; stops when dropped.
pub struct FakeBotApi {
    url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBotApi {
    /// Serves `updates` (Bot API JSON objects). Their `update_id`s are replaced by 1, 2,
    /// …, and a message's `message_id` (or a button press's `id`) by the same number, so
    /// `Sent::answers` names the update a reply belongs to.
    pub async fn start(updates: Vec<Value>) -> std::io::Result<Self> {
        let updates = updates
            .into_iter()
            .enumerate()
            .map(|(i, mut update)| {
                let id = i + 1;
                update["update_id"] = json!(id);
                if update.get("message").is_some() {
                    update["message"]["message_id"] = json!(id);
                }
                if update.get("callback_query").is_some() {
                    update["callback_query"]["id"] = json!(id.to_string());
                }
                update
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let state = Arc::new(State {
            updates,
            confirmed: AtomicI64::new(0),
            sent: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            blocked: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Ok(FakeBotApi { url, state, task })
    }

    /// The API URL to give the bot.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, `sendMessage` to `chat` fails as Telegram fails it for a user who
    /// blocked the bot (403).
    pub fn block(&self, chat: i64) {
        self.state.blocked.lock().unwrap().push(chat);
    }

    /// The messages and button answers the bot sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    /// The updates served (with the ids they were given).
    pub fn updates(&self) -> &[Value] {
        &self.state.updates
    }

    /// The API methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Waits until the bot confirmed every update (it asked for the updates after the
    /// last one, which teloxide does once it has handled them) and sent `replies`
    /// messages or answers; `false` on timeout.
    pub async fn wait_until_done(&self, replies: usize, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let confirmed = self.state.confirmed.load(Ordering::SeqCst);
            if confirmed >= self.state.updates.len() as i64 && self.sent().len() >= replies {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

async fn serve(mut socket: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    loop {
        let Some((method, body)) = read_request(&mut socket, &mut buffer).await else {
            return;
        };
        let (status, payload) = match answer(&state, &method, &body).await {
            Ok(result) => ("200 OK", json!({ "ok": true, "result": result })),
            Err((code, description)) => (
                "403 Forbidden",
                json!({ "ok": false, "error_code": code, "description": description }),
            ),
        };
        let payload = payload.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request; `None` when the connection closed or the request is malformed.
/// Returns the API method (the last path segment) and the JSON body.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, Value)> {
    let header_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body: Value =
        serde_json::from_slice(&buffer[header_end..header_end + length]).unwrap_or(Value::Null);
    buffer.drain(..header_end + length);
    let method = path.rsplit('/').next()?.to_ascii_lowercase();
    Some((method, body))
}

async fn answer(state: &State, method: &str, body: &Value) -> Result<Value, (u16, &'static str)> {
    state.calls.lock().unwrap().push(method.to_owned());
    Ok(match method {
        "getme" => json!({
            "id": 4242, "is_bot": true, "first_name": "Pizza", "username": "pizza_bot",
            "can_join_groups": true, "can_read_all_group_messages": true,
            "supports_inline_queries": false, "has_main_web_app": false
        }),
        "getwebhookinfo" => json!({
            "url": "", "has_custom_certificate": false, "pending_update_count": 0
        }),
        "getupdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            state.confirmed.fetch_max(offset - 1, Ordering::SeqCst);
            let pending: Vec<Value> = state
                .updates
                .iter()
                .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                .cloned()
                .collect();
            if pending.is_empty() {
                // A short long-poll: nothing new.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Value::Array(pending)
        }
        "sendmessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            if state.blocked.lock().unwrap().contains(&chat) {
                return Err((403, "Forbidden: bot was blocked by the user"));
            }
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            let buttons = body["reply_markup"]["inline_keyboard"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
                .collect();
            let mut sent = state.sent.lock().unwrap();
            sent.push(Sent {
                chat,
                text: text.clone(),
                answers: body["reply_parameters"]["message_id"].as_i64(),
                buttons,
            });
            json!({
                "message_id": 10_000 + sent.len(),
                "date": 1_772_000_000,
                "chat": chat_json(chat),
                "from": { "id": 4242, "is_bot": true, "first_name": "Pizza" },
                "text": text
            })
        }
        "answercallbackquery" => {
            let query: i64 = body["callback_query_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0);
            state.sent.lock().unwrap().push(Sent {
                chat: 0,
                text: body["text"].as_str().unwrap_or_default().to_owned(),
                answers: Some(query),
                buttons: Vec::new(),
            });
            json!(true)
        }
        _ => json!(true),
    })
}

fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({ "id": chat, "type": "private", "first_name": format!("User {chat}") })
    } else {
        json!({ "id": chat, "type": "supergroup", "title": "Pizza lovers" })
    }
}

fn user_json(user: i64) -> Value {
    json!({ "id": user, "is_bot": false, "first_name": format!("User {user}"), "language_code": "en" })
}

/// A text message from `user` in `chat` (negative: a group), in Bot API JSON.
pub fn text_update(chat: i64, user: i64, text: &str) -> Value {
    let entities = if text.starts_with('/') {
        let len = text
            .split_whitespace()
            .next()
            .unwrap_or(text)
            .encode_utf16()
            .count();
        json!([{ "type": "bot_command", "offset": 0, "length": len }])
    } else {
        json!([])
    };
    json!({
        "update_id": 0,
        "message": {
            "message_id": 1,
            "date": 1_772_000_000,
            "chat": chat_json(chat),
            "from": user_json(user),
            "text": text,
            "entities": entities
        }
    })
}

/// `user` pressing the inline button with callback `data` under a message the bot sent
/// in `chat`, in Bot API JSON.
pub fn button_update(chat: i64, user: i64, data: &str) -> Value {
    json!({
        "update_id": 0,
        "callback_query": {
            "id": "0",
            "from": user_json(user),
            "message": {
                "message_id": 9_000,
                "date": 1_772_000_000,
                "chat": chat_json(chat),
                "from": { "id": 4242, "is_bot": true, "first_name": "Pizza", "username": "pizza_bot" },
                "text": "Pick a language:"
            },
            "chat_instance": format!("ci{chat}"),
            "data": data
        }
    })
}
