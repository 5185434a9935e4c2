//! The error type of the session runtime.

use std::fmt;

use crate::{codec::CodecError, store::StoreError};

/// Everything that can go wrong with a session, as a value.
///
/// Each variant names the fragment, and where there is one, the storage key and the store,
/// so a log line says which data is affected.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use multisession::{ChatContext, Error, MultiSession, Stored, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// // An inline query has no chat, so the per-chat `count` has no key.
/// let error = sessions
///     .run(&ChatContext::user_only(7), async |s| Ok::<_, Error>(*s.count().await?))
///     .await
///     .unwrap_err();
/// let advice = match &error {
///     Error::NoKey { fragment } => format!("`{fragment}` needs a chat"),
///     Error::Conflict { .. } | Error::Save { .. } => "re-run the update".to_owned(),
///     other => other.to_string(), // `Error` is non-exhaustive
/// };
/// assert_eq!(advice, "`count` needs a chat");
/// assert_eq!(error.fragment(), Some("count"));
/// assert_eq!(error.stored(), Stored::Nothing, "no I/O was done");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fragment's key function gave no key for this update (an inline query has no
    /// chat, say), so the fragment is unavailable (rule S3). No I/O was done.
    #[error(
        "session fragment `{fragment}` is unavailable for this update: its key function gave no key"
    )]
    NoKey {
        /// The fragment.
        fragment: &'static str,
    },

    /// Reading the fragment failed (rule S14).
    #[error(
        "could not load session fragment `{fragment}` (key `{key}`) from store `{store}`: {source}"
    )]
    Load {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },

    /// The stored bytes do not decode as the fragment's type (rule S15). The stored value
    /// is left as it is.
    #[error(
        "stored value of session fragment `{fragment}` (key `{key}`, store `{store}`) does not decode: {source}"
    )]
    Decode {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },

    /// The stored value was written by a newer version of the program: it has more
    /// migrations than this one knows (rule S19). The value is left as it is.
    #[error(
        "stored value of session fragment `{fragment}` (key `{key}`, store `{store}`) is at version {found}, newer than this program's {supported}; refusing to read or overwrite it"
    )]
    TooNew {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// The stored version.
        found: u32,
        /// The newest version this program knows.
        supported: u32,
    },

    /// The fragment's value could not be encoded.
    #[error("session fragment `{fragment}` (key `{key}`) could not be encoded: {source}")]
    Encode {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },

    /// Saving failed for one or more fragments (rule S14); each failure is listed with
    /// what happened to its data, and `written` names the fragments of the same update
    /// that were stored (rule S26; see [`Error::stored`]). Re-running the same update
    /// (same [update id](crate::SessionContext::update_id), here `update_id`) completes it
    /// without applying the written fragments again.
    #[error("could not save session: {}{}", DisplayList(.failures), DisplayOutcome(.failures, .written))]
    Save {
        /// One entry per fragment that failed.
        failures: Vec<SaveFailure>,
        /// Fragments of the same update whose writes landed.
        written: Vec<&'static str>,
        /// The update's identity (generated if its context had none).
        update_id: u64,
    },

    /// Another process changed the fragment since it was read, and the update was not
    /// re-run (rule S17): the [`OnConflict`](crate::OnConflict) budget was spent, or the
    /// policy forbids re-runs. `written` names the fragments of the same update that were
    /// stored (in another store, or by an earlier run); re-running the same update
    /// completes it without applying them again (rule S25).
    #[error(
        "session fragment `{fragment}` (key `{key}`, store `{store}`) was changed concurrently; gave up after {attempts} attempt(s){}",
        DisplayWritten(.written)
    )]
    Conflict {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// How many times the update ran.
        attempts: u32,
        /// Fragments of the same update that were written.
        written: Vec<&'static str>,
        /// The update's identity (generated if its context had none).
        update_id: u64,
    },

    /// Another update in this process holds the fragment's key while this update already
    /// holds another key; waiting could deadlock, so the update must be re-run. `run`
    /// does that by itself; with `open`/`commit`, retry the update.
    #[error(
        "session fragment `{fragment}` (key `{key}`) is in use by a concurrent update; re-run this update"
    )]
    Contended {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
    },

    /// The fragment was touched while a guard of it was held by the same task (waiting
    /// would never end: rule S28), or while another task of the same update held its
    /// guard for longer than [`Config::lock_timeout`](crate::Config::lock_timeout).
    /// Nothing was read or written; drop the guard before touching the fragment again.
    #[error(
        "session fragment `{fragment}` was touched while a guard of it is still held in this update; drop the guard first"
    )]
    Held {
        /// The fragment.
        fragment: &'static str,
    },

    /// Another update in this process held the fragment's key for longer than
    /// [`Config::lock_timeout`](crate::Config::lock_timeout). Nothing was read or written.
    #[error(
        "session fragment `{fragment}` (key `{key}`) stayed in use by another update for {waited:?}; nothing was read or written"
    )]
    Busy {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// How long the update waited.
        waited: std::time::Duration,
    },

    /// The fragment was touched through a clone of a session handle after the session
    /// was committed (a spawned task that outlived the handler, a framework's copy).
    /// Nothing was read or written: handle the change in the next update.
    #[error(
        "session fragment `{fragment}` was touched after its session was committed; nothing was read or written"
    )]
    Committed {
        /// The fragment.
        fragment: &'static str,
    },

    /// An admin call named a fragment the session struct does not have.
    #[error("no session fragment named `{fragment}`; the fragments are: {}", .known.join(", "))]
    UnknownFragment {
        /// The name given.
        fragment: String,
        /// The fragments there are.
        known: &'static [&'static str],
    },

    /// `commit` was called on a session whose update must be re-run (see
    /// [`Error::Contended`]). Nothing was written.
    #[error("session must be re-run: fragment `{fragment}` was contended")]
    MustRerun {
        /// The contended fragment.
        fragment: &'static str,
    },

    /// `commit` was called again on a session (through a clone) whose first commit
    /// failed: that commit's error said what was stored; this call wrote nothing. Re-run
    /// the update (same update id: rule S25 keeps it from applying anything twice).
    #[error(
        "session (fragment `{fragment}`) was committed before and that commit failed; nothing more was written: re-run the update"
    )]
    CommitFailed {
        /// The first fragment the session touched.
        fragment: &'static str,
    },
}

