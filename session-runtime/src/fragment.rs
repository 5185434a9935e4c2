//! The handler-facing access to one fragment: [`Fragment`] (what `s.field()` returns) and
//! the [`FragmentGuard`] its `.await` gives.

use std::{
    fmt,
    future::{Future, IntoFuture},
    ops::{Deref, DerefMut},
    pin::Pin,
    task::{Context, Poll},
};

use crate::{
    cell::{Bound, StateGuard},
    error::Error,
    spec::FragmentSpec,
};

/// A handler's access to one fragment, as `s.field()` returns it.
///
/// `.await` it for a guard that derefs to the value (loading it on first touch), or call
/// [`set`](Fragment::set) or [`delete`](Fragment::delete), which do not read.
///
/// Touching a fragment again while this task holds its guard is [`Error::Held`] at once
/// (rule S28): drop the guard first. Another task of the same update waits for the guard,
/// up to [`Config::lock_timeout`](crate::Config::lock_timeout).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Fragment, MultiSession, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     quiz: Option<String>,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// sessions
///     .run(&ChatContext::new(1), async |s| {
///         let count: Fragment<'_, u32> = s.count();
///         *count.await? += 1; // read on first touch, written at commit
///         s.quiz().set(Some("2 + 2?".into())).await?; // no read
///         assert_eq!(*s.count().await?, 1, "read once per update");
///         Ok::<_, multisession::Error>(())
///     })
///     .await?;
/// let stats = sessions.stats();
/// assert_eq!((stats.reads, stats.writes), (1, 2));
/// # Ok(()) }
/// ```
pub struct Fragment<'a, T> {
    cell: Bound<'a, T>,
}

impl<'a, T: Send + 'static> Fragment<'a, T> {
    /// The access to a session's cell (bound to its fragment and update).
    ///
    /// The derived accessors call this; a handler gets its fragments from them:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, Fragment, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(1));
    /// let count: Fragment<'_, u32> = session.count(); // `Fragment::new` on the session's cell
    /// assert_eq!(count.name(), "count");
    /// # Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn new(cell: Bound<'a, T>) -> Self {
        Self { cell }
    }

    /// Loads the value (once per update) and locks it for this task while the guard lives.
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
    /// sessions
    ///     .run(&ctx, async |s| {
    ///         let mut count = s.count().get().await?; // the same as `s.count().await?`
    ///         *count += 1;
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get(self) -> Result<FragmentGuard<'a, T>, Error> {
        Ok(FragmentGuard {
            guard: self.cell.lock_loaded().await?,
            spec: &self.cell.shared.spec,
        })
    }

    /// Replaces the value without reading it; it is written at commit (rule S8).
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
    /// sessions
    ///     .run(&ctx, async |s| s.lang().set("de".to_owned()).await)
    ///     .await?;
    /// assert_eq!(sessions.stats().reads, 0, "no read");
    /// assert_eq!(sessions.stats().writes, 1);
    /// # Ok(()) }
    /// ```
    pub async fn set(self, value: T) -> Result<(), Error> {
        self.cell.set(value).await
    }

    /// Deletes the value without reading it; one delete at commit (rule S9). Later reads
    /// in this update see the initial value.
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
    /// sessions.run(&ctx, async |s| s.lang().set("de".to_owned()).await).await?;
    /// sessions
    ///     .run(&ctx, async |s| {
    ///         s.lang().delete().await?;
    ///         assert_eq!(*s.lang().await?, "", "later reads see the initial value");
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// assert_eq!(sessions.stats().deletes, 1);
    /// # Ok(()) }
    /// ```
    pub async fn delete(self) -> Result<(), Error> {
        self.cell.delete().await
    }

    /// The session key of this fragment for this update (without the namespace), like
    /// grammY's `ctx.sessionKey`; `None` if the fragment is unavailable.
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
    /// sessions
    ///     .run(&ChatContext::new(-100).with_user(7), async |s| {
    ///         assert_eq!(s.count().key(), Some("-100"));
    ///         assert_eq!(s.count().storage_key(), Some("count:-100"));
    ///         assert_eq!(s.lang().key(), Some("7"));
    ///         assert_eq!(s.count().name(), "count");
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn key(&self) -> Option<&'a str> {
        self.cell.session_key_str()
    }

    /// The full storage key (namespace and key).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, Config, MultiSession, keys, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = keys::user, prefix = "language/")]
    ///     lang: String,
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(-100).with_user(7));
    /// assert_eq!(session.count().storage_key(), Some("count:-100"));
    /// assert_eq!(session.lang().storage_key(), Some("language/7"));
    /// // No chat, no key.
    /// assert_eq!(sessions.open(&ChatContext::user_only(7)).count().storage_key(), None);
    ///
    /// // A bot's sessions live in its namespace.
    /// let bot = Bot::builder().default_store(MemoryStore::new()).config(Config::new().bot(1001)).build();
    /// let session = bot.open(&ChatContext::new(-100));
    /// assert_eq!(session.count().storage_key(), Some("1001/count:-100"));
    /// assert_eq!(session.count().key(), Some("-100"), "without the namespace");
    /// # Ok(()) }
    /// ```
    pub fn storage_key(&self) -> Option<&'a str> {
        self.cell.storage_key_str()
    }

    /// Whether the fragment has a key for this update (rule S3).
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
    /// // An inline query: a user, no chat.
    /// sessions
    ///     .run(&ChatContext::user_only(7), async |s| {
    ///         assert!(!s.count().is_available());
    ///         assert!(s.lang().is_available());
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn is_available(&self) -> bool {
        self.cell.storage_key_str().is_some()
    }

    /// The fragment's name (the field name).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     r#type: String, // a raw identifier loses its `r#`
    /// }
    ///
    /// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
    /// let session = sessions.open(&ChatContext::new(1));
    /// assert_eq!(session.count().name(), "count");
    /// assert_eq!(session.r#type().name(), "type");
    /// assert_eq!(session.r#type().storage_key(), Some("type:1"));
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &'static str {
        self.cell.name()
    }
}

