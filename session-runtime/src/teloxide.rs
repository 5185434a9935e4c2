//! teloxide integration (feature `teloxide`): sessions in a teloxide dispatcher, and any
//! multisession store as teloxide's dialogue [`Storage`].
//!
//! **Sessions in handlers.** teloxide's [`Update`], [`Message`] and [`CallbackQuery`] are
//! [`SessionContext`]s (chat, user, forum topic, update id, group-to-supergroup
//! migration). End a handler tree with
//! [`.with_session::<S>()`](SessionHandlerExt::with_session) and its endpoints take the
//! update's [`Session`] as a parameter, like teloxide's `Dialogue`; what an endpoint
//! changed is committed when it returns `Ok`, nothing when it fails, and the tree is run
//! again on a conflict:
//!
//! ```no_run
//! use multisession::{MultiSession, Session, keys, teloxide::SessionHandlerExt};
//! use teloxide::{dispatching::UpdateFilterExt, prelude::*};
//!
//! #[derive(MultiSession)]
//! struct Chat {
//!     /// Per chat.
//!     pizzas: u32,
//!     /// Per user, in every chat.
//!     #[session(key = keys::user)]
//!     lang: Option<String>,
//! }
//!
//! type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
//!
//! /// The session is a parameter, like teloxide's `Dialogue`. What the endpoint changed is
//! /// committed when it returns `Ok`; nothing is written when it returns an error.
//! async fn pizza(bot: Bot, msg: Message, s: Session<Chat>) -> HandlerResult {
//!     *s.pizzas().await? += 1;
//!     let count = *s.pizzas().await?;
//!     let lang = s.lang().await?.clone().unwrap_or_else(|| "en".into());
//!     bot.send_message(msg.chat.id, format!("[{lang}] pizza #{count}")).await?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let sessions = Chat::builder()
//!         .default_store(multisession::stores::SqliteStore::open("bot.db").await.unwrap())
//!         .build();
//!     let handler = Update::filter_message()
//!         .filter(|msg: Message| msg.text() == Some("/pizza"))
//!         .endpoint(pizza)
//!         .with_session::<Chat>(); // every endpoint above may take `Session<Chat>`
//!     Dispatcher::builder(Bot::from_env(), handler)
//!         .dependencies(dptree::deps![sessions])
//!         .build()
//!         .dispatch()
//!         .await;
//! }
//! ```
//!
//! This holds with teloxide's default per-chat sequential dispatch and with a dispatcher
//! that runs updates of one chat concurrently: per-key locks and compare-and-set keep
//! every update's changes (rules S16, S17). A handler may also take `Sessions<S>` from
//! the dependencies and run its body in [`Sessions::run`](crate::Sessions::run), sending
//! messages after it returns.
//!
//! **Dialogues on our stores.** [`DialogueStorage`] implements teloxide's [`Storage`], so
//! an existing teloxide bot keeps its `Dialogue` handlers and moves its state to SQLite,
//! Redis or PostgreSQL (or any [`Store`](crate::store::Store)) with a key prefix, a codec
//! and an optional TTL.

