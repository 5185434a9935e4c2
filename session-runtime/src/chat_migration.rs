//! Chat migration (rule S21): a group that Telegram turns into a supergroup keeps its
//! per-chat sessions.

use std::sync::Arc;

use crate::{
    cell::ErasedCell,
    context::{ChatContext, ChatMigration},
    error::{Error, SaveError, SaveFailure, WriteOutcome},
    session::{MultiSession, Sessions},
    stats::Counters,
    store::{Expect, Outcome, Write},
    update::{UpdateCtx, generated_update_id},
};

impl<S: MultiSession> Sessions<S> {
    /// Moves the per-chat fragments of a group that Telegram turned into a supergroup from
    /// the old chat id to the new one (rule S21). [`run`](Sessions::run) and
    /// [`load`](Sessions::load) call it by themselves for an update whose context reports
    /// a [`ChatMigration`]; with [`open`](Sessions::open), call it yourself.
    ///
    /// A fragment is per chat when its key function gives a key from the chat id alone
    /// that changes with the chat (like `keys::chat` and `keys::chat_thread`); per-user
    /// and per-user-in-chat fragments are left alone. For each such fragment:
    /// - nothing stored under the old chat: nothing to do (so it is idempotent: Telegram
    ///   sends the migration twice, once in each chat);
    /// - something stored under the new chat already: it is kept, and the old value is
    ///   left where it is, so nothing is overwritten or lost;
    /// - otherwise the value moves, in one batch: written under the new chat only if that
    ///   is still empty, and removed from the old chat only if unchanged since read.
    ///
    /// Returns the fragments that moved.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, ChatMigration, MultiSession, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     pizzas: u32, // per chat: moves
    ///     #[session(key = keys::user_in_chat)]
    ///     quiz: Option<u32>, // per user in a chat: stays
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let (group, supergroup) = (-100, -100_123);
    /// sessions.run(&ChatContext::new(group).with_user(7), async |s| {
    ///     *s.pizzas().await? = 3;
    ///     s.quiz().set(Some(42)).await?;
    ///     Ok::<_, multisession::Error>(())
    /// }).await?;
    ///
    /// let migration = ChatMigration { from: group, to: supergroup };
    /// assert_eq!(sessions.migrate_chat(migration).await?, ["pizzas"]);
    /// assert!(sessions.migrate_chat(migration).await?.is_empty()); // the second notice: nothing to do
    ///
    /// let data = sessions.load(&ChatContext::new(supergroup).with_user(7)).await?;
    /// assert_eq!((data.pizzas, data.quiz), (3, None));
    /// # Ok(()) }
    /// ```
    ///
    /// With [`ChatContext::with_migration`] (or Telegram's `migrate_to_chat_id` in an
    /// update), [`run`](Sessions::run) does the same by itself.
    pub async fn migrate_chat(&self, migration: ChatMigration) -> Result<Vec<&'static str>, Error> {
        let old = self.open_raw(&ChatContext::new(migration.from));
        let new = self.open_raw(&ChatContext::new(migration.to));
        let mut moved = Vec::new();
        for (from, to) in old.cells().into_iter().zip(new.cells()) {
            let (Some(from_key), Some(to_key)) = (from.storage_key(), to.storage_key()) else {
                continue;
            };
            if from_key == to_key {
                continue;
            }
            if self.move_value(from, from_key, to_key).await? {
                moved.push(from.fragment());
            }
        }
        Ok(moved)
    }

    async fn move_value(
        &self,
        cell: &dyn ErasedCell,
        from_key: &str,
        to_key: &str,
    ) -> Result<bool, Error> {
        let store = cell.store().as_dyn();
        let update = Arc::new(UpdateCtx::new(
            self.inner.config.clone(),
            self.inner.counters.clone(),
            ChatContext::default(),
            generated_update_id(),
            self.inner.affinity.clone(),
        ));
        let load_error = |key: &str, source| Error::Load {
            fragment: cell.fragment(),
            key: key.to_owned(),
            store: store.name().to_owned(),
            source,
        };
        // Both keys of this fragment, in the global order, so no update races the move.
        let (first, second) = if from_key < to_key {
            (from_key, to_key)
        } else {
            (to_key, from_key)
        };
        let _first = update
            .hold(cell.key_locks(), cell.fragment(), first)
            .await?;
        let _second = update
            .hold(cell.key_locks(), cell.fragment(), second)
            .await?;
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
        let counters = &self.inner.counters;
        Counters::add(&counters.reads, 2);
        if applied {
            Counters::add(&counters.writes, 1);
            Counters::add(&counters.deletes, 1);
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
                update_id: update.update_id,
            });
        }
        // A conflict means another process got there first: nothing of the batch applied.
        Ok(applied)
    }
}