/// One fragment that could not be saved.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Error, MultiSession, SaveError, WriteOutcome, keys, stores::MemoryStore};
/// use multisession::store::{Record, Store, StoreError};
///
/// /// A store whose reads find nothing and whose writes fail with `self.0()`.
/// struct Broken(fn() -> StoreError);
///
/// #[multisession::async_trait]
/// impl Store for Broken {
///     fn name(&self) -> &str {
///         "broken"
///     }
///     async fn read(&self, _: &str) -> Result<Option<Record>, StoreError> {
///         Ok(None)
///     }
///     async fn write(&self, _: &str, _: &[u8], _: Option<std::time::Duration>) -> Result<(), StoreError> {
///         Err((self.0)())
///     }
///     async fn delete(&self, _: &str) -> Result<(), StoreError> {
///         Err((self.0)())
///     }
/// }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// let sessions = Bot::builder()
///     .lang(Broken(|| StoreError::backend("disk full")))
///     .default_store(MemoryStore::new())
///     .build();
/// let session = sessions.open(&ChatContext::new(1).with_user(7));
/// *session.count().await? += 1;
/// session.lang().set("de".into()).await?;
/// let error = session.commit().await.unwrap_err();
///
/// let Error::Save { failures, written, .. } = &error else { panic!("{error}") };
/// assert_eq!(written, &["count"]);
/// let failure = &failures[0];
/// assert_eq!((failure.fragment, failure.key.as_str(), failure.store.as_str()), ("lang", "lang:7", "broken"));
/// assert!(matches!(&failure.error, SaveError::Store(e) if e.to_string() == "disk full"));
/// assert_eq!(failure.outcome, WriteOutcome::NotWritten);
/// assert_eq!(failure.to_string(), "fragment `lang` (key `lang:7`, store `broken`): disk full (not written)");
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct SaveFailure {
    /// The fragment.
    pub fragment: &'static str,
    /// The full storage key (empty if the fragment had none).
    pub key: String,
    /// The store's name.
    pub store: String,
    /// Why.
    pub error: SaveError,
    /// What happened to the fragment's data.
    pub outcome: WriteOutcome,
}

