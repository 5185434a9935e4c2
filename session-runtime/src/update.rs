//! What one update shares among its fragment cells: its identity, its key locks, its
//! config, and the fragments it could not lock.

use std::{
    future::Future,
    ops::Deref,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
};

use crate::{
    affinity::Affinity,
    config::Config,
    context::ChatContext,
    error::Error,
    lock::{HeldKey, KeyLocks, Refused, UpdateLocks, key_hash},
    stats::Counters,
    store::StoreError,
};

/// The bit set in every generated update id, so generated ids never equal Telegram's
/// (which are below 2^31).
pub(crate) const GENERATED: u64 = 1 << 63;

/// A fresh update id for a context that has none: a random per-process base plus a
/// counter, with [`GENERATED`] set. Unique across processes for all practical purposes
/// (two processes' ids meet only if their random 63-bit bases lie closer than the number
/// of updates they handle), and consecutive within one: the ids a stored value records
/// (rule S25) differ by a few updates, so each costs a byte or three after the first.
pub(crate) fn generated_update_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static BASE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) | GENERATED
}

/// A fragment's key in an update: its locks, its storage key, its name.
pub type CellKey = (Arc<KeyLocks>, String, &'static str);

/// The keys of an update's fragments, for taking companions' keys early (S29).
/// Implemented by the derive's lazy view.
pub trait KeysView: Send + Sync {
    /// Fragment `index`'s key locks, storage key and name, if it has a key.
    fn key_of(&self, index: usize) -> Option<CellKey>;
}

/// What a `Sessions` shares with each of its updates.
pub(crate) struct Env {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Which fragments updates touch together.
    pub(crate) affinity: Affinity,
}

/// One key an update wants: fragment index, locks, storage key, fragment name.
type Wanted = (usize, Arc<KeyLocks>, String, &'static str);

/// The update's identifiers as key functions see them: a copy of what its context
/// reports.
#[derive(Debug, Default)]
pub(crate) struct UpdateIds {
    pub(crate) ids: ChatContext,
    /// The business connection (rare: only business updates have one).
    pub(crate) business: Option<Box<str>>,
}

impl crate::context::SessionContext for UpdateIds {
    fn chat_id(&self) -> Option<i64> {
        self.ids.chat
    }
    fn user_id(&self) -> Option<i64> {
        self.ids.user
    }
    fn thread_id(&self) -> Option<i64> {
        self.ids.thread
    }
    fn chat_migration(&self) -> Option<crate::context::ChatMigration> {
        self.ids.migration
    }
    fn update_id(&self) -> Option<u64> {
        self.ids.update
    }
    fn bot_id(&self) -> Option<i64> {
        self.ids.bot
    }
    fn business_connection_id(&self) -> Option<&str> {
        self.business.as_deref()
    }
}

/// An update id set at most once, in two atomics: a `OnceLock`'s `Once` costs a call
/// and several atomic steps, and every update that writes sets its id.
struct IdOnce {
    /// [`ID_UNSET`], [`ID_SETTING`] or [`ID_SET`].
    state: AtomicU8,
    /// The id, once `state` is [`ID_SET`].
    id: AtomicU64,
}

const ID_UNSET: u8 = 0;
const ID_SETTING: u8 = 1;
const ID_SET: u8 = 2;

impl IdOnce {
    fn new(id: Option<u64>) -> Self {
        Self {
            state: AtomicU8::new(if id.is_some() { ID_SET } else { ID_UNSET }),
            id: AtomicU64::new(id.unwrap_or(0)),
        }
    }

    fn get(&self) -> Option<u64> {
        // Acquire: the id stored before `ID_SET` was.
        (self.state.load(Ordering::Acquire) == ID_SET).then(|| self.id.load(Ordering::Relaxed))
    }

    /// The id, or `make()`'s if none was set: every caller gets the same one.
    fn get_or_init(&self, make: impl FnOnce() -> u64) -> u64 {
        if let Some(id) = self.get() {
            return id;
        }
        // Made before claiming the slot, so the claim holds it for two stores only.
        let made = make();
        if self
            .state
            .compare_exchange(ID_UNSET, ID_SETTING, Ordering::Acquire, Ordering::Acquire)
            .is_ok()
        {
            self.id.store(made, Ordering::Relaxed);
            self.state.store(ID_SET, Ordering::Release);
            return made;
        }
        // Another task of the update claimed it: its two stores are under way.
        loop {
            if let Some(id) = self.get() {
                return id;
            }
            std::thread::yield_now();
        }
    }
}

/// What one update attempt shares among its cells.
pub struct UpdateCtx {
    /// The update's identifiers, for the key functions (run on first need: an update
    /// that never touches a fragment never formats its key).
    pub(crate) ctx: UpdateIds,
    /// The update's identity (rule S25): the same across re-runs of one update. Made on
    /// first need when the context has none (an update that touches nothing needs none).
    update_id: IdOnce,
    /// Its number in the wait-for graph (given when it first takes a key).
    locks: UpdateLocks,
    /// Keys this update took and did not give back: kept by its cells, taken in advance,
    /// or on their way to one of those.
    held: AtomicUsize,
    /// Keys taken in advance (re-runs), by fragment index.
    preheld: Mutex<Vec<Option<HeldKey>>>,
    /// Whether any key was ever taken in advance (checked without locking).
    any_preheld: AtomicBool,
    /// Fragments that could not be locked without risking a deadlock, by index.
    contended: Mutex<Vec<(usize, &'static str)>>,
    /// Whether `contended` is non-empty (checked on every update without locking).
    any_contended: AtomicBool,
    /// Fragments an earlier run of this update wrote (rule S25): not written again.
    pub(crate) written_before: Vec<&'static str>,
    /// The bot whose namespace the update's keys live in (`"{bot}/"` first), if any.
    pub(crate) bot: Option<i64>,
    /// Committed: later accesses (from clones of the session) are errors.
    closed: AtomicBool,
    /// Tasks of this update waiting for another task's load of a fragment (rule S7)
    /// wait here; `load_waiters` says whether any ever did.
    loads: tokio::sync::Notify,
    load_waiters: AtomicBool,
    /// How the first commit of this update attempt went (a second commit, from a clone of
    /// the session, writes nothing): `COMMIT_*`.
    commit: AtomicU8,
}

/// A key an update took: kept (by a cell, or as taken in advance) until the update ends,
/// or given back when dropped; [`UpdateCtx::holds_nothing`] counts what it holds.
pub(crate) struct Taken<'u> {
    key: HeldKey,
    count: Counted<'u>,
}

/// Counts a taken key out again unless it was kept.
struct Counted<'u> {
    update: &'u UpdateCtx,
    kept: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.update.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Taken<'_> {
    /// The key, held until the update ends (or its cell lets go of it).
    pub(crate) fn keep(self) -> HeldKey {
        let Taken { key, mut count } = self;
        count.kept = true;
        key
    }

    /// Whether this is the lock of `key`.
    pub(crate) fn is_for(&self, key: &str) -> bool {
        self.key.is_for(key)
    }
}

/// A cell's slot being made by this task (see [`UpdateCtx::start_making`]).
pub(crate) struct Making<'a> {
    making: &'a AtomicBool,
    update: &'a UpdateCtx,
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        self.making.store(false, Ordering::SeqCst);
        if self.update.load_waiters.load(Ordering::SeqCst) {
            self.update.loads.notify_waiters();
        }
    }
}

