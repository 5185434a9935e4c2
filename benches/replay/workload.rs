//! The generated update stream and the least it needs from a store.

use multisession::{ChatContext, SessionContext, stores::Counts};

/// One update: who, where, and what they typed.
#[derive(Clone, Copy)]
pub struct Update {
    pub ctx: ChatContext,
    pub text: &'static str,
}

/// A small deterministic generator (splitmix64), so every run replays the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CHATTER: [&str; 4] = [
    "lol",
    "who is coming tonight?",
    "see you at 8",
    "that pizza place on the corner is great",
];

/// `updates` updates over `chats` group chats and `users` users: 70% chatter the bot
/// ignores, 20% `/pizza`, 10% `/start` (fixed seed).
pub fn workload(updates: usize, chats: u64, users: u64) -> Vec<Update> {
    let mut rng = Rng(0x6d75_6c74_6973_6573);
    (0..updates)
        .map(|_| {
            let chat = -1_000_000 - rng.below(chats) as i64;
            let user = 1 + rng.below(users) as i64;
            let roll = rng.below(100);
            let text = if roll < 70 {
                CHATTER[rng.below(CHATTER.len() as u64) as usize]
            } else if roll < 90 {
                "/pizza"
            } else {
                "/start"
            };
            Update {
                ctx: ChatContext::new(chat).with_user(user),
                text,
            }
        })
        .collect()
}

/// The kinds of update in the stream, for the per-kind rows.
pub const KINDS: [&str; 3] = ["chatter", "/pizza", "/start"];

/// The updates of one kind (`chatter`, `/pizza` or `/start`), in stream order.
pub fn of_kind(updates: &[Update], kind: &str) -> Vec<Update> {
    updates
        .iter()
        .filter(|u| (kind == "chatter" && !u.text.starts_with('/')) || u.text == kind)
        .copied()
        .collect()
}

/// The stream split over `workers` by chat: each chat's updates go to one worker, in
/// stream order (what per-chat ordering needs).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub fn partition(updates: &[Update], workers: usize) -> Vec<Vec<Update>> {
    let mut shares = vec![Vec::new(); workers];
    for update in updates {
        let chat = update.ctx.chat_id().unwrap_or(0).unsigned_abs() as usize;
        shares[chat % workers].push(*update);
    }
    shares
}

/// The least the workload needs: `/pizza` reads and writes one fragment, `/start` reads
/// one, chatter nothing.
pub fn minimum(updates: &[Update]) -> Counts {
    let pizzas = updates.iter().filter(|u| u.text == "/pizza").count() as u64;
    let starts = updates.iter().filter(|u| u.text == "/start").count() as u64;
    Counts {
        reads: pizzas + starts,
        read_calls: pizzas + starts,
        writes: pizzas,
        deletes: 0,
        write_calls: pizzas,
        conflicts: 0,
    }
}
