//! What the runtime needs to know about an update: who sent it and where.
//!
//! Any framework's context can implement [`SessionContext`]; the runtime ships an
//! implementation for its own Telegram [`Update`](crate::telegram::Update) model and a
//! plain [`ChatContext`] for tests and console bots.

/// The identifiers a session key can be derived from.
///
/// Every method may return `None`: an inline query has no chat, a channel post has no
/// sender. A key function that needs a missing id yields no key, and the fragment is then
/// unavailable for that update (rule S3).
///
/// ```
/// use multisession::{ChatContext, SessionContext};
///
/// let ctx = ChatContext::new(-100_42).with_user(7);
/// assert_eq!(ctx.chat_id(), Some(-100_42));
/// assert_eq!(ctx.user_id(), Some(7));
/// assert_eq!(ctx.thread_id(), None);
/// ```
pub trait SessionContext {
    /// The chat the update belongs to.
    fn chat_id(&self) -> Option<i64>;

    /// The user who caused the update.
    fn user_id(&self) -> Option<i64>;

    /// The forum topic (`message_thread_id`) where the update happened, if any.
    fn thread_id(&self) -> Option<i64> {
        None
    }

    /// A group-to-supergroup migration announced by this update, if any.
    fn chat_migration(&self) -> Option<ChatMigration> {
        None
    }

    /// The bot that received the update, if the framework knows it (teloxide's
    /// `with_session` takes it from the bot's token). With a bot id, every key lives in
    /// that bot's namespace (`"{bot}/"` before the fragment's prefix), so two bots on one
    /// store never see each other's sessions unless configured to share
    /// ([`Config::share_between_bots`](crate::Config::share_between_bots)). Without one,
    /// [`Config::bot`](crate::Config::bot) names it.
    fn bot_id(&self) -> Option<i64> {
        None
    }

    /// The Telegram Business connection the update came through (a message a business
    /// account received, or its connection being changed), for
    /// [`keys::business_connection`](crate::keys::business_connection).
    fn business_connection_id(&self) -> Option<&str> {
        None
    }

    /// The update's identity (Telegram's `update_id`), if it has one (rule S25).
    ///
    /// A stored value remembers the recent updates that changed it, so an update
    /// delivered twice (a webhook Telegram did not see answered in time, a long-polling
    /// offset replayed after a crash), re-run after a conflict, or retried after a failed
    /// commit changes each fragment at most once, in every process that shares the store.
    /// Without an id, [`Sessions::run`](crate::Sessions::run) and
    /// [`Sessions::open`](crate::Sessions::open) generate one per call: re-runs inside
    /// that call are still applied once, but a second call is a new update.
    fn update_id(&self) -> Option<u64> {
        None
    }
}

/// Telegram turned a group into a supergroup: per-chat data moves from `from` to `to`.
///
/// An update that reports one (through [`SessionContext::chat_migration`]) makes
/// [`Sessions::run`](crate::Sessions::run) and [`Sessions::load`](crate::Sessions::load)
/// move the old chat's sessions first; [`Sessions::migrate_chat`](crate::Sessions::migrate_chat)
/// takes one directly.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, ChatMigration, MultiSession, SessionContext, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// sessions.run(&ChatContext::new(-42), async |s| s.count().set(5).await).await?;
///
/// // The first update in the supergroup announces where the group went.
/// let update = ChatContext::new(-100_42).with_migration(-42, -100_42);
/// assert_eq!(update.chat_migration(), Some(ChatMigration { from: -42, to: -100_42 }));
/// let count = sessions.run(&update, async |s| Ok::<_, multisession::Error>(*s.count().await?)).await?;
/// assert_eq!(count, 5, "the group's count, now the supergroup's");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChatMigration {
    /// The old (group) chat id.
    pub from: i64,
    /// The new (supergroup) chat id.
    pub to: i64,
}

