//! Chat migration (rule S21): a group that Telegram turns into a supergroup keeps its
//! per-chat sessions.

use crate::{
    cell::{BoundCells, ErasedCell},
    context::{ChatContext, ChatMigration},
    error::{Error, SaveError, SaveFailure, WriteOutcome},
    lock::key_hash,
    session::{MultiSession, Sessions},
    stats::Counter,
    store::{Expect, Outcome, Write},
    update::{UpdateCtx, UpdateRef},
};

/// A user id no real update has, to see where a key function puts the user's id.
const PROBE_USER: i64 = 7_390_264_815_503_117;

impl<S: MultiSession> Sessions<S> {
    /// Moves the sessions of a group that Telegram turned into a supergroup from the old
    /// chat id to the new one (rule S21). [`run`](Sessions::run) and
    /// [`load`](Sessions::load) call it by themselves for an update whose context reports
    /// a [`ChatMigration`]; with [`open`](Sessions::open), call it yourself.
    ///
    /// Two kinds of fragments move:
    /// - per chat: the key function gives a key from the chat id alone that changes with
    ///   the chat (like `keys::chat` and `keys::chat_thread`): its one value moves;
    /// - per user in the chat: the key needs the chat and the user and changes with both
    ///   (like `keys::user_in_chat`): the old chat's value of every user moves (found by
    ///   listing the fragment's keys of the old chat; a store that cannot list keeps them
    ///   where they are, with a warning).
    ///
    /// Per-user fragments are left alone. For each value:
    /// - nothing stored under the old chat: nothing to do (so it is idempotent: Telegram
    ///   sends the migration twice, once in each chat);
    /// - something stored under the new chat already: it is kept, and the old value is
    ///   left where it is, so nothing is overwritten or lost;
    /// - otherwise the value moves, in one batch: written under the new chat only if that
    ///   is still empty, and removed from the old chat only if unchanged since read.
    ///
    /// Returns the fragments of which at least one value moved.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, ChatMigration, MultiSession, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = keys::user_in_chat)]
    ///     score: u32,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let group = ChatContext::new(-100).with_user(7);
    /// sessions.run(&group, async |s| { *s.count().await? = 3; s.score().set(9).await }).await?;
    /// let moved = sessions.migrate_chat(ChatMigration { from: -100, to: -100_123 }).await?;
    /// assert_eq!(moved, ["count", "score"]);
    /// let supergroup = sessions.load(&ChatContext::new(-100_123).with_user(7)).await?;
    /// assert_eq!((supergroup.count, supergroup.score), (3, 9));
    /// # Ok(()) }
    /// ```
    ///
    /// With [`ChatContext::with_migration`] (or Telegram's `migrate_to_chat_id` in an
    /// update), [`run`](Sessions::run) does the same by itself.
    pub async fn migrate_chat(&self, migration: ChatMigration) -> Result<Vec<&'static str>, Error> {
        self.migrate_chat_of(None, migration).await
    }

    /// [`migrate_chat`](Sessions::migrate_chat) for an update of bot `bot` (its namespace).
    pub(crate) async fn migrate_chat_of(
        &self,
        bot: Option<i64>,
        migration: ChatMigration,
    ) -> Result<Vec<&'static str>, Error> {
        let ctx = |chat: i64, user: Option<i64>| ChatContext {
            chat: Some(chat),
            user,
            bot,
            ..ChatContext::default()
        };
        let old = self.open_raw(&ctx(migration.from, None));
        let new = self.open_raw(&ctx(migration.to, None));
        let old_probe = self.open_raw(&ctx(migration.from, Some(PROBE_USER)));
        let new_probe = self.open_raw(&ctx(migration.to, Some(PROBE_USER)));
        let mut moved = Vec::new();
        let (old, new) = (old.bound(), new.bound());
        let (old_probe, new_probe) = (old_probe.bound(), new_probe.bound());
        let cells = old
            .cells()
            .into_iter()
            .zip(new.cells())
            .zip(old_probe.cells().into_iter().zip(new_probe.cells()));
        for ((from, to), (from_probe, to_probe)) in cells {
            if let (Some(from_key), Some(to_key)) = (from.storage_key(), to.storage_key()) {
                // Per chat.
                if from_key != to_key && self.move_value(from, from_key, to_key).await? {
                    moved.push(from.fragment());
                }
                continue;
            }
            let (Some(from_key), Some(to_key)) = (from_probe.storage_key(), to_probe.storage_key())
            else {
                continue;
            };
            if from_key == to_key {
                continue; // per user
            }
            // Per user in the chat: every user's value of the old chat.
            if self
                .move_users(bot, migration, from_probe, from_key)
                .await?
            {
                moved.push(from.fragment());
            }
        }
        Ok(moved)
    }

    /// Moves every user's value of a per-user-in-chat fragment; `probe_key` is the old
    /// chat's key of [`PROBE_USER`], which shows where the user's id goes.
    async fn move_users(
        &self,
        bot: Option<i64>,
        migration: ChatMigration,
        probe: &dyn ErasedCell,
        probe_key: &str,
    ) -> Result<bool, Error> {
        let marker = PROBE_USER.to_string();
        let (Some((head, tail)), 1) = (
            probe_key.split_once(&marker),
            probe_key.matches(&marker).count(),
        ) else {
            return Ok(false); // the key does not show the user's id as it is
        };
        let store = probe.store().as_dyn();
        let key_of = |chat: i64, user: i64| {
            let ctx = ChatContext {
                chat: Some(chat),
                user: Some(user),
                bot,
                ..ChatContext::default()
            };
            let session = self.open_raw(&ctx);
            session
                .bound()
                .cells()
                .into_iter()
                .find(|cell| cell.index() == probe.index())
                .and_then(|cell| cell.storage_key().map(str::to_owned))
        };
        let mut moved = false;
        let mut cursor: Option<String> = None;
        loop {
            let page = match store.list(head, cursor.as_deref(), 500).await {
                Ok(page) => page,
                Err(crate::store::StoreError::Unsupported(_)) => {
                    tracing::warn!(
                        fragment = probe.fragment(),
                        store = store.name(),
                        "chat migration: the store cannot list keys, so per-user-in-chat values stay under the old chat"
                    );
                    return Ok(false);
                }
                Err(source) => {
                    return Err(Error::Load {
                        fragment: probe.fragment(),
                        key: format!("{head}*"),
                        store: store.name().to_owned(),
                        source,
                    });
                }
            };
            for (key, _) in &page.entries {
                let Some(user) = key
                    .strip_prefix(head)
                    .and_then(|rest| rest.strip_suffix(tail))
                    .and_then(|id| id.parse::<i64>().ok())
                else {
                    continue;
                };
                // Only a key the key function itself gives for (old chat, user).
                if key_of(migration.from, user).as_deref() != Some(key.as_str()) {
                    continue;
                }
                let Some(target) = key_of(migration.to, user) else {
                    continue;
                };
                moved |= self.move_value(probe, key, &target).await?;
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(moved),
            }
        }
    }

    pub(crate) async fn move_value(
        &self,
        cell: &dyn ErasedCell,
        from_key: &str,
        to_key: &str,
    ) -> Result<bool, Error> {
        let store = cell.store().as_dyn();
        let update = UpdateCtx::new(ChatContext::default(), None);
        let update = UpdateRef {
            update: &update,
            env: &self.inner.env,
            view: None,
        };
        let load_error = |key: &str, source| Error::Load {
            fragment: cell.fragment(),
            key: key.to_owned(),
            store: store.name().to_owned(),
            source,
        };
        // Both keys of this fragment, in the global order (by their locks), so no update
        // races the move. Two keys whose locks are one (equal hashes) take it once.
        let (first, second) = if key_hash(from_key) < key_hash(to_key) {
            (from_key, to_key)
        } else {
            (to_key, from_key)
        };
        let _first = update
            .hold(cell.key_locks(), cell.fragment(), first)
            .await?;
        let _second = if key_hash(first) == key_hash(second) {
            None
        } else {
            Some(
                update
                    .hold(cell.key_locks(), cell.fragment(), second)
                    .await?,
            )
        };
        let records = update
            .timed(store.read_many(&[from_key, to_key]))
            .await
            .map_err(|source| load_error(from_key, source))?;
        let (Some(Some(source)), Some(None)) = (records.first(), records.get(1)) else {
            return Ok(false);
        };
        let writes = [
            Write::Put {
                key: to_key.to_owned(),
                value: source.value.clone(),
                ttl: cell.ttl(),
                expect: Expect::Absent,
            },
            Write::Delete {
                key: from_key.to_owned(),
                expect: Expect::Revision(source.revision),
            },
        ];
        let results = match update.timed(async { Ok(store.apply(&writes).await) }).await {
            Ok(results) => results,
            Err(error) => writes.iter().map(|_| Err(error.replicate())).collect(),
        };
        let applied = results.iter().all(|r| matches!(r, Ok(Outcome::Applied)));
        let counters = &self.inner.env.counters;
        counters.add(Counter::Reads, 2);
        if applied {
            counters.add(Counter::Writes, 1);
            counters.add(Counter::Deletes, 1);
        }
        let failures: Vec<SaveFailure> = results
            .into_iter()
            .zip(&writes)
            .filter_map(|(result, write)| match result {
                Err(error) => Some(SaveFailure {
                    fragment: cell.fragment(),
                    key: write.key().to_owned(),
                    store: store.name().to_owned(),
                    outcome: if error.outcome_unknown() {
                        WriteOutcome::Unknown
                    } else {
                        WriteOutcome::NotWritten
                    },
                    error: SaveError::Store(error),
                }),
                Ok(_) => None,
            })
            .collect();
        if !failures.is_empty() {
            return Err(Error::Save {
                failures,
                written: Vec::new(),
                update_id: update.update_id(),
            });
        }
        // A conflict means another process got there first: nothing of the batch applied.
        Ok(applied)
    }
}