/// No commit of this update attempt has started.
pub(crate) const COMMIT_NONE: u8 = 0;
/// A commit started (and has not failed yet).
pub(crate) const COMMIT_STARTED: u8 = 1;
/// A commit failed: what it stored is in the error it returned.
pub(crate) const COMMIT_FAILED: u8 = 2;

impl UpdateCtx {
    /// The update of `ctx`, as update `update_id` (`None`: one is generated on first
    /// need).
    pub(crate) fn new(ctx: ChatContext, update_id: Option<u64>) -> Self {
        // `preheld` grows on first use: most updates never pre-take keys.
        Self {
            ctx: UpdateIds {
                ids: ctx,
                business: None,
            },
            update_id: IdOnce::new(update_id),
            locks: UpdateLocks::default(),
            held: AtomicUsize::new(0),
            preheld: Mutex::new(Vec::new()),
            any_preheld: AtomicBool::new(false),
            any_contended: AtomicBool::new(false),
            contended: Mutex::default(),
            written_before: Vec::new(),
            bot: None,
            closed: AtomicBool::new(false),
            loads: tokio::sync::Notify::const_new(),
            load_waiters: AtomicBool::new(false),
            commit: AtomicU8::new(COMMIT_NONE),
        }
    }

    /// Starts making a cell's slot, `making` being its flag, unless a task of this update
    /// is making it; the guard ends it (made, failed or cancelled alike).
    pub(crate) fn start_making<'a>(&'a self, making: &'a AtomicBool) -> Option<Making<'a>> {
        making
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()?;
        Some(Making {
            making,
            update: self,
        })
    }

