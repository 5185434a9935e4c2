//! Admin tools: list, count and remove a fragment's stored sessions (rule S20).

use crate::{
    cell::{BoundCells, ErasedCell},
    context::ChatContext,
    envelope,
    error::{Error, SaveError, SaveFailure, WriteOutcome},
    session::{MultiSession, Sessions},
};

/// One page of a fragment's stored sessions, from [`Sessions::list`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// # use multisession::{ChatContext, MultiSession, stores::MemoryStore};
/// # #[derive(MultiSession)]
/// # struct Bot {
/// #     count: u32,
/// # }
/// # let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// # for chat in [1, 2, 3] {
/// #     sessions.run(&ChatContext::new(chat), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// # }
/// // `sessions`: a `Sessions<Bot>` whose `count` fragment is stored for chats 1, 2 and 3.
/// use multisession::SessionPage;
///
/// let page: SessionPage = sessions.list("count", None, 10).await?;
/// assert_eq!(page.entries.len(), 3);
/// assert!(page.cursor.is_none()); // everything fit in one page
/// for (chat, bytes) in &page.entries {
///     // The codec's bytes: JSON by default.
///     let count: u32 = serde_json::from_slice(bytes).unwrap();
///     println!("chat {chat}: {count}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionPage {
    /// The session keys (without the fragment's namespace) and their stored values (the
    /// codec's bytes, without the updates the runtime records beside them).
    pub entries: Vec<(String, Vec<u8>)>,
    /// Pass it to the next [`Sessions::list`] call; `None` when the listing is complete.
    pub cursor: Option<String>,
}

