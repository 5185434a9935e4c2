//! The store contract: bytes by key, with revisions for compare-and-set.
//!
//! A custom store implements three methods ([`Store::read`], [`Store::write`],
//! [`Store::delete`]) and gets the rest from defaults. Stores that can do more say so
//! through [`Store::capabilities`] and override [`Store::read_many`] (one round trip for a
//! batch) and [`Store::apply`] (conditional, batched writes).
//!
//! ```
//! use multisession::store::{Record, Store, StoreError};
//! use std::{collections::HashMap, sync::Mutex, time::Duration};
//!
//! /// A store in a few lines: no revisions, no expiry, no batching.
//! #[derive(Default)]
//! struct TinyStore(Mutex<HashMap<String, Vec<u8>>>);
//!
//! #[multisession::async_trait]
//! impl Store for TinyStore {
//!     fn name(&self) -> &str {
//!         "tiny"
//!     }
//!     async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
//!         let map = self.0.lock().map_err(StoreError::backend)?;
//!         Ok(map.get(key).map(|v| Record::new(v.clone(), 0)))
//!     }
//!     async fn write(&self, key: &str, value: &[u8], _ttl: Option<Duration>) -> Result<(), StoreError> {
//!         self.0.lock().map_err(StoreError::backend)?.insert(key.to_owned(), value.to_vec());
//!         Ok(())
//!     }
//!     async fn delete(&self, key: &str) -> Result<(), StoreError> {
//!         self.0.lock().map_err(StoreError::backend)?.remove(key);
//!         Ok(())
//!     }
//! }
//! ```

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;

/// A stored value and the revision it was stored at.
///
/// Revisions exist for compare-and-set (rule S17). A store that supports conditional writes
/// must never hand out the same revision twice for one key, not even after a delete (so a
/// write based on a read from before the delete cannot succeed). Stores without conditional
/// writes use revision `0` throughout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Record, Store}, stores::MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write("count:1", b"3", None).await?;
/// let record: Record = store.read("count:1").await?.expect("stored");
/// assert_eq!(record.value, b"3");
/// store.write("count:1", b"4", None).await?;
/// assert_ne!(store.read("count:1").await?.unwrap().revision, record.revision, "a new revision");
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The encoded value.
    pub value: Vec<u8>,
    /// The revision the value was written at.
    pub revision: u64,
}

impl Record {
    /// A record of `value` at `revision`.
    ///
    /// ```
    /// use multisession::store::Record;
    ///
    /// let record = Record::new(b"secret".to_vec(), 3);
    /// assert_eq!((record.value.as_slice(), record.revision), (&b"secret"[..], 3));
    /// // `Debug` shows the length, never the bytes (they may be personal data).
    /// assert_eq!(format!("{record:?}"), "Record { len: 6, revision: 3 }");
    /// ```
    pub fn new(value: Vec<u8>, revision: u64) -> Self {
        Self { value, revision }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.value.len())
            .field("revision", &self.revision)
            .finish()
    }
}

/// What a conditional write expects to find.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Expect, Outcome, Store, StoreRef, Write}, stores::MemoryStore};
///
/// let store = StoreRef::new(MemoryStore::new());
/// let put = |value: &[u8], expect| Write::Put { key: "count:1".into(), value: value.to_vec(), ttl: None, expect };
/// let outcome = |results: Vec<Result<Outcome, _>>| results.into_iter().next().unwrap();
///
/// assert_eq!(outcome(store.as_dyn().apply(&[put(b"1", Expect::Absent)]).await)?, Outcome::Applied);
/// assert_eq!(outcome(store.as_dyn().apply(&[put(b"2", Expect::Absent)]).await)?, Outcome::Conflict);
/// let revision = store.as_dyn().read("count:1").await?.unwrap().revision;
/// assert_eq!(outcome(store.as_dyn().apply(&[put(b"2", Expect::Revision(revision))]).await)?, Outcome::Applied);
/// assert_eq!(outcome(store.as_dyn().apply(&[put(b"3", Expect::Revision(revision))]).await)?, Outcome::Conflict);
/// assert_eq!(outcome(store.as_dyn().apply(&[put(b"3", Expect::Any)]).await)?, Outcome::Applied);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// Write whatever is there (last writer wins).
    Any,
    /// Write only if the key holds no value.
    Absent,
    /// Write only if the key still holds this revision.
    Revision(u64),
}

