//! What one update shares among its fragment cells: its identity, its key locks, its
//! config, and the fragments it could not lock.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::{
    config::Config,
    context::{ChatContext, SessionContext},
    error::Error,
    lock::{HeldKey, KeyLocks, Refused, UpdateLocks},
    stats::Counters,
    store::StoreError,
};

/// The bit set in every generated update id, so generated ids never equal Telegram's
/// (which are below 2^31).
pub(crate) const GENERATED: u64 = 1 << 63;

/// A fresh update id for a context that has none: random, with [`GENERATED`] set, unique
/// across processes for all practical purposes.
pub(crate) fn generated_update_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish() | GENERATED
}

/// The update id of `ctx`: its own, or a generated one.
pub(crate) fn update_id_of(ctx: &dyn SessionContext) -> u64 {
    ctx.update_id().unwrap_or_else(generated_update_id)
}

/// What one update attempt shares among its cells.
pub struct UpdateCtx {
    /// The update's identifiers, for the key functions (run on first need: an update
    /// that never touches a fragment never formats its key).
    pub(crate) ctx: ChatContext,
    /// The update's identity (rule S25): the same across re-runs of one update.
    pub(crate) update_id: u64,
    pub(crate) locks: Arc<UpdateLocks>,
    pub(crate) config: Arc<Config>,
    pub(crate) counters: Arc<Counters>,
    /// Keys taken in advance (re-runs), by fragment index.
    preheld: Mutex<Vec<Option<HeldKey>>>,
    /// Fragments that could not be locked without risking a deadlock, by index.
    contended: Mutex<Vec<(usize, &'static str)>>,
    /// Whether `contended` is non-empty (checked on every update without locking).
    any_contended: AtomicBool,
}

impl UpdateCtx {
    pub(crate) fn new(
        config: Arc<Config>,
        counters: Arc<Counters>,
        ctx: ChatContext,
        update_id: u64,
    ) -> Self {
        // `preheld` grows on first use: most updates never pre-take keys.
        Self {
            ctx,
            update_id,
            locks: Arc::default(),
            config,
            counters,
            preheld: Mutex::new(Vec::new()),
            any_contended: AtomicBool::new(false),
            contended: Mutex::default(),
        }
    }

    pub(crate) fn take_preheld(&self, index: usize) -> Option<HeldKey> {
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        preheld.get_mut(index).and_then(Option::take)
    }

    pub(crate) fn put_preheld(&self, index: usize, held: HeldKey) {
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        if preheld.len() <= index {
            preheld.resize_with(index + 1, || None);
        }
        preheld[index] = Some(held);
    }

    pub(crate) fn mark_contended(&self, index: usize, fragment: &'static str) {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        contended.push((index, fragment));
        self.any_contended.store(true, Ordering::Release);
    }

    pub(crate) fn contended(&self) -> Vec<(usize, &'static str)> {
        if !self.any_contended.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.contended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes `key` of `fragment` (whose locks are `locks`), waiting up to `lock_timeout`.
    pub(crate) async fn hold(
        &self,
        locks: &Arc<KeyLocks>,
        fragment: &'static str,
        key: &str,
    ) -> Result<HeldKey, Error> {
        match self
            .locks
            .acquire(locks, key, self.config.lock_timeout)
            .await
        {
            Ok(held) => Ok(held),
            Err(Refused::Cycle) => Err(Error::Contended {
                fragment,
                key: key.to_owned(),
            }),
            Err(Refused::Timeout(waited)) => Err(Error::Busy {
                fragment,
                key: key.to_owned(),
                waited,
            }),
        }
    }

    /// Runs a store operation under `op_timeout`.
    pub(crate) async fn timed<F, R>(&self, op: F) -> Result<R, StoreError>
    where
        F: Future<Output = Result<R, StoreError>>,
    {
        match self.config.op_timeout {
            Some(limit) => {
                // An operation that completes on its first poll (an in-process store)
                // needs no timer.
                let mut op = std::pin::pin!(op);
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(op.as_mut().poll(cx))).await;
                if let std::task::Poll::Ready(result) = first {
                    return result;
                }
                tokio::time::timeout(limit, op)
                    .await
                    .unwrap_or(Err(StoreError::Timeout(limit)))
            }
            None => op.await,
        }
    }
}