/// What happened to one fragment's write that did not succeed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Error, MultiSession, Stored, WriteOutcome, keys, stores::MemoryStore};
/// # use multisession::store::{Record, Store, StoreError};
/// # struct Broken(fn() -> StoreError);
/// # #[multisession::async_trait]
/// # impl Store for Broken {
/// #     fn name(&self) -> &str { "broken" }
/// #     async fn read(&self, _: &str) -> Result<Option<Record>, StoreError> { Ok(None) }
/// #     async fn write(&self, _: &str, _: &[u8], _: Option<std::time::Duration>) -> Result<(), StoreError> { Err((self.0)()) }
/// #     async fn delete(&self, _: &str) -> Result<(), StoreError> { Err((self.0)()) }
/// # }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// // `Broken`: a custom store whose writes fail (as in the `SaveFailure` example); here
/// // the connection was lost mid-request.
/// let lost = Broken(|| StoreError::unknown("connection reset"));
/// let sessions = Bot::builder().lang(lost).default_store(MemoryStore::new()).build();
/// let session = sessions.open(&ChatContext::new(1).with_user(7));
/// session.lang().set("de".into()).await?;
/// let error = session.commit().await.unwrap_err();
/// let Error::Save { failures, .. } = &error else { panic!("{error}") };
/// assert_eq!(failures[0].outcome, WriteOutcome::Unknown, "it may have landed");
/// assert_eq!(error.stored(), Stored::Unknown { written: vec![], unknown: vec!["lang"] });
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// The write did not land: the stored value is what it was.
    NotWritten,
    /// The write may or may not have landed (a timeout, a connection lost mid-request).
    /// Re-running the same update is safe: if it landed, it is not applied again.
    Unknown,
}

/// What a failed `run`, `commit` or `save` did to the stored data (rule S26), from
/// [`Error::stored`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, Stored, keys, stores::MemoryStore};
/// # use multisession::store::{Record, Store, StoreError};
/// # struct Broken(fn() -> StoreError);
/// # #[multisession::async_trait]
/// # impl Store for Broken {
/// #     fn name(&self) -> &str { "broken" }
/// #     async fn read(&self, _: &str) -> Result<Option<Record>, StoreError> { Ok(None) }
/// #     async fn write(&self, _: &str, _: &[u8], _: Option<std::time::Duration>) -> Result<(), StoreError> { Err((self.0)()) }
/// #     async fn delete(&self, _: &str) -> Result<(), StoreError> { Err((self.0)()) }
/// # }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// // `Broken`: a custom store whose writes fail (as in the `SaveFailure` example).
/// let sessions = Bot::builder()
///     .lang(Broken(|| StoreError::backend("disk full")))
///     .default_store(MemoryStore::new())
///     .build();
/// let session = sessions.open(&ChatContext::new(1).with_user(7));
/// *session.count().await? += 1;
/// session.lang().set("de".into()).await?;
/// let error = session.commit().await.unwrap_err();
/// match error.stored() {
///     Stored::Nothing => unreachable!("`count` was stored"),
///     Stored::Partly { written, not_written } => {
///         assert_eq!((written, not_written), (vec!["count"], vec!["lang"]));
///     }
///     Stored::Unknown { .. } => unreachable!("the store said the write failed"),
///     _ => {} // `Stored` is non-exhaustive
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// Nothing of the update was written.
    Nothing,
    /// These fragments were written and those were not. Re-running the same update
    /// completes it without applying the written ones again.
    Partly {
        /// Fragments whose writes landed.
        written: Vec<&'static str>,
        /// Fragments whose writes did not land.
        not_written: Vec<&'static str>,
    },
    /// Whether the `unknown` fragments were written is not known; `written` were.
    /// Re-running the same update is safe.
    Unknown {
        /// Fragments whose writes landed.
        written: Vec<&'static str>,
        /// Fragments whose outcome is unknown.
        unknown: Vec<&'static str>,
    },
}

