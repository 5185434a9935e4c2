//! `multisession::telegram` on Bot API JSON (fixtures in `tests/data/`): who and where an
//! update is when a chat acts on its own behalf (placeholder users), boosts, the sample
//! updates of the Bot API's webhook guide, and malformed input (errors, never panics).
//! `telegram_teloxide.rs` checks teloxide's `Update` on the same fixtures.

use std::path::PathBuf;

use multisession::{
    Error, MultiSession, SessionContext, keys,
    stores::MemoryStore,
    telegram::{ChatType, Update, UpdateKind, User},
};
use serde_json::Value;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(data(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(path: &str) -> Update {
    let json = read(path);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every fixture file under `tests/data/{dir}`, sorted.
fn fixtures(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data(dir))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    names.sort();
    names
}

/// `tests/data/keys.json`: fixture → (chat id, user id).
fn expected_keys() -> Vec<(String, Option<i64>, Option<i64>)> {
    let keys: Value = serde_json::from_str(&read("keys.json")).unwrap();
    keys["fixtures"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, ids)| (path.clone(), ids["chat"].as_i64(), ids["user"].as_i64()))
        .collect()
}

#[test]
fn every_fixture_gives_its_keys_and_round_trips() {
    let expected = expected_keys();
    // keys.json names every fixture of these directories.
    let mut listed: Vec<_> = expected.iter().map(|(path, ..)| path.clone()).collect();
    listed.sort();
    let mut files = fixtures("boosts");
    files.extend(fixtures("on_behalf_of_chat"));
    files.sort();
    assert_eq!(listed, files);

    for (path, chat, user) in &expected {
        let update = parse(path);
        assert!(!matches!(update.kind, UpdateKind::Unknown { .. }), "{path}");
        assert_eq!(
            (update.chat_id(), update.user_id()),
            (*chat, *user),
            "{path}"
        );
        assert_eq!(update.from().map(|u| u.id), *user, "{path}");
        let written = serde_json::to_string(&update).unwrap();
        let back: Update = serde_json::from_str(&written).unwrap();
        assert_eq!(back, update, "{path}: {written}");
        assert_eq!((back.chat_id(), back.user_id()), (*chat, *user), "{path}");
    }
}

/// Bot API 6.8: "Added the field voter_chat to the class PollAnswer, to contain channel chat
/// voters in Polls. For backward compatibility, the field user in such objects will
/// contain the user 136817688 (@Channel_Bot)."
#[test]
fn a_poll_answer_of_a_chat_is_in_that_chat_and_has_no_user() {
    let update = parse("on_behalf_of_chat/poll_answer_voter_chat.json");
    let UpdateKind::PollAnswer(answer) = &update.kind else {
        panic!("{update:?}")
    };
    // What Telegram sent is kept...
    let placeholder = answer.user.as_ref().unwrap();
    assert_eq!(placeholder.id, User::CHANNEL_BOT);
    assert_eq!(placeholder.username.as_deref(), Some("Channel_Bot"));
    assert!(placeholder.is_placeholder());
    // ...but the voter is the channel, not @Channel_Bot.
    assert_eq!(answer.voter(), None);
    assert_eq!(update.from(), None);
    assert_eq!(update.user_id(), None);
    assert_eq!(update.chat().map(|c| c.kind), Some(ChatType::Channel));
    assert_eq!(update.chat_id(), Some(-1002233445566));
    assert_eq!(update.sender_chat().map(|c| c.id), Some(-1002233445566));
    assert_eq!(keys::user(&update), None);
    assert_eq!(keys::chat(&update).as_deref(), Some("-1002233445566"));

    // A user's vote is the user's, in no chat.
    let vote = parse("on_behalf_of_chat/poll_answer_user.json");
    assert_eq!((vote.chat_id(), vote.user_id()), (None, Some(1938475620)));
    assert_eq!(vote.sender_chat(), None);
}

/// Bot API 5.0: "For backward compatibility in non-channel chats, the field from in such
/// messages will contain the user 777000 for messages automatically forwarded to the
/// discussion group and the user 1087968824 (@GroupAnonymousBot) for messages from
/// anonymous group administrators"; posting as a channel gives 136817688 (@Channel_Bot).
#[test]
fn messages_on_behalf_of_a_chat_have_no_user() {
    for (path, placeholder, sender_chat) in [
        (
            "on_behalf_of_chat/anonymous_admin_message.json",
            User::GROUP_ANONYMOUS_BOT,
            -1001234567890,
        ),
        (
            "on_behalf_of_chat/send_as_channel_message.json",
            User::CHANNEL_BOT,
            -1002233445566,
        ),
        (
            "on_behalf_of_chat/automatic_forward.json",
            User::TELEGRAM,
            -1002233445566,
        ),
    ] {
        let update = parse(path);
        let message = update.message().unwrap();
        assert_eq!(
            message.from.as_ref().map(|u| u.id),
            Some(placeholder),
            "{path}"
        );
        assert_eq!(message.sender(), None, "{path}");
        assert_eq!(update.from(), None, "{path}");
        assert_eq!(update.user_id(), None, "{path}");
        assert_eq!(
            update.sender_chat().map(|c| c.id),
            Some(sender_chat),
            "{path}"
        );
        assert_eq!(update.chat_id(), Some(-1001234567890), "{path}");
        assert_eq!(keys::user(&update), None, "{path}");
        assert_eq!(keys::user_in_chat(&update), None, "{path}");
        assert_eq!(keys::chat(&update).as_deref(), Some("-1001234567890"));
    }

    // The text and the migration of such messages are still there.
    let command = parse("on_behalf_of_chat/anonymous_admin_message.json");
    assert_eq!(command.text(), Some("/pizza"));
    let migration = parse("on_behalf_of_chat/anonymous_admin_migration.json");
    assert_eq!(
        migration.chat_migration().map(|m| (m.from, m.to)),
        Some((-4123456, -1009876543210))
    );

    // A member change made by an anonymous admin has the placeholder as `from`.
    let banned = parse("on_behalf_of_chat/anonymous_admin_chat_member.json");
    let UpdateKind::ChatMember(change) = &banned.kind else {
        panic!("{banned:?}")
    };
    assert!(change.from.is_placeholder());
    assert_eq!(banned.user_id(), None);

    // A placeholder id is no user even without `sender_chat` (older servers, hand-made
    // JSON), and a real user in a group is one.
    for id in [User::TELEGRAM, User::GROUP_ANONYMOUS_BOT, User::CHANNEL_BOT] {
        let json = format!(
            r#"{{"update_id":1,"message":{{"message_id":1,"from":{{"id":{id},"is_bot":true,"first_name":"Group"}},"chat":{{"id":-1001234567890,"type":"supergroup"}},"date":1,"text":"hi"}}}}"#
        );
        let update: Update = serde_json::from_str(&json).unwrap();
        assert_eq!(update.user_id(), None, "{id}");
    }
    let ada = parse("on_behalf_of_chat/user_message.json");
    assert_eq!(ada.user_id(), Some(318274650));
    assert_eq!(ada.sender_chat(), None);
    assert!(!ada.from().unwrap().is_placeholder());
}

/// In a channel, `sender_chat` is the channel itself, and `from` (which the Bot API says
/// "may be empty for messages sent to channels") is the post's author when present.
#[test]
fn a_channel_post_is_by_its_author_if_any() {
    let post = r#"{"update_id":584120400,"channel_post":{"message_id":88,"sender_chat":{"id":-1002233445566,"title":"Pizza News","type":"channel"},"chat":{"id":-1002233445566,"title":"Pizza News","type":"channel"},"date":1772789000,"text":"Pizza Friday is on!"}}"#;
    let update: Update = serde_json::from_str(post).unwrap();
    assert_eq!(
        (update.chat_id(), update.user_id()),
        (Some(-1002233445566), None)
    );

    let signed = r#"{"update_id":584120401,"channel_post":{"message_id":89,"from":{"id":318274650,"is_bot":false,"first_name":"Ada"},"sender_chat":{"id":-1002233445566,"title":"Pizza News","type":"channel"},"chat":{"id":-1002233445566,"title":"Pizza News","type":"channel"},"date":1772789100,"author_signature":"Ada","text":"Margherita today"}}"#;
    let update: Update = serde_json::from_str(signed).unwrap();
    assert_eq!(
        (update.chat_id(), update.user_id()),
        (Some(-1002233445566), Some(318274650))
    );
}

/// Anonymous admins of two groups, and two channels posting in one group, do not share a
/// per-user session: they have none (rule S3), while per-chat fragments work.
#[tokio::test]
async fn chats_acting_never_share_one_users_session() {
    #[derive(MultiSession)]
    struct Bot {
        /// Per chat.
        commands: u32,
        /// Per user.
        #[session(key = keys::user)]
        lang: Option<String>,
    }

    let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    let in_other_group = read("on_behalf_of_chat/anonymous_admin_message.json")
        .replace("-1001234567890", "-1001111111111")
        .replace("Pizza Friday", "Pasta Monday");
    let updates: Vec<Update> = [
        read("on_behalf_of_chat/anonymous_admin_message.json"),
        in_other_group,
        read("on_behalf_of_chat/send_as_channel_message.json"),
        read("on_behalf_of_chat/automatic_forward.json"),
    ]
    .iter()
    .map(|json| serde_json::from_str(json).unwrap())
    .collect();
    for update in &updates {
        let lang = sessions
            .run(update, async |s| {
                *s.commands().await? += 1;
                Ok::<_, Error>(s.lang().await.err())
            })
            .await
            .unwrap();
        assert!(
            matches!(lang, Some(Error::NoKey { fragment: "lang" })),
            "{lang:?}"
        );
    }
    let group = &updates[0];
    let count = sessions
        .run(group, async |s| Ok::<_, Error>(*s.commands().await?))
        .await
        .unwrap();
    assert_eq!(count, 3, "three of the updates are in Pizza Friday");
}

/// Bot API `ChatBoostSource`: premium ("User that boosted the chat") and gift_code ("User
/// for which the gift code was created") have a user; giveaway has one only for a winner.
#[test]
fn boosts_are_in_the_boosted_chat_by_the_sources_user() {
    for (path, kind, user) in [
        ("boosts/chat_boost_premium.json", "premium", Some(318274650)),
        (
            "boosts/chat_boost_gift_code.json",
            "gift_code",
            Some(1938475620),
        ),
        (
            "boosts/chat_boost_giveaway_winner.json",
            "giveaway",
            Some(1938475620),
        ),
        (
            "boosts/chat_boost_giveaway_unclaimed.json",
            "giveaway",
            None,
        ),
    ] {
        let update = parse(path);
        let UpdateKind::ChatBoost(boosted) = &update.kind else {
            panic!("{update:?}")
        };
        assert_eq!(boosted.boost.source.kind, kind, "{path}");
        assert!(!boosted.boost.boost_id.is_empty());
        assert_eq!(update.user_id(), user, "{path}");
        assert_eq!(update.chat().map(|c| c.kind), Some(ChatType::Channel));
    }
    for (path, user) in [
        ("boosts/removed_chat_boost_premium.json", Some(318274650)),
        ("boosts/removed_chat_boost_giveaway_stars.json", None),
    ] {
        let update = parse(path);
        let UpdateKind::RemovedChatBoost(removed) = &update.kind else {
            panic!("{update:?}")
        };
        assert!(!removed.boost_id.is_empty());
        assert_eq!(update.user_id(), user, "{path}");
        assert_eq!(update.chat_id(), Some(-1002233445566));
    }
    // A newer source kind is kept as sent.
    let future = read("boosts/chat_boost_premium.json").replace("\"premium\"", "\"stars\"");
    let update: Update = serde_json::from_str(&future).unwrap();
    assert_eq!(update.user_id(), Some(318274650));
    // Telegram always sends the boost and its source: without them, an error.
    let bare = r#"{"update_id":1,"chat_boost":{"chat":{"id":-1002233445566,"type":"channel"}}}"#;
    assert!(serde_json::from_str::<Update>(bare).is_err());
}

/// The "Testing your bot with updates" samples of https://core.telegram.org/bots/webhooks,
/// copied verbatim: chats without `type`, users without `is_bot`, an inline query id sent as
/// a number, a callback query without `chat_instance`.
#[test]
fn the_webhook_guides_sample_updates_parse() {
    let samples = fixtures("webhook_guide");
    assert_eq!(samples.len(), 13);
    for path in &samples {
        let update = parse(path);
        assert_eq!(update.update_id, 10000, "{path}");
        assert!(!matches!(update.kind, UpdateKind::Unknown { .. }), "{path}");
        let from = update.from().unwrap_or_else(|| panic!("{path}"));
        assert_eq!((from.id, from.is_bot), (1111111, false), "{path}");
        let in_chat = update.message().is_some();
        assert_eq!(
            (update.chat_id(), update.user_id()),
            (in_chat.then_some(1111111), Some(1111111)),
            "{path}"
        );
        if let Some(chat) = update.chat() {
            assert_eq!(chat.kind, ChatType::Private, "{path}");
        }
        let written = serde_json::to_string(&update).unwrap();
        let back: Update = serde_json::from_str(&written).unwrap();
        assert_eq!(back, update, "{path}: {written}");
    }

    // The first one's chat has no `type`: a positive id is a private chat.
    let first = parse("webhook_guide/01_message_text_curl.json");
    assert_eq!(first.text(), Some("/start"));
    assert_eq!(first.chat().unwrap().kind, ChatType::Private);
    let negative = r#"{"update_id":1,"message":{"message_id":1,"date":1,"chat":{"id":-1001234567890,"title":"Pizza Friday"}}}"#;
    let negative: Update = serde_json::from_str(negative).unwrap();
    assert_eq!(negative.chat().unwrap().kind, ChatType::Unknown);

    let inline = parse("webhook_guide/11_inline_query.json");
    let UpdateKind::InlineQuery(query) = &inline.kind else {
        panic!("{inline:?}")
    };
    assert_eq!(
        (query.id.as_str(), query.query.as_str()),
        ("134567890097", "inline query")
    );

    let button = parse("webhook_guide/13_callback_query.json");
    let UpdateKind::CallbackQuery(query) = &button.kind else {
        panic!("{button:?}")
    };
    assert_eq!(query.chat_instance, "");
    assert_eq!(button.callback_data(), Some("Data from button callback"));
    assert_eq!(button.chat_id(), None);

    let reply = parse("webhook_guide/05_message_with_reply.json");
    let original = reply
        .message()
        .unwrap()
        .reply_to_message
        .as_deref()
        .unwrap();
    assert_eq!((original.message_id, original.from.as_ref()), (1334, None));
    let edited = parse("webhook_guide/06_edited_message.json");
    assert!(matches!(edited.kind, UpdateKind::EditedMessage(_)));
    assert_eq!(edited.text(), Some("Edited text"));
}

/// Every scalar of every fixture replaced by values of other types, every prefix of every
/// fixture, deep nesting: each gives an update or a `serde_json::Error`, never a panic.
#[test]
fn malformed_updates_are_errors_not_panics() {
    let mut all = fixtures("webhook_guide");
    all.extend(fixtures("on_behalf_of_chat"));
    all.extend(fixtures("boosts"));

    fn paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    at.push(key.clone());
                    paths(inner, at, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    at.push(i.to_string());
                    paths(inner, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    fn replace(value: &mut Value, path: &[String], with: Value) {
        let Some((first, rest)) = path.split_first() else {
            *value = with;
            return;
        };
        let inner = match value {
            Value::Object(map) => map.get_mut(first),
            Value::Array(items) => first.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        replace(inner.unwrap(), rest, with);
    }
    fn remove(value: &mut Value, path: &[String]) {
        let Some((last, parent)) = path.split_last() else {
            return;
        };
        let mut at = value;
        for key in parent {
            at = match at {
                Value::Object(map) => map.get_mut(key).unwrap(),
                Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        match at {
            Value::Object(map) => {
                map.remove(last);
            }
            Value::Array(items) => {
                items.remove(last.parse::<usize>().unwrap());
            }
            _ => unreachable!(),
        }
    }

    let others = [
        Value::Null,
        Value::Bool(true),
        Value::from(-1),
        Value::from(u64::MAX),
        Value::from(1.5),
        Value::from("x"),
        Value::Array(vec![]),
        Value::Object(Default::default()),
    ];
    let (mut parsed, mut rejected) = (0, 0);
    let mut count = |json: &str| match serde_json::from_str::<Update>(json) {
        Ok(update) => {
            // What parses also serializes and reads back.
            let written = serde_json::to_string(&update).unwrap();
            assert_eq!(serde_json::from_str::<Update>(&written).unwrap(), update);
            let _ = (update.chat_id(), update.user_id(), update.thread_id());
            let _ = (update.text(), update.chat_migration(), update.sender_chat());
            parsed += 1;
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            rejected += 1;
        }
    };
    for path in &all {
        let original: Value = serde_json::from_str(&read(path)).unwrap();
        let mut every = Vec::new();
        paths(&original, &mut Vec::new(), &mut every);
        for at in &every {
            for other in &others {
                let mut changed = original.clone();
                replace(&mut changed, at, other.clone());
                count(&changed.to_string());
            }
            if !at.is_empty() {
                let mut without = original.clone();
                remove(&mut without, at);
                count(&without.to_string());
            }
        }
        let bytes = read(path).trim_end().as_bytes().to_vec();
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            assert!(
                serde_json::from_slice::<Update>(prefix).is_err(),
                "{path}[..{end}]"
            );
        }
    }
    assert!(
        parsed > 100 && rejected > 1000,
        "{parsed} parsed, {rejected} rejected"
    );

    // Replies nested deeper than serde_json's recursion limit: an error, not a stack
    // overflow.
    let nested = |depth: usize| {
        let open =
            r#"{"message_id":1,"date":1,"chat":{"id":1,"type":"private"},"reply_to_message":"#;
        let innermost = r#"{"message_id":1,"date":1,"chat":{"id":1,"type":"private"}}"#;
        format!(
            r#"{{"update_id":1,"message":{}{innermost}{}}}"#,
            open.repeat(depth),
            "}".repeat(depth)
        )
    };
    let update: Update = serde_json::from_str(&nested(20)).unwrap();
    assert_eq!(update.chat_id(), Some(1));
    assert!(serde_json::from_str::<Update>(&nested(5000)).is_err());
}