impl Expect {
    /// Whether a key in state `current` (its revision, or `None` if absent) meets this
    /// expectation. Stores that check revisions in memory can use this directly.
    ///
    /// ```
    /// use multisession::store::Expect;
    ///
    /// assert!(Expect::Any.is_met_by(None) && Expect::Any.is_met_by(Some(4)));
    /// assert!(Expect::Absent.is_met_by(None));
    /// assert!(!Expect::Absent.is_met_by(Some(4)));
    /// assert!(Expect::Revision(4).is_met_by(Some(4)));
    /// assert!(!Expect::Revision(4).is_met_by(Some(5)) && !Expect::Revision(4).is_met_by(None));
    /// ```
    pub fn is_met_by(self, current: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Revision(rev) => current == Some(rev),
        }
    }
}

/// One write of a batch handed to [`Store::apply`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Expect, Outcome, Store, Write}, stores::MemoryStore};
/// use std::time::Duration;
///
/// let store = MemoryStore::new();
/// store.write("quiz:7", b"{}", None).await?;
/// let batch = [
///     Write::Put { key: "count:1".into(), value: b"1".to_vec(), ttl: Some(Duration::from_secs(3600)), expect: Expect::Absent },
///     Write::Delete { key: "quiz:7".into(), expect: Expect::Any },
/// ];
/// let results = store.apply(&batch).await;
/// assert!(results.iter().all(|r| matches!(r, Ok(Outcome::Applied))));
/// assert!(store.read("quiz:7").await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store `value` under `key`, expiring after `ttl` if given.
    Put {
        /// The full storage key (namespace included).
        key: String,
        /// The encoded value.
        value: Vec<u8>,
        /// Expire the value this long after the write.
        ttl: Option<Duration>,
        /// The precondition.
        expect: Expect,
    },
    /// Remove `key`.
    Delete {
        /// The full storage key (namespace included).
        key: String,
        /// The precondition.
        expect: Expect,
    },
}

impl Write {
    /// The key this write touches.
    ///
    /// ```
    /// use multisession::store::{Expect, Write};
    ///
    /// let delete = Write::Delete { key: "quiz:7".into(), expect: Expect::Any };
    /// assert_eq!(delete.key(), "quiz:7");
    /// ```
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }

    /// The precondition of this write.
    ///
    /// ```
    /// use multisession::store::{Expect, Write};
    ///
    /// let put = Write::Put { key: "count:1".into(), value: b"2".to_vec(), ttl: None, expect: Expect::Revision(9) };
    /// assert_eq!(put.expect(), Expect::Revision(9));
    /// ```
    pub fn expect(&self) -> Expect {
        match self {
            Write::Put { expect, .. } | Write::Delete { expect, .. } => *expect,
        }
    }
}

/// How one write of a batch went.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Expect, Outcome, Store, Write}, stores::MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write("count:1", b"1", None).await?;
/// let create = |key: &str| Write::Put { key: key.into(), value: b"0".to_vec(), ttl: None, expect: Expect::Absent };
/// // `count:1` exists: creating it is a conflict, and writes nothing.
/// let results = store.apply(&[create("count:1")]).await;
/// assert!(matches!(results[..], [Ok(Outcome::Conflict)]));
/// assert_eq!(store.read("count:1").await?.unwrap().value, b"1");
/// let results = store.apply(&[create("count:2")]).await;
/// assert!(matches!(results[..], [Ok(Outcome::Applied)]));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The write took effect.
    Applied,
    /// The precondition did not hold; nothing was written.
    Conflict,
}

