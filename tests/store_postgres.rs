//! PostgreSQL store: the conformance suite, expiry, bad input, faults, sessions on it.
//!
//! Needs a server: `MULTISESSION_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Without one the tests skip visibly, or fail
//! under `MULTISESSION_REQUIRE_SERVICES=1`. Every test works in the shared table
//! `multisession_test` under its own key namespace and deletes the keys it wrote.
#![cfg(feature = "postgres")]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use multisession::{
    store::{Expect, Outcome, Store, StoreError, StoreRef, Write},
    stores::{PostgresConfig, PostgresStore},
    testing::{service_unavailable, unique_namespace},
};

const TABLE: &str = "multisession_test";

fn url() -> String {
    std::env::var("MULTISESSION_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The URL with a connection parameter added.
fn url_with(param: &str) -> String {
    let url = url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A store on the shared test table, or `None` (skipped) if the server is unreachable.
async fn store() -> Option<PostgresStore> {
    store_at(&url()).await
}

async fn store_at(url: &str) -> Option<PostgresStore> {
    store_with(url, PostgresConfig::new().table(TABLE)).await
}

async fn store_with(url: &str, config: PostgresConfig) -> Option<PostgresStore> {
    match PostgresStore::connect_with(url, config).await {
        Ok(store) => Some(store),
        Err(e) => service_unavailable("postgresql", url, e),
    }
}

fn put(key: &str, value: &[u8], ttl: Option<Duration>, expect: Expect) -> Write {
    Write::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        ttl,
        expect,
    }
}

async fn cleanup(store: &PostgresStore, keys: &[&str]) {
    for key in keys {
        let _ = store.delete(key).await;
    }
}

mod conformance {
    use super::*;

    async fn make() -> Option<StoreRef> {
        store().await.map(StoreRef::new)
    }

    multisession::conformance_tests!(make);

    /// The same on a schema-qualified name of the same table.
    async fn make_qualified() -> Option<StoreRef> {
        let config = PostgresConfig::new().table(format!("public.{TABLE}"));
        store_with(&url(), config).await.map(StoreRef::new)
    }

    mod qualified {
        multisession::conformance_tests!(super::make_qualified);
    }
}

#[tokio::test]
async fn s18_expired_values_read_as_missing_and_are_swept() {
    let Some(store) = store().await else { return };
    let ns = unique_namespace();
    let (short, batched, long, forever) = (
        format!("{ns}short"),
        format!("{ns}batched"),
        format!("{ns}long"),
        format!("{ns}forever"),
    );
    let ttl = Some(Duration::from_millis(200));
    store.write(&short, b"v", ttl).await.unwrap();
    let applied = store
        .apply(&[put(&batched, b"v", ttl, Expect::Absent)])
        .await;
    assert!(matches!(applied[..], [Ok(Outcome::Applied)]), "{applied:?}");
    store
        .write(&long, b"v", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    store.write(&forever, b"v", None).await.unwrap();
    assert!(store.read(&short).await.unwrap().is_some());

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.read(&short).await.unwrap(), None);
    assert_eq!(store.read(&batched).await.unwrap(), None);
    let batch = store.read_many(&[&short, &long, &batched]).await.unwrap();
    assert_eq!(
        batch.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert!(store.read(&long).await.unwrap().is_some());
    assert!(store.read(&forever).await.unwrap().is_some());
    // An expired key counts as absent for compare-and-set, and is not listed.
    let listed = store.list(&ns, None, 10).await.unwrap();
    let mut keys: Vec<&str> = listed.entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, [forever.as_str(), long.as_str()]);

    // Both expired rows are still in the table until swept (another test process could
    // sweep them first, hence "at least").
    assert!(store.sweep_expired().await.unwrap() >= 2);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);

    // A write without TTL clears an earlier expiry; an expired key can be created again.
    store.write(&long, b"v", None).await.unwrap();
    store
        .write(&short, b"v", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recreated = store
        .apply(&[put(&short, b"w", None, Expect::Absent)])
        .await;
    assert!(
        matches!(recreated[..], [Ok(Outcome::Applied)]),
        "{recreated:?}"
    );
    assert_eq!(store.read(&short).await.unwrap().unwrap().value, b"w");
    assert!(store.read(&long).await.unwrap().is_some());
    cleanup(&store, &[&short, &batched, &long, &forever]).await;
}

#[tokio::test]
async fn a_table_name_is_never_injected() {
    // Rejected before any connection is made, so this needs no server.
    for bad in [
        "x\"; DROP TABLE y; --",
        "1abc",
        "",
        "a b",
        "ünï",
        "a.b.c",
        "a'b",
        "sessions;",
        "public.",
    ] {
        let result = PostgresStore::connect_with(&url(), PostgresConfig::new().table(bad)).await;
        match result {
            Err(StoreError::Backend(e)) => {
                assert!(
                    e.to_string().contains("invalid PostgreSQL table name"),
                    "{e}"
                )
            }
            Err(other) => panic!("table name {bad:?}: unexpected error {other}"),
            Ok(_) => panic!("table name {bad:?} was accepted"),
        }
    }
}

/// Several processes starting at once on a new table: one creates it, none fails. The
/// table is dropped at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_create_one_table() {
    let Some(admin) = store().await else { return };
    let table = format!("ms_test_{}", unique_namespace().replace([':', '-'], "_"))
        .chars()
        .take(48)
        .collect::<String>();
    let connects = (0..4).map(|_| {
        let (url, table) = (url(), table.clone());
        tokio::spawn(async move {
            PostgresStore::connect_with(&url, PostgresConfig::new().table(table)).await
        })
    });
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(connect.await.unwrap());
    }
    let drop_table = async {
        let client = admin.pool().get().await.expect("admin connection");
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{table}\"; DROP SEQUENCE IF EXISTS \"{table}_revision_seq\";"
            ))
            .await
    };
    let stores: Vec<PostgresStore> = match stores.into_iter().collect::<Result<_, _>>() {
        Ok(stores) => stores,
        Err(e) => {
            let _ = drop_table.await;
            panic!("a concurrent connect failed: {e}");
        }
    };
    stores[0].write("k", b"v", None).await.unwrap();
    let rev = stores[3].read("k").await.unwrap().unwrap().revision;
    let out = stores[1]
        .apply(&[put("k", b"w", None, Expect::Revision(rev))])
        .await;
    assert!(matches!(out[..], [Ok(Outcome::Applied)]), "{out:?}");
    assert_eq!(stores[2].read("k").await.unwrap().unwrap().value, b"w");
    drop(stores);
    drop_table.await.expect("drop the test table");
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error_not_a_hang() {
    let config = PostgresConfig::new()
        .table(TABLE)
        .connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::connect_with("postgres://postgres@127.0.0.1:1/test", config),
    )
    .await
    .expect("connect hung past its timeout");
    match result {
        Err(StoreError::Backend(e)) => eprintln!("refused as expected: {e}"),
        Err(StoreError::Timeout(d)) => eprintln!("timed out as expected after {d:?}"),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    eprintln!("failed after {:?}", started.elapsed());
    // A URL that does not parse is an error too, not a panic.
    assert!(PostgresStore::connect("postgres://[::1").await.is_err());
}

