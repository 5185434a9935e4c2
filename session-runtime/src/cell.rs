//! The lazy cell of one fragment in one update: loaded at most once, on first touch, and
//! what it takes at commit to decide whether (and how) to write.

use std::{
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    codec::DecodeFailure,
    config::OnDecodeError,
    envelope,
    error::{Error, SaveError, SaveFailure},
    lock::{HeldKey, KeyLocks},
    spec::{FragmentShared, FragmentSpec},
    stats::Counter,
    store::{Expect, Record, StoreError, StoreRef, Write},
    update::{Taken, UpdateCtx, UpdateRef},
};

/// What the cell knows about the stored value, as the update found it.
enum Base {
    /// Not read: the handler assigned or deleted without reading (rules S8, S9).
    Unread,
    /// Read, and missing. `initial` is the encoded initial value, taken before the first
    /// change, so an initial value that ends up unchanged is not written (S5, S23).
    Missing { initial: Option<Vec<u8>> },
    /// Read, and present: the stored bytes (recorded updates, then the payload).
    Stored {
        bytes: Vec<u8>,
        payload_at: usize,
        revision: u64,
        /// The recorded updates; `applied`: the stored value already has this update's
        /// change (rule S25).
        scan: envelope::Scan,
    },
}

pub(crate) struct State<T> {
    /// `None` after a delete until something reads the value again (then the initial
    /// value is made: rule S23), and while strict mode has the value out.
    pub(crate) value: Option<T>,
    base: Base,
    /// The value may differ from the base: compared at commit (rule S22).
    dirty: bool,
    /// Write even if equal: a migrated value, or bad bytes reset to the initial.
    force: bool,
    deleted: bool,
}

impl<T> State<T> {
    fn new(value: Option<T>, base: Base) -> Self {
        Self {
            value,
            base,
            dirty: false,
            force: false,
            deleted: false,
        }
    }

    /// Before the handler may change the value.
    pub(crate) fn before_change(&mut self, spec: &FragmentSpec<T>) {
        if !self.dirty {
            if let (Base::Missing { initial }, Some(value)) = (&mut self.base, &self.value)
                && initial.is_none()
            {
                *initial = spec.encode_payload(value).ok();
            }
            self.dirty = true;
        }
        self.deleted = false;
    }

    /// Deleted by the handler: written as a delete if a value is stored, nothing if not.
    fn mark_deleted(&mut self) {
        self.value = None;
        self.dirty = false;
        self.force = false;
        self.deleted = true;
        if let Base::Missing { initial } = &mut self.base {
            *initial = None;
        }
    }

    /// The value, made from the initial if it was deleted (a missing value).
    pub(crate) fn materialize(&mut self, spec: &FragmentSpec<T>) {
        if self.value.is_none() {
            self.value = Some((spec.initial)());
        }
    }
}

/// The loaded state of a cell, and who holds its guard.
pub(crate) struct Slot<T> {
    /// The key this update holds for the fragment (released at commit when clones of
    /// the session outlive it).
    held: std::sync::Mutex<Option<HeldKey>>,
    /// An async lock (guards live across `.await`s in handlers) whose uncontended
    /// lock and unlock are one atomic each: `futures-util`'s, not tokio's (whose
    /// release locks its wait list every time).
    pub(crate) state: futures_util::lock::Mutex<State<T>>,
    /// The task holding the state ([`task_number`]; 0: none).
    holder: AtomicU64,
}

/// The current task as a number for [`Slot::holder`]: tokio's task id (its `Hash` writes
/// the id's one `u64`), or `u64::MAX` outside any task.
fn task_number() -> u64 {
    /// Keeps what a `Hash` impl writes.
    struct Number(u64);
    impl Hasher for Number {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    match tokio::task::try_id() {
        Some(id) => {
            let mut number = Number(0);
            id.hash(&mut number);
            number.finish().clamp(1, u64::MAX - 1)
        }
        None => u64::MAX,
    }
}

/// The locked state of a cell; unlocking forgets the holder.
pub(crate) struct StateGuard<'a, T> {
    pub(crate) state: futures_util::lock::MutexGuard<'a, State<T>>,
    holder: &'a AtomicU64,
}

impl<T> Drop for StateGuard<'_, T> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

impl<T> Slot<T> {
    fn new(held: Option<HeldKey>, state: State<T>) -> Box<Self> {
        Box::new(Slot {
            held: std::sync::Mutex::new(held),
            state: futures_util::lock::Mutex::new(state),
            holder: AtomicU64::new(0),
        })
    }