/// One page of a [`Store::list`] listing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Page, Store, StoreRef}, stores::MemoryStore};
///
/// let store = StoreRef::new(MemoryStore::new());
/// for chat in 1..=5 {
///     store.as_dyn().write(&format!("count:{chat}"), b"1", None).await?;
/// }
/// store.as_dyn().write("lang:7", b"\"de\"", None).await?;
///
/// let mut keys = Vec::new();
/// let mut cursor: Option<String> = None;
/// loop {
///     let page: Page = store.as_dyn().list("count:", cursor.as_deref(), 2).await?;
///     keys.extend(page.entries.into_iter().map(|(key, _record)| key));
///     cursor = page.cursor;
///     if cursor.is_none() {
///         break;
///     }
/// }
/// keys.sort();
/// assert_eq!(keys, ["count:1", "count:2", "count:3", "count:4", "count:5"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Full storage keys and their records.
    pub entries: Vec<(String, Record)>,
    /// Where the next page starts; `None` when the listing is complete. Opaque: pass it
    /// back to [`Store::list`] as it is.
    pub cursor: Option<String>,
}

/// What a store can do beyond read, write and delete.
///
/// ```
/// use multisession::{store::{Capabilities, Store}, stores::MemoryStore};
///
/// assert_eq!(MemoryStore::new().capabilities(), Capabilities::FULL);
///
/// // The struct is non-exhaustive: a custom store starts from a constant and sets fields.
/// let mut listing_only = Capabilities::BASIC;
/// listing_only.listing = true;
/// assert!(listing_only.listing && !listing_only.conditional);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`Store::apply`] honours [`Expect`] (compare-and-set). Without it, the runtime still
    /// prevents lost updates inside one process, but not across processes.
    pub conditional: bool,
    /// [`Store::apply`] applies a whole batch atomically: all of it or none.
    pub atomic_batch: bool,
    /// [`Store::read_many`] reads a batch in one round trip.
    pub batch_read: bool,
    /// The store expires values by itself when a write carries a TTL.
    pub native_ttl: bool,
    /// [`Store::list`] is implemented.
    pub listing: bool,
}

impl Capabilities {
    /// A store that does nothing beyond the three basic operations.
    ///
    /// ```
    /// use multisession::store::Capabilities;
    ///
    /// assert_eq!(Capabilities::BASIC, Capabilities::default());
    /// assert!(!Capabilities::BASIC.conditional);
    /// ```
    pub const BASIC: Capabilities = Capabilities {
        conditional: false,
        atomic_batch: false,
        batch_read: false,
        native_ttl: false,
        listing: false,
    };

    /// A store that does everything.
    ///
    /// ```
    /// use multisession::store::Capabilities;
    ///
    /// let full = Capabilities::FULL;
    /// assert!(full.conditional && full.atomic_batch && full.batch_read && full.native_ttl && full.listing);
    /// ```
    pub const FULL: Capabilities = Capabilities {
        conditional: true,
        atomic_batch: true,
        batch_read: true,
        native_ttl: true,
        listing: true,
    };
}