/// A server that accepts the connection but never answers: a timeout, not a hang.
#[tokio::test]
async fn a_silent_server_is_a_timeout_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // never read, never answered
        }
    });
    let config = PostgresConfig::new()
        .table(TABLE)
        .connect_timeout(Duration::from_millis(500));
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::connect_with(&url, config),
    )
    .await
    .expect("connect hung past its timeout");
    match result {
        Err(StoreError::Timeout(d)) => assert_eq!(d, Duration::from_millis(500)),
        Err(other) => panic!("expected a timeout, got: {other}"),
        Ok(_) => panic!("connected to a silent server"),
    }
    silent.abort();
}

/// A statement stuck behind another session's row lock fails with a timeout, and the
/// store works normally afterwards.
#[tokio::test]
async fn a_statement_past_its_timeout_is_a_typed_error() {
    let Some(admin) = store().await else { return };
    let config = PostgresConfig::new()
        .table(TABLE)
        .statement_timeout(Duration::from_millis(500));
    let Some(store) = store_with(&url(), config).await else {
        return;
    };
    let key = format!("{}locked", unique_namespace());
    store.write(&key, b"v", None).await.unwrap();
    let locker = admin.pool().get().await.expect("admin connection");
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM multisession_test WHERE key = $1 FOR UPDATE",
            &[&key.as_bytes()],
        )
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), store.write(&key, b"w", None))
        .await
        .expect("the write hung past its timeout");
    assert!(matches!(result, Err(StoreError::Timeout(_))), "{result:?}");
    let batch = [
        put(&key, b"w", None, Expect::Any),
        put(&format!("{key}2"), b"w", None, Expect::Any),
    ];
    let results = store.apply(&batch).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(StoreError::Timeout(_)))),
        "{results:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    drop(locker);
    // Nothing of the timed-out writes was applied, and the store works again.
    assert_eq!(store.read(&key).await.unwrap().unwrap().value, b"v");
    assert_eq!(store.read(&format!("{key}2")).await.unwrap(), None);
    store.write(&key, b"x", None).await.unwrap();
    assert_eq!(store.read(&key).await.unwrap().unwrap().value, b"x");
    cleanup(&store, &[&key, &format!("{key}2")]).await;
}