    /// Locks the state. Held by this very task: [`Error::Held`] at once (rule S28), as
    /// waiting could never end. Held by another task of the update: waits, up to
    /// `limit`.
    async fn lock(
        &self,
        fragment: &'static str,
        limit: Option<Duration>,
    ) -> Result<StateGuard<'_, T>, Error> {
        if let Some(now) = self.try_lock(fragment) {
            return now;
        }
        let state = match limit {
            Some(limit) => tokio::time::timeout(limit, self.state.lock())
                .await
                .map_err(|_| Error::Held { fragment })?,
            None => self.state.lock().await,
        };
        Ok(self.guard(state, task_number()))
    }

    /// [`lock`](Self::lock) where it takes no wait: the guard, or [`Error::Held`] if this
    /// task holds it; `None` if another task does.
    fn try_lock(&self, fragment: &'static str) -> Option<Result<StateGuard<'_, T>, Error>> {
        let me = task_number();
        match self.state.try_lock() {
            Some(state) => Some(Ok(self.guard(state, me))),
            None => {
                (self.holder.load(Ordering::Acquire) == me).then_some(Err(Error::Held { fragment }))
            }
        }
    }

    fn guard<'s>(
        &'s self,
        state: futures_util::lock::MutexGuard<'s, State<T>>,
        me: u64,
    ) -> StateGuard<'s, T> {
        self.holder.store(me, Ordering::Release);
        StateGuard {
            state,
            holder: &self.holder,
        }
    }
}

/// A box set at most once and then read without a lock: `OnceLock<Box<T>>` for a
/// cell's slot, with one compare-and-swap to set it and one load to read it (the
/// `Once` behind `OnceLock` costs several atomic steps and a call per set, on every
/// update that touches a fragment).
struct SetOnce<T> {
    value: std::sync::atomic::AtomicPtr<T>,
    /// Sent and shared as `OnceLock<Box<T>>` would be.
    _like: std::marker::PhantomData<std::sync::OnceLock<Box<T>>>,
}

impl<T> SetOnce<T> {
    fn new() -> Self {
        Self {
            value: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            _like: std::marker::PhantomData,
        }
    }

    fn get(&self) -> Option<&T> {
        // SAFETY: a non-null pointer is one `get_or_init` made from a `Box` and published
        // with `Release` (read here with `Acquire`); it is never replaced, and freed only
        // by `drop`, which has the cell to itself.
        unsafe { self.value.load(Ordering::Acquire).as_ref() }
    }

    /// The value set first: `value` if none was, else the earlier one (`value` dropped).
    fn get_or_init(&self, value: Box<T>) -> &T {
        let new = Box::into_raw(value);
        match self.value.compare_exchange(
            std::ptr::null_mut(),
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: `new` is now the cell's (see `get`).
            Ok(_) => unsafe { &*new },
            Err(earlier) => {
                // SAFETY: `new` was not published: it is still this call's own box.
                drop(unsafe { Box::from_raw(new) });
                // SAFETY: `earlier` is non-null, the cell's (see `get`).
                unsafe { &*earlier }
            }
        }
    }
}

impl<T> Drop for SetOnce<T> {
    fn drop(&mut self) {
        let value = *self.value.get_mut();
        if !value.is_null() {
            // SAFETY: the cell's box (see `get`), and nobody else can reach it any more.
            drop(unsafe { Box::from_raw(value) });
        }
    }
}

/// The per-update cell of one fragment: loaded at most once, on first touch. It holds
/// only what this update learned; its fragment and the update come with it as a
/// [`Bound`], so opening a session clones nothing per fragment.
pub struct Cell<T> {
    index: usize,
    /// The storage key, and where the session key starts in it (`None`: no key for this
    /// update).
    keys: std::sync::OnceLock<Option<(String, usize)>>,
    /// Boxed: an untouched fragment costs a pointer, not its value's size, per update.
    slot: SetOnce<Slot<T>>,
    /// Set while a task of the update makes the slot, so that tasks that touch the
    /// fragment at once read it once (rule S7).
    making: std::sync::atomic::AtomicBool,
}