impl<S: MultiSession> Sessions<S> {
    fn admin_cell<'a>(
        cells: &[&'a dyn ErasedCell],
        fragment: &str,
    ) -> Result<&'a dyn ErasedCell, Error> {
        cells
            .iter()
            .copied()
            .find(|cell| cell.fragment() == fragment)
            .ok_or_else(|| Error::UnknownFragment {
                fragment: fragment.to_owned(),
                known: S::FRAGMENTS,
            })
    }

    fn list_error(cell: &dyn ErasedCell, source: crate::store::StoreError) -> Error {
        Error::Load {
            fragment: cell.fragment(),
            key: format!("{}*", cell.namespace()),
            store: cell.store().as_dyn().name().to_owned(),
            source,
        }
    }

    /// A page of about `limit` stored sessions of `fragment` (a field name), in no
    /// particular order; pass the returned cursor to get the next page.
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
    /// for chat in 1..=3 {
    ///     sessions.run(&ChatContext::new(chat), |s| async move { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// }
    /// let mut keys = Vec::new();
    /// let mut cursor = None;
    /// loop {
    ///     let page = sessions.list("count", cursor.as_deref(), 2).await?;
    ///     keys.extend(page.entries.into_iter().map(|(key, _bytes)| key));
    ///     match page.cursor { Some(next) => cursor = Some(next), None => break }
    /// }
    /// keys.sort();
    /// assert_eq!(keys, ["1", "2", "3"]);
    /// assert_eq!(sessions.count("count").await?, 3);
    /// assert!(sessions.remove("count", "2").await?);
    /// assert_eq!(sessions.clear("count").await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn list(
        &self,
        fragment: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, Error> {
        let session = self.open_raw(&ChatContext::default());
        let bound = session.bound();
        let cells = bound.cells();
        let cell = Self::admin_cell(&cells, fragment)?;
        let prefix = cell.namespace();
        let prefix = prefix.as_ref();
        let page = session
            .cx()
            .timed(cell.store().as_dyn().list(prefix, cursor, limit))
            .await
            .map_err(|e| Self::list_error(cell, e))?;
        let entries = page
            .entries
            .into_iter()
            .filter_map(|(key, record)| {
                key.strip_prefix(prefix)
                    .map(|k| (k.to_owned(), envelope::payload(&record.value).to_vec()))
            })
            .collect();
        Ok(SessionPage {
            entries,
            cursor: page.cursor,
        })
    }

    /// How many sessions of `fragment` are stored (pages through them all).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// # use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    /// # #[derive(MultiSession)]
    /// # struct Bot {
    /// #     count: u32,
    /// # }
    /// # let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// # for chat in [1, 2, 3] {
    /// #     sessions.run(&ChatContext::new(chat), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// # }
    /// // `sessions`: a `Sessions<Bot>` whose `count` fragment is stored for chats 1, 2 and 3.
    /// assert_eq!(sessions.count("count").await?, 3);
    ///
    /// // A name that is not a field of `Bot` is an error, not zero.
    /// let error = sessions.count("cuont").await.unwrap_err();
    /// assert!(matches!(error, multisession::Error::UnknownFragment { .. }));
    /// # Ok(()) }
    /// ```
    pub async fn count(&self, fragment: &str) -> Result<u64, Error> {
        let session = self.open_raw(&ChatContext::default());
        let bound = session.bound();
        let cells = bound.cells();
        let cell = Self::admin_cell(&cells, fragment)?;
        let namespace = cell.namespace();
        session
            .cx()
            .timed(cell.store().as_dyn().count(&namespace))
            .await
            .map_err(|e| Self::list_error(cell, e))
    }

    /// Removes the stored session `session_key` (without namespace) of `fragment`;
    /// `false` if there was none. Waits for updates of that key in this process.
    ///
    /// The session key is what the fragment's key function gives (the chat id for
    /// `keys::chat`), as [`list`](Sessions::list) shows it:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// # use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    /// # #[derive(MultiSession)]
    /// # struct Bot {
    /// #     count: u32,
    /// # }
    /// # let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// # for chat in [1, 2, 3] {
    /// #     sessions.run(&ChatContext::new(chat), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// # }
    /// // `sessions`: a `Sessions<Bot>` whose `count` fragment is stored for chats 1, 2 and 3.
    /// assert!(sessions.remove("count", "2").await?);
    /// assert!(!sessions.remove("count", "2").await?); // already gone
    /// assert_eq!(sessions.count("count").await?, 2);
    ///
    /// // The next update of chat 2 starts from the initial value.
    /// let count = sessions.run(&ChatContext::new(2), async |s| Ok::<_, multisession::Error>(*s.count().await?)).await?;
    /// assert_eq!(count, 0);
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, fragment: &str, session_key: &str) -> Result<bool, Error> {
        let session = self.open_raw(&ChatContext::default());
        let bound = session.bound();
        let cells = bound.cells();
        let cell = Self::admin_cell(&cells, fragment)?;
        let key = format!("{}{session_key}", cell.namespace());
        let update = session.cx();
        let _held = update.hold(cell.key_locks(), cell.fragment(), &key).await?;
        let store = cell.store().as_dyn();
        let existed = update
            .timed(store.read(&key))
            .await
            .map_err(|source| Error::Load {
                fragment: cell.fragment(),
                key: key.clone(),
                store: store.name().to_owned(),
                source,
            })?
            .is_some();
        if existed {
            update
                .timed(store.delete(&key))
                .await
                .map_err(|error| Error::Save {
                    failures: vec![SaveFailure {
                        fragment: cell.fragment(),
                        key: key.clone(),
                        store: store.name().to_owned(),
                        outcome: if error.outcome_unknown() {
                            WriteOutcome::Unknown
                        } else {
                            WriteOutcome::NotWritten
                        },
                        error: SaveError::Store(error),
                    }],
                    written: Vec::new(),
                    update_id: update.update_id(),
                })?;
        }
        Ok(existed)
    }

    /// Removes every stored session of `fragment`; returns how many. Other fragments are
    /// left alone.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// # use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    /// # #[derive(MultiSession)]
    /// # struct Bot {
    /// #     count: u32,
    /// # }
    /// # let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// # for chat in [1, 2, 3] {
    /// #     sessions.run(&ChatContext::new(chat), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// # }
    /// // `sessions`: a `Sessions<Bot>` whose `count` fragment is stored for chats 1, 2 and 3.
    /// assert_eq!(sessions.clear("count").await?, 3);
    /// assert_eq!(sessions.count("count").await?, 0);
    /// assert_eq!(sessions.clear("count").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self, fragment: &str) -> Result<u64, Error> {
        let mut removed = 0u64;
        loop {
            // Removing while listing could skip keys; list from the start each round.
            let page = self.list(fragment, None, 500).await?;
            if page.entries.is_empty() {
                return Ok(removed);
            }
            for (key, _) in page.entries {
                if self.remove(fragment, &key).await? {
                    removed += 1;
                }
            }
        }
    }
}