impl<T: SessionContext + ?Sized> SessionContext for &T {
    fn chat_id(&self) -> Option<i64> {
        (**self).chat_id()
    }
    fn user_id(&self) -> Option<i64> {
        (**self).user_id()
    }
    fn thread_id(&self) -> Option<i64> {
        (**self).thread_id()
    }
    fn chat_migration(&self) -> Option<ChatMigration> {
        (**self).chat_migration()
    }
    fn update_id(&self) -> Option<u64> {
        (**self).update_id()
    }
    fn bot_id(&self) -> Option<i64> {
        (**self).bot_id()
    }
    fn business_connection_id(&self) -> Option<&str> {
        (**self).business_connection_id()
    }
}

/// A plain context: a chat, optionally a user and a forum topic.
///
/// Handy for tests, console bots and frameworks whose own context is easier to convert
/// than to wrap.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, keys, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// // A message of user 7 in group -100, as the bot's own update type would report it.
/// let ctx = ChatContext::new(-100).with_user(7).with_update_id(584_120_332);
/// assert_eq!(ctx, ChatContext { chat: Some(-100), user: Some(7), update: Some(584_120_332), ..ChatContext::default() });
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// sessions.run(&ctx, async |s| { *s.count().await? += 1; s.lang().set("de".into()).await }).await?;
/// let data = sessions.load(&ChatContext::new(-100).with_user(7)).await?;
/// assert_eq!((data.count, data.lang.as_str()), (1, "de"));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChatContext {
    /// The chat id, if the update has a chat.
    pub chat: Option<i64>,
    /// The sender's user id, if the update has a sender.
    pub user: Option<i64>,
    /// The forum topic, if any.
    pub thread: Option<i64>,
    /// A group-to-supergroup migration this update announces, if any.
    pub migration: Option<ChatMigration>,
    /// The update's identity, if it has one (see [`SessionContext::update_id`]).
    pub update: Option<u64>,
    /// The bot that received the update, if known (see [`SessionContext::bot_id`]).
    pub bot: Option<i64>,
}

impl ChatContext {
    /// A copy of what any context reports: key functions see the same identifiers through
    /// it as through `ctx`.
    ///
    /// ```
    /// use multisession::{ChatContext, SessionContext};
    ///
    /// /// A framework's own context.
    /// struct Incoming {
    ///     chat: i64,
    ///     from: i64,
    /// }
    ///
    /// impl SessionContext for Incoming {
    ///     fn chat_id(&self) -> Option<i64> {
    ///         Some(self.chat)
    ///     }
    ///     fn user_id(&self) -> Option<i64> {
    ///         Some(self.from)
    ///     }
    /// }
    ///
    /// let copy = ChatContext::of(&Incoming { chat: -100, from: 7 });
    /// assert_eq!(copy, ChatContext::new(-100).with_user(7));
    /// assert_eq!(copy.thread_id(), None, "the trait's default");
    /// ```
    pub fn of(ctx: &dyn SessionContext) -> Self {
        ChatContext {
            chat: ctx.chat_id(),
            user: ctx.user_id(),
            thread: ctx.thread_id(),
            migration: ctx.chat_migration(),
            update: ctx.update_id(),
            bot: ctx.bot_id(),
        }
    }

    /// A context in chat `chat` with no user.
    ///
    /// ```
    /// use multisession::{ChatContext, SessionContext};
    ///
    /// let ctx = ChatContext::new(-100); // a channel post: a chat, no sender
    /// assert_eq!((ctx.chat_id(), ctx.user_id()), (Some(-100), None));
    /// assert_eq!(ctx.update_id(), None);
    /// ```
    pub fn new(chat: i64) -> Self {
        Self {
            chat: Some(chat),
            ..Self::default()
        }
    }

    /// A context with a user and no chat (an inline query, say).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, Error, MultiSession, SessionContext, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let ctx = ChatContext::user_only(7);
    /// assert_eq!((ctx.chat_id(), ctx.user_id()), (None, Some(7)));
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// sessions
    ///     .run(&ctx, async |s| {
    ///         // No chat: the per-chat fragment is unavailable, the per-user one works.
    ///         assert!(matches!(s.count().await, Err(Error::NoKey { fragment: "count" })));
    ///         s.lang().set("de".into()).await
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn user_only(user: i64) -> Self {
        Self {
            user: Some(user),
            ..Self::default()
        }
    }