impl<T> Cell<T> {
    /// The cell of fragment number `index`, untouched.
    pub fn new(index: usize) -> Self {
        Self {
            index,
            keys: std::sync::OnceLock::new(),
            slot: SetOnce::new(),
            making: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the cell holds a value (it was touched, or strict mode loaded it).
    pub fn is_loaded(&self) -> bool {
        self.slot.get().is_some()
    }

    /// The slot, made by `make` unless there is one (one task of `update` makes it; the
    /// others wait for it).
    async fn slot_or<F>(
        &self,
        update: &UpdateCtx,
        make: impl FnOnce() -> F,
    ) -> Result<&Slot<T>, Error>
    where
        F: std::future::Future<Output = Result<Box<Slot<T>>, Error>>,
    {
        let _making = loop {
            if let Some(slot) = self.slot.get() {
                return Ok(slot);
            }
            if let Some(making) = update.start_making(&self.making) {
                break making;
            }
            update.made(&self.making).await;
        };
        if let Some(slot) = self.slot.get() {
            return Ok(slot);
        }
        let slot = make().await?;
        Ok(self.slot.get_or_init(slot))
    }
}

/// A cell with its fragment and its update: what it takes to load, change and commit
/// it. Three references, made wherever a cell is used.
pub struct Bound<'a, T> {
    cell: &'a Cell<T>,
    pub(crate) shared: &'a FragmentShared<T>,
    cx: UpdateRef<'a>,
}

impl<T> Clone for Bound<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Bound<'_, T> {}

/// The cells of one update, bound (the derive's `Bound` type).
pub trait BoundCells {
    /// Cell number `index` (field order), if there is one.
    fn cell(&self, index: usize) -> Option<&dyn ErasedCell>;

    /// Every cell, in field order.
    fn cells(&self) -> Vec<&dyn ErasedCell> {
        (0..).map_while(|index| self.cell(index)).collect()
    }
}

impl BoundCells for () {
    fn cell(&self, _: usize) -> Option<&dyn ErasedCell> {
        None
    }
}

impl<'a, T: Send + 'static> Bound<'a, T> {
    /// `cell` of the fragment `shared`, in the update `cx`.
    pub fn new(cell: &'a Cell<T>, shared: &'a FragmentShared<T>, cx: UpdateRef<'a>) -> Self {
        Self { cell, shared, cx }
    }

