//! A serde model of the Telegram Bot API [`Update`], deliberately partial.
//!
//! It keeps the fields sessions need — who sent an update, in which chat and forum topic,
//! what text, and whether a group became a supergroup — for every update kind of the Bot
//! API. Everything else is left out: unknown fields are ignored, and an update of a kind
//! this model does not know parses as [`UpdateKind::Unknown`] with its raw JSON, so a newer
//! Bot API never breaks parsing. Serializing gives back the Bot API's shape (minus the
//! fields left out).
//!
//! [`Update`] implements [`SessionContext`] following grammY's `ctx.chat` and `ctx.from`,
//! except that the placeholder users the Bot API sends for chats acting on their own
//! behalf are not users (see [`Update::from`]).
//!
//! Parsing is lenient on fields Telegram always sends but widely copied samples omit (a
//! chat's `type`, a user's `is_bot`, a callback query's `chat_instance`, ids sent as
//! numbers) and never panics: what is not an update is a [`serde_json::Error`]. Every
//! type is `#[non_exhaustive]`: more fields may be kept in a later version.
//!
//! ```
//! use multisession::{SessionContext, telegram::Update};
//!
//! let json = r#"{"update_id": 584120332, "message": {"message_id": 5, "date": 1772788359,
//!     "chat": {"id": -1001234567890, "type": "supergroup", "title": "Pizza Friday"},
//!     "from": {"id": 318274650, "is_bot": false, "first_name": "Ada"},
//!     "text": "/pizza", "some_future_field": true}}"#;
//! let update: Update = serde_json::from_str(json).unwrap();
//! assert_eq!(update.chat_id(), Some(-1001234567890));
//! assert_eq!(update.user_id(), Some(318274650));
//! assert_eq!(update.text(), Some("/pizza"));
//! ```

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::context::{ChatMigration, SessionContext};

/// A Telegram user or bot.
///
/// Three ids are not people but placeholders the Bot API puts in `from` (and in a poll
/// answer's `user`) for backward compatibility when a chat acted: see
/// [`is_placeholder`](Self::is_placeholder).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// Whether this user is a bot. Telegram always sends it; JSON without it (such as the
    /// sample updates of the Bot API's webhook guide) reads as `false`.
    #[serde(default)]
    pub is_bot: bool,
    /// First name.
    pub first_name: String,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Username, without the `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// IETF language tag of the user's client, such as `en` or `de`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
}

/// The bot id in a bot token (`"123456789:AAH..."` → `123456789`), for
/// [`Config::bot`](crate::Config::bot); `None` if the token does not start with one.
///
/// ```
/// use multisession::{Config, telegram::bot_id_of_token};
///
/// assert_eq!(bot_id_of_token("7712345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), Some(7712345678));
/// assert_eq!(bot_id_of_token("not a token"), None);
/// let token = "7712345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
/// let config = Config::new().bot(bot_id_of_token(token).expect("a bot token"));
/// ```
pub fn bot_id_of_token(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    if secret.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|id| *id > 0)
}

impl User {
    /// `777000`, "Telegram": the sender of channel posts automatically forwarded to the
    /// channel's discussion group (with `sender_chat` the channel), and of service
    /// notifications.
    pub const TELEGRAM: i64 = 777000;
    /// `1087968824`, @GroupAnonymousBot: the sender of messages (and the author of member
    /// changes) of anonymous group administrators; `sender_chat` is the group itself.
    pub const GROUP_ANONYMOUS_BOT: i64 = 1087968824;
    /// `136817688`, @Channel_Bot: the sender of messages sent on behalf of a channel, and
    /// the `user` of a poll answer cast by a chat (`voter_chat`).
    pub const CHANNEL_BOT: i64 = 136817688;

    /// Whether this is one of the placeholder users the Bot API sends "for backward
    /// compatibility" in place of a chat that acted ([`TELEGRAM`](Self::TELEGRAM),
    /// [`GROUP_ANONYMOUS_BOT`](Self::GROUP_ANONYMOUS_BOT),
    /// [`CHANNEL_BOT`](Self::CHANNEL_BOT), the ids teloxide's `UserId::is_telegram`,
    /// `is_anonymous` and `is_channel` test). Such a user is the same for every chat on
    /// Telegram, so it never keys a per-user session: [`Update::from`] skips it.
    pub fn is_placeholder(&self) -> bool {
        matches!(
            self.id,
            Self::TELEGRAM | Self::GROUP_ANONYMOUS_BOT | Self::CHANNEL_BOT
        )
    }
}

/// The kind of a chat.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    /// A private chat with one user; its id is the user's id.
    Private,
    /// A basic group.
    Group,
    /// A supergroup (forums are supergroups too).
    Supergroup,
    /// A channel.
    Channel,
    /// A kind this model does not know yet, or a chat sent without its `type` whose id
    /// does not tell (it serializes as `"unknown"`).
    #[serde(other)]
    Unknown,
}

/// A chat: a private chat, a group, a supergroup or a channel.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
#[serde(from = "ChatFields")]
pub struct Chat {
    /// The chat's id: the user's id for private chats, negative for groups and channels.
    pub id: i64,
    /// The kind of chat (the Bot API's `type`). Telegram always sends it; a chat without
    /// it (such as in the sample updates of the Bot API's webhook guide) is
    /// [`Private`](ChatType::Private) when its id is positive (only private chats have
    /// positive ids), else [`Unknown`](ChatType::Unknown).
    #[serde(rename = "type")]
    pub kind: ChatType,
    /// Title of a group, supergroup or channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Username of the chat, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// First name of the other party in a private chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name of the other party in a private chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Whether the supergroup is a forum (has topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_forum: Option<bool>,
}

/// How a [`Chat`] is read: like it, with `type` optional.
#[derive(Deserialize)]
struct ChatFields {
    id: i64,
    #[serde(rename = "type", default)]
    kind: Option<ChatType>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    is_forum: Option<bool>,
}

impl From<ChatFields> for Chat {
    fn from(fields: ChatFields) -> Self {
        let ChatFields {
            id,
            kind,
            title,
            username,
            first_name,
            last_name,
            is_forum,
        } = fields;
        let kind = kind.unwrap_or(if id > 0 {
            ChatType::Private
        } else {
            ChatType::Unknown
        });
        Chat {
            id,
            kind,
            title,
            username,
            first_name,
            last_name,
            is_forum,
        }
    }
}

/// Reads an id Telegram sends as a string, also when it is a number (the webhook guide's
/// sample inline query has `"id": 134567890097`).
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// A special entity in a text: a bot command, a mention, a link, ...
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct MessageEntity {
    /// The entity's type, such as `bot_command`, `mention` or `url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it starts, in UTF-16 code units.
    pub offset: i64,
    /// Its length, in UTF-16 code units.
    pub length: i64,
}