impl<'a, T: Send + 'static> IntoFuture for Fragment<'a, T> {
    type Output = Result<FragmentGuard<'a, T>, Error>;
    type IntoFuture = FragmentFuture<'a, T>;

    fn into_future(self) -> Self::IntoFuture {
        FragmentFuture {
            stage: Stage::Start(self.cell),
        }
    }
}

/// What `.await` on a [`Fragment`] runs: [`Fragment::get`].
///
/// Where nothing has to wait (the value is loaded, or its store answers at once, such as
/// the memory store, and nobody else holds its key or its guard), the first poll
/// completes it without allocating; otherwise it goes on as [`Fragment::get`] does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, stores::MemoryStore};
/// use std::future::IntoFuture;
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// sessions
///     .run(&ChatContext::new(1), async |s| {
///         let load: multisession::FragmentFuture<'_, u32> = s.count().into_future();
///         *load.await? += 1;
///         Ok::<_, multisession::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct FragmentFuture<'a, T> {
    stage: Stage<'a, T>,
}

/// Where a [`FragmentFuture`] is.
enum Stage<'a, T> {
    /// Not polled yet.
    Start(Bound<'a, T>),
    /// Waiting (for the store, a key or a guard).
    Waiting(Pin<Box<dyn Future<Output = Result<FragmentGuard<'a, T>, Error>> + Send + 'a>>),
    /// Completed.
    Done,
}

impl<'a, T: Send + 'static> Future for FragmentFuture<'a, T> {
    type Output = Result<FragmentGuard<'a, T>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Stage::Start(cell) = this.stage {
            if let Some(done) = cell.try_lock_loaded() {
                this.stage = Stage::Done;
                return Poll::Ready(done.map(|guard| FragmentGuard {
                    guard,
                    spec: &cell.shared.spec,
                }));
            }
            this.stage = Stage::Waiting(Box::pin(Fragment { cell }.get()));
        }
        match &mut this.stage {
            Stage::Waiting(waiting) => {
                let done = std::task::ready!(waiting.as_mut().poll(cx));
                this.stage = Stage::Done;
                Poll::Ready(done)
            }
            Stage::Start(_) | Stage::Done => panic!("`FragmentFuture` polled after completion"),
        }
    }
}

impl<T> fmt::Debug for FragmentFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Start(_) => "start",
            Stage::Waiting(_) => "waiting",
            Stage::Done => "done",
        };
        f.debug_struct("FragmentFuture")
            .field("stage", &stage)
            .finish()
    }
}

/// Access to a loaded fragment value. Taking it mutably (`DerefMut`) marks the fragment
/// for a comparison at commit: it is written only if its value then differs from what was
/// loaded (rule S22), whatever the order its maps and sets serialize in.
///
/// A guard may be held across `.await`s. While it lives, this task holds the fragment:
/// touching the fragment again fails with [`Error::Held`] (it would wait for itself), so
/// drop the guard first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Error, FragmentGuard, MultiSession, stores::MemoryStore};
/// use std::time::Duration;
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     seen: Vec<String>,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// let ctx = ChatContext::new(1);
/// sessions
///     .run(&ctx, async |s| {
///         let mut count: FragmentGuard<'_, u32> = s.count().await?;
///         let before = *count; // `Deref`: reading does not mark it
///         *count += 1; // `DerefMut`: compared at commit, written if it differs
///         tokio::time::sleep(Duration::from_millis(1)).await; // held across an `.await`
///         assert!(matches!(s.count().await, Err(Error::Held { fragment: "count" })));
///         drop(count);
///         assert_eq!(*s.count().await?, before + 1);
///
///         // Taken mutably but left equal: not written (rule S22).
///         let mut seen = s.seen().await?;
///         seen.push("hi".into());
///         seen.pop();
///         Ok::<_, Error>(())
///     })
///     .await?;
/// let stats = sessions.stats();
/// assert_eq!((stats.writes, stats.skipped_writes), (1, 1));
/// # Ok(()) }
/// ```
pub struct FragmentGuard<'a, T> {
    guard: StateGuard<'a, T>,
    spec: &'a FragmentSpec<T>,
}

impl<T> Deref for FragmentGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.guard.state.value {
            Some(value) => value,
            // `Cell::lock_loaded` makes the value before a guard exists.
            None => unreachable!("a fragment guard always has a value"),
        }
    }
}

impl<T> DerefMut for FragmentGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let state = &mut *self.guard.state;
        state.before_change(self.spec);
        match &mut state.value {
            Some(value) => value,
            None => unreachable!("a fragment guard always has a value"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for FragmentGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
