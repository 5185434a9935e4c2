//! Built-in key functions (rule S1).
//!
//! A key function takes the update's [`SessionContext`] and returns the session key, or
//! `None` when the update has no such key (rule S3). Use them in
//! `#[session(key = keys::user)]`; any function or closure of the same shape works too, and
//! it may return `Option<String>`, `String`, `Option<i64>` or `i64`.
//!
//! ```
//! use multisession::{ChatContext, keys};
//!
//! let ctx = ChatContext::new(-100).with_user(7);
//! assert_eq!(keys::chat(&ctx).as_deref(), Some("-100"));
//! assert_eq!(keys::user(&ctx).as_deref(), Some("7"));
//! assert_eq!(keys::user_in_chat(&ctx).as_deref(), Some("-100:7"));
//! assert_eq!(keys::chat(&ChatContext::user_only(7)), None);
//! ```

use crate::context::SessionContext;

/// Per chat: the chat id. The default key. No key for updates without a chat (inline
/// queries, say).
pub fn chat(ctx: &dyn SessionContext) -> Option<String> {
    ctx.chat_id().map(|chat| chat.to_string())
}

/// Per user: the sender's id, across all chats. No key for updates without a sender.
pub fn user(ctx: &dyn SessionContext) -> Option<String> {
    ctx.user_id().map(|user| user.to_string())
}

/// Per user in a chat: `"{chat}:{user}"`. No key unless the update has both.
pub fn user_in_chat(ctx: &dyn SessionContext) -> Option<String> {
    Some(format!("{}:{}", ctx.chat_id()?, ctx.user_id()?))
}

/// Per forum topic: `"{chat}:{thread}"` in a topic, the chat id elsewhere.
pub fn chat_thread(ctx: &dyn SessionContext) -> Option<String> {
    let chat = ctx.chat_id()?;
    Some(match ctx.thread_id() {
        Some(thread) => format!("{chat}:{thread}"),
        None => chat.to_string(),
    })
}

/// Per Telegram Business connection: the connection id, for the state of a business
/// account the bot serves (every chat of that account shares it). No key for updates
/// that did not come through a business connection.
///
/// ```
/// use multisession::{SessionContext, keys, telegram::Update};
///
/// // A message a connected business account received (Bot API JSON).
/// let update: Update = serde_json::from_str(r#"{"update_id": 584120403, "business_message": {
///     "business_connection_id": "BQADBAADjwIAAq8", "message_id": 12, "date": 1772789300,
///     "chat": {"id": 318274650, "type": "private", "first_name": "Ada"},
///     "from": {"id": 318274650, "is_bot": false, "first_name": "Ada"},
///     "text": "is the shop open?"}}"#).unwrap();
/// assert_eq!(keys::business_connection(&update).as_deref(), Some("BQADBAADjwIAAq8"));
/// assert_eq!(keys::business_connection(&multisession::ChatContext::new(1)), None);
/// ```
pub fn business_connection(ctx: &dyn SessionContext) -> Option<String> {
    ctx.business_connection_id().map(str::to_owned)
}

/// What a key function may return.
pub trait IntoSessionKey {
    /// The key, or `None` for "no key for this update".
    fn into_session_key(self) -> Option<String>;
}

impl IntoSessionKey for Option<String> {
    fn into_session_key(self) -> Option<String> {
        self
    }
}

impl IntoSessionKey for String {
    fn into_session_key(self) -> Option<String> {
        Some(self)
    }
}

impl IntoSessionKey for Option<i64> {
    fn into_session_key(self) -> Option<String> {
        self.map(|id| id.to_string())
    }
}

impl IntoSessionKey for i64 {
    fn into_session_key(self) -> Option<String> {
        Some(self.to_string())
    }
}

impl IntoSessionKey for &str {
    fn into_session_key(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl IntoSessionKey for Option<&str> {
    fn into_session_key(self) -> Option<String> {
        self.map(str::to_owned)
    }
}