/// The server drops the store's connections (as on a restart); the pool discards them and
/// the next operations succeed on new ones.
#[tokio::test]
async fn the_pool_reconnects_after_the_server_drops_connections() {
    let app = format!("ms_test_{}", unique_namespace().replace([':', '-'], "_"));
    let Some(admin) = store().await else { return };
    let Some(store) = store_at(&url_with(&format!("application_name={app}"))).await else {
        return;
    };
    let key = format!("{}k", unique_namespace());
    store.write(&key, b"before", None).await.unwrap();
    assert!(store.read(&key).await.unwrap().is_some());

    let admin_client = admin.pool().get().await.expect("admin connection");
    let killed: i64 = admin_client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate the store's connections")
        .get(0);
    assert!(killed >= 1, "no connection of the store was found to drop");
    drop(admin_client);

    // A read right away: its connection may be the dropped one; it is retried once on a
    // new connection.
    let got = store
        .read(&key)
        .await
        .expect("read after the connections were dropped");
    assert_eq!(got.unwrap().value, b"before");
    store.write(&key, b"after", None).await.unwrap();
    assert_eq!(store.read(&key).await.unwrap().unwrap().value, b"after");
    cleanup(&store, &[&key]).await;
}

/// Two pools (as two processes) create the same absent key at once: exactly one wins,
/// the other gets a conflict, and nobody sees a unique-violation error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_key_give_one_applied_one_conflict() {
    let (Some(a), Some(b)) = (store().await, store().await) else {
        return;
    };
    let ns = unique_namespace();
    let mut keys = Vec::new();
    for round in 0..40 {
        let key = format!("{ns}{round}");
        let (wa, wb) = (
            [put(&key, b"a", None, Expect::Absent)],
            [put(&key, b"b", None, Expect::Absent)],
        );
        let (ra, rb) = tokio::join!(a.apply(&wa), b.apply(&wb));
        let outcomes: Vec<Outcome> = ra
            .into_iter()
            .chain(rb)
            .map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")))
            .collect();
        let applied = outcomes.iter().filter(|o| **o == Outcome::Applied).count();
        assert_eq!(applied, 1, "round {round}: {outcomes:?}");
        keys.push(key);
    }
    // Batches over two keys in opposite orders: all or nothing, never a deadlock error.
    for round in 0..20 {
        let (x, y) = (format!("{ns}x{round}"), format!("{ns}y{round}"));
        let wa = [
            put(&x, b"a", None, Expect::Absent),
            put(&y, b"a", None, Expect::Absent),
        ];
        let wb = [
            put(&y, b"b", None, Expect::Absent),
            put(&x, b"b", None, Expect::Absent),
        ];
        let (ra, rb) = tokio::join!(a.apply(&wa), b.apply(&wb));
        let ra: Vec<Outcome> = ra.into_iter().map(|r| r.unwrap()).collect();
        let rb: Vec<Outcome> = rb.into_iter().map(|r| r.unwrap()).collect();
        assert!(ra.iter().all(|o| *o == ra[0]) && rb.iter().all(|o| *o == rb[0]));
        assert_ne!(ra[0], rb[0], "round {round}: both or neither batch applied");
        let winner: &[u8] = if ra[0] == Outcome::Applied {
            b"a"
        } else {
            b"b"
        };
        assert_eq!(a.read(&x).await.unwrap().unwrap().value, winner);
        assert_eq!(a.read(&y).await.unwrap().unwrap().value, winner);
        keys.extend([x, y]);
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    cleanup(&a, &refs).await;
}