/// A message; also an edited message, a channel post or a business message.
///
/// An inaccessible message (the message of an old button press) has only `message_id`,
/// `chat`, and `date` 0.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The message's id in its chat.
    pub message_id: i64,
    /// The thread: the forum topic, or in other supergroups the replied-to thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i64>,
    /// The sender, as sent: absent or the author in channels; a placeholder user
    /// ([`User::is_placeholder`]) in other chats when `sender_chat` sent the message.
    /// [`Message::sender`] tells the real sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// The chat that sent it on its own behalf: the channel of a channel post, the group
    /// of an anonymous admin, the channel a user posted as, the linked channel of an
    /// automatic forward to its discussion group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_chat: Option<Chat>,
    /// The chat the message belongs to.
    pub chat: Chat,
    /// When it was sent, in Unix time; 0 for an inaccessible message.
    pub date: i64,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The caption of a photo, video, document, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Entities of the text (commands, mentions, links, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<MessageEntity>>,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message: Option<Box<Message>>,
    /// Service message in a group that became the supergroup with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_to_chat_id: Option<i64>,
    /// Service message in a supergroup that was the group with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_from_chat_id: Option<i64>,
    /// Users who joined the chat (service message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chat_members: Option<Vec<User>>,
    /// A user who left the chat (service message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_chat_member: Option<User>,
    /// Whether the message was sent in a forum topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_topic_message: Option<bool>,
    /// The business connection a business message came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_connection_id: Option<String>,
}

impl Message {
    /// The user who sent this message, if a user did: [`from`](Self::from) unless it is a
    /// placeholder. Outside channels, a message with a `sender_chat` was sent on behalf of
    /// that chat and its `from` is a placeholder ("for backward compatibility, the field
    /// from contains a fake sender user in non-channel chats, if the message was sent on
    /// behalf of a chat", Bot API `Message.sender_chat`): `None` for it, whatever the
    /// id. In channels `from`, when present, is the post's author.
    pub fn sender(&self) -> Option<&User> {
        let on_behalf_of_chat = self.sender_chat.is_some() && self.chat.kind != ChatType::Channel;
        self.from
            .as_ref()
            .filter(|user| !on_behalf_of_chat && !user.is_placeholder())
    }

    /// The forum topic: `message_thread_id`, but only for messages sent in a topic
    /// (`is_topic_message`), not for reply threads of ordinary supergroups.
    pub fn topic(&self) -> Option<i64> {
        if self.is_topic_message == Some(true) {
            self.message_thread_id
        } else {
            None
        }
    }

    /// The text, or the caption of a media message.
    pub fn text_or_caption(&self) -> Option<&str> {
        self.text.as_deref().or(self.caption.as_deref())
    }
}

/// A press of an inline keyboard button.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct CallbackQuery {
    /// The query's id (read from a string or, leniently, a number).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Who pressed the button.
    pub from: User,
    /// The message with the button, if the bot sent it (maybe inaccessible: `date` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<Message>>,
    /// The inline message with the button, if it was sent in inline mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_message_id: Option<String>,
    /// Identifies the chat the button was pressed in (not the chat's id). Telegram always
    /// sends it; the webhook guide's sample callback query has none: empty then.
    #[serde(default)]
    pub chat_instance: String,
    /// The button's `callback_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// An inline query: `@bot something` typed in any chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct InlineQuery {
    /// The query's id (read from a string or, leniently, a number: the webhook guide's
    /// sample sends `"id": 134567890097`).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Who typed it.
    pub from: User,
    /// The text after the bot's username.
    pub query: String,
    /// The paging offset the bot asked for.
    pub offset: String,
    /// The kind of chat it was typed in (`sender` for the private chat with the bot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
}

/// An inline result a user chose and sent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChosenInlineResult {
    /// The result's id.
    pub result_id: String,
    /// Who chose it.
    pub from: User,
    /// The query that produced it.
    pub query: String,
    /// The sent message, if it has an inline keyboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_message_id: Option<String>,
}

/// A shipping query for an invoice with a flexible price.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ShippingQuery {
    /// The query's id (read from a string or, leniently, a number).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Who asked.
    pub from: User,
    /// The bot's invoice payload.
    pub invoice_payload: String,
}

/// A pre-checkout query: a user is about to pay.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct PreCheckoutQuery {
    /// The query's id (read from a string or, leniently, a number).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Who pays.
    pub from: User,
    /// ISO 4217 currency code, or `XTR` for Telegram Stars.
    pub currency: String,
    /// The price in the currency's smallest units.
    pub total_amount: i64,
    /// The bot's invoice payload.
    pub invoice_payload: String,
}

/// The new state of a poll the bot sent (or a stopped poll).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Poll {
    /// The poll's id.
    pub id: String,
    /// The question.
    pub question: String,
}

/// A vote in a non-anonymous poll the bot sent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct PollAnswer {
    /// The poll's id.
    pub poll_id: String,
    /// The chat that voted, if the vote was cast on behalf of a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter_chat: Option<Chat>,
    /// The user field as sent: the voter, unless a chat voted; then absent or, from
    /// older servers, the placeholder [`User::CHANNEL_BOT`] (Bot API 6.8: "for backward
    /// compatibility, the field user in such objects will contain the user 136817688
    /// (@Channel_Bot)"). [`PollAnswer::voter`] tells the real voter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// The chosen options (0-based); empty when the vote was retracted.
    pub option_ids: Vec<i64>,
}

impl PollAnswer {
    /// The user who voted: `None` when a chat voted (`voter_chat`), whatever `user` holds.
    pub fn voter(&self) -> Option<&User> {
        match self.voter_chat {
            Some(_) => None,
            None => self.user.as_ref().filter(|user| !user.is_placeholder()),
        }
    }
}

/// A member's status in a chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatMember {
    /// `creator`, `administrator`, `member`, `restricted`, `left` or `kicked`.
    pub status: String,
    /// The member.
    pub user: User,
}

/// A change of a chat member's status.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatMemberUpdated {
    /// The chat.
    pub chat: Chat,
    /// Who made the change.
    pub from: User,
    /// When, in Unix time.
    pub date: i64,
    /// The status before.
    pub old_chat_member: ChatMember,
    /// The status after.
    pub new_chat_member: ChatMember,
}

/// A request to join a chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatJoinRequest {
    /// The chat to join.
    pub chat: Chat,
    /// Who asks.
    pub from: User,
    /// The private chat with the asker, open for 5 minutes.
    pub user_chat_id: i64,
    /// When, in Unix time.
    pub date: i64,
    /// The asker's bio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bio: Option<String>,
}

/// A user's (or an anonymous admin's) change of reactions on a message.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct MessageReactionUpdated {
    /// The chat.
    pub chat: Chat,
    /// The message.
    pub message_id: i64,
    /// Who reacted, unless anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// The chat on whose behalf the reaction was changed, if anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_chat: Option<Chat>,
    /// When, in Unix time.
    pub date: i64,
}

