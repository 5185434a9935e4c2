//! Per-key locks that keep concurrent updates of one key in one process from losing
//! each other's changes (rule S16), without deadlocks and without needless re-runs.
//!
//! An update that finds a key taken waits for it, unless waiting would close a cycle:
//! every wait is recorded in one process-wide wait-for graph (update → the keys it waits
//! for → the updates holding them), and an update whose wait would lead back to itself
//! gives up at once ([`Error::Contended`](crate::Error)) and is re-run, first taking, in
//! one global order, every key the failed attempt wanted. Only an actual cycle costs a
//! re-run (rule S29); two updates that touch the same keys in opposite orders but do not
//! overlap in time simply take turns.
//!
//! Every wait is bounded ([`Config::lock_timeout`](crate::Config::lock_timeout)), and
//! dropping a waiting future withdraws its wait (rule S28).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::OwnedMutexGuard;

/// One key's lock and the update holding it (0: none).
#[derive(Default)]
struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    holder: AtomicU64,
}

/// FNV-1a: the keys are ours (not attacker-chosen lookups into a long-lived table: a slot
/// lives only while its key is held), and SipHash showed in profiles.
#[derive(Clone, Copy, Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// The locks of one fragment, keyed by storage key.
#[derive(Default)]
#[doc(hidden)]
pub struct KeyLocks {
    map: Mutex<HashMap<Arc<str>, Arc<Slot>, FnvBuild>>,
}

/// The process-wide wait-for graph: which update waits for which slots.
#[derive(Default)]
struct Waits {
    /// By waiting update: the slots it waits for (one per waiting task).
    waiting: HashMap<u64, Vec<Arc<Slot>>>,
}

static WAITS: Mutex<Option<Waits>> = Mutex::new(None);

fn with_waits<R>(f: impl FnOnce(&mut Waits) -> R) -> R {
    let mut waits = WAITS.lock().unwrap_or_else(|p| p.into_inner());
    f(waits.get_or_insert_with(Waits::default))
}

impl Waits {
    /// Whether update `me` waiting for `slot` closes a cycle.
    fn closes_cycle(&self, me: u64, slot: &Slot) -> bool {
        let mut stack = vec![slot.holder.load(Ordering::Acquire)];
        let mut seen = Vec::new();
        while let Some(update) = stack.pop() {
            if update == 0 || seen.contains(&update) {
                continue;
            }
            if update == me {
                return true;
            }
            seen.push(update);
            if let Some(slots) = self.waiting.get(&update) {
                stack.extend(slots.iter().map(|s| s.holder.load(Ordering::Acquire)));
            }
        }
        false
    }

    fn add(&mut self, me: u64, slot: &Arc<Slot>) {
        self.waiting.entry(me).or_default().push(slot.clone());
    }

    fn remove(&mut self, me: u64, slot: &Arc<Slot>) {
        if let Some(slots) = self.waiting.get_mut(&me) {
            if let Some(at) = slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
                slots.swap_remove(at);
            }
            if slots.is_empty() {
                self.waiting.remove(&me);
            }
        }
    }
}

/// A wait recorded in the graph; dropping it (the wait ended or was cancelled) removes it.
struct Waiting {
    me: u64,
    slot: Arc<Slot>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        with_waits(|waits| waits.remove(self.me, &self.slot));
    }
}

/// Why a key could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Waiting would close a cycle of updates waiting for each other: re-run.
    Cycle,
    /// The key stayed taken for the whole limit.
    Timeout(Duration),
}

/// A held key lock. Dropping it releases the key.
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    slot: Arc<Slot>,
    locks: Arc<KeyLocks>,
    key: Arc<str>,
}

impl KeyLocks {
    fn slot(&self, key: &str) -> (Arc<str>, Arc<Slot>) {
        let mut map = self.map.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((key, slot)) = map.get_key_value(key) {
            return (key.clone(), slot.clone());
        }
        let key: Arc<str> = Arc::from(key);
        let slot = Arc::new(Slot::default());
        map.insert(key.clone(), slot.clone());
        (key, slot)
    }

    /// The order in which keys of different fragments are taken by re-runs.
    pub(crate) fn order_id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.slot.holder.store(0, Ordering::Release);
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Only the map and this guard hold the slot: nobody waits for it, so forget it.
        if map
            .get(&*self.key)
            .is_some_and(|slot| Arc::ptr_eq(slot, &self.slot) && Arc::strong_count(slot) == 2)
        {
            map.remove(&*self.key);
        }
    }
}

