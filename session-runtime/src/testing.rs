//! The store conformance suite, for the stores that ship and for yours.
//!
//! Every store in this project runs the same cases through [`conformance_tests!`](crate::conformance_tests). To run
//! them on your own store, enable the `testing` feature in your dev-dependencies and write:
//!
//! ```no_run
//! use multisession::{store::StoreRef, stores::MemoryStore};
//!
//! async fn make_store() -> Option<StoreRef> {
//!     // `None` skips the case (say, when a server is not running); see `service_unavailable`.
//!     Some(StoreRef::new(MemoryStore::new()))
//! }
//!
//! multisession::conformance_tests!(make_store);
//! # fn main() {}
//! ```
//!
//! Each case gets a fresh store from the factory and a unique key namespace, and removes
//! the keys it wrote. The cases panic with a message naming what the store got wrong.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use std::time::Duration;

use crate::store::{
    Capabilities, Expect, Outcome, Page, Record, Store, StoreError, StoreRef, Write,
};

/// Runs one async case on a fresh multi-threaded runtime (so the macro needs no tokio
/// attribute in the caller's crate).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance suite")
        .block_on(future)
}

/// A namespace no other test uses: `ms-test-{pid}-{time}-{n}:`.
pub fn unique_namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "ms-test-{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether tests must fail rather than skip when a service is missing
/// (`MULTISESSION_REQUIRE_SERVICES=1`, which CI sets).
pub fn services_required() -> bool {
    std::env::var("MULTISESSION_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Call when a test's server cannot be reached: prints a visible skip message and returns
/// `None`, or panics when [`services_required`].
pub fn service_unavailable<T>(
    service: &str,
    url: &str,
    error: impl std::fmt::Display,
) -> Option<T> {
    if services_required() {
        panic!(
            "{service} at {url} is required (MULTISESSION_REQUIRE_SERVICES=1) but unavailable: {error}"
        );
    }
    eprintln!(
        "SKIPPED: {service} at {url} is unavailable ({error}); set MULTISESSION_REQUIRE_SERVICES=1 to fail instead"
    );
    None
}

/// How long one case may run before it fails (no test can hang).
pub const CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs `case` on a store from `make` in a fresh namespace; skips if `make` gives none;
/// fails if it runs longer than [`CASE_LIMIT`].
pub fn run_case<M, MF, C, CF>(name: &str, make: M, case: C)
where
    M: FnOnce() -> MF,
    MF: Future<Output = Option<StoreRef>>,
    C: FnOnce(StoreRef, String) -> CF,
    CF: Future<Output = ()>,
{
    block_on(async move {
        let Some(store) = make().await else {
            eprintln!("SKIPPED case {name}: no store");
            return;
        };
        if tokio::time::timeout(CASE_LIMIT, case(store, unique_namespace()))
            .await
            .is_err()
        {
            panic!("case {name} did not finish within {CASE_LIMIT:?}");
        }
    });
}

/// The stores this project's tests run on, each from a factory that gives `None` (a
/// visible skip, or a panic under [`services_required`]) when its server is unreachable.
pub mod stores {
    use crate::store::StoreRef;

    /// A fresh in-memory store.
    pub async fn memory() -> Option<StoreRef> {
        Some(StoreRef::new(crate::stores::MemoryStore::new()))
    }

    /// The SQLite file `multisession-tests.db` in the temp dir, shared by every test (each
    /// case works in its own key namespace).
    #[cfg(feature = "sqlite")]
    pub async fn sqlite() -> Option<StoreRef> {
        let path = std::env::temp_dir().join("multisession-tests.db");
        match crate::stores::SqliteStore::open(&path).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => super::service_unavailable("sqlite", &path.display().to_string(), e),
        }
    }

    /// `MULTISESSION_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub fn redis_url() -> String {
        std::env::var("MULTISESSION_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// `MULTISESSION_REDIS_CLUSTER_URLS` (comma-separated node URLs), default the test
    /// cluster's masters `redis://127.0.0.1:7000`, `:7001`, `:7002`
    /// (`tests/scripts/redis_cluster.sh start DIR 7000`).
    pub fn redis_cluster_urls() -> Vec<String> {
        std::env::var("MULTISESSION_REDIS_CLUSTER_URLS")
            .unwrap_or_else(|_| {
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
            })
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// `MULTISESSION_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
    pub fn postgres_url() -> String {
        std::env::var("MULTISESSION_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A Redis store under the key prefix `multisession-test:`.
    #[cfg(feature = "redis")]
    pub async fn redis() -> Option<StoreRef> {
        let url = redis_url();
        let config = crate::stores::RedisConfig::new().key_prefix("multisession-test:");
        match crate::stores::RedisStore::connect_with(&url, config).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => super::service_unavailable("redis", &url, e),
        }
    }

    /// A PostgreSQL store on the table `multisession_test`.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<StoreRef> {
        let url = postgres_url();
        let config = crate::stores::PostgresConfig::new().table("multisession_test");
        match crate::stores::PostgresStore::connect_with(&url, config).await {
            Ok(store) => Some(StoreRef::new(store)),
            Err(e) => super::service_unavailable("postgresql", &url, e),
        }
    }
}

/// The one "run these cases on these stores" runner: one `#[test]` per case and store.
///
/// Each case is an `async fn(&StoreRef, &str)` (the store, and a key namespace of its own)
/// that panics on failure; it runs on a fresh multi-threaded runtime, bounded by
/// [`CASE_LIMIT`](crate::testing::CASE_LIMIT).
///
/// - `store_cases!(make => path: case, ..)` runs the cases at `path` (`crate`, or
///   `crate::module`) on the store from the factory `make`;
/// - `store_cases!(every store => path: case, ..)` runs them on every store of the
///   project (modules `memory`, `sqlite`, `redis`, `postgres`, as the calling crate's
///   features of those names allow).
///
/// ```no_run
/// use multisession::store::StoreRef;
///
/// async fn round_trip(store: &StoreRef, ns: &str) {
///     let key = format!("{ns}k");
///     store.as_dyn().write(&key, b"v", None).await.unwrap();
///     assert_eq!(store.as_dyn().read(&key).await.unwrap().unwrap().value, b"v");
///     store.as_dyn().delete(&key).await.unwrap();
/// }
///
/// multisession::store_cases!(every store => crate: round_trip);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_cases {
    (@each $make:expr; [$($path:tt)*];) => {};
    (@each $make:expr; [$($path:tt)*]; $case:ident $(, $rest:ident)*) => {
        #[test]
        fn $case() {
            $crate::testing::run_case(stringify!($case), $make, |store, ns| async move {
                $($path)*::$case(&store, &ns).await
            });
        }
        $crate::store_cases!(@each $make; [$($path)*]; $($rest),*);
    };
    (every store => $($path:ident)::+ : $($case:ident),* $(,)?) => {
        mod memory {
            $crate::store_cases!($crate::testing::stores::memory => $($path)::+ : $($case),*);
        }
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $crate::store_cases!($crate::testing::stores::sqlite => $($path)::+ : $($case),*);
        }
        #[cfg(feature = "redis")]
        mod redis {
            $crate::store_cases!($crate::testing::stores::redis => $($path)::+ : $($case),*);
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $crate::store_cases!($crate::testing::stores::postgres => $($path)::+ : $($case),*);
        }
    };
    ($make:expr => $($path:ident)::+ : $($case:ident),* $(,)?) => {
        $crate::store_cases!(@each $make; [$($path)::+]; $($case),*);
    };
}

/// Generates one `#[test]` per conformance case for the store factory `$make`
/// (an `async fn() -> Option<StoreRef>`, or a closure returning such a future), through
/// [`store_cases!`](crate::store_cases).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::store_cases!($make => $crate::testing::cases:
            missing_keys_read_as_none,
            arbitrary_bytes_round_trip,
            awkward_keys_are_opaque,
            deleting_a_missing_key_is_fine,
            batch_reads_keep_order_duplicates_and_misses,
            overwrites_replace_the_value,
            conditional_writes_compare_and_set,
            revisions_never_repeat_after_delete,
            failed_batches_apply_nothing,
            concurrent_read_modify_write_loses_nothing,
            listing_pages_through_exactly_one_prefix,
            counting_counts_exactly_one_prefix,
            long_keys_work_like_short_ones,
            compare_and_set_overwrites_set_the_ttl,
            expired_values_read_as_missing,
            reads_with_ttl_give_the_remaining_ttl,
            concurrent_creates_of_one_key_have_one_winner,
            applied_revisions_are_the_stored_ones,
            immediate_answers_are_the_async_ones,
        );
    };
}