use std::{fmt, marker::PhantomData, ops::ControlFlow, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use teloxide::{
    dispatching::{DpHandlerDescription, dialogue::Storage},
    dptree::{self, Handler, HandlerSignature, Type, di::DependencyMap},
    types::{CallbackQuery, ChatId, Message, Update, UpdateKind},
};

use crate::{
    codec::{Codec, CodecError, Json},
    context::{ChatMigration, SessionContext},
    error::Error,
    session::{MultiSession, Session, Sessions},
    store::{Expect, Outcome, StoreError, StoreRef, Write},
};

/// Gives the endpoints of a dptree handler their update's [`Session`] as a parameter, the
/// way `enter_dialogue` gives them a `Dialogue`, and commits what they changed when the
/// endpoint returns (see [`with_session`](SessionHandlerExt::with_session)).
pub trait SessionHandlerExt<T, E>: Sized {
    /// Runs this handler (the whole tree: filters, branches, endpoints) on the lazy
    /// session of each update, as [`Sessions::run`] runs a closure:
    ///
    /// - every handler and endpoint of the tree may take a `Session<S>` parameter, all
    ///   of them the same session (no I/O until a fragment is touched);
    /// - when the endpoint returns `Ok`, what changed is committed; if the commit fails
    ///   the error goes to the dispatcher's error handler as an `E` (`E: From<Error>`)
    ///   and says what was stored ([`Error::stored`]);
    /// - when the endpoint returns `Err`, nothing is written (unless
    ///   [`OnHandlerError::Commit`](crate::OnHandlerError::Commit)) and the error goes on
    ///   to the error handler;
    /// - on a conflict with another process, or a cycle of waits between concurrent
    ///   updates, the tree is run again on fresh reads under the same update id (per
    ///   [`OnConflict`](crate::OnConflict)). A re-run repeats the endpoint's other side
    ///   effects: where a message must be sent once even then, call
    ///   [`session.commit()`](Session::commit) in the endpoint before sending (the
    ///   commit after the endpoint then has nothing left to do; a failed commit is
    ///   the endpoint's error, not re-run). In one process, updates of the same keys
    ///   wait for each other instead of conflicting: a re-run there needs a cycle of
    ///   waits (concurrent updates taking two shared keys in opposite orders, which the
    ///   runtime learns to avoid); across processes, every conflicting write re-runs.
    ///
    /// Updates no endpoint handles pass on to the next branch, with nothing written
    /// (nothing is touched: the session is lazy). Needs `Sessions<S>` in the
    /// dispatcher's dependencies; keys come from teloxide's [`Update`] (chat, user, topic,
    /// update id for exactly-once, group-to-supergroup migration).
    ///
    /// ```no_run
    /// use multisession::{MultiSession, Session, stores::SqliteStore, teloxide::SessionHandlerExt};
    /// use teloxide::prelude::*;
    ///
    /// #[derive(MultiSession)]
    /// struct Shop {
    ///     /// Per chat.
    ///     orders: Vec<String>,
    /// }
    ///
    /// type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
    ///
    /// /// `/order <item>`: the confirmation must go out once, even if the update is re-run
    /// /// after a conflict, so the endpoint commits before it sends.
    /// async fn order(bot: Bot, msg: Message, s: Session<Shop>) -> HandlerResult {
    ///     let item = msg.text().unwrap_or_default().trim_start_matches("/order").trim();
    ///     s.orders().await?.push(item.to_owned());
    ///     s.clone().commit().await?; // stored now (or the error says what was)
    ///     bot.send_message(msg.chat.id, format!("ordered: {item}")).await?;
    ///     Ok(()) // nothing left to commit
    /// }
    ///
    /// /// A tree of several branches under one session piece.
    /// async fn orders(bot: Bot, msg: Message, s: Session<Shop>) -> HandlerResult {
    ///     let list = s.orders().await?.join(", ");
    ///     bot.send_message(msg.chat.id, format!("orders: {list}")).await?;
    ///     Ok(())
    /// }
    ///
    /// # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
    /// let sessions = Shop::builder().default_store(SqliteStore::open("shop.db").await?).build();
    /// let starts = |prefix: &'static str| {
    ///     move |msg: Message| msg.text().is_some_and(|t| t.starts_with(prefix))
    /// };
    /// let handler = Update::filter_message()
    ///     .branch(dptree::filter(starts("/order ")).endpoint(order))
    ///     .branch(dptree::filter(starts("/orders")).endpoint(orders))
    ///     .with_session::<Shop>();
    /// Dispatcher::builder(Bot::from_env(), handler)
    ///     .dependencies(dptree::deps![sessions])
    ///     .build()
    ///     .dispatch()
    ///     .await;
    /// # Ok(()) }
    /// ```
    #[must_use]
    #[track_caller]
    fn with_session<S>(self) -> Self
    where
        S: MultiSession,
        Session<S>: Send + Sync + 'static,
        Sessions<S>: Send + Sync + 'static;
}

/// Why the tree under [`SessionHandlerExt::with_session`] stopped: its own error, or the
/// session's.
enum Stop<E> {
    Endpoint(E),
    Session(Error),
}

impl<E> From<Error> for Stop<E> {
    fn from(error: Error) -> Self {
        Stop::Session(error)
    }
}

impl<T, E> SessionHandlerExt<T, E> for Handler<'static, Result<T, E>, DpHandlerDescription>
where
    T: Send + Sync + 'static,
    E: From<Error> + Send + Sync + 'static,
{
    #[track_caller]
    fn with_session<S>(self) -> Self
    where
        S: MultiSession,
        Session<S>: Send + Sync + 'static,
        Sessions<S>: Send + Sync + 'static,
    {
        let location = std::panic::Location::caller();
        // What the tree needs, less the session this piece provides, plus what it needs.
        let mut obligations = match self.sig() {
            HandlerSignature::Other { obligations, .. } => obligations.clone(),
            HandlerSignature::Entry => Default::default(),
        };
        obligations.remove(&Type::of::<Session<S>>());
        obligations.insert(Type::of::<Sessions<S>>(), location);
        obligations.insert(Type::of::<Update>(), location);
        let sig = HandlerSignature::Other {
            obligations,
            guaranteed_outcomes: Default::default(),
            conditional_outcomes: Default::default(),
            continues: true,
        };
        let description = self.description().clone();
        let tree = self;
        dptree::from_fn_with_description(
            description,
            move |deps: DependencyMap, cont| {
                let tree = tree.clone();
                async move {
                    let (Some(sessions), Some(update)) =
                        (deps.try_get::<Sessions<S>>(), deps.try_get::<Update>())
                    else {
                        // Not in a dispatcher (dptree's type check names what is missing).
                        return cont(deps).await;
                    };
                    let outcome = sessions
                        .run(&*update, async |session| {
                            let mut deps = deps.clone();
                            deps.insert(session);
                            let ran = tree
                                .clone()
                                .execute(deps, |deps| async move { ControlFlow::Continue(deps) })
                                .await;
                            match ran {
                                ControlFlow::Break(Ok(value)) => Ok(Some(value)),
                                ControlFlow::Break(Err(error)) => Err(Stop::Endpoint(error)),
                                ControlFlow::Continue(_) => Ok(None),
                            }
                        })
                        .await;
                    match outcome {
                        Ok(Some(value)) => ControlFlow::Break(Ok(value)),
                        Ok(None) => cont(deps).await,
                        Err(Stop::Endpoint(error)) => ControlFlow::Break(Err(error)),
                        Err(Stop::Session(error)) => ControlFlow::Break(Err(E::from(error))),
                    }
                }
            },
            sig,
        )
    }
}

fn user_id(user: &teloxide::types::User) -> Option<i64> {
    i64::try_from(user.id.0).ok()
}

/// A user who keys sessions: not one of the placeholders the Bot API sends for a chat
/// acting on its own behalf (777000, 1087968824, 136817688; see
/// [`telegram::User::is_placeholder`](crate::telegram::User::is_placeholder)).
fn real_user(user: &teloxide::types::User) -> Option<i64> {
    let placeholder = user.id.is_telegram() || user.id.is_anonymous() || user.id.is_channel();
    if placeholder { None } else { user_id(user) }
}

/// The user who sent a message, like
/// [`telegram::Message::sender`](crate::telegram::Message::sender): none when it was sent
/// on behalf of a chat outside channels (`sender_chat` set, `from` a placeholder).
fn sender(message: &Message) -> Option<i64> {
    if message.sender_chat.is_some() && !message.chat.is_channel() {
        return None;
    }
    message.from.as_ref().and_then(real_user)
}

/// The forum topic of a message: its thread, only when it was sent in a topic (not the
/// reply threads of ordinary supergroups), like `multisession::telegram`.
fn topic(message: &Message) -> Option<i64> {
    message
        .is_topic_message
        .then(|| message.thread_id.map(|t| i64::from(t.0.0)))
        .flatten()
}

fn migration(message: &Message) -> Option<ChatMigration> {
    if let Some(to) = message.migrate_to_chat_id() {
        return Some(ChatMigration {
            from: message.chat.id.0,
            to: to.0,
        });
    }
    message.migrate_from_chat_id().map(|from| ChatMigration {
        from: from.0,
        to: message.chat.id.0,
    })
}

/// The business connection a message came through (a field of ordinary messages).
fn business_of(message: &Message) -> Option<&str> {
    match &message.kind {
        teloxide::types::MessageKind::Common(common) => common
            .business_connection_id
            .as_ref()
            .map(|id| id.0.as_str()),
        _ => None,
    }
}

fn update_message(update: &Update) -> Option<&Message> {
    match &update.kind {
        UpdateKind::Message(m)
        | UpdateKind::EditedMessage(m)
        | UpdateKind::ChannelPost(m)
        | UpdateKind::EditedChannelPost(m)
        | UpdateKind::BusinessMessage(m)
        | UpdateKind::EditedBusinessMessage(m) => Some(m),
        UpdateKind::CallbackQuery(q) => q.regular_message(),
        _ => None,
    }
}

/// The same keys as [`telegram::Update`](crate::telegram::Update) gives for the same JSON
/// (see its `SessionContext` rules): teloxide's [`Update::chat`] and [`Update::from`],
/// except that a poll answer cast by a chat is in that chat (`voter_chat`, which
/// teloxide's `chat()` does not return) and that an update made on behalf of a chat (a
/// message with a `sender_chat` outside channels, whose `from` is a placeholder user, or
/// any placeholder user) has no user. Boosts are in the boosted chat, by the source's
/// user when it has one, as teloxide says.
impl SessionContext for Update {
    fn chat_id(&self) -> Option<i64> {
        match &self.kind {
            UpdateKind::PollAnswer(answer) => answer.voter.chat().map(|chat| chat.id.0),
            _ => self.chat().map(|chat| chat.id.0),
        }
    }
    fn user_id(&self) -> Option<i64> {
        match &self.kind {
            UpdateKind::Message(m)
            | UpdateKind::EditedMessage(m)
            | UpdateKind::ChannelPost(m)
            | UpdateKind::EditedChannelPost(m)
            | UpdateKind::BusinessMessage(m)
            | UpdateKind::EditedBusinessMessage(m) => sender(m),
            _ => self.from().and_then(real_user),
        }
    }
    fn thread_id(&self) -> Option<i64> {
        update_message(self).and_then(topic)
    }
    fn update_id(&self) -> Option<u64> {
        Some(u64::from(self.id.0))
    }
    fn chat_migration(&self) -> Option<ChatMigration> {
        match &self.kind {
            UpdateKind::Message(m) => migration(m),
            _ => None,
        }
    }
    fn business_connection_id(&self) -> Option<&str> {
        match &self.kind {
            UpdateKind::BusinessConnection(c) => Some(&c.id.0),
            UpdateKind::BusinessMessage(m) | UpdateKind::EditedBusinessMessage(m) => business_of(m),
            UpdateKind::DeletedBusinessMessages(d) => Some(&d.business_connection_id.0),
            _ => None,
        }
    }
}

impl SessionContext for Message {
    fn chat_id(&self) -> Option<i64> {
        Some(self.chat.id.0)
    }
    /// The sender, none for a message sent on behalf of a chat (see the `Update` impl).
    fn user_id(&self) -> Option<i64> {
        sender(self)
    }
    fn thread_id(&self) -> Option<i64> {
        topic(self)
    }
    fn chat_migration(&self) -> Option<ChatMigration> {
        migration(self)
    }
    fn business_connection_id(&self) -> Option<&str> {
        business_of(self)
    }
}

impl SessionContext for CallbackQuery {
    fn chat_id(&self) -> Option<i64> {
        self.message.as_ref().map(|m| m.chat().id.0)
    }
    fn user_id(&self) -> Option<i64> {
        real_user(&self.from)
    }
    fn thread_id(&self) -> Option<i64> {
        self.regular_message().and_then(topic)
    }
}

/// Why a [`DialogueStorage`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialogueError {
    /// `remove_dialogue` found no dialogue (teloxide's storages fail the same way).
    #[error("no dialogue stored for chat {chat} (key `{key}`)")]
    DialogueNotFound {
        /// The chat.
        chat: i64,
        /// The storage key.
        key: String,
    },
    /// The store failed.
    #[error("dialogue key `{key}` in store `{store}`: {source}")]
    Store {
        /// The storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// The dialogue did not encode, or the stored bytes do not decode.
    #[error("dialogue key `{key}` in store `{store}`: {source}")]
    Codec {
        /// The storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the codec reported.
        #[source]
        source: CodecError,
    },
    /// Removal kept meeting concurrent changes of the same dialogue.
    #[error("dialogue key `{key}` in store `{store}` kept changing while being removed")]
    Contended {
        /// The storage key.
        key: String,
        /// The store's name.
        store: String,
    },
}

/// Any multisession store as teloxide's dialogue [`Storage`]: dialogues live under
/// `prefix` + chat id (default prefix `dialogue:`), encoded with codec `C` (default JSON),
/// optionally expiring `ttl` after their last update.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use multisession::{stores::SqliteStore, teloxide::DialogueStorage};
/// use std::time::Duration;
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// enum State {
///     #[default]
///     Start,
///     ReceiveName,
/// }
///
/// let storage = DialogueStorage::<State>::new(SqliteStore::open("bot.db").await?)
///     .prefix("signup:")
///     .ttl(Duration::from_secs(3600))
///     .into_arc();
/// // Where a teloxide bot had `InMemStorage::<State>::new()`:
/// // Dispatcher::builder(bot, schema).dependencies(dptree::deps![storage]) ...
/// # Ok(()) }
/// ```
pub struct DialogueStorage<D, C = Json> {
    store: StoreRef,
    prefix: String,
    ttl: Option<Duration>,
    _marker: PhantomData<fn() -> (D, C)>,
}

impl<D, C> fmt::Debug for DialogueStorage<D, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialogueStorage")
            .field("store", &self.store.as_dyn().name())
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<D> DialogueStorage<D, Json> {
    /// Dialogues in `store`, JSON-encoded, under the prefix `dialogue:`.
    pub fn new(store: impl Into<StoreRef>) -> Self {
        Self::with_codec(store)
    }
}

impl<D, C> DialogueStorage<D, C> {
    /// Dialogues in `store`, encoded with codec `C`.
    pub fn with_codec(store: impl Into<StoreRef>) -> Self {
        DialogueStorage {
            store: store.into(),
            prefix: "dialogue:".to_owned(),
            ttl: None,
            _marker: PhantomData,
        }
    }

    /// The key prefix (default `dialogue:`): the storage key of a chat's dialogue is the
    /// prefix followed by the chat id.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Forget a dialogue `ttl` after its last update (rule S18's expiry, on the store).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The storage in an `Arc`, as teloxide's dispatcher takes it.
    pub fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    fn key(&self, chat: ChatId) -> String {
        format!("{}{}", self.prefix, chat.0)
    }

    fn store_error(&self, key: &str, source: StoreError) -> DialogueError {
        DialogueError::Store {
            key: key.to_owned(),
            store: self.store.as_dyn().name().to_owned(),
            source,
        }
    }

    fn codec_error(&self, key: &str, source: CodecError) -> DialogueError {
        DialogueError::Codec {
            key: key.to_owned(),
            store: self.store.as_dyn().name().to_owned(),
            source,
        }
    }
}

impl<D, C> Storage<D> for DialogueStorage<D, C>
where
    D: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    type Error = DialogueError;

    fn remove_dialogue(
        self: Arc<Self>,
        chat_id: ChatId,
    ) -> BoxFuture<'static, Result<(), Self::Error>>
    where
        D: Send + 'static,
    {
        Box::pin(async move {
            let key = self.key(chat_id);
            let store = self.store.as_dyn();
            // Remove what was read, and only that: a dialogue updated meanwhile is
            // re-read, so "not found" is never reported for a dialogue that exists.
            for _ in 0..16 {
                let Some(record) = store
                    .read(&key)
                    .await
                    .map_err(|e| self.store_error(&key, e))?
                else {
                    return Err(DialogueError::DialogueNotFound {
                        chat: chat_id.0,
                        key,
                    });
                };
                let delete = Write::Delete {
                    key: key.clone(),
                    expect: Expect::Revision(record.revision),
                };
                match store.apply(std::slice::from_ref(&delete)).await.pop() {
                    Some(Ok(Outcome::Applied)) => return Ok(()),
                    Some(Ok(Outcome::Conflict)) => continue,
                    Some(Err(e)) => return Err(self.store_error(&key, e)),
                    None => {
                        return Err(self.store_error(
                            &key,
                            StoreError::Corrupt("apply returned no result".into()),
                        ));
                    }
                }
            }
            Err(DialogueError::Contended {
                key,
                store: store.name().to_owned(),
            })
        })
    }

    fn update_dialogue(
        self: Arc<Self>,
        chat_id: ChatId,
        dialogue: D,
    ) -> BoxFuture<'static, Result<(), Self::Error>>
    where
        D: Send + 'static,
    {
        Box::pin(async move {
            let key = self.key(chat_id);
            let bytes = C::encode(&dialogue).map_err(|e| self.codec_error(&key, e))?;
            self.store
                .as_dyn()
                .write(&key, &bytes, self.ttl)
                .await
                .map_err(|e| self.store_error(&key, e))
        })
    }

    fn get_dialogue(
        self: Arc<Self>,
        chat_id: ChatId,
    ) -> BoxFuture<'static, Result<Option<D>, Self::Error>> {
        Box::pin(async move {
            let key = self.key(chat_id);
            let Some(record) = self
                .store
                .as_dyn()
                .read(&key)
                .await
                .map_err(|e| self.store_error(&key, e))?
            else {
                return Ok(None);
            };
            C::decode(&record.value)
                .map(Some)
                .map_err(|e| self.codec_error(&key, e))
        })
    }
}