    /// The same context with sender `user`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     #[session(key = keys::user_in_chat)]
    ///     score: u32,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let group = ChatContext::new(-100);
    /// sessions.run(&group.with_user(7), async |s| s.score().set(3).await).await?;
    /// // Another member of the same group has a score of their own.
    /// assert_eq!(sessions.load(&group.with_user(8)).await?.score, 0);
    /// assert_eq!(sessions.load(&group.with_user(7)).await?.score, 3);
    /// # Ok(()) }
    /// ```
    pub fn with_user(mut self, user: i64) -> Self {
        self.user = Some(user);
        self
    }

    /// The same context announcing that chat `from` became chat `to`.
    ///
    /// ```
    /// use multisession::{ChatContext, ChatMigration, SessionContext};
    ///
    /// // Telegram's `migrate_to_chat_id` message, sent in the old group.
    /// let ctx = ChatContext::new(-42).with_migration(-42, -100_42);
    /// assert_eq!(ctx.chat_migration(), Some(ChatMigration { from: -42, to: -100_42 }));
    /// assert_eq!(ChatContext::new(-42).chat_migration(), None);
    /// ```
    pub fn with_migration(mut self, from: i64, to: i64) -> Self {
        self.migration = Some(ChatMigration { from, to });
        self
    }

    /// The same context as update number `id` (Telegram's `update_id`): delivered twice,
    /// it changes each fragment once (rule S25).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(multisession::stores::MemoryStore::new()).build();
    /// let update = ChatContext::new(1).with_update_id(584_120_332);
    /// for _ in 0..2 {
    ///     // Telegram delivers the same update again: it is counted once.
    ///     sessions.run(&update, async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// }
    /// let count = sessions.run(&ChatContext::new(1), async |s| Ok::<_, multisession::Error>(*s.count().await?)).await?;
    /// assert_eq!(count, 1);
    /// # Ok(()) }
    /// ```
    pub fn with_update_id(mut self, id: u64) -> Self {
        self.update = Some(id);
        self
    }

    /// The same context in forum topic `thread`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, SessionContext, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     #[session(key = keys::chat_thread)]
    ///     draft: Option<String>,
    /// }
    ///
    /// let forum = ChatContext::new(-100);
    /// assert_eq!(forum.with_thread(5).thread_id(), Some(5));
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// sessions.run(&forum.with_thread(5), async |s| s.draft().set(Some("hi".into())).await).await?;
    /// // Each topic of the forum has its own draft.
    /// assert_eq!(sessions.load(&forum.with_thread(6)).await?.draft, None);
    /// assert_eq!(sessions.load(&forum.with_thread(5)).await?.draft.as_deref(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub fn with_thread(mut self, thread: i64) -> Self {
        self.thread = Some(thread);
        self
    }

    /// The same context as received by bot `bot` (its keys live in that bot's namespace).
    ///
    /// ```
    /// use multisession::{ChatContext, SessionContext};
    ///
    /// let ctx = ChatContext::new(-100).with_bot(123_456);
    /// assert_eq!(ctx.bot_id(), Some(123_456));
    /// ```
    pub fn with_bot(mut self, bot: i64) -> Self {
        self.bot = Some(bot);
        self
    }
}

impl SessionContext for ChatContext {
    fn chat_id(&self) -> Option<i64> {
        self.chat
    }
    fn user_id(&self) -> Option<i64> {
        self.user
    }
    fn thread_id(&self) -> Option<i64> {
        self.thread
    }
    fn chat_migration(&self) -> Option<ChatMigration> {
        self.migration
    }
    fn update_id(&self) -> Option<u64> {
        self.update
    }
    fn bot_id(&self) -> Option<i64> {
        self.bot
    }
}
