//! Several bots on one store: moving the sessions a bot stored without a bot namespace
//! (the first release, or before [`Config::bot`](crate::Config::bot) was set) into its
//! namespace.

use crate::{
    cell::BoundCells,
    context::ChatContext,
    error::Error,
    session::{MultiSession, Sessions},
};

impl<S: MultiSession> Sessions<S> {
    /// Moves every session stored without a bot namespace (keys `"{prefix}{key}"`, as the
    /// first release wrote them) into the namespace of [`Config::bot`](crate::Config::bot)
    /// (`"{bot}/{prefix}{key}"`), fragment by fragment; returns how many values moved.
    ///
    /// Run it once, from the bot that owns the old sessions, when it starts using a bot
    /// id (before other bots write to the store without one). Each value moves as a chat
    /// migration does: written under the bot's key only if that is still empty, removed
    /// from the old key only if unchanged since read, so it is idempotent, overwrites
    /// nothing, and can run while the bot serves updates. Does nothing without a bot id
    /// (or with [`share_between_bots`](crate::Config::share_between_bots)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, Config, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let store = MemoryStore::new();
    /// // What the first release stored: no bot namespace.
    /// let before = Bot::builder().default_store(store.clone()).build();
    /// before.run(&ChatContext::new(1), async |s| { *s.count().await? = 5; Ok::<_, multisession::Error>(()) }).await?;
    ///
    /// let sessions = Bot::builder().default_store(store).config(Config::new().bot(1001)).build();
    /// assert_eq!(sessions.adopt_into_bot().await?, 1);
    /// assert_eq!(sessions.load(&ChatContext::new(1)).await?.count, 5);
    /// assert_eq!(sessions.adopt_into_bot().await?, 0, "idempotent");
    /// # Ok(()) }
    /// ```
    pub async fn adopt_into_bot(&self) -> Result<u64, Error> {
        let config = self.config();
        let Some(bot) = config.bot_of(None) else {
            return Ok(0);
        };
        let session = self.open_raw(&ChatContext::default());
        let mut moved = 0u64;
        let bound = session.bound();
        for cell in bound.cells() {
            let prefix = cell.prefix();
            if prefix.is_empty() {
                // Every key of the store would match: nothing tells this fragment's apart.
                tracing::warn!(
                    fragment = cell.fragment(),
                    "adopt_into_bot: a fragment with an empty prefix is left where it is"
                );
                continue;
            }
            let store = cell.store().as_dyn();
            // Pages follow the key order, so moving the keys of a page (out of this
            // prefix) skips none of the next.
            let mut cursor: Option<String> = None;
            loop {
                let page = session
                    .cx()
                    .timed(store.list(prefix, cursor.as_deref(), 500))
                    .await
                    .map_err(|source| Error::Load {
                        fragment: cell.fragment(),
                        key: format!("{prefix}*"),
                        store: store.name().to_owned(),
                        source,
                    })?;
                for (key, _) in page.entries {
                    if self.move_value(cell, &key, &format!("{bot}/{key}")).await? {
                        moved += 1;
                    }
                }
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(moved)
    }
}
