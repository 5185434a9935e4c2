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
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::oneshot;

/// A key's 64-bit hash: FNV-1a, then mixed so that every bit depends on every byte.
///
/// The lock tables are keyed by it: the uncontended path allocates nothing (no copy of
/// the key). Two different keys with the same hash share one lock, which is safe: an
/// update takes at most one key per fragment, so it never waits for itself, and the
/// wait-for graph sees the shared lock as what it is. It only costs concurrency, for
/// keys held at the same moment whose hashes collide.
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in key.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 32;
    hash = hash.wrapping_mul(0xd6e8_feb8_6659_fd93);
    hash ^ (hash >> 32)
}

/// The table's hasher: the keys are hashes already.
#[derive(Clone, Copy, Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input is folded in, never lost.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PassThroughBuild = std::hash::BuildHasherDefault<PassThrough>;

/// One taken key: who holds it and who waits for it (nobody, on the common path).
struct Entry {
    /// The update holding the key (never 0).
    holder: u64,
    /// Waiting acquisitions, first come first served: (ticket, update, wake-up).
    queue: VecDeque<(u64, u64, oneshot::Sender<()>)>,
    /// Who holds the key, for the wait-for graph; made when the first waiter comes.
    wait: Option<Arc<KeyWait>>,
}

impl Entry {
    fn set_holder(&mut self, update: u64) {
        self.holder = update;
        if let Some(wait) = &self.wait {
            wait.holder.store(update, Ordering::Release);
        }
    }
}

/// A key somebody waits for, as the wait-for graph sees it: its current holder.
struct KeyWait {
    holder: AtomicU64,
}

/// The locks of one fragment, by the hash of the storage key. A key is in the table
/// only while it is held.
#[derive(Default)]
#[doc(hidden)]
pub struct KeyLocks {
    map: Mutex<HashMap<u64, Entry, PassThroughBuild>>,
}

/// The process-wide wait-for graph: which update waits for which keys.
#[derive(Default)]
struct Waits {
    /// By waiting update: the keys it waits for (one per waiting task).
    waiting: HashMap<u64, Vec<Arc<KeyWait>>>,
}

static WAITS: Mutex<Option<Waits>> = Mutex::new(None);

fn with_waits<R>(f: impl FnOnce(&mut Waits) -> R) -> R {
    let mut waits = WAITS.lock().unwrap_or_else(|p| p.into_inner());
    f(waits.get_or_insert_with(Waits::default))
}

impl Waits {
    /// Whether update `me` waiting for a key held by `holder` closes a cycle.
    fn closes_cycle(&self, me: u64, holder: u64) -> bool {
        let mut stack = vec![holder];
        let mut seen = Vec::new();
        while let Some(update) = stack.pop() {
            if update == 0 || seen.contains(&update) {
                continue;
            }
            if update == me {
                return true;
            }
            seen.push(update);
            if let Some(keys) = self.waiting.get(&update) {
                stack.extend(keys.iter().map(|k| k.holder.load(Ordering::Acquire)));
            }
        }
        false
    }

    fn add(&mut self, me: u64, key: &Arc<KeyWait>) {
        self.waiting.entry(me).or_default().push(key.clone());
    }