    /// The storage key, and where in it the session key starts (it runs to the end).
    fn keys(&self) -> Option<&'a (String, usize)> {
        self.cell
            .keys
            .get_or_init(|| {
                let prefix = &self.shared.spec.prefix;
                // Room for a bot namespace and a key of two ids; longer keys grow it.
                let mut storage_key = String::with_capacity(prefix.len() + 64);
                if let Some(bot) = self.cx.bot {
                    use std::fmt::Write as _;
                    let _ = write!(storage_key, "{bot}/");
                }
                storage_key.push_str(prefix);
                let at = storage_key.len();
                (self.shared.spec.key)(&self.cx.ctx, &mut storage_key).then_some((storage_key, at))
            })
            .as_ref()
    }

    pub(crate) fn session_key_str(&self) -> Option<&'a str> {
        self.keys().map(|(storage, at)| &storage[*at..])
    }

    pub(crate) fn storage_key_str(&self) -> Option<&'a str> {
        self.keys().map(|(storage, _)| storage.as_str())
    }

    pub(crate) fn name(&self) -> &'static str {
        self.shared.spec.name
    }

    fn key(&self) -> Result<&'a str, Error> {
        self.storage_key_str().ok_or(Error::NoKey {
            fragment: self.name(),
        })
    }

    async fn hold(&self, key: &str) -> Result<Taken<'a>, Error> {
        let update = self.cx;
        if let Some(held) = update.update.take_preheld(self.cell.index)
            && held.is_for(key)
        {
            return Ok(held);
        }
        let held = if update.holds_nothing() {
            update
                .hold_first(self.cell.index, &self.shared.locks, self.name(), key)
                .await
        } else {
            update.hold(&self.shared.locks, self.name(), key).await
        };
        if let Err(Error::Contended { .. }) = &held {
            update.mark_contended(self.cell.index, self.name());
        }
        held
    }

    fn state_from(&self, key: &str, record: Option<Record>) -> Result<State<T>, Error> {
        let spec = &self.shared.spec;
        let Some(Record {
            value: bytes,
            revision,
        }) = record
        else {
            // Missing: the one call of `initial` for this load (rule S23).
            return Ok(State::new(
                Some((spec.initial)()),
                Base::Missing { initial: None },
            ));
        };
        let (scan, payload_at) = envelope::scan_stored(&bytes, self.cx.update_id());
        let decoded = spec.decode_payload(&bytes[payload_at..]);
        let base = Base::Stored {
            payload_at,
            revision,
            scan,
            bytes,
        };
        match decoded {
            Ok((value, migrated)) => {
                let mut state = State::new(Some(value), base);
                // A migrated value is written back at commit (S19).
                state.force = migrated;
                state.dirty = migrated;
                Ok(state)
            }
            Err(DecodeFailure::TooNew { found, supported }) => Err(Error::TooNew {
                fragment: spec.name,
                key: key.to_owned(),
                store: self.shared.store_name.clone(),
                found,
                supported,
            }),
            Err(DecodeFailure::Codec(source)) => {
                if self.cx.env.config.on_decode_error != OnDecodeError::Reset {
                    return Err(Error::Decode {
                        fragment: spec.name,
                        key: key.to_owned(),
                        store: self.shared.store_name.clone(),
                        source,
                    });
                }
                tracing::warn!(
                    fragment = spec.name,
                    key,
                    store = %self.shared.store_name,
                    error = %source,
                    "stored session value does not decode; reset to the initial value (OnDecodeError::Reset)"
                );
                // The bad bytes are replaced by the initial value at commit.
                let mut state = State::new(Some((spec.initial)()), base);
                state.force = true;
                state.dirty = true;
                Ok(state)
            }
        }
    }

    async fn load(&self) -> Result<Box<Slot<T>>, Error> {
        let key = self.key()?;
        let held = self.hold(key).await?;
        let traced = tracing::enabled!(tracing::Level::DEBUG);
        let started = traced.then(std::time::Instant::now);
        let read = self.cx.timed(self.shared.store.as_dyn().read(key));
        // Without a subscriber that wants it, no span and no wrapper around the read.
        let result = if traced {
            let span = tracing::debug_span!(
                "multisession.load",
                fragment = self.name(),
                store = %self.shared.store_name
            );
            tracing::Instrument::instrument(read, span).await
        } else {
            read.await
        };
        self.loaded(key, held, result, started)
    }

    /// The slot of what the store returned for `key` (held), counted and logged.
    fn loaded(
        &self,
        key: &str,
        held: Taken<'_>,
        result: Result<Option<Record>, StoreError>,
        started: Option<std::time::Instant>,
    ) -> Result<Box<Slot<T>>, Error> {
        let result = result
            .map_err(|source| Error::Load {
                fragment: self.name(),
                key: key.to_owned(),
                store: self.shared.store_name.clone(),
                source,
            })
            .and_then(|record| {
                let found = record.is_some();
                self.state_from(key, record).map(|state| (state, found))
            });
        let counters = &self.cx.env.counters;
        counters.add(Counter::Reads, 1);
        let shown = self.cx.env.config.shown_key(key);
        match &result {
            Ok((_, found)) => tracing::debug!(
                fragment = self.name(),
                key = %shown,
                store = %self.shared.store_name,
                found,
                elapsed_us = started.map_or(0, |s| s.elapsed().as_micros() as u64),
                "session fragment loaded"
            ),
            Err(error) => {
                counters.add(Counter::Errors, 1);
                tracing::warn!(fragment = self.name(), key = %shown, store = %self.shared.store_name, %error, "session fragment load failed");
            }
        }
        let (state, _) = result?;
        Ok(Slot::new(Some(held.keep()), state))
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.cx.is_closed() {
            return Err(Error::Committed {
                fragment: self.name(),
            });
        }
        Ok(())
    }

    async fn slot(&self) -> Result<&'a Slot<T>, Error> {
        self.check_open()?;
        self.cell.slot_or(self.cx.update, || self.load()).await
    }

    /// [`lock_loaded`](Self::lock_loaded) where nothing has to wait: the value is loaded,
    /// or its store answers at once and its key is free, and its guard is free. `None`:
    /// take the async way (nothing was done that it would do again).
    pub(crate) fn try_lock_loaded(&self) -> Option<Result<StateGuard<'a, T>, Error>> {
        if let Err(error) = self.check_open() {
            return Some(Err(error));
        }
        let slot = match self.cell.slot.get() {
            Some(slot) => slot,
            None => match self.try_load()? {
                Ok(slot) => slot,
                Err(error) => return Some(Err(error)),
            },
        };
        let mut guard = match slot.try_lock(self.name())? {
            Ok(guard) => guard,
            Err(error) => return Some(Err(error)),
        };
        guard.state.materialize(&self.shared.spec);
        Some(Ok(guard))
    }

    /// [`slot`](Self::slot) where nothing has to wait (see
    /// [`try_lock_loaded`](Self::try_lock_loaded)).
    fn try_load(&self) -> Option<Result<&'a Slot<T>, Error>> {
        let store = self.shared.store.as_dyn().immediate()?;
        let cx = self.cx;
        // Keys taken in advance, or companions to take with this one: the async way.
        if cx.any_preheld()
            || (cx.holds_nothing() && cx.env.affinity.has_companions(self.cell.index))
            // A subscriber gets the load's span from the async way.
            || tracing::enabled!(tracing::Level::DEBUG)
        {
            return None;
        }
        let _making = cx.update.start_making(&self.cell.making)?;
        if let Some(slot) = self.cell.slot.get() {
            return Some(Ok(slot));
        }
        let key = match self.key() {
            Ok(key) => key,
            Err(error) => return Some(Err(error)),
        };
        let held = cx.try_hold(&self.shared.locks, key)?;
        Some(
            self.loaded(key, held, store.read_now(key), None)
                .map(|slot| self.cell.slot.get_or_init(slot)),
        )
    }

    /// Loads the value (once per update) and locks it for the caller.
    pub(crate) async fn lock_loaded(&self) -> Result<StateGuard<'a, T>, Error> {
        let slot = self.slot().await?;
        let mut guard = slot
            .lock(self.name(), self.cx.env.config.lock_timeout)
            .await?;
        // Committed while this access waited for the guard.
        self.check_open()?;
        guard.state.materialize(&self.shared.spec);
        Ok(guard)
    }

    /// The cell's state without reading (rules S8, S9): made by `make` if the cell was
    /// not touched yet (`true`), else the loaded one, locked (`false`).
    async fn lock_blind(
        &self,
        make: impl FnOnce() -> State<T>,
    ) -> Result<(Option<StateGuard<'a, T>>, bool), Error> {
        self.check_open()?;
        let mut fresh = false;
        let slot = self
            .cell
            .slot_or(self.cx.update, || async {
                let key = self.key()?;
                let held = self.hold(key).await?;
                fresh = true;
                Ok::<_, Error>(Slot::new(Some(held.keep()), make()))
            })
            .await?;
        if fresh {
            return Ok((None, true));
        }
        let guard = slot
            .lock(self.name(), self.cx.env.config.lock_timeout)
            .await?;
        self.check_open()?;
        Ok((Some(guard), false))
    }

    pub(crate) async fn set(&self, value: T) -> Result<(), Error> {
        let mut pending = Some(value);
        let (guard, _) = self
            .lock_blind(|| {
                let mut state = State::new(pending.take(), Base::Unread);
                state.dirty = true;
                state
            })
            .await?;
        if let (Some(mut guard), Some(value)) = (guard, pending) {
            guard.state.before_change(&self.shared.spec);
            guard.state.value = Some(value);
        }
        Ok(())
    }

    pub(crate) async fn delete(&self) -> Result<(), Error> {
        let (guard, _) = self
            .lock_blind(|| {
                let mut state = State::new(None, Base::Unread);
                state.deleted = true;
                state
            })
            .await?;
        if let Some(mut guard) = guard {
            guard.state.mark_deleted();
        }
        Ok(())
    }

    /// Deletes the stored value, reading it first: a value that is not stored costs no
    /// delete, a fragment without a key for this update nothing at all.
    pub(crate) async fn delete_stored(&self) -> Result<(), Error> {
        if self.keys().is_none() {
            return Ok(());
        }
        let mut guard = self.lock_loaded().await?;
        guard.state.mark_deleted();
        Ok(())
    }

    /// Strict mode: moves the loaded value out; a fragment without a key or a value gets
    /// its initial (a missing value).
    pub fn take_value(&self) -> T {
        let spec = &self.shared.spec;
        if let Some(slot) = self.cell.slot.get()
            && let Some(mut state) = slot.state.try_lock()
        {
            let state = &mut *state;
            if !state.dirty
                && let (Base::Missing { initial }, Some(value)) = (&mut state.base, &state.value)
                && initial.is_none()
            {
                *initial = spec.encode_payload(value).ok();
            }
            if let Some(value) = state.value.take() {
                return value;
            }
        }
        (spec.initial)()
    }

    /// Strict mode: puts the (possibly changed) value back, to be saved if it changed. A
    /// fragment without a key for this update is skipped (rule S24).
    pub fn put_value(&self, value: T) {
        if let Some(slot) = self.cell.slot.get()
            && let Some(mut state) = slot.state.try_lock()
        {
            state.dirty = true;
            state.deleted = false;
            state.value = Some(value);
        }
    }
}