/// A failure inside a store (the runtime adds fragment, key and store name around it).
///
/// ```
/// use multisession::store::StoreError;
/// use std::time::Duration;
///
/// fn describe(error: &StoreError) -> String {
///     match error {
///         StoreError::Timeout(after) => format!("slow store ({after:?})"),
///         StoreError::Unsupported(what) => format!("cannot {what}"),
///         other => other.to_string(), // `StoreError` is non-exhaustive
///     }
/// }
/// assert_eq!(describe(&StoreError::Timeout(Duration::from_secs(5))), "slow store (5s)");
/// assert_eq!(describe(&StoreError::Unsupported("list")), "cannot list");
/// assert_eq!(describe(&StoreError::Corrupt("bad length".into())), "corrupt record: bad length");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: a connection, a query, a file.
    #[error("{0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The operation did not finish in time. For a write, whether it landed is unknown.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The store lost track of a write it had sent (a connection dropped mid-request):
    /// whether it landed is unknown. Any other error from a write ([`Store::apply`],
    /// [`Store::write`], [`Store::delete`]) means the write did not land.
    #[error("outcome unknown: {0}")]
    Unknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// What the backend returned is not a valid record.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store does not support this operation.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Wraps any error (or message) as a backend failure.
    ///
    /// ```
    /// use multisession::store::StoreError;
    ///
    /// let error = StoreError::backend("connection refused");
    /// assert!(matches!(error, StoreError::Backend(_)));
    /// assert_eq!(error.to_string(), "connection refused");
    /// assert!(!error.outcome_unknown(), "the write did not land");
    /// ```
    pub fn backend<E: fmt::Display>(error: E) -> Self {
        StoreError::Backend(error.to_string().into())
    }

    /// Wraps an error value, keeping it as the source.
    ///
    /// ```
    /// use multisession::store::StoreError;
    /// use std::{error::Error as _, io};
    ///
    /// let error = StoreError::from_error(io::Error::new(io::ErrorKind::PermissionDenied, "read-only file"));
    /// let source = error.source().and_then(|s| s.downcast_ref::<io::Error>());
    /// assert_eq!(source.map(io::Error::kind), Some(io::ErrorKind::PermissionDenied));
    /// ```
    pub fn from_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        StoreError::Backend(Box::new(error))
    }

    /// An unknown-outcome error wrapping `error`.
    ///
    /// ```
    /// use multisession::store::StoreError;
    ///
    /// // The connection dropped after the request was sent: the write may have landed.
    /// let error = StoreError::unknown("connection reset by peer");
    /// assert!(error.outcome_unknown());
    /// assert_eq!(error.to_string(), "outcome unknown: connection reset by peer");
    /// ```
    pub fn unknown<E: fmt::Display>(error: E) -> Self {
        StoreError::Unknown(error.to_string().into())
    }

    /// Whether a write that failed with this error may still have landed: a timeout, or
    /// [`StoreError::Unknown`].
    ///
    /// ```
    /// use multisession::store::StoreError;
    /// use std::time::Duration;
    ///
    /// assert!(StoreError::Timeout(Duration::from_secs(5)).outcome_unknown());
    /// assert!(StoreError::unknown("connection reset").outcome_unknown());
    /// assert!(!StoreError::backend("syntax error").outcome_unknown());
    /// ```
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::Timeout(_) | StoreError::Unknown(_))
    }

    /// A copy of this error, for each write of a failed batch (`StoreError` is not
    /// `Clone`: a backend error's source is kept as its message).
    pub(crate) fn replicate(&self) -> StoreError {
        match self {
            StoreError::Timeout(d) => StoreError::Timeout(*d),
            StoreError::Corrupt(what) => StoreError::Corrupt(what.clone()),
            StoreError::Unsupported(what) => StoreError::Unsupported(what),
            StoreError::Unknown(source) => StoreError::unknown(source),
            other => StoreError::backend(other),
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix` (`None`:
/// there is none, the range is open): the end of a prefix listing over sorted keys.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "redis", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A store that answers at once, without waiting for anything (an in-process store, such
/// as [`MemoryStore`](crate::stores::MemoryStore)). [`Store::immediate`] hands it out;
/// where it can, the runtime calls these instead of the async methods, which spares it
/// a future per operation and the operation timeout's timer.
///
/// Each method must do exactly what its async counterpart does.
///
/// ```
/// use multisession::{store::{Expect, ImmediateStore, Outcome, Store, Write}, stores::MemoryStore};
///
/// let store = MemoryStore::new();
/// let now: &dyn ImmediateStore = store.immediate().expect("the memory store answers at once");
/// let put = Write::Put { key: "count:1".into(), value: b"1".to_vec(), ttl: None, expect: Expect::Absent };
/// assert!(matches!(now.apply_now(&[put])[..], [Ok(Outcome::Applied)]));
/// assert_eq!(now.read_now("count:1").unwrap().unwrap().value, b"1");
/// ```
pub trait ImmediateStore: Send + Sync {
    /// [`Store::read`], answered at once.
    fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// [`Store::apply`], answered at once.
    fn apply_now(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>>;

    /// [`apply_now`](Self::apply_now) of one write (the common commit), without a vector
    /// of results: a store that can, answers it directly.
    ///
    /// ```
    /// use multisession::store::{Expect, ImmediateStore, Outcome, Store, Write};
    /// use multisession::stores::MemoryStore;
    ///
    /// let store = MemoryStore::new();
    /// let now = store.immediate().expect("the memory store answers at once");
    /// let put = |expect| Write::Put { key: "count:1".into(), value: b"1".to_vec(), ttl: None, expect };
    /// assert!(matches!(now.apply_one_now(&put(Expect::Absent)), Ok(Outcome::Applied)));
    /// assert!(matches!(now.apply_one_now(&put(Expect::Absent)), Ok(Outcome::Conflict)));
    /// ```
    fn apply_one_now(&self, write: &Write) -> Result<Outcome, StoreError> {
        self.apply_now(std::slice::from_ref(write))
            .pop()
            .unwrap_or_else(|| Err(StoreError::backend("the store gave no result for a write")))
    }
}

/// A key-value store of session bytes, usable as `Arc<dyn Store>`.
///
/// Only [`name`](Store::name), [`read`](Store::read), [`write`](Store::write) and
/// [`delete`](Store::delete) are required. Keys arrive fully namespaced; a store must treat
/// them as opaque bytes (spaces, quotes, `%`, `*`, unicode) and never interpret them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, store::{Record, Store, StoreError}};
/// use std::{collections::HashMap, sync::{Arc, Mutex}, time::Duration};
///
/// /// The three required operations over a map (no revisions, no expiry).
/// #[derive(Default)]
/// struct TinyStore(Mutex<HashMap<String, Vec<u8>>>);
///
/// #[multisession::async_trait]
/// impl Store for TinyStore {
///     fn name(&self) -> &str {
///         "tiny"
///     }
///     async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
///         let map = self.0.lock().map_err(StoreError::backend)?;
///         Ok(map.get(key).map(|value| Record::new(value.clone(), 0)))
///     }
///     async fn write(&self, key: &str, value: &[u8], _ttl: Option<Duration>) -> Result<(), StoreError> {
///         self.0.lock().map_err(StoreError::backend)?.insert(key.to_owned(), value.to_vec());
///         Ok(())
///     }
///     async fn delete(&self, key: &str) -> Result<(), StoreError> {
///         self.0.lock().map_err(StoreError::backend)?.remove(key);
///         Ok(())
///     }
/// }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let tiny = Arc::new(TinyStore::default()); // `Arc<S>` is a store too
/// let sessions = Bot::builder().default_store(tiny.clone()).build();
/// for _ in 0..2 {
///     sessions.run(&ChatContext::new(1), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// }
/// assert_eq!(sessions.load(&ChatContext::new(1)).await?.count, 2);
/// assert!(tiny.0.lock().unwrap().contains_key("count:1"));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for error messages and logs, such as `"memory"` or `"redis"`.
    fn name(&self) -> &str;

    /// What the store can do beyond the basics. Default: [`Capabilities::BASIC`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::BASIC
    }

    /// An identity shared by handles onto one backend, so strict mode can batch reads of
    /// fragments that sit on clones of the same store. Default: the address of `self`.
    fn instance(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// This store as one that answers at once ([`ImmediateStore`]), if it is one. Default:
    /// `None` (every store that does I/O).
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        None
    }

    /// Reads `key`; `None` if it holds no (unexpired) value.
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// Stores `value` under `key` unconditionally.
    async fn write(&self, key: &str, value: &[u8], ttl: Option<Duration>)
    -> Result<(), StoreError>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Reads several keys; the result has one entry per key, in order (duplicates included).
    ///
    /// The default reads them one by one; stores with a batch command override it.
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.read(key).await?);
        }
        Ok(out)
    }

    /// Reads `key` with its remaining time to live: the record, and how long until it
    /// expires (`None`: never). `None` if the key holds no (unexpired) value.
    ///
    /// The TTL is what [`write`](Store::write) takes to store the value again with the
    /// same expiry, so admin tools (the `multisession` command) can show and copy
    /// sessions exactly. The record and its TTL come from one read: they belong together.
    ///
    /// Default: for a store without [`Capabilities::native_ttl`] (its values never
    /// expire by themselves), [`read`](Store::read) with no TTL; for one with it,
    /// [`StoreError::Unsupported`]. The stores that ship implement it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::MemoryStore};
    /// use std::time::Duration;
    ///
    /// let store = MemoryStore::new();
    /// store.write("quiz:1", b"{}", Some(Duration::from_secs(60))).await?;
    /// store.write("pizza:1", b"2", None).await?;
    /// let (record, ttl) = store.read_with_ttl("quiz:1").await?.unwrap();
    /// assert_eq!(record.value, b"{}");
    /// assert!(ttl.unwrap() <= Duration::from_secs(60));
    /// assert_eq!(store.read_with_ttl("pizza:1").await?.unwrap().1, None); // never expires
    /// assert!(store.read_with_ttl("pizza:2").await?.is_none());
    /// # Ok(()) }
    /// ```
    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        if self.capabilities().native_ttl {
            return Err(StoreError::Unsupported("read_with_ttl"));
        }
        Ok(self.read(key).await?.map(|record| (record, None)))
    }

    /// Lists the live keys that start with `prefix` (plain text, never a pattern), a page of
    /// about `limit` entries at a time; pass the returned cursor to get the next page. Every
    /// key present for the whole listing is returned once; keys written meanwhile may or may
    /// not be. Default: [`StoreError::Unsupported`].
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let _ = (prefix, cursor, limit);
        Err(StoreError::Unsupported("list"))
    }

    /// How many live keys start with `prefix`. The default pages through
    /// [`list`](Store::list); stores that can count without reading values override it.
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        count_by_listing(self, prefix).await
    }

    /// Applies a batch of writes; one result per write, in order.
    ///
    /// An `Err` means that write did not land, unless it is [`StoreError::Timeout`] or
    /// [`StoreError::Unknown`] (it may have): the runtime reports each case as such
    /// (rule S26).
    ///
    /// The default applies them one by one with [`write`](Store::write) and
    /// [`delete`](Store::delete), ignoring preconditions (a store without
    /// [`Capabilities::conditional`] cannot check them). Stores with compare-and-set
    /// override it and return [`Outcome::Conflict`] where a precondition fails.
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        let mut out = Vec::with_capacity(writes.len());
        for write in writes {
            let result = match write {
                Write::Put {
                    key, value, ttl, ..
                } => self.write(key, value, *ttl).await,
                Write::Delete { key, .. } => self.delete(key).await,
            };
            out.push(result.map(|()| Outcome::Applied));
        }
        out
    }

    /// [`apply`](Store::apply), and for each applied put the revision it was stored at,
    /// when the store knows it (`None` otherwise, and for deletes and conflicts). A cache
    /// in front of the store ([`CachedStore`](crate::stores::CachedStore)) keeps what it
    /// wrote only when it learns the revision: the next compare-and-set needs it.
    ///
    /// The default is [`apply`](Store::apply) with no revisions; the memory and Redis
    /// stores return them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::{Expect, Outcome, Store, Write}, stores::MemoryStore};
    ///
    /// let store = MemoryStore::new();
    /// let put = Write::Put { key: "count:1".into(), value: b"1".to_vec(), ttl: None, expect: Expect::Absent };
    /// let results = store.apply_with_revisions(&[put]).await;
    /// let (outcome, revision) = results.into_iter().next().unwrap()?;
    /// assert_eq!(outcome, Outcome::Applied);
    /// assert_eq!(revision, Some(store.read("count:1").await?.unwrap().revision));
    /// # Ok(()) }
    /// ```
    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        self.apply(writes)
            .await
            .into_iter()
            .map(|result| result.map(|outcome| (outcome, None)))
            .collect()
    }
}