/// Why one fragment could not be saved.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, Error, MultiSession, SaveError, keys, stores::MemoryStore};
/// # use multisession::store::{Record, Store, StoreError};
/// # struct Broken(fn() -> StoreError);
/// # #[multisession::async_trait]
/// # impl Store for Broken {
/// #     fn name(&self) -> &str { "broken" }
/// #     async fn read(&self, _: &str) -> Result<Option<Record>, StoreError> { Ok(None) }
/// #     async fn write(&self, _: &str, _: &[u8], _: Option<std::time::Duration>) -> Result<(), StoreError> { Err((self.0)()) }
/// #     async fn delete(&self, _: &str) -> Result<(), StoreError> { Err((self.0)()) }
/// # }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
///     #[session(key = keys::user)]
///     lang: String,
/// }
///
/// // `Broken`: a custom store whose writes fail (as in the `SaveFailure` example).
/// let sessions = Bot::builder()
///     .lang(Broken(|| StoreError::Timeout(std::time::Duration::from_secs(5))))
///     .default_store(MemoryStore::new())
///     .build();
/// let session = sessions.open(&ChatContext::new(1).with_user(7));
/// session.lang().set("de".into()).await?;
/// let Err(Error::Save { failures, .. }) = session.commit().await else { panic!("saved") };
/// let why = match &failures[0].error {
///     SaveError::Store(store) if store.outcome_unknown() => format!("maybe stored: {store}"),
///     SaveError::Store(store) => format!("not stored: {store}"),
///     SaveError::Encode(codec) => format!("could not encode: {codec}"),
///     SaveError::Conflict => "changed by another process".to_owned(),
///     _ => "something else".to_owned(), // `SaveError` is non-exhaustive
/// };
/// assert_eq!(why, "maybe stored: timed out after 5s");
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] CodecError),
    /// Another process changed the fragment since it was read (rule S17).
    #[error("changed concurrently since it was read")]
    Conflict,
}

impl fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fragment `{}` (key `{}`, store `{}`): {}{}",
            self.fragment,
            self.key,
            self.store,
            self.error,
            match self.outcome {
                WriteOutcome::NotWritten => " (not written)",
                WriteOutcome::Unknown => " (outcome unknown: it may have been written)",
            }
        )
    }
}

struct DisplayOutcome<'a>(&'a [SaveFailure], &'a [&'static str]);

impl fmt::Display for DisplayOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = self.0.iter().any(|f| f.outcome == WriteOutcome::Unknown);
        match (self.1.is_empty(), unknown) {
            (true, false) => f.write_str("; nothing of this update was written"),
            (true, true) => f.write_str("; nothing else of this update was written"),
            (false, _) => write!(f, "; written: {}", self.1.join(", ")),
        }
    }
}

struct DisplayWritten<'a>(&'a [&'static str]);

impl fmt::Display for DisplayWritten<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("; nothing of this update was written")
        } else {
            write!(f, "; written: {}", self.0.join(", "))
        }
    }
}

struct DisplayList<'a>(&'a [SaveFailure]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