/// What the commit does for one cell.
#[doc(hidden)]
pub enum Plan {
    /// Nothing to write.
    Skip,
    /// The stored value already has this update's change (rule S25): it counts as
    /// written by this update.
    Repeat,
    /// This write.
    Write(Write),
}

/// What the session needs of a cell, whatever its value type.
pub trait ErasedCell: Send + Sync {
    /// The fragment's position in the struct.
    fn index(&self) -> usize;
    /// The fragment's name.
    fn fragment(&self) -> &'static str;
    /// The full storage key, if the update has one for this fragment.
    fn storage_key(&self) -> Option<&str>;
    /// The fragment's store.
    fn store(&self) -> &StoreRef;
    #[doc(hidden)]
    fn key_locks(&self) -> &Arc<KeyLocks>;
    /// The fragment's time to live.
    fn ttl(&self) -> Option<Duration>;
    /// The namespace of the fragment's keys.
    fn prefix(&self) -> &str;
    /// Where the fragment's keys of this update live: the bot namespace, if any, then
    /// the prefix.
    fn namespace(&self) -> std::borrow::Cow<'_, str>;
    /// Whether the cell holds a value (it was touched, or strict mode loaded it).
    fn is_loaded(&self) -> bool;
    #[doc(hidden)]
    fn fill(&self, record: Option<Record>) -> Result<(), Error>;
    #[doc(hidden)]
    fn plan(&self) -> Result<Plan, SaveFailure>;
    /// Lets go of the fragment's key (the session is committed; clones outlive it).
    #[doc(hidden)]
    fn release(&self);
    /// Lazy delete-all: reads the value if needed and deletes it if stored.
    #[doc(hidden)]
    fn delete_stored(&self) -> futures_util::future::BoxFuture<'_, Result<(), Error>>;
    /// Strict delete-all: the loaded value is deleted (if stored).
    #[doc(hidden)]
    fn mark_deleted(&self);
}