#[async_trait]
impl<T: Store + ?Sized> Store for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn instance(&self) -> usize {
        (**self).instance()
    }
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        (**self).immediate()
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        (**self).read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        (**self).write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        (**self).read_many(keys).await
    }
    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        (**self).read_with_ttl(key).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        (**self).apply(writes).await
    }
    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        (**self).apply_with_revisions(writes).await
    }
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        (**self).list(prefix, cursor, limit).await
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        (**self).count(prefix).await
    }
}

/// A shared handle to a store, as fragments hold it.
///
/// Anything that implements [`Store`] converts into it, `Arc<dyn Store>` and `Arc<S>` included.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Store, StoreRef}, stores::MemoryStore};
/// use std::sync::Arc;
///
/// let memory = MemoryStore::new();
/// let store: StoreRef = memory.clone().into(); // what `Bot::builder().field(store)` takes
/// let shared: Arc<dyn Store> = Arc::new(memory.clone());
/// let same_backend = StoreRef::from(shared);
/// store.as_dyn().write("count:1", b"1", None).await?;
/// assert!(same_backend.as_dyn().read("count:1").await?.is_some());
/// assert_eq!(format!("{store:?}"), r#"StoreRef("memory")"#);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StoreRef(pub(crate) Arc<dyn Store>);