/// A change of the anonymous reaction counts on a message.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct MessageReactionCountUpdated {
    /// The chat.
    pub chat: Chat,
    /// The message.
    pub message_id: i64,
    /// When, in Unix time.
    pub date: i64,
}

/// The bot was connected to, or disconnected from, a business account.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct BusinessConnection {
    /// The connection's id.
    pub id: String,
    /// The business account's user.
    pub user: User,
    /// The private chat with that user.
    pub user_chat_id: i64,
    /// When the connection was made, in Unix time.
    pub date: i64,
}

/// Messages deleted from a connected business account.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct BusinessMessagesDeleted {
    /// The business connection.
    pub business_connection_id: String,
    /// The chat in the business account.
    pub chat: Chat,
    /// The deleted messages.
    pub message_ids: Vec<i64>,
}

/// Where a boost comes from: the Bot API's `ChatBoostSource`, whose kind is its
/// `source` field.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatBoostSource {
    /// `premium` (a user's Telegram Premium), `gift_code` (a gift code made by the chat)
    /// or `giveaway` (a giveaway of the chat); a newer kind is kept as sent.
    #[serde(rename = "source")]
    pub kind: String,
    /// The user: who boosted (`premium`), who the gift code was made for (`gift_code`),
    /// the winner of a Telegram Premium giveaway (`giveaway`, when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

/// A boost of a chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatBoost {
    /// The boost's id.
    pub boost_id: String,
    /// Where it comes from.
    pub source: ChatBoostSource,
}

/// A boost added to or changed in a chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatBoostUpdated {
    /// The boosted chat.
    pub chat: Chat,
    /// The boost.
    pub boost: ChatBoost,
}

/// A boost removed from a chat.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ChatBoostRemoved {
    /// The chat that lost the boost.
    pub chat: Chat,
    /// The boost's id.
    pub boost_id: String,
    /// Where the boost came from.
    pub source: ChatBoostSource,
}

/// Paid media a user bought from the bot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct PaidMediaPurchased {
    /// The buyer.
    pub from: User,
    /// The bot's payload.
    pub paid_media_payload: String,
}

/// What an update is about: the one optional field of the Bot API's `Update` it carries.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum UpdateKind {
    /// `message`: a new message.
    Message(Message),
    /// `edited_message`: a message was edited.
    EditedMessage(Message),
    /// `channel_post`: a new channel post.
    ChannelPost(Message),
    /// `edited_channel_post`: a channel post was edited.
    EditedChannelPost(Message),
    /// `business_connection`: a business account was connected or disconnected.
    BusinessConnection(BusinessConnection),
    /// `business_message`: a new message in a connected business account.
    BusinessMessage(Message),
    /// `edited_business_message`: a business message was edited.
    EditedBusinessMessage(Message),
    /// `deleted_business_messages`: business messages were deleted.
    DeletedBusinessMessages(BusinessMessagesDeleted),
    /// `message_reaction`: a user changed their reactions.
    MessageReaction(MessageReactionUpdated),
    /// `message_reaction_count`: anonymous reaction counts changed.
    MessageReactionCount(MessageReactionCountUpdated),
    /// `inline_query`: an inline query.
    InlineQuery(InlineQuery),
    /// `chosen_inline_result`: an inline result was chosen.
    ChosenInlineResult(ChosenInlineResult),
    /// `callback_query`: an inline keyboard button was pressed.
    CallbackQuery(CallbackQuery),
    /// `shipping_query`: a shipping query.
    ShippingQuery(ShippingQuery),
    /// `pre_checkout_query`: a pre-checkout query.
    PreCheckoutQuery(PreCheckoutQuery),
    /// `purchased_paid_media`: paid media were bought.
    PurchasedPaidMedia(PaidMediaPurchased),
    /// `poll`: a poll's state changed.
    Poll(Poll),
    /// `poll_answer`: a user voted.
    PollAnswer(PollAnswer),
    /// `my_chat_member`: the bot's own membership changed.
    MyChatMember(ChatMemberUpdated),
    /// `chat_member`: a member's status changed.
    ChatMember(ChatMemberUpdated),
    /// `chat_join_request`: someone asked to join a chat.
    ChatJoinRequest(ChatJoinRequest),
    /// `chat_boost`: a boost was added or changed.
    ChatBoost(ChatBoostUpdated),
    /// `removed_chat_boost`: a boost was removed.
    RemovedChatBoost(ChatBoostRemoved),
    /// A kind this model does not know (a newer Bot API's): kept as raw JSON.
    Unknown {
        /// The update's field, such as `"some_future_kind"`.
        field: String,
        /// Its value, as sent.
        value: Value,
    },
}

/// Maps the Bot API's field names to [`UpdateKind`] variants, both ways.
macro_rules! kinds {
    ($( $field:literal => $variant:ident ),* $(,)?) => {
        impl UpdateKind {
            /// The Bot API's name of this kind, such as `"message"` or `"callback_query"`.
            pub fn name(&self) -> &str {
                match self {
                    $( UpdateKind::$variant(_) => $field, )*
                    UpdateKind::Unknown { field, .. } => field,
                }
            }

            /// The kind carried by the fields of an update (without `update_id`): the
            /// first known field, else an unknown one (an object preferred).
            fn from_fields(mut fields: Map<String, Value>) -> Result<Self, String> {
                $(
                    if let Some(value) = fields.remove($field) {
                        return serde_json::from_value(value)
                            .map(UpdateKind::$variant)
                            .map_err(|e| format!("`{}`: {e}", $field));
                    }
                )*
                let field = fields
                    .iter()
                    .find(|(_, value)| value.is_object())
                    .or_else(|| fields.iter().next())
                    .map(|(field, _)| field.clone())
                    .ok_or("an update needs a field besides `update_id`")?;
                let value = fields.remove(&field).unwrap_or_default();
                Ok(UpdateKind::Unknown { field, value })
            }

            /// Writes this kind as its Bot API field.
            fn serialize_entry<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                match self {
                    $( UpdateKind::$variant(inner) => map.serialize_entry($field, inner), )*
                    UpdateKind::Unknown { field, value } => map.serialize_entry(field, value),
                }
            }
        }
    };
}