static NEXT_UPDATE: AtomicU64 = AtomicU64::new(1);

/// Lock bookkeeping of one update attempt (one session handle).
pub(crate) struct UpdateLocks {
    /// This attempt's number in the wait-for graph (never 0).
    no: u64,
    /// Keys held (and acquisitions that got their key but were not handed out yet).
    held: AtomicUsize,
}

impl Default for UpdateLocks {
    fn default() -> Self {
        Self {
            no: NEXT_UPDATE.fetch_add(1, Ordering::Relaxed),
            held: AtomicUsize::new(0),
        }
    }
}

impl UpdateLocks {
    /// Whether this update holds no key.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }

    /// Takes `key`, waiting at most `limit` for it, unless the wait would close a cycle.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        locks: &Arc<KeyLocks>,
        key: &str,
        limit: Option<Duration>,
    ) -> Result<HeldKey, Refused> {
        let (key, slot) = locks.slot(key);
        let guard = match slot.mutex.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                let waiting = with_waits(|waits| {
                    if waits.closes_cycle(self.no, &slot) {
                        return None;
                    }
                    waits.add(self.no, &slot);
                    Some(Waiting {
                        me: self.no,
                        slot: slot.clone(),
                    })
                });
                let Some(waiting) = waiting else {
                    drop(slot);
                    return Err(Refused::Cycle);
                };
                let wait = slot.mutex.clone().lock_owned();
                let guard = match limit {
                    Some(limit) => match tokio::time::timeout(limit, wait).await {
                        Ok(guard) => guard,
                        Err(_) => return Err(Refused::Timeout(limit)),
                    },
                    None => wait.await,
                };
                drop(waiting);
                guard
            }
        };
        slot.holder.store(self.no, Ordering::Release);
        self.held.fetch_add(1, Ordering::AcqRel);
        Ok(HeldKey {
            guard: KeyGuard {
                guard: Some(guard),
                slot,
                locks: locks.clone(),
                key,
            },
            update: self.clone(),
        })
    }
}

/// A key held by an update, until dropped.
pub(crate) struct HeldKey {
    guard: KeyGuard,
    update: Arc<UpdateLocks>,
}

impl HeldKey {
    /// The key held.
    pub(crate) fn key(&self) -> &str {
        &self.guard.key
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        self.update.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn take(update: &Arc<UpdateLocks>, locks: &Arc<KeyLocks>, key: &str) -> HeldKey {
        update
            .acquire(locks, key, Some(Duration::from_secs(5)))
            .await
            .expect("free key")
    }

    #[tokio::test]
    async fn unused_keys_are_forgotten() {
        let locks = Arc::new(KeyLocks::default());
        let one = Arc::new(UpdateLocks::default());
        let a = take(&one, &locks, "a").await;
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_cycle_is_refused_at_once_and_a_plain_wait_is_not() {
        let locks = Arc::new(KeyLocks::default());
        let (one, two) = (
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
        );
        let a = take(&one, &locks, "a").await;
        let b = take(&two, &locks, "b").await;
        // `one` waits for `b` (held by `two`, who waits for nothing): allowed.
        let waiter = {
            let (one, locks) = (one.clone(), locks.clone());
            tokio::spawn(async move {
                one.acquire(&locks, "b", Some(Duration::from_secs(5)))
                    .await
                    .map(drop)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // `two` waiting for `a` would close the cycle.
        assert_eq!(
            two.acquire(&locks, "a", Some(Duration::from_secs(5)))
                .await
                .err(),
            Some(Refused::Cycle)
        );
        drop(b);
        assert_eq!(waiter.await.unwrap().err(), None);
        drop(a);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let locks = Arc::new(KeyLocks::default());
        let (one, two) = (
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
        );
        let a = take(&one, &locks, "a").await;
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), two.acquire(&locks, "a", None)).await;
        assert!(cancelled.is_err());
        assert!(with_waits(|w| !w.waiting.contains_key(&two.no)));
        assert!(two.holds_nothing());
        drop(a);
        let again = take(&two, &locks, "a").await;
        drop(again);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let locks = Arc::new(KeyLocks::default());
        let (one, two) = (
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
        );
        let _a = take(&one, &locks, "a").await;
        let limit = Duration::from_millis(20);
        assert_eq!(
            two.acquire(&locks, "a", Some(limit)).await.err(),
            Some(Refused::Timeout(limit))
        );
    }
}