    fn remove(&mut self, me: u64, key: &Arc<KeyWait>) {
        if let Some(keys) = self.waiting.get_mut(&me) {
            if let Some(at) = keys.iter().position(|k| Arc::ptr_eq(k, key)) {
                keys.swap_remove(at);
            }
            if keys.is_empty() {
                self.waiting.remove(&me);
            }
        }
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

/// Numbers of waiting acquisitions (to find one's place in a queue).
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

impl KeyLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry, PassThroughBuild>> {
        self.map.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Lets go of key `hash`: the first waiter gets it, or it leaves the table.
    fn release(&self, hash: u64) {
        let mut map = self.table();
        let Some(entry) = map.get_mut(&hash) else {
            return;
        };
        while let Some((_, update, wake)) = entry.queue.pop_front() {
            entry.set_holder(update);
            if wake.send(()).is_ok() {
                return;
            }
            // That waiter is gone (it leaves the queue before it goes: not reached).
        }
        map.remove(&hash);
    }

    /// The order in which keys of different fragments are taken by re-runs.
    pub(crate) fn order_id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table().len()
    }
}

/// A wait in a key's queue and in the wait-for graph. Dropping it before the key was
/// handed over (a timeout, a cancelled future) leaves the queue; dropping it after (the
/// wait ended, or was cancelled at that very moment) hands the key on unless `taken`.
struct Waiting<'a> {
    locks: &'a KeyLocks,
    hash: u64,
    ticket: u64,
    me: u64,
    key: Arc<KeyWait>,
    taken: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        with_waits(|waits| waits.remove(self.me, &self.key));
        if self.taken {
            return;
        }
        let mut map = self.locks.table();
        if let Some(entry) = map.get_mut(&self.hash)
            && let Some(at) = entry.queue.iter().position(|w| w.0 == self.ticket)
        {
            entry.queue.remove(at);
            if entry.queue.is_empty() {
                entry.wait = None;
            }
            return;
        }
        drop(map);
        // Not in the queue any more: the key was handed to this wait. Pass it on.
        self.locks.release(self.hash);
    }
}

static NEXT_UPDATE: AtomicU64 = AtomicU64::new(1);

/// Lock bookkeeping of one update attempt (one session handle): its number in the
/// wait-for graph, given when it first takes a key.
#[derive(Default)]
pub(crate) struct UpdateLocks {
    /// This attempt's number (0: none yet).
    no: AtomicU64,
}

impl UpdateLocks {
    /// This attempt's number in the wait-for graph (never 0).
    fn no(&self) -> u64 {
        let no = self.no.load(Ordering::Acquire);
        if no != 0 {
            return no;
        }
        let fresh = NEXT_UPDATE.fetch_add(1, Ordering::Relaxed);
        match self
            .no
            .compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(given) => given,
        }
    }

    /// Takes `key`, waiting at most `limit` for it, unless the wait would close a cycle.
    pub(crate) async fn acquire(
        &self,
        locks: &Arc<KeyLocks>,
        key: &str,
        limit: Option<Duration>,
    ) -> Result<HeldKey, Refused> {
        let me = self.no();
        let hash = key_hash(key);
        let waiting = {
            let mut map = locks.table();
            let entry = match map.entry(hash) {
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    // The common case: nobody holds the key.
                    vacant.insert(Entry {
                        holder: me,
                        queue: VecDeque::new(),
                        wait: None,
                    });
                    drop(map);
                    return Ok(HeldKey::new(locks, hash));
                }
                std::collections::hash_map::Entry::Occupied(occupied) => occupied.into_mut(),
            };
            let holder = entry.holder;
            let key = entry
                .wait
                .get_or_insert_with(|| {
                    Arc::new(KeyWait {
                        holder: AtomicU64::new(holder),
                    })
                })
                .clone();
            let registered = with_waits(|waits| {
                if waits.closes_cycle(me, holder) {
                    return false;
                }
                waits.add(me, &key);
                true
            });
            if !registered {
                if entry.queue.is_empty() {
                    entry.wait = None;
                }
                return Err(Refused::Cycle);
            }
            let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
            let (wake, woken) = oneshot::channel();
            entry.queue.push_back((ticket, me, wake));
            (
                Waiting {
                    locks,
                    hash,
                    ticket,
                    me,
                    key,
                    taken: false,
                },
                woken,
            )
        };
        let (mut waiting, woken) = waiting;
        let handed = match limit {
            Some(limit) => match tokio::time::timeout(limit, woken).await {
                Ok(handed) => handed,
                Err(_) => return Err(Refused::Timeout(limit)),
            },
            None => woken.await,
        };
        if handed.is_ok() {
            waiting.taken = true;
            drop(waiting);
            return Ok(HeldKey::new(locks, hash));
        }
        // The wake-up was dropped unsent, which `release` never does; `waiting`'s drop
        // sorts out the queue. Reported as a wait that did not end.
        drop(waiting);
        Err(Refused::Timeout(limit.unwrap_or_default()))
    }

    /// Takes `key` if nobody holds it; `None` (and nothing changed) if somebody does.
    pub(crate) fn try_acquire(&self, locks: &Arc<KeyLocks>, key: &str) -> Option<HeldKey> {
        let hash = key_hash(key);
        let mut map = locks.table();
        let std::collections::hash_map::Entry::Vacant(vacant) = map.entry(hash) else {
            return None;
        };
        vacant.insert(Entry {
            holder: self.no(),
            queue: VecDeque::new(),
            wait: None,
        });
        drop(map);
        Some(HeldKey::new(locks, hash))
    }
}

