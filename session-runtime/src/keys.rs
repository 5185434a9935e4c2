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
///
/// ```
/// use multisession::{ChatContext, keys};
///
/// // Everyone in group -100 shares one session...
/// assert_eq!(keys::chat(&ChatContext::new(-100).with_user(7)).as_deref(), Some("-100"));
/// assert_eq!(keys::chat(&ChatContext::new(-100).with_user(8)).as_deref(), Some("-100"));
/// // ...and an inline query (a user, no chat) has none.
/// assert_eq!(keys::chat(&ChatContext::user_only(7)), None);
/// ```
pub fn chat(ctx: &dyn SessionContext) -> Option<String> {
    ctx.chat_id().map(decimal)
}

/// Per user: the sender's id, across all chats. No key for updates without a sender.
///
/// ```
/// use multisession::{ChatContext, keys};
///
/// // User 7 has one session in every chat, and in inline queries.
/// assert_eq!(keys::user(&ChatContext::new(-100).with_user(7)).as_deref(), Some("7"));
/// assert_eq!(keys::user(&ChatContext::new(-200).with_user(7)).as_deref(), Some("7"));
/// assert_eq!(keys::user(&ChatContext::user_only(7)).as_deref(), Some("7"));
/// // A channel post has no sender.
/// assert_eq!(keys::user(&ChatContext::new(-100)), None);
/// ```
pub fn user(ctx: &dyn SessionContext) -> Option<String> {
    ctx.user_id().map(decimal)
}

/// Per user in a chat: `"{chat}:{user}"`. No key unless the update has both.
///
/// ```
/// use multisession::{ChatContext, keys};
///
/// assert_eq!(keys::user_in_chat(&ChatContext::new(-100).with_user(7)).as_deref(), Some("-100:7"));
/// assert_eq!(keys::user_in_chat(&ChatContext::new(-200).with_user(7)).as_deref(), Some("-200:7"));
/// assert_eq!(keys::user_in_chat(&ChatContext::new(-100)), None);
/// assert_eq!(keys::user_in_chat(&ChatContext::user_only(7)), None);
/// ```
pub fn user_in_chat(ctx: &dyn SessionContext) -> Option<String> {
    Some(pair(ctx.chat_id()?, ctx.user_id()?))
}

/// Per forum topic: `"{chat}:{thread}"` in a topic, the chat id elsewhere.
///
/// ```
/// use multisession::{ChatContext, keys};
///
/// let general = ChatContext::new(-100);
/// let topic = ChatContext::new(-100).with_thread(5);
/// assert_eq!(keys::chat_thread(&topic).as_deref(), Some("-100:5"));
/// assert_eq!(keys::chat_thread(&general).as_deref(), Some("-100")); // the same as `keys::chat`
/// ```
pub fn chat_thread(ctx: &dyn SessionContext) -> Option<String> {
    let chat = ctx.chat_id()?;
    Some(match ctx.thread_id() {
        Some(thread) => pair(chat, thread),
        None => decimal(chat),
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

/// What a key function may return: `Option<String>`, `String`, `Option<i64>`, `i64`,
/// `&str` or `Option<&str>`. `None` means "no key for this update".
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, SessionContext, keys::IntoSessionKey, stores::MemoryStore};
///
/// /// One session per sender, kept only in private chats (where the chat id is the user id).
/// fn private_chat(ctx: &dyn SessionContext) -> Option<i64> {
///     ctx.chat_id().filter(|chat| Some(*chat) == ctx.user_id())
/// }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     #[session(key = private_chat)]
///     draft: Option<String>,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// let in_private = sessions.open(&ChatContext::new(7).with_user(7));
/// assert_eq!(in_private.draft().key(), Some("7"));
/// let in_group = sessions.open(&ChatContext::new(-100).with_user(7));
/// assert!(!in_group.draft().is_available()); // touching it would be `Error::NoKey`
///
/// assert_eq!(42_i64.into_session_key().as_deref(), Some("42"));
/// assert_eq!(None::<i64>.into_session_key(), None);
/// # Ok(()) }
/// ```
pub trait IntoSessionKey {
    /// The key, or `None` for "no key for this update".
    fn into_session_key(self) -> Option<String>;

    /// Appends the key to `out` (the runtime builds the storage key there) and says
    /// whether there was one; nothing is appended when there is none. Provided through
    /// [`into_session_key`](Self::into_session_key); integers and string slices write
    /// themselves without a string of their own.
    ///
    /// ```
    /// use multisession::keys::IntoSessionKey;
    ///
    /// let mut storage_key = String::from("draft:");
    /// assert!((-100_i64).push_session_key(&mut storage_key));
    /// assert_eq!(storage_key, "draft:-100");
    /// assert!(!None::<i64>.push_session_key(&mut storage_key));
    /// assert_eq!(storage_key, "draft:-100");
    /// ```
    fn push_session_key(self, out: &mut String) -> bool
    where
        Self: Sized,
    {
        match self.into_session_key() {
            Some(key) => {
                out.push_str(&key);
                true
            }
            None => false,
        }
    }
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
        self.map(decimal)
    }

    fn push_session_key(self, out: &mut String) -> bool {
        push_ids(out, &[self])
    }
}

impl IntoSessionKey for i64 {
    fn into_session_key(self) -> Option<String> {
        Some(decimal(self))
    }

    fn push_session_key(self, out: &mut String) -> bool {
        push_ids(out, &[Some(self)])
    }
}

impl IntoSessionKey for &str {
    fn into_session_key(self) -> Option<String> {
        Some(self.to_owned())
    }

    fn push_session_key(self, out: &mut String) -> bool {
        out.push_str(self);
        true
    }
}

impl IntoSessionKey for Option<&str> {
    fn into_session_key(self) -> Option<String> {
        self.map(str::to_owned)
    }

    fn push_session_key(self, out: &mut String) -> bool {
        self.is_some_and(|key| key.push_session_key(out))
    }
}

/// `id` in decimal: a key's text, made without the formatting machinery (a key is made
/// for every fragment an update touches).
fn decimal(id: i64) -> String {
    itoa::Buffer::new().format(id).to_owned()
}

/// Appends `ids` in decimal, `:` between them, to `out`; `false` (and nothing appended)
/// if one is missing. What [`chat`], [`user`] and [`user_in_chat`] return, written where
/// the runtime builds the storage key (and integer keys of any key function).
pub(crate) fn push_ids(out: &mut String, ids: &[Option<i64>]) -> bool {
    if ids.iter().any(Option::is_none) {
        return false;
    }
    for (n, id) in ids.iter().flatten().enumerate() {
        if n > 0 {
            out.push(':');
        }
        out.push_str(itoa::Buffer::new().format(*id));
    }
    true
}

/// `"{a}:{b}"`, as [`decimal`] makes each.
fn pair(a: i64, b: i64) -> String {
    let mut key = String::with_capacity(41);
    push_ids(&mut key, &[Some(a), Some(b)]);
    key
}
