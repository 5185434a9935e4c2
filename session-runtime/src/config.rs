//! The runtime options of a [`Sessions`](crate::Sessions) and the policies they choose.

use std::time::Duration;

use crate::envelope::DEFAULT_REMEMBERED;

/// What to do when the handler returns an error (rule S13).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Config, MultiSession, OnHandlerError, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// let ctx = ChatContext::new(1);
/// for (policy, stored) in [(OnHandlerError::Discard, 0), (OnHandlerError::Commit, 1)] {
///     let sessions = Bot::builder()
///         .default_store(MemoryStore::new())
///         .config(Config::new().on_handler_error(policy))
///         .build();
///     let result = sessions
///         .run(&ctx, async |s| {
///             *s.count().await? += 1;
///             Err::<(), BoxError>("the Bot API is down".into())
///         })
///         .await;
///     // The handler's error comes back either way; the policy decides what was kept.
///     assert_eq!(result.unwrap_err().to_string(), "the Bot API is down");
///     assert_eq!(sessions.load(&ctx).await?.count, stored);
/// }
/// assert_eq!(OnHandlerError::default(), OnHandlerError::Discard);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnHandlerError {
    /// Write nothing (grammY's rule). The default.
    #[default]
    Discard,
    /// Commit the changes made before the error (Telegraf's rule).
    Commit,
}

/// What to do when stored bytes do not decode as the fragment's type (rule S15).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Config, Error, MultiSession, OnDecodeError, store::Store, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// // An older program stored a string for chat 1.
/// store.write("count:1", br#""not a number""#, None).await.unwrap();
/// let ctx = ChatContext::new(1);
/// let strict = Bot::builder().default_store(store.clone()).build();
/// let read = strict.run(&ctx, async |s| Ok::<_, Error>(*s.count().await?)).await;
/// assert!(matches!(read, Err(Error::Decode { fragment: "count", .. })));
///
/// let lenient = Bot::builder()
///     .default_store(store.clone())
///     .config(Config::new().on_decode_error(OnDecodeError::Reset))
///     .build();
/// let count = lenient.run(&ctx, async |s| Ok::<_, Error>(*s.count().await?)).await?;
/// assert_eq!(count, 0, "the initial value");
/// // The commit replaced the stored bytes: the strict sessions read them again.
/// assert_eq!(strict.load(&ctx).await?.count, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDecodeError {
    /// Return [`Error::Decode`](crate::Error::Decode) from the accessor; the stored value
    /// stays as it is. The default.
    #[default]
    Fail,
    /// Log a warning (a `tracing` event), hand the handler the initial value, and replace
    /// the stored bytes with it at commit. Values stored by a newer program version
    /// ([`Error::TooNew`](crate::Error::TooNew)) are never reset.
    Reset,
}

/// What [`Sessions::run`](crate::Sessions::run) does when a commit did not complete: another
/// process changed a fragment between read and write (rule S17), or a store failed after
/// other fragments of the update were written, or did not answer in time (rule S26).
///
/// A re-run reads every fragment afresh and runs the handler again. Fragments that the
/// update already changed are not written again (rule S25), so a re-run completes a
/// partial commit without applying anything twice. The handler's own side effects are
/// repeated: keep them idempotent, or do them after `run` returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Config, Error, MultiSession, OnConflict, store::Store, stores::MemoryStore};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// let ctx = ChatContext::new(1);
/// for (policy, expected) in [(OnConflict::Retry { attempts: 3 }, Ok(11)), (OnConflict::Fail, Err(1))] {
///     let sessions = Bot::builder()
///         .default_store(store.clone())
///         .config(Config::new().on_conflict(policy))
///         .build();
///     let runs = AtomicU32::new(0);
///     let result = sessions
///         .run(&ctx, async |s| {
///             let mut count = s.count().await?;
///             if runs.fetch_add(1, Ordering::Relaxed) == 0 {
///                 // Another process stores 10 between this read and the commit.
///                 store.write("count:1", b"10", None).await.unwrap();
///             }
///             *count += 1;
///             Ok::<_, Error>(*count)
///         })
///         .await;
///     match (result, expected) {
///         // Re-run on a fresh read: 10 + 1, not a lost update.
///         (Ok(count), Ok(want)) => assert_eq!(count, want),
///         (Err(Error::Conflict { attempts, .. }), Err(want)) => assert_eq!(attempts, want),
///         (other, _) => panic!("unexpected: {other:?}"),
///     }
///     assert_eq!(runs.into_inner(), if policy == OnConflict::Fail { 1 } else { 2 });
/// }
/// assert_eq!(OnConflict::default(), OnConflict::RetryFor { budget: std::time::Duration::from_secs(20) });
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnConflict {
    /// Re-run, with a jittered growing pause, until the update commits or `budget` has
    /// passed since its first run ended without completing (the re-runs get the whole
    /// budget, however long that first run took). The default, with 20 s.
    RetryFor {
        /// The time after which the last error is returned.
        budget: Duration,
    },
    /// Re-run up to `attempts` runs in all (the first included).
    Retry {
        /// Runs in all, the first included.
        attempts: u32,
    },
    /// Return the error at once, for handlers that cannot be re-run. A partial commit is
    /// then reported as [`Error::Save`](crate::Error::Save) with what was written; re-run
    /// the same update (same update id) to complete it.
    Fail,
}