impl StoreRef {
    /// Wraps a store.
    ///
    /// ```
    /// use multisession::{store::StoreRef, stores::MemoryStore};
    ///
    /// let store = StoreRef::new(MemoryStore::new());
    /// assert_eq!(store.as_dyn().name(), "memory");
    /// ```
    pub fn new<S: Store>(store: S) -> Self {
        StoreRef(Arc::new(store))
    }

    /// The store behind this handle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::{Store, StoreRef}, stores::MemoryStore};
    ///
    /// let store = StoreRef::new(MemoryStore::new());
    /// let backend: &dyn Store = store.as_dyn();
    /// backend.write("count:1", b"1", None).await?;
    /// assert_eq!(backend.read_many(&["count:1", "count:2"]).await?.iter().filter(|r| r.is_some()).count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn as_dyn(&self) -> &dyn Store {
        &*self.0
    }

    /// The shared store.
    ///
    /// ```
    /// use multisession::{store::{Store, StoreRef}, stores::MemoryStore};
    /// use std::sync::Arc;
    ///
    /// let store = StoreRef::new(MemoryStore::new());
    /// let shared: Arc<dyn Store> = store.arc(); // for a task that outlives the handle, say
    /// assert!(Arc::ptr_eq(&shared, &store.arc()), "the same store, not a copy");
    /// ```
    pub fn arc(&self) -> Arc<dyn Store> {
        self.0.clone()
    }
}

