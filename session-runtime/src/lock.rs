//! Per-key locks that keep concurrent updates of one key in one process from losing
//! each other's changes (rule S16), without deadlocks.
//!
//! The rule that makes it deadlock-free: an update waits for a key only while it holds no
//! other key and has no other acquisition in flight. An update that already holds a key
//! and finds the next one taken gives up ([`Error::Contended`](crate::Error)) and is re-run;
//! the re-run first takes, in one global order, every key the failed attempt wanted. Waits
//! by holders thus only ever happen in that global order, and there is no cycle.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

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
    map: Mutex<HashMap<Arc<str>, Slot, FnvBuild>>,
}

/// A held key lock. Dropping it releases the key.
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<KeyLocks>,
    key: Arc<str>,
}

impl KeyLocks {
    fn slot(&self, key: &str) -> (Arc<str>, Slot) {
        let mut map = self.map.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((key, slot)) = map.get_key_value(key) {
            return (key.clone(), slot.clone());
        }
        let key: Arc<str> = Arc::from(key);
        let slot = Slot::default();
        map.insert(key.clone(), slot.clone());
        (key, slot)
    }

    /// Waits for `key`.
    pub(crate) async fn lock(self: &Arc<Self>, key: &str) -> KeyGuard {
        let (key, slot) = self.slot(key);
        let guard = slot.lock_owned().await;
        self.guard(guard, key)
    }

    /// Takes `key` if it is free.
    pub(crate) fn try_lock(self: &Arc<Self>, key: &str) -> Option<KeyGuard> {
        let (key, slot) = self.slot(key);
        let guard = slot.try_lock_owned().ok()?;
        Some(self.guard(guard, key))
    }

    fn guard(self: &Arc<Self>, guard: OwnedMutexGuard<()>, key: Arc<str>) -> KeyGuard {
        KeyGuard {
            guard: Some(guard),
            locks: self.clone(),
            key,
        }
    }

    /// The order in which keys of different fragments are taken when waiting is allowed.
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
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Only the map holds the slot now: nobody waits for it, so forget it.
        if map
            .get(&*self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(&*self.key);
        }
    }
}

/// Lock bookkeeping of one update (one session handle).
#[derive(Default)]
pub(crate) struct UpdateLocks {
    /// Keys held plus acquisitions in flight.
    active: AtomicUsize,
}

impl UpdateLocks {
    /// Takes `key` under the deadlock-free rule: `None` means "contended, re-run".
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        locks: &Arc<KeyLocks>,
        key: &str,
    ) -> Option<HeldKey> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        let guard = if before == 0 {
            Some(locks.lock(key).await)
        } else {
            locks.try_lock(key)
        };
        match guard {
            Some(guard) => Some(HeldKey {
                _guard: guard,
                update: self.clone(),
            }),
            None => {
                self.active.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// Waits for `key` whatever is held. Only for callers that take their keys in the
    /// global order of [`KeyLocks::order_id`] and key (strict loads and re-runs).
    pub(crate) async fn acquire_in_order(
        self: &Arc<Self>,
        locks: &Arc<KeyLocks>,
        key: &str,
    ) -> HeldKey {
        self.active.fetch_add(1, Ordering::AcqRel);
        HeldKey {
            _guard: locks.lock(key).await,
            update: self.clone(),
        }
    }
}

/// A key held by an update; counts towards the update's held keys until dropped.
pub(crate) struct HeldKey {
    _guard: KeyGuard,
    update: Arc<UpdateLocks>,
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        self.update.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unused_keys_are_forgotten() {
        let locks = Arc::new(KeyLocks::default());
        let a = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none());
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 0);
        assert!(locks.try_lock("a").is_some());
    }

    #[tokio::test]
    async fn a_holder_never_waits() {
        let locks = Arc::new(KeyLocks::default());
        let (one, two) = (
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
        );
        let a = one.acquire(&locks, "a").await.expect("free key");
        let b = two.acquire(&locks, "b").await.expect("free key");
        // `one` holds `a`: it must not wait for `b`.
        assert!(one.acquire(&locks, "b").await.is_none());
        drop(b);
        assert!(one.acquire(&locks, "b").await.is_some());
        drop(a);
    }
}
