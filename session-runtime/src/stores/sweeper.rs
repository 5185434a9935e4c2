//! The background expiry sweeper of the SQL stores: a tokio task that deletes expired
//! rows every `interval`, in small batches so that no statement holds a lock for long.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};

use crate::store::StoreError;

/// Rows one sweep statement deletes at most: small enough that a batch takes a few
/// milliseconds, so updates waiting on the same table wait no longer than that.
pub(crate) const SWEEP_BATCH: u64 = 500;

/// A store whose expired rows can be swept in batches.
pub(crate) trait SweepBatches: Send + Sync + 'static {
    /// Deletes up to `limit` expired rows; returns how many.
    fn sweep_batch(&self, limit: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// The store's name, for logs.
    fn store_name(&self) -> String;
}

/// Deletes every expired row, batch by batch, yielding between batches; returns how many.
pub(crate) async fn sweep_all(store: &dyn SweepBatches) -> Result<u64, StoreError> {
    let mut swept = 0;
    loop {
        let n = store.sweep_batch(SWEEP_BATCH).await?;
        swept += n;
        if n < SWEEP_BATCH {
            return Ok(swept);
        }
        // Let waiting updates in between two batches.
        tokio::task::yield_now().await;
    }
}

/// What a [`Sweeper`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepStats {
    /// Sweeps run to the end (every expired row found was deleted).
    pub sweeps: u64,
    /// Expired rows deleted.
    pub deleted: u64,
    /// Sweeps that stopped on a store error (logged; the next one tries again).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    sweeps: AtomicU64,
    deleted: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SweepStats {
        SweepStats {
            sweeps: self.sweeps.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The handle of a running expiry sweeper (from `SqliteStore::spawn_sweeper` or
/// `PostgresStore::spawn_sweeper`). [`stop`](Sweeper::stop) it to wait for the task to
/// end; dropping the handle also stops it (after the batch under way, if any).
///
/// Expired values read as missing whether or not they were swept; the sweeper only
/// reclaims their space. It deletes in batches of a few hundred rows, each batch its own
/// short statement, so traffic on the table waits at most one batch; a store error is
/// logged (`tracing`, warn) and the next sweep tries again.
#[derive(Debug)]
pub struct Sweeper {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Sweeper {
    /// Starts sweeping `store` every `interval` (the first sweep after one interval).
    /// Needs a tokio runtime: a typed error outside one.
    pub(crate) fn spawn<S: SweepBatches>(store: S, interval: Duration) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            StoreError::backend(format!(
                "{}: the expiry sweeper needs a tokio runtime: {e}",
                store.store_name()
            ))
        })?;
        let (stop, mut stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        // A zero interval would spin: sweep at most every millisecond.
        let interval = interval.max(Duration::from_millis(1));
        let task = runtime.spawn(async move {
            loop {
                // Stopped (or the handle dropped) before the interval is up: done.
                if tokio::time::timeout(interval, stopped.changed()).await.is_ok() {
                    return;
                }
                let name = store.store_name();
                loop {
                    if *stopped.borrow() {
                        return;
                    }
                    match store.sweep_batch(SWEEP_BATCH).await {
                        Ok(n) => {
                            shared.deleted.fetch_add(n, Ordering::Relaxed);
                            if n < SWEEP_BATCH {
                                shared.sweeps.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                        Err(error) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(store = %name, %error, "expiry sweep failed; retrying at the next interval");
                            break;
                        }
                    }
                }
            }
        });
        Ok(Sweeper {
            stop,
            task: Some(task),
            counters,
        })
    }

    /// What the sweeper has done so far.
    pub fn stats(&self) -> SweepStats {
        self.counters.snapshot()
    }

    /// Stops the sweeper and waits for its task to end (after the batch under way, if
    /// any); returns what it did.
    pub async fn stop(mut self) -> SweepStats {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.counters.snapshot()
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // The task sees this between two batches and ends.
        let _ = self.stop.send(true);
    }
}
