//! Strict mode (rule S11): every fragment with a key loaded before the handler, saved
//! after it.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use futures_util::future::join_all;

use crate::{
    cell::{BoundCells, ErasedCell},
    context::SessionContext,
    error::Error,
    session::{MultiSession, Session, Sessions},
    stats::Counter,
};

impl<S: MultiSession> Sessions<S> {
    /// Strict mode (rule S11): loads every fragment that has a key for `ctx` before you
    /// touch anything, concurrently across stores and in one round trip per store. Change
    /// the returned value, then [`save`](Loaded::save) it.
    ///
    /// A fragment without a key for this update (a per-chat fragment on an inline query)
    /// is skipped entirely (rule S24): it holds its initial value, nothing is read for it,
    /// and whatever it holds at `save` is neither written nor an error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// // An inline query has no chat: `count` is skipped, `lang` is loaded.
    /// let mut data = sessions.load(&ChatContext::user_only(7)).await?;
    /// data.lang = "de".into();
    /// data.save().await?;
    /// assert_eq!(sessions.load(&ChatContext::new(1).with_user(7)).await?.lang, "de");
    /// # Ok(()) }
    /// ```
    pub async fn load<C: SessionContext + ?Sized>(&self, ctx: &C) -> Result<Loaded<S>, Error> {
        self.inner.env.counters.add(Counter::Updates, 1);
        if let Some(migration) = ctx.chat_migration() {
            self.migrate_chat_of(ctx.bot_id(), migration).await?;
        }
        let session = self.open_raw(&ctx);
        let all: Vec<usize> = (0..S::FRAGMENTS.len()).collect();
        let loaded = match session.hold_in_order(&all).await {
            Ok(()) => session.load_all().await,
            Err(error) => Err(error),
        };
        if let Err(error) = loaded {
            self.inner.env.counters.add(Counter::Errors, 1);
            return Err(error);
        }
        let value = S::__take(&session.inner);
        Ok(Loaded { value, session })
    }
}

impl<S: MultiSession> Session<S> {
    /// Strict mode: reads every fragment with a key, one batch per store, all stores at once.
    pub(crate) async fn load_all(&self) -> Result<(), Error> {
        let bound = self.bound();
        let mut groups: Vec<(usize, Vec<&dyn ErasedCell>)> = Vec::new();
        for cell in bound.cells() {
            if cell.storage_key().is_some() {
                let instance = cell.store().as_dyn().instance();
                match groups.iter_mut().find(|(id, _)| *id == instance) {
                    Some((_, cells)) => cells.push(cell),
                    None => groups.push((instance, vec![cell])),
                }
            }
        }
        let update = self.cx();
        let reads = groups.into_iter().map(|(_, cells)| async move {
            let keys: Vec<&str> = cells.iter().filter_map(|c| c.storage_key()).collect();
            update.env.counters.add(Counter::Reads, keys.len() as u64);
            let store = cells[0].store().clone();
            let records = update.timed(store.as_dyn().read_many(&keys)).await;
            (cells, records)
        });
        for (cells, records) in join_all(reads).await {
            let records = match records {
                Ok(records) if records.len() == cells.len() => records,
                Ok(records) => {
                    let cell = cells[0];
                    return Err(Error::Load {
                        fragment: cell.fragment(),
                        key: cell.storage_key().unwrap_or_default().to_owned(),
                        store: cell.store().as_dyn().name().to_owned(),
                        source: crate::store::StoreError::Corrupt(format!(
                            "read_many returned {} records for {} keys",
                            records.len(),
                            cells.len()
                        )),
                    });
                }
                Err(source) => {
                    let cell = cells[0];
                    return Err(Error::Load {
                        fragment: cell.fragment(),
                        key: cells
                            .iter()
                            .filter_map(|c| c.storage_key())
                            .collect::<Vec<_>>()
                            .join(", "),
                        store: cell.store().as_dyn().name().to_owned(),
                        source,
                    });
                }
            };
            for (cell, record) in cells.into_iter().zip(records) {
                cell.fill(record)?;
            }
        }
        Ok(())
    }
}

/// A session loaded in strict mode: every fragment's value, ready to change. Derefs to
/// the struct. [`save`](Loaded::save) writes what changed; dropping it discards.
///
/// Like a lazy [`Session`], it holds its keys (in this process) until it is saved or
/// dropped: an update of the same chat or user waits meanwhile, so do not run one from
/// the task that holds it.
pub struct Loaded<S: MultiSession> {
    value: S,
    session: Session<S>,
}

impl<S: MultiSession> Loaded<S> {
    /// Writes the fragments whose values changed (rule S12); an unchanged one (equal to
    /// what was loaded, rule S22) is not written. Errors as [`Session::commit`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let mut data = sessions.load(&ChatContext::new(1).with_user(7)).await?;
    /// data.count += 1; // `lang` is not changed: not written
    /// data.save().await?;
    /// assert_eq!(sessions.stats().writes, 1);
    /// # Ok(()) }
    /// ```
    pub async fn save(self) -> Result<(), Error> {
        let Loaded { value, session } = self;
        value.__put(&session.inner);
        session.commit().await
    }

    /// Deletes every fragment that has a stored value (none for a fragment with no key
    /// for this update or nothing stored), whatever the loaded values now hold: strict
    /// mode's delete-all. Errors as [`Session::commit`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let ctx = ChatContext::new(1).with_user(7);
    /// let mut data = sessions.load(&ctx).await?;
    /// data.count = 3;
    /// data.save().await?;
    /// sessions.load(&ctx).await?.delete_all().await?;
    /// assert_eq!(sessions.stats().deletes, 1, "only count was stored");
    /// assert_eq!(sessions.load(&ctx).await?.count, 0);
    /// # Ok(()) }
    /// ```
    pub async fn delete_all(self) -> Result<(), Error> {
        let Loaded { value, session } = self;
        drop(value);
        for cell in session.bound().cells() {
            cell.mark_deleted();
        }
        session.commit().await
    }

    /// The loaded values, leaving the session behind (nothing will be saved).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = multisession::keys::user)]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let data = sessions.load(&ChatContext::new(1).with_user(7)).await?;
    /// let Bot { count, lang } = data.into_inner(); // nothing will be saved
    /// assert_eq!((count, lang.as_str()), (0, ""));
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> S {
        self.value
    }
}

impl<S: MultiSession> Deref for Loaded<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.value
    }
}

impl<S: MultiSession> DerefMut for Loaded<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.value
    }
}

impl<S: MultiSession + fmt::Debug> fmt::Debug for Loaded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}