kinds! {
    "message" => Message,
    "edited_message" => EditedMessage,
    "channel_post" => ChannelPost,
    "edited_channel_post" => EditedChannelPost,
    "business_connection" => BusinessConnection,
    "business_message" => BusinessMessage,
    "edited_business_message" => EditedBusinessMessage,
    "deleted_business_messages" => DeletedBusinessMessages,
    "message_reaction" => MessageReaction,
    "message_reaction_count" => MessageReactionCount,
    "inline_query" => InlineQuery,
    "chosen_inline_result" => ChosenInlineResult,
    "callback_query" => CallbackQuery,
    "shipping_query" => ShippingQuery,
    "pre_checkout_query" => PreCheckoutQuery,
    "purchased_paid_media" => PurchasedPaidMedia,
    "poll" => Poll,
    "poll_answer" => PollAnswer,
    "my_chat_member" => MyChatMember,
    "chat_member" => ChatMember,
    "chat_join_request" => ChatJoinRequest,
    "chat_boost" => ChatBoost,
    "removed_chat_boost" => RemovedChatBoost,
}

/// One update, as returned by `getUpdates` or posted to a webhook.
///
/// (De)serializes as the Bot API's JSON object: `update_id` and one field naming the kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Update {
    /// The update's id; ids increase from one update to the next.
    pub update_id: i64,
    /// What the update is about.
    pub kind: UpdateKind,
}

impl<'de> Deserialize<'de> for Update {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = Map::<String, Value>::deserialize(deserializer)?;
        let update_id = fields
            .remove("update_id")
            .ok_or_else(|| D::Error::missing_field("update_id"))?;
        let update_id = i64::deserialize(update_id)
            .map_err(|e| D::Error::custom(format!("`update_id`: {e}")))?;
        let kind = UpdateKind::from_fields(fields).map_err(D::Error::custom)?;
        Ok(Update { update_id, kind })
    }
}

impl Serialize for Update {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("update_id", &self.update_id)?;
        self.kind.serialize_entry(&mut map)?;
        map.end()
    }
}

impl Update {
    /// The message of a message-like update (new or edited message, channel post, business
    /// message), or the message with the pressed button of a callback query.
    pub fn message(&self) -> Option<&Message> {
        match &self.kind {
            UpdateKind::Message(m)
            | UpdateKind::EditedMessage(m)
            | UpdateKind::ChannelPost(m)
            | UpdateKind::EditedChannelPost(m)
            | UpdateKind::BusinessMessage(m)
            | UpdateKind::EditedBusinessMessage(m) => Some(m),
            UpdateKind::CallbackQuery(q) => q.message.as_deref(),
            _ => None,
        }
    }

    /// The chat the update happened in, like grammY's `ctx.chat`; for a poll answer cast
    /// by a chat, that chat (`voter_chat`, like aiogram's event chat: the poll answer
    /// does not tell the chat the poll was sent in).
    ///
    /// `None` for inline queries, chosen inline results, payments, polls, poll answers of
    /// users, paid media purchases, button presses on inline messages, and business
    /// connections (whose private chat only has an id: see [`SessionContext::chat_id`]).
    pub fn chat(&self) -> Option<&Chat> {
        match &self.kind {
            UpdateKind::DeletedBusinessMessages(d) => Some(&d.chat),
            UpdateKind::MessageReaction(r) => Some(&r.chat),
            UpdateKind::MessageReactionCount(r) => Some(&r.chat),
            UpdateKind::PollAnswer(a) => a.voter_chat.as_ref(),
            UpdateKind::MyChatMember(u) | UpdateKind::ChatMember(u) => Some(&u.chat),
            UpdateKind::ChatJoinRequest(r) => Some(&r.chat),
            UpdateKind::ChatBoost(b) => Some(&b.chat),
            UpdateKind::RemovedChatBoost(b) => Some(&b.chat),
            _ => self.message().map(|m| &m.chat),
        }
    }

    /// The user who caused the update, like grammY's `ctx.from`, but never a placeholder
    /// for a chat.
    ///
    /// - Messages (new, edited, channel posts, business): [`Message::sender`]. A message
    ///   sent on behalf of a chat (`sender_chat` set, outside channels) has a placeholder
    ///   in `from` — [`User::GROUP_ANONYMOUS_BOT`] for anonymous group admins,
    ///   [`User::CHANNEL_BOT`] for users posting as a channel, [`User::TELEGRAM`] for
    ///   automatic forwards from the linked channel — and no user here.
    /// - Poll answers: [`PollAnswer::voter`], `None` when a chat voted (`voter_chat`),
    ///   even though older servers send `user` = [`User::CHANNEL_BOT`].
    /// - Boosts (added or removed): the source's user when it has one (the booster for
    ///   `premium`, the gift code's user, a giveaway's winner), as teloxide's
    ///   `Update::from` and grammY's `ctx.from` do.
    /// - Anywhere else, the acting user, unless it is a placeholder
    ///   ([`User::is_placeholder`]: e.g. a member change made by an anonymous admin).
    ///
    /// `None` for channel posts without an author, anonymous reactions, polls, reaction
    /// counts, deleted business messages and boosts from giveaways without a winner.
    pub fn from(&self) -> Option<&User> {
        let user = match &self.kind {
            UpdateKind::Message(m)
            | UpdateKind::EditedMessage(m)
            | UpdateKind::ChannelPost(m)
            | UpdateKind::EditedChannelPost(m)
            | UpdateKind::BusinessMessage(m)
            | UpdateKind::EditedBusinessMessage(m) => m.sender(),
            UpdateKind::BusinessConnection(c) => Some(&c.user),
            UpdateKind::MessageReaction(r) => r.user.as_ref(),
            UpdateKind::InlineQuery(q) => Some(&q.from),
            UpdateKind::ChosenInlineResult(r) => Some(&r.from),
            UpdateKind::CallbackQuery(q) => Some(&q.from),
            UpdateKind::ShippingQuery(q) => Some(&q.from),
            UpdateKind::PreCheckoutQuery(q) => Some(&q.from),
            UpdateKind::PurchasedPaidMedia(p) => Some(&p.from),
            UpdateKind::PollAnswer(a) => a.voter(),
            UpdateKind::MyChatMember(u) | UpdateKind::ChatMember(u) => Some(&u.from),
            UpdateKind::ChatJoinRequest(r) => Some(&r.from),
            UpdateKind::ChatBoost(b) => b.boost.source.user.as_ref(),
            UpdateKind::RemovedChatBoost(b) => b.source.user.as_ref(),
            _ => None,
        };
        user.filter(|user| !user.is_placeholder())
    }

    /// The chat on whose behalf the update was made, if a chat acted rather than a user:
    /// a message's `sender_chat` (outside channels: anonymous admins, posting as a
    /// channel, automatic forwards), an anonymous reaction's `actor_chat`, a poll answer's
    /// `voter_chat`. [`Update::from`] is `None` for these, except for a channel post with
    /// an author.
    pub fn sender_chat(&self) -> Option<&Chat> {
        match &self.kind {
            UpdateKind::MessageReaction(r) => r.actor_chat.as_ref(),
            UpdateKind::PollAnswer(a) => a.voter_chat.as_ref(),
            UpdateKind::CallbackQuery(_) => None,
            _ => self.message().and_then(|m| m.sender_chat.as_ref()),
        }
    }