/// Every key of the inner store gets `ns` in front; listings strip it again.
pub struct Namespaced {
    inner: StoreRef,
    ns: String,
}

impl Namespaced {
    /// `inner` with every key under `ns`.
    pub fn new(inner: impl Into<StoreRef>, ns: impl Into<String>) -> Self {
        Self {
            inner: inner.into(),
            ns: ns.into(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.ns)
    }

    /// Removes every live key of the namespace, and `also` (expired keys that listings
    /// skip).
    pub async fn clear(&self, also: &[&str]) {
        for key in also {
            let _ = self.delete(key).await;
        }
        loop {
            let page = self.list("", None, 500).await.expect("list the namespace");
            if page.entries.is_empty() {
                return;
            }
            for (key, _) in page.entries {
                self.delete(&key).await.expect("delete a test key");
            }
        }
    }

    /// `writes` with every key under the namespace.
    fn keyed(&self, writes: &[Write]) -> Vec<Write> {
        writes
            .iter()
            .map(|w| match w {
                Write::Put {
                    key,
                    value,
                    ttl,
                    expect,
                } => Write::Put {
                    key: self.key(key),
                    value: value.clone(),
                    ttl: *ttl,
                    expect: *expect,
                },
                Write::Delete { key, expect } => Write::Delete {
                    key: self.key(key),
                    expect: *expect,
                },
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Store for Namespaced {
    fn name(&self) -> &str {
        self.inner.as_dyn().name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.as_dyn().capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.as_dyn().read(&self.key(key)).await
    }
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.inner.as_dyn().read_many(&refs).await
    }
    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        self.inner.as_dyn().read_with_ttl(&self.key(key)).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.as_dyn().write(&self.key(key), value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.as_dyn().delete(&self.key(key)).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        self.inner.as_dyn().apply(&self.keyed(writes)).await
    }
    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        self.inner
            .as_dyn()
            .apply_with_revisions(&self.keyed(writes))
            .await
    }
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let cursor = cursor.map(|c| self.key(c));
        let page = self
            .inner
            .as_dyn()
            .list(&self.key(prefix), cursor.as_deref(), limit)
            .await?;
        Ok(Page {
            entries: page
                .entries
                .into_iter()
                .filter_map(|(k, r)| k.strip_prefix(&self.ns).map(|k| (k.to_owned(), r)))
                .collect(),
            cursor: page
                .cursor
                .and_then(|c| c.strip_prefix(&self.ns).map(str::to_owned)),
        })
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.as_dyn().count(&self.key(prefix)).await
    }
}

/// The cases, one async function each. Each removes the keys it wrote.
pub mod cases {
    use super::*;

    async fn cleanup(store: &dyn Store, keys: &[String]) {
        for key in keys {
            let _ = store.delete(key).await;
        }
    }

    fn value(record: Option<Record>) -> Option<Vec<u8>> {
        record.map(|r| r.value)
    }

    /// Reading keys that were never written gives `None`, alone and in a batch.
    pub async fn missing_keys_read_as_none(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let key = format!("{ns}never-written");
        assert_eq!(store.read(&key).await.expect("read of a missing key"), None);
        let batch = store
            .read_many(&[&key, &format!("{ns}other")])
            .await
            .expect("batch read");
        assert_eq!(batch, vec![None, None], "batch read of missing keys");
        assert_eq!(
            store.read_many(&[]).await.expect("empty batch read"),
            vec![]
        );
    }

    /// Empty values, NUL bytes, invalid UTF-8 and 1 MiB survive a round trip.
    pub async fn arbitrary_bytes_round_trip(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let mut big = vec![0u8; 1 << 20];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for byte in &mut big {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let values: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("nul", vec![0]),
            ("nuls", vec![0, 0, 1, 0]),
            ("invalid-utf8", vec![0xff, 0xfe, 0xc3, 0x28]),
            ("text", "ünïcødé ✓".as_bytes().to_vec()),
            ("1mib", big),
        ];
        let mut keys = Vec::new();
        for (name, bytes) in &values {
            let key = format!("{ns}{name}");
            store
                .write(&key, bytes, None)
                .await
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
            keys.push(key);
        }
        for ((name, bytes), key) in values.iter().zip(&keys) {
            let got = value(
                store
                    .read(key)
                    .await
                    .unwrap_or_else(|e| panic!("read {name}: {e}")),
            );
            assert_eq!(
                got.as_ref().map(Vec::len),
                Some(bytes.len()),
                "length of {name}"
            );
            assert!(
                got.as_deref() == Some(&bytes[..]),
                "bytes of {name} changed in a round trip"
            );
        }
        cleanup(store, &keys).await;
    }

    /// Keys with spaces, quotes, wildcards, unicode and SQL/Redis metacharacters are
    /// stored as they are, and never match each other.
    pub async fn awkward_keys_are_opaque(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let suffixes = [
            "plain",
            "with space",
            "quote'single",
            "quote\"double",
            "percent%",
            "%",
            "_",
            "colon:colon",
            "*",
            "star*",
            "?",
            "[ab]",
            "{tag}",
            "back\\slash",
            "new\nline",
            "tab\t",
            "nul\u{0}byte",
            "ünïcødé-键-🍕",
            "'; DROP TABLE sessions; --",
            "\" OR 1=1 --",
            "$1",
            "EVAL",
            "\r\n*1\r\n$4\r\nPING\r\n",
        ];
        let keys: Vec<String> = suffixes.iter().map(|s| format!("{ns}{s}")).collect();
        for (i, key) in keys.iter().enumerate() {
            store
                .write(key, i.to_string().as_bytes(), None)
                .await
                .unwrap_or_else(|e| panic!("write key {key:?}: {e}"));
        }
        for (i, key) in keys.iter().enumerate() {
            let got = value(
                store
                    .read(key)
                    .await
                    .unwrap_or_else(|e| panic!("read key {key:?}: {e}")),
            );
            assert_eq!(
                got,
                Some(i.to_string().into_bytes()),
                "key {key:?} read another key's value"
            );
        }
        // Wildcards never match: "star*" must not see "star", "%" must not see "percent%".
        for probe in ["star", "percent", "quote", "new", "ünïcødé", "nul"] {
            let key = format!("{ns}{probe}");
            assert_eq!(
                store.read(&key).await.expect("read"),
                None,
                "{key:?} matched another key"
            );
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let batch = store
            .read_many(&refs)
            .await
            .expect("batch read of awkward keys");
        for (i, got) in batch.into_iter().enumerate() {
            assert_eq!(
                value(got),
                Some(i.to_string().into_bytes()),
                "batch read of {:?}",
                keys[i]
            );
        }
        cleanup(store, &keys).await;
    }

    /// Deleting a key that does not exist succeeds, twice.
    pub async fn deleting_a_missing_key_is_fine(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let key = format!("{ns}missing");
        store.delete(&key).await.expect("delete of a missing key");
        store
            .delete(&key)
            .await
            .expect("second delete of a missing key");
        store.write(&key, b"x", None).await.expect("write");
        store.delete(&key).await.expect("delete");
        assert_eq!(
            store.read(&key).await.expect("read"),
            None,
            "deleted key still reads"
        );
    }

    /// A batch read returns one entry per key, in order, duplicates included.
    pub async fn batch_reads_keep_order_duplicates_and_misses(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let (a, b, missing) = (format!("{ns}a"), format!("{ns}b"), format!("{ns}missing"));
        store.write(&a, b"A", None).await.expect("write a");
        store.write(&b, b"B", None).await.expect("write b");
        let batch = store
            .read_many(&[&b, &missing, &a, &b, &missing])
            .await
            .expect("batch");
        let got: Vec<Option<Vec<u8>>> = batch.into_iter().map(value).collect();
        assert_eq!(
            got,
            vec![
                Some(b"B".to_vec()),
                None,
                Some(b"A".to_vec()),
                Some(b"B".to_vec()),
                None
            ],
            "batch read order, duplicates or misses"
        );
        cleanup(store, &[a, b]).await;
    }

    /// A second write replaces the first; with conditional writes the revision changes.
    pub async fn overwrites_replace_the_value(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let key = format!("{ns}k");
        store.write(&key, b"one", None).await.expect("write");
        let first = store.read(&key).await.expect("read").expect("value");
        store.write(&key, b"two", None).await.expect("overwrite");
        let second = store.read(&key).await.expect("read").expect("value");
        assert_eq!(second.value, b"two");
        if store.capabilities().conditional {
            assert_ne!(
                first.revision, second.revision,
                "an overwrite must change the revision"
            );
        }
        cleanup(store, &[key]).await;
    }

    fn put(key: &str, value: &[u8], expect: Expect) -> Write {
        Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl: None,
            expect,
        }
    }

    async fn apply_one(store: &dyn Store, write: Write) -> Outcome {
        let mut results = store.apply(std::slice::from_ref(&write)).await;
        assert_eq!(results.len(), 1, "apply must return one result per write");
        results
            .pop()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("apply of {write:?} failed"))
    }

    /// `Expect::Absent` and `Expect::Revision` hold exactly when they should.
    pub async fn conditional_writes_compare_and_set(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().conditional {
            eprintln!(
                "store `{}` has no conditional writes: case skipped",
                store.name()
            );
            return;
        }
        let key = format!("{ns}cas");
        assert_eq!(
            apply_one(store, put(&key, b"1", Expect::Absent)).await,
            Outcome::Applied,
            "create if absent"
        );
        assert_eq!(
            apply_one(store, put(&key, b"x", Expect::Absent)).await,
            Outcome::Conflict,
            "create over a value"
        );
        let one = store.read(&key).await.expect("read").expect("value");
        assert_eq!(one.value, b"1", "a conflicting write changed the value");
        let stale = one.revision;
        assert_eq!(
            apply_one(store, put(&key, b"2", Expect::Revision(stale))).await,
            Outcome::Applied,
            "update at the read revision"
        );
        let two = store.read(&key).await.expect("read").expect("value");
        assert_eq!(two.value, b"2");
        assert_ne!(two.revision, stale, "a write must change the revision");
        assert_eq!(
            apply_one(store, put(&key, b"x", Expect::Revision(stale))).await,
            Outcome::Conflict,
            "update at a stale revision"
        );
        let delete_stale = Write::Delete {
            key: key.clone(),
            expect: Expect::Revision(stale),
        };
        assert_eq!(
            apply_one(store, delete_stale).await,
            Outcome::Conflict,
            "delete at a stale revision"
        );
        assert_eq!(
            value(store.read(&key).await.expect("read")),
            Some(b"2".to_vec())
        );
        assert_eq!(
            apply_one(store, put(&key, b"3", Expect::Any)).await,
            Outcome::Applied,
            "unconditional write"
        );
        let three = store.read(&key).await.expect("read").expect("value");
        let delete = Write::Delete {
            key: key.clone(),
            expect: Expect::Revision(three.revision),
        };
        assert_eq!(
            apply_one(store, delete).await,
            Outcome::Applied,
            "delete at the read revision"
        );
        assert_eq!(store.read(&key).await.expect("read"), None);
        let missing = format!("{ns}missing");
        let update_missing = put(&missing, b"x", Expect::Revision(three.revision));
        assert_eq!(
            apply_one(store, update_missing).await,
            Outcome::Conflict,
            "update of a missing key"
        );
        assert_eq!(store.read(&missing).await.expect("read"), None);
        cleanup(store, &[key, missing]).await;
    }

    /// A key deleted and written again never gets a revision a reader may still hold.
    pub async fn revisions_never_repeat_after_delete(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().conditional {
            return;
        }
        let key = format!("{ns}aba");
        store.write(&key, b"a", None).await.expect("write");
        let old = store
            .read(&key)
            .await
            .expect("read")
            .expect("value")
            .revision;
        store.delete(&key).await.expect("delete");
        store.write(&key, b"a", None).await.expect("write again");
        let outcome = apply_one(store, put(&key, b"b", Expect::Revision(old))).await;
        assert_eq!(
            outcome,
            Outcome::Conflict,
            "a revision from before a delete was accepted (ABA)"
        );
        cleanup(store, &[key]).await;
    }

    /// With atomic batches, one failed precondition means nothing of the batch is applied.
    pub async fn failed_batches_apply_nothing(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let caps = store.capabilities();
        if !(caps.conditional && caps.atomic_batch) {
            return;
        }
        let (a, b) = (format!("{ns}a"), format!("{ns}b"));
        store.write(&b, b"B", None).await.expect("write");
        let batch = [put(&a, b"A", Expect::Absent), put(&b, b"X", Expect::Absent)];
        let results = store.apply(&batch).await;
        assert_eq!(results.len(), 2);
        assert!(
            results.iter().all(|r| matches!(r, Ok(Outcome::Conflict))),
            "{results:?}"
        );
        assert_eq!(
            store.read(&a).await.expect("read"),
            None,
            "half of a failed batch was applied"
        );
        assert_eq!(
            value(store.read(&b).await.expect("read")),
            Some(b"B".to_vec())
        );
        let batch = [
            put(&a, b"A", Expect::Absent),
            Write::Delete {
                key: b.clone(),
                expect: Expect::Any,
            },
        ];
        let results = store.apply(&batch).await;
        assert!(
            results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
            "{results:?}"
        );
        assert_eq!(
            value(store.read(&a).await.expect("read")),
            Some(b"A".to_vec())
        );
        assert_eq!(store.read(&b).await.expect("read"), None);
        cleanup(store, &[a, b]).await;
    }

    /// [`Store::list`] pages through the keys under a prefix, each once, and never through
    /// keys of a longer prefix or keys that only match as a pattern.
    pub async fn listing_pages_through_exactly_one_prefix(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().listing {
            let result = store.list(ns, None, 10).await;
            assert!(
                matches!(result, Err(crate::store::StoreError::Unsupported(_))),
                "a store without `listing` must answer list() with Unsupported"
            );
            return;
        }
        let prefix = format!("{ns}p%_*?[a]:");
        let mut mine: Vec<String> = (0..25).map(|i| format!("{prefix}{i:02}")).collect();
        mine.push(prefix.clone()); // the prefix itself is a key under the prefix
        mine.push(format!("{prefix}ünï*"));
        let others = vec![
            format!("{ns}p%_*?[a]"),   // shorter
            format!("{ns}p%_*?[a];x"), // differs in the last prefix character
            format!("{ns}pX_*?[a]:1"), // `%` is not a wildcard
            format!("{ns}p%X*?[a]:1"), // `_` is not a wildcard
            format!("{ns}p%_*?a:1"),   // `[a]` is not a character class
        ];
        for key in mine.iter().chain(&others) {
            store
                .write(key, b"v", None)
                .await
                .unwrap_or_else(|e| panic!("write {key:?}: {e}"));
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for page_number in 0.. {
            assert!(page_number < 100, "listing does not end");
            let page = store
                .list(&prefix, cursor.as_deref(), 10)
                .await
                .expect("list");
            assert!(
                page.entries.len() <= 20,
                "a page of limit 10 returned {}",
                page.entries.len()
            );
            for (key, record) in page.entries {
                assert_eq!(record.value, b"v");
                seen.push(key);
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        seen.sort();
        let mut expected = mine.clone();
        expected.sort();
        assert_eq!(seen, expected, "listing returned wrong keys or duplicates");
        cleanup(store, &mine).await;
        cleanup(store, &others).await;
    }

    /// Keys up to 64 kB work like short ones on every store: read, compare-and-set,
    /// batch reads, listing (under a short and a long prefix) and counting, delete. Keys
    /// that share their first kilobytes stay apart.
    pub async fn long_keys_work_like_short_ones(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let long = |fill: char, len: usize, tail: &str| {
            let mut key = format!("{ns}long:");
            while key.len() < len - tail.len() {
                key.push(fill);
            }
            key.push_str(tail);
            key
        };
        // Two keys alike but for their last bytes, one with multi-byte characters, one
        // of 64 kB.
        let keys = [
            long('a', 4_000, "-1"),
            long('a', 4_000, "-2"),
            long('ü', 9_001, "!"),
            long('z', 65_536, ""),
        ];
        for (i, key) in keys.iter().enumerate() {
            let written = store
                .apply(&[Write::Put {
                    key: key.clone(),
                    value: format!("v{i}").into_bytes(),
                    ttl: None,
                    expect: Expect::Absent,
                }])
                .await;
            assert!(
                matches!(written.as_slice(), [Ok(Outcome::Applied)]),
                "write a {}-byte key: {written:?}",
                key.len()
            );
        }
        for (i, key) in keys.iter().enumerate() {
            let record = store.read(key).await.expect("read").expect("present");
            assert_eq!(
                record.value,
                format!("v{i}").into_bytes(),
                "{} bytes",
                key.len()
            );
        }
        match store.read_with_ttl(&keys[3]).await {
            Ok(Some((record, ttl))) => assert_eq!((record.value, ttl), (b"v3".to_vec(), None)),
            Err(crate::store::StoreError::Unsupported(_)) => {}
            other => panic!("read_with_ttl of a 64 kB key: {other:?}"),
        }
        // Compare-and-set on a long key.
        let record = store.read(&keys[0]).await.unwrap().unwrap();
        let stale = Expect::Revision(record.revision);
        let cas = |value: &str, expect| Write::Put {
            key: keys[0].clone(),
            value: value.as_bytes().to_vec(),
            ttl: None,
            expect,
        };
        assert!(matches!(
            store.apply(&[cas("w", stale)]).await[0],
            Ok(Outcome::Applied)
        ));
        if store.capabilities().conditional {
            let second = store.apply(&[cas("x", stale)]).await;
            assert!(matches!(second[0], Ok(Outcome::Conflict)), "{second:?}");
        } else {
            store.write(&keys[0], b"w", None).await.expect("write");
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let many = store.read_many(&refs).await.expect("read_many");
        let values: Vec<Option<Vec<u8>>> = many.into_iter().map(|r| r.map(|r| r.value)).collect();
        assert_eq!(
            values,
            [
                Some(b"w".to_vec()),
                Some(b"v1".to_vec()),
                Some(b"v2".to_vec()),
                Some(b"v3".to_vec())
            ]
        );
        if store.capabilities().listing {
            let list_all = async |prefix: &str| {
                let mut seen = Vec::new();
                let mut cursor: Option<String> = None;
                for _ in 0..100 {
                    let page = store
                        .list(prefix, cursor.as_deref(), 2)
                        .await
                        .expect("list");
                    seen.extend(page.entries.into_iter().map(|(k, _)| k));
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                seen.sort();
                seen
            };
            let mut all = keys.to_vec();
            all.sort();
            assert_eq!(list_all(&format!("{ns}long:")).await, all, "short prefix");
            let shared = &keys[0][..3_999]; // both 4 kB keys, nothing else
            assert_eq!(
                list_all(shared).await,
                [keys[0].clone(), keys[1].clone()],
                "long prefix"
            );
            assert_eq!(store.count(&format!("{ns}long:")).await.expect("count"), 4);
            assert_eq!(store.count(shared).await.expect("count"), 2);
        }
        for key in &keys {
            store.delete(key).await.expect("delete");
            assert!(store.read(key).await.unwrap().is_none());
        }
    }

    /// A compare-and-set overwrite sets the TTL it is given, both ways (a TTL'd value
    /// overwritten without one stays; one without a TTL overwritten with one expires), and
    /// the value stays listed.
    pub async fn compare_and_set_overwrites_set_the_ttl(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().conditional {
            return;
        }
        let (fading, lasting) = (format!("{ns}ttl:fading"), format!("{ns}ttl:lasting"));
        let put = |key: &str, value: &[u8], ttl, expect| Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl,
            expect,
        };
        let short = Some(Duration::from_millis(150));
        store.write(&lasting, b"1", short).await.expect("write");
        store.write(&fading, b"1", None).await.expect("write");
        for key in [&lasting, &fading] {
            let record = store.read(key).await.unwrap().expect("present");
            let ttl = if key == &lasting { None } else { short };
            let done = store
                .apply(&[put(key, b"2", ttl, Expect::Revision(record.revision))])
                .await;
            assert!(
                matches!(done.as_slice(), [Ok(Outcome::Applied)]),
                "{done:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        let lasting_now = store.read(&lasting).await.unwrap();
        assert_eq!(
            lasting_now.map(|r| r.value),
            Some(b"2".to_vec()),
            "the TTL was dropped"
        );
        assert!(
            store.read(&fading).await.unwrap().is_none(),
            "the new TTL applies"
        );
        if store.capabilities().listing {
            let page = store
                .list(&format!("{ns}ttl:"), None, 10)
                .await
                .expect("list");
            let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, [lasting.as_str()]);
        }
        cleanup(store, &[fading, lasting]).await;
    }

    /// `count(prefix)` counts the live keys under the prefix, exactly: not other prefixes
    /// (wildcard characters are plain), not expired values, not deleted ones.
    pub async fn counting_counts_exactly_one_prefix(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().listing {
            return;
        }
        let prefix = format!("{ns}c%_*:");
        let mine: Vec<String> = (0..1_203).map(|i| format!("{prefix}{i:04}")).collect();
        let others = vec![
            format!("{ns}c%_*"),
            format!("{ns}cX_*:1"),
            format!("{ns}c%_*;1"),
        ];
        let batch: Vec<Write> = mine
            .iter()
            .chain(&others)
            .map(|key| Write::Put {
                key: key.clone(),
                value: b"v".to_vec(),
                ttl: None,
                expect: Expect::Any,
            })
            .collect();
        for chunk in batch.chunks(500) {
            for result in store.apply(chunk).await {
                result.expect("write");
            }
        }
        let expiring = format!("{prefix}expiring");
        let ttl = Duration::from_millis(300);
        let written = std::time::Instant::now();
        store
            .write(&expiring, b"v", Some(ttl))
            .await
            .expect("write");
        let count = store.count(&prefix).await.expect("count");
        if written.elapsed() < ttl {
            assert_eq!(count, 1_204);
        } else {
            // The count ran past the TTL (a loaded machine): either is right.
            assert!(count == 1_204 || count == 1_203, "{count}");
        }
        tokio::time::sleep(ttl + Duration::from_millis(150)).await;
        assert_eq!(store.count(&prefix).await.expect("count"), 1_203, "expired");
        store.delete(&mine[7]).await.expect("delete");
        assert_eq!(store.count(&prefix).await.expect("count"), 1_202, "deleted");
        assert_eq!(
            store.count(&format!("{ns}nothing:")).await.expect("count"),
            0
        );
        cleanup(store, &mine).await;
        cleanup(store, &others).await;
        cleanup(store, &[expiring]).await;
    }

    /// A value written with a TTL reads as missing once it passed, in every read path; a
    /// write without TTL clears an earlier one; an expired key can be created again.
    pub async fn expired_values_read_as_missing(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        if !store.capabilities().native_ttl {
            return;
        }
        let (short, cleared, long) = (
            format!("{ns}short"),
            format!("{ns}cleared"),
            format!("{ns}long"),
        );
        let ttl = Some(std::time::Duration::from_millis(150));
        store
            .write(&short, b"v", ttl)
            .await
            .expect("write with ttl");
        store
            .write(&cleared, b"v", ttl)
            .await
            .expect("write with ttl");
        store
            .write(&cleared, b"w", None)
            .await
            .expect("write without ttl");
        let batch = [Write::Put {
            key: long.clone(),
            value: b"v".to_vec(),
            ttl: Some(std::time::Duration::from_secs(3600)),
            expect: Expect::Any,
        }];
        assert!(matches!(
            store.apply(&batch).await.as_slice(),
            [Ok(Outcome::Applied)]
        ));
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert_eq!(
            store.read(&short).await.expect("read"),
            None,
            "an expired value still reads"
        );
        let batch = store
            .read_many(&[&short, &cleared, &long])
            .await
            .expect("batch read");
        assert!(
            batch[0].is_none(),
            "an expired value still reads in a batch"
        );
        assert_eq!(
            batch[1].as_ref().map(|r| r.value.clone()),
            Some(b"w".to_vec()),
            "a write without TTL did not clear the TTL"
        );
        assert!(batch[2].is_some(), "a value expired before its TTL");
        if store.capabilities().listing {
            let page = store.list(ns, None, 100).await.expect("list");
            assert!(
                page.entries.iter().all(|(key, _)| *key != short),
                "listing shows an expired value"
            );
        }
        if store.capabilities().conditional {
            let create = [Write::Put {
                key: short.clone(),
                value: b"new".to_vec(),
                ttl: None,
                expect: Expect::Absent,
            }];
            assert!(
                matches!(
                    store.apply(&create).await.as_slice(),
                    [Ok(Outcome::Applied)]
                ),
                "an expired key must count as absent"
            );
        }
        cleanup(store, &[short, cleared, long]).await;
    }

    /// `read_with_ttl` gives the same record as `read` and the time left of its TTL
    /// (none for a value written without one, or on a store without expiry); nothing for
    /// a missing or expired key. What it gives, written back, keeps the expiry.
    pub async fn reads_with_ttl_give_the_remaining_ttl(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let native = store.capabilities().native_ttl;
        let (timed, forever, short, copy) = (
            format!("{ns}timed"),
            format!("{ns}forever"),
            format!("{ns}short"),
            format!("{ns}copy"),
        );
        let hour = Duration::from_secs(3600);
        store
            .write(&timed, b"t", Some(hour))
            .await
            .expect("write with ttl");
        store.write(&forever, b"f", None).await.expect("write");
        store
            .write(&short, b"s", Some(Duration::from_millis(150)))
            .await
            .expect("write with ttl");
        let (record, ttl) = store
            .read_with_ttl(&timed)
            .await
            .expect("read_with_ttl")
            .expect("a value written with a TTL reads with its TTL");
        assert_eq!(
            Some(record.clone()),
            store.read(&timed).await.expect("read")
        );
        if native {
            let ttl = ttl.expect("a value written with a TTL has a remaining TTL");
            assert!(
                ttl <= hour && ttl > hour - Duration::from_secs(30),
                "remaining TTL {ttl:?} of a one-hour TTL"
            );
            // Written back with what was read, the value keeps its expiry.
            store
                .write(&copy, &record.value, Some(ttl))
                .await
                .expect("copy");
            let copied = store.read_with_ttl(&copy).await.expect("read copy");
            let left = copied.and_then(|(_, ttl)| ttl).expect("the copy has a TTL");
            assert!(
                left <= ttl && left + Duration::from_secs(30) > ttl,
                "copy TTL {left:?}"
            );
        } else {
            assert_eq!(ttl, None, "a store without expiry reports a TTL");
        }
        let (record, ttl) = store
            .read_with_ttl(&forever)
            .await
            .expect("read_with_ttl")
            .expect("a value written without TTL reads");
        assert_eq!(record.value, b"f");
        assert_eq!(ttl, None, "a value written without TTL has a TTL");
        assert!(
            store
                .read_with_ttl(&format!("{ns}missing"))
                .await
                .expect("read_with_ttl of a missing key")
                .is_none()
        );
        if native {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                store
                    .read_with_ttl(&short)
                    .await
                    .expect("read_with_ttl")
                    .is_none(),
                "an expired value still reads with read_with_ttl"
            );
        }
        cleanup(store, &[timed, forever, short, copy]).await;
    }

    /// [`Store::apply_with_revisions`] says the revision each applied put was stored at,
    /// or nothing: never a wrong one (a cache would compare-and-set on it).
    pub async fn applied_revisions_are_the_stored_ones(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let (a, b) = (format!("{ns}rev:a"), format!("{ns}rev:b"));
        let batch = [
            put(&a, b"1", Expect::Absent),
            put(&b, b"2", Expect::Any),
            Write::Delete {
                key: format!("{ns}rev:missing"),
                expect: Expect::Any,
            },
        ];
        let results = store.apply_with_revisions(&batch).await;
        assert_eq!(results.len(), 3);
        for (key, result) in [&a, &b].into_iter().zip(&results) {
            let (outcome, revision) = result.as_ref().expect("apply");
            assert_eq!(*outcome, Outcome::Applied);
            if let Some(revision) = revision {
                let stored = store.read(key).await.expect("read").expect("stored");
                assert_eq!(stored.revision, *revision, "{key}");
            }
        }
        assert!(
            matches!(results[2], Ok((Outcome::Applied, None))),
            "{:?}",
            results[2]
        );
        // A compare-and-set on the returned revision succeeds (when there is one).
        if let Ok((_, Some(revision))) = &results[0] {
            let next = store
                .apply_with_revisions(&[put(&a, b"3", Expect::Revision(*revision))])
                .await;
            let (outcome, newer) = next.into_iter().next().unwrap().expect("apply");
            assert_eq!(outcome, Outcome::Applied);
            if let Some(newer) = newer {
                assert_ne!(newer, *revision);
                assert_eq!(store.read(&a).await.unwrap().unwrap().revision, newer);
            }
        }
        // A conflict gives no revision.
        let conflict = store
            .apply_with_revisions(&[put(&a, b"4", Expect::Absent)])
            .await;
        assert!(
            matches!(conflict[..], [Ok((Outcome::Conflict, None))])
                || !store.capabilities().conditional,
            "{conflict:?}"
        );
        cleanup(store, &[a, b]).await;
    }

    /// A store that answers at once ([`Store::immediate`])
    /// gives the answers its async methods give: the same records, the same outcomes of
    /// compare-and-set, expired values missing.
    pub async fn immediate_answers_are_the_async_ones(store: &StoreRef, ns: &str) {
        let store = store.as_dyn();
        let Some(now) = store.immediate() else {
            return;
        };
        let (a, b) = (format!("{ns}now:a"), format!("{ns}now:b"));
        assert!(now.read_now(&a).expect("read_now").is_none());
        let results = now.apply_now(&[put(&a, b"1", Expect::Absent)]);
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
        let record = now.read_now(&a).expect("read_now").expect("stored");
        assert_eq!(Some(&record), store.read(&a).await.expect("read").as_ref());
        assert_eq!(record.value, b"1");
        // Compare-and-set: a stale revision conflicts and changes nothing, as in `apply`.
        let stale = Expect::Revision(record.revision);
        let results = now.apply_now(&[put(&a, b"2", stale)]);
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
        let results = now.apply_now(&[put(&a, b"3", stale), put(&b, b"x", Expect::Any)]);
        let capabilities = store.capabilities();
        if capabilities.conditional {
            assert!(matches!(results[0], Ok(Outcome::Conflict)), "{results:?}");
            assert_eq!(
                value(store.read(&a).await.expect("read")),
                Some(b"2".to_vec())
            );
        }
        if capabilities.conditional && capabilities.atomic_batch {
            assert!(matches!(results[1], Ok(Outcome::Conflict)), "{results:?}");
            assert!(
                now.read_now(&b).expect("read_now").is_none(),
                "all or nothing"
            );
        }
        // Expiry: a value past its TTL reads as missing both ways.
        let expiring = Write::Put {
            key: b.clone(),
            value: b"t".to_vec(),
            ttl: Some(Duration::from_millis(20)),
            expect: Expect::Any,
        };
        assert!(matches!(
            now.apply_now(&[expiring])[..],
            [Ok(Outcome::Applied)]
        ));
        assert!(now.read_now(&b).expect("read_now").is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(now.read_now(&b).expect("read_now").is_none());
        assert!(store.read(&b).await.expect("read").is_none());
        let delete = Write::Delete {
            key: a.clone(),
            expect: Expect::Any,
        };
        assert!(matches!(
            now.apply_now(&[delete])[..],
            [Ok(Outcome::Applied)]
        ));
        assert!(store.read(&a).await.expect("read").is_none());
        // One write by itself (`apply_one_now`, the commit's common case): the same
        // answers, a create, a compare-and-set, a stale one, a delete.
        assert!(matches!(
            now.apply_one_now(&put(&a, b"4", Expect::Absent)),
            Ok(Outcome::Applied)
        ));
        let record = now.read_now(&a).expect("read_now").expect("stored");
        assert_eq!(record.value, b"4");
        let current = Expect::Revision(record.revision);
        assert!(matches!(
            now.apply_one_now(&put(&a, b"5", current)),
            Ok(Outcome::Applied)
        ));
        if capabilities.conditional {
            assert!(matches!(
                now.apply_one_now(&put(&a, b"6", current)),
                Ok(Outcome::Conflict)
            ));
            assert!(matches!(
                now.apply_one_now(&put(&a, b"6", Expect::Absent)),
                Ok(Outcome::Conflict)
            ));
        }
        assert_eq!(
            value(store.read(&a).await.expect("read")),
            Some(b"5".to_vec())
        );
        let delete = Write::Delete {
            key: a.clone(),
            expect: Expect::Any,
        };
        assert!(matches!(now.apply_one_now(&delete), Ok(Outcome::Applied)));
        assert!(store.read(&a).await.expect("read").is_none());
        cleanup(store, &[a, b]).await;
    }

    /// Many tasks creating one absent key at once: exactly one wins, the others conflict
    /// (never an error).
    pub async fn concurrent_creates_of_one_key_have_one_winner(shared: &StoreRef, ns: &str) {
        if !shared.as_dyn().capabilities().conditional {
            return;
        }
        let key = Arc::new(format!("{ns}create"));
        let tasks: Vec<_> = (0..16u8)
            .map(|i| {
                let (key, shared) = (key.clone(), shared.clone());
                tokio::spawn(async move {
                    let write = put(&key, &[i], Expect::Absent);
                    apply_one(shared.as_dyn(), write).await
                })
            })
            .collect();
        let mut applied = 0;
        for task in tasks {
            if task.await.expect("a create task panicked") == Outcome::Applied {
                applied += 1;
            }
        }
        assert_eq!(applied, 1, "{applied} creates of one absent key succeeded");
        let _ = shared.as_dyn().delete(&key).await;
    }

    /// 32 tasks × 10 increments of one counter with compare-and-set and retries end at
    /// exactly 320.
    pub async fn concurrent_read_modify_write_loses_nothing(shared: &StoreRef, ns: &str) {
        if !shared.as_dyn().capabilities().conditional {
            return;
        }
        let key = Arc::new(format!("{ns}counter"));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (key, shared) = (key.clone(), shared.clone());
                tokio::spawn(async move {
                    let store = shared.as_dyn();
                    for _ in 0..10 {
                        let mut attempts = 0u32;
                        loop {
                            attempts += 1;
                            assert!(attempts < 10_000, "no progress on a contended key");
                            let current = store.read(&key).await.expect("read");
                            let (n, expect) = match &current {
                                None => (0u64, Expect::Absent),
                                Some(r) => (
                                    std::str::from_utf8(&r.value)
                                        .expect("utf8")
                                        .parse::<u64>()
                                        .expect("number"),
                                    Expect::Revision(r.revision),
                                ),
                            };
                            let write = put(&key, (n + 1).to_string().as_bytes(), expect);
                            if apply_one(store, write).await == Outcome::Applied {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a read-modify-write task panicked");
        }
        let store = shared.as_dyn();
        let end = value(store.read(&key).await.expect("read"));
        assert_eq!(end, Some(b"320".to_vec()), "lost updates under concurrency");
        let _ = store.delete(&key).await;
    }
}