impl Error {
    /// The fragment this error is about, if it is about one.
    ///
    /// ```
    /// use multisession::Error;
    ///
    /// let error = Error::NoKey { fragment: "quiz" };
    /// assert_eq!(error.fragment(), Some("quiz"));
    /// // An admin call naming a fragment that does not exist is about none.
    /// let error = Error::UnknownFragment { fragment: "qiuz".into(), known: &["quiz"] };
    /// assert_eq!(error.fragment(), None);
    /// ```
    pub fn fragment(&self) -> Option<&'static str> {
        match self {
            Error::NoKey { fragment }
            | Error::Load { fragment, .. }
            | Error::Decode { fragment, .. }
            | Error::TooNew { fragment, .. }
            | Error::Encode { fragment, .. }
            | Error::Conflict { fragment, .. }
            | Error::Contended { fragment, .. }
            | Error::Held { fragment }
            | Error::Committed { fragment }
            | Error::Busy { fragment, .. }
            | Error::MustRerun { fragment }
            | Error::CommitFailed { fragment } => Some(fragment),
            Error::Save { failures, .. } => failures.first().map(|f| f.fragment),
            Error::UnknownFragment { .. } => None,
        }
    }

    /// What this error means for the stored data (rule S26): nothing written, written in
    /// part, or unknown in part. Every error other than [`Error::Save`] and
    /// [`Error::Conflict`] means nothing was written.
    ///
    /// ```
    /// use multisession::{Error, Stored};
    ///
    /// fn report(error: &Error) -> String {
    ///     match error.stored() {
    ///         Stored::Nothing => format!("nothing stored: {error}"),
    ///         Stored::Partly { written, .. } | Stored::Unknown { written, .. } => {
    ///             format!("re-run the update to complete it (already stored: {written:?})")
    ///         }
    ///         _ => error.to_string(),
    ///     }
    /// }
    /// assert!(report(&Error::NoKey { fragment: "quiz" }).starts_with("nothing stored"));
    /// ```
    pub fn stored(&self) -> Stored {
        match self {
            Error::Save {
                failures, written, ..
            } => {
                let unknown: Vec<&'static str> = failures
                    .iter()
                    .filter(|f| f.outcome == WriteOutcome::Unknown)
                    .map(|f| f.fragment)
                    .collect();
                if !unknown.is_empty() {
                    Stored::Unknown {
                        written: written.clone(),
                        unknown,
                    }
                } else if written.is_empty() {
                    Stored::Nothing
                } else {
                    Stored::Partly {
                        written: written.clone(),
                        not_written: failures.iter().map(|f| f.fragment).collect(),
                    }
                }
            }
            Error::Conflict {
                fragment, written, ..
            } if !written.is_empty() => Stored::Partly {
                written: written.clone(),
                not_written: vec![fragment],
            },
            _ => Stored::Nothing,
        }
    }

    /// The same error, with `earlier` (fragments an earlier run of the update wrote)
    /// among the written ones.
    pub(crate) fn with_written(mut self, earlier: &[&'static str]) -> Self {
        if let Error::Save { written, .. } | Error::Conflict { written, .. } = &mut self {
            for fragment in earlier {
                if !written.contains(fragment) {
                    written.push(fragment);
                }
            }
        }
        self
    }

    /// The identity of the update whose commit failed ([`Error::Save`],
    /// [`Error::Conflict`]): run the update again with it
    /// ([`ChatContext::with_update_id`](crate::ChatContext::with_update_id)) to complete it
    /// exactly once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
    /// use multisession::{ChatContext, Config, MultiSession, OnConflict, keys, stores::MemoryStore};
    /// # use multisession::store::{Record, Store, StoreError};
    /// # use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// # struct Flaky { inner: MemoryStore, down: Arc<AtomicBool> }
    /// # #[multisession::async_trait]
    /// # impl Store for Flaky {
    /// #     fn name(&self) -> &str { "flaky" }
    /// #     async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> { self.inner.read(key).await }
    /// #     async fn write(&self, key: &str, value: &[u8], ttl: Option<std::time::Duration>) -> Result<(), StoreError> {
    /// #         if self.down.load(Ordering::Relaxed) { return Err(StoreError::backend("connection refused")) }
    /// #         self.inner.write(key, value, ttl).await
    /// #     }
    /// #     async fn delete(&self, key: &str) -> Result<(), StoreError> { self.inner.delete(key).await }
    /// # }
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    ///     #[session(key = keys::user)]
    ///     lang: String,
    /// }
    ///
    /// // `lang` is on a custom store that refuses writes while `down` is set.
    /// let down = Arc::new(AtomicBool::new(true));
    /// let flaky = Flaky { inner: MemoryStore::new(), down: down.clone() };
    /// let sessions = Bot::builder()
    ///     .lang(flaky)
    ///     .default_store(MemoryStore::new())
    ///     .config(Config::new().on_conflict(OnConflict::Fail)) // no re-runs: the caller decides
    ///     .build();
    /// let handler = async |s: multisession::Session<Bot>| {
    ///     *s.count().await? += 1;
    ///     s.lang().set("de".into()).await
    /// };
    ///
    /// let ctx = ChatContext::new(1).with_user(7); // no update id of its own
    /// let error = sessions.run(&ctx, handler).await.unwrap_err();
    /// let id = error.update_id().expect("a commit error");
    /// down.store(false, Ordering::Relaxed);
    /// // Later (from a retry queue, say): the same update again completes it.
    /// sessions.run(&ctx.with_update_id(id), handler).await?;
    /// let data = sessions.load(&ctx).await?;
    /// assert_eq!((data.count, data.lang.as_str()), (1, "de"), "`count` was not incremented twice");
    /// assert_eq!(multisession::Error::NoKey { fragment: "count" }.update_id(), None);
    /// # Ok(()) }
    /// ```
    pub fn update_id(&self) -> Option<u64> {
        match self {
            Error::Save { update_id, .. } | Error::Conflict { update_id, .. } => Some(*update_id),
            _ => None,
        }
    }
}
