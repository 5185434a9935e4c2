//! Memory store options: default TTL, sweeping, snapshots (issue 4, item 4).

use std::time::Duration;

use multisession::{
    store::{Store, StoreError},
    stores::MemoryStore,
};

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "multisession-{name}-{}",
        multisession::testing::unique_namespace().trim_end_matches(':')
    ))
}

#[tokio::test]
async fn s18_a_ttl_makes_values_read_as_missing() {
    let store = MemoryStore::new();
    store
        .write("k", b"v", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    store.write("forever", b"v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.read("k").await.unwrap(), None);
    assert!(store.read("forever").await.unwrap().is_some());
}

#[tokio::test]
async fn the_default_ttl_applies_to_writes_without_one() {
    let store = MemoryStore::options()
        .default_ttl(Duration::from_millis(100))
        .open()
        .unwrap();
    store.write("k", b"v", None).await.unwrap();
    assert!(store.read("k").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.read("k").await.unwrap(), None);
}

#[tokio::test]
async fn sweeping_removes_expired_values() {
    let store = MemoryStore::new();
    store
        .write("a", b"v", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    store.write("b", b"v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.sweep(), 1);
    assert_eq!(store.sweep(), 0);
    assert_eq!(store.len(), 1);

    let swept = MemoryStore::options()
        .sweep_every(Duration::from_millis(20))
        .open()
        .unwrap();
    swept
        .write("a", b"v", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(swept.sweep(), 0, "the background sweep already removed it");
}

#[tokio::test]
async fn a_snapshot_survives_a_restart() {
    let path = temp_path("snapshot");
    let old_revision = {
        let store = MemoryStore::options()
            .snapshot(&path, Duration::from_secs(3600))
            .open()
            .unwrap();
        store.write("plain", b"value", None).await.unwrap();
        store
            .write("bytes", &[0, 255, 1], Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        store
            .write("expiring", b"x", Some(Duration::from_millis(1)))
            .await
            .unwrap();
        let revision = store.read("plain").await.unwrap().unwrap().revision;
        tokio::time::sleep(Duration::from_millis(20)).await; // let "expiring" expire
        // Dropping the last handle saves the snapshot.
        revision
    };
    let store = MemoryStore::options()
        .snapshot(&path, Duration::from_secs(3600))
        .open()
        .unwrap();
    assert_eq!(store.read("plain").await.unwrap().unwrap().value, b"value");
    assert_eq!(
        store.read("bytes").await.unwrap().unwrap().value,
        [0, 255, 1]
    );
    assert_eq!(store.read("expiring").await.unwrap(), None);
    // Revisions go on from where they were: a revision read before the restart never
    // comes back for a new value.
    store.write("plain", b"new", None).await.unwrap();
    assert!(store.read("plain").await.unwrap().unwrap().revision > old_revision);
    store.save_snapshot().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&*path.file_name().unwrap().to_string_lossy())
        })
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "the temporary file of an atomic save was left behind"
    );
    drop(store);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_an_error_not_an_empty_store() {
    let path = temp_path("corrupt");
    std::fs::write(&path, b"this is not a snapshot").unwrap();
    let err = MemoryStore::options()
        .snapshot(&path, Duration::from_secs(60))
        .open()
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");

    // A real snapshot, truncated.
    {
        let store = MemoryStore::options().snapshot(&path, Duration::from_secs(3600));
        let _ = std::fs::remove_file(&path);
        let store = store.open().unwrap();
        store.write("k", b"some value", None).await.unwrap();
        store.save_snapshot().unwrap();
        std::mem::forget(store); // no save on drop: keep the file as written
    }
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = MemoryStore::options()
        .snapshot(&path, Duration::from_secs(60))
        .open()
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("checksum") || err.to_string().contains("truncated"),
        "{err}"
    );
    // The damaged file is left as it is for inspection.
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len() - 3);
    let _ = std::fs::remove_file(&path);
}

/// Counting by listing, for reference.
async fn listed(store: &MemoryStore, prefix: &str) -> u64 {
    let mut total = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(prefix, cursor.as_deref(), 1000).await.unwrap();
        total += page.entries.len() as u64;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return total,
        }
    }
}

/// Counts taken while writers create and delete keys beside them (counting walks the
/// index without the store's lock) end; once the writers stop, every count equals what a
/// listing finds, and values that expire are not counted, before and after a sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_beside_concurrent_writes() {
    let store = MemoryStore::new();
    for i in 0..20_000u32 {
        store.write(&format!("c:{i:05}"), b"v", None).await.unwrap();
    }
    assert_eq!(store.count("c:").await.unwrap(), 20_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut x = 12_345u32.wrapping_add(w * 7_919);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let key = format!(
                        "{}:{:05}",
                        ["c", "d"][(x >> 3) as usize % 2],
                        (x >> 8) % 30_000
                    );
                    if x.is_multiple_of(3) {
                        store.delete(&key).await.unwrap();
                    } else {
                        store.write(&key, b"w", None).await.unwrap();
                    }
                    if x.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    // Counts while the writers run, some of them first counts of a prefix.
    for prefix in ["c:", "c:1", "d:", "", "c:2", "d:0"] {
        let _ = store.count(prefix).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    for prefix in ["c:", "c:1", "d:", "", "c:2", "d:0", "c:00", "e:"] {
        assert_eq!(
            store.count(prefix).await.unwrap(),
            listed(&store, prefix).await,
            "prefix {prefix:?}"
        );
    }
    // Expiry: a counted prefix with values that expire counts only live ones.
    for i in 0..10 {
        store
            .write(&format!("e:{i}"), b"v", Some(Duration::from_millis(50)))
            .await
            .unwrap();
    }
    store.write("e:forever", b"v", None).await.unwrap();
    assert_eq!(store.count("e:").await.unwrap(), 11);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.count("e:").await.unwrap(), 1);
    assert_eq!(store.sweep(), 10);
    assert_eq!(store.count("e:").await.unwrap(), 1);
}