    /// Waits until the task making a cell's slot (`making` its flag) is done.
    pub(crate) async fn made(&self, making: &AtomicBool) {
        let notified = self.loads.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        // The maker notifies only if it sees this (both sides sequentially consistent: it
        // either sees the flag, or this sees it done).
        self.load_waiters.store(true, Ordering::SeqCst);
        if making.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    /// The update's identity (generated now if the context has none and nothing needed
    /// it before).
    pub(crate) fn update_id(&self) -> u64 {
        self.update_id.get_or_init(generated_update_id)
    }

    /// The update's identity, if it has one already.
    pub(crate) fn known_update_id(&self) -> Option<u64> {
        self.update_id.get()
    }

    /// Whether this update holds no key.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }

    /// `key`, taken by this update just now.
    fn taken(&self, key: HeldKey) -> Taken<'_> {
        self.held.fetch_add(1, Ordering::AcqRel);
        Taken {
            key,
            count: Counted {
                update: self,
                kept: false,
            },
        }
    }

    /// No access of this update's fragments succeeds from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Marks the start of a commit; returns how an earlier commit of this attempt went
    /// (`COMMIT_NONE` if this is the first).
    ///
    /// `alone`: the caller holds the last handle of the session (and has synchronized
    /// with the others' drops), so no other commit can start meanwhile.
    pub(crate) fn begin_commit(&self, alone: bool) -> u8 {
        if alone {
            let earlier = self.commit.load(Ordering::Acquire);
            if earlier == COMMIT_NONE {
                self.commit.store(COMMIT_STARTED, Ordering::Release);
            }
            return earlier;
        }
        self.commit
            .compare_exchange(
                COMMIT_NONE,
                COMMIT_STARTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .unwrap_or_else(|earlier| earlier)
    }

    /// Records that the commit failed.
    pub(crate) fn commit_failed(&self) {
        self.commit.store(COMMIT_FAILED, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Lets go of the keys taken in advance.
    pub(crate) fn release_preheld(&self) {
        let taken = std::mem::take(&mut *self.preheld.lock().unwrap_or_else(|p| p.into_inner()));
        drop(taken);
    }

    fn has_preheld(&self, index: usize) -> bool {
        if !self.any_preheld() {
            return false;
        }
        let preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        preheld.get(index).is_some_and(Option::is_some)
    }

    /// Whether keys were taken in advance (a re-run, strict mode).
    pub(crate) fn any_preheld(&self) -> bool {
        self.any_preheld.load(Ordering::Acquire)
    }

    pub(crate) fn take_preheld(&self, index: usize) -> Option<Taken<'_>> {
        if !self.any_preheld() {
            return None;
        }
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        let key = preheld.get_mut(index).and_then(Option::take)?;
        // Counted when it was taken.
        Some(Taken {
            key,
            count: Counted {
                update: self,
                kept: false,
            },
        })
    }

    pub(crate) fn put_preheld(&self, index: usize, held: Taken<'_>) {
        let held = held.keep();
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        if preheld.len() <= index {
            preheld.resize_with(index + 1, || None);
        }
        preheld[index] = Some(held);
        self.any_preheld.store(true, Ordering::Release);
    }

    pub(crate) fn mark_contended(&self, index: usize, fragment: &'static str) {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        contended.push((index, fragment));
        self.any_contended.store(true, Ordering::Release);
    }

    /// Whether a fragment could not be locked (checked on every update).
    #[inline]
    pub(crate) fn is_contended(&self) -> bool {
        self.any_contended.load(Ordering::Acquire)
    }

    pub(crate) fn contended(&self) -> Vec<(usize, &'static str)> {
        if !self.is_contended() {
            return Vec::new();
        }
        self.contended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// An update as its cells see it: the update, what its `Sessions` share (config,
/// counters, affinity), and its other cells.
#[derive(Clone, Copy)]
pub struct UpdateRef<'a> {
    pub(crate) update: &'a UpdateCtx,
    pub(crate) env: &'a Env,
    /// The update's cells (none for the runtime's own bookkeeping updates).
    pub(crate) view: Option<&'a dyn KeysView>,
}

impl Deref for UpdateRef<'_> {
    type Target = UpdateCtx;
    fn deref(&self) -> &UpdateCtx {
        self.update
    }
}

impl<'a> UpdateRef<'a> {
    /// The first key of an update: with the keys of the fragments usually touched with
    /// it, all in the global order (rule S29).
    pub(crate) async fn hold_first(
        &self,
        index: usize,
        locks: &Arc<KeyLocks>,
        fragment: &'static str,
        key: &str,
    ) -> Result<Taken<'a>, Error> {
        let affinity = &self.env.affinity;
        if !affinity.has_companions(index) {
            // The common case: a fragment touched alone. Taken alone, and kept unless
            // companions were learned while this update waited for it.
            let held = self.hold(locks, fragment, key).await?;
            if !affinity.has_companions(index) {
                return Ok(held);
            }
            // Nothing is read yet: let go, and take it again with its companions.
            drop(held);
        }
        let view = self.view;
        let companions = |wanted: &[Wanted]| -> Vec<Wanted> {
            let Some(view) = view else { return Vec::new() };
            affinity
                .companions(index)
                .into_iter()
                .filter(|j| !wanted.iter().any(|w| w.0 == *j) && !self.has_preheld(*j))
                .filter_map(|j| view.key_of(j).map(|(l, k, n)| (j, l, k, n)))
                .collect()
        };
        let order = |w: &Wanted| (w.1.order_id(), key_hash(&w.2));
        let mut wanted: Vec<Wanted> = vec![(index, locks.clone(), key.to_owned(), fragment)];
        wanted.extend(companions(&wanted));
        for round in 0..3 {
            wanted.sort_by_key(order);
            let mut got = Vec::with_capacity(wanted.len());
            let mut cycle = false;
            for (j, locks, key, fragment) in &wanted {
                match self.hold(locks, fragment, key).await {
                    Ok(held) => got.push((*j, held)),
                    // Nothing is read yet: let go of everything and wait again, in
                    // order, from holding nothing (which closes no cycle).
                    Err(Error::Contended { .. }) if round < 2 => {
                        cycle = true;
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
            if cycle {
                drop(got);
                continue;
            }
            // Companions learned while this update waited: taken now if they come later
            // in the global order, else everything again, in order.
            let more = companions(&wanted);
            if !more.is_empty() && round < 2 {
                let last = wanted.iter().map(order).max();
                if more.iter().all(|w| Some(order(w)) > last) {
                    let mut more = more;
                    more.sort_by_key(order);
                    let mut cycle = false;
                    for (j, locks, key, fragment) in &more {
                        match self.hold(locks, fragment, key).await {
                            Ok(held) => got.push((*j, held)),
                            Err(Error::Contended { .. }) => {
                                cycle = true;
                                break;
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    if cycle {
                        drop(got);
                        wanted.extend(more);
                        continue;
                    }
                } else {
                    drop(got);
                    wanted.extend(more);
                    continue;
                }
            }
            let mut mine = None;
            for (j, held) in got {
                if j == index {
                    mine = Some(held);
                } else {
                    self.put_preheld(j, held);
                }
            }
            if let Some(mine) = mine {
                return Ok(mine);
            }
        }
        self.hold(locks, fragment, key).await
    }

    /// Takes `key` of `fragment` (whose locks are `locks`), waiting up to `lock_timeout`.
    pub(crate) async fn hold(
        &self,
        locks: &Arc<KeyLocks>,
        fragment: &'static str,
        key: &str,
    ) -> Result<Taken<'a>, Error> {
        let limit = self.env.config.lock_timeout;
        let update = self.update;
        match update.locks.acquire(locks, key, limit).await {
            Ok(held) => Ok(update.taken(held)),
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

    /// Takes `key` of a fragment (whose locks are `locks`) if nobody holds it; `None`
    /// (and nothing changed) if somebody does.
    pub(crate) fn try_hold(&self, locks: &Arc<KeyLocks>, key: &str) -> Option<Taken<'a>> {
        let update = self.update;
        let held = update.locks.try_acquire(locks, key)?;
        Some(update.taken(held))
    }

    /// Runs a store operation under `op_timeout`.
    pub(crate) async fn timed<F, R>(&self, op: F) -> Result<R, StoreError>
    where
        F: Future<Output = Result<R, StoreError>>,
    {
        match self.env.config.op_timeout {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_id_is_set_once_and_every_caller_gets_it() {
        let given = IdOnce::new(Some(584_120_332));
        assert_eq!(given.get(), Some(584_120_332));
        assert_eq!(given.get_or_init(|| 1), 584_120_332);
        let zero = IdOnce::new(Some(0));
        assert_eq!(zero.get_or_init(|| 1), 0, "0 is an id like any other");

        let once = IdOnce::new(None);
        assert_eq!(once.get(), None);
        let made = AtomicU64::new(0);
        let seen: Vec<u64> = std::thread::scope(|scope| {
            let tasks: Vec<_> = (0..8u64)
                .map(|n| {
                    let (once, made) = (&once, &made);
                    scope.spawn(move || {
                        once.get_or_init(|| {
                            made.fetch_add(1, Ordering::Relaxed);
                            1_000 + n
                        })
                    })
                })
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let first = seen[0];
        assert!(seen.iter().all(|&id| id == first), "{seen:?}");
        assert!((1_000..1_008).contains(&first));
        assert_eq!(once.get(), Some(first));
        assert!(made.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn generated_ids_are_marked_distinct_and_cheap_to_record() {
        let ids: Vec<u64> = (0..1000).map(|_| generated_update_id()).collect();
        assert!(ids.iter().all(|id| id & GENERATED != 0));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Eight of them, as a stored value keeps them: the first in full, then deltas.
        let mut stored = Vec::new();
        for &id in &ids[..8] {
            stored = crate::envelope::join(crate::envelope::split(&stored).0, id, 32, b"");
        }
        assert!(stored.len() <= 4 + 1 + 10 + 7 * 2, "{} bytes", stored.len());
    }

    #[tokio::test]
    async fn an_update_holds_what_it_took_and_did_not_give_back() {
        let env = Env {
            config: Config::default(),
            counters: Counters::default(),
            affinity: Affinity::new(2),
        };
        let update = UpdateCtx::new(ChatContext::new(1), None);
        let cx = UpdateRef {
            update: &update,
            env: &env,
            view: None,
        };
        let locks = Arc::new(KeyLocks::default());
        assert!(update.holds_nothing());
        // Taken, then given back (a load that failed): nothing held.
        let taken = cx.hold(&locks, "a", "a:1").await.expect("free");
        assert!(!update.holds_nothing());
        drop(taken);
        assert!(update.holds_nothing());
        // Taken without waiting and kept (by a cell): held until the update ends.
        let kept = cx.try_hold(&locks, "a:1").expect("free").keep();
        assert!(!update.holds_nothing());
        assert!(cx.try_hold(&locks, "a:1").is_none(), "taken");
        // Taken in advance, then handed to a cell that does not want it.
        let other = cx.hold(&locks, "b", "b:1").await.expect("free");
        update.put_preheld(1, other);
        let preheld = update.take_preheld(1).expect("taken in advance");
        assert!(preheld.is_for("b:1"));
        drop(preheld);
        assert!(cx.try_hold(&locks, "b:1").is_some(), "given back");
        drop(kept);
    }
}