    /// The text (or caption) a message-like update carries.
    ///
    /// `None` for callback queries, whose message was written by the bot: see
    /// [`callback_data`](Self::callback_data). An inline query's text is
    /// [`InlineQuery::query`].
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            UpdateKind::CallbackQuery(_) => None,
            _ => self.message().and_then(Message::text_or_caption),
        }
    }

    /// The `callback_data` of a pressed button.
    pub fn callback_data(&self) -> Option<&str> {
        match &self.kind {
            UpdateKind::CallbackQuery(q) => q.data.as_deref(),
            _ => None,
        }
    }
}

/// Who and where, for session keys: [`Update::chat`] and [`Update::from`].
///
/// The user is a person or a bot, never a chat: an update made on behalf of a chat (an
/// anonymous group admin, a user posting as a channel, an automatic forward from a linked
/// channel, a poll answer cast by a channel) has no user id, where the Bot API sends
/// the same placeholder user for every such chat on Telegram ([`User::is_placeholder`]).
/// Keying those by the placeholder would put every anonymous admin and every channel in
/// one shared per-user session; without a user id, per-user fragments are unavailable
/// for them (rule S3) and per-chat ones work as usual. This is the rule TDLib's
/// maintainers give for the placeholders (use the sender chat when there is one, the user
/// otherwise) and the one of teloxide's `PollAnswer::voter`; grammY and aiogram pass the
/// placeholder on as the user.
///
/// The teloxide integration's `SessionContext for teloxide::types::Update` follows the
/// same rules, so the same JSON gives the same keys through either.
impl SessionContext for Update {
    /// [`Update::chat`]'s id (for a poll answer of a chat, the voting chat); for a
    /// business connection, the private chat with its user.
    fn chat_id(&self) -> Option<i64> {
        match &self.kind {
            UpdateKind::BusinessConnection(c) => Some(c.user_chat_id),
            _ => self.chat().map(|chat| chat.id),
        }
    }

    /// [`Update::from`]'s id: `None` for an update made on behalf of a chat.
    fn user_id(&self) -> Option<i64> {
        self.from().map(|user| user.id)
    }

    /// The forum topic of [`Update::message`] (see [`Message::topic`]).
    fn thread_id(&self) -> Option<i64> {
        self.message().and_then(Message::topic)
    }

    /// The migration announced by a `message` with `migrate_to_chat_id` (sent in the old
    /// group) or `migrate_from_chat_id` (sent in the new supergroup).
    fn chat_migration(&self) -> Option<ChatMigration> {
        let UpdateKind::Message(message) = &self.kind else {
            return None;
        };
        let chat = message.chat.id;
        match (message.migrate_to_chat_id, message.migrate_from_chat_id) {
            (Some(to), _) => Some(ChatMigration { from: chat, to }),
            (None, Some(from)) => Some(ChatMigration { from, to: chat }),
            (None, None) => None,
        }
    }

    /// [`Update::update_id`] (rule S25: delivered twice, it changes each fragment once).
    fn update_id(&self) -> Option<u64> {
        u64::try_from(self.update_id).ok()
    }