/// Batches that write one key twice behave like the memory store: every precondition is
/// checked against the state before the batch, and the last write wins.
#[tokio::test]
async fn batches_writing_one_key_twice_match_the_memory_store() {
    let Some(store) = store().await else { return };
    let memory = multisession::stores::MemoryStore::new();
    let ns = unique_namespace();
    let key = format!("{ns}k");
    let batches = [
        vec![
            put(&key, b"1", None, Expect::Absent),
            put(&key, b"2", None, Expect::Absent),
        ],
        vec![put(&key, b"3", None, Expect::Absent)],
        vec![
            put(&key, b"4", None, Expect::Any),
            Write::Delete {
                key: key.clone(),
                expect: Expect::Any,
            },
        ],
        vec![
            Write::Delete {
                key: key.clone(),
                expect: Expect::Absent,
            },
            put(&key, b"5", None, Expect::Any),
        ],
        vec![put(&key, b"6", None, Expect::Revision(u64::MAX))],
    ];
    for batch in &batches {
        let got: Vec<Outcome> = store
            .apply(batch)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let want: Vec<Outcome> = memory
            .apply(batch)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, want, "{batch:?}");
        let value = |r: Option<multisession::store::Record>| r.map(|r| r.value);
        assert_eq!(
            value(store.read(&key).await.unwrap()),
            value(memory.read(&key).await.unwrap()),
            "{batch:?}"
        );
    }
    cleanup(&store, &[&key]).await;
}

/// Rough per-operation latency (not an assertion): `cargo test --features postgres --test
/// store_postgres -- --ignored --nocapture latency`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn latency() {
    let Some(store) = store().await else { return };
    let ns = unique_namespace();
    let keys: Vec<String> = (0..3).map(|i| format!("{ns}{i}")).collect();
    for key in &keys {
        store.write(key, &[7u8; 200], None).await.unwrap();
    }
    const N: u32 = 1000;
    static SINK: AtomicU64 = AtomicU64::new(0);
    async fn time<F: std::future::Future<Output = ()>>(name: &str, mut f: impl FnMut() -> F) {
        for _ in 0..50 {
            f().await;
        }
        let started = Instant::now();
        for _ in 0..N {
            f().await;
        }
        eprintln!(
            "{name:<40} {:>8.1} µs",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(N)
        );
    }
    let k0 = keys[0].as_str();
    time("read (hit)", || async {
        let r = store.read(k0).await.unwrap();
        SINK.fetch_add(r.map_or(0, |r| r.revision), Ordering::Relaxed);
    })
    .await;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    time("read_many (3 keys)", || async {
        store.read_many(&refs).await.unwrap();
    })
    .await;
    time("write (upsert)", || async {
        store.write(k0, &[1u8; 200], None).await.unwrap();
    })
    .await;
    time("apply 1 write (read + CAS)", || async {
        let rev = store.read(k0).await.unwrap().unwrap().revision;
        let out = store
            .apply(&[put(k0, &[2u8; 200], None, Expect::Revision(rev))])
            .await;
        assert!(matches!(out[..], [Ok(Outcome::Applied)]));
    })
    .await;
    time("apply 3 writes (read_many + CAS batch)", || async {
        let recs = store.read_many(&refs).await.unwrap();
        let batch: Vec<Write> = refs
            .iter()
            .zip(recs)
            .map(|(k, r)| put(k, &[3u8; 200], None, Expect::Revision(r.unwrap().revision)))
            .collect();
        let out = store.apply(&batch).await;
        assert!(out.iter().all(|o| matches!(o, Ok(Outcome::Applied))));
    })
    .await;
    cleanup(&store, &refs).await;
}