impl Default for OnConflict {
    fn default() -> Self {
        OnConflict::RetryFor {
            budget: Duration::from_secs(20),
        }
    }
}

impl OnConflict {
    /// Whether run number `runs + 1` may start, `elapsed` after the first incomplete one.
    pub(crate) fn allows(self, runs: u32, elapsed: Duration) -> bool {
        match self {
            OnConflict::RetryFor { budget } => elapsed < budget,
            OnConflict::Retry { attempts } => runs < attempts,
            OnConflict::Fail => false,
        }
    }
}

/// Runtime options of a [`Sessions`](crate::Sessions).
///
/// ```
/// use multisession::{Config, OnConflict, OnHandlerError};
/// use std::time::Duration;
///
/// let config = Config::new()
///     .on_conflict(OnConflict::Retry { attempts: 3 })
///     .on_handler_error(OnHandlerError::Commit)
///     .op_timeout(Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) on_conflict: OnConflict,
    pub(crate) on_handler_error: OnHandlerError,
    pub(crate) op_timeout: Option<Duration>,
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) contention_attempts: u32,
    pub(crate) on_decode_error: OnDecodeError,
    pub(crate) redact_keys: bool,
    pub(crate) remember_updates: usize,
    pub(crate) bot: Option<i64>,
    pub(crate) share_between_bots: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            on_conflict: OnConflict::default(),
            on_handler_error: OnHandlerError::default(),
            op_timeout: Some(Duration::from_secs(5)),
            lock_timeout: Some(Duration::from_secs(30)),
            contention_attempts: 64,
            on_decode_error: OnDecodeError::default(),
            redact_keys: false,
            remember_updates: DEFAULT_REMEMBERED,
            bot: None,
            share_between_bots: false,
        }
    }
}

impl Config {
    /// The defaults: re-run incomplete commits for up to 20 s, discard on handler error,
    /// 5 s per store operation, 30 s of waiting for a key another update holds, 32
    /// remembered updates per stored value.
    ///
    /// ```
    /// use multisession::Config;
    /// let config = Config::new(); // the same as `Config::default()`
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do when a commit did not complete (a conflict, a partial or unknown write).
    ///
    /// ```
    /// use multisession::{Config, OnConflict};
    /// use std::time::Duration;
    ///
    /// // Re-run for up to 5 s (the default is 20 s)...
    /// let patient = Config::new().on_conflict(OnConflict::RetryFor { budget: Duration::from_secs(5) });
    /// // ...or never, for a handler whose side effects cannot be repeated.
    /// let once = Config::new().on_conflict(OnConflict::Fail);
    /// ```
    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// What to do when the handler fails.
    ///
    /// ```
    /// use multisession::{Config, OnHandlerError};
    /// // Keep what the handler changed before it failed (Telegraf's rule).
    /// let config = Config::new().on_handler_error(OnHandlerError::Commit);
    /// ```
    pub fn on_handler_error(mut self, policy: OnHandlerError) -> Self {
        self.on_handler_error = policy;
        self
    }

    /// Leave session keys (chat and user ids) out of `tracing` events. Error values still
    /// name the key: they go to your code, not to a log.
    ///
    /// ```
    /// use multisession::Config;
    /// // Chat and user ids stay out of logs.
    /// let config = Config::new().redact_keys(true);
    /// ```
    pub fn redact_keys(mut self, redact: bool) -> Self {
        self.redact_keys = redact;
        self
    }

