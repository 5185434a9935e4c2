//! teloxide's `Update` as a `SessionContext` (feature `teloxide`) on the same Bot API JSON
//! as `telegram_model.rs` (fixtures in `tests/data/`): both give the same chat and user.
//! teloxide's `Update` is parsed from a string (`serde_json::from_value` misparses it).
#![cfg(feature = "teloxide")]

use std::path::PathBuf;

use multisession::{SessionContext, keys, telegram};
use serde_json::Value;
use teloxide::types::{Update, UpdateKind};

fn read(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read_to_string(full).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn teloxide_update(path: &str) -> Update {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn our_update(path: &str) -> telegram::Update {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
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

fn ids(ctx: &dyn SessionContext) -> (Option<i64>, Option<i64>) {
    (ctx.chat_id(), ctx.user_id())
}

#[test]
fn teloxide_and_our_model_agree_on_every_fixture() {
    for (path, chat, user) in expected_keys() {
        let update = teloxide_update(&path);
        assert!(
            !matches!(update.kind, UpdateKind::Error(_)),
            "teloxide did not parse {path}: {:?}",
            update.kind
        );
        assert_eq!(ids(&update), (chat, user), "teloxide, {path}");
        assert_eq!(ids(&our_update(&path)), (chat, user), "ours, {path}");
        assert_eq!(
            keys::user(&update),
            keys::user(&our_update(&path)),
            "{path}"
        );
        assert_eq!(
            keys::user_in_chat(&update),
            keys::user_in_chat(&our_update(&path)),
            "{path}"
        );
        // A message's own `SessionContext` agrees with its update's.
        if let UpdateKind::Message(message) = &update.kind {
            assert_eq!(ids(message), (chat, user), "teloxide message, {path}");
        }
    }
}

/// Where teloxide's `Update::chat()` / `from()` differ from the rule, the integration
/// overrides them: a poll answer cast by a chat is in that chat (teloxide: no chat), and a
/// message on behalf of a chat has no user (teloxide: the placeholder).
#[test]
fn the_integration_overrides_teloxide_where_it_differs() {
    let vote = teloxide_update("on_behalf_of_chat/poll_answer_voter_chat.json");
    assert!(vote.chat().is_none());
    assert!(vote.from().is_none(), "teloxide drops @Channel_Bot itself");
    assert_eq!(ids(&vote), (Some(-1002233445566), None));

    for (path, placeholder) in [
        ("on_behalf_of_chat/anonymous_admin_message.json", 1087968824),
        ("on_behalf_of_chat/send_as_channel_message.json", 136817688),
        ("on_behalf_of_chat/automatic_forward.json", 777000),
        (
            "on_behalf_of_chat/anonymous_admin_chat_member.json",
            1087968824,
        ),
    ] {
        let update = teloxide_update(path);
        assert_eq!(update.from().map(|u| u.id.0), Some(placeholder), "{path}");
        assert_eq!(update.user_id(), None, "{path}");
        assert_eq!(update.chat_id(), Some(-1001234567890), "{path}");
    }

    // The migration announced by an anonymous admin's service message is still seen.
    let migration = teloxide_update("on_behalf_of_chat/anonymous_admin_migration.json");
    assert_eq!(
        migration.chat_migration().map(|m| (m.from, m.to)),
        Some((-4123456, -1009876543210))
    );
    assert_eq!(migration.user_id(), None);
}

/// teloxide already keys boosts as we do: the boosted chat (`chat()`), the source's user
/// (`from()`); our model now says the same.
#[test]
fn boosts_agree_with_teloxides_chat_and_from() {
    for path in [
        "boosts/chat_boost_premium.json",
        "boosts/chat_boost_gift_code.json",
        "boosts/chat_boost_giveaway_winner.json",
        "boosts/chat_boost_giveaway_unclaimed.json",
        "boosts/removed_chat_boost_premium.json",
        "boosts/removed_chat_boost_giveaway_stars.json",
    ] {
        let update = teloxide_update(path);
        let teloxide = (
            update.chat().map(|c| c.id.0),
            update.from().map(|u| u.id.0 as i64),
        );
        assert_eq!(ids(&update), teloxide, "{path}");
        assert_eq!(ids(&our_update(path)), teloxide, "{path}");
    }
}

/// The webhook guide's sample updates lack fields teloxide requires (`is_bot`, a chat's
/// `type`, `chat_instance`): teloxide 0.17 reads all 13 as `UpdateKind::Error` (no chat,
/// no user) without panicking, where our model reads them whole. Should a later teloxide
/// read them, it must give the same keys as our model.
#[test]
fn the_webhook_guides_samples_through_teloxide() {
    let mut names: Vec<_> = std::fs::read_dir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/webhook_guide"),
    )
    .unwrap()
    .map(|entry| entry.unwrap().file_name().into_string().unwrap())
    .collect();
    names.sort();
    assert_eq!(names.len(), 13);
    for name in names {
        let path = format!("webhook_guide/{name}");
        let ours = our_update(&path);
        assert_eq!(ours.user_id(), Some(1111111), "{path}");
        match serde_json::from_str::<Update>(&read(&path)) {
            Ok(update) if !matches!(update.kind, UpdateKind::Error(_)) => {
                assert_eq!(ids(&update), ids(&ours), "{path}");
            }
            Ok(update) => assert_eq!(ids(&update), (None, None), "{path}"),
            Err(error) => assert!(!error.to_string().is_empty(), "{path}"),
        }
    }
}