/// Round trips per operation (not an assertion): the store talks to the server through a
/// local delay line that holds every client-to-server chunk 20 ms (order kept, so
/// pipelined requests share one delay); an operation's time over 20 ms is its number of
/// sequential round trips. Uses `MULTISESSION_POSTGRES_ADDR` (default `127.0.0.1:5432`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn round_trips() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DELAY: Duration = Duration::from_millis(20);
    let target =
        std::env::var("MULTISESSION_POSTGRES_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                return;
            };
            // No Nagle: it would hold pipelined chunks back until the previous one is
            // acknowledged, and count as extra round trips.
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    let _ = tx.send((Instant::now() + DELAY, buf[..n].to_vec()));
                }
            });
            tokio::spawn(async move {
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due.into()).await;
                    if server_write.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let config = PostgresConfig::new().table(TABLE).pool_size(1);
    let Some(store) = store_with(&url, config).await else {
        return;
    };
    let ns = unique_namespace();
    let keys: Vec<String> = (0..3).map(|i| format!("{ns}{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    async fn trips<F: std::future::Future<Output = ()>>(name: &str, mut f: impl FnMut() -> F) {
        f().await; // prepares the statements on the connection
        let started = Instant::now();
        for _ in 0..5 {
            f().await;
        }
        let each = started.elapsed().as_secs_f64() / 5.0;
        eprintln!("{name:<32} {:.1} round trips", each / DELAY.as_secs_f64());
    }
    for key in &refs {
        store.write(key, b"v", None).await.unwrap();
    }
    let k0 = refs[0];
    trips("write", || async {
        store.write(k0, b"v", None).await.unwrap();
    })
    .await;
    trips("read", || async {
        store.read(k0).await.unwrap();
    })
    .await;
    trips("read_many (3 keys)", || async {
        store.read_many(&refs).await.unwrap();
    })
    .await;
    trips("apply 1 conditional write", || async {
        let out = store.apply(&[put(k0, b"w", None, Expect::Any)]).await;
        assert!(matches!(out[..], [Ok(Outcome::Applied)]));
    })
    .await;
    trips("apply 3 conditional writes", || async {
        let batch: Vec<Write> = refs
            .iter()
            .map(|k| put(k, b"w", None, Expect::Any))
            .collect();
        let out = store.apply(&batch).await;
        assert!(out.iter().all(|o| matches!(o, Ok(Outcome::Applied))));
    })
    .await;
    cleanup(&store, &refs).await;
    proxy.abort();
}

/// Rule S26 on PostgreSQL: how each failed write is reported.
mod s26 {
    use super::*;

    /// A private table (with the store's sequence), its own trigger function, and a store
    /// on it whose connections carry a unique `application_name`; dropped by `cleanup`.
    struct Private {
        table: String,
        app: String,
        store: PostgresStore,
        admin: PostgresStore,
    }

    impl Private {
        async fn new() -> Option<Private> {
            let unique = unique_namespace().replace([':', '-'], "_");
            let table = format!("t{unique}");
            let app = format!("a{unique}");
            let admin = store().await?;
            let url = url_with(&format!("application_name={app}"));
            let store = store_with(&url, PostgresConfig::new().table(&table)).await?;
            let client = admin.pool().get().await.expect("admin connection");
            // `slow-before` sleeps in its statement, `slow-commit` at COMMIT (a deferred
            // trigger), `bad` fails its statement.
            client
                .batch_execute(&format!(
                    r#"CREATE FUNCTION "{table}_slow"() RETURNS trigger LANGUAGE plpgsql AS
                           $$ BEGIN PERFORM pg_sleep(8); RETURN NEW; END $$;
                       CREATE FUNCTION "{table}_bad"() RETURNS trigger LANGUAGE plpgsql AS
                           $$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;
                       CREATE TRIGGER "{table}_before" BEFORE INSERT OR UPDATE ON "{table}"
                           FOR EACH ROW WHEN (NEW.key = 'slow-before'::bytea)
                           EXECUTE FUNCTION "{table}_slow"();
                       CREATE TRIGGER "{table}_refuse" BEFORE INSERT OR UPDATE ON "{table}"
                           FOR EACH ROW WHEN (NEW.key = 'bad'::bytea)
                           EXECUTE FUNCTION "{table}_bad"();
                       CREATE CONSTRAINT TRIGGER "{table}_commit" AFTER INSERT OR UPDATE
                           ON "{table}" DEFERRABLE INITIALLY DEFERRED
                           FOR EACH ROW WHEN (NEW.key = 'slow-commit'::bytea)
                           EXECUTE FUNCTION "{table}_slow"();"#
                ))
                .await
                .expect("create the test triggers");
            Some(Private {
                table,
                app,
                store,
                admin,
            })
        }

        /// Terminates the store's backend once it sleeps in a trigger.
        async fn terminate_when_sleeping(&self) {
            let client = self.admin.pool().get().await.expect("admin connection");
            let started = Instant::now();
            loop {
                let row = client
                    .query_opt(
                        "SELECT pid FROM pg_stat_activity \
                         WHERE application_name = $1 AND wait_event = 'PgSleep'",
                        &[&self.app],
                    )
                    .await
                    .expect("pg_stat_activity");
                if let Some(row) = row {
                    let pid: i32 = row.get(0);
                    client
                        .execute("SELECT pg_terminate_backend($1)", &[&pid])
                        .await
                        .expect("terminate the store's connection");
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the write never reached its sleeping trigger"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// Runs `batch` and terminates its connection while it sleeps in a trigger.
        async fn apply_and_kill(&self, batch: &[Write]) -> Vec<Result<Outcome, StoreError>> {
            let (results, ()) = tokio::join!(
                tokio::time::timeout(Duration::from_secs(30), self.store.apply(batch)),
                self.terminate_when_sleeping(),
            );
            results.expect("the write hung")
        }

        async fn cleanup(self) {
            let client = self.admin.pool().get().await.expect("admin connection");
            let table = &self.table;
            let _ = client
                .batch_execute(&format!(
                    r#"DROP TABLE IF EXISTS "{table}";
                       DROP SEQUENCE IF EXISTS "{table}_revision_seq";
                       DROP FUNCTION IF EXISTS "{table}_slow"();
                       DROP FUNCTION IF EXISTS "{table}_bad"();"#
                ))
                .await;
        }
    }

    fn not_written(results: &[Result<Outcome, StoreError>]) -> bool {
        !results.is_empty()
            && results
                .iter()
                .all(|r| matches!(r, Err(e @ StoreError::Backend(_)) if !e.outcome_unknown()))
    }

    fn unknown(results: &[Result<Outcome, StoreError>]) -> bool {
        !results.is_empty()
            && results
                .iter()
                .all(|r| matches!(r, Err(StoreError::Unknown(_))))
    }

    /// No connection from the pool within the connect timeout: nothing was sent.
    #[tokio::test]
    async fn no_connection_from_the_pool_is_not_written() {
        let config = PostgresConfig::new()
            .table(TABLE)
            .pool_size(1)
            .connect_timeout(Duration::from_millis(300));
        let Some(store) = store_with(&url(), config).await else {
            return;
        };
        let key = format!("{}pool", unique_namespace());
        let held = store.pool().get().await.expect("the only connection");
        let results = store.apply(&[put(&key, b"v", None, Expect::Any)]).await;
        eprintln!("{results:?}");
        assert!(not_written(&results), "{results:?}");
        drop(held);
        assert_eq!(store.read(&key).await.unwrap(), None);
        let results = store.apply(&[put(&key, b"v", None, Expect::Any)]).await;
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
        cleanup(&store, &[&key]).await;
    }

    /// A statement the server refuses: inside a batch the transaction is rolled back, and
    /// alone it is its own transaction, rolled back too: not written either way.
    #[tokio::test]
    async fn a_refused_statement_is_not_written() {
        let Some(private) = Private::new().await else {
            return;
        };
        let store = &private.store;
        let results = store
            .apply(&[
                put("a", b"v", None, Expect::Any),
                put("bad", b"v", None, Expect::Any),
            ])
            .await;
        eprintln!("batch: {results:?}");
        assert!(not_written(&results), "{results:?}");
        assert_eq!(store.read("a").await.unwrap(), None);
        let results = store.apply(&[put("bad", b"v", None, Expect::Absent)]).await;
        eprintln!("single: {results:?}");
        assert!(not_written(&results), "{results:?}");
        assert_eq!(store.read("bad").await.unwrap(), None);
        private.cleanup().await;
    }

    /// The connection dies while a batch's statements run (before COMMIT was sent): the
    /// server rolls the transaction back, so it is "not written". It dies while COMMIT
    /// is pending, or while a single write (its own transaction) runs: the outcome is
    /// unknown. The store works again afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_is_not_written_before_commit_and_unknown_during_it() {
        let Some(private) = Private::new().await else {
            return;
        };
        let store = &private.store;

        let results = private
            .apply_and_kill(&[
                put("a", b"v", None, Expect::Any),
                put("slow-before", b"v", None, Expect::Any),
            ])
            .await;
        eprintln!("before COMMIT: {results:?}");
        assert!(not_written(&results), "{results:?}");
        assert_eq!(store.read("a").await.unwrap(), None);

        let results = private
            .apply_and_kill(&[
                put("b", b"v", None, Expect::Any),
                put("slow-commit", b"v", None, Expect::Any),
            ])
            .await;
        eprintln!("during COMMIT: {results:?}");
        assert!(unknown(&results), "{results:?}");

        let results = private
            .apply_and_kill(&[put("slow-before", b"v", None, Expect::Absent)])
            .await;
        eprintln!("single write: {results:?}");
        assert!(unknown(&results), "{results:?}");

        let results = store.apply(&[put("c", b"v", None, Expect::Absent)]).await;
        assert!(matches!(results[..], [Ok(Outcome::Applied)]), "{results:?}");
        private.cleanup().await;
    }
}