/// A key held by an update, until dropped.
pub(crate) struct HeldKey {
    locks: Arc<KeyLocks>,
    hash: u64,
}

impl HeldKey {
    fn new(locks: &Arc<KeyLocks>, hash: u64) -> Self {
        Self {
            locks: locks.clone(),
            hash,
        }
    }

    /// Whether this is the lock of `key`.
    pub(crate) fn is_for(&self, key: &str) -> bool {
        self.hash == key_hash(key)
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        self.locks.release(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn take(update: &UpdateLocks, locks: &Arc<KeyLocks>, key: &str) -> HeldKey {
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
        assert!(with_waits(|w| !w.waiting.contains_key(&two.no())));
        assert!(
            locks
                .table()
                .get(&key_hash("a"))
                .is_some_and(|e| e.queue.is_empty()),
            "the cancelled wait left the queue"
        );
        drop(a);
        let again = take(&two, &locks, "a").await;
        drop(again);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_key_is_handed_to_its_waiters_in_turn() {
        let locks = Arc::new(KeyLocks::default());
        let updates: Vec<Arc<UpdateLocks>> =
            (0..3).map(|_| Arc::new(UpdateLocks::default())).collect();
        let first = take(&updates[0], &locks, "a").await;
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let waiters: Vec<_> = updates[1..]
            .iter()
            .enumerate()
            .map(|(i, update)| {
                let (update, locks, tx) = (update.clone(), locks.clone(), tx.clone());
                tokio::spawn(async move {
                    let held = take(&update, &locks, "a").await;
                    tx.send(i).unwrap();
                    // Hold it until told to let go (the channel closes).
                    tokio::task::yield_now().await;
                    drop(held);
                })
            })
            .collect();
        // Both wait, in this order.
        tokio::task::yield_now().await;
        assert_eq!(locks.table()[&key_hash("a")].queue.len(), 2);
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(i) = order.recv().await {
            seen.push(i);
        }
        assert_eq!(seen, [0, 1], "first come, first served");
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_wait_cancelled_after_the_handover_passes_the_key_on() {
        let locks = Arc::new(KeyLocks::default());
        let (one, two, three) = (
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
            Arc::new(UpdateLocks::default()),
        );
        let a = take(&one, &locks, "a").await;
        let cancelled = {
            let (two, locks) = (two.clone(), locks.clone());
            tokio::spawn(async move { take(&two, &locks, "a").await })
        };
        let next = {
            let (three, locks) = (three.clone(), locks.clone());
            tokio::spawn(async move { drop(take(&three, &locks, "a").await) })
        };
        tokio::task::yield_now().await;
        // The key goes to `two`, which is cancelled before it runs again.
        drop(a);
        cancelled.abort();
        assert!(cancelled.await.err().is_some_and(|e| e.is_cancelled()));
        // `two` never held it for good: `three` got it, and the key is free again.
        next.await.unwrap();
        assert_eq!(locks.len(), 0);
        drop(take(&one, &locks, "a").await);
    }

    #[test]
    fn different_keys_hash_apart() {
        let hashes: std::collections::HashSet<u64> = (0..100_000)
            .map(|i| key_hash(&format!("pizza:{}", -1_000_000 - i)))
            .collect();
        assert_eq!(hashes.len(), 100_000);
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