    /// The business connection of a business message (new or edited), of deleted
    /// business messages, and of the connection update itself.
    fn business_connection_id(&self) -> Option<&str> {
        match &self.kind {
            UpdateKind::BusinessConnection(c) => Some(&c.id),
            UpdateKind::BusinessMessage(m) | UpdateKind::EditedBusinessMessage(m) => {
                m.business_connection_id.as_deref()
            }
            UpdateKind::DeletedBusinessMessages(d) => Some(&d.business_connection_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Update {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    const ADA: &str = r#"{"id":318274650,"is_bot":false,"first_name":"Ada","last_name":"Lovelace","username":"ada_l","language_code":"en"}"#;
    const BOT: &str = r#"{"id":7712345678,"is_bot":true,"first_name":"Pizza Sessions","username":"multisession_pizza_bot"}"#;
    const PRIVATE: &str = r#"{"id":318274650,"first_name":"Ada","last_name":"Lovelace","username":"ada_l","type":"private"}"#;
    const GROUP: &str = r#"{"id":-1001234567890,"title":"Pizza Friday","type":"supergroup"}"#;
    const FORUM: &str =
        r#"{"id":-1005550001111,"title":"Rust Pizza Club","type":"supergroup","is_forum":true}"#;
    const CHANNEL: &str =
        r#"{"id":-1002233445566,"title":"Pizza News","username":"pizzanews","type":"channel"}"#;

    const ADA_ID: i64 = 318274650;
    const GROUP_ID: i64 = -1001234567890;

    /// What an update tells sessions.
    #[derive(Debug, PartialEq)]
    struct Seen {
        chat: Option<i64>,
        user: Option<i64>,
        thread: Option<i64>,
        migration: Option<ChatMigration>,
    }

    fn seen(update: &Update) -> Seen {
        Seen {
            chat: update.chat_id(),
            user: update.user_id(),
            thread: update.thread_id(),
            migration: update.chat_migration(),
        }
    }

    fn at(chat: Option<i64>, user: Option<i64>) -> Seen {
        Seen {
            chat,
            user,
            thread: None,
            migration: None,
        }
    }

    /// One realistic update of every kind, with what it must tell sessions.
    fn every_kind() -> Vec<(&'static str, String, Seen)> {
        let message = format!(
            r#"{{"message_id":4711,"from":{ADA},"chat":{GROUP},"date":1772789124,"text":"/pizza@multisession_pizza_bot","entities":[{{"offset":0,"length":29,"type":"bot_command"}}]}}"#
        );
        let edited = format!(
            r#"{{"message_id":4712,"from":{ADA},"chat":{GROUP},"date":1772789586,"edit_date":1772790151,"text":"12:45 works"}}"#
        );
        let post = format!(
            r#"{{"message_id":88,"sender_chat":{CHANNEL},"chat":{CHANNEL},"date":1772789000,"author_signature":"Ada","text":"Pizza Friday is on!"}}"#
        );
        let business = format!(
            r#"{{"business_connection_id":"BQADBAADjwIAAq8","message_id":12,"from":{ADA},"chat":{PRIVATE},"date":1772789300,"text":"is the shop open?"}}"#
        );
        let member = |old: &str, new: &str| {
            format!(
                r#"{{"chat":{GROUP},"from":{ADA},"date":1772788824,"old_chat_member":{{"user":{BOT},"status":"{old}"}},"new_chat_member":{{"user":{BOT},"status":"{new}","until_date":0}}}}"#
            )
        };
        vec![
            (
                "message",
                format!(r#"{{"update_id":584120351,"message":{message}}}"#),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "edited_message",
                format!(r#"{{"update_id":584120369,"edited_message":{edited}}}"#),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "channel_post",
                format!(r#"{{"update_id":584120400,"channel_post":{post}}}"#),
                at(Some(-1002233445566), None),
            ),
            (
                "edited_channel_post",
                format!(r#"{{"update_id":584120401,"edited_channel_post":{post}}}"#),
                at(Some(-1002233445566), None),
            ),
            (
                "business_connection",
                format!(
                    r#"{{"update_id":584120402,"business_connection":{{"id":"BQADBAADjwIAAq8","user":{ADA},"user_chat_id":318274650,"date":1772789200,"rights":{{"can_reply":true}},"is_enabled":true}}}}"#
                ),
                at(Some(ADA_ID), Some(ADA_ID)),
            ),
            (
                "business_message",
                format!(r#"{{"update_id":584120403,"business_message":{business}}}"#),
                at(Some(ADA_ID), Some(ADA_ID)),
            ),
            (
                "edited_business_message",
                format!(r#"{{"update_id":584120404,"edited_business_message":{business}}}"#),
                at(Some(ADA_ID), Some(ADA_ID)),
            ),
            (
                "deleted_business_messages",
                format!(
                    r#"{{"update_id":584120405,"deleted_business_messages":{{"business_connection_id":"BQADBAADjwIAAq8","chat":{PRIVATE},"message_ids":[12,13]}}}}"#
                ),
                at(Some(ADA_ID), None),
            ),
            (
                "message_reaction",
                format!(
                    r#"{{"update_id":584120352,"message_reaction":{{"chat":{GROUP},"message_id":4710,"user":{ADA},"date":1772789248,"old_reaction":[],"new_reaction":[{{"type":"emoji","emoji":"👍"}}]}}}}"#
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "message_reaction",
                format!(
                    r#"{{"update_id":584120353,"message_reaction":{{"chat":{GROUP},"message_id":4710,"actor_chat":{GROUP},"date":1772789250,"old_reaction":[],"new_reaction":[{{"type":"emoji","emoji":"🔥"}}]}}}}"#
                ),
                at(Some(GROUP_ID), None),
            ),
            (
                "message_reaction_count",
                format!(
                    r#"{{"update_id":584120406,"message_reaction_count":{{"chat":{CHANNEL},"message_id":88,"date":1772789400,"reactions":[{{"type":{{"type":"emoji","emoji":"❤"}},"total_count":5}}]}}}}"#
                ),
                at(Some(-1002233445566), None),
            ),
            (
                "inline_query",
                format!(
                    r#"{{"update_id":584120380,"inline_query":{{"id":"3299104756512","from":{ADA},"chat_type":"sender","query":"pizza","offset":""}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "chosen_inline_result",
                format!(
                    r#"{{"update_id":584120382,"chosen_inline_result":{{"result_id":"pizza-1","from":{ADA},"query":"pizza","inline_message_id":"AgAAAHw3BQB6Xe4SOV0vdyaZ0kA"}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "callback_query",
                format!(
                    r#"{{"update_id":584120363,"callback_query":{{"id":"3197462018374650123","from":{ADA},"message":{{"message_id":4720,"from":{BOT},"chat":{GROUP},"date":1772789801,"text":"Choose a language:","reply_markup":{{"inline_keyboard":[[{{"text":"Deutsch","callback_data":"lang:de"}}]]}}}},"chat_instance":"-5182736450918273645","data":"lang:de"}}}}"#
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "callback_query",
                format!(
                    r#"{{"update_id":584120364,"callback_query":{{"id":"3197462018374650124","from":{ADA},"message":{{"message_id":4001,"chat":{GROUP},"date":0}},"chat_instance":"-5182736450918273645","data":"lang:en"}}}}"#
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "callback_query",
                format!(
                    r#"{{"update_id":584120383,"callback_query":{{"id":"1366912093847562011","from":{ADA},"inline_message_id":"AgAAAHw3BQB6Xe4SOV0vdyaZ0kA","chat_instance":"-7318290456123789456","data":"lang:en"}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "callback_query",
                format!(
                    r#"{{"update_id":584120409,"callback_query":{{"id":"3197462018374650125","from":{ADA},"message":{{"message_id":630,"message_thread_id":17,"from":{BOT},"chat":{FORUM},"date":1772792700,"is_topic_message":true,"text":"Choose a language:"}},"chat_instance":"-1029384756102938475","data":"lang:de"}}}}"#
                ),
                Seen {
                    thread: Some(17),
                    ..at(Some(-1005550001111), Some(ADA_ID))
                },
            ),
            (
                "shipping_query",
                format!(
                    r#"{{"update_id":584120410,"shipping_query":{{"id":"881723450912","from":{ADA},"invoice_payload":"order-77","shipping_address":{{"country_code":"DE","state":"","city":"Berlin","street_line1":"Pizzastr. 1","street_line2":"","post_code":"10115"}}}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "pre_checkout_query",
                format!(
                    r#"{{"update_id":584120411,"pre_checkout_query":{{"id":"881723450913","from":{ADA},"currency":"EUR","total_amount":1290,"invoice_payload":"order-77","order_info":{{"name":"Ada Lovelace"}}}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "purchased_paid_media",
                format!(
                    r#"{{"update_id":584120412,"purchased_paid_media":{{"from":{ADA},"paid_media_payload":"secret-recipe"}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "poll",
                r#"{"update_id":584120413,"poll":{"id":"5224788610133262337","question":"Which pizza?","options":[{"text":"Margherita","voter_count":3},{"text":"Diavola","voter_count":2}],"total_voter_count":5,"is_closed":true,"is_anonymous":false,"type":"regular","allows_multiple_answers":false}}"#
                    .to_owned(),
                at(None, None),
            ),
            (
                "poll_answer",
                format!(
                    r#"{{"update_id":584120393,"poll_answer":{{"poll_id":"5224788610133262337","user":{ADA},"option_ids":[1]}}}}"#
                ),
                at(None, Some(ADA_ID)),
            ),
            (
                "poll_answer",
                format!(
                    r#"{{"update_id":584120414,"poll_answer":{{"poll_id":"5224788610133262337","voter_chat":{GROUP},"option_ids":[0]}}}}"#
                ),
                at(Some(GROUP_ID), None),
            ),
            (
                "my_chat_member",
                format!(
                    r#"{{"update_id":584120344,"my_chat_member":{}}}"#,
                    member("left", "member")
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "chat_member",
                format!(
                    r#"{{"update_id":584120415,"chat_member":{}}}"#,
                    member("member", "restricted")
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "chat_join_request",
                format!(
                    r#"{{"update_id":584120384,"chat_join_request":{{"chat":{GROUP},"from":{ADA},"user_chat_id":318274650,"date":1772791259,"bio":"Teigmeister","invite_link":{{"invite_link":"https://t.me/+AbCdEfGh12345678","creator":{BOT},"creates_join_request":true,"is_primary":false,"is_revoked":false}}}}}}"#
                ),
                at(Some(GROUP_ID), Some(ADA_ID)),
            ),
            (
                "chat_boost",
                format!(
                    r#"{{"update_id":584120416,"chat_boost":{{"chat":{CHANNEL},"boost":{{"boost_id":"QmFzZTY0Ym9vc3Q","add_date":1772790000,"expiration_date":1775468400,"source":{{"source":"premium","user":{ADA}}}}}}}}}"#
                ),
                at(Some(-1002233445566), Some(ADA_ID)),
            ),
            (
                "removed_chat_boost",
                format!(
                    r#"{{"update_id":584120417,"removed_chat_boost":{{"chat":{CHANNEL},"boost_id":"QmFzZTY0Ym9vc3Q","remove_date":1772800000,"source":{{"source":"premium","user":{ADA}}}}}}}"#
                ),
                at(Some(-1002233445566), Some(ADA_ID)),
            ),
        ]
    }

    #[test]
    fn every_kind_tells_chat_user_topic_and_migration() {
        let cases = every_kind();
        for (name, json, expected) in &cases {
            let update = parse(json);
            assert_eq!(update.kind.name(), *name, "{json}");
            assert!(!matches!(update.kind, UpdateKind::Unknown { .. }), "{json}");
            assert_eq!(seen(&update), *expected, "{json}");
        }
        // Every kind of the Bot API is covered.
        let names: std::collections::BTreeSet<_> = cases.iter().map(|(name, ..)| *name).collect();
        assert_eq!(names.len(), 23, "{names:?}");
    }

    #[test]
    fn every_kind_round_trips() {
        for (_, json, _) in every_kind() {
            let update = parse(&json);
            let written = serde_json::to_string(&update).unwrap();
            assert_eq!(parse(&written), update, "{written}");
            // The Bot API's shape: `update_id` and one field named after the kind.
            let value: Value = serde_json::from_str(&written).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 2, "{written}");
            assert_eq!(object["update_id"], update.update_id);
            assert!(object[update.kind.name()].is_object(), "{written}");
        }
    }

    #[test]
    fn helpers() {
        let cases = every_kind();
        let message = parse(&cases[0].1);
        assert_eq!(message.text(), Some("/pizza@multisession_pizza_bot"));
        assert_eq!(message.chat().map(|c| c.kind), Some(ChatType::Supergroup));
        assert_eq!(message.from().map(|u| u.first_name.as_str()), Some("Ada"));
        let m = message.message().unwrap();
        assert_eq!(m.message_id, 4711);
        let entities = m.entities.as_deref().unwrap();
        assert_eq!(entities[0].kind, "bot_command");
        assert_eq!((entities[0].offset, entities[0].length), (0, 29));
        assert_eq!(message.callback_data(), None);

        let post = parse(&cases[2].1);
        assert_eq!(post.from(), None);
        assert_eq!(
            post.message().unwrap().sender_chat.as_ref().unwrap().kind,
            ChatType::Channel
        );

        let button = cases
            .iter()
            .find(|(name, ..)| *name == "callback_query")
            .map(|(_, json, _)| parse(json))
            .unwrap();
        assert_eq!(button.callback_data(), Some("lang:de"));
        assert_eq!(button.text(), None);
        assert_eq!(
            button.message().unwrap().text.as_deref(),
            Some("Choose a language:")
        );

        let inline = parse(&cases.iter().find(|(n, ..)| *n == "inline_query").unwrap().1);
        assert_eq!(
            (inline.message(), inline.chat(), inline.text()),
            (None, None, None)
        );
        assert!(matches!(&inline.kind, UpdateKind::InlineQuery(q) if q.query == "pizza"));

        let business = parse(
            &cases
                .iter()
                .find(|(n, ..)| *n == "business_connection")
                .unwrap()
                .1,
        );
        assert_eq!(business.chat(), None);
        assert_eq!(business.chat_id(), Some(ADA_ID));

        let photo = parse(&format!(
            r#"{{"update_id":1,"message":{{"message_id":9,"from":{ADA},"chat":{GROUP},"date":1772794037,"photo":[{{"file_id":"AgACAgQ","file_unique_id":"AQAD","width":90,"height":67}}],"caption":"the damage"}}}}"#
        ));
        assert_eq!(photo.text(), Some("the damage"));
    }

    #[test]
    fn forum_topics() {
        let topic = parse(&format!(
            r#"{{"update_id":584120406,"message":{{"message_id":620,"message_thread_id":17,"from":{ADA},"chat":{FORUM},"date":1772792676,"is_topic_message":true,"reply_to_message":{{"message_id":17,"message_thread_id":17,"from":{ADA},"chat":{FORUM},"date":1772100000,"forum_topic_created":{{"name":"Orders","icon_color":16766590}},"is_topic_message":true}},"text":"/pizza","entities":[{{"offset":0,"length":6,"type":"bot_command"}}]}}}}"#
        ));
        assert_eq!(topic.thread_id(), Some(17));
        assert_eq!(topic.chat().and_then(|c| c.is_forum), Some(true));
        let reply = topic
            .message()
            .unwrap()
            .reply_to_message
            .as_deref()
            .unwrap();
        assert_eq!((reply.message_id, reply.topic()), (17, Some(17)));

        // The General topic of a forum: no thread.
        let general = parse(&format!(
            r#"{{"update_id":2,"message":{{"message_id":625,"from":{ADA},"chat":{FORUM},"date":1772792791,"text":"hi"}}}}"#
        ));
        assert_eq!(general.thread_id(), None);

        // A reply in an ordinary supergroup has a thread id but is not in a topic.
        let reply = parse(&format!(
            r#"{{"update_id":3,"message":{{"message_id":642,"message_thread_id":641,"from":{ADA},"chat":{GROUP},"date":1772788976,"reply_to_message":{{"message_id":641,"from":{ADA},"chat":{GROUP},"date":1772788919,"text":"who's in for lunch?"}},"text":"me!"}}}}"#
        ));
        assert_eq!(reply.thread_id(), None);
        assert_eq!(reply.message().unwrap().message_thread_id, Some(641));
    }

    #[test]
    fn group_to_supergroup_migration() {
        let old_group = r#"{"id":-4123456,"title":"Office Lunch","type":"group"}"#;
        let new_group = r#"{"id":-1009876543210,"title":"Office Lunch","type":"supergroup"}"#;
        let expected = Some(ChatMigration {
            from: -4123456,
            to: -1009876543210,
        });

        let to = parse(&format!(
            r#"{{"update_id":584120397,"message":{{"message_id":522,"from":{ADA},"chat":{old_group},"date":1772792230,"migrate_to_chat_id":-1009876543210}}}}"#
        ));
        assert_eq!(
            seen(&to),
            Seen {
                migration: expected,
                ..at(Some(-4123456), Some(ADA_ID))
            }
        );
        assert_eq!(to.text(), None);

        let from = parse(&format!(
            r#"{{"update_id":584120398,"message":{{"message_id":1,"from":{ADA},"chat":{new_group},"date":1772792272,"migrate_from_chat_id":-4123456}}}}"#
        ));
        assert_eq!(
            seen(&from),
            Seen {
                migration: expected,
                ..at(Some(-1009876543210), Some(ADA_ID))
            }
        );

        // Only a new message announces a migration.
        let edited = parse(&format!(
            r#"{{"update_id":584120399,"edited_message":{{"message_id":1,"from":{ADA},"chat":{new_group},"date":1772792272,"migrate_from_chat_id":-4123456}}}}"#
        ));
        assert_eq!(edited.chat_migration(), None);
    }

    #[test]
    fn service_messages() {
        let joined = parse(&format!(
            r#"{{"update_id":584120345,"message":{{"message_id":640,"from":{ADA},"chat":{GROUP},"date":1772788894,"new_chat_participant":{BOT},"new_chat_member":{BOT},"new_chat_members":[{BOT}]}}}}"#
        ));
        let m = joined.message().unwrap();
        assert_eq!(m.new_chat_members.as_ref().map(|u| u[0].is_bot), Some(true));
        assert_eq!(joined.text(), None);
        let left = parse(&format!(
            r#"{{"update_id":584120346,"message":{{"message_id":641,"from":{ADA},"chat":{GROUP},"date":1772788895,"left_chat_participant":{ADA},"left_chat_member":{ADA}}}}}"#
        ));
        assert_eq!(
            left.message()
                .unwrap()
                .left_chat_member
                .as_ref()
                .map(|u| u.id),
            Some(ADA_ID)
        );
    }

    #[test]
    fn unknown_kinds_parse_and_round_trip() {
        let update = parse(
            r#"{"update_id":584120999,"guest_message":{"message_id":1,"chat":{"id":-1001,"type":"supergroup"},"date":1772800000}}"#,
        );
        let UpdateKind::Unknown { field, value } = &update.kind else {
            panic!("{update:?}");
        };
        assert_eq!(field, "guest_message");
        assert_eq!(value["message_id"], 1);
        assert_eq!(update.kind.name(), "guest_message");
        assert_eq!(seen(&update), at(None, None));
        assert_eq!((update.message(), update.text()), (None, None));
        let written = serde_json::to_string(&update).unwrap();
        assert_eq!(parse(&written), update);

        // Even a kind that is not an object.
        let scalar = parse(r#"{"update_id":1,"future_flag":true}"#);
        assert!(
            matches!(&scalar.kind, UpdateKind::Unknown { field, value } if field == "future_flag" && *value == Value::Bool(true))
        );

        // An unknown chat type.
        let odd = parse(
            r#"{"update_id":2,"message":{"message_id":1,"chat":{"id":-5,"type":"guild"},"date":1}}"#,
        );
        assert_eq!(odd.chat().map(|c| c.kind), Some(ChatType::Unknown));
        assert_eq!(odd.chat_id(), Some(-5));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let update = parse(
            r#"{"update_id": 7,
                "message": {"message_id": 3, "date": 1772788359, "text": "/start",
                    "from": {"id": 42, "is_bot": false, "first_name": "Bo", "is_premium": true},
                    "chat": {"id": 42, "type": "private", "first_name": "Bo", "accent_color_id": 3},
                    "link_preview_options": {"is_disabled": true}, "some_future_field": [1, 2, 3]},
                "another_future_top_level_field": {"x": 1}}"#,
        );
        assert!(matches!(update.kind, UpdateKind::Message(_)));
        assert_eq!(seen(&update), at(Some(42), Some(42)));
        assert_eq!(update.text(), Some("/start"));
        // Ignored fields are dropped when written back.
        let written = serde_json::to_string(&update).unwrap();
        assert!(!written.contains("future"), "{written}");
        assert_eq!(parse(&written), update);
    }

    #[test]
    fn what_is_not_an_update_is_an_error() {
        for bad in [
            "",
            "not json",
            "{",
            "[]",
            "null",
            "42",
            r#""update""#,
            "{}",
            r#"{"message":{"message_id":1,"chat":{"id":1,"type":"private"},"date":1}}"#,
            r#"{"update_id":"1","message":{"message_id":1,"chat":{"id":1,"type":"private"},"date":1}}"#,
            r#"{"update_id":1}"#,
            r#"{"update_id":1,"message":{"chat":{"id":1,"type":"private"},"date":1}}"#,
            r#"{"update_id":1,"message":{"message_id":1,"chat":5,"date":1}}"#,
            r#"{"update_id":1,"callback_query":{"id":"c","chat_instance":"1"}}"#,
            r#"{"update_id":1,"inline_query":null}"#,
        ] {
            let result = serde_json::from_str::<Update>(bad);
            assert!(result.is_err(), "{bad} parsed as {result:?}");
        }
        let error = serde_json::from_str::<Update>(r#"{"update_id":1,"message":{"message_id":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("message") && error.contains("chat"),
            "{error}"
        );
    }

    #[test]
    fn the_sample_updates_parse() {
        let sample = include_str!("../../examples/data/updates.jsonl");
        let updates: Vec<Update> = sample
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(parse)
            .collect();
        assert!(updates.len() >= 75, "only {} updates", updates.len());
        assert!(
            updates.windows(2).all(|w| w[0].update_id < w[1].update_id),
            "update ids increase"
        );
        for update in &updates {
            assert!(
                !matches!(update.kind, UpdateKind::Unknown { .. }),
                "{update:?}"
            );
            let back = parse(&serde_json::to_string(update).unwrap());
            assert_eq!(&back, update);
        }
        for kind in [
            "message",
            "edited_message",
            "callback_query",
            "inline_query",
            "chosen_inline_result",
            "my_chat_member",
            "chat_join_request",
            "poll_answer",
            "message_reaction",
        ] {
            assert!(updates.iter().any(|u| u.kind.name() == kind), "no {kind}");
        }
        let migrations: Vec<_> = updates.iter().filter_map(|u| u.chat_migration()).collect();
        assert_eq!(
            migrations,
            [ChatMigration {
                from: -4123456,
                to: -1009876543210
            }; 2]
        );
        assert!(updates.iter().any(|u| u.thread_id().is_some()));
        assert!(
            updates
                .iter()
                .any(|u| u.chat_id().is_none() && u.user_id().is_some())
        );
        let commands = updates
            .iter()
            .filter(|u| matches!(&u.kind, UpdateKind::Message(_)))
            .filter_map(Update::text)
            .filter(|text| text.starts_with('/'))
            .count();
        assert!(commands >= 30, "only {commands} commands");
    }
}