    pub(crate) fn shown_key<'a>(&self, key: &'a str) -> &'a str {
        if self.redact_keys { "<redacted>" } else { key }
    }

    /// What to do when stored bytes do not decode.
    ///
    /// ```
    /// use multisession::{Config, OnDecodeError};
    /// // Values that no longer decode start over (with a warning) instead of failing.
    /// let config = Config::new().on_decode_error(OnDecodeError::Reset);
    /// ```
    pub fn on_decode_error(mut self, policy: OnDecodeError) -> Self {
        self.on_decode_error = policy;
        self
    }

    /// The time limit of one store operation; `None` waits forever.
    ///
    /// What a timeout means: the runtime stopped waiting, not that the store stopped
    /// working. A timed-out read changed nothing. A timed-out write may still land (a
    /// request already on the wire, a SQLite call already running on the blocking pool,
    /// a PostgreSQL server that was paused and resumes): its outcome is reported as
    /// *unknown* ([`Stored::Unknown`](crate::Stored::Unknown)), never as "not written".
    /// Re-running the same update is safe either way: a fragment whose write did land
    /// lists the update and is not written again (rule S25).
    ///
    /// ```
    /// use multisession::Config;
    /// use std::time::Duration;
    /// let config = Config::new().op_timeout(Some(Duration::from_secs(2)));
    /// ```
    pub fn op_timeout(mut self, limit: Option<Duration>) -> Self {
        self.op_timeout = limit;
        self
    }

    /// How long an update waits for a key that another update of this process holds
    /// (the other update is running its handler). Past it, the access fails with
    /// [`Error::Busy`](crate::Error::Busy). `None` waits as long as it takes.
    ///
    /// ```
    /// use multisession::Config;
    /// use std::time::Duration;
    /// // A handler of this bot may hold a chat for a minute (it calls a slow API).
    /// let config = Config::new().lock_timeout(Some(Duration::from_secs(60)));
    /// ```
    pub fn lock_timeout(mut self, limit: Option<Duration>) -> Self {
        self.lock_timeout = limit;
        self
    }

    /// How many times [`Sessions::run`](crate::Sessions::run) re-runs an update that would
    /// have closed a cycle of updates waiting for each other's keys in this process before
    /// it returns [`Error::Contended`](crate::Error::Contended). Default 64.
    ///
    /// ```
    /// use multisession::Config;
    /// let config = Config::new().contention_attempts(8);
    /// ```
    pub fn contention_attempts(mut self, attempts: u32) -> Self {
        self.contention_attempts = attempts.max(1);
        self
    }

    /// How many of the most recent updates that changed a stored value the value
    /// remembers (1 to 255; default 32). An update delivered again is recognised, and
    /// changes nothing, as long as fewer than this many other updates changed the same
    /// value in between (rule S25). Each id costs 1–10 bytes per stored value; Telegram's
    /// consecutive update ids cost one or two.
    ///
    /// ```
    /// use multisession::Config;
    /// // A busy group where a redelivery may come after 100 other changes of one value.
    /// let config = Config::new().remember_updates(128);
    /// ```
    pub fn remember_updates(mut self, count: usize) -> Self {
        self.remember_updates = count.clamp(1, 255);
        self
    }

    /// The bot these sessions belong to (its numeric id, the part of its token before
    /// the `:`): every key lives in that bot's namespace, `"{bot}/"` before the fragment's
    /// prefix, so several bots on one store never see each other's sessions. An update
    /// whose context names its bot ([`SessionContext::bot_id`](crate::SessionContext::bot_id),
    /// as teloxide's `with_session` does) uses that one; admin calls (`list`, `count`,
    /// `remove`, `clear`) use this one. Without either, keys have no bot namespace (as in
    /// the first release; [`Sessions::adopt_into_bot`](crate::Sessions::adopt_into_bot)
    /// moves such sessions into a bot's namespace).
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
    /// let pizza = Bot::builder().default_store(store.clone()).config(Config::new().bot(1001)).build();
    /// let quiz = Bot::builder().default_store(store.clone()).config(Config::new().bot(2002)).build();
    /// pizza.run(&ChatContext::new(1), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
    /// assert_eq!(pizza.load(&ChatContext::new(1)).await?.count, 1);
    /// assert_eq!(quiz.load(&ChatContext::new(1)).await?.count, 0, "another bot's session");
    /// # Ok(()) }
    /// ```
    pub fn bot(mut self, bot: i64) -> Self {
        self.bot = Some(bot);
        self
    }

    /// Bots share sessions: bot ids (from [`Config::bot`] or the update's context) are
    /// ignored and keys have no bot namespace. For several bots that serve the same users
    /// with the same state on purpose (a bot and its beta).
    ///
    /// ```
    /// use multisession::Config;
    /// let config = Config::new().share_between_bots(true);
    /// ```
    pub fn share_between_bots(mut self, share: bool) -> Self {
        self.share_between_bots = share;
        self
    }

    /// The bot namespace of an update whose context names bot `from_context`.
    pub(crate) fn bot_of(&self, from_context: Option<i64>) -> Option<i64> {
        if self.share_between_bots {
            None
        } else {
            from_context.or(self.bot)
        }
    }
}