impl fmt::Debug for StoreRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreRef").field(&self.0.name()).finish()
    }
}

impl<S: Store> From<S> for StoreRef {
    fn from(store: S) -> Self {
        StoreRef::new(store)
    }
}

/// The outcomes of [`Store::apply_with_revisions`] without the revisions: what
/// [`Store::apply`] returns, for stores that implement the former and derive the latter.
pub(crate) fn without_revisions(
    results: Vec<Result<(Outcome, Option<u64>), StoreError>>,
) -> Vec<Result<Outcome, StoreError>> {
    results
        .into_iter()
        .map(|result| result.map(|(outcome, _)| outcome))
        .collect()
}

/// How many live keys start with `prefix`, by paging through [`Store::list`]: what
/// [`Store::count`] does for a store that cannot count otherwise (and what a store's own
/// `count` can fall back to).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
/// use multisession::{store::{Store, count_by_listing}, stores::MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write("pizza:1", b"1", None).await?;
/// store.write("pizza:2", b"1", None).await?;
/// store.write("quiz:1", b"1", None).await?;
/// assert_eq!(count_by_listing(&store, "pizza:").await?, 2);
/// # Ok(()) }
/// ```
pub async fn count_by_listing<S: Store + ?Sized>(
    store: &S,
    prefix: &str,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(prefix, cursor.as_deref(), 500).await?;
        total += page.entries.len() as u64;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
