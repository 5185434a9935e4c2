//! A stand-in for the Telegram Bot API on loopback, for running a real teloxide bot
//! without Telegram: it answers `getUpdates` from a list of recorded updates, records
//! every `sendMessage`, and answers the few calls a teloxide dispatcher makes at start
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

/// A message the bot sent: chat id and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub chat: i64,
    pub text: String,
}

struct State {
    /// Updates in order; each gets `update_id` = index + 1.
    updates: Vec<Value>,
    /// The highest `update_id` the bot confirmed (by asking for `offset` past it).
    confirmed: AtomicI64,
    sent: Mutex<Vec<Sent>>,
    calls: Mutex<Vec<String>>,
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
    /// Serves `updates` (Bot API JSON objects; their `update_id`s are replaced by 1, 2, …).
    pub async fn start(updates: Vec<Value>) -> std::io::Result<Self> {
        let updates = updates
            .into_iter()
            .enumerate()
            .map(|(i, mut update)| {
                update["update_id"] = json!(i + 1);
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

    /// The messages the bot sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    /// The API methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Waits until the bot confirmed every update (it asked for the updates after the
    /// last one, which teloxide does once it has handled them) and sent `replies`
    /// messages; `false` on timeout.
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
        let result = answer(&state, &method, &body).await;
        let payload = json!({ "ok": true, "result": result }).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
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

async fn answer(state: &State, method: &str, body: &Value) -> Value {
    state.calls.lock().unwrap().push(method.to_owned());
    match method {
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
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            let mut sent = state.sent.lock().unwrap();
            sent.push(Sent {
                chat,
                text: text.clone(),
            });
            let chat_json = if chat > 0 {
                json!({ "id": chat, "type": "private", "first_name": "User" })
            } else {
                json!({ "id": chat, "type": "group", "title": "Group" })
            };
            json!({
                "message_id": 10_000 + sent.len(),
                "date": 1_772_000_000,
                "chat": chat_json,
                "from": { "id": 4242, "is_bot": true, "first_name": "Pizza" },
                "text": text
            })
        }
        _ => json!(true),
    }
}

/// A text message from `user` in `chat` (negative: a group), in Bot API JSON.
pub fn text_update(chat: i64, user: i64, text: &str) -> Value {
    let chat_json = if chat > 0 {
        json!({ "id": chat, "type": "private", "first_name": format!("User {user}") })
    } else {
        json!({ "id": chat, "type": "supergroup", "title": "Pizza lovers" })
    };
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
            "chat": chat_json,
            "from": { "id": user, "is_bot": false, "first_name": format!("User {user}"), "language_code": "en" },
            "text": text,
            "entities": entities
        }
    })
}
