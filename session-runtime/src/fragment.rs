//! The handler-facing access to one fragment: [`Fragment`] (what `s.field()` returns) and
//! the [`FragmentGuard`] its `.await` gives.

use std::{
    fmt,
    future::{Future, IntoFuture},
    ops::{Deref, DerefMut},
    pin::Pin,
};

use crate::{
    cell::{Cell, StateGuard},
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
pub struct Fragment<'a, T> {
    cell: &'a Cell<T>,
}

impl<'a, T: Send + 'static> Fragment<'a, T> {
    /// The access to `cell`.
    pub fn new(cell: &'a Cell<T>) -> Self {
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
    pub fn name(&self) -> &'static str {
        self.cell.name()
    }
}

impl<'a, T: Send + 'static> IntoFuture for Fragment<'a, T> {
    type Output = Result<FragmentGuard<'a, T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.get())
    }
}

/// Access to a loaded fragment value. Taking it mutably (`DerefMut`) marks the fragment
/// for a comparison at commit: it is written only if its value then differs from what was
/// loaded (rule S22), whatever the order its maps and sets serialize in.
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