impl<T: Send + 'static> ErasedCell for Bound<'_, T> {
    fn index(&self) -> usize {
        self.cell.index
    }

    fn fragment(&self) -> &'static str {
        self.name()
    }

    fn storage_key(&self) -> Option<&str> {
        self.storage_key_str()
    }

    fn store(&self) -> &StoreRef {
        &self.shared.store
    }

    fn key_locks(&self) -> &Arc<KeyLocks> {
        &self.shared.locks
    }

    fn ttl(&self) -> Option<Duration> {
        self.shared.spec.ttl
    }

    fn prefix(&self) -> &str {
        &self.shared.spec.prefix
    }

    fn namespace(&self) -> std::borrow::Cow<'_, str> {
        match self.cx.bot {
            Some(bot) => format!("{bot}/{}", self.shared.spec.prefix).into(),
            None => self.shared.spec.prefix.as_str().into(),
        }
    }

    fn is_loaded(&self) -> bool {
        self.cell.is_loaded()
    }

    fn fill(&self, record: Option<Record>) -> Result<(), Error> {
        let key = self.key()?;
        let held = self.cx.take_preheld(self.cell.index);
        let state = self.state_from(key, record)?;
        self.cell
            .slot
            .get_or_init(Slot::new(held.map(Taken::keep), state));
        Ok(())
    }

    fn delete_stored(&self) -> futures_util::future::BoxFuture<'_, Result<(), Error>> {
        Box::pin(Bound::delete_stored(self))
    }

    fn mark_deleted(&self) {
        if let Some(slot) = self.cell.slot.get()
            && let Some(mut state) = slot.state.try_lock()
        {
            state.mark_deleted();
        }
    }

    fn release(&self) {
        if let Some(slot) = self.cell.slot.get() {
            drop(slot.held.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }

    fn plan(&self) -> Result<Plan, SaveFailure> {
        let Some(slot) = self.cell.slot.get() else {
            return Ok(Plan::Skip);
        };
        let spec = &self.shared.spec;
        let counters = &self.cx.env.counters;
        let failure = |error: SaveError| SaveFailure {
            fragment: spec.name,
            key: self.storage_key_str().unwrap_or_default().to_owned(),
            store: self.shared.store_name.clone(),
            error,
            outcome: crate::error::WriteOutcome::NotWritten,
        };
        let Some(key) = self.storage_key_str().map(str::to_owned) else {
            return Ok(Plan::Skip);
        };
        // The session is committed only when no other handle is alive, so no guard exists.
        let Some(state) = slot.state.try_lock() else {
            return Err(failure(SaveError::Store(StoreError::backend(
                "a guard of this fragment is still held",
            ))));
        };
        let written_before = self.cx.written_before.contains(&spec.name);
        let applied = matches!(&state.base, Base::Stored { scan, .. } if scan.applied);
        if (written_before || applied) && (state.dirty || state.deleted) {
            // This update's change is stored already (rule S25).
            counters.add(Counter::Repeats, 1);
            return Ok(Plan::Repeat);
        }
        let is_none = state
            .value
            .as_ref()
            .is_some_and(|value| state.dirty && spec.is_none.is_some_and(|is_none| is_none(value)));
        if state.deleted || is_none {
            let expect = match &state.base {
                Base::Missing { .. } => return Ok(Plan::Skip),
                Base::Unread => Expect::Any,
                Base::Stored { revision, .. } => Expect::Revision(*revision),
            };
            return Ok(Plan::Write(Write::Delete { key, expect }));
        }
        let (true, Some(value)) = (state.dirty, state.value.as_ref()) else {
            return Ok(Plan::Skip);
        };
        let remember = self.cx.env.config.remember_updates;
        let id = self.cx.update_id();
        // The stored bytes: the header of recorded updates, then the codec's payload,
        // written into one buffer.
        let mut bytes = Vec::with_capacity(match &state.base {
            // About what it was, and room for one more id.
            Base::Stored { bytes, .. } => bytes.len() + 16,
            _ => 64,
        });
        let (expect, payload_at) = match &state.base {
            Base::Unread | Base::Missing { .. } => {
                envelope::first_header(&mut bytes, id);
                let expect = match state.base {
                    Base::Unread => Expect::Any,
                    _ => Expect::Absent,
                };
                (expect, Some(bytes.len()))
            }
            Base::Stored {
                bytes: stored,
                payload_at,
                revision,
                scan,
            } => {
                let fits =
                    envelope::rejoin_header(&mut bytes, stored, *payload_at, scan, id, remember);
                (Expect::Revision(*revision), fits.then_some(bytes.len()))
            }
        };
        let at = payload_at.unwrap_or(0);
        spec.encode_payload_into(value, &mut bytes)
            .map_err(|e| failure(SaveError::Encode(e)))?;
        let before = match &state.base {
            Base::Unread => None,
            Base::Missing { initial } => initial.as_deref(),
            Base::Stored {
                bytes: stored,
                payload_at,
                ..
            } => Some(&stored[*payload_at..]),
        };
        if !state.force && before.is_some_and(|before| spec.same_value(before, &bytes[at..], value))
        {
            counters.add(Counter::SkippedWrites, 1);
            return Ok(Plan::Skip);
        }
        if payload_at.is_none()
            && let Base::Stored { bytes: stored, .. } = &state.base
        {
            // The header takes `join` itself (rare): the payload is all `bytes` so far.
            bytes = envelope::join(envelope::split(stored).0, id, remember, &bytes);
        }
        Ok(Plan::Write(Write::Put {
            key,
            value: bytes,
            ttl: spec.ttl,
            expect,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::AtomicUsize};

    use super::SetOnce;

    /// Counts its drops.
    struct Counted(usize, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn set_once_keeps_the_first_value_and_drops_every_other_once() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let cell = Arc::new(SetOnce::<Counted>::new());
        assert!(cell.get().is_none());
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let (cell, dropped) = (cell.clone(), dropped.clone());
                std::thread::spawn(move || cell.get_or_init(Box::new(Counted(n, dropped))).0)
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let first = cell.get().expect("set").0;
        assert!(seen.iter().all(|&n| n == first), "{seen:?} vs {first}");
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 7);
        drop(Arc::try_unwrap(cell).ok().expect("the last handle"));
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 8);
    }
}
